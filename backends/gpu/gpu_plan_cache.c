/*
 * backends/gpu/gpu_plan_cache.c — what the planners compute, memoised (issue 17:
 * "a launch resolves its kernel once per (op, shape class, device)").
 *
 * A plan (tile, -D options, local bytes) is pure in the device's profile, the tuning
 * table and a few scalars of the params (dtype, head dims, rows per KV head, FP8
 * cache, ...); the planners key it by those scalars in a kp_gpu_plan_key and keep it
 * here. The table is a fixed array of slots per plugin (bounded by construction, no
 * heap: nothing to free at shutdown), one slot per key hash (a colliding key replaces
 * the slot). Each slot has its own try-lock: a thread that finds its slot busy plans
 * afresh, so no caller ever waits and there is no global lock. A slot also records
 * the device (pointer, global index and profile) and the tuning generation
 * (host->tuning_generation, bumped whenever the tuning table is reread): an entry
 * from another device or an older table never hits.
 * Without tuning_generation (a host that cannot say when tuning changes) nothing is
 * cached.
 * Plans larger than KP_GPU_PLAN_VALUE_MAX (kp_moe_forward's chain plan, up to
 * KP_GPU_PLAN_BIG_VALUE_MAX) live in a second, smaller table of KP_GPU_PLAN_BIG_SLOTS
 * slots with the same rules; the size picks the table.
 */
#include "ops/gpu_ops.h"

#include <stdatomic.h>
#include <string.h>

typedef struct plan_slot {
    atomic_uint busy; /* 1 while a thread reads or writes the slot */
    int used;
    uint64_t generation;
    const kp_device *device;
    int device_index; /* with the pointer: a device closed and another opened at its address never match */
    kp_gpu_profile prof; /* what the plan was made for: a target whose profile changes never hits stale plans */
    kp_gpu_plan_key key;
    uint32_t value_size;
    char opts[KP_GPU_PLAN_OPTS_MAX];
} plan_slot;

static plan_slot slots[KP_GPU_PLAN_SLOTS];
static _Alignas(16) unsigned char values[KP_GPU_PLAN_SLOTS][KP_GPU_PLAN_VALUE_MAX];
static plan_slot big_slots[KP_GPU_PLAN_BIG_SLOTS];
static _Alignas(16) unsigned char big_values[KP_GPU_PLAN_BIG_SLOTS][KP_GPU_PLAN_BIG_VALUE_MAX];
static _Thread_local kp_gpu_plan_stats stats; /* this thread's hits and misses (tests) */

static uint32_t hash_of(const kp_device *d, const kp_gpu_plan_key *k) {
    uint64_t h = (uint64_t)(uintptr_t)d * 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < KP_GPU_PLAN_KEY_WORDS; i++) h = (h ^ (uint64_t)k->v[i]) * 0xff51afd7ed558ccdull;
    h ^= h >> 29;
    return (uint32_t)h;
}

/* The slot for a value of size bytes and its value storage (NULL: too large for either table). */
static plan_slot *slot_for(const kp_device *d, const kp_gpu_plan_key *k, size_t size, unsigned char **value) {
    uint32_t h = hash_of(d, k);
    if (size <= KP_GPU_PLAN_VALUE_MAX) {
        uint32_t i = h & (KP_GPU_PLAN_SLOTS - 1);
        *value = values[i];
        return &slots[i];
    }
    if (size <= KP_GPU_PLAN_BIG_VALUE_MAX) {
        uint32_t i = h & (KP_GPU_PLAN_BIG_SLOTS - 1);
        *value = big_values[i];
        return &big_slots[i];
    }
    return NULL;
}

static int device_index(const kp_device *d) { return d ? d->global_index : -1; }

static int same_profile(const kp_gpu_profile *a, const kp_gpu_profile *b) {
    return a->info == b->info && a->cpu == b->cpu && a->mma == b->mma && a->warp == b->warp &&
           a->local_mem == b->local_mem && a->static_local_mem == b->static_local_mem &&
           a->max_group == b->max_group && a->compute_units == b->compute_units;
}

static int slot_lock(plan_slot *s) {
    return atomic_exchange_explicit(&s->busy, 1u, memory_order_acquire) == 0u;
}
static void slot_unlock(plan_slot *s) { atomic_store_explicit(&s->busy, 0u, memory_order_release); }

int kp_gpu_plan_lookup(kp_gpu_ctx *c, const kp_gpu_plan_key *k, void *value, size_t size, char *opts, size_t opts_n,
                       uint64_t *generation) {
    *generation = 0;
    if (!c->host->tuning_generation || size > KP_GPU_PLAN_BIG_VALUE_MAX) return 0;
    const uint64_t gen = c->host->tuning_generation();
    *generation = gen;
    int hit = 0;
    unsigned char *stored;
    plan_slot *s = slot_for(c->s->device, k, size, &stored);
    if (s && slot_lock(s)) {
        if (s->used && s->generation == gen && s->device == c->s->device &&
            s->device_index == device_index(c->s->device) && same_profile(&s->prof, &c->prof) &&
            s->value_size == size &&
            memcmp(&s->key, k, sizeof *k) == 0) {
            size_t n = strlen(s->opts);
            if (n < opts_n) {
                memcpy(value, stored, size);
                memcpy(opts, s->opts, n + 1);
                hit = 1;
            }
        }
        slot_unlock(s);
    }
    if (hit) stats.hits++;
    else stats.misses++;
    return hit;
}

void kp_gpu_plan_store(kp_gpu_ctx *c, const kp_gpu_plan_key *k, uint64_t gen, const void *value, size_t size,
                       const char *opts) {
    if (gen == 0 || strlen(opts) >= KP_GPU_PLAN_OPTS_MAX) return;
    unsigned char *stored;
    plan_slot *s = slot_for(c->s->device, k, size, &stored);
    if (!s || !slot_lock(s)) return; /* another thread has it: this plan is simply not kept */
    s->used = 1;
    s->generation = gen;
    s->device = c->s->device;
    s->device_index = device_index(c->s->device);
    s->prof = c->prof;
    s->key = *k;
    s->value_size = (uint32_t)size;
    memcpy(stored, value, size);
    memcpy(s->opts, opts, strlen(opts) + 1);
    slot_unlock(s);
}

kp_gpu_plan_stats kp_gpu_plan_cache_stats(void) {
    kp_gpu_plan_stats r = stats;
    int used = 0;
    for (int i = 0; i < KP_GPU_PLAN_SLOTS + KP_GPU_PLAN_BIG_SLOTS; i++) {
        plan_slot *s = i < KP_GPU_PLAN_SLOTS ? &slots[i] : &big_slots[i - KP_GPU_PLAN_SLOTS];
        while (!slot_lock(s)) {
        }
        if (i < KP_GPU_PLAN_SLOTS) used += s->used;
        else r.big_slots_used += s->used;
        slot_unlock(s);
    }
    r.slots_used = used;
    return r;
}

void kp_gpu_plan_cache_clear(void) {
    for (int i = 0; i < KP_GPU_PLAN_SLOTS + KP_GPU_PLAN_BIG_SLOTS; i++) {
        plan_slot *s = i < KP_GPU_PLAN_SLOTS ? &slots[i] : &big_slots[i - KP_GPU_PLAN_SLOTS];
        while (!slot_lock(s)) {
        }
        s->used = 0;
        slot_unlock(s);
    }
    memset(&stats, 0, sizeof stats);
}
