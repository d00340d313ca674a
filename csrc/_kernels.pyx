# cython: language_level=3
"""Hand-derived forward and backward kernels of fastbn.

Dimension letters used in every shape comment below (as in csrc/fused.h, where the classes are
the vocabulary, V):
    B  batch size (rows)            T  context length (characters per example)
    D  feature / embedding width    V  vocabulary size (rows of an embedding table)
    I  fan_in of a Linear           O  fan_out of a Linear
    C  number of classes (logits)   N  number of elements of a flattened array

Contract with the Python layer (fastbn/ops.py): every array handed to a kernel is C-contiguous and
aligned, of one floating dtype per call (float32 or float64, the fused type ``floating``), and every
index is in range, in an array private to the call (checked after it was copied). The kernels run
with the GIL released and with bounds and wraparound checks off; they check no index. What they do
check, with the GIL held, once they hold the buffers (whose shapes no other thread can change from
then on), is that the shapes of their arguments agree (``_shapes``): the Python layer checked them
too, but another thread may reshape a caller's array in place in between. Outputs are written
(=), never accumulated, except the embedding backward, a scatter-add into a buffer the caller has
zeroed. Reductions (sums over the batch) accumulate in double whatever the dtype, in one workspace
per call (one allocation, freed on every path).

Each op's arithmetic is a ``cdef`` loop over pointers and sizes (``_<op>_forward``,
``_<op>_backward``, noexcept nogil; batch norm's and tanh's backward hand theirs to C, csrc/
layers.c, compiled per CPU with no FMA), called by two entry points: the kernel ``<op>_forward`` /
``<op>_backward`` over typed memoryviews (the general path of fastbn/ops.py calls these, after
its checks and conversions), and ``<op>_forward_fast`` / ``<op>_backward_fast`` in _opcalls.pxi,
ops.py's common case in one call (checks, outputs, loop and cache in C; None for anything else).
The elementwise nonlinearities' entries are generated per dtype from one row each of the
template _elementwise.pxi.tp (setup.py expands it with Cython.Tempita), and ops.py's general path
of their forwards calls the same entry once it has normalized the arguments.
"""
from cython cimport floating
from libc.math cimport HUGE_VAL, log, sqrt
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

import numpy as np

from fastbn._blas import load as _load_blas


cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

cdef extern from "fused.h" nogil:
    # vectorizable, compiled for several CPUs and picked at load time (csrc/fused.c)
    void fb_tanh_f32_array(const float *x, float *out, int64_t n)
    void fb_tanh_f64_array(const double *x, double *out, int64_t n)
    void fb_exp_f32_array(const float *x, float *out, int64_t n)
    void fb_exp_f64_array(const double *x, double *out, int64_t n)

cdef extern from "layers.h" nogil:
    # the per-layer path's loops (csrc/layers.c): compiled per CPU, no FMA (the same numbers on
    # every CPU), each following the arithmetic of its kernel below
    void fb_tanh_backward_f32(const float *dout, const float *t, float *dx, int64_t n)
    void fb_tanh_backward_f64(const double *dout, const double *t, double *dx, int64_t n)
    int fb_layer_sgd_f32(float *p, const float *g, float lr, int64_t n)
    int fb_layer_sgd_f64(double *p, const double *g, double lr, int64_t n)
    int fb_all_finite_f32(const float *x, int64_t n)
    int fb_all_finite_f64(const double *x, int64_t n)
    int fb_layer_running_f32(float *r, const float *batch, float keep, float take,
                              int64_t n)
    int fb_layer_running_f64(double *r, const double *batch, double keep, double take,
                              int64_t n)
    void fb_bn_forward_f32(const float *x, const float *gamma, const float *beta, double eps,
                           int unbiased, float *out, float *xhat, float *mean, float *invstd,
                           float *var_unbiased, double *acc, int64_t B, int64_t D)
    void fb_bn_forward_f64(const double *x, const double *gamma, const double *beta,
                           double eps, int unbiased, double *out, double *xhat, double *mean,
                           double *invstd, double *var_unbiased, double *acc, int64_t B,
                           int64_t D)
    void fb_bn_backward_f32(const float *dout, const float *xhat, const float *gamma,
                            const float *invstd, int unbiased, float *dx, float *dgamma,
                            float *dbeta, double *sb, int64_t B, int64_t D)
    void fb_bn_backward_f64(const double *dout, const double *xhat, const double *gamma,
                            const double *invstd, int unbiased, double *dx, double *dgamma,
                            double *dbeta, double *sb, int64_t B, int64_t D)
    void fb_bn_eval_forward_f32(const float *x, const float *gamma, const float *beta,
                                const float *mean, const float *invstd, float *out,
                                float *xhat, int64_t B, int64_t D)
    void fb_bn_eval_forward_f64(const double *x, const double *gamma, const double *beta,
                                const double *mean, const double *invstd, double *out,
                                double *xhat, int64_t B, int64_t D)
    void fb_bn_eval_backward_f32(const float *dout, const float *xhat, const float *gamma,
                                 const float *invstd, float *dx, float *dgamma, float *dbeta,
                                 double *sb, int64_t B, int64_t D)
    void fb_bn_eval_backward_f64(const double *dout, const double *xhat, const double *gamma,
                                 const double *invstd, double *dx, double *dgamma,
                                 double *dbeta, double *sb, int64_t B, int64_t D)

cdef extern from *:
    """
    #ifdef FB_SANITIZE
    #define FB_SANITIZED 1
    #else
    #define FB_SANITIZED 0
    #endif
    """
    int FB_SANITIZED

# True in a FASTBN_SANITIZE=1 build (AddressSanitizer + UBSan): fastbn.nn then allocates arrays
# to their exact size, so that ASan sees an overrun of even a few bytes
SANITIZED = bool(FB_SANITIZED)


# ----------------------------------------------------------------------------------------------
# helpers

cdef inline int _shapes(bint ok, str kernel, str want) except -1:
    """Raise ValueError unless the shapes of a kernel's arguments agree (``ok``)."""
    if not ok:
        raise ValueError(f"{kernel}: the arguments' shapes disagree (expected {want}); was an "
                         "array reshaped in place by another thread during the call?")
    return 0


cdef inline double* _zeros(Py_ssize_t n) except NULL:
    """A zeroed double workspace of n (>= 1) entries; the caller frees it (try/finally): a kernel
    needing several takes them from one, so a failed allocation leaves nothing to free."""
    cdef double* p = NULL
    cdef Py_ssize_t i
    if n <= <Py_ssize_t>(PY_SSIZE_T_MAX // sizeof(double)):
        p = <double*>malloc((n if n > 0 else 1) * sizeof(double))
    if p == NULL:
        raise MemoryError()
    for i in range(n):
        p[i] = 0.0
    return p


# BLAS: OpenBLAS of the scipy-openblas32 wheel, opened by fastbn/_blas.py when this module is
# imported (the import fails, with what to install, if it cannot be); Fortran calling convention
ctypedef void (*_sgemm_t)(char*, char*, int*, int*, int*, float*, float*, int*, float*, int*,
                          float*, float*, int*) noexcept nogil
ctypedef void (*_dgemm_t)(char*, char*, int*, int*, int*, double*, double*, int*, double*, int*,
                          double*, double*, int*) noexcept nogil
_BLAS_LIBRARY, _sgemm_address, _dgemm_address = _load_blas()   # the library stays referenced
cdef _sgemm_t sgemm = <_sgemm_t><size_t>_sgemm_address
cdef _dgemm_t dgemm = <_dgemm_t><size_t>_dgemm_address


cdef inline void _gemm(bint trans_a, bint trans_b, int M, int N, int K, floating alpha,
                       const floating* A, const floating* B, floating beta,
                       floating* C) noexcept nogil:
    """Row-major C (M, N) = alpha * op(A) @ op(B) + beta * C through BLAS.

    op(A) is (M, K): A is stored (M, K), or (K, M) when trans_a. op(B) is (K, N): B is stored
    (K, N), or (N, K) when trans_b. BLAS is column-major, and a row-major matrix read column-major
    is its transpose, so we ask BLAS for C^T = op(B)^T @ op(A)^T: operands swapped, flags kept.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int lda = M if trans_a else K
    cdef int ldb = K if trans_b else N
    cdef int ldc = N
    if floating is float:
        sgemm(&tb, &ta, &N, &M, &K, &alpha, <float*>B, &ldb, <float*>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &N, &M, &K, &alpha, <double*>B, &ldb, <double*>A, &lda, &beta, C, &ldc)


cdef inline void _exp_array(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    """out (n,) = exp(x) (n,), in place too (out == x): the fused step's vectorized exp (csrc/
    fused.c: within 4 ulp in float32, 2 in float64; 0 below -103.97 (float32) and -745.13
    (float64), +inf above 88.72 / 709.78, NaN propagates), some 5x faster than libm's per
    element."""
    if floating is float:
        fb_exp_f32_array(x, out, n)
    else:
        fb_exp_f64_array(x, out, n)


# ----------------------------------------------------------------------------------------------
# index arrays: a private copy, checked

cdef extern from *:
    """
    /* dst = src (n,), in one pass with the check of what was copied: 1 when every value of dst
     * is in [0, bound), 0 < bound < 2^63. What is checked is dst, private to the caller
     * (restrict), whatever another thread writes into src meanwhile. v is in range when the
     * sign bits of v - bound (v < bound) and of ~v (v >= 0) are both set: and-ed over all
     * values, in 64-bit integer operations every x86-64 vectorizes (no 64-bit compare). */
    static int fb_copy_ids(const int64_t *src, int64_t *restrict dst, int64_t n,
                           uint64_t bound) {
        uint64_t all = ~(uint64_t)0;
        for (int64_t i = 0; i < n; i++) {
            dst[i] = src[i];
            const uint64_t v = (uint64_t)dst[i];
            all &= (v - bound) & ~v;
        }
        return (int)(all >> 63);
    }
    """
    int fb_copy_ids(const int64_t *src, int64_t *dst, int64_t n, uint64_t bound) nogil


def copy_ids(const int64_t[::1] src, int64_t[::1] dst, int64_t bound):
    """dst (N,) = src (N,); True when every value copied is in [0, bound) (fb_copy_ids).

    fastbn._arrays.index_array's copy and check in one pass: the values checked are those of dst,
    a copy private to the caller, so another thread writing into src meanwhile can change what
    is copied, never what was checked.
    """
    cdef int ok
    _shapes(dst.shape[0] == src.shape[0], "copy_ids", "src (N,), dst (N,)")
    if src.shape[0] == 0:
        return True
    with nogil:
        ok = fb_copy_ids(&src[0], &dst[0], src.shape[0], <uint64_t>bound if bound > 0 else 0)
    return bool(ok) and bound > 0


# ----------------------------------------------------------------------------------------------
# embedding: out[b, t*D:(t+1)*D] = weight[idx[b, t], :]

cdef void _embedding_forward(const floating* weight,   # (V, D)
                             const int64_t* idx,       # (B, T), 0 <= idx < V
                             floating* out,            # (B, T*D)
                             Py_ssize_t B, Py_ssize_t T, Py_ssize_t D) noexcept nogil:
    cdef Py_ssize_t b, t, d
    cdef const floating* row
    cdef floating* dst
    for b in range(B):
        for t in range(T):
            row = weight + idx[b * T + t] * D
            dst = out + (b * T + t) * D
            for d in range(D):
                dst[d] = row[d]


cdef void _embedding_backward(const floating* dout,    # (B, T*D)
                              const int64_t* idx,      # (B, T), 0 <= idx < V
                              floating* dweight,       # (V, D), zeroed by the caller
                              Py_ssize_t B, Py_ssize_t T, Py_ssize_t D) noexcept nogil:
    # forward: out[b, t*D + d] = weight[idx[b, t], d]; every use of a row adds to its gradient:
    # dweight[v, d] = sum over (b, t) with idx[b, t] == v of dout[b, t*D + d]   (scatter-add)
    cdef Py_ssize_t b, t, d
    cdef floating* row
    cdef const floating* src
    for b in range(B):
        for t in range(T):
            row = dweight + idx[b * T + t] * D
            src = dout + (b * T + t) * D
            for d in range(D):
                row[d] += src[d]


def embedding_forward(const floating[:, ::1] weight,   # (V, D)
                      const int64_t[:, ::1] idx,       # (B, T), 0 <= idx < V
                      floating[:, ::1] out):           # (B, T*D)
    cdef Py_ssize_t B = idx.shape[0], T = idx.shape[1], D = weight.shape[1]
    _shapes(out.shape[0] == B and out.shape[1] == T * D, "embedding_forward",
            "weight (V, D), idx (B, T), out (B, T*D)")
    if B == 0 or T == 0 or D == 0:
        return
    with nogil:
        _embedding_forward(&weight[0, 0], &idx[0, 0], &out[0, 0], B, T, D)


def embedding_backward(const floating[:, ::1] dout,    # (B, T*D)
                       const int64_t[:, ::1] idx,      # (B, T)
                       floating[:, ::1] dweight):      # (V, D), zeroed by the caller
    cdef Py_ssize_t B = idx.shape[0], T = idx.shape[1], D = dweight.shape[1]
    _shapes(dout.shape[0] == B and dout.shape[1] == T * D, "embedding_backward",
            "dout (B, T*D), idx (B, T), dweight (V, D)")
    if B == 0 or T == 0 or D == 0:
        return
    with nogil:
        _embedding_backward(&dout[0, 0], &idx[0, 0], &dweight[0, 0], B, T, D)


# ----------------------------------------------------------------------------------------------
# linear: out = x @ w + b, w stored (fan_in, fan_out) as in the lecture

cdef void _linear_forward(const floating* x,      # (B, I)
                          const floating* w,      # (I, O)
                          const floating* bias,   # (O,) or NULL
                          floating* out,          # (B, O)
                          int B, int I, int O) noexcept nogil:
    # B, I, O >= 1 (BLAS needs leading dimensions >= 1)
    cdef Py_ssize_t i, j
    cdef floating beta = 0
    if bias != NULL:
        beta = 1                                   # out starts as the broadcast bias
        for i in range(B):
            for j in range(O):
                out[i * O + j] = bias[j]
    _gemm(False, False, B, O, I, <floating>1, x, w, beta, out)


cdef void _linear_backward(const floating* dout,  # (B, O)
                           const floating* x,     # (B, I)
                           const floating* w,     # (I, O)
                           floating* dx,          # (B, I)
                           floating* dw,          # (I, O)
                           floating* dbias,       # (O,) or NULL
                           double* acc,           # (O,) zeroed workspace (when dbias)
                           int B, int I, int O) noexcept nogil:
    # forward: out[b, o] = sum_i x[b, i] w[i, o] + bias[o]
    # dx = dout @ w^T;  dw = x^T @ dout;  dbias[o] = sum_b dout[b, o]
    cdef Py_ssize_t i, j
    _gemm(False, True, B, I, O, <floating>1, dout, w, <floating>0, dx)
    _gemm(True, False, I, O, B, <floating>1, x, dout, <floating>0, dw)
    if dbias == NULL:
        return
    for i in range(B):
        for j in range(O):
            acc[j] += dout[i * O + j]
    for j in range(O):
        dbias[j] = <floating>acc[j]


def linear_forward(const floating[:, ::1] x,       # (B, I)
                   const floating[:, ::1] w,       # (I, O)
                   const floating[::1] bias,       # (O,) or None
                   floating[:, ::1] out):          # (B, O)
    cdef int B = x.shape[0], I = x.shape[1], O = w.shape[1]
    _shapes(w.shape[0] == I and out.shape[0] == B and out.shape[1] == O
            and (bias is None or bias.shape[0] == O), "linear_forward",
            "x (B, I), w (I, O), bias (O,), out (B, O)")
    if B == 0 or I == 0 or O == 0:     # (BLAS needs leading dimensions >= 1; ops.py handles it)
        raise ValueError("linear_forward: empty dimensions")
    with nogil:
        _linear_forward(&x[0, 0], &w[0, 0], &bias[0] if bias is not None else NULL,
                        &out[0, 0], B, I, O)


def linear_backward(const floating[:, ::1] dout,   # (B, O)
                    const floating[:, ::1] x,      # (B, I)
                    const floating[:, ::1] w,      # (I, O)
                    floating[:, ::1] dx,           # (B, I)
                    floating[:, ::1] dw,           # (I, O)
                    floating[::1] dbias):          # (O,) or None
    cdef int B = x.shape[0], I = x.shape[1], O = w.shape[1]
    cdef double* acc
    _shapes(w.shape[0] == I and dout.shape[0] == B and dout.shape[1] == O
            and dx.shape[0] == B and dx.shape[1] == I and dw.shape[0] == I and dw.shape[1] == O
            and (dbias is None or dbias.shape[0] == O), "linear_backward",
            "dout (B, O), x (B, I), w (I, O), dx (B, I), dw (I, O), dbias (O,)")
    if B == 0 or I == 0 or O == 0:
        raise ValueError("linear_backward: empty dimensions")
    acc = _zeros(O if dbias is not None else 0)
    try:
        with nogil:
            _linear_backward(&dout[0, 0], &x[0, 0], &w[0, 0], &dx[0, 0], &dw[0, 0],
                             &dbias[0] if dbias is not None else NULL, acc, B, I, O)
    finally:
        free(acc)


# ----------------------------------------------------------------------------------------------
# elementwise nonlinearities over flattened arrays (N,)

cdef void _tanh_forward(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    # the fused step's vectorizable tanh (csrc/fused.c: within 6 ulp in float32, 2 in float64);
    # a libm call per element costs ~10x more
    if n == 0:
        return
    if floating is float:
        fb_tanh_f32_array(x, out, n)
    else:
        fb_tanh_f64_array(x, out, n)


cdef void _tanh_backward(const floating* dout, const floating* t, floating* dx,
                         Py_ssize_t n) noexcept nogil:
    # forward: t = tanh(x);  dt/dx = 1 - tanh(x)^2 = 1 - t^2, computed from the saved output:
    # dx = dout * (1 - t^2), with 1 - t^2 and the product in double (csrc/fused.c, vectorized
    # per CPU, no FMA)
    if floating is float:
        fb_tanh_backward_f32(dout, t, dx, n)
    else:
        fb_tanh_backward_f64(dout, t, dx, n)


cdef void _leaky_relu_forward(const floating* x, floating s, floating* out,
                              Py_ssize_t n) noexcept nogil:
    # out = x if x >= 0 else slope * x; NaN falls to the x branch and propagates. ReLU (slope 0)
    # writes 0 rather than 0 * x, which is NaN for x = -inf (torch.relu(-inf) is 0)
    cdef Py_ssize_t i
    cdef floating v
    if s == 0:
        for i in range(n):
            v = x[i]
            out[i] = 0 if v < 0 else v
    else:
        for i in range(n):
            v = x[i]
            out[i] = s * v if v < 0 else v


cdef void _leaky_relu_backward(const floating* dout, const floating* x, floating s,
                               floating* dx, Py_ssize_t n) noexcept nogil:
    # d out / dx = 1 where x > 0, slope elsewhere (0 at x == 0, as torch's threshold_backward);
    # ReLU writes 0 there, not 0 * dout (NaN for an infinite dout), as torch does. Both operands
    # are loaded before the select, so that the compiler may vectorize it (branch-free)
    cdef Py_ssize_t i
    cdef floating d
    if s == 0:
        for i in range(n):
            d = dout[i]
            dx[i] = d if x[i] > 0 else 0
    else:
        for i in range(n):
            d = dout[i]
            dx[i] = d if x[i] > 0 else s * d


def tanh_forward(const floating[::1] x, floating[::1] out):
    _shapes(out.shape[0] == x.shape[0], "tanh_forward", "x (N,), out (N,)")
    if x.shape[0] == 0:
        return
    with nogil:
        _tanh_forward(&x[0], &out[0], x.shape[0])


def tanh_backward(const floating[::1] dout, const floating[::1] t, floating[::1] dx):
    _shapes(dout.shape[0] == t.shape[0] and dx.shape[0] == t.shape[0], "tanh_backward",
            "dout (N,), t (N,), dx (N,)")
    if t.shape[0] == 0:
        return
    with nogil:
        _tanh_backward(&dout[0], &t[0], &dx[0], t.shape[0])


def leaky_relu_forward(const floating[::1] x, double negative_slope, floating[::1] out):
    _shapes(out.shape[0] == x.shape[0], "leaky_relu_forward", "x (N,), out (N,)")
    if x.shape[0] == 0:
        return
    with nogil:
        _leaky_relu_forward(&x[0], <floating>negative_slope, &out[0], x.shape[0])


def leaky_relu_backward(const floating[::1] dout, const floating[::1] x, double negative_slope,
                        floating[::1] dx):
    _shapes(dout.shape[0] == x.shape[0] and dx.shape[0] == x.shape[0], "leaky_relu_backward",
            "dout (N,), x (N,), dx (N,)")
    if x.shape[0] == 0:
        return
    with nogil:
        _leaky_relu_backward(&dout[0], &x[0], <floating>negative_slope, &dx[0], x.shape[0])


# ----------------------------------------------------------------------------------------------
# ELU (Clevert et al. 2015) over flattened arrays (N,): out = x (x > 0), alpha (e^x - 1) (x <= 0)

from libc.math cimport expm1, expm1f


cdef inline floating _expm1(floating x) noexcept nogil:
    if floating is float:
        return expm1f(x)
    else:
        return expm1(x)


cdef void _elu_forward(const floating* x, floating a, floating* out,
                       Py_ssize_t n) noexcept nogil:
    # out = x where x > 0, alpha * (exp(x) - 1) elsewhere, computed as alpha * expm1(x): exp(x) - 1
    # cancels for |x| << 1, where expm1 keeps full relative precision. NaN takes the second
    # branch and propagates; -inf gives -alpha
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = x[i] if x[i] > 0 else a * _expm1(x[i])


cdef void _elu_backward(const floating* dout, const floating* out, floating a, floating* dx,
                        Py_ssize_t n) noexcept nogil:
    # forward: out = x (x > 0), alpha (e^x - 1) (x <= 0)
    # d out / dx = 1 (x > 0), alpha e^x = out + alpha (x <= 0): from the saved output, no exp.
    # For alpha >= 0 (fastbn.ops checks it) out > 0 exactly where x > 0, so the output also
    # tells the branch; at x = 0 the slope is alpha (torch's convention). A NaN output gives NaN
    cdef Py_ssize_t i
    cdef floating d
    for i in range(n):
        d = dout[i]
        dx[i] = d if out[i] > 0 else d * (out[i] + a)


def elu_forward(const floating[::1] x, double alpha, floating[::1] out):
    _shapes(out.shape[0] == x.shape[0], "elu_forward", "x (N,), out (N,)")
    if x.shape[0] == 0:
        return
    with nogil:
        _elu_forward(&x[0], <floating>alpha, &out[0], x.shape[0])


def elu_backward(const floating[::1] dout, const floating[::1] out, double alpha,
                 floating[::1] dx):
    _shapes(dout.shape[0] == out.shape[0] and dx.shape[0] == out.shape[0], "elu_backward",
            "dout (N,), out (N,), dx (N,)")
    if out.shape[0] == 0:
        return
    with nogil:
        _elu_backward(&dout[0], &out[0], <floating>alpha, &dx[0], out.shape[0])


# ----------------------------------------------------------------------------------------------
# batch normalization over the batch axis of (B, D)

cdef void _batchnorm_forward(const floating* x,       # (B, D), B >= 2
                             const floating* gamma,   # (D,)
                             const floating* beta,    # (D,)
                             double eps,
                             bint unbiased,
                             floating* out,           # (B, D)  gamma * xhat + beta
                             floating* xhat,          # (B, D)  (x - mean) * invstd
                             floating* mean,          # (D,)    batch mean
                             floating* invstd,        # (D,)    1 / sqrt(var_n + eps)
                             floating* var_unbiased,  # (D,)    sum (x - mean)^2 / (B - 1)
                             double* acc,             # (2 D,)  zeroed workspace: acc, mu
                             Py_ssize_t B, Py_ssize_t D) noexcept nogil:
    # Training mode. The variance that normalizes, var_n = sum (x - mean)^2 / n, has the divisor
    # n = B (biased, as torch.nn.functional.batch_norm(training=True); the default) or, with
    # unbiased, n = B - 1 (Bessel-corrected, the makemore lecture's). Either way the unbiased one
    # (/ (B - 1)) is reported for the running estimate.
    # Two passes over x for the statistics (mean, then squared deviations): stable in float32.
    # The loops: fb_bn_forward_* (csrc/layers_impl.h), compiled per CPU with no FMA. In order:
    #   acc = sum_b x (double);  mu = acc / B;  acc = sum_b (x - mu)^2 (double);
    #   var_n = acc / n;  mean = mu;  invstd = 1 / sqrt(var_n + eps);  var = acc / (B - 1);
    #   xhat = (x - mu) * invstd (double, rounded);  out = gamma * xhat + beta (in the dtype)
    if floating is float:
        fb_bn_forward_f32(x, gamma, beta, eps, unbiased, out, xhat, mean, invstd, var_unbiased,
                          acc, B, D)
    else:
        fb_bn_forward_f64(x, gamma, beta, eps, unbiased, out, xhat, mean, invstd, var_unbiased,
                          acc, B, D)


cdef void _batchnorm_backward(const floating* dout,    # (B, D)
                              const floating* xhat,    # (B, D)
                              const floating* gamma,   # (D,)
                              const floating* invstd,  # (D,)
                              bint unbiased,
                              floating* dx,            # (B, D)
                              floating* dgamma,        # (D,)
                              floating* dbeta,         # (D,)
                              double* sb,              # (3 D,) zeroed workspace: sb, sg, k
                              Py_ssize_t B, Py_ssize_t D) noexcept nogil:
    # forward: xhat = (x - mean) * invstd, invstd = (var_n + eps)^-1/2,
    #          var_n = sum (x - mean)^2 / n (n = B, or B - 1 when unbiased),
    #          out = gamma * xhat + beta
    # dbeta  = sum_b dout;   dgamma = sum_b dout * xhat
    # dx: the direct term through xhat, plus the paths through mean and var_n, d var_n / dx_b =
    #     2 (x_b - mean) / n; they collapse to
    #     dx = gamma * invstd / B * (B * dout - dbeta - (B / n) * xhat * dgamma)
    #     where B / n is 1 (biased) or B / (B - 1) (the lecture's n/(n-1) * bnraw * ... term)
    # The loops: fb_bn_backward_* (csrc/layers_impl.h), compiled per CPU with no FMA. In order:
    #   sb = sum_b dout, sg = sum_b dout * xhat (double sums of dtype products);
    #   dbeta = sb;  dgamma = sg;  sg *= B / n;  k = gamma * invstd / B;
    #   dx = k * (B * dout - sb - xhat * sg)
    if floating is float:
        fb_bn_backward_f32(dout, xhat, gamma, invstd, unbiased, dx, dgamma, dbeta, sb, B, D)
    else:
        fb_bn_backward_f64(dout, xhat, gamma, invstd, unbiased, dx, dgamma, dbeta, sb, B, D)


cdef void _batchnorm_eval_forward(const floating* x,       # (B, D)
                                  const floating* gamma,   # (D,)
                                  const floating* beta,    # (D,)
                                  const floating* mean,    # (D,) running mean
                                  const floating* invstd,  # (D,) 1 / sqrt(running var + eps)
                                  floating* out,           # (B, D)
                                  floating* xhat,          # (B, D), or NULL: not written
                                  Py_ssize_t B, Py_ssize_t D) noexcept nogil:
    # Eval mode: the statistics are constants, so batch norm is the affine map
    # out = gamma * (x - mean) * invstd + beta
    # (fb_bn_eval_forward_*, csrc/layers_impl.h: xhat = (x - mean) * invstd, out = gamma * xhat
    # + beta, in the dtype). xhat NULL (inference, which has no backward): out alone, the same
    # numbers.
    if floating is float:
        fb_bn_eval_forward_f32(x, gamma, beta, mean, invstd, out, xhat, B, D)
    else:
        fb_bn_eval_forward_f64(x, gamma, beta, mean, invstd, out, xhat, B, D)


cdef void _batchnorm_eval_backward(const floating* dout,    # (B, D)
                                   const floating* xhat,    # (B, D)
                                   const floating* gamma,   # (D,)
                                   const floating* invstd,  # (D,)
                                   floating* dx,            # (B, D)
                                   floating* dgamma,        # (D,)
                                   floating* dbeta,         # (D,)
                                   double* sb,              # (2 D,) zeroed workspace: sb, sg
                                   Py_ssize_t B, Py_ssize_t D) noexcept nogil:
    # dx = dout * gamma * invstd;  dgamma = sum_b dout * xhat;  dbeta = sum_b dout
    # (fb_bn_eval_backward_*, csrc/layers_impl.h; sb (2 D) a zeroed workspace: sb, sg)
    if floating is float:
        fb_bn_eval_backward_f32(dout, xhat, gamma, invstd, dx, dgamma, dbeta, sb, B, D)
    else:
        fb_bn_eval_backward_f64(dout, xhat, gamma, invstd, dx, dgamma, dbeta, sb, B, D)


def batchnorm_forward(const floating[:, ::1] x,      # (B, D), B >= 2
                      const floating[::1] gamma,     # (D,)
                      const floating[::1] beta,      # (D,)
                      double eps,
                      floating[:, ::1] out,          # (B, D)  gamma * xhat + beta
                      floating[:, ::1] xhat,         # (B, D)  (x - mean) * invstd
                      floating[::1] mean,            # (D,)    batch mean
                      floating[::1] invstd,          # (D,)    1 / sqrt(var_n + eps)
                      floating[::1] var_unbiased,    # (D,)    sum (x - mean)^2 / (B - 1)
                      bint unbiased=False):
    cdef Py_ssize_t B = x.shape[0], D = x.shape[1]
    cdef double *acc
    _shapes(out.shape[0] == B and out.shape[1] == D and xhat.shape[0] == B
            and xhat.shape[1] == D and gamma.shape[0] == D and beta.shape[0] == D
            and mean.shape[0] == D and invstd.shape[0] == D and var_unbiased.shape[0] == D,
            "batchnorm_forward", "x, out, xhat (B, D); gamma, beta, mean, invstd, var (D,)")
    acc = _zeros(2 * D)                               # acc (D,), mu (D,)
    try:
        if D > 0:
            with nogil:
                _batchnorm_forward(&x[0, 0] if B > 0 else NULL, &gamma[0], &beta[0], eps,
                                   unbiased, &out[0, 0] if B > 0 else NULL,
                                   &xhat[0, 0] if B > 0 else NULL, &mean[0], &invstd[0],
                                   &var_unbiased[0], acc, B, D)
    finally:
        free(acc)


cdef int _bn_backward_shapes(const floating[:, ::1] dout, const floating[:, ::1] xhat,
                             const floating[::1] gamma, const floating[::1] invstd,
                             floating[:, ::1] dx, floating[::1] dgamma, floating[::1] dbeta,
                             str kernel) except -1:
    cdef Py_ssize_t B = dout.shape[0], D = dout.shape[1]
    return _shapes(xhat.shape[0] == B and xhat.shape[1] == D and dx.shape[0] == B
                   and dx.shape[1] == D and gamma.shape[0] == D and invstd.shape[0] == D
                   and dgamma.shape[0] == D and dbeta.shape[0] == D, kernel,
                   "dout, xhat, dx (B, D); gamma, invstd, dgamma, dbeta (D,)")


def batchnorm_backward(const floating[:, ::1] dout,  # (B, D)
                       const floating[:, ::1] xhat,  # (B, D)
                       const floating[::1] gamma,    # (D,)
                       const floating[::1] invstd,   # (D,)
                       floating[:, ::1] dx,          # (B, D)
                       floating[::1] dgamma,         # (D,)
                       floating[::1] dbeta,          # (D,)
                       bint unbiased=False):
    cdef Py_ssize_t B = dout.shape[0], D = dout.shape[1]
    cdef double *sb
    _bn_backward_shapes(dout, xhat, gamma, invstd, dx, dgamma, dbeta, "batchnorm_backward")
    sb = _zeros(3 * D)                                # sb, sg, k: (D,) each
    try:
        if D > 0:
            with nogil:
                _batchnorm_backward(&dout[0, 0] if B > 0 else NULL,
                                    &xhat[0, 0] if B > 0 else NULL, &gamma[0], &invstd[0],
                                    unbiased, &dx[0, 0] if B > 0 else NULL, &dgamma[0],
                                    &dbeta[0], sb, B, D)
    finally:
        free(sb)


def batchnorm_eval_forward(const floating[:, ::1] x,      # (B, D)
                           const floating[::1] gamma,     # (D,)
                           const floating[::1] beta,      # (D,)
                           const floating[::1] mean,      # (D,) running mean
                           const floating[::1] invstd,    # (D,) 1 / sqrt(running var + eps)
                           floating[:, ::1] out,          # (B, D)
                           floating[:, ::1] xhat):        # (B, D), or None: not written
    """out = gamma * (x - mean) * invstd + beta, and xhat = (x - mean) * invstd unless xhat is
    None (inference: out alone, bit for bit the same)."""
    cdef Py_ssize_t B = x.shape[0], D = x.shape[1]
    cdef bint keep = xhat is not None
    _shapes(out.shape[0] == B and out.shape[1] == D and (not keep or (xhat.shape[0] == B
            and xhat.shape[1] == D)) and gamma.shape[0] == D and beta.shape[0] == D
            and mean.shape[0] == D and invstd.shape[0] == D, "batchnorm_eval_forward",
            "x, out, xhat (B, D) or xhat None; gamma, beta, mean, invstd (D,)")
    if B == 0 or D == 0:
        return
    with nogil:
        _batchnorm_eval_forward(&x[0, 0], &gamma[0], &beta[0], &mean[0], &invstd[0],
                                &out[0, 0], &xhat[0, 0] if keep else NULL, B, D)


def batchnorm_eval_backward(const floating[:, ::1] dout,  # (B, D)
                            const floating[:, ::1] xhat,  # (B, D)
                            const floating[::1] gamma,    # (D,)
                            const floating[::1] invstd,   # (D,)
                            floating[:, ::1] dx,          # (B, D)
                            floating[::1] dgamma,         # (D,)
                            floating[::1] dbeta):         # (D,)
    cdef Py_ssize_t B = dout.shape[0], D = dout.shape[1]
    cdef double *sb
    _bn_backward_shapes(dout, xhat, gamma, invstd, dx, dgamma, dbeta, "batchnorm_eval_backward")
    sb = _zeros(2 * D)                                # sb, sg: (D,) each
    try:
        if D > 0:
            with nogil:
                _batchnorm_eval_backward(&dout[0, 0] if B > 0 else NULL,
                                         &xhat[0, 0] if B > 0 else NULL, &gamma[0],
                                         &invstd[0], &dx[0, 0] if B > 0 else NULL, &dgamma[0],
                                         &dbeta[0], sb, B, D)
    finally:
        free(sb)


# ----------------------------------------------------------------------------------------------
# softmax cross-entropy: loss = mean_b [ logsumexp(logits[b]) - logits[b, target[b]] ]

cdef inline double _cross_entropy_rows(const floating* row, const int64_t* target, floating* p,
                                       bint keep, Py_ssize_t n, Py_ssize_t C,
                                       double total) noexcept nogil:
    # _cross_entropy_forward's block of n (<= 4, a constant at each call) rows, row (n, C):
    # total plus their losses, added one by one in row order; their exponentials (and their
    # probabilities, when keep) in p (n, C)
    cdef Py_ssize_t c, r
    cdef double m[4]
    cdef double s[4]
    for r in range(n):
        m[r] = row[r * C]
    for c in range(1, C):
        for r in range(n):
            if row[r * C + c] > m[r]:
                m[r] = row[r * C + c]
    for c in range(C):
        for r in range(n):
            p[r * C + c] = <floating>(row[r * C + c] - m[r])
    _exp_array(p, p, n * C)
    for r in range(n):
        s[r] = 0.0
    for c in range(C):
        for r in range(n):
            s[r] += p[r * C + c]
    if keep:
        for r in range(n):
            for c in range(C):
                p[r * C + c] = <floating>(p[r * C + c] / s[r])
    for r in range(n):
        total += m[r] + log(s[r]) - row[r * C + target[r]]
    return total


cdef double _cross_entropy_forward(const floating* logits,   # (B, C)
                                   const int64_t* target,    # (B,), 0 <= target < C
                                   floating* probs,          # (B, C) softmax, kept for backward;
                                                             # (4 C,) scratch when not keep
                                   bint keep,
                                   Py_ssize_t B, Py_ssize_t C) noexcept nogil:
    # Stable: with m = max_c logits[b, c], logsumexp = m + log sum_c exp(logits[b, c] - m); every
    # exponent is <= 0, so nothing overflows, and logits of +-1e4 give a finite loss. Returns
    # the mean loss as a double. B >= 1, C >= 1.
    # Four rows at a time (_cross_entropy_rows): their running maxes and their sums (in double)
    # interleaved, so that the four dependency chains overlap instead of waiting on each other,
    # and the exponentials of the four rows in one vectorized call (_exp_array: elementwise,
    # each value as a call per row gives it); each row's operations and their order are those
    # of one row at a time. Then the last B % 4 rows one at a time.
    # Not keep (inference: the loss alone): the exponentials go through the four rows of
    # scratch and are not divided by their sums (the division only made the probabilities):
    # the same loss, bit for bit.
    # Every row's loss is added to the running total in row order, as one row at a time adds
    # them (a block's sum of four, then added, would round differently).
    cdef Py_ssize_t i
    cdef double total = 0.0
    cdef floating* p
    for i in range(0, B - B % 4, 4):
        p = probs + i * C if keep else probs
        total = _cross_entropy_rows(logits + i * C, target + i, p, keep, 4, C, total)
    for i in range(B - B % 4, B):
        p = probs + i * C if keep else probs
        total = _cross_entropy_rows(logits + i * C, target + i, p, keep, 1, C, total)
    return total / B


cdef void _cross_entropy_backward(double dloss,
                                  const floating* probs,     # (B, C)
                                  const int64_t* target,     # (B,), 0 <= target < C
                                  floating* dlogits,         # (B, C)
                                  Py_ssize_t B, Py_ssize_t C) noexcept nogil:
    # d loss / d logits[b, c] = (softmax[b, c] - [c == target[b]]) / B, times the upstream dloss
    cdef Py_ssize_t i, c
    cdef double scale = dloss / B
    for i in range(B):
        for c in range(C):
            dlogits[i * C + c] = <floating>(scale * probs[i * C + c])
        dlogits[i * C + target[i]] -= <floating>scale


def cross_entropy_forward(const floating[:, ::1] logits,   # (B, C)
                          const int64_t[::1] target,       # (B,), 0 <= target < C
                          floating[:, ::1] probs):         # (B, C) softmax, or None
    """The mean loss (a float), and probs = softmax(logits) unless probs is None (inference:
    the loss alone, bit for bit the same, through one row of scratch)."""
    cdef Py_ssize_t B = logits.shape[0], C = logits.shape[1]
    cdef bint keep = probs is not None
    cdef double loss
    cdef floating* row = NULL
    _shapes(target.shape[0] == B and (not keep or (probs.shape[0] == B
            and probs.shape[1] == C)) and B > 0 and C > 0, "cross_entropy_forward",
            "logits (B, C), target (B,), probs (B, C) or None, B >= 1, C >= 1")
    if keep:
        with nogil:
            loss = _cross_entropy_forward(&logits[0, 0], &target[0], &probs[0, 0], True, B, C)
        return loss
    if <size_t>C <= <size_t>PY_SSIZE_T_MAX // (4 * sizeof(floating)):
        row = <floating*>malloc(4 * C * sizeof(floating))       # (4 C,): four rows of scratch
    if row == NULL:
        raise MemoryError()
    try:
        with nogil:
            loss = _cross_entropy_forward(&logits[0, 0], &target[0], row, False, B, C)
    finally:
        free(row)
    return loss


def cross_entropy_backward(double dloss,
                           const floating[:, ::1] probs,    # (B, C)
                           const int64_t[::1] target,       # (B,)
                           floating[:, ::1] dlogits):       # (B, C)
    cdef Py_ssize_t B = probs.shape[0], C = probs.shape[1]
    _shapes(target.shape[0] == B and dlogits.shape[0] == B and dlogits.shape[1] == C and B > 0
            and C > 0, "cross_entropy_backward", "probs (B, C), target (B,), dlogits (B, C), "
            "B >= 1, C >= 1")
    with nogil:
        _cross_entropy_backward(dloss, &probs[0, 0], &target[0], &dlogits[0, 0], B, C)


# ----------------------------------------------------------------------------------------------
# the common case of each op of fastbn.ops in one call; the per-layer step's bulk helpers

include "_opcalls.pxi"


# ----------------------------------------------------------------------------------------------
# the fused BN-MLP training step and loop (csrc/fused.c); fastbn/fused.py builds and checks it

cdef extern from "fused.h" nogil:
    enum: FB_MAX_LAYERS
    enum: FB_NPHASES
    ctypedef void (*fb_sgemm_t)(char*, char*, int*, int*, int*, float*, float*, int*, float*,
                                int*, float*, float*, int*)
    ctypedef void (*fb_dgemm_t)(char*, char*, int*, int*, int*, double*, double*, int*,
                                double*, int*, double*, double*, int*)
    # the scalar fields only: the arrays are set through fb_net_fields, the data form of
    # FB_NET_ARRAYS, the one list of them (fused.h)
    ctypedef struct fb_net:
        int B, T, D, V, L
        int H[FB_MAX_LAYERS]
        double momentum, eps
        int unbiased
        int table
        fb_sgemm_t sgemm
        fb_dgemm_t dgemm
        int profile
        uint64_t phase_ns[FB_NPHASES]
        int fault, fault_layer
    ctypedef enum fb_dtype:
        FB_DTYPE_REAL
        FB_DTYPE_F64
        FB_DTYPE_I64
    ctypedef enum fb_dim:
        FB_DIM_NONE
    ctypedef struct fb_field:
        const char *name
        fb_dtype dtype
        int per_layer, model, rank
        fb_dim dims[3]
        size_t offset
    const fb_field *fb_net_fields
    const int fb_net_nfields
    const char * const *fb_phase_names
    int64_t fb_net_dim(const fb_net *net, fb_dim dim, int l)
    void fb_pcg32_seed(uint64_t *state, uint64_t seed)
    void fb_draw_rows(uint64_t *state, int64_t n, int64_t B, int64_t *rows)
    double fb_step_f32(fb_net *net, const int64_t *X, const int64_t *Y, const int64_t *rows,
                       float lr)
    double fb_step_f64(fb_net *net, const int64_t *X, const int64_t *Y, const int64_t *rows,
                       double lr)
    double fb_loss_f32(fb_net *net, const int64_t *X, const int64_t *Y, const int64_t *rows,
                       int training)
    double fb_loss_f64(fb_net *net, const int64_t *X, const int64_t *Y, const int64_t *rows,
                       int training)
    int64_t fb_train_f32(fb_net *net, const int64_t *X, const int64_t *Y, int64_t n,
                         int64_t steps, float lr, uint64_t *rng, double *losses)
    int64_t fb_train_f64(fb_net *net, const int64_t *X, const int64_t *Y, int64_t n,
                         int64_t steps, double lr, uint64_t *rng, double *losses)


MAX_LAYERS = FB_MAX_LAYERS
# fb_fault (csrc/fused.h), in its order
FAULTS = ("none", "pre-activation", "logits", "loss", "update")
# the phases of a step the per-phase timing reports, in their order (FB_PHASES in fused.h)
PHASES = tuple([fb_phase_names[i].decode() for i in range(FB_NPHASES)])


cdef inline void* _ptr(object a):
    return <void*><size_t>a.__array_interface__["data"][0]


cdef int _check_array(str name, object a, str dtype, tuple shape) except -1:
    """What C reads through the net's pointer to a: an ndarray of this dtype and shape,
    C-contiguous, aligned and writeable."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"FusedNet: {name} must be a NumPy array, got {type(a).__name__}")
    if a.dtype != dtype or a.shape != shape:
        raise ValueError(f"FusedNet: {name} must be {dtype} of shape {shape}, got {a.dtype} of "
                         f"shape {a.shape}")
    if not (a.flags.c_contiguous and a.flags.aligned and a.flags.writeable):
        raise ValueError(f"FusedNet: {name} must be C-contiguous, aligned and writeable")
    return 0


cdef int _set_dims(fb_net *net, int B, int T, int D, int V, list H) except -1:
    """The sizes of a net, checked: everything fb_net_dim derives shapes from."""
    cdef int l
    if not (1 <= len(H) <= FB_MAX_LAYERS and B >= 2 and min(T, D, V) >= 1
            and all([1 <= h <= 2**30 for h in H]) and max(B, <int64_t>T * D, V) <= 2**30):
        raise ValueError(f"FusedNet: sizes B={B}, T={T}, D={D}, V={V}, H={H} out of range "
                         f"(B >= 2, 1 <= L <= {FB_MAX_LAYERS} layers, all <= 2**30)")
    net.B, net.T, net.D, net.V, net.L = B, T, D, V, len(H)
    for l in range(net.L):
        net.H[l] = H[l]
    return 0


cdef dict _layout(const fb_net *net, bint f64):
    """{name: (dtype, owner, shape)} for every array of the net, in the order of fb_net_fields:
    dtype a NumPy dtype name, owner "model" or "work", shape a tuple, or a list of one per hidden
    layer."""
    cdef int i, l, k
    cdef const fb_field *f
    cdef dict out = {}
    for i in range(fb_net_nfields):
        f = &fb_net_fields[i]
        dtype = ("float64" if f64 else "float32") if f.dtype == FB_DTYPE_REAL else \
            "float64" if f.dtype == FB_DTYPE_F64 else "int64"
        shapes = []
        for l in range(net.L if f.per_layer else 1):
            shapes.append(tuple([fb_net_dim(net, f.dims[k], l) for k in range(f.rank)]))
        out[f.name.decode()] = (dtype, "model" if f.model else "work",
                                shapes if f.per_layer else shapes[0])
    return out


def fused_layout(int B, int T, int D, int V, list H, bint f64):
    """The arrays of a fused net with these sizes (H: the hidden widths, one per layer), from the
    one list of them, FB_NET_ARRAYS (csrc/fused.h): {name: (dtype, owner, shape)}, owner "model"
    (the model's arrays) or "work" (workspaces), shape a list of one per layer for a per-layer
    array. fastbn/fused.py allocates the workspaces from it."""
    cdef fb_net net
    memset(&net, 0, sizeof(net))
    _set_dims(&net, B, T, D, V, H)
    return _layout(&net, f64)


def pcg32_seed(uint64_t[::1] state, uint64_t seed):
    """Seed a PCG32 state (2,) uint64 array."""
    _shapes(state.shape[0] == 2, "pcg32_seed", "state (2,)")
    fb_pcg32_seed(&state[0], seed)


def draw_rows(uint64_t[::1] state, int64_t n, int64_t[::1] rows):
    """Fill rows (B,) with uniform draws from [0, n), advancing the PCG32 state.

    Not thread-safe: fastbn.fused.BatchSampler holds its lock around this call."""
    _shapes(state.shape[0] == 2 and 0 < n < 2**32, "draw_rows", "state (2,), 1 <= n < 2**32")
    if rows.shape[0] == 0:
        return
    with nogil:
        fb_draw_rows(&state[0], n, rows.shape[0], &rows[0])


def fast_tanh_f32(const float[::1] x, float[::1] out):
    """The fused step's vectorizable float32 tanh (tests compare it with libm)."""
    _shapes(out.shape[0] == x.shape[0], "fast_tanh_f32", "x (N,), out (N,)")
    if x.shape[0]:
        with nogil:
            fb_tanh_f32_array(&x[0], &out[0], x.shape[0])


def fast_tanh_f64(const double[::1] x, double[::1] out):
    """The fused step's vectorizable float64 tanh (tests compare it with libm)."""
    _shapes(out.shape[0] == x.shape[0], "fast_tanh_f64", "x (N,), out (N,)")
    if x.shape[0]:
        with nogil:
            fb_tanh_f64_array(&x[0], &out[0], x.shape[0])


def fast_exp_f32(const float[::1] x, float[::1] out):
    """The fused step's vectorizable float32 exp (tests compare it with libm)."""
    _shapes(out.shape[0] == x.shape[0], "fast_exp_f32", "x (N,), out (N,)")
    if x.shape[0]:
        with nogil:
            fb_exp_f32_array(&x[0], &out[0], x.shape[0])


def fast_exp_f64(const double[::1] x, double[::1] out):
    """The fused step's vectorizable float64 exp (tests compare it with libm)."""
    _shapes(out.shape[0] == x.shape[0], "fast_exp_f64", "x (N,), out (N,)")
    if x.shape[0]:
        with nogil:
            fb_exp_f64_array(&x[0], &out[0], x.shape[0])


cdef class FusedNet:
    """Pointers to the arrays of one BN-MLP and its workspaces; see fastbn/fused.py.

    ``arrays`` maps the names of fused.h's FB_NET_ARRAYS to NumPy arrays (lists of one per hidden
    layer for the per-layer ones): every one is checked here against ``fused_layout`` (dtype,
    shape, C-contiguous, aligned, writeable) before the net points at it, and kept alive by this
    object (``self.refs``).
    """
    cdef fb_net net
    cdef bint f64
    cdef public object refs

    def __init__(self, dict arrays, int B, int T, int D, int V, list H, double momentum,
                 double eps, bint f64, bint table, bint unbiased=False):
        cdef int i, l
        cdef const fb_field *f
        cdef void **slot
        _set_dims(&self.net, B, T, D, V, H)
        self.f64 = f64
        self.net.momentum, self.net.eps = momentum, eps
        self.net.unbiased = unbiased                  # batch norm's variance / (B - 1)
        self.net.table = table
        self.net.sgemm = <fb_sgemm_t>sgemm
        self.net.dgemm = <fb_dgemm_t>dgemm
        layout = _layout(&self.net, f64)
        unknown = sorted(set(arrays) - set(layout))
        if unknown:
            raise ValueError(f"FusedNet: no array of the net is called {unknown[0]!r}")
        # every array checked, then kept, before the net points at any of them
        for name, (dtype, _, want) in layout.items():
            if name not in arrays:
                raise ValueError(f"FusedNet: the array {name!r} is missing")
            got = arrays[name]
            if isinstance(want, list):
                if not isinstance(got, list) or len(got) != self.net.L:
                    raise ValueError(f"FusedNet: {name!r} must be a list of {self.net.L} "
                                     "arrays, one per hidden layer")
                for l in range(self.net.L):
                    _check_array(f"{name}[{l}]", got[l], dtype, want[l])
            else:
                _check_array(name, got, dtype, want)
        self.refs = arrays
        for i in range(fb_net_nfields):
            f = &fb_net_fields[i]
            got = arrays[f.name.decode()]
            slot = <void**>(<char*>&self.net + f.offset)
            if f.per_layer:
                for l in range(self.net.L):
                    slot[l] = _ptr(got[l])
            else:
                slot[0] = _ptr(got)

    @property
    def profile(self):
        """Whether the steps time their phases (``phase_times``); off by default."""
        return bool(self.net.profile)

    @profile.setter
    def profile(self, bint on):
        self.net.profile = on

    def phase_times(self):
        """{phase: seconds} spent in each phase (``PHASES``) while ``profile`` was on."""
        return {PHASES[i]: self.net.phase_ns[i] * 1e-9 for i in range(FB_NPHASES)}

    @property
    def fault(self):
        """What stopped the last call, as (kind, layer): kind one of FAULTS (fb_fault in
        csrc/fused.h): "none", "pre-activation" (of hidden layer ``layer``), "logits", "loss"
        (these three: that step was not applied) or "update" (it was applied, and left a
        parameter or a running statistic non-finite)."""
        return FAULTS[self.net.fault], self.net.fault_layer

    def reset_phase_times(self):
        cdef int i
        for i in range(FB_NPHASES):
            self.net.phase_ns[i] = 0

    cdef int _data(self, const int64_t[:, ::1] X, const int64_t[::1] Y) except -1:
        # the sizes the C step reads X (N, T) and Y (N,) with; their ids and the rows are
        # checked by fastbn/fused.py, in arrays private to the call
        return _shapes(X.shape[0] > 0 and X.shape[1] == self.net.T and Y.shape[0] == X.shape[0],
                       "FusedNet", f"X (N, {self.net.T}), Y (N,), N >= 1")

    def step(self, const int64_t[:, ::1] X, const int64_t[::1] Y, const int64_t[::1] rows,
             double lr):
        """One training step on X[rows], Y[rows]; returns the loss before the update."""
        cdef double loss
        self._data(X, Y)
        _shapes(rows.shape[0] == self.net.B, "FusedNet.step", f"rows ({self.net.B},)")
        with nogil:
            if self.f64:
                loss = fb_step_f64(&self.net, &X[0, 0], &Y[0], &rows[0], lr)
            else:
                loss = fb_step_f32(&self.net, &X[0, 0], &Y[0], &rows[0], <float>lr)
        return loss

    def loss(self, const int64_t[:, ::1] X, const int64_t[::1] Y, const int64_t[::1] rows,
             bint training):
        """The loss on X[rows], Y[rows] without any update (eval mode: running statistics)."""
        cdef double loss
        self._data(X, Y)
        _shapes(rows.shape[0] == self.net.B, "FusedNet.loss", f"rows ({self.net.B},)")
        with nogil:
            if self.f64:
                loss = fb_loss_f64(&self.net, &X[0, 0], &Y[0], &rows[0], training)
            else:
                loss = fb_loss_f32(&self.net, &X[0, 0], &Y[0], &rows[0], training)
        return loss

    def train(self, const int64_t[:, ::1] X, const int64_t[::1] Y, int64_t steps, double lr,
              uint64_t[::1] rng, double[::1] losses):
        """steps steps on rows drawn from [0, len(X)); returns the number of steps applied."""
        cdef int64_t done, n = X.shape[0]
        self._data(X, Y)
        _shapes(n < 2**32 and steps >= 0 and rng.shape[0] == 2 and losses.shape[0] >= steps,
                "FusedNet.train", "N < 2**32, steps >= 0, rng (2,), losses (steps,)")
        if steps == 0:
            return 0
        with nogil:
            if self.f64:
                done = fb_train_f64(&self.net, &X[0, 0], &Y[0], n, steps, lr, &rng[0],
                                    &losses[0])
            else:
                done = fb_train_f32(&self.net, &X[0, 0], &Y[0], n, steps, <float>lr, &rng[0],
                                    &losses[0])
        return done


# ----------------------------------------------------------------------------------------------
# table: an embedding and the Linear after it as one lookup (fastbn.inference, folded models)
#
# x0[b] = concat_t C[idx[b, t]] (T*D,), so x0[b] @ W + bias = sum_t C[idx[b, t]] @ W[t*D:(t+1)*D]
# + bias = sum_t tab[t, idx[b, t]] with tab[t] = C @ W[t*D:(t+1)*D] (V, H), the bias added into
# tab[0]: made by the caller (in float64, rounded once). A row is then T row gathers and T - 1
# adds of H values instead of H dot products of length T*D.
#
# The loop is C compiled per CPU, as csrc/fused.c's entry points (target_clones: AVX-512, AVX2,
# SSE2, chosen at load time): its adds run 8-16 wide, ~2.2x (float32) and ~3x (float64) faster
# than the same loop in Cython (SSE2 only) on 1024 rows of the lecture's model. Adds only, no FMA:
# every clone rounds alike. (A tanh fused into the row while it is in L1 gained nothing: tanh is
# compute-bound.)

cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
        !defined(FB_NO_CLONES)
    #define FB_TABLE_CLONES \
        __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
    #else
    #define FB_TABLE_CLONES
    #endif
    /* out[b, :] = sum_t tab[t, idx[b, t], :] for b < B, in t order; tab (T, V, H), idx (B, T),
     * out (B, H). Left to right, ((e0 + e1) + e2) + ..., as a loop adding one row at a time
     * would; but up to four rows are summed per pass over the output row (the first pass
     * writes it, each later one adds three more), which saves the re-reads and stores of the
     * row: 2.2x faster at T = 3 (1024 rows of the lecture's model), the same bits. */
    #define FB_TABLE_FORWARD(REAL, SFX)                                                        \
    FB_TABLE_CLONES void fb_table_forward_##SFX(const REAL *restrict tab, int64_t T, int64_t V, \
                                                int64_t H, const int64_t *restrict idx,         \
                                                int64_t B, REAL *restrict out) {                \
        for (int64_t b = 0; b < B; b++) {                                                     \
            REAL *restrict row = out + b * H;                                                 \
            const int64_t *ib = idx + b * T;                                                  \
            const REAL *restrict e0 = tab + ib[0] * H;                                        \
            const REAL *restrict e1 = T > 1 ? tab + (V + ib[1]) * H : e0;                     \
            const REAL *restrict e2 = T > 2 ? tab + (2 * V + ib[2]) * H : e0;                 \
            const REAL *restrict e3 = T > 3 ? tab + (3 * V + ib[3]) * H : e0;                 \
            int64_t t;                                                                        \
            switch (T < 4 ? T : 4) {                                                          \
            case 1: for (int64_t j = 0; j < H; j++) row[j] = e0[j]; break;                     \
            case 2: for (int64_t j = 0; j < H; j++) row[j] = e0[j] + e1[j]; break;             \
            case 3: for (int64_t j = 0; j < H; j++) row[j] = (e0[j] + e1[j]) + e2[j]; break;   \
            default:                                                                          \
                for (int64_t j = 0; j < H; j++) row[j] = ((e0[j] + e1[j]) + e2[j]) + e3[j];   \
            }                                                                                 \
            for (t = 4; t < T; t += 3) {              /* rows t, t+1, t+2 (those < T) */      \
                e0 = tab + (t * V + ib[t]) * H;                                               \
                e1 = t + 1 < T ? tab + ((t + 1) * V + ib[t + 1]) * H : e0;                    \
                e2 = t + 2 < T ? tab + ((t + 2) * V + ib[t + 2]) * H : e0;                    \
                if (t + 2 < T)                                                                \
                    for (int64_t j = 0; j < H; j++) row[j] = ((row[j] + e0[j]) + e1[j]) + e2[j]; \
                else if (t + 1 < T)                                                           \
                    for (int64_t j = 0; j < H; j++) row[j] = (row[j] + e0[j]) + e1[j];        \
                else                                                                          \
                    for (int64_t j = 0; j < H; j++) row[j] = row[j] + e0[j];                  \
            }                                                                                 \
        }                                                                                     \
    }
    FB_TABLE_FORWARD(float, f32)
    FB_TABLE_FORWARD(double, f64)
    """
    void fb_table_forward_f32(const float *tab, int64_t T, int64_t V, int64_t H,
                              const int64_t *idx, int64_t B, float *out) nogil
    void fb_table_forward_f64(const double *tab, int64_t T, int64_t V, int64_t H,
                              const int64_t *idx, int64_t B, double *out) nogil


def table_forward(const floating[:, :, ::1] tab,   # (T, V, H)
                  const int64_t[:, ::1] idx,       # (B, T), 0 <= idx < V
                  floating[:, ::1] out):           # (B, H)
    # out[b, j] = sum_t tab[t, idx[b, t], j], summed in t order
    cdef Py_ssize_t B = idx.shape[0], T = idx.shape[1], V = tab.shape[1], H = tab.shape[2]
    _shapes(tab.shape[0] == T and T >= 1 and V >= 1 and H >= 1
            and out.shape[0] == B and out.shape[1] == H, "table_forward",
            "tab (T, V, H), idx (B, T), out (B, H), T, V, H >= 1")
    if B == 0:
        return
    with nogil:
        if floating is float:
            fb_table_forward_f32(&tab[0, 0, 0], T, V, H, &idx[0, 0], B, &out[0, 0])
        else:
            fb_table_forward_f64(&tab[0, 0, 0], T, V, H, &idx[0, 0], B, &out[0, 0])
