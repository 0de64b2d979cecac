/*
 * backends/gpu/ops/gpu_moe_align.c — kp_moe_align on the GPU backends
 * (kernels/moe/moe_align.cl): a per-chunk histogram when there are several chunks, one
 * work-group's scan of the expert counts into padded offsets, then the scatter.
 */
#include "gpu_ops.h"

kp_status kp_gpu_moe_align(kp_gpu_ctx *c, const kp_moe_align_params *p, int dry_run) {
    int64_t pairs = p->topk_ids.shape[0] * p->topk_ids.shape[1];
    return kp_gpu_moe_align_run(c, kp_gpu_view_of(&p->topk_ids), pairs, p->num_experts, p->block_size,
                                kp_gpu_view_of(&p->sorted_ids), p->sorted_ids.shape[0],
                                kp_gpu_view_of(&p->expert_offsets), kp_gpu_view_of(&p->token_pos), dry_run);
}
