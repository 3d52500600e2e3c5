/* Kernel selection: MLM_KERNEL forces one, otherwise the best the CPU runs. */
#include <stdlib.h>
#include <string.h>

#include "egg_internal.h"

/* Each instruction-set file defines its table and a run-time support check. */
#if defined(__x86_64__) || defined(_M_X64)
extern const egg_kernels egg_kernels_avx2;
int egg_cpu_has_avx2(void);
#endif
#if defined(__aarch64__)
extern const egg_kernels egg_kernels_neon;
#endif

typedef struct candidate {
    const egg_kernels *kernels;
    int (*supported)(void);
} candidate;

static int always(void) { return 1; }

/* Best first. */
static const candidate CANDIDATES[] = {
#if defined(__aarch64__)
    {&egg_kernels_neon, always},
#endif
#if defined(__x86_64__) || defined(_M_X64)
    {&egg_kernels_avx2, egg_cpu_has_avx2},
#endif
    {&egg_kernels_scalar, always},
};
#define N_CANDIDATES (sizeof CANDIDATES / sizeof CANDIDATES[0])

static const egg_kernels *active;

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
    egg_set_error("unknown kernel %s (available: %s)", name, egg_available_kernels());
    return -1;
}

const egg_kernels *egg_active_kernels(void) {
    if (active) return active;
    const char *forced = getenv("MLM_KERNEL");
    if (forced && *forced && egg_force_kernel(forced) == 0) return active;
    for (size_t i = 0; i < N_CANDIDATES; i++)
        if (CANDIDATES[i].supported()) return active = CANDIDATES[i].kernels;
    return active = &egg_kernels_scalar;
}

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
