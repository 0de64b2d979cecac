/*
 * tests/test_cuda_sm90_e4m3.c - the sm_90a tier's e4m3 wgmma (kernels/common/
 * kp_tile_sm90_e4m3.h) through its self-test kernel (kernels/common/sm90_e4m3_selftest.cl),
 * one cubin per wgmma width N = 64, 128, 256:
 *  - cuda_sm90_e4m3_sass_holds (no GPU): each cubin's SASS holds the e4m3 wgmma
 *    (QGMMA.64xNx32.F32.E4M3.E4M3), TMA loads and mbarrier waits, with no stack or local
 *    memory (backends/cuda/check_kernels.py --cubin); and the check fails on a listing
 *    whose wgmma is bf16's;
 *  - cuda_sm90_e4m3_selftest_runs (an sm_90 GPU): the kernel's result against float64,
 *    element by element:
 *        out[r][n] = sum over K slices s (2 x 128) of a_scale[s][r] w_scale[s] (A_s B_s^T)[r][n]
 *    i.e. each slice's e4m3 product in a fresh accumulator, promoted with its per-row
 *    activation scale and its weight scale (the W8A8 GEMM's arithmetic). The inputs make
 *    every step exact: A and B are small integers (|v| <= 4) times 2^-2 and 2^-1, exact in
 *    e4m3; a slice's sum of 128 products is a multiple of 2^-3 below 2^8, so even an
 *    accumulator that keeps only ~14 bits (Hopper's FP8 tensor cores) holds it exactly;
 *    scales are powers of two in [2^-2, 2^2], so the promoted total needs < 24 bits.
 *    The output is poisoned (NaN) and fenced by guard words the kernel must not touch.
 * It talks to the driver directly (dlopen), with the setup tests/test_cuda_sm90.c shares
 * (cuda_sm90_driver.h). Without
 * libcuda.so.1, a GPU, or an sm_90 device it skips, saying which.
 */
#include "kp_test.h"

#if !defined(KP_CUDA_TESTS) || !defined(KPORT_SM90_E4M3_SELFTEST_DIR)
KP_TEST(cuda_sm90_e4m3_sass_holds) { KP_SKIP("no sm_90a e4m3 self-test cubins in this build (no nvcc)"); }
KP_TEST(cuda_sm90_e4m3_selftest_runs) { KP_SKIP("no sm_90a e4m3 self-test cubins in this build (no nvcc)"); }
#else

#include "cuda_sm90_driver.h"
#include "ref_moe.h" /* ref_fp8_e4m3 */

#include <math.h>
#include <unistd.h>

static const int widths[] = {64, 128, 256};

#define M 64
#define K 256      /* two slices */
#define SLICE 128  /* a 128-byte swizzle span of e4m3 */
#define GUARD 64   /* guard floats on each side of out */
#define GUARD_WORD 0x7fa5a5a5u

static void cubin_path(char *path, size_t n, int width) {
    snprintf(path, n, "%s/sm90_e4m3_selftest_n%d.cubin", KPORT_SM90_E4M3_SELFTEST_DIR, width);
}

/* ---- SASS (no GPU) ------------------------------------------------------------- */

static int run_check(const char *args, char *out, size_t n) {
    return kp_test_run_python(KPORT_CUDA_CHECK_SCRIPT, args, out, n);
}

KP_TEST(cuda_sm90_e4m3_sass_holds) {
    static char out[8192];
    char path[1024], args[1200], want[128];
    for (size_t i = 0; i < sizeof widths / sizeof *widths; ++i) {
        cubin_path(path, sizeof path, widths[i]);
        snprintf(args, sizeof args, "--cubin '%s'", path);
        int rc = run_check(args, out, sizeof out);
        CHECK_MSG(rc == 0, "n%d: check_kernels.py exited %d:\n%s", widths[i], rc, out);
        snprintf(want, sizeof want, "1 kernels of sm90_e4m3_selftest_n%d.cubin: 0 problems", widths[i]);
        CHECK_STR_CONTAINS(out, want);
    }
    /* an e4m3-named kernel must hold the e4m3 wgmma, not a 16-bit one */
    static const struct {
        const char *what, *sass, *expect; /* expect NULL: passes */
    } listings[] = {
        {"control",
         "        /*07b0*/   QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR8], RZ, !UPT ;\n"
         "        /*04f0*/   UTMALDG.2D [UR8], [UR18] ;\n"
         "        /*0660*/   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR6], R4 ;\n", NULL},
        {"bf16 wgmma in an e4m3 kernel",
         "        /*0560*/   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR8], R24 ;\n"
         "        /*04f0*/   UTMALDG.2D [UR8], [UR18] ;\n"
         "        /*0660*/   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR6], R4 ;\n", "has no QGMMA"},
        {"e5m2 operands",
         "        /*07b0*/   QGMMA.64x128x32.F32.E5M2.E5M2 R24, gdesc[UR8], RZ, !UPT ;\n"
         "        /*04f0*/   UTMALDG.2D [UR8], [UR18] ;\n"
         "        /*0660*/   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR6], R4 ;\n", "has no QGMMA"},
    };
    char dir[] = "/tmp/kport-sm90e4-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/sass.txt", dir);
    for (size_t i = 0; i < sizeof listings / sizeof *listings; ++i) {
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        fputs(listings[i].sass, f);
        fclose(f);
        snprintf(args, sizeof args, "--sass '%s' --kernel kp_sm90_e4m3_selftest_n128", path);
        int rc = run_check(args, out, sizeof out);
        CHECK_MSG(rc == (listings[i].expect ? 1 : 0), "%s: exit %d:\n%s", listings[i].what, rc, out);
        if (listings[i].expect) CHECK_STR_CONTAINS(out, listings[i].expect);
    }
    unlink(path);
    rmdir(dir);
}

/* ---- on the GPU ------------------------------------------------------------------ */

/* The e4m3 byte of v (exactly representable), found through the reference decoder. */
static unsigned char e4m3_of(double v) {
    for (int b = 0; b < 256; ++b)
        if (b != 0x7f && b != 0xff && ref_fp8_e4m3((unsigned char)b) == v) return (unsigned char)b;
    kp_test_fail(__FILE__, __LINE__, "%g is not an e4m3 value", v);
}

/* A row-major [rows x K] uint8 matrix as TMA boxes of {SLICE, rows}, 128-byte swizzle. */
static CUresult encode(const sm90_driver *d, CUtensorMap *m, CUdeviceptr p, int rows) {
    return sm90_tensor_map(d, m, CU_TENSOR_MAP_DATA_TYPE_UINT8, p, K, (uint64_t)rows, K, SLICE, (uint32_t)rows);
}

/* One width: loads its cubin, runs it once on fresh inputs, compares every element. */
static void run_width(const sm90_driver *drv, int n) {
    void *h = drv->h;
    char path[1024];
    cubin_path(path, sizeof path, n);
    CUmodule mod;
    CUfunction fn;
    char name[64];
    snprintf(name, sizeof name, "kp_sm90_e4m3_selftest_n%d", n);
    sm90_load_cubin(drv, path, name, &mod, &fn);

    static unsigned char a[M * K], b[256 * K];
    static double av[M * K], bv[256 * K];
    static float a_scale[2 * M], w_scale[2], out[GUARD + M * 256 + GUARD];
    unsigned char ea[9], eb[9]; /* the bytes of (v - 4) / 4 and (v - 4) / 2, v = 0..8 */
    for (int v = 0; v < 9; ++v) ea[v] = e4m3_of((v - 4) * 0.25), eb[v] = e4m3_of((v - 4) * 0.5);
    for (int i = 0; i < M * K; ++i) {
        int v = (int)(kp_test_rand_u64() % 9);
        av[i] = (v - 4) * 0.25, a[i] = ea[v];
    }
    for (int i = 0; i < n * K; ++i) {
        int v = (int)(kp_test_rand_u64() % 9);
        bv[i] = (v - 4) * 0.5, b[i] = eb[v];
    }
    for (int i = 0; i < 2 * M; ++i) a_scale[i] = ldexpf(1.0f, (int)(kp_test_rand_u64() % 5) - 2);
    w_scale[0] = 0.5f, w_scale[1] = 4.0f;
    const size_t out_n = GUARD + (size_t)M * n + GUARD;
    for (size_t i = 0; i < out_n; ++i) {
        unsigned u = i < GUARD || i >= GUARD + (size_t)M * n ? GUARD_WORD : 0x7fc00000u; /* guard / NaN */
        memcpy(&out[i], &u, 4);
    }

    CUdeviceptr da, db, ds, dw, dout;
    CU_OK(SYM(h, cuMemAlloc)(&da, sizeof a));
    CU_OK(SYM(h, cuMemAlloc)(&db, (size_t)n * K));
    CU_OK(SYM(h, cuMemAlloc)(&ds, sizeof a_scale));
    CU_OK(SYM(h, cuMemAlloc)(&dw, sizeof w_scale));
    CU_OK(SYM(h, cuMemAlloc)(&dout, out_n * 4));
    CU_OK(SYM(h, cuMemcpyHtoD)(da, a, sizeof a));
    CU_OK(SYM(h, cuMemcpyHtoD)(db, b, (size_t)n * K));
    CU_OK(SYM(h, cuMemcpyHtoD)(ds, a_scale, sizeof a_scale));
    CU_OK(SYM(h, cuMemcpyHtoD)(dw, w_scale, sizeof w_scale));
    CU_OK(SYM(h, cuMemcpyHtoD)(dout, out, out_n * 4));
    CUtensorMap ta, tb;
    CU_OK(encode(drv, &ta, da, M));
    CU_OK(encode(drv, &tb, db, n));
    CUdeviceptr dout_body = dout + GUARD * 4;
    void *args[] = {&ta, &tb, &ds, &dw, &dout_body};
    sm90_run_one_warpgroup(drv, fn, args, name);
    CU_OK(SYM(h, cuMemcpyDtoH)(out, dout, out_n * 4));

    for (size_t i = 0; i < out_n; ++i)
        if (i < GUARD || i >= GUARD + (size_t)M * n) {
            unsigned u;
            memcpy(&u, &out[i], 4);
            CHECK_MSG(u == GUARD_WORD, "n%d: guard word %zu overwritten (0x%08x)", n, i, u);
        }
    int bad = 0;
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < n; ++j) {
            double ref = 0;
            for (int s = 0; s < 2; ++s) {
                double dot = 0;
                for (int k = s * SLICE; k < (s + 1) * SLICE; ++k) dot += av[i * K + k] * bv[j * K + k];
                ref += (double)a_scale[s * M + i] * w_scale[s] * dot;
            }
            const float got = out[GUARD + i * n + j];
            if (!(got == ref) && bad++ < 5) printf("  n%d: out[%d][%d] = %g, reference %g\n", n, i, j, got, ref);
        }
    CHECK_MSG(bad == 0,
              "n%d: %d of %d elements differ (TMA swizzle, k32 descriptor steps, the D layout, or the promotion)", n,
              bad, M * n);
    SYM(h, cuMemFree)(da), SYM(h, cuMemFree)(db), SYM(h, cuMemFree)(ds), SYM(h, cuMemFree)(dw);
    SYM(h, cuMemFree)(dout);
    SYM(h, cuModuleUnload)(mod);
}

KP_TEST(cuda_sm90_e4m3_selftest_runs) {
    sm90_driver drv;
    sm90_driver_open(&drv);
    for (size_t i = 0; i < sizeof widths / sizeof *widths; ++i) run_width(&drv, widths[i]);
    sm90_driver_close(&drv);
}
#endif
