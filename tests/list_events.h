/* tests/list_events.h — X(name) per test; no include guard (see test_list.h). */
XB(events_time_stream_work)
XB(events_stream_waits_for_event)
X(events_reject_misuse)
