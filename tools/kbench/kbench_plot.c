/*
 * tools/kbench/kbench_plot.c — `--plot FILE.svg`: a hand-written SVG bar chart of % of
 * roofline, one horizontal bar per row, grouped by backend/device, coloured by the
 * bound that applies. FAIL, unsupported and error rows are listed with their word
 * instead of a bar. FILE.png writes the SVG beside it and converts it with
 * rsvg-convert or ImageMagick when one is installed.
 */
#include "kbench.h"

#include <stdlib.h>
#include <string.h>

#define ROW_H 20
#define LABEL_W 560
#define BAR_W 480
#define PAD 16

static void xml(FILE *o, const char *s) {
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", o);
        else if (*s == '>') fputs("&gt;", o);
        else if (*s == '&') fputs("&amp;", o);
        else if (*s == '"') fputs("&quot;", o);
        else fputc(*s, o);
    }
}

static bool same_device(const kb_row *a, const kb_row *b) {
    return strcmp(a->backend, b->backend) == 0 && strcmp(a->device, b->device) == 0;
}

static const kb_roofline *roof_of(const kb_report *r, const kb_row *w) {
    for (int i = 0; i < r->nroofs; i++)
        if (strcmp(r->roofs[i].backend, w->backend) == 0 && strcmp(r->roofs[i].device, w->device) == 0)
            return &r->roofs[i];
    return NULL;
}

static int write_svg(const kb_report *r, const char *path, char *err, size_t errn) {
    FILE *o = fopen(path, "w");
    if (!o) {
        snprintf(err, errn, "cannot write %s", path);
        return -1;
    }
    /* groups in first-seen order, so the chart reads like the table */
    int *order = malloc(((size_t)r->nrows + 1) * sizeof *order), n = 0, groups = 0;
    bool *done = calloc((size_t)r->nrows + 1, 1);
    if (!order || !done) {
        free(order), free(done), fclose(o);
        snprintf(err, errn, "out of memory");
        return -1;
    }
    for (int i = 0; i < r->nrows; i++) {
        if (done[i]) continue;
        groups++;
        for (int j = i; j < r->nrows; j++)
            if (!done[j] && same_device(&r->rows[i], &r->rows[j])) done[j] = true, order[n++] = j;
    }
    double max = 100.0;
    for (int i = 0; i < r->nrows; i++)
        if (r->rows[i].status == KB_ROW_OK && r->rows[i].roofline_pct > max) max = r->rows[i].roofline_pct;
    max = ((int)(max / 25.0) + (max > (int)(max / 25.0) * 25.0 ? 1 : 0)) * 25.0;
    int top = 70, height = top + (n + 3 * groups) * ROW_H + 60, width = PAD + LABEL_W + BAR_W + 180;
    fprintf(o, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n",
            width, height, width, height);
    fprintf(o, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(o, "<text x=\"%d\" y=\"24\" font-size=\"16\" font-weight=\"bold\">kbench: %% of roofline per op (suite ", PAD);
    xml(o, r->suite ? r->suite : "-");
    fprintf(o, ")</text>\n<text x=\"%d\" y=\"42\" fill=\"#555\">kport ", PAD);
    xml(o, r->version);
    fputs(", commit ", o);
    xml(o, r->commit);
    fputs(", ", o);
    xml(o, r->date);
    fputs(", host ", o);
    xml(o, r->hostname);
    fputs("</text>\n", o);
    /* legend */
    int lx = PAD + LABEL_W;
    fprintf(o, "<rect x=\"%d\" y=\"50\" width=\"12\" height=\"12\" fill=\"#3b75af\"/><text x=\"%d\" y=\"60\">memory-bound "
               "(%% of copy GB/s)</text>\n",
            lx, lx + 16);
    fprintf(o, "<rect x=\"%d\" y=\"50\" width=\"12\" height=\"12\" fill=\"#ef8636\"/><text x=\"%d\" y=\"60\">compute-bound "
               "(%% of peak)</text>\n",
            lx + 250, lx + 266);
    int y = top, x0 = PAD + LABEL_W, gy0 = top;
    for (int i = 0; i < n; i++) {
        const kb_row *w = &r->rows[order[i]];
        if (i == 0 || !same_device(w, &r->rows[order[i - 1]])) {
            y += i == 0 ? ROW_H : 2 * ROW_H;
            const kb_roofline *f = roof_of(r, w);
            fprintf(o, "<text x=\"%d\" y=\"%d\" font-weight=\"bold\" font-size=\"13\">", PAD, y);
            xml(o, w->backend);
            fputs(": ", o);
            xml(o, w->device);
            if (f) {
                char buf[160];
                snprintf(buf, sizeof buf, "  (memory %.1f GB/s, compute %.3g TFLOP/s)", f->mem_gbps, f->peak_tflops);
                xml(o, buf);
            }
            fputs("</text>\n", o);
            y += ROW_H / 2;
        }
        char label[300];
        snprintf(label, sizeof label, "%s %s %s", kp_op_name(w->c.op), w->c.shape, kb_row_dtype_name(&w->c));
        if (strlen(label) > 84) strcpy(label + 81, "...");
        y += ROW_H;
        if (i % 2 == 0)
            fprintf(o, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#f3f3f3\"/>\n", PAD, y - 14,
                    LABEL_W + BAR_W + 160, ROW_H);
        fprintf(o, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">", x0 - 8, y);
        xml(o, label);
        fputs("</text>\n", o);
        if (w->status == KB_ROW_OK && w->roofline_pct >= 0) {
            double bw = w->roofline_pct / max * BAR_W;
            fprintf(o, "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>\n", x0, y - 11, bw < 1 ? 1 : bw,
                    ROW_H - 6, strcmp(w->bound, "compute") == 0 ? "#ef8636" : "#3b75af");
            fprintf(o, "<text x=\"%.1f\" y=\"%d\">%.1f%%  %.3g ms</text>\n", x0 + (bw < 1 ? 1 : bw) + 4, y,
                    w->roofline_pct, w->median_ms);
        } else {
            const char *word = w->status == KB_ROW_OK ? "no roofline" : kb_status_word(w->status);
            fprintf(o, "<text x=\"%d\" y=\"%d\" fill=\"%s\" font-weight=\"%s\">%s</text>\n", x0 + 4, y,
                    w->status == KB_ROW_FAIL ? "#c00" : "#888", w->status == KB_ROW_FAIL ? "bold" : "normal", word);
        }
    }
    /* axis and grid over the whole plot */
    int gy1 = y + 8;
    for (double t = 0; t <= max + 1e-9; t += 25.0) {
        double x = x0 + t / max * BAR_W;
        fprintf(o, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"%s\" stroke-width=\"1\"/>\n", x, gy0, x,
                gy1, t == 100.0 ? "#444" : "#ccc");
        fprintf(o, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" fill=\"#444\">%.0f%%</text>\n", x, gy1 + 16, t);
    }
    fprintf(o, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" fill=\"#444\">%% of this device's roofline "
               "(measured by kbench)</text>\n",
            x0 + BAR_W / 2, gy1 + 36);
    fputs("</svg>\n", o);
    free(order), free(done);
    if (fclose(o) != 0) {
        snprintf(err, errn, "error writing %s", path);
        return -1;
    }
    return 0;
}

int kb_plot_svg(const kb_report *r, const char *path, char *err, size_t errn) {
    size_t len = strlen(path);
    bool png = len > 4 && strcmp(path + len - 4, ".png") == 0;
    if (!png) return write_svg(r, path, err, errn);
    char svg[4096], cmd[9000];
    snprintf(svg, sizeof svg, "%.*s.svg", (int)(len - 4), path);
    if (write_svg(r, svg, err, errn) != 0) return -1;
    if (strpbrk(path, "'\\\n")) {
        snprintf(err, errn, "wrote %s; not converting to PNG: the file name has a quote or backslash", svg);
        return -1;
    }
    snprintf(cmd, sizeof cmd,
             "{ command -v rsvg-convert >/dev/null && rsvg-convert -o '%s' '%s'; } 2>/dev/null || "
             "{ command -v convert >/dev/null && convert -density 96 '%s' '%s'; } 2>/dev/null",
             path, svg, svg, path);
    if (system(cmd) != 0) {
        snprintf(err, errn, "wrote %s, but neither rsvg-convert nor ImageMagick's convert could make %s", svg, path);
        return -1;
    }
    return 0;
}
