/* Error reporting: one message per thread, and a parallel task's carried back to its caller. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "egg.h"
#include "error.h"

static _Thread_local char last_error[EGG_ERROR_LEN];

void egg_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

const char *egg_last_error(void) { return last_error; }

void egg_task_failed(egg_task_error *e) {
    if (!atomic_exchange(&e->failed, 1)) memcpy(e->message, last_error, sizeof e->message);
}

int egg_task_error_raise(egg_task_error *e) {
    if (!atomic_load(&e->failed)) return 0;
    memcpy(last_error, e->message, sizeof last_error);
    return -1;
}
