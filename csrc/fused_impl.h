/* The fused step for one floating type: included by fused.c with REAL (float or double),
 * SFX(name) (the suffix), GEMM_FN (sgemm or dgemm field of fb_net), TANH and EXP defined.
 * Shapes follow fused.h; every matrix is row-major. */

/* Row-major C (M, N) = alpha op(A) op(B) + beta C through column-major BLAS: ask for
 * C^T = op(B)^T op(A)^T, operands swapped, flags kept (A is (K, M) when ta, B is (N, K) when tb). */
static inline void SFX(fb_gemm)(const fb_net *net, int ta, int tb, int M, int N, int K,
                                REAL alpha, const REAL *A, const REAL *B, REAL beta, REAL *C) {
    char cta = ta ? 'T' : 'N', ctb = tb ? 'T' : 'N';
    int lda = ta ? M : K, ldb = tb ? K : N, ldc = N;
    net->GEMM_FN(&ctb, &cta, &N, &M, &K, &alpha, (REAL *)B, &ldb, (REAL *)A, &lda, &beta, C, &ldc);
}

/* One row of batch norm and tanh: xhat = (x - mean) invstd, h = tanh(gamma xhat + beta). */
static inline void SFX(fb_bn_tanh_row)(const REAL *restrict x, REAL *restrict xhat,
                                       REAL *restrict h, const REAL *restrict mean,
                                       const REAL *restrict invstd, const REAL *restrict gamma,
                                       const REAL *restrict beta, int H) {
    for (int j = 0; j < H; j++) {
        const REAL z = (x[j] - mean[j]) * invstd[j];
        xhat[j] = z;
        h[j] = TANH(gamma[j] * z + beta[j]);
    }
}

/* The forward pass to the loss: batch statistics when training, else the running statistics
 * (which it never changes). Leaves the softmax in net->logits. */
static FB_INLINE double SFX(fb_forward)(fb_net *net, const int64_t *X, const int64_t *Y,
                                        const int64_t *rows, int training) {
    const int B = net->B, T = net->T, D = net->D, V = net->V, L = net->L;
    REAL *restrict x0 = (REAL *)net->x0;
    const REAL *restrict C = (const REAL *)net->C;
    double *restrict acc1 = net->acc1, *restrict acc2 = net->acc2;

    /* the minibatch: ctx = X[rows], tgt = Y[rows]. Rows are random, so each read misses the
     * cache; prefetching a few rows ahead overlaps the misses. */
    int64_t *restrict ctx = net->ctx, *restrict tgt = net->tgt;
    for (int b = 0; b < B; b++) {
        if (b + 8 < B) {
            __builtin_prefetch(X + rows[b + 8] * T);
            __builtin_prefetch(Y + rows[b + 8]);
        }
        for (int t = 0; t < T; t++) ctx[(int64_t)b * T + t] = X[rows[b] * T + t];
        tgt[b] = Y[rows[b]];
    }

    /* embedding: x0[b, t*D + d] = C[ctx[b, t], d] (not needed with the table, see below) */
    if (!net->table)
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                memcpy(x0 + (int64_t)b * T * D + t * D, C + ctx[(int64_t)b * T + t] * D,
                       D * sizeof(REAL));

    const REAL *in = x0;
    int I = T * D;
    for (int l = 0; l < L; l++) {
        const int H = net->H[l];
        REAL *restrict hpre = (REAL *)net->hpre[l], *restrict xhat = (REAL *)net->xhat[l];
        REAL *restrict h = (REAL *)net->h[l];
        REAL *restrict mean = (REAL *)net->mean[l], *restrict invstd = (REAL *)net->invstd[l];
        REAL *restrict var = (REAL *)net->var[l];
        const REAL *restrict gamma = (const REAL *)net->gamma[l];
        const REAL *restrict beta = (const REAL *)net->beta[l];

        if (l == 0 && net->table) {
            /* The first layer through a table: x0 @ W_0 = sum_t C[ctx[:, t]] @ W_0[t*D:(t+1)*D]
             * = sum_t E_t[ctx[:, t]] with E_t = C @ W_0[t*D:(t+1)*D] (V, H). T GEMMs of V*D*H
             * instead of one of B*T*D*H, and a gather-add of B*T rows. */
            REAL *restrict tab = (REAL *)net->tab;
            const REAL *W0 = (const REAL *)net->W[0];
            for (int t = 0; t < T; t++)
                SFX(fb_gemm)(net, 0, 0, V, H, D, 1, C, W0 + (int64_t)t * D * H, 0,
                             tab + (int64_t)t * V * H);
            for (int b = 0; b < B; b++) {
                REAL *restrict row = hpre + (int64_t)b * H;
                const int64_t *c = ctx + (int64_t)b * T;
                const REAL *restrict e0 = tab + c[0] * H;
                for (int j = 0; j < H; j++) row[j] = e0[j];
                for (int t = 1; t < T; t++) {
                    const REAL *restrict et = tab + ((int64_t)t * V + c[t]) * H;
                    for (int j = 0; j < H; j++) row[j] += et[j];
                }
            }
        } else {
            /* hpre = in @ W_l */
            SFX(fb_gemm)(net, 0, 0, B, H, I, 1, in, (const REAL *)net->W[l], 0, hpre);
        }

        if (training) {
            /* batch statistics, two passes (mean, then squared deviations), double sums */
            for (int j = 0; j < H; j++) acc1[j] = 0, acc2[j] = 0;
            for (int b = 0; b < B; b++) {
                const REAL *row = hpre + (int64_t)b * H;
                for (int j = 0; j < H; j++) acc1[j] += row[j];
            }
            for (int j = 0; j < H; j++) acc1[j] /= B;
            for (int b = 0; b < B; b++) {
                const REAL *row = hpre + (int64_t)b * H;
                for (int j = 0; j < H; j++) {
                    double dev = row[j] - acc1[j];
                    acc2[j] += dev * dev;
                }
            }
            for (int j = 0; j < H; j++) {
                mean[j] = (REAL)acc1[j];
                invstd[j] = (REAL)(1.0 / sqrt(acc2[j] / B + net->eps));   /* biased var */
                var[j] = (REAL)(acc2[j] / (B - 1));                         /* unbiased */
            }
        } else {
            const REAL *restrict rm = (const REAL *)net->rmean[l];
            const REAL *restrict rv = (const REAL *)net->rvar[l];
            for (int j = 0; j < H; j++) {
                mean[j] = rm[j];
                invstd[j] = (REAL)(1.0 / sqrt((double)rv[j] + net->eps));
            }
        }
        /* one pass: normalize, scale and shift, tanh */
        for (int b = 0; b < B; b++) {
            const int64_t o = (int64_t)b * H;
            SFX(fb_bn_tanh_row)(hpre + o, xhat + o, h + o, mean, invstd, gamma, beta, H);
        }
        in = h;
        I = H;
    }

    /* logits = h @ Wout + bout, then softmax and the loss, row by row */
    REAL *restrict lg = (REAL *)net->logits;
    const REAL *restrict bout = (const REAL *)net->bout;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < V; c++) lg[(int64_t)b * V + c] = bout[c];
    SFX(fb_gemm)(net, 0, 0, B, V, I, 1, in, (const REAL *)net->Wout, 1, lg);

    double total = 0;
    for (int b = 0; b < B; b++) {
        REAL *restrict row = lg + (int64_t)b * V;
        REAL m = row[0];
        for (int c = 1; c < V; c++) m = row[c] > m ? row[c] : m;
        const REAL target_logit = row[tgt[b]];
        for (int c = 0; c < V; c++) row[c] = EXP(row[c] - m);     /* vectorizes */
        double s = 0;
        for (int c = 0; c < V; c++) s += row[c];                  /* an ordered sum does not */
        const REAL inv = (REAL)(1.0 / s);
        for (int c = 0; c < V; c++) row[c] *= inv;
        total += (double)m + log(s) - (double)target_logit;
    }
    return total / B;
}

FB_CLONES double SFX(fb_loss)(fb_net *net, const int64_t *X, const int64_t *Y,
                              const int64_t *rows, int training) {
    return SFX(fb_forward)(net, X, Y, rows, training);
}

/* p -= lr * g over n elements */
static inline void SFX(fb_sgd)(REAL *restrict p, const REAL *restrict g, int64_t n, REAL lr) {
    for (int64_t i = 0; i < n; i++) p[i] -= lr * g[i];
}

static FB_INLINE double SFX(fb_step_impl)(fb_net *net, const int64_t *X, const int64_t *Y,
                                          const int64_t *rows, REAL lr) {
    const int B = net->B, T = net->T, D = net->D, V = net->V, L = net->L;
    double *restrict acc1 = net->acc1, *restrict acc2 = net->acc2;

    const double loss = SFX(fb_forward)(net, X, Y, rows, 1);
    if (!isfinite(loss)) return loss;

    /* running statistics, from this step's batch statistics (as BatchNorm1d does in forward) */
    for (int l = 0; l < L; l++) {
        const int H = net->H[l];
        REAL *restrict rm = (REAL *)net->rmean[l], *restrict rv = (REAL *)net->rvar[l];
        const REAL *restrict mean = (const REAL *)net->mean[l];
        const REAL *restrict var = (const REAL *)net->var[l];
        const REAL m = (REAL)net->momentum;
        for (int j = 0; j < H; j++) {
            rm[j] = rm[j] * (1 - m) + m * mean[j];
            rv[j] = rv[j] * (1 - m) + m * var[j];
        }
    }

    /* cross-entropy backward, in place: dlogits = (softmax - onehot) / B */
    REAL *restrict dl = (REAL *)net->logits;
    const REAL invB = (REAL)(1.0 / B);
    for (int b = 0; b < B; b++) {
        REAL *restrict row = dl + (int64_t)b * V;
        row[net->tgt[b]] -= 1;
        for (int c = 0; c < V; c++) row[c] *= invB;
    }

    /* output layer: dWout = h^T @ dlogits, dbout = sum_b dlogits, dh = dlogits @ Wout^T */
    const int Hl = net->H[L - 1];
    const REAL *hlast = (const REAL *)net->h[L - 1];
    REAL *restrict dh = (REAL *)net->dh;
    SFX(fb_gemm)(net, 1, 0, Hl, V, B, 1, hlast, dl, 0, (REAL *)net->dWout);
    for (int c = 0; c < V; c++) acc1[c] = 0;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < V; c++) acc1[c] += dl[(int64_t)b * V + c];
    REAL *restrict dbout = (REAL *)net->dbout;
    for (int c = 0; c < V; c++) dbout[c] = (REAL)acc1[c];
    SFX(fb_gemm)(net, 0, 1, B, Hl, V, 1, dl, (const REAL *)net->Wout, 0, dh);

    for (int l = L - 1; l >= 0; l--) {
        const int H = net->H[l];
        const int I = l ? net->H[l - 1] : T * D;
        REAL *restrict g = (REAL *)net->hpre[l];        /* becomes dhpre */
        const REAL *restrict xhat = (const REAL *)net->xhat[l];
        const REAL *restrict h = (const REAL *)net->h[l];
        const REAL *restrict gamma = (const REAL *)net->gamma[l];
        const REAL *restrict invstd = (const REAL *)net->invstd[l];

        /* tanh backward, dy = dh (1 - h^2), with the batch sums of batch norm's backward:
         * dbeta = sum_b dy, dgamma = sum_b dy xhat */
        for (int j = 0; j < H; j++) acc1[j] = 0, acc2[j] = 0;
        for (int b = 0; b < B; b++) {
            const int64_t o = (int64_t)b * H;
            for (int j = 0; j < H; j++) {
                REAL dy = dh[o + j] * (1 - h[o + j] * h[o + j]);
                g[o + j] = dy;
                acc1[j] += dy;
                acc2[j] += dy * xhat[o + j];
            }
        }
        REAL *restrict dgamma = (REAL *)net->dgamma[l], *restrict dbeta = (REAL *)net->dbeta[l];
        for (int j = 0; j < H; j++) dbeta[j] = (REAL)acc1[j], dgamma[j] = (REAL)acc2[j];
        /* dhpre = gamma invstd / B (B dy - dbeta - xhat dgamma), in place over dy; the
         * per-feature factors reuse the accumulators as REAL-valued scratch */
        REAL *restrict k = (REAL *)acc1;     /* acc1 holds H doubles: room for H REALs */
        for (int j = 0; j < H; j++) k[j] = gamma[j] * invstd[j] * invB;
        for (int b = 0; b < B; b++) {
            const int64_t o = (int64_t)b * H;
            for (int j = 0; j < H; j++)
                g[o + j] = k[j] * ((REAL)B * g[o + j] - dbeta[j] - xhat[o + j] * dgamma[j]);
        }
        if (l == 0 && net->table) {
            /* with S_t[v] = sum of dhpre rows b with ctx[b, t] == v (V, H):
             * dW_0[t*D:(t+1)*D] = C^T @ S_t, and dC = sum_t S_t @ W_0[t*D:(t+1)*D]^T */
            REAL *restrict tab = (REAL *)net->tab;
            const REAL *W0 = (const REAL *)net->W[0];
            memset(tab, 0, sizeof(REAL) * (size_t)T * (size_t)V * (size_t)H);
            for (int b = 0; b < B; b++) {
                const REAL *restrict src = g + (int64_t)b * H;
                for (int t = 0; t < T; t++) {
                    REAL *restrict st = tab + ((int64_t)t * V + net->ctx[(int64_t)b * T + t]) * H;
                    for (int j = 0; j < H; j++) st[j] += src[j];
                }
            }
            for (int t = 0; t < T; t++) {
                const REAL *St = tab + (int64_t)t * V * H;
                SFX(fb_gemm)(net, 1, 0, D, H, V, 1, (const REAL *)net->C, St, 0,
                             (REAL *)net->dW[0] + (int64_t)t * D * H);
                SFX(fb_gemm)(net, 0, 1, V, D, H, 1, St, W0 + (int64_t)t * D * H, t ? 1 : 0,
                             (REAL *)net->dC);
            }
        } else {
            /* dW_l = in^T @ dhpre; d(in) = dhpre @ W_l^T into dh (free once dy is formed) */
            const REAL *in = l ? (const REAL *)net->h[l - 1] : (const REAL *)net->x0;
            SFX(fb_gemm)(net, 1, 0, I, H, B, 1, in, g, 0, (REAL *)net->dW[l]);
            SFX(fb_gemm)(net, 0, 1, B, I, H, 1, g, (const REAL *)net->W[l], 0, dh);
        }
    }

    /* embedding backward: scatter-add d(x0) into dC (the table has V rows) */
    REAL *restrict dC = (REAL *)net->dC;
    if (!net->table) memset(dC, 0, sizeof(REAL) * (size_t)D * (size_t)V);
    for (int b = 0; b < B && !net->table; b++) {
        const int64_t *ctx = net->ctx + (int64_t)b * T;
        for (int t = 0; t < T; t++) {
            REAL *restrict drow = dC + ctx[t] * D;
            const REAL *restrict src = dh + (int64_t)b * T * D + t * D;
            for (int d = 0; d < D; d++) drow[d] += src[d];
        }
    }

    /* SGD on every parameter */
    SFX(fb_sgd)((REAL *)net->C, dC, (int64_t)V * D, lr);
    for (int l = 0; l < L; l++) {
        const int H = net->H[l];
        const int I = l ? net->H[l - 1] : T * D;
        SFX(fb_sgd)((REAL *)net->W[l], (const REAL *)net->dW[l], (int64_t)I * H, lr);
        SFX(fb_sgd)((REAL *)net->gamma[l], (const REAL *)net->dgamma[l], H, lr);
        SFX(fb_sgd)((REAL *)net->beta[l], (const REAL *)net->dbeta[l], H, lr);
    }
    SFX(fb_sgd)((REAL *)net->Wout, (const REAL *)net->dWout, (int64_t)Hl * V, lr);
    SFX(fb_sgd)((REAL *)net->bout, (const REAL *)net->dbout, V, lr);
    return loss;
}

FB_CLONES double SFX(fb_step)(fb_net *net, const int64_t *X, const int64_t *Y,
                              const int64_t *rows, REAL lr) {
    return SFX(fb_step_impl)(net, X, Y, rows, lr);
}

FB_CLONES int64_t SFX(fb_train)(fb_net *net, const int64_t *X, const int64_t *Y, int64_t n,
                                int64_t steps, REAL lr, uint64_t *rng, double *losses) {
    for (int64_t s = 0; s < steps; s++) {
        fb_draw_rows(rng, n, net->B, net->rows);
        double loss = SFX(fb_step_impl)(net, X, Y, net->rows, lr);
        losses[s] = loss;
        if (!isfinite(loss)) return s;
    }
    return steps;
}
