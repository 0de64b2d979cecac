/*
 * kernels/common/kp_mma_e4m3_map.h - the index math of the e4m3 tile unit
 * (common/kp_tile_mma_e4m3.h), plain C so tests/test_tile_mma_layout.c checks the same
 * macros the device code uses.
 *
 * Fragments of PTX's mma.m16n8k32 with 8-bit operands, lane = 4g + t (g = lane / 4,
 * t = lane % 4), each register four consecutive k bytes:
 *   A register r (0..3): row g + 8 (r & 1), k 16 (r >> 1) + 4t .. + 3
 *   B register r (0..1): column (weight row) g, k 16 r + 4t .. + 3
 * As 16-bit pairs these are m16n8k16's A and B fragments of a [16][16] / [8][16] tile of
 * 16-bit elements whose rows are the e4m3 rows: one ldmatrix.x4 (A) or .x2 (B) of b16
 * moves them, with ldmatrix's addresses (lane % 16 rows, 16 bytes further for lanes
 * 16-31 of A, lanes 8-15 of B).
 *
 * Without e4m3 MMA (sm_80..88) the same registers become two m16n8k16 f16 MMAs, h = 0
 * taking A registers 0, 1 and B register 0, h = 1 registers 2, 3 and 1: the low byte
 * pair of each register goes to the f16 slots k' 2t, 2t+1 and the high pair to
 * k' 8 + 2t, 9 + 2t. A and B permute k alike, so every product meets its partner.
 */
#ifndef KP_MMA_E4M3_MAP_H
#define KP_MMA_E4M3_MAP_H

/* byte offsets of (lane, register r, byte i) in the A tile [16][lda] and B tile [8][ldb] */
#define KP_E4M3_A_OFF(lane, r, i, lda) \
    (((lane) / 4 + 8 * ((r) & 1)) * (lda) + 16 * ((r) >> 1) + 4 * ((lane) % 4) + (i))
#define KP_E4M3_B_OFF(lane, r, i, ldb) (((lane) / 4) * (ldb) + 16 * (r) + 4 * ((lane) % 4) + (i))

/* ldmatrix's row address of each lane, in bytes from the tile base */
#define KP_E4M3_LDSM_A(lane, lda) (((lane) % 16) * (lda) + ((lane) / 16) * 16)
#define KP_E4M3_LDSM_B(lane, ldb) (((lane) % 8) * (ldb) + (((lane) / 8) % 2) * 16)

/* the f16 decode: f16 MMA h's A register j (0..3) is e4m3 A register 2h + (j & 1),
 * byte pair j >> 1 (0: bytes 0, 1; 1: bytes 2, 3); its B register j (0..1) is e4m3 B
 * register h, byte pair j */
#define KP_E4M3_DEC_A_REG(h, j) (2 * (h) + ((j) & 1))
#define KP_E4M3_DEC_A_PAIR(j) ((j) >> 1)
#define KP_E4M3_DEC_B_REG(h) (h)

/* Two e4m3 bytes (the low 16 bits of x) as f16x2 bits that, times 2^8 in f16, are their
 * values exactly: the sign to bit 15, exponent and mantissa to bits 7..13 (an f16 of
 * exponent bias 15 instead of 7; e4m3's subnormals land on f16 subnormals). */
#define KP_E4M3_F16_BITS_(b) ((((b) & 0x7fu) << 7) | (((b) & 0x80u) << 8))
#define KP_E4M3_F16X2_BITS(x) (KP_E4M3_F16_BITS_((x) & 0xffu) | (KP_E4M3_F16_BITS_(((x) >> 8) & 0xffu) << 16))
#define KP_E4M3_F16X2_SCALE 0x5c005c00u /* 2^8, 2^8 in f16x2 */

/* The AMD wave tile's e4m3 unit (common/kp_wave_tile_e4m3.h: two v_mfma_f32_16x16x16f16
 * per 16-row m-block and 32-k step, h = 0, 1, on bytes decoded to f16): element q (0..3)
 * of lane l's src0 of MFMA h, m-block mb, is A[16 mb + WTA_ROW(l)][WTA_K(l, h, q)]; of its
 * src1, Bt[WTA_ROW(l)][WTA_K(l, h, q)] (B's column WTA_ROW(l)). The instruction's own k
 * of that element is 4 (l / 16) + q (kp_wave_layout.h); A and B map it alike, so the two
 * MFMAs sum every k of 0..31 once. A lane's 8 bytes of a row are contiguous. */
#define KP_E4M3_WTA_ROW(l) ((l) % 16)
#define KP_E4M3_WTA_K(l, h, q) (8 * ((l) % 64 / 16) + 4 * (h) + (q))

#endif /* KP_MMA_E4M3_MAP_H */
