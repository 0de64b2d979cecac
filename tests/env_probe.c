/*
 * tests/env_probe.c — prints what the environment made kport do: the backends kp_init
 * listed, the kernel cache dir, and the tuning value of "probe"/"value" (-1: none).
 * test_robustness.c runs it setuid, where the variables that name files
 * (KPORT_PLUGIN_PATH, KPORT_CACHE_DIR, KPORT_TUNING_FILE, HOME, XDG_*) must be ignored.
 */
#include "internal.h"

#include <stdio.h>

#ifdef __SANITIZE_ADDRESS__
/* Setuid, the probe cannot read ASAN_OPTIONS (its /proc/self/environ is not its own
 * user's), and LeakSanitizer cannot stop the threads of a non-dumpable process: the
 * ASan build's probe does no leak check (ci/test runs ASan with detect_leaks=0 anyway). */
const char *__asan_default_options(void);
__attribute__((visibility("default"))) const char *__asan_default_options(void) { return "detect_leaks=0"; }
#endif

int main(void) {
    kp_init_options opt = {NULL, 1, 0};
    if (kp_init(&opt) != KP_OK) {
        printf("kp_init failed: %s\n", kp_last_error());
        return 1;
    }
    for (int i = 0; i < kp_backend_count(); i++) {
        kp_backend_info b;
        if (kp_backend_info_get(i, &b) == KP_OK) printf("backend %s\n", b.name);
    }
    const char *dir = kp_cache_dir();
    printf("cache_dir %s\n", dir ? dir : "(none)");
    kp_device_info any = {.vendor = "any"};
    printf("tuning %lld\n", (long long)kp_tuning_get(&any, "probe", "value", -1));
    return kp_shutdown() == KP_OK ? 0 : 1;
}
