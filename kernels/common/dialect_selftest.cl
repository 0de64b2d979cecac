/*
 * kernels/common/dialect_selftest.cl - one kernel that touches every feature of
 * kp_dialect.h and kp_tile_mma.h, so the dialect is compiled for every target (OpenCL C,
 * CUDA via nvcc -x cu, HIP via hipcc -x hip) and run on each backend's devices against a
 * float64 host reference (tests/test_opencl.c).
 *
 * Why ".cl": the file is OpenCL C first - clang, llvm-spirv and editors take it as is -
 * and the CUDA/HIP compilers are told its language with -x.
 *
 * Launch: 1-D, work-group KP_SELFTEST_WG (>= 32, default 64), global = groups * WG >= n.
 *   y[i]           = 1.5 * x[i] - 0.25, stored in the dtype          (load -> f32 -> store)
 *   rev[i]         = x of the mirrored item in the same work-group,  (local exchange)
 *                    0 past n
 *   stats[2g+0/1]  = sum / max of group g's x (0 / -inf past n)      (reductions)
 *   total[0]      += every group's sum (f32 atomic);  count[0] += 1 per valid item (i32 atomic)
 *   c[16][16]      = A[16][16] * Bt[16][16]^T by work-group 0         (tile-MMA)
 *                    bf16 operands, or f16 ones under KP_DTYPE_F16; f32 inputs round to bf16
 */
#include "kp_dialect.h"
#include "common/kp_tile_mma.h"

#ifndef KP_SELFTEST_WG
#define KP_SELFTEST_WG 64
#endif

#if defined(KP_DTYPE_F16)
#define ST_TO_U16(p, i) ((p)[i])
#define ST_MMA kp_mma_16x8x16_f16
#elif defined(KP_DTYPE_BF16)
#define ST_TO_U16(p, i) ((p)[i])
#define ST_MMA kp_mma_16x8x16_bf16
#else
#define ST_TO_U16(p, i) kp_f32_to_bf16((p)[i])
#define ST_MMA kp_mma_16x8x16_bf16
#endif

KP_KERNEL void kp_dialect_selftest(KP_GLOBAL const kp_storage_t *KP_RESTRICT x, int n,
                                   KP_GLOBAL kp_storage_t *KP_RESTRICT y,
                                   KP_GLOBAL float *KP_RESTRICT rev,
                                   KP_GLOBAL float *KP_RESTRICT stats,
                                   KP_GLOBAL float *KP_RESTRICT total,
                                   KP_GLOBAL int *KP_RESTRICT count,
                                   KP_GLOBAL const kp_storage_t *KP_RESTRICT a,
                                   KP_GLOBAL const kp_storage_t *KP_RESTRICT bt,
                                   KP_GLOBAL float *KP_RESTRICT c) {
    KP_LOCAL(float, scratch, KP_SELFTEST_WG);
    KP_LOCAL(float, xchg, KP_SELFTEST_WG);
    KP_LOCAL(kp_u16, as, 16 * 16);
    KP_LOCAL(kp_u16, bs, 16 * 16);

    int i = kp_global_id(0), lid = kp_local_id(0), wg = kp_local_size(0);
    int valid = i < n;
    float v = valid ? kp_load(x, i) : 0.0f;

    if (valid) kp_store(y, i, 1.5f * v - 0.25f);

    float sum = kp_reduce_sum(v, scratch);
    float mx = kp_reduce_max(valid ? v : -KP_INFINITY, scratch);
    if (lid == 0) {
        stats[2 * kp_group_id(0)] = sum;
        stats[2 * kp_group_id(0) + 1] = mx;
        kp_atomic_add_f32(total, sum);
    }
    if (valid) kp_atomic_add_i32(count, 1);

    xchg[lid] = v;
    kp_barrier();
    if (valid) rev[i] = xchg[wg - 1 - lid];

    if (kp_group_id(0) == 0) { /* uniform per work-group: the barrier below is safe */
        for (int e = lid; e < 16 * 16; e += wg) {
            as[e] = ST_TO_U16(a, e);
            bs[e] = ST_TO_U16(bt, e);
        }
        kp_barrier();
        if (lid < KP_MMA_LANES) { /* one whole warp on NVIDIA */
            int lane = kp_mma_lane();
            kp_mma_a fa;
            kp_mma_b fb;
            kp_mma_load_a(&fa, as, 16, lane);
            for (int nb = 0; nb < 2; ++nb) {
                kp_mma_acc acc;
                kp_mma_acc_zero(&acc);
                kp_mma_load_b(&fb, bs + nb * 8 * 16, 16, lane);
                ST_MMA(&acc, &fa, &fb);
                kp_mma_store_acc_f32(&acc, c + nb * 8, 16, lane);
            }
        }
    }
}
