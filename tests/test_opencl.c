/*
 * tests/test_opencl.c — the OpenCL backend and the kernel dialect, on PoCL in CI.
 *
 * Two ways in:
 *  - through libkport (kp_init loads libkport-opencl.so from KPORT_PLUGIN_PATH):
 *    listing, buffers, wrap;
 *  - through the backend's internal interface (opencl_program.h), linked into this
 *    binary from the same objects the plugin is made of (kport_opencl_impl, see
 *    backends/opencl/meson.build), with a small host of our own: kernel builds, the
 *    memory and disk caches, build logs, the dialect self-test kernel.
 * A second process is this same binary re-executed through /proc/self/exe with
 * KP_OCL_TEST_CHILD set: a constructor below runs the child's part and exits before
 * the runner's main.
 *
 * Every test gets fresh KPORT_CACHE_DIR and POCL_CACHE_DIR under a mkdtemp dir, so
 * "first use" really compiles (PoCL keeps a cache of its own).
 */
#include "kp_test.h"

#if !defined(KP_OPENCL_TESTS)

KP_TEST(opencl_backend_listed) { KP_SKIP("opencl backend not built (meson -Dopencl=enabled needs the ICD loader)"); }
KP_TEST(opencl_selftest_f32) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_selftest_f16) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_selftest_bf16) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_selftest_wg96) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_no_fp16_device) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_cache_miss_then_hit) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_cache_second_process) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_cache_truncated) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_cache_flipped_byte) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_cache_entry_fifo) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_cache_entry_symlink) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_cache_entry_directory) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_cache_bad_entry_not_removable) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_cache_unloadable_binary) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_kargs_layout_checked_on_the_device) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_build_failure_log) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_build_time) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_buffer_roundtrip) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_buffer_wrap) { KP_SKIP("opencl backend not built"); }
KP_TEST(opencl_stream_wrap) { KP_SKIP("opencl backend not built"); }

#else

#include "backend.h"
#include "gpu_cache.h"
#include "opencl_program.h"
#include "test_opencl.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* A host of our own for the internal interface                              */
/* ------------------------------------------------------------------------ */

static char g_err[65536];

static kp_status th_set_error(kp_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return st;
}

static kp_status th_add_context(kp_status st, const char *fmt, ...) {
    char ctx[1024], old[sizeof g_err];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    snprintf(old, sizeof old, "%s", g_err);
    snprintf(g_err, sizeof g_err, "%s: %.*s", ctx, (int)(sizeof g_err - sizeof ctx - 4), old);
    return st;
}

char g_log[16384]; /* every log line of this test process, newline-separated (truncated) */

static void th_log(const char *fmt, ...) {
    va_list ap;
    size_t used = strlen(g_log);
    if (used + 2 < sizeof g_log) {
        va_start(ap, fmt);
        vsnprintf(g_log + used, sizeof g_log - used - 1, fmt, ap);
        va_end(ap);
        strcat(g_log, "\n");
    }
    if (!getenv("KPORT_LOG")) return;
    va_start(ap, fmt);
    fprintf(stderr, "[kport] ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static const char *th_cache_dir(void) { return getenv("KPORT_CACHE_DIR"); }

static int64_t th_tuning_get(const kp_device_info *dev, const char *kernel, const char *param, int64_t def) {
    (void)dev, (void)kernel, (void)param;
    return def;
}

static const kp_host_services g_test_host = {
    .abi_version = KP_BACKEND_ABI_VERSION,
    .set_error = th_set_error,
    .add_context = th_add_context,
    .log = th_log,
    .cache_dir = th_cache_dir,
    .tuning_get = th_tuning_get,
};

/* ------------------------------------------------------------------------ */
/* Fixture: temp dirs, the backend, one device                               */
/* ------------------------------------------------------------------------ */


static void fx_dirs(ocl_fx *f) {
    snprintf(f->root, sizeof f->root, "/tmp/kport-ocl-test-XXXXXX");
    CHECK_MSG(mkdtemp(f->root) != NULL, "mkdtemp: %s", strerror(errno));
    char pocl[300];
    snprintf(f->cache, sizeof f->cache, "%s/kport", f->root);
    snprintf(pocl, sizeof pocl, "%s/pocl", f->root);
    CHECK(mkdir(f->cache, 0700) == 0 && mkdir(pocl, 0700) == 0);
    setenv("KPORT_CACHE_DIR", f->cache, 1);
    setenv("POCL_CACHE_DIR", pocl, 1);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void fx_remove_dirs(ocl_fx *f) {
    if (f->root[0]) nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void fx_backend(ocl_fx *f) {
    char reason[KP_REASON_MAX] = "";
    kp_status st = kp_ocl_backend_iface()->init(&g_test_host, NULL, &f->b, reason, sizeof reason);
    if (st != KP_OK) KP_SKIP("opencl: %s", reason);
    if (kp_ocl_backend_iface()->device_count(f->b) == 0) KP_SKIP("opencl: no usable device");
}

void fx_device_open(ocl_fx *f, int index) {
    void *impl = NULL;
    kp_status st = kp_ocl_backend_iface()->device_open(f->b, index, &impl);
    CHECK_MSG(st == KP_OK, "device_open(%d): %s", index, g_err);
    f->d = impl;
    f->index = index;
}

void fx_device_close(ocl_fx *f) {
    kp_ocl_backend_iface()->device_close(f->d);
    f->d = NULL;
}

/* Fresh dirs, the backend, device 0 (or the one KP_OCL_TEST_DEVICE names). */
void fx_open(ocl_fx *f) {
    memset(f, 0, sizeof *f);
    fx_dirs(f);
    fx_backend(f);
    const char *dev = getenv("KP_OCL_TEST_DEVICE");
    fx_device_open(f, dev ? atoi(dev) : 0);
}

void fx_close(ocl_fx *f) {
    if (f->d) fx_device_close(f);
    kp_ocl_backend_iface()->shutdown(f->b);
    fx_remove_dirs(f);
}

const char *origin_name(kp_ocl_origin o) {
    return o == KP_OCL_FROM_MEMORY ? "memory" : o == KP_OCL_FROM_DISK ? "disk" : "source";
}

/* ------------------------------------------------------------------------ */
/* The dialect self-test kernel vs a float64 reference                       */
/* ------------------------------------------------------------------------ */


const char *st_define(st_dtype t) {
    return t == ST_F16 ? "-DKP_DTYPE_F16" : t == ST_BF16 ? "-DKP_DTYPE_BF16" : "-DKP_DTYPE_F32";
}
static size_t st_size(st_dtype t) { return t == ST_F32 ? 4 : 2; }

static double bf16_to_double(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t double_to_bf16(double d) { /* round to nearest even, finite inputs */
    float f = (float)d;
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static double f16_to_double(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

/* Exact for the values used here (|x| < 4): f16 has 11 significant bits. */
static uint16_t double_to_f16(double d) {
    uint16_t best = 0;
    double best_err = INFINITY;
    int sign = d < 0;
    double a = fabs(d);
    int e;
    frexp(a, &e); /* a = f * 2^e, f in [0.5, 1) */
    for (int de = -1; de <= 1; ++de) {
        int exp = e - 1 + de + 15;
        if (exp < 1 || exp > 30) continue;
        double m = a / ldexp(1, e - 1 + de) - 1.0;
        long mi = lround(m * 1024);
        for (long k = mi - 1; k <= mi + 1; ++k) {
            if (k < 0 || k > 1023) continue;
            uint16_t h = (uint16_t)((exp << 10) | k);
            double err = fabs(f16_to_double(h) - a);
            if (err < best_err || (err == best_err && !(h & 1))) best = h, best_err = err;
        }
    }
    return (uint16_t)(best | (sign ? 0x8000 : 0));
}

/* Stores v in the dtype; returns the value actually stored (the reference's input). */
static double st_put(st_dtype t, void *buf, size_t i, double v) {
    if (t == ST_F32) {
        float f = (float)v;
        ((float *)buf)[i] = f;
        return f;
    }
    uint16_t h = t == ST_F16 ? double_to_f16(v) : double_to_bf16(v);
    ((uint16_t *)buf)[i] = h;
    return t == ST_F16 ? f16_to_double(h) : bf16_to_double(h);
}

static double st_get(st_dtype t, const void *buf, size_t i) {
    if (t == ST_F32) return ((const float *)buf)[i];
    uint16_t h = ((const uint16_t *)buf)[i];
    return t == ST_F16 ? f16_to_double(h) : bf16_to_double(h);
}

/* The MMA's operands as the kernel sees them: f32 inputs are rounded to bf16. */
static double st_mma_operand(st_dtype t, double stored) {
    return t == ST_F32 ? bf16_to_double(double_to_bf16(stored)) : stored;
}

static cl_mem mk_buf(kp_ocl_device *d, size_t bytes, const void *init) {
    cl_int err = CL_SUCCESS;
    cl_mem m = clCreateBuffer(d->context, CL_MEM_READ_WRITE | (init ? CL_MEM_COPY_HOST_PTR : 0), bytes,
                              (void *)init, &err);
    CHECK_MSG(err == CL_SUCCESS, "clCreateBuffer(%zu): %s", bytes, kp_ocl_error_name(err));
    return m;
}

#define CHECK_CL(expr)                                                                   \
    do {                                                                                 \
        cl_int e_ = (expr);                                                              \
        CHECK_MSG(e_ == CL_SUCCESS, "%s -> %s (%d)", #expr, kp_ocl_error_name(e_), (int)e_); \
    } while (0)

/* Builds (or fetches) the self-test with exactly opts (wg must be the kernel's
 * KP_SELFTEST_WG), runs it on n items, checks every output against float64. info:
 * the build's, may be NULL. */
void run_selftest_opts(kp_ocl_device *d, st_dtype t, int n, int wg, const char *opts,
                              kp_ocl_build_info *info) {
    cl_kernel k = NULL;
    kp_status st = kp_ocl_kernel_create(d, KP_OCL_SRC_COMMON_DIALECT_SELFTEST, opts, "kp_dialect_selftest", &k, info);
    CHECK_MSG(st == KP_OK, "kernel_create: %s", g_err);

    int groups = (n + wg - 1) / wg;
    size_t es = st_size(t);
    unsigned char *x = malloc((size_t)n * es), *y = malloc((size_t)n * es);
    unsigned char a[256 * 4], bt[256 * 4];
    double *xd = malloc((size_t)n * sizeof *xd), ad[256], bd[256];
    float *rev = malloc((size_t)n * sizeof *rev), *stats = malloc((size_t)groups * 2 * sizeof *stats), c[256];
    CHECK(x && y && xd && rev && stats);
    for (int i = 0; i < n; ++i) xd[i] = st_put(t, x, (size_t)i, kp_test_rand_uniform(-2.0, 2.0));
    for (int i = 0; i < 256; ++i) {
        ad[i] = st_mma_operand(t, st_put(t, a, (size_t)i, kp_test_rand_uniform(-1.0, 1.0)));
        bd[i] = st_mma_operand(t, st_put(t, bt, (size_t)i, kp_test_rand_uniform(-1.0, 1.0)));
    }
    float zero = 0.0f;
    int izero = 0;
    cl_mem mx = mk_buf(d, (size_t)n * es, x), my = mk_buf(d, (size_t)n * es, NULL);
    cl_mem mrev = mk_buf(d, (size_t)n * 4, NULL), mstats = mk_buf(d, (size_t)groups * 8, NULL);
    cl_mem mtotal = mk_buf(d, 4, &zero), mcount = mk_buf(d, 4, &izero);
    cl_mem ma = mk_buf(d, 256 * es, a), mb = mk_buf(d, 256 * es, bt), mc = mk_buf(d, 256 * 4, NULL);
    cl_mem args[] = {mx, NULL, my, mrev, mstats, mtotal, mcount, ma, mb, mc};
    for (cl_uint i = 0; i < 10; ++i) {
        if (i == 1) CHECK_CL(clSetKernelArg(k, 1, sizeof n, &n));
        else CHECK_CL(clSetKernelArg(k, i, sizeof(cl_mem), &args[i]));
    }
    cl_int err = CL_SUCCESS;
    cl_command_queue q = clCreateCommandQueue(d->context, d->desc.id, 0, &err);
    CHECK_CL(err);
    size_t global = (size_t)groups * (size_t)wg, local = (size_t)wg;
    CHECK_CL(clEnqueueNDRangeKernel(q, k, 1, NULL, &global, &local, 0, NULL, NULL));
    float total = 0;
    int count = 0;
    CHECK_CL(clEnqueueReadBuffer(q, my, CL_TRUE, 0, (size_t)n * es, y, 0, NULL, NULL));
    CHECK_CL(clEnqueueReadBuffer(q, mrev, CL_TRUE, 0, (size_t)n * 4, rev, 0, NULL, NULL));
    CHECK_CL(clEnqueueReadBuffer(q, mstats, CL_TRUE, 0, (size_t)groups * 8, stats, 0, NULL, NULL));
    CHECK_CL(clEnqueueReadBuffer(q, mtotal, CL_TRUE, 0, 4, &total, 0, NULL, NULL));
    CHECK_CL(clEnqueueReadBuffer(q, mcount, CL_TRUE, 0, 4, &count, 0, NULL, NULL));
    CHECK_CL(clEnqueueReadBuffer(q, mc, CL_TRUE, 0, sizeof c, c, 0, NULL, NULL));

    /* load -> f32 -> store: one rounding in the storage dtype (half an ulp, relative). */
    double ulp = t == ST_F32 ? 0x1p-23 : t == ST_F16 ? 0x1p-10 : 0x1p-7;
    for (int i = 0; i < n; ++i) {
        double ref = 1.5 * xd[i] - 0.25, got = st_get(t, y, (size_t)i);
        CHECK_MSG(fabs(got - ref) <= 0.5 * ulp * fabs(ref) + 1e-7, "y[%d] = %.9g, expected %.9g", i, got, ref);
    }
    /* local-memory exchange: exact */
    for (int i = 0; i < n; ++i) {
        int g = i / wg, m = g * wg + (wg - 1 - i % wg);
        double ref = m < n ? xd[m] : 0.0;
        CHECK_MSG(rev[i] == ref, "rev[%d] = %.9g, expected %.9g", i, rev[i], ref);
    }
    /* reductions: max exact; sums within f32 accumulation error */
    double all = 0, all_abs = 0;
    for (int g = 0; g < groups; ++g) {
        double s = 0, sa = 0, mxv = -INFINITY;
        for (int i = g * wg; i < n && i < (g + 1) * wg; ++i) s += xd[i], sa += fabs(xd[i]), mxv = fmax(mxv, xd[i]);
        all += s, all_abs += sa;
        CHECK_MSG(fabs(stats[2 * g] - s) <= 1e-6 * sa + 1e-6, "group %d sum %.9g, expected %.9g", g, stats[2 * g], s);
        CHECK_MSG(stats[2 * g + 1] == mxv, "group %d max %.9g, expected %.9g", g, stats[2 * g + 1], mxv);
    }
    CHECK_MSG(fabs(total - all) <= 1e-6 * all_abs + 1e-5, "atomic total %.9g, expected %.9g", total, all);
    CHECK_INT_EQ(count, n);
    /* tile-MMA: products of 16-bit floats are exact in f32; only the sum rounds */
    for (int m = 0; m < 16; ++m)
        for (int j = 0; j < 16; ++j) {
            double ref = 0, mag = 0;
            for (int kk = 0; kk < 16; ++kk) ref += ad[m * 16 + kk] * bd[j * 16 + kk], mag += fabs(ad[m * 16 + kk] * bd[j * 16 + kk]);
            CHECK_MSG(fabs(c[m * 16 + j] - ref) <= 1e-6 * mag + 1e-7, "mma c[%d][%d] = %.9g, expected %.9g", m, j,
                      c[m * 16 + j], ref);
        }

    cl_mem all_m[] = {mx, my, mrev, mstats, mtotal, mcount, ma, mb, mc};
    for (size_t i = 0; i < sizeof all_m / sizeof all_m[0]; ++i) clReleaseMemObject(all_m[i]);
    clReleaseCommandQueue(q);
    clReleaseKernel(k);
    free(x), free(y), free(xd), free(rev), free(stats);
}

/* As run_selftest_opts with the dtype's define, KP_SELFTEST_WG=wg and extra ("" for none). */
static void run_selftest(kp_ocl_device *d, st_dtype t, int n, int wg, const char *extra) {
    char opts[256];
    snprintf(opts, sizeof opts, "%s -DKP_SELFTEST_WG=%d%s%s", st_define(t), wg, extra[0] ? " " : "", extra);
    run_selftest_opts(d, t, n, wg, opts, NULL);
}

static void selftest_case(st_dtype t, int wg) {
    ocl_fx f;
    fx_open(&f);
    for (int rep = 0; rep < 3; ++rep) /* repeated: PoCL once raced here (kp_dialect.h, KP_FN) */
        run_selftest(f.d, t, 1000, wg, ""); /* 1000: the last group is partial */
    run_selftest(f.d, t, 37, wg, "");   /* fewer items than one group */
    fx_close(&f);
}

KP_TEST(opencl_selftest_f32) { selftest_case(ST_F32, 64); }
KP_TEST(opencl_selftest_f16) { selftest_case(ST_F16, 64); }
KP_TEST(opencl_selftest_bf16) { selftest_case(ST_BF16, 64); }
/* 96: not a power of two (the tree's odd levels) and three warps on NVIDIA. */
KP_TEST(opencl_selftest_wg96) { selftest_case(ST_BF16, 96); }

/* A device without cl_khr_fp16 (PoCL, NVIDIA) says so, and f16 still works: the
 * dialect only touches half through vload_half/vstore_half. */
KP_TEST(opencl_no_fp16_device) {
    ocl_fx f;
    memset(&f, 0, sizeof f);
    fx_dirs(&f);
    fx_backend(&f);
    int found = -1;
    for (int i = 0; i < f.b->device_count && found < 0; ++i) {
        char ext[8192] = "";
        clGetDeviceInfo(f.b->devices[i].id, CL_DEVICE_EXTENSIONS, sizeof ext - 1, ext, NULL);
        if (!strstr(ext, "cl_khr_fp16")) found = i;
        else CHECK_MSG(f.b->devices[i].info.caps & KP_CAP_F16, "%s has cl_khr_fp16 but no KP_CAP_F16",
                       f.b->devices[i].info.name);
    }
    if (found < 0) KP_SKIP("every OpenCL device here has cl_khr_fp16");
    kp_device_info info;
    CHECK_OK(kp_ocl_backend_iface()->device_info(f.b, found, &info));
    CHECK_MSG(!(info.caps & KP_CAP_F16), "%s lacks cl_khr_fp16 but reports KP_CAP_F16", info.name);
    fx_device_open(&f, found);
    run_selftest(f.d, ST_F16, 1000, 64, "");
    fx_close(&f);
}

/* ------------------------------------------------------------------------ */
/* Caches                                                                    */
/* ------------------------------------------------------------------------ */

kp_ocl_build_info build_selftest(kp_ocl_device *d, const char *opts) {
    kp_ocl_build_info info;
    cl_program p = NULL;
    kp_status st = kp_ocl_program_get(d, &kp_ocl_sources[KP_OCL_SRC_COMMON_DIALECT_SELFTEST], opts, &p, &info);
    CHECK_MSG(st == KP_OK && p, "program_get(%s): %s", opts, g_err);
    return info;
}

int file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int)st.st_size : -1;
}

KP_TEST(opencl_cache_miss_then_hit) {
    ocl_fx f;
    fx_open(&f);
    kp_ocl_build_info a = build_selftest(f.d, "-DKP_DTYPE_F32");
    CHECK_STR_EQ(origin_name(a.origin), "source");
    CHECK_MSG(file_size(a.cache_path) > 40, "no cache entry at %s", a.cache_path);
    CHECK_MSG(strncmp(a.cache_path, f.cache, strlen(f.cache)) == 0, "%s is not under %s", a.cache_path, f.cache);
    kp_ocl_build_info b = build_selftest(f.d, "-DKP_DTYPE_F32");
    CHECK_STR_EQ(origin_name(b.origin), "memory");
    kp_ocl_build_info other = build_selftest(f.d, "-DKP_DTYPE_BF16"); /* other options: another entry */
    CHECK_STR_EQ(origin_name(other.origin), "source");
    CHECK(other.key != a.key && strcmp(other.cache_path, a.cache_path) != 0);

    fx_device_close(&f); /* a new device has an empty memory cache: the disk serves it */
    fx_device_open(&f, f.index);
    kp_ocl_build_info c = build_selftest(f.d, "-DKP_DTYPE_F32");
    CHECK_STR_EQ(origin_name(c.origin), "disk");
    CHECK_INT_EQ(c.key, a.key);
    kp_ocl_cache_stats s = kp_ocl_cache_stats_get(f.d);
    CHECK_INT_EQ(s.disk_hits, 1);
    CHECK_INT_EQ(s.source_builds, 0);
    run_selftest(f.d, ST_F32, 300, 64, ""); /* the cached binary computes the same */

    /* the directory holds the entries and no temporary file */
    int entries = 0, temps = 0;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls -A %s", f.cache);
    FILE *ls = popen(cmd, "r");
    char line[512];
    while (ls && fgets(line, sizeof line, ls)) {
        if (strncmp(line, "opencl-", 7) == 0) entries++;
        else temps++;
    }
    if (ls) pclose(ls);
    CHECK_INT_EQ(temps, 0);
    CHECK(entries >= 2);
    fx_close(&f);
}

/* ---- the child process: KP_OCL_TEST_CHILD=<device index> -------------------- */
/* Builds the f32 self-test with the inherited KPORT_CACHE_DIR, runs it once, prints
 * "origin=<memory|disk|source> build_ms=<x> first_run_ms=<y>" and exits. */

static double mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int child_main(int index) {
    kp_backend_state *b = NULL;
    void *impl = NULL;
    char reason[KP_REASON_MAX];
    if (kp_ocl_backend_iface()->init(&g_test_host, NULL, &b, reason, sizeof reason) != KP_OK ||
        kp_ocl_backend_iface()->device_open(b, index, &impl) != KP_OK) {
        printf("error=%s\n", g_err[0] ? g_err : reason);
        return 2;
    }
    kp_ocl_device *d = impl;
    double t0 = mono_ms();
    kp_ocl_build_info info;
    cl_kernel k = NULL;
    if (kp_ocl_kernel_create(d, KP_OCL_SRC_COMMON_DIALECT_SELFTEST, "-DKP_DTYPE_F32", "kp_dialect_selftest", &k,
                             &info) != KP_OK) {
        printf("error=%s\n", g_err);
        return 3;
    }
    /* First launch: PoCL and others finish code generation here. */
    cl_int err = CL_SUCCESS;
    cl_command_queue q = clCreateCommandQueue(d->context, d->desc.id, 0, &err);
    int n = 64;
    cl_mem m = clCreateBuffer(d->context, CL_MEM_READ_WRITE, 4096, NULL, &err);
    for (cl_uint i = 0; i < 10; ++i) {
        if (i == 1) clSetKernelArg(k, 1, sizeof n, &n);
        else clSetKernelArg(k, i, sizeof m, &m);
    }
    size_t g = 64, l = 64;
    err = clEnqueueNDRangeKernel(q, k, 1, NULL, &g, &l, 0, NULL, NULL);
    if (err == CL_SUCCESS) err = clFinish(q);
    double t1 = mono_ms();
    printf("origin=%s build_ms=%.1f first_run_ms=%.1f launch=%s\n", origin_name(info.origin), info.ms, t1 - t0,
           kp_ocl_error_name(err));
    clReleaseMemObject(m);
    clReleaseKernel(k);
    clReleaseCommandQueue(q);
    kp_ocl_backend_iface()->device_close(d);
    kp_ocl_backend_iface()->shutdown(b);
    return err == CL_SUCCESS ? 0 : 4;
}

__attribute__((constructor)) static void child_entry(void) {
    const char *c = getenv("KP_OCL_TEST_CHILD");
    if (!c) return;
    fflush(stdout);
    int rc = child_main(atoi(c));
    fflush(stdout);
    _exit(rc);
}

/* Runs this binary again as the child; returns its output line. */
static void run_child(int index, char *out, size_t cap) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        char idx[16];
        snprintf(idx, sizeof idx, "%d", index);
        setenv("KP_OCL_TEST_CHILD", idx, 1);
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl("/proc/self/exe", "kport-tests-opencl-child", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < cap && (r = read(fds[0], out + got, cap - 1 - got)) > 0) got += (size_t)r;
    out[got] = '\0';
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child process failed (status %d): %s", status, out);
}

static double field(const char *line, const char *name) {
    const char *p = strstr(line, name);
    return p ? atof(p + strlen(name)) : -1.0;
}

/* A second process finds the first one's binary on disk. */
KP_TEST(opencl_cache_second_process) {
    ocl_fx f;
    fx_open(&f);
    char first[512], second[512];
    run_child(f.index, first, sizeof first);
    CHECK_STR_CONTAINS(first, "origin=source");
    run_child(f.index, second, sizeof second);
    CHECK_STR_CONTAINS(second, "origin=disk");
    printf("    first process:  %s    second process: %s", first, second);
    fx_close(&f);
}

/* First use vs cached start, each in a new process, for the README. Also the
 * in-process memory hit. */
KP_TEST(opencl_build_time) {
    ocl_fx f;
    fx_open(&f);
    char cold[512], warm[512];
    run_child(f.index, cold, sizeof cold);
    run_child(f.index, warm, sizeof warm);
    CHECK_STR_CONTAINS(cold, "origin=source");
    CHECK_STR_CONTAINS(warm, "origin=disk");
    /* PoCL also caches its own code generation (POCL_CACHE_DIR): once more with that
     * cache empty, so the figure shows what kport's cache alone saves. */
    char pocl2[400], kwarm[512];
    snprintf(pocl2, sizeof pocl2, "%s/pocl2", f.root);
    CHECK(mkdir(pocl2, 0700) == 0);
    setenv("POCL_CACHE_DIR", pocl2, 1);
    run_child(f.index, kwarm, sizeof kwarm);
    CHECK_STR_CONTAINS(kwarm, "origin=disk");
    kp_ocl_build_info a = build_selftest(f.d, "-DKP_DTYPE_F32"), b = build_selftest(f.d, "-DKP_DTYPE_F32");
    printf("    opencl build time, dialect_selftest f32 on '%s' (%s):\n"
           "      first use (compile from source):      build %8.1f ms, to first result %8.1f ms\n"
           "      cached start (new process, disk):     build %8.1f ms, to first result %8.1f ms\n"
           "        same, driver's own cache empty:     build %8.1f ms, to first result %8.1f ms\n"
           "      same process (memory):                build %8.3f ms\n",
           f.d->desc.info.name, f.d->desc.platform_name, field(cold, "build_ms="), field(cold, "first_run_ms="),
           field(warm, "build_ms="), field(warm, "first_run_ms="), field(kwarm, "build_ms="),
           field(kwarm, "first_run_ms="), b.origin == KP_OCL_FROM_MEMORY ? b.ms : a.ms);
    fx_close(&f);
}

/* Damages the one cache entry of the f32 self-test with fn, then checks that a new
 * device rebuilds from source, is not hurt, and leaves a good entry behind. */
static void corrupt_case(void (*damage)(const char *path)) {
    ocl_fx f;
    fx_open(&f);
    kp_ocl_build_info a = build_selftest(f.d, "-DKP_DTYPE_F32");
    CHECK_STR_EQ(origin_name(a.origin), "source");
    int good_size = file_size(a.cache_path);
    damage(a.cache_path);
    fx_device_close(&f);

    fx_device_open(&f, f.index);
    kp_ocl_build_info b = build_selftest(f.d, "-DKP_DTYPE_F32");
    CHECK_STR_EQ(origin_name(b.origin), "source");
    kp_ocl_cache_stats s = kp_ocl_cache_stats_get(f.d);
    CHECK_INT_EQ(s.disk_rejected, 1);
    CHECK_INT_EQ(s.disk_writes, 1);
    CHECK_INT_EQ(file_size(b.cache_path), good_size); /* replaced by a whole entry */
    run_selftest(f.d, ST_F32, 200, 64, "");
    fx_device_close(&f);

    fx_device_open(&f, f.index); /* and that entry loads */
    CHECK_STR_EQ(origin_name(build_selftest(f.d, "-DKP_DTYPE_F32").origin), "disk");
    fx_close(&f);
}

static void damage_truncate(const char *path) { CHECK(truncate(path, file_size(path) / 2) == 0); }

static void damage_flip(const char *path) {
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    unsigned char byte;
    off_t at = file_size(path) - 7; /* in the payload: only the checksum can tell */
    CHECK(pread(fd, &byte, 1, at) == 1);
    byte ^= 0x5a;
    CHECK(pwrite(fd, &byte, 1, at) == 1);
    close(fd);
}

/* A well-formed entry (checksum right) whose payload is not a binary the driver
 * takes: clCreateProgramWithBinary/clBuildProgram fail -> removed and rebuilt. */
static void damage_payload(const char *path) {
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    unsigned char hdr[40];
    CHECK(read(fd, hdr, 40) == 40);
    uint32_t ktlen;
    uint64_t key;
    memcpy(&ktlen, hdr + 12, 4);
    memcpy(&key, hdr + 16, 8);
    char *keytext = calloc(1, ktlen + 1);
    CHECK(read(fd, keytext, ktlen) == (ssize_t)ktlen);
    close(fd);
    char junk[4096];
    memset(junk, 0x42, sizeof junk);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    CHECK(kp_gpu_cache_store(kp_ocl_host(), "opencl", dir, path, key, keytext, junk, sizeof junk) == KP_OK);
    free(keytext);
}

KP_TEST(opencl_cache_truncated) { corrupt_case(damage_truncate); }
KP_TEST(opencl_cache_flipped_byte) { corrupt_case(damage_flip); }

/* Something other than a regular file where the entry should be: a FIFO (opening it
 * for reading used to block forever, with the device lock held), a symbolic link to a
 * good entry, a directory. Each is a bad entry: removed, rebuilt, never blocking. */
static void damage_fifo(const char *path) {
    CHECK(unlink(path) == 0);
    CHECK(mkfifo(path, 0600) == 0);
}

static void damage_symlink(const char *path) {
    char moved[1100];
    snprintf(moved, sizeof moved, "%s.elsewhere", path);
    CHECK(rename(path, moved) == 0);
    CHECK(symlink(moved, path) == 0);
}

static void damage_empty_dir(const char *path) {
    CHECK(unlink(path) == 0);
    CHECK(mkdir(path, 0700) == 0);
}

KP_TEST(opencl_cache_entry_fifo) { corrupt_case(damage_fifo); }
KP_TEST(opencl_cache_entry_symlink) { corrupt_case(damage_symlink); }
KP_TEST(opencl_cache_entry_directory) { corrupt_case(damage_empty_dir); }

/* A bad entry that cannot be removed (a directory with a file in it): the log says so
 * rather than "removed", the kernel is built from source and runs, nothing is stored. */
KP_TEST(opencl_cache_bad_entry_not_removable) {
    ocl_fx f;
    fx_open(&f);
    kp_ocl_build_info a = build_selftest(f.d, "-DKP_DTYPE_F32");
    char inner[1100];
    snprintf(inner, sizeof inner, "%s/keep", a.cache_path);
    damage_empty_dir(a.cache_path);
    FILE *keep = fopen(inner, "w");
    CHECK(keep != NULL);
    fclose(keep);
    fx_device_close(&f);
    g_log[0] = '\0';
    fx_device_open(&f, f.index);
    kp_ocl_build_info b = build_selftest(f.d, "-DKP_DTYPE_F32");
    CHECK_STR_EQ(origin_name(b.origin), "source");
    CHECK_INT_EQ(kp_ocl_cache_stats_get(f.d).disk_rejected, 1);
    CHECK_STR_CONTAINS(g_log, "not a regular file");
    CHECK_STR_CONTAINS(g_log, "could not remove it");
    CHECK(strstr(g_log, "; removed") == NULL);
    run_selftest(f.d, ST_F32, 200, 64, "");
    CHECK(unlink(inner) == 0);
    fx_close(&f);
}

KP_TEST(opencl_cache_unloadable_binary) {
    ocl_fx f;
    fx_open(&f);
    kp_ocl_build_info a = build_selftest(f.d, "-DKP_DTYPE_BF16");
    damage_payload(a.cache_path);
    fx_device_close(&f);
    fx_device_open(&f, f.index);
    kp_ocl_build_info b = build_selftest(f.d, "-DKP_DTYPE_BF16");
    CHECK_STR_EQ(origin_name(b.origin), "source");
    CHECK_INT_EQ(kp_ocl_cache_stats_get(f.d).disk_rejected, 1);
    run_selftest(f.d, ST_BF16, 100, 64, "");
    fx_close(&f);
}

/* ------------------------------------------------------------------------ */
/* Build failures                                                            */
/* ------------------------------------------------------------------------ */

/* The device half of the kargs layout check (kernels/kp_kargs.h): the headers' own
 * checks pass, and a size or an offset other than what this compiler laid out fails the
 * build with the check's name in the log. */
KP_TEST(opencl_kargs_layout_checked_on_the_device) {
    ocl_fx f;
    fx_open(&f);
    const kp_ocl_source *base = &kp_ocl_sources[KP_OCL_SRC_MOE_MOE_COMBINE];
    static const struct {
        const char *tail, *error; /* error NULL: builds */
    } cases[] = {
        {"KP_KARGS_SIZE(kp_moe_combine_kargs, 80);\n", NULL},
        {"KP_KARGS_SIZE(kp_moe_combine_kargs, 72);\n", "kp_kargs_check_kp_moe_combine_kargs_size"},
        {"KP_KARGS_OFFSET(kp_moe_combine_kargs, hidden, 68);\n", "kp_kargs_check_kp_moe_combine_kargs_hidden"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = base->length + strlen(cases[i].tail);
        char *text = malloc(n + 1);
        CHECK(text != NULL);
        memcpy(text, base->text, base->length);
        memcpy(text + base->length, cases[i].tail, strlen(cases[i].tail) + 1);
        kp_ocl_source src = {"test/kargs_check.cl", text, n};
        cl_program p = NULL;
        g_err[0] = '\0';
        kp_status st = kp_ocl_program_get(f.d, &src, "-DKP_DTYPE_F32", &p, NULL);
        if (!cases[i].error) {
            CHECK_MSG(st == KP_OK, "%s: %s", cases[i].tail, g_err);
        } else {
            CHECK_INT_EQ(st, KP_ERR_BUILD_FAILED);
            CHECK_STR_CONTAINS(g_err, cases[i].error);
        }
        free(text);
    }
    fx_close(&f);
}

KP_TEST(opencl_build_failure_log) {
    ocl_fx f;
    fx_open(&f);
    static const char text[] = "__kernel void broken(__global float *x) {\n"
                               "    x[0] = undeclared_thing + 1.0f\n" /* two errors */
                               "}\n";
    kp_ocl_source src = {"test/broken.cl", text, sizeof text - 1};
    cl_program p = NULL;
    g_err[0] = '\0';
    kp_status st = kp_ocl_program_get(f.d, &src, "-DFOO=1", &p, NULL);
    CHECK_INT_EQ(st, KP_ERR_BUILD_FAILED);
    CHECK(p == NULL);
    CHECK_STR_CONTAINS(g_err, "test/broken.cl");
    CHECK_STR_CONTAINS(g_err, "-DFOO=1");
    CHECK_STR_CONTAINS(g_err, "CL_BUILD_PROGRAM_FAILURE");
    CHECK_STR_CONTAINS(g_err, "error");           /* the compiler's own log */
    CHECK_STR_CONTAINS(g_err, "undeclared_thing");
    /* nothing cached, and a good kernel still builds afterwards */
    CHECK_INT_EQ(kp_ocl_cache_stats_get(f.d).disk_writes, 0);
    CHECK_STR_EQ(origin_name(build_selftest(f.d, "-DKP_DTYPE_F32").origin), "source");
    /* a -D the dialect rejects: the #error text reaches the message too */
    st = kp_ocl_program_get(f.d, &kp_ocl_sources[KP_OCL_SRC_COMMON_DIALECT_SELFTEST],
                            "-DKP_DTYPE_F16 -DKP_DTYPE_BF16", &p, NULL);
    CHECK_INT_EQ(st, KP_ERR_BUILD_FAILED);
    CHECK_STR_CONTAINS(g_err, "define at most one of KP_DTYPE_F32");
    fx_close(&f);
}

/* ------------------------------------------------------------------------ */
/* Through libkport: listing, buffers, wrap                                  */
/* ------------------------------------------------------------------------ */

static int find_backend(const char *name, kp_backend_info *out) {
    for (int i = 0; i < kp_backend_count(); ++i)
        if (kp_backend_info_get(i, out) == KP_OK && strcmp(out->name, name) == 0) return i;
    return -1;
}

KP_TEST(opencl_backend_listed) {
    kp_test_init();
    kp_backend_info bi;
    int bidx = find_backend("opencl", &bi);
    if (bidx < 0) KP_SKIP("opencl plugin not loaded (KPORT_PLUGIN_PATH=%s)", getenv("KPORT_PLUGIN_PATH"));
    if (!bi.available) KP_SKIP("opencl: %s", bi.reason);
    CHECK(bi.device_count >= 1);
    CHECK_STR_CONTAINS(bi.path, "libkport-opencl.so");
    int seen = 0;
    for (int i = 0; i < kp_device_count(); ++i) {
        kp_device_info d;
        CHECK_OK(kp_device_info_get(i, &d));
        if (d.backend_index != bidx) continue;
        seen++;
        CHECK_STR_EQ(d.backend, "opencl");
        CHECK(d.name[0] && d.vendor[0] && d.driver[0]);
        CHECK(d.compute_units >= 1 && d.memory_bytes > 0 && d.local_mem_bytes > 0);
        printf("    opencl device %d: %s | %s | driver %s | %s | kind %d | %d CUs | %llu MiB | local %llu KiB | "
               "caps 0x%x\n", i, d.name, d.vendor, d.driver, d.arch, (int)d.kind, d.compute_units,
               (unsigned long long)(d.memory_bytes >> 20), (unsigned long long)(d.local_mem_bytes >> 10), d.caps);
        if (strstr(d.name, "pthread") || strstr(d.vendor, "pocl")) { /* PoCL's CPU device */
            CHECK_INT_EQ(d.kind, KP_DEVICE_CPU);
            CHECK_INT_EQ(d.caps & (KP_CAP_F16 | KP_CAP_SUBGROUPS | KP_CAP_INLINE_PTX), 0);
        }
    }
    CHECK_INT_EQ(seen, bi.device_count);
}

KP_TEST(opencl_buffer_roundtrip) {
    kp_device *d = kp_test_open_backend("opencl");
    kp_stream *s = NULL;
    CHECK_OK(kp_stream_create(d, &s));
    enum { N = 1 << 16 };
    unsigned char *src = malloc(N), *dst = malloc(N);
    for (int i = 0; i < N; ++i) src[i] = (unsigned char)kp_test_rand_u64();
    kp_buffer *a = NULL, *b = NULL;
    CHECK_OK(kp_buffer_alloc(d, N, &a));
    CHECK_OK(kp_buffer_alloc(d, N, &b));
    CHECK_OK(kp_buffer_write(s, a, 0, src, N));
    CHECK_OK(kp_buffer_copy(s, b, 100, a, 7, N - 200)); /* offsets on both sides */
    memset(dst, 0, N);
    CHECK_OK(kp_buffer_read(s, b, 100, dst, N - 200));
    CHECK(memcmp(dst, src + 7, N - 200) == 0);
    CHECK_OK(kp_buffer_read(NULL, a, 0, dst, N)); /* the device's own stream */
    CHECK(memcmp(dst, src, N) == 0);
    CHECK_OK(kp_stream_sync(s));
    CHECK_OK(kp_buffer_free(a));
    CHECK_OK(kp_buffer_free(b));
    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_device_close(d));
    free(src), free(dst);
}

/* As a server does it: only public API to reach kport's context, then plain OpenCL. */
KP_TEST(opencl_buffer_wrap) {
    kp_device *d = kp_test_open_backend("opencl");
    kp_native_device nd;
    CHECK_OK(kp_device_get_native(d, &nd));
    CHECK(nd.context != NULL && nd.device != NULL && nd.platform != NULL);
    cl_context ctx = (cl_context)nd.context;
    cl_device_id dev_id = (cl_device_id)nd.device;
    unsigned char src[1024], dst[1024];
    for (size_t i = 0; i < sizeof src; ++i) src[i] = (unsigned char)(i * 7 + 3);
    cl_int err = CL_SUCCESS;
    cl_mem m = clCreateBuffer(ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof src, src, &err);
    CHECK_CL(err);
    kp_buffer *w = NULL;
    CHECK_OK(kp_buffer_wrap(d, (void *)m, sizeof src, &w));
    CHECK_OK(kp_buffer_read(NULL, w, 0, dst, sizeof dst)); /* zero copy: the data is there */
    CHECK(memcmp(src, dst, sizeof src) == 0);
    memset(src, 0x33, 64);
    CHECK_OK(kp_buffer_write(NULL, w, 0, src, 64));
    CHECK_OK(kp_buffer_free(w));
    /* kport released only its own reference: ours still works and sees the write */
    cl_command_queue q = clCreateCommandQueue(ctx, dev_id, 0, &err);
    CHECK_CL(err);
    CHECK_CL(clEnqueueReadBuffer(q, m, CL_TRUE, 0, sizeof dst, dst, 0, NULL, NULL));
    CHECK(memcmp(src, dst, sizeof src) == 0);

    /* bigger than the cl_mem */
    w = NULL;
    CHECK_ERR(kp_buffer_wrap(d, (void *)m, sizeof src + 1, &w), KP_ERR_OUT_OF_BOUNDS, "holds only 1024 bytes");
    CHECK(w == NULL);
    /* a cl_mem from another context */
    cl_context other = clCreateContext(NULL, 1, &dev_id, NULL, NULL, &err);
    CHECK_CL(err);
    cl_mem foreign = clCreateBuffer(other, CL_MEM_READ_WRITE, 64, NULL, &err);
    CHECK_CL(err);
    CHECK_ERR(kp_buffer_wrap(d, (void *)foreign, 64, &w), KP_ERR_DEVICE_MISMATCH, "another cl_context");
    clReleaseMemObject(foreign);
    clReleaseContext(other);
    clReleaseMemObject(m);
    clReleaseCommandQueue(q);
    CHECK_OK(kp_device_close(d));
}

static int queue_refs(cl_command_queue q) {
    cl_uint refs = 0;
    CHECK_CL(clGetCommandQueueInfo(q, CL_QUEUE_REFERENCE_COUNT, sizeof refs, &refs, NULL));
    return (int)refs;
}

/* A server's own in-order queue carries kport's work; kport neither finishes nor
 * releases more than its own reference. Foreign or out-of-order queues are refused. */
KP_TEST(opencl_stream_wrap) {
    kp_device *d = kp_test_open_backend("opencl");
    kp_native_device nd;
    CHECK_OK(kp_device_get_native(d, &nd));
    cl_int err = CL_SUCCESS;
    cl_command_queue q = clCreateCommandQueue((cl_context)nd.context, (cl_device_id)nd.device, 0, &err);
    CHECK_CL(err);
    /* Reference counts are exact only while no command has run on q (the runtime may
     * hold references for retired commands a while): kport takes one and gives back
     * exactly that one. */
    CHECK_INT_EQ(queue_refs(q), 1);
    kp_stream *s = NULL;
    CHECK_OK(kp_stream_wrap(d, (void *)q, &s));
    CHECK_INT_EQ(queue_refs(q), 2);
    CHECK_OK(kp_stream_destroy(s));
    CHECK_INT_EQ(queue_refs(q), 1);
    CHECK_OK(kp_stream_wrap(d, (void *)q, &s));
    void *back = NULL;
    CHECK_OK(kp_stream_get_native(s, &back));
    CHECK(back == (void *)q);
    kp_buffer *b;
    CHECK_OK(kp_buffer_alloc(d, 256, &b));
    unsigned char src[256], dst[256];
    for (int i = 0; i < 256; i++) src[i] = (unsigned char)(255 - i);
    CHECK_OK(kp_buffer_write(s, b, 0, src, sizeof src));
    CHECK_OK(kp_buffer_read(s, b, 0, dst, sizeof dst));
    CHECK(memcmp(src, dst, sizeof src) == 0);
    CHECK_OK(kp_stream_destroy(s));
    /* after work through kport, the queue still works for its owner */
    cl_mem own = clCreateBuffer((cl_context)nd.context, CL_MEM_READ_WRITE, sizeof src, NULL, &err);
    CHECK_CL(err);
    CHECK_CL(clEnqueueWriteBuffer(q, own, CL_TRUE, 0, sizeof src, src, 0, NULL, NULL));
    CHECK_CL(clFinish(q));
    clReleaseMemObject(own);
    cl_context other = clCreateContext(NULL, 1, (cl_device_id *)&nd.device, NULL, NULL, &err);
    CHECK_CL(err);
    cl_command_queue foreign = clCreateCommandQueue(other, (cl_device_id)nd.device, 0, &err);
    CHECK_CL(err);
    CHECK_ERR(kp_stream_wrap(d, (void *)foreign, &s), KP_ERR_DEVICE_MISMATCH, "another context");
    CHECK(s == NULL);
    cl_command_queue ooo = clCreateCommandQueue((cl_context)nd.context, (cl_device_id)nd.device,
                                                CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE, &err);
    if (err == CL_SUCCESS) { /* not every device offers out-of-order queues */
        CHECK_ERR(kp_stream_wrap(d, (void *)ooo, &s), KP_ERR_INVALID_ARGUMENT, "out of order");
        clReleaseCommandQueue(ooo);
    }
    clReleaseCommandQueue(foreign);
    clReleaseContext(other);
    CHECK_OK(kp_buffer_free(b));
    clReleaseCommandQueue(q);
    CHECK_OK(kp_device_close(d));
}

#endif /* KP_OPENCL_TESTS */
