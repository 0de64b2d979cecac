/*
 * kernels/moe/moe_gemm_sm90_sched.h - what the sm_90a tier's grouped GEMMs share
 * (moe_gemm_sm90.cl: bf16/f16; moe_gemm_fp8_sm90.cl: W8A8 e4m3): the device tile scheduler
 * over (expert, m-tile, n-tile), the CTA's setup (stage barriers and the m-tile prefix), the
 * TMA producer loop and the masked epilogue. CUDA sm_90a only (common/kp_tile_sm90.h).
 *
 * The includer defines, before including it:
 *   S90_BM, S90_BN          the tile (S90_BM = 128: two consumer warpgroups of 64 rows)
 *   S90_BK                  elements of K a stage holds (one 128-byte swizzle span: 64
 *                           16-bit elements, 128 e4m3)
 *   S90_STAGES              the pipeline's depth
 *   S90_A_BYTES, S90_STAGE_BYTES  a stage: the A box [S90_BM x S90_BK] then the W box
 *                           [S90_BN x S90_BK]
 * and the dtype (KP_DTYPE_*) of out. Shared memory (dynamic): the stages from the first
 * 1024-byte boundary, then a full and an empty mbarrier per stage, then the prefix
 * (KP_MOE_GEMM_SM90_LOCAL_BYTES's layout, whatever the stage size).
 *
 * Tiles: 128 rows of one expert x S90_BN columns, listed expert by expert, columns
 * fastest: tile t is (m-tile t / tiles_n of the concatenated experts, n-tile t % tiles_n).
 * CTAs stride over the list (t = blockIdx.x, += gridDim.x); the list's m-tile prefix over
 * the experts is built from `offsets` on the device, in shared memory, so the host never
 * reads the offsets (nor, in the masked layout, masked_m: an expert's m-tiles are
 * ceil(count / 128) of its clamped count, tiles past it never listed; the index arithmetic
 * is moe_gemm_sm90_tiles.h's, host-tested). Rows of an A box past the expert's end are
 * other experts' rows (or zeros past a_rows: TMA fills out-of-bounds elements with zeros
 * and still counts their bytes); W rows past N are the next expert's (or zeros); both
 * results are discarded: the epilogue stores rows below the expert's end alone.
 */
#ifndef KP_MOE_GEMM_SM90_SCHED_H
#define KP_MOE_GEMM_SM90_SCHED_H

#include "moe_kargs.h"
#include "moe_gemm_sm90_kargs.h"
#include "moe_gemm_sm90_tiles.h"
#include "common/kp_tile_sm90.h"

#if S90_BM != KP_MOE_GEMM_SM90_BM
#error "moe_gemm_sm90_sched.h: S90_BM is the kargs header's 128"
#endif

/* 168 registers a thread at launch (65536 / 384, rounded down to 8); the producer gives
 * 128 x 128 of them to the consumers: 40 + 2 x 232 = 3 x 168. */
#define S90_THREADS 384
#define S90_REGS_PRODUCER 40
#define S90_REGS_CONSUMER 232

/* Tile t -> expert, its first row and end, first column (moe_gemm_sm90_tiles.h); 0 when t
 * is past the list. */
KP_FN int s90_tile(KP_GLOBAL const int *offsets, const kp_moe_gemm_sm90_kargs *p, KP_LOCAL_MEM const int *prefix,
                   int nexp, int tiles_n, int t, int *e_out, int *row0, int *hi, int *n0) {
    return kp_s90_tile(offsets, p, prefix, nexp, tiles_n, S90_BN, t, e_out, row0, hi, n0);
}

/* The CTA's shared memory, carved from the dynamic allocation. */
typedef struct s90_smem {
    KP_LOCAL_MEM unsigned char *stages;
    KP_LOCAL_MEM unsigned long long *full, *empty;
    KP_LOCAL_MEM int *prefix;
} s90_smem;

/* Every thread: carves the shared memory, initialises the barriers (full: the producer's
 * arrive.expect_tx; empty: `empty_arrivals` consumer arrivals) and builds the m-tile
 * prefix; returns the tile list's length. Ends with a CTA barrier. */
KP_FN int s90_setup(KP_LOCAL_MEM unsigned char *raw, KP_GLOBAL const int *offsets, const kp_moe_gemm_sm90_kargs *p,
                    int nexp, int tiles_n, unsigned empty_arrivals, s90_smem *sm) {
    /* the stages at the first 1024-byte boundary (the 128-byte swizzle's repeat) */
    const unsigned base = kp_local_addr32(raw);
    sm->stages = raw + ((1024u - (base & 1023u)) & 1023u);
    sm->full = (KP_LOCAL_MEM unsigned long long *)(sm->stages + S90_STAGES * S90_STAGE_BYTES);
    sm->empty = sm->full + S90_STAGES;
    sm->prefix = (KP_LOCAL_MEM int *)(sm->empty + S90_STAGES);
    const int tid = kp_local_id(0);
    if (tid == 0) {
        for (int s = 0; s < S90_STAGES; ++s) {
            kp_mbar_init(&sm->full[s], 1);
            kp_mbar_init(&sm->empty[s], empty_arrivals);
        }
        kp_mbar_fence_init();
        sm->prefix[0] = 0;
    }
    for (int e = tid; e < nexp; e += S90_THREADS) /* m-tiles of each expert, then their prefix */
        sm->prefix[e + 1] = kp_s90_mtiles(offsets, p, e);
    kp_barrier();
    if (tid == 0)
        for (int e = 0; e < nexp; ++e) sm->prefix[e + 1] += sm->prefix[e];
    kp_barrier();
    return sm->prefix[nexp] * tiles_n;
}

/* The producer (one thread): for each of this CTA's tiles and each K step, waits until the
 * consumers released stage s (empty[s]), announces the stage's bytes on full[s] and loads
 * the A box (rows row0.., K step kb) and the W box (rows e N + n0.. of the [E N, K] map). */
KP_FN void s90_produce(KP_GLOBAL const int *offsets, const kp_moe_gemm_sm90_kargs *p, const s90_smem *sm, int nexp,
                       int tiles_n, int tiles, int ksteps, const kp_tensor_map *ta, const kp_tensor_map *tw) {
    int s = 0;
    unsigned phase = 0;
    for (int t = kp_group_id(0); t < tiles; t += kp_num_groups(0)) {
        int e, row0, hi, n0;
        s90_tile(offsets, p, sm->prefix, nexp, tiles_n, t, &e, &row0, &hi, &n0);
        for (int kb = 0; kb < ksteps; ++kb) {
            /* a fresh barrier counts its (never run) previous phase, parity 1, as complete */
            kp_mbar_wait(&sm->empty[s], phase ^ 1u);
            KP_LOCAL_MEM unsigned char *st = sm->stages + s * S90_STAGE_BYTES;
            kp_mbar_expect_tx(&sm->full[s], S90_STAGE_BYTES);
            kp_tma_load_2d(st, ta, kb * S90_BK, row0, &sm->full[s]);
            kp_tma_load_2d(st + S90_A_BYTES, tw, kb * S90_BK, e * p->n + n0, &sm->full[s]);
            if (++s == S90_STAGES) s = 0, phase ^= 1u;
        }
    }
}

#if !defined(KP_DTYPE_F32)
#if defined(KP_DTYPE_F16)
#define S90_TO16(f) kp_f32_to_f16(f)
#else
#define S90_TO16(f) kp_f32_to_bf16(f)
#endif
#endif

/* Two adjacent outputs (r, n) and (r, n + 1), n + 1 < N when both; f32: outf (f32 out
 * whatever the dtype), else out in the dtype. */
KP_FN void s90_store2(KP_GLOBAL kp_storage_t *out, KP_GLOBAL float *outf, long long o, float v0, float v1, int both,
                      int f32) {
#if defined(KP_DTYPE_F32)
    (void)out, (void)f32;
#else
    if (!f32) {
        if (both && (o & 1) == 0) {
            *(KP_GLOBAL kp_u32 *)(out + o) = (kp_u32)S90_TO16(v0) | ((kp_u32)S90_TO16(v1) << 16);
        } else {
            out[o] = S90_TO16(v0);
            if (both) out[o + 1] = S90_TO16(v1);
        }
        return;
    }
#endif
    if (both && (o & 1) == 0) {
        *(KP_GLOBAL float2 *)(outf + o) = make_float2(v0, v1);
    } else {
        outf[o] = v0;
        if (both) outf[o + 1] = v1;
    }
}

/* A consumer warpgroup's finished accumulators (rows row0 + 64 wg .., columns n0 ..) to
 * global memory, rows at or past hi and columns past N not written. acc[4 i + j] is row
 * 16 w + l / 4 + 8 (j / 2), column 8 i + 2 (l % 4) + (j % 2) (the wgmma D fragments). */
KP_FN void s90_epilogue(KP_GLOBAL kp_storage_t *out, KP_GLOBAL float *outf, const kp_moe_gemm_sm90_kargs *p,
                        const float *acc, int row0, int hi, int n0, int wg, int w, int l) {
    const int f32 = p->mode == KP_MOE_GEMM_STORE_F32;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int r = row0 + wg * 64 + 16 * w + l / 4 + 8 * h;
        if (r >= hi) continue;
        const long long orow = p->out_off + (long long)r * p->out_ld;
#pragma unroll
        for (int i = 0; i < S90_BN / 8; ++i) {
            const int n = n0 + 8 * i + 2 * (l % 4);
            if (n >= p->n) continue;
            s90_store2(out, outf, orow + n, acc[4 * i + 2 * h], acc[4 * i + 2 * h + 1], n + 1 < p->n, f32);
        }
    }
}

#endif /* KP_MOE_GEMM_SM90_SCHED_H */
