/* tests/list_events.h — X(name) per test; no include guard (see test_list.h). */
XB(events_time_stream_work)
XB(events_stream_waits_for_event)
X(events_reject_misuse)
/* tests/test_graph_capture.c */
X(cuda_graph_capture_decode_step)
X(opencl_wrapped_decode_step)
