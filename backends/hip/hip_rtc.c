/*
 * backends/hip/hip_rtc.c — embedded code objects, and hiprtc for the other archs
 * (hip_rtc.h says when and why).
 *
 * Two libraries are dlopen'd once per process, on first need:
 *   hiprtc  libhiprtc.so(.6) on ROCm 6+, libamdhip64.so(.5) on ROCm 5, where it lives
 *           inside the runtime. Loading it does not start the runtime (no hipInit).
 *   comgr   libamd_comgr, for its ISA list only: the copy hiprtc's library already
 *           loaded when there is one (RTLD_NOLOAD first), so the list is the one the
 *           compiler will use.
 */
#include "hip_rtc.h"

#include "gpu_cache.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hip/hiprtc.h>

/* ------------------------------------------------------------------------ */
/* Embedded tables                                                           */
/* ------------------------------------------------------------------------ */

const kp_hip_code_object *kp_hip_code_object_find(const char *arch, const char *source, const char *options) {
    for (size_t i = 0; i < kp_hip_code_object_count; i++) {
        const kp_hip_code_object *c = &kp_hip_code_objects[i];
        if (!strcmp(c->arch, arch) && !strcmp(c->source, source) && !strcmp(c->options, options)) return c;
    }
    return NULL;
}

const kp_hip_source *kp_hip_source_find(const char *name) {
    for (size_t i = 0; i < kp_hip_source_count; i++)
        if (!strcmp(kp_hip_sources[i].name, name)) return &kp_hip_sources[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Loading hiprtc and comgr                                                  */
/* ------------------------------------------------------------------------ */

/* The hiprtc entry points, checked against hiprtc.h like hip_symbols.inc. */
#define KP_HIPRTC_SYMBOLS(X)                                                                            \
    X(hiprtcGetErrorString, const char *, hiprtcResult)                                                 \
    X(hiprtcCreateProgram, hiprtcResult, hiprtcProgram *, const char *, const char *, int, const char **, \
      const char **)                                                                                    \
    X(hiprtcCompileProgram, hiprtcResult, hiprtcProgram, int, const char **)                            \
    X(hiprtcGetProgramLogSize, hiprtcResult, hiprtcProgram, size_t *)                                   \
    X(hiprtcGetProgramLog, hiprtcResult, hiprtcProgram, char *)                                         \
    X(hiprtcGetCodeSize, hiprtcResult, hiprtcProgram, size_t *)                                         \
    X(hiprtcGetCode, hiprtcResult, hiprtcProgram, char *)                                               \
    X(hiprtcDestroyProgram, hiprtcResult, hiprtcProgram *)

#define KP_HIPRTC_CHECK(name, ret, ...)                                                    \
    _Static_assert(__builtin_types_compatible_p(__typeof__(&name), ret (*)(__VA_ARGS__)), \
                   "hip_rtc.c: " #name " does not match hiprtc.h");
KP_HIPRTC_SYMBOLS(KP_HIPRTC_CHECK)
#undef KP_HIPRTC_CHECK

typedef struct kp_hiprtc_syms {
#define KP_HIPRTC_FIELD(name, ret, ...) ret (*name)(__VA_ARGS__);
    KP_HIPRTC_SYMBOLS(KP_HIPRTC_FIELD)
#undef KP_HIPRTC_FIELD
} kp_hiprtc_syms;

/* comgr's ISA list (amd_comgr.h, declared here: the plugin builds without the header) */
typedef int (*kp_comgr_get_isa_count_fn)(size_t *count);
typedef int (*kp_comgr_get_isa_name_fn)(size_t index, const char **name);
typedef void (*kp_comgr_get_version_fn)(size_t *major, size_t *minor);

static struct {
    pthread_once_t once;
    pthread_mutex_t compile_lock; /* one hiprtc compile at a time */
    kp_status status;             /* KP_OK: rtc and the comgr ISA list are usable */
    char why[KP_REASON_MAX];      /* when status != KP_OK */
    char rtc_lib[32];             /* the name hiprtc was found under */
    kp_hiprtc_syms rtc;
    kp_comgr_get_isa_count_fn isa_count;
    kp_comgr_get_isa_name_fn isa_name;
    char comgr[64]; /* "libamd_comgr.so.2 (comgr 2.4)" */
} g_rtc = {.once = PTHREAD_ONCE_INIT, .compile_lock = PTHREAD_MUTEX_INITIALIZER};

static int rtc_load_hiprtc(void) {
    static const char *const names[] = {"libhiprtc.so", "libhiprtc.so.6", "libamdhip64.so", "libamdhip64.so.6",
                                        "libamdhip64.so.5"};
    char tried[KP_REASON_MAX] = "";
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!lib) {
            const char *err = dlerror();
            kp_gpu_append(tried, sizeof tried, "%s%s", tried[0] ? "; " : "", err ? err : names[i]);
            continue;
        }
        int ok = 1;
#define KP_HIPRTC_RESOLVE(name, ret, ...) \
    if (ok && !(*(void **)&g_rtc.rtc.name = dlsym(lib, #name))) ok = 0;
        KP_HIPRTC_SYMBOLS(KP_HIPRTC_RESOLVE)
#undef KP_HIPRTC_RESOLVE
        if (ok) {
            snprintf(g_rtc.rtc_lib, sizeof g_rtc.rtc_lib, "%s", names[i]);
            return 1; /* stays loaded: the runtime may use it too */
        }
        kp_gpu_append(tried, sizeof tried, "%s%s: no hiprtc entry points", tried[0] ? "; " : "", names[i]);
        dlclose(lib);
        memset(&g_rtc.rtc, 0, sizeof g_rtc.rtc);
    }
    snprintf(g_rtc.why, sizeof g_rtc.why, "hiprtc not found (tried: %s)", tried);
    return 0;
}

static int rtc_load_comgr(void) {
    static const char *const names[] = {"libamd_comgr.so.3", "libamd_comgr.so.2", "libamd_comgr.so"};
    void *lib = NULL;
    const char *name = NULL;
    for (int pass = 0; pass < 2 && !lib; pass++) /* the copy already loaded first */
        for (size_t i = 0; i < sizeof names / sizeof names[0] && !lib; i++)
            if ((lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL | (pass == 0 ? RTLD_NOLOAD : 0)))) name = names[i];
    if (!lib) {
        const char *err = dlerror();
        snprintf(g_rtc.why, sizeof g_rtc.why,
                 "hiprtc is not used: its target list cannot be checked without the code-object manager "
                 "(libamd_comgr.so.3/.so.2/.so: %s), and an unlisted target aborts the process",
                 err ? err : "not found");
        return 0;
    }
    g_rtc.isa_count = (kp_comgr_get_isa_count_fn)dlsym(lib, "amd_comgr_get_isa_count");
    g_rtc.isa_name = (kp_comgr_get_isa_name_fn)dlsym(lib, "amd_comgr_get_isa_name");
    kp_comgr_get_version_fn version = (kp_comgr_get_version_fn)dlsym(lib, "amd_comgr_get_version");
    if (!g_rtc.isa_count || !g_rtc.isa_name) {
        snprintf(g_rtc.why, sizeof g_rtc.why, "hiprtc is not used: %s lacks amd_comgr_get_isa_count/_name", name);
        return 0;
    }
    size_t major = 0, minor = 0;
    if (version) version(&major, &minor);
    snprintf(g_rtc.comgr, sizeof g_rtc.comgr, "comgr %zu.%zu", major, minor);
    return 1;
}

static void rtc_load(void) {
    g_rtc.status = rtc_load_hiprtc() && rtc_load_comgr() ? KP_OK : KP_ERR_UNAVAILABLE;
}

/* ------------------------------------------------------------------------ */
/* The arch check                                                            */
/* ------------------------------------------------------------------------ */

/* "amdgcn-amd-amdhsa--gfx90a" or "...--gfx90a:sramecc+:xnack-" names arch. */
static int isa_is(const char *isa, const char *arch) {
    static const char prefix[] = "amdgcn-amd-amdhsa--";
    if (strncmp(isa, prefix, sizeof prefix - 1) != 0) return 0;
    isa += sizeof prefix - 1;
    size_t n = strlen(arch);
    return strncmp(isa, arch, n) == 0 && (isa[n] == '\0' || isa[n] == ':');
}

kp_status kp_hip_rtc_check(const char *arch, char *why, size_t why_len) {
    pthread_once(&g_rtc.once, rtc_load);
    if (g_rtc.status != KP_OK) {
        snprintf(why, why_len, "%s", g_rtc.why);
        return g_rtc.status;
    }
    size_t n = 0;
    if (g_rtc.isa_count(&n) != 0) n = 0;
    for (size_t i = 0; i < n; i++) {
        const char *isa = NULL;
        if (g_rtc.isa_name(i, &isa) == 0 && isa && isa_is(isa, arch)) {
            if (why_len) why[0] = '\0';
            return KP_OK;
        }
    }
    /* gfx94x arrived in comgr with ROCm 5.7 (gfx940/941/942), gfx11xx with ROCm 5.5 */
    snprintf(why, why_len,
             "hiprtc of this ROCm (%s, %s) cannot target %s; ROCm 5.7 or newer is needed, or a kport build "
             "whose embedded code objects include it (this one has %s%s%s)",
             g_rtc.comgr, g_rtc.rtc_lib, arch, kp_hip_arch_count > 0 ? kp_hip_archs[0] : "none",
             kp_hip_arch_count > 1 ? ", " : "", kp_hip_arch_count > 1 ? kp_hip_archs[1] : "");
    if (kp_hip_arch_count > 2) {
        /* the message above names two; list the rest */
        char *p = strstr(why, "(this one has ");
        if (p) {
            p[0] = '\0';
            kp_gpu_append(why, why_len, "(this one has");
            for (size_t i = 0; i < kp_hip_arch_count; i++) kp_gpu_append(why, why_len, "%s %s", i ? "," : "", kp_hip_archs[i]);
            kp_gpu_append(why, why_len, ")");
        }
    }
    return KP_ERR_UNSUPPORTED;
}

/* ------------------------------------------------------------------------ */
/* Compiling                                                                 */
/* ------------------------------------------------------------------------ */

kp_status kp_hip_rtc_compile(const kp_host_services *host, const char *arch, const char *source,
                             const char *options, unsigned char **binary, size_t *size) {
    *binary = NULL;
    *size = 0;
    char why[KP_REASON_MAX];
    kp_status st = kp_hip_rtc_check(arch, why, sizeof why);
    if (st != KP_OK) return host->set_error(st, "hip: %s (kernel %s)", why, source);
    const kp_hip_source *src = kp_hip_source_find(source);
    if (!src) return host->set_error(KP_ERR_UNSUPPORTED, "hip: kernel source %s is not built into this plugin", source);

    char archopt[64], optbuf[2048];
    snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
    if (snprintf(optbuf, sizeof optbuf, "%s", options) >= (int)sizeof optbuf)
        return host->set_error(KP_ERR_INTERNAL, "hip: the options of %s are too long for hiprtc", source);
    const char *argv[64] = {archopt, KP_HIP_FIXED_OPTIONS_ARGV};
    int fixed = 1 + KP_HIP_FIXED_OPTIONS_COUNT;
    int n = kp_gpu_split_options(optbuf, argv + fixed, (int)(sizeof argv / sizeof argv[0]) - fixed);
    if (n < 0) return host->set_error(KP_ERR_INTERNAL, "hip: too many options for %s", source);

    const kp_hiprtc_syms *rtc = &g_rtc.rtc;
    pthread_mutex_lock(&g_rtc.compile_lock);
    hiprtcProgram prog = NULL;
    hiprtcResult r = rtc->hiprtcCreateProgram(&prog, src->text, source, 0, NULL, NULL);
    if (r != HIPRTC_SUCCESS) {
        pthread_mutex_unlock(&g_rtc.compile_lock);
        return host->set_error(KP_ERR_BUILD_FAILED, "hip: hiprtcCreateProgram for %s: %s (%d)", source,
                               rtc->hiprtcGetErrorString(r), (int)r);
    }
    r = rtc->hiprtcCompileProgram(prog, fixed + n, argv);
    if (r != HIPRTC_SUCCESS) {
        size_t loglen = 0;
        char *log = NULL;
        if (rtc->hiprtcGetProgramLogSize(prog, &loglen) == HIPRTC_SUCCESS && loglen > 0 &&
            (log = malloc(loglen + 1)) != NULL) {
            if (rtc->hiprtcGetProgramLog(prog, log) != HIPRTC_SUCCESS) log[0] = '\0';
            log[loglen] = '\0';
        }
        st = host->set_error(KP_ERR_BUILD_FAILED, "hip: hiprtc could not compile %s (%s) for %s: %s (%d)%s%.3000s",
                             source, options, arch, rtc->hiprtcGetErrorString(r), (int)r,
                             log && log[0] ? "\n" : "", log ? log : "");
        free(log);
    }
    size_t len = 0;
    unsigned char *bin = NULL;
    if (st == KP_OK && ((r = rtc->hiprtcGetCodeSize(prog, &len)) != HIPRTC_SUCCESS || len == 0))
        st = host->set_error(KP_ERR_BUILD_FAILED, "hip: hiprtcGetCodeSize for %s: %s (%d), %zu bytes", source,
                             rtc->hiprtcGetErrorString(r), (int)r, len);
    if (st == KP_OK && !(bin = malloc(len)))
        st = host->set_error(KP_ERR_OUT_OF_MEMORY, "hip: out of memory for a %zu-byte code object", len);
    if (st == KP_OK && (r = rtc->hiprtcGetCode(prog, (char *)bin)) != HIPRTC_SUCCESS)
        st = host->set_error(KP_ERR_BUILD_FAILED, "hip: hiprtcGetCode for %s: %s (%d)", source,
                             rtc->hiprtcGetErrorString(r), (int)r);
    rtc->hiprtcDestroyProgram(&prog);
    pthread_mutex_unlock(&g_rtc.compile_lock);
    if (st != KP_OK) {
        free(bin);
        return st;
    }
    *binary = bin;
    *size = len;
    return KP_OK;
}

/* ------------------------------------------------------------------------ */
/* Through the on-disk cache                                                 */
/* ------------------------------------------------------------------------ */

/* The key text names everything the binary depends on: the source (by hash of its
 * inlined text), the options and the fixed ones, the arch, the runtime, hiprtc's library. */
static int rtc_keytext(const char *arch, const kp_hip_source *src, const char *options, const char *runtime,
                       char *keytext, size_t keytext_len) {
    uint64_t h = kp_fnv1a64(KP_FNV1A64_INIT, src->text, src->length);
    pthread_once(&g_rtc.once, rtc_load);
    return snprintf(keytext, keytext_len, "hip|source=%s#%016llx|options=%s %s|arch=%s|runtime=%s|rtc=%s %s",
                    src->name, (unsigned long long)h, KP_HIP_FIXED_OPTIONS, options, arch, runtime, g_rtc.rtc_lib,
                    g_rtc.comgr) < (int)keytext_len;
}

int kp_hip_rtc_cache_path(const kp_host_services *host, const char *arch, const char *source, const char *options,
                          const char *runtime, char *path, size_t path_len) {
    const kp_hip_source *src = kp_hip_source_find(source);
    char keytext[4096];
    return src && rtc_keytext(arch, src, options, runtime, keytext, sizeof keytext) &&
           kp_gpu_cache_path(kp_gpu_cache_dir(host), "hip", keytext, path, path_len);
}

typedef struct rtc_job {
    const kp_host_services *host;
    const char *arch, *source, *options;
} rtc_job;

static kp_status rtc_job_compile(void *ctx, unsigned char **binary, size_t *size) {
    const rtc_job *j = ctx;
    return kp_hip_rtc_compile(j->host, j->arch, j->source, j->options, binary, size);
}

kp_status kp_hip_rtc_build(const kp_host_services *host, const char *arch, const char *source, const char *options,
                           const char *runtime, unsigned char **binary, size_t *size, int *from_cache) {
    *binary = NULL;
    *size = 0;
    if (from_cache) *from_cache = 0;
    const kp_hip_source *src = kp_hip_source_find(source);
    if (!src) return host->set_error(KP_ERR_UNSUPPORTED, "hip: kernel source %s is not built into this plugin", source);
    char keytext[4096];
    if (!rtc_keytext(arch, src, options, runtime, keytext, sizeof keytext)) keytext[0] = '\0'; /* compile uncached */
    rtc_job job = {host, arch, source, options};
    return kp_gpu_cache_through(host, "hip", keytext, rtc_job_compile, &job, binary, size, from_cache);
}
