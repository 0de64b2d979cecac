/*
 * backends/opencl/ops/opencl_moe_gate.c — kp_moe_gate on the OpenCL backend: one
 * kernel, one work-group per token (kernels/moe/moe_gate.cl), no host round trip.
 * Scores are computed in f32 (the CPU backend uses double), so two experts whose
 * scores differ by less than f32 resolution may rank differently from the reference.
 */
#include "opencl_moe_common.h"

kp_status kp_ocl_op_moe_gate(kp_op op, kp_stream *s, const void *params, int dry_run) {
    (void)op;
    const kp_moe_gate_params *p = params;
    return kp_ocl_moe_gate_run(s, kp_ocl_moe_view_of(&p->logits), p->logits.dtype, p->logits.shape[0],
                               p->logits.shape[1], kp_ocl_moe_view_of(&p->bias), &p->routing,
                               kp_ocl_moe_view_of(&p->topk_ids), kp_ocl_moe_view_of(&p->topk_weights), dry_run);
}
