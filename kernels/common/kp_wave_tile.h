/*
 * kernels/common/kp_wave_tile.h - the wave-level tile: one API for a KP_WT_M x 16 f32
 * accumulator owned by a wave of KP_WT_LANES work-items, multiplied by 16-k steps, with
 * the layout owned by the implementation. Where kp_tile_mma.h's unit is PTX's m16n8k16
 * per 32 lanes (which AMD can only emulate), this unit is the one each target's matrix
 * core does natively:
 *
 *   (a) NVIDIA PTX (KP_MMA_USE_PTX): 32 lanes, 16 x 16: two mma.sync.m16n8k16 a step, A
 *       by one ldmatrix.x4, B by ldmatrix.x4 (.trans from a K-major tile) - the
 *       instruction mix kp_tile_mma.h's callers already had.
 *   (b) AMD MFMA (KP_MMA_USE_MFMA: gfx90a, gfx940-942 with KP_HAS_MFMA): 64 lanes, 32 x 16:
 *       one v_mfma_f32_16x16x16{bf16_1k,f16} per 16-row m-block, in the instruction's
 *       native register layout (common/kp_wave_layout.h); the two m-blocks share B.
 *       No duplicated work (kp_tile_mma.h's 4x4x4 mapping does half its work twice).
 *   (c) portable (KP_MMA_USE_PORTABLE: PoCL, Intel, pre-sm_80): 32 lanes, 16 x 16, PTX's
 *       layout, kp_tile_mma.h's FMA tile.
 *   (d) -DKP_WT_EMULATE_MFMA16 with the portable tile: (b)'s lanes, rows and accumulator
 *       layout computed by FMAs, so that PoCL runs a kernel's code for the AMD layout
 *       (64-lane waves, 8 row slots, rows over 16 lanes) - a test aid; the operand
 *       registers are not MFMA's (each lane loads what its outputs need), and P's
 *       register exchange is (b)'s lane map run through a scratch register file.
 * Per 32 lanes every implementation holds 16 x 16 accumulators, 8 a lane, so kernels
 * sized in 32-lane units (16 rows each) launch the same work-groups on every target.
 *
 * The layout, for code that touches accumulators (masks, softmax, epilogues):
 *   kp_wt_el(c, e)           element e (0..KP_WT_ACC_N - 1) of this lane's accumulators
 *   kp_wt_slot(e)            its row slot (0..KP_WT_ROWS - 1): the lane's distinct rows
 *   kp_wt_row(lane, r)       the tile row (0..KP_WT_M - 1) of slot r
 *   kp_wt_col(lane, e)       the tile column (0..15) of element e
 *   KP_WT_ROW_LANES          lanes sharing a row: the aligned run of that many lanes
 *   kp_wt_row_max(v, scratch, lid) / kp_wt_row_sum   v[KP_WT_ROWS] reduced over the lanes
 *                            sharing each row (shuffles; else `scratch`, 2 floats per
 *                            work-item, two barriers per pair of slots)
 * Operands (raw 16-bit values in local memory; ld in elements, a multiple of 8, tile
 * bases 16-byte aligned):
 *   kp_wt_load_a(a, s, lda, lane)        A [KP_WT_M][lda]  (m, k)
 *   kp_wt_load_a_rows(a, s, lda, lane, n) the same, rows n .. KP_WT_M - 1 zero and not
 *                            read (n a multiple of 16): a tile shorter than the wave's
 *                            rows, as a 16-row decode tile in a 32-row AMD wave
 *   kp_wt_load_b(b, s, ldb, lane)        B given as Bt [16][ldb] (n, k): K-contiguous
 *   kp_wt_load_b_trans(b, s, ld, lane)   B given K-major [16][ld] (k, n): attention's V
 *   kp_wt_mma_bf16(c, a, b) / _f16       C += A B
 *   kp_wt_acc_to_a(a, c, is_f16, scratch, lane)   the accumulator rounded to an A
 *                            operand (S -> P): registers only on PTX and AMD (a
 *                            cross-lane transpose: DPP and ds_bpermute, no barrier);
 *                            elsewhere through `scratch` (KP_WT_M x 16 16-bit values per
 *                            wave, 16-byte aligned) between two barriers
 *   kp_wt_store_acc_f32(c, d, ldd, lane) C to a global f32 [KP_WT_M][ldd]
 *   kp_wt_store_acc_16(c, d, ldd, is_f16, lane)   C rounded to 16 bits into local
 *                            memory [KP_WT_M][ldd] (ldd even; MLA's P in its tile): two
 *                            adjacent columns a 32-bit store in PTX's layout
 *   kp_wt_store_row_f32(c, n, r, scale, d, lane)  an epilogue's row: this lane's elements
 *                            of row slot r (a constant at the call) in the n wave tiles
 *                            c[0 .. n - 1], tile f holding columns 16 f .. 16 f + 15,
 *                            times scale, into the global f32 row d (d 8-byte aligned)
 *   kp_wt_store_row_f32_l(c, n, r, scale, d, lane)   the same into local memory
 *   kp_wt_store_row_16(c, n, r, scale, d, is_f16, lane)   the same rounded to 16 bits
 *                            into the global row d (d 4-byte aligned)
 *                            Where the layout puts two adjacent columns of a row in
 *                            one lane (KP_WT_COL_PAIRS: PTX's and the portable one) a
 *                            pair is one 8-byte (f32) or 4-byte (16-bit) store, its
 *                            address the row's plus a constant; AMD's lane holds one
 *                            column of each row: one store an element.
 * Every work-item of the work-group calls these together (fallbacks hold barriers), and
 * the work-group is a whole number of waves.
 */
#ifndef KP_WAVE_TILE_H
#define KP_WAVE_TILE_H

#include "kp_tile_mma.h"
#include "kp_fragment_ops.h"
#include "kp_wave_layout.h"

#define KP_WT_N 16
#define KP_WT_K 16
#define KP_WT_ACC_N 8

#if defined(KP_MMA_USE_MFMA)
/* ---- (b) AMD MFMA 16x16x16, native layout ------------------------------- */
#define KP_WT_IMPL_NAME "amd-mfma-16x16x16"
#define KP_WT_LANES KP_WTA_LANES
#define KP_WT_M KP_WTA_M
#define KP_WT_ROWS KP_WTA_ROWS
#define KP_WT_ROW_LANES KP_WTA_ROW_LANES
#define kp_wt_slot(e) KP_WTA_SLOT(e)
#define kp_wt_row(lane, r) KP_WTA_ROW(lane, r)
#define kp_wt_col(lane, e) KP_WTA_COL(lane, e)
#if KP_WARP_SIZE != 64
#error "kp_wave_tile.h: the MFMA wave tile needs wave64"
#endif

typedef short kp_wt_v4i16_ __attribute__((ext_vector_type(4)));
typedef _Float16 kp_wt_v4f16_ __attribute__((ext_vector_type(4)));
typedef float kp_wt_v4f32_ __attribute__((ext_vector_type(4)));

typedef struct kp_wt_acc { float x[8]; } kp_wt_acc; /* x[4 mb + i]: m-block mb, register i */
typedef struct kp_wt_a { kp_wt_v4i16_ x[2]; } kp_wt_a; /* src0 of m-block 0, 1 */
typedef struct kp_wt_b { kp_wt_v4i16_ x; } kp_wt_b;    /* src1, shared */
#define kp_wt_el(c, e) ((c).x[e])

/* A[16 mb + l % 16][4 (l / 16) .. + 3]: 8 contiguous bytes, aligned (lda % 8 == 0) */
KP_FN void kp_wt_load_a(kp_wt_a *a, KP_LOCAL_MEM const kp_u16 *s, int lda, int lane) {
    for (int mb = 0; mb < 2; ++mb) {
        const kp_u16 *p = (const kp_u16 *)__builtin_assume_aligned(
            s + (16 * mb + KP_WTA_A_ROW(lane)) * lda + KP_WTA_A_K(lane, 0), 8);
        __builtin_memcpy(&a->x[mb], p, sizeof a->x[mb]);
    }
}

KP_FN void kp_wt_load_a_rows(kp_wt_a *a, KP_LOCAL_MEM const kp_u16 *s, int lda, int lane, int nrows) {
    for (int mb = 0; mb < 2; ++mb) {
        const kp_wt_v4i16_ z = {0, 0, 0, 0};
        a->x[mb] = z;
        if (16 * mb < nrows) {
            const kp_u16 *p = (const kp_u16 *)__builtin_assume_aligned(
                s + (16 * mb + KP_WTA_A_ROW(lane)) * lda + KP_WTA_A_K(lane, 0), 8);
            __builtin_memcpy(&a->x[mb], p, sizeof a->x[mb]);
        }
    }
}

/* B[k][n] = Bt[n][k]: Bt[l % 16][4 (l / 16) .. + 3], contiguous */
KP_FN void kp_wt_load_b(kp_wt_b *b, KP_LOCAL_MEM const kp_u16 *s, int ldb, int lane) {
    const kp_u16 *p = (const kp_u16 *)__builtin_assume_aligned(s + KP_WTA_B_COL(lane) * ldb + KP_WTA_B_K(lane, 0), 8);
    __builtin_memcpy(&b->x, p, sizeof b->x);
}

KP_FN void kp_wt_load_b_trans(kp_wt_b *b, KP_LOCAL_MEM const kp_u16 *s, int ld, int lane) {
    for (int q = 0; q < 4; ++q) b->x[q] = (short)s[KP_WTA_B_K(lane, q) * ld + KP_WTA_B_COL(lane)];
}

/* is_f16: a constant at each call, so it folds. */
KP_FN void kp_wt_mfma_(kp_wt_acc *c, const kp_wt_a *a, const kp_wt_b *b, int is_f16) {
    for (int mb = 0; mb < 2; ++mb) {
        kp_wt_v4f32_ d = {c->x[4 * mb], c->x[4 * mb + 1], c->x[4 * mb + 2], c->x[4 * mb + 3]};
        if (is_f16)
            d = __builtin_amdgcn_mfma_f32_16x16x16f16(__builtin_bit_cast(kp_wt_v4f16_, a->x[mb]),
                                                      __builtin_bit_cast(kp_wt_v4f16_, b->x), d, 0, 0, 0);
        else
            d = __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(a->x[mb], b->x, d, 0, 0, 0);
        c->x[4 * mb] = d[0], c->x[4 * mb + 1] = d[1], c->x[4 * mb + 2] = d[2], c->x[4 * mb + 3] = d[3];
    }
}
KP_FN void kp_wt_mma_bf16(kp_wt_acc *c, const kp_wt_a *a, const kp_wt_b *b) { kp_wt_mfma_(c, a, b, 0); }
KP_FN void kp_wt_mma_f16(kp_wt_acc *c, const kp_wt_a *a, const kp_wt_b *b) { kp_wt_mfma_(c, a, b, 1); }

/* C's layout is A's transposed (a lane holds a column of C, a row of A): a cross-lane
 * transpose in registers (kp_wave_layout.h's X1-X3: two DPP quad_perm moves, four
 * v_perm_b32, two ds_bpermute_b32 a m-block), within the wave: no LDS memory, no barrier
 * (`scratch` unused). DPP's controls must be constants: the macros are. */
typedef unsigned int kp_wt_v2u32_ __attribute__((ext_vector_type(2)));
#define kp_wt_dpp_(v, ctrl) ((unsigned)__builtin_amdgcn_mov_dpp((int)(v), (ctrl), 0xF, 0xF, false))
KP_FN void kp_wt_acc_to_a(kp_wt_a *a, const kp_wt_acc *c, int is_f16, KP_LOCAL_MEM kp_u16 *scratch, int lane) {
    (void)scratch;
    const int xa = KP_WTA_XA_DW(lane), xc = 4 * KP_WTA_XC_SRC(lane);
    const unsigned sel_send = KP_WTA_XB_SEL_SEND(lane), sel0 = KP_WTA_XB_SEL_RECV(lane, 0),
                   sel1 = KP_WTA_XB_SEL_RECV(lane, 1);
    for (int mb = 0; mb < 2; ++mb) {
        unsigned d[2];
        for (int j = 0; j < 2; ++j) {
            float v0 = c->x[4 * mb + 2 * j], v1 = c->x[4 * mb + 2 * j + 1];
            d[j] = is_f16 ? (unsigned)kp_f32_to_f16(v0) | (unsigned)kp_f32_to_f16(v1) << 16
                          : (unsigned)kp_f32_to_bf16(v0) | (unsigned)kp_f32_to_bf16(v1) << 16;
        }
        /* X1: the off-diagonal dwords of each quad's 2 x 2 blocks swapped */
        unsigned t = kp_wt_dpp_(xa ? d[1] : d[0], KP_WTA_XA_DPP);
        d[0] = xa ? d[0] : t, d[1] = xa ? t : d[1];
        /* X2: each 2 x 2 block of halves transposed */
        unsigned w = kp_wt_dpp_(__builtin_amdgcn_perm(d[1], d[0], sel_send), KP_WTA_XB_DPP);
        d[0] = __builtin_amdgcn_perm(w, d[0], sel0), d[1] = __builtin_amdgcn_perm(w, d[1], sel1);
        /* X3: the quarter-wave and quad indices swapped */
        kp_wt_v2u32_ r = {(unsigned)__builtin_amdgcn_ds_bpermute(xc, (int)d[0]),
                          (unsigned)__builtin_amdgcn_ds_bpermute(xc, (int)d[1])};
        a->x[mb] = __builtin_bit_cast(kp_wt_v4i16_, r);
    }
}

#elif defined(KP_WT_EMULATE_MFMA16) && defined(KP_MMA_USE_PORTABLE)
/* ---- (d) the AMD layout by FMAs (a test aid) ------------------------------ */
#define KP_WT_IMPL_NAME "portable-mfma16-layout"
#define KP_WT_LANES KP_WTA_LANES
#define KP_WT_M KP_WTA_M
#define KP_WT_ROWS KP_WTA_ROWS
#define KP_WT_ROW_LANES KP_WTA_ROW_LANES
#define kp_wt_slot(e) KP_WTA_SLOT(e)
#define kp_wt_row(lane, r) KP_WTA_ROW(lane, r)
#define kp_wt_col(lane, e) KP_WTA_COL(lane, e)

typedef struct kp_wt_acc { float x[8]; } kp_wt_acc;
typedef struct kp_wt_a { kp_u16 x[8][16]; } kp_wt_a; /* the rows of this lane's 8 slots */
typedef struct kp_wt_b { kp_u16 x[16]; } kp_wt_b;    /* this lane's column */
#define kp_wt_el(c, e) ((c).x[e])

KP_FN void kp_wt_load_a(kp_wt_a *a, KP_LOCAL_MEM const kp_u16 *s, int lda, int lane) {
    for (int r = 0; r < 8; ++r)
        for (int k = 0; k < 16; ++k) a->x[r][k] = s[KP_WTA_ROW(lane, r) * lda + k];
}
KP_FN void kp_wt_load_a_rows(kp_wt_a *a, KP_LOCAL_MEM const kp_u16 *s, int lda, int lane, int nrows) {
    for (int r = 0; r < 8; ++r)
        for (int k = 0; k < 16; ++k) a->x[r][k] = KP_WTA_ROW(lane, r) < nrows ? s[KP_WTA_ROW(lane, r) * lda + k] : 0;
}
KP_FN void kp_wt_load_b(kp_wt_b *b, KP_LOCAL_MEM const kp_u16 *s, int ldb, int lane) {
    for (int k = 0; k < 16; ++k) b->x[k] = s[KP_WTA_B_COL(lane) * ldb + k];
}
KP_FN void kp_wt_load_b_trans(kp_wt_b *b, KP_LOCAL_MEM const kp_u16 *s, int ld, int lane) {
    for (int k = 0; k < 16; ++k) b->x[k] = s[k * ld + KP_WTA_B_COL(lane)];
}
KP_FN float kp_wt_emu_f_(kp_u16 h, int is_f16) { return is_f16 ? kp_f16_to_f32(h) : kp_bf16_to_f32(h); }
KP_FN void kp_wt_emu_mma_(kp_wt_acc *c, const kp_wt_a *a, const kp_wt_b *b, int is_f16) {
    for (int e = 0; e < 8; ++e) {
        float acc = c->x[e];
        for (int k = 0; k < 16; ++k) acc = kp_fmaf(kp_wt_emu_f_(a->x[e][k], is_f16), kp_wt_emu_f_(b->x[k], is_f16), acc);
        c->x[e] = acc;
    }
}
KP_FN void kp_wt_mma_bf16(kp_wt_acc *c, const kp_wt_a *a, const kp_wt_b *b) { kp_wt_emu_mma_(c, a, b, 0); }
KP_FN void kp_wt_mma_f16(kp_wt_acc *c, const kp_wt_a *a, const kp_wt_b *b) { kp_wt_emu_mma_(c, a, b, 1); }
/* (b)'s register exchange, modelled: `scratch` is the wave's register file of the rounded
 * accumulators, [lane][element]; MFMA's A register q of lane l (m-block mb) is register
 * 4 mb + P_REG(l, q) of lane P_LANE(l, q) (kp_wave_layout.h: the net move of (b)'s
 * X1-X3), and this lane's rows A[16 mb + i][k] are A register k % 4 of lane i + 16 (k / 4). */
KP_FN void kp_wt_acc_to_a(kp_wt_a *a, const kp_wt_acc *c, int is_f16, KP_LOCAL_MEM kp_u16 *scratch, int lane) {
    kp_barrier(); /* the previous call's reads are done */
    for (int e = 0; e < 8; ++e) {
        float v = c->x[e];
        scratch[lane * 8 + e] = is_f16 ? kp_f32_to_f16(v) : kp_f32_to_bf16(v);
    }
    kp_barrier();
    for (int r = 0; r < 8; ++r) {
        const int row = KP_WTA_ROW(lane, r), mb = row / 16, i = row % 16;
        for (int k = 0; k < 16; ++k) {
            const int l = i + 16 * (k / 4), q = k % 4;
            a->x[r][k] = scratch[KP_WTA_P_LANE(l, q) * 8 + 4 * mb + KP_WTA_P_REG(l, q)];
        }
    }
}

#else
/* ---- (a) PTX and (c) portable: kp_tile_mma.h's m16n8k16, two side by side ---- */
#if defined(KP_MMA_USE_PTX)
#define KP_WT_IMPL_NAME "ptx-mma.sync-x2"
#else
#define KP_WT_IMPL_NAME "portable-fma"
#endif
#define KP_WT_LANES KP_WTP_LANES
#define KP_WT_M KP_WTP_M
#define KP_WT_ROWS KP_WTP_ROWS
#define KP_WT_ROW_LANES KP_WTP_ROW_LANES
#define kp_wt_slot(e) KP_WTP_SLOT(e)
#define kp_wt_row(lane, r) KP_WTP_ROW(lane, r)
#define kp_wt_col(lane, e) KP_WTP_COL(lane, e)

typedef struct kp_wt_acc { kp_mma_acc h[2]; } kp_wt_acc; /* columns 0-7, 8-15 */
typedef kp_mma_a kp_wt_a;
typedef struct kp_wt_b { kp_mma_b h[2]; } kp_wt_b;
#define kp_wt_el(c, e) ((c).h[(e) >> 2].x[(e) & 3])

KP_FN void kp_wt_load_a(kp_wt_a *a, KP_LOCAL_MEM const kp_u16 *s, int lda, int lane) { kp_mma_load_a(a, s, lda, lane); }
/* 16 rows a wave: n (a multiple of 16) is 0, or the whole tile */
KP_FN void kp_wt_load_a_rows(kp_wt_a *a, KP_LOCAL_MEM const kp_u16 *s, int lda, int lane, int nrows) {
    if (nrows > 0) kp_mma_load_a(a, s, lda, lane);
    else
        for (int i = 0; i < (int)(sizeof a->x / sizeof a->x[0]); ++i) a->x[i] = 0;
}
KP_FN void kp_wt_load_b(kp_wt_b *b, KP_LOCAL_MEM const kp_u16 *s, int ldb, int lane) {
    kp_mma_load_b_pair(&b->h[0], &b->h[1], s, ldb, lane);
}
KP_FN void kp_wt_load_b_trans(kp_wt_b *b, KP_LOCAL_MEM const kp_u16 *s, int ld, int lane) {
    kp_mma_load_b_trans_pair(&b->h[0], &b->h[1], s, ld, lane);
}
KP_FN void kp_wt_mma_bf16(kp_wt_acc *c, const kp_wt_a *a, const kp_wt_b *b) {
    kp_mma_16x8x16_bf16(&c->h[0], a, &b->h[0]);
    kp_mma_16x8x16_bf16(&c->h[1], a, &b->h[1]);
}
KP_FN void kp_wt_mma_f16(kp_wt_acc *c, const kp_wt_a *a, const kp_wt_b *b) {
    kp_mma_16x8x16_f16(&c->h[0], a, &b->h[0]);
    kp_mma_16x8x16_f16(&c->h[1], a, &b->h[1]);
}
KP_FN void kp_wt_acc_to_a(kp_wt_a *a, const kp_wt_acc *c, int is_f16, KP_LOCAL_MEM kp_u16 *scratch, int lane) {
    kp_mma_acc_to_a(a, &c->h[0], &c->h[1], is_f16, scratch, lane);
}
#endif

#define kp_wt_lane() (kp_local_id(0) % KP_WT_LANES)
#define kp_wt_wave() (kp_local_id(0) / KP_WT_LANES)

KP_FN void kp_wt_acc_zero(kp_wt_acc *c) {
    for (int e = 0; e < KP_WT_ACC_N; ++e) kp_wt_el(*c, e) = 0.0f;
}

KP_FN void kp_wt_store_acc_f32(const kp_wt_acc *c, KP_GLOBAL float *d, int ldd, int lane) {
    for (int e = 0; e < KP_WT_ACC_N; ++e) d[kp_wt_row(lane, kp_wt_slot(e)) * ldd + kp_wt_col(lane, e)] = kp_wt_el(*c, e);
}

KP_FN void kp_wt_store_acc_16(const kp_wt_acc *c, KP_LOCAL_MEM kp_u16 *d, int ldd, int is_f16, int lane) {
#if KP_WT_LANES == 32 /* PTX's layout: elements 2i and 2i + 1 are one row's adjacent columns */
    for (int e = 0; e < KP_WT_ACC_N; e += 2)
        *(KP_LOCAL_MEM kp_u32 *)(d + kp_wt_row(lane, kp_wt_slot(e)) * ldd + kp_wt_col(lane, e)) =
            kp_pack2_f32_(kp_wt_el(*c, e), kp_wt_el(*c, e + 1), is_f16);
#else
    for (int e = 0; e < KP_WT_ACC_N; ++e) {
        float v = kp_wt_el(*c, e);
        d[kp_wt_row(lane, kp_wt_slot(e)) * ldd + kp_wt_col(lane, e)] = is_f16 ? kp_f32_to_f16(v) : kp_f32_to_bf16(v);
    }
#endif
}

/* The row stores of an epilogue (O to out or to split-KV partials): the loops unroll,
 * so c stays in registers and every address is d plus a constant. */
#if KP_WT_LANES == 32 /* PTX's layout: elements 2i and 2i + 1 are one row's adjacent columns */
#define KP_WT_COL_PAIRS 1
#else
#define KP_WT_COL_PAIRS 0
#endif
#if KP_WT_COL_PAIRS
#define KP_WT_STORE_F32_(at, c, e, scale)                                    \
    do {                                                                     \
        float2 v_;                                                           \
        v_.x = kp_wt_el(c, e) * (scale), v_.y = kp_wt_el(c, (e) + 1) * (scale); \
        *(KP_WT_SPACE_ float2 *)(at) = v_;                                   \
    } while (0)
#else
#define KP_WT_STORE_F32_(at, c, e, scale) (*(at) = kp_wt_el(c, e) * (scale))
#endif
#define KP_WT_DEF_STORE_ROW_F32_(name)                                                                  \
    KP_FN void name(const kp_wt_acc *c, int n, int r, float scale, KP_WT_SPACE_ float *d, int lane) {   \
        _Pragma("unroll") for (int f = 0; f < n; ++f)                                                   \
            _Pragma("unroll") for (int e = 0; e < KP_WT_ACC_N; e += 1 + KP_WT_COL_PAIRS)                \
                if (kp_wt_slot(e) == r) KP_WT_STORE_F32_(d + f * 16 + kp_wt_col(lane, e), c[f], e, scale); \
    }
#define KP_WT_SPACE_ KP_GLOBAL
KP_WT_DEF_STORE_ROW_F32_(kp_wt_store_row_f32)
#undef KP_WT_SPACE_
#define KP_WT_SPACE_ KP_LOCAL_MEM
KP_WT_DEF_STORE_ROW_F32_(kp_wt_store_row_f32_l)
#undef KP_WT_SPACE_
KP_FN void kp_wt_store_row_16(const kp_wt_acc *c, int n, int r, float scale, KP_GLOBAL kp_u16 *d, int is_f16,
                              int lane) {
    _Pragma("unroll") for (int f = 0; f < n; ++f)
        _Pragma("unroll") for (int e = 0; e < KP_WT_ACC_N; e += 1 + KP_WT_COL_PAIRS) {
            if (kp_wt_slot(e) != r) continue;
            KP_GLOBAL kp_u16 *at = d + f * 16 + kp_wt_col(lane, e);
            float v = kp_wt_el(c[f], e) * scale;
#if KP_WT_COL_PAIRS
            *(KP_GLOBAL kp_u32 *)at = kp_pack2_f32_(v, kp_wt_el(c[f], e + 1) * scale, is_f16);
#else
            *at = is_f16 ? kp_f32_to_f16(v) : kp_f32_to_bf16(v);
#endif
        }
}

/* ---- row reductions over the lanes that share a row ---------------------- */
#if defined(KP_HAS_WARP_SHUFFLE)
KP_FN void kp_wt_row_reduce_(float *v, KP_LOCAL_MEM float *scratch, int lid, int is_max) {
    (void)scratch, (void)lid;
    for (int m = 1; m < KP_WT_ROW_LANES; m <<= 1)
        for (int r = 0; r < KP_WT_ROWS; ++r) {
            float o = kp_shfl_xor_f32(v[r], m);
            v[r] = is_max ? kp_fmaxf(v[r], o) : v[r] + o;
        }
}
#else
KP_FN void kp_wt_row_reduce_(float *v, KP_LOCAL_MEM float *scratch, int lid, int is_max) {
    const int q = lid & ~(KP_WT_ROW_LANES - 1);
    for (int r0 = 0; r0 < KP_WT_ROWS; r0 += 2) { /* two slots at a time */
        kp_barrier(); /* the previous reads are done */
        scratch[2 * lid] = v[r0], scratch[2 * lid + 1] = v[r0 + 1];
        kp_barrier();
        for (int r = 0; r < 2; ++r) {
            float acc = scratch[2 * q + r];
            for (int i = 1; i < KP_WT_ROW_LANES; ++i) {
                float o = scratch[2 * (q + i) + r];
                acc = is_max ? kp_fmaxf(acc, o) : acc + o;
            }
            v[r0 + r] = acc;
        }
    }
}
#endif
KP_FN void kp_wt_row_max(float *v, KP_LOCAL_MEM float *scratch, int lid) { kp_wt_row_reduce_(v, scratch, lid, 1); }
KP_FN void kp_wt_row_sum(float *v, KP_LOCAL_MEM float *scratch, int lid) { kp_wt_row_reduce_(v, scratch, lid, 0); }

#endif /* KP_WAVE_TILE_H */
