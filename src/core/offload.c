/*
 * offload.c - actiond/offload.h on the worker pool (src/util/worker.c).
 */
#include "actiond/offload.h"
#include "dispatch.h"
#include "worker.h"

#include <stdatomic.h>
#include <stdlib.h>

struct offload {
	struct ad_work w;        /* first: the pool hands this back */
	struct ad_call *call;
	ad_offload_run_fn run;
	ad_offload_done_fn done;
	void *arg;
	atomic_bool cancelled;   /* set on the loop, read by the worker */
	bool skipped;            /* run() was not called (worker-written) */
};

static void offload_run(struct ad_work *w)
{
	struct offload *o = (struct offload *)w;

	if (atomic_load(&o->cancelled))
		o->skipped = true; /* nobody waits for it any more */
	else
		o->run(o->arg);
}

static void offload_done(struct ad_work *w)
{
	struct offload *o = (struct offload *)w;

	ad_call_on_cancel(o->call, NULL, NULL);
	o->done(o->call, o->arg, w->ran && !o->skipped);
	free(o);
}

/*
 * A cancelled call whose work is queued or running: the worker still owns
 * the item, so nothing is freed here.  Work not started yet is skipped;
 * offload_done() tells the handler either way.
 */
static void offload_cancel(struct ad_call *call, void *arg)
{
	struct offload *o = arg;

	(void)call;
	atomic_store(&o->cancelled, true);
}

static int offload(struct ad_call *call, ad_offload_run_fn run, ad_offload_done_fn done,
		   void *arg, bool urgent)
{
	struct offload *o = calloc(1, sizeof(*o));

	if (!o)
		return -1;
	o->w.run = offload_run;
	o->w.done = offload_done;
	o->call = call;
	o->run = run;
	o->done = done;
	o->arg = arg;
	if (!ad_worker_submit(&o->w, ad_call_fair_key(call), urgent)) {
		free(o);
		return -1;
	}
	ad_call_on_cancel(call, offload_cancel, o);
	return 0;
}

int ad_call_offload(struct ad_call *call, ad_offload_run_fn run, ad_offload_done_fn done,
		    void *arg)
{
	return offload(call, run, done, arg, false);
}

int ad_call_offload_first(struct ad_call *call, ad_offload_run_fn run,
			  ad_offload_done_fn done, void *arg)
{
	return offload(call, run, done, arg, true);
}
