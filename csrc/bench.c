/* Benchmarking: the machine's int8 multiply-accumulate peak, and the GEMM kernel
 * alone on a model's shapes (mlm/egg/bench.py reports achieved work against them).
 *
 * The peak is measured, not looked up: the active kernel's peak microkernel (egg_kernels.peak,
 * its own instructions in independent multiply-accumulate chains, no memory traffic; each kernel
 * file says how it counts MACs) runs on the requested threads through egg_parallel_for, so it
 * sees the same clock, cores and parallel backend as training. */
#include <stdlib.h>
#include <time.h>

#include "egg_internal.h"
#include "error.h"
#include "rng.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- running a timed task on every thread */

/* Rounds between clock reads: microseconds to milliseconds of work, whatever the kernel. */
#define PEAK_ROUND 4096

typedef struct peak_job {
    egg_peak_fn fn;
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
    peak_job job = {.fn = egg_active_kernels()->peak, .seconds = seconds, .macs = macs, .sinks = sinks};
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
    gemm_job job = {.m = m, .rows_x = (int32_t)egg_block_size(m, m->cfg.population), .seconds = seconds, .macs = macs};
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
