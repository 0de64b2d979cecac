/*
 * tests/test_gpu_plan.c — the op layer the GPU backends share (backends/gpu/kp_gpu.h),
 * on any machine: plans, argument lists and launch geometry through a recording fake
 * target, the fallback from a tuned tile a backend did not build, and the variant
 * lists the ahead-of-time backends (cuda, hip) embed.
 */
#include "kp_test.h"

#include "gpu_variants.h"
#include "ops/gpu_ops.h"
#include "attention/attention_gen2_layout.h"

#include <math.h>
#include <stdarg.h>

/* ---- a fake target: records launches; variant_check refuses one options string ---- */

#define FAKE_MAX 16 /* kp_moe_forward's chain: up to 12 launches */
static kp_gpu_launch fake_launches[FAKE_MAX];
static char fake_options[FAKE_MAX][256]; /* a launch's options live in the op's stack frame */
static _Alignas(8) unsigned char fake_kargs_copy[FAKE_MAX][KP_GPU_MAX_KARGS_BYTES]; /* so is its kargs block */
static const void *fake_kargs[FAKE_MAX];
static int fake_count;
static const char *fake_missing; /* options variant_check refuses (NULL: none) */
static kp_device_info fake_info;
static kp_gpu_profile fake_prof;
static int64_t fake_tuned_bn; /* > 0: the tuning table's attention block_n */
static int64_t fake_tuned_gen; /* > 0: the tuning table's grouped_gemm gen */
static char fake_error[512];

static kp_status fake_set_error(kp_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fake_error, sizeof fake_error, fmt, ap);
    va_end(ap);
    return st;
}
static kp_status fake_add_context(kp_status st, const char *fmt, ...) {
    (void)fmt;
    return st;
}
static char fake_logged[2048]; /* every log line, appended */
static void fake_log(const char *fmt, ...) {
    size_t n = strlen(fake_logged);
    va_list ap;
    va_start(ap, fmt);
    if (n + 2 < sizeof fake_logged) vsnprintf(fake_logged + n, sizeof fake_logged - n - 1, fmt, ap);
    va_end(ap);
    strncat(fake_logged, "\n", sizeof fake_logged - strlen(fake_logged) - 1);
}
static const char *fake_cache_dir(void) { return NULL; }
static int64_t fake_tuning(const kp_device_info *d, const char *kernel, const char *param, int64_t def) {
    (void)d;
    if (fake_tuned_bn > 0 && strncmp(kernel, "attention", 9) == 0 && strcmp(param, "block_n") == 0)
        return fake_tuned_bn;
    if (fake_tuned_gen > 0 && strcmp(kernel, "grouped_gemm") == 0 && strcmp(param, "gen") == 0) return fake_tuned_gen;
    return def;
}
static const kp_host_services fake_host = {
    .abi_version = KP_BACKEND_ABI_VERSION, .set_error = fake_set_error, .add_context = fake_add_context,
    .log = fake_log, .cache_dir = fake_cache_dir, .tuning_get = fake_tuning,
};

static void fake_profile(kp_stream *s, kp_gpu_profile *out) {
    (void)s;
    *out = fake_prof;
}
static kp_status fake_check(kp_stream *s, const char *source, const char *options) {
    (void)s;
    if (fake_missing && strcmp(options, fake_missing) == 0)
        return fake_set_error(KP_ERR_UNSUPPORTED, "fake: %s %s not built", source, options);
    return KP_OK;
}
static kp_status fake_launch(kp_stream *s, const kp_gpu_launch *l) {
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
static int fake_scratch[2];
static size_t fake_scratch_cap[2];
static int fake_scratch_reserves;
static int fake_scratch_get(kp_stream *s, const size_t bytes[2], void *out[2]) {
    (void)s;
    if (bytes[0] > fake_scratch_cap[0] || bytes[1] > fake_scratch_cap[1]) return 0;
    out[0] = &fake_scratch[0], out[1] = &fake_scratch[1];
    return 1;
}
static kp_status fake_scratch_reserve(kp_stream *s, const size_t bytes[2]) {
    (void)s;
    fake_scratch_reserves++;
    for (int i = 0; i < 2; i++)
        if (bytes[i] > fake_scratch_cap[i]) fake_scratch_cap[i] = bytes[i];
    return KP_OK;
}
static void fake_scratch_release(kp_stream *s, void *h[2]) { (void)s, (void)h; }

static const kp_gpu_target fake_target = {
    .name = "fake", .host = &fake_host, .profile = fake_profile, .variant_check = fake_check,
    .launch = fake_launch, .scratch_get = fake_scratch_get, .scratch_reserve = fake_scratch_reserve,
    .scratch_release = fake_scratch_release,
};

static void fake_reset(const char *backend) {
    CHECK(kp_gpu_build_profile(backend, &fake_info, &fake_prof) == 0);
    fake_prof.compute_units = 132;
    fake_count = 0, fake_missing = NULL, fake_tuned_bn = 0, fake_tuned_gen = 0, fake_error[0] = '\0';
    fake_logged[0] = '\0';
    fake_scratch_cap[0] = fake_scratch_cap[1] = 0, fake_scratch_reserves = 0;
}

static kp_buffer fake_buf[12];

static kp_tensor tensor(int b, kp_dtype dt, int ndim, const int64_t *shape) {
    kp_tensor t;
    memset(&t, 0, sizeof t);
    t.buffer = &fake_buf[b], t.dtype = dt, t.ndim = ndim;
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; i--) t.shape[i] = shape[i], t.strides[i] = stride, stride *= shape[i];
    return t;
}

/* ---- argument lists ---- */

KP_TEST(gpu_launch_args_in_order_and_overflow_reported) {
    kp_gpu_launch l;
    kp_gpu_launch_init(&l, "moe/moe_gate.cl", "-DKP_DTYPE_F32", "kp_moe_gate");
    kp_tensor t = tensor(0, KP_BF16, 1, (int64_t[]){16});
    t.offset = 6; /* bytes: element 3, which goes in the kargs, not the argument list */
    kp_moe_gate_kargs ka = {.logits_off = kp_gpu_elem_offset(&t), .n_exp = 16, .route_scale = 2.5f};
    kp_gpu_arg_tensor(&l, &t), kp_gpu_arg_buffer(&l, NULL), kp_gpu_arg_kargs(&l, &ka, sizeof ka);
    CHECK_INT_EQ(l.nargs, 3);
    CHECK(l.args[0].kind == KP_GPU_ARG_BUFFER && l.args[0].v.buffer == &fake_buf[0]);
    CHECK(l.args[1].kind == KP_GPU_ARG_BUFFER && l.args[1].v.buffer == NULL);
    CHECK(l.args[2].kind == KP_GPU_ARG_KARGS && l.args[2].v.kargs.data == &ka);
    CHECK_INT_EQ(l.args[2].v.kargs.size, sizeof(kp_moe_gate_kargs));
    CHECK_INT_EQ(ka.logits_off, 3);
    CHECK(l.groups[0] == 1 && l.groups[1] == 1 && l.groups[2] == 1 && l.local[0] == 1);
    CHECK(!l.overflow);
    /* a block larger than any API takes is refused, as is an argument too many */
    static char big[KP_GPU_MAX_KARGS_BYTES + 1];
    kp_gpu_arg_kargs(&l, big, sizeof big);
    CHECK(l.overflow);
    CHECK_INT_EQ(l.nargs, 3);
    kp_gpu_launch_init(&l, "moe/moe_gate.cl", "-DKP_DTYPE_F32", "kp_moe_gate");
    for (int i = 0; i < KP_GPU_MAX_ARGS + 1; i++) kp_gpu_arg_buffer(&l, NULL);
    CHECK(l.overflow);
    CHECK_INT_EQ(l.nargs, KP_GPU_MAX_ARGS);
    kp_gpu_ctx c = {.t = &fake_target, .host = &fake_host};
    fake_reset("cuda");
    CHECK_INT_EQ(kp_gpu_enqueue(&c, &l), KP_ERR_INTERNAL);
    CHECK_INT_EQ(fake_count, 0); /* nothing reached the target */
}

/* ---- plans through the fake target ---- */

static kp_attention_prefill_params prefill_params(kp_dtype dt, int d) {
    kp_attention_prefill_params p;
    memset(&p, 0, sizeof p);
    p.q = tensor(0, dt, 3, (int64_t[]){300, 32, d});
    p.k = tensor(1, dt, 3, (int64_t[]){300, 8, d});
    p.v = tensor(2, dt, 3, (int64_t[]){300, 8, d});
    p.out = tensor(3, dt, 3, (int64_t[]){300, 32, d});
    p.cu_seqlens_q = tensor(4, KP_I32, 1, (int64_t[]){3});
    p.cu_seqlens_k = tensor(5, KP_I32, 1, (int64_t[]){3});
    p.max_seqlen_q = p.max_seqlen_k = 200;
    p.softmax_scale = 0.125f, p.causal = 1, p.window_left = p.window_right = -1;
    return p;
}

KP_TEST(gpu_prefill_plan_geometry_and_arguments) {
    fake_reset("cuda");
    setenv("KPORT_GPU_KERNELS", "attention_prefill=gen1", 1); /* generation 2: gpu_prefill_gen2_plan */
    kp_attention_prefill_params p = prefill_params(KP_BF16, 128);
    kp_stream s = {0};
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 1), KP_OK);
    CHECK_INT_EQ(fake_count, 0); /* a dry run launches nothing */
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    const kp_gpu_launch *l = &fake_launches[0];
    CHECK_STR_EQ(l->source, KP_GPU_SRC_ATTN_PREFILL);
    CHECK_STR_EQ(l->kernel, "kp_attention_prefill");
    CHECK(strstr(l->options, "-DATTN_MMA") != NULL); /* bf16 on sm_80+: the tile-MMA path */
    /* rows = 200 queries x 4 heads per KV head over block_m 64; 8 KV heads; B + 1 slices */
    CHECK_INT_EQ((long long)l->groups[0], (200 * 4 + 63) / 64);
    CHECK_INT_EQ((long long)l->groups[1], 8);
    CHECK_INT_EQ((long long)l->groups[2], 3);
    CHECK_INT_EQ(l->local[0], 128);
    /* q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, block_table, seq_lens_k (absent), then the kargs */
    CHECK_INT_EQ(l->nargs, 10);
    CHECK(l->args[0].v.buffer == &fake_buf[0] && l->args[1].v.buffer == &fake_buf[1]);
    CHECK(l->args[3].kind == KP_GPU_ARG_BUFFER && l->args[3].v.buffer == &fake_buf[3]);
    CHECK(l->args[4].kind == KP_GPU_ARG_BUFFER && l->args[4].v.buffer == NULL); /* no lse */
    CHECK(l->args[7].kind == KP_GPU_ARG_BUFFER && l->args[7].v.buffer == NULL);
    CHECK(l->args[9].kind == KP_GPU_ARG_KARGS && l->args[9].v.kargs.size == sizeof(kp_attn_prefill_kargs));
    const kp_attn_prefill_kargs *ka = fake_kargs[0];
    CHECK_INT_EQ(ka->has_lse, 0);
    CHECK_INT_EQ(ka->group, 4);
    CHECK_INT_EQ(ka->nb, 2);
    CHECK_INT_EQ(ka->q_s0, 32 * 128);
    CHECK_INT_EQ(ka->k_s1, 128);
    CHECK(ka->causal == 1 && ka->wl == -1 && ka->wr == -1);
    CHECK(fabsf(ka->scale_log2 - 0.125f * 1.4426950f) < 1e-6f);
    unsetenv("KPORT_GPU_KERNELS");
}

KP_TEST(gpu_tuned_tile_not_built_falls_back_to_default) {
    fake_reset("cuda");
    setenv("KPORT_GPU_KERNELS", "attention_prefill=gen1", 1);
    kp_attention_prefill_params p = prefill_params(KP_F16, 64);
    kp_stream s = {0};
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 0), KP_OK);
    char dflt[256];
    snprintf(dflt, sizeof dflt, "%s", fake_launches[0].options);
    CHECK(strstr(dflt, "-DATTN_BN=32") != NULL);
    /* the tuning table asks for block_n 16, which this "backend" did not build */
    fake_count = 0, fake_tuned_bn = 16;
    char tuned[256];
    snprintf(tuned, sizeof tuned, "%s", dflt);
    char *bn = strstr(tuned, "-DATTN_BN=32");
    bn[10] = '1', bn[11] = '6';
    fake_missing = tuned;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    CHECK_STR_EQ(fake_launches[0].options, dflt);
    /* when the default is missing too, the op is unsupported, with the target's reason */
    fake_count = 0, fake_tuned_bn = 0, fake_missing = dflt;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 1), KP_ERR_UNSUPPORTED);
    CHECK(strstr(fake_error, "not built") != NULL);
    CHECK_INT_EQ(fake_count, 0);
    unsetenv("KPORT_GPU_KERNELS");
}

/* Generation 2 is the default on matrix-unit devices: FA2's tile from the device's
 * local memory, dynamic local memory in the launch; the cases it cannot run (f32,
 * unaligned rows) go to generation 1, and a device too small for any tile declines. */
KP_TEST(gpu_prefill_gen2_plan) {
    fake_reset("cuda");
    unsetenv("KPORT_GPU_KERNELS");
    kp_attention_prefill_params p = prefill_params(KP_BF16, 128);
    kp_stream s = {0};
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    const kp_gpu_launch *l = &fake_launches[0];
    CHECK_STR_EQ(l->source, KP_GPU_SRC_ATTN_PREFILL2);
    CHECK_STR_EQ(l->kernel, "kp_attention_prefill_gen2");
    CHECK_MSG(fake_prof.local_mem >= 160 * 1024, "cuda's build profile: %llu bytes", (unsigned long long)fake_prof.local_mem);
    /* 128 rows (8 groups of 32), 64 keys, 3 stages on a >= 160 KiB device */
    CHECK_STR_CONTAINS(l->options, "-DA2_DQK=128 -DA2_DV=128 -DA2_BM=128 -DA2_BN=64 -DA2_STAGES=3");
    CHECK_INT_EQ(l->local[0], 256);
    CHECK_INT_EQ(l->local_bytes, KP_ATTN2_LOCAL_BYTES(128, 64, 128, 128, 3));
    CHECK_INT_EQ(l->local_bytes, 145408);
    CHECK_INT_EQ((long long)l->groups[0], (200 * 4 + 127) / 128);
    CHECK_INT_EQ((long long)l->groups[1], 8);
    CHECK_INT_EQ((long long)l->groups[2], 3);
    CHECK_INT_EQ(l->nargs, 8);
    CHECK(l->args[7].kind == KP_GPU_ARG_KARGS && l->args[7].v.kargs.size == sizeof(kp_attn_prefill_kargs));
    /* every head-dim pair has a tile within the device's local memory, on both build profiles */
    static const int dims[][2] = {{64, 64}, {128, 128}, {192, 128}, {256, 256}};
    static const char *const backends[] = {"cuda", "hip"};
    for (int b = 0; b < 2; b++) {
        kp_device_info info;
        kp_gpu_profile prof;
        CHECK(kp_gpu_build_profile(backends[b], &info, &prof) == 0);
        for (int d = 0; d < 4; d++) {
            kp_gpu_attn2_tile t;
            /* d256 needs 67,584 bytes at 64 x 16 x 2: more than AMD's 64 KiB of LDS */
            int want = !(b == 1 && dims[d][0] == 256);
            CHECK_MSG(kp_gpu_attn2_tile_pick(kp_gpu_stub_host(), &prof, dims[d][0], dims[d][1], 0, &t) == want,
                      "%s d%d", backends[b], dims[d][0]);
            if (want)
                CHECK(t.local_bytes <= prof.local_mem && t.bn >= 16 && t.bn % 16 == 0 && (t.bm == 64 || t.bm == 128));
        }
    }
    /* 32 KiB of local memory: d256 has no tile (declined), d64 shrinks to one */
    kp_gpu_profile small = fake_prof;
    small.local_mem = 32 * 1024;
    kp_gpu_attn2_tile t;
    CHECK(!kp_gpu_attn2_tile_pick(kp_gpu_stub_host(), &small, 256, 256, 0, &t));
    CHECK(kp_gpu_attn2_tile_pick(kp_gpu_stub_host(), &small, 64, 64, 0, &t) && t.local_bytes <= 32 * 1024);
    /* a q offset of 4 elements (8 bytes): rows not 16-byte aligned, generation 1 runs */
    fake_count = 0;
    p.q.offset = 8;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    CHECK_STR_EQ(fake_launches[0].source, KP_GPU_SRC_ATTN_PREFILL);
    CHECK_STR_CONTAINS(fake_logged, "generation-1 kernels (a row of q, k or v is not 16-byte aligned");
    /* f32: generation 1 */
    fake_count = 0;
    p = prefill_params(KP_F32, 64);
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 0), KP_OK);
    CHECK_STR_EQ(fake_launches[0].source, KP_GPU_SRC_ATTN_PREFILL);
}

/* Generation-2 MLA decode, the default on matrix-unit devices: h_q 128 in two 64-row
 * tiles of 8 warps, 64 keys a tile and 2 stages in 227 KiB, generation 1's MLA combine;
 * an FP8 latent cache and KPORT_GPU_KERNELS=mla_decode=gen1 run generation 1. */
KP_TEST(gpu_mla_decode_gen2_plan) {
    fake_reset("cuda");
    unsetenv("KPORT_GPU_KERNELS");
    kp_mla_decode_params m;
    memset(&m, 0, sizeof m);
    m.q = tensor(0, KP_BF16, 4, (int64_t[]){3, 1, 128, 576});
    m.kv_cache = tensor(1, KP_BF16, 4, (int64_t[]){64, 64, 1, 576});
    m.block_table = tensor(2, KP_I32, 2, (int64_t[]){3, 64});
    m.seq_lens = tensor(3, KP_I32, 1, (int64_t[]){3});
    m.out = tensor(4, KP_BF16, 4, (int64_t[]){3, 1, 128, 512});
    m.softmax_scale = 0.135f, m.head_dim_v = 512, m.causal = 1, m.num_splits = 2;
    kp_stream s = {0};
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_MLA_DECODE, &s, &m, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 2);
    const kp_gpu_launch *l = &fake_launches[0];
    CHECK_STR_EQ(l->source, KP_GPU_SRC_MLA_DECODE2);
    CHECK_STR_EQ(l->kernel, "kp_mla_decode_gen2");
    CHECK_STR_CONTAINS(l->options, "-DM2_DQK=576 -DM2_DV=512 -DM2_WM=4 -DM2_BN=64 -DM2_STAGES=2");
    CHECK_INT_EQ(l->local[0], 256);
    CHECK_INT_EQ(l->local_bytes, KP_MLA2_LOCAL_BYTES(4, 64, 576, 2));
    CHECK(l->local_bytes <= fake_prof.local_mem);
    CHECK_INT_EQ((long long)l->groups[0], 2); /* 128 rows: two tiles of 64 */
    CHECK_INT_EQ((long long)l->groups[1], 1);
    CHECK_INT_EQ((long long)l->groups[2], 3 * 2);
    CHECK_STR_EQ(fake_launches[1].kernel, "kp_attention_combine");
    CHECK_STR_CONTAINS(fake_launches[1].options, "-DATTN_MLA");
    /* automatic splits: one work-group per SM is enough (132 here) */
    m.num_splits = 0;
    m.q = tensor(0, KP_BF16, 4, (int64_t[]){66, 1, 128, 576});
    m.out = tensor(4, KP_BF16, 4, (int64_t[]){66, 1, 128, 512});
    m.block_table = tensor(2, KP_I32, 2, (int64_t[]){66, 64});
    m.seq_lens = tensor(3, KP_I32, 1, (int64_t[]){66});
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_MLA_DECODE, &s, &m, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    CHECK_INT_EQ((long long)fake_launches[0].groups[2], 66);
    m.q = tensor(0, KP_BF16, 4, (int64_t[]){3, 1, 128, 576});
    m.out = tensor(4, KP_BF16, 4, (int64_t[]){3, 1, 128, 512});
    m.block_table = tensor(2, KP_I32, 2, (int64_t[]){3, 64});
    m.seq_lens = tensor(3, KP_I32, 1, (int64_t[]){3});
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_MLA_DECODE, &s, &m, 0), KP_OK);
    CHECK_INT_EQ((long long)fake_launches[0].groups[2], 3 * 22); /* 6 row tiles x 22 splits = 132 */
    /* 16 rows: one row group, 64 keys, 2 stages; d_v 256 */
    m.q = tensor(0, KP_F16, 4, (int64_t[]){3, 1, 16, 576});
    m.kv_cache.dtype = KP_F16, m.out = tensor(4, KP_F16, 4, (int64_t[]){3, 1, 16, 256}), m.head_dim_v = 256;
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_MLA_DECODE, &s, &m, 0), KP_OK);
    CHECK_STR_CONTAINS(fake_launches[0].options, "-DM2_DV=256 -DM2_WM=1 -DM2_BN=64 -DM2_STAGES=2");
    CHECK_INT_EQ(fake_launches[0].local[0], 64);
    /* an FP8 latent cache: generation 1 */
    kp_mla_decode_params f = m;
    f.kv_cache.dtype = KP_FP8_E4M3, f.kv_scale = tensor(5, KP_F32, 1, (int64_t[]){1});
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_MLA_DECODE, &s, &f, 0), KP_OK);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_attention_decode_paged");
    setenv("KPORT_GPU_KERNELS", "mla_decode=gen1", 1);
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_MLA_DECODE, &s, &m, 0), KP_OK);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_attention_decode_paged");
    unsetenv("KPORT_GPU_KERNELS");
    /* AMD's 64 KiB of LDS holds no MLA tile: generation 1 */
    kp_device_info info;
    kp_gpu_profile hip;
    kp_gpu_mla2_tile t;
    CHECK(kp_gpu_build_profile("hip", &info, &hip) == 0);
    CHECK_INT_EQ(kp_gpu_mla2_tile_pick(kp_gpu_stub_host(), &hip, 128, 576, 0, &t), 0);
}

KP_TEST(gpu_decode_splits_use_scratch_and_combine) {
    fake_reset("cuda");
    setenv("KPORT_GPU_KERNELS", "attention_decode=gen1", 1); /* generation 2: gpu_decode_gen2_plan */
    kp_attention_decode_params p;
    memset(&p, 0, sizeof p);
    p.q = tensor(0, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    p.k_cache = tensor(1, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    p.v_cache = tensor(2, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    p.block_table = tensor(3, KP_I32, 2, (int64_t[]){2, 32});
    p.seq_lens = tensor(4, KP_I32, 1, (int64_t[]){2});
    p.out = tensor(5, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    p.softmax_scale = 0.1f, p.num_splits = 4;
    kp_stream s = {0};
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 2);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_attention_decode_paged");
    CHECK_STR_EQ(fake_launches[1].kernel, "kp_attention_combine");
    CHECK_INT_EQ((long long)fake_launches[0].groups[2], 2 * 4); /* B x splits */
    CHECK(fake_launches[1].args[0].kind == KP_GPU_ARG_NATIVE && fake_launches[1].args[0].v.native == &fake_scratch[0]);
    CHECK_INT_EQ((long long)fake_launches[1].groups[0], 2 * 32); /* one group per output row */
    /* one split: no scratch, no combine, null partial pointers */
    fake_count = 0, p.num_splits = 1;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    CHECK(fake_launches[0].args[5].kind == KP_GPU_ARG_NATIVE && fake_launches[0].args[5].v.native == NULL);
    CHECK_INT_EQ(((const kp_attn_decode_kargs *)fake_kargs[0])->nsplit, 1);
    unsetenv("KPORT_GPU_KERNELS");
}

/* Generation-2 paged decode, the default on matrix-unit devices: the GQA rows of a KV
 * head packed into one row group of 16 (4 key groups), dynamic local memory, the same
 * split-KV scratch and generation 1's combine kernel; f32, FP8 caches, unaligned rows
 * go to generation 1; more rows take 2 or 4 row groups. */
KP_TEST(gpu_decode_gen2_plan) {
    fake_reset("cuda");
    unsetenv("KPORT_GPU_KERNELS");
    kp_attention_decode_params p;
    memset(&p, 0, sizeof p);
    p.q = tensor(0, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    p.k_cache = tensor(1, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    p.v_cache = tensor(2, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    p.block_table = tensor(3, KP_I32, 2, (int64_t[]){2, 32});
    p.seq_lens = tensor(4, KP_I32, 1, (int64_t[]){2});
    p.out = tensor(5, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    p.softmax_scale = 0.1f, p.num_splits = 4;
    kp_stream s = {0};
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &s, &p, 1), KP_OK);
    CHECK_INT_EQ(fake_count, 0);
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 2);
    const kp_gpu_launch *l = &fake_launches[0];
    CHECK_STR_EQ(l->source, KP_GPU_SRC_ATTN_DECODE2);
    CHECK_STR_EQ(l->kernel, "kp_attention_decode_gen2");
    CHECK_STR_CONTAINS(l->options, "-DD2_DQK=128 -DD2_DV=128 -DD2_WM=1 -DD2_WN=4 -DD2_BN=64 -DD2_STAGES=3");
    CHECK_INT_EQ(l->local[0], 128);
    CHECK_INT_EQ(l->local_bytes, KP_ATTN2_DECODE_LOCAL_BYTES(1, 4, 64, 128, 128, 3));
    CHECK_INT_EQ((long long)l->groups[0], 1); /* 4 q heads a KV head: one tile of 16 rows */
    CHECK_INT_EQ((long long)l->groups[1], 8);
    CHECK_INT_EQ((long long)l->groups[2], 2 * 4);
    CHECK_INT_EQ(l->nargs, 10);
    CHECK(l->args[5].kind == KP_GPU_ARG_NATIVE && l->args[5].v.native == &fake_scratch[0]);
    CHECK(l->args[9].kind == KP_GPU_ARG_KARGS && l->args[9].v.kargs.size == sizeof(kp_attn_decode_kargs));
    CHECK_STR_EQ(fake_launches[1].source, KP_GPU_SRC_ATTN_DECODE); /* generation 1's combine */
    CHECK_STR_EQ(fake_launches[1].kernel, "kp_attention_combine");
    CHECK_INT_EQ(fake_launches[1].local_bytes, 0);
    /* 8 q heads a KV head x s_q 5 = 40 rows: 4 row groups, one key group */
    p.q = tensor(0, KP_BF16, 4, (int64_t[]){2, 5, 64, 128});
    p.out = tensor(5, KP_BF16, 4, (int64_t[]){2, 5, 64, 128});
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &s, &p, 0), KP_OK);
    CHECK_STR_CONTAINS(fake_launches[0].options, "-DD2_WM=4 -DD2_WN=1");
    CHECK_INT_EQ((long long)fake_launches[0].groups[0], 1);
    /* every head-dim pair and row class has a tile on both build profiles (AMD's 64 KiB
     * of LDS: fewer key groups) */
    static const int dims[][2] = {{64, 64}, {128, 128}, {192, 128}, {256, 256}};
    static const char *const backends[] = {"cuda", "hip"};
    for (int b = 0; b < 2; b++) {
        kp_device_info info;
        kp_gpu_profile prof;
        CHECK(kp_gpu_build_profile(backends[b], &info, &prof) == 0);
        for (int d = 0; d < 4; d++)
            for (int rows = 1; rows <= 64; rows *= 4) {
                kp_gpu_attn2_dec_tile t;
                int want = 1;
                CHECK_MSG(kp_gpu_attn2_dec_tile_pick(kp_gpu_stub_host(), &prof, rows, dims[d][0], dims[d][1], 0,
                                                     &t) == want, "%s d%d rows %d", backends[b], dims[d][0], rows);
                if (want)
                    CHECK(t.local_bytes <= prof.local_mem && t.wm * t.wn <= 4 && (b == 1 || (t.wm * t.wn == 4 && 16 * t.wm >= (rows < 64 ? rows : 64))) &&
                          t.bn % (16 * t.wn) == 0);
            }
    }
    /* generation 1: an FP8 cache, f32, an unaligned q row */
    p.q = tensor(0, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    p.out = tensor(5, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    p.num_splits = 1;
    kp_attention_decode_params f = p;
    f.k_cache.dtype = f.v_cache.dtype = KP_FP8_E4M3;
    f.k_scale = tensor(6, KP_F32, 1, (int64_t[]){1});
    f.v_scale = tensor(7, KP_F32, 1, (int64_t[]){1});
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &s, &f, 0), KP_OK);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_attention_decode_paged");
    CHECK_STR_CONTAINS(fake_logged, "(FP8 KV caches run the generation-1 kernel)");
    f = p;
    f.q.dtype = f.k_cache.dtype = f.v_cache.dtype = f.out.dtype = KP_F32;
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &s, &f, 0), KP_OK);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_attention_decode_paged");
    f = p;
    f.q.offset = 8;
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &s, &f, 0), KP_OK);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_attention_decode_paged");
    /* KPORT_GPU_KERNELS=gen1 keeps the old kernel */
    setenv("KPORT_GPU_KERNELS", "attention_decode=gen1", 1);
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &s, &p, 0), KP_OK);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_attention_decode_paged");
    unsetenv("KPORT_GPU_KERNELS");
}

/* Address tensors (kp_device_memory): the kernel's buffer argument is the address
 * itself (a device pointer, KP_GPU_ARG_NATIVE), its element offset in the kargs 0, and
 * the alignment the planners see is the address's own. */
static kp_buffer fake_address_space = {.flags = KP_BUFFER_ADDRESS_SPACE, .size = SIZE_MAX};

static kp_tensor at_address(kp_tensor t, uint64_t addr) {
    t.buffer = &fake_address_space;
    t.offset = (size_t)addr;
    return t;
}

KP_TEST(gpu_address_tensors_pass_the_address) {
    fake_reset("cuda");
    kp_attention_decode_params p;
    memset(&p, 0, sizeof p);
    const uint64_t q_at = 0x7f0000001000ull, out_at = 0x7f0000102000ull;
    p.q = at_address(tensor(0, KP_BF16, 4, (int64_t[]){2, 1, 32, 128}), q_at);
    p.k_cache = tensor(1, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    p.k_cache.offset = 256; /* a buffer tensor beside them keeps its offset */
    p.v_cache = tensor(2, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    p.block_table = tensor(3, KP_I32, 2, (int64_t[]){2, 32});
    p.seq_lens = tensor(4, KP_I32, 1, (int64_t[]){2});
    p.out = at_address(tensor(5, KP_BF16, 4, (int64_t[]){2, 1, 32, 128}), out_at);
    p.softmax_scale = 0.1f, p.num_splits = 1;
    kp_stream s = {0};
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    const kp_gpu_launch *l = &fake_launches[0];
    CHECK(l->args[0].kind == KP_GPU_ARG_NATIVE && (uint64_t)(uintptr_t)l->args[0].v.native == q_at);
    CHECK(l->args[1].kind == KP_GPU_ARG_BUFFER && l->args[1].v.buffer == &fake_buf[1]);
    CHECK(l->args[3].kind == KP_GPU_ARG_NATIVE && (uint64_t)(uintptr_t)l->args[3].v.native == out_at);
    const kp_attn_decode_kargs *ka = fake_kargs[0];
    CHECK_INT_EQ(ka->q_off, 0);
    CHECK_INT_EQ(ka->o_off, 0);
    CHECK_INT_EQ(ka->k_off, 128);

    /* grouped GEMM through the MoE views: generation 2 on a 16-byte aligned address,
     * generation 1 on one that is only 2-byte aligned (the base, not an offset) */
    fake_reset("cuda");
    unsetenv("KPORT_GPU_KERNELS");
    kp_grouped_gemm_params g;
    memset(&g, 0, sizeof g);
    const uint64_t a_at = 0x7f0000200000ull, w_at = 0x7f0000400000ull, o_at = 0x7f0000800000ull;
    g.a = at_address(tensor(0, KP_BF16, 2, (int64_t[]){4096, 256}), a_at);
    g.w = at_address(tensor(1, KP_BF16, 3, (int64_t[]){4, 512, 256}), w_at);
    g.expert_offsets = tensor(2, KP_I32, 1, (int64_t[]){5});
    g.out = at_address(tensor(3, KP_BF16, 2, (int64_t[]){4096, 512}), o_at);
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &g, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    l = &fake_launches[0];
    CHECK_STR_EQ(l->kernel, "kp_grouped_gemm_gen2_tiled");
    CHECK(l->args[0].kind == KP_GPU_ARG_NATIVE && (uint64_t)(uintptr_t)l->args[0].v.native == a_at);
    CHECK(l->args[2].kind == KP_GPU_ARG_NATIVE && (uint64_t)(uintptr_t)l->args[2].v.native == w_at);
    CHECK(l->args[4].kind == KP_GPU_ARG_BUFFER && l->args[4].v.buffer == &fake_buf[2]);
    CHECK(l->args[5].kind == KP_GPU_ARG_NATIVE && (uint64_t)(uintptr_t)l->args[5].v.native == o_at);
    const kp_moe_gemm_kargs *kg = fake_kargs[0];
    CHECK_INT_EQ(kg->a_off, 0);
    CHECK_INT_EQ(kg->w_off, 0);
    g.a.offset = (size_t)(a_at + 2);
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &g, 0), KP_OK);
    CHECK_STR_EQ(fake_launches[0].source, KP_GPU_SRC_MOE_GEMM);
    CHECK(fake_launches[0].args[0].kind == KP_GPU_ARG_NATIVE &&
          (uint64_t)(uintptr_t)fake_launches[0].args[0].v.native == a_at + 2);
    CHECK_INT_EQ(((const kp_moe_gemm_kargs *)fake_kargs[0])->a_off, 0);
}

/* Paged prefill and windowed decode run generation-1 kernels whatever is asked (the
 * generation-2 ones read neither), with the cache geometry and window in their kargs. */
KP_TEST(gpu_paged_prefill_and_decode_window_plans) {
    fake_reset("cuda");
    setenv("KPORT_GPU_KERNELS", "gen2", 1);
    kp_attention_prefill_params p = prefill_params(KP_BF16, 128);
    p.k = tensor(1, KP_BF16, 4, (int64_t[]){40, 16, 8, 128});
    p.v = tensor(2, KP_BF16, 4, (int64_t[]){40, 16, 8, 128});
    memset(&p.cu_seqlens_k, 0, sizeof p.cu_seqlens_k);
    p.block_table = tensor(5, KP_I32, 2, (int64_t[]){2, 13});
    p.seq_lens_k = tensor(6, KP_I32, 1, (int64_t[]){2});
    kp_stream s = {0};
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_attention_prefill");
    CHECK_STR_CONTAINS(fake_logged, "attention_prefill on any sm_80+ GPU runs generation-1 kernels (generation-1 "
                                    "kernels read a paged K/V cache in prefill)");
    CHECK(fake_launches[0].args[7].v.buffer == &fake_buf[5] && fake_launches[0].args[8].v.buffer == &fake_buf[6]);
    const kp_attn_prefill_kargs *ka = fake_kargs[0];
    CHECK(ka->paged == 1 && ka->max_blocks == 13 && ka->num_blocks == 40 && ka->block_size == 16);
    CHECK_INT_EQ(ka->k_sb, 16 * 8 * 128); /* between blocks */
    CHECK_INT_EQ(ka->k_s0, 8 * 128);      /* between rows of a block */
    CHECK_INT_EQ(ka->k_s1, 128);          /* between heads */
    CHECK_INT_EQ(ka->bt_s0, 13);
    CHECK_INT_EQ(ka->total_k, 0);

    kp_attention_decode_params dp;
    memset(&dp, 0, sizeof dp);
    dp.q = tensor(0, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    dp.k_cache = tensor(1, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    dp.v_cache = tensor(2, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    dp.block_table = tensor(3, KP_I32, 2, (int64_t[]){2, 32});
    dp.seq_lens = tensor(4, KP_I32, 1, (int64_t[]){2});
    dp.out = tensor(5, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    dp.softmax_scale = 0.1f, dp.num_splits = 1, dp.window_left = 100;
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &s, &dp, 0), KP_OK);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_attention_decode_paged");
    CHECK_STR_CONTAINS(fake_logged, "generation-1 kernels run decode with a sliding window");
    CHECK_INT_EQ(((const kp_attn_decode_kargs *)fake_kargs[0])->wl, 100);
    dp.window_left = 0, fake_count = 0; /* a zeroed field: unbounded */
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &s, &dp, 0), KP_OK);
    CHECK_INT_EQ(((const kp_attn_decode_kargs *)fake_kargs[0])->wl, -1);
    unsetenv("KPORT_GPU_KERNELS");
}

/* The graph-capture rule (kport.h, kp_stream_reserve): after a reservation no op
 * allocates, frees or waits; on a wrapped stream an op never grows the scratch. */
KP_TEST(gpu_scratch_reserved_before_capture_never_grows) {
    fake_reset("cuda");
    kp_attention_decode_params p;
    memset(&p, 0, sizeof p);
    p.q = tensor(0, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    p.k_cache = tensor(1, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    p.v_cache = tensor(2, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    p.block_table = tensor(3, KP_I32, 2, (int64_t[]){2, 32});
    p.seq_lens = tensor(4, KP_I32, 1, (int64_t[]){2});
    p.out = tensor(5, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    p.softmax_scale = 0.1f, p.num_splits = 4;
    const size_t need = 4 * (2 * 32) * 128 * sizeof(float); /* splits x rows x dv partials */
    char want[64];
    snprintf(want, sizeof want, "kp_stream_reserve(s, %zu)", need);

    /* a wrapped stream with nothing reserved: refused before any launch or allocation */
    kp_stream wrapped = {.flags = KP_STREAM_WRAPPED};
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &wrapped, &p, 0), KP_ERR_OUT_OF_MEMORY);
    CHECK_INT_EQ(fake_count, 0);
    CHECK_INT_EQ(fake_scratch_reserves, 0);
    CHECK(strstr(fake_error, want) != NULL);
    /* a dry run ("supported?") does not depend on the reservation */
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &wrapped, &p, 1), KP_OK);

    /* reserve once, exactly what the message named; then ops allocate nothing */
    CHECK_INT_EQ(kp_gpu_stream_reserve(&fake_target, &wrapped, need), KP_OK);
    CHECK_INT_EQ(fake_scratch_reserves, 1);
    CHECK(fake_scratch_cap[0] == need && fake_scratch_cap[1] == need / KP_GPU_SCRATCH_LSE_RATIO);
    for (int i = 0; i < 3; i++) {
        fake_count = 0;
        CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &wrapped, &p, 0), KP_OK);
        CHECK_INT_EQ(fake_count, 2);
    }
    CHECK_INT_EQ(fake_scratch_reserves, 1);
    /* reserving what is already held allocates nothing either */
    CHECK_INT_EQ(kp_gpu_stream_reserve(&fake_target, &wrapped, need / 2), KP_OK);
    CHECK_INT_EQ(kp_gpu_stream_reserve(&fake_target, &wrapped, 0), KP_OK);
    CHECK_INT_EQ(fake_scratch_reserves, 1);
    /* more splits than reserved: refused, nothing launched, nothing grown */
    fake_count = 0, p.num_splits = 8;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &wrapped, &p, 0), KP_ERR_OUT_OF_MEMORY);
    CHECK_INT_EQ(fake_count, 0);
    CHECK_INT_EQ(fake_scratch_reserves, 1);

    /* a stream kport created grows on demand, once, then reuses */
    fake_scratch_cap[0] = fake_scratch_cap[1] = 0;
    kp_stream own = {0};
    for (int i = 0; i < 3; i++) CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_DECODE, &own, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_scratch_reserves, 2);
    CHECK(fake_scratch_cap[0] == 2 * need);

    /* the lse region decides when partials are narrower than the ratio */
    CHECK(kp_gpu_scratch_need((size_t[]){100, 10}) == 10 * KP_GPU_SCRATCH_LSE_RATIO);
    CHECK(kp_gpu_scratch_need((size_t[]){100, SIZE_MAX / 2}) == 0); /* overflow: refused, not wrapped */
}

KP_TEST(gpu_grouped_gemm_decode_runs_the_small_kernel) {
    fake_reset("cuda");
    setenv("KPORT_GPU_KERNELS", "gen1", 1);
    kp_grouped_gemm_params p;
    memset(&p, 0, sizeof p);
    p.a = tensor(0, KP_BF16, 2, (int64_t[]){8, 256});
    p.w = tensor(1, KP_BF16, 3, (int64_t[]){4, 512, 256});
    p.expert_offsets = tensor(2, KP_I32, 1, (int64_t[]){5});
    p.out = tensor(3, KP_BF16, 2, (int64_t[]){8, 512});
    kp_stream s = {0};
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_grouped_gemm_small"); /* 8 rows <= small_m */
    CHECK(strstr(fake_launches[0].options, "-DKP_GG_MMA") != NULL);
    /* many rows: the tiled kernel only */
    p.a = tensor(0, KP_BF16, 2, (int64_t[]){4096, 256});
    p.out = tensor(3, KP_BF16, 2, (int64_t[]){4096, 512});
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_grouped_gemm_tiled");
    CHECK_INT_EQ((long long)fake_launches[0].groups[0], 512 / 64);
    CHECK_INT_EQ((long long)fake_launches[0].groups[1], 4096 / 64 + 4);
    unsetenv("KPORT_GPU_KERNELS");
}

/* Generation 2 (the default on a device with matrix units): 128 x 128 tiles of 8 warps
 * in dynamic shared memory for prefill-sized experts, the weight-streaming kernel for
 * decode, split-K when the decode grid cannot fill the device. */
KP_TEST(gpu_grouped_gemm_gen2_plan) {
    fake_reset("cuda"); /* sm_90's profile: 227 KiB, 132 SMs */
    unsetenv("KPORT_GPU_KERNELS");
    kp_grouped_gemm_params p;
    memset(&p, 0, sizeof p);
    p.a = tensor(0, KP_BF16, 2, (int64_t[]){4096, 256});
    p.w = tensor(1, KP_BF16, 3, (int64_t[]){4, 512, 256});
    p.expert_offsets = tensor(2, KP_I32, 1, (int64_t[]){5});
    p.out = tensor(3, KP_BF16, 2, (int64_t[]){4096, 512});
    kp_stream s = {0};
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    const kp_gpu_launch *l = &fake_launches[0];
    CHECK_STR_EQ(l->source, KP_GPU_SRC_MOE_GEMM2);
    CHECK_STR_EQ(l->kernel, "kp_grouped_gemm_gen2_tiled");
    CHECK_STR_CONTAINS(l->options, "-DG2_BM=128 -DG2_BN=128 -DG2_BK=32 -DG2_WM=2 -DG2_WN=4 -DG2_STAGES=4 -DG2_MIN_BLOCKS=2");
    CHECK_INT_EQ(l->local[0], 256);
    CHECK_INT_EQ(l->local_bytes, KP_MOE_GEMM2_LOCAL_BYTES(128, 128, 32, 4));
    CHECK(l->local_bytes > 48 * 1024 && 2 * l->local_bytes <= fake_prof.local_mem); /* 2 blocks per SM */
    CHECK_INT_EQ((long long)l->groups[0], 512 / 128);
    CHECK_INT_EQ((long long)l->groups[1], 4096 / 128 + 4);
    /* decode: 8 rows over 4 experts; K 256 is too short to split */
    p.a = tensor(0, KP_BF16, 2, (int64_t[]){8, 256});
    p.out = tensor(3, KP_BF16, 2, (int64_t[]){8, 512});
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_grouped_gemm_gen2_rows");
    CHECK_INT_EQ((long long)fake_launches[0].groups[0], 512 / 32); /* 8 warps x 4 weight rows */
    CHECK_INT_EQ((long long)fake_launches[0].groups[2], 1);
    CHECK_INT_EQ(((const kp_moe_gemm_kargs *)fake_kargs[0])->ksplit, 1);
    /* K 4096: 64 groups for 132 SMs, so K is cut into slices of 1024 and reduced */
    p.a = tensor(0, KP_BF16, 2, (int64_t[]){8, 4096});
    p.w = tensor(1, KP_BF16, 3, (int64_t[]){4, 512, 4096});
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 2);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_grouped_gemm_gen2_rows");
    CHECK_STR_EQ(fake_launches[1].kernel, "kp_grouped_gemm_gen2_reduce");
    const kp_moe_gemm_kargs *ka = fake_kargs[0];
    CHECK_INT_EQ(ka->ksplit, 4);
    CHECK_INT_EQ(ka->kslice, 1024);
    CHECK_INT_EQ((long long)fake_launches[0].groups[2], 4);
    CHECK(fake_launches[0].args[10].kind == KP_GPU_ARG_NATIVE && fake_launches[0].args[10].v.native == &fake_scratch[0]);
    /* a row that is not 16-byte aligned: generation 1 takes it, and says so */
    p.a.offset = 2; /* one bf16 element */
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_OK);
    CHECK_STR_EQ(fake_launches[0].source, KP_GPU_SRC_MOE_GEMM);
    CHECK_STR_CONTAINS(fake_logged, "generation-1 kernels (a row of a or w is not 16-byte aligned");
}

/* W8A8 (e4m3 a and w): generation 2's moe_gemm_fp8_gen2.cl by default, its tile from the
 * table (sm_90's 227 KiB: 128 x 128, 4 stages; decode-sized experts 64 rows), the
 * activation scales as the 12th argument with their strides in the kargs (both layouts),
 * out's dtype the kernel's; generation 1 forced declines with the reason. */
KP_TEST(gpu_grouped_gemm_w8a8_plan) {
    fake_reset("cuda");
    unsetenv("KPORT_GPU_KERNELS");
    kp_grouped_gemm_params p;
    memset(&p, 0, sizeof p);
    p.a = tensor(0, KP_FP8_E4M3, 2, (int64_t[]){4096, 256});
    p.w = tensor(1, KP_FP8_E4M3, 3, (int64_t[]){4, 512, 256});
    p.expert_offsets = tensor(2, KP_I32, 1, (int64_t[]){5});
    p.out = tensor(3, KP_BF16, 2, (int64_t[]){4096, 512});
    p.w_scale = tensor(4, KP_F32, 3, (int64_t[]){4, 4, 2});
    p.a_scale = tensor(5, KP_F32, 2, (int64_t[]){4096, 2});
    kp_stream s = {0};
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    const kp_gpu_launch *l = &fake_launches[0];
    CHECK_STR_EQ(l->source, KP_GPU_SRC_MOE_GEMM8);
    CHECK_STR_EQ(l->kernel, "kp_grouped_gemm_fp8_gen2_tiled");
    CHECK_STR_CONTAINS(l->options, "-DKP_DTYPE_BF16 -DKP_GG_A_FP8 -DKP_GG_W_FP8 -DG8_BM=128 -DG8_BN=128 -DG8_WM=2 "
                                   "-DG8_WN=4 -DG8_STAGES=4");
    CHECK_INT_EQ(l->local[0], 256);
    CHECK_INT_EQ(l->local_bytes, KP_MOE_GEMM8_LOCAL_BYTES(128, 128, 4));
    CHECK(l->local_bytes <= fake_prof.local_mem);
    CHECK_INT_EQ((long long)l->groups[0], 512 / 128);
    CHECK_INT_EQ((long long)l->groups[1], 4096 / 128 + 4);
    CHECK(l->args[11].kind == KP_GPU_ARG_BUFFER && l->args[11].v.buffer == &fake_buf[5]);
    const kp_moe_gemm_kargs *ka = fake_kargs[0];
    CHECK_INT_EQ(ka->as_t, 2);
    CHECK_INT_EQ(ka->as_g, 1);
    CHECK_INT_EQ(ka->small_max, 0); /* one kernel for every row count */
    /* column-major scales [K/128, M_pad], f32 out, decode-sized experts (8 rows over 4) */
    p.a = tensor(0, KP_FP8_E4M3, 2, (int64_t[]){8, 256});
    p.out = tensor(3, KP_F32, 2, (int64_t[]){8, 512});
    p.a_scale = tensor(5, KP_F32, 2, (int64_t[]){2, 12});
    p.a_scale_layout = KP_FP8_SCALE_COL_MAJOR;
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    CHECK_STR_CONTAINS(fake_launches[0].options, "-DKP_DTYPE_F32 -DKP_GG_A_FP8 -DKP_GG_W_FP8 -DG8_BM=64 ");
    ka = fake_kargs[0];
    CHECK_INT_EQ(ka->as_t, 1);
    CHECK_INT_EQ(ka->as_g, 12);
    /* generation 1 asked for: declined, with the reason, nothing launched */
    setenv("KPORT_GPU_KERNELS", "grouped_gemm=gen1", 1);
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_ERR_UNSUPPORTED);
    CHECK_INT_EQ(fake_count, 0);
    unsetenv("KPORT_GPU_KERNELS");
}

/* The W8A8 tile table per build profile, and the tuned row tiles: 16/32 rows take one
 * row of 8 groups; a value the kernel cannot take keeps the table's. */
static int64_t g8_tuned_m;
static int64_t g8_tuning(const kp_device_info *d, const char *kernel, const char *param, int64_t def) {
    (void)d, (void)kernel;
    return strcmp(param, "g8_tile_m") == 0 ? g8_tuned_m : def;
}

KP_TEST(gpu_grouped_gemm_w8a8_tiles) {
    kp_device_info info;
    kp_gpu_profile p;
    kp_gpu_gemm8_tile t;
    CHECK(kp_gpu_build_profile("cuda", &info, &p) == 0);
    kp_host_services h = *kp_gpu_stub_host();
    h.tuning_get = g8_tuning;
    kp_gpu_gemm8_tile_pick(&h, &p, 1024, 0, &t);
    CHECK(t.bm == 128 && t.bn == 128 && t.wm == 2 && t.wn == 4 && t.stages == 4);
    CHECK(KP_MOE_GEMM8_LOCAL_BYTES(128, 128, 4) <= p.local_mem);
    kp_gpu_gemm8_tile_pick(&h, &p, 4, 0, &t);
    CHECK(t.bm == 64 && t.bn == 128 && t.wm == 2 && t.wn == 4);
    g8_tuned_m = 32;
    kp_gpu_gemm8_tile_pick(&h, &p, 4, 1, &t);
    CHECK_MSG(t.bm == 32 && t.wm == 1 && t.wn == 8 && t.bn == 128, "tuned 32 rows: %d x %d, %d x %d groups", t.bm,
              t.bn, t.wm, t.wn);
    g8_tuned_m = 40;
    kp_gpu_gemm8_tile_pick(&h, &p, 4, 1, &t);
    CHECK_INT_EQ(t.bm, 64);
    CHECK(kp_gpu_build_profile("hip", &info, &p) == 0); /* 64 KiB: the small tile */
    kp_gpu_gemm8_tile_pick(&h, &p, 1024, 0, &t);
    CHECK(t.bm == 64 && t.bn == 64 && t.wm * t.wn * 32 <= (int)p.max_group);
    CHECK(KP_MOE_GEMM8_LOCAL_BYTES(64, 64, 2) <= p.local_mem);
}

/* ---- the variant lists ---- */

#define VARIANTS_MAX 256

typedef struct variant_stats {
    int n, attention, moe, bad;
    int decode, decode_fp8, kv_store, quant_fp8; /* the FP8 data paths' share */
    char seen[VARIANTS_MAX][300];
} variant_stats;

static void count_variant(void *user, const char *source, const char *options, const char *kernels) {
    variant_stats *v = user;
    char key[300];
    snprintf(key, sizeof key, "%s|%s", source, options);
    for (int i = 0; i < v->n && i < VARIANTS_MAX; i++)
        if (strcmp(v->seen[i], key) == 0) v->bad++; /* listed twice */
    if (v->n < VARIANTS_MAX) snprintf(v->seen[v->n], sizeof v->seen[0], "%s", key);
    v->n++;
    if (strcmp(source, KP_GPU_SRC_ATTN_DECODE) == 0) {
        if (strstr(options, "-DATTN_KV_FP8")) v->decode_fp8++;
        else v->decode++;
    }
    if (strcmp(source, KP_GPU_SRC_KV_STORE) == 0) v->kv_store++;
    if (strcmp(source, KP_GPU_SRC_QUANT_FP8) == 0) v->quant_fp8++;
    if (strncmp(source, "attention/", 10) == 0) v->attention++;
    else if (strncmp(source, "moe/", 4) == 0) v->moe++;
    else v->bad++;
    if (!kernels[0] || !strstr(options, "-D")) v->bad++;
}

KP_TEST(gpu_variant_lists_are_complete_and_distinct) {
    static const char *const backends[] = {"cuda", "hip"};
    for (int b = 0; b < 2; b++) {
        kp_device_info info;
        kp_gpu_profile p;
        CHECK(kp_gpu_build_profile(backends[b], &info, &p) == 0);
        static variant_stats v;
        memset(&v, 0, sizeof v);
        kp_gpu_variants_enumerate(kp_gpu_stub_host(), &p, count_variant, &v);
        CHECK_MSG(v.bad == 0, "%s: %d malformed or repeated variants", backends[b], v.bad);
        /* 3 dtypes x 4 head-dim pairs of prefill, decode (two row classes where the
         * tile differs), MLA x 2; gate 3, align 2, combine 5, grouped GEMM 9 of generation 1
         * and 2 dtypes x FP8 x f32 activations x (where the tile differs: CUDA's
         * 128- and 64-row tiles) 2 of generation 2, and W8A8's 3 output dtypes x (CUDA) the
         * same 2 row tiles */
        CHECK_MSG(v.attention >= 3 * (4 + 4 + 2), "%s: %d attention variants", backends[b], v.attention);
        /* + quantize_fp8: 3 dtypes */
        CHECK_INT_EQ(v.moe, 3 + 2 + 5 + 9 + 2 * 2 * 2 * (b == 0 ? 2 : 1) + 3 * (b == 0 ? 2 : 1) + 3);
        CHECK_INT_EQ(v.quant_fp8, 3);
        /* FP8 data paths: kv_cache_store 3 dtypes x (cache in the dtype, e4m3); every
         * decode and MLA variant has its FP8-cache twin */
        CHECK_INT_EQ(v.kv_store, 6);
        CHECK_INT_EQ(v.decode_fp8, v.decode);
        CHECK(v.n < VARIANTS_MAX);
    }
    kp_device_info info;
    kp_gpu_profile p;
    CHECK(kp_gpu_build_profile("metal", &info, &p) == -1);
}

KP_TEST(gpu_attention_tiles_fit_each_profile) {
    static const char *const backends[] = {"cuda", "hip"};
    static const int dims[][3] = {{64, 64, 0}, {128, 128, 0}, {256, 256, 0}, {192, 128, 0}, {576, 512, 1}, {576, 256, 1}};
    static const kp_dtype dts[] = {KP_F32, KP_F16, KP_BF16};
    for (int b = 0; b < 2; b++) {
        kp_device_info info;
        kp_gpu_profile p;
        CHECK(kp_gpu_build_profile(backends[b], &info, &p) == 0);
        for (int d = 0; d < 6; d++)
            for (int t = 0; t < 3; t++) {
                const char *kind = dims[d][2] ? "mla_decode" : "attention_decode";
                kp_gpu_attn_cfg c;
                CHECK_INT_EQ(kp_gpu_attn_config(kp_gpu_stub_host(), &p, kind, dts[t], dims[d][0], dims[d][1],
                                                dims[d][2], 1, 0, &c), KP_OK);
                CHECK_MSG(c.local_bytes + 512 <= p.static_local_mem, "%s %s %d/%d: %zu bytes of local memory",
                          backends[b], kind, dims[d][0], dims[d][1], c.local_bytes);
                /* the MMA path where the profile has matrix units, never for f32 or MLA */
                CHECK_INT_EQ(c.mma, p.mma && dts[t] != KP_F32 && !dims[d][2]);
            }
    }
}

/* ---- kernel generations (KPORT_GPU_KERNELS, gpu_kernel_gen.c) ---- */

enum { GEN_PREFILL = 0, GEN_DECODE = 1, GEN_MLA = 2, GEN_GATE = 3, GEN_ALIGN = 4, GEN_GEMM = 5, GEN_COMBINE = 6 };

KP_TEST(gpu_kernel_gen_setting_parsed) {
    int g[KP_GPU_GEN_KERNELS];
    char why[256];
    CHECK_OK(kp_gpu_kernel_gen_parse(NULL, g, why, sizeof why));
    for (int i = 0; i < KP_GPU_GEN_KERNELS; i++) CHECK_INT_EQ(g[i], 0); /* auto */
    CHECK_OK(kp_gpu_kernel_gen_parse("gen1", g, why, sizeof why));
    for (int i = 0; i < KP_GPU_GEN_KERNELS; i++) CHECK_INT_EQ(g[i], 1);
    CHECK_OK(kp_gpu_kernel_gen_parse("grouped_gemm=gen1,attention_prefill=gen2", g, why, sizeof why));
    CHECK(g[GEN_GEMM] == 1 && g[GEN_PREFILL] == 2 && g[GEN_DECODE] == 0 && g[GEN_COMBINE] == 0);
    /* a bare generation sets every kernel the list does not name, wherever it stands */
    CHECK_OK(kp_gpu_kernel_gen_parse("moe_gate=gen1,gen2", g, why, sizeof why));
    CHECK(g[GEN_GATE] == 1 && g[GEN_GEMM] == 2 && g[GEN_MLA] == 2);
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"gen3", "'gen3' is not gen1, gen2 or auto"},
        {"attention=gen2", "'attention' is not a kernel name"},
        {"grouped_gemm=fast", "'fast' is not gen1, gen2 or auto"},
        {"gen1,,", "'' is not gen1, gen2 or auto"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_INT_EQ(kp_gpu_kernel_gen_parse(bad[i].text, g, why, sizeof why), KP_ERR_INVALID_ARGUMENT);
        CHECK_STR_CONTAINS(why, bad[i].why);
    }
}

KP_TEST(gpu_kernel_gen_env_tuning_default_and_log) {
    fake_reset("cuda");
    kp_gpu_ctx c = {.t = &fake_target, .host = &fake_host, .prof = fake_prof};
    int gen = 0;
    unsetenv("KPORT_GPU_KERNELS");
    /* default: generation 2 where there are matrix units, unless the case has none */
    CHECK_OK(kp_gpu_kernel_gen(&c, "grouped_gemm", NULL, &gen));
    CHECK_INT_EQ(gen, 2);
    CHECK_STR_CONTAINS(fake_logged, "grouped_gemm on any sm_80+ GPU runs generation-2 kernels (default: the "
                                    "device has matrix units)");
    CHECK_OK(kp_gpu_kernel_gen(&c, "grouped_gemm", "f32 has no generation-2 kernel", &gen));
    CHECK_INT_EQ(gen, 1);
    CHECK_STR_CONTAINS(fake_logged, "generation-1 kernels (f32 has no generation-2 kernel)");
    c.prof.mma = 0;
    CHECK_OK(kp_gpu_kernel_gen(&c, "attention_prefill", NULL, &gen));
    CHECK_INT_EQ(gen, 1);
    c.prof.mma = 1;
    /* the tuning table's "grouped_gemm;gen" beats the default, the environment beats both */
    fake_tuned_gen = 1;
    CHECK_OK(kp_gpu_kernel_gen(&c, "grouped_gemm", NULL, &gen));
    CHECK_INT_EQ(gen, 1);
    setenv("KPORT_GPU_KERNELS", "attention_decode=gen1,grouped_gemm=gen2", 1);
    CHECK_OK(kp_gpu_kernel_gen(&c, "grouped_gemm", NULL, &gen));
    CHECK_INT_EQ(gen, 2);
    CHECK_OK(kp_gpu_kernel_gen(&c, "attention_decode", NULL, &gen));
    CHECK_INT_EQ(gen, 1);
    CHECK_STR_CONTAINS(fake_logged, "(KPORT_GPU_KERNELS=attention_decode=gen1,grouped_gemm=gen2)");
    /* a malformed setting fails the op, dry runs included, and names the text */
    setenv("KPORT_GPU_KERNELS", "grouped_gemm=gen9", 1);
    kp_grouped_gemm_params p;
    memset(&p, 0, sizeof p);
    p.a = tensor(0, KP_BF16, 2, (int64_t[]){8, 256});
    p.w = tensor(1, KP_BF16, 3, (int64_t[]){4, 512, 256});
    p.expert_offsets = tensor(2, KP_I32, 1, (int64_t[]){5});
    p.out = tensor(3, KP_BF16, 2, (int64_t[]){8, 512});
    kp_stream s = {0};
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 1), KP_ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(fake_error, "KPORT_GPU_KERNELS='grouped_gemm=gen9': 'gen9' is not gen1, gen2 or auto");
    CHECK_INT_EQ(fake_count, 0);
    unsetenv("KPORT_GPU_KERNELS");
}

/* ---- index-width limits (gpu_limits.c), checked before any plan ---- */

/* Calls past the 32-bit widths of the GPU kernels: KP_ERR_UNSUPPORTED naming the limit,
 * dry and wet alike, and nothing reaches the target. The shapes only claim their sizes
 * (nothing is launched). The gate at 2^32 tokens used to die in PoCL (SIGILL). */
static void check_gpu_refuses(kp_op op, const void *params, const char *why) {
    kp_stream s = {0};
    for (int dry = 1; dry >= 0; dry--) {
        fake_reset("cuda");
        CHECK_INT_EQ(kp_gpu_op_run(&fake_target, op, &s, params, dry), KP_ERR_UNSUPPORTED);
        CHECK_STR_CONTAINS(fake_error, why);
        CHECK_STR_CONTAINS(fake_error, "fake");
        CHECK_INT_EQ(fake_count, 0);
    }
}

KP_TEST(gpu_index_width_limits_refuse_before_planning) {
    const int64_t big = (int64_t)1 << 31;
    kp_moe_gate_params gate = {
        .logits = tensor(0, KP_F32, 2, (int64_t[]){(int64_t)1 << 32, 16}),
        .topk_ids = tensor(1, KP_I32, 2, (int64_t[]){(int64_t)1 << 32, 2}),
        .topk_weights = tensor(2, KP_F32, 2, (int64_t[]){(int64_t)1 << 32, 2}),
        .routing = {2, 1, 1, KP_MOE_SCORING_SOFTMAX, 1, 1.0f},
    };
    check_gpu_refuses(KP_OP_MOE_GATE, &gate, "logits.shape[0] is 4294967296; the fake backend indexes with 32-bit");
    gate.logits.shape[0] = gate.topk_ids.shape[0] = gate.topk_weights.shape[0] = big - 1;
    kp_stream s = {0};
    fake_reset("cuda");
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_MOE_GATE, &s, &gate, 1), KP_OK); /* 2^31 - 1: within */

    kp_moe_combine_params comb = {
        .expert_out = tensor(0, KP_BF16, 2, (int64_t[]){8, big}),
        .token_pos = tensor(1, KP_I32, 2, (int64_t[]){4, 2}),
        .topk_weights = tensor(2, KP_F32, 2, (int64_t[]){4, 2}),
        .out = tensor(3, KP_BF16, 2, (int64_t[]){4, big}),
    };
    check_gpu_refuses(KP_OP_MOE_COMBINE, &comb, "expert_out.shape[1] is 2147483648");

    /* decode: each extent fits, the query rows B * s_q * h_q do not */
    kp_attention_decode_params dec = {
        .q = tensor(0, KP_F16, 4, (int64_t[]){1 << 16, 1 << 10, 32, 128}),
        .k_cache = tensor(1, KP_F16, 4, (int64_t[]){4, 16, 8, 128}),
        .v_cache = tensor(2, KP_F16, 4, (int64_t[]){4, 16, 8, 128}),
        .block_table = tensor(3, KP_I32, 2, (int64_t[]){1 << 16, 4}),
        .seq_lens = tensor(4, KP_I32, 1, (int64_t[]){1 << 16}),
        .out = tensor(5, KP_F16, 4, (int64_t[]){1 << 16, 1 << 10, 32, 128}),
        .softmax_scale = 0.125f,
    };
    check_gpu_refuses(KP_OP_ATTENTION_DECODE, &dec, "B * s_q * h_q (query rows) is 65536 * 1024 * 32");
    kp_mla_decode_params mla = {
        .q = tensor(0, KP_BF16, 4, (int64_t[]){1 << 20, 2, 1024, 576}),
        .kv_cache = tensor(1, KP_BF16, 4, (int64_t[]){4, 64, 1, 576}),
        .block_table = tensor(3, KP_I32, 2, (int64_t[]){1 << 20, 4}),
        .seq_lens = tensor(4, KP_I32, 1, (int64_t[]){1 << 20}),
        .out = tensor(5, KP_BF16, 4, (int64_t[]){1 << 20, 2, 1024, 512}),
        .softmax_scale = 0.135f, .head_dim_v = 512,
    };
    check_gpu_refuses(KP_OP_MLA_DECODE, &mla, "B * s_q * h_q (query rows) is 1048576 * 2 * 1024");

    /* moe_forward: T * topk rows */
    const int64_t t = (int64_t)1 << 28;
    kp_moe_forward_params fwd = {
        .x = tensor(0, KP_BF16, 2, (int64_t[]){t, 64}),
        .router_logits = tensor(1, KP_F32, 2, (int64_t[]){t, 16}),
        .w13 = tensor(2, KP_BF16, 3, (int64_t[]){16, 64, 64}),
        .w2 = tensor(3, KP_BF16, 3, (int64_t[]){16, 64, 32}),
        .out = tensor(4, KP_BF16, 2, (int64_t[]){t, 64}),
        .workspace = &fake_buf[5],
        .routing = {8, 1, 1, KP_MOE_SCORING_SOFTMAX, 1, 1.0f},
    };
    check_gpu_refuses(KP_OP_MOE_FORWARD, &fwd, "T * topk (rows) is 2147483648");
}

/* ---- the plan cache (gpu_plan_cache.c) ---- */

/* The same fake target behind a host that reports a tuning generation, so plans are
 * cached; fake_target's host has none, so it always plans afresh. */
static uint64_t fake_generation = 1;
static uint64_t fake_tuning_generation(void) { return fake_generation; }
static const kp_host_services cached_host = {
    .abi_version = KP_BACKEND_ABI_VERSION, .set_error = fake_set_error, .add_context = fake_add_context,
    .log = fake_log, .cache_dir = fake_cache_dir, .tuning_get = fake_tuning,
    .tuning_generation = fake_tuning_generation,
};
static const kp_gpu_target cached_target = {
    .name = "fake", .host = &cached_host, .profile = fake_profile, .variant_check = fake_check,
    .launch = fake_launch, .scratch_get = fake_scratch_get, .scratch_reserve = fake_scratch_reserve,
    .scratch_release = fake_scratch_release,
};

typedef struct launches {
    int n;
    kp_gpu_launch l[FAKE_MAX];
    char options[FAKE_MAX][256];
    unsigned char kargs[FAKE_MAX][KP_GPU_MAX_KARGS_BYTES];
} launches;

static kp_status run_recorded(const kp_gpu_target *t, kp_op op, const void *params, launches *out) {
    kp_stream s = {0};
    fake_count = 0;
    kp_status st = kp_gpu_op_run(t, op, &s, params, 0);
    memset(out, 0, sizeof *out);
    out->n = fake_count < FAKE_MAX ? fake_count : FAKE_MAX;
    for (int i = 0; i < out->n; i++) {
        out->l[i] = fake_launches[i];
        memcpy(out->options[i], fake_options[i], sizeof out->options[i]); /* both [256], NUL-terminated */
        if (fake_kargs[i]) memcpy(out->kargs[i], fake_kargs[i], KP_GPU_MAX_KARGS_BYTES);
    }
    return st;
}

/* Every field a target reads: variant, kernel, geometry, local bytes, arguments, kargs. */
static int launches_equal(const launches *a, const launches *b, char *why, size_t n) {
    if (a->n != b->n) return snprintf(why, n, "%d launches vs %d", a->n, b->n), 0;
    for (int i = 0; i < a->n; i++) {
        const kp_gpu_launch *x = &a->l[i], *y = &b->l[i];
        if (strcmp(x->source, y->source) || strcmp(x->kernel, y->kernel) || strcmp(a->options[i], b->options[i]))
            return snprintf(why, n, "launch %d: %s %s [%s] vs %s %s [%s]", i, x->source, x->kernel, a->options[i],
                            y->source, y->kernel, b->options[i]), 0;
        for (int d = 0; d < 3; d++)
            if (x->groups[d] != y->groups[d] || x->local[d] != y->local[d])
                return snprintf(why, n, "launch %d: geometry differs in dimension %d", i, d), 0;
        if (x->local_bytes != y->local_bytes || x->nargs != y->nargs)
            return snprintf(why, n, "launch %d: %u local bytes / %d args vs %u / %d", i, x->local_bytes, x->nargs,
                            y->local_bytes, y->nargs), 0;
        for (int k = 0; k < x->nargs; k++) {
            if (x->args[k].kind != y->args[k].kind) return snprintf(why, n, "launch %d arg %d: kind", i, k), 0;
            if (x->args[k].kind == KP_GPU_ARG_KARGS
                    ? x->args[k].v.kargs.size != y->args[k].v.kargs.size ||
                          memcmp(a->kargs[i], b->kargs[i], x->args[k].v.kargs.size) != 0
                    : x->args[k].v.native != y->args[k].v.native)
                return snprintf(why, n, "launch %d arg %d differs", i, k), 0;
        }
    }
    return 1;
}

/* Fresh planning, then the cached target twice (a miss that fills the cache, a hit):
 * all three launch lists identical, the second cached run a hit. */
static void check_cached_same(kp_op op, const void *params, const char *what) {
    static launches fresh, cold, warm;
    char why[512];
    kp_status st = run_recorded(&fake_target, op, params, &fresh);
    CHECK_MSG(st == KP_OK && fresh.n > 0, "%s: status %d, %d launches: %s", what, (int)st, fresh.n, fake_error);
    CHECK_INT_EQ(run_recorded(&cached_target, op, params, &cold), KP_OK);
    uint64_t hits = kp_gpu_plan_cache_stats().hits;
    CHECK_INT_EQ(run_recorded(&cached_target, op, params, &warm), KP_OK);
    if (kp_gpu_plan_cache_stats().hits <= hits) CHECK_MSG(0, "%s: the second run did not hit the plan cache", what);
    if (!launches_equal(&fresh, &cold, why, sizeof why)) CHECK_MSG(0, "%s: first cached run: %s", what, why);
    if (!launches_equal(&fresh, &warm, why, sizeof why)) CHECK_MSG(0, "%s: cache hit: %s", what, why);
}

static kp_attention_decode_params decode_params(kp_dtype dt, int s_q, int h_q, int d, int max_blocks) {
    kp_attention_decode_params p;
    memset(&p, 0, sizeof p);
    p.q = tensor(0, dt, 4, (int64_t[]){2, s_q, h_q, d});
    p.k_cache = tensor(1, dt, 4, (int64_t[]){512, 16, 8, d});
    p.v_cache = tensor(2, dt, 4, (int64_t[]){512, 16, 8, d});
    p.block_table = tensor(3, KP_I32, 2, (int64_t[]){2, max_blocks});
    p.seq_lens = tensor(4, KP_I32, 1, (int64_t[]){2});
    p.out = tensor(5, dt, 4, (int64_t[]){2, s_q, h_q, d});
    p.softmax_scale = 0.1f, p.causal = s_q > 1;
    return p;
}

/* Shapes that differ only in what a plan depends on (dtype, head dim, rows per KV
 * head, the split count a longer context gives, causal, the expert load) must never
 * share a cached plan, and a cached plan must launch exactly what fresh planning does. */
KP_TEST(gpu_plan_cache_same_launches_as_fresh_planning) {
    fake_reset("cuda");
    kp_gpu_plan_cache_clear();
    unsetenv("KPORT_GPU_KERNELS");
    const kp_dtype dts[] = {KP_BF16, KP_F16, KP_F32};
    for (int i = 0; i < 3; i++)
        for (int d = 64; d <= 128; d += 64)
            for (int s_q = 1; s_q <= 2; s_q++)
                for (int mb = 2; mb <= 512; mb *= 16) { /* 32 or 8192 keys: 1 split or many */
                    kp_attention_decode_params p = decode_params(dts[i], s_q, 8 * s_q * (d / 64), d, mb);
                    check_cached_same(KP_OP_ATTENTION_DECODE, &p, "attention_decode");
                }
    kp_mla_decode_params m;
    memset(&m, 0, sizeof m);
    for (int h = 16; h <= 128; h *= 8) {
        m.q = tensor(0, KP_BF16, 4, (int64_t[]){2, 1, h, 576});
        m.kv_cache = tensor(1, KP_BF16, 4, (int64_t[]){64, 64, 1, 576});
        m.block_table = tensor(2, KP_I32, 2, (int64_t[]){2, 32});
        m.seq_lens = tensor(3, KP_I32, 1, (int64_t[]){2});
        m.out = tensor(4, KP_BF16, 4, (int64_t[]){2, 1, h, 512});
        m.softmax_scale = 0.135f, m.head_dim_v = 512;
        check_cached_same(KP_OP_MLA_DECODE, &m, "mla_decode");
    }
    for (int gen = 1; gen <= 2; gen++) {
        if (gen == 1) setenv("KPORT_GPU_KERNELS", "attention_prefill=gen1", 1);
        else unsetenv("KPORT_GPU_KERNELS");
        for (int i = 0; i < 3; i++)
            for (int d = 64; d <= 192; d += 64) /* 64, 128, 192/128 */
                for (int causal = 0; causal <= 1; causal++) {
                    kp_attention_prefill_params p = prefill_params(dts[i], d);
                    if (d == 192) {
                        p.v = tensor(2, dts[i], 3, (int64_t[]){300, 8, 128});
                        p.out = tensor(3, dts[i], 3, (int64_t[]){300, 32, 128});
                    }
                    p.causal = causal;
                    check_cached_same(KP_OP_ATTENTION_PREFILL, &p, gen == 1 ? "prefill gen1" : "prefill gen2");
                }
    }
    unsetenv("KPORT_GPU_KERNELS");
    for (int i = 0; i < 2; i++)
        for (int64_t rows = 8; rows <= 8192; rows *= 32) {
            kp_grouped_gemm_params g;
            memset(&g, 0, sizeof g);
            g.a = tensor(0, dts[i], 2, (int64_t[]){rows, 256});
            g.w = tensor(1, dts[i], 3, (int64_t[]){4, 512, 256});
            g.expert_offsets = tensor(2, KP_I32, 1, (int64_t[]){5});
            g.out = tensor(3, dts[i], 2, (int64_t[]){rows, 512});
            check_cached_same(KP_OP_GROUPED_GEMM, &g, "grouped_gemm");
        }
}

/* A new tuning generation (the table reread) retires every cached plan; so does a
 * different device profile. */
KP_TEST(gpu_plan_cache_invalidated_by_tuning_change) {
    fake_reset("cuda");
    kp_gpu_plan_cache_clear();
    setenv("KPORT_GPU_KERNELS", "attention_prefill=gen1", 1);
    kp_attention_prefill_params p = prefill_params(KP_F16, 64);
    static launches a, b;
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_ATTENTION_PREFILL, &p, &a), KP_OK);
    CHECK_STR_CONTAINS(a.options[0], "-DATTN_BN=32");
    fake_tuned_bn = 16; /* the table changes; until its generation moves the cached plan stands */
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_ATTENTION_PREFILL, &p, &b), KP_OK);
    CHECK_STR_CONTAINS(b.options[0], "-DATTN_BN=32");
    fake_generation++;
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_ATTENTION_PREFILL, &p, &b), KP_OK);
    CHECK_STR_CONTAINS(b.options[0], "-DATTN_BN=16");
    check_cached_same(KP_OP_ATTENTION_PREFILL, &p, "after the tuning change");
    fake_tuned_bn = 0, fake_generation++;
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_ATTENTION_PREFILL, &p, &b), KP_OK);
    CHECK_STR_EQ(b.options[0], a.options[0]);
    unsetenv("KPORT_GPU_KERNELS");
    /* another profile behind the same device handle (less shared memory) plans afresh */
    kp_grouped_gemm_params g;
    memset(&g, 0, sizeof g);
    g.a = tensor(0, KP_BF16, 2, (int64_t[]){4096, 256});
    g.w = tensor(1, KP_BF16, 3, (int64_t[]){4, 512, 256});
    g.expert_offsets = tensor(2, KP_I32, 1, (int64_t[]){5});
    g.out = tensor(3, KP_BF16, 2, (int64_t[]){4096, 512});
    check_cached_same(KP_OP_GROUPED_GEMM, &g, "227 KiB");
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_GROUPED_GEMM, &g, &a), KP_OK);
    fake_prof.local_mem = 64 * 1024;
    check_cached_same(KP_OP_GROUPED_GEMM, &g, "64 KiB");
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_GROUPED_GEMM, &g, &b), KP_OK);
    CHECK(a.l[0].local_bytes > 64 * 1024 && b.l[0].local_bytes <= 64 * 1024);
}

/* More distinct plans than slots: the cache holds at most KP_GPU_PLAN_SLOTS, and what
 * it evicted is planned again, correctly. */
KP_TEST(gpu_plan_cache_stays_bounded) {
    fake_reset("cuda");
    kp_gpu_plan_cache_clear();
    unsetenv("KPORT_GPU_KERNELS");
    kp_grouped_gemm_params g;
    memset(&g, 0, sizeof g);
    g.w = tensor(1, KP_BF16, 3, (int64_t[]){4, 512, 256});
    g.expert_offsets = tensor(2, KP_I32, 1, (int64_t[]){5});
    const int plans = 3 * KP_GPU_PLAN_SLOTS;
    kp_stream s = {0};
    for (int64_t i = 1; i <= plans; i++) { /* 4 experts: i rows each on average, one key per i */
        g.a = tensor(0, KP_BF16, 2, (int64_t[]){4 * i, 256});
        g.out = tensor(3, KP_BF16, 2, (int64_t[]){4 * i, 512});
        fake_count = 0;
        CHECK_INT_EQ(kp_gpu_op_run(&cached_target, KP_OP_GROUPED_GEMM, &s, &g, 0), KP_OK);
    }
    kp_gpu_plan_stats st = kp_gpu_plan_cache_stats();
    CHECK(st.misses >= (uint64_t)plans);
    CHECK(st.slots_used > 0 && st.slots_used <= KP_GPU_PLAN_SLOTS);
    for (int64_t i = 1; i <= plans; i += 97) {
        g.a = tensor(0, KP_BF16, 2, (int64_t[]){4 * i, 256});
        g.out = tensor(3, KP_BF16, 2, (int64_t[]){4 * i, 512});
        check_cached_same(KP_OP_GROUPED_GEMM, &g, "after eviction");
    }
}

/* The gate, align and combine plans (cached per dtype, per align variant) launch what
 * fresh planning does, standalone, across dtypes, expert counts (both align variants)
 * and token counts (one align chunk or several). */
KP_TEST(gpu_plan_cache_moe_gate_align_combine_same_as_fresh) {
    fake_reset("cuda");
    kp_gpu_plan_cache_clear();
    unsetenv("KPORT_GPU_KERNELS");
    const kp_dtype dts[] = {KP_BF16, KP_F16, KP_F32};
    for (int i = 0; i < 3; i++)
        for (int64_t t = 1; t <= 4096; t *= 64) {
            kp_moe_gate_params g;
            memset(&g, 0, sizeof g);
            g.logits = tensor(0, dts[i], 2, (int64_t[]){t, 256});
            if (i == 1) g.bias = tensor(1, KP_F32, 1, (int64_t[]){256});
            g.topk_ids = tensor(2, KP_I32, 2, (int64_t[]){t, 8});
            g.topk_weights = tensor(3, KP_F32, 2, (int64_t[]){t, 8});
            g.routing = (kp_moe_routing){8, 8, 4, KP_MOE_SCORING_SIGMOID, 1, 2.5f};
            check_cached_same(KP_OP_MOE_GATE, &g, "moe_gate");
            kp_moe_combine_params cb;
            memset(&cb, 0, sizeof cb);
            cb.expert_out = tensor(0, dts[i], 2, (int64_t[]){t * 8, 512});
            cb.token_pos = tensor(1, KP_I32, 2, (int64_t[]){t, 8});
            cb.topk_weights = tensor(2, KP_F32, 2, (int64_t[]){t, 8});
            cb.out = tensor(3, dts[i], 2, (int64_t[]){t, 512});
            check_cached_same(KP_OP_MOE_COMBINE, &cb, "moe_combine");
            for (int e = 64; e <= 1024; e *= 16) {
                kp_moe_align_params a;
                memset(&a, 0, sizeof a);
                a.topk_ids = tensor(0, KP_I32, 2, (int64_t[]){t, 8});
                a.sorted_ids = tensor(1, KP_I32, 1, (int64_t[]){t * 8 + (int64_t)e * 15});
                a.expert_offsets = tensor(2, KP_I32, 1, (int64_t[]){e + 1});
                a.token_pos = tensor(3, KP_I32, 2, (int64_t[]){t, 8});
                a.num_experts = e, a.block_size = 16;
                check_cached_same(KP_OP_MOE_ALIGN, &a, e > 512 ? "moe_align (4096 experts)" : "moe_align");
            }
        }
}

/* ---- kp_moe_forward's chain plan (gpu_moe_chain.c) ---- */

/* A routed layer: T tokens, E experts, top-k, hidden and inter sizes; x/out dtype dt,
 * expert weights wdt (e4m3: with their f32 block scales); inter_s > 0 adds a shared
 * expert; bias: a gate bias. Buffers 0..11 of fake_buf, the workspace at offset 512. */
static kp_moe_forward_params forward_params(int64_t t, int64_t e, int k, int64_t hidden, int64_t inter, kp_dtype dt,
                                            kp_dtype wdt, int64_t inter_s, int bias) {
    kp_moe_forward_params p;
    memset(&p, 0, sizeof p);
    p.x = tensor(0, dt, 2, (int64_t[]){t, hidden});
    p.router_logits = tensor(1, KP_F32, 2, (int64_t[]){t, e});
    p.w13 = tensor(2, wdt, 3, (int64_t[]){e, 2 * inter, hidden});
    p.w2 = tensor(3, wdt, 3, (int64_t[]){e, hidden, inter});
    if (wdt == KP_FP8_E4M3) {
        p.w13_scale = tensor(8, KP_F32, 3, (int64_t[]){e, (2 * inter + 127) / 128, hidden / 128});
        p.w2_scale = tensor(9, KP_F32, 3, (int64_t[]){e, (hidden + 127) / 128, inter / 128});
    }
    if (inter_s > 0) {
        p.shared_w13 = tensor(6, dt, 2, (int64_t[]){2 * inter_s, hidden});
        p.shared_w2 = tensor(7, dt, 2, (int64_t[]){hidden, inter_s});
    }
    if (bias) p.bias = tensor(10, KP_F32, 1, (int64_t[]){e});
    p.out = tensor(4, dt, 2, (int64_t[]){t, hidden});
    p.workspace = &fake_buf[5], p.workspace_offset = 512;
    p.routing = (kp_moe_routing){k, e % 4 == 0 ? 4 : 1, e % 4 == 0 ? 2 : 1, KP_MOE_SCORING_SIGMOID, 1, 2.5f};
    return p;
}

/* The chain from the cache launches exactly what planning each launch afresh does
 * (variant, kernel, geometry, local bytes, arguments, kargs byte by byte), across T
 * (1 token to several align chunks), E, top-k, dtypes, e4m3 weights, a shared expert
 * (split-K on its decode GEMMs), a bias, both GEMM generations and an unaligned x
 * (generation 2 cannot take it); a hit then fills only this call's buffers, offsets and
 * routing scalars. */
KP_TEST(gpu_plan_cache_moe_forward_chain_same_as_fresh) {
    fake_reset("cuda");
    kp_gpu_plan_cache_clear();
    unsetenv("KPORT_GPU_KERNELS");
    const int64_t ts[] = {1, 16, 200, 1100};
    const int64_t es[] = {8, 64, 256};
    const int ks[] = {1, 2, 8};
    const kp_dtype dts[] = {KP_BF16, KP_F16, KP_F32};
    int cases = 0;
    for (int gen = 1; gen <= 2; gen++) {
        if (gen == 1) setenv("KPORT_GPU_KERNELS", "grouped_gemm=gen1", 1);
        else unsetenv("KPORT_GPU_KERNELS");
        for (int ti = 0; ti < 4; ti++)
            for (int ei = 0; ei < 3; ei++)
                for (int ki = 0; ki < 3; ki++) {
                    if (ks[ki] > es[ei]) continue;
                    const int v = ti + ei + ki; /* vary the rest across the grid */
                    const kp_dtype dt = dts[v % 3];
                    const kp_dtype wdt = dt != KP_F32 && v % 2 ? KP_FP8_E4M3 : dt;
                    const int64_t hidden = v % 4 == 3 ? 1024 : 256;
                    kp_moe_forward_params p =
                        forward_params(ts[ti], es[ei], ks[ki], hidden, 128, dt, wdt, v % 3 == 1 ? 256 : 0, v % 2);
                    char what[160];
                    snprintf(what, sizeof what, "moe_forward gen%d T=%lld E=%lld k=%d %s/%s hidden %lld%s", gen,
                             (long long)ts[ti], (long long)es[ei], ks[ki], kp_dtype_name(dt), kp_dtype_name(wdt),
                             (long long)hidden, p.shared_w13.buffer ? " shared" : "");
                    check_cached_same(KP_OP_MOE_FORWARD, &p, what);
                    cases++;
                    /* the same shape with other routing scalars and offsets: a hit, same as fresh */
                    p.routing.route_scale = 1.0f, p.routing.renormalize = 0;
                    p.out.offset = (size_t)hidden * kp_dtype_size(dt) * 2, p.workspace_offset = 1024;
                    check_cached_same(KP_OP_MOE_FORWARD, &p, what);
                    /* x one element in: generation 2 cannot take it, whatever the cache holds */
                    p.x.offset = kp_dtype_size(dt);
                    check_cached_same(KP_OP_MOE_FORWARD, &p, what);
                }
    }
    unsetenv("KPORT_GPU_KERNELS");
    CHECK(cases >= 40);
    kp_gpu_plan_stats st = kp_gpu_plan_cache_stats();
    CHECK(st.big_slots_used > 0 && st.big_slots_used <= KP_GPU_PLAN_BIG_SLOTS);
    /* split-K ran somewhere in the grid (the shared expert's decode GEMMs at hidden 1024) */
    static launches l;
    kp_moe_forward_params p = forward_params(1, 8, 2, 1024, 128, KP_BF16, KP_BF16, 256, 0);
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &l), KP_OK);
    int reduce = 0;
    for (int i = 0; i < l.n; i++) reduce += strcmp(l.l[i].kernel, "kp_grouped_gemm_gen2_reduce") == 0;
    CHECK(reduce > 0);
}

/* W8A8 (activation_dtype e4m3): the cached chain launches exactly what fresh planning
 * does, its three quantize launches (x, f32 h, f32 h_s) and W8A8 GEMMs included, across
 * T, UE8M0, no / x-dtype / FP8 shared expert; a hit refills this call's buffers and
 * offsets. W8A16 of the same shape is another plan (activation_dtype is in the
 * signature). */
KP_TEST(gpu_plan_cache_moe_forward_chain_w8a8_same_as_fresh) {
    fake_reset("cuda");
    kp_gpu_plan_cache_clear();
    unsetenv("KPORT_GPU_KERNELS");
    const int64_t ts[] = {1, 16, 200};
    for (int ti = 0; ti < 3; ti++)
        for (int shared = 0; shared < 3; shared++) { /* none, bf16, FP8 */
            kp_moe_forward_params p =
                forward_params(ts[ti], 64, 8, 256, 256, KP_BF16, KP_FP8_E4M3, shared ? 384 : 0, ti % 2);
            if (shared == 2) {
                p.shared_w13.dtype = p.shared_w2.dtype = KP_FP8_E4M3;
                p.shared_w13_scale = tensor(11, KP_F32, 2, (int64_t[]){6, 2});
                p.shared_w2_scale = tensor(11, KP_F32, 2, (int64_t[]){2, 3});
                p.shared_w2_scale.offset = 4096;
            }
            p.activation_dtype = KP_FP8_E4M3, p.activation_scale_ue8m0 = ti == 1;
            char what[128];
            snprintf(what, sizeof what, "moe_forward W8A8 T=%lld%s", (long long)ts[ti],
                     shared == 2 ? " FP8 shared" : shared ? " shared" : "");
            check_cached_same(KP_OP_MOE_FORWARD, &p, what);
            static launches l;
            CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &l), KP_OK);
            int quant = 0, gemm8 = 0;
            for (int i = 0; i < l.n; i++) {
                quant += strcmp(l.l[i].kernel, "kp_quantize_fp8") == 0;
                gemm8 += strcmp(l.l[i].kernel, "kp_grouped_gemm_fp8_gen2_tiled") == 0;
            }
            CHECK_MSG(quant == (shared == 2 ? 3 : 2) && gemm8 == (shared == 2 ? 4 : 2),
                      "%s: %d quantize and %d W8A8 GEMM launches", what, quant, gemm8);
            p.out.offset = 256 * 2 * 2, p.workspace_offset = 1024; /* a hit with other offsets */
            check_cached_same(KP_OP_MOE_FORWARD, &p, what);
            p.activation_dtype = 0, p.activation_scale_ue8m0 = 0; /* W8A16: its own plan */
            check_cached_same(KP_OP_MOE_FORWARD, &p, what);
        }
}

/* The source of a chain's first GEMM launch ("" when none). */
static const char *first_gemm_source(const launches *l) {
    for (int i = 0; i < l->n; i++)
        if (strstr(l->l[i].source, "moe_gemm")) return l->l[i].source;
    return "";
}

/* A new tuning generation retires a cached chain; a changed KPORT_GPU_KERNELS replans
 * at once (it is part of the chain's signature). */
KP_TEST(gpu_plan_cache_moe_forward_chain_invalidated) {
    fake_reset("cuda");
    kp_gpu_plan_cache_clear();
    unsetenv("KPORT_GPU_KERNELS");
    kp_moe_forward_params p = forward_params(16, 64, 8, 256, 128, KP_BF16, KP_FP8_E4M3, 0, 1);
    static launches a, b;
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &a), KP_OK);
    CHECK(a.n >= 4);
    CHECK_STR_EQ(first_gemm_source(&a), KP_GPU_SRC_MOE_GEMM2);
    fake_tuned_gen = 1; /* the table now says generation 1; until its generation moves the chain stands */
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &b), KP_OK);
    CHECK_STR_EQ(first_gemm_source(&b), KP_GPU_SRC_MOE_GEMM2);
    fake_generation++;
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &b), KP_OK);
    CHECK_STR_EQ(first_gemm_source(&b), KP_GPU_SRC_MOE_GEMM);
    check_cached_same(KP_OP_MOE_FORWARD, &p, "moe_forward after the tuning change");
    fake_tuned_gen = 0, fake_generation++;
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &b), KP_OK);
    CHECK_STR_EQ(first_gemm_source(&b), KP_GPU_SRC_MOE_GEMM2);
    /* the environment switch, with no tuning change */
    setenv("KPORT_GPU_KERNELS", "grouped_gemm=gen1", 1);
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &b), KP_OK);
    CHECK_STR_EQ(first_gemm_source(&b), KP_GPU_SRC_MOE_GEMM);
    check_cached_same(KP_OP_MOE_FORWARD, &p, "moe_forward under KPORT_GPU_KERNELS=grouped_gemm=gen1");
    /* a malformed setting fails every call (never served from the cache) */
    setenv("KPORT_GPU_KERNELS", "grouped_gemm=gen9", 1);
    kp_stream s = {0};
    for (int i = 0; i < 2; i++) {
        fake_error[0] = '\0';
        CHECK_INT_EQ(kp_gpu_op_run(&cached_target, KP_OP_MOE_FORWARD, &s, &p, 0), KP_ERR_INVALID_ARGUMENT);
        CHECK_STR_CONTAINS(fake_error, "gen9");
    }
    unsetenv("KPORT_GPU_KERNELS");
    CHECK_INT_EQ(run_recorded(&cached_target, KP_OP_MOE_FORWARD, &p, &b), KP_OK);
    if (!launches_equal(&a, &b, fake_error, sizeof fake_error)) CHECK_MSG(0, "back to the first plan: %s", fake_error);
}
