/* Model lifetime, tensor layout, initialisation and the flat buffers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "egg_internal.h"
#include "error.h"
#include "rng.h"

#define INIT_RANGE_MATRIX 22
#define INIT_RANGE_EMBEDDING 48
#define INIT_RANGE_HEAD 4 /* near-uniform initial logits: about 8 bits per byte */
#define NORM_WEIGHT_INIT 16

static int check_config(const egg_config *c) {
    if (c->hidden < EGG_HIDDEN_MULTIPLE || c->hidden % EGG_HIDDEN_MULTIPLE || c->hidden > EGG_MAX_HIDDEN) {
        egg_set_error("hidden must be a multiple of %d between %d and %d (got %d)", EGG_HIDDEN_MULTIPLE,
                      EGG_HIDDEN_MULTIPLE, EGG_MAX_HIDDEN, c->hidden);
        return -1;
    }
    if (c->layers < 1 || c->layers > EGG_MAX_LAYERS || c->mlp_ratio < 1 || c->mlp_ratio > EGG_MAX_MLP_RATIO) {
        egg_set_error("layers must be in [1, %d] and mlp_ratio in [1, %d]", EGG_MAX_LAYERS, EGG_MAX_MLP_RATIO);
        return -1;
    }
    if (c->seq_len < 1 || c->population < 2 || c->population % 2 || c->population > EGG_MAX_POPULATION) {
        egg_set_error("seq_len must be >= 1 and population even in [2, %d]", EGG_MAX_POPULATION);
        return -1;
    }
    if (c->streams < 1 || c->streams > c->population / 2) {
        egg_set_error("streams must be in [1, population/2]");
        return -1;
    }
    /* fitness_levels is compared by division: the product with the noise range overflows int32 for
     * large values, and a wrapped product must not pass. */
    if (c->noise_bits < 1 || c->noise_bits > EGG_MAX_NOISE_BITS || c->noise_shift < 0 || c->noise_shift > EGG_MAX_SHIFT ||
        c->threshold_z_q8 < 0 || c->threshold_z_q8 > EGG_MAX_Z_Q8 || c->alpha_decay_steps < 0 || c->z_growth_steps < 0 ||
        c->shift_base < 0 || c->shift_base > EGG_MAX_SHIFT || c->fitness_levels < 1 ||
        c->fitness_levels > EGG_MAX_FITNESS_NOISE / ((1 << c->noise_bits) - 1) || (c->sparse_embedding_votes & ~1) ||
        (c->vote_memory & ~1)) {
        egg_set_error("algorithm settings out of range");
        return -1;
    }
    if (c->max_z_q8 < c->threshold_z_q8 || c->max_z_q8 > (c->vote_memory ? EGG_MEMORY_MAX_Z_Q8 : EGG_MAX_Z_Q8) ||
        c->cooldown_start < 0 || c->cooldown_end < 0 || (c->cooldown_end && c->cooldown_start >= c->cooldown_end) ||
        (!c->cooldown_end && c->cooldown_start)) {
        egg_set_error("threshold schedule out of range");
        return -1;
    }
    if (c->weight_decay_q8 < 0 || c->weight_decay_q8 > EGG_MAX_WEIGHT_DECAY_Q8 || (c->weight_decay_q8 && !c->vote_memory) ||
        c->vector_z_q8 < 1 || c->vector_z_q8 > EGG_MAX_VECTOR_Z_Q8 ||
        c->weight_average < 0 || c->weight_average > EGG_MAX_WEIGHT_AVERAGE) {
        egg_set_error("weight_decay_q8, vector_z_q8 or weight_average out of range");
        return -1;
    }
    return 0;
}

static void add_tensor(egg_model *m, const char *name, int32_t rows, int32_t cols, enum egg_kind kind) {
    egg_tensor *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->rows = rows;
    t->cols = cols;
    t->kind = kind;
    t->offset = m->n_weights;
    t->noise_off = m->noise_len;
    t->vec_off = (kind == EGG_NORM || kind == EGG_BIAS) ? m->vec_len : -1;
    m->n_weights += (int64_t)rows * cols;
    m->noise_len += rows + cols;
    if (t->vec_off >= 0) m->vec_len += cols;
}

/* Same order as tensor_layout() in mlm/egg/reference.py. */
static void build_layout(egg_model *m) {
    const int32_t h = m->cfg.hidden, mh = m->cfg.hidden * m->cfg.mlp_ratio;
    char name[48];
    m->embedding = m->n_tensors;
    add_tensor(m, "embedding", EGG_VOCAB, h, EGG_EMBEDDING);
    for (int l = 0; l < m->cfg.layers; l++) {
        egg_layer_ids *ids = &m->layer[l];
#define ADD(field, suffix, rows, cols, kind)                   \
    ids->field = m->n_tensors;                                 \
    snprintf(name, sizeof name, "layers.%d.%s", l, suffix);    \
    add_tensor(m, name, rows, cols, kind);
        ADD(norm1, "norm1", 1, h, EGG_NORM)
        ADD(w_gate, "gru.w_gate", h, h, EGG_MATRIX)
        ADD(u_gate, "gru.u_gate", h, h, EGG_MATRIX)
        ADD(w_cand, "gru.w_cand", h, h, EGG_MATRIX)
        ADD(u_cand, "gru.u_cand", h, h, EGG_MATRIX)
        ADD(b_gate, "gru.b_gate", 1, h, EGG_BIAS)
        ADD(b_cand, "gru.b_cand", 1, h, EGG_BIAS)
        ADD(norm2, "norm2", 1, h, EGG_NORM)
        ADD(up, "mlp.up", mh, h, EGG_MATRIX)
        ADD(down, "mlp.down", h, mh, EGG_MATRIX)
#undef ADD
    }
    m->norm_final = m->n_tensors;
    add_tensor(m, "norm_final", 1, h, EGG_NORM);
    m->head = m->n_tensors;
    add_tensor(m, "head", EGG_VOCAB, h, EGG_MATRIX);
}

egg_model *egg_create(const egg_config *cfg) {
    if (check_config(cfg)) return NULL;
    egg_model *m = calloc(1, sizeof *m);
    if (!m) goto oom;
    m->cfg = *cfg;
    m->threads = 1;
    m->batched = 1;
    m->tensors = calloc((size_t)cfg->layers * 10 + 3, sizeof *m->tensors);
    m->layer = calloc((size_t)cfg->layers, sizeof *m->layer);
    if (!m->tensors || !m->layer) goto oom;
    build_layout(m);
    m->n_state = (int64_t)cfg->population * cfg->layers * cfg->hidden;
    m->weights = calloc((size_t)m->n_weights, 1);
    m->state = calloc((size_t)m->n_state, 1);
    m->vote_memory = cfg->vote_memory ? calloc((size_t)m->n_weights, sizeof *m->vote_memory) : NULL;
    m->weight_average = cfg->weight_average ? calloc((size_t)m->n_weights, sizeof *m->weight_average) : NULL;
    if (!m->weights || !m->state || (cfg->vote_memory && !m->vote_memory) ||
        (cfg->weight_average && !m->weight_average))
        goto oom;
    return m;
oom:
    egg_free(m);
    egg_set_error("out of memory creating the model");
    return NULL;
}

void egg_free(egg_model *m) {
    if (!m) return;
    free(m->tensors);
    free(m->layer);
    free(m->weights);
    free(m->state);
    free(m->vote_memory);
    free(m->weight_average);
    free(m);
}

int64_t egg_weights_size(const egg_model *m) { return m->n_weights; }
int8_t *egg_weights(egg_model *m) { return m->weights; }
int64_t egg_state_size(const egg_model *m) { return m->n_state; }
int8_t *egg_state(egg_model *m) { return m->state; }
int64_t egg_vote_memory_size(const egg_model *m) { return m->vote_memory ? m->n_weights : 0; }
int16_t *egg_vote_memory(egg_model *m) { return m->vote_memory; }
int64_t egg_weight_average_size(const egg_model *m) { return m->weight_average ? m->n_weights : 0; }
int32_t *egg_weight_average(egg_model *m) { return m->weight_average; }
int32_t egg_num_tensors(const egg_model *m) { return m->n_tensors; }

int egg_tensor_info(const egg_model *m, int32_t index, const char **name, int32_t *rows, int32_t *cols,
                    int64_t *offset) {
    if (index < 0 || index >= m->n_tensors) {
        egg_set_error("tensor index %d out of range", index);
        return -1;
    }
    const egg_tensor *t = &m->tensors[index];
    *name = t->name;
    *rows = t->rows;
    *cols = t->cols;
    *offset = t->offset;
    return 0;
}

void egg_init_weights(egg_model *m, uint64_t seed) {
    for (int32_t i = 0; i < m->n_tensors; i++) {
        const egg_tensor *t = &m->tensors[i];
        const int64_t n = (int64_t)t->rows * t->cols;
        int8_t *w = m->weights + t->offset;
        if (t->kind == EGG_NORM || t->kind == EGG_BIAS) {
            memset(w, t->kind == EGG_NORM ? NORM_WEIGHT_INIT : 0, (size_t)n);
            continue;
        }
        const int r = t->kind == EGG_EMBEDDING ? INIT_RANGE_EMBEDDING
                      : i == m->head          ? INIT_RANGE_HEAD
                                              : INIT_RANGE_MATRIX;
        uint8_t *bytes = (uint8_t *)w;
        egg_stream_bytes(egg_stream_key(seed, i, EGG_INIT_STREAM), n, bytes);
        for (int64_t j = 0; j < n; j++) w[j] = (int8_t)((int)bytes[j] % (2 * r + 1) - r);
    }
    memset(m->state, 0, (size_t)m->n_state);
    if (m->vote_memory) memset(m->vote_memory, 0, sizeof *m->vote_memory * (size_t)m->n_weights);
}

void egg_set_threads(egg_model *m, int32_t threads) { m->threads = threads < 1 ? 1 : threads; }
int32_t egg_threads(const egg_model *m) { return m->threads; }
void egg_set_batched(egg_model *m, int32_t batched) { m->batched = batched != 0; }
const char *egg_parallel_backend(void) { return egg_parallel_name(); }
int32_t egg_max_threads(void) { return egg_parallel_max_threads(); }
