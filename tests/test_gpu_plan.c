/*
 * tests/test_gpu_plan.c — the op layer the GPU backends share (backends/gpu/kp_gpu.h),
 * on any machine: plans, argument lists and launch geometry through a recording fake
 * target, the fallback from a tuned tile a backend did not build, and the variant
 * lists the ahead-of-time backends (cuda, hip) embed. The fake target:
 * gpu_fake_target.c; the plan cache: test_gpu_plan_cache.c.
 */
#include "kp_test.h"

#include "gpu_fake_target.h"
#include "attention/attention_gen2_layout.h"

#include <math.h>
#include <stdarg.h>


/* ---- argument lists ---- */

KP_TEST(gpu_launch_args_in_order_and_overflow_reported) {
    kp_gpu_launch l;
    kp_gpu_launch_init(&l, "moe/moe_gate.cl", "-DKP_DTYPE_F32", "kp_moe_gate");
    kp_tensor t = fake_tensor(0, KP_BF16, 1, (int64_t[]){16});
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

KP_TEST(gpu_prefill_plan_geometry_and_arguments) {
    fake_reset("cuda");
    setenv("KPORT_GPU_KERNELS", "attention_prefill=gen1", 1); /* generation 2: gpu_prefill_gen2_plan */
    kp_attention_prefill_params p = fake_prefill_params(KP_BF16, 128);
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
    kp_attention_prefill_params p = fake_prefill_params(KP_F16, 64);
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
    kp_attention_prefill_params p = fake_prefill_params(KP_BF16, 128);
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
    p = fake_prefill_params(KP_F32, 64);
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_ATTENTION_PREFILL, &s, &p, 0), KP_OK);
    CHECK_STR_EQ(fake_launches[0].source, KP_GPU_SRC_ATTN_PREFILL);
}

/* The first kernel one planned run of op launches on the fake target. */
static const char *first_kernel_run(kp_op op, kp_stream *s, const void *params) {
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, op, s, params, 0), KP_OK);
    return fake_launches[0].kernel;
}

/* Generation-2 MLA decode, the default on matrix-unit devices: h_q 128 in two 64-row
 * tiles of 8 warps, 64 keys a tile and 2 stages in 227 KiB, generation 1's MLA combine;
 * an FP8 latent cache runs generation 2 too (its variant, its local memory, its scale
 * arguments), an f32 q with it and KPORT_GPU_KERNELS=mla_decode=gen1 run generation 1. */
KP_TEST(gpu_mla_decode_gen2_plan) {
    fake_reset("cuda");
    unsetenv("KPORT_GPU_KERNELS");
    kp_mla_decode_params m;
    memset(&m, 0, sizeof m);
    m.q = fake_tensor(0, KP_BF16, 4, (int64_t[]){3, 1, 128, 576});
    m.kv_cache = fake_tensor(1, KP_BF16, 4, (int64_t[]){64, 64, 1, 576});
    m.block_table = fake_tensor(2, KP_I32, 2, (int64_t[]){3, 64});
    m.seq_lens = fake_tensor(3, KP_I32, 1, (int64_t[]){3});
    m.out = fake_tensor(4, KP_BF16, 4, (int64_t[]){3, 1, 128, 512});
    m.softmax_scale = 0.135f, m.head_dim_v = 512, m.causal = 1, m.num_splits = 2;
    kp_stream s = {0};
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_MLA_DECODE, &s, &m, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 2);
    const kp_gpu_launch *l = &fake_launches[0];
    CHECK_STR_EQ(l->source, KP_GPU_SRC_MLA_DECODE2);
    CHECK_STR_EQ(l->kernel, "kp_mla_decode_gen2");
    CHECK_STR_CONTAINS(l->options, "-DM2_DQK=576 -DM2_DV=512 -DM2_WM=4 -DM2_BN=64 -DM2_STAGES=2");
    CHECK_INT_EQ(l->local[0], 256);
    CHECK_INT_EQ(l->local_bytes, KP_MLA2_LOCAL_BYTES(4, 64, 576, 2, 0));
    CHECK(l->local_bytes <= fake_prof.local_mem);
    CHECK_INT_EQ((long long)l->groups[0], 2); /* 128 rows: two tiles of 64 */
    CHECK_INT_EQ((long long)l->groups[1], 1);
    CHECK_INT_EQ((long long)l->groups[2], 3 * 2);
    CHECK_STR_EQ(fake_launches[1].kernel, "kp_attention_combine");
    CHECK_STR_CONTAINS(fake_launches[1].options, "-DATTN_MLA");
    /* automatic splits: one work-group per SM is enough (132 here) */
    m.num_splits = 0;
    m.q = fake_tensor(0, KP_BF16, 4, (int64_t[]){66, 1, 128, 576});
    m.out = fake_tensor(4, KP_BF16, 4, (int64_t[]){66, 1, 128, 512});
    m.block_table = fake_tensor(2, KP_I32, 2, (int64_t[]){66, 64});
    m.seq_lens = fake_tensor(3, KP_I32, 1, (int64_t[]){66});
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_MLA_DECODE, &s, &m, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    CHECK_INT_EQ((long long)fake_launches[0].groups[2], 66);
    m.q = fake_tensor(0, KP_BF16, 4, (int64_t[]){3, 1, 128, 576});
    m.out = fake_tensor(4, KP_BF16, 4, (int64_t[]){3, 1, 128, 512});
    m.block_table = fake_tensor(2, KP_I32, 2, (int64_t[]){3, 64});
    m.seq_lens = fake_tensor(3, KP_I32, 1, (int64_t[]){3});
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_MLA_DECODE, &s, &m, 0), KP_OK);
    CHECK_INT_EQ((long long)fake_launches[0].groups[2], 3 * 22); /* 6 row tiles x 22 splits = 132 */
    /* 16 rows: one row group, 64 keys, 2 stages; d_v 256 */
    m.q = fake_tensor(0, KP_F16, 4, (int64_t[]){3, 1, 16, 576});
    m.kv_cache.dtype = KP_F16, m.out = fake_tensor(4, KP_F16, 4, (int64_t[]){3, 1, 16, 256}), m.head_dim_v = 256;
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_MLA_DECODE, &s, &m, 0), KP_OK);
    CHECK_STR_CONTAINS(fake_launches[0].options, "-DM2_DV=256 -DM2_WM=1 -DM2_BN=64 -DM2_STAGES=2");
    CHECK_INT_EQ(fake_launches[0].local[0], 64);
    /* an FP8 latent cache: generation 2's FP8 variant, scales after the kargs */
    kp_mla_decode_params f = m;
    f.kv_cache = fake_tensor(1, KP_FP8_E4M3, 4, (int64_t[]){64, 64, 1, 576});
    f.kv_scale = fake_tensor(5, KP_F32, 1, (int64_t[]){64});
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_MLA_DECODE, &s, &f, 0), KP_OK);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_mla_decode_gen2");
    CHECK_STR_CONTAINS(fake_launches[0].options, "-DM2_DV=256 -DM2_WM=1 -DM2_BN=64 -DM2_STAGES=2 -DATTN_KV_FP8");
    CHECK_INT_EQ(fake_launches[0].local_bytes, KP_MLA2_LOCAL_BYTES(1, 64, 576, 2, 1));
    CHECK_INT_EQ(fake_launches[0].nargs, 13); /* 9 buffers, kargs, kv_scale twice, the FP8 kargs */
    /* h_q 128 with an FP8 cache: the 64-row tile, 64 keys, 2 stages still fit 227 KiB */
    f.q = fake_tensor(0, KP_F16, 4, (int64_t[]){3, 1, 128, 576});
    f.out = fake_tensor(4, KP_F16, 4, (int64_t[]){3, 1, 128, 256});
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_MLA_DECODE, &s, &f, 0), KP_OK);
    CHECK_STR_CONTAINS(fake_launches[0].options, "-DM2_WM=4 -DM2_BN=64 -DM2_STAGES=2 -DATTN_KV_FP8");
    CHECK_INT_EQ(fake_launches[0].local_bytes, KP_MLA2_LOCAL_BYTES(4, 64, 576, 2, 1));
    CHECK(fake_launches[0].local_bytes <= fake_prof.local_mem);
    /* f32 q with an FP8 cache: generation 1 */
    f.q = fake_tensor(0, KP_F32, 4, (int64_t[]){3, 1, 16, 576});
    f.out = fake_tensor(4, KP_F32, 4, (int64_t[]){3, 1, 16, 256});
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_MLA_DECODE, &s, &f, 0), KP_OK);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_attention_decode_paged");
    /* out's rows on 2 bytes: the epilogue's paired 16-bit stores need 4, generation 1 runs */
    f = m;
    f.out.offset = 2;
    CHECK_STR_EQ(first_kernel_run(KP_OP_MLA_DECODE, &s, &f), "kp_attention_decode_paged");
    f.out.offset = 4;
    CHECK_STR_EQ(first_kernel_run(KP_OP_MLA_DECODE, &s, &f), "kp_mla_decode_gen2");
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
    CHECK_INT_EQ(kp_gpu_mla2_tile_pick(kp_gpu_stub_host(), &hip, 128, 576, 0, 0, &t), 0);
    CHECK_INT_EQ(kp_gpu_mla2_tile_pick(kp_gpu_stub_host(), &hip, 128, 576, 1, 0, &t), 0);
    /* with 160 KiB (CDNA4's LDS) a tile fits, and 64-lane waves take two row groups at
     * least (a wave's 32 rows; each row group takes one wave a half) */
    hip.local_mem = 160 * 1024;
    for (int rows = 1; rows <= 128; rows *= 2) {
        CHECK_INT_EQ(kp_gpu_mla2_tile_pick(kp_gpu_stub_host(), &hip, rows, 576, 0, 0, &t), 1);
        CHECK_MSG(t.wm >= 2 && t.wm % 2 == 0 && KP_MLA2_THREADS(t.wm) % 64 == 0 && t.local_bytes <= hip.local_mem,
                  "rows %d: wm %d", rows, t.wm);
    }
    /* an FP8 cache on AMD: 32-key tiles (64 spills gfx90a's VGPRs), whatever the LDS or a
     * tuning row says; 16-bit caches keep 64 where it fits */
    hip.local_mem = 512 * 1024;
    CHECK_INT_EQ(kp_gpu_mla2_tile_pick(kp_gpu_stub_host(), &hip, 128, 576, 1, 0, &t), 1);
    CHECK_INT_EQ(t.bn, 32);
    CHECK_INT_EQ(kp_gpu_mla2_tile_pick(kp_gpu_stub_host(), &hip, 128, 576, 0, 0, &t), 1);
    CHECK_INT_EQ(t.bn, 64);
}

KP_TEST(gpu_decode_splits_use_scratch_and_combine) {
    fake_reset("cuda");
    setenv("KPORT_GPU_KERNELS", "attention_decode=gen1", 1); /* generation 2: gpu_decode_gen2_plan */
    kp_attention_decode_params p;
    memset(&p, 0, sizeof p);
    p.q = fake_tensor(0, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    p.k_cache = fake_tensor(1, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    p.v_cache = fake_tensor(2, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    p.block_table = fake_tensor(3, KP_I32, 2, (int64_t[]){2, 32});
    p.seq_lens = fake_tensor(4, KP_I32, 1, (int64_t[]){2});
    p.out = fake_tensor(5, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
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
    p.q = fake_tensor(0, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    p.k_cache = fake_tensor(1, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    p.v_cache = fake_tensor(2, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    p.block_table = fake_tensor(3, KP_I32, 2, (int64_t[]){2, 32});
    p.seq_lens = fake_tensor(4, KP_I32, 1, (int64_t[]){2});
    p.out = fake_tensor(5, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
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
    p.q = fake_tensor(0, KP_BF16, 4, (int64_t[]){2, 5, 64, 128});
    p.out = fake_tensor(5, KP_BF16, 4, (int64_t[]){2, 5, 64, 128});
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
                /* a whole number of waves: 64-lane AMD waves hold two 32-lane units */
                if (want) CHECK_MSG(KP_ATTN2_DEC_THREADS(t.wm, t.wn) % prof.warp == 0, "%s d%d rows %d: %d x %d units",
                                    backends[b], dims[d][0], rows, t.wm, t.wn);
            }
    }
    /* generation 1: an FP8 cache, f32, an unaligned q row */
    p.q = fake_tensor(0, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    p.out = fake_tensor(5, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    p.num_splits = 1;
    kp_attention_decode_params f = p;
    f.k_cache.dtype = f.v_cache.dtype = KP_FP8_E4M3;
    f.k_scale = fake_tensor(6, KP_F32, 1, (int64_t[]){1});
    f.v_scale = fake_tensor(7, KP_F32, 1, (int64_t[]){1});
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
    /* out's rows on 4 bytes: the epilogue stores 4 16-bit columns at once (8 bytes) */
    f = p;
    f.out.offset = 4;
    CHECK_STR_EQ(first_kernel_run(KP_OP_ATTENTION_DECODE, &s, &f), "kp_attention_decode_paged");
    f.out.offset = 8;
    CHECK_STR_EQ(first_kernel_run(KP_OP_ATTENTION_DECODE, &s, &f), "kp_attention_decode_gen2");
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
    p.q = at_address(fake_tensor(0, KP_BF16, 4, (int64_t[]){2, 1, 32, 128}), q_at);
    p.k_cache = fake_tensor(1, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    p.k_cache.offset = 256; /* a buffer tensor beside them keeps its offset */
    p.v_cache = fake_tensor(2, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    p.block_table = fake_tensor(3, KP_I32, 2, (int64_t[]){2, 32});
    p.seq_lens = fake_tensor(4, KP_I32, 1, (int64_t[]){2});
    p.out = at_address(fake_tensor(5, KP_BF16, 4, (int64_t[]){2, 1, 32, 128}), out_at);
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
    g.a = at_address(fake_tensor(0, KP_BF16, 2, (int64_t[]){4096, 256}), a_at);
    g.w = at_address(fake_tensor(1, KP_BF16, 3, (int64_t[]){4, 512, 256}), w_at);
    g.expert_offsets = fake_tensor(2, KP_I32, 1, (int64_t[]){5});
    g.out = at_address(fake_tensor(3, KP_BF16, 2, (int64_t[]){4096, 512}), o_at);
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
    kp_attention_prefill_params p = fake_prefill_params(KP_BF16, 128);
    p.k = fake_tensor(1, KP_BF16, 4, (int64_t[]){40, 16, 8, 128});
    p.v = fake_tensor(2, KP_BF16, 4, (int64_t[]){40, 16, 8, 128});
    memset(&p.cu_seqlens_k, 0, sizeof p.cu_seqlens_k);
    p.block_table = fake_tensor(5, KP_I32, 2, (int64_t[]){2, 13});
    p.seq_lens_k = fake_tensor(6, KP_I32, 1, (int64_t[]){2});
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
    dp.q = fake_tensor(0, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    dp.k_cache = fake_tensor(1, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    dp.v_cache = fake_tensor(2, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    dp.block_table = fake_tensor(3, KP_I32, 2, (int64_t[]){2, 32});
    dp.seq_lens = fake_tensor(4, KP_I32, 1, (int64_t[]){2});
    dp.out = fake_tensor(5, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
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
    p.q = fake_tensor(0, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
    p.k_cache = fake_tensor(1, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    p.v_cache = fake_tensor(2, KP_BF16, 4, (int64_t[]){64, 16, 8, 128});
    p.block_table = fake_tensor(3, KP_I32, 2, (int64_t[]){2, 32});
    p.seq_lens = fake_tensor(4, KP_I32, 1, (int64_t[]){2});
    p.out = fake_tensor(5, KP_BF16, 4, (int64_t[]){2, 1, 32, 128});
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
    p.a = fake_tensor(0, KP_BF16, 2, (int64_t[]){8, 256});
    p.w = fake_tensor(1, KP_BF16, 3, (int64_t[]){4, 512, 256});
    p.expert_offsets = fake_tensor(2, KP_I32, 1, (int64_t[]){5});
    p.out = fake_tensor(3, KP_BF16, 2, (int64_t[]){8, 512});
    kp_stream s = {0};
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_grouped_gemm_small"); /* 8 rows <= small_m */
    CHECK(strstr(fake_launches[0].options, "-DKP_GG_MMA") != NULL);
    /* many rows: the tiled kernel only */
    p.a = fake_tensor(0, KP_BF16, 2, (int64_t[]){4096, 256});
    p.out = fake_tensor(3, KP_BF16, 2, (int64_t[]){4096, 512});
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
    p.a = fake_tensor(0, KP_BF16, 2, (int64_t[]){4096, 256});
    p.w = fake_tensor(1, KP_BF16, 3, (int64_t[]){4, 512, 256});
    p.expert_offsets = fake_tensor(2, KP_I32, 1, (int64_t[]){5});
    p.out = fake_tensor(3, KP_BF16, 2, (int64_t[]){4096, 512});
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
    p.a = fake_tensor(0, KP_BF16, 2, (int64_t[]){8, 256});
    p.out = fake_tensor(3, KP_BF16, 2, (int64_t[]){8, 512});
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_grouped_gemm_gen2_rows");
    CHECK_INT_EQ((long long)fake_launches[0].groups[0], 512 / 32); /* 8 warps x 4 weight rows */
    CHECK_INT_EQ((long long)fake_launches[0].groups[2], 1);
    CHECK_INT_EQ(((const kp_moe_gemm_kargs *)fake_kargs[0])->ksplit, 1);
    /* K 4096: 64 groups for 132 SMs, so K is cut into slices of 1024 and reduced */
    p.a = fake_tensor(0, KP_BF16, 2, (int64_t[]){8, 4096});
    p.w = fake_tensor(1, KP_BF16, 3, (int64_t[]){4, 512, 4096});
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
    p.a = fake_tensor(0, KP_FP8_E4M3, 2, (int64_t[]){4096, 256});
    p.w = fake_tensor(1, KP_FP8_E4M3, 3, (int64_t[]){4, 512, 256});
    p.expert_offsets = fake_tensor(2, KP_I32, 1, (int64_t[]){5});
    p.out = fake_tensor(3, KP_BF16, 2, (int64_t[]){4096, 512});
    p.w_scale = fake_tensor(4, KP_F32, 3, (int64_t[]){4, 4, 2});
    p.a_scale = fake_tensor(5, KP_F32, 2, (int64_t[]){4096, 2});
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
    p.a = fake_tensor(0, KP_FP8_E4M3, 2, (int64_t[]){8, 256});
    p.out = fake_tensor(3, KP_F32, 2, (int64_t[]){8, 512});
    p.a_scale = fake_tensor(5, KP_F32, 2, (int64_t[]){2, 12});
    p.a_scale_layout = KP_FP8_SCALE_COL_MAJOR;
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    CHECK_STR_CONTAINS(fake_launches[0].options, "-DKP_DTYPE_F32 -DKP_GG_A_FP8 -DKP_GG_W_FP8 -DG8_BM=64 ");
    ka = fake_kargs[0];
    CHECK_INT_EQ(ka->as_t, 1);
    CHECK_INT_EQ(ka->as_g, 12);
    /* ... which the decode kernel takes: 32 weight rows a work-group, row tiles of 16
     * (8 rows + 4 experts at most), K 256 too short to split */
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_grouped_gemm_fp8_rows");
    CHECK_INT_EQ(fake_launches[0].local[0], 256);
    CHECK_INT_EQ(fake_launches[0].local_bytes, KP_MOE_GEMM8_ROWS_LOCAL_BYTES(256));
    CHECK((long long)fake_launches[0].groups[0] == 512 / 32 && fake_launches[0].groups[1] == 1 + 4 &&
          fake_launches[0].groups[2] == 1);
    CHECK_INT_EQ(ka->ksplit, 1);
    /* K 4096: 64 work-groups for 132 SMs, so K is cut into slices and reduced */
    p.a = fake_tensor(0, KP_FP8_E4M3, 2, (int64_t[]){8, 4096});
    p.w = fake_tensor(1, KP_FP8_E4M3, 3, (int64_t[]){4, 512, 4096});
    p.w_scale = fake_tensor(4, KP_F32, 3, (int64_t[]){4, 4, 32});
    p.a_scale = fake_tensor(5, KP_F32, 2, (int64_t[]){32, 12});
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 2);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_grouped_gemm_fp8_rows");
    CHECK_STR_EQ(fake_launches[1].kernel, "kp_grouped_gemm_fp8_reduce");
    ka = fake_kargs[0];
    CHECK_INT_EQ(ka->ksplit, 5); /* ceil(264 / 64) slices of 4096 / 5 rounded up to 128 */
    CHECK_INT_EQ(ka->kslice, 896);
    CHECK_INT_EQ((long long)fake_launches[0].groups[2], 5);
    CHECK(fake_launches[0].args[10].kind == KP_GPU_ARG_NATIVE && fake_launches[0].args[10].v.native == &fake_scratch[0]);
    /* prefill-sized experts on average (4,096 rows over 4): the tiled kernel, no split */
    p.a = fake_tensor(0, KP_FP8_E4M3, 2, (int64_t[]){4096, 4096});
    p.out = fake_tensor(3, KP_F32, 2, (int64_t[]){4096, 512});
    p.a_scale = fake_tensor(5, KP_F32, 2, (int64_t[]){32, 4096});
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_OK);
    CHECK_INT_EQ(fake_count, 1);
    CHECK_STR_EQ(fake_launches[0].kernel, "kp_grouped_gemm_fp8_gen2_tiled");
    /* generation 1 asked for: declined, with the reason, nothing launched */
    setenv("KPORT_GPU_KERNELS", "grouped_gemm=gen1", 1);
    fake_count = 0;
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0), KP_ERR_UNSUPPORTED);
    CHECK_INT_EQ(fake_count, 0);
    unsetenv("KPORT_GPU_KERNELS");
}

/* The W8A8 tile table per build profile, and the tuned row tiles: 16/32 rows take one
 * row of 8 groups; a value the kernel cannot take keeps the table's. */
static int64_t g8_tuned_m, g8_fused = 1;
static int64_t g8_tuning(const kp_device_info *d, const char *kernel, const char *param, int64_t def) {
    (void)d, (void)kernel;
    return strcmp(param, "g8_tile_m") == 0 ? g8_tuned_m : strcmp(param, "g8_fused_swiglu") == 0 ? g8_fused : def;
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
    /* the SWIGLU_FP8 tile: 128 h columns (one whole 1 x 128 group) of 64 rows, 4 stages on
     * sm_90; the tuning table's g8_fused_swiglu = 0 turns it off */
    CHECK(kp_gpu_gemm8_fused_tile_pick(&h, &p, 1, &t));
    CHECK(t.bm == 64 && t.bn == 256 && t.wm == 2 && t.wn == 4 && t.stages == 4);
    CHECK(KP_MOE_GEMM8_LOCAL_BYTES(64, 256, 4) <= p.local_mem);
    g8_fused = 0;
    CHECK(!kp_gpu_gemm8_fused_tile_pick(&h, &p, 1, &t));
    CHECK(kp_gpu_gemm8_fused_tile_pick(&h, &p, 0, &t)); /* without tuning: the table's */
    g8_fused = 1;
    CHECK(kp_gpu_build_profile("hip", &info, &p) == 0); /* 64 KiB: the small tile */
    kp_gpu_gemm8_tile_pick(&h, &p, 1024, 0, &t);
    CHECK(t.bm == 64 && t.bn == 64 && t.wm * t.wn * 32 <= (int)p.max_group);
    CHECK(KP_MOE_GEMM8_LOCAL_BYTES(64, 64, 2) <= p.local_mem);
    CHECK(!kp_gpu_gemm8_fused_tile_pick(&h, &p, 1, &t)); /* no 64 x 256 tile fits 64 KiB: h in f32 */
    g8_tuned_m = 32; /* one row of 32-lane units: no 32-row AMD wave can take it */
    kp_gpu_gemm8_tile_pick(&h, &p, 1024, 1, &t);
    CHECK_MSG(t.bm == 64 && t.wm == 2 && t.wn == 2, "tuned 32 rows on wave64: %d rows, %d x %d units", t.bm, t.wm, t.wn);
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
         * same 2 row tiles, + (CUDA: where a 64 x 256 tile fits) kp_moe_forward's W8A8 w13
         * GEMM quantizing h in its epilogue; on CUDA the sm_90a tier's 2 dtypes x BN 128 and 256
         * and its W8A8 kernel's 3 output dtypes; the EP capacity steps 1 */
        CHECK_MSG(v.attention >= 3 * (4 + 4 + 2), "%s: %d attention variants", backends[b], v.attention);
        /* + quantize_fp8: 3 dtypes */
        CHECK_INT_EQ(v.moe, 3 + 2 + 5 + 9 + 2 * 2 * 2 * (b == 0 ? 2 : 1) + 3 * (b == 0 ? 2 : 1) + (b == 0) + 3 +
                                (b == 0 ? 2 * 2 + 3 : 0) + 1);
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
    p.a = fake_tensor(0, KP_BF16, 2, (int64_t[]){8, 256});
    p.w = fake_tensor(1, KP_BF16, 3, (int64_t[]){4, 512, 256});
    p.expert_offsets = fake_tensor(2, KP_I32, 1, (int64_t[]){5});
    p.out = fake_tensor(3, KP_BF16, 2, (int64_t[]){8, 512});
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
        .logits = fake_tensor(0, KP_F32, 2, (int64_t[]){(int64_t)1 << 32, 16}),
        .topk_ids = fake_tensor(1, KP_I32, 2, (int64_t[]){(int64_t)1 << 32, 2}),
        .topk_weights = fake_tensor(2, KP_F32, 2, (int64_t[]){(int64_t)1 << 32, 2}),
        .routing = {2, 1, 1, KP_MOE_SCORING_SOFTMAX, 1, 1.0f},
    };
    check_gpu_refuses(KP_OP_MOE_GATE, &gate, "logits.shape[0] is 4294967296; the fake backend indexes with 32-bit");
    gate.logits.shape[0] = gate.topk_ids.shape[0] = gate.topk_weights.shape[0] = big - 1;
    kp_stream s = {0};
    fake_reset("cuda");
    CHECK_INT_EQ(kp_gpu_op_run(&fake_target, KP_OP_MOE_GATE, &s, &gate, 1), KP_OK); /* 2^31 - 1: within */

    kp_moe_combine_params comb = {
        .expert_out = fake_tensor(0, KP_BF16, 2, (int64_t[]){8, big}),
        .token_pos = fake_tensor(1, KP_I32, 2, (int64_t[]){4, 2}),
        .topk_weights = fake_tensor(2, KP_F32, 2, (int64_t[]){4, 2}),
        .out = fake_tensor(3, KP_BF16, 2, (int64_t[]){4, big}),
    };
    check_gpu_refuses(KP_OP_MOE_COMBINE, &comb, "expert_out.shape[1] is 2147483648");

    /* decode: each extent fits, the query rows B * s_q * h_q do not */
    kp_attention_decode_params dec = {
        .q = fake_tensor(0, KP_F16, 4, (int64_t[]){1 << 16, 1 << 10, 32, 128}),
        .k_cache = fake_tensor(1, KP_F16, 4, (int64_t[]){4, 16, 8, 128}),
        .v_cache = fake_tensor(2, KP_F16, 4, (int64_t[]){4, 16, 8, 128}),
        .block_table = fake_tensor(3, KP_I32, 2, (int64_t[]){1 << 16, 4}),
        .seq_lens = fake_tensor(4, KP_I32, 1, (int64_t[]){1 << 16}),
        .out = fake_tensor(5, KP_F16, 4, (int64_t[]){1 << 16, 1 << 10, 32, 128}),
        .softmax_scale = 0.125f,
    };
    check_gpu_refuses(KP_OP_ATTENTION_DECODE, &dec, "B * s_q * h_q (query rows) is 65536 * 1024 * 32");
    kp_mla_decode_params mla = {
        .q = fake_tensor(0, KP_BF16, 4, (int64_t[]){1 << 20, 2, 1024, 576}),
        .kv_cache = fake_tensor(1, KP_BF16, 4, (int64_t[]){4, 64, 1, 576}),
        .block_table = fake_tensor(3, KP_I32, 2, (int64_t[]){1 << 20, 4}),
        .seq_lens = fake_tensor(4, KP_I32, 1, (int64_t[]){1 << 20}),
        .out = fake_tensor(5, KP_BF16, 4, (int64_t[]){1 << 20, 2, 1024, 512}),
        .softmax_scale = 0.135f, .head_dim_v = 512,
    };
    check_gpu_refuses(KP_OP_MLA_DECODE, &mla, "B * s_q * h_q (query rows) is 1048576 * 2 * 1024");

    /* moe_forward: T * topk rows */
    const int64_t t = (int64_t)1 << 28;
    kp_moe_forward_params fwd = {
        .x = fake_tensor(0, KP_BF16, 2, (int64_t[]){t, 64}),
        .router_logits = fake_tensor(1, KP_F32, 2, (int64_t[]){t, 16}),
        .w13 = fake_tensor(2, KP_BF16, 3, (int64_t[]){16, 64, 64}),
        .w2 = fake_tensor(3, KP_BF16, 3, (int64_t[]){16, 64, 32}),
        .out = fake_tensor(4, KP_BF16, 2, (int64_t[]){t, 64}),
        .workspace = &fake_buf[5],
        .routing = {8, 1, 1, KP_MOE_SCORING_SOFTMAX, 1, 1.0f},
    };
    check_gpu_refuses(KP_OP_MOE_FORWARD, &fwd, "T * topk (rows) is 2147483648");
}
