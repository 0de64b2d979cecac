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

int kb_write_compare(const kb_compare_set *s, kb_format f, FILE *o) {
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
