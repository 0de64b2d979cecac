/* tests/list_cuda.h — X(name) per test; no include guard (see test_list.h). */
X(cuda_plugin_entry)
X(cuda_plugin_init)
X(cuda_plugin_ops_unsupported)
X(cuda_backend_listed)
X(cuda_buffer_roundtrip)
