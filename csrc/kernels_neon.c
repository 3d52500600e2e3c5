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
#include "rng.h"

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

/* The peak microkernels (egg_kernels.peak, timed by bench.c): independent chains of one MAC on
 * register-resident operands, no memory traffic; 16 MACs counted per sdot or per smull + smlal2 +
 * sadalp. OPAQUE is an empty asm that claims to modify its operand: the inputs of every round
 * look new to the compiler, so it cannot hoist or merge the products. */
#define OPAQUE(v) __asm__ volatile("" : "+w"(v))

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

/* 16 accumulators cover sdot's latency. */
EGG_SDOT_TARGET static int64_t peak_sdot(int64_t iterations, int32_t *sink) {
    int8x16_t u = vdupq_n_s8(3), s = vdupq_n_s8(-7);
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    int32x4_t a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
    for (int64_t i = 0; i < iterations; i++) {
        OPAQUE(u);
        OPAQUE(s);
        a0 = mac_sdot(a0, u, s), a1 = mac_sdot(a1, u, s), a2 = mac_sdot(a2, u, s), a3 = mac_sdot(a3, u, s);
        a4 = mac_sdot(a4, u, s), a5 = mac_sdot(a5, u, s), a6 = mac_sdot(a6, u, s), a7 = mac_sdot(a7, u, s);
        a8 = mac_sdot(a8, u, s), a9 = mac_sdot(a9, u, s), a10 = mac_sdot(a10, u, s), a11 = mac_sdot(a11, u, s);
        a12 = mac_sdot(a12, u, s), a13 = mac_sdot(a13, u, s), a14 = mac_sdot(a14, u, s);
        a15 = mac_sdot(a15, u, s);
        /* Equal chains could be merged into one: claim each accumulator changes. */
        __asm__ volatile("" : "+w"(a0), "+w"(a1), "+w"(a2), "+w"(a3), "+w"(a4), "+w"(a5), "+w"(a6), "+w"(a7));
        __asm__ volatile("" : "+w"(a8), "+w"(a9), "+w"(a10), "+w"(a11), "+w"(a12), "+w"(a13), "+w"(a14), "+w"(a15));
    }
    const int32x4_t sum = vaddq_s32(
        vaddq_s32(vaddq_s32(vaddq_s32(a0, a1), vaddq_s32(a2, a3)), vaddq_s32(vaddq_s32(a4, a5), vaddq_s32(a6, a7))),
        vaddq_s32(vaddq_s32(vaddq_s32(a8, a9), vaddq_s32(a10, a11)),
                  vaddq_s32(vaddq_s32(a12, a13), vaddq_s32(a14, a15))));
    *sink = vgetq_lane_s32(sum, 0);
    return iterations * 16 * 16;
}
#endif

#if !defined(__ARM_FEATURE_DOTPROD)
/* Each int16 lane holds two products: |a·b + c·d| <= 2·127² = 32258 fits because the kernel
 * inputs are never -128 (see egg_gemm_fn); sadalp then widens pairs of lanes into int32. */
static inline int32x4_t mac_smull(int32x4_t acc, int8x16_t a, int8x16_t b) {
    const int16x8_t products = vmlal_high_s8(vmull_s8(vget_low_s8(a), vget_low_s8(b)), a, b);
    return vpadalq_s16(acc, products);
}
EGG_NEON_KERNELS(smull, , mac_smull)

/* Each chain multiplies its own s, so the products cannot be computed once and shared. */
static int64_t peak_smull(int64_t iterations, int32_t *sink) {
    int8x16_t u = vdupq_n_s8(3), s0 = vdupq_n_s8(-7), s1 = vdupq_n_s8(-5), s2 = vdupq_n_s8(-3), s3 = vdupq_n_s8(-1);
    int8x16_t s4 = vdupq_n_s8(1), s5 = vdupq_n_s8(3), s6 = vdupq_n_s8(5), s7 = vdupq_n_s8(7);
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int64_t i = 0; i < iterations; i++) {
        OPAQUE(u);
        OPAQUE(s0);
        OPAQUE(s1);
        OPAQUE(s2);
        OPAQUE(s3);
        OPAQUE(s4);
        OPAQUE(s5);
        OPAQUE(s6);
        OPAQUE(s7);
        a0 = mac_smull(a0, u, s0), a1 = mac_smull(a1, u, s1), a2 = mac_smull(a2, u, s2), a3 = mac_smull(a3, u, s3);
        a4 = mac_smull(a4, u, s4), a5 = mac_smull(a5, u, s5), a6 = mac_smull(a6, u, s6), a7 = mac_smull(a7, u, s7);
    }
    const int32x4_t sum = vaddq_s32(vaddq_s32(vaddq_s32(a0, a1), vaddq_s32(a2, a3)),
                                    vaddq_s32(vaddq_s32(a4, a5), vaddq_s32(a6, a7)));
    *sink = vgetq_lane_s32(sum, 0);
    return iterations * 8 * 16;
}
#endif

/* ---- the elementwise kernels (egg_elementwise) on baseline ARMv8 NEON, shared by every neon
 * variant: integer arithmetic in the same order as kernels_scalar.c, so the same bits. Narrowing
 * int32 to int8 goes through the saturating narrows (int32 -> int16 -> int8) and a max with -127:
 * saturating twice and then clamping to [-127, 127] equals clamping once. vshlq by a negative
 * count is an arithmetic (flooring) right shift. */

/* 16 int32 (a, b, c, d in order) -> 16 int8, clamped to [-127, 127]. */
static inline int8x16_t narrow_i32(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
    const int16x8_t ab = vqmovn_high_s32(vqmovn_s32(a), b), cd = vqmovn_high_s32(vqmovn_s32(c), d);
    return vmaxq_s8(vqmovn_high_s16(vqmovn_s16(ab), cd), vdupq_n_s8(-127));
}

/* 16 int16 (two vectors) -> 16 int8, clamped to [-127, 127]. */
static inline int8x16_t narrow_i16(int16x8_t lo, int16x8_t hi) {
    return vmaxq_s8(vqmovn_high_s16(vqmovn_s16(lo), hi), vdupq_n_s8(-127));
}

/* acc[0..16) >> sh, clamped to [-127, 127] */
static inline int8x16_t shifted16(const int32_t *acc, int32x4_t right) {
    return narrow_i32(vshlq_s32(vld1q_s32(acc), right), vshlq_s32(vld1q_s32(acc + 4), right),
                      vshlq_s32(vld1q_s32(acc + 8), right), vshlq_s32(vld1q_s32(acc + 12), right));
}

static void shift_sat_neon(const int32_t *acc, int64_t n, int32_t sh, int8_t *out) {
    const int32x4_t right = vdupq_n_s32(-sh);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) vst1q_s8(out + j, shifted16(acc + j, right));
    if (j < n) egg_elementwise_scalar.shift_sat(acc + j, n - j, sh, out + j);
}

static void relu_shift_neon(const int32_t *acc, int64_t n, int32_t sh, int8_t *out) {
    const int32x4_t right = vdupq_n_s32(-sh);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) vst1q_s8(out + j, vmaxq_s8(shifted16(acc + j, right), vdupq_n_s8(0)));
    if (j < n) egg_elementwise_scalar.relu_shift(acc + j, n - j, sh, out + j);
}

static void residual_add_neon(const int32_t *acc, int64_t n, int32_t sh, int8_t *resid) {
    const int32x4_t right = vdupq_n_s32(-sh);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        vst1q_s8(resid + j, vmaxq_s8(vqaddq_s8(vld1q_s8(resid + j), shifted16(acc + j, right)), vdupq_n_s8(-127)));
    if (j < n) egg_elementwise_scalar.residual_add(acc + j, n - j, sh, resid + j);
}

/* The int32 sum saturates to int16 first: beyond +-32767, sum + bias is beyond +-127 either way. */
static void gru_combine_neon(int32_t members, int32_t h, const int32_t *ax, const int32_t *ah, const int8_t *bias,
                             int64_t bias_stride, int32_t sh, int8_t *out) {
    const int32x4_t right = vdupq_n_s32(-sh);
    for (int32_t i = 0; i < members; i++) {
        const int64_t row = (int64_t)i * h;
        const int8_t *b = bias + i * bias_stride;
        int32_t c = 0;
        for (; c + 16 <= h; c += 16) {
            int32x4_t sum[4];
            for (int q = 0; q < 4; q++)
                sum[q] = vaddq_s32(vshlq_s32(vld1q_s32(ax + row + c + 4 * q), right),
                                   vshlq_s32(vld1q_s32(ah + row + c + 4 * q), right));
            const int8x16_t b8 = vld1q_s8(b + c);
            const int16x8_t lo = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(sum[0]), sum[1]), vmovl_s8(vget_low_s8(b8)));
            const int16x8_t hi = vqaddq_s16(vqmovn_high_s32(vqmovn_s32(sum[2]), sum[3]), vmovl_high_s8(b8));
            vst1q_s8(out + row + c, narrow_i16(lo, hi));
        }
        if (c < h)
            egg_elementwise_scalar.gru_combine(1, h - c, ax + row + c, ah + row + c, b + c, 0, sh, out + row + c);
    }
}

/* (g + 128)(c - h) >> 8 in int32 lanes, narrowed back to int16 (it lies between 0 and c - h). */
static inline int16x8_t gru_step(int16x8_t g, int16x8_t c, int16x8_t hv) {
    const int16x8_t weight = vaddq_s16(g, vdupq_n_s16(128)), diff = vsubq_s16(c, hv);
    const int32x4_t lo = vmull_s16(vget_low_s16(weight), vget_low_s16(diff));
    const int32x4_t hi = vmull_high_s16(weight, diff);
    return vaddq_s16(hv, vshrn_high_n_s32(vshrn_n_s32(lo, 8), hi, 8));
}

static void gru_update_neon(const int8_t *gate, const int8_t *cand, int64_t n, int8_t *hidden, int8_t *resid) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        const int8x16_t g = vld1q_s8(gate + j), c = vld1q_s8(cand + j), hv = vld1q_s8(hidden + j);
        const int16x8_t lo = gru_step(vmovl_s8(vget_low_s8(g)), vmovl_s8(vget_low_s8(c)), vmovl_s8(vget_low_s8(hv)));
        const int16x8_t hi = gru_step(vmovl_high_s8(g), vmovl_high_s8(c), vmovl_high_s8(hv));
        const int8x16_t next = vmovn_high_s16(vmovn_s16(lo), hi); /* in [-127, 127] */
        vst1q_s8(hidden + j, next);
        vst1q_s8(resid + j, vmaxq_s8(vqaddq_s8(vld1q_s8(resid + j), next), vdupq_n_s8(-127)));
    }
    if (j < n) egg_elementwise_scalar.gru_update(gate + j, cand + j, n - j, hidden + j, resid + j);
}

/* |x| summed by pairwise widening adds (u16 lanes: at most 256 steps of 254 for hidden <= 4096),
 * then the int32 path of the norm as in egg_layer_norm_row. */
static void layer_norm_neon(int32_t members, int32_t h, const int8_t *x, const int8_t *w, int64_t w_stride,
                            int8_t *out) {
    const uint64_t per_h = egg_reciprocal(h); /* one divide per call, not per member */
    for (int32_t i = 0; i < members; i++) {
        const int8_t *xi = x + (int64_t)i * h, *wi = w + i * w_stride;
        int8_t *oi = out + (int64_t)i * h;
        uint16x8_t sums = vdupq_n_u16(0);
        int32_t c = 0;
        for (; c + 16 <= h; c += 16) sums = vpadalq_u8(sums, vreinterpretq_u8_s8(vabsq_s8(vld1q_s8(xi + c))));
        int32_t sum = (int32_t)vaddlvq_u16(sums);
        for (; c < h; c++) sum += xi[c] < 0 ? -xi[c] : xi[c];
        const int32_t mean = egg_divide(sum, per_h); /* sum <= 127 * 4096 < 2^20 */
        const int32_t avg = mean < 1 ? 1 : mean;
        if (avg < EGG_LN_INT32_MIN_AVG || h % 16) {
            egg_layer_norm_row(xi, wi, h, oi);
            continue;
        }
        const int32x4_t inv = vdupq_n_s32(egg_ln_inverse[avg]);
        for (c = 0; c < h; c += 16) {
            const int8x16_t xv = vld1q_s8(xi + c), wv = vld1q_s8(wi + c);
            const int16x8_t lo = vmull_s8(vget_low_s8(xv), vget_low_s8(wv)), hi = vmull_high_s8(xv, wv);
            int32x4_t p[4] = {vmulq_s32(vmovl_s16(vget_low_s16(lo)), inv), vmulq_s32(vmovl_high_s16(lo), inv),
                              vmulq_s32(vmovl_s16(vget_low_s16(hi)), inv), vmulq_s32(vmovl_high_s16(hi), inv)};
            for (int q = 0; q < 4; q++) p[q] = vshrq_n_s32(p[q], EGG_LN_OUT_SHIFT);
            vst1q_s8(oi + c, narrow_i32(p[0], p[1], p[2], p[3]));
        }
    }
}

/* a·b on every ARMv8 core: smull + smlal2 + sadalp (pair sums fit int16, see mac_smull). */
static inline int32_t dot_widening(const int8_t *a, const int8_t *b, int32_t n) {
    int32x4_t acc = vdupq_n_s32(0);
    int32_t p = 0;
    for (; p + 16 <= n; p += 16) {
        const int8x16_t va = vld1q_s8(a + p), vb = vld1q_s8(b + p);
        acc = vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(va), vget_low_s8(vb)), va, vb));
    }
    int32_t sum = vaddvq_s32(acc);
    for (; p < n; p++) sum += a[p] * b[p];
    return sum;
}

/* acc[0..16) += sign * ((xb · a) >> shift) for rows of one member, or of a pair with the same a
 * (pair: row0 gains with xb0, row1 loses with xb1). */
static inline void rank1_rows(int32_t *row0, int32_t *row1, const int8_t *a, int32_t rows, int32_t xb0, int32_t xb1,
                              int32_t shift, int sign) {
    const int32x4_t right = vdupq_n_s32(-shift);
    int32_t r = 0;
    for (; r + 16 <= rows; r += 16) {
        const int8x16_t a8 = vld1q_s8(a + r);
        const int16x8_t lo = vmovl_s8(vget_low_s8(a8)), hi = vmovl_high_s8(a8);
        const int32x4_t a32[4] = {vmovl_s16(vget_low_s16(lo)), vmovl_high_s16(lo), vmovl_s16(vget_low_s16(hi)),
                                  vmovl_high_s16(hi)};
        for (int q = 0; q < 4; q++) {
            const int32x4_t term = vshlq_s32(vmulq_n_s32(a32[q], xb0), right), old = vld1q_s32(row0 + r + 4 * q);
            vst1q_s32(row0 + r + 4 * q, sign > 0 ? vaddq_s32(old, term) : vsubq_s32(old, term));
            if (row1) {
                const int32x4_t t1 = vshlq_s32(vmulq_n_s32(a32[q], xb1), right);
                vst1q_s32(row1 + r + 4 * q, vsubq_s32(vld1q_s32(row1 + r + 4 * q), t1));
            }
        }
    }
    for (; r < rows; r++) {
        row0[r] += sign > 0 ? (xb0 * a[r]) >> shift : -((xb0 * a[r]) >> shift);
        if (row1) row1[r] -= (xb1 * a[r]) >> shift;
    }
}

/* Antithetic pairs (adjacent members, the same noise, signs +1 then -1) share the pass over B
 * and the widening of A. */
static void rank1_neon(int32_t members, int32_t rows, int32_t cols, const int8_t *x, const int8_t *const *noise,
                       int64_t noise_off, const int8_t *signs, int32_t shift, int32_t *acc) {
    for (int32_t i = 0; i < members;) {
        const int sign = signs[i];
        const int8_t *a = noise[i] + noise_off;
        const int8_t *xi = x + (int64_t)i * cols;
        int32_t *row = acc + (int64_t)i * rows;
        if (i + 1 < members && sign > 0 && signs[i + 1] < 0 && noise[i + 1] == noise[i]) {
            const int32_t xb0 = dot_widening(xi, a + rows, cols), xb1 = dot_widening(xi + cols, a + rows, cols);
            rank1_rows(row, row + rows, a, rows, xb0, xb1, shift, 1);
            i += 2;
            continue;
        }
        if (sign) rank1_rows(row, NULL, a, rows, dot_widening(xi, a + rows, cols), 0, shift, sign);
        i++;
    }
}

/* |scale · b| <= 127 · 127: int16 lanes (vmull_s8), shifted by vshlq (a count of 16 leaves the sign). */
static void perturbed_row_neon(const int8_t *w, const int8_t *b, int32_t scale, int32_t n, int32_t shift,
                               int32_t sign, int8_t *out) {
    const int8x8_t s8 = vdup_n_s8((int8_t)scale);
    const int16x8_t right = vdupq_n_s16((int16_t)-shift);
    int32_t c = 0;
    for (; c + 16 <= n; c += 16) {
        const int8x16_t bv = vld1q_s8(b + c), wv = vld1q_s8(w + c);
        const int16x8_t t_lo = vshlq_s16(vmull_s8(vget_low_s8(bv), s8), right);
        const int16x8_t t_hi = vshlq_s16(vmull_high_s8(bv, vcombine_s8(s8, s8)), right);
        const int16x8_t w_lo = vmovl_s8(vget_low_s8(wv)), w_hi = vmovl_high_s8(wv);
        vst1q_s8(out + c, sign > 0 ? narrow_i16(vaddq_s16(w_lo, t_lo), vaddq_s16(w_hi, t_hi))
                                   : narrow_i16(vsubq_s16(w_lo, t_lo), vsubq_s16(w_hi, t_hi)));
    }
    if (c < n) egg_elementwise_scalar.perturbed_row(w + c, b + c, scale, n - c, shift, sign, out + c);
}

/* The sum of 2^(v/16) in Q16 over 256 logits, v = logit + 128, by table look-ups (tbl), 16 logits
 * a step. With k = v % 16, e = v / 16 and EXP2_FRAC[k] = 65536 + d, a term is 2^(16 + e) + d · 2^e:
 * tbl finds the bytes of d by k and of 2^e by e, zip pairs them into u16 lanes, umull multiplies,
 * and uadalp adds the products into u64 lanes (and the powers into u32 lanes). The low nibble of
 * v is the logit's; its high nibble is the logit's xor 8, which the power tables absorb. */
static inline uint64_t exp2_sum_neon(const int8_t *logits) {
    static const uint8_t d_lo[16] = {0x00, 0x56, 0x2C, 0x88, 0x70, 0xEA, 0xFE, 0xB0,
                                     0x0A, 0x11, 0xCE, 0x49, 0x8A, 0x9A, 0x82, 0x4B};
    static const uint8_t d_hi[16] = {0x00, 0x0B, 0x17, 0x23, 0x30, 0x3D, 0x4B, 0x5A,
                                     0x6A, 0x7A, 0x8A, 0x9C, 0xAE, 0xC1, 0xD5, 0xEA};
    static const uint8_t p_lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128};
    static const uint8_t p_hi[16] = {1, 2, 4, 8, 16, 32, 64, 128, 0, 0, 0, 0, 0, 0, 0, 0};
    const uint8x16_t tdl = vld1q_u8(d_lo), tdh = vld1q_u8(d_hi), tpl = vld1q_u8(p_lo), tph = vld1q_u8(p_hi);
    uint64x2_t products = vdupq_n_u64(0);
    uint32x4_t powers = vdupq_n_u32(0);
    for (int p = 0; p < EGG_VOCAB; p += 16) {
        const uint8x16_t v = vreinterpretq_u8_s8(vld1q_s8(logits + p));
        const uint8x16_t k = vandq_u8(v, vdupq_n_u8(15)), e = vshrq_n_u8(v, 4);
        const uint8x16_t dl = vqtbl1q_u8(tdl, k), dh = vqtbl1q_u8(tdh, k);
        const uint8x16_t pl = vqtbl1q_u8(tpl, e), ph = vqtbl1q_u8(tph, e);
        const uint16x8_t d0 = vreinterpretq_u16_u8(vzip1q_u8(dl, dh)), d1 = vreinterpretq_u16_u8(vzip2q_u8(dl, dh));
        const uint16x8_t q0 = vreinterpretq_u16_u8(vzip1q_u8(pl, ph)), q1 = vreinterpretq_u16_u8(vzip2q_u8(pl, ph));
        products = vpadalq_u32(products, vmull_u16(vget_low_u16(d0), vget_low_u16(q0)));
        products = vpadalq_u32(products, vmull_high_u16(d0, q0));
        products = vpadalq_u32(products, vmull_u16(vget_low_u16(d1), vget_low_u16(q1)));
        products = vpadalq_u32(products, vmull_high_u16(d1, q1));
        powers = vpadalq_u16(vpadalq_u16(powers, q0), q1);
    }
    return vaddvq_u64(products) + ((uint64_t)vaddlvq_u32(powers) << 16);
}

static void token_losses_neon(int32_t members, const int8_t *logits, const uint8_t *targets, int64_t *loss) {
    for (int32_t i = 0; i < members; i++) {
        const int8_t *l = logits + (int64_t)i * EGG_VOCAB;
        loss[i] = egg_token_loss_q16(exp2_sum_neon(l), l[targets[i]]);
    }
}

static const egg_elementwise elementwise_neon = {.layer_norm = layer_norm_neon,
                                                 .rank1 = rank1_neon,
                                                 .gru_combine = gru_combine_neon,
                                                 .gru_update = gru_update_neon,
                                                 .shift_sat = shift_sat_neon,
                                                 .relu_shift = relu_shift_neon,
                                                 .residual_add = residual_add_neon,
                                                 .perturbed_row = perturbed_row_neon,
                                                 .token_losses = token_losses_neon};

/* The table's entries: sdot where the compiler targets dotprod, chosen at load time from the
 * hwcaps where it can build both, smull otherwise. */
#if defined(__ARM_FEATURE_DOTPROD)
#define GEMM_NEON gemm_sdot
#define DOT_NEON dot_sdot
#define PEAK_NEON peak_sdot
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

static int64_t peak_neon(int64_t iterations, int32_t *sink) {
    return has_sdot ? peak_sdot(iterations, sink) : peak_smull(iterations, sink);
}

#define GEMM_NEON gemm_neon
#define DOT_NEON dot_neon
#define PEAK_NEON peak_neon
int32_t egg_neon_dotprod(void) { return has_sdot; }
#else
#define GEMM_NEON gemm_smull
#define DOT_NEON dot_smull
#define PEAK_NEON peak_smull
int32_t egg_neon_dotprod(void) { return 0; }
#endif

const egg_kernels egg_kernels_neon = {.name = "neon",
                                      .gemm = GEMM_NEON,
                                      .dot = DOT_NEON,
                                      .forward_block = egg_forward_block_wide,
                                      .elementwise = &elementwise_neon,
                                      .peak = PEAK_NEON,
                                      .stream_words = egg_stream_words,
                                      .voter_rows = egg_voter_rows_scalar};

#else
int32_t egg_neon_dotprod(void) { return 0; }
#endif
