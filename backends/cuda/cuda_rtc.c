/*
 * backends/cuda/cuda_rtc.c — NVRTC for the kernel variants the plugin does not embed
 * (cuda_rtc.h says when and why).
 *
 * libnvrtc is dlopen'd once per process, on first need (kp_cu_rtc_check or a compile):
 * "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so", the first that loads and has every
 * entry point below. Loading it starts nothing on the GPU. Its supported-arch list
 * (nvrtcGetSupportedArchs) decides the -arch of each device.
 *
 * The sources are build_fatbins.py's kp_cu_source_table (each kernels/ source with its
 * "..." includes inlined); the one <...> include, <cuda_fp16.h>, is answered by
 * KP_CU_RTC_FP16_SHIM below through nvrtcCreateProgram's in-memory headers.
 */
#include "cuda_rtc.h"

#include "gpu_cache.h"

#ifndef KP_CU_NO_FATBINS
#include "kp_cu_fatbins.h"
#endif

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__has_include)
#if __has_include(<nvrtc.h>)
#include <nvrtc.h>
#define KP_CU_HAVE_NVRTC_H 1
#endif
#endif
#ifndef KP_CU_HAVE_NVRTC_H /* the ABI as nvrtc.h (CUDA 12, 13) declares it */
typedef enum { NVRTC_SUCCESS = 0 } nvrtcResult;
typedef struct _nvrtcProgram *nvrtcProgram;
#endif

/* ------------------------------------------------------------------------ */
/* The embedded sources, and what stands in for <cuda_fp16.h>                */
/* ------------------------------------------------------------------------ */

const char *kp_cu_rtc_source(const char *name, size_t *length) {
#ifndef KP_CU_NO_FATBINS
    for (int i = 0; i < KP_CU_SOURCE_COUNT; i++)
        if (strcmp(kp_cu_source_table[i].name, name) == 0) {
            if (length) *length = kp_cu_source_table[i].length;
            return kp_cu_source_table[i].text;
        }
#else
    (void)name;
#endif
    if (length) *length = 0;
    return NULL;
}

/* NVRTC (13.0 checked) has no built-in <cuda_fp16.h>, and the toolkit's copy is not on
 * a user's machine. kp_dialect.h needs __half as 16 raw bits and four conversions; the
 * conversions are the PTX cuda_fp16.hpp itself emits for them (cvt.f32.f16 and
 * cvt.rn.f16.f32), so the SASS matches the nvcc-built fatbins. A kernel that uses more
 * of cuda_fp16.h fails here with NVRTC's "identifier ... is undefined" in the log. */
#define KP_CU_RTC_FP16_SHIM                                                                                     \
    "/* kport: cuda_fp16.h for NVRTC (backends/cuda/cuda_rtc.c) */\n"                                            \
    "#ifndef KP_CU_RTC_FP16_SHIM\n"                                                                              \
    "#define KP_CU_RTC_FP16_SHIM 1\n"                                                                            \
    "struct __align__(2) __half { unsigned short __x; };\n"                                                     \
    "static __device__ __forceinline__ __half __ushort_as_half(unsigned short i) { __half h; h.__x = i; return h; }\n" \
    "static __device__ __forceinline__ unsigned short __half_as_ushort(__half h) { return h.__x; }\n"            \
    "static __device__ __forceinline__ float __half2float(__half h) {\n"                                         \
    "    float f; asm(\"cvt.f32.f16 %0, %1;\" : \"=f\"(f) : \"h\"(h.__x)); return f; }\n"                       \
    "static __device__ __forceinline__ __half __float2half_rn(float f) {\n"                                      \
    "    __half h; asm(\"cvt.rn.f16.f32 %0, %1;\" : \"=h\"(h.__x) : \"f\"(f)); return h; }\n"                   \
    "#endif\n"

static const char kp_cu_rtc_fp16_shim[] = KP_CU_RTC_FP16_SHIM;

/* ------------------------------------------------------------------------ */
/* Loading libnvrtc                                                          */
/* ------------------------------------------------------------------------ */

#define KP_NVRTC_SYMBOLS(X)                                                                                      \
    X(nvrtcGetErrorString, const char *, nvrtcResult)                                                            \
    X(nvrtcVersion, nvrtcResult, int *, int *)                                                                   \
    X(nvrtcGetNumSupportedArchs, nvrtcResult, int *)                                                             \
    X(nvrtcGetSupportedArchs, nvrtcResult, int *)                                                                \
    X(nvrtcCreateProgram, nvrtcResult, nvrtcProgram *, const char *, const char *, int, const char *const *,     \
      const char *const *)                                                                                       \
    X(nvrtcCompileProgram, nvrtcResult, nvrtcProgram, int, const char *const *)                                  \
    X(nvrtcGetProgramLogSize, nvrtcResult, nvrtcProgram, size_t *)                                               \
    X(nvrtcGetProgramLog, nvrtcResult, nvrtcProgram, char *)                                                     \
    X(nvrtcGetCUBINSize, nvrtcResult, nvrtcProgram, size_t *)                                                    \
    X(nvrtcGetCUBIN, nvrtcResult, nvrtcProgram, char *)                                                          \
    X(nvrtcGetPTXSize, nvrtcResult, nvrtcProgram, size_t *)                                                      \
    X(nvrtcGetPTX, nvrtcResult, nvrtcProgram, char *)                                                            \
    X(nvrtcDestroyProgram, nvrtcResult, nvrtcProgram *)

#ifdef KP_CU_HAVE_NVRTC_H
#define KP_NVRTC_CHECK(name, ret, ...)                                                     \
    _Static_assert(__builtin_types_compatible_p(__typeof__(&name), ret (*)(__VA_ARGS__)), \
                   "cuda_rtc.c: " #name " does not match nvrtc.h");
KP_NVRTC_SYMBOLS(KP_NVRTC_CHECK)
#undef KP_NVRTC_CHECK
#endif

typedef struct kp_nvrtc_syms {
#define KP_NVRTC_FIELD(name, ret, ...) ret (*name)(__VA_ARGS__);
    KP_NVRTC_SYMBOLS(KP_NVRTC_FIELD)
#undef KP_NVRTC_FIELD
} kp_nvrtc_syms;

#define KP_CU_RTC_MAX_ARCHS 64

static struct {
    pthread_once_t once;
    pthread_mutex_t compile_lock; /* one NVRTC compile at a time */
    kp_status status;             /* KP_OK: libnvrtc is loaded */
    char why[KP_REASON_MAX];      /* when status != KP_OK */
    char lib[32];                 /* the name libnvrtc was found under */
    int major, minor;             /* nvrtcVersion */
    int archs[KP_CU_RTC_MAX_ARCHS]; /* nvrtcGetSupportedArchs, ascending */
    int narchs;
    kp_nvrtc_syms rtc;
} g_rtc = {.once = PTHREAD_ONCE_INIT, .compile_lock = PTHREAD_MUTEX_INITIALIZER};

static void rtc_load(void) {
    static const char *const names[] = {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"};
    char tried[KP_REASON_MAX] = "";
    g_rtc.status = KP_ERR_UNAVAILABLE;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!lib) {
            const char *err = dlerror();
            kp_gpu_append(tried, sizeof tried, "%s%s", tried[0] ? "; " : "", err ? err : names[i]);
            continue;
        }
        const char *missing = NULL;
#define KP_NVRTC_RESOLVE(name, ret, ...) \
    if (!missing && !(*(void **)&g_rtc.rtc.name = dlsym(lib, #name))) missing = #name;
        KP_NVRTC_SYMBOLS(KP_NVRTC_RESOLVE)
#undef KP_NVRTC_RESOLVE
        int n = 0;
        if (!missing && (g_rtc.rtc.nvrtcVersion(&g_rtc.major, &g_rtc.minor) != NVRTC_SUCCESS ||
                         g_rtc.rtc.nvrtcGetNumSupportedArchs(&n) != NVRTC_SUCCESS || n <= 0 ||
                         n > KP_CU_RTC_MAX_ARCHS || g_rtc.rtc.nvrtcGetSupportedArchs(g_rtc.archs) != NVRTC_SUCCESS))
            missing = "a supported-arch list (nvrtcVersion / nvrtcGetSupportedArchs failed)";
        if (!missing) {
            g_rtc.narchs = n;
            snprintf(g_rtc.lib, sizeof g_rtc.lib, "%s", names[i]);
            g_rtc.status = KP_OK;
            return; /* stays loaded for the process */
        }
        kp_gpu_append(tried, sizeof tried, "%s%s: no %s", tried[0] ? "; " : "", names[i], missing);
        dlclose(lib);
        memset(&g_rtc.rtc, 0, sizeof g_rtc.rtc);
    }
    snprintf(g_rtc.why, sizeof g_rtc.why, "NVRTC not found (tried: %s)", tried);
}

const char *kp_cu_rtc_version(char *buf, size_t len) {
    pthread_once(&g_rtc.once, rtc_load);
    if (g_rtc.status == KP_OK)
        snprintf(buf, len, "NVRTC %d.%d (%s)", g_rtc.major, g_rtc.minor, g_rtc.lib);
    else
        snprintf(buf, len, "%s", g_rtc.why);
    return buf;
}

/* ------------------------------------------------------------------------ */
/* The arch                                                                  */
/* ------------------------------------------------------------------------ */

kp_status kp_cu_rtc_check(int cc, char *arch, size_t arch_len, char *why, size_t why_len) {
    pthread_once(&g_rtc.once, rtc_load);
    if (arch && arch_len) arch[0] = '\0';
    if (g_rtc.status != KP_OK) {
        if (why_len) snprintf(why, why_len, "%s", g_rtc.why);
        return g_rtc.status;
    }
    int listed = 0, below = 0;
    for (int i = 0; i < g_rtc.narchs; i++) {
        if (g_rtc.archs[i] == cc) listed = 1;
        if (g_rtc.archs[i] < cc && g_rtc.archs[i] > below) below = g_rtc.archs[i];
    }
    char a[32];
    if (listed)
        snprintf(a, sizeof a, "sm_%d%s", cc, cc == 90 ? "a" : "");
    else if (below >= 80)
        snprintf(a, sizeof a, "compute_%d", below); /* PTX; the driver JIT-compiles it for cc */
    else {
        if (why_len)
            snprintf(why, why_len, "NVRTC %d.%d (%s) cannot build for sm_%d (it lists sm_%d to sm_%d)", g_rtc.major,
                     g_rtc.minor, g_rtc.lib, cc, g_rtc.archs[0], g_rtc.archs[g_rtc.narchs - 1]);
        return KP_ERR_UNSUPPORTED;
    }
    if (arch && arch_len) snprintf(arch, arch_len, "%s", a);
    if (why_len) why[0] = '\0';
    return KP_OK;
}

/* ------------------------------------------------------------------------ */
/* Compiling                                                                 */
/* ------------------------------------------------------------------------ */

kp_status kp_cu_rtc_compile(const kp_host_services *host, int cc, const char *source, const char *options,
                            unsigned char **binary, size_t *size, int *is_ptx) {
    *binary = NULL;
    *size = 0;
    if (is_ptx) *is_ptx = 0;
    char why[KP_REASON_MAX], arch[32];
    kp_status st = kp_cu_rtc_check(cc, arch, sizeof arch, why, sizeof why);
    if (st != KP_OK) return host->set_error(st, "cuda: %s (kernel %s [%s])", why, source, options);
    const char *text = kp_cu_rtc_source(source, NULL);
    if (!text)
        return host->set_error(KP_ERR_UNSUPPORTED, "cuda: kernel source %s is not built into this plugin%s", source,
#ifdef KP_CU_NO_FATBINS
                               " (it was built without nvcc: no kernel sources embedded)"
#else
                               ""
#endif
        );
    const int ptx = strncmp(arch, "compute_", 8) == 0;

    char archopt[48], optbuf[2048];
    snprintf(archopt, sizeof archopt, "-arch=%s", arch);
    if (snprintf(optbuf, sizeof optbuf, "%s", options) >= (int)sizeof optbuf)
        return host->set_error(KP_ERR_INTERNAL, "cuda: the options of %s are too long for NVRTC", source);
    const char *argv[64] = {archopt, KP_CU_RTC_FIXED_OPTIONS};
    const int fixed = 2;
    int n = kp_gpu_split_options(optbuf, argv + fixed, (int)(sizeof argv / sizeof argv[0]) - fixed);
    if (n < 0) return host->set_error(KP_ERR_INTERNAL, "cuda: too many options for %s", source);

    const kp_nvrtc_syms *rtc = &g_rtc.rtc;
    const char *const header_text[] = {kp_cu_rtc_fp16_shim};
    const char *const header_name[] = {"cuda_fp16.h"};
    pthread_mutex_lock(&g_rtc.compile_lock);
    nvrtcProgram prog = NULL;
    nvrtcResult r = rtc->nvrtcCreateProgram(&prog, text, source, 1, header_text, header_name);
    if (r != NVRTC_SUCCESS) {
        pthread_mutex_unlock(&g_rtc.compile_lock);
        return host->set_error(r == 1 /* NVRTC_ERROR_OUT_OF_MEMORY */ ? KP_ERR_OUT_OF_MEMORY : KP_ERR_BUILD_FAILED,
                               "cuda: nvrtcCreateProgram for %s: %s (%d)", source, rtc->nvrtcGetErrorString(r), (int)r);
    }
    r = rtc->nvrtcCompileProgram(prog, fixed + n, argv);
    if (r != NVRTC_SUCCESS) {
        size_t loglen = 0;
        char *log = NULL;
        if (rtc->nvrtcGetProgramLogSize(prog, &loglen) == NVRTC_SUCCESS && loglen > 0 &&
            (log = malloc(loglen + 1)) != NULL) {
            if (rtc->nvrtcGetProgramLog(prog, log) != NVRTC_SUCCESS) log[0] = '\0';
            log[loglen] = '\0';
        }
        st = host->set_error(KP_ERR_BUILD_FAILED, "cuda: NVRTC %d.%d could not compile kernels/%s [%s] for %s: %s (%d)%s%.3000s",
                             g_rtc.major, g_rtc.minor, source, options, arch, rtc->nvrtcGetErrorString(r), (int)r,
                             log && log[0] ? "\n" : "", log ? log : "");
        free(log);
    }
    size_t len = 0;
    unsigned char *bin = NULL;
    if (st == KP_OK &&
        ((r = ptx ? rtc->nvrtcGetPTXSize(prog, &len) : rtc->nvrtcGetCUBINSize(prog, &len)) != NVRTC_SUCCESS ||
         len == 0))
        st = host->set_error(KP_ERR_BUILD_FAILED, "cuda: NVRTC gave no %s for %s: %s (%d), %zu bytes",
                             ptx ? "PTX" : "CUBIN", source, rtc->nvrtcGetErrorString(r), (int)r, len);
    if (st == KP_OK && !(bin = malloc(len + 1)))
        st = host->set_error(KP_ERR_OUT_OF_MEMORY, "cuda: out of memory for a %zu-byte kernel binary", len);
    if (st == KP_OK &&
        (r = ptx ? rtc->nvrtcGetPTX(prog, (char *)bin) : rtc->nvrtcGetCUBIN(prog, (char *)bin)) != NVRTC_SUCCESS)
        st = host->set_error(KP_ERR_BUILD_FAILED, "cuda: nvrtcGet%s for %s: %s (%d)", ptx ? "PTX" : "CUBIN", source,
                             rtc->nvrtcGetErrorString(r), (int)r);
    rtc->nvrtcDestroyProgram(&prog);
    pthread_mutex_unlock(&g_rtc.compile_lock);
    if (st != KP_OK) {
        free(bin);
        return st;
    }
    bin[len] = '\0'; /* PTX is NUL-terminated already (its size counts the NUL); a CUBIN gains a harmless byte */
    *binary = bin;
    *size = len;
    if (is_ptx) *is_ptx = ptx;
    return KP_OK;
}

/* ------------------------------------------------------------------------ */
/* Through the on-disk cache                                                 */
/* ------------------------------------------------------------------------ */

/* The key text names everything the binary depends on: the source (by hash of its
 * inlined text), the fp16 stand-in, the options and the fixed ones, the arch, NVRTC's
 * version and library. 0 when there is no source or no NVRTC. */
static int rtc_keytext(int cc, const char *source, const char *options, char *keytext, size_t keytext_len) {
    size_t len = 0;
    const char *text = kp_cu_rtc_source(source, &len);
    char arch[32], why[KP_REASON_MAX];
    if (!text || kp_cu_rtc_check(cc, arch, sizeof arch, why, sizeof why) != KP_OK) return 0;
    uint64_t h = kp_fnv1a64(KP_FNV1A64_INIT, text, len);
    uint64_t hs = kp_fnv1a64(KP_FNV1A64_INIT, kp_cu_rtc_fp16_shim, sizeof kp_cu_rtc_fp16_shim - 1);
    return snprintf(keytext, keytext_len, "cuda|source=%s#%016llx|fp16=%016llx|options=%s %s|arch=%s|nvrtc=%d.%d %s",
                    source, (unsigned long long)h, (unsigned long long)hs, KP_CU_RTC_FIXED_OPTIONS, options, arch,
                    g_rtc.major, g_rtc.minor, g_rtc.lib) < (int)keytext_len;
}

int kp_cu_rtc_cache_path(const kp_host_services *host, int cc, const char *source, const char *options, char *path,
                         size_t path_len) {
    char keytext[4096];
    return rtc_keytext(cc, source, options, keytext, sizeof keytext) &&
           kp_gpu_cache_path(kp_gpu_cache_dir(host), "cuda", keytext, path, path_len);
}

typedef struct rtc_job {
    const kp_host_services *host;
    int cc;
    const char *source, *options;
    int is_ptx;
} rtc_job;

static kp_status rtc_job_compile(void *ctx, unsigned char **binary, size_t *size) {
    rtc_job *j = ctx;
    return kp_cu_rtc_compile(j->host, j->cc, j->source, j->options, binary, size, &j->is_ptx);
}

kp_status kp_cu_rtc_build(const kp_host_services *host, int cc, const char *source, const char *options,
                          unsigned char **binary, size_t *size, int *is_ptx, int *from_cache) {
    char keytext[4096];
    if (!rtc_keytext(cc, source, options, keytext, sizeof keytext)) keytext[0] = '\0'; /* compile uncached */
    rtc_job job = {host, cc, source, options, 0};
    int cached = 0;
    kp_status st = kp_gpu_cache_through(host, "cuda", keytext, rtc_job_compile, &job, binary, size, &cached);
    if (is_ptx) *is_ptx = st == KP_OK && (cached ? strstr(keytext, "|arch=compute_") != NULL : job.is_ptx);
    if (from_cache) *from_cache = cached;
    return st;
}
