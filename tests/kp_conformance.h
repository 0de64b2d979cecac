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
/* Same, from given values (rounded to dtype). */
kp_conf_tensor kp_conf_from(kp_device *d, const char *name, kp_dtype dt, int ndim, const int64_t *shape,
                            const double *values);
/* An output: poisoned with 0xFF bytes (NaN in every float dtype, -1 in i32). */
kp_conf_tensor kp_conf_output(kp_device *d, const char *name, kp_dtype dt, int ndim, const int64_t *shape);
/* Reads the device values back into host (after checking the guards). */
void kp_conf_download(kp_conf_tensor *c);
void kp_conf_free(kp_conf_tensor *c);

/* Tolerance on relative L2 error for a dtype: f32 1e-5, f16 2e-3, bf16 1.6e-2. */
double kp_conf_tolerance(kp_dtype dt);
/* Fails unless got matches ref: rel L2 <= tol, no NaN, and (when max_abs_tol > 0)
 * max |got - ref| <= max_abs_tol. Prints both metrics on failure, with the worst index. */
void kp_conf_check_at(const char *what, const double *got, const double *ref, int64_t n, double tol,
                      double max_abs_tol, const char *file, int line);
#define kp_conf_check(what, got, ref, n, tol, abs_tol) \
    kp_conf_check_at((what), (got), (ref), (n), (tol), (abs_tol), __FILE__, __LINE__)
/* Fails unless two int arrays are equal, printing the first difference. */
void kp_conf_check_ints_at(const char *what, const double *got, const double *ref, int64_t n, const char *file,
                           int line);
#define kp_conf_check_ints(what, got, ref, n) kp_conf_check_ints_at((what), (got), (ref), (n), __FILE__, __LINE__)

#endif
