/*
 * tools/kbench/kbench.h — what kbench's files share: options, cases, rows, rooflines,
 * the per-op interface and the host-side helpers (random inputs, dtype conversion,
 * float64 sample checks). kbench uses only kport's public API.
 */
#ifndef KBENCH_H
#define KBENCH_H

#include "kport.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define KB_MAX_SAMPLES 4096
#define KB_DTYPE_FP8W 100 /* row dtype "fp8": e4m3 expert weights or KV cache, bf16 activations */
#define KB_DTYPE_W8A8 101 /* row dtype "w8a8" (grouped_gemm, moe_forward): e4m3 a with 1x128 scales and weights, bf16 out */

/* Writes the message and returns -1 from the function (err and errn in scope). */
#define KB_FAIL(...) return (snprintf(err, errn, __VA_ARGS__), -1)

/* ---- options (kbench_main.c) ---- */
typedef enum kb_format { KB_MD, KB_CSV, KB_JSON } kb_format;

#define KB_MAX_SHAPES 64

typedef struct kb_options {
    const char *backend;     /* NULL: best device; "all": every device */
    int device;              /* -1: best / first of the backend */
    const char *suite;       /* a suite name, a comma list of them, or "all" */
    const char *ops;         /* comma list or NULL */
    const char *shapes[KB_MAX_SHAPES]; /* --shape specs of the one --op, in place of a suite */
    int nshapes;
    int dtype;               /* -1: each suite's own; a kp_dtype or KB_DTYPE_FP8W */
    kb_format format;
    const char *out;         /* NULL: stdout */
    int repeat;              /* minimum samples */
    double min_time;         /* seconds of samples at least */
    double max_time;         /* stop a case after this once 3 samples exist */
    const char *plot;
    bool compare;            /* the two operands are the JSON files */
    const char *from;        /* re-emit / plot a saved run instead of running */
    const char *list_shapes; /* an op name or "all" */
    bool tune, list, list_peaks, quiet;
    const char *tune_params; /* "kernel.param=v1,v2[@op]" entries, ';'-separated */
    uint64_t seed;
    double peak_tflops, mem_gbps; /* > 0: ceilings given on the command line replace the measured ones */
} kb_options;

/* ---- cases, --shape and --list-shapes (kbench_suites.c) ---- */
typedef struct kb_case {
    kp_op op;
    kp_dtype dtype;   /* inputs and outputs */
    kp_dtype wdtype;  /* expert weights or the KV cache: dtype, or KP_FP8_E4M3 */
    const char *variant; /* grouped_gemm: "w13" / "w2"; else "" */
    /* attention */
    int64_t b, s_q, s_k, h_q, h_kv, d, dv, block_size;
    int64_t causal, varlen; /* flags, int64_t as every field a shape names (kb_shape_parse) */
    /* MoE */
    int64_t T, E, k, n_group, topk_group, N, K, hidden, inter;
    int64_t max_m;   /* grouped_gemm: > 0 the masked layout, a [E, max_m, K], each expert's count
                      * min(rows routed to it, max_m) in masked_m on the device; 0: expert offsets */
    int64_t scoring; /* a kp_moe_scoring; sigmoid: DeepSeek-V3's router, with a bias and route scale 2.5;
                      * softmax: Qwen3's and Mixtral's, no bias, scale 1 */
    char shape[192];
    char note[192];
} kb_case;

typedef struct kb_case_list {
    kb_case *v;
    int n, cap;
} kb_case_list;

/* Size limits a case is scaled down to (CPU devices, small GPUs). */
typedef struct kb_budget {
    double flops;       /* per op call */
    double alloc_bytes; /* device memory a case may allocate */
    double stream_bytes;/* bytes a memory-bound op may move per call */
    const char *why;    /* "cpu", "memory" */
} kb_budget;

/* The budget cases are scaled to on this device (CPU devices; GPUs by memory), or NULL. */
const kb_budget *kb_budget_for(const kp_device_info *info, kb_budget *storage);
/* Appends the cases of suite (filtered by ops and dtype), scaled to budget (NULL: none). */
int kb_suite_cases(const char *suite, const char *ops, int dtype, const kb_budget *budget, kb_case_list *out,
                   char *err, size_t errn);
/* Appends c once per dtype (bf16 by default; --dtype's), unscaled: a --shape case. */
int kb_shape_cases(const kb_case *c, int dtype, kb_case_list *out, char *err, size_t errn);
const char *kb_op_name_list(void); /* "attention_prefill, attention_decode, ..." */
/* Parses "k=v,k=v" (or a row's shape column, space-separated) for op into c, from the
 * op's defaults; every value is checked (ranges, divisibility, int32 index limits,
 * sizes that overflow). -1 and a message naming the key on bad input. */
int kb_shape_parse(kp_op op, const char *spec, kb_case *c, char *err, size_t errn);
/* The keys each op takes, their defaults and meaning; op NULL: every op. */
void kb_shape_usage(FILE *o, const kp_op *op);
const char *kb_row_dtype_name(const kb_case *c);
/* Estimates before any allocation: FLOPs, bytes moved, bytes allocated. */
void kb_case_estimate(const kb_case *c, double *flops, double *bytes, double *alloc);
bool kb_op_from_name(const char *name, kp_op *op);
/* Sequence lengths of a case (varlen cases shrink from s to s/2 over the batch). */
void kb_prefill_len(const kb_case *c, int64_t i, int64_t *lq, int64_t *lk);
int64_t kb_decode_len(const kb_case *c, int64_t i);
/* Keys query i of lq sees among lk keys (bottom-right aligned when causal). */
int64_t kb_visible(int64_t i, int64_t lq, int64_t lk, int causal);

/* ---- per-sample stats and rows (kbench_run.c) ---- */
typedef enum kb_status { KB_ROW_OK, KB_ROW_FAIL, KB_ROW_UNSUPPORTED, KB_ROW_ERROR, KB_ROW_SKIPPED } kb_status;

typedef struct kb_row {
    kb_case c;
    char backend[16], device[KP_NAME_MAX];
    char kernel[KP_KERNEL_NAME_MAX]; /* kp_op_kernel's name; "" where the backend gives none */
    kb_status status;
    char reason[KP_REASON_MAX];
    double flops, bytes;        /* per call */
    double median_ms, p10_ms, p90_ms, min_ms, max_ms;
    double tflops, gbps, roofline_pct; /* roofline_pct < 0: n/a */
    const char *bound;          /* "memory" / "compute" */
    const char *unit;           /* the ceiling roofline_pct is against: "copy", "bf16 matrix", ... */
    double err, tol;            /* sample relative L2 error and its tolerance */
    int inner;                  /* op calls per sample */
    int device_timed;           /* samples are kp_event device time (else host wall clock) */
    double host_us;             /* host time to issue one call (kport's work + the driver's enqueue);
                                   NAN where the call runs the op itself (cpu) */
    int nsamples;
    double *samples;            /* ms per call, nsamples of them (owned) */
} kb_row;

/* ---- rooflines (kbench_roofline.c) and datasheet peaks (kbench_peaks.c) ---- */
typedef struct kb_peak {
    const char *vendor, *arch, *device; /* device "*": the arch's default */
    double bf16_tflops, fp8_tflops, f32_tflops, mem_gbps; /* dense; fp8 0: no FP8 matrix unit */
    const char *source;
} kb_peak;

/* The entry for a device as its backend reports it: this device's row, else its arch's
 * default, else NULL. */
const kb_peak *kb_peak_lookup(const char *vendor, const char *arch, const char *name);
/* The table's vendor and arch for a device ("NVIDIA Corporation" -> "NVIDIA", ...). */
void kb_peak_key(const char *vendor, const char *arch, const char *name, char *v, size_t vn, char *a, size_t an);
const kb_peak *kb_peak_table(int *n);

typedef struct kb_roofline {
    char backend[16], device[KP_NAME_MAX];
    double mem_gbps;            /* memory ceiling: measured copy bandwidth (or --mem-gbps); <= 0: n/a */
    char mem_method[160];
    double peak_tflops;         /* bf16/f16 rows' compute ceiling: matrix units (CPU: f32 FMA); <= 0: n/a */
    double fp8_tflops;          /* rows with FP8 weights: the FP8 matrix peak, else peak_tflops */
    double f32_tflops;          /* f32 rows: the f32 FMA peak */
    char peak_method[200];      /* "datasheet: <source>", "host f32 FMA loop ...", "--peak-tflops (given)" */
    double sheet_gbps;          /* the datasheet's memory bandwidth, shown beside the copy; 0: unknown */
    bool cpu;                   /* a CPU device: every compute ceiling is the f32 FMA peak */
    /* The kernel level that ran on this device (CPU SIMD level, GPU kernel generation),
     * when the backend names one; "" otherwise. Written to the report as kernel_level. */
    char kernel_level[32];
} kb_roofline;

kp_status kb_roofline_measure(kp_device *dev, kp_stream *s, const kb_options *o, kb_roofline *r);
/* Sets bound and roofline_pct of a timed row from the device's rooflines. */
void kb_roofline_classify(const kb_roofline *r, const kb_case *c, kb_row *row);

/* ---- environment of one device's run (kbench_run.c) ---- */
typedef struct kb_env {
    kp_device *dev;
    kp_stream *s;
    kp_device_info info;
    uint64_t seed;
    /* what a case allocated; kb_env_release frees it all */
    kp_buffer **bufs;
    int nbufs, capbufs;
    void **mem;
    int nmem, capmem;
    /* uploads and poisoning wait until kp_op_supported said yes: an unsupported op
     * must not cost gigabytes of host-to-device copies */
    struct kb_pending *pending;
    int npending, cappending;
} kb_env;

void *kb_alloc(kb_env *e, size_t bytes);   /* host memory freed at release; NULL on failure */
kp_status kb_buffer(kb_env *e, size_t bytes, kp_buffer **out);

/* A device tensor of random values that repeat with a period, so that huge weights and
 * KV caches need only a period's worth of host memory and upload in chunks. The
 * reference reads value i as val[i % period]. */
typedef struct kb_data {
    kp_buffer *buf;
    int64_t period;
    double *val; /* decoded, exactly what the device holds */
} kb_data;

static inline double kb_at(const kb_data *d, int64_t i) { return d->val[i % d->period]; }
/* sum over j < n of x[j] * d[off + j] in float64 */
double kb_dot(const kb_data *d, int64_t off, const double *x, int64_t n);
kp_status kb_read(kb_env *e, kp_buffer *b, kp_dtype dt, int64_t first, int64_t n, double *out);
/* A tensor of shape dims and the buffer under it, in one call: random values in [lo, hi)
 * (d: their period, for the reference), int32 values uploaded, or an output (poisoned at
 * flush). Uploads and poisoning wait for kb_env's flush. */
kp_status kb_input(kb_env *e, kb_data *d, kp_tensor *t, kp_dtype dt, double lo, double hi, int ndim, const int64_t *dims);
kp_status kb_input_i32(kb_env *e, const int32_t *v, kp_tensor *t, int ndim, const int64_t *dims);
kp_status kb_output_tensor(kb_env *e, kp_buffer **b, kp_tensor *t, kp_dtype dt, int ndim, const int64_t *dims);

/* ---- random numbers and dtypes (kbench_util.c) ---- */
typedef struct kb_rng {
    uint64_t s;
} kb_rng;
double kb_rng_uniform(kb_rng *r, double lo, double hi);
int64_t kb_rng_below(kb_rng *r, int64_t n);
/* k distinct values of [0, n) into out (k <= n). */
void kb_rng_distinct(kb_rng *r, int64_t n, int k, int32_t *out);
void kb_rng_permutation(kb_rng *r, int32_t *v, int64_t n); /* a random permutation of [0, n) */

/* Rounds v to dt, stores it at dst[i], returns the stored value as a double. */
double kb_store(kp_dtype dt, void *dst, int64_t i, double v);
double kb_load(kp_dtype dt, const void *src, int64_t i);
double kb_tolerance(kp_dtype dt);

/* Relative L2 error accumulator: sqrt(sum (out-ref)^2 / sum ref^2); NaN never passes. */
typedef struct kb_err {
    double num, den;
    bool nan;
    int64_t count;
} kb_err;
void kb_err_add(kb_err *e, double out, double ref);
double kb_err_value(const kb_err *e);

/* Room for one more element in the array *v (a T **) holding n of *cap, elem bytes each: doubled
 * when full. false when out of memory. */
bool kb_grow(void *v, int n, int *cap, size_t elem);

/* s, all of it, as a base-10 integer in [lo, hi]. */
bool kb_parse_int(const char *s, long long lo, long long hi, long long *out);
double kb_now(void); /* monotonic seconds */
/* Of 1 to KB_MAX_SAMPLES samples. */
void kb_stats(const double *v, int n, double *median, double *p10, double *p90, double *min, double *max);

/* ---- ops (kbench_ops.c) ---- */
typedef struct kb_bench {
    kb_env *env;
    const kb_case *c;
    void *st;          /* op state; its first member is the op's params (for kp_op_supported) */
    double flops, bytes; /* kb_case_estimate's; setup corrects what the inputs decide (experts routed to) */
    char msg[KP_REASON_MAX]; /* check: a mismatch that is not a numeric error (wrong ids, offsets) */
} kb_bench;

typedef struct kb_op_impl {
    kp_status (*setup)(kb_bench *b);          /* allocate, upload inputs, fill params */
    kp_status (*run)(kb_bench *b);            /* one call, asynchronous */
    /* float64 check of a sample of the outputs (poisoned at allocation, so every
     * checked element must have been written) */
    kp_status (*check)(kb_bench *b, kb_err *err);
    size_t state; /* bytes of the op's state, zeroed before setup */
} kb_op_impl;

extern const kb_op_impl kb_op_impls[KP_OP_COUNT]; /* by op; setup NULL: none */

/* ---- running a case (kbench_run.c) ---- */
extern volatile int kb_interrupted;
void kb_run_case(kb_env *e, const kb_case *c, const kb_options *o, const kb_roofline *r, kb_row *row);
void kb_row_free(kb_row *r);

/* ---- outputs (md, CSV, JSON through jansson), --compare, --plot (kbench_output.c) ---- */
typedef struct kb_report {
    const char *version, *commit, *date;
    char hostname[128], cpu_model[128];
    int cores;
    double loadavg; /* 1-minute load average when the run started; < 0 unknown */
    const char *suite;
    kb_roofline *roofs;
    int nroofs;
    kb_row *rows;
    int nrows;
    double wall_s;
    /* backends as kport found them */
    kp_backend_info *backends;
    int nbackends;
    void *json; /* a loaded report: the jansson tree its strings point into */
} kb_report;

/* --compare: rows of two reports matched (kbench_output.c). */
typedef struct kb_compare_row {
    const kb_row *a, *b; /* either may be NULL: a row in one file only */
    double speedup;      /* A ms / B ms; NaN when not both ran */
} kb_compare_row;
typedef struct kb_compare_set {
    const char *pa, *la, *pb, *lb; /* the files and their labels ("cpu (AMD EPYC)") */
    const kb_report *a, *b;
    kb_compare_row *rows;
    int n;
    double geomean;
} kb_compare_set;
/* The report (or, cmp given, the compare) in o->format to --out or stdout, then --plot's charts. */
int kb_emit(const kb_options *o, const kb_report *rep, const kb_compare_set *cmp);
const char *kb_status_word(kb_status s);

/* Loads a kbench JSON (format 1 or 2) into a report; kb_report_free releases it. */
int kb_report_load(const char *path, kb_report *r, char *err, size_t errn);
void kb_report_free(kb_report *r);
int kb_compare(const char *a, const char *b, const kb_options *o);
/* path = kbench's directory / name (kbench-plot, kport-ep-bench); -1 with a message. */
int kb_beside_self(const char *name, char *path, size_t pathn, char *err, size_t errn);

/* ---- --tune (kbench_tune.c) ---- */
/* Tunes on global device `device` (kp_init done); re-inits kport per candidate. */
int kb_tune(const kb_options *o, int device);

#endif /* KBENCH_H */
