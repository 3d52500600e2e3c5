/* x86 kernels, compiled with function-level target attributes so one build
 * runs everywhere; kernels.c picks them only when the CPU has the feature. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "egg_internal.h"

int egg_cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

/* |a|·(b·sign(a)) with vpmaddubsw: exact because inputs are never -128, so
 * each pair sum is at most 2·127·127 < 2^15. */
__attribute__((target("avx2"))) static inline __m256i madd_i8(__m256i a, __m256i b) {
    const __m256i products = _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(b, a));
    return _mm256_madd_epi16(products, _mm256_set1_epi16(1));
}

__attribute__((target("avx2"))) static inline int32_t hsum(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

__attribute__((target("avx2"))) static int32_t dot_avx2(const int8_t *a, const int8_t *b, int32_t n) {
    __m256i acc = _mm256_setzero_si256();
    int32_t i = 0;
    for (; i + 32 <= n; i += 32)
        acc = _mm256_add_epi32(acc, madd_i8(_mm256_loadu_si256((const __m256i *)(a + i)),
                                            _mm256_loadu_si256((const __m256i *)(b + i))));
    int32_t sum = hsum(acc);
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

__attribute__((target("avx2"))) static void gemm_avx2(int32_t rows_x, int32_t rows_w, int32_t k, const int8_t *x,
                                                     int64_t ldx, const int8_t *w, int64_t ldw, int32_t *y,
                                                     int64_t ldy) {
    for (int32_t i = 0; i < rows_x; i++)
        for (int32_t j = 0; j < rows_w; j++) y[i * ldy + j] = dot_avx2(x + i * ldx, w + j * ldw, k);
}

const egg_kernels egg_kernels_avx2 = {"avx2", gemm_avx2, dot_avx2};
#endif
