/*
 * backends/opencl/ops/opencl_attention_prefill.c — kp_attention_prefill on the OpenCL
 * backend: kernels/attention/attention_prefill.cl, one launch.
 *
 * Grid (m_tiles * threads, h_kv, B + 1): m_tiles from max_seqlen_q (the kernel loops
 * when a sequence has more rows; the last z slice writes the rows past
 * cu_seqlens_q[B]). Head dims 64, 128, 256 and 192/128; others are unsupported.
 * Launch policy, scratch and index contents: see opencl_attention_common.h.
 */
#include "opencl_attention_common.h"

#include <math.h>

#define ATTN_LOG2E 1.4426950408889634

kp_status kp_ocl_op_attention_prefill(kp_op op, kp_stream *s, const void *params, int dry_run) {
    const kp_attention_prefill_params *p = params;
    const kp_host_services *h = kp_ocl_host();
    const char *name = kp_backend_op_name(op);
    kp_ocl_device *d = kp_ocl_dev(s->device);
    int dqk = (int)p->q.shape[2], dv = (int)p->v.shape[2];
    if (!kp_ocl_attn_dims_supported(dqk, dv, 0))
        return h->set_error(KP_ERR_UNSUPPORTED,
                            "%s on opencl: head dims %d/%d are not built (supported: 64, 128, 256, 192/128)", name,
                            dqk, dv);
    int64_t total_q = p->q.shape[0], total_k = p->k.shape[0], h_q = p->q.shape[1], h_kv = p->k.shape[1];
    int64_t nb = p->cu_seqlens_q.shape[0] - 1;
    if (total_q > INT32_MAX || total_k > INT32_MAX || nb + 1 > INT32_MAX / 2)
        return h->set_error(KP_ERR_UNSUPPORTED, "%s on opencl: more than 2^31 tokens", name);
    kp_ocl_attn_cfg cfg;
    kp_status st = kp_ocl_attn_config(d, name, p->q.dtype, dqk, dv, 0, 0, &cfg);
    if (st != KP_OK || dry_run) return st;
    if (total_q == 0) return KP_OK;

    char opts[256];
    kp_ocl_attn_options(&cfg, opts, sizeof opts);
    cl_kernel k = NULL;
    if ((st = kp_ocl_kernel_create(d, KP_OCL_SRC_ATTENTION_ATTENTION_PREFILL, opts, "kp_attention_prefill", &k,
                                   NULL)) != KP_OK)
        return h->add_context(st, "%s", name);

    int group = (int)(h_q / h_kv);
    int64_t rows = (int64_t)(p->max_seqlen_q > 0 ? p->max_seqlen_q : 1) * group;
    int64_t m_tiles = (rows + cfg.bm - 1) / cfg.bm;
    kp_ocl_args a = {.k = k};
    kp_ocl_arg_tensor(&a, &p->q), kp_ocl_arg_i64(&a, p->q.strides[0]), kp_ocl_arg_i64(&a, p->q.strides[1]);
    kp_ocl_arg_tensor(&a, &p->k), kp_ocl_arg_i64(&a, p->k.strides[0]), kp_ocl_arg_i64(&a, p->k.strides[1]);
    kp_ocl_arg_tensor(&a, &p->v), kp_ocl_arg_i64(&a, p->v.strides[0]), kp_ocl_arg_i64(&a, p->v.strides[1]);
    kp_ocl_arg_tensor(&a, &p->out), kp_ocl_arg_i64(&a, p->out.strides[0]), kp_ocl_arg_i64(&a, p->out.strides[1]);
    kp_ocl_arg_tensor(&a, &p->lse), kp_ocl_arg_i32(&a, p->lse.buffer != NULL);
    kp_ocl_arg_tensor(&a, &p->cu_seqlens_q), kp_ocl_arg_tensor(&a, &p->cu_seqlens_k);
    kp_ocl_arg_i32(&a, (int)nb), kp_ocl_arg_i32(&a, (int)total_q), kp_ocl_arg_i32(&a, (int)total_k);
    kp_ocl_arg_i32(&a, group), kp_ocl_arg_f32(&a, (float)(p->softmax_scale * ATTN_LOG2E));
    kp_ocl_arg_i32(&a, p->causal), kp_ocl_arg_i32(&a, p->window_left), kp_ocl_arg_i32(&a, p->window_right);
    st = kp_ocl_args_status(&a, "kp_attention_prefill");
    if (st == KP_OK) {
        size_t global[3] = {(size_t)m_tiles * (size_t)cfg.nt, (size_t)h_kv, (size_t)nb + 1};
        size_t local[3] = {(size_t)cfg.nt, 1, 1};
        cl_int err = clEnqueueNDRangeKernel(kp_ocl_queue(s), k, 3, NULL, global, local, 0, NULL, NULL);
        if (err != CL_SUCCESS) st = h->add_context(kp_ocl_fail(err, "clEnqueueNDRangeKernel"), "%s", name);
    }
    clReleaseKernel(k);
    return st;
}
