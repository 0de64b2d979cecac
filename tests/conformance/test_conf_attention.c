/*
 * tests/conformance/test_conf_attention.c — kp_attention_prefill and
 * kp_attention_decode against the float64 references (tests/ref/ref_attention.c):
 * every dtype, head dims 64/128/256 and 192 q/k with 128 v, GQA ratios 1/4/8/16 and
 * MQA, causal and not (bottom-right aligned when q and k lengths differ), sliding
 * windows, explicit scales, lse on and off, batches with lengths 0 and 1 and lengths
 * no tile divides; paged decode with block sizes 16/32/64, s_q 1/2/5, forced and
 * automatic split-KV (and the same through the generation-2 GPU kernel whatever
 * KPORT_GPU_KERNELS says); bad index content rejected with nothing written (on backends
 * with KP_CAP_CHECKS_INDICES; elsewhere only memory safety is checked).
 * MLA decode is in test_conf_mla.c.
 */
#include "conf_attention.h"
#include "ref_attention.h"

#include <math.h>

/* ------------------------------------------------------------------------ */
/* Prefill                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct prefill_case {
    kp_dtype dt;
    int nb;
    const int32_t *lq, *lk; /* [nb] */
    int h_q, h_kv, d, dv;
    int causal, wl, wr, lse;
    double scale;            /* 0: 1/sqrt(d) */
    int outliers;            /* a few key channels x100: logits spanning about +-30 */
    const char *may_decline; /* backends whose documented limits exclude this case */
    int nan_neighbours;      /* NaN where no query may look: see conf_attn_prefill_nan_neighbours */
} prefill_case;

/* NaN in t's rows [cu[b], cu[b + 1]) of every sequence b whose other side is empty
 * (other[b] == 0) and in its rows from cu[nb] on (padding past the last sequence); the
 * tensor uploaded again. */
static void nan_rows(kp_device *dev, kp_conf_tensor *t, const int32_t *cu, const int32_t *other, int nb) {
    const int64_t row = t->numel / t->t.shape[0];
    double *x = malloc((size_t)t->numel * sizeof *x);
    memcpy(x, t->host, (size_t)t->numel * sizeof *x);
    for (int64_t r = 0; r < t->t.shape[0]; r++) {
        int b = 0;
        while (b < nb && r >= cu[b + 1]) b++;
        if (b == nb || other[b] == 0)
            for (int64_t i = 0; i < row; i++) x[r * row + i] = NAN;
    }
    kp_conf_tensor n = kp_conf_from(dev, t->name, t->t.dtype, t->t.ndim, t->t.shape, x);
    kp_conf_free(t);
    *t = n;
    free(x);
}

static void run_prefill(kp_device *dev, kp_stream *s, const prefill_case *c) {
    int32_t cu_q[17], cu_k[17];
    double cuq_d[17], cuk_d[17];
    int max_q = 0, max_k = 0;
    cu_q[0] = cu_k[0] = 0;
    for (int b = 0; b < c->nb; b++) {
        cu_q[b + 1] = cu_q[b] + c->lq[b];
        cu_k[b + 1] = cu_k[b] + c->lk[b];
        if (c->lq[b] > max_q) max_q = c->lq[b];
        if (c->lk[b] > max_k) max_k = c->lk[b];
    }
    for (int b = 0; b <= c->nb; b++) cuq_d[b] = cu_q[b], cuk_d[b] = cu_k[b];
    int64_t tq = cu_q[c->nb], tk = cu_k[c->nb] + (c->nan_neighbours ? 100 : 0);
    double scale = c->scale > 0 ? c->scale : 1.0 / sqrt((double)c->d);
    char what[160];
    snprintf(what, sizeof what, "prefill %s d %d/%d h %d/%d causal %d window %d/%d scale %g%s", kp_dtype_name(c->dt),
             c->d, c->dv, c->h_q, c->h_kv, c->causal, c->wl, c->wr, scale, c->outliers ? " outliers" : "");

    int64_t sq[3] = {tq, c->h_q, c->d}, sk[3] = {tk, c->h_kv, c->d}, sv[3] = {tk, c->h_kv, c->dv};
    int64_t so[3] = {tq, c->h_q, c->dv}, sl[2] = {c->h_q, tq}, scu[1] = {c->nb + 1};
    kp_conf_tensor q = kp_conf_random(dev, "q", c->dt, 3, sq, -1.0, 1.0);
    kp_conf_tensor k = c->outliers ? kp_conf_random_outliers(dev, "k", c->dt, 3, sk, -1.0, 1.0, 3, 100.0)
                                   : kp_conf_random(dev, "k", c->dt, 3, sk, -1.0, 1.0);
    kp_conf_tensor v = kp_conf_random(dev, "v", c->dt, 3, sv, -1.0, 1.0);
    if (c->nan_neighbours) {
        int32_t lq[16], lk[16];
        for (int b = 0; b < c->nb; b++) lq[b] = c->lq[b], lk[b] = c->lk[b];
        nan_rows(dev, &k, cu_k, lq, c->nb), nan_rows(dev, &v, cu_k, lq, c->nb), nan_rows(dev, &q, cu_q, lk, c->nb);
    }
    kp_conf_tensor cq = kp_conf_from(dev, "cu_seqlens_q", KP_I32, 1, scu, cuq_d);
    kp_conf_tensor ck = kp_conf_from(dev, "cu_seqlens_k", KP_I32, 1, scu, cuk_d);
    kp_conf_tensor out = kp_conf_output(dev, "out", c->dt, 3, so);
    kp_conf_tensor lse = {0};
    if (c->lse) lse = kp_conf_output(dev, "lse", KP_F32, 2, sl);

    kp_attention_prefill_params p;
    memset(&p, 0, sizeof p);
    p.q = q.t, p.k = k.t, p.v = v.t, p.out = out.t;
    if (c->lse) p.lse = lse.t;
    p.cu_seqlens_q = cq.t, p.cu_seqlens_k = ck.t;
    p.max_seqlen_q = max_q, p.max_seqlen_k = max_k;
    p.softmax_scale = (float)scale;
    p.causal = c->causal, p.window_left = c->wl, p.window_right = c->wr;
    if (kp_test_case_runs(dev, KP_OP_ATTENTION_PREFILL, &p, c->may_decline)) {
        CHECK_OK(kp_attention_prefill(s, &p));
        CHECK_OK(kp_stream_sync(s));
        size_t no = (size_t)out.numel + 1, nl = (size_t)(tq * c->h_q + 1);
        double *ref = calloc(no, sizeof *ref), *ref_lse = calloc(nl, sizeof *ref_lse);
        ref_attn_err e = {kp_conf_prec(c->dt), calloc(no, sizeof(double)), calloc(nl, sizeof(double))};
        /* the scale the kernel sees is the f32 one */
        ref_attention_prefill(q.host, k.host, v.host, tq, c->h_q, c->h_kv, c->d, c->dv, cu_q, cu_k, c->nb,
                              (double)(float)scale, c->causal, c->wl, c->wr, ref, ref_lse, &e);
        kp_conf_download(&out);
        kp_conf_expect(what, &out, ref, e.out, "token,head,col");
        if (c->lse) {
            kp_conf_download(&lse);
            char w2[200];
            snprintf(w2, sizeof w2, "%s: lse", what);
            kp_conf_expect(w2, &lse, ref_lse, e.lse, "head,token");
        }
        free(ref), free(ref_lse), free(e.out), free(e.lse);
    }
    if (c->lse) kp_conf_free(&lse);
    kp_conf_free(&q), kp_conf_free(&k), kp_conf_free(&v), kp_conf_free(&cq), kp_conf_free(&ck), kp_conf_free(&out);
}

/* A batch with every awkward length: 1, 0 queries with keys, lengths no tile divides,
 * len_q != len_k both ways (more queries than keys: under causal the first queries
 * see nothing), and keys of length 0. */
static const int32_t mixed_lq[6] = {1, 0, 37, 70, 9, 2};
static const int32_t mixed_lk[6] = {1, 5, 37, 99, 3, 0};

static const int head_dims[4][2] = {{64, 64}, {128, 128}, {256, 256}, {192, 128}};
static const int heads[5][2] = {{4, 4}, {8, 2}, {16, 2}, {32, 2}, {6, 1}}; /* ratios 1, 4, 8, 16; MQA */

static void prefill_grid(kp_device *dev, kp_dtype dt) {
    kp_stream *s;
    CHECK_OK(kp_stream_create(dev, &s));
    for (int hd = 0; hd < 4; hd++)
        for (int hh = 0; hh < 5; hh++)
            for (int causal = 0; causal < 2; causal++) {
                prefill_case c = {.dt = dt, .nb = 6, .lq = mixed_lq, .lk = mixed_lk, .h_q = heads[hh][0],
                    .h_kv = heads[hh][1], .d = head_dims[hd][0], .dv = head_dims[hd][1], .causal = causal, .wl = -1,
                    .wr = -1, .lse = (hd + hh + causal) % 2};
                run_prefill(dev, s, &c);
            }
    CHECK_OK(kp_stream_destroy(s));
}

KP_CONFORMANCE(conf_attn_prefill_grid_f32) { prefill_grid(d, KP_F32); }
KP_CONFORMANCE(conf_attn_prefill_grid_f16) { prefill_grid(d, KP_F16); }
KP_CONFORMANCE(conf_attn_prefill_grid_bf16) { prefill_grid(d, KP_BF16); }

/* Generation 2's prefill with the AMD wave-tile layout (kernels/common/kp_wave_tile.h:
 * 64-lane waves of 32 rows, 8 row slots a lane, rows reduced over 16 lanes, P through
 * local memory), emulated on PoCL (-DKP_WT_EMULATE_MFMA16): the kernel's code for the
 * native MFMA 16x16x16 layout, all but the instruction. The grid (every head dim, GQA
 * ratio, causal) and the causal diagonal at every offset. */
static void conf_attn_prefill_diagonal_offsets_on(kp_device *d);
KP_TEST(conf_attn_prefill_gen2_mfma16_layout__opencl) {
    kp_conf_run_mfma16_layout("attention_prefill=gen2", conf_attn_prefill_grid_bf16_on);
    kp_conf_run_mfma16_layout("attention_prefill=gen2", conf_attn_prefill_diagonal_offsets_on);
}

KP_CONFORMANCE(conf_attn_prefill_window) {
    static const int win[8][3] = {{0, 0, 0}, {5, -1, 0}, {-1, 3, 0}, {16, 4, 0}, {7, 7, 0},
                                  {3, -1, 1}, {0, -1, 1}, {20, 2, 1}}; /* left, right, causal */
    const kp_dtype dts[2] = {KP_F16, KP_F32};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (int t = 0; t < 2; t++)
        for (int w = 0; w < 8; w++) {
            prefill_case c = {.dt = dts[t], .nb = 6, .lq = mixed_lq, .lk = mixed_lk, .h_q = 8, .h_kv = 2, .d = 128,
                .dv = 128, .causal = win[w][2], .wl = win[w][0], .wr = win[w][1], .lse = 1};
            run_prefill(d, s, &c);
        }
    CHECK_OK(kp_stream_destroy(s));
}

KP_CONFORMANCE(conf_attn_prefill_scale) {
    static const double scales[3] = {1.0, 0.01, 0.3};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (int i = 0; i < 3; i++)
        for (int lse = 0; lse < 2; lse++) {
            prefill_case c = {.dt = KP_F32, .nb = 6, .lq = mixed_lq, .lk = mixed_lk, .h_q = 4, .h_kv = 1, .d = 64,
                .dv = 64, .causal = lse, .wl = -1, .wr = -1, .lse = lse, .scale = scales[i]};
            run_prefill(d, s, &c);
            c.dt = KP_BF16;
            run_prefill(d, s, &c);
        }
    CHECK_OK(kp_stream_destroy(s));
}

/* Longer sequences: many key blocks and query tiles, none of them full at the edge. */
KP_CONFORMANCE(conf_attn_prefill_long) {
    static const int32_t lq1[1] = {300}, lk1[1] = {700}, l2[2] = {513, 130};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    prefill_case a = {.dt = KP_BF16, .nb = 1, .lq = lq1, .lk = lk1, .h_q = 8, .h_kv = 2, .d = 128, .dv = 128,
        .causal = 1, .wl = -1, .wr = -1, .lse = 1};
    run_prefill(d, s, &a);
    prefill_case b = {.dt = KP_F16, .nb = 2, .lq = l2, .lk = l2, .h_q = 2, .h_kv = 1, .d = 256, .dv = 256,
        .causal = 0, .wl = -1, .wr = -1, .lse = 1};
    run_prefill(d, s, &b);
    prefill_case c = {.dt = KP_F32, .nb = 2, .lq = l2, .lk = l2, .h_q = 4, .h_kv = 4, .d = 192, .dv = 128,
        .causal = 1, .wl = 100, .wr = -1, .lse = 1};
    run_prefill(d, s, &c);
    CHECK_OK(kp_stream_destroy(s));
}

/* Causal diagonals at every tile-edge offset: len_k - len_q = BN - 2 (mod BN) for key
 * tiles of 16..128 puts a row tile's first row one key short of a tile's end, so a
 * kernel that skips the mask on a tile one key too early (generation 2's diagonal-only
 * masking) is caught; 63 and 0 are the exact fits. */
KP_CONFORMANCE(conf_attn_prefill_diagonal_offsets) {
    static const int32_t lq[6] = {70, 70, 70, 130, 1, 65}, lk[6] = {132, 84, 100, 256, 1, 128};
    static const int heads2[2][2] = {{2, 2}, {8, 2}};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (int h = 0; h < 2; h++) {
        prefill_case c = {.dt = h ? KP_F16 : KP_BF16, .nb = 6, .lq = lq, .lk = lk, .h_q = heads2[h][0],
            .h_kv = heads2[h][1], .d = h ? 128 : 64, .dv = h ? 128 : 64, .causal = 1, .wl = -1, .wr = -1, .lse = 1};
        run_prefill(d, s, &c);
    }
    CHECK_OK(kp_stream_destroy(s));
}

/* Every query row is empty (no keys at all): out 0, lse +inf. */
KP_CONFORMANCE(conf_attn_prefill_no_keys) {
    static const int32_t lq[2] = {3, 4}, lk[2] = {0, 0};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    prefill_case c = {.dt = KP_F16, .nb = 2, .lq = lq, .lk = lk, .h_q = 4, .h_kv = 2, .d = 64, .dv = 64, .causal = 1,
        .wl = -1, .wr = -1, .lse = 1};
    run_prefill(d, s, &c);
    CHECK_OK(kp_stream_destroy(s));
}

/* Key channels with outliers (x100): logits span about +-30, so the running max jumps
 * between key tiles and most probabilities underflow in f16 - the online softmax's
 * rescaling at its extremes. Every dtype and head dim, causal and not. */
KP_CONFORMANCE(conf_attn_prefill_outliers) {
    static const int32_t lq[3] = {70, 1, 130}, lk[3] = {300, 64, 130};
    const kp_dtype dts[3] = {KP_F32, KP_F16, KP_BF16};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (int t = 0; t < 3; t++)
        for (int hd = 0; hd < 4; hd++) {
            prefill_case c = {.dt = dts[t], .nb = 3, .lq = lq, .lk = lk, .h_q = 4, .h_kv = 1, .d = head_dims[hd][0],
                .dv = head_dims[hd][1], .causal = (t + hd) % 2, .wl = -1, .wr = -1, .lse = 1, .outliers = 1};
            run_prefill(d, s, &c);
        }
    CHECK_OK(kp_stream_destroy(s));
}

/* A long context: 4096 keys behind short query sequences (prefix caching, chunked
 * prefill), causal bottom-right, with GQA. */
KP_CONFORMANCE(conf_attn_prefill_4k_keys) {
    static const int32_t lq[2] = {64, 150}, lk[2] = {4096, 4000}, lq1[1] = {16}, lk1[1] = {4096};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    prefill_case a = {.dt = KP_BF16, .nb = 2, .lq = lq, .lk = lk, .h_q = 2, .h_kv = 1, .d = 128, .dv = 128,
        .causal = 1, .wl = -1, .wr = -1, .lse = 1};
    run_prefill(d, s, &a);
    prefill_case b = {.dt = KP_F16, .nb = 1, .lq = lq1, .lk = lk1, .h_q = 4, .h_kv = 1, .d = 256, .dv = 256,
        .causal = 0, .wl = -1, .wr = -1, .lse = 1, .outliers = 1};
    run_prefill(d, s, &b);
    CHECK_OK(kp_stream_destroy(s));
}

/* The cases the sm_90a tier takes (16-bit, head dim 128, GQA groups dividing 128:
 * ci/gpu-check forces attention_prefill=sm90 on this test): the awkward-length batch with
 * GQA ratios 1/4/8/16 and MQA, causal or not, windows; long sequences crossing many
 * 128-row and 128-key tiles; every causal diagonal offset; outliers. */
static void tier_cases(kp_device *d, int hd);
KP_CONFORMANCE(conf_attn_prefill_d128) { tier_cases(d, 128); }

/* Head dims 64/64 and 256/256 in the sm_90a tier's reach (ci/gpu-check forces it on
 * conf_attn_prefill_d*): d128's cases at that head dim. */
KP_CONFORMANCE(conf_attn_prefill_d64) { tier_cases(d, 64); }
KP_CONFORMANCE(conf_attn_prefill_d256) { tier_cases(d, 256); }

/* Packed sequences whose neighbours hold NaN where no query of theirs may look: the K and
 * V rows of sequences without queries and of the padding past cu_seqlens_k[B] (legal:
 * uninitialised memory), the q rows of sequences without keys. A kernel whose key tile
 * runs past its sequence's last key (masked, P = 0) must still keep those rows out of
 * P V (0 x NaN = NaN) and of the row max. Every head dim the GPU kernels build, 16-bit
 * (the sm_90a tier's reach: ci/gpu-check forces it on this test too), causal or not, a
 * window; tiles of 64 and 128 keys both end inside a NaN neighbour. */
KP_CONFORMANCE(conf_attn_prefill_nan_neighbours) {
    static const int32_t lq[6] = {37, 0, 130, 2, 0, 9}, lk[6] = {37, 20, 200, 0, 40, 3};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (int hd = 0; hd < 4; hd++)
        for (int v = 0; v < 3; v++) {
            prefill_case c = {.dt = (hd + v) % 2 ? KP_F16 : KP_BF16, .nb = 6, .lq = lq, .lk = lk, .h_q = 8,
                .h_kv = 2, .d = head_dims[hd][0], .dv = head_dims[hd][1], .causal = v == 1, .wl = v == 2 ? 16 : -1,
                .wr = v == 2 ? 4 : -1, .lse = 1, .nan_neighbours = 1};
            run_prefill(d, s, &c);
        }
    CHECK_OK(kp_stream_destroy(s));
}

static void tier_cases(kp_device *d, int hd) {
    static const int heads5[5][2] = {{4, 4}, {8, 2}, {16, 2}, {32, 2}, {8, 1}};
    static const int32_t lq1[1] = {300}, lk1[1] = {700}, l2[2] = {513, 130};
    static const int32_t dq[6] = {70, 70, 70, 130, 1, 65}, dk[6] = {132, 84, 100, 256, 1, 128};
    static const int win[3][3] = {{5, -1, 0}, {16, 4, 0}, {20, 2, 1}}; /* left, right, causal */
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (int t = 0; t < 2; t++) {
        const kp_dtype dt = t ? KP_F16 : KP_BF16;
        for (int hh = 0; hh < 5; hh++)
            for (int causal = 0; causal < 2; causal++) {
                prefill_case c = {.dt = dt, .nb = 6, .lq = mixed_lq, .lk = mixed_lk, .h_q = heads5[hh][0],
                    .h_kv = heads5[hh][1], .d = hd, .dv = hd, .causal = causal, .wl = -1, .wr = -1,
                    .lse = (hh + causal) % 2};
                run_prefill(d, s, &c);
            }
        for (int w = 0; w < 3; w++) {
            prefill_case c = {.dt = dt, .nb = 6, .lq = mixed_lq, .lk = mixed_lk, .h_q = 8, .h_kv = 2, .d = hd,
                .dv = hd, .causal = win[w][2], .wl = win[w][0], .wr = win[w][1], .lse = 1};
            run_prefill(d, s, &c);
        }
        prefill_case a = {.dt = dt, .nb = 1, .lq = lq1, .lk = lk1, .h_q = 8, .h_kv = 2, .d = hd, .dv = hd,
            .causal = 1 - t, .wl = -1, .wr = -1, .lse = 1};
        run_prefill(d, s, &a);
        prefill_case b = {.dt = dt, .nb = 2, .lq = l2, .lk = l2, .h_q = 2, .h_kv = 1, .d = hd, .dv = hd,
            .causal = t, .wl = -1, .wr = -1, .lse = 1, .outliers = 1};
        run_prefill(d, s, &b);
        prefill_case c = {.dt = dt, .nb = 6, .lq = dq, .lk = dk, .h_q = 8, .h_kv = 2, .d = hd, .dv = hd,
            .causal = 1, .wl = -1, .wr = -1, .lse = 1};
        run_prefill(d, s, &c);
    }
    CHECK_OK(kp_stream_destroy(s));
}

/* DeepSeek-V3's MHA prefill head dims 192/128 in the sm_90a tier's reach (16-bit, GQA groups
 * dividing 128: ci/gpu-check forces attention_prefill=sm90 on conf_attn_prefill_d1*): the
 * awkward-length batch, causal or not, and a long causal sequence over many tiles. */
KP_CONFORMANCE(conf_attn_prefill_d192_dv128) {
    static const int32_t l2[2] = {513, 130};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (int t = 0; t < 2; t++) {
        const kp_dtype dt = t ? KP_F16 : KP_BF16;
        for (int causal = 0; causal < 2; causal++) {
            prefill_case c = {.dt = dt, .nb = 6, .lq = mixed_lq, .lk = mixed_lk, .h_q = 8, .h_kv = 2 - causal,
                .d = 192, .dv = 128, .causal = causal, .wl = -1, .wr = -1, .lse = 1 - causal};
            run_prefill(d, s, &c);
        }
        prefill_case b = {.dt = dt, .nb = 2, .lq = l2, .lk = l2, .h_q = 4, .h_kv = 4, .d = 192, .dv = 128,
            .causal = 1, .wl = -1, .wr = -1, .lse = 1, .outliers = t};
        run_prefill(d, s, &b);
    }
    CHECK_OK(kp_stream_destroy(s));
}

/* Head dims outside the GPU kernels' set (README's op table: 64, 128, 256, 192/128 on
 * the GPU backends): the CPU backend must run them; the GPU backends may decline. */
KP_CONFORMANCE(conf_attn_prefill_other_head_dims) {
    static const int dims[3][2] = {{32, 32}, {96, 96}, {128, 64}};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (int i = 0; i < 3; i++) {
        prefill_case c = {.dt = KP_BF16, .nb = 6, .lq = mixed_lq, .lk = mixed_lk, .h_q = 4, .h_kv = 2,
            .d = dims[i][0], .dv = dims[i][1], .causal = i % 2, .wl = -1, .wr = -1, .lse = 1,
            .may_decline = "opencl,cuda,hip"};
        run_prefill(d, s, &c);
    }
    CHECK_OK(kp_stream_destroy(s));
}

/* ------------------------------------------------------------------------ */
/* Paged decode (shared with MLA)                                            */
/* ------------------------------------------------------------------------ */

void conf_run_paged(kp_device *dev, kp_stream *s, const conf_paged_case *c) {
    const int h_kv = c->mla ? 1 : c->h_kv, bs = c->block_size;
    int max_blocks = 1, used = 0;
    for (int b = 0; b < c->b; b++) {
        int n = (c->seq_lens[b] + bs - 1) / bs;
        used += n;
        if (n + 1 > max_blocks) max_blocks = n + 1;
    }
    int num_blocks = used + 3; /* spare blocks nobody uses */
    /* shuffled block ids; unused table entries out of range (never read) */
    int *perm = malloc((size_t)num_blocks * sizeof *perm);
    for (int i = 0; i < num_blocks; i++) perm[i] = i;
    for (int i = num_blocks - 1; i > 0; i--) {
        int j = (int)(kp_test_rand_u64() % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    double *table_d = malloc((size_t)(c->b * max_blocks) * sizeof *table_d), lens_d[64];
    int32_t *table = malloc((size_t)(c->b * max_blocks) * sizeof *table);
    int next = 0;
    for (int b = 0; b < c->b; b++) {
        lens_d[b] = c->seq_lens[b];
        for (int j = 0; j < max_blocks; j++) {
            int32_t e = j < (c->seq_lens[b] + bs - 1) / bs ? perm[next++] : (j % 2 ? -7 : num_blocks + 1000);
            table[b * max_blocks + j] = e;
            table_d[b * max_blocks + j] = e;
        }
    }
    double scale = c->scale > 0 ? c->scale : 1.0 / sqrt((double)c->d);
    char what[200];
    char fp8_what[96] = "";
    if (c->fp8)
        snprintf(fp8_what, sizeof fp8_what, " fp8 cache scale %g%s", c->fp8_scale, c->fp8_per_block ? " per block" : "");
    snprintf(what, sizeof what, "%s %s b %d s_q %d h %d/%d d %d/%d block %d causal %d window %d%s%s",
             c->mla ? "mla" : "decode", kp_dtype_name(c->dt), c->b, c->s_q, c->h_q, h_kv, c->d, c->dv, bs, c->causal,
             c->window_left, c->outliers ? " outliers" : "", fp8_what);

    int64_t sq[4] = {c->b, c->s_q, c->h_q, c->d}, sk[4] = {num_blocks, bs, h_kv, c->d};
    int64_t sv[4] = {num_blocks, bs, h_kv, c->dv}, so[4] = {c->b, c->s_q, c->h_q, c->dv};
    int64_t sl[3] = {c->b, c->h_q, c->s_q}, st[2] = {c->b, max_blocks}, sb[1] = {c->b};
    kp_conf_tensor q = kp_conf_random(dev, "q", c->dt, 4, sq, -1.0, 1.0);
    const char *kname = c->mla ? "kv_cache" : "k_cache";
    const kp_dtype cdt = c->fp8 ? KP_FP8_E4M3 : c->dt;
    const double kr = c->fp8 ? (c->outliers ? c->fp8_range / 100.0 : c->fp8_range) : 1.0, vr = c->fp8 ? c->fp8_range : 1.0;
    kp_conf_tensor k = c->outliers ? kp_conf_random_outliers(dev, kname, cdt, 4, sk, -kr, kr, 3, 100.0)
                                   : kp_conf_random(dev, kname, cdt, 4, sk, -kr, kr);
    kp_conf_tensor v = {0};
    if (!c->mla) v = kp_conf_random(dev, "v_cache", cdt, 4, sv, -vr, vr);
    /* FP8: the scales, and the caches as the op reads them (e4m3 * scale in f32, rounded to dt) */
    kp_conf_tensor ks = {0}, vs = {0};
    double *kdq = k.host, *vdq = c->mla ? NULL : v.host;
    if (c->fp8) {
        int64_t ns = c->fp8_per_block ? num_blocks : 1;
        double *sv_host = malloc((size_t)ns * sizeof *sv_host);
        for (int64_t i = 0; i < ns; i++) sv_host[i] = c->fp8_scale * (c->fp8_per_block ? ldexp(1.0, (int)(i % 5) - 2) : 1.0);
        ks = kp_conf_from(dev, c->mla ? "kv_scale" : "k_scale", KP_F32, 1, (const int64_t[]){ns}, sv_host);
        for (int64_t i = 0; i < ns; i++) sv_host[i] *= 0.5; /* V's scales differ from K's */
        if (!c->mla) vs = kp_conf_from(dev, "v_scale", KP_F32, 1, (const int64_t[]){ns}, sv_host);
        free(sv_host);
        int64_t per_k = (int64_t)bs * h_kv * c->d, per_v = (int64_t)bs * h_kv * c->dv;
        kdq = malloc((size_t)k.numel * sizeof *kdq);
        for (int64_t i = 0; i < k.numel; i++)
            kdq[i] = kp_conf_round((double)(float)(k.host[i] * ks.host[c->fp8_per_block ? i / per_k : 0]), c->dt);
        if (!c->mla) {
            vdq = malloc((size_t)v.numel * sizeof *vdq);
            for (int64_t i = 0; i < v.numel; i++)
                vdq[i] = kp_conf_round((double)(float)(v.host[i] * vs.host[c->fp8_per_block ? i / per_v : 0]), c->dt);
        }
    }
    kp_conf_tensor bt = kp_conf_from(dev, "block_table", KP_I32, 2, st, table_d);
    kp_conf_tensor sl_t = kp_conf_from(dev, "seq_lens", KP_I32, 1, sb, lens_d);

    size_t no = (size_t)(c->b * c->s_q * c->h_q * c->dv), nl = (size_t)(c->b * c->h_q * c->s_q);
    double *ref = calloc(no, sizeof *ref), *ref_lse = calloc(nl, sizeof *ref_lse);
    ref_attn_err e = {kp_conf_prec(c->dt), calloc(no, sizeof(double)), calloc(nl, sizeof(double))};
    ref_attention_decode_window(q.host, kdq, c->mla ? kdq : vdq, c->b, c->s_q, c->h_q, h_kv, c->d, c->dv, c->d,
                                c->mla ? c->d : c->dv, bs, table, max_blocks, c->seq_lens, (double)(float)scale,
                                c->causal, c->mla ? 0 : c->window_left, ref, ref_lse, &e);

    static const int32_t auto_split[1] = {0};
    const int32_t *splits = c->splits ? c->splits : auto_split;
    int nsplits = c->splits ? c->nsplits : 1;
    for (int si = 0; si < nsplits; si++) {
        kp_conf_tensor out = kp_conf_output(dev, "out", c->dt, 4, so);
        kp_conf_tensor lse = {0};
        if (c->lse) lse = kp_conf_output(dev, "lse", KP_F32, 3, sl);
        kp_status st_run;
        if (c->mla) {
            kp_mla_decode_params p;
            memset(&p, 0, sizeof p);
            p.q = q.t, p.kv_cache = k.t, p.block_table = bt.t, p.seq_lens = sl_t.t, p.out = out.t;
            if (c->lse) p.lse = lse.t;
            p.softmax_scale = (float)scale, p.causal = c->causal, p.head_dim_v = c->dv, p.num_splits = splits[si];
            if (c->fp8) p.kv_scale = ks.t;
            if (!kp_test_case_runs(dev, KP_OP_MLA_DECODE, &p, c->may_decline)) goto declined;
            st_run = kp_mla_decode(s, &p);
        } else {
            kp_attention_decode_params p;
            memset(&p, 0, sizeof p);
            p.q = q.t, p.k_cache = k.t, p.v_cache = v.t, p.block_table = bt.t, p.seq_lens = sl_t.t, p.out = out.t;
            if (c->lse) p.lse = lse.t;
            p.softmax_scale = (float)scale, p.causal = c->causal, p.num_splits = splits[si];
            p.window_left = c->window_left;
            if (c->fp8) p.k_scale = ks.t, p.v_scale = vs.t;
            if (!kp_test_case_runs(dev, KP_OP_ATTENTION_DECODE, &p, c->may_decline)) goto declined;
            st_run = kp_attention_decode(s, &p);
        }
        CHECK_OK(st_run);
        CHECK_OK(kp_stream_sync(s));
        char w[260];
        snprintf(w, sizeof w, "%s num_splits %d", what, (int)splits[si]);
        kp_conf_download(&out);
        kp_conf_expect(w, &out, ref, e.out, "batch,query,head,col");
        if (c->lse) {
            kp_conf_download(&lse);
            char w2[300];
            snprintf(w2, sizeof w2, "%s: lse", w);
            kp_conf_expect(w2, &lse, ref_lse, e.lse, "batch,head,query");
        }
    declined:
        if (c->lse) kp_conf_free(&lse);
        kp_conf_free(&out);
    }
    free(ref), free(ref_lse), free(e.out), free(e.lse), free(perm), free(table), free(table_d);
    kp_conf_free(&q), kp_conf_free(&k), kp_conf_free(&bt), kp_conf_free(&sl_t);
    if (!c->mla) kp_conf_free(&v);
    if (c->fp8) {
        free(kdq), kp_conf_free(&ks);
        if (!c->mla) free(vdq), kp_conf_free(&vs);
    }
}

static void decode_grid(kp_device *dev, kp_dtype dt) {
    static const int32_t lens[4] = {0, 1, 77, 130};
    static const int blocks[3] = {16, 32, 64}, sqs[3] = {1, 2, 5};
    kp_stream *s;
    CHECK_OK(kp_stream_create(dev, &s));
    int n = 0;
    for (int bi = 0; bi < 3; bi++)
        for (int qi = 0; qi < 3; qi++)
            for (int hh = 0; hh < 5; hh++, n++) {
                const int *hd = head_dims[n % 4];
                conf_paged_case c = {.dt = dt, .b = 4, .s_q = sqs[qi], .h_q = heads[hh][0], .h_kv = heads[hh][1],
                    .d = hd[0], .dv = hd[1], .block_size = blocks[bi], .seq_lens = lens, .causal = (n / 2) % 2 == 0,
                    .lse = n % 3 != 0};
                conf_run_paged(dev, s, &c);
            }
    CHECK_OK(kp_stream_destroy(s));
}

KP_CONFORMANCE(conf_attn_decode_grid_f32) { decode_grid(d, KP_F32); }
KP_CONFORMANCE(conf_attn_decode_grid_f16) { decode_grid(d, KP_F16); }
KP_CONFORMANCE(conf_attn_decode_grid_bf16) { decode_grid(d, KP_BF16); }

/* Forced split-KV (1, 3, 8, and more splits than blocks) equals the unsplit result. */
KP_CONFORMANCE(conf_attn_decode_splits) {
    static const int32_t splits[5] = {1, 3, 8, 0, 64};
    static const int32_t l1[2] = {1000, 333}, l2[3] = {517, 64, 20};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    conf_paged_case a = {.dt = KP_F16, .b = 2, .s_q = 2, .h_q = 8, .h_kv = 2, .d = 128, .dv = 128, .block_size = 16,
        .seq_lens = l1, .causal = 1, .lse = 1, .splits = splits, .nsplits = 5};
    conf_run_paged(d, s, &a);
    conf_paged_case b = {.dt = KP_BF16, .b = 3, .s_q = 1, .h_q = 16, .h_kv = 1, .d = 256, .dv = 256,
        .block_size = 64, .seq_lens = l2, .causal = 0, .lse = 1, .splits = splits, .nsplits = 5};
    conf_run_paged(d, s, &b);
    conf_paged_case c = {.dt = KP_F32, .b = 3, .s_q = 3, .h_q = 4, .h_kv = 4, .d = 192, .dv = 128, .block_size = 32,
        .seq_lens = l2, .causal = 1, .lse = 1, .scale = 0.2, .splits = splits, .nsplits = 5};
    conf_run_paged(d, s, &c);
    CHECK_OK(kp_stream_destroy(s));
}

/* One long sequence on one KV head: the automatic choice splits it. */
KP_CONFORMANCE(conf_attn_decode_long) {
    static const int32_t l[1] = {3000};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    conf_paged_case a = {.dt = KP_BF16, .b = 1, .s_q = 1, .h_q = 4, .h_kv = 1, .d = 128, .dv = 128, .block_size = 64,
        .seq_lens = l, .causal = 1, .lse = 1};
    conf_run_paged(d, s, &a);
    CHECK_OK(kp_stream_destroy(s));
}

/* Outlier key channels (logits about +-30) through paged decode, split and unsplit. */
KP_CONFORMANCE(conf_attn_decode_outliers) {
    static const int32_t splits[3] = {1, 5, 0};
    static const int32_t lens[3] = {700, 1, 129};
    const kp_dtype dts[3] = {KP_F32, KP_F16, KP_BF16};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (int t = 0; t < 3; t++) {
        const int *hd = head_dims[t + 1];
        conf_paged_case c = {.dt = dts[t], .b = 3, .s_q = 1 + t % 2, .h_q = 8, .h_kv = 2, .d = hd[0], .dv = hd[1],
            .block_size = 16 << t, .seq_lens = lens, .causal = 1, .lse = 1, .splits = splits, .nsplits = 3,
            .outliers = 1};
        conf_run_paged(d, s, &c);
    }
    CHECK_OK(kp_stream_destroy(s));
}

/* Sliding-window decode: windows of 1, 16 and 100 keys before each query's position
 * (so splits and blocks lie wholly outside a window), -1 as unbounded, s_q 1 and 5,
 * causal and not, block sizes 16 and 64, forced and automatic split-KV. */
KP_CONFORMANCE(conf_attn_decode_window) {
    static const int32_t splits[3] = {1, 3, 0};
    static const int32_t lens[4] = {0, 1, 77, 300};
    static const int windows[4] = {1, 16, 100, -1};
    const kp_dtype dts[3] = {KP_F32, KP_F16, KP_BF16};
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    int n = 0;
    for (int w = 0; w < 4; w++)
        for (int qi = 0; qi < 2; qi++)
            for (int causal = 0; causal < 2; causal++, n++) {
                const int *hd = head_dims[n % 4];
                conf_paged_case c = {.dt = dts[n % 3], .b = 4, .s_q = qi ? 5 : 1, .h_q = heads[n % 5][0],
                    .h_kv = heads[n % 5][1], .d = hd[0], .dv = hd[1], .block_size = n % 2 ? 64 : 16,
                    .seq_lens = lens, .causal = causal, .lse = 1, .splits = splits, .nsplits = n % 4 ? 1 : 3,
                    .window_left = windows[w]};
                conf_run_paged(d, s, &c);
            }
    CHECK_OK(kp_stream_destroy(s));
}

/* Generation-2 paged decode (attention_decode_gen2.cl) on the GPU backends whatever the
 * run's KPORT_GPU_KERNELS (PoCL runs it through the portable copies and fragments): GQA
 * ratios 1-16 packed into one, two and four 16-row groups (s_q 1, 2, 5), block sizes 16
 * and 64, contexts shorter than one 64-key tile, on and next to tile and block bounds,
 * split-KV off, forced and automatic. The CPU backend ignores the variable. */
KP_CONFORMANCE(conf_attn_decode_gen2) {
    setenv("KPORT_GPU_KERNELS", "attention_decode=gen2", 1);
    static const int32_t lens[7] = {1, 63, 64, 65, 200, 0, 1000};
    static const int32_t splits[3] = {1, 3, 0};
    static const struct {
        kp_dtype dt;
        int h_q, h_kv, d, dv, s_q, bs, causal, lse;
    } cases[] = {
        {KP_BF16, 32, 8, 128, 128, 1, 16, 1, 1}, /* G4: 4 rows */
        {KP_F16, 16, 2, 64, 64, 2, 64, 1, 1},    /* G8 x 2: 16 rows */
        {KP_BF16, 16, 1, 192, 128, 2, 16, 1, 1}, /* G16 x 2: 32 rows, two row groups */
        {KP_F16, 8, 2, 256, 256, 1, 64, 0, 0},   /* non-causal, no lse */
        {KP_BF16, 8, 1, 128, 128, 5, 16, 1, 1},  /* G8 x 5: 40 rows, four row groups */
        {KP_F16, 4, 4, 128, 128, 2, 64, 1, 1},   /* MHA */
        {KP_BF16, 20, 2, 64, 64, 2, 16, 1, 1},   /* G10 x 2: 20 rows, the second group partly padding */
    };
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        conf_paged_case c = {.dt = cases[i].dt, .b = 7, .s_q = cases[i].s_q, .h_q = cases[i].h_q,
            .h_kv = cases[i].h_kv, .d = cases[i].d, .dv = cases[i].dv, .block_size = cases[i].bs, .seq_lens = lens,
            .causal = cases[i].causal, .lse = cases[i].lse, .splits = splits, .nsplits = i % 2 ? 2 : 3};
        conf_run_paged(d, s, &c);
    }
    CHECK_OK(kp_stream_destroy(s));
    unsetenv("KPORT_GPU_KERNELS");
}

/* conf_attn_decode_gen2's cases with the AMD wave-tile layout emulated on PoCL
 * (-DKP_WT_EMULATE_MFMA16: 64-lane waves of 32 rows, so a 16-row tile leaves a wave's
 * second m-block as zero rows, and the key groups are waves of two 32-lane units): GQA
 * ratios in one, two and four row groups, s_q > 1 causal, split-KV off, forced and
 * automatic, partial key tiles, shuffled (scattered) cache blocks. */
KP_TEST(conf_attn_decode_gen2_mfma16_layout__opencl) {
    kp_conf_run_mfma16_layout("attention_decode=gen2", conf_attn_decode_gen2_on);
}

/* window_left below -1 is refused by the core, nothing written. */
KP_CONFORMANCE(conf_attn_decode_bad_window) {
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    int64_t sq[4] = {1, 1, 4, 64}, sc[4] = {2, 16, 2, 64}, st[2] = {1, 2}, sb[1] = {1};
    const double table[2] = {1, 0}, lens[1] = {20};
    kp_conf_tensor q = kp_conf_random(d, "q", KP_F16, 4, sq, -1.0, 1.0);
    kp_conf_tensor k = kp_conf_random(d, "k_cache", KP_F16, 4, sc, -1.0, 1.0);
    kp_conf_tensor v = kp_conf_random(d, "v_cache", KP_F16, 4, sc, -1.0, 1.0);
    kp_conf_tensor bt = kp_conf_from(d, "block_table", KP_I32, 2, st, table);
    kp_conf_tensor sl_t = kp_conf_from(d, "seq_lens", KP_I32, 1, sb, lens);
    kp_conf_tensor out = kp_conf_output(d, "out", KP_F16, 4, sq);
    kp_attention_decode_params p;
    memset(&p, 0, sizeof p);
    p.q = q.t, p.k_cache = k.t, p.v_cache = v.t, p.block_table = bt.t, p.seq_lens = sl_t.t, p.out = out.t;
    p.softmax_scale = 0.125f, p.causal = 1, p.window_left = -2;
    unsigned char *so = kp_test_snapshot(out.g.buf);
    CHECK_ERR(kp_attention_decode(s, &p), KP_ERR_INVALID_ARGUMENT, "window_left");
    CHECK_ERR(kp_op_supported(d, KP_OP_ATTENTION_DECODE, &p), KP_ERR_INVALID_ARGUMENT, "window_left");
    CHECK_OK(kp_stream_sync(s));
    kp_test_unchanged(out.g.buf, so);
    kp_conf_free(&q), kp_conf_free(&k), kp_conf_free(&v), kp_conf_free(&bt), kp_conf_free(&sl_t), kp_conf_free(&out);
    CHECK_OK(kp_stream_destroy(s));
}

/* ------------------------------------------------------------------------ */
/* Bad index content: an error naming the argument and index, nothing written */
/* ------------------------------------------------------------------------ */

static void prefill_bad_cu(kp_device *dev, const double *cuq, const double *cuk, int max_q, const char *needle) {
    kp_stream *s;
    CHECK_OK(kp_stream_create(dev, &s));
    int64_t sq[3] = {8, 2, 64}, sk[3] = {8, 1, 64}, scu[1] = {3}, sl[2] = {2, 8};
    kp_conf_tensor q = kp_conf_random(dev, "q", KP_F16, 3, sq, -1.0, 1.0);
    kp_conf_tensor k = kp_conf_random(dev, "k", KP_F16, 3, sk, -1.0, 1.0);
    kp_conf_tensor v = kp_conf_random(dev, "v", KP_F16, 3, sk, -1.0, 1.0);
    kp_conf_tensor cq = kp_conf_from(dev, "cu_seqlens_q", KP_I32, 1, scu, cuq);
    kp_conf_tensor ck = kp_conf_from(dev, "cu_seqlens_k", KP_I32, 1, scu, cuk);
    kp_conf_tensor out = kp_conf_output(dev, "out", KP_F16, 3, sq);
    kp_conf_tensor lse = kp_conf_output(dev, "lse", KP_F32, 2, sl);
    kp_attention_prefill_params p;
    memset(&p, 0, sizeof p);
    p.q = q.t, p.k = k.t, p.v = v.t, p.out = out.t, p.lse = lse.t, p.cu_seqlens_q = cq.t, p.cu_seqlens_k = ck.t;
    p.max_seqlen_q = max_q, p.max_seqlen_k = 8, p.softmax_scale = 0.125f, p.causal = 1;
    p.window_left = p.window_right = -1;
    kp_test_require_op(dev, KP_OP_ATTENTION_PREFILL, &p);
    unsigned char *so = kp_test_snapshot(out.g.buf), *sls = kp_test_snapshot(lse.g.buf);
    int checked = kp_test_bad_index_result(dev, kp_attention_prefill(s, &p), needle);
    CHECK_OK(kp_stream_sync(s));
    if (checked) {
        kp_test_unchanged(out.g.buf, so);
        kp_test_unchanged(lse.g.buf, sls);
    } else { /* a backend without KP_CAP_CHECKS_INDICES: only memory safety */
        free(so), free(sls);
        kp_guarded_check(&out.g, "out");
        kp_guarded_check(&lse.g, "lse");
    }
    kp_conf_free(&q), kp_conf_free(&k), kp_conf_free(&v), kp_conf_free(&cq), kp_conf_free(&ck);
    kp_conf_free(&out), kp_conf_free(&lse);
    CHECK_OK(kp_stream_destroy(s));
}

KP_CONFORMANCE(conf_attn_prefill_bad_cu_seqlens) {
    const double ok[3] = {0, 3, 8}, decreasing[3] = {0, 5, 3}, not_zero[3] = {1, 3, 8}, past[3] = {0, 3, 9};
    prefill_bad_cu(d, decreasing, ok, 8, "cu_seqlens_q[2]");
    prefill_bad_cu(d, ok, not_zero, 8, "cu_seqlens_k[0]");
    prefill_bad_cu(d, ok, past, 8, "cu_seqlens_k[2]");
    prefill_bad_cu(d, ok, ok, 4, "max_seqlen");
}

/* table [2, 3] with block_size 16 and 6 blocks; one rule broken per call. */
static void decode_bad(kp_device *dev, const double *table, const double *lens, const char *needle) {
    kp_stream *s;
    CHECK_OK(kp_stream_create(dev, &s));
    int64_t sq[4] = {2, 1, 4, 64}, sc[4] = {6, 16, 2, 64}, st[2] = {2, 3}, sb[1] = {2}, sl[3] = {2, 4, 1};
    kp_conf_tensor q = kp_conf_random(dev, "q", KP_BF16, 4, sq, -1.0, 1.0);
    kp_conf_tensor k = kp_conf_random(dev, "k_cache", KP_BF16, 4, sc, -1.0, 1.0);
    kp_conf_tensor v = kp_conf_random(dev, "v_cache", KP_BF16, 4, sc, -1.0, 1.0);
    kp_conf_tensor bt = kp_conf_from(dev, "block_table", KP_I32, 2, st, table);
    kp_conf_tensor sl_t = kp_conf_from(dev, "seq_lens", KP_I32, 1, sb, lens);
    kp_conf_tensor out = kp_conf_output(dev, "out", KP_BF16, 4, sq);
    kp_conf_tensor lse = kp_conf_output(dev, "lse", KP_F32, 3, sl);
    kp_attention_decode_params p;
    memset(&p, 0, sizeof p);
    p.q = q.t, p.k_cache = k.t, p.v_cache = v.t, p.block_table = bt.t, p.seq_lens = sl_t.t, p.out = out.t;
    p.lse = lse.t, p.softmax_scale = 0.125f, p.causal = 1;
    kp_test_require_op(dev, KP_OP_ATTENTION_DECODE, &p);
    unsigned char *so = kp_test_snapshot(out.g.buf), *sls = kp_test_snapshot(lse.g.buf);
    int checked = kp_test_bad_index_result(dev, kp_attention_decode(s, &p), needle);
    CHECK_OK(kp_stream_sync(s));
    if (checked) {
        kp_test_unchanged(out.g.buf, so);
        kp_test_unchanged(lse.g.buf, sls);
    } else {
        free(so), free(sls);
        kp_guarded_check(&out.g, "out");
        kp_guarded_check(&lse.g, "lse");
    }
    kp_conf_free(&q), kp_conf_free(&k), kp_conf_free(&v), kp_conf_free(&bt), kp_conf_free(&sl_t);
    kp_conf_free(&out), kp_conf_free(&lse);
    CHECK_OK(kp_stream_destroy(s));
}

KP_CONFORMANCE(conf_attn_decode_bad_content) {
    const double table_ok[6] = {0, 1, 2, 3, 4, 5}, table_bad[6] = {0, 1, 2, 3, 6, 5};
    const double table_neg[6] = {0, -1, 2, 3, 4, 5};
    const double lens_ok[2] = {48, 20}, lens_big[2] = {48, 49}, lens_neg[2] = {-1, 20};
    decode_bad(d, table_bad, lens_ok, "block_table[1, 1]");
    decode_bad(d, table_neg, lens_ok, "block_table[0, 1]");
    decode_bad(d, table_ok, lens_big, "seq_lens[1]");
    decode_bad(d, table_ok, lens_neg, "seq_lens[0]");
}
