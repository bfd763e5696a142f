/* The fixed work pool: a mutex-guarded FIFO of jobs, `threads` threads taking
 * from it, and one event per job that brings its completion back to the
 * loop. See workpool.h. */
#include "http/workpool.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/log.h"
#include "base/mem.h"

struct job {
	cr_work_cb work, done;
	void *arg;
	struct event *ev;
	struct job *next;
};

struct cr_workpool {
	struct event_base *base;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *head, *tail;
	int waiting, running, queue_max, nthreads;
	bool stopping;
	pthread_t *threads;
};

static void job_done(evutil_socket_t fd, short what, void *arg)
{
	struct job *j = arg;
	(void)fd;
	(void)what;
	event_free(j->ev);
	j->done(j->arg);
	free(j);
}

static void *pool_thread(void *arg)
{
	struct cr_workpool *p = arg;
	/* below the event loop: a flood of slow work must not delay its answers
	 * (on Linux the nice value is per thread) */
	if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10) != 0)
		cr_debug("setpriority for a pool thread failed: %s", strerror(errno));
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->head && !p->stopping)
			pthread_cond_wait(&p->cv, &p->mu);
		if (!p->head)
			break;
		struct job *j = p->head;
		p->head = j->next;
		if (!p->head)
			p->tail = NULL;
		p->waiting--;
		p->running++;
		pthread_mutex_unlock(&p->mu);
		j->work(j->arg);
		pthread_mutex_lock(&p->mu);
		p->running--;
		if (p->stopping) { /* the loop is going away: nobody to tell */
			event_free(j->ev);
			free(j);
			continue;
		}
		event_active(j->ev, EV_TIMEOUT, 0);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

struct cr_workpool *cr_workpool_new(struct event_base *base, int threads, int queue)
{
	struct cr_workpool *p = cr_xcalloc(1, sizeof(*p));
	p->base = base;
	p->nthreads = threads > 0 ? threads : 1;
	p->queue_max = queue > 0 ? queue : 0;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->threads = cr_xcalloc((size_t)p->nthreads, sizeof(*p->threads));
	for (int i = 0; i < p->nthreads; i++)
		if (pthread_create(&p->threads[i], NULL, pool_thread, p) != 0)
			abort(); /* like out of memory: nothing sensible to do */
	return p;
}

int cr_workpool_submit(struct cr_workpool *p, cr_work_cb work, cr_work_cb done, void *arg)
{
	pthread_mutex_lock(&p->mu);
	/* the queue counts jobs beyond those a free thread takes at once */
	if (p->waiting + p->running >= p->nthreads + p->queue_max) {
		pthread_mutex_unlock(&p->mu);
		return -EBUSY;
	}
	struct job *j = cr_xcalloc(1, sizeof(*j));
	j->work = work;
	j->done = done;
	j->arg = arg;
	j->ev = event_new(p->base, -1, 0, job_done, j);
	if (p->tail)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	p->waiting++;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return 0;
}

int cr_workpool_load(struct cr_workpool *p)
{
	pthread_mutex_lock(&p->mu);
	int n = p->waiting + p->running;
	pthread_mutex_unlock(&p->mu);
	return n;
}

int cr_workpool_threads(const struct cr_workpool *p)
{
	return p->nthreads;
}

void cr_workpool_free(struct cr_workpool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	/* jobs still queued were run by the threads before they stopped; jobs
	 * done but whose event did not fire yet are freed here */
	free(p->threads);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p);
}
