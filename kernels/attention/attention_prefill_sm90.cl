/*
 * kernels/attention/attention_prefill_sm90.cl - varlen flash-attention prefill on sm_90a's
 * wgmma + TMA tier (issue 14: FlashAttention-3's warp-specialised schedule). The contract
 * is attention_prefill_gen2.cl's: q [total_q, h_q, D], k, v [total_k, h_kv, D] -> out
 * [total_q, h_q, D], lse f32 [h_q, total_q]; rows packed (query, head of the group) per KV
 * head; causal and window masks bottom-right aligned; rows that see no key write 0 and
 * lse +inf. CUDA sm_90a only (KP_ARCHS below), head dims 64/64, 128/128, 192/128 and
 * 256/256 (F3_DQK), 16-bit q/k/v; everything else stays with generation 2.
 *
 * KP_ARCHS: sm_90a
 *
 * kp_attention_prefill_sm90: 384 threads, grid (m tiles, h_kv, B + 1) as generation 2
 * (grid-stride over tiles of F3_BM = 128 packed rows; z = B: the rows past cu_seqlens_q[B]).
 *   Warpgroup 0, the producer (setmaxnreg.dec): one thread loads the Q tile once per row
 *     tile (a 4-D TMA box {64 d, group, 1, 128 / group}: the group's heads of 128 / group
 *     queries, i.e. 128 packed rows; one box per 64 columns of DQK), then the K and V tiles of
 *     F3_BN keys (128; 64 at head dim 256) (3-D boxes {64 d, 1, F3_BN}) into F3_STAGES stages, each after both
 *     consumers released it (empty[s]) and announcing its bytes on full[s].
 *   Warpgroups 1 and 2, the consumers (setmaxnreg.inc), 64 packed rows each, per key tile:
 *     S = Q K^T       wgmma m64n(F3_BN)k16 from descriptors (Q and K K-major, 128-byte swizzle);
 *     mask            keys outside a row's [lo, hi] (kp a2-style ranges) to -inf;
 *     online softmax  in registers, exp2 with scale * log2(e) (as generation 2); the row
 *                     max over the 4 lanes of a row by shuffles; the row sum per lane;
 *     O += P V        P rounded to 16 bits in registers as the A operand of wgmma RS
 *                     (kp_tile_sm90_attn.h), V in its natural [kv, d] layout read
 *                     MN-major (imm-trans-b = 1), no shared-memory round trip for P;
 *     then the stage is released. Epilogue: the row sums over the quad, O / l, lse.
 *   Rows of a TMA box past the sequence are the next sequence's, padding, or zeros
 *   (out-of-bounds fill), any of them possibly NaN: Q rows are not stored and see no key;
 *   keys are masked by assignment; V rows are zeroed in shared memory on the tile that
 *   holds them before P V reads them (f3_zero_v_tail).
 * Schedule: FA3's intra-warpgroup overlap. Per key tile t a consumer issues S of tile t,
 *   then P V of tile t - 1 (P of t - 1 still in registers), waits for S alone
 *   (wgmma.wait_group 1), masks and exponentiates it while P V runs, then waits for P V,
 *   releases that stage, rescales O and packs P of tile t. ptxas: no spills, wgmma not
 *   serialised; the consumers' highest register R176 (64/64), R195 (128/128, 192/128),
 *   R211 (256/256) under setmaxnreg's 240.
 * Ping-pong (F3_PINGPONG=1, FA3's inter-warpgroup schedule): the two consumers take turns
 *   issuing their GEMMs, so one's wgmma run while the other does its softmax. A "round" is
 *   one issue group: S of tile 0; S of tile t with P V of t - 1; P V of the last tile.
 *   Warpgroup w syncs on named barrier F3_PP_BAR + w (256 threads) before issuing a round
 *   and arrives on F3_PP_BAR + 1 - w after (before anything that may wait: the V-tail
 *   barrier 1, wait_group). Warpgroup 1 arrives once on warpgroup 0's barrier at the start
 *   (warpgroup 0 goes first) and warpgroup 0 syncs once more at the end (taking that
 *   extra arrival back), so no barrier is left half-arrived when the CTA exits.
 *   Invariant: both warpgroups run the same number of rounds, ntiles + 1 per row tile with
 *   ntiles > 0, none otherwise, in the same order: ntiles is the CTA's (the 128-row tile's),
 *   never a warpgroup's; a warpgroup whose 64 rows are all past the sequence still runs
 *   every round (its rows see no key); no consumer leaves the row-tile loop early. Then
 *   barrier F3_PP_BAR (+1) sees, per round r, warpgroup 1's arrival r - 1 (r = 0: the
 *   initial one) with warpgroup 0's sync r (and warpgroup 0's arrival r with warpgroup
 *   1's sync r), and the V-tail barrier 1, reached after a round's arrive, is met by both
 *   in the same round. Ids: 0 is kp_barrier, 1 the V tail; the producer uses none.
 *   F3_PINGPONG=0: the previous schedule (the planner's tuning key
 *   attention_prefill;sm90_pingpong, default 1).
 * Dynamic local memory: KP_ATTN_SM90_LOCAL_BYTES (attention_kargs.h): at 128/128, 2 stages
 *   164,912 bytes, 3 stages 230,464 (sm_90's 227 KiB); at 192/128 2 stages 214,064 bytes;
 *   at 64/64 4 stages 148,560; at 256/256 (64-key stages) 2 stages 197,680.
 * Registers: O is F3_D / 2 f32 a thread (128 at 256/256), S F3_BN / 2, P F3_BN / 8.
 * Host side: backends/gpu/ops/gpu_attention_sm90.c (KPORT_GPU_KERNELS=attention_prefill=sm90).
 *   Not yet run on a GPU.
 * Requirements the planner checks (else generation 2 runs): DQK/DV 64/64, 128/128, 192/128 or
 * 256/256, bf16 or f16,
 * not paged, group divides 128, 16-byte aligned base addresses and token/head strides
 * (TMA), head stride of q such that the group's heads form one map dimension.
 * Options: KP_DTYPE_BF16 / KP_DTYPE_F16, F3_DQK (64, 128, 192, 256), F3_STAGES (2..4),
 * F3_PINGPONG (0, 1).
 */
#include "kp_dialect.h"
#include "attention_kargs.h"
#include "kp_attn_seq.h"
#include "common/kp_tile_sm90_attn.h"

#ifndef F3_DQK
#define F3_DQK 128                       /* head dim of q and k: 64, 128, 192 (DeepSeek-V3's 192/128), 256 */
#endif
#if F3_DQK != 64 && F3_DQK != 128 && F3_DQK != 192 && F3_DQK != 256
#error "attention_prefill_sm90.cl: F3_DQK is 64, 128, 192 or 256"
#endif
/* The wgmma shapes: S = Q K^T is m64 n(F3_BN) (keys), O += P V is m64 n(F3_D) (head dim
 * of v); F3_WG(n, t) names the wrapper of n columns for the dtype t. */
#define F3_CAT4(a, b, c, d) a##b##c##d
#define F3_WG_SS(n, t) F3_CAT4(kp_wgmma_m64n, n, k16_, t)
#define F3_WG_RS(n, t) F3_CAT4(kp_wgmma_rs_m64n, n, k16_, t##_t1)
#if F3_DQK == 256
#define F3_BN_LIT 64
#else
#define F3_BN_LIT 128
#endif
#if F3_DQK == 192
#define F3_D_LIT 128
#else
#define F3_D_LIT F3_DQK
#endif
#if defined(KP_DTYPE_F16)
#define F3_SS_(n) F3_WG_SS(n, f16)
#define F3_RS_(n) F3_WG_RS(n, f16)
#define F3_P_TO_A kp_sm90_p_to_a_f16
#define F3_TO16(f) kp_f32_to_f16(f)
#elif defined(KP_DTYPE_BF16)
#define F3_SS_(n) F3_WG_SS(n, bf16)
#define F3_RS_(n) F3_WG_RS(n, bf16)
#define F3_P_TO_A kp_sm90_p_to_a_bf16
#define F3_TO16(f) kp_f32_to_bf16(f)
#else
#error "attention_prefill_sm90.cl takes bf16 or f16 q, k, v"
#endif
#define F3_XSS(n) F3_SS_(n)
#define F3_XRS(n) F3_RS_(n)
#define F3_SS F3_XSS(F3_BN_LIT)
#define F3_RS F3_XRS(F3_D_LIT)
#ifndef F3_STAGES
#define F3_STAGES 2
#endif
#if F3_STAGES < 2 || F3_STAGES > 4
#error "attention_prefill_sm90.cl: 2 <= F3_STAGES <= 4"
#endif

#define F3_D F3_D_LIT                    /* head dim of v and out: KP_ATTN_SM90_DV */
#define F3_BM KP_ATTN_SM90_BM            /* packed rows a CTA: 64 per consumer warpgroup */
#define F3_BN F3_BN_LIT                  /* keys a stage: KP_ATTN_SM90_BN */
#define F3_PANEL(rows) ((rows) * 128)    /* bytes of one 64-column, 128-byte-swizzled panel */
#define F3_QK_PANELS (F3_DQK / 64)      /* 64-column panels of q and k */
#define F3_Q_BYTES (F3_QK_PANELS * F3_PANEL(F3_BM))
#define F3_K_BYTES (F3_QK_PANELS * F3_PANEL(F3_BN))
#define F3_V_PANELS (F3_D / 64)        /* 64-column panels of v */
#define F3_V_BYTES (F3_V_PANELS * F3_PANEL(F3_BN))
#define F3_STAGE_BYTES (F3_K_BYTES + F3_V_BYTES) /* K then V */
#if F3_BM != 128 || F3_BN != KP_ATTN_SM90_BN(F3_DQK) || F3_D != KP_ATTN_SM90_DV(F3_DQK) || 1024 + F3_Q_BYTES + F3_STAGES * F3_STAGE_BYTES + (2 * F3_STAGES + 2) * 8 != \
    KP_ATTN_SM90_LOCAL_BYTES(F3_DQK, F3_STAGES)
#error "attention_prefill_sm90.cl: the layout disagrees with KP_ATTN_SM90_LOCAL_BYTES (attention_kargs.h)"
#endif
#ifndef F3_PINGPONG
#define F3_PINGPONG 1
#endif
#define F3_PP_BAR 2u                     /* ping-pong barriers 2 (warpgroup 0) and 3 (warpgroup 1) */
#if F3_PINGPONG
#define F3_PP_SYNC(wg) kp_named_barrier_sync(F3_PP_BAR + (unsigned)(wg), 256u)
#define F3_PP_ARRIVE(wg) kp_named_barrier_arrive(F3_PP_BAR + 1u - (unsigned)(wg), 256u)
#else
#define F3_PP_SYNC(wg) ((void)0)
#define F3_PP_ARRIVE(wg) ((void)0)
#endif
#define F3_LN2 0.6931471805599453f
/* 168 registers a thread at launch (65536 / 384); the producer gives its spare ones to the
 * consumers: 24 + 2 x 240 = 504 <= 3 x 168. */
#define F3_REGS_PRODUCER 24
#define F3_REGS_CONSUMER 240

/* Keys [lo, hi] query position a sees (bottom-right aligned; lo > hi: none): generation 2's rule. */
KP_FN void f3_key_range(int a, int len_k, int causal, int wl, int wr, int *lo, int *hi) {
    int l = 0, h = len_k - 1;
    if (causal && a < h) h = a;
    if (wr >= 0 && a + wr < h) h = a + wr;
    if (wl >= 0 && a - wl > l) l = a - wl;
    *lo = l, *hi = h;
}

/* The key tiles of packed rows [m0, m0 + F3_BM) (clipped to rows): first key and count. */
KP_FN void f3_tiles(const kp_attn_prefill_kargs *p, int m0, int rows, int len_k, int shift, int *kbeg, int *ntiles) {
    int lo_first, hi_first, lo_last, hi_last;
    f3_key_range(m0 / p->group + shift, len_k, p->causal, p->wl, p->wr, &lo_first, &hi_first);
    f3_key_range((min(m0 + F3_BM, rows) - 1) / p->group + shift, len_k, p->causal, p->wl, p->wr, &lo_last, &hi_last);
    const int b = max(lo_first, 0), e = min(hi_last + 1, len_k);
    *kbeg = b;
    *ntiles = e > b ? (e - b + F3_BN - 1) / F3_BN : 0;
}

KP_FN float f3_quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
KP_FN float f3_quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

/* S = Q K^T of one stage, issued and committed (not waited): F3_DQK / 16 k16 steps, 4 a
 * 128-byte panel; wgmma.fence first (a[] and O were written since the last wgmma). */
KP_FN void f3_issue_s(float sacc[F3_BN / 2], unsigned q_addr, unsigned k_addr) {
#pragma unroll
    for (int i = 0; i < F3_BN / 2; ++i) kp_wgmma_fence_operand(&sacc[i]);
    kp_wgmma_fence();
#pragma unroll
    for (int k = 0; k < F3_DQK / 16; ++k) {
        const unsigned kb = (32 * k) % 128; /* byte of K in its panel */
        const unsigned long long dq =
            KP_SM90_DESC_KMAJOR(q_addr + (32 * k) / 128 * F3_PANEL(F3_BM) + kb, KP_SM90_SWIZZLE_128B);
        const unsigned long long dk =
            KP_SM90_DESC_KMAJOR(k_addr + (32 * k) / 128 * F3_PANEL(F3_BN) + kb, KP_SM90_SWIZZLE_128B);
        F3_SS(sacc, dq, dk, k > 0);
    }
    kp_wgmma_commit();
}

/* O += P V, P in registers (a[]), V MN-major at descriptor dv; issued and committed. */
KP_FN void f3_issue_pv(float o[F3_D / 2], kp_u32 a[F3_BN / 16][4], unsigned long long dv) {
#pragma unroll
    for (int kk = 0; kk < F3_BN / 16; ++kk)
        F3_RS(o, a[kk], KP_SM90_DESC_ADVANCE(dv, KP_SM90_MNMAJOR_STEP_BYTES(KP_SM90_SWIZZLE_128B, kk)), 1);
    kp_wgmma_commit();
}

/* The V NaN rule. A stage's last rows may lie past the sequence (the next sequence's,
 * padding past cu_seqlens_k[B], or TMA's zero fill past total_k): NaN or Inf is legal
 * there. Their keys are masked by assignment (S = -inf whatever Q K^T was, and fmaxf
 * ignores NaN), so K needs nothing; but P = 0 there and 0 x NaN = NaN in P V, so V's rows
 * of keys n0 + r >= len_k are zeroed in shared memory before the P V wgmma reads them:
 * both consumer warpgroups (ct = 0..255) share the work (uniform: same n0, len_k), fence it
 * to the async proxy and meet on a named barrier. At most one stage a row tile, the last.
 * The stage is reloaded by TMA only after both release it, so these stores cannot race
 * the next load. Rows are whole 128-byte swizzle rows, so the swizzle does not matter. */
KP_FN void f3_zero_v_tail(unsigned v_addr, int n0, int len_k, int ct) {
    if (n0 + F3_BN <= len_k) return;
    const int r0 = len_k - n0, nz = (F3_BN - r0) * 8; /* 16-byte chunks a panel */
    for (int i = ct; i < F3_V_PANELS * nz; i += 256) {
        const int c = i / nz, r = r0 + (i % nz) / 8;
        kp_local_zero16(v_addr + c * F3_PANEL(F3_BN) + r * 128 + (i % 8) * 16);
    }
    kp_fence_proxy_async_local();
    kp_named_barrier(1, 256);
}

/* Scale, mask and online softmax of one S tile of keys n0 + KP_SM90_ACC_COL: sacc becomes
 * P (f32), mrow / lrow updated, alpha the factor O must take. Row i = (q / 2) % 2 of the
 * accumulator register q; a row with no key yet keeps max -inf and exponentiates with 0. */
KP_FN void f3_softmax(float sacc[F3_BN / 2], int n0, int lt, const int rlo[2], const int rhi[2], float scale_log2,
                      float mrow[2], float lrow[2], float alpha[2]) {
    float tmax[2] = {-KP_INFINITY, -KP_INFINITY}, mref[2];
#pragma unroll
    for (int q = 0; q < F3_BN / 2; ++q) {
        const int i = (q / 2) % 2, key = n0 + KP_SM90_ACC_COL(lt, q);
        float x = sacc[q] * scale_log2;
        if (key < rlo[i] || key > rhi[i]) x = -KP_INFINITY;
        sacc[q] = x;
        tmax[i] = fmaxf(tmax[i], x);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const float mn = fmaxf(mrow[i], f3_quad_max(tmax[i]));
        mref[i] = mn == -KP_INFINITY ? 0.0f : mn;
        alpha[i] = exp2f(mrow[i] - mref[i]);
        mrow[i] = mn;
        lrow[i] *= alpha[i];
    }
#pragma unroll
    for (int q = 0; q < F3_BN / 2; ++q) {
        const int i = (q / 2) % 2;
        sacc[q] = exp2f(sacc[q] - mref[i]);
        lrow[i] += sacc[q];
    }
}

KP_KERNEL void KP_LAUNCH_BOUNDS(384, 1)
    kp_attention_prefill_sm90(KP_GLOBAL kp_storage_t *KP_RESTRICT out, KP_GLOBAL float *KP_RESTRICT lse,
                              KP_GLOBAL const int *KP_RESTRICT cu_q, KP_GLOBAL const int *KP_RESTRICT cu_k,
                              kp_attn_prefill_kargs p, const __grid_constant__ kp_tensor_map tq,
                              const __grid_constant__ kp_tensor_map tk, const __grid_constant__ kp_tensor_map tv) {
    KP_DYNAMIC_LOCAL(f3_smem);
    /* Q and the stages at the first 1024-byte boundary (the 128-byte swizzle's repeat) */
    const unsigned base = kp_local_addr32(f3_smem);
    KP_LOCAL_MEM unsigned char *qs = (KP_LOCAL_MEM unsigned char *)f3_smem + ((1024u - (base & 1023u)) & 1023u);
    KP_LOCAL_MEM unsigned char *stages = qs + F3_Q_BYTES;
    KP_LOCAL_MEM unsigned long long *full = (KP_LOCAL_MEM unsigned long long *)(stages + F3_STAGES * F3_STAGE_BYTES);
    KP_LOCAL_MEM unsigned long long *empty = full + F3_STAGES;
    KP_LOCAL_MEM unsigned long long *qfull = empty + F3_STAGES, *qempty = qfull + 1;

    const int tid = kp_local_id(0), hk = kp_group_id(1), b = kp_group_id(2);
    if (tid == 0) {
        for (int s = 0; s < F3_STAGES; ++s) {
            kp_mbar_init(&full[s], 1);  /* the producer's arrive.expect_tx */
            kp_mbar_init(&empty[s], 2); /* one arrival per consumer warpgroup */
        }
        kp_mbar_init(qfull, 1);
        kp_mbar_init(qempty, 2);
        kp_mbar_fence_init();
    }
    kp_barrier();

    const kp_attn_seq sq = kp_attn_seq_of(cu_q, cu_k, 0, p, b);
    const int qs0 = sq.qs0, ks0 = sq.ks0;
    const int len_q = sq.qe - qs0, len_k = sq.ke - ks0, shift = len_k - len_q, rows = len_q * p.group;

    if (tid < 128) { /* ---- producer warpgroup ---- */
        kp_setmaxnreg_dec(F3_REGS_PRODUCER);
        if (tid != 0) return;
        int s = 0;
        unsigned phase = 0, qphase = 0;
        for (int m0 = kp_group_id(0) * F3_BM; m0 < rows; m0 += kp_num_groups(0) * F3_BM) {
            int kbeg, ntiles;
            f3_tiles(&p, m0, rows, len_k, shift, &kbeg, &ntiles);
            if (ntiles == 0) continue; /* the consumers write zeros without Q */
            kp_mbar_wait(qempty, qphase ^ 1u);
            kp_mbar_expect_tx(qfull, F3_Q_BYTES);
            for (int c = 0; c < F3_QK_PANELS; ++c)
                kp_tma_load_4d(qs + c * F3_PANEL(F3_BM), &tq, 64 * c, 0, hk, qs0 + m0 / p.group, qfull);
            qphase ^= 1u;
            for (int t = 0; t < ntiles; ++t) {
                /* a fresh barrier counts its (never run) previous phase, parity 1, as complete */
                kp_mbar_wait(&empty[s], phase ^ 1u);
                KP_LOCAL_MEM unsigned char *st = stages + s * F3_STAGE_BYTES;
                const int key = ks0 + kbeg + t * F3_BN;
                kp_mbar_expect_tx(&full[s], F3_STAGE_BYTES);
                for (int c = 0; c < F3_QK_PANELS; ++c)
                    kp_tma_load_3d(st + c * F3_PANEL(F3_BN), &tk, 64 * c, hk, key, &full[s]);
                for (int c = 0; c < F3_V_PANELS; ++c)
                    kp_tma_load_3d(st + F3_K_BYTES + c * F3_PANEL(F3_BN), &tv, 64 * c, hk, key, &full[s]);
                if (++s == F3_STAGES) s = 0, phase ^= 1u;
            }
        }
        return;
    }

    /* ---- consumer warpgroups: packed rows 64 wg .. 64 wg + 63 of each tile ---- */
    kp_setmaxnreg_inc(F3_REGS_CONSUMER);
    const int wg = tid / 128 - 1, lt = tid % 128, w = lt / 32, l = lt % 32;
    int s = 0;
    unsigned phase = 0, qphase = 0;
#if F3_PINGPONG
    if (wg == 1) kp_named_barrier_arrive(F3_PP_BAR, 256u); /* warpgroup 0 goes first */
#endif
    for (int m0 = kp_group_id(0) * F3_BM; m0 < rows; m0 += kp_num_groups(0) * F3_BM) {
        int kbeg, ntiles;
        f3_tiles(&p, m0, rows, len_k, shift, &kbeg, &ntiles);
        /* this thread's two rows (l / 4 and l / 4 + 8 of its warp's 16): key ranges */
        int rlo[2], rhi[2];
        for (int i = 0; i < 2; ++i) {
            const int row = m0 + 64 * wg + 16 * w + l / 4 + 8 * i;
            rlo[i] = 1, rhi[i] = 0;
            if (row < rows) f3_key_range(row / p.group + shift, len_k, p.causal, p.wl, p.wr, &rlo[i], &rhi[i]);
        }
        float mrow[2] = {-KP_INFINITY, -KP_INFINITY}, lrow[2] = {0.0f, 0.0f};
        float o[F3_D / 2];
#pragma unroll
        for (int i = 0; i < F3_D / 2; ++i) o[i] = 0.0f;
        if (ntiles > 0) kp_mbar_wait(qfull, qphase);
        const unsigned q_addr = kp_local_addr32(qs) + wg * 64 * 128;

        /* FA3's intra-warpgroup overlap: S of tile t is issued, then P V of tile t - 1
         * (P kept in a[] from the previous iteration); wait_group 1 retires S alone and
         * the mask and exponentials of tile t run while P V of t - 1 is in flight; then
         * wait_group 0, O rescaled, P of tile t packed into a[], the stage of t - 1
         * released. Tile 0 before the loop (no P V to overlap), the last P V after it:
         * the loop body has no branch on t, so ptxas keeps the wgmma pipelined. */
        kp_u32 a[F3_BN / 16][4];
        unsigned long long dv_prev = 0;
        int s_prev = 0;
        if (ntiles > 0) {
            kp_mbar_wait(&full[s], phase);
            const unsigned k_addr = kp_local_addr32(stages + s * F3_STAGE_BYTES);
            float sacc[F3_BN / 2];
            F3_PP_SYNC(wg);
            f3_issue_s(sacc, q_addr, k_addr);
            F3_PP_ARRIVE(wg);
            f3_zero_v_tail(k_addr + F3_K_BYTES, kbeg, len_k, tid - 128);
            kp_wgmma_wait(0);
#pragma unroll
            for (int i = 0; i < F3_BN / 2; ++i) kp_wgmma_fence_operand(&sacc[i]);
            if (ntiles == 1 && lt == 0) kp_mbar_arrive(qempty); /* the last read of Q */
            float alpha[2];
            f3_softmax(sacc, kbeg, lt, rlo, rhi, p.scale_log2, mrow, lrow, alpha);
#pragma unroll
            for (int kk = 0; kk < F3_BN / 16; ++kk) F3_P_TO_A(sacc, kk, a[kk]);
            dv_prev = KP_SM90_DESC_MNMAJOR(k_addr + F3_K_BYTES, F3_BN, KP_SM90_SWIZZLE_128B);
            s_prev = s;
            if (++s == F3_STAGES) s = 0, phase ^= 1u;
        }
        for (int t = 1; t < ntiles; ++t) {
            kp_mbar_wait(&full[s], phase);
            const unsigned k_addr = kp_local_addr32(stages + s * F3_STAGE_BYTES);
            float sacc[F3_BN / 2];
#pragma unroll
            for (int i = 0; i < F3_D / 2; ++i) kp_wgmma_fence_operand(&o[i]);
            F3_PP_SYNC(wg);
            f3_issue_s(sacc, q_addr, k_addr);
            f3_issue_pv(o, a, dv_prev); /* O += P V of tile t - 1 */
            F3_PP_ARRIVE(wg);
            f3_zero_v_tail(k_addr + F3_K_BYTES, kbeg + t * F3_BN, len_k, tid - 128);
            kp_wgmma_wait(1); /* S of tile t retired; P V of t - 1 may still run */
#pragma unroll
            for (int i = 0; i < F3_BN / 2; ++i) kp_wgmma_fence_operand(&sacc[i]);
            if (t == ntiles - 1 && lt == 0) kp_mbar_arrive(qempty); /* the last read of Q */
            float alpha[2];
            f3_softmax(sacc, kbeg + t * F3_BN, lt, rlo, rhi, p.scale_log2, mrow, lrow, alpha);
            kp_wgmma_wait(0); /* P V of tile t - 1 retired: its stage free, O ready to rescale */
#pragma unroll
            for (int i = 0; i < F3_D / 2; ++i) kp_wgmma_fence_operand(&o[i]);
            if (lt == 0) kp_mbar_arrive(&empty[s_prev]);
#pragma unroll
            for (int q = 0; q < F3_D / 2; ++q) o[q] *= alpha[(q / 2) % 2];
#pragma unroll
            for (int kk = 0; kk < F3_BN / 16; ++kk) F3_P_TO_A(sacc, kk, a[kk]);
            dv_prev = KP_SM90_DESC_MNMAJOR(k_addr + F3_K_BYTES, F3_BN, KP_SM90_SWIZZLE_128B);
            s_prev = s;
            if (++s == F3_STAGES) s = 0, phase ^= 1u;
        }
        if (ntiles > 0) { /* O += P V of the last tile */
#pragma unroll
            for (int i = 0; i < F3_D / 2; ++i) kp_wgmma_fence_operand(&o[i]);
            kp_wgmma_fence(); /* a[] and O written since the last wgmma */
            F3_PP_SYNC(wg);
            f3_issue_pv(o, a, dv_prev);
            F3_PP_ARRIVE(wg);
            kp_wgmma_wait(0);
#pragma unroll
            for (int i = 0; i < F3_D / 2; ++i) kp_wgmma_fence_operand(&o[i]);
            if (lt == 0) kp_mbar_arrive(&empty[s_prev]);
        }
        if (ntiles > 0) qphase ^= 1u;

        /* epilogue: row sums over the quad, O / l, lse */
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const float lsum = f3_quad_sum(lrow[i]);
            const int row = m0 + 64 * wg + 16 * w + l / 4 + 8 * i;
            if (row >= rows) continue;
            const int qi = row / p.group, hq = hk * p.group + row % p.group, tok = qs0 + qi;
            const float inv = lsum > 0.0f ? 1.0f / lsum : 0.0f;
            const long long ob = p.o_off + (long long)tok * p.o_s0 + (long long)hq * p.o_s1;
#pragma unroll
            for (int j = 0; j < F3_D / 8; ++j) {
                const int col = 8 * j + 2 * (l % 4);
                out[ob + col] = F3_TO16(o[4 * j + 2 * i] * inv);
                out[ob + col + 1] = F3_TO16(o[4 * j + 2 * i + 1] * inv);
            }
            if (p.has_lse && l % 4 == 0)
                lse[p.lse_off + (long long)hq * p.total_q + tok] =
                    lsum > 0.0f ? (mrow[i] + log2f(lsum)) * F3_LN2 : KP_INFINITY;
        }
    }
#if F3_PINGPONG
    if (wg == 0) kp_named_barrier_sync(F3_PP_BAR, 256u); /* warpgroup 1's last arrival (or its first) */
#endif
}
