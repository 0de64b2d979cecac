/*
 * tests/ref/ref_attention.h — float64 references for the attention ops: plain loops,
 * a softmax over every visible key of a row at once (no tiling, no online softmax),
 * independent of every backend. Layouts as in kport.h, all contiguous, in double.
 */
#ifndef KPORT_TESTS_REF_ATTENTION_H
#define KPORT_TESTS_REF_ATTENTION_H

#include "ref_prec.h"

#include <stdint.h>

/* Error-model outputs (ref_prec.h), laid out like out and lse; either may be NULL. */
typedef struct ref_attn_err {
    ref_prec prec; /* how the probabilities P may be rounded before P·V */
    double *out;
    double *lse;
} ref_attn_err;

/* q [total_q, h_q, d], k [total_k, h_kv, d], v [total_k, h_kv, dv] -> out [total_q, h_q, dv],
 * lse [h_q, total_q] (may be NULL). cu_q / cu_k [nb + 1]. Rows past cu_q[nb] and rows
 * with no visible key: out 0, lse +inf (error 0). e may be NULL. */
void ref_attention_prefill(const double *q, const double *k, const double *v, int64_t total_q, int h_q, int h_kv,
                           int d, int dv, const int32_t *cu_q, const int32_t *cu_k, int nb, double scale, int causal,
                           int window_left, int window_right, double *out, double *lse, const ref_attn_err *e);

/* q [B, s_q, h_q, d]; k_cache [num_blocks, block_size, h_kv, k_ld] (first d used);
 * v_cache [num_blocks, block_size, h_kv, v_ld] (first dv used); block_table [B, max_blocks];
 * seq_lens [B] -> out [B, s_q, h_q, dv], lse [B, h_q, s_q] (may be NULL).
 * MLA: h_kv 1, v_cache = k_cache, v_ld = k_ld = 576, dv 512. e may be NULL. */
/* The same over a paged cache (kp_attention_prefill with a block table): k_cache
 * [num_blocks, block_size, h_kv, d], v_cache [.., dv], block_table [nb, max_blocks],
 * seq_lens_k [nb] (key counts, bottom-right aligned against the cu_q lengths). */
void ref_attention_prefill_paged(const double *q, const double *k_cache, const double *v_cache, int64_t total_q,
                                 int h_q, int h_kv, int d, int dv, int block_size, const int32_t *block_table,
                                 int max_blocks, const int32_t *seq_lens_k, const int32_t *cu_q, int nb, double scale,
                                 int causal, int window_left, int window_right, double *out, double *lse,
                                 const ref_attn_err *e);

void ref_attention_decode(const double *q, const double *k_cache, const double *v_cache, int b, int s_q, int h_q,
                          int h_kv, int d, int dv, int k_ld, int v_ld, int block_size, const int32_t *block_table,
                          int max_blocks, const int32_t *seq_lens, double scale, int causal, double *out,
                          double *lse, const ref_attn_err *e);

/* Decode with kp_attention_decode's window_left: > 0 limits query i to keys from
 * seq_len - s_q + i - window_left on; 0 or -1 unbounded (ref_attention_decode). */
void ref_attention_decode_window(const double *q, const double *k_cache, const double *v_cache, int b, int s_q,
                                 int h_q, int h_kv, int d, int dv, int k_ld, int v_ld, int block_size,
                                 const int32_t *block_table, int max_blocks, const int32_t *seq_lens, double scale,
                                 int causal, int window_left, double *out, double *lse, const ref_attn_err *e);

#endif
