/*
 * core/cache_dir.c — where compiled kernel binaries are kept:
 * $KPORT_CACHE_DIR, else $XDG_CACHE_HOME/kport, else $HOME/.cache/kport; created 0700.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* mkdir -p with mode 0700 for the directories it creates. */
static bool make_dirs(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        bool ok = mkdir(path, 0700) == 0 || errno == EEXIST;
        *p = '/';
        if (!ok) return false;
    }
    return mkdir(path, 0700) == 0 || errno == EEXIST;
}

const char *kp_cache_dir(void) {
    /* Per thread, recomputed each call: the environment may change between calls. */
    static _Thread_local char dir[PATH_MAX];
    /* secure_getenv: a setuid/setgid program writes no directory the caller's environment names */
    const char *env = secure_getenv("KPORT_CACHE_DIR");
    const char *xdg = secure_getenv("XDG_CACHE_HOME");
    const char *home = secure_getenv("HOME");
    if (env && env[0] == '/') snprintf(dir, sizeof dir, "%s", env);
    else if (xdg && xdg[0] == '/') snprintf(dir, sizeof dir, "%s/kport", xdg);
    else if (home && home[0] == '/') snprintf(dir, sizeof dir, "%s/.cache/kport", home);
    else return NULL;
    if (!make_dirs(dir)) {
        kp_log("cache dir %s: %s (kernel binaries will not be cached)", dir, strerror(errno));
        return NULL;
    }
    return dir;
}
