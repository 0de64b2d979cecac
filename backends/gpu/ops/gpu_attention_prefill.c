/*
 * backends/gpu/ops/gpu_attention_prefill.c — kp_attention_prefill on the GPU backends:
 * kernels/attention/attention_prefill.cl, one launch, contiguous or paged K/V (paged:
 * generation-1 kernels only, whatever KPORT_GPU_KERNELS asks).
 *
 * Grid (m_tiles, h_kv, B + 1) work-groups: m_tiles from max_seqlen_q (the kernel loops
 * when a sequence has more rows; the last z slice writes the rows past
 * cu_seqlens_q[B]). Head dims 64, 128, 256 and 192/128; others are unsupported.
 */
#include "gpu_ops.h"

#define ATTN_LOG2E 1.4426950408889634

/* The prefill kernels' common parameters (every generation): offsets and strides of the
 * tensors (k and v of rank kv_rank: 4 when paged, their token and head strides the last
 * but one two), the sequence counts and the softmax's rules. */
kp_attn_prefill_kargs kp_gpu_attn_prefill_kargs(const kp_attention_prefill_params *p, int kv_rank, int64_t nb,
                                                int64_t total_q, int64_t total_k, int group) {
    kp_attn_prefill_kargs ka = {
        .q_off = kp_gpu_elem_offset(&p->q), .q_s0 = p->q.strides[0], .q_s1 = p->q.strides[1],
        .k_off = kp_gpu_elem_offset(&p->k), .k_s0 = p->k.strides[kv_rank - 3], .k_s1 = p->k.strides[kv_rank - 2],
        .v_off = kp_gpu_elem_offset(&p->v), .v_s0 = p->v.strides[kv_rank - 3], .v_s1 = p->v.strides[kv_rank - 2],
        .o_off = kp_gpu_elem_offset(&p->out), .o_s0 = p->out.strides[0], .o_s1 = p->out.strides[1],
        .lse_off = kp_gpu_elem_offset(&p->lse),
        .cu_q_off = kp_gpu_elem_offset(&p->cu_seqlens_q), .cu_k_off = kp_gpu_elem_offset(&p->cu_seqlens_k),
        .has_lse = p->lse.buffer != NULL, .nb = (int32_t)nb, .total_q = (int32_t)total_q,
        .total_k = (int32_t)total_k, .group = group, .causal = p->causal, .wl = p->window_left,
        .wr = p->window_right, .scale_log2 = (float)(p->softmax_scale * ATTN_LOG2E),
    };
    return ka;
}

kp_status kp_gpu_attention_prefill(kp_gpu_ctx *c, const kp_attention_prefill_params *p, int dry_run) {
    const kp_host_services *h = c->host;
    const char *name = "attention_prefill";
    const int paged = p->block_table.buffer != NULL, kv_rank = paged ? 4 : 3;
    int gen;
    const char *no_gen2 = paged ? "generation-1 kernels read a paged K/V cache in prefill"
                                : kp_gpu_attn2_prefill_missing(c, p);
    kp_status st = kp_gpu_kernel_gen_tier(c, name, no_gen2, kp_gpu_attn_sm90_prefill_missing(c, p), &gen);
    if (st != KP_OK) return st;
    if (gen == 3) return kp_gpu_attention_prefill_sm90(c, p, dry_run);
    if (gen == 2) return kp_gpu_attention_prefill_gen2(c, p, dry_run);
    int dqk = (int)p->q.shape[2], dv = (int)p->v.shape[kv_rank - 1];
    if (!kp_gpu_attn_dims_supported(dqk, dv, 0))
        return h->set_error(KP_ERR_UNSUPPORTED,
                            "%s on %s: head dims %d/%d are not built (supported: 64, 128, 256, 192/128)", name,
                            c->t->name, dqk, dv);
    int64_t total_q = p->q.shape[0], total_k = paged ? 0 : p->k.shape[0], h_q = p->q.shape[1];
    int64_t h_kv = p->k.shape[kv_rank - 2], nb = p->cu_seqlens_q.shape[0] - 1;
    int64_t num_blocks = paged ? p->k.shape[0] : 0, block_size = paged ? p->k.shape[1] : 0;
    int64_t max_blocks = paged ? p->block_table.shape[1] : 0;
    if (total_q > INT32_MAX || total_k > INT32_MAX || nb + 1 > INT32_MAX / 2 || num_blocks > INT32_MAX ||
        max_blocks * block_size > INT32_MAX)
        return h->set_error(KP_ERR_UNSUPPORTED, "%s on %s: more than 2^31 tokens, blocks or keys", name,
                            c->t->name);
    kp_gpu_attn_cfg cfg;
    char opts[256];
    static const char kernel[] = "kp_attention_prefill";
    st = kp_gpu_attn_plan(c, name, KP_GPU_SRC_ATTN_PREFILL, p->q.dtype, dqk, dv, 0, 0, &cfg, opts,
                                    sizeof opts);
    kp_gpu_kernel_note(c, KP_GPU_NOTE_MAIN, 1, kernel);
    if (st != KP_OK || dry_run || total_q == 0) return st;

    int group = (int)(h_q / h_kv);
    int64_t rows = (int64_t)(p->max_seqlen_q > 0 ? p->max_seqlen_q : 1) * group;
    kp_attn_prefill_kargs ka = kp_gpu_attn_prefill_kargs(p, kv_rank, nb, total_q, total_k, group);
    if (paged) {
        ka.k_sb = p->k.strides[0], ka.v_sb = p->v.strides[0];
        ka.bt_off = kp_gpu_elem_offset(&p->block_table), ka.bt_s0 = p->block_table.strides[0];
        ka.sl_off = kp_gpu_elem_offset(&p->seq_lens_k);
        ka.paged = 1, ka.max_blocks = (int32_t)max_blocks, ka.num_blocks = (int32_t)num_blocks;
        ka.block_size = (int32_t)block_size;
    }
    kp_gpu_launch l;
    kp_gpu_launch_init(&l, KP_GPU_SRC_ATTN_PREFILL, opts, kernel);
    kp_gpu_arg_tensor(&l, &p->q), kp_gpu_arg_tensor(&l, &p->k), kp_gpu_arg_tensor(&l, &p->v);
    kp_gpu_arg_tensor(&l, &p->out), kp_gpu_arg_tensor(&l, &p->lse);
    kp_gpu_arg_tensor(&l, &p->cu_seqlens_q), kp_gpu_arg_tensor(&l, &p->cu_seqlens_k);
    kp_gpu_arg_tensor(&l, &p->block_table), kp_gpu_arg_tensor(&l, &p->seq_lens_k);
    kp_gpu_arg_kargs(&l, &ka, sizeof ka);
    l.groups[0] = (uint64_t)((rows + cfg.bm - 1) / cfg.bm), l.groups[1] = (uint64_t)h_kv, l.groups[2] = (uint64_t)nb + 1;
    l.local[0] = (uint32_t)cfg.nt;
    st = kp_gpu_enqueue(c, &l);
    return st == KP_OK ? st : h->add_context(st, "%s", name);
}
