/*
 * backends/gpu/ops/gpu_attention_sm90.c — attention prefill on the sm_90a tier (generation 3;
 * kernels/attention/attention_prefill_sm90.cl: TMA producer, two wgmma consumer warpgroups,
 * P in registers).
 *
 * What it takes (kp_gpu_attn_sm90_prefill_missing; anything else stays on generation 2): a
 * CUDA sm_90a device (profile.sm90a), bf16 or f16, contiguous K/V (not paged), head dims
 * 64/64, 128/128, 192/128 (DeepSeek-V3's MHA prefill) or 256/256, a GQA group that divides
 * 128 (the Q box holds 128 / group queries of the group's heads), q, k, v 16-byte aligned
 * with 16-byte token and head strides (TMA's rules), under 2^31 tokens. Causal and sliding
 * windows (window_left / window_right) are the kernel's masks: all taken. Stages: as many
 * as the device's local memory holds, at most 4 (227 KiB: 4 at 64/64, 3 at 128/128, 2 at
 * 192/128 and at 256/256, whose stages hold 64 keys: KP_ATTN_SM90_BN).
 * Grid (ceil(max_seqlen_q x group / 128), h_kv, B + 1) x 384 threads, as generation 2's.
 * Schedule: FA3's ping-pong of the two consumer warpgroups on named barriers (F3_PINGPONG=1)
 * unless the tuning table's attention_prefill;sm90_pingpong is 0 (the schedule without it;
 * both are embedded: kp_gpu_variants_enumerate).
 */
#include "gpu_ops.h"

#include <stdio.h>

#define ATTN_LOG2E 1.4426950408889634
#define SM90_THREADS 384
#define SM90_MAX_STAGES 4

static int tma_ok(kp_gpu_ctx *c, const kp_tensor *t) {
    uint32_t base = kp_gpu_base_align(c->t, t->buffer, kp_gpu_tensor_address(t));
    int ok = base >= 16 && ((uint64_t)kp_gpu_elem_offset(t) * 2) % 16 == 0;
    for (int d = 0; d + 1 < t->ndim; d++)
        ok = ok && t->strides[d] > 0 && ((uint64_t)t->strides[d] * 2) % 16 == 0 && t->strides[d] < ((int64_t)1 << 38);
    return ok;
}

int kp_gpu_attn_sm90_stages(const kp_gpu_profile *p, int dqk) {
    int s = 0;
    while (s < SM90_MAX_STAGES && KP_ATTN_SM90_LOCAL_BYTES((uint64_t)dqk, (uint64_t)s + 1) <= p->local_mem) s++;
    return s;
}

int kp_gpu_attn_sm90_pingpong(const kp_host_services *h, const kp_gpu_profile *p) {
    return h->tuning_get(p->info, "attention_prefill", "sm90_pingpong", 1) != 0;
}

void kp_gpu_attn_sm90_options(const kp_gpu_profile *p, kp_dtype dt, int dqk, int pingpong, char *buf, size_t n) {
    snprintf(buf, n, "%s -DF3_DQK=%d -DF3_STAGES=%d -DF3_PINGPONG=%d", kp_gpu_dtype_define(dt), dqk,
             kp_gpu_attn_sm90_stages(p, dqk), pingpong != 0);
}

const char *kp_gpu_attn_sm90_prefill_missing(kp_gpu_ctx *c, const kp_attention_prefill_params *p) {
    if (!c->prof.sm90a) return "the device is not CUDA sm_90a with the driver's cuTensorMapEncodeTiled";
    if (p->block_table.buffer != NULL) return "a paged K/V cache";
    if (p->q.dtype != KP_BF16 && p->q.dtype != KP_F16) return "q, k, v are not bf16 or f16";
    const int64_t dqk = p->q.shape[2];
    if ((dqk != 64 && dqk != 128 && dqk != 192 && dqk != 256) || p->v.shape[2] != (int64_t)KP_ATTN_SM90_DV(dqk))
        return "head dims other than 64/64, 128/128, 192/128 and 256/256";
    const int64_t h_q = p->q.shape[1], h_kv = p->k.shape[1];
    if (h_kv <= 0 || h_q % h_kv || 128 % (h_q / h_kv)) return "the GQA group does not divide 128";
    if (p->q.shape[0] > INT32_MAX || p->k.shape[0] > INT32_MAX) return "more than 2^31 tokens";
    if (!tma_ok(c, &p->q) || !tma_ok(c, &p->k) || !tma_ok(c, &p->v))
        return "q, k or v is not 16-byte aligned in its address, offset or strides (TMA's rule)";
    if (kp_gpu_attn_sm90_stages(&c->prof, (int)p->q.shape[2]) < 2)
        return "the device's local memory holds fewer than 2 stages";
    return NULL;
}

/* A tensor map over t (bf16/f16): dims {d, then dims[1..rank-1]} with byte strides. */
static kp_gpu_tensor_map tmap_of(const kp_tensor *t, int rank, const uint64_t *dims, const uint64_t *strides,
                                 const uint32_t *box) {
    const uint64_t addr = kp_gpu_tensor_address(t);
    kp_gpu_tensor_map m = {
        .buffer = addr ? NULL : t->buffer, .address = addr, .byte_offset = (uint64_t)kp_gpu_elem_offset(t) * 2,
        .dtype = t->dtype, .swizzle = KP_GPU_TMAP_SWIZZLE_128B, .rank = rank, .row_stride = strides[0],
    };
    for (int i = 0; i < rank; i++) m.dims[i] = dims[i], m.box[i] = box[i];
    for (int i = 1; i + 1 < rank; i++) m.outer_strides[i - 1] = strides[i];
    return m;
}

kp_status kp_gpu_attention_prefill_sm90(kp_gpu_ctx *c, const kp_attention_prefill_params *p, int dry_run) {
    const kp_host_services *h = c->host;
    const char *name = "attention_prefill (the sm_90a tier)";
    char opts[96];
    const int dqk = (int)p->q.shape[2];
    kp_gpu_attn_sm90_options(&c->prof, p->q.dtype, dqk, kp_gpu_attn_sm90_pingpong(h, &c->prof), opts, sizeof opts);
    static const char kernel[] = "kp_attention_prefill_sm90";
    kp_status st = kp_gpu_variant_ok(c, KP_GPU_SRC_ATTN_PREFILL_SM90, opts);
    if (st == KP_OK) kp_gpu_kernel_note(c, KP_GPU_NOTE_MAIN, 3, kernel);
    const int64_t total_q = p->q.shape[0], total_k = p->k.shape[0], h_q = p->q.shape[1], h_kv = p->k.shape[1];
    const int64_t nb = p->cu_seqlens_q.shape[0] - 1;
    if (st != KP_OK || dry_run || total_q == 0) return st;
    if (nb + 1 > INT32_MAX / 2)
        return h->set_error(KP_ERR_UNSUPPORTED, "%s on %s: too many sequences", name, c->t->name);

    const int group = (int)(h_q / h_kv);
    const int64_t rows = (int64_t)(p->max_seqlen_q > 0 ? p->max_seqlen_q : 1) * group;
    kp_attn_prefill_kargs ka = kp_gpu_attn_prefill_kargs(p, 3, nb, total_q, total_k, group);
    /* q as {d, group, h_kv, tokens}: a box is 128 / group queries of the group's heads */
    const uint64_t qd[4] = {(uint64_t)dqk, (uint64_t)group, (uint64_t)h_kv, (uint64_t)total_q};
    const uint64_t qs[3] = {(uint64_t)p->q.strides[1] * 2, (uint64_t)p->q.strides[1] * 2 * (uint64_t)group,
                            (uint64_t)p->q.strides[0] * 2};
    const uint32_t qb[4] = {64, (uint32_t)group, 1, (uint32_t)(KP_ATTN_SM90_BM / group)};
    const uint64_t kd[3] = {(uint64_t)dqk, (uint64_t)h_kv, (uint64_t)total_k};
    const uint64_t vd[3] = {KP_ATTN_SM90_DV(dqk), kd[1], kd[2]};
    const uint64_t ks[2] = {(uint64_t)p->k.strides[1] * 2, (uint64_t)p->k.strides[0] * 2};
    const uint64_t vs[2] = {(uint64_t)p->v.strides[1] * 2, (uint64_t)p->v.strides[0] * 2};
    const uint32_t kb[3] = {64, 1, KP_ATTN_SM90_BN(dqk)};
    const kp_gpu_tensor_map tq = tmap_of(&p->q, 4, qd, qs, qb);
    const kp_gpu_tensor_map tk = tmap_of(&p->k, 3, kd, ks, kb);
    const kp_gpu_tensor_map tv = tmap_of(&p->v, 3, vd, vs, kb);

    kp_gpu_launch l;
    kp_gpu_launch_init(&l, KP_GPU_SRC_ATTN_PREFILL_SM90, opts, kernel);
    kp_gpu_arg_tensor(&l, &p->out), kp_gpu_arg_tensor(&l, &p->lse);
    kp_gpu_arg_tensor(&l, &p->cu_seqlens_q), kp_gpu_arg_tensor(&l, &p->cu_seqlens_k);
    kp_gpu_arg_kargs(&l, &ka, sizeof ka);
    kp_gpu_arg_tensor_map(&l, &tq);
    kp_gpu_arg_tensor_map(&l, &tk);
    kp_gpu_arg_tensor_map(&l, &tv);
    l.groups[0] = (uint64_t)((rows + KP_ATTN_SM90_BM - 1) / KP_ATTN_SM90_BM), l.groups[1] = (uint64_t)h_kv;
    l.groups[2] = (uint64_t)nb + 1;
    l.local[0] = SM90_THREADS;
    const uint64_t stages = (uint64_t)kp_gpu_attn_sm90_stages(&c->prof, dqk);
    l.local_bytes = (uint32_t)KP_ATTN_SM90_LOCAL_BYTES((uint64_t)dqk, stages);
    st = kp_gpu_enqueue(c, &l);
    return st == KP_OK ? st : h->add_context(st, "%s", name);
}
