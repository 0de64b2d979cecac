/*
 * tests/test_plugins.c — the plugin loader. Fake plugins (tests/plugins/) stand in
 * for vendor backends, so these run on any machine: a working fake GPU backend, one
 * whose vendor library is missing, one built for another ABI, one with a NULL slot,
 * one without the entry symbol, and a file that is not a library at all.
 */
#include "kp_test.h"
#include "op_params.h"

#include "backend.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef KPORT_FAKE_PLUGIN_DIR
#error "KPORT_FAKE_PLUGIN_DIR must name the build directory of tests/plugins"
#endif

static void init_with_fakes(void) {
    unsetenv("KPORT_PLUGIN_PATH"); /* only the fakes: the test must not depend on what else was built */
    kp_init_options opt = {KPORT_FAKE_PLUGIN_DIR, 0, 0};
    CHECK_OK(kp_init(&opt));
}

static int find(const char *name, kp_backend_info *out) {
    for (int i = 0; i < kp_backend_count(); i++) {
        CHECK_OK(kp_backend_info_get(i, out));
        if (strcmp(out->name, name) == 0) return i;
    }
    return -1;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return strdup("");
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strdup(buf);
}

KP_TEST(plugin_missing_vendor_library_is_unavailable_with_reason) {
    init_with_fakes();
    kp_backend_info b;
    CHECK(find("novendor", &b) >= 0);
    CHECK_INT_EQ(b.available, 0);
    CHECK_INT_EQ(b.device_count, 0);
    CHECK_STR_CONTAINS(b.reason, "not found");
    CHECK_STR_CONTAINS(b.path, "libkport-novendor.so");
}

KP_TEST(plugin_wrong_abi_is_refused) {
    init_with_fakes();
    kp_backend_info b;
    CHECK(find("badabi", &b) >= 0);
    CHECK_INT_EQ(b.available, 0);
    CHECK_STR_CONTAINS(b.reason, "plugin refused");
    char want[64]; /* the fake declares its ABI 41 past ours */
    snprintf(want, sizeof want, "ABI version %u", KP_BACKEND_ABI_VERSION + 41);
    CHECK_STR_CONTAINS(b.reason, want);
    snprintf(want, sizeof want, "needs version %u", KP_BACKEND_ABI_VERSION);
    CHECK_STR_CONTAINS(b.reason, want);
}

KP_TEST(plugin_with_null_slot_is_refused) {
    init_with_fakes();
    kp_backend_info b;
    CHECK(find("nullslot", &b) >= 0);
    CHECK_INT_EQ(b.available, 0);
    CHECK_STR_CONTAINS(b.reason, "'buffer_wrap' NULL");
}

KP_TEST(plugin_without_entry_is_refused) {
    init_with_fakes();
    kp_backend_info b;
    CHECK(find("noentry", &b) >= 0);
    CHECK_INT_EQ(b.available, 0);
    CHECK_STR_CONTAINS(b.reason, "no kport_backend_entry symbol");
}

static char *make_temp_dir(void) {
    char tmpl[] = "/tmp/kport-plugins-XXXXXX";
    char *dir = mkdtemp(tmpl);
    CHECK(dir != NULL);
    return strdup(dir);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

KP_TEST(plugin_not_a_library_is_refused) {
    char *dir = make_temp_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/libkport-garbage.so", dir);
    write_text(path, "this is not an ELF file\n");
    snprintf(path, sizeof path, "%s/libkport-empty.so", dir);
    write_text(path, "");
    unsetenv("KPORT_PLUGIN_PATH");
    kp_init_options opt = {dir, 0, 0};
    CHECK_OK(kp_init(&opt));
    kp_backend_info b;
    CHECK(find("garbage", &b) >= 0);
    CHECK_INT_EQ(b.available, 0);
    CHECK_STR_CONTAINS(b.reason, "dlopen failed");
    CHECK(find("empty", &b) >= 0);
    CHECK_STR_CONTAINS(b.reason, "dlopen failed");
    CHECK(find("cpu", &b) >= 0); /* the rest still works */
    CHECK_INT_EQ(b.available, 1);
    free(dir);
}

KP_TEST(plugin_never_loaded_from_current_directory) {
    char *dir = make_temp_dir();
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp %s/libkport-fake.so %s/libkport-cwdfake.so", KPORT_FAKE_PLUGIN_DIR, dir);
    CHECK(system(cmd) == 0);
    CHECK(chdir(dir) == 0);
    setenv("KPORT_PLUGIN_PATH", ".:relative/dir::", 1);
    kp_init_options opt = {"", 0, 0};
    CHECK_OK(kp_init(&opt));
    kp_backend_info b;
    CHECK(find("fake", &b) < 0); /* the copy is named cwdfake but reports "fake" if loaded */
    CHECK(find("cwdfake", &b) < 0);
    free(dir);
}

KP_TEST(plugin_fake_backend_lists_devices) {
    init_with_fakes();
    kp_backend_info b;
    int fake = find("fake", &b);
    CHECK(fake >= 0);
    CHECK_INT_EQ(b.available, 1);
    CHECK_INT_EQ(b.device_count, 2);
    CHECK_STR_EQ(b.reason, "");
    int seen = 0;
    for (int i = 0; i < kp_device_count(); i++) {
        kp_device_info d;
        CHECK_OK(kp_device_info_get(i, &d));
        if (d.backend_index != fake) continue;
        CHECK_STR_EQ(d.backend, "fake");
        CHECK_INT_EQ(d.kind, KP_DEVICE_GPU_DISCRETE);
        CHECK_INT_EQ(d.backend_device, seen);
        seen++;
    }
    CHECK_INT_EQ(seen, 2);
}

KP_TEST(plugin_selection_policy) {
    init_with_fakes();
    kp_device *d;
    kp_device_info i;
    CHECK_OK(kp_device_open(-1, &d)); /* a discrete GPU beats the CPU */
    CHECK_OK(kp_device_get_info(d, &i));
    CHECK_STR_EQ(i.backend, "fake");
    CHECK_OK(kp_device_close(d));
    setenv("KPORT_BACKEND", "cpu", 1);
    CHECK_OK(kp_device_open(-1, &d));
    CHECK_OK(kp_device_get_info(d, &i));
    CHECK_STR_EQ(i.backend, "cpu");
    CHECK_OK(kp_device_close(d));
    setenv("KPORT_BACKEND", "novendor", 1);
    CHECK_ERR(kp_device_open(-1, &d), KP_ERR_UNAVAILABLE, "no fake driver");
    setenv("KPORT_BACKEND", "novendor,cpu", 1); /* a preference list falls through */
    CHECK_OK(kp_device_open(-1, &d));
    CHECK_OK(kp_device_get_info(d, &i));
    CHECK_STR_EQ(i.backend, "cpu");
    CHECK_OK(kp_device_close(d));
    setenv("KPORT_BACKEND", "fake", 1);
    setenv("KPORT_DEVICE", "1", 1);
    CHECK_OK(kp_device_open(-1, &d));
    CHECK_OK(kp_device_get_info(d, &i));
    CHECK_STR_EQ(i.name, "Fake GPU 1");
    CHECK_OK(kp_device_close(d));
    setenv("KPORT_DEVICE", "2", 1);
    CHECK_ERR(kp_device_open(-1, &d), KP_ERR_INVALID_ARGUMENT, "backend fake has 2 devices");
    unsetenv("KPORT_BACKEND");
    unsetenv("KPORT_DEVICE");
}

KP_TEST(plugin_dispatch_reaches_backend_only_when_valid) {
    char log[] = "/tmp/kport-fake-log-XXXXXX";
    int fd = mkstemp(log);
    CHECK(fd >= 0);
    close(fd);
    setenv("KPORT_FAKE_LOG", log, 1);
    init_with_fakes();
    kp_device *d;
    setenv("KPORT_BACKEND", "fake", 1);
    CHECK_OK(kp_device_open(-1, &d));
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    op_params o;
    op_params_make(&o, d, KP_OP_MOE_GATE);
    CHECK_OK(kp_op_supported(d, KP_OP_MOE_GATE, &o.p.gate));
    char name[KP_KERNEL_NAME_MAX] = ""; /* a plugin without the optional op_kernel slot */
    CHECK_ERR(kp_op_kernel(d, KP_OP_MOE_GATE, &o.p.gate, name, sizeof name), KP_ERR_UNSUPPORTED,
              "fake backend's plugin predates kp_op_kernel");
    CHECK_STR_EQ(name, "");
    CHECK_OK(kp_moe_gate(s, &o.p.gate));
    o.p.gate.routing.topk = 99;
    CHECK_ERR(kp_moe_gate(s, &o.p.gate), KP_ERR_INVALID_ARGUMENT, "topk is 99");
    op_params_free(&o);
    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
    char *text = read_file(log);
    unlink(log);
    /* the calls, in order; the invalid call never reached the backend */
    const char *expect[] = {"init", "device_count", "device_info", "device_open", "stream_create",
                            "buffer_alloc", "buffer_write", "op moe_gate dry_run", "op moe_gate",
                            "buffer_free", "stream_sync", "stream_destroy", "device_close", "shutdown"};
    const char *at = text;
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        const char *hit = strstr(at, expect[i]);
        CHECK_MSG(hit != NULL, "call '%s' missing or out of order in the fake backend's log:\n%s", expect[i], text);
        at = hit + strlen(expect[i]);
    }
    int launches = 0;
    for (const char *p = text; (p = strstr(p, "op moe_gate\n")) != NULL; p++) launches++;
    CHECK_INT_EQ(launches, 1);
    free(text);
}

KP_TEST(plugin_device_mismatch_is_refused) {
    init_with_fakes();
    setenv("KPORT_BACKEND", "fake", 1);
    kp_device *d0, *d1;
    setenv("KPORT_DEVICE", "0", 1);
    CHECK_OK(kp_device_open(-1, &d0));
    setenv("KPORT_DEVICE", "1", 1);
    CHECK_OK(kp_device_open(-1, &d1));
    kp_stream *s1;
    CHECK_OK(kp_stream_create(d1, &s1));
    kp_buffer *b0, *b1;
    CHECK_OK(kp_buffer_alloc(d0, 256, &b0));
    CHECK_OK(kp_buffer_alloc(d1, 256, &b1));
    unsigned char host[16] = {1, 2, 3};
    CHECK_ERR(kp_buffer_write(s1, b0, 0, host, 16), KP_ERR_DEVICE_MISMATCH, "the stream is on device");
    CHECK_ERR(kp_buffer_read(s1, b0, 0, host, 16), KP_ERR_DEVICE_MISMATCH, "the stream is on device");
    CHECK_ERR(kp_buffer_copy(NULL, b1, 0, b0, 0, 16), KP_ERR_DEVICE_MISMATCH, "copy through the host");
    op_params o;
    op_params_make(&o, d0, KP_OP_MOE_COMBINE);
    CHECK_ERR(kp_moe_combine(s1, &o.p.combine), KP_ERR_DEVICE_MISMATCH, "is on device");
    op_params_free(&o);
    kp_event *e0, *e1;
    CHECK_OK(kp_event_create(d0, &e0));
    CHECK_OK(kp_event_create(d1, &e1));
    CHECK_ERR(kp_event_record(e0, s1), KP_ERR_DEVICE_MISMATCH, "the event is of");
    CHECK_OK(kp_event_record(e1, s1));
    float ms = -1.0f;
    CHECK_ERR(kp_event_elapsed_ms(e0, e1, &ms), KP_ERR_DEVICE_MISMATCH, "start is of");
    CHECK_OK(kp_event_destroy(e0));
    CHECK_OK(kp_event_destroy(e1));
    CHECK_OK(kp_buffer_free(b0));
    CHECK_OK(kp_buffer_free(b1));
    CHECK_OK(kp_stream_destroy(s1));
    CHECK_OK(kp_device_close(d0));
    CHECK_OK(kp_device_close(d1));
    CHECK_OK(kp_shutdown());
}

KP_TEST(plugin_dlpack_device_type_follows_backend) {
    init_with_fakes();
    setenv("KPORT_BACKEND", "fake", 1);
    kp_device *d;
    CHECK_OK(kp_device_open(-1, &d));
    float data[4] = {0};
    int64_t shape[1] = {4};
    DLTensor t = {data, {kDLCPU, 0}, 1, {kDLFloat, 32, 1}, shape, NULL, 0};
    kp_tensor k;
    CHECK_ERR(kp_tensor_from_dlpack(&t, d, &k), KP_ERR_DEVICE_MISMATCH, "takes 2");
    t.device.device_type = kDLCUDA;
    CHECK_OK(kp_tensor_from_dlpack(&t, d, &k));
    CHECK_OK(kp_buffer_free(k.buffer));
    t.device.device_id = 1;
    CHECK_ERR(kp_tensor_from_dlpack(&t, d, &k), KP_ERR_DEVICE_MISMATCH, "device_id 1");
    CHECK_OK(kp_device_close(d));
}

KP_TEST(plugin_wrapped_stream_stays_the_servers) {
    char log[] = "/tmp/kport-fake-log-XXXXXX";
    int fd = mkstemp(log);
    CHECK(fd >= 0);
    close(fd);
    setenv("KPORT_FAKE_LOG", log, 1);
    init_with_fakes();
    setenv("KPORT_BACKEND", "fake", 1);
    kp_device *d;
    CHECK_OK(kp_device_open(-1, &d));
    kp_native_device nd;
    CHECK_OK(kp_device_get_native(d, &nd));
    CHECK(nd.context == (void *)0xC0);
    kp_stream *s;
    CHECK_OK(kp_stream_wrap(d, (void *)0x5EED, &s));
    void *native;
    CHECK_OK(kp_stream_get_native(s, &native));
    CHECK(native == (void *)0x5EED);
    CHECK_OK(kp_stream_destroy(s)); /* neither synchronised nor destroyed: only unwrapped */
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
    char *text = read_file(log);
    unlink(log);
    const char *wrap = strstr(text, "stream_wrap\n");
    CHECK_MSG(wrap != NULL, "no stream_wrap in:\n%s", text);
    CHECK_MSG(strstr(wrap, "stream_destroy wrapped\n") != NULL, "wrapped destroy missing:\n%s", text);
    const char *after = strstr(wrap, "stream_destroy wrapped\n");
    CHECK_MSG(strstr(wrap, "stream_sync") == NULL || strstr(wrap, "stream_sync") > after,
              "a wrapped stream was synchronised on destroy:\n%s", text);
    free(text);
}

/* ---- trust: plugins nobody but root and this user can change ---- */

/* A copy of the fake plugin at <root>/<sub>/libkport-fake.so, the modes and owners
 * given; kp_init with plugin_path <root>/<sub>. Returns the fake's entry (available or
 * refused) and whether its code was mapped at all. uid -1: leave the owner. */
typedef struct trust_setup {
    mode_t root_mode, dir_mode, file_mode;
    int dir_uid, file_uid;
} trust_setup;

static int trust_case(trust_setup t, kp_backend_info *b) {
    char *root = make_temp_dir(), dir[600], path[700], cmd[1600];
    snprintf(dir, sizeof dir, "%s/plugins", root);
    CHECK(mkdir(dir, 0755) == 0);
    snprintf(path, sizeof path, "%s/libkport-fake.so", dir);
    snprintf(cmd, sizeof cmd, "cp %s/libkport-fake.so %s", KPORT_FAKE_PLUGIN_DIR, path);
    CHECK(system(cmd) == 0);
    CHECK(chmod(path, t.file_mode) == 0);
    CHECK(chmod(dir, t.dir_mode) == 0);
    CHECK(chmod(root, t.root_mode) == 0);
    if (t.file_uid >= 0) CHECK(chown(path, (uid_t)t.file_uid, (gid_t)-1) == 0);
    if (t.dir_uid >= 0) CHECK(chown(dir, (uid_t)t.dir_uid, (gid_t)-1) == 0);
    unsetenv("KPORT_PLUGIN_PATH");
    kp_init_options opt = {dir, 0, 0};
    CHECK_OK(kp_init(&opt));
    CHECK(find("fake", b) >= 0);
    int mapped = dlopen(path, RTLD_NOW | RTLD_NOLOAD) != NULL; /* its constructors ran */
    CHECK_OK(kp_shutdown());
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK(system(cmd) == 0);
    free(root);
    return mapped;
}

static void check_refused(trust_setup t, const char *why) {
    kp_backend_info b;
    CHECK_MSG(!trust_case(t, &b), "the plugin was loaded (reason \"%s\")", b.reason);
    CHECK_INT_EQ(b.available, 0);
    CHECK_STR_CONTAINS(b.reason, "plugin refused: ");
    CHECK_STR_CONTAINS(b.reason, why);
}

KP_TEST(plugin_trusted_only_when_nobody_else_can_write) {
    kp_backend_info b;
    trust_setup ok = {0755, 0755, 0755, -1, -1};
    CHECK(trust_case(ok, &b));
    CHECK_INT_EQ(b.available, 1);
    trust_setup group = {0775, 0775, 0775, -1, -1}; /* group write: user-private groups */
    CHECK(trust_case(group, &b));
    trust_setup sticky_parent = {01777, 0755, 0755, -1, -1}; /* like /tmp: others cannot rename ours */
    CHECK(trust_case(sticky_parent, &b));
    CHECK_INT_EQ(b.available, 1);

    check_refused((trust_setup){0755, 0777, 0755, -1, -1}, "plugins is writable by others (mode 0777)");
    check_refused((trust_setup){0755, 01777, 0755, -1, -1}, "plugins is writable by others (mode 1777)");
    check_refused((trust_setup){0755, 0755, 0666, -1, -1}, "file");
    check_refused((trust_setup){0755, 0755, 0666, -1, -1}, "libkport-fake.so is writable by others (mode 0666)");
    check_refused((trust_setup){0777, 0755, 0755, -1, -1}, "is writable by others (mode 0777)"); /* an ancestor */
}

KP_TEST(plugin_owned_by_another_user_is_refused) {
    if (geteuid() != 0) KP_SKIP("needs root to give a file to another user (uid %u)", (unsigned)geteuid());
    check_refused((trust_setup){0755, 0755, 0755, -1, 65534}, "is owned by uid 65534, neither root nor this user");
    check_refused((trust_setup){0755, 0755, 0755, 65534, -1}, "plugins is owned by uid 65534");
}
