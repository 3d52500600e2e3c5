/* Shared internals of the C core: not part of the cffi surface. */
#ifndef EGG_INTERNAL_H
#define EGG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "egg.h"


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
    int32_t *weight_average; /* one per weight when cfg.weight_average, else NULL (average.c) */
    int32_t threads;
    int32_t batched;
};

/* floor(n / d) for 0 <= n < 2^50 and 1 <= d < 2^50, given reciprocal = 1.0 / d (rounded to nearest): a
 * multiply and a correction instead of a 64-bit integer divide (tens of cycles on x86). Exact:
 * with x = n / d and u = 2^-53, reciprocal = (1 + e1) / d and the product rounds to x (1 + e1)(1 + e2),
 * |e1|, |e2| <= u, so it is within x * 2.000001 u < 2^50 * 2^-51.99 < 0.26 of x, and its truncation
 * (it is >= 0) is floor(x) - 1, floor(x) or floor(x) + 1. The remainder n - q * d (|q * d| <= n + d < 2^51:
 * no overflow) is then in [d, 2d), [0, d) or [-d, 0) respectively, and one step corrects q. */
static inline int64_t egg_floor_div(int64_t n, int64_t d, double reciprocal) {
    const int64_t q = (int64_t)((double)n * reciprocal);
    const int64_t r = n - q * d;
    return q + (r >= d) - (r < 0);
}

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
/* 2^(k/16) in Q16 for k = 0..15, rounded: the fractional part of the exp2 table of the loss
 * (reference.py EXP2_FRAC_Q16). 2^(v/16) for v = logit + 128 is EGG_EXP2_FRAC[v % 16] << (v / 16). */
#define EGG_EXP2_FRAC                                                                                       \
    65536, 68438, 71468, 74632, 77936, 81386, 84990, 88752, 92682, 96785, 101070, 105545, 110218, 115098, \
        120194, 125515
/* Q16 bits of predicting `target` from 256 logits (base-2 log-probabilities in 1/16 units), given
 * total = the sum of 2^((logit + 128) / 16) in Q16 over the logits. */
static inline int64_t egg_token_loss_q16(uint64_t total, int8_t target_logit) {
    return (int64_t)egg_log2_q16(total) - (16 << EGG_LOSS_FRAC_BITS) - ((int64_t)(target_logit + 128) << 12);
}

/* ---- kernels (kernels.c + one file per instruction set) */
/* Y[i*ldy + j] = sum_k X[i*ldx + k] * W[j*ldw + k], int8 inputs never -128. */
typedef void (*egg_gemm_fn)(int32_t rows_x, int32_t rows_w, int32_t k, const int8_t *x, int64_t ldx,
                            const int8_t *w, int64_t ldw, int32_t *y, int64_t ldy);
typedef int32_t (*egg_dot_fn)(const int8_t *a, const int8_t *b, int32_t n);

/* The elementwise work of the block forward (forward.c), over every member of a block at once.
 * kernels_scalar.c holds the reference of each; every instruction set's version gives the same
 * bits. sat8(v) is v clamped to [-127, 127]; ">>" is an arithmetic shift. Sizes: h and rows are
 * whatever the model has (multiples of 16 in practice, any value allowed); n any count. */
typedef struct egg_elementwise {
    /* The L1 norm: out[i*h + c] = sat8(x * w * (2^20 / max(1, sum|x| / h)) >> 19) for member i's
     * x = x + i*h and w = w + i*w_stride (layer_norm() in reference.py). */
    void (*layer_norm)(int32_t members, int32_t h, const int8_t *x, const int8_t *w, int64_t w_stride, int8_t *out);
    /* acc[i*rows + r] += s_i * ((x_i·B_i) * A_i[r] >> shift) for each member i with s_i = signs[i] != 0,
     * where A_i = noise[i] + noise_off (rows values) and B_i = A_i + rows (cols values), x_i = x + i*cols;
     * noise values are small enough (|A|, |B| <= 15) that every product fits int32. */
    void (*rank1)(int32_t members, int32_t rows, int32_t cols, const int8_t *x, const int8_t *const *noise,
                  int64_t noise_off, const int8_t *signs, int32_t shift, int32_t *acc);
    /* out[i*h + c] = sat8((ax >> sh) + (ah >> sh) + bias[i*bias_stride + c]), index i*h + c for ax, ah. */
    void (*gru_combine)(int32_t members, int32_t h, const int32_t *ax, const int32_t *ah, const int8_t *bias,
                        int64_t bias_stride, int32_t sh, int8_t *out);
    /* next = hidden + ((gate + 128) * (cand - hidden) >> 8); hidden = next; resid = sat8(resid + next). */
    void (*gru_update)(const int8_t *gate, const int8_t *cand, int64_t n, int8_t *hidden, int8_t *resid);
    /* out = sat8(acc >> sh) */
    void (*shift_sat)(const int32_t *acc, int64_t n, int32_t sh, int8_t *out);
    /* out = acc >> sh clamped to [0, 127] */
    void (*relu_shift)(const int32_t *acc, int64_t n, int32_t sh, int8_t *out);
    /* resid = sat8(resid + sat8(acc >> sh)) */
    void (*residual_add)(const int32_t *acc, int64_t n, int32_t sh, int8_t *resid);
    /* out[c] = sat8(w[c] + sign * ((scale * b[c]) >> shift)) for c < n, sign +1 or -1, |scale| <= 127:
     * a perturbed row of the embedding or a perturbed vector. */
    void (*perturbed_row)(const int8_t *w, const int8_t *b, int32_t scale, int32_t n, int32_t shift, int32_t sign,
                          int8_t *out);
    /* loss[i] = egg_token_loss_q16 of member i's 256 logits (logits + i*256) and byte targets[i]. */
    void (*token_losses)(int32_t members, const int8_t *logits, const uint8_t *targets, int64_t *loss);
} egg_elementwise;

/* The kernel's peak microkernel, which bench.c times for the machine's int8 peak: `iterations`
 * rounds of independent chains of the kernel's own multiply-accumulate instructions on
 * register-resident operands (no memory traffic); returns the MACs done. The sum of the
 * accumulators goes to *sink so that none of the work is dead code. */
typedef int64_t (*egg_peak_fn)(int64_t iterations, int32_t *sink);

/* Stream words [w0, w1) of `key` as bytes, 8 a word, little-endian, into out; with masks != 0 (2^noise_bits - 1
 * in every byte) their noise values instead (rng.h). egg_stream_words (rng.c) is the reference. */
typedef void (*egg_stream_words_fn)(uint64_t key, int64_t w0, int64_t w1, uint64_t masks, uint8_t *out);

/* The update's vote GEMM (es.c) wants its voters' noise voter-minor: out[i * ld + k] = f[k] * v[k][i] for the
 * EGG_VOTER_BLOCK voters k and i < n, or 0 where present != NULL and present[k][i] == 0 (a voter whose window
 * lacks an embedding row's byte); f NULL: every f[k] is 1. Every f[k] * v[k][i] fits int8
 * (EGG_MAX_FITNESS_NOISE). egg_voter_rows_scalar (kernels_scalar.c) is the reference. */
#define EGG_VOTER_BLOCK 8
typedef void (*egg_voter_rows_fn)(const int8_t *const *v, const int8_t *f, const uint8_t *const *present, int32_t n,
                                  int64_t ld, int8_t *out);
void egg_voter_rows_scalar(const int8_t *const *v, const int8_t *f, const uint8_t *const *present, int32_t n,
                           int64_t ld, int8_t *out);

typedef struct egg_kernels {
    const char *name;
    egg_gemm_fn gemm;
    egg_dot_fn dot;
    egg_forward_block_fn forward_block; /* the rest of the block forward, compiled for this instruction set */
    const egg_elementwise *elementwise;
    egg_peak_fn peak;
    egg_stream_words_fn stream_words; /* the noise and random bytes of every step */
    egg_voter_rows_fn voter_rows;      /* the update's transposes */
} egg_kernels;

/* The reference elementwise kernels (kernels_scalar.c), and their L1 norm of one member, which the
 * SIMD versions also use where the mean |x| is below 8 and the product needs 64 bits. */
extern const egg_elementwise egg_elementwise_scalar;
void egg_layer_norm_row(const int8_t *x, const int8_t *w, int32_t n, int8_t *out);
#define EGG_LN_RECIP_BITS 20
#define EGG_LN_OUT_SHIFT 19
/* A mean |x| of at least 8 keeps inv <= 2^17, so |x·w·inv| <= 127·127·2^17 < 2^31: the product fits
 * int32; smaller means need 64 bits. */
#define EGG_LN_INT32_MIN_AVG 8
/* 2^20 / avg for every mean |x| an int8 vector can have (avg 1..128), filled when the library loads:
 * the SIMD norms look it up instead of dividing once per member. */
extern int32_t egg_ln_inverse[129];
/* sum / n for 0 <= sum < 2^20 and 1 <= n <= 4096 without a divide: multiply by the reciprocal
 * egg_reciprocal(n) = ceil(2^40 / n), whose error n·r - 2^40 < n keeps the quotient exact there. */
static inline uint64_t egg_reciprocal(int32_t n) { return ((1ULL << 40) + (uint64_t)n - 1) / (uint64_t)n; }
static inline int32_t egg_divide(int32_t sum, uint64_t reciprocal) {
    return (int32_t)(((uint64_t)sum * reciprocal) >> 40);
}

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

#endif
