/*
 * builtin.c - the protocol actions: heartbeat, cancel and rpc.discover.
 */
#include "actions.h"
#include "dispatch.h"
#include "server.h"

#include <time.h>

static void heartbeat(struct ad_call *call)
{
	char iso[40];
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ad_server_time_iso(iso, sizeof(iso));
	ad_call_reply(call, json_pack("{s:s,s:I}", "time", iso, "unix_ms",
				      (json_int_t)ts.tv_sec * 1000 +
					      ts.tv_nsec / 1000000));
}

/*
 * cancel {request_id}: aborts the matching in-flight request of the same
 * connection, which then answers "cancelled".  Unknown ids are a no-op.  As
 * a notification it answers nothing; sent with an id it says whether a
 * request was found.
 */
static void cancel(struct ad_call *call)
{
	const json_t *id = json_object_get(ad_call_params(call), "request_id");
	struct ad_requester *r = ad_call_requester(call);
	bool found = r && ad_dispatch_cancel(r, id);

	ad_call_reply(call, json_pack("{s:b}", "cancelled", found));
}

static void discover(struct ad_call *call)
{
	ad_call_reply(call, json_incref(ad_openrpc_document()));
}

const struct ad_handler_entry ad_builtin_actions[] = {
	{ "heartbeat", heartbeat },
	{ "cancel", cancel },
	{ "rpc.discover", discover },
	{ NULL, NULL },
};
