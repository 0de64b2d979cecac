/*
 * backends/opencl/opencl_program.h — built kernels for the OpenCL backend's ops.
 *
 * A variant is (embedded source, -D options). The first request on a device builds
 * it: from the on-disk binary cache when an entry matches, else from source; later
 * requests on that device get the same cl_program from memory. The options every
 * build gets are prepended here: -cl-std=CL1.2 -DKP_TARGET_OPENCL=1, and
 * -DKP_HAS_INLINE_PTX=1 on NVIDIA platforms.
 *
 *     cl_kernel k;
 *     kp_status st = kp_ocl_kernel_create(dev, KP_OCL_SRC_COMMON_DIALECT_SELFTEST,
 *                                         "-DKP_DTYPE_BF16", "kp_dialect_selftest", &k, NULL);
 *     ... clSetKernelArg / clEnqueueNDRangeKernel ... clReleaseKernel(k);
 *
 * A kernel that fails to build gives KP_ERR_BUILD_FAILED with the driver's build log
 * in the message. Thread-safe: one lock per device (a build holds it).
 */
#ifndef KPORT_OPENCL_PROGRAM_H
#define KPORT_OPENCL_PROGRAM_H

#include "kp_ocl_kernels.h" /* generated: kp_ocl_sources[], KP_OCL_SRC_* */
#include "opencl_internal.h"

typedef struct kp_ocl_build_info {
    kp_ocl_origin origin;
    double ms;             /* wall time of this request, build included */
    uint64_t key;          /* the cache key */
    char cache_path[1024]; /* the entry's file ("" when there is no cache dir) */
} kp_ocl_build_info;

/* The program for (src, options) on d; borrowed, valid until the device closes.
 * src may be an embedded source or any other (tests build broken ones). info may be NULL. */
kp_status kp_ocl_program_get(kp_ocl_device *d, const kp_ocl_source *src, const char *options, cl_program *out,
                             kp_ocl_build_info *info);

/* A new cl_kernel (the caller releases it): cl_kernel argument state is not
 * thread-safe, so each launch site owns its own. */
kp_status kp_ocl_kernel_create(kp_ocl_device *d, kp_ocl_source_id id, const char *options, const char *kernel_name,
                               cl_kernel *out, kp_ocl_build_info *info);

/* A snapshot of d's cache counters. */
kp_ocl_cache_stats kp_ocl_cache_stats_get(kp_ocl_device *d);

#endif /* KPORT_OPENCL_PROGRAM_H */
