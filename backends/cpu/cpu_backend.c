/*
 * backends/cpu/cpu_backend.c — the built-in CPU backend: one device (this machine),
 * host-memory buffers, streams that run their work in order in the calling thread
 * with the thread pool doing the parallel part.
 *
 * Each op is one file in backends/cpu/ops/ (cpu_<op>.c).
 */
#include "cpu_internal.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CPU_BUFFER_ALIGN 64 /* one cache line and one AVX-512 vector */

static const kp_backend_iface cpu_iface;
static const kp_host_services *g_host; /* borrowed, set by init */

/* ---- init and device ---- */

static int default_threads(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* opt->cpu_threads, else KPORT_NUM_THREADS, else the cores this process may use. */
static int thread_count(const kp_init_options *opt) {
    if (opt && opt->cpu_threads > 0) return opt->cpu_threads;
    const char *env = getenv("KPORT_NUM_THREADS");
    if (env && *env) {
        char *end;
        long n = strtol(env, &end, 10);
        if (*end == '\0' && n >= 1 && n <= KP_CPU_THREADS_MAX) return (int)n;
        g_host->log("KPORT_NUM_THREADS='%s' is not a thread count in 1..%d; using all cores", env, KP_CPU_THREADS_MAX);
    }
    return default_threads();
}

static void cpu_model_name(char *out, size_t n) {
    snprintf(out, n, "CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        char *colon = strchr(line, ':');
        if (!colon) break;
        colon += 1 + strspn(colon + 1, " \t");
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(out, n, "%s", colon);
        break;
    }
    fclose(f);
}

static void fill_info(kp_backend_state *b) {
    const cpu_features *f = cpu_detect();
    kp_device_info *i = &b->info;
    memset(i, 0, sizeof *i);
    cpu_model_name(i->name, sizeof i->name);
    snprintf(i->vendor, sizeof i->vendor, "%s", f->vendor[0] ? f->vendor : "unknown");
#if defined(__x86_64__)
    snprintf(i->arch, sizeof i->arch, "x86-64 %s", cpu_simd_name(b->simd));
#elif defined(__aarch64__)
    snprintf(i->arch, sizeof i->arch, "aarch64 %s", cpu_simd_name(b->simd));
#else
    snprintf(i->arch, sizeof i->arch, "%s", cpu_simd_name(b->simd));
#endif
    snprintf(i->driver, sizeof i->driver, "kport cpu backend, %d threads", cpu_pool_threads(b->pool));
    i->kind = KP_DEVICE_CPU;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    i->memory_bytes = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    i->compute_units = cpu_pool_threads(b->pool);
    i->subgroup_size = cpu_simd_lanes(b->simd);
    long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    i->local_mem_bytes = l2 > 0 ? (uint64_t)l2 : 0;
    i->caps = KP_CAP_UNIFIED_MEMORY | KP_CAP_CHECKS_INDICES | KP_CAP_DEVICE_ADDRESSES;
    if (cpu_simd_at_least(b->simd, CPU_SIMD_AVX512_BF16) || cpu_simd_at_least(b->simd, CPU_SIMD_NEON_BF16))
        i->caps |= KP_CAP_BF16;
    if ((f->avx512_fp16 && cpu_simd_at_least(b->simd, CPU_SIMD_AVX512)) ||
        (f->neon_fp16 && cpu_simd_at_least(b->simd, CPU_SIMD_NEON)))
        i->caps |= KP_CAP_F16;
    if (f->amx) i->caps |= KP_CAP_MATRIX_UNITS;
}

static kp_status cpu_init(const kp_host_services *host, const kp_init_options *opt, kp_backend_state **out,
                          char *reason, size_t reason_len) {
    g_host = host;
    *out = NULL;
    kp_backend_state *b = calloc(1, sizeof *b);
    kp_status st = b ? KP_OK : KP_ERR_OUT_OF_MEMORY;
    if (st == KP_OK) {
        b->host = host;
        b->simd = cpu_simd_active();
        b->kernels = cpu_kernels_for(b->simd);
        st = cpu_pool_create(thread_count(opt), &b->pool);
    }
    if (st == KP_OK) {
        fill_info(b);
        *out = b;
        return KP_OK;
    }
    snprintf(reason, reason_len, "out of host memory while starting the CPU backend");
    free(b);
    return st;
}

static void cpu_shutdown(kp_backend_state *b) {
    cpu_pool_destroy(b->pool);
    free(b);
}

static int cpu_device_count(kp_backend_state *b) { return b ? 1 : 0; }

static kp_status cpu_device_info(kp_backend_state *b, int index, kp_device_info *out) {
    if (index != 0) return g_host->set_error(KP_ERR_INVALID_ARGUMENT, "cpu: device %d does not exist", index);
    *out = b->info;
    return KP_OK;
}

static kp_status cpu_device_open(kp_backend_state *b, int index, void **out_impl) {
    (void)index;
    *out_impl = b; /* the one device is the backend itself */
    return KP_OK;
}

static void cpu_device_close(void *dev_impl) { (void)dev_impl; }

static kp_status cpu_device_native(kp_device *d, kp_native_device *out) {
    (void)d;
    (void)out; /* host memory: no native handles */
    return KP_OK;
}

/* ---- streams ---- */

static kp_status cpu_stream_create(kp_device *d, void **out_impl) {
    (void)d;
    cpu_stream *s = calloc(1, sizeof *s);
    if (!s) return g_host->set_error(KP_ERR_OUT_OF_MEMORY, "cpu: out of host memory for a stream");
    pthread_mutex_init(&s->lock, NULL);
    *out_impl = s;
    return KP_OK;
}

static kp_status cpu_stream_wrap(kp_device *d, void *native, void **out_impl) {
    (void)d;
    (void)native;
    (void)out_impl;
    return g_host->set_error(KP_ERR_UNSUPPORTED, "cpu: the cpu backend has no native streams to wrap");
}

static kp_status cpu_stream_native(kp_stream *s, void **out) {
    (void)s;
    *out = NULL;
    return KP_OK;
}

/* Work runs to completion inside each call, so there is never anything to wait for;
 * taking the lock waits for a call in flight on another thread. */
static kp_status cpu_stream_sync(kp_stream *s) {
    cpu_stream *cs = s->impl;
    pthread_mutex_lock(&cs->lock);
    pthread_mutex_unlock(&cs->lock);
    return KP_OK;
}

static void cpu_stream_destroy(kp_stream *s) {
    cpu_stream *cs = s->impl;
    pthread_mutex_destroy(&cs->lock);
    free(cs);
}

/* ---- buffers ---- */

static kp_status cpu_buffer_alloc(kp_device *d, size_t bytes, void **out_impl) {
    (void)d;
    cpu_buffer *b = calloc(1, sizeof *b);
    size_t rounded = (bytes + CPU_BUFFER_ALIGN - 1) / CPU_BUFFER_ALIGN * CPU_BUFFER_ALIGN;
    if (!b || rounded < bytes || posix_memalign((void **)&b->data, CPU_BUFFER_ALIGN, rounded) != 0) {
        free(b);
        return g_host->set_error(KP_ERR_OUT_OF_MEMORY, "cpu: cannot allocate %zu bytes of host memory", bytes);
    }
    *out_impl = b;
    return KP_OK;
}

static kp_status cpu_buffer_wrap(kp_device *d, void *native, size_t bytes, void **out_impl) {
    (void)d;
    (void)bytes;
    cpu_buffer *b = calloc(1, sizeof *b);
    if (!b) return g_host->set_error(KP_ERR_OUT_OF_MEMORY, "cpu: out of host memory");
    b->data = native;
    *out_impl = b;
    return KP_OK;
}

static void cpu_buffer_free(kp_buffer *buf) {
    cpu_buffer *b = buf->impl;
    if (!(buf->flags & KP_BUFFER_WRAPPED)) free(b->data);
    free(b);
}

static kp_status cpu_buffer_write(kp_stream *s, kp_buffer *dst, size_t off, const void *src, size_t n) {
    cpu_stream *cs = s->impl;
    pthread_mutex_lock(&cs->lock);
    memcpy(cpu_buffer_data(dst) + off, src, n);
    pthread_mutex_unlock(&cs->lock);
    return KP_OK;
}

static kp_status cpu_buffer_read(kp_stream *s, const kp_buffer *src, size_t off, void *dst, size_t n) {
    cpu_stream *cs = s->impl;
    pthread_mutex_lock(&cs->lock);
    memcpy(dst, cpu_buffer_data(src) + off, n);
    pthread_mutex_unlock(&cs->lock);
    return KP_OK;
}

static kp_status cpu_buffer_copy(kp_stream *s, kp_buffer *dst, size_t dst_off, const kp_buffer *src,
                                 size_t src_off, size_t n) {
    cpu_stream *cs = s->impl;
    pthread_mutex_lock(&cs->lock);
    /* memmove: wrapped buffers may alias the same host memory */
    memmove(cpu_buffer_data(dst) + dst_off, cpu_buffer_data(src) + src_off, n);
    pthread_mutex_unlock(&cs->lock);
    return KP_OK;
}

/* ---- events: the host clock, since work finishes inside each call ---- */

static kp_status cpu_event_create(kp_device *d, void **out_impl) {
    (void)d;
    struct timespec *t = calloc(1, sizeof *t);
    if (!t) return g_host->set_error(KP_ERR_OUT_OF_MEMORY, "cpu: out of host memory for an event");
    *out_impl = t;
    return KP_OK;
}

static kp_status cpu_event_record(kp_event *e, kp_stream *s) {
    cpu_stream_sync(s); /* a call in flight on another thread is work before the mark */
    clock_gettime(CLOCK_MONOTONIC, (struct timespec *)e->impl);
    return KP_OK;
}

static kp_status cpu_event_sync(kp_event *e) {
    (void)e;
    return KP_OK;
}

static kp_status cpu_event_elapsed(kp_event *start, kp_event *end, float *ms) {
    const struct timespec *a = start->impl, *b = end->impl;
    *ms = (float)((double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) * 1e-6);
    return KP_OK;
}

static void cpu_event_destroy(kp_event *e) { free(e->impl); }

static kp_status cpu_event_query(kp_event *e, int *done) {
    (void)e;
    *done = 1; /* event_record waited for the stream */
    return KP_OK;
}

static kp_status cpu_buffer_address(const kp_buffer *b, uintptr_t *out) {
    *out = (uintptr_t)cpu_buffer_data(b);
    return KP_OK;
}

/* CPU ops keep no per-stream scratch: nothing to reserve. */
static kp_status cpu_stream_reserve(kp_stream *s, size_t bytes) {
    (void)s;
    (void)bytes;
    return KP_OK;
}

/* Recording waited for the work before the mark, and every op finishes inside its
 * call: whatever e marks is already done. */
static kp_status cpu_stream_wait_event(kp_stream *s, kp_event *e) {
    (void)s;
    (void)e;
    return KP_OK;
}

const kp_host_services *cpu_host(void) { return g_host; }

static const kp_backend_iface cpu_iface = {
    .abi_version = KP_BACKEND_ABI_VERSION,
    .struct_size = sizeof(kp_backend_iface),
    .name = "cpu",
    .description = "built-in CPU backend (pthreads, run-time SIMD dispatch)",
    .init = cpu_init,
    .shutdown = cpu_shutdown,
    .device_count = cpu_device_count,
    .device_info = cpu_device_info,
    .device_open = cpu_device_open,
    .device_close = cpu_device_close,
    .device_native = cpu_device_native,
    .stream_create = cpu_stream_create,
    .stream_wrap = cpu_stream_wrap,
    .stream_native = cpu_stream_native,
    .stream_sync = cpu_stream_sync,
    .stream_destroy = cpu_stream_destroy,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_wrap = cpu_buffer_wrap,
    .buffer_free = cpu_buffer_free,
    .buffer_write = cpu_buffer_write,
    .buffer_read = cpu_buffer_read,
    .buffer_copy = cpu_buffer_copy,
    .event_create = cpu_event_create,
    .event_record = cpu_event_record,
    .event_sync = cpu_event_sync,
    .event_elapsed = cpu_event_elapsed,
    .event_destroy = cpu_event_destroy,
    .stream_reserve = cpu_stream_reserve,
    .stream_wait_event = cpu_stream_wait_event,
    .dlpack_device_type = 1, /* kDLCPU */
    .ops = { /* cpu_op_run checks the index-width limits, then calls the op's function */
        [KP_OP_ATTENTION_PREFILL] = cpu_op_run,
        [KP_OP_ATTENTION_DECODE] = cpu_op_run,
        [KP_OP_MLA_DECODE] = cpu_op_run,
        [KP_OP_MOE_GATE] = cpu_op_run,
        [KP_OP_MOE_ALIGN] = cpu_op_run,
        [KP_OP_GROUPED_GEMM] = cpu_op_run,
        [KP_OP_MOE_COMBINE] = cpu_op_run,
        [KP_OP_MOE_FORWARD] = cpu_op_run,
        [KP_OP_KV_CACHE_STORE] = cpu_op_run,
        [KP_OP_QUANTIZE_FP8] = cpu_op_run,
    },
    .buffer_address = cpu_buffer_address,
    .event_query = cpu_event_query,
    .op_kernel = cpu_op_kernel,
    .ep_capacity = cpu_ep_capacity,
};

const kp_backend_iface *kp_cpu_backend_iface(void) { return &cpu_iface; }
