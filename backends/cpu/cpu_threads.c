/*
 * backends/cpu/cpu_threads.c — a fixed pool of worker threads for parallel loops.
 *
 * The caller of cpu_pool_parallel_for works too, so a pool of T threads starts T-1
 * workers. Chunks are handed out through an atomic counter (dynamic scheduling),
 * which keeps cores busy when rows cost different amounts (varlen attention).
 *
 * Waking a sleeping thread costs a futex call and a few microseconds, which a
 * decode-sized op (tens of microseconds) pays on every call. So a worker that ran out
 * of work, and a caller waiting for the last chunk, first spin for a short while
 * (KPORT_CPU_SPIN_US, default 100 µs, 0: never), watching an atomic, with the CPU's
 * pause hint and now and then a sched_yield (a spinning thread must not keep the
 * thread it waits for off a core), and only then sleep on the condition variable. The spin is bounded, so
 * inside a host process with its own OpenMP (or other) pool the workers give their
 * cores back within that time once kport's ops stop (OpenMP runtimes spin far longer
 * by default: 200 ms in LLVM's and Intel's). KPORT_CPU_SPIN_US=0 turns spinning off
 * for hosts that oversubscribe their cores.
 */
#include "cpu_internal.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ volatile("yield" ::: "memory")
#else
#define cpu_relax() ((void)0)
#endif

#define SPIN_US_DEFAULT 100

struct cpu_pool {
    int threads;
    int64_t spin_ns;          /* how long a thread spins before it sleeps */
    pthread_t *workers;
    pthread_mutex_t job_lock; /* one parallel_for at a time */
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    atomic_uint_fast64_t generation; /* bumped (release) for each job; workers wait for a new one */
    atomic_bool stopping;
    /* the current job: written before generation is bumped */
    cpu_range_fn fn;
    void *ctx;
    int64_t n, chunk;
    atomic_llong next;
    atomic_int active;        /* workers still inside the job */
};

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Spins until cond(p) holds or spin_ns pass; true when it holds. */
static bool spin_until(const cpu_pool *p, bool (*cond)(const cpu_pool *, uint64_t), uint64_t arg) {
    if (p->spin_ns <= 0) return cond(p, arg);
    int64_t end = 0;
    for (int i = 0;; i++) {
        if (cond(p, arg)) return true;
        if ((i & 63) == 0) { /* every 64 pauses: the clock, and the core to any thread that waits for
                                it (ours, when the machine has fewer free cores than the pool threads) */
            int64_t t = now_ns();
            if (end == 0) end = t + p->spin_ns;
            else if (t >= end) return false;
            if (i > 0) sched_yield();
        }
        cpu_relax();
    }
}

static bool new_job(const cpu_pool *p, uint64_t seen) {
    return atomic_load_explicit(&p->generation, memory_order_acquire) != seen ||
           atomic_load_explicit(&p->stopping, memory_order_relaxed);
}

static bool all_done(const cpu_pool *p, uint64_t unused) {
    (void)unused;
    return atomic_load_explicit(&p->active, memory_order_acquire) == 0;
}

static void run_chunks(cpu_pool *p) {
    for (;;) {
        int64_t begin = atomic_fetch_add(&p->next, p->chunk);
        if (begin >= p->n) break;
        int64_t end = begin + p->chunk < p->n ? begin + p->chunk : p->n;
        p->fn(p->ctx, begin, end);
    }
}

static void *worker_main(void *arg) {
    cpu_pool *p = arg;
    uint64_t seen = 0;
    for (;;) {
        if (!spin_until(p, new_job, seen)) {
            pthread_mutex_lock(&p->lock);
            while (!new_job(p, seen)) pthread_cond_wait(&p->wake, &p->lock);
            pthread_mutex_unlock(&p->lock);
        }
        if (atomic_load(&p->stopping)) break;
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        run_chunks(p);
        if (atomic_fetch_sub_explicit(&p->active, 1, memory_order_acq_rel) == 1) {
            /* the caller may be asleep: signal under the lock it checks `active` under */
            pthread_mutex_lock(&p->lock);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->lock);
        }
    }
    return NULL;
}

/* KPORT_CPU_SPIN_US: microseconds a thread spins before sleeping (0..100000). */
static int64_t spin_ns_from_env(void) {
    const char *s = getenv("KPORT_CPU_SPIN_US");
    if (!s || !*s) return (int64_t)SPIN_US_DEFAULT * 1000;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end != '\0' || v < 0 || v > 100000) return (int64_t)SPIN_US_DEFAULT * 1000;
    return (int64_t)v * 1000;
}

kp_status cpu_pool_create(int threads, cpu_pool **out) {
    *out = NULL;
    cpu_pool *p = calloc(1, sizeof *p);
    if (!p) return KP_ERR_OUT_OF_MEMORY;
    p->threads = threads < 1 ? 1 : threads;
    p->spin_ns = spin_ns_from_env();
    pthread_mutex_init(&p->job_lock, NULL);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->stopping, false);
    atomic_init(&p->next, 0);
    atomic_init(&p->active, 0);
    p->workers = calloc((size_t)p->threads, sizeof *p->workers);
    int started = 0;
    if (p->workers)
        while (started < p->threads - 1 && pthread_create(&p->workers[started], NULL, worker_main, p) == 0)
            started++;
    if (!p->workers || started < p->threads - 1) {
        p->threads = started + 1;
        if (!p->workers) {
            free(p);
            return KP_ERR_OUT_OF_MEMORY;
        }
    }
    *out = p;
    return KP_OK;
}

void cpu_pool_destroy(cpu_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->stopping, true);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->threads - 1; i++) pthread_join(p->workers[i], NULL);
    free(p->workers);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->job_lock);
    free(p);
}

int cpu_pool_threads(const cpu_pool *p) { return p->threads; }

void cpu_pool_parallel_for(cpu_pool *p, int64_t n, int64_t grain, cpu_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    /* About 4 chunks per thread balances load without much counter traffic. */
    int64_t chunk = (n + (int64_t)p->threads * 4 - 1) / ((int64_t)p->threads * 4);
    if (chunk < grain) chunk = grain;
    if (p->threads == 1 || chunk >= n) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&p->job_lock);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->chunk = chunk;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->active, p->threads - 1, memory_order_relaxed);
    /* spinning workers see the bump (release: the job's fields first); sleeping ones
     * are woken under the lock they re-check the generation under */
    pthread_mutex_lock(&p->lock);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    run_chunks(p);
    if (!spin_until(p, all_done, 0)) {
        pthread_mutex_lock(&p->lock);
        while (!all_done(p, 0)) pthread_cond_wait(&p->done, &p->lock);
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&p->job_lock);
}
