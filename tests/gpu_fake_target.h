/*
 * tests/gpu_fake_target.h - a recording fake GPU target for the op-layer tests
 * (test_gpu_plan.c, test_gpu_plan_cache.c): every launch the shared planners make is
 * recorded (geometry, options, a copy of its kargs block) instead of run;
 * variant_check refuses one options string (fake_missing) to exercise fallbacks.
 */
#ifndef KPORT_TESTS_GPU_FAKE_TARGET_H
#define KPORT_TESTS_GPU_FAKE_TARGET_H

#include "gpu_variants.h"
#include "ops/gpu_ops.h"

#define FAKE_MAX 16 /* kp_moe_forward's chain: up to 12 launches */
extern kp_gpu_launch fake_launches[FAKE_MAX];
extern char fake_options[FAKE_MAX][256];
extern const void *fake_kargs[FAKE_MAX];
extern int fake_count;
extern const char *fake_missing;
extern kp_device_info fake_info;
extern kp_gpu_profile fake_prof;
extern int64_t fake_tuned_bn, fake_tuned_gen, fake_tuned_fused;
extern int64_t fake_tuned_prefill_gen; /* > 0: the tuning table's attention_prefill gen */
extern int64_t fake_tuned_pingpong; /* >= 0: the tuning table's attention_prefill sm90_pingpong */
extern char fake_error[512];
extern char fake_logged[2048];
extern int fake_scratch[2];
extern size_t fake_scratch_cap[2];
extern int fake_scratch_reserves;
extern kp_buffer fake_buf[12];
extern const kp_host_services fake_host;
extern const kp_gpu_target fake_target;

kp_status fake_set_error(kp_status st, const char *fmt, ...);
kp_status fake_add_context(kp_status st, const char *fmt, ...);
void fake_log(const char *fmt, ...);
const char *fake_cache_dir(void);
int64_t fake_tuning(const kp_device_info *d, const char *kernel, const char *param, int64_t def);
void fake_profile(kp_stream *s, kp_gpu_profile *out);
kp_status fake_check(kp_stream *s, const char *source, const char *options);
kp_status fake_launch(kp_stream *s, const kp_gpu_launch *l);
int fake_scratch_get(kp_stream *s, const size_t bytes[2], void *out[2]);
kp_status fake_scratch_reserve(kp_stream *s, const size_t bytes[2]);
void fake_scratch_release(kp_stream *s, void *h[2]);
/* Resets the recorder and the profile to `backend`'s (132 compute units). */
void fake_reset(const char *backend);
/* fake_reset("cuda") on an sm_90a device (an H100/H200 whose plugin holds the tier's
 * kernels, test_gpu_plan_sm90*.c): the tuning table's "grouped_gemm;gen" gemm_gen and
 * "attention_prefill;gen" prefill_gen (0: no row; auto picks the tier only on a row of 3,
 * which no device has yet), KPORT_GPU_KERNELS = kernels (NULL: unset), KPORT_DISABLE_TIER
 * unset. fake_sm90_done() after: both switches unset, the tuning rows dropped. */
void fake_reset_sm90(const char *kernels, int64_t gemm_gen, int64_t prefill_gen);
void fake_sm90_done(void);
/* A plan that takes one kernel: kp_op_kernel's answer for `op` on params (kp_gpu_op_kernel)
 * is `name` and launches nothing, then the run makes exactly one launch, returned (its
 * kargs block: fake_kargs[0]). Failures name the caller's line. */
const kp_gpu_launch *fake_plan_one_at(kp_stream *s, kp_op op, const void *params, const char *name,
                                      const char *file, int line);
#define fake_plan_one(s, op, params, name) fake_plan_one_at((s), (op), (params), (name), __FILE__, __LINE__)
/* A contiguous tensor on fake_buf[b]. */
kp_tensor fake_tensor(int b, kp_dtype dt, int ndim, const int64_t *shape);
/* A GQA prefill (32/8 heads, head dim d, two sequences of at most 200 tokens). */
kp_attention_prefill_params fake_prefill_params(kp_dtype dt, int d);

#endif /* KPORT_TESTS_GPU_FAKE_TARGET_H */
