/*
 * kernels/kp_dialect.h - the one dialect every kport device kernel is written in.
 *
 * A kernel source is the intersection of OpenCL C 1.2 and CUDA/HIP C: no templates,
 * no classes, no references; specialised only with -D (dtype, head dim, tile sizes).
 * This header maps that intersection onto each target:
 *
 *   OpenCL C 1.2   KP_TARGET_OPENCL  (or the compiler's __OPENCL_VERSION__)
 *   CUDA C         KP_TARGET_CUDA    (or __CUDACC__)
 *   HIP C          KP_TARGET_HIP     (or __HIPCC__ / __HIP__)
 *
 * What it gives a kernel:
 *   qualifiers     KP_KERNEL, KP_GLOBAL, KP_LOCAL(type, name, count) (a work-group array
 *                  declared at kernel scope, 16-byte aligned), KP_LOCAL_MEM (pointer qualifier for helpers),
 *                  KP_CONSTANT (program-scope tables), KP_FN (helper functions)
 *   dynamic local  KP_DYNAMIC_LOCAL_ARG(name) as the kernel's last parameter and
 *                  KP_DYNAMIC_LOCAL(name) first in its body: `name` is a 16-byte aligned
 *                  `KP_LOCAL_MEM uint4 *` of the bytes the launch asks for (kp_gpu_launch.
 *                  local_bytes): extern __shared__ on CUDA/HIP (the backend raises CUDA's
 *                  48 KiB default to the device's opt-in maximum), a __local kernel argument
 *                  the backend sizes on OpenCL. Tiles are then sized from the device's real
 *                  limit, not from what a static array may declare.
 *   vectors        uint2 / uint4 (both languages have them), KP_UINT2_ZERO / KP_UINT4_ZERO
 *   launch bounds  KP_LAUNCH_BOUNDS(threads, blocks): the work-group size a kernel is always
 *                  launched with (CUDA/HIP __launch_bounds__, OpenCL reqd_work_group_size), and
 *                  on CUDA the blocks per SM the planner counts on: ptxas then keeps registers
 *                  within 65536 / (threads * blocks), spilling rather than exceeding, so the
 *                  static check's "0 spill bytes" also proves the planner's occupancy
 *   ids            kp_local_id(d), kp_group_id(d), kp_local_size(d), kp_num_groups(d),
 *                  kp_global_id(d) - all int
 *   sync           kp_barrier() (work-group barrier, local and global memory ordered)
 *   atomics        kp_atomic_add_i32 / _f32 on global memory, _local_ variants
 *   16-bit storage kp_bf16_t, kp_f16_t (raw bits in a ushort) with f32 load/store;
 *                  bf16 rounds to nearest even; f16 goes through vload_half/vstore_half
 *                  on OpenCL (no cl_khr_fp16 on PoCL or NVIDIA's OpenCL)
 *   dtype          -DKP_DTYPE_F32 / _F16 / _BF16 -> kp_storage_t, kp_load, kp_store
 *   reductions     kp_reduce_sum / kp_reduce_max over a 1-D work-group: warp/subgroup
 *                  shuffles where the target has them, a local-memory tree elsewhere
 *
 * The tile-MMA layer lives in common/kp_tile_mma.h and builds on this header.
 *
 * Options a backend may define when it builds a kernel:
 *   KP_HAS_INLINE_PTX   OpenCL on an NVIDIA GPU: inline PTX accepted (warp = 32 lanes)
 *   KP_NO_SUBGROUPS     never take the OpenCL subgroup path (for tests)
 *   KP_HAS_MFMA         HIP: the tile-MMA layer uses MFMA on the archs that have it
 *                       (gfx90a, gfx940/941/942; others keep the portable tile), see
 *                       common/kp_tile_mma.h. Opt-in until verified on hardware.
 *   KP_HAS_WMMA         HIP, RDNA3: accepted, no effect yet (clang-15 cannot compile WMMA)
 */
#ifndef KP_DIALECT_H
#define KP_DIALECT_H

/* ---- target ----------------------------------------------------------- */

#if defined(KP_TARGET_OPENCL) || defined(__OPENCL_VERSION__) || defined(__OPENCL_C_VERSION__)
#undef KP_TARGET_OPENCL
#define KP_TARGET_OPENCL 1
#elif defined(KP_TARGET_HIP) || defined(__HIPCC__) || defined(__HIP__)
#undef KP_TARGET_HIP
#define KP_TARGET_HIP 1
#elif defined(KP_TARGET_CUDA) || defined(__CUDACC__)
#undef KP_TARGET_CUDA
#define KP_TARGET_CUDA 1
#else
#error "kp_dialect.h: unknown target (compile as OpenCL C, CUDA or HIP, or define KP_TARGET_*)"
#endif

#if defined(KP_TARGET_CUDA) || defined(KP_TARGET_HIP)
#define KP_TARGET_CUDA_LIKE 1
#endif

/* ---- dtype selection (checked before anything else uses it) ---------- */

#if (defined(KP_DTYPE_F32) + defined(KP_DTYPE_F16) + defined(KP_DTYPE_BF16)) > 1
#error "define at most one of KP_DTYPE_F32, KP_DTYPE_F16, KP_DTYPE_BF16"
#endif

/* ---- OpenCL C 1.2 ------------------------------------------------------ */
#if defined(KP_TARGET_OPENCL)

#if defined(cl_khr_subgroups) && !defined(KP_NO_SUBGROUPS)
#pragma OPENCL EXTENSION cl_khr_subgroups : enable
#define KP_HAS_SUBGROUPS 1
#elif defined(cl_intel_subgroups) && !defined(KP_NO_SUBGROUPS)
#pragma OPENCL EXTENSION cl_intel_subgroups : enable
#define KP_HAS_SUBGROUPS 1
#endif

typedef uint kp_u32;
typedef int kp_i32;
typedef ushort kp_u16;

#define KP_KERNEL __kernel
#define KP_GLOBAL __global
#define KP_LOCAL_MEM __local
#define KP_CONSTANT __constant
#define KP_LOCAL(type, name, count) __local type name[count] __attribute__((aligned(16)))
#define KP_DYNAMIC_LOCAL_ARG(name) , __local uint4 *name
#define KP_UINT4_ZERO ((uint4)(0u, 0u, 0u, 0u))
#define KP_UINT2_ZERO ((uint2)(0u, 0u))
#define KP_DYNAMIC_LOCAL(name) (void)0
#define KP_LAUNCH_BOUNDS(threads, blocks) __attribute__((reqd_work_group_size((threads), 1, 1)))
/* always_inline: PoCL 3.1 runs a barrier inside a static helper that LLVM chose not to
 * inline with races between work-groups (wrong reductions, 1 run in ~20); forced
 * inlining removes the case, and every helper here is small. */
#define KP_FN static inline __attribute__((always_inline))
#define KP_RESTRICT restrict

#define kp_local_id(d) ((int)get_local_id(d))
#define kp_group_id(d) ((int)get_group_id(d))
#define kp_local_size(d) ((int)get_local_size(d))
#define kp_num_groups(d) ((int)get_num_groups(d))
#define kp_global_id(d) ((int)get_global_id(d))

#define kp_barrier() barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE)

#define kp_as_float(u) as_float(u)
#define kp_as_uint(f) as_uint(f)
#define kp_fmaf(a, b, c) fma((a), (b), (c))
#define kp_expf(x) exp(x)
#define kp_fmaxf(a, b) fmax((a), (b))
#define KP_INFINITY INFINITY

KP_FN int kp_atomic_add_i32(volatile KP_GLOBAL int *p, int v) { return atomic_add(p, v); }
KP_FN int kp_atomic_add_local_i32(volatile KP_LOCAL_MEM int *p, int v) { return atomic_add(p, v); }

/* OpenCL 1.2 has no float atomics: compare-and-swap on the bits. */
KP_FN float kp_atomic_add_f32(volatile KP_GLOBAL float *p, float v) {
    volatile KP_GLOBAL int *ip = (volatile KP_GLOBAL int *)p;
    int old = *ip, seen;
    while ((seen = atomic_cmpxchg(ip, old, as_int(as_float(old) + v))) != old) old = seen;
    return as_float(old);
}
KP_FN float kp_atomic_add_local_f32(volatile KP_LOCAL_MEM float *p, float v) {
    volatile KP_LOCAL_MEM int *ip = (volatile KP_LOCAL_MEM int *)p;
    int old = *ip, seen;
    while ((seen = atomic_cmpxchg(ip, old, as_int(as_float(old) + v))) != old) old = seen;
    return as_float(old);
}

/* half exists here only as a pointer target (no cl_khr_fp16): vload_half/vstore_half
 * do the conversion, vstore_half_rte rounds to nearest even. */
KP_FN float kp_f16_to_f32(kp_u16 h) { return vload_half(0, (const half *)&h); }
KP_FN kp_u16 kp_f32_to_f16(float f) {
    kp_u16 h;
    vstore_half_rte(f, 0, (half *)&h);
    return h;
}
#define kp_load_f16(p, i) vload_half((i), (const KP_GLOBAL half *)(p))
#define kp_store_f16(p, i, v) vstore_half_rte((v), (i), (KP_GLOBAL half *)(p))

/* ---- CUDA and HIP ------------------------------------------------------ */
#else /* KP_TARGET_CUDA_LIKE */

#if defined(KP_TARGET_HIP)
#if !defined(__HIPCC_RTC__) /* hiprtc pre-includes its own copies; a second one redefines __half_raw */
#include <hip/hip_runtime.h>
#include <hip/hip_fp16.h>
#endif
#else
#include <cuda_fp16.h>
#endif

typedef unsigned int kp_u32;
typedef int kp_i32;
typedef unsigned short kp_u16;

#define KP_KERNEL extern "C" __global__
#define KP_GLOBAL
#define KP_LOCAL_MEM
#define KP_CONSTANT __constant__
#define KP_LOCAL(type, name, count) __shared__ __align__(16) type name[count]
#define KP_DYNAMIC_LOCAL_ARG(name)
#define KP_UINT4_ZERO make_uint4(0u, 0u, 0u, 0u)
#define KP_UINT2_ZERO make_uint2(0u, 0u)
#define KP_DYNAMIC_LOCAL(name) extern __shared__ uint4 name[]
#if defined(KP_TARGET_HIP) /* HIP's second argument means something else (waves per EU) */
#define KP_LAUNCH_BOUNDS(threads, blocks) __launch_bounds__(threads)
#else
#define KP_LAUNCH_BOUNDS(threads, blocks) __launch_bounds__(threads, blocks)
#endif
#define KP_FN static __device__ __forceinline__
#define KP_RESTRICT __restrict__

#define KP_DIM_(v, d) ((d) == 0 ? (int)v.x : (d) == 1 ? (int)v.y : (int)v.z)
#define kp_local_id(d) KP_DIM_(threadIdx, d)
#define kp_group_id(d) KP_DIM_(blockIdx, d)
#define kp_local_size(d) KP_DIM_(blockDim, d)
#define kp_num_groups(d) KP_DIM_(gridDim, d)
#define kp_global_id(d) (kp_group_id(d) * kp_local_size(d) + kp_local_id(d))

#define kp_barrier() __syncthreads()

#define kp_as_float(u) __uint_as_float(u)
#define kp_as_uint(f) __float_as_uint(f)
#define kp_fmaf(a, b, c) fmaf((a), (b), (c))
#define kp_expf(x) expf(x)
#define kp_fmaxf(a, b) fmaxf((a), (b))
#define KP_INFINITY __int_as_float(0x7f800000)

KP_FN int kp_atomic_add_i32(volatile int *p, int v) { return atomicAdd((int *)p, v); }
KP_FN int kp_atomic_add_local_i32(volatile int *p, int v) { return atomicAdd((int *)p, v); }
KP_FN float kp_atomic_add_f32(volatile float *p, float v) { return atomicAdd((float *)p, v); }
KP_FN float kp_atomic_add_local_f32(volatile float *p, float v) { return atomicAdd((float *)p, v); }

KP_FN float kp_f16_to_f32(kp_u16 h) { return __half2float(__ushort_as_half(h)); }
KP_FN kp_u16 kp_f32_to_f16(float f) { return __half_as_ushort(__float2half_rn(f)); }
#define kp_load_f16(p, i) kp_f16_to_f32((p)[i])
#define kp_store_f16(p, i, v) ((p)[i] = kp_f32_to_f16(v))

/* Warp width. HIP: 64 on CDNA (wave64), 32 on RDNA in wave32 mode - never assume 32.
 * __AMDGCN_WAVEFRONT_SIZE is a compile-time constant in the device pass only. HIP's
 * NVIDIA platform (nvcc with HIP's nvidia_detail headers) has 32-lane warps, and its
 * __shfl_xor is __shfl_xor_sync(0xffffffff, ...), whose width must not exceed 32. */
#if defined(KP_TARGET_HIP)
#if defined(__HIP_PLATFORM_NVIDIA__) || defined(__HIP_PLATFORM_NVCC__)
#define KP_WARP_SIZE 32
#elif defined(__AMDGCN_WAVEFRONT_SIZE)
#define KP_WARP_SIZE __AMDGCN_WAVEFRONT_SIZE
#else
#define KP_WARP_SIZE 64
#endif
#define kp_shfl_xor_f32(v, m) __shfl_xor((v), (m), KP_WARP_SIZE)
#else
#define KP_WARP_SIZE 32
#define kp_shfl_xor_f32(v, m) __shfl_xor_sync(0xffffffffu, (v), (m))
#endif
#define KP_HAS_WARP_SHUFFLE 1

#endif /* target */

/* Inline assembly: clang-based compilers in OpenCL/C99 mode know only __asm__;
 * NVIDIA's OpenCL compiler and nvcc take asm. */
#if defined(__clang__)
#define KP_ASM __asm__
#else
#define KP_ASM asm
#endif

/* ---- PTX of sm_80 and newer: CUDA's device pass, and OpenCL on NVIDIA ----------
 * KP_PTX_SM80: ldmatrix, mma.sync, cp.async and shfl.sync may be written as inline PTX.
 * kp_local_addr32(p): a local pointer as the 32-bit shared-window address those take;
 * NVIDIA's OpenCL hands __local pointers out as that address already
 * (anchors/ocl_nv_ptx_features.c). */
#if (defined(KP_TARGET_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800) || \
    (defined(KP_TARGET_OPENCL) && defined(KP_HAS_INLINE_PTX))
#define KP_PTX_SM80 1
#if defined(KP_TARGET_OPENCL)
#define kp_local_addr32(p) ((kp_u32)(size_t)(p))
#else
#define kp_local_addr32(p) ((kp_u32)__cvta_generic_to_shared(p))
#endif
#endif

/* ---- OpenCL on NVIDIA: warp shuffles through inline PTX ---------------- */
#if defined(KP_TARGET_OPENCL) && defined(KP_HAS_INLINE_PTX)
#define KP_WARP_SIZE 32
KP_FN float kp_shfl_xor_f32(float v, int m) {
    float r;
    KP_ASM volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(r) : "f"(v), "r"(m));
    return r;
}
#define KP_HAS_WARP_SHUFFLE 1
#undef KP_HAS_SUBGROUPS /* the PTX path is the faster and better known one */
#endif

/* ---- 16-bit storage ---------------------------------------------------- */

typedef kp_u16 kp_bf16_t;
typedef kp_u16 kp_f16_t;

KP_FN float kp_bf16_to_f32(kp_bf16_t b) { return kp_as_float(((kp_u32)b) << 16); }

/* Round to nearest even; NaN stays NaN (quiet) instead of rounding into infinity. */
KP_FN kp_bf16_t kp_f32_to_bf16(float f) {
    kp_u32 u = kp_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (kp_bf16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (kp_bf16_t)(u >> 16);
}

/* ---- dtype: -DKP_DTYPE_* picks the storage type ------------------------ */
/* kp_load(p, i) -> float and kp_store(p, i, v) take global pointers; _l for local. */

#if defined(KP_DTYPE_F16)
typedef kp_f16_t kp_storage_t;
#define KP_DTYPE_NAME "f16"
#define kp_load(p, i) kp_load_f16((p), (i))
#define kp_store(p, i, v) kp_store_f16((p), (i), (v))
#define kp_load_l(p, i) kp_f16_to_f32((p)[i])
#define kp_store_l(p, i, v) ((p)[i] = kp_f32_to_f16(v))
#elif defined(KP_DTYPE_BF16)
typedef kp_bf16_t kp_storage_t;
#define KP_DTYPE_NAME "bf16"
#define kp_load(p, i) kp_bf16_to_f32((p)[i])
#define kp_store(p, i, v) ((p)[i] = kp_f32_to_bf16(v))
#define kp_load_l(p, i) kp_bf16_to_f32((p)[i])
#define kp_store_l(p, i, v) ((p)[i] = kp_f32_to_bf16(v))
#else
#ifndef KP_DTYPE_F32
#define KP_DTYPE_F32 1
#endif
typedef float kp_storage_t;
#define KP_DTYPE_NAME "f32"
#define kp_load(p, i) ((p)[i])
#define kp_store(p, i, v) ((p)[i] = (v))
#define kp_load_l(p, i) ((p)[i])
#define kp_store_l(p, i, v) ((p)[i] = (v))
#endif

/* ---- work-group reductions -------------------------------------------- */
/*
 * kp_reduce_sum(v, scratch) / kp_reduce_max(v, scratch): every work-item of a 1-D
 * work-group calls it (uniform control flow) and gets the reduction of all v.
 * scratch: local memory of at least kp_local_size(0) floats; free again on return
 * (the function ends with a barrier). Three paths, picked at compile time:
 *   warp shuffles   CUDA, HIP, OpenCL with KP_HAS_INLINE_PTX; taken at run time
 *                   only when the work-group is a whole number of warps
 *   subgroups       OpenCL with cl_khr_subgroups / cl_intel_subgroups
 *   local tree      everything else (PoCL), any work-group size
 */

#define KP_RED_SUM 0
#define KP_RED_MAX 1

KP_FN float kp_red_op_(float a, float b, int op) { return op == KP_RED_SUM ? a + b : kp_fmaxf(a, b); }

/* Tree over n values in scratch[0..n); leaves the result in scratch[0]. */
KP_FN float kp_reduce_tree_(float v, KP_LOCAL_MEM float *scratch, int op) {
    int lid = kp_local_id(0), n = kp_local_size(0);
    scratch[lid] = v;
    kp_barrier();
    int half_n = 1;
    while (half_n < n) half_n <<= 1;
    for (half_n >>= 1; half_n > 0; half_n >>= 1) {
        if (lid < half_n && lid + half_n < n)
            scratch[lid] = kp_red_op_(scratch[lid], scratch[lid + half_n], op);
        kp_barrier();
    }
    float r = scratch[0];
    kp_barrier();
    return r;
}

#if defined(KP_HAS_WARP_SHUFFLE)
KP_FN float kp_warp_reduce_(float v, int op) {
    for (int m = KP_WARP_SIZE / 2; m > 0; m >>= 1) v = kp_red_op_(v, kp_shfl_xor_f32(v, m), op);
    return v;
}
#endif

KP_FN float kp_reduce_(float v, KP_LOCAL_MEM float *scratch, int op) {
#if defined(KP_HAS_WARP_SHUFFLE)
    int lid = kp_local_id(0), n = kp_local_size(0);
    if ((n % KP_WARP_SIZE) == 0) { /* uniform: n is the same for the whole group */
        int warps = n / KP_WARP_SIZE;
        v = kp_warp_reduce_(v, op);
        if (warps == 1) return v;
        if (lid % KP_WARP_SIZE == 0) scratch[lid / KP_WARP_SIZE] = v;
        kp_barrier();
        float r = scratch[0];
        for (int w = 1; w < warps; ++w) r = kp_red_op_(r, scratch[w], op);
        kp_barrier();
        return r;
    }
    return kp_reduce_tree_(v, scratch, op);
#elif defined(KP_HAS_SUBGROUPS)
    float r = op == KP_RED_SUM ? sub_group_reduce_add(v) : sub_group_reduce_max(v);
    int groups = (int)get_num_sub_groups();
    if (groups == 1) return r;
    if (get_sub_group_local_id() == 0) scratch[get_sub_group_id()] = r;
    kp_barrier();
    r = scratch[0];
    for (int g = 1; g < groups; ++g) r = kp_red_op_(r, scratch[g], op);
    kp_barrier();
    return r;
#else
    return kp_reduce_tree_(v, scratch, op);
#endif
}

KP_FN float kp_reduce_sum(float v, KP_LOCAL_MEM float *scratch) { return kp_reduce_(v, scratch, KP_RED_SUM); }
KP_FN float kp_reduce_max(float v, KP_LOCAL_MEM float *scratch) { return kp_reduce_(v, scratch, KP_RED_MAX); }

#endif /* KP_DIALECT_H */
