/*
 * backends/gpu/gpu_cache.h — the on-disk kernel-binary cache the GPU backends share.
 *
 * One file per (source, build options, device, driver, platform):
 *     <cache dir>/<backend>-<key as 16 hex digits>.bin   (opencl-..., hip-...)
 * laid out as
 *     offset  0  magic "KPOCLBIN"            8 bytes
 *             8  format version (1)          u32
 *            12  key text length             u32
 *            16  key (FNV-1a 64)             u64
 *            24  payload length              u64
 *            32  checksum (FNV-1a 64 of key text + payload)  u64
 *            40  key text, then the payload (the driver's program binary)
 * in the host's byte order (a cache belongs to one machine). The key text — options,
 * device, driver, platform and the source's own hash, spelled out — is compared on
 * load, so a 64-bit collision reads as a miss, never as the wrong binary.
 *
 * Files are written to a temporary name in the same directory, fsync'd, then renamed
 * over the final name: readers see the old file or the new one, never half of one.
 */
#ifndef KPORT_GPU_CACHE_H
#define KPORT_GPU_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#define KP_FNV1A64_INIT 0xcbf29ce484222325ull

uint64_t kp_fnv1a64(uint64_t h, const void *data, size_t n);

/* The cache directory, or NULL when there is none (the cache is then skipped). */
const char *kp_gpu_cache_dir(const kp_host_services *host);

typedef enum kp_gpu_cache_result {
    KP_GPU_CACHE_HIT = 0,
    KP_GPU_CACHE_MISS = 1,    /* no file */
    KP_GPU_CACHE_CORRUPT = 2, /* not a regular file, or bad magic/version/length/checksum/key: removed if it could be */
} kp_gpu_cache_result;

/* Entries are opened without following links or blocking, and only regular files are
 * read: a link, FIFO, socket, device or directory in their place counts as corrupt.
 * On a hit *payload is malloc'd (caller frees). why: what was wrong and whether the
 * entry could be removed ("...; removed" or "...; could not remove it: ..."), for the log. */
kp_gpu_cache_result kp_gpu_cache_load(const char *path, uint64_t key, const char *keytext, unsigned char **payload,
                                      size_t *len, char *why, size_t why_len);
/* Removes a bad entry (an empty directory too); appends the outcome to why as above. */
void kp_gpu_cache_discard(const char *path, char *why, size_t why_len);
/* Atomic write; KP_ERR_IO with the reason set through host on failure. prefix: the
 * backend ("opencl"), for the temporary file name and messages. */
kp_status kp_gpu_cache_store(const kp_host_services *host, const char *prefix, const char *dir, const char *path, uint64_t key, const char *keytext,
                             const void *payload, size_t len);

/* ---- the run-time compilers' side (hiprtc, NVRTC) ---- */

/* <dir>/<prefix>-<FNV-1a of keytext>.bin; 0 without a dir or when it does not fit. */
int kp_gpu_cache_path(const char *dir, const char *prefix, const char *keytext, char *path, size_t path_len);

/* Compiles one kernel binary into *binary (malloc'd) and *size; sets the error. */
typedef kp_status (*kp_gpu_compile_fn)(void *ctx, unsigned char **binary, size_t *size);

/* The binary keytext names: from the cache when a valid entry exists (*from_cache = 1;
 * a bad entry is removed, logged and rebuilt), else compile(ctx), stored for next time
 * (a failed store is logged: the kernel still runs). A cached binary is followed by a
 * NUL byte not counted in *size (PTX is text). keytext names everything the binary
 * depends on: the source's hash, options, arch, compiler version. */
kp_status kp_gpu_cache_through(const kp_host_services *host, const char *prefix, const char *keytext,
                               kp_gpu_compile_fn compile, void *ctx, unsigned char **binary, size_t *size,
                               int *from_cache);

/* Splits options at spaces and tabs into argv, in place (the planners' options hold no
 * quoted spaces); the count, or -1 when there are more than max. */
int kp_gpu_split_options(char *buf, const char **argv, int max);

/* Appends printf-style text to the NUL-terminated buf of len bytes (truncating): the
 * reasons listing every library a plugin tried. */
void kp_gpu_append(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif /* KPORT_GPU_CACHE_H */
