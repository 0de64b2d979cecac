/*
 * tests/test_kbench.c — kbench as a user runs it: every output format, --compare,
 * --plot and --tune on a tiny space. Timings are not judged here (kbench is the
 * benchmark; tests never time); the structure and the correctness flags are.
 */
#include "kp_test.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef KPORT_KBENCH_PATH
#error "KPORT_KBENCH_PATH must name the built kbench"
#endif

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    CHECK(s && fread(s, 1, (size_t)n, f) == (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

/* Runs kbench on the cpu backend with the given arguments; returns its exit code and
 * leaves stdout in <dir>/stdout. */
static int kbench(const char *dir, const char *args) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd %s && KPORT_BACKEND=cpu %s --quiet %s > stdout 2> stderr", dir, KPORT_KBENCH_PATH,
             args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *temp_dir(void) {
    char tmpl[] = "/tmp/kport-kbench-XXXXXX";
    CHECK(mkdtemp(tmpl) != NULL);
    return strdup(tmpl);
}

static void check_contains_all(const char *text, const char *const *needles, size_t n) {
    for (size_t i = 0; i < n; i++) CHECK_STR_CONTAINS(text, needles[i]);
}

/* A tiny, fast run: two ops, one sample each. */
#define TINY "--suite quick --op moe_gate,moe_combine --repeat 1 --min-time 0 --max-time 0.05"

KP_TEST(kbench_json_has_every_documented_field) {
    char *dir = temp_dir();
    CHECK_INT_EQ(kbench(dir, TINY " --format json --out run.json"), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/run.json", dir);
    char *json = slurp(path);
    static const char *const fields[] = {"\"op\"", "\"backend\"", "\"device\"", "\"dtype\"", "\"shape\"",
                                         "\"median_ms\"", "\"tflops\"", "\"gbps\"", "\"roofline_pct\"", "\"bound\"",
                                         "\"ok\"", "\"samples\"", "\"git_commit\"", "\"machine\"", "\"rooflines\"",
                                         "\"moe_gate\"", "\"moe_combine\""};
    check_contains_all(json, fields, sizeof fields / sizeof fields[0]);
    CHECK(strstr(json, "\"ok\": false") == NULL); /* every row passed its float64 check */
    free(json);
    free(dir);
}

KP_TEST(kbench_markdown_and_csv) {
    char *dir = temp_dir();
    CHECK_INT_EQ(kbench(dir, TINY), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/stdout", dir);
    char *md = slurp(path);
    static const char *const md_parts[] = {"| op |", "moe_gate", "moe_combine", "% roofline", "Rooflines"};
    check_contains_all(md, md_parts, sizeof md_parts / sizeof md_parts[0]);
    free(md);
    CHECK_INT_EQ(kbench(dir, TINY " --format csv"), 0);
    char *csv = slurp(path);
    CHECK(strncmp(csv, "op,", 3) == 0); /* a header row first */
    CHECK_STR_CONTAINS(csv, "moe_combine,");
    free(csv);
    free(dir);
}

KP_TEST(kbench_compare_and_plot) {
    char *dir = temp_dir();
    CHECK_INT_EQ(kbench(dir, TINY " --format json --out a.json"), 0);
    CHECK_INT_EQ(kbench(dir, TINY " --format json --out b.json --seed 2"), 0);
    CHECK_INT_EQ(kbench(dir, "--compare a.json b.json"), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/stdout", dir);
    char *cmp = slurp(path);
    CHECK_STR_CONTAINS(cmp, "moe_gate");
    CHECK_STR_CONTAINS(cmp, "moe_combine");
    free(cmp);
    CHECK_INT_EQ(kbench(dir, "--from a.json --plot chart.svg"), 0);
    snprintf(path, sizeof path, "%s/chart.svg", dir);
    char *svg = slurp(path);
    CHECK_STR_CONTAINS(svg, "<svg");
    CHECK_STR_CONTAINS(svg, "moe_gate");
    CHECK_STR_CONTAINS(svg, "</svg>");
    free(svg);
    CHECK(kbench(dir, "--compare a.json missing.json") != 0); /* a clear failure, not a crash */
    free(dir);
}

KP_TEST(kbench_tune_writes_the_tuning_file) {
    char *dir = temp_dir();
    char args[1024], path[512];
    snprintf(path, sizeof path, "%s/tuning.txt", dir);
    /* a tiny space: one CPU parameter, two candidates, timed on moe_combine */
    snprintf(args, sizeof args, "--tune --tune-param cpu.parallel_grain=1,2@moe_combine --repeat 1 --min-time 0");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd %s && KPORT_TUNING_FILE=%s KPORT_BACKEND=cpu %s --quiet %s > stdout 2> stderr", dir,
             path, KPORT_KBENCH_PATH, args);
    int st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char *tuning = slurp(path);
    CHECK_STR_CONTAINS(tuning, ";cpu;parallel_grain;"); /* vendor;arch;device;kernel;param;value */
    free(tuning);
    free(dir);
}
