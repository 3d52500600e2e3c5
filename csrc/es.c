/* EGGROLL: the population's noise (counter-based, rng.h), the population step, fitness and
 * the thresholded vote update. Every random number is a pure function of
 * (step seed, tensor, pair, index), so any thread can regenerate any slice. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "egg_internal.h"
#include "error.h"
#include "rng.h"

static uint64_t isqrt64(uint64_t n) {
    uint64_t r = 0;
    for (uint64_t bit = 1ULL << 62; bit; bit >>= 2) {
        if (n >= r + bit) {
            n -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
    }
    return r;
}

/* floor(z * sigma^2 * sqrt(sum of f^2 over the voters)), sigma^2 = (4^k - 1) / 6, z in 1/256 units: see
 * vote_threshold() in reference.py. */
static int64_t vote_threshold(const egg_config *c, int64_t fitness_energy, int64_t z_q8) {
    const uint64_t spread = (1ULL << (2 * c->noise_bits)) - 1;
    const uint64_t num = (uint64_t)z_q8 * (uint64_t)z_q8 * spread * spread * (uint64_t)fitness_energy;
    return (int64_t)isqrt64(num / (36ULL * 65536ULL));
}

/* A row's divisor for scaled_vote: the vote's null spread (at least 1) and its reciprocal. */
typedef struct vote_scale {
    int64_t spread;
    double reciprocal;
} vote_scale;

static vote_scale vote_scale_of(int64_t spread) {
    spread = spread ? spread : 1;
    return (vote_scale){spread, 1.0 / (double)spread};
}

/* vote * 256 / spread, rounded towards zero: a vote in 1/256 of its null spread. |vote| < 2^31 (an int32
 * vote), so the dividend stays below 2^39, in egg_floor_div's range: no integer divide per weight. */
static int64_t scaled_vote(int64_t vote, vote_scale s) {
    const int64_t q = egg_floor_div((vote < 0 ? -vote : vote) << 8, s.spread, s.reciprocal);
    return vote < 0 ? -q : q;
}

/* The rule's largest threshold: see EGG_MEMORY_MAX_Z_Q8. */
static int64_t largest_z(const egg_config *c) { return c->vote_memory ? EGG_MEMORY_MAX_Z_Q8 : EGG_MAX_Z_Q8; }

/* The threshold of a tensor when the matrices' is z: vectors (norms, biases) scale it by vector_z_q8 / 256. */
static int64_t tensor_z(const egg_config *c, int vector, int64_t z) {
    if (!vector) return z;
    const int64_t scaled = z * c->vector_z_q8 / 256;
    return scaled < largest_z(c) ? scaled : largest_z(c);
}

/* The threshold of step t in 1/256 units (threshold_z_at() in reference.py): z grows as
 * z * sqrt((t + G) / G) over G = z_growth_steps, up to max_z_q8, so weights move less often as
 * training settles; over the cooldown [S, E) that is further multiplied by (E - S) / (E - t), so the
 * rate of moves, which goes as 1/z, falls linearly, up to the rule's largest threshold, where it stays. */
static int64_t threshold_z_at(const egg_config *c, int64_t step) {
    const int64_t z = c->threshold_z_q8, g = c->z_growth_steps, start = c->cooldown_start, end = c->cooldown_end;
    int64_t grown = z;
    if (g) {
        grown = (int64_t)isqrt64((uint64_t)(z * z) * (uint64_t)(step + g) / (uint64_t)g);
        if (grown > c->max_z_q8) grown = c->max_z_q8;
    }
    if (!end || step < start) return grown;
    const int64_t ceiling = largest_z(c);
    if (step >= end) return ceiling;
    const int64_t cooled = grown * (end - start) / (end - step);
    return cooled < ceiling ? cooled : ceiling;
}

static int64_t alpha_q16(const egg_config *c, int64_t step) {
    const int64_t d = c->alpha_decay_steps;
    return d == 0 ? 1 << 16 : ((int64_t)(1 << 16) * d) / (step + d);
}

/* ---- population noise: pairs x noise_len, A then B per tensor */

typedef struct noise_job {
    const egg_model *m;
    uint64_t seed;
    int64_t first; /* pair of noise row 0 */
    int8_t *noise;
} noise_job;

static void noise_task(void *ctx, int64_t row) {
    const noise_job *job = ctx;
    const egg_model *m = job->m;
    const int64_t pair = job->first + row;
    int8_t *out = job->noise + row * m->noise_len;
    for (int32_t t = 0; t < m->n_tensors; t++) {
        const egg_tensor *ten = &m->tensors[t];
        egg_noise_values(egg_stream_key(job->seed, t, (uint64_t)pair), ten->rows + ten->cols,
                         m->cfg.noise_bits, out + ten->noise_off);
    }
}

/* ---- population forward */

typedef struct population_job {
    const egg_model *m;
    int64_t members, block;
    const uint8_t **tokens;
    int8_t **states;
    const int8_t **noise;
    int8_t *signs;
    int64_t *losses;
    egg_task_error error;
} population_job;

static void population_task(void *ctx, int64_t task) {
    population_job *job = ctx;
    const int64_t first = task * job->block, members = job->members;
    const int32_t count = (int32_t)(first + job->block <= members ? job->block : members - first);
    const egg_block b = {.members = count,
                         .steps = job->m->cfg.seq_len,
                         .tokens = job->tokens + first,
                         .states = job->states + first,
                         .noise = job->noise + first,
                         .signs = job->signs + first,
                         .losses = job->losses + first};
    if (egg_forward_block(job->m, &b)) egg_task_failed(&job->error);
}

/* ---- update: vote = (A∘f)ᵀ·B per tensor as one GEMM over the voting pairs.
 * The row blocks of all tensors (the update's tasks, in weight order) run as one parallel loop, so
 * small tensors do not leave threads idle one after another; each task transposes its own rows of A
 * and its tensor's B (with several tasks per tensor B's transposition is repeated, which costs less
 * than a second parallel loop and its barrier at the small sizes). A task needs only its voters' noise for its rows and its tensor's columns: without the step's
 * noise buffer it regenerates just that from the counter-based streams, so a process that applies a
 * range of the tasks (egg_apply_update_tasks) pays for that range alone. */

typedef struct update_task_def {
    int32_t tensor, row0, rows;
} update_task_def;

typedef struct update_job {
    const egg_model *m;
    uint64_t seed;
    int64_t voters, energy, alpha, z; /* energy: sum of f^2 over the voters; z: this step's threshold */
    const uint8_t *present;    /* streams x 256: byte b is an input of stream s's window (with row_energy) */
    const int64_t *row_energy; /* the embedding's per-row energy, or NULL: every row has `energy` */
    const int8_t *noise;       /* pairs x noise_len, or NULL: regenerate each task's slice of it */
    const int32_t *voter;      /* pair index of each voter */
    const int8_t *vote_sign;   /* fitness of each voter */
    const update_task_def *tasks; /* the row blocks to update */
    int64_t *moved;               /* weights moved by each task */
    int failed;
} update_job;

/* Bytes of scratch transpose_noise needs for n values. */
static size_t transpose_scratch(int32_t n) { return (size_t)EGG_VOTER_BLOCK * ((size_t)n + 16); }

/* out[i * voters + k] = f_k * v_k[offset + i] for i < n, v_k voter k's noise for tensor `tensor`
 * (offset counts from the tensor's A): rows of A (signed by fitness f) or of B (unsigned), from the
 * noise buffer or regenerated into `scratch` (transpose_scratch(n) bytes). With `rows_from` >= 0
 * (embedding rows rows_from..), a voter whose window does not contain byte rows_from + i contributes 0
 * to that row. Blocks of 8 voters through the kernel's voter_rows; a last, smaller block byte by byte. */
static void transpose_noise(const update_job *job, int32_t tensor, int64_t offset, int32_t n, int with_sign,
                            int32_t rows_from, int8_t *scratch, int8_t *out) {
    const egg_tensor *t = &job->m->tensors[tensor];
    const egg_voter_rows_fn voter_rows = egg_active_kernels()->voter_rows;
    const int64_t stride = (int64_t)n + 16, voters = job->voters;
    for (int64_t k0 = 0; k0 < voters; k0 += EGG_VOTER_BLOCK) {
        const int block = voters - k0 < EGG_VOTER_BLOCK ? (int)(voters - k0) : EGG_VOTER_BLOCK;
        const int8_t *v[EGG_VOTER_BLOCK];
        const uint8_t *present[EGG_VOTER_BLOCK];
        int8_t f[EGG_VOTER_BLOCK];
        for (int kk = 0; kk < EGG_VOTER_BLOCK && kk < block; kk++) { /* (the first bound for the compiler) */
            const int64_t k = k0 + kk;
            v[kk] = job->noise ? job->noise + job->voter[k] * job->m->noise_len + t->noise_off + offset
                               : egg_noise_range(egg_stream_key(job->seed, tensor, (uint64_t)job->voter[k]), offset,
                                                 n, job->m->cfg.noise_bits, scratch + kk * stride);
            f[kk] = with_sign ? job->vote_sign[k] : 1;
            present[kk] = rows_from >= 0
                              ? job->present + (job->voter[k] % job->m->cfg.streams) * EGG_VOCAB + rows_from
                              : NULL;
        }
        if (block == EGG_VOTER_BLOCK) {
            voter_rows(v, with_sign ? f : NULL, rows_from >= 0 ? present : NULL, n, voters, out + k0);
            continue;
        }
        for (int32_t i = 0; i < n; i++)
            for (int kk = 0; kk < block; kk++)
                out[i * voters + k0 + kk] = present[kk] && !present[kk][i] ? 0 : (int8_t)(f[kk] * v[kk][i]);
    }
}

/* Is weight `index` of tensor `key`'s alpha stream among this step's updated fraction? */
static int alpha_keeps(const update_job *job, uint64_t key, int64_t index) {
    return (int64_t)(egg_stream_word(key, index) & 0xFFFF) < job->alpha;
}

/* The weight moves one step towards the sign of `direction` unless that leaves [-127, 127]. */
static int nudge(int8_t *w, int64_t direction) {
    const int next = *w + (direction > 0 ? 1 : -1);
    if (next > 127 || next < -127) return 0;
    *w = (int8_t)next;
    return 1;
}

/* One row's votes, no memory: a weight moves when |vote| passes z times the vote's null spread. */
static int64_t apply_votes(const update_job *job, uint64_t key, int64_t first, const int32_t *vote, int32_t n,
                           int64_t energy, int64_t z, int8_t *w) {
    const int64_t tau = vote_threshold(&job->m->cfg, energy, z);
    int64_t moved = 0;
    for (int32_t j = 0; j < n; j++) {
        const int64_t v = vote[j];
        if ((v < 0 ? -v : v) > tau && alpha_keeps(job, key, first + j)) moved += nudge(&w[j], v);
    }
    return moved;
}

/* One row's votes with memory: each weight adds its vote, in 1/256 of the vote's null spread,
 * to its memory, less its decay (trunc(w * decay / 256), towards 0), and moves when the memory
 * passes z, spending z of it. */
static int64_t remember_votes(const update_job *job, uint64_t key, int64_t first, const int32_t *vote, int32_t n,
                              int64_t energy, int64_t z, int64_t decay, int8_t *w, int16_t *memory) {
    const vote_scale scale = vote_scale_of(vote_threshold(&job->m->cfg, energy, 256));
    int64_t moved = 0;
    for (int32_t j = 0; j < n; j++) {
        int64_t mem = memory[j] + scaled_vote(vote[j], scale) - w[j] * decay / 256;
        if ((mem > z || mem < -z) && alpha_keeps(job, key, first + j) && nudge(&w[j], mem)) {
            mem -= mem > 0 ? z : -z;
            moved++;
        }
        memory[j] = (int16_t)(mem > z ? z : mem < -z ? -z : mem);
    }
    return moved;
}

static void vote_task(void *ctx, int64_t index) {
    update_job *job = ctx;
    const update_task_def *task = &job->tasks[index];
    const egg_tensor *t = &job->m->tensors[task->tensor];
    int8_t *a_t = malloc((size_t)task->rows * (size_t)job->voters);
    int8_t *b_t = malloc((size_t)t->cols * (size_t)job->voters);
    int32_t *vote = malloc(sizeof *vote * (size_t)task->rows * (size_t)t->cols);
    int8_t *scratch = malloc(transpose_scratch(task->rows > t->cols ? task->rows : t->cols));
    if (!a_t || !b_t || !vote || !scratch) {
        job->failed = 1;
        free(a_t);
        free(b_t);
        free(vote);
        free(scratch);
        return;
    }
    const int64_t *row_energy = t->kind == EGG_EMBEDDING ? job->row_energy : NULL;
    transpose_noise(job, task->tensor, task->row0, task->rows, 1, row_energy ? task->row0 : -1, scratch, a_t);
    transpose_noise(job, task->tensor, t->rows, t->cols, 0, -1, scratch, b_t);
    egg_active_kernels()->gemm(task->rows, t->cols, (int32_t)job->voters, a_t, job->voters, b_t, job->voters, vote,
                               t->cols);
    const uint64_t key = egg_stream_key(job->seed, task->tensor, EGG_ALPHA_STREAM);
    const egg_config *c = &job->m->cfg;
    const int vector = t->vec_off >= 0; /* norms and biases: no decay, their own threshold */
    const int64_t z = tensor_z(c, vector, job->z);
    const int64_t decay = vector ? 0 : c->weight_decay_q8;
    int64_t moved = 0;
    for (int32_t r = 0; r < task->rows; r++) {
        const int64_t energy = row_energy ? row_energy[task->row0 + r] : job->energy;
        const int64_t first = (int64_t)(task->row0 + r) * t->cols; /* index in the tensor */
        if (!energy) continue;
        if (job->m->vote_memory)
            moved += remember_votes(job, key, first, vote + (int64_t)r * t->cols, t->cols, energy, z, decay,
                                    job->m->weights + t->offset + first, job->m->vote_memory + t->offset + first);
        else
            moved += apply_votes(job, key, first, vote + (int64_t)r * t->cols, t->cols, energy, z,
                                 job->m->weights + t->offset + first);
    }
    job->moved[index] = moved;
    free(a_t);
    free(b_t);
    free(vote);
    free(scratch);
}

/* Row blocks of about 4K votes: small enough to spread a small model over many threads and to slice
 * its update evenly over up to 16 processes (the `small` preset's largest task is 1/16 of its weights),
 * big enough that each block's GEMM reads B once for many rows (B's noise is remade for each block: at
 * 16K votes per block the `small` update takes 9% fewer instructions, but its embedding and head are one
 * task each, a quarter of the update apiece). */
#define VOTES_PER_TASK 4096

static int32_t rows_per_task(const egg_tensor *t) {
    return VOTES_PER_TASK / t->cols > 0 ? VOTES_PER_TASK / t->cols : 1;
}

static int64_t count_tasks(const egg_model *m) {
    int64_t n = 0;
    for (int32_t t = 0; t < m->n_tensors; t++) n += (m->tensors[t].rows + rows_per_task(&m->tensors[t]) - 1) /
                                                     rows_per_task(&m->tensors[t]);
    return n;
}

/* The update's tasks: the row blocks of every tensor, in weight order (count_tasks of them, malloc'd;
 * NULL when out of memory). */
static update_task_def *plan_update(const egg_model *m) {
    update_task_def *tasks = malloc(sizeof *tasks * (size_t)count_tasks(m));
    if (!tasks) return NULL;
    int64_t n = 0;
    for (int32_t t = 0; t < m->n_tensors; t++) {
        const int32_t rows = m->tensors[t].rows, rows_per = rows_per_task(&m->tensors[t]);
        for (int32_t r = 0; r < rows; r += rows_per)
            tasks[n++] = (update_task_def){t, r, rows - r < rows_per ? rows - r : rows_per};
    }
    return tasks;
}

/* The first weight of task `index` of `tasks` (n of them): the weight count when index == n. */
static int64_t task_first_weight(const egg_model *m, const update_task_def *tasks, int64_t n, int64_t index) {
    if (index == n) return m->n_weights;
    const egg_tensor *t = &m->tensors[tasks[index].tensor];
    return t->offset + (int64_t)tasks[index].row0 * t->cols;
}

/* present[s * 256 + b] = 1 when byte b is one of the inputs of stream s's window. */
static void window_bytes(const egg_model *m, const uint8_t *windows, uint8_t *present) {
    memset(present, 0, (size_t)m->cfg.streams * EGG_VOCAB);
    for (int32_t s = 0; s < m->cfg.streams; s++)
        for (int32_t i = 0; i < m->cfg.seq_len; i++) present[s * EGG_VOCAB + windows[s * (m->cfg.seq_len + 1) + i]] = 1;
}

/* An embedding row only affects the loss of pairs whose window contains its byte, so only
 * those pairs vote on it: its energy is the sum of their f^2. Rows [r0, r1), the ones being updated.
 * The voters of a stream share its window, so their f^2 are summed by stream first (stream_energy,
 * streams values of scratch), and each stream adds its sum once to each distinct byte of its window:
 * work in voters plus streams x seq_len, not voters x rows. */
static void embedding_energies(const update_job *job, const uint8_t *windows, int32_t r0, int32_t r1,
                               int64_t *stream_energy, int64_t *row_energy) {
    const int32_t streams = job->m->cfg.streams, seq_len = job->m->cfg.seq_len;
    int32_t last_stream[EGG_VOCAB]; /* the last stream that counted this byte */
    for (int32_t r = 0; r < EGG_VOCAB; r++) {
        row_energy[r] = 0;
        last_stream[r] = -1;
    }
    for (int32_t s = 0; s < streams; s++) stream_energy[s] = 0;
    for (int64_t k = 0; k < job->voters; k++)
        stream_energy[job->voter[k] % streams] += job->vote_sign[k] * job->vote_sign[k];
    for (int32_t s = 0; s < streams; s++) {
        if (!stream_energy[s]) continue;
        const uint8_t *window = windows + (int64_t)s * (seq_len + 1);
        for (int32_t i = 0; i < seq_len; i++) {
            const uint8_t byte = window[i];
            if (byte < r0 || byte >= r1 || last_stream[byte] == s) continue;
            last_stream[byte] = s;
            row_energy[byte] += stream_energy[s];
        }
    }
}

/* The update's tasks [t0, t1) from the pairs' fitness, with the step's noise buffer or (noise NULL)
 * regenerating what each task needs. */
static int apply_update(egg_model *m, uint64_t seed, int64_t step, const uint8_t *windows, const int8_t *noise,
                        const int8_t *fitness, int64_t t0, int64_t t1, int64_t *moved_total) {
    const int64_t pairs = m->cfg.population / 2;
    int64_t voters = 0, energy = 0;
    for (int64_t p = 0; p < pairs; p++) {
        voters += fitness[p] != 0;
        energy += fitness[p] * fitness[p];
    }
    *moved_total = 0;
    if (!voters) return 0;

    const int64_t n_tasks = t1 - t0;
    int rc = -1;
    int32_t *voter = malloc(sizeof *voter * (size_t)voters);
    int8_t *vote_sign = malloc((size_t)voters);
    update_task_def *tasks = plan_update(m);
    int64_t *moved = calloc((size_t)n_tasks + 1, sizeof *moved);
    int64_t embedding_energy[EGG_VOCAB];
    /* The embedding rows [r0, r1) among the tasks: only with those are the windows' bytes needed. */
    int32_t r0 = EGG_VOCAB, r1 = 0;
    for (int64_t i = t0; tasks && i < t1; i++)
        if (tasks[i].tensor == m->embedding) {
            r0 = tasks[i].row0 < r0 ? tasks[i].row0 : r0;
            r1 = tasks[i].row0 + tasks[i].rows > r1 ? tasks[i].row0 + tasks[i].rows : r1;
        }
    const int sparse_embedding = m->cfg.sparse_embedding_votes && r0 < r1;
    uint8_t *present = sparse_embedding ? malloc((size_t)m->cfg.streams * EGG_VOCAB) : NULL;
    int64_t *stream_energy = sparse_embedding ? malloc(sizeof *stream_energy * (size_t)m->cfg.streams) : NULL;
    if (!voter || !vote_sign || !tasks || !moved || (sparse_embedding && (!present || !stream_energy))) goto done;
    if (sparse_embedding) window_bytes(m, windows, present);
    for (int64_t p = 0, k = 0; p < pairs; p++)
        if (fitness[p]) {
            voter[k] = (int32_t)p;
            vote_sign[k++] = fitness[p];
        }
    update_job job = {.m = m,
                      .seed = seed,
                      .voters = voters,
                      .energy = energy,
                      .alpha = alpha_q16(&m->cfg, step),
                      .z = threshold_z_at(&m->cfg, step),
                      .present = present,
                      .row_energy = NULL,
                      .noise = noise,
                      .voter = voter,
                      .vote_sign = vote_sign,
                      .tasks = tasks + t0,
                      .moved = moved,
                      .failed = 0};
    if (sparse_embedding) {
        embedding_energies(&job, windows, r0, r1, stream_energy, embedding_energy);
        job.row_energy = embedding_energy;
    }
    egg_parallel_for(n_tasks, m->threads, vote_task, &job);
    if (!job.failed) {
        for (int64_t i = 0; i < n_tasks; i++) *moved_total += moved[i];
        rc = 0;
    }
done:
    if (rc) egg_set_error("out of memory in the update");
    free(voter);
    free(vote_sign);
    free(tasks);
    free(moved);
    free(present);
    free(stream_energy);
    return rc;
}

/* ---- fitness: the sign of each pair's loss difference, weighted 1..levels by the rank of its
 * size among the pairs that differ (see fitness() in reference.py). */

/* Sort n values in [0, 2^63) ascending, least significant byte first, with as many passes as the largest
 * has bytes (2 or 3 for loss differences), through `tmp` (n values): qsort's comparison callback cost
 * more than the rest of the fitness. */
static void radix_sort(int64_t *values, int64_t *tmp, int64_t n) {
    int64_t all = 0;
    for (int64_t i = 0; i < n; i++) all |= values[i];
    int64_t *from = values, *to = tmp;
    for (int shift = 0; shift < 64 && (all >> shift); shift += 8) {
        int64_t start[257] = {0};
        for (int64_t i = 0; i < n; i++) start[((from[i] >> shift) & 255) + 1]++;
        for (int d = 0; d < 256; d++) start[d + 1] += start[d];
        for (int64_t i = 0; i < n; i++) to[start[(from[i] >> shift) & 255]++] = from[i];
        int64_t *sorted = to;
        to = from;
        from = sorted;
    }
    if (from != values) memcpy(values, from, sizeof *values * (size_t)n);
}

/* Number of the n sorted values strictly below x. */
static int64_t count_below(const int64_t *sorted, int64_t n, int64_t x) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (sorted[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static int pair_fitness(const egg_model *m, const int64_t *losses, int8_t *fitness) {
    const int64_t pairs = m->cfg.population / 2;
    int64_t *sizes = malloc(sizeof *sizes * (size_t)(2 * pairs)); /* and radix_sort's scratch */
    if (!sizes) {
        egg_set_error("out of memory in the fitness");
        return -1;
    }
    int64_t differing = 0;
    for (int64_t p = 0; p < pairs; p++) {
        const int64_t diff = losses[2 * p + 1] - losses[2 * p];
        if (diff) sizes[differing++] = diff < 0 ? -diff : diff;
    }
    radix_sort(sizes, sizes + pairs, differing);
    for (int64_t p = 0; p < pairs; p++) {
        const int64_t diff = losses[2 * p + 1] - losses[2 * p];
        const int64_t level = 1 + m->cfg.fitness_levels * count_below(sizes, differing, diff < 0 ? -diff : diff) /
                                      (differing ? differing : 1);
        fitness[p] = (int8_t)(diff > 0 ? level : diff < 0 ? -level : 0);
    }
    free(sizes);
    return 0;
}

/* ---- phase timings of the last step on this thread, for benchmarks (egg_last_step_seconds) */

static _Thread_local egg_step_seconds last_step;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

egg_step_seconds egg_last_step_seconds(void) { return last_step; }

/* Noise of pairs [p0, p1), one row of noise_len per pair. */
static void pair_noise(const egg_model *m, uint64_t seed, int64_t p0, int64_t p1, int8_t *noise) {
    noise_job nj = {m, seed, p0, noise};
    egg_parallel_for(p1 - p0, m->threads, noise_task, &nj);
}

/* The members of pairs [p0, p1) run their windows from their own states, with `noise` (rows from p0);
 * losses[i] is member 2 * p0 + i's. */
static int evaluate_members(egg_model *m, const uint8_t *windows, const int8_t *noise, int64_t p0, int64_t p1,
                            int64_t *losses) {
    const int64_t members = 2 * (p1 - p0);
    int rc = -1;
    const uint8_t **tokens = malloc(sizeof *tokens * (size_t)members);
    int8_t **states = malloc(sizeof *states * (size_t)members);
    const int8_t **member_noise = malloc(sizeof *member_noise * (size_t)members);
    int8_t *signs = malloc((size_t)members);
    if (!tokens || !states || !member_noise || !signs) {
        egg_set_error("out of memory in the training step");
        goto done;
    }
    const int64_t window = (int64_t)m->cfg.seq_len + 1, state_len = (int64_t)m->cfg.layers * m->cfg.hidden;
    for (int64_t i = 0; i < members; i++) {
        const int64_t pair = p0 + i / 2;
        tokens[i] = windows + (pair % m->cfg.streams) * window;
        states[i] = m->state + (2 * p0 + i) * state_len;
        member_noise[i] = noise + (i / 2) * m->noise_len;
        signs[i] = (int8_t)(i % 2 ? -1 : 1);
    }
    population_job pj = {.m = m, .members = members, .block = egg_block_size(m, members), .tokens = tokens,
                         .states = states, .noise = member_noise, .signs = signs, .losses = losses};
    egg_parallel_for((members + pj.block - 1) / pj.block, m->threads, population_task, &pj);
    if (egg_task_error_raise(&pj.error)) goto done;
    rc = 0;
done:
    free(tokens);
    free(states);
    free(member_noise);
    free(signs);
    return rc;
}

/* Fitness from every member's loss, then the update's tasks [t0, t1) with every pair's noise (NULL:
 * regenerated where needed). */
static int update_from_losses(egg_model *m, uint64_t seed, int64_t step, const uint8_t *windows,
                              const int8_t *noise, const int64_t *losses, int64_t t0, int64_t t1,
                              int8_t *fitness_out, int64_t *moved_out) {
    const int64_t pairs = m->cfg.population / 2;
    int64_t moved = 0;
    int8_t *fitness = malloc((size_t)pairs);
    int rc = -1;
    if (!fitness) {
        egg_set_error("out of memory in the training step");
        return -1;
    }
    if (!pair_fitness(m, losses, fitness) && !apply_update(m, seed, step, windows, noise, fitness, t0, t1, &moved)) {
        if (fitness_out) memcpy(fitness_out, fitness, (size_t)pairs);
        if (moved_out) *moved_out = moved;
        rc = 0;
    }
    free(fitness);
    return rc;
}

int egg_evaluate_pairs(egg_model *m, uint64_t run_seed, int64_t step, const uint8_t *windows, int64_t p0,
                       int64_t p1, int64_t *member_loss_q16) {
    if (p0 < 0 || p1 < p0 || p1 > m->cfg.population / 2) {
        egg_set_error("pair range outside the population");
        return -1;
    }
    int8_t *noise = malloc((size_t)((p1 - p0) * m->noise_len) + 1);
    if (!noise) {
        egg_set_error("out of memory in the training step");
        return -1;
    }
    const double t_start = now();
    pair_noise(m, egg_step_seed(run_seed, step), p0, p1, noise);
    const double t_noise = now();
    memset(member_loss_q16, 0, sizeof *member_loss_q16 * (size_t)(2 * (p1 - p0))); /* the forward adds to it */
    const int rc = evaluate_members(m, windows, noise, p0, p1, member_loss_q16);
    last_step = (egg_step_seconds){t_noise - t_start, now() - t_noise, 0};
    free(noise);
    return rc;
}

int64_t egg_update_tasks(const egg_model *m) { return count_tasks(m); }

static int check_task_range(const egg_model *m, int64_t t0, int64_t t1) {
    if (t0 < 0 || t1 < t0 || t1 > count_tasks(m)) {
        egg_set_error("update task range outside [0, egg_update_tasks)");
        return -1;
    }
    return 0;
}

int egg_update_task_weights(const egg_model *m, int64_t t0, int64_t t1, int64_t *first, int64_t *end) {
    if (check_task_range(m, t0, t1)) return -1;
    update_task_def *tasks = plan_update(m);
    if (!tasks) {
        egg_set_error("out of memory in the update");
        return -1;
    }
    *first = task_first_weight(m, tasks, count_tasks(m), t0);
    *end = task_first_weight(m, tasks, count_tasks(m), t1);
    free(tasks);
    return 0;
}

int egg_apply_update_tasks(egg_model *m, uint64_t run_seed, int64_t step, const uint8_t *windows,
                           const int64_t *member_loss_q16, int64_t t0, int64_t t1, uint8_t *moves,
                           int8_t *fitness_out, int64_t *moved_out) {
    int64_t first = 0, end = 0;
    if (egg_update_task_weights(m, t0, t1, &first, &end)) return -1;
    int8_t *before = moves ? malloc((size_t)(end - first) + 1) : NULL;
    if (moves && !before) {
        egg_set_error("out of memory in the update");
        return -1;
    }
    const double t_start = now();
    if (moves) memcpy(before, m->weights + first, (size_t)(end - first));
    const int rc = update_from_losses(m, egg_step_seed(run_seed, step), step, windows, NULL, member_loss_q16, t0,
                                      t1, fitness_out, moved_out);
    if (moves) {
        memset(moves, 0, (size_t)((end - first + 3) / 4));
        for (int64_t i = 0; i < end - first; i++)
            moves[i / 4] |= (uint8_t)(((m->weights[first + i] - before[i]) & 3) << (2 * (i % 4)));
    }
    last_step = (egg_step_seconds){0, 0, now() - t_start};
    free(before);
    return rc;
}

int egg_apply_moves(egg_model *m, int64_t first, int64_t count, const uint8_t *moves, int64_t *moved) {
    if (first < 0 || count < 0 || first + count > m->n_weights) {
        egg_set_error("moves outside the weights");
        return -1;
    }
    int64_t changed = 0;
    for (int64_t i = 0; i < count; i++) {
        const int code = (moves[i / 4] >> (2 * (i % 4))) & 3; /* 0, 1 or 3: the move's low two bits */
        m->weights[first + i] = (int8_t)(m->weights[first + i] + (code ^ 2) - 2);
        changed += code != 0;
    }
    if (moved) *moved = changed;
    return 0;
}

int egg_apply_update(egg_model *m, uint64_t run_seed, int64_t step, const uint8_t *windows,
                     const int64_t *member_loss_q16, int8_t *fitness_out, int64_t *moved_out) {
    if (egg_apply_update_tasks(m, run_seed, step, windows, member_loss_q16, 0, count_tasks(m), NULL, fitness_out,
                               moved_out))
        return -1;
    egg_advance_weight_average(m, step);
    return 0;
}

int egg_train_step(egg_model *m, uint64_t run_seed, int64_t step, const uint8_t *windows,
                   int64_t *member_loss_q16, int8_t *fitness_out, int64_t *moved_out) {
    const int64_t population = m->cfg.population, pairs = population / 2;
    const uint64_t seed = egg_step_seed(run_seed, step);
    int rc = -1;
    int8_t *noise = malloc((size_t)(pairs * m->noise_len));
    int64_t *losses = calloc((size_t)population, sizeof *losses);
    if (!noise || !losses) {
        egg_set_error("out of memory in the training step");
        goto done;
    }
    const double t_start = now();
    pair_noise(m, seed, 0, pairs, noise);
    const double t_noise = now();
    if (evaluate_members(m, windows, noise, 0, pairs, losses)) goto done;
    const double t_forward = now();
    if (update_from_losses(m, seed, step, windows, noise, losses, 0, count_tasks(m), fitness_out, moved_out))
        goto done;
    egg_advance_weight_average(m, step);
    last_step = (egg_step_seconds){t_noise - t_start, t_forward - t_noise, now() - t_forward};
    if (member_loss_q16) memcpy(member_loss_q16, losses, sizeof *losses * (size_t)population);
    rc = 0;
done:
    free(noise);
    free(losses);
    return rc;
}
