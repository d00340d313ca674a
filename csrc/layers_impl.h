/* The per-layer path's loops for one floating type: included by layers.c with REAL (float or
 * double) and SFX(name) (the suffix) defined. Each loop is the kernel _kernels.pyx describes,
 * written so that every intermediate has the type it has there: a product of two REALs is a
 * REAL (rounded to the dtype), a REAL combined with a double is a double. Arrays are row-major;
 * x[i * D + j] is row i, feature j. */

/* tanh backward, from the saved output t = tanh(x): dx = dout * (1 - t^2), with t^2 a REAL and
 * 1 - t^2 and the product in double */
FB_CLONES FB_EXACT void SFX(fb_tanh_backward)(const REAL *dout, const REAL *t, REAL *dx,
                                              int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const REAL t2 = t[i] * t[i];
        dx[i] = (REAL)((double)dout[i] * (1.0 - (double)t2));
    }
}

/* p -= lr * g, rounded as NumPy's `p -= lr * g` for a Python float lr: lr rounded to the dtype
 * (by the caller), the product rounded, then the difference. Returns whether every new p is
 * finite (p - p is 0 for a finite p, NaN for an infinity or a NaN: an integer AND of the
 * comparisons, which vectorizes and changes no value) */
FB_CLONES FB_EXACT int SFX(fb_layer_sgd)(REAL *p, const REAL *g, REAL lr, int64_t n) {
    int ok = 1;
    for (int64_t i = 0; i < n; i++) {
        const REAL step = lr * g[i];
        const REAL v = p[i] - step;
        p[i] = v;
        ok &= v - v == 0;
    }
    return ok;
}

/* whether every x[i] is finite (neither NaN nor an infinity) */
FB_CLONES int SFX(fb_all_finite)(const REAL *x, int64_t n) {
    int ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= x[i] - x[i] == 0;
    return ok;
}

/* r = r * keep + take * batch, rounded as NumPy's `r *= 1 - m; r += m * batch` for a Python
 * float m: keep = 1 - m and take = m rounded to the dtype (by the caller), each product
 * rounded, then the sum. Returns whether every new r is finite (as fb_layer_sgd). The fused
 * step (fused_impl.h) runs this loop too, and fb_layer_sgd: one update for both paths. */
FB_CLONES FB_EXACT int SFX(fb_layer_running)(REAL *r, const REAL *batch, REAL keep, REAL take,
                                             int64_t n) {
    int ok = 1;
    for (int64_t i = 0; i < n; i++) {
        const REAL kept = r[i] * keep;
        const REAL taken = take * batch[i];
        const REAL v = kept + taken;
        r[i] = v;
        ok &= v - v == 0;
    }
    return ok;
}

/* batch norm in training mode (_kernels.pyx: _batchnorm_forward). acc (2 D) is a zeroed
 * workspace: acc, then mu */
FB_CLONES FB_EXACT void SFX(fb_bn_forward)(const REAL *x, const REAL *gamma, const REAL *beta,
                                           double eps, int unbiased, REAL *out, REAL *xhat,
                                           REAL *mean, REAL *invstd, REAL *var_unbiased,
                                           double *acc, int64_t B, int64_t D) {
    double *mu = acc + D;
    const double n = unbiased ? (double)(B - 1) : (double)B;
    for (int64_t i = 0; i < B; i++)
        for (int64_t j = 0; j < D; j++) acc[j] += x[i * D + j];
    for (int64_t j = 0; j < D; j++) {
        mu[j] = acc[j] / (double)B;
        acc[j] = 0.0;
    }
    for (int64_t i = 0; i < B; i++)
        for (int64_t j = 0; j < D; j++) {
            const double dev = x[i * D + j] - mu[j];
            acc[j] += dev * dev;
        }
    for (int64_t j = 0; j < D; j++) {
        const double var_n = acc[j] / n;
        mean[j] = (REAL)mu[j];
        invstd[j] = (REAL)(1.0 / sqrt(var_n + eps));
        var_unbiased[j] = B > 1 ? (REAL)(acc[j] / (double)(B - 1)) : (REAL)0;
    }
    for (int64_t i = 0; i < B; i++)
        for (int64_t j = 0; j < D; j++) {
            const REAL z = (REAL)((x[i * D + j] - mu[j]) * invstd[j]);
            xhat[i * D + j] = z;
            out[i * D + j] = gamma[j] * z + beta[j];
        }
}

/* its backward (_kernels.pyx: _batchnorm_backward). sb (3 D) is a zeroed workspace: sb, sg, k */
FB_CLONES FB_EXACT void SFX(fb_bn_backward)(const REAL *dout, const REAL *xhat, const REAL *gamma,
                                            const REAL *invstd, int unbiased, REAL *dx,
                                            REAL *dgamma, REAL *dbeta, double *sb, int64_t B,
                                            int64_t D) {
    double *sg = sb + D, *k = sb + 2 * D;
    const double c = (unbiased && B > 1) ? (double)B / (double)(B - 1) : 1.0;
    for (int64_t i = 0; i < B; i++)
        for (int64_t j = 0; j < D; j++) {
            const REAL d = dout[i * D + j];
            const REAL dz = d * xhat[i * D + j];
            sb[j] += d;
            sg[j] += dz;
        }
    for (int64_t j = 0; j < D; j++) {
        dbeta[j] = (REAL)sb[j];
        dgamma[j] = (REAL)sg[j];
        sg[j] *= c;                                     /* (B / n) dgamma; exact when c = 1 */
        const REAL gi = gamma[j] * invstd[j];
        k[j] = gi / (double)B;
    }
    for (int64_t i = 0; i < B; i++)
        for (int64_t j = 0; j < D; j++) {
            const REAL bd = (REAL)B * dout[i * D + j];
            dx[i * D + j] = (REAL)(k[j] * (bd - sb[j] - xhat[i * D + j] * sg[j]));
        }
}

/* batch norm in eval mode (_kernels.pyx: _batchnorm_eval_forward), all in REAL. xhat NULL: out
 * alone (inference, fastbn/inference.py), the same z and out; out may be x (in place: each
 * element is read before it is written, and by no other) */
FB_CLONES FB_EXACT void SFX(fb_bn_eval_forward)(const REAL *x, const REAL *gamma,
                                                const REAL *beta, const REAL *mean,
                                                const REAL *invstd, REAL *out, REAL *xhat,
                                                int64_t B, int64_t D) {
    if (xhat == NULL) {
        for (int64_t i = 0; i < B; i++)
            for (int64_t j = 0; j < D; j++) {
                const REAL z = (x[i * D + j] - mean[j]) * invstd[j];
                out[i * D + j] = gamma[j] * z + beta[j];
            }
        return;
    }
    for (int64_t i = 0; i < B; i++)
        for (int64_t j = 0; j < D; j++) {
            const REAL z = (x[i * D + j] - mean[j]) * invstd[j];
            xhat[i * D + j] = z;
            out[i * D + j] = gamma[j] * z + beta[j];
        }
}

/* its backward (_kernels.pyx: _batchnorm_eval_backward). sb (2 D) is a zeroed workspace */
FB_CLONES FB_EXACT void SFX(fb_bn_eval_backward)(const REAL *dout, const REAL *xhat,
                                                 const REAL *gamma, const REAL *invstd, REAL *dx,
                                                 REAL *dgamma, REAL *dbeta, double *sb,
                                                 int64_t B, int64_t D) {
    double *sg = sb + D;
    for (int64_t i = 0; i < B; i++)
        for (int64_t j = 0; j < D; j++) {
            const REAL d = dout[i * D + j];
            const REAL dz = d * xhat[i * D + j];
            sb[j] += d;
            sg[j] += dz;
            const REAL dg = d * gamma[j];
            dx[i * D + j] = dg * invstd[j];
        }
    for (int64_t j = 0; j < D; j++) {
        dbeta[j] = (REAL)sb[j];
        dgamma[j] = (REAL)sg[j];
    }
}
