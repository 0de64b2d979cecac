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
 * '#' starts a comment; a malformed line is skipped with a log line (KPORT_LOG=1).
 */
#include "internal.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct kp_tuning_entry {
    char vendor[64], arch[64], device[KP_NAME_MAX], kernel[64], param[64];
    int64_t value;
} kp_tuning_entry;

/* Built-in defaults; the op issues add rows as kernels land. */
static const kp_tuning_entry builtin[] = {
    {"*", "*", "*", "cpu", "parallel_grain", 1},
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static kp_tuning_entry *user;
static int user_count;
static bool user_loaded;

static bool parse_line(char *line, kp_tuning_entry *e) {
    char *fields[6];
    int n = 0;
    for (char *tok = strtok(line, ";\r\n"); tok && n < 6; tok = strtok(NULL, ";\r\n")) fields[n++] = tok;
    if (n != 6 || strtok(NULL, ";\r\n")) return false;
    char *end;
    long long v = strtoll(fields[5], &end, 10);
    if (end == fields[5] || (*end && *end != ' ')) return false;
    snprintf(e->vendor, sizeof e->vendor, "%s", fields[0]);
    snprintf(e->arch, sizeof e->arch, "%s", fields[1]);
    snprintf(e->device, sizeof e->device, "%s", fields[2]);
    snprintf(e->kernel, sizeof e->kernel, "%s", fields[3]);
    snprintf(e->param, sizeof e->param, "%s", fields[4]);
    e->value = v;
    return true;
}

static void load_user_file(void) {
    char path[PATH_MAX];
    const char *env = getenv("KPORT_TUNING_FILE"), *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    if (env && *env) snprintf(path, sizeof path, "%s", env);
    else if (xdg && *xdg) snprintf(path, sizeof path, "%s/kport/tuning.txt", xdg);
    else if (home && *home) snprintf(path, sizeof path, "%s/.config/kport/tuning.txt", home);
    else return;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = line + strspn(line, " \t");
        if (*s == '#' || *s == '\n' || *s == '\0') continue;
        kp_tuning_entry e;
        if (!parse_line(s, &e)) {
            kp_log("%s:%d: malformed tuning line skipped", path, lineno);
            continue;
        }
        kp_tuning_entry *n = realloc(user, (size_t)(user_count + 1) * sizeof *n);
        if (!n) break;
        user = n;
        user[user_count++] = e;
    }
    fclose(f);
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

int64_t kp_tuning_get(const kp_device_info *dev, const char *kernel, const char *param, int64_t def) {
    if (!dev || !kernel || !param) return def;
    pthread_mutex_lock(&lock);
    if (!user_loaded) {
        load_user_file();
        user_loaded = true;
    }
    int best = -1;
    int64_t value = def;
    for (int i = 0; i < user_count; i++) {
        int s = specificity(&user[i], dev, kernel, param);
        if (s > best) best = s, value = user[i].value;
    }
    if (best < 0)
        for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++) {
            int s = specificity(&builtin[i], dev, kernel, param);
            if (s > best) best = s, value = builtin[i].value;
        }
    pthread_mutex_unlock(&lock);
    return value;
}

void kp_tuning_reset(void) {
    pthread_mutex_lock(&lock);
    free(user);
    user = NULL;
    user_count = 0;
    user_loaded = false;
    pthread_mutex_unlock(&lock);
}
