/*
 * tests/test_tile_mma_layout.c - the AMD tile-MMA mapping, checked on the CPU.
 *
 * No AMD GPU exists in this workplace, so kernels/common/kp_tile_mma.h's MFMA path is
 * checked here against a plain-C model of the instruction it issues,
 * v_mfma_f32_4x4x4_16b_{bf16,f16}, in a 64-lane wave. The model states AMD's documented
 * lane layout (the matrix instruction calculator's gfx9 rules) independently of the
 * header; the mapping itself - which row and column each lane loads, which accumulator
 * feeds and receives which MFMA register - comes from kernels/common/kp_mma_amd_map.h,
 * the same macros the device code uses. The tests check that the mapping yields
 * D += A * B in the PTX accumulator layout of kp_tile_mma.h's contract for both 32-lane
 * groups of the wave, and that one group's result never depends on the other group's
 * lanes. What they cannot check: that the hardware really follows the documented layout,
 * and the compiler's code for the builtins (that needs an AMD GPU).
 */
#include "kp_test.h"

#include "../kernels/common/kp_mma_amd_map.h"

#include <math.h>

#define WAVE 64
#define GROUP 32

/* ---- the hardware model ---------------------------------------------------- */

/* v_mfma_f32_4x4x4_16b: 16 blocks b; A_b[i][k] is element k of src0 in lane 4b + i,
 * B_b[k][j] element k of src1 in lane 4b + j, C_b / D_b[i][j] register i of src2 / vdst
 * in lane 4b + j (calculator: input lane = b*M + (k/K)*M*B + i with M = K = 4, B = 16;
 * output lane = (b % 16)*N + j, register i). Every lane takes part. */
static void mfma_4x4x4_16b(float src0[WAVE][4], float src1[WAVE][4], float src2[WAVE][4], float vdst[WAVE][4]) {
    float out[WAVE][4];
    for (int b = 0; b < 16; ++b)
        for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j) {
                float s = src2[4 * b + j][i];
                for (int k = 0; k < 4; ++k) s += src0[4 * b + i][k] * src1[4 * b + j][k];
                out[4 * b + j][i] = s;
            }
    memcpy(vdst, out, sizeof out);
}

/* ---- the mapping, as kp_tile_mma.h runs it (per lane, from the shared macros) ---- */

static float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint16_t f32_to_bf16_exact(float f) { /* small integers only: exact */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)(u >> 16);
}

#define BF16_NAN ((uint16_t)0x7fc0)

/* One group's operands in "local memory": A [16][lda], Bt [8][ldb], padding NaN. */
typedef struct group_tiles {
    int lda, ldb;
    uint16_t a[16 * 40], bt[8 * 40];
    float aval[16][16], btval[8][16]; /* the same values, for the reference */
} group_tiles;

/* The per-lane fragments of the MFMA path (kp_mma_a / kp_mma_b, converted to float). */
typedef struct lane_frags {
    float a[KP_AMD4_STEPS][4];
    float b[KP_AMD4_SETS][KP_AMD4_STEPS][4];
} lane_frags;

static uint32_t rng_state;
static int rnd_int(int lo, int hi) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return lo + (int)((rng_state >> 8) % (uint32_t)(hi - lo + 1));
}

static void fill_tiles(group_tiles *t, int lda, int ldb) {
    t->lda = lda, t->ldb = ldb;
    for (int i = 0; i < 16 * 40; ++i) t->a[i] = BF16_NAN;
    for (int i = 0; i < 8 * 40; ++i) t->bt[i] = BF16_NAN;
    for (int r = 0; r < 16; ++r)
        for (int k = 0; k < 16; ++k) {
            t->aval[r][k] = (float)rnd_int(-8, 8);
            t->a[r * lda + k] = f32_to_bf16_exact(t->aval[r][k]);
        }
    for (int n = 0; n < 8; ++n)
        for (int k = 0; k < 16; ++k) {
            t->btval[n][k] = (float)rnd_int(-8, 8);
            t->bt[n * ldb + k] = f32_to_bf16_exact(t->btval[n][k]);
        }
}

/* kp_mma_load_a + kp_mma_load_b of group lane p. */
static void load_frags(lane_frags *f, const group_tiles *t, int p) {
    for (int s = 0; s < KP_AMD4_STEPS; ++s)
        for (int e = 0; e < 4; ++e) {
            f->a[s][e] = bf16_to_f32(t->a[KP_AMD4_A_OFF(p, s, e, t->lda)]);
            for (int c = 0; c < KP_AMD4_SETS; ++c) f->b[c][s][e] = bf16_to_f32(t->bt[KP_AMD4_B_OFF(p, c, s, e, t->ldb)]);
        }
}

/* kp_mma_16x8x16_*: the whole wave, acc[lane].x[4] in the PTX layout. */
static void wave_mma(float acc[WAVE][4], lane_frags frag[WAVE]) {
    for (int c = 0; c < KP_AMD4_SETS; ++c) {
        float src0[WAVE][4], src1[WAVE][4], d[WAVE][4];
        for (int l = 0; l < WAVE; ++l)
            for (int i = 0; i < 4; ++i) d[l][i] = acc[l][KP_AMD4_ACC(i, c)];
        for (int s = 0; s < KP_AMD4_STEPS; ++s) {
            for (int l = 0; l < WAVE; ++l)
                for (int e = 0; e < 4; ++e) {
                    src0[l][e] = frag[l].a[s][e];
                    src1[l][e] = frag[l].b[c][s][e];
                }
            mfma_4x4x4_16b(src0, src1, d, d);
        }
        for (int l = 0; l < WAVE; ++l) {
            acc[l][KP_AMD4_ACC(0, c)] = d[l][0];
            acc[l][KP_AMD4_ACC(1, c)] = d[l][1];
        }
    }
}

/* D = A * Bt^T of one group, element (r, n). */
static float ref_d(const group_tiles *t, int r, int n) {
    float s = 0.0f;
    for (int k = 0; k < 16; ++k) s += t->aval[r][k] * t->btval[n][k];
    return s;
}

/* kp_tile_mma.h's contract: lane 4g + t holds D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]. */
static void ptx_coords(int p, int x, int *r, int *n) {
    int g = p / 4, t = p % 4;
    *r = g + 8 * (x / 2);
    *n = 2 * t + (x % 2);
}

/* ---- tests ------------------------------------------------------------------ */

/* The device loads are one aligned 32-byte copy per operand row: that needs these. */
KP_TEST(tile_mma_amd_map_offsets_contiguous_aligned) {
    for (int ld = 16; ld <= 64; ld += 8)
        for (int p = 0; p < GROUP; ++p) {
            CHECK(KP_AMD4_A_ROW(p) >= 0 && KP_AMD4_A_ROW(p) < 16);
            CHECK_INT_EQ(KP_AMD4_A_OFF(p, 0, 0, ld) % 8, 0); /* 16 bytes */
            for (int c = 0; c < KP_AMD4_SETS; ++c) {
                CHECK(KP_AMD4_B_COL(p, c) >= 0 && KP_AMD4_B_COL(p, c) < 8);
                CHECK_INT_EQ(KP_AMD4_B_OFF(p, c, 0, 0, ld) % 8, 0);
            }
            for (int s = 0; s < KP_AMD4_STEPS; ++s)
                for (int e = 0; e < 4; ++e) {
                    CHECK_INT_EQ(KP_AMD4_A_OFF(p, s, e, ld), KP_AMD4_A_OFF(p, 0, 0, ld) + 4 * s + e);
                    for (int c = 0; c < KP_AMD4_SETS; ++c)
                        CHECK_INT_EQ(KP_AMD4_B_OFF(p, c, s, e, ld), KP_AMD4_B_OFF(p, c, 0, 0, ld) + 4 * s + e);
                }
        }
    /* the accumulator index map: registers 0, 1 of each set land on four distinct x[] */
    int seen[4] = {0, 0, 0, 0};
    for (int c = 0; c < KP_AMD4_SETS; ++c)
        for (int i = 0; i < 2; ++i) seen[KP_AMD4_ACC(i, c)]++;
    for (int x = 0; x < 4; ++x) CHECK_INT_EQ(seen[x], 1);
}

/* Both groups of the wave, random operands and accumulators, two accumulating calls
 * with different lda/ldb per group: the PTX layout holds exactly (small integers). */
KP_TEST(tile_mma_amd_mfma4_matches_ptx_layout) {
    static group_tiles t[2][2]; /* [call][group] */
    static lane_frags frag[WAVE];
    float acc[WAVE][4], init[WAVE][4];
    for (int seed = 1; seed <= 20; ++seed) {
        rng_state = (uint32_t)seed * 2654435761u;
        for (int call = 0; call < 2; ++call)
            for (int G = 0; G < 2; ++G) fill_tiles(&t[call][G], 16 + 8 * rnd_int(0, 3), 16 + 8 * rnd_int(0, 3));
        for (int l = 0; l < WAVE; ++l)
            for (int x = 0; x < 4; ++x) acc[l][x] = init[l][x] = (float)rnd_int(-100, 100);
        for (int call = 0; call < 2; ++call) {
            for (int l = 0; l < WAVE; ++l) load_frags(&frag[l], &t[call][l / GROUP], l % GROUP);
            wave_mma(acc, frag);
        }
        for (int l = 0; l < WAVE; ++l)
            for (int x = 0; x < 4; ++x) {
                int G = l / GROUP, r, n;
                ptx_coords(l % GROUP, x, &r, &n);
                float want = init[l][x] + ref_d(&t[0][G], r, n) + ref_d(&t[1][G], r, n);
                CHECK_MSG(acc[l][x] == want, "seed %d lane %d (group %d) x[%d] = D[%d][%d]: %g, want %g", seed, l,
                          G, x, r, n, (double)acc[l][x], (double)want);
            }
    }
}

/* A group computes in its own lanes only: garbage (NaN) in the other half of the wave -
 * operands and accumulators, as a half-used wave leaves it - changes nothing. */
KP_TEST(tile_mma_amd_mfma4_groups_independent) {
    static group_tiles t;
    static lane_frags frag[WAVE];
    float acc[WAVE][4];
    for (int live = 0; live < 2; ++live) {
        rng_state = 12345u + (uint32_t)live;
        fill_tiles(&t, 24, 40);
        for (int l = 0; l < WAVE; ++l) {
            if (l / GROUP == live) {
                load_frags(&frag[l], &t, l % GROUP);
                for (int x = 0; x < 4; ++x) acc[l][x] = 0.0f;
            } else {
                for (int s = 0; s < KP_AMD4_STEPS; ++s)
                    for (int e = 0; e < 4; ++e) {
                        frag[l].a[s][e] = NAN;
                        for (int c = 0; c < KP_AMD4_SETS; ++c) frag[l].b[c][s][e] = NAN;
                    }
                for (int x = 0; x < 4; ++x) acc[l][x] = NAN;
            }
        }
        wave_mma(acc, frag);
        for (int p = 0; p < GROUP; ++p)
            for (int x = 0; x < 4; ++x) {
                int l = live * GROUP + p, r, n;
                ptx_coords(p, x, &r, &n);
                CHECK_MSG(acc[l][x] == ref_d(&t, r, n), "live group %d lane %d x[%d]: %g, want %g", live, l, x,
                          (double)acc[l][x], (double)ref_d(&t, r, n));
            }
    }
}
