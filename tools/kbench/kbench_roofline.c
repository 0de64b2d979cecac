/*
 * tools/kbench/kbench_roofline.c — the ceilings a row is judged against:
 *
 *  - memory: kp_buffer_copy of a large buffer measured on the device, best sample,
 *    counting read + write bytes (as the anchors' copy numbers do);
 *  - compute on CPU devices (the CPU backend, PoCL): a host f32 FMA loop on every core
 *    this process may use, with AVX-512 or AVX2 chosen by cpuid at run time (never
 *    -march=native), for every dtype;
 *  - compute on GPUs: the datasheet peaks of kbench_peaks.c, by unit (bf16 matrix, FP8
 *    matrix, f32 FMA); n/a for a GPU the table does not know.
 *
 * A row's ceiling is the roofline at its arithmetic intensity: min(unit peak, intensity x
 * copy bandwidth), with the unit its op and dtype should use (docs/kbench.md states the
 * rule). Ops without matrix work (gate, align, combine, paged decode) have only the memory
 * ceiling.
 */
#include "kbench.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#define KB_X86 1
#endif

/* ---- host FMA loops: independent accumulators hide the FMA latency ---- */

static volatile float fma_sink;

/* N accumulators of W floats each through iters FMAs; returns the FLOPs. GCC vector
 * types let one body serve every width, each instance with its own target; a * m + c
 * contracts to one FMA (gnu11 builds use -ffp-contract=fast). */
#define FMA_LOOP(name, attr, W, N)                                                                          \
    attr static double name(long iters) {                                                                      \
        typedef float vec __attribute__((vector_size(W * 4)));                                                \
        vec a[N], m = (vec){0} + 0.9999999f, c = (vec){0} + 1e-7f;                                            \
        for (int i = 0; i < N; i++) a[i] = (vec){0} + (float)i;                                               \
        for (long it = 0; it < iters; it++) {                                                                 \
            _Pragma("GCC unroll 16") for (int i = 0; i < N; i++) a[i] = a[i] * m + c;                       \
        }                                                                                                     \
        for (int i = 1; i < N; i++) a[0] += a[i];                                                             \
        fma_sink = a[0][0] + a[0][W - 1];                                                                     \
        return (double)iters * N * W * 2;                                                                     \
    }

#ifdef KB_X86
FMA_LOOP(fma_avx512, __attribute__((target("avx512f,fma"))), 16, 16)
FMA_LOOP(fma_avx2, __attribute__((target("avx2,fma"))), 8, 12)
#endif
FMA_LOOP(fma_scalar, , 1, 8)

typedef double (*fma_fn)(long iters);

typedef struct fma_job {
    pthread_t tid;
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

static double kb_host_fma_peak(int threads, double seconds, const char **isa) {
    fma_fn fn = fma_scalar;
    *isa = "scalar fmaf";
#ifdef KB_X86
    /* KPORT_CPU_SIMD caps the cpu backend's level: the ceiling follows it, so a row run
     * at avx2 on an AVX-512 machine is judged against the AVX2 FMA peak */
    const char *cap = getenv("KPORT_CPU_SIMD");
    bool scalar = cap && strcmp(cap, "portable") == 0, no512 = scalar || (cap && strcmp(cap, "avx2") == 0);
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && !no512) fn = fma_avx512, *isa = "avx512f";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !scalar) fn = fma_avx2, *isa = "avx2+fma";
#endif
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
    fma_job *jobs = calloc((size_t)threads, sizeof *jobs);
    int started = 0;
    for (int i = 0; jobs && i < threads; i++) {
        jobs[i] = (fma_job){.fn = fn, .iters = iters};
        if (pthread_create(&jobs[i].tid, NULL, fma_thread, &jobs[i]) != 0) break;
        started++;
    }
    double first = 0, last = 0;
    for (int i = 0; i < started; i++) {
        pthread_join(jobs[i].tid, NULL);
        if (i == 0 || jobs[i].t0 < first) first = jobs[i].t0;
        if (jobs[i].t1 > last) last = jobs[i].t1;
    }
    free(jobs);
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
        *gbps = fmax(*gbps, 2.0 * (double)bytes / dt * 1e-9); /* best sample */
    }
    if (a) kp_buffer_free(a);
    if (b) kp_buffer_free(b);
    return st;
}

/* GPU compute ceilings from the datasheet table. */
static void table_peaks(const kp_device_info *info, kb_roofline *r) {
    const kb_peak *p = kb_peak_lookup(info->vendor, info->arch, info->name);
    if (!p) {
        char v[64], a[64];
        kb_peak_key(info->vendor, info->arch, info->name, v, sizeof v, a, sizeof a);
        snprintf(r->peak_method, sizeof r->peak_method,
                 "n/a: %.20s / %.20s / %.60s is not in kbench's peak table (kbench --peaks); pass --peak-tflops", v,
                 a[0] ? a : "?", info->name);
        return;
    }
    r->peak_tflops = p->bf16_tflops;
    r->fp8_tflops = p->fp8_tflops > 0 ? p->fp8_tflops : p->bf16_tflops; /* FP8 weights on bf16 units */
    r->f32_tflops = p->f32_tflops;
    r->sheet_gbps = p->mem_gbps;
    snprintf(r->peak_method, sizeof r->peak_method, "datasheet%s: %s", strcmp(p->device, "*") == 0 ? " (arch default)" : "",
             p->source);
}

kp_status kb_roofline_measure(kp_device *dev, kp_stream *s, const kb_options *o, kb_roofline *r) {
    kp_device_info info;
    kp_status st = kp_device_get_info(dev, &info);
    if (st != KP_OK) return st;
    memset(r, 0, sizeof *r);
    snprintf(r->backend, sizeof r->backend, "%s", info.backend);
    snprintf(r->device, sizeof r->device, "%s", info.name);
    r->cpu = info.kind == KP_DEVICE_CPU;
    /* the CPU backend's arch names the SIMD level its kernels run (KPORT_CPU_SIMD caps it) */
    if (strcmp(info.backend, "cpu") == 0) snprintf(r->kernel_level, sizeof r->kernel_level, "%.31s", info.arch);
    if (o->mem_gbps > 0) {
        r->mem_gbps = o->mem_gbps;
        snprintf(r->mem_method, sizeof r->mem_method, "--mem-gbps (given)");
    } else {
        size_t bytes = info.kind == KP_DEVICE_CPU ? (size_t)256 << 20 : (size_t)1 << 30;
        while (bytes > ((size_t)16 << 20) && info.memory_bytes && bytes * 4 > info.memory_bytes) bytes /= 2;
        if ((st = copy_bandwidth(dev, s, bytes, &r->mem_gbps)) == KP_OK && r->mem_gbps > 0)
            snprintf(r->mem_method, sizeof r->mem_method, "kp_buffer_copy %zu MiB, best sample, read+write bytes",
                     bytes >> 20);
        else
            snprintf(r->mem_method, sizeof r->mem_method, "n/a: kp_buffer_copy %s: %.100s", kp_status_str(st),
                     kp_last_error());
    }
    if (info.kind != KP_DEVICE_CPU) table_peaks(&info, r);
    if (o->peak_tflops > 0) {
        r->peak_tflops = r->fp8_tflops = r->f32_tflops = o->peak_tflops;
        snprintf(r->peak_method, sizeof r->peak_method, "--peak-tflops (given)");
    } else if (info.kind == KP_DEVICE_CPU) {
        const char *isa;
        int threads = usable_cpus();
        double g = 0.0;
        for (int i = 0; i < 5; i++) /* best of short bursts: other processes only ever lower it */
            g = fmax(g, kb_host_fma_peak(threads, 0.05, &isa));
        r->peak_tflops = r->fp8_tflops = r->f32_tflops = g * 1e-3;
        snprintf(r->peak_method, sizeof r->peak_method, "host f32 FMA loop, %s, %d threads, best of 5", isa, threads);
    }
    return KP_OK;
}

/* The unit an op's work should run on; NULL: no matrix work, memory only. */
static const char *compute_unit(const kb_case *c, const kb_roofline *r, double *peak) {
    if (c->op != KP_OP_ATTENTION_PREFILL && c->op != KP_OP_MLA_DECODE && c->op != KP_OP_GROUPED_GEMM &&
        c->op != KP_OP_MOE_FORWARD)
        return NULL;
    if (c->dtype == KP_F32 || r->cpu) return *peak = r->f32_tflops, "f32 FMA";
    if (c->wdtype == KP_FP8_E4M3 && (c->op == KP_OP_GROUPED_GEMM || c->op == KP_OP_MOE_FORWARD))
        return *peak = r->fp8_tflops, "fp8 matrix"; /* an FP8 KV cache is read into bf16 math */
    return *peak = r->peak_tflops, "bf16 matrix";
}

/* Sets bound, unit and roofline_pct of a row: against min(peak, intensity x bandwidth).
 * Without a compute ceiling, rows at >= 64 FLOP/byte count as compute-bound (no %). */
void kb_roofline_classify(const kb_roofline *r, const kb_case *c, kb_row *row) {
    double ai = row->bytes > 0 ? row->flops / row->bytes : 0.0, peak = 0.0;
    const char *unit = r ? compute_unit(c, r, &peak) : NULL;
    bool have_mem = r && r->mem_gbps > 0, have_peak = unit && peak > 0;
    bool compute = unit && (have_mem && have_peak ? peak * 1e3 < ai * r->mem_gbps : ai >= 64.0);
    row->bound = compute ? "compute" : "memory";
    row->unit = compute ? (have_peak ? unit : NULL) : have_mem ? "copy" : NULL;
    row->roofline_pct = -1.0;
    if (row->status != KB_ROW_OK) return;
    if (compute && have_peak) row->roofline_pct = 100.0 * row->tflops / peak;
    else if (!compute && have_mem) row->roofline_pct = 100.0 * row->gbps / r->mem_gbps;
}
