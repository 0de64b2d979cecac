/*
 * core/ops/op_kv_cache_store.c — argument rules of kp_kv_cache_store (kport.h).
 */
#include "internal.h"

/* A cache's scale: required (f32 [1] or [num_blocks]) when the cache is e4m3, absent otherwise. */
static kp_status check_cache_scale(const char *op, const char *cname, const kp_tensor *cache, const char *sname,
                                   const kp_tensor *scale) {
    if (cache->dtype != KP_FP8_E4M3) {
        if (scale->buffer)
            return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: %s is given but %s is %s, not FP8 e4m3", op, sname,
                                cname, kp_dtype_name(cache->dtype));
        return KP_OK;
    }
    if (!scale->buffer)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: %s is FP8 e4m3, so %s (f32 [1] or [num_blocks]) is required",
                            op, cname, sname);
    if (scale->shape[0] != 1 && scale->shape[0] != cache->shape[0])
        return kp_set_error(KP_ERR_INVALID_SHAPE,
                            "%s: %s.shape[0] is %lld; it must be 1 (per tensor) or num_blocks of %s (%lld)", op,
                            sname, (long long)scale->shape[0], cname, (long long)cache->shape[0]);
    return KP_OK;
}

kp_status kp_check_fp8_cache(const char *op, const char *cname, const kp_tensor *cache, const char *sname,
                             const kp_tensor *scale, const kp_tensor *q) {
    kp_status st;
    if (cache->dtype != KP_FP8_E4M3 && (st = kp_check_same_dtype(op, cname, cache, "q", q))) return st;
    if (scale->buffer && (scale->dtype != KP_F32 || scale->ndim != 1))
        return kp_set_error(KP_ERR_INVALID_DTYPE, "%s: %s must be f32 with one dimension", op, sname);
    return check_cache_scale(op, cname, cache, sname, scale);
}

kp_status kp_validate_kv_cache_store(kp_device *d, const void *params) {
    const char *op = "kv_cache_store";
    const kp_kv_cache_store_params *p = params;
    const kp_tensor_rule rules[] = {
        {"key", &p->key, false, false, KP_DT_FLOAT, 3, false},
        {"value", &p->value, true, false, KP_DT_FLOAT, 3, false},
        {"k_cache", &p->k_cache, false, true, KP_DT_FLOAT | KP_DT(KP_FP8_E4M3), 4, false},
        {"v_cache", &p->v_cache, true, true, KP_DT_FLOAT | KP_DT(KP_FP8_E4M3), 4, false},
        {"slot_mapping", &p->slot_mapping, false, false, KP_DT(KP_I32), 1, true},
        {"k_scale", &p->k_scale, true, false, KP_DT(KP_F32), 1, true},
        {"v_scale", &p->v_scale, true, false, KP_DT(KP_F32), 1, true},
    };
    kp_status st = kp_validate_tensors(op, d, rules, (int)(sizeof rules / sizeof rules[0]));
    if (st != KP_OK) return st;
    const int has_v = p->value.buffer != NULL;
    if (has_v != (p->v_cache.buffer != NULL))
        return kp_set_error(KP_ERR_INVALID_ARGUMENT,
                            "%s: value and v_cache go together (both absent: an MLA latent cache); got %s", op,
                            has_v ? "value without v_cache" : "v_cache without value");
    if (!has_v && p->v_scale.buffer)
        return kp_set_error(KP_ERR_INVALID_ARGUMENT, "%s: v_scale is given but there is no v_cache", op);
    if (p->k_cache.dtype != KP_FP8_E4M3 && (st = kp_check_same_dtype(op, "k_cache", &p->k_cache, "key", &p->key)))
        return st;
    if ((st = check_cache_scale(op, "k_cache", &p->k_cache, "k_scale", &p->k_scale))) return st;
    int64_t t = p->key.shape[0], h_kv = p->key.shape[1], dk = p->key.shape[2];
    int64_t num_blocks = p->k_cache.shape[0], block_size = p->k_cache.shape[1];
    if (h_kv < 1 || dk < 1)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: key must have h_kv >= 1 and d >= 1 (got %lld, %lld)", op,
                            (long long)h_kv, (long long)dk);
    if (block_size < 1)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: k_cache.shape[1] (block_size) is %lld; it must be >= 1", op,
                            (long long)block_size);
    int64_t slots;
    if (__builtin_mul_overflow(num_blocks, block_size, &slots))
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: num_blocks * block_size (%lld * %lld) overflows", op,
                            (long long)num_blocks, (long long)block_size);
    if ((st = kp_check_dim(op, "slot_mapping", &p->slot_mapping, 0, t, "T of key")) ||
        (st = kp_check_dim(op, "k_cache", &p->k_cache, 2, h_kv, "h_kv of key")) ||
        (st = kp_check_dim(op, "k_cache", &p->k_cache, 3, dk, "d of key")))
        return st;
    if (!has_v) return KP_OK;
    if ((st = kp_check_same_dtype(op, "value", &p->value, "key", &p->key)) ||
        (st = kp_check_same_dtype(op, "v_cache", &p->v_cache, "k_cache", &p->k_cache)) ||
        (st = check_cache_scale(op, "v_cache", &p->v_cache, "v_scale", &p->v_scale)))
        return st;
    if ((st = kp_check_dim(op, "value", &p->value, 0, t, "T of key")) ||
        (st = kp_check_dim(op, "value", &p->value, 1, h_kv, "h_kv of key")) ||
        (st = kp_check_dim(op, "v_cache", &p->v_cache, 0, num_blocks, "num_blocks of k_cache")) ||
        (st = kp_check_dim(op, "v_cache", &p->v_cache, 1, block_size, "block_size of k_cache")) ||
        (st = kp_check_dim(op, "v_cache", &p->v_cache, 2, h_kv, "h_kv of key")) ||
        (st = kp_check_dim(op, "v_cache", &p->v_cache, 3, p->value.shape[2], "dv of value")))
        return st;
    if (p->value.shape[2] < 1)
        return kp_set_error(KP_ERR_INVALID_SHAPE, "%s: value must have dv >= 1", op);
    return KP_OK;
}
