/*
 * tools/kport-info — what kport found on this machine: every backend, whether it is
 * available and why not, and every device with its capabilities.
 *
 *   kport-info            human-readable tables
 *   kport-info --json     the same as JSON
 *   kport-info --smoke    also opens the best device and round-trips a buffer through it
 */
#include "kport.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef KPORT_INFO_JSON
#include <jansson.h>
#endif

static const char *kind_name(kp_device_kind k) {
    switch (k) {
    case KP_DEVICE_CPU: return "cpu";
    case KP_DEVICE_GPU_INTEGRATED: return "integrated-gpu";
    case KP_DEVICE_GPU_DISCRETE: return "discrete-gpu";
    case KP_DEVICE_ACCELERATOR: return "accelerator";
    }
    return "unknown";
}

static void caps_string(uint32_t caps, char *out, size_t n) {
    static const struct { uint32_t bit; const char *name; } names[] = {
        {KP_CAP_F16, "f16"}, {KP_CAP_BF16, "bf16"}, {KP_CAP_FP8, "fp8"},
        {KP_CAP_MATRIX_UNITS, "matrix-units"}, {KP_CAP_SUBGROUPS, "subgroups"},
        {KP_CAP_INLINE_PTX, "inline-ptx"}, {KP_CAP_UNIFIED_MEMORY, "unified-memory"},
        {KP_CAP_CHECKS_INDICES, "checks-indices"},
    };
    out[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(caps & names[i].bit)) continue;
        size_t used = strlen(out);
        snprintf(out + used, n - used, "%s%s", used ? "," : "", names[i].name);
    }
    if (!out[0]) snprintf(out, n, "-");
}

#ifdef KPORT_INFO_JSON
/* The same as the tables, through jansson. */
static int print_json(void) {
    json_t *top = json_object(), *backends = json_array(), *devices = json_array();
    json_object_set_new(top, "version", json_string(kp_version()));
    for (int i = 0; i < kp_backend_count(); i++) {
        kp_backend_info b;
        if (kp_backend_info_get(i, &b) != KP_OK) continue;
        json_array_append_new(backends, json_pack("{s:s?, s:b, s:i, s:s?, s:s?, s:s?}", "name", b.name, "available",
                                                  b.available, "devices", (int)b.device_count, "reason", b.reason,
                                                  "path", b.path, "description", b.description));
    }
    for (int i = 0; i < kp_device_count(); i++) {
        kp_device_info d;
        char caps[160];
        if (kp_device_info_get(i, &d) != KP_OK) continue;
        caps_string(d.caps, caps, sizeof caps);
        json_array_append_new(
            devices, json_pack("{s:i, s:s?, s:s?, s:s?, s:s?, s:s?, s:s, s:I, s:i, s:i, s:I, s:s}", "index", i,
                               "backend", d.backend, "name", d.name, "vendor", d.vendor, "arch", d.arch, "driver",
                               d.driver, "kind", kind_name(d.kind), "memory_bytes", (json_int_t)d.memory_bytes,
                               "compute_units", (int)d.compute_units, "subgroup_size", (int)d.subgroup_size,
                               "local_mem_bytes", (json_int_t)d.local_mem_bytes, "caps", caps));
    }
    json_object_set_new(top, "backends", backends);
    json_object_set_new(top, "devices", devices);
    int rc = json_dumpf(top, stdout, JSON_INDENT(2)) == 0 && putchar('\n') != EOF ? 0 : 1;
    json_decref(top);
    return rc;
}
#else
static int print_json(void) {
    fprintf(stderr, "kport-info: --json is unavailable: built without libjansson (Debian: libjansson-dev, or "
                    "bash ci/setup; then rebuild)\n");
    return 1;
}
#endif

static void print_tables(void) {
    printf("kport %s\n\nBackends\n", kp_version());
    printf("| backend | available | devices | reason / plugin |\n|---|---|---|---|\n");
    for (int i = 0; i < kp_backend_count(); i++) {
        kp_backend_info b;
        if (kp_backend_info_get(i, &b) != KP_OK) continue;
        printf("| %s | %s | %d | %s |\n", b.name, b.available ? "yes" : "no", (int)b.device_count,
               b.available ? (b.path[0] ? b.path : "built in") : b.reason);
    }
    printf("\nDevices\n");
    printf("| # | backend | name | vendor | kind | arch | memory | CUs | subgroup | kernel local mem | caps |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < kp_device_count(); i++) {
        kp_device_info d;
        char caps[160];
        if (kp_device_info_get(i, &d) != KP_OK) continue;
        caps_string(d.caps, caps, sizeof caps);
        printf("| %d | %s | %s | %s | %s | %s | %.1f GiB | %d | %d | %llu KiB | %s |\n", i, d.backend, d.name,
               d.vendor, kind_name(d.kind), d.arch, (double)d.memory_bytes / (1024.0 * 1024 * 1024),
               (int)d.compute_units, (int)d.subgroup_size, (unsigned long long)d.local_mem_bytes / 1024, caps);
    }
    printf("\nkernel local mem: the local (shared) memory one work-group of kport's kernels may use; on CUDA the\n"
           "opt-in maximum, which kernels with dynamic shared memory reach (static tiles stay within 48 KiB).\n");
    const char *gen = getenv("KPORT_GPU_KERNELS");
    printf("GPU kernel generation: KPORT_GPU_KERNELS=%s (auto: the tuning table's <kernel>;gen, else generation 2 on\n"
           "devices with matrix units, 1 elsewhere; KPORT_LOG=1 logs each op's choice)\n",
           gen && *gen ? gen : "unset");
}

/* Opens the best device and sends 1 MiB through write -> copy -> read. */
static int smoke(void) {
    kp_device *dev = NULL;
    kp_stream *s = NULL;
    kp_buffer *a = NULL, *b = NULL;
    size_t n = 1 << 18;
    float *src = malloc(n * sizeof *src), *dst = malloc(n * sizeof *dst);
    kp_status st = src && dst ? kp_device_open(-1, &dev) : KP_ERR_OUT_OF_MEMORY;
    kp_device_info info;
    if (st == KP_OK) st = kp_device_get_info(dev, &info);
    if (st == KP_OK) st = kp_stream_create(dev, &s);
    if (st == KP_OK) st = kp_buffer_alloc(dev, n * sizeof *src, &a);
    if (st == KP_OK) st = kp_buffer_alloc(dev, n * sizeof *src, &b);
    for (size_t i = 0; src && dst && i < n; i++) src[i] = (float)i * 0.5f - 7.0f, dst[i] = 0.0f;
    if (st == KP_OK) st = kp_buffer_write(s, a, 0, src, n * sizeof *src);
    if (st == KP_OK) st = kp_buffer_copy(s, b, 0, a, 0, n * sizeof *src);
    if (st == KP_OK) st = kp_buffer_read(s, b, 0, dst, n * sizeof *dst);
    if (st == KP_OK) st = kp_stream_sync(s);
    int rc = 0;
    if (st != KP_OK) {
        printf("\nsmoke: FAILED: %s: %s\n", kp_status_str(st), kp_last_error());
        rc = 1;
    } else if (memcmp(src, dst, n * sizeof *src) != 0) {
        printf("\nsmoke: FAILED: the buffer came back different on %s (%s)\n", info.name, info.backend);
        rc = 1;
    } else {
        printf("\nsmoke: ok: best device is %s (%s backend); 1 MiB write -> copy -> read round trip matched\n",
               info.name, info.backend);
    }
    if (a) kp_buffer_free(a);
    if (b) kp_buffer_free(b);
    if (s) kp_stream_destroy(s);
    if (dev) kp_device_close(dev);
    free(src);
    free(dst);
    return rc;
}

int main(int argc, char **argv) {
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'}, {"smoke", no_argument, NULL, 's'}, {"help", no_argument, NULL, 'h'}, {0}};
    int json = 0, do_smoke = 0, opt;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        if (opt == 'j') json = 1;
        else if (opt == 's') do_smoke = 1;
        else {
            fprintf(opt == 'h' ? stdout : stderr,
                    "usage: %s [--json] [--smoke]\n"
                    "Lists kport's backends (available or why not) and devices.\n"
                    "Environment: KPORT_PLUGIN_PATH, KPORT_BACKEND, KPORT_DEVICE, KPORT_LOG=1\n",
                    argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kport-info: unexpected argument '%s' (--help)\n", argv[optind]);
        return 2;
    }
    kp_status st = kp_init(NULL);
    if (st != KP_OK) {
        fprintf(stderr, "kport-info: kp_init failed: %s: %s\n", kp_status_str(st), kp_last_error());
        return 1;
    }
    int rc = 0;
    if (json) rc = print_json();
    else print_tables();
    if (do_smoke && smoke() != 0) rc = 1;
    kp_shutdown();
    return rc;
}
