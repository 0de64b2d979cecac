/*
 * backends/cuda/cuda_launch.c — the cuda backend's kp_gpu_target: what the shared op
 * layer (backends/gpu, kp_gpu.h) needs from a GPU plugin, for CUDA.
 *
 *   profile         the device as the planners see it
 *   variant_check   is (source, options) embedded, or can NVRTC build it, and can this
 *                   device run it? (no loading, no compiling)
 *   launch          cuModuleLoadData of the variant's fatbin (once per device, cached),
 *                   cuModuleGetFunction (cached), cuLaunchKernel on the stream
 *   scratch_*       per-stream device memory for split-KV partials
 *
 * The kernels are nvcc fatbins built at build time (build_fatbins.py, one per variant
 * that `kp-gpu-variants cuda` lists) and embedded as kp_cu_fatbin_table. Every op slot
 * of the plugin is kp_gpu_op_run(&kp_cu_target, ...).
 *
 * A variant that is not embedded (a tuned tile, `kbench --tune`) is compiled at its
 * first launch on a device with NVRTC (cuda_rtc.c) into a CUBIN for that device's arch,
 * through the on-disk cache (cuda-<key>.bin), and loaded with the same cuModuleLoadData;
 * those modules are a per-device list keyed by (source, options). The embedded fatbin
 * always comes first: NVRTC never replaces it (on GPUs newer than sm_90a the driver
 * JIT-compiles its compute_80 PTX). A variant NVRTC failed to build is remembered, and
 * variant_check then refuses it, so the planners fall back to their default tile.
 */
#include "cuda_internal.h"
#include "cuda_fatbin.h"
#include "cuda_rtc.h"
#include "kp_gpu.h"

#ifndef KP_CU_NO_FATBINS
#include "kp_cu_fatbins.h"
#define KP_CU_VARIANTS KP_CU_FATBIN_COUNT
#else
#define KP_CU_VARIANTS 0 /* built without nvcc: no kernel embedded */
#endif

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KP_CU_MAX_KERNELS 8 /* entry points per variant (today at most 3) */

/* The static __shared__ limit, and the dynamic one until a kernel opts in: 48 KiB on
 * every arch. Kernels with static tiles (generation 1) are planned against it; dynamic
 * shared memory (KP_DYNAMIC_LOCAL) may use the device's opt-in maximum, which
 * cu_allow_dynamic_smem asks for once per function. */
#define KP_CU_STATIC_SMEM (48u * 1024u)

/* Oldest arch the embedded code runs on: SASS sm_80 and compute_80 PTX. */
#define KP_CU_MIN_CC 80

struct kp_cu_module {
    CUmodule mod;                          /* NULL until loaded */
    CUfunction fn[KP_CU_MAX_KERNELS];      /* by position in the variant's kernel list */
};

struct kp_cu_rtc_module {
    kp_cu_rtc_module *next;
    char *source, *options;  /* owned copies: the key */
    CUmodule mod;            /* NULL until loaded */
    int build_failed;        /* NVRTC refused it (KP_ERR_BUILD_FAILED): not tried again */
    int nfn;
    struct {
        char name[128];
        CUfunction fn;
    } fn[KP_CU_MAX_KERNELS]; /* by name: the entry points of a run-time variant are not listed */
};

/* ------------------------------------------------------------------------ */
/* The embedded table                                                        */
/* ------------------------------------------------------------------------ */

/* (source, options) -> table index through an open-addressing hash built once: a
 * launch hashes its two strings and compares one entry, instead of a strcmp scan over
 * every embedded variant (issue 17: kport's host work per op). Exact strings: the
 * planner's canonical options, byte for byte. */
static uint64_t cu_variant_hash(const char *source, const char *options) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = source; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ (unsigned char)'|') * 1099511628211ull;
    for (const char *p = options; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

#ifndef KP_CU_NO_FATBINS
#define KP_CU_INDEX_SLOTS (2 * KP_CU_FATBIN_COUNT + 1) /* at most half full: short probes */
static int cu_index[KP_CU_INDEX_SLOTS];                 /* table index + 1; 0: empty */
static pthread_once_t cu_index_once = PTHREAD_ONCE_INIT;

static void cu_index_build(void) {
    for (int i = 0; i < KP_CU_FATBIN_COUNT; i++) {
        const kp_cu_fatbin *f = &kp_cu_fatbin_table[i];
        size_t slot = (size_t)(cu_variant_hash(f->source, f->options) % KP_CU_INDEX_SLOTS);
        while (cu_index[slot]) slot = (slot + 1) % KP_CU_INDEX_SLOTS;
        cu_index[slot] = i + 1;
    }
}
#endif

/* Index of (source, options) in the table, or -1. */
static int cu_variant_find(const char *source, const char *options) {
#ifndef KP_CU_NO_FATBINS
    pthread_once(&cu_index_once, cu_index_build);
    size_t slot = (size_t)(cu_variant_hash(source, options) % KP_CU_INDEX_SLOTS);
    for (; cu_index[slot]; slot = (slot + 1) % KP_CU_INDEX_SLOTS) {
        const kp_cu_fatbin *f = &kp_cu_fatbin_table[cu_index[slot] - 1];
        if (strcmp(f->options, options) == 0 && strcmp(f->source, source) == 0) return cu_index[slot] - 1;
    }
#else
    (void)source;
    (void)options;
    (void)cu_variant_hash;
#endif
    return -1;
}

/* Position of kernel in the variant's space-separated list, or -1. */
static int cu_kernel_index(int v, const char *kernel) {
#ifndef KP_CU_NO_FATBINS
    const char *p = kp_cu_fatbin_table[v].kernels;
    size_t len = strlen(kernel);
    for (int k = 0; *p && k < KP_CU_MAX_KERNELS; k++) {
        size_t n = strcspn(p, " ");
        if (n == len && strncmp(p, kernel, len) == 0) return k;
        p += n;
        while (*p == ' ') p++;
    }
#else
    (void)v;
    (void)kernel;
#endif
    return -1;
}

const char *kp_cu_embedded_summary(char *buf, size_t len) {
#ifndef KP_CU_NO_FATBINS
    char what[160];
    kp_cu_fatbin_describe(kp_cu_fatbin_table[0].data, kp_cu_fatbin_table[0].size, what, sizeof what);
    snprintf(buf, len, "%d kernel variants (%s dialect), each %.120s", KP_CU_FATBIN_COUNT, KP_CU_FATBIN_DIALECT, what);
#else
    snprintf(buf, len, "no kernels (the plugin was built without nvcc)");
#endif
    return buf;
}

/* ------------------------------------------------------------------------ */
/* Per-device modules                                                        */
/* ------------------------------------------------------------------------ */

kp_status kp_cu_modules_init(kp_cu_device *d) {
    if (pthread_mutex_init(&d->lock, NULL) != 0)
        return kp_cu_host->set_error(KP_ERR_INTERNAL, "cuda: pthread_mutex_init failed");
    if (KP_CU_VARIANTS > 0) {
        d->modules = calloc((size_t)KP_CU_VARIANTS, sizeof *d->modules);
        if (!d->modules) {
            pthread_mutex_destroy(&d->lock);
            return kp_cu_host->set_error(KP_ERR_OUT_OF_MEMORY, "out of memory for the cuda module table");
        }
    }
    return KP_OK;
}

void kp_cu_modules_unload(kp_cu_device *d) {
    int loaded = 0;
    for (int i = 0; d->modules && i < KP_CU_VARIANTS; i++) loaded += d->modules[i].mod != NULL;
    for (const kp_cu_rtc_module *m = d->rtc_modules; m; m = m->next) loaded += m->mod != NULL;
    if (loaded && kp_cu_push(d) == KP_OK) {
        for (int i = 0; d->modules && i < KP_CU_VARIANTS; i++) {
            if (!d->modules[i].mod) continue;
            CUresult r = d->cu->cuModuleUnload(d->modules[i].mod);
            if (r != CUDA_SUCCESS)
                kp_cu_host->log("cuda: cuModuleUnload: %s (%d)", kp_cu_result_name(d->cu, r), (int)r);
        }
        for (kp_cu_rtc_module *m = d->rtc_modules; m; m = m->next) {
            if (!m->mod) continue;
            CUresult r = d->cu->cuModuleUnload(m->mod);
            if (r != CUDA_SUCCESS)
                kp_cu_host->log("cuda: cuModuleUnload (NVRTC kernels/%s): %s (%d)", m->source,
                                kp_cu_result_name(d->cu, r), (int)r);
            m->mod = NULL;
        }
        kp_cu_pop(d);
    }
    while (d->rtc_modules) {
        kp_cu_rtc_module *m = d->rtc_modules;
        d->rtc_modules = m->next;
        free(m->source);
        free(m->options);
        free(m);
    }
    free(d->modules);
    d->modules = NULL;
    pthread_mutex_destroy(&d->lock);
}

/* Lets fn take up to the device's opt-in maximum of shared memory (227 KiB on sm_90) as
 * dynamic shared memory: CUDA allows 48 KiB until a kernel asks. Called once per
 * function, before it is published (with d->lock held). A failure is only logged: a
 * launch then asking for more than 48 KiB gets the driver's error. */
static void cu_allow_dynamic_smem(kp_cu_device *d, CUfunction fn, const char *kernel) {
    if (!d->cu->cuFuncSetAttribute || d->smem_optin <= (int)KP_CU_STATIC_SMEM) return;
    int stat = 0;
    if (d->cu->cuFuncGetAttribute &&
        d->cu->cuFuncGetAttribute(&stat, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, fn) != CUDA_SUCCESS)
        stat = 0;
    const int dyn = d->smem_optin - stat;
    CUresult r = d->cu->cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, dyn);
    if (r != CUDA_SUCCESS)
        kp_cu_host->log("cuda: cuFuncSetAttribute(%s, MAX_DYNAMIC_SHARED_SIZE_BYTES, %d): %s (%d)", kernel, dyn,
                        kp_cu_result_name(d->cu, r), (int)r);
}

/* The CUfunction for kernel k of variant v on d, loading the module on first use.
 * Called with the context pushed. */
static kp_status cu_function(kp_cu_device *d, int v, int k, const char *kernel, CUfunction *out) {
    kp_status st = KP_OK;
    pthread_mutex_lock(&d->lock);
    kp_cu_module *m = &d->modules[v];
    if (!m->mod) {
#ifndef KP_CU_NO_FATBINS
        const kp_cu_fatbin *f = &kp_cu_fatbin_table[v];
        CUresult r = d->cu->cuModuleLoadData(&m->mod, f->data);
        if (r != CUDA_SUCCESS) {
            char what[160];
            m->mod = NULL;
            st = kp_cu_fail(d->cu, r, "cuModuleLoadData of kernels/%s [%s] on %s (sm_%d; the fatbin holds %s)",
                            f->source, f->options, d->name, d->cc,
                            kp_cu_fatbin_describe(f->data, f->size, what, sizeof what));
        }
#endif
    }
    if (st == KP_OK && !m->fn[k]) {
        CUfunction fn = NULL;
        CUresult r = d->cu->cuModuleGetFunction(&fn, m->mod, kernel);
        if (r != CUDA_SUCCESS) st = kp_cu_fail(d->cu, r, "cuModuleGetFunction(%s)", kernel);
        else cu_allow_dynamic_smem(d, fn, kernel), m->fn[k] = fn;
    }
    if (st == KP_OK) *out = m->fn[k];
    pthread_mutex_unlock(&d->lock);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Variants built at run time (NVRTC)                                        */
/* ------------------------------------------------------------------------ */

/* The run-time module of (source, options) on d, or NULL. Called with d->lock held. */
static kp_cu_rtc_module *cu_rtc_find(const kp_cu_device *d, const char *source, const char *options) {
    for (kp_cu_rtc_module *m = d->rtc_modules; m; m = m->next)
        if (strcmp(m->options, options) == 0 && strcmp(m->source, source) == 0) return m;
    return NULL;
}

/* 1 when NVRTC already failed to build (source, options) for d. */
static int cu_rtc_failed(kp_cu_device *d, const char *source, const char *options) {
    pthread_mutex_lock(&d->lock);
    const kp_cu_rtc_module *m = cu_rtc_find(d, source, options);
    int failed = m && m->build_failed;
    pthread_mutex_unlock(&d->lock);
    return failed;
}

/* The CUfunction kernel of a run-time module (d->lock held, context pushed). */
static kp_status cu_rtc_get(kp_cu_device *d, kp_cu_rtc_module *m, const char *kernel, CUfunction *out) {
    for (int i = 0; i < m->nfn; i++)
        if (strcmp(m->fn[i].name, kernel) == 0) {
            *out = m->fn[i].fn;
            return KP_OK;
        }
    if (m->nfn == KP_CU_MAX_KERNELS || strlen(kernel) >= sizeof m->fn[0].name)
        return kp_cu_host->set_error(KP_ERR_INTERNAL, "cuda: kernel %s: more than %d entry points of kernels/%s [%s] "
                                     "launched, or a name too long (a bug)", kernel, KP_CU_MAX_KERNELS, m->source,
                                     m->options);
    CUfunction fn = NULL;
    CUresult r = d->cu->cuModuleGetFunction(&fn, m->mod, kernel);
    if (r != CUDA_SUCCESS)
        return kp_cu_fail(d->cu, r, "cuModuleGetFunction(%s) in kernels/%s [%s] (built with NVRTC)", kernel,
                          m->source, m->options);
    cu_allow_dynamic_smem(d, fn, kernel);
    snprintf(m->fn[m->nfn].name, sizeof m->fn[0].name, "%s", kernel);
    m->fn[m->nfn++].fn = fn;
    *out = fn;
    return KP_OK;
}

/* The CUfunction for kernel of the run-time variant (source, options) on d: built with
 * NVRTC (or read from the on-disk cache) and loaded on first use. The compile runs
 * outside d->lock (NVRTC serialises compiles itself), so launches of other variants on
 * the device do not wait for it. Called with the context pushed. */
static kp_status cu_rtc_function(kp_cu_device *d, const char *source, const char *options, const char *kernel,
                                 CUfunction *out) {
    pthread_mutex_lock(&d->lock);
    kp_cu_rtc_module *m = cu_rtc_find(d, source, options);
    if (m && m->mod) {
        kp_status st = cu_rtc_get(d, m, kernel, out);
        pthread_mutex_unlock(&d->lock);
        return st;
    }
    int failed = m && m->build_failed;
    pthread_mutex_unlock(&d->lock);
    if (failed)
        return kp_cu_host->set_error(KP_ERR_BUILD_FAILED, "cuda: NVRTC could not build kernels/%s [%s] for %s (sm_%d) "
                                     "earlier in this process; the first failure reported why", source, options,
                                     d->name, d->cc);

    unsigned char *bin = NULL;
    size_t size = 0;
    int is_ptx = 0, cached = 0;
    kp_status st = kp_cu_rtc_build(kp_cu_host, d->cc, source, options, &bin, &size, &is_ptx, &cached);
    if (st == KP_OK)
        kp_cu_host->log("cuda: kernels/%s [%s] for %s (sm_%d): %s %s, %zu bytes", source, options, d->name, d->cc,
                        is_ptx ? "PTX" : "CUBIN", cached ? "from the cache" : "compiled with NVRTC", size);

    pthread_mutex_lock(&d->lock);
    if (!(m = cu_rtc_find(d, source, options))) { /* another thread may have added it meanwhile */
        m = calloc(1, sizeof *m);
        if (m && (m->source = strdup(source)) != NULL && (m->options = strdup(options)) != NULL) {
            m->next = d->rtc_modules;
            d->rtc_modules = m;
        } else {
            if (m) free(m->source);
            free(m);
            m = NULL;
            if (st == KP_OK) st = kp_cu_host->set_error(KP_ERR_OUT_OF_MEMORY, "cuda: out of memory for a module entry");
        }
    }
    if (st == KP_ERR_BUILD_FAILED && m) m->build_failed = 1; /* deterministic: not retried */
    if (st == KP_OK && !m->mod) {
        CUresult r = d->cu->cuModuleLoadData(&m->mod, bin);
        if (r != CUDA_SUCCESS) {
            m->mod = NULL;
            st = kp_cu_fail(d->cu, r, "cuModuleLoadData of kernels/%s [%s] on %s (sm_%d; NVRTC %s, %zu bytes)", source,
                            options, d->name, d->cc, is_ptx ? "PTX" : "CUBIN", size);
        }
    }
    if (st == KP_OK) st = cu_rtc_get(d, m, kernel, out);
    pthread_mutex_unlock(&d->lock);
    free(bin);
    return st;
}

/* ------------------------------------------------------------------------ */
/* buffer_align                                                              */
/* ------------------------------------------------------------------------ */

/* A wrapped device pointer may sit anywhere: its lowest set bit, up to 256. */
static uint32_t cu_buffer_align(const kp_buffer *b) {
    uint64_t a = b && b->impl ? (uint64_t)(uintptr_t)((const kp_cu_buffer *)b->impl)->ptr : 0;
    uint64_t low = a & (~a + 1);
    return a == 0 || low >= 256 ? 256u : (uint32_t)low;
}

/* ------------------------------------------------------------------------ */
/* The target                                                                */
/* ------------------------------------------------------------------------ */

static kp_cu_device *cu_dev(kp_stream *s) {
    return (kp_cu_device *)s->device->impl;
}

static void cu_profile(kp_stream *s, kp_gpu_profile *out) {
    const kp_cu_device *d = cu_dev(s);
    memset(out, 0, sizeof *out);
    out->info = &s->device->info;
    out->cpu = 0;
    out->mma = d->cc >= 80; /* mma.sync bf16/f16 m16n8k16 with ldmatrix and cp.async: sm_80+ */
    out->warp = 32;
    out->static_local_mem = KP_CU_STATIC_SMEM;
    out->local_mem = d->smem_optin > (int)KP_CU_STATIC_SMEM ? (uint64_t)d->smem_optin : KP_CU_STATIC_SMEM;
    out->max_group = 1024;
    out->compute_units = s->device->info.compute_units;
    /* wgmma, setmaxnreg: sm_90a SASS runs on sm_90 alone; TMA maps need the driver's encoder */
    out->sm90a = d->cc == 90 && d->cu && d->cu->cuTensorMapEncodeTiled != NULL;
}

static kp_status cu_variant_check(kp_stream *s, const char *source, const char *options) {
    kp_cu_device *d = cu_dev(s);
    char what[200];
    if (d->cc < KP_CU_MIN_CC)
        return kp_cu_host->set_error(KP_ERR_UNSUPPORTED,
                                     "cuda: %s is sm_%d; this plugin's kernels need sm_80 or newer (it embeds %s)",
                                     d->name, d->cc, kp_cu_embedded_summary(what, sizeof what));
    if (cu_variant_find(source, options) >= 0) return KP_OK;
    /* Not embedded: NVRTC builds it at the first launch, when it can. */
    char why[KP_REASON_MAX], arch[32];
    if (!kp_cu_rtc_source(source, NULL))
        snprintf(why, sizeof why, "kernels/%s is not among the sources built into this plugin", source);
    else if (kp_cu_rtc_check(d->cc, arch, sizeof arch, why, sizeof why) == KP_OK) {
        if (!cu_rtc_failed(d, source, options)) return KP_OK;
        snprintf(why, sizeof why, "NVRTC failed to build it for %s earlier in this process", arch);
    }
    return kp_cu_host->set_error(KP_ERR_UNSUPPORTED,
                                 "cuda: kernel variant kernels/%s [%s] is not embedded in this plugin (it embeds %s: "
                                 "what kp-gpu-variants listed at build time), and cannot be compiled at run time: %s",
                                 source, options, kp_cu_embedded_summary(what, sizeof what), why);
}


/* A KP_GPU_ARG_TENSOR_MAP as the driver's CUtensorMap (cuTensorMapEncodeTiled: 2- to 4-D, element
 * strides 1, no interleave, the map's swizzle, 256-byte L2 promotion, zeros out of bounds). */
static kp_status cu_tensor_map(kp_cu_device *d, const kp_gpu_launch *l, int i, CUtensorMap *out) {
    const kp_gpu_tensor_map *m = &l->args[i].v.tmap;
    if (!d->cu->cuTensorMapEncodeTiled)
        return kp_cu_host->set_error(KP_ERR_UNSUPPORTED, "cuda: %s takes a TMA tensor map and this driver has no "
                                     "cuTensorMapEncodeTiled", l->kernel);
    if ((m->dtype != KP_BF16 && m->dtype != KP_F16 && m->dtype != KP_FP8_E4M3) || m->swizzle < KP_GPU_TMAP_SWIZZLE_NONE ||
        m->swizzle > KP_GPU_TMAP_SWIZZLE_128B)
        return kp_cu_host->set_error(KP_ERR_INTERNAL, "cuda: tensor map argument %d of %s has dtype %d, swizzle %d "
                                     "(a bug)", i, l->kernel, (int)m->dtype, m->swizzle);
    CUdeviceptr base = m->address ? (CUdeviceptr)m->address
                                  : m->buffer ? ((const kp_cu_buffer *)m->buffer->impl)->ptr : (CUdeviceptr)0;
    static const CUtensorMapSwizzle swz[] = {CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_SWIZZLE_32B,
                                             CU_TENSOR_MAP_SWIZZLE_64B, CU_TENSOR_MAP_SWIZZLE_128B};
    const int rank = m->rank == 0 ? 2 : m->rank;
    if (rank < 2 || rank > 4)
        return kp_cu_host->set_error(KP_ERR_INTERNAL, "cuda: tensor map argument %d of %s has rank %d (a bug)", i,
                                     l->kernel, rank);
    const cuuint64_t dims[4] = {m->dims[0], m->dims[1], m->dims[2], m->dims[3]},
                     strides[3] = {m->row_stride, m->outer_strides[0], m->outer_strides[1]};
    const cuuint32_t box[4] = {m->box[0], m->box[1], m->box[2], m->box[3]}, estr[4] = {1, 1, 1, 1};
    /* e4m3: bytes (TMA copies them unchanged; the map's type only sizes the elements) */
    const CUtensorMapDataType dt = m->dtype == KP_BF16   ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                   : m->dtype == KP_F16  ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                                         : CU_TENSOR_MAP_DATA_TYPE_UINT8;
    CUresult r = d->cu->cuTensorMapEncodeTiled(
        out, dt, (cuuint32_t)rank,
        (void *)(uintptr_t)(base + m->byte_offset), dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
        swz[m->swizzle], CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS)
        return kp_cu_fail(d->cu, r, "cuTensorMapEncodeTiled for argument %d of %s (rank %d, address 0x%llx, dims "
                          "%llu x %llu, row stride %llu bytes, box %u x %u, swizzle %d)", i, l->kernel, rank,
                          (unsigned long long)(base + m->byte_offset), (unsigned long long)m->dims[0],
                          (unsigned long long)m->dims[1], (unsigned long long)m->row_stride, m->box[0], m->box[1],
                          m->swizzle);
    return KP_OK;
}

static kp_status cu_launch(kp_stream *s, const kp_gpu_launch *l) {
    kp_cu_device *d = cu_dev(s);
    const CUstream stream = ((const kp_cu_stream *)s->impl)->stream;
    if (l->overflow || l->nargs < 0 || l->nargs > KP_GPU_MAX_ARGS)
        return kp_cu_host->set_error(KP_ERR_INTERNAL, "cuda: launch of %s has more than %d arguments or a kargs "
                                     "block over %d bytes (a bug)", l->kernel, KP_GPU_MAX_ARGS, KP_GPU_MAX_KARGS_BYTES);
    const int v = cu_variant_find(l->source, l->options);
    if (v < 0) { /* NVRTC's, when it can build it */
        kp_status st = cu_variant_check(s, l->source, l->options); /* sets the message */
        if (st != KP_OK) return st;
    }
    const int k = v < 0 ? 0 : cu_kernel_index(v, l->kernel);
    if (k < 0)
        return kp_cu_host->set_error(KP_ERR_INTERNAL, "cuda: kernel %s is not among the entry points of kernels/%s [%s]",
                                     l->kernel, l->source, l->options);

    /* Grid and block limits of every sm_80+ GPU. */
    const uint64_t gx = l->groups[0], gy = l->groups[1], gz = l->groups[2];
    const uint64_t threads = (uint64_t)l->local[0] * l->local[1] * l->local[2];
    if (gx == 0 || gy == 0 || gz == 0) return KP_OK; /* no work */
    if (gx > 0x7fffffffu || gy > 65535u || gz > 65535u)
        return kp_cu_host->set_error(KP_ERR_UNSUPPORTED,
                                     "cuda: %s needs a grid of %llu x %llu x %llu blocks; CUDA allows at most "
                                     "2147483647 x 65535 x 65535",
                                     l->kernel, (unsigned long long)gx, (unsigned long long)gy, (unsigned long long)gz);
    const uint32_t smem_max = d->smem_optin > (int)KP_CU_STATIC_SMEM ? (uint32_t)d->smem_optin : KP_CU_STATIC_SMEM;
    if (l->local_bytes > smem_max)
        return kp_cu_host->set_error(KP_ERR_UNSUPPORTED, "cuda: %s asks for %u bytes of dynamic shared memory; %s "
                                     "allows %u per block", l->kernel, l->local_bytes, d->name, smem_max);
    if (threads == 0 || threads > 1024 || l->local[2] > 64)
        return kp_cu_host->set_error(KP_ERR_UNSUPPORTED,
                                     "cuda: %s needs blocks of %u x %u x %u threads; CUDA allows at most 1024 "
                                     "(and 64 in z)",
                                     l->kernel, l->local[0], l->local[1], l->local[2]);

    /* cuLaunchKernel reads each parameter through a pointer: a device pointer's storage
     * here, a kargs block in place (the kernel declares the same struct by value) */
    CUdeviceptr ptrs[KP_GPU_MAX_ARGS];
    CUtensorMap maps[KP_GPU_MAX_ARGS]; /* 64-byte aligned by its type; copied by cuLaunchKernel */
    void *params[KP_GPU_MAX_ARGS + 1];
    kp_status st;
    for (int i = 0; i < l->nargs; i++) {
        const kp_gpu_arg *a = &l->args[i];
        switch (a->kind) {
        case KP_GPU_ARG_BUFFER:
            ptrs[i] = a->v.buffer ? ((const kp_cu_buffer *)a->v.buffer->impl)->ptr : (CUdeviceptr)0;
            params[i] = &ptrs[i];
            break;
        case KP_GPU_ARG_NATIVE:
            ptrs[i] = (CUdeviceptr)(uintptr_t)a->v.native;
            params[i] = &ptrs[i];
            break;
        case KP_GPU_ARG_KARGS: params[i] = (void *)a->v.kargs.data; break;
        case KP_GPU_ARG_TENSOR_MAP:
            if ((st = cu_tensor_map(d, l, i, &maps[i])) != KP_OK) return st;
            params[i] = &maps[i];
            break;
        default:
            return kp_cu_host->set_error(KP_ERR_INTERNAL, "cuda: argument %d of %s has unknown kind %d", i,
                                         l->kernel, (int)a->kind);
        }
    }
    params[l->nargs] = NULL;

    st = kp_cu_push(d);
    if (st != KP_OK) return st;
    CUfunction fn = NULL;
    st = v >= 0 ? cu_function(d, v, k, l->kernel, &fn) : cu_rtc_function(d, l->source, l->options, l->kernel, &fn);
    if (st == KP_OK) {
        CUresult r = d->cu->cuLaunchKernel(fn, (unsigned)gx, (unsigned)gy, (unsigned)gz, l->local[0], l->local[1],
                                           l->local[2], l->local_bytes, stream, params, NULL);
        if (r != CUDA_SUCCESS)
            st = kp_cu_fail(d->cu, r, "cuLaunchKernel of %s (kernels/%s [%s]) grid %llu x %llu x %llu, block %u x %u x %u, "
                            "%u bytes of dynamic shared memory", l->kernel, l->source, l->options,
                            (unsigned long long)gx, (unsigned long long)gy, (unsigned long long)gz, l->local[0],
                            l->local[1], l->local[2], l->local_bytes);
    }
    kp_cu_pop(d);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Scratch                                                                   */
/* ------------------------------------------------------------------------ */

static size_t cu_pow2(size_t n) {
    size_t p = 4096;
    while (p < n && p <= SIZE_MAX / 2) p *= 2;
    return p < n ? n : p;
}

static void scratch_free_one(kp_cu_stream *s, const kp_cu_device *d, int i) {
    if (!s->scratch[i]) return;
    CUresult r = s->scratch_async[i] ? d->cu->cuMemFreeAsync(s->scratch[i], s->stream) : d->cu->cuMemFree(s->scratch[i]);
    if (r != CUDA_SUCCESS)
        kp_cu_host->log("cuda: freeing stream scratch: %s (%d)", kp_cu_result_name(d->cu, r), (int)r);
    s->scratch[i] = 0;
    s->scratch_bytes[i] = 0;
    s->scratch_async[i] = 0;
}

void kp_cu_scratch_free(kp_cu_stream *s, const kp_cu_device *d) {
    for (int i = 0; i < 2; i++) scratch_free_one(s, d, i);
}

static int cu_scratch_get(kp_stream *s, const size_t bytes[2], void *out[2]) {
    kp_cu_stream *cs = s->impl;
    if (bytes[0] > cs->scratch_bytes[0] || bytes[1] > cs->scratch_bytes[1]) return 0;
    out[0] = (void *)(uintptr_t)cs->scratch[0];
    out[1] = (void *)(uintptr_t)cs->scratch[1];
    return 1;
}

/* Grows each region to the next power of two when short. With the stream-ordered
 * allocator the old region is freed and the new one allocated in stream order, so
 * nothing waits for the stream (a wrapped one included). Without it, a stream kport
 * created is synchronised first; cuMemFree waits for the device either way. */
static kp_status cu_scratch_reserve(kp_stream *s, const size_t bytes[2]) {
    kp_cu_device *d = cu_dev(s);
    kp_cu_stream *cs = s->impl;
    const int async = d->cu->cuMemAllocAsync && d->cu->cuMemFreeAsync;
    kp_status st = kp_cu_push(d);
    if (st != KP_OK) return st;
    if (!async && !(s->flags & KP_STREAM_WRAPPED) && (cs->scratch[0] || cs->scratch[1])) {
        CUresult r = d->cu->cuStreamSynchronize(cs->stream);
        if (r != CUDA_SUCCESS) st = kp_cu_fail(d->cu, r, "cuStreamSynchronize before growing the stream's scratch");
    }
    for (int i = 0; st == KP_OK && i < 2; i++) {
        if (bytes[i] <= cs->scratch_bytes[i]) continue;
        scratch_free_one(cs, d, i);
        const size_t want = cu_pow2(bytes[i]);
        CUresult r = async ? d->cu->cuMemAllocAsync(&cs->scratch[i], want, cs->stream)
                           : d->cu->cuMemAlloc(&cs->scratch[i], want);
        if (r != CUDA_SUCCESS) {
            cs->scratch[i] = 0;
            st = kp_cu_fail(d->cu, r, "%s of %zu bytes of stream scratch", async ? "cuMemAllocAsync" : "cuMemAlloc",
                            want);
        } else {
            cs->scratch_bytes[i] = want;
            cs->scratch_async[i] = async;
        }
    }
    kp_cu_pop(d);
    return st;
}

/* The scratch stays with the stream (reused by its next launch; freed at destroy). */
static void cu_scratch_release(kp_stream *s, void *handles[2]) {
    (void)s;
    (void)handles;
}

kp_gpu_target kp_cu_target = {
    .name = "cuda",
    .host = NULL, /* cuda_init sets it */
    .profile = cu_profile,
    .variant_check = cu_variant_check,
    .buffer_align = cu_buffer_align,
    .launch = cu_launch,
    .scratch_get = cu_scratch_get,
    .scratch_reserve = cu_scratch_reserve,
    .scratch_release = cu_scratch_release,
};

kp_status kp_cu_stream_reserve(kp_stream *s, size_t bytes) { return kp_gpu_stream_reserve(&kp_cu_target, s, bytes); }
