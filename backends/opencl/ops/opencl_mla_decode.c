/*
 * backends/opencl/ops/opencl_mla_decode.c — kp_mla_decode on the OpenCL backend: the
 * paged decode kernel built with -DATTN_MLA (kernels/attention/attention_decode.cl).
 * All h_q heads share the one latent KV head, so a work-group's rows are s_q * h_q and
 * each 576-wide block is read from global memory once per work-group; V is the first
 * head_dim_v (512, or 256) columns of the same local tile.
 */
#include "opencl_attention_decode.h"

kp_status kp_ocl_op_mla_decode(kp_op op, kp_stream *s, const void *params, int dry_run) {
    const kp_mla_decode_params *p = params;
    kp_ocl_paged_args a = {&p->q, &p->kv_cache, &p->kv_cache, &p->block_table, &p->seq_lens, &p->out, &p->lse,
                           p->softmax_scale, p->causal, p->num_splits, p->head_dim_v, 1};
    return kp_ocl_paged_decode(op, s, &a, dry_run);
}
