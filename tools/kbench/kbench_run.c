/*
 * tools/kbench/kbench_run.c — one case on one device: set it up, ask kp_op_supported,
 * run it once on poisoned outputs and check a sample against float64, then time it.
 *
 * Timing: a sample is the device time between two kp_event marks around `inner`
 * back-to-back calls, divided by inner (host wall clock around the calls and one
 * kp_stream_sync where the device cannot time events, e.g. a wrapped OpenCL queue
 * without profiling; the cpu backend's events are the host clock). inner is chosen so a
 * sample lasts >= 1 ms (launch overhead amortised, as FlashAttention's and FlashMLA's
 * benchmarks do with their repeat loops). The checked
 * run is the warm-up; one more call sizes inner. Samples are taken until both
 * --repeat samples and --min-time seconds are reached, or --max-time once 3 samples
 * exist; a single call slower than --max-time is the only sample. Inputs stay resident
 * between calls (hot caches on CPUs, as in the reference benchmarks).
 */
#include "kbench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KB_PERIOD ((int64_t)(1 << 20) + 9) /* coprime to every head dim and hidden size used */
#define KB_STAGE_BYTES ((size_t)64 << 20)
#define KB_POISON_BYTES 4096

volatile int kb_interrupted;

/* ---- what a case allocates ---- */

void *kb_alloc(kb_env *e, size_t bytes) {
    if (!kb_grow(&e->mem, e->nmem, &e->capmem, sizeof *e->mem)) return NULL;
    void *p = calloc(1, bytes ? bytes : 1);
    if (p) e->mem[e->nmem++] = p;
    return p;
}

kp_status kb_buffer(kb_env *e, size_t bytes, kp_buffer **out) {
    *out = NULL;
    if (!kb_grow(&e->bufs, e->nbufs, &e->capbufs, sizeof *e->bufs)) return KP_ERR_OUT_OF_MEMORY;
    kp_status st = kp_buffer_alloc(e->dev, bytes ? bytes : 4, out);
    if (st == KP_OK) e->bufs[e->nbufs++] = *out;
    return st;
}

typedef struct kb_pending {
    kp_buffer *buf;
    unsigned char *raw; /* NULL: poison the buffer (all bytes 0xFF) */
    int64_t period, n;
    size_t elem;
} kb_pending;

static kp_status defer(kb_env *e, kb_pending p) {
    if (!kb_grow(&e->pending, e->npending, &e->cappending, sizeof *e->pending)) return KP_ERR_OUT_OF_MEMORY;
    e->pending[e->npending++] = p;
    return KP_OK;
}

static void drop_pending(kb_env *e) {
    free(e->pending);
    e->pending = NULL, e->npending = e->cappending = 0;
}

static void kb_env_release(kb_env *e) {
    drop_pending(e);
    if (e->s) kp_stream_sync(e->s); /* nothing may still be reading a buffer we free */
    for (int i = 0; i < e->nbufs; i++) kp_buffer_free(e->bufs[i]);
    for (int i = 0; i < e->nmem; i++) free(e->mem[i]);
    free(e->bufs);
    free(e->mem);
    e->bufs = NULL, e->mem = NULL;
    e->nbufs = e->capbufs = e->nmem = e->capmem = 0;
}

/* ---- device tensors ---- */

/* Writes the period-long pattern raw (elem bytes each) over n elements of b, through a
 * staging block holding whole periods so huge tensors go up in few calls. */
static kp_status upload_periodic(kb_env *e, kp_buffer *b, const unsigned char *raw, int64_t period, int64_t n,
                                 size_t elem) {
    size_t pbytes = (size_t)period * elem, total = (size_t)n * elem;
    size_t reps = total <= pbytes || pbytes >= KB_STAGE_BYTES ? 1 : KB_STAGE_BYTES / pbytes, chunk = reps * pbytes;
    unsigned char *stage = reps == 1 ? (unsigned char *)raw : malloc(chunk);
    if (!stage) return KP_ERR_OUT_OF_MEMORY;
    for (size_t r = 0; r < reps && stage != raw; r++) memcpy(stage + r * pbytes, raw, pbytes);
    kp_status st = KP_OK;
    for (size_t off = 0; off < total && st == KP_OK; off += chunk)
        st = kp_buffer_write(e->s, b, off, stage, total - off < chunk ? total - off : chunk);
    if (stage != raw) free(stage);
    return st;
}

static int64_t elements(int ndim, const int64_t *dims) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= dims[i];
    return n;
}

kp_status kb_input(kb_env *e, kb_data *d, kp_tensor *t, kp_dtype dtype, double lo, double hi, int ndim,
                   const int64_t *dims) {
    int64_t n = elements(ndim, dims);
    memset(d, 0, sizeof *d);
    d->period = n < KB_PERIOD ? (n > 0 ? n : 1) : KB_PERIOD;
    size_t elem = kp_dtype_size(dtype);
    unsigned char *raw = kb_alloc(e, (size_t)d->period * elem); /* the pending upload's, freed at release */
    d->val = kb_alloc(e, (size_t)d->period * sizeof *d->val);
    kp_status st = raw && d->val ? kb_buffer(e, (size_t)n * elem, &d->buf) : KP_ERR_OUT_OF_MEMORY;
    if (st != KP_OK) return st;
    kb_rng r = {e->seed ^ (0x9E37ull * (uint64_t)(e->nbufs + 1))}; /* each tensor its own numbers, from the seed */
    for (int64_t i = 0; i < d->period; i++) d->val[i] = kb_store(dtype, raw, i, kb_rng_uniform(&r, lo, hi));
    st = defer(e, (kb_pending){d->buf, raw, d->period, n, elem});
    return st == KP_OK ? kp_tensor_init(t, d->buf, 0, dtype, ndim, dims, NULL) : st;
}

double kb_dot(const kb_data *d, int64_t off, const double *x, int64_t n) {
    double sum = 0.0;
    int64_t i = off % d->period, done = 0;
    while (done < n) {
        int64_t len = d->period - i < n - done ? d->period - i : n - done;
        const double *v = d->val + i;
        for (int64_t j = 0; j < len; j++) sum += v[j] * x[done + j];
        done += len, i = 0;
    }
    return sum;
}

kp_status kb_input_i32(kb_env *e, const int32_t *v, kp_tensor *t, int ndim, const int64_t *dims) {
    int64_t n = elements(ndim, dims);
    kp_buffer *b;
    kp_status st = kb_buffer(e, (size_t)n * 4, &b);
    if (st == KP_OK && n > 0) st = kp_buffer_write(e->s, b, 0, v, (size_t)n * 4);
    return st == KP_OK ? kp_tensor_init(t, b, 0, KP_I32, ndim, dims, NULL) : st;
}

kp_status kb_output_tensor(kb_env *e, kp_buffer **b, kp_tensor *t, kp_dtype dt, int ndim, const int64_t *dims) {
    kp_status st = kb_buffer(e, (size_t)elements(ndim, dims) * kp_dtype_size(dt), b);
    if (st == KP_OK) st = defer(e, (kb_pending){*b, NULL, KB_POISON_BYTES, (int64_t)kp_buffer_size(*b), 1}); /* poisoned at flush */
    return st == KP_OK ? kp_tensor_init(t, *b, 0, dt, ndim, dims, NULL) : st;
}

static kp_status kb_env_flush(kb_env *e) {
    static unsigned char poison[KB_POISON_BYTES];
    kp_status st = KP_OK;
    if (!poison[0]) memset(poison, 0xFF, sizeof poison);
    for (int i = 0; i < e->npending && st == KP_OK; i++) {
        const kb_pending *p = &e->pending[i];
        st = upload_periodic(e, p->buf, p->raw ? p->raw : poison, p->period, p->n, p->elem);
    }
    drop_pending(e);
    return st;
}

kp_status kb_read(kb_env *e, kp_buffer *b, kp_dtype dt, int64_t first, int64_t n, double *out) {
    size_t elem = kp_dtype_size(dt);
    unsigned char *raw = kb_alloc(e, (size_t)n * elem);
    if (!raw) return KP_ERR_OUT_OF_MEMORY;
    kp_status st = kp_buffer_read(e->s, b, (size_t)first * elem, raw, (size_t)n * elem);
    for (int64_t i = 0; st == KP_OK && i < n; i++) out[i] = kb_load(dt, raw, i);
    return st;
}

/* ---- one case ---- */

void kb_row_free(kb_row *r) {
    free(r->samples);
    r->samples = NULL;
}

static void row_reason(kb_row *row, kb_status s, const char *fmt, const char *msg) {
    row->status = s;
    snprintf(row->reason, sizeof row->reason, fmt, msg);
    /* one line: messages end up in table cells */
    for (char *p = row->reason; *p; p++)
        if (*p == '\n' || *p == '|') *p = *p == '|' ? '/' : ' ';
}

static void fail_status(kb_row *row, kp_status st, const char *what) {
    char msg[KP_REASON_MAX];
    snprintf(msg, sizeof msg, "%s: %s: %s", what, kp_status_str(st), kp_last_error());
    if (st == KP_ERR_UNSUPPORTED) row_reason(row, KB_ROW_UNSUPPORTED, "%s", kp_last_error());
    else if (st == KP_ERR_OUT_OF_MEMORY) row_reason(row, KB_ROW_SKIPPED, "out of memory (%.400s)", msg);
    else row_reason(row, KB_ROW_ERROR, "%s", msg);
}

static kp_status run_sync(const kb_op_impl *impl, kb_bench *b, int times) {
    kp_status st = KP_OK;
    for (int i = 0; i < times && st == KP_OK; i++) st = impl->run(b);
    return st == KP_OK ? kp_stream_sync(b->env->s) : st;
}

/* One sample: ms per call over inner calls. Events when ev[0] is set; a failure of the
 * events themselves drops to the host clock for the rest of the row. */
static kp_status sample(const kb_op_impl *impl, kb_bench *b, int inner, kp_event *ev[2], double *ms, double *wall) {
    double t = kb_now();
    kp_status st = KP_OK;
    if (ev[0]) {
        float dev_ms = 0.0f;
        kp_stream *s = b->env->s;
        if ((st = kp_event_record(ev[0], s)) == KP_OK) {
            for (int i = 0; i < inner && st == KP_OK; i++) st = impl->run(b);
            if (st != KP_OK) return st; /* the op failed: not the timer's fault */
            if ((st = kp_event_record(ev[1], s)) == KP_OK) st = kp_event_elapsed_ms(ev[0], ev[1], &dev_ms);
        }
        *wall = kb_now() - t;
        if (st == KP_OK) {
            *ms = (double)dev_ms / inner;
            return KP_OK;
        }
        kp_event_destroy(ev[0]), kp_event_destroy(ev[1]);
        ev[0] = ev[1] = NULL;
        if ((st = kp_stream_sync(s)) != KP_OK) return st;
        t = kb_now();
    }
    st = run_sync(impl, b, inner);
    *wall = kb_now() - t;
    *ms = *wall * 1e3 / inner;
    return st;
}

/* Host microseconds to issue one call: bursts of KB_HOST_BURST calls on an idle stream,
 * timed on the host clock without the sync that follows, the best of KB_HOST_REPS (issue
 * 17: kport's own host work per op, the driver's enqueue included; short bursts so a
 * full launch queue never blocks the host). */
#define KB_HOST_BURST 16
#define KB_HOST_REPS 5
static kp_status host_issue_us(const kb_op_impl *impl, kb_bench *b, double *us) {
    double best = INFINITY;
    for (int r = 0; r < KB_HOST_REPS; r++) {
        double t = kb_now();
        kp_status st = KP_OK;
        for (int i = 0; i < KB_HOST_BURST && st == KP_OK; i++) st = impl->run(b);
        double dt = kb_now() - t;
        if (st == KP_OK) st = kp_stream_sync(b->env->s);
        if (st != KP_OK) return st;
        if (dt < best) best = dt;
    }
    *us = best * 1e6 / KB_HOST_BURST;
    return KP_OK;
}

static void time_case(const kb_op_impl *impl, kb_bench *b, const kb_options *o, kb_row *row) {
    /* the checked run was the warm-up (first-use compiles, page faults); this one sizes inner */
    double t0 = kb_now();
    kp_status st = run_sync(impl, b, 1);
    double one = kb_now() - t0;
    int inner = one > 0 ? (int)fmin(ceil(1e-3 / one), 10000) : 1000;
    row->inner = inner;
    row->samples = malloc(KB_MAX_SAMPLES * sizeof *row->samples);
    if (!row->samples) st = KP_ERR_OUT_OF_MEMORY;
    int min_n = o->repeat > 0 ? o->repeat : 1;
    double spent = 0.0;
    kp_event *ev[2] = {NULL, NULL};
    if (kp_event_create(b->env->dev, &ev[0]) != KP_OK || kp_event_create(b->env->dev, &ev[1]) != KP_OK) {
        if (ev[0]) kp_event_destroy(ev[0]);
        ev[0] = ev[1] = NULL;
    }
    bool slow = inner == 1 && one >= o->max_time;
    if (st == KP_OK && slow) /* a call slower than --max-time is its own one sample (PoCL, long contexts) */
        row->samples[row->nsamples++] = one * 1e3;
    while (st == KP_OK && !slow && row->nsamples < KB_MAX_SAMPLES) {
        double ms = 0.0, dt = 0.0;
        st = sample(impl, b, inner, ev, &ms, &dt);
        if (st != KP_OK) break;
        row->samples[row->nsamples++] = ms;
        spent += dt;
        if (row->nsamples >= min_n && spent >= o->min_time) break;
        if (row->nsamples >= (min_n < 3 ? min_n : 3) && spent >= o->max_time) break;
        if (kb_interrupted) break;
    }
    row->device_timed = ev[0] != NULL && row->nsamples > 0 && !slow;
    if (ev[0]) kp_event_destroy(ev[0]), kp_event_destroy(ev[1]);
    if (st != KP_OK) {
        fail_status(row, st, "while timing");
        return;
    }
    row->host_us = NAN;
    if (strcmp(b->env->info.backend, "cpu") != 0 && !slow && (st = host_issue_us(impl, b, &row->host_us)) != KP_OK) {
        fail_status(row, st, "while timing the host side");
        return;
    }
    kb_stats(row->samples, row->nsamples, &row->median_ms, &row->p10_ms, &row->p90_ms, &row->min_ms, &row->max_ms);
    double sec = row->median_ms * 1e-3;
    row->tflops = sec > 0 ? row->flops / sec * 1e-12 : 0.0;
    row->gbps = sec > 0 ? row->bytes / sec * 1e-9 : 0.0;
    row->status = KB_ROW_OK;
}

void kb_run_case(kb_env *e, const kb_case *c, const kb_options *o, const kb_roofline *r, kb_row *row) {
    memset(row, 0, sizeof *row);
    row->c = *c;
    snprintf(row->backend, sizeof row->backend, "%s", e->info.backend);
    /* the cpu backend's arch names the SIMD level its kernels ran at ("x86-64 avx2") */
    if (strcmp(e->info.backend, "cpu") == 0)
        snprintf(row->device, sizeof row->device, "%.80s (%.40s)", e->info.name, e->info.arch);
    else
        snprintf(row->device, sizeof row->device, "%s", e->info.name);
    row->roofline_pct = -1.0;
    row->bound = "memory";
    /* outputs in the inputs' dtype, except the gate's: f32 weights from exactly representable logits */
    row->tol = c->op == KP_OP_MOE_GATE ? kb_tolerance(KP_F32) : kb_tolerance(c->dtype);
    const kb_op_impl *impl = (unsigned)c->op < KP_OP_COUNT && kb_op_impls[c->op].setup ? &kb_op_impls[c->op] : NULL;
    kb_bench b = {.env = e, .c = c};
    double alloc;
    kb_case_estimate(c, &b.flops, &b.bytes, &alloc);
    kp_status st = !impl ? KP_ERR_UNSUPPORTED : !(b.st = kb_alloc(e, impl->state)) ? KP_ERR_OUT_OF_MEMORY : impl->setup(&b);
    row->flops = b.flops, row->bytes = b.bytes;
    if (st != KP_OK) {
        fail_status(row, st, "while setting up");
    } else if ((st = kp_op_supported(e->dev, c->op, b.st)) != KP_OK) {
        fail_status(row, st, "kp_op_supported");
    } else if ((void)kp_op_kernel(e->dev, c->op, b.st, row->kernel, sizeof row->kernel), /* a name, where given */
               strcmp(e->info.backend, "null") == 0) { /* runs no kernels (tests/nullgpu): host µs only */
        if ((st = host_issue_us(impl, &b, &row->host_us)) != KP_OK) fail_status(row, st, "while timing the host side");
        else row_reason(row, KB_ROW_SKIPPED, "%s", "no kernel ran (null backend): not timed, not checked");
    } else {
        st = kb_env_flush(e);
        if (st == KP_OK) st = run_sync(impl, &b, 1);
        kb_err err = {0};
        char *msg = b.msg;
        if (st == KP_OK) st = impl->check(&b, &err);
        row->err = kb_err_value(&err);
        if (st != KP_OK) {
            fail_status(row, st, "while running");
        } else if (msg[0] || !(row->err <= row->tol)) {
            /* a wrong result is never timed: it cannot show up as fast */
            if (!msg[0])
                snprintf(msg, sizeof b.msg, "sample rel. L2 error %.3g > %.3g over %lld values", row->err, row->tol,
                         (long long)err.count);
            row_reason(row, KB_ROW_FAIL, "%s", msg);
        } else {
            time_case(impl, &b, o, row);
        }
    }
    kb_roofline_classify(r, c, row);
    kb_env_release(e);
}
