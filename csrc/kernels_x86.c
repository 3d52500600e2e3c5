/* x86 kernels: AVX2, AVX-VNNI and AVX-512 VNNI, compiled with function-level
 * target attributes so one build runs everywhere; kernels.c picks one only when
 * the CPU (and the OS, for the AVX-512 register state) supports it.
 *
 * All three share one register-tiled GEMM on 256-bit vectors and differ in a
 * single step, dot4: "add four u8 x s8 products into each int32 lane".
 *   AVX2:         vpmaddubsw (pairs -> int16) + vpmaddwd by ones (-> int32) + vpaddd
 *   AVX-VNNI:     vpdpbusd (VEX)
 *   AVX-512 VNNI: vpdpbusd (EVEX, on ymm registers through AVX512VL)
 * The VNNI variants deliberately keep 256-bit vectors and the AVX2 tile: no
 * machine this code is developed on runs them, so they mirror the tested AVX2
 * code instead of being tuned blind.
 *
 * dot4 multiplies an unsigned byte u by a signed byte s. Each int8 product x·w
 * is put in that shape exactly, in one of three ways (enum operands):
 *   X_NONNEG: x >= 0 everywhere in X (a ReLU output): u = x, s = w.
 *   X_OFFSET: |w| <= 64 everywhere in 4 rows of W:   u = x + 128, s = w, and
 *             128·Σw is subtracted at the end. Pair sums stay in int16:
 *             255·(64 + 64) = 32640 < 32767.
 *   X_SIGNED: always valid:                            u = |x|, s = w·sign(x).
 * The first two skip the vpsignb of the third, which costs about a quarter
 * of the multiply throughput on Zen 3. Kernel inputs are never -128, so
 * |x| <= 127 and every AVX2 pair sum |a·b + c·d| <= 2·127·127 = 32258 fits
 * vpmaddubsw's saturating int16 without saturating. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <string.h>

#include "egg_internal.h"
#include "rng.h"

#define AVX2 __attribute__((target("avx2")))
#define AVXVNNI __attribute__((target("avx2,avxvnni")))
#define AVX512VNNI __attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni")))
#define INLINE inline __attribute__((always_inline))

/* X_OFFSET needs the row sums of W: worth it only when enough X rows share them. */
#define OFFSET_MIN_ROWS 8

int egg_cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

int egg_cpu_has_avxvnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni");
}

/* libgcc's and compiler-rt's checks include the OS saving the AVX-512 registers (XCR0). */
int egg_cpu_has_avx512vnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni");
}

/* ---- the instruction-set-specific step: acc[i] += u[4i]·s[4i] + ... + u[4i+3]·s[4i+3] */

typedef __m256i (*dot4_fn)(__m256i acc, __m256i u, __m256i s);

AVX2 static INLINE __m256i dot4_avx2(__m256i acc, __m256i u, __m256i s) {
    const __m256i pairs = _mm256_maddubs_epi16(u, s);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

AVXVNNI static INLINE __m256i dot4_avxvnni(__m256i acc, __m256i u, __m256i s) {
    return _mm256_dpbusd_avx_epi32(acc, u, s);
}

AVX512VNNI static INLINE __m256i dot4_avx512vnni(__m256i acc, __m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(acc, u, s);
}

/* ---- the shared GEMM. Every function below is AVX2 and always inlined into a
 * kernel whose target includes AVX2, where dot4 is a constant and inlined too. */

enum operands { X_NONNEG, X_OFFSET, X_SIGNED };

AVX2 static INLINE __m256i load(const int8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* The unsigned operand standing for x. */
AVX2 static INLINE __m256i unsigned_x(enum operands mode, __m256i x) {
    return mode == X_NONNEG ? x : mode == X_OFFSET ? _mm256_xor_si256(x, _mm256_set1_epi8(-128))
                                                   : _mm256_abs_epi8(x);
}

/* acc += x·w, with u = unsigned_x(mode, x). */
AVX2 static INLINE __m256i mac(dot4_fn dot4, enum operands mode, __m256i acc, __m256i u, __m256i x, __m256i w) {
    return dot4(acc, u, mode == X_SIGNED ? _mm256_sign_epi8(w, x) : w);
}

/* The horizontal sums of four accumulators, in order. */
AVX2 static INLINE __m128i reduce4(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i abcd = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

/* y[j] = sums[j] + (add ? y[j] : base[j]) for the first nj of 4 outputs. */
AVX2 static INLINE void store4(__m128i sums, int nj, int add, const int32_t base[4], int32_t *y) {
    if (nj == 4 && !add) {
        _mm_storeu_si128((__m128i *)y, _mm_add_epi32(sums, _mm_loadu_si128((const __m128i *)base)));
        return;
    }
    int32_t s[4];
    _mm_storeu_si128((__m128i *)s, sums);
    for (int j = 0; j < nj; j++) y[j] = s[j] + (add ? y[j] : base[j]);
}

/* An empty asm that takes the accumulators in registers and gives them back: it
 * emits nothing but stops GCC 12 from hoisting all eight products of a step
 * ahead of their sums, which needs more than 16 ymm registers and spilled
 * accumulators to the stack in every step (the tile ran ~25% slower). */
#define KEEP_IN_REGISTERS(a, b, c, d, e, f, g, h) \
    __asm__("" : "+x"(a), "+x"(b), "+x"(c), "+x"(d), "+x"(e), "+x"(f), "+x"(g), "+x"(h))

/* Sums over the first k32 (a multiple of 32) columns of 2 X rows times 4 W rows,
 * stored through store4. Register budget, 16 ymm: 8 accumulators, 2 X rows and
 * their unsigned forms, one W row at a time, a temporary and vpmaddwd's ones.
 * The accumulators are named variables, not an array, for the same reason. */
AVX2 static INLINE void tile2x4(dot4_fn dot4, enum operands mode, int32_t k32, const int8_t *x, int64_t ldx,
                                const int8_t *const w[4], int nj, int add, const int32_t base[4], int32_t *y,
                                int64_t ldy) {
    __m256i a00 = _mm256_setzero_si256(), a01 = a00, a02 = a00, a03 = a00;
    __m256i a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    for (int32_t p = 0; p < k32; p += 32) {
        const __m256i x0 = load(x + p), x1 = load(x + ldx + p);
        const __m256i u0 = unsigned_x(mode, x0), u1 = unsigned_x(mode, x1);
        __m256i wj = load(w[0] + p);
        a00 = mac(dot4, mode, a00, u0, x0, wj);
        a10 = mac(dot4, mode, a10, u1, x1, wj);
        wj = load(w[1] + p);
        a01 = mac(dot4, mode, a01, u0, x0, wj);
        a11 = mac(dot4, mode, a11, u1, x1, wj);
        wj = load(w[2] + p);
        a02 = mac(dot4, mode, a02, u0, x0, wj);
        a12 = mac(dot4, mode, a12, u1, x1, wj);
        wj = load(w[3] + p);
        a03 = mac(dot4, mode, a03, u0, x0, wj);
        a13 = mac(dot4, mode, a13, u1, x1, wj);
        KEEP_IN_REGISTERS(a00, a01, a02, a03, a10, a11, a12, a13);
    }
    store4(reduce4(a00, a01, a02, a03), nj, add, base, y);
    store4(reduce4(a10, a11, a12, a13), nj, add, base, y + ldy);
}

/* The same for the last X row when rows_x is odd (and for every row of a GEMV). */
AVX2 static INLINE void tile1x4(dot4_fn dot4, enum operands mode, int32_t k32, const int8_t *x,
                                const int8_t *const w[4], int nj, int add, const int32_t base[4], int32_t *y) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (int32_t p = 0; p < k32; p += 32) {
        const __m256i x0 = load(x + p), u0 = unsigned_x(mode, x0);
        a0 = mac(dot4, mode, a0, u0, x0, load(w[0] + p));
        a1 = mac(dot4, mode, a1, u0, x0, load(w[1] + p));
        a2 = mac(dot4, mode, a2, u0, x0, load(w[2] + p));
        a3 = mac(dot4, mode, a3, u0, x0, load(w[3] + p));
    }
    store4(reduce4(a0, a1, a2, a3), nj, add, base, y);
}

/* rows (1 or 2) X rows times a panel of 4 W rows: the 32-byte steps in place, then
 * the last k % 32 columns as one more step on zero-padded copies. A zero column
 * adds nothing in any mode: 0·w, and (0 + 128)·0 for X_OFFSET. */
AVX2 static INLINE void tile(dot4_fn dot4, enum operands mode, int rows, int32_t k, const int8_t *x, int64_t ldx,
                             const int8_t *const w[4], int nj, const int32_t base[4], int32_t *y, int64_t ldy) {
    const int32_t k32 = k & ~31, rest = k - k32;
    if (rows == 2)
        tile2x4(dot4, mode, k32, x, ldx, w, nj, 0, base, y, ldy);
    else
        tile1x4(dot4, mode, k32, x, w, nj, 0, base, y);
    if (!rest) return;
    int8_t xt[2][32] = {{0}}, wt[4][32] = {{0}};
    for (int i = 0; i < rows; i++) memcpy(xt[i], x + i * ldx + k32, (size_t)rest);
    for (int j = 0; j < 4; j++) memcpy(wt[j], w[j] + k32, (size_t)rest);
    const int8_t *const wtail[4] = {wt[0], wt[1], wt[2], wt[3]};
    if (rows == 2)
        tile2x4(dot4, mode, 32, xt[0], 32, wtail, nj, 1, base, y, ldy);
    else
        tile1x4(dot4, mode, 32, xt[0], wtail, nj, 1, base, y);
}

/* 1 when every |w| <= 64 in the panel; then base[j] = -128·Σw[j], the X_OFFSET
 * correction. The row sums come from dot4 itself, with u = 1. */
AVX2 static INLINE int panel_offset_base(dot4_fn dot4, int32_t k, const int8_t *const w[4], int32_t base[4]) {
    const __m256i ones = _mm256_set1_epi8(1);
    __m256i big = _mm256_setzero_si256(), s0 = big, s1 = big, s2 = big, s3 = big;
    const int32_t k32 = k & ~31;
    for (int32_t p = 0; p < k32; p += 32) {
        const __m256i w0 = load(w[0] + p), w1 = load(w[1] + p), w2 = load(w[2] + p), w3 = load(w[3] + p);
        const __m256i m = _mm256_max_epu8(_mm256_max_epu8(_mm256_abs_epi8(w0), _mm256_abs_epi8(w1)),
                                          _mm256_max_epu8(_mm256_abs_epi8(w2), _mm256_abs_epi8(w3)));
        big = _mm256_or_si256(big, _mm256_cmpgt_epi8(m, _mm256_set1_epi8(64)));
        s0 = dot4(s0, ones, w0);
        s1 = dot4(s1, ones, w1);
        s2 = dot4(s2, ones, w2);
        s3 = dot4(s3, ones, w3);
    }
    if (_mm256_movemask_epi8(big)) return 0;
    int32_t sum[4];
    _mm_storeu_si128((__m128i *)sum, reduce4(s0, s1, s2, s3));
    for (int j = 0; j < 4; j++)
        for (int32_t p = k32; p < k; p++) {
            if (w[j][p] > 64 || w[j][p] < -64) return 0;
            sum[j] += w[j][p];
        }
    for (int j = 0; j < 4; j++) base[j] = -128 * sum[j];
    return 1;
}

/* 1 when no byte of the rows_x x k block of X is negative (about 1/rows_w of the
 * GEMM's own work). */
AVX2 static INLINE int all_nonneg(int32_t rows_x, int32_t k, const int8_t *x, int64_t ldx) {
    __m256i any = _mm256_setzero_si256();
    int tail = 0;
    for (int32_t i = 0; i < rows_x; i++) {
        const int8_t *row = x + i * ldx;
        int32_t p = 0;
        for (; p + 32 <= k; p += 32) any = _mm256_or_si256(any, load(row + p));
        for (; p < k; p++) tail |= row[p] < 0;
    }
    return !_mm256_movemask_epi8(any) && !tail;
}

AVX2 static INLINE void panel(dot4_fn dot4, enum operands mode, int32_t rows_x, int32_t k, const int8_t *x,
                              int64_t ldx, const int8_t *const w[4], int nj, const int32_t base[4], int32_t *y,
                              int64_t ldy) {
    int32_t i = 0;
    for (; i + 2 <= rows_x; i += 2) tile(dot4, mode, 2, k, x + i * ldx, ldx, w, nj, base, y + i * ldy, ldy);
    if (i < rows_x) tile(dot4, mode, 1, k, x + i * ldx, ldx, w, nj, base, y + i * ldy, ldy);
}

/* Loop order: a panel of 4 W rows (4·k bytes) stays in L1 while every row of X
 * streams past it from L2, so each W row is read from memory once per call.
 * Each panel uses the cheapest exact operand mode its values allow. */
AVX2 static INLINE void gemm_any(dot4_fn dot4, int32_t rows_x, int32_t rows_w, int32_t k, const int8_t *x,
                                 int64_t ldx, const int8_t *w, int64_t ldw, int32_t *y, int64_t ldy) {
    const int x_nonneg = all_nonneg(rows_x, k, x, ldx);
    for (int32_t j = 0; j < rows_w; j += 4) {
        const int nj = rows_w - j < 4 ? rows_w - j : 4;
        const int8_t *wp[4];
        for (int c = 0; c < 4; c++) wp[c] = w + (int64_t)(j + (c < nj ? c : nj - 1)) * ldw; /* repeat the last */
        int32_t base[4] = {0, 0, 0, 0};
        if (x_nonneg)
            panel(dot4, X_NONNEG, rows_x, k, x, ldx, wp, nj, base, y + j, ldy);
        else if (rows_x >= OFFSET_MIN_ROWS && panel_offset_base(dot4, k, wp, base))
            panel(dot4, X_OFFSET, rows_x, k, x, ldx, wp, nj, base, y + j, ldy);
        else
            panel(dot4, X_SIGNED, rows_x, k, x, ldx, wp, nj, base, y + j, ldy);
    }
}

AVX2 static INLINE int32_t dot_any(dot4_fn dot4, const int8_t *a, const int8_t *b, int32_t n) {
    __m256i acc = _mm256_setzero_si256();
    int32_t p = 0;
    for (; p + 32 <= n; p += 32) {
        const __m256i va = load(a + p);
        acc = mac(dot4, X_SIGNED, acc, unsigned_x(X_SIGNED, va), va, load(b + p));
    }
    const __m256i zero = _mm256_setzero_si256();
    int32_t sum = _mm_cvtsi128_si32(reduce4(acc, zero, zero, zero));
    for (; p < n; p++) sum += a[p] * b[p];
    return sum;
}

/* ---- the three kernels: the same code, each with its own dot4 */

AVX2 static void gemm_avx2(int32_t rows_x, int32_t rows_w, int32_t k, const int8_t *x, int64_t ldx,
                           const int8_t *w, int64_t ldw, int32_t *y, int64_t ldy) {
    gemm_any(dot4_avx2, rows_x, rows_w, k, x, ldx, w, ldw, y, ldy);
}
AVX2 static int32_t dot_avx2(const int8_t *a, const int8_t *b, int32_t n) { return dot_any(dot4_avx2, a, b, n); }

AVXVNNI static void gemm_avxvnni(int32_t rows_x, int32_t rows_w, int32_t k, const int8_t *x, int64_t ldx,
                                 const int8_t *w, int64_t ldw, int32_t *y, int64_t ldy) {
    gemm_any(dot4_avxvnni, rows_x, rows_w, k, x, ldx, w, ldw, y, ldy);
}
AVXVNNI static int32_t dot_avxvnni(const int8_t *a, const int8_t *b, int32_t n) {
    return dot_any(dot4_avxvnni, a, b, n);
}

AVX512VNNI static void gemm_avx512vnni(int32_t rows_x, int32_t rows_w, int32_t k, const int8_t *x, int64_t ldx,
                                       const int8_t *w, int64_t ldw, int32_t *y, int64_t ldy) {
    gemm_any(dot4_avx512vnni, rows_x, rows_w, k, x, ldx, w, ldw, y, ldy);
}
AVX512VNNI static int32_t dot_avx512vnni(const int8_t *a, const int8_t *b, int32_t n) {
    return dot_any(dot4_avx512vnni, a, b, n);
}

/* ---- the elementwise kernels (egg_elementwise), AVX2, shared by the three tables: integer
 * arithmetic in the same order as kernels_scalar.c, so the same bits. Narrowing int32 to int8 goes
 * through the saturating packs (int32 -> int16 -> int8) and a max with -127: saturating twice and
 * then clamping to [-127, 127] equals clamping once. */

#define SAT8_MIN _mm256_set1_epi8(-127)

AVX2 static INLINE __m256i load32(const int32_t *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* 32 int32 (a, b, c, d in order) -> 32 int8 in order, saturated to [-128, 127]. */
AVX2 static INLINE __m256i pack_i32_i8(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i abcd = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* acc[j..j+32) >> sh, saturated to [-128, 127]. */
AVX2 static INLINE __m256i shifted32(const int32_t *acc, __m128i sh) {
    return pack_i32_i8(_mm256_sra_epi32(load32(acc), sh), _mm256_sra_epi32(load32(acc + 8), sh),
                       _mm256_sra_epi32(load32(acc + 16), sh), _mm256_sra_epi32(load32(acc + 24), sh));
}

AVX2 static void shift_sat_avx2(const int32_t *acc, int64_t n, int32_t sh, int8_t *out) {
    const __m128i count = _mm_cvtsi32_si128(sh);
    int64_t j = 0;
    for (; j + 32 <= n; j += 32)
        _mm256_storeu_si256((__m256i *)(out + j), _mm256_max_epi8(shifted32(acc + j, count), SAT8_MIN));
    if (j < n) egg_elementwise_scalar.shift_sat(acc + j, n - j, sh, out + j);
}

AVX2 static void relu_shift_avx2(const int32_t *acc, int64_t n, int32_t sh, int8_t *out) {
    const __m128i count = _mm_cvtsi32_si128(sh);
    int64_t j = 0;
    for (; j + 32 <= n; j += 32)
        _mm256_storeu_si256((__m256i *)(out + j), _mm256_max_epi8(shifted32(acc + j, count), _mm256_setzero_si256()));
    if (j < n) egg_elementwise_scalar.relu_shift(acc + j, n - j, sh, out + j);
}

/* resid and the shifted value are in [-127, 127]: their saturating int8 sum, clamped, is sat8 of the sum. */
AVX2 static void residual_add_avx2(const int32_t *acc, int64_t n, int32_t sh, int8_t *resid) {
    const __m128i count = _mm_cvtsi32_si128(sh);
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        const __m256i v = _mm256_max_epi8(shifted32(acc + j, count), SAT8_MIN);
        const __m256i r = _mm256_adds_epi8(load(resid + j), v);
        _mm256_storeu_si256((__m256i *)(resid + j), _mm256_max_epi8(r, SAT8_MIN));
    }
    if (j < n) egg_elementwise_scalar.residual_add(acc + j, n - j, sh, resid + j);
}

/* 16 int8 -> 16 int16 */
AVX2 static INLINE __m256i cvt16(const int8_t *p) { return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p)); }

/* 16 int16 -> 16 int8, saturated, clamped to [-127, 127]. */
AVX2 static INLINE __m128i narrow16(__m256i v) {
    const __m128i packed = _mm_packs_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return _mm_max_epi8(packed, _mm_set1_epi8(-127));
}

/* The int32 sum x = (ax >> sh) + (ah >> sh) saturates to int16 first: beyond +-32767, x + bias is
 * beyond +-127 either way. */
AVX2 static void gru_combine_avx2(int32_t members, int32_t h, const int32_t *ax, const int32_t *ah,
                                  const int8_t *bias, int64_t bias_stride, int32_t sh, int8_t *out) {
    const __m128i count = _mm_cvtsi32_si128(sh);
    for (int32_t i = 0; i < members; i++) {
        const int64_t row = (int64_t)i * h;
        const int8_t *b = bias + i * bias_stride;
        int64_t c = 0; /* 64-bit indices: no sign extension per step */
        for (; c + 32 <= h; c += 32) {
            const int32_t *x = ax + row + c, *y = ah + row + c;
            __m256i sum[4];
            for (int q = 0; q < 4; q++)
                sum[q] = _mm256_add_epi32(_mm256_sra_epi32(load32(x + 8 * q), count),
                                          _mm256_sra_epi32(load32(y + 8 * q), count));
            /* vpackssdw interleaves the 128-bit lanes ([0-3, 8-11 | 4-7, 12-15]): vpermq restores the order */
            const __m256i s0 = _mm256_adds_epi16(_mm256_permute4x64_epi64(_mm256_packs_epi32(sum[0], sum[1]), 0xD8),
                                                 cvt16(b + c));
            const __m256i s1 = _mm256_adds_epi16(_mm256_permute4x64_epi64(_mm256_packs_epi32(sum[2], sum[3]), 0xD8),
                                                 cvt16(b + c + 16));
            const __m256i v = _mm256_permute4x64_epi64(_mm256_packs_epi16(s0, s1), 0xD8);
            _mm256_storeu_si256((__m256i *)(out + row + c), _mm256_max_epi8(v, SAT8_MIN));
        }
        for (; c + 16 <= h; c += 16) {
            const int32_t *x = ax + row + c, *y = ah + row + c;
            const __m256i lo = _mm256_add_epi32(_mm256_sra_epi32(load32(x), count), _mm256_sra_epi32(load32(y), count));
            const __m256i hi =
                _mm256_add_epi32(_mm256_sra_epi32(load32(x + 8), count), _mm256_sra_epi32(load32(y + 8), count));
            const __m256i sum16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);
            const __m256i b16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + c)));
            _mm_storeu_si128((__m128i *)(out + row + c), narrow16(_mm256_adds_epi16(sum16, b16)));
        }
        if (c < h)
            egg_elementwise_scalar.gru_combine(1, h - c, ax + row + c, ah + row + c, b + c, 0, sh, out + row + c);
    }
}

/* (g + 128)(c - h) >> 8 as the high half of (2(c - h)) · (128(g + 128)): |2(c - h)| <= 508 and
 * 128(g + 128) <= 32640 fit int16, and the product is (g + 128)(c - h) · 256 exactly. */
AVX2 static void gru_update_avx2(const int8_t *gate, const int8_t *cand, int64_t n, int8_t *hidden, int8_t *resid) {
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        __m256i next[2];
        for (int q = 0; q < 2; q++) {
            const __m256i g = cvt16(gate + j + 16 * q), c = cvt16(cand + j + 16 * q), hv = cvt16(hidden + j + 16 * q);
            const __m256i weight = _mm256_slli_epi16(_mm256_add_epi16(g, _mm256_set1_epi16(128)), 7);
            next[q] = _mm256_add_epi16(hv, _mm256_mulhi_epi16(_mm256_slli_epi16(_mm256_sub_epi16(c, hv), 1), weight));
        }
        const __m256i next8 = _mm256_permute4x64_epi64(_mm256_packs_epi16(next[0], next[1]), 0xD8);
        _mm256_storeu_si256((__m256i *)(hidden + j), next8);
        _mm256_storeu_si256((__m256i *)(resid + j), _mm256_max_epi8(_mm256_adds_epi8(load(resid + j), next8), SAT8_MIN));
    }
    for (; j + 16 <= n; j += 16) {
        const __m256i g = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(gate + j)));
        const __m256i c = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(cand + j)));
        const __m256i hv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(hidden + j)));
        const __m256i weight = _mm256_slli_epi16(_mm256_add_epi16(g, _mm256_set1_epi16(128)), 7);
        const __m256i step = _mm256_mulhi_epi16(_mm256_slli_epi16(_mm256_sub_epi16(c, hv), 1), weight);
        const __m256i next = _mm256_add_epi16(hv, step); /* between hidden and cand: in [-127, 127] */
        const __m128i next8 = _mm_packs_epi16(_mm256_castsi256_si128(next), _mm256_extracti128_si256(next, 1));
        _mm_storeu_si128((__m128i *)(hidden + j), next8);
        const __m128i r = _mm_adds_epi8(_mm_loadu_si128((const __m128i *)(resid + j)), next8);
        _mm_storeu_si128((__m128i *)(resid + j), _mm_max_epi8(r, _mm_set1_epi8(-127)));
    }
    if (j < n) egg_elementwise_scalar.gru_update(gate + j, cand + j, n - j, hidden + j, resid + j);
}

/* (x·w·inv) >> 19 in 16-bit lanes for 32768 <= inv <= 2^17 (a mean |x| of 8..32), 16 values: with
 * inv = k 2^15 + r (0 <= r < 2^15, k = k1 + k2, each 0..2), floor(x·w·inv / 2^15) is
 * mulhi(2 x·w, r) + k1 x·w + k2 x·w (|2 x·w| <= 32258 and |k x·w| <= 32258 fit int16), and >> 19 is
 * that >> 4. The 16-bit sums saturate only where the true sum is beyond +-32767, and on its side (every
 * term has the sign of x·w): then >> 4 is beyond +-127 either way. k2 = 0 (two = 0) skips a term. */
AVX2 static INLINE __m256i norm16_wide(const int8_t *x, const int8_t *w, __m256i r16, __m256i k1, __m256i k2,
                                       int two) {
    const __m256i xw = _mm256_mullo_epi16(cvt16(x), cvt16(w));
    __m256i t = _mm256_adds_epi16(_mm256_mulhi_epi16(_mm256_add_epi16(xw, xw), r16), _mm256_mullo_epi16(xw, k1));
    if (two) t = _mm256_adds_epi16(t, _mm256_mullo_epi16(xw, k2));
    return _mm256_srai_epi16(t, EGG_LN_OUT_SHIFT - 15);
}

/* One row of the norm through norm16_wide, 32 values a step (egg_layer_norm_row for an odd width). */
AVX2 static INLINE void norm_row_wide(const int8_t *x, const int8_t *w, int32_t h, int32_t inv, int two,
                                      int8_t *out) {
    const int32_t k = inv >> 15, k1 = k < 2 ? k : 2;
    const __m256i r16 = _mm256_set1_epi16((int16_t)(inv & 32767));
    const __m256i k1v = _mm256_set1_epi16((int16_t)k1), k2v = _mm256_set1_epi16((int16_t)(k - k1));
    int64_t c = 0;
    for (; c + 32 <= h; c += 32) {
        const __m256i v0 = norm16_wide(x + c, w + c, r16, k1v, k2v, two);
        const __m256i v1 = norm16_wide(x + c + 16, w + c + 16, r16, k1v, k2v, two);
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi16(v0, v1), 0xD8);
        _mm256_storeu_si256((__m256i *)(out + c), _mm256_max_epi8(packed, SAT8_MIN));
    }
    if (c + 16 <= h) {
        _mm_storeu_si128((__m128i *)(out + c), narrow16(norm16_wide(x + c, w + c, r16, k1v, k2v, two)));
        c += 16;
    }
    if (c < h) egg_layer_norm_row(x, w, h, out); /* an odd width: the whole row again, the same bits */
}

/* sum |x| by vpsadbw against zero; 16-bit lanes for every mean |x| of 8 and more. */
AVX2 static void layer_norm_avx2(int32_t members, int32_t h, const int8_t *x, const int8_t *w, int64_t w_stride,
                                 int8_t *out) {
    const uint64_t per_h = egg_reciprocal(h); /* one divide per call, not per member */
    for (int32_t i = 0; i < members; i++) {
        const int8_t *xi = x + (int64_t)i * h, *wi = w + i * w_stride;
        int8_t *oi = out + (int64_t)i * h;
        __m256i sums = _mm256_setzero_si256();
        int64_t c = 0; /* 64-bit indices: no sign extension per step */
        for (; c + 32 <= h; c += 32) sums = _mm256_add_epi64(sums, _mm256_sad_epu8(_mm256_abs_epi8(load(xi + c)),
                                                                               _mm256_setzero_si256()));
        const __m128i s2 = _mm_add_epi64(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
        int32_t sum = (int32_t)(_mm_cvtsi128_si64(s2) + _mm_extract_epi64(s2, 1));
        for (; c < h; c++) sum += xi[c] < 0 ? -xi[c] : xi[c];
        const int32_t mean = egg_divide(sum, per_h); /* sum <= 127 * 4096 < 2^20 */
        const int32_t avg = mean < 1 ? 1 : mean;
        if (avg < EGG_LN_INT32_MIN_AVG) {
            egg_layer_norm_row(xi, wi, h, oi);
            continue;
        }
        const int32_t inv_scalar = egg_ln_inverse[avg];
        if (inv_scalar <= INT16_MAX) { /* mean |x| >= 33: 16-bit lanes, 32 values a step */
            /* (x·w·inv) >> 19 = ((x·w·inv) >> 16) >> 3, and vpmulhw gives the first shift exactly. */
            const __m256i inv16 = _mm256_set1_epi16((int16_t)inv_scalar);
            for (c = 0; c + 32 <= h; c += 32) {
                const __m256i xw0 = _mm256_mullo_epi16(cvt16(xi + c), cvt16(wi + c));
                const __m256i xw1 = _mm256_mullo_epi16(cvt16(xi + c + 16), cvt16(wi + c + 16));
                const __m256i v0 = _mm256_srai_epi16(_mm256_mulhi_epi16(xw0, inv16), EGG_LN_OUT_SHIFT - 16);
                const __m256i v1 = _mm256_srai_epi16(_mm256_mulhi_epi16(xw1, inv16), EGG_LN_OUT_SHIFT - 16);
                const __m256i v = _mm256_permute4x64_epi64(_mm256_packs_epi16(v0, v1), 0xD8);
                _mm256_storeu_si256((__m256i *)(oi + c), _mm256_max_epi8(v, SAT8_MIN));
            }
            if (c + 16 <= h) {
                const __m256i xw = _mm256_mullo_epi16(cvt16(xi + c), cvt16(wi + c));
                const __m256i v = _mm256_srai_epi16(_mm256_mulhi_epi16(xw, inv16), EGG_LN_OUT_SHIFT - 16);
                _mm_storeu_si128((__m128i *)(oi + c), narrow16(v));
                c += 16;
            }
            if (c < h) egg_layer_norm_row(xi, wi, h, oi); /* an odd width: the whole row again, the same bits */
            continue;
        }
        if (inv_scalar <= 2 * 32768) /* mean |x| 16..32: k = 1 or 2 */
            norm_row_wide(xi, wi, h, inv_scalar, 0, oi);
        else /* 8..15: k = 2..4 */
            norm_row_wide(xi, wi, h, inv_scalar, 1, oi);
    }
}

/* row[r] += sign * ((xb * a[r]) >> shift) for rows r, 8 at a time; |xb · a| < 2^31 as in the scalar
 * code. The sign is a constant of each inlined copy, and everything is read into locals: the build
 * has -fno-strict-aliasing, so a store through row would otherwise reload the rest. */
AVX2 static INLINE __m256i rank1_step(const int8_t *a, int32_t *row, __m256i xb, __m128i count, int sign) {
    const __m256i a32 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)a));
    const __m256i term = _mm256_sra_epi32(_mm256_mullo_epi32(a32, xb), count);
    const __m256i old = load32(row);
    return sign > 0 ? _mm256_add_epi32(old, term) : _mm256_sub_epi32(old, term);
}

AVX2 static INLINE void add_rank1_avx2(int32_t *row, const int8_t *a, int32_t rows, int32_t xb, __m128i count,
                                       int sign) {
    const __m256i xbv = _mm256_set1_epi32(xb);
    const int8_t *const end32 = a + (rows & ~31), *const end = a + rows;
    for (; a < end32; a += 32, row += 32) { /* pointers, not an int32 index: no sign extension per step */
        __m256i v[4];
        for (int q = 0; q < 4; q++) v[q] = rank1_step(a + 8 * q, row + 8 * q, xbv, count, sign);
        for (int q = 0; q < 4; q++) _mm256_storeu_si256((__m256i *)(row + 8 * q), v[q]);
    }
    for (; end - a >= 8; a += 8, row += 8) _mm256_storeu_si256((__m256i *)row, rank1_step(a, row, xbv, count, sign));
    const int32_t shift = _mm_cvtsi128_si32(count);
    for (; a < end; a++, row++) *row += sign > 0 ? (xb * *a) >> shift : -((xb * *a) >> shift);
}

/* The horizontal sums of two int32 accumulators: [sum a, sum b] in the low 64 bits. */
AVX2 static INLINE __m128i hsum2(__m256i a, __m256i b) {
    const __m256i ab = _mm256_hadd_epi32(a, b); /* [a01 a23 b01 b23 | a45 a67 b45 b67] */
    const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(ab), _mm256_extracti128_si256(ab, 1));
    return _mm_hadd_epi32(s, s);
}

/* x0·b and x1·b over n values, 32 a step, the rest one by one: the two members of a pair read the
 * same noise b. One index for the three pointers, so the loop steps one register. */
AVX2 static INLINE void dot_pair(const int8_t *x0, const int8_t *x1, const int8_t *b, int32_t n, int32_t out[2]) {
    const int64_t n32 = n & ~31;
    __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0;
    for (int64_t p = 0; p < n32; p += 32) {
        const __m256i vb = load(b + p), v0 = load(x0 + p), v1 = load(x1 + p);
        acc0 = dot4_avx2(acc0, _mm256_abs_epi8(v0), _mm256_sign_epi8(vb, v0));
        acc1 = dot4_avx2(acc1, _mm256_abs_epi8(v1), _mm256_sign_epi8(vb, v1));
    }
    const __m128i sums = hsum2(acc0, acc1);
    out[0] = _mm_cvtsi128_si32(sums);
    out[1] = _mm_extract_epi32(sums, 1);
    for (int64_t p = n32; p < n; p++) out[0] += x0[p] * b[p], out[1] += x1[p] * b[p];
}

/* 8 rows of a pair: row0 gains (xb0 · a) >> shift, row1 loses (xb1 · a) >> shift. */
AVX2 static INLINE void rank1_pair_step(int32_t *row0, int32_t *row1, const int8_t *a, __m256i xb0, __m256i xb1,
                                        __m128i count, __m256i *out0, __m256i *out1) {
    const __m256i a32 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)a));
    *out0 = _mm256_add_epi32(load32(row0), _mm256_sra_epi32(_mm256_mullo_epi32(a32, xb0), count));
    *out1 = _mm256_sub_epi32(load32(row1), _mm256_sra_epi32(_mm256_mullo_epi32(a32, xb1), count));
}

/* The rank-1 terms of a pair (members i, i + 1 with the same noise and signs +1, -1): each A value is
 * widened once for both rows; 32 rows a step, every load of a step before its stores (the build has
 * -fno-strict-aliasing, so a store would otherwise force the loads after it to wait for it), and one
 * index for the three pointers. */
AVX2 static INLINE void add_rank1_pair(int32_t *row0, int32_t *row1, const int8_t *a, int32_t rows,
                                       const int32_t xb[2], __m128i count) {
    const __m256i xb0 = _mm256_set1_epi32(xb[0]), xb1 = _mm256_set1_epi32(xb[1]);
    const int64_t rows32 = rows & ~31, rows8 = rows & ~7;
    int64_t r = 0;
    for (; r < rows32; r += 32) {
        __m256i v0[4], v1[4];
        for (int q = 0; q < 4; q++)
            rank1_pair_step(row0 + r + 8 * q, row1 + r + 8 * q, a + r + 8 * q, xb0, xb1, count, &v0[q], &v1[q]);
        for (int q = 0; q < 4; q++) {
            _mm256_storeu_si256((__m256i *)(row0 + r + 8 * q), v0[q]);
            _mm256_storeu_si256((__m256i *)(row1 + r + 8 * q), v1[q]);
        }
    }
    for (; r < rows8; r += 8) {
        __m256i v0, v1;
        rank1_pair_step(row0 + r, row1 + r, a + r, xb0, xb1, count, &v0, &v1);
        _mm256_storeu_si256((__m256i *)(row0 + r), v0);
        _mm256_storeu_si256((__m256i *)(row1 + r), v1);
    }
    const int32_t shift = _mm_cvtsi128_si32(count);
    for (; r < rows; r++) row0[r] += (xb[0] * a[r]) >> shift, row1[r] -= (xb[1] * a[r]) >> shift;
}

/* The rank-1 terms of `pairs` consecutive antithetic pairs, x and acc at the first pair's first member.
 * A function of its own (not inlined), so that its loop keeps its pointers in registers: inlined
 * beside the one-member path, GCC spilled them and spent ~95 instructions a pair on bookkeeping. */
AVX2 static INLINE void rank1_pairs_any(int32_t pairs, int32_t rows, int32_t cols, const int8_t *x,
                                        const int8_t *const *noise, int64_t noise_off, __m128i count, int32_t *acc) {
    const int64_t x_step = 2 * (int64_t)cols, acc_step = 2 * (int64_t)rows;
    for (int32_t p = 0; p < pairs; p++, x += x_step, acc += acc_step) {
        const int8_t *a = noise[2 * p] + noise_off;
        int32_t xb[2];
        dot_pair(x, x + cols, a + rows, cols, xb);
        add_rank1_pair(acc, acc + rows, a, rows, xb, count);
    }
}

__attribute__((noinline)) AVX2 static void rank1_pairs(int32_t pairs, int32_t rows, int32_t cols, const int8_t *x,
                                                       const int8_t *const *noise, int64_t noise_off, __m128i count,
                                                       int32_t *acc) {
    /* Sizes that are multiples of 32 (every tensor of the presets) get a copy without the tails:
     * their loop counts are then known to divide, which frees the registers the tails held. */
    if (rows % 32 == 0 && cols % 32 == 0)
        rank1_pairs_any(pairs, rows & ~31, cols & ~31, x, noise, noise_off, count, acc);
    else
        rank1_pairs_any(pairs, rows, cols, x, noise, noise_off, count, acc);
}

/* Members in antithetic pairs where they are (adjacent, the same noise, signs +1 then -1: every
 * pair of a training step), one by one otherwise. */
AVX2 static void rank1_avx2(int32_t members, int32_t rows, int32_t cols, const int8_t *x, const int8_t *const *noise,
                            int64_t noise_off, const int8_t *signs, int32_t shift, int32_t *acc) {
    const __m128i count = _mm_cvtsi32_si128(shift);
    for (int32_t i = 0; i < members;) {
        int32_t j = i; /* the run of pairs from i: members [i, j) */
        while (j + 1 < members && signs[j] > 0 && signs[j + 1] < 0 && noise[j + 1] == noise[j]) j += 2;
        if (j > i) {
            rank1_pairs((j - i) / 2, rows, cols, x + (int64_t)i * cols, noise + i, noise_off, count,
                        acc + (int64_t)i * rows);
            i = j;
            continue;
        }
        const int8_t *a = noise[i] + noise_off;
        const int8_t *xi = x + (int64_t)i * cols;
        int32_t *row = acc + (int64_t)i * rows;
        if (signs[i] > 0)
            add_rank1_avx2(row, a, rows, dot_any(dot4_avx2, xi, a + rows, cols), count, 1);
        else if (signs[i] < 0)
            add_rank1_avx2(row, a, rows, dot_any(dot4_avx2, xi, a + rows, cols), count, -1);
        i++;
    }
}

/* |scale · b| <= 127 · 127 and its shift fit int16, and so does w plus it. */
AVX2 static void perturbed_row_avx2(const int8_t *w, const int8_t *b, int32_t scale, int32_t n, int32_t shift,
                                    int32_t sign, int8_t *out) {
    const __m256i scale16 = _mm256_set1_epi16((int16_t)scale);
    const __m128i count = _mm_cvtsi32_si128(shift);
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
        const __m256i b16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + c)));
        const __m256i w16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + c)));
        const __m256i term = _mm256_sra_epi16(_mm256_mullo_epi16(b16, scale16), count);
        const __m256i sum = sign > 0 ? _mm256_add_epi16(w16, term) : _mm256_sub_epi16(w16, term);
        _mm_storeu_si128((__m128i *)(out + c), narrow16(sum));
    }
    if (c < n) egg_elementwise_scalar.perturbed_row(w + c, b + c, scale, n - c, shift, sign, out + c);
}

/* The sum of 2^(v/16) in Q16 over 256 logits, v = logit + 128, by byte shuffles, 32 logits a step.
 * With k = v % 16, e = v / 16 and f = EXP2_FRAC[k] = 65536 + d (d < 2^16), a term is
 * f · 2^e = 2^(16 + e) + d · 2^e. vpshufb looks up the bytes of d by k and of q = 2^e by e; the
 * bytes are paired into 16-bit lanes, and vpmullw / vpmulhuw give the low and high halves of
 * d · q (< 2^31). The high half is below q (d < 2^16), so high half + q < 2q <= 2^16 is one unsigned
 * 16-bit value of weight 2^16: the 2^(16 + e) of the term rides with it. Both kinds of 16-bit
 * values are summed by vpmaddwd after an xor with 0x8000 (unsigned to signed: each lane then
 * counts 32768 less, added back at the end). Every int32 lane adds at most 16 pair sums below 2^17. */
AVX2 static INLINE uint64_t exp2_sum_avx2(const int8_t *logits) {
    /* the low and high bytes of EGG_EXP2_FRAC[k] - 65536 */
    const __m256i d_lo = _mm256_broadcastsi128_si256(_mm_setr_epi8(
        0x00, 0x56, 0x2C, (char)0x88, 0x70, (char)0xEA, (char)0xFE, (char)0xB0, 0x0A, 0x11, (char)0xCE, 0x49,
        (char)0x8A, (char)0x9A, (char)0x82, 0x4B));
    const __m256i d_hi = _mm256_broadcastsi128_si256(_mm_setr_epi8(
        0x00, 0x0B, 0x17, 0x23, 0x30, 0x3D, 0x4B, 0x5A, 0x6A, 0x7A, (char)0x8A, (char)0x9C, (char)0xAE, (char)0xC1,
        (char)0xD5, (char)0xEA));
    /* the low and high bytes of 2^e, indexed by e ^ 8 = the logit's high nibble (v = logit ^ 0x80) */
    const __m256i pow_lo = _mm256_broadcastsi128_si256(
        _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, (char)128));
    const __m256i pow_hi = _mm256_broadcastsi128_si256(
        _mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, (char)128, 0, 0, 0, 0, 0, 0, 0, 0));
    const __m256i nibble = _mm256_set1_epi8(15), flip = _mm256_set1_epi16(-32768), ones = _mm256_set1_epi16(1);
    __m256i low = _mm256_setzero_si256(), high = low;
#pragma GCC unroll 1 /* unrolled, GCC keeps every step's sums apart and spills them */
    for (int p = 0; p < EGG_VOCAB; p += 32) {
        const __m256i v = load(logits + p); /* k = v % 16 is the logit's low nibble too */
        const __m256i k = _mm256_and_si256(v, nibble), e = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
        const __m256i dl = _mm256_shuffle_epi8(d_lo, k), dh = _mm256_shuffle_epi8(d_hi, k);
        const __m256i pl = _mm256_shuffle_epi8(pow_lo, e), ph = _mm256_shuffle_epi8(pow_hi, e);
        for (int half = 0; half < 2; half++) {
            const __m256i d = half ? _mm256_unpackhi_epi8(dl, dh) : _mm256_unpacklo_epi8(dl, dh);
            const __m256i q = half ? _mm256_unpackhi_epi8(pl, ph) : _mm256_unpacklo_epi8(pl, ph);
            const __m256i lo16 = _mm256_mullo_epi16(d, q), hi16 = _mm256_add_epi16(_mm256_mulhi_epu16(d, q), q);
            low = _mm256_add_epi32(low, _mm256_madd_epi16(_mm256_xor_si256(lo16, flip), ones));
            high = _mm256_add_epi32(high, _mm256_madd_epi16(_mm256_xor_si256(hi16, flip), ones));
        }
    }
    /* Both lane sums fit int32 (each lane is below 2^21 in magnitude): [low, high, low, high] */
    __m256i sums = _mm256_hadd_epi32(low, high);
    sums = _mm256_hadd_epi32(sums, sums);
    const __m128i lh = _mm_add_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
    /* each of the 256 low and 256 high values was counted 32768 less */
    const int64_t offset = (int64_t)EGG_VOCAB * 32768;
    return (uint64_t)(offset + _mm_cvtsi128_si32(lh) + ((offset + _mm_extract_epi32(lh, 1)) << 16));
}

/* egg_log2_q16 of four sums at once: the mantissa y < 2^31 before each squaring, so vpmuludq
 * squares it exactly in 64-bit lanes. */
AVX2 static INLINE void log2_q16_x4(const uint64_t s[4], int32_t out[4]) {
    int64_t y0[4];
    int32_t result[4];
    for (int j = 0; j < 4; j++) {
        const int32_t msb = 63 - __builtin_clzll(s[j]);
        y0[j] = (int64_t)(msb >= 30 ? s[j] >> (msb - 30) : s[j] << (30 - msb));
        result[j] = msb << EGG_LOSS_FRAC_BITS;
    }
    __m256i y = _mm256_loadu_si256((const __m256i *)y0), bits = _mm256_setzero_si256();
    const __m256i top = _mm256_set1_epi64x((1LL << 31) - 1), one = _mm256_set1_epi64x(1);
    for (int bit = EGG_LOSS_FRAC_BITS - 1; bit >= 0; bit--) {
        y = _mm256_srli_epi64(_mm256_mul_epu32(y, y), 30);
        const __m256i big = _mm256_and_si256(_mm256_cmpgt_epi64(y, top), one); /* y >= 2^31 */
        y = _mm256_srlv_epi64(y, big);
        bits = _mm256_or_si256(bits, _mm256_slli_epi64(big, bit));
    }
    int64_t b[4];
    _mm256_storeu_si256((__m256i *)b, bits);
    for (int j = 0; j < 4; j++) out[j] = result[j] | (int32_t)b[j];
}

/* TOKEN_LOSSES(NAME, TARGET, EXP2_SUM): the loss of each member's prediction, the integer log2 of four
 * members' exp2 sums at once; one definition for every instruction set, which differ in EXP2_SUM. */
#define TOKEN_LOSSES(NAME, TARGET, EXP2_SUM)                                                                      \
    TARGET static void NAME(int32_t members, const int8_t *logits, const uint8_t *targets, int64_t *loss) {      \
        int32_t i = 0;                                                                                          \
        for (; i + 4 <= members; i += 4) {                                                                      \
            uint64_t totals[4];                                                                                 \
            int32_t log2[4];                                                                                    \
            for (int j = 0; j < 4; j++) totals[j] = EXP2_SUM(logits + (int64_t)(i + j) * EGG_VOCAB);            \
            log2_q16_x4(totals, log2);                                                                          \
            for (int j = 0; j < 4; j++) {                                                                       \
                const int8_t target = logits[(int64_t)(i + j) * EGG_VOCAB + targets[i + j]];                    \
                loss[i + j] = (int64_t)log2[j] - (16 << EGG_LOSS_FRAC_BITS) - ((int64_t)(target + 128) << 12);  \
            }                                                                                                   \
        }                                                                                                       \
        for (; i < members; i++) {                                                                              \
            const int8_t *l = logits + (int64_t)i * EGG_VOCAB;                                                  \
            loss[i] = egg_token_loss_q16(EXP2_SUM(l), l[targets[i]]);                                           \
        }                                                                                                       \
    }

TOKEN_LOSSES(token_losses_avx2, AVX2, exp2_sum_avx2)

static const egg_elementwise elementwise_avx2 = {.layer_norm = layer_norm_avx2,
                                                 .rank1 = rank1_avx2,
                                                 .gru_combine = gru_combine_avx2,
                                                 .gru_update = gru_update_avx2,
                                                 .shift_sat = shift_sat_avx2,
                                                 .relu_shift = relu_shift_avx2,
                                                 .residual_add = residual_add_avx2,
                                                 .perturbed_row = perturbed_row_avx2,
                                                 .token_losses = token_losses_avx2};

/* ---- AVX-512 versions of the two largest elementwise kernels, for the avx512vnni table (its CPUs
 * have AVX-512BW and VL): the rank-1 rows 16 at a time and the loss 64 logits a step; the rest is
 * the AVX2 code. The same arithmetic as the AVX2 versions above, on twice the lanes. */

#define AVX512 __attribute__((target("avx2,avx512f,avx512bw,avx512vl")))

AVX512 static INLINE void add_rank1_avx512(int32_t *row0, int32_t *row1, const int8_t *a, int32_t rows, int32_t xb0,
                                           int32_t xb1, __m128i count, int sign) {
    const __m512i x0 = _mm512_set1_epi32(xb0), x1 = _mm512_set1_epi32(xb1);
    const int8_t *const end16 = a + (rows & ~15), *const end = a + rows;
    for (; a < end16; a += 16, row0 += 16, row1 += row1 ? 16 : 0) {
        const __m512i a32 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)a));
        const __m512i t0 = _mm512_sra_epi32(_mm512_mullo_epi32(a32, x0), count), old = _mm512_loadu_si512(row0);
        _mm512_storeu_si512(row0, sign > 0 ? _mm512_add_epi32(old, t0) : _mm512_sub_epi32(old, t0));
        if (row1)
            _mm512_storeu_si512(row1, _mm512_sub_epi32(_mm512_loadu_si512(row1),
                                                       _mm512_sra_epi32(_mm512_mullo_epi32(a32, x1), count)));
    }
    const int32_t shift = _mm_cvtsi128_si32(count);
    for (; a < end; a++, row0++) {
        *row0 += sign > 0 ? (xb0 * *a) >> shift : -((xb0 * *a) >> shift);
        if (row1) *row1++ -= (xb1 * *a) >> shift;
    }
}

AVX512 static void rank1_avx512(int32_t members, int32_t rows, int32_t cols, const int8_t *x,
                                const int8_t *const *noise, int64_t noise_off, const int8_t *signs, int32_t shift,
                                int32_t *acc) {
    const __m128i count = _mm_cvtsi32_si128(shift);
    for (int32_t i = 0; i < members;) {
        const int8_t *a = noise[i] + noise_off;
        const int8_t *xi = x + (int64_t)i * cols;
        int32_t *row = acc + (int64_t)i * rows;
        if (i + 1 < members && signs[i] > 0 && signs[i + 1] < 0 && noise[i + 1] == noise[i]) {
            int32_t xb[2];
            dot_pair(xi, xi + cols, a + rows, cols, xb);
            add_rank1_avx512(row, row + rows, a, rows, xb[0], xb[1], count, 1);
            i += 2;
            continue;
        }
        if (signs[i] > 0)
            add_rank1_avx512(row, NULL, a, rows, dot_any(dot4_avx2, xi, a + rows, cols), 0, count, 1);
        else if (signs[i] < 0)
            add_rank1_avx512(row, NULL, a, rows, dot_any(dot4_avx2, xi, a + rows, cols), 0, count, -1);
        i++;
    }
}

/* exp2_sum_avx2 on 512-bit vectors: each int32 lane adds at most 8 pair sums below 2^17. */
AVX512 static INLINE uint64_t exp2_sum_avx512(const int8_t *logits) {
    const __m512i d_lo = _mm512_broadcast_i32x4(_mm_setr_epi8(0x00, 0x56, 0x2C, (char)0x88, 0x70, (char)0xEA,
                                                              (char)0xFE, (char)0xB0, 0x0A, 0x11, (char)0xCE, 0x49,
                                                              (char)0x8A, (char)0x9A, (char)0x82, 0x4B));
    const __m512i d_hi = _mm512_broadcast_i32x4(_mm_setr_epi8(0x00, 0x0B, 0x17, 0x23, 0x30, 0x3D, 0x4B, 0x5A, 0x6A,
                                                              0x7A, (char)0x8A, (char)0x9C, (char)0xAE, (char)0xC1,
                                                              (char)0xD5, (char)0xEA));
    const __m512i pow_lo = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64,
                                                                (char)128));
    const __m512i pow_hi = _mm512_broadcast_i32x4(_mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, (char)128, 0, 0, 0, 0, 0, 0,
                                                                0, 0));
    const __m512i nibble = _mm512_set1_epi8(15), flip = _mm512_set1_epi16(-32768), ones = _mm512_set1_epi16(1);
    __m512i low = _mm512_setzero_si512(), high = low;
#pragma GCC unroll 1
    for (int p = 0; p < EGG_VOCAB; p += 64) {
        const __m512i v = _mm512_loadu_si512(logits + p);
        const __m512i k = _mm512_and_si512(v, nibble), e = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
        const __m512i dl = _mm512_shuffle_epi8(d_lo, k), dh = _mm512_shuffle_epi8(d_hi, k);
        const __m512i pl = _mm512_shuffle_epi8(pow_lo, e), ph = _mm512_shuffle_epi8(pow_hi, e);
        for (int half = 0; half < 2; half++) {
            const __m512i d = half ? _mm512_unpackhi_epi8(dl, dh) : _mm512_unpacklo_epi8(dl, dh);
            const __m512i q = half ? _mm512_unpackhi_epi8(pl, ph) : _mm512_unpacklo_epi8(pl, ph);
            const __m512i lo16 = _mm512_mullo_epi16(d, q), hi16 = _mm512_add_epi16(_mm512_mulhi_epu16(d, q), q);
            low = _mm512_add_epi32(low, _mm512_madd_epi16(_mm512_xor_si512(lo16, flip), ones));
            high = _mm512_add_epi32(high, _mm512_madd_epi16(_mm512_xor_si512(hi16, flip), ones));
        }
    }
    /* each of the 256 low and 256 high values was counted 32768 less */
    const int64_t offset = (int64_t)EGG_VOCAB * 32768;
    return (uint64_t)(offset + _mm512_reduce_add_epi32(low) + ((offset + _mm512_reduce_add_epi32(high)) << 16));
}

TOKEN_LOSSES(token_losses_avx512, AVX512, exp2_sum_avx512)

static const egg_elementwise elementwise_avx512 = {.layer_norm = layer_norm_avx2,
                                                   .rank1 = rank1_avx512,
                                                   .gru_combine = gru_combine_avx2,
                                                   .gru_update = gru_update_avx2,
                                                   .shift_sat = shift_sat_avx2,
                                                   .relu_shift = relu_shift_avx2,
                                                   .residual_add = residual_add_avx2,
                                                   .perturbed_row = perturbed_row_avx2,
                                                   .token_losses = token_losses_avx512};

/* ---- the peak microkernels (egg_kernels.peak, timed by bench.c): independent chains of each
 * kernel's dot4 on register-resident operands, no memory traffic. MACs counted: 32 per dot4, the
 * AVX2 one being vpmaddubsw + vpmaddwd + vpaddd and the VNNI ones a 256-bit vpdpbusd (the width
 * the kernels use). */

/* An empty asm that claims to modify its operands: the inputs of every round look
 * new to the compiler, so it cannot hoist or merge the products. */
#define OPAQUE(v) __asm__ volatile("" : "+x"(v))

AVX2 static int64_t peak_avx2(int64_t iterations, int32_t *sink) {
    __m256i u0 = _mm256_set1_epi8(3), u1 = _mm256_set1_epi8(5);
    __m256i s0 = _mm256_set1_epi8(-7), s1 = _mm256_set1_epi8(11), s2 = _mm256_set1_epi8(-13);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
    for (int64_t i = 0; i < iterations; i++) {
        OPAQUE(u0);
        OPAQUE(u1);
        OPAQUE(s0);
        OPAQUE(s1);
        OPAQUE(s2);
        a0 = dot4_avx2(a0, u0, s0), a1 = dot4_avx2(a1, u0, s1), a2 = dot4_avx2(a2, u0, s2);
        a3 = dot4_avx2(a3, u1, s0), a4 = dot4_avx2(a4, u1, s1), a5 = dot4_avx2(a5, u1, s2);
        __asm__("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5)); /* no spills: KEEP_IN_REGISTERS */
    }
    const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(_mm256_add_epi32(a2, a3),
                                                                                   _mm256_add_epi32(a4, a5)));
    *sink = _mm256_extract_epi32(sum, 0);
    return iterations * 6 * 32;
}

/* Chains of vpdpbusd on 12 accumulators, enough to cover its latency (5 cycles) at two
 * per cycle. Named variables, not an array: GCC keeps those in registers. */
AVX2 static INLINE int64_t peak_vnni(dot4_fn dot4, int64_t iterations, int32_t *sink) {
    __m256i u = _mm256_set1_epi8(3), s = _mm256_set1_epi8(-7);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
    __m256i a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
    for (int64_t i = 0; i < iterations; i++) {
        OPAQUE(u);
        OPAQUE(s);
        a0 = dot4(a0, u, s), a1 = dot4(a1, u, s), a2 = dot4(a2, u, s), a3 = dot4(a3, u, s);
        a4 = dot4(a4, u, s), a5 = dot4(a5, u, s), a6 = dot4(a6, u, s), a7 = dot4(a7, u, s);
        a8 = dot4(a8, u, s), a9 = dot4(a9, u, s), a10 = dot4(a10, u, s), a11 = dot4(a11, u, s);
        /* Equal chains could be merged into one: claim each accumulator changes. */
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5), "+x"(a6), "+x"(a7),
                         "+x"(a8), "+x"(a9), "+x"(a10), "+x"(a11));
    }
    const __m256i sum = _mm256_add_epi32(
        _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)),
                         _mm256_add_epi32(_mm256_add_epi32(a4, a5), _mm256_add_epi32(a6, a7))),
        _mm256_add_epi32(_mm256_add_epi32(a8, a9), _mm256_add_epi32(a10, a11)));
    *sink = _mm256_extract_epi32(sum, 0);
    return iterations * 12 * 32;
}

AVXVNNI static int64_t peak_avxvnni(int64_t iterations, int32_t *sink) {
    return peak_vnni(dot4_avxvnni, iterations, sink);
}

AVX512VNNI static int64_t peak_avx512vnni(int64_t iterations, int32_t *sink) {
    return peak_vnni(dot4_avx512vnni, iterations, sink);
}

/* ---- the stream's words (egg_stream_words in rng.c) four at a time. AVX2 has no 64-bit multiply:
 * the low 64 bits of a * b are a_lo * b_lo + ((a_hi * b_lo + a_lo * b_hi) << 32), from three 32 x 32 -> 64
 * multiplies. */

AVX2 static inline __m256i mul64_avx2(__m256i a, __m256i b, __m256i b_hi) {
    const __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), b), _mm256_mul_epu32(a, b_hi));
    return _mm256_add_epi64(_mm256_mul_epu32(a, b), _mm256_slli_epi64(cross, 32));
}

AVX2 static void stream_words_avx2(uint64_t key, int64_t w0, int64_t w1, uint64_t masks, uint8_t *out) {
    const uint64_t c1 = 0xBF58476D1CE4E5B9ULL, c2 = 0x94D049BB133111EBULL; /* egg_mix64's */
    const __m256i m1 = _mm256_set1_epi64x((int64_t)c1), m1_hi = _mm256_set1_epi64x((int64_t)(c1 >> 32));
    const __m256i m2 = _mm256_set1_epi64x((int64_t)c2), m2_hi = _mm256_set1_epi64x((int64_t)(c2 >> 32));
    const __m256i step = _mm256_set1_epi64x((int64_t)(4 * EGG_GOLDEN)), mask = _mm256_set1_epi64x((int64_t)masks);
    const __m256i high = _mm256_set1_epi8((char)0x80);
    /* Lane j: the counter of word w + j, key + EGG_GOLDEN * (w + j + 1). */
    __m256i x = _mm256_add_epi64(_mm256_set1_epi64x((int64_t)(key + EGG_GOLDEN * (uint64_t)(w0 + 1))),
                                 _mm256_set_epi64x((int64_t)(3 * EGG_GOLDEN), (int64_t)(2 * EGG_GOLDEN),
                                                   (int64_t)EGG_GOLDEN, 0));
    int64_t w = w0;
    for (; w + 4 <= w1; w += 4) {
        __m256i z = mul64_avx2(_mm256_xor_si256(x, _mm256_srli_epi64(x, 30)), m1, m1_hi);
        z = mul64_avx2(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), m2, m2_hi);
        z = _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
        if (masks) /* egg_noise_word: bytes never borrow, so a byte subtraction is the same */
            z = _mm256_xor_si256(_mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(z, mask), high),
                                                 _mm256_and_si256(_mm256_srli_epi64(z, 4), mask)),
                                 high);
        _mm256_storeu_si256((__m256i *)(out + (w - w0) * 8), z); /* x86 is little-endian */
        x = _mm256_add_epi64(x, step);
    }
    egg_stream_words(key, w, w1, masks, out + (w - w0) * 8);
}

/* ---- the update's transposes (egg_voter_rows_fn), 8 voters x 32 values at a time: three rounds of
 * unpacks (bytes, 16-bit pairs, 32-bit quads), within each 128-bit half, leave column j's 8 voters in one
 * 64-bit lane; the rest of the values go to the reference. */

/* Each byte of x times f (in every 16-bit lane), as int8: the products fit int8, so each is the low byte
 * of a 16-bit product. */
AVX2 static inline __m256i scale_bytes_avx2(__m256i x, __m256i f) {
    const __m256i even = _mm256_and_si256(_mm256_mullo_epi16(x, f), _mm256_set1_epi16(0x00FF));
    return _mm256_or_si256(even, _mm256_slli_epi16(_mm256_mullo_epi16(_mm256_srli_epi16(x, 8), f), 8));
}

/* Columns j and j + 1 (low half) and j + 16 and j + 17 (high half) of a transposed block, 8 bytes each. */
AVX2 static inline void store_columns(__m256i c, int8_t *out, int64_t ld, int32_t j) {
    const __m128i low = _mm256_castsi256_si128(c), high = _mm256_extracti128_si256(c, 1);
    _mm_storel_epi64((__m128i *)(out + j * ld), low);
    _mm_storeh_pd((double *)(out + (j + 1) * ld), _mm_castsi128_pd(low));
    _mm_storel_epi64((__m128i *)(out + (j + 16) * ld), high);
    _mm_storeh_pd((double *)(out + (j + 17) * ld), _mm_castsi128_pd(high));
}

AVX2 static void voter_rows_avx2(const int8_t *const *v, const int8_t *f, const uint8_t *const *present, int32_t n,
                                 int64_t ld, int8_t *out) {
    int32_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i r[8], a[8], b[8];
        for (int k = 0; k < 8; k++) {
            r[k] = _mm256_loadu_si256((const __m256i *)(v[k] + i));
            if (f) r[k] = scale_bytes_avx2(r[k], _mm256_set1_epi16(f[k]));
            if (present) /* 0 or 1 each: 0 - 1 is a byte mask */
                r[k] = _mm256_and_si256(r[k], _mm256_sub_epi8(_mm256_setzero_si256(),
                                                              _mm256_loadu_si256((const __m256i *)(present[k] + i))));
        }
        for (int k = 0; k < 8; k += 2) { /* a[k], a[k + 1]: voters k, k + 1 of columns 0-7, 8-15 (+16) */
            a[k] = _mm256_unpacklo_epi8(r[k], r[k + 1]);
            a[k + 1] = _mm256_unpackhi_epi8(r[k], r[k + 1]);
        }
        for (int h = 0; h < 2; h++) { /* b[4h + q]: voters 4h..4h+3 of columns 4q..4q+3 (+16) */
            b[4 * h] = _mm256_unpacklo_epi16(a[4 * h], a[4 * h + 2]);
            b[4 * h + 1] = _mm256_unpackhi_epi16(a[4 * h], a[4 * h + 2]);
            b[4 * h + 2] = _mm256_unpacklo_epi16(a[4 * h + 1], a[4 * h + 3]);
            b[4 * h + 3] = _mm256_unpackhi_epi16(a[4 * h + 1], a[4 * h + 3]);
        }
        for (int q = 0; q < 4; q++) {
            store_columns(_mm256_unpacklo_epi32(b[q], b[q + 4]), out + i * ld, ld, 4 * q);
            store_columns(_mm256_unpackhi_epi32(b[q], b[q + 4]), out + i * ld, ld, 4 * q + 2);
        }
    }
    if (i == n) return;
    const int8_t *rest[8];
    const uint8_t *rest_present[8];
    for (int k = 0; k < 8; k++) {
        rest[k] = v[k] + i;
        rest_present[k] = present ? present[k] + i : NULL;
    }
    egg_voter_rows_scalar(rest, f, present ? rest_present : NULL, n - i, ld, out + i * ld);
}

const egg_kernels egg_kernels_avx2 = {.name = "avx2",
                                      .gemm = gemm_avx2,
                                      .dot = dot_avx2,
                                      .forward_block = egg_forward_block_wide,
                                      .elementwise = &elementwise_avx2,
                                      .peak = peak_avx2,
                                      .stream_words = stream_words_avx2,
                                      .voter_rows = voter_rows_avx2};
const egg_kernels egg_kernels_avxvnni = {.name = "avxvnni",
                                         .gemm = gemm_avxvnni,
                                         .dot = dot_avxvnni,
                                         .forward_block = egg_forward_block_wide,
                                         .elementwise = &elementwise_avx2,
                                         .peak = peak_avxvnni,
                                         .stream_words = stream_words_avx2,
                                         .voter_rows = voter_rows_avx2};
const egg_kernels egg_kernels_avx512vnni = {.name = "avx512vnni",
                                            .gemm = gemm_avx512vnni,
                                            .dot = dot_avx512vnni,
                                            .forward_block = egg_forward_block_wide,
                                            .elementwise = &elementwise_avx512,
                                            .peak = peak_avx512vnni,
                                            .stream_words = stream_words_avx2,
                                            .voter_rows = voter_rows_avx2};
#endif
