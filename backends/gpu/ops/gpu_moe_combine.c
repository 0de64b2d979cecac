/*
 * backends/gpu/ops/gpu_moe_combine.c — kp_moe_combine on the GPU backends
 * (kernels/moe/moe_combine.cl): each output row sums its top-k expert rows in slot
 * order, so the result does not depend on scheduling.
 */
#include "gpu_ops.h"

kp_status kp_gpu_moe_combine(kp_gpu_ctx *c, const kp_moe_combine_params *p, int dry_run) {
    return kp_gpu_moe_combine_run(c, kp_gpu_view_of(&p->expert_out), 0, p->expert_out.shape[0],
                                  kp_gpu_view_of(&p->token_pos), kp_gpu_view_of(&p->topk_weights),
                                  (int32_t)p->token_pos.shape[1], kp_gpu_view_of(&p->out), p->out.dtype,
                                  p->token_pos.shape[0], p->expert_out.shape[1], dry_run);
}
