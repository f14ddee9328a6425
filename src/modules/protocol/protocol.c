/*
 * protocol.c - the protocol module: heartbeat, cancel and rpc.discover.
 */
#include "actiond/actiond.h"
#include "builtin.h"

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
	bool found = ad_call_cancel_request(call, id);

	ad_call_reply(call, json_pack("{s:b}", "cancelled", found));
}

static void discover(struct ad_call *call)
{
	ad_call_reply(call, ad_openrpc());
}

static int protocol_init(struct ad_module *m)
{
	for (size_t i = 0; i < ad_protocol_specs_count; i++)
		if (ad_module_add_spec(m, ad_protocol_specs[i].data, ad_protocol_specs[i].len))
			return -1;
	return ad_module_handle(m, "heartbeat", heartbeat) ||
	       ad_module_handle(m, "cancel", cancel) ||
	       ad_module_handle(m, "rpc.discover", discover);
}

const struct ad_module_info ad_protocol_module = {
	AD_MODULE_API_VERSION, "protocol", ACTIOND_VERSION, protocol_init, NULL,
};
