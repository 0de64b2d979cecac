/* tests/list_events.h — X(name) per test; no include guard (see test_list.h). */
XB(events_time_stream_work)
X(events_reject_misuse)
