/*
 * tools/kbench/kbench_json.c — a small JSON reader for kbench's own files (--compare,
 * --from): objects, arrays, strings (with \uXXXX for ASCII), numbers, true/false/null.
 * Errors name the byte offset; nothing aborts.
 */
#include "kbench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

struct kb_json {
    jtype type;
    double num;
    char *str;         /* J_STR */
    char **keys;       /* J_OBJ */
    struct kb_json *v; /* J_ARR / J_OBJ children */
    int n;
};

typedef struct parser {
    const char *s, *p;
    char *err;
    size_t errn;
    int depth;
} parser;

static void ws(parser *ps) { ps->p += strspn(ps->p, " \t\r\n"); }

static bool fail(parser *ps, const char *what) {
    if (!ps->err[0]) snprintf(ps->err, ps->errn, "%s at byte %ld", what, (long)(ps->p - ps->s));
    return false;
}

static bool parse_value(parser *ps, kb_json *out);
static void free_parts(kb_json *j);

static bool parse_string(parser *ps, char **out) {
    if (*ps->p != '"') return fail(ps, "expected a string");
    ps->p++;
    size_t cap = 32, n = 0;
    char *s = malloc(cap);
    while (s && *ps->p && *ps->p != '"') {
        char c = *ps->p++;
        if (c == '\\') {
            char e = *ps->p++;
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': {
                unsigned v = 0;
                for (int i = 0; i < 4 && *ps->p; i++, ps->p++) {
                    char h = *ps->p;
                    v = v * 16 + (unsigned)(h >= 'a' ? h - 'a' + 10 : h >= 'A' ? h - 'A' + 10 : h - '0');
                }
                c = v < 0x80 ? (char)v : '?';
                break;
            }
            case '\0': free(s); return fail(ps, "unterminated string");
            default: c = e; break;
            }
        }
        if (n + 2 > cap) {
            char *t = realloc(s, cap *= 2);
            if (!t) break;
            s = t;
        }
        s[n++] = c;
    }
    if (!s) return fail(ps, "out of memory");
    if (*ps->p != '"') {
        free(s);
        return fail(ps, "unterminated string");
    }
    ps->p++;
    s[n] = '\0';
    *out = s;
    return true;
}

static bool push_child(kb_json *j, kb_json *child, char *key) {
    kb_json *v = realloc(j->v, (size_t)(j->n + 1) * sizeof *v);
    if (!v) return false;
    j->v = v;
    if (j->type == J_OBJ) {
        char **k = realloc(j->keys, (size_t)(j->n + 1) * sizeof *k);
        if (!k) return false;
        j->keys = k;
        j->keys[j->n] = key;
    }
    j->v[j->n++] = *child;
    return true;
}

static bool parse_container(parser *ps, kb_json *out, bool obj) {
    out->type = obj ? J_OBJ : J_ARR;
    ps->p++;
    ws(ps);
    if (*ps->p == (obj ? '}' : ']')) {
        ps->p++;
        return true;
    }
    for (;;) {
        char *key = NULL;
        kb_json child = {0};
        ws(ps);
        if (obj) {
            if (!parse_string(ps, &key)) return false;
            ws(ps);
            if (*ps->p != ':') {
                free(key);
                return fail(ps, "expected ':'");
            }
            ps->p++;
        }
        if (!parse_value(ps, &child) || !push_child(out, &child, key)) {
            free(key); /* out's earlier children are freed with out */
            free_parts(&child);
            return fail(ps, "out of memory");
        }
        ws(ps);
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p == (obj ? '}' : ']')) {
            ps->p++;
            return true;
        }
        return fail(ps, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static bool parse_value(parser *ps, kb_json *out) {
    if (++ps->depth > 64) return fail(ps, "nested too deep");
    ws(ps);
    bool ok;
    const char *p = ps->p;
    if (*p == '{' || *p == '[') ok = parse_container(ps, out, *p == '{');
    else if (*p == '"') out->type = J_STR, ok = parse_string(ps, &out->str);
    else if (strncmp(p, "true", 4) == 0) out->type = J_BOOL, out->num = 1, ps->p += 4, ok = true;
    else if (strncmp(p, "false", 5) == 0) out->type = J_BOOL, out->num = 0, ps->p += 5, ok = true;
    else if (strncmp(p, "null", 4) == 0) out->type = J_NULL, ps->p += 4, ok = true;
    else {
        char *end;
        out->type = J_NUM;
        out->num = strtod(p, &end);
        ok = end != p ? (ps->p = end, true) : fail(ps, "unexpected character");
    }
    ps->depth--;
    return ok;
}

static void free_parts(kb_json *j) {
    for (int i = 0; i < j->n; i++) {
        free_parts(&j->v[i]);
        if (j->keys) free(j->keys[i]);
    }
    free(j->v);
    free(j->keys);
    free(j->str);
}

void kb_json_free(kb_json *j) {
    if (!j) return;
    free_parts(j);
    free(j);
}

kb_json *kb_json_parse_file(const char *path, char *err, size_t errn) {
    err[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errn, "cannot open %s", path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 == cap) {
            char *t = realloc(buf, cap *= 2);
            if (!t) {
                free(buf);
                buf = NULL;
            } else {
                buf = t;
            }
        }
    }
    fclose(f);
    if (!buf) {
        snprintf(err, errn, "out of memory reading %s", path);
        return NULL;
    }
    buf[n] = '\0';
    if (n == 0) {
        free(buf);
        snprintf(err, errn, "%s is empty", path);
        return NULL;
    }
    kb_json *j = calloc(1, sizeof *j);
    parser ps = {buf, buf, err, errn, 0};
    if (!j || !parse_value(&ps, j)) {
        char inner[256];
        snprintf(inner, sizeof inner, "%s", err[0] ? err : "out of memory");
        snprintf(err, errn, "%s: not valid JSON: %s", path, inner);
        kb_json_free(j);
        free(buf);
        return NULL;
    }
    free(buf);
    return j;
}

const kb_json *kb_json_get(const kb_json *obj, const char *key) {
    if (!obj || obj->type != J_OBJ) return NULL;
    for (int i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->v[i];
    return NULL;
}

int kb_json_len(const kb_json *arr) { return arr && arr->type == J_ARR ? arr->n : 0; }
const kb_json *kb_json_at(const kb_json *arr, int i) { return arr && arr->type == J_ARR && i < arr->n ? &arr->v[i] : NULL; }
const char *kb_json_str(const kb_json *j, const char *def) { return j && j->type == J_STR ? j->str : def; }
double kb_json_num(const kb_json *j, double def) { return j && j->type == J_NUM ? j->num : def; }
int kb_json_bool(const kb_json *j, int def) { return j && j->type == J_BOOL ? (int)j->num : def; }

/* ---- a kbench JSON file back into a report ---- */

static kb_status status_from(const char *s) {
    static const kb_status all[] = {KB_ROW_OK, KB_ROW_FAIL, KB_ROW_UNSUPPORTED, KB_ROW_ERROR, KB_ROW_SKIPPED};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(s, kb_status_word(all[i])) == 0) return all[i];
    return KB_ROW_ERROR;
}

static void load_row(const kb_json *j, kb_row *w) {
    memset(w, 0, sizeof *w);
    kp_op op = KP_OP_COUNT;
    kb_op_from_name(kb_json_str(kb_json_get(j, "op"), ""), &op);
    w->c.op = op;
    const char *dt = kb_json_str(kb_json_get(j, "dtype"), "");
    w->c.dtype = w->c.wdtype = strcmp(dt, "f32") == 0 ? KP_F32 : strcmp(dt, "f16") == 0 ? KP_F16 : KP_BF16;
    if (strcmp(dt, "fp8") == 0) w->c.wdtype = KP_FP8_E4M3;
    w->c.variant = "";
    snprintf(w->c.shape, sizeof w->c.shape, "%s", kb_json_str(kb_json_get(j, "shape"), ""));
    snprintf(w->c.note, sizeof w->c.note, "%s", kb_json_str(kb_json_get(j, "note"), ""));
    snprintf(w->backend, sizeof w->backend, "%s", kb_json_str(kb_json_get(j, "backend"), ""));
    snprintf(w->device, sizeof w->device, "%s", kb_json_str(kb_json_get(j, "device"), ""));
    snprintf(w->reason, sizeof w->reason, "%s", kb_json_str(kb_json_get(j, "reason"), ""));
    w->status = status_from(kb_json_str(kb_json_get(j, "status"), "error"));
    w->median_ms = kb_json_num(kb_json_get(j, "median_ms"), NAN);
    w->p10_ms = kb_json_num(kb_json_get(j, "p10_ms"), NAN);
    w->p90_ms = kb_json_num(kb_json_get(j, "p90_ms"), NAN);
    w->min_ms = kb_json_num(kb_json_get(j, "min_ms"), NAN);
    w->max_ms = kb_json_num(kb_json_get(j, "max_ms"), NAN);
    w->tflops = kb_json_num(kb_json_get(j, "tflops"), 0);
    w->gbps = kb_json_num(kb_json_get(j, "gbps"), 0);
    w->roofline_pct = kb_json_num(kb_json_get(j, "roofline_pct"), -1);
    w->bound = strcmp(kb_json_str(kb_json_get(j, "bound"), ""), "compute") == 0 ? "compute" : "memory";
    w->flops = kb_json_num(kb_json_get(j, "flops"), 0);
    w->bytes = kb_json_num(kb_json_get(j, "bytes"), 0);
    w->err = kb_json_num(kb_json_get(j, "rel_err"), NAN);
    w->tol = kb_json_num(kb_json_get(j, "tol"), NAN);
    w->inner = (int)kb_json_num(kb_json_get(j, "runs_per_sample"), 0);
    const char *timer = kb_json_str(kb_json_get(j, "timer"), "host");
    w->device_timed = strcmp(timer, "events") == 0;
    const kb_json *s = kb_json_get(j, "samples");
    int n = kb_json_len(s);
    if (n > 0 && (w->samples = malloc((size_t)n * sizeof *w->samples)))
        for (int i = 0; i < n; i++) w->samples[w->nsamples++] = kb_json_num(kb_json_at(s, i), NAN);
}

int kb_report_load(const char *path, kb_report *r, kb_json **keep, char *err, size_t errn) {
    memset(r, 0, sizeof *r);
    kb_json *j = *keep = kb_json_parse_file(path, err, errn);
    if (!j) return -1;
    if (!kb_json_get(j, "rows")) {
        snprintf(err, errn, "%s: no \"rows\": not a kbench JSON file", path);
        return -1;
    }
    r->version = kb_json_str(kb_json_get(j, "kport_version"), "unknown");
    r->commit = kb_json_str(kb_json_get(j, "git_commit"), "unknown");
    r->date = kb_json_str(kb_json_get(j, "date"), "unknown");
    r->suite = kb_json_str(kb_json_get(j, "suite"), "");
    r->wall_s = kb_json_num(kb_json_get(j, "wall_s"), 0);
    const kb_json *m = kb_json_get(j, "machine");
    snprintf(r->hostname, sizeof r->hostname, "%s", kb_json_str(kb_json_get(m, "hostname"), "unknown"));
    snprintf(r->cpu_model, sizeof r->cpu_model, "%s", kb_json_str(kb_json_get(m, "cpu_model"), "unknown"));
    r->cores = (int)kb_json_num(kb_json_get(m, "cores"), 0);
    r->loadavg = kb_json_num(kb_json_get(m, "load_avg_1m"), -1.0);
    const kb_json *roofs = kb_json_get(j, "rooflines"), *rows = kb_json_get(j, "rows");
    r->roofs = calloc((size_t)kb_json_len(roofs) + 1, sizeof *r->roofs);
    r->rows = calloc((size_t)kb_json_len(rows) + 1, sizeof *r->rows);
    if (!r->roofs || !r->rows) {
        snprintf(err, errn, "out of memory loading %s", path);
        return -1;
    }
    for (int i = 0; i < kb_json_len(roofs); i++) {
        const kb_json *f = kb_json_at(roofs, i);
        kb_roofline *o = &r->roofs[r->nroofs++];
        snprintf(o->backend, sizeof o->backend, "%s", kb_json_str(kb_json_get(f, "backend"), ""));
        snprintf(o->device, sizeof o->device, "%s", kb_json_str(kb_json_get(f, "device"), ""));
        o->mem_gbps = kb_json_num(kb_json_get(f, "memory_gbps"), 0);
        snprintf(o->mem_method, sizeof o->mem_method, "%s", kb_json_str(kb_json_get(f, "memory_method"), ""));
        o->peak_tflops = kb_json_num(kb_json_get(f, "compute_tflops"), 0);
        snprintf(o->peak_method, sizeof o->peak_method, "%s", kb_json_str(kb_json_get(f, "compute_method"), ""));
    }
    for (int i = 0; i < kb_json_len(rows); i++) load_row(kb_json_at(rows, i), &r->rows[r->nrows++]);
    return 0;
}
