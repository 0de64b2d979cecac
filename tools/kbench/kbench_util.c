/*
 * tools/kbench/kbench_util.c — random numbers, dtype rounding (bf16, f16, FP8 e4m3),
 * the relative-L2 error accumulator, growing arrays, clocks and sample statistics.
 *
 * Conversions are written out here (f16: the compiler's _Float16) rather than borrowed
 * from the library, so that the float64 checks stay independent of every backend.
 */
#include "kbench.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- random numbers: splitmix64, fixed seed, the same inputs on every device ---- */

static uint64_t rng_next(kb_rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double kb_rng_uniform(kb_rng *r, double lo, double hi) {
    return lo + (hi - lo) * ((double)(rng_next(r) >> 11) * 0x1.0p-53);
}

int64_t kb_rng_below(kb_rng *r, int64_t n) { return n <= 1 ? 0 : (int64_t)(rng_next(r) % (uint64_t)n); }

void kb_rng_distinct(kb_rng *r, int64_t n, int k, int32_t *out) {
    for (int i = 0; i < k; i++)
        for (bool dup = true; dup;) { /* draw until out[i] is new */
            out[i] = (int32_t)kb_rng_below(r, n);
            dup = false;
            for (int j = 0; j < i; j++) dup |= out[j] == out[i];
        }
}

void kb_rng_permutation(kb_rng *r, int32_t *v, int64_t n) {
    for (int64_t i = 0; i < n; i++) v[i] = (int32_t)i;
    for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        int64_t j = kb_rng_below(r, i + 1);
        int32_t t = v[i];
        v[i] = v[j], v[j] = t;
    }
}

/* ---- dtypes ---- */

static uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(x >> 16);
}

static float bf16_to_f32(uint16_t h) {
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* OCP e4m3fn: bias 7, no infinities, 0x7f/0xff NaN, max 448. */
static double fp8_to_f64(uint8_t v) {
    int e = (v >> 3) & 15, m = v & 7;
    double mag;
    if (e == 15 && m == 7) return NAN;
    mag = e == 0 ? ldexp(m, -9) : ldexp(8 + m, e - 10);
    return (v & 0x80) ? -mag : mag;
}

static uint8_t f64_to_fp8(double v) {
    if (isnan(v)) return 0x7f;
    uint8_t sign = v < 0 ? 0x80 : 0;
    double a = fabs(v);
    if (a >= 448.0) return sign | 0x7e; /* saturate, as the usual cast to e4m3fn does */
    int lo = 0, hi = 0x7e;              /* codes 0..126 are monotonic in magnitude */
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (fp8_to_f64((uint8_t)mid) <= a) lo = mid;
        else hi = mid;
    }
    double dl = a - fp8_to_f64((uint8_t)lo), dh = fp8_to_f64((uint8_t)hi) - a;
    int code = dl < dh ? lo : dh < dl ? hi : (lo % 2 == 0 ? lo : hi);
    return sign | (uint8_t)code;
}

double kb_store(kp_dtype dt, void *dst, int64_t i, double v) {
    switch (dt) {
    case KP_F32: ((float *)dst)[i] = (float)v; return (double)((float *)dst)[i];
    case KP_BF16: ((uint16_t *)dst)[i] = f32_to_bf16((float)v); return bf16_to_f32(((uint16_t *)dst)[i]);
    case KP_F16: ((_Float16 *)dst)[i] = (_Float16)(float)v; return (double)((_Float16 *)dst)[i];
    case KP_FP8_E4M3: ((uint8_t *)dst)[i] = f64_to_fp8(v); return fp8_to_f64(((uint8_t *)dst)[i]);
    default: return NAN;
    }
}

double kb_load(kp_dtype dt, const void *src, int64_t i) {
    switch (dt) {
    case KP_F32: return ((const float *)src)[i];
    case KP_BF16: return bf16_to_f32(((const uint16_t *)src)[i]);
    case KP_F16: return (double)((const _Float16 *)src)[i];
    case KP_FP8_E4M3: return fp8_to_f64(((const uint8_t *)src)[i]);
    default: return NAN;
    }
}

/* The conformance suite's relative-L2 limits (README "Tests"). */
double kb_tolerance(kp_dtype dt) { return dt == KP_F32 ? 1e-5 : dt == KP_F16 ? 2e-3 : 1.6e-2; }

/* ---- errors ---- */

void kb_err_add(kb_err *e, double out, double ref) {
    if (isnan(out) || isinf(out)) e->nan = true;
    e->num += (out - ref) * (out - ref);
    e->den += ref * ref;
    e->count++;
}

double kb_err_value(const kb_err *e) {
    if (e->nan) return INFINITY;
    if (e->den == 0.0) return e->num == 0.0 ? 0.0 : INFINITY;
    return sqrt(e->num / e->den);
}

/* ---- arrays and integers ---- */

bool kb_grow(void *v, int n, int *cap, size_t elem) {
    void *p;
    if (n < *cap) return true;
    int c = *cap ? 2 * *cap : 16;
    memcpy(&p, v, sizeof p); /* v points at a T *, whatever T is */
    if (!(p = realloc(p, (size_t)c * elem))) return false;
    memcpy(v, &p, sizeof p);
    *cap = c;
    return true;
}

bool kb_parse_int(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    *out = strtoll(s, &end, 10);
    return end != s && !*end && errno == 0 && *out >= lo && *out <= hi;
}

/* ---- clocks and stats ---- */

double kb_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double quantile(const double *sorted, int n, double q) {
    double pos = q * (n - 1);
    int i = (int)pos;
    if (i >= n - 1) return sorted[n - 1];
    return sorted[i] + (pos - i) * (sorted[i + 1] - sorted[i]);
}

void kb_stats(const double *v, int n, double *median, double *p10, double *p90, double *min, double *max) {
    double s[KB_MAX_SAMPLES]; /* a sorted copy: v stays in time order for the report */
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    *median = quantile(s, n, 0.5);
    *p10 = quantile(s, n, 0.1);
    *p90 = quantile(s, n, 0.9);
    *min = s[0];
    *max = s[n - 1];
}
