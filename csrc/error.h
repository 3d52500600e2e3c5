/* Error reporting inside the core (error.c): the message egg_last_error() returns (egg.h). */
#ifndef EGG_ERROR_H
#define EGG_ERROR_H

#include <stdatomic.h>

#define EGG_ERROR_LEN 256
/* egg_set_error writes the calling thread's message: the one egg_last_error() returns there. */
void egg_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A parallel task may run on another thread than its caller, so a failing task hands its thread's
 * message to the job (the first failure's message is kept) and the caller raises it on its own
 * thread when the loop is over: -1 with the message set, or 0 when no task failed. */
typedef struct egg_task_error {
    atomic_int failed;
    char message[EGG_ERROR_LEN];
} egg_task_error;
void egg_task_failed(egg_task_error *e);
int egg_task_error_raise(egg_task_error *e);

#endif
