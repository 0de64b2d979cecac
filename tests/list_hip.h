/* tests/list_hip.h — X(name) per test; no include guard (see test_list.h). */
X(hip_plugin_entry)
X(hip_plugin_init)
X(hip_plugin_ops_unsupported)
X(hip_backend_listed)
X(hip_buffer_roundtrip)
