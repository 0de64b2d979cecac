/*
 * tests/test_events.c — kp_event: marks in a stream's work and the device time
 * between two of them, on every backend, and the errors for misuse.
 */
#include "kp_conformance.h"
#include "kp_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Two marks around 8 copies of 16 MiB: the elapsed time is positive, finite and no
 * longer than the host saw (the marks lie inside the host's interval: an order, which
 * load cannot invert; 1 ms for the clocks' grain and 0.1 % for their rates: a device
 * may time with another clock than CLOCK_MONOTONIC, one NTP does not slew, and a
 * loaded machine can stretch the interval to seconds); a mark recorded again moves
 * (to after the work since). */
KP_CONFORMANCE(events_time_stream_work) {
    const size_t n = (size_t)16 << 20;
    kp_stream *s;
    kp_buffer *a, *b;
    kp_event *start, *end;
    CHECK_OK(kp_stream_create(d, &s));
    CHECK_OK(kp_buffer_alloc(d, n, &a));
    CHECK_OK(kp_buffer_alloc(d, n, &b));
    CHECK_OK(kp_event_create(d, &start));
    CHECK_OK(kp_event_create(d, &end));
    float ms = -1.0f;
    CHECK_ERR(kp_event_elapsed_ms(start, end, &ms), KP_ERR_INVALID_ARGUMENT, "never recorded");
    CHECK_OK(kp_event_sync(end)); /* nothing marked: returns at once */

    double t0 = now_s();
    CHECK_OK(kp_event_record(start, s));
    for (int i = 0; i < 8; i++) CHECK_OK(kp_buffer_copy(s, i % 2 ? a : b, 0, i % 2 ? b : a, 0, n));
    CHECK_OK(kp_event_record(end, s));
    CHECK_OK(kp_event_sync(end));
    double host_ms = (now_s() - t0) * 1e3;
    CHECK_OK(kp_event_elapsed_ms(start, end, &ms));
    CHECK_MSG(isfinite(ms) && ms > 0.0f && ms <= host_ms * 1.001 + 1.0, "elapsed %.4f ms, host saw %.4f ms", ms, host_ms);

    /* re-recording start after the copies moves it past them: end (after the copies)
     * to the new start is no longer -ms but >= 0 (an order, not a race between an
     * empty interval and the copies' time, which a loaded machine can invert) */
    CHECK_OK(kp_stream_sync(s));
    CHECK_OK(kp_event_record(start, s));
    float moved = -1.0f, empty = -1.0f;
    CHECK_OK(kp_event_elapsed_ms(end, start, &moved));
    CHECK_MSG(isfinite(moved) && moved >= 0.0f, "the re-recorded start is %.4f ms after the old end", moved);
    CHECK_OK(kp_event_record(end, s));
    CHECK_OK(kp_event_elapsed_ms(start, end, &empty));
    CHECK_MSG(isfinite(empty) && empty >= 0.0f, "empty interval %.4f ms", empty);

    CHECK_OK(kp_event_destroy(start));
    CHECK_OK(kp_event_destroy(end));
    CHECK_OK(kp_buffer_free(a));
    CHECK_OK(kp_buffer_free(b));
    CHECK_OK(kp_stream_destroy(s));
}

/* kp_stream_wait_event: a grouped GEMM on stream a writes out; b waits for the event
 * recorded after it, then copies out and reads the copy back, all on b. The copy must
 * hold a's finished result (the output starts poisoned: NaN), byte for byte what out
 * holds once a is synchronised. Without the wait, b's copy may run while a's GEMM is
 * still writing. An event never recorded marks nothing: waiting on it returns at once. */
KP_CONFORMANCE(events_stream_waits_for_event) {
    enum { M = 192, K = 256, N = 384, E = 3 };
    kp_stream *a, *b;
    kp_event *done, *never;
    CHECK_OK(kp_stream_create(d, &a));
    CHECK_OK(kp_stream_create(d, &b));
    CHECK_OK(kp_event_create(d, &done));
    CHECK_OK(kp_event_create(d, &never));
    CHECK_OK(kp_stream_wait_event(b, never));

    kp_conf_tensor x = kp_conf_random(d, "a", KP_F32, 2, (int64_t[]){M, K}, -1.0, 1.0);
    kp_conf_tensor w = kp_conf_random(d, "w", KP_F32, 3, (int64_t[]){E, N, K}, -1.0, 1.0);
    kp_conf_tensor offs = kp_conf_from(d, "expert_offsets", KP_I32, 1, (int64_t[]){E + 1}, (double[]){0, 64, 64, M});
    kp_conf_tensor out = kp_conf_output(d, "out", KP_F32, 2, (int64_t[]){M, N});
    kp_grouped_gemm_params p;
    memset(&p, 0, sizeof p);
    p.a = x.t, p.w = w.t, p.expert_offsets = offs.t, p.out = out.t;
    const size_t bytes = (size_t)M * N * sizeof(float);
    kp_buffer *copy;
    CHECK_OK(kp_buffer_alloc(d, bytes, &copy));

    CHECK_OK(kp_grouped_gemm(a, &p));
    CHECK_OK(kp_event_record(done, a));
    CHECK_OK(kp_stream_wait_event(b, done));
    CHECK_OK(kp_buffer_copy(b, copy, 0, out.t.buffer, out.t.offset, bytes));
    float *seen = malloc(bytes);
    CHECK(seen != NULL);
    CHECK_OK(kp_buffer_read(b, copy, 0, seen, bytes));
    CHECK_OK(kp_stream_sync(a));
    kp_conf_download(&out);
    int64_t bad = -1;
    for (int64_t i = 0; i < (int64_t)M * N && bad < 0; i++)
        if (!(seen[i] == (float)out.host[i])) bad = i;
    CHECK_MSG(bad < 0, "stream b read out[%lld] = %g before stream a finished (final %g)", (long long)bad,
              bad < 0 ? 0.0 : (double)seen[bad], bad < 0 ? 0.0 : out.host[bad]);
    int nan = 0;
    for (int64_t i = 0; i < (int64_t)M * N; i++) nan += isnan(out.host[i]);
    CHECK_INT_EQ(nan, 0);

    free(seen);
    CHECK_OK(kp_buffer_free(copy));
    kp_conf_free(&x), kp_conf_free(&w), kp_conf_free(&offs), kp_conf_free(&out);
    CHECK_OK(kp_event_destroy(done));
    CHECK_OK(kp_event_destroy(never));
    CHECK_OK(kp_stream_destroy(a));
    CHECK_OK(kp_stream_destroy(b));
}

KP_TEST(events_reject_misuse) {
    CHECK_OK(kp_init(NULL));
    kp_device *d;
    setenv("KPORT_BACKEND", "cpu", 1);
    CHECK_OK(kp_device_open(-1, &d));
    kp_event *e;
    float ms;
    CHECK_ERR(kp_event_create(NULL, &e), KP_ERR_INVALID_ARGUMENT, "d is NULL");
    CHECK_ERR(kp_event_create(d, NULL), KP_ERR_INVALID_ARGUMENT, "out is NULL");
    CHECK_OK(kp_event_create(d, &e));
    CHECK_ERR(kp_event_record(e, NULL), KP_ERR_INVALID_ARGUMENT, "s is NULL");
    CHECK_ERR(kp_event_record(NULL, NULL), KP_ERR_INVALID_ARGUMENT, "e is NULL");
    CHECK_ERR(kp_event_elapsed_ms(e, e, NULL), KP_ERR_INVALID_ARGUMENT, "ms is NULL");
    CHECK_ERR(kp_event_elapsed_ms(NULL, e, &ms), KP_ERR_INVALID_ARGUMENT, "start is NULL");
    CHECK_ERR(kp_event_sync(NULL), KP_ERR_INVALID_ARGUMENT, "e is NULL");
    CHECK_ERR(kp_event_destroy(NULL), KP_ERR_INVALID_ARGUMENT, "e is NULL");
    kp_stream *s;
    CHECK_OK(kp_stream_create(d, &s));
    CHECK_ERR(kp_stream_wait_event(NULL, e), KP_ERR_INVALID_ARGUMENT, "s is NULL");
    CHECK_ERR(kp_stream_wait_event(s, NULL), KP_ERR_INVALID_ARGUMENT, "e is NULL");
    CHECK_ERR(kp_stream_reserve(NULL, 1), KP_ERR_INVALID_ARGUMENT, "s is NULL");
    CHECK_OK(kp_stream_reserve(s, (size_t)1 << 20)); /* cpu: nothing to reserve */
    CHECK_OK(kp_stream_destroy(s));
    CHECK_OK(kp_event_destroy(e));
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
}
