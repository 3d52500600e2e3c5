/* Every kernel this CPU runs must equal egg_kernels_scalar bit for bit, on awkward shapes too:
 * k = 1..70 (K tails), 1..9 rows on both sides (tile edges), ld > k, unaligned rows. Links the
 * core sources directly, no Python, so it also runs cross-compiled under qemu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "egg_internal.h"
#include "rng.h"

#define SENTINEL 0x5A5A5A5A

static uint64_t rng = 0x1234567887654321ULL;

/* Kernel inputs are never -128 (see egg_gemm_fn): draw from [-127, 127]. */
static void fill(int8_t *p, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        rng += EGG_GOLDEN;
        p[i] = (int8_t)((int)(egg_mix64(rng) % 255) - 127);
    }
}

static int failures;

/* Runs kernel k and the scalar kernel on the same inputs; the whole output buffer, padding
 * included, must match (so a kernel that writes outside its rows is caught too). */
static void check_gemm(const egg_kernels *k, int32_t rows_x, int32_t rows_w, int32_t depth, int64_t ldx,
                       int64_t ldw, int64_t ldy, int offset, const int8_t *fixed_value) {
    const size_t nx = (size_t)(rows_x * ldx + offset), nw = (size_t)(rows_w * ldw + offset);
    const size_t ny = (size_t)(rows_x * ldy);
    int8_t *x = malloc(nx), *w = malloc(nw);
    int32_t *y = malloc(ny * sizeof *y), *ref = malloc(ny * sizeof *ref);
    if (!x || !w || !y || !ref) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    if (fixed_value) {
        memset(x, *fixed_value, nx);
        memset(w, *fixed_value, nw);
    } else {
        fill(x, (int64_t)nx);
        fill(w, (int64_t)nw);
    }
    for (size_t i = 0; i < ny; i++) y[i] = ref[i] = SENTINEL;
    egg_kernels_scalar.gemm(rows_x, rows_w, depth, x + offset, ldx, w + offset, ldw, ref, ldy);
    k->gemm(rows_x, rows_w, depth, x + offset, ldx, w + offset, ldw, y, ldy);
    for (size_t i = 0; i < ny; i++)
        if (y[i] != ref[i]) {
            if (failures++ < 10)
                fprintf(stderr, "%s gemm rows_x=%d rows_w=%d k=%d ldx=%lld ldw=%lld ldy=%lld offset=%d: "
                        "y[%zu]=%d, scalar %d\n", k->name, rows_x, rows_w, depth, (long long)ldx,
                        (long long)ldw, (long long)ldy, offset, i, y[i], ref[i]);
            break;
        }
    free(x), free(w), free(y), free(ref);
}

static void check_dot(const egg_kernels *k, int32_t n, int offset) {
    int8_t *a = malloc((size_t)n + 4), *b = malloc((size_t)n + 4);
    fill(a, n + 4);
    fill(b, n + 4);
    const int32_t got = k->dot(a + offset, b + offset, n), want = egg_kernels_scalar.dot(a + offset, b + offset, n);
    if (got != want && failures++ < 10) fprintf(stderr, "%s dot n=%d: %d, scalar %d\n", k->name, n, got, want);
    free(a), free(b);
}

/* ---- the elementwise kernels against egg_elementwise_scalar */

static uint64_t next_random(void) {
    rng += EGG_GOLDEN;
    return egg_mix64(rng);
}

/* n values in [lo, hi]; with `extreme`, each is lo or hi. */
static void fill_range(int8_t *p, int64_t n, int lo, int hi, int extreme) {
    for (int64_t i = 0; i < n; i++)
        p[i] = (int8_t)(extreme ? (next_random() & 1 ? hi : lo) : lo + (int)(next_random() % (uint64_t)(hi - lo + 1)));
}

/* int32 accumulators: random magnitudes from a few units up to about 2^(bits-1). */
static void fill_acc(int32_t *p, int64_t n, int bits) {
    for (int64_t i = 0; i < n; i++) {
        const uint64_t r = next_random();
        p[i] = (int32_t)((int64_t)(r >> 32) >> (32 - (int)(r % (uint64_t)bits + 1)));
    }
}

static int ew_failures;

static void compare(const egg_kernels *k, const char *what, const void *got, const void *want, size_t bytes,
                    int32_t size) {
    if (memcmp(got, want, bytes) && ew_failures++ < 10)
        fprintf(stderr, "%s %s size %d: differs from scalar\n", k->name, what, size);
}

/* Sizes: the widths models have (16, 48, 80, 64, 256), odd widths and counts the SIMD steps do not
 * divide (1, 7, 33), members 1..3; values random or all at the extremes (saturation). */
static int check_elementwise(const egg_kernels *k) {
    const egg_elementwise *e = k->elementwise, *s = &egg_elementwise_scalar;
    const int32_t sizes[] = {1, 7, 16, 33, 48, 64, 80, 256};
    enum { MAX = 3 * 256 + 64 };
    static int8_t a8[MAX], b8[MAX], c8[MAX], d8[MAX], out1[MAX], out2[MAX], h1[MAX], h2[MAX];
    static int32_t acc_a[MAX], acc_b[MAX], acc1[MAX], acc2[MAX];
    static int64_t loss1[4], loss2[4];
    int checks = 0;
    for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++)
        for (int members = 1; members <= 3; members++)
            for (int extreme = 0; extreme <= 1; extreme++) {
                const int32_t h = sizes[z], n = members * h;
                /* L1 norm: mean |x| about 63 (16-bit SIMD path), 20 (32-bit) and 4.5 (the 64-bit path). */
                const int bounds[] = {127, 40, 9};
                for (int range = 0; range < 3; range++, checks++) {
                    fill_range(a8, n, -bounds[range], bounds[range], extreme);
                    fill_range(b8, 2 * n, -127, 127, extreme);
                    s->layer_norm(members, h, a8, b8, h + 3, out1);
                    e->layer_norm(members, h, a8, b8, h + 3, out2);
                    compare(k, "layer_norm", out1, out2, (size_t)n, h);
                }
                /* Rank-1 terms: noise in [-15, 15] (4 noise bits), signs +1, -1 and 0, shifts 0..8; members
                 * 0 and 1 an antithetic pair (the same noise) or not. */
                for (int shift = 0; shift <= 8; shift += 2, checks++) {
                    const int32_t rows = h, cols = sizes[(z + 3) % 8];
                    int8_t noise_buf[3][256 + 256 + 8];
                    const int8_t *noise[3];
                    const int8_t signs[3] = {1, -1, (int8_t)(extreme ? 0 : 1)};
                    for (int i = 0; i < members; i++) {
                        fill_range(noise_buf[i], rows + cols + 8, -15, 15, extreme);
                        noise[i] = i == 1 && shift % 4 ? noise_buf[0] : noise_buf[i];
                    }
                    fill_range(a8, (int64_t)members * cols, -127, 127, extreme);
                    fill_acc(acc1, n, 28);
                    memcpy(acc2, acc1, sizeof(int32_t) * (size_t)n);
                    s->rank1(members, rows, cols, a8, noise, 5, signs, shift, acc1);
                    e->rank1(members, rows, cols, a8, noise, 5, signs, shift, acc2);
                    compare(k, "rank1", acc1, acc2, sizeof(int32_t) * (size_t)n, h);
                }
                /* Perturbed rows: int8 scale and values anywhere in [-127, 127], both signs, shifts 0..16. */
                for (int shift = 0; shift <= 16; shift += 4, checks++) {
                    fill_range(a8, n, -127, 127, extreme);
                    fill_range(b8, n, -127, 127, extreme);
                    const int32_t scale = extreme ? 127 : (int32_t)(next_random() % 255) - 127;
                    const int32_t sign = shift % 8 ? -1 : 1;
                    s->perturbed_row(a8, b8, scale, n, shift, sign, out1);
                    e->perturbed_row(a8, b8, scale, n, shift, sign, out2);
                    compare(k, "perturbed_row", out1, out2, (size_t)n, h);
                }
                for (int sh = 0; sh <= 12; sh += 6, checks += 5) {
                    fill_acc(acc_a, n, extreme ? 32 : 20);
                    fill_acc(acc_b, n, extreme ? 32 : 20);
                    fill_range(b8, 2 * n, -127, 127, extreme);
                    s->gru_combine(members, h, acc_a, acc_b, b8, h + 1, sh, out1);
                    e->gru_combine(members, h, acc_a, acc_b, b8, h + 1, sh, out2);
                    compare(k, "gru_combine", out1, out2, (size_t)n, h);
                    s->shift_sat(acc_a, n, sh, out1);
                    e->shift_sat(acc_a, n, sh, out2);
                    compare(k, "shift_sat", out1, out2, (size_t)n, h);
                    s->relu_shift(acc_a, n, sh, out1);
                    e->relu_shift(acc_a, n, sh, out2);
                    compare(k, "relu_shift", out1, out2, (size_t)n, h);
                    fill_range(c8, n, -127, 127, extreme);
                    memcpy(d8, c8, (size_t)n);
                    s->residual_add(acc_a, n, sh, c8);
                    e->residual_add(acc_a, n, sh, d8);
                    compare(k, "residual_add", c8, d8, (size_t)n, h);
                    fill_range(a8, n, -127, 127, extreme); /* gate */
                    fill_range(b8, n, -127, 127, extreme); /* candidate */
                    fill_range(h1, n, -127, 127, extreme);
                    memcpy(h2, h1, (size_t)n);
                    fill_range(c8, n, -127, 127, extreme);
                    memcpy(d8, c8, (size_t)n);
                    s->gru_update(a8, b8, n, h1, c8);
                    e->gru_update(a8, b8, n, h2, d8);
                    compare(k, "gru_update hidden", h1, h2, (size_t)n, h);
                    compare(k, "gru_update resid", c8, d8, (size_t)n, h);
                }
            }
    /* The loss: random logits, all at either end, and one large logit among small ones. */
    static int8_t logits[3 * EGG_VOCAB];
    uint8_t targets[3];
    for (int round = 0; round < 200; round++, checks++) {
        const int members = 1 + round % 3;
        fill_range(logits, members * EGG_VOCAB, -127, 127, round % 4 == 1);
        if (round % 4 == 2) memset(logits, round % 8 == 2 ? 127 : -127, sizeof logits);
        if (round % 4 == 3) {
            memset(logits, -127, sizeof logits);
            logits[round % EGG_VOCAB] = 127;
        }
        for (int i = 0; i < members; i++) targets[i] = (uint8_t)next_random();
        s->token_losses(members, logits, targets, loss1);
        e->token_losses(members, logits, targets, loss2);
        compare(k, "token_losses", loss1, loss2, sizeof(int64_t) * (size_t)members, members);
    }
    printf("kernel %-8s %d elementwise cases: %s\n", k->name, checks, ew_failures ? "MISMATCH" : "equal to scalar");
    const int bad = ew_failures != 0;
    ew_failures = 0;
    return bad;
}

/* The peak microkernel bench.c times: it must be there, run, and count the same MACs every round. */
static int check_peak(const egg_kernels *k) {
    int32_t sink;
    const int64_t once = k->peak ? k->peak(1, &sink) : 0;
    const int64_t many = k->peak ? k->peak(1000, &sink) : 0;
    const int ok = once > 0 && many == 1000 * once;
    printf("kernel %-8s peak microkernel: %lld MACs per round%s\n", k->name, (long long)once, ok ? "" : ": WRONG");
    return !ok;
}

/* The kernel's stream words equal egg_stream_words (rng.c): every start mod 8, lengths across the
 * 4-word SIMD step and its tail, raw bytes and every noise mask; bytes past the end stay untouched. */
static int check_stream_words(const egg_kernels *k) {
    uint8_t got[80 * 8 + 8], want[80 * 8 + 8];
    int cases = 0, bad = 0;
    for (uint64_t key = 0; key < 3; key++)
        for (int64_t w0 = 0; w0 < 8; w0++)
            for (int64_t n = 0; n <= 80; n += 1 + n / 8)
                for (int bits = 0; bits <= EGG_MAX_NOISE_BITS; bits++, cases++) {
                    const uint64_t masks = bits ? (uint64_t)((1 << bits) - 1) * 0x0101010101010101ULL : 0;
                    const uint64_t seed = egg_mix64(key);
                    memset(got, 0xA5, sizeof got);
                    memset(want, 0xA5, sizeof want);
                    k->stream_words(seed, w0 * 1000003, w0 * 1000003 + n, masks, got);
                    egg_stream_words(seed, w0 * 1000003, w0 * 1000003 + n, masks, want);
                    bad += memcmp(got, want, sizeof got) != 0;
                }
    printf("kernel %-8s stream words: %d cases: %s\n", k->name, cases, bad ? "MISMATCH" : "equal to scalar");
    return bad != 0;
}

/* The kernel's voter_rows equals its definition (egg_voter_rows_fn), written out byte by byte: lengths
 * across the 8- and 32-value steps and their tails, unsigned, signed by every fitness a noise range allows
 * (up to |f| = 127 with values of +-1), with and without window masks; bytes outside the written ones stay. */
static int check_voter_rows(const egg_kernels *k) {
    enum { MAX_N = 100, LD = 11 };
    static int8_t noise[8][MAX_N], got[MAX_N * LD], want[MAX_N * LD];
    static uint8_t windows[8][MAX_N];
    const int8_t *v[8];
    const uint8_t *present[8];
    int8_t f[8];
    int cases = 0, bad = 0;
    for (int bits = 1; bits <= EGG_MAX_NOISE_BITS; bits++) {
        const int top = (1 << bits) - 1, f_max = EGG_MAX_FITNESS_NOISE / top;
        for (int32_t n = 0; n <= MAX_N; n += 1 + n / 16)
            for (int mode = 0; mode < 4; mode++, cases++) { /* unsigned, signed, masked unsigned, masked signed */
                for (int r = 0; r < 8; r++) {
                    fill_range(noise[r], MAX_N, -top, top, n % 3 == 0);
                    for (int32_t i = 0; i < MAX_N; i++) windows[r][i] = (uint8_t)(next_random() & 1);
                    f[r] = (int8_t)(r < 2 ? (r ? -f_max : f_max) : (int)(next_random() % (2 * f_max + 1)) - f_max);
                    v[r] = noise[r];
                    present[r] = windows[r];
                }
                const int8_t *signs = mode & 1 ? f : NULL;
                const uint8_t *const *masks = mode & 2 ? present : NULL;
                memset(got, 0x5A, sizeof got);
                memset(want, 0x5A, sizeof want);
                for (int32_t i = 0; i < n; i++)
                    for (int r = 0; r < 8; r++)
                        want[i * LD + r] = masks && !windows[r][i] ? 0 : (int8_t)((signs ? f[r] : 1) * noise[r][i]);
                k->voter_rows(v, signs, masks, n, LD, got);
                bad += memcmp(got, want, sizeof got) != 0;
            }
    }
    printf("kernel %-8s voter rows: %d cases: %s\n", k->name, cases, bad ? "MISMATCH" : "equal to their definition");
    return bad != 0;
}

/* The rank-1 terms of whole blocks as a training step lays them out: runs of antithetic pairs (the
 * same noise, signs +1 then -1) broken by a member with no sign, a pair with different noise, a lone
 * member and a pair in the wrong order; rows and columns multiples of 32 (the presets' tensors, which
 * take a path without tails) and not, noise at its extremes or not. */
static int check_rank1_blocks(const egg_kernels *k) {
    enum { MEMBERS = 11, MAX = 288 };
    const int32_t sizes[] = {32, 64, 96, 128, 256, 288, 16, 40, 33, 7};
    static int8_t x[MEMBERS * MAX], noise_buf[MEMBERS][2 * MAX + 8];
    static int32_t acc1[MEMBERS * MAX], acc2[MEMBERS * MAX];
    /* members 0-5: three pairs; 6: no sign; 7, 8: +1, -1 with different noise; 9, 10: -1, +1 */
    const int8_t signs[MEMBERS] = {1, -1, 1, -1, 1, -1, 0, 1, -1, -1, 1};
    const int8_t *noise[MEMBERS];
    int cases = 0, bad = 0;
    for (size_t r = 0; r < sizeof sizes / sizeof sizes[0]; r++)
        for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++)
            for (int members = 1; members <= MEMBERS; members += 1 + (members > 2) * 3, cases++) {
                const int32_t rows = sizes[r], cols = sizes[c], shift = (int32_t)(r + c) % 5;
                const int extreme = (r + c) % 3 == 0;
                for (int i = 0; i < MEMBERS; i++) {
                    fill_range(noise_buf[i], rows + cols + 8, -15, 15, extreme);
                    const int paired = i % 2 && i < 6;
                    noise[i] = paired || i == 10 ? noise_buf[i - 1] : noise_buf[i];
                }
                fill_range(x, (int64_t)members * cols, -127, 127, extreme);
                fill_acc(acc1, (int64_t)members * rows, 28);
                memcpy(acc2, acc1, sizeof(int32_t) * (size_t)(members * rows));
                egg_elementwise_scalar.rank1(members, rows, cols, x, noise, 3, signs, shift, acc1);
                k->elementwise->rank1(members, rows, cols, x, noise, 3, signs, shift, acc2);
                if (memcmp(acc1, acc2, sizeof(int32_t) * (size_t)(members * rows)) && bad++ < 10)
                    fprintf(stderr, "%s rank1 members=%d rows=%d cols=%d: differs from scalar\n", k->name, members,
                            rows, cols);
            }
    printf("kernel %-8s rank-1 blocks: %d cases: %s\n", k->name, cases, bad ? "MISMATCH" : "equal to scalar");
    return bad != 0;
}

/* The L1 norm at every mean |x| an int8 row can have (1..127, each of the SIMD paths and their
 * boundaries: 8, 16, 32, 33), x of exactly that magnitude with random signs, spread around it, or
 * +-127 and 0 in the proportion of the mean (the largest products at a small mean), and w random or at
 * the extremes; widths with and without SIMD tails. */
static int check_layer_norm_means(const egg_kernels *k) {
    enum { H = 80, MEMBERS = 2 };
    static int8_t x[MEMBERS * H], w[MEMBERS * H], out1[MEMBERS * H], out2[MEMBERS * H];
    const int32_t widths[] = {64, 32, 48, 80, 33};
    int cases = 0, bad = 0;
    for (int mean = 1; mean <= 127; mean++)
        for (size_t z = 0; z < sizeof widths / sizeof widths[0]; z++)
            for (int spread = 0; spread <= 2; spread++, cases++) {
                const int32_t h = widths[z];
                for (int64_t i = 0; i < MEMBERS * h; i++) {
                    const int lo = spread && mean > 1 ? mean / 2 : mean, hi = spread ? mean + (127 - mean) / 2 : mean;
                    int v = lo + (int)(next_random() % (uint64_t)(hi - lo + 1));
                    if (spread == 2) v = (int)(next_random() % 127) < mean ? 127 : 0; /* the largest products */
                    x[i] = (int8_t)(next_random() & 1 ? v : -v);
                }
                fill_range(w, MEMBERS * h, -127, 127, spread);
                egg_elementwise_scalar.layer_norm(MEMBERS, h, x, w, h, out1);
                k->elementwise->layer_norm(MEMBERS, h, x, w, h, out2);
                if (memcmp(out1, out2, (size_t)(MEMBERS * h)) && bad++ < 10)
                    fprintf(stderr, "%s layer_norm mean |x| ~%d h=%d: differs from scalar\n", k->name, mean, h);
            }
    printf("kernel %-8s L1 norm means: %d cases: %s\n", k->name, cases, bad ? "MISMATCH" : "equal to scalar");
    return bad != 0;
}

static int check_kernel(const char *name) {
    if (egg_force_kernel(name)) {
        fprintf(stderr, "%s\n", egg_last_error());
        return 1;
    }
    const egg_kernels *k = egg_active_kernels();
    const int before = failures;
    int gemms = 0, dots = 0;
    for (int32_t depth = 1; depth <= 70; depth++)
        for (int32_t rows_x = 1; rows_x <= 9; rows_x++)
            for (int32_t rows_w = 1; rows_w <= 9; rows_w++, gemms++) {
                /* Vary the padding and alignment with the shape rather than multiplying the cases. */
                const int pad = (depth + rows_x + rows_w) % 4;
                check_gemm(k, rows_x, rows_w, depth, depth + pad, depth + 3 * pad, rows_w + pad, pad, NULL);
            }
    /* Model-sized shapes: full tiles over long rows, and a vote-like GEMM with a short K. */
    const int32_t big[][3] = {{16, 64, 512}, {13, 37, 2048}, {5, 256, 1024 + 7}, {128, 33, 64}, {64, 96, 31}};
    for (size_t s = 0; s < sizeof big / sizeof big[0]; s++, gemms++)
        check_gemm(k, big[s][0], big[s][1], big[s][2], big[s][2] + 1, big[s][2], big[s][1], 1, NULL);
    /* Largest products everywhere: would expose an int16 overflow in a widening kernel. */
    const int8_t extremes[] = {127, -127};
    for (int e = 0; e < 2; e++, gemms++) check_gemm(k, 4, 4, 4096 + 9, 4096 + 9, 4096 + 9, 4, 0, &extremes[e]);
    for (int32_t n = 0; n <= 300; n++, dots++) check_dot(k, n, n % 4);
    printf("kernel %-8s %d gemm shapes, %d dot lengths: %s\n", name, gemms, dots,
           failures == before ? "equal to scalar" : "MISMATCH");
    return (failures != before) | check_elementwise(k) | check_rank1_blocks(k) | check_layer_norm_means(k) |
           check_peak(k) | check_stream_words(k) | check_voter_rows(k);
}

/* egg_floor_div against the integer divide: every divisor near 1, powers of two, primes and the range's
 * ends, with dividends at and around multiples of it (where a rounded quotient would cross an integer),
 * 0 and the largest in range, and a pseudo-random sweep. */
static int check_floor_div(void) {
    const int64_t top = (1LL << 50) - 1;
    const int64_t divisors[] = {1, 2, 3, 5, 7, 10, 255, 256, 257, 1023, 1907, 65521, 65536, 65537,
                                (1LL << 31) - 1, 1LL << 39, (1LL << 49) + 1, top - 1, top};
    int64_t checks = 0, bad = 0;
    const size_t n_div = sizeof divisors / sizeof divisors[0];
    for (int64_t d = 1; d <= 4096 + (int64_t)n_div; d++) {
        const int64_t div = d <= 4096 ? d : divisors[d - 4097];
        const double recip = 1.0 / (double)div;
        const int64_t bases[] = {0, 1, div, 2 * div, top / div * div, (top / div - 1) * div, top, top - 1,
                                 (1LL << 39) - 1, ((1LL << 39) - 1) / div * div};
        for (size_t b = 0; b < sizeof bases / sizeof bases[0]; b++)
            for (int64_t off = -2; off <= 2; off++) {
                const int64_t n = bases[b] + off;
                if (n < 0 || n > top) continue;
                checks++;
                if (egg_floor_div(n, div, recip) != n / div && bad++ < 10)
                    fprintf(stderr, "floor_div(%lld, %lld) = %lld, not %lld\n", (long long)n, (long long)div,
                            (long long)egg_floor_div(n, div, recip), (long long)(n / div));
            }
    }
    uint64_t x = 0x243F6A8885A308D3ULL;
    for (int i = 0; i < 1000000; i++) {
        x = egg_mix64(x);
        const int64_t n = (int64_t)(x >> 14), div = 1 + (int64_t)(egg_mix64(x) >> (14 + (x & 31)));
        checks++;
        if (egg_floor_div(n, div, 1.0 / (double)div) != n / div && bad++ < 10)
            fprintf(stderr, "floor_div(%lld, %lld) wrong\n", (long long)n, (long long)div);
    }
    printf("floor_div: %lld cases: %s\n", (long long)checks, bad ? "MISMATCH" : "equal to the integer divide");
    return bad != 0;
}

int main(void) {
    char names[256];
    snprintf(names, sizeof names, "%s", egg_available_kernels());
    printf("available kernels: %s\n", names);
#if defined(__aarch64__)
    printf("neon dotprod: %d\n", egg_neon_dotprod());
#endif
    int bad = check_floor_div();
    for (char *name = strtok(names, ","); name; name = strtok(NULL, ",")) bad |= check_kernel(name);
    return bad;
}
