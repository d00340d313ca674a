/* The fused training step: shared pieces, then the float and double instances of
 * fused_impl.h. See fused.h for the model, the shapes and the contract. */
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include "clones.h"
#include "fused.h"
#include "layers.h"      /* the SGD and running-statistics loops, shared */

/* per-CPU clones (FB_CLONES): see clones.h */
#define FB_INLINE inline __attribute__((always_inline))

/* ---------------------------------------------------------------------------------------------
 * the net's description as data (FB_NET_ARRAYS in fused.h), for csrc/_kernels.pyx and
 * fastbn/fused.py */

#define FB_PER_LAYER_ONE 0
#define FB_PER_LAYER_LAYER 1
#define FB_MODEL_MODEL 1
#define FB_MODEL_WORK 0
#define FB_RANK(d0, d1, d2) \
    (3 - (FB_DIM_##d0 == FB_DIM_NONE) - (FB_DIM_##d1 == FB_DIM_NONE) - (FB_DIM_##d2 == FB_DIM_NONE))
#define FB_DESCRIBE(name, dtype, count, owner, d0, d1, d2)                                      \
    {#name, FB_DTYPE_##dtype, FB_PER_LAYER_##count, FB_MODEL_##owner, FB_RANK(d0, d1, d2),      \
     {FB_DIM_##d0, FB_DIM_##d1, FB_DIM_##d2}, offsetof(fb_net, name)},

const fb_field fb_net_fields[] = {FB_NET_ARRAYS(FB_DESCRIBE)};
const int fb_net_nfields = (int)(sizeof fb_net_fields / sizeof fb_net_fields[0]);

#define FB_PHASE_NAME(id, name) #name,
const char *const fb_phase_names[] = {FB_PHASES(FB_PHASE_NAME)};

/* I_l, the fan-in of hidden layer l */
static inline int fb_fan_in(const fb_net *net, int l) {
    return l ? net->H[l - 1] : net->T * net->D;
}

int64_t fb_net_dim(const fb_net *net, fb_dim dim, int l) {
    int64_t hmax = 0;
    for (int k = 0; k < net->L; k++) hmax = net->H[k] > hmax ? net->H[k] : hmax;
    const int64_t td = (int64_t)net->T * net->D;
    switch (dim) {
    case FB_DIM_B: return net->B;
    case FB_DIM_T: return net->T;
    case FB_DIM_D: return net->D;
    case FB_DIM_V: return net->V;
    case FB_DIM_TD: return td;
    case FB_DIM_H: return net->H[l];
    case FB_DIM_I: return fb_fan_in(net, l);
    case FB_DIM_HL: return net->H[net->L - 1];
    case FB_DIM_H0: return net->H[0];
    case FB_DIM_HMAX: return hmax;
    case FB_DIM_WIDE: return td > hmax ? td : hmax;
    case FB_DIM_2: return 2;
    case FB_DIM_NONE: break;
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------------
 * the per-phase timing: t = fb_clock(net) before a phase, t = fb_lap(net, FB_PHASE_X, t) after
 * it adds its time to net->phase_ns[FB_PHASE_X] and starts the next. Both are a test of
 * net->profile and nothing else when it is 0. */

static inline uint64_t fb_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t fb_clock(const fb_net *net) {
    return net->profile ? fb_now_ns() : 0;
}

static inline uint64_t fb_lap(fb_net *net, fb_phase phase, uint64_t t0) {
    if (!net->profile) return 0;
    const uint64_t t = fb_now_ns();
    net->phase_ns[phase] += t - t0;
    return t;
}

/* ---------------------------------------------------------------------------------------------
 * PCG32 (pcg-random.org, "pcg32_random_r"): state[0] the state, state[1] the stream (odd). */

uint32_t fb_pcg32(uint64_t *state) {
    uint64_t old = state[0];
    state[0] = old * 6364136223846793005ULL + state[1];
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

void fb_pcg32_seed(uint64_t *state, uint64_t seed) {
    state[0] = 0u;
    state[1] = (0xda3e39cb94b95bdbULL << 1u) | 1u;
    fb_pcg32(state);
    state[0] += seed;
    fb_pcg32(state);
}

/* A uniform integer in [0, n), n < 2^32, without modulo bias (Lemire 2019). */
static inline uint32_t fb_bounded(uint64_t *state, uint32_t n) {
    uint64_t m = (uint64_t)fb_pcg32(state) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {
            m = (uint64_t)fb_pcg32(state) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void fb_draw_rows(uint64_t *state, int64_t n, int64_t B, int64_t *rows) {
    for (int64_t b = 0; b < B; b++) rows[b] = (int64_t)fb_bounded(state, (uint32_t)n);
}

/* ---------------------------------------------------------------------------------------------
 * Vectorizable float32 tanh and exp: branch-free arithmetic that gcc turns into SIMD loops.
 * Clamps are written as ternaries in the form of the min/max instructions, so NaN passes
 * through to the result instead of being clamped. */

/* tanh(x) = x P(x^2) / Q(x^2), degree 13/6, |x| clamped at 7.9053 where tanh rounds to 1 in
 * float32 (the rational form Eigen uses for float). Below |x| = 0.0004, tanh(x) rounds to x
 * (x^3 / 3 is under an ulp of x) and x is returned as it is (a select, as Eigen does): the
 * quotient would lose the low bits of a subnormal x. Max error 6 ulp (tests/test_fused.py). */
static inline float fb_tanhf(float x) {
    const float lim = 7.90531110763549805f;
    const float ax = x < 0 ? -x : x;
    x = x > lim ? lim : x;
    x = x < -lim ? -lim : x;
    const float x2 = x * x;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 - 8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * x;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return ax < 0.0004f ? x : p / q;                  /* NaN: ax < 0.0004 is false */
}

/* exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 (in two parts), exp(r) by the
 * Cephes degree-7 polynomial. 2^n is applied as two factors 2^h 2^(n-h), h = floor(n / 2), each
 * a normal float for the n of x in [-104, 89] (x is clamped there), assembled in the exponent
 * bits: so exp underflows gradually through the subnormals to 0 (x < -103.97 and -inf give 0)
 * and overflows to +inf (x > 88.72, +inf included), as the exact exp does; NaN propagates.
 * Within 4 ulp of exp (the tests; an ulp of a subnormal is 2^-149). A subnormal result may cost
 * a microcode assist on x86 (softmax arguments below -87: a gap between logits of 87). */
static inline float fb_expf(float x) {
    x = x > 89.0f ? 89.0f : x;
    x = x < -104.0f ? -104.0f : x;
    const float shifter = 12582912.0f;                 /* 1.5 * 2^23: rounds to nearest int */
    const float t = x * 1.44269504088896341f + shifter;
    float n = t - shifter;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    float y = p * r * r + r + 1.0f;
    /* n from the bits of t = shifter + n (its low mantissa bits hold n), not a float-to-int
     * cast, which is undefined for NaN; unsigned arithmetic, so no shift is undefined either.
     * u = n mod 2^32, n in [-150, 128]: h = floor(n / 2) = (n + 256) / 2 - 128 */
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    const uint32_t u = tb - 0x4B400000u;
    const uint32_t h = ((u + 256u) >> 1) - 128u;
    const uint32_t e1 = (h + 127u) << 23, e2 = (u - h + 127u) << 23;
    float s1, s2;
    memcpy(&s1, &e1, sizeof s1);
    memcpy(&s2, &e2, sizeof s2);
    return y * s1 * s2;                  /* y s1 is exact: one rounding, to a subnormal too */
}

/* float64: exp(r) for r = x - n ln 2, n = round(x / ln 2), |r| <= ln(2)/2, by the Cephes
 * rational approximation; *t receives the double 1.5 * 2^52 + n, whose low bits hold n. */
static inline double fb_exp_f64_reduced(double x, double *t) {
    const double shifter = 6755399441055744.0;         /* 1.5 * 2^52: rounds to nearest int */
    *t = x * 1.4426950408889634073599 + shifter;
    double n = *t - shifter;
    double r = x - n * 6.93145751953125E-1;
    r = r - n * 1.42860682030941723212E-6;
    const double rr = r * r;
    double p = 1.26177193074810590878E-4;
    p = p * rr + 3.02994407707441961300E-2;
    p = p * rr + 9.99999999999999999910E-1;
    p = p * r;
    double q = 3.00198505138664455042E-6;
    q = q * rr + 2.52448340349684104192E-3;
    q = q * rr + 2.27265548208155028766E-1;
    q = q * rr + 2.00000000000000000009E0;
    return 1.0 + 2.0 * (p / (q - p));
}

/* float64 exp for x in [-708, 709] (callers clamp; tanh below): 2^n as one factor, from the
 * bits as in fb_expf. Max error 1.6 ulp (tests/test_fused.py). */
static inline double fb_exp_f64(double x) {
    double t;
    const double y = fb_exp_f64_reduced(x, &t);
    uint64_t tb;
    memcpy(&tb, &t, sizeof tb);
    const uint64_t e = (tb - 0x4338000000000000ull + 1023u) << 52;
    double sc;
    memcpy(&sc, &e, sizeof sc);
    return y * sc;
}

/* float64 exp for any x: x clamped to [-746, 710] and 2^n applied as two factors 2^h 2^(n-h),
 * h = floor(n / 2), n in [-1076, 1024], as in fb_expf: exp underflows gradually through the
 * subnormals to 0 (x < -745.13 and -inf give 0) and overflows to +inf (x > 709.78, +inf
 * included); NaN propagates. Within 2 ulp (an ulp of a subnormal is 2^-1074). */
static inline double fb_exp_f64_any(double x) {
    x = x > 710.0 ? 710.0 : x;
    x = x < -746.0 ? -746.0 : x;
    double t;
    const double y = fb_exp_f64_reduced(x, &t);
    uint64_t tb;
    memcpy(&tb, &t, sizeof tb);
    const uint64_t u = tb - 0x4338000000000000ull;     /* n mod 2^64 */
    const uint64_t h = ((u + 2048u) >> 1) - 1024u;     /* floor(n / 2) */
    const uint64_t e1 = (h + 1023u) << 52, e2 = (u - h + 1023u) << 52;
    double s1, s2;
    memcpy(&s1, &e1, sizeof s1);
    memcpy(&s2, &e2, sizeof s2);
    return y * s1 * s2;
}

/* float64 tanh, Cephes' two regimes computed branch-free: for |x| <= 0.625 the rational form
 * x + x^3 P(x^2)/Q(x^2), above it 1 - 2 / (exp(2|x|) + 1) with the sign restored; |x| clamped
 * at 20, where tanh rounds to 1 in float64. Max error ~2 ulp; NaN propagates. */
static inline double fb_tanh_f64(double x) {
    double a = x < 0 ? -x : x;
    a = a > 20.0 ? 20.0 : a;
    const double big = 1.0 - 2.0 / (fb_exp_f64(2.0 * a) + 1.0);
    const double x2 = x * x;
    double p = -9.64399179425052238628E-1;
    p = p * x2 - 9.92877231001918586564E1;
    p = p * x2 - 1.61468768441708447952E3;
    double q = x2 + 1.12811678491632931402E2;
    q = q * x2 + 2.23548839060100448583E3;
    q = q * x2 + 4.84406305325125486048E3;
    const double small = x == 0 ? x : x + x * x2 * (p / q);    /* keeps the sign of -0.0 */
    const double signed_big = x < 0 ? -big : big;
    return a > 0.625 ? signed_big : small;
}

FB_CLONES void fb_tanh_f64_array(const double *x, double *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = fb_tanh_f64(x[i]);
}

FB_CLONES void fb_tanh_f32_array(const float *x, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = fb_tanhf(x[i]);
}

FB_CLONES void fb_exp_f32_array(const float *x, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = fb_expf(x[i]);
}

FB_CLONES void fb_exp_f64_array(const double *x, double *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = fb_exp_f64_any(x[i]);
}

/* ---------------------------------------------------------------------------------------------
 * the minibatch of a step: ctx (B, T) = X[rows], tgt (B,) = Y[rows]. Rows are random, so each
 * read misses the cache; prefetching a few rows ahead overlaps the misses. */
static FB_INLINE void fb_gather_batch(fb_net *net, const int64_t *X, const int64_t *Y,
                                      const int64_t *rows) {
    const int B = net->B, T = net->T;
    int64_t *restrict ctx = net->ctx, *restrict tgt = net->tgt;
    for (int b = 0; b < B; b++) {
        if (b + 8 < B) {
            __builtin_prefetch(X + rows[b + 8] * T);
            __builtin_prefetch(Y + rows[b + 8]);
        }
        for (int t = 0; t < T; t++) ctx[(int64_t)b * T + t] = X[rows[b] * T + t];
        tgt[b] = Y[rows[b]];
    }
}

/* ---------------------------------------------------------------------------------------------
 * column blocks (fused_impl.h): rows summed in the floating type before a double total */
#define FB_CHUNK 64
#define FB_SB 64        /* examples per block of the softmax */
#define FB_PANEL 32     /* examples per GEMM of the output layer (fused_impl.h) */

/* The first column of block jb (width w) of H columns: the last block is moved left to end at
 * H, overlapping its neighbour (whose columns it computes again, to the same values), so every
 * block is full when H >= w. */
static inline int fb_block_start(int jb, int w, int H) {
    return jb + w <= H || H < w ? jb : H - w;
}

/* ---------------------------------------------------------------------------------------------
 * the two instances */

#define REAL float
#define SFX(name) name##_f32
#define GEMM_FN sgemm
#define TANH fb_tanhf
#define EXP fb_expf
#include "fused_impl.h"
#undef REAL
#undef SFX
#undef GEMM_FN
#undef TANH
#undef EXP

#define REAL double
#define SFX(name) name##_f64
#define GEMM_FN dgemm
#define TANH fb_tanh_f64
#define EXP fb_exp_f64_any
#include "fused_impl.h"
#undef REAL
#undef SFX
#undef GEMM_FN
#undef TANH
#undef EXP
