/* The counter-based random numbers of the core (rng.c): every random byte is a pure function of
 * (seed, tensor, stream, index), so any thread can regenerate any slice of any stream, and the
 * weights do not depend on the thread count or the order of the work. reference.py has the same. */
#ifndef EGG_RNG_H
#define EGG_RNG_H

#include <stdint.h>

#define EGG_GOLDEN 0x9E3779B97F4A7C15ULL
/* Streams of a tensor other than its pairs' noise (stream = pair index). */
#define EGG_ALPHA_STREAM 0xFFFFFFFFULL
#define EGG_INIT_STREAM 0xFFFFFFFEULL

static inline uint64_t egg_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Word i of the stream with this key: inline, because the update draws one per weight. */
static inline uint64_t egg_stream_word(uint64_t key, int64_t i) {
    return egg_mix64(key + EGG_GOLDEN * (uint64_t)(i + 1));
}

uint64_t egg_step_seed(uint64_t run_seed, int64_t step);
uint64_t egg_stream_key(uint64_t seed, int32_t tensor, uint64_t stream);
/* Byte i is byte (i % 8) of word i / 8, little-endian on every platform. */
void egg_stream_bytes(uint64_t key, int64_t count, uint8_t *out);
/* A noise value from a stream byte b: u1 - u2 with u1 = b's low noise_bits, u2 = those of b >> 4
 * (mask = 2^noise_bits - 1), so |value| <= mask. */
static inline int8_t egg_noise_value(uint8_t b, int mask) { return (int8_t)((b & mask) - ((b >> 4) & mask)); }
/* egg_noise_value of each byte of a word at once, masks = mask in every byte: 0x80 is set above each
 * minuend so that no byte borrows from the next (mask <= 15), then taken off again. */
static inline uint64_t egg_noise_word(uint64_t word, uint64_t masks) {
    const uint64_t high = 0x8080808080808080ULL;
    return (((word & masks) | high) - ((word >> 4) & masks)) ^ high;
}
/* Bytes of words [w0, w1) of the stream, 8 a word, little-endian on every platform; with masks != 0
 * (2^noise_bits - 1 in every byte) their noise values, 8 at once (egg_noise_word). The reference of the
 * kernel tables' stream_words, which the stream functions below call. */
void egg_stream_words(uint64_t key, int64_t w0, int64_t w1, uint64_t masks, uint8_t *out);
/* Value i is egg_noise_value of the stream's byte i. */
void egg_noise_values(uint64_t key, int64_t count, int32_t noise_bits, int8_t *out);
/* Values [start, start + n) of egg_noise_values without making those before them: the values of the
 * stream's whole words that cover them go to `scratch` (n + 16 bytes); returns the pointer to value
 * `start`, inside scratch. */
const int8_t *egg_noise_range(uint64_t key, int64_t start, int32_t n, int32_t noise_bits, int8_t *scratch);

#endif
