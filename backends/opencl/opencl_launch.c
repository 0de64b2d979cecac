/*
 * backends/opencl/opencl_launch.c — the OpenCL backend as a kp_gpu_target: the shared
 * GPU ops (backends/gpu/) plan every launch; this file turns one into a cl_kernel
 * (opencl_program.c builds and caches the program), sets its arguments and enqueues it,
 * and keeps the per-queue split-KV scratch.
 *
 * One cl_kernel per launch, released right after the enqueue: cl_kernel argument state
 * is not thread-safe, and the built cl_program is cached, so a launch costs one
 * clCreateKernel (a few microseconds).
 */
#include "opencl_internal.h"
#include "opencl_program.h"

#include "kp_gpu.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void ocl_profile(kp_stream *s, kp_gpu_profile *p) {
    const kp_ocl_device *d = kp_ocl_dev(s->device);
    size_t max_wg = 0;
    if (clGetDeviceInfo(d->desc.id, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof max_wg, &max_wg, NULL) != CL_SUCCESS)
        max_wg = 64; /* the smallest any kernel here asks for */
    memset(p, 0, sizeof *p);
    p->info = &s->device->info;
    p->cpu = s->device->info.kind == KP_DEVICE_CPU;
    p->mma = d->desc.has_inline_ptx;
    p->warp = s->device->info.subgroup_size > 0 ? s->device->info.subgroup_size : 32;
    p->local_mem = s->device->info.local_mem_bytes; /* CL_DEVICE_LOCAL_MEM_SIZE */
    p->static_local_mem = p->local_mem;              /* __local arrays and __local arguments share it */
    p->max_group = max_wg > UINT32_MAX ? UINT32_MAX : (uint32_t)max_wg;
    p->compute_units = s->device->info.compute_units;
}

kp_status kp_ocl_launch(kp_stream *s, const kp_gpu_launch *l) {
    kp_ocl_source_id id = KP_OCL_SRC_COUNT;
    for (int i = 0; i < KP_OCL_SRC_COUNT; i++)
        if (strcmp(kp_ocl_sources[i].name, l->source) == 0) id = (kp_ocl_source_id)i;
    if (id == KP_OCL_SRC_COUNT)
        return kp_ocl_host()->set_error(KP_ERR_INTERNAL, "opencl: no embedded kernel source %s", l->source);
    for (int i = 0; i < l->nargs; i++)
        if (l->args[i].kind == KP_GPU_ARG_TENSOR_MAP) /* the sm_90a tier's: CUDA only */
            return kp_ocl_host()->set_error(KP_ERR_UNSUPPORTED, "opencl: %s takes a TMA tensor map (argument %d), "
                                            "which only the cuda backend passes", l->kernel, i);
    cl_kernel k = NULL;
    kp_status st = kp_ocl_kernel_create(kp_ocl_dev(s->device), id, l->options, l->kernel, &k, NULL);
    if (st != KP_OK) return st;
    cl_int err = CL_SUCCESS;
    int i = 0;
    for (; i < l->nargs && err == CL_SUCCESS; i++) {
        const kp_gpu_arg *a = &l->args[i];
        cl_mem m;
        switch (a->kind) {
        case KP_GPU_ARG_BUFFER:
        case KP_GPU_ARG_NATIVE:
            m = a->kind == KP_GPU_ARG_BUFFER ? (a->v.buffer ? kp_ocl_mem(a->v.buffer) : NULL) : (cl_mem)a->v.native;
            err = clSetKernelArg(k, (cl_uint)i, sizeof m, m ? (const void *)&m : NULL); /* NULL: a null pointer */
            break;
        case KP_GPU_ARG_KARGS: err = clSetKernelArg(k, (cl_uint)i, a->v.kargs.size, a->v.kargs.data); break;
        case KP_GPU_ARG_TENSOR_MAP: break; /* refused above */
        }
    }
    /* dynamic local memory: the kernel's last parameter (KP_DYNAMIC_LOCAL_ARG), sized here */
    if (err == CL_SUCCESS && l->local_bytes > 0) err = clSetKernelArg(k, (cl_uint)i++, l->local_bytes, NULL);
    if (err != CL_SUCCESS) {
        st = kp_ocl_host()->add_context(kp_ocl_fail(err, "clSetKernelArg"), "argument %d of %s", i - 1, l->kernel);
    } else {
        size_t global[3], local[3];
        cl_uint dims = l->groups[2] > 1 || l->local[2] > 1 ? 3 : l->groups[1] > 1 || l->local[1] > 1 ? 2 : 1;
        for (int d = 0; d < 3; d++) {
            local[d] = l->local[d];
            global[d] = (size_t)l->groups[d] * l->local[d];
        }
        err = clEnqueueNDRangeKernel(kp_ocl_queue(s), k, dims, NULL, global, local, 0, NULL, NULL);
        if (err != CL_SUCCESS) {
            char call[160];
            snprintf(call, sizeof call, "clEnqueueNDRangeKernel(%s)", l->kernel);
            st = kp_ocl_fail(err, call);
        }
    }
    clReleaseKernel(k);
    return st;
}

static int ocl_scratch_get(kp_stream *s, const size_t bytes[2], void *out[2]) {
    cl_mem part = NULL, lse = NULL;
    if (!kp_ocl_scratch_get(kp_ocl_dev(s->device), kp_ocl_queue(s), bytes[0], bytes[1], &part, &lse)) return 0;
    out[0] = part, out[1] = lse;
    return 1;
}

static kp_status ocl_scratch_reserve(kp_stream *s, const size_t bytes[2]) {
    cl_int err = kp_ocl_scratch_grow(kp_ocl_dev(s->device), kp_ocl_queue(s), bytes[0], bytes[1]);
    return err == CL_SUCCESS ? KP_OK : kp_ocl_fail(err, "clCreateBuffer (stream scratch)");
}

/* The cache keeps its own reference: the queue is in order, so the next call on it
 * reuses the memory only after this one's kernels. */
static void ocl_scratch_release(kp_stream *s, void *h[2]) {
    (void)s;
    for (int i = 0; i < 2; i++)
        if (h[i]) clReleaseMemObject((cl_mem)h[i]);
}

static const kp_gpu_target ocl_target = {
    .name = "opencl",
    .profile = ocl_profile,
    .variant_check = NULL, /* every variant is built on demand */
    .launch = kp_ocl_launch,
    .scratch_get = ocl_scratch_get,
    .scratch_reserve = ocl_scratch_reserve,
    .scratch_release = ocl_scratch_release,
};

kp_status kp_ocl_stream_reserve(kp_stream *s, size_t bytes) {
    kp_gpu_target t = ocl_target;
    t.host = kp_ocl_host();
    return kp_gpu_stream_reserve(&t, s, bytes);
}

kp_status kp_ocl_op(kp_op op, kp_stream *s, const void *params, int dry_run) {
    kp_gpu_target t = ocl_target; /* the host services are known only after init */
    t.host = kp_ocl_host();
    return kp_gpu_op_run(&t, op, s, params, dry_run);
}

kp_status kp_ocl_op_kernel(kp_op op, kp_stream *s, const void *params, char *name, size_t cap) {
    kp_gpu_target t = ocl_target;
    t.host = kp_ocl_host();
    return kp_gpu_op_kernel(&t, op, s, params, name, cap);
}

kp_status kp_ocl_ep_capacity(kp_stream *s, const kp_ep_capacity_args *a) {
    kp_gpu_target t = ocl_target;
    t.host = kp_ocl_host();
    return kp_gpu_ep_capacity(&t, s, a);
}

/* ---- per-queue split-KV scratch (see opencl_internal.h) ---------------------------- */

/* The next power of two at or above n (at least 256 bytes); n itself past 2^62. */
static size_t scratch_round(size_t n) {
    size_t r = 256;
    while (r < n && r <= SIZE_MAX / 2) r *= 2;
    return r < n ? n : r;
}

/* A buffer of want bytes rounded up; the exact size if the rounded one is refused
 * (CL_DEVICE_MAX_MEM_ALLOC_SIZE, memory). */
static cl_mem scratch_create(cl_context ctx, size_t want, size_t *got, cl_int *err) {
    size_t r = scratch_round(want);
    cl_mem m = clCreateBuffer(ctx, CL_MEM_READ_WRITE, r, NULL, err);
    if (*err != CL_SUCCESS && r != want) m = clCreateBuffer(ctx, CL_MEM_READ_WRITE, r = want, NULL, err);
    *got = *err == CL_SUCCESS ? r : 0;
    return *err == CL_SUCCESS ? m : NULL;
}

int kp_ocl_scratch_get(kp_ocl_device *d, cl_command_queue q, size_t part_bytes, size_t lse_bytes, cl_mem *part,
                       cl_mem *part_lse) {
    *part = *part_lse = NULL;
    pthread_mutex_lock(&d->lock);
    kp_ocl_scratch *e = d->scratch;
    while (e && e->queue != q) e = e->next;
    int held = e && e->part_bytes >= part_bytes && e->lse_bytes >= lse_bytes;
    if (held) {
        clRetainMemObject(e->part), clRetainMemObject(e->part_lse);
        *part = e->part, *part_lse = e->part_lse;
    }
    pthread_mutex_unlock(&d->lock);
    return held;
}

cl_int kp_ocl_scratch_grow(kp_ocl_device *d, cl_command_queue q, size_t part_bytes, size_t lse_bytes) {
    pthread_mutex_lock(&d->lock);
    kp_ocl_scratch *e = d->scratch;
    while (e && e->queue != q) e = e->next;
    if (e && e->part_bytes >= part_bytes && e->lse_bytes >= lse_bytes) {
        pthread_mutex_unlock(&d->lock);
        return CL_SUCCESS;
    }
    /* missing or short: new buffers, at least as large as the old ones */
    if (e && e->part_bytes > part_bytes) part_bytes = e->part_bytes;
    if (e && e->lse_bytes > lse_bytes) lse_bytes = e->lse_bytes;
    cl_int err = CL_SUCCESS;
    size_t pb = 0, lb = 0;
    cl_mem a = scratch_create(d->context, part_bytes, &pb, &err), b = NULL;
    if (err == CL_SUCCESS) b = scratch_create(d->context, lse_bytes, &lb, &err);
    if (err == CL_SUCCESS && !e) {
        e = calloc(1, sizeof *e);
        if (e) e->queue = q, e->next = d->scratch, d->scratch = e;
        else err = CL_OUT_OF_HOST_MEMORY;
    }
    if (err != CL_SUCCESS) {
        pthread_mutex_unlock(&d->lock);
        if (a) clReleaseMemObject(a);
        if (b) clReleaseMemObject(b);
        return err;
    }
    cl_mem old_a = e->part, old_b = e->part_lse;
    e->part = a, e->part_lse = b, e->part_bytes = pb, e->lse_bytes = lb;
    pthread_mutex_unlock(&d->lock);
    /* OpenCL frees a released buffer only once the commands using it have finished
     * (clReleaseMemObject), so the queue is not waited for: a wrapped one never is. */
    if (old_a) clReleaseMemObject(old_a);
    if (old_b) clReleaseMemObject(old_b);
    return CL_SUCCESS;
}

static void scratch_free(kp_ocl_scratch *e, int finish) {
    if (finish) clFinish(e->queue);
    if (e->part) clReleaseMemObject(e->part);
    if (e->part_lse) clReleaseMemObject(e->part_lse);
    free(e);
}

void kp_ocl_scratch_drop(kp_ocl_device *d, cl_command_queue q, int finish) {
    if (!d) return;
    pthread_mutex_lock(&d->lock);
    kp_ocl_scratch **pp = &d->scratch, *e = NULL;
    while (*pp && (*pp)->queue != q) pp = &(*pp)->next;
    if (*pp) e = *pp, *pp = e->next;
    pthread_mutex_unlock(&d->lock);
    if (e) scratch_free(e, finish);
}

void kp_ocl_scratch_release_all(kp_ocl_device *d) {
    pthread_mutex_lock(&d->lock);
    kp_ocl_scratch *e = d->scratch;
    d->scratch = NULL;
    pthread_mutex_unlock(&d->lock);
    while (e) { /* only a stream still open at close leaves an entry: its queue is alive */
        kp_ocl_scratch *next = e->next;
        scratch_free(e, 1);
        e = next;
    }
}
