/* The fused training step of the makemore BN-MLP, in plain C.
 *
 * Model: Embedding C (V, D) -> concat T vectors (B, T*D) -> L x [Linear W_l (I_l, H_l), no bias ->
 * BatchNorm (gamma_l, beta_l) -> tanh] -> Linear Wout (H_{L-1}, V) + bout -> softmax cross-entropy.
 *
 * One call of fb_step_<real> runs forward, backward, the SGD update and the running-statistics
 * update for one minibatch; fb_train_<real> runs many steps, drawing the minibatch rows with a
 * seeded PCG32 generator, without coming back to Python. The arithmetic is that of fastbn.ops (the
 * same closed forms, the same order of updates); tanh and exp are computed by vectorizable
 * approximations (fb_tanhf within 6 ulp, fb_tanh_f64 within 2, fb_expf within 4 ulp, fb_exp_f64
 * within 2, of exact, subnormals, zeros and infinities included) instead of libm calls;
 * fastbn.ops uses the same tanh. Sums may be ordered differently (blocked partial sums), so
 * results agree with fastbn.ops to rounding, not bit for bit.
 *
 * Layouts chosen for speed at small B (measured with OpenBLAS, B = 32, V = 27, H = 200): the
 * output weight is used as Wout^T (V, H), copied in and out once per call; logits are (V, B),
 * so the softmax runs across the batch; the output layer's GEMMs go in panels of 32 examples.
 *
 * Dimension letters: B batch, T context, D embedding width, V vocabulary (= classes),
 * L hidden layers, I_l / H_l fan_in / width of hidden layer l.
 *
 * Nothing here checks its input: fastbn/fused.py validates shapes, dtypes, contiguity and index
 * ranges and owns every buffer (the data X, Y and the rows are copies private to the call, checked
 * after they were copied; csrc/_kernels.pyx checks the sizes it passes, with the GIL held). No
 * allocation happens in a step. A net is used by one call at a time (fastbn/fused.py locks it).
 */
#ifndef FASTBN_FUSED_H
#define FASTBN_FUSED_H

#include <stdint.h>

#define FB_MAX_LAYERS 16

typedef void (*fb_sgemm_t)(char *ta, char *tb, int *m, int *n, int *k, float *alpha, float *a,
                           int *lda, float *b, int *ldb, float *beta, float *c, int *ldc);
typedef void (*fb_dgemm_t)(char *ta, char *tb, int *m, int *n, int *k, double *alpha, double *a,
                           int *lda, double *b, int *ldb, double *beta, double *c, int *ldc);

/* Every pointer is to C-contiguous memory of the net's dtype (float or double), except the
 * accumulators, which are double. Shapes in the comments. */
typedef struct {
    int B, T, D, V, L;
    int H[FB_MAX_LAYERS];
    double momentum, eps;
    fb_sgemm_t sgemm;
    fb_dgemm_t dgemm;
    /* parameters and gradients */
    void *C, *dC;                                   /* (V, D) */
    void *W[FB_MAX_LAYERS], *dW[FB_MAX_LAYERS];     /* (I_l, H_l) */
    void *gamma[FB_MAX_LAYERS], *dgamma[FB_MAX_LAYERS];   /* (H_l,) */
    void *beta[FB_MAX_LAYERS], *dbeta[FB_MAX_LAYERS];     /* (H_l,) */
    void *rmean[FB_MAX_LAYERS], *rvar[FB_MAX_LAYERS];     /* (H_l,) running statistics */
    void *Wout, *dWout;                             /* (H_{L-1}, V) */
    void *bout, *dbout;                             /* (V,) */
    /* Wout^T and its gradient (V, H_{L-1}): inside a call the step works on this copy, whose
     * three GEMMs run faster than those with the (H, V) layout (V = 27 is a poor width for
     * the BLAS kernels). Every call copies Wout in at its start; a call that applied steps
     * copies Wout and dWout out at its end (fb_loss and a step refused for a non-finite loss
     * change neither) */
    void *WoutT, *dWoutT;
    /* workspaces */
    void *x0;                                       /* (B, T*D) the concatenated embeddings */
    void *hpre[FB_MAX_LAYERS];                      /* (B, H_l) pre-activation, then its grad */
    void *xhat[FB_MAX_LAYERS];                      /* (B, H_l) normalized */
    void *h[FB_MAX_LAYERS];                         /* (B, H_l) tanh output */
    void *mean[FB_MAX_LAYERS], *invstd[FB_MAX_LAYERS], *var[FB_MAX_LAYERS];   /* (H_l,) */
    void *logits;                           /* (V, B) logits^T, softmax^T, then dlogits^T */
    void *dh;                                       /* (B, max(T*D, H_l)) gradient carried down */
    double *acc1, *acc2;                            /* (max H_l,) double accumulators */
    void *kfac;                 /* (max H_l,) gamma invstd / B, batch norm's backward factor */
    int64_t *rows;                      /* (2, B) minibatch rows: this step's and the next's */
    int64_t *ctx, *tgt;                             /* (B, T), (B,): X[rows], Y[rows] */
    int table;                  /* first layer through the table E_t = C @ W_0[t] (large B) */
    void *tab;                                      /* (T, V, H_0) E_t, then S_t in backward */
} fb_net;

/* PCG32 (O'Neill), the minibatch sampler: state and stream increment in two uint64. */
uint32_t fb_pcg32(uint64_t *state);
void fb_pcg32_seed(uint64_t *state, uint64_t seed);
/* B rows drawn uniformly (unbiased, Lemire's method) from [0, n) */
void fb_draw_rows(uint64_t *state, int64_t n, int64_t B, int64_t *rows);

/* One step on rows (B,) of X (N, T) / Y (N,): returns the loss before the update. A non-finite
 * loss returns before backward, leaving parameters and buffers untouched. */
double fb_step_f32(fb_net *net, const int64_t *X, const int64_t *Y, const int64_t *rows, float lr);
double fb_step_f64(fb_net *net, const int64_t *X, const int64_t *Y, const int64_t *rows,
                   double lr);
/* Forward only, eval mode (running statistics) or training mode, on rows; returns the loss. */
double fb_loss_f32(fb_net *net, const int64_t *X, const int64_t *Y, const int64_t *rows,
                   int training);
double fb_loss_f64(fb_net *net, const int64_t *X, const int64_t *Y, const int64_t *rows,
                   int training);

/* steps steps with minibatches drawn from [0, n); losses[s] receives step s's loss.
 * Returns the number of steps done: steps, or the index of the first non-finite loss (that
 * step is not applied). */
int64_t fb_train_f32(fb_net *net, const int64_t *X, const int64_t *Y, int64_t n, int64_t steps,
                     float lr, uint64_t *rng, double *losses);
int64_t fb_train_f64(fb_net *net, const int64_t *X, const int64_t *Y, int64_t n, int64_t steps,
                     double lr, uint64_t *rng, double *losses);

/* vectorizable tanh and exp (float32, float64), exposed for fastbn.ops and the tests */
void fb_tanh_f32_array(const float *x, float *out, int64_t n);
void fb_tanh_f64_array(const double *x, double *out, int64_t n);
void fb_exp_f32_array(const float *x, float *out, int64_t n);
void fb_exp_f64_array(const double *x, double *out, int64_t n);

#endif
