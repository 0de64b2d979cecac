/*
 * tests/test_list.h — every test, one X(name) line each, grouped by file.
 * No include guard: expanded twice by tests/runner.c.
 * Each group below includes the list owned by its test file's area.
 */
#include "list_core.h"
#include "list_cpu.h"
#include "list_plugins.h"
#include "list_opencl.h"
#include "list_cuda.h"
#include "list_hip.h"
