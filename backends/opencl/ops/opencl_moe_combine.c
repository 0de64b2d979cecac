/*
 * backends/opencl/ops/opencl_moe_combine.c — kp_moe_combine on the OpenCL backend
 * (kernels/moe/moe_combine.cl): slot order fixed, so bitwise deterministic. A
 * token_pos outside [0, rows) adds nothing; it is not reported (no host round trip).
 */
#include "opencl_moe_common.h"

kp_status kp_ocl_op_moe_combine(kp_op op, kp_stream *s, const void *params, int dry_run) {
    (void)op;
    const kp_moe_combine_params *p = params;
    kp_ocl_moe_view pos = kp_ocl_moe_view_of(&p->token_pos);
    return kp_ocl_moe_combine_run(s, kp_ocl_moe_view_of(&p->expert_out), 0, p->expert_out.shape[0], pos,
                                  kp_ocl_moe_view_of(&p->topk_weights), (int32_t)p->token_pos.shape[1],
                                  kp_ocl_moe_view_of(&p->out), p->out.dtype, p->token_pos.shape[0],
                                  p->expert_out.shape[1], dry_run);
}
