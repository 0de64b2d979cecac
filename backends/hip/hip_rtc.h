/*
 * backends/hip/hip_rtc.h — kernels for archs the plugin has no code object for.
 *
 * The build embeds one code object per (kernel variant, arch) for the archs Debian's
 * ROCm 5.2 compiles (kp_hip_archs: gfx90a, gfx940, gfx1030). For any other arch a
 * device reports (gfx942, gfx1100, gfx908, ...) the same kernel source, with its
 * includes inlined at build time, is compiled at run time with hiprtc, and the code
 * object is kept in the on-disk cache the OpenCL backend uses too
 * (backends/gpu/gpu_cache.h: <cache dir>/hip-<key>.bin).
 *
 * hiprtc is reached through dlopen (libhiprtc.so on ROCm 6+, inside libamdhip64 on
 * ROCm 5). Before any compile, the target ISA is looked up in the list of the code-
 * object manager (comgr) the runtime uses: comgr 2.4 (ROCm 5.2) does not list gfx940,
 * gfx941, gfx942 or gfx11xx, and hiprtc asked for one of those aborts the process
 * (an invalid free() in amd_comgr_destroy_action_info). An arch missing from that list
 * is refused with KP_ERR_UNSUPPORTED and the reason, never compiled.
 *
 * Nothing here needs a GPU: the tests compile for gfx908 on the CPU machine.
 */
#ifndef KPORT_BACKENDS_HIP_RTC_H
#define KPORT_BACKENDS_HIP_RTC_H

#include "backend.h"
#include "kp_hip_code_objects.h"

#include <stddef.h>

/* What every HIP kernel is compiled with, by hipcc at build time
 * (build_code_objects.py passes the same) and by hiprtc:
 *  - KP_HAS_MFMA: the tile-MMA layer uses MFMA on gfx90a/gfx94x (kernels/common/
 *    kp_tile_mma.h). Only the MMA variants (-DATTN_MMA, -DKP_GG_MMA) contain it, and
 *    the planners pick those on AMD only when tuning asks (mma 1): opt-in until run on
 *    hardware;
 *  - at most 256 work-items per group (the profile's max_group, so the planners never
 *    ask for more): on CDNA the compiler then budgets 512 VGPRs instead of 128, and the
 *    MMA tiles stop spilling (0.7-1 KB per lane at the default 1024). */
#define KP_HIP_MAX_GROUP 256
#define KP_HIP_FIXED_OPTIONS "-O3 -DKP_TARGET_HIP=1 -DKP_HAS_MFMA --gpu-max-threads-per-block=256"
#define KP_HIP_FIXED_OPTIONS_ARGV "-O3", "-DKP_TARGET_HIP=1", "-DKP_HAS_MFMA", "--gpu-max-threads-per-block=256"
#define KP_HIP_FIXED_OPTIONS_COUNT 4

/* The embedded code object of (source, options) for arch, or NULL. */
const kp_hip_code_object *kp_hip_code_object_find(const char *arch, const char *source, const char *options);
/* The embedded kernel source (includes inlined) named "attention/attention_decode.cl", or NULL. */
const kp_hip_source *kp_hip_source_find(const char *name);

/* KP_OK when this machine's hiprtc can build code for arch ("gfx908", no feature
 * suffix). Otherwise KP_ERR_UNSUPPORTED (comgr does not list the arch) or
 * KP_ERR_UNAVAILABLE (no hiprtc or no comgr library), with the reason in why.
 * Loads the libraries once; never compiles. Thread-safe. */
kp_status kp_hip_rtc_check(const char *arch, char *why, size_t why_len);

/* Compiles the embedded source with options for arch; *binary (malloc'd, caller
 * frees) is the code object hiprtc returns. Checks the arch first (kp_hip_rtc_check).
 * A failed compile is KP_ERR_BUILD_FAILED with hiprtc's log in the message. Errors
 * are recorded through host. Compiles are serialised (one at a time per process). */
kp_status kp_hip_rtc_compile(const kp_host_services *host, const char *arch, const char *source,
                             const char *options, unsigned char **binary, size_t *size);

/* kp_hip_rtc_compile through the on-disk cache: a hit is read back (its key text —
 * source hash, options, arch, runtime — compared in full), a miss is compiled and
 * stored. runtime: the HIP runtime's version text ("HIP 50221153"). *from_cache (may be
 * NULL) says which. A cache that cannot be written is logged, not an error. */
kp_status kp_hip_rtc_build(const kp_host_services *host, const char *arch, const char *source, const char *options,
                           const char *runtime, unsigned char **binary, size_t *size, int *from_cache);

/* The cache file kp_hip_rtc_build uses for these inputs (for tests and messages);
 * path_len bytes at most. 0 when there is no cache directory. */
int kp_hip_rtc_cache_path(const kp_host_services *host, const char *arch, const char *source, const char *options,
                          const char *runtime, char *path, size_t path_len);

#endif /* KPORT_BACKENDS_HIP_RTC_H */
