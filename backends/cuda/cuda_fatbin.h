/*
 * backends/cuda/cuda_fatbin.h — a reader for nvcc's fatbin container and the CUDA ELF
 * images inside it: which architectures a fatbin holds, and which kernels each ELF
 * defines. Used for diagnostics ("holds sm_80, sm_90a SASS and compute_80 PTX") and by
 * the tests that check the embedded kernels. Pure byte parsing: no driver, no cuda.h.
 *
 * The fatbin layout is undocumented but stable (CUDA 11 - 13); what this reader relies
 * on, checked against nvcc 13.0 output (little-endian throughout):
 *
 *   container header, 16 bytes:
 *     +0  u32 magic 0xBA55ED50   +4 u16 version (1)   +6 u16 header size (16)
 *     +8  u64 bytes of entries that follow the header
 *   entry header (64 bytes; 80 for PTX from CUDA 13, 112 for some sm_100+ ELF):
 *     +0  u16 kind: 1 PTX, 2 ELF (cubin)     +4  u32 this header's size
 *     +8  u64 payload bytes (8-byte padded; the next entry follows them)
 *     +16 u32 compressed payload size (0: stored plain)
 *     +24 u32 code version (PTX ISA 9.0 = 0x00090000; ELF 0x00010008)
 *     +28 u32 arch: 80 = sm_80 / compute_80, 90 = sm_90
 *     +40 u64 flags: 0x1 64-bit, 0x10 Linux host, 0x2000 LZ4 / 0x8000 ZSTD compressed
 *             payload, 0x100000 arch-specific target ("a": sm_90a, compute_90a)
 *     +56 u64 uncompressed size (when compressed)
 *   payload: follows the entry header; PTX text or an ELF64 image.
 *
 * nvcc compresses PTX payloads by default and leaves ELF images plain; a compressed
 * ELF is reported (compressed = 1), and its kernels cannot be listed.
 */
#ifndef KPORT_BACKENDS_CUDA_FATBIN_H
#define KPORT_BACKENDS_CUDA_FATBIN_H

#include <stddef.h>
#include <stdint.h>

#define KP_CU_FATBIN_MAGIC 0xBA55ED50u

typedef enum kp_cu_fb_kind {
    KP_CU_FB_PTX = 1,
    KP_CU_FB_ELF = 2,
} kp_cu_fb_kind;

/* One entry of a fatbin. */
typedef struct kp_cu_fb_image {
    int kind;                  /* kp_cu_fb_kind, or another value nvcc wrote */
    int arch;                  /* 80, 90, ... */
    int arch_specific;         /* the "a" targets: sm_90a, compute_90a */
    int compressed;            /* payload is LZ4/ZSTD-compressed */
    uint64_t flags;            /* the raw entry flags */
    const unsigned char *data; /* payload as stored (compressed bytes when compressed) */
    size_t size;               /* bytes of data (unpadded) */
} kp_cu_fb_image;

/* Parses the fatbin at data[0, size). Fills up to max images (out may be NULL with
 * max 0) and returns how many the fatbin holds, or -1 when it is malformed (err says
 * where and why; err may be NULL). */
int kp_cu_fatbin_images(const void *data, size_t size, kp_cu_fb_image *out, int max, char *err,
                        size_t err_len);

/* "sm_90a", "compute_80" (ELF: sm_, PTX: compute_). Returns buf. */
const char *kp_cu_fb_image_name(const kp_cu_fb_image *img, char *buf, size_t len);

/* A one-line summary: "sm_80, sm_90a SASS and compute_80 PTX" (or why it cannot be
 * read). Returns buf. */
const char *kp_cu_fatbin_describe(const void *data, size_t size, char *buf, size_t len);

/* The kernels (entry functions) an ELF image defines: global STT_FUNC symbols whose
 * section is .text.<name>. Calls fn for each and returns how many, or -1 when the
 * image is not a readable CUDA ELF64 (err says why). fn may be NULL. */
typedef void (*kp_cu_elf_kernel_fn)(void *user, const char *name);
int kp_cu_elf_kernels(const unsigned char *elf, size_t size, kp_cu_elf_kernel_fn fn, void *user, char *err,
                      size_t err_len);

/* 1 when the ELF image defines kernel `name`, 0 when not, -1 when it is unreadable. */
int kp_cu_elf_has_kernel(const unsigned char *elf, size_t size, const char *name);

/* The image the driver would run on a device of compute capability cc (80, 86, 90, ...):
 * SASS of the same major version at or below cc (an "a" image only on its very arch),
 * else the newest PTX at or below cc (JIT-compiled). NULL when none fits. */
const kp_cu_fb_image *kp_cu_fatbin_pick(const kp_cu_fb_image *imgs, int n, int cc);

#endif /* KPORT_BACKENDS_CUDA_FATBIN_H */
