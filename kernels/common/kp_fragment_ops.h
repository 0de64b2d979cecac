/*
 * kernels/common/kp_fragment_ops.h - the register-fragment operations an FA2-style
 * attention loop needs on top of kp_tile_mma.h, one API per target:
 *
 *   kp_mma_load_b_trans(b, s, ld, lane)   the B operand of a 16x8x16 MMA from a K-major
 *       tile s[k][n] (row stride ld): attention's V tile [key][d] as it lies in memory,
 *       so P.V needs no transposed copy. NVIDIA: ldmatrix.trans.
 *   kp_mma_load_b_pair(b0, b1, s, ld, lane)         two n8 blocks of kp_mma_load_b's (n, k)
 *   kp_mma_load_b_trans_pair(b0, b1, s, ld, lane)   layout, rows s and s + 8 ld, and of the
 *       K-major one, columns s and s + 8: one ldmatrix.x4 each on NVIDIA.
 *   kp_mma_acc_to_a(a, c0, c1, is_f16, scratch, lane)   the A operand [16][16] made from
 *       two accumulators (columns 0-7 in c0, 8-15 in c1), rounded to bf16/f16: S -> P
 *       without leaving registers on NVIDIA, where an accumulator pair already is an A
 *       fragment (lane 4g+t holds rows g, g+8 at columns 2t, 2t+1 of both). Elsewhere
 *       the fragment layouts differ, so the values go through `scratch` (16 x 16 16-bit
 *       values per 32-lane group, 16-byte aligned) between two barriers.
 *   kp_quad_max2_f32(a, b, scratch, lid), kp_quad_sum2_f32   two values reduced over the
 *       four consecutive work-items lid & ~3 .. lid | 3 (the lanes that share an
 *       accumulator row): xor shuffles where the target has them (KP_HAS_WARP_SHUFFLE),
 *       else through `scratch` (2 floats per work-item of the work-group) between two
 *       barriers - PoCL runs that.
 * Every work-item of the work-group calls these together (the fallbacks hold barriers).
 */
#ifndef KP_FRAGMENT_OPS_H
#define KP_FRAGMENT_OPS_H

#include "kp_tile_mma.h"

/* a packed pair of 16-bit floats, lo in the low half */
KP_FN kp_u32 kp_pack2_f32_(float lo, float hi, int is_f16) {
    kp_u16 l = is_f16 ? kp_f32_to_f16(lo) : kp_f32_to_bf16(lo);
    kp_u16 h = is_f16 ? kp_f32_to_f16(hi) : kp_f32_to_bf16(hi);
    return (kp_u32)l | ((kp_u32)h << 16);
}

#if defined(KP_MMA_USE_PTX)

/* ldmatrix.x2.trans: lanes 0-7 address rows k 0-7, lanes 8-15 rows k 8-15 (column n0);
 * transposed, lane 4g+t receives s[2t][g], s[2t+1][g] and s[8+2t][g], s[9+2t][g]:
 * mma's b0, b1 for the (n, k) operand. */
KP_FN void kp_mma_load_b_trans(kp_mma_b *b, KP_LOCAL_MEM const kp_u16 *s, int ld, int lane) {
    kp_u32 addr = kp_local_addr32(s + (lane % 16) * ld);
    KP_ASM volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];"
                    : "=r"(b->x[0]), "=r"(b->x[1])
                    : "r"(addr));
}

/* ldmatrix.x4: lanes 0-7 rows n 0-7 at k 0-7, 8-15 the same rows at k 8-15, 16-31 rows
 * n 8-15 likewise: registers 0, 1 are block 0's b0, b1 and 2, 3 block 1's. */
KP_FN void kp_mma_load_b_pair(kp_mma_b *b0, kp_mma_b *b1, KP_LOCAL_MEM const kp_u16 *s, int ld, int lane) {
    kp_u32 addr = kp_local_addr32(s + ((lane % 8) + (lane / 16) * 8) * ld + ((lane / 8) % 2) * 8);
    KP_ASM volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                    : "=r"(b0->x[0]), "=r"(b0->x[1]), "=r"(b1->x[0]), "=r"(b1->x[1])
                    : "r"(addr));
}

/* ldmatrix.x4.trans: lanes 0-15 rows k 0-15 at column 0, lanes 16-31 the same rows at
 * column 8: registers 0, 1 are columns 0-7's b0, b1 and 2, 3 columns 8-15's. */
KP_FN void kp_mma_load_b_trans_pair(kp_mma_b *b0, kp_mma_b *b1, KP_LOCAL_MEM const kp_u16 *s, int ld, int lane) {
    kp_u32 addr = kp_local_addr32(s + (lane % 16) * ld + (lane / 16) * 8);
    KP_ASM volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                    : "=r"(b0->x[0]), "=r"(b0->x[1]), "=r"(b1->x[0]), "=r"(b1->x[1])
                    : "r"(addr));
}

KP_FN void kp_mma_acc_to_a(kp_mma_a *a, const kp_mma_acc *c0, const kp_mma_acc *c1, int is_f16,
                           KP_LOCAL_MEM kp_u16 *scratch, int lane) {
    (void)scratch, (void)lane;
    a->x[0] = kp_pack2_f32_(c0->x[0], c0->x[1], is_f16);
    a->x[1] = kp_pack2_f32_(c0->x[2], c0->x[3], is_f16);
    a->x[2] = kp_pack2_f32_(c1->x[0], c1->x[1], is_f16);
    a->x[3] = kp_pack2_f32_(c1->x[2], c1->x[3], is_f16);
}

#else /* the fragment layouts are not PTX's: through local memory */

#if defined(KP_MMA_USE_MFMA)
KP_FN void kp_mma_load_b_trans(kp_mma_b *b, KP_LOCAL_MEM const kp_u16 *s, int ld, int lane) {
    for (int c = 0; c < KP_AMD4_SETS; ++c)
        for (int st = 0; st < KP_AMD4_STEPS; ++st)
            for (int e = 0; e < 4; ++e) b->x[c][st][e] = (short)s[(4 * st + e) * ld + KP_AMD4_B_COL(lane, c)];
}
#else
KP_FN void kp_mma_load_b_trans(kp_mma_b *b, KP_LOCAL_MEM const kp_u16 *s, int ld, int lane) {
    int t = lane % 4;
    for (int c = 0; c < 2; ++c)
        for (int k = 0; k < 16; k += 2)
            b->x[c * 8 + k / 2] = kp_pack_u16_(s[k * ld + 2 * t + c], s[(k + 1) * ld + 2 * t + c]);
}
#endif

KP_FN void kp_mma_load_b_pair(kp_mma_b *b0, kp_mma_b *b1, KP_LOCAL_MEM const kp_u16 *s, int ld, int lane) {
    kp_mma_load_b(b0, s, ld, lane);
    kp_mma_load_b(b1, s + 8 * ld, ld, lane);
}

KP_FN void kp_mma_load_b_trans_pair(kp_mma_b *b0, kp_mma_b *b1, KP_LOCAL_MEM const kp_u16 *s, int ld, int lane) {
    kp_mma_load_b_trans(b0, s, ld, lane);
    kp_mma_load_b_trans(b1, s + 8, ld, lane);
}

KP_FN void kp_mma_acc_to_a(kp_mma_a *a, const kp_mma_acc *c0, const kp_mma_acc *c1, int is_f16,
                           KP_LOCAL_MEM kp_u16 *scratch, int lane) {
    int g = lane / 4, t = lane % 4;
    KP_LOCAL_MEM kp_u32 *w = (KP_LOCAL_MEM kp_u32 *)scratch; /* [16][8] pairs */
    kp_barrier(); /* the previous call's loads are done */
    w[g * 8 + t] = kp_pack2_f32_(c0->x[0], c0->x[1], is_f16);
    w[(g + 8) * 8 + t] = kp_pack2_f32_(c0->x[2], c0->x[3], is_f16);
    w[g * 8 + 4 + t] = kp_pack2_f32_(c1->x[0], c1->x[1], is_f16);
    w[(g + 8) * 8 + 4 + t] = kp_pack2_f32_(c1->x[2], c1->x[3], is_f16);
    kp_barrier();
    kp_mma_load_a(a, scratch, 16, lane);
}
#endif

#if defined(KP_HAS_WARP_SHUFFLE)
KP_FN void kp_quad_max2_f32(float *a, float *b, KP_LOCAL_MEM float *scratch, int lid) {
    (void)scratch, (void)lid;
    *a = kp_fmaxf(*a, kp_shfl_xor_f32(*a, 1)), *b = kp_fmaxf(*b, kp_shfl_xor_f32(*b, 1));
    *a = kp_fmaxf(*a, kp_shfl_xor_f32(*a, 2)), *b = kp_fmaxf(*b, kp_shfl_xor_f32(*b, 2));
}
KP_FN void kp_quad_sum2_f32(float *a, float *b, KP_LOCAL_MEM float *scratch, int lid) {
    (void)scratch, (void)lid;
    *a += kp_shfl_xor_f32(*a, 1), *b += kp_shfl_xor_f32(*b, 1);
    *a += kp_shfl_xor_f32(*a, 2), *b += kp_shfl_xor_f32(*b, 2);
}
#else
KP_FN void kp_quad_reduce2_(float *a, float *b, KP_LOCAL_MEM float *scratch, int lid, int is_max) {
    kp_barrier(); /* the previous call's reads are done */
    scratch[2 * lid] = *a, scratch[2 * lid + 1] = *b;
    kp_barrier();
    int q = lid & ~3;
    float ra = scratch[2 * q], rb = scratch[2 * q + 1];
    for (int i = 1; i < 4; ++i) {
        float va = scratch[2 * (q + i)], vb = scratch[2 * (q + i) + 1];
        ra = is_max ? kp_fmaxf(ra, va) : ra + va;
        rb = is_max ? kp_fmaxf(rb, vb) : rb + vb;
    }
    *a = ra, *b = rb;
}
KP_FN void kp_quad_max2_f32(float *a, float *b, KP_LOCAL_MEM float *scratch, int lid) {
    kp_quad_reduce2_(a, b, scratch, lid, 1);
}
KP_FN void kp_quad_sum2_f32(float *a, float *b, KP_LOCAL_MEM float *scratch, int lid) {
    kp_quad_reduce2_(a, b, scratch, lid, 0);
}
#endif

#endif /* KP_FRAGMENT_OPS_H */
