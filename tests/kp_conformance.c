/*
 * tests/kp_conformance.c — see kp_conformance.h.
 */
#include "kp_conformance.h"
#include "ref_fp8.h"
#include "ref_moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Through double arithmetic rather than bit tricks: a second, independent derivation. */
static uint16_t to_f16(double x) {
    if (isnan(x)) return 0x7e00;
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    double a = fabs(x);
    if (a >= 65520.0) return sign | 0x7c00; /* rounds to inf */
    if (a < 0x1p-14) {                      /* subnormal: multiples of 2^-24 */
        double q = nearbyint(a * 0x1p24);   /* default rounding: nearest even */
        return sign | (uint16_t)q;
    }
    int e;
    double m = frexp(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    double q = nearbyint(m * 2048.0);       /* 11 significant bits */
    if (q == 2048.0) q = 1024.0, e++;
    if (e + 14 >= 31) return sign | 0x7c00;
    return sign | (uint16_t)((e + 14) << 10 | ((uint16_t)q - 1024));
}

static double from_f16(uint16_t h) {
    int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    double s = (h & 0x8000) ? -1.0 : 1.0;
    if (exp == 0x1f) return man ? NAN : s * INFINITY;
    if (exp == 0) return s * ldexp(man, -24);
    return s * ldexp(1024 + man, exp - 25);
}

double kp_conf_round(double x, kp_dtype dt) {
    switch (dt) {
    case KP_F32: return (double)(float)x;
    case KP_F16: return from_f16(to_f16(x));
    case KP_BF16: return (double)from_bf16(to_bf16((float)x));
    case KP_I32: return (double)(int32_t)x;
    case KP_FP8_E4M3: return ref_e4m3_round(x);
    default: return x;
    }
}

void kp_conf_pack(const double *x, int64_t n, kp_dtype dt, void *out) {
    for (int64_t i = 0; i < n; i++) {
        switch (dt) {
        case KP_F32: ((float *)out)[i] = (float)x[i]; break;
        case KP_F16: ((uint16_t *)out)[i] = to_f16(x[i]); break;
        case KP_BF16: ((uint16_t *)out)[i] = to_bf16((float)x[i]); break;
        case KP_I32: ((int32_t *)out)[i] = (int32_t)x[i]; break;
        case KP_FP8_E4M3: ((unsigned char *)out)[i] = ref_e4m3_encode(x[i]); break;
        default: kp_test_fail(__FILE__, __LINE__, "kp_conf_pack: dtype %s", kp_dtype_name(dt));
        }
    }
}

void kp_conf_unpack(const void *in, int64_t n, kp_dtype dt, double *x) {
    for (int64_t i = 0; i < n; i++) {
        switch (dt) {
        case KP_F32: x[i] = ((const float *)in)[i]; break;
        case KP_F16: x[i] = from_f16(((const uint16_t *)in)[i]); break;
        case KP_BF16: x[i] = from_bf16(((const uint16_t *)in)[i]); break;
        case KP_I32: x[i] = ((const int32_t *)in)[i]; break;
        case KP_FP8_E4M3: x[i] = ref_fp8_e4m3(((const unsigned char *)in)[i]); break;
        default: kp_test_fail(__FILE__, __LINE__, "kp_conf_unpack: dtype %s", kp_dtype_name(dt));
        }
    }
}

static kp_conf_tensor alloc_conf(kp_device *d, const char *name, kp_dtype dt, int ndim, const int64_t *shape) {
    kp_conf_tensor c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.numel = 1;
    for (int i = 0; i < ndim; i++) c.numel *= shape[i];
    size_t bytes = (size_t)c.numel * kp_dtype_size(dt);
    c.g = kp_guarded_alloc(d, bytes ? bytes : 1);
    CHECK_OK(kp_tensor_init(&c.t, c.g.buf, c.g.offset, dt, ndim, shape, NULL));
    c.host = calloc((size_t)(c.numel ? c.numel : 1), sizeof *c.host);
    CHECK(c.host != NULL);
    return c;
}

static void upload(kp_conf_tensor *c) {
    size_t bytes = (size_t)c->numel * kp_dtype_size(c->t.dtype);
    void *packed = malloc(bytes ? bytes : 1);
    CHECK(packed != NULL);
    kp_conf_pack(c->host, c->numel, c->t.dtype, packed);
    kp_guarded_write(&c->g, packed, bytes);
    free(packed);
}

kp_conf_tensor kp_conf_random(kp_device *d, const char *name, kp_dtype dt, int ndim, const int64_t *shape,
                              double lo, double hi) {
    kp_conf_tensor c = alloc_conf(d, name, dt, ndim, shape);
    for (int64_t i = 0; i < c.numel; i++) c.host[i] = kp_conf_round(kp_test_rand_uniform(lo, hi), dt);
    upload(&c);
    return c;
}

kp_conf_tensor kp_conf_random_outliers(kp_device *d, const char *name, kp_dtype dt, int ndim, const int64_t *shape,
                                       double lo, double hi, int channels, double factor) {
    kp_conf_tensor c = alloc_conf(d, name, dt, ndim, shape);
    int64_t cols = shape[ndim - 1];
    char *hot = calloc((size_t)(cols ? cols : 1), 1);
    CHECK(hot != NULL);
    for (int i = 0; i < channels && cols > 0; i++) hot[kp_test_rand_u64() % (uint64_t)cols] = 1;
    for (int64_t i = 0; i < c.numel; i++)
        c.host[i] = kp_conf_round(kp_test_rand_uniform(lo, hi) * (hot[i % cols] ? factor : 1.0), dt);
    free(hot);
    upload(&c);
    return c;
}

kp_conf_tensor kp_conf_from(kp_device *d, const char *name, kp_dtype dt, int ndim, const int64_t *shape,
                            const double *values) {
    kp_conf_tensor c = alloc_conf(d, name, dt, ndim, shape);
    for (int64_t i = 0; i < c.numel; i++) c.host[i] = kp_conf_round(values[i], dt);
    upload(&c);
    return c;
}

kp_conf_tensor kp_conf_output(kp_device *d, const char *name, kp_dtype dt, int ndim, const int64_t *shape) {
    kp_conf_tensor c = alloc_conf(d, name, dt, ndim, shape);
    kp_guarded_poison(&c.g, 0xFF);
    return c;
}

void kp_conf_download(kp_conf_tensor *c) {
    size_t bytes = (size_t)c->numel * kp_dtype_size(c->t.dtype);
    kp_guarded_check(&c->g, c->name);
    void *packed = malloc(bytes ? bytes : 1);
    CHECK(packed != NULL);
    kp_guarded_read(&c->g, packed, bytes);
    kp_conf_unpack(packed, c->numel, c->t.dtype, c->host);
    free(packed);
}

void kp_conf_free(kp_conf_tensor *c) {
    kp_guarded_free(&c->g);
    free(c->host);
    c->host = NULL;
}

double kp_conf_tolerance(kp_dtype dt) {
    switch (dt) {
    case KP_F32: return 1e-5;
    case KP_F16: return 2e-3;
    case KP_BF16: return 1.6e-2;
    default: return 0.0;
    }
}

double kp_conf_unit(kp_dtype dt) {
    switch (dt) {
    case KP_F16: return 0x1p-11;
    case KP_BF16: return 0x1p-8;
    default: return 0x1p-24;
    }
}

ref_prec kp_conf_prec(kp_dtype dt) {
    ref_prec p = {kp_conf_unit(dt), 0x1p-150};
    if (dt == KP_F16) p.tiny = 0x1p-25;
    if (dt == KP_BF16) p.tiny = 0x1p-134;
    return p;
}

kp_conf_result kp_conf_compare(kp_dtype dt, const double *got, const double *ref, const double *err, int64_t n) {
    kp_conf_result r = {1, -1, 0, 0, 0, 0, 0, 0, NULL};
    double u = kp_conf_unit(dt), err2 = 0.0, ref2 = 0.0, worst_ratio = -1.0;
    int64_t finite = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(ref[i])) ref2 += ref[i] * ref[i], finite++;
    double floor_abs = finite ? u * sqrt(ref2 / (double)finite) / 4.0 : 0.0;
    for (int64_t i = 0; i < n; i++) {
        const char *broken = NULL;
        double bound = 0.0, ratio;
        if (isnan(ref[i])) {
            broken = isnan(got[i]) ? NULL : "poison";
            ratio = broken ? INFINITY : 0.0;
        } else if (isinf(ref[i])) {
            broken = got[i] == ref[i] ? NULL : "inf";
            ratio = broken ? INFINITY : 0.0;
        } else if (isnan(got[i])) {
            broken = "nan";
            ratio = INFINITY;
        } else {
            double e = fabs(got[i] - ref[i]);
            bound = 2.0 * (u * fabs(ref[i]) + 3.0 * (err ? err[i] : 0.0)) + floor_abs;
            err2 += e * e;
            ratio = bound > 0 ? e / bound : (e > 0 ? INFINITY : 0.0);
            if (e > bound) broken = "element";
        }
        if (broken) {
            r.over++;
            if (r.ok) r.rule = broken;
            r.ok = 0;
        }
        if (ratio > worst_ratio) {
            worst_ratio = ratio;
            r.worst = i, r.worst_got = got[i], r.worst_ref = ref[i], r.worst_bound = bound;
        }
    }
    r.rel_l2 = ref2 > 0 ? sqrt(err2 / ref2) : sqrt(err2);
    if (r.ok && r.rel_l2 > kp_conf_tolerance(dt)) r.ok = 0, r.rule = "rel_l2";
    if (r.ok && dt == KP_F32 && finite >= 64) {
        /* f32 outputs (lse among them) unbiased: the mean signed error, in ulps of
         * max(|ref|, 1), within half an ulp plus four standard errors of that mean */
        double sum = 0.0, sum2 = 0.0;
        for (int64_t i = 0; i < n; i++) {
            if (!isfinite(ref[i])) continue;
            double e = (got[i] - ref[i]) / ldexp(1.0, ilogb(fmax(fabs(ref[i]), 1.0)) - 23);
            sum += e, sum2 += e * e;
        }
        double mean = sum / (double)finite, sd = sqrt(fmax(sum2 / (double)finite - mean * mean, 0.0));
        r.bias_ulps = mean;
        if (fabs(mean) > 0.5 + 4.0 * sd / sqrt((double)finite)) r.ok = 0, r.rule = "bias";
    }
    return r;
}

/* "token 3, head 1, col 17" from a flat index, the shape and "token,head,col". */
void kp_conf_index_name(int64_t i, int ndim, const int64_t *shape, const char *dims, char *out, size_t len) {
    int64_t idx[KP_MAX_DIMS] = {0};
    for (int d = ndim - 1; d >= 0; d--) {
        int64_t ext = shape[d] > 0 ? shape[d] : 1;
        idx[d] = i % ext;
        i /= ext;
    }
    size_t used = 0;
    out[0] = '\0';
    const char *name = dims;
    for (int d = 0; d < ndim && used < len; d++) {
        size_t nl = name ? strcspn(name, ",") : 0;
        used += (size_t)snprintf(out + used, len - used, "%s%.*s%s%lld", d ? ", " : "", (int)nl, name ? name : "",
                                 nl ? " " : "", (long long)idx[d]);
        if (name) name = name[nl] == ',' ? name + nl + 1 : NULL;
    }
}

void kp_conf_check_at(const char *what, kp_dtype dt, const double *got, const double *ref, const double *err,
                      int64_t n, int ndim, const int64_t *shape, const char *dims, const char *file, int line) {
    kp_conf_result r = kp_conf_compare(dt, got, ref, err, n);
    if (r.ok) return;
    char where[160] = "none";
    if (r.worst >= 0) kp_conf_index_name(r.worst, ndim, shape, dims, where, sizeof where);
    kp_test_fail(file, line,
                 "%s: %s check failed: %lld of %lld elements over their bound, rel L2 %.3g (tolerance %.3g), "
                 "mean error %.2f ulps; worst at [%s] (flat %lld): %.9g, reference %.9g, |error| %.3g, bound %.3g",
                 what, r.rule, (long long)r.over, (long long)n, r.rel_l2, kp_conf_tolerance(dt), r.bias_ulps, where,
                 (long long)r.worst, r.worst_got, r.worst_ref, fabs(r.worst_got - r.worst_ref), r.worst_bound);
}

void kp_conf_check_ints_at(const char *what, const double *got, const double *ref, int64_t n, const char *file,
                           int line) {
    for (int64_t i = 0; i < n; i++)
        if (got[i] != ref[i])
            kp_test_fail(file, line, "%s: element %lld is %.0f, expected %.0f", what, (long long)i, got[i], ref[i]);
}

void kp_conf_check_grid_at(const char *what, const double *got, const double *lo, const double *hi, int64_t n,
                           int ndim, const int64_t *shape, const char *dims, const char *file, int line) {
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++) {
        int ok = isnan(lo[i]) && isnan(hi[i]) ? isnan(got[i]) : (got[i] == lo[i] || got[i] == hi[i]);
        if (!ok && bad++ == 0) first = i;
    }
    if (bad) {
        char where[128];
        kp_conf_index_name(first, ndim, shape, dims, where, sizeof where);
        kp_test_fail(file, line, "%s: %lld of %lld elements off the grid; first at %s: got %.9g, want %.9g or %.9g",
                     what, (long long)bad, (long long)n, where, got[first], lo[first], hi[first]);
    }
}

const char *kp_conf_w8a8_may_decline(void) {
    const char *env = getenv("KPORT_GPU_KERNELS");
    int all = 0, gg = -1; /* a bare genN sets every kernel; grouped_gemm=genN wins over it */
    for (const char *p = env ? env : ""; *p;) {
        size_t n = strcspn(p, ",");
        if (n == 4 && strncmp(p, "gen", 3) == 0) all = strncmp(p, "gen1", 4) == 0;
        if (n >= 13 && strncmp(p, "grouped_gemm=", 13) == 0) gg = n == 17 && strncmp(p + 13, "gen1", 4) == 0;
        p += n + (p[n] == ',');
    }
    return (gg >= 0 ? gg : all) ? "opencl,cuda,hip" : NULL;
}

void kp_conf_run_mfma16_layout(const char *kernels, void (*body)(kp_device *d)) {
    const char *was = getenv("KPORT_GPU_KERNELS");
    char *saved = was ? strdup(was) : NULL;
    setenv("KPORT_GPU_KERNELS", kernels, 1);
    setenv("KPORT_OPENCL_TEST_DEFINES", "-DKP_WT_EMULATE_MFMA16", 1);
    kp_test_run_on("opencl", body);
    unsetenv("KPORT_OPENCL_TEST_DEFINES");
    if (saved) setenv("KPORT_GPU_KERNELS", saved, 1);
    else unsetenv("KPORT_GPU_KERNELS");
    free(saved);
}
