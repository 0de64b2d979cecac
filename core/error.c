/*
 * core/error.c — status names and the thread-local last-error message.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KP_ERROR_MAX 4096

static _Thread_local char tls_error[KP_ERROR_MAX];

const char *kp_status_str(kp_status s) {
    switch (s) {
    case KP_OK: return "KP_OK";
    case KP_ERR_INVALID_ARGUMENT: return "KP_ERR_INVALID_ARGUMENT";
    case KP_ERR_INVALID_DTYPE: return "KP_ERR_INVALID_DTYPE";
    case KP_ERR_INVALID_SHAPE: return "KP_ERR_INVALID_SHAPE";
    case KP_ERR_INVALID_LAYOUT: return "KP_ERR_INVALID_LAYOUT";
    case KP_ERR_OUT_OF_BOUNDS: return "KP_ERR_OUT_OF_BOUNDS";
    case KP_ERR_DEVICE_MISMATCH: return "KP_ERR_DEVICE_MISMATCH";
    case KP_ERR_ALIASING: return "KP_ERR_ALIASING";
    case KP_ERR_UNSUPPORTED: return "KP_ERR_UNSUPPORTED";
    case KP_ERR_OUT_OF_MEMORY: return "KP_ERR_OUT_OF_MEMORY";
    case KP_ERR_UNAVAILABLE: return "KP_ERR_UNAVAILABLE";
    case KP_ERR_NOT_INITIALIZED: return "KP_ERR_NOT_INITIALIZED";
    case KP_ERR_BACKEND: return "KP_ERR_BACKEND";
    case KP_ERR_BUILD_FAILED: return "KP_ERR_BUILD_FAILED";
    case KP_ERR_ABI_MISMATCH: return "KP_ERR_ABI_MISMATCH";
    case KP_ERR_IO: return "KP_ERR_IO";
    case KP_ERR_INTERNAL: return "KP_ERR_INTERNAL";
    }
    return "KP_ERR_UNKNOWN";
}

const char *kp_last_error(void) { return tls_error; }

void kp_clear_error(void) { tls_error[0] = '\0'; }

kp_status kp_set_error(kp_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_error, sizeof tls_error, fmt, ap);
    va_end(ap);
    kp_log("%s: %s", kp_status_str(st), tls_error);
    return st;
}

/* "context: previous message", so a message says where it failed on the way up. */
kp_status kp_add_context(kp_status st, const char *fmt, ...) {
    char ctx[512];
    char old[KP_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    memcpy(old, tls_error, sizeof old);
    snprintf(tls_error, sizeof tls_error, "%.511s: %.3500s", ctx, old); /* truncation is fine */
    return st;
}

void kp_log(const char *fmt, ...) {
    static int enabled = -1;
    if (enabled < 0) {
        const char *e = getenv("KPORT_LOG");
        enabled = e && e[0] && strcmp(e, "0") != 0;
    }
    if (!enabled) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("kport: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}
