/*
 * tests/conformance/test_conf_fp8.c — the FP8 data paths on every backend against the
 * float64 references of tests/ref/ref_fp8.c: kp_kv_cache_store into f32/f16/bf16 and
 * e4m3 caches (per-tensor and per-block scales 2^-10..2^10 and between, outliers,
 * saturation, exact ties, MLA's single latent cache, skipped tokens, bad slots).
 */
#include "kp_conformance.h"
#include "ref_fp8.h"
#include "ref_moe.h"

#include <math.h>
#include <stdlib.h>

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})

static kp_stream *new_stream(kp_device *d) {
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    return s;
}

/* ---- kv_cache_store ---- */

typedef struct kv_case {
    kp_dtype dt;       /* key / value */
    kp_dtype cache_dt; /* dt or KP_FP8_E4M3 */
    int64_t t, h, d, dv; /* dv 0: MLA, one cache */
    int64_t num_blocks, block_size;
    double k_scale, v_scale; /* per tensor; per_block: times 2^(blk % 5 - 2) */
    int per_block;
    double range;            /* inputs uniform in +-range * scale, 4 outlier channels x 16 */
    int skip_every;          /* every skip_every-th token gets slot -1 (0: none) */
} kv_case;

/* Slots: a random injective choice among the cache's slots, some tokens skipped. */
static double *pick_slots(const kv_case *c) {
    int64_t cap = c->num_blocks * c->block_size;
    CHECK(c->t <= cap);
    int64_t *perm = malloc((size_t)cap * sizeof *perm);
    for (int64_t i = 0; i < cap; i++) perm[i] = i;
    for (int64_t i = cap - 1; i > 0; i--) {
        int64_t j = (int64_t)(kp_test_rand_u64() % (uint64_t)(i + 1)), x = perm[i];
        perm[i] = perm[j], perm[j] = x;
    }
    double *slots = malloc((size_t)c->t * sizeof *slots);
    for (int64_t i = 0; i < c->t; i++) slots[i] = c->skip_every && i % c->skip_every == 1 ? -1.0 : (double)perm[i];
    free(perm);
    return slots;
}

static kp_conf_tensor scales_for(kp_device *d, const char *name, const kv_case *c, double base) {
    int64_t n = c->per_block ? c->num_blocks : 1;
    double *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = c->per_block ? base * ldexp(1.0, (int)(i % 5) - 2) : base;
    kp_conf_tensor s = kp_conf_from(d, name, KP_F32, 1, SHAPE(n), v);
    free(v);
    return s;
}

static void kv_run(kp_device *d, kp_stream *s, const kv_case *c) {
    const int fp8 = c->cache_dt == KP_FP8_E4M3, has_v = c->dv > 0;
    double *slots = pick_slots(c);
    kp_conf_tensor slot_t = kp_conf_from(d, "slot_mapping", KP_I32, 1, SHAPE(c->t), slots);
    kp_conf_tensor ks = {0}, vs = {0};
    if (fp8) {
        ks = scales_for(d, "k_scale", c, c->k_scale);
        if (has_v) vs = scales_for(d, "v_scale", c, c->v_scale);
    }
    /* inputs: the largest scale in use times range, so some saturate under smaller block scales */
    double kr = c->range * (fp8 ? c->k_scale : 1.0), vr = c->range * (fp8 ? c->v_scale : 1.0);
    kp_conf_tensor key = kp_conf_random_outliers(d, "key", c->dt, 3, SHAPE(c->t, c->h, c->d), -kr, kr, 4, 16.0);
    kp_conf_tensor val = {0};
    if (has_v) val = kp_conf_random_outliers(d, "value", c->dt, 3, SHAPE(c->t, c->h, c->dv), -vr, vr, 4, 16.0);
    /* caches: random old contents that must survive outside the mapped slots */
    kp_conf_tensor kc = kp_conf_random(d, "k_cache", c->cache_dt, 4, SHAPE(c->num_blocks, c->block_size, c->h, c->d),
                                       -2.0, 2.0);
    kp_conf_tensor vc = {0};
    if (has_v)
        vc = kp_conf_random(d, "v_cache", c->cache_dt, 4, SHAPE(c->num_blocks, c->block_size, c->h, c->dv), -2.0, 2.0);
    kp_kv_cache_store_params p = {key.t, val.t, kc.t, vc.t, slot_t.t, ks.t, vs.t};
    if (!has_v) memset(&p.value, 0, sizeof p.value), memset(&p.v_cache, 0, sizeof p.v_cache);
    if (!fp8 || !has_v) memset(&p.v_scale, 0, sizeof p.v_scale);
    if (!fp8) memset(&p.k_scale, 0, sizeof p.k_scale);
    kp_test_require_op(d, KP_OP_KV_CACHE_STORE, &p);
    CHECK_OK(kp_kv_cache_store(s, &p));
    CHECK_OK(kp_stream_sync(s));

    char what[160];
    snprintf(what, sizeof what, "kv_cache_store %s -> %s T %lld h %lld d %lld/%lld block %lld%s scale %g/%g",
             kp_dtype_name(c->dt), kp_dtype_name(c->cache_dt), (long long)c->t, (long long)c->h, (long long)c->d,
             (long long)c->dv, (long long)c->block_size, c->per_block ? " per-block" : "", c->k_scale, c->v_scale);
    for (int which = 0; which < (has_v ? 2 : 1); which++) {
        kp_conf_tensor *cache = which ? &vc : &kc, *src = which ? &val : &key;
        kp_conf_tensor *sc = which ? &vs : &ks;
        double *old = malloc((size_t)cache->numel * sizeof *old);
        memcpy(old, cache->host, (size_t)cache->numel * sizeof *old);
        kp_conf_download(cache);
        double *lo = malloc((size_t)cache->numel * sizeof *lo), *hi = malloc((size_t)cache->numel * sizeof *hi);
        ref_kv_cache_store(src->host, slots, c->t, c->h, which ? c->dv : c->d, c->num_blocks, c->block_size, old,
                           fp8 ? sc->host : NULL, fp8 ? sc->numel : 0, lo, hi);
        char w2[200];
        snprintf(w2, sizeof w2, "%s: %s", what, which ? "v_cache" : "k_cache");
        kp_conf_check_grid(w2, cache, lo, hi, "block,offset,head,col");
        free(old), free(lo), free(hi);
    }
    free(slots);
    kp_conf_free(&slot_t), kp_conf_free(&key), kp_conf_free(&kc);
    if (has_v) kp_conf_free(&val), kp_conf_free(&vc);
    if (fp8) {
        kp_conf_free(&ks);
        if (has_v) kp_conf_free(&vs);
    }
}

KP_CONFORMANCE(conf_kv_cache_store) {
    kp_stream *s = new_stream(d);
    const kv_case cases[] = {
        {KP_F32, KP_F32, 37, 2, 64, 64, 6, 16, 1, 1, 0, 2.0, 5},
        {KP_F16, KP_F16, 1, 8, 128, 128, 2, 16, 1, 1, 0, 2.0, 0},
        {KP_BF16, KP_BF16, 70, 1, 256, 128, 3, 64, 1, 1, 0, 2.0, 7},
        {KP_BF16, KP_BF16, 33, 1, 576, 0, 2, 64, 1, 1, 0, 2.0, 4}, /* MLA latent cache */
        {KP_F16, KP_F16, 0, 2, 64, 64, 2, 16, 1, 1, 0, 2.0, 0},     /* no tokens */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) kv_run(d, s, &cases[i]);
    kp_stream_destroy(s);
}

KP_CONFORMANCE(conf_kv_cache_store_fp8) {
    kp_stream *s = new_stream(d);
    const kv_case cases[] = {
        /* per-tensor scales across 2^-10..2^10, powers of two and between */
        {KP_BF16, KP_FP8_E4M3, 37, 2, 128, 128, 6, 16, 0x1p-10, 0x1p10, 0, 500.0, 5},
        {KP_F16, KP_FP8_E4M3, 50, 8, 64, 64, 4, 16, 0.0371, 3.3, 0, 460.0, 0},
        {KP_F32, KP_FP8_E4M3, 29, 1, 128, 128, 2, 64, 1.0, 0x1p-7, 0, 300.0, 3},
        /* per-block scales (base times 2^-2..2^2): big blocks saturate, small ones underflow */
        {KP_BF16, KP_FP8_E4M3, 61, 4, 128, 128, 5, 16, 0.75, 1.7, 1, 448.0, 6},
        /* MLA: one latent cache of 576, FlashMLA's block size */
        {KP_BF16, KP_FP8_E4M3, 40, 1, 576, 0, 2, 64, 0.0625, 0, 0, 400.0, 9},
        {KP_F16, KP_FP8_E4M3, 40, 1, 576, 0, 3, 64, 0x1p5, 0, 1, 450.0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) kv_run(d, s, &cases[i]);
    kp_stream_destroy(s);
}

/* Exact rounding at scale 1: every tie between neighbouring e4m3 values (to even), the
 * values a hair either side of each tie, subnormals, the saturation boundary, NaN. */
KP_CONFORMANCE(conf_kv_cache_store_fp8_rounding) {
    kp_stream *s = new_stream(d);
    enum { N = 1024 };
    double x[N];
    int n = 0;
    for (int b = 0; b < 0x7e && n + 6 <= N; b++) {
        double lo = ref_fp8_e4m3((unsigned char)b), hi = ref_fp8_e4m3((unsigned char)(b + 1));
        double mid = (lo + hi) / 2;
        x[n++] = mid, x[n++] = -mid;
        x[n++] = nextafterf((float)mid, 0.0f), x[n++] = nextafterf((float)mid, 1000.0f);
        x[n++] = lo, x[n++] = -hi;
    }
    const double special[] = {448.0, 449.0, 463.9, 464.0, 470.0, -475.0, 480.0, 1e6, -1e30, 0x1p-10, 0x1p-11, 3 * 0x1p-11,
                              -0x1p-10, 1e-30, 0.0, -0.0, INFINITY, -INFINITY, NAN};
    for (size_t i = 0; i < sizeof special / sizeof special[0] && n < N; i++) x[n++] = special[i];
    while (n % 16) x[n++] = 1.0;
    int64_t t = n / 16;
    kp_conf_tensor key = kp_conf_from(d, "key", KP_F32, 3, SHAPE(t, 1, 16), x);
    kp_conf_tensor kc = kp_conf_random(d, "k_cache", KP_FP8_E4M3, 4, SHAPE(t, 1, 1, 16), -1.0, 1.0);
    double *slots = malloc((size_t)t * sizeof *slots), one = 1.0;
    for (int64_t i = 0; i < t; i++) slots[i] = (double)(t - 1 - i);
    kp_conf_tensor slot_t = kp_conf_from(d, "slot_mapping", KP_I32, 1, SHAPE(t), slots);
    kp_conf_tensor ks = kp_conf_from(d, "k_scale", KP_F32, 1, SHAPE(1), &one);
    kp_kv_cache_store_params p = {.key = key.t, .k_cache = kc.t, .slot_mapping = slot_t.t, .k_scale = ks.t};
    kp_test_require_op(d, KP_OP_KV_CACHE_STORE, &p);
    CHECK_OK(kp_kv_cache_store(s, &p));
    CHECK_OK(kp_stream_sync(s));
    double *old = malloc((size_t)kc.numel * sizeof *old), *lo = malloc((size_t)kc.numel * sizeof *lo),
           *hi = malloc((size_t)kc.numel * sizeof *hi);
    memcpy(old, kc.host, (size_t)kc.numel * sizeof *old);
    kp_conf_download(&kc);
    ref_kv_cache_store(key.host, slots, t, 1, 16, t, 1, old, ks.host, 1, lo, hi);
    kp_conf_check_grid("e4m3 rounding: ties to even, saturation, NaN", &kc, lo, hi, "block,offset,head,col");
    free(old), free(lo), free(hi), free(slots);
    kp_conf_free(&key), kp_conf_free(&kc), kp_conf_free(&slot_t), kp_conf_free(&ks);
    kp_stream_destroy(s);
}

/* A slot past the cache: the CPU backend reports it and writes nothing; a GPU backend
 * must not write outside the cache (guards) — the other tokens' rows are unspecified. */
KP_CONFORMANCE(conf_kv_cache_store_bad_slot) {
    kp_stream *s = new_stream(d);
    kp_conf_tensor key = kp_conf_random(d, "key", KP_BF16, 3, SHAPE(3, 2, 64), -1.0, 1.0);
    kp_conf_tensor kc = kp_conf_random(d, "k_cache", KP_BF16, 4, SHAPE(2, 16, 2, 64), -1.0, 1.0);
    const double slots[3] = {3, 32, 5}; /* 32 slots: 32 is one past the end */
    kp_conf_tensor slot_t = kp_conf_from(d, "slot_mapping", KP_I32, 1, SHAPE(3), slots);
    kp_kv_cache_store_params p = {.key = key.t, .k_cache = kc.t, .slot_mapping = slot_t.t};
    kp_test_require_op(d, KP_OP_KV_CACHE_STORE, &p);
    unsigned char *snap = kp_test_snapshot(kc.g.buf);
    if (kp_test_bad_index_result(d, kp_kv_cache_store(s, &p), "slot_mapping[1]")) {
        CHECK_OK(kp_stream_sync(s));
        kp_test_unchanged(kc.g.buf, snap);
    } else {
        CHECK_OK(kp_stream_sync(s));
        free(snap);
        kp_guarded_check(&kc.g, "k_cache");
    }
    kp_conf_free(&key), kp_conf_free(&kc), kp_conf_free(&slot_t);
    kp_stream_destroy(s);
}

/* ---- quantize_fp8 ---- */

typedef struct quant_case {
    kp_dtype dt;
    int64_t t, k;
    int layout, ue8m0;
    int64_t t_pad; /* column-major: scale columns (>= t) */
} quant_case;

static void quant_run(kp_device *d, kp_stream *s, const quant_case *c) {
    const int64_t groups = c->k / 128, n = c->t * c->k;
    /* rows scaled by 2^-10..2^10 in turn, 3 outlier channels x 40, token 1 all zeros */
    double *xv = malloc((size_t)(n ? n : 1) * sizeof *xv);
    int64_t outl[3];
    for (int i = 0; i < 3; i++) outl[i] = (int64_t)(kp_test_rand_u64() % (uint64_t)c->k);
    for (int64_t tok = 0; tok < c->t; tok++) {
        double f = ldexp(1.0, (int)(tok % 21) - 10);
        for (int64_t i = 0; i < c->k; i++) {
            double v = kp_test_rand_uniform(-1.0, 1.0) * f;
            if (i == outl[0] || i == outl[1] || i == outl[2]) v *= 40.0;
            xv[tok * c->k + i] = tok == 1 ? 0.0 : v;
        }
    }
    kp_conf_tensor x = kp_conf_from(d, "x", c->dt, 2, SHAPE(c->t, c->k), xv);
    kp_conf_tensor out = kp_conf_output(d, "out", KP_FP8_E4M3, 2, SHAPE(c->t, c->k));
    const int col = c->layout == KP_FP8_SCALE_COL_MAJOR;
    kp_conf_tensor sc = col ? kp_conf_output(d, "scale", KP_F32, 2, SHAPE(groups, c->t_pad))
                            : kp_conf_output(d, "scale", KP_F32, 2, SHAPE(c->t, groups));
    kp_quantize_fp8_params p = {x.t, out.t, sc.t, c->layout, c->ue8m0};
    kp_test_require_op(d, KP_OP_QUANTIZE_FP8, &p);
    CHECK_OK(kp_quantize_fp8(s, &p));
    CHECK_OK(kp_stream_sync(s));
    kp_conf_download(&out);
    kp_conf_download(&sc);

    char what[160];
    snprintf(what, sizeof what, "quantize_fp8 %s T %lld K %lld %s%s", kp_dtype_name(c->dt), (long long)c->t,
             (long long)c->k, col ? "column-major" : "row-major", c->ue8m0 ? " ue8m0" : "");
    double *want = malloc((size_t)(c->t * groups + 1) * sizeof *want), *got = malloc((size_t)(c->t * groups + 1) * sizeof *got);
    ref_quantize_fp8_scales(x.host, c->t, c->k, c->ue8m0, want);
    /* scales: UE8M0 exact (a power of two from amax's bits); amax / 448 to f32 division
     * accuracy (OpenCL's is 2.5 ulp: 2^-21 relative covers it) */
    for (int64_t tok = 0; tok < c->t; tok++)
        for (int64_t g = 0; g < groups; g++) {
            double v = got[tok * groups + g] = sc.host[col ? g * c->t_pad + tok : tok * groups + g];
            double w = want[tok * groups + g], tol = c->ue8m0 ? 0.0 : 0x1p-21 * w;
            CHECK_MSG(fabs(v - w) <= tol, "%s: scale of token %lld group %lld is %.9g, want %.9g", what, (long long)tok,
                      (long long)g, v, w);
        }
    /* column-major padding: untouched (still the NaN poison) */
    if (col)
        for (int64_t g = 0; g < groups; g++)
            for (int64_t tok = c->t; tok < c->t_pad; tok++)
                CHECK_MSG(isnan(sc.host[g * c->t_pad + tok]), "%s: scale padding (group %lld, column %lld) was written",
                          what, (long long)g, (long long)tok);
    /* values: e4m3(x / scale) with the scale the device chose */
    double *lo = malloc((size_t)(n ? n : 1) * sizeof *lo), *hi = malloc((size_t)(n ? n : 1) * sizeof *hi);
    for (int64_t i = 0; i < n; i++)
        ref_e4m3_quantize_pair(x.host[i], got[(i / c->k) * groups + (i % c->k) / 128], &lo[i], &hi[i]);
    kp_conf_check_grid(what, &out, lo, hi, "token,col");
    free(xv), free(want), free(got), free(lo), free(hi);
    kp_conf_free(&x), kp_conf_free(&out), kp_conf_free(&sc);
}

KP_CONFORMANCE(conf_quantize_fp8) {
    kp_stream *s = new_stream(d);
    const quant_case cases[] = {
        {KP_BF16, 130, 512, KP_FP8_SCALE_ROW_MAJOR, 0, 0},
        {KP_F16, 7, 256, KP_FP8_SCALE_ROW_MAJOR, 0, 0},
        {KP_F32, 1, 128, KP_FP8_SCALE_ROW_MAJOR, 0, 0},
        {KP_BF16, 2, 7168, KP_FP8_SCALE_ROW_MAJOR, 0, 0}, /* DeepSeek-V3 hidden */
        {KP_BF16, 0, 256, KP_FP8_SCALE_ROW_MAJOR, 0, 0},  /* no tokens */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) quant_run(d, s, &cases[i]);
    kp_stream_destroy(s);
}

/* DeepGEMM's layouts: column-major scales with T padded to a multiple of 4, UE8M0. */
KP_CONFORMANCE(conf_quantize_fp8_deepgemm_layouts) {
    kp_stream *s = new_stream(d);
    const quant_case cases[] = {
        {KP_BF16, 37, 512, KP_FP8_SCALE_COL_MAJOR, 0, 40},
        {KP_F16, 5, 256, KP_FP8_SCALE_COL_MAJOR, 1, 8},
        {KP_BF16, 64, 384, KP_FP8_SCALE_ROW_MAJOR, 1, 0},
        {KP_F32, 3, 128, KP_FP8_SCALE_COL_MAJOR, 1, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) quant_run(d, s, &cases[i]);
    kp_stream_destroy(s);
}

/* ---- FP8 KV caches in paged decode and MLA decode ---- */

#include "conf_attention.h"

/* (scale, e4m3 range): dequantized values of about +-1 over scales 2^-10..2^10 (at 2^10
 * the cache holds only subnormals); the range stays within e4m3's 448. */
static const double fp8_scales[5][2] = {{0x1p-10, 448.0}, {0x1p-3, 8.0}, {0.0371, 27.0}, {1.0, 1.0}, {0x1p10, 0x1p-8}};

KP_CONFORMANCE(conf_attn_decode_fp8_kv) {
    static const int32_t lens[3] = {77, 1, 200}, splits[3] = {1, 3, 0};
    const kp_dtype dts[3] = {KP_BF16, KP_F16, KP_F32};
    kp_stream *s = new_stream(d);
    for (int i = 0; i < 5; i++) {
        conf_paged_case c = {.dt = dts[i % 3], .b = 3, .s_q = 1 + i % 2, .h_q = 8, .h_kv = 2, .d = 128, .dv = 128,
            .block_size = i % 2 ? 64 : 16, .seq_lens = lens, .causal = 1, .lse = 1, .fp8 = 1,
            .fp8_per_block = i >= 3, .fp8_scale = fp8_scales[i][0], .fp8_range = fp8_scales[i][1]};
        if (i == 2) c.splits = splits, c.nsplits = 3;
        conf_run_paged(d, s, &c);
    }
    /* outlier key channels (x100 within e4m3's range), GQA 8 */
    conf_paged_case o = {.dt = KP_BF16, .b = 3, .s_q = 2, .h_q = 16, .h_kv = 2, .d = 128, .dv = 128, .block_size = 16,
        .seq_lens = lens, .causal = 1, .lse = 1, .outliers = 1, .fp8 = 1, .fp8_per_block = 1, .fp8_scale = 0.25,
        .fp8_range = 400.0};
    conf_run_paged(d, s, &o);
    kp_stream_destroy(s);
}

#define MLA_SCALE 0.1352337788608801

KP_CONFORMANCE(conf_mla_decode_fp8_kv) {
    static const int32_t lens[2] = {300, 65}, splits[2] = {1, 0};
    const kp_dtype dts[2] = {KP_BF16, KP_F16};
    kp_stream *s = new_stream(d);
    for (int i = 0; i < 5; i++) {
        conf_paged_case c = {.dt = dts[i % 2], .b = 2, .s_q = 1 + i % 2, .h_q = i == 4 ? 128 : 16, .h_kv = 1, .d = 576,
            .dv = 512, .block_size = 64, .seq_lens = lens, .causal = 1, .lse = 1, .scale = MLA_SCALE, .mla = 1,
            .splits = splits, .nsplits = 2, .fp8 = 1, .fp8_per_block = i % 2, .fp8_scale = fp8_scales[i][0],
            .fp8_range = fp8_scales[i][1], .outliers = i == 3};
        if (i == 3) c.fp8_range = 400.0, c.fp8_scale = 0x1p-6;
        conf_run_paged(d, s, &c);
    }
    /* few heads (h_q 4 x s_q 2: 8 query rows, the cpu backend's decode-sized path, V read
     * from the decoded latent row's first 512 columns) */
    conf_paged_case f = {.dt = KP_BF16, .b = 2, .s_q = 2, .h_q = 4, .h_kv = 1, .d = 576, .dv = 512, .block_size = 64,
        .seq_lens = lens, .causal = 1, .lse = 1, .scale = MLA_SCALE, .mla = 1, .fp8 = 1, .fp8_per_block = 1,
        .fp8_scale = 0.0371, .fp8_range = 27.0};
    conf_run_paged(d, s, &f);
    kp_stream_destroy(s);
}
