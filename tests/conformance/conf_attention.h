/*
 * tests/conformance/conf_attention.h — case runners shared by the attention
 * conformance files (test_conf_attention.c, test_conf_mla.c).
 */
#ifndef KPORT_TESTS_CONF_ATTENTION_H
#define KPORT_TESTS_CONF_ATTENTION_H

#include "kp_conformance.h"

/* A paged decode case: kp_attention_decode, or kp_mla_decode when mla != 0 (then
 * h_kv = 1 and V is the first dv columns of the d-wide cache). Blocks are handed out
 * in a shuffled order; table entries a sequence does not use hold out-of-range values
 * that must never be read. Runs once per entry of splits[] (num_splits), each against
 * the float64 reference and against the first run. */
typedef struct conf_paged_case {
    kp_dtype dt;
    int b, s_q, h_q, h_kv, d, dv, block_size;
    const int32_t *seq_lens; /* [b] */
    int causal, lse;
    double scale;            /* 0: 1/sqrt(d) */
    int mla;
    const int32_t *splits;   /* NULL: {0} */
    int nsplits;
    int outliers;            /* a few key channels x100: logits spanning about +-30 */
    const char *may_decline; /* backends whose documented limits exclude this case */
    int window_left;         /* kp_attention_decode's (0: unbounded); not MLA */
    /* FP8 e4m3 caches: values up to fp8_range (outliers: x100, still within 448), read
     * as e4m3 * scale; scale fp8_scale per tensor, or per cache block times 2^-2..2^2 */
    int fp8, fp8_per_block;
    double fp8_scale, fp8_range;
} conf_paged_case;

void conf_run_paged(kp_device *d, kp_stream *s, const conf_paged_case *c);

#endif
