/*
 * tests/test_cpu.c — the CPU backend's own machinery: every SIMD level gives the
 * same bits as the portable path, and the thread pool covers every index once.
 */
#include "kp_test.h"
#include "cpu_internal.h"

#include <math.h>
#include <stdatomic.h>
#include <time.h>

/* Interesting f32 bit patterns: zeros, denormals, rounding ties, extremes, inf, NaN. */
static uint32_t special_bits(int64_t i) {
    static const uint32_t s[] = {0x00000000u, 0x80000000u, 0x00000001u, 0x807fffffu, 0x3f808000u, 0x3f818000u,
                                 0x3f80c000u, 0x7f7fffffu, 0xff7fffffu, 0x7f800000u, 0xff800000u, 0x7fc00000u,
                                 0x7f800001u, 0x477fe000u, 0x477ff000u, 0x38800000u, 0x33800000u, 0x33000000u,
                                 0x33000001u, 0xb3c00000u, 0x387fc000u, 0x3f800fffu, 0x3f801000u, 0x3f803000u};
    return s[i % (int64_t)(sizeof s / sizeof s[0])];
}

static void fill_f32(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = i % 3 == 0 ? special_bits(i / 3) : (uint32_t)kp_test_rand_u64();
        if (i % 3 == 1) { /* mostly in f16's range, so rounding paths get exercised */
            float f = (float)kp_test_rand_uniform(-70000.0, 70000.0) * (i % 7 == 0 ? 1e-6f : 1.0f);
            memcpy(&u, &f, 4);
        }
        memcpy(&x[i], &u, 4);
    }
}

static int same_or_both_nan16(uint16_t a, uint16_t b, int f16) {
    if (a == b) return 1;
    uint16_t exp_mask = f16 ? 0x7c00 : 0x7f80, man_mask = f16 ? 0x03ff : 0x007f;
    int a_nan = (a & exp_mask) == exp_mask && (a & man_mask), b_nan = (b & exp_mask) == exp_mask && (b & man_mask);
    return a_nan && b_nan;
}

KP_TEST(cpu_simd_conversions_match_portable) {
    const cpu_features *f = cpu_detect();
    const cpu_kernels *ref = cpu_kernels_for(CPU_SIMD_PORTABLE);
    enum { N = 4099 }; /* not a multiple of any vector width: tails too */
    float *x = malloc(N * sizeof *x), *y0 = malloc(N * sizeof *y0), *y1 = malloc(N * sizeof *y1);
    uint16_t *h0 = malloc(N * 2), *h1 = malloc(N * 2), *src16 = malloc(N * 2);
    fill_f32(x, N);
    for (int64_t i = 0; i < N; i++) src16[i] = (uint16_t)kp_test_rand_u64();
    cpu_simd_level ladder[CPU_SIMD_LEVELS];
    int nl = cpu_simd_supported(ladder), levels = 0;
    for (int li = 1; li < nl; li++) { /* ladder[0] is portable itself */
        cpu_simd_level l = ladder[li];
        const cpu_kernels *k = cpu_kernels_for(l);
        levels++;
        for (int f16 = 0; f16 <= 1; f16++) {
            (f16 ? ref->f32_to_f16 : ref->f32_to_bf16)(x, h0, N);
            (f16 ? k->f32_to_f16 : k->f32_to_bf16)(x, h1, N);
            for (int64_t i = 0; i < N; i++) {
                uint32_t u;
                memcpy(&u, &x[i], 4);
                CHECK_MSG(same_or_both_nan16(h0[i], h1[i], f16), "%s f32->%s of 0x%08x: portable 0x%04x, simd 0x%04x",
                          cpu_simd_name(l), f16 ? "f16" : "bf16", u, h0[i], h1[i]);
            }
            (f16 ? ref->f16_to_f32 : ref->bf16_to_f32)(src16, y0, N);
            (f16 ? k->f16_to_f32 : k->bf16_to_f32)(src16, y1, N);
            for (int64_t i = 0; i < N; i++)
                CHECK_MSG(memcmp(&y0[i], &y1[i], 4) == 0 || (isnan(y0[i]) && isnan(y1[i])),
                          "%s %s->f32 of 0x%04x: %a vs %a", cpu_simd_name(l), f16 ? "f16" : "bf16",
                          src16[i], (double)y0[i], (double)y1[i]);
        }
    }
    free(x); free(y0); free(y1); free(h0); free(h1); free(src16);
    if (levels == 0) KP_SKIP("this CPU has no SIMD level (%s): only the portable path exists here", f->vendor);
}

KP_TEST(cpu_portable_conversions_round_to_nearest_even) {
    const cpu_kernels *k = cpu_kernels_for(CPU_SIMD_PORTABLE);
    /* value, expected bf16, expected f16 */
    static const struct { uint32_t f; uint16_t bf16, f16; } cases[] = {
        {0x3f800000u, 0x3f80, 0x3c00}, /* 1.0 */
        {0x3f808000u, 0x3f80, 0x3c04}, /* bf16 tie, even stays */
        {0x3f818000u, 0x3f82, 0x3c0c}, /* bf16 tie, odd rounds up */
        {0x477fe000u, 0x4780, 0x7bff}, /* 65504 = f16 max */
        {0x477ff000u, 0x4780, 0x7c00}, /* rounds to f16 inf */
        {0x33800000u, 0x3380, 0x0001}, /* 2^-24: f16's smallest subnormal */
        {0x33000000u, 0x3300, 0x0000}, /* 2^-25: a tie, rounds to even 0 */
        {0x33000001u, 0x3300, 0x0001}, /* just above the tie */
        {0xff800000u, 0xff80, 0xfc00}, /* -inf */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float x;
        uint16_t b, h;
        memcpy(&x, &cases[i].f, 4);
        k->f32_to_bf16(&x, &b, 1);
        k->f32_to_f16(&x, &h, 1);
        CHECK_MSG(b == cases[i].bf16, "bf16(0x%08x) = 0x%04x, want 0x%04x", cases[i].f, b, cases[i].bf16);
        CHECK_MSG(h == cases[i].f16, "f16(0x%08x) = 0x%04x, want 0x%04x", cases[i].f, h, cases[i].f16);
        float back;
        k->f16_to_f32(&h, &back, 1);
        if (!isinf(x) && fabsf(x) <= 65504.0f && fabsf(x) >= 6.2e-5f)
            CHECK_MSG(fabsf(back - x) <= fabsf(x) * 0x1p-11f, "f16 round trip of %g gave %g", (double)x, (double)back);
    }
    uint32_t nan_bits = 0x7f800001u; /* a signalling NaN comes back quiet, still NaN */
    float nan;
    memcpy(&nan, &nan_bits, 4);
    uint16_t b, h;
    k->f32_to_bf16(&nan, &b, 1);
    k->f32_to_f16(&nan, &h, 1);
    CHECK((b & 0x7f80) == 0x7f80 && (b & 0x7f));
    CHECK((h & 0x7c00) == 0x7c00 && (h & 0x3ff));
}

KP_TEST(cpu_simd_level_override) {
    setenv("KPORT_CPU_SIMD", "portable", 1);
    CHECK_INT_EQ(cpu_simd_active(), CPU_SIMD_PORTABLE);
    kp_init_options opt = {NULL, 1, KP_INIT_NO_PLUGINS};
    CHECK_OK(kp_init(&opt));
    kp_device_info i;
    CHECK_OK(kp_device_info_get(0, &i));
    CHECK_STR_CONTAINS(i.arch, "portable");
    CHECK_INT_EQ(i.subgroup_size, 1);
    CHECK_OK(kp_shutdown());
    setenv("KPORT_CPU_SIMD", "avx512-bf16", 1); /* never above what the CPU has */
    CHECK(cpu_simd_active() <= cpu_detect()->best);
    unsetenv("KPORT_CPU_SIMD");
}

typedef struct cover_ctx {
    atomic_int *hits;
} cover_ctx;

static void cover(void *ctx, int64_t begin, int64_t end) {
    cover_ctx *c = ctx;
    for (int64_t i = begin; i < end; i++) atomic_fetch_add(&c->hits[i], 1);
}

KP_TEST(cpu_pool_covers_every_index_once) {
    static const int threads[] = {1, 2, 3, 8};
    static const int64_t sizes[] = {0, 1, 2, 7, 64, 1000, 4097};
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        cpu_pool *p;
        CHECK_OK(cpu_pool_create(threads[t], &p));
        CHECK_INT_EQ(cpu_pool_threads(p), threads[t]);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            for (int64_t grain = 1; grain <= 16; grain *= 4) {
                int64_t n = sizes[s];
                atomic_int *hits = calloc((size_t)n + 1, sizeof *hits);
                cover_ctx c = {hits};
                cpu_pool_parallel_for(p, n, grain, cover, &c);
                for (int64_t i = 0; i < n; i++)
                    CHECK_MSG(atomic_load(&hits[i]) == 1, "threads %d n %lld grain %lld: index %lld ran %d times",
                              threads[t], (long long)n, (long long)grain, (long long)i, atomic_load(&hits[i]));
                free(hits);
            }
        }
        cpu_pool_destroy(p);
    }
}

/* Back-to-back jobs reach spinning workers, jobs after a pause reach sleeping ones,
 * and with spinning off every job goes through the condition variables: each way,
 * every index runs once. */
KP_TEST(cpu_pool_spinning_and_sleeping_workers_take_every_job) {
    static const char *const spins[] = {"0", "50", "100000"};
    enum { N = 257 };
    for (size_t s = 0; s < sizeof spins / sizeof spins[0]; s++) {
        setenv("KPORT_CPU_SPIN_US", spins[s], 1);
        cpu_pool *p;
        CHECK_OK(cpu_pool_create(3, &p));
        for (int job = 0; job < 300; job++) {
            atomic_int hits[N];
            for (int i = 0; i < N; i++) atomic_init(&hits[i], 0);
            cover_ctx c = {hits};
            cpu_pool_parallel_for(p, N, 1, cover, &c);
            for (int i = 0; i < N; i++)
                CHECK_MSG(atomic_load(&hits[i]) == 1, "spin %s us, job %d: index %d ran %d times", spins[s], job, i,
                          atomic_load(&hits[i]));
            if (job % 100 == 99) {
                struct timespec pause = {0, 2000000}; /* 2 ms: past a 50 us spin, the workers sleep */
                nanosleep(&pause, NULL);
            }
        }
        cpu_pool_destroy(p);
    }
    unsetenv("KPORT_CPU_SPIN_US");
}
