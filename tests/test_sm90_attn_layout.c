/*
 * tests/test_sm90_attn_layout.c - the sm_90a attention primitives' index math
 * (kernels/common/kp_sm90_attn_layout.h), checked on the CPU against the PTX ISA's
 * definitions, restated here in the ISA's own terms: fragments drawn per warp as 8-row
 * by 8-column "core matrices" in the order the figures number them, and the MN-major
 * shared-memory layout as nested (run, run index, row, row group) strides.
 * What this cannot check: that wgmma on a GPU follows the ISA (ci/gpu-check does).
 */
#include "kp_test.h"

#include "../kernels/common/kp_sm90_attn_layout.h"
#include "sm90_isa_model.h"

/* ISA, wgmma D fragments (f32): per warp a 16-row band; in each 8-column group the lane's
 * four values are, in order, (row g, col 2c), (g, 2c+1), (g+8, 2c), (g+8, 2c+1),
 * g = lane / 4, c = lane % 4; groups follow each other along N. */
static void isa_d(int t, int q, int *row, int *col) {
    int w = t / 32, lane = t % 32, grp = q / 4, v = q % 4;
    *row = 16 * w + lane / 4 + (v >= 2 ? 8 : 0);
    *col = 8 * grp + 2 * (lane % 4) + (v & 1);
}

/* ISA, wgmma A fragments from registers (16-bit, k16): a0..a7 of a lane cover the four
 * 8x8 core matrices of the warp's 16x16 band in the order (top, left), (bottom, left),
 * (top, right), (bottom, right), two consecutive columns each. */
static void isa_a(int t, int e, int *row, int *col) {
    static const int core_row[4] = {0, 8, 0, 8}, core_col[4] = {0, 0, 8, 8};
    int w = t / 32, lane = t % 32, core = e / 2;
    *row = 16 * w + core_row[core] + lane / 4;
    *col = core_col[core] + 2 * (lane % 4) + (e & 1);
}

KP_TEST(sm90_attn_accumulator_layout_matches_isa) {
    for (int n = 64; n <= 256; n *= 2) {
        static unsigned char seen[64 * 256];
        memset(seen, 0, sizeof seen);
        for (int t = 0; t < 128; ++t)
            for (int q = 0; q < n / 2; ++q) {
                int r, c;
                isa_d(t, q, &r, &c);
                CHECK_INT_EQ(KP_SM90_ACC_ROW(t, q), r);
                CHECK_INT_EQ(KP_SM90_ACC_COL(t, q), c);
                CHECK(r < 64 && c < n);
                CHECK_MSG(!seen[r * n + c], "n %d: thread %d register %d repeats (%d, %d)", n, t, q, r, c);
                seen[r * n + c] = 1;
            }
    }
}

KP_TEST(sm90_attn_rs_a_fragment_matches_isa) {
    static unsigned char seen[64 * 16];
    memset(seen, 0, sizeof seen);
    for (int t = 0; t < 128; ++t)
        for (int e = 0; e < 8; ++e) {
            int r, c;
            isa_a(t, e, &r, &c);
            CHECK_INT_EQ(KP_SM90_RS_A_ROW(t, e), r);
            CHECK_INT_EQ(KP_SM90_RS_A_COL(t, e), c);
            CHECK(!seen[r * 16 + c]);
            seen[r * 16 + c] = 1;
        }
    for (int i = 0; i < 64 * 16; ++i) CHECK(seen[i]); /* the 128 threads cover the slice */
}

/* The reuse: for every K step of P V (N of S = kv columns, 128 here and 64 / 256 too),
 * A element e of each thread is the very element of P that accumulator 8 kk + e holds,
 * and the steps use each accumulator register once. */
KP_TEST(sm90_attn_s_accumulator_is_the_p_a_operand) {
    for (int n = 64; n <= 256; n *= 2)
        for (int t = 0; t < 128; ++t) {
            unsigned char used[128] = {0};
            for (int kk = 0; kk < n / 16; ++kk)
                for (int e = 0; e < 8; ++e) {
                    int ar, ac, dr, dc, q = KP_SM90_P_ACC(kk, e);
                    isa_a(t, e, &ar, &ac);
                    isa_d(t, q, &dr, &dc);
                    CHECK_MSG(dr == ar && dc == 16 * kk + ac, "n %d t %d kk %d e %d: acc %d is (%d, %d), A wants (%d, %d)",
                              n, t, kk, e, q, dr, dc, ar, 16 * kk + ac);
                    CHECK(q < n / 2 && !used[q]);
                    used[q] = 1;
                }
            for (int q = 0; q < n / 2; ++q) CHECK(used[q]);
        }
}

/* V [R kv rows, D columns] in MN-major panels: every element has its own byte, the offset
 * is what the canonical MN-major layout with the descriptor's own LBO and SBO gives
 * ((T, S/16, m), (8, k)) : ((1, T, LBO), (S, SBO)) in bytes of 16-bit elements, and the
 * K steps of 16 rows land on repeat-aligned starts. */
KP_TEST(sm90_attn_mnmajor_v_tile_follows_the_descriptor) {
    static const int modes[] = {KP_SM90_SWIZZLE_128B, KP_SM90_SWIZZLE_64B, KP_SM90_SWIZZLE_32B};
    static unsigned char seen[128 * 256 * 2];
    for (size_t i = 0; i < sizeof modes / sizeof *modes; ++i)
        for (unsigned R = 64; R <= 128; R += 64)
            for (unsigned D = 64; D <= 256; D *= 2) {
                int m = modes[i];
                unsigned span = KP_SM90_SWIZZLE_SPAN(m), addr = 5 * 1024;
                unsigned long long desc = KP_SM90_DESC_MNMAJOR(addr, R, m);
                unsigned lbo = isa_field(desc, 16, 14) * 16, sbo = isa_field(desc, 32, 14) * 16;
                CHECK_INT_EQ(isa_field(desc, 0, 14) * 16, addr);
                CHECK_INT_EQ(isa_field(desc, 62, 2), m);
                CHECK_INT_EQ(isa_field(desc, 49, 3), 0);
                CHECK_INT_EQ(lbo, R * span);
                CHECK_INT_EQ(sbo, 8 * span);
                memset(seen, 0, sizeof seen);
                for (unsigned k = 0; k < R; ++k)
                    for (unsigned n = 0; n < D; ++n) {
                        unsigned T = 8, t = n % T, run = (n / T) % (span / 16), mi = n / (span / 2);
                        unsigned canon = 2 * t + 16 * run + mi * lbo + (k % 8) * span + (k / 8) * sbo;
                        unsigned o = KP_SM90_MNMAJOR_OFFSET(m, R, k, n);
                        CHECK_MSG(o == isa_swizzle(m, canon), "mode %d R %u (%u, %u): %u, ISA %u", m, R, k, n, o,
                                  isa_swizzle(m, canon));
                        CHECK(o + 1 < R * D * 2 && !seen[o]);
                        seen[o] = 1;
                    }
                for (unsigned kk = 0; kk < R / 16; ++kk) {
                    unsigned b = KP_SM90_MNMAJOR_STEP_BYTES(m, kk);
                    CHECK_INT_EQ(b, KP_SM90_MNMAJOR_OFFSET(m, R, 16 * kk, 0));
                    CHECK_INT_EQ(b % KP_SM90_SWIZZLE_REPEAT(m), 0);
                    unsigned long long a = KP_SM90_DESC_ADVANCE(desc, b);
                    CHECK_INT_EQ(isa_field(a, 0, 14) * 16, addr + b);
                    CHECK_INT_EQ(a >> 14, desc >> 14);
                }
            }
}
