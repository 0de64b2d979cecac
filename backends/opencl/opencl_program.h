/*
 * backends/opencl/opencl_program.h — built kernels for the OpenCL backend's ops.
 *
 * A variant is (embedded source, -D options). The first request on a device builds
 * it: from the on-disk binary cache when an entry matches, else from the embedded
 * SPIR-V module of that exact variant where the device takes SPIR-V (CL_DEVICE_IL_VERSION;
 * opencl_program.c says when a module matches), else from source; later requests on
 * that device get the same cl_program from memory. An IL build the driver refuses is
 * logged and built from source instead, never an error.
 *
 * Testing aid: KPORT_OPENCL_FORCE_IL=1 (read at every request) tries the SPIR-V path
 * on any device, e.g. PoCL, which has no IL: the refusal and the fallback to source
 * can then be tested where CI runs. The options every
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
#include "kp_ocl_spirv.h"   /* generated: kp_ocl_spirv_modules[], KP_OCL_SPIRV_BUILT */
#include "opencl_internal.h"

typedef struct kp_ocl_build_info {
    kp_ocl_origin origin;
    double ms;             /* wall time of this request, build included */
    uint64_t key;          /* the cache key of the program returned */
    char cache_path[1024]; /* the entry's file ("" when there is no cache dir) */
    int from_il;           /* the program came from SPIR-V (built now, or its cached binary) */
    int il_fallback;       /* a SPIR-V module was tried, the driver refused it: built from source */
    uint64_t il_key;       /* the SPIR-V path's cache key when that path was taken or tried, else 0 */
    const char *il_module; /* that module's name (static), else NULL */
} kp_ocl_build_info;

/* The program for (src, options) on d; borrowed, valid until the device closes.
 * src may be an embedded source or any other (tests build broken ones). info may be NULL. */
kp_status kp_ocl_program_get(kp_ocl_device *d, const kp_ocl_source *src, const char *options, cl_program *out,
                             kp_ocl_build_info *info);

/* A new cl_kernel (the caller releases it): cl_kernel argument state is not
 * thread-safe, so each launch site owns its own. */
kp_status kp_ocl_kernel_create(kp_ocl_device *d, kp_ocl_source_id id, const char *options, const char *kernel_name,
                               cl_kernel *out, kp_ocl_build_info *info);

/* The cache key of (src, options) on d built from source (il NULL) or from module il. */
uint64_t kp_ocl_program_key(const kp_ocl_device *d, const kp_ocl_source *src, const char *options,
                            const kp_ocl_spirv_module *il);

/* The embedded module that exactly matches (src, options) on d — whether or not d
 * takes IL — or NULL. */
const kp_ocl_spirv_module *kp_ocl_spirv_lookup(const kp_ocl_device *d, const kp_ocl_source *src,
                                               const char *options);

/* Full options -> the canonical -D set (sorted, space-joined, without -DKP_NO_SUBGROUPS,
 * which sets *no_sg) and the build-time rest (both malloc'd). 0: no module can match
 * (another compile-time option, a macro twice). */
int kp_ocl_il_split(const char *opts, char **defines, char **rest, int *no_sg);

/* KPORT_OPENCL_FORCE_IL is set (and not "0"). */
int kp_ocl_force_il(void);

/* A snapshot of d's cache counters. */
kp_ocl_cache_stats kp_ocl_cache_stats_get(kp_ocl_device *d);

#endif /* KPORT_OPENCL_PROGRAM_H */
