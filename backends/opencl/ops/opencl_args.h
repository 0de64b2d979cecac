/*
 * backends/opencl/ops/opencl_args.h — kernel arguments set in order, the first
 * failure kept, and the launch that reports it. Shared by every OpenCL op.
 */
#ifndef KPORT_OPENCL_ARGS_H
#define KPORT_OPENCL_ARGS_H

#include "opencl_internal.h"

/* Sequential clSetKernelArg; the first failure is kept. */
typedef struct kp_ocl_args {
    cl_kernel k;
    cl_uint next;
    cl_int err;
    cl_uint failed;
} kp_ocl_args;

void kp_ocl_arg(kp_ocl_args *a, size_t size, const void *value);
void kp_ocl_arg_mem(kp_ocl_args *a, cl_mem m); /* m may be NULL: a null global pointer */
void kp_ocl_arg_i32(kp_ocl_args *a, int64_t v);
void kp_ocl_arg_i64(kp_ocl_args *a, int64_t v);
void kp_ocl_arg_f32(kp_ocl_args *a, float v);
/* A tensor's buffer and its offset in elements. */
void kp_ocl_arg_tensor(kp_ocl_args *a, const kp_tensor *t);
/* KP_OK, or the first clSetKernelArg failure naming the argument and kernel. */
kp_status kp_ocl_args_status(const kp_ocl_args *a, const char *kernel);
/* Enqueues a->k (global rounded up to local) and releases it, success or not. */
kp_status kp_ocl_args_launch(kp_ocl_args *a, cl_command_queue q, const char *name, cl_uint dims,
                             const size_t *global, const size_t *local);

#endif /* KPORT_OPENCL_ARGS_H */
