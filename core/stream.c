/*
 * core/stream.c — streams: an in-order queue of work on one device.
 */
#include "internal.h"

#include <stdatomic.h>
#include <stdlib.h>

kp_status kp_stream_create(kp_device *d, kp_stream **out) {
    if (!out) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_stream_create: out is NULL");
    *out = NULL;
    if (!d) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_stream_create: d is NULL");
    kp_stream *s = calloc(1, sizeof *s);
    if (!s) return kp_set_error(KP_ERR_OUT_OF_MEMORY, "kp_stream_create: out of host memory");
    s->device = d;
    kp_status st = d->iface->stream_create(d, &s->impl);
    if (st != KP_OK) {
        free(s);
        return kp_add_context(st, "kp_stream_create on %s", d->info.name);
    }
    kp_registry_handles_add(1);
    *out = s;
    return KP_OK;
}

kp_status kp_stream_wrap(kp_device *d, void *native, kp_stream **out) {
    if (!out) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_stream_wrap: out is NULL");
    *out = NULL;
    if (!d) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_stream_wrap: d is NULL");
    if (!native) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_stream_wrap: native is NULL");
    kp_stream *s = calloc(1, sizeof *s);
    if (!s) return kp_set_error(KP_ERR_OUT_OF_MEMORY, "kp_stream_wrap: out of host memory");
    s->device = d;
    s->flags = KP_STREAM_WRAPPED;
    kp_status st = d->iface->stream_wrap(d, native, &s->impl);
    if (st != KP_OK) {
        free(s);
        return kp_add_context(st, "kp_stream_wrap on %s", d->info.name);
    }
    kp_registry_handles_add(1);
    *out = s;
    return KP_OK;
}

kp_status kp_stream_get_native(const kp_stream *s, void **out) {
    if (!s) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_stream_get_native: s is NULL");
    if (!out) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_stream_get_native: out is NULL");
    *out = NULL;
    return s->device->iface->stream_native((kp_stream *)s, out);
}

static _Atomic uint64_t g_host_syncs;
void kp_note_host_sync(void) { atomic_fetch_add_explicit(&g_host_syncs, 1, memory_order_relaxed); }
uint64_t kp_host_sync_count(void) { return atomic_load_explicit(&g_host_syncs, memory_order_relaxed); }

kp_status kp_stream_sync(kp_stream *s) {
    if (!s) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_stream_sync: s is NULL");
    kp_note_host_sync();
    return s->device->iface->stream_sync(s);
}

kp_status kp_stream_destroy(kp_stream *s) {
    if (!s) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_stream_destroy: s is NULL");
    /* a server's own stream is theirs to wait for */
    kp_status st = (s->flags & KP_STREAM_WRAPPED) ? KP_OK : s->device->iface->stream_sync(s);
    s->device->iface->stream_destroy(s);
    free(s);
    kp_registry_handles_add(-1);
    return st;
}

kp_status kp_stream_reserve(kp_stream *s, size_t bytes) {
    if (!s) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_stream_reserve: s is NULL");
    kp_status st = s->device->iface->stream_reserve(s, bytes);
    return st == KP_OK ? st : kp_add_context(st, "kp_stream_reserve of %zu bytes on %s", bytes, s->device->info.name);
}

kp_status kp_stream_wait_event(kp_stream *s, kp_event *e) {
    if (!s) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_stream_wait_event: s is NULL");
    if (!e) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_stream_wait_event: e is NULL");
    if (s->device != e->device)
        return kp_set_error(KP_ERR_DEVICE_MISMATCH, "kp_stream_wait_event: the event is of %s, the stream of %s",
                            e->device->info.name, s->device->info.name);
    if (!e->stream) return KP_OK; /* nothing marked: nothing to wait for (CUDA's rule too) */
    return s->device->iface->stream_wait_event(s, e);
}
