/*
 * backends/gpu/ops/gpu_moe_gate.c — kp_moe_gate on the GPU backends: one kernel, one
 * work-group per token (kernels/moe/moe_gate.cl), no host round trip. Scores are
 * computed in f32 (the CPU backend uses double), so two experts whose scores differ by
 * less than f32 resolution may rank differently from the reference.
 */
#include "gpu_ops.h"

kp_status kp_gpu_moe_gate(kp_gpu_ctx *c, const kp_moe_gate_params *p, int dry_run) {
    return kp_gpu_moe_gate_run(c, kp_gpu_view_of(&p->logits), p->logits.dtype, p->logits.shape[0], p->logits.shape[1],
                               kp_gpu_view_of(&p->bias), &p->routing, kp_gpu_view_of(&p->topk_ids),
                               kp_gpu_view_of(&p->topk_weights), dry_run);
}
