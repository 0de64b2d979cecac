/*
 * backends/cuda/cuda_rtc.h — NVRTC for kernel variants the plugin does not embed.
 *
 * The build embeds one nvcc fatbin per variant `kp-gpu-variants cuda` lists (sm_80 and
 * sm_90a SASS, compute_80 PTX). A variant outside that list — a tile a tuning table
 * asks for, what `kbench --tune` explores — is compiled at run time with NVRTC from
 * the kernel source, embedded with its includes inlined (build_fatbins.py:
 * kp_cu_source_table), into a CUBIN for the device's arch, and kept in the on-disk
 * cache the other GPU backends use (backends/gpu/gpu_cache.h: <cache dir>/cuda-<key>.bin).
 * An embedded variant always runs from its fatbin: NVRTC is only for the others.
 *
 * libnvrtc is reached through dlopen (libnvrtc.so.13, .so.12, .so), once per process,
 * on first need; nothing else of the toolkit is needed. The one system header the
 * kernels include, <cuda_fp16.h>, is not among NVRTC's built-in headers (NVRTC 13.0:
 * "could not open source file"): NVRTC gets a small in-memory cuda_fp16.h instead
 * (KP_CU_RTC_FP16_SHIM in cuda_rtc.c) with the four conversions kp_dialect.h uses,
 * written as the same PTX cvt instructions cuda_fp16.hpp emits.
 *
 * Nothing here needs a GPU: the tests compile for sm_80 and sm_90a on the CPU machine.
 */
#ifndef KPORT_BACKENDS_CUDA_RTC_H
#define KPORT_BACKENDS_CUDA_RTC_H

#include "backend.h"

#include <stddef.h>

/* What NVRTC compiles every variant with, beside -arch and the variant's options: the
 * CUDA dialect, as build_fatbins.py's nvcc (-DKP_TARGET_CUDA=1). NVRTC's defaults match
 * nvcc's for device code otherwise: C++17, full ptxas optimisation (-O3), -fmad=true,
 * no fast math, no debug info. */
#define KP_CU_RTC_FIXED_OPTIONS "-DKP_TARGET_CUDA=1"

/* The kernel source (includes inlined) named "moe/moe_gemm.cl" that NVRTC compiles, or
 * NULL (also when the plugin was built without nvcc: no sources embedded). */
const char *kp_cu_rtc_source(const char *name, size_t *length);

/* KP_OK when libnvrtc can be loaded and can build for compute capability cc (80, 86,
 * 90, ...): *arch (may be NULL; arch_len bytes) is then what -arch names: "sm_90a" for
 * cc 90 (the mma.sync/ldmatrix paths the embedded sm_90a images take), "sm_<cc>" when
 * NVRTC lists cc, and "compute_<newest listed below cc>" for a GPU newer than this
 * NVRTC (PTX then, which the driver JIT-compiles). Otherwise KP_ERR_UNAVAILABLE (no
 * libnvrtc) or KP_ERR_UNSUPPORTED (no usable arch), with the reason in why.
 * Loads the library once; never compiles. Thread-safe. */
kp_status kp_cu_rtc_check(int cc, char *arch, size_t arch_len, char *why, size_t why_len);

/* "NVRTC 13.0 (libnvrtc.so.13)", or why it is absent. */
const char *kp_cu_rtc_version(char *buf, size_t len);

/* Compiles the embedded source with options for cc; *binary (malloc'd, caller frees)
 * is a CUBIN (an ELF image), or NUL-terminated PTX when *is_ptx (may be NULL) is set
 * (a GPU newer than NVRTC: see kp_cu_rtc_check); cuModuleLoadData takes either. A
 * failed compile is KP_ERR_BUILD_FAILED with NVRTC's log in the message. Errors are
 * recorded through host. Compiles are serialised (one at a time per process). */
kp_status kp_cu_rtc_compile(const kp_host_services *host, int cc, const char *source, const char *options,
                            unsigned char **binary, size_t *size, int *is_ptx);

/* kp_cu_rtc_compile through the on-disk cache: a hit is read back (its key text —
 * source hash, options, arch, NVRTC version — compared in full), a miss is compiled
 * and stored. *from_cache (may be NULL) says which. A cache that cannot be written is
 * logged, not an error. */
kp_status kp_cu_rtc_build(const kp_host_services *host, int cc, const char *source, const char *options,
                          unsigned char **binary, size_t *size, int *is_ptx, int *from_cache);

/* The cache file kp_cu_rtc_build uses for these inputs (for tests and messages);
 * path_len bytes at most. 0 when there is no cache directory, source or NVRTC. */
int kp_cu_rtc_cache_path(const kp_host_services *host, int cc, const char *source, const char *options, char *path,
                         size_t path_len);

#endif /* KPORT_BACKENDS_CUDA_RTC_H */
