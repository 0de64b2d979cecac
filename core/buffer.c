/*
 * core/buffer.c — device memory: alloc, wrap, free, and host/device copies.
 * Every range is checked against the buffer's size before the backend sees it.
 */
#include "internal.h"

#include <stdlib.h>

static kp_status check_range(const char *fn, const char *what, const kp_buffer *b, size_t off,
                             size_t n) {
    if (off > b->size || n > b->size - off)
        return kp_set_error(KP_ERR_OUT_OF_BOUNDS,
                            "%s: %s range [%zu, %zu + %zu) is outside the buffer of %zu bytes", fn,
                            what, off, off, n, b->size);
    return KP_OK;
}

static kp_status new_buffer(const char *fn, kp_device *d, size_t bytes, void *native,
                            kp_buffer **out) {
    if (!out) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
    *out = NULL;
    if (!d) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: d is NULL", fn);
    if (bytes == 0) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: bytes is 0", fn);
    if (d->info.memory_bytes && bytes > d->info.memory_bytes)
        return kp_set_error(KP_ERR_OUT_OF_MEMORY, "%s: %zu bytes exceeds the %s device's %llu bytes",
                            fn, bytes, d->info.backend, (unsigned long long)d->info.memory_bytes);
    kp_buffer *b = calloc(1, sizeof *b);
    if (!b) return kp_set_error(KP_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    b->device = d;
    b->size = bytes;
    kp_status st;
    if (native) {
        b->flags = KP_BUFFER_WRAPPED;
        st = d->iface->buffer_wrap(d, native, bytes, &b->impl);
    } else {
        st = d->iface->buffer_alloc(d, bytes, &b->impl);
    }
    if (st != KP_OK) {
        free(b);
        return kp_add_context(st, "%s of %zu bytes on %s", fn, bytes, d->info.name);
    }
    kp_registry_handles_add(1);
    *out = b;
    return KP_OK;
}

kp_status kp_buffer_alloc(kp_device *d, size_t bytes, kp_buffer **out) {
    return new_buffer("kp_buffer_alloc", d, bytes, NULL, out);
}

kp_status kp_buffer_wrap(kp_device *d, void *native, size_t bytes, kp_buffer **out) {
    if (!native) {
        if (out) *out = NULL;
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_buffer_wrap: native is NULL");
    }
    return new_buffer("kp_buffer_wrap", d, bytes, native, out);
}

kp_status kp_buffer_free(kp_buffer *b) {
    if (!b) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_buffer_free: b is NULL");
    if (kp_buffer_is_address_space(b)) return KP_OK; /* kp_device_memory: the device owns it */
    b->device->iface->buffer_free(b);
    free(b);
    kp_registry_handles_add(-1);
    return KP_OK;
}

kp_status kp_device_memory(kp_device *d, kp_buffer **out) {
    if (!out) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_device_memory: out is NULL");
    *out = NULL;
    if (!d) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_device_memory: d is NULL");
    if (!(d->info.caps & KP_CAP_DEVICE_ADDRESSES))
        return kp_set_error(KP_ERR_UNSUPPORTED,
                            "kp_device_memory: %s device %s has no device addresses (its memory objects are "
                            "handles, as OpenCL's cl_mem): wrap the memory with kp_buffer_wrap instead",
                            d->info.backend, d->info.name);
    *out = &d->memory;
    return KP_OK;
}

size_t kp_buffer_size(const kp_buffer *b) { return b ? b->size : 0; }
kp_device *kp_buffer_device(const kp_buffer *b) { return b ? b->device : NULL; }

/* NULL stream -> the device's own synchronous stream; else it must be on b's device.
 * The address-space pseudo-buffer has no memory object to copy with: refused. */
static kp_status pick_stream(const char *fn, kp_stream *s, const kp_buffer *b, kp_stream **out) {
    if (kp_buffer_is_address_space(b))
        return kp_set_error(KP_ERR_UNSUPPORTED,
                            "%s: the buffer is kp_device_memory (device addresses); copy with the framework's "
                            "own API, or wrap the memory with kp_buffer_wrap to copy through kport", fn);
    if (!s) {
        *out = b->device->default_stream;
        return KP_OK;
    }
    if (s->device != b->device)
        return kp_set_error(KP_ERR_DEVICE_MISMATCH,
                            "%s: the stream is on device %d (%s), the buffer on device %d (%s)", fn,
                            s->device->global_index, s->device->info.name, b->device->global_index,
                            b->device->info.name);
    *out = s;
    return KP_OK;
}

kp_status kp_buffer_write(kp_stream *s, kp_buffer *dst, size_t dst_offset, const void *src,
                          size_t bytes) {
    const char *fn = "kp_buffer_write";
    if (!dst) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: dst is NULL", fn);
    if (!src && bytes) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: src is NULL", fn);
    kp_stream *q = NULL;
    kp_status st = pick_stream(fn, s, dst, &q);
    if (st == KP_OK) st = check_range(fn, "dst", dst, dst_offset, bytes);
    if (st != KP_OK || bytes == 0) return st;
    kp_note_host_sync();
    return dst->device->iface->buffer_write(q, dst, dst_offset, src, bytes);
}

kp_status kp_buffer_read(kp_stream *s, const kp_buffer *src, size_t src_offset, void *dst,
                         size_t bytes) {
    const char *fn = "kp_buffer_read";
    if (!src) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: src is NULL", fn);
    if (!dst && bytes) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: dst is NULL", fn);
    kp_stream *q = NULL;
    kp_status st = pick_stream(fn, s, src, &q);
    if (st == KP_OK) st = check_range(fn, "src", src, src_offset, bytes);
    if (st != KP_OK || bytes == 0) return st;
    kp_note_host_sync();
    return src->device->iface->buffer_read(q, src, src_offset, dst, bytes);
}

kp_status kp_buffer_copy(kp_stream *s, kp_buffer *dst, size_t dst_offset, const kp_buffer *src,
                         size_t src_offset, size_t bytes) {
    const char *fn = "kp_buffer_copy";
    if (!dst) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: dst is NULL", fn);
    if (!src) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: src is NULL", fn);
    if (src->device != dst->device)
        return kp_set_error(KP_ERR_DEVICE_MISMATCH,
                            "%s: src is on device %d (%s), dst on device %d (%s); copy through the host",
                            fn, src->device->global_index, src->device->info.name,
                            dst->device->global_index, dst->device->info.name);
    kp_stream *q = NULL;
    kp_status st = pick_stream(fn, s, src, &q); /* refuses an address-space src */
    if (st == KP_OK) st = pick_stream(fn, s, dst, &q);
    if (st == KP_OK) st = check_range(fn, "src", src, src_offset, bytes);
    if (st == KP_OK) st = check_range(fn, "dst", dst, dst_offset, bytes);
    if (st == KP_OK && src == dst && src_offset < dst_offset + bytes && dst_offset < src_offset + bytes)
        st = kp_set_error(KP_ERR_ALIASING, "%s: src [%zu, +%zu) and dst [%zu, +%zu) overlap", fn,
                          src_offset, bytes, dst_offset, bytes);
    if (st != KP_OK || bytes == 0) return st;
    st = dst->device->iface->buffer_copy(q, dst, dst_offset, src, src_offset, bytes);
    if (st == KP_OK && !s) st = dst->device->iface->stream_sync(q);
    return st;
}
