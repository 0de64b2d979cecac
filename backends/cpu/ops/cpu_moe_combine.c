/*
 * backends/cpu/ops/cpu_moe_combine.c — kp_moe_combine on the CPU backend, and the
 * row combine kp_moe_forward fuses into its last step (cpu_moe_combine_row).
 *
 * out[t, :] = sum over slot 0..k-1, in that order, of topk_weights[t, slot] *
 * expert_out[token_pos[t, slot], :], accumulated in f32 one slot at a time, so each
 * element's sum has one fixed order: bitwise the same run to run and whatever the
 * thread count. A token_pos outside [0, rows) is KP_ERR_INVALID_ARGUMENT, found
 * before anything is written.
 */
#include "cpu_gemm.h"

#define COMBINE_CHUNK 256

void cpu_moe_combine_row(const cpu_combine_src *src, int64_t t, int64_t n0, int64_t nc, const float *extra,
                         kp_dtype dt, void *dst) {
    const int32_t *pos = src->pos + t * src->pos_ld;
    const float *w = src->weights + t * src->weights_ld;
    size_t ysz = kp_dtype_size(src->y_dtype), osz = kp_dtype_size(dt);
    float acc[COMBINE_CHUNK], row[COMBINE_CHUNK];
    for (int64_t c0 = 0; c0 < nc; c0 += COMBINE_CHUNK) {
        int64_t len = nc - c0 < COMBINE_CHUNK ? nc - c0 : COMBINE_CHUNK;
        for (int64_t i = 0; i < len; i++) acc[i] = 0.0f;
        for (int64_t slot = 0; slot < src->k; slot++) {
            const unsigned char *y = src->y + (size_t)((int64_t)pos[slot] * src->y_ld + n0 + c0) * ysz;
            const float *yf = (const float *)y;
            if (src->y_dtype != KP_F32) {
                cpu_load_row(src->cvt, src->y_dtype, y, row, len);
                yf = row;
            }
            float ws = w[slot];
            for (int64_t i = 0; i < len; i++) acc[i] += ws * yf[i];
        }
        if (extra)
            for (int64_t i = 0; i < len; i++) acc[i] += extra[c0 + i];
        cpu_store_row(src->cvt, dt, acc, (unsigned char *)dst + (size_t)c0 * osz, len);
    }
}

typedef struct combine_job {
    cpu_combine_src src;
    const kp_tensor *out;
    int64_t hidden;
} combine_job;

static void combine_range(void *ctx, int64_t t0, int64_t t1) {
    const combine_job *j = ctx;
    for (int64_t t = t0; t < t1; t++)
        cpu_moe_combine_row(&j->src, t, 0, j->hidden, NULL, j->out->dtype, cpu_at2(j->out, t, 0));
}

kp_status cpu_op_moe_combine(kp_op op, kp_stream *s, const void *params, int dry_run) {
    (void)op;
    const kp_moe_combine_params *p = params;
    if (dry_run) return KP_OK;
    int64_t t = p->token_pos.shape[0], k = p->token_pos.shape[1], rows = p->expert_out.shape[0];
    const int32_t *pos = (const int32_t *)cpu_tensor_data(&p->token_pos);
    cpu_moe_stream_lock(s);
    for (int64_t i = 0; i < t * k; i++) {
        if (pos[i] < 0 || pos[i] >= rows) {
            cpu_moe_stream_unlock(s);
            return cpu_host()->set_error(KP_ERR_INVALID_ARGUMENT,
                                         "moe_combine: token_pos[%lld, %lld] is %d; rows of expert_out are [0, %lld)",
                                         (long long)(i / k), (long long)(i % k), (int)pos[i], (long long)rows);
        }
    }
    combine_job job = {
        .src = {.y = cpu_at2(&p->expert_out, 0, 0),
                .y_dtype = p->expert_out.dtype,
                .y_ld = p->expert_out.strides[0],
                .y_rows = rows,
                .pos = pos,
                .pos_ld = k,
                .weights = (const float *)cpu_at2(&p->topk_weights, 0, 0),
                .weights_ld = p->topk_weights.strides[0],
                .k = k,
                .cvt = cpu_state(s)->kernels},
        .out = &p->out,
        .hidden = p->out.shape[1],
    };
    cpu_pool_parallel_for(cpu_state(s)->pool, t, 4, combine_range, &job);
    cpu_moe_stream_unlock(s);
    return KP_OK;
}
