/*
 * kernels/common/selftest_kargs.h - the by-value parameter blocks of the self-test
 * kernels under common/ (kp_kargs.h), shared with the tests that launch them.
 */
#ifndef KP_SELFTEST_KARGS_H
#define KP_SELFTEST_KARGS_H

#include "kp_kargs.h"

/* kp_pipeline_selftest (pipeline_selftest.cl); buffers: x, y (uint4 chunks). */
typedef struct kp_pipeline_selftest_kargs {
    kp_karg_i32 n;     /* 16-byte chunks in x */
    kp_karg_i32 tiles; /* tiles of y to write: ceil(n / PS_WG) */
} kp_pipeline_selftest_kargs;
KP_KARGS_OFFSET(kp_pipeline_selftest_kargs, tiles, 4);
KP_KARGS_SIZE(kp_pipeline_selftest_kargs, 8);

#endif /* KP_SELFTEST_KARGS_H */
