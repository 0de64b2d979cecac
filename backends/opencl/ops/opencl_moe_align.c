/*
 * backends/opencl/ops/opencl_moe_align.c — kp_moe_align on the OpenCL backend: the
 * device counting sort of kernels/moe/moe_align.cl (histogram per chunk, one-group
 * scan, stable scatter), with no host synchronisation. Expert ids are not checked
 * (that needs a host round trip): an id outside [0, num_experts) gets no row and
 * token_pos -1. The CPU backend reports such ids as KP_ERR_INVALID_ARGUMENT.
 */
#include "opencl_moe_common.h"

kp_status kp_ocl_op_moe_align(kp_op op, kp_stream *s, const void *params, int dry_run) {
    (void)op;
    const kp_moe_align_params *p = params;
    int64_t pairs = p->topk_ids.shape[0] * p->topk_ids.shape[1];
    return kp_ocl_moe_align_run(s, kp_ocl_moe_view_of(&p->topk_ids), pairs, p->num_experts, p->block_size,
                                kp_ocl_moe_view_of(&p->sorted_ids), p->sorted_ids.shape[0],
                                kp_ocl_moe_view_of(&p->expert_offsets), kp_ocl_moe_view_of(&p->token_pos), dry_run);
}
