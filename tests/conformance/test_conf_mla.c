/*
 * tests/conformance/test_conf_mla.c — kp_mla_decode (FlashMLA layout: one latent KV
 * head of 576, V = its first 512 columns) against the float64 reference: h_q 16, 32,
 * 64, 128, s_q 1 and 2, block 64, causal, every dtype; forced split-KV; a few
 * FlashMLA-sized cases (b 2-4, s_k 4096-4097, h_q 128); outlier channels; bad index
 * content; generation 2 (mla_decode_gen2.cl) forced on the GPU backends, with 16-bit
 * and with FP8 latent caches.
 */
#include "conf_attention.h"

#define MLA_SCALE 0.1352337788608801

KP_CONFORMANCE(conf_mla_decode_grid) {
    static const int32_t lens[3] = {0, 1, 200};
    static const int hq[4] = {16, 32, 64, 128};
    const kp_dtype dts[3] = {KP_BF16, KP_F16, KP_F32};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (int t = 0; t < 3; t++)
        for (int h = 0; h < 4; h++)
            for (int sq = 1; sq <= 2; sq++) {
                conf_paged_case c = {.dt = dts[t], .b = 3, .s_q = sq, .h_q = hq[h], .h_kv = 1, .d = 576, .dv = 512,
                    .block_size = 64, .seq_lens = lens, .causal = 1, .lse = (h + sq) % 2, .scale = MLA_SCALE,
                    .mla = 1};
                conf_run_paged(d, s, &c);
            }
    /* not causal, and a non-default head_dim_v */
    conf_paged_case c = {.dt = KP_BF16, .b = 3, .s_q = 2, .h_q = 16, .h_kv = 1, .d = 576, .dv = 512,
        .block_size = 64, .seq_lens = lens, .causal = 0, .lse = 1, .scale = MLA_SCALE, .mla = 1};
    conf_run_paged(d, s, &c);
    conf_paged_case e = {.dt = KP_F32, .b = 3, .s_q = 2, .h_q = 16, .h_kv = 1, .d = 576, .dv = 256, .block_size = 64,
        .seq_lens = lens, .causal = 1, .lse = 1, .scale = MLA_SCALE, .mla = 1};
    conf_run_paged(d, s, &e);
    CHECK_OK(kp_stream_destroy(s));
}

KP_CONFORMANCE(conf_mla_decode_splits) {
    static const int32_t splits[4] = {1, 3, 8, 0};
    static const int32_t lens[2] = {700, 5};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    conf_paged_case c = {.dt = KP_BF16, .b = 2, .s_q = 2, .h_q = 32, .h_kv = 1, .d = 576, .dv = 512,
        .block_size = 64, .seq_lens = lens, .causal = 1, .lse = 1, .scale = MLA_SCALE, .mla = 1, .splits = splits,
        .nsplits = 4};
    conf_run_paged(d, s, &c);
    CHECK_OK(kp_stream_destroy(s));
}

/* DeepSeek-V3 decode shapes: h_q 128, s_k about 4096 (4097: one key into a new block). */
KP_CONFORMANCE(conf_mla_decode_flashmla_sized) {
    static const int32_t l2[2] = {4097, 4096}, l4[4] = {4096, 3000, 1, 4033};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    conf_paged_case a = {.dt = KP_BF16, .b = 2, .s_q = 1, .h_q = 128, .h_kv = 1, .d = 576, .dv = 512,
        .block_size = 64, .seq_lens = l2, .causal = 1, .lse = 1, .scale = MLA_SCALE, .mla = 1};
    conf_run_paged(d, s, &a);
    conf_paged_case b = {.dt = KP_F16, .b = 4, .s_q = 2, .h_q = 128, .h_kv = 1, .d = 576, .dv = 512,
        .block_size = 64, .seq_lens = l4, .causal = 1, .lse = 1, .scale = MLA_SCALE, .mla = 1};
    conf_run_paged(d, s, &b);
    CHECK_OK(kp_stream_destroy(s));
}

/* Latent channels with outliers (x100): logits about +-30, split and unsplit. */
KP_CONFORMANCE(conf_mla_decode_outliers) {
    static const int32_t splits[2] = {1, 0};
    static const int32_t lens[2] = {600, 65};
    const kp_dtype dts[3] = {KP_BF16, KP_F16, KP_F32};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (int t = 0; t < 3; t++) {
        conf_paged_case c = {.dt = dts[t], .b = 2, .s_q = 2, .h_q = 16 << t, .h_kv = 1, .d = 576, .dv = 512,
            .block_size = 64, .seq_lens = lens, .causal = 1, .lse = 1, .scale = MLA_SCALE, .mla = 1, .splits = splits,
            .nsplits = 2, .outliers = 1};
        conf_run_paged(d, s, &c);
    }
    CHECK_OK(kp_stream_destroy(s));
}

KP_CONFORMANCE(conf_mla_decode_bad_content) {
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    int64_t sq[4] = {2, 1, 16, 576}, sc[4] = {3, 64, 1, 576}, so[4] = {2, 1, 16, 512}, st[2] = {2, 2}, sb[1] = {2};
    const double table[4] = {0, 2, 1, 3}, lens[2] = {100, 70}; /* block 3 does not exist */
    kp_conf_tensor q = kp_conf_random(d, "q", KP_BF16, 4, sq, -1.0, 1.0);
    kp_conf_tensor kv = kp_conf_random(d, "kv_cache", KP_BF16, 4, sc, -1.0, 1.0);
    kp_conf_tensor bt = kp_conf_from(d, "block_table", KP_I32, 2, st, table);
    kp_conf_tensor sl = kp_conf_from(d, "seq_lens", KP_I32, 1, sb, lens);
    kp_conf_tensor out = kp_conf_output(d, "out", KP_BF16, 4, so);
    kp_mla_decode_params p;
    memset(&p, 0, sizeof p);
    p.q = q.t, p.kv_cache = kv.t, p.block_table = bt.t, p.seq_lens = sl.t, p.out = out.t;
    p.softmax_scale = (float)MLA_SCALE, p.causal = 1, p.head_dim_v = 512;
    kp_test_require_op(d, KP_OP_MLA_DECODE, &p);
    unsigned char *snap = kp_test_snapshot(out.g.buf);
    int checked = kp_test_bad_index_result(d, kp_mla_decode(s, &p), "block_table[1, 1]");
    CHECK_OK(kp_stream_sync(s));
    if (checked) {
        kp_test_unchanged(out.g.buf, snap);
    } else {
        free(snap);
        kp_guarded_check(&out.g, "out");
    }
    kp_conf_free(&q), kp_conf_free(&kv), kp_conf_free(&bt), kp_conf_free(&sl), kp_conf_free(&out);
    CHECK_OK(kp_stream_destroy(s));
}

/* Generation-2 MLA decode (mla_decode_gen2.cl) on the GPU backends whatever the run's
 * KPORT_GPU_KERNELS (PoCL runs it through the portable copies and fragments): one, two
 * and four 16-row groups (s_q * h_q 16, 32, 64) and two and four 64-row tiles (128,
 * 256), d_v 512 and 256, block sizes 16 and 64, contexts of no key, one key, inside,
 * on and next to 64-key tile bounds and across several tiles, causal and not, lse on
 * and off, split-KV off, forced and automatic. The CPU backend ignores the variable. */
KP_CONFORMANCE(conf_mla_decode_gen2) {
    setenv("KPORT_GPU_KERNELS", "mla_decode=gen2", 1);
    static const int32_t lens[5] = {0, 63, 600, 1, 129};
    static const int32_t splits[3] = {1, 3, 0};
    static const struct {
        kp_dtype dt;
        int h_q, s_q, dv, bs, causal, lse;
    } cases[] = {
        {KP_BF16, 16, 1, 512, 16, 1, 1},  /* 16 rows: one row group */
        {KP_F16, 16, 2, 512, 64, 1, 1},   /* 32 rows: two row groups, causal across s_q */
        {KP_BF16, 64, 1, 256, 64, 1, 0},  /* 64 rows: four row groups, d_v 256, no lse */
        {KP_F16, 64, 2, 512, 16, 0, 1},   /* 128 rows: two row tiles, not causal */
        {KP_BF16, 128, 1, 512, 64, 1, 1}, /* DeepSeek's h_q: two row tiles */
    };
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        conf_paged_case c = {.dt = cases[i].dt, .b = 5, .s_q = cases[i].s_q, .h_q = cases[i].h_q, .h_kv = 1,
            .d = 576, .dv = cases[i].dv, .block_size = cases[i].bs, .seq_lens = lens, .causal = cases[i].causal,
            .lse = cases[i].lse, .scale = MLA_SCALE, .mla = 1, .splits = splits, .nsplits = i % 2 ? 2 : 3};
        conf_run_paged(d, s, &c);
    }
    CHECK_OK(kp_stream_destroy(s));
    unsetenv("KPORT_GPU_KERNELS");
}

/* Generation 2 with the AMD wave-tile layout emulated on PoCL (-DKP_WT_EMULATE_MFMA16:
 * 64-lane waves of 32 rows, a row group of 32 rows a wave, P written into the tile's
 * rope columns in that layout): 32 rows (s_q 2, causal; split-KV forced), 64 rows with
 * d_v 256 and 128 rows in two row tiles, shuffled blocks, contexts inside, on and
 * across 64-key tiles. (Up to 16 rows the planner takes one 16-row group, which a
 * 64-lane wave cannot split into halves: AMD's planner takes two.) */
static void mla_gen2_mfma16_on(kp_device *d) {
    static const int32_t lens[3] = {63, 129, 1};
    static const int32_t splits[2] = {1, 3};
    static const struct {
        kp_dtype dt;
        int h_q, s_q, dv, bs, causal;
    } cases[] = {
        {KP_F16, 16, 2, 512, 64, 1},
        {KP_BF16, 64, 1, 256, 16, 1},
        {KP_BF16, 128, 1, 512, 64, 0},
    };
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        conf_paged_case c = {.dt = cases[i].dt, .b = 3, .s_q = cases[i].s_q, .h_q = cases[i].h_q, .h_kv = 1,
            .d = 576, .dv = cases[i].dv, .block_size = cases[i].bs, .seq_lens = lens, .causal = cases[i].causal,
            .lse = 1, .scale = MLA_SCALE, .mla = 1, .splits = splits, .nsplits = 2};
        conf_run_paged(d, s, &c);
    }
    CHECK_OK(kp_stream_destroy(s));
}
KP_TEST(conf_mla_decode_gen2_mfma16_layout__opencl) { kp_conf_run_mfma16_layout("mla_decode=gen2", mla_gen2_mfma16_on); }

/* Generation 2 with FP8 (e4m3) latent caches (mla_decode_gen2.cl's -DATTN_KV_FP8 variant:
 * the cache's bytes copied into local memory and dequantized there), whatever the run's
 * KPORT_GPU_KERNELS: conf_mla_decode_gen2's shapes (16 to 256 packed rows, d_v 512 and
 * 256, blocks 16 and 64, contexts of 0, 63, 600, 1 and 129 keys, causal and not, lse on
 * and off), per-tensor and per-block kv_scale (the block's scale times 2^-2..2^2) across
 * 2^-10..2^10, outlier channels; split-KV off, forced and automatic. The reference reads
 * the cache as kp_mla_decode's contract says: e4m3 * scale in f32, rounded to q's dtype. */
KP_CONFORMANCE(conf_mla_decode_gen2_fp8) {
    setenv("KPORT_GPU_KERNELS", "mla_decode=gen2", 1);
    static const int32_t lens[5] = {0, 63, 600, 1, 129};
    static const int32_t splits[3] = {1, 3, 0};
    static const struct {
        kp_dtype dt;
        int h_q, s_q, dv, bs, causal, lse, per_block, outliers;
        double scale, range; /* kv_scale and the e4m3 values' range: dequantized about +-1 */
    } cases[] = {
        {KP_BF16, 16, 1, 512, 16, 1, 1, 0, 0, 0x1p-10, 448.0},  /* 16 rows; the cache all but saturated */
        {KP_F16, 16, 2, 512, 64, 1, 1, 1, 0, 0x1p-3, 8.0},      /* 32 rows, per-block scales */
        {KP_BF16, 64, 1, 256, 64, 1, 0, 0, 0, 0.0371, 27.0},    /* 64 rows, d_v 256, no lse */
        {KP_F16, 64, 2, 512, 16, 0, 1, 1, 1, 0x1p-6, 400.0},    /* 128 rows, not causal, outliers */
        {KP_BF16, 128, 1, 512, 64, 1, 1, 1, 0, 0x1p10, 0x1p-8}, /* DeepSeek's h_q; subnormal e4m3 */
    };
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        conf_paged_case c = {.dt = cases[i].dt, .b = 5, .s_q = cases[i].s_q, .h_q = cases[i].h_q, .h_kv = 1,
            .d = 576, .dv = cases[i].dv, .block_size = cases[i].bs, .seq_lens = lens, .causal = cases[i].causal,
            .lse = cases[i].lse, .scale = MLA_SCALE, .mla = 1, .splits = splits, .nsplits = i % 2 ? 2 : 3,
            .outliers = cases[i].outliers, .fp8 = 1, .fp8_per_block = cases[i].per_block,
            .fp8_scale = cases[i].scale, .fp8_range = cases[i].range};
        conf_run_paged(d, s, &c);
    }
    CHECK_OK(kp_stream_destroy(s));
    unsetenv("KPORT_GPU_KERNELS");
}
