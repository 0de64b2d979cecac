/*
 * kernels/common/kp_wave_layout.h - the register layouts of kp_wave_tile.h, as plain
 * preprocessor arithmetic (valid OpenCL C, CUDA/HIP and C99; no includes, no types):
 * the device code and the CPU model test (tests/test_wave_layout.c) both include this
 * file, so the test checks these very macros.
 *
 * A wave tile is a KP_WT_M x 16 f32 accumulator owned by KP_WT_LANES lanes; each lane
 * holds 8 of its elements, e = 0..7. Element e of lane l is at row ROW(l, SLOT(e)),
 * column COL(l, e); a lane holds ROWS distinct rows ("slots"), and the lanes that share
 * a row are the ROW_LANES consecutive lanes l & ~(ROW_LANES - 1) .. l | (ROW_LANES - 1),
 * which all map slot r to the same row (row reductions run over them).
 *
 * PTX layout (NVIDIA mma.sync, and the portable tile): 32 lanes, 16 x 16, two m16n8k16
 * accumulators side by side - elements 0-3 columns 0-7, elements 4-7 columns 8-15, each
 * half PTX's m16n8 accumulator (lane 4g + t: rows g, g + 8, columns 2t, 2t + 1).
 *
 * AMD layout (v_mfma_f32_16x16x16{f16,bf16_1k}, CDNA2/3 wave64): 64 lanes, 32 x 16, two
 * 16 x 16 m-blocks (one MFMA each: the wave shares B between them). The instruction's
 * own layout (AMD's CDNA3 ISA guide, section 7.1, and the matrix instruction calculator
 * for v_mfma_f32_16x16x16_f16; the same on gfx90a):
 *     A[i][k]   lane i + 16 * (k / 4), element k % 4 of src0 (4 x 16 bit)
 *     B[k][j]   lane j + 16 * (k / 4), element k % 4 of src1
 *     C/D[i][j] lane j + 16 * (i / 4), register i % 4 of src2 / vdst (4 x f32)
 * Element e of a lane is m-block e / 4, register e % 4: row 16 * (e / 4) + 4 * (l / 16)
 * + e % 4, column l % 16. So a lane holds 8 rows of one column, and a row lives in the
 * 16 lanes of one quarter-wave. Per 32 lanes both layouts hold 16 x 16 elements, so a
 * kernel sized in 32-lane units (16 rows each) launches the same work-group either way.
 */
#ifndef KP_WAVE_LAYOUT_H
#define KP_WAVE_LAYOUT_H

/* ---- PTX: 32 lanes, 16 x 16 ---- */
#define KP_WTP_LANES 32
#define KP_WTP_M 16
#define KP_WTP_ROWS 2
#define KP_WTP_ROW_LANES 4
#define KP_WTP_SLOT(e) (((e) >> 1) & 1)
#define KP_WTP_ROW(l, r) ((l) % 32 / 4 + 8 * (r))
#define KP_WTP_COL(l, e) (8 * ((e) >> 2) + 2 * ((l) % 4) + ((e) & 1))

/* ---- AMD MFMA 16x16x16: 64 lanes, 32 x 16 ---- */
#define KP_WTA_LANES 64
#define KP_WTA_M 32
#define KP_WTA_ROWS 8
#define KP_WTA_ROW_LANES 16
#define KP_WTA_SLOT(e) (e)
#define KP_WTA_ROW(l, r) (16 * ((r) >> 2) + 4 * ((l) % 64 / 16) + ((r) & 3))
#define KP_WTA_COL(l, e) ((l) % 16)
/* the operands of m-block mb (0, 1): element q (0..3) of lane l's src0 is
 * A[16 mb + A_ROW(l)][A_K(l, q)]; of its src1, B[B_K(l, q)][B_COL(l)] (B k x n) */
#define KP_WTA_A_ROW(l) ((l) % 16)
#define KP_WTA_A_K(l, q) (4 * ((l) % 64 / 16) + (q))
#define KP_WTA_B_COL(l) ((l) % 16)
#define KP_WTA_B_K(l, q) (4 * ((l) % 64 / 16) + (q))

/* ---- AMD: S (C layout) -> P (A layout) in registers (kp_wt_acc_to_a) ----
 * C's lane l = 16 g + 4 a + b (register i) holds C[4 g + i][4 a + b]; A wants, in element
 * q of lane 16 g + 4 a + b, A[4 a + b][4 g + q] - i.e. lane (a, g, q)'s register b. Per
 * m-block, after rounding, a lane packs its 4 values into dwords D0 = (e0 | e1 << 16),
 * D1 = (e2 | e3 << 16), and three steps move them, no LDS memory and no barrier:
 *  X1  4 x 4 transpose of (b, register) in each quad, as a 2 x 2 block transpose:
 *      lanes b = 0, 1 and 2, 3 swap the off-diagonal dwords: this lane sends D[XA_DW(l)]
 *      through DPP quad_perm XA_DPP (lane b ^ 2) and takes what arrives into the same D.
 *  X2  ... then each 2 x 2 block transposed: the lane sends U = v_perm_b32(D1, D0,
 *      XB_SEL_SEND(l)) (its lo halves if b is odd, its hi halves if even) through DPP
 *      quad_perm XB_DPP (lane b ^ 1), then D_j = v_perm_b32(W, D_j, XB_SEL_RECV(l, j)).
 *  X3  (g, a) swapped: ds_bpermute_b32 of D0 and D1 from lane XC_SRC(l) (address 4 XC_SRC).
 * v_perm_b32(S0, S1, sel): byte n of the result is byte sel.n of the 8 bytes S0:S1
 * (0-3 S1's, 4-7 S0's). The net move (the emulation (d) reads it): element q of lane l's
 * A operand is register P_REG(l, q) of lane P_LANE(l, q), in the same m-block. */
#define KP_WTA_XA_DPP 0x4E /* quad_perm [2, 3, 0, 1] */
#define KP_WTA_XA_DW(l) (1 - (((l) >> 1) & 1))
#define KP_WTA_XB_DPP 0xB1 /* quad_perm [1, 0, 3, 2] */
#define KP_WTA_XB_SEL_SEND(l) (((l) & 1) ? 0x05040100u : 0x07060302u)
#define KP_WTA_XB_SEL_RECV(l, j) (((l) & 1) ? ((j) ? 0x03020706u : 0x03020504u) : ((j) ? 0x07060100u : 0x05040100u))
#define KP_WTA_XC_SRC(l) (16 * ((l) % 16 / 4) + 4 * ((l) % 64 / 16) + (l) % 4)
#define KP_WTA_P_LANE(l, q) ((KP_WTA_XC_SRC(l) & ~3) | (q))
#define KP_WTA_P_REG(l, q) (KP_WTA_XC_SRC(l) & 3)

#endif /* KP_WAVE_LAYOUT_H */
