/*
 * builtin.c - the protocol actions: heartbeat, cancel and rpc.discover.
 */
#include "actions.h"
#include "dispatch.h"
#include "server.h"

#include <stdio.h>

#include <time.h>

/*
 * heartbeat: the hottest action there is, so it writes its answer as text:
 * {"time":"2026-01-02T03:04:05.678Z","unix_ms":1767323045678}.  The
 * date part is formatted once per second.
 */
static void heartbeat(struct ad_call *call)
{
	static time_t cached_sec = -1;
	static char cached[24]; /* "YYYY-MM-DDTHH:MM:SS" */
	struct timespec ts;
	char out[96], digits[24], *d = digits + sizeof(digits);
	unsigned long long unix_ms;
	int n, ms;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != cached_sec) {
		struct tm tm;

		gmtime_r(&ts.tv_sec, &tm);
		strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm);
		cached_sec = ts.tv_sec;
	}
	ms = (int)(ts.tv_nsec / 1000000);
	unix_ms = (unsigned long long)ts.tv_sec * 1000 + (unsigned)ms;
	do {
		*--d = (char)('0' + unix_ms % 10);
		unix_ms /= 10;
	} while (unix_ms);
	n = snprintf(out, sizeof(out), "{\"time\":\"%s.%03dZ\",\"unix_ms\":%.*s}",
		     cached, ms, (int)(digits + sizeof(digits) - d), d);
	ad_call_reply_raw(call, out, (size_t)n);
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

const struct ad_handler_entry *const ad_action_tables[] = {
	ad_builtin_actions,
	ad_identity_actions,
#ifdef AD_TEST_ACTIONS
	ad_test_actions,
#endif
	NULL,
};
