/*
 * tests/test_conf_rule.c — the conformance comparison rule itself (kp_conf_compare,
 * tests/kp_conformance.c) and the error models of the references (tests/ref): a suite
 * that cannot fail proves nothing, so these show what it accepts and what it rejects.
 *  - an output rounded once to its dtype passes; an error past the bound fails;
 *  - one wrong element fails although the relative L2 error stays within tolerance
 *    (the gap a norm alone leaves);
 *  - NaN, a lost poison, a wrong infinity each fail, naming their rule;
 *  - a naive storage-dtype implementation (products or probabilities rounded to bf16,
 *    f32 sums) passes the model's bound, which is not loose: its typical error is a
 *    fair fraction of it.
 */
#include "kp_conformance.h"
#include "ref_attention.h"
#include "ref_moe.h"

#include <math.h>

static double gauss(void) { /* Box-Muller, on the tests' own generator */
    double u = kp_test_rand_uniform(1e-12, 1.0), v = kp_test_rand_uniform(0.0, 1.0);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

KP_TEST(conf_rule_rounded_output_passes) {
    const kp_dtype dts[3] = {KP_F32, KP_F16, KP_BF16};
    enum { N = 4096 };
    static double ref[N], got[N];
    for (int t = 0; t < 3; t++) {
        for (int i = 0; i < N; i++) ref[i] = 3.0 * gauss(), got[i] = kp_conf_round(ref[i], dts[t]);
        kp_conf_result r = kp_conf_compare(dts[t], got, ref, NULL, N);
        CHECK_MSG(r.ok, "%s: %s", kp_dtype_name(dts[t]), r.rule);
    }
}

KP_TEST(conf_rule_one_wrong_element_fails) {
    enum { N = 10000 };
    static double ref[N], got[N], err[N];
    for (int i = 0; i < N; i++) ref[i] = 5.0 * gauss(), err[i] = 0x1p-8 * 5.0, got[i] = kp_conf_round(ref[i], KP_BF16);
    int64_t big = 0; /* an element of typical size, about 1.2 standard deviations */
    for (int i = 0; i < N; i++)
        if (fabs(fabs(ref[i]) - 6.0) < fabs(fabs(ref[big]) - 6.0)) big = i;
    got[big] = 0.0; /* one element zeroed */
    kp_conf_result r = kp_conf_compare(KP_BF16, got, ref, err, N);
    CHECK(!r.ok);
    CHECK_STR_EQ(r.rule, "element");
    CHECK_INT_EQ(r.worst, big);
    CHECK_INT_EQ(r.over, 1);
    CHECK_MSG(r.rel_l2 < kp_conf_tolerance(KP_BF16), "rel L2 %g: the norm alone would have caught it", r.rel_l2);
}

KP_TEST(conf_rule_bound_is_sharp) {
    enum { N = 64 };
    double ref[N], got[N], err[N];
    for (int i = 0; i < N; i++) ref[i] = 1.0 + i, err[i] = 1e-5, got[i] = ref[i];
    /* bound = 2 * (u * |ref| + 3 * err) + u * rms / 4 */
    double rms = 0.0;
    for (int i = 0; i < N; i++) rms += ref[i] * ref[i];
    rms = sqrt(rms / N);
    double bound7 = 2.0 * (0x1p-24 * ref[7] + 3e-5) + 0x1p-24 * rms / 4.0;
    got[7] = ref[7] + 0.99 * bound7;
    CHECK(kp_conf_compare(KP_F32, got, ref, err, N).ok);
    got[7] = ref[7] + 1.01 * bound7;
    kp_conf_result r = kp_conf_compare(KP_F32, got, ref, err, N);
    CHECK(!r.ok && r.worst == 7);
}

KP_TEST(conf_rule_special_values) {
    double ref[4] = {1.0, NAN, INFINITY, 2.0}, got[4] = {1.0, NAN, INFINITY, 2.0};
    CHECK(kp_conf_compare(KP_F32, got, ref, NULL, 4).ok);
    got[0] = NAN;
    CHECK_STR_EQ(kp_conf_compare(KP_F32, got, ref, NULL, 4).rule, "nan");
    got[0] = 1.0, got[1] = 0.0; /* an element no kernel may write lost its poison */
    CHECK_STR_EQ(kp_conf_compare(KP_F32, got, ref, NULL, 4).rule, "poison");
    got[1] = NAN, got[2] = 1e30;
    CHECK_STR_EQ(kp_conf_compare(KP_F32, got, ref, NULL, 4).rule, "inf");
}

KP_TEST(conf_rule_rel_l2_alone) {
    /* every element within a generous per-element model, the whole too far off */
    enum { N = 1000 };
    static double ref[N], got[N], err[N];
    for (int i = 0; i < N; i++) ref[i] = 1.0, err[i] = 1e-3, got[i] = 1.0 + 5e-3;
    kp_conf_result r = kp_conf_compare(KP_F32, got, ref, err, N);
    CHECK(!r.ok);
    CHECK_STR_EQ(r.rule, "rel_l2");
}

/* lse off by one ulp on every row: each element within its bound, the bias is not */
KP_TEST(conf_rule_bias_of_one_ulp_fails) {
    enum { N = 2000 };
    static double ref[N], got[N], err[N];
    for (int i = 0; i < N; i++) {
        ref[i] = kp_test_rand_uniform(1.0, 12.0);
        err[i] = 2.0 * 0x1p-24 * ref[i]; /* a correct kernel: about two ulps of noise */
        got[i] = (double)(float)(ref[i] + 0x1p-23 * ref[i] * (kp_test_rand_uniform(-1.5, 1.5)));
    }
    kp_conf_result r = kp_conf_compare(KP_F32, got, ref, err, N);
    CHECK_MSG(r.ok, "unbiased noise rejected: %s, bias %.2f ulps", r.rule, r.bias_ulps);
    for (int i = 0; i < N; i++) got[i] = nextafterf((float)got[i], INFINITY);
    r = kp_conf_compare(KP_F32, got, ref, err, N);
    CHECK_MSG(!r.ok && strcmp(r.rule, "bias") == 0, "a one-ulp shift passed: %s, bias %.2f ulps",
              r.ok ? "ok" : r.rule, r.bias_ulps);
}

KP_TEST(conf_rule_index_names) {
    char buf[128];
    const int64_t shape[3] = {5, 4, 7};
    kp_conf_index_name(2 * 28 + 3 * 7 + 6, 3, shape, "token,head,col", buf, sizeof buf);
    CHECK_STR_EQ(buf, "token 2, head 3, col 6");
    kp_conf_index_name(9, 3, shape, NULL, buf, sizeof buf);
    CHECK_STR_EQ(buf, "0, 1, 2");
}

/* A naive bf16 GEMM (every product rounded to bf16, f32 sums, output rounded) stays
 * inside the model's bound everywhere, and uses a fair part of it. */
KP_TEST(conf_rule_model_fits_naive_gemm) {
    enum { M = 24, N = 40, K = 2048 };
    static double a[M * K], w[N * K], ref[M * N], err[M * N], got[M * N];
    for (int i = 0; i < M * K; i++) a[i] = kp_conf_round(kp_test_rand_uniform(-1, 1) * (i % K == 5 ? 100 : 1), KP_BF16);
    for (int i = 0; i < N * K; i++) w[i] = kp_conf_round(kp_test_rand_uniform(-1, 1), KP_BF16);
    const int32_t off[2] = {0, M};
    ref_prec terms = kp_conf_prec(KP_BF16);
    ref_grouped_gemm(a, K, w, (int64_t)N * K, 1, N, off, ref, &terms, err);
    double ratio_sum = 0.0;
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++) {
            float acc = 0.0f;
            for (int l = 0; l < K; l++) acc += (float)kp_conf_round(a[r * K + l] * w[c * K + l], KP_BF16);
            got[r * N + c] = kp_conf_round(acc, KP_BF16);
            ratio_sum += fabs(got[r * N + c] - ref[r * N + c]) / (0x1p-8 * fabs(ref[r * N + c]) + 3 * err[r * N + c]);
        }
    kp_conf_result r = kp_conf_compare(KP_BF16, got, ref, err, M * N);
    CHECK_MSG(r.ok, "naive bf16 GEMM: %s at %lld: %g vs %g (bound %g)", r.rule, (long long)r.worst, r.worst_got,
              r.worst_ref, r.worst_bound);
    double mean = ratio_sum / (M * N);
    CHECK_MSG(mean > 0.03, "the model is loose: the naive error uses %.3g of it on average", mean);
}

/* Naive attention: probabilities rounded to bf16 before P·V, f32 everywhere else. */
KP_TEST(conf_rule_model_fits_naive_attention) {
    enum { LQ = 16, LK = 300, D = 64 };
    static double q[LQ * D], k[LK * D], v[LK * D], ref[LQ * D], err[LQ * D], got[LQ * D], lse[LQ], lse_err[LQ];
    for (int i = 0; i < LQ * D; i++) q[i] = kp_conf_round(kp_test_rand_uniform(-1, 1), KP_BF16);
    for (int i = 0; i < LK * D; i++) {
        k[i] = kp_conf_round(kp_test_rand_uniform(-1, 1) * (i % D == 3 ? 100 : 1), KP_BF16);
        v[i] = kp_conf_round(kp_test_rand_uniform(-1, 1), KP_BF16);
    }
    const int32_t cuq[2] = {0, LQ}, cuk[2] = {0, LK};
    const double scale = 0.125;
    ref_attn_err e = {kp_conf_prec(KP_BF16), err, lse_err};
    ref_attention_prefill(q, k, v, LQ, 1, 1, D, D, cuq, cuk, 1, scale, 0, -1, -1, ref, lse, &e);
    double ratio_sum = 0.0;
    for (int i = 0; i < LQ; i++) {
        float s[LK], m = -INFINITY, l = 0.0f;
        for (int j = 0; j < LK; j++) {
            float acc = 0.0f;
            for (int c = 0; c < D; c++) acc += (float)(q[i * D + c] * k[j * D + c]);
            s[j] = acc * (float)scale;
            m = fmaxf(m, s[j]);
        }
        float o[D] = {0};
        for (int j = 0; j < LK; j++) {
            float p = expf(s[j] - m);
            l += p;
            float pb = (float)kp_conf_round(p, KP_BF16);
            for (int c = 0; c < D; c++) o[c] += pb * (float)v[j * D + c];
        }
        for (int c = 0; c < D; c++) {
            got[i * D + c] = kp_conf_round(o[c] / l, KP_BF16);
            ratio_sum += fabs(got[i * D + c] - ref[i * D + c]) / (0x1p-8 * fabs(ref[i * D + c]) + 3 * err[i * D + c]);
        }
    }
    kp_conf_result r = kp_conf_compare(KP_BF16, got, ref, err, LQ * D);
    CHECK_MSG(r.ok, "naive attention: %s at %lld: %g vs %g (bound %g)", r.rule, (long long)r.worst, r.worst_got,
              r.worst_ref, r.worst_bound);
    double mean = ratio_sum / (LQ * D);
    CHECK_MSG(mean > 0.03, "the model is loose: the naive error uses %.3g of it on average", mean);
}
