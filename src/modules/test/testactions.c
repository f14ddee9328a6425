/*
 * testactions.c - actions compiled only into test builds (-Dtest_actions=true)
 * so the suite can exercise timeouts, cancellation, backpressure, rate limits
 * and output checking against the real binary.  Their specs live in
 * tests/protocol/; the publish/subscribe ones are in test_pubsub.c.
 */
#include "builtin.h"
#include "actiond/actiond.h"
#include "dispatch.h"
#include "outq.h"
#include "server.h"
#include "test_pubsub.h"
#include "pubsub.h"
#include "ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* test.sleep {ms}: answers {"slept_ms": ms} after ms, unless cancelled. */
struct sleeper {
	struct ad_timer timer;
	struct ad_call *call;
	uint32_t ms;
};

static void sleep_done(struct ad_timer *t)
{
	struct sleeper *s = (struct sleeper *)(void *)t;
	struct ad_call *call = s->call;
	uint32_t ms = s->ms;

	free(s);
	ad_call_reply(call, json_pack("{s:i}", "slept_ms", (int)ms));
}

static void sleep_cancel(struct ad_call *call, void *arg)
{
	struct sleeper *s = arg;

	ad_timer_stop(&s->timer);
	free(s);
	ad_call_fail(call, AD_REASON_CANCELLED, "cancelled", NULL);
}

static void test_sleep(struct ad_call *call)
{
	struct sleeper *s = calloc(1, sizeof(*s));

	if (!s) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	s->call = call;
	s->ms = (uint32_t)json_integer_value(json_object_get(ad_call_params(call), "ms"));
	ad_call_on_cancel(call, sleep_cancel, s);
	ad_timer_start(&s->timer, s->ms, sleep_done);
}

/* test.echo {value}: answers {"value": value}. */
static void test_echo(struct ad_call *call)
{
	ad_call_reply(call, json_pack("{s:O}", "value",
				      json_object_get(ad_call_params(call), "value")));
}

/* test.blob {size}: answers {"blob": "xxxx..."} of size bytes. */
static void test_blob(struct ad_call *call)
{
	size_t n = (size_t)json_integer_value(
		json_object_get(ad_call_params(call), "size"));
	char *s = malloc(n);
	json_t *v;

	if (!s) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	memset(s, 'x', n);
	v = json_stringn_nocheck(s, n);
	free(s);
	ad_call_reply(call, json_pack("{s:o}", "blob", v));
}

/*
 * test.broadcast {size, count}: publishes count "test.noise" notifications
 * of about size bytes to every connection of the caller's org, one frame
 * built once for all of them.
 */
static void test_broadcast(struct ad_call *call)
{
	const json_t *p = ad_call_params(call);
	size_t size = (size_t)json_integer_value(json_object_get(p, "size"));
	json_int_t count = json_integer_value(json_object_get(p, "count"));
	struct ad_audience a = { .org_id = ad_call_org_id(call) };
	struct ad_buf b = AD_BUF_INIT;
	struct ad_msg *m;
	int reached = -1;

	ad_buf_puts(&b, "{\"jsonrpc\":\"2.0\",\"method\":\"test.noise\",\"params\":{\"pad\":\"");
	for (size_t i = 0; i < size; i++)
		ad_buf_putc(&b, 'n');
	ad_buf_puts(&b, "\"}}");
	m = b.oom ? NULL : ad_msg_new(b.data, b.len);
	ad_buf_free(&b);
	for (json_int_t i = 0; m && i < count && (i == 0 || reached >= 0); i++)
		reached = ad_publish_msg(&a, m);
	ad_msg_unref(m);
	if (reached < 0) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "publish refused", NULL);
		return;
	}
	ad_call_reply(call, json_pack("{s:I}", "recipients", (json_int_t)reached));
}

/* test.bad_output: breaks its own output schema (caught in debug builds). */
static void test_bad_output(struct ad_call *call)
{
	ad_call_reply(call, json_pack("{s:s}", "unexpected", "field"));
}

/* test.admin_only, test.limited: trivial bodies; the spec is the test. */
static void test_ok(struct ad_call *call)
{
	ad_call_reply(call, json_pack("{s:b}", "ok", 1));
}

/* test.db_sleep {ms}: a slow statement, through the SQL service. */
static void db_slept(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	int64_t ms = 0;

	(void)arg;
	(void)r;
	(void)ad_param_int(call, "ms", &ms);
	ad_call_reply(call, json_pack("{s:I}", "slept_ms", (json_int_t)ms));
}

static void test_db_sleep(struct ad_call *call)
{
	char secs[32];
	const char *p[1] = { secs };
	int64_t ms = 0;
	struct ad_sql *q = ad_sql_new(call, 0);

	if (!q) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	(void)ad_param_int(call, "ms", &ms);
	snprintf(secs, sizeof(secs), "%.3f", (double)ms / 1000);
	ad_sql_add(q, "SELECT pg_sleep($1::float8)", 1, p);
	ad_sql_run(q, db_slept, NULL, NULL);
}

/*
 * test.tenant_rows: deliberately unscoped statements on tenant tables; what
 * they return is what row-level security lets the caller's org see.
 */
static void tenant_rows_done(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	json_t *orgs = json_array();
	int64_t events = 0;

	(void)arg;
	for (int i = 0; i < ad_sql_rows(r, 0); i++) {
		json_array_append_new(orgs, json_integer(ad_sql_int(r, 0, i, 0)));
		events += ad_sql_int(r, 0, i, 1);
	}
	ad_call_reply(call, json_pack("{s:o,s:I,s:I}", "event_orgs", orgs, "events",
				      (json_int_t)events, "secrets",
				      (json_int_t)ad_sql_int(r, 1, 0, 0)));
}

static void test_tenant_rows(struct ad_call *call)
{
	struct ad_sql *q = ad_sql_new(call, 0);

	if (!q) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ad_sql_add(q, "SELECT org_id, count(*) FROM identity_events GROUP BY org_id "
		      "ORDER BY org_id", 0, NULL);
	ad_sql_add(q, "SELECT count(*) FROM integration_secrets", 0, NULL);
	ad_sql_run(q, tenant_rows_done, NULL, NULL);
}

/*
 * test.background_orgs: a background batch (as a sweeper would run) sees
 * the tenant rows of every org; the call itself only finishes when it is
 * back, through a pointer the batch carries.
 */
static void background_done(void *arg, const struct ad_sql_result *r)
{
	struct ad_call *call = arg;

	if (ad_sql_error(r, NULL))
		ad_call_fail(call, AD_REASON_UNAVAILABLE, ad_sql_error_message(r), NULL);
	else
		ad_call_reply(call, json_pack("{s:I}", "orgs", (json_int_t)ad_sql_int(r, 0, 0, 0)));
}

static void test_background_orgs(struct ad_call *call)
{
	struct ad_sql *q = ad_sql_new_background(0);

	if (!q) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ad_sql_add(q, "SELECT count(DISTINCT org_id) FROM identity_events", 0, NULL);
	ad_sql_run_background(q, background_done, call);
}

/* test.setting {key}: what [module.test] says. */
static void test_setting(struct ad_call *call)
{
	const char *v = ad_module_setting("test", ad_param_str(call, "key", NULL));

	ad_call_reply(call, json_pack("{s:s?}", "value", v));
}

/* test.progress {steps}: progress notifications, then an accepted (202) answer. */
static void test_progress(struct ad_call *call)
{
	int64_t steps = 0;

	(void)ad_param_int(call, "steps", &steps);
	for (int64_t i = 1; i <= steps; i++)
		ad_call_progress(call, json_pack("{s:I,s:I}", "step", (json_int_t)i, "of",
						 (json_int_t)steps));
	ad_call_set_http_status(call, 202);
	ad_call_reply(call, json_pack("{s:I}", "steps", (json_int_t)steps));
}

/* test.offload {ms}: a blocking sleep on a worker thread. */
static void offload_sleep(void *arg)
{
	struct timespec ts = { 0, 0 };
	int64_t ms = *(int64_t *)arg;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000;
	nanosleep(&ts, NULL);
}

static void offload_done(struct ad_call *call, void *arg, bool ran)
{
	free(arg);
	if (ad_call_is_cancelled(call))
		ad_call_fail(call, AD_REASON_CANCELLED, "cancelled", NULL);
	else
		ad_call_reply(call, json_pack("{s:b}", "ran", ran));
}

static void test_offload(struct ad_call *call)
{
	int64_t *ms = calloc(1, sizeof(*ms));

	if (!ms) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	(void)ad_param_int(call, "ms", ms);
	if (ad_call_offload(call, offload_sleep, offload_done, ms)) {
		free(ms);
		ad_call_fail(call, AD_REASON_RATE_LIMITED, "The workers are busy", NULL);
	}
}

/* The methods of the JSON-RPC 2.0 specification's examples. */
static json_t *number(double d)
{
	if (d == (double)(json_int_t)d && d > -9e15 && d < 9e15)
		return json_integer((json_int_t)d);
	return json_real(d);
}

static void spec_subtract(struct ad_call *call)
{
	const json_t *p = ad_call_params(call);

	ad_call_reply(call, number(json_number_value(json_object_get(p, "minuend")) -
				   json_number_value(json_object_get(p, "subtrahend"))));
}

static void spec_sum(struct ad_call *call)
{
	const json_t *v;
	double total = 0;
	size_t i;

	json_array_foreach(json_object_get(ad_call_params(call), "values"), i, v)
		total += json_number_value(v);
	ad_call_reply(call, number(total));
}

static void spec_get_data(struct ad_call *call)
{
	ad_call_reply(call, json_pack("[s,i]", "hello", 5));
}

static void spec_null(struct ad_call *call)
{
	ad_call_reply(call, NULL);
}

/* test.http_fetch, in test_http.c. */
void ad_test_http_fetch(struct ad_call *call);

static int test_init(struct ad_module *m)
{
	static const struct {
		const char *method;
		ad_handler_fn fn;
	} handlers[] = {
		{ "subtract", spec_subtract },
		{ "sum", spec_sum },
		{ "get_data", spec_get_data },
		{ "update", spec_null },
		{ "notify_sum", spec_null },
		{ "notify_hello", spec_null },
		{ "test.sleep", test_sleep },
		{ "test.db_sleep", test_db_sleep },
		{ "test.db_sleep_timeout", test_db_sleep },
		{ "test.tenant_rows", test_tenant_rows },
		{ "test.progress", test_progress },
		{ "test.background_orgs", test_background_orgs },
		{ "test.setting", test_setting },
		{ "test.offload", test_offload },
		{ "test.echo", test_echo },
		{ "test.blob", test_blob },
		{ "test.broadcast", test_broadcast },
		{ "test.publish", ad_test_publish },
		{ "test.subscribe", ad_test_subscribe },
		{ "test.unsubscribe", ad_test_unsubscribe },
		{ "test.whoami", ad_test_whoami },
		{ "test.bad_output", test_bad_output },
		{ "test.admin_only", test_ok },
		{ "test.limited", test_ok },
		{ "test.limited_both", test_ok },
		{ "test.http_fetch", ad_test_http_fetch },
	};

	for (size_t i = 0; i < ad_test_specs_count; i++)
		if (ad_module_add_spec(m, ad_test_specs[i].data, ad_test_specs[i].len))
			return -1;
	for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++)
		if (ad_module_handle(m, handlers[i].method, handlers[i].fn))
			return -1;
	return 0;
}

const struct ad_module_info ad_test_module = {
	AD_MODULE_API_VERSION, "test", ACTIOND_VERSION, test_init, NULL,
};
