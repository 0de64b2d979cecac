/*
 * backends/opencl/ops/opencl_attention_common.h — what the three attention ops share
 * on the OpenCL backend: the tile configuration of kernels/attention/kp_attn_tile.h
 * (picked per device, overridable through the tuning table, checked against the
 * device's local memory), its -D options, and a kernel-argument helper.
 *
 * Launch policy, shared by the three ops:
 *  - one cl_kernel per call, released right after the enqueue (cl_kernel argument state
 *    is not thread-safe; the built cl_program is cached by opencl_program.c, so a call
 *    costs one clCreateKernel: a few microseconds);
 *  - split-KV partials live in per-queue scratch buffers cached on the device
 *    (kp_ocl_scratch_get, opencl_internal.h): reused call after call on the same queue
 *    (in order, so a call's kernels never overlap the previous call's), grown to the
 *    next power of two when short (the old pair released after clFinish of the queue),
 *    dropped when the stream is destroyed and freed at device close;
 *  - offsets and strides go to the kernels in elements, buffers whole (no sub-buffers:
 *    OpenCL 1.2 aligns those to CL_DEVICE_MEM_BASE_ADDR_ALIGN only);
 *  - index contents (cu_seqlens, block tables, seq_lens) are not validated here — that
 *    would need a host round trip: the kernels clamp every index into range, so bad
 *    contents give wrong numbers but never an out-of-bounds access. The CPU backend
 *    reports them as errors; callers that need the check run it there.
 */
#ifndef KPORT_OPENCL_ATTENTION_COMMON_H
#define KPORT_OPENCL_ATTENTION_COMMON_H

#include "opencl_args.h"
#include "opencl_program.h"

typedef struct kp_ocl_attn_cfg {
    kp_dtype dt;
    int dqk, dv, mla;
    int bm, bn, nt;    /* query rows, keys per tile; work-items per group */
    int mma;           /* tile-MMA fragment path (16-bit dtypes) */
    int local_f32;     /* portable path: tiles held as f32 in local memory */
    int kt;            /* portable path: K tile transposed ([d][key]) */
    size_t local_bytes; /* what the kernel declares */
} kp_ocl_attn_cfg;

/* Head-dim pairs the kernels are built for: 64, 128, 256, 192/128; MLA 576/512 and 576/256. */
int kp_ocl_attn_dims_supported(int dqk, int dv, int mla);

/* The configuration for this device and shape class. kind is the tuning table's
 * kernel name ("attention_prefill", "attention_decode", "mla_decode"); rows: query
 * rows one KV head has per sequence (s_q * G for decode; 0 = many, for prefill).
 * KP_ERR_UNSUPPORTED (with the reason) when no tile fits the device. */
kp_status kp_ocl_attn_config(kp_ocl_device *d, const char *kind, kp_dtype dt, int dqk, int dv, int mla, int rows,
                             kp_ocl_attn_cfg *out);

/* "-DKP_DTYPE_BF16 -DATTN_DQK=128 ..." */
void kp_ocl_attn_options(const kp_ocl_attn_cfg *c, char *buf, size_t n);

#endif /* KPORT_OPENCL_ATTENTION_COMMON_H */
