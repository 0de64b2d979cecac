/*
 * tests/ref/ref_prec.h — the error model the references compute beside their results.
 *
 * A float64 reference also returns, per output element, `err`: one standard deviation of
 * the error that a straightforward implementation in the storage dtype makes there
 * (inputs exact; products exact or rounded to `unit`; f32 sums; f32 exp). The
 * conformance check (tests/kp_conformance.c) allows each element
 *     |got - ref| <= 2 * (u_out * |ref| + 3 * err) + floor
 * so a per-element bound follows the element's own conditioning instead of one norm
 * over the whole output. Why a model rather than a second, naive run: one naive run's
 * error at one element is a single random draw (often near 0), useless as a bound;
 * its expected size is what FlashAttention's "2x the naive error" rule means.
 */
#ifndef KPORT_TESTS_REF_PREC_H
#define KPORT_TESTS_REF_PREC_H

#define REF_U32 0x1p-24   /* f32 unit roundoff: products, sums and scalings in f32 */
#define REF_U_EXP 0x1p-21 /* f32 exp/exp2 relative error allowed (PTX ex2.approx: 2^-22.5) */

/* How intermediates may be rounded: to `unit` (relative), flushing below `tiny`. */
typedef struct ref_prec {
    double unit; /* unit roundoff of the storage dtype intermediates are rounded to */
    double tiny; /* half the smallest subnormal of that dtype: absolute error of an underflow */
} ref_prec;

#endif
