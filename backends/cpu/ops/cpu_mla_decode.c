/*
 * backends/cpu/ops/cpu_mla_decode.c — kp_mla_decode on the CPU backend (FlashMLA
 * layout). One latent KV head shared by all h_q query heads: each work item holds up
 * to 256 query rows (s_q·h_q), so a cache block is read and converted once for all of
 * them, and V is the converted K row's first head_dim_v columns (no second read).
 * Same paged engine, content rules and split-KV as attention_decode.
 */
#include "cpu_attention.h"

kp_status cpu_op_mla_decode(kp_op op, kp_stream *s, const void *params, int dry_run) {
    const kp_mla_decode_params *p = params;
    int64_t d = p->q.shape[3];
    if (d > CPU_ATT_MAX_D)
        return cpu_host()->set_error(KP_ERR_UNSUPPORTED, "%s: head dim %lld; the cpu backend takes up to %d",
                                     kp_backend_op_name(op), (long long)d, CPU_ATT_MAX_D);
    if (dry_run) return KP_OK;
    cpu_att_paged_args a = {
        .op = kp_backend_op_name(op),
        .q = &p->q,
        .k_cache = &p->kv_cache,
        .v_cache = &p->kv_cache,
        .block_table = &p->block_table,
        .seq_lens = &p->seq_lens,
        .out = &p->out,
        .lse = &p->lse,
        .k_scale = &p->kv_scale,
        .v_scale = &p->kv_scale,
        .d = (int)d,
        .dv = p->head_dim_v,
        .scale = p->softmax_scale,
        .causal = p->causal,
        .num_splits = p->num_splits,
        .v_is_k_prefix = true,
    };
    return cpu_att_paged(s, &a);
}
