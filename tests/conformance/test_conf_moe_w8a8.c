/*
 * tests/conformance/test_conf_moe_w8a8.c — kp_moe_forward with FP8 activations (W8A8,
 * activation_dtype KP_FP8_E4M3) against the float64 reference ref_moe_w8a8_mlp_add,
 * which models both quantizations (x per token group, h in the SwiGLU epilogue): T = 1
 * and larger, skewed routing with empty experts, outlier channels, activation and weight
 * scales over 2^-10..2^10, UE8M0, a shared expert (which stays in x's dtype); W8A8
 * against W8A16 on the same layer, within what the quantization explains; and the
 * combinations the op refuses, with nothing written. Every backend runs W8A8 (the GPU
 * ones on the generation-2 W8A8 grouped GEMM); only where KPORT_GPU_KERNELS forces
 * generation 1 on grouped_gemm (it has no W8A8 kernel) must the GPU backends decline
 * through kp_op_supported with KP_ERR_UNSUPPORTED, the call failing the same way with
 * the GEMM's reason and writing nothing.
 */
#include "kp_conformance.h"
#include "ref_fp8.h"
#include "ref_moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define MAY_DECLINE kp_conf_w8a8_may_decline()

typedef struct mcase {
    kp_dtype dt;
    int64_t t, hidden, inter, inter_s; /* inter_s > 0: a shared expert */
    int ue8m0;                         /* activation scales powers of two */
    int wide;                          /* weight block scales and token magnitudes over 2^-10..2^10 */
    int skew;                          /* most tokens pick experts 0, 1, 5; experts 8..15 empty */
    int shared_fp8;                    /* the shared expert's weights FP8 with block scales */
} mcase;

enum { E = 16, TOPK = 4 };

typedef struct layer {
    kp_conf_tensor x, lg, w13, s13, w2, s2, sh13, sh2, ss13, ss2, out;
    kp_guarded ws;
    kp_moe_forward_params p;
} layer;

/* n e4m3 values (decoded): random finite bytes below 2 in magnitude. */
static double *e4m3_values(int64_t n) {
    double *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) {
        unsigned char b;
        do b = (unsigned char)(kp_test_rand_u64() & 0xbf); while ((b & 0x7f) == 0x7f);
        v[i] = ref_fp8_e4m3(b);
    }
    return v;
}

/* Block scales [experts, ceil(n/128), k/128] (experts 0: the 2-D [ceil(n/128), k/128]
 * of a shared expert). */
static kp_conf_tensor block_scales(kp_device *d, const char *name, int64_t experts, int64_t n, int64_t k, int wide) {
    int64_t count = (experts ? experts : 1) * ((n + 127) / 128) * (k / 128);
    double *v = malloc((size_t)count * sizeof *v);
    for (int64_t i = 0; i < count; i++)
        v[i] = wide ? ldexp(kp_test_rand_uniform(1.0, 2.0), (int)(kp_test_rand_u64() % 21) - 10) / 64.0
                    : kp_test_rand_uniform(0.005, 0.02);
    kp_conf_tensor t = experts ? kp_conf_from(d, name, KP_F32, 3, SHAPE(experts, (n + 127) / 128, k / 128), v)
                               : kp_conf_from(d, name, KP_F32, 2, SHAPE((n + 127) / 128, k / 128), v);
    free(v);
    return t;
}

static void layer_make(kp_device *d, const mcase *c, layer *l) {
    const int64_t t = c->t, hidden = c->hidden, inter = c->inter;
    memset(l, 0, sizeof *l);
    /* x: uniform, 3 outlier channels x 40; wide: token r scaled by 2^(r % 21 - 10) */
    double *xv = malloc((size_t)(t * hidden) * sizeof *xv);
    int64_t outl[3];
    for (int i = 0; i < 3; i++) outl[i] = (int64_t)(kp_test_rand_u64() % (uint64_t)hidden);
    for (int64_t r = 0; r < t; r++)
        for (int64_t i = 0; i < hidden; i++) {
            double v = kp_test_rand_uniform(-1.0, 1.0) * (c->wide ? ldexp(1.0, (int)(r % 21) - 10) : 1.0);
            xv[r * hidden + i] = i == outl[0] || i == outl[1] || i == outl[2] ? 40.0 * v : v;
        }
    l->x = kp_conf_from(d, "x", c->dt, 2, SHAPE(t, hidden), xv);
    free(xv);
    double *lv = malloc((size_t)(t * E) * sizeof *lv);
    for (int64_t r = 0; r < t; r++)
        for (int64_t e = 0; e < E; e++) {
            lv[r * E + e] = kp_test_rand_uniform(-3.0, 3.0);
            if (c->skew && (e == 0 || e == 1 || e == 5) && r % 8 != 7) lv[r * E + e] += 8.0;
            if (c->skew && e >= 8) lv[r * E + e] -= 20.0;
        }
    l->lg = kp_conf_from(d, "router_logits", KP_F32, 2, SHAPE(t, E), lv);
    free(lv);
    double *w13v = e4m3_values(E * 2 * inter * hidden), *w2v = e4m3_values(E * hidden * inter);
    l->w13 = kp_conf_from(d, "w13", KP_FP8_E4M3, 3, SHAPE(E, 2 * inter, hidden), w13v);
    l->w2 = kp_conf_from(d, "w2", KP_FP8_E4M3, 3, SHAPE(E, hidden, inter), w2v);
    free(w13v), free(w2v);
    l->s13 = block_scales(d, "w13_scale", E, 2 * inter, hidden, c->wide);
    l->s2 = block_scales(d, "w2_scale", E, hidden, inter, c->wide);
    kp_moe_forward_params *p = &l->p;
    p->x = l->x.t, p->router_logits = l->lg.t, p->w13 = l->w13.t, p->w13_scale = l->s13.t;
    p->w2 = l->w2.t, p->w2_scale = l->s2.t;
    if (c->inter_s && c->shared_fp8) {
        double *a = e4m3_values(2 * c->inter_s * hidden), *b = e4m3_values(hidden * c->inter_s);
        l->sh13 = kp_conf_from(d, "shared_w13", KP_FP8_E4M3, 2, SHAPE(2 * c->inter_s, hidden), a);
        l->sh2 = kp_conf_from(d, "shared_w2", KP_FP8_E4M3, 2, SHAPE(hidden, c->inter_s), b);
        free(a), free(b);
        l->ss13 = block_scales(d, "shared_w13_scale", 0, 2 * c->inter_s, hidden, c->wide);
        l->ss2 = block_scales(d, "shared_w2_scale", 0, hidden, c->inter_s, c->wide);
        p->shared_w13 = l->sh13.t, p->shared_w2 = l->sh2.t;
        p->shared_w13_scale = l->ss13.t, p->shared_w2_scale = l->ss2.t;
    } else if (c->inter_s) {
        l->sh13 = kp_conf_random(d, "shared_w13", c->dt, 2, SHAPE(2 * c->inter_s, hidden), -0.02, 0.02);
        l->sh2 = kp_conf_random(d, "shared_w2", c->dt, 2, SHAPE(hidden, c->inter_s), -0.02, 0.02);
        p->shared_w13 = l->sh13.t, p->shared_w2 = l->sh2.t;
    }
    l->out = kp_conf_output(d, "out", c->dt, 2, SHAPE(t, hidden));
    p->out = l->out.t;
    p->routing = (kp_moe_routing){TOPK, 4, 2, KP_MOE_SCORING_SIGMOID, 1, 2.5f};
    p->activation_dtype = KP_FP8_E4M3;
    p->activation_scale_ue8m0 = c->ue8m0;
    size_t bytes = 0;
    CHECK_OK(kp_moe_forward_workspace_size(d, p, &bytes));
    l->ws = kp_guarded_alloc(d, bytes);
    kp_guarded_poison(&l->ws, 0xFF);
    p->workspace = l->ws.buf, p->workspace_offset = l->ws.offset;
}

static void layer_free(layer *l) {
    kp_conf_free(&l->x), kp_conf_free(&l->lg), kp_conf_free(&l->w13), kp_conf_free(&l->s13);
    kp_conf_free(&l->w2), kp_conf_free(&l->s2), kp_conf_free(&l->out);
    if (l->sh13.host) kp_conf_free(&l->sh13), kp_conf_free(&l->sh2);
    if (l->ss13.host) kp_conf_free(&l->ss13), kp_conf_free(&l->ss2);
    kp_guarded_free(&l->ws);
}

/* The reference of the layer: W8A8 routed experts (w8a8) or W8A16 (the dequantized
 * weights, ref_swiglu_mlp_add), plus the shared expert in x's dtype. err: sqrt of the
 * summed squared error model (may be NULL). */
static void layer_ref(const mcase *c, const layer *l, int w8a8, double *ref, double *err) {
    const int64_t t = c->t, hidden = c->hidden, inter = c->inter, nb13 = (2 * inter + 127) / 128,
                  kb13 = hidden / 128, nb2 = (hidden + 127) / 128, kb2 = inter / 128;
    double ids[TOPK], wts[TOPK];
    double *d13 = NULL, *d2 = NULL; /* W8A16: every expert's weights dequantized, once */
    if (!w8a8) {
        d13 = malloc((size_t)(E * 2 * inter * hidden) * sizeof *d13);
        d2 = malloc((size_t)(E * hidden * inter) * sizeof *d2);
        for (int64_t ex = 0; ex < E; ex++) {
            const double *s13 = l->s13.host + ex * nb13 * kb13, *s2 = l->s2.host + ex * nb2 * kb2;
            for (int64_t j = 0; j < 2 * inter; j++)
                for (int64_t q = 0; q < hidden; q++)
                    d13[(ex * 2 * inter + j) * hidden + q] =
                        l->w13.host[(ex * 2 * inter + j) * hidden + q] * s13[(j / 128) * kb13 + q / 128];
            for (int64_t j = 0; j < hidden; j++)
                for (int64_t q = 0; q < inter; q++)
                    d2[(ex * hidden + j) * inter + q] =
                        l->w2.host[(ex * hidden + j) * inter + q] * s2[(j / 128) * kb2 + q / 128];
        }
    }
    double *sd13 = NULL, *sd2 = NULL; /* an FP8 shared expert in W8A16: dequantized */
    if (c->inter_s && c->shared_fp8 && !w8a8) {
        const int64_t is = c->inter_s, skb13 = hidden / 128, skb2 = is / 128;
        sd13 = malloc((size_t)(2 * is * hidden) * sizeof *sd13), sd2 = malloc((size_t)(hidden * is) * sizeof *sd2);
        for (int64_t j = 0; j < 2 * is; j++)
            for (int64_t q = 0; q < hidden; q++)
                sd13[j * hidden + q] = l->sh13.host[j * hidden + q] * l->ss13.host[(j / 128) * skb13 + q / 128];
        for (int64_t j = 0; j < hidden; j++)
            for (int64_t q = 0; q < is; q++)
                sd2[j * is + q] = l->sh2.host[j * is + q] * l->ss2.host[(j / 128) * skb2 + q / 128];
    }
    for (int64_t i = 0; i < t * hidden; i++) ref[i] = 0.0, err[i] = 0.0;
    for (int64_t tok = 0; tok < t; tok++) {
        ref_moe_gate(l->lg.host + tok * E, 1, E, NULL, &l->p.routing, ids, wts, NULL);
        const double *xr = l->x.host + tok * hidden;
        double *o = ref + tok * hidden, *e2 = err + tok * hidden;
        for (int slot = 0; slot < TOPK; slot++) {
            int64_t ex = (int64_t)ids[slot];
            const double *w13 = l->w13.host + ex * 2 * inter * hidden, *w2 = l->w2.host + ex * hidden * inter;
            const double *s13 = l->s13.host + ex * nb13 * kb13, *s2 = l->s2.host + ex * nb2 * kb2;
            if (w8a8) {
                ref_moe_w8a8_mlp_add(xr, hidden, inter, w13, s13, w2, s2, c->ue8m0, wts[slot], kp_conf_unit(c->dt), o,
                                     e2);
                continue;
            }
            ref_mlp_err me = {kp_conf_prec(c->dt), kp_conf_prec(KP_BF16), e2};
            ref_swiglu_mlp_add(xr, d13 + ex * 2 * inter * hidden, d2 + ex * hidden * inter, hidden, inter, wts[slot], o,
                               &me);
        }
        if (c->inter_s && c->shared_fp8 && w8a8) {
            ref_moe_w8a8_mlp_add(xr, hidden, c->inter_s, l->sh13.host, l->ss13.host, l->sh2.host, l->ss2.host,
                                 c->ue8m0, 1.0, kp_conf_unit(c->dt), o, e2);
        } else if (c->inter_s && c->shared_fp8) {
            ref_mlp_err me = {kp_conf_prec(c->dt), kp_conf_prec(KP_BF16), e2};
            ref_swiglu_mlp_add(xr, sd13, sd2, hidden, c->inter_s, 1.0, o, &me);
        } else if (c->inter_s) {
            ref_mlp_err me = {kp_conf_prec(c->dt), kp_conf_prec(KP_F32), e2};
            ref_swiglu_mlp_add(xr, l->sh13.host, l->sh2.host, hidden, c->inter_s, 1.0, o, &me);
        }
    }
    for (int64_t i = 0; i < t * hidden; i++) err[i] = sqrt(err[i]);
    free(d13), free(d2), free(sd13), free(sd2);
}

static double rel_l2(const double *a, const double *b, int64_t n) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
    return den > 0 ? sqrt(num / den) : 0.0;
}

/* Runs l's layer with l->p's activation settings in a workspace of its own size
 * (poisoned, its guards checked) into a poisoned out, downloaded. may_decline: the
 * backends that may decline the case (then the call must fail the same way, writing
 * nothing, and 0 is returned). */
static int forward_run(kp_device *d, kp_stream *s, layer *l, const char *may_decline) {
    size_t bytes = 0;
    CHECK_OK(kp_moe_forward_workspace_size(d, &l->p, &bytes));
    kp_guarded ws = kp_guarded_alloc(d, bytes);
    kp_guarded_poison(&ws, 0xFF);
    kp_guarded_poison(&l->out.g, 0xFF);
    l->p.workspace = ws.buf, l->p.workspace_offset = ws.offset;
    int runs = kp_test_case_runs(d, KP_OP_MOE_FORWARD, &l->p, may_decline);
    if (runs) {
        CHECK_OK(kp_moe_forward(s, &l->p));
    } else {
        CHECK_ERR(kp_moe_forward(s, &l->p), KP_ERR_UNSUPPORTED, "(W8A8) run on the generation-2 kernels only");
    }
    CHECK_OK(kp_stream_sync(s));
    kp_guarded_check(&ws, "workspace");
    kp_guarded_free(&ws);
    l->p.workspace = l->ws.buf, l->p.workspace_offset = l->ws.offset;
    kp_conf_download(&l->out);
    for (int64_t i = 0; !runs && i < l->out.numel; i++)
        CHECK_MSG(isnan(l->out.host[i]), "declined, yet wrote out[%lld]", (long long)i);
    return runs;
}

/* The layer in W8A16 (FP8 weights, x's dtype activations) against its reference, then
 * in W8A8 against the W8A8 reference, and the two outputs' difference against the two
 * references': it is the quantizations', not the implementation's. */
static void w8a8_forward(kp_device *d, kp_stream *s, const mcase *c) {
    layer l;
    layer_make(d, c, &l);
    const int64_t n = c->t * c->hidden;
    char what[192];
    snprintf(what, sizeof what, "moe_forward %%s %s T %lld hidden %lld inter %lld%s%s%s%s", kp_dtype_name(c->dt),
             (long long)c->t, (long long)c->hidden, (long long)c->inter,
             c->inter_s ? (c->shared_fp8 ? " fp8 shared expert" : " shared expert") : "", c->ue8m0 ? " ue8m0" : "",
             c->wide ? " scales 2^-10..2^10" : "", c->skew ? " skewed routing" : "");
    char name[224];
    double *ref = malloc((size_t)n * sizeof *ref), *err = malloc((size_t)n * sizeof *err);
    double *got16 = malloc((size_t)n * sizeof *got16), *ref16 = malloc((size_t)n * sizeof *ref16);

    kp_moe_forward_params w8a8 = l.p;
    l.p.activation_dtype = 0, l.p.activation_scale_ue8m0 = 0;
    forward_run(d, s, &l, NULL); /* W8A16 (an FP8 shared expert too) runs everywhere */
    layer_ref(c, &l, 0, ref16, err);
    snprintf(name, sizeof name, what, "w8a16");
    kp_conf_expect(name, &l.out, ref16, err, "token,col");
    memcpy(got16, l.out.host, (size_t)n * sizeof *got16);

    l.p = w8a8;
    snprintf(name, sizeof name, what, "w8a8");
    if (forward_run(d, s, &l, MAY_DECLINE)) {
        layer_ref(c, &l, 1, ref, err);
        kp_conf_expect(name, &l.out, ref, err, "token,col");
        double q_ref = rel_l2(ref, ref16, n), q_got = rel_l2(l.out.host, got16, n);
        /* e4m3 rounds to 3 fraction bits: x and h each off by up to 2^-4 relative */
        CHECK_MSG(q_ref > 1e-3 && q_ref < 0.2, "%s: W8A8 vs W8A16 references differ by %.3g (rel L2)", name, q_ref);
        CHECK_MSG(q_got > 0.5 * q_ref && q_got < 1.5 * q_ref + kp_conf_tolerance(c->dt),
                  "%s: W8A8 vs W8A16 outputs differ by %.3g (rel L2); the quantizations explain %.3g", name, q_got,
                  q_ref);
    }
    free(ref), free(err), free(got16), free(ref16);
    layer_free(&l);
}

KP_CONFORMANCE(conf_moe_forward_w8a8) {
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    const mcase cases[] = {
        {KP_BF16, 33, 256, 384, 0, 0, 0, 0, 0},   /* inter 384: a column tile boundary inside h */
        {KP_BF16, 1, 256, 256, 0, 0, 0, 0, 0},    /* decode */
        {KP_F16, 9, 384, 128, 128, 0, 0, 1, 0},   /* shared expert (x's dtype), skewed routing */
        {KP_BF16, 40, 256, 256, 0, 1, 0, 1, 0},   /* UE8M0, skewed: experts 8..15 empty */
        {KP_BF16, 17, 256, 128, 384, 0, 0, 0, 1}, /* FP8 shared expert (V3's), inter_s over two tiles */
        {KP_BF16, 1, 256, 128, 128, 1, 0, 0, 1},  /* decode, FP8 shared expert, UE8M0 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) w8a8_forward(d, s, &cases[i]);
    kp_stream_destroy(s);
}

/* Token magnitudes 2^-10..2^10 (so activation scales span them), weight block scales
 * over 2^-10..2^10 / 64, outlier channels: a scale applied to the wrong token, group or
 * block cannot hide. */
KP_CONFORMANCE(conf_moe_forward_w8a8_scales) {
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    const mcase cases[] = {
        {KP_BF16, 42, 256, 256, 0, 0, 1, 0, 0},
        {KP_BF16, 21, 384, 256, 256, 1, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) w8a8_forward(d, s, &cases[i]);
    kp_stream_destroy(s);
}

/* Refused combinations: KP_ERR_INVALID_ARGUMENT (or the weights' own rule) with a
 * message, out and the workspace untouched, kp_op_supported agreeing. */
static void refused(kp_device *d, kp_stream *s, layer *l, const kp_moe_forward_params *p, kp_status code,
                    const char *needle) {
    CHECK_ERR(kp_op_supported(d, KP_OP_MOE_FORWARD, p), code, needle);
    CHECK_ERR(kp_moe_forward(s, p), code, needle);
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&l->out);
    for (int64_t i = 0; i < l->out.numel; i++)
        CHECK_MSG(isnan(l->out.host[i]), "refused call wrote out[%lld]", (long long)i);
}

KP_CONFORMANCE(conf_moe_forward_w8a8_refused) {
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    const mcase c = {KP_BF16, 3, 128, 128, 0, 0, 0, 0, 0};
    layer l;
    layer_make(d, &c, &l);
    kp_moe_forward_params p = l.p;
    /* bf16 weights (W16A16 layer) asked for FP8 activations */
    kp_conf_tensor w13 = kp_conf_random(d, "w13", KP_BF16, 3, SHAPE(E, 256, 128), -0.1, 0.1);
    kp_conf_tensor w2 = kp_conf_random(d, "w2", KP_BF16, 3, SHAPE(E, 128, 128), -0.1, 0.1);
    p.w13 = w13.t, p.w2 = w2.t, p.w13_scale = (kp_tensor){0}, p.w2_scale = (kp_tensor){0};
    refused(d, s, &l, &p, KP_ERR_INVALID_ARGUMENT, "needs FP8 e4m3 w13 and w2");
    p = l.p, p.w2 = w2.t, p.w2_scale = (kp_tensor){0}; /* FP8 w13, bf16 w2 */
    refused(d, s, &l, &p, KP_ERR_INVALID_ARGUMENT, "w2 is bf16");
    p = l.p, p.w2_scale = (kp_tensor){0}; /* FP8 w2 without its scales */
    refused(d, s, &l, &p, KP_ERR_INVALID_ARGUMENT, "w2_scale");
    p = l.p, p.activation_dtype = KP_F16; /* neither x's dtype nor e4m3 */
    refused(d, s, &l, &p, KP_ERR_INVALID_ARGUMENT, "activation_dtype is 1");
    p = l.p, p.activation_dtype = 0, p.activation_scale_ue8m0 = 1; /* UE8M0 without FP8 activations */
    refused(d, s, &l, &p, KP_ERR_INVALID_ARGUMENT, "activation_scale_ue8m0 is set");
    p = l.p, p.activation_scale_ue8m0 = 2;
    refused(d, s, &l, &p, KP_ERR_INVALID_ARGUMENT, "must be 0 or 1");
    /* FP8 shared weights without their scales, scales for bf16 shared weights, scales
     * without a shared expert, scales of the wrong shape */
    kp_conf_tensor sh13 = kp_conf_random(d, "shared_w13", KP_FP8_E4M3, 2, SHAPE(256, 128), -1.0, 1.0);
    kp_conf_tensor sh2 = kp_conf_random(d, "shared_w2", KP_FP8_E4M3, 2, SHAPE(128, 128), -1.0, 1.0);
    kp_conf_tensor sh2_bf16 = kp_conf_random(d, "shared_w2", KP_BF16, 2, SHAPE(128, 128), -0.1, 0.1);
    kp_conf_tensor ss13 = kp_conf_random(d, "shared_w13_scale", KP_F32, 2, SHAPE(2, 1), 0.01, 0.02);
    kp_conf_tensor ss2 = kp_conf_random(d, "shared_w2_scale", KP_F32, 2, SHAPE(1, 1), 0.01, 0.02);
    p = l.p, p.shared_w13 = sh13.t, p.shared_w2 = sh2.t, p.shared_w13_scale = ss13.t;
    refused(d, s, &l, &p, KP_ERR_INVALID_ARGUMENT, "shared_w2_scale (f32 block scales) is required");
    p = l.p, p.shared_w13 = sh13.t, p.shared_w2 = sh2_bf16.t, p.shared_w13_scale = ss13.t, p.shared_w2_scale = ss2.t;
    refused(d, s, &l, &p, KP_ERR_INVALID_ARGUMENT, "shared_w2_scale is given but shared_w2 is bf16");
    p = l.p, p.shared_w13_scale = ss13.t;
    refused(d, s, &l, &p, KP_ERR_INVALID_ARGUMENT, "without a shared expert");
    p = l.p, p.shared_w13 = sh13.t, p.shared_w2 = sh2.t, p.shared_w13_scale = ss2.t, p.shared_w2_scale = ss2.t;
    refused(d, s, &l, &p, KP_ERR_INVALID_SHAPE, "shared_w13_scale");
    kp_conf_free(&sh13), kp_conf_free(&sh2), kp_conf_free(&sh2_bf16), kp_conf_free(&ss13), kp_conf_free(&ss2);
    /* the workspace: h in e4m3 instead of bf16, plus e4m3 x, x's and h's scales, and h in
     * f32 (the GPU backends quantize it from there) (256-byte aligned regions); one byte
     * short is refused */
    p = l.p, p.activation_dtype = 0;
    size_t w8a16 = 0, w8a8 = 0, rows = (size_t)(c.t * TOPK);
#define AL(n) (((size_t)(n) + 255) / 256 * 256)
    CHECK_OK(kp_moe_forward_workspace_size(d, &p, &w8a16));
    CHECK_OK(kp_moe_forward_workspace_size(d, &l.p, &w8a8));
    size_t want = w8a16 - AL(rows * c.inter * 2) + AL(rows * c.inter) + AL(c.t * c.hidden) + AL(c.t * c.hidden / 128 * 4) +
                  AL(rows * c.inter / 128 * 4) + AL(rows * c.inter * 4);
#undef AL
    CHECK_MSG(w8a8 == want, "W8A8 workspace %zu bytes, expected %zu (W8A16: %zu)", w8a8, want, w8a16);
    kp_buffer *small;
    CHECK_OK(kp_buffer_alloc(d, w8a8 - 1, &small));
    p = l.p, p.workspace = small, p.workspace_offset = 0;
    refused(d, s, &l, &p, KP_ERR_OUT_OF_BOUNDS, "are needed");
    kp_buffer_free(small);
    kp_conf_free(&w13), kp_conf_free(&w2);
    layer_free(&l);
    kp_stream_destroy(s);
}
