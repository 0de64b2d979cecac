/*
 * kernels/moe/moe_kargs.h - the by-value parameter blocks of the MoE kernels (see
 * kp_kargs.h for the layout rule), shared by backends/gpu/ops (which fills them) and
 * the kernels. Offsets and row strides ("ld") are in elements of the buffer's type; the
 * buffers themselves are separate arguments.
 */
#ifndef KP_MOE_KARGS_H
#define KP_MOE_KARGS_H

#include "kp_kargs.h"

/* kp_quantize_fp8 (quantize_fp8.cl); buffers: x, out, scale. The scale of (token t,
 * group g) is scale[s_off + t * s_t + g * s_g]: row-major (s_t = K/128, s_g = 1) or
 * column-major (s_t = 1, s_g = T_pad). */
typedef struct kp_quant_fp8_kargs {
    kp_karg_i64 x_off, x_ld, out_off, out_ld;
    kp_karg_i64 s_off, s_t, s_g;
    kp_karg_i32 ue8m0, pad0;
} kp_quant_fp8_kargs;
KP_KARGS_OFFSET(kp_quant_fp8_kargs, ue8m0, 56);
KP_KARGS_OFFSET(kp_quant_fp8_kargs, pad0, 60);
KP_KARGS_SIZE(kp_quant_fp8_kargs, 64);

/* kp_moe_gate (moe_gate.cl); buffers: logits, bias, ids, weights. */
typedef struct kp_moe_gate_kargs {
    kp_karg_i64 logits_off, logits_ld;
    kp_karg_i64 bias_off;
    kp_karg_i64 ids_off, ids_ld;
    kp_karg_i64 w_off, w_ld;
    kp_karg_i32 has_bias, n_exp, topk, n_group, topk_group, use_sigmoid, renormalize;
    float route_scale;
} kp_moe_gate_kargs;
KP_KARGS_OFFSET(kp_moe_gate_kargs, has_bias, 56);
KP_KARGS_OFFSET(kp_moe_gate_kargs, route_scale, 84);
KP_KARGS_SIZE(kp_moe_gate_kargs, 88);

/* kp_moe_align_hist, _scan, _scatter (moe_align.cl), one block for the three;
 * buffers: ids, sorted_ids (hist's per-chunk counts live there first), token_pos,
 * expert_offsets. */
typedef struct kp_moe_align_kargs {
    kp_karg_i64 ids_off, sorted_off, pos_off, offsets_off;
    kp_karg_i32 pairs, n_exp;
    kp_karg_i32 chunk, nchunks; /* pairs per work-group of hist and scatter */
    kp_karg_i32 sorted_len;
    kp_karg_i32 block;          /* rows of an expert padded to a multiple of it */
} kp_moe_align_kargs;
KP_KARGS_OFFSET(kp_moe_align_kargs, pairs, 32);
KP_KARGS_OFFSET(kp_moe_align_kargs, block, 52);
KP_KARGS_SIZE(kp_moe_align_kargs, 56);

/* kp_moe_combine (moe_combine.cl); buffers: y, token_pos, topk_weights, out. */
typedef struct kp_moe_combine_kargs {
    kp_karg_i64 y_off, y_ld, pos_off, pos_ld, tw_off, tw_ld, out_off, out_ld;
    kp_karg_i32 y_rows, topk, hidden;
    kp_karg_i32 pad0;
} kp_moe_combine_kargs;
KP_KARGS_OFFSET(kp_moe_combine_kargs, y_rows, 64);
KP_KARGS_OFFSET(kp_moe_combine_kargs, pad0, 76);
KP_KARGS_SIZE(kp_moe_combine_kargs, 80);

/* The grouped GEMM's epilogues (mode). */
#define KP_MOE_GEMM_STORE 0     /* out (dtype) = a . w^T */
#define KP_MOE_GEMM_STORE_F32 1 /* outf (f32) = a . w^T */
#define KP_MOE_GEMM_SWIGLU 2    /* out (dtype)[r, j] = silu(gate) * up: weight rows j and n_out + j */
#define KP_MOE_GEMM_COMBINE 3   /* out[t, n] = sum_s tw[t, s] * y (dtype)[pos[t, s], n] + (a . w^T)[t, n] */
#define KP_MOE_GEMM_SWIGLU_FP8 4 /* W8A8 only (moe_gemm_fp8_gen2.cl, G8_BN % 256 == 0): h = silu(gate) * up as
                                  * SWIGLU, in f32, quantized per 1 x 128 group as kp_quantize_fp8 does: e4m3
                                  * bytes to out [r, j], the group's f32 scale to outf[os_off + r * os_t + j / 128] */

/* Every grouped-GEMM kernel of both generations (moe_gemm.cl, moe_gemm_gen2.cl);
 * buffers: a, gather, w, w_scale, offsets, out, outf (the same buffer as out: the mode
 * picks the type), y, pos, tw, and the split-K partials (gen2; unused by gen1). */
typedef struct kp_moe_gemm_kargs {
    kp_karg_i64 a_off, a_ld;
    kp_karg_i64 gather_off;
    kp_karg_i64 w_off, w_se, w_sn;   /* w [E, N, K]: expert and row strides */
    kp_karg_i64 ws_off;              /* FP8 block scales [E, ws_nb, ws_kb] */
    kp_karg_i64 offsets_off;
    kp_karg_i64 out_off, out_ld;
    kp_karg_i64 y_off, y_ld, pos_off, tw_off;
    kp_karg_i32 a_rows;
    kp_karg_i32 gather_k;            /* > 0: row r reads a row gather[r] / gather_k */
    kp_karg_i32 ws_nb, ws_kb;
    kp_karg_i32 n_exp;
    kp_karg_i32 dense_rows;          /* > 0: one expert, rows [0, dense_rows) */
    kp_karg_i32 m, n, k;
    kp_karg_i32 mode;                /* KP_MOE_GEMM_* */
    kp_karg_i32 n_out;               /* SwiGLU: columns of outf */
    kp_karg_i32 small_max;           /* experts with at most this many rows go to the decode kernel */
    kp_karg_i32 y_rows, topk;
    kp_karg_i32 ksplit;              /* gen2 decode: K is cut in ksplit slices of kslice (1: none) */
    kp_karg_i32 kslice;
    /* W8A8 (moe_gemm_fp8_gen2.cl): the activation scale of (source row r, K slice kb) is
     * a_scale[as_off + r * as_t + kb * as_g]: row-major (as_t = K/128 or the row stride,
     * as_g = 1) or column-major (as_t = 1, as_g = M_pad). Unused elsewhere. */
    kp_karg_i64 as_off, as_t, as_g;
    /* SWIGLU_FP8: the scale of (row r, 128-column group g) goes to outf[os_off + r * os_t + g];
     * ue8m0: power-of-two scales (kp_quantize_fp8's rule). Unused elsewhere. */
    kp_karg_i64 os_off, os_t;
    kp_karg_i32 ue8m0;
    kp_karg_i32 mask_m;              /* > 0: the masked layout (kp_expert_rows): offsets holds masked_m [E] */
} kp_moe_gemm_kargs;
KP_KARGS_OFFSET(kp_moe_gemm_kargs, a_rows, 112);
KP_KARGS_OFFSET(kp_moe_gemm_kargs, kslice, 172);
KP_KARGS_OFFSET(kp_moe_gemm_kargs, as_off, 176);
KP_KARGS_OFFSET(kp_moe_gemm_kargs, os_off, 200);
KP_KARGS_OFFSET(kp_moe_gemm_kargs, ue8m0, 216);
KP_KARGS_OFFSET(kp_moe_gemm_kargs, mask_m, 220);
KP_KARGS_SIZE(kp_moe_gemm_kargs, 224);

/* Dynamic local memory of generation 2's kernels (moe_gemm_gen2.cl), one formula for the
 * kernels and the planner. Tiled: `stages` A and B tiles of 16-bit rows padded by 8
 * elements (16 bytes: ldmatrix rows on distinct banks, cp.async targets aligned), the
 * f32 C tile reusing them after the K loop, then the row and scale indices. */
#define KP_MOE_GEMM2_LD(bk) ((bk) + 8)
#define KP_MOE_GEMM2_STAGE_BYTES(bm, bn, bk) (((bm) + (bn)) * KP_MOE_GEMM2_LD(bk) * 2)
#define KP_MOE_GEMM2_C_BYTES(bm, bn) ((bm) * ((bn) + 4) * 4)
#define KP_MOE_GEMM2_TILES_BYTES(bm, bn, bk, stages)                                        \
    ((stages) * KP_MOE_GEMM2_STAGE_BYTES(bm, bn, bk) > KP_MOE_GEMM2_C_BYTES(bm, bn)          \
         ? (stages) * KP_MOE_GEMM2_STAGE_BYTES(bm, bn, bk)                                   \
         : KP_MOE_GEMM2_C_BYTES(bm, bn))
#define KP_MOE_GEMM2_LOCAL_BYTES(bm, bn, bk, stages) \
    (KP_MOE_GEMM2_TILES_BYTES(bm, bn, bk, stages) + (bm) * 8 + (bn) * 8 + (bn) * 4)
/* Decode ("rows") kernel: up to 16 activation rows of KC k as f32, the per-lane partial
 * sums of one weight row at a time for the cross-lane reduction, the C tile [16][cols + 1]. */
#define KP_MOE_GEMM2_ROWS_M 16
#define KP_MOE_GEMM2_ROWS_KC 256
#define KP_MOE_GEMM2_ROWS_LOCAL_BYTES(threads, cols)                                        \
    (KP_MOE_GEMM2_ROWS_M * KP_MOE_GEMM2_ROWS_KC * 4 + (threads) * KP_MOE_GEMM2_ROWS_M * 4 + \
     KP_MOE_GEMM2_ROWS_M * ((cols) + 1) * 4 + KP_MOE_GEMM2_ROWS_M * 8)

/* W8A8 tiles (moe_gemm_fp8_gen2.cl): K tiles of 128 e4m3 bytes, one scale slice each.
 * A stage: A and B rows of 128 bytes padded by 16 (ldmatrix rows on distinct banks),
 * then the tile's activation and weight scales of that slice (f32); after the K loop
 * the f32 C tile reuses the stages; then the row indices (A rows, their scale rows,
 * weight rows: 8 bytes each; weight scale rows: 4). bm + bn must be a multiple of 4
 * (16-byte aligned stages). */
#define KP_MOE_GEMM8_BK 128
#define KP_MOE_GEMM8_LD (KP_MOE_GEMM8_BK + 16)
#define KP_MOE_GEMM8_STAGE_BYTES(bm, bn) (((bm) + (bn)) * (KP_MOE_GEMM8_LD + 4))
#define KP_MOE_GEMM8_TILES_BYTES(bm, bn, stages)                                            \
    ((stages) * KP_MOE_GEMM8_STAGE_BYTES(bm, bn) > KP_MOE_GEMM2_C_BYTES(bm, bn)              \
         ? (stages) * KP_MOE_GEMM8_STAGE_BYTES(bm, bn)                                       \
         : KP_MOE_GEMM2_C_BYTES(bm, bn))
#define KP_MOE_GEMM8_LOCAL_BYTES(bm, bn, stages) \
    (KP_MOE_GEMM8_TILES_BYTES(bm, bn, stages) + (bm) * 16 + (bn) * 12)

/* W8A8 decode ("rows", moe_gemm_fp8_rows.h): row tiles of 16, KP_MOE_GEMM8_ROWS_TPR
 * work-items per weight row (one 128-wide K slice each); the tile's activation rows of
 * a chunk of TPR slices as bf16 bits, each slice row padded by 8 (16 bytes: the TPR
 * work-items of a weight row read distinct banks), which the cross-work-item sum
 * [threads][16] f32 reuses (threads <= 544); the slices' activation scales, the C tile
 * [16][threads / TPR + 1], the row and scale-row indices, the tile's expert and rows
 * (16 bytes). */
#define KP_MOE_GEMM8_ROWS_M 16
#define KP_MOE_GEMM8_ROWS_TPR 8
#define KP_MOE_GEMM8_ROWS_LDS (128 + 8)
#define KP_MOE_GEMM8_ROWS_X_BYTES (KP_MOE_GEMM8_ROWS_M * KP_MOE_GEMM8_ROWS_TPR * KP_MOE_GEMM8_ROWS_LDS * 2)
#define KP_MOE_GEMM8_ROWS_LOCAL_BYTES(threads)                                                                 \
    (KP_MOE_GEMM8_ROWS_X_BYTES + KP_MOE_GEMM8_ROWS_M * KP_MOE_GEMM8_ROWS_TPR * 4 +                          \
     KP_MOE_GEMM8_ROWS_M * ((threads) / KP_MOE_GEMM8_ROWS_TPR + 1) * 4 + KP_MOE_GEMM8_ROWS_M * 16 + 16)

#endif /* KP_MOE_KARGS_H */
