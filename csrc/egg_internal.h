/* Shared internals of the C core: not part of the cffi surface. */
#ifndef EGG_INTERNAL_H
#define EGG_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "egg.h"

#define EGG_VOCAB 256
#define EGG_GOLDEN 0x9E3779B97F4A7C15ULL
#define EGG_ALPHA_STREAM 0xFFFFFFFFULL
#define EGG_INIT_STREAM 0xFFFFFFFEULL
#define EGG_LOSS_FRAC_BITS 16
#define EGG_MAX_Z_Q8 4096 /* the largest vote threshold, 16 spreads: keeps vote_threshold() in 64 bits */
/* With vote memory the threshold is compared with the memory, never squared: 127 spreads, so the
 * memory, clamped to +/- z, still fits int16. */
#define EGG_MEMORY_MAX_Z_Q8 32512

enum egg_kind { EGG_EMBEDDING, EGG_MATRIX, EGG_NORM, EGG_BIAS };

typedef struct egg_tensor {
    char name[48];
    int32_t rows, cols;
    int64_t offset;      /* into the weight buffer */
    int64_t noise_off;   /* into one pair's noise buffer: A (rows) then B (cols) */
    int64_t vec_off;     /* vectors only: into one member's perturbed-vector buffer */
    enum egg_kind kind;
} egg_tensor;

/* Indices of one layer's tensors in the table. */
typedef struct egg_layer_ids {
    int norm1, w_gate, u_gate, w_cand, u_cand, b_gate, b_cand, norm2, up, down;
} egg_layer_ids;

struct egg_model {
    egg_config cfg;
    int32_t n_tensors;
    egg_tensor *tensors;
    egg_layer_ids *layer;
    int embedding, norm_final, head;
    int64_t n_weights, n_state;
    int64_t noise_len;   /* sum of rows + cols over tensors: one pair's noise */
    int64_t vec_len;     /* sum of vector sizes: one member's perturbed vectors */
    int8_t *weights;
    int8_t *state;
    int16_t *vote_memory; /* one per weight when cfg.vote_memory, else NULL */
    int32_t threads;
    int32_t batched;
};

/* ---- hashing and noise (es.c) */
static inline uint64_t egg_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
uint64_t egg_step_seed(uint64_t run_seed, int64_t step);
uint64_t egg_stream_key(uint64_t seed, int32_t tensor, uint64_t stream);
void egg_stream_bytes(uint64_t key, int64_t count, uint8_t *out);
void egg_noise_values(uint64_t key, int64_t count, int32_t noise_bits, int8_t *out);

/* ---- forward (forward.c) */
/* What a block of members needs: each member's tokens, state, and noise. */
typedef struct egg_block {
    int32_t members;
    int32_t steps;                 /* tokens consumed per member */
    const uint8_t *const *tokens;  /* per member: steps (+1 when losses) bytes */
    int8_t *const *states;         /* per member: layers * hidden */
    const int8_t *const *noise;    /* per member: its pair's noise, or NULL */
    const int8_t *signs;           /* per member: +1, -1 or 0 */
    int64_t *losses;               /* per member Q16 loss sum, or NULL (no targets) */
    int8_t *logits;                /* members * steps * 256, or NULL */
    int32_t *token_losses;         /* members * steps Q16 losses of each prediction, or NULL */
    uint8_t *argmax;               /* members * steps likeliest bytes (lowest on ties), or NULL */
} egg_block;

int egg_forward_block(const egg_model *m, const egg_block *b);
/* The same block forward compiled twice (forward.c): for the baseline instruction set, and with
 * EGG_WIDE_TARGET, for the SIMD kernel tables. Integer code either way, so the same bits. */
typedef int (*egg_forward_block_fn)(const egg_model *m, const egg_block *b);
int egg_forward_block_baseline(const egg_model *m, const egg_block *b);
int egg_forward_block_wide(const egg_model *m, const egg_block *b);
int32_t egg_matmul_shift(const egg_model *m, int32_t cols);
/* Members (or chunks) per parallel task: 1 in the member-at-a-time schedule. */
int64_t egg_block_size(const egg_model *m, int64_t items);

/* ---- loss (forward.c) */
int32_t egg_log2_q16(uint64_t s);

/* ---- kernels (kernels.c + one file per instruction set) */
/* Y[i*ldy + j] = sum_k X[i*ldx + k] * W[j*ldw + k], int8 inputs never -128. */
typedef void (*egg_gemm_fn)(int32_t rows_x, int32_t rows_w, int32_t k, const int8_t *x, int64_t ldx,
                            const int8_t *w, int64_t ldw, int32_t *y, int64_t ldy);
typedef int32_t (*egg_dot_fn)(const int8_t *a, const int8_t *b, int32_t n);
typedef struct egg_kernels {
    const char *name;
    egg_gemm_fn gemm;
    egg_dot_fn dot;
    egg_forward_block_fn forward_block; /* the elementwise code around the GEMMs, for this instruction set */
} egg_kernels;

/* What "wide" means for the elementwise code: AVX2 on x86-64, where the baseline is SSE2 (the
 * x86 kernel tables are chosen only on CPUs with AVX2); the baseline elsewhere (NEON is part of
 * arm64's). flatten inlines the helpers, so all of the block forward gets the target. */
#if defined(__x86_64__) || defined(_M_X64)
#define EGG_WIDE_TARGET __attribute__((target("avx2"), flatten))
#else
#define EGG_WIDE_TARGET __attribute__((flatten))
#endif

extern const egg_kernels egg_kernels_scalar;
const egg_kernels *egg_active_kernels(void);

/* ---- parallel loop (parallel_*.c) */
typedef void (*egg_task_fn)(void *ctx, int64_t index);
/* Run fn(ctx, i) for i in [0, n) on up to `threads` threads; tasks write disjoint outputs. */
void egg_parallel_for(int64_t n, int32_t threads, egg_task_fn fn, void *ctx);
const char *egg_parallel_name(void);
int32_t egg_parallel_max_threads(void);

/* ---- errors (model.c) */
#define EGG_ERROR_LEN 256
/* egg_set_error writes the calling thread's message: the one egg_last_error() returns there. */
void egg_set_error(const char *fmt, ...);
/* A parallel task may run on another thread than its caller, so a failing task hands its thread's
 * message to the job (the first failure's message is kept) and the caller raises it on its own
 * thread when the loop is over: -1 with the message set, or 0 when no task failed. */
typedef struct egg_task_error {
    atomic_int failed;
    char message[EGG_ERROR_LEN];
} egg_task_error;
void egg_task_failed(egg_task_error *e);
int egg_task_error_raise(egg_task_error *e);

#endif
