/*
 * tools/kbench/kbench_json.c — kbench's JSON, read and written with jansson: the report
 * (--format json), its loading back (--from, --compare; formats 1 and 2) and the compare
 * rows (--compare --format json, --plot).
 *
 * The writer puts each top-level field on a line and each row, roofline and backend on
 * a line of its own, so that results under bench/results diff row by row. Format 2 adds
 * to format 1 (nothing is renamed): per-device peaks by unit, the datasheet bandwidth and
 * the kernel level, and each row's ceiling (`unit`).
 */
#include "kbench.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define KB_JSON_FORMAT 2
#define KB_JSON_FLAGS (JSON_REAL_PRECISION(6) | JSON_ENCODE_ANY)
#define KB_JSON_MAX_BYTES ((off_t)1 << 30)

/* ---- writing ---- */

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

int kb_write_json(const kb_report *r, FILE *out) {
    json_t *backends = json_array(), *roofs = json_array(), *rows = json_array();
    for (int i = 0; i < r->nbackends; i++) {
        const kp_backend_info *b = &r->backends[i];
        json_array_append_new(backends, json_pack("{s:o, s:b, s:i, s:o}", "name", str(b->name), "available",
                                                  b->available, "devices", (int)b->device_count, "reason", str(b->reason)));
    }
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
int kb_write_csv(const kb_report *r, FILE *o) {
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

int kb_write_compare_json(const kb_compare_set *s, FILE *out) {
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

/* ---- reading ---- */

static const char *gs(const json_t *o, const char *key, const char *def) {
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : def;
}

static double gn(const json_t *o, const char *key, double def) {
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : def;
}

static double array_number(const json_t *v) { return json_is_number(v) ? json_number_value(v) : NAN; }

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
    kp_op op = KP_OP_COUNT;
    kb_op_from_name(gs(j, "op", ""), &op);
    w->c.op = op;
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
    size_t n = json_array_size(s);
    if (n > 0 && n <= KB_MAX_SAMPLES && (w->samples = malloc(n * sizeof *w->samples)))
        for (size_t i = 0; i < n; i++) w->samples[w->nsamples++] = array_number(json_array_get(s, i));
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
