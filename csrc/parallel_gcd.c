/* Parallel loop on Grand Central Dispatch (macOS): no OpenMP runtime to install.
 *
 * dispatch_apply_f runs `workers` invocations of worker() on the global concurrent queue and
 * returns only when all have finished, which also makes their writes visible to the caller.
 * Each worker pulls task indices from a shared counter until none is left, so at most
 * `threads` tasks run at once (the thread count is honoured) and fast workers take more tasks,
 * like OpenMP's schedule(dynamic, 1). Which worker runs a task never changes its result. */
#include <dispatch/dispatch.h>
#include <stdatomic.h>
#include <unistd.h>

#include "egg_internal.h"

typedef struct gcd_job {
    egg_task_fn fn;
    void *ctx;
    int64_t n;
    atomic_llong next; /* next task index to hand out */
} gcd_job;

static void worker(void *context, size_t worker_index) {
    (void)worker_index;
    gcd_job *job = context;
    for (;;) {
        const int64_t i = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
        if (i >= job->n) return;
        job->fn(job->ctx, i);
    }
}

void egg_parallel_for(int64_t n, int32_t threads, egg_task_fn fn, void *ctx) {
    if (threads <= 1 || n <= 1) {
        for (int64_t i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    gcd_job job = {.fn = fn, .ctx = ctx, .n = n};
    atomic_init(&job.next, 0);
    const size_t workers = (size_t)(threads < n ? threads : n);
    /* USER_INITIATED: training is work the user is waiting for, so it gets the performance cores. */
    dispatch_apply_f(workers, dispatch_get_global_queue(QOS_CLASS_USER_INITIATED, 0), &job, worker);
}

const char *egg_parallel_name(void) { return "gcd"; }
int32_t egg_parallel_max_threads(void) { return (int32_t)sysconf(_SC_NPROCESSORS_ONLN); }
