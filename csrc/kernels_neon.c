/* arm64 NEON kernels: a register-tiled int8 GEMM and a dot product.
 *
 * Two ways to multiply-accumulate 16 int8 pairs into four int32 lanes:
 *   sdot (vdotq_s32, the dotprod extension: every Apple M-series core, Neoverse N1 and later);
 *   smull + smlal2 + sadalp, on every ARMv8 core.
 * Where the compiler already targets dotprod (__ARM_FEATURE_DOTPROD: the macOS build passes
 * -mcpu=apple-m1) only the sdot kernels exist. GCC on Linux builds both and picks one at load
 * time from the kernel's hwcaps, so one build (a wheel) runs on every arm64 CPU and still uses
 * sdot where it exists. Other compilers get the smull kernels: clang's arm_neon.h, before the
 * intrinsics became target-gated, only declares vdotq_s32 when the whole file targets dotprod.
 * Every path adds the same integer products, so all equal the scalar kernel bit for bit.
 */
#include "egg_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>

#if !defined(__ARM_FEATURE_DOTPROD) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define EGG_NEON_RUNTIME_DOTPROD 1
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20) /* older C libraries lack the name; the bit is the kernel ABI */
#endif
#endif

/* Four accumulators [a0, a1, a2, a3] -> the vector of their horizontal sums. */
static inline int32x4_t reduce4(const int32x4_t a[4]) {
    return vpaddq_s32(vpaddq_s32(a[0], a[1]), vpaddq_s32(a[2], a[3]));
}

/* Products of columns [k0, k) that the 16-byte steps did not cover, added to y[r*ldy + c]. */
static inline void add_tail(int mr, int nr, int32_t k0, int32_t k, const int8_t *x, int64_t ldx,
                            const int8_t *w, int64_t ldw, int32_t *y, int64_t ldy) {
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < nr; c++) {
            int32_t sum = 0;
            for (int32_t p = k0; p < k; p++) sum += x[r * ldx + p] * w[c * ldw + p];
            y[r * ldy + c] += sum;
        }
}

/* Defines dot_<V>, tile_<V> and gemm_<V> on the multiply-accumulate MAC, each function carrying
 * the target attribute ATTR. gemm_<V> works in 4x4 output tiles: 4 rows of X and 4 rows of W
 * stream through once per tile while 16 accumulators (of 32 vector registers) stay in registers;
 * mr < 4 covers the last rows of X, single dots the last rows of W. */
#define EGG_NEON_KERNELS(V, ATTR, MAC)                                                                      \
    ATTR static int32_t dot_##V(const int8_t *a, const int8_t *b, int32_t n) {                            \
        int32x4_t acc = vdupq_n_s32(0);                                                                    \
        int32_t p = 0;                                                                                     \
        for (; p + 16 <= n; p += 16) acc = MAC(acc, vld1q_s8(a + p), vld1q_s8(b + p));                   \
        int32_t sum = vaddvq_s32(acc);                                                                     \
        for (; p < n; p++) sum += a[p] * b[p];                                                             \
        return sum;                                                                                        \
    }                                                                                                      \
                                                                                                           \
    ATTR static inline __attribute__((always_inline)) void tile_##V(                                       \
        const int mr, int32_t k, const int8_t *x, int64_t ldx, const int8_t *w, int64_t ldw, int32_t *y,   \
        int64_t ldy) {                                                                                     \
        int32x4_t acc[4][4];                                                                               \
        for (int r = 0; r < mr; r++)                                                                       \
            for (int c = 0; c < 4; c++) acc[r][c] = vdupq_n_s32(0);                                        \
        int32_t p = 0;                                                                                     \
        for (; p + 16 <= k; p += 16) {                                                                     \
            int8x16_t wv[4];                                                                               \
            for (int c = 0; c < 4; c++) wv[c] = vld1q_s8(w + c * ldw + p);                                 \
            for (int r = 0; r < mr; r++) {                                                                 \
                const int8x16_t xv = vld1q_s8(x + r * ldx + p);                                            \
                for (int c = 0; c < 4; c++) acc[r][c] = MAC(acc[r][c], xv, wv[c]);                         \
            }                                                                                              \
        }                                                                                                  \
        for (int r = 0; r < mr; r++) vst1q_s32(y + r * ldy, reduce4(acc[r]));                             \
        if (p < k) add_tail(mr, 4, p, k, x, ldx, w, ldw, y, ldy);                                          \
    }                                                                                                      \
                                                                                                           \
    ATTR static void gemm_##V(int32_t rows_x, int32_t rows_w, int32_t k, const int8_t *x, int64_t ldx,     \
                              const int8_t *w, int64_t ldw, int32_t *y, int64_t ldy) {                    \
        for (int32_t i = 0; i < rows_x; i += 4) {                                                          \
            const int mr = rows_x - i < 4 ? rows_x - i : 4;                                                \
            const int8_t *xi = x + i * ldx;                                                                \
            int32_t *yi = y + i * ldy;                                                                     \
            int32_t j = 0;                                                                                 \
            /* A constant mr per call lets the compiler unroll the tile and keep acc in registers. */     \
            for (; j + 4 <= rows_w; j += 4) switch (mr) {                                                  \
                case 4: tile_##V(4, k, xi, ldx, w + j * ldw, ldw, yi + j, ldy); break;                     \
                case 3: tile_##V(3, k, xi, ldx, w + j * ldw, ldw, yi + j, ldy); break;                     \
                case 2: tile_##V(2, k, xi, ldx, w + j * ldw, ldw, yi + j, ldy); break;                     \
                default: tile_##V(1, k, xi, ldx, w + j * ldw, ldw, yi + j, ldy); break;                    \
                }                                                                                          \
            for (; j < rows_w; j++)                                                                        \
                for (int r = 0; r < mr; r++) yi[r * ldy + j] = dot_##V(xi + r * ldx, w + j * ldw, k);     \
        }                                                                                                  \
    }

#if defined(__ARM_FEATURE_DOTPROD) || defined(EGG_NEON_RUNTIME_DOTPROD)
#if defined(__ARM_FEATURE_DOTPROD)
#define EGG_SDOT_TARGET
#else
/* arm_neon.h declares vdotq_s32 for this target; any CPU with dotprod implements ARMv8.2. */
#define EGG_SDOT_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
EGG_SDOT_TARGET static inline int32x4_t mac_sdot(int32x4_t acc, int8x16_t a, int8x16_t b) {
    return vdotq_s32(acc, a, b);
}
EGG_NEON_KERNELS(sdot, EGG_SDOT_TARGET, mac_sdot)
#endif

#if !defined(__ARM_FEATURE_DOTPROD)
/* Each int16 lane holds two products: |a·b + c·d| <= 2·127² = 32258 fits because the kernel
 * inputs are never -128 (see egg_gemm_fn); sadalp then widens pairs of lanes into int32. */
static inline int32x4_t mac_smull(int32x4_t acc, int8x16_t a, int8x16_t b) {
    const int16x8_t products = vmlal_high_s8(vmull_s8(vget_low_s8(a), vget_low_s8(b)), a, b);
    return vpadalq_s16(acc, products);
}
EGG_NEON_KERNELS(smull, , mac_smull)
#endif

#if defined(__ARM_FEATURE_DOTPROD)
const egg_kernels egg_kernels_neon = {"neon", gemm_sdot, dot_sdot, egg_forward_block_wide, &egg_elementwise_scalar};
int32_t egg_neon_dotprod(void) { return 1; }
#elif defined(EGG_NEON_RUNTIME_DOTPROD)
static int has_sdot;

/* Runs when the library loads, before any thread can call a kernel. */
__attribute__((constructor)) static void detect_sdot(void) {
    has_sdot = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
}

static int32_t dot_neon(const int8_t *a, const int8_t *b, int32_t n) {
    return has_sdot ? dot_sdot(a, b, n) : dot_smull(a, b, n);
}

static void gemm_neon(int32_t rows_x, int32_t rows_w, int32_t k, const int8_t *x, int64_t ldx, const int8_t *w,
                      int64_t ldw, int32_t *y, int64_t ldy) {
    (has_sdot ? gemm_sdot : gemm_smull)(rows_x, rows_w, k, x, ldx, w, ldw, y, ldy);
}

const egg_kernels egg_kernels_neon = {"neon", gemm_neon, dot_neon, egg_forward_block_wide, &egg_elementwise_scalar};
int32_t egg_neon_dotprod(void) { return has_sdot; }
#else
const egg_kernels egg_kernels_neon = {"neon", gemm_smull, dot_smull, egg_forward_block_wide, &egg_elementwise_scalar};
int32_t egg_neon_dotprod(void) { return 0; }
#endif

#else
int32_t egg_neon_dotprod(void) { return 0; }
#endif
