/* Parallel loop on OpenMP (Linux and other non-Apple platforms). */
#include <omp.h>

#include "egg_internal.h"

void egg_parallel_for(int64_t n, int32_t threads, egg_task_fn fn, void *ctx) {
    if (threads <= 1 || n <= 1) {
        for (int64_t i = 0; i < n; i++) fn(ctx, i);
        return;
    }
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t i = 0; i < n; i++) fn(ctx, i);
}

const char *egg_parallel_name(void) { return "openmp"; }
int32_t egg_parallel_max_threads(void) { return omp_get_num_procs(); }
