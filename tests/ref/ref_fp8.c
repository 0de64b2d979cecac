/*
 * tests/ref/ref_fp8.c — see ref_fp8.h. Deliberately naive: a search over the e4m3
 * magnitudes, every quotient in double.
 */
#include "ref_fp8.h"
#include "ref_moe.h" /* ref_fp8_e4m3: the decoder */

#include <math.h>

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
