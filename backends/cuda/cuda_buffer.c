/*
 * backends/cuda/cuda_buffer.c — streams and buffers of the cuda backend.
 *
 * Every method makes the device's primary context current (kp_cu_push) for the
 * driver calls it makes and restores the caller's context (kp_cu_pop).
 * Host<->device copies are cuMemcpy*Async on the stream followed by
 * cuStreamSynchronize: blocking for the caller, ordered after the work already queued
 * on that stream. Device-to-device copies stay asynchronous, except on the device's
 * default stream, which kport defines as synchronous.
 */
#include "cuda_internal.h"

#include <stdint.h>
#include <stdlib.h>

static const kp_cu_device *cu_dev(const kp_device *d) {
    return (const kp_cu_device *)d->impl;
}

static CUstream cu_stream(const kp_stream *s) {
    return ((const kp_cu_stream *)s->impl)->stream;
}

static CUdeviceptr cu_ptr(const kp_buffer *b, size_t off) {
    return ((const kp_cu_buffer *)b->impl)->ptr + (CUdeviceptr)off;
}

/* ------------------------------------------------------------------------ */
/* Streams                                                                   */
/* ------------------------------------------------------------------------ */

kp_status kp_cu_stream_create(kp_device *d, void **out_impl) {
    const kp_cu_device *dev = cu_dev(d);
    *out_impl = NULL;
    kp_cu_stream *s = calloc(1, sizeof *s);
    if (!s) return kp_cu_host->set_error(KP_ERR_OUT_OF_MEMORY, "out of memory creating a cuda stream");
    kp_status st = kp_cu_push(dev);
    if (st == KP_OK) {
        /* non-blocking: no implicit synchronisation with the legacy NULL stream, so
         * work other libraries put there does not serialise with ours */
        CUresult r = dev->cu->cuStreamCreate(&s->stream, CU_STREAM_NON_BLOCKING);
        kp_cu_pop(dev);
        if (r != CUDA_SUCCESS) st = kp_cu_fail(dev->cu, r, "cuStreamCreate");
    }
    if (st != KP_OK) {
        free(s);
        return st;
    }
    *out_impl = s;
    return KP_OK;
}

/* A server's CUstream. It must live in the device's primary context (the one kport and
 * the CUDA runtime share); checked when the driver has cuStreamGetCtx. */
kp_status kp_cu_stream_wrap(kp_device *d, void *native, void **out_impl) {
    const kp_cu_device *dev = cu_dev(d);
    *out_impl = NULL;
    CUstream stream = (CUstream)native;
    if (dev->cu->cuStreamGetCtx) {
        CUcontext ctx = NULL;
        CUresult r = dev->cu->cuStreamGetCtx(stream, &ctx);
        if (r != CUDA_SUCCESS) return kp_cu_fail(dev->cu, r, "cuStreamGetCtx (is native a CUstream?)");
        if (ctx != dev->ctx)
            return kp_cu_host->set_error(KP_ERR_DEVICE_MISMATCH,
                                         "cuda: the stream belongs to another context than this device's "
                                         "primary context");
    }
    kp_cu_stream *s = calloc(1, sizeof *s);
    if (!s) return kp_cu_host->set_error(KP_ERR_OUT_OF_MEMORY, "out of memory wrapping a cuda stream");
    s->stream = stream;
    *out_impl = s;
    return KP_OK;
}

kp_status kp_cu_stream_native(kp_stream *s, void **out) {
    *out = (void *)cu_stream(s);
    return KP_OK;
}

kp_status kp_cu_stream_sync(kp_stream *s) {
    const kp_cu_device *dev = cu_dev(s->device);
    kp_status st = kp_cu_push(dev);
    if (st != KP_OK) return st;
    CUresult r = dev->cu->cuStreamSynchronize(cu_stream(s));
    kp_cu_pop(dev);
    return r == CUDA_SUCCESS ? KP_OK : kp_cu_fail(dev->cu, r, "cuStreamSynchronize");
}

/* Waits for the stream's pending work, then destroys it; a wrapped stream is never
 * waited for: its scratch is freed in stream order (cuMemFreeAsync), or by cuMemFree
 * where the driver has no stream-ordered allocator. Errors can only be logged. */
void kp_cu_stream_destroy(kp_stream *s) {
    kp_cu_stream *impl = s->impl;
    if (!impl) return;
    const kp_cu_device *dev = cu_dev(s->device);
    const int wrapped = (s->flags & KP_STREAM_WRAPPED) != 0; /* a wrapped stream stays the server's */
    const int scratch = impl->scratch[0] || impl->scratch[1];
    if ((!wrapped || scratch) && kp_cu_push(dev) == KP_OK) {
        if (!wrapped) {
            CUresult r = dev->cu->cuStreamSynchronize(impl->stream);
            if (r != CUDA_SUCCESS)
                kp_cu_host->log("cuda: cuStreamSynchronize before destroy: %s (%d)",
                                kp_cu_result_name(dev->cu, r), (int)r);
        }
        kp_cu_scratch_free(impl, dev);
        if (!wrapped) {
            CUresult r = dev->cu->cuStreamDestroy(impl->stream);
            if (r != CUDA_SUCCESS)
                kp_cu_host->log("cuda: cuStreamDestroy: %s (%d)", kp_cu_result_name(dev->cu, r), (int)r);
        }
        kp_cu_pop(dev);
    }
    free(impl);
    s->impl = NULL;
}

/* ------------------------------------------------------------------------ */
/* Buffers                                                                   */
/* ------------------------------------------------------------------------ */

kp_status kp_cu_buffer_alloc(kp_device *d, size_t bytes, void **out_impl) {
    const kp_cu_device *dev = cu_dev(d);
    *out_impl = NULL;
    kp_cu_buffer *b = calloc(1, sizeof *b);
    if (!b) return kp_cu_host->set_error(KP_ERR_OUT_OF_MEMORY, "out of memory creating a cuda buffer");
    kp_status st = KP_OK;
    if (bytes > 0) { /* cuMemAlloc refuses 0 bytes; an empty buffer holds no memory */
        st = kp_cu_push(dev);
        if (st == KP_OK) {
            CUresult r = dev->cu->cuMemAlloc(&b->ptr, bytes);
            size_t free_b = 0, total_b = 0;
            if (r == CUDA_ERROR_OUT_OF_MEMORY && dev->cu->cuMemGetInfo &&
                dev->cu->cuMemGetInfo(&free_b, &total_b) == CUDA_SUCCESS) {
                st = kp_cu_fail(dev->cu, r, "cuMemAlloc of %zu bytes (%zu of %zu bytes free)", bytes,
                                free_b, total_b);
            } else if (r != CUDA_SUCCESS) {
                st = kp_cu_fail(dev->cu, r, "cuMemAlloc of %zu bytes", bytes);
            }
            kp_cu_pop(dev);
        }
    }
    if (st != KP_OK) {
        free(b);
        return st;
    }
    *out_impl = b;
    return KP_OK;
}

/* native is a CUdeviceptr passed as a pointer-sized value; kport never frees it. It
 * must belong to this device's primary context (or be a unified address) — what the
 * CUDA runtime and PyTorch allocate. */
kp_status kp_cu_buffer_wrap(kp_device *d, void *native, size_t bytes, void **out_impl) {
    (void)d;
    (void)bytes;
    *out_impl = NULL;
    kp_cu_buffer *b = calloc(1, sizeof *b);
    if (!b) return kp_cu_host->set_error(KP_ERR_OUT_OF_MEMORY, "out of memory wrapping a CUdeviceptr");
    b->ptr = (CUdeviceptr)(uintptr_t)native;
    *out_impl = b;
    return KP_OK;
}

void kp_cu_buffer_free(kp_buffer *buf) {
    kp_cu_buffer *b = buf->impl;
    if (!b) return;
    if (!(buf->flags & KP_BUFFER_WRAPPED) && b->ptr) {
        const kp_cu_device *dev = cu_dev(buf->device);
        if (kp_cu_push(dev) == KP_OK) {
            CUresult r = dev->cu->cuMemFree(b->ptr);
            if (r != CUDA_SUCCESS)
                kp_cu_host->log("cuda: cuMemFree: %s (%d)", kp_cu_result_name(dev->cu, r), (int)r);
            kp_cu_pop(dev);
        }
    }
    free(b);
    buf->impl = NULL;
}

kp_status kp_cu_buffer_write(kp_stream *s, kp_buffer *dst, size_t off, const void *src, size_t n) {
    if (n == 0) return KP_OK;
    const kp_cu_device *dev = cu_dev(s->device);
    kp_status st = kp_cu_push(dev);
    if (st != KP_OK) return st;
    CUresult r = dev->cu->cuMemcpyHtoDAsync(cu_ptr(dst, off), src, n, cu_stream(s));
    if (r != CUDA_SUCCESS)
        st = kp_cu_fail(dev->cu, r, "cuMemcpyHtoDAsync of %zu bytes to offset %zu", n, off);
    else if ((r = dev->cu->cuStreamSynchronize(cu_stream(s))) != CUDA_SUCCESS)
        st = kp_cu_fail(dev->cu, r, "cuStreamSynchronize after writing %zu bytes", n);
    kp_cu_pop(dev);
    return st;
}

kp_status kp_cu_buffer_read(kp_stream *s, const kp_buffer *src, size_t off, void *dst, size_t n) {
    if (n == 0) return KP_OK;
    const kp_cu_device *dev = cu_dev(s->device);
    kp_status st = kp_cu_push(dev);
    if (st != KP_OK) return st;
    CUresult r = dev->cu->cuMemcpyDtoHAsync(dst, cu_ptr(src, off), n, cu_stream(s));
    if (r != CUDA_SUCCESS)
        st = kp_cu_fail(dev->cu, r, "cuMemcpyDtoHAsync of %zu bytes from offset %zu", n, off);
    else if ((r = dev->cu->cuStreamSynchronize(cu_stream(s))) != CUDA_SUCCESS)
        st = kp_cu_fail(dev->cu, r, "cuStreamSynchronize after reading %zu bytes", n);
    kp_cu_pop(dev);
    return st;
}

kp_status kp_cu_buffer_copy(kp_stream *s, kp_buffer *dst, size_t dst_off, const kp_buffer *src,
                            size_t src_off, size_t n) {
    if (n == 0) return KP_OK;
    const kp_cu_device *dev = cu_dev(s->device);
    kp_status st = kp_cu_push(dev);
    if (st != KP_OK) return st;
    CUresult r = dev->cu->cuMemcpyDtoDAsync(cu_ptr(dst, dst_off), cu_ptr(src, src_off), n, cu_stream(s));
    if (r != CUDA_SUCCESS)
        st = kp_cu_fail(dev->cu, r, "cuMemcpyDtoDAsync of %zu bytes", n);
    else if (s == s->device->default_stream && /* a NULL stream in the API: synchronous */
             (r = dev->cu->cuStreamSynchronize(cu_stream(s))) != CUDA_SUCCESS)
        st = kp_cu_fail(dev->cu, r, "cuStreamSynchronize after copying %zu bytes", n);
    kp_cu_pop(dev);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Events: device-side timing (cuEventElapsedTime)                           */
/* ------------------------------------------------------------------------ */

/* impl is the CUevent itself. The event functions are optional symbols: a driver
 * without them reports events unsupported rather than failing init. */
static CUevent cu_event(const kp_event *e) {
    return (CUevent)e->impl;
}

kp_status kp_cu_event_create(kp_device *d, void **out_impl) {
    const kp_cu_device *dev = cu_dev(d);
    *out_impl = NULL;
    const kp_cu_syms *cu = dev->cu;
    if (!cu->cuEventCreate || !cu->cuEventRecord || !cu->cuEventSynchronize || !cu->cuEventElapsedTime ||
        !cu->cuEventDestroy)
        return kp_cu_host->set_error(KP_ERR_UNSUPPORTED,
                                     "cuda: this NVIDIA driver lacks the cuEvent* functions; no device timing");
    kp_status st = kp_cu_push(dev);
    if (st != KP_OK) return st;
    CUevent ev = NULL;
    CUresult r = cu->cuEventCreate(&ev, CU_EVENT_DEFAULT); /* timing enabled */
    kp_cu_pop(dev);
    if (r != CUDA_SUCCESS) return kp_cu_fail(cu, r, "cuEventCreate");
    *out_impl = (void *)ev;
    return KP_OK;
}

kp_status kp_cu_event_record(kp_event *e, kp_stream *s) {
    const kp_cu_device *dev = cu_dev(s->device);
    kp_status st = kp_cu_push(dev);
    if (st != KP_OK) return st;
    CUresult r = dev->cu->cuEventRecord(cu_event(e), cu_stream(s));
    kp_cu_pop(dev);
    return r == CUDA_SUCCESS ? KP_OK : kp_cu_fail(dev->cu, r, "cuEventRecord");
}

kp_status kp_cu_event_sync(kp_event *e) {
    const kp_cu_device *dev = cu_dev(e->device);
    kp_status st = kp_cu_push(dev);
    if (st != KP_OK) return st;
    CUresult r = dev->cu->cuEventSynchronize(cu_event(e));
    kp_cu_pop(dev);
    return r == CUDA_SUCCESS ? KP_OK : kp_cu_fail(dev->cu, r, "cuEventSynchronize");
}

/* Expert parallelism's poll (core/ep_device.c): never waits. */
kp_status kp_cu_event_query(kp_event *e, int *done) {
    const kp_cu_device *dev = cu_dev(e->device);
    if (!dev->cu->cuEventQuery)
        return kp_cu_host->set_error(KP_ERR_UNSUPPORTED, "cuda: this NVIDIA driver lacks cuEventQuery");
    kp_status st = kp_cu_push(dev);
    if (st != KP_OK) return st;
    CUresult r = dev->cu->cuEventQuery(cu_event(e));
    kp_cu_pop(dev);
    *done = r == CUDA_SUCCESS;
    return r == CUDA_SUCCESS || r == CUDA_ERROR_NOT_READY ? KP_OK : kp_cu_fail(dev->cu, r, "cuEventQuery");
}

kp_status kp_cu_buffer_address(const kp_buffer *b, uintptr_t *out) {
    *out = (uintptr_t)((const kp_cu_buffer *)b->impl)->ptr;
    return KP_OK;
}

kp_status kp_cu_event_elapsed(kp_event *start, kp_event *end, float *ms) {
    const kp_cu_device *dev = cu_dev(end->device);
    kp_status st = kp_cu_push(dev);
    if (st != KP_OK) return st;
    CUresult r = dev->cu->cuEventSynchronize(cu_event(end));
    if (r != CUDA_SUCCESS)
        st = kp_cu_fail(dev->cu, r, "cuEventSynchronize of the end event");
    else if ((r = dev->cu->cuEventElapsedTime(ms, cu_event(start), cu_event(end))) != CUDA_SUCCESS)
        st = kp_cu_fail(dev->cu, r, "cuEventElapsedTime");
    kp_cu_pop(dev);
    return st;
}

void kp_cu_event_destroy(kp_event *e) {
    if (!e->impl) return;
    const kp_cu_device *dev = cu_dev(e->device);
    if (kp_cu_push(dev) == KP_OK) {
        CUresult r = dev->cu->cuEventDestroy(cu_event(e));
        if (r != CUDA_SUCCESS)
            kp_cu_host->log("cuda: cuEventDestroy: %s (%d)", kp_cu_result_name(dev->cu, r), (int)r);
        kp_cu_pop(dev);
    }
    e->impl = NULL;
}

kp_status kp_cu_stream_wait_event(kp_stream *s, kp_event *e) {
    const kp_cu_device *dev = cu_dev(s->device);
    if (!dev->cu->cuStreamWaitEvent)
        return kp_cu_host->set_error(KP_ERR_UNSUPPORTED, "cuda: the driver has no cuStreamWaitEvent");
    kp_status st = kp_cu_push(dev);
    if (st != KP_OK) return st;
    CUresult r = dev->cu->cuStreamWaitEvent(cu_stream(s), cu_event(e), 0);
    kp_cu_pop(dev);
    return r == CUDA_SUCCESS ? KP_OK : kp_cu_fail(dev->cu, r, "cuStreamWaitEvent");
}
