/*
 * backends/opencl/ops/opencl_args.c — see opencl_args.h.
 */
#include "opencl_args.h"

#include <stdio.h>

void kp_ocl_arg(kp_ocl_args *a, size_t size, const void *value) {
    if (a->err == CL_SUCCESS) {
        a->err = clSetKernelArg(a->k, a->next, size, value);
        if (a->err != CL_SUCCESS) a->failed = a->next;
    }
    a->next++;
}

void kp_ocl_arg_mem(kp_ocl_args *a, cl_mem m) { kp_ocl_arg(a, sizeof(cl_mem), m ? (const void *)&m : NULL); }
void kp_ocl_arg_f32(kp_ocl_args *a, float v) { kp_ocl_arg(a, sizeof(cl_float), &v); }
void kp_ocl_arg_i32(kp_ocl_args *a, int64_t v) {
    cl_int x = (cl_int)v;
    kp_ocl_arg(a, sizeof x, &x);
}
void kp_ocl_arg_i64(kp_ocl_args *a, int64_t v) {
    cl_long x = (cl_long)v;
    kp_ocl_arg(a, sizeof x, &x);
}

void kp_ocl_arg_tensor(kp_ocl_args *a, const kp_tensor *t) {
    kp_ocl_arg_mem(a, t->buffer ? kp_ocl_mem(t->buffer) : NULL);
    size_t es = kp_backend_dtype_size(t->dtype);
    kp_ocl_arg_i64(a, t->buffer && es ? (int64_t)(t->offset / es) : 0);
}

kp_status kp_ocl_args_status(const kp_ocl_args *a, const char *kernel) {
    if (a->err == CL_SUCCESS) return KP_OK;
    return kp_ocl_host()->add_context(kp_ocl_fail(a->err, "clSetKernelArg"), "argument %u of %s", a->failed,
                                      kernel);
}

kp_status kp_ocl_args_launch(kp_ocl_args *a, cl_command_queue q, const char *name, cl_uint dims,
                             const size_t *global, const size_t *local) {
    kp_status st = kp_ocl_args_status(a, name);
    if (st == KP_OK) {
        size_t g[3];
        for (cl_uint d = 0; d < dims; d++) g[d] = (global[d] + local[d] - 1) / local[d] * local[d];
        cl_int e = clEnqueueNDRangeKernel(q, a->k, dims, NULL, g, local, 0, NULL, NULL);
        if (e != CL_SUCCESS) {
            char call[160];
            snprintf(call, sizeof call, "clEnqueueNDRangeKernel(%s)", name);
            st = kp_ocl_fail(e, call);
        }
    }
    clReleaseKernel(a->k);
    a->k = NULL;
    return st;
}
