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

/* kp_tile_sm90.h's generator; the PTX ISA allows 8-bit inputs no transpose immediates. */
KP_WGMMA_FN(kp_wgmma_m64n64k32_e4m3, 32, "m64n64k32.f32.e4m3.e4m3", ", 1, 1")
KP_WGMMA_FN(kp_wgmma_m64n128k32_e4m3, 64, "m64n128k32.f32.e4m3.e4m3", ", 1, 1")
KP_WGMMA_FN(kp_wgmma_m64n256k32_e4m3, 128, "m64n256k32.f32.e4m3.e4m3", ", 1, 1")

#endif /* KP_TILE_SM90_E4M3_H */
