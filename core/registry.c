/*
 * core/registry.c — kp_init/kp_shutdown, the backend and device registry, and the
 * device selection policy (KPORT_BACKEND, KPORT_DEVICE).
 *
 * The registry is built once under g_lock by kp_init and is read-only until
 * kp_shutdown, so the query functions read it without locking.
 */
#include "internal.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct kp_device_slot {
    int backend;   /* index into g.backends */
    int local;     /* device index within that backend */
    kp_device_info info;
} kp_device_slot;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool g_initialized;
static atomic_int g_live_handles;
static struct {
    kp_backend_entry *backends;
    int backend_count, backend_cap;
    kp_device_slot *devices;
    int device_count;
} g;

static const kp_host_services g_host = {
    .abi_version = KP_BACKEND_ABI_VERSION,
    .set_error = kp_set_error,
    .add_context = kp_add_context,
    .log = kp_log,
    .cache_dir = kp_cache_dir,
    .tuning_get = kp_tuning_get,
    .tuning_generation = kp_tuning_generation,
};

const kp_host_services *kp_host(void) { return &g_host; }
bool kp_is_initialized(void) { return atomic_load(&g_initialized); }
void kp_registry_handles_add(int delta) { atomic_fetch_add(&g_live_handles, delta); }
int kp_registry_handles_live(void) { return atomic_load(&g_live_handles); }

kp_status kp_require_init(const char *fn) {
    if (!atomic_load(&g_initialized))
        return kp_set_error(KP_ERR_NOT_INITIALIZED, "%s: call kp_init first", fn);
    return KP_OK;
}

int kp_registry_backend_count(void) { return atomic_load(&g_initialized) ? g.backend_count : 0; }
kp_backend_entry *kp_registry_backend(int i) { return &g.backends[i]; }
int kp_registry_device_count(void) { return atomic_load(&g_initialized) ? g.device_count : 0; }

bool kp_registry_device(int global, kp_backend_entry **be, int *local, kp_device_info *info) {
    if (!atomic_load(&g_initialized) || global < 0 || global >= g.device_count) return false;
    if (be) *be = &g.backends[g.devices[global].backend];
    if (local) *local = g.devices[global].local;
    if (info) *info = g.devices[global].info;
    return true;
}

static kp_backend_entry *append_entry(void) {
    if (g.backend_count == g.backend_cap) {
        int cap = g.backend_cap ? g.backend_cap * 2 : 8;
        kp_backend_entry *n = realloc(g.backends, (size_t)cap * sizeof *n);
        if (!n) return NULL;
        g.backends = n;
        g.backend_cap = cap;
    }
    kp_backend_entry *e = &g.backends[g.backend_count++];
    memset(e, 0, sizeof *e);
    return e;
}

static void init_builtin_cpu(const kp_init_options *opt) {
    kp_backend_entry *e = append_entry();
    if (!e) return;
    e->iface = kp_cpu_backend_iface();
    snprintf(e->info.name, sizeof e->info.name, "%s", e->iface->name);
    snprintf(e->info.description, sizeof e->info.description, "%s", e->iface->description);
    kp_status st = e->iface->init(&g_host, opt, &e->state, e->info.reason, sizeof e->info.reason);
    if (st != KP_OK) e->state = NULL;
}

/* Asks each available backend for its devices and lays them out in one global list. */
static kp_status enumerate_devices(void) {
    int total = 0;
    for (int b = 0; b < g.backend_count; b++) {
        kp_backend_entry *e = &g.backends[b];
        e->info.device_count = e->state ? e->iface->device_count(e->state) : 0;
        if (e->info.device_count < 0) e->info.device_count = 0;
        total += e->info.device_count;
    }
    g.devices = total ? calloc((size_t)total, sizeof *g.devices) : NULL;
    if (total && !g.devices) return kp_set_error(KP_ERR_OUT_OF_MEMORY, "kp_init: device list");
    g.device_count = 0;
    for (int b = 0; b < g.backend_count; b++) {
        kp_backend_entry *e = &g.backends[b];
        int usable = 0;
        for (int i = 0; i < e->info.device_count; i++) {
            kp_device_slot *slot = &g.devices[g.device_count];
            memset(slot, 0, sizeof *slot);
            if (e->iface->device_info(e->state, i, &slot->info) != KP_OK) {
                kp_log("%s device %d: %s (skipped)", e->info.name, i, kp_last_error());
                continue;
            }
            slot->backend = b;
            slot->local = i;
            snprintf(slot->info.backend, sizeof slot->info.backend, "%s", e->info.name);
            slot->info.backend_index = b;
            slot->info.backend_device = i;
            g.device_count++;
            usable++;
        }
        e->info.device_count = usable;
        e->info.available = usable > 0;
        if (e->state && usable == 0 && !e->info.reason[0])
            snprintf(e->info.reason, sizeof e->info.reason, "no devices found");
        if (usable > 0) e->info.reason[0] = '\0';
    }
    return KP_OK;
}

static void release_registry(void) {
    for (int b = 0; b < g.backend_count; b++) {
        kp_backend_entry *e = &g.backends[b];
        if (e->state) e->iface->shutdown(e->state);
        if (e->dl_handle) dlclose(e->dl_handle);
    }
    free(g.backends);
    free(g.devices);
    memset(&g, 0, sizeof g);
}

static kp_status init_adopted(const kp_init_options *opt);

kp_status kp_init_sized(const kp_init_options *opt, size_t size) {
    kp_init_options buf;
    const void *adopted;
    kp_status st = kp_abi_adopt("kp_init", "kp_init_options", opt, size, kp_abi_0_1_init_options_size,
                                sizeof(kp_init_options), &buf, &adopted);
    return st == KP_OK ? init_adopted(adopted) : st;
}

/* 0.1's entry point: 0.1's kp_init_options (the parentheses keep kport.h's macro out). */
kp_status(kp_init)(const kp_init_options *opt) { return kp_init_sized(opt, 0); }

static kp_status init_adopted(const kp_init_options *opt) {
    if (atomic_load(&g_initialized)) return KP_OK;
    pthread_mutex_lock(&g_lock);
    kp_status st = KP_OK;
    if (atomic_load(&g_initialized)) goto out;
    if (opt && (opt->cpu_threads < 0 || opt->cpu_threads > KP_CPU_THREADS_MAX)) {
        st = kp_set_error(KP_ERR_INVALID_ARGUMENT,
                          "kp_init: opt->cpu_threads is %d; it must be 0 (KPORT_NUM_THREADS or all cores) .. %d",
                          (int)opt->cpu_threads, KP_CPU_THREADS_MAX);
        goto out;
    }
    if (opt && (opt->flags & ~KP_INIT_NO_PLUGINS)) {
        st = kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_init: opt->flags has unknown bits 0x%x",
                          (unsigned)(opt->flags & ~KP_INIT_NO_PLUGINS));
        goto out;
    }
    init_builtin_cpu(opt);
    if (!(opt && (opt->flags & KP_INIT_NO_PLUGINS)))
        kp_plugins_discover(opt, &g.backends, &g.backend_count, &g.backend_cap);
    st = enumerate_devices();
    if (st == KP_OK) {
        atomic_store(&g_initialized, true);
        kp_clear_error();
    } else {
        release_registry();
    }
out:
    pthread_mutex_unlock(&g_lock);
    return st;
}

kp_status kp_shutdown(void) {
    pthread_mutex_lock(&g_lock);
    kp_status st = KP_OK;
    int live = atomic_load(&g_live_handles);
    if (!atomic_load(&g_initialized)) {
        st = kp_set_error(KP_ERR_NOT_INITIALIZED, "kp_shutdown: kport is not initialised");
    } else if (live > 0) {
        st = kp_set_error(KP_ERR_INVALID_ARGUMENT,
                          "kp_shutdown: %d device, stream or buffer handles are still open; free them first",
                          live);
    } else {
        atomic_store(&g_initialized, false);
        release_registry();
        kp_tuning_reset();
    }
    pthread_mutex_unlock(&g_lock);
    return st;
}

int kp_backend_count(void) { return kp_registry_backend_count(); }

kp_status kp_backend_info_get(int index, kp_backend_info *out) {
    if (!out) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_backend_info_get: out is NULL");
    kp_status st = kp_require_init("kp_backend_info_get");
    if (st != KP_OK) return st;
    if (index < 0 || index >= g.backend_count)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "kp_backend_info_get: index %d is out of range (%d backends)", index,
                            g.backend_count);
    *out = g.backends[index].info;
    return KP_OK;
}

int kp_device_count(void) { return kp_registry_device_count(); }

kp_status kp_device_info_get(int index, kp_device_info *out) {
    if (!out) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_device_info_get: out is NULL");
    kp_status st = kp_require_init("kp_device_info_get");
    if (st != KP_OK) return st;
    if (!kp_registry_device(index, NULL, NULL, out))
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "kp_device_info_get: index %d is out of range (%d devices)", index,
                            g.device_count);
    return KP_OK;
}

/* ---- selection policy ---- */

static int kind_rank(kp_device_kind k) {
    switch (k) {
    case KP_DEVICE_GPU_DISCRETE: return 3;
    case KP_DEVICE_GPU_INTEGRATED: return 2;
    case KP_DEVICE_ACCELERATOR: return 1;
    case KP_DEVICE_CPU: return 0;
    }
    return 0;
}

/* Among devices of equal kind: the vendor backends first, the built-in CPU backend
 * before OpenCL CPU devices. */
static int backend_rank(const char *name, kp_device_kind kind) {
    static const char *gpu_order[] = {"cuda", "hip", "opencl"};
    if (kind == KP_DEVICE_CPU) return strcmp(name, "cpu") == 0 ? 10 : 0;
    for (int i = 0; i < 3; i++)
        if (strcmp(name, gpu_order[i]) == 0) return 10 - i;
    return 0;
}

static bool better(const kp_device_info *a, const kp_device_info *b) {
    int ka = kind_rank(a->kind), kb = kind_rank(b->kind);
    if (ka != kb) return ka > kb;
    return backend_rank(a->backend, a->kind) > backend_rank(b->backend, b->kind);
}

static int find_backend(const char *name, size_t len) {
    for (int b = 0; b < g.backend_count; b++)
        if (strlen(g.backends[b].info.name) == len && strncmp(g.backends[b].info.name, name, len) == 0)
            return b;
    return -1;
}

/* Best device of backend b, or -1. */
static int best_of_backend(int b) {
    int best = -1;
    for (int i = 0; i < g.device_count; i++)
        if (g.devices[i].backend == b && (best < 0 || better(&g.devices[i].info, &g.devices[best].info)))
            best = i;
    return best;
}

static kp_status parse_index(const char *what, const char *s, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0 || v > INT_MAX)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s='%s' is not a device index", what, s);
    *out = v;
    return KP_OK;
}

/* Applies KPORT_BACKEND / KPORT_DEVICE and the default policy; *out = global index. */
static kp_status select_device(int *out) {
    const char *want = getenv("KPORT_BACKEND");
    const char *devs = getenv("KPORT_DEVICE");
    long dev_index = -1;
    if (devs && *devs) {
        kp_status st = parse_index("KPORT_DEVICE", devs, &dev_index);
        if (st != KP_OK) return st;
    }
    if (want && *want) {
        int names = 1;
        for (const char *c = want; *c; c++) names += *c == ',';
        char reasons[1024] = "";
        for (const char *p = want; *p;) {
            size_t len = strcspn(p, ",");
            int b = find_backend(p, len);
            if (b < 0) {
                return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                                    "KPORT_BACKEND names '%.*s', which is not a loaded backend", (int)len, p);
            }
            kp_backend_entry *e = &g.backends[b];
            if (names == 1 && dev_index >= 0) {
                if (dev_index >= e->info.device_count)
                    return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                                        "KPORT_DEVICE=%ld is out of range: backend %s has %d devices",
                                        dev_index, e->info.name, e->info.device_count);
                for (int i = 0; i < g.device_count; i++)
                    if (g.devices[i].backend == b && g.devices[i].local == dev_index) *out = i;
                return KP_OK;
            }
            int best = best_of_backend(b);
            if (best >= 0) {
                *out = best;
                return KP_OK;
            }
            size_t used = strlen(reasons);
            snprintf(reasons + used, sizeof reasons - used, "%s%s: %s", used ? "; " : "", e->info.name,
                     e->info.reason[0] ? e->info.reason : "no devices");
            p += len;
            if (*p == ',') p++;
        }
        return kp_set_error(KP_ERR_UNAVAILABLE, "KPORT_BACKEND=%s: no usable device (%s)", want, reasons);
    }
    if (dev_index >= 0) {
        if (dev_index >= g.device_count)
            return kp_set_error(KP_ERR_INVALID_ARGUMENT, "KPORT_DEVICE=%ld is out of range (%d devices)",
                                dev_index, g.device_count);
        *out = (int)dev_index;
        return KP_OK;
    }
    int best = -1;
    for (int i = 0; i < g.device_count; i++)
        if (best < 0 || better(&g.devices[i].info, &g.devices[best].info)) best = i;
    if (best < 0) return kp_set_error(KP_ERR_UNAVAILABLE, "kp_device_open: no device is available");
    *out = best;
    return KP_OK;
}

kp_status kp_device_open(int index, kp_device **out) {
    if (!out) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_device_open: out is NULL");
    *out = NULL;
    kp_status st = kp_require_init("kp_device_open");
    if (st != KP_OK) return st;
    if (index == -1) {
        st = select_device(&index);
        if (st != KP_OK) return st;
    } else if (index < 0 || index >= g.device_count) {
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "kp_device_open: index %d is out of range (%d devices; -1 picks the best)",
                            index, g.device_count);
    }
    kp_device_slot *slot = &g.devices[index];
    kp_backend_entry *e = &g.backends[slot->backend];
    kp_device *d = calloc(1, sizeof *d);
    if (!d) return kp_set_error(KP_ERR_OUT_OF_MEMORY, "kp_device_open: out of host memory");
    d->iface = e->iface;
    d->backend = e->state;
    d->info = slot->info;
    d->global_index = index;
    d->memory.device = d;
    d->memory.size = SIZE_MAX;
    d->memory.flags = KP_BUFFER_ADDRESS_SPACE;
    st = e->iface->device_open(e->state, slot->local, &d->impl);
    kp_stream *ds = NULL;
    if (st == KP_OK) {
        ds = calloc(1, sizeof *ds);
        if (!ds) st = kp_set_error(KP_ERR_OUT_OF_MEMORY, "kp_device_open: out of host memory");
    }
    if (st == KP_OK) {
        ds->device = d;
        st = e->iface->stream_create(d, &ds->impl);
    }
    if (st == KP_OK) {
        d->default_stream = ds;
        kp_registry_handles_add(1);
        *out = d;
        return KP_OK;
    }
    free(ds);
    if (d->impl) e->iface->device_close(d->impl);
    free(d);
    return kp_add_context(st, "opening %s device %d (%s)", e->info.name, slot->local, slot->info.name);
}

kp_status kp_device_close(kp_device *d) {
    if (!d) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_device_close: d is NULL");
    d->iface->stream_sync(d->default_stream);
    d->iface->stream_destroy(d->default_stream);
    free(d->default_stream);
    d->iface->device_close(d->impl);
    free(d);
    kp_registry_handles_add(-1);
    return KP_OK;
}

kp_status kp_device_get_info(const kp_device *d, kp_device_info *out) {
    if (!d) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_device_get_info: d is NULL");
    if (!out) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_device_get_info: out is NULL");
    *out = d->info;
    return KP_OK;
}

kp_status kp_device_get_native(const kp_device *d, kp_native_device *out) {
    if (!d) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_device_get_native: d is NULL");
    if (!out) return kp_set_error(KP_ERR_INVALID_ARGUMENT, "kp_device_get_native: out is NULL");
    memset(out, 0, sizeof *out);
    return d->iface->device_native((kp_device *)d, out);
}
