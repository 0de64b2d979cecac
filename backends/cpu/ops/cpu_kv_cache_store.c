/*
 * backends/cpu/ops/cpu_kv_cache_store.c — kp_kv_cache_store on the CPU backend: each
 * token's K (and V) rows copied into its paged slot; into an FP8 cache as
 * e4m3(x / scale) (cpu_fp8.h). Slots past the cache are KP_ERR_INVALID_ARGUMENT,
 * found before anything is written.
 */
#include "cpu_fp8.h"
#include "cpu_gemm.h"

#define STORE_CHUNK 256 /* elements converted per step, on the stack */

typedef struct store_job {
    const kp_kv_cache_store_params *p;
    const int32_t *slots;
    const cpu_kernels *cvt;
    int64_t block_size;
} store_job;

/* Row (t, h) of src [T, h, d] into cache row (slot, h). */
static void store_rows(const store_job *j, const kp_tensor *src, const kp_tensor *cache, const kp_tensor *scale,
                       int64_t t, int64_t slot) {
    const int64_t h_kv = src->shape[1], d = src->shape[2];
    const int64_t blk = slot / j->block_size, off = slot % j->block_size;
    const size_t csz = kp_dtype_size(cache->dtype);
    unsigned char *base = cpu_tensor_data(cache);
    float sc = 1.0f;
    if (cache->dtype == KP_FP8_E4M3) {
        const float *s = (const float *)cpu_tensor_data(scale);
        sc = s[scale->shape[0] == 1 ? 0 : blk];
    }
    for (int64_t h = 0; h < h_kv; h++) {
        const unsigned char *x = cpu_at3(src, t, h, 0);
        unsigned char *dst = base + (size_t)(blk * cache->strides[0] + off * cache->strides[1] + h * cache->strides[2]) * csz;
        if (cache->dtype == src->dtype) {
            memcpy(dst, x, (size_t)d * csz);
            continue;
        }
        const size_t xsz = kp_dtype_size(src->dtype);
        float row[STORE_CHUNK];
        for (int64_t c0 = 0; c0 < d; c0 += STORE_CHUNK) {
            int64_t n = d - c0 < STORE_CHUNK ? d - c0 : STORE_CHUNK;
            cpu_load_row(j->cvt, src->dtype, x + (size_t)c0 * xsz, row, n);
            for (int64_t i = 0; i < n; i++) dst[c0 + i] = cpu_f32_to_e4m3(row[i] / sc);
        }
    }
}

static void store_range(void *ctx, int64_t t0, int64_t t1) {
    const store_job *j = ctx;
    const kp_kv_cache_store_params *p = j->p;
    for (int64_t t = t0; t < t1; t++) {
        int64_t slot = j->slots[t];
        if (slot < 0) continue;
        store_rows(j, &p->key, &p->k_cache, &p->k_scale, t, slot);
        if (p->value.buffer) store_rows(j, &p->value, &p->v_cache, &p->v_scale, t, slot);
    }
}

kp_status cpu_op_kv_cache_store(kp_op op, kp_stream *s, const void *params, int dry_run) {
    (void)op;
    const kp_kv_cache_store_params *p = params;
    if (dry_run) return KP_OK;
    const int64_t t = p->key.shape[0], slots = p->k_cache.shape[0] * p->k_cache.shape[1]; /* validated: no overflow */
    const int32_t *slot = (const int32_t *)cpu_tensor_data(&p->slot_mapping);
    for (int64_t i = 0; i < t; i++)
        if (slot[i] >= slots)
            return cpu_host()->set_error(KP_ERR_INVALID_ARGUMENT,
                                         "kv_cache_store: slot_mapping[%lld] is %d; the cache has %lld slots "
                                         "(num_blocks * block_size)",
                                         (long long)i, (int)slot[i], (long long)slots);
    store_job job = {p, slot, cpu_state(s)->kernels, p->k_cache.shape[1]};
    cpu_moe_stream_lock(s);
    cpu_pool_parallel_for(cpu_state(s)->pool, t, 16, store_range, &job);
    cpu_moe_stream_unlock(s);
    return KP_OK;
}
