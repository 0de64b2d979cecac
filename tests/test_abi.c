/*
 * tests/test_abi.c — the growable ABI (issue 17, kport.h "a growable ABI"): a binary
 * built against kport 0.1's frozen header runs on this library, and the _sized entry
 * points take older (smaller) and newer (larger) params structs.
 */
#include "kp_test.h"
#include "op_params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef KPORT_ABI_PROBE_PATH
#error "KPORT_ABI_PROBE_PATH must name tests/abi/abi_probe's executable"
#endif

/* The probe's MoE layer: T 4, hidden 64, E 8, inter 32, top-2, f32. */
static kp_moe_forward_params small_forward(kp_device *d) {
    kp_buffer *mb;
    CHECK_OK(kp_buffer_alloc(d, (8 * 64 * 64 + 4 * 64) * sizeof(float), &mb));
    kp_moe_forward_params f;
    memset(&f, 0, sizeof f);
    CHECK_OK(kp_tensor_init(&f.x, mb, 0, KP_F32, 2, (int64_t[]){4, 64}, NULL));
    CHECK_OK(kp_tensor_init(&f.router_logits, mb, 0, KP_F32, 2, (int64_t[]){4, 8}, NULL));
    CHECK_OK(kp_tensor_init(&f.w13, mb, 0, KP_F32, 3, (int64_t[]){8, 64, 64}, NULL));
    CHECK_OK(kp_tensor_init(&f.w2, mb, 0, KP_F32, 3, (int64_t[]){8, 64, 32}, NULL));
    CHECK_OK(kp_tensor_init(&f.out, mb, 8 * 64 * 64 * sizeof(float), KP_F32, 2, (int64_t[]){4, 64}, NULL));
    f.routing = (kp_moe_routing){2, 1, 1, KP_MOE_SCORING_SOFTMAX, 1, 1.0f};
    return f;
}

/* tests/abi/abi_probe.c, built against tests/abi/kport_0_1.h, on today's libkport.so. */
KP_TEST(abi_0_1_binary_runs_on_this_library) {
    FILE *f = popen(KPORT_ABI_PROBE_PATH " 2>&1", "r");
    CHECK(f != NULL);
    char out[512] = "";
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    int rc = pclose(f);
    CHECK_MSG(rc == 0 && strstr(out, "abi 0.1 ok") != NULL, "kport-abi-probe exited %d: %s", rc, out);
    /* its kp_moe_forward_workspace_size (0.1's entry point) agrees with today's */
    const char *w = strstr(out, "workspace ");
    CHECK(w != NULL);
    CHECK_OK(kp_init(NULL));
    setenv("KPORT_BACKEND", "cpu", 1);
    kp_device *d;
    CHECK_OK(kp_device_open(-1, &d));
    kp_moe_forward_params fwd = small_forward(d);
    size_t ws = 0;
    CHECK_OK(kp_moe_forward_workspace_size(d, &fwd, &ws));
    CHECK_MSG(strtoull(w + 10, NULL, 10) == ws, "0.1 binary: %s; today: %zu", w, ws);
    CHECK_OK(kp_buffer_free(fwd.x.buffer));
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
}

/* A caller's struct larger than this library's is read in place when the extra bytes
 * are zero, refused (nothing run) when one is set; smaller than 0.1's is refused. */
KP_TEST(abi_sized_params_older_and_newer) {
    CHECK_OK(kp_init(NULL));
    setenv("KPORT_BACKEND", "cpu", 1);
    kp_device *d;
    CHECK_OK(kp_device_open(-1, &d));
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    kp_buffer *lb, *ib, *wb;
    CHECK_OK(kp_buffer_alloc(d, 2 * 4 * sizeof(float), &lb));
    CHECK_OK(kp_buffer_alloc(d, 2 * sizeof(int32_t), &ib));
    CHECK_OK(kp_buffer_alloc(d, 2 * sizeof(float), &wb));
    const float logits[8] = {0, 3, 1, 2, 5, 0, 0, 0};
    CHECK_OK(kp_buffer_write(s, lb, 0, logits, sizeof logits));
    struct {
        kp_moe_gate_params p;
        unsigned char newer[64]; /* fields a later kport.h might append */
    } big;
    memset(&big, 0, sizeof big);
    kp_moe_gate_params *g = &big.p;
    g->routing = (kp_moe_routing){1, 1, 1, KP_MOE_SCORING_SOFTMAX, 1, 1.0f};
    CHECK_OK(kp_tensor_init(&g->logits, lb, 0, KP_F32, 2, (int64_t[]){2, 4}, NULL));
    CHECK_OK(kp_tensor_init(&g->topk_ids, ib, 0, KP_I32, 2, (int64_t[]){2, 1}, NULL));
    CHECK_OK(kp_tensor_init(&g->topk_weights, wb, 0, KP_F32, 2, (int64_t[]){2, 1}, NULL));

    CHECK_OK(kp_moe_gate_sized(s, g, sizeof big)); /* newer caller, nothing new set */
    CHECK_OK(kp_op_supported_sized(d, KP_OP_MOE_GATE, g, sizeof big));
    int32_t ids[2] = {-1, -1};
    CHECK_OK(kp_buffer_read(s, ib, 0, ids, sizeof ids));
    CHECK(ids[0] == 1 && ids[1] == 0);

    const int32_t poison[2] = {-7, -7};
    CHECK_OK(kp_buffer_write(s, ib, 0, poison, sizeof poison));
    big.newer[5] = 1; /* a newer field set: this library cannot honour it */
    CHECK_ERR(kp_moe_gate_sized(s, g, sizeof big), KP_ERR_UNSUPPORTED, "built against a newer kport.h");
    CHECK_ERR(kp_op_supported_sized(d, KP_OP_MOE_GATE, g, sizeof big), KP_ERR_UNSUPPORTED, "newer");
    CHECK_ERR(kp_moe_gate_sized(s, g, 8), KP_ERR_INVALID_ARGUMENT, "kport 0.1's was already");
    CHECK_OK(kp_buffer_read(s, ib, 0, ids, sizeof ids));
    CHECK(ids[0] == -7 && ids[1] == -7); /* nothing written */

    /* the 0.1 entry points and size 0 read 0.1's size; the macros pass today's */
    CHECK_OK((kp_moe_gate)(s, g));
    CHECK_OK(kp_moe_gate_sized(s, g, 0));
    CHECK_OK(kp_moe_gate(s, g));
    CHECK(kp_op_params_size(KP_OP_MOE_GATE) == sizeof(kp_moe_gate_params));
    CHECK(kp_op_params_size(KP_OP_COUNT) == 0);

    kp_buffer_free(lb), kp_buffer_free(ib), kp_buffer_free(wb);
    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
}

/* kp_init_options and kp_moe_forward_workspace_size's params are sized like the op
 * params: larger with zero extra bytes read in place, a set extra byte refused, a size
 * below 0.1's refused, 0 and the plain functions read 0.1's size. */
KP_TEST(abi_sized_init_options_and_workspace_size) {
    struct {
        kp_init_options o;
        unsigned char newer[32];
    } big;
    memset(&big, 0, sizeof big);
    big.newer[3] = 1;
    CHECK_ERR(kp_init_sized(&big.o, sizeof big), KP_ERR_UNSUPPORTED, "built against a newer kport.h");
    CHECK(kp_backend_count() == 0); /* refused before anything was loaded */
    CHECK_ERR(kp_init_sized(&big.o, sizeof(void *)), KP_ERR_INVALID_ARGUMENT, "kp_init_options struct");
    big.newer[3] = 0;
    big.o.flags = KP_INIT_NO_PLUGINS;
    CHECK_OK(kp_init_sized(&big.o, sizeof big));
    CHECK_INT_EQ(kp_backend_count(), 1); /* the flag was read: only the CPU backend */
    CHECK_OK(kp_shutdown());
    CHECK_OK(kp_init_sized(NULL, sizeof big)); /* NULL: defaults, whatever the size */
    CHECK_OK(kp_shutdown());
    CHECK_OK(kp_init_sized(&big.o, 0));
    CHECK_OK(kp_shutdown());
    CHECK_OK((kp_init)(&big.o));
    CHECK_INT_EQ(kp_backend_count(), 1);

    setenv("KPORT_BACKEND", "cpu", 1);
    kp_device *d;
    CHECK_OK(kp_device_open(-1, &d));
    struct {
        kp_moe_forward_params p;
        unsigned char newer[32];
    } fbig;
    memset(&fbig, 0, sizeof fbig);
    fbig.p = small_forward(d);
    size_t want = 0, got = 0;
    CHECK_OK(kp_moe_forward_workspace_size(d, &fbig.p, &want));
    CHECK(want > 0);
    CHECK_OK(kp_moe_forward_workspace_size_sized(d, &fbig.p, sizeof fbig, &got));
    CHECK(got == want);
    got = 0;
    CHECK_OK((kp_moe_forward_workspace_size)(d, &fbig.p, &got));
    CHECK(got == want);
    got = 0;
    CHECK_OK(kp_moe_forward_workspace_size_sized(d, &fbig.p, 0, &got));
    CHECK(got == want);
    fbig.newer[31] = 7;
    got = 12345;
    CHECK_ERR(kp_moe_forward_workspace_size_sized(d, &fbig.p, sizeof fbig, &got), KP_ERR_UNSUPPORTED, "newer kport.h");
    CHECK_ERR(kp_moe_forward_workspace_size_sized(d, &fbig.p, 16, &got), KP_ERR_INVALID_ARGUMENT, "kport 0.1's");
    CHECK(got == 12345); /* nothing written */
    CHECK_OK(kp_buffer_free(fbig.p.x.buffer));
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
}
