/* Portable int8 kernels: the reference every SIMD kernel must equal bit for bit. */
#include "egg_internal.h"

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

const egg_kernels egg_kernels_scalar = {"scalar", gemm_scalar, dot_scalar, egg_forward_block_baseline};
