/*
 * tests/conformance/test_conf_masked.c — kp_grouped_gemm in the masked layout (kport.h,
 * masked_m; DeepGEMM's m_grouped_gemm_*_masked): a [E, max_m, K] (or [E * max_m, K]),
 * out the same rows, expert e owns rows e * max_m + r for r < min(max(masked_m[e], 0),
 * max_m), the counts on the device. Checked against the float64 references per expert
 * (ref_grouped_gemm, ref_grouped_gemm_w8a8 over the rows [e * max_m, e * max_m + count)),
 * per element and overall; out poisoned, so every row past an expert's count must still
 * hold the poison (the reference is NaN there). Counts 0, max_m, past max_m (clamped) and
 * negative (empty); E = 1 and E = 64; every dtype path: f32, f16, bf16, W8A16 (e4m3
 * weights with block scales), W8A8 with both a_scale layouts (row = e * max_m + r).
 * Invalid arguments: each its error, nothing written; max_m = 0 runs and writes nothing.
 */
#include "kp_conformance.h"
#include "ref_fp8.h"
#include "ref_moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})

enum { PATH_PLAIN, PATH_W8A16, PATH_W8A8 };

typedef struct masked_case {
    int path;               /* PATH_* */
    kp_dtype dt;            /* a's dtype (PLAIN, W8A16); out's (W8A8) */
    int64_t e, max_m, k, n;
    const int32_t *counts;  /* masked_m [e], as given (clamping is the op's) */
    int rank3;              /* a [E, max_m, K], out [E, max_m, N]; else 2-D */
    int layout;             /* W8A8: a_scale layout */
} masked_case;

static kp_stream *new_stream(kp_device *d) {
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    return s;
}

/* n e4m3 values below 2 in magnitude (no NaN). */
static double *e4m3_values(int64_t n) {
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++) {
        unsigned char b;
        do b = (unsigned char)(kp_test_rand_u64() & 0xbf); while ((b & 0x7f) == 0x7f);
        v[i] = ref_fp8_e4m3(b);
    }
    return v;
}

static double *uniform(int64_t n, double lo, double hi) {
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = kp_test_rand_uniform(lo, hi);
    return v;
}

static int64_t clamp_count(int32_t c, int64_t max_m) { return c < 0 ? 0 : c > max_m ? max_m : c; }

static void masked_run(kp_device *d, kp_stream *s, const masked_case *c) {
    const int64_t e = c->e, mm = c->max_m, k = c->k, n = c->n, m = e * mm, kb = k / 128, nb = (n + 127) / 128;
    const int w8 = c->path != PATH_PLAIN, a8 = c->path == PATH_W8A8;
    const kp_dtype a_dt = a8 ? KP_FP8_E4M3 : c->dt;
    kp_grouped_gemm_params p;
    memset(&p, 0, sizeof p);
    double *av = a8 ? e4m3_values(m * k) : uniform(m * k, -1.0, 1.0);
    kp_conf_tensor a = c->rank3 ? kp_conf_from(d, "a", a_dt, 3, SHAPE(e, mm, k), av)
                                : kp_conf_from(d, "a", a_dt, 2, SHAPE(m, k), av);
    free(av);
    double *wv = w8 ? e4m3_values(e * n * k) : uniform(e * n * k, -1.0, 1.0);
    kp_conf_tensor w = kp_conf_from(d, "w", w8 ? KP_FP8_E4M3 : c->dt, 3, SHAPE(e, n, k), wv);
    free(wv);
    kp_conf_tensor ws = {0}, as = {0};
    double *as_rows = NULL, *wdq = NULL;
    if (w8) {
        double *sv = uniform(e * nb * kb, 0.01, 0.1);
        ws = kp_conf_from(d, "w_scale", KP_F32, 3, SHAPE(e, nb, kb), sv);
        free(sv);
        p.w_scale = ws.t;
    }
    if (a8) {
        as_rows = uniform(m * kb, 0.01, 0.1);
        if (c->layout == KP_FP8_SCALE_COL_MAJOR) {
            const int64_t pad = m + 3; /* M_pad > M: the padding columns (NaN) are never read */
            double *col = malloc((size_t)(kb * pad) * sizeof *col);
            for (int64_t g = 0; g < kb; g++)
                for (int64_t r = 0; r < pad; r++) col[g * pad + r] = r < m ? as_rows[r * kb + g] : NAN;
            as = kp_conf_from(d, "a_scale", KP_F32, 2, SHAPE(kb, pad), col);
            free(col);
        } else {
            as = kp_conf_from(d, "a_scale", KP_F32, 2, SHAPE(m, kb), as_rows);
        }
        p.a_scale = as.t, p.a_scale_layout = c->layout;
    } else if (w8) { /* W8A16: the reference multiplies the dequantized weights */
        wdq = malloc((size_t)(e * n * k) * sizeof *wdq);
        for (int64_t x = 0; x < e; x++)
            for (int64_t j = 0; j < n; j++)
                for (int64_t l = 0; l < k; l++)
                    wdq[(x * n + j) * k + l] =
                        w.host[(x * n + j) * k + l] * ws.host[(x * nb + j / 128) * kb + l / 128];
    }
    double *cv = malloc((size_t)e * sizeof *cv);
    for (int64_t x = 0; x < e; x++) cv[x] = c->counts[x];
    kp_conf_tensor cnt = kp_conf_from(d, "masked_m", KP_I32, 1, SHAPE(e), cv);
    free(cv);
    kp_conf_tensor out = c->rank3 ? kp_conf_output(d, "out", c->dt, 3, SHAPE(e, mm, n))
                                  : kp_conf_output(d, "out", c->dt, 2, SHAPE(m, n));
    p.a = a.t, p.w = w.t, p.masked_m = cnt.t, p.out = out.t;
    /* W8A8 may be declined only where generation 1 is forced (it has no W8A8 kernel):
     * then the call is refused the same way and writes nothing */
    if (!kp_test_case_runs(d, KP_OP_GROUPED_GEMM, &p, a8 ? kp_conf_w8a8_may_decline() : NULL)) {
        CHECK(kp_grouped_gemm(s, &p) == KP_ERR_UNSUPPORTED);
        CHECK_OK(kp_stream_sync(s));
        kp_conf_download(&out);
        for (int64_t i = 0; i < out.numel; i++)
            CHECK_MSG(isnan(out.host[i]), "declined W8A8 wrote out[%lld]", (long long)i);
        free(as_rows), free(wdq);
        kp_conf_free(&a), kp_conf_free(&w), kp_conf_free(&cnt), kp_conf_free(&out);
        kp_conf_free(&ws), kp_conf_free(&as);
        return;
    }
    char kname[KP_KERNEL_NAME_MAX];
    CHECK_OK(kp_op_kernel(d, KP_OP_GROUPED_GEMM, &p, kname, sizeof kname));
    CHECK_MSG(kname[0] != 0, "kp_op_kernel names no kernel in the masked layout");
    CHECK_OK(kp_grouped_gemm(s, &p));
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&out);

    double *ref = malloc((size_t)(m * n + 1) * sizeof *ref), *err = calloc((size_t)(m * n + 1), sizeof *err);
    for (int64_t i = 0; i < m * n; i++) ref[i] = NAN; /* rows past every count keep the poison */
    const ref_prec terms = w8 ? kp_conf_prec(KP_F32) : kp_conf_prec(c->dt);
    for (int64_t x = 0; x < e; x++) {
        const int32_t rows[2] = {(int32_t)(x * mm), (int32_t)(x * mm + clamp_count(c->counts[x], mm))};
        if (a8)
            ref_grouped_gemm_w8a8(a.host, as_rows, k, w.host + x * n * k, ws.host + x * nb * kb, 1, n, rows, ref, err);
        else
            ref_grouped_gemm(a.host, k, (wdq ? wdq : w.host) + x * n * k, n * k, 1, n, rows, ref, &terms, err);
    }
    char what[400];
    snprintf(what, sizeof what, "grouped_gemm masked %s%s -> %s E %lld max_m %lld k %lld n %lld %s (kernel %s)",
             c->path == PATH_W8A8 ? "w8a8" : c->path == PATH_W8A16 ? "w8a16" : kp_dtype_name(c->dt),
             a8 ? (c->layout == KP_FP8_SCALE_COL_MAJOR ? " column-major scales" : " row-major scales") : "",
             kp_dtype_name(c->dt), (long long)e, (long long)mm, (long long)k, (long long)n,
             c->rank3 ? "[E, max_m, .]" : "[E * max_m, .]", kname);
    kp_conf_expect(what, &out, ref, err, c->rank3 ? "expert,row,col" : "row,col");
    free(ref), free(err), free(as_rows), free(wdq);
    kp_conf_free(&a), kp_conf_free(&w), kp_conf_free(&cnt), kp_conf_free(&out);
    if (w8) kp_conf_free(&ws);
    if (a8) kp_conf_free(&as);
}

/* Counts 0, 1, max_m, past max_m (clamped) and negative (empty), decode-sized (the rows
 * kernels) and past a 64-row tile (the tiled ones), both ranks, f32 / f16 / bf16. */
KP_CONFORMANCE(conf_grouped_gemm_masked) {
    kp_stream *s = new_stream(d);
    const int32_t dec[5] = {3, 0, 8, 100, -2}; /* max_m 8: 3, none, all, clamped to 8, none */
    const int32_t big[3] = {70, 129, 0};       /* max_m 96: past a 64-row tile, clamped to 96, none */
    const int32_t one[1] = {5};
    const masked_case cases[] = {
        {PATH_PLAIN, KP_F32, 5, 8, 96, 40, dec, 1, 0},
        {PATH_PLAIN, KP_F16, 5, 8, 300, 70, dec, 0, 0},
        {PATH_PLAIN, KP_BF16, 5, 8, 256, 130, dec, 1, 0},
        {PATH_PLAIN, KP_BF16, 3, 96, 128, 72, big, 0, 0},
        {PATH_PLAIN, KP_F16, 3, 96, 64, 33, big, 1, 0},
        {PATH_PLAIN, KP_BF16, 1, 7, 128, 50, one, 1, 0}, /* E = 1 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) masked_run(d, s, &cases[i]);
    kp_stream_destroy(s);
}

/* E = 64 (V3's local experts on an EP4 rank), counts of every kind among them. */
KP_CONFORMANCE(conf_grouped_gemm_masked_e64) {
    kp_stream *s = new_stream(d);
    int32_t counts[64];
    for (int i = 0; i < 64; i++) counts[i] = i % 8 == 0 ? 0 : i % 8 == 1 ? 4 : i % 8 == 2 ? 9 : (int32_t)(i % 5);
    const masked_case cases[] = {
        {PATH_PLAIN, KP_BF16, 64, 4, 128, 48, counts, 1, 0},
        {PATH_W8A8, KP_BF16, 64, 4, 256, 40, counts, 1, KP_FP8_SCALE_COL_MAJOR},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) masked_run(d, s, &cases[i]);
    kp_stream_destroy(s);
}

/* FP8 weights: W8A16 (bf16 / f16 a) and W8A8 (e4m3 a, both a_scale layouts, every out
 * dtype), decode-sized and past one tile. */
KP_CONFORMANCE(conf_grouped_gemm_masked_fp8) {
    kp_stream *s = new_stream(d);
    const int32_t dec[4] = {1, 16, 0, 40};  /* max_m 16: one row, all, none, clamped */
    const int32_t big[2] = {130, 7};        /* max_m 136 */
    const masked_case cases[] = {
        {PATH_W8A16, KP_BF16, 4, 16, 256, 136, dec, 1, 0},
        {PATH_W8A16, KP_F16, 2, 136, 128, 70, big, 0, 0},
        {PATH_W8A8, KP_BF16, 4, 16, 384, 200, dec, 1, KP_FP8_SCALE_ROW_MAJOR},
        {PATH_W8A8, KP_F32, 4, 16, 256, 37, dec, 0, KP_FP8_SCALE_COL_MAJOR},
        {PATH_W8A8, KP_F16, 2, 136, 256, 130, big, 1, KP_FP8_SCALE_COL_MAJOR},
        {PATH_W8A8, KP_BF16, 2, 136, 128, 64, big, 0, KP_FP8_SCALE_ROW_MAJOR},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) masked_run(d, s, &cases[i]);
    kp_stream_destroy(s);
}

/* The shapes the sm_90a tier takes (ci/gpu-check forces it on these: variants sm90 and
 * sm90w8a8), every backend runs them: bf16 / f16 with K % 64, max_m past one and two
 * 128-row tiles and not a multiple of 128, counts 0, 1, 128, 129, max_m, past max_m
 * (clamped: the next expert's rows stay poison) and negative, both ranks. */
KP_CONFORMANCE(conf_grouped_gemm_masked_k64) {
    kp_stream *s = new_stream(d);
    const int32_t a[4] = {129, 0, 200, 1000}; /* max_m 200: two tiles, none, all, clamped */
    const int32_t b[3] = {-4, 1, 130};        /* max_m 130 */
    const int32_t c[2] = {256, 128};          /* max_m 256: exactly two tiles, one */
    const masked_case cases[] = {
        {PATH_PLAIN, KP_BF16, 4, 200, 128, 136, a, 1, 0},
        {PATH_PLAIN, KP_F16, 3, 130, 64, 256, b, 0, 0},
        {PATH_PLAIN, KP_BF16, 2, 256, 192, 72, c, 1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) masked_run(d, s, &cases[i]);
    kp_stream_destroy(s);
}

/* W8A8 (K % 128) on the same kinds of counts, a_scale by the flat row in both layouts,
 * out f32 / f16 / bf16: what the sm_90a tier's W8A8 kernel takes. */
KP_CONFORMANCE(conf_grouped_gemm_masked_w8a8) {
    kp_stream *s = new_stream(d);
    const int32_t a[4] = {200, 0, 300, 129}; /* max_m 200 */
    const int32_t b[3] = {-1, 130, 7};       /* max_m 130 */
    const int32_t c[2] = {64, 33};           /* max_m 64: below one tile */
    const masked_case cases[] = {
        {PATH_W8A8, KP_BF16, 4, 200, 256, 136, a, 1, KP_FP8_SCALE_ROW_MAJOR},
        {PATH_W8A8, KP_F32, 3, 130, 128, 256, b, 0, KP_FP8_SCALE_COL_MAJOR},
        {PATH_W8A8, KP_F16, 2, 64, 384, 128, c, 1, KP_FP8_SCALE_COL_MAJOR},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) masked_run(d, s, &cases[i]);
    kp_stream_destroy(s);
}

/* One invalid call: its status, a word of its message, and out still all poison. */
static void refused(kp_stream *s, const kp_grouped_gemm_params *p, kp_conf_tensor *out, kp_status want,
                    const char *word, const char *what) {
    kp_status st = kp_grouped_gemm(s, p);
    CHECK_MSG(st == want, "%s: status %d, want %d (%s)", what, (int)st, (int)want, kp_last_error());
    CHECK_MSG(strstr(kp_last_error(), word) != NULL, "%s: message '%s' lacks '%s'", what, kp_last_error(), word);
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(out);
    for (int64_t i = 0; i < out->numel; i++) CHECK_MSG(isnan(out->host[i]), "%s wrote out[%lld]", what, (long long)i);
}

/* Both or neither of expert_offsets / masked_m, masked_m's shape and dtype, rows not
 * E * max_m, ranks and shapes that disagree, E * max_m past 2^31 (checked products), a
 * 3-D a whose experts are not one flat row dim: each refused, nothing written. */
KP_CONFORMANCE(conf_grouped_gemm_masked_invalid) {
    kp_stream *s = new_stream(d);
    const int64_t e = 3, mm = 4, k = 64, n = 16;
    kp_conf_tensor a3 = kp_conf_random(d, "a", KP_BF16, 3, SHAPE(e, mm, k), -1.0, 1.0);
    kp_conf_tensor w = kp_conf_random(d, "w", KP_BF16, 3, SHAPE(e, n, k), -1.0, 1.0);
    kp_conf_tensor cnt = kp_conf_from(d, "masked_m", KP_I32, 1, SHAPE(e), (const double[]){1, 2, 3});
    kp_conf_tensor cnt4 = kp_conf_from(d, "masked_m", KP_I32, 1, SHAPE(e + 1), (const double[]){0, 1, 2, 3});
    kp_conf_tensor cntf = kp_conf_from(d, "masked_m", KP_F32, 1, SHAPE(e), (const double[]){1, 2, 3});
    kp_conf_tensor off = kp_conf_from(d, "expert_offsets", KP_I32, 1, SHAPE(e + 1), (const double[]){0, 4, 8, 12});
    kp_conf_tensor out3 = kp_conf_output(d, "out", KP_BF16, 3, SHAPE(e, mm, n));
    kp_grouped_gemm_params ok = {.a = a3.t, .w = w.t, .masked_m = cnt.t, .out = out3.t}, p;

    p = ok, p.expert_offsets = off.t;
    refused(s, &p, &out3, KP_ERR_INVALID_ARGUMENT, "exactly one", "both offsets and masked_m");
    p = ok, p.masked_m = (kp_tensor){0};
    refused(s, &p, &out3, KP_ERR_INVALID_ARGUMENT, "neither", "neither offsets nor masked_m");
    p = ok, p.masked_m = cnt4.t;
    refused(s, &p, &out3, KP_ERR_INVALID_SHAPE, "masked_m", "masked_m [E + 1]");
    p = ok, p.masked_m = cntf.t;
    refused(s, &p, &out3, KP_ERR_INVALID_DTYPE, "masked_m", "masked_m f32");
    /* a 2-D view of 11 rows: not E * max_m */
    p = ok;
    CHECK_OK(kp_tensor_init(&p.a, a3.g.buf, a3.g.offset, KP_BF16, 2, SHAPE(11, k), NULL));
    CHECK_OK(kp_tensor_init(&p.out, out3.g.buf, out3.g.offset, KP_BF16, 2, SHAPE(11, n), NULL));
    refused(s, &p, &out3, KP_ERR_INVALID_SHAPE, "multiple of E", "rows not E * max_m");
    /* out 2-D while a is 3-D */
    p = ok;
    CHECK_OK(kp_tensor_init(&p.out, out3.g.buf, out3.g.offset, KP_BF16, 2, SHAPE(e * mm, n), NULL));
    refused(s, &p, &out3, KP_ERR_INVALID_SHAPE, "dims but a has", "out's rank");
    /* out [E, max_m - 1, N] */
    p = ok;
    CHECK_OK(kp_tensor_init(&p.out, out3.g.buf, out3.g.offset, KP_BF16, 3, SHAPE(e, mm - 1, n), NULL));
    refused(s, &p, &out3, KP_ERR_INVALID_SHAPE, "max_m must match", "out's max_m");
    /* a [E - 1, max_m, K] with out to match: E disagrees with w's */
    p = ok;
    CHECK_OK(kp_tensor_init(&p.a, a3.g.buf, a3.g.offset, KP_BF16, 3, SHAPE(e - 1, mm, k), NULL));
    CHECK_OK(kp_tensor_init(&p.out, out3.g.buf, out3.g.offset, KP_BF16, 3, SHAPE(e - 1, mm, n), NULL));
    refused(s, &p, &out3, KP_ERR_INVALID_SHAPE, "E = 3", "a's E");
    /* experts 2 rows apart in a 3-D a of max_m 4 rows each (not one flat row dim) */
    p = ok;
    CHECK_OK(kp_tensor_init(&p.a, a3.g.buf, a3.g.offset, KP_BF16, 3, SHAPE(e, mm / 2, k), SHAPE(mm * k, k, 1)));
    CHECK_OK(kp_tensor_init(&p.out, out3.g.buf, out3.g.offset, KP_BF16, 3, SHAPE(e, mm / 2, n), NULL));
    refused(s, &p, &out3, KP_ERR_INVALID_SHAPE, "flat row dim", "a's expert stride");
    /* E * max_m past 2^31 (and max_m * row stride past int64): the checked products refuse */
    p = ok;
    p.a.shape[1] = (int64_t)1 << 40, p.out.shape[1] = (int64_t)1 << 40;
    refused(s, &p, &out3, KP_ERR_INVALID_SHAPE, "E * max_m", "max_m 2^40");
    p = ok;
    p.a.shape[1] = INT64_MAX / 2, p.out.shape[1] = INT64_MAX / 2;
    refused(s, &p, &out3, KP_ERR_INVALID_SHAPE, "E * max_m", "max_m 2^62");
    /* max_m = 0: a valid call with no rows, which writes nothing */
    p = ok;
    p.a.shape[1] = 0, p.out.shape[1] = 0;
    CHECK_OK(kp_grouped_gemm(s, &p));
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&out3);
    for (int64_t i = 0; i < out3.numel; i++) CHECK_MSG(isnan(out3.host[i]), "max_m = 0 wrote out[%lld]", (long long)i);
    /* and the valid call, after all of them, writes */
    CHECK_OK(kp_grouped_gemm(s, &ok));
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&out3);
    CHECK_MSG(!isnan(out3.host[0]) && isnan(out3.host[(mm - 1) * n]), "the valid masked call: row 0 written, row 3 "
              "of expert 0 (count 1) left");
    kp_conf_free(&a3), kp_conf_free(&w), kp_conf_free(&cnt), kp_conf_free(&cnt4), kp_conf_free(&cntf);
    kp_conf_free(&off), kp_conf_free(&out3);
    kp_stream_destroy(s);
}
