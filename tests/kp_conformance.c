/*
 * tests/kp_conformance.c — see kp_conformance.h.
 */
#include "kp_conformance.h"

#include <math.h>

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

void kp_conf_check_at(const char *what, const double *got, const double *ref, int64_t n, double tol,
                      double max_abs_tol, const char *file, int line) {
    double err2 = 0.0, ref2 = 0.0, max_abs = 0.0;
    int64_t worst = -1;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(got[i]) != isnan(ref[i]) || (isinf(ref[i]) && got[i] != ref[i]))
            kp_test_fail(file, line, "%s: element %lld is %g, reference %g", what, (long long)i, got[i], ref[i]);
        if (isinf(ref[i]) || isnan(ref[i])) continue; /* +inf lse of an empty row, matched above */
        double e = fabs(got[i] - ref[i]);
        err2 += e * e;
        ref2 += ref[i] * ref[i];
        if (e > max_abs || worst < 0) max_abs = e, worst = i;
    }
    double rel = ref2 > 0 ? sqrt(err2 / ref2) : sqrt(err2);
    if (rel > tol || (max_abs_tol > 0 && max_abs > max_abs_tol))
        kp_test_fail(file, line, "%s: rel L2 error %.3g (tolerance %.3g), max abs error %.3g at %lld (%g vs %g)", what,
                     rel, tol, max_abs, (long long)worst, worst >= 0 ? got[worst] : 0.0,
                     worst >= 0 ? ref[worst] : 0.0);
}

void kp_conf_check_ints_at(const char *what, const double *got, const double *ref, int64_t n, const char *file,
                           int line) {
    for (int64_t i = 0; i < n; i++)
        if (got[i] != ref[i])
            kp_test_fail(file, line, "%s: element %lld is %.0f, expected %.0f", what, (long long)i, got[i], ref[i]);
}
