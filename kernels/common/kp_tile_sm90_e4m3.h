/*
 * kernels/common/kp_tile_sm90_e4m3.h - the sm_90a tier's e4m3 wgmma (issue 14): FP8 x FP8
 * with f32 accumulators, for the W8A8 GEMMs. Builds on common/kp_tile_sm90.h (TMA,
 * mbarrier, the wgmma fence / commit / wait) and keeps to the same conventions; the
 * index math (k32 steps, accumulator layout) is in common/kp_sm90_e4m3_layout.h, which
 * tests/test_sm90_e4m3_layout.c checks on the CPU. CUDA on sm_90a only.
 *
 *   kp_wgmma_m64n64k32_e4m3    d[32]  (+)= A[64 x 32] B[ 64 x 32]^T
 *   kp_wgmma_m64n128k32_e4m3   d[64]  (+)= A[64 x 32] B[128 x 32]^T
 *   kp_wgmma_m64n256k32_e4m3   d[128] (+)= A[64 x 32] B[256 x 32]^T
 * A and B: e4m3 (OCP e4m3fn bytes), both K-major in shared memory, given by descriptors
 * (the PTX ISA allows no other major-ness for 8-bit inputs, so there are no transpose
 * immediates); D: the 128 threads' f32 registers, laid out as bf16's (the ISA's wgmma D
 * fragments do not depend on the input type): KP_SM90_E4M3_ACC_ROW / _COL.
 * ptxas writes them as QGMMA.64xNx32.F32.E4M3.E4M3 (HGMMA is the 16-bit form).
 * accumulate = 0 overwrites d (scale-d false): a fresh accumulator per K slice, which is
 * how DeepGEMM's promotion keeps the tensor core's limited-precision FP8 sums short.
 *
 * One K slice of 128 (a 128-byte-swizzled panel, one block scale) is four calls:
 *     kp_wgmma_fence();
 *     for (k = 0; k < 4; ++k)
 *         kp_wgmma_m64n128k32_e4m3(acc, KP_SM90_E4M3_DESC_STEP(da, 64, k),
 *                                  KP_SM90_E4M3_DESC_STEP(db, 128, k), k > 0);
 *     kp_wgmma_commit(); kp_wgmma_wait(0);
 * with da / db = KP_SM90_DESC_KMAJOR(tile start, KP_SM90_SWIZZLE_128B) (each step: +32
 * bytes of start address). n256 needs 128 accumulator registers: a kernel that also keeps
 * a promoted total in registers has room for n128 (or two warpgroups of n128), not n256.
 */
#ifndef KP_TILE_SM90_E4M3_H
#define KP_TILE_SM90_E4M3_H

#include "kp_tile_sm90.h"
#include "kp_sm90_e4m3_layout.h"

/* The accumulator operands: "+f" bindings of d[i] .. d[i + 7] / d[i + 31], and the
 * matching register lists of the asm strings (%0 .. %127). */
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

/* The instruction with its operands: D's registers (list), the descriptors at %da, %db,
 * the accumulate flag at %acc turned into the scale-d predicate; scale-a = scale-b = 1. */
#define KP_WG_E4M3_ASM(shape, list, da, db, acc)                                                     \
    "{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %" acc ", 0;\n\t"                                           \
    "wgmma.mma_async.sync.aligned." shape ".f32.e4m3.e4m3 {" list "}, %" da ", %" db ", p, 1, 1;\n\t}"

KP_FN void kp_wgmma_m64n64k32_e4m3(float d[32], unsigned long long da, unsigned long long db, int accumulate) {
    asm volatile(KP_WG_E4M3_ASM("m64n64k32", KP_WG_R0_31, "32", "33", "34")
                 : KP_WG_F32(d, 0)
                 : "l"(da), "l"(db), "r"(accumulate));
}

KP_FN void kp_wgmma_m64n128k32_e4m3(float d[64], unsigned long long da, unsigned long long db, int accumulate) {
    asm volatile(KP_WG_E4M3_ASM("m64n128k32", KP_WG_R0_31 ", " KP_WG_R32_63, "64", "65", "66")
                 : KP_WG_F32(d, 0), KP_WG_F32(d, 32)
                 : "l"(da), "l"(db), "r"(accumulate));
}

KP_FN void kp_wgmma_m64n256k32_e4m3(float d[128], unsigned long long da, unsigned long long db, int accumulate) {
    asm volatile(KP_WG_E4M3_ASM("m64n256k32", KP_WG_R0_31 ", " KP_WG_R32_63 ", " KP_WG_R64_127, "128", "129", "130")
                 : KP_WG_F32(d, 0), KP_WG_F32(d, 32), KP_WG_F32(d, 64), KP_WG_F32(d, 96)
                 : "l"(da), "l"(db), "r"(accumulate));
}

#endif /* KP_TILE_SM90_E4M3_H */
