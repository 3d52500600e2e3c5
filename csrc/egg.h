/*
 * egg.h — the whole public C API of the mlm EGGROLL core (the cffi surface).
 *
 * Integer-only byte-level language model trained with EGGROLL: antithetic
 * rank-1 evolution strategies on int8 weights. Every function is
 * deterministic: the same inputs give bit-identical outputs for every SIMD
 * kernel, thread count and platform. mlm/egg/reference.py is the executable
 * specification.
 *
 * Errors: functions returning int return 0 on success and a negative value
 * on failure; egg_last_error() then describes it.
 */
#ifndef EGG_H
#define EGG_H

#include <stdint.h>

/* The core's fixed numbers, published so that Python reads them (lib.EGG_...) instead of re-typing them.
 * The limits are the accepted range of each egg_config field that egg_create checks. */
enum {
    EGG_VOCAB = 256,              /* bytes: embedding and head rows, logits per prediction */
    EGG_LOSS_FRAC_BITS = 16,      /* losses are Q16 fixed-point bits */
    EGG_HIDDEN_MULTIPLE = 16,     /* hidden is a multiple of the SIMD block (the NEON width) */
    EGG_MAX_HIDDEN = 4096,
    EGG_MAX_LAYERS = 64,
    EGG_MAX_MLP_RATIO = 8,
    EGG_MAX_POPULATION = 65536,
    EGG_MAX_NOISE_BITS = 4,       /* noise u1 - u2 fits a nibble each */
    EGG_MAX_SHIFT = 16,           /* noise_shift and shift_base */
    EGG_MAX_FITNESS_NOISE = 127,  /* fitness_levels * (2^noise_bits - 1): their product fits int8 */
    EGG_MAX_Z_Q8 = 4096,          /* the largest vote threshold, 16 spreads: keeps the squared threshold in 64 bits */
    /* With vote memory the threshold is compared with the memory, never squared: 127 spreads, so the
     * memory, clamped to +/- z, still fits int16. */
    EGG_MEMORY_MAX_Z_Q8 = 32512,
    EGG_MAX_WEIGHT_DECAY_Q8 = 256,
    EGG_MAX_VECTOR_Z_Q8 = 4096,
    EGG_MAX_WEIGHT_AVERAGE = 16,
    EGG_AVERAGE_FRAC_BITS = 23    /* of the weight average's int32 per weight: 127 * 2^23 fits with room */
};

/* The model and its training rule. ModelConfig in mlm/egg/config.py has exactly these fields (checked when it
 * is imported), each with its range, flag and log tag; egg_create refuses values outside the limits above. */
typedef struct egg_config {
    int32_t hidden;            /* model width, multiple of 16 */
    int32_t layers;            /* GRU + MLP blocks */
    int32_t mlp_ratio;         /* MLP width = hidden * mlp_ratio */
    int32_t seq_len;           /* tokens per member per training step */
    int32_t population;        /* members per step, even: pairs of +/- */
    int32_t streams;           /* distinct data windows per step; pair p reads p % streams */
    int32_t noise_bits;        /* noise = u1 - u2, u uniform on [0, 2^noise_bits) */
    int32_t noise_shift;       /* perturbation A[r]*B[c] >> noise_shift */
    int32_t threshold_z_q8;    /* vote threshold z in 1/256 units */
    int32_t alpha_decay_steps; /* updated fraction D/(t+D); 0 = always 1 */
    int32_t z_growth_steps;    /* threshold z * sqrt((t+G)/G), at most 16; 0 = constant z */
    int32_t shift_base;        /* matmul shift = shift_base + floor(log2(cols)/2) */
    int32_t fitness_levels;    /* pair fitness = sign * (1..levels by rank of |loss difference|) */
    int32_t sparse_embedding_votes; /* 1: an embedding row is voted on only by pairs whose window has its byte */
    int32_t vote_memory;       /* 1: votes add up across steps in a per-weight memory (see egg_vote_memory) */
    int32_t max_z_q8;          /* ceiling of the growing threshold, 1/256 units: at most 4096 (16 spreads),
                                  or 32512 (127) with vote_memory; >= threshold_z_q8 */
    int32_t cooldown_start;    /* steps [start, end): the threshold is multiplied by (end - start) / (end - t) */
    int32_t cooldown_end;      /* up to 4096 (32512 with vote_memory), its value from end on; 0, 0 = off */
    int32_t weight_decay_q8;   /* with vote_memory: a matrix weight w's memory loses trunc(w * this / 256) per
                                  step (1/256 spreads), pulling it towards 0; 0 = off, at most 256 */
    int32_t vector_z_q8;       /* threshold of norm and bias vectors, in 1/256 of the matrices' (256 = same),
                                  capped at the rule's largest; 1..4096 */
    int32_t weight_average;    /* keep an exponential average of the weights over about the last
                                  1/2^weight_average of the steps (see csrc/average.c); 0 = none, 1..16 */
} egg_config;

typedef struct egg_model egg_model;

/* Create a model (weights zeroed, population state zeroed). NULL on a bad config. */
egg_model *egg_create(const egg_config *cfg);
void egg_free(egg_model *m);
const char *egg_last_error(void);

/* Flat buffers owned by the model; Python reads and writes them in place. */
int64_t egg_weights_size(const egg_model *m);
int8_t *egg_weights(egg_model *m);
int64_t egg_state_size(const egg_model *m);   /* population * layers * hidden */
int8_t *egg_state(egg_model *m);
/* Per-weight vote memory, in 1/256 of a step's vote spread: weights-size entries when
 * cfg.vote_memory, else 0 (and NULL). Part of the training state, like the weights. */
int64_t egg_vote_memory_size(const egg_model *m);
int16_t *egg_vote_memory(egg_model *m);
/* The weight average, per weight an int32 with EGG_AVERAGE_FRAC_BITS fraction bits: weights-size entries when
 * cfg.weight_average, else 0 (and NULL). Part of the training state; evaluation, sampling and export
 * use it through egg_averaged_weights. */
int64_t egg_weight_average_size(const egg_model *m);
int32_t *egg_weight_average(egg_model *m);
/* Advance the weight average after step `step`'s weights are final: egg_train_step and
 * egg_apply_update do it; after egg_apply_update_tasks and egg_apply_moves the caller does. */
void egg_advance_weight_average(egg_model *m, int64_t step);
/* The weight average rounded to the nearest int8 (ties away from zero) into out[weights-size];
 * a copy of the weights when the model keeps no average. */
void egg_averaged_weights(const egg_model *m, int8_t *out);

/* Tensor table, for export and inspection. */
int32_t egg_num_tensors(const egg_model *m);
int egg_tensor_info(const egg_model *m, int32_t index, const char **name, int32_t *rows, int32_t *cols,
                    int64_t *offset);

void egg_init_weights(egg_model *m, uint64_t seed);

/* Run-time settings that never change results. */
void egg_set_threads(egg_model *m, int32_t threads);
int32_t egg_threads(const egg_model *m);
/* 1: population-batched GEMM schedule (default); 0: one member at a time. */
void egg_set_batched(egg_model *m, int32_t batched);

/* Noise-free forward over tokens[0..n-1] with state (layers*hidden, in/out).
 * Predicts tokens[1..n-1]: loss_q16 receives the sum of the Q16 bits of those
 * n-1 predictions; logits (may be NULL) receives (n-1)*256 int8 logits. */
int egg_forward(egg_model *m, const uint8_t *tokens, int64_t n, int8_t *state, int8_t *logits,
                int64_t *loss_q16);

/* One token for sampling: advance state, write 256 logits. */
int egg_next_logits(egg_model *m, uint8_t token, int8_t *state, int8_t *logits);

/* Bits of tokens[1..n-1] in independent chunks of chunk_len predictions, each
 * starting from a zero state; chunks run in parallel. */
int egg_eval(egg_model *m, const uint8_t *tokens, int64_t n, int32_t chunk_len, int64_t *loss_q16);
/* egg_eval, plus per prediction i (scoring tokens[i+1]; each may be NULL): token_loss_q16[i] its
 * Q16 bits and argmax[i] the byte with the largest logit (the lowest such byte on ties); n-1 entries each. */
int egg_eval_detail(egg_model *m, const uint8_t *tokens, int64_t n, int32_t chunk_len, int64_t *loss_q16,
                    int32_t *token_loss_q16, uint8_t *argmax);

/* One EGGROLL step: windows is streams x (seq_len + 1) bytes. Advances the
 * population state and updates the weights. Outputs (each may be NULL):
 * member_loss_q16[population], fitness[population/2], moved (weights changed). */
int egg_train_step(egg_model *m, uint64_t run_seed, int64_t step, const uint8_t *windows,
                   int64_t *member_loss_q16, int8_t *fitness, int64_t *moved);

/* egg_train_step in two halves, for a population split across processes (mlm/egg/distributed.py);
 * evaluating every share of [0, population/2) and then applying the update gives the same bits.
 * Evaluate pairs [p0, p1): advances the state of members 2*p0 .. 2*p1-1 only and writes their
 * losses to member_loss_q16[0 .. 2*(p1-p0)). */
int egg_evaluate_pairs(egg_model *m, uint64_t run_seed, int64_t step, const uint8_t *windows, int64_t p0,
                       int64_t p1, int64_t *member_loss_q16);
/* Apply the update of step `step` from every member's loss (member_loss_q16[population]): the fitness,
 * which ranks each pair against all pairs, and the vote with the voters' noise regenerated from the seed.
 * Outputs (each may be NULL): fitness[population/2], moved. */
int egg_apply_update(egg_model *m, uint64_t run_seed, int64_t step, const uint8_t *windows,
                     const int64_t *member_loss_q16, int8_t *fitness, int64_t *moved);

/* The update in slices, for processes that each update a share of the weights (mlm/egg/distributed.py).
 * It is a list of tasks (row blocks of every tensor, in weight order): egg_update_tasks of them, and
 * tasks [t0, t1) update the contiguous weights [*first, *end) (egg_update_task_weights). Applying every
 * task range of a partition of [0, egg_update_tasks) gives egg_apply_update's bits. */
int64_t egg_update_tasks(const egg_model *m);
int egg_update_task_weights(const egg_model *m, int64_t t0, int64_t t1, int64_t *first, int64_t *end);
/* egg_apply_update for tasks [t0, t1) only: weights [first, end) and their vote memory change, nothing
 * else; the noise is regenerated for those tasks alone. Outputs (each may be NULL): moves, each weight's
 * change packed in two bits ((end - first + 3) / 4 bytes: weight first + i in bits 2 * (i % 4) of byte
 * i / 4, code 0 = stayed, 1 = +1, 3 = -1); fitness[population/2]; moved (weights changed in the range). */
int egg_apply_update_tasks(egg_model *m, uint64_t run_seed, int64_t step, const uint8_t *windows,
                           const int64_t *member_loss_q16, int64_t t0, int64_t t1, uint8_t *moves, int8_t *fitness,
                           int64_t *moved);
/* Apply moves packed as egg_apply_update_tasks writes them to weights [first, first + count): another
 * process's slice. moved (may be NULL) receives how many weights they change. */
int egg_apply_moves(egg_model *m, int64_t first, int64_t count, const uint8_t *moves, int64_t *moved);

/* Build and machine facts. */
const char *egg_kernel_name(void);         /* kernel in use */
const char *egg_available_kernels(void);   /* comma-separated */
int egg_force_kernel(const char *name);    /* also read from MLM_KERNEL at load */
const char *egg_parallel_backend(void);    /* "openmp", "gcd" or "serial" */
int32_t egg_max_threads(void);

/* Build facts */
const char *egg_compiler(void);   /* compiler and version that built the core */
int32_t egg_neon_dotprod(void);   /* 1 when the neon kernel multiplies with sdot on this CPU */

/* Benchmarking */
/* int8 multiply-accumulates per second of a register-resident microkernel of the
 * active kernel's instructions (see csrc/bench.c), on `threads` threads at once
 * for about `seconds`; negative on failure. */
double egg_peak_macs_per_second(int32_t threads, double seconds);
/* The active GEMM kernel alone on the shapes of m's training step (its population
 * block against every weight matrix, with m's weights), on m's threads. */
double egg_gemm_macs_per_second(egg_model *m, double seconds);
/* Wall-clock seconds of the phases of the last egg_train_step on the calling thread:
 * noise generation, the population's forward pass, fitness and update (after egg_evaluate_pairs:
 * its noise and forward; after egg_apply_update: all of it, noise regeneration included, as update). */
typedef struct egg_step_seconds {
    double noise, forward, update;
} egg_step_seconds;
egg_step_seconds egg_last_step_seconds(void);

#endif
