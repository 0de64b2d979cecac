/*
 * tools/kbench/kbench_output.c — the report as a markdown table (stdout by default),
 * CSV, or JSON (machine, versions, commit, rooflines, every row with its samples).
 *
 * A failed row shows FAIL instead of numbers: a wrong kernel is never listed as fast.
 */
#include "kbench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *kb_status_word(kb_status s) {
    switch (s) {
    case KB_ROW_OK: return "ok";
    case KB_ROW_FAIL: return "FAIL";
    case KB_ROW_UNSUPPORTED: return "unsupported";
    case KB_ROW_ERROR: return "error";
    case KB_ROW_SKIPPED: return "skipped";
    }
    return "?";
}

void kb_report_machine(kb_report *r) {
    if (gethostname(r->hostname, sizeof r->hostname) != 0) snprintf(r->hostname, sizeof r->hostname, "unknown");
    r->hostname[sizeof r->hostname - 1] = '\0';
    snprintf(r->cpu_model, sizeof r->cpu_model, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || !colon) continue;
        colon += 1 + strspn(colon + 1, " \t");
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(r->cpu_model, sizeof r->cpu_model, "%s", colon);
        break;
    }
    if (f) fclose(f);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    r->cores = n > 0 ? (int)n : 0;
    r->loadavg = -1.0;
    if ((f = fopen("/proc/loadavg", "r"))) {
        if (fscanf(f, "%lf", &r->loadavg) != 1) r->loadavg = -1.0;
        fclose(f);
    }
}

/* ---- markdown ---- */

static void md_cell_num(FILE *o, double v, const char *fmt) {
    if (!(v > 0) || isinf(v)) fputs(" - |", o);
    else {
        fputc(' ', o);
        fprintf(o, fmt, v);
        fputs(" |", o);
    }
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
        fprintf(o, "Rooflines, measured by kbench on each device:\n\n");
        fprintf(o, "| backend | device | memory GB/s | measured by | compute TFLOP/s | measured by | ridge FLOP/byte |\n");
        fprintf(o, "|---|---|---|---|---|---|---|\n");
        for (int i = 0; i < r->nroofs; i++) {
            const kb_roofline *f = &r->roofs[i];
            fprintf(o, "| %s | %s |", f->backend, f->device);
            md_cell_num(o, f->mem_gbps, "%.1f");
            fprintf(o, " %s |", f->mem_method);
            md_cell_num(o, f->peak_tflops, "%.3g");
            fprintf(o, " %s |", f->peak_method);
            md_cell_num(o, f->mem_gbps > 0 && f->peak_tflops > 0 ? f->peak_tflops * 1e3 / f->mem_gbps : 0, "%.1f");
            fputc('\n', o);
        }
        fputc('\n', o);
    }
    fprintf(o, "| op | shape | dtype | backend | device | median ms | p10-p90 ms | TFLOP/s | GB/s | %% roofline | bound "
               "| ok | note |\n");
    fprintf(o, "|---|---|---|---|---|---:|---|---:|---:|---:|---|---|---|\n");
    int counts[5] = {0};
    for (int i = 0; i < r->nrows; i++) {
        const kb_row *w = &r->rows[i];
        counts[w->status]++;
        fprintf(o, "| %s | %s | %s | %s | %s |", kp_op_name(w->c.op), w->c.shape, kb_row_dtype_name(&w->c), w->backend,
                w->device);
        if (w->status == KB_ROW_OK) {
            fprintf(o, " %.4g | %.4g-%.4g |", w->median_ms, w->p10_ms, w->p90_ms);
            md_cell_num(o, w->tflops, "%.3g");
            md_cell_num(o, w->gbps, "%.1f");
            if (w->roofline_pct >= 0) fprintf(o, " %.1f%% |", w->roofline_pct);
            else fputs(" n/a |", o);
            fprintf(o, " %s | ok | %s |\n", w->bound, w->c.note);
        } else if (w->status == KB_ROW_FAIL) {
            fprintf(o, " FAIL | FAIL | FAIL | FAIL | FAIL | %s | **FAIL** | %s%s%s |\n", w->bound, w->reason,
                    w->c.note[0] ? "; " : "", w->c.note);
        } else {
            fprintf(o, " - | - | - | - | - | %s | %s | %s (%s)%s%s |\n", w->bound, kb_status_word(w->status),
                    kb_status_word(w->status), w->reason, w->c.note[0] ? "; " : "", w->c.note);
        }
    }
    fprintf(o, "\n%d rows: %d ok, %d FAIL, %d unsupported, %d error, %d skipped", r->nrows, counts[KB_ROW_OK],
            counts[KB_ROW_FAIL], counts[KB_ROW_UNSUPPORTED], counts[KB_ROW_ERROR], counts[KB_ROW_SKIPPED]);
    if (r->wall_s > 0) fprintf(o, "; %.1f s", r->wall_s);
    fputs(".\nTimes are per call: device time between kp_event marks around back-to-back calls (the host clock on "
          "cpu, and wherever events cannot time), median of samples of >= 1 ms after a checked warm-up run; "
          "GB/s counts bytes as docs/kbench.md defines them; % roofline is against the bound the row's arithmetic "
          "intensity puts it under.\n",
          o);
}

/* ---- CSV ---- */

static void csv_str(FILE *o, const char *s) {
    if (!strpbrk(s, ",\"\n")) {
        fputs(s, o);
        return;
    }
    fputc('"', o);
    for (; *s; s++) {
        if (*s == '"') fputc('"', o);
        fputc(*s, o);
    }
    fputc('"', o);
}

static void csv_num(FILE *o, double v, bool ok) {
    if (ok && !isnan(v) && !isinf(v)) fprintf(o, "%.6g", v);
}

static void write_csv(const kb_report *r, FILE *o) {
    fputs("op,shape,dtype,backend,device,median_ms,p10_ms,p90_ms,min_ms,max_ms,tflops,gbps,roofline_pct,bound,ok,status,"
          "rel_err,note,reason\n",
          o);
    for (int i = 0; i < r->nrows; i++) {
        const kb_row *w = &r->rows[i];
        bool ok = w->status == KB_ROW_OK;
        fprintf(o, "%s,", kp_op_name(w->c.op));
        csv_str(o, w->c.shape);
        fprintf(o, ",%s,%s,", kb_row_dtype_name(&w->c), w->backend);
        csv_str(o, w->device);
        double nums[] = {w->median_ms, w->p10_ms, w->p90_ms, w->min_ms, w->max_ms, w->tflops, w->gbps};
        for (size_t j = 0; j < sizeof nums / sizeof nums[0]; j++) fputc(',', o), csv_num(o, nums[j], ok);
        fputc(',', o), csv_num(o, w->roofline_pct, ok && w->roofline_pct >= 0);
        fprintf(o, ",%s,%s,%s,", w->bound, ok ? "true" : w->status == KB_ROW_FAIL ? "false" : "",
                kb_status_word(w->status));
        csv_num(o, w->err, w->status == KB_ROW_OK || w->status == KB_ROW_FAIL);
        fputc(',', o), csv_str(o, w->c.note);
        fputc(',', o), csv_str(o, w->reason);
        fputc('\n', o);
    }
}

/* ---- JSON ---- */

static void json_str(FILE *o, const char *s) {
    fputc('"', o);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(o, "\\%c", c);
        else if (c == '\n') fputs("\\n", o);
        else if (c < 0x20) fprintf(o, "\\u%04x", c);
        else fputc(c, o);
    }
    fputc('"', o);
}

static void json_num(FILE *o, double v, bool ok) {
    if (ok && !isnan(v) && !isinf(v)) fprintf(o, "%.6g", v);
    else fputs("null", o);
}

static void write_json(const kb_report *r, FILE *o) {
    fputs("{\n  \"kbench\": 1,\n  \"kport_version\": ", o);
    json_str(o, r->version);
    fputs(",\n  \"git_commit\": ", o);
    json_str(o, r->commit);
    fputs(",\n  \"date\": ", o);
    json_str(o, r->date);
    fputs(",\n  \"suite\": ", o);
    json_str(o, r->suite ? r->suite : "");
    fputs(",\n  \"machine\": {\"hostname\": ", o);
    json_str(o, r->hostname);
    fputs(", \"cpu_model\": ", o);
    json_str(o, r->cpu_model);
    fprintf(o, ", \"cores\": %d, \"load_avg_1m\": ", r->cores);
    json_num(o, r->loadavg, r->loadavg >= 0);
    fputs("},\n  \"wall_s\": ", o);
    json_num(o, r->wall_s, r->wall_s > 0);
    fputs(",\n  \"backends\": [", o);
    for (int i = 0; i < r->nbackends; i++) {
        const kp_backend_info *b = &r->backends[i];
        fputs(i ? ",\n    {\"name\": " : "\n    {\"name\": ", o);
        json_str(o, b->name);
        fprintf(o, ", \"available\": %s, \"devices\": %d, \"reason\": ", b->available ? "true" : "false",
                (int)b->device_count);
        json_str(o, b->reason);
        fputc('}', o);
    }
    fputs(r->nbackends ? "\n  ],\n  \"rooflines\": [" : "],\n  \"rooflines\": [", o);
    for (int i = 0; i < r->nroofs; i++) {
        const kb_roofline *f = &r->roofs[i];
        fputs(i ? ",\n    {\"backend\": " : "\n    {\"backend\": ", o);
        json_str(o, f->backend);
        fputs(", \"device\": ", o);
        json_str(o, f->device);
        fputs(", \"memory_gbps\": ", o);
        json_num(o, f->mem_gbps, f->mem_gbps > 0);
        fputs(", \"memory_method\": ", o);
        json_str(o, f->mem_method);
        fputs(", \"compute_tflops\": ", o);
        json_num(o, f->peak_tflops, f->peak_tflops > 0);
        fputs(", \"compute_method\": ", o);
        json_str(o, f->peak_method);
        fputc('}', o);
    }
    fputs(r->nroofs ? "\n  ],\n  \"rows\": [" : "],\n  \"rows\": [", o);
    for (int i = 0; i < r->nrows; i++) {
        const kb_row *w = &r->rows[i];
        bool ok = w->status == KB_ROW_OK;
        fputs(i ? ",\n    {\"op\": " : "\n    {\"op\": ", o);
        json_str(o, kp_op_name(w->c.op));
        fputs(", \"backend\": ", o);
        json_str(o, w->backend);
        fputs(", \"device\": ", o);
        json_str(o, w->device);
        fputs(", \"dtype\": ", o);
        json_str(o, kb_row_dtype_name(&w->c));
        fputs(", \"shape\": ", o);
        json_str(o, w->c.shape);
        fputs(",\n     \"status\": ", o);
        json_str(o, kb_status_word(w->status));
        fprintf(o, ", \"ok\": %s", ok ? "true" : w->status == KB_ROW_FAIL ? "false" : "null");
        const char *names[] = {"median_ms", "p10_ms", "p90_ms", "min_ms", "max_ms", "tflops", "gbps"};
        double nums[] = {w->median_ms, w->p10_ms, w->p90_ms, w->min_ms, w->max_ms, w->tflops, w->gbps};
        for (size_t j = 0; j < sizeof nums / sizeof nums[0]; j++) {
            fprintf(o, ", \"%s\": ", names[j]);
            json_num(o, nums[j], ok);
        }
        fputs(", \"roofline_pct\": ", o);
        json_num(o, w->roofline_pct, ok && w->roofline_pct >= 0);
        fputs(", \"bound\": ", o);
        json_str(o, w->bound);
        fputs(",\n     \"flops\": ", o);
        json_num(o, w->flops, true);
        fputs(", \"bytes\": ", o);
        json_num(o, w->bytes, true);
        fputs(", \"rel_err\": ", o);
        json_num(o, w->err, ok || w->status == KB_ROW_FAIL);
        fputs(", \"tol\": ", o);
        json_num(o, w->tol, true);
        fputs(", \"note\": ", o);
        json_str(o, w->c.note);
        fputs(", \"reason\": ", o);
        json_str(o, w->reason);
        fprintf(o, ", \"runs_per_sample\": %d, \"timer\": \"%s\",\n     \"samples\": [", w->inner,
                w->device_timed ? "events" : "host");
        for (int j = 0; j < w->nsamples; j++) fprintf(o, "%s%.5g", j ? ", " : "", w->samples[j]);
        fputs("]}", o);
    }
    fputs(r->nrows ? "\n  ]\n}\n" : "]\n}\n", o);
}

int kb_write_report(const kb_report *r, kb_format f, FILE *out) {
    switch (f) {
    case KB_MD: write_md(r, out); break;
    case KB_CSV: write_csv(r, out); break;
    case KB_JSON: write_json(r, out); break;
    }
    return ferror(out) ? -1 : 0;
}
