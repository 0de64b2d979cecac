/*
 * tests/test_wave_layout.c - the wave-level tile's layouts (kernels/common/
 * kp_wave_layout.h, used by kp_wave_tile.h), checked on the CPU against plain-C models
 * of the instructions, since no AMD GPU exists in this workplace.
 *
 * The AMD model states v_mfma_f32_16x16x16{f16,bf16_1k}'s documented lane layout (CDNA3
 * ISA guide section 7.1, the matrix instruction calculator; the same on gfx90a)
 * independently of the header: A[i][k] in lane i + 16 (k / 4), element k % 4; B[k][j] in
 * lane j + 16 (k / 4); D[i][j] in lane j + 16 (i / 4), register i % 4. The loads and the
 * accumulator map come from the header's macros, as the device code uses them; so do the
 * P exchange's controls (kp_wt_acc_to_a: DPP quad_perm, v_perm_b32 selectors, ds_bpermute
 * addresses), run through models of those instructions. The PTX model is mma.m16n8k16's
 * accumulator (lane 4g + t: rows g, g + 8, columns 2t, 2t + 1). What these cannot check: that the
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

/* ---- the ISA model of kp_wt_acc_to_a's register exchange on AMD (kp_wave_layout.h X1-X3):
 * the instructions' semantics as the CDNA ISA guides state them, over the 64 lanes of one
 * VGPR each, with the controls, selectors and addresses from the header's macros ---- */
/* v_mov_b32_dpp quad_perm: lane l reads lane 4 (l / 4) + ctrl[2 (l % 4) + 1 : 2 (l % 4)] */
static void isa_dpp_quad_perm(const uint32_t src[64], uint32_t dst[64], unsigned ctrl) {
    uint32_t out[64];
    for (int l = 0; l < 64; ++l) out[l] = src[(l & ~3) | ((ctrl >> (2 * (l & 3))) & 3)];
    memcpy(dst, out, sizeof out);
}
/* v_perm_b32 D, S0, S1, sel: byte n of D is byte sel.n of {S0, S1} (0-3 S1, 4-7 S0),
 * 0x0c gives 0x00 and 0x0d-0xff 0xff (the sign modes 8-11 are not used here) */
static uint32_t isa_perm(uint32_t s0, uint32_t s1, uint32_t sel) {
    uint64_t v = (uint64_t)s0 << 32 | s1;
    uint32_t d = 0;
    for (int n = 0; n < 4; ++n) {
        unsigned b = (sel >> (8 * n)) & 0xff, x = b < 8 ? (unsigned)(v >> (8 * b)) & 0xff : b == 0x0c ? 0 : 0xff;
        d |= (uint32_t)x << (8 * n);
    }
    return d;
}
/* ds_bpermute_b32 dst, addr, src: lane l reads lane (addr[l] / 4) % 64 */
static void isa_bpermute(const uint32_t addr[64], const uint32_t src[64], uint32_t dst[64]) {
    uint32_t out[64];
    for (int l = 0; l < 64; ++l) out[l] = src[(addr[l] / 4) % 64];
    memcpy(dst, out, sizeof out);
}

static uint16_t bf16_rne(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}
/* zero and normal-range values only (the test's are) */
static uint16_t f16_rne(float f) {
    uint32_t x, m, rem, h;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) == 0) return (uint16_t)(x >> 16);
    m = x & 0x7fffffu, rem = m & 0x1fffu;
    h = ((x >> 16) & 0x8000u) | (uint32_t)((int)((x >> 23) & 0xff) - 127 + 15) << 10 | m >> 13;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)h;
}

static float f16_value(uint16_t h) { /* zero and normal values */
    int e = (h >> 10) & 0x1f;
    float v = e ? ldexpf((float)(0x400 | (h & 0x3ff)), e - 25) : 0.0f;
    return h & 0x8000 ? -v : v;
}

/* kp_wt_acc_to_a (section (b)) over the model: acc[l][e] rounded, packed two a dword per
 * m-block, X1-X3; a[l][4 mb + q]: element q of lane l's src0 for m-block mb. */
static void amd_acc_to_a(const float acc[64][8], int is_f16, uint16_t a[64][8]) {
    for (int mb = 0; mb < 2; ++mb) {
        uint32_t d0[64], d1[64], t[64], u[64], w[64], addr[64];
        for (int l = 0; l < 64; ++l) {
            uint16_t h[4];
            for (int i = 0; i < 4; ++i) h[i] = is_f16 ? f16_rne(acc[l][4 * mb + i]) : bf16_rne(acc[l][4 * mb + i]);
            d0[l] = h[0] | (uint32_t)h[1] << 16, d1[l] = h[2] | (uint32_t)h[3] << 16;
            t[l] = KP_WTA_XA_DW(l) ? d1[l] : d0[l];
        }
        isa_dpp_quad_perm(t, t, KP_WTA_XA_DPP); /* X1 */
        for (int l = 0; l < 64; ++l) {
            if (KP_WTA_XA_DW(l)) d1[l] = t[l];
            else d0[l] = t[l];
            u[l] = isa_perm(d1[l], d0[l], KP_WTA_XB_SEL_SEND(l));
        }
        isa_dpp_quad_perm(u, w, KP_WTA_XB_DPP); /* X2 */
        for (int l = 0; l < 64; ++l) {
            d0[l] = isa_perm(w[l], d0[l], KP_WTA_XB_SEL_RECV(l, 0)), d1[l] = isa_perm(w[l], d1[l], KP_WTA_XB_SEL_RECV(l, 1));
            addr[l] = 4u * (uint32_t)KP_WTA_XC_SRC(l);
        }
        isa_bpermute(addr, d0, d0); /* X3 */
        isa_bpermute(addr, d1, d1);
        for (int l = 0; l < 64; ++l)
            for (int q = 0; q < 4; ++q) a[l][4 * mb + q] = (uint16_t)((q < 2 ? d0[l] : d1[l]) >> (16 * (q & 1)));
    }
}

/* The exchange gives every lane, both m-blocks, exactly MFMA's A operand of the rounded
 * accumulator: element q of lane l in m-block mb is round(C[16 mb + l % 16][4 (l / 16) + q]),
 * bf16 and f16 (distinct values everywhere: a wrong lane, half or register shows); and
 * P_LANE / P_REG (the emulation's map) are the same move. */
KP_TEST(wave_tile_amd_acc_to_a_register_exchange_is_the_a_layout) {
    for (int is_f16 = 0; is_f16 < 2; ++is_f16)
        for (int seed = 1; seed <= 4; ++seed) {
            rng_state = (uint32_t)seed * 40503u + (uint32_t)is_f16;
            float acc[64][8], c[32][16];
            for (int l = 0; l < 64; ++l)
                for (int e = 0; e < 8; ++e) {
                    /* lane and element in the value, plus a fraction the rounding must handle */
                    float v = (float)(1 + l * 8 + e) * (rnd_int(0, 1) ? 1.0f : -1.0f) / 64.0f +
                              (float)rnd_int(0, 255) / 65536.0f;
                    acc[l][e] = v, c[KP_WTA_ROW(l, KP_WTA_SLOT(e))][KP_WTA_COL(l, e)] = v;
                }
            uint16_t a[64][8];
            amd_acc_to_a((const float(*)[8])acc, is_f16, a);
            for (int l = 0; l < 64; ++l)
                for (int mb = 0; mb < 2; ++mb)
                    for (int q = 0; q < 4; ++q) {
                        float v = c[16 * mb + KP_WTA_A_ROW(l)][KP_WTA_A_K(l, q)];
                        uint16_t want = is_f16 ? f16_rne(v) : bf16_rne(v);
                        CHECK_MSG(a[l][4 * mb + q] == want, "%s seed %d lane %d m-block %d element %d: 0x%04x, want 0x%04x",
                                  is_f16 ? "f16" : "bf16", seed, l, mb, q, a[l][4 * mb + q], want);
                        int sl = KP_WTA_P_LANE(l, q), sr = KP_WTA_P_REG(l, q);
                        CHECK_MSG(sl >= 0 && sl < 64 && sr >= 0 && sr < 4 && acc[sl][4 * mb + sr] == v,
                                  "P_LANE/P_REG lane %d element %d: lane %d register %d", l, q, sl, sr);
                    }
        }
}

/* S -> P -> O = P V as kp_wt_acc_to_a runs it on AMD: S's accumulators through the
 * register exchange (f16: |S| <= 1024, integers, exact), the result MFMA's src0; O = S V
 * exactly, through the K-major B load. */
KP_TEST(wave_tile_amd_acc_to_a_round_trip) {
    static tiles t;
    rng_state = 777u;
    fill(&t);
    float s[64][8], o[64][8], scratch[32 * 16];
    memset(s, 0, sizeof s), memset(o, 0, sizeof o);
    for (int i = 0; i < 32 * 16; ++i) scratch[i] = NAN;
    amd_wave_mma(s, t.a, LD, &t, 0);
    uint16_t pa[64][8];
    amd_acc_to_a((const float(*)[8])s, 1, pa);
    for (int l = 0; l < 64; ++l) /* the registers laid out as the A tile they are */
        for (int mb = 0; mb < 2; ++mb)
            for (int q = 0; q < 4; ++q)
                scratch[(16 * mb + KP_WTA_A_ROW(l)) * 16 + KP_WTA_A_K(l, q)] = f16_value(pa[l][4 * mb + q]);
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
