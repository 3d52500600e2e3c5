/* Kernel selection: MLM_KERNEL forces one, otherwise the best the CPU runs.
 *
 * Names: "avxvnni", "avx512vnni", "avx2" (x86-64), "neon" (arm64), "scalar"
 * (everywhere). egg_force_kernel() refuses a kernel this build or CPU lacks
 * with an error naming the available ones. MLM_KERNEL is read once, when the
 * library loads; a name that cannot be used there is reported on stderr and
 * the automatic choice is kept, because a library load cannot fail. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "egg_internal.h"
#include "error.h"

/* mlm.env.KERNEL on the Python side. */
#define KERNEL_ENV "MLM_KERNEL"

/* Each instruction-set file defines its tables and run-time support checks. */
#if defined(__x86_64__) || defined(_M_X64)
extern const egg_kernels egg_kernels_avx2, egg_kernels_avxvnni, egg_kernels_avx512vnni;
int egg_cpu_has_avx2(void);
int egg_cpu_has_avxvnni(void);
int egg_cpu_has_avx512vnni(void);
#endif
#if defined(__aarch64__)
extern const egg_kernels egg_kernels_neon;
#endif

typedef struct candidate {
    const egg_kernels *kernels;
    int (*supported)(void);
} candidate;

static int always(void) { return 1; }

/* Best first. The two VNNI kernels run the same 256-bit code; the VEX one comes
 * first because it never wakes the AVX-512 unit. */
static const candidate CANDIDATES[] = {
#if defined(__aarch64__)
    {&egg_kernels_neon, always},
#endif
#if defined(__x86_64__) || defined(_M_X64)
    {&egg_kernels_avxvnni, egg_cpu_has_avxvnni},
    {&egg_kernels_avx512vnni, egg_cpu_has_avx512vnni},
    {&egg_kernels_avx2, egg_cpu_has_avx2},
#endif
    {&egg_kernels_scalar, always},
};
#define N_CANDIDATES (sizeof CANDIDATES / sizeof CANDIDATES[0])

/* Every kernel of every platform, to tell "not built here" from a typo. */
static const char *const ALL_NAMES[] = {"avxvnni", "avx512vnni", "avx2", "neon", "scalar"};

static const egg_kernels *active = &egg_kernels_scalar;

int egg_force_kernel(const char *name) {
    for (size_t i = 0; i < N_CANDIDATES; i++)
        if (!strcmp(CANDIDATES[i].kernels->name, name)) {
            if (!CANDIDATES[i].supported()) {
                egg_set_error("kernel %s is not supported by this CPU (available: %s)", name,
                              egg_available_kernels());
                return -1;
            }
            active = CANDIDATES[i].kernels;
            return 0;
        }
    for (size_t i = 0; i < sizeof ALL_NAMES / sizeof ALL_NAMES[0]; i++)
        if (!strcmp(ALL_NAMES[i], name)) {
            egg_set_error("kernel %s is not built for this platform (available: %s)", name,
                          egg_available_kernels());
            return -1;
        }
    egg_set_error("unknown kernel %s (available: %s)", name, egg_available_kernels());
    return -1;
}

/* Runs when the library loads, before any thread can ask for a kernel. */
__attribute__((constructor)) static void choose_kernel(void) {
    const char *forced = getenv(KERNEL_ENV);
    if (forced && *forced) {
        if (egg_force_kernel(forced) == 0) return;
        fprintf(stderr, "mlm: ignoring " KERNEL_ENV "=%s: %s\n", forced, egg_last_error());
    }
    for (size_t i = 0; i < N_CANDIDATES; i++)
        if (CANDIDATES[i].supported()) {
            active = CANDIDATES[i].kernels;
            return;
        }
}

const egg_kernels *egg_active_kernels(void) { return active; }

const char *egg_kernel_name(void) { return egg_active_kernels()->name; }

const char *egg_available_kernels(void) {
    static char names[128];
    names[0] = 0;
    for (size_t i = 0; i < N_CANDIDATES; i++) {
        if (!CANDIDATES[i].supported()) continue;
        if (names[0]) strcat(names, ",");
        strcat(names, CANDIDATES[i].kernels->name);
    }
    return names;
}
