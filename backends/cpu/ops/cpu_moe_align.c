/*
 * backends/cpu/ops/cpu_moe_align.c — kp_moe_align on the CPU backend, and the
 * counting sort kp_moe_forward shares (cpu_moe_align_fill).
 *
 * Output layout (what the GPU kernels produce too):
 *   expert_offsets[e] = the first row of expert e; each expert's row count is padded
 *     up to a multiple of block_size; expert_offsets[E] = the padded total.
 *   sorted_ids[row] = t * k + slot of the pair in that row, pairs of one expert in
 *     their original (t, slot) order (stable); every other entry — the padding rows
 *     of each expert and all entries at or past expert_offsets[E] — is T * k.
 *   token_pos[t, slot] = the row of pair (t, slot).
 * An id outside [0, num_experts) is an error (KP_ERR_INVALID_ARGUMENT naming
 * topk_ids and the position); all ids are checked before anything is written.
 */
#include "cpu_gemm.h"

#define CPU_ALIGN_MAX_EXPERTS 4096 /* the core's limit on num_experts */

void cpu_moe_align_fill(const int32_t *ids, int64_t pairs, int32_t num_experts, int32_t block_size,
                        int32_t *sorted_ids, int64_t sorted_len, int32_t *offsets, int32_t *token_pos) {
    /* offsets[e + 1] counts expert e first, then becomes the padded prefix sum */
    for (int32_t e = 0; e <= num_experts; e++) offsets[e] = 0;
    for (int64_t i = 0; i < pairs; i++) offsets[ids[i] + 1]++;
    for (int32_t e = 0; e < num_experts; e++) {
        int32_t padded = (offsets[e + 1] + block_size - 1) / block_size * block_size;
        offsets[e + 1] = offsets[e] + padded;
    }
    for (int64_t r = 0; r < sorted_len; r++) sorted_ids[r] = (int32_t)pairs;
    int32_t next[CPU_ALIGN_MAX_EXPERTS]; /* the next free row of each expert */
    for (int32_t e = 0; e < num_experts; e++) next[e] = offsets[e];
    for (int64_t i = 0; i < pairs; i++) { /* in pair order: stable */
        int32_t row = next[ids[i]]++;
        sorted_ids[row] = (int32_t)i;
        token_pos[i] = row;
    }
}

kp_status cpu_op_moe_align(kp_op op, kp_stream *s, const void *params, int dry_run) {
    (void)op;
    const kp_moe_align_params *p = params;
    if (dry_run) return KP_OK;
    const int32_t *ids = (const int32_t *)cpu_tensor_data(&p->topk_ids);
    int64_t k = p->topk_ids.shape[1], pairs = p->topk_ids.shape[0] * k;
    cpu_moe_stream_lock(s);
    for (int64_t i = 0; i < pairs; i++) {
        if (ids[i] < 0 || ids[i] >= p->num_experts) {
            cpu_moe_stream_unlock(s);
            return cpu_host()->set_error(KP_ERR_INVALID_ARGUMENT,
                                         "moe_align: topk_ids[%lld, %lld] is %d; expert ids must be in [0, %d)",
                                         (long long)(i / k), (long long)(i % k), (int)ids[i],
                                         (int)p->num_experts);
        }
    }
    cpu_moe_align_fill(ids, pairs, p->num_experts, p->block_size,
                       (int32_t *)cpu_tensor_data(&p->sorted_ids),
                       p->sorted_ids.shape[0],
                       (int32_t *)cpu_tensor_data(&p->expert_offsets),
                       (int32_t *)cpu_tensor_data(&p->token_pos));
    cpu_moe_stream_unlock(s);
    return KP_OK;
}
