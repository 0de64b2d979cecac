/*
 * core/plugin.c — finds and loads backend plugins (libkport-<name>.so).
 *
 * Search order, first match of a backend name wins:
 *   1. kp_init_options.plugin_path, 2. $KPORT_PLUGIN_PATH, 3. <dir of libkport.so>/kport,
 *   4. the install's plugin dir (KPORT_PLUGIN_DIR).
 * Only absolute directories are searched: never the current directory, and an empty
 * or relative entry is ignored with a log line. A broken plugin is reported in its
 * backend entry (available = 0, reason) and never stops the others.
 */
#include "internal.h"

#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef KPORT_PLUGIN_DIR
#define KPORT_PLUGIN_DIR "/usr/local/lib/kport"
#endif

#define PLUGIN_PREFIX "libkport-"
#define PLUGIN_SUFFIX ".so"

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
#undef SLOT
    for (int i = 0; i < KP_OP_COUNT; i++)
        if (!f->ops[i]) return kp_backend_op_name((kp_op)i);
    return NULL;
}

kp_status kp_plugin_load(const char *path, const kp_init_options *opt, kp_backend_entry *e) {
    memset(e, 0, sizeof *e);
    name_from_file(path, e->info.name, sizeof e->info.name);
    snprintf(e->info.path, sizeof e->info.path, "%s", path);
    kp_status st = KP_OK;
    const kp_backend_iface *f = NULL;

    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
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
    if (st == KP_OK && (f->abi_version != KP_BACKEND_ABI_VERSION || f->struct_size < sizeof *f)) {
        st = KP_ERR_ABI_MISMATCH;
        snprintf(e->info.reason, sizeof e->info.reason,
                 "plugin refused: built for backend ABI version %u (struct %u bytes), this libkport "
                 "needs version %u (struct %zu bytes)",
                 f->abi_version, f->struct_size, KP_BACKEND_ABI_VERSION, sizeof *f);
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

static int plugin_file_filter(const struct dirent *d) {
    size_t n = strlen(d->d_name), pl = strlen(PLUGIN_PREFIX), sl = strlen(PLUGIN_SUFFIX);
    return n > pl + sl && strncmp(d->d_name, PLUGIN_PREFIX, pl) == 0 &&
           strcmp(d->d_name + n - sl, PLUGIN_SUFFIX) == 0;
}

static void scan_dir(const char *dir, const kp_init_options *opt, kp_backend_entry **entries,
                     int *count, int *cap) {

    struct dirent **names = NULL;
    int n = scandir(dir, &names, plugin_file_filter, alphasort);
    if (n < 0) return;
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
        kp_plugin_load(real, opt, &(*entries)[*count]);
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
    scan_list(getenv("KPORT_PLUGIN_PATH"), opt, entries, count, cap);
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
