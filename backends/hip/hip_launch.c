/*
 * backends/hip/hip_launch.c — the hip plugin's kp_gpu_target: what the shared op layer
 * (backends/gpu/kp_gpu.h) needs to plan and launch kernels on a HIP device.
 *
 *   profile         the device's wavefront (64 on CDNA/GCN, 32 on RDNA), LDS, limits
 *   variant_check   embedded for the device's arch, or buildable by hiprtc (hip_rtc.h);
 *                   answered from tables, never by compiling
 *   launch          module (code object) per variant, loaded once per device and kept
 *                   until device close; hipModuleLaunchKernel on the stream
 *   scratch         per-stream device memory for split-KV partials, grown on demand
 *
 * Modules: a device's list is guarded by its lock. A module is loaded from the embedded
 * code object for the device's arch when there is one, else from hiprtc's result (from
 * the on-disk cache when present); hiprtc compiles at the first launch that needs it.
 * Matrix units (MFMA/WMMA) are not selected yet: profile.mma is 0, so the planners
 * pick the portable tiles (kernels/common/kp_tile_mma.h grows the AMD paths).
 */
#include "hip_internal.h"
#include "gpu_cache.h"
#include "hip_rtc.h"
#include "kp_gpu.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KP_HIP_MODULE_FUNCS 8 /* entry points per variant (the most today: 3, moe_align) */

struct kp_hip_module {
    kp_hip_module *next;
    uint64_t hash;          /* of source and options: a quick first compare */
    char *source;           /* owned copies */
    char *options;
    hipModule_t module;     /* owned: hipModuleUnload at device close */
    unsigned char *binary;  /* owned: hiprtc's code object (NULL for an embedded one) */
    int nfuncs;
    struct {
        char name[64];
        hipFunction_t fn;
    } funcs[KP_HIP_MODULE_FUNCS];
};

static kp_hip_device *hip_dev(kp_stream *s) {
    return (kp_hip_device *)s->device->impl;
}

/* ------------------------------------------------------------------------ */
/* Per-device state                                                          */
/* ------------------------------------------------------------------------ */

void kp_hip_kernels_init(kp_hip_device *d) {
    pthread_mutex_init(&d->lock, NULL);
    d->modules = NULL;
    d->hiprtc_checked = 0;
}

void kp_hip_kernels_release(kp_hip_device *d) {
    int prev = 0;
    int pushed = d->modules && kp_hip_push(d, &prev) == KP_OK;
    for (kp_hip_module *m = d->modules, *next; m; m = next) {
        next = m->next;
        if (pushed) {
            hipError_t e = d->hip->hipModuleUnload(m->module);
            if (e != hipSuccess)
                kp_hip_host->log("hip: hipModuleUnload (%s): %s (%d)", m->source, kp_hip_error_name(d->hip, e), (int)e);
        }
        free(m->binary);
        free(m->source);
        free(m->options);
        free(m);
    }
    if (pushed) kp_hip_pop(d, prev);
    d->modules = NULL;
    pthread_mutex_destroy(&d->lock);
}

/* hiprtc's answer for the device's arch, asked once per device. Called with d->lock. */
static kp_status hip_rtc_status(kp_hip_device *d) {
    if (!d->hiprtc_checked) {
        d->hiprtc_status = kp_hip_rtc_check(d->info->arch, d->hiprtc_why, sizeof d->hiprtc_why);
        d->hiprtc_checked = 1;
    }
    return d->hiprtc_status;
}

/* ------------------------------------------------------------------------ */
/* profile                                                                   */
/* ------------------------------------------------------------------------ */

static void hip_profile(kp_stream *s, kp_gpu_profile *out) {
    const kp_hip_device *d = hip_dev(s);
    const kp_device_info *info = &s->device->info;
    memset(out, 0, sizeof *out);
    out->info = info;
    out->cpu = 0;
    out->mma = 0; /* MFMA/WMMA tiles: selected through tuning once kp_tile_mma.h has them */
    out->warp = info->subgroup_size == 32 ? 32 : 64;
    /* 64 KiB of LDS per work-group on every GCN/CDNA/RDNA part; less if the runtime says so */
    out->local_mem = 64 * 1024;
    if (info->local_mem_bytes > 0 && info->local_mem_bytes < out->local_mem) out->local_mem = info->local_mem_bytes;
    out->static_local_mem = out->local_mem; /* static and dynamic LDS share one limit */
    out->max_group = d->max_group > 0 && d->max_group < KP_HIP_MAX_GROUP ? d->max_group : KP_HIP_MAX_GROUP;
    out->compute_units = info->compute_units;
}

/* ------------------------------------------------------------------------ */
/* variant_check                                                             */
/* ------------------------------------------------------------------------ */

static kp_status hip_variant_check(kp_stream *s, const char *source, const char *options) {
    kp_hip_device *d = hip_dev(s);
    if (kp_hip_code_object_find(d->info->arch, source, options)) return KP_OK;
    if (!kp_hip_source_find(source))
        return kp_hip_host->set_error(KP_ERR_UNSUPPORTED, "hip: kernel source %s is not built into this plugin",
                                      source);
    pthread_mutex_lock(&d->lock);
    kp_status st = hip_rtc_status(d);
    char why[KP_REASON_MAX];
    snprintf(why, sizeof why, "%s", d->hiprtc_why);
    pthread_mutex_unlock(&d->lock);
    if (st == KP_OK) return KP_OK; /* compiled at the first launch */
    return kp_hip_host->set_error(KP_ERR_UNSUPPORTED, "hip: %s (%s) is not embedded for %s, and %s", source,
                                  options[0] ? options : "no options", d->info->arch, why);
}

/* ------------------------------------------------------------------------ */
/* Modules and functions                                                     */
/* ------------------------------------------------------------------------ */

static uint64_t module_hash(const char *source, const char *options) {
    uint64_t h = kp_fnv1a64(KP_FNV1A64_INIT, source, strlen(source) + 1); /* with the NUL: a separator */
    return kp_fnv1a64(h, options, strlen(options));
}

/* Loads (source, options) on d. Called with d->lock held and d current. */
static kp_status module_load(kp_hip_device *d, const char *source, const char *options, uint64_t hash,
                             kp_hip_module **out) {
    kp_hip_module *m = calloc(1, sizeof *m);
    if (!m) return kp_hip_host->set_error(KP_ERR_OUT_OF_MEMORY, "hip: out of memory loading %s", source);
    m->hash = hash;
    m->source = strdup(source);
    m->options = strdup(options);
    kp_status st = m->source && m->options ? KP_OK
                                           : kp_hip_host->set_error(KP_ERR_OUT_OF_MEMORY, "hip: out of memory loading %s", source);
    const void *image = NULL;
    const char *how = "embedded";
    const kp_hip_code_object *co = st == KP_OK ? kp_hip_code_object_find(d->info->arch, source, options) : NULL;
    if (co) {
        image = co->data;
    } else if (st == KP_OK) {
        if ((st = hip_rtc_status(d)) != KP_OK) {
            st = kp_hip_host->set_error(st, "hip: %s (%s) is not embedded for %s, and %s", source, options,
                                        d->info->arch, d->hiprtc_why);
        } else {
            size_t size = 0;
            int cached = 0;
            st = kp_hip_rtc_build(kp_hip_host, d->info->arch, source, options, d->runtime, &m->binary, &size, &cached);
            image = m->binary;
            how = cached ? "hiprtc (cached)" : "hiprtc";
        }
    }
    if (st == KP_OK) {
        hipError_t e = d->hip->hipModuleLoadData(&m->module, image);
        if (e != hipSuccess)
            st = kp_hip_fail(d->hip, e, "hipModuleLoadData of %s (%s) for %s, %s", source, options, d->info->arch, how);
    }
    if (st != KP_OK) {
        free(m->binary);
        free(m->source);
        free(m->options);
        free(m);
        return st;
    }
    kp_hip_host->log("hip: loaded %s (%s) for %s, %s", source, options, d->info->arch, how);
    m->next = d->modules;
    d->modules = m;
    *out = m;
    return KP_OK;
}

/* The function for l on d, loading its module on first use. d must be current. */
static kp_status function_get(kp_hip_device *d, const kp_gpu_launch *l, hipFunction_t *out) {
    uint64_t hash = module_hash(l->source, l->options);
    kp_status st = KP_OK;
    pthread_mutex_lock(&d->lock);
    kp_hip_module *m = d->modules;
    while (m && !(m->hash == hash && !strcmp(m->source, l->source) && !strcmp(m->options, l->options))) m = m->next;
    if (!m) st = module_load(d, l->source, l->options, hash, &m);
    int i = 0;
    if (st == KP_OK)
        while (i < m->nfuncs && strcmp(m->funcs[i].name, l->kernel) != 0) i++;
    if (st == KP_OK && i == m->nfuncs) {
        hipFunction_t fn = NULL;
        hipError_t e = d->hip->hipModuleGetFunction(&fn, m->module, l->kernel);
        if (e != hipSuccess)
            st = kp_hip_fail(d->hip, e, "hipModuleGetFunction(%s) in %s (%s)", l->kernel, l->source, l->options);
        else if (m->nfuncs == KP_HIP_MODULE_FUNCS || strlen(l->kernel) >= sizeof m->funcs[0].name)
            st = kp_hip_host->set_error(KP_ERR_INTERNAL, "hip: no room for entry point %s of %s", l->kernel, l->source);
        if (st == KP_OK) {
            snprintf(m->funcs[i].name, sizeof m->funcs[i].name, "%s", l->kernel);
            m->funcs[i].fn = fn;
            m->nfuncs++;
        }
    }
    if (st == KP_OK) *out = m->funcs[i].fn;
    pthread_mutex_unlock(&d->lock);
    return st;
}

/* ------------------------------------------------------------------------ */
/* launch                                                                    */
/* ------------------------------------------------------------------------ */

static kp_status hip_launch(kp_stream *s, const kp_gpu_launch *l) {
    kp_hip_device *d = hip_dev(s);
    if (l->overflow || l->nargs < 0 || l->nargs > KP_GPU_MAX_ARGS)
        return kp_hip_host->set_error(KP_ERR_INTERNAL, "hip: kernel %s has more than %d arguments or a kargs block "
                                      "over %d bytes", l->kernel, KP_GPU_MAX_ARGS, KP_GPU_MAX_KARGS_BYTES);
    /* HSA dispatches count work-items in 32 bits per dimension */
    uint64_t threads = 1;
    for (int k = 0; k < 3; k++) {
        uint64_t limit = d->max_grid[k] > 0 ? d->max_grid[k] : UINT32_MAX;
        if (l->groups[k] == 0 || l->local[k] == 0) return KP_OK; /* nothing to run */
        if (l->groups[k] > limit || l->groups[k] * l->local[k] > UINT32_MAX)
            return kp_hip_host->set_error(KP_ERR_UNSUPPORTED,
                                          "hip: kernel %s needs %llu work-groups of %u in dimension %d; the device "
                                          "takes at most %llu (and 2^32-1 work-items)",
                                          l->kernel, (unsigned long long)l->groups[k], l->local[k], k,
                                          (unsigned long long)limit);
        threads *= l->local[k];
    }
    kp_gpu_profile prof;
    hip_profile(s, &prof);
    if (l->local_bytes > prof.local_mem)
        return kp_hip_host->set_error(KP_ERR_UNSUPPORTED, "hip: kernel %s asks for %u bytes of dynamic LDS; the device "
                                      "allows %llu", l->kernel, l->local_bytes, (unsigned long long)prof.local_mem);
    if (threads > (d->max_group > 0 && d->max_group < KP_HIP_MAX_GROUP ? d->max_group : KP_HIP_MAX_GROUP))
        return kp_hip_host->set_error(KP_ERR_INTERNAL, "hip: kernel %s: %llu work-items per group, the device takes %u",
                                      l->kernel, (unsigned long long)threads, d->max_group);

    /* kernelParams: one pointer per argument to its value: a device pointer's storage
     * here, a kargs block in place (the kernel declares the same struct by value) */
    void *ptrs[KP_GPU_MAX_ARGS];
    void *params[KP_GPU_MAX_ARGS];
    for (int i = 0; i < l->nargs; i++) {
        const kp_gpu_arg *a = &l->args[i];
        switch (a->kind) {
        case KP_GPU_ARG_BUFFER:
            ptrs[i] = a->v.buffer ? ((const kp_hip_buffer *)a->v.buffer->impl)->ptr : NULL;
            params[i] = &ptrs[i];
            break;
        case KP_GPU_ARG_NATIVE:
            ptrs[i] = a->v.native;
            params[i] = &ptrs[i];
            break;
        case KP_GPU_ARG_KARGS: params[i] = (void *)a->v.kargs.data; break;
        case KP_GPU_ARG_TENSOR_MAP: /* the sm_90a tier's: CUDA only */
            return kp_hip_host->set_error(KP_ERR_UNSUPPORTED, "hip: %s takes a TMA tensor map (argument %d), which "
                                          "only the cuda backend passes", l->kernel, i);
        }
    }

    int prev = 0;
    kp_status st = kp_hip_push(d, &prev);
    if (st != KP_OK) return st;
    hipFunction_t fn = NULL;
    st = function_get(d, l, &fn);
    if (st == KP_OK) {
        hipError_t e = d->hip->hipModuleLaunchKernel(fn, (unsigned)l->groups[0], (unsigned)l->groups[1],
                                                     (unsigned)l->groups[2], l->local[0], l->local[1], l->local[2],
                                                     l->local_bytes, ((kp_hip_stream *)s->impl)->stream, params,
                                                     NULL);
        if (e != hipSuccess)
            st = kp_hip_fail(d->hip, e, "hipModuleLaunchKernel(%s, groups %llux%llux%llu, local %ux%ux%u, %u bytes of "
                             "dynamic LDS)", l->kernel, (unsigned long long)l->groups[0],
                             (unsigned long long)l->groups[1], (unsigned long long)l->groups[2], l->local[0],
                             l->local[1], l->local[2], l->local_bytes);
    }
    kp_hip_pop(d, prev);
    return st;
}

/* ------------------------------------------------------------------------ */
/* scratch                                                                   */
/* ------------------------------------------------------------------------ */

static size_t next_pow2(size_t n) {
    size_t p = 256;
    while (p < n && p <= SIZE_MAX / 2) p <<= 1;
    return p < n ? n : p;
}

static int hip_scratch_get(kp_stream *s, const size_t bytes[2], void *out[2]) {
    kp_hip_stream *hs = s->impl;
    for (int i = 0; i < 2; i++)
        if (bytes[i] > hs->scratch_size[i] || !hs->scratch[i]) return 0;
    out[0] = hs->scratch[0];
    out[1] = hs->scratch[1];
    return 1;
}

/* The stream is in order: memory handed out before stays valid for the launches
 * already enqueued until it is replaced. A stream kport created is synchronised
 * before; a wrapped one never is by kport (hipFree waits for the device itself). */
static kp_status hip_scratch_reserve(kp_stream *s, const size_t bytes[2]) {
    kp_hip_device *d = hip_dev(s);
    kp_hip_stream *hs = s->impl;
    int prev = 0;
    kp_status st = kp_hip_push(d, &prev);
    if (st != KP_OK) return st;
    int synced = (s->flags & KP_STREAM_WRAPPED) != 0;
    for (int i = 0; i < 2 && st == KP_OK; i++) {
        if (bytes[i] <= hs->scratch_size[i] && hs->scratch[i]) continue;
        if (hs->scratch[i]) {
            hipError_t e = synced ? hipSuccess : d->hip->hipStreamSynchronize(hs->stream);
            if (e != hipSuccess) {
                st = kp_hip_fail(d->hip, e, "hipStreamSynchronize before growing the split-KV scratch");
                break;
            }
            synced = 1;
            d->hip->hipFree(hs->scratch[i]);
            hs->scratch[i] = NULL;
            hs->scratch_size[i] = 0;
        }
        size_t want = next_pow2(bytes[i]);
        hipError_t e = d->hip->hipMalloc(&hs->scratch[i], want);
        if (e != hipSuccess) {
            hs->scratch[i] = NULL;
            st = kp_hip_fail(d->hip, e, "hipMalloc of %zu bytes of split-KV scratch", want);
            break;
        }
        hs->scratch_size[i] = want;
    }
    kp_hip_pop(d, prev);
    return st;
}

static void hip_scratch_release(kp_stream *s, void *handles[2]) {
    (void)s; /* kept for the next op on this stream; freed at stream destroy */
    (void)handles;
}

void kp_hip_scratch_free(const kp_hip_device *d, kp_hip_stream *hs, int wrapped) {
    if (!hs->scratch[0] && !hs->scratch[1]) return;
    int prev = 0;
    if (kp_hip_push(d, &prev) != KP_OK) return;
    hipError_t e = wrapped ? hipSuccess : d->hip->hipStreamSynchronize(hs->stream);
    if (e != hipSuccess)
        kp_hip_host->log("hip: hipStreamSynchronize before freeing scratch: %s (%d)", kp_hip_error_name(d->hip, e),
                         (int)e);
    for (int i = 0; i < 2; i++) {
        if (hs->scratch[i]) d->hip->hipFree(hs->scratch[i]);
        hs->scratch[i] = NULL;
        hs->scratch_size[i] = 0;
    }
    kp_hip_pop(d, prev);
}

/* ------------------------------------------------------------------------ */
/* buffer_align                                                              */
/* ------------------------------------------------------------------------ */

/* A wrapped device pointer may sit anywhere: its lowest set bit, up to 256. */
static uint32_t hip_buffer_align(const kp_buffer *b) {
    uint64_t a = b && b->impl ? (uint64_t)(uintptr_t)((const kp_hip_buffer *)b->impl)->ptr : 0;
    uint64_t low = a & (~a + 1);
    return a == 0 || low >= 256 ? 256u : (uint32_t)low;
}

/* ------------------------------------------------------------------------ */
/* The target                                                                */
/* ------------------------------------------------------------------------ */

kp_gpu_target kp_hip_target = {
    .name = "hip",
    .host = NULL, /* set by hip_init */
    .profile = hip_profile,
    .variant_check = hip_variant_check,
    .buffer_align = hip_buffer_align,
    .launch = hip_launch,
    .scratch_get = hip_scratch_get,
    .scratch_reserve = hip_scratch_reserve,
    .scratch_release = hip_scratch_release,
};

kp_status kp_hip_stream_reserve(kp_stream *s, size_t bytes) { return kp_gpu_stream_reserve(&kp_hip_target, s, bytes); }
