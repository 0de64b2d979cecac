/*
 * backends/opencl/ops/opencl_attention_decode.h — the paged decode launch shared by
 * kp_attention_decode and kp_mla_decode (opencl_attention_decode.c).
 */
#ifndef KPORT_OPENCL_ATTENTION_DECODE_H
#define KPORT_OPENCL_ATTENTION_DECODE_H

#include "opencl_attention_common.h"

typedef struct kp_ocl_paged_args {
    const kp_tensor *q, *k_cache, *v_cache, *block_table, *seq_lens, *out, *lse; /* borrowed */
    float scale;
    int causal, num_splits, dv, mla; /* mla: v_cache == k_cache, V its first dv columns */
} kp_ocl_paged_args;

kp_status kp_ocl_paged_decode(kp_op op, kp_stream *s, const kp_ocl_paged_args *a, int dry_run);

#endif /* KPORT_OPENCL_ATTENTION_DECODE_H */
