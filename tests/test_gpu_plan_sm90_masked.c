/*
 * tests/test_gpu_plan_sm90_masked.c — the masked [E, max_m, K] layout (masked_m) on the
 * sm_90a tier's grouped GEMMs (bf16/f16 and W8A8; backends/gpu/ops/gpu_grouped_gemm_sm90.c),
 * on any machine: the launch the planner makes through the recording fake target (masked_m
 * as the offsets argument, max_m in the params block, a grid that depends on E, max_m and
 * N alone), and the tile list both kernels walk (kernels/moe/moe_gemm_sm90_tiles.h, the
 * device scheduler's index arithmetic, compiled here as C): every row an expert owns is
 * stored exactly once per column tile, no row past its clamped count ever is.
 */
#include "kp_test.h"

#include "gpu_fake_target.h"
#include "moe/moe_gemm_sm90_tiles.h"

#include <stdlib.h>

/* The masked layout: a [E * max_m, K], w [E, N, K], masked_m int32 [E], out [E * max_m, N]
 * (core flattens the 3-D forms before the backend sees them), `dt` operands on fake
 * buffers 0..3; W8A8 (dt e4m3): out bf16, w_scale and row-major a_scale [E * max_m, K/128]
 * on buffers 4 and 5. */
static kp_grouped_gemm_params masked(int64_t e, int64_t max_m, int64_t n, int64_t k, kp_dtype dt) {
    kp_grouped_gemm_params p;
    memset(&p, 0, sizeof p);
    const int fp8 = dt == KP_FP8_E4M3;
    p.a = fake_tensor(0, dt, 2, (int64_t[]){e * max_m, k});
    p.w = fake_tensor(1, dt, 3, (int64_t[]){e, n, k});
    p.masked_m = fake_tensor(2, KP_I32, 1, (int64_t[]){e});
    p.out = fake_tensor(3, fp8 ? KP_BF16 : dt, 2, (int64_t[]){e * max_m, n});
    if (fp8) {
        p.w_scale = fake_tensor(4, KP_F32, 3, (int64_t[]){e, (n + 127) / 128, k / 128});
        p.a_scale = fake_tensor(5, KP_F32, 2, (int64_t[]){e * max_m, k / 128});
    }
    return p;
}

/* auto takes the bf16 tier on the table's gen 3 */
static void reset(const char *kernels) { fake_reset_sm90(kernels, 3, 0); }

/* bf16 masked, under auto: one launch of kp_grouped_gemm_sm90 whose offsets argument is
 * masked_m's buffer and whose block says max_m (mask_m) and m = E * max_m; the grid is the
 * list's bound E x ceil(max_m / 128) x ceil(N / 128) (capped at the 132 SMs), whatever the
 * counts; a's map spans the E * max_m rows. */
KP_TEST(gpu_grouped_gemm_sm90_masked_plan) {
    reset(NULL);
    kp_grouped_gemm_params p = masked(4, 200, 256, 128, KP_BF16);
    p.masked_m.offset = 8; /* masked_m[0] at element 2 of its buffer */
    kp_stream s = {0};
    const kp_gpu_launch *l = fake_plan_one(&s, KP_OP_GROUPED_GEMM, &p, "sm90:grouped_gemm_sm90");
    CHECK_STR_EQ(l->source, KP_GPU_SRC_MOE_GEMM_SM90);
    CHECK_STR_EQ(l->kernel, "kp_grouped_gemm_sm90");
    CHECK_INT_EQ(l->local[0], 384);
    CHECK_INT_EQ((long long)l->groups[0], 4 * 2 * 2); /* 4 experts x ceil(200 / 128) x ceil(256 / 128) */
    CHECK_INT_EQ(l->local_bytes, KP_MOE_GEMM_SM90_LOCAL_BYTES(128, 6, 4));
    CHECK(l->args[0].kind == KP_GPU_ARG_BUFFER && l->args[0].v.buffer == &fake_buf[2]);
    const kp_moe_gemm_sm90_kargs *ka = fake_kargs[0];
    CHECK_INT_EQ(ka->mask_m, 200);
    CHECK_INT_EQ((long long)ka->offsets_off, 2);
    CHECK(ka->n_exp == 4 && ka->m == 800 && ka->n == 256 && ka->k == 128 && ka->dense_rows == 0);
    CHECK_INT_EQ((long long)l->args[4].v.tmap.dims[1], 800);
    CHECK_INT_EQ((long long)l->args[5].v.tmap.dims[1], 4 * 256);

    /* many experts: the grid is one CTA per SM */
    p = masked(32, 256, 4096, 7168, KP_BF16);
    fake_count = 0;
    CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0));
    CHECK_INT_EQ(fake_count, 1);
    CHECK_INT_EQ((long long)fake_launches[0].groups[0], 132);
    CHECK_INT_EQ(((const kp_moe_gemm_sm90_kargs *)fake_kargs[0])->mask_m, 256);

    /* expert_offsets mode keeps mask_m 0 */
    p = masked(4, 200, 256, 128, KP_BF16);
    p.masked_m = (kp_tensor){0};
    p.expert_offsets = fake_tensor(2, KP_I32, 1, (int64_t[]){5});
    fake_count = 0;
    CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0));
    CHECK_INT_EQ(fake_count, 1);
    CHECK_STR_EQ(fake_launches[0].source, KP_GPU_SRC_MOE_GEMM_SM90);
    CHECK_INT_EQ(((const kp_moe_gemm_sm90_kargs *)fake_kargs[0])->mask_m, 0);

    /* max_m = 0 (E x 0 rows): nothing to launch */
    p = masked(4, 0, 256, 128, KP_BF16);
    fake_count = 0;
    CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0));
    CHECK_INT_EQ(fake_count, 0);
    fake_sm90_done();
}

/* W8A8 masked, forced onto the tier: kp_grouped_gemm_sm90_e4m3 with masked_m as offsets,
 * mask_m in the block, a_scale by the flat row (row-major [E * max_m, K/128]: as_t K/128),
 * the same grid bound; auto keeps W8A8 on generation 2 as in the offsets mode. */
KP_TEST(gpu_grouped_gemm_sm90_w8a8_masked_plan) {
    reset("grouped_gemm=sm90");
    kp_grouped_gemm_params p = masked(8, 256, 512, 384, KP_FP8_E4M3);
    kp_stream s = {0};
    const kp_gpu_launch *l = fake_plan_one(&s, KP_OP_GROUPED_GEMM, &p, "sm90:grouped_gemm_sm90_e4m3");
    CHECK_STR_EQ(l->kernel, "kp_grouped_gemm_sm90_e4m3");
    CHECK_INT_EQ((long long)l->groups[0], 8 * 2 * 4); /* 8 x ceil(256 / 128) x ceil(512 / 128) = 64 */
    CHECK(l->args[0].kind == KP_GPU_ARG_BUFFER && l->args[0].v.buffer == &fake_buf[2]);
    CHECK(l->args[1].kind == KP_GPU_ARG_BUFFER && l->args[1].v.buffer == &fake_buf[5]);
    const kp_moe_gemm_fp8_sm90_kargs *ka = fake_kargs[0];
    CHECK_INT_EQ(ka->g.mask_m, 256);
    CHECK(ka->g.n_exp == 8 && ka->g.m == 8 * 256 && ka->g.n == 512 && ka->g.k == 384);
    CHECK(ka->as_t == 3 && ka->as_g == 1 && ka->ws_nb == 4 && ka->ws_kb == 3);
    CHECK_INT_EQ((long long)l->args[6].v.tmap.dims[1], 8 * 256);

    reset(NULL);
    CHECK_OK(kp_gpu_op_run(&fake_target, KP_OP_GROUPED_GEMM, &s, &p, 0));
    CHECK_INT_EQ(fake_count, 1);
    CHECK_STR_EQ(fake_launches[0].source, KP_GPU_SRC_MOE_GEMM8);
    fake_sm90_done();
}

/* Walks the tile list as the kernel does (prefix of kp_s90_mtiles, kp_s90_tile for t =
 * 0, 1, ... until it says past the end) and stores each tile's rows [row0, min(row0 + 128,
 * hi)) as its epilogue does: counts[r * tiles_n + nt] += 1. Returns the list's length. */
static int walk(const int *offsets, const kp_moe_gemm_sm90_kargs *ka, int bn, int *counts) {
    int prefix[65] = {0};
    const int nexp = ka->dense_rows > 0 ? 1 : ka->n_exp, tiles_n = (ka->n + bn - 1) / bn;
    for (int e = 0; e < nexp; e++) prefix[e + 1] = prefix[e] + kp_s90_mtiles(offsets, ka, e);
    int t = 0, e, row0, hi, n0;
    while (kp_s90_tile(offsets, ka, prefix, nexp, tiles_n, bn, t, &e, &row0, &hi, &n0)) {
        CHECK_INT_EQ(n0, (t % tiles_n) * bn);
        for (int r = row0; r < hi && r < row0 + KP_MOE_GEMM_SM90_BM; r++) counts[r * tiles_n + n0 / bn]++;
        t++;
    }
    return t;
}

/* The masked layout's tile list: expert e's rows e * max_m .. + clamp(masked_m[e], 0,
 * max_m), each stored once per column tile and no other row stored (a count past max_m
 * does not reach into the next expert; a negative one stores nothing); the list holds
 * ceil(count / 128) m-tiles per expert, within the host's grid bound E x ceil(max_m / 128),
 * and the words around masked_m (buf[0], buf[E + 1]) change nothing. */
KP_TEST(gpu_grouped_gemm_sm90_masked_tiles) {
    static const int max_ms[] = {1, 100, 128, 200, 256, 300};
    static const int raw[8] = {0, 1, 127, 128, 129, -5, 100000, 255};
    for (size_t mi = 0; mi < sizeof max_ms / sizeof max_ms[0]; mi++) {
        const int max_m = max_ms[mi], e_n = 8, bn = 128;
        int buf[1 + 8 + 1];
        buf[0] = 12345, buf[9] = 1 << 30; /* around masked_m: a read of either shows */
        for (int e = 0; e < e_n; e++) buf[1 + e] = raw[(e + (int)mi) % 8];
        const kp_moe_gemm_sm90_kargs ka = {.offsets_off = 1, .n_exp = e_n, .m = e_n * max_m, .n = 300, .k = 64,
                                           .mode = KP_MOE_GEMM_STORE, .mask_m = max_m};
        const int tiles_n = 3;
        int *counts = calloc((size_t)(e_n * max_m * tiles_n), sizeof(int));
        CHECK(counts != NULL);
        if (!counts) return;
        const int tiles = walk(buf, &ka, bn, counts);
        int want_tiles = 0, bad = 0;
        for (int e = 0; e < e_n; e++) {
            const int c = buf[1 + e] < 0 ? 0 : buf[1 + e] > max_m ? max_m : buf[1 + e];
            want_tiles += (c + 127) / 128 * tiles_n;
            for (int r = 0; r < max_m; r++)
                for (int nt = 0; nt < tiles_n; nt++) {
                    const int got = counts[(e * max_m + r) * tiles_n + nt], want = r < c ? 1 : 0;
                    if (got != want && bad++ < 5)
                        CHECK_MSG(0, "max_m %d, expert %d (masked_m %d), row %d, column tile %d: stored %d times, "
                                  "want %d", max_m, e, buf[1 + e], r, nt, got, want);
                }
        }
        CHECK_INT_EQ(bad, 0);
        CHECK_INT_EQ(tiles, want_tiles);
        CHECK(tiles <= e_n * ((max_m + 127) / 128) * tiles_n);
        free(counts);
    }

    /* expert_offsets mode (mask_m 0) through the same arithmetic: ranges clamped to [0, m] */
    const int offs[5] = {0, 130, 130, 90, 400};
    const kp_moe_gemm_sm90_kargs ka = {.n_exp = 4, .m = 300, .n = 128, .k = 64, .mode = KP_MOE_GEMM_STORE};
    int counts[300] = {0};
    CHECK_INT_EQ(walk(offs, &ka, 128, counts), 2 + 0 + 0 + 2); /* [0,130), [130,130), [130,130), [90,300) */
    for (int r = 0; r < 300; r++) CHECK_INT_EQ(counts[r], r < 90 ? 1 : 2 - (r >= 130));
}
