/*
 * tests/ref/ref_moe.c — see ref_moe.h. Deliberately naive: full sorts with explicit
 * tie rules, no early exits, every sum in double.
 */
#include "ref_moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct ranked {
    double v;
    int64_t i;
} ranked;

/* descending value, ties to the lower index; -inf sorts last, its ties by index too */
static int by_value_desc(const void *pa, const void *pb) {
    const ranked *a = pa, *b = pb;
    if (a->v > b->v) return -1;
    if (a->v < b->v) return 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

static double f32(double x) { return (double)(float)x; }

void ref_moe_gate(const double *logits, int64_t t, int64_t e, const double *bias, const kp_moe_routing *r,
                  double *ids, double *weights, double *weights_err) {
    double *s = malloc((size_t)e * sizeof *s);
    ranked *b = malloc((size_t)e * sizeof *b);
    int64_t ng = r->n_group, gs = e / ng;
    ranked *g = malloc((size_t)ng * sizeof *g);
    ranked *in_group = malloc((size_t)gs * sizeof *in_group);
    for (int64_t tok = 0; tok < t; tok++) {
        const double *l = logits + tok * e;
        /* scores */
        double mx = l[0];
        for (int64_t i = 1; i < e; i++) mx = fmax(mx, l[i]);
        if (r->scoring == KP_MOE_SCORING_SOFTMAX) {
            double den = 0.0;
            for (int64_t i = 0; i < e; i++) den += exp(l[i] - mx);
            for (int64_t i = 0; i < e; i++) s[i] = f32(exp(l[i] - mx) / den);
        } else {
            for (int64_t i = 0; i < e; i++) s[i] = f32(1.0 / (1.0 + exp(-l[i])));
        }
        /* biased scores, for selection only */
        for (int64_t i = 0; i < e; i++) b[i] = (ranked){f32(s[i] + (bias ? bias[i] : 0.0)), i};
        /* group scores: sum of the top-2 biased scores (with a bias) or the best one */
        for (int64_t gi = 0; gi < ng; gi++) {
            memcpy(in_group, b + gi * gs, (size_t)gs * sizeof *in_group);
            qsort(in_group, (size_t)gs, sizeof *in_group, by_value_desc);
            double score = in_group[0].v;
            if (bias && gs >= 2) score = f32(score + in_group[1].v);
            g[gi] = (ranked){score, gi};
        }
        qsort(g, (size_t)ng, sizeof *g, by_value_desc);
        /* mask every expert outside the topk_group best groups with -inf */
        if (ng > 1) {
            for (int64_t rank = r->topk_group; rank < ng; rank++)
                for (int64_t i = g[rank].i * gs; i < (g[rank].i + 1) * gs; i++) b[i].v = -INFINITY;
        }
        qsort(b, (size_t)e, sizeof *b, by_value_desc);
        double sum = 0.0;
        for (int64_t n = 0; n < r->topk; n++) sum += s[b[n].i];
        for (int64_t n = 0; n < r->topk; n++) {
            ids[tok * r->topk + n] = (double)b[n].i;
            double w = s[b[n].i];
            if (r->renormalize) w /= sum;
            weights[tok * r->topk + n] = w * (double)r->route_scale;
            /* f32 exp (of a logit difference rounded to f32), division and sum */
            double rel = 4.0 * REF_U_EXP + 2.0 * REF_U32 * (fabs(l[b[n].i] - mx) + r->topk);
            if (weights_err) weights_err[tok * r->topk + n] = rel * fabs(weights[tok * r->topk + n]);
        }
    }
    free(s);
    free(b);
    free(g);
    free(in_group);
}

void ref_moe_align(const double *ids, int64_t pairs, int32_t num_experts, int32_t block_size, double *sorted,
                   int64_t sorted_len, double *offsets, double *token_pos) {
    for (int64_t i = 0; i < sorted_len; i++) sorted[i] = (double)pairs;
    int64_t row = 0;
    for (int32_t e = 0; e < num_experts; e++) {
        offsets[e] = (double)row;
        int64_t count = 0;
        for (int64_t i = 0; i < pairs; i++) /* pairs of e, in their original order */
            if ((int32_t)ids[i] == e) {
                sorted[row + count] = (double)i;
                token_pos[i] = (double)(row + count);
                count++;
            }
        row += (count + block_size - 1) / block_size * block_size;
    }
    offsets[num_experts] = (double)row;
}

/* The error model of one dot product: its terms rounded to prec, summed in f32. */
static double dot_err(double t2, int64_t n, const ref_prec *prec) {
    return sqrt(t2 * (prec->unit * prec->unit + REF_U32 * REF_U32 * (double)n));
}

void ref_grouped_gemm(const double *a, int64_t k, const double *w, int64_t w_expert_stride, int64_t experts,
                      int64_t n, const int32_t *offsets, double *out, const ref_prec *prec, double *err) {
    for (int64_t e = 0; e < experts; e++)
        for (int64_t r = offsets[e]; r < offsets[e + 1]; r++)
            for (int64_t j = 0; j < n; j++) {
                const double *wr = w + e * w_expert_stride + j * k;
                double acc = 0.0, t2 = 0.0;
                for (int64_t l = 0; l < k; l++) {
                    double t = a[r * k + l] * wr[l];
                    acc += t;
                    t2 += t * t;
                }
                out[r * n + j] = acc;
                if (err) err[r * n + j] = dot_err(t2, k, prec);
            }
}

void ref_moe_combine(const double *y, const double *pos, const double *weights, int64_t t, int64_t k,
                     int64_t hidden, double *out, double *err) {
    const ref_prec f32_terms = {REF_U32, 0.0};
    for (int64_t tok = 0; tok < t; tok++)
        for (int64_t c = 0; c < hidden; c++) {
            double acc = 0.0, t2 = 0.0;
            for (int64_t slot = 0; slot < k; slot++) {
                double term = weights[tok * k + slot] * y[(int64_t)pos[tok * k + slot] * hidden + c];
                acc += term;
                t2 += term * term;
            }
            out[tok * hidden + c] = acc;
            if (err) err[tok * hidden + c] = dot_err(t2, k, &f32_terms);
        }
}

/* The model propagates each intermediate's error to the output: gate and up (their
 * GEMM's error; f32, never stored), h = silu(gate) * up (through its derivatives, f32
 * exp, then rounded to store), y = h·w2ᵀ (h's errors, its own GEMM's, rounded to
 * store), scale * y (f32). */
void ref_swiglu_mlp_add(const double *x, const double *w13, const double *w2, int64_t hidden, int64_t inter,
                        double scale, double *out, const ref_mlp_err *e) {
    double *h = malloc((size_t)inter * sizeof *h), *dh = malloc((size_t)inter * sizeof *dh);
    for (int64_t j = 0; j < inter; j++) {
        double gate = 0.0, up = 0.0, g2 = 0.0, u2 = 0.0;
        for (int64_t l = 0; l < hidden; l++) {
            double tg = x[l] * w13[j * hidden + l], tu = x[l] * w13[(inter + j) * hidden + l];
            gate += tg, up += tu, g2 += tg * tg, u2 += tu * tu;
        }
        double sig = 1.0 / (1.0 + exp(-gate)), silu = gate * sig;
        h[j] = silu * up;
        if (e) {
            double dgate = dot_err(g2, hidden, &e->terms), dup = dot_err(u2, hidden, &e->terms);
            double dsilu = sig * (1.0 + gate * (1.0 - sig)); /* d silu / d gate */
            dh[j] = sqrt(pow(up * dsilu * dgate, 2) + pow(silu * dup, 2) + pow(e->store.unit * h[j], 2) +
                         pow(REF_U_EXP * h[j], 2));
        }
    }
    for (int64_t c = 0; c < hidden; c++) {
        double acc = 0.0, t2 = 0.0, from_h2 = 0.0;
        for (int64_t j = 0; j < inter; j++) {
            double t = h[j] * w2[c * inter + j];
            acc += t;
            t2 += t * t;
            if (e) from_h2 += pow(dh[j] * w2[c * inter + j], 2);
        }
        out[c] += scale * acc;
        if (e) {
            double ey2 = from_h2 + pow(dot_err(t2, inter, &e->terms), 2) + pow(e->store.unit * acc, 2);
            e->err2[c] += scale * scale * ey2 + pow(2.0 * REF_U32 * scale * acc, 2);
        }
    }
    free(h);
    free(dh);
}

double ref_fp8_e4m3(unsigned char b) {
    int sign = b >> 7, exp_bits = (b >> 3) & 15, man = b & 7;
    double v;
    if (exp_bits == 15 && man == 7) return NAN;
    if (exp_bits == 0) v = man / 8.0 * pow(2.0, -6);
    else v = (1.0 + man / 8.0) * pow(2.0, exp_bits - 7);
    return sign ? -v : v;
}
