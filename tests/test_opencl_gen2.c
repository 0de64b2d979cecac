/*
 * tests/test_opencl_gen2.c — the primitives the generation-2 kernels are built on, run
 * through the OpenCL backend's own launch path (the kp_gpu_target every op uses): on
 * PoCL they take the portable implementations, the same kernel code that takes cp.async
 * and mma.sync on NVIDIA.
 *  - the S-stage copy pipeline (kernels/common/kp_async_copy.h) in dynamic local memory
 *    (KP_DYNAMIC_LOCAL, kp_gpu_launch.local_bytes), S = 2, 3, 4.
 *  - the wave-level tile (kernels/common/kp_wave_tile.h) through common/wave_selftest.cl:
 *    S = A Bt^T, its row max and sum, O = round(S) V, exactly against float64.
 */
#include "kp_test.h"

#if !defined(KP_OPENCL_TESTS)
KP_TEST(opencl_pipeline_stages_in_dynamic_local) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_wave_tile_selftest_exact) { KP_SKIP("opencl backend not built"); }
#else

#include "backend.h"
#include "common/selftest_kargs.h"
#include "kp_gpu.h"
#include "opencl_internal.h"
#include "test_opencl.h"

#include <math.h>

/* A device, a stream and buffers of the test's own copy of the backend (no core). */
typedef struct gen2_fx {
    ocl_fx f;
    kp_device dev;
    kp_stream s;
} gen2_fx;

static void gen2_open(gen2_fx *g) {
    memset(g, 0, sizeof *g);
    fx_open(&g->f);
    const kp_backend_iface *bi = kp_ocl_backend_iface();
    g->dev.iface = bi, g->dev.backend = g->f.b, g->dev.impl = g->f.d;
    CHECK_OK(bi->device_info(g->f.b, g->f.index, &g->dev.info));
    g->s.device = &g->dev;
    CHECK_OK(bi->stream_create(&g->dev, &g->s.impl));
}

static void gen2_close(gen2_fx *g) {
    kp_ocl_backend_iface()->stream_destroy(&g->s);
    fx_close(&g->f);
}

static kp_buffer gen2_buffer(gen2_fx *g, size_t bytes) {
    kp_buffer b = {&g->dev, NULL, bytes, 0};
    CHECK_OK(kp_ocl_backend_iface()->buffer_alloc(&g->dev, bytes, &b.impl));
    return b;
}

/* y = x in tiles of 64 chunks, each tile reversed, zeros past n: every stage of the ring
 * is read by other work-items than the ones that filled it. */
KP_TEST(opencl_pipeline_stages_in_dynamic_local) {
    gen2_fx g;
    gen2_open(&g);
    const kp_backend_iface *bi = kp_ocl_backend_iface();
    enum { WG = 64, N = WG * 5 + 17, TILES = (N + WG - 1) / WG };
    uint32_t *x = malloc((size_t)N * 16), *y = malloc((size_t)TILES * WG * 16);
    CHECK(x && y);
    for (int i = 0; i < N * 4; i++) x[i] = (uint32_t)kp_test_rand_u64();
    kp_buffer bx = gen2_buffer(&g, (size_t)N * 16), by = gen2_buffer(&g, (size_t)TILES * WG * 16);
    CHECK_OK(bi->buffer_write(&g.s, &bx, 0, x, (size_t)N * 16));
    for (int stages = 2; stages <= 4; stages++) {
        memset(y, 0xab, (size_t)TILES * WG * 16);
        CHECK_OK(bi->buffer_write(&g.s, &by, 0, y, (size_t)TILES * WG * 16));
        char opts[64];
        snprintf(opts, sizeof opts, "-DPS_STAGES=%d -DPS_WG=%d", stages, WG);
        kp_pipeline_selftest_kargs ka = {.n = N, .tiles = TILES};
        kp_gpu_launch l;
        kp_gpu_launch_init(&l, "common/pipeline_selftest.cl", opts, "kp_pipeline_selftest");
        kp_gpu_arg_buffer(&l, &bx), kp_gpu_arg_buffer(&l, &by), kp_gpu_arg_kargs(&l, &ka, sizeof ka);
        l.local[0] = WG, l.local_bytes = (uint32_t)(stages * WG * 16);
        CHECK_OK(kp_ocl_launch(&g.s, &l));
        CHECK_OK(bi->buffer_read(&g.s, &by, 0, y, (size_t)TILES * WG * 16));
        int bad = 0, first = -1;
        for (int t = 0; t < TILES; t++)
            for (int i = 0; i < WG; i++) {
                int c = t * WG + WG - 1 - i;
                for (int w = 0; w < 4; w++) {
                    uint32_t want = c < N ? x[c * 4 + w] : 0u;
                    if (y[(t * WG + i) * 4 + w] != want && bad++ == 0) first = t * WG + i;
                }
            }
        CHECK_MSG(bad == 0, "%d stages: %d words wrong, first in chunk %d", stages, bad, first);
    }
    bi->buffer_free(&bx), bi->buffer_free(&by);
    free(x), free(y);
    gen2_close(&g);
}

/* small integers as 16-bit floats (exact), and RNE rounding of an f32 to bf16 */
static uint16_t wt_bits(int v, int f16) {
    if (f16) {
        if (v == 0) return 0;
        unsigned a = (unsigned)(v < 0 ? -v : v), e = 0;
        while ((a >> (e + 1)) != 0) e++;
        return (uint16_t)((v < 0 ? 0x8000u : 0u) | ((e + 15u) << 10) | (((a << 10) >> e) & 0x3ffu));
    }
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)(u >> 16);
}
static double wt_round_bf16(double x) {
    float f = (float)x;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The wave tile on this device's implementation (PoCL: portable), and with the AMD
 * MFMA 16x16x16 layout emulated (-DKP_WT_EMULATE_MFMA16: 64-lane waves of 32 rows), four
 * 32-lane groups (64 rows), k = 64, all and three of the four 16-k steps, bf16 and f16. Small integers
 * keep every product exact, so the comparison is equality; outputs poisoned (NaN). The
 * rounding of S to P is the dtype's (|S| <= 1024: bf16 rounds, f16 is exact). */
KP_TEST(opencl_wave_tile_selftest_exact) {
    gen2_fx g;
    gen2_open(&g);
    const kp_backend_iface *bi = kp_ocl_backend_iface();
    enum { GROUPS = 4, M = GROUPS * 16, K = 64 };
    static uint16_t a[M * K], bt[16 * K], v[256];
    static int ai[M * K], bi_[16 * K], vi[256];
    static float sout[M * 16], oout[M * 16], rows[M * 2];
    kp_buffer ba = gen2_buffer(&g, sizeof a), bb = gen2_buffer(&g, sizeof bt), bv = gen2_buffer(&g, sizeof v);
    kp_buffer bs = gen2_buffer(&g, sizeof sout), bo = gen2_buffer(&g, sizeof oout), br = gen2_buffer(&g, sizeof rows);
    for (int run = 0; run < 8; run++) {
        const int emu = run / 4, f16 = run / 2 % 2, ksteps = 3 + run % 2;
        for (int i = 0; i < M * K; i++) ai[i] = (int)(kp_test_rand_u64() % 9) - 4, a[i] = wt_bits(ai[i], f16);
        for (int i = 0; i < 16 * K; i++) bi_[i] = (int)(kp_test_rand_u64() % 9) - 4, bt[i] = wt_bits(bi_[i], f16);
        for (int i = 0; i < 256; i++) vi[i] = (int)(kp_test_rand_u64() % 9) - 4, v[i] = wt_bits(vi[i], f16);
        memset(sout, 0xff, sizeof sout), memset(oout, 0xff, sizeof oout), memset(rows, 0xff, sizeof rows);
        CHECK_OK(bi->buffer_write(&g.s, &ba, 0, a, sizeof a));
        CHECK_OK(bi->buffer_write(&g.s, &bb, 0, bt, sizeof bt));
        CHECK_OK(bi->buffer_write(&g.s, &bv, 0, v, sizeof v));
        CHECK_OK(bi->buffer_write(&g.s, &bs, 0, sout, sizeof sout));
        CHECK_OK(bi->buffer_write(&g.s, &bo, 0, oout, sizeof oout));
        CHECK_OK(bi->buffer_write(&g.s, &br, 0, rows, sizeof rows));
        char opts[128];
        snprintf(opts, sizeof opts, "-DKP_DTYPE_%s -DWS_GROUPS=%d -DWS_K=%d%s", f16 ? "F16" : "BF16", GROUPS, K,
                 emu ? " -DKP_WT_EMULATE_MFMA16" : "");
        char tag[32];
        snprintf(tag, sizeof tag, "%s%s", f16 ? "f16" : "bf16", emu ? " (mfma16 layout)" : "");
        kp_wave_selftest_kargs ka = {.ksteps = ksteps};
        kp_gpu_launch l;
        kp_gpu_launch_init(&l, "common/wave_selftest.cl", opts, "kp_wave_selftest");
        kp_gpu_arg_buffer(&l, &ba), kp_gpu_arg_buffer(&l, &bb), kp_gpu_arg_buffer(&l, &bv);
        kp_gpu_arg_buffer(&l, &bs), kp_gpu_arg_buffer(&l, &bo), kp_gpu_arg_buffer(&l, &br);
        kp_gpu_arg_kargs(&l, &ka, sizeof ka);
        l.local[0] = GROUPS * 32, l.local_bytes = (uint32_t)KP_WAVE_SELFTEST_LOCAL_BYTES(GROUPS, K);
        CHECK_OK(kp_ocl_launch(&g.s, &l));
        CHECK_OK(bi->buffer_read(&g.s, &bs, 0, sout, sizeof sout));
        CHECK_OK(bi->buffer_read(&g.s, &bo, 0, oout, sizeof oout));
        CHECK_OK(bi->buffer_read(&g.s, &br, 0, rows, sizeof rows));
        int bad = 0;
        for (int r = 0; r < M; r++) {
            double s[16], mx = -INFINITY, sum = 0.0;
            for (int n = 0; n < 16; n++) {
                s[n] = 0.0;
                for (int k = 0; k < 16 * ksteps; k++) s[n] += (double)ai[r * K + k] * bi_[n * K + k];
                mx = s[n] > mx ? s[n] : mx, sum += s[n];
                if ((double)sout[r * 16 + n] != s[n] && bad++ < 5)
                    CHECK_MSG(0, "%s ksteps %d: S[%d][%d] = %g, want %g", tag, ksteps, r, n,
                              (double)sout[r * 16 + n], s[n]);
            }
            if (((double)rows[2 * r] != mx || (double)rows[2 * r + 1] != sum) && bad++ < 5)
                CHECK_MSG(0, "%s ksteps %d: row %d max, sum %g %g, want %g %g", tag, ksteps, r,
                          (double)rows[2 * r], (double)rows[2 * r + 1], mx, sum);
            for (int n = 0; n < 16; n++) {
                double o = 0.0;
                for (int k = 0; k < 16; k++) o += (f16 ? s[k] : wt_round_bf16(s[k])) * vi[k * 16 + n];
                if ((double)oout[r * 16 + n] != o && bad++ < 5)
                    CHECK_MSG(0, "%s ksteps %d: O[%d][%d] = %g, want %g", tag, ksteps, r, n,
                              (double)oout[r * 16 + n], o);
            }
        }
        CHECK_MSG(bad == 0, "%s ksteps %d: %d wrong", tag, ksteps, bad);
    }
    bi->buffer_free(&ba), bi->buffer_free(&bb), bi->buffer_free(&bv);
    bi->buffer_free(&bs), bi->buffer_free(&bo), bi->buffer_free(&br);
    gen2_close(&g);
}

#endif /* KP_OPENCL_TESTS */
