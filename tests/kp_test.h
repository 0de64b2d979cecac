/*
 * tests/kp_test.h — kport's plain-C test framework.
 *
 * A test is `KP_TEST(name) { ... }` in some tests/test_*.c file and one line
 * `X(name)` in tests/test_list.h: the list is expanded once into declarations and
 * once into the runner's table, so adding a test is one line.
 *
 * The runner (tests/runner.c) forks each test into its own child with a timeout, so a
 * crash or a hang fails that test alone, and prints `N passed, N failed, N skipped`.
 * A check that fails prints both operands and stops the test.
 */
#ifndef KPORT_TESTS_KP_TEST_H
#define KPORT_TESTS_KP_TEST_H

#include "kport.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KP_TEST(name) void kp_test_##name(void)

/* Marks the running test skipped with a reason, and ends it. */
void kp_test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Ends the running test as failed. */
void kp_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

#define KP_SKIP(...) kp_test_skip(__VA_ARGS__)

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) kp_test_fail(__FILE__, __LINE__, "CHECK(%s) failed", #cond);        \
    } while (0)

#define CHECK_MSG(cond, ...)                                                             \
    do {                                                                                 \
        if (!(cond)) kp_test_fail(__FILE__, __LINE__, __VA_ARGS__);                      \
    } while (0)

#define CHECK_INT_EQ(a, b)                                                               \
    do {                                                                                 \
        long long kp_a_ = (long long)(a), kp_b_ = (long long)(b);                        \
        if (kp_a_ != kp_b_)                                                              \
            kp_test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, kp_a_, kp_b_); \
    } while (0)

#define CHECK_STR_EQ(a, b)                                                               \
    do {                                                                                 \
        const char *kp_a_ = (a), *kp_b_ = (b);                                           \
        if (strcmp(kp_a_, kp_b_) != 0)                                                   \
            kp_test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b, kp_a_, kp_b_); \
    } while (0)

#define CHECK_STR_CONTAINS(hay, needle)                                                  \
    do {                                                                                 \
        const char *kp_h_ = (hay), *kp_n_ = (needle);                                    \
        if (!strstr(kp_h_, kp_n_))                                                       \
            kp_test_fail(__FILE__, __LINE__, "\"%s\" does not contain \"%s\"", kp_h_, kp_n_); \
    } while (0)

/* The call succeeds; otherwise prints the status and kp_last_error(). */
#define CHECK_OK(expr)                                                                   \
    do {                                                                                 \
        kp_status kp_s_ = (expr);                                                        \
        if (kp_s_ != KP_OK)                                                              \
            kp_test_fail(__FILE__, __LINE__, "%s -> %s: %s", #expr, kp_status_str(kp_s_), \
                         kp_last_error());                                               \
    } while (0)

/* The call fails with exactly `code`, and its message contains `needle`. */
#define CHECK_ERR(expr, code, needle)                                                    \
    do {                                                                                 \
        kp_status kp_s_ = (expr);                                                        \
        if (kp_s_ != (code))                                                             \
            kp_test_fail(__FILE__, __LINE__, "%s -> %s, expected %s (message: %s)", #expr, \
                         kp_status_str(kp_s_), kp_status_str(code), kp_last_error());    \
        if (!strstr(kp_last_error(), (needle)))                                          \
            kp_test_fail(__FILE__, __LINE__, "%s: message \"%s\" does not mention \"%s\"", \
                         #expr, kp_last_error(), (needle));                              \
    } while (0)

/* ---- helpers shared by the tests (tests/kp_test_util.c) ---- */

/* Runs `python3 script args` (stderr with stdout); its output in out (n bytes, cut to
 * fit), its exit status returned (-1: it did not exit). For the build-time checkers. */
int kp_test_run_python(const char *script, const char *args, char *out, size_t n);

/* kp_init with the test plugin path; skips the test if init fails. */
void kp_test_init(void);
/* Opens the first device of the named backend, or skips with the backend's reason. */
kp_device *kp_test_open_backend(const char *backend);

/* A device buffer with guard bytes: `bytes` usable bytes at offset KP_GUARD_BYTES,
 * the guards filled with a pattern checked by kp_guarded_check. */
#define KP_GUARD_BYTES 256
typedef struct kp_guarded {
    kp_buffer *buf;
    size_t bytes;      /* usable bytes */
    size_t offset;     /* byte offset of the usable region (KP_GUARD_BYTES) */
} kp_guarded;
kp_guarded kp_guarded_alloc(kp_device *d, size_t bytes);
/* Fills the usable region with a byte pattern (poison 0xFF: NaN for every float dtype). */
void kp_guarded_poison(kp_guarded *g, unsigned char byte);
void kp_guarded_write(kp_guarded *g, const void *src, size_t bytes);
void kp_guarded_read(kp_guarded *g, void *dst, size_t bytes);
/* Fails the test if any guard byte changed. */
void kp_guarded_check_at(kp_guarded *g, const char *what, const char *file, int line);
#define kp_guarded_check(g, what) kp_guarded_check_at((g), (what), __FILE__, __LINE__)
void kp_guarded_free(kp_guarded *g);

/* Reads a whole buffer into malloc'd memory. */
unsigned char *kp_test_snapshot(kp_buffer *b);
/* Fails if the buffer's bytes differ from the snapshot (then frees it). */
void kp_test_unchanged_at(kp_buffer *b, unsigned char *snap, const char *file, int line);
#define kp_test_unchanged(b, snap) kp_test_unchanged_at((b), (snap), __FILE__, __LINE__)

/* Deterministic per-test random numbers: seeded from KPORT_TEST_SEED, else from the
 * test's name and its run number (KPORT_TEST_SEEDS runs conformance tests that many
 * times); a failure prints the seed that reproduces it. */
uint64_t kp_test_seed(void);
uint64_t kp_test_rand_u64(void);
double kp_test_rand_uniform(double lo, double hi);

/* ---- conformance: one body, one test per backend ----
 *
 *   KP_CONFORMANCE(conf_moe_gate_ties) { ... uses kp_device *d ... }
 *
 * defines conf_moe_gate_ties__cpu, __opencl, __cuda and __hip; list it with one line
 * XB(conf_moe_gate_ties). A backend that is absent skips with its reason. */
#define KP_CONFORMANCE(name)                                                             \
    static void name##_on(kp_device *d);                                                 \
    KP_TEST(name##__cpu) { kp_test_run_on("cpu", name##_on); }                           \
    KP_TEST(name##__opencl) { kp_test_run_on("opencl", name##_on); }                     \
    KP_TEST(name##__cuda) { kp_test_run_on("cuda", name##_on); }                         \
    KP_TEST(name##__hip) { kp_test_run_on("hip", name##_on); }                           \
    static void name##_on(kp_device *d)

/* Opens the backend's first device (or skips), runs body on it, closes it. */
void kp_test_run_on(const char *backend, void (*body)(kp_device *d));

/* Whether d's backend runs this case (op, params), by kp_op_supported — the selector
 * dispatch uses. KP_OK: returns 1. KP_ERR_UNSUPPORTED fails the test, unless
 * `may_decline` names d's backend ("opencl,cuda,hip": the case lies outside that
 * backend's documented limits, README's op table) and KPORT_REQUIRE_OPS names neither
 * it nor "all": then this one case is declined — printed with the backend's reason —
 * and 0 returned, and the caller goes on with its next case. A test whose every case
 * was declined ends as a skip. Any other status fails. */
int kp_test_case_runs(kp_device *d, kp_op op, const void *params, const char *may_decline);
/* The case must run on every backend: kp_test_case_runs(d, op, params, NULL). */
void kp_test_require_op(kp_device *d, kp_op op, const void *params);

/* Bad index contents (ids, offsets, block tables): on a device with
 * KP_CAP_CHECKS_INDICES the call must fail with KP_ERR_INVALID_ARGUMENT naming
 * `needle`, and returns 1 (the caller then checks outputs are unchanged); elsewhere it
 * must merely not fail in any other way, and returns 0 (the caller checks guards). */
int kp_test_bad_index_result_at(kp_device *d, kp_status st, const char *needle, const char *file, int line);
#define kp_test_bad_index_result(d, st, needle) kp_test_bad_index_result_at((d), (st), (needle), __FILE__, __LINE__)

#endif /* KPORT_TESTS_KP_TEST_H */
