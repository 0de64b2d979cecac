/*
 * tools/kbench/kbench_compare.c — `kbench --compare A.json B.json`: rows of two runs
 * matched by op + shape + dtype (in order, when a key repeats), both times, and the
 * speedup of B over A (A ms / B ms: above 1, B is faster). For cuda vs opencl on one
 * GPU, cpu vs PoCL on one CPU, or before vs after a change.
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
        if (seen) continue;
        size_t used = strlen(out);
        snprintf(out + used, n - used, "%s%s", used ? ", " : "", r->rows[i].backend);
    }
    bool one = true;
    for (int i = 1; i < r->nrows; i++) one &= strcmp(r->rows[i].device, r->rows[0].device) == 0;
    if (one && r->nrows) {
        size_t used = strlen(out);
        snprintf(out + used, n - used, " (%s)", r->rows[0].device);
    }
}

static void cell(FILE *o, const kb_row *w, kb_format f) {
    if (!w) fputs(f == KB_MD ? " - |" : ",", o);
    else if (w->status == KB_ROW_OK) fprintf(o, f == KB_MD ? " %.4g |" : ",%.6g", w->median_ms);
    else fprintf(o, f == KB_MD ? " %s |" : ",%s", kb_status_word(w->status));
}

static void free_report(kb_report *r, kb_json *j) {
    for (int i = 0; i < r->nrows; i++) kb_row_free(&r->rows[i]);
    free(r->rows);
    free(r->roofs);
    kb_json_free(j);
}

int kb_compare(const char *pa, const char *pb, kb_format f, FILE *o) {
    kb_report a, b;
    kb_json *ja = NULL, *jb = NULL;
    char err[512];
    if (kb_report_load(pa, &a, &ja, err, sizeof err) != 0 || kb_report_load(pb, &b, &jb, err, sizeof err) != 0) {
        fprintf(stderr, "kbench: --compare: %s\n", err);
        kb_json_free(ja), kb_json_free(jb);
        return 1;
    }
    bool *used = calloc((size_t)b.nrows + 1, sizeof *used);
    if (!used) {
        fprintf(stderr, "kbench: --compare: out of memory\n");
        return 1;
    }
    char la[256], lb[256];
    label(&a, la, sizeof la);
    label(&b, lb, sizeof lb);
    if (f == KB_MD) {
        fprintf(o, "# kbench compare\n\nA: %s: %s, commit %s, %s\nB: %s: %s, commit %s, %s\n\n", pa, la, a.commit, a.date,
                pb, lb, b.commit, b.date);
        fputs("| op | shape | dtype | A ms | B ms | speedup of B (A ms / B ms) | A % roofline | B % roofline |\n", o);
        fputs("|---|---|---|---:|---:|---:|---:|---:|\n", o);
    } else if (f == KB_CSV) {
        fputs("op,shape,dtype,a_ms,b_ms,speedup_b_over_a,a_roofline_pct,b_roofline_pct\n", o);
    } else {
        fputs("{\"a\": ", o);
        fprintf(o, "\"%s\", \"b\": \"%s\", \"rows\": [", pa, pb);
    }
    double logsum = 0;
    int both = 0, printed = 0;
    for (int pass = 0; pass < 2; pass++) {
        /* pass 0: every row of A with its match; pass 1: rows only in B */
        int n = pass == 0 ? a.nrows : b.nrows;
        for (int i = 0; i < n; i++) {
            const kb_row *ra = NULL, *rb = NULL;
            if (pass == 0) {
                ra = &a.rows[i];
                for (int j = 0; j < b.nrows && !rb; j++)
                    if (!used[j] && same_key(ra, &b.rows[j])) used[j] = true, rb = &b.rows[j];
            } else {
                if (used[i]) continue;
                rb = &b.rows[i];
            }
            const kb_row *k = ra ? ra : rb;
            bool ok = ra && rb && ra->status == KB_ROW_OK && rb->status == KB_ROW_OK && rb->median_ms > 0;
            double speed = ok ? ra->median_ms / rb->median_ms : NAN;
            if (ok) logsum += log(speed), both++;
            if (f == KB_JSON) {
                fprintf(o, "%s\n  {\"op\": \"%s\", \"shape\": \"%s\", \"dtype\": \"%s\", \"a_ms\": ", printed ? "," : "",
                        kp_op_name(k->c.op), k->c.shape, kb_row_dtype_name(&k->c));
                if (ra && ra->status == KB_ROW_OK) fprintf(o, "%.6g", ra->median_ms);
                else fputs("null", o);
                fputs(", \"b_ms\": ", o);
                if (rb && rb->status == KB_ROW_OK) fprintf(o, "%.6g", rb->median_ms);
                else fputs("null", o);
                fputs(", \"speedup\": ", o);
                if (ok) fprintf(o, "%.4g}", speed);
                else fputs("null}", o);
            } else {
                fprintf(o, f == KB_MD ? "| %s | %s | %s |" : "%s,\"%s\",%s", kp_op_name(k->c.op), k->c.shape,
                        kb_row_dtype_name(&k->c));
                cell(o, ra, f);
                cell(o, rb, f);
                if (f == KB_MD) {
                    if (ok) fprintf(o, " %.2fx |", speed);
                    else fprintf(o, " %s |", !ra ? "only in B" : !rb ? "only in A" : "-");
                    for (int s = 0; s < 2; s++) {
                        const kb_row *w = s ? rb : ra;
                        if (w && w->status == KB_ROW_OK && w->roofline_pct >= 0) fprintf(o, " %.1f%% |", w->roofline_pct);
                        else fputs(" - |", o);
                    }
                    fputc('\n', o);
                } else {
                    if (ok) fprintf(o, ",%.4g", speed);
                    else fputc(',', o);
                    for (int s = 0; s < 2; s++) {
                        const kb_row *w = s ? rb : ra;
                        fputc(',', o);
                        if (w && w->status == KB_ROW_OK && w->roofline_pct >= 0) fprintf(o, "%.4g", w->roofline_pct);
                    }
                    fputc('\n', o);
                }
            }
            printed++;
        }
    }
    if (f == KB_JSON) {
        fputs("\n], \"geomean_speedup\": ", o);
        if (both) fprintf(o, "%.4g", exp(logsum / both));
        else fputs("null", o);
        fputs("}\n", o);
    } else if (f == KB_MD) {
        if (both) fprintf(o, "\nGeometric mean speedup of B over A on %d rows both ran: %.2fx\n", both, exp(logsum / both));
        else fputs("\nNo row ran in both files.\n", o);
    }
    free(used);
    free_report(&a, ja);
    free_report(&b, jb);
    return 0;
}
