/*
 * backends/opencl/ops/opencl_attention_decode.c — kp_attention_decode on the OpenCL
 * backend: kernels/attention/attention_decode.cl (paged KV, split-KV with a combine
 * kernel). The launch itself is shared with kp_mla_decode (opencl_mla_decode.c):
 * MLA is the same kernel built with -DATTN_MLA, one KV head, V read from the K tile.
 */
#include "opencl_attention_decode.h"

#include <math.h>

#define ATTN_LOG2E 1.4426950408889634

/* Automatic split count: enough work-groups for every compute unit twice over, each
 * split at least two key tiles of the longest sequence the block table can hold. */
static int auto_splits(const kp_ocl_device *d, int64_t base_groups, int64_t max_len, int bn) {
    int64_t want = 2 * (int64_t)(d->desc.info.compute_units > 0 ? d->desc.info.compute_units : 1);
    if (base_groups >= want) return 1;
    int64_t ns = (want + base_groups - 1) / base_groups, tiles = (max_len + bn - 1) / bn;
    if (ns > tiles / 2) ns = tiles / 2;
    if (ns > 64) ns = 64;
    return ns < 1 ? 1 : (int)ns;
}

kp_status kp_ocl_paged_decode(kp_op op, kp_stream *s, const kp_ocl_paged_args *pa, int dry_run) {
    const kp_host_services *h = kp_ocl_host();
    const char *name = kp_backend_op_name(op);
    kp_ocl_device *d = kp_ocl_dev(s->device);
    const kp_tensor *q = pa->q, *kc = pa->k_cache, *vc = pa->v_cache;
    int dqk = (int)q->shape[3], dv = pa->dv;
    if (!kp_ocl_attn_dims_supported(dqk, dv, pa->mla))
        return h->set_error(KP_ERR_UNSUPPORTED, "%s on opencl: head dims %d/%d are not built (supported: %s)", name,
                            dqk, dv, pa->mla ? "576/512, 576/256" : "64, 128, 256, 192/128");
    int64_t b = q->shape[0], s_q = q->shape[1], h_q = q->shape[2], h_kv = kc->shape[2];
    int64_t num_blocks = kc->shape[0], block_size = kc->shape[1], max_blocks = pa->block_table->shape[1];
    if (b * s_q * h_q > INT32_MAX || num_blocks > INT32_MAX || max_blocks * block_size > INT32_MAX)
        return h->set_error(KP_ERR_UNSUPPORTED, "%s on opencl: more than 2^31 rows, blocks or keys", name);
    int group = (int)(h_q / h_kv);
    kp_ocl_attn_cfg cfg;
    kp_status st = kp_ocl_attn_config(d, name, q->dtype, dqk, dv, pa->mla, (int)(s_q * group), &cfg);
    if (st != KP_OK || dry_run) return st;
    if (b == 0) return KP_OK;

    int64_t rows = s_q * group, m_tiles = (rows + cfg.bm - 1) / cfg.bm;
    int ns = pa->num_splits > 0 ? pa->num_splits
                                : auto_splits(d, b * h_kv * m_tiles, max_blocks * block_size, cfg.bn);
    int64_t nrows_all = b * s_q * h_q;

    char opts[256];
    kp_ocl_attn_options(&cfg, opts, sizeof opts);
    cl_kernel k = NULL, kc2 = NULL;
    cl_mem part = NULL, part_lse = NULL; /* the queue's scratch (a reference of ours) */
    if ((st = kp_ocl_kernel_create(d, KP_OCL_SRC_ATTENTION_ATTENTION_DECODE, opts, "kp_attention_decode_paged", &k,
                                   NULL)) == KP_OK &&
        ns > 1)
        st = kp_ocl_kernel_create(d, KP_OCL_SRC_ATTENTION_ATTENTION_DECODE, opts, "kp_attention_combine", &kc2, NULL);
    if (st == KP_OK && ns > 1) {
        cl_int err = kp_ocl_scratch_get(d, kp_ocl_queue(s), (size_t)(ns * nrows_all * dv) * sizeof(float),
                                        (size_t)(ns * nrows_all) * sizeof(float), &part, &part_lse);
        if (err != CL_SUCCESS) st = kp_ocl_fail(err, "clCreateBuffer (split-KV partials)");
    }

    if (st == KP_OK) {
        const kp_tensor *bt = pa->block_table, *out = pa->out, *lse = pa->lse;
        kp_ocl_args a = {.k = k};
        kp_ocl_arg_tensor(&a, q);
        for (int i = 0; i < 3; i++) kp_ocl_arg_i64(&a, q->strides[i]);
        kp_ocl_arg_tensor(&a, kc);
        for (int i = 0; i < 3; i++) kp_ocl_arg_i64(&a, kc->strides[i]);
        kp_ocl_arg_tensor(&a, vc);
        for (int i = 0; i < 3; i++) kp_ocl_arg_i64(&a, vc->strides[i]);
        kp_ocl_arg_tensor(&a, out);
        for (int i = 0; i < 3; i++) kp_ocl_arg_i64(&a, out->strides[i]);
        kp_ocl_arg_tensor(&a, lse), kp_ocl_arg_i32(&a, lse->buffer != NULL);
        kp_ocl_arg_mem(&a, part), kp_ocl_arg_mem(&a, part_lse), kp_ocl_arg_i32(&a, ns);
        kp_ocl_arg_tensor(&a, bt), kp_ocl_arg_i64(&a, bt->strides[0]), kp_ocl_arg_i32(&a, (int)max_blocks);
        kp_ocl_arg_tensor(&a, pa->seq_lens), kp_ocl_arg_i32(&a, (int)num_blocks), kp_ocl_arg_i32(&a, (int)block_size);
        kp_ocl_arg_i32(&a, (int)s_q), kp_ocl_arg_i32(&a, (int)h_q), kp_ocl_arg_i32(&a, group);
        kp_ocl_arg_f32(&a, (float)(pa->scale * ATTN_LOG2E)), kp_ocl_arg_i32(&a, pa->causal);
        st = kp_ocl_args_status(&a, "kp_attention_decode_paged");
        if (st == KP_OK) {
            size_t global[3] = {(size_t)m_tiles * (size_t)cfg.nt, (size_t)h_kv, (size_t)(b * ns)};
            size_t local[3] = {(size_t)cfg.nt, 1, 1};
            cl_int err = clEnqueueNDRangeKernel(kp_ocl_queue(s), k, 3, NULL, global, local, 0, NULL, NULL);
            if (err != CL_SUCCESS) st = kp_ocl_fail(err, "clEnqueueNDRangeKernel (decode)");
        }
        if (st == KP_OK && ns > 1) {
            kp_ocl_args c = {.k = kc2};
            kp_ocl_arg_mem(&c, part), kp_ocl_arg_mem(&c, part_lse), kp_ocl_arg_i32(&c, ns);
            kp_ocl_arg_tensor(&c, out);
            for (int i = 0; i < 3; i++) kp_ocl_arg_i64(&c, out->strides[i]);
            kp_ocl_arg_tensor(&c, lse), kp_ocl_arg_i32(&c, lse->buffer != NULL);
            kp_ocl_arg_i32(&c, (int)s_q), kp_ocl_arg_i32(&c, (int)h_q), kp_ocl_arg_i32(&c, dv);
            st = kp_ocl_args_status(&c, "kp_attention_combine");
            if (st == KP_OK) {
                size_t wg = 64, global = (size_t)nrows_all * wg;
                cl_int err = clEnqueueNDRangeKernel(kp_ocl_queue(s), kc2, 1, NULL, &global, &wg, 0, NULL, NULL);
                if (err != CL_SUCCESS) st = kp_ocl_fail(err, "clEnqueueNDRangeKernel (combine)");
            }
        }
    }
    /* the cache keeps its own reference: the queue is in order, so the next call on it
     * reuses the partials only after this one's kernels */
    if (part) clReleaseMemObject(part);
    if (part_lse) clReleaseMemObject(part_lse);
    if (kc2) clReleaseKernel(kc2);
    if (k) clReleaseKernel(k);
    return st == KP_OK ? st : h->add_context(st, "%s", name);
}

kp_status kp_ocl_op_attention_decode(kp_op op, kp_stream *s, const void *params, int dry_run) {
    const kp_attention_decode_params *p = params;
    kp_ocl_paged_args a = {&p->q, &p->k_cache, &p->v_cache, &p->block_table, &p->seq_lens, &p->out, &p->lse,
                           p->softmax_scale, p->causal, p->num_splits, (int)p->v_cache.shape[3], 0};
    return kp_ocl_paged_decode(op, s, &a, dry_run);
}
