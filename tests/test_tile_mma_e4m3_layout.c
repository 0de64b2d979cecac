/*
 * tests/test_tile_mma_e4m3_layout.c - the e4m3 tile unit's fragment mapping
 * (kernels/common/kp_tile_mma_e4m3.h), checked on the CPU.
 *
 * No sm_89+ GPU runs in this workplace, so the index math the PTX paths use - the macros
 * of kernels/common/kp_mma_e4m3_map.h, which the device code uses too - is checked
 * against plain-C models of the instructions, written from the PTX ISA independently of
 * the header:
 *   - ldmatrix.m8n8.x4 / .x2 of b16 at the header's row addresses delivers exactly
 *     mma.m16n8k32's 8-bit A and B fragments (so the b16 ldmatrix moves e4m3 tiles);
 *   - sm_80's decode path: the e4m3 registers regrouped into two m16n8k16 16-bit MMAs
 *     (KP_E4M3_DEC_*) give D = A * B, every product meeting its partner;
 *   - the e4m3 -> f16 bit construction times 2^8 is exact for all 254 finite bytes;
 *   - the AMD wave tile's e4m3 unit (kp_wave_tile_e4m3.h, KP_E4M3_WTA_*): two
 *     v_mfma_f32_16x16x16f16 per 16-row m-block over a 32-k step, on bytes decoded to f16,
 *     give the 32 x 16 tile in kp_wave_layout.h's accumulator map.
 * What they cannot check: the hardware and ptxas (that needs the GPU; ci/gpu-check).
 */
#include "kp_test.h"
#include "ref_moe.h" /* ref_fp8_e4m3 */

#include "../kernels/common/kp_mma_e4m3_map.h"
#include "../kernels/common/kp_wave_layout.h"

#include <math.h>

#define LANES 32

/* ---- the instruction models (PTX ISA) ---------------------------------------- */

/* mma.m16n8k32 with .e4m3 A (PTX "Matrix fragments for mma.m16n8k32", 8-bit types):
 * element i (0..15) of lane 4g+t lives in register i/4, byte i%4, at row g (i in 0..3,
 * 8..11) or g+8 (4..7, 12..15), column 4t + (i & 3) (+16 for i >= 8). */
static void k32_a_coords(int lane, int i, int *row, int *col) {
    int g = lane / 4, t = lane % 4;
    *row = g + ((i >= 4 && i < 8) || i >= 12 ? 8 : 0);
    *col = 4 * t + (i & 3) + (i >= 8 ? 16 : 0);
}
/* B (k x n): element i (0..7) in register i/4, byte i%4: row k = 4t + (i & 3) (+16 for i >= 4), column g. */
static void k32_b_coords(int lane, int i, int *k, int *n) {
    *k = 4 * (lane % 4) + (i & 3) + (i >= 4 ? 16 : 0);
    *n = lane / 4;
}

/* ldmatrix.sync.aligned.m8n8.xN.shared.b16: matrix m takes its 8 row addresses from
 * lanes 8m .. 8m+7; lane 4g+t receives, in register m, row g's 16-bit elements 2t and
 * 2t+1 of matrix m (4 bytes from that row's address + 4t). */
static uint32_t ldsm(const uint8_t *base, const int *row_addr, int m, int lane) {
    const uint8_t *p = base + row_addr[8 * m + lane / 4] + 4 * (lane % 4);
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* mma.m16n8k16 with 16-bit A, B (values as floats here): A register j (0..3) of lane
 * 4g+t holds row g (j even) or g+8 (j odd), columns 2t + 8 (j >> 1) + {0, 1}; B register
 * j (0..1) rows k = 2t + 8j + {0, 1}, column g; D as kp_tile_mma.h's accumulator. */
static void mma_k16(float d[LANES][4], float a[LANES][4][2], float b[LANES][2][2]) {
    float A[16][16], B[16][8];
    for (int l = 0; l < LANES; ++l) {
        int g = l / 4, t = l % 4;
        for (int j = 0; j < 4; ++j)
            for (int h = 0; h < 2; ++h) A[g + 8 * (j & 1)][2 * t + 8 * (j >> 1) + h] = a[l][j][h];
        for (int j = 0; j < 2; ++j)
            for (int h = 0; h < 2; ++h) B[2 * t + 8 * j + h][g] = b[l][j][h];
    }
    for (int l = 0; l < LANES; ++l) {
        int g = l / 4, t = l % 4;
        for (int x = 0; x < 4; ++x) {
            int r = g + 8 * (x / 2), n = 2 * t + x % 2;
            for (int k = 0; k < 16; ++k) d[l][x] += A[r][k] * B[k][n];
        }
    }
}

/* ---- data -------------------------------------------------------------------- */

static uint32_t rng_state = 12345u;
/* an e4m3 byte of exponent field 5..10 (|x| in [0.25, 15]): products are multiples of
 * 2^-10 below 2^8, so 32-term sums stay exact in f32 and any misplaced product shows */
static uint8_t rnd_byte(void) {
    uint8_t b;
    do {
        rng_state = rng_state * 1664525u + 1013904223u;
        b = (uint8_t)(rng_state >> 24);
    } while (((b >> 3) & 15) < 5 || ((b >> 3) & 15) > 10);
    return b;
}

/* A [16][lda], Bt [8][ldb] (n, k) e4m3 tiles, padding 0x7f (NaN) */
enum { LDA = 48, LDB = 64 };
static uint8_t tile_a[16 * LDA], tile_b[8 * LDB];
static void fill(void) {
    memset(tile_a, 0x7f, sizeof tile_a), memset(tile_b, 0x7f, sizeof tile_b);
    for (int r = 0; r < 16; ++r)
        for (int k = 0; k < 32; ++k) tile_a[r * LDA + k] = rnd_byte();
    for (int n = 0; n < 8; ++n)
        for (int k = 0; k < 32; ++k) tile_b[n * LDB + k] = rnd_byte();
}

/* ---- tests ------------------------------------------------------------------- */

KP_TEST(tile_mma_e4m3_offsets_match_ptx_k32) {
    for (int lane = 0; lane < LANES; ++lane) {
        for (int i = 0; i < 16; ++i) {
            int row, col;
            k32_a_coords(lane, i, &row, &col);
            CHECK_INT_EQ(KP_E4M3_A_OFF(lane, i / 4, i % 4, LDA), row * LDA + col);
        }
        for (int i = 0; i < 8; ++i) {
            int k, n;
            k32_b_coords(lane, i, &k, &n);
            CHECK_INT_EQ(KP_E4M3_B_OFF(lane, i / 4, i % 4, LDB), n * LDB + k);
        }
    }
}

KP_TEST(tile_mma_e4m3_ldmatrix_moves_k32_fragments) {
    fill();
    int addr_a[LANES], addr_b[LANES];
    for (int l = 0; l < LANES; ++l) {
        addr_a[l] = KP_E4M3_LDSM_A(l, LDA);
        addr_b[l] = l < 16 ? KP_E4M3_LDSM_B(l, LDB) : -1; /* x2: lanes 16-31 unused */
        CHECK_INT_EQ(addr_a[l] % 16, 0); /* ldmatrix rows are 16-byte aligned */
        if (l < 16) CHECK_INT_EQ(addr_b[l] % 16, 0);
    }
    for (int l = 0; l < LANES; ++l) {
        for (int r = 0; r < 4; ++r) {
            uint32_t got = ldsm(tile_a, addr_a, r, l);
            for (int i = 0; i < 4; ++i)
                CHECK_INT_EQ((got >> (8 * i)) & 0xffu, tile_a[KP_E4M3_A_OFF(l, r, i, LDA)]);
        }
        for (int r = 0; r < 2; ++r) {
            uint32_t got = ldsm(tile_b, addr_b, r, l);
            for (int i = 0; i < 4; ++i)
                CHECK_INT_EQ((got >> (8 * i)) & 0xffu, tile_b[KP_E4M3_B_OFF(l, r, i, LDB)]);
        }
    }
}

/* sm_80: D = A * B from the k32 fragments through two 16-bit MMAs */
KP_TEST(tile_mma_e4m3_decode_path_is_a_times_b) {
    for (int rep = 0; rep < 4; ++rep) {
        fill();
        float d[LANES][4] = {{0}};
        for (int h = 0; h < 2; ++h) {
            float a[LANES][4][2], b[LANES][2][2];
            for (int l = 0; l < LANES; ++l) {
                for (int j = 0; j < 4; ++j)
                    for (int e = 0; e < 2; ++e)
                        a[l][j][e] = (float)ref_fp8_e4m3(
                            tile_a[KP_E4M3_A_OFF(l, KP_E4M3_DEC_A_REG(h, j), 2 * KP_E4M3_DEC_A_PAIR(j) + e, LDA)]);
                for (int j = 0; j < 2; ++j)
                    for (int e = 0; e < 2; ++e)
                        b[l][j][e] = (float)ref_fp8_e4m3(tile_b[KP_E4M3_B_OFF(l, KP_E4M3_DEC_B_REG(h), 2 * j + e, LDB)]);
            }
            mma_k16(d, a, b);
        }
        for (int l = 0; l < LANES; ++l)
            for (int x = 0; x < 4; ++x) {
                int r = l / 4 + 8 * (x / 2), n = 2 * (l % 4) + x % 2;
                double want = 0.0;
                for (int k = 0; k < 32; ++k) want += ref_fp8_e4m3(tile_a[r * LDA + k]) * ref_fp8_e4m3(tile_b[n * LDB + k]);
                CHECK_MSG(d[l][x] == (float)want, "lane %d acc %d (D[%d][%d]): %.9g, want %.9g", l, x, r, n,
                          (double)d[l][x], want);
            }
    }
}

static double f16_value(uint32_t h) {
    int e = (int)((h >> 10) & 0x1f), m = (int)(h & 0x3ff);
    double v = e ? ldexp(1.0 + m / 1024.0, e - 15) : ldexp(m / 1024.0, -14);
    return h & 0x8000u ? -v : v;
}

KP_TEST(tile_mma_e4m3_f16_bits_exact) {
    for (uint32_t b0 = 0; b0 < 256; ++b0)
        for (uint32_t b1 = 0; b1 < 256; b1 += 7) {
            if ((b0 & 0x7f) == 0x7f || (b1 & 0x7f) == 0x7f) continue; /* NaN: never an input */
            uint32_t x = KP_E4M3_F16X2_BITS(b0 | b1 << 8 | 0xabcd0000u); /* the high half is ignored */
            double scale = f16_value(KP_E4M3_F16X2_SCALE & 0xffffu);
            CHECK_INT_EQ(KP_E4M3_F16X2_SCALE >> 16, KP_E4M3_F16X2_SCALE & 0xffffu);
            CHECK_MSG(f16_value(x & 0xffffu) * scale == ref_fp8_e4m3((unsigned char)b0), "byte 0x%02x", b0);
            CHECK_MSG(f16_value(x >> 16) * scale == ref_fp8_e4m3((unsigned char)b1), "byte 0x%02x", b1);
        }
}

/* ---- the AMD wave tile's e4m3 unit (kernels/common/kp_wave_tile_e4m3.h) ---------- */

/* v_mfma_f32_16x16x16f16 over a wave of 64 (CDNA3 ISA guide section 7.1; the same on
 * gfx90a), written from the documentation, not the header: A[i][k] in lane i + 16 (k / 4),
 * element k % 4; B[k][j] in lane j + 16 (k / 4); D[i][j] in lane j + 16 (i / 4),
 * register i % 4. */
static void mfma_f16_16x16x16(const double src0[64][4], const double src1[64][4], double d[64][4]) {
    double out[64][4];
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) {
            double s = d[j + 16 * (i / 4)][i % 4];
            for (int k = 0; k < 16; ++k) s += src0[i + 16 * (k / 4)][k % 4] * src1[j + 16 * (k / 4)][k % 4];
            out[j + 16 * (i / 4)][i % 4] = s;
        }
    memcpy(d, out, sizeof out);
}

/* the decode kp_wave_tile_e4m3.h runs in registers: KP_E4M3_F16X2_BITS of the byte
 * pairs of a word, times 2^8 in f16 (as values here: f16_value times the scale) */
static double amd_decode(const uint8_t *p, int q) {
    uint32_t w = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    uint32_t x = KP_E4M3_F16X2_BITS(w >> (16 * (q / 2)));
    return f16_value(q % 2 ? x >> 16 : x & 0xffffu) * f16_value(KP_E4M3_F16X2_SCALE & 0xffffu);
}

/* A [32][LDA] and Bt [16][LDA] e4m3 tiles, one 32-k step: per m-block, MFMA h = 0, 1 on
 * the bytes the header's macros give each lane (8 contiguous, 8-byte aligned bytes of
 * its row), decoded as the device does; element e of lane l (m-block e / 4, register
 * e % 4) must be C[ROW(l, SLOT(e))][COL(l, e)] = sum over all 32 k, exactly. */
KP_TEST(wave_tile_e4m3_amd_two_mfma16_per_k32) {
    static uint8_t a[32 * LDA], bt[16 * LDA];
    for (int rep = 0; rep < 4; ++rep) {
        memset(a, 0x7f, sizeof a), memset(bt, 0x7f, sizeof bt); /* padding: NaN */
        for (int r = 0; r < 32; ++r)
            for (int k = 0; k < 32; ++k) a[r * LDA + k] = rnd_byte();
        for (int n = 0; n < 16; ++n)
            for (int k = 0; k < 32; ++k) bt[n * LDA + k] = rep == 3 && k % 5 == 0 ? (uint8_t)(k & 7) : rnd_byte();
        double acc[64][8];
        for (int l = 0; l < 64; ++l)
            for (int e = 0; e < 8; ++e) acc[l][e] = 0.0;
        for (int l = 0; l < 64; ++l) {
            CHECK_INT_EQ((KP_E4M3_WTA_ROW(l) * LDA + KP_E4M3_WTA_K(l, 0, 0)) % 8, 0);
            for (int h = 0; h < 2; ++h)
                for (int q = 0; q < 4; ++q) CHECK_INT_EQ(KP_E4M3_WTA_K(l, h, q), KP_E4M3_WTA_K(l, 0, 0) + 4 * h + q);
        }
        for (int mb = 0; mb < 2; ++mb) {
            double d[64][4];
            for (int l = 0; l < 64; ++l)
                for (int q = 0; q < 4; ++q) d[l][q] = acc[l][4 * mb + q];
            for (int h = 0; h < 2; ++h) {
                double src0[64][4], src1[64][4];
                for (int l = 0; l < 64; ++l)
                    for (int q = 0; q < 4; ++q) {
                        const uint8_t *pa = a + (16 * mb + KP_E4M3_WTA_ROW(l)) * LDA + KP_E4M3_WTA_K(l, h, 0);
                        const uint8_t *pb = bt + KP_E4M3_WTA_ROW(l) * LDA + KP_E4M3_WTA_K(l, h, 0);
                        src0[l][q] = amd_decode(pa, q), src1[l][q] = amd_decode(pb, q);
                    }
                mfma_f16_16x16x16(src0, src1, d);
            }
            for (int l = 0; l < 64; ++l)
                for (int q = 0; q < 4; ++q) acc[l][4 * mb + q] = d[l][q];
        }
        for (int l = 0; l < 64; ++l)
            for (int e = 0; e < 8; ++e) {
                int r = KP_WTA_ROW(l, KP_WTA_SLOT(e)), c = KP_WTA_COL(l, e);
                double want = 0.0;
                for (int k = 0; k < 32; ++k) want += ref_fp8_e4m3(a[r * LDA + k]) * ref_fp8_e4m3(bt[c * LDA + k]);
                CHECK_MSG(acc[l][e] == want, "rep %d lane %d e %d = C[%d][%d]: %.17g, want %.17g", rep, l, e, r, c,
                          acc[l][e], want);
            }
    }
}
