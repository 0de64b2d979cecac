/*
 * backends/gpu/ops/gpu_kv_cache_store.c — kp_kv_cache_store on the GPU backends
 * (kernels/attention/kv_cache_store.cl): one launch writes every token's K and V rows,
 * quantizing to e4m3 when the caches are FP8. One generation of kernel: a copy has no
 * tiles to plan.
 */
#include "gpu_ops.h"

#include <stdio.h>

void kp_gpu_kv_store_options(kp_dtype dt, int fp8, char *buf, size_t n) {
    snprintf(buf, n, "%s%s", kp_gpu_dtype_define(dt), fp8 ? " -DKV_STORE_FP8" : "");
}

kp_status kp_gpu_kv_cache_store(kp_gpu_ctx *c, const kp_kv_cache_store_params *p, int dry_run) {
    const kp_tensor *key = &p->key, *val = &p->value, *kc = &p->k_cache, *vc = &p->v_cache;
    const int fp8 = kc->dtype == KP_FP8_E4M3, has_v = val->buffer != NULL;
    char opts[96];
    kp_gpu_kv_store_options(key->dtype, fp8, opts, sizeof opts);
    kp_status st = kp_gpu_variant_ok(c, KP_GPU_SRC_KV_STORE, opts);
    int64_t t = key->shape[0], h_kv = key->shape[1], d = key->shape[2], dv = has_v ? val->shape[2] : 0;
    int64_t cols = h_kv * (d + dv); /* each factor below 2^31 (gpu_limits.c) */
    int64_t chunks = (cols + KP_GPU_KV_STORE_WG - 1) / KP_GPU_KV_STORE_WG;
    if (st == KP_OK && chunks > 65535)
        st = c->host->set_error(KP_ERR_UNSUPPORTED, "kv_cache_store on %s: h_kv * (d + dv) is %lld; the kernel "
                                "takes up to 65535 * %d elements per token (a grid dimension's limit)", c->t->name,
                                (long long)cols, KP_GPU_KV_STORE_WG);
    static const char kernel[] = "kp_kv_cache_store"; /* one generation */
    kp_gpu_kernel_note(c, KP_GPU_NOTE_OP, 1, kernel);
    if (st != KP_OK || dry_run || t == 0 || kc->shape[0] == 0) return st;
    kp_kv_store_kargs ka = {
        .k_off = kp_gpu_elem_offset(key), .k_s0 = key->strides[0], .k_s1 = key->strides[1],
        .v_off = has_v ? kp_gpu_elem_offset(val) : 0, .v_s0 = has_v ? val->strides[0] : 0,
        .v_s1 = has_v ? val->strides[1] : 0,
        .kc_off = kp_gpu_elem_offset(kc), .kc_s0 = kc->strides[0], .kc_s1 = kc->strides[1], .kc_s2 = kc->strides[2],
        .vc_off = has_v ? kp_gpu_elem_offset(vc) : 0, .vc_s0 = has_v ? vc->strides[0] : 0,
        .vc_s1 = has_v ? vc->strides[1] : 0, .vc_s2 = has_v ? vc->strides[2] : 0,
        .slot_off = kp_gpu_elem_offset(&p->slot_mapping),
        .ks_off = fp8 ? kp_gpu_elem_offset(&p->k_scale) : 0,
        .vs_off = fp8 && has_v ? kp_gpu_elem_offset(&p->v_scale) : 0,
        .has_value = has_v, .h_kv = (int32_t)h_kv, .d = (int32_t)d, .dv = (int32_t)dv,
        .block_size = (int32_t)kc->shape[1], .num_blocks = (int32_t)kc->shape[0],
        .ks_per_block = fp8 && p->k_scale.shape[0] != 1, .vs_per_block = fp8 && has_v && p->v_scale.shape[0] != 1,
    };
    kp_gpu_launch l;
    kp_gpu_launch_init(&l, KP_GPU_SRC_KV_STORE, opts, kernel);
    kp_gpu_arg_tensor(&l, key), kp_gpu_arg_tensor(&l, val), kp_gpu_arg_tensor(&l, kc), kp_gpu_arg_tensor(&l, vc);
    kp_gpu_arg_tensor(&l, &p->slot_mapping), kp_gpu_arg_tensor(&l, &p->k_scale), kp_gpu_arg_tensor(&l, &p->v_scale);
    kp_gpu_arg_kargs(&l, &ka, sizeof ka);
    l.groups[0] = (uint64_t)t, l.groups[1] = (uint64_t)chunks; /* tokens first: CUDA's y takes 65535 */
    l.local[0] = KP_GPU_KV_STORE_WG;
    st = kp_gpu_enqueue(c, &l);
    return st == KP_OK ? st : c->host->add_context(st, "kv_cache_store");
}
