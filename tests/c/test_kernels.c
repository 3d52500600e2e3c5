/* Every kernel this CPU runs must equal egg_kernels_scalar bit for bit, on awkward shapes too:
 * k = 1..70 (K tails), 1..9 rows on both sides (tile edges), ld > k, unaligned rows. Links the
 * core sources directly, no Python, so it also runs cross-compiled under qemu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "egg_internal.h"

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
    return failures != before;
}

int main(void) {
    char names[256];
    snprintf(names, sizeof names, "%s", egg_available_kernels());
    printf("available kernels: %s\n", names);
#if defined(__aarch64__)
    printf("neon dotprod: %d\n", egg_neon_dotprod());
#endif
    int bad = 0;
    for (char *name = strtok(names, ","); name; name = strtok(NULL, ",")) bad |= check_kernel(name);
    return bad;
}
