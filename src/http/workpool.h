/* A fixed pool of threads for slow, CPU- and memory-heavy work (argon2id
 * password hashing) that must not run on the event loop: at most `threads`
 * jobs run at once and at most `queue` wait, so a flood of requests costs a
 * bounded amount of memory and threads. Results come back on the loop. */
#ifndef CR_HTTP_WORKPOOL_H
#define CR_HTTP_WORKPOOL_H

#include <stddef.h>

struct event_base;
struct cr_workpool;

typedef void (*cr_work_cb)(void *arg);

/* A pool of threads (>= 1) on base, which needs evthread_use_pthreads()
 * before it was created. queue: jobs that may wait beyond those running. */
struct cr_workpool *cr_workpool_new(struct event_base *base, int threads, int queue);

/* Run work(arg) on a pool thread, then done(arg) on base's loop thread.
 * Returns 0, and done is then called exactly once; or -EBUSY when the pool is
 * full, and then neither callback is called (answer 503 with Retry-After). */
int cr_workpool_submit(struct cr_workpool *p, cr_work_cb work, cr_work_cb done, void *arg);

/* Jobs running or waiting now. */
int cr_workpool_load(struct cr_workpool *p);

/* Threads the pool runs. */
int cr_workpool_threads(const struct cr_workpool *p);

/* Wait for the running and queued jobs' work (their done callbacks are not
 * called), stop the threads and free. NULL allowed. */
void cr_workpool_free(struct cr_workpool *p);

#endif
