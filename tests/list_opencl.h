/* tests/list_opencl.h — X(name) per test; no include guard (see test_list.h). */
