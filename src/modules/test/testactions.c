/*
 * testactions.c - actions compiled only into test builds (-Dtest_actions=true)
 * so the suite can exercise timeouts, cancellation, backpressure, rate limits
 * and output checking against the real binary.  Their specs live in
 * tests/protocol/.
 */
#include "actions.h"
#include "db.h"
#include "dispatch.h"
#include "outq.h"
#include "server.h"
#include "ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static bool same_org(const struct ad_conn *c, void *arg)
{
	return c->req.cred && !strcmp(c->req.cred->org, (const char *)arg);
}

/*
 * test.broadcast {size, count}: sends count "test.noise" notifications of
 * about size bytes to every connection of the caller's org.
 */
static void test_broadcast(struct ad_call *call)
{
	const json_t *p = ad_call_params(call);
	size_t size = (size_t)json_integer_value(json_object_get(p, "size"));
	json_int_t count = json_integer_value(json_object_get(p, "count"));
	struct ad_buf b = AD_BUF_INIT;
	size_t reached = 0;
	struct ad_msg *m;
	char *org = strdup(ad_call_org(call));

	ad_buf_puts(&b, "{\"jsonrpc\":\"2.0\",\"method\":\"test.noise\",\"params\":{\"pad\":\"");
	for (size_t i = 0; i < size; i++)
		ad_buf_putc(&b, 'n');
	ad_buf_puts(&b, "\"}}");
	m = ad_msg_new(b.data, b.len);
	ad_buf_free(&b);
	for (json_int_t i = 0; m && org && i < count; i++)
		reached = ad_broadcast(m, same_org, org);
	ad_msg_unref(m);
	free(org);
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

/* test.db_sleep {ms}: a slow statement on the pool. */
static void db_slept(struct ad_call *call, void *arg, PGresult *const *r, int n)
{
	(void)arg;
	(void)r;
	(void)n;
	ad_call_reply(call, json_pack("{s:I}", "slept_ms",
				      json_integer_value(json_object_get(ad_call_params(call),
									 "ms"))));
}

static void test_db_sleep(struct ad_call *call)
{
	char secs[32];
	const char *p[1] = { secs };
	struct ad_pg_stmt s = { "SELECT pg_sleep($1::float8)", 1, p };

	snprintf(secs, sizeof(secs), "%.3f",
		 (double)json_integer_value(json_object_get(ad_call_params(call), "ms")) / 1000);
	ad_db_run(call, &s, 1, NULL, db_slept, NULL, NULL);
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

const struct ad_handler_entry ad_test_actions[] = {
	{ "subtract", spec_subtract },
	{ "sum", spec_sum },
	{ "get_data", spec_get_data },
	{ "update", spec_null },
	{ "notify_sum", spec_null },
	{ "notify_hello", spec_null },
	{ "test.sleep", test_sleep },
	{ "test.db_sleep", test_db_sleep },
	{ "test.echo", test_echo },
	{ "test.blob", test_blob },
	{ "test.broadcast", test_broadcast },
	{ "test.bad_output", test_bad_output },
	{ "test.admin_only", test_ok },
	{ "test.limited", test_ok },
	{ "test.limited_both", test_ok },
	{ "test.http_fetch", ad_test_http_fetch },
	{ NULL, NULL },
};
