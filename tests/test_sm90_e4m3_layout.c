/*
 * tests/test_sm90_e4m3_layout.c - the sm_90a tier's e4m3 wgmma index math
 * (kernels/common/kp_sm90_e4m3_layout.h), checked on the CPU against models of the PTX
 * ISA written here in its own terms, independently of the header's arithmetic:
 *   - TMA's 128-byte swizzle (the box row y's 16-byte chunk c stored as chunk c ^ (y % 8));
 *   - wgmma's read through a matrix descriptor: the fields decoded by bit position, the
 *     K-major canonical layout (row r at (r / 8) SBO + (r % 8) 128 bytes from the start
 *     address, 32 bytes of K per e4m3 k32 step), the swizzle applied to the address;
 *   - the wgmma D fragment map (each warp a 16-row band, each 8-column block an
 *     mma.m16n8 accumulator fragment).
 * So: every k32 step's descriptor makes wgmma read exactly the bytes TMA wrote for it,
 * across 128-wide panels, and the accumulator macros name each element of D once.
 * What they cannot check: that the GPU follows the ISA (tests/test_cuda_sm90_e4m3.c).
 */
#include "kp_test.h"

#include "../kernels/common/kp_sm90_e4m3_layout.h"
#include "sm90_isa_model.h"

/* TMA: byte x (< 128) of row y of a {128, rows} box with the 128-byte swizzle, written at
 * dst (1024-aligned): the row's 16-byte chunks are permuted by XOR with y mod 8. */
static unsigned tma_addr(unsigned dst, unsigned y, unsigned x) {
    return dst + y * 128 + (((x / 16) ^ (y % 8)) * 16) + x % 16;
}

/* wgmma: the shared address it reads for row r, byte kb (< 32) of one K-major e4m3 k32
 * step, from the descriptor alone. */
static unsigned wgmma_addr(unsigned long long desc, unsigned r, unsigned kb) {
    unsigned start = isa_field(desc, 0, 14) << 4, sbo = isa_field(desc, 32, 14) << 4;
    CHECK_INT_EQ(isa_field(desc, 62, 2), 1); /* 128-byte swizzle */
    CHECK_INT_EQ(isa_field(desc, 49, 3), 0); /* base offset */
    unsigned lin = start + (r / 8) * sbo + (r % 8) * 128 + kb;
    return lin ^ (((lin >> 7) & 7) << 4);
}

KP_TEST(sm90_e4m3_k32_steps_read_what_tma_wrote) {
    const unsigned rows[] = {64, 128, 256}, base = 3 * 1024;
    for (size_t i = 0; i < sizeof rows / sizeof *rows; ++i)
        for (unsigned panels = 1; panels <= 2; ++panels) {
            const unsigned R = rows[i];
            const unsigned long long d0 = KP_SM90_DESC_KMAJOR(base, KP_SM90_SWIZZLE_128B);
            for (unsigned k = 0; k < panels * 128 / 32; ++k) {
                const unsigned long long d = KP_SM90_E4M3_DESC_STEP(d0, R, k);
                for (unsigned r = 0; r < R; ++r)
                    for (unsigned kb = 0; kb < 32; ++kb) {
                        unsigned col = 32 * k + kb; /* element = byte of K */
                        unsigned want = tma_addr(base + (col / 128) * R * 128, r, col % 128);
                        unsigned got = wgmma_addr(d, r, kb);
                        CHECK_MSG(got == want, "R %u step %u row %u byte %u: wgmma reads %u, TMA wrote it at %u", R,
                                  k, r, kb, got, want);
                    }
            }
        }
}

KP_TEST(sm90_e4m3_step_offsets_and_descriptors) {
    CHECK_INT_EQ(KP_SM90_E4M3_K_STEP, 32);
    CHECK_INT_EQ(KP_SM90_E4M3_PANEL_K, KP_SM90_SWIZZLE_SPAN(KP_SM90_SWIZZLE_128B)); /* 1 byte per element */
    const unsigned rows[] = {8, 64, 128, 256};
    for (size_t i = 0; i < sizeof rows / sizeof *rows; ++i) {
        const unsigned R = rows[i], base = 5 * 1024;
        const unsigned long long d0 = KP_SM90_DESC_KMAJOR(base, KP_SM90_SWIZZLE_128B);
        CHECK_INT_EQ(isa_field(d0, 32, 14) * 16, 1024); /* SBO: 8 rows of 128 bytes */
        for (unsigned k = 0; k < 16; ++k) {
            const unsigned off = KP_SM90_E4M3_STEP_OFFSET(R, k);
            CHECK_INT_EQ(off, (k / 4) * R * 128 + (k % 4) * 32);
            CHECK_INT_EQ(off, KP_SM90_KMAJOR_OFFSET(KP_SM90_SWIZZLE_128B, R, 0, 32 * k)); /* row 0: unswizzled */
            const unsigned long long d = KP_SM90_E4M3_DESC_STEP(d0, R, k);
            CHECK_INT_EQ(isa_field(d, 0, 14), (base + off) >> 4); /* only the start address moves */
            CHECK_INT_EQ(d >> 14, d0 >> 14);
            CHECK_INT_EQ((base + off - (k % 4) * 32) % 1024, 0); /* each panel repeat-aligned */
        }
    }
}

KP_TEST(sm90_e4m3_accumulator_layout_is_the_isa_fragment_map) {
    const int widths[] = {64, 128, 256};
    static unsigned char seen[64 * 256];
    for (size_t i = 0; i < sizeof widths / sizeof *widths; ++i) {
        const int n = widths[i], regs = n / 2;
        memset(seen, 0, sizeof seen);
        for (int t = 0; t < 128; ++t) {
            const int warp = t / 32, lane = t % 32;
            /* the ISA's picture: 8-column block b holds an m16n8 fragment of warp's rows */
            for (int b = 0; b < n / 8; ++b)
                for (int e = 0; e < 4; ++e) {
                    const int q = 4 * b + e;
                    const int row = 16 * warp + lane / 4 + (e >= 2 ? 8 : 0), col = 8 * b + 2 * (lane % 4) + (e & 1);
                    CHECK_INT_EQ(KP_SM90_E4M3_ACC_ROW(t, q), row);
                    CHECK_INT_EQ(KP_SM90_E4M3_ACC_COL(t, q), col);
                }
            for (int q = 0; q < regs; ++q) {
                const int row = KP_SM90_E4M3_ACC_ROW(t, q), col = KP_SM90_E4M3_ACC_COL(t, q);
                CHECK(row >= 0 && row < 64 && col >= 0 && col < n);
                CHECK_MSG(!seen[row * n + col], "n%d: D[%d][%d] held twice (thread %d, register %d)", n, row, col, t,
                          q);
                seen[row * n + col] = 1;
                /* the promotion's two scales per thread: rows r0 and r0 + 8 */
                CHECK_INT_EQ(row, KP_SM90_E4M3_ACC_ROW(t, 0) + ((q % 4) < 2 ? 0 : 8));
            }
        }
        for (int e = 0; e < 64 * n; ++e) CHECK_MSG(seen[e], "n%d: D[%d][%d] held by no thread", n, e / n, e % n);
    }
}
