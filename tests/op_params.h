/*
 * tests/op_params.h — small, valid argument sets for every op, each tensor in its own
 * buffer filled with random bytes. The API tests break one rule at a time from here.
 */
#ifndef KPORT_TESTS_OP_PARAMS_H
#define KPORT_TESTS_OP_PARAMS_H

#include "kport.h"

#define OP_PARAMS_MAX_BUFFERS 16

typedef struct op_params {
    kp_op op;
    union {
        kp_attention_prefill_params prefill;
        kp_attention_decode_params decode;
        kp_mla_decode_params mla;
        kp_moe_gate_params gate;
        kp_moe_align_params align;
        kp_grouped_gemm_params gemm;
        kp_moe_combine_params combine;
        kp_moe_forward_params forward;
        kp_kv_cache_store_params kv_store;
        kp_quantize_fp8_params quant;
    } p;
    kp_buffer *buffers[OP_PARAMS_MAX_BUFFERS];
    const char *names[OP_PARAMS_MAX_BUFFERS]; /* "q" */
    int nbuffers;
    int outputs; /* buffers[0..outputs) are the outputs */
    kp_device *extra_device; /* a second handle a test opened; closed by op_params_free */
} op_params;

/* Hands a buffer a test made to o, so op_params_free frees it. */
void op_params_adopt(op_params *o, kp_buffer *b);

/* Builds a valid argument set for op on d. */
void op_params_make(op_params *o, kp_device *d, kp_op op);
void op_params_free(op_params *o);
/* Snapshots of the output buffers, to show a failed call wrote nothing. */
void op_params_snapshot(op_params *o, unsigned char **snaps);
void op_params_unchanged_at(op_params *o, unsigned char **snaps, const char *file, int line);
#define op_params_unchanged(o, s) op_params_unchanged_at((o), (s), __FILE__, __LINE__)
/* Runs the op through its public entry point. */
kp_status op_params_run(op_params *o, kp_stream *s);

#endif
