/* Benchmarking: the machine's int8 multiply-accumulate peak, and the GEMM kernel
 * alone on a model's shapes (mlm/egg/bench.py reports achieved work against them).
 *
 * The peak is measured, not looked up: a register-resident microkernel of the
 * active kernel's own instructions (independent multiply-accumulate chains, no
 * memory traffic) runs on the requested threads through egg_parallel_for, so it
 * sees the same clock, cores and parallel backend as training. MACs counted:
 *   avx2:       32 per vpmaddubsw (each followed by vpmaddwd and vpaddd, as in the kernel)
 *   avxvnni,
 *   avx512vnni: 32 per 256-bit vpdpbusd (the width the kernels use)
 *   neon:       16 per sdot, or 16 per smull + smlal2 + sadalp without dotprod
 *   scalar:     the scalar kernel's own dot product over two L1-resident vectors
 *               (the compiler decides its instructions, so there is no hand-written twin) */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "egg_internal.h"
#include "error.h"
#include "rng.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Runs `iterations` rounds of the microkernel; returns the MACs done. The sum of
 * the accumulators goes to *sink so that none of the work is dead code. */
typedef int64_t (*peak_fn)(int64_t iterations, int32_t *sink);

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

/* An empty asm that claims to modify its operands: the inputs of every round look
 * new to the compiler, so it cannot hoist or merge the products. */
#define OPAQUE(v) __asm__ volatile("" : "+x"(v))

__attribute__((target("avx2"))) static int64_t peak_avx2(int64_t iterations, int32_t *sink) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i u0 = _mm256_set1_epi8(3), u1 = _mm256_set1_epi8(5);
    __m256i s0 = _mm256_set1_epi8(-7), s1 = _mm256_set1_epi8(11), s2 = _mm256_set1_epi8(-13);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
    for (int64_t i = 0; i < iterations; i++) {
        OPAQUE(u0);
        OPAQUE(u1);
        OPAQUE(s0);
        OPAQUE(s1);
        OPAQUE(s2);
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_maddubs_epi16(u0, s0), ones));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_maddubs_epi16(u0, s1), ones));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_maddubs_epi16(u0, s2), ones));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_maddubs_epi16(u1, s0), ones));
        a4 = _mm256_add_epi32(a4, _mm256_madd_epi16(_mm256_maddubs_epi16(u1, s1), ones));
        a5 = _mm256_add_epi32(a5, _mm256_madd_epi16(_mm256_maddubs_epi16(u1, s2), ones));
        __asm__("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5)); /* no spills (see kernels_x86.c) */
    }
    const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(_mm256_add_epi32(a2, a3),
                                                                                   _mm256_add_epi32(a4, a5)));
    *sink = _mm256_extract_epi32(sum, 0);
    return iterations * 6 * 32;
}

/* Chains of vpdpbusd on 12 accumulators, enough to cover its latency (5 cycles) at two
 * per cycle. Named variables, not an array: GCC keeps those in registers. */
typedef __m256i (*dpbusd_fn)(__m256i acc, __m256i u, __m256i s);

__attribute__((target("avx2,avxvnni"), always_inline)) static inline __m256i dpbusd_vex(__m256i acc, __m256i u,
                                                                                      __m256i s) {
    return _mm256_dpbusd_avx_epi32(acc, u, s);
}

__attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni"), always_inline)) static inline __m256i
dpbusd_evex(__m256i acc, __m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(acc, u, s);
}

__attribute__((target("avx2"), always_inline)) static inline int64_t peak_vnni(dpbusd_fn dpbusd, int64_t iterations,
                                                                              int32_t *sink) {
    __m256i u = _mm256_set1_epi8(3), s = _mm256_set1_epi8(-7);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
    __m256i a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
    for (int64_t i = 0; i < iterations; i++) {
        OPAQUE(u);
        OPAQUE(s);
        a0 = dpbusd(a0, u, s), a1 = dpbusd(a1, u, s), a2 = dpbusd(a2, u, s), a3 = dpbusd(a3, u, s);
        a4 = dpbusd(a4, u, s), a5 = dpbusd(a5, u, s), a6 = dpbusd(a6, u, s), a7 = dpbusd(a7, u, s);
        a8 = dpbusd(a8, u, s), a9 = dpbusd(a9, u, s), a10 = dpbusd(a10, u, s), a11 = dpbusd(a11, u, s);
        /* Equal chains could be merged into one: claim each accumulator changes. */
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5), "+x"(a6), "+x"(a7),
                         "+x"(a8), "+x"(a9), "+x"(a10), "+x"(a11));
    }
    const __m256i sum = _mm256_add_epi32(
        _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)),
                         _mm256_add_epi32(_mm256_add_epi32(a4, a5), _mm256_add_epi32(a6, a7))),
        _mm256_add_epi32(_mm256_add_epi32(a8, a9), _mm256_add_epi32(a10, a11)));
    *sink = _mm256_extract_epi32(sum, 0);
    return iterations * 12 * 32;
}

__attribute__((target("avx2,avxvnni"))) static int64_t peak_avxvnni(int64_t iterations, int32_t *sink) {
    return peak_vnni(dpbusd_vex, iterations, sink);
}

__attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni"))) static int64_t peak_avx512vnni(
    int64_t iterations, int32_t *sink) {
    return peak_vnni(dpbusd_evex, iterations, sink);
}
#endif

#if defined(__aarch64__)
#include <arm_neon.h>

#define OPAQUE(v) __asm__ volatile("" : "+w"(v))

/* Without dotprod: the smull + smlal2 + sadalp step of the smull kernel, 16 MACs. Each
 * chain multiplies its own s, so the products cannot be computed once and shared. */
#define SMULL_CHAIN(a, s) a = vpadalq_s16(a, vmlal_high_s8(vmull_s8(vget_low_s8(u), vget_low_s8(s)), u, s))
static int64_t peak_neon_smull(int64_t iterations, int32_t *sink) {
    int8x16_t u = vdupq_n_s8(3), s0 = vdupq_n_s8(-7), s1 = vdupq_n_s8(-5), s2 = vdupq_n_s8(-3), s3 = vdupq_n_s8(-1);
    int8x16_t s4 = vdupq_n_s8(1), s5 = vdupq_n_s8(3), s6 = vdupq_n_s8(5), s7 = vdupq_n_s8(7);
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int64_t i = 0; i < iterations; i++) {
        OPAQUE(u);
        OPAQUE(s0);
        OPAQUE(s1);
        OPAQUE(s2);
        OPAQUE(s3);
        OPAQUE(s4);
        OPAQUE(s5);
        OPAQUE(s6);
        OPAQUE(s7);
        SMULL_CHAIN(a0, s0), SMULL_CHAIN(a1, s1), SMULL_CHAIN(a2, s2), SMULL_CHAIN(a3, s3);
        SMULL_CHAIN(a4, s4), SMULL_CHAIN(a5, s5), SMULL_CHAIN(a6, s6), SMULL_CHAIN(a7, s7);
    }
    const int32x4_t sum = vaddq_s32(vaddq_s32(vaddq_s32(a0, a1), vaddq_s32(a2, a3)),
                                    vaddq_s32(vaddq_s32(a4, a5), vaddq_s32(a6, a7)));
    *sink = vgetq_lane_s32(sum, 0);
    return iterations * 8 * 16;
}

/* Where the neon kernel runs sdot (egg_neon_dotprod()), the build could compile it:
 * the same conditions as kernels_neon.c. 16 accumulators cover sdot's latency. */
#if defined(__ARM_FEATURE_DOTPROD) || (defined(__linux__) && defined(__GNUC__) && !defined(__clang__))
#if defined(__ARM_FEATURE_DOTPROD)
#define SDOT_TARGET
#else
#define SDOT_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
SDOT_TARGET static int64_t peak_neon_sdot(int64_t iterations, int32_t *sink) {
    int8x16_t u = vdupq_n_s8(3), s = vdupq_n_s8(-7);
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    int32x4_t a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
    for (int64_t i = 0; i < iterations; i++) {
        OPAQUE(u);
        OPAQUE(s);
        a0 = vdotq_s32(a0, u, s), a1 = vdotq_s32(a1, u, s), a2 = vdotq_s32(a2, u, s), a3 = vdotq_s32(a3, u, s);
        a4 = vdotq_s32(a4, u, s), a5 = vdotq_s32(a5, u, s), a6 = vdotq_s32(a6, u, s), a7 = vdotq_s32(a7, u, s);
        a8 = vdotq_s32(a8, u, s), a9 = vdotq_s32(a9, u, s), a10 = vdotq_s32(a10, u, s), a11 = vdotq_s32(a11, u, s);
        a12 = vdotq_s32(a12, u, s), a13 = vdotq_s32(a13, u, s), a14 = vdotq_s32(a14, u, s);
        a15 = vdotq_s32(a15, u, s);
        /* Equal chains could be merged into one: claim each accumulator changes. */
        __asm__ volatile("" : "+w"(a0), "+w"(a1), "+w"(a2), "+w"(a3), "+w"(a4), "+w"(a5), "+w"(a6), "+w"(a7));
        __asm__ volatile("" : "+w"(a8), "+w"(a9), "+w"(a10), "+w"(a11), "+w"(a12), "+w"(a13), "+w"(a14), "+w"(a15));
    }
    const int32x4_t sum = vaddq_s32(
        vaddq_s32(vaddq_s32(vaddq_s32(a0, a1), vaddq_s32(a2, a3)), vaddq_s32(vaddq_s32(a4, a5), vaddq_s32(a6, a7))),
        vaddq_s32(vaddq_s32(vaddq_s32(a8, a9), vaddq_s32(a10, a11)),
                  vaddq_s32(vaddq_s32(a12, a13), vaddq_s32(a14, a15))));
    *sink = vgetq_lane_s32(sum, 0);
    return iterations * 16 * 16;
}
#define HAVE_PEAK_SDOT 1
#endif
#endif

/* The scalar kernel's dot product, 64 times per iteration, over 256-byte vectors. */
static int64_t peak_scalar(int64_t iterations, int32_t *sink) {
    int8_t a[256], b[256];
    for (int i = 0; i < 256; i++) a[i] = (int8_t)(i % 255 - 127), b[i] = (int8_t)(127 - i % 200);
    int32_t sum = 0;
    for (int64_t i = 0; i < iterations; i++)
        for (int j = 0; j < 64; j++) {
            a[j] = (int8_t)(sum & 63); /* a changes, so no call can be merged or hoisted */
            sum += egg_kernels_scalar.dot(a, b, 256);
        }
    *sink = sum;
    return iterations * 64 * 256;
}

static peak_fn peak_kernel(const char *name) {
#if defined(__x86_64__) || defined(_M_X64)
    if (!strcmp(name, "avx2")) return peak_avx2;
    if (!strcmp(name, "avxvnni")) return peak_avxvnni;
    if (!strcmp(name, "avx512vnni")) return peak_avx512vnni;
#endif
#if defined(__aarch64__)
#if defined(HAVE_PEAK_SDOT)
    if (!strcmp(name, "neon") && egg_neon_dotprod()) return peak_neon_sdot;
#endif
    if (!strcmp(name, "neon")) return peak_neon_smull;
#endif
    return peak_scalar;
}

/* ---- running a timed task on every thread */

/* Rounds between clock reads: microseconds to milliseconds of work, whatever the kernel. */
#define PEAK_ROUND 4096

typedef struct peak_job {
    peak_fn fn;
    double seconds;
    int64_t *macs;
    int32_t *sinks;
} peak_job;

static void peak_task(void *ctx, int64_t index) {
    peak_job *job = ctx;
    const double start = now();
    int64_t macs = 0;
    int32_t sink = 0;
    do macs += job->fn(PEAK_ROUND, &sink);
    while (now() - start < job->seconds);
    job->macs[index] = macs;
    job->sinks[index] = sink;
}

double egg_peak_macs_per_second(int32_t threads, double seconds) {
    if (threads < 1) threads = 1;
    int64_t *macs = calloc((size_t)threads, sizeof *macs);
    int32_t *sinks = calloc((size_t)threads, sizeof *sinks);
    if (!macs || !sinks) {
        free(macs);
        free(sinks);
        egg_set_error("out of memory measuring the peak");
        return -1;
    }
    peak_job job = {peak_kernel(egg_kernel_name()), seconds, macs, sinks};
    const double start = now();
    egg_parallel_for(threads, threads, peak_task, &job);
    const double elapsed = now() - start;
    int64_t total = 0;
    for (int32_t i = 0; i < threads; i++) total += macs[i];
    free(macs);
    free(sinks);
    return (double)total / elapsed;
}

/* ---- the GEMM kernel alone on a model's training shapes */

typedef struct gemm_job {
    const egg_model *m;
    int32_t rows_x;    /* the population block of the training step */
    double seconds;
    int64_t *macs;
    int failed;
} gemm_job;

/* X rows of one block, int8 in [-127, 127], or [0, 127] for the MLP's down
 * projection, which reads a ReLU output in training too. */
static void fill_x(int8_t *x, int64_t n, uint64_t key, int nonneg) {
    egg_stream_bytes(key, n, (uint8_t *)x);
    for (int64_t i = 0; i < n; i++) {
        const int v = (uint8_t)x[i] % 255 - 127;
        x[i] = (int8_t)(nonneg && v < 0 ? -v : v);
    }
}

static int is_mlp_down(const egg_model *m, int32_t tensor) {
    for (int32_t l = 0; l < m->cfg.layers; l++)
        if (m->layer[l].down == tensor) return 1;
    return 0;
}

/* Every matrix a token passes through (the embedding is a lookup, not a GEMM),
 * with the model's weights, so each panel takes the operand form it takes in training. */
static void gemm_task(void *ctx, int64_t index) {
    gemm_job *job = ctx;
    const egg_model *m = job->m;
    const int32_t widest = m->cfg.hidden * m->cfg.mlp_ratio > EGG_VOCAB ? m->cfg.hidden * m->cfg.mlp_ratio : EGG_VOCAB;
    int8_t *x = malloc((size_t)job->rows_x * (size_t)widest);
    int8_t *x_relu = malloc((size_t)job->rows_x * (size_t)widest);
    int32_t *y = malloc((size_t)job->rows_x * (size_t)widest * sizeof *y);
    if (!x || !x_relu || !y) {
        job->failed = 1;
    } else {
        fill_x(x, (int64_t)job->rows_x * widest, (uint64_t)index, 0);
        fill_x(x_relu, (int64_t)job->rows_x * widest, (uint64_t)index + 0x100, 1);
        const egg_kernels *k = egg_active_kernels();
        const double start = now();
        int64_t macs = 0;
        do {
            for (int32_t t = 0; t < m->n_tensors; t++) {
                const egg_tensor *ten = &m->tensors[t];
                if (ten->kind != EGG_MATRIX) continue;
                k->gemm(job->rows_x, ten->rows, ten->cols, is_mlp_down(m, t) ? x_relu : x, ten->cols,
                        m->weights + ten->offset, ten->cols, y, ten->rows);
                macs += (int64_t)job->rows_x * ten->rows * ten->cols;
            }
        } while (now() - start < job->seconds);
        job->macs[index] = macs;
    }
    free(x);
    free(x_relu);
    free(y);
}

double egg_gemm_macs_per_second(egg_model *m, double seconds) {
    const int32_t threads = m->threads;
    int64_t *macs = calloc((size_t)threads, sizeof *macs);
    if (!macs) {
        egg_set_error("out of memory timing the GEMM");
        return -1;
    }
    gemm_job job = {m, (int32_t)egg_block_size(m, m->cfg.population), seconds, macs, 0};
    const double start = now();
    egg_parallel_for(threads, threads, gemm_task, &job);
    const double elapsed = now() - start;
    int64_t total = 0;
    for (int32_t i = 0; i < threads; i++) total += macs[i];
    free(macs);
    if (job.failed) {
        egg_set_error("out of memory timing the GEMM");
        return -1;
    }
    return (double)total / elapsed;
}
