/*
 * tests/runner.c — runs every test of tests/test_list.h, each in its own child
 * process with a timeout, and ends with `N passed, N failed, N skipped`.
 *
 *   kport-tests [--list] [--no-fork] [--timeout S] [--seeds N] [--first-run K] [--jobs N]
 *               [--exclude PATTERN]... [PATTERN...]
 *
 * PATTERN selects tests whose name contains it; --exclude drops those whose name
 * contains its pattern (neither run nor counted). Conformance tests run N times
 * (--seeds, or KPORT_TEST_SEEDS; default 1), each run on fresh random inputs, and a
 * failure prints its seed; KPORT_TEST_SEED=S reruns exactly that one. --first-run K (or
 * KPORT_TEST_FIRST_RUN) numbers the runs from K, so that two suites run on one seed
 * each can still see different inputs (ci/test: the release run takes run 0, the
 * sanitizer run run 1).
 * KPORT_REQUIRE_BACKENDS=cuda,opencl turns "backend missing" skips into failures, and
 * KPORT_REQUIRE_OPS=cuda,opencl (or all) does the same for cases a backend declines.
 * --jobs N (or KPORT_TEST_JOBS) runs up to N conformance tests (conf_*) and tests marked
 * XP (test_list.h) at once, each one's output held back and printed whole when it ends;
 * every other test runs alone, so that the ones that watch timing, the heap or a
 * runtime's bookkeeping see no neighbour of the suite's own.
 */
#include "kp_test.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define X(name) KP_TEST(name);
#include "test_list.h"
#undef X

typedef struct kp_test_case {
    const char *name;
    void (*fn)(void);
    int seeded; /* on random inputs: repeated with --seeds */
    int shares; /* may run beside others under --jobs (XP; conformance tests always may) */
} kp_test_case;

static const kp_test_case tests[] = {
#define X(name) {#name, kp_test_##name, 0, 0},
#define XC(name) {#name, kp_test_##name, 1, 0},
#define XP(name) {#name, kp_test_##name, 0, 1},
#include "test_list.h"
#undef X
};

enum { EXIT_PASS = 0, EXIT_FAIL = 1, EXIT_SKIP = 77 };

static const char *current_test = "";
static int current_run;
static int first_run; /* --first-run: the number of each test's first run */
static int no_fork;
static int skip_seen; /* --no-fork: a skip returns through longjmp-free exit codes */

void kp_test_skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("SKIP %s: ", current_test);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    skip_seen = 1;
    exit(EXIT_SKIP);
}

void kp_test_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("  %s:%d: ", file, line);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    exit(EXIT_FAIL);
}

const char *kp_test_current_name(void) { return current_test; }
int kp_test_current_run(void) { return current_run; }

static int matches(const char *name, int npat, char **pats, int nexcl, char **excl) {
    for (int i = 0; i < nexcl; i++)
        if (strstr(name, excl[i])) return 0;
    if (npat == 0) return 1;
    for (int i = 0; i < npat; i++)
        if (strstr(name, pats[i])) return 1;
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Runs one test in a child; returns EXIT_PASS/FAIL/SKIP. */
static int run_one(const kp_test_case *t, int timeout_s) {
    current_test = t->name;
    fflush(stdout);
    if (no_fork) {
        t->fn();
        return EXIT_PASS;
    }
    pid_t pid = fork();
    if (pid < 0) {
        printf("  fork failed\n");
        return EXIT_FAIL;
    }
    if (pid == 0) {
        alarm((unsigned)timeout_s);
        t->fn();
        fflush(stdout);
        _exit(EXIT_PASS);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
    }
    if (WIFEXITED(status)) {
        int code = WEXITSTATUS(status);
        return code == EXIT_PASS || code == EXIT_SKIP ? code : EXIT_FAIL;
    }
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        if (sig == SIGALRM) printf("  timed out after %d s\n", timeout_s);
        else printf("  killed by signal %d (%s)\n", sig, strsignal(sig));
    }
    return EXIT_FAIL;
}

static int run_test(const kp_test_case *t, int runs, int timeout_s) {
    int r = EXIT_PASS;
    for (current_run = first_run; current_run < first_run + runs && r == EXIT_PASS; current_run++) r = run_one(t, timeout_s);
    return r;
}

static void report(const kp_test_case *t, int r, double dt, int runs, int *passed, int *failed, int *skipped) {
    char extra[32] = "";
    if (runs > 1) snprintf(extra, sizeof extra, ", %d runs", runs);
    if (r == EXIT_PASS) {
        (*passed)++;
        printf("PASS %s (%.2f s%s)\n", t->name, dt, extra);
    } else if (r == EXIT_SKIP) {
        (*skipped)++;
    } else {
        (*failed)++;
        printf("FAIL %s (%.2f s%s)\n", t->name, dt,
               t->seeded ? "; rerun with KPORT_TEST_SEED as printed in its path line" : "");
    }
    fflush(stdout);
}

/* --jobs: one test (all its runs) in a child whose stdout and stderr go to a file. */
enum { MAX_JOBS = 16 };
typedef struct job {
    pid_t pid;
    size_t test;
    int runs;
    FILE *out;
    double start;
} job;

static int start_job(job *j, size_t i, int runs, int timeout_s) {
    fflush(stdout);
    fflush(stderr);
    j->out = tmpfile();
    if (!j->out) return -1;
    j->test = i, j->runs = runs, j->start = now_s();
    j->pid = fork();
    if (j->pid < 0) {
        fclose(j->out);
        return -1;
    }
    if (j->pid == 0) {
        if (dup2(fileno(j->out), STDOUT_FILENO) < 0 || dup2(fileno(j->out), STDERR_FILENO) < 0) _exit(EXIT_FAIL);
        int r = run_test(&tests[i], runs, timeout_s);
        fflush(NULL);
        _exit(r);
    }
    return 0;
}

/* Waits for any job to end, prints its output and result; returns the jobs left. */
static int reap_job(job *pool, int active, int *passed, int *failed, int *skipped) {
    int status = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, 0)) < 0)
        if (errno == ECHILD) { /* cannot happen with jobs running: count them failed rather than spin */
            for (int k = 0; k < active; k++) {
                fclose(pool[k].out);
                report(&tests[pool[k].test], EXIT_FAIL, now_s() - pool[k].start, pool[k].runs, passed, failed, skipped);
            }
            return 0;
        }
    int k = 0;
    while (k < active && pool[k].pid != pid) k++;
    if (k == active) return active; /* not a job of ours */
    job j = pool[k];
    pool[k] = pool[active - 1];
    int r = WIFEXITED(status) ? WEXITSTATUS(status) : EXIT_FAIL;
    if (r != EXIT_PASS && r != EXIT_SKIP) r = EXIT_FAIL;
    char buf[4096];
    size_t got;
    rewind(j.out);
    while ((got = fread(buf, 1, sizeof buf, j.out)) > 0) fwrite(buf, 1, got, stdout);
    fclose(j.out);
    report(&tests[j.test], r, now_s() - j.start, j.runs, passed, failed, skipped);
    return active - 1;
}

int main(int argc, char **argv) {
    int timeout_s = 300, list = 0, npat = 0, nexcl = 0, seeds = 1, jobs = 1;
    char **pats = calloc((size_t)argc, sizeof *pats), **excl = calloc((size_t)argc, sizeof *excl);
    if (!pats || !excl) {
        printf("kport-tests: out of memory\n");
        return 2;
    }
    const char *env_timeout = getenv("KPORT_TEST_TIMEOUT");
    if (env_timeout && atoi(env_timeout) > 0) timeout_s = atoi(env_timeout);
    const char *env_seeds = getenv("KPORT_TEST_SEEDS"), *env_seed = getenv("KPORT_TEST_SEED");
    if (env_seeds && atoi(env_seeds) > 0) seeds = atoi(env_seeds);
    const char *env_first = getenv("KPORT_TEST_FIRST_RUN");
    if (env_first && atoi(env_first) > 0) first_run = atoi(env_first);
    const char *env_jobs = getenv("KPORT_TEST_JOBS");
    if (env_jobs && atoi(env_jobs) > 0) jobs = atoi(env_jobs);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--list") == 0) list = 1;
        else if (strcmp(argv[i], "--no-fork") == 0) no_fork = 1;
        else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) timeout_s = atoi(argv[++i]);
        else if (strcmp(argv[i], "--seeds") == 0 && i + 1 < argc) seeds = atoi(argv[++i]) > 0 ? atoi(argv[i]) : 1;
        else if (strcmp(argv[i], "--first-run") == 0 && i + 1 < argc) first_run = atoi(argv[++i]) > 0 ? atoi(argv[i]) : 0;
        else if (strcmp(argv[i], "--jobs") == 0 && i + 1 < argc) jobs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--exclude") == 0 && i + 1 < argc) excl[nexcl++] = argv[++i];
        else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: %s [--list] [--no-fork] [--timeout S] [--seeds N] [--first-run K] [--jobs N] [--exclude PATTERN]... "
                   "[PATTERN...]\n", argv[0]);
            return 0;
        } else pats[npat++] = argv[i];
    }
    if (jobs > MAX_JOBS) jobs = MAX_JOBS;
    if (no_fork) jobs = 1;
    size_t n = sizeof tests / sizeof tests[0];
    if (list) {
        for (size_t i = 0; i < n; i++)
            if (matches(tests[i].name, npat, pats, nexcl, excl)) printf("%s\n", tests[i].name);
        return 0;
    }
    int passed = 0, failed = 0, skipped = 0;
    double t0 = now_s();
    job pool[MAX_JOBS];
    int active = 0;
    for (size_t i = 0; i < n; i++) {
        if (!matches(tests[i].name, npat, pats, nexcl, excl)) continue;
        /* a seeded test passes when every run passes; a skip (no backend) ends it */
        int runs = tests[i].seeded && !(env_seed && *env_seed) ? seeds : 1;
        if (jobs <= 1) {
            double ts = now_s();
            int r = run_test(&tests[i], runs, timeout_s);
            report(&tests[i], r, now_s() - ts, runs, &passed, &failed, &skipped);
            continue;
        }
        int alone = strncmp(tests[i].name, "conf_", 5) != 0 && !tests[i].shares;
        while (active > 0 && (alone || active >= jobs)) active = reap_job(pool, active, &passed, &failed, &skipped);
        if (start_job(&pool[active], i, runs, timeout_s) != 0) {
            printf("  could not start a child for %s\n", tests[i].name);
            report(&tests[i], EXIT_FAIL, 0.0, runs, &passed, &failed, &skipped);
            continue;
        }
        active++;
        while (alone && active > 0) active = reap_job(pool, active, &passed, &failed, &skipped);
    }
    while (active > 0) active = reap_job(pool, active, &passed, &failed, &skipped);
    printf("kport-tests: %.1f s\n", now_s() - t0);
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    free(pats);
    free(excl);
    (void)skip_seen;
    return failed ? 1 : 0;
}
