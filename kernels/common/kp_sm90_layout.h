/*
 * kernels/common/kp_sm90_layout.h - the shared-memory layout math of the sm_90a tier
 * (issue 14) in one place: wgmma's matrix descriptors and the 32/64/128-byte swizzles
 * that TMA writes and wgmma reads. The device code and the CPU test
 * (tests/test_sm90_layout.c) include this very file, so the test checks these macros
 * against the PTX ISA's definitions, not a copy of them. Plain preprocessor arithmetic
 * on unsigned long long: valid CUDA C++ and C99; no includes, no types.
 *
 * Matrix descriptor (PTX ISA, "Matrix Descriptor Format" of wgmma.mma_async), 64 bits:
 *     bits  0-13  start address        (shared-window byte address >> 4)
 *     bits 16-29  leading byte offset  (LBO >> 4)
 *     bits 32-45  stride byte offset   (SBO >> 4)
 *     bits 49-51  base offset          (0 here: every tile starts repeat-aligned, below)
 *     bits 62-63  swizzle              (0 none, 1 128-byte, 2 64-byte, 3 32-byte)
 * Addresses and offsets are 16-byte granular and the shared window is 256 KiB, so each
 * field holds (value & 0x3ffff) >> 4.
 *
 * Swizzle: TMA stores a box whose inner extent is the swizzle span S (32, 64 or 128
 * bytes) as rows of S bytes; within each repeat of 8 rows (S * 8 bytes: 256, 512, 1024),
 * the 16-byte chunk c of a byte offset moves to c XOR (bits 7.. of the offset), i.e.
 * byte-offset bits [4, 4+b) are XORed with bits [7, 7+b), b = log2(S / 16). That is
 * CUTLASS's Swizzle<b, 4, 3>. A 16-byte chunk never splits, so ldmatrix/16-byte loads
 * and the hardware agree on what each chunk holds.
 *
 * Canonical K-major tile with swizzle S (the operands of every GEMM and QK^T here): an
 * [R rows, S bytes] panel, row r at r * S (then swizzled); a tile wider than S in K is
 * several such panels, one per S bytes of K, each R * S bytes. Its descriptor: SBO = 8 * S
 * (from one 8-row core-matrix group to the next in M/N), LBO unused by the hardware for
 * swizzled K-major layouts (set to 1, the encoded value CUTLASS uses). Stepping K by 16
 * elements of 2 bytes inside a panel adds 32 bytes to the start address (2 encoded units).
 */
#ifndef KP_SM90_LAYOUT_H
#define KP_SM90_LAYOUT_H

/* Swizzle modes as the descriptor encodes them. */
#define KP_SM90_SWIZZLE_NONE 0
#define KP_SM90_SWIZZLE_128B 1
#define KP_SM90_SWIZZLE_64B 2
#define KP_SM90_SWIZZLE_32B 3

/* Span in bytes of swizzle mode m (16 for none: one chunk per row). */
#define KP_SM90_SWIZZLE_SPAN(m) ((m) == KP_SM90_SWIZZLE_128B ? 128 : (m) == KP_SM90_SWIZZLE_64B ? 64 : (m) == KP_SM90_SWIZZLE_32B ? 32 : 16)
/* Bits XORed: log2(span / 16). */
#define KP_SM90_SWIZZLE_BITS(m) ((m) == KP_SM90_SWIZZLE_128B ? 3 : (m) == KP_SM90_SWIZZLE_64B ? 2 : (m) == KP_SM90_SWIZZLE_32B ? 1 : 0)
/* The pattern repeats every 8 rows: its alignment requirement in bytes. */
#define KP_SM90_SWIZZLE_REPEAT(m) (8 * KP_SM90_SWIZZLE_SPAN(m))

/* Swizzled byte offset of byte offset `off` (relative to a repeat-aligned base). */
#define KP_SM90_SWIZZLE(m, off) \
    ((off) ^ ((((off) >> 7) & ((1u << KP_SM90_SWIZZLE_BITS(m)) - 1u)) << 4))

/* Byte offset in a canonical K-major tile of R rows (a multiple of 8) of the element at
 * row r and byte kb of K (kb < the tile's K bytes): panel kb / S, row r, byte kb % S. */
#define KP_SM90_KMAJOR_OFFSET(m, R, r, kb)                                               \
    ((unsigned)(((kb) / KP_SM90_SWIZZLE_SPAN(m)) * (R) * KP_SM90_SWIZZLE_SPAN(m)) +      \
     KP_SM90_SWIZZLE(m, (unsigned)((r) * KP_SM90_SWIZZLE_SPAN(m) + (kb) % KP_SM90_SWIZZLE_SPAN(m))))

/* One 14-bit descriptor field from a byte value. */
#define KP_SM90_DESC_FIELD(bytes) ((((unsigned long long)(bytes)) & 0x3ffffull) >> 4)
/* The 64-bit wgmma matrix descriptor, base offset 0: a tile's start address must be
 * aligned to its swizzle's repeat (KP_SM90_SWIZZLE_REPEAT), as CUTLASS and DeepGEMM
 * require too; K steps inside a panel (KP_SM90_DESC_ADVANCE) keep that phase. */
#define KP_SM90_DESC(addr, lbo, sbo, m)                                                  \
    (KP_SM90_DESC_FIELD(addr) | (KP_SM90_DESC_FIELD(lbo) << 16) |                         \
     (KP_SM90_DESC_FIELD(sbo) << 32) | ((unsigned long long)(m) << 62))

/* Descriptor of a canonical K-major tile at shared address addr (repeat-aligned). */
#define KP_SM90_DESC_KMAJOR(addr, m) KP_SM90_DESC(addr, 16, 8 * KP_SM90_SWIZZLE_SPAN(m), m)

/* The same descriptor advanced by `bytes` along K inside one panel (bytes < span, a
 * multiple of 16; the address stays inside the 256 KiB window, so no carry leaves
 * bits 0-13). */
#define KP_SM90_DESC_ADVANCE(desc, bytes) ((desc) + (((unsigned long long)(bytes)) >> 4))

#endif /* KP_SM90_LAYOUT_H */
