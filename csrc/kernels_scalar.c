/* Portable kernels: the reference every SIMD kernel must equal bit for bit.
 *
 * The elementwise loops take restrict pointers and local sizes: int8 stores may alias anything,
 * so through struct fields the compiler would reload every pointer each iteration and vectorise
 * nothing. They use int32 arithmetic, which vectorises on every target. */
#include <string.h>

#include "egg_internal.h"
#include "rng.h"

static int32_t dot_scalar(const int8_t *a, const int8_t *b, int32_t n) {
    int32_t sum = 0;
    for (int32_t i = 0; i < n; i++) sum += a[i] * b[i];
    return sum;
}

static void gemm_scalar(int32_t rows_x, int32_t rows_w, int32_t k, const int8_t *x, int64_t ldx, const int8_t *w,
                        int64_t ldw, int32_t *y, int64_t ldy) {
    for (int32_t i = 0; i < rows_x; i++)
        for (int32_t j = 0; j < rows_w; j++) y[i * ldy + j] = dot_scalar(x + i * ldx, w + j * ldw, k);
}

static inline int8_t sat8(int32_t v) { return (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v); }

void egg_layer_norm_row(const int8_t *restrict x, const int8_t *restrict w, int32_t n, int8_t *restrict out) {
    int32_t sum = 0; /* <= 127 * 4096 */
    for (int32_t i = 0; i < n; i++) sum += x[i] < 0 ? -x[i] : x[i];
    const int32_t avg = sum / n < 1 ? 1 : sum / n;
    const int32_t inv = (1 << EGG_LN_RECIP_BITS) / avg;
    if (avg >= EGG_LN_INT32_MIN_AVG) {
        for (int32_t i = 0; i < n; i++) out[i] = sat8((x[i] * w[i] * inv) >> EGG_LN_OUT_SHIFT);
        return;
    }
    for (int32_t i = 0; i < n; i++) {
        const int64_t v = ((int64_t)x[i] * w[i] * inv) >> EGG_LN_OUT_SHIFT;
        out[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
}

int32_t egg_ln_inverse[129];

__attribute__((constructor)) static void fill_ln_inverse(void) {
    for (int32_t avg = 1; avg <= 128; avg++) egg_ln_inverse[avg] = (1 << EGG_LN_RECIP_BITS) / avg;
}

static void layer_norm_scalar(int32_t members, int32_t h, const int8_t *x, const int8_t *w, int64_t w_stride,
                              int8_t *out) {
    for (int32_t i = 0; i < members; i++)
        egg_layer_norm_row(x + (int64_t)i * h, w + i * w_stride, h, out + (int64_t)i * h);
}

/* row[r] +/-= (xb * a[r]) >> shift: the rank-1 term of one member. */
static void add_rank1(int32_t *restrict row, const int8_t *restrict a, int32_t rows, int32_t xb, int32_t shift,
                      int8_t sign) {
    if (sign > 0)
        for (int32_t r = 0; r < rows; r++) row[r] += (xb * a[r]) >> shift;
    else
        for (int32_t r = 0; r < rows; r++) row[r] -= (xb * a[r]) >> shift;
}

static void rank1_scalar(int32_t members, int32_t rows, int32_t cols, const int8_t *x, const int8_t *const *noise,
                         int64_t noise_off, const int8_t *signs, int32_t shift, int32_t *acc) {
    for (int32_t i = 0; i < members; i++) {
        if (!signs[i]) continue;
        const int8_t *a = noise[i] + noise_off;
        const int32_t xb = dot_scalar(x + (int64_t)i * cols, a + rows, cols);
        add_rank1(acc + (int64_t)i * rows, a, rows, xb, shift, signs[i]);
    }
}

static void gru_combine_row(const int32_t *restrict ax, const int32_t *restrict ah, const int8_t *restrict bias,
                            int32_t h, int32_t sh, int8_t *restrict out) {
    for (int32_t c = 0; c < h; c++) out[c] = sat8((ax[c] >> sh) + (ah[c] >> sh) + bias[c]);
}

static void gru_combine_scalar(int32_t members, int32_t h, const int32_t *ax, const int32_t *ah, const int8_t *bias,
                               int64_t bias_stride, int32_t sh, int8_t *out) {
    for (int32_t i = 0; i < members; i++) {
        const int64_t j = (int64_t)i * h;
        gru_combine_row(ax + j, ah + j, bias + i * bias_stride, h, sh, out + j);
    }
}

static void gru_update_scalar(const int8_t *restrict gate, const int8_t *restrict cand, int64_t n,
                              int8_t *restrict hidden, int8_t *restrict resid) {
    for (int64_t j = 0; j < n; j++) {
        const int32_t hv = hidden[j];
        const int32_t next = hv + (((gate[j] + 128) * (cand[j] - hv)) >> 8);
        hidden[j] = (int8_t)next;
        resid[j] = sat8(resid[j] + next);
    }
}

static void shift_sat_scalar(const int32_t *restrict acc, int64_t n, int32_t sh, int8_t *restrict out) {
    for (int64_t j = 0; j < n; j++) out[j] = sat8(acc[j] >> sh);
}

/* max(sat8(acc >> sh), 0), as one clamp to [0, 127]. */
static void relu_shift_scalar(const int32_t *restrict acc, int64_t n, int32_t sh, int8_t *restrict out) {
    for (int64_t j = 0; j < n; j++) {
        const int32_t v = acc[j] >> sh;
        out[j] = (int8_t)(v < 0 ? 0 : v > 127 ? 127 : v);
    }
}

static void residual_add_scalar(const int32_t *restrict acc, int64_t n, int32_t sh, int8_t *restrict resid) {
    for (int64_t j = 0; j < n; j++) resid[j] = sat8(resid[j] + sat8(acc[j] >> sh));
}

static void perturbed_row_scalar(const int8_t *restrict w, const int8_t *restrict b, int32_t scale, int32_t n,
                                 int32_t shift, int32_t sign, int8_t *restrict out) {
    for (int32_t c = 0; c < n; c++) out[c] = sat8(w[c] + sign * ((scale * b[c]) >> shift));
}

/* 2^(v/16) in Q16 for v = logit + 128 in [0, 256): one load per logit instead of a table lookup,
 * a mask and a variable shift. */
static uint64_t exp2_q16[EGG_VOCAB];

__attribute__((constructor)) static void fill_exp2(void) {
    static const uint32_t frac[16] = {EGG_EXP2_FRAC};
    for (int v = 0; v < EGG_VOCAB; v++) exp2_q16[v] = (uint64_t)frac[v % 16] << (v / 16);
}

static void token_losses_scalar(int32_t members, const int8_t *logits, const uint8_t *targets, int64_t *loss) {
    for (int32_t i = 0; i < members; i++) {
        const int8_t *l = logits + (int64_t)i * EGG_VOCAB;
        uint64_t total = 0;
        for (int v = 0; v < EGG_VOCAB; v++) total += exp2_q16[l[v] + 128];
        loss[i] = egg_token_loss_q16(total, l[targets[i]]);
    }
}

const egg_elementwise egg_elementwise_scalar = {.layer_norm = layer_norm_scalar,
                                                .rank1 = rank1_scalar,
                                                .gru_combine = gru_combine_scalar,
                                                .gru_update = gru_update_scalar,
                                                .shift_sat = shift_sat_scalar,
                                                .relu_shift = relu_shift_scalar,
                                                .residual_add = residual_add_scalar,
                                                .perturbed_row = perturbed_row_scalar,
                                                .token_losses = token_losses_scalar};

/* The peak microkernel (egg_kernels.peak, timed by bench.c): the scalar kernel's own dot product,
 * 64 times per iteration over two L1-resident 256-byte vectors. The compiler decides its
 * instructions, so there is no hand-written twin. */
static int64_t peak_scalar(int64_t iterations, int32_t *sink) {
    int8_t a[256], b[256];
    for (int i = 0; i < 256; i++) a[i] = (int8_t)(i % 255 - 127), b[i] = (int8_t)(127 - i % 200);
    /* Called through a pointer, as the core calls the table's dot, and not inlined here. */
    egg_dot_fn dot = dot_scalar;
    __asm__("" : "+r"(dot));
    int32_t sum = 0;
    for (int64_t i = 0; i < iterations; i++)
        for (int j = 0; j < 64; j++) {
            a[j] = (int8_t)(sum & 63); /* a changes, so no call can be merged or hoisted */
            sum += dot(a, b, 256);
        }
    *sink = sum;
    return iterations * 64 * 256;
}

/* ---- the update's transposes (egg_voter_rows_fn): 8 voters x 8 values at a time in 64-bit words */

/* Swap the m-masked bytes of y with the others of x, `shift` bits apart: one round of transpose8x8. */
#define SWAP_BLOCKS(x, y, m, shift)                                                                       \
    do {                                                                                                  \
        const uint64_t x_ = (x), y_ = (y);                                                                \
        (x) = (x_ & (m)) | ((y_ & (m)) << (shift));                                                       \
        (y) = ((x_ >> (shift)) & (m)) | (y_ & ~(m));                                                      \
    } while (0)

/* Transpose an 8 x 8 block of bytes held as 8 words (byte j of a[r], in memory order, little-endian):
 * afterwards byte r of a[j] is what byte j of a[r] was. Three rounds swap 1-, 2- and 4-byte blocks. */
static inline void transpose8x8(uint64_t a[8]) {
    const uint64_t m1 = 0x00FF00FF00FF00FFULL, m2 = 0x0000FFFF0000FFFFULL, m4 = 0x00000000FFFFFFFFULL;
    SWAP_BLOCKS(a[0], a[1], m1, 8);
    SWAP_BLOCKS(a[2], a[3], m1, 8);
    SWAP_BLOCKS(a[4], a[5], m1, 8);
    SWAP_BLOCKS(a[6], a[7], m1, 8);
    SWAP_BLOCKS(a[0], a[2], m2, 16);
    SWAP_BLOCKS(a[1], a[3], m2, 16);
    SWAP_BLOCKS(a[4], a[6], m2, 16);
    SWAP_BLOCKS(a[5], a[7], m2, 16);
    SWAP_BLOCKS(a[0], a[4], m4, 32);
    SWAP_BLOCKS(a[1], a[5], m4, 32);
    SWAP_BLOCKS(a[2], a[6], m4, 32);
    SWAP_BLOCKS(a[3], a[7], m4, 32);
}

/* Each byte of x times f, as int8: the products fit int8, so each is the low byte of the product of the
 * unsigned forms, which 16-bit lanes hold without reaching the next lane (255 * 255 < 2^16). */
static inline uint64_t scale_bytes(uint64_t x, uint8_t f) {
    const uint64_t even = 0x00FF00FF00FF00FFULL;
    return (((x & even) * f) & even) | (((((x >> 8) & even) * f) & even) << 8);
}

/* `signed_` and `masked` are constants where this is called, so each use compiles to its own loop. */
static inline void voter_rows(const int8_t *const *v, const int8_t *f, const uint8_t *const *present, int32_t n,
                              int64_t ld, int signed_, int masked, int8_t *out) {
    int32_t i = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (; i + 8 <= n; i += 8) {
        uint64_t a[8];
        for (int k = 0; k < 8; k++) {
            memcpy(&a[k], v[k] + i, 8);
            if (signed_) a[k] = scale_bytes(a[k], (uint8_t)f[k]);
            if (masked) {
                uint64_t bytes; /* 0 or 1 each: times 0xFF, a byte mask */
                memcpy(&bytes, present[k] + i, 8);
                a[k] &= bytes * 0xFF;
            }
        }
        transpose8x8(a);
        for (int ii = 0; ii < 8; ii++) memcpy(out + (i + ii) * ld, &a[ii], 8);
    }
#endif
    for (; i < n; i++)
        for (int k = 0; k < 8; k++) {
            const int8_t x = signed_ ? (int8_t)(f[k] * v[k][i]) : v[k][i];
            out[i * ld + k] = masked && !present[k][i] ? 0 : x;
        }
}

void egg_voter_rows_scalar(const int8_t *const *v, const int8_t *f, const uint8_t *const *present, int32_t n,
                           int64_t ld, int8_t *out) {
    _Static_assert(EGG_VOTER_BLOCK == 8, "an 8 x 8 byte transpose");
    if (present) voter_rows(v, f, present, n, ld, f != NULL, 1, out);
    else if (f) voter_rows(v, f, present, n, ld, 1, 0, out);
    else voter_rows(v, f, present, n, ld, 0, 0, out);
}

const egg_kernels egg_kernels_scalar = {.name = "scalar",
                                        .gemm = gemm_scalar,
                                        .dot = dot_scalar,
                                        .forward_block = egg_forward_block_baseline,
                                        .elementwise = &egg_elementwise_scalar,
                                        .peak = peak_scalar,
                                        .stream_words = egg_stream_words,
                                        .voter_rows = egg_voter_rows_scalar};
