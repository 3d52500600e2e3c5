/* LD_PRELOAD for tests/test_native_c.py: malloc of FAIL_WORKER_MALLOC_BYTES or more fails on every
 * thread but the main one. A parallel task's allocation then fails exactly when the task runs on a
 * worker thread, whose error message the caller must still see. glibc only (__libc_malloc). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

extern void *__libc_malloc(size_t size);

static size_t fail_from = SIZE_MAX;

__attribute__((constructor)) static void read_limit(void) {
    const char *bytes = getenv("FAIL_WORKER_MALLOC_BYTES");
    if (bytes) fail_from = (size_t)strtoull(bytes, NULL, 10);
}

void *malloc(size_t size) {
    if (size >= fail_from && gettid() != getpid()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_malloc(size);
}
