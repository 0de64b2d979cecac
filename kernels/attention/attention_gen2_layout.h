/*
 * kernels/attention/attention_gen2_layout.h - the dynamic local memory of the
 * generation-2 attention kernels, in bytes: one formula the planner
 * (backends/gpu/ops/gpu_attention_gen2.c, gpu_attention_decode_gen2.c) and the kernels
 * (attention_prefill_gen2.cl, attention_decode_gen2.cl, mla_decode_gen2.cl) both use. Rows are padded by 8 16-bit values (16 bytes) so that the 8 rows one
 * ldmatrix reads fall on distinct banks.
 *
 *   Q tile          bm x (dqk + 8)
 *   stages          stages x bn x ((dqk + 8) + (dv + 8))     K then V, per stage
 *   quad scratch    2 floats per work-item (the shuffle fallback, kp_fragment_ops.h)
 *   P scratch       16 x 16 per 32-lane group (the fragment fallback)
 */
#ifndef KP_ATTENTION_GEN2_LAYOUT_H
#define KP_ATTENTION_GEN2_LAYOUT_H

#define KP_ATTN2_THREADS(bm) ((bm) / 16 * 32)
#define KP_ATTN2_Q_BYTES(bm, dqk) ((bm) * ((dqk) + 8) * 2)
#define KP_ATTN2_STAGE_BYTES(bn, dqk, dv) ((bn) * (((dqk) + 8) + ((dv) + 8)) * 2)
#define KP_ATTN2_LOCAL_BYTES(bm, bn, dqk, dv, stages)                                                     \
    (KP_ATTN2_Q_BYTES(bm, dqk) + (stages) * KP_ATTN2_STAGE_BYTES(bn, dqk, dv) + KP_ATTN2_THREADS(bm) * 8 + \
     (bm) / 16 * 512)

/* Paged decode: wm row groups x wn key groups of 32 work-items, bm = 16 wm rows; the
 * same regions, and the epilogue's merge area - wn x bm (max, sum) and wn x bm x dv f32
 * partial outputs - over the stages and what follows them once the loop is done. */
#define KP_ATTN2_DEC_THREADS(wm, wn) (32 * (wm) * (wn))
#define KP_ATTN2_DEC_MERGE_BYTES(wm, wn, dv) ((wn) * 16 * (wm) * ((dv) + 2) * 4)
#define KP_ATTN2_DEC_LOOP_BYTES(wm, wn, bn, dqk, dv, stages)                                         \
    ((stages) * KP_ATTN2_STAGE_BYTES(bn, dqk, dv) + KP_ATTN2_DEC_THREADS(wm, wn) * 8 + (wm) * (wn) * 512)
#define KP_ATTN2_DECODE_LOCAL_BYTES(wm, wn, bn, dqk, dv, stages)                                      \
    (KP_ATTN2_Q_BYTES(16 * (wm), dqk) +                                                               \
     (KP_ATTN2_DEC_LOOP_BYTES(wm, wn, bn, dqk, dv, stages) > KP_ATTN2_DEC_MERGE_BYTES(wm, wn, dv)      \
          ? KP_ATTN2_DEC_LOOP_BYTES(wm, wn, bn, dqk, dv, stages)                                      \
          : KP_ATTN2_DEC_MERGE_BYTES(wm, wn, dv)))

/* MLA decode (mla_decode_gen2.cl): wm row groups x 2 halves of DV, 32 work-items each;
 * Q bm x (dqk + 8), the latent tiles, the quad scratch, and [2][bm] f32 row maxima and
 * [2][bm] row sums of the two halves. The latent tiles: 16-bit caches, stages x bn rows
 * of dqk + 8 (P goes into a tile's columns past DV); FP8 (e4m3) caches (fp8 = 1), stages
 * x bn rows of dqk bytes as the cache holds them plus each row's f32 scale, and one
 * bn x (dqk + 8) 16-bit tile they are dequantized into (P in its columns past DV). */
#define KP_MLA2_THREADS(wm) (64 * (wm))
#define KP_MLA2_TILES_BYTES(bn, dqk, stages, fp8)                                                 \
    ((fp8) ? (stages) * (bn) * ((dqk) + 4) + (bn) * ((dqk) + 8) * 2 : (stages) * (bn) * ((dqk) + 8) * 2)
#define KP_MLA2_LOCAL_BYTES(wm, bn, dqk, stages, fp8)                                              \
    (KP_ATTN2_Q_BYTES(16 * (wm), dqk) + KP_MLA2_TILES_BYTES(bn, dqk, stages, fp8) + KP_MLA2_THREADS(wm) * 8 + \
     4 * 16 * (wm) * 4)

#endif /* KP_ATTENTION_GEN2_LAYOUT_H */
