/*
 * core/tuning.c — tile sizes and other tuning numbers, keyed by device.
 *
 * CLBlast's fallback chain: an entry for this exact device name beats one for its
 * arch, which beats one for its vendor, which beats the default ('*'). The user's
 * file ($KPORT_TUNING_FILE, else $XDG_CONFIG_HOME/kport/tuning.txt, else
 * ~/.config/kport/tuning.txt; written by `kbench --tune`) is read before the
 * built-in table. One entry per line, ';'-separated:
 *
 *     vendor;arch;device;kernel;param;value      e.g.  NVIDIA;sm_90;*;attention_prefill;block_m;128
 *
 * '#' starts a comment. The file is read whole, so a line may be of any length; it
 * must be a regular file of at most 1 MiB holding at most 4096 entries (else it is
 * ignored, with a log line: no /dev/zero, FIFO or runaway file can stall or bloat the
 * process). A malformed line is skipped with a log line naming its number and why
 * (KPORT_LOG=1).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KP_TUNING_MAX_BYTES (1 << 20)
#define KP_TUNING_MAX_ENTRIES 4096

typedef struct kp_tuning_entry {
    char vendor[64], arch[64], device[KP_NAME_MAX], kernel[64], param[64];
    int64_t value;
} kp_tuning_entry;

/* Built-in defaults; the op issues add rows as kernels land. */
static const kp_tuning_entry builtin[] = {
    {"*", "*", "*", "cpu", "parallel_grain", 1},
};

/* The user file, read once into an immutable table that lookups read without a lock
 * (every launch asks several times: no global lock on that path). kp_tuning_reset
 * retires the table rather than freeing it, since a lookup on another thread may still
 * be reading it; retired tables stay listed (reset is for tests and tools). */
typedef struct tuning_table {
    kp_tuning_entry *entries;
    int count;
    struct tuning_table *next_retired;
} tuning_table;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* guards loading and retiring */
static _Atomic(tuning_table *) current;
static tuning_table *retired;
static tuning_table no_table; /* when even the table struct cannot be allocated */
static atomic_int loads;
static _Atomic uint64_t generation = 1;

/* Copies a field into its slot; false when it does not fit. */
static bool take(char *dst, size_t n, const char *src) { return (size_t)snprintf(dst, n, "%s", src) < n; }

/* Parses one entry line (no newline); on failure why says what is wrong. */
static bool parse_line(char *line, kp_tuning_entry *e, char *why, size_t why_len) {
    static const char *const names[6] = {"vendor", "arch", "device", "kernel", "param", "value"};
    char *fields[6], *save = NULL;
    int n = 0;
    line[strcspn(line, "\r")] = '\0';
    for (char *tok = strtok_r(line, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
        if (n == 6) {
            snprintf(why, why_len, "more than 6 ';'-separated fields");
            return false;
        }
        fields[n++] = tok;
    }
    if (n != 6) {
        snprintf(why, why_len, "%d ';'-separated fields; an entry has 6 (vendor;arch;device;kernel;param;value)", n);
        return false;
    }
    char *end;
    errno = 0;
    long long v = strtoll(fields[5], &end, 10);
    end += strspn(end, " \t");
    if (end == fields[5] || *end || errno == ERANGE) {
        snprintf(why, why_len, "the value '%.40s' is not a 64-bit integer", fields[5]);
        return false;
    }
    char *slots[5] = {e->vendor, e->arch, e->device, e->kernel, e->param};
    size_t sizes[5] = {sizeof e->vendor, sizeof e->arch, sizeof e->device, sizeof e->kernel, sizeof e->param};
    for (int i = 0; i < 5; i++)
        if (!take(slots[i], sizes[i], fields[i])) {
            snprintf(why, why_len, "the %s field is %zu bytes long; at most %zu", names[i], strlen(fields[i]),
                     sizes[i] - 1);
            return false;
        }
    e->value = v;
    return true;
}

/* The whole file (*len bytes, then a NUL) if it is a regular file within the size limit. */
static char *read_tuning_file(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block the open */
    if (fd < 0) {
        if (errno != ENOENT) kp_log("tuning file %s: %s (ignored)", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    char *text = NULL;
    if (fstat(fd, &st) != 0) kp_log("tuning file %s: fstat: %s (ignored)", path, strerror(errno));
    else if (!S_ISREG(st.st_mode)) kp_log("tuning file %s: not a regular file (ignored)", path);
    else if (st.st_size > KP_TUNING_MAX_BYTES)
        kp_log("tuning file %s: %lld bytes, more than the %d a tuning file may have (ignored)", path,
               (long long)st.st_size, KP_TUNING_MAX_BYTES);
    else if (!(text = malloc((size_t)st.st_size + 1))) kp_log("tuning file %s: out of memory (ignored)", path);
    size_t got = 0;
    while (text && got < (size_t)st.st_size) { /* it may shrink while read: stop at its end */
        ssize_t r = read(fd, text + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            kp_log("tuning file %s: read: %s (ignored)", path, strerror(errno));
            free(text);
            text = NULL;
        }
        if (r <= 0) break;
        got += (size_t)r;
    }
    if (text) text[got] = '\0';
    *len = got;
    close(fd);
    return text;
}

static void load_user_file(tuning_table *t) {
    char path[PATH_MAX];
    /* secure_getenv: a setuid/setgid program reads no file the caller's environment names */
    const char *env = secure_getenv("KPORT_TUNING_FILE"), *xdg = secure_getenv("XDG_CONFIG_HOME"),
               *home = secure_getenv("HOME");
    if (env && *env) snprintf(path, sizeof path, "%s", env);
    else if (xdg && *xdg) snprintf(path, sizeof path, "%s/kport/tuning.txt", xdg);
    else if (home && *home) snprintf(path, sizeof path, "%s/.config/kport/tuning.txt", home);
    else return;
    size_t len = 0;
    char *text = read_tuning_file(path, &len);
    if (!text) return;
    kp_tuning_entry *entries = NULL;
    int count = 0, lineno = 0;
    bool ok = true;
    for (char *line = text, *end = text + len, *next; line < end && ok; line = next) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t n = (size_t)((nl ? nl : end) - line);
        next = nl ? nl + 1 : end;
        lineno++;
        bool has_nul = memchr(line, '\0', n) != NULL;
        line[n] = '\0'; /* the newline, or the NUL after the text */
        char *s = line + strspn(line, " \t");
        if (has_nul) {
            kp_log("%s:%d: malformed tuning line skipped: it holds a NUL byte", path, lineno);
            continue;
        }
        if (*s == '#' || *s == '\0' || *s == '\r') continue;
        kp_tuning_entry e;
        char why[160];
        if (!parse_line(s, &e, why, sizeof why)) {
            kp_log("%s:%d: malformed tuning line skipped: %s", path, lineno, why);
            continue;
        }
        if (count == KP_TUNING_MAX_ENTRIES) {
            kp_log("%s:%d: more than %d tuning entries (file ignored)", path, lineno, KP_TUNING_MAX_ENTRIES);
            ok = false;
        } else if (count % 64 == 0) {
            kp_tuning_entry *grown = realloc(entries, (size_t)(count + 64) * sizeof *grown);
            if (!grown) kp_log("%s: out of memory (file ignored)", path);
            ok = grown != NULL;
            entries = grown ? grown : entries;
        }
        if (ok) entries[count++] = e;
    }
    free(text);
    if (!ok) {
        free(entries);
        return;
    }
    t->entries = entries;
    t->count = count;
}

/* 3: this device, 2: this arch, 1: this vendor, 0: any; -1: no match. */
static int specificity(const kp_tuning_entry *e, const kp_device_info *d, const char *kernel,
                       const char *param) {
    if (strcmp(e->kernel, kernel) != 0 || strcmp(e->param, param) != 0) return -1;
    bool v = strcmp(e->vendor, "*") == 0, a = strcmp(e->arch, "*") == 0, n = strcmp(e->device, "*") == 0;
    if (!v && strcmp(e->vendor, d->vendor) != 0) return -1;
    if (!a && strcmp(e->arch, d->arch) != 0) return -1;
    if (!n && strcmp(e->device, d->name) != 0) return -1;
    return !n ? 3 : !a ? 2 : !v ? 1 : 0;
}

static const tuning_table *tuning_table_get(void) {
    tuning_table *t = atomic_load_explicit(&current, memory_order_acquire);
    if (t) return t; /* the hot path: no lock */
    pthread_mutex_lock(&lock);
    t = atomic_load_explicit(&current, memory_order_relaxed);
    if (!t) {
        t = calloc(1, sizeof *t);
        if (t) {
            load_user_file(t);
            atomic_fetch_add(&loads, 1);
            atomic_store_explicit(&current, t, memory_order_release);
        }
    }
    pthread_mutex_unlock(&lock);
    return t ? t : &no_table;
}

int64_t kp_tuning_get(const kp_device_info *dev, const char *kernel, const char *param, int64_t def) {
    if (!dev || !kernel || !param) return def;
    const tuning_table *t = tuning_table_get();
    int best = -1;
    int64_t value = def;
    for (int i = 0; i < t->count; i++) {
        int s = specificity(&t->entries[i], dev, kernel, param);
        if (s > best) best = s, value = t->entries[i].value;
    }
    if (best < 0)
        for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++) {
            int s = specificity(&builtin[i], dev, kernel, param);
            if (s > best) best = s, value = builtin[i].value;
        }
    return value;
}

void kp_tuning_reset(void) {
    pthread_mutex_lock(&lock);
    tuning_table *old = atomic_exchange_explicit(&current, NULL, memory_order_acq_rel);
    if (old) old->next_retired = retired, retired = old;
    atomic_fetch_add_explicit(&generation, 1, memory_order_release);
    pthread_mutex_unlock(&lock);
}

int kp_tuning_loads(void) { return atomic_load(&loads); }

uint64_t kp_tuning_generation(void) { return atomic_load_explicit(&generation, memory_order_acquire); }
