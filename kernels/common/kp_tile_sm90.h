/*
 * kernels/common/kp_tile_sm90.h - the sm_90a tier's tile primitives (issue 14): TMA tile
 * loads completing on an mbarrier, and wgmma.mma_async on shared-memory descriptors.
 * CUDA on sm_90a only (NVIDIA's OpenCL compiler targets sm_90 and rejects wgmma, DESIGN
 * §3): a kernel that includes this header is built for sm_90a alone, and the planner picks
 * it only there. Layouts and descriptors: kp_sm90_layout.h.
 *
 * The pieces, in the order a pipeline stage uses them:
 *   kp_mbar_init / kp_mbar_fence_init   one barrier per stage, made visible to TMA
 *   kp_mbar_expect_tx                   the producer announces the bytes the stage gets
 *   kp_tma_load_2d                      one box of a tensor map into the stage (the copy
 *                                       completes its bytes on the barrier)
 *   kp_mbar_wait                        consumers wait on the stage's phase parity
 *   kp_wgmma_fence .. kp_wgmma_commit .. kp_wgmma_wait<N>
 *   kp_wgmma_m64n64k16_bf16             D[64x64] (+)= A[64x16] B[16x64]^T, A and B K-major in
 *                                       shared memory, D in the 128 threads' registers
 * Accumulator layout of m64nNk16 (PTX ISA, wgmma D fragments): thread t of the warpgroup,
 * warp w = t / 32, lane l = t % 32, holds for i in 0 .. N/8-1 and j in 0..3 the element
 *   row 16 w + l / 4 + 8 (j / 2), column 8 i + 2 (l % 4) + (j % 2)   in d[4 i + j].
 */
#ifndef KP_TILE_SM90_H
#define KP_TILE_SM90_H

#include "kp_dialect.h"
#include "common/kp_sm90_layout.h"

#if !defined(KP_TARGET_CUDA) || (defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL))
#error "kp_tile_sm90.h: CUDA for sm_90a only (nvcc -arch=sm_90a)"
#endif

/* A CUtensorMap by value (the driver's 128-byte, 64-byte aligned opaque type), passed as
 * a __grid_constant__ kernel parameter so TMA reads it from the parameter space; kept
 * opaque here so that kernels need no cuda.h. Built on the host by cuTensorMapEncodeTiled. */
typedef struct __align__(64) kp_tensor_map {
    unsigned long long opaque[16];
} kp_tensor_map;

/* ---- mbarrier ------------------------------------------------------------------- */

KP_FN void kp_mbar_init(unsigned long long *bar, unsigned arrivals) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(kp_local_addr32(bar)), "r"(arrivals) : "memory");
}
/* Makes initialised barriers visible to the async (TMA) proxy; then a CTA barrier. */
KP_FN void kp_mbar_fence_init(void) { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
/* One arrival that also expects `bytes` of transactions (the stage's TMA copies). */
KP_FN void kp_mbar_expect_tx(unsigned long long *bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(kp_local_addr32(bar)), "r"(bytes)
                 : "memory");
}
/* Waits until the barrier's phase with parity `parity` has completed. */
KP_FN void kp_mbar_wait(unsigned long long *bar, unsigned parity) {
    unsigned done = 0, a = kp_local_addr32(bar);
    while (!done)
        asm volatile("{\n\t.reg .pred p;\n\t"
                     "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
                     "selp.u32 %0, 1, 0, p;\n\t}"
                     : "=r"(done)
                     : "r"(a), "r"(parity)
                     : "memory");
}

/* ---- TMA -------------------------------------------------------------------------- */

/* Box (c0, c1) of a 2-D tensor map (c0: the inner, contiguous coordinate) into shared
 * memory at dst (aligned to the map's swizzle repeat), completing on bar. One thread. */
KP_FN void kp_tma_load_2d(void *dst, const kp_tensor_map *map, int c0, int c1, unsigned long long *bar) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3}], [%4];" ::"r"(kp_local_addr32(dst)),
                 "l"((unsigned long long)map), "r"(c0), "r"(c1), "r"(kp_local_addr32(bar))
                 : "memory");
}

/* ---- wgmma ------------------------------------------------------------------------ */

KP_FN void kp_wgmma_fence(void) { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
KP_FN void kp_wgmma_commit(void) { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
/* Waits until at most n committed wgmma groups are pending (n: a literal 0..7). */
#define kp_wgmma_wait(n) asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(n) : "memory")

/* d[32] (+)= A B^T over one k16 step: A [64 x 16] and B [64 x 16] bf16, both K-major
 * in shared memory (descriptors da, db); accumulate = 0 overwrites d. */
KP_FN void kp_wgmma_m64n64k16_bf16(float d[32], unsigned long long da, unsigned long long db, int accumulate) {
    asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %34, 0;\n\t"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
                 "%32, %33, p, 1, 1, 0, 0;\n\t}"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
                   "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
                   "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
                   "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
                   "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(da), "l"(db), "r"(accumulate));
}

#endif /* KP_TILE_SM90_H */
