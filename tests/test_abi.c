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

/* tests/abi/abi_probe.c, built against tests/abi/kport_0_1.h, on today's libkport.so. */
KP_TEST(abi_0_1_binary_runs_on_this_library) {
    FILE *f = popen(KPORT_ABI_PROBE_PATH " 2>&1", "r");
    CHECK(f != NULL);
    char out[512] = "";
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    int rc = pclose(f);
    CHECK_MSG(rc == 0 && strstr(out, "abi 0.1 ok") != NULL, "kport-abi-probe exited %d: %s", rc, out);
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
