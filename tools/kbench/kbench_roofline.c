/*
 * tools/kbench/kbench_roofline.c — the two ceilings a row is judged against, measured
 * by kbench itself on the device it runs on:
 *
 *  - memory: kp_buffer_copy of a large buffer, best sample, counting read + write bytes
 *    (as the anchors' copy numbers do);
 *  - compute: on CPU devices (the CPU backend, PoCL) a host f32 FMA loop on every core
 *    this process may use, with AVX-512 or AVX2 chosen by cpuid at run time (never
 *    -march=native); on other devices kport's own grouped_gemm at 8192^3 bf16 when the
 *    backend runs it (a lower bound of the true peak; the row says so), else n/a.
 */
#include "kbench.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KB_X86 1
#endif

/* ---- host FMA loops: independent accumulators hide the FMA latency ---- */

static volatile float fma_sink;

#ifdef KB_X86
__attribute__((target("avx512f"))) static double fma_avx512(long iters) {
    const __m512 m = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
    __m512 a[16];
    for (int i = 0; i < 16; i++) a[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iters; it++) {
        a[0] = _mm512_fmadd_ps(a[0], m, c), a[1] = _mm512_fmadd_ps(a[1], m, c);
        a[2] = _mm512_fmadd_ps(a[2], m, c), a[3] = _mm512_fmadd_ps(a[3], m, c);
        a[4] = _mm512_fmadd_ps(a[4], m, c), a[5] = _mm512_fmadd_ps(a[5], m, c);
        a[6] = _mm512_fmadd_ps(a[6], m, c), a[7] = _mm512_fmadd_ps(a[7], m, c);
        a[8] = _mm512_fmadd_ps(a[8], m, c), a[9] = _mm512_fmadd_ps(a[9], m, c);
        a[10] = _mm512_fmadd_ps(a[10], m, c), a[11] = _mm512_fmadd_ps(a[11], m, c);
        a[12] = _mm512_fmadd_ps(a[12], m, c), a[13] = _mm512_fmadd_ps(a[13], m, c);
        a[14] = _mm512_fmadd_ps(a[14], m, c), a[15] = _mm512_fmadd_ps(a[15], m, c);
    }
    __m512 s = a[0];
    for (int i = 1; i < 16; i++) s = _mm512_add_ps(s, a[i]);
    fma_sink = _mm512_reduce_add_ps(s);
    return (double)iters * 16 * 16 * 2;
}

__attribute__((target("avx2,fma"))) static double fma_avx2(long iters) {
    const __m256 m = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
    __m256 a[12];
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < iters; it++) {
        a[0] = _mm256_fmadd_ps(a[0], m, c), a[1] = _mm256_fmadd_ps(a[1], m, c);
        a[2] = _mm256_fmadd_ps(a[2], m, c), a[3] = _mm256_fmadd_ps(a[3], m, c);
        a[4] = _mm256_fmadd_ps(a[4], m, c), a[5] = _mm256_fmadd_ps(a[5], m, c);
        a[6] = _mm256_fmadd_ps(a[6], m, c), a[7] = _mm256_fmadd_ps(a[7], m, c);
        a[8] = _mm256_fmadd_ps(a[8], m, c), a[9] = _mm256_fmadd_ps(a[9], m, c);
        a[10] = _mm256_fmadd_ps(a[10], m, c), a[11] = _mm256_fmadd_ps(a[11], m, c);
    }
    __m256 s = a[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, a[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    fma_sink = out[0] + out[7];
    return (double)iters * 12 * 8 * 2;
}
#endif

static double fma_scalar(long iters) {
    float a[8];
    for (int i = 0; i < 8; i++) a[i] = (float)i;
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < 8; i++) a[i] = fmaf(a[i], 0.9999999f, 1e-7f);
    fma_sink = a[0] + a[7];
    return (double)iters * 8 * 2;
}

typedef double (*fma_fn)(long iters);

typedef struct fma_job {
    fma_fn fn;
    long iters;
    double t0, t1;
} fma_job;

static void *fma_thread(void *arg) {
    fma_job *j = arg;
    j->t0 = kb_now();
    j->fn(j->iters);
    j->t1 = kb_now();
    return NULL;
}

static int usable_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

double kb_host_fma_peak(int threads, double seconds, const char **isa) {
    fma_fn fn = fma_scalar;
    *isa = "scalar fmaf";
#ifdef KB_X86
    /* KPORT_CPU_SIMD caps the cpu backend's level: the ceiling follows it, so a row run
     * at avx2 on an AVX-512 machine is judged against the AVX2 FMA peak */
    const char *cap = getenv("KPORT_CPU_SIMD");
    bool no512 = cap && (strcmp(cap, "avx2") == 0 || strcmp(cap, "portable") == 0);
    bool scalar = cap && strcmp(cap, "portable") == 0;
    __builtin_cpu_init();
    if (scalar) fn = fma_scalar;
    else if (__builtin_cpu_supports("avx512f") && !no512) fn = fma_avx512, *isa = "avx512f";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) fn = fma_avx2, *isa = "avx2+fma";
#endif
    if (threads < 1) threads = usable_cpus();
    /* calibrate on one thread, then run every thread for about `seconds` */
    double per_iter = fn(1), dt; /* FLOPs of one iteration */
    long iters = 1 << 14;
    for (;;) {
        double t0 = kb_now();
        fn(iters);
        if ((dt = kb_now() - t0) >= 0.02) break;
        iters *= 4;
    }
    iters = (long)((double)iters * seconds / dt) + 1;
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    fma_job *jobs = calloc((size_t)threads, sizeof *jobs);
    int started = 0;
    for (int i = 0; tid && jobs && i < threads; i++) {
        jobs[i] = (fma_job){.fn = fn, .iters = iters};
        if (pthread_create(&tid[i], NULL, fma_thread, &jobs[i]) != 0) break;
        started++;
    }
    double first = 0, last = 0;
    for (int i = 0; i < started; i++) {
        pthread_join(tid[i], NULL);
        if (i == 0 || jobs[i].t0 < first) first = jobs[i].t0;
        if (jobs[i].t1 > last) last = jobs[i].t1;
    }
    free(tid), free(jobs);
    /* threads start within microseconds of each other; the span covers them all */
    return started > 0 && last > first ? per_iter * (double)iters * started / (last - first) * 1e-9 : 0.0;
}

/* ---- memory: kp_buffer_copy ---- */

static kp_status copy_bandwidth(kp_device *dev, kp_stream *s, size_t bytes, double *gbps) {
    kp_buffer *a = NULL, *b = NULL;
    *gbps = 0.0;
    kp_status st = kp_buffer_alloc(dev, bytes, &a);
    if (st == KP_OK) st = kp_buffer_alloc(dev, bytes, &b);
    /* touch both first: first-touch page faults are not bandwidth */
    for (int i = 0; i < 2 && st == KP_OK; i++) st = kp_buffer_copy(s, i ? a : b, 0, i ? b : a, 0, bytes);
    if (st == KP_OK) st = kp_stream_sync(s);
    double spent = 0.0;
    for (int n = 0; st == KP_OK && (n < 5 || spent < 0.3) && n < 200; n++) {
        double t = kb_now();
        st = kp_buffer_copy(s, b, 0, a, 0, bytes);
        if (st == KP_OK) st = kp_stream_sync(s);
        double dt = kb_now() - t;
        spent += dt;
        double bw = 2.0 * (double)bytes / dt * 1e-9;
        if (bw > *gbps) *gbps = bw;
    }
    if (a) kp_buffer_free(a);
    if (b) kp_buffer_free(b);
    return st;
}

/* ---- compute on non-CPU devices: kport's grouped_gemm, E = 1, square ---- */

static void gemm_peak(kp_device *dev, kp_stream *s, const kp_device_info *info, const kb_options *o,
                      kb_roofline *r) {
    int64_t n = info->memory_bytes >= ((uint64_t)8 << 30) ? 8192 : 4096;
    kb_case c = {.op = KP_OP_GROUPED_GEMM, .dtype = KP_BF16, .wdtype = KP_BF16, .variant = "peak", .T = n, .E = 1,
                 .k = 1, .N = n, .K = n};
    kb_case_shape(&c);
    kb_env e = {.dev = dev, .s = s, .info = *info, .seed = o->seed};
    kb_options quick = *o;
    quick.repeat = 3, quick.min_time = 0.2, quick.max_time = 1.0;
    kb_row row;
    kb_run_case(&e, &c, &quick, NULL, &row);
    if (row.status == KB_ROW_OK && row.tflops > 0) {
        r->peak_tflops = row.tflops;
        snprintf(r->peak_method, sizeof r->peak_method,
                 "kport grouped_gemm bf16 %lld^3 (E=1); a lower bound of the device's peak", (long long)n);
    } else {
        snprintf(r->peak_method, sizeof r->peak_method, "n/a: grouped_gemm bf16 %lld^3 %s: %.120s", (long long)n,
                 kb_status_word(row.status), row.reason);
    }
    kb_row_free(&row);
}

kp_status kb_roofline_measure(kp_device *dev, kp_stream *s, const kb_options *o, kb_roofline *r) {
    kp_device_info info;
    kp_status st = kp_device_get_info(dev, &info);
    if (st != KP_OK) return st;
    memset(r, 0, sizeof *r);
    snprintf(r->backend, sizeof r->backend, "%s", info.backend);
    if (strcmp(info.backend, "cpu") == 0) /* the SIMD level, as the rows name it */
        snprintf(r->device, sizeof r->device, "%.80s (%.40s)", info.name, info.arch);
    else
        snprintf(r->device, sizeof r->device, "%s", info.name);
    if (o->mem_gbps > 0 && o->peak_tflops > 0) { /* both given: nothing to measure */
        r->mem_gbps = o->mem_gbps, r->peak_tflops = o->peak_tflops;
        snprintf(r->mem_method, sizeof r->mem_method, "--mem-gbps (given)");
        snprintf(r->peak_method, sizeof r->peak_method, "--peak-tflops (given)");
        return KP_OK;
    }
    size_t bytes = info.kind == KP_DEVICE_CPU ? (size_t)256 << 20 : (size_t)1 << 30;
    while (bytes > ((size_t)16 << 20) && info.memory_bytes && bytes * 4 > info.memory_bytes) bytes /= 2;
    double gbps = 0.0;
    st = copy_bandwidth(dev, s, bytes, &gbps);
    if (st == KP_OK && gbps > 0) {
        r->mem_gbps = gbps;
        snprintf(r->mem_method, sizeof r->mem_method, "kp_buffer_copy %zu MiB, best sample, read+write bytes",
                 bytes >> 20);
    } else {
        snprintf(r->mem_method, sizeof r->mem_method, "n/a: kp_buffer_copy %s: %.100s", kp_status_str(st),
                 kp_last_error());
    }
    if (o->mem_gbps > 0) {
        r->mem_gbps = o->mem_gbps;
        snprintf(r->mem_method, sizeof r->mem_method, "--mem-gbps (given)");
    }
    if (o->peak_tflops > 0) {
        r->peak_tflops = o->peak_tflops;
        snprintf(r->peak_method, sizeof r->peak_method, "--peak-tflops (given)");
    } else if (info.kind == KP_DEVICE_CPU) {
        const char *isa;
        int threads = usable_cpus();
        double g = 0.0;
        for (int i = 0; i < 5; i++) { /* best of short bursts: other processes only ever lower it */
            double x = kb_host_fma_peak(threads, 0.05, &isa);
            g = x > g ? x : g;
        }
        r->peak_tflops = g * 1e-3;
        snprintf(r->peak_method, sizeof r->peak_method, "host f32 FMA loop, %s, %d threads, best of 5", isa, threads);
    } else {
        gemm_peak(dev, s, &info, o, r);
    }
    return KP_OK;
}

/* Arithmetic intensity against the ridge point picks the bound; without a compute
 * ceiling, rows at >= 64 FLOP/byte count as compute-bound (no % given). */
void kb_roofline_classify(const kb_roofline *r, const kb_case *c, kb_row *row) {
    (void)c;
    double ai = row->bytes > 0 ? row->flops / row->bytes : 0.0;
    bool have_mem = r && r->mem_gbps > 0, have_peak = r && r->peak_tflops > 0;
    bool compute = have_mem && have_peak ? ai >= r->peak_tflops * 1e3 / r->mem_gbps : ai >= 64.0;
    row->bound = compute ? "compute" : "memory";
    row->roofline_pct = -1.0;
    if (row->status != KB_ROW_OK) return;
    if (compute && have_peak) row->roofline_pct = 100.0 * row->tflops / r->peak_tflops;
    else if (!compute && have_mem) row->roofline_pct = 100.0 * row->gbps / r->mem_gbps;
}
