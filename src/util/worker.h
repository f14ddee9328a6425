/*
 * worker.h - a small thread pool for work that must not run on the event
 * loop (Argon2id password hashing, tens of milliseconds each).
 *
 * run() executes on a worker thread and must touch nothing of the loop's;
 * done() then executes on the loop thread, woken through
 * lws_cancel_service().  The queue is bounded: when it is full, submit
 * fails and the caller answers "unavailable" rather than queueing forever.
 */
#ifndef AD_WORKER_H
#define AD_WORKER_H

#include <stdbool.h>

struct ad_work {
	void (*run)(struct ad_work *w);  /* on a worker thread */
	void (*done)(struct ad_work *w); /* on the loop thread, after run */
	struct ad_work *next;            /* owned by the pool while queued */
	bool ran;                        /* false if shut down before running */
};

/* Starts n threads; 0 or -1. */
int ad_worker_init(int n, int max_queued);
/* Queues w; false if the queue is full or the pool is stopped. */
bool ad_worker_submit(struct ad_work *w);
/* Runs done() for every finished item; call from the loop thread. */
void ad_worker_reap(void);
/* Stops the threads; items not started are completed with run() skipped. */
void ad_worker_shutdown(void);

#endif
