/*
 * tests/test_gpu_plan_sm90_fp8.c — the sm_90a tier's W8A8 grouped GEMM
 * (kernels/moe/moe_gemm_fp8_sm90.cl, backends/gpu/ops/gpu_grouped_gemm_sm90.c) as the
 * planner sees it, on any machine, through the recording fake target with an sm_90a
 * profile: KPORT_GPU_KERNELS=grouped_gemm=sm90 runs it (kp_op_kernel names it), auto never
 * does (not even with the tuning table's gen 3), the launch (geometry, arguments, the
 * params block with both a_scale layouts, the e4m3 tensor maps), and the cases it declines
 * with the reason.
 */
#include "kp_test.h"

#include "gpu_fake_target.h"

#include <stdlib.h>

/* W8A8: a e4m3 [m, k], w e4m3 [e, n, k], w_scale [e, n/128, k/128], a_scale [m, k/128]
 * row-major, out in `out_dt`; fake buffers 0..5. */
static kp_grouped_gemm_params w8a8(int64_t m, int64_t e, int64_t n, int64_t k, kp_dtype out_dt) {
    kp_grouped_gemm_params p;
    memset(&p, 0, sizeof p);
    p.a = fake_tensor(0, KP_FP8_E4M3, 2, (int64_t[]){m, k});
    p.w = fake_tensor(1, KP_FP8_E4M3, 3, (int64_t[]){e, n, k});
    p.expert_offsets = fake_tensor(2, KP_I32, 1, (int64_t[]){e + 1});
    p.out = fake_tensor(3, out_dt, 2, (int64_t[]){m, n});
    p.w_scale = fake_tensor(4, KP_F32, 3, (int64_t[]){e, (n + 127) / 128, k / 128});
    p.a_scale = fake_tensor(5, KP_F32, 2, (int64_t[]){m, k / 128});
    return p;
}

/* even a table row saying gen 3 does not make auto take W8A8 onto the tier */
static void reset(const char *kernels) { fake_reset_sm90(kernels, 3, 0); }

static void check_tmap(const kp_gpu_arg *a, const kp_buffer *b, uint64_t byte_off, uint64_t cols, uint64_t rows,
                       uint64_t stride) {
    CHECK_INT_EQ(a->kind, KP_GPU_ARG_TENSOR_MAP);
    const kp_gpu_tensor_map *m = &a->v.tmap;
    CHECK(m->buffer == b && m->address == 0);
    CHECK_INT_EQ((long long)m->byte_offset, (long long)byte_off);
    CHECK_INT_EQ(m->dtype, KP_FP8_E4M3);
    CHECK_INT_EQ(m->swizzle, KP_GPU_TMAP_SWIZZLE_128B);
    CHECK_INT_EQ((long long)m->dims[0], (long long)cols);
    CHECK_INT_EQ((long long)m->dims[1], (long long)rows);
    CHECK_INT_EQ((long long)m->row_stride, (long long)stride);
    CHECK_INT_EQ(m->box[0], 128); /* 128 e4m3 = the 128-byte swizzle span = one scale slice */
    CHECK_INT_EQ(m->box[1], 128);
}

/* Forced: one persistent launch of kp_grouped_gemm_sm90_e4m3, 384 threads, one CTA per SM
 * at most, six stages of 2 x 16 KiB in 227 KiB; arguments offsets, a_scale, w_scale, out,
 * outf, the block, the maps of a [M, K] and w [E N, K] in bytes. */
KP_TEST(gpu_grouped_gemm_sm90_w8a8_plan) {
    reset("grouped_gemm=sm90");
    kp_grouped_gemm_params p = w8a8(4096, 4, 512, 384, KP_BF16);
    kp_stream s = {0};
    const kp_gpu_launch *l = fake_plan_one(&s, KP_OP_GROUPED_GEMM, &p, "sm90:grouped_gemm_sm90_e4m3");
    CHECK_STR_EQ(l->source, KP_GPU_SRC_MOE_GEMM_SM90_FP8);
    CHECK_STR_EQ(l->kernel, "kp_grouped_gemm_sm90_e4m3");
    CHECK_STR_EQ(l->options, "-DKP_DTYPE_BF16 -DS90_STAGES=6");
    CHECK_INT_EQ(l->local[0], 384);
    CHECK_INT_EQ(l->local_bytes, KP_MOE_GEMM_FP8_SM90_LOCAL_BYTES(6, 4));
    CHECK(l->local_bytes <= fake_prof.local_mem);
    CHECK(KP_MOE_GEMM_FP8_SM90_LOCAL_BYTES(7, KP_MOE_GEMM_SM90_MAX_EXPERTS) > fake_prof.local_mem);
    CHECK_INT_EQ((long long)l->groups[0], 132); /* (4096 / 128 + 4) x 4 tiles > 132 SMs */
    CHECK_INT_EQ(l->nargs, 8);
    CHECK(l->args[0].kind == KP_GPU_ARG_BUFFER && l->args[0].v.buffer == &fake_buf[2]);
    CHECK(l->args[1].kind == KP_GPU_ARG_BUFFER && l->args[1].v.buffer == &fake_buf[5]);
    CHECK(l->args[2].kind == KP_GPU_ARG_BUFFER && l->args[2].v.buffer == &fake_buf[4]);
    CHECK(l->args[3].kind == KP_GPU_ARG_BUFFER && l->args[3].v.buffer == &fake_buf[3]);
    CHECK(l->args[4].kind == KP_GPU_ARG_BUFFER && l->args[4].v.buffer == &fake_buf[3]);
    CHECK(l->args[5].kind == KP_GPU_ARG_KARGS && l->args[5].v.kargs.size == sizeof(kp_moe_gemm_fp8_sm90_kargs));
    const kp_moe_gemm_fp8_sm90_kargs *ka = fake_kargs[0];
    CHECK(ka->g.n_exp == 4 && ka->g.m == 4096 && ka->g.n == 512 && ka->g.k == 384 && ka->g.dense_rows == 0);
    CHECK(ka->g.mode == KP_MOE_GEMM_STORE && ka->g.out_ld == 512 && ka->g.out_off == 0);
    CHECK_INT_EQ(ka->as_t, 3); /* row-major a_scale [M, K/128] */
    CHECK_INT_EQ(ka->as_g, 1);
    CHECK_INT_EQ(ka->ws_nb, 4);
    CHECK_INT_EQ(ka->ws_kb, 3);
    check_tmap(&l->args[6], &fake_buf[0], 0, 384, 4096, 384);
    check_tmap(&l->args[7], &fake_buf[1], 0, 384, 4 * 512, 384);

    /* f32 out, column-major scales [K/128, M_pad], offsets into a, w, scales and out, a padded
     * row of a (16-byte multiples), N not a multiple of 128 (its last scale block partial) */
    p = w8a8(100, 2, 200, 256, KP_F32);
    p.a.offset = 32, p.a.strides[0] = 272;
    p.w.offset = 16;
    p.out.offset = 8; /* offsets in bytes: 2 f32 */
    p.a_scale = fake_tensor(5, KP_F32, 2, (int64_t[]){2, 104});
    p.a_scale.offset = 4;
    p.a_scale_layout = KP_FP8_SCALE_COL_MAJOR;
    p.w_scale.offset = 8;
    fake_count = 0;
    CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0));
    CHECK_INT_EQ(fake_count, 1);
    l = &fake_launches[0];
    CHECK_STR_EQ(l->options, "-DKP_DTYPE_F32 -DS90_STAGES=6");
    CHECK_INT_EQ((long long)l->groups[0], (1 + 2) * 2);
    ka = fake_kargs[0];
    CHECK(ka->as_t == 1 && ka->as_g == 104 && ka->as_off == 1 && ka->ws_off == 2);
    CHECK(ka->ws_nb == 2 && ka->ws_kb == 2 && ka->g.out_off == 2 && ka->g.n == 200);
    check_tmap(&l->args[6], &fake_buf[0], 32, 256, 100, 272);
    check_tmap(&l->args[7], &fake_buf[1], 16, 256, 2 * 200, 256);

    /* a dry run plans without launching */
    fake_count = 0;
    CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 1));
    CHECK_INT_EQ(fake_count, 0);
    fake_sm90_done();
}

/* Auto keeps W8A8 on generation 2 whatever the table says; gen2 forced too. */
KP_TEST(gpu_grouped_gemm_sm90_w8a8_auto_stays_on_gen2) {
    static const char *const settings[] = {NULL, "auto", "grouped_gemm=gen2"};
    for (int i = 0; i < 3; i++) {
        reset(settings[i]);
        kp_grouped_gemm_params p = w8a8(4096, 4, 512, 256, KP_BF16);
        kp_stream s = {0};
        CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0));
        CHECK_INT_EQ(fake_count, 1);
        CHECK_STR_EQ(fake_launches[0].source, KP_GPU_SRC_MOE_GEMM8);
    }
    fake_sm90_done();
}

/* Forced onto the tier, what its W8A8 kernel cannot take fails with KP_ERR_UNSUPPORTED and
 * the reason (kp_op_kernel and the run alike), nothing launched: not an sm_90a device,
 * w's experts not contiguous, w's rows not 16-byte aligned (an offset of 8 bytes), the
 * tier disabled; the
 * epilogues it lacks (kp_moe_forward's SwiGLU-FP8) through the op layer's entry. */
KP_TEST(gpu_grouped_gemm_sm90_w8a8_declines_what_it_cannot_run) {
    static const char *const why[] = {"the device is not CUDA sm_90a", "w's experts are not contiguous",
                                      "not 16-byte aligned", "KPORT_DISABLE_TIER"};
    for (int c = 0; c < 4; c++) {
        reset("grouped_gemm=sm90");
        kp_grouped_gemm_params p = w8a8(1024, 4, 256, 256, KP_BF16);
        if (c == 0) fake_prof.sm90a = 0;
        if (c == 1) p.w.strides[0] = 256 * 256 + 128;
        if (c == 2) p.w.offset = 8;
        if (c == 3) setenv("KPORT_DISABLE_TIER", "sm90", 1);
        kp_stream s = {0};
        char name[KP_KERNEL_NAME_MAX];
        CHECK_INT_EQ(kp_gpu_op_kernel(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, name, sizeof name),
                     KP_ERR_UNSUPPORTED);
        CHECK_STR_CONTAINS(fake_error, "forces grouped_gemm onto the sm_90a tier");
        CHECK_STR_CONTAINS(fake_error, why[c]);
        CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_ERR_UNSUPPORTED);
        CHECK_INT_EQ(fake_count, 0);
    }
    reset(NULL);
    kp_stream s = {0};
    kp_gpu_ctx ctx = {.t = &fake_target, .s = &s, .host = &fake_host, .prof = fake_prof};
    kp_gpu_moe_gemm g = {.dtype = KP_F32, .w_fp8 = 1, .a_fp8 = 1, .a = {&fake_buf[0], 0, 256, 0}, .a_rows = 1024,
                         .w = {&fake_buf[1], 0, 256, 0}, .w_se = 256 * 256, .offsets = {&fake_buf[2], 0, 1, 0},
                         .n_exp = 4, .m = 1024, .n = 256, .k = 256, .mode = KP_MOE_GEMM_SWIGLU_FP8, .n_out = 128,
                         .out = {&fake_buf[3], 0, 128, 0}};
    CHECK_STR_CONTAINS(kp_gpu_gemm_sm90_fp8_missing(&ctx, &g), "epilogues");
    g.mode = KP_MOE_GEMM_STORE_F32;
    CHECK(kp_gpu_gemm_sm90_fp8_missing(&ctx, &g) == NULL);
    g.k = 192; /* the API requires K % 128; the kernel checks it too */
    CHECK_STR_CONTAINS(kp_gpu_gemm_sm90_fp8_missing(&ctx, &g), "multiple of 128");
    g.k = 256, g.a_fp8 = 0;
    CHECK_STR_CONTAINS(kp_gpu_gemm_sm90_fp8_missing(&ctx, &g), "W8A8");
    fake_sm90_done();
}

/* The cuda build's variant list holds the W8A8 kernel for f32, f16 and bf16 out; hip's none. */
static int fp8_variants;
static void count_fp8(void *user, const char *source, const char *options, const char *kernels) {
    (void)user, (void)options;
    if (strcmp(source, KP_GPU_SRC_MOE_GEMM_SM90_FP8) == 0 && strcmp(kernels, "kp_grouped_gemm_sm90_e4m3") == 0)
        fp8_variants++;
}

KP_TEST(gpu_grouped_gemm_sm90_w8a8_variants_listed) {
    kp_device_info info;
    kp_gpu_profile prof;
    CHECK_INT_EQ(kp_gpu_build_profile("cuda", &info, &prof), 0);
    fp8_variants = 0;
    kp_gpu_variants_enumerate(&fake_host, &prof, count_fp8, NULL);
    CHECK_INT_EQ(fp8_variants, 3);
    CHECK_INT_EQ(kp_gpu_gemm_sm90_fp8_stages(&prof), 6);
    CHECK_INT_EQ(kp_gpu_build_profile("hip", &info, &prof), 0);
    fp8_variants = 0;
    kp_gpu_variants_enumerate(&fake_host, &prof, count_fp8, NULL);
    CHECK_INT_EQ(fp8_variants, 0);
}
