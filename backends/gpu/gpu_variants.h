/*
 * backends/gpu/gpu_variants.h — the device profiles the ahead-of-time backends build
 * their kernels for, and a host-services stub for planning outside a plugin (the
 * kp-gpu-variants build tool, tests).
 */
#ifndef KPORT_BACKENDS_GPU_VARIANTS_H
#define KPORT_BACKENDS_GPU_VARIANTS_H

#include "kp_gpu.h"

/* Local memory the ahead-of-time profiles plan for. CUDA: 48 KiB of static __shared__
 * on every arch (generation 1's tiles), and the opt-in maximum of dynamic shared memory
 * (227 KiB on sm_90). HIP: 64 KiB of LDS per work-group on CDNA and RDNA. */
#define KP_GPU_CUDA_STATIC_LOCAL_MEM (48u * 1024u)
#define KP_GPU_CUDA_LOCAL_MEM (227u * 1024u)
#define KP_GPU_HIP_LOCAL_MEM (64u * 1024u)

/* The profile a plugin reports for its devices, as far as it decides the kernel
 * variants ("cuda": sm_80+; "hip": every AMD arch). 0 on success, -1 for an unknown name.
 * info is filled with a generic description and referenced by *p. */
int kp_gpu_build_profile(const char *backend, kp_device_info *info, kp_gpu_profile *p);

/* Host services that log nothing, keep no error and return every tuning default. */
const kp_host_services *kp_gpu_stub_host(void);

#endif /* KPORT_BACKENDS_GPU_VARIANTS_H */
