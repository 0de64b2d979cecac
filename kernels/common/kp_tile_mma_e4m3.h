/*
 * kernels/common/kp_tile_mma_e4m3.h - the FP8 e4m3 unit of the tile-MMA layer:
 * D[16x8] (f32) += A[16x32] * B[32x8], A and B e4m3 bytes, owned by a group of
 * KP_MMA_LANES work-items like kp_tile_mma.h's m16n8k16, with the same f32 accumulator
 * (kp_mma_acc, PTX's layout: lane 4g+t holds D[g][2t], D[g][2t+1], D[g+8][2t],
 * D[g+8][2t+1]) whatever the implementation, so stores and epilogues are shared.
 *
 * Operands come from local memory as bytes:
 *     A: row-major [16][lda]   (m, k)
 *     B: row-major [8][ldb]    (n, k): weight rows, K contiguous
 * lda/ldb in bytes, multiples of 16; tile bases 16-byte aligned.
 *
 *     kp_mma8_a a; kp_mma8_b b; kp_mma_acc c; kp_mma_acc_zero(&c);
 *     kp_mma8_load_a(&a, As, lda, lane); kp_mma8_load_b(&b, Bs, ldb, lane);
 *     kp_mma_16x8x32_e4m3(&c, &a, &b);
 * Kernels use it through the wave-level tile's e4m3 unit (common/kp_wave_tile_e4m3.h),
 * which pairs it into 16-column tiles on NVIDIA and the portable tile, owns the layout
 * and promotes K slices (DeepGEMM's promotion) through it.
 *
 * Implementations (KP_MMA8_IMPL_NAME), chosen like kp_tile_mma.h's:
 *   (a) "ptx-mma.sync-e4m3": PTX with e4m3 MMA - CUDA __CUDA_ARCH__ >= 890 (sm_89, sm_90a),
 *       OpenCL on NVIDIA when the backend defines KP_HAS_E4M3_MMA (sm_89+ devices; NVIDIA's
 *       OpenCL compiler accepts the instruction, DESIGN section 3): ldmatrix of b16 moves
 *       the 8-bit fragments (common/kp_mma_e4m3_map.h), then
 *       mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32.
 *   (b) "ptx-f16-decode": PTX without e4m3 MMA (sm_80..88: the fatbin's sm_80 SASS and
 *       compute_80 PTX, OpenCL on an A100): the same ldmatrix fragments, each byte pair
 *       decoded to f16x2 in registers with integer ops and one f16x2 multiply (exact:
 *       e4m3 fits f16), two m16n8k16 f16 MMAs with k permuted alike in A and B
 *       (kp_mma_e4m3_map.h). This is what sm_90's own lowering of the e4m3 mma.sync does
 *       (F2FP.F16.E4M3.UNPACK_B + HMMA.16816.F32: Hopper has no e4m3 mma.sync unit;
 *       its FP8 tensor-core rate needs wgmma).
 *   (c) "portable-decode": everywhere else (PoCL, AMD, Intel; -DKP_MMA_PORTABLE): each lane
 *       decodes the two A rows and two B columns its four outputs need to f32 and does
 *       128 FMAs.
 */
#ifndef KP_TILE_MMA_E4M3_H
#define KP_TILE_MMA_E4M3_H

#include "kp_tile_mma.h"
#include "kp_fp8.h"
#include "kp_mma_e4m3_map.h"

#define KP_MMA8_K 32

/* Loop hints for the kernels on this unit (nvcc, hipcc; nothing on OpenCL). KP_NO_UNROLL: keep the loop rolled where
 * the compiler would unroll it and hold several iterations' fragments in registers at
 * once. KP_UNROLL: unroll a constant-count loop that indexes register arrays (a rolled
 * one puts them in local memory). */
#if defined(KP_TARGET_CUDA) || defined(KP_TARGET_HIP)
#define KP_NO_UNROLL _Pragma("unroll 1")
#define KP_UNROLL _Pragma("unroll")
#else
#define KP_NO_UNROLL
#define KP_UNROLL
#endif

#if defined(KP_MMA_USE_PTX) && ((defined(KP_TARGET_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890) || \
                                (defined(KP_TARGET_OPENCL) && defined(KP_HAS_E4M3_MMA)))
#define KP_MMA8_USE_E4M3 1
#define KP_MMA8_IMPL_NAME "ptx-mma.sync-e4m3"
#elif defined(KP_MMA_USE_PTX)
#define KP_MMA8_USE_F16 1
#define KP_MMA8_IMPL_NAME "ptx-f16-decode"
#else
#define KP_MMA8_USE_PORTABLE 1
#define KP_MMA8_IMPL_NAME "portable-decode"
#endif

#if defined(KP_MMA8_USE_E4M3) || defined(KP_MMA8_USE_F16)
typedef struct kp_mma8_a { kp_u32 x[4]; } kp_mma8_a;
typedef struct kp_mma8_b { kp_u32 x[2]; } kp_mma8_b;

/* ldmatrix.x4 / .x2 of b16 over the byte tiles (kp_mma_e4m3_map.h) */
KP_FN void kp_mma8_load_a(kp_mma8_a *a, KP_LOCAL_MEM const unsigned char *s, int lda, int lane) {
    kp_u32 addr = kp_local_addr32(s + KP_E4M3_LDSM_A(lane, lda));
    KP_ASM volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                    : "=r"(a->x[0]), "=r"(a->x[1]), "=r"(a->x[2]), "=r"(a->x[3])
                    : "r"(addr));
}

KP_FN void kp_mma8_load_b(kp_mma8_b *b, KP_LOCAL_MEM const unsigned char *s, int ldb, int lane) {
    kp_u32 addr = kp_local_addr32(s + KP_E4M3_LDSM_B(lane, ldb));
    KP_ASM volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];"
                    : "=r"(b->x[0]), "=r"(b->x[1])
                    : "r"(addr));
}
#endif

#if defined(KP_MMA8_USE_E4M3)
KP_FN void kp_mma_16x8x32_e4m3(kp_mma_acc *c, const kp_mma8_a *a, const kp_mma8_b *b) {
    KP_ASM volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
                    "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                    : "+f"(c->x[0]), "+f"(c->x[1]), "+f"(c->x[2]), "+f"(c->x[3])
                    : "r"(a->x[0]), "r"(a->x[1]), "r"(a->x[2]), "r"(a->x[3]), "r"(b->x[0]), "r"(b->x[1]));
}

#elif defined(KP_MMA8_USE_F16)
/* byte pair `pair` of w (two e4m3) as two f16 in one word, exactly: KP_E4M3_F16X2_BITS
 * (kp_mma_e4m3_map.h) times 2^8 in f16x2, which never flushes subnormals */
KP_FN kp_u32 kp_mma8_f16x2_(kp_u32 w, int pair) {
    kp_u32 v = KP_E4M3_F16X2_BITS(w >> (16 * pair)), r;
    KP_ASM("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(v), "r"(KP_E4M3_F16X2_SCALE));
    return r;
}

KP_FN void kp_mma_16x8x32_e4m3(kp_mma_acc *c, const kp_mma8_a *a, const kp_mma8_b *b) {
    for (int h = 0; h < 2; ++h) {
        kp_mma_a a16;
        kp_mma_b b16;
        for (int j = 0; j < 4; ++j) a16.x[j] = kp_mma8_f16x2_(a->x[KP_E4M3_DEC_A_REG(h, j)], KP_E4M3_DEC_A_PAIR(j));
        for (int j = 0; j < 2; ++j) b16.x[j] = kp_mma8_f16x2_(b->x[KP_E4M3_DEC_B_REG(h)], j);
        kp_mma_16x8x16_f16(c, &a16, &b16);
    }
}

#else /* (c) portable */
/* rows g and g + 8 of A, columns 2t and 2t + 1 of B, 32 k each, as f32 */
typedef struct kp_mma8_a { float x[2][KP_MMA8_K]; } kp_mma8_a;
typedef struct kp_mma8_b { float x[2][KP_MMA8_K]; } kp_mma8_b;

KP_FN void kp_mma8_load_a(kp_mma8_a *a, KP_LOCAL_MEM const unsigned char *s, int lda, int lane) {
    for (int r = 0; r < 2; ++r)
        for (int k = 0; k < KP_MMA8_K; ++k) a->x[r][k] = kp_e4m3_to_f32(s[(lane / 4 + 8 * r) * lda + k]);
}

KP_FN void kp_mma8_load_b(kp_mma8_b *b, KP_LOCAL_MEM const unsigned char *s, int ldb, int lane) {
    for (int j = 0; j < 2; ++j)
        for (int k = 0; k < KP_MMA8_K; ++k) b->x[j][k] = kp_e4m3_to_f32(s[(2 * (lane % 4) + j) * ldb + k]);
}

KP_FN void kp_mma_16x8x32_e4m3(kp_mma_acc *c, const kp_mma8_a *a, const kp_mma8_b *b) {
    for (int r = 0; r < 2; ++r)
        for (int j = 0; j < 2; ++j) {
            float acc = c->x[2 * r + j];
            for (int k = 0; k < KP_MMA8_K; ++k) acc = kp_fmaf(a->x[r][k], b->x[j][k], acc);
            c->x[2 * r + j] = acc;
        }
}
#endif

#endif /* KP_TILE_MMA_E4M3_H */
