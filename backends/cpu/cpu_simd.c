/*
 * backends/cpu/cpu_simd.c — run-time SIMD selection (x86-64: cpuid + xgetbv; aarch64:
 * getauxval) and the dtype conversions, which have one implementation per level.
 * Built without -march: each x86 fast path here is compiled for its own target with
 * __attribute__((target)) (the GEMM and attention kernels live in per-level files that
 * meson compiles with that level's flags), so one binary runs on every x86-64 CPU and
 * uses what it finds. NEON is part of every aarch64 CPU: no flags needed.
 */
#include "cpu_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define KP_X86 1
#endif

#if defined(__aarch64__)
#include <arm_neon.h>
#include <sys/auxv.h>
#define KP_ARM64 1
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_ASIMDHP
#define HWCAP_ASIMDHP (1 << 10)
#endif
#ifndef HWCAP2_BF16
#define HWCAP2_BF16 (1 << 14)
#endif
#endif

/* ---- portable kernels: the reference every SIMD level must match bit for bit ---- */

static inline float bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline uint16_t f32_to_bf16_one(float f) {
    uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

static inline float f16_to_f32_one(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0));
    if (exp == 0) {
        if (mant == 0) return bits_to_f32(sign);
        int e = -1; /* normalise the subnormal */
        do { mant <<= 1; e++; } while (!(mant & 0x400u));
        return bits_to_f32(sign | (uint32_t)(112 - e) << 23 | (mant & 0x3ffu) << 13);
    }
    return bits_to_f32(sign | (exp + 112) << 23 | mant << 13);
}

static inline uint16_t f32_to_f16_one(float f) {
    uint32_t x = f32_to_bits(f), sign = (x >> 16) & 0x8000u, exp = (x >> 23) & 0xffu, mant = x & 0x7fffffu;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0));
    int e = (int)exp - 112;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        uint32_t m = mant | 0x800000u, shift = (uint32_t)(14 - e);
        uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = (uint32_t)e << 10 | mant >> 13, rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* a carry into the exponent is right */
    return (uint16_t)(sign | h);
}

static void bf16_to_f32_c(const uint16_t *s, float *d, int64_t n) {
    for (int64_t i = 0; i < n; i++) d[i] = bits_to_f32((uint32_t)s[i] << 16);
}
static void f32_to_bf16_c(const float *s, uint16_t *d, int64_t n) {
    for (int64_t i = 0; i < n; i++) d[i] = f32_to_bf16_one(s[i]);
}
static void f16_to_f32_c(const uint16_t *s, float *d, int64_t n) {
    for (int64_t i = 0; i < n; i++) d[i] = f16_to_f32_one(s[i]);
}
static void f32_to_f16_c(const float *s, uint16_t *d, int64_t n) {
    for (int64_t i = 0; i < n; i++) d[i] = f32_to_f16_one(s[i]);
}

static const cpu_kernels kernels_portable = {
    .bf16_to_f32 = bf16_to_f32_c,
    .f32_to_bf16 = f32_to_bf16_c,
    .f16_to_f32 = f16_to_f32_c,
    .f32_to_f16 = f32_to_f16_c,
};

#ifdef KP_X86
/* ---- AVX2 + F16C ---- */
#define KP_AVX2 __attribute__((target("avx2,fma,f16c")))

KP_AVX2 static void bf16_to_f32_avx2(const uint16_t *s, float *d, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
        _mm256_storeu_ps(d + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
    bf16_to_f32_c(s + i, d + i, n - i);
}

KP_AVX2 static void f32_to_bf16_avx2(const float *s, uint16_t *d, int64_t n) {
    int64_t i = 0;
    const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
    const __m256i absmask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_castps_si256(_mm256_loadu_ps(s + i));
        __m256i rounded = _mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absmask), inf);
        __m256i qnan = _mm256_or_si256(u, _mm256_set1_epi32(0x400000));
        __m256i r = _mm256_srli_epi32(_mm256_blendv_epi8(rounded, qnan, nan), 16);
        /* pack 8 x u32 (values < 65536) into 8 x u16 */
        __m128i lo = _mm256_castsi256_si128(r), hi = _mm256_extracti128_si256(r, 1);
        _mm_storeu_si128((__m128i *)(d + i), _mm_packus_epi32(lo, hi));
    }
    f32_to_bf16_c(s + i, d + i, n - i);
}

KP_AVX2 static void f16_to_f32_avx2(const uint16_t *s, float *d, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    f16_to_f32_c(s + i, d + i, n - i);
}

KP_AVX2 static void f32_to_f16_avx2(const float *s, uint16_t *d, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    f32_to_f16_c(s + i, d + i, n - i);
}

static const cpu_kernels kernels_avx2 = {
    .bf16_to_f32 = bf16_to_f32_avx2,
    .f32_to_bf16 = f32_to_bf16_avx2,
    .f16_to_f32 = f16_to_f32_avx2,
    .f32_to_f16 = f32_to_f16_avx2,
};

/* ---- AVX-512 ---- */
#define KP_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))

KP_AVX512 static void bf16_to_f32_avx512(const uint16_t *s, float *d, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s + i)));
        _mm512_storeu_ps(d + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
    if (i < n) { /* masked tail: no scalar loop */
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, s + i));
        _mm512_mask_storeu_ps(d + i, m, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
}

/* Integer round-to-nearest-even rather than vcvtneps2bf16, which flushes denormal
 * inputs to zero: every level gives the same bits. */
KP_AVX512 static void f32_to_bf16_avx512(const float *s, uint16_t *d, int64_t n) {
    const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512i u = _mm512_castps_si512(_mm512_maskz_loadu_ps(m, s + i));
        __m512i rounded = _mm512_add_epi32(u, _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(u, 16), one)));
        __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, absmask), inf);
        __m512i r = _mm512_mask_or_epi32(rounded, nan, u, _mm512_set1_epi32(0x400000));
        _mm256_mask_storeu_epi16(d + i, m, _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
    }
}

KP_AVX512 static void f16_to_f32_avx512(const uint16_t *s, float *d, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(d + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i))));
    f16_to_f32_avx2(s + i, d + i, n - i);
}

KP_AVX512 static void f32_to_f16_avx512(const float *s, uint16_t *d, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(d + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    f32_to_f16_avx2(s + i, d + i, n - i);
}

static const cpu_kernels kernels_avx512 = {
    .bf16_to_f32 = bf16_to_f32_avx512,
    .f32_to_bf16 = f32_to_bf16_avx512,
    .f16_to_f32 = f16_to_f32_avx512,
    .f32_to_f16 = f32_to_f16_avx512,
};

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

static void detect(cpu_features *f) {
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    memcpy(f->vendor, &b, 4);
    memcpy(f->vendor + 4, &d, 4);
    memcpy(f->vendor + 8, &c, 4);
    f->vendor[12] = '\0';
    unsigned max_leaf = a;
    __get_cpuid(1, &a, &b, &c, &d);
    bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29);
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    bool ymm_os = (xcr0 & 0x6) == 0x6, zmm_os = (xcr0 & 0xe6) == 0xe6;
    if (max_leaf < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    f->fma = fma && ymm_os;
    f->f16c = f16c && ymm_os;
    f->avx2 = (b & (1u << 5)) && ymm_os;
    f->avx512f = (b & (1u << 16)) && zmm_os;
    f->avx512dq = (b & (1u << 17)) && zmm_os;
    f->avx512bw = (b & (1u << 30)) && zmm_os;
    f->avx512vl = (b & (1u << 31)) && zmm_os;
    f->avx512_fp16 = (d & (1u << 23)) && zmm_os;
    f->amx = d & (1u << 24); /* AMX-BF16; the OS must also grant the tile state */
    unsigned a1, b1, c1, d1;
    __cpuid_count(7, 1, a1, b1, c1, d1);
    f->avx512_bf16 = (a1 & (1u << 5)) && zmm_os;
}
#endif /* KP_X86 */

#ifdef KP_ARM64
/* ---- NEON (every aarch64 CPU): the same bits as the portable path ---- */

static void bf16_to_f32_neon(const uint16_t *s, float *d, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t h = vld1q_u16(s + i);
        vst1q_f32(d + i, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)));
        vst1q_f32(d + i + 4, vreinterpretq_f32_u32(vshll_high_n_u16(h, 16)));
    }
    bf16_to_f32_c(s + i, d + i, n - i);
}

/* Integer round-to-nearest-even rather than bfcvt, so that every level gives the same
 * bits (denormals included). */
static void f32_to_bf16_neon(const float *s, uint16_t *d, int64_t n) {
    int64_t i = 0;
    const uint32x4_t bias = vdupq_n_u32(0x7fff), one = vdupq_n_u32(1), inf = vdupq_n_u32(0x7f800000);
    const uint32x4_t absmask = vdupq_n_u32(0x7fffffff), quiet = vdupq_n_u32(0x400000);
    for (; i + 4 <= n; i += 4) {
        uint32x4_t u = vld1q_u32((const uint32_t *)(const void *)(s + i));
        uint32x4_t rounded = vaddq_u32(u, vaddq_u32(bias, vandq_u32(vshrq_n_u32(u, 16), one)));
        uint32x4_t nan = vcgtq_u32(vandq_u32(u, absmask), inf);
        vst1_u16(d + i, vshrn_n_u32(vbslq_u32(nan, vorrq_u32(u, quiet), rounded), 16));
    }
    f32_to_bf16_c(s + i, d + i, n - i);
}

static void f16_to_f32_neon(const uint16_t *s, float *d, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(d + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(s + i))));
    f16_to_f32_c(s + i, d + i, n - i);
}

/* fcvtn rounds to nearest even (the FPCR default Linux runs with) and keeps
 * subnormals: the portable path's bits, NaN payloads aside. */
static void f32_to_f16_neon(const float *s, uint16_t *d, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(d + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(s + i))));
    f32_to_f16_c(s + i, d + i, n - i);
}

static const cpu_kernels kernels_neon = {
    .bf16_to_f32 = bf16_to_f32_neon,
    .f32_to_bf16 = f32_to_bf16_neon,
    .f16_to_f32 = f16_to_f32_neon,
    .f32_to_f16 = f32_to_f16_neon,
};

static void detect(cpu_features *f) {
    unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
    snprintf(f->vendor, sizeof f->vendor, "arm");
    f->neon = (hw & HWCAP_ASIMD) != 0;
    f->neon_fp16 = (hw & HWCAP_ASIMDHP) != 0;
    f->neon_bf16 = f->neon && (hw2 & HWCAP2_BF16) != 0;
}
#endif /* KP_ARM64 */

static cpu_features g_features;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void detect_once(void) {
#if defined(KP_X86) || defined(KP_ARM64)
    detect(&g_features);
#endif
    cpu_features *f = &g_features;
    if (f->neon)
        f->best = f->neon_bf16 ? CPU_SIMD_NEON_BF16 : CPU_SIMD_NEON;
    else if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->f16c && f->fma)
        f->best = f->avx512_bf16 ? CPU_SIMD_AVX512_BF16 : CPU_SIMD_AVX512;
    else if (f->avx2 && f->fma && f->f16c)
        f->best = CPU_SIMD_AVX2;
    else
        f->best = CPU_SIMD_PORTABLE;
}

const cpu_features *cpu_detect(void) {
    pthread_once(&g_once, detect_once);
    return &g_features;
}

const char *cpu_simd_name(cpu_simd_level l) {
    switch (l) {
    case CPU_SIMD_PORTABLE: return "portable";
    case CPU_SIMD_AVX2: return "avx2";
    case CPU_SIMD_AVX512: return "avx512";
    case CPU_SIMD_AVX512_BF16: return "avx512-bf16";
    case CPU_SIMD_NEON: return "neon";
    case CPU_SIMD_NEON_BF16: return "neon-bf16";
    }
    return "unknown";
}

static bool is_arm_level(cpu_simd_level l) { return l == CPU_SIMD_NEON || l == CPU_SIMD_NEON_BF16; }

bool cpu_simd_at_least(cpu_simd_level have, cpu_simd_level want) {
    if (want == CPU_SIMD_PORTABLE) return true;
    return have != CPU_SIMD_PORTABLE && is_arm_level(have) == is_arm_level(want) && have >= want;
}

int cpu_simd_supported(cpu_simd_level out[CPU_SIMD_LEVELS]) {
    cpu_simd_level best = cpu_detect()->best;
    int n = 0;
    for (int l = 0; l < CPU_SIMD_LEVELS; l++)
        if (cpu_simd_at_least(best, (cpu_simd_level)l)) out[n++] = (cpu_simd_level)l;
    return n;
}

int cpu_simd_lanes(cpu_simd_level l) {
    switch (l) {
    case CPU_SIMD_AVX2: return 8;
    case CPU_SIMD_AVX512:
    case CPU_SIMD_AVX512_BF16: return 16;
    case CPU_SIMD_NEON:
    case CPU_SIMD_NEON_BF16: return 4;
    default: return 1;
    }
}

/* KPORT_CPU_SIMD names a level to run at; one above what the CPU has, or of another
 * architecture, leaves the best level (never a level the CPU cannot run). */
cpu_simd_level cpu_simd_active(void) {
    cpu_simd_level best = cpu_detect()->best;
    const char *want = getenv("KPORT_CPU_SIMD");
    if (!want || !*want) return best;
    for (int l = 0; l < CPU_SIMD_LEVELS; l++)
        if (strcmp(want, cpu_simd_name((cpu_simd_level)l)) == 0)
            return cpu_simd_at_least(best, (cpu_simd_level)l) ? (cpu_simd_level)l : best;
    return best;
}

const cpu_kernels *cpu_kernels_for(cpu_simd_level l) {
#ifdef KP_X86
    if (cpu_simd_at_least(l, CPU_SIMD_AVX512)) return &kernels_avx512;
    if (cpu_simd_at_least(l, CPU_SIMD_AVX2)) return &kernels_avx2;
#endif
#ifdef KP_ARM64
    if (cpu_simd_at_least(l, CPU_SIMD_NEON)) return &kernels_neon;
#endif
    return &kernels_portable;
}
