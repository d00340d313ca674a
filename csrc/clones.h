/* Per-CPU clones of fastbn's C loops (csrc/fused.c, csrc/layers.c).
 *
 * On x86-64 Linux with gcc, the entry points are compiled three times (AVX-512, AVX2+FMA, and the
 * baseline SSE2) and the loader picks the best the CPU runs (target_clones, an ifunc): the
 * elementwise loops run 4x-16x wide without -march=native, and the wheel stays portable. With FMA
 * the clones may round a*b+c once instead of twice, so results are reproducible per machine, not
 * across machines, unless the function is also FB_EXACT. FASTBN_NATIVE=1 builds (-march=native)
 * skip the clones. */
#ifndef FASTBN_CLONES_H
#define FASTBN_CLONES_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(FB_NO_CLONES)
#define FB_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FB_CLONES
#endif

/* Every product and sum rounded on its own (fp-contract off: no FMA), so that a clone computes
 * the numbers of the baseline build, on every CPU. */
#if defined(__GNUC__) && !defined(__clang__)
#define FB_EXACT __attribute__((optimize("fp-contract=off")))
#else
#define FB_EXACT
#endif

#endif
