/*
 * tests/plugins/fake_backend.c — a fake GPU backend plugin for the loader and
 * dispatch tests: two "discrete GPU" devices backed by host memory, every vtable call
 * appended to the file named by $KPORT_FAKE_LOG. Built once per variant with -D:
 *
 *   (default)            libkport-fake.so: a working backend
 *   FAKE_NO_VENDOR       libkport-novendor.so: its vendor library is missing
 *   FAKE_BAD_ABI         libkport-badabi.so: built for another backend ABI
 *   FAKE_NULL_SLOT       libkport-nullslot.so: leaves a vtable slot NULL
 *   FAKE_NO_ENTRY        libkport-noentry.so: exports no entry function
 */
#include "backend.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FAKE_NAME
#define FAKE_NAME "fake"
#endif
#define FAKE_DEVICES 2

static const kp_host_services *host;

static void trace(const char *call) {
    const char *path = getenv("KPORT_FAKE_LOG");
    if (!path) return;
    FILE *f = fopen(path, "a");
    if (!f) return;
    fprintf(f, "%s\n", call);
    fclose(f);
}

struct kp_backend_state {
    int devices;
};

static kp_status fake_init(const kp_host_services *h, const kp_init_options *opt, kp_backend_state **out,
                           char *reason, size_t reason_len) {
    (void)opt;
    host = h;
    trace("init");
#ifdef FAKE_NO_VENDOR
    void *lib = dlopen("libkport-test-vendor-that-does-not-exist.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(reason, reason_len, "libkport-test-vendor-that-does-not-exist.so.1 not found: no fake driver");
        return KP_ERR_UNAVAILABLE;
    }
    dlclose(lib);
#else
    (void)reason;
    (void)reason_len;
#endif
    kp_backend_state *b = calloc(1, sizeof *b);
    if (!b) return KP_ERR_OUT_OF_MEMORY;
    b->devices = FAKE_DEVICES;
    *out = b;
    return KP_OK;
}

static void fake_shutdown(kp_backend_state *b) { trace("shutdown"); free(b); }
static int fake_device_count(kp_backend_state *b) { trace("device_count"); return b->devices; }

static kp_status fake_device_info(kp_backend_state *b, int index, kp_device_info *out) {
    (void)b;
    trace("device_info");
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "Fake GPU %d", index);
    snprintf(out->vendor, sizeof out->vendor, "kport tests");
    snprintf(out->arch, sizeof out->arch, "fake_1");
    snprintf(out->driver, sizeof out->driver, "0.0");
    out->kind = KP_DEVICE_GPU_DISCRETE;
    out->memory_bytes = 1ull << 30;
    out->compute_units = 4;
    out->subgroup_size = 32;
    out->caps = KP_CAP_F16 | KP_CAP_BF16;
    return KP_OK;
}

static kp_status fake_device_open(kp_backend_state *b, int index, void **out) {
    (void)b;
    trace("device_open");
    *out = (void *)(intptr_t)(index + 1);
    return KP_OK;
}
static void fake_device_close(void *d) { (void)d; trace("device_close"); }

static kp_status fake_device_native(kp_device *d, kp_native_device *out) {
    trace("device_native");
    out->context = (void *)0xC0;
    out->device = d->impl;
    return KP_OK;
}
static kp_status fake_stream_create(kp_device *d, void **out) { (void)d; trace("stream_create"); *out = (void *)1; return KP_OK; }
static kp_status fake_stream_wrap(kp_device *d, void *native, void **out) {
    (void)d;
    trace("stream_wrap");
    *out = native;
    return KP_OK;
}
static kp_status fake_stream_native(kp_stream *s, void **out) { trace("stream_native"); *out = s->impl; return KP_OK; }
static kp_status fake_stream_sync(kp_stream *s) { (void)s; trace("stream_sync"); return KP_OK; }
static void fake_stream_destroy(kp_stream *s) { trace((s->flags & KP_STREAM_WRAPPED) ? "stream_destroy wrapped" : "stream_destroy"); }

static kp_status fake_buffer_alloc(kp_device *d, size_t n, void **out) {
    (void)d;
    trace("buffer_alloc");
    *out = calloc(1, n);
    return *out ? KP_OK : host->set_error(KP_ERR_OUT_OF_MEMORY, "fake: out of memory");
}
static kp_status fake_buffer_wrap(kp_device *d, void *native, size_t n, void **out) {
    (void)d; (void)n;
    trace("buffer_wrap");
    *out = native;
    return KP_OK;
}
static void fake_buffer_free(kp_buffer *b) {
    trace("buffer_free");
    if (!(b->flags & KP_BUFFER_WRAPPED)) free(b->impl);
}
static kp_status fake_buffer_write(kp_stream *s, kp_buffer *dst, size_t off, const void *src, size_t n) {
    (void)s;
    trace("buffer_write");
    memcpy((char *)dst->impl + off, src, n);
    return KP_OK;
}
static kp_status fake_buffer_read(kp_stream *s, const kp_buffer *src, size_t off, void *dst, size_t n) {
    (void)s;
    trace("buffer_read");
    memcpy(dst, (const char *)src->impl + off, n);
    return KP_OK;
}
static kp_status fake_buffer_copy(kp_stream *s, kp_buffer *dst, size_t doff, const kp_buffer *src, size_t soff,
                                  size_t n) {
    (void)s;
    trace("buffer_copy");
    memmove((char *)dst->impl + doff, (const char *)src->impl + soff, n);
    return KP_OK;
}

static int fake_event_mark; /* events carry the order they were recorded in */
static kp_status fake_event_create(kp_device *d, void **out) { (void)d; trace("event_create"); *out = calloc(1, sizeof(int)); return *out ? KP_OK : KP_ERR_OUT_OF_MEMORY; }
static kp_status fake_event_record(kp_event *e, kp_stream *s) { (void)s; trace("event_record"); *(int *)e->impl = ++fake_event_mark; return KP_OK; }
static kp_status fake_event_sync(kp_event *e) { (void)e; trace("event_sync"); return KP_OK; }
static kp_status fake_event_elapsed(kp_event *a, kp_event *b, float *ms) {
    trace("event_elapsed");
    *ms = (float)(*(int *)b->impl - *(int *)a->impl); /* one "millisecond" per record in between */
    return KP_OK;
}
static void fake_event_destroy(kp_event *e) { trace("event_destroy"); free(e->impl); }
static kp_status fake_stream_reserve(kp_stream *s, size_t bytes) {
    (void)s;
    char line[64];
    snprintf(line, sizeof line, "stream_reserve %zu", bytes);
    trace(line);
    return KP_OK;
}
static kp_status fake_stream_wait_event(kp_stream *s, kp_event *e) {
    (void)s;
    char line[64];
    snprintf(line, sizeof line, "stream_wait_event %d", *(int *)e->impl);
    trace(line);
    return KP_OK;
}

/* Answers every op: "supported" in a dry run, and logs a real launch. Nothing is
 * computed: the dispatch tests check what reaches the backend, not results. */
static kp_status fake_op(kp_op op, kp_stream *s, const void *p, int dry_run) {
    (void)s; (void)p;
    char line[64];
    snprintf(line, sizeof line, "op %s%s", kp_backend_op_name(op), dry_run ? " dry_run" : "");
    trace(line);
    return KP_OK;
}

static const kp_backend_iface fake_iface = {
#ifdef FAKE_BAD_ABI
    .abi_version = KP_BACKEND_ABI_VERSION + 41,
#else
    .abi_version = KP_BACKEND_ABI_VERSION,
#endif
    .struct_size = KP_BACKEND_IFACE_MIN_SIZE, /* built before the optional slots (op_kernel): still loads */
    .name = FAKE_NAME,
    .description = "fake backend for kport's loader tests",
    .init = fake_init,
    .shutdown = fake_shutdown,
    .device_count = fake_device_count,
    .device_info = fake_device_info,
    .device_open = fake_device_open,
    .device_close = fake_device_close,
    .device_native = fake_device_native,
    .stream_create = fake_stream_create,
    .stream_wrap = fake_stream_wrap,
    .stream_native = fake_stream_native,
    .stream_sync = fake_stream_sync,
    .stream_destroy = fake_stream_destroy,
    .buffer_alloc = fake_buffer_alloc,
#ifndef FAKE_NULL_SLOT
    .buffer_wrap = fake_buffer_wrap,
#endif
    .buffer_free = fake_buffer_free,
    .buffer_write = fake_buffer_write,
    .buffer_read = fake_buffer_read,
    .buffer_copy = fake_buffer_copy,
    .event_create = fake_event_create,
    .event_record = fake_event_record,
    .event_sync = fake_event_sync,
    .event_elapsed = fake_event_elapsed,
    .event_destroy = fake_event_destroy,
    .stream_reserve = fake_stream_reserve,
    .stream_wait_event = fake_stream_wait_event,
    .dlpack_device_type = 2, /* pretends to be CUDA memory */
    .ops = {fake_op, fake_op, fake_op, fake_op, fake_op, fake_op, fake_op, fake_op, fake_op, fake_op},
};

#ifdef FAKE_NULL_SLOT
static kp_status (*const keep_wrap)(kp_device *, void *, size_t, void **) = fake_buffer_wrap;
#endif

#ifndef FAKE_NO_ENTRY
__attribute__((visibility("default"))) const kp_backend_iface *kport_backend_entry(uint32_t core_abi_version) {
    (void)core_abi_version;
#ifdef FAKE_NULL_SLOT
    (void)keep_wrap;
#endif
    return &fake_iface;
}
#else
__attribute__((visibility("default"))) const kp_backend_iface *kport_backend_entry_misspelt(uint32_t v) {
    (void)v;
    return &fake_iface;
}
#endif
