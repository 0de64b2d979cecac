/*
 * tools/kbench/kbench_compare.c — `kbench --compare A.json B.json`: rows of two runs
 * matched by op + shape + dtype (in order, when a key repeats), both times, and the
 * speedup of B over A (A ms / B ms: above 1, B is faster). For cuda vs opencl on one
 * GPU, cpu vs PoCL on one CPU, or before vs after a change. Reads kbench formats 1 and 2.
 */
#include "kbench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static void write_table(const char *pa, const kb_report *a, const char *la, const char *pb, const kb_report *b,
                        const char *lb, const kb_compare_row *rows, int n, double geomean, kb_format f, FILE *o) {
    if (f == KB_MD)
        fprintf(o,
                "# kbench compare\n\nA: %s: %s, commit %s, %s\nB: %s: %s, commit %s, %s\n\n| op | shape | dtype | A ms | "
                "B ms | speedup of B (A ms / B ms) | A %% roofline | B %% roofline |\n|---|---|---|---:|---:|---:|---:|---:|\n",
                pa, la, a->commit, a->date, pb, lb, b->commit, b->date);
    else fputs("op,shape,dtype,a_ms,b_ms,speedup_b_over_a,a_roofline_pct,b_roofline_pct\n", o);
    for (int i = 0; i < n; i++) {
        const kb_row *ra = rows[i].a, *rb = rows[i].b, *k = ra ? ra : rb;
        fprintf(o, f == KB_MD ? "| %s | %s | %s |" : "%s,\"%s\",%s", kp_op_name(k->c.op), k->c.shape,
                kb_row_dtype_name(&k->c));
        ms_cell(o, ra, f), ms_cell(o, rb, f);
        if (f == KB_MD && !isnan(rows[i].speedup)) fprintf(o, " %.2fx |", rows[i].speedup);
        else if (f == KB_MD) fprintf(o, " %s |", !ra ? "only in B" : !rb ? "only in A" : "-");
        else if (!isnan(rows[i].speedup)) fprintf(o, ",%.4g", rows[i].speedup);
        else fputc(',', o);
        pct_cell(o, ra, f), pct_cell(o, rb, f);
        fputc('\n', o);
    }
    if (f == KB_MD && !isnan(geomean)) fprintf(o, "\nGeometric mean speedup of B over A on rows both ran: %.2fx\n", geomean);
    else if (f == KB_MD) fputs("\nNo row ran in both files.\n", o);
}

int kb_compare(const char *pa, const char *pb, const kb_options *opt) {
    kb_report a = {0}, b = {0};
    char err[1024], la[256], lb[256];
    int rc = 1, n = -1;
    double geomean = NAN;
    kb_compare_row *rows = NULL;
    if (kb_report_load(pa, &a, err, sizeof err) != 0 || kb_report_load(pb, &b, err, sizeof err) != 0) {
        fprintf(stderr, "kbench: --compare: %s\n", err);
        kb_report_free(&a);
        kb_report_free(&b);
        return 1;
    }
    label(&a, la, sizeof la);
    label(&b, lb, sizeof lb);
    if ((rows = calloc((size_t)a.nrows + (size_t)b.nrows + 1, sizeof *rows))) n = match(&a, &b, rows, &geomean);
    FILE *o = n < 0 ? NULL : opt->out ? fopen(opt->out, "w") : stdout;
    if (n < 0) fprintf(stderr, "kbench: --compare: out of memory\n");
    else if (!o) fprintf(stderr, "kbench: cannot write %s\n", opt->out);
    else {
        if (opt->format == KB_JSON) rc = kb_write_compare_json(pa, la, pb, lb, rows, n, geomean, o) ? 1 : 0;
        else write_table(pa, &a, la, pb, &b, lb, rows, n, geomean, opt->format, o), rc = ferror(o) ? 1 : 0;
        if (o != stdout && fclose(o) != 0) rc = 1;
    }
    if (rc == 0 && opt->plot) { /* the speedup bars, from the compare rows as JSON */
        char tmp[] = "/tmp/kbench-compare-XXXXXX.json";
        int fd = mkstemps(tmp, 5);
        FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
        rc = f && kb_write_compare_json(pa, la, pb, lb, rows, n, geomean, f) == 0 ? 0 : 1;
        if (f && fclose(f) != 0) rc = 1;
        if (rc != 0) snprintf(err, sizeof err, "cannot write %s", tmp);
        if (rc == 0 && kb_plot(tmp, opt->plot, err, sizeof err) != 0) rc = 1;
        if (rc != 0) fprintf(stderr, "kbench: --plot: %s\n", err);
        if (fd >= 0) unlink(tmp);
    }
    free(rows);
    kb_report_free(&a);
    kb_report_free(&b);
    return rc;
}
