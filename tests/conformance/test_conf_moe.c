/*
 * tests/conformance/test_conf_moe.c — the MoE ops on every backend against the
 * float64 references of tests/ref/ref_moe.c (DESIGN §5): gate (DeepSeek-V3 groups,
 * ties, negative biased scores, V2 without bias, Mixtral top-k), align, grouped GEMM
 * (f32/f16/bf16 and FP8 e4m3 with block scales), combine, and the fused layer.
 */
#include "kp_conformance.h"
#include "ref_moe.h"

#include <math.h>

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})

static const kp_moe_routing v3_routing = {8, 8, 4, KP_MOE_SCORING_SIGMOID, 1, 2.5f};

static kp_stream *new_stream(kp_device *d) {
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    return s;
}

static kp_conf_tensor ints(kp_device *d, const char *name, int ndim, const int64_t *shape, const double *v) {
    return kp_conf_from(d, name, KP_I32, ndim, shape, v);
}

/* ---- gate ---- */

/* Runs the gate on the given logits (host values, rounded to dt) and checks ids
 * exactly and weights to f32 tolerance against the reference. */
static void gate_case(kp_device *d, kp_stream *s, int64_t t, int64_t e, kp_dtype dt, const double *logits,
                      const double *bias, kp_moe_routing r, const double *want_ids) {
    int64_t k = r.topk;
    kp_conf_tensor lg = kp_conf_from(d, "logits", dt, 2, SHAPE(t, e), logits);
    kp_conf_tensor bs;
    memset(&bs, 0, sizeof bs);
    if (bias) bs = kp_conf_from(d, "bias", KP_F32, 1, SHAPE(e), bias);
    kp_conf_tensor ids = kp_conf_output(d, "topk_ids", KP_I32, 2, SHAPE(t, k));
    kp_conf_tensor w = kp_conf_output(d, "topk_weights", KP_F32, 2, SHAPE(t, k));
    kp_moe_gate_params p = {.logits = lg.t, .topk_ids = ids.t, .topk_weights = w.t, .routing = r};
    if (bias) p.bias = bs.t;
    kp_test_require_op(d, KP_OP_MOE_GATE, &p);
    CHECK_OK(kp_moe_gate(s, &p));
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&ids);
    kp_conf_download(&w);
    double *rid = malloc((size_t)(t * k) * sizeof *rid), *rw = malloc((size_t)(t * k) * sizeof *rw);
    double *rw_err = malloc((size_t)(t * k) * sizeof *rw_err);
    ref_moe_gate(lg.host, t, e, bias ? bs.host : NULL, &r, rid, rw, rw_err);
    kp_conf_check_ints("topk_ids", ids.host, rid, t * k);
    if (want_ids) kp_conf_check_ints("topk_ids (expected by hand)", ids.host, want_ids, t * k);
    kp_conf_expect("topk_weights", &w, rw, rw_err, "token,slot");
    free(rid);
    free(rw);
    free(rw_err);
    kp_conf_free(&lg);
    if (bias) kp_conf_free(&bs);
    kp_conf_free(&ids);
    kp_conf_free(&w);
}

static double *rand_values(int64_t n, double lo, double hi) {
    double *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = kp_test_rand_uniform(lo, hi);
    return v;
}

KP_CONFORMANCE(conf_moe_gate_deepseek_v3) {
    kp_stream *s = new_stream(d);
    const int64_t ts[] = {1, 7, 64};
    double *bias = rand_values(256, -0.05, 0.05);
    for (int i = 0; i < 3; i++) {
        double *lg = rand_values(ts[i] * 256, -4.0, 4.0);
        gate_case(d, s, ts[i], 256, KP_F32, lg, bias, v3_routing, NULL);
        free(lg);
    }
    double *lg = rand_values(7 * 256, -4.0, 4.0);
    gate_case(d, s, 7, 256, KP_BF16, lg, bias, v3_routing, NULL);
    gate_case(d, s, 7, 256, KP_F16, lg, bias, v3_routing, NULL);
    free(lg);
    free(bias);
    kp_stream_destroy(s);
}

/* Equal logits: lower expert index wins; equal group scores: lower group wins. */
KP_CONFORMANCE(conf_moe_gate_ties) {
    kp_stream *s = new_stream(d);
    kp_moe_routing r = {4, 4, 2, KP_MOE_SCORING_SIGMOID, 1, 1.0f};
    double lg[3 * 16], bias[16];
    for (int i = 0; i < 16; i++) bias[i] = 0.0;
    for (int i = 0; i < 16; i++) lg[i] = 0.5;                    /* token 0: all equal */
    for (int i = 0; i < 16; i++) lg[16 + i] = i < 4 ? -1.0 : 1.0; /* token 1: groups 1-3 tie */
    for (int i = 0; i < 16; i++) lg[32 + i] = (i % 4 == 3) ? 2.0 : 0.0; /* token 2: last of each group; groups 0, 1 kept */
    const double want[12] = {0, 1, 2, 3, 4, 5, 6, 7, 3, 7, 0, 1};
    gate_case(d, s, 3, 16, KP_F32, lg, bias, r, want);
    /* the same without a bias (V2 group score: the best in each group) */
    gate_case(d, s, 3, 16, KP_F32, lg, NULL, r, want);
    kp_stream_destroy(s);
}

/* Biases that make every biased score negative: masked groups must lose (-inf). */
KP_CONFORMANCE(conf_moe_gate_negative_biased_scores) {
    kp_stream *s = new_stream(d);
    kp_moe_routing r = {6, 8, 2, KP_MOE_SCORING_SIGMOID, 1, 2.5f};
    double *bias = rand_values(64, -3.0, -1.5), *lg = rand_values(9 * 64, -4.0, 4.0);
    gate_case(d, s, 9, 64, KP_F32, lg, bias, r, NULL);
    free(bias);
    free(lg);
    kp_stream_destroy(s);
}

KP_CONFORMANCE(conf_moe_gate_v2_no_bias) {
    kp_stream *s = new_stream(d);
    kp_moe_routing r = {6, 8, 3, KP_MOE_SCORING_SOFTMAX, 0, 16.0f};
    double *lg = rand_values(13 * 160, -3.0, 3.0);
    gate_case(d, s, 13, 160, KP_F32, lg, NULL, r, NULL);
    r.renormalize = 1;
    r.scoring = KP_MOE_SCORING_SIGMOID;
    gate_case(d, s, 13, 160, KP_BF16, lg, NULL, r, NULL);
    free(lg);
    kp_stream_destroy(s);
}

KP_CONFORMANCE(conf_moe_gate_mixtral_topk) {
    kp_stream *s = new_stream(d);
    double *lg = rand_values(33 * 8, -3.0, 3.0);
    const kp_dtype dts[] = {KP_F32, KP_BF16, KP_F16};
    for (int renorm = 0; renorm <= 1; renorm++)
        for (int i = 0; i < 3; i++) {
            kp_moe_routing r = {2, 1, 1, KP_MOE_SCORING_SOFTMAX, renorm, 1.0f};
            gate_case(d, s, 33, 8, dts[i], lg, NULL, r, NULL);
        }
    free(lg);
    kp_stream_destroy(s);
}

KP_CONFORMANCE(conf_moe_gate_512_experts_top32) {
    kp_stream *s = new_stream(d);
    kp_moe_routing r = {32, 16, 8, KP_MOE_SCORING_SIGMOID, 1, 1.5f};
    double *lg = rand_values(5 * 512, -4.0, 4.0), *bias = rand_values(512, -0.1, 0.1);
    gate_case(d, s, 5, 512, KP_F32, lg, bias, r, NULL);
    r = (kp_moe_routing){32, 1, 1, KP_MOE_SCORING_SOFTMAX, 1, 1.0f};
    gate_case(d, s, 5, 512, KP_F32, lg, NULL, r, NULL);
    free(lg);
    free(bias);
    kp_stream_destroy(s);
}

/* Logits spanning +-30 (DESIGN §5's outliers): sigmoid scores saturate to the same f32
 * (1.0) past about 17, and those experts tie - the lower index wins, as with scores
 * computed in f32 by DeepSeek's model.py; softmax weights span e^-60. The other logits
 * lie on a 0.25 grid up to 12, where f32 scores stay many ulps apart, so that no
 * selection hangs on an implementation's last-ulp rounding. */
KP_CONFORMANCE(conf_moe_gate_large_logits) {
    kp_stream *s = new_stream(d);
    const int64_t t = 16, e = 256;
    double *lg = malloc((size_t)(t * e) * sizeof *lg), zero_bias[256] = {0};
    for (int64_t i = 0; i < t * e; i++) lg[i] = -30.0 + 0.25 * (double)(kp_test_rand_u64() % 169);
    for (int64_t tok = 0; tok < t; tok++)
        for (int hot = 0; hot < 5; hot++) /* saturated: 20, 25 or 30, all the same f32 score */
            lg[tok * e + (int64_t)(kp_test_rand_u64() % (uint64_t)e)] = 20.0 + 5.0 * (double)(hot % 3);
    gate_case(d, s, t, e, KP_F32, lg, zero_bias, v3_routing, NULL);
    gate_case(d, s, t, e, KP_BF16, lg, NULL, v3_routing, NULL);
    kp_moe_routing soft = {8, 1, 1, KP_MOE_SCORING_SOFTMAX, 1, 1.0f};
    gate_case(d, s, t, e, KP_F32, lg, NULL, soft, NULL);
    soft.renormalize = 0;
    gate_case(d, s, t, e, KP_F16, lg, NULL, soft, NULL);
    free(lg);
    kp_stream_destroy(s);
}

/* ---- align ---- */

static void align_case(kp_device *d, kp_stream *s, int64_t t, int64_t k, int32_t experts, int32_t block,
                       const double *ids_v) {
    int64_t pairs = t * k, len = pairs + (int64_t)experts * (block - 1);
    kp_conf_tensor ids = ints(d, "topk_ids", 2, SHAPE(t, k), ids_v);
    kp_conf_tensor sorted = kp_conf_output(d, "sorted_ids", KP_I32, 1, SHAPE(len));
    kp_conf_tensor off = kp_conf_output(d, "expert_offsets", KP_I32, 1, SHAPE(experts + 1));
    kp_conf_tensor pos = kp_conf_output(d, "token_pos", KP_I32, 2, SHAPE(t, k));
    kp_moe_align_params p = {ids.t, sorted.t, off.t, pos.t, experts, block};
    kp_test_require_op(d, KP_OP_MOE_ALIGN, &p);
    CHECK_OK(kp_moe_align(s, &p));
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&sorted);
    kp_conf_download(&off);
    kp_conf_download(&pos);
    double *rs = malloc((size_t)len * sizeof *rs), *ro = malloc((size_t)(experts + 1) * sizeof *ro);
    double *rp = malloc((size_t)pairs * sizeof *rp);
    ref_moe_align(ids.host, pairs, experts, block, rs, len, ro, rp);
    kp_conf_check_ints("expert_offsets", off.host, ro, experts + 1);
    kp_conf_check_ints("sorted_ids", sorted.host, rs, len);
    kp_conf_check_ints("token_pos", pos.host, rp, pairs);
    free(rs);
    free(ro);
    free(rp);
    kp_conf_free(&ids);
    kp_conf_free(&sorted);
    kp_conf_free(&off);
    kp_conf_free(&pos);
}

KP_CONFORMANCE(conf_moe_align) {
    kp_stream *s = new_stream(d);
    const int32_t blocks[] = {1, 16, 64};
    double *ids = malloc(200 * 8 * sizeof *ids);
    for (int b = 0; b < 3; b++) {
        /* random experts, with experts 3 and 9 never chosen (empty) */
        for (int i = 0; i < 37 * 4; i++) {
            int e;
            do e = (int)(kp_test_rand_u64() % 16); while (e == 3 || e == 9);
            ids[i] = e;
        }
        align_case(d, s, 37, 4, 16, blocks[b], ids);
        /* every pair on one expert */
        for (int i = 0; i < 50 * 8; i++) ids[i] = 5;
        align_case(d, s, 50, 8, 16, blocks[b], ids);
        /* T = 1 */
        ids[0] = 15, ids[1] = 0, ids[2] = 7;
        align_case(d, s, 1, 3, 16, blocks[b], ids);
    }
    /* V3 shape: 256 experts, k = 8 */
    for (int i = 0; i < 200 * 8; i++) ids[i] = (double)(kp_test_rand_u64() % 256);
    align_case(d, s, 200, 8, 256, 16, ids);
    free(ids);
    kp_stream_destroy(s);
}

/* ids for align: uniform over [0, experts) but experts [gap0, gap1) never chosen (empty) */
static void align_ids(double *ids, int64_t n, int32_t experts, int32_t gap0, int32_t gap1) {
    for (int64_t i = 0; i < n; i++) {
        int32_t e;
        do e = (int32_t)(kp_test_rand_u64() % (uint64_t)experts); while (e >= gap0 && e < gap1);
        ids[i] = e;
    }
}

/* The device's scan of the expert counts gives each of its 256 work-items a contiguous
 * run of ceil(E / 256) experts, summed, scanned on one work-item, then written back per
 * run: E past 256 gives every work-item several experts (E = 4096: 16 each; E = 300 and
 * 257: runs of 2 with the last work-items idle), and more than 4096 pairs several chunks
 * (the per-chunk histograms). Each case ends on a pair count no work-group divides. */
KP_CONFORMANCE(conf_moe_align_many_experts) {
    kp_stream *s = new_stream(d);
    double *ids = malloc(2049 * 8 * sizeof *ids);
    /* E = 4096, 8800 pairs (two chunks), experts 1000..1199 empty */
    align_ids(ids, 1100 * 8, 4096, 1000, 1200);
    align_case(d, s, 1100, 8, 4096, 16, ids);
    /* E = 300 (not a multiple of the work-group), 8248 pairs, experts 0..9 empty */
    align_ids(ids, 1031 * 8, 300, 0, 10);
    align_case(d, s, 1031, 8, 300, 64, ids);
    /* every pair on the last expert: the last work-item's run holds all the rows */
    for (int i = 0; i < 37 * 8; i++) ids[i] = 4095;
    align_case(d, s, 37, 8, 4096, 1, ids); /* sorted_ids (296 rows) shorter than E */
    align_case(d, s, 37, 8, 4096, 64, ids);
    for (int i = 0; i < 513 * 8; i++) ids[i] = 256;
    align_case(d, s, 513, 8, 257, 16, ids);
    /* every pair on expert 0 over four chunks: every other prefix and offset the same */
    for (int i = 0; i < 2049 * 8; i++) ids[i] = 0;
    align_case(d, s, 2049, 8, 512, 16, ids);
    free(ids);
    kp_stream_destroy(s);
}

KP_CONFORMANCE(conf_moe_align_bad_expert_id) {
    kp_stream *s = new_stream(d);
    const double bad[2][6] = {{0, 1, 2, 3, 8, 1}, {0, -1, 2, 3, 4, 5}};
    for (int c = 0; c < 2; c++) {
        kp_conf_tensor ids = ints(d, "topk_ids", 2, SHAPE(3, 2), bad[c]);
        kp_conf_tensor sorted = kp_conf_output(d, "sorted_ids", KP_I32, 1, SHAPE(6 + 8 * 3));
        kp_conf_tensor off = kp_conf_output(d, "expert_offsets", KP_I32, 1, SHAPE(9));
        kp_conf_tensor pos = kp_conf_output(d, "token_pos", KP_I32, 2, SHAPE(3, 2));
        kp_moe_align_params p = {ids.t, sorted.t, off.t, pos.t, 8, 4};
        kp_test_require_op(d, KP_OP_MOE_ALIGN, &p);
        unsigned char *s1 = kp_test_snapshot(sorted.g.buf), *s2 = kp_test_snapshot(off.g.buf);
        unsigned char *s3 = kp_test_snapshot(pos.g.buf);
        if (kp_test_bad_index_result(d, kp_moe_align(s, &p), "topk_ids")) {
            CHECK_OK(kp_stream_sync(s));
            kp_test_unchanged(sorted.g.buf, s1);
            kp_test_unchanged(off.g.buf, s2);
            kp_test_unchanged(pos.g.buf, s3);
        } else { /* unspecified values, but nothing outside the outputs touched */
            CHECK_OK(kp_stream_sync(s));
            free(s1), free(s2), free(s3);
            kp_guarded_check(&sorted.g, "sorted_ids");
            kp_guarded_check(&off.g, "expert_offsets");
            kp_guarded_check(&pos.g, "token_pos");
        }
        kp_conf_free(&ids);
        kp_conf_free(&sorted);
        kp_conf_free(&off);
        kp_conf_free(&pos);
    }
    kp_stream_destroy(s);
}

/* ---- grouped GEMM ---- */

/* FP8 e4m3 weights: random finite bytes, uploaded raw; host holds the decoded values. */
typedef struct fp8_tensor {
    kp_guarded g;
    kp_tensor t;
    double *host;
} fp8_tensor;

static fp8_tensor fp8_random(kp_device *d, int64_t e, int64_t n, int64_t k) {
    fp8_tensor f;
    int64_t numel = e * n * k;
    unsigned char *bytes = malloc((size_t)numel);
    f.host = malloc((size_t)numel * sizeof *f.host);
    for (int64_t i = 0; i < numel; i++) {
        unsigned char b;
        do b = (unsigned char)(kp_test_rand_u64() & 0xbf); while ((b & 0x7f) == 0x7f); /* |x| < 2: no NaN */
        bytes[i] = b;
        f.host[i] = ref_fp8_e4m3(b);
    }
    f.g = kp_guarded_alloc(d, (size_t)numel);
    kp_guarded_write(&f.g, bytes, (size_t)numel);
    CHECK_OK(kp_tensor_init(&f.t, f.g.buf, f.g.offset, KP_FP8_E4M3, 3, SHAPE(e, n, k), NULL));
    free(bytes);
    return f;
}

static void fp8_free(fp8_tensor *f) {
    kp_guarded_free(&f->g);
    free(f->host);
}

/* Dequantised weights: fp8 * scale[e, n/128, k/128]. */
static double *dequant(const double *w, const double *scale, int64_t e, int64_t n, int64_t k) {
    int64_t nb = (n + 127) / 128, kb = k / 128;
    double *v = malloc((size_t)(e * n * k) * sizeof *v);
    for (int64_t x = 0; x < e; x++)
        for (int64_t j = 0; j < n; j++)
            for (int64_t l = 0; l < k; l++)
                v[(x * n + j) * k + l] = w[(x * n + j) * k + l] * scale[(x * nb + j / 128) * kb + l / 128];
    return v;
}

/* One grouped-GEMM case: a [m, k] x w [e, n, k] over the row ranges `offsets`. */
typedef struct gemm_spec {
    kp_dtype dt;
    int fp8;                 /* e4m3 weights with f32 block scales */
    int64_t m, k, e, n;
    const int32_t *offsets;  /* [e + 1] */
    int outliers;            /* a few activation channels x100 */
    int wide_scales;         /* FP8 block scales spread over 2^-10 .. 2^10 */
    int64_t expert_stride;   /* 0: dense w; else experts overlap in one buffer, this many elements apart */
} gemm_spec;

/* Rows outside every expert's range must keep the poison (the reference is NaN there). */
static void gemm_case(kp_device *d, kp_stream *s, const gemm_spec *g) {
    const kp_dtype dt = g->dt;
    const int64_t m = g->m, k = g->k, e = g->e, n = g->n;
    kp_conf_tensor a = g->outliers ? kp_conf_random_outliers(d, "a", dt, 2, SHAPE(m, k), -1.0, 1.0, 4, 100.0)
                                   : kp_conf_random(d, "a", dt, 2, SHAPE(m, k), -1.0, 1.0);
    kp_conf_tensor w, sc;
    fp8_tensor w8;
    memset(&w, 0, sizeof w);
    memset(&sc, 0, sizeof sc);
    double *wv;
    int64_t w_stride = n * k;
    kp_grouped_gemm_params p;
    memset(&p, 0, sizeof p);
    if (g->fp8) {
        w8 = fp8_random(d, e, n, k);
        int64_t nsc = e * ((n + 127) / 128) * (k / 128);
        double *scales = malloc((size_t)nsc * sizeof *scales);
        for (int64_t i = 0; i < nsc; i++)
            scales[i] = g->wide_scales ? ldexp(kp_test_rand_uniform(1.0, 2.0), (int)(kp_test_rand_u64() % 21) - 10)
                                       : kp_test_rand_uniform(0.01, 0.1);
        sc = kp_conf_from(d, "w_scale", KP_F32, 3, SHAPE(e, (n + 127) / 128, k / 128), scales);
        free(scales);
        wv = dequant(w8.host, sc.host, e, n, k);
        p.w = w8.t;
        p.w_scale = sc.t;
    } else if (g->expert_stride) {
        w_stride = g->expert_stride;
        w = kp_conf_random(d, "w", dt, 1, SHAPE((e - 1) * w_stride + n * k), -1.0, 1.0);
        CHECK_OK(kp_tensor_init(&p.w, w.g.buf, w.g.offset, dt, 3, SHAPE(e, n, k), SHAPE(w_stride, k, 1)));
        wv = w.host;
    } else {
        w = kp_conf_random(d, "w", dt, 3, SHAPE(e, n, k), -1.0, 1.0);
        wv = w.host;
        p.w = w.t;
    }
    double *offv = malloc((size_t)(e + 1) * sizeof *offv);
    for (int64_t i = 0; i <= e; i++) offv[i] = g->offsets[i];
    kp_conf_tensor off = ints(d, "expert_offsets", 1, SHAPE(e + 1), offv);
    free(offv);
    kp_conf_tensor out = kp_conf_output(d, "out", dt, 2, SHAPE(m, n));
    p.a = a.t;
    p.expert_offsets = off.t;
    p.out = out.t;
    kp_test_require_op(d, KP_OP_GROUPED_GEMM, &p);
    CHECK_OK(kp_grouped_gemm(s, &p));
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&out);
    double *ref = malloc((size_t)(m * n) * sizeof *ref), *err = calloc((size_t)(m * n), sizeof *err);
    for (int64_t i = 0; i < m * n; i++) ref[i] = NAN; /* the poison, where no expert writes */
    /* FP8 weights (W8A16): a · e4m3 is exact in f32 (an e4m3 value is exact in f16 and
     * bf16, 4 significant bits times a's 8 or 11), and the block scale multiplies each
     * 128-wide K slice's f32 sum once (DeepGEMM's promotion: one f32 rounding a slice,
     * or a backend's w * scale in f32 per element: one f32 rounding a term). Either way
     * the terms carry f32 errors only; never a weight rounded to bf16 or f16. */
    ref_prec terms = g->fp8 ? kp_conf_prec(KP_F32) : kp_conf_prec(dt);
    ref_grouped_gemm(a.host, k, wv, w_stride, e, n, g->offsets, ref, &terms, err);
    char what[160];
    snprintf(what, sizeof what, "grouped_gemm %s%s m %lld k %lld e %lld n %lld%s%s", kp_dtype_name(dt),
             g->fp8 ? " fp8 weights" : "", (long long)m, (long long)k, (long long)e, (long long)n,
             g->outliers ? " outliers" : "", g->wide_scales ? " scales 2^-10..2^10" : "");
    kp_conf_expect(what, &out, ref, err, "row,col");
    free(ref);
    free(err);
    if (g->fp8) {
        free(wv);
        fp8_free(&w8);
        kp_conf_free(&sc);
    } else {
        kp_conf_free(&w);
    }
    kp_conf_free(&a);
    kp_conf_free(&off);
    kp_conf_free(&out);
}

static void gemm_dense(kp_device *d, kp_stream *s, kp_dtype dt, int fp8, int64_t m, int64_t k, int64_t e, int64_t n,
                       const int32_t *offsets) {
    gemm_spec g = {dt, fp8, m, k, e, n, offsets, 0, 0, 0};
    gemm_case(d, s, &g);
}

KP_CONFORMANCE(conf_moe_grouped_gemm) {
    kp_stream *s = new_stream(d);
    const kp_dtype dts[] = {KP_F32, KP_F16, KP_BF16};
    /* 77 rows: 3 before the first expert and 7 after the last stay untouched; expert 2
     * is empty; N and K multiples of no tile */
    const int32_t off[6] = {3, 20, 41, 41, 69, 70};
    for (int i = 0; i < 3; i++) gemm_dense(d, s, dts[i], 0, 77, 300, 5, 100, off);
    /* every row on one expert, rows past one 64-row block, small K */
    const int32_t one[4] = {0, 0, 130, 130};
    for (int i = 0; i < 3; i++) gemm_dense(d, s, dts[i], 0, 130, 40, 3, 70, one);
    /* T = 1 decode-like rows with a long K */
    const int32_t dec[5] = {0, 1, 1, 2, 3};
    for (int i = 0; i < 3; i++) gemm_dense(d, s, dts[i], 0, 3, 1100, 4, 33, dec);
    /* 2, 3, 4 and 5..16 rows per expert (the decode paths) with odd K */
    const int32_t few[6] = {0, 2, 5, 9, 14, 30};
    for (int i = 0; i < 3; i++) gemm_dense(d, s, dts[i], 0, 30, 301, 5, 37, few);
    for (int i = 0; i < 3; i++) gemm_dense(d, s, dts[i], 0, 30, 37, 5, 70, few);
    kp_stream_destroy(s);
}

/* 16-bit, K a multiple of 64, experts contiguous in w: the cases the sm_90a tier takes
 * (generation 3; ci/gpu-check runs this with it forced and turned off). Rows before the
 * first expert and after the last, an empty expert, a one-row expert, experts past one
 * and two 128-row tiles, N past a 128- and a 256-column tile, and K = 1024: 16 K steps, so
 * the stage ring wraps and the mbarrier phases flip several times per tile. */
KP_CONFORMANCE(conf_moe_grouped_gemm_k64) {
    kp_stream *s = new_stream(d);
    const kp_dtype dts[] = {KP_BF16, KP_F16};
    const int32_t off[6] = {3, 140, 141, 141, 290, 295};
    const int32_t one[3] = {0, 0, 260};
    for (int i = 0; i < 2; i++) {
        gemm_dense(d, s, dts[i], 0, 300, 256, 5, 200, off);
        gemm_dense(d, s, dts[i], 0, 260, 1024, 2, 264, one);
    }
    gemm_spec g = {KP_BF16, 0, 300, 128, 5, 136, off, 1, 0, 0}; /* outlier channels */
    gemm_case(d, s, &g);
    kp_stream_destroy(s);
}

/* Activations with outlier channels (x100), on the tiled and the decode paths. */
KP_CONFORMANCE(conf_moe_grouped_gemm_outliers) {
    kp_stream *s = new_stream(d);
    const kp_dtype dts[] = {KP_F32, KP_F16, KP_BF16};
    const int32_t off[6] = {3, 20, 41, 41, 69, 70}, few[6] = {0, 2, 5, 9, 14, 30};
    for (int i = 0; i < 3; i++) {
        gemm_spec g = {dts[i], 0, 77, 300, 5, 100, off, 1, 0, 0};
        gemm_case(d, s, &g);
        gemm_spec h = {dts[i], 0, 30, 301, 5, 37, few, 1, 0, 0};
        gemm_case(d, s, &h);
    }
    kp_stream_destroy(s);
}

/* DeepSeek-V3's expert count and hidden size (E 256, K 7168) with skewed routing: three
 * hot experts past any tile, a tail of small ones, most experts empty, the way a real
 * batch routes. 256 distinct [N, 7168] experts do not fit CI's memory, so they overlap
 * in one buffer, an odd stride apart (every expert still a different matrix). */
KP_CONFORMANCE(conf_moe_grouped_gemm_v3_skewed) {
    kp_stream *s = new_stream(d);
    const int64_t e = 256, k = 7168, n = 160;
    int32_t off[257];
    int64_t rows = 0;
    for (int x = 0; x < e; x++) {
        off[x] = (int32_t)rows;
        if (x == 3) rows += 197;
        else if (x == 128) rows += 130;
        else if (x == 255) rows += 65;
        else if (x % 13 == 5) rows += 1 + (int64_t)(kp_test_rand_u64() % 16);
    }
    off[e] = (int32_t)rows;
    const kp_dtype dts[] = {KP_BF16, KP_F16};
    for (int i = 0; i < 2; i++) {
        gemm_spec g = {dts[i], 0, rows, k, e, n, off, i == 0, 0, 7};
        gemm_case(d, s, &g);
    }
    kp_stream_destroy(s);
}

KP_CONFORMANCE(conf_moe_grouped_gemm_fp8_block_scales) {
    kp_stream *s = new_stream(d);
    const int32_t off[4] = {2, 40, 40, 111};
    gemm_dense(d, s, KP_BF16, 1, 115, 384, 3, 200, off); /* N = 200: a partial 128-row scale block */
    gemm_dense(d, s, KP_F16, 1, 115, 256, 3, 256, off);
    const int32_t dec[3] = {0, 1, 2};
    gemm_dense(d, s, KP_BF16, 1, 2, 640, 2, 130, dec);
    const int32_t few[5] = {0, 3, 7, 9, 25}; /* decode paths with several N scale blocks */
    gemm_dense(d, s, KP_BF16, 1, 25, 384, 4, 300, few);
    gemm_dense(d, s, KP_F16, 1, 25, 256, 4, 130, few);
    /* block scales from 2^-10 to 2^10 and activation outliers: a scale applied to the wrong
     * block, or not at all, cannot hide in the noise */
    gemm_spec g = {KP_BF16, 1, 115, 384, 3, 200, off, 1, 1, 0};
    gemm_case(d, s, &g);
    gemm_spec h = {KP_BF16, 1, 25, 384, 4, 300, few, 0, 1, 0}; /* an f16 out would overflow at 2^10 */
    gemm_case(d, s, &h);
    kp_stream_destroy(s);
}

/* Generation 2's tiled GEMM (kernels/moe/moe_gemm_gen2.cl) with the AMD wave-tile layout
 * (kernels/common/kp_wave_tile.h: 64-lane waves of 32 rows, one column and 8 rows a lane),
 * emulated on PoCL (-DKP_WT_EMULATE_MFMA16): the kernel's code for the native MFMA
 * 16x16x16 layout, all but the instruction. Experts past the decode size (the tiled
 * kernel) beside small ones (the decode kernel), partial row and column tiles, K not a
 * multiple of the tile's 32 (the last K tile zero-filled), e4m3 weights (the block scale
 * per column of the layout), and the fused layer (SwiGLU epilogue, f32 activations). */
static void forward_case(kp_device *d, kp_stream *s, kp_dtype dt, int64_t t, int shared, int fp8);
static void gen2_mfma16_layout_on(kp_device *d) {
    kp_stream *s = new_stream(d);
    const int32_t off[6] = {3, 140, 141, 141, 290, 295}; /* 137, 1, 0, 149, 5 rows */
    gemm_dense(d, s, KP_BF16, 0, 300, 264, 5, 200, off);
    const int32_t two[4] = {0, 45, 45, 130};
    gemm_dense(d, s, KP_F16, 0, 130, 40, 3, 70, two);
    gemm_spec g = {KP_BF16, 0, 300, 136, 5, 136, off, 1, 0, 0}; /* outlier channels */
    gemm_case(d, s, &g);
    const int32_t f8[4] = {2, 40, 40, 111};
    gemm_spec h = {KP_BF16, 1, 115, 384, 3, 200, f8, 1, 1, 0}; /* scales 2^-10..2^10 */
    gemm_case(d, s, &h);
    gemm_dense(d, s, KP_F16, 1, 115, 256, 3, 256, f8);
    forward_case(d, s, KP_BF16, 33, 1, 0);
    kp_stream_destroy(s);
}
KP_TEST(conf_grouped_gemm_gen2_mfma16_layout__opencl) {
    kp_conf_run_mfma16_layout("grouped_gemm=gen2", gen2_mfma16_layout_on);
}

KP_CONFORMANCE(conf_moe_grouped_gemm_bad_offsets) {
    kp_stream *s = new_stream(d);
    const double bad[3][4] = {{0, 5, 3, 8}, {0, 4, 8, 9}, {-1, 2, 4, 8}};
    const char *msg[3] = {"non-decreasing", "expert_offsets[3]", "expert_offsets[0]"};
    kp_conf_tensor a = kp_conf_random(d, "a", KP_BF16, 2, SHAPE(8, 32), -1.0, 1.0);
    kp_conf_tensor w = kp_conf_random(d, "w", KP_BF16, 3, SHAPE(3, 16, 32), -1.0, 1.0);
    kp_conf_tensor out = kp_conf_output(d, "out", KP_BF16, 2, SHAPE(8, 16));
    for (int c = 0; c < 3; c++) {
        kp_conf_tensor off = ints(d, "expert_offsets", 1, SHAPE(4), bad[c]);
        kp_grouped_gemm_params p = {.a = a.t, .w = w.t, .expert_offsets = off.t, .out = out.t};
        kp_test_require_op(d, KP_OP_GROUPED_GEMM, &p);
        unsigned char *snap = kp_test_snapshot(out.g.buf);
        if (kp_test_bad_index_result(d, kp_grouped_gemm(s, &p), msg[c])) {
            CHECK_OK(kp_stream_sync(s));
            kp_test_unchanged(out.g.buf, snap);
        } else {
            CHECK_OK(kp_stream_sync(s));
            free(snap);
            kp_guarded_check(&out.g, "out");
        }
        kp_conf_free(&off);
    }
    kp_conf_free(&a);
    kp_conf_free(&w);
    kp_conf_free(&out);
    kp_stream_destroy(s);
}

/* ---- combine ---- */

KP_CONFORMANCE(conf_moe_combine) {
    kp_stream *s = new_stream(d);
    const kp_dtype dts[] = {KP_F32, KP_BF16, KP_F16};
    for (int k = 1; k <= 8; k++) {
        kp_dtype dt = dts[k % 3];
        int64_t t = 19, hidden = 300, rows = t * k + 5;
        kp_conf_tensor y = kp_conf_random(d, "expert_out", dt, 2, SHAPE(rows, hidden), -2.0, 2.0);
        double *posv = malloc((size_t)(t * k) * sizeof *posv);
        for (int64_t i = 0; i < t * k; i++) posv[i] = (double)(kp_test_rand_u64() % (uint64_t)rows);
        kp_conf_tensor pos = ints(d, "token_pos", 2, SHAPE(t, k), posv);
        kp_conf_tensor w = kp_conf_random(d, "topk_weights", KP_F32, 2, SHAPE(t, k), 0.0, 1.0);
        kp_conf_tensor out = kp_conf_output(d, "out", dt, 2, SHAPE(t, hidden));
        kp_moe_combine_params p = {y.t, pos.t, w.t, out.t};
        kp_test_require_op(d, KP_OP_MOE_COMBINE, &p);
        CHECK_OK(kp_moe_combine(s, &p));
        CHECK_OK(kp_stream_sync(s));
        unsigned char *first = kp_test_snapshot(out.g.buf);
        kp_conf_download(&out);
        double *ref = malloc((size_t)(t * hidden) * sizeof *ref), *err = malloc((size_t)(t * hidden) * sizeof *err);
        ref_moe_combine(y.host, pos.host, w.host, t, k, hidden, ref, err);
        char what[64];
        snprintf(what, sizeof what, "combine %s k %d", kp_dtype_name(dt), k);
        kp_conf_expect(what, &out, ref, err, "token,col");
        free(err);
        /* deterministic: a second run gives the same bits */
        kp_guarded_poison(&out.g, 0xFF);
        CHECK_OK(kp_moe_combine(s, &p));
        CHECK_OK(kp_stream_sync(s));
        kp_test_unchanged(out.g.buf, first);
        free(ref);
        free(posv);
        kp_conf_free(&y);
        kp_conf_free(&pos);
        kp_conf_free(&w);
        kp_conf_free(&out);
    }
    kp_stream_destroy(s);
}

KP_CONFORMANCE(conf_moe_combine_bad_token_pos) {
    kp_stream *s = new_stream(d);
    kp_conf_tensor y = kp_conf_random(d, "expert_out", KP_F32, 2, SHAPE(10, 16), -1.0, 1.0);
    const double posv[4] = {0, 9, 10, 3};
    kp_conf_tensor pos = ints(d, "token_pos", 2, SHAPE(2, 2), posv);
    kp_conf_tensor w = kp_conf_random(d, "topk_weights", KP_F32, 2, SHAPE(2, 2), 0.0, 1.0);
    kp_conf_tensor out = kp_conf_output(d, "out", KP_F32, 2, SHAPE(2, 16));
    kp_moe_combine_params p = {y.t, pos.t, w.t, out.t};
    kp_test_require_op(d, KP_OP_MOE_COMBINE, &p);
    unsigned char *snap = kp_test_snapshot(out.g.buf);
    if (kp_test_bad_index_result(d, kp_moe_combine(s, &p), "token_pos")) {
        CHECK_OK(kp_stream_sync(s));
        kp_test_unchanged(out.g.buf, snap);
    } else {
        CHECK_OK(kp_stream_sync(s));
        free(snap);
        kp_guarded_check(&out.g, "out");
    }
    kp_conf_free(&y);
    kp_conf_free(&pos);
    kp_conf_free(&w);
    kp_conf_free(&out);
    kp_stream_destroy(s);
}

/* ---- the fused layer ---- */

/* The layer's intermediates h and y live in the workspace in the activations' dtype
 * (rounded once each, on store); every GEMM operand is then exact in that dtype, so
 * products are exact up to f32. FP8 weights too: e4m3 values are exact in f16 and bf16,
 * and their block scale multiplies each 128-wide K slice's f32 sum once (or each term
 * in f32): f32 terms, never a weight rounded to 16 bits. */
static ref_mlp_err forward_err_model(kp_dtype dt, double *err2) {
    ref_mlp_err m = {kp_conf_prec(dt), kp_conf_prec(KP_F32), err2};
    return m;
}

/* Small V3-like layer: E 16, n_group 4, topk_group 2, k 4, hidden 256, inter 128,
 * inter_s 64, against gate -> dense SwiGLU per chosen expert -> combine in double. */
static void forward_case(kp_device *d, kp_stream *s, kp_dtype dt, int64_t t, int shared, int fp8) {
    const int64_t e = 16, hidden = 256, inter = 128, inter_s = 64, k = 4;
    kp_moe_routing r = {4, 4, 2, KP_MOE_SCORING_SIGMOID, 1, 2.5f};
    kp_conf_tensor x = kp_conf_random(d, "x", dt, 2, SHAPE(t, hidden), -1.0, 1.0);
    kp_conf_tensor lg = kp_conf_random(d, "router_logits", KP_F32, 2, SHAPE(t, e), -3.0, 3.0);
    kp_conf_tensor bias = kp_conf_random(d, "bias", KP_F32, 1, SHAPE(e), -0.1, 0.1);
    kp_conf_tensor w13, w2, s13, s2, sh13, sh2;
    fp8_tensor w13_8, w2_8;
    double *w13v, *w2v;
    kp_moe_forward_params p;
    memset(&p, 0, sizeof p);
    if (fp8) {
        w13_8 = fp8_random(d, e, 2 * inter, hidden);
        w2_8 = fp8_random(d, e, hidden, inter);
        s13 = kp_conf_random(d, "w13_scale", KP_F32, 3, SHAPE(e, 2, 2), 0.02, 0.08);
        s2 = kp_conf_random(d, "w2_scale", KP_F32, 3, SHAPE(e, 2, 1), 0.02, 0.08);
        w13v = dequant(w13_8.host, s13.host, e, 2 * inter, hidden);
        w2v = dequant(w2_8.host, s2.host, e, hidden, inter);
        p.w13 = w13_8.t, p.w2 = w2_8.t, p.w13_scale = s13.t, p.w2_scale = s2.t;
    } else {
        w13 = kp_conf_random(d, "w13", dt, 3, SHAPE(e, 2 * inter, hidden), -0.15, 0.15);
        w2 = kp_conf_random(d, "w2", dt, 3, SHAPE(e, hidden, inter), -0.15, 0.15);
        w13v = w13.host, w2v = w2.host;
        p.w13 = w13.t, p.w2 = w2.t;
    }
    if (shared) {
        sh13 = kp_conf_random(d, "shared_w13", dt, 2, SHAPE(2 * inter_s, hidden), -0.15, 0.15);
        sh2 = kp_conf_random(d, "shared_w2", dt, 2, SHAPE(hidden, inter_s), -0.15, 0.15);
        p.shared_w13 = sh13.t, p.shared_w2 = sh2.t;
    }
    kp_conf_tensor out = kp_conf_output(d, "out", dt, 2, SHAPE(t, hidden));
    p.x = x.t, p.router_logits = lg.t, p.bias = bias.t, p.out = out.t, p.routing = r;
    size_t ws_bytes = 0;
    CHECK_OK(kp_moe_forward_workspace_size(d, &p, &ws_bytes));
    kp_guarded ws = kp_guarded_alloc(d, ws_bytes);
    kp_guarded_poison(&ws, 0xFF);
    p.workspace = ws.buf, p.workspace_offset = ws.offset;
    kp_test_require_op(d, KP_OP_MOE_FORWARD, &p);
    CHECK_OK(kp_moe_forward(s, &p));
    CHECK_OK(kp_stream_sync(s));
    kp_guarded_check(&ws, "workspace");
    kp_conf_download(&out);

    double *ids = malloc((size_t)(t * k) * sizeof *ids), *wts = malloc((size_t)(t * k) * sizeof *wts);
    double *ref = calloc((size_t)(t * hidden), sizeof *ref), *err2 = calloc((size_t)(t * hidden), sizeof *err2);
    ref_moe_gate(lg.host, t, e, bias.host, &r, ids, wts, NULL);
    ref_mlp_err me = forward_err_model(dt, NULL);
    for (int64_t tok = 0; tok < t; tok++) {
        me.err2 = err2 + tok * hidden;
        for (int64_t slot = 0; slot < k; slot++) {
            int64_t ex = (int64_t)ids[tok * k + slot];
            ref_swiglu_mlp_add(x.host + tok * hidden, w13v + ex * 2 * inter * hidden, w2v + ex * hidden * inter,
                               hidden, inter, wts[tok * k + slot], ref + tok * hidden, &me);
        }
        if (shared) ref_swiglu_mlp_add(x.host + tok * hidden, sh13.host, sh2.host, hidden, inter_s, 1.0,
                                       ref + tok * hidden, &me);
    }
    for (int64_t i = 0; i < t * hidden; i++) err2[i] = sqrt(err2[i]);
    char what[96];
    snprintf(what, sizeof what, "moe_forward %s t %lld%s%s", kp_dtype_name(dt), (long long)t,
             shared ? " shared expert" : "", fp8 ? " fp8 weights" : "");
    kp_conf_expect(what, &out, ref, err2, "token,col");
    free(ids);
    free(wts);
    free(ref);
    free(err2);
    kp_guarded_free(&ws);
    if (fp8) {
        free(w13v);
        free(w2v);
        fp8_free(&w13_8);
        fp8_free(&w2_8);
        kp_conf_free(&s13);
        kp_conf_free(&s2);
    } else {
        kp_conf_free(&w13);
        kp_conf_free(&w2);
    }
    if (shared) {
        kp_conf_free(&sh13);
        kp_conf_free(&sh2);
    }
    kp_conf_free(&x);
    kp_conf_free(&lg);
    kp_conf_free(&bias);
    kp_conf_free(&out);
}

KP_CONFORMANCE(conf_moe_forward) {
    kp_stream *s = new_stream(d);
    const kp_dtype dts[] = {KP_BF16, KP_F32};
    const int64_t ts[] = {1, 33};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            for (int shared = 0; shared <= 1; shared++) forward_case(d, s, dts[i], ts[j], shared, 0);
    forward_case(d, s, KP_F16, 9, 1, 0);
    kp_stream_destroy(s);
}

KP_CONFORMANCE(conf_moe_forward_fp8_weights) {
    kp_stream *s = new_stream(d);
    forward_case(d, s, KP_BF16, 33, 0, 1);
    forward_case(d, s, KP_BF16, 1, 1, 1);
    forward_case(d, s, KP_F16, 5, 0, 1);
    kp_stream_destroy(s);
}

/* DeepSeek-V3's real layer shape (hidden 7168, inter 2048, E 256, k 8, n_group 8,
 * topk_group 4) at T = 3. 256 distinct experts of that size would be 22 GB of bf16, so
 * the experts overlap in one buffer: expert e starts `expert_stride` elements after
 * expert e-1 (an odd stride, so expert bases are not vector aligned). Every expert is
 * still a different matrix, and kernels must honour w's strides rather than assume
 * [E, N, K] is dense. */
KP_CONFORMANCE(conf_moe_forward_deepseek_v3_shape) {
    const int64_t t = 3, e = 256, hidden = 7168, inter = 2048, k = 8, expert_stride = 7;
    const kp_dtype dt = KP_BF16;
    kp_stream *s = new_stream(d);
    int64_t span13 = (e - 1) * expert_stride + 2 * inter * hidden, span2 = (e - 1) * expert_stride + hidden * inter;
    kp_conf_tensor b13 = kp_conf_random(d, "w13", dt, 1, SHAPE(span13), -0.03, 0.03);
    kp_conf_tensor b2 = kp_conf_random(d, "w2", dt, 1, SHAPE(span2), -0.03, 0.03);
    kp_conf_tensor x = kp_conf_random(d, "x", dt, 2, SHAPE(t, hidden), -1.0, 1.0);
    kp_conf_tensor lg = kp_conf_random(d, "router_logits", KP_F32, 2, SHAPE(t, e), -3.0, 3.0);
    kp_conf_tensor bias = kp_conf_random(d, "bias", KP_F32, 1, SHAPE(e), -0.1, 0.1);
    kp_conf_tensor out = kp_conf_output(d, "out", dt, 2, SHAPE(t, hidden));
    kp_moe_forward_params p;
    memset(&p, 0, sizeof p);
    CHECK_OK(kp_tensor_init(&p.w13, b13.g.buf, b13.g.offset, dt, 3, SHAPE(e, 2 * inter, hidden),
                            SHAPE(expert_stride, hidden, 1)));
    CHECK_OK(kp_tensor_init(&p.w2, b2.g.buf, b2.g.offset, dt, 3, SHAPE(e, hidden, inter),
                            SHAPE(expert_stride, inter, 1)));
    p.x = x.t, p.router_logits = lg.t, p.bias = bias.t, p.out = out.t, p.routing = v3_routing;
    size_t ws_bytes = 0;
    CHECK_OK(kp_moe_forward_workspace_size(d, &p, &ws_bytes));
    kp_guarded ws = kp_guarded_alloc(d, ws_bytes);
    kp_guarded_poison(&ws, 0xFF);
    p.workspace = ws.buf, p.workspace_offset = ws.offset;
    kp_test_require_op(d, KP_OP_MOE_FORWARD, &p);
    CHECK_OK(kp_moe_forward(s, &p));
    CHECK_OK(kp_stream_sync(s));
    kp_guarded_check(&ws, "workspace");
    kp_conf_download(&out);

    double ids[3 * 8], wts[3 * 8];
    double *ref = calloc((size_t)(t * hidden), sizeof *ref), *err2 = calloc((size_t)(t * hidden), sizeof *err2);
    ref_moe_gate(lg.host, t, e, bias.host, &v3_routing, ids, wts, NULL);
    ref_mlp_err me = forward_err_model(dt, NULL);
    for (int64_t tok = 0; tok < t; tok++) {
        me.err2 = err2 + tok * hidden;
        for (int64_t slot = 0; slot < k; slot++) {
            int64_t ex = (int64_t)ids[tok * k + slot];
            ref_swiglu_mlp_add(x.host + tok * hidden, b13.host + ex * expert_stride, b2.host + ex * expert_stride,
                               hidden, inter, wts[tok * k + slot], ref + tok * hidden, &me);
        }
    }
    for (int64_t i = 0; i < t * hidden; i++) err2[i] = sqrt(err2[i]);
    kp_conf_expect("moe_forward deepseek-v3 shape", &out, ref, err2, "token,col");
    free(ref);
    free(err2);
    kp_guarded_free(&ws);
    kp_conf_free(&b13);
    kp_conf_free(&b2);
    kp_conf_free(&x);
    kp_conf_free(&lg);
    kp_conf_free(&bias);
    kp_conf_free(&out);
    kp_stream_destroy(s);
}
