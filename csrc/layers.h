/* The per-layer path's elementwise and batch-norm loops in plain C (csrc/layers.c), for
 * csrc/_kernels.pyx: each compiled per CPU (clones.h, FB_CLONES) with no FMA (FB_EXACT), so the
 * numbers are those of the plain loops on every CPU. The arithmetic, operation for operation, is
 * the one _kernels.pyx documents for each kernel (what is rounded to the dtype, what is carried
 * in double); nothing is checked here (_kernels.pyx has, with the GIL held).
 *
 * Dimension letters: B batch (rows), D features, N elements of a flattened array. */
#ifndef FASTBN_LAYERS_H
#define FASTBN_LAYERS_H

#include <stdint.h>

#define FB_LAYER_DECLS(REAL, SFX)                                                               \
    void fb_tanh_backward_##SFX(const REAL *dout, const REAL *t, REAL *dx, int64_t n);          \
    int fb_layer_sgd_##SFX(REAL *p, const REAL *g, REAL lr, int64_t n);                         \
    int fb_all_finite_##SFX(const REAL *x, int64_t n);                                          \
    int fb_layer_running_##SFX(REAL *r, const REAL *batch, REAL keep, REAL take, int64_t n);    \
    void fb_bn_forward_##SFX(const REAL *x, const REAL *gamma, const REAL *beta, double eps,    \
                             int unbiased, REAL *out, REAL *xhat, REAL *mean, REAL *invstd,     \
                             REAL *var_unbiased, double *acc, int64_t B, int64_t D);            \
    void fb_bn_backward_##SFX(const REAL *dout, const REAL *xhat, const REAL *gamma,            \
                              const REAL *invstd, int unbiased, REAL *dx, REAL *dgamma,         \
                              REAL *dbeta, double *sb, int64_t B, int64_t D);                   \
    void fb_bn_eval_forward_##SFX(const REAL *x, const REAL *gamma, const REAL *beta,           \
                                  const REAL *mean, const REAL *invstd, REAL *out, REAL *xhat,  \
                                  int64_t B, int64_t D);                                        \
    void fb_bn_eval_backward_##SFX(const REAL *dout, const REAL *xhat, const REAL *gamma,       \
                                   const REAL *invstd, REAL *dx, REAL *dgamma, REAL *dbeta,     \
                                   double *sb, int64_t B, int64_t D);

FB_LAYER_DECLS(float, f32)
FB_LAYER_DECLS(double, f64)
#undef FB_LAYER_DECLS

#endif
