/*
 * tests/test_cpu_kernels.c — the CPU backend's GEMM engine and attention
 * micro-kernels at every SIMD level this CPU has, on awkward shapes (one row, tails of
 * every vector width, FP8 scale blocks): each level against float64, so a level that
 * only CI's default run reaches (AVX2 on an AVX-512 machine, say) is still checked on
 * every run. The conformance suite checks the ops end to end (ci/cpu-levels runs it
 * once per level).
 */
#include "kp_test.h"
#include "kp_conformance.h"
#include "cpu_attention.h"
#include "cpu_gemm_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The device kernels' e4m3 decoder (kernels/common/kp_fp8.h), on the host: the value an
 * FP8 cache byte means on every backend. */
#define KP_FN static inline
typedef uint32_t kp_u32;
static inline kp_u32 kp_as_uint(float f) { kp_u32 u; memcpy(&u, &f, 4); return u; }
static inline float kp_as_float(kp_u32 u) { float f; memcpy(&f, &u, 4); return f; }
#include "../kernels/common/kp_fp8.h"

static float round_to(kp_dtype dt, float x) {
    const cpu_kernels *k = cpu_kernels_for(CPU_SIMD_PORTABLE);
    uint16_t h;
    if (dt == KP_BF16) k->f32_to_bf16(&x, &h, 1), k->bf16_to_f32(&h, &x, 1);
    if (dt == KP_F16) k->f32_to_f16(&x, &h, 1), k->f16_to_f32(&h, &x, 1);
    return x;
}

/* Writes x (already representable) as dtype dt at p. */
static void store_as(kp_dtype dt, float x, unsigned char *p) {
    const cpu_kernels *k = cpu_kernels_for(CPU_SIMD_PORTABLE);
    if (dt == KP_F32) memcpy(p, &x, 4);
    else if (dt == KP_BF16) k->f32_to_bf16(&x, (uint16_t *)(void *)p, 1);
    else k->f32_to_f16(&x, (uint16_t *)(void *)p, 1);
}

/* What the padding past a row's end holds: not NaN, which a masked-off lane's
 * arithmetic would keep as NaN and so hide the write. */
#define UNTOUCHED -7777.0f

static void force_level(cpu_simd_level l) { setenv("KPORT_CPU_SIMD", cpu_simd_name(l), 1); }

typedef struct gemm_case {
    kp_dtype act, w;
    int m, nc;
    int64_t n0, k;
} gemm_case;

/* c = A W[n0 .. n0 + nc)^T through cpu_gemm_block against float64; the columns of c
 * past nc must stay untouched. */
static void check_gemm(cpu_simd_level level, const gemm_case *g) {
    const int64_t N = g->n0 + g->nc + 3, K = g->k, ldc = g->nc + 5;
    const size_t wsz = kp_dtype_size(g->w), asz = kp_dtype_size(g->act);
    unsigned char *wb = malloc((size_t)(N * K) * wsz), *ab = malloc((size_t)(g->m * K) * asz);
    double *a = malloc((size_t)(g->m * K) * sizeof *a), *wv = malloc((size_t)(N * K) * sizeof *wv);
    int64_t sb = (N + 127) / 128, kb = (K + 127) / 128;
    float *scale = malloc((size_t)(sb * kb) * sizeof *scale), *c = malloc((size_t)(g->m * ldc) * sizeof *c);
    const unsigned char **rows = malloc((size_t)g->m * sizeof *rows);
    force_level(level);
    cpu_gemm_plan plan = cpu_gemm_plan_make(NULL, g->act, g->act, g->w); /* fills the FP8 tables too */
    for (int64_t i = 0; i < sb * kb; i++) scale[i] = (float)kp_test_rand_uniform(0.25, 4.0);
    for (int64_t i = 0; i < N * K; i++) {
        if (g->w == KP_FP8_E4M3) {
            uint8_t b = (uint8_t)kp_test_rand_u64();
            if ((b & 0x7f) == 0x7f) b ^= 1; /* not NaN */
            wb[i] = b;
            wv[i] = (double)cpu_gemm_fp8_f32[b] * scale[(i / K / 128) * kb + (i % K) / 128];
        } else {
            float x = round_to(g->w, (float)kp_test_rand_uniform(-1.0, 1.0));
            store_as(g->w, x, wb + (size_t)i * wsz);
            wv[i] = x;
        }
    }
    for (int64_t i = 0; i < g->m * K; i++) {
        float x = round_to(g->act, (float)kp_test_rand_uniform(-1.0, 1.0));
        store_as(g->act, x, ab + (size_t)i * asz);
        a[i] = x;
    }
    for (int i = 0; i < g->m; i++) rows[i] = ab + (size_t)(i * K) * asz;
    for (int64_t i = 0; i < g->m * ldc; i++) c[i] = i % ldc >= g->nc ? UNTOUCHED : NAN;
    cpu_gemm_w w = {.dtype = g->w, .base = wb, .ld = K, .n = N, .k = K};
    if (g->w == KP_FP8_E4M3) w.scale = scale, w.scale_ld0 = kb, w.scale_ld1 = 1;
    CHECK_MSG(plan.isa == cpu_gemm_isa_for(level), "%s: the plan did not take this level's kernels",
              cpu_simd_name(level));
    CHECK_OK(cpu_gemm_block(&plan, rows, g->m, &w, g->n0, g->nc, c, (int)ldc));
    for (int i = 0; i < g->m; i++)
        for (int64_t j = 0; j < ldc; j++) {
            float got = c[i * ldc + j];
            if (j >= g->nc) {
                CHECK_MSG(got == UNTOUCHED, "%s: c[%d][%lld] past nc %d was written", cpu_simd_name(level), i,
                          (long long)j, g->nc);
                continue;
            }
            double ref = 0.0, mag = 0.0;
            for (int64_t k = 0; k < K; k++) {
                double t = a[i * K + k] * wv[(g->n0 + j) * K + k];
                ref += t, mag += fabs(t);
            }
            double tol = 8.0 * (double)K * 0x1p-24 * mag + 1e-30;
            CHECK_MSG(fabs((double)got - ref) <= tol,
                      "%s, act %s, w %s, m %d nc %d n0 %lld K %lld: c[%d][%lld] = %.9g, float64 %.9g (tol %.3g)",
                      cpu_simd_name(level), kp_dtype_name(g->act), kp_dtype_name(g->w), g->m, g->nc,
                      (long long)g->n0, (long long)K, i, (long long)j, (double)got, ref, tol);
        }
    free(wb), free(ab), free(a), free(wv), free(scale), free(c), free(rows);
}

KP_TEST(cpu_gemm_every_level_matches_float64) {
    cpu_simd_level levels[CPU_SIMD_LEVELS];
    int nl = cpu_simd_supported(levels);
    static const kp_dtype wts[] = {KP_F32, KP_F16, KP_BF16, KP_FP8_E4M3};
    static const kp_dtype acts[] = {KP_F32, KP_BF16, KP_F16};
    /* rows: the dot path (<= 4), micro-tile edges, and the packed path (> 16) */
    static const int ms[] = {1, 2, 3, 4, 5, 7, 13, 40};
    static const int ncs[] = {1, 45, 70}; /* 45: every vector width leaves a tail */
    static const int64_t ks[] = {5, 37, 300}, ks_fp8[] = {128, 384};
    for (int li = 0; li < nl; li++)
        for (size_t wi = 0; wi < sizeof wts / sizeof wts[0]; wi++)
            for (size_t ai = 0; ai < sizeof acts / sizeof acts[0]; ai++)
                for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
                    int fp8 = wts[wi] == KP_FP8_E4M3;
                    /* vary the rest with the row count rather than over all of it: the suite stays fast */
                    gemm_case g = {.act = acts[ai],
                                   .w = wts[wi],
                                   .m = ms[mi],
                                   .nc = ncs[(mi + ai) % 3],
                                   .n0 = fp8 ? 100 : 5,
                                   .k = fp8 ? ks_fp8[mi % 2] : ks[(mi + wi) % 3]};
                    check_gemm(levels[li], &g);
                }
    unsetenv("KPORT_CPU_SIMD");
}

/* ---- attention micro-kernels against float64 ---- */

static int pad16(int m) { return (m + 15) & ~15; }

static void check_qk(const cpu_att_kernels *k, const char *name, int d, int m, int nk) {
    int mpad = pad16(m);
    float *qt = calloc((size_t)d * mpad, sizeof *qt), *qr = malloc((size_t)m * d * sizeof *qr);
    float *kv = malloc((size_t)nk * d * sizeof *kv), *st = malloc((size_t)nk * mpad * sizeof *st);
    const float **krow = malloc((size_t)nk * sizeof *krow);
    for (int r = 0; r < m; r++)
        for (int c = 0; c < d; c++) qr[r * d + c] = qt[c * mpad + r] = (float)kp_test_rand_uniform(-2.0, 2.0);
    for (int i = 0; i < nk * d; i++) kv[i] = (float)kp_test_rand_uniform(-2.0, 2.0);
    for (int n = 0; n < nk; n++) krow[nk - 1 - n] = kv + n * d; /* rows anywhere, not in order */
    for (int i = 0; i < nk * mpad; i++) st[i] = NAN;
    k->qk(qt, qr, d, m, mpad, krow, nk, st, mpad);
    for (int n = 0; n < nk; n++)
        for (int r = 0; r < m; r++) {
            double ref = 0.0, mag = 0.0;
            for (int c = 0; c < d; c++) ref += (double)qr[r * d + c] * krow[n][c], mag += fabs((double)qr[r * d + c] * krow[n][c]);
            double got = st[n * mpad + r], tol = 4.0 * d * 0x1p-24 * mag;
            CHECK_MSG(fabs(got - ref) <= tol, "%s qk d %d m %d nk %d: S[key %d][row %d] = %.9g, float64 %.9g", name,
                      d, m, nk, n, r, got, ref);
        }
    free(qt), free(qr), free(kv), free(st), free(krow);
}

static void check_softmax(const cpu_att_kernels *k, const char *name, int m, int nk, int64_t j0) {
    int mpad = pad16(m);
    float *st = malloc((size_t)nk * mpad * sizeof *st), *s0 = malloc((size_t)nk * mpad * sizeof *s0);
    float mx[256], l[256], alpha[256], mx0[256], l0[256];
    int32_t lo[256], hi[256];
    for (int i = 0; i < nk * mpad; i++) s0[i] = st[i] = (float)kp_test_rand_uniform(-30.0, 30.0);
    for (int r = 0; r < mpad; r++) {
        /* rows that see nothing, everything, or a part of the block; some with a past */
        int64_t a = j0 + (int64_t)(kp_test_rand_u64() % (uint64_t)(nk + 2)) - 1, b = a + (int64_t)(kp_test_rand_u64() % (uint64_t)(nk + 1));
        if (r % 5 == 0) a = b = 0;
        lo[r] = (int32_t)(r < m ? a : 0), hi[r] = (int32_t)(r < m ? b : 0);
        int past = r % 3 != 0;
        mx0[r] = mx[r] = past ? (float)kp_test_rand_uniform(-20.0, 20.0) : -INFINITY;
        l0[r] = l[r] = past ? (float)kp_test_rand_uniform(0.5, 10.0) : 0.0f;
    }
    k->softmax(st, mpad, nk, mpad, j0, lo, hi, mx, l, alpha);
    for (int r = 0; r < m; r++) {
        double mnew = mx0[r];
        for (int n = 0; n < nk; n++)
            if (j0 + n >= lo[r] && j0 + n < hi[r] && s0[n * mpad + r] > mnew) mnew = s0[n * mpad + r];
        double sum = 0.0;
        for (int n = 0; n < nk; n++) {
            int vis = j0 + n >= lo[r] && j0 + n < hi[r] && mnew != -INFINITY;
            double p = vis ? exp2((double)s0[n * mpad + r] - mnew) : 0.0;
            sum += p;
            /* f32's s - max is exact to 2^-20 here: 4e-6 relative in p */
            CHECK_MSG(fabs((double)st[n * mpad + r] - p) <= 4e-6 * (p > 1e-6 ? p : 1e-6),
                      "%s softmax m %d nk %d j0 %lld: p[key %d][row %d] = %.9g, float64 %.9g", name, m, nk,
                      (long long)j0, n, r, (double)st[n * mpad + r], p);
        }
        double a = mnew == -INFINITY ? 1.0 : exp2((double)mx0[r] - mnew);
        double lref = l0[r] * a + sum;
        CHECK_MSG(mnew == -INFINITY ? mx[r] == -INFINITY : mx[r] == (float)mnew, "%s softmax: max of row %d %.9g, want %.9g",
                  name, r, (double)mx[r], mnew);
        CHECK_MSG(fabs(alpha[r] - a) <= 4e-6 * a + 1e-30, "%s softmax: alpha of row %d %.9g, float64 %.9g", name, r,
                  (double)alpha[r], a);
        CHECK_MSG(fabs(l[r] - lref) <= 1e-5 * lref + 1e-30, "%s softmax: sum of row %d %.9g, float64 %.9g", name, r,
                  (double)l[r], lref);
    }
    free(st), free(s0);
}

static void check_pv(const cpu_att_kernels *k, const char *name, int m, int nk, int dv) {
    int mpad = pad16(m);
    int64_t ldo = dv + 3;
    float *p = malloc((size_t)nk * mpad * sizeof *p), *v = malloc((size_t)nk * dv * sizeof *v);
    float *o = malloc((size_t)m * ldo * sizeof *o), *o0 = malloc((size_t)m * ldo * sizeof *o0), alpha[256];
    const float **vrow = malloc((size_t)nk * sizeof *vrow);
    for (int i = 0; i < nk * mpad; i++) p[i] = i % 7 == 0 ? 0.0f : (float)kp_test_rand_uniform(0.0, 1.0);
    for (int i = 0; i < nk * dv; i++) v[i] = (float)kp_test_rand_uniform(-3.0, 3.0);
    for (int n = 0; n < nk; n++) vrow[n] = v + (int64_t)((n * 7) % nk) * dv;
    for (int i = 0; i < m * ldo; i++) o0[i] = o[i] = i % ldo >= dv ? UNTOUCHED : (float)kp_test_rand_uniform(-1.0, 1.0);
    for (int r = 0; r < m; r++) alpha[r] = r % 4 == 0 ? 1.0f : (float)kp_test_rand_uniform(0.0, 1.0);
    k->pv(p, mpad, vrow, nk, o, ldo, m, dv, alpha);
    for (int r = 0; r < m; r++)
        for (int64_t j = 0; j < ldo; j++) {
            if (j >= dv) {
                CHECK_MSG(o[r * ldo + j] == UNTOUCHED, "%s pv: o[%d][%lld] past dv %d was written", name, r, (long long)j, dv);
                continue;
            }
            double ref = (double)alpha[r] * o0[r * ldo + j], mag = fabs(ref);
            for (int n = 0; n < nk; n++) {
                double t = (double)p[n * mpad + r] * vrow[n][j];
                ref += t, mag += fabs(t);
            }
            CHECK_MSG(fabs(o[r * ldo + j] - ref) <= 4.0 * (nk + 1) * 0x1p-24 * mag + 1e-30,
                      "%s pv m %d nk %d dv %d: o[%d][%lld] = %.9g, float64 %.9g", name, m, nk, dv, r, (long long)j,
                      (double)o[r * ldo + j], ref);
        }
    free(p), free(v), free(o), free(o0), free(vrow);
}

/* qk16/pv16 (levels that have them) over f16 and bf16 rows, against float64 of the
 * same 16-bit values. */
static void check_raw16(const cpu_att_kernels *k, const char *name, kp_dtype dt, int d, int m, int nk, int dv) {
    int mpad = pad16(m);
    int64_t ldo = dv + 3;
    float *qr = malloc((size_t)m * d * sizeof *qr), *st = malloc((size_t)nk * mpad * sizeof *st);
    float *kf = malloc((size_t)nk * d * sizeof *kf), *vf = malloc((size_t)nk * dv * sizeof *vf);
    uint16_t *kh = malloc((size_t)nk * d * 2), *vh = malloc((size_t)nk * dv * 2);
    float *o = malloc((size_t)m * ldo * sizeof *o), *o0 = malloc((size_t)m * ldo * sizeof *o0), alpha[16];
    const void **krow = malloc((size_t)nk * sizeof *krow), **vrow = malloc((size_t)nk * sizeof *vrow);
    for (int i = 0; i < m * d; i++) qr[i] = (float)kp_test_rand_uniform(-2.0, 2.0);
    for (int i = 0; i < nk * d; i++) {
        kf[i] = round_to(dt, (float)kp_test_rand_uniform(-2.0, 2.0));
        store_as(dt, kf[i], (unsigned char *)(kh + i));
    }
    for (int i = 0; i < nk * dv; i++) {
        vf[i] = round_to(dt, (float)kp_test_rand_uniform(-2.0, 2.0));
        store_as(dt, vf[i], (unsigned char *)(vh + i));
    }
    for (int n = 0; n < nk; n++) krow[n] = kh + (int64_t)(nk - 1 - n) * d, vrow[n] = vh + (int64_t)((n * 7) % nk) * dv;
    for (int i = 0; i < nk * mpad; i++) st[i] = NAN;
    k->qk16(dt, qr, d, m, krow, nk, st, mpad);
    for (int n = 0; n < nk; n++)
        for (int r = 0; r < m; r++) {
            const float *kr = kf + (int64_t)(nk - 1 - n) * d;
            double ref = 0.0, mag = 0.0;
            for (int c = 0; c < d; c++) ref += (double)qr[r * d + c] * kr[c], mag += fabs((double)qr[r * d + c] * kr[c]);
            CHECK_MSG(fabs(st[n * mpad + r] - ref) <= 4.0 * d * 0x1p-24 * mag,
                      "%s qk16 %s d %d m %d nk %d: S[key %d][row %d] = %.9g, float64 %.9g", name, kp_dtype_name(dt),
                      d, m, nk, n, r, (double)st[n * mpad + r], ref);
        }
    for (int i = 0; i < nk * mpad; i++) st[i] = (float)kp_test_rand_uniform(0.0, 1.0); /* p */
    for (int i = 0; i < m * ldo; i++) o0[i] = o[i] = i % ldo >= dv ? UNTOUCHED : (float)kp_test_rand_uniform(-1, 1);
    for (int r = 0; r < m; r++) alpha[r] = (float)kp_test_rand_uniform(0.0, 1.0);
    k->pv16(dt, st, mpad, vrow, nk, o, ldo, m, dv, alpha);
    for (int r = 0; r < m; r++)
        for (int64_t j = 0; j < ldo; j++) {
            if (j >= dv) {
                CHECK_MSG(o[r * ldo + j] == UNTOUCHED, "%s pv16: o[%d][%lld] past dv %d was written", name, r,
                          (long long)j, dv);
                continue;
            }
            double ref = (double)alpha[r] * o0[r * ldo + j], mag = fabs(ref);
            for (int n = 0; n < nk; n++) {
                double t = (double)st[n * mpad + r] * vf[(int64_t)((n * 7) % nk) * dv + j];
                ref += t, mag += fabs(t);
            }
            CHECK_MSG(fabs(o[r * ldo + j] - ref) <= 4.0 * (nk + 1) * 0x1p-24 * mag + 1e-30,
                      "%s pv16 %s m %d nk %d dv %d: o[%d][%lld] = %.9g, float64 %.9g", name, kp_dtype_name(dt), m, nk,
                      dv, r, (long long)j, (double)o[r * ldo + j], ref);
        }
    free(qr), free(st), free(kf), free(vf), free(kh), free(vh), free(o), free(o0), free(krow), free(vrow);
}

/* One FP8 decoder (to f32, or with sixteen to dt's 16-bit bits) over every byte value,
 * n bytes long (all 256 in turn, from an odd offset so no load is aligned), against
 * kp_fp8.h's decoder: each element must be (float)(e4m3 * scale) rounded to dt, to the
 * bit (the sign of zero too), NaN where the byte is NaN; the poisoned guard elements
 * past n must stay untouched. */
#define FP8_N 301
static void check_fp8_decoder(const char *name, kp_dtype dt, float scale, int sixteen,
                              void (*f32)(const uint8_t *, float *, int64_t, const cpu_att_fp8_lut *),
                              void (*h16)(const uint8_t *, uint16_t *, int64_t, const cpu_att_fp8_lut *)) {
    static cpu_att_fp8_lut t;
    uint8_t src[FP8_N + 1];
    float out[FP8_N + 8];
    uint16_t out16[FP8_N + 8];
    cpu_att_fp8_lut_make(&t, cpu_kernels_for(CPU_SIMD_PORTABLE), dt, scale);
    for (int i = 0; i < FP8_N; i++) src[1 + i] = (uint8_t)(i * 7 + 3); /* 7 is odd: every byte within 256 */
    for (int n = 1; n <= FP8_N; n = n < 70 ? n + 1 : n + 77) {
        for (int i = 0; i < FP8_N + 8; i++) out[i] = UNTOUCHED, out16[i] = 0xdead;
        if (sixteen) h16(src + 1, out16, n, &t);
        else f32(src + 1, out, n, &t);
        int bad = 0;
        for (int i = 0; i < n && bad < 3; i++) {
            uint8_t b = src[1 + i];
            float e = kp_e4m3_to_f32(b);
            double want = kp_conf_round((double)(e * scale), dt), got;
            if (sixteen) kp_conf_unpack(&out16[i], 1, dt, &got);
            else got = out[i];
            int ok = isnan(want) ? isnan(got) : (got == want && signbit(got) == signbit(want));
            if (!ok) bad++;
            CHECK_MSG(ok, "%s fp8_%s dt %s scale %a n %d: byte 0x%02x -> %a, want %a", name, sixteen ? "16" : "f32",
                      kp_dtype_name(dt), (double)scale, n, b, got, want);
        }
        for (int i = n; i < FP8_N + 8; i++)
            CHECK_MSG(sixteen ? out16[i] == 0xdead : out[i] == UNTOUCHED, "%s fp8_%s n %d wrote element %d", name,
                      sixteen ? "16" : "f32", n, i);
    }
}

/* Scales: 1, DeepSeek-like 1/448-ish, 2^-10 and 2^10 (f16: subnormal and overflowing
 * products), odd mantissas that make the dt rounding matter. */
static void check_fp8_decoders(const char *name,
                               void (*f32)(const uint8_t *, float *, int64_t, const cpu_att_fp8_lut *),
                               void (*h16)(const uint8_t *, uint16_t *, int64_t, const cpu_att_fp8_lut *)) {
    static const float scales[] = {1.0f, 0.0023121f, 0x1p-10f, 0x1p10f, 1.37f * 0x1p-10f, 0x1.fedcbap+7f, 3e-5f};
    static const kp_dtype dts[] = {KP_BF16, KP_F16, KP_F32};
    for (size_t si = 0; si < sizeof scales / sizeof scales[0]; si++)
        for (int di = 0; di < 3; di++) {
            check_fp8_decoder(name, dts[di], scales[si], 0, f32, h16);
            if (dts[di] != KP_F32) check_fp8_decoder(name, dts[di], scales[si], 1, f32, h16);
        }
}

KP_TEST(cpu_attention_fp8_decode_every_level_every_byte) {
    cpu_simd_level levels[CPU_SIMD_LEVELS];
    int nl = cpu_simd_supported(levels);
    for (int li = 0; li < nl; li++) {
        const cpu_att_kernels *k = cpu_att_kernels_for(levels[li]);
        CHECK_MSG(k->fp8_f32 && k->fp8_16, "%s has no FP8 decoders", cpu_simd_name(levels[li]));
        if (k->fp8_f32 && k->fp8_16) check_fp8_decoders(cpu_simd_name(levels[li]), k->fp8_f32, k->fp8_16);
#if defined(__x86_64__) || defined(__i386__)
        /* the AVX-512 level picks one of two pairs by cpuid: the other is checked here too */
        if (levels[li] == CPU_SIMD_AVX512) {
            check_fp8_decoders("avx2 (avx512 without vbmi)", cpu_att_fp8_f32_avx2, cpu_att_fp8_16_avx2);
            if (cpu_att_has_vbmi()) check_fp8_decoders("avx512-vbmi", cpu_att_fp8_f32_vbmi, cpu_att_fp8_16_vbmi);
        }
#endif
    }
}

KP_TEST(cpu_attention_kernels_every_level_match_float64) {
    cpu_simd_level levels[CPU_SIMD_LEVELS];
    int nl = cpu_simd_supported(levels);
    static const int ds[] = {20, 64, 128, 576}, ms[] = {1, 3, 4, 8, 9, 16, 37, 128}, nks[] = {1, 5, 64};
    static const int dvs[] = {8, 28, 128, 512};
    for (int li = 0; li < nl; li++) {
        const cpu_att_kernels *k = cpu_att_kernels_for(levels[li]);
        const char *name = cpu_simd_name(levels[li]);
        for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
            int m = ms[mi];
            for (size_t ni = 0; ni < sizeof nks / sizeof nks[0]; ni++) {
                check_qk(k, name, ds[(mi + ni) % 4], m, nks[ni]);
                check_softmax(k, name, m, nks[ni], ni == 1 ? 1000 : 0);
                check_pv(k, name, m, nks[ni], dvs[(mi + 2 * ni) % 4]);
            }
        }
        if (!k->qk16) continue;
        CHECK_MSG(k->pv16 != NULL, "%s has qk16 without pv16", name);
        for (int m = 1; m <= CPU_ATT_RAW_ROWS; m++)
            for (size_t ni = 0; ni < sizeof nks / sizeof nks[0]; ni++)
                check_raw16(k, name, (m + (int)ni) % 2 ? KP_BF16 : KP_F16, ds[(m + (int)ni) % 4], m, nks[ni],
                            dvs[(m + 2 * (int)ni) % 4]);
    }
}
