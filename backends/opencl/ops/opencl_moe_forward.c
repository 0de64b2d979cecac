/*
 * backends/opencl/ops/opencl_moe_forward.c — kp_moe_forward on the OpenCL backend.
 * Not implemented yet: answers KP_ERR_UNSUPPORTED naming the op.
 */
#include "opencl_internal.h"

kp_status kp_ocl_op_moe_forward(kp_op op, kp_stream *s, const void *params, int dry_run) {
    (void)s;
    (void)params;
    (void)dry_run;
    return kp_ocl_host()->set_error(KP_ERR_UNSUPPORTED, "%s is not implemented on the opencl backend yet",
                                    kp_backend_op_name(op));
}
