/*
 * tests/cuda_sm90_driver.h - what the sm_90a self-tests (tests/test_cuda_sm90.c,
 * tests/test_cuda_sm90_e4m3.c) share: the CUDA driver opened by dlopen (as the cuda plugin
 * does) on an sm_90 device with its primary context current, a self-test cubin loaded from
 * its file, a 2-D TMA tensor map with the 128-byte swizzle, and a one-block launch waited
 * for. Only in builds with the cuda test dependency (KP_CUDA_TESTS: cuda.h).
 */
#ifndef KPORT_TESTS_CUDA_SM90_DRIVER_H
#define KPORT_TESTS_CUDA_SM90_DRIVER_H

#include <cuda.h>
#include <dlfcn.h>
#include <stdint.h>

/* cuda.h maps some names to versioned symbols (cuMemAlloc -> cuMemAlloc_v2): look up
 * the symbol the header chose. */
#define SYM_STR2(x) #x
#define SYM_STR(x) SYM_STR2(x)
#define SYM(h, fn) ((__typeof__(&fn))dlsym(h, SYM_STR(fn)))
#define CU_OK(call) CHECK_MSG((call) == CUDA_SUCCESS, "%s failed", #call)

typedef struct sm90_driver {
    void *h; /* libcuda.so.1 */
    CUdevice dev;
    CUcontext ctx;
    __typeof__(&cuTensorMapEncodeTiled) enc;
} sm90_driver;

/* Opens the driver on device 0 and makes its primary context current. Skips the test
 * without libcuda.so.1, a usable GPU, or an sm_90 device 0; fails on an sm_90 driver
 * without cuTensorMapEncodeTiled. */
void sm90_driver_open(sm90_driver *d);
/* Pops and releases the primary context. */
void sm90_driver_close(sm90_driver *d);

/* Loads the cubin at path (at most 1 MiB) and finds kernel in it (the test fails otherwise). */
void sm90_load_cubin(const sm90_driver *d, const char *path, const char *kernel, CUmodule *mod, CUfunction *fn);

/* A row-major matrix of rows x cols elements of dt at p, rows row_bytes apart, read in
 * boxes of box_cols x box_rows elements landing with the 128-byte swizzle. */
CUresult sm90_tensor_map(const sm90_driver *d, CUtensorMap *m, CUtensorMapDataType dt, CUdeviceptr p, uint64_t cols,
                         uint64_t rows, uint64_t row_bytes, uint32_t box_cols, uint32_t box_rows);

/* Launches fn as one block of 128 threads (one warpgroup) with args and waits for it; the
 * test fails, naming what, when the launch or the kernel does. */
void sm90_run_one_warpgroup(const sm90_driver *d, CUfunction fn, void **args, const char *what);

#endif /* KPORT_TESTS_CUDA_SM90_DRIVER_H */
