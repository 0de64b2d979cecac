/*
 * tools/kbench/kbench_output.c — the report as a markdown table (stdout by default), CSV
 * or JSON, `--compare`'s table, written to --out and drawn by --plot; a JSON report read
 * back (--from, --compare). JSON is read and written with jansson.
 *
 * The JSON writer puts each top-level field on a line and each row, roofline and backend
 * on a line of its own, so that results under bench/results diff row by row. Format 2
 * adds to format 1 (nothing is renamed): per-device peaks by unit, the datasheet
 * bandwidth and the kernel level, and each row's ceiling (`unit`).
 *
 * A failed row shows FAIL instead of numbers: a wrong kernel is never listed as fast.
 *
 * `kbench --compare A.json B.json`: rows of two runs matched by op + shape + dtype (in
 * order, when a key repeats), both times, and the speedup of B over A (A ms / B ms: above
 * 1, B is faster). For cuda vs opencl on one GPU, cpu vs PoCL on one CPU, or before vs
 * after a change. Reads kbench formats 1 and 2.
 *
 * `--plot FILE`: the charts come from matplotlib, through tools/kbench-plot.py, which
 * reads kbench's JSON (docs/kbench.md, "--plot"). kbench runs it beside its own
 * executable (build/tools/ or the install's bindir), with the python meson found
 * matplotlib in, by posix_spawn: no shell, so no file name needs quoting.
 */
#include "kbench.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <spawn.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define KB_JSON_FORMAT 2
#define KB_JSON_FLAGS (JSON_REAL_PRECISION(6) | JSON_ENCODE_ANY)
#define KB_JSON_MAX_BYTES ((off_t)1 << 30)

extern char **environ;

const char *kb_status_word(kb_status s) {
    static const char *const words[] = {"ok", "FAIL", "unsupported", "error", "skipped"};
    return (unsigned)s < sizeof words / sizeof words[0] ? words[s] : "?";
}

/* ---- JSON and CSV ---- */

static json_t *num(double v, bool ok) { return ok && isfinite(v) ? json_real(v) : json_null(); }

/* A string, or its ASCII part when a driver handed us bytes that are not UTF-8. */
static json_t *str(const char *s) {
    json_t *j = json_string(s ? s : "");
    if (j) return j;
    char clean[KP_REASON_MAX];
    snprintf(clean, sizeof clean, "%s", s);
    for (char *p = clean; *p; p++)
        if ((unsigned char)*p >= 0x80) *p = '?';
    return json_string(clean);
}

static json_t *row_json(const kb_row *w) {
    bool ok = w->status == KB_ROW_OK, checked = ok || w->status == KB_ROW_FAIL;
    json_t *samples = json_array();
    for (int j = 0; j < w->nsamples; j++) json_array_append_new(samples, num(w->samples[j], true));
    return json_pack("{s:o, s:o, s:o, s:s, s:o, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:s, s:o, s:o, s:o,"
                     " s:o, s:o, s:o, s:o, s:i, s:s, s:o, s:o, s:o}",
                     "op", str(kp_op_name(w->c.op)), "backend", str(w->backend), "device", str(w->device), "dtype",
                     kb_row_dtype_name(&w->c), "shape", str(w->c.shape), "status", kb_status_word(w->status), "ok",
                     ok ? json_true() : w->status == KB_ROW_FAIL ? json_false() : json_null(), "median_ms",
                     num(w->median_ms, ok), "p10_ms", num(w->p10_ms, ok), "p90_ms", num(w->p90_ms, ok), "min_ms",
                     num(w->min_ms, ok), "max_ms", num(w->max_ms, ok), "tflops", num(w->tflops, ok), "gbps",
                     num(w->gbps, ok), "roofline_pct", num(w->roofline_pct, ok && w->roofline_pct >= 0), "bound",
                     w->bound, "unit", w->unit ? str(w->unit) : json_null(), "flops", num(w->flops, true), "bytes",
                     num(w->bytes, true), "rel_err", num(w->err, checked), "tol", num(w->tol, true), "note",
                     str(w->c.note), "reason", str(w->reason), "runs_per_sample", w->inner, "timer",
                     w->device_timed ? "events" : "host", "samples", samples, "host_us",
                     num(w->host_us, ok && !isnan(w->host_us)), "kernel",
                     w->kernel[0] ? str(w->kernel) : json_null());
}

static json_t *roofline_json(const kb_roofline *f) {
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "backend", str(f->backend), "device",
                     str(f->device), "memory_gbps", num(f->mem_gbps, f->mem_gbps > 0), "memory_method",
                     str(f->mem_method), "compute_tflops", num(f->peak_tflops, f->peak_tflops > 0), "compute_method",
                     str(f->peak_method), "fp8_tflops", num(f->fp8_tflops, f->fp8_tflops > 0), "f32_tflops",
                     num(f->f32_tflops, f->f32_tflops > 0), "datasheet_memory_gbps",
                     num(f->sheet_gbps, f->sheet_gbps > 0), "kernel_level",
                     f->kernel_level[0] ? str(f->kernel_level) : json_null());
}

/* One field a line; an array's items one a line. Takes top (NULL: out of memory). */
static int dump_lines(json_t *top, FILE *o) {
    const char *key;
    json_t *v;
    bool first = true;
    int rc = 0;
    if (!top) return -1;
    fputc('{', o);
    json_object_foreach(top, key, v) {
        fprintf(o, "%s\n  \"%s\": ", first ? "" : ",", key);
        first = false;
        if (json_is_array(v) && json_array_size(v) > 0) {
            size_t i;
            json_t *e;
            fputc('[', o);
            json_array_foreach(v, i, e) {
                fputs(i ? ",\n    " : "\n    ", o);
                rc |= json_dumpf(e, o, KB_JSON_FLAGS);
            }
            fputs("\n  ]", o);
        } else {
            rc |= json_dumpf(v, o, KB_JSON_FLAGS);
        }
    }
    fputs("\n}\n", o);
    json_decref(top);
    return rc || ferror(o) ? -1 : 0;
}

static int write_json(const kb_report *r, FILE *out) {
    json_t *backends = json_array(), *roofs = json_array(), *rows = json_array();
    for (int i = 0; i < r->nbackends; i++)
        json_array_append_new(backends, json_pack("{s:o, s:b, s:i, s:o}", "name", str(r->backends[i].name), "available",
                                                  r->backends[i].available, "devices", (int)r->backends[i].device_count,
                                                  "reason", str(r->backends[i].reason)));
    for (int i = 0; i < r->nroofs; i++) json_array_append_new(roofs, roofline_json(&r->roofs[i]));
    for (int i = 0; i < r->nrows; i++) json_array_append_new(rows, row_json(&r->rows[i]));
    json_t *top = json_pack("{s:i, s:o, s:o, s:o, s:o, s:{s:o, s:o, s:i, s:o}, s:o, s:o, s:o, s:o}", "kbench",
                            KB_JSON_FORMAT, "kport_version", str(r->version), "git_commit", str(r->commit), "date",
                            str(r->date), "suite", str(r->suite), "machine", "hostname", str(r->hostname), "cpu_model",
                            str(r->cpu_model), "cores", r->cores, "load_avg_1m", num(r->loadavg, r->loadavg >= 0),
                            "wall_s", num(r->wall_s, r->wall_s > 0), "backends", backends, "rooflines", roofs, "rows",
                            rows);
    return dump_lines(top, out);
}

/* CSV: the JSON rows' fields, one line each, so that the two formats cannot disagree. */
static int write_csv(const kb_report *r, FILE *o) {
    static const char *const cols[] = {"op", "shape", "dtype", "backend", "device", "median_ms", "p10_ms", "p90_ms",
                                       "min_ms", "max_ms", "tflops", "gbps", "roofline_pct", "bound", "unit", "ok",
                                       "status", "rel_err", "note", "reason", "host_us", "kernel"};
    const size_t ncols = sizeof cols / sizeof cols[0];
    for (size_t c = 0; c < ncols; c++) fprintf(o, "%s%s", cols[c], c + 1 < ncols ? "," : "\n");
    for (int i = 0; i < r->nrows; i++) {
        json_t *row = row_json(&r->rows[i]);
        for (size_t c = 0; c < ncols; c++) {
            json_t *v = json_object_get(row, cols[c]);
            const char *s = json_string_value(v);
            if (s && strpbrk(s, ",\"\n")) { /* quoted, inner quotes doubled */
                fputc('"', o);
                for (; *s; s++) fprintf(o, *s == '"' ? "\"\"" : "%c", *s);
                fputc('"', o);
            } else if (s) fputs(s, o);
            else if (json_is_number(v)) fprintf(o, "%.6g", json_number_value(v));
            else if (json_is_boolean(v)) fputs(json_is_true(v) ? "true" : "false", o);
            fputc(c + 1 < ncols ? ',' : '\n', o);
        }
        json_decref(row);
    }
    return ferror(o) ? -1 : 0;
}

static int write_compare_json(const kb_compare_set *s, FILE *out) {
    json_t *arr = json_array();
    for (int i = 0; i < s->n; i++) {
        const kb_row *a = s->rows[i].a, *b = s->rows[i].b, *k = a ? a : b;
        bool a_ok = a && a->status == KB_ROW_OK, b_ok = b && b->status == KB_ROW_OK;
        json_array_append_new(
            arr, json_pack("{s:s, s:o, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "op", kp_op_name(k->c.op), "shape",
                           str(k->c.shape), "dtype", kb_row_dtype_name(&k->c), "a_ms", num(a_ok ? a->median_ms : 0, a_ok),
                           "b_ms", num(b_ok ? b->median_ms : 0, b_ok), "speedup", num(s->rows[i].speedup, true),
                           "a_status", a ? json_string(kb_status_word(a->status)) : json_null(), "b_status",
                           b ? json_string(kb_status_word(b->status)) : json_null(), "a_roofline_pct",
                           num(a_ok ? a->roofline_pct : 0, a_ok && a->roofline_pct >= 0), "b_roofline_pct",
                           num(b_ok ? b->roofline_pct : 0, b_ok && b->roofline_pct >= 0), "a_kernel",
                           a && a->kernel[0] ? str(a->kernel) : json_null(), "b_kernel",
                           b && b->kernel[0] ? str(b->kernel) : json_null()));
    }
    json_t *top = json_pack("{s:i, s:o, s:o, s:o, s:o, s:o, s:o}", "kbench_compare", 1, "a", str(s->pa), "a_label",
                            str(s->la), "b", str(s->pb), "b_label", str(s->lb), "rows", arr, "geomean_speedup",
                            num(s->geomean, true));
    return dump_lines(top, out);
}

/* ---- markdown ---- */

static void md_cell_num(FILE *o, double v, const char *fmt) {
    char cell[64];
    snprintf(cell, sizeof cell, fmt, v);
    fprintf(o, " %s |", !(v > 0) || isinf(v) ? "-" : cell);
}

static void write_md(const kb_report *r, FILE *o) {
    fprintf(o, "# kbench: kport %s, suite %s\n\n", r->version, r->suite ? r->suite : "-");
    fprintf(o, "commit %s, %s, host %s (%s, %d cores", r->commit, r->date, r->hostname, r->cpu_model, r->cores);
    if (r->loadavg >= 0) fprintf(o, ", load average %.1f at start", r->loadavg);
    fputs(")\n\n", o);
    if (r->cores > 0 && r->loadavg > 0.5 * r->cores)
        fputs("**The machine was busy when this run started: times and rooflines are lower than on an idle machine, "
              "and % of roofline mixes the two.**\n\n",
              o);
    if (r->nroofs) {
        fputs("Ceilings of each device (docs/kbench.md, \"Rooflines\"): memory-bound rows against the measured copy "
              "bandwidth, compute-bound rows against the peak of the unit their dtype uses.\n\n"
              "| backend | device | copy GB/s | measured by | datasheet GB/s | bf16 TFLOP/s | fp8 TFLOP/s | f32 "
              "TFLOP/s | peaks from | kernel level |\n|---|---|---|---|---|---|---|---|---|---|\n",
              o);
        for (int i = 0; i < r->nroofs; i++) {
            const kb_roofline *f = &r->roofs[i];
            fprintf(o, "| %s | %s |", f->backend, f->device);
            md_cell_num(o, f->mem_gbps, "%.1f");
            fprintf(o, " %s |", f->mem_method);
            md_cell_num(o, f->sheet_gbps, "%.0f");
            md_cell_num(o, f->peak_tflops, "%.4g");
            md_cell_num(o, f->fp8_tflops, "%.4g");
            md_cell_num(o, f->f32_tflops, "%.4g");
            fprintf(o, " %s | %s |\n", f->peak_method, f->kernel_level[0] ? f->kernel_level : "-");
        }
        fputc('\n', o);
    }
    fprintf(o, "| op | shape | dtype | backend | device | kernel | median ms | p10-p90 ms | host µs | TFLOP/s | GB/s | "
               "%% roofline | bound | ok | note |\n");
    fprintf(o, "|---|---|---|---|---|---|---:|---|---:|---:|---:|---:|---|---|---|\n");
    int counts[5] = {0};
    for (int i = 0; i < r->nrows; i++) {
        const kb_row *w = &r->rows[i];
        counts[w->status]++;
        fprintf(o, "| %s | %s | %s | %s | %s | %s |", kp_op_name(w->c.op), w->c.shape, kb_row_dtype_name(&w->c),
                w->backend, w->device, w->kernel[0] ? w->kernel : "-");
        if (w->status == KB_ROW_OK) {
            fprintf(o, " %.4g | %.4g-%.4g |", w->median_ms, w->p10_ms, w->p90_ms);
            if (isnan(w->host_us)) fputs(" - |", o);
            else fprintf(o, " %.2f |", w->host_us);
            md_cell_num(o, w->tflops, "%.3g");
            md_cell_num(o, w->gbps, "%.1f");
            if (w->roofline_pct >= 0) fprintf(o, " %.1f%% |", w->roofline_pct);
            else fputs(" n/a |", o);
            fprintf(o, " %s%s%s%s | ok | %s |\n", w->bound, w->unit ? " (" : "", w->unit ? w->unit : "",
                    w->unit ? ")" : "", w->c.note);
        } else if (w->status == KB_ROW_FAIL) {
            fprintf(o, " FAIL | FAIL | FAIL | FAIL | FAIL | FAIL | %s | **FAIL** | %s%s%s |\n", w->bound, w->reason,
                    w->c.note[0] ? "; " : "", w->c.note);
        } else {
            if (w->host_us > 0) fprintf(o, " - | - | %.2f |", w->host_us); /* the null backend's rows */
            else fputs(" - | - | - |", o);
            fprintf(o, " - | - | - | %s | %s | %s (%s)%s%s |\n", w->bound, kb_status_word(w->status),
                    kb_status_word(w->status), w->reason, w->c.note[0] ? "; " : "", w->c.note);
        }
    }
    fprintf(o, "\n%d rows: %d ok, %d FAIL, %d unsupported, %d error, %d skipped", r->nrows, counts[KB_ROW_OK],
            counts[KB_ROW_FAIL], counts[KB_ROW_UNSUPPORTED], counts[KB_ROW_ERROR], counts[KB_ROW_SKIPPED]);
    if (r->wall_s > 0) fprintf(o, "; %.1f s", r->wall_s);
    fputs(".\nTimes are per call: device time between kp_event marks around back-to-back calls (the host clock on "
          "cpu, and wherever events cannot time), median of samples of >= 1 ms after a checked warm-up run; "
          "host µs is the host time to issue one call (kport's own work plus the driver's enqueue; best of "
          "bursts of 16; '-' on cpu, where the call runs the op); "
          "GB/s counts bytes as docs/kbench.md defines them; % roofline is against min(unit peak, arithmetic "
          "intensity x copy bandwidth), the unit named after the bound.\n",
          o);
}

/* ---- --compare ---- */

static bool same_key(const kb_row *a, const kb_row *b) {
    return a->c.op == b->c.op && strcmp(a->c.shape, b->c.shape) == 0 &&
           strcmp(kb_row_dtype_name(&a->c), kb_row_dtype_name(&b->c)) == 0;
}

/* "cpu (AMD EPYC)", or "cpu, opencl" when a file holds several devices. */
static void label(const kb_report *r, char *out, size_t n) {
    out[0] = '\0';
    for (int i = 0; i < r->nrows; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++) seen = strcmp(r->rows[j].backend, r->rows[i].backend) == 0;
        size_t used = strlen(out);
        if (!seen) snprintf(out + used, n - used, "%s%s", used ? ", " : "", r->rows[i].backend);
    }
    bool one = true;
    for (int i = 1; i < r->nrows; i++) one &= strcmp(r->rows[i].device, r->rows[0].device) == 0;
    size_t used = strlen(out);
    if (one && r->nrows) snprintf(out + used, n - used, " (%s)", r->rows[0].device);
}

/* Every row of A with its match, then the rows only in B. */
static int match(const kb_report *a, const kb_report *b, kb_compare_row *out, double *geomean) {
    bool *used = calloc((size_t)b->nrows + 1, sizeof *used);
    int n = 0, both = 0;
    double logsum = 0;
    if (!used) return -1;
    for (int i = 0; i < a->nrows; i++) {
        kb_compare_row *m = &out[n++];
        *m = (kb_compare_row){&a->rows[i], NULL, NAN};
        for (int j = 0; j < b->nrows && !m->b; j++)
            if (!used[j] && same_key(m->a, &b->rows[j])) used[j] = true, m->b = &b->rows[j];
        if (m->b && m->a->status == KB_ROW_OK && m->b->status == KB_ROW_OK && m->b->median_ms > 0) {
            m->speedup = m->a->median_ms / m->b->median_ms;
            logsum += log(m->speedup), both++;
        }
    }
    for (int j = 0; j < b->nrows; j++)
        if (!used[j]) out[n++] = (kb_compare_row){NULL, &b->rows[j], NAN};
    free(used);
    *geomean = both ? exp(logsum / both) : NAN;
    return n;
}

static void ms_cell(FILE *o, const kb_row *w, kb_format f) {
    if (!w) fputs(f == KB_MD ? " - |" : ",", o);
    else if (w->status == KB_ROW_OK) fprintf(o, f == KB_MD ? " %.4g |" : ",%.6g", w->median_ms);
    else fprintf(o, f == KB_MD ? " %s |" : ",%s", kb_status_word(w->status));
}

static void pct_cell(FILE *o, const kb_row *w, kb_format f) {
    bool ok = w && w->status == KB_ROW_OK && w->roofline_pct >= 0;
    if (f == KB_MD) ok ? fprintf(o, " %.1f%% |", w->roofline_pct) : fputs(" - |", o);
    else ok ? fprintf(o, ",%.4g", w->roofline_pct) : fputc(',', o);
}

static int write_compare(const kb_compare_set *s, kb_format f, FILE *o) {
    if (f == KB_JSON) return write_compare_json(s, o);
    if (f == KB_MD)
        fprintf(o,
                "# kbench compare\n\nA: %s: %s, commit %s, %s\nB: %s: %s, commit %s, %s\n\n| op | shape | dtype | A ms | "
                "B ms | speedup of B (A ms / B ms) | A %% roofline | B %% roofline |\n|---|---|---|---:|---:|---:|---:|---:|\n",
                s->pa, s->la, s->a->commit, s->a->date, s->pb, s->lb, s->b->commit, s->b->date);
    else fputs("op,shape,dtype,a_ms,b_ms,speedup_b_over_a,a_roofline_pct,b_roofline_pct\n", o);
    for (int i = 0; i < s->n; i++) {
        const kb_row *ra = s->rows[i].a, *rb = s->rows[i].b, *k = ra ? ra : rb;
        double speedup = s->rows[i].speedup;
        fprintf(o, f == KB_MD ? "| %s | %s | %s |" : "%s,\"%s\",%s", kp_op_name(k->c.op), k->c.shape,
                kb_row_dtype_name(&k->c));
        ms_cell(o, ra, f), ms_cell(o, rb, f);
        if (f == KB_MD && !isnan(speedup)) fprintf(o, " %.2fx |", speedup);
        else if (f == KB_MD) fprintf(o, " %s |", !ra ? "only in B" : !rb ? "only in A" : "-");
        else if (!isnan(speedup)) fprintf(o, ",%.4g", speedup);
        else fputc(',', o);
        pct_cell(o, ra, f), pct_cell(o, rb, f);
        fputc('\n', o);
    }
    if (f == KB_MD && !isnan(s->geomean)) fprintf(o, "\nGeometric mean speedup of B over A on rows both ran: %.2fx\n", s->geomean);
    else if (f == KB_MD) fputs("\nNo row ran in both files.\n", o);
    return ferror(o) ? -1 : 0;
}

static int write_report(const kb_report *r, const kb_compare_set *cmp, kb_format f, FILE *out) {
    if (cmp) return write_compare(cmp, f, out);
    if (f == KB_MD) write_md(r, out);
    return f == KB_CSV ? write_csv(r, out) : f == KB_JSON ? write_json(r, out) : ferror(out) ? -1 : 0;
}

/* ---- reading a report back (--from, --compare) ---- */

static const char *gs(const json_t *o, const char *key, const char *def) {
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : def;
}

static double gn(const json_t *o, const char *key, double def) {
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : def;
}

static void load_row(const json_t *j, kb_row *w) {
    static const struct {
        const char *key;
        size_t off;
        double def;
    } nums[] = {
        {"median_ms", offsetof(kb_row, median_ms), NAN}, {"p10_ms", offsetof(kb_row, p10_ms), NAN},
        {"p90_ms", offsetof(kb_row, p90_ms), NAN},       {"min_ms", offsetof(kb_row, min_ms), NAN},
        {"max_ms", offsetof(kb_row, max_ms), NAN},       {"tflops", offsetof(kb_row, tflops), 0},
        {"gbps", offsetof(kb_row, gbps), 0},             {"roofline_pct", offsetof(kb_row, roofline_pct), -1},
        {"flops", offsetof(kb_row, flops), 0},           {"bytes", offsetof(kb_row, bytes), 0},
        {"rel_err", offsetof(kb_row, err), NAN},         {"tol", offsetof(kb_row, tol), NAN},
        {"host_us", offsetof(kb_row, host_us), NAN},
    };
    memset(w, 0, sizeof *w);
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
        *(double *)((char *)w + nums[i].off) = gn(j, nums[i].key, nums[i].def);
    w->c.op = KP_OP_COUNT; /* an op this kbench does not know */
    kb_op_from_name(gs(j, "op", ""), &w->c.op);
    const char *dt = gs(j, "dtype", "");
    w->c.dtype = w->c.wdtype = strcmp(dt, "f32") == 0 ? KP_F32 : strcmp(dt, "f16") == 0 ? KP_F16 : KP_BF16;
    if (strcmp(dt, "fp8") == 0 || strcmp(dt, "w8a8") == 0) w->c.wdtype = KP_FP8_E4M3;
    if (strcmp(dt, "w8a8") == 0) w->c.dtype = KP_FP8_E4M3;
    w->c.variant = "";
    snprintf(w->c.shape, sizeof w->c.shape, "%s", gs(j, "shape", ""));
    snprintf(w->c.note, sizeof w->c.note, "%s", gs(j, "note", ""));
    snprintf(w->backend, sizeof w->backend, "%s", gs(j, "backend", ""));
    snprintf(w->device, sizeof w->device, "%s", gs(j, "device", ""));
    snprintf(w->reason, sizeof w->reason, "%s", gs(j, "reason", ""));
    snprintf(w->kernel, sizeof w->kernel, "%s", gs(j, "kernel", "")); /* absent before issue 14 */
    w->status = KB_ROW_ERROR; /* a status this kbench does not know */
    for (kb_status st = KB_ROW_OK; st <= KB_ROW_SKIPPED; st++)
        if (strcmp(gs(j, "status", ""), kb_status_word(st)) == 0) w->status = st;
    w->bound = strcmp(gs(j, "bound", ""), "compute") == 0 ? "compute" : "memory";
    w->unit = gs(j, "unit", NULL);
    w->inner = (int)gn(j, "runs_per_sample", 0);
    w->device_timed = strcmp(gs(j, "timer", "host"), "events") == 0;
    const json_t *s = json_object_get(j, "samples");
    json_t *x;
    size_t n = json_array_size(s), i;
    if (n > 0 && n <= KB_MAX_SAMPLES && (w->samples = malloc(n * sizeof *w->samples)))
        json_array_foreach(s, i, x) w->samples[w->nsamples++] = json_is_number(x) ? json_number_value(x) : NAN;
}

static void load_roofline(const json_t *f, kb_roofline *o) {
    memset(o, 0, sizeof *o);
    snprintf(o->backend, sizeof o->backend, "%s", gs(f, "backend", ""));
    snprintf(o->device, sizeof o->device, "%s", gs(f, "device", ""));
    o->mem_gbps = gn(f, "memory_gbps", 0);
    snprintf(o->mem_method, sizeof o->mem_method, "%s", gs(f, "memory_method", ""));
    o->peak_tflops = gn(f, "compute_tflops", 0);
    snprintf(o->peak_method, sizeof o->peak_method, "%s", gs(f, "compute_method", ""));
    o->fp8_tflops = gn(f, "fp8_tflops", 0); /* format 1 has none of these */
    o->f32_tflops = gn(f, "f32_tflops", 0);
    o->sheet_gbps = gn(f, "datasheet_memory_gbps", 0);
    snprintf(o->kernel_level, sizeof o->kernel_level, "%s", gs(f, "kernel_level", ""));
}

int kb_report_load(const char *path, kb_report *r, char *err, size_t errn) {
    memset(r, 0, sizeof *r);
    struct stat st;
    if (stat(path, &st) != 0) KB_FAIL("cannot open %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode) || st.st_size > KB_JSON_MAX_BYTES)
        KB_FAIL("%s: not a regular file of at most 1 GiB", path);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) KB_FAIL("%s: not valid JSON: %s (line %d, column %d)", path, je.text, je.line, je.column);
    r->json = j;
    const json_t *rows = json_object_get(j, "rows"), *roofs = json_object_get(j, "rooflines");
    double format = gn(j, "kbench", 0);
    if (!json_is_array(rows) || !(format >= 1))
        KB_FAIL("%s: not a kbench report (no \"kbench\" format number or no \"rows\")", path);
    if (format > KB_JSON_FORMAT)
        KB_FAIL("%s: kbench format %g is newer than this kbench reads (1 to %d)", path, format, KB_JSON_FORMAT);
    r->version = gs(j, "kport_version", "unknown");
    r->commit = gs(j, "git_commit", "unknown");
    r->date = gs(j, "date", "unknown");
    r->suite = gs(j, "suite", "");
    r->wall_s = gn(j, "wall_s", 0);
    const json_t *m = json_object_get(j, "machine");
    snprintf(r->hostname, sizeof r->hostname, "%s", gs(m, "hostname", "unknown"));
    snprintf(r->cpu_model, sizeof r->cpu_model, "%s", gs(m, "cpu_model", "unknown"));
    r->cores = (int)gn(m, "cores", 0);
    r->loadavg = gn(m, "load_avg_1m", -1.0);
    size_t nroofs = json_array_size(roofs), nrows = json_array_size(rows);
    r->roofs = calloc(nroofs + 1, sizeof *r->roofs);
    r->rows = calloc(nrows + 1, sizeof *r->rows);
    if (!r->roofs || !r->rows) KB_FAIL("out of memory loading %s", path);
    for (size_t i = 0; i < nroofs; i++) load_roofline(json_array_get(roofs, i), &r->roofs[r->nroofs++]);
    for (size_t i = 0; i < nrows; i++) load_row(json_array_get(rows, i), &r->rows[r->nrows++]);
    return 0;
}

void kb_report_free(kb_report *r) {
    for (int i = 0; i < r->nrows; i++) kb_row_free(&r->rows[i]);
    free(r->rows);
    free(r->roofs);
    json_decref(r->json);
}

/* ---- --plot ---- */

int kb_beside_self(const char *name, char *path, size_t pathn, char *err, size_t errn) {
    char self[PATH_MAX] = ""; /* zeroed: readlink does not terminate what it reads */
    if (readlink("/proc/self/exe", self, sizeof self - 1) <= 0)
        KB_FAIL("cannot find kbench's own directory (/proc/self/exe): %s", strerror(errno));
    *strrchr(self, '/') = '\0';
    snprintf(path, pathn, "%s/%s", self, name);
    return 0;
}

/* Draws json_path (a report or a compare) into out with tools/kbench-plot. */
static int kb_plot(const char *json_path, const char *out, char *err, size_t errn) {
    char script[PATH_MAX + 16];
    if (!KBENCH_PYTHON[0])
        KB_FAIL("plots need python3 with matplotlib, and none was found when kbench was built (Debian: apt-get "
                "install python3-matplotlib, or bash ci/setup; then rebuild)");
    if (kb_beside_self("kbench-plot", script, sizeof script, err, errn) != 0) return -1;
    if (access(script, R_OK) != 0)
        KB_FAIL("%s: %s (it is built and installed beside kbench)", script, strerror(errno));
    char *argv[] = {(char *)KBENCH_PYTHON, script, (char *)json_path, "--out", (char *)out, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, KBENCH_PYTHON, NULL, NULL, argv, environ), status = 0;
    if (rc != 0) KB_FAIL("cannot run %s: %s", KBENCH_PYTHON, strerror(rc));
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        KB_FAIL("kbench-plot failed (%s %d); its message is above", WIFEXITED(status) ? "exit" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    return 0;
}

/* --plot draws a JSON file: --from's, --out's when it is JSON, or a temporary one. */
static int plot(const kb_options *o, const kb_report *rep, const kb_compare_set *cmp) {
    char err[PATH_MAX + 256], tmp[] = "/tmp/kbench-plot-XXXXXX.json";
    const char *json = o->from && !cmp ? o->from : o->out && o->format == KB_JSON ? o->out : NULL;
    int rc = 0;
    if (!json) {
        int fd = mkstemps(tmp, 5);
        FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
        rc = f && write_report(rep, cmp, KB_JSON, f) == 0 ? 0 : -1;
        if (f ? fclose(f) != 0 : fd >= 0 && close(fd) != 0) rc = -1;
        json = tmp;
        if (rc != 0) snprintf(err, sizeof err, "cannot write %s for kbench-plot", tmp);
    }
    if (rc == 0) rc = kb_plot(json, o->plot, err, sizeof err);
    if (json == tmp) unlink(tmp);
    if (rc != 0) fprintf(stderr, "kbench: --plot: %s\n", err);
    else if (!o->quiet) fprintf(stderr, "kbench: plots written beside %s\n", o->plot);
    return rc ? 1 : 0;
}

int kb_emit(const kb_options *o, const kb_report *rep, const kb_compare_set *cmp) {
    FILE *out = o->out ? fopen(o->out, "w") : stdout;
    if (!out) {
        fprintf(stderr, "kbench: cannot write %s: %s\n", o->out, strerror(errno));
        return 1;
    }
    int rc = write_report(rep, cmp, o->format, out);
    if (out != stdout && fclose(out) != 0) rc = -1;
    if (rc != 0) fprintf(stderr, "kbench: error writing the report\n");
    else if (o->out && !o->quiet) fprintf(stderr, "kbench: report written to %s\n", o->out);
    if (o->plot && plot(o, rep, cmp) != 0) rc = 1;
    return rc ? 1 : 0;
}

int kb_compare(const char *pa, const char *pb, const kb_options *opt) {
    kb_report a = {0}, b = {0};
    char err[1024], la[256], lb[256];
    kb_compare_set set = {pa, la, pb, lb, &a, &b, NULL, -1, NAN};
    int rc = 1;
    if (kb_report_load(pa, &a, err, sizeof err) != 0 || kb_report_load(pb, &b, err, sizeof err) != 0) {
        fprintf(stderr, "kbench: --compare: %s\n", err);
    } else {
        label(&a, la, sizeof la);
        label(&b, lb, sizeof lb);
        if ((set.rows = calloc((size_t)a.nrows + (size_t)b.nrows + 1, sizeof *set.rows)))
            set.n = match(&a, &b, set.rows, &set.geomean);
        if (set.n < 0) fprintf(stderr, "kbench: --compare: out of memory\n");
        else rc = kb_emit(opt, NULL, &set);
    }
    free(set.rows);
    kb_report_free(&a);
    kb_report_free(&b);
    return rc;
}
