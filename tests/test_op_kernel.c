/*
 * tests/test_op_kernel.c — kp_op_kernel (issue 14): which kernel an op would run.
 *  - the GPU op layer through the recording fake target (gpu_fake_target.c): the name a
 *    dry run gives is the kernel the same call then launches, for every generation
 *    choice (KPORT_GPU_KERNELS) and row count (grouped_gemm's decode and tiled kernels);
 *  - the cpu backend: "cpu:<level>" at every SIMD level this machine has (KPORT_CPU_SIMD);
 *  - the OpenCL backend (PoCL): the public call, generation 1 by default and 2 forced;
 *  - errors, each with nothing written to name.
 */
#include "kp_test.h"
#include "op_params.h"

#include "cpu_internal.h"
#include "gpu_fake_target.h"

#include <stdlib.h>
#include <string.h>

/* ---- the GPU op layer (fake target) ---- */

/* The name kp_gpu_op_kernel gives for (op, p) is want, and a real run of the same call
 * launches each kernel it names ("kp_" + the part after "<tier>:"). */
static void gpu_named(kp_op op, const void *p, const char *want) {
    kp_stream s = {0};
    char name[KP_KERNEL_NAME_MAX];
    fake_count = 0;
    CHECK_OK(kp_gpu_op_kernel(&fake_target, op, &s, p, name, sizeof name));
    CHECK_STR_EQ(name, want);
    CHECK_INT_EQ(fake_count, 0); /* naming launches nothing */
    CHECK_OK(kp_gpu_op_run(&fake_target, op, &s, p, 0));
    for (char *part = strtok(name, "+"); part; part = strtok(NULL, "+")) {
        const char *colon = strchr(part, ':');
        CHECK(colon != NULL);
        char kernel[96];
        snprintf(kernel, sizeof kernel, "kp_%s", colon + 1);
        int found = 0;
        for (int i = 0; i < fake_count && i < FAKE_MAX; i++) found |= strcmp(fake_launches[i].kernel, kernel) == 0;
        CHECK_MSG(found, "%s: named %s but the call launched %d kernels, none of them %s", kp_op_name(op), want,
                  fake_count, kernel);
    }
}

static kp_grouped_gemm_params fake_gemm(int64_t m, int64_t k) {
    kp_grouped_gemm_params p;
    memset(&p, 0, sizeof p);
    p.a = fake_tensor(0, KP_BF16, 2, (int64_t[]){m, k});
    p.w = fake_tensor(1, KP_BF16, 3, (int64_t[]){4, 512, k});
    p.expert_offsets = fake_tensor(2, KP_I32, 1, (int64_t[]){5});
    p.out = fake_tensor(3, KP_BF16, 2, (int64_t[]){m, 512});
    return p;
}

KP_TEST(op_kernel_gpu_names_the_kernel_the_call_launches) {
    fake_reset("cuda"); /* sm_90's profile: matrix units, generation 2 by default */
    unsetenv("KPORT_GPU_KERNELS");
    kp_grouped_gemm_params g = fake_gemm(8, 256); /* 8 rows over 4 experts: decode */
    gpu_named(KP_OP_GROUPED_GEMM, &g, "gen2:grouped_gemm_gen2_rows");
    g = fake_gemm(8, 4096); /* split-K: its reduce kernel is not named */
    gpu_named(KP_OP_GROUPED_GEMM, &g, "gen2:grouped_gemm_gen2_rows");
    g = fake_gemm(4096, 256);
    gpu_named(KP_OP_GROUPED_GEMM, &g, "gen2:grouped_gemm_gen2_tiled");
    g = fake_gemm(40, 256); /* above small_m (16) rows, below 16 per expert: both kernels */
    gpu_named(KP_OP_GROUPED_GEMM, &g, "gen2:grouped_gemm_gen2_tiled+gen2:grouped_gemm_gen2_rows");
    g.a.offset = 2; /* a row not 16-byte aligned: generation 1 takes it */
    gpu_named(KP_OP_GROUPED_GEMM, &g, "gen1:grouped_gemm_tiled+gen1:grouped_gemm_small");
    setenv("KPORT_GPU_KERNELS", "grouped_gemm=gen1", 1);
    g = fake_gemm(8, 256);
    gpu_named(KP_OP_GROUPED_GEMM, &g, "gen1:grouped_gemm_small");
    g = fake_gemm(4096, 256);
    gpu_named(KP_OP_GROUPED_GEMM, &g, "gen1:grouped_gemm_tiled");

    kp_attention_prefill_params pf = fake_prefill_params(KP_BF16, 128);
    gpu_named(KP_OP_ATTENTION_PREFILL, &pf, "gen2:attention_prefill_gen2");
    setenv("KPORT_GPU_KERNELS", "attention_prefill=gen1", 1);
    gpu_named(KP_OP_ATTENTION_PREFILL, &pf, "gen1:attention_prefill");

    kp_attention_decode_params d;
    memset(&d, 0, sizeof d);
    d.q = fake_tensor(0, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    d.k_cache = fake_tensor(1, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    d.v_cache = fake_tensor(2, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    d.block_table = fake_tensor(3, KP_I32, 2, (int64_t[]){2, 32});
    d.seq_lens = fake_tensor(4, KP_I32, 1, (int64_t[]){2});
    d.out = fake_tensor(5, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    d.softmax_scale = 0.1f, d.num_splits = 4; /* split-KV: its combine kernel is not named */
    unsetenv("KPORT_GPU_KERNELS");
    gpu_named(KP_OP_ATTENTION_DECODE, &d, "gen2:attention_decode_gen2");
    setenv("KPORT_GPU_KERNELS", "gen1", 1);
    gpu_named(KP_OP_ATTENTION_DECODE, &d, "gen1:attention_decode_paged");
    unsetenv("KPORT_GPU_KERNELS");

    /* what the planners refuse is refused with their reason, and names nothing */
    kp_stream s = {0};
    char name[KP_KERNEL_NAME_MAX];
    memset(name, 'x', sizeof name);
    d.q = fake_tensor(0, KP_BF16, 4, (int64_t[]){2, 1, 32, 96});
    d.k_cache = fake_tensor(1, KP_BF16, 4, (int64_t[]){64, 16, 8, 96});
    d.v_cache = fake_tensor(2, KP_BF16, 4, (int64_t[]){64, 16, 8, 96});
    d.out = fake_tensor(5, KP_BF16, 4, (int64_t[]){2, 1, 32, 96});
    CHECK_INT_EQ(kp_gpu_op_kernel(&fake_target, KP_OP_ATTENTION_DECODE, &s, &d, name, sizeof name),
                 KP_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(fake_error, "head dims 96/96 are not built");
    CHECK_INT_EQ(name[0], '\0');
    setenv("KPORT_GPU_KERNELS", "gen3000", 1);
    CHECK_INT_EQ(kp_gpu_op_kernel(&fake_target, KP_OP_GROUPED_GEMM, &s, &g, name, sizeof name),
                 KP_ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(name[0], '\0');
    unsetenv("KPORT_GPU_KERNELS");
}

/* The name's grammar: tiers by generation (3 is the sm_90a tier), kp_ dropped, a higher
 * rank replacing, the same rank appended once, a lower one dropped, nothing past cap. */
KP_TEST(op_kernel_gpu_note_rules) {
    CHECK_STR_EQ(kp_gpu_tier_name(1), "gen1");
    CHECK_STR_EQ(kp_gpu_tier_name(2), "gen2");
    CHECK_STR_EQ(kp_gpu_tier_name(3), "sm90");
    char name[KP_KERNEL_NAME_MAX] = "";
    kp_gpu_ctx c = {.t = &fake_target, .host = &fake_host};
    kp_gpu_kernel_note(&c, KP_GPU_NOTE_MAIN, 3, "kp_grouped_gemm_sm90"); /* no buffer: nothing happens */
    c.kernel = name, c.kernel_cap = sizeof name;
    kp_gpu_kernel_note(&c, KP_GPU_NOTE_OP, 1, "moe_gate");
    kp_gpu_kernel_note(&c, KP_GPU_NOTE_OP, 1, "moe_align");
    CHECK_STR_EQ(name, "gen1:moe_gate+gen1:moe_align");
    kp_gpu_kernel_note(&c, KP_GPU_NOTE_MAIN, 3, "kp_grouped_gemm_sm90");
    CHECK_STR_EQ(name, "sm90:grouped_gemm_sm90");
    kp_gpu_kernel_note(&c, KP_GPU_NOTE_OP, 1, "kp_quantize_fp8");
    kp_gpu_kernel_note(&c, KP_GPU_NOTE_MAIN, 3, "kp_grouped_gemm_sm90");
    kp_gpu_kernel_note(&c, KP_GPU_NOTE_MAIN, 2, "kp_grouped_gemm_gen2_rows");
    kp_gpu_kernel_note(&c, KP_GPU_NOTE_MAIN, 2, "kp_grouped_gemm_gen2_rows");
    CHECK_STR_EQ(name, "sm90:grouped_gemm_sm90+gen2:grouped_gemm_gen2_rows");
    char small[24] = "";
    c.kernel = small, c.kernel_cap = sizeof small, c.kernel_rank = 0;
    kp_gpu_kernel_note(&c, KP_GPU_NOTE_MAIN, 2, "kp_grouped_gemm_gen2_tiled"); /* 28 bytes: does not fit */
    CHECK_STR_EQ(small, "");
    kp_gpu_kernel_note(&c, KP_GPU_NOTE_MAIN, 2, "kp_attention");
    kp_gpu_kernel_note(&c, KP_GPU_NOTE_MAIN, 2, "kp_other_kernel");
    CHECK_STR_EQ(small, "gen2:attention");
}

/* ---- the cpu backend ---- */

static kp_device *open_cpu(void) {
    kp_init_options opt = {NULL, 1, KP_INIT_NO_PLUGINS};
    CHECK_OK(kp_init(&opt));
    kp_device *d;
    CHECK_OK(kp_device_open(0, &d));
    return d;
}

KP_TEST(op_kernel_cpu_names_each_simd_level) {
    cpu_simd_level levels[CPU_SIMD_LEVELS];
    int n = cpu_simd_supported(levels);
    CHECK(n >= 1);
    for (int i = 0; i < n; i++) {
        setenv("KPORT_CPU_SIMD", cpu_simd_name(levels[i]), 1);
        kp_device *d = open_cpu();
        char want[64];
        snprintf(want, sizeof want, "cpu:%s", cpu_simd_name(levels[i]));
        for (int op = 0; op < KP_OP_COUNT; op++) {
            op_params o;
            op_params_make(&o, d, (kp_op)op);
            char name[KP_KERNEL_NAME_MAX];
            CHECK_OK(kp_op_kernel(d, (kp_op)op, &o.p, name, sizeof name));
            CHECK_MSG(strcmp(name, want) == 0, "%s at %s: named '%s'", kp_op_name((kp_op)op),
                      cpu_simd_name(levels[i]), name);
            op_params_free(&o);
        }
        CHECK_OK(kp_device_close(d));
        CHECK_OK(kp_shutdown());
    }
    unsetenv("KPORT_CPU_SIMD");
}

/* Every error writes nothing, name included. */
KP_TEST(op_kernel_errors_write_nothing) {
    kp_device *d = open_cpu();
    op_params o;
    op_params_make(&o, d, KP_OP_MOE_GATE);
    char name[KP_KERNEL_NAME_MAX + 8], untouched[sizeof name];
    memset(name, 0x5a, sizeof name);
    memcpy(untouched, name, sizeof name);
    CHECK_ERR(kp_op_kernel(NULL, KP_OP_MOE_GATE, &o.p.gate, name, KP_KERNEL_NAME_MAX), KP_ERR_INVALID_ARGUMENT,
              "d is NULL");
    CHECK_ERR(kp_op_kernel_sized(d, KP_OP_COUNT, &o.p.gate, sizeof o.p.gate, name, KP_KERNEL_NAME_MAX),
              KP_ERR_INVALID_ARGUMENT, "is not a kp_op");
    CHECK_ERR(kp_op_kernel(d, KP_OP_MOE_GATE, &o.p.gate, NULL, KP_KERNEL_NAME_MAX), KP_ERR_INVALID_ARGUMENT,
              "name is NULL");
    CHECK_ERR(kp_op_kernel(d, KP_OP_MOE_GATE, &o.p.gate, name, KP_KERNEL_NAME_MAX - 1), KP_ERR_INVALID_ARGUMENT,
              "cap is 127");
    CHECK_ERR(kp_op_kernel(d, KP_OP_MOE_GATE, NULL, name, KP_KERNEL_NAME_MAX), KP_ERR_INVALID_ARGUMENT,
              "params is NULL");
    const int32_t topk = o.p.gate.routing.topk;
    o.p.gate.routing.topk = 99; /* the op's own validation, as kp_op_supported */
    CHECK_ERR(kp_op_kernel(d, KP_OP_MOE_GATE, &o.p.gate, name, KP_KERNEL_NAME_MAX), KP_ERR_INVALID_ARGUMENT,
              "topk is 99");
    CHECK_INT_EQ(kp_op_supported(d, KP_OP_MOE_GATE, &o.p.gate), KP_ERR_INVALID_ARGUMENT);
    o.p.gate.routing.topk = topk;
    /* a caller's struct from a newer kport.h that sets a field this library lacks */
    unsigned char bigger[sizeof o.p.gate + 8];
    memcpy(bigger, &o.p.gate, sizeof o.p.gate);
    memset(bigger + sizeof o.p.gate, 0, 8);
    bigger[sizeof o.p.gate + 3] = 1;
    CHECK_ERR(kp_op_kernel_sized(d, KP_OP_MOE_GATE, bigger, sizeof bigger, name, KP_KERNEL_NAME_MAX),
              KP_ERR_UNSUPPORTED, "newer kport.h");
    CHECK(memcmp(name, untouched, sizeof name) == 0);
    /* the same call with room succeeds, writing the name and its NUL and nothing past them */
    bigger[sizeof o.p.gate + 3] = 0;
    CHECK_OK(kp_op_kernel_sized(d, KP_OP_MOE_GATE, bigger, sizeof bigger, name, KP_KERNEL_NAME_MAX));
    size_t len = strlen(name);
    CHECK(len > 4 && strncmp(name, "cpu:", 4) == 0);
    CHECK(memcmp(name + len + 1, untouched + len + 1, sizeof name - len - 1) == 0);
    op_params_free(&o);
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
}

/* ---- the OpenCL backend (PoCL in CI) ---- */

static kp_buffer *ocl_alloc(kp_device *d, size_t bytes, kp_buffer **all, int *n) {
    CHECK_OK(kp_buffer_alloc(d, bytes, &all[*n]));
    return all[(*n)++];
}

KP_TEST(op_kernel_opencl_follows_the_generation_choice) {
    kp_test_init();
    kp_device *d = kp_test_open_backend("opencl");
    enum { E = 4, N = 256, K = 256, M = 512 };
    kp_buffer *bufs[8];
    int nb = 0;
    kp_grouped_gemm_params g;
    memset(&g, 0, sizeof g);
    kp_buffer *ba = ocl_alloc(d, (size_t)M * K * 2, bufs, &nb), *bw = ocl_alloc(d, (size_t)E * N * K * 2, bufs, &nb);
    kp_buffer *bo = ocl_alloc(d, (E + 1) * 4, bufs, &nb), *bout = ocl_alloc(d, (size_t)M * N * 2, bufs, &nb);
    CHECK_OK(kp_tensor_init(&g.w, bw, 0, KP_BF16, 3, (int64_t[]){E, N, K}, NULL));
    CHECK_OK(kp_tensor_init(&g.expert_offsets, bo, 0, KP_I32, 1, (int64_t[]){E + 1}, NULL));
    struct { const char *env; int64_t m; const char *want; } cases[] = {
        {NULL, 8, "gen1:grouped_gemm_small"}, /* PoCL has no matrix units: generation 1 */
        {NULL, M, "gen1:grouped_gemm_tiled"},
        {"grouped_gemm=gen2", 8, "gen2:grouped_gemm_gen2_rows"},
        {"gen2", M, "gen2:grouped_gemm_gen2_tiled"},
        {"gen2", 40, "gen2:grouped_gemm_gen2_tiled+gen2:grouped_gemm_gen2_rows"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].env) setenv("KPORT_GPU_KERNELS", cases[i].env, 1);
        else unsetenv("KPORT_GPU_KERNELS");
        CHECK_OK(kp_tensor_init(&g.a, ba, 0, KP_BF16, 2, (int64_t[]){cases[i].m, K}, NULL));
        CHECK_OK(kp_tensor_init(&g.out, bout, 0, KP_BF16, 2, (int64_t[]){cases[i].m, N}, NULL));
        char name[KP_KERNEL_NAME_MAX];
        CHECK_OK(kp_op_kernel(d, KP_OP_GROUPED_GEMM, &g, name, sizeof name));
        CHECK_MSG(strcmp(name, cases[i].want) == 0, "KPORT_GPU_KERNELS=%s, %lld rows: '%s', want '%s'",
                  cases[i].env ? cases[i].env : "(unset)", (long long)cases[i].m, name, cases[i].want);
    }
    /* f32 has no generation-2 GEMM: generation 1 even when 2 is asked for */
    CHECK_OK(kp_tensor_init(&g.a, ba, 0, KP_F32, 2, (int64_t[]){8, K / 2}, NULL));
    CHECK_OK(kp_tensor_init(&g.w, bw, 0, KP_F32, 3, (int64_t[]){E, N / 2, K / 2}, NULL));
    CHECK_OK(kp_tensor_init(&g.out, bout, 0, KP_F32, 2, (int64_t[]){8, N / 2}, NULL));
    char name[KP_KERNEL_NAME_MAX];
    CHECK_OK(kp_op_kernel(d, KP_OP_GROUPED_GEMM, &g, name, sizeof name));
    CHECK_STR_EQ(name, "gen1:grouped_gemm_small");
    /* moe_forward names its GEMMs' kernel; the ops without generations are gen1 */
    unsetenv("KPORT_GPU_KERNELS");
    static const struct { kp_op op; const char *want; } ops[] = {
        {KP_OP_MOE_GATE, "gen1:moe_gate"}, {KP_OP_MOE_ALIGN, "gen1:moe_align"},
        {KP_OP_MOE_COMBINE, "gen1:moe_combine"}, {KP_OP_KV_CACHE_STORE, "gen1:kv_cache_store"},
        {KP_OP_QUANTIZE_FP8, "gen1:quantize_fp8"}, {KP_OP_MOE_FORWARD, "gen1:grouped_gemm_"},
        {KP_OP_ATTENTION_DECODE, "gen1:attention_decode_paged"}, {KP_OP_MLA_DECODE, "gen1:attention_decode_paged"},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        op_params o;
        op_params_make(&o, d, ops[i].op);
        CHECK_OK(kp_op_kernel(d, ops[i].op, &o.p, name, sizeof name));
        CHECK_MSG(strncmp(name, ops[i].want, strlen(ops[i].want)) == 0, "%s: '%s', want '%s...'",
                  kp_op_name(ops[i].op), name, ops[i].want);
        op_params_free(&o);
    }
    for (int i = 0; i < nb; i++) CHECK_OK(kp_buffer_free(bufs[i]));
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
}
