/* The fused step for one floating type: included by fused.c with REAL (float or double),
 * SFX(name) (the suffix), GEMM_FN (sgemm or dgemm field of fb_net), TANH and EXP defined.
 * Shapes follow fused.h; every matrix is row-major. */

/* Row-major C (M, N) = alpha op(A) op(B) + beta C through column-major BLAS: ask for
 * C^T = op(B)^T op(A)^T, operands swapped, flags kept (A is (K, M) when ta, B is (N, K) when tb);
 * lda, ldb, ldc are the row strides of A, B and C as stored. */
static inline void SFX(fb_gemm_ld)(const fb_net *net, int ta, int tb, int M, int N, int K,
                                   REAL alpha, const REAL *A, int lda, const REAL *B, int ldb,
                                   REAL beta, REAL *C, int ldc) {
    char cta = ta ? 'T' : 'N', ctb = tb ? 'T' : 'N';
    net->GEMM_FN(&ctb, &cta, &N, &M, &K, &alpha, (REAL *)B, &ldb, (REAL *)A, &lda, &beta, C, &ldc);
}

/* the same on contiguous operands */
static inline void SFX(fb_gemm)(const fb_net *net, int ta, int tb, int M, int N, int K,
                                REAL alpha, const REAL *A, const REAL *B, REAL beta, REAL *C) {
    SFX(fb_gemm_ld)(net, ta, tb, M, N, K, alpha, A, ta ? M : K, B, tb ? K : N, beta, C, N);
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

/* Sums over the rows of a (B, H) array, per column. The columns go in blocks of FB_W (one
 * 64-byte line), the rows inner, so a block's partial sums stay in registers; rows are added in
 * REAL within chunks of FB_CHUNK rows and the chunks in double. w is FB_W (a constant, for the
 * vectorized loop) or less (a narrow array's one block). */
#define FB_W (64 / (int)sizeof(REAL))

/* s1[j] = sum_b x[b, j] for the columns j0..j0+w */
static FB_INLINE void SFX(fb_colsum_block)(const REAL *restrict x, int B, int H, int j0, int w,
                                          double *restrict s1) {
    double t1[FB_W];
    for (int k = 0; k < w; k++) t1[k] = 0;
    for (int b0 = 0; b0 < B; b0 += FB_CHUNK) {
        const int b1 = b0 + FB_CHUNK < B ? b0 + FB_CHUNK : B;
        REAL a1[FB_W];
        for (int k = 0; k < w; k++) a1[k] = 0;
        for (int b = b0; b < b1; b++)
            for (int k = 0; k < w; k++) a1[k] += x[(int64_t)b * H + j0 + k];
        for (int k = 0; k < w; k++) t1[k] += a1[k];
    }
    for (int k = 0; k < w; k++) s1[j0 + k] = t1[k];
}

/* s2[j] = sum_b (x[b, j] - mean[j])^2 for the columns j0..j0+w */
static FB_INLINE void SFX(fb_colsqdev_block)(const REAL *restrict x, const REAL *restrict mean,
                                            int B, int H, int j0, int w, double *restrict s2) {
    double t2[FB_W];
    for (int k = 0; k < w; k++) t2[k] = 0;
    for (int b0 = 0; b0 < B; b0 += FB_CHUNK) {
        const int b1 = b0 + FB_CHUNK < B ? b0 + FB_CHUNK : B;
        REAL a2[FB_W];
        for (int k = 0; k < w; k++) a2[k] = 0;
        for (int b = b0; b < b1; b++)
            for (int k = 0; k < w; k++) {
                const REAL dev = x[(int64_t)b * H + j0 + k] - mean[j0 + k];
                a2[k] += dev * dev;
            }
        for (int k = 0; k < w; k++) t2[k] += a2[k];
    }
    for (int k = 0; k < w; k++) s2[j0 + k] = t2[k];
}

/* tanh and batch norm backward, the columns j0..j0+w: dy = dh (1 - h^2) into g, and its sums
 * s1[j] = sum_b dy (dbeta), s2[j] = sum_b dy xhat (dgamma) */
static FB_INLINE void SFX(fb_dy_block)(const REAL *restrict dh, const REAL *restrict h,
                                      const REAL *restrict xhat, REAL *restrict g, int B, int H,
                                      int j0, int w, double *restrict s1, double *restrict s2) {
    double t1[FB_W], t2[FB_W];
    for (int k = 0; k < w; k++) t1[k] = 0, t2[k] = 0;
    for (int b0 = 0; b0 < B; b0 += FB_CHUNK) {
        const int b1 = b0 + FB_CHUNK < B ? b0 + FB_CHUNK : B;
        REAL a1[FB_W], a2[FB_W];
        for (int k = 0; k < w; k++) a1[k] = 0, a2[k] = 0;
        for (int b = b0; b < b1; b++)
            for (int k = 0; k < w; k++) {
                const int64_t o = (int64_t)b * H + j0 + k;
                const REAL dy = dh[o] * (1 - h[o] * h[o]);
                g[o] = dy;
                a1[k] += dy;
                a2[k] += dy * xhat[o];
            }
        for (int k = 0; k < w; k++) t1[k] += a1[k], t2[k] += a2[k];
    }
    for (int k = 0; k < w; k++) s1[j0 + k] = t1[k], s2[j0 + k] = t2[k];
}

/* The sum of x[0..n): 8 interleaved partial sums in REAL (one vector add per 8 elements, where
 * an ordered sum is a chain of dependent adds) over chunks of FB_CHUNK elements, the chunks'
 * sums added in double. */
static inline double SFX(fb_sum)(const REAL *restrict x, int64_t n) {
    double total = 0;
    for (int64_t i0 = 0; i0 < n; i0 += FB_CHUNK) {
        const int w = n - i0 < FB_CHUNK ? (int)(n - i0) : FB_CHUNK;
        REAL p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int i = 0;
        for (; i + 8 <= w; i += 8)
            for (int k = 0; k < 8; k++) p[k] += x[i0 + i + k];
        for (int k = 0; i + k < w; k++) p[k] += x[i0 + i + k];
        total += ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]));
    }
    return total;
}

/* The forward pass to the loss: batch statistics when training, else the running statistics
 * (which it never changes). Leaves softmax^T (V, B) times pscale in net->logits (a step asks
 * for softmax / B, the first term of dlogits). */
static FB_INLINE double SFX(fb_forward)(fb_net *net, const int64_t *X, const int64_t *Y,
                                        const int64_t *rows, int training, double pscale) {
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
            for (int t = 0; t < T; t++) {
                REAL *restrict dst = x0 + (int64_t)b * T * D + t * D;
                const REAL *restrict src = C + ctx[(int64_t)b * T + t] * D;
                for (int d = 0; d < D; d++) dst[d] = src[d];     /* not memcpy: D is small */
            }

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
            /* batch statistics, two passes: the mean, then the squared deviations from it */
            for (int jb = 0; jb < H; jb += FB_W) {
                const int j0 = fb_block_start(jb, FB_W, H);
                if (j0 + FB_W <= H) SFX(fb_colsum_block)(hpre, B, H, j0, FB_W, acc1);
                else SFX(fb_colsum_block)(hpre, B, H, j0, H - j0, acc1);
            }
            for (int j = 0; j < H; j++) mean[j] = (REAL)(acc1[j] / B);
            for (int jb = 0; jb < H; jb += FB_W) {
                const int j0 = fb_block_start(jb, FB_W, H);
                if (j0 + FB_W <= H) SFX(fb_colsqdev_block)(hpre, mean, B, H, j0, FB_W, acc2);
                else SFX(fb_colsqdev_block)(hpre, mean, B, H, j0, H - j0, acc2);
            }
            for (int j = 0; j < H; j++) {
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

    /* logits^T (V, B) = Wout^T @ h^T + bout: row c holds class c's logits for the batch, so the
     * softmax below runs across the batch in full vectors (a row of V = 27 would not fill them).
     * The GEMM goes in panels of FB_PANEL examples, as do the output layer's two in backward:
     * OpenBLAS runs these GEMMs with a side of V = 27 at about half speed once they outgrow its
     * small-matrix kernels (measured at B = 1024). */
    REAL *restrict lg = (REAL *)net->logits;
    const REAL *restrict bout = (const REAL *)net->bout;
    for (int c = 0; c < V; c++)
        for (int b = 0; b < B; b++) lg[(int64_t)c * B + b] = bout[c];
    for (int p = 0; p < B; p += FB_PANEL) {
        const int n = B - p < FB_PANEL ? B - p : FB_PANEL;
        SFX(fb_gemm_ld)(net, 0, 1, V, n, I, 1, (const REAL *)net->WoutT, I, in + (int64_t)p * I,
                        I, 1, lg + p, B);
    }

    /* softmax over the classes of each example (column), FB_SB examples at a time, and the
     * loss: the sum over b of max_b + log s_b - logit_b[target], with one log of a product of
     * sums s_b (each in [1, V]) in double per block instead of one log per example */
    double total = 0;
    for (int b0 = 0; b0 < B; b0 += FB_SB) {
        const int w = B - b0 < FB_SB ? B - b0 : FB_SB;
        REAL *restrict blk = lg + b0;        /* blk[c * B + k]: class c of example b0 + k */
        REAL m[FB_SB], sum[FB_SB];
        for (int k = 0; k < w; k++) m[k] = blk[k], sum[k] = 0;
        for (int k = 0; k < w; k++) total -= blk[tgt[b0 + k] * B + k];
        for (int c = 1; c < V; c++)
            for (int k = 0; k < w; k++) {
                const REAL x = blk[(int64_t)c * B + k];
                m[k] = x > m[k] ? x : m[k];
            }
        for (int c = 0; c < V; c++)
            for (int k = 0; k < w; k++) {
                const REAL e = EXP(blk[(int64_t)c * B + k] - m[k]);
                blk[(int64_t)c * B + k] = e;
                sum[k] += e;
            }
        double prod = 1;
        for (int k = 0; k < w; k++) {
            total += m[k];
            prod *= sum[k];
            if (prod > 1e250) total += log(prod), prod = 1;   /* sum < 2^31: never overflows */
        }
        total += log(prod);
        for (int k = 0; k < w; k++) sum[k] = (REAL)(pscale / sum[k]);
        for (int c = 0; c < V; c++)
            for (int k = 0; k < w; k++) blk[(int64_t)c * B + k] *= sum[k];
    }
    return total / B;
}

/* dst (C, R) = src (R, C)^T */
static inline void SFX(fb_transpose)(const REAL *restrict src, REAL *restrict dst, int R, int C) {
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) dst[(int64_t)c * R + r] = src[(int64_t)r * C + c];
}

/* at a call's start: the step's copy WoutT = Wout^T */
static inline void SFX(fb_copy_in)(fb_net *net) {
    SFX(fb_transpose)((const REAL *)net->Wout, (REAL *)net->WoutT, net->H[net->L - 1], net->V);
}

/* at a training call's end: Wout = WoutT^T and dWout = dWoutT^T */
static inline void SFX(fb_copy_out)(fb_net *net) {
    SFX(fb_transpose)((const REAL *)net->WoutT, (REAL *)net->Wout, net->V, net->H[net->L - 1]);
    SFX(fb_transpose)((const REAL *)net->dWoutT, (REAL *)net->dWout, net->V, net->H[net->L - 1]);
}

FB_CLONES double SFX(fb_loss)(fb_net *net, const int64_t *X, const int64_t *Y,
                              const int64_t *rows, int training) {
    SFX(fb_copy_in)(net);
    return SFX(fb_forward)(net, X, Y, rows, training, 1.0);
}

/* p -= lr * g over n elements */
static inline void SFX(fb_sgd)(REAL *restrict p, const REAL *restrict g, int64_t n, REAL lr) {
    for (int64_t i = 0; i < n; i++) p[i] -= lr * g[i];
}

static FB_INLINE double SFX(fb_step_impl)(fb_net *net, const int64_t *X, const int64_t *Y,
                                          const int64_t *rows, REAL lr) {
    const int B = net->B, T = net->T, D = net->D, V = net->V, L = net->L;
    double *restrict acc1 = net->acc1, *restrict acc2 = net->acc2;

    const double loss = SFX(fb_forward)(net, X, Y, rows, 1, 1.0 / B);
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

    /* cross-entropy backward, in place: dlogits^T = softmax^T / B - onehot^T / B */
    REAL *restrict dl = (REAL *)net->logits;
    const REAL invB = (REAL)(1.0 / B);
    for (int b = 0; b < B; b++) dl[net->tgt[b] * B + b] -= invB;

    /* output layer: dbout = sum_b dlogits, dh = dlogits @ Wout^T, dWout^T = dlogits^T @ h */
    const int Hl = net->H[L - 1];
    const REAL *hlast = (const REAL *)net->h[L - 1];
    REAL *restrict dh = (REAL *)net->dh;
    REAL *restrict dbout = (REAL *)net->dbout;
    for (int c = 0; c < V; c++) dbout[c] = (REAL)SFX(fb_sum)(dl + (int64_t)c * B, B);
    for (int p = 0; p < B; p += FB_PANEL) {        /* in panels, as the forward's GEMM */
        const int n = B - p < FB_PANEL ? B - p : FB_PANEL;
        SFX(fb_gemm_ld)(net, 1, 0, n, Hl, V, 1, dl + p, B, (const REAL *)net->WoutT, Hl, 0,
                        dh + (int64_t)p * Hl, Hl);
        SFX(fb_gemm_ld)(net, 0, 0, V, Hl, n, 1, dl + p, B, hlast + (int64_t)p * Hl, Hl, p ? 1 : 0,
                        (REAL *)net->dWoutT, Hl);
    }

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
        for (int jb = 0; jb < H; jb += FB_W) {
            const int j0 = fb_block_start(jb, FB_W, H);
            if (j0 + FB_W <= H) SFX(fb_dy_block)(dh, h, xhat, g, B, H, j0, FB_W, acc1, acc2);
            else SFX(fb_dy_block)(dh, h, xhat, g, B, H, j0, H - j0, acc1, acc2);
        }
        REAL *restrict dgamma = (REAL *)net->dgamma[l], *restrict dbeta = (REAL *)net->dbeta[l];
        for (int j = 0; j < H; j++) dbeta[j] = (REAL)acc1[j], dgamma[j] = (REAL)acc2[j];
        /* dhpre = gamma invstd / B (B dy - dbeta - xhat dgamma), in place over dy; the
         * per-feature factors in their own workspace (a restrict pointer may not alias acc1) */
        REAL *restrict k = (REAL *)net->kfac;
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
    SFX(fb_sgd)((REAL *)net->WoutT, (const REAL *)net->dWoutT, (int64_t)Hl * V, lr);
    SFX(fb_sgd)((REAL *)net->bout, (const REAL *)net->dbout, V, lr);
    return loss;
}

FB_CLONES double SFX(fb_step)(fb_net *net, const int64_t *X, const int64_t *Y,
                              const int64_t *rows, REAL lr) {
    SFX(fb_copy_in)(net);
    const double loss = SFX(fb_step_impl)(net, X, Y, rows, lr);
    if (isfinite(loss)) SFX(fb_copy_out)(net);
    return loss;
}

FB_CLONES int64_t SFX(fb_train)(fb_net *net, const int64_t *X, const int64_t *Y, int64_t n,
                                int64_t steps, REAL lr, uint64_t *rng, double *losses) {
    if (steps <= 0) return 0;
    const int B = net->B, T = net->T;
    int64_t *cur = net->rows, *next = net->rows + B;
    uint64_t before[2] = {rng[0], rng[1]};
    SFX(fb_copy_in)(net);
    fb_draw_rows(rng, n, B, cur);
    for (int64_t s = 0; s < steps; s++) {
        /* draw the next step's rows now and prefetch their X and Y: the random reads then
         * arrive during this step instead of stalling the next (the draws keep their order) */
        if (s + 1 < steps) {
            before[0] = rng[0], before[1] = rng[1];
            fb_draw_rows(rng, n, B, next);
            for (int b = 0; b < B; b++) {
                __builtin_prefetch(X + next[b] * T);
                __builtin_prefetch(X + next[b] * T + T - 1);    /* a row may span two lines */
                __builtin_prefetch(Y + next[b]);
            }
        }
        double loss = SFX(fb_step_impl)(net, X, Y, cur, lr);
        losses[s] = loss;
        if (!isfinite(loss)) {
            if (s + 1 < steps) rng[0] = before[0], rng[1] = before[1];   /* undraw the next */
            if (s) SFX(fb_copy_out)(net);
            return s;
        }
        int64_t *tmp = cur;
        cur = next, next = tmp;
    }
    SFX(fb_copy_out)(net);
    return steps;
}
#undef FB_W
