/*
 * tools/kbench/kbench_main.c — kport's benchmark: every op over named suites, or one
 * --shape, on the best device (or the ones chosen), each row checked against float64 on
 * a sample and judged against the device's ceilings. docs/kbench.md has the details.
 *
 *   kbench                                   quick suite, best device, markdown
 *   kbench --suite deepseek-v3 --format json --out x.json
 *   kbench --op grouped_gemm --shape T=4096,E=256,k=8,N=4096,K=7168
 *   kbench --compare a.json b.json           per-row speedups
 *   kbench --tune                            search tuning parameters, write the user file
 *   mpirun -np 4 kbench --ep 128 4096        EP dispatch and combine (runs kport-ep-bench)
 */
#include "kbench.h"
#include "kbench_version.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Ctrl-C or SIGTERM (timeout(1)): finish the row in flight, then write the report of
 * the rows done; a second signal ends at once. */
static void on_sigint(int sig) {
    kb_interrupted = 1;
    signal(sig, SIG_DFL);
}

/* ---- options ---- */

static bool to_double(const char *s, double lo, double *out) {
    char *end;
    *out = strtod(s, &end);
    return end != s && !*end && *out >= lo && isfinite(*out);
}

/* Every option once: getopt_long's table and --help are made from this list. */
#define KB_OPTIONS(X)                                                                                             \
    X(BACKEND, "backend", 1, "NAME", "cpu, opencl, cuda, hip, or all (every device); default: the best device")    \
    X(DEVICE, "device", 1, "N", "device N of that backend, or global device N without --backend")                 \
    X(SUITE, "suite", 1, "NAME,..", "quick (default), deepseek-v3, llama, qwen3-moe, mixtral, all")               \
    X(OP, "op", 1, "A,B", "only these ops (attention_prefill ... moe_forward; --list-shapes all)")                \
    X(SHAPE, "shape", 1, "K=V,..", "one case of this shape for the one --op, in place of a suite (repeatable)")   \
    X(LIST_SHAPES, "list-shapes", 1, "OP", "the keys --shape takes for OP (or all), with defaults; exit")          \
    X(DTYPE, "dtype", 1, "T", "bf16, f16, f32, fp8 (e4m3 weights or KV cache), w8a8 (grouped_gemm, moe_forward: e4m3 activations and weights)") \
    X(FORMAT, "format", 1, "F", "md (default), csv, json")                                                        \
    X(OUT, "out", 1, "FILE", "write the report there instead of stdout")                                         \
    X(REPEAT, "repeat", 1, "N", "at least N timed samples per row (default 5)")                                   \
    X(MIN_TIME, "min-time", 1, "S", "at least S seconds of samples per row (default 0.2)")                        \
    X(MAX_TIME, "max-time", 1, "S", "stop a row after S seconds once 3 samples exist (default 1)")                \
    X(PLOT, "plot", 1, "FILE", "charts (matplotlib): FILE % of roofline, FILE-roofline.* roofline; compare: speedups") \
    X(COMPARE, "compare", 0, "", "the two file operands A.json B.json: per-row speedup of B over A")              \
    X(FROM, "from", 1, "FILE", "re-emit (and --plot) a saved JSON run instead of running")                        \
    X(EP, "ep", 0, "", "under mpirun: EP dispatch/combine at V3 shapes (operands: tokens per rank, --capacity, --async)")   \
    X(TUNE, "tune", 0, "", "search tuning parameters on the device; write the user tuning file")                  \
    X(TUNE_PARAM, "tune-param", 1, "K.P=V,..@OP", "tune this parameter too (';' separates several)")              \
    X(LIST, "list", 0, "", "list the cases that would run on the device, then exit")                              \
    X(PEAKS, "peaks", 0, "", "the datasheet peak table GPU rows are judged by, then exit")                        \
    X(SEED, "seed", 1, "N", "input seed (default 1)")                                                             \
    X(PEAK_TFLOPS, "peak-tflops", 1, "X", "judge compute-bound rows against X TFLOP/s instead")                   \
    X(MEM_GBPS, "mem-gbps", 1, "X", "judge memory-bound rows against X GB/s instead")                             \
    X(QUIET, "quiet", 0, "", "no progress on stderr")

#define KB_ENUM(id, name, arg, meta, help) O_##id,
#define KB_LONG(id, name, arg, meta, help) {name, arg, NULL, O_##id},
#define KB_HELP(id, name, arg, meta, help) fprintf(o, "  --%-12s %-11s %s\n", name, meta, help);
enum { O_FIRST = 255, KB_OPTIONS(KB_ENUM) };
static const struct option long_options[] = {KB_OPTIONS(KB_LONG){"help", 0, NULL, 'h'}, {NULL, 0, NULL, 0}};

static void usage(FILE *o, const char *argv0) {
    fprintf(o,
            "usage: %s [options]\n       %s --op OP --shape K=V,... [options]\n       %s --compare A.json B.json "
            "[--format F] [--plot FILE]\nBenchmarks kport's ops; each row is checked against float64 and judged "
            "against the device's ceilings\n(measured copy bandwidth; datasheet peaks on GPUs, a measured FMA peak on "
            "CPUs). docs/kbench.md.\n\n",
            argv0, argv0, argv0);
    KB_OPTIONS(KB_HELP)
    fputs("Environment: KPORT_PLUGIN_PATH, KPORT_BACKEND, KPORT_DEVICE, KPORT_NUM_THREADS, KPORT_TUNING_FILE\n", o);
}

static int option_value(kb_options *o, int opt, const char *v) {
    static const char *const dtypes[] = {"f32", "f16", "bf16", "fp8", "w8a8"}, *const formats[] = {"md", "csv", "json"};
    static const int dtype_ids[] = {KP_F32, KP_F16, KP_BF16, KB_DTYPE_FP8W, KB_DTYPE_W8A8};
    long long x;
    double d;
    switch (opt) {
    case O_BACKEND: o->backend = v; return 0;
    case O_DEVICE: return kb_parse_int(v, 0, INT32_MAX, &x) ? (o->device = (int)x, 0) : -1;
    case O_SUITE: o->suite = v; return 0;
    case O_OP: o->ops = v; return 0;
    case O_SHAPE: return o->nshapes < KB_MAX_SHAPES ? (o->shapes[o->nshapes++] = v, 0) : -1;
    case O_LIST_SHAPES: o->list_shapes = v; return 0;
    case O_DTYPE:
        for (int i = 0; i < 5; i++)
            if (strcmp(v, dtypes[i]) == 0) return o->dtype = dtype_ids[i], 0;
        return -1;
    case O_FORMAT:
        for (int i = 0; i < 3; i++)
            if (strcmp(v, formats[i]) == 0) return o->format = (kb_format)i, 0;
        return -1;
    case O_OUT: o->out = v; return 0;
    case O_REPEAT:
        if (!kb_parse_int(v, 1, KB_MAX_SAMPLES, &x)) return -1;
        o->repeat = (int)x;
        o->min_time = x == 1 ? 0.0 : o->min_time; /* --repeat 1: one sample, a smoke run */
        return 0;
    case O_MIN_TIME: return to_double(v, 0, &o->min_time) ? 0 : -1;
    case O_MAX_TIME: return to_double(v, 0, &o->max_time) ? 0 : -1;
    case O_PLOT: o->plot = v; return 0;
    case O_FROM: o->from = v; return 0;
    case O_TUNE_PARAM: o->tune_params = v, o->tune = true; return 0;
    case O_SEED: return kb_parse_int(v, 0, LLONG_MAX, &x) ? (o->seed = (uint64_t)x, 0) : -1;
    case O_PEAK_TFLOPS: return to_double(v, 0, &d) && d > 0 ? (o->peak_tflops = d, 0) : -1;
    case O_MEM_GBPS: return to_double(v, 0, &d) && d > 0 ? (o->mem_gbps = d, 0) : -1;
    case O_COMPARE: o->compare = true; return 0;
    case O_EP: return 0; /* main hands the command to kport-ep-bench before parsing */
    case O_TUNE: o->tune = true; return 0;
    case O_LIST: o->list = true; return 0;
    case O_PEAKS: o->list_peaks = true; return 0;
    case O_QUIET: o->quiet = true; return 0;
    }
    return -1;
}

/* The cases of every --shape of the one --op, expanded by --dtype; -1 and a message. */
static int shape_cases(const kb_options *o, kb_case_list *out, char *err, size_t errn) {
    kp_op op;
    kb_case c;
    if (!kb_op_from_name(o->ops, &op)) KB_FAIL("unknown op '%s'; ops are %s", o->ops, kb_op_name_list());
    for (int i = 0; i < o->nshapes; i++)
        if (kb_shape_parse(op, o->shapes[i], &c, err, errn) != 0 || kb_shape_cases(&c, o->dtype, out, err, errn) < 0)
            return -1;
    return out->n;
}

/* 0: run; 1: --help printed; -1: a usage error, the message in err (--shape's checked here,
 * before anything runs). The --compare files land in files[0..1]. */
static int parse_args(int argc, char **argv, kb_options *o, const char **files, char *err, size_t errn) {
    *o = (kb_options){.device = -1, .suite = "quick", .dtype = -1, .format = KB_MD, .repeat = 5, .min_time = 0.2,
                      .max_time = 1.0, .seed = 1};
    bool suite_given = false;
    int opt, index;
    while ((opt = getopt_long(argc, argv, "h", long_options, &index)) != -1) {
        if (opt == 'h') {
            usage(stdout, argv[0]);
            return 1;
        }
        if (opt == '?') KB_FAIL("--help lists the options"); /* getopt_long said what */
        suite_given |= opt == O_SUITE;
        if (option_value(o, opt, optarg) != 0)
            KB_FAIL("--%s: bad value '%s' (--help)", long_options[index].name, optarg ? optarg : "");
    }
    int operands = argc - optind;
    if (o->compare ? operands != 2 : operands != 0)
        KB_FAIL(o->compare ? "--compare needs two JSON files" : "unexpected argument '%s'", argv[optind]);
    if (o->compare) files[0] = argv[optind], files[1] = argv[optind + 1];
    if (o->nshapes && (suite_given || !o->ops || strchr(o->ops, ',')))
        KB_FAIL("--shape takes exactly one --op and no --suite");
    kb_case_list shapes = {0};
    int rc = o->nshapes ? shape_cases(o, &shapes, err, errn) : 0;
    free(shapes.v);
    return rc < 0 ? -1 : 0;
}

/* The cases for one device: --shape's as given, or the suite's scaled to the device. */
static int device_cases(const kb_options *o, int device, kb_case_list *out, char *err, size_t errn) {
    kp_device_info info;
    kb_budget budget;
    kp_device_info_get(device, &info);
    if (o->nshapes) return shape_cases(o, out, err, errn);
    return kb_suite_cases(o->suite, o->ops, o->dtype, kb_budget_for(&info, &budget), out, err, errn);
}

/* ---- devices ---- */

/* Global indices of the devices to run on; 0 or -1 and a message when there are none. */
static int select_devices(const kb_options *o, int *idx, int max, char *err, size_t errn) {
    int n = 0, count = kp_device_count();
    if (!o->backend) {
        if (o->device >= count) KB_FAIL("--device %d: there are %d devices (kport-info lists them)", o->device, count);
        if (o->device >= 0) {
            idx[0] = o->device;
            return 1;
        }
        /* the best device by policy, as kp_device_open(-1) picks it */
        kp_device *d;
        kp_device_info want, info;
        kp_status st = kp_device_open(-1, &d);
        if (st != KP_OK) KB_FAIL("no device: %s: %s", kp_status_str(st), kp_last_error());
        kp_device_get_info(d, &want);
        kp_device_close(d);
        for (int i = 0; i < count; i++)
            if (kp_device_info_get(i, &info) == KP_OK && info.backend_index == want.backend_index &&
                info.backend_device == want.backend_device)
                idx[n++] = i;
        if (n == 0) snprintf(err, errn, "the best device (%s) is not in the device list", want.name);
        return n > 1 ? 1 : n;
    }
    bool all = strcmp(o->backend, "all") == 0;
    for (int i = 0, k = 0; i < count && n < max; i++) {
        kp_device_info info;
        if (kp_device_info_get(i, &info) != KP_OK || (!all && strcmp(info.backend, o->backend) != 0)) continue;
        if (all || o->device < 0 || o->device == k) idx[n++] = i;
        if (!all && o->device < 0) break; /* first device of the backend */
        k++;
    }
    if (n == 0) {
        size_t used = (size_t)snprintf(err, errn, "no device for --backend %s%s", o->backend,
                                       o->device >= 0 ? " --device N" : "");
        for (int b = 0; b < kp_backend_count(); b++) { /* say why, as kport-info would */
            kp_backend_info bi;
            if (kp_backend_info_get(b, &bi) == KP_OK && strcmp(bi.name, o->backend) == 0 && used < errn)
                used += (size_t)snprintf(err + used, errn - used, ": %s backend %s%s", bi.name,
                                         bi.available ? "has fewer devices" : "unavailable: ", bi.available ? "" : bi.reason);
        }
    }
    return n;
}

/* ---- a run ---- */

static int run(const kb_options *o, const int *devices, int ndev, kb_report *rep) {
    kb_case_list *lists = calloc((size_t)ndev, sizeof *lists);
    rep->roofs = calloc((size_t)ndev, sizeof *rep->roofs);
    if (!lists || !rep->roofs) return -1;
    int total = 0, done = 0;
    char err[512];
    for (int d = 0; d < ndev; d++) { /* every case list first: progress knows what remains */
        if (device_cases(o, devices[d], &lists[d], err, sizeof err) < 0) {
            fprintf(stderr, "kbench: %s\n", err);
            return -2;
        }
        total += lists[d].n;
    }
    rep->rows = calloc((size_t)total + 1, sizeof *rep->rows);
    if (!rep->rows) return -1;
    double t0 = kb_now();
    for (int d = 0; d < ndev && !kb_interrupted; d++) {
        kb_env env = {.seed = o->seed};
        kp_status st = kp_device_open(devices[d], &env.dev);
        if (st == KP_OK) st = kp_stream_create(env.dev, &env.s);
        if (st == KP_OK) st = kp_device_get_info(env.dev, &env.info);
        kb_roofline *roof = &rep->roofs[rep->nroofs];
        if (st == KP_OK) {
            if (!o->quiet)
                fprintf(stderr, "ceilings of %s (%s): copy bandwidth, compute peak ...\n", env.info.name,
                        env.info.backend);
            st = kb_roofline_measure(env.dev, env.s, o, roof);
        }
        if (st != KP_OK) {
            fprintf(stderr, "kbench: device %d: %s: %s\n", devices[d], kp_status_str(st), kp_last_error());
        } else {
            rep->nroofs++;
            if (!o->quiet)
                fprintf(stderr, "  memory %.1f GB/s (%s); compute %.4g TFLOP/s bf16 (%s)\n", roof->mem_gbps,
                        roof->mem_method, roof->peak_tflops, roof->peak_method);
            for (int i = 0; i < lists[d].n && !kb_interrupted; i++) {
                const kb_case *c = &lists[d].v[i];
                if (!o->quiet)
                    fprintf(stderr, "[%d/%d] %s %s %s on %s%s%s (%.0f s so far)\n", ++done, total, kp_op_name(c->op),
                            c->shape, kb_row_dtype_name(c), env.info.backend, c->note[0] ? "; " : "", c->note,
                            kb_now() - t0);
                kb_row *w = &rep->rows[rep->nrows++];
                kb_run_case(&env, c, o, roof, w);
                if (o->quiet) continue;
                if (w->status == KB_ROW_OK)
                    fprintf(stderr, "    %.4g ms  %.3g TFLOP/s  %.1f GB/s  %s-bound %.1f%% of roofline  ok\n",
                            w->median_ms, w->tflops, w->gbps, w->bound, w->roofline_pct);
                else fprintf(stderr, "    %s: %s\n", kb_status_word(w->status), w->reason);
            }
        }
        if (env.s) kp_stream_destroy(env.s);
        if (env.dev) kp_device_close(env.dev);
    }
    rep->wall_s = kb_now() - t0;
    for (int d = 0; d < ndev; d++) free(lists[d].v);
    free(lists);
    if (kb_interrupted) fprintf(stderr, "kbench: interrupted; reporting the rows done so far\n");
    return 0;
}

static int list_cases(const kb_options *o, int device) {
    kp_device_info info;
    kb_case_list l = {0};
    char err[512];
    kp_device_info_get(device, &info);
    if (device_cases(o, device, &l, err, sizeof err) < 0) {
        fprintf(stderr, "kbench: %s\n", err);
        return 2;
    }
    printf("%s %s on %s (%s): %d cases\n\n| # | op | shape | dtype | note |\n|---|---|---|---|---|\n",
           o->nshapes ? "--shape" : "suite", o->nshapes ? o->ops : o->suite, info.name, info.backend, l.n);
    for (int i = 0; i < l.n; i++)
        printf("| %d | %s | %s | %s | %s |\n", i + 1, kp_op_name(l.v[i].op), l.v[i].shape, kb_row_dtype_name(&l.v[i]),
               l.v[i].note);
    free(l.v);
    return 0;
}

/* The table; each run's ceilings table names the row a device resolved to. */
static int list_peaks(void) {
    int n;
    const kb_peak *t = kb_peak_table(&n);
    printf("Datasheet peaks, dense (tools/kbench/kbench_peaks.c)\n\n| vendor | arch | device | bf16 TFLOP/s | fp8 "
           "TFLOP/s | f32 TFLOP/s | GB/s | source |\n|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < n; i++)
        printf("| %s | %s | %s | %.6g | %.6g | %.6g | %.6g | %s |\n", t[i].vendor, t[i].arch,
               strcmp(t[i].device, "*") == 0 ? "* (arch default)" : t[i].device, t[i].bf16_tflops, t[i].fp8_tflops,
               t[i].f32_tflops, t[i].mem_gbps, t[i].source);
    return 0;
}

/* --ep: kport-ep-bench, built beside kbench when MPI is found, links MPI; kbench does not.
 * Each rank mpirun started becomes that program, with every other argument (its own:
 * tokens per rank, --iters N, --capacity, --async). */
static int run_ep(int argc, char **argv) {
    char path[PATH_MAX + 16], err[512];
    if (kb_beside_self("kport-ep-bench", path, sizeof path, err, sizeof err) != 0) {
        fprintf(stderr, "kbench: --ep: %s\n", err);
        return 1;
    }
    int n = 1;
    for (int i = 1; i < argc; i++) /* argv less --ep, in place */
        if (strcmp(argv[i], "--ep") != 0) argv[n++] = argv[i];
    argv[0] = path, argv[n] = NULL;
    execv(path, argv);
    fprintf(stderr, "kbench: --ep: cannot run %s: %s (it is built when meson finds MPI: apt-get install "
            "libopenmpi-dev, then reconfigure)\n", path, strerror(errno));
    return 1;
}

/* The host the report names: its name, CPU model, cores and 1-minute load. */
static void report_machine(kb_report *r) {
    if (gethostname(r->hostname, sizeof r->hostname) != 0) snprintf(r->hostname, sizeof r->hostname, "unknown");
    r->hostname[sizeof r->hostname - 1] = '\0';
    snprintf(r->cpu_model, sizeof r->cpu_model, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) /* "model name\t: ..." (127: sizeof cpu_model - 1) */
        if (sscanf(line, "model name : %127[^\n]", r->cpu_model) == 1) break;
    if (f) fclose(f);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    r->cores = n > 0 ? (int)n : 0;
    if (getloadavg(&r->loadavg, 1) != 1) r->loadavg = -1.0;
}

/* --list-shapes, --peaks, --compare and --from, which need no device; -1: none of them. */
static int offline(const kb_options *o, const char **files) {
    if (o->list_shapes) {
        kp_op op;
        bool all = strcmp(o->list_shapes, "all") == 0, known = kb_op_from_name(o->list_shapes, &op);
        if (all || known) kb_shape_usage(stdout, all ? NULL : &op);
        else fprintf(stderr, "kbench: --list-shapes: unknown op '%s'; ops are %s, or all\n", o->list_shapes, kb_op_name_list());
        return all || known ? 0 : 2;
    }
    if (o->list_peaks) return list_peaks();
    if (o->compare) return kb_compare(files[0], files[1], o);
    if (!o->from) return -1;
    kb_report rep;
    char err[1024];
    int rc = kb_report_load(o->from, &rep, err, sizeof err) != 0 ? fprintf(stderr, "kbench: --from: %s\n", err), 1
                                                                  : kb_emit(o, &rep, NULL);
    kb_report_free(&rep);
    return rc;
}

/* A run on the devices chosen: --list, --tune, or the report. */
static int bench(const kb_options *o) {
    kp_status st = kp_init(NULL);
    if (st != KP_OK) {
        fprintf(stderr, "kbench: kp_init failed: %s: %s\n", kp_status_str(st), kp_last_error());
        return 1;
    }
    int devices[64], ndev, rc;
    char err[KP_REASON_MAX + 128];
    kb_report rep = {.version = kp_version(), .commit = KBENCH_GIT_COMMIT, .suite = o->nshapes ? "shape" : o->suite};
    if ((ndev = select_devices(o, devices, 64, err, sizeof err)) <= 0) {
        fprintf(stderr, "kbench: %s\n", err);
        rc = 1;
    } else if (o->list || o->tune) {
        rc = o->list ? list_cases(o, devices[0]) : kb_tune(o, devices[0]);
    } else {
        char date[64];
        time_t now = time(NULL);
        strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
        rep.date = date;
        report_machine(&rep);
        kp_backend_info backends[16];
        for (int i = 0; i < kp_backend_count() && rep.nbackends < 16; i++)
            if (kp_backend_info_get(i, &backends[rep.nbackends]) == KP_OK) rep.nbackends++;
        rep.backends = backends;
        rc = run(o, devices, ndev, &rep);
        if (rc == -1) fprintf(stderr, "kbench: out of memory\n");
        if (rc == 0) {
            rc = kb_emit(o, &rep, NULL);
            for (int i = 0; i < rep.nrows; i++) /* a wrong result or a broken run fails the command */
                if (rep.rows[i].status == KB_ROW_FAIL || rep.rows[i].status == KB_ROW_ERROR) rc = 1;
        }
        rc = rc == -2 ? 2 : rc < 0 ? 1 : rc;
        kb_report_free(&rep); /* its rows and rooflines (no JSON tree) */
    }
    kp_shutdown();
    return rc;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--ep") == 0) return run_ep(argc, argv);
    kb_options o;
    const char *files[2] = {NULL, NULL};
    char err[512];
    int rc = parse_args(argc, argv, &o, files, err, sizeof err);
    if (rc < 0) fprintf(stderr, "kbench: %s\n", err);
    if (rc) return rc < 0 ? 2 : 0;
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    rc = offline(&o, files);
    return rc < 0 ? bench(&o) : rc;
}
