/*
 * backends/cpu/ops/cpu_attention_decode.c — kp_attention_decode on the CPU backend:
 * paged KV through the block table, GQA heads packed per KV head, split-KV
 * (flash-decoding) when B·h_kv alone cannot keep the threads busy. The engine is
 * cpu_att_paged (cpu_attention_common.c).
 *
 * Content rules checked here before anything is written (the core checked shapes):
 * each seq_len in [0, max_blocks·block_size]; each block_table entry a sequence uses
 * (its first ceil(seq_len / block_size)) in [0, num_blocks). seq_len 0 gives out 0 and
 * lse +inf; with causal, a seq_len below s_q leaves the first queries with no visible
 * key (bottom-right alignment), which give 0 / +inf the same way.
 */
#include "cpu_attention.h"

kp_status cpu_op_attention_decode(kp_op op, kp_stream *s, const void *params, int dry_run) {
    const kp_attention_decode_params *p = params;
    int64_t d = p->q.shape[3], dv = p->v_cache.shape[3];
    if (d > CPU_ATT_MAX_D || dv > CPU_ATT_MAX_D)
        return cpu_host()->set_error(KP_ERR_UNSUPPORTED,
                                     "%s: head dims %lld/%lld; the cpu backend takes head dims up to %d",
                                     kp_backend_op_name(op), (long long)d, (long long)dv, CPU_ATT_MAX_D);
    if (dry_run) return KP_OK;
    cpu_att_paged_args a = {
        .op = kp_backend_op_name(op),
        .q = &p->q,
        .k_cache = &p->k_cache,
        .v_cache = &p->v_cache,
        .block_table = &p->block_table,
        .seq_lens = &p->seq_lens,
        .out = &p->out,
        .lse = &p->lse,
        .k_scale = &p->k_scale,
        .v_scale = &p->v_scale,
        .d = (int)d,
        .dv = (int)dv,
        .scale = p->softmax_scale,
        .causal = p->causal,
        .num_splits = p->num_splits,
        .window_left = p->window_left,
        .v_is_k_prefix = false,
    };
    return cpu_att_paged(s, &a);
}
