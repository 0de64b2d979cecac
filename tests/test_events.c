/*
 * tests/test_events.c — kp_event: marks in a stream's work and the device time
 * between two of them, on every backend, and the errors for misuse.
 */
#include "kp_test.h"

#include <math.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Two marks around 8 copies of 16 MiB: the elapsed time is positive, finite and no
 * longer than the host saw; a mark recorded again moves (to after the work since). */
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
    CHECK_MSG(isfinite(ms) && ms > 0.0f && ms <= host_ms + 1.0, "elapsed %.4f ms, host saw %.4f ms", ms, host_ms);

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
    CHECK_OK(kp_event_destroy(e));
    CHECK_OK(kp_device_close(d));
    CHECK_OK(kp_shutdown());
}
