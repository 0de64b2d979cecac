/*
 * backends/opencl/ops/opencl_moe_common.h — what the OpenCL MoE ops share: kernel
 * argument lists, tensor views, and one launcher per kernel family (gate, align,
 * grouped GEMM, combine), so kp_moe_forward chains the same launches the single ops
 * make, in the caller's workspace.
 *
 * Every launcher takes dry_run: with it set, it runs the same selection (variant,
 * tiles, local-memory fit) and returns KP_OK or KP_ERR_UNSUPPORTED with the reason,
 * touching no buffer and enqueueing nothing. Kernels are created per launch and
 * released after the enqueue (cl_kernel argument state is not thread-safe).
 *
 * Index contents (expert ids, offsets, positions) are not validated here: that would
 * need a host round trip. The kernels clamp or skip anything out of range and never
 * read or write out of bounds; the CPU backend reports such contents as errors.
 */
#ifndef KPORT_OPENCL_MOE_COMMON_H
#define KPORT_OPENCL_MOE_COMMON_H

#include "opencl_args.h"
#include "opencl_program.h"

/* A buffer, an element offset into it, and a row stride in elements. mem NULL: absent. */
typedef struct kp_ocl_moe_view {
    cl_mem mem;
    int64_t off;
    int64_t ld;
} kp_ocl_moe_view;

/* The view of a 1-D or 2-D tensor (ld = strides[0] for 2-D). */
kp_ocl_moe_view kp_ocl_moe_view_of(const kp_tensor *t);
/* A region of a buffer given in bytes, as elements of elem_size bytes. */
kp_ocl_moe_view kp_ocl_moe_view_bytes(const kp_buffer *b, size_t byte_off, size_t elem_size, int64_t ld);

/* "-DKP_DTYPE_BF16" for the float dtypes. */
const char *kp_ocl_moe_dtype_define(kp_dtype t);

/* ---- kernel arguments ---- */

/* ---- launchers ---- */

/* Gate: logits [T, E] (dtype dt) -> ids / weights [T, k]. bias.mem may be NULL. */
kp_status kp_ocl_moe_gate_run(kp_stream *s, kp_ocl_moe_view logits, kp_dtype dt, int64_t t, int64_t e,
                              kp_ocl_moe_view bias, const kp_moe_routing *r, kp_ocl_moe_view ids, kp_ocl_moe_view weights,
                              int dry_run);

/* Align: ids [pairs] (contiguous) -> sorted [sorted_len], offsets [E+1], pos [pairs]. */
kp_status kp_ocl_moe_align_run(kp_stream *s, kp_ocl_moe_view ids, int64_t pairs, int32_t n_exp, int32_t block,
                               kp_ocl_moe_view sorted, int64_t sorted_len, kp_ocl_moe_view offsets, kp_ocl_moe_view pos,
                               int dry_run);

/* Epilogues of the grouped GEMM (moe_gemm.cl's mode). */
enum { KP_OCL_GG_STORE = 0, KP_OCL_GG_STORE_F32 = 1, KP_OCL_GG_SWIGLU = 2, KP_OCL_GG_COMBINE = 3 };

typedef struct kp_ocl_moe_gemm {
    kp_dtype dtype;   /* activations (and a 16-bit weight) storage type; out's for STORE/COMBINE */
    int a_f32;        /* a is f32 whatever dtype says (kp_moe_forward's SwiGLU output) */
    int w_fp8;        /* w is e4m3 with w_scale */
    kp_ocl_moe_view a;    /* [a_rows, K] */
    int64_t a_rows;
    kp_ocl_moe_view gather; /* gather_k > 0: row r of the GEMM reads a row gather[r] / gather_k */
    int32_t gather_k;
    kp_ocl_moe_view w;      /* [E, N, K]: off, ld = stride of N (w_se: stride of E) */
    int64_t w_se;
    kp_ocl_moe_view w_scale; /* f32 [E, ceil(N/128), K/128] contiguous */
    kp_ocl_moe_view offsets; /* int32 [E+1]; unused when dense_rows > 0 */
    int32_t n_exp;
    int64_t dense_rows;  /* > 0: one expert, rows [0, dense_rows) */
    int64_t m, n, k;     /* m: rows of out (offsets clamp to it) */
    int mode;
    int64_t n_out;       /* SwiGLU: columns of out (weight rows j and n_out + j) */
    kp_ocl_moe_view out;     /* STORE/COMBINE: dtype; STORE_F32/SWIGLU: f32 */
    kp_ocl_moe_view y, pos, tw; /* COMBINE: y f32 [y_rows, N], pos/tw [rows, topk] */
    int64_t y_rows;
    int32_t topk;
    int64_t max_rows_hint; /* > 0: no expert has more rows than this (decode) */
} kp_ocl_moe_gemm;

kp_status kp_ocl_moe_gemm_run(kp_stream *s, const kp_ocl_moe_gemm *g, int dry_run);

/* Combine: out[t] = sum_slot tw[t, slot] * y[pos[t, slot]]; y_f32: y is f32 (else dt). */
kp_status kp_ocl_moe_combine_run(kp_stream *s, kp_ocl_moe_view y, int y_f32, int64_t y_rows, kp_ocl_moe_view pos,
                                 kp_ocl_moe_view tw, int32_t topk, kp_ocl_moe_view out, kp_dtype dt, int64_t t,
                                 int64_t hidden, int dry_run);

#endif /* KPORT_OPENCL_MOE_COMMON_H */
