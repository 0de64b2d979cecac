/*
 * tools/kbench/kbench_tune.c — `kbench --tune`: searches kernel tuning parameters on
 * the chosen device and writes the winners to the user's tuning file, which the core
 * reads before its built-in table (core/tuning.c; DESIGN §4).
 *
 * For each (kernel, param) of the table below that applies to the device's backend,
 * and each candidate value: a temporary tuning file holds the user's lines (the winners
 * so far among them) with the candidate in place of this parameter's line;
 * KPORT_TUNING_FILE points at it; kp_shutdown + kp_init make the core read it again;
 * the op's quick case is checked against float64 and timed. The fastest correct value
 * is merged into the user's file at once, so an interrupted search keeps what it found.
 * Lines are
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
    const char *kernel, *param;
    int64_t values[MAX_VALUES];
    int nvalues;
    kp_op op; /* its quick-suite case times it */
} kb_tunable;

/* The tunables kernels read through host->tuning_get (grep tuning_get backends/),
 * as of this writing: the OpenCL backend's attention tiles (opencl_attention_common.c,
 * keyed by op name), grouped GEMM tiles (opencl_grouped_gemm.c) and the align chunk
 * (opencl_moe_common.c). The CPU backend reads none yet. An invalid combination makes
 * the kernel fall back to its defaults, which then times like the default. Add a line
 * per parameter as kernels adopt them, written as --tune-param takes it. */
static const struct {
    const char *backend, *spec;
} builtin[] = {
    {"opencl", "grouped_gemm.tile_m=32,64,128@grouped_gemm"},
    {"opencl", "grouped_gemm.tile_n=32,64,128@grouped_gemm"},
    {"opencl", "grouped_gemm.tile_k=16,32@grouped_gemm"},
    {"opencl", "attention_prefill.block_m=16,32,64@attention_prefill"},
    {"opencl", "attention_prefill.block_n=16,32,64@attention_prefill"},
    {"opencl", "attention_decode.block_n=16,32,64@attention_decode"},
    {"opencl", "mla_decode.block_n=16,32@mla_decode"},
    {"opencl", "moe_align.chunk=1024,4096,16384@moe_align"},
};

/* The user's file, resolved as core/tuning.c does. */
static void user_path(char *out, size_t n) {
    const char *env = getenv("KPORT_TUNING_FILE"), *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    if (env && *env) snprintf(out, n, "%s", env);
    else if (xdg && *xdg) snprintf(out, n, "%s/kport/tuning.txt", xdg);
    else if (home && *home) snprintf(out, n, "%s/.config/kport/tuning.txt", home);
    else snprintf(out, n, "kport-tuning.txt");
}

/* The file's text ("" when it does not exist); NULL when out of memory. */
static char *read_text(const char *path) {
    FILE *f = fopen(path, "r"), *m;
    char *text = NULL, buf[4096];
    size_t len = 0, n;
    if (!(m = open_memstream(&text, &len))) return NULL;
    while (f && (n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, m);
    if (f) fclose(f);
    return fclose(m) == 0 ? text : (free(text), NULL);
}

/* text without the line that sets key (which ends in ';'), then line (if any). */
static char *with_line(const char *text, const char *key, const char *line) {
    char *out = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&out, &len);
    if (!m) return NULL;
    for (const char *p = text; *p;) {
        size_t n = strcspn(p, "\n");
        if (strncmp(p, key, strlen(key)) != 0) fprintf(m, "%.*s\n", (int)n, p);
        p += n + (p[n] == '\n');
    }
    if (line) fprintf(m, "%s\n", line);
    return fclose(m) == 0 ? out : (free(out), NULL);
}

/* Writes text to path atomically (a header first if it has none), directories created. */
static int write_text(const char *path, const char *text, char *err, size_t errn) {
    char dir[PATH_MAX], tmp[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s", path);
    for (char *p = dir + 1; (p = strchr(p, '/')); p++) { /* ~/.config/kport may not exist yet */
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) break;
        *p = '/';
    }
    snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (f && text[0] != '#') fputs("# kport tuning table (vendor;arch;device;kernel;param;value), written by kbench --tune\n", f);
    if (!f || fputs(text, f) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
        snprintf(err, errn, "cannot write %.300s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* "kernel.param=v1,v2@op;...": the builtin table's lines and --tune-param */
static int parse_params(const char *spec, kb_tunable *out, int max, char *store, size_t storen, char *err,
                        size_t errn) {
    snprintf(store, storen, "%s", spec);
    int n = 0;
    char *save;
    for (char *t = strtok_r(store, ";", &save); t && n < max; t = strtok_r(NULL, ";", &save)) {
        char *dot = strchr(t, '.'), *eq = strchr(t, '='), *at = strchr(t, '@');
        if (!dot || !eq || !at || !(dot < eq && eq < at))
            KB_FAIL("--tune-param '%s': expected KERNEL.PARAM=V1,V2,...@OP", t);
        *dot = *eq = *at = '\0';
        kb_tunable *k = &out[n];
        *k = (kb_tunable){.kernel = t, .param = dot + 1};
        char *s2;
        for (char *v = strtok_r(eq + 1, ",", &s2); v && k->nvalues < MAX_VALUES; v = strtok_r(NULL, ",", &s2)) {
            char *end;
            long long x = strtoll(v, &end, 10);
            if (end == v || *end) KB_FAIL("--tune-param: '%s' is not an integer", v);
            k->values[k->nvalues++] = x;
        }
        if (!kb_op_from_name(at + 1, &k->op) || k->nvalues == 0)
            KB_FAIL("--tune-param: unknown op '%s' or no values", at + 1);
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
    kb_env env = {.seed = o->seed};
    kp_status st = kp_init(NULL);
    if (st == KP_OK) st = kp_device_open(device, &env.dev);
    if (st == KP_OK) st = kp_stream_create(env.dev, &env.s);
    if (st == KP_OK) st = kp_device_get_info(env.dev, &env.info);
    if (st != KP_OK) {
        snprintf(err, errn, "%s: %s", kp_status_str(st), kp_last_error());
    } else {
        kb_budget budget;
        kb_case_list cases = {0};
        char e2[256];
        const char *name = kp_op_name(op);
        if (kb_suite_cases("quick", name, o->dtype, kb_budget_for(&env.info, &budget), &cases, e2, sizeof e2) > 0)
            kb_run_case(&env, &cases.v[0], o, NULL, row);
        else
            snprintf(err, errn, "no quick case for %s", name);
        free(cases.v);
    }
    if (env.s) kp_stream_destroy(env.s);
    if (env.dev) kp_device_close(env.dev);
}

int kb_tune(const kb_options *o, int device) {
    char path[PATH_MAX], tmp[PATH_MAX + 32], err[512] = "", spec[2048] = "", store[2048], key_dev[KP_NAME_MAX];
    char *user = NULL;
    kb_tunable table[64];
    int n = 0, rc = 0;
    kp_device_info info;
    user_path(path, sizeof path);
    snprintf(tmp, sizeof tmp, "/tmp/kbench-tune-%d.txt", (int)getpid());
    if (kp_device_info_get(device, &info) != KP_OK)
        snprintf(err, sizeof err, "device %d: %s", device, kp_last_error()), rc = 1;
    for (size_t i = 0; rc == 0 && i < sizeof builtin / sizeof builtin[0]; i++) /* the backend's, then --tune-param's */
        if (strcmp(builtin[i].backend, info.backend) == 0)
            snprintf(spec + strlen(spec), sizeof spec - strlen(spec), "%s;", builtin[i].spec);
    snprintf(spec + strlen(spec), sizeof spec - strlen(spec), "%s", o->tune_params ? o->tune_params : "");
    if (rc == 0 && (n = parse_params(spec, table, 64, store, sizeof store, err, sizeof err)) < 0) rc = 2;
    if (rc == 0 && !(user = read_text(path))) snprintf(err, sizeof err, "out of memory"), rc = 1;
    if (rc != 0) {
        fprintf(stderr, "kbench: --tune: %s\n", err);
        return rc;
    }
    const char *saved = getenv("KPORT_TUNING_FILE"); /* restored at the end: candidates set it */
    char *saved_copy = saved ? strdup(saved) : NULL;
    printf("# kbench --tune on %s: %s (%s)\n\nuser tuning file: %s\n\n", info.backend, info.name, info.arch, path);
    if (n == 0)
        printf("Nothing to tune: no kernel of the %s backend reads a tuning parameter yet (the table in "
               "tools/kbench/kbench_tune.c has none for it; see docs/kbench.md). --tune-param KERNEL.PARAM=V1,V2@OP "
               "searches one by hand.\n",
               info.backend);
    else printf("| kernel | param | value | median ms | check | |\n|---|---|---|---:|---|---|\n");
    /* a name with ';' cannot be a key: fall back to the arch entry */
    snprintf(key_dev, sizeof key_dev, "%s", strchr(info.name, ';') ? "*" : info.name);
    for (int t = 0; t < n && !kb_interrupted; t++) {
        const kb_tunable *k = &table[t];
        char key[512], line[600];
        double best_ms = 0;
        int64_t best = 0;
        bool any = false;
        snprintf(key, sizeof key, "%s;%s;%s;%s;%s;", info.vendor, info.arch, key_dev, k->kernel, k->param);
        for (int v = 0; v < k->nvalues && !kb_interrupted; v++) {
            snprintf(line, sizeof line, "%s%lld", key, (long long)k->values[v]);
            char *candidate = with_line(user, key, line);
            if (!candidate || write_text(tmp, candidate, err, sizeof err) != 0) {
                fprintf(stderr, "kbench: --tune: %s\n", candidate ? err : "out of memory");
                free(candidate);
                rc = 1;
                break;
            }
            free(candidate);
            kb_row row;
            err[0] = '\0';
            fprintf(stderr, "[tune %d/%d] %s.%s = %lld ...\n", t + 1, n, k->kernel, k->param, (long long)k->values[v]);
            try_value(o, device, tmp, k->op, &row, err, sizeof err);
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
        snprintf(line, sizeof line, "%s%lld", key, (long long)best);
        char *merged = with_line(user, key, line); /* the winner joins the user's lines: later candidates keep it */
        if (merged) free(user), user = merged;
        if (!merged || write_text(path, user, err, sizeof err) != 0) {
            fprintf(stderr, "kbench: --tune: %s\n", merged ? err : "out of memory");
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
    free(user);
    free(saved_copy);
    if (kb_interrupted) printf("\ninterrupted: the values above marked written are kept\n");
    return rc;
}
