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
 *   kp_wgmma_m64n{128,256}k16_{bf16,f16} the same with N = 128 / 256 (64 / 128 f32 a thread)
 *   kp_mbar_arrive                      a consumer releases a stage (the "empty" barrier)
 * Warp specialisation: kp_setmaxnreg_dec / kp_setmaxnreg_inc move registers from the
 * producer warpgroup (TMA issue only) to the consumer warpgroups (wgmma accumulators).
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
/* One plain arrival (PTX ISA, mbarrier.arrive: the sink `_` drops the state token, sm_90).
 * Release semantics at CTA scope by default, so the caller's earlier reads of the stage
 * (its wgmma, once kp_wgmma_wait has retired them) happen before a producer that waits on
 * this phase overwrites the stage. */
KP_FN void kp_mbar_arrive(unsigned long long *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(kp_local_addr32(bar)) : "memory");
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

/* ---- register reallocation ----------------------------------------------------------- */

/* setmaxnreg (PTX ISA 8.0, sm_90a): every thread of the warpgroup executes it (.sync.aligned)
 * and the warpgroup's per-thread register count becomes n, a literal in 24..256 and a
 * multiple of 8. .dec releases registers to the CTA's pool, .inc blocks until the pool has
 * them: the sum over warpgroups must fit the registers the CTA was launched with
 * (65536 for one 384-thread CTA per SM: 40 + 2 x 232 = 504 <= 512 per warpgroup-thread). */
#define kp_setmaxnreg_dec(n) asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(n))
#define kp_setmaxnreg_inc(n) asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(n))

/* ---- wgmma ------------------------------------------------------------------------ */

KP_FN void kp_wgmma_fence(void) { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
KP_FN void kp_wgmma_commit(void) { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
/* An accumulator register "modified" by an empty asm: the compiler can move no read or
 * write of it across this point, so none lands between a wgmma and the wait_group that
 * retires it (ptxas would serialise every wgmma of the function: C7514). */
KP_FN void kp_wgmma_fence_operand(float *r) { asm volatile("" : "+f"(*r)::"memory"); }
/* Waits until at most n committed wgmma groups are pending (n: a literal 0..7). */
#define kp_wgmma_wait(n) asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(n) : "memory")

/* The wgmma instructions' operand plumbing, one generator for every shape and input type
 * (here and common/kp_tile_sm90_e4m3.h): D's nacc f32 registers as "+f" bindings of
 * d[0 .. nacc-1] and the asm's register list %0 .. %(nacc-1), then the descriptors
 * (%nacc, %nacc+1) and the accumulate flag (%nacc+2), turned into the scale-d predicate. */
#define KP_WG_F8(d, i)                                                                               \
    "+f"((d)[(i)]), "+f"((d)[(i) + 1]), "+f"((d)[(i) + 2]), "+f"((d)[(i) + 3]), "+f"((d)[(i) + 4]), \
        "+f"((d)[(i) + 5]), "+f"((d)[(i) + 6]), "+f"((d)[(i) + 7])
#define KP_WG_F32(d, i) KP_WG_F8(d, i), KP_WG_F8(d, (i) + 8), KP_WG_F8(d, (i) + 16), KP_WG_F8(d, (i) + 24)
#define KP_WG_R0_31                                                                  \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "        \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define KP_WG_R32_63                                                                 \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define KP_WG_R64_127                                                                            \
    "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "           \
    "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "           \
    "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
    "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
#define KP_WG_OPS_32(d) KP_WG_F32(d, 0)
#define KP_WG_OPS_64(d) KP_WG_F32(d, 0), KP_WG_F32(d, 32)
#define KP_WG_OPS_128(d) KP_WG_F32(d, 0), KP_WG_F32(d, 32), KP_WG_F32(d, 64), KP_WG_F32(d, 96)
#define KP_WG_REGS_32 KP_WG_R0_31
#define KP_WG_REGS_64 KP_WG_R0_31 ", " KP_WG_R32_63
#define KP_WG_REGS_128 KP_WG_R0_31 ", " KP_WG_R32_63 ", " KP_WG_R64_127
#define KP_WG_DESC_32 "%32, %33"
#define KP_WG_DESC_64 "%64, %65"
#define KP_WG_DESC_128 "%128, %129"
#define KP_WG_ACC_32 "%34"
#define KP_WG_ACC_64 "%66"
#define KP_WG_ACC_128 "%130"

/* Defines `KP_FN void name(float d[nacc], da, db, accumulate)`: one wgmma.mma_async of
 * `shape_types` ("m64nNkK.f32.A.B") with both operands from descriptors, scale-a =
 * scale-b = 1 and `imm` the rest of its immediates; accumulate = 0 overwrites d. */
#define KP_WGMMA_FN(name, nacc, shape_types, imm)                                                      \
    KP_FN void name(float d[nacc], unsigned long long da, unsigned long long db, int accumulate) {      \
        asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, " KP_WG_ACC_##nacc ", 0;\n\t"              \
                     "wgmma.mma_async.sync.aligned." shape_types " {" KP_WG_REGS_##nacc "}, "          \
                     KP_WG_DESC_##nacc ", p" imm ";\n\t}"                                              \
                     : KP_WG_OPS_##nacc(d)                                                             \
                     : "l"(da), "l"(db), "r"(accumulate));                                             \
    }

/* d (+)= A B^T over one k16 step: A [64 x 16] and B [N x 16] bf16 or f16, both K-major in
 * shared memory (descriptors da, db; imm-trans-a = imm-trans-b = 0), f32 accumulators
 * (PTX ISA, wgmma.mma_async: N a multiple of 8 up to 256 for .f16/.bf16). d as in the
 * accumulator layout above, N / 8 column groups of 8: d[4 i + j]. Descriptor of B: N rows
 * of the W tile, so one instruction reads N x 16 elements of B at SBO strides of 8 rows. */
KP_WGMMA_FN(kp_wgmma_m64n64k16_bf16, 32, "m64n64k16.f32.bf16.bf16", ", 1, 1, 0, 0")
KP_WGMMA_FN(kp_wgmma_m64n128k16_bf16, 64, "m64n128k16.f32.bf16.bf16", ", 1, 1, 0, 0")
KP_WGMMA_FN(kp_wgmma_m64n128k16_f16, 64, "m64n128k16.f32.f16.f16", ", 1, 1, 0, 0")
KP_WGMMA_FN(kp_wgmma_m64n256k16_bf16, 128, "m64n256k16.f32.bf16.bf16", ", 1, 1, 0, 0")
KP_WGMMA_FN(kp_wgmma_m64n256k16_f16, 128, "m64n256k16.f32.f16.f16", ", 1, 1, 0, 0")

#endif /* KP_TILE_SM90_H */
