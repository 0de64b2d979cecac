/*
 * kernels/common/kp_sm90_attn_layout.h - the index math of the sm_90a tier's attention
 * primitives (common/kp_tile_sm90_attn.h, issue 14): how the f32 accumulator of one wgmma
 * (S = Q K^T) becomes, after conversion to 16 bits in registers, the A operand of the next
 * (O += P V, the "RS" form: A from registers, B from shared memory), and where V lies in
 * shared memory when it keeps its natural [kv, d] layout (B "MN-major", the transpose bit).
 * Plain preprocessor arithmetic on top of kp_sm90_layout.h, valid CUDA C++ and C99: the
 * device code and the CPU test (tests/test_sm90_attn_layout.c) include this very file.
 *
 * 1. Accumulator D of m64nNk16, f32 (PTX ISA, "Matrix fragments for wgmma.mma_async",
 *    D fragments): thread t of the warpgroup (warp w = t / 32, lane l = t % 32) holds
 *    N / 2 floats; register q is the element
 *        row 16 w + l / 4 + 8 ((q / 2) % 2),  column 8 (q / 4) + 2 (l % 4) + q % 2.
 * 2. A from registers, m64nNk16 with 16-bit A (same section, A fragments of the RS form):
 *    four .b32 registers a thread, each two 16-bit elements, the lower half the lower
 *    element index; element e (0..7, register e / 2, half e % 2) of thread t is
 *        row 16 w + l / 4 + 8 ((e / 2) % 2),  column 2 (l % 4) + e % 2 + 8 (e / 4)
 *    of the 64 x 16 A slice (the mma.sync m16n8k16 A layout, one 16-row band per warp).
 * 3. Reuse (FlashAttention-3's register-resident P): for K step kk of P V (P columns
 *    16 kk .. 16 kk + 15) A element e is exactly accumulator register 8 kk + e of S, for
 *    every thread: the two 8-column groups 2 kk and 2 kk + 1 of D hold columns
 *    2 (l % 4) + {0, 1} and 8 + 2 (l % 4) + {0, 1} on rows l / 4 and l / 4 + 8, in the same
 *    order as a0..a7. So P's A register r of step kk packs accumulators 8 kk + 2 r (low
 *    half) and 8 kk + 2 r + 1 (high half); no shuffle and no shared memory.
 * 4. B MN-major (PTX ISA, matrix descriptor and "Shared memory matrix layout", the
 *    canonical MN-major layouts; CUTLASS writes the 128-byte one
 *    Swizzle<3,4,3> o ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)), T = 8 16-bit elements):
 *    along N, runs of S bytes (the swizzle span) are contiguous, run m at m * LBO; along K,
 *    row k % 8 of a group at (k % 8) * S, group k / 8 at (k / 8) * SBO; then swizzled.
 *    V [kv rows, d] loaded by TMA in boxes of {S / 2 columns of d, R rows of kv} is that
 *    layout with SBO = 8 S and LBO = R S (the next box of d columns): panel n / (S / 2),
 *    row k, byte 2 n % S. The wgmma takes it with imm-trans-b = 1 (16-bit types only).
 *    K step kk (16 rows of kv) starts 16 S kk bytes into the tile: two whole 8-row groups,
 *    so every step stays repeat-aligned (base offset 0).
 */
#ifndef KP_SM90_ATTN_LAYOUT_H
#define KP_SM90_ATTN_LAYOUT_H

#include "kp_sm90_layout.h"

/* Accumulator register q of thread t (0..127): its row and column of D [64 x N]. */
#define KP_SM90_ACC_ROW(t, q) (16 * ((t) / 32) + ((t) % 32) / 4 + 8 * (((q) / 2) % 2))
#define KP_SM90_ACC_COL(t, q) (8 * ((q) / 4) + 2 * ((t) % 4) + (q) % 2)

/* A element e (0..7: register e / 2, half e % 2) of thread t: row and column of the 64 x 16
 * slice one RS wgmma consumes. */
#define KP_SM90_RS_A_ROW(t, e) (16 * ((t) / 32) + ((t) % 32) / 4 + 8 * (((e) / 2) % 2))
#define KP_SM90_RS_A_COL(t, e) (2 * ((t) % 4) + (e) % 2 + 8 * ((e) / 4))

/* The accumulator register of S that becomes A element e of K step kk of P V. */
#define KP_SM90_P_ACC(kk, e) (8 * (kk) + (e))

/* Byte offset, in an MN-major 16-bit tile of R rows of K (R a multiple of 8) loaded as
 * panels of span S bytes of N, of element (k, n). */
#define KP_SM90_MNMAJOR_OFFSET(m, R, k, n)                                                         \
    ((unsigned)((2u * (unsigned)(n)) / KP_SM90_SWIZZLE_SPAN(m)) * (unsigned)(R) * KP_SM90_SWIZZLE_SPAN(m) + \
     KP_SM90_SWIZZLE(m, (unsigned)((k) * KP_SM90_SWIZZLE_SPAN(m) + (2u * (unsigned)(n)) % KP_SM90_SWIZZLE_SPAN(m))))

/* Its descriptor (start repeat-aligned): LBO = R S (next panel along N), SBO = 8 S (next
 * 8 rows of K). */
#define KP_SM90_DESC_MNMAJOR(addr, R, m) \
    KP_SM90_DESC(addr, (unsigned)(R) * KP_SM90_SWIZZLE_SPAN(m), 8 * KP_SM90_SWIZZLE_SPAN(m), m)

/* Bytes from the tile's start to K step kk (16 rows of K) of an MN-major tile. */
#define KP_SM90_MNMAJOR_STEP_BYTES(m, kk) ((unsigned)(kk) * 16u * KP_SM90_SWIZZLE_SPAN(m))

#endif /* KP_SM90_ATTN_LAYOUT_H */
