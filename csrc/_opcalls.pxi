# The common case of each op of fastbn.ops in one call (included by _kernels.pyx, whose loops it
# runs), and the per-layer step's two bulk helpers (sgd_update, copy_arrays).
#
# fastbn/ops.py hands every call to ``<op>_<forward|backward>_fast`` first. For arguments already
# in the form the loops read - ndarrays (not subclasses) of one float dtype (float32 or float64,
# native byte order), C-contiguous and aligned, of the shapes and options the op accepts - it
# checks them here with the GIL held, allocates the outputs, runs the loop with the GIL released
# and builds the cache: the op in one call, no Python code. For anything else (another dtype, a
# list, a strided view, a shape or option the op refuses, an index out of range) it returns None
# and ops.py takes its general path, which converts what it may and raises the errors that say
# what is wrong. So these functions accept a subset of what the general path accepts, and give
# the same results on it (tests/test_opcalls.py compares the two paths); they raise nothing but
# MemoryError.
#
# Thread safety is the kernels' (see the top of _kernels.pyx): shapes and sizes are read once,
# with the GIL held, and the loops use those; index arrays are copied into arrays private to the
# call and checked there (fb_copy_ids); every array read without the GIL is referenced by a local
# variable, so it stays alive whatever another thread does to the caller's names.

cimport numpy as cnp
from numpy cimport npy_intp

cnp.import_array()

cdef extern from "Python.h":
    object PyObject_GenericGetDict(object o, void *context)
    int PyObject_GenericSetDict(object o, object value, void *context) except -1
    const int INT_MAX

# the builtin descriptors: an array whose dtype is one of these is of native byte order, with no
# metadata (np.dtype returns these very objects for the plain types)
cdef object _F32 = np.dtype(np.float32)
cdef object _F64 = np.dtype(np.float64)
cdef object _I64 = np.dtype(np.int64)
# the largest size a cache may name (weight_shape, out_shape) for the common case: products of
# two stay within 64 bits
cdef npy_intp _MAX_DIM = 2**31 - 1


# ----------------------------------------------------------------------------------------------
# the cache

def _cache_from_dict(cls, dict attrs):
    """Unpickle a Cache (``Cache.__reduce__``)."""
    c = cls.__new__(cls)
    PyObject_GenericGetDict(c, NULL).update(attrs)
    return c


cdef class Cache:
    """What a forward keeps for its backward: named arrays, plus ``op``, the forward's name.

    Attributes are public so teaching code can look inside (``cache.mean``, ``cache.var``, ...);
    any attribute may be set, and ``vars(cache)`` is the dict of them, as for a
    ``types.SimpleNamespace``. ``Cache(op="name", **attributes)`` builds one. Its repr names the
    attributes with their shapes and dtypes, never their values. (A C type, so that the common
    case of a forward, ``_kernels.<op>_forward_fast``, builds its cache without Python code.)
    """
    cdef dict __dict__

    def __init__(self, **attributes):
        PyObject_GenericGetDict(self, NULL).update(attributes)

    def __repr__(self):
        def show(v):
            if isinstance(v, np.ndarray):
                return f"{v.dtype.name}{list(v.shape)}"
            if isinstance(v, np.dtype):
                return v.name
            return repr(v)
        attrs = PyObject_GenericGetDict(self, NULL)
        items = ", ".join(f"{k}={show(v)}" for k, v in attrs.items() if k != "op")
        return f"Cache({attrs.get('op', '?')}: {items})"

    def __reduce__(self):
        return _cache_from_dict, (type(self), dict(PyObject_GenericGetDict(self, NULL)))


cdef inline object _new_cache(dict attributes):
    """A Cache holding ``attributes`` (the dict itself)."""
    cdef object c = Cache.__new__(Cache)
    PyObject_GenericSetDict(c, attributes, NULL)
    return c


cdef inline dict _cache_of(object cache, str op):
    """The attributes of ``cache`` when it is a Cache (not a subclass) made by ``op``'s forward
    (its ``op`` attribute, a str, says so); else None."""
    if type(cache) is not Cache:
        return None
    cdef dict attrs = PyObject_GenericGetDict(cache, NULL)
    o = attrs.get("op")
    if type(o) is not str or o != op:
        return None
    return attrs


cdef inline object _cache_dtype(dict attrs):
    """``attrs["dtype"]`` when it is float32's or float64's builtin descriptor, else None."""
    dt = attrs.get("dtype")
    return dt if dt is _F32 or dt is _F64 else None


# ----------------------------------------------------------------------------------------------
# what an argument must be to be read as it is

cdef inline cnp.ndarray _array(object a, object dtype, int ndim):
    """``a`` when it is an ndarray (not a subclass) of ``dtype``'s builtin descriptor, with
    ``ndim`` dimensions (any number when ndim < 0), C-contiguous and aligned; else None."""
    cdef cnp.ndarray r
    if not cnp.PyArray_CheckExact(a):
        return None
    r = <cnp.ndarray>a
    if (<void*>cnp.PyArray_DESCR(r) != <void*>dtype
            or (ndim >= 0 and cnp.PyArray_NDIM(r) != ndim)
            or not cnp.PyArray_CHKFLAGS(r, cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED)):
        return None
    return r


cdef inline cnp.ndarray _floats(object a, int ndim):
    """``_array(a, float32 or float64, ndim)``: the first float argument of an op, which sets the
    dtype of the call."""
    cdef cnp.ndarray r = _array(a, _F32, ndim)
    return r if r is not None else _array(a, _F64, ndim)


cdef inline object _dtype(cnp.ndarray a):
    return <object>cnp.PyArray_DESCR(a)


cdef inline npy_intp _dim(cnp.ndarray a, int k):
    return cnp.PyArray_DIMS(a)[k]


cdef inline bint _dims_are(cnp.ndarray a, int nd, const npy_intp* dims):
    """Whether ``a`` has ``nd`` dimensions of sizes ``dims``."""
    cdef int k
    if cnp.PyArray_NDIM(a) != nd:
        return False
    for k in range(nd):
        if cnp.PyArray_DIMS(a)[k] != dims[k]:
            return False
    return True


cdef inline cnp.ndarray _empty(int nd, const npy_intp* dims, object dtype):
    """A new C-contiguous array of dtype float32 or float64, uninitialized."""
    return <cnp.ndarray>cnp.PyArray_EMPTY(nd, <npy_intp*>dims,
                                          cnp.NPY_FLOAT if dtype is _F32 else cnp.NPY_DOUBLE, 0)


cdef inline bint _overlap(cnp.ndarray a, cnp.ndarray b):
    """Whether the bytes of two (C-contiguous) arrays overlap."""
    cdef char* pa = cnp.PyArray_BYTES(a)
    cdef char* pb = cnp.PyArray_BYTES(b)
    return pa < pb + cnp.PyArray_NBYTES(b) and pb < pa + cnp.PyArray_NBYTES(a)


cdef inline bint _out(object given, object dtype, int nd, const npy_intp* dims, list reads,
                      list outs):
    """Append to ``outs`` the output array of a backward: a new one when ``given`` is None, else
    ``given`` itself if it is an array the loop can write as it is (``_array`` of these dims,
    writeable) and shares no memory with an array the loop reads (``reads``) or with an earlier
    output (``outs``). Returns False (nothing appended) when ``given`` is not such an array."""
    cdef cnp.ndarray o
    if given is None:
        outs.append(_empty(nd, dims, dtype))
        return True
    o = _array(given, dtype, nd)
    if (o is None or not _dims_are(o, nd, dims)
            or not cnp.PyArray_CHKFLAGS(o, cnp.NPY_ARRAY_WRITEABLE)):
        return False
    for r in reads + outs:
        if _overlap(o, <cnp.ndarray>r):
            return False
    outs.append(o)
    return True


cdef inline tuple _outs(object out, int n):
    """The ``out=`` argument of a backward as a tuple of n entries (None: no outputs given), or
    None when it is not a tuple of n."""
    if out is None:
        return (None,) * n
    if type(out) is not tuple or len(<tuple>out) != n:
        return None
    return <tuple>out


cdef inline cnp.ndarray _private_ids(cnp.ndarray src, npy_intp bound, int nd,
                                     const npy_intp* dims):
    """A new read-only int64 array of these dims holding a copy of ``src`` (int64, as many
    values), when every value copied is in [0, bound); else None. The values checked are those of
    the copy, whatever another thread writes into src meanwhile (fb_copy_ids)."""
    cdef cnp.ndarray dst = <cnp.ndarray>cnp.PyArray_EMPTY(nd, <npy_intp*>dims, cnp.NPY_INT64, 0)
    cdef int64_t n = cnp.PyArray_SIZE(dst)
    cdef int ok = 1
    if n:
        if bound < 1:
            return None
        with nogil:
            ok = fb_copy_ids(<const int64_t*>cnp.PyArray_DATA(src),
                             <int64_t*>cnp.PyArray_DATA(dst), n, <uint64_t>bound)
    if not ok:
        return None
    cnp.PyArray_CLEARFLAGS(dst, cnp.NPY_ARRAY_WRITEABLE)
    return dst


cdef inline bint _alpha_ok(object alpha):
    """An ELU's alpha as fastbn.ops takes it without conversion: a float, finite, >= 0."""
    return type(alpha) is float and 0 <= <double>alpha < HUGE_VAL


cdef inline bint _eps_ok(object eps):
    return type(eps) is float and <double>eps >= 0


# ----------------------------------------------------------------------------------------------
# embedding

def embedding_forward_fast(weight, idx):
    """``ops.embedding_forward`` for weight (V, D) float and idx (B, T) or (B,) int64, every
    index in [0, V): (out, cache); else None."""
    cdef cnp.ndarray w = _floats(weight, 2), ids, private, out
    cdef npy_intp V, D, B, T
    cdef npy_intp dims[2]
    cdef int nd
    if w is None:
        return None
    ids = _array(idx, _I64, -1)
    if ids is None or cnp.PyArray_NDIM(ids) not in (1, 2):
        return None
    V, D = _dim(w, 0), _dim(w, 1)
    nd = cnp.PyArray_NDIM(ids)
    B = _dim(ids, 0)
    T = _dim(ids, 1) if nd == 2 else 1
    dims[0], dims[1] = B, T
    private = _private_ids(ids, V, 2, dims)
    if private is None:
        return None
    dims[1] = T * D
    dt = _dtype(w)
    out = _empty(2, dims, dt)
    if B and T and D:
        with nogil:
            if dt is _F32:
                _embedding_forward(<const float*>cnp.PyArray_DATA(w),
                                   <const int64_t*>cnp.PyArray_DATA(private),
                                   <float*>cnp.PyArray_DATA(out), B, T, D)
            else:
                _embedding_forward(<const double*>cnp.PyArray_DATA(w),
                                   <const int64_t*>cnp.PyArray_DATA(private),
                                   <double*>cnp.PyArray_DATA(out), B, T, D)
    out_shape = (B, T * D) if nd == 2 else (B, D)
    return out, _new_cache({"op": "embedding", "dtype": dt, "idx": private,
                            "weight_shape": (V, D), "out_shape": out_shape})


def embedding_backward_fast(dout, cache, out=None):
    """``ops.embedding_backward``: dweight (V, D), new or ``out`` (an array), or None."""
    cdef dict c = _cache_of(cache, "embedding")
    cdef cnp.ndarray ids, private, g, dw
    cdef npy_intp V, D, B, T, k
    cdef npy_intp dims[2]
    cdef list outs = []
    if c is None:
        return None
    dt = _cache_dtype(c)
    wshape, oshape = c.get("weight_shape"), c.get("out_shape")
    if (dt is None or type(wshape) is not tuple or len(wshape) != 2
            or type(oshape) is not tuple or not 1 <= len(oshape) <= 2):
        return None
    for v in wshape + oshape:
        if type(v) is not int or not 0 <= v <= _MAX_DIM:
            return None
    V, D = wshape
    ids = _array(c.get("idx"), _I64, 2)
    if ids is None or _dim(ids, 0) != oshape[0]:
        return None
    B, T = _dim(ids, 0), _dim(ids, 1)
    g = _array(dout, dt, len(oshape))
    # dout holds B * T * D values (without computing the product, which might overflow)
    if g is None or (cnp.PyArray_SIZE(g) != 0 if B * T == 0 else
                     cnp.PyArray_SIZE(g) % (B * T) != 0 or cnp.PyArray_SIZE(g) // (B * T) != D):
        return None
    for k in range(len(oshape)):
        if _dim(g, k) != oshape[k]:
            return None
    dims[0], dims[1] = B, T
    private = _private_ids(ids, V, 2, dims)
    dims[0], dims[1] = V, D
    if private is None or not _out(out, dt, 2, dims, [g], outs):
        return None
    dw = outs[0]
    memset(cnp.PyArray_DATA(dw), 0, cnp.PyArray_NBYTES(dw))
    if B and T and D:
        with nogil:
            if dt is _F32:
                _embedding_backward(<const float*>cnp.PyArray_DATA(g),
                                    <const int64_t*>cnp.PyArray_DATA(private),
                                    <float*>cnp.PyArray_DATA(dw), B, T, D)
            else:
                _embedding_backward(<const double*>cnp.PyArray_DATA(g),
                                    <const int64_t*>cnp.PyArray_DATA(private),
                                    <double*>cnp.PyArray_DATA(dw), B, T, D)
    return dw


# ----------------------------------------------------------------------------------------------
# linear

def linear_forward_fast(x, w, b):
    """``ops.linear_forward`` for x (B, I), w (I, O), b (O,) or None, all sizes in
    [1, INT_MAX]: (out, cache); else None."""
    cdef cnp.ndarray xa = _floats(x, 2), wa, ba = None, out
    cdef npy_intp B, I, O
    cdef npy_intp dims[2]
    if xa is None:
        return None
    dt = _dtype(xa)
    wa = _array(w, dt, 2)
    if wa is None:
        return None
    B, I, O = _dim(xa, 0), _dim(xa, 1), _dim(wa, 1)
    if _dim(wa, 0) != I or min(B, I, O) < 1 or max(B, I, O) > INT_MAX:
        return None
    if b is not None:
        ba = _array(b, dt, 1)
        if ba is None or _dim(ba, 0) != O:
            return None
    dims[0], dims[1] = B, O
    out = _empty(2, dims, dt)
    with nogil:
        if dt is _F32:
            _linear_forward(<const float*>cnp.PyArray_DATA(xa),
                            <const float*>cnp.PyArray_DATA(wa),
                            <const float*>cnp.PyArray_DATA(ba) if ba is not None else NULL,
                            <float*>cnp.PyArray_DATA(out), B, I, O)
        else:
            _linear_forward(<const double*>cnp.PyArray_DATA(xa),
                            <const double*>cnp.PyArray_DATA(wa),
                            <const double*>cnp.PyArray_DATA(ba) if ba is not None else NULL,
                            <double*>cnp.PyArray_DATA(out), B, I, O)
    return out, _new_cache({"op": "linear", "dtype": dt, "x": xa, "w": wa,
                            "has_bias": b is not None})


def linear_backward_fast(dout, cache, out=None):
    """``ops.linear_backward``: (dx, dw, db or None), or None."""
    cdef dict c = _cache_of(cache, "linear")
    cdef cnp.ndarray xa, wa, g, dx, dw, db = None
    cdef npy_intp B, I, O
    cdef npy_intp dims[2]
    cdef list outs = [], reads
    cdef double* acc
    if c is None:
        return None
    dt, has_bias, given = _cache_dtype(c), c.get("has_bias"), _outs(out, 3)
    if dt is None or given is None or (has_bias is not True and has_bias is not False):
        return None
    xa, wa = _array(c.get("x"), dt, 2), _array(c.get("w"), dt, 2)
    g = _array(dout, dt, 2)
    if xa is None or wa is None or g is None:
        return None
    B, I, O = _dim(xa, 0), _dim(xa, 1), _dim(wa, 1)
    dims[0], dims[1] = B, O
    if (_dim(wa, 0) != I or not _dims_are(g, 2, dims) or min(B, I, O) < 1
            or max(B, I, O) > INT_MAX or (not has_bias and given[2] is not None)):
        return None
    reads = [g, xa, wa]
    dims[1] = I
    if not _out(given[0], dt, 2, dims, reads, outs):
        return None
    dims[0], dims[1] = I, O
    if not _out(given[1], dt, 2, dims, reads, outs):
        return None
    if has_bias and not _out(given[2], dt, 1, &dims[1], reads, outs):
        return None
    dx, dw = outs[0], outs[1]
    if has_bias:
        db = outs[2]
    acc = _zeros(O if has_bias else 0)
    try:
        with nogil:
            if dt is _F32:
                _linear_backward(<const float*>cnp.PyArray_DATA(g),
                                 <const float*>cnp.PyArray_DATA(xa),
                                 <const float*>cnp.PyArray_DATA(wa),
                                 <float*>cnp.PyArray_DATA(dx), <float*>cnp.PyArray_DATA(dw),
                                 <float*>cnp.PyArray_DATA(db) if db is not None else NULL,
                                 acc, B, I, O)
            else:
                _linear_backward(<const double*>cnp.PyArray_DATA(g),
                                 <const double*>cnp.PyArray_DATA(xa),
                                 <const double*>cnp.PyArray_DATA(wa),
                                 <double*>cnp.PyArray_DATA(dx), <double*>cnp.PyArray_DATA(dw),
                                 <double*>cnp.PyArray_DATA(db) if db is not None else NULL,
                                 acc, B, I, O)
    finally:
        free(acc)
    return dx, dw, db


# ----------------------------------------------------------------------------------------------
# elementwise nonlinearities (any shape): tanh, relu / leaky_relu, elu, one row each of the
# template _elementwise.pxi.tp (expanded per dtype by setup.py)

include "_elementwise.pxi"


# ----------------------------------------------------------------------------------------------
# batch normalization

cdef tuple _bn_inputs(object x, object gamma, object beta, int min_rows):
    """(x (B, D), gamma (D,), beta (D,)) as the loops read them, B >= min_rows; else None."""
    cdef cnp.ndarray xa = _floats(x, 2), ga, ba
    if xa is None or _dim(xa, 0) < min_rows:
        return None
    dt = _dtype(xa)
    ga, ba = _array(gamma, dt, 1), _array(beta, dt, 1)
    if ga is None or ba is None or _dim(ga, 0) != _dim(xa, 1) or _dim(ba, 0) != _dim(xa, 1):
        return None
    return xa, ga, ba


def batchnorm_forward_fast(x, gamma, beta, eps, unbiased):
    """``ops.batchnorm_forward`` for x (B, D), B >= 2, gamma and beta (D,), a float eps >= 0 and a
    bool unbiased: (out, cache), or None."""
    cdef tuple args = _bn_inputs(x, gamma, beta, 2)
    cdef cnp.ndarray xa, ga, ba, out, xhat, mean, invstd, var
    cdef npy_intp B, D
    cdef double e
    cdef double* acc
    cdef bint u
    if args is None or not _eps_ok(eps) or (unbiased is not True and unbiased is not False):
        return None
    xa, ga, ba = args
    dt, B, D, e, u = _dtype(xa), _dim(xa, 0), _dim(xa, 1), <double>eps, unbiased
    out, xhat = _empty(2, cnp.PyArray_DIMS(xa), dt), _empty(2, cnp.PyArray_DIMS(xa), dt)
    mean, invstd = _empty(1, &D, dt), _empty(1, &D, dt)
    var = _empty(1, &D, dt)
    acc = _zeros(2 * D)
    try:
        with nogil:
            if dt is _F32:
                _batchnorm_forward(<const float*>cnp.PyArray_DATA(xa),
                                   <const float*>cnp.PyArray_DATA(ga),
                                   <const float*>cnp.PyArray_DATA(ba), e, u,
                                   <float*>cnp.PyArray_DATA(out), <float*>cnp.PyArray_DATA(xhat),
                                   <float*>cnp.PyArray_DATA(mean),
                                   <float*>cnp.PyArray_DATA(invstd),
                                   <float*>cnp.PyArray_DATA(var), acc, B, D)
            else:
                _batchnorm_forward(<const double*>cnp.PyArray_DATA(xa),
                                   <const double*>cnp.PyArray_DATA(ga),
                                   <const double*>cnp.PyArray_DATA(ba), e, u,
                                   <double*>cnp.PyArray_DATA(out),
                                   <double*>cnp.PyArray_DATA(xhat),
                                   <double*>cnp.PyArray_DATA(mean),
                                   <double*>cnp.PyArray_DATA(invstd),
                                   <double*>cnp.PyArray_DATA(var), acc, B, D)
    finally:
        free(acc)
    return out, _new_cache({"op": "batchnorm", "dtype": dt, "xhat": xhat, "gamma": ga,
                            "invstd": invstd, "mean": mean, "var": var, "eps": eps,
                            "unbiased": unbiased})


cdef tuple _bn_backward_args(object dout, dict c, object out):
    """(dt, dout, xhat, gamma, invstd, dx, dgamma, dbeta) of a batch-norm backward, the outputs
    new or given (``out``); else None."""
    cdef cnp.ndarray xhat, gamma, invstd, g
    cdef npy_intp D
    cdef list outs = [], reads
    cdef tuple given = _outs(out, 3)
    dt = _cache_dtype(c)
    if dt is None or given is None:
        return None
    xhat = _array(c.get("xhat"), dt, 2)
    if xhat is None:
        return None
    D = _dim(xhat, 1)
    gamma, invstd = _array(c.get("gamma"), dt, 1), _array(c.get("invstd"), dt, 1)
    g = _array(dout, dt, 2)
    if (gamma is None or invstd is None or g is None or _dim(gamma, 0) != D
            or _dim(invstd, 0) != D or not _dims_are(g, 2, cnp.PyArray_DIMS(xhat))):
        return None
    reads = [g, xhat, gamma, invstd]
    if (not _out(given[0], dt, 2, cnp.PyArray_DIMS(xhat), reads, outs)
            or not _out(given[1], dt, 1, &D, reads, outs)
            or not _out(given[2], dt, 1, &D, reads, outs)):
        return None
    return (dt, g, xhat, gamma, invstd, *outs)


def batchnorm_backward_fast(dout, cache, out=None):
    """``ops.batchnorm_backward``, of the variant the cache names (``unbiased``, a bool), for a
    batch of B >= 2: (dx, dgamma, dbeta), or None."""
    cdef dict c = _cache_of(cache, "batchnorm")
    cdef tuple args = _bn_backward_args(dout, c, out) if c is not None else None
    cdef cnp.ndarray g, xhat, gamma, invstd, dx, dgamma, dbeta
    cdef npy_intp B, D
    cdef double* ws
    cdef bint u
    if args is None:
        return None
    dt, g, xhat, gamma, invstd, dx, dgamma, dbeta = args
    B, D = _dim(xhat, 0), _dim(xhat, 1)
    unbiased = c.get("unbiased")
    if B < 2 or (unbiased is not True and unbiased is not False):
        return None
    u = unbiased
    ws = _zeros(3 * D)
    try:
        with nogil:
            if dt is _F32:
                _batchnorm_backward(<const float*>cnp.PyArray_DATA(g),
                                    <const float*>cnp.PyArray_DATA(xhat),
                                    <const float*>cnp.PyArray_DATA(gamma),
                                    <const float*>cnp.PyArray_DATA(invstd), u,
                                    <float*>cnp.PyArray_DATA(dx),
                                    <float*>cnp.PyArray_DATA(dgamma),
                                    <float*>cnp.PyArray_DATA(dbeta), ws, B, D)
            else:
                _batchnorm_backward(<const double*>cnp.PyArray_DATA(g),
                                    <const double*>cnp.PyArray_DATA(xhat),
                                    <const double*>cnp.PyArray_DATA(gamma),
                                    <const double*>cnp.PyArray_DATA(invstd), u,
                                    <double*>cnp.PyArray_DATA(dx),
                                    <double*>cnp.PyArray_DATA(dgamma),
                                    <double*>cnp.PyArray_DATA(dbeta), ws, B, D)
    finally:
        free(ws)
    return dx, dgamma, dbeta


def batchnorm_eval_forward_fast(x, gamma, beta, running_mean, running_var, eps):
    """``ops.batchnorm_eval_forward`` for x (B, D), the others (D,), a float eps >= 0:
    (out, cache), or None. invstd = 1 / sqrt(running_var + eps) in double, rounded to the
    dtype, as ops.py's general path computes it."""
    cdef tuple args = _bn_inputs(x, gamma, beta, 0)
    cdef cnp.ndarray xa, ga, ba, rm, rv, out, xhat, invstd
    cdef npy_intp B, D, j
    cdef double e
    if args is None or not _eps_ok(eps):
        return None
    xa, ga, ba = args
    dt, B, D, e = _dtype(xa), _dim(xa, 0), _dim(xa, 1), <double>eps
    rm, rv = _array(running_mean, dt, 1), _array(running_var, dt, 1)
    if rm is None or rv is None or _dim(rm, 0) != D or _dim(rv, 0) != D:
        return None
    out, xhat = _empty(2, cnp.PyArray_DIMS(xa), dt), _empty(2, cnp.PyArray_DIMS(xa), dt)
    invstd = _empty(1, &D, dt)
    with nogil:
        if dt is _F32:
            for j in range(D):
                (<float*>cnp.PyArray_DATA(invstd))[j] = <float>(
                    1.0 / sqrt(<double>(<const float*>cnp.PyArray_DATA(rv))[j] + e))
            _batchnorm_eval_forward(<const float*>cnp.PyArray_DATA(xa),
                                    <const float*>cnp.PyArray_DATA(ga),
                                    <const float*>cnp.PyArray_DATA(ba),
                                    <const float*>cnp.PyArray_DATA(rm),
                                    <const float*>cnp.PyArray_DATA(invstd),
                                    <float*>cnp.PyArray_DATA(out),
                                    <float*>cnp.PyArray_DATA(xhat), B, D)
        else:
            for j in range(D):
                (<double*>cnp.PyArray_DATA(invstd))[j] = (
                    1.0 / sqrt((<const double*>cnp.PyArray_DATA(rv))[j] + e))
            _batchnorm_eval_forward(<const double*>cnp.PyArray_DATA(xa),
                                    <const double*>cnp.PyArray_DATA(ga),
                                    <const double*>cnp.PyArray_DATA(ba),
                                    <const double*>cnp.PyArray_DATA(rm),
                                    <const double*>cnp.PyArray_DATA(invstd),
                                    <double*>cnp.PyArray_DATA(out),
                                    <double*>cnp.PyArray_DATA(xhat), B, D)
    return out, _new_cache({"op": "batchnorm_eval", "dtype": dt, "xhat": xhat, "gamma": ga,
                            "invstd": invstd})


def batchnorm_eval_backward_fast(dout, cache, out=None):
    """``ops.batchnorm_eval_backward``: (dx, dgamma, dbeta), or None."""
    cdef dict c = _cache_of(cache, "batchnorm_eval")
    cdef tuple args = _bn_backward_args(dout, c, out) if c is not None else None
    cdef cnp.ndarray g, xhat, gamma, invstd, dx, dgamma, dbeta
    cdef npy_intp B, D
    cdef double* ws
    if args is None:
        return None
    dt, g, xhat, gamma, invstd, dx, dgamma, dbeta = args
    B, D = _dim(xhat, 0), _dim(xhat, 1)
    ws = _zeros(2 * D)
    try:
        with nogil:
            if dt is _F32:
                _batchnorm_eval_backward(<const float*>cnp.PyArray_DATA(g),
                                         <const float*>cnp.PyArray_DATA(xhat),
                                         <const float*>cnp.PyArray_DATA(gamma),
                                         <const float*>cnp.PyArray_DATA(invstd),
                                         <float*>cnp.PyArray_DATA(dx),
                                         <float*>cnp.PyArray_DATA(dgamma),
                                         <float*>cnp.PyArray_DATA(dbeta), ws, B, D)
            else:
                _batchnorm_eval_backward(<const double*>cnp.PyArray_DATA(g),
                                         <const double*>cnp.PyArray_DATA(xhat),
                                         <const double*>cnp.PyArray_DATA(gamma),
                                         <const double*>cnp.PyArray_DATA(invstd),
                                         <double*>cnp.PyArray_DATA(dx),
                                         <double*>cnp.PyArray_DATA(dgamma),
                                         <double*>cnp.PyArray_DATA(dbeta), ws, B, D)
    finally:
        free(ws)
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------------------------
# softmax cross-entropy

def cross_entropy_forward_fast(logits, target):
    """``ops.cross_entropy_forward`` for logits (B, C), B, C >= 1, and target (B,) int64 in
    [0, C): (loss, cache), or None."""
    cdef cnp.ndarray la = _floats(logits, 2), ta, private, probs
    cdef npy_intp B, C
    cdef double loss
    if la is None:
        return None
    B, C = _dim(la, 0), _dim(la, 1)
    ta = _array(target, _I64, 1)
    if B < 1 or C < 1 or ta is None or _dim(ta, 0) != B:
        return None
    private = _private_ids(ta, C, 1, &B)
    if private is None:
        return None
    dt = _dtype(la)
    probs = _empty(2, cnp.PyArray_DIMS(la), dt)
    with nogil:
        if dt is _F32:
            loss = _cross_entropy_forward(<const float*>cnp.PyArray_DATA(la),
                                          <const int64_t*>cnp.PyArray_DATA(private),
                                          <float*>cnp.PyArray_DATA(probs), True, B, C)
        else:
            loss = _cross_entropy_forward(<const double*>cnp.PyArray_DATA(la),
                                          <const int64_t*>cnp.PyArray_DATA(private),
                                          <double*>cnp.PyArray_DATA(probs), True, B, C)
    return dt.type(loss), _new_cache({"op": "cross_entropy", "dtype": dt, "probs": probs,
                                      "target": private})


def cross_entropy_backward_fast(dloss, cache):
    """``ops.cross_entropy_backward`` for a float dloss: dlogits (B, C), or None."""
    cdef dict c = _cache_of(cache, "cross_entropy")
    cdef cnp.ndarray probs, ta, private, dl
    cdef npy_intp B, C
    cdef double scale
    if c is None or type(dloss) is not float:
        return None
    scale = <double>dloss
    dt = _cache_dtype(c)
    if dt is None:
        return None
    probs, ta = _array(c.get("probs"), dt, 2), _array(c.get("target"), _I64, 1)
    if probs is None or ta is None:
        return None
    B, C = _dim(probs, 0), _dim(probs, 1)
    if B < 1 or C < 1 or _dim(ta, 0) != B:
        return None
    private = _private_ids(ta, C, 1, &B)
    if private is None:
        return None
    dl = _empty(2, cnp.PyArray_DIMS(probs), dt)
    with nogil:
        if dt is _F32:
            _cross_entropy_backward(scale, <const float*>cnp.PyArray_DATA(probs),
                                    <const int64_t*>cnp.PyArray_DATA(private),
                                    <float*>cnp.PyArray_DATA(dl), B, C)
        else:
            _cross_entropy_backward(scale, <const double*>cnp.PyArray_DATA(probs),
                                    <const int64_t*>cnp.PyArray_DATA(private),
                                    <double*>cnp.PyArray_DATA(dl), B, C)
    return dl


# ----------------------------------------------------------------------------------------------
# the per-layer step's bulk work: the SGD update of every parameter, the copy of the running
# statistics (fastbn.model.CharMLP.train_step), their update (fastbn.nn.BatchNorm1d)

def sgd_update(list params, list grads, lr):
    """``p -= lr * g`` for every pair of the two lists, in one call: True when done; False, with
    nothing updated, unless every pair is the common case (see below). (``sgd_update_finite``
    also says whether the parameters are finite afterwards.)"""
    return _sgd_update(params, grads, lr) >= 0


def sgd_update_finite(list params, list grads, lr):
    """``sgd_update``, and whether every updated parameter is finite: None (not the common
    case, nothing updated), else True, or False when some parameter holds a NaN or an infinity
    after the update (a flag the update loop raises as it writes, no second pass)."""
    cdef int r = _sgd_update(params, grads, lr)
    return None if r < 0 else r == 1


cdef int _sgd_update(list params, list grads, lr) except -2:
    """-1: declined, nothing updated; 1: done, every parameter finite afterwards; 0: done,
    some not finite.

    The common case: ``lr`` a Python float; each p an ndarray (not a subclass) of float32 or
    float64, C-contiguous, aligned and writeable, its g of the same dtype and shape, C-contiguous
    and aligned, sharing no memory with any parameter (a parameter overlapping another one is
    refused too). The result is NumPy's ``p -= lr * g`` bit for bit (fb_layer_sgd_f32 in
    csrc/fused.c, vectorized per CPU with no FMA). Everything is checked before anything is
    written, with the GIL held; the updates run without it.
    """
    cdef Py_ssize_t j, k, n = len(params)
    cdef cnp.ndarray p, g
    cdef list ps = [], gs = []
    cdef double r
    cdef void** ptr                         # (2 n,) the parameters' data, then the gradients'
    cdef int64_t* size                      # (n,)
    cdef char* f32                          # (n,) float32 (1) or float64 (0)
    cdef int ok = 1
    if len(grads) != n or type(lr) is not float:
        return -1
    r = <double>lr
    for k in range(n):
        p = _floats(params[k], -1)
        if p is None or not cnp.PyArray_CHKFLAGS(p, cnp.NPY_ARRAY_WRITEABLE):
            return -1
        g = _array(grads[k], _dtype(p), cnp.PyArray_NDIM(p))
        if (g is None or not _dims_are(g, cnp.PyArray_NDIM(p), cnp.PyArray_DIMS(p))
                or _overlap(p, g)):
            return -1
        for j in range(k):                  # every pair of a parameter and another array
            if (_overlap(p, <cnp.ndarray>ps[j]) or _overlap(p, <cnp.ndarray>gs[j])
                    or _overlap(g, <cnp.ndarray>ps[j])):
                return -1
        ps.append(p)
        gs.append(g)
    ptr = <void**>malloc(max(n, 1) * (2 * sizeof(void*) + sizeof(int64_t) + 1))
    if ptr == NULL:
        raise MemoryError()
    size = <int64_t*>(ptr + 2 * n)
    f32 = <char*>(size + n)
    for k in range(n):
        ptr[k] = cnp.PyArray_DATA(<cnp.ndarray>ps[k])
        ptr[n + k] = cnp.PyArray_DATA(<cnp.ndarray>gs[k])
        size[k] = cnp.PyArray_SIZE(<cnp.ndarray>ps[k])
        f32[k] = _dtype(<cnp.ndarray>ps[k]) is _F32
    with nogil:
        for k in range(n):
            if f32[k]:
                ok &= fb_layer_sgd_f32(<float*>ptr[k], <const float*>ptr[n + k], <float>r,
                                       size[k])
            else:
                ok &= fb_layer_sgd_f64(<double*>ptr[k], <const double*>ptr[n + k], r, size[k])
    free(ptr)
    return ok


def all_finite(list arrays):
    """The index of the first array of ``arrays`` that holds a NaN or an infinity, or -1 when
    every one is finite: one call for the lot. Float32 and float64 ndarrays, C-contiguous and
    aligned, are read by a compiled loop (their pointers and sizes taken with the GIL held, the
    arrays kept referenced, the loops run without it); anything else goes through NumPy
    (``np.isfinite``; an array of integers or booleans is finite)."""
    cdef Py_ssize_t k, n = len(arrays)
    cdef cnp.ndarray a
    cdef list held = []
    cdef const void* data
    cdef int64_t size
    cdef int ok
    cdef bint f32
    for k in range(n):
        a = _floats(arrays[k], -1)
        if a is None:
            x = np.asarray(arrays[k])
            if x.dtype.kind in "fc" and not np.isfinite(x).all():
                return k
            continue
        held.append(a)                      # alive while the loop reads it
        data, size, f32 = cnp.PyArray_DATA(a), cnp.PyArray_SIZE(a), _dtype(a) is _F32
        if size < 65536:                    # a few microseconds at most: keep the GIL
            ok = fb_all_finite_f32(<const float*>data, size) if f32 else \
                fb_all_finite_f64(<const double*>data, size)
        else:
            with nogil:
                if f32:
                    ok = fb_all_finite_f32(<const float*>data, size)
                else:
                    ok = fb_all_finite_f64(<const double*>data, size)
        if not ok:
            return k
    return -1


def copy_arrays(list src, list dst):
    """``dst[k][...] = src[k]`` for every pair, in one call: True when done; False, with nothing
    copied, unless every pair is two float ndarrays of one dtype and shape, C-contiguous and
    aligned, dst writeable and sharing no memory with any array of either list but itself."""
    cdef Py_ssize_t k, n = len(src)
    cdef cnp.ndarray s, d
    cdef list ss = [], ds = []
    if len(dst) != n:
        return False
    for k in range(n):
        s = _floats(src[k], -1)
        if s is None:
            return False
        d = _array(dst[k], _dtype(s), cnp.PyArray_NDIM(s))
        if (d is None or not _dims_are(d, cnp.PyArray_NDIM(s), cnp.PyArray_DIMS(s))
                or not cnp.PyArray_CHKFLAGS(d, cnp.NPY_ARRAY_WRITEABLE) or _overlap(d, s)):
            return False
        for q in ss + ds:                    # every pair of a destination and another array
            if _overlap(d, <cnp.ndarray>q):
                return False
        for q in ds:
            if _overlap(s, <cnp.ndarray>q):
                return False
        ss.append(s)
        ds.append(d)
    for k in range(n):
        memcpy(cnp.PyArray_DATA(<cnp.ndarray>ds[k]), cnp.PyArray_DATA(<cnp.ndarray>ss[k]),
               cnp.PyArray_NBYTES(<cnp.ndarray>ss[k]))
    return True


def batchnorm_running_update(running_mean, running_var, mean, var, momentum):
    """``running = (1 - momentum) * running + momentum * batch`` for the mean and the variance,
    in one call, as ``fastbn.nn.BatchNorm1d`` writes it in NumPy (``running *= 1 - m;
    running += m * batch``) and bit for bit the same: True when done; False, with nothing
    changed, unless momentum is a Python float and the four are float ndarrays of one dtype
    and shape (D,), C-contiguous and aligned, the running ones writeable and apart from the
    others."""
    cdef cnp.ndarray rm = _floats(running_mean, 1), rv, m, v
    cdef double keep, take
    cdef npy_intp n
    if rm is None or type(momentum) is not float:
        return False
    dt = _dtype(rm)
    rv, m, v = _array(running_var, dt, 1), _array(mean, dt, 1), _array(var, dt, 1)
    if rv is None or m is None or v is None:
        return False
    n = _dim(rm, 0)
    for a in (rv, m, v):
        if _dim(<cnp.ndarray>a, 0) != n:
            return False
    if (not cnp.PyArray_CHKFLAGS(rm, cnp.NPY_ARRAY_WRITEABLE)
            or not cnp.PyArray_CHKFLAGS(rv, cnp.NPY_ARRAY_WRITEABLE)
            or _overlap(rm, rv) or _overlap(rm, m) or _overlap(rm, v) or _overlap(rv, m)
            or _overlap(rv, v)):
        return False
    keep, take = 1.0 - <double>momentum, <double>momentum
    with nogil:
        if dt is _F32:
            fb_layer_running_f32(<float*>cnp.PyArray_DATA(rm),
                                 <const float*>cnp.PyArray_DATA(m), <float>keep, <float>take, n)
            fb_layer_running_f32(<float*>cnp.PyArray_DATA(rv),
                                 <const float*>cnp.PyArray_DATA(v), <float>keep, <float>take, n)
        else:
            fb_layer_running_f64(<double*>cnp.PyArray_DATA(rm),
                                 <const double*>cnp.PyArray_DATA(m), keep, take, n)
            fb_layer_running_f64(<double*>cnp.PyArray_DATA(rv),
                                 <const double*>cnp.PyArray_DATA(v), keep, take, n)
    return True
