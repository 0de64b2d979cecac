/*
 * tests/cuda_sm90_driver.c - the sm_90a self-tests' shared driver setup (cuda_sm90_driver.h).
 */
#include "kp_test.h"

#if defined(KP_CUDA_TESTS)

#include "cuda_sm90_driver.h"

void sm90_driver_open(sm90_driver *d) {
    memset(d, 0, sizeof *d);
    d->h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!d->h) KP_SKIP("no libcuda.so.1: %s", dlerror());
    void *h = d->h;
    if (SYM(h, cuInit)(0) != CUDA_SUCCESS) KP_SKIP("cuInit failed: no usable NVIDIA GPU");
    int major = 0, minor = 0;
    CU_OK(SYM(h, cuDeviceGet)(&d->dev, 0));
    SYM(h, cuDeviceGetAttribute)(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d->dev);
    SYM(h, cuDeviceGetAttribute)(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d->dev);
    if (major != 9 || minor != 0) KP_SKIP("device 0 is sm_%d%d, not sm_90", major, minor);
    d->enc = SYM(h, cuTensorMapEncodeTiled);
    CHECK_MSG(d->enc != NULL, "an sm_90 driver without cuTensorMapEncodeTiled");
    CU_OK(SYM(h, cuDevicePrimaryCtxRetain)(&d->ctx, d->dev));
    CU_OK(SYM(h, cuCtxPushCurrent)(d->ctx));
}

void sm90_driver_close(sm90_driver *d) {
    void *h = d->h;
    CUcontext popped;
    SYM(h, cuCtxPopCurrent)(&popped);
    SYM(h, cuDevicePrimaryCtxRelease)(d->dev);
}

void sm90_load_cubin(const sm90_driver *d, const char *path, const char *kernel, CUmodule *mod, CUfunction *fn) {
    void *h = d->h;
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "%s", path);
    static char image[1 << 20];
    size_t image_len = fread(image, 1, sizeof image, f);
    fclose(f);
    CHECK_MSG(image_len > 0 && image_len < sizeof image, "%s: %zu bytes", path, image_len);
    CU_OK(SYM(h, cuModuleLoadData)(mod, image));
    CU_OK(SYM(h, cuModuleGetFunction)(fn, *mod, kernel));
}

CUresult sm90_tensor_map(const sm90_driver *d, CUtensorMap *m, CUtensorMapDataType dt, CUdeviceptr p, uint64_t cols,
                         uint64_t rows, uint64_t row_bytes, uint32_t box_cols, uint32_t box_rows) {
    cuuint64_t dims[2] = {cols, rows}, strides[1] = {row_bytes};
    cuuint32_t box[2] = {box_cols, box_rows}, elem[2] = {1, 1};
    return d->enc(m, dt, 2, (void *)p, dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                  CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

void sm90_run_one_warpgroup(const sm90_driver *d, CUfunction fn, void **args, const char *what) {
    void *h = d->h;
    CUresult r = SYM(h, cuLaunchKernel)(fn, 1, 1, 1, 128, 1, 1, 0, NULL, args, NULL);
    CHECK_MSG(r == CUDA_SUCCESS, "%s: cuLaunchKernel: %d", what, (int)r);
    r = SYM(h, cuCtxSynchronize)();
    CHECK_MSG(r == CUDA_SUCCESS, "%s: kernel failed: CUresult %d", what, (int)r);
}

#else
typedef int kp_cuda_sm90_driver_unused; /* no cuda.h in this build: nothing to share */
#endif
