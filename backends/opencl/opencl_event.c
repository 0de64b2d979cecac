/*
 * backends/opencl/opencl_event.c — kp_event on OpenCL: a marker enqueued on the
 * stream's queue, timed with the queue's profiling counters (kport's own queues are
 * created with CL_QUEUE_PROFILING_ENABLE; a wrapped queue may not be).
 */
#include "opencl_internal.h"

#include <stdlib.h>

typedef struct ocl_event {
    cl_event marker; /* owned: the last record's marker, NULL before the first */
} ocl_event;

kp_status kp_ocl_event_create(kp_device *d, void **out_impl) {
    (void)d;
    ocl_event *e = calloc(1, sizeof *e);
    if (!e) return kp_ocl_host()->set_error(KP_ERR_OUT_OF_MEMORY, "opencl: out of host memory for an event");
    *out_impl = e;
    return KP_OK;
}

kp_status kp_ocl_event_record(kp_event *ev, kp_stream *s) {
    ocl_event *e = ev->impl;
    cl_event m = NULL;
    cl_int err = clEnqueueMarkerWithWaitList(kp_ocl_queue(s), 0, NULL, &m);
    if (err != CL_SUCCESS) return kp_ocl_fail(err, "clEnqueueMarkerWithWaitList");
    clFlush(kp_ocl_queue(s)); /* a marker nobody flushes may never be submitted */
    if (e->marker) clReleaseEvent(e->marker);
    e->marker = m;
    return KP_OK;
}

kp_status kp_ocl_event_sync(kp_event *ev) {
    ocl_event *e = ev->impl;
    cl_int err = clWaitForEvents(1, &e->marker);
    return err == CL_SUCCESS ? KP_OK : kp_ocl_fail(err, "clWaitForEvents");
}

static cl_int marker_time(cl_event m, cl_ulong *ns) {
    cl_int err = clWaitForEvents(1, &m);
    if (err == CL_SUCCESS) err = clGetEventProfilingInfo(m, CL_PROFILING_COMMAND_END, sizeof *ns, ns, NULL);
    return err;
}

kp_status kp_ocl_event_elapsed(kp_event *start, kp_event *end, float *ms) {
    const ocl_event *a = start->impl, *b = end->impl;
    cl_ulong t0 = 0, t1 = 0;
    cl_int err = marker_time(b->marker, &t1);
    if (err == CL_SUCCESS) err = marker_time(a->marker, &t0);
    if (err == CL_PROFILING_INFO_NOT_AVAILABLE)
        return kp_ocl_host()->set_error(KP_ERR_UNSUPPORTED,
                                        "opencl: no profiling counters on this queue (a wrapped queue needs "
                                        "CL_QUEUE_PROFILING_ENABLE for kp_event_elapsed_ms)");
    if (err != CL_SUCCESS) return kp_ocl_fail(err, "clGetEventProfilingInfo");
    *ms = (float)(((double)t1 - (double)t0) * 1e-6);
    return KP_OK;
}

void kp_ocl_event_destroy(kp_event *ev) {
    ocl_event *e = ev->impl;
    if (e->marker) clReleaseEvent(e->marker);
    free(e);
}

/* A barrier on s's queue that waits for e's marker: later commands on s start after
 * it, and the host does not block. */
kp_status kp_ocl_stream_wait_event(kp_stream *s, kp_event *ev) {
    ocl_event *e = ev->impl;
    cl_int err = clEnqueueBarrierWithWaitList(kp_ocl_queue(s), 1, &e->marker, NULL);
    return err == CL_SUCCESS ? KP_OK : kp_ocl_fail(err, "clEnqueueBarrierWithWaitList");
}
