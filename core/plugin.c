/*
 * core/plugin.c — finds and loads backend plugins (libkport-<name>.so).
 *
 * Search order, first match of a backend name wins:
 *   1. kp_init_options.plugin_path, 2. $KPORT_PLUGIN_PATH, 3. <dir of libkport.so>/kport,
 *   4. the install's plugin dir (KPORT_PLUGIN_DIR).
 * Only absolute directories are searched: never the current directory, and an empty
 * or relative entry is ignored with a log line. A broken plugin is reported in its
 * backend entry (available = 0, reason) and never stops the others; so is one that is
 * not trusted (plugin_trusted below). KPORT_PLUGIN_PATH is read with secure_getenv:
 * a setuid/setgid program ignores it.
 */
#include "internal.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef KPORT_PLUGIN_DIR
#define KPORT_PLUGIN_DIR "/usr/local/lib/kport"
#endif

#define PLUGIN_PREFIX "libkport-"
#define PLUGIN_SUFFIX ".so"
#define EP_TRANSPORT_PREFIX "libkport-ep-"

/* ---- trust: what may be loaded ------------------------------------------ */

/* A plugin runs its constructors the moment it is loaded, so only code that nobody but
 * root and this user can change is loaded, as loaders that run others' code do: the
 * file (a regular one) and its directory must be owned by root or the effective user
 * and not writable by others; each directory above must be owned by root or that user
 * and not writable by others unless sticky (like /tmp: others cannot rename what is
 * ours in it). real: a canonical absolute path (realpath). strict: how many levels,
 * from real upwards, allow no write by others at all (2 for a file and its directory,
 * 1 for a directory). Group write is allowed (user-private groups). */
static bool plugin_trusted(const char *real, int strict, char *why, size_t n) {
    char p[PATH_MAX];
    if (real[0] != '/' || snprintf(p, sizeof p, "%s", real) >= (int)sizeof p) {
        snprintf(why, n, "'%.400s' is not a canonical absolute path", real);
        return false;
    }
    const uid_t me = geteuid();
    for (int level = 0;; level++) {
        struct stat st;
        const char *what = level == 0 && strict == 2 ? "file" : "directory";
        if (lstat(p, &st) != 0) {
            snprintf(why, n, "cannot stat %.400s: %s", p, strerror(errno));
            return false;
        }
        if (level == 0 && strict == 2 && !S_ISREG(st.st_mode)) {
            snprintf(why, n, "%.400s is not a regular file", p);
            return false;
        }
        if (st.st_uid != 0 && st.st_uid != me) {
            snprintf(why, n, "%s %.400s is owned by uid %u, neither root nor this user (uid %u)", what, p,
                     (unsigned)st.st_uid, (unsigned)me);
            return false;
        }
        if ((st.st_mode & S_IWOTH) && (level < strict || !(st.st_mode & S_ISVTX))) {
            snprintf(why, n, "%s %.400s is writable by others (mode %04o)", what, p, (unsigned)(st.st_mode & 07777));
            return false;
        }
        if (strcmp(p, "/") == 0) return true;
        char *slash = strrchr(p, '/');
        slash[slash == p ? 1 : 0] = '\0'; /* up one level; "/x" -> "/" */
    }
}

/* "libkport-cuda.so" -> "cuda" */
static void name_from_file(const char *path, char *out, size_t n) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strncmp(base, PLUGIN_PREFIX, strlen(PLUGIN_PREFIX)) == 0) base += strlen(PLUGIN_PREFIX);
    size_t len = strcspn(base, ".");
    if (len >= n) len = n - 1;
    memcpy(out, base, len);
    out[len] = '\0';
}

/* Every function pointer of the iface must be set: the core never checks per call. */
static const char *first_null_slot(const kp_backend_iface *f) {
#define SLOT(x) if (!f->x) return #x
    SLOT(name); SLOT(description); SLOT(init); SLOT(shutdown); SLOT(device_count);
    SLOT(device_info); SLOT(device_open); SLOT(device_close); SLOT(device_native);
    SLOT(stream_create); SLOT(stream_wrap); SLOT(stream_native);
    SLOT(stream_sync); SLOT(stream_destroy); SLOT(buffer_alloc); SLOT(buffer_wrap);
    SLOT(buffer_free); SLOT(buffer_write); SLOT(buffer_read); SLOT(buffer_copy);
    SLOT(event_create); SLOT(event_record); SLOT(event_sync); SLOT(event_elapsed); SLOT(event_destroy);
    SLOT(stream_reserve); SLOT(stream_wait_event);
#undef SLOT
    for (int i = 0; i < KP_OP_COUNT; i++)
        if (!f->ops[i]) return kp_backend_op_name((kp_op)i);
    return NULL;
}

/* An entry for a plugin file that is not loaded, with the reason. */
static void refuse(kp_backend_entry *e, const char *path, const char *why) {
    memset(e, 0, sizeof *e);
    name_from_file(path, e->info.name, sizeof e->info.name);
    snprintf(e->info.path, sizeof e->info.path, "%s", path);
    snprintf(e->info.reason, sizeof e->info.reason, "plugin refused: %s", why);
    kp_log("%s: %s", path, e->info.reason);
}

kp_status kp_plugin_load(const char *path, const kp_init_options *opt, kp_backend_entry *e) {
    char real[PATH_MAX], why[KP_REASON_MAX - 32];
    if (!realpath(path, real)) {
        snprintf(why, sizeof why, "%.400s: %s", path, strerror(errno));
        refuse(e, path, why);
        return KP_ERR_UNAVAILABLE;
    }
    if (!plugin_trusted(real, 2, why, sizeof why)) {
        refuse(e, path, why);
        return KP_ERR_UNAVAILABLE;
    }
    memset(e, 0, sizeof *e);
    name_from_file(path, e->info.name, sizeof e->info.name);
    snprintf(e->info.path, sizeof e->info.path, "%s", path);
    kp_status st = KP_OK;
    const kp_backend_iface *f = NULL;

    void *h = dlopen(real, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        st = KP_ERR_UNAVAILABLE;
        snprintf(e->info.reason, sizeof e->info.reason, "plugin refused: dlopen failed: %s",
                 why ? why : "unknown error");
    }
    if (st == KP_OK) {
        kp_backend_entry_fn entry;
        *(void **)&entry = dlsym(h, KP_BACKEND_ENTRY_SYMBOL);
        if (!entry) {
            st = KP_ERR_UNAVAILABLE;
            snprintf(e->info.reason, sizeof e->info.reason,
                     "plugin refused: not a kport plugin (no %s symbol)", KP_BACKEND_ENTRY_SYMBOL);
        } else {
            f = entry(KP_BACKEND_ABI_VERSION);
            if (!f) {
                st = KP_ERR_ABI_MISMATCH;
                snprintf(e->info.reason, sizeof e->info.reason,
                         "plugin refused: %s returned no interface for ABI version %u",
                         KP_BACKEND_ENTRY_SYMBOL, KP_BACKEND_ABI_VERSION);
            }
        }
    }
    if (st == KP_OK && (f->abi_version != KP_BACKEND_ABI_VERSION || f->struct_size < KP_BACKEND_IFACE_MIN_SIZE)) {
        st = KP_ERR_ABI_MISMATCH;
        snprintf(e->info.reason, sizeof e->info.reason,
                 "plugin refused: built for backend ABI version %u (struct %u bytes), this libkport "
                 "needs version %u (struct of at least %zu bytes)",
                 f->abi_version, f->struct_size, KP_BACKEND_ABI_VERSION, (size_t)KP_BACKEND_IFACE_MIN_SIZE);
    }
    if (st == KP_OK) {
        const char *missing = first_null_slot(f);
        if (missing) {
            st = KP_ERR_ABI_MISMATCH;
            snprintf(e->info.reason, sizeof e->info.reason,
                     "plugin refused: its interface leaves '%s' NULL", missing);
        }
    }
    if (st != KP_OK) {
        if (h) dlclose(h);
        kp_log("%s: %s", path, e->info.reason);
        return st;
    }
    /* An accepted plugin stays loaded for the life of the process (RTLD_NODELETE; its
     * handle is still closed at kp_shutdown): vendor runtimes are not made to be
     * unloaded and loaded again. The OpenCL ICD loader, a dependency of the opencl
     * plugin, leaked its platform list (~130 bytes) on every kp_init after a
     * kp_shutdown, and the GPU plugins keep their run-time compilers per process. */
    void *pin = dlopen(real, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    if (pin) dlclose(pin);
    e->iface = f;
    e->dl_handle = h;
    snprintf(e->info.name, sizeof e->info.name, "%s", f->name);
    snprintf(e->info.description, sizeof e->info.description, "%s", f->description);
    st = f->init(kp_host(), opt, &e->state, e->info.reason, sizeof e->info.reason);
    if (st != KP_OK) {
        e->state = NULL;
        if (!e->info.reason[0])
            snprintf(e->info.reason, sizeof e->info.reason, "%s", kp_last_error());
        kp_log("%s: unavailable: %s", path, e->info.reason);
    }
    return st;
}

static bool already_loaded(kp_backend_entry *entries, int count, const char *real, const char *name) {
    for (int i = 0; i < count; i++) {
        char r[PATH_MAX];
        if (entries[i].info.path[0] && realpath(entries[i].info.path, r) && strcmp(r, real) == 0)
            return true;
        if (strcmp(entries[i].info.name, name) == 0) return true;
    }
    return false;
}

/* Backend plugins only: libkport-ep-*.so are expert-parallel transports (core/ep.c). */
static int plugin_file_filter(const struct dirent *d) {
    size_t n = strlen(d->d_name), pl = strlen(PLUGIN_PREFIX), sl = strlen(PLUGIN_SUFFIX);
    return n > pl + sl && strncmp(d->d_name, PLUGIN_PREFIX, pl) == 0 &&
           strcmp(d->d_name + n - sl, PLUGIN_SUFFIX) == 0 &&
           strncmp(d->d_name, EP_TRANSPORT_PREFIX, strlen(EP_TRANSPORT_PREFIX)) != 0;
}

static void scan_dir(const char *dir, const kp_init_options *opt, kp_backend_entry **entries,
                     int *count, int *cap) {
    struct dirent **names = NULL;
    int n = scandir(dir, &names, plugin_file_filter, alphasort);
    if (n < 0) return;
    char real_dir[PATH_MAX], dir_why[KP_REASON_MAX - 32];
    bool resolved = realpath(dir, real_dir) != NULL;
    if (!resolved) snprintf(dir_why, sizeof dir_why, "%.400s: %s", dir, strerror(errno));
    bool trusted = resolved && plugin_trusted(real_dir, 1, dir_why, sizeof dir_why);
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX], real[PATH_MAX], name[64];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        free(names[i]);
        name_from_file(path, name, sizeof name);
        if (!realpath(path, real) || already_loaded(*entries, *count, real, name)) continue;
        if (*count == *cap) {
            int nc = *cap ? *cap * 2 : 8;
            kp_backend_entry *ne = realloc(*entries, (size_t)nc * sizeof *ne);
            if (!ne) continue;
            *entries = ne;
            *cap = nc;
        }
        if (trusted) kp_plugin_load(real, opt, &(*entries)[*count]);
        else refuse(&(*entries)[*count], path, dir_why); /* listed, so kport-info shows why */
        (*count)++;
    }
    free(names);
}

/* Each absolute entry of a ':'-separated list. */
static void scan_list(const char *list, const kp_init_options *opt, kp_backend_entry **entries,
                      int *count, int *cap) {
    for (const char *p = list; p && *p;) {
        size_t len = strcspn(p, ":");
        char dir[PATH_MAX];
        if (len > 0 && len < sizeof dir) {
            memcpy(dir, p, len);
            dir[len] = '\0';
            if (dir[0] == '/') scan_dir(dir, opt, entries, count, cap);
            else kp_log("plugin path entry '%s' ignored: not an absolute path", dir);
        }
        p += len;
        if (*p == ':') p++;
    }
}

void kp_plugins_discover(const kp_init_options *opt, kp_backend_entry **entries, int *count, int *cap) {
    if (opt && opt->plugin_path) scan_list(opt->plugin_path, opt, entries, count, cap);
    scan_list(secure_getenv("KPORT_PLUGIN_PATH"), opt, entries, count, cap);
    Dl_info info;
    if (dladdr((void *)kp_plugins_discover, &info) && info.dli_fname && info.dli_fname[0] == '/') {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", info.dli_fname);
        char *slash = strrchr(dir, '/');
        if (slash && (size_t)(slash - dir) + sizeof "/kport" < sizeof dir) {
            strcpy(slash, "/kport");
            scan_dir(dir, opt, entries, count, cap);
        }
    }
    scan_dir(KPORT_PLUGIN_DIR, opt, entries, count, cap);
}

/* ---- other plugin files (expert-parallel transports) --------------------- */

/* Looks in one directory; true with real set when file is there and trusted. */
static bool find_in_dir(const char *dir, const char *file, char *real, char *why, size_t wn) {
    char path[PATH_MAX];
    if (dir[0] != '/' || snprintf(path, sizeof path, "%s/%s", dir, file) >= (int)sizeof path) return false;
    if (access(path, F_OK) != 0 || !realpath(path, real)) return false;
    char real_dir[PATH_MAX];
    if (!realpath(dir, real_dir) || !plugin_trusted(real_dir, 1, why, wn) || !plugin_trusted(real, 2, why, wn))
        return false;
    return true;
}

bool kp_plugin_find(const char *file, char *real, char *why, size_t wn) {
    snprintf(why, wn, "%s not found on the plugin path ($KPORT_PLUGIN_PATH, <libkport dir>/kport, %s)", file,
             KPORT_PLUGIN_DIR);
    const char *list = secure_getenv("KPORT_PLUGIN_PATH");
    for (const char *p = list; p && *p;) {
        size_t len = strcspn(p, ":");
        char dir[PATH_MAX];
        if (len > 0 && len < sizeof dir) {
            memcpy(dir, p, len);
            dir[len] = '\0';
            if (find_in_dir(dir, file, real, why, wn)) return true;
        }
        p += len;
        if (*p == ':') p++;
    }
    Dl_info info;
    if (dladdr((void *)kp_plugin_find, &info) && info.dli_fname && info.dli_fname[0] == '/') {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", info.dli_fname);
        char *slash = strrchr(dir, '/');
        if (slash && (size_t)(slash - dir) + sizeof "/kport" < sizeof dir) {
            strcpy(slash, "/kport");
            if (find_in_dir(dir, file, real, why, wn)) return true;
        }
    }
    return find_in_dir(KPORT_PLUGIN_DIR, file, real, why, wn);
}
