/* Counter-based random numbers: seeds, stream keys, bytes and noise values (rng.h). */
#include "rng.h"

#include "egg_internal.h"

uint64_t egg_step_seed(uint64_t run_seed, int64_t step) {
    return egg_mix64(run_seed + EGG_GOLDEN * (uint64_t)(step + 1));
}

uint64_t egg_stream_key(uint64_t seed, int32_t tensor, uint64_t stream) {
    return egg_mix64(seed ^ egg_mix64(((uint64_t)(tensor + 1) << 32) + stream));
}

/* The noise mask 2^noise_bits - 1 in every byte of a word (egg_noise_word's masks). */
static uint64_t noise_masks(int32_t noise_bits) {
    return (uint64_t)((1 << noise_bits) - 1) * 0x0101010101010101ULL;
}

/* Word w of the stream: its raw bytes, or with masks != 0 their noise values. */
static inline uint64_t stream_word(uint64_t key, int64_t w, uint64_t masks) {
    const uint64_t word = egg_stream_word(key, w);
    return masks ? egg_noise_word(word, masks) : word;
}

void egg_stream_words(uint64_t key, int64_t w0, int64_t w1, uint64_t masks, uint8_t *out) {
    for (int64_t w = w0; w < w1; w++) {
        const uint64_t word = stream_word(key, w, masks);
        for (int j = 0; j < 8; j++) out[(w - w0) * 8 + j] = (uint8_t)(word >> (8 * j)); /* one store */
    }
}

/* Words [0, count / 8) whole, then the first count % 8 bytes of the next. */
static void stream_prefix(uint64_t key, int64_t count, uint64_t masks, uint8_t *out) {
    const int64_t w = count / 8;
    egg_active_kernels()->stream_words(key, 0, w, masks, out);
    if (w * 8 < count) {
        const uint64_t word = stream_word(key, w, masks);
        for (int64_t j = 0; w * 8 + j < count; j++) out[w * 8 + j] = (uint8_t)(word >> (8 * j));
    }
}

void egg_stream_bytes(uint64_t key, int64_t count, uint8_t *out) { stream_prefix(key, count, 0, out); }

void egg_noise_values(uint64_t key, int64_t count, int32_t noise_bits, int8_t *out) {
    stream_prefix(key, count, noise_masks(noise_bits), (uint8_t *)out);
}

const int8_t *egg_noise_range(uint64_t key, int64_t start, int32_t n, int32_t noise_bits, int8_t *scratch) {
    const int64_t w0 = start / 8, w1 = (start + n + 7) / 8;
    egg_active_kernels()->stream_words(key, w0, w1, noise_masks(noise_bits), (uint8_t *)scratch);
    return scratch + (start - w0 * 8);
}
