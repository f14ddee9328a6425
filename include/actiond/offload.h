/*
 * actiond/offload.h - slow work on worker threads.
 *
 * Anything that would hold the event loop for more than a few hundred
 * microseconds (password hashing, compression, big JSON transforms) runs
 * on actiond's worker threads; its continuation runs back on the loop.
 *
 * run() executes on a worker thread and must touch nothing that belongs to
 * the loop: not the call, not JSON values the call owns, not any other
 * function of this API except ad_log().  Copy what it needs into arg first.
 *
 * The queue is bounded: when it is full, the handler learns it at once
 * (and should answer "rate_limited") rather than waiting behind it.
 */
#ifndef ACTIOND_OFFLOAD_H
#define ACTIOND_OFFLOAD_H

#include "actiond/action.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*ad_offload_run_fn)(void *arg);
/*
 * On the loop, once per offload.  ran is false when run() never executed
 * (the call was cancelled while queued, or shutdown).  When the call was
 * cancelled, it is answered already: free arg and finish the call.
 */
typedef void (*ad_offload_done_fn)(struct ad_call *call, void *arg, bool ran);

/*
 * Queues run(arg) for call, then done(call, arg, ran) on the loop.  Holds
 * the call's cancel hook meanwhile.  Returns 0; or -1 when the queue is
 * full or stopped: then nothing was queued, done will not run, and the
 * handler still owns arg and answers the call.
 */
int ad_call_offload(struct ad_call *call, ad_offload_run_fn run,
		    ad_offload_done_fn done, void *arg);

/*
 * The same, ahead of all ordinary work: for work the module knows is wanted
 * (a login from an address its account has used lately), so that a flood
 * of ordinary work from elsewhere cannot delay it.  Bounded like the rest.
 */
int ad_call_offload_first(struct ad_call *call, ad_offload_run_fn run,
			  ad_offload_done_fn done, void *arg);

#ifdef __cplusplus
}
#endif

#endif
