/*
 * kernels/attention/attention_gen2_layout.h - the dynamic local memory of the
 * generation-2 attention kernels, in bytes: one formula the planner
 * (backends/gpu/ops/gpu_attention_gen2.c) and the kernel (attention_prefill_gen2.cl)
 * both use. Rows are padded by 8 16-bit values (16 bytes) so that the 8 rows one
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

#endif /* KP_ATTENTION_GEN2_LAYOUT_H */
