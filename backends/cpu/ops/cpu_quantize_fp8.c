/*
 * backends/cpu/ops/cpu_quantize_fp8.c — kp_quantize_fp8 on the CPU backend: per token
 * and 128-wide group, the f32 amax, the scale (amax / 448, or UE8M0: the power of two
 * at or above it), and e4m3(x / scale) (cpu_fp8.h).
 */
#include "cpu_fp8.h"
#include "cpu_gemm.h"

typedef struct quant_job {
    const kp_quantize_fp8_params *p;
    const cpu_kernels *cvt;
    int64_t groups, s_t, s_g; /* scale strides of token and group, in elements */
} quant_job;

static void quant_range(void *ctx, int64_t t0, int64_t t1) {
    const quant_job *j = ctx;
    const kp_quantize_fp8_params *p = j->p;
    float *scales = (float *)cpu_tensor_data(&p->scale);
    float row[KP_FP8_GROUP];
    for (int64_t t = t0; t < t1; t++)
        for (int64_t g = 0; g < j->groups; g++) {
            cpu_load_row(j->cvt, p->x.dtype, cpu_at2(&p->x, t, g * KP_FP8_GROUP), row, KP_FP8_GROUP);
            scales[t * j->s_t + g * j->s_g] =
                cpu_fp8_quantize_group(row, cpu_at2(&p->out, t, g * KP_FP8_GROUP), p->scale_ue8m0);
        }
}

kp_status cpu_op_quantize_fp8(kp_op op, kp_stream *s, const void *params, int dry_run) {
    (void)op;
    const kp_quantize_fp8_params *p = params;
    if (dry_run) return KP_OK;
    quant_job job = {p, cpu_state(s)->kernels, p->x.shape[1] / KP_FP8_GROUP, 0, 0};
    int col = p->scale_layout == KP_FP8_SCALE_COL_MAJOR;
    job.s_t = col ? 1 : p->scale.strides[0];
    job.s_g = col ? p->scale.strides[0] : 1;
    cpu_moe_stream_lock(s);
    cpu_pool_parallel_for(cpu_state(s)->pool, p->x.shape[0], 4, quant_range, &job);
    cpu_moe_stream_unlock(s);
    return KP_OK;
}
