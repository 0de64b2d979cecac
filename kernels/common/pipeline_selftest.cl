/*
 * kernels/common/pipeline_selftest.cl - the S-stage pipeline of common/kp_async_copy.h in
 * dynamic local memory (KP_DYNAMIC_LOCAL), as every generation-2 kernel runs it, checked
 * against a host reference (tests/test_opencl.c; its SASS by the CUDA static checks).
 *
 * One work-group of PS_WG work-items streams x (n 16-byte chunks) in tiles of PS_WG chunks
 * through a ring of PS_STAGES tiles in local memory: tile t lands in stage t % S while
 * tiles t + 1 .. t + S - 2 are in flight. After the wait and the barrier, work-item i
 * reads the chunk work-item PS_WG - 1 - i copied (so a missing barrier or a wrong stage
 * shows) and writes y[t * PS_WG + i]. Chunks past n are zero-filled (valid = 0), so
 * y = x with each tile reversed, zeros past n within the last tile.
 *
 * Options: PS_STAGES (2..4), PS_WG. Launch: one work-group of PS_WG, local_bytes =
 * PS_STAGES * PS_WG * 16.
 */
#include "kp_dialect.h"
#include "common/selftest_kargs.h"
#include "common/kp_async_copy.h"

#ifndef PS_STAGES
#define PS_STAGES 3
#endif
#ifndef PS_WG
#define PS_WG 64
#endif
#if PS_STAGES < 2 || PS_STAGES > 4
#error "PS_STAGES: 2..4"
#endif

KP_KERNEL void KP_LAUNCH_BOUNDS(PS_WG, 1) kp_pipeline_selftest(KP_GLOBAL const uint4 *KP_RESTRICT x,
                                                            KP_GLOBAL uint4 *KP_RESTRICT y,
                                                            kp_pipeline_selftest_kargs p KP_DYNAMIC_LOCAL_ARG(smem)) {
    KP_DYNAMIC_LOCAL(smem);
    const int lid = kp_local_id(0);
    for (int s = 0; s < PS_STAGES - 1; ++s) {
        int c = s * PS_WG + lid;
        kp_copy16_async(smem + s * PS_WG + lid, x + (c < p.n ? c : 0), s < p.tiles && c < p.n);
        kp_copy_commit();
    }
    for (int t = 0; t < p.tiles; ++t) {
        kp_copy_wait(PS_STAGES - 2);
        kp_barrier();
        int nt = t + PS_STAGES - 1, c = nt * PS_WG + lid;
        if (nt < p.tiles) kp_copy16_async(smem + (nt % PS_STAGES) * PS_WG + lid, x + (c < p.n ? c : 0), c < p.n);
        kp_copy_commit();
        y[t * PS_WG + lid] = smem[(t % PS_STAGES) * PS_WG + (PS_WG - 1 - lid)];
    }
}
