/*
 * tests/test_gpu_plan_sm90.c — the grouped GEMM's sm_90a tier (generation 3,
 * backends/gpu/ops/gpu_grouped_gemm_sm90.c) as the planner sees it, on any machine: through
 * the recording fake target with an sm_90a profile, the launch it makes (geometry, the
 * params block, the two TMA tensor maps' address, dims, row stride, box and swizzle), the
 * cases it leaves to generation 2, and the KPORT_GPU_KERNELS / KPORT_DISABLE_TIER switches.
 */
#include "kp_test.h"

#include "gpu_fake_target.h"

#include <stdlib.h>

/* E experts of w [E, N, K], a [M, K], out [M, N], all bf16 on fake buffers 0..3. */
static kp_grouped_gemm_params gemm(int64_t m, int64_t e, int64_t n, int64_t k) {
    kp_grouped_gemm_params p;
    memset(&p, 0, sizeof p);
    p.a = fake_tensor(0, KP_BF16, 2, (int64_t[]){m, k});
    p.w = fake_tensor(1, KP_BF16, 3, (int64_t[]){e, n, k});
    p.expert_offsets = fake_tensor(2, KP_I32, 1, (int64_t[]){e + 1});
    p.out = fake_tensor(3, KP_BF16, 2, (int64_t[]){m, n});
    return p;
}

/* auto picks the tier only where the tuning table says grouped_gemm;gen 3 (not yet on any
 * device: it has not run on one), so these tests give the fake device that row. */
static void sm90_reset(void) { fake_reset_sm90(NULL, 3, 0); }

static void check_tmap(const kp_gpu_arg *a, const kp_buffer *b, uint64_t byte_off, uint64_t cols, uint64_t rows,
                       uint64_t stride, uint32_t box_rows) {
    CHECK_INT_EQ(a->kind, KP_GPU_ARG_TENSOR_MAP);
    const kp_gpu_tensor_map *m = &a->v.tmap;
    CHECK(m->buffer == b && m->address == 0);
    CHECK_INT_EQ((long long)m->byte_offset, (long long)byte_off);
    CHECK_INT_EQ(m->dtype, KP_BF16);
    CHECK_INT_EQ(m->swizzle, KP_GPU_TMAP_SWIZZLE_128B);
    CHECK_INT_EQ((long long)m->dims[0], (long long)cols);
    CHECK_INT_EQ((long long)m->dims[1], (long long)rows);
    CHECK_INT_EQ((long long)m->row_stride, (long long)stride);
    CHECK_INT_EQ(m->box[0], 64); /* 64 bf16 = the 128-byte swizzle span */
    CHECK_INT_EQ(m->box[1], box_rows);
}

/* Prefill-sized bf16 experts on sm_90a: one persistent launch of kp_grouped_gemm_sm90, 384
 * threads, one CTA per SM (at most the tile list's upper bound), tensor maps of a [M, K]
 * and of w as [E * N, K], each with its byte offset and row stride. */
KP_TEST(gpu_grouped_gemm_sm90_plan) {
    sm90_reset();
    kp_grouped_gemm_params p = gemm(4096, 4, 512, 256);
    kp_stream s = {0};
    const kp_gpu_launch *l = fake_plan_one(&s, KP_OP_GROUPED_GEMM, &p, "sm90:grouped_gemm_sm90"); /* kp_op_kernel, then the run */
    CHECK_STR_EQ(l->source, KP_GPU_SRC_MOE_GEMM_SM90);
    CHECK_STR_EQ(l->kernel, "kp_grouped_gemm_sm90");
    /* 227 KiB: six stages of 128 x 64 + 128 x 64 bf16 (32 KiB each) beside 1024 experts' prefix */
    CHECK_STR_EQ(l->options, "-DKP_DTYPE_BF16 -DS90_BN=128 -DS90_STAGES=6");
    CHECK_INT_EQ(l->local[0], 384);
    CHECK_INT_EQ(l->local_bytes, KP_MOE_GEMM_SM90_LOCAL_BYTES(128, 6, 4));
    CHECK(l->local_bytes <= fake_prof.local_mem);
    CHECK_INT_EQ((long long)l->groups[0], 132); /* (4096 / 128 + 4) x 4 tiles > 132 SMs */
    CHECK_INT_EQ(l->nargs, 6);
    CHECK(l->args[0].kind == KP_GPU_ARG_BUFFER && l->args[0].v.buffer == &fake_buf[2]);
    CHECK(l->args[1].kind == KP_GPU_ARG_BUFFER && l->args[1].v.buffer == &fake_buf[3]);
    CHECK(l->args[2].kind == KP_GPU_ARG_BUFFER && l->args[2].v.buffer == &fake_buf[3]);
    CHECK(l->args[3].kind == KP_GPU_ARG_KARGS && l->args[3].v.kargs.size == sizeof(kp_moe_gemm_sm90_kargs));
    const kp_moe_gemm_sm90_kargs *ka = fake_kargs[0];
    CHECK(ka->n_exp == 4 && ka->m == 4096 && ka->n == 512 && ka->k == 256 && ka->dense_rows == 0);
    CHECK(ka->mode == KP_MOE_GEMM_STORE && ka->out_ld == 512 && ka->out_off == 0 && ka->offsets_off == 0);
    check_tmap(&l->args[4], &fake_buf[0], 0, 256, 4096, 512, 128);
    check_tmap(&l->args[5], &fake_buf[1], 0, 256, 4 * 512, 512, 128);

    /* a few rows: the grid is the tile list's bound, (1 + 2) x 4; offsets into a, w and out
     * and a padded row stride of a travel in the maps and the kargs */
    p = gemm(100, 2, 512, 128);
    p.a.offset = 64 * 2, p.a.strides[0] = 192;      /* 16-byte multiples: 128 and 384 bytes */
    p.w.offset = 32 * 2;
    p.out.offset = 8 * 2;
    fake_count = 0;
    CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0));
    CHECK_INT_EQ(fake_count, 1);
    l = &fake_launches[0];
    CHECK_STR_EQ(l->source, KP_GPU_SRC_MOE_GEMM_SM90);
    CHECK_INT_EQ((long long)l->groups[0], (1 + 2) * 4);
    CHECK_INT_EQ(l->local_bytes, KP_MOE_GEMM_SM90_LOCAL_BYTES(128, 6, 2));
    check_tmap(&l->args[4], &fake_buf[0], 128, 128, 100, 384, 128);
    check_tmap(&l->args[5], &fake_buf[1], 64, 128, 2 * 512, 256, 128);
    CHECK_INT_EQ((long long)((const kp_moe_gemm_sm90_kargs *)fake_kargs[0])->out_off, 8);

    /* f16 takes the f16 variant; a dry run plans without launching */
    p = gemm(512, 8, 256, 64);
    p.a.dtype = p.w.dtype = p.out.dtype = KP_F16;
    fake_count = 0;
    CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 1));
    CHECK_INT_EQ(fake_count, 0);
    CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0));
    CHECK_INT_EQ(fake_count, 1);
    CHECK_STR_EQ(fake_launches[0].options, "-DKP_DTYPE_F16 -DS90_BN=128 -DS90_STAGES=6");
    CHECK_INT_EQ(fake_launches[0].args[4].v.tmap.dtype, KP_F16);
}

/* What the tier does not cover stays on generation 2 under auto (a device that is not
 * sm_90a, K % 64, e4m3 weights, experts of w not contiguous, a row of a 16-byte aligned
 * for cp.async but its TMA stride not); forced with grouped_gemm=sm90, each is
 * KP_ERR_UNSUPPORTED with the reason, and nothing is launched. */
KP_TEST(gpu_grouped_gemm_sm90_declines_what_it_cannot_run) {
    static const char *const why[] = {
        "the device is not CUDA sm_90a", "K is not a positive multiple of 64", "FP8 e4m3 operands",
        "w's experts are not contiguous", "the SwiGLU and combine epilogues",
    }; /* the masked layout it runs: test_gpu_plan_sm90_masked.c */
    for (int c = 0; c < 5; c++) {
        sm90_reset();
        kp_grouped_gemm_params p = gemm(1024, 4, 256, 256);
        if (c == 0) fake_prof.sm90a = 0;
        if (c == 1) p.a.shape[1] = p.w.shape[2] = 200, p.w.strides[1] = 200, p.w.strides[0] = 256 * 200,
                    p.a.strides[0] = 200;
        if (c == 2) { /* e4m3 weights with their block scales */
            p.w.dtype = KP_FP8_E4M3;
            p.w_scale = fake_tensor(4, KP_F32, 3, (int64_t[]){4, 2, 2});
        }
        if (c == 3) p.w.strides[0] = 256 * 256 + 64; /* a gap between experts */
        kp_stream s = {0};
        if (c == 4) { /* kp_moe_forward's SwiGLU GEMM: the gpu op layer's own entry */
            kp_gpu_ctx ctx = {.t = &fake_target, .s = &s, .host = &fake_host, .prof = fake_prof};
            kp_gpu_moe_gemm g = {.dtype = KP_BF16, .a = {&fake_buf[0], 0, 256, 0}, .a_rows = 1024,
                                 .w = {&fake_buf[1], 0, 256, 0}, .w_se = 256 * 256, .offsets = {&fake_buf[2], 0, 1, 0},
                                 .n_exp = 4, .m = 1024, .n = 256, .k = 256, .mode = KP_MOE_GEMM_SWIGLU, .n_out = 128,
                                 .out = {&fake_buf[3], 0, 128, 0}};
            CHECK(strstr(kp_gpu_gemm_sm90_missing(&ctx, &g), why[c]) != NULL);
            g.mode = KP_MOE_GEMM_STORE_F32;
            CHECK(kp_gpu_gemm_sm90_missing(&ctx, &g) == NULL);
            continue;
        }
        CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0));
        CHECK_INT_EQ(fake_count, 1);
        CHECK_STR_EQ(fake_launches[0].source, KP_GPU_SRC_MOE_GEMM2);
        setenv("KPORT_GPU_KERNELS", "grouped_gemm=sm90", 1);
        fake_count = 0;
        CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 1), KP_ERR_UNSUPPORTED);
        CHECK_STR_CONTAINS(fake_error, "forces grouped_gemm onto the sm_90a tier");
        CHECK_STR_CONTAINS(fake_error, why[c]);
        CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_ERR_UNSUPPORTED);
        CHECK_INT_EQ(fake_count, 0);
        unsetenv("KPORT_GPU_KERNELS");
    }
}

/* KPORT_GPU_KERNELS=grouped_gemm=sm90 forces the tier, gen2 / gen1 keep it off, the tuning
 * table's grouped_gemm;gen 2 too, and auto takes it only on the table's gen 3;
 * KPORT_DISABLE_TIER=sm90 turns auto's choice off and makes
 * the forced one an error; "sm90" is grouped_gemm's and attention_prefill's alone. */
KP_TEST(gpu_grouped_gemm_sm90_switches) {
    int g[KP_GPU_GEN_KERNELS];
    char why[256];
    CHECK_OK(kp_gpu_kernel_gen_parse("grouped_gemm=sm90,gen1", g, why, sizeof why));
    CHECK(g[5] == 3 && g[0] == 1); /* kernel 5: grouped_gemm (gpu_kernel_gen.c's order) */
    CHECK_INT_EQ(kp_gpu_kernel_gen_parse("sm90", g, why, sizeof why), KP_ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(why, "grouped_gemm=sm90");
    CHECK_INT_EQ(kp_gpu_kernel_gen_parse("attention_decode=sm90", g, why, sizeof why), KP_ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(why, "the sm_90a tier has grouped_gemm and attention_prefill alone");

    static const struct {
        const char *kernels, *disable;
        int64_t tuned_gen;
        const char *source; /* NULL: KP_ERR_UNSUPPORTED */
    } cases[] = {
        {NULL, NULL, 0, KP_GPU_SRC_MOE_GEMM2}, /* no table row: generation 2 */
        {NULL, NULL, 3, KP_GPU_SRC_MOE_GEMM_SM90},
        {"grouped_gemm=sm90", NULL, 0, KP_GPU_SRC_MOE_GEMM_SM90},
        {"grouped_gemm=sm90", NULL, 2, KP_GPU_SRC_MOE_GEMM_SM90}, /* the environment beats the table */
        {"grouped_gemm=gen2", NULL, 0, KP_GPU_SRC_MOE_GEMM2},
        {"gen1", NULL, 0, KP_GPU_SRC_MOE_GEMM},
        {"auto", NULL, 2, KP_GPU_SRC_MOE_GEMM2},
        {NULL, "sm90", 3, KP_GPU_SRC_MOE_GEMM2},
        {NULL, "xyz,sm90", 3, KP_GPU_SRC_MOE_GEMM2},
        {NULL, "sm9", 3, KP_GPU_SRC_MOE_GEMM_SM90}, /* names match whole */
        {"grouped_gemm=sm90", "sm90", 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fake_reset_sm90(cases[i].kernels, cases[i].tuned_gen, 0);
        if (cases[i].disable) setenv("KPORT_DISABLE_TIER", cases[i].disable, 1);
        kp_grouped_gemm_params p = gemm(2048, 8, 1024, 512);
        kp_stream s = {0};
        kp_status st = kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0);
        if (!cases[i].source) {
            CHECK_INT_EQ(st, KP_ERR_UNSUPPORTED);
            CHECK_STR_CONTAINS(fake_error, "KPORT_DISABLE_TIER");
            CHECK_INT_EQ(fake_count, 0);
        } else {
            CHECK_MSG(st == KP_OK && fake_count >= 1 && strcmp(fake_launches[0].source, cases[i].source) == 0,
                      "case %zu (%s, %s, gen %lld): status %d, %d launches of %s, want %s", i,
                      cases[i].kernels ? cases[i].kernels : "-", cases[i].disable ? cases[i].disable : "-",
                      (long long)cases[i].tuned_gen, (int)st, fake_count, fake_count ? fake_launches[0].source : "-",
                      cases[i].source);
        }
    }
    fake_sm90_done();
}

/* The build's variant list (the cuda plugin embeds what it names) holds the tier's kernels
 * for bf16 and f16 at BN 128 and 256, and the hip list none. */
static int sm90_variants;
static void count_sm90(void *user, const char *source, const char *options, const char *kernels) {
    (void)user, (void)options;
    if (strcmp(source, KP_GPU_SRC_MOE_GEMM_SM90) == 0 && strcmp(kernels, "kp_grouped_gemm_sm90") == 0) sm90_variants++;
}

KP_TEST(gpu_grouped_gemm_sm90_variants_listed) {
    kp_device_info info;
    kp_gpu_profile prof;
    CHECK_INT_EQ(kp_gpu_build_profile("cuda", &info, &prof), 0);
    CHECK_INT_EQ(prof.sm90a, 1);
    sm90_variants = 0;
    kp_gpu_variants_enumerate(&fake_host, &prof, count_sm90, NULL);
    CHECK_INT_EQ(sm90_variants, 4);
    CHECK_INT_EQ(kp_gpu_gemm_sm90_stages(&prof, 256), 4);
    CHECK(KP_MOE_GEMM_SM90_LOCAL_BYTES(256, 4, KP_MOE_GEMM_SM90_MAX_EXPERTS) <= prof.local_mem);
    CHECK(KP_MOE_GEMM_SM90_LOCAL_BYTES(128, 7, KP_MOE_GEMM_SM90_MAX_EXPERTS) > prof.local_mem);
    CHECK_INT_EQ(kp_gpu_build_profile("hip", &info, &prof), 0);
    sm90_variants = 0;
    kp_gpu_variants_enumerate(&fake_host, &prof, count_sm90, NULL);
    CHECK_INT_EQ(sm90_variants, 0);
}
