/* The whole core on a tiny model: forward, eval and two training steps, hashed. Every kernel,
 * thread count and schedule, and the steps split into shares of pairs (egg_evaluate_pairs over
 * shares, then egg_apply_update, or the update in slices of its tasks: how MPI ranks run them) must give
 * the same hash, and so must every
 * platform: the script compares this program's output on x86_64 with the arm64 one (checkpoints are
 * portable), and tests/test_native_c.py runs it natively and on the installed Python core. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "egg.h"

/* FNV-1a, 64-bit: over bytes, with integers fed little-endian so the hash means the same
 * thing on every host. */
typedef struct hash {
    uint64_t h;
} hash;

static void hash_bytes(hash *s, const void *data, size_t n) {
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) s->h = (s->h ^ p[i]) * 0x100000001B3ULL;
}

static void hash_i64(hash *s, int64_t v) {
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)v >> (8 * i));
    hash_bytes(s, le, 8);
}

/* The hash every build must print: a change means the core's arithmetic changed, which breaks every
 * saved checkpoint's meaning. Update it only with a deliberate change of the algorithm's bits. */
#define EXPECTED_CORE_HASH 0xbfe1aa94fcc7c4f4ULL

static const egg_config CONFIG = {
    .hidden = 32, .layers = 2, .mlp_ratio = 2, .seq_len = 12, .population = 10, .streams = 2,
    .noise_bits = 3, .noise_shift = 4, .threshold_z_q8 = 128, .alpha_decay_steps = 4, .shift_base = 4,
    .fitness_levels = 3, .sparse_embedding_votes = 1, .vote_memory = 1, .z_growth_steps = 1,
    .max_z_q8 = 4096, .vector_z_q8 = 256,
};

static const char TEXT[] =
    "import * as THREE from 'three';\nconst scene = new THREE.Scene();\n"
    "const camera = new THREE.PerspectiveCamera( 75, window.innerWidth / window.innerHeight );\n";

#define CHECK(call)                                                                       \
    do {                                                                                  \
        if ((call) != 0) {                                                                \
            fprintf(stderr, "%s failed: %s\n", #call, egg_last_error());                 \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

/* The update in three slices of its tasks, as three ranks of a sliced update apply them: each slice's
 * reported moves must be exactly what changed in its weights, and nothing outside them may change. */
static int64_t sliced_update(egg_model *m, int64_t step, const uint8_t *windows, const int64_t *member_loss,
                             int8_t *fitness) {
    const int64_t tasks = egg_update_tasks(m), size = egg_weights_size(m);
    const int64_t bounds[4] = {0, tasks / 3, tasks - tasks / 4, tasks};
    int8_t *before = malloc((size_t)size);
    uint8_t *moves = malloc((size_t)size / 4 + 1);
    int64_t total = 0;
    for (int s = 0; s < 3; s++) {
        int64_t first, end, moved;
        CHECK(egg_update_task_weights(m, bounds[s], bounds[s + 1], &first, &end));
        memcpy(before, egg_weights(m), (size_t)size);
        CHECK(egg_apply_update_tasks(m, 42, step, windows, member_loss, bounds[s], bounds[s + 1], moves, fitness,
                                     &moved));
        int64_t changed = 0, applied = 0;
        for (int64_t i = 0; i < size; i++) {
            const int inside = i >= first && i < end, delta = egg_weights(m)[i] - before[i];
            if (delta < -1 || delta > 1 || (!inside && delta)) {
                fprintf(stderr, "slice %d: weight %lld changed by %d\n", s, (long long)i, delta);
                exit(1);
            }
            changed += delta != 0;
        }
        /* The packed moves, applied to the weights before, give the weights after (as on another rank). */
        int8_t *after = malloc((size_t)size);
        memcpy(after, egg_weights(m), (size_t)size);
        memcpy(egg_weights(m), before, (size_t)size);
        CHECK(egg_apply_moves(m, first, end - first, moves, &applied));
        if (memcmp(after, egg_weights(m), (size_t)size) || changed != moved || applied != moved) {
            fprintf(stderr, "slice %d: %lld weights changed, %lld reported, %lld applied from the moves\n", s,
                    (long long)changed, (long long)moved, (long long)applied);
            exit(1);
        }
        free(after);
        total += moved;
    }
    free(before);
    free(moves);
    return total;
}

static uint64_t run(int32_t threads, int32_t batched, int32_t split, int64_t *moved_total) {
    egg_model *m = egg_create(&CONFIG);
    if (!m) {
        fprintf(stderr, "egg_create: %s\n", egg_last_error());
        exit(1);
    }
    egg_init_weights(m, 0xC0FFEE);
    egg_set_threads(m, threads);
    egg_set_batched(m, batched);
    hash s = {0xCBF29CE484222325ULL};

    const uint8_t *text = (const uint8_t *)TEXT;
    const int64_t n = 40;
    int8_t state[2 * 32] = {0}, logits[39 * 256];
    int64_t loss;
    CHECK(egg_forward(m, text, n, state, logits, &loss));
    hash_i64(&s, loss);
    hash_bytes(&s, state, sizeof state);
    hash_bytes(&s, logits, sizeof logits);
    CHECK(egg_eval(m, text, (int64_t)sizeof TEXT - 1, 16, &loss));
    hash_i64(&s, loss);

    *moved_total = 0;
    for (int64_t step = 0; step < 2; step++) {
        uint8_t windows[2 * 13];
        for (int i = 0; i < 2; i++) memcpy(windows + 13 * i, text + 50 * i + 20 * step, 13);
        int64_t member_loss[10], moved;
        int8_t fitness[5];
        if (split) { /* shares of pairs [0, 2) and [2, 5), as two ranks would evaluate them */
            memset(member_loss, 0x55, sizeof member_loss); /* outputs, whatever they held before */
            CHECK(egg_evaluate_pairs(m, 42, step, windows, 0, 2, member_loss));
            CHECK(egg_evaluate_pairs(m, 42, step, windows, 2, 5, member_loss + 4));
            if (split == 1) CHECK(egg_apply_update(m, 42, step, windows, member_loss, fitness, &moved));
            else moved = sliced_update(m, step, windows, member_loss, fitness);
        } else {
            CHECK(egg_train_step(m, 42, step, windows, member_loss, fitness, &moved));
        }
        for (int i = 0; i < 10; i++) hash_i64(&s, member_loss[i]);
        hash_bytes(&s, fitness, sizeof fitness);
        hash_i64(&s, moved);
        *moved_total += moved;
    }
    hash_bytes(&s, egg_weights(m), (size_t)egg_weights_size(m));
    hash_bytes(&s, egg_state(m), (size_t)egg_state_size(m));
    for (int64_t i = 0; i < egg_vote_memory_size(m); i++) hash_i64(&s, egg_vote_memory(m)[i]);
    egg_free(m);
    return s.h;
}

int main(void) {
    char names[256];
    snprintf(names, sizeof names, "%s", egg_available_kernels());
    uint64_t first = 0;
    int runs = 0, bad = 0;
    int64_t moved = 0;
    for (char *name = strtok(names, ","); name; name = strtok(NULL, ",")) {
        CHECK(egg_force_kernel(name));
        const int32_t threads[] = {1, 3};
        for (int t = 0; t < 2; t++)
            for (int32_t batched = 1; batched >= 0; batched--)
                for (int32_t split = 0; split <= 2; split++) {
                    const uint64_t h = run(threads[t], batched, split, &moved);
                    printf("kernel %-8s threads %d batched %d split %d: %016llx\n", name, threads[t], batched,
                           split, (unsigned long long)h);
                    if (runs++ == 0) first = h;
                    bad |= h != first;
                }
    }
    /* A hash over weights that never moved would not test the update. */
    if (moved == 0) {
        fprintf(stderr, "no weight moved in two steps: the test configuration is too timid\n");
        bad = 1;
    }
    printf("parallel %s, %lld weights moved\n", egg_parallel_backend(), (long long)moved);
    printf("core hash: %016llx%s\n", (unsigned long long)first, bad ? " (RUNS DISAGREE)" : "");
    if (first != EXPECTED_CORE_HASH) {
        fprintf(stderr, "core hash %016llx != the expected %016llx\n", (unsigned long long)first,
                (unsigned long long)EXPECTED_CORE_HASH);
        bad = 1;
    }
    return bad;
}
