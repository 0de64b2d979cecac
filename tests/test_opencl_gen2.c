/*
 * tests/test_opencl_gen2.c — the primitives the generation-2 kernels are built on, run
 * through the OpenCL backend's own launch path (the kp_gpu_target every op uses): on
 * PoCL they take the portable implementations, the same kernel code that takes cp.async
 * and mma.sync on NVIDIA.
 *  - the S-stage copy pipeline (kernels/common/kp_async_copy.h) in dynamic local memory
 *    (KP_DYNAMIC_LOCAL, kp_gpu_launch.local_bytes), S = 2, 3, 4.
 */
#include "kp_test.h"

#if !defined(KP_OPENCL_TESTS)
KP_TEST(opencl_pipeline_stages_in_dynamic_local) { KP_SKIP("opencl backend not built"); }
#else

#include "backend.h"
#include "common/selftest_kargs.h"
#include "kp_gpu.h"
#include "opencl_internal.h"
#include "test_opencl.h"

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

#endif /* KP_OPENCL_TESTS */
