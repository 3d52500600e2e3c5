/*
 * average.c — the exponential average of the weights that evaluation, sampling and export use.
 *
 * Late in a run most weight moves are noise (docs/results.md), and an average over the recent steps
 * cancels it without another forward pass. The average's rate is 2^-s(t) with
 * s(t) = max(0, floor(log2(t + 1)) - weight_average): its horizon 2^s is 1/2^(weight_average + 1) to
 * 1/2^weight_average of the steps so far, so it never remembers the early weights of a long run and
 * starts as the weights themselves (s = 0) in a short one. Each weight's average is an int32 with EGG_AVERAGE_FRAC_BITS
 * fraction bits; the training weights, which ES perturbs, never see it.
 */
#include "egg_internal.h"

static int32_t average_shift(const egg_config *c, int64_t step) {
    int32_t log2_steps = 0;
    while (((step + 1) >> (log2_steps + 1)) > 0) log2_steps++;
    return log2_steps > c->weight_average ? log2_steps - c->weight_average : 0;
}

typedef struct average_job {
    egg_model *m;
    int32_t shift;
    int64_t half;
} average_job;

/* Weights per task of the average's pass: a few tasks at the `small` sizes, so that the pass, which every
 * step makes over all weights, does not run on one thread while the others wait. */
#define AVERAGE_CHUNK 16384

static void average_task(void *ctx, int64_t chunk) {
    const average_job *job = ctx;
    egg_model *m = job->m;
    const int32_t s = job->shift;
    const int64_t half = job->half, first = chunk * AVERAGE_CHUNK;
    const int64_t end = first + AVERAGE_CHUNK < m->n_weights ? first + AVERAGE_CHUNK : m->n_weights;
    for (int64_t i = first; i < end; i++) {
        const int64_t target = (int64_t)m->weights[i] * (1 << EGG_AVERAGE_FRAC_BITS);
        m->weight_average[i] += (int32_t)((target - m->weight_average[i] + half) >> s);
    }
}

/* avg += floor((w - avg) / 2^s + 1/2) (an arithmetic shift): it stays between avg and w, so within
 * [-127, 127] weights; s = 0 copies the weights. */
void egg_advance_weight_average(egg_model *m, int64_t step) {
    if (!m->weight_average) return;
    const int32_t s = average_shift(&m->cfg, step);
    average_job job = {m, s, s ? (int64_t)1 << (s - 1) : 0};
    egg_parallel_for((m->n_weights + AVERAGE_CHUNK - 1) / AVERAGE_CHUNK, m->threads, average_task, &job);
}

/* The average to the nearest int8 weight, ties away from zero; the weights themselves without one. */
void egg_averaged_weights(const egg_model *m, int8_t *out) {
    if (!m->weight_average) {
        for (int64_t i = 0; i < m->n_weights; i++) out[i] = m->weights[i];
        return;
    }
    const int32_t half = 1 << (EGG_AVERAGE_FRAC_BITS - 1);
    for (int64_t i = 0; i < m->n_weights; i++) {
        const int32_t a = m->weight_average[i];
        out[i] = (int8_t)(a >= 0 ? (a + half) >> EGG_AVERAGE_FRAC_BITS : -((-a + half) >> EGG_AVERAGE_FRAC_BITS));
    }
}
