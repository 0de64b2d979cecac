/*
 * tests/test_cuda_sm90.c - the sm_90a tier's tile primitives on a Hopper GPU: the
 * self-test kernel (kernels/common/sm90_selftest.cl) loads A and B by TMA through tensor
 * maps built with cuTensorMapEncodeTiled (128-byte swizzle), waits on an mbarrier and
 * computes D = A B^T with wgmma; D is checked against a float64 reference. This is the
 * first thing to pass before any sm_90a op kernel is trusted (ci/gpu-check runs it with
 * the other cuda_ tests). Without libcuda.so.1, a GPU, or an sm_90 device it skips.
 *
 * It talks to the driver directly (dlopen, as the cuda plugin does), not through the
 * plugin, with the driver setup it shares with test_cuda_sm90_e4m3.c (cuda_sm90_driver.h).
 */
#include "kp_test.h"

#if !defined(KP_CUDA_TESTS) || !defined(KPORT_SM90_SELFTEST_CUBIN)
KP_TEST(cuda_sm90_tile_selftest_runs) { KP_SKIP("no sm_90a self-test cubin in this build (nvcc, kernel checks)"); }
KP_TEST(cuda_sm90_attn_tile_selftest_runs) { KP_SKIP("no sm_90a self-test cubin in this build (nvcc, kernel checks)"); }
#else

#include "cuda_sm90_driver.h"

#include <math.h>

#define N 64

static unsigned short bf16_bits(float x) { /* inputs are exact in bf16: truncation is exact */
    unsigned u;
    memcpy(&u, &x, 4);
    return (unsigned short)(u >> 16);
}

/* A [N x N] bf16 matrix in one box. */
static CUresult encode(const sm90_driver *d, CUtensorMap *m, CUdeviceptr p) {
    return sm90_tensor_map(d, m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, p, N, N, N * 2, N, N);
}

KP_TEST(cuda_sm90_tile_selftest_runs) {
    sm90_driver drv;
    sm90_driver_open(&drv);
    void *h = drv.h;
    CUmodule mod;
    CUfunction fn;
    sm90_load_cubin(&drv, KPORT_SM90_SELFTEST_CUBIN, "kp_sm90_selftest", &mod, &fn);

    /* small integers times powers of two: every product and sum is exact in f32 */
    static unsigned short a[N * N], b[N * N];
    static float d[N * N];
    for (int i = 0; i < N * N; ++i) {
        a[i] = bf16_bits((float)((int)(kp_test_rand_u64() % 17) - 8) * 0.25f);
        b[i] = bf16_bits((float)((int)(kp_test_rand_u64() % 17) - 8) * 0.5f);
        d[i] = NAN; /* poison */
    }
    CUdeviceptr da, db, dd;
    CHECK(SYM(h, cuMemAlloc)(&da, sizeof a) == CUDA_SUCCESS);
    CHECK(SYM(h, cuMemAlloc)(&db, sizeof b) == CUDA_SUCCESS);
    CHECK(SYM(h, cuMemAlloc)(&dd, sizeof d) == CUDA_SUCCESS);
    CHECK(SYM(h, cuMemcpyHtoD)(da, a, sizeof a) == CUDA_SUCCESS);
    CHECK(SYM(h, cuMemcpyHtoD)(db, b, sizeof b) == CUDA_SUCCESS);
    CHECK(SYM(h, cuMemcpyHtoD)(dd, d, sizeof d) == CUDA_SUCCESS);
    CUtensorMap ta, tb;
    CHECK(encode(&drv, &ta, da) == CUDA_SUCCESS);
    CHECK(encode(&drv, &tb, db) == CUDA_SUCCESS);
    void *args[] = {&ta, &tb, &dd};
    sm90_run_one_warpgroup(&drv, fn, args, "kp_sm90_selftest");
    CHECK(SYM(h, cuMemcpyDtoH)(d, dd, sizeof d) == CUDA_SUCCESS);

    int bad = 0;
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) {
            double ref = 0;
            for (int k = 0; k < N; ++k) {
                unsigned ua = (unsigned)a[i * N + k] << 16, ub = (unsigned)b[j * N + k] << 16;
                float fa, fb;
                memcpy(&fa, &ua, 4), memcpy(&fb, &ub, 4);
                ref += (double)fa * fb;
            }
            if (!(d[i * N + j] == ref) && bad++ < 5)
                printf("  D[%d][%d] = %g, reference %g\n", i, j, d[i * N + j], ref);
        }
    CHECK_MSG(bad == 0, "%d of %d elements of D = A B^T differ (TMA swizzle, descriptors or the D layout)", bad,
              N * N);
    SYM(h, cuMemFree)(da), SYM(h, cuMemFree)(db), SYM(h, cuMemFree)(dd);
    SYM(h, cuModuleUnload)(mod);
    sm90_driver_close(&drv);
}

static float bf16_value(unsigned short b) {
    unsigned u = (unsigned)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The attention primitives (kernels/common/sm90_attn_selftest.cl, common/kp_tile_sm90_attn.h):
 * S = Q K^T, then O = P V with P = S in bf16 taken from the accumulator registers as the A
 * operand and V [64 kv x 128 d] read MN-major through the transpose bit. Integers in
 * [-2, 2] for Q and K make every S an integer of magnitude <= 256, exact in bf16, and V in
 * quarters keeps O exact in f32: both outputs must equal the float64 reference exactly. */
KP_TEST(cuda_sm90_attn_tile_selftest_runs) {
#ifndef KPORT_SM90_ATTN_SELFTEST_CUBIN
    KP_SKIP("no sm_90a attention self-test cubin in this build");
#else
    enum { D = 128 };
    sm90_driver drv;
    sm90_driver_open(&drv);
    void *h = drv.h;
    CUmodule mod;
    CUfunction fn;
    sm90_load_cubin(&drv, KPORT_SM90_ATTN_SELFTEST_CUBIN, "kp_sm90_attn_selftest", &mod, &fn);

    static unsigned short q[N * N], k[N * N], v[N * D];
    static float s[N * N], o[N * D];
    for (int i = 0; i < N * N; ++i) {
        q[i] = bf16_bits((float)((int)(kp_test_rand_u64() % 5) - 2));
        k[i] = bf16_bits((float)((int)(kp_test_rand_u64() % 5) - 2));
        s[i] = NAN;
    }
    for (int i = 0; i < N * D; ++i) {
        v[i] = bf16_bits((float)((int)(kp_test_rand_u64() % 17) - 8) * 0.25f);
        o[i] = NAN;
    }
    CUdeviceptr dq, dk, dv, ds, dout;
    CHECK(SYM(h, cuMemAlloc)(&dq, sizeof q) == CUDA_SUCCESS);
    CHECK(SYM(h, cuMemAlloc)(&dk, sizeof k) == CUDA_SUCCESS);
    CHECK(SYM(h, cuMemAlloc)(&dv, sizeof v) == CUDA_SUCCESS);
    CHECK(SYM(h, cuMemAlloc)(&ds, sizeof s) == CUDA_SUCCESS);
    CHECK(SYM(h, cuMemAlloc)(&dout, sizeof o) == CUDA_SUCCESS);
    CHECK(SYM(h, cuMemcpyHtoD)(dq, q, sizeof q) == CUDA_SUCCESS);
    CHECK(SYM(h, cuMemcpyHtoD)(dk, k, sizeof k) == CUDA_SUCCESS);
    CHECK(SYM(h, cuMemcpyHtoD)(dv, v, sizeof v) == CUDA_SUCCESS);
    CHECK(SYM(h, cuMemcpyHtoD)(ds, s, sizeof s) == CUDA_SUCCESS);
    CHECK(SYM(h, cuMemcpyHtoD)(dout, o, sizeof o) == CUDA_SUCCESS);
    CUtensorMap tq, tk, tv;
    CHECK(encode(&drv, &tq, dq) == CUDA_SUCCESS);
    CHECK(encode(&drv, &tk, dk) == CUDA_SUCCESS);
    /* V [N kv x D] read in boxes of 64 d-columns (the 128-byte swizzle's span) */
    CHECK(sm90_tensor_map(&drv, &tv, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, dv, D, N, D * 2, 64, N) == CUDA_SUCCESS);
    void *args[] = {&tq, &tk, &tv, &ds, &dout};
    sm90_run_one_warpgroup(&drv, fn, args, "kp_sm90_attn_selftest");
    CHECK(SYM(h, cuMemcpyDtoH)(s, ds, sizeof s) == CUDA_SUCCESS);
    CHECK(SYM(h, cuMemcpyDtoH)(o, dout, sizeof o) == CUDA_SUCCESS);

    static double sref[N * N];
    int bad_s = 0, bad_o = 0;
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) {
            double acc = 0;
            for (int c = 0; c < N; ++c) acc += (double)bf16_value(q[i * N + c]) * bf16_value(k[j * N + c]);
            sref[i * N + j] = acc; /* |acc| <= 256, an integer: exact in bf16 */
            if (!(s[i * N + j] == acc) && bad_s++ < 5) printf("  S[%d][%d] = %g, reference %g\n", i, j, s[i * N + j], acc);
        }
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < D; ++j) {
            double acc = 0;
            for (int c = 0; c < N; ++c) acc += sref[i * N + c] * bf16_value(v[c * D + j]);
            if (!(o[i * D + j] == acc) && bad_o++ < 5) printf("  O[%d][%d] = %g, reference %g\n", i, j, o[i * D + j], acc);
        }
    CHECK_MSG(bad_s == 0, "%d of %d elements of S = Q K^T differ", bad_s, N * N);
    CHECK_MSG(bad_o == 0, "%d of %d elements of O = P V differ (P's A-fragment reuse, V's MN-major descriptor)", bad_o,
              N * D);
    SYM(h, cuMemFree)(dq), SYM(h, cuMemFree)(dk), SYM(h, cuMemFree)(dv), SYM(h, cuMemFree)(ds), SYM(h, cuMemFree)(dout);
    SYM(h, cuModuleUnload)(mod);
    sm90_driver_close(&drv);
#endif
}
#endif
