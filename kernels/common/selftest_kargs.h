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

/* kp_wave_selftest (wave_selftest.cl); buffers: a, bt, v (16-bit), s, o, rows (f32). */
typedef struct kp_wave_selftest_kargs {
    kp_karg_i32 ksteps; /* 16-k steps of S = A Bt^T: 1 .. WS_K / 16 */
    kp_karg_i32 pad_;
} kp_wave_selftest_kargs;
KP_KARGS_OFFSET(kp_wave_selftest_kargs, pad_, 4);
KP_KARGS_SIZE(kp_wave_selftest_kargs, 8);
/* its dynamic local memory: A and Bt tiles (rows of k + 8), V [16][24], P [m][16], and 8
 * floats a work-item for the row reductions' fallback (m = 16 * groups rows) */
#define KP_WAVE_SELFTEST_LOCAL_BYTES(groups, k) \
    ((16 * (groups) + 16) * ((k) + 8) * 2 + 16 * 24 * 2 + 16 * (groups) * 16 * 2 + 32 * (groups) * 8 * 4)

#endif /* KP_SELFTEST_KARGS_H */
