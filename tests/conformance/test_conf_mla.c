/*
 * tests/conformance/test_conf_mla.c — kp_mla_decode (FlashMLA layout: one latent KV
 * head of 576, V = its first 512 columns) against the float64 reference: h_q 16, 32,
 * 64, 128, s_q 1 and 2, block 64, causal, every dtype; forced split-KV; a few
 * FlashMLA-sized cases (b 2-4, s_k 4096, h_q 128); bad index content.
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
                conf_paged_case c = {dts[t], 3, sq, hq[h], 1, 576, 512, 64, lens, 1, (h + sq) % 2, MLA_SCALE, 1,
                                     NULL, 0};
                conf_run_paged(d, s, &c);
            }
    /* not causal, and a non-default head_dim_v */
    conf_paged_case c = {KP_BF16, 3, 2, 16, 1, 576, 512, 64, lens, 0, 1, MLA_SCALE, 1, NULL, 0};
    conf_run_paged(d, s, &c);
    conf_paged_case e = {KP_F32, 3, 2, 16, 1, 576, 256, 64, lens, 1, 1, MLA_SCALE, 1, NULL, 0};
    conf_run_paged(d, s, &e);
    CHECK_OK(kp_stream_destroy(s));
}

KP_CONFORMANCE(conf_mla_decode_splits) {
    static const int32_t splits[4] = {1, 3, 8, 0};
    static const int32_t lens[2] = {700, 5};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    conf_paged_case c = {KP_BF16, 2, 2, 32, 1, 576, 512, 64, lens, 1, 1, MLA_SCALE, 1, splits, 4};
    conf_run_paged(d, s, &c);
    CHECK_OK(kp_stream_destroy(s));
}

/* DeepSeek-V3 decode shapes: h_q 128, s_k 4096. */
KP_CONFORMANCE(conf_mla_decode_flashmla_sized) {
    static const int32_t l2[2] = {4096, 4096}, l4[4] = {4096, 3000, 1, 4033};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    conf_paged_case a = {KP_BF16, 2, 1, 128, 1, 576, 512, 64, l2, 1, 1, MLA_SCALE, 1, NULL, 0};
    conf_run_paged(d, s, &a);
    conf_paged_case b = {KP_F16, 4, 2, 128, 1, 576, 512, 64, l4, 1, 1, MLA_SCALE, 1, NULL, 0};
    conf_run_paged(d, s, &b);
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
