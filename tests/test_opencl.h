/*
 * tests/test_opencl.h — what the OpenCL test files share (defined in test_opencl.c):
 * the temp-dir/backend/device fixture over the backend's internal interface, the test
 * host's log, and the dialect self-test kernel's helpers.
 */
#ifndef KPORT_TESTS_TEST_OPENCL_H
#define KPORT_TESTS_TEST_OPENCL_H

#include "backend.h"
#include "opencl_program.h"

/* Fresh KPORT_CACHE_DIR / POCL_CACHE_DIR under a mkdtemp dir, the backend, one device. */
typedef struct ocl_fx {
    char root[256];  /* mkdtemp */
    char cache[300]; /* KPORT_CACHE_DIR */
    kp_backend_state *b;
    kp_ocl_device *d;
    int index;
} ocl_fx;

void fx_open(ocl_fx *f);  /* dirs, backend, device 0 */
void fx_close(ocl_fx *f); /* and removes the dirs */
void fx_device_open(ocl_fx *f, int index);
void fx_device_close(ocl_fx *f);

/* Every log line of this test process, newline-separated (truncated). */
extern char g_log[16384];

const char *origin_name(kp_ocl_origin o);
int file_size(const char *path);

/* The dialect self-test kernel: dtype, its -D, one checked run, one build. */
typedef enum st_dtype { ST_F32, ST_F16, ST_BF16 } st_dtype;
const char *st_define(st_dtype t);
void run_selftest_opts(kp_ocl_device *d, st_dtype t, int n, int wg, const char *opts, kp_ocl_build_info *info);
kp_ocl_build_info build_selftest(kp_ocl_device *d, const char *opts);

#endif /* KPORT_TESTS_TEST_OPENCL_H */
