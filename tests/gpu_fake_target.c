/*
 * tests/gpu_fake_target.c - the recording fake GPU target (gpu_fake_target.h).
 */
#include "kp_test.h"

#include "gpu_fake_target.h"

#include <stdarg.h>
#include <stdlib.h>


kp_gpu_launch fake_launches[FAKE_MAX];
char fake_options[FAKE_MAX][256]; /* a launch's options live in the op's stack frame */
_Alignas(8) unsigned char fake_kargs_copy[FAKE_MAX][KP_GPU_MAX_KARGS_BYTES]; /* so is its kargs block */
const void *fake_kargs[FAKE_MAX];
int fake_count;
const char *fake_missing; /* options variant_check refuses (NULL: none) */
kp_device_info fake_info;
kp_gpu_profile fake_prof;
int64_t fake_tuned_bn; /* > 0: the tuning table's attention block_n */
int64_t fake_tuned_gen; /* > 0: the tuning table's grouped_gemm gen */
int64_t fake_tuned_prefill_gen; /* > 0: the tuning table's attention_prefill gen */
int64_t fake_tuned_pingpong = -1; /* >= 0: the tuning table's attention_prefill sm90_pingpong */
int64_t fake_tuned_fused = -1; /* >= 0: the tuning table's grouped_gemm g8_fused_swiglu */
char fake_error[512];

kp_status fake_set_error(kp_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fake_error, sizeof fake_error, fmt, ap);
    va_end(ap);
    return st;
}
kp_status fake_add_context(kp_status st, const char *fmt, ...) {
    (void)fmt;
    return st;
}
char fake_logged[2048]; /* every log line, appended */
void fake_log(const char *fmt, ...) {
    size_t n = strlen(fake_logged);
    va_list ap;
    va_start(ap, fmt);
    if (n + 2 < sizeof fake_logged) vsnprintf(fake_logged + n, sizeof fake_logged - n - 1, fmt, ap);
    va_end(ap);
    strncat(fake_logged, "\n", sizeof fake_logged - strlen(fake_logged) - 1);
}
const char *fake_cache_dir(void) { return NULL; }
int64_t fake_tuning(const kp_device_info *d, const char *kernel, const char *param, int64_t def) {
    (void)d;
    if (fake_tuned_bn > 0 && strncmp(kernel, "attention", 9) == 0 && strcmp(param, "block_n") == 0)
        return fake_tuned_bn;
    if (fake_tuned_gen > 0 && strcmp(kernel, "grouped_gemm") == 0 && strcmp(param, "gen") == 0) return fake_tuned_gen;
    if (fake_tuned_prefill_gen > 0 && strcmp(kernel, "attention_prefill") == 0 && strcmp(param, "gen") == 0)
        return fake_tuned_prefill_gen;
    if (fake_tuned_pingpong >= 0 && strcmp(kernel, "attention_prefill") == 0 && strcmp(param, "sm90_pingpong") == 0)
        return fake_tuned_pingpong;
    if (fake_tuned_fused >= 0 && strcmp(kernel, "grouped_gemm") == 0 && strcmp(param, "g8_fused_swiglu") == 0)
        return fake_tuned_fused;
    return def;
}
const kp_host_services fake_host = {
    .abi_version = KP_BACKEND_ABI_VERSION, .set_error = fake_set_error, .add_context = fake_add_context,
    .log = fake_log, .cache_dir = fake_cache_dir, .tuning_get = fake_tuning,
};

void fake_profile(kp_stream *s, kp_gpu_profile *out) {
    (void)s;
    *out = fake_prof;
}
kp_status fake_check(kp_stream *s, const char *source, const char *options) {
    (void)s;
    if (fake_missing && strcmp(options, fake_missing) == 0)
        return fake_set_error(KP_ERR_UNSUPPORTED, "fake: %s %s not built", source, options);
    return KP_OK;
}
kp_status fake_launch(kp_stream *s, const kp_gpu_launch *l) {
    (void)s;
    if (fake_count < FAKE_MAX) {
        fake_launches[fake_count] = *l;
        snprintf(fake_options[fake_count], sizeof fake_options[0], "%s", l->options);
        fake_launches[fake_count].options = fake_options[fake_count];
        fake_kargs[fake_count] = NULL;
        for (int i = 0; i < l->nargs; i++)
            if (l->args[i].kind == KP_GPU_ARG_KARGS) {
                memcpy(fake_kargs_copy[fake_count], l->args[i].v.kargs.data, l->args[i].v.kargs.size);
                fake_kargs[fake_count] = fake_kargs_copy[fake_count];
                fake_launches[fake_count].args[i].v.kargs.data = fake_kargs_copy[fake_count];
            }
    }
    fake_count++;
    return KP_OK;
}
/* The stream scratch: its region sizes, and how often it was (re)allocated. Every
 * target frees, allocates and (on a stream kport created) waits only in scratch_reserve,
 * so counting reserves counts all three. */
int fake_scratch[2];
size_t fake_scratch_cap[2];
int fake_scratch_reserves;
int fake_scratch_get(kp_stream *s, const size_t bytes[2], void *out[2]) {
    (void)s;
    if (bytes[0] > fake_scratch_cap[0] || bytes[1] > fake_scratch_cap[1]) return 0;
    out[0] = &fake_scratch[0], out[1] = &fake_scratch[1];
    return 1;
}
kp_status fake_scratch_reserve(kp_stream *s, const size_t bytes[2]) {
    (void)s;
    fake_scratch_reserves++;
    for (int i = 0; i < 2; i++)
        if (bytes[i] > fake_scratch_cap[i]) fake_scratch_cap[i] = bytes[i];
    return KP_OK;
}
void fake_scratch_release(kp_stream *s, void *h[2]) { (void)s, (void)h; }

const kp_gpu_target fake_target = {
    .name = "fake", .host = &fake_host, .profile = fake_profile, .variant_check = fake_check,
    .launch = fake_launch, .scratch_get = fake_scratch_get, .scratch_reserve = fake_scratch_reserve,
    .scratch_release = fake_scratch_release,
};

void fake_reset(const char *backend) {
    CHECK(kp_gpu_build_profile(backend, &fake_info, &fake_prof) == 0);
    fake_prof.compute_units = 132;
    fake_prof.sm90a = 0; /* an sm_80-class device: the sm_90a tier's tests (test_gpu_plan_sm90.c) turn it on */
    fake_count = 0, fake_missing = NULL, fake_tuned_bn = 0, fake_tuned_gen = 0, fake_tuned_fused = -1;
    fake_tuned_prefill_gen = 0, fake_tuned_pingpong = -1;
    fake_error[0] = '\0';
    fake_logged[0] = '\0';
    fake_scratch_cap[0] = fake_scratch_cap[1] = 0, fake_scratch_reserves = 0;
}

void fake_reset_sm90(const char *kernels, int64_t gemm_gen, int64_t prefill_gen) {
    fake_reset("cuda");
    fake_prof.sm90a = 1;
    fake_tuned_gen = gemm_gen, fake_tuned_prefill_gen = prefill_gen;
    unsetenv("KPORT_DISABLE_TIER");
    if (kernels) setenv("KPORT_GPU_KERNELS", kernels, 1);
    else unsetenv("KPORT_GPU_KERNELS");
}

void fake_sm90_done(void) {
    unsetenv("KPORT_GPU_KERNELS");
    unsetenv("KPORT_DISABLE_TIER");
    fake_tuned_gen = 0, fake_tuned_prefill_gen = 0, fake_tuned_pingpong = -1;
}

const kp_gpu_launch *fake_plan_one_at(kp_stream *s, kp_op op, const void *params, const char *name,
                                      const char *file, int line) {
    char got[KP_KERNEL_NAME_MAX];
    fake_count = 0;
    kp_status st = kp_gpu_op_kernel(&fake_target, op, s, params, got, sizeof got);
    if (st != KP_OK) kp_test_fail(file, line, "kp_gpu_op_kernel -> %s: %s", kp_status_str(st), fake_error);
    if (strcmp(got, name) != 0) kp_test_fail(file, line, "kp_gpu_op_kernel names \"%s\", want \"%s\"", got, name);
    if (fake_count != 0) kp_test_fail(file, line, "kp_gpu_op_kernel launched %d kernels", fake_count);
    st = kp_gpu_op_run(&fake_target, op, s, params, 0);
    if (st != KP_OK) kp_test_fail(file, line, "kp_gpu_op_run -> %s: %s", kp_status_str(st), fake_error);
    if (fake_count != 1) kp_test_fail(file, line, "%s: %d launches, want 1", name, fake_count);
    return &fake_launches[0];
}

kp_buffer fake_buf[12];

kp_tensor fake_tensor(int b, kp_dtype dt, int ndim, const int64_t *shape) {
    kp_tensor t;
    memset(&t, 0, sizeof t);
    t.buffer = &fake_buf[b], t.dtype = dt, t.ndim = ndim;
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; i--) t.shape[i] = shape[i], t.strides[i] = stride, stride *= shape[i];
    return t;
}


kp_attention_prefill_params fake_prefill_params(kp_dtype dt, int d) {
    kp_attention_prefill_params p;
    memset(&p, 0, sizeof p);
    p.q = fake_tensor(0, dt, 3, (int64_t[]){300, 32, d});
    p.k = fake_tensor(1, dt, 3, (int64_t[]){300, 8, d});
    p.v = fake_tensor(2, dt, 3, (int64_t[]){300, 8, d});
    p.out = fake_tensor(3, dt, 3, (int64_t[]){300, 32, d});
    p.cu_seqlens_q = fake_tensor(4, KP_I32, 1, (int64_t[]){3});
    p.cu_seqlens_k = fake_tensor(5, KP_I32, 1, (int64_t[]){3});
    p.max_seqlen_q = p.max_seqlen_k = 200;
    p.softmax_scale = 0.125f, p.causal = 1, p.window_left = p.window_right = -1;
    return p;
}

