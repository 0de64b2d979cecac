/*
 * kernels/common/kp_tile_sm90_attn.h - the sm_90a tier's attention primitives (issue 14),
 * on top of kp_tile_sm90.h: wgmma with A from registers (the "RS" form) and B from a
 * shared-memory descriptor, optionally MN-major, for O += P V with P kept in registers
 * (FlashAttention-3's schedule; the index math is kp_sm90_attn_layout.h, C-tested).
 *
 * PTX ISA, wgmma.mma_async (sm_90a), A in registers, 16-bit A and B:
 *     wgmma.mma_async.sync.aligned.m64nNk16.f32.{bf16,f16}.{bf16,f16}
 *         d, {a0, a1, a2, a3}, b-desc, scale-d, imm-scale-a, imm-scale-b, imm-trans-b;
 *   a: four .b32 registers, two 16-bit elements each (the lower half the lower element);
 *   there is no imm-trans-a in this form (A is in registers); imm-trans-b = 1 reads B
 *   MN-major (allowed for .f16/.bf16 only): V in its natural [kv, d] layout, descriptor
 *   KP_SM90_DESC_MNMAJOR. imm-trans-b = 0: B K-major, as in kp_tile_sm90.h.
 *   Registers feeding a (P, written by ordinary instructions after the S wgmma retired)
 *   need wgmma.fence (kp_wgmma_fence) before the first wgmma that reads them.
 *
 * kp_sm90_p_to_a_{bf16,f16}(s, kk, a): A registers of K step kk of P V from the f32
 *   accumulators s of S (register 8 kk + 2 r low, 8 kk + 2 r + 1 high: KP_SM90_P_ACC).
 * kp_wgmma_rs_m64n{64,128,256}k16_{bf16,f16}_t{0,1}(d, a, db, accumulate):
 *   d[N/2] (+)= A[64 x 16] (registers) B[16 x N] (descriptor db; t1: MN-major).
 * kp_wgmma_m64n64k16_f16: the f16 twin of kp_tile_sm90.h's SS m64n64k16 (64-key S tiles).
 * kp_fence_proxy_async_local, kp_named_barrier, kp_local_zero16: zeroing part of a stage
 *   (rows TMA brought from outside the sequence) before a wgmma reads it.
 * kp_named_barrier_sync / _arrive: ordering warpgroups (FA3's ping-pong of the consumers).
 */
#ifndef KP_TILE_SM90_ATTN_H
#define KP_TILE_SM90_ATTN_H

#include "common/kp_tile_sm90.h"
#include "common/kp_sm90_attn_layout.h"

/* Box (c0, c1, c2) / (c0, c1, c2, c3) of a 3-D / 4-D tensor map into shared memory at dst
 * (repeat-aligned), completing on bar; one thread (PTX ISA, cp.async.bulk.tensor, sm_90).
 * Attention's q [tokens, heads, d] is a 4-D map {d, group, h_kv, tokens}: one box holds the
 * (query, head of the group) packed rows of one KV head; k and v are 3-D {d, h_kv, tokens}. */
KP_FN void kp_tma_load_3d(void *dst, const kp_tensor_map *map, int c0, int c1, int c2, unsigned long long *bar) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4}], [%5];" ::"r"(kp_local_addr32(dst)),
                 "l"((unsigned long long)map), "r"(c0), "r"(c1), "r"(c2), "r"(kp_local_addr32(bar))
                 : "memory");
}
KP_FN void kp_tma_load_4d(void *dst, const kp_tensor_map *map, int c0, int c1, int c2, int c3,
                          unsigned long long *bar) {
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4, %5}], [%6];" ::"r"(kp_local_addr32(dst)),
                 "l"((unsigned long long)map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(kp_local_addr32(bar))
                 : "memory");
}

/* Two f32 to packed 16-bit, round to nearest even (PTX ISA, cvt: "cvt.rn.bf16x2.f32 d, a, b"
 * puts a in the upper half and b in the lower). */
KP_FN kp_u32 kp_pack_bf16x2(float lo, float hi) {
    kp_u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
KP_FN kp_u32 kp_pack_f16x2(float lo, float hi) {
    kp_u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

KP_FN void kp_sm90_p_to_a_bf16(const float *s, int kk, kp_u32 a[4]) {
    for (int r = 0; r < 4; ++r) a[r] = kp_pack_bf16x2(s[KP_SM90_P_ACC(kk, 2 * r)], s[KP_SM90_P_ACC(kk, 2 * r + 1)]);
}
KP_FN void kp_sm90_p_to_a_f16(const float *s, int kk, kp_u32 a[4]) {
    for (int r = 0; r < 4; ++r) a[r] = kp_pack_f16x2(s[KP_SM90_P_ACC(kk, 2 * r)], s[KP_SM90_P_ACC(kk, 2 * r + 1)]);
}

/* The register form's operand plumbing (kp_tile_sm90.h's KP_WG_* for D): after D's nacc
 * registers come A's four (%nacc .. %nacc+3), B's descriptor (%nacc+4) and the accumulate
 * flag (%nacc+5), turned into the scale-d predicate. */
#define KP_WG_RS_32 "{%32, %33, %34, %35}, %36"
#define KP_WG_RS_64 "{%64, %65, %66, %67}, %68"
#define KP_WG_RS_128 "{%128, %129, %130, %131}, %132"
#define KP_WG_RS_ACC_32 "%37"
#define KP_WG_RS_ACC_64 "%69"
#define KP_WG_RS_ACC_128 "%133"

/* Defines `KP_FN void name(float d[nacc], a[4], db, accumulate)`: one wgmma.mma_async of
 * `shape_types` with A from registers, B from descriptor db, scale-a = scale-b = 1 and
 * imm-trans-b = trans_b (1: B MN-major); accumulate = 0 overwrites d. */
#define KP_WGMMA_RS_FN(name, nacc, shape_types, trans_b)                                                \
    KP_FN void name(float d[nacc], const kp_u32 a[4], unsigned long long db, int accumulate) {          \
        asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, " KP_WG_RS_ACC_##nacc ", 0;\n\t"            \
                     "wgmma.mma_async.sync.aligned." shape_types " {" KP_WG_REGS_##nacc "}, "           \
                     KP_WG_RS_##nacc ", p, 1, 1, " #trans_b ";\n\t}"                                  \
                     : KP_WG_OPS_##nacc(d)                                                              \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));           \
    }

KP_WGMMA_RS_FN(kp_wgmma_rs_m64n64k16_bf16_t0, 32, "m64n64k16.f32.bf16.bf16", 0)
KP_WGMMA_RS_FN(kp_wgmma_rs_m64n64k16_bf16_t1, 32, "m64n64k16.f32.bf16.bf16", 1)
KP_WGMMA_RS_FN(kp_wgmma_rs_m64n64k16_f16_t0, 32, "m64n64k16.f32.f16.f16", 0)
KP_WGMMA_RS_FN(kp_wgmma_rs_m64n64k16_f16_t1, 32, "m64n64k16.f32.f16.f16", 1)
KP_WGMMA_RS_FN(kp_wgmma_rs_m64n128k16_bf16_t0, 64, "m64n128k16.f32.bf16.bf16", 0)
KP_WGMMA_RS_FN(kp_wgmma_rs_m64n128k16_bf16_t1, 64, "m64n128k16.f32.bf16.bf16", 1)
KP_WGMMA_RS_FN(kp_wgmma_rs_m64n128k16_f16_t0, 64, "m64n128k16.f32.f16.f16", 0)
KP_WGMMA_RS_FN(kp_wgmma_rs_m64n128k16_f16_t1, 64, "m64n128k16.f32.f16.f16", 1)
KP_WGMMA_RS_FN(kp_wgmma_rs_m64n256k16_bf16_t0, 128, "m64n256k16.f32.bf16.bf16", 0)
KP_WGMMA_RS_FN(kp_wgmma_rs_m64n256k16_bf16_t1, 128, "m64n256k16.f32.bf16.bf16", 1)
KP_WGMMA_RS_FN(kp_wgmma_rs_m64n256k16_f16_t0, 128, "m64n256k16.f32.f16.f16", 0)
KP_WGMMA_RS_FN(kp_wgmma_rs_m64n256k16_f16_t1, 128, "m64n256k16.f32.f16.f16", 1)

/* S = Q K^T with 64 keys a tile (head dim 256: kp_tile_sm90.h has the bf16 m64n64k16) */
KP_WGMMA_FN(kp_wgmma_m64n64k16_f16, 32, "m64n64k16.f32.f16.f16", ", 1, 1, 0, 0")

/* Generic-proxy stores to shared memory (st.shared) made visible to the async proxy (wgmma
 * operand reads, TMA): each writing thread fences after its stores, then a barrier orders
 * them before the wgmma that reads (PTX ISA, membar/fence: fence.proxy.async, sm_90). */
KP_FN void kp_fence_proxy_async_local(void) { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
/* Named barrier `id` (1..15; 0 is kp_barrier's) over `n` threads, a multiple of 32. */
#define kp_named_barrier(id, n) asm volatile("bar.sync %0, %1;" ::"n"(id), "n"(n) : "memory")
/* The same with a run-time (warp-uniform) id: wait until n threads reached `id` (sync) or
 * count this warp's threads there without waiting (arrive); PTX ISA, bar.sync / bar.arrive:
 * a barrier completes once n threads have arrived or synced on it, whichever they did. */
KP_FN void kp_named_barrier_sync(unsigned id, unsigned n) {
    asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(n) : "memory");
}
KP_FN void kp_named_barrier_arrive(unsigned id, unsigned n) {
    asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(n) : "memory");
}
/* 16 zero bytes at a 16-byte aligned shared-memory address. */
KP_FN void kp_local_zero16(unsigned addr) {
    asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};" ::"r"(addr), "r"(0u) : "memory");
}

#endif /* KP_TILE_SM90_ATTN_H */
