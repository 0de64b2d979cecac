/*
 * tools/kbench/kbench_output.c — the report as a markdown table (stdout by default;
 * CSV and JSON are kbench_json.c's), `--compare`'s table, written to --out and drawn by
 * --plot.
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
#include <limits.h>
#include <math.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

const char *kb_status_word(kb_status s) {
    static const char *const words[] = {"ok", "FAIL", "unsupported", "error", "skipped"};
    return (unsigned)s < sizeof words / sizeof words[0] ? words[s] : "?";
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
    if (f == KB_JSON) return kb_write_compare_json(s, o);
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
    switch (f) {
    case KB_MD: write_md(r, out); break;
    case KB_CSV: return kb_write_csv(r, out);
    case KB_JSON: return kb_write_json(r, out);
    }
    return ferror(out) ? -1 : 0;
}

/* ---- --plot ---- */

int kb_beside_self(const char *name, char *path, size_t pathn, char *err, size_t errn) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) KB_FAIL("cannot find kbench's own directory (/proc/self/exe): %s", strerror(errno));
    self[n] = '\0';
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
