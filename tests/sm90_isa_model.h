/*
 * tests/sm90_isa_model.h - the PTX ISA's sm_90a shared-memory definitions restated in the
 * ISA's own terms, for the layout tests (test_sm90_layout.c, test_sm90_attn_layout.c,
 * test_sm90_e4m3_layout.c): a matrix descriptor's fields by bit position, and the
 * swizzles as the figures draw them. Independent of the bit arithmetic of the headers
 * under test (kernels/common/kp_sm90_*layout.h); they name the modes and spans alone.
 */
#ifndef KPORT_TESTS_SM90_ISA_MODEL_H
#define KPORT_TESTS_SM90_ISA_MODEL_H

#include "../kernels/common/kp_sm90_layout.h"

/* Bits [lo, lo + bits) of a descriptor. */
static inline unsigned isa_field(unsigned long long d, int lo, int bits) {
    return (unsigned)((d >> lo) & ((1ull << bits) - 1));
}

/* The ISA's figures: a repeat is 8 rows of `span` bytes, i.e. 8 * span / 128 lines of
 * 128 bytes (8, 4 or 2); within line L of the repeat, 16-byte chunk q (0..7) is stored as
 * chunk q XOR L. With 128-byte rows each row is a line. */
static inline unsigned isa_swizzle(int mode, unsigned off) {
    unsigned span = KP_SM90_SWIZZLE_SPAN(mode), repeat = 8 * span;
    unsigned base = off - off % repeat, in = off % repeat;
    unsigned line = in / 128, chunk = (in % 128) / 16, byte = in % 16;
    return base + line * 128 + ((chunk ^ line) * 16) + byte;
}

#endif /* KPORT_TESTS_SM90_ISA_MODEL_H */
