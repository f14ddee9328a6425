/*
 * worker.h - a small thread pool for work that must not run on the event
 * loop (Argon2id password hashing, tens of milliseconds each).
 *
 * run() executes on a worker thread and must touch nothing of the loop's;
 * done() then executes on the loop thread, woken through
 * lws_cancel_service().
 *
 * The queue is fair and bounded.  Each item carries a key (the caller's
 * address): items wait in one queue per key, and the threads take from the
 * keys in turn, so a flood from some addresses delays another address's
 * item by at most one item per busy key, not by the whole flood.  A key
 * may have at most max_per_key items waiting, and all keys together
 * max_queued: past either, submit fails at once and the caller answers
 * "rate_limited" rather than queueing behind the flood.
 */
#ifndef AD_WORKER_H
#define AD_WORKER_H

#include <stdbool.h>
#include <stdint.h>

struct ad_work {
	void (*run)(struct ad_work *w);  /* on a worker thread */
	void (*done)(struct ad_work *w); /* on the loop thread, after run */
	struct ad_work *next;            /* owned by the pool while queued */
	uint64_t key;                    /* fairness key, set by submit */
	bool ran;                        /* false if shut down before running */
};

/* Starts n threads; 0 or -1. */
int ad_worker_init(int n, int max_queued, int max_per_key);
/*
 * Queues w under key; false if a limit is reached or the pool is stopped.
 * An urgent item goes ahead of every ordinary one (its own FIFO, bounded
 * by max_queued too): for work its submitter knows is wanted, which no
 * flood of ordinary work may delay.
 */
bool ad_worker_submit(struct ad_work *w, uint64_t key, bool urgent);
/* Runs done() for every finished item; call from the loop thread. */
void ad_worker_reap(void);
/* Stops the threads; items not started are completed with run() skipped. */
void ad_worker_shutdown(void);

/* Items waiting (not started), for /metrics. */
int ad_worker_queued(void);

#endif
