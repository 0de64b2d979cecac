/*
 * backends/gpu/gpu_cache.c — the on-disk kernel-binary cache (format: gpu_cache.h).
 *
 * Every failure here is survivable: a load that finds anything wrong removes the file
 * and reports a miss; a store that fails leaves no partial file behind.
 */
#include "gpu_cache.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


#define KP_GPU_CACHE_MAGIC "KPOCLBIN"
#define KP_GPU_CACHE_VERSION 1u
#define KP_GPU_CACHE_MAX_FILE (1ull << 30) /* refuse to read anything larger */

typedef struct kp_gpu_cache_header {
    char magic[8];
    uint32_t version;
    uint32_t keytext_len;
    uint64_t key;
    uint64_t payload_len;
    uint64_t checksum;
} kp_gpu_cache_header;

_Static_assert(sizeof(kp_gpu_cache_header) == 40, "the cache header is 40 bytes on every ABI");

uint64_t kp_fnv1a64(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

const char *kp_gpu_cache_dir(const kp_host_services *host) {
    if (host && host->cache_dir) return host->cache_dir();
    /* A host without the service (an older core, a test host): KPORT_CACHE_DIR only. */
    const char *env = secure_getenv("KPORT_CACHE_DIR");
    return env && env[0] ? env : NULL;
}

static int read_all(int fd, void *buf, size_t n) {
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_all(int fd, const void *buf, size_t n) {
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads and checks the whole file; returns NULL (and why) on the first thing wrong. */
static unsigned char *cache_read_checked(int fd, uint64_t key, const char *keytext, size_t *len, char *why,
                                         size_t why_len) {
    struct stat st;
    kp_gpu_cache_header h;
    size_t ktlen = strlen(keytext);
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < sizeof h || (uint64_t)st.st_size > KP_GPU_CACHE_MAX_FILE) {
        snprintf(why, why_len, "size %lld is not a cache entry's", (long long)st.st_size);
        return NULL;
    }
    if (read_all(fd, &h, sizeof h) != 0 || memcmp(h.magic, KP_GPU_CACHE_MAGIC, 8) != 0) {
        snprintf(why, why_len, "bad magic");
        return NULL;
    }
    if (h.version != KP_GPU_CACHE_VERSION || h.key != key || h.keytext_len != ktlen) {
        snprintf(why, why_len, "version %u / key %016llx / key text length %u do not match", h.version,
                 (unsigned long long)h.key, h.keytext_len);
        return NULL;
    }
    if (h.payload_len == 0 || sizeof h + (uint64_t)h.keytext_len + h.payload_len != (uint64_t)st.st_size) {
        snprintf(why, why_len, "truncated: header says %llu payload bytes, file has %lld bytes",
                 (unsigned long long)h.payload_len, (long long)st.st_size);
        return NULL;
    }
    size_t body = (size_t)st.st_size - sizeof h;
    unsigned char *buf = malloc(body);
    if (!buf || read_all(fd, buf, body) != 0) {
        free(buf);
        snprintf(why, why_len, "read failed");
        return NULL;
    }
    if (kp_fnv1a64(KP_FNV1A64_INIT, buf, body) != h.checksum || memcmp(buf, keytext, ktlen) != 0) {
        free(buf);
        snprintf(why, why_len, "checksum or key text mismatch");
        return NULL;
    }
    memmove(buf, buf + ktlen, (size_t)h.payload_len);
    *len = (size_t)h.payload_len;
    return buf;
}

void kp_gpu_cache_discard(const char *path, char *why, size_t why_len) {
    int r = unlink(path);
    if (r != 0 && errno == EISDIR) r = rmdir(path); /* only an empty one */
    if (r == 0 || errno == ENOENT) kp_gpu_append(why, why_len, "; removed");
    else kp_gpu_append(why, why_len, "; could not remove it: %s", strerror(errno));
}

kp_gpu_cache_result kp_gpu_cache_load(const char *path, uint64_t key, const char *keytext, unsigned char **payload,
                                      size_t *len, char *why, size_t why_len) {
    *payload = NULL;
    *len = 0;
    why[0] = '\0';
    /* O_NONBLOCK: a FIFO planted here must not block the open (with the device lock
     * held); O_NOFOLLOW: the entry itself, not what a link points to */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT) return KP_GPU_CACHE_MISS;
        if (errno != ELOOP) {
            snprintf(why, why_len, "open: %s", strerror(errno));
            return KP_GPU_CACHE_MISS; /* unreadable: leave it to whoever owns it */
        }
        snprintf(why, why_len, "a symbolic link, not a cache entry");
    } else {
        struct stat st;
        if (fstat(fd, &st) != 0) snprintf(why, why_len, "fstat: %s", strerror(errno));
        else if (!S_ISREG(st.st_mode)) snprintf(why, why_len, "not a regular file (mode 0%o)", (unsigned)st.st_mode);
        else if (fcntl(fd, F_SETFL, 0) != 0) snprintf(why, why_len, "fcntl: %s", strerror(errno)); /* blocking reads */
        else *payload = cache_read_checked(fd, key, keytext, len, why, why_len);
        close(fd);
        if (*payload) return KP_GPU_CACHE_HIT;
    }
    kp_gpu_cache_discard(path, why, why_len); /* rebuilt and rewritten by the caller */
    return KP_GPU_CACHE_CORRUPT;
}

kp_status kp_gpu_cache_store(const kp_host_services *host, const char *prefix, const char *dir, const char *path, uint64_t key, const char *keytext,
                             const void *payload, size_t len) {
    char tmp[4096];
    size_t ktlen = strlen(keytext);
    kp_gpu_cache_header h = {.version = KP_GPU_CACHE_VERSION, .keytext_len = (uint32_t)ktlen, .key = key,
                             .payload_len = len};
    memcpy(h.magic, KP_GPU_CACHE_MAGIC, 8);
    h.checksum = kp_fnv1a64(kp_fnv1a64(KP_FNV1A64_INIT, keytext, ktlen), payload, len);

    if (snprintf(tmp, sizeof tmp, "%s/.%s-%016llx.XXXXXX", dir, prefix, (unsigned long long)key) >= (int)sizeof tmp)
        return host->set_error(KP_ERR_IO, "%s cache: path too long under %s", prefix, dir);
    int fd = mkstemp(tmp); /* same directory as the target: rename stays atomic */
    if (fd < 0) return host->set_error(KP_ERR_IO, "%s cache: mkstemp in %s: %s", prefix, dir, strerror(errno));
    int ok = write_all(fd, &h, sizeof h) == 0 && write_all(fd, keytext, ktlen) == 0 &&
             write_all(fd, payload, len) == 0 && fsync(fd) == 0;
    int saved = errno;
    ok = close(fd) == 0 && ok;
    if (ok && rename(tmp, path) != 0) {
        saved = errno;
        ok = 0;
    }
    if (!ok) {
        unlink(tmp);
        return host->set_error(KP_ERR_IO, "%s cache: writing %s: %s", prefix, path, strerror(saved));
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC); /* make the rename itself durable */
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return KP_OK;
}

/* ---- the run-time compilers' side (hiprtc, NVRTC) ------------------------- */

int kp_gpu_cache_path(const char *dir, const char *prefix, const char *keytext, char *path, size_t path_len) {
    if (!dir || !keytext || !keytext[0]) return 0;
    uint64_t key = kp_fnv1a64(KP_FNV1A64_INIT, keytext, strlen(keytext));
    return snprintf(path, path_len, "%s/%s-%016llx.bin", dir, prefix, (unsigned long long)key) < (int)path_len;
}

kp_status kp_gpu_cache_through(const kp_host_services *host, const char *prefix, const char *keytext,
                               kp_gpu_compile_fn compile, void *ctx, unsigned char **binary, size_t *size,
                               int *from_cache) {
    *binary = NULL;
    *size = 0;
    if (from_cache) *from_cache = 0;
    const char *dir = kp_gpu_cache_dir(host);
    char path[4096];
    int cached = kp_gpu_cache_path(dir, prefix, keytext, path, sizeof path);
    uint64_t key = cached ? kp_fnv1a64(KP_FNV1A64_INIT, keytext, strlen(keytext)) : 0;
    if (cached) {
        char why[256] = "";
        unsigned char *payload = NULL;
        size_t len = 0;
        kp_gpu_cache_result r = kp_gpu_cache_load(path, key, keytext, &payload, &len, why, sizeof why);
        if (r == KP_GPU_CACHE_HIT && len > 0) {
            unsigned char *bin = realloc(payload, len + 1); /* NUL-terminated, as PTX text must be */
            if (!bin) {
                free(payload);
                return host->set_error(KP_ERR_OUT_OF_MEMORY, "%s: out of memory for a %zu-byte kernel binary", prefix,
                                       len);
            }
            bin[len] = '\0';
            *binary = bin, *size = len;
            if (from_cache) *from_cache = 1;
            return KP_OK;
        }
        free(payload);
        if (r == KP_GPU_CACHE_CORRUPT) host->log("%s: cache entry %s was bad (%s); rebuilding", prefix, path, why);
    }
    kp_status st = compile(ctx, binary, size);
    if (st != KP_OK || !cached) return st;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        host->log("%s: cannot create the cache directory %s: %s", prefix, dir, strerror(errno));
    if (kp_gpu_cache_store(host, prefix, dir, path, key, keytext, *binary, *size) != KP_OK)
        host->log("%s: the run-time compiled %s was not cached", prefix, path); /* the kernel still runs */
    return KP_OK;
}

int kp_gpu_split_options(char *buf, const char **argv, int max) {
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        if (n == max) return -1;
        argv[n++] = tok;
    }
    return n;
}

void kp_gpu_append(char *buf, size_t len, const char *fmt, ...) {
    size_t used = strnlen(buf, len);
    if (used + 1 >= len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, len - used, fmt, ap);
    va_end(ap);
}
