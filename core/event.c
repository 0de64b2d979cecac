/*
 * core/event.c — events: points in a stream's work, timed on the device.
 */
#include "internal.h"

#include <stdlib.h>

kp_status kp_event_create(kp_device *d, kp_event **out) {
    if (!out) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_event_create: out is NULL");
    *out = NULL;
    if (!d) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_event_create: d is NULL");
    kp_event *e = calloc(1, sizeof *e);
    if (!e) return kp_set_error(KP_ERR_OUT_OF_MEMORY, "kp_event_create: out of host memory");
    e->device = d;
    kp_status st = d->iface->event_create(d, &e->impl);
    if (st != KP_OK) {
        free(e);
        return kp_add_context(st, "kp_event_create on %s", d->info.name);
    }
    kp_registry_handles_add(1);
    *out = e;
    return KP_OK;
}

kp_status kp_event_record(kp_event *e, kp_stream *s) {
    if (!e) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_event_record: e is NULL");
    if (!s) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_event_record: s is NULL");
    if (s->device != e->device)
        return kp_set_error(KP_ERR_DEVICE_MISMATCH, "kp_event_record: the event is of %s, the stream of %s",
                            e->device->info.name, s->device->info.name);
    kp_status st = e->device->iface->event_record(e, s);
    if (st == KP_OK) e->stream = s;
    return st;
}

kp_status kp_event_sync(kp_event *e) {
    if (!e) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_event_sync: e is NULL");
    kp_note_host_sync();
    if (!e->stream) return KP_OK; /* nothing marked: nothing to wait for */
    return e->device->iface->event_sync(e);
}

kp_status kp_event_elapsed_ms(kp_event *start, kp_event *end, float *ms) {
    if (!start || !end || !ms)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_event_elapsed_ms: %s is NULL",
                            !start ? "start" : !end ? "end" : "ms");
    *ms = 0.0f;
    if (start->device != end->device)
        return kp_set_error(KP_ERR_DEVICE_MISMATCH, "kp_event_elapsed_ms: start is of %s, end of %s",
                            start->device->info.name, end->device->info.name);
    if (!start->stream || !end->stream)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_event_elapsed_ms: %s was never recorded",
                            !start->stream ? "start" : "end");
    return start->device->iface->event_elapsed(start, end, ms);
}

kp_status kp_event_destroy(kp_event *e) {
    if (!e) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_event_destroy: e is NULL");
    e->device->iface->event_destroy(e);
    free(e);
    kp_registry_handles_add(-1);
    return KP_OK;
}
