/*
 * backends/hip/hip_buffer.c — streams and buffers of the hip backend.
 *
 * Every method makes the kp_device's HIP device current (kp_hip_push) for the
 * runtime calls it makes and restores the caller's (kp_hip_pop).
 * Host<->device copies are hipMemcpy*Async on the stream followed by
 * hipStreamSynchronize: blocking for the caller, ordered after the work already
 * queued on that stream. Device-to-device copies stay asynchronous, except on the
 * device's default stream, which kport defines as synchronous.
 */
#include "hip_internal.h"

#include <stdint.h>
#include <stdlib.h>

static const kp_hip_device *hip_dev(const kp_device *d) {
    return (const kp_hip_device *)d->impl;
}

static hipStream_t hip_stream(const kp_stream *s) {
    return ((const kp_hip_stream *)s->impl)->stream;
}

/* hipDeviceptr_t is void * on AMD: offsets are byte offsets */
static hipDeviceptr_t hip_ptr(const kp_buffer *b, size_t off) {
    return (char *)((const kp_hip_buffer *)b->impl)->ptr + off;
}

/* ------------------------------------------------------------------------ */
/* Streams                                                                   */
/* ------------------------------------------------------------------------ */

kp_status kp_hip_stream_create(kp_device *d, void **out_impl) {
    const kp_hip_device *dev = hip_dev(d);
    *out_impl = NULL;
    kp_hip_stream *s = calloc(1, sizeof *s);
    if (!s) return kp_hip_host->set_error(KP_ERR_OUT_OF_MEMORY, "out of memory creating a hip stream");
    int prev = 0;
    kp_status st = kp_hip_push(dev, &prev);
    if (st == KP_OK) {
        /* non-blocking: no implicit synchronisation with the NULL stream */
        hipError_t e = dev->hip->hipStreamCreateWithFlags(&s->stream, hipStreamNonBlocking);
        kp_hip_pop(dev, prev);
        if (e != hipSuccess) st = kp_hip_fail(dev->hip, e, "hipStreamCreateWithFlags");
    }
    if (st != KP_OK) {
        free(s);
        return st;
    }
    *out_impl = s;
    return KP_OK;
}

/* A server's hipStream_t; HIP has no portable query of a stream's device in ROCm 5,
 * so the caller's word that it is on this device is taken. */
kp_status kp_hip_stream_wrap(kp_device *d, void *native, void **out_impl) {
    (void)d;
    *out_impl = NULL;
    kp_hip_stream *s = calloc(1, sizeof *s);
    if (!s) return kp_hip_host->set_error(KP_ERR_OUT_OF_MEMORY, "out of memory wrapping a hip stream");
    s->stream = (hipStream_t)native;
    *out_impl = s;
    return KP_OK;
}

kp_status kp_hip_stream_native(kp_stream *s, void **out) {
    *out = (void *)hip_stream(s);
    return KP_OK;
}

kp_status kp_hip_stream_sync(kp_stream *s) {
    const kp_hip_device *dev = hip_dev(s->device);
    int prev = 0;
    kp_status st = kp_hip_push(dev, &prev);
    if (st != KP_OK) return st;
    hipError_t e = dev->hip->hipStreamSynchronize(hip_stream(s));
    kp_hip_pop(dev, prev);
    return e == hipSuccess ? KP_OK : kp_hip_fail(dev->hip, e, "hipStreamSynchronize");
}

/* Waits for the stream's pending work, then destroys it (a wrapped stream: neither).
 * Errors can only be logged: the stream is gone either way. */
void kp_hip_stream_destroy(kp_stream *s) {
    kp_hip_stream *impl = s->impl;
    if (!impl) return;
    const kp_hip_device *dev = hip_dev(s->device);
    kp_hip_scratch_free(dev, impl, (s->flags & KP_STREAM_WRAPPED) != 0); /* a wrapped stream is not waited for */
    int prev = 0;
    if (!(s->flags & KP_STREAM_WRAPPED) && kp_hip_push(dev, &prev) == KP_OK) { /* wrapped: the server's */
        hipError_t e = dev->hip->hipStreamSynchronize(impl->stream);
        if (e != hipSuccess)
            kp_hip_host->log("hip: hipStreamSynchronize before destroy: %s (%d)",
                             kp_hip_error_name(dev->hip, e), (int)e);
        e = dev->hip->hipStreamDestroy(impl->stream);
        if (e != hipSuccess)
            kp_hip_host->log("hip: hipStreamDestroy: %s (%d)", kp_hip_error_name(dev->hip, e), (int)e);
        kp_hip_pop(dev, prev);
    }
    free(impl);
    s->impl = NULL;
}

/* ------------------------------------------------------------------------ */
/* Buffers                                                                   */
/* ------------------------------------------------------------------------ */

kp_status kp_hip_buffer_alloc(kp_device *d, size_t bytes, void **out_impl) {
    const kp_hip_device *dev = hip_dev(d);
    *out_impl = NULL;
    kp_hip_buffer *b = calloc(1, sizeof *b);
    if (!b) return kp_hip_host->set_error(KP_ERR_OUT_OF_MEMORY, "out of memory creating a hip buffer");
    kp_status st = KP_OK;
    if (bytes > 0) { /* an empty buffer holds no memory */
        int prev = 0;
        st = kp_hip_push(dev, &prev);
        if (st == KP_OK) {
            hipError_t e = dev->hip->hipMalloc(&b->ptr, bytes);
            size_t free_b = 0, total_b = 0;
            if (e == hipErrorOutOfMemory && dev->hip->hipMemGetInfo &&
                dev->hip->hipMemGetInfo(&free_b, &total_b) == hipSuccess) {
                st = kp_hip_fail(dev->hip, e, "hipMalloc of %zu bytes (%zu of %zu bytes free)", bytes,
                                 free_b, total_b);
            } else if (e != hipSuccess) {
                st = kp_hip_fail(dev->hip, e, "hipMalloc of %zu bytes", bytes);
            }
            kp_hip_pop(dev, prev);
        }
    }
    if (st != KP_OK) {
        free(b);
        return st;
    }
    *out_impl = b;
    return KP_OK;
}

/* native is a hipDeviceptr_t of this device; kport never frees it. */
kp_status kp_hip_buffer_wrap(kp_device *d, void *native, size_t bytes, void **out_impl) {
    (void)d;
    (void)bytes;
    *out_impl = NULL;
    kp_hip_buffer *b = calloc(1, sizeof *b);
    if (!b) return kp_hip_host->set_error(KP_ERR_OUT_OF_MEMORY, "out of memory wrapping a hipDeviceptr_t");
    b->ptr = (hipDeviceptr_t)native;
    *out_impl = b;
    return KP_OK;
}

void kp_hip_buffer_free(kp_buffer *buf) {
    kp_hip_buffer *b = buf->impl;
    if (!b) return;
    if (!(buf->flags & KP_BUFFER_WRAPPED) && b->ptr) {
        const kp_hip_device *dev = hip_dev(buf->device);
        int prev = 0;
        if (kp_hip_push(dev, &prev) == KP_OK) {
            hipError_t e = dev->hip->hipFree(b->ptr);
            if (e != hipSuccess)
                kp_hip_host->log("hip: hipFree: %s (%d)", kp_hip_error_name(dev->hip, e), (int)e);
            kp_hip_pop(dev, prev);
        }
    }
    free(b);
    buf->impl = NULL;
}

kp_status kp_hip_buffer_write(kp_stream *s, kp_buffer *dst, size_t off, const void *src, size_t n) {
    if (n == 0) return KP_OK;
    const kp_hip_device *dev = hip_dev(s->device);
    int prev = 0;
    kp_status st = kp_hip_push(dev, &prev);
    if (st != KP_OK) return st;
    /* ROCm 5 declares the source non-const; it only reads it */
    hipError_t e = dev->hip->hipMemcpyHtoDAsync(hip_ptr(dst, off), (void *)(uintptr_t)src, n, hip_stream(s));
    if (e != hipSuccess)
        st = kp_hip_fail(dev->hip, e, "hipMemcpyHtoDAsync of %zu bytes to offset %zu", n, off);
    else if ((e = dev->hip->hipStreamSynchronize(hip_stream(s))) != hipSuccess)
        st = kp_hip_fail(dev->hip, e, "hipStreamSynchronize after writing %zu bytes", n);
    kp_hip_pop(dev, prev);
    return st;
}

kp_status kp_hip_buffer_read(kp_stream *s, const kp_buffer *src, size_t off, void *dst, size_t n) {
    if (n == 0) return KP_OK;
    const kp_hip_device *dev = hip_dev(s->device);
    int prev = 0;
    kp_status st = kp_hip_push(dev, &prev);
    if (st != KP_OK) return st;
    hipError_t e = dev->hip->hipMemcpyDtoHAsync(dst, hip_ptr(src, off), n, hip_stream(s));
    if (e != hipSuccess)
        st = kp_hip_fail(dev->hip, e, "hipMemcpyDtoHAsync of %zu bytes from offset %zu", n, off);
    else if ((e = dev->hip->hipStreamSynchronize(hip_stream(s))) != hipSuccess)
        st = kp_hip_fail(dev->hip, e, "hipStreamSynchronize after reading %zu bytes", n);
    kp_hip_pop(dev, prev);
    return st;
}

kp_status kp_hip_buffer_copy(kp_stream *s, kp_buffer *dst, size_t dst_off, const kp_buffer *src,
                             size_t src_off, size_t n) {
    if (n == 0) return KP_OK;
    const kp_hip_device *dev = hip_dev(s->device);
    int prev = 0;
    kp_status st = kp_hip_push(dev, &prev);
    if (st != KP_OK) return st;
    hipError_t e = dev->hip->hipMemcpyDtoDAsync(hip_ptr(dst, dst_off), hip_ptr(src, src_off), n,
                                                hip_stream(s));
    if (e != hipSuccess)
        st = kp_hip_fail(dev->hip, e, "hipMemcpyDtoDAsync of %zu bytes", n);
    else if (s == s->device->default_stream && /* a NULL stream in the API: synchronous */
             (e = dev->hip->hipStreamSynchronize(hip_stream(s))) != hipSuccess)
        st = kp_hip_fail(dev->hip, e, "hipStreamSynchronize after copying %zu bytes", n);
    kp_hip_pop(dev, prev);
    return st;
}

/* ---- events: hipEvent_t, timing enabled ---------------------------------- */

static hipEvent_t hip_event(const kp_event *e) { return (hipEvent_t)e->impl; }

kp_status kp_hip_event_create(kp_device *d, void **out_impl) {
    const kp_hip_device *dev = hip_dev(d);
    const kp_hip_syms *hip = dev->hip;
    *out_impl = NULL;
    if (!hip->hipEventCreateWithFlags || !hip->hipEventRecord || !hip->hipEventSynchronize ||
        !hip->hipEventElapsedTime || !hip->hipEventDestroy)
        return kp_hip_host->set_error(KP_ERR_UNSUPPORTED, "hip: this HIP runtime lacks the hipEvent* functions");
    int prev = 0;
    kp_status st = kp_hip_push(dev, &prev);
    if (st != KP_OK) return st;
    hipEvent_t ev = NULL;
    hipError_t e = hip->hipEventCreateWithFlags(&ev, hipEventDefault);
    kp_hip_pop(dev, prev);
    if (e != hipSuccess) return kp_hip_fail(hip, e, "hipEventCreateWithFlags");
    *out_impl = (void *)ev;
    return KP_OK;
}

kp_status kp_hip_event_record(kp_event *ev, kp_stream *s) {
    const kp_hip_device *dev = hip_dev(s->device);
    int prev = 0;
    kp_status st = kp_hip_push(dev, &prev);
    if (st != KP_OK) return st;
    hipError_t e = dev->hip->hipEventRecord(hip_event(ev), hip_stream(s));
    kp_hip_pop(dev, prev);
    return e == hipSuccess ? KP_OK : kp_hip_fail(dev->hip, e, "hipEventRecord");
}

kp_status kp_hip_event_sync(kp_event *ev) {
    const kp_hip_device *dev = hip_dev(ev->device);
    int prev = 0;
    kp_status st = kp_hip_push(dev, &prev);
    if (st != KP_OK) return st;
    hipError_t e = dev->hip->hipEventSynchronize(hip_event(ev));
    kp_hip_pop(dev, prev);
    return e == hipSuccess ? KP_OK : kp_hip_fail(dev->hip, e, "hipEventSynchronize");
}

/* Expert parallelism's poll (core/ep_device.c): never waits. */
kp_status kp_hip_event_query(kp_event *ev, int *done) {
    const kp_hip_device *dev = hip_dev(ev->device);
    if (!dev->hip->hipEventQuery)
        return kp_hip_host->set_error(KP_ERR_UNSUPPORTED, "hip: this HIP runtime lacks hipEventQuery");
    int prev = 0;
    kp_status st = kp_hip_push(dev, &prev);
    if (st != KP_OK) return st;
    hipError_t e = dev->hip->hipEventQuery(hip_event(ev));
    kp_hip_pop(dev, prev);
    *done = e == hipSuccess;
    return e == hipSuccess || e == hipErrorNotReady ? KP_OK : kp_hip_fail(dev->hip, e, "hipEventQuery");
}

kp_status kp_hip_buffer_address(const kp_buffer *b, uintptr_t *out) {
    *out = (uintptr_t)((const kp_hip_buffer *)b->impl)->ptr;
    return KP_OK;
}

kp_status kp_hip_event_elapsed(kp_event *start, kp_event *end, float *ms) {
    const kp_hip_device *dev = hip_dev(end->device);
    int prev = 0;
    kp_status st = kp_hip_push(dev, &prev);
    if (st != KP_OK) return st;
    hipError_t e = dev->hip->hipEventSynchronize(hip_event(end));
    if (e != hipSuccess) st = kp_hip_fail(dev->hip, e, "hipEventSynchronize of the end event");
    else if ((e = dev->hip->hipEventElapsedTime(ms, hip_event(start), hip_event(end))) != hipSuccess)
        st = kp_hip_fail(dev->hip, e, "hipEventElapsedTime");
    kp_hip_pop(dev, prev);
    return st;
}

void kp_hip_event_destroy(kp_event *ev) {
    if (!ev->impl) return;
    const kp_hip_device *dev = hip_dev(ev->device);
    int prev = 0;
    if (kp_hip_push(dev, &prev) == KP_OK) {
        hipError_t e = dev->hip->hipEventDestroy(hip_event(ev));
        if (e != hipSuccess) kp_hip_host->log("hip: hipEventDestroy: %s (%d)", kp_hip_error_name(dev->hip, e), (int)e);
        kp_hip_pop(dev, prev);
    }
    ev->impl = NULL;
}

kp_status kp_hip_stream_wait_event(kp_stream *s, kp_event *ev) {
    const kp_hip_device *dev = hip_dev(s->device);
    if (!dev->hip->hipStreamWaitEvent)
        return kp_hip_host->set_error(KP_ERR_UNSUPPORTED, "hip: the runtime has no hipStreamWaitEvent");
    int prev = 0;
    kp_status st = kp_hip_push(dev, &prev);
    if (st != KP_OK) return st;
    hipError_t e = dev->hip->hipStreamWaitEvent(hip_stream(s), hip_event(ev), 0);
    kp_hip_pop(dev, prev);
    return e == hipSuccess ? KP_OK : kp_hip_fail(dev->hip, e, "hipStreamWaitEvent");
}
