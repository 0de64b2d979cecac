/*
 * backends/cpu/cpu_attention_portable.c — the attention micro-kernels in plain C
 * (cpu_attention.h has the contract): any CPU, and the reference the SIMD levels
 * are tested against.
 */
#include "cpu_attention.h"

#include <math.h>

/* ------------------------------------------------------------------------ */
/* Portable micro-kernels                                                    */
/* ------------------------------------------------------------------------ */

static void qk_c(const float *qt, const float *qr, int d, int m, int mpad, const float *const *krow, int nk,
                 float *st, int64_t ldst) {
    (void)qr, (void)m;
    const int64_t ldq = mpad;
    for (int n = 0; n < nk; n++) {
        float *s = st + n * ldst;
        const float *kr = krow[n];
        for (int r = 0; r < mpad; r++) s[r] = 0.0f;
        for (int k = 0; k < d; k++) {
            const float kv = kr[k], *q = qt + k * ldq;
            for (int r = 0; r < mpad; r++) s[r] += kv * q[r];
        }
    }
}

static void softmax_c(float *st, int64_t ldst, int nk, int m, int64_t j0, const int32_t *lo, const int32_t *hi,
                      float *mx, float *l, float *alpha) {
    for (int r = 0; r < m; r++) {
        int64_t a = lo[r] - j0, b = hi[r] - j0;
        if (a < 0) a = 0;
        if (b > nk) b = nk;
        float bm = -INFINITY;
        for (int64_t n = a; n < b; n++) bm = fmaxf(bm, st[n * ldst + r]);
        float mnew = fmaxf(mx[r], bm);
        if (mnew == -INFINITY) { /* nothing seen yet: p = 0, O stays 0 */
            alpha[r] = 1.0f;
            for (int n = 0; n < nk; n++) st[n * ldst + r] = 0.0f;
            continue;
        }
        float sum = 0.0f;
        for (int n = 0; n < nk; n++) {
            float pv = (n >= a && n < b) ? exp2f(st[n * ldst + r] - mnew) : 0.0f;
            st[n * ldst + r] = pv;
            sum += pv;
        }
        alpha[r] = exp2f(mx[r] - mnew);
        l[r] = l[r] * alpha[r] + sum;
        mx[r] = mnew;
    }
}

static void pv_c(const float *p, int64_t ldp, const float *const *vrow, int nk, float *o, int64_t ldo, int m, int dv,
                 const float *alpha) {
    for (int r = 0; r < m; r++) {
        float *orow = o + r * ldo;
        const float a = alpha[r];
        if (a != 1.0f)
            for (int j = 0; j < dv; j++) orow[j] *= a;
        for (int n = 0; n < nk; n++) {
            const float pr = p[n * ldp + r];
            if (pr == 0.0f) continue;
            const float *v = vrow[n];
            for (int j = 0; j < dv; j++) orow[j] += pr * v[j];
        }
    }
}

void cpu_att_fp8_f32_c(const uint8_t *src, float *dst, int64_t n, const cpu_att_fp8_lut *t) {
    for (int64_t i = 0; i < n; i++) dst[i] = t->f[src[i]];
}

void cpu_att_fp8_16_c(const uint8_t *src, uint16_t *dst, int64_t n, const cpu_att_fp8_lut *t) {
    for (int64_t i = 0; i < n; i++) dst[i] = t->h[src[i]];
}

const cpu_att_kernels cpu_att_kernels_portable = {
    .qk = qk_c, .softmax = softmax_c, .pv = pv_c, .fp8_f32 = cpu_att_fp8_f32_c, .fp8_16 = cpu_att_fp8_16_c};

