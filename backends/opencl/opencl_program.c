/*
 * backends/opencl/opencl_program.c — lazy kernel builds with a memory and a disk cache.
 *
 * Lookup order for (source, options) on a device:
 *   1. memory: this device built it already (a list, newest first; a process uses a
 *      few dozen variants at most);
 *   2. disk: <cache dir>/opencl-<key>.bin, key = FNV-1a 64 of source, full options,
 *      the path (source or which SPIR-V module), device name, driver version, device
 *      version and platform. An entry that fails its checks, or whose binary the driver
 *      refuses, is removed and rebuilt;
 *   3. build: from the embedded SPIR-V where that applies (below), else
 *      clCreateProgramWithSource + clBuildProgram; the binary is then written back to
 *      disk (a failed write is logged, never fatal).
 *
 * SPIR-V. kernels/meson.build compiles every variant it lists to SPIR-V (clang-15 ->
 * llvm-spirv-15 -> spirv-val) and embed_spirv.py embeds those modules (kp_ocl_spirv.h),
 * keyed by (source, the canonical -D set, subgroup flavour). A request goes through IL
 * when all of these hold:
 *   - the device reports SPIR-V in CL_DEVICE_IL_VERSION (PoCL and NVIDIA don't), or
 *     KPORT_OPENCL_FORCE_IL=1 is set (a testing aid: it tries IL on any device);
 *   - clCreateProgramWithIL resolves at run time (the headers are 1.2): the ICD
 *     loader's export when the platform is OpenCL >= 2.1, else
 *     clCreateProgramWithILKHR where the device has cl_khr_il_program;
 *   - src is an embedded source and a module matches the request exactly: the -D's of
 *     the full options (KP_TARGET_OPENCL=1, KP_HAS_INLINE_PTX=1 on NVIDIA, the op's),
 *     sorted, equal the module's; the only other compile-time option is
 *     -cl-std=CL1.2 (what the module was built with; -I or another -cl-std means
 *     source); the flavour is the subgroup one iff the device has cl_khr_subgroups and
 *     the request has no -DKP_NO_SUBGROUPS.
 * The IL program is then built with the build-time options only (-cl-mad-enable and
 * the like): -D, -I, -cl-std and -w/-Werror are compile-time and already baked in.
 * Variants the build did not compile (an op's tile sizes from tuning, say) simply use
 * source. When the driver refuses the module (create or build fails), that is logged,
 * the module is not tried again on this device, and the request is built from source:
 * never an error. Source and IL builds have different cache keys ("path" in the key
 * text), so their binaries never mix.
 */
#include "opencl_program.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kp_ocl_spirv.h" /* generated: kp_ocl_spirv_modules[] */
#include "gpu_cache.h"

#define KP_OCL_LOG_MAX 16384 /* of the build log in an error message */

struct kp_ocl_program_entry {
    kp_ocl_program_entry *next;
    uint64_t key;
    char *options; /* full options, owned */
    char *name;    /* owned copy: a test's source may not outlive the entry */
    cl_program program; /* owned */
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* -cl-std=CL1.2 -DKP_TARGET_OPENCL=1 [-DKP_HAS_INLINE_PTX=1 [-DKP_HAS_E4M3_MMA=1]] <options>
 * [$KPORT_OPENCL_TEST_DEFINES]. The last is a testing aid (tests and ci/test set it, e.g.
 * -DKP_WT_EMULATE_MFMA16 to run the kernels' AMD wave-tile layout on PoCL): it is part of
 * the cache key, and its -D's keep the embedded SPIR-V modules from matching. */
static char *full_options(const kp_ocl_device *d, const char *options) {
    const char *base = d->desc.has_e4m3_mma     ? "-cl-std=CL1.2 -DKP_TARGET_OPENCL=1 -DKP_HAS_INLINE_PTX=1 "
                                                  "-DKP_HAS_E4M3_MMA=1"
                       : d->desc.has_inline_ptx ? "-cl-std=CL1.2 -DKP_TARGET_OPENCL=1 -DKP_HAS_INLINE_PTX=1"
                                                : "-cl-std=CL1.2 -DKP_TARGET_OPENCL=1";
    const char *extra = getenv("KPORT_OPENCL_TEST_DEFINES");
    if (!extra) extra = "";
    size_t n = strlen(base) + 3 + (options ? strlen(options) : 0) + strlen(extra);
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s%s%s%s", base, options && options[0] ? " " : "", options ? options : "", extra[0] ? " " : "",
                 extra);
    return s;
}

/* What identifies a binary besides the source text: written into the cache file and
 * compared on load. path: "source", or "spirv <module> <hash of its bytes>" for a
 * program built from an embedded module. */
static char *key_text(const kp_ocl_device *d, const kp_ocl_source *src, const char *opts,
                      const kp_ocl_spirv_module *il) {
    const kp_device_info *i = &d->desc.info;
    uint64_t src_hash = kp_fnv1a64(KP_FNV1A64_INIT, src->text, src->length);
    char path[256] = "source";
    if (il)
        snprintf(path, sizeof path, "spirv %s %016llx", il->name,
                 (unsigned long long)kp_fnv1a64(KP_FNV1A64_INIT, il->il, il->size));
    const char *fmt = "kport-opencl-cache 2\nsource %s %016llx\noptions %s\npath %s\ndevice %s\ndriver %s\n"
                      "version %s\nplatform %s %s\n";
    int n = snprintf(NULL, 0, fmt, src->name, (unsigned long long)src_hash, opts, path, i->name, i->driver,
                     d->desc.device_version, d->desc.platform_name, d->desc.platform_version);
    char *s = n > 0 ? malloc((size_t)n + 1) : NULL;
    if (s)
        snprintf(s, (size_t)n + 1, fmt, src->name, (unsigned long long)src_hash, opts, path, i->name, i->driver,
                 d->desc.device_version, d->desc.platform_name, d->desc.platform_version);
    return s;
}

/* ---- SPIR-V: which module, and how to load it --------------------------- */

typedef cl_program(CL_API_CALL *kp_create_with_il_fn)(cl_context, const void *, size_t, cl_int *);

int kp_ocl_force_il(void) {
    const char *e = getenv("KPORT_OPENCL_FORCE_IL");
    return e && e[0] && strcmp(e, "0") != 0;
}

/* "OpenCL 2.1 ..." -> 201; 0 when unreadable. */
static int cl_version(const char *s) {
    int major = 0, minor = 0;
    return sscanf(s, "OpenCL %d.%d", &major, &minor) == 2 ? major * 100 + minor : 0;
}

/* The ICD loader's clCreateProgramWithIL (OpenCL 2.1): the library clGetPlatformIDs
 * came from, looked up again by name (this plugin may be dlopen'ed RTLD_LOCAL, so
 * RTLD_DEFAULT alone can miss it). */
static void *loader_create_with_il(void) {
    void *fn = NULL;
    Dl_info info;
    if (dladdr((void *)&clGetPlatformIDs, &info) && info.dli_fname) {
        void *h = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
        if (h) {
            fn = dlsym(h, "clCreateProgramWithIL");
            dlclose(h); /* NOLOAD took a reference: the library stays loaded */
        }
    }
    if (!fn) fn = dlsym(RTLD_DEFAULT, "clCreateProgramWithIL");
    return fn;
}

/* Resolves d->il_create once. Called with d->lock held. */
static void il_resolve(kp_ocl_device *d) {
    if (d->il_resolved) return;
    d->il_resolved = 1;
    char pver[128] = "";
    if (clGetPlatformInfo(d->desc.platform, CL_PLATFORM_VERSION, sizeof pver, pver, NULL) != CL_SUCCESS) pver[0] = 0;
    pver[sizeof pver - 1] = '\0';
    /* The core entry dispatches to the vendor's 2.1 table slot: only where the
     * platform is 2.1 or newer (an older vendor's table may not have the slot). */
    if (cl_version(pver) >= 201 && (d->il_create = loader_create_with_il()) != NULL) {
        d->il_create_how = "clCreateProgramWithIL";
    } else if (d->desc.has_il_khr &&
               (d->il_create = clGetExtensionFunctionAddressForPlatform(d->desc.platform,
                                                                        "clCreateProgramWithILKHR")) != NULL) {
        d->il_create_how = "clCreateProgramWithILKHR";
    }
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Splits full options into the canonical -D set (sorted, one space between, without
 * -DKP_NO_SUBGROUPS, which sets *no_sg) and the build-time rest. Returns 0 when the
 * options cannot match a module: a compile-time option the modules were not built
 * with (-I, another -cl-std, -x, -include...), a macro defined twice, out of memory. */
int kp_ocl_il_split(const char *opts, char **defines, char **rest, int *no_sg) {
    size_t n = strlen(opts);
    char *buf = malloc(n + 1), **defs = calloc(n / 2 + 2, sizeof *defs);
    char *d = malloc(n + 1), *r = malloc(n + 1);
    int ok = buf && defs && d && r, nd = 0;
    *defines = *rest = NULL;
    *no_sg = 0;
    if (ok) {
        memcpy(buf, opts, n + 1);
        d[0] = r[0] = '\0';
    }
    for (char *save = NULL, *t = ok ? strtok_r(buf, " \t\n", &save) : NULL; ok && t;
         t = strtok_r(NULL, " \t\n", &save)) {
        if (strcmp(t, "-D") == 0) { /* "-D NAME": not how kport writes them; source */
            ok = 0;
            break;
        }
        if (strncmp(t, "-D", 2) == 0) {
            if (strcmp(t, "-DKP_NO_SUBGROUPS") == 0) *no_sg = 1;
            else defs[nd++] = t;
        } else if (strcmp(t, "-cl-std=CL1.2") == 0 || strcmp(t, "-w") == 0 || strcmp(t, "-Werror") == 0) {
            /* compile-time, as the module was built (warnings: no code) */
        } else if (strncmp(t, "-I", 2) == 0 || strncmp(t, "-cl-std", 7) == 0 || strncmp(t, "-x", 2) == 0 ||
                   strncmp(t, "-include", 8) == 0 || strncmp(t, "-U", 2) == 0 || t[0] != '-') {
            ok = 0; /* a compile-time option the module does not have baked in */
        } else {
            if (r[0]) strcat(r, " ");
            strcat(r, t);
        }
    }
    if (ok) {
        qsort(defs, (size_t)nd, sizeof *defs, cmp_str);
        for (int i = 0; i < nd && ok; ++i) {
            for (int j = 0; j < i && ok; ++j) { /* same macro twice: order would matter */
                size_t li = strcspn(defs[i], "="), lj = strcspn(defs[j], "=");
                if (li == lj && strncmp(defs[i], defs[j], li) == 0) ok = 0;
            }
            if (i) strcat(d, " ");
            strcat(d, defs[i]);
        }
    }
    free(buf);
    free(defs);
    if (!ok) {
        free(d);
        free(r);
        return 0;
    }
    *defines = d;
    *rest = r;
    return 1;
}

/* The embedded module for (src, full options) on d, or NULL; *build_opts (malloc'd)
 * gets the options clBuildProgram takes for it. */
static const kp_ocl_spirv_module *il_find(const kp_ocl_device *d, const kp_ocl_source *src, const char *opts,
                                          char **build_opts) {
    *build_opts = NULL;
    if (kp_ocl_spirv_count == 0) return NULL;
    int embedded = 0;
    for (int i = 0; i < KP_OCL_SRC_COUNT && !embedded; ++i) embedded = src == &kp_ocl_sources[i];
    if (!embedded) return NULL; /* a test's own source, even under an embedded name */
    char *defines = NULL, *rest = NULL;
    int no_sg = 0;
    if (!kp_ocl_il_split(opts, &defines, &rest, &no_sg)) return NULL;
    int sg = d->desc.has_khr_subgroups && !no_sg;
    const kp_ocl_spirv_module *found = NULL;
    for (size_t i = 0; i < kp_ocl_spirv_count && !found; ++i) {
        const kp_ocl_spirv_module *m = &kp_ocl_spirv_modules[i];
        if (m->subgroups == sg && strcmp(m->source, src->name) == 0 && strcmp(m->defines, defines) == 0) found = m;
    }
    free(defines);
    if (found) *build_opts = rest;
    else free(rest);
    return found;
}

const kp_ocl_spirv_module *kp_ocl_spirv_lookup(const kp_ocl_device *d, const kp_ocl_source *src,
                                               const char *options) {
    char *opts = full_options(d, options), *build_opts = NULL;
    const kp_ocl_spirv_module *m = opts ? il_find(d, src, opts, &build_opts) : NULL;
    free(opts);
    free(build_opts);
    return m;
}

/* KP_ERR_BUILD_FAILED with the driver's log; the log is what a kernel author needs. */
static kp_status build_failed(const kp_ocl_device *d, cl_program p, cl_int err, const kp_ocl_source *src,
                              const char *opts) {
    size_t n = 0;
    char *log = NULL;
    if (p && clGetProgramBuildInfo(p, d->desc.id, CL_PROGRAM_BUILD_LOG, 0, NULL, &n) == CL_SUCCESS && n > 0 &&
        (log = malloc(n + 1)) != NULL) {
        if (clGetProgramBuildInfo(p, d->desc.id, CL_PROGRAM_BUILD_LOG, n, log, NULL) != CL_SUCCESS) n = 0;
        log[n] = '\0';
    }
    kp_status st = kp_ocl_host()->set_error(
        KP_ERR_BUILD_FAILED, "opencl: building %s (%s) for '%s' failed: %s (%d)\n%.*s", src->name, opts,
        d->desc.info.name, kp_ocl_error_name(err), (int)err, KP_OCL_LOG_MAX, log && log[0] ? log : "(no build log)");
    free(log);
    return st;
}

static cl_program build_from_binary(kp_ocl_device *d, const unsigned char *bin, size_t len, const char *opts) {
    cl_int err = CL_SUCCESS, bin_status = CL_SUCCESS;
    cl_program p = clCreateProgramWithBinary(d->context, 1, &d->desc.id, &len, &bin, &bin_status, &err);
    if (err != CL_SUCCESS || bin_status != CL_SUCCESS) {
        if (p) clReleaseProgram(p);
        return NULL;
    }
    if (clBuildProgram(p, 1, &d->desc.id, opts, NULL, NULL) != CL_SUCCESS) {
        clReleaseProgram(p);
        return NULL;
    }
    return p;
}

static kp_status build_from_source(kp_ocl_device *d, const kp_ocl_source *src, const char *opts, cl_program *out) {
    cl_int err = CL_SUCCESS;
    const char *text = src->text; /* cl.h takes const char ** */
    *out = NULL;
    cl_program p = clCreateProgramWithSource(d->context, 1, &text, &src->length, &err);
    if (err != CL_SUCCESS) return kp_ocl_fail(err, "clCreateProgramWithSource");
    err = clBuildProgram(p, 1, &d->desc.id, opts, NULL, NULL);
    if (err != CL_SUCCESS) {
        kp_status st = build_failed(d, p, err, src, opts);
        clReleaseProgram(p);
        return st;
    }
    *out = p;
    return KP_OK;
}

/* Writes p's binary to the cache; failures are logged only: the kernel works anyway. */
static void save_binary(kp_ocl_device *d, cl_program p, const char *dir, const char *path, uint64_t key,
                        const char *keytext) {
    size_t len = 0;
    unsigned char *bin = NULL;
    cl_int err = clGetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof len, &len, NULL);
    if (err == CL_SUCCESS && len > 0 && (bin = malloc(len)) != NULL)
        err = clGetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof bin, &bin, NULL);
    if (err != CL_SUCCESS || !bin || len == 0) {
        kp_ocl_host()->log("opencl cache: no binary to save for %s (%s)", path, kp_ocl_error_name(err));
    } else if (kp_gpu_cache_store(kp_ocl_host(), "opencl", dir, path, key, keytext, bin, len) != KP_OK) {
        kp_ocl_host()->log("opencl cache: %s", "store failed (see the previous error); continuing without it");
    } else {
        d->stats.disk_writes++;
    }
    free(bin);
}

/* The module as a program built for d, or NULL with why (the driver's error and log)
 * filled in. Called with d->lock held. */
static cl_program build_from_il(kp_ocl_device *d, const kp_ocl_spirv_module *m, const char *build_opts, char *why,
                                size_t why_len) {
    cl_int err = CL_SUCCESS;
    kp_create_with_il_fn create = (kp_create_with_il_fn)d->il_create;
    cl_program p = create(d->context, m->il, m->size, &err);
    if (err != CL_SUCCESS || !p) {
        snprintf(why, why_len, "%s: %s (%d)", d->il_create_how, kp_ocl_error_name(err), (int)err);
        if (p) clReleaseProgram(p);
        return NULL;
    }
    err = clBuildProgram(p, 1, &d->desc.id, build_opts, NULL, NULL);
    if (err != CL_SUCCESS) {
        char log[1024] = "";
        if (clGetProgramBuildInfo(p, d->desc.id, CL_PROGRAM_BUILD_LOG, sizeof log, log, NULL) != CL_SUCCESS)
            log[0] = '\0';
        log[sizeof log - 1] = '\0';
        snprintf(why, why_len, "clBuildProgram: %s (%d)%s%s", kp_ocl_error_name(err), (int)err, log[0] ? ": " : "",
                 log);
        clReleaseProgram(p);
        return NULL;
    }
    return p;
}

/* Disk, then a build: from il when given (build_opts: its build-time options), else
 * from source. An IL build the driver refuses sets *il_refused and why (logged by the
 * caller, who falls back to source); it is not an error. Called with d->lock held. */
static kp_status program_build(kp_ocl_device *d, const kp_ocl_source *src, const char *opts,
                               const kp_ocl_spirv_module *il, const char *build_opts, uint64_t key,
                               const char *keytext, cl_program *out, kp_ocl_build_info *info, int *il_refused,
                               char *why_il, size_t why_il_len) {
    const char *dir = kp_gpu_cache_dir(kp_ocl_host());
    const char *bin_opts = il ? build_opts : opts;
    char path[1024] = "";
    if (dir && snprintf(path, sizeof path, "%s/opencl-%016llx.bin", dir, (unsigned long long)key) >= (int)sizeof path)
        path[0] = '\0';
    if (info) snprintf(info->cache_path, sizeof info->cache_path, "%s", path);

    if (path[0]) {
        unsigned char *bin = NULL;
        size_t len = 0;
        char why[256];
        kp_gpu_cache_result r = kp_gpu_cache_load(path, key, keytext, &bin, &len, why, sizeof why);
        if (r == KP_GPU_CACHE_HIT) {
            *out = build_from_binary(d, bin, len, bin_opts);
            free(bin);
            if (*out) {
                d->stats.disk_hits++;
                if (info) info->origin = KP_OCL_FROM_DISK;
                return KP_OK;
            }
            snprintf(why, sizeof why, "the driver refused the cached binary");
            kp_gpu_cache_discard(path, why, sizeof why);
            r = KP_GPU_CACHE_CORRUPT;
        }
        if (r == KP_GPU_CACHE_CORRUPT) {
            d->stats.disk_rejected++;
            kp_ocl_host()->log("opencl cache: bad entry %s (%s); rebuilding", path, why);
        }
    }

    if (il) {
        *out = build_from_il(d, il, build_opts, why_il, why_il_len);
        if (!*out) {
            *il_refused = 1;
            d->stats.il_failures++;
            return KP_ERR_BUILD_FAILED; /* nothing recorded: the caller builds from source */
        }
        d->stats.il_builds++;
        if (info) info->origin = KP_OCL_FROM_IL;
    } else {
        kp_status st = build_from_source(d, src, opts, out);
        if (st != KP_OK) return st;
        d->stats.source_builds++;
        if (info) info->origin = KP_OCL_FROM_SOURCE;
    }
    if (path[0]) save_binary(d, *out, dir, path, key, keytext);
    return KP_OK;
}

/* Memory, then program_build, for one path (il NULL: source). Takes ownership of
 * nothing. Called with d->lock held. */
static kp_status variant_get(kp_ocl_device *d, const kp_ocl_source *src, const char *opts,
                             const kp_ocl_spirv_module *il, const char *build_opts, cl_program *out,
                             kp_ocl_build_info *info, int *il_refused, char *why_il, size_t why_il_len) {
    char *keytext = key_text(d, src, opts, il);
    char *opts_copy = strdup(opts);
    kp_ocl_program_entry *e = NULL;
    kp_status st = KP_OK;
    if (!keytext || !opts_copy) goto oom;
    uint64_t key = kp_fnv1a64(kp_fnv1a64(KP_FNV1A64_INIT, keytext, strlen(keytext)), src->text, src->length);
    if (info) info->key = key;

    for (e = d->programs; e; e = e->next)
        if (e->key == key && strcmp(e->options, opts) == 0 && strcmp(e->name, src->name) == 0) {
            *out = e->program;
            d->stats.memory_hits++;
            if (info) info->origin = KP_OCL_FROM_MEMORY;
            goto done;
        }

    e = calloc(1, sizeof *e);
    if (!e || !(e->name = strdup(src->name))) goto oom;
    st = program_build(d, src, opts, il, build_opts, key, keytext, &e->program, info, il_refused, why_il, why_il_len);
    if (st != KP_OK) {
        free(e->name);
        free(e);
        goto done;
    }
    e->key = key;
    e->options = opts_copy;
    opts_copy = NULL; /* owned by the entry now */
    e->next = d->programs;
    d->programs = e;
    *out = e->program;
    goto done;
oom:
    if (e) free(e);
    st = kp_ocl_host()->set_error(KP_ERR_OUT_OF_MEMORY, "opencl: out of memory building %s", src->name);
done:
    free(keytext);
    free(opts_copy);
    return st;
}

uint64_t kp_ocl_program_key(const kp_ocl_device *d, const kp_ocl_source *src, const char *options,
                            const kp_ocl_spirv_module *il) {
    char *opts = full_options(d, options);
    char *keytext = opts ? key_text(d, src, opts, il) : NULL;
    uint64_t key = keytext ? kp_fnv1a64(kp_fnv1a64(KP_FNV1A64_INIT, keytext, strlen(keytext)), src->text,
                                        src->length)
                           : 0;
    free(opts);
    free(keytext);
    return key;
}

/* The module to try for (src, opts) on d, or NULL (source); *build_opts as il_find.
 * Called with d->lock held. */
static const kp_ocl_spirv_module *il_choose(kp_ocl_device *d, const kp_ocl_source *src, const char *opts,
                                            char **build_opts) {
    *build_opts = NULL;
    int forced = kp_ocl_force_il();
    if (kp_ocl_spirv_count == 0 || !(d->desc.has_spirv_il || forced)) return NULL;
    const kp_ocl_spirv_module *m = il_find(d, src, opts, build_opts);
    size_t idx = m ? (size_t)(m - kp_ocl_spirv_modules) : 0;
    if (m && d->il_failed && d->il_failed[idx]) m = NULL; /* refused before on this device */
    if (m && !d->il_resolved) {
        il_resolve(d);
        if (!d->il_create)
            kp_ocl_host()->log("opencl: '%s'%s, but neither clCreateProgramWithIL (platform OpenCL >= 2.1) nor "
                               "clCreateProgramWithILKHR (cl_khr_il_program) is available: kernels build from source",
                               d->desc.info.name, d->desc.has_spirv_il ? " takes SPIR-V" : " (KPORT_OPENCL_FORCE_IL)");
    }
    if (m && !d->il_create) m = NULL;
    if (!m) {
        free(*build_opts);
        *build_opts = NULL;
    }
    return m;
}

kp_status kp_ocl_program_get(kp_ocl_device *d, const kp_ocl_source *src, const char *options, cl_program *out,
                             kp_ocl_build_info *info) {
    double t0 = now_ms();
    *out = NULL;
    if (info) memset(info, 0, sizeof *info);
    if (!src || !src->text)
        return kp_ocl_host()->set_error(KP_ERR_INVALID_ARGUMENT, "opencl: no kernel source given");

    char *opts = full_options(d, options);
    if (!opts) return kp_ocl_host()->set_error(KP_ERR_OUT_OF_MEMORY, "opencl: out of memory building %s", src->name);

    kp_status st = KP_OK;
    char *build_opts = NULL;
    pthread_mutex_lock(&d->lock);
    const kp_ocl_spirv_module *il = il_choose(d, src, opts, &build_opts);
    if (il) {
        int refused = 0;
        char why[1400] = "";
        st = variant_get(d, src, opts, il, build_opts, out, info, &refused, why, sizeof why);
        uint64_t il_key = info ? info->key : 0;
        if (st == KP_OK || !refused) goto done;
        /* The driver refused the module: note it, never try it again here, use source. */
        size_t idx = (size_t)(il - kp_ocl_spirv_modules);
        if (!d->il_failed) d->il_failed = calloc(kp_ocl_spirv_count, 1);
        if (d->il_failed) d->il_failed[idx] = 1;
        kp_ocl_host()->log("opencl: '%s' refused SPIR-V module %s for %s (%s): %s; building from source instead",
                           d->desc.info.name, il->name, src->name, opts, why);
        if (info) {
            memset(info, 0, sizeof *info);
            info->il_fallback = 1;
            info->il_key = il_key;
            info->il_module = il->name;
        }
        il = NULL;
    }
    st = variant_get(d, src, opts, NULL, NULL, out, info, NULL, NULL, 0);
done:
    pthread_mutex_unlock(&d->lock);
    if (info && il && st == KP_OK) {
        info->from_il = 1;
        info->il_key = info->key;
        info->il_module = il->name;
    }
    free(opts);
    free(build_opts);
    if (info) info->ms = now_ms() - t0;
    return st;
}

kp_status kp_ocl_kernel_create(kp_ocl_device *d, kp_ocl_source_id id, const char *options, const char *kernel_name,
                               cl_kernel *out, kp_ocl_build_info *info) {
    cl_program p = NULL;
    *out = NULL;
    if ((unsigned)id >= KP_OCL_SRC_COUNT)
        return kp_ocl_host()->set_error(KP_ERR_INVALID_ARGUMENT, "opencl: no kernel source %d", (int)id);
    kp_status st = kp_ocl_program_get(d, &kp_ocl_sources[id], options, &p, info);
    if (st != KP_OK) return st;
    cl_int err = CL_SUCCESS;
    cl_kernel k = clCreateKernel(p, kernel_name, &err);
    if (err != CL_SUCCESS)
        return kp_ocl_host()->add_context(kp_ocl_fail(err, "clCreateKernel"), "kernel '%s' of %s", kernel_name,
                                          kp_ocl_sources[id].name);
    *out = k;
    return KP_OK;
}

kp_ocl_cache_stats kp_ocl_cache_stats_get(kp_ocl_device *d) {
    pthread_mutex_lock(&d->lock);
    kp_ocl_cache_stats s = d->stats;
    pthread_mutex_unlock(&d->lock);
    return s;
}

void kp_ocl_programs_release(kp_ocl_device *d) {
    kp_ocl_program_entry *e = d->programs;
    while (e) {
        kp_ocl_program_entry *next = e->next;
        clReleaseProgram(e->program);
        free(e->options);
        free(e->name);
        free(e);
        e = next;
    }
    d->programs = NULL;
    free(d->il_failed);
    d->il_failed = NULL;
}
