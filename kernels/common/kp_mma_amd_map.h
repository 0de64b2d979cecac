/*
 * kernels/common/kp_mma_amd_map.h - the index math of kp_tile_mma.h's AMD MFMA
 * implementation, in one place: the device code (kp_tile_mma.h) and the CPU emulation
 * test (tests/test_tile_mma_layout.c) both include this file, so the test checks these
 * very macros, not a copy. Plain preprocessor arithmetic: valid OpenCL C, CUDA/HIP and
 * C99; no includes, no types.
 *
 * The instruction: v_mfma_f32_4x4x4_16b_{f16,bf16} (clang: __builtin_amdgcn_mfma_f32_
 * 4x4x4f16 / _4x4x4bf16_1k; CDNA2 gfx90a, CDNA3 gfx940/941/942). One wave64 instruction
 * does 16 independent blocks b = 0..15 of D_b[4x4] = A_b[4x4] * B_b[4x4] + C_b, 4 k per
 * block. Its lane layout (AMD's matrix instruction calculator, gfx9 rules: lane = b*M +
 * (k / K)*M*B + i for the inputs, lane = (b % 16)*N + j, register i for the output):
 *
 *     A_b[i][k]  lane 4b + i, element k of src0 (4 x 16 bit: elements 0,1 in the low
 *                dword's low/high half, 2,3 in the high dword's)
 *     B_b[k][j]  lane 4b + j, element k of src1
 *     C_b / D_b[i][j]  lane 4b + j, register i of src2 / vdst (4 x f32)
 *
 * So block b lives in lanes 4b..4b+3 alone: lanes 0-31 (blocks 0-7) and lanes 32-63
 * (blocks 8-15) never meet. That is why this mapping needs no cross-lane exchange at all.
 *
 * The mapping. A PTX MMA group's lane p = 4g + t (hardware lane 32*G + p, group G of the
 * wave) is position t of block b = 8G + g. Every lane loads what its own block needs:
 *
 *     A operand  row KP_AMD4_A_ROW(p) = g + 8*(t & 1) of A, all 16 k: block g's A_b is
 *                [A[g]; A[g+8]; A[g]; A[g+8]]
 *     B operand  for each of two "column sets" c = 0, 1: column KP_AMD4_B_COL(p, c) =
 *                2t + c of B (row 2t + c of the K-contiguous Bt), all 16 k
 *     step s     (0..3) covers k = 4s .. 4s+3: element e of step s is k = 4s + e
 *
 * Set c's four instructions (one per step) then hold, in lane 4g + t, register i:
 *     D_b[i][t] = A_b[i] . B_b[:, t] = A[g + 8*(i & 1)] . B[:, 2t + c] = D[g + 8*(i&1)][2t + c]
 * which is the PTX accumulator acc.x[2*(i & 1) + c] of that very lane: registers 0 and
 * 1 are the results, 2 and 3 duplicates. Cost per kp_mma call (per wave, i.e. two
 * groups): 8 MFMA 4x4x4 (2 sets x 4 k-steps), no shuffles, no exchanges; half of the
 * matrix-core work is duplicate (the same 2x as any mapping of two 16x8 products onto
 * 16x16 MFMA tiles).
 */
#ifndef KP_MMA_AMD_MAP_H
#define KP_MMA_AMD_MAP_H

#define KP_AMD4_STEPS 4 /* k-steps of 4 per 16-k fragment */
#define KP_AMD4_SETS 2  /* column sets (even / odd columns of the 16x8 fragment) */

/* Row of A (0..15) that group lane p (0..31) loads. */
#define KP_AMD4_A_ROW(p) ((p) / 4 + 8 * ((p) & 1))
/* Column of B (0..7; the row of Bt) that group lane p loads for column set c. */
#define KP_AMD4_B_COL(p, c) (2 * ((p) & 3) + (c))
/* Offset (elements) of element e of k-step s of lane p's operand in the local tile. */
#define KP_AMD4_A_OFF(p, s, e, lda) (KP_AMD4_A_ROW(p) * (lda) + 4 * (s) + (e))
#define KP_AMD4_B_OFF(p, c, s, e, ldb) (KP_AMD4_B_COL(p, c) * (ldb) + 4 * (s) + (e))
/* acc.x index that feeds register i (0..3) of column set c's C, and that receives
 * register i (0, 1) of its D. */
#define KP_AMD4_ACC(i, c) (2 * ((i) & 1) + (c))

#endif /* KP_MMA_AMD_MAP_H */
