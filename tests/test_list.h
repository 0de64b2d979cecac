/*
 * tests/test_list.h — every test, one X(name) line each, grouped by file.
 * No include guard: expanded twice by tests/runner.c.
 * Each group below includes the list owned by its test file's area.
 * XB(name) lists a KP_CONFORMANCE test once for every backend, as XC: a test on random
 * inputs that the runner repeats with KPORT_TEST_SEEDS seeds.
 * XP(name) marks a test that may share the machine with others under --jobs, as the
 * conformance tests do: one that reads no clock, heap, cache directory or runtime
 * bookkeeping (its tuning files are its own, from mkstemp). Every other test runs alone.
 */
#ifndef XC
#define XC(name) X(name)
#endif
#ifndef XP
#define XP(name) X(name)
#endif
#define XB(name) XC(name##__cpu) XC(name##__opencl) XC(name##__cuda) XC(name##__hip)
#include "list_core.h"
#include "list_cpu.h"
#include "list_robustness.h"
#include "list_plugins.h"
#include "list_op_kernel.h"
#include "list_gpu.h"
#include "list_events.h"
#include "list_ep.h"
#include "list_tile_mma.h"
#include "list_opencl.h"
#include "list_cuda.h"
#include "list_hip.h"
#include "list_conf_rule.h"
#include "list_conformance.h"
#undef XB
#undef XC
#undef XP
