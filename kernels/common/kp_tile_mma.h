/*
 * kernels/common/kp_tile_mma.h - one tile-MMA API, several implementations.
 *
 * The unit is PTX's m16n8k16: D[16x8] (f32) += A[16x16] * B[16x8], A and B 16-bit
 * (bf16 or f16), owned by a group of KP_MMA_LANES = 32 consecutive work-items (a warp
 * on NVIDIA). Each lane holds four f32 accumulators in PTX's layout, whatever the
 * implementation, so stores and epilogues are written once:
 *
 *     lane = 4*g + t (g = lane / 4, t = lane % 4)
 *     acc.x[0], acc.x[1] -> D[g][2t], D[g][2t+1];  acc.x[2], acc.x[3] -> D[g+8][2t], D[g+8][2t+1]
 *
 * Operands come from local memory as raw 16-bit values:
 *     A: row-major [16][lda]      (m, k)
 *     B: "col" = B transposed, row-major [8][ldb]   (n, k) - the K-contiguous layout
 *        attention's K tile and MoE's weight rows already have.
 * lda/ldb are in elements, multiples of 8, tile bases 16-byte aligned (ldmatrix).
 *
 * Use:
 *     kp_mma_acc c; kp_mma_acc_zero(&c);
 *     kp_mma_a a; kp_mma_b b;
 *     kp_mma_load_a(&a, As, lda, lane); kp_mma_load_b(&b, Bs, ldb, lane);
 *     kp_mma_16x8x16_bf16(&c, &a, &b);
 *     kp_mma_store_acc_f32(&c, out, ldo, lane);
 * All 32 lanes of a group call every function together (mma.sync and ldmatrix are
 * warp-collective on NVIDIA). A group never depends on other lanes of its hardware
 * warp: on AMD wave64 the MFMA mapping keeps each 32-lane group in its own lanes, so a
 * half-used wave (32 work-items, or `if (lid < 32)`) computes correctly too - by AMD's
 * documented lane layout; not yet run on AMD hardware.
 *
 * Implementations (KP_MMA_IMPL_NAME says which one was compiled):
 *   (a) NVIDIA PTX: ldmatrix + mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}. From CUDA
 *       on sm_80+, and from OpenCL when the backend defines KP_HAS_INLINE_PTX (NVIDIA's
 *       OpenCL compiler targets sm_90 and accepts both, DESIGN section 3).
 *   (b) AMD MFMA (CDNA2/3, wave64): sixteen 4x4x4 blocks per v_mfma_f32_4x4x4_16b_{bf16,
 *       f16}, four lanes a block, so each 32-lane group computes in its own lanes with
 *       no cross-lane exchange; the index math is in common/kp_mma_amd_map.h (shared
 *       with tests/test_tile_mma_layout.c, which emulates the instruction on the CPU).
 *       Opt-in, see "AMD selection" below. RDNA3 WMMA is not built: clang-15
 *       (ROCm 5.2's compiler) knows __builtin_amdgcn_wmma_f32_16x16x16_*_w32 but its
 *       backend fails on them for gfx1100 ("Illegal instruction detected: Operand has
 *       incorrect register class", then a crash), so RDNA takes (c).
 *   (c) portable: each lane loads the two rows of A and two columns of B that its four
 *       outputs need into private registers and does 64 FMAs. Everywhere else (PoCL,
 *       Intel, pre-sm_80); -DKP_MMA_PORTABLE forces it.
 */
#ifndef KP_TILE_MMA_H
#define KP_TILE_MMA_H

#include "kp_dialect.h"

#define KP_MMA_M 16
#define KP_MMA_N 8
#define KP_MMA_K 16
#define KP_MMA_LANES 32

typedef struct kp_mma_acc { float x[4]; } kp_mma_acc;

/* The lane of the calling work-item within its MMA group (1-D work-groups). */
#define kp_mma_lane() (kp_local_id(0) % KP_MMA_LANES)

KP_FN void kp_mma_acc_zero(kp_mma_acc *c) { c->x[0] = c->x[1] = c->x[2] = c->x[3] = 0.0f; }

#if defined(KP_MMA_PORTABLE)
#define KP_MMA_USE_PORTABLE 1
#elif defined(KP_TARGET_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define KP_MMA_USE_PTX 1
#elif defined(KP_TARGET_OPENCL) && defined(KP_HAS_INLINE_PTX)
#define KP_MMA_USE_PTX 1
#elif defined(KP_TARGET_HIP) && defined(KP_HAS_MFMA) && defined(__HIP_DEVICE_COMPILE__) && \
    (defined(__gfx90a__) || defined(__gfx940__) || defined(__gfx941__) || defined(__gfx942__))
/* AMD selection. The MFMA path is opt-in: the build defines KP_HAS_MFMA (the backend
 * passes it once the path is verified on hardware; nothing here has run on an AMD GPU).
 * Even then it is taken only in a device pass for an arch known to have the
 * instructions - gfx90a (MI200), gfx940/941/942 (MI300; clang-15 knows gfx940 only,
 * hiprtc on newer ROCm the others) - so one -DKP_HAS_MFMA serves a multi-arch build:
 * gfx908 (MI100: no bf16_1k), gfx950 (unverified), RDNA (gfx10/11: no MFMA) and the
 * host pass keep the portable tile. KP_HAS_WMMA is accepted and has no effect yet (see
 * (b) above). The accumulator layout is PTX's either way. */
#define KP_MMA_USE_MFMA 1
#else
#define KP_MMA_USE_PORTABLE 1
#endif

/* ---- (a) NVIDIA PTX ---------------------------------------------------- */
#if defined(KP_MMA_USE_PTX)
#define KP_MMA_IMPL_NAME "ptx-mma.sync"

typedef struct kp_mma_a { kp_u32 x[4]; } kp_mma_a;
typedef struct kp_mma_b { kp_u32 x[2]; } kp_mma_b;


/* ldmatrix.x4: lanes 0-15 point at rows 0-15 (cols 0-7), lanes 16-31 at the same rows,
 * cols 8-15; lane 4g+t receives A[g][2t..], A[g+8][2t..], A[g][8+2t..], A[g+8][8+2t..]:
 * exactly mma's a0..a3. */
KP_FN void kp_mma_load_a(kp_mma_a *a, KP_LOCAL_MEM const kp_u16 *s, int lda, int lane) {
    kp_u32 addr = kp_local_addr32(s + (lane % 16) * lda + (lane / 16) * 8);
    KP_ASM volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(a->x[0]), "=r"(a->x[1]), "=r"(a->x[2]), "=r"(a->x[3])
                 : "r"(addr));
}

/* ldmatrix.x2 over Bt[8][16]: lanes 0-7 address rows n 0-7 at k 0-7, lanes 8-15 the same
 * rows at k 8-15 (lanes 16-31 repeat them; ldmatrix ignores their addresses); lane 4g+t
 * receives Bt[g][2t..] and Bt[g][8+2t..]: mma's b0, b1. */
KP_FN void kp_mma_load_b(kp_mma_b *b, KP_LOCAL_MEM const kp_u16 *s, int ldb, int lane) {
    kp_u32 addr = kp_local_addr32(s + (lane % 8) * ldb + ((lane / 8) % 2) * 8);
    KP_ASM volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];"
                 : "=r"(b->x[0]), "=r"(b->x[1])
                 : "r"(addr));
}

KP_FN void kp_mma_16x8x16_bf16(kp_mma_acc *c, const kp_mma_a *a, const kp_mma_b *b) {
    KP_ASM volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c->x[0]), "+f"(c->x[1]), "+f"(c->x[2]), "+f"(c->x[3])
                 : "r"(a->x[0]), "r"(a->x[1]), "r"(a->x[2]), "r"(a->x[3]),
                   "r"(b->x[0]), "r"(b->x[1]));
}

KP_FN void kp_mma_16x8x16_f16(kp_mma_acc *c, const kp_mma_a *a, const kp_mma_b *b) {
    KP_ASM volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c->x[0]), "+f"(c->x[1]), "+f"(c->x[2]), "+f"(c->x[3])
                 : "r"(a->x[0]), "r"(a->x[1]), "r"(a->x[2]), "r"(a->x[3]),
                   "r"(b->x[0]), "r"(b->x[1]));
}

/* ---- (b) AMD MFMA, 16 blocks of 4x4x4 --------------------------------- */
#elif defined(KP_MMA_USE_MFMA)
#define KP_MMA_IMPL_NAME "amd-mfma-4x4x4"
#include "kp_mma_amd_map.h"

typedef short kp_amd_v4i16_ __attribute__((ext_vector_type(4)));
typedef _Float16 kp_amd_v4f16_ __attribute__((ext_vector_type(4)));
typedef float kp_amd_v4f32_ __attribute__((ext_vector_type(4)));

/* x[s]: k-step s (k = 4s..4s+3) of A's row KP_AMD4_A_ROW(lane) - one MFMA src0 each. */
typedef struct kp_mma_a { kp_amd_v4i16_ x[KP_AMD4_STEPS]; } kp_mma_a;
/* x[c][s]: k-step s of B's column KP_AMD4_B_COL(lane, c) - one MFMA src1 each. */
typedef struct kp_mma_b { kp_amd_v4i16_ x[KP_AMD4_SETS][KP_AMD4_STEPS]; } kp_mma_b;

/* Each operand is 16 consecutive 16-bit values in local memory: KP_AMD4_A_OFF(lane, s, e)
 * = KP_AMD4_A_OFF(lane, 0, 0) + 4s + e (the test checks it), so one 32-byte copy per
 * row, 16-byte aligned by the API's contract (lda/ldb multiples of 8, bases aligned). */
KP_FN void kp_mma_load_a(kp_mma_a *a, KP_LOCAL_MEM const kp_u16 *s, int lda, int lane) {
    const kp_u16 *p = (const kp_u16 *)__builtin_assume_aligned(s + KP_AMD4_A_OFF(lane, 0, 0, lda), 16);
    __builtin_memcpy(a->x, p, sizeof a->x);
}

KP_FN void kp_mma_load_b(kp_mma_b *b, KP_LOCAL_MEM const kp_u16 *s, int ldb, int lane) {
    for (int c = 0; c < KP_AMD4_SETS; ++c) {
        const kp_u16 *p = (const kp_u16 *)__builtin_assume_aligned(s + KP_AMD4_B_OFF(lane, c, 0, 0, ldb), 16);
        __builtin_memcpy(b->x[c], p, sizeof b->x[c]);
    }
}

/* is_f16: a constant at each call, so it folds. */
KP_FN kp_amd_v4f32_ kp_amd_mfma4_(kp_amd_v4i16_ a, kp_amd_v4i16_ b, kp_amd_v4f32_ c, int is_f16) {
    if (is_f16)
        return __builtin_amdgcn_mfma_f32_4x4x4f16(__builtin_bit_cast(kp_amd_v4f16_, a),
                                                  __builtin_bit_cast(kp_amd_v4f16_, b), c, 0, 0, 0);
    return __builtin_amdgcn_mfma_f32_4x4x4bf16_1k(a, b, c, 0, 0, 0);
}

/* Per column set c: C from the PTX accumulators (registers 2, 3 duplicate 0, 1), four
 * k-steps, registers 0 and 1 back; kp_mma_amd_map.h says why that is PTX's layout. */
KP_FN void kp_mma_mfma_(kp_mma_acc *acc, const kp_mma_a *a, const kp_mma_b *b, int is_f16) {
    for (int c = 0; c < KP_AMD4_SETS; ++c) {
        kp_amd_v4f32_ d;
        d[0] = acc->x[KP_AMD4_ACC(0, c)];
        d[1] = acc->x[KP_AMD4_ACC(1, c)];
        d[2] = acc->x[KP_AMD4_ACC(2, c)];
        d[3] = acc->x[KP_AMD4_ACC(3, c)];
        for (int s = 0; s < KP_AMD4_STEPS; ++s) d = kp_amd_mfma4_(a->x[s], b->x[c][s], d, is_f16);
        acc->x[KP_AMD4_ACC(0, c)] = d[0];
        acc->x[KP_AMD4_ACC(1, c)] = d[1];
    }
}

KP_FN void kp_mma_16x8x16_bf16(kp_mma_acc *c, const kp_mma_a *a, const kp_mma_b *b) { kp_mma_mfma_(c, a, b, 0); }
KP_FN void kp_mma_16x8x16_f16(kp_mma_acc *c, const kp_mma_a *a, const kp_mma_b *b) { kp_mma_mfma_(c, a, b, 1); }

/* ---- (c) portable local-memory FMA tile -------------------------------- */
#elif defined(KP_MMA_USE_PORTABLE)
#define KP_MMA_IMPL_NAME "portable-fma"

/* Rows g and g+8 of A and columns 2t, 2t+1 of B, 16 k each, two 16-bit values a word. */
typedef struct kp_mma_a { kp_u32 x[16]; } kp_mma_a;
typedef struct kp_mma_b { kp_u32 x[16]; } kp_mma_b;

KP_FN kp_u32 kp_pack_u16_(kp_u16 lo, kp_u16 hi) { return (kp_u32)lo | ((kp_u32)hi << 16); }

KP_FN void kp_mma_load_a(kp_mma_a *a, KP_LOCAL_MEM const kp_u16 *s, int lda, int lane) {
    int g = lane / 4;
    for (int r = 0; r < 2; ++r)
        for (int k = 0; k < 16; k += 2) {
            KP_LOCAL_MEM const kp_u16 *p = s + (g + 8 * r) * lda + k;
            a->x[r * 8 + k / 2] = kp_pack_u16_(p[0], p[1]);
        }
}

KP_FN void kp_mma_load_b(kp_mma_b *b, KP_LOCAL_MEM const kp_u16 *s, int ldb, int lane) {
    int t = lane % 4;
    for (int c = 0; c < 2; ++c)
        for (int k = 0; k < 16; k += 2) {
            KP_LOCAL_MEM const kp_u16 *p = s + (2 * t + c) * ldb + k;
            b->x[c * 8 + k / 2] = kp_pack_u16_(p[0], p[1]);
        }
}

/* is_f16: which 16-bit float the words hold; a constant at each call, so it folds. */
KP_FN float kp_mma_elem_(kp_u32 w, int hi, int is_f16) {
    kp_u16 h = (kp_u16)(hi ? (w >> 16) : (w & 0xffffu));
    return is_f16 ? kp_f16_to_f32(h) : kp_bf16_to_f32(h);
}

KP_FN void kp_mma_portable_(kp_mma_acc *c, const kp_mma_a *a, const kp_mma_b *b, int is_f16) {
    for (int r = 0; r < 2; ++r)
        for (int j = 0; j < 2; ++j) {
            float acc = c->x[2 * r + j];
            for (int k = 0; k < 16; ++k) {
                float av = kp_mma_elem_(a->x[r * 8 + k / 2], k & 1, is_f16);
                float bv = kp_mma_elem_(b->x[j * 8 + k / 2], k & 1, is_f16);
                acc = kp_fmaf(av, bv, acc);
            }
            c->x[2 * r + j] = acc;
        }
}

KP_FN void kp_mma_16x8x16_bf16(kp_mma_acc *c, const kp_mma_a *a, const kp_mma_b *b) {
    kp_mma_portable_(c, a, b, 0);
}
KP_FN void kp_mma_16x8x16_f16(kp_mma_acc *c, const kp_mma_a *a, const kp_mma_b *b) {
    kp_mma_portable_(c, a, b, 1);
}
#endif

/* ---- accumulator stores: one layout for every implementation ----------- */

KP_FN void kp_mma_store_acc_f32(const kp_mma_acc *c, KP_GLOBAL float *d, int ldd, int lane) {
    int g = lane / 4, t = lane % 4;
    d[g * ldd + 2 * t] = c->x[0];
    d[g * ldd + 2 * t + 1] = c->x[1];
    d[(g + 8) * ldd + 2 * t] = c->x[2];
    d[(g + 8) * ldd + 2 * t + 1] = c->x[3];
}

KP_FN void kp_mma_store_acc_local_f32(const kp_mma_acc *c, KP_LOCAL_MEM float *d, int ldd, int lane) {
    int g = lane / 4, t = lane % 4;
    d[g * ldd + 2 * t] = c->x[0];
    d[g * ldd + 2 * t + 1] = c->x[1];
    d[(g + 8) * ldd + 2 * t] = c->x[2];
    d[(g + 8) * ldd + 2 * t + 1] = c->x[3];
}

#endif /* KP_TILE_MMA_H */
