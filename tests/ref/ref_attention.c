/*
 * tests/ref/ref_attention.c — see ref_attention.h.
 */
#include "ref_attention.h"

#include <math.h>
#include <stdlib.h>

/* The row kernels below, each with restrict pointers so that the compiler vectorizes
 * them: a dot product with its sum of squared terms (four partial sums), y += a x, and
 * one key's terms of the output error model. */
static double dot_and_squares(const double *restrict a, const double *restrict b, int n, double *squares) {
    double acc[4] = {0}, sq[4] = {0};
    int c = 0;
    for (; c + 4 <= n; c += 4)
        for (int u = 0; u < 4; u++) {
            double t = a[c + u] * b[c + u];
            acc[u] += t;
            sq[u] += t * t;
        }
    for (; c < n; c++) {
        double t = a[c] * b[c];
        acc[0] += t;
        sq[0] += t * t;
    }
    *squares = (sq[0] + sq[1]) + (sq[2] + sq[3]);
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

static void axpy(double *restrict y, double a, const double *restrict x, int n) {
    for (int c = 0; c < n; c++) y[c] += a * x[c];
}

/* e2[c] += rounding^2 + shift^2 and t2[c] += (w v_c)^2 for one key of weight w: its
 * probability rounded to `unit` (or absolutely by tiny_w = min(p, tiny) / sum) and
 * shifted by w ds. */
static void out_err_terms(double *restrict e2, double *restrict t2, const double *restrict v,
                          const double *restrict out, int n, double w, double wds, double tiny_w, double unit) {
    for (int c = 0; c < n; c++) {
        double t = w * v[c];
        double rounding = unit * fabs(t) + tiny_w * fabs(v[c]);
        double shift = wds * (v[c] - out[c]);
        e2[c] += rounding * rounding + shift * shift;
        t2[c] += t * t;
    }
}

/* One query row against keys kr[j], values vr[j] for j in [lo, hi). With e, also the
 * error model of ref_prec.h: each score s_j carries an absolute error dS_j (its f32 dot
 * product, its scaling, the f32 exp), each probability a rounding to e->prec before
 * P·V, and the sums over keys f32 accumulation; a split-KV combine rescales by
 * exp(lse) in f32. */
static void ref_row(const double *q, const double *const *kr, const double *const *vr, int64_t lo, int64_t hi, int d,
                    int dv, double scale, double *out, double *lse, const ref_attn_err *e, double *out_err,
                    double *lse_err) {
    for (int c = 0; c < dv; c++) out[c] = 0.0;
    if (out_err)
        for (int c = 0; c < dv; c++) out_err[c] = 0.0;
    if (lse_err) *lse_err = 0.0;
    if (lo < 0) lo = 0;
    if (hi <= lo) {
        if (lse) *lse = INFINITY;
        return;
    }
    int64_t n = hi - lo;
    /* s: scores, ds: their errors, p: exp(s - max), each computed once per key */
    double *s = malloc((size_t)n * 3 * sizeof *s), *ds = s + n, *p = s + 2 * n;
    double m = -INFINITY;
    for (int64_t j = lo; j < hi; j++) {
        double sq, acc = dot_and_squares(q, kr[j], d, &sq);
        s[j - lo] = acc * scale;
        ds[j - lo] = REF_U32 * (sqrt((double)d * sq) * fabs(scale) + 4.0 * fabs(s[j - lo])) + REF_U_EXP;
        if (s[j - lo] > m) m = s[j - lo];
    }
    double sum = 0.0;
    for (int64_t j = lo; j < hi; j++) {
        p[j - lo] = exp(s[j - lo] - m);
        sum += p[j - lo];
        axpy(out, p[j - lo], vr[j], dv);
    }
    for (int c = 0; c < dv; c++) out[c] /= sum;
    double lse_v = m + log(sum);
    if (lse) *lse = lse_v;
    if (e) {
        double lse_e2 = 0.0, w2 = 0.0;
        for (int64_t j = lo; j < hi; j++) {
            double w = p[j - lo] / sum;
            lse_e2 += (w * ds[j - lo]) * (w * ds[j - lo]);
            w2 += w * w;
        }
        double combine = 4.0 * REF_U32 * (fabs(lse_v) + 1.0); /* a split's weight exp(lse_i - lse) in f32 */
        if (lse_err) *lse_err = sqrt(lse_e2 + REF_U32 * REF_U32 * (n * w2 + 16.0 * lse_v * lse_v));
        if (out_err) {
            /* key-major, so each value row is read once: out_err[] holds the squared sum
             * of rounding and shift terms, t2[] the squared terms, both summed in key order */
            double *t2 = calloc((size_t)dv, sizeof *t2);
            for (int64_t j = lo; j < hi; j++) {
                double w = p[j - lo] / sum;
                out_err_terms(out_err, t2, vr[j], out, dv, w, w * ds[j - lo], fmin(p[j - lo], e->prec.tiny) / sum,
                              e->prec.unit);
            }
            for (int c = 0; c < dv; c++) {
                double e2 = out_err[c] + REF_U32 * REF_U32 * n * (t2[c] + out[c] * out[c] * w2);
                e2 += (combine * out[c]) * (combine * out[c]);
                out_err[c] = sqrt(e2);
            }
            free(t2);
        }
    }
    free(s);
}

/* Where prefill's keys live: contiguous (cu_k) or paged (table, lens_k). */
typedef struct ref_keys {
    const double *k, *v;
    const int32_t *cu_k;                   /* contiguous: [nb + 1] */
    const int32_t *table, *lens_k;         /* paged: [nb, max_blocks], [nb] */
    int block_size, max_blocks;
} ref_keys;

static void prefill(const double *q, const ref_keys *kv, int64_t total_q, int h_q, int h_kv, int d, int dv,
                    const int32_t *cu_q, int nb, double scale, int causal, int window_left, int window_right,
                    double *out, double *lse, const ref_attn_err *e) {
    int group = h_q / h_kv;
    for (int64_t t = cu_q[nb]; t < total_q; t++)
        for (int h = 0; h < h_q; h++) {
            for (int c = 0; c < dv; c++) out[(t * h_q + h) * dv + c] = 0.0;
            for (int c = 0; e && e->out && c < dv; c++) e->out[(t * h_q + h) * dv + c] = 0.0;
            if (lse) lse[h * total_q + t] = INFINITY;
            if (e && e->lse) e->lse[h * total_q + t] = 0.0;
        }
    for (int b = 0; b < nb; b++) {
        int64_t lq = cu_q[b + 1] - cu_q[b], lk = kv->table ? kv->lens_k[b] : kv->cu_k[b + 1] - kv->cu_k[b];
        const double **kr = malloc((size_t)(lk + 1) * sizeof *kr), **vr = malloc((size_t)(lk + 1) * sizeof *vr);
        for (int h = 0; h < h_q; h++) {
            int g = h / group;
            for (int64_t j = 0; j < lk; j++) {
                int64_t row = kv->cu_k ? kv->cu_k[b] + j : 0;
                if (kv->table) /* row of the cache seen as [num_blocks * block_size, h_kv, d] */
                    row = (int64_t)kv->table[(int64_t)b * kv->max_blocks + j / kv->block_size] * kv->block_size +
                          j % kv->block_size;
                kr[j] = kv->k + (row * h_kv + g) * d;
                vr[j] = kv->v + (row * h_kv + g) * dv;
            }
            for (int64_t i = 0; i < lq; i++) {
                int64_t t = cu_q[b] + i, ip = i + lk - lq, lo = 0, hi = lk;
                if (causal && ip + 1 < hi) hi = ip + 1;
                if (window_right >= 0 && ip + window_right + 1 < hi) hi = ip + window_right + 1;
                if (window_left >= 0 && ip - window_left > lo) lo = ip - window_left;
                ref_row(q + (t * h_q + h) * d, kr, vr, lo, hi, d, dv, scale, out + (t * h_q + h) * dv,
                        lse ? lse + h * total_q + t : NULL, e, e && e->out ? e->out + (t * h_q + h) * dv : NULL,
                        e && e->lse ? e->lse + h * total_q + t : NULL);
            }
        }
        free(kr);
        free(vr);
    }
}

void ref_attention_prefill(const double *q, const double *k, const double *v, int64_t total_q, int h_q, int h_kv,
                           int d, int dv, const int32_t *cu_q, const int32_t *cu_k, int nb, double scale, int causal,
                           int window_left, int window_right, double *out, double *lse, const ref_attn_err *e) {
    ref_keys kv = {.k = k, .v = v, .cu_k = cu_k};
    prefill(q, &kv, total_q, h_q, h_kv, d, dv, cu_q, nb, scale, causal, window_left, window_right, out, lse, e);
}

void ref_attention_prefill_paged(const double *q, const double *k_cache, const double *v_cache, int64_t total_q,
                                 int h_q, int h_kv, int d, int dv, int block_size, const int32_t *block_table,
                                 int max_blocks, const int32_t *seq_lens_k, const int32_t *cu_q, int nb, double scale,
                                 int causal, int window_left, int window_right, double *out, double *lse,
                                 const ref_attn_err *e) {
    ref_keys kv = {.k = k_cache, .v = v_cache, .table = block_table, .lens_k = seq_lens_k, .block_size = block_size,
                   .max_blocks = max_blocks};
    prefill(q, &kv, total_q, h_q, h_kv, d, dv, cu_q, nb, scale, causal, window_left, window_right, out, lse, e);
}

void ref_attention_decode(const double *q, const double *k_cache, const double *v_cache, int b, int s_q, int h_q,
                          int h_kv, int d, int dv, int k_ld, int v_ld, int block_size, const int32_t *block_table,
                          int max_blocks, const int32_t *seq_lens, double scale, int causal, double *out,
                          double *lse, const ref_attn_err *e) {
    ref_attention_decode_window(q, k_cache, v_cache, b, s_q, h_q, h_kv, d, dv, k_ld, v_ld, block_size, block_table,
                                max_blocks, seq_lens, scale, causal, 0, out, lse, e);
}

void ref_attention_decode_window(const double *q, const double *k_cache, const double *v_cache, int b, int s_q,
                                 int h_q, int h_kv, int d, int dv, int k_ld, int v_ld, int block_size,
                                 const int32_t *block_table, int max_blocks, const int32_t *seq_lens, double scale,
                                 int causal, int window_left, double *out, double *lse, const ref_attn_err *e) {
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
                int64_t lo = window_left > 0 ? len - s_q + i - window_left : 0;
                if (hi > len) hi = len;
                int64_t row = ((int64_t)bi * s_q + i) * h_q + h;
                int64_t lrow = ((int64_t)bi * h_q + h) * s_q + i;
                ref_row(q + row * d, kr, vr, lo, hi, d, dv, scale, out + row * dv, lse ? lse + lrow : NULL, e,
                        e && e->out ? e->out + row * dv : NULL, e && e->lse ? e->lse + lrow : NULL);
            }
        }
        free(kr);
        free(vr);
    }
}
