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

/* One row of batch norm and tanh: xhat = (x - mean) invstd, h = tanh(gamma xhat + beta).
 * fin[j] += u - u for each pre-activation u = gamma xhat + beta: 0 while every u of column j
 * is finite, NaN from the first that is not (a column accumulator, so no reduction per row) */
static inline void SFX(fb_bn_tanh_row)(const REAL *restrict x, REAL *restrict xhat,
                                       REAL *restrict h, const REAL *restrict mean,
                                       const REAL *restrict invstd, const REAL *restrict gamma,
                                       const REAL *restrict beta, REAL *restrict fin, int H) {
    for (int j = 0; j < H; j++) {
        const REAL z = (x[j] - mean[j]) * invstd[j];
        xhat[j] = z;
        const REAL u = gamma[j] * z + beta[j];
        h[j] = TANH(u);
        fin[j] += u - u;
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

/* =============================================================================================
 * The phases of a step, each a static inline function of the net (llm.c style): forward above
 * backward for each layer kind, in the order of the model. A phase reads and writes only the
 * net's arrays, with the shapes of FB_NET_ARRAYS; fb_forward and fb_step_impl (at the end) call
 * them in order and time them (fb_clock, fb_lap). */

/* ---------------------------------------------------------------------------------------------
 * linear, no bias: hpre_l (B, H_l) = in (B, I_l) @ W_l (I_l, H_l), in = h_{l-1}, or x0 for l = 0 */

static FB_INLINE const REAL *SFX(fb_layer_input)(const fb_net *net, int l) {
    return l ? (const REAL *)net->h[l - 1] : (const REAL *)net->x0;
}

static FB_INLINE void SFX(fb_linear_forward)(fb_net *net, int l) {
    const int I = fb_fan_in(net, l);
    SFX(fb_gemm)(net, 0, 0, net->B, net->H[l], I, 1, SFX(fb_layer_input)(net, l),
                 (const REAL *)net->W[l], 0, (REAL *)net->hpre[l]);
}

/* dW_l (I_l, H_l) = in^T @ dhpre; d(in) (B, I_l) = dhpre @ W_l^T into dh (free once dy is
 * formed); dhpre (B, H_l) is in hpre_l (fb_bn_act_backward) */
static FB_INLINE void SFX(fb_linear_backward)(fb_net *net, int l) {
    const int B = net->B, H = net->H[l], I = fb_fan_in(net, l);
    const REAL *g = (const REAL *)net->hpre[l];
    SFX(fb_gemm)(net, 1, 0, I, H, B, 1, SFX(fb_layer_input)(net, l), g, 0, (REAL *)net->dW[l]);
    SFX(fb_gemm)(net, 0, 1, B, I, H, 1, g, (const REAL *)net->W[l], 0, (REAL *)net->dh);
}

/* ---------------------------------------------------------------------------------------------
 * the first layer: the embedding x0[b, t*D + d] = C[ctx[b, t], d] and hpre_0 = x0 @ W_0; or,
 * with net->table, through the table E_t = C @ W_0[t*D:(t+1)*D] (V, H_0):
 * x0 @ W_0 = sum_t C[ctx[:, t]] @ W_0[t*D:(t+1)*D] = sum_t E_t[ctx[:, t]], which is T GEMMs of
 * V*D*H instead of one of B*T*D*H, and a gather-add of B*T rows (no x0) */

static FB_INLINE void SFX(fb_first_layer_forward)(fb_net *net) {
    const int B = net->B, T = net->T, D = net->D, V = net->V, H = net->H[0];
    const REAL *restrict C = (const REAL *)net->C;
    const int64_t *restrict ctx = net->ctx;
    if (!net->table) {
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                REAL *restrict dst = (REAL *)net->x0 + (int64_t)b * T * D + t * D;
                const REAL *restrict src = C + ctx[(int64_t)b * T + t] * D;
                for (int d = 0; d < D; d++) dst[d] = src[d];     /* not memcpy: D is small */
            }
        SFX(fb_linear_forward)(net, 0);
        return;
    }
    REAL *restrict tab = (REAL *)net->tab;
    REAL *restrict hpre = (REAL *)net->hpre[0];
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
}

/* dW_0 and dC from dhpre_0 (in hpre_0). Direct: fb_linear_backward, then the embedding's
 * scatter-add of d(x0) into dC. Table: with S_t[v] = sum of the dhpre rows b with
 * ctx[b, t] == v (V, H_0), dW_0[t*D:(t+1)*D] = C^T @ S_t and dC = sum_t S_t @ W_0[t*D:(t+1)*D]^T */
static FB_INLINE void SFX(fb_first_layer_backward)(fb_net *net) {
    const int B = net->B, T = net->T, D = net->D, V = net->V, H = net->H[0];
    REAL *restrict dC = (REAL *)net->dC;
    if (!net->table) {
        SFX(fb_linear_backward)(net, 0);
        const REAL *restrict dx0 = (const REAL *)net->dh;
        memset(dC, 0, sizeof(REAL) * (size_t)D * (size_t)V);
        for (int b = 0; b < B; b++) {
            const int64_t *ctx = net->ctx + (int64_t)b * T;
            for (int t = 0; t < T; t++) {
                REAL *restrict drow = dC + ctx[t] * D;
                const REAL *restrict src = dx0 + (int64_t)b * T * D + t * D;
                for (int d = 0; d < D; d++) drow[d] += src[d];
            }
        }
        return;
    }
    REAL *restrict tab = (REAL *)net->tab;
    const REAL *restrict g = (const REAL *)net->hpre[0];
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
        SFX(fb_gemm)(net, 0, 1, V, D, H, 1, St, W0 + (int64_t)t * D * H, t ? 1 : 0, dC);
    }
}

/* ---------------------------------------------------------------------------------------------
 * batch norm and tanh, layer l: xhat = (hpre - mean) invstd, h = tanh(gamma xhat + beta) (B, H_l),
 * with the batch statistics when training (mean; the variance that normalizes, sum (hpre -
 * mean)^2 / n with n = B, biased, or n = B - 1 with net->unbiased, the lecture's variant; the
 * unbiased variance into var for the running statistics), else the running statistics (never
 * changed here) */

static FB_INLINE int SFX(fb_bn_act_forward)(fb_net *net, int l, int training) {
    const int B = net->B, H = net->H[l];
    const REAL *restrict hpre = (const REAL *)net->hpre[l];
    REAL *restrict xhat = (REAL *)net->xhat[l], *restrict h = (REAL *)net->h[l];
    REAL *restrict mean = (REAL *)net->mean[l], *restrict invstd = (REAL *)net->invstd[l];
    const REAL *restrict gamma = (const REAL *)net->gamma[l];
    const REAL *restrict beta = (const REAL *)net->beta[l];
    if (training) {
        /* two passes: the mean, then the squared deviations from it */
        double *restrict acc1 = net->acc1, *restrict acc2 = net->acc2;
        REAL *restrict var = (REAL *)net->var[l];
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
        const double n = net->unbiased ? B - 1 : B;                  /* the variance's divisor */
        for (int j = 0; j < H; j++) {
            invstd[j] = (REAL)(1.0 / sqrt(acc2[j] / n + net->eps));   /* var / n */
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
    /* one pass: normalize, scale and shift, tanh; whether every pre-activation is finite, in
     * gfac (free until batch norm's backward) */
    REAL *restrict fin = (REAL *)net->gfac;
    for (int j = 0; j < H; j++) fin[j] = 0;
    for (int b = 0; b < B; b++) {
        const int64_t o = (int64_t)b * H;
        SFX(fb_bn_tanh_row)(hpre + o, xhat + o, h + o, mean, invstd, gamma, beta, fin, H);
    }
    int ok = 1;
    for (int j = 0; j < H; j++) ok &= fin[j] == 0;
    return ok;
}

/* running_mean = (1 - momentum) running_mean + momentum mean, and running_var the same with
 * the unbiased batch variance, every layer (as BatchNorm1d does in forward; a step does it
 * once its forward is known to be finite), by the per-layer path's loop (layers_impl.h:
 * fb_layer_running, no FMA) with its roundings: keep = 1 - momentum in double, then both
 * rounded to REAL. Returns whether every new value is finite. */
static FB_INLINE int SFX(fb_running_stats)(fb_net *net) {
    const REAL keep = (REAL)(1.0 - net->momentum), take = (REAL)net->momentum;
    int ok = 1;
    for (int l = 0; l < net->L; l++) {
        const int H = net->H[l];
        ok &= SFX(fb_layer_running)((REAL *)net->rmean[l], (const REAL *)net->mean[l], keep,
                                    take, H);
        ok &= SFX(fb_layer_running)((REAL *)net->rvar[l], (const REAL *)net->var[l], keep,
                                    take, H);
    }
    return ok;
}

/* From dh (B, H_l), the gradient of h: tanh backward, dy = dh (1 - h^2), with the batch sums of
 * batch norm's backward, dbeta = sum_b dy and dgamma = sum_b dy xhat; then
 * dhpre = gamma invstd / B (B dy - dbeta - xhat (B / n) dgamma) into hpre_l, in place over dy,
 * where the variance's divisor n is B (B / n = 1: gfac is dgamma, bit for bit) or, with
 * net->unbiased, B - 1 (B / (B - 1): the path through the variance, d var / dhpre = 2 (hpre -
 * mean) / n) */
static FB_INLINE void SFX(fb_bn_act_backward)(fb_net *net, int l) {
    const int B = net->B, H = net->H[l];
    const REAL invB = (REAL)(1.0 / B);
    REAL *restrict g = (REAL *)net->hpre[l];        /* becomes dhpre */
    const REAL *restrict dh = (const REAL *)net->dh;
    const REAL *restrict xhat = (const REAL *)net->xhat[l];
    const REAL *restrict h = (const REAL *)net->h[l];
    const REAL *restrict gamma = (const REAL *)net->gamma[l];
    const REAL *restrict invstd = (const REAL *)net->invstd[l];
    double *restrict acc1 = net->acc1, *restrict acc2 = net->acc2;
    for (int jb = 0; jb < H; jb += FB_W) {
        const int j0 = fb_block_start(jb, FB_W, H);
        if (j0 + FB_W <= H) SFX(fb_dy_block)(dh, h, xhat, g, B, H, j0, FB_W, acc1, acc2);
        else SFX(fb_dy_block)(dh, h, xhat, g, B, H, j0, H - j0, acc1, acc2);
    }
    REAL *restrict dgamma = (REAL *)net->dgamma[l], *restrict dbeta = (REAL *)net->dbeta[l];
    /* the per-feature factors in their own workspaces (a restrict pointer may not alias acc1) */
    REAL *restrict k = (REAL *)net->kfac, *restrict gs = (REAL *)net->gfac;
    const double c = net->unbiased ? (double)B / (B - 1) : 1.0;       /* B / n */
    for (int j = 0; j < H; j++)
        dbeta[j] = (REAL)acc1[j], dgamma[j] = (REAL)acc2[j], gs[j] = (REAL)(acc2[j] * c);
    for (int j = 0; j < H; j++) k[j] = gamma[j] * invstd[j] * invB;
    for (int b = 0; b < B; b++) {
        const int64_t o = (int64_t)b * H;
        for (int j = 0; j < H; j++)
            g[o + j] = k[j] * ((REAL)B * g[o + j] - dbeta[j] - xhat[o + j] * gs[j]);
    }
}

/* ---------------------------------------------------------------------------------------------
 * the output layer: logits^T (V, B) = Wout^T @ h^T + bout, h = h_{L-1} (B, H_{L-1}). Row c holds
 * class c's logits for the batch, so the softmax runs across the batch in full vectors (a row of
 * V = 27 would not fill them). The GEMM goes in panels of FB_PANEL examples, as do the two of
 * backward: OpenBLAS runs these GEMMs with a side of V = 27 at about half speed once they
 * outgrow its small-matrix kernels (measured at B = 1024). */

static FB_INLINE void SFX(fb_output_forward)(fb_net *net) {
    const int B = net->B, V = net->V, I = net->H[net->L - 1];
    const REAL *in = (const REAL *)net->h[net->L - 1];
    REAL *restrict lg = (REAL *)net->logits;
    const REAL *restrict bout = (const REAL *)net->bout;
    for (int c = 0; c < V; c++)
        for (int b = 0; b < B; b++) lg[(int64_t)c * B + b] = bout[c];
    for (int p = 0; p < B; p += FB_PANEL) {
        const int n = B - p < FB_PANEL ? B - p : FB_PANEL;
        SFX(fb_gemm_ld)(net, 0, 1, V, n, I, 1, (const REAL *)net->WoutT, I, in + (int64_t)p * I,
                        I, 1, lg + p, B);
    }
}

/* from dlogits^T (V, B): dbout = sum_b dlogits, dh (B, H_{L-1}) = dlogits @ Wout^T,
 * dWout^T (V, H_{L-1}) = dlogits^T @ h */
static FB_INLINE void SFX(fb_output_backward)(fb_net *net) {
    const int B = net->B, V = net->V, Hl = net->H[net->L - 1];
    const REAL *restrict dl = (const REAL *)net->logits;
    const REAL *hlast = (const REAL *)net->h[net->L - 1];
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
}

/* ---------------------------------------------------------------------------------------------
 * softmax cross-entropy: loss = mean_b [logsumexp_c logits[c, b] - logits[tgt[b], b]] */

/* Softmax over the classes of each example (column of logits^T), FB_SB examples at a time,
 * times pscale, in place; returns the loss: the sum over b of max_b + log s_b - logit_b[target],
 * with one log of a product of sums s_b (each in [1, V]) in double per block instead of one
 * log per example, over B */
static FB_INLINE double SFX(fb_softmax_loss)(fb_net *net, double pscale, int *logits_ok) {
    const int B = net->B, V = net->V;
    REAL *restrict lg = (REAL *)net->logits;
    const int64_t *restrict tgt = net->tgt;
    double total = 0;
    int ok = 1;
    for (int b0 = 0; b0 < B; b0 += FB_SB) {
        const int w = B - b0 < FB_SB ? B - b0 : FB_SB;
        REAL *restrict blk = lg + b0;        /* blk[c * B + k]: class c of example b0 + k */
        REAL m[FB_SB], sum[FB_SB];
        int fin[FB_SB];                      /* every logit of example b0 + k is finite */
        for (int k = 0; k < w; k++) m[k] = blk[k], sum[k] = 0, fin[k] = FB_FINITE(blk[k]);
        for (int k = 0; k < w; k++) total -= blk[tgt[b0 + k] * B + k];
        for (int c = 1; c < V; c++)
            for (int k = 0; k < w; k++) {
                const REAL x = blk[(int64_t)c * B + k];
                m[k] = x > m[k] ? x : m[k];
                fin[k] &= FB_FINITE(x);
            }
        for (int k = 0; k < w; k++) ok &= fin[k];
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
    *logits_ok = ok;
    return total / B;
}

/* in place over softmax^T / B (fb_softmax_loss with pscale 1 / B):
 * dlogits^T = softmax^T / B - onehot^T / B */
static FB_INLINE void SFX(fb_softmax_loss_backward)(fb_net *net) {
    const int B = net->B;
    REAL *restrict dl = (REAL *)net->logits;
    const REAL invB = (REAL)(1.0 / B);
    for (int b = 0; b < B; b++) dl[net->tgt[b] * B + b] -= invB;
}

/* ---------------------------------------------------------------------------------------------
 * SGD on every parameter: p -= lr * dp (the output weight in its step layout, WoutT), by the
 * per-layer path's loop (layers_impl.h: fb_layer_sgd, no FMA): NumPy's `p -= lr * g`, bit for
 * bit, as CharMLP.train_step's update */

/* every parameter; returns whether all are finite afterwards */
static FB_INLINE int SFX(fb_sgd_update)(fb_net *net, REAL lr) {
    const int V = net->V, D = net->D, Hl = net->H[net->L - 1];
    int ok = SFX(fb_layer_sgd)((REAL *)net->C, (const REAL *)net->dC, lr, (int64_t)V * D);
    for (int l = 0; l < net->L; l++) {
        const int H = net->H[l];
        const int I = fb_fan_in(net, l);
        ok &= SFX(fb_layer_sgd)((REAL *)net->W[l], (const REAL *)net->dW[l], lr, (int64_t)I * H);
        ok &= SFX(fb_layer_sgd)((REAL *)net->gamma[l], (const REAL *)net->dgamma[l], lr, H);
        ok &= SFX(fb_layer_sgd)((REAL *)net->beta[l], (const REAL *)net->dbeta[l], lr, H);
    }
    ok &= SFX(fb_layer_sgd)((REAL *)net->WoutT, (const REAL *)net->dWoutT, lr, (int64_t)Hl * V);
    ok &= SFX(fb_layer_sgd)((REAL *)net->bout, (const REAL *)net->dbout, lr, V);
    return ok;
}

/* ---------------------------------------------------------------------------------------------
 * Wout in the step's layout: copied in as WoutT at a call's start, out (with dWout) at the end
 * of a call that applied steps */

/* dst (C, R) = src (R, C)^T */
static inline void SFX(fb_transpose)(const REAL *restrict src, REAL *restrict dst, int R, int C) {
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) dst[(int64_t)c * R + r] = src[(int64_t)r * C + c];
}

/* WoutT = Wout^T */
static inline void SFX(fb_copy_in)(fb_net *net) {
    const uint64_t t = fb_clock(net);
    SFX(fb_transpose)((const REAL *)net->Wout, (REAL *)net->WoutT, net->H[net->L - 1], net->V);
    fb_lap(net, FB_PHASE_TRANSPOSE, t);
}

/* Wout = WoutT^T and dWout = dWoutT^T */
static inline void SFX(fb_copy_out)(fb_net *net) {
    const uint64_t t = fb_clock(net);
    SFX(fb_transpose)((const REAL *)net->WoutT, (REAL *)net->Wout, net->V, net->H[net->L - 1]);
    SFX(fb_transpose)((const REAL *)net->dWoutT, (REAL *)net->dWout, net->V, net->H[net->L - 1]);
    fb_lap(net, FB_PHASE_TRANSPOSE, t);
}

/* =============================================================================================
 * The step: the phases in order */

/* The forward pass to the loss on rows (B,) of X (N, T) / Y (N,): batch statistics when
 * training, else the running statistics. Leaves softmax^T (V, B) times pscale in net->logits (a
 * step asks for softmax / B, the first term of dlogits). Sets net->fault to the first of a
 * layer's pre-activations, the logits and the loss (rounded to REAL) that is not finite, or
 * FB_FAULT_NONE (the flags come from the passes that compute or first read each). */
static FB_INLINE double SFX(fb_forward)(fb_net *net, const int64_t *X, const int64_t *Y,
                                        const int64_t *rows, int training, double pscale) {
    uint64_t t = fb_clock(net);
    fb_gather_batch(net, X, Y, rows);
    t = fb_lap(net, FB_PHASE_BATCH, t);
    SFX(fb_first_layer_forward)(net);
    t = fb_lap(net, FB_PHASE_FIRST_LAYER_FORWARD, t);
    net->fault = FB_FAULT_NONE;
    for (int l = 0; l < net->L; l++) {
        if (l) {
            SFX(fb_linear_forward)(net, l);
            t = fb_lap(net, FB_PHASE_LINEAR_FORWARD, t);
        }
        if (!SFX(fb_bn_act_forward)(net, l, training) && !net->fault)
            net->fault = FB_FAULT_PREACT, net->fault_layer = l;
        t = fb_lap(net, FB_PHASE_BN_ACT_FORWARD, t);
    }
    SFX(fb_output_forward)(net);
    t = fb_lap(net, FB_PHASE_OUTPUT_FORWARD, t);
    int logits_ok;
    const double loss = SFX(fb_softmax_loss)(net, pscale, &logits_ok);
    if (!logits_ok && !net->fault) net->fault = FB_FAULT_LOGITS;
    /* the loss in the model's dtype, as the per-layer path has it (a float32 loss of 1e39 is
     * not finite, though its double is) */
    if (!isfinite((REAL)loss) && !net->fault) net->fault = FB_FAULT_LOSS;
    fb_lap(net, FB_PHASE_SOFTMAX_LOSS, t);
    return loss;
}

FB_CLONES double SFX(fb_loss)(fb_net *net, const int64_t *X, const int64_t *Y,
                              const int64_t *rows, int training) {
    SFX(fb_copy_in)(net);
    return SFX(fb_forward)(net, X, Y, rows, training, 1.0);
}

/* forward, backward, SGD; a non-finite forward (net->fault set) returns before backward,
 * changing nothing; a step that leaves a parameter or a running statistic non-finite sets
 * FB_FAULT_UPDATE, applied */
static FB_INLINE double SFX(fb_step_impl)(fb_net *net, const int64_t *X, const int64_t *Y,
                                          const int64_t *rows, REAL lr) {
    const double loss = SFX(fb_forward)(net, X, Y, rows, 1, 1.0 / net->B);
    if (net->fault) return loss;
    uint64_t t = fb_clock(net);
    int ok = SFX(fb_running_stats)(net);
    t = fb_lap(net, FB_PHASE_RUNNING_STATS, t);
    SFX(fb_softmax_loss_backward)(net);
    t = fb_lap(net, FB_PHASE_SOFTMAX_LOSS_BACKWARD, t);
    SFX(fb_output_backward)(net);
    t = fb_lap(net, FB_PHASE_OUTPUT_BACKWARD, t);
    for (int l = net->L - 1; l >= 0; l--) {
        SFX(fb_bn_act_backward)(net, l);
        t = fb_lap(net, FB_PHASE_BN_ACT_BACKWARD, t);
        if (l) {
            SFX(fb_linear_backward)(net, l);
            t = fb_lap(net, FB_PHASE_LINEAR_BACKWARD, t);
        }
    }
    SFX(fb_first_layer_backward)(net);
    t = fb_lap(net, FB_PHASE_FIRST_LAYER_BACKWARD, t);
    ok &= SFX(fb_sgd_update)(net, lr);
    fb_lap(net, FB_PHASE_SGD, t);
    if (!ok) net->fault = FB_FAULT_UPDATE;
    return loss;
}

FB_CLONES double SFX(fb_step)(fb_net *net, const int64_t *X, const int64_t *Y,
                              const int64_t *rows, REAL lr) {
    SFX(fb_copy_in)(net);
    const double loss = SFX(fb_step_impl)(net, X, Y, rows, lr);
    if (!net->fault || net->fault == FB_FAULT_UPDATE) SFX(fb_copy_out)(net);    /* applied */
    return loss;
}

FB_CLONES int64_t SFX(fb_train)(fb_net *net, const int64_t *X, const int64_t *Y, int64_t n,
                                int64_t steps, REAL lr, uint64_t *rng, double *losses) {
    net->fault = FB_FAULT_NONE;
    if (steps <= 0) return 0;
    const int B = net->B, T = net->T;
    int64_t *cur = net->rows, *next = net->rows + B;
    uint64_t before[2] = {rng[0], rng[1]};
    SFX(fb_copy_in)(net);
    fb_draw_rows(rng, n, B, cur);
    for (int64_t s = 0; s < steps; s++) {
        /* draw the next step's rows now and prefetch their X and Y: the random reads then
         * arrive during this step instead of stalling the next (the draws keep their order) */
        const uint64_t t = fb_clock(net);
        if (s + 1 < steps) {
            before[0] = rng[0], before[1] = rng[1];
            fb_draw_rows(rng, n, B, next);
            for (int b = 0; b < B; b++) {
                __builtin_prefetch(X + next[b] * T);
                __builtin_prefetch(X + next[b] * T + T - 1);    /* a row may span two lines */
                __builtin_prefetch(Y + next[b]);
            }
        }
        fb_lap(net, FB_PHASE_BATCH, t);
        double loss = SFX(fb_step_impl)(net, X, Y, cur, lr);
        losses[s] = loss;
        if (net->fault) {
            if (s + 1 < steps) rng[0] = before[0], rng[1] = before[1];   /* undraw the next */
            /* the state after step s (applied) or s - 1 */
            if (s || net->fault == FB_FAULT_UPDATE) SFX(fb_copy_out)(net);
            return s;
        }
        int64_t *tmp = cur;
        cur = next, next = tmp;
    }
    SFX(fb_copy_out)(net);
    return steps;
}
#undef FB_W
