/* A pthread stand-in for the two libdispatch calls csrc/parallel_gcd.c makes, with Apple's
 * signatures, so the GCD parallel loop compiles and runs in Linux tests. Like the real
 * dispatch_apply_f, it returns only after every invocation has finished. */
#ifndef FAKE_DISPATCH_H
#define FAKE_DISPATCH_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef enum { QOS_CLASS_USER_INITIATED = 0x19 } qos_class_t; /* <sys/qos.h> */
typedef struct dispatch_queue_s *dispatch_queue_t;

static inline dispatch_queue_t dispatch_get_global_queue(intptr_t identifier, uintptr_t flags) {
    (void)identifier, (void)flags;
    return NULL;
}

typedef struct fake_apply {
    void *context;
    void (*work)(void *, size_t);
    size_t iteration;
} fake_apply;

static inline void *fake_apply_thread(void *arg) {
    fake_apply *a = arg;
    a->work(a->context, a->iteration);
    return NULL;
}

static inline void dispatch_apply_f(size_t iterations, dispatch_queue_t queue, void *context,
                                    void (*work)(void *context, size_t iteration)) {
    (void)queue;
    pthread_t *threads = calloc(iterations, sizeof *threads);
    fake_apply *args = calloc(iterations, sizeof *args);
    if (!threads || !args) abort();
    for (size_t i = 0; i < iterations; i++) {
        args[i] = (fake_apply){context, work, i};
        if (pthread_create(&threads[i], NULL, fake_apply_thread, &args[i])) abort();
    }
    for (size_t i = 0; i < iterations; i++) pthread_join(threads[i], NULL);
    free(threads);
    free(args);
}

#endif
