/*
 * backends/cpu/cpu_simd.c — run-time SIMD selection (cpuid + xgetbv) and the kernels
 * that have one implementation per level. Built without -march: each fast path is
 * compiled for its own target with __attribute__((target)), so one binary runs on
 * every x86-64 CPU and uses what it finds.
 */
#include "cpu_internal.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define KP_X86 1
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

static cpu_features g_features;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void detect_once(void) {
#ifdef KP_X86
    detect(&g_features);
#endif
    cpu_features *f = &g_features;
    if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->f16c && f->fma)
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
    }
    return "unknown";
}

cpu_simd_level cpu_simd_active(void) {
    cpu_simd_level best = cpu_detect()->best;
    const char *want = getenv("KPORT_CPU_SIMD");
    if (!want || !*want) return best;
    for (int l = CPU_SIMD_PORTABLE; l <= CPU_SIMD_AVX512_BF16; l++)
        if (strcmp(want, cpu_simd_name((cpu_simd_level)l)) == 0) return (cpu_simd_level)l < best ? (cpu_simd_level)l : best;
    return best;
}

const cpu_kernels *cpu_kernels_for(cpu_simd_level l) {
#ifdef KP_X86
    if (l >= CPU_SIMD_AVX512) return &kernels_avx512;
    if (l >= CPU_SIMD_AVX2) return &kernels_avx2;
#endif
    (void)l;
    return &kernels_portable;
}
