/*
 * worker.c - the off-loop thread pool.
 */
#include "worker.h"
#include "loop.h"

#include <pthread.h>
#include <stdlib.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static struct ad_work *todo_head, *todo_tail, *done_head, *done_tail;
static int queued, max_queue, nthreads;
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

static void *worker_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lock);
	for (;;) {
		struct ad_work *w;

		while (!todo_head && !stopping)
			pthread_cond_wait(&wake, &lock);
		if (!todo_head && stopping)
			break;
		w = pop(&todo_head, &todo_tail);
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

int ad_worker_init(int n, int max_queued)
{
	if (n < 1)
		n = 1;
	if (n > 16)
		n = 16;
	max_queue = max_queued;
	stopping = false;
	for (nthreads = 0; nthreads < n; nthreads++)
		if (pthread_create(&threads[nthreads], NULL, worker_main, NULL))
			return -1;
	return 0;
}

bool ad_worker_submit(struct ad_work *w)
{
	bool ok;

	pthread_mutex_lock(&lock);
	ok = !stopping && queued < max_queue;
	if (ok) {
		w->ran = false;
		queued++;
		push(&todo_head, &todo_tail, w);
		pthread_cond_signal(&wake);
	}
	pthread_mutex_unlock(&lock);
	return ok;
}

void ad_worker_reap(void)
{
	for (;;) {
		struct ad_work *w;

		pthread_mutex_lock(&lock);
		w = pop(&done_head, &done_tail);
		if (w)
			queued--;
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
	while ((w = pop(&todo_head, &todo_tail)))
		push(&done_head, &done_tail, w);
	ad_worker_reap();
}
