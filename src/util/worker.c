/*
 * worker.c - the off-loop thread pool, fair between keys (see worker.h).
 *
 * Waiting items sit in per-key FIFOs; the keys with items form a ring that
 * the threads walk, taking one item from each key in turn.  There are never
 * more keys in use than items waiting, so the key table is bounded by
 * max_queued and searched linearly (it is small, and touched only at
 * submit and take, under the lock).
 */
#include "worker.h"
#include "loop.h"

#include <pthread.h>
#include <stdlib.h>

struct keyq {
	uint64_t key;
	struct ad_work *head, *tail;
	int count;              /* 0: the slot is free */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static struct keyq *keys;       /* max_queue slots */
static struct keyq urgent_q;    /* served before any key */
static int turn;                /* the slot the next take starts looking at */
static struct ad_work *done_head, *done_tail;
static int waiting, max_queue, max_per_key, nthreads;
static bool stopping;
static pthread_t threads[16];

static void push(struct ad_work **head, struct ad_work **tail, struct ad_work *w)
{
	w->next = NULL;
	if (*tail)
		(*tail)->next = w;
	else
		*head = w;
	*tail = w;
}

static struct ad_work *pop(struct ad_work **head, struct ad_work **tail)
{
	struct ad_work *w = *head;

	if (w) {
		*head = w->next;
		if (!*head)
			*tail = NULL;
	}
	return w;
}

/* The next waiting item, taking keys in turn; NULL if none.  Locked. */
static struct ad_work *take(void)
{
	if (urgent_q.count) {
		urgent_q.count--;
		waiting--;
		return pop(&urgent_q.head, &urgent_q.tail);
	}
	for (int i = 0; i < max_queue && waiting; i++) {
		struct keyq *q = &keys[(turn + i) % max_queue];
		struct ad_work *w;

		if (!q->count)
			continue;
		w = pop(&q->head, &q->tail);
		q->count--;
		waiting--;
		turn = (turn + i + 1) % max_queue;
		return w;
	}
	return NULL;
}

static void *worker_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lock);
	for (;;) {
		struct ad_work *w;

		while (!waiting && !stopping)
			pthread_cond_wait(&wake, &lock);
		if (stopping)
			break;
		w = take();
		pthread_mutex_unlock(&lock);
		w->run(w);
		w->ran = true;
		pthread_mutex_lock(&lock);
		push(&done_head, &done_tail, w);
		/* Wake the loop; lws_cancel_service() is safe from any thread. */
		if (ad_loop)
			lws_cancel_service(ad_loop);
	}
	pthread_mutex_unlock(&lock);
	return NULL;
}

int ad_worker_init(int n, int max_queued, int per_key)
{
	if (n < 1)
		n = 1;
	if (n > 16)
		n = 16;
	max_queue = max_queued > 0 ? max_queued : 1;
	max_per_key = per_key > 0 ? per_key : 1;
	if (!(keys = calloc((size_t)max_queue, sizeof(*keys))))
		return -1;
	stopping = false;
	for (nthreads = 0; nthreads < n; nthreads++)
		if (pthread_create(&threads[nthreads], NULL, worker_main, NULL))
			return -1;
	return 0;
}

bool ad_worker_submit(struct ad_work *w, uint64_t key, bool urgent)
{
	struct keyq *q = NULL, *free_slot = NULL;
	bool ok = false;

	pthread_mutex_lock(&lock);
	if (stopping || !keys || (!urgent && waiting - urgent_q.count >= max_queue) ||
	    (urgent && urgent_q.count >= max_queue))
		goto out;
	if (urgent) {
		q = &urgent_q;
		goto queue;
	}
	for (int i = 0; i < max_queue; i++) {
		if (keys[i].count && keys[i].key == key) {
			q = &keys[i];
			break;
		}
		if (!keys[i].count && !free_slot)
			free_slot = &keys[i];
	}
	if (!q) {
		/* There is one: fewer keys are in use than items wait. */
		if (!(q = free_slot))
			goto out;
		q->key = key;
	}
	if (q->count >= max_per_key)
		goto out;
queue:
	w->ran = false;
	w->key = key;
	push(&q->head, &q->tail, w);
	q->count++;
	waiting++;
	pthread_cond_signal(&wake);
	ok = true;
out:
	pthread_mutex_unlock(&lock);
	return ok;
}

int ad_worker_queued(void)
{
	int n;

	pthread_mutex_lock(&lock);
	n = waiting;
	pthread_mutex_unlock(&lock);
	return n;
}

void ad_worker_reap(void)
{
	for (;;) {
		struct ad_work *w;

		pthread_mutex_lock(&lock);
		w = pop(&done_head, &done_tail);
		pthread_mutex_unlock(&lock);
		if (!w)
			return;
		w->done(w);
	}
}

void ad_worker_shutdown(void)
{
	struct ad_work *w;

	pthread_mutex_lock(&lock);
	stopping = true;
	pthread_cond_broadcast(&wake);
	pthread_mutex_unlock(&lock);
	for (int i = 0; i < nthreads; i++)
		pthread_join(threads[i], NULL);
	nthreads = 0;
	/* Whatever never ran still gets its completion. */
	while ((w = keys ? take() : NULL))
		push(&done_head, &done_tail, w);
	ad_worker_reap();
	free(keys);
	keys = NULL;
}
