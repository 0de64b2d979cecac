/*
 * backends/gpu/ops/gpu_mla_decode.c — kp_mla_decode on the GPU backends: the paged
 * decode kernel built with -DATTN_MLA (kernels/attention/attention_decode.cl).
 * All h_q heads share the one latent KV head, so a work-group's rows are s_q * h_q and
 * each 576-wide block is read from global memory once per work-group; V is the first
 * head_dim_v (512, or 256) columns of the same local tile.
 */
#include "gpu_ops.h"

kp_status kp_gpu_mla_decode(kp_gpu_ctx *c, const kp_mla_decode_params *p, int dry_run) {
    kp_gpu_paged_args a = {&p->q, &p->kv_cache, &p->kv_cache, &p->block_table, &p->seq_lens, &p->out, &p->lse,
                           p->softmax_scale, p->causal, p->num_splits, p->head_dim_v, 1, 0, &p->kv_scale,
                           &p->kv_scale};
    return kp_gpu_paged_decode(c, KP_OP_MLA_DECODE, &a, dry_run);
}
