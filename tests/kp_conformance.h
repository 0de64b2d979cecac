/*
 * tests/kp_conformance.h — what every conformance test shares: host-side tensors
 * kept in double, upload in a storage dtype, download, and the comparison rule of
 * DESIGN §5 (relative L2 error and max abs error against a float64 reference; NaN
 * never passes). Independent of every backend: the conversions here are the tests'
 * own, not the CPU backend's.
 */
#ifndef KPORT_TESTS_KP_CONFORMANCE_H
#define KPORT_TESTS_KP_CONFORMANCE_H

#include "kp_test.h"
#include "ref_prec.h"

/* Round a double to what dtype can store (f32, f16, bf16: nearest even; i32: trunc). */
double kp_conf_round(double x, kp_dtype dt);
/* Host values <-> packed storage bytes. */
void kp_conf_pack(const double *x, int64_t n, kp_dtype dt, void *out);
void kp_conf_unpack(const void *in, int64_t n, kp_dtype dt, double *x);

/* A device tensor with guard bytes, and its host values in double. */
typedef struct kp_conf_tensor {
    kp_tensor t;
    kp_guarded g;
    double *host; /* numel values, already rounded to the dtype */
    int64_t numel;
    const char *name;
} kp_conf_tensor;

/* Contiguous tensor of the given shape; host values uniform in [lo, hi), rounded to
 * dtype, uploaded. */
kp_conf_tensor kp_conf_random(kp_device *d, const char *name, kp_dtype dt, int ndim, const int64_t *shape,
                              double lo, double hi);
/* Same, with activation-style outliers: `channels` columns of the last dimension, drawn
 * at random, scaled by `factor` in every row. */
kp_conf_tensor kp_conf_random_outliers(kp_device *d, const char *name, kp_dtype dt, int ndim, const int64_t *shape,
                                       double lo, double hi, int channels, double factor);
/* Same, from given values (rounded to dtype). */
kp_conf_tensor kp_conf_from(kp_device *d, const char *name, kp_dtype dt, int ndim, const int64_t *shape,
                            const double *values);
/* An output: poisoned with 0xFF bytes (NaN in every float dtype, -1 in i32). */
kp_conf_tensor kp_conf_output(kp_device *d, const char *name, kp_dtype dt, int ndim, const int64_t *shape);
/* Reads the device values back into host (after checking the guards). */
void kp_conf_download(kp_conf_tensor *c);
void kp_conf_free(kp_conf_tensor *c);

/* Unit roundoff of a storage dtype (f32 2^-24, f16 2^-11, bf16 2^-8), and the
 * ref_prec a reference's error model uses for intermediates rounded to it. */
double kp_conf_unit(kp_dtype dt);
ref_prec kp_conf_prec(kp_dtype dt);
/* Tolerance on relative L2 error for a dtype: f32 1e-5, f16 2e-3, bf16 1.6e-2. */
double kp_conf_tolerance(kp_dtype dt);

/* The comparison rule (DESIGN §5, README "Tests"), element by element:
 *  - ref NaN: the element must still hold the poison (no kernel writes there);
 *  - ref ±inf: got must be the same infinity; got NaN never passes;
 *  - |got - ref| <= 2 * (u * |ref| + 3 * err) + u * rms(ref) / 4, with u the dtype's
 *    unit roundoff and err the reference's error model (ref_prec.h; NULL: 0);
 *  - over the finite elements, relative L2 error <= kp_conf_tolerance(dtype);
 *  - f32 outputs (lse, f32 activations; 64 elements or more): no bias - the mean signed
 *    error within half an ulp (of max(|ref|, 1)) plus four standard errors of the mean,
 *    so a shift of one ulp on every row fails though each element is within its bound.
 * A report names the worst element (the largest error / bound) by its index in
 * `dims` ("token,head,col": names of the shape's dimensions), with both values. */
typedef struct kp_conf_result {
    int ok;
    int64_t worst, over;  /* element with the largest error / bound (-1: none); elements over their bound */
    double worst_got, worst_ref, worst_bound, rel_l2;
    double bias_ulps;     /* f32: mean signed error in ulps of max(|ref|, 1) */
    const char *rule;     /* which rule failed first: "poison", "inf", "nan", "element", "rel_l2", "bias" */
} kp_conf_result;
kp_conf_result kp_conf_compare(kp_dtype dt, const double *got, const double *ref, const double *err, int64_t n);
void kp_conf_check_at(const char *what, kp_dtype dt, const double *got, const double *ref, const double *err,
                      int64_t n, int ndim, const int64_t *shape, const char *dims, const char *file, int line);
/* "token 3, head 1, col 17": flat index i in a row-major shape, named by `dims`. */
void kp_conf_index_name(int64_t i, int ndim, const int64_t *shape, const char *dims, char *out, size_t len);
/* An output tensor (downloaded) against its reference. */
#define kp_conf_expect(what, out, ref, err, dims)                                                            \
    kp_conf_check_at((what), (out)->t.dtype, (out)->host, (ref), (err), (out)->numel, (out)->t.ndim,         \
                     (out)->t.shape, (dims), __FILE__, __LINE__)

/* The rule for values rounded to a grid (an FP8 output, a copied cache): each element
 * equals lo or hi, the two roundings the reference admits (ref_fp8.h: they differ only
 * next to a tie, when the rounded quotient was computed in f32); NaN only where both
 * are NaN. No tolerance beyond that: a wrong rounding mode, a lost saturation or an
 * element written where no slot maps fails. */
void kp_conf_check_grid_at(const char *what, const double *got, const double *lo, const double *hi, int64_t n,
                           int ndim, const int64_t *shape, const char *dims, const char *file, int line);
#define kp_conf_check_grid(what, out, lo, hi, dims)                                                          \
    kp_conf_check_grid_at((what), (out)->host, (lo), (hi), (out)->numel, (out)->t.ndim, (out)->t.shape, (dims), \
                          __FILE__, __LINE__)

/* Fails unless two int arrays are equal, printing the first difference. */
void kp_conf_check_ints_at(const char *what, const double *got, const double *ref, int64_t n, const char *file,
                           int line);
#define kp_conf_check_ints(what, got, ref, n) kp_conf_check_ints_at((what), (got), (ref), (n), __FILE__, __LINE__)

/* The backends that may decline W8A8 (grouped GEMM, MoE layer) in this process, for
 * kp_test_case_runs: the GPU ones ("opencl,cuda,hip") when KPORT_GPU_KERNELS forces
 * generation 1 on grouped_gemm ("gen1", "grouped_gemm=gen1": it has no W8A8 kernel),
 * else none (NULL). */
const char *kp_conf_w8a8_may_decline(void);

/* Runs body on opencl with the AMD wave-tile layout (kernels/common/kp_wave_tile.h:
 * 64-lane waves of 32 rows) emulated on PoCL: KPORT_OPENCL_TEST_DEFINES =
 * -DKP_WT_EMULATE_MFMA16 (the kernel's code for the native MFMA 16x16x16 layout, all but
 * the instruction) and KPORT_GPU_KERNELS = kernels (the op forced onto the generation
 * under test, e.g. "grouped_gemm=gen2"). Then unsets the defines and restores
 * KPORT_GPU_KERNELS as it was. */
void kp_conf_run_mfma16_layout(const char *kernels, void (*body)(kp_device *d));

#endif
