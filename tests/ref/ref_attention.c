/*
 * tests/ref/ref_attention.c — see ref_attention.h.
 */
#include "ref_attention.h"

#include <math.h>
#include <stdlib.h>

/* One query row against keys kr[j], values vr[j] for j in [lo, hi). */
static void ref_row(const double *q, const double *const *kr, const double *const *vr, int64_t lo, int64_t hi, int d,
                    int dv, double scale, double *out, double *lse) {
    for (int c = 0; c < dv; c++) out[c] = 0.0;
    if (lo < 0) lo = 0;
    if (hi <= lo) {
        if (lse) *lse = INFINITY;
        return;
    }
    double *s = malloc((size_t)(hi - lo) * sizeof *s);
    double m = -INFINITY;
    for (int64_t j = lo; j < hi; j++) {
        double acc = 0.0;
        for (int c = 0; c < d; c++) acc += q[c] * kr[j][c];
        s[j - lo] = acc * scale;
        if (s[j - lo] > m) m = s[j - lo];
    }
    double sum = 0.0;
    for (int64_t j = lo; j < hi; j++) {
        double p = exp(s[j - lo] - m);
        sum += p;
        for (int c = 0; c < dv; c++) out[c] += p * vr[j][c];
    }
    for (int c = 0; c < dv; c++) out[c] /= sum;
    if (lse) *lse = m + log(sum);
    free(s);
}

void ref_attention_prefill(const double *q, const double *k, const double *v, int64_t total_q, int h_q, int h_kv,
                           int d, int dv, const int32_t *cu_q, const int32_t *cu_k, int nb, double scale, int causal,
                           int window_left, int window_right, double *out, double *lse) {
    int group = h_q / h_kv;
    for (int64_t t = cu_q[nb]; t < total_q; t++)
        for (int h = 0; h < h_q; h++) {
            for (int c = 0; c < dv; c++) out[(t * h_q + h) * dv + c] = 0.0;
            if (lse) lse[h * total_q + t] = INFINITY;
        }
    for (int b = 0; b < nb; b++) {
        int64_t lq = cu_q[b + 1] - cu_q[b], lk = cu_k[b + 1] - cu_k[b];
        const double **kr = malloc((size_t)(lk + 1) * sizeof *kr), **vr = malloc((size_t)(lk + 1) * sizeof *vr);
        for (int h = 0; h < h_q; h++) {
            int g = h / group;
            for (int64_t j = 0; j < lk; j++) {
                kr[j] = k + ((cu_k[b] + j) * h_kv + g) * d;
                vr[j] = v + ((cu_k[b] + j) * h_kv + g) * dv;
            }
            for (int64_t i = 0; i < lq; i++) {
                int64_t t = cu_q[b] + i, ip = i + lk - lq, lo = 0, hi = lk;
                if (causal && ip + 1 < hi) hi = ip + 1;
                if (window_right >= 0 && ip + window_right + 1 < hi) hi = ip + window_right + 1;
                if (window_left >= 0 && ip - window_left > lo) lo = ip - window_left;
                ref_row(q + (t * h_q + h) * d, kr, vr, lo, hi, d, dv, scale, out + (t * h_q + h) * dv,
                        lse ? lse + h * total_q + t : NULL);
            }
        }
        free(kr);
        free(vr);
    }
}

void ref_attention_decode(const double *q, const double *k_cache, const double *v_cache, int b, int s_q, int h_q,
                          int h_kv, int d, int dv, int k_ld, int v_ld, int block_size, const int32_t *block_table,
                          int max_blocks, const int32_t *seq_lens, double scale, int causal, double *out,
                          double *lse) {
    int group = h_q / h_kv;
    for (int bi = 0; bi < b; bi++) {
        int64_t len = seq_lens[bi];
        const double **kr = malloc((size_t)(len + 1) * sizeof *kr), **vr = malloc((size_t)(len + 1) * sizeof *vr);
        for (int h = 0; h < h_q; h++) {
            int g = h / group;
            for (int64_t j = 0; j < len; j++) {
                int64_t blk = block_table[(int64_t)bi * max_blocks + j / block_size], row = j % block_size;
                kr[j] = k_cache + ((blk * block_size + row) * h_kv + g) * k_ld;
                vr[j] = v_cache + ((blk * block_size + row) * h_kv + g) * v_ld;
            }
            for (int i = 0; i < s_q; i++) {
                int64_t hi = causal ? len - s_q + i + 1 : len;
                if (hi > len) hi = len;
                int64_t row = ((int64_t)bi * s_q + i) * h_q + h;
                ref_row(q + row * d, kr, vr, 0, hi, d, dv, scale, out + row * dv,
                        lse ? lse + ((int64_t)bi * h_q + h) * s_q + i : NULL);
            }
        }
        free(kr);
        free(vr);
    }
}
