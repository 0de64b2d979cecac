/*
 * tools/kbench/kbench_tune.c — `kbench --tune`: searches kernel tuning parameters on
 * the chosen device and writes the winners to the user's tuning file, which the core
 * reads before its built-in table (core/tuning.c; DESIGN §4).
 *
 * For each (kernel, param) of the table below that applies to the device's backend,
 * and each candidate value: a temporary tuning file holds the user's lines, the
 * winners so far and the candidate; KPORT_TUNING_FILE points at it; kp_shutdown +
 * kp_init make the core read it again; the op's quick case is checked against float64
 * and timed. The fastest correct value is merged into the user's file at once, so an
 * interrupted search keeps what it found. Lines are
 *     vendor;arch;device;kernel;param;value
 * keyed on this exact device (the most specific entry of the fallback chain).
 */
#include "kbench.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_VALUES 16

typedef struct kb_tunable {
    const char *backend; /* "cpu", "opencl", ... or "*" */
    const char *kernel, *param;
    int64_t values[MAX_VALUES];
    int nvalues;
    const char *op; /* its quick-suite case times it */
} kb_tunable;

/* The tunables kernels read through host->tuning_get (grep tuning_get backends/),
 * as of this writing: the OpenCL backend's attention tiles (opencl_attention_common.c,
 * keyed by op name), grouped GEMM tiles (opencl_grouped_gemm.c) and the align chunk
 * (opencl_moe_common.c). The CPU backend reads none yet. An invalid combination makes
 * the kernel fall back to its defaults, which then times like the default. Add a line
 * per parameter as kernels adopt them; the list ends at the NULL entry. */
static const kb_tunable builtin[] = {
    {"opencl", "grouped_gemm", "tile_m", {32, 64, 128}, 3, "grouped_gemm"},
    {"opencl", "grouped_gemm", "tile_n", {32, 64, 128}, 3, "grouped_gemm"},
    {"opencl", "grouped_gemm", "tile_k", {16, 32}, 2, "grouped_gemm"},
    {"opencl", "attention_prefill", "block_m", {16, 32, 64}, 3, "attention_prefill"},
    {"opencl", "attention_prefill", "block_n", {16, 32, 64}, 3, "attention_prefill"},
    {"opencl", "attention_decode", "block_n", {16, 32, 64}, 3, "attention_decode"},
    {"opencl", "mla_decode", "block_n", {16, 32}, 2, "mla_decode"},
    {"opencl", "moe_align", "chunk", {1024, 4096, 16384}, 3, "moe_align"},
    {NULL, NULL, NULL, {0}, 0, NULL},
};

/* The user's file, resolved as core/tuning.c does. */
static void user_path(char *out, size_t n) {
    const char *env = getenv("KPORT_TUNING_FILE"), *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    if (env && *env) snprintf(out, n, "%s", env);
    else if (xdg && *xdg) snprintf(out, n, "%s/kport/tuning.txt", xdg);
    else if (home && *home) snprintf(out, n, "%s/.config/kport/tuning.txt", home);
    else snprintf(out, n, "kport-tuning.txt");
}

typedef struct lines {
    char **v;
    int n;
} lines;

static void lines_free(lines *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL, l->n = 0;
}

static int lines_add(lines *l, const char *s) {
    char **v = realloc(l->v, (size_t)(l->n + 1) * sizeof *v);
    if (!v) return -1;
    l->v = v;
    if (!(l->v[l->n] = strdup(s))) return -1;
    l->n++;
    return 0;
}

static void lines_read(const char *path, lines *l) {
    FILE *f = fopen(path, "r");
    char buf[1024];
    while (f && fgets(buf, sizeof buf, f)) {
        buf[strcspn(buf, "\r\n")] = '\0';
        lines_add(l, buf);
    }
    if (f) fclose(f);
}

/* Does line set the same vendor;arch;device;kernel;param as key (which ends in ';')? */
static bool same_key(const char *line, const char *key) { return strncmp(line, key, strlen(key)) == 0; }

/* Replaces key's line (or appends) and writes the file atomically. */
static int write_merged(const char *path, lines *l, const char *key, int64_t value, char *err, size_t errn) {
    char line[1024];
    snprintf(line, sizeof line, "%s%lld", key, (long long)value);
    int at = -1;
    for (int i = 0; i < l->n && at < 0; i++)
        if (same_key(l->v[i], key)) at = i;
    if (at >= 0) {
        char *s = strdup(line);
        if (!s) return -1;
        free(l->v[at]);
        l->v[at] = s;
    } else if (lines_add(l, line) != 0) {
        return -1;
    }
    /* the directory may not exist yet (~/.config/kport) */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    for (char *p = dir + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) break;
        *p = '/';
    }
    char tmp[PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        snprintf(err, errn, "cannot write %.300s: %s", tmp, strerror(errno));
        return -1;
    }
    bool header = l->n == 0 || strncmp(l->v[0], "#", 1) != 0;
    if (header) fputs("# kport tuning table (vendor;arch;device;kernel;param;value), written by kbench --tune\n", f);
    for (int i = 0; i < l->n; i++) fprintf(f, "%s\n", l->v[i]);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        snprintf(err, errn, "cannot write %.300s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* "kernel.param=v1,v2@op;..." from --tune-param */
static int parse_params(const char *spec, kb_tunable *out, int max, char *store, size_t storen, char *err,
                        size_t errn) {
    snprintf(store, storen, "%s", spec);
    int n = 0;
    char *save;
    for (char *t = strtok_r(store, ";", &save); t && n < max; t = strtok_r(NULL, ";", &save)) {
        char *dot = strchr(t, '.'), *eq = strchr(t, '='), *at = strchr(t, '@');
        if (!dot || !eq || !at || !(dot < eq && eq < at)) {
            snprintf(err, errn, "--tune-param '%s': expected KERNEL.PARAM=V1,V2,...@OP", t);
            return -1;
        }
        *dot = *eq = *at = '\0';
        kb_tunable *k = &out[n];
        memset(k, 0, sizeof *k);
        k->backend = "*", k->kernel = t, k->param = dot + 1, k->op = at + 1;
        char *vs = eq + 1, *s2;
        for (char *v = strtok_r(vs, ",", &s2); v && k->nvalues < MAX_VALUES; v = strtok_r(NULL, ",", &s2)) {
            char *end;
            long long x = strtoll(v, &end, 10);
            if (end == v || *end) {
                snprintf(err, errn, "--tune-param: '%s' is not an integer", v);
                return -1;
            }
            k->values[k->nvalues++] = x;
        }
        kp_op op;
        if (!kb_op_from_name(k->op, &op) || k->nvalues == 0) {
            snprintf(err, errn, "--tune-param: unknown op '%s' or no values", k->op);
            return -1;
        }
        n++;
    }
    return n;
}

/* One candidate: fresh kport reading `file`, the op's quick case, checked and timed. */
static void try_value(const kb_options *o, int device, const char *file, kp_op op, kb_row *row, char *err,
                      size_t errn) {
    memset(row, 0, sizeof *row);
    row->status = KB_ROW_ERROR;
    setenv("KPORT_TUNING_FILE", file, 1);
    kp_shutdown(); /* resets the tuning table; the next kp_init reads the file again */
    kp_device *dev = NULL;
    kp_stream *s = NULL;
    kp_status st = kp_init(NULL);
    if (st == KP_OK) st = kp_device_open(device, &dev);
    if (st == KP_OK) st = kp_stream_create(dev, &s);
    kb_env env = {.dev = dev, .s = s, .seed = o->seed};
    if (st == KP_OK) st = kp_device_get_info(dev, &env.info);
    if (st != KP_OK) {
        snprintf(err, errn, "%s: %s", kp_status_str(st), kp_last_error());
    } else {
        kb_budget budget;
        kb_case_list cases = {0};
        char e2[256];
        const char *name = kp_op_name(op);
        if (kb_suite_cases("quick", name, o->dtype, kb_budget_for(&env.info, &budget), &cases, e2, sizeof e2) > 0) {
            kb_run_case(&env, &cases.v[0], o, NULL, row);
        } else {
            snprintf(err, errn, "no quick case for %s", name);
        }
        free(cases.v);
    }
    if (s) kp_stream_destroy(s);
    if (dev) kp_device_close(dev);
}

int kb_tune(const kb_options *o, int device) {
    char path[PATH_MAX], tmp[PATH_MAX + 32], err[512] = "";
    const char *saved = getenv("KPORT_TUNING_FILE");
    char *saved_copy = saved ? strdup(saved) : NULL;
    user_path(path, sizeof path);
    snprintf(tmp, sizeof tmp, "/tmp/kbench-tune-%d.txt", (int)getpid());
    kb_tunable table[64], extra[32];
    char store[2048];
    int n = 0;
    kp_device_info info;
    if (kp_device_info_get(device, &info) != KP_OK) {
        fprintf(stderr, "kbench: --tune: device %d: %s\n", device, kp_last_error());
        free(saved_copy);
        return 1;
    }
    for (size_t i = 0; builtin[i].kernel && n < 64; i++)
        if (strcmp(builtin[i].backend, "*") == 0 || strcmp(builtin[i].backend, info.backend) == 0) table[n++] = builtin[i];
    if (o->tune_params) {
        int m = parse_params(o->tune_params, extra, 32, store, sizeof store, err, sizeof err);
        if (m < 0) {
            fprintf(stderr, "kbench: %s\n", err);
            free(saved_copy);
            return 2;
        }
        for (int i = 0; i < m && n < 64; i++) table[n++] = extra[i];
    }
    printf("# kbench --tune on %s: %s (%s)\n\nuser tuning file: %s\n\n", info.backend, info.name, info.arch, path);
    if (n == 0) {
        printf("Nothing to tune: no kernel of the %s backend reads a tuning parameter yet (the table in "
               "tools/kbench/kbench_tune.c has none for it; see docs/kbench.md). --tune-param KERNEL.PARAM=V1,V2@OP "
               "searches one by hand.\n",
               info.backend);
        free(saved_copy);
        return 0;
    }
    /* a name with ';' cannot be a key: fall back to the arch entry */
    char key_dev[KP_NAME_MAX];
    snprintf(key_dev, sizeof key_dev, "%s", strchr(info.name, ';') ? "*" : info.name);
    printf("| kernel | param | value | median ms | check | |\n|---|---|---|---:|---|---|\n");
    lines user = {0}, found = {0};
    lines_read(path, &user);
    int rc = 0;
    for (int t = 0; t < n && !kb_interrupted; t++) {
        const kb_tunable *k = &table[t];
        kp_op op;
        kb_op_from_name(k->op, &op);
        char key[512];
        snprintf(key, sizeof key, "%s;%s;%s;%s;%s;", info.vendor, info.arch, key_dev, k->kernel, k->param);
        double best_ms = 0;
        int64_t best = 0;
        bool any = false;
        for (int v = 0; v < k->nvalues && !kb_interrupted; v++) {
            /* the candidate file: user lines minus this key, winners so far, the candidate */
            FILE *f = fopen(tmp, "w");
            if (!f) {
                fprintf(stderr, "kbench: --tune: cannot write %s\n", tmp);
                rc = 1;
                break;
            }
            for (int i = 0; i < user.n; i++)
                if (!same_key(user.v[i], key)) fprintf(f, "%s\n", user.v[i]);
            for (int i = 0; i < found.n; i++) fprintf(f, "%s\n", found.v[i]);
            fprintf(f, "%s%lld\n", key, (long long)k->values[v]);
            fclose(f);
            kb_row row;
            err[0] = '\0';
            fprintf(stderr, "[tune %d/%d] %s.%s = %lld ...\n", t + 1, n, k->kernel, k->param, (long long)k->values[v]);
            try_value(o, device, tmp, op, &row, err, sizeof err);
            bool ok = row.status == KB_ROW_OK;
            printf("| %s | %s | %lld |", k->kernel, k->param, (long long)k->values[v]);
            if (ok) printf(" %.4g | ok | |\n", row.median_ms);
            else printf(" - | %s | %s |\n", kb_status_word(row.status), err[0] ? err : row.reason);
            fflush(stdout);
            if (ok && (!any || row.median_ms < best_ms)) best_ms = row.median_ms, best = k->values[v], any = true;
            kb_row_free(&row);
        }
        if (!any) {
            printf("| %s | %s | (none correct) | | | kept as it was |\n", k->kernel, k->param);
            continue;
        }
        char line[600];
        snprintf(line, sizeof line, "%s%lld", key, (long long)best);
        lines_add(&found, line);
        if (write_merged(path, &user, key, best, err, sizeof err) != 0) {
            fprintf(stderr, "kbench: --tune: %s\n", err);
            rc = 1;
        } else {
            printf("| %s | %s | **%lld** | %.4g | ok | written to %s |\n", k->kernel, k->param, (long long)best, best_ms,
                   path);
        }
        fflush(stdout);
    }
    unlink(tmp);
    if (saved_copy) setenv("KPORT_TUNING_FILE", saved_copy, 1);
    else unsetenv("KPORT_TUNING_FILE");
    kp_shutdown();
    kp_init(NULL); /* leave kport as the caller had it, reading the user's file */
    lines_free(&user);
    lines_free(&found);
    free(saved_copy);
    if (kb_interrupted) printf("\ninterrupted: the values above marked written are kept\n");
    return rc;
}
