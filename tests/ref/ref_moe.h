/*
 * tests/ref/ref_moe.h — float64 references of the MoE ops, written from DESIGN §2 and
 * kport.h alone (independent of every backend): plain loops in double.
 */
#ifndef KPORT_TESTS_REF_MOE_H
#define KPORT_TESTS_REF_MOE_H

#include "kport.h"
#include "ref_prec.h"

/* DeepSeek-V3 / V2 / Mixtral gate. logits [t, e], bias NULL or [e] -> ids [t, k],
 * weights [t, k] (descending biased score, ties to the lower index). Scores, biased
 * scores and group scores are f32 values, as DeepSeek's model.py computes them, so
 * scores that saturate to the same f32 (sigmoid of logits past ~17) tie.
 * weights_err (may be NULL): the error model of ref_prec.h for the weights. */
void ref_moe_gate(const double *logits, int64_t t, int64_t e, const double *bias, const kp_moe_routing *r,
                  double *ids, double *weights, double *weights_err);

/* Stable sort of pairs by expert with padding (kport.h, cpu_moe_align.c's layout):
 * sorted [sorted_len], offsets [num_experts + 1], token_pos [pairs]. */
void ref_moe_align(const double *ids, int64_t pairs, int32_t num_experts, int32_t block_size, double *sorted,
                   int64_t sorted_len, double *offsets, double *token_pos);

/* out[r, :] = a[r, :] · w[e]ᵀ for rows in expert e's range; other rows untouched.
 * err (may be NULL): the error model, with products rounded to prec (FP8 weights: f32,
 * the products exact and each 128-wide K slice scaled once). w_expert_stride: elements
 * between experts (n * k when dense). */
void ref_grouped_gemm(const double *a, int64_t k, const double *w, int64_t w_expert_stride, int64_t experts,
                      int64_t n, const int32_t *offsets, double *out, const ref_prec *prec, double *err);

/* out[t, :] = sum_slot weights[t, slot] * y[pos[t, slot], :]. err may be NULL. */
void ref_moe_combine(const double *y, const double *pos, const double *weights, int64_t t, int64_t k,
                     int64_t hidden, double *out, double *err);

/* Error model of a fused MoE layer (ref_prec.h): `store` is how the layer's two stored
 * intermediates, h = silu(gate) * up and the expert output y = h·w2ᵀ, are rounded in the
 * workspace (kp_moe_forward keeps them in the activations' dtype; gate and up stay f32
 * in registers: SwiGLU is the w13 GEMM's epilogue), `terms` how the GEMMs' products may
 * be; err2 [hidden] accumulates squared errors. */
typedef struct ref_mlp_err {
    ref_prec store, terms;
    double *err2;
} ref_mlp_err;

/* One SwiGLU MLP on one row: out[hidden] += scale * (silu(x·w1ᵀ) * (x·w3ᵀ))·w2ᵀ, with
 * w13 [2*inter, hidden] (gate rows, then up rows), w2 [hidden, inter]. e may be NULL. */
void ref_swiglu_mlp_add(const double *x, const double *w13, const double *w2, int64_t hidden, int64_t inter,
                        double scale, double *out, const ref_mlp_err *e);

/* OCP e4m3fn decode (bias 7, no infinities, 0x7f / 0xff NaN). */
double ref_fp8_e4m3(unsigned char b);

#endif
