/*
 * tests/ref/ref_fp8.c — see ref_fp8.h. Deliberately naive: a search over the e4m3
 * magnitudes, every quotient in double.
 */
#include "ref_fp8.h"
#include "ref_moe.h" /* ref_fp8_e4m3: the decoder */

#include "ref_prec.h"

#include <math.h>
#include <stdlib.h>

unsigned char ref_e4m3_encode(double v) {
    if (isnan(v)) return 0x7f;
    unsigned char sign = signbit(v) ? 0x80 : 0;
    double a = fabs(v);
    if (a >= REF_FP8_MAX) return sign | 0x7e;
    static double mag[0x7f]; /* the decoded magnitudes, filled once */
    if (mag[1] == 0.0)
        for (int b = 0; b < 0x7f; b++) mag[b] = ref_fp8_e4m3((unsigned char)b);
    int best = 0;
    for (int b = 1; b <= 0x7e; b++) { /* magnitudes increase with the code */
        double db = fabs(mag[b] - a), dbest = fabs(mag[best] - a);
        if (db < dbest || (db == dbest && (b & 1) == 0)) best = b;
    }
    return sign | (unsigned char)best;
}

double ref_e4m3_round(double v) { return ref_fp8_e4m3(ref_e4m3_encode(v)); }

void ref_e4m3_quantize_pair(double x, double scale, double *lo, double *hi) {
    double q = x / scale;
    int e;
    if (frexp(scale, &e) == 0.5) { /* a power of two */
        *lo = *hi = ref_e4m3_round(q);
        return;
    }
    *lo = ref_e4m3_round(q * (1.0 - 0x1p-21));
    *hi = ref_e4m3_round(q * (1.0 + 0x1p-21));
}

void ref_kv_cache_store(const double *src, const double *slots, int64_t t, int64_t h, int64_t d,
                        int64_t num_blocks, int64_t block_size, const double *cache, const double *scale,
                        int64_t n_scale, double *lo, double *hi) {
    int64_t n = num_blocks * block_size * h * d;
    for (int64_t i = 0; i < n; i++) lo[i] = hi[i] = cache[i];
    for (int64_t tok = 0; tok < t; tok++) {
        int64_t slot = (int64_t)slots[tok];
        if (slot < 0) continue;
        int64_t blk = slot / block_size, off = slot % block_size;
        for (int64_t i = 0; i < h * d; i++) {
            double x = src[tok * h * d + i];
            int64_t at = (blk * block_size + off) * h * d + i;
            if (!scale) lo[at] = hi[at] = x;
            else ref_e4m3_quantize_pair(x, scale[n_scale == 1 ? 0 : blk], &lo[at], &hi[at]);
        }
    }
}

void ref_quantize_fp8_scales(const double *x, int64_t t, int64_t k, int ue8m0, double *scale) {
    int64_t groups = k / 128;
    for (int64_t tok = 0; tok < t; tok++)
        for (int64_t g = 0; g < groups; g++) {
            double amax = (double)1e-10f;
            for (int64_t i = 0; i < 128; i++) amax = fmax(amax, fabs(x[tok * k + g * 128 + i]));
            double s = amax / REF_FP8_MAX;
            int e;
            if (ue8m0) s = frexp(s, &e) == 0.5 ? s : ldexp(1.0, e); /* s = m * 2^e, m in [0.5, 1) */
            scale[tok * groups + g] = s;
        }
}

void ref_grouped_gemm_w8a8(const double *a, const double *a_scale, int64_t k, const double *w,
                           const double *w_scale, int64_t experts, int64_t n, const int32_t *offsets, double *out,
                           double *err) {
    const int64_t kbs = k / 128, nbs = (n + 127) / 128;
    for (int64_t e = 0; e < experts; e++)
        for (int64_t r = offsets[e]; r < offsets[e + 1]; r++)
            for (int64_t j = 0; j < n; j++) {
                const double *wr = w + (e * n + j) * k;
                double acc = 0.0, terms2 = 0.0, slices2 = 0.0;
                for (int64_t kb = 0; kb < kbs; kb++) {
                    double s = a_scale[r * kbs + kb] * w_scale[(e * nbs + j / 128) * kbs + kb], sum = 0.0, t2 = 0.0;
                    for (int64_t l = kb * 128; l < kb * 128 + 128; l++) {
                        double t = a[r * k + l] * wr[l];
                        sum += t;
                        t2 += t * t;
                    }
                    acc += sum * s;
                    terms2 += t2 * s * s;
                    slices2 += sum * s * sum * s;
                }
                out[r * n + j] = acc;
                /* 128-term f32 sums (plus a per-term rounding where a backend scales w first),
                 * two scalings per slice, then K/128 f32 additions */
                if (err) err[r * n + j] = REF_U32 * sqrt(terms2 * 129.0 + slices2 * (double)(kbs + 2));
            }
}

/* One group of 128 values v (standard deviations dv, NULL: exact) quantized as
 * kp_quantize_fp8 does: q = the dequantized value of v's own rounding, hw = its
 * uncertainty: the distance to the farthest code the implementation's value may round
 * to (0 away from ties), and the scale's own. */
static void quant_group(const double *v, const double *dv, int ue8m0, double *q, double *hw, double *scale) {
    double amax = (double)1e-10f, damax = 0.0;
    for (int i = 0; i < 128; i++)
        if (fabs(v[i]) > amax) amax = fabs(v[i]), damax = dv ? dv[i] : 0.0;
    double s;
    int e;
    if (ue8m0) s = frexp(amax / REF_FP8_MAX, &e) == 0.5 ? amax / REF_FP8_MAX : ldexp(1.0, e);
    else s = (double)(float)(amax / REF_FP8_MAX);
    const double rel = 3.0 * damax / amax; /* the implementation's amax, hence scale, may differ this much */
    for (int i = 0; i < 128; i++) {
        double qv = v[i] / s, wq = 3.0 * (dv ? dv[i] : 0.0) / s + fabs(qv) * (rel + 0x1p-21);
        double lo = ref_e4m3_round(qv - wq), hi = ref_e4m3_round(qv + wq), mid = ref_e4m3_round(qv);
        q[i] = mid * s;
        hw[i] = fmax(mid - lo, hi - mid) * s + fabs(q[i]) * rel / 3.0;
    }
    *scale = s;
}

/* W8A8 row: out[j] = sum_l a[l] * w[j, l] * w_scale[j/128, l/128] for j < n, a holding
 * dequantized values (a_scale folded in: the same real number); err[j] the f32 model of
 * ref_grouped_gemm_w8a8 plus a's uncertainty da. */
static void w8a8_row(const double *a, const double *da, int64_t k, const double *w, const double *w_scale, int64_t n,
                     double *out, double *err) {
    const int64_t kbs = k / 128;
    for (int64_t j = 0; j < n; j++) {
        double acc = 0.0, terms2 = 0.0, slices2 = 0.0, from_a2 = 0.0;
        for (int64_t kb = 0; kb < kbs; kb++) {
            double ws = w_scale[(j / 128) * kbs + kb], sum = 0.0;
            for (int64_t l = kb * 128; l < kb * 128 + 128; l++) {
                double t = a[l] * w[j * k + l] * ws;
                sum += t;
                terms2 += t * t;
                double ta = da[l] * w[j * k + l] * ws;
                from_a2 += ta * ta;
            }
            acc += sum;
            slices2 += sum * sum;
        }
        out[j] = acc;
        err[j] = sqrt(pow(REF_U32, 2) * (terms2 * 129.0 + slices2 * (double)(kbs + 2)) + from_a2);
    }
}

void ref_moe_w8a8_mlp_add(const double *x, int64_t hidden, int64_t inter, const double *w13,
                          const double *w13_scale, const double *w2, const double *w2_scale, int ue8m0,
                          double scale, double store_unit, double *out, double *err2) {
    double *xq = malloc((size_t)hidden * sizeof *xq), *dx = malloc((size_t)hidden * sizeof *dx);
    double *gu = malloc((size_t)(2 * inter) * sizeof *gu), *dgu = malloc((size_t)(2 * inter) * sizeof *dgu);
    double *h = malloc((size_t)inter * sizeof *h), *dh = malloc((size_t)inter * sizeof *dh);
    double *hq = malloc((size_t)inter * sizeof *hq), *dhq = malloc((size_t)inter * sizeof *dhq);
    double *y = malloc((size_t)hidden * sizeof *y), *dy = malloc((size_t)hidden * sizeof *dy), s;
    for (int64_t g = 0; g < hidden / 128; g++) quant_group(x + g * 128, NULL, ue8m0, xq + g * 128, dx + g * 128, &s);
    w8a8_row(xq, dx, hidden, w13, w13_scale, 2 * inter, gu, dgu);
    for (int64_t j = 0; j < inter; j++) {
        double gate = gu[j], up = gu[inter + j];
        double sig = 1.0 / (1.0 + exp(-gate)), silu = gate * sig, dsilu = sig * (1.0 + gate * (1.0 - sig));
        h[j] = silu * up;
        dh[j] = sqrt(pow(up * dsilu * dgu[j], 2) + pow(silu * dgu[inter + j], 2) + pow(REF_U_EXP * h[j], 2) +
                     pow(3.0 * REF_U32 * h[j], 2));
    }
    for (int64_t g = 0; g < inter / 128; g++) quant_group(h + g * 128, dh + g * 128, ue8m0, hq + g * 128, dhq + g * 128, &s);
    w8a8_row(hq, dhq, inter, w2, w2_scale, hidden, y, dy);
    for (int64_t c = 0; c < hidden; c++) {
        out[c] += scale * y[c];
        if (err2)
            err2[c] += scale * scale * (dy[c] * dy[c] + pow(store_unit * y[c], 2)) + pow(2.0 * REF_U32 * scale * y[c], 2);
    }
    free(xq), free(dx), free(gu), free(dgu), free(h), free(dh), free(hq), free(dhq), free(y), free(dy);
}
