/* Parallel loop fallback when neither OpenMP nor GCD is available. */
#include <unistd.h>

#include "egg_internal.h"

void egg_parallel_for(int64_t n, int32_t threads, egg_task_fn fn, void *ctx) {
    (void)threads;
    for (int64_t i = 0; i < n; i++) fn(ctx, i);
}

const char *egg_parallel_name(void) { return "serial"; }
int32_t egg_parallel_max_threads(void) { return 1; }
