/*
 * tests/ref/ref_moe.h — float64 references of the MoE ops, written from DESIGN §2 and
 * kport.h alone (independent of every backend): plain loops in double.
 */
#ifndef KPORT_TESTS_REF_MOE_H
#define KPORT_TESTS_REF_MOE_H

#include "kport.h"

/* DeepSeek-V3 / V2 / Mixtral gate. logits [t, e], bias NULL or [e] -> ids [t, k],
 * weights [t, k] (descending biased score, ties to the lower index). */
void ref_moe_gate(const double *logits, int64_t t, int64_t e, const double *bias, const kp_moe_routing *r,
                  double *ids, double *weights);

/* Stable sort of pairs by expert with padding (kport.h, cpu_moe_align.c's layout):
 * sorted [sorted_len], offsets [num_experts + 1], token_pos [pairs]. */
void ref_moe_align(const double *ids, int64_t pairs, int32_t num_experts, int32_t block_size, double *sorted,
                   int64_t sorted_len, double *offsets, double *token_pos);

/* out[r, :] = a[r, :] · w[e]ᵀ for rows in expert e's range; other rows untouched. */
void ref_grouped_gemm(const double *a, int64_t k, const double *w, int64_t experts, int64_t n,
                      const int32_t *offsets, double *out);

/* out[t, :] = sum_slot weights[t, slot] * y[pos[t, slot], :]. */
void ref_moe_combine(const double *y, const double *pos, const double *weights, int64_t t, int64_t k,
                     int64_t hidden, double *out);

/* One SwiGLU MLP on one row: out[hidden] += scale * (silu(x·w1ᵀ) * (x·w3ᵀ))·w2ᵀ, with
 * w13 [2*inter, hidden] (gate rows, then up rows), w2 [hidden, inter]. */
void ref_swiglu_mlp_add(const double *x, const double *w13, const double *w2, int64_t hidden, int64_t inter,
                        double scale, double *out);

/* OCP e4m3fn decode (bias 7, no infinities, 0x7f / 0xff NaN). */
double ref_fp8_e4m3(unsigned char b);

#endif
