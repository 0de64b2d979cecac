/*
 * kernels/attention/attention_kargs.h - the by-value parameter blocks of the attention
 * kernels (see kp_kargs.h for the layout rule), shared by backends/gpu/ops (which fills
 * them) and the kernels of both generations. Offsets and strides are in elements of the
 * tensor's dtype; lse indices in floats. The buffers themselves are separate arguments.
 */
#ifndef KP_ATTENTION_KARGS_H
#define KP_ATTENTION_KARGS_H

#include "kp_kargs.h"

/* kp_attention_prefill (attention_prefill.cl, attention_prefill_gen2.cl);
 * buffers: q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k (gen1 then: block_table,
 * seq_lens_k). Paged K/V (gen1 only): k_s0/v_s0 step between rows of a block,
 * k_sb/v_sb between blocks; key j of sequence b is row j % block_size of block
 * table[bt_off + b * bt_s0 + j / block_size], len_k = seq_lens_k[sl_off + b]. */
typedef struct kp_attn_prefill_kargs {
    kp_karg_i64 q_off, q_s0, q_s1; /* q [total_q, h_q, dqk]: token and head strides */
    kp_karg_i64 k_off, k_s0, k_s1;
    kp_karg_i64 v_off, v_s0, v_s1;
    kp_karg_i64 o_off, o_s0, o_s1;
    kp_karg_i64 lse_off;           /* lse [h_q, total_q] */
    kp_karg_i64 cu_q_off, cu_k_off;
    kp_karg_i64 k_sb, v_sb;        /* paged: between cache blocks */
    kp_karg_i64 bt_off, bt_s0;     /* paged: block_table [B, max_blocks] */
    kp_karg_i64 sl_off;            /* paged: seq_lens_k [B] */
    kp_karg_i32 has_lse;
    kp_karg_i32 nb;                /* sequences: cu_seqlens hold nb + 1 entries */
    kp_karg_i32 total_q, total_k;
    kp_karg_i32 group;             /* h_q / h_kv */
    kp_karg_i32 causal;
    kp_karg_i32 wl, wr;            /* sliding window, -1: unbounded */
    float scale_log2;              /* softmax scale * log2(e) */
    kp_karg_i32 paged;             /* 1: k, v are paged caches (above) */
    kp_karg_i32 max_blocks, num_blocks, block_size;
    kp_karg_i32 pad0;
} kp_attn_prefill_kargs;
KP_KARGS_OFFSET(kp_attn_prefill_kargs, has_lse, 160);
KP_KARGS_OFFSET(kp_attn_prefill_kargs, pad0, 212);
KP_KARGS_SIZE(kp_attn_prefill_kargs, 216);

/* attention_prefill_sm90.cl (the sm_90a tier, head dims dqk/dv: 64/64, 128/128, 192/128,
 * 256/256): 128 packed rows a CTA, KP_ATTN_SM90_BN(dqk) keys a stage (128; 64 at 256, so
 * that two stages and the 64 x 256 f32 O accumulator fit); dynamic local memory for
 * `stages` stages: 1024 (alignment to the 128-byte swizzle's repeat) + Q (128 x dqk x 2
 * bytes) + stages x (K, BN x dqk x 2, + V, BN x dv x 2) + the mbarriers. Its arguments:
 * out, lse, cu_seqlens_q, cu_seqlens_k, kp_attn_prefill_kargs, then the tensor maps of q
 * (4-D {d, group, h_kv, tokens}), k and v (3-D {d, h_kv, tokens}). */
#define KP_ATTN_SM90_BM 128
#define KP_ATTN_SM90_BN(dqk) ((dqk) > 192 ? 64u : 128u)
#define KP_ATTN_SM90_DV(dqk) ((dqk) == 192 ? 128u : (dqk) + 0u)
#define KP_ATTN_SM90_LOCAL_BYTES(dqk, stages)                                                        \
    (1024u + 256u * (dqk) + (stages) * (2u * KP_ATTN_SM90_BN(dqk) * ((dqk) + KP_ATTN_SM90_DV(dqk))) + \
     (2u * (stages) + 2u) * 8u)

/* kp_attention_decode_paged (attention_decode.cl, attention_decode_gen2.cl; MLA too);
 * buffers: q, k cache, v cache, out, lse, partials, partial lse, block table, seq_lens. */
typedef struct kp_attn_decode_kargs {
    kp_karg_i64 q_off, q_s0, q_s1, q_s2;  /* q [B, s_q, h_q, dqk] */
    kp_karg_i64 k_off, k_s0, k_s1, k_s2;  /* cache [num_blocks, block_size, h_kv, d] */
    kp_karg_i64 v_off, v_s0, v_s1, v_s2;
    kp_karg_i64 o_off, o_s0, o_s1, o_s2;
    kp_karg_i64 lse_off;                  /* lse [B, h_q, s_q] */
    kp_karg_i64 bt_off, bt_s0;            /* block_table [B, max_blocks] */
    kp_karg_i64 sl_off;                   /* seq_lens [B] */
    kp_karg_i32 has_lse;
    kp_karg_i32 nsplit;                   /* > 1: f32 partials, merged by kp_attention_combine */
    kp_karg_i32 max_blocks, num_blocks, block_size;
    kp_karg_i32 s_q, h_q, group;
    kp_karg_i32 causal;
    float scale_log2;
    kp_karg_i32 wl;                       /* sliding window: keys from position - wl on; -1: unbounded */
    kp_karg_i32 pad0;
} kp_attn_decode_kargs;
KP_KARGS_OFFSET(kp_attn_decode_kargs, has_lse, 160);
KP_KARGS_OFFSET(kp_attn_decode_kargs, pad0, 204);
KP_KARGS_SIZE(kp_attn_decode_kargs, 208);

/* The FP8 KV cache's extra parameter block of kp_attention_decode_paged, built with
 * -DATTN_KV_FP8 (then also buffers k_scale, v_scale after the main kargs); MLA passes its
 * kv_scale as both. Scales [1] or [num_blocks]. */
typedef struct kp_attn_kv_fp8_kargs {
    kp_karg_i64 ks_off, vs_off;
    kp_karg_i32 ks_per_block, vs_per_block;
} kp_attn_kv_fp8_kargs;
KP_KARGS_OFFSET(kp_attn_kv_fp8_kargs, ks_per_block, 16);
KP_KARGS_OFFSET(kp_attn_kv_fp8_kargs, vs_per_block, 20);
KP_KARGS_SIZE(kp_attn_kv_fp8_kargs, 24);

/* kp_attention_combine (attention_decode.cl): the split-KV merge;
 * buffers: partials, partial lse, out, lse. */
typedef struct kp_attn_combine_kargs {
    kp_karg_i64 o_off, o_s0, o_s1, o_s2;
    kp_karg_i64 lse_off;
    kp_karg_i32 nsplit, has_lse, s_q, h_q, dv;
    kp_karg_i32 pad0;
} kp_attn_combine_kargs;
KP_KARGS_OFFSET(kp_attn_combine_kargs, nsplit, 40);
KP_KARGS_OFFSET(kp_attn_combine_kargs, pad0, 60);
KP_KARGS_SIZE(kp_attn_combine_kargs, 64);

/* kp_kv_cache_store (kv_cache_store.cl);
 * buffers: key, value, k_cache, v_cache, slot_mapping, k_scale, v_scale. */
typedef struct kp_kv_store_kargs {
    kp_karg_i64 k_off, k_s0, k_s1;          /* key [T, h_kv, d]: token and head strides */
    kp_karg_i64 v_off, v_s0, v_s1;          /* value [T, h_kv, dv] */
    kp_karg_i64 kc_off, kc_s0, kc_s1, kc_s2; /* k_cache [num_blocks, block_size, h_kv, d] */
    kp_karg_i64 vc_off, vc_s0, vc_s1, vc_s2;
    kp_karg_i64 slot_off, ks_off, vs_off;   /* slot_mapping [T]; scales [1] or [num_blocks] */
    kp_karg_i32 has_value, h_kv, d, dv;
    kp_karg_i32 block_size, num_blocks;
    kp_karg_i32 ks_per_block, vs_per_block; /* the scale has one entry per cache block */
} kp_kv_store_kargs;
KP_KARGS_OFFSET(kp_kv_store_kargs, has_value, 136);
KP_KARGS_OFFSET(kp_kv_store_kargs, vs_per_block, 164);
KP_KARGS_SIZE(kp_kv_store_kargs, 168);

#endif /* KP_ATTENTION_KARGS_H */
