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
 * The step is a sequence of phases (fused_impl.h), each a static inline function of the net:
 * the first layer (embedding and W_0, or the table), the hidden linear layers, batch norm and
 * tanh, the output layer, softmax and the loss, each forward and backward, the running
 * statistics and SGD. With net->profile set, the step adds each phase's time to
 * net->phase_ns (FB_PHASES below; fastbn.fused.FusedTrainer.time_phases, bench/phases.py).
 *
 * Dimension letters: B batch, T context, D embedding width, V vocabulary (= classes),
 * L hidden layers, I_l / H_l fan_in / width of hidden layer l.
 *
 * Nothing here checks its input: fastbn/fused.py validates shapes, dtypes, contiguity and index
 * ranges and owns every buffer (the data X, Y and the rows are copies private to the call, checked
 * after they were copied); csrc/_kernels.pyx checks, with the GIL held, the sizes it passes and
 * every array of the net against FB_NET_ARRAYS before the net points at it. No allocation
 * happens in a step. A net is used by one call at a time (fastbn/fused.py locks it).
 */
#ifndef FASTBN_FUSED_H
#define FASTBN_FUSED_H

#include <stdint.h>

#define FB_MAX_LAYERS 16

typedef void (*fb_sgemm_t)(char *ta, char *tb, int *m, int *n, int *k, float *alpha, float *a,
                           int *lda, float *b, int *ldb, float *beta, float *c, int *ldc);
typedef void (*fb_dgemm_t)(char *ta, char *tb, int *m, int *n, int *k, double *alpha, double *a,
                           int *lda, double *b, int *ldb, double *beta, double *c, int *ldc);

/* ---------------------------------------------------------------------------------------------
 * The net's arrays, written once: X(name, dtype, count, owner, d0, d1, d2) for each.
 *   dtype   REAL: the net's floating type (float or double); F64: double; I64: int64_t
 *   count   ONE, or LAYER: one array per hidden layer l = 0..L-1
 *   owner   MODEL: the model's parameters, gradients and running statistics (fastbn/fused.py
 *           checks them); WORK: a workspace (fastbn/fused.py allocates it from this list)
 *   d0..d2  the C-contiguous shape in the letters of fb_dim (below), NONE past its rank
 * fb_net's pointer fields are declared from it (below); fused.c turns it into fb_net_fields,
 * the list as data, from which csrc/_kernels.pyx fills a net, checking the dtype, shape and
 * layout of every array, and fastbn/fused.py allocates the workspaces. */
#define FB_NET_ARRAYS(X)                                                                        \
    /* parameters and gradients */                                                              \
    X(C,      REAL, ONE,   MODEL, V,  D,     NONE)                                              \
    X(dC,     REAL, ONE,   MODEL, V,  D,     NONE)                                              \
    X(W,      REAL, LAYER, MODEL, I,  H,     NONE)                                              \
    X(dW,     REAL, LAYER, MODEL, I,  H,     NONE)                                              \
    X(gamma,  REAL, LAYER, MODEL, H,  NONE,  NONE)                                              \
    X(dgamma, REAL, LAYER, MODEL, H,  NONE,  NONE)                                              \
    X(beta,   REAL, LAYER, MODEL, H,  NONE,  NONE)                                              \
    X(dbeta,  REAL, LAYER, MODEL, H,  NONE,  NONE)                                              \
    X(rmean,  REAL, LAYER, MODEL, H,  NONE,  NONE)      /* running statistics */                \
    X(rvar,   REAL, LAYER, MODEL, H,  NONE,  NONE)                                              \
    X(Wout,   REAL, ONE,   MODEL, HL, V,     NONE)                                              \
    X(dWout,  REAL, ONE,   MODEL, HL, V,     NONE)                                              \
    X(bout,   REAL, ONE,   MODEL, V,  NONE,  NONE)                                              \
    X(dbout,  REAL, ONE,   MODEL, V,  NONE,  NONE)                                              \
    /* Wout^T and its gradient: inside a call the step works on this copy, whose three GEMMs */ \
    /* run faster than those with the (H, V) layout (V = 27 is a poor width for the BLAS */     \
    /* kernels). Every call copies Wout in at its start; a call that applied steps copies */    \
    /* Wout and dWout out at its end (fb_loss and a step refused for a non-finite loss */       \
    /* change neither) */                                                                       \
    X(WoutT,  REAL, ONE,   WORK,  V,  HL,    NONE)                                              \
    X(dWoutT, REAL, ONE,   WORK,  V,  HL,    NONE)                                              \
    /* workspaces */                                                                            \
    X(x0,     REAL, ONE,   WORK,  B,  TD,    NONE)      /* the concatenated embeddings */       \
    X(hpre,   REAL, LAYER, WORK,  B,  H,     NONE)      /* pre-activation, then its grad */     \
    X(xhat,   REAL, LAYER, WORK,  B,  H,     NONE)      /* normalized */                        \
    X(h,      REAL, LAYER, WORK,  B,  H,     NONE)      /* tanh output */                       \
    X(mean,   REAL, LAYER, WORK,  H,  NONE,  NONE)      /* batch statistics */                  \
    X(invstd, REAL, LAYER, WORK,  H,  NONE,  NONE)                                              \
    X(var,    REAL, LAYER, WORK,  H,  NONE,  NONE)                                              \
    X(logits, REAL, ONE,   WORK,  V,  B,     NONE)      /* logits^T, softmax^T, dlogits^T */    \
    X(dh,     REAL, ONE,   WORK,  B,  WIDE,  NONE)      /* the gradient carried down */         \
    X(acc1,   F64,  ONE,   WORK,  HMAX, NONE, NONE)     /* double accumulators */               \
    X(acc2,   F64,  ONE,   WORK,  HMAX, NONE, NONE)                                             \
    X(kfac,   REAL, ONE,   WORK,  HMAX, NONE, NONE)     /* gamma invstd / B, BN backward */     \
    X(gfac,   REAL, ONE,   WORK,  HMAX, NONE, NONE)     /* (B / n) dgamma; forward: flags */    \
    X(rows,   I64,  ONE,   WORK,  2,  B,     NONE)      /* this step's rows and the next's */   \
    X(ctx,    I64,  ONE,   WORK,  B,  T,     NONE)      /* X[rows] */                           \
    X(tgt,    I64,  ONE,   WORK,  B,  NONE,  NONE)      /* Y[rows] */                           \
    X(tab,    REAL, ONE,   WORK,  T,  V,     H0)        /* E_t, then S_t in backward */

/* The dimension letters of the shapes above (fb_net_dim gives their values for a net). */
typedef enum {
    FB_DIM_NONE,    /* past an array's rank */
    FB_DIM_B, FB_DIM_T, FB_DIM_D, FB_DIM_V,
    FB_DIM_TD,      /* T * D, the width of x0 */
    FB_DIM_H,       /* H_l, the width of layer l */
    FB_DIM_I,       /* I_l, its fan-in: T * D for l = 0, else H_{l-1} */
    FB_DIM_HL,      /* H_{L-1}, the last hidden width */
    FB_DIM_H0,      /* H_0 */
    FB_DIM_HMAX,    /* max_l H_l */
    FB_DIM_WIDE,    /* max(T * D, max_l H_l) */
    FB_DIM_2,       /* 2 */
} fb_dim;

typedef enum { FB_DTYPE_REAL, FB_DTYPE_F64, FB_DTYPE_I64 } fb_dtype;

/* ---------------------------------------------------------------------------------------------
 * The phases of a step, for the per-phase timing (fb_net.profile): X(ID, name). */
#define FB_PHASES(X)                                                                            \
    X(TRANSPOSE,             transpose)               /* Wout in and out, once per call */      \
    X(BATCH,                 batch)                   /* rows drawn, X[rows] and Y[rows] */     \
    X(FIRST_LAYER_FORWARD,   first_layer_forward)     /* embedding and W_0, or the table */     \
    X(LINEAR_FORWARD,        linear_forward)          /* W_l, l >= 1 */                         \
    X(BN_ACT_FORWARD,        bn_act_forward)          /* batch norm and tanh */                 \
    X(OUTPUT_FORWARD,        output_forward)          /* the logits */                          \
    X(SOFTMAX_LOSS,          softmax_loss)            /* softmax and the loss */                \
    X(RUNNING_STATS,         running_stats)                                                     \
    X(SOFTMAX_LOSS_BACKWARD, softmax_loss_backward)   /* dlogits */                             \
    X(OUTPUT_BACKWARD,       output_backward)                                                   \
    X(BN_ACT_BACKWARD,       bn_act_backward)                                                   \
    X(LINEAR_BACKWARD,       linear_backward)                                                   \
    X(FIRST_LAYER_BACKWARD,  first_layer_backward)                                              \
    X(SGD,                   sgd)

#define FB_PHASE_ENUM(id, name) FB_PHASE_##id,
typedef enum { FB_PHASES(FB_PHASE_ENUM) FB_NPHASES } fb_phase;
#undef FB_PHASE_ENUM

/* the pointer fields: a REAL array is a void * (float or double), one per layer is an array of
 * FB_MAX_LAYERS of them */
typedef void fb_ptr_REAL;
typedef double fb_ptr_F64;
typedef int64_t fb_ptr_I64;
#define FB_COUNT_ONE
#define FB_COUNT_LAYER [FB_MAX_LAYERS]
#define FB_NET_FIELD(name, dtype, count, owner, d0, d1, d2) fb_ptr_##dtype *name FB_COUNT_##count;

/* What stopped the last step (fb_net.fault), in the order a step computes them: the first
 * non-finite value among a hidden layer's pre-activations (the batch-norm output, the input of
 * the tanh; fault_layer says which layer), the logits, the loss rounded to REAL (these three:
 * the step is not applied), or, once the step is applied, a parameter or a running statistic
 * (every one is written by the SGD and running-statistics passes, which raise the flag). */
typedef enum {
    FB_FAULT_NONE, FB_FAULT_PREACT, FB_FAULT_LOGITS, FB_FAULT_LOSS, FB_FAULT_UPDATE
} fb_fault;

/* x is finite: x - x is 0 for a finite x and NaN for an infinity or a NaN (no -ffinite-math) */
#define FB_FINITE(x) ((x) - (x) == 0)

typedef struct {
    int B, T, D, V, L;
    int H[FB_MAX_LAYERS];
    double momentum, eps;
    int unbiased;               /* batch norm normalizes with the variance / (B - 1), not / B */
    int table;                  /* first layer through the table E_t = C @ W_0[t] (large B) */
    fb_sgemm_t sgemm;
    fb_dgemm_t dgemm;
    int profile;                /* 1: time the phases into phase_ns (a few clock reads a step) */
    uint64_t phase_ns[FB_NPHASES];
    int fault;                  /* fb_fault of the last step (fb_step, fb_train, fb_loss) */
    int fault_layer;            /* the hidden layer of FB_FAULT_PREACT */
    FB_NET_ARRAYS(FB_NET_FIELD)
} fb_net;

#undef FB_NET_FIELD

/* fb_net_fields[i] describes the i-th array of FB_NET_ARRAYS: its pointer (or FB_MAX_LAYERS
 * pointers) at offset in fb_net, the shape from fb_net_dim(net, dims[k], l) for k < rank. */
typedef struct {
    const char *name;
    fb_dtype dtype;
    int per_layer, model, rank;
    fb_dim dims[3];
    size_t offset;
} fb_field;

extern const fb_field fb_net_fields[];
extern const int fb_net_nfields;
extern const char *const fb_phase_names[];
/* The size of dimension dim for layer l of a net whose B, T, D, V, L and H are set. */
int64_t fb_net_dim(const fb_net *net, fb_dim dim, int l);

/* PCG32 (O'Neill), the minibatch sampler: state and stream increment in two uint64. */
uint32_t fb_pcg32(uint64_t *state);
void fb_pcg32_seed(uint64_t *state, uint64_t seed);
/* B rows drawn uniformly (unbiased, Lemire's method) from [0, n) */
void fb_draw_rows(uint64_t *state, int64_t n, int64_t B, int64_t *rows);

/* One step on rows (B,) of X (N, T) / Y (N,): returns the loss before the update and sets
 * net->fault. A non-finite pre-activation, logit or loss returns before backward, leaving
 * parameters and buffers untouched; FB_FAULT_UPDATE: the step was applied, and left a parameter
 * or a running statistic non-finite. */
double fb_step_f32(fb_net *net, const int64_t *X, const int64_t *Y, const int64_t *rows, float lr);
double fb_step_f64(fb_net *net, const int64_t *X, const int64_t *Y, const int64_t *rows,
                   double lr);
/* Forward only, eval mode (running statistics) or training mode, on rows; returns the loss. */
double fb_loss_f32(fb_net *net, const int64_t *X, const int64_t *Y, const int64_t *rows,
                   int training);
double fb_loss_f64(fb_net *net, const int64_t *X, const int64_t *Y, const int64_t *rows,
                   int training);

/* steps steps with minibatches drawn from [0, n); losses[s] receives step s's loss.
 * Returns steps, or the index s of the first step that diverged (net->fault says how: not
 * applied, or, FB_FAULT_UPDATE, applied; the rows of step s are drawn, no later ones). */
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
