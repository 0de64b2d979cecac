/*
 * backends/cpu/cpu_threads.c — a fixed pool of worker threads for parallel loops.
 *
 * The caller of cpu_pool_parallel_for works too, so a pool of T threads starts T-1
 * workers. Chunks are handed out through an atomic counter (dynamic scheduling),
 * which keeps cores busy when rows cost different amounts (varlen attention).
 */
#include "cpu_internal.h"

#include <stdatomic.h>
#include <stdlib.h>

struct cpu_pool {
    int threads;
    pthread_t *workers;
    pthread_mutex_t job_lock; /* one parallel_for at a time */
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    uint64_t generation;      /* bumped for each job; workers wait for a new one */
    bool stopping;
    /* the current job */
    cpu_range_fn fn;
    void *ctx;
    int64_t n, chunk;
    atomic_llong next;
    int active;               /* workers still inside the job */
};

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
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stopping && p->generation == seen) pthread_cond_wait(&p->wake, &p->lock);
        if (p->stopping) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->lock);
        run_chunks(p);
        pthread_mutex_lock(&p->lock);
        if (--p->active == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

kp_status cpu_pool_create(int threads, cpu_pool **out) {
    *out = NULL;
    cpu_pool *p = calloc(1, sizeof *p);
    if (!p) return KP_ERR_OUT_OF_MEMORY;
    p->threads = threads < 1 ? 1 : threads;
    pthread_mutex_init(&p->job_lock, NULL);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
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
    p->stopping = true;
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
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->chunk = chunk;
    atomic_store(&p->next, 0);
    p->active = p->threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    run_chunks(p);
    pthread_mutex_lock(&p->lock);
    while (p->active > 0) pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->job_lock);
}
