/*
 * backends/opencl/opencl_program.c — lazy kernel builds with a memory and a disk cache.
 *
 * Lookup order for (source, options) on a device:
 *   1. memory: this device built it already (a list, newest first; a process uses a
 *      few dozen variants at most);
 *   2. disk: <cache dir>/opencl-<key>.bin, key = FNV-1a 64 of source, full options,
 *      device name, driver version, device version and platform. An entry that fails
 *      its checks, or whose binary the driver refuses, is removed and rebuilt;
 *   3. source: clCreateProgramWithSource + clBuildProgram, then the binary is written
 *      back to disk (a failed write is logged, never fatal).
 * Where the device takes SPIR-V (CL_DEVICE_IL_VERSION), builds still go through source
 * for now: the SPIR-V kernels/meson.build validates is not embedded yet.
 */
#include "opencl_program.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "opencl_cache.h"

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

/* -cl-std=CL1.2 -DKP_TARGET_OPENCL=1 [-DKP_HAS_INLINE_PTX=1] <options> */
static char *full_options(const kp_ocl_device *d, const char *options) {
    const char *base = d->desc.has_inline_ptx ? "-cl-std=CL1.2 -DKP_TARGET_OPENCL=1 -DKP_HAS_INLINE_PTX=1"
                                              : "-cl-std=CL1.2 -DKP_TARGET_OPENCL=1";
    size_t n = strlen(base) + 2 + (options ? strlen(options) : 0);
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s%s", base, options && options[0] ? " " : "", options ? options : "");
    return s;
}

/* What identifies a binary besides the source text: written into the cache file and
 * compared on load. */
static char *key_text(const kp_ocl_device *d, const kp_ocl_source *src, const char *opts) {
    const kp_device_info *i = &d->desc.info;
    uint64_t src_hash = kp_fnv1a64(KP_FNV1A64_INIT, src->text, src->length);
    const char *fmt = "kport-opencl-cache 1\nsource %s %016llx\noptions %s\ndevice %s\ndriver %s\nversion %s\n"
                      "platform %s %s\n";
    int n = snprintf(NULL, 0, fmt, src->name, (unsigned long long)src_hash, opts, i->name, i->driver,
                     d->desc.device_version, d->desc.platform_name, d->desc.platform_version);
    char *s = n > 0 ? malloc((size_t)n + 1) : NULL;
    if (s)
        snprintf(s, (size_t)n + 1, fmt, src->name, (unsigned long long)src_hash, opts, i->name, i->driver,
                 d->desc.device_version, d->desc.platform_name, d->desc.platform_version);
    return s;
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
    } else if (kp_ocl_cache_store(dir, path, key, keytext, bin, len) != KP_OK) {
        kp_ocl_host()->log("opencl cache: %s", "store failed (see the previous error); continuing without it");
    } else {
        d->stats.disk_writes++;
    }
    free(bin);
}

/* Disk, then source. Called with d->lock held. */
static kp_status program_build(kp_ocl_device *d, const kp_ocl_source *src, const char *opts, uint64_t key,
                               const char *keytext, cl_program *out, kp_ocl_build_info *info) {
    const char *dir = kp_ocl_cache_dir();
    char path[1024] = "";
    if (dir && snprintf(path, sizeof path, "%s/opencl-%016llx.bin", dir, (unsigned long long)key) >= (int)sizeof path)
        path[0] = '\0';
    if (info) snprintf(info->cache_path, sizeof info->cache_path, "%s", path);

    if (path[0]) {
        unsigned char *bin = NULL;
        size_t len = 0;
        char why[256];
        kp_ocl_cache_result r = kp_ocl_cache_load(path, key, keytext, &bin, &len, why, sizeof why);
        if (r == KP_OCL_CACHE_HIT) {
            *out = build_from_binary(d, bin, len, opts);
            free(bin);
            if (*out) {
                d->stats.disk_hits++;
                if (info) info->origin = KP_OCL_FROM_DISK;
                return KP_OK;
            }
            unlink(path);
            snprintf(why, sizeof why, "the driver refused the cached binary");
            r = KP_OCL_CACHE_CORRUPT;
        }
        if (r == KP_OCL_CACHE_CORRUPT) {
            d->stats.disk_rejected++;
            kp_ocl_host()->log("opencl cache: removed %s (%s); rebuilding", path, why);
        }
    }

    kp_status st = build_from_source(d, src, opts, out);
    if (st != KP_OK) return st;
    d->stats.source_builds++;
    if (info) info->origin = KP_OCL_FROM_SOURCE;
    if (path[0]) save_binary(d, *out, dir, path, key, keytext);
    return KP_OK;
}

kp_status kp_ocl_program_get(kp_ocl_device *d, const kp_ocl_source *src, const char *options, cl_program *out,
                             kp_ocl_build_info *info) {
    double t0 = now_ms();
    *out = NULL;
    if (info) memset(info, 0, sizeof *info);
    if (!src || !src->text)
        return kp_ocl_host()->set_error(KP_ERR_INVALID_ARGUMENT, "opencl: no kernel source given");

    char *opts = full_options(d, options);
    char *keytext = opts ? key_text(d, src, opts) : NULL;
    if (!opts || !keytext) {
        free(opts);
        free(keytext);
        return kp_ocl_host()->set_error(KP_ERR_OUT_OF_MEMORY, "opencl: out of memory building %s", src->name);
    }
    uint64_t key = kp_fnv1a64(kp_fnv1a64(KP_FNV1A64_INIT, keytext, strlen(keytext)), src->text, src->length);
    if (info) info->key = key;

    kp_status st = KP_OK;
    pthread_mutex_lock(&d->lock);
    for (kp_ocl_program_entry *e = d->programs; e; e = e->next)
        if (e->key == key && strcmp(e->options, opts) == 0 && strcmp(e->name, src->name) == 0) {
            *out = e->program;
            d->stats.memory_hits++;
            if (info) info->origin = KP_OCL_FROM_MEMORY;
            goto done;
        }

    kp_ocl_program_entry *e = calloc(1, sizeof *e);
    if (e && !(e->name = strdup(src->name))) {
        free(e);
        e = NULL;
    }
    if (!e) {
        st = kp_ocl_host()->set_error(KP_ERR_OUT_OF_MEMORY, "opencl: out of memory building %s", src->name);
        goto done;
    }
    st = program_build(d, src, opts, key, keytext, &e->program, info);
    if (st != KP_OK) {
        free(e->name);
        free(e);
        goto done;
    }
    e->key = key;
    e->options = opts;
    e->next = d->programs;
    d->programs = e;
    opts = NULL; /* owned by the entry now */
    *out = e->program;
done:
    pthread_mutex_unlock(&d->lock);
    free(opts);
    free(keytext);
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
}
