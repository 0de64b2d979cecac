/*
 * kernels/attention/kv_cache_store.cl - kp_kv_cache_store: each new token's K (and V)
 * rows written into its paged cache slot, slot = slot_mapping[t] (block * block_size +
 * offset; negative: skip). One work-item per element of a token's K and V rows; an
 * FP8 cache stores e4m3(x / scale) (common/kp_fp8.h), scale per tensor or per block.
 * A slot past the cache writes nothing (the kernel never writes out of bounds;
 * reporting it is the CPU backend's and the caller's job).
 *
 * Options: KP_DTYPE_* (key and value), KV_STORE_FP8 (the caches are e4m3),
 * KV_STORE_WG (default 128).
 * Launch: groups (T, ceil(h_kv * (d + dv) / WG)), local (WG, 1): tokens on the first
 * dimension, which takes 2^31 - 1 groups everywhere (CUDA's second takes 65535).
 */
#include "kp_dialect.h"
#include "attention_kargs.h"
#include "common/kp_fp8.h"

#if defined(KV_STORE_FP8)
typedef unsigned char kvs_cache_t;
#else
typedef kp_storage_t kvs_cache_t;
#endif

KP_FN void kvs_put(KP_GLOBAL kvs_cache_t *cache, kp_karg_i64 at, float x, float scale) {
#if defined(KV_STORE_FP8)
    cache[at] = (unsigned char)kp_f32_to_e4m3(x / scale);
#else
    (void)scale;
    kp_store(cache, at, x);
#endif
}

KP_KERNEL void kp_kv_cache_store(KP_GLOBAL const kp_storage_t *KP_RESTRICT key,
                                 KP_GLOBAL const kp_storage_t *KP_RESTRICT value,
                                 KP_GLOBAL kvs_cache_t *KP_RESTRICT k_cache, KP_GLOBAL kvs_cache_t *KP_RESTRICT v_cache,
                                 KP_GLOBAL const int *KP_RESTRICT slot_mapping,
                                 KP_GLOBAL const float *KP_RESTRICT k_scale,
                                 KP_GLOBAL const float *KP_RESTRICT v_scale, kp_kv_store_kargs p) {
    const int i = kp_group_id(1) * kp_local_size(0) + kp_local_id(0), t = kp_group_id(0);
    const int nk = p.h_kv * p.d, nv = p.has_value ? p.h_kv * p.dv : 0;
    if (i >= nk + nv) return;
    const int slot = slot_mapping[p.slot_off + t];
    if (slot < 0 || slot / p.block_size >= p.num_blocks) return;
    const kp_karg_i64 blk = slot / p.block_size, off = slot % p.block_size;
    float scale = 1.0f;
    if (i < nk) {
        const int h = i / p.d, c = i % p.d;
#if defined(KV_STORE_FP8)
        scale = k_scale[p.ks_off + (p.ks_per_block ? blk : 0)];
#endif
        float x = kp_load(key, p.k_off + (kp_karg_i64)t * p.k_s0 + (kp_karg_i64)h * p.k_s1 + c);
        kvs_put(k_cache, p.kc_off + blk * p.kc_s0 + off * p.kc_s1 + (kp_karg_i64)h * p.kc_s2 + c, x, scale);
    } else {
        const int j = i - nk, h = j / p.dv, c = j % p.dv;
#if defined(KV_STORE_FP8)
        scale = v_scale[p.vs_off + (p.vs_per_block ? blk : 0)];
#endif
        float x = kp_load(value, p.v_off + (kp_karg_i64)t * p.v_s0 + (kp_karg_i64)h * p.v_s1 + c);
        kvs_put(v_cache, p.vc_off + blk * p.vc_s0 + off * p.vc_s1 + (kp_karg_i64)h * p.vc_s2 + c, x, scale);
    }
}
