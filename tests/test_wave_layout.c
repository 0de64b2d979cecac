/*
 * tests/test_wave_layout.c - the wave-level tile's layouts (kernels/common/
 * kp_wave_layout.h, used by kp_wave_tile.h), checked on the CPU against plain-C models
 * of the instructions, since no AMD GPU exists in this workplace.
 *
 * The AMD model states v_mfma_f32_16x16x16{f16,bf16_1k}'s documented lane layout (CDNA3
 * ISA guide section 7.1, the matrix instruction calculator; the same on gfx90a)
 * independently of the header: A[i][k] in lane i + 16 (k / 4), element k % 4; B[k][j] in
 * lane j + 16 (k / 4); D[i][j] in lane j + 16 (i / 4), register i % 4. The loads, the
 * accumulator map and the P round trip (kp_wt_acc_to_a's scratch) come from the header's
 * macros, as the device code uses them. The PTX model is mma.m16n8k16's accumulator
 * (lane 4g + t: rows g, g + 8, columns 2t, 2t + 1). What these cannot check: that the
 * hardware follows its documentation, and the compiler's code for the builtins
 * (kernels/check_hip_isa.py checks the instructions are there).
 */
#include "kp_test.h"

#include "../kernels/common/kp_wave_layout.h"

#include <math.h>

/* ---- the hardware model: one v_mfma_f32_16x16x16 over a wave of 64 ---- */
static void mfma_16x16x16(float src0[64][4], float src1[64][4], float src2[64][4], float vdst[64][4]) {
    float out[64][4];
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) {
            float s = src2[j + 16 * (i / 4)][i % 4];
            for (int k = 0; k < 16; ++k) s += src0[i + 16 * (k / 4)][k % 4] * src1[j + 16 * (k / 4)][k % 4];
            out[j + 16 * (i / 4)][i % 4] = s;
        }
    memcpy(vdst, out, sizeof out);
}

static uint32_t rng_state;
static int rnd_int(int lo, int hi) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return lo + (int)((rng_state >> 8) % (uint32_t)(hi - lo + 1));
}

/* "local memory": A [32][ld], Bt [16][ld] (n, k), B [16][ld] (k, n); NaN padding */
enum { LD = 40 };
typedef struct tiles { float a[32 * LD], bt[16 * LD], b[16 * LD]; } tiles;

static void fill(tiles *t) {
    for (int i = 0; i < 32 * LD; ++i) t->a[i] = NAN;
    for (int i = 0; i < 16 * LD; ++i) t->bt[i] = t->b[i] = NAN;
    for (int r = 0; r < 32; ++r)
        for (int k = 0; k < 16; ++k) t->a[r * LD + k] = (float)rnd_int(-8, 8);
    for (int n = 0; n < 16; ++n)
        for (int k = 0; k < 16; ++k) t->bt[n * LD + k] = t->b[k * LD + n] = (float)rnd_int(-8, 8);
}

/* kp_wave_tile.h's AMD path over the model: acc[l][e] += (A B) of both m-blocks. B from
 * Bt (kp_wt_load_b) or from the K-major B (kp_wt_load_b_trans). */
static void amd_wave_mma(float acc[64][8], const float *a, int lda, const tiles *t, int trans) {
    float src1[64][4];
    for (int l = 0; l < 64; ++l)
        for (int q = 0; q < 4; ++q)
            src1[l][q] = trans ? t->b[KP_WTA_B_K(l, q) * LD + KP_WTA_B_COL(l)]
                               : t->bt[KP_WTA_B_COL(l) * LD + KP_WTA_B_K(l, q)];
    for (int mb = 0; mb < 2; ++mb) {
        float src0[64][4], d[64][4];
        for (int l = 0; l < 64; ++l)
            for (int q = 0; q < 4; ++q) {
                src0[l][q] = a[(16 * mb + KP_WTA_A_ROW(l)) * lda + KP_WTA_A_K(l, q)];
                d[l][q] = acc[l][4 * mb + q];
            }
        mfma_16x16x16(src0, src1, d, d);
        for (int l = 0; l < 64; ++l)
            for (int q = 0; q < 4; ++q) acc[l][4 * mb + q] = d[l][q];
    }
}

/* Random accumulators, then C += A B: element e of lane l is C[ROW(l, SLOT(e))][COL(l, e)],
 * exactly (small integers); both B loads give the same product. */
KP_TEST(wave_tile_amd_mfma16_accumulator_map) {
    static tiles t;
    for (int seed = 1; seed <= 10; ++seed)
        for (int trans = 0; trans < 2; ++trans) {
            rng_state = (uint32_t)seed * 2654435761u;
            fill(&t);
            float acc[64][8], init[64][8];
            for (int l = 0; l < 64; ++l)
                for (int e = 0; e < 8; ++e) acc[l][e] = init[l][e] = (float)rnd_int(-100, 100);
            amd_wave_mma(acc, t.a, LD, &t, trans);
            for (int l = 0; l < 64; ++l)
                for (int e = 0; e < 8; ++e) {
                    int r = KP_WTA_ROW(l, KP_WTA_SLOT(e)), c = KP_WTA_COL(l, e);
                    float want = init[l][e];
                    for (int k = 0; k < 16; ++k) want += t.a[r * LD + k] * t.bt[c * LD + k];
                    CHECK_MSG(acc[l][e] == want, "seed %d trans %d lane %d e %d = C[%d][%d]: %g, want %g", seed,
                              trans, l, e, r, c, (double)acc[l][e], (double)want);
                }
        }
}

/* Every element of the 32 x 16 tile is held exactly once, and the lanes holding a row are
 * exactly one aligned run of ROW_LANES lanes, all with it in the same slot: what the row
 * reductions (xor shuffles 1 .. ROW_LANES / 2, or the scratch fallback) rely on. The
 * same for the PTX layout, whose map is also checked against mma.m16n8k16's. */
static void check_cover(int lanes, int m, int rows, int row_lanes, int (*row)(int, int), int (*col)(int, int),
                        int (*slot)(int), const char *name) {
    int seen[32][16];
    memset(seen, 0, sizeof seen);
    for (int l = 0; l < lanes; ++l)
        for (int e = 0; e < 8; ++e) {
            int r = row(l, slot(e)), c = col(l, e);
            CHECK_MSG(r >= 0 && r < m && c >= 0 && c < 16 && slot(e) < rows, "%s lane %d e %d: (%d, %d)", name, l, e,
                      r, c);
            if (r >= 0 && r < m && c >= 0 && c < 16) seen[r][c]++;
        }
    for (int r = 0; r < m; ++r)
        for (int c = 0; c < 16; ++c) CHECK_MSG(seen[r][c] == 1, "%s C[%d][%d] held %d times", name, r, c, seen[r][c]);
    for (int l = 0; l < lanes; ++l)
        for (int s = 0; s < rows; ++s) {
            int r = row(l, s), q = l & ~(row_lanes - 1);
            for (int o = 0; o < lanes; ++o)
                for (int s2 = 0; s2 < rows; ++s2) {
                    int same_run = o >= q && o < q + row_lanes;
                    if (row(o, s2) == r) CHECK_MSG(same_run && s2 == s, "%s row %d: lane %d slot %d and lane %d slot %d",
                                                    name, r, l, s, o, s2);
                }
        }
}
static int amd_row(int l, int s) { return KP_WTA_ROW(l, s); }
static int amd_col(int l, int e) { return (void)e, KP_WTA_COL(l, e); }
static int amd_slot(int e) { return KP_WTA_SLOT(e); }
static int ptx_row(int l, int s) { return KP_WTP_ROW(l, s); }
static int ptx_col(int l, int e) { return KP_WTP_COL(l, e); }
static int ptx_slot(int e) { return KP_WTP_SLOT(e); }

KP_TEST(wave_tile_layouts_cover_the_tile_rows_in_aligned_runs) {
    check_cover(KP_WTA_LANES, KP_WTA_M, KP_WTA_ROWS, KP_WTA_ROW_LANES, amd_row, amd_col, amd_slot, "amd");
    check_cover(KP_WTP_LANES, KP_WTP_M, KP_WTP_ROWS, KP_WTP_ROW_LANES, ptx_row, ptx_col, ptx_slot, "ptx");
    CHECK_INT_EQ(KP_WTA_M * 16 / KP_WTA_LANES, 8);
    CHECK_INT_EQ(KP_WTP_M * 16 / KP_WTP_LANES, 8);
    CHECK_INT_EQ(KP_WTA_LANES / KP_WTA_M, KP_WTP_LANES / KP_WTP_M); /* 16 rows per 32 lanes both */
    /* PTX: elements 0-3 are the m16n8 accumulator of columns 0-7, 4-7 that of 8-15 */
    for (int l = 0; l < 32; ++l)
        for (int e = 0; e < 8; ++e) {
            int g = l / 4, t = l % 4, x = e & 3;
            CHECK_INT_EQ(KP_WTP_ROW(l, KP_WTP_SLOT(e)), g + 8 * (x / 2));
            CHECK_INT_EQ(KP_WTP_COL(l, e), 8 * (e / 4) + 2 * t + x % 2);
        }
    /* AMD: the operand loads are 8 contiguous, aligned bytes (kp_wt_load_a / _b memcpy) */
    for (int l = 0; l < 64; ++l) {
        CHECK_INT_EQ(KP_WTA_A_K(l, 0) % 4, 0);
        for (int q = 0; q < 4; ++q) CHECK_INT_EQ(KP_WTA_A_K(l, q), KP_WTA_A_K(l, 0) + q);
        for (int q = 0; q < 4; ++q) CHECK_INT_EQ(KP_WTA_B_K(l, q), KP_WTA_B_K(l, 0) + q);
    }
}

/* S -> P -> O = P V as kp_wt_acc_to_a runs it on AMD: S's elements stored to scratch
 * [32][16] at (ROW, COL), read back by the A load; O = S V exactly (small integers, no
 * rounding at these magnitudes), through the K-major B load. */
KP_TEST(wave_tile_amd_acc_to_a_round_trip) {
    static tiles t;
    rng_state = 777u;
    fill(&t);
    float s[64][8], o[64][8], scratch[32 * 16];
    memset(s, 0, sizeof s), memset(o, 0, sizeof o);
    for (int i = 0; i < 32 * 16; ++i) scratch[i] = NAN;
    amd_wave_mma(s, t.a, LD, &t, 0);
    for (int l = 0; l < 64; ++l)
        for (int e = 0; e < 8; ++e) scratch[KP_WTA_ROW(l, KP_WTA_SLOT(e)) * 16 + KP_WTA_COL(l, e)] = s[l][e];
    amd_wave_mma(o, scratch, 16, &t, 1);
    for (int l = 0; l < 64; ++l)
        for (int e = 0; e < 8; ++e) {
            int r = KP_WTA_ROW(l, KP_WTA_SLOT(e)), c = KP_WTA_COL(l, e);
            float want = 0.0f;
            for (int k = 0; k < 16; ++k) {
                float sv = 0.0f;
                for (int kk = 0; kk < 16; ++kk) sv += t.a[r * LD + kk] * t.bt[k * LD + kk];
                want += sv * t.b[k * LD + c];
            }
            CHECK_MSG(o[l][e] == want, "lane %d e %d = O[%d][%d]: %g, want %g", l, e, r, c, (double)o[l][e],
                      (double)want);
        }
}
