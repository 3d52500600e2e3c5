/* Parallel loop on Grand Central Dispatch (macOS). `threads` workers pull
 * task indices from a shared counter, so the thread count is honoured. */
#include <dispatch/dispatch.h>
#include <stdatomic.h>
#include <unistd.h>

#include "egg_internal.h"

typedef struct gcd_job {
    egg_task_fn fn;
    void *ctx;
    int64_t n;
    atomic_llong next;
} gcd_job;

static void worker(void *context, size_t worker_index) {
    (void)worker_index;
    gcd_job *job = context;
    for (int64_t i; (i = atomic_fetch_add(&job->next, 1)) < job->n;) job->fn(job->ctx, i);
}

void egg_parallel_for(int64_t n, int32_t threads, egg_task_fn fn, void *ctx) {
    if (threads <= 1 || n <= 1) {
        for (int64_t i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    gcd_job job = {fn, ctx, n, 0};
    dispatch_apply_f((size_t)(threads < n ? threads : n),
                     dispatch_get_global_queue(QOS_CLASS_USER_INITIATED, 0), &job, worker);
}

const char *egg_parallel_name(void) { return "gcd"; }
int32_t egg_parallel_max_threads(void) { return (int32_t)sysconf(_SC_NPROCESSORS_ONLN); }
