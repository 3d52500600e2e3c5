/* arm64 NEON kernels (dotprod where the compiler targets it). */
#if defined(__aarch64__)
#include <arm_neon.h>

#include "egg_internal.h"

static int32_t dot_neon(const int8_t *a, const int8_t *b, int32_t n) {
    int32x4_t acc = vdupq_n_s32(0);
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const int8x16_t va = vld1q_s8(a + i), vb = vld1q_s8(b + i);
#if defined(__ARM_FEATURE_DOTPROD)
        acc = vdotq_s32(acc, va, vb);
#else
        const int16x8_t lo = vmull_s8(vget_low_s8(va), vget_low_s8(vb));
        const int16x8_t hi = vmull_high_s8(va, vb);
        acc = vpadalq_s16(acc, lo);
        acc = vpadalq_s16(acc, hi);
#endif
    }
    int32_t sum = vaddvq_s32(acc);
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

static void gemm_neon(int32_t rows_x, int32_t rows_w, int32_t k, const int8_t *x, int64_t ldx, const int8_t *w,
                      int64_t ldw, int32_t *y, int64_t ldy) {
    for (int32_t i = 0; i < rows_x; i++)
        for (int32_t j = 0; j < rows_w; j++) y[i * ldy + j] = dot_neon(x + i * ldx, w + j * ldw, k);
}

const egg_kernels egg_kernels_neon = {"neon", gemm_neon, dot_neon};
#endif
