/*
 * kernels/moe/moe_gemm_sm90.cl - the grouped GEMM on sm_90a's wgmma + TMA tier (issue 14):
 * out[r, :] = a[r, :] . w[e]^T for the rows r of expert e (offsets[e] .. offsets[e+1],
 * clamped to [0, m], as moe_gemm_common.h's kpg_find reads them), 16-bit a and w, out in
 * the dtype (KP_MOE_GEMM_STORE) or f32 (KP_MOE_GEMM_STORE_F32). CUDA sm_90a only: built into
 * the cuda plugin as sm_90a SASS alone (build_fatbins.py reads the KP_ARCHS line below),
 * never for OpenCL or HIP. The planner (backends/gpu/ops/gpu_grouped_gemm_sm90.c) sends
 * every other case (gather, SwiGLU/combine, e4m3 weights or activations, f32 activations,
 * K % 64, unaligned rows, w experts not contiguous) to generation 2.
 *
 * KP_ARCHS: sm_90a
 *
 * kp_grouped_gemm_sm90: persistent and warp-specialised, 384 threads, one CTA per SM.
 *   Tiles: 128 rows of one expert x S90_BN columns (128 or 256), listed expert by expert,
 *     columns fastest: tile t is (m-tile t / tiles_n of the concatenated experts, n-tile
 *     t % tiles_n). The CTAs stride over the list (t = blockIdx.x, += gridDim.x); the list's
 *     m-tile prefix over the experts is built from `offsets` on the device, in shared
 *     memory, at the kernel's start, so the host never reads the offsets.
 *   Warpgroup 0, the producer (setmaxnreg.dec to S90_REGS_PRODUCER): one thread loads, for
 *     each K step of 64, the A box [128 rows, 64 k] and the W box [S90_BN rows, 64 k] by
 *     TMA (128-byte swizzle) into stage s, after the consumers released it (empty[s]),
 *     announcing the stage's bytes on full[s].
 *   Warpgroups 1 and 2, the consumers (setmaxnreg.inc to S90_REGS_CONSUMER): 64 rows each;
 *     per K step, wait full[s], four wgmma m64nBNk16 on descriptors advanced by 32 bytes
 *     along the swizzled row, commit, and once the previous step's group has retired
 *     (wgmma.wait_group 1) release that step's stage. After the K loop: the accumulators
 *     straight to global memory, rows past the expert's end and columns past N not written.
 *   Rows of the A box past the expert's end are other experts' rows (or zeros past a_rows:
 *   TMA fills out-of-bounds elements with zeros and still counts their bytes); their
 *   results are discarded, so no expert reads another's weights into its output.
 * Options: KP_DTYPE_BF16 / KP_DTYPE_F16, S90_BN (128, 256), S90_STAGES (2..8).
 */
#include "kp_dialect.h"
#include "moe_kargs.h"
#include "moe_gemm_sm90_kargs.h"
#include "common/kp_tile_sm90.h"

#if !defined(KP_DTYPE_BF16) && !defined(KP_DTYPE_F16)
#error "moe_gemm_sm90.cl takes bf16 or f16 operands"
#endif
#ifndef S90_BN
#define S90_BN 128
#endif
#ifndef S90_STAGES
#define S90_STAGES 4
#endif
#if S90_BN != 128 && S90_BN != 256
#error "moe_gemm_sm90.cl: S90_BN is 128 or 256"
#endif
#if S90_STAGES < 2 || S90_STAGES > 8
#error "moe_gemm_sm90.cl: 2 <= S90_STAGES <= 8"
#endif

#define S90_BM KP_MOE_GEMM_SM90_BM
#define S90_BK KP_MOE_GEMM_SM90_BK
#define S90_A_BYTES (S90_BM * S90_BK * 2)
#define S90_B_BYTES (S90_BN * S90_BK * 2)
#define S90_STAGE_BYTES KP_MOE_GEMM_SM90_STAGE_BYTES(S90_BN)
#define S90_ACC (S90_BN / 2) /* f32 accumulators a consumer thread holds: 64 rows x BN / 128 */
/* 168 registers a thread at launch (65536 / 384, rounded down to 8); the producer gives
 * 128 x 128 of them to the consumers: 40 + 2 x 232 = 3 x 168. */
#define S90_REGS_PRODUCER 40
#define S90_REGS_CONSUMER 232

#if defined(KP_DTYPE_F16)
#define S90_WGMMA(n) kp_wgmma_m64n##n##k16_f16
#define S90_TO16(f) kp_f32_to_f16(f)
#else
#define S90_WGMMA(n) kp_wgmma_m64n##n##k16_bf16
#define S90_TO16(f) kp_f32_to_bf16(f)
#endif
#define S90_WGMMA_(n) S90_WGMMA(n)
#define S90_MMA S90_WGMMA_(S90_BN)

/* Expert e's clamped rows [lo, hi) (dense_rows > 0: the one expert, rows [0, min(dense_rows, m))). */
KP_FN void s90_rows(KP_GLOBAL const int *offsets, const kp_moe_gemm_sm90_kargs *p, int e, int *lo, int *hi) {
    if (p->dense_rows > 0) {
        *lo = 0, *hi = p->dense_rows < p->m ? p->dense_rows : p->m;
        return;
    }
    int l = offsets[p->offsets_off + e], h = offsets[p->offsets_off + e + 1];
    l = l < 0 ? 0 : l > p->m ? p->m : l;
    h = h < l ? l : h > p->m ? p->m : h;
    *lo = l, *hi = h;
}

/* Tile t -> expert, its first row and end, first column; 0 when t is past the list.
 * prefix[e]: m-tiles of experts 0 .. e-1 (prefix[n] = all of them). */
KP_FN int s90_tile(KP_GLOBAL const int *offsets, const kp_moe_gemm_sm90_kargs *p, KP_LOCAL_MEM const int *prefix,
                   int nexp, int tiles_n, int t, int *e_out, int *row0, int *hi, int *n0) {
    const int mt = t / tiles_n;
    if (mt >= prefix[nexp]) return 0;
    int lo_e = 0, hi_e = nexp - 1; /* the last e with prefix[e] <= mt (experts without rows repeat a value) */
    while (lo_e < hi_e) {
        int mid = (lo_e + hi_e + 1) / 2;
        if (prefix[mid] <= mt) lo_e = mid;
        else hi_e = mid - 1;
    }
    int lo;
    s90_rows(offsets, p, lo_e, &lo, hi);
    *e_out = lo_e;
    *row0 = lo + (mt - prefix[lo_e]) * S90_BM;
    *n0 = (t % tiles_n) * S90_BN;
    return 1;
}

/* Two adjacent outputs (r, n) and (r, n + 1), n + 1 < N when both. */
KP_FN void s90_store2(KP_GLOBAL kp_storage_t *out, KP_GLOBAL float *outf, long long o, float v0, float v1, int both,
                      int f32) {
    if (f32) {
        if (both && (o & 1) == 0) {
            *(KP_GLOBAL float2 *)(outf + o) = make_float2(v0, v1);
        } else {
            outf[o] = v0;
            if (both) outf[o + 1] = v1;
        }
    } else if (both && (o & 1) == 0) {
        *(KP_GLOBAL kp_u32 *)(out + o) = (kp_u32)S90_TO16(v0) | ((kp_u32)S90_TO16(v1) << 16);
    } else {
        out[o] = S90_TO16(v0);
        if (both) out[o + 1] = S90_TO16(v1);
    }
}

KP_KERNEL void KP_LAUNCH_BOUNDS(384, 1)
    kp_grouped_gemm_sm90(KP_GLOBAL const int *KP_RESTRICT offsets, KP_GLOBAL kp_storage_t *out,
                         KP_GLOBAL float *outf, kp_moe_gemm_sm90_kargs p, const __grid_constant__ kp_tensor_map ta,
                         const __grid_constant__ kp_tensor_map tw) {
    KP_DYNAMIC_LOCAL(s90_smem);
    /* the stages at the first 1024-byte boundary (the 128-byte swizzle's repeat) */
    const unsigned base = kp_local_addr32(s90_smem);
    KP_LOCAL_MEM unsigned char *stages = (KP_LOCAL_MEM unsigned char *)s90_smem + ((1024u - (base & 1023u)) & 1023u);
    KP_LOCAL_MEM unsigned long long *full = (KP_LOCAL_MEM unsigned long long *)(stages + S90_STAGES * S90_STAGE_BYTES);
    KP_LOCAL_MEM unsigned long long *empty = full + S90_STAGES;
    KP_LOCAL_MEM int *prefix = (KP_LOCAL_MEM int *)(empty + S90_STAGES);

    const int tid = kp_local_id(0);
    const int nexp = p.dense_rows > 0 ? 1 : p.n_exp;
    const int tiles_n = (p.n + S90_BN - 1) / S90_BN, ksteps = p.k / S90_BK;
    if (tid == 0) {
        for (int s = 0; s < S90_STAGES; ++s) {
            kp_mbar_init(&full[s], 1);  /* the producer's arrive.expect_tx */
            kp_mbar_init(&empty[s], 2); /* one arrival per consumer warpgroup */
        }
        kp_mbar_fence_init();
        prefix[0] = 0;
    }
    for (int e = tid; e < nexp; e += 384) { /* m-tiles of each expert, then their prefix */
        int lo, hi;
        s90_rows(offsets, &p, e, &lo, &hi);
        prefix[e + 1] = (hi - lo + S90_BM - 1) / S90_BM;
    }
    kp_barrier();
    if (tid == 0)
        for (int e = 0; e < nexp; ++e) prefix[e + 1] += prefix[e];
    kp_barrier();
    const int tiles = prefix[nexp] * tiles_n;

    if (tid < 128) { /* ---- producer warpgroup ---- */
        kp_setmaxnreg_dec(S90_REGS_PRODUCER);
        if (tid != 0) return;
        int s = 0;
        unsigned phase = 0;
        for (int t = kp_group_id(0); t < tiles; t += kp_num_groups(0)) {
            int e, row0, hi, n0;
            s90_tile(offsets, &p, prefix, nexp, tiles_n, t, &e, &row0, &hi, &n0);
            for (int kb = 0; kb < ksteps; ++kb) {
                /* a fresh barrier counts its (never run) previous phase, parity 1, as complete */
                kp_mbar_wait(&empty[s], phase ^ 1u);
                KP_LOCAL_MEM unsigned char *st = stages + s * S90_STAGE_BYTES;
                kp_mbar_expect_tx(&full[s], S90_STAGE_BYTES);
                kp_tma_load_2d(st, &ta, kb * S90_BK, row0, &full[s]);
                kp_tma_load_2d(st + S90_A_BYTES, &tw, kb * S90_BK, e * p.n + n0, &full[s]);
                if (++s == S90_STAGES) s = 0, phase ^= 1u;
            }
        }
        return;
    }

    /* ---- consumer warpgroups: rows 64 wg .. 64 wg + 63 of each tile ---- */
    kp_setmaxnreg_inc(S90_REGS_CONSUMER);
    const int wg = tid / 128 - 1, lt = tid % 128, w = lt / 32, l = lt % 32;
    int s = 0;
    unsigned phase = 0;
    float acc[S90_ACC];
    for (int t = kp_group_id(0); t < tiles; t += kp_num_groups(0)) {
        int e, row0, hi, n0;
        s90_tile(offsets, &p, prefix, nexp, tiles_n, t, &e, &row0, &hi, &n0);
#pragma unroll
        for (int i = 0; i < S90_ACC; ++i) acc[i] = 0.0f;
        int prev = -1;
        for (int kb = 0; kb < ksteps; ++kb) {
            kp_mbar_wait(&full[s], phase);
            const unsigned a_addr = kp_local_addr32(stages + s * S90_STAGE_BYTES) + wg * 64 * 128;
            const unsigned long long da = KP_SM90_DESC_KMAJOR(a_addr, KP_SM90_SWIZZLE_128B);
            const unsigned long long db =
                KP_SM90_DESC_KMAJOR(kp_local_addr32(stages + s * S90_STAGE_BYTES + S90_A_BYTES), KP_SM90_SWIZZLE_128B);
#pragma unroll
            for (int i = 0; i < S90_ACC; ++i) kp_wgmma_fence_operand(&acc[i]);
            kp_wgmma_fence();
#pragma unroll
            for (int k = 0; k < S90_BK / 16; ++k)
                S90_MMA(acc, KP_SM90_DESC_ADVANCE(da, 32 * k), KP_SM90_DESC_ADVANCE(db, 32 * k), 1);
            kp_wgmma_commit();
#pragma unroll
            for (int i = 0; i < S90_ACC; ++i) kp_wgmma_fence_operand(&acc[i]);
            kp_wgmma_wait(1); /* the previous step's group has read its stage: release it */
            if (prev >= 0 && lt == 0) kp_mbar_arrive(&empty[prev]);
            prev = s;
            if (++s == S90_STAGES) s = 0, phase ^= 1u;
        }
        kp_wgmma_wait(0);
#pragma unroll
        for (int i = 0; i < S90_ACC; ++i) kp_wgmma_fence_operand(&acc[i]);
        if (prev >= 0 && lt == 0) kp_mbar_arrive(&empty[prev]);

        /* epilogue: d[4 i + j] is row 16 w + l / 4 + 8 (j / 2), column 8 i + 2 (l % 4) + (j % 2) */
        const int f32 = p.mode == KP_MOE_GEMM_STORE_F32;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r = row0 + wg * 64 + 16 * w + l / 4 + 8 * h;
            if (r >= hi) continue;
            const long long orow = p.out_off + (long long)r * p.out_ld;
#pragma unroll
            for (int i = 0; i < S90_BN / 8; ++i) {
                const int n = n0 + 8 * i + 2 * (l % 4);
                if (n >= p.n) continue;
                s90_store2(out, outf, orow + n, acc[4 * i + 2 * h], acc[4 * i + 2 * h + 1], n + 1 < p.n, f32);
            }
        }
    }
}
