/* The forward pass: a block of members advanced in lockstep, one GEMM per
 * weight matrix and time step, plus each member's rank-1 noise term. A block
 * of one member is the member-at-a-time schedule; results are identical. */
#include <stdlib.h>
#include <string.h>

#include "egg_internal.h"
#include "error.h"

_Static_assert((-3 >> 1) == -2, "the core needs arithmetic right shifts on signed integers");

int32_t egg_matmul_shift(const egg_model *m, int32_t cols) {
    int32_t log2 = 0;
    while ((cols >> (log2 + 1)) > 0) log2++;
    return m->cfg.shift_base + log2 / 2;
}

/* log2(s) in Q16: integer part from the top bit, fraction by squaring a Q30 mantissa. */
int32_t egg_log2_q16(uint64_t s) {
    const int32_t msb = 63 - __builtin_clzll(s); /* s > 0: at least 2^16 per logit */
    uint64_t y = msb >= 30 ? s >> (msb - 30) : s << (30 - msb);
    int32_t result = msb << EGG_LOSS_FRAC_BITS;
    for (int bit = EGG_LOSS_FRAC_BITS - 1; bit >= 0; bit--) {
        y = (y * y) >> 30;
        if (y >= (1ULL << 31)) {
            y >>= 1;
            result |= 1 << bit;
        }
    }
    return result;
}

/* The first byte with the largest logit. */
static uint8_t likeliest_byte(const int8_t *logits) {
    int best = 0;
    for (int i = 1; i < EGG_VOCAB; i++)
        if (logits[i] > logits[best]) best = i;
    return (uint8_t)best;
}

/* Per-block scratch, allocated once per egg_forward_block call. */
typedef struct workspace {
    int8_t *resid, *x, *gate, *up, *logits, *hidden, *vectors;
    int32_t *acc_x, *acc_h;
    uint8_t *targets; /* each member's next byte */
    int64_t *loss;    /* each member's loss on it */
} workspace;

static int workspace_alloc(workspace *w, const egg_model *m, int32_t members) {
    const size_t h = (size_t)m->cfg.hidden, mh = h * (size_t)m->cfg.mlp_ratio, n = (size_t)members;
    const size_t widest = mh > EGG_VOCAB ? mh : EGG_VOCAB;
    w->resid = malloc(n * h);
    w->x = malloc(n * h);
    w->gate = malloc(n * h);
    w->up = malloc(n * mh);
    w->logits = malloc(n * EGG_VOCAB);
    w->hidden = malloc(n * h * (size_t)m->cfg.layers);
    w->vectors = malloc(n * (size_t)m->vec_len);
    w->acc_x = malloc(n * widest * sizeof(int32_t));
    w->acc_h = malloc(n * h * sizeof(int32_t));
    w->targets = malloc(n);
    w->loss = malloc(n * sizeof(int64_t));
    return w->resid && w->x && w->gate && w->up && w->logits && w->hidden && w->vectors && w->acc_x &&
                   w->acc_h && w->targets && w->loss
               ? 0
               : -1;
}

static void workspace_free(workspace *w) {
    free(w->resid);
    free(w->x);
    free(w->gate);
    free(w->up);
    free(w->logits);
    free(w->hidden);
    free(w->vectors);
    free(w->acc_x);
    free(w->acc_h);
    free(w->targets);
    free(w->loss);
}

/* Norm weights and biases with each member's perturbation applied, once per block. */
static void perturb_vectors(const egg_model *m, const egg_block *b, int8_t *vectors) {
    const egg_elementwise *e = egg_active_kernels()->elementwise; /* once, not per member: a call */
    for (int32_t t = 0; t < m->n_tensors; t++) {
        const egg_tensor *ten = &m->tensors[t];
        if (ten->vec_off < 0) continue;
        for (int32_t i = 0; i < b->members; i++) {
            const int8_t *w = m->weights + ten->offset;
            int8_t *out = vectors + (int64_t)i * m->vec_len + ten->vec_off;
            if (!b->signs[i]) {
                memcpy(out, w, (size_t)ten->cols);
                continue;
            }
            const int8_t *a = b->noise[i] + ten->noise_off;
            e->perturbed_row(w, a + ten->rows, a[0], ten->cols, m->cfg.noise_shift, b->signs[i], out);
        }
    }
}

static inline const int8_t *member_vector(const egg_model *m, const workspace *w, int32_t i, int tensor) {
    return w->vectors + (int64_t)i * m->vec_len + m->tensors[tensor].vec_off;
}

/* acc[i, r] = W[r]·x_i + s_i * ((x_i·B_i) * A_i[r] >> noise_shift) for every member i. */
static void linear_acc(const egg_model *m, const egg_block *b, int tensor, const int8_t *x, int32_t *acc) {
    const egg_tensor *t = &m->tensors[tensor];
    const int32_t rows = t->rows, cols = t->cols;
    const egg_kernels *k = egg_active_kernels();
    k->gemm(b->members, rows, cols, x, cols, m->weights + t->offset, cols, acc, rows);
    k->elementwise->rank1(b->members, rows, cols, x, b->noise, t->noise_off, b->signs, m->cfg.noise_shift, acc);
}

static void embed(const egg_model *m, const egg_block *b, int32_t step, int8_t *resid) {
    const egg_tensor *t = &m->tensors[m->embedding];
    const int32_t h = m->cfg.hidden;
    const egg_elementwise *e = egg_active_kernels()->elementwise; /* once, not per member: a call */
    for (int32_t i = 0; i < b->members; i++) {
        const uint8_t tok = b->tokens[i][step];
        const int8_t *row = m->weights + t->offset + (int64_t)tok * h;
        int8_t *out = resid + (int64_t)i * h;
        if (!b->signs[i]) {
            memcpy(out, row, (size_t)h);
            continue;
        }
        const int8_t *a = b->noise[i] + t->noise_off;
        e->perturbed_row(row, a + t->rows, a[tok], h, m->cfg.noise_shift, b->signs[i], out);
    }
}

static void norm_all(const egg_model *m, const workspace *w, int32_t members, int tensor, int8_t *out) {
    egg_active_kernels()->elementwise->layer_norm(members, m->cfg.hidden, w->resid, member_vector(m, w, 0, tensor),
                                                  m->vec_len, out);
}

/* gate or candidate: sat8((W·x >> sh) + (U·h >> sh) + bias) */
static void gru_preactivation(const egg_model *m, const egg_block *b, workspace *w, int w_id, int u_id,
                              int bias_id, const int8_t *hidden, int8_t *out) {
    const int32_t h = m->cfg.hidden, sh = egg_matmul_shift(m, h);
    linear_acc(m, b, w_id, w->x, w->acc_x);
    linear_acc(m, b, u_id, hidden, w->acc_h);
    egg_active_kernels()->elementwise->gru_combine(b->members, h, w->acc_x, w->acc_h, member_vector(m, w, 0, bias_id),
                                                   m->vec_len, sh, out);
}

static void layer_step(const egg_model *m, const egg_block *b, workspace *w, int32_t l) {
    const egg_layer_ids *ids = &m->layer[l];
    const egg_elementwise *e = egg_active_kernels()->elementwise;
    const int32_t h = m->cfg.hidden, mh = h * m->cfg.mlp_ratio, n = b->members;
    int8_t *hidden = w->hidden + (int64_t)l * n * h;

    norm_all(m, w, n, ids->norm1, w->x);
    gru_preactivation(m, b, w, ids->w_gate, ids->u_gate, ids->b_gate, hidden, w->gate);
    int8_t *cand = w->up; /* free until the MLP below */
    gru_preactivation(m, b, w, ids->w_cand, ids->u_cand, ids->b_cand, hidden, cand);
    e->gru_update(w->gate, cand, (int64_t)n * h, hidden, w->resid);

    norm_all(m, w, n, ids->norm2, w->x);
    linear_acc(m, b, ids->up, w->x, w->acc_x);
    const int32_t sh_up = egg_matmul_shift(m, h), sh_down = egg_matmul_shift(m, mh);
    e->relu_shift(w->acc_x, (int64_t)n * mh, sh_up, w->up);
    linear_acc(m, b, ids->down, w->up, w->acc_x);
    e->residual_add(w->acc_x, (int64_t)n * h, sh_down, w->resid);
}

static void head(const egg_model *m, const egg_block *b, workspace *w) {
    const int32_t sh = egg_matmul_shift(m, m->cfg.hidden);
    norm_all(m, w, b->members, m->norm_final, w->x);
    linear_acc(m, b, m->head, w->x, w->acc_x);
    egg_active_kernels()->elementwise->shift_sat(w->acc_x, (int64_t)b->members * EGG_VOCAB, sh, w->logits);
}

static inline int forward_block(const egg_model *m, const egg_block *b) {
    workspace w;
    const int32_t h = m->cfg.hidden, layers = m->cfg.layers, n = b->members;
    if (workspace_alloc(&w, m, n)) {
        workspace_free(&w);
        egg_set_error("out of memory in the forward pass");
        return -1;
    }
    perturb_vectors(m, b, w.vectors);
    /* Hidden state as layers x [members x hidden] so each layer's U·h is one GEMM. */
    for (int32_t i = 0; i < n; i++)
        for (int32_t l = 0; l < layers; l++)
            memcpy(w.hidden + ((int64_t)l * n + i) * h, b->states[i] + (int64_t)l * h, (size_t)h);

    for (int32_t t = 0; t < b->steps; t++) {
        embed(m, b, t, w.resid);
        for (int32_t l = 0; l < layers; l++) layer_step(m, b, &w, l);
        head(m, b, &w);
        if (b->losses || b->token_losses) {
            for (int32_t i = 0; i < n; i++) w.targets[i] = b->tokens[i][t + 1];
            egg_active_kernels()->elementwise->token_losses(n, w.logits, w.targets, w.loss);
        }
        for (int32_t i = 0; i < n; i++) {
            const int8_t *logits = w.logits + (int64_t)i * EGG_VOCAB;
            const int64_t at = (int64_t)i * b->steps + t;
            if (b->losses) b->losses[i] += w.loss[i];
            if (b->token_losses) b->token_losses[at] = (int32_t)w.loss[i];
            if (b->argmax) b->argmax[at] = likeliest_byte(logits);
            if (b->logits) memcpy(b->logits + at * EGG_VOCAB, logits, EGG_VOCAB);
        }
    }

    for (int32_t i = 0; i < n; i++)
        for (int32_t l = 0; l < layers; l++)
            memcpy(b->states[i] + (int64_t)l * h, w.hidden + ((int64_t)l * n + i) * h, (size_t)h);
    workspace_free(&w);
    return 0;
}

__attribute__((flatten)) int egg_forward_block_baseline(const egg_model *m, const egg_block *b) {
    return forward_block(m, b);
}

EGG_WIDE_TARGET int egg_forward_block_wide(const egg_model *m, const egg_block *b) { return forward_block(m, b); }

int egg_forward_block(const egg_model *m, const egg_block *b) { return egg_active_kernels()->forward_block(m, b); }

/* ---- noise-free entry points: one sequence, one sampling step, chunked evaluation */

static const int8_t NO_SIGN = 0;

int egg_forward(egg_model *m, const uint8_t *tokens, int64_t n, int8_t *state, int8_t *logits,
                int64_t *loss_q16) {
    if (n < 1 || n - 1 > INT32_MAX) {
        egg_set_error("egg_forward needs at least one token (got %lld)", (long long)n);
        return -1;
    }
    const int8_t *no_noise = NULL;
    int64_t loss = 0;
    const egg_block b = {.members = 1, .steps = (int32_t)(n - 1), .tokens = &tokens, .states = &state,
                         .noise = &no_noise, .signs = &NO_SIGN, .losses = &loss, .logits = logits};
    const int rc = egg_forward_block(m, &b);
    if (loss_q16) *loss_q16 = loss;
    return rc;
}

int egg_next_logits(egg_model *m, uint8_t token, int8_t *state, int8_t *logits) {
    const uint8_t *tokens = &token;
    const int8_t *no_noise = NULL;
    const egg_block b = {.members = 1, .steps = 1, .tokens = &tokens, .states = &state, .noise = &no_noise,
                         .signs = &NO_SIGN, .logits = logits};
    return egg_forward_block(m, &b);
}

typedef struct eval_job {
    const egg_model *m;
    const uint8_t *tokens;
    int64_t n_chunks, chunk_len, block;
    int64_t *chunk_loss;
    int32_t *token_losses; /* per prediction, or NULL */
    uint8_t *argmax;       /* per prediction, or NULL */
    egg_task_error error;
} eval_job;

/* A task evaluates `block` consecutive full chunks in lockstep from zero states. Chunk c's
 * predictions are predictions [c * chunk_len, (c + 1) * chunk_len), so the block's per-prediction
 * outputs are one contiguous run, member-major as egg_block lays them out. */
static void eval_task(void *ctx, int64_t task) {
    eval_job *job = ctx;
    const egg_model *m = job->m;
    const int64_t first = task * job->block;
    const int32_t count = (int32_t)(first + job->block <= job->n_chunks ? job->block : job->n_chunks - first);
    const int64_t state_len = (int64_t)m->cfg.layers * m->cfg.hidden, offset = first * job->chunk_len;
    const uint8_t **tokens = malloc(sizeof *tokens * (size_t)count);
    int8_t **states = malloc(sizeof *states * (size_t)count);
    int8_t *state_buf = calloc((size_t)(count * state_len), 1);
    const int8_t **noise = calloc((size_t)count, sizeof *noise);
    int8_t *signs = calloc((size_t)count, 1);
    if (!tokens || !states || !state_buf || !noise || !signs) {
        egg_set_error("out of memory in evaluation");
        egg_task_failed(&job->error);
    } else {
        for (int32_t i = 0; i < count; i++) {
            tokens[i] = job->tokens + (first + i) * job->chunk_len;
            states[i] = state_buf + i * state_len;
        }
        const egg_block b = {.members = count,
                             .steps = (int32_t)job->chunk_len,
                             .tokens = tokens,
                             .states = states,
                             .noise = noise,
                             .signs = signs,
                             .losses = job->chunk_loss + first,
                             .token_losses = job->token_losses ? job->token_losses + offset : NULL,
                             .argmax = job->argmax ? job->argmax + offset : NULL};
        if (egg_forward_block(m, &b)) egg_task_failed(&job->error);
    }
    free(tokens);
    free(states);
    free(state_buf);
    free(noise);
    free(signs);
}

int64_t egg_block_size(const egg_model *m, int64_t items) {
    if (!m->batched) return 1;
    const int64_t per_thread = (items + m->threads - 1) / m->threads;
    return per_thread < 1 ? 1 : per_thread > 64 ? 64 : per_thread;
}

/* The last, shorter chunk: one member from a zero state. */
static int eval_tail(egg_model *m, const eval_job *job, int64_t tail) {
    const int64_t offset = job->n_chunks * job->chunk_len;
    const uint8_t *tokens = job->tokens + offset;
    int8_t *state = calloc((size_t)m->cfg.layers * m->cfg.hidden, 1);
    if (!state) {
        egg_set_error("out of memory in evaluation");
        return -1;
    }
    const int8_t *no_noise = NULL;
    const egg_block b = {.members = 1,
                         .steps = (int32_t)tail,
                         .tokens = &tokens,
                         .states = &state,
                         .noise = &no_noise,
                         .signs = &NO_SIGN,
                         .losses = &job->chunk_loss[job->n_chunks],
                         .token_losses = job->token_losses ? job->token_losses + offset : NULL,
                         .argmax = job->argmax ? job->argmax + offset : NULL};
    const int rc = egg_forward_block(m, &b);
    free(state);
    return rc;
}

int egg_eval_detail(egg_model *m, const uint8_t *tokens, int64_t n, int32_t chunk_len, int64_t *loss_q16,
                    int32_t *token_loss_q16, uint8_t *argmax) {
    if (n < 2 || chunk_len < 1) {
        egg_set_error("evaluation needs at least 2 bytes and a positive chunk length");
        return -1;
    }
    const int64_t predictions = n - 1, n_full = predictions / chunk_len, tail = predictions % chunk_len;
    int64_t *chunk_loss = calloc((size_t)(n_full + 1), sizeof *chunk_loss);
    if (!chunk_loss) {
        egg_set_error("out of memory in evaluation");
        return -1;
    }
    eval_job job = {.m = m,
                    .tokens = tokens,
                    .n_chunks = n_full,
                    .chunk_len = chunk_len,
                    .block = egg_block_size(m, n_full),
                    .chunk_loss = chunk_loss,
                    .token_losses = token_loss_q16,
                    .argmax = argmax};
    if (n_full) egg_parallel_for((n_full + job.block - 1) / job.block, m->threads, eval_task, &job);
    int rc = egg_task_error_raise(&job.error);
    if (!rc && tail) rc = eval_tail(m, &job, tail);
    int64_t total = 0;
    for (int64_t c = 0; c <= n_full; c++) total += chunk_loss[c];
    if (loss_q16) *loss_q16 = total;
    free(chunk_loss);
    return rc;
}

int egg_eval(egg_model *m, const uint8_t *tokens, int64_t n, int32_t chunk_len, int64_t *loss_q16) {
    return egg_eval_detail(m, tokens, n, chunk_len, loss_q16, NULL, NULL);
}
