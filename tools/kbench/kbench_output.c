/*
 * tools/kbench/kbench_output.c — the report as a markdown table (stdout by default;
 * CSV and JSON are kbench_json.c's, the compare table kbench_compare.c's), written to
 * --out and drawn by --plot.
 *
 * A failed row shows FAIL instead of numbers: a wrong kernel is never listed as fast.
 */
#include "kbench.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *kb_status_word(kb_status s) {
    static const char *const words[] = {"ok", "FAIL", "unsupported", "error", "skipped"};
    return (unsigned)s < sizeof words / sizeof words[0] ? words[s] : "?";
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

static int write_report(const kb_report *r, const kb_compare_set *cmp, kb_format f, FILE *out) {
    if (cmp) return kb_write_compare(cmp, f, out);
    switch (f) {
    case KB_MD: write_md(r, out); break;
    case KB_CSV: return kb_write_csv(r, out);
    case KB_JSON: return kb_write_json(r, out);
    }
    return ferror(out) ? -1 : 0;
}

/* --plot draws a JSON file: --from's, --out's when it is JSON, or a temporary one. */
static int plot(const kb_options *o, const kb_report *rep, const kb_compare_set *cmp) {
    char err[1024], tmp[] = "/tmp/kbench-plot-XXXXXX.json";
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
