/*
 * kernels/common/kp_wave_tile_e4m3.h - the FP8 e4m3 unit of the wave-level tile
 * (common/kp_wave_tile.h): the same KP_WT_M x 16 f32 accumulator (kp_wt_acc, the
 * tile's layout, read through kp_wt_el / kp_wt_slot / kp_wt_row / kp_wt_col) multiplied
 * by KP_WT8_K = 32-k steps of e4m3 operands, and DeepGEMM's promotion of a K slice
 * through that layout. Kernels never assume a fragment layout.
 *
 * Operands are e4m3 bytes in local memory (ld in bytes, a multiple of 16; tile bases
 * 16-byte aligned):
 *   kp_wt8_load_a(a, s, lda, lane)    A [KP_WT_M][lda]  (m, k)
 *   kp_wt8_load_b(b, s, ldb, lane)    B given as Bt [16][ldb] (n, k): weight rows
 *   kp_wt8_mma(c, a, b)               C += A B over 32 k
 *   kp_wt8_promote(acc, sl, sa, sw, lane)   acc += sl * sa[row] * sw[col] over the tile:
 *                                     sa the tile's KP_WT_M row (activation) scales,
 *                                     sw its 16 column (weight) scales, local memory
 *   kp_wt8_store_local_f32(c, d, ldd, lane)  C to local f32 [KP_WT_M][ldd]
 *
 * Implementations (KP_WT8_IMPL_NAME), chosen with kp_wave_tile.h's:
 *   (a) NVIDIA PTX: kp_tile_mma_e4m3.h's unit twice side by side (columns 0-7, 8-15):
 *       A by one ldmatrix.x4 of b16 over the byte tile, B by two ldmatrix.x2, then
 *       mma.sync m16n8k32 e4m3 (sm_89+, sm_90a, OpenCL with KP_HAS_E4M3_MMA) or the f16
 *       decode + two m16n8k16 (sm_80): the instruction mix the W8A8 kernel had on
 *       kp_tile_mma_e4m3.h.
 *   (b) AMD MFMA (KP_MMA_USE_MFMA: gfx90a, gfx940): 64 lanes, 32 x 16, two
 *       v_mfma_f32_16x16x16f16 per 16-row m-block a step, in the instruction's native
 *       layout (kp_wave_layout.h), the two m-blocks sharing B. Each lane reads 8 bytes
 *       of its A row (one per m-block) and of its B column (KP_E4M3_WTA_* in
 *       kp_mma_e4m3_map.h): byte 8 (l / 16) + 4 h + q goes to MFMA h's element q, the
 *       same permutation of k in A and B, so every product meets its partner. The bytes
 *       are decoded to f16 in registers at load: KP_E4M3_F16X2_BITS (2^-8 times the
 *       value) times 2^8 in f16 (v_pk_mul_f16, exact; e4m3's subnormals become normal
 *       f16, so gfx90a's MFMA, which flushes f16 denormals, sees none; products are
 *       multiples of 2^-18, never f32 denormals). Why not an FP8 MFMA: gfx90a has
 *       none; gfx940's v_mfma_f32_16x16x32_fp8_fp8 (ROCm 5.2's clang-15 has the builtin
 *       for gfx940, not gfx90a) takes the FNUZ e4m3 (bias 8, 0x80 NaN), not the OCP
 *       e4m3fn kport's tensors hold.
 *   (c) portable (PoCL, Intel): (a)'s layout, kp_tile_mma_e4m3.h's decode + FMA unit.
 *   (d) -DKP_WT_EMULATE_MFMA16 with the portable tile: (b)'s lanes, rows and
 *       accumulator layout by FMAs, decoding with (b)'s bit arithmetic (a test aid; the
 *       operand registers are not MFMA's: each lane reads what its outputs need).
 * Every work-item of the work-group calls these together.
 */
#ifndef KP_WAVE_TILE_E4M3_H
#define KP_WAVE_TILE_E4M3_H

#include "kp_wave_tile.h"
#include "kp_tile_mma_e4m3.h"
#include "kp_mma_e4m3_map.h"

#define KP_WT8_K 32

#if defined(KP_MMA_USE_MFMA)
/* ---- (b) AMD MFMA 16x16x16 f16, native layout ------------------------------ */
#define KP_WT8_IMPL_NAME "amd-mfma-16x16x16-f16-decode"
typedef _Float16 kp_wt8_v2f16_ __attribute__((ext_vector_type(2)));

typedef struct kp_wt8_a { kp_wt_v4f16_ x[2][2]; } kp_wt8_a; /* [m-block][MFMA h] */
typedef struct kp_wt8_b { kp_wt_v4f16_ x[2]; } kp_wt8_b;    /* [MFMA h], shared */

/* 4 e4m3 bytes (byte q: element q) as f16, exactly */
KP_FN kp_wt_v4f16_ kp_wt8_dec4_(kp_u32 w) {
    const kp_wt8_v2f16_ s = {(_Float16)256.0f, (_Float16)256.0f};
    kp_wt8_v2f16_ lo = __builtin_bit_cast(kp_wt8_v2f16_, (kp_u32)KP_E4M3_F16X2_BITS(w)) * s;
    kp_wt8_v2f16_ hi = __builtin_bit_cast(kp_wt8_v2f16_, (kp_u32)KP_E4M3_F16X2_BITS(w >> 16)) * s;
    kp_wt_v4f16_ r = {lo.x, lo.y, hi.x, hi.y};
    return r;
}

/* 8 bytes at p (8-byte aligned) as MFMA h = 0, 1's operands */
KP_FN void kp_wt8_dec8_(kp_wt_v4f16_ *d, KP_LOCAL_MEM const unsigned char *p) {
    kp_u32 w[2];
    __builtin_memcpy(w, __builtin_assume_aligned(p, 8), sizeof w);
    d[0] = kp_wt8_dec4_(w[0]), d[1] = kp_wt8_dec4_(w[1]);
}

KP_FN void kp_wt8_load_a(kp_wt8_a *a, KP_LOCAL_MEM const unsigned char *s, int lda, int lane) {
    for (int mb = 0; mb < 2; ++mb)
        kp_wt8_dec8_(a->x[mb], s + (16 * mb + KP_E4M3_WTA_ROW(lane)) * lda + KP_E4M3_WTA_K(lane, 0, 0));
}

KP_FN void kp_wt8_load_b(kp_wt8_b *b, KP_LOCAL_MEM const unsigned char *s, int ldb, int lane) {
    kp_wt8_dec8_(b->x, s + KP_E4M3_WTA_ROW(lane) * ldb + KP_E4M3_WTA_K(lane, 0, 0));
}

KP_FN void kp_wt8_mma(kp_wt_acc *c, const kp_wt8_a *a, const kp_wt8_b *b) {
    for (int mb = 0; mb < 2; ++mb) {
        kp_wt_v4f32_ d = {c->x[4 * mb], c->x[4 * mb + 1], c->x[4 * mb + 2], c->x[4 * mb + 3]};
        d = __builtin_amdgcn_mfma_f32_16x16x16f16(a->x[mb][0], b->x[0], d, 0, 0, 0);
        d = __builtin_amdgcn_mfma_f32_16x16x16f16(a->x[mb][1], b->x[1], d, 0, 0, 0);
        c->x[4 * mb] = d[0], c->x[4 * mb + 1] = d[1], c->x[4 * mb + 2] = d[2], c->x[4 * mb + 3] = d[3];
    }
}

#elif defined(KP_WT_EMULATE_MFMA16) && defined(KP_MMA_USE_PORTABLE)
/* ---- (d) the AMD layout by FMAs (a test aid) ------------------------------- */
#define KP_WT8_IMPL_NAME "portable-mfma16-layout-e4m3"
typedef struct kp_wt8_a { float x[8][KP_WT8_K]; } kp_wt8_a; /* the rows of this lane's 8 slots */
typedef struct kp_wt8_b { float x[KP_WT8_K]; } kp_wt8_b;    /* this lane's column */

/* (b)'s decode: the f16 bits of 2^-8 times the value, times 2^8 */
KP_FN float kp_wt8_emu_dec_(kp_u32 byte) { return kp_f16_to_f32((kp_u16)KP_E4M3_F16_BITS_(byte)) * 256.0f; }

KP_FN void kp_wt8_load_a(kp_wt8_a *a, KP_LOCAL_MEM const unsigned char *s, int lda, int lane) {
    for (int r = 0; r < 8; ++r)
        for (int k = 0; k < KP_WT8_K; ++k) a->x[r][k] = kp_wt8_emu_dec_(s[KP_WTA_ROW(lane, r) * lda + k]);
}
KP_FN void kp_wt8_load_b(kp_wt8_b *b, KP_LOCAL_MEM const unsigned char *s, int ldb, int lane) {
    for (int k = 0; k < KP_WT8_K; ++k) b->x[k] = kp_wt8_emu_dec_(s[KP_WTA_B_COL(lane) * ldb + k]);
}
KP_FN void kp_wt8_mma(kp_wt_acc *c, const kp_wt8_a *a, const kp_wt8_b *b) {
    for (int e = 0; e < 8; ++e) {
        float acc = c->x[e];
        for (int k = 0; k < KP_WT8_K; ++k) acc = kp_fmaf(a->x[e][k], b->x[k], acc);
        c->x[e] = acc;
    }
}

#else
/* ---- (a) PTX and (c) portable: kp_tile_mma_e4m3.h's m16n8k32, two side by side ---- */
#define KP_WT8_IMPL_NAME KP_MMA8_IMPL_NAME
typedef kp_mma8_a kp_wt8_a;
typedef struct kp_wt8_b { kp_mma8_b h[2]; } kp_wt8_b; /* columns 0-7, 8-15 */

KP_FN void kp_wt8_load_a(kp_wt8_a *a, KP_LOCAL_MEM const unsigned char *s, int lda, int lane) {
    kp_mma8_load_a(a, s, lda, lane);
}
KP_FN void kp_wt8_load_b(kp_wt8_b *b, KP_LOCAL_MEM const unsigned char *s, int ldb, int lane) {
    kp_mma8_load_b(&b->h[0], s, ldb, lane);
    kp_mma8_load_b(&b->h[1], s + 8 * ldb, ldb, lane);
}
KP_FN void kp_wt8_mma(kp_wt_acc *c, const kp_wt8_a *a, const kp_wt8_b *b) {
    kp_mma_16x8x32_e4m3(&c->h[0], a, &b->h[0]);
    kp_mma_16x8x32_e4m3(&c->h[1], a, &b->h[1]);
}
#endif

/* DeepGEMM's promotion through the tile's layout: each of the lane's KP_WT_ROWS rows
 * reads its scale once, each element its column's (one column a lane on AMD, four on
 * PTX), then acc += slice * (a_scale * w_scale). */
KP_FN void kp_wt8_promote(kp_wt_acc *acc, const kp_wt_acc *slice, KP_LOCAL_MEM const float *sa,
                          KP_LOCAL_MEM const float *sw, int lane) {
    float ra[KP_WT_ROWS];
    for (int r = 0; r < KP_WT_ROWS; ++r) ra[r] = sa[kp_wt_row(lane, r)];
    for (int e = 0; e < KP_WT_ACC_N; ++e)
        kp_wt_el(*acc, e) =
            kp_fmaf(kp_wt_el(*slice, e), ra[kp_wt_slot(e)] * sw[kp_wt_col(lane, e)], kp_wt_el(*acc, e));
}

KP_FN void kp_wt8_store_local_f32(const kp_wt_acc *c, KP_LOCAL_MEM float *d, int ldd, int lane) {
    for (int e = 0; e < KP_WT_ACC_N; ++e) d[kp_wt_row(lane, kp_wt_slot(e)) * ldd + kp_wt_col(lane, e)] = kp_wt_el(*c, e);
}

#endif /* KP_WAVE_TILE_E4M3_H */
