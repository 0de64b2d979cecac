/*
 * kernels/kp_kargs.h - the scalar types of the by-value kernel parameter blocks
 * ("kargs"): one struct per kernel, defined once in a header that host C (backends/gpu)
 * and device code (OpenCL C 1.2, CUDA, HIP) both include, passed as one kernel argument
 * (clSetKernelArg with its size; a kernelParams entry on CUDA/HIP). Buffers stay separate
 * pointer arguments: OpenCL forbids pointers inside a struct argument.
 *
 * Layout rule, the same under every compiler: fixed-width scalars only (kp_karg_i64,
 * kp_karg_i32, float), every 64-bit field first, then the 32-bit ones, explicit padding
 * to a multiple of 8 bytes. With natural alignment and no implicit padding, offsets
 * follow from the field order alone; a type of another width on some target changes
 * the size. So each struct is checked by size on every target (KP_KARGS_SIZE: a static
 * assert on the host, a negative-array typedef on the device) and by the offset of its
 * first 32-bit field and its last field (KP_KARGS_OFFSET: on the host, and on device
 * compilers that have __builtin_offsetof).
 *
 * This header includes nothing on the device and <stdint.h>/<stddef.h> on the host; it
 * must not include kp_dialect.h (which refuses to compile without a device target).
 */
#ifndef KP_KARGS_H
#define KP_KARGS_H

#if defined(KP_TARGET_OPENCL) || defined(__OPENCL_VERSION__) || defined(__OPENCL_C_VERSION__)
typedef long kp_karg_i64;
typedef int kp_karg_i32;
#define KP_KARGS_DEVICE 1
#elif defined(KP_TARGET_CUDA) || defined(KP_TARGET_HIP) || defined(__CUDACC__) || defined(__HIPCC__) || \
    defined(__HIP__)
typedef long long kp_karg_i64;
typedef int kp_karg_i32;
#define KP_KARGS_DEVICE 1
#else
#include <stddef.h>
#include <stdint.h>
typedef int64_t kp_karg_i64;
typedef int32_t kp_karg_i32;
#endif

#define KP_KARGS_CAT2_(a, b) a##b
#define KP_KARGS_CAT_(a, b) KP_KARGS_CAT2_(a, b)

#if defined(KP_KARGS_DEVICE)
/* A file-scope typedef of a negative-size array fails the compile on every device
 * compiler (OpenCL C 1.2 has no _Static_assert). */
#define KP_KARGS_ASSERT_(cond, tag) typedef char KP_KARGS_CAT_(kp_kargs_check_, tag)[(cond) ? 1 : -1]
/* NVRTC has no __builtin_offsetof (nvcc and clang do) */
#if (defined(__clang__) || defined(__CUDACC__)) && !defined(__CUDACC_RTC__)
#define KP_KARGS_OFFSET(type, field, bytes) \
    KP_KARGS_ASSERT_(__builtin_offsetof(type, field) == (bytes), KP_KARGS_CAT_(type, KP_KARGS_CAT_(_, field)))
#else
#define KP_KARGS_OFFSET(type, field, bytes) KP_KARGS_ASSERT_(1, KP_KARGS_CAT_(type, KP_KARGS_CAT_(_, field)))
#endif
#define KP_KARGS_SIZE(type, bytes) KP_KARGS_ASSERT_(sizeof(type) == (bytes), KP_KARGS_CAT_(type, _size))
#else
#define KP_KARGS_OFFSET(type, field, bytes) \
    _Static_assert(offsetof(type, field) == (bytes), #type "." #field " is not at byte " #bytes)
#define KP_KARGS_SIZE(type, bytes) _Static_assert(sizeof(type) == (bytes), #type " is not " #bytes " bytes")
#endif

#endif /* KP_KARGS_H */
