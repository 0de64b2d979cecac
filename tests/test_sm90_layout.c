/*
 * tests/test_sm90_layout.c - the sm_90a tier's shared-memory layout math
 * (kernels/common/kp_sm90_layout.h), checked on the CPU against the PTX ISA's
 * definitions (issue 14: "tests check the descriptor and swizzle encodings").
 *
 * The models (sm90_isa_model.h) restate the ISA in its own terms - descriptor bit fields by position,
 * swizzles as the figures draw them (16-byte chunks of 128-byte lines permuted by XOR
 * with the line's index in the repeat) - independently of the header's bit arithmetic.
 * What they cannot check: that wgmma and TMA on a GPU follow the ISA (ci/gpu-check does).
 */
#include "kp_test.h"

#include "../kernels/common/kp_sm90_layout.h"
#include "sm90_isa_model.h"

static const int modes[] = {KP_SM90_SWIZZLE_128B, KP_SM90_SWIZZLE_64B, KP_SM90_SWIZZLE_32B};

KP_TEST(sm90_desc_fields_match_isa_bit_positions) {
    /* shared addresses across the 256 KiB window, offsets seen in real tiles */
    const unsigned addrs[] = {0, 1024, 0x8000, 0x3fc00, 227 * 1024 - 1024};
    const unsigned lbos[] = {16, 128, 4096};
    const unsigned sbos[] = {256, 512, 1024, 0x3fff0};
    for (size_t i = 0; i < sizeof addrs / sizeof *addrs; ++i)
        for (size_t j = 0; j < sizeof lbos / sizeof *lbos; ++j)
            for (size_t k = 0; k < sizeof sbos / sizeof *sbos; ++k)
                for (int m = 0; m < 4; ++m) {
                    unsigned long long d = KP_SM90_DESC(addrs[i], lbos[j], sbos[k], m);
                    CHECK_INT_EQ(isa_field(d, 0, 14), addrs[i] >> 4);
                    CHECK_INT_EQ(isa_field(d, 16, 14), lbos[j] >> 4);
                    CHECK_INT_EQ(isa_field(d, 32, 14), sbos[k] >> 4);
                    CHECK_INT_EQ(isa_field(d, 49, 3), 0); /* base offset */
                    CHECK_INT_EQ(isa_field(d, 62, 2), m);
                    /* reserved bits stay clear */
                    CHECK_INT_EQ(isa_field(d, 14, 2), 0);
                    CHECK_INT_EQ(isa_field(d, 30, 2), 0);
                    CHECK_INT_EQ(isa_field(d, 46, 3), 0);
                    CHECK_INT_EQ(isa_field(d, 52, 10), 0);
                }
}

KP_TEST(sm90_desc_kmajor_and_k_advance) {
    for (size_t i = 0; i < sizeof modes / sizeof *modes; ++i) {
        int m = modes[i];
        unsigned span = KP_SM90_SWIZZLE_SPAN(m), addr = 3 * 8 * span; /* repeat-aligned */
        unsigned long long d = KP_SM90_DESC_KMAJOR(addr, m);
        CHECK_INT_EQ(isa_field(d, 32, 14) * 16, 8 * span); /* SBO: next 8-row group */
        CHECK_INT_EQ(isa_field(d, 16, 14), 1);              /* LBO: unused, 1 by convention */
        /* stepping K by 16 bf16 (32 bytes) moves only the address, by 2 units */
        for (unsigned kb = 0; kb < span; kb += 32) {
            unsigned long long a = KP_SM90_DESC_ADVANCE(d, kb);
            CHECK_INT_EQ(isa_field(a, 0, 14), (addr + kb) >> 4);
            CHECK_INT_EQ(a >> 14, d >> 14);
        }
    }
}

KP_TEST(sm90_swizzle_matches_isa_figures) {
    for (size_t i = 0; i < sizeof modes / sizeof *modes; ++i)
        for (unsigned off = 0; off < 4 * 1024; ++off)
            CHECK_MSG(KP_SM90_SWIZZLE(modes[i], off) == isa_swizzle(modes[i], off),
                      "mode %d offset %u: %u, ISA %u", modes[i], off, KP_SM90_SWIZZLE(modes[i], off),
                      isa_swizzle(modes[i], off));
    for (unsigned off = 0; off < 1024; ++off) CHECK_INT_EQ(KP_SM90_SWIZZLE(KP_SM90_SWIZZLE_NONE, off), off);
}

/* Per repeat a bijection that keeps 16-byte chunks whole; and the reason for it: the
 * same logical chunk of the 8 rows of a 128-byte-swizzled repeat (an ldmatrix 8x8
 * fragment) lies in 8 different 16-byte bank groups. */
KP_TEST(sm90_swizzle_is_a_chunk_permutation_without_bank_conflicts) {
    for (size_t i = 0; i < sizeof modes / sizeof *modes; ++i) {
        int m = modes[i];
        unsigned repeat = KP_SM90_SWIZZLE_REPEAT(m);
        unsigned char seen[1024] = {0};
        for (unsigned off = 0; off < repeat; ++off) {
            unsigned s = KP_SM90_SWIZZLE(m, off);
            CHECK(s < repeat);
            CHECK_INT_EQ(s - off % 16, KP_SM90_SWIZZLE(m, off - off % 16)); /* chunk whole */
            CHECK_MSG(!seen[s], "mode %d: offset %u lands on a taken byte %u", m, off, s);
            seen[s] = 1;
        }
    }
    for (unsigned c = 0; c < 8; ++c) {
        unsigned groups = 0;
        for (unsigned r = 0; r < 8; ++r) groups |= 1u << ((KP_SM90_SWIZZLE(KP_SM90_SWIZZLE_128B, r * 128 + c * 16) % 128) / 16);
        CHECK_INT_EQ(groups, 0xff);
    }
}

/* A K-major tile of R rows and K bytes: every element has its own byte, and the element
 * at (r, kb) is where the descriptor's canonical layout puts it: panel kb / span, core
 * matrix group r / 8 at SBO = 8 * span, row r % 8, byte kb % span, swizzled. */
KP_TEST(sm90_kmajor_tile_offsets_follow_the_descriptor) {
    for (size_t i = 0; i < sizeof modes / sizeof *modes; ++i) {
        int m = modes[i];
        const unsigned R = 64, span = KP_SM90_SWIZZLE_SPAN(m), kbytes = 2 * span;
        static unsigned char seen[64 * 256];
        memset(seen, 0, sizeof seen);
        for (unsigned r = 0; r < R; ++r)
            for (unsigned kb = 0; kb < kbytes; ++kb) {
                unsigned o = KP_SM90_KMAJOR_OFFSET(m, R, r, kb);
                unsigned panel = kb / span, sbo = 8 * span;
                unsigned want = panel * R * span + isa_swizzle(m, (r / 8) * sbo + (r % 8) * span + kb % span);
                CHECK_INT_EQ(o, want);
                CHECK(o < R * kbytes);
                CHECK(!seen[o]);
                seen[o] = 1;
            }
    }
}
