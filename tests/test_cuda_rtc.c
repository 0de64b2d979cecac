/*
 * tests/test_cuda_rtc.c — NVRTC for the cuda plugin's non-embedded kernel variants
 * (backends/cuda/cuda_rtc.h), on any machine: no GPU or driver, only libnvrtc.
 *
 *  - a grouped-GEMM tile a tuning table asks for (128x64, what kp_gpu_gemm_tiles_pick
 *    and kp_gpu_gemm_options produce for it), which the build did not embed, compiles
 *    for sm_90a and sm_80 into a CUBIN for that arch that defines both GEMM kernels;
 *    it is stored in, and read back from, a temporary on-disk cache (cuda-<key>.bin);
 *  - every embedded kernel source compiles through NVRTC (so kp_dialect.h needs no more
 *    of <cuda_fp16.h> than cuda_rtc.c stands in for), with the entry points the build
 *    lists; a GPU newer than NVRTC gets PTX;
 *  - a broken option set is KP_ERR_BUILD_FAILED with NVRTC's log;
 *  - variant_check on a made-up sm_90 device accepts the non-embedded tile (it would be
 *    compiled at its first launch) and still refuses what nothing can build.
 * Each test skips, with the reason, when libnvrtc cannot be loaded.
 */
#include "kp_test.h"

#if defined(KP_CUDA_TESTS) && !defined(KP_CU_NO_FATBINS)

#include "backend.h"
#include "cuda_fatbin.h"
#include "cuda_internal.h"
#include "cuda_rtc.h"
#include "gpu_variants.h"
#include "kp_cu_fatbins.h"
#include "kp_gpu.h"
#include "ops/gpu_ops.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- a test host: the last error kept, the cache dir and tuning chosen here ---- */

static char g_msg[8192];
static char g_cache_dir[256];

static kp_status th_set_error(kp_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return st;
}
static kp_status th_add_context(kp_status st, const char *fmt, ...) {
    (void)fmt;
    return st;
}
static void th_log(const char *fmt, ...) {
    if (!getenv("KPORT_LOG")) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
static const char *th_cache_dir(void) { return g_cache_dir[0] ? g_cache_dir : NULL; }
/* A tuning table asking for 128x64 grouped-GEMM tiles. */
static int64_t th_tuning(const kp_device_info *dev, const char *kernel, const char *param, int64_t def) {
    (void)dev;
    if (!strcmp(kernel, "grouped_gemm") && !strcmp(param, "tile_m")) return 128;
    if (!strcmp(kernel, "grouped_gemm") && !strcmp(param, "tile_n")) return 64;
    return def;
}
static const kp_host_services g_host = {.abi_version = KP_BACKEND_ABI_VERSION,
                                        .set_error = th_set_error,
                                        .add_context = th_add_context,
                                        .log = th_log,
                                        .cache_dir = th_cache_dir,
                                        .tuning_get = th_tuning};

static void need_nvrtc(void) {
    char why[KP_REASON_MAX];
    if (kp_cu_rtc_check(80, NULL, 0, why, sizeof why) == KP_ERR_UNAVAILABLE) KP_SKIP("%s", why);
}

static void use_temp_cache(void) {
    snprintf(g_cache_dir, sizeof g_cache_dir, "/tmp/kport-cuda-rtc-test-XXXXXX");
    CHECK_MSG(mkdtemp(g_cache_dir) != NULL, "mkdtemp: %s", strerror(errno));
}

static void drop_temp_cache(void) {
    char cmd[512];
    if (strncmp(g_cache_dir, "/tmp/kport-cuda-rtc-test-", 25) == 0) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_cache_dir);
        if (system(cmd) != 0) fprintf(stderr, "note: could not remove %s\n", g_cache_dir);
    }
    g_cache_dir[0] = '\0';
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static int embedded(const char *source, const char *options) {
    for (int v = 0; v < KP_CU_FATBIN_COUNT; v++)
        if (!strcmp(kp_cu_fatbin_table[v].source, source) && !strcmp(kp_cu_fatbin_table[v].options, options)) return 1;
    return 0;
}

/* The options the planner gives a bf16 grouped GEMM under th_tuning's 128x64 tile. */
static void tuned_gemm_options(char *opts, size_t n) {
    kp_device_info info;
    kp_gpu_profile p;
    CHECK_INT_EQ(kp_gpu_build_profile("cuda", &info, &p), 0);
    kp_gpu_gemm_tiles tl;
    kp_gpu_gemm_tiles_pick(&g_host, &p, KP_BF16, 0, 1, &tl);
    CHECK_MSG(tl.bm == 128 && tl.bn == 64 && tl.mma, "the planner took tile %dx%dx%d (mma %d), not the tuned 128x64",
              tl.bm, tl.bn, tl.bk, tl.mma);
    kp_gpu_gemm_options(&tl, KP_BF16, 0, 0, opts, n);
    CHECK_STR_CONTAINS(opts, "-DKP_GG_BM=128 -DKP_GG_BN=64");
    CHECK_MSG(!embedded("moe/moe_gemm.cl", opts), "the tuned tile [%s] is embedded: pick another one", opts);
}

/* Fails unless bin is a CUBIN for sm_<cc> defining every kernel in the space-separated
 * list (kp_cu_elf_kernels: the embedded images' reader). The SM of a CUDA ELF is byte 1
 * of e_flags in the ELF ABI nvcc/NVRTC 12.8+ write (EI_ABIVERSION 8; 0x5a = 90), byte 0
 * before. An "a" target (sm_90a) is not told apart there. */
static void check_cubin(const unsigned char *bin, size_t size, int cc, const char *kernels, const char *what) {
    CHECK_MSG(size > 64 && !memcmp(bin, "\177ELF", 4) && bin[4] == 2, "%s: not an ELF64 image (%zu bytes)", what, size);
    uint32_t flags;
    memcpy(&flags, bin + 48, 4);
    CHECK_MSG(((flags >> 8) & 0xffu) == (unsigned)cc || (flags & 0xffu) == (unsigned)cc,
              "%s: e_flags 0x%x name another SM than sm_%d", what, flags, cc);
    char err[256] = "";
    int n = kp_cu_elf_kernels(bin, size, NULL, NULL, err, sizeof err);
    CHECK_MSG(n > 0, "%s: %d kernels (%s)", what, n, err);
    int want = 0;
    for (const char *p = kernels; *p;) {
        size_t len = strcspn(p, " ");
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)len, p);
        CHECK_MSG(kp_cu_elf_has_kernel(bin, size, name) == 1, "%s: kernel %s is not defined", what, name);
        want++;
        p += len;
        while (*p == ' ') p++;
    }
    CHECK_MSG(n == want, "%s: %d kernels defined, %d listed (%s)", what, n, want, kernels);
    CHECK_INT_EQ(kp_cu_elf_has_kernel(bin, size, "kp_no_such_kernel"), 0);
}

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    *size = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    *size = b && n > 0 && fread(b, 1, (size_t)n, f) == (size_t)n ? (size_t)n : 0;
    fclose(f);
    return b;
}

KP_TEST(cuda_rtc_tuned_tile_cached) {
    need_nvrtc();
    char opts[256];
    tuned_gemm_options(opts, sizeof opts);
    use_temp_cache();
    static const int ccs[] = {90, 80};
    for (int i = 0; i < 2; i++) {
        const int cc = ccs[i];
        char arch[32], why[KP_REASON_MAX], what[320];
        CHECK_MSG(kp_cu_rtc_check(cc, arch, sizeof arch, why, sizeof why) == KP_OK, "sm_%d: %s", cc, why);
        CHECK_STR_EQ(arch, cc == 90 ? "sm_90a" : "sm_80");
        snprintf(what, sizeof what, "NVRTC %s [%s]", arch, opts);
        unsigned char *bin = NULL, *again = NULL;
        size_t size = 0, size2 = 0;
        int cached = -1, ptx = -1;
        double t0 = now_s();
        g_msg[0] = '\0';
        CHECK_MSG(kp_cu_rtc_build(&g_host, cc, "moe/moe_gemm.cl", opts, &bin, &size, &ptx, &cached) == KP_OK, "%s: %s",
                  what, g_msg);
        double t1 = now_s();
        CHECK_INT_EQ(cached, 0);
        CHECK_INT_EQ(ptx, 0);
        check_cubin(bin, size, cc, "kp_grouped_gemm_tiled kp_grouped_gemm_small", what);
        if (getenv("KPORT_LOG")) fprintf(stderr, "%s: %.2f s, %zu bytes\n", what, t1 - t0, size);

        char path[4096];
        CHECK(kp_cu_rtc_cache_path(&g_host, cc, "moe/moe_gemm.cl", opts, path, sizeof path));
        CHECK_MSG(!strncmp(path, g_cache_dir, strlen(g_cache_dir)) && strstr(path, "/cuda-") && strstr(path, ".bin"),
                  "%s", path);
        struct stat st;
        CHECK_MSG(stat(path, &st) == 0 && (size_t)st.st_size > size, "cache file %s", path);

        CHECK(kp_cu_rtc_build(&g_host, cc, "moe/moe_gemm.cl", opts, &again, &size2, &ptx, &cached) == KP_OK);
        CHECK_INT_EQ(cached, 1);
        CHECK_INT_EQ(ptx, 0);
        CHECK(size2 == size && memcmp(again, bin, size) == 0);
        free(again);

        /* a damaged entry is detected and rebuilt */
        size_t fsize = 0;
        unsigned char *file = read_file(path, &fsize);
        CHECK(file && fsize > 64);
        file[fsize - 10] ^= 0x5a;
        FILE *f = fopen(path, "wb");
        CHECK(f && fwrite(file, 1, fsize, f) == fsize);
        fclose(f);
        free(file);
        CHECK(kp_cu_rtc_build(&g_host, cc, "moe/moe_gemm.cl", opts, &again, &size2, &ptx, &cached) == KP_OK);
        CHECK_INT_EQ(cached, 0);
        check_cubin(again, size2, cc, "kp_grouped_gemm_tiled kp_grouped_gemm_small", what);
        free(again);
        free(bin);
    }
    /* sm_80 and sm_90a are two entries */
    char p80[4096], p90[4096];
    CHECK(kp_cu_rtc_cache_path(&g_host, 80, "moe/moe_gemm.cl", opts, p80, sizeof p80));
    CHECK(kp_cu_rtc_cache_path(&g_host, 90, "moe/moe_gemm.cl", opts, p90, sizeof p90));
    CHECK(strcmp(p80, p90) != 0);
    drop_temp_cache();
}

static void compile_embedded(const kp_cu_fatbin *fb) {
    unsigned char *bin = NULL;
    size_t size = 0;
    int ptx = -1;
    g_msg[0] = '\0';
    double t0 = now_s();
    CHECK_MSG(kp_cu_rtc_compile(&g_host, 90, fb->source, fb->options, &bin, &size, &ptx) == KP_OK,
              "NVRTC sm_90a %s [%s]: %s", fb->source, fb->options, g_msg);
    if (getenv("KPORT_LOG")) fprintf(stderr, "NVRTC sm_90a %s [%s]: %.2f s\n", fb->source, fb->options, now_s() - t0);
    CHECK_INT_EQ(ptx, 0);
    char what[600];
    snprintf(what, sizeof what, "NVRTC sm_90a %s [%s]", fb->source, fb->options);
    check_cubin(bin, size, 90, fb->kernels, what);
    free(bin);
}

/* Embedded variants of every source through NVRTC for sm_90a — per source the first,
 * the first f16 one (the <cuda_fp16.h> stand-in) and the first MMA one — define the
 * same entry points as the embedded fatbin. No cache. */
KP_TEST(cuda_rtc_every_source) {
    need_nvrtc();
    g_cache_dir[0] = '\0';
    for (int s = 0; s < KP_CU_SOURCE_COUNT; s++) {
        const kp_cu_source *src = &kp_cu_source_table[s];
        CHECK_MSG(src->length > 0 && strlen(src->text) == src->length, "%s: bad length", src->name);
        CHECK_MSG(!strstr(src->text, "#include \""), "%s: an include was not inlined", src->name);
        const kp_cu_fatbin *pick[3] = {NULL, NULL, NULL};
        for (int v = 0; v < KP_CU_FATBIN_COUNT; v++) {
            const kp_cu_fatbin *c = &kp_cu_fatbin_table[v];
            if (strcmp(c->source, src->name) != 0) continue;
            if (!pick[0]) pick[0] = c;
            if (!pick[1] && strstr(c->options, "-DKP_DTYPE_F16") && c != pick[0]) pick[1] = c;
            if (!pick[2] && strstr(c->options, "MMA") && c != pick[0] && c != pick[1]) pick[2] = c;
        }
        CHECK_MSG(pick[0] != NULL, "source %s is embedded but no variant uses it", src->name);
        for (int i = 0; i < 3; i++)
            if (pick[i]) compile_embedded(pick[i]);
    }
    /* a GPU newer than every arch NVRTC lists: PTX of the newest, for the driver's JIT */
    char arch[32], why[KP_REASON_MAX];
    CHECK_MSG(kp_cu_rtc_check(990, arch, sizeof arch, why, sizeof why) == KP_OK, "sm_990: %s", why);
    CHECK_MSG(!strncmp(arch, "compute_", 8), "sm_990 gets %s", arch);
    const kp_cu_fatbin *fb = &kp_cu_fatbin_table[0];
    unsigned char *bin = NULL;
    size_t size = 0;
    int ptx = 0;
    CHECK_MSG(kp_cu_rtc_compile(&g_host, 990, fb->source, fb->options, &bin, &size, &ptx) == KP_OK, "PTX: %s", g_msg);
    CHECK_INT_EQ(ptx, 1);
    CHECK(size > 0 && bin[size - 1] == '\0' && strstr((const char *)bin, ".entry") != NULL);
    char target[48];
    snprintf(target, sizeof target, ".target sm_%s", arch + 8);
    CHECK_MSG(strstr((const char *)bin, target) != NULL, "PTX for %s lacks '%s'", arch, target);
    free(bin);
    /* nothing older than sm_75 is listed by NVRTC 12/13 */
    CHECK_INT_EQ(kp_cu_rtc_check(50, arch, sizeof arch, why, sizeof why), KP_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(why, "sm_50");
}

KP_TEST(cuda_rtc_build_error) {
    need_nvrtc();
    g_cache_dir[0] = '\0';
    unsigned char *bin = NULL;
    size_t size = 0;
    g_msg[0] = '\0';
    /* two dtypes: kp_dialect.h's #error */
    kp_status st = kp_cu_rtc_compile(&g_host, 90, "moe/moe_gate.cl", "-DKP_DTYPE_F32 -DKP_DTYPE_F16", &bin, &size, NULL);
    CHECK_INT_EQ(st, KP_ERR_BUILD_FAILED);
    CHECK_STR_CONTAINS(g_msg, "define at most one of KP_DTYPE_F32");
    CHECK_STR_CONTAINS(g_msg, "sm_90a");
    CHECK_STR_CONTAINS(g_msg, "-DKP_DTYPE_F32 -DKP_DTYPE_F16");
    CHECK(bin == NULL && size == 0);
    /* an option NVRTC does not know */
    st = kp_cu_rtc_compile(&g_host, 80, "moe/moe_gate.cl", "-DKP_DTYPE_F32 --no-such-option", &bin, &size, NULL);
    CHECK_INT_EQ(st, KP_ERR_BUILD_FAILED);
    CHECK_STR_CONTAINS(g_msg, "--no-such-option");
    CHECK(bin == NULL);
    st = kp_cu_rtc_compile(&g_host, 90, "moe/no_such_kernel.cl", "", &bin, &size, NULL);
    CHECK_INT_EQ(st, KP_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(g_msg, "no_such_kernel.cl");
    /* a failure is not cached */
    use_temp_cache();
    int cached = -1;
    st = kp_cu_rtc_build(&g_host, 90, "moe/moe_gate.cl", "-DKP_DTYPE_F32 -DKP_DTYPE_F16", &bin, &size, NULL, &cached);
    CHECK_INT_EQ(st, KP_ERR_BUILD_FAILED);
    char path[4096];
    CHECK(kp_cu_rtc_cache_path(&g_host, 90, "moe/moe_gate.cl", "-DKP_DTYPE_F32 -DKP_DTYPE_F16", path, sizeof path));
    CHECK(access(path, F_OK) != 0);
    drop_temp_cache();
}

/* ---- the target on a made-up device (no driver call is reached) ---- */

typedef struct fake_device {
    kp_device dev;
    kp_stream stream;
    kp_cu_device cu;
    kp_cu_stream cs;
} fake_device;

static void fake_open(fake_device *f, int cc) {
    memset(f, 0, sizeof *f);
    kp_cu_host = &g_host;
    kp_cu_target.host = &g_host;
    f->cu.cc = cc;
    pthread_mutex_init(&f->cu.lock, NULL);
    snprintf(f->cu.name, sizeof f->cu.name, "fake sm_%d", cc);
    snprintf(f->dev.info.arch, sizeof f->dev.info.arch, "sm_%d", cc);
    f->dev.info.compute_units = 132;
    f->dev.impl = &f->cu;
    f->stream.device = &f->dev;
    f->stream.impl = &f->cs;
}

KP_TEST(cuda_rtc_variant_check) {
    need_nvrtc();
    char opts[256];
    tuned_gemm_options(opts, sizeof opts);
    fake_device f;
    fake_open(&f, 90);
    g_msg[0] = '\0';
    CHECK_MSG(kp_cu_target.variant_check(&f.stream, "moe/moe_gemm.cl", opts) == KP_OK, "sm_90 [%s]: %s", opts, g_msg);
    /* embedded variants: unchanged */
    const kp_cu_fatbin *fb = &kp_cu_fatbin_table[0];
    CHECK_OK(kp_cu_target.variant_check(&f.stream, fb->source, fb->options));
    /* no source to build from: both reasons */
    g_msg[0] = '\0';
    CHECK_INT_EQ(kp_cu_target.variant_check(&f.stream, "moe/no_such.cl", opts), KP_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(g_msg, "not embedded");
    CHECK_STR_CONTAINS(g_msg, "not among the sources built into this plugin");
    /* sm_86 (a plain sm_XY CUBIN) is fine too; sm_75 is not, embedded or not */
    fake_open(&f, 86);
    CHECK_OK(kp_cu_target.variant_check(&f.stream, "moe/moe_gemm.cl", opts));
    fake_open(&f, 75);
    CHECK_INT_EQ(kp_cu_target.variant_check(&f.stream, "moe/moe_gemm.cl", opts), KP_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(g_msg, "sm_75");

    /* launch of a variant whose source is not built in: refused before the driver */
    fake_open(&f, 90);
    kp_gpu_launch *l = calloc(1, sizeof *l);
    CHECK(l != NULL);
    kp_gpu_launch_init(l, "moe/no_such.cl", opts, "kp_grouped_gemm_tiled");
    l->groups[0] = l->groups[1] = l->groups[2] = 1;
    l->local[0] = 128, l->local[1] = l->local[2] = 1;
    CHECK_INT_EQ(kp_cu_target.launch(&f.stream, l), KP_ERR_UNSUPPORTED);
    CHECK_STR_CONTAINS(g_msg, "moe/no_such.cl");
    free(l);
}

#else /* no cuda plugin, or one built without nvcc (no kernel sources) */

#if defined(KP_CUDA_TESTS)
#define CUDA_RTC_WHY "cuda: the plugin was built without nvcc: no kernel sources embedded for NVRTC"
#else
#define CUDA_RTC_WHY "cuda: the plugin is not part of this build"
#endif
#define CUDA_RTC_NOT_BUILT(name) \
    KP_TEST(name) { KP_SKIP(CUDA_RTC_WHY); }
CUDA_RTC_NOT_BUILT(cuda_rtc_tuned_tile_cached)
CUDA_RTC_NOT_BUILT(cuda_rtc_every_source)
CUDA_RTC_NOT_BUILT(cuda_rtc_build_error)
CUDA_RTC_NOT_BUILT(cuda_rtc_variant_check)

#endif
