/*
 * tools/kbench/kbench_main.c — kport's benchmark: every op over named suites on the
 * best device (or the ones chosen), each row checked against float64 on a sample and
 * judged against the device's own measured rooflines. docs/kbench.md has the details.
 *
 *   kbench                                   quick suite, best device, markdown
 *   kbench --suite deepseek-v3 --format json --out x.json
 *   kbench --compare a.json b.json           per-row speedups
 *   kbench --tune                            search tuning parameters, write the user file
 */
#include "kbench.h"
#include "kbench_version.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *o, const char *argv0) {
    fprintf(o,
            "usage: %s [options]\n"
            "Benchmarks kport's ops; rows are checked against float64 and judged against rooflines\n"
            "kbench measures on the device (kp_buffer_copy bandwidth; FMA peak on CPUs).\n\n"
            "  --backend NAME     cpu, opencl, cuda, hip, or all (every device); default: the best device\n"
            "  --device N         device N of that backend, or global device N without --backend\n"
            "  --suite NAME       quick (default), deepseek-v3, llama, all\n"
            "  --op A,B           only these ops: attention_prefill attention_decode mla_decode moe_gate\n"
            "                     moe_align grouped_gemm moe_combine moe_forward\n"
            "  --dtype T          bf16, f16, f32, or fp8 (e4m3 expert weights, bf16 activations)\n"
            "  --format F         md (default), csv, json\n"
            "  --out FILE         write the report there instead of stdout\n"
            "  --repeat N         at least N timed samples per row (default 5)\n"
            "  --min-time S       at least S seconds of samples per row (default 0.2)\n"
            "  --max-time S       stop a row after S seconds once 3 samples exist (default 1)\n"
            "  --plot FILE.svg    bar chart of %% of roofline per row (FILE.png: converted if a tool exists)\n"
            "  --compare A.json B.json   per-row times and speedup of B over A, then exit\n"
            "  --from FILE.json   re-emit (and --plot) a saved run instead of running\n"
            "  --tune             search tuning parameters on the device; write the user tuning file\n"
            "  --tune-param K.P=V1,V2@OP  tune this parameter too (';' separates several)\n"
            "  --list             list the cases the suite would run on the device, then exit\n"
            "  --seed N           input seed (default 1)\n"
            "  --peak-tflops X, --mem-gbps X   use these ceilings instead of measuring them (e.g. a vendor GEMM's)\n"
            "  --quiet            no progress on stderr\n"
            "Environment: KPORT_PLUGIN_PATH, KPORT_BACKEND, KPORT_DEVICE, KPORT_NUM_THREADS, KPORT_TUNING_FILE\n",
            argv0);
}

/* Ctrl-C or SIGTERM (timeout(1)): finish the row in flight, then write the report of
 * the rows done; a second signal ends at once. */
static void on_sigint(int sig) {
    kb_interrupted = 1;
    signal(sig, SIG_DFL);
}

/* ---- options ---- */

static int parse_dtype(const char *s) {
    if (strcmp(s, "bf16") == 0) return KP_BF16;
    if (strcmp(s, "f16") == 0) return KP_F16;
    if (strcmp(s, "f32") == 0) return KP_F32;
    if (strcmp(s, "fp8") == 0) return KB_DTYPE_FP8W;
    return -2;
}

static int parse_args(int argc, char **argv, kb_options *o) {
    *o = (kb_options){.device = -1, .suite = "quick", .dtype = -1, .format = KB_MD, .repeat = 5, .min_time = 0.2,
                      .max_time = 1.0, .seed = 1};
    for (int i = 1; i < argc; i++) {
        char *a = argv[i], *val = NULL, name[64];
        char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - a) : (int)strlen(a), a);
        static const char *const takes[] = {"--backend", "--device", "--suite",    "--op",       "--dtype",
                                            "--format",  "--out",    "--repeat",   "--min-time", "--max-time",
                                            "--plot",    "--from",   "--tune-param", "--seed", "--peak-tflops", "--mem-gbps"};
        bool needs = false;
        for (size_t k = 0; k < sizeof takes / sizeof takes[0]; k++) needs |= strcmp(name, takes[k]) == 0;
        if (needs) {
            val = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
            if (!val) {
                fprintf(stderr, "kbench: %s needs a value (--help)\n", name);
                return 2;
            }
        } else if (eq) {
            fprintf(stderr, "kbench: %s takes no value (--help)\n", name);
            return 2;
        }
        char *end = NULL;
        if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
            usage(stdout, argv[0]);
            return 1;
        } else if (strcmp(name, "--backend") == 0) o->backend = val;
        else if (strcmp(name, "--device") == 0) {
            o->device = (int)strtol(val, &end, 10);
            if (*end || o->device < 0) goto bad;
        } else if (strcmp(name, "--suite") == 0) o->suite = val;
        else if (strcmp(name, "--op") == 0) o->ops = val;
        else if (strcmp(name, "--dtype") == 0) {
            if ((o->dtype = parse_dtype(val)) == -2) goto bad;
        } else if (strcmp(name, "--format") == 0) {
            if (strcmp(val, "md") == 0) o->format = KB_MD;
            else if (strcmp(val, "csv") == 0) o->format = KB_CSV;
            else if (strcmp(val, "json") == 0) o->format = KB_JSON;
            else goto bad;
        } else if (strcmp(name, "--out") == 0) o->out = val;
        else if (strcmp(name, "--repeat") == 0) {
            o->repeat = (int)strtol(val, &end, 10);
            if (*end || o->repeat < 1 || o->repeat > KB_MAX_SAMPLES) goto bad;
            o->min_time = o->repeat == 1 ? 0.0 : o->min_time; /* --repeat 1: one sample, a smoke run */
        } else if (strcmp(name, "--min-time") == 0) {
            o->min_time = strtod(val, &end);
            if (*end || o->min_time < 0) goto bad;
        } else if (strcmp(name, "--max-time") == 0) {
            o->max_time = strtod(val, &end);
            if (*end || o->max_time < 0) goto bad;
        } else if (strcmp(name, "--plot") == 0) o->plot = val;
        else if (strcmp(name, "--from") == 0) o->from = val;
        else if (strcmp(name, "--tune-param") == 0) o->tune_params = val, o->tune = true;
        else if (strcmp(name, "--seed") == 0) {
            o->seed = strtoull(val, &end, 10);
            if (*end) goto bad;
        } else if (strcmp(name, "--peak-tflops") == 0 || strcmp(name, "--mem-gbps") == 0) {
            double v = strtod(val, &end);
            if (*end || !(v > 0)) goto bad;
            if (name[2] == 'p') o->peak_tflops = v;
            else o->mem_gbps = v;
        } else if (strcmp(name, "--compare") == 0) {
            if (i + 2 >= argc) {
                fprintf(stderr, "kbench: --compare needs two JSON files\n");
                return 2;
            }
            o->compare_a = argv[++i], o->compare_b = argv[++i];
        } else if (strcmp(name, "--tune") == 0) o->tune = true;
        else if (strcmp(name, "--list") == 0) o->list = true;
        else if (strcmp(name, "--quiet") == 0) o->quiet = true;
        else {
            fprintf(stderr, "kbench: unknown option '%s' (--help lists them)\n", a);
            return 2;
        }
        continue;
    bad:
        fprintf(stderr, "kbench: %s: bad value '%s' (--help)\n", name, val);
        return 2;
    }
    return 0;
}

/* ---- devices ---- */

/* Global indices of the devices to run on; 0 and a message when there are none. */
static int select_devices(const kb_options *o, int *idx, int max, char *err, size_t errn) {
    int n = 0, count = kp_device_count();
    if (!o->backend) {
        if (o->device >= 0) {
            if (o->device >= count) {
                snprintf(err, errn, "--device %d: there are %d devices (kport-info lists them)", o->device, count);
                return 0;
            }
            idx[0] = o->device;
            return 1;
        }
        /* the best device by policy, as kp_device_open(-1) picks it */
        kp_device *d;
        kp_device_info want, info;
        kp_status st = kp_device_open(-1, &d);
        if (st != KP_OK) {
            snprintf(err, errn, "no device: %s: %s", kp_status_str(st), kp_last_error());
            return 0;
        }
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

static void progress_row(const kb_row *w) {
    if (w->status == KB_ROW_OK)
        fprintf(stderr, "    %.4g ms  %.3g TFLOP/s  %.1f GB/s  %s-bound %.1f%% of roofline  ok\n", w->median_ms,
                w->tflops, w->gbps, w->bound, w->roofline_pct);
    else fprintf(stderr, "    %s: %s\n", kb_status_word(w->status), w->reason);
}

static int run(const kb_options *o, const int *devices, int ndev, kb_report *rep) {
    kb_case_list *lists = calloc((size_t)ndev, sizeof *lists);
    rep->roofs = calloc((size_t)ndev, sizeof *rep->roofs);
    if (!lists || !rep->roofs) return -1;
    int total = 0, cap = 0, done = 0;
    char err[512];
    for (int d = 0; d < ndev; d++) { /* every case list first: progress knows what remains */
        kp_device_info info;
        kb_budget budget;
        kp_device_info_get(devices[d], &info);
        if (kb_suite_cases(o->suite, o->ops, o->dtype, kb_budget_for(&info, &budget), &lists[d], err, sizeof err) < 0) {
            fprintf(stderr, "kbench: %s\n", err);
            return -2;
        }
        total += lists[d].n;
    }
    cap = total;
    rep->rows = calloc((size_t)cap + 1, sizeof *rep->rows);
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
                fprintf(stderr, "measuring rooflines on %s (%s): copy bandwidth, compute peak ...\n", env.info.name,
                        env.info.backend);
            st = kb_roofline_measure(env.dev, env.s, o, roof);
        }
        if (st != KP_OK) {
            fprintf(stderr, "kbench: device %d: %s: %s\n", devices[d], kp_status_str(st), kp_last_error());
        } else {
            roof->device_index = devices[d];
            rep->nroofs++;
            if (!o->quiet)
                fprintf(stderr, "  memory %.1f GB/s (%s); compute %.3g TFLOP/s (%s)\n", roof->mem_gbps, roof->mem_method,
                        roof->peak_tflops, roof->peak_method);
            for (int i = 0; i < lists[d].n && !kb_interrupted; i++) {
                const kb_case *c = &lists[d].v[i];
                if (!o->quiet)
                    fprintf(stderr, "[%d/%d] %s %s %s on %s%s%s (%.0f s so far)\n", ++done, total, kp_op_name(c->op),
                            c->shape, kb_row_dtype_name(c), env.info.backend, c->note[0] ? "; " : "", c->note,
                            kb_now() - t0);
                kb_row *w = &rep->rows[rep->nrows++];
                kb_run_case(&env, c, o, roof, w);
                w->device_index = devices[d];
                if (!o->quiet) progress_row(w);
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
    kb_budget budget;
    kb_case_list l = {0};
    char err[512];
    kp_device_info_get(device, &info);
    if (kb_suite_cases(o->suite, o->ops, o->dtype, kb_budget_for(&info, &budget), &l, err, sizeof err) < 0) {
        fprintf(stderr, "kbench: %s\n", err);
        return 2;
    }
    printf("suite %s on %s (%s): %d cases\n\n| # | op | shape | dtype | note |\n|---|---|---|---|---|\n", o->suite,
           info.name, info.backend, l.n);
    for (int i = 0; i < l.n; i++)
        printf("| %d | %s | %s | %s | %s |\n", i + 1, kp_op_name(l.v[i].op), l.v[i].shape, kb_row_dtype_name(&l.v[i]),
               l.v[i].note);
    free(l.v);
    return 0;
}

static int emit(const kb_options *o, const kb_report *rep) {
    FILE *out = o->out ? fopen(o->out, "w") : stdout;
    if (!out) {
        fprintf(stderr, "kbench: cannot write %s\n", o->out);
        return 1;
    }
    int rc = kb_write_report(rep, o->format, out);
    if (out != stdout && fclose(out) != 0) rc = -1;
    if (rc != 0) fprintf(stderr, "kbench: error writing the report\n");
    if (o->plot) {
        char err[512];
        if (kb_plot_svg(rep, o->plot, err, sizeof err) != 0) {
            fprintf(stderr, "kbench: --plot: %s\n", err);
            rc = 1;
        } else if (!o->quiet) {
            fprintf(stderr, "kbench: plot written to %s\n", o->plot);
        }
    }
    if (o->out && !o->quiet && rc == 0) fprintf(stderr, "kbench: report written to %s\n", o->out);
    return rc ? 1 : 0;
}

static void free_rows(kb_report *r) {
    for (int i = 0; i < r->nrows; i++) kb_row_free(&r->rows[i]);
    free(r->rows);
    free(r->roofs);
}

int main(int argc, char **argv) {
    kb_options o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    if (o.compare_a) return kb_compare(o.compare_a, o.compare_b, o.format, stdout);
    if (o.from) {
        kb_report rep;
        kb_json *j = NULL;
        char err[512];
        if (kb_report_load(o.from, &rep, &j, err, sizeof err) != 0) {
            fprintf(stderr, "kbench: --from: %s\n", err);
            kb_json_free(j);
            return 1;
        }
        rc = emit(&o, &rep);
        free_rows(&rep);
        kb_json_free(j);
        return rc;
    }
    kp_status st = kp_init(NULL);
    if (st != KP_OK) {
        fprintf(stderr, "kbench: kp_init failed: %s: %s\n", kp_status_str(st), kp_last_error());
        return 1;
    }
    int devices[64], ndev;
    char err[KP_REASON_MAX + 128];
    if ((ndev = select_devices(&o, devices, 64, err, sizeof err)) == 0) {
        fprintf(stderr, "kbench: %s\n", err);
        kp_shutdown();
        return 1;
    }
    if (o.list) rc = list_cases(&o, devices[0]);
    else if (o.tune) rc = kb_tune(&o, devices[0]);
    if (o.list || o.tune) {
        kp_shutdown();
        return rc;
    }
    kb_report rep = {.version = kp_version(), .commit = KBENCH_GIT_COMMIT, .suite = o.suite};
    char date[64];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    rep.date = date;
    kb_report_machine(&rep);
    kp_backend_info backends[16];
    for (int i = 0; i < kp_backend_count() && rep.nbackends < 16; i++)
        if (kp_backend_info_get(i, &backends[rep.nbackends]) == KP_OK) rep.nbackends++;
    rep.backends = backends;
    rc = run(&o, devices, ndev, &rep);
    if (rc == -2) {
        free_rows(&rep);
        kp_shutdown();
        return 2;
    }
    if (rc != 0) {
        fprintf(stderr, "kbench: out of memory\n");
        kp_shutdown();
        return 1;
    }
    rc = emit(&o, &rep);
    for (int i = 0; i < rep.nrows; i++) /* a wrong result or a broken run fails the command */
        if (rep.rows[i].status == KB_ROW_FAIL || rep.rows[i].status == KB_ROW_ERROR) rc = 1;
    free_rows(&rep);
    kp_shutdown();
    return rc;
}
