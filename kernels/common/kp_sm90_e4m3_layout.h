/*
 * kernels/common/kp_sm90_e4m3_layout.h - the index math of the sm_90a tier's e4m3 wgmma
 * (common/kp_tile_sm90_e4m3.h, issue 14): where each k32 step of a K-major e4m3 tile
 * starts, and which accumulator element each thread holds. Plain preprocessor arithmetic
 * on top of kp_sm90_layout.h (descriptors and swizzles), valid CUDA C++ and C99: the
 * device code and the CPU test (tests/test_sm90_e4m3_layout.c) include this very file.
 *
 * Operands (PTX ISA, wgmma.mma_async with .e4m3/.e5m2): A and B come from shared memory
 * through matrix descriptors and must both be K-major (8-bit types take no transpose
 * immediates); one instruction consumes K = 32 elements = 32 bytes of every row.
 * With the 128-byte swizzle a row of a panel is 128 bytes = 128 e4m3, so a 128-wide K
 * slice (the block-scale granule of DeepGEMM-style FP8) is exactly one panel: an
 * [R x 128] e4m3 tile is one TMA box of {128, R} bytes (inner extent 128 = the swizzle
 * span), R * 128 bytes, with the same descriptor as a bf16 tile of [R x 64]:
 * SBO = 1024 (8 rows of 128 bytes), LBO unused (1), swizzle 128B, start repeat-aligned.
 * K step k (32 elements) of such a panel starts 32 k bytes after the panel's start: the
 * same 32 bytes (2 encoded units) per step as bf16's k16. A tile wider than one panel in
 * K (several 128-wide slices side by side) puts panel p at p * R * 128 bytes (the layout
 * KP_SM90_KMAJOR_OFFSET describes); KP_SM90_E4M3_STEP_OFFSET steps across them.
 *
 * Accumulators (PTX ISA, "wgmma D matrix fragments", f32 accumulators): the same for
 * every input type, so the e4m3 shapes hold D exactly as bf16's m64nNk16 does. The
 * 128 threads of the warpgroup hold 64 x N / 128 = N / 2 floats each; thread t (warp
 * w = t / 32, lane l = t % 32) holds in register q (0 .. N/2 - 1) the element
 *     row 16 w + l / 4 + 8 ((q / 2) % 2),  column 8 (q / 4) + 2 (l % 4) + q % 2.
 * Registers q with (q % 4) < 2 lie on row 16 w + l / 4, the others 8 rows below, which
 * is why a per-row scale (DeepGEMM's a-scale) needs two values per thread.
 */
#ifndef KP_SM90_E4M3_LAYOUT_H
#define KP_SM90_E4M3_LAYOUT_H

#include "kp_sm90_layout.h"

/* Elements (= bytes) of K one e4m3 wgmma consumes. */
#define KP_SM90_E4M3_K_STEP 32
/* Elements of K in one 128-byte-swizzled panel: one block-scale slice. */
#define KP_SM90_E4M3_PANEL_K 128

/* Byte offset from a K-major e4m3 tile's start (128-byte swizzle, R rows, R a multiple
 * of 8, panels of 128 K side by side) to the start of k32 step k: panel 32 k / 128 at
 * R * 128 bytes each, then 32 bytes per step inside it. Row 0 of a panel is never
 * swizzled, so this is also KP_SM90_KMAJOR_OFFSET(128B, R, 0, 32 k). */
#define KP_SM90_E4M3_STEP_OFFSET(R, k)                                                                     \
    ((unsigned)(((k) * KP_SM90_E4M3_K_STEP) / KP_SM90_E4M3_PANEL_K) * (unsigned)(R) * KP_SM90_E4M3_PANEL_K + \
     (unsigned)(((k) * KP_SM90_E4M3_K_STEP) % KP_SM90_E4M3_PANEL_K))

/* The descriptor of k32 step k of a tile whose step-0 descriptor is desc
 * (KP_SM90_DESC_KMAJOR(start, KP_SM90_SWIZZLE_128B)). Every panel start is 1024-byte
 * aligned (R * 128 with R a multiple of 8), so only the start address moves. */
#define KP_SM90_E4M3_DESC_STEP(desc, R, k) KP_SM90_DESC_ADVANCE(desc, KP_SM90_E4M3_STEP_OFFSET(R, k))

/* Accumulator register q of thread t (0..127): its row and column of D [64 x N]. */
#define KP_SM90_E4M3_ACC_ROW(t, q) (16 * ((t) / 32) + ((t) % 32) / 4 + 8 * (((q) / 2) % 2))
#define KP_SM90_E4M3_ACC_COL(t, q) (8 * ((q) / 4) + 2 * ((t) % 4) + (q) % 2)

#endif /* KP_SM90_E4M3_LAYOUT_H */
