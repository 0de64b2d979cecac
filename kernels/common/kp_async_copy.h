/*
 * kernels/common/kp_async_copy.h - 16-byte copies from global into local memory, issued
 * ahead of use, and the stage discipline of an S-stage software pipeline (S = 2..4).
 *
 *   kp_copy16_async(dst, src, valid)  one 16-byte chunk; dst (local) and src (global)
 *                                     16-byte aligned. valid == 0 writes zeros and reads
 *                                     nothing (src need not point anywhere valid)
 *   kp_copy_commit()                  closes the group of copies this work-item issued
 *                                     since its last commit
 *   kp_copy_wait(n)                   waits until at most n of this work-item's groups
 *                                     are still in flight (n: a constant)
 * A copy is visible to the other work-items only after kp_copy_wait and a kp_barrier().
 *
 * The pipeline every generation-2 kernel runs, S stages of one tile each:
 *
 *     for (s = 0; s < S - 1; ++s) { issue tile s into stage s; kp_copy_commit(); }
 *     for (t = 0; t < tiles; ++t) {
 *         kp_copy_wait(S - 2); kp_barrier();   tile t has landed, and every work-item is
 *                                              done with tile t - 1's stage
 *         issue tile t + S - 1 (if any) into stage (t + S - 1) % S; kp_copy_commit();
 *         compute on stage t % S;
 *     }
 *
 * (a commit with nothing issued is an empty group: the counting stays uniform.)
 *
 * Implementations, one structure:
 *   NVIDIA (KP_PTX_SM80: CUDA sm_80+, OpenCL on NVIDIA) cp.async.cg.shared.global with
 *       commit_group / wait_group: the SASS LDGSTS, which bypasses registers and L1, so
 *       S - 1 tiles are in flight while the current one is computed on
 *   AMD (HIP)  a 16-byte global load into registers and a 16-byte LDS store: done when
 *       issued, so commit and wait are empty (gfx90a/gfx94x have no 16-byte LDS-direct
 *       load; the overlap comes from other waves, as in HipKittens' 8-wave ping-pong)
 *   portable (PoCL, Intel, CUDA before sm_80) the same as AMD with OpenCL's uint4:
 *       every pipeline runs, stage indices and all, on the CI machine
 */
#ifndef KP_ASYNC_COPY_H
#define KP_ASYNC_COPY_H

#include "kp_dialect.h"

#if defined(KP_PTX_SM80)
#define KP_COPY_IMPL_NAME "ptx-cp.async"

/* the .global address cp.async takes: NVIDIA's OpenCL __global pointers are one already */
#if defined(KP_TARGET_OPENCL)
#define kp_global_addr64(p) ((unsigned long)(p))
#else
#define kp_global_addr64(p) ((unsigned long long)__cvta_generic_to_global(p))
#endif

/* src-size 0 is cp.async's zero fill: nothing is read */
KP_FN void kp_copy16_async(KP_LOCAL_MEM void *dst, KP_GLOBAL const void *src, int valid) {
    KP_ASM volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(kp_local_addr32(dst)),
                    "l"(kp_global_addr64(src)), "r"(valid ? 16 : 0)
                    : "memory");
}

KP_FN void kp_copy_commit(void) { KP_ASM volatile("cp.async.commit_group;" ::: "memory"); }

/* wait_group takes an immediate. NVIDIA's OpenCL compiler is not known to take the "n"
 * constraint (anchors/ocl_nv_ptx_features.c tried "r" and "l" only), so each count is its
 * own literal: n is a constant at every call and the chain folds to one instruction. */
KP_FN void kp_copy_wait_(int n) {
    if (n <= 0) KP_ASM volatile("cp.async.wait_group 0;" ::: "memory");
    else if (n == 1) KP_ASM volatile("cp.async.wait_group 1;" ::: "memory");
    else if (n == 2) KP_ASM volatile("cp.async.wait_group 2;" ::: "memory");
    else KP_ASM volatile("cp.async.wait_group 3;" ::: "memory");
}
#define kp_copy_wait(n) kp_copy_wait_(n)

#else
#define KP_COPY_IMPL_NAME "vector-load"

#if defined(KP_TARGET_OPENCL)
KP_FN void kp_copy16_async(KP_LOCAL_MEM void *dst, KP_GLOBAL const void *src, int valid) {
    *(KP_LOCAL_MEM uint4 *)dst = valid ? *(KP_GLOBAL const uint4 *)src : KP_UINT4_ZERO;
}
#else
KP_FN void kp_copy16_async(void *dst, const void *src, int valid) {
    *(uint4 *)dst = valid ? *(const uint4 *)src : KP_UINT4_ZERO;
}
#endif

KP_FN void kp_copy_commit(void) {}
#define kp_copy_wait(n) ((void)(n))
#endif

#endif /* KP_ASYNC_COPY_H */
