/*
 * tests/kp_test_util.c — helpers the tests share: init, backend selection with
 * skip-or-fail, guarded buffers, snapshots and seeded random numbers.
 */
#include "kp_test.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/wait.h>

const char *kp_test_current_name(void);
int kp_test_current_run(void);

void kp_test_init(void) {
    kp_status st = kp_init(NULL);
    if (st != KP_OK) kp_test_fail(__FILE__, __LINE__, "kp_init: %s: %s", kp_status_str(st), kp_last_error());
}

/* Whether the comma-separated list names `name`. */
static int name_listed(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, name, n) == 0) return 1;
        p += len;
        if (*p == ',') p++;
    }
    return 0;
}

static int backend_listed(const char *var, const char *name) {
    const char *req = getenv(var);
    return req && name_listed(req, name);
}

kp_device *kp_test_open_backend(const char *backend) {
    kp_test_init();
    char reason[KP_REASON_MAX + 64];
    snprintf(reason, sizeof reason, "backend %s is not built", backend);
    for (int i = 0; i < kp_backend_count(); i++) {
        kp_backend_info b;
        if (kp_backend_info_get(i, &b) != KP_OK || strcmp(b.name, backend) != 0) continue;
        snprintf(reason, sizeof reason, "%s: %s", backend, b.available ? "no device" : b.reason);
        for (int dindex = 0; dindex < kp_device_count(); dindex++) {
            kp_device_info d;
            if (kp_device_info_get(dindex, &d) != KP_OK || d.backend_index != i) continue;
            kp_device *dev = NULL;
            kp_status st = kp_device_open(dindex, &dev);
            if (st != KP_OK)
                kp_test_fail(__FILE__, __LINE__, "opening %s device %d: %s: %s", backend, dindex,
                             kp_status_str(st), kp_last_error());
            return dev;
        }
    }
    if (backend_listed("KPORT_REQUIRE_BACKENDS", backend))
        kp_test_fail(__FILE__, __LINE__, "KPORT_REQUIRE_BACKENDS names %s, but %s", backend, reason);
    kp_test_skip("%s", reason);
}

static unsigned char guard_byte(size_t i) { return (unsigned char)(0xA5u ^ (i * 31u)); }

kp_guarded kp_guarded_alloc(kp_device *d, size_t bytes) {
    kp_guarded g = {NULL, bytes, KP_GUARD_BYTES};
    size_t total = bytes + 2 * KP_GUARD_BYTES;
    CHECK_OK(kp_buffer_alloc(d, total, &g.buf));
    unsigned char *init = malloc(total);
    CHECK(init != NULL);
    for (size_t i = 0; i < total; i++) init[i] = guard_byte(i);
    CHECK_OK(kp_buffer_write(NULL, g.buf, 0, init, total));
    free(init);
    return g;
}

void kp_guarded_poison(kp_guarded *g, unsigned char byte) {
    unsigned char *p = malloc(g->bytes ? g->bytes : 1);
    CHECK(p != NULL);
    memset(p, byte, g->bytes);
    CHECK_OK(kp_buffer_write(NULL, g->buf, g->offset, p, g->bytes));
    free(p);
}

void kp_guarded_write(kp_guarded *g, const void *src, size_t bytes) {
    CHECK(bytes <= g->bytes);
    CHECK_OK(kp_buffer_write(NULL, g->buf, g->offset, src, bytes));
}

void kp_guarded_read(kp_guarded *g, void *dst, size_t bytes) {
    CHECK(bytes <= g->bytes);
    CHECK_OK(kp_buffer_read(NULL, g->buf, g->offset, dst, bytes));
}

void kp_guarded_check_at(kp_guarded *g, const char *what, const char *file, int line) {
    size_t total = g->bytes + 2 * KP_GUARD_BYTES;
    unsigned char *p = malloc(total);
    CHECK(p != NULL);
    CHECK_OK(kp_buffer_read(NULL, g->buf, 0, p, total));
    for (size_t i = 0; i < total; i++) {
        if (i == KP_GUARD_BYTES) i += g->bytes;
        if (i < total && p[i] != guard_byte(i)) {
            long off = i < KP_GUARD_BYTES ? (long)i - KP_GUARD_BYTES : (long)(i - KP_GUARD_BYTES - g->bytes);
            free(p);
            kp_test_fail(file, line, "%s: guard byte %s the buffer at %+ld was overwritten", what,
                         i < KP_GUARD_BYTES ? "before" : "after", off);
        }
    }
    free(p);
}

void kp_guarded_free(kp_guarded *g) {
    if (g->buf) CHECK_OK(kp_buffer_free(g->buf));
    g->buf = NULL;
}

unsigned char *kp_test_snapshot(kp_buffer *b) {
    size_t n = kp_buffer_size(b);
    unsigned char *p = malloc(n);
    CHECK(p != NULL);
    CHECK_OK(kp_buffer_read(NULL, b, 0, p, n));
    return p;
}

void kp_test_unchanged_at(kp_buffer *b, unsigned char *snap, const char *file, int line) {
    unsigned char *now = kp_test_snapshot(b);
    size_t n = kp_buffer_size(b);
    for (size_t i = 0; i < n; i++)
        if (now[i] != snap[i]) {
            unsigned a = snap[i], c = now[i];
            free(now);
            free(snap);
            kp_test_fail(file, line, "buffer byte %zu changed from 0x%02x to 0x%02x", i, a, c);
        }
    free(now);
    free(snap);
}

/* splitmix64. Run 0 of a test keeps the name's hash (the seed before runs existed). */
static uint64_t rng_state;
static int rng_seeded;

uint64_t kp_test_seed(void) {
    const char *env = getenv("KPORT_TEST_SEED");
    if (env && *env) return strtoull(env, NULL, 0);
    uint64_t h = 1469598103934665603ull;
    for (const char *c = kp_test_current_name(); *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
    return h ^ ((uint64_t)kp_test_current_run() * 0x9e3779b97f4a7c15ull);
}

uint64_t kp_test_rand_u64(void) {
    if (!rng_seeded) {
        rng_state = kp_test_seed();
        rng_seeded = 1;
    }
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double kp_test_rand_uniform(double lo, double hi) {
    return lo + (hi - lo) * (double)(kp_test_rand_u64() >> 11) * (1.0 / 9007199254740992.0);
}

static int cases_run, cases_declined;
static char first_decline[KP_REASON_MAX + 64];

int kp_test_case_runs(kp_device *d, kp_op op, const void *params, const char *may_decline) {
    kp_status st = kp_op_supported(d, op, params);
    if (st == KP_OK) {
        cases_run++;
        return 1;
    }
    kp_device_info i;
    kp_device_get_info(d, &i);
    if (st != KP_ERR_UNSUPPORTED)
        kp_test_fail(__FILE__, __LINE__, "kp_op_supported(%s) on %s: %s: %s", kp_op_name(op), i.backend,
                     kp_status_str(st), kp_last_error());
    if (!may_decline || !name_listed(may_decline, i.backend))
        kp_test_fail(__FILE__, __LINE__, "%s does not run %s here, and this case lies within its documented limits: %s",
                     i.backend, kp_op_name(op), kp_last_error());
    if (backend_listed("KPORT_REQUIRE_OPS", i.backend) || backend_listed("KPORT_REQUIRE_OPS", "all"))
        kp_test_fail(__FILE__, __LINE__, "KPORT_REQUIRE_OPS names %s, which declines %s: %s", i.backend,
                     kp_op_name(op), kp_last_error());
    printf("  case declined by %s: %s\n", i.backend, kp_last_error());
    if (!cases_declined++) snprintf(first_decline, sizeof first_decline, "%s: %s", i.backend, kp_last_error());
    return 0;
}

void kp_test_require_op(kp_device *d, kp_op op, const void *params) { kp_test_case_runs(d, op, params, NULL); }

int kp_test_bad_index_result_at(kp_device *d, kp_status st, const char *needle, const char *file, int line) {
    kp_device_info i;
    CHECK_OK(kp_device_get_info(d, &i));
    if (i.caps & KP_CAP_CHECKS_INDICES) {
        if (st != KP_ERR_INVALID_ARGUMENT || !strstr(kp_last_error(), needle))
            kp_test_fail(file, line, "bad index on %s: got %s (%s), expected KP_ERR_INVALID_ARGUMENT naming %s",
                         i.backend, kp_status_str(st), kp_last_error(), needle);
        return 1;
    }
    if (st != KP_OK && st != KP_ERR_INVALID_ARGUMENT)
        kp_test_fail(file, line, "bad index on %s: %s: %s", i.backend, kp_status_str(st), kp_last_error());
    return 0;
}

/* Which code a conformance test exercised: the device, its arch (the CPU backend's SIMD
 * level) and whether its kernels take matrix units or inline PTX; PoCL runs the portable
 * emulation of the tile layer, never the GPU instructions. */
static void print_path(kp_device *d) {
    kp_device_info i;
    CHECK_OK(kp_device_get_info(d, &i));
    const char *tiles = (i.caps & KP_CAP_INLINE_PTX) ? "PTX mma.sync tiles"
                        : (i.caps & KP_CAP_MATRIX_UNITS) ? "matrix-unit tiles"
                        : strcmp(i.backend, "cpu") == 0 ? "CPU kernels"
                                                        : "portable tile emulation (no GPU matrix instructions)";
    printf("  path: %s on %s [%s]: %s; seed %#llx\n", i.backend, i.name, i.arch, tiles,
           (unsigned long long)kp_test_seed());
}

void kp_test_run_on(const char *backend, void (*body)(kp_device *d)) {
    kp_device *d = kp_test_open_backend(backend);
    print_path(d);
    body(d);
    CHECK_OK(kp_device_close(d));
    if (cases_declined && !cases_run) kp_test_skip("every case declined (%s)", first_decline);
    if (cases_declined) printf("  %d cases ran, %d declined (first: %s)\n", cases_run, cases_declined, first_decline);
}

int kp_test_run_python(const char *script, const char *args, char *out, size_t n) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "python3 '%s' %s 2>&1", script, args);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    size_t got = fread(out, 1, n - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
