/*
 * tests/test_gpu_plan_sm90_attn.c — attention prefill's sm_90a tier (generation 3,
 * backends/gpu/ops/gpu_attention_sm90.c) as the planner sees it, on any machine: through
 * the recording fake target with an sm_90a profile, the launch (geometry, local memory,
 * the params block, q's 4-D and k's / v's 3-D tensor maps), the cases it leaves to
 * generation 2 with a reason, and the KPORT_GPU_KERNELS / KPORT_DISABLE_TIER switches.
 */
#include "kp_test.h"

#include "gpu_fake_target.h"

#include <stdlib.h>

static void check_map(const kp_gpu_arg *a, const kp_buffer *b, int rank, const uint64_t *dims,
                      const uint64_t *strides, const uint32_t *box) {
    CHECK_INT_EQ(a->kind, KP_GPU_ARG_TENSOR_MAP);
    const kp_gpu_tensor_map *m = &a->v.tmap;
    CHECK(m->buffer == b && m->address == 0 && m->byte_offset == 0);
    CHECK_INT_EQ(m->dtype, KP_BF16);
    CHECK_INT_EQ(m->swizzle, KP_GPU_TMAP_SWIZZLE_128B);
    CHECK_INT_EQ(m->rank, rank);
    for (int i = 0; i < rank; i++) {
        CHECK_INT_EQ((long long)m->dims[i], (long long)dims[i]);
        CHECK_INT_EQ(m->box[i], box[i]);
    }
    CHECK_INT_EQ((long long)m->row_stride, (long long)strides[0]);
    for (int i = 1; i + 1 < rank; i++) CHECK_INT_EQ((long long)m->outer_strides[i - 1], (long long)strides[i]);
}

/* GQA 32/8 at head dim 128, bf16, forced onto the tier: one launch of
 * kp_attention_prefill_sm90, 384 threads, grid (200 x 4 / 128 row tiles, h_kv, B + 1),
 * three 64 KiB stages beside Q in 227 KiB; q as {128, 4, 8, 300} in boxes {64, 4, 1, 32}
 * (32 queries x the group's 4 heads = 128 packed rows), k and v as {128, 8, 300}. */
KP_TEST(gpu_attention_prefill_sm90_plan) {
    fake_reset_sm90("attention_prefill=sm90", 0, 0);
    kp_attention_prefill_params p = fake_prefill_params(KP_BF16, 128);
    kp_stream s = {0};
    const kp_gpu_launch *l = fake_plan_one(&s, KP_OP_ATTENTION_PREFILL, &p, "sm90:attention_prefill_sm90");
    CHECK_STR_EQ(l->source, KP_GPU_SRC_ATTN_PREFILL_SM90);
    CHECK_STR_EQ(l->kernel, "kp_attention_prefill_sm90");
    CHECK_STR_EQ(l->options, "-DKP_DTYPE_BF16 -DF3_DQK=128 -DF3_STAGES=3 -DF3_PINGPONG=1");
    CHECK_INT_EQ(l->local[0], 384);
    CHECK_INT_EQ(l->local_bytes, KP_ATTN_SM90_LOCAL_BYTES(128, 3));
    CHECK(l->local_bytes <= fake_prof.local_mem);
    CHECK(KP_ATTN_SM90_LOCAL_BYTES(128, 4) > fake_prof.local_mem);
    CHECK_INT_EQ((long long)l->groups[0], (200 * 4 + 127) / 128);
    CHECK_INT_EQ((long long)l->groups[1], 8);
    CHECK_INT_EQ((long long)l->groups[2], 3);
    CHECK_INT_EQ(l->nargs, 8);
    CHECK(l->args[0].kind == KP_GPU_ARG_BUFFER && l->args[0].v.buffer == &fake_buf[3]); /* out */
    CHECK(l->args[4].kind == KP_GPU_ARG_KARGS && l->args[4].v.kargs.size == sizeof(kp_attn_prefill_kargs));
    const kp_attn_prefill_kargs *ka = fake_kargs[0];
    CHECK(ka->group == 4 && ka->nb == 2 && ka->total_q == 300 && ka->total_k == 300 && ka->causal == 1);
    CHECK(ka->q_s0 == 32 * 128 && ka->q_s1 == 128 && ka->k_s0 == 8 * 128 && ka->k_s1 == 128);
    CHECK(ka->wl == -1 && ka->wr == -1 && ka->has_lse == 0);
    CHECK(ka->scale_log2 > 0.18033f && ka->scale_log2 < 0.18034f); /* 0.125 log2(e) */
    check_map(&l->args[5], &fake_buf[0], 4, (const uint64_t[]){128, 4, 8, 300},
              (const uint64_t[]){256, 1024, 32 * 256}, (const uint32_t[]){64, 4, 1, 32});
    check_map(&l->args[6], &fake_buf[1], 3, (const uint64_t[]){128, 8, 300}, (const uint64_t[]){256, 8 * 256},
              (const uint32_t[]){64, 1, 128});
    check_map(&l->args[7], &fake_buf[2], 3, (const uint64_t[]){128, 8, 300}, (const uint64_t[]){256, 8 * 256},
              (const uint32_t[]){64, 1, 128});

    /* f16 takes the f16 variant; a dry run plans without launching */
    p = fake_prefill_params(KP_F16, 128);
    fake_count = 0;
    CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 1));
    CHECK_INT_EQ(fake_count, 0);
    CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 0));
    CHECK_INT_EQ(fake_count, 1);
    CHECK_STR_EQ(fake_launches[0].options, "-DKP_DTYPE_F16 -DF3_DQK=128 -DF3_STAGES=3 -DF3_PINGPONG=1");
    CHECK_INT_EQ(fake_launches[0].args[5].v.tmap.dtype, KP_F16);

    /* DeepSeek-V3's 192/128: three 64-column boxes of q and k, two of v; two stages fit */
    p = fake_prefill_params(KP_BF16, 192);
    p.v = fake_tensor(2, KP_BF16, 3, (int64_t[]){300, 8, 128});
    p.out = fake_tensor(3, KP_BF16, 3, (int64_t[]){300, 32, 128});
    fake_count = 0;
    CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 0));
    CHECK_INT_EQ(fake_count, 1);
    l = &fake_launches[0];
    CHECK_STR_EQ(l->options, "-DKP_DTYPE_BF16 -DF3_DQK=192 -DF3_STAGES=2 -DF3_PINGPONG=1");
    CHECK_INT_EQ(l->local_bytes, KP_ATTN_SM90_LOCAL_BYTES(192, 2));
    CHECK(l->local_bytes <= fake_prof.local_mem && KP_ATTN_SM90_LOCAL_BYTES(192, 3) > fake_prof.local_mem);
    check_map(&l->args[5], &fake_buf[0], 4, (const uint64_t[]){192, 4, 8, 300},
              (const uint64_t[]){384, 4 * 384, 32 * 384}, (const uint32_t[]){64, 4, 1, 32});
    check_map(&l->args[6], &fake_buf[1], 3, (const uint64_t[]){192, 8, 300}, (const uint64_t[]){384, 8 * 384},
              (const uint32_t[]){64, 1, 128});
    check_map(&l->args[7], &fake_buf[2], 3, (const uint64_t[]){128, 8, 300}, (const uint64_t[]){256, 8 * 256},
              (const uint32_t[]){64, 1, 128});

    /* 64/64: one 64-column box of q, k and v a tile; four 32 KiB stages fit */
    p = fake_prefill_params(KP_BF16, 64);
    fake_count = 0;
    CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 0));
    CHECK_INT_EQ(fake_count, 1);
    l = &fake_launches[0];
    CHECK_STR_EQ(l->options, "-DKP_DTYPE_BF16 -DF3_DQK=64 -DF3_STAGES=4 -DF3_PINGPONG=1");
    CHECK_INT_EQ(l->local_bytes, KP_ATTN_SM90_LOCAL_BYTES(64, 4));
    CHECK_INT_EQ(l->local_bytes, 1024 + 128 * 64 * 2 + 4 * (128 * 64 * 2 * 2) + 10 * 8);
    CHECK(l->local_bytes <= fake_prof.local_mem);
    check_map(&l->args[5], &fake_buf[0], 4, (const uint64_t[]){64, 4, 8, 300},
              (const uint64_t[]){128, 4 * 128, 32 * 128}, (const uint32_t[]){64, 4, 1, 32});
    check_map(&l->args[6], &fake_buf[1], 3, (const uint64_t[]){64, 8, 300}, (const uint64_t[]){128, 8 * 128},
              (const uint32_t[]){64, 1, 128});
    check_map(&l->args[7], &fake_buf[2], 3, (const uint64_t[]){64, 8, 300}, (const uint64_t[]){128, 8 * 128},
              (const uint32_t[]){64, 1, 128});

    /* 256/256: stages of 64 keys (K and V boxes {64, 1, 64}, four of each), two beside the
     * 64 KiB Q; a third does not fit */
    p = fake_prefill_params(KP_F16, 256);
    fake_count = 0;
    CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 0));
    CHECK_INT_EQ(fake_count, 1);
    l = &fake_launches[0];
    CHECK_STR_EQ(l->options, "-DKP_DTYPE_F16 -DF3_DQK=256 -DF3_STAGES=2 -DF3_PINGPONG=1");
    CHECK_INT_EQ(l->local_bytes, KP_ATTN_SM90_LOCAL_BYTES(256, 2));
    CHECK_INT_EQ(l->local_bytes, 1024 + 128 * 256 * 2 + 2 * (64 * 256 * 2 * 2) + 6 * 8);
    CHECK(l->local_bytes <= fake_prof.local_mem && KP_ATTN_SM90_LOCAL_BYTES(256, 3) > fake_prof.local_mem);
    CHECK_INT_EQ((long long)l->groups[0], (200 * 4 + 127) / 128);
    CHECK_INT_EQ(l->args[6].v.tmap.dtype, KP_F16);
    CHECK_INT_EQ(l->args[7].v.tmap.rank, 3);
    CHECK_INT_EQ((long long)l->args[7].v.tmap.dims[0], 256);
    CHECK_INT_EQ(l->args[5].v.tmap.box[3], 32);
    for (int a = 6; a < 8; a++) {
        CHECK_INT_EQ(l->args[a].v.tmap.box[0], 64);
        CHECK_INT_EQ(l->args[a].v.tmap.box[2], 64);
        CHECK_INT_EQ((long long)l->args[a].v.tmap.row_stride, 512);
    }

    /* sliding windows are the kernel's masks: taken, the window in the params block */
    p = fake_prefill_params(KP_BF16, 256);
    p.causal = 0, p.window_left = 16, p.window_right = 4;
    fake_count = 0;
    CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 0));
    CHECK_INT_EQ(fake_count, 1);
    CHECK_STR_EQ(fake_launches[0].source, KP_GPU_SRC_ATTN_PREFILL_SM90);
    ka = fake_kargs[0];
    CHECK(ka->wl == 16 && ka->wr == 4 && ka->causal == 0);
    fake_sm90_done();
}

/* What the tier cannot take: auto (with a table row for it) runs generation 2, forcing it
 * fails with KP_ERR_UNSUPPORTED naming the reason, and nothing is launched. */
KP_TEST(gpu_attention_prefill_sm90_declines_what_it_cannot_run) {
    static const struct {
        const char *what, *why;
        int d, h_q;   /* head dim; q heads (h_kv 8) */
        int misalign; /* 1: q's token stride not a 16-byte multiple */
        int not_sm90a;
        int f32;      /* q, k, v f32 (else bf16) */
    } cases[] = {
        {"f32", "not bf16 or f16", 128, 32, 0, 0, 1},
        {"GQA group 3", "the GQA group does not divide 128", 128, 24, 0, 0, 0},
        {"q rows not 16-byte aligned", "16-byte aligned", 128, 32, 1, 0, 0},
        {"not sm_90a", "not CUDA sm_90a", 128, 32, 0, 1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int forced = 0; forced < 2; forced++) {
            fake_reset_sm90(forced ? "attention_prefill=sm90" : NULL, 0, forced ? 0 : 3);
            if (cases[i].not_sm90a) fake_prof.sm90a = 0;
            kp_attention_prefill_params p = fake_prefill_params(cases[i].f32 ? KP_F32 : KP_BF16, cases[i].d);
            if (cases[i].h_q != 32) {
                p.q = fake_tensor(0, KP_BF16, 3, (int64_t[]){300, cases[i].h_q, cases[i].d});
                p.out = fake_tensor(3, KP_BF16, 3, (int64_t[]){300, cases[i].h_q, cases[i].d});
            }
            if (cases[i].misalign) p.q.strides[0] = 32 * 128 + 4;
            kp_stream s = {0};
            kp_status st = kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 0);
            if (forced) {
                CHECK_MSG(st == KP_ERR_UNSUPPORTED, "%s, forced: status %d", cases[i].what, (int)st);
                CHECK_STR_CONTAINS(fake_error, cases[i].why);
                CHECK_INT_EQ(fake_count, 0);
            } else if (!cases[i].misalign && !cases[i].f32) { /* generation 2 takes the rest (else gen 1) */
                CHECK_MSG(st == KP_OK && fake_count == 1 &&
                              strcmp(fake_launches[0].source, KP_GPU_SRC_ATTN_PREFILL2) == 0,
                          "%s, auto: status %d, %d launches of %s", cases[i].what, (int)st, fake_count,
                          fake_count ? fake_launches[0].source : "-");
            } else {
                CHECK_MSG(st == KP_OK && fake_count == 1 &&
                              strcmp(fake_launches[0].source, KP_GPU_SRC_ATTN_PREFILL_SM90) != 0,
                          "%s, auto: status %d", cases[i].what, (int)st);
            }
        }
    fake_sm90_done();
}

/* auto picks the tier only with the tuning table's "attention_prefill;gen" 3 (no device has
 * that row yet); the environment beats the table; KPORT_DISABLE_TIER=sm90 turns auto's choice
 * off and makes the forced one an error. */
KP_TEST(gpu_attention_prefill_sm90_switches) {
    static const struct {
        const char *kernels, *disable;
        int64_t tuned_gen;
        const char *source; /* NULL: KP_ERR_UNSUPPORTED */
    } cases[] = {
        {NULL, NULL, 0, KP_GPU_SRC_ATTN_PREFILL2},
        {NULL, NULL, 3, KP_GPU_SRC_ATTN_PREFILL_SM90},
        {"attention_prefill=sm90", NULL, 0, KP_GPU_SRC_ATTN_PREFILL_SM90},
        {"attention_prefill=sm90", NULL, 2, KP_GPU_SRC_ATTN_PREFILL_SM90},
        {"attention_prefill=gen2", NULL, 3, KP_GPU_SRC_ATTN_PREFILL2},
        {"grouped_gemm=sm90", NULL, 0, KP_GPU_SRC_ATTN_PREFILL2},
        {NULL, "sm90", 3, KP_GPU_SRC_ATTN_PREFILL2},
        {"attention_prefill=sm90", "sm90", 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fake_reset_sm90(cases[i].kernels, 0, cases[i].tuned_gen);
        if (cases[i].disable) setenv("KPORT_DISABLE_TIER", cases[i].disable, 1);
        kp_attention_prefill_params p = fake_prefill_params(KP_BF16, 128);
        kp_stream s = {0};
        kp_status st = kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 0);
        if (!cases[i].source) {
            CHECK_INT_EQ(st, KP_ERR_UNSUPPORTED);
            CHECK_STR_CONTAINS(fake_error, "KPORT_DISABLE_TIER");
            CHECK_INT_EQ(fake_count, 0);
        } else {
            CHECK_MSG(st == KP_OK && fake_count >= 1 && strcmp(fake_launches[0].source, cases[i].source) == 0,
                      "case %zu: status %d, %d launches of %s, want %s", i, (int)st, fake_count,
                      fake_count ? fake_launches[0].source : "-", cases[i].source);
        }
    }
    fake_sm90_done();
}

/* The schedule: FA3's ping-pong of the consumer warpgroups (-DF3_PINGPONG=1) unless the
 * tuning table's attention_prefill;sm90_pingpong is 0 (the H200 session's fallback should
 * the ping-pong hang or run slower); any other value means the ping-pong. */
KP_TEST(gpu_attention_prefill_sm90_pingpong_key) {
    static const struct {
        int64_t tuned; /* -1: no row */
        const char *options;
    } cases[] = {
        {-1, "-DKP_DTYPE_BF16 -DF3_DQK=128 -DF3_STAGES=3 -DF3_PINGPONG=1"},
        {0, "-DKP_DTYPE_BF16 -DF3_DQK=128 -DF3_STAGES=3 -DF3_PINGPONG=0"},
        {1, "-DKP_DTYPE_BF16 -DF3_DQK=128 -DF3_STAGES=3 -DF3_PINGPONG=1"},
        {2, "-DKP_DTYPE_BF16 -DF3_DQK=128 -DF3_STAGES=3 -DF3_PINGPONG=1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fake_reset_sm90(NULL, 0, 3);
        fake_tuned_pingpong = cases[i].tuned;
        kp_attention_prefill_params p = fake_prefill_params(KP_BF16, 128);
        kp_stream s = {0};
        CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 0));
        CHECK_INT_EQ(fake_count, 1);
        CHECK_STR_EQ(fake_launches[0].source, KP_GPU_SRC_ATTN_PREFILL_SM90);
        CHECK_MSG(strcmp(fake_launches[0].options, cases[i].options) == 0, "tuned %lld: options '%s', want '%s'",
                  (long long)cases[i].tuned, fake_launches[0].options, cases[i].options);
    }
    fake_sm90_done();
}

/* The cuda build's variant list (the plugin embeds what it names) holds the tier's prefill
 * for bf16 and f16 at 64/64, 128/128, 192/128 and 256/256, each with and without the
 * ping-pong (either schedule runs without NVRTC); the hip list none. */
static int attn_variants, attn_pingpong[2];
static void count_attn(void *user, const char *source, const char *options, const char *kernels) {
    (void)user;
    if (strcmp(source, KP_GPU_SRC_ATTN_PREFILL_SM90) == 0 && strcmp(kernels, "kp_attention_prefill_sm90") == 0) {
        attn_variants++;
        if (strstr(options, " -DF3_PINGPONG=0")) attn_pingpong[0]++;
        if (strstr(options, " -DF3_PINGPONG=1")) attn_pingpong[1]++;
    }
}

KP_TEST(gpu_attention_prefill_sm90_variants_listed) {
    kp_device_info info;
    kp_gpu_profile prof;
    CHECK_INT_EQ(kp_gpu_build_profile("cuda", &info, &prof), 0);
    CHECK_INT_EQ(prof.sm90a, 1);
    attn_variants = attn_pingpong[0] = attn_pingpong[1] = 0;
    kp_gpu_variants_enumerate(&fake_host, &prof, count_attn, NULL);
    CHECK_INT_EQ(attn_variants, 16);
    CHECK_INT_EQ(attn_pingpong[0], 8);
    CHECK_INT_EQ(attn_pingpong[1], 8);
    CHECK_INT_EQ(kp_gpu_attn_sm90_stages(&prof, 64), 4);
    CHECK_INT_EQ(kp_gpu_attn_sm90_stages(&prof, 128), 3);
    CHECK_INT_EQ(kp_gpu_attn_sm90_stages(&prof, 192), 2);
    CHECK_INT_EQ(kp_gpu_attn_sm90_stages(&prof, 256), 2);
    CHECK_INT_EQ(kp_gpu_build_profile("hip", &info, &prof), 0);
    attn_variants = 0;
    kp_gpu_variants_enumerate(&fake_host, &prof, count_attn, NULL);
    CHECK_INT_EQ(attn_variants, 0);
}
