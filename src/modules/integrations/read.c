/*
 * read.c - invocations.get, invocations.list and invocations.wait.
 *
 * Reads are scoped to the caller's org by row-level security; an agent
 * sees its own agent session's invocations only.  Params and results are
 * shown redacted (ig_row_json).
 *
 * Waiting: a wait whose invocation is not terminal yet joins a list of
 * waiters (at most IG_MAX_WAITERS in the process).  A run, decision or
 * expiry that ends an invocation here answers its waiters at once; for
 * those ended on another instance, one poll every 250 ms reads the state
 * of every invocation waited on in one statement.  At its timeout a waiter
 * reads the row once more and answers with it as it is.
 */
#include "integrations.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * How often waiters look at the database for what ended elsewhere; the
 * instance where it ended also tells them at once (ig_terminal), so this
 * only bounds a lost message.  Setting integrations.wait_poll_ms.
 */
#define POLL_MS_DEFAULT 250
static uint32_t poll_ms(void)
{
	static uint32_t ms;
	const char *v;

	if (!ms) {
		v = ad_module_setting("integrations", "wait_poll_ms");
		ms = v && atoi(v) >= 10 && atoi(v) <= 60000 ? (uint32_t)atoi(v) : POLL_MS_DEFAULT;
	}
	return ms;
}

/* The agent filter of a read: the caller's agent session, or "0" for any. */
static struct ig_num agent_filter(struct ad_call *call)
{
	return ig_num(ad_call_credential_kind(call) == AD_CRED_AGENT
			      ? ad_call_agent_session_id(call)
			      : 0);
}

static void add_get(struct ad_sql *q, struct ad_call *call, const char *id)
{
	struct ig_num as = agent_filter(call);

	ad_sql_add(q,
		   "SELECT " IG_COLS " FROM invocations WHERE id = $1 AND "
		   "($2::bigint = 0 OR agent_session_id = $2::bigint)",
		   2, (const char *[]){ id, as.v });
}

static void got(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	json_t *row;

	(void)arg;
	if (ad_sql_rows(r, 0) != 1) {
		ad_call_fail(call, AD_REASON_NOT_FOUND, "No such invocation", NULL);
		return;
	}
	if (!(row = ig_row_json(r, 0, 0, 0)))
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
	else
		ad_call_reply(call, row);
}

void ig_invocations_get(struct ad_call *call)
{
	struct ad_sql *q = ad_sql_new(call, 0);

	if (!q) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	add_get(q, call, ad_param_str(call, "invocation_id", NULL));
	ad_sql_run(q, got, NULL, NULL);
}

/* ---- list ------------------------------------------------------------------------------- */

struct page {
	int64_t limit;
};

static void listed(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	struct page *pg = arg;
	int rows = ad_sql_rows(r, 0), n = rows > pg->limit ? (int)pg->limit : rows;
	json_t *list = json_array(), *next = json_null();

	if (ad_sql_rows(r, 1) == 0) {
		free(pg);
		json_decref(list);
		ad_call_fail_params(call, "/cursor", "pattern", "no such cursor");
		return;
	}
	for (int i = 0; i < n; i++)
		json_array_append_new(list, ig_row_json(r, 0, i, 0));
	if (rows > pg->limit && n > 0) {
		json_decref(next);
		next = ad_sql_string(r, 0, n - 1, 0);
	}
	free(pg);
	ad_call_reply(call, json_pack("{s:o,s:o}", "invocations", list, "next_cursor", next));
}

void ig_invocations_list(struct ad_call *call)
{
	struct page *pg = calloc(1, sizeof(*pg));
	struct ad_sql *q = pg ? ad_sql_new(call, 0) : NULL;
	int64_t pub = 0, as = 0;
	struct ig_num asn, mine, fetch;
	const char *p[6];

	if (!q) {
		free(pg);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	pg->limit = 50;
	(void)ad_param_int(call, "limit", &pg->limit);
	if (ad_param_int(call, "agent_session_id", &pub) &&
	    !(as = ad_public_id_in(AD_PUBLIC_AGENT_SESSION, pub)))
		as = -1; /* no such session: an empty page */
	asn = ig_num(as);
	mine = agent_filter(call);
	fetch = ig_num(pg->limit + 1);
	p[0] = asn.v;
	p[1] = ad_param_str(call, "status", NULL);
	p[2] = ad_param_str(call, "integration", NULL);
	p[3] = ad_param_str(call, "cursor", NULL);
	p[4] = fetch.v;
	p[5] = mine.v;
	/* Newest first; the cursor is the public id of the last row shown. */
	ad_sql_add(q,
		   "SELECT " IG_COLS " FROM invocations WHERE "
		   "($1::bigint = 0 OR agent_session_id = $1::bigint) AND "
		   "($6::bigint = 0 OR agent_session_id = $6::bigint) AND "
		   "($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR integration = $3) AND "
		   "($4::text IS NULL OR seq < (SELECT seq FROM invocations WHERE id = $4)) "
		   "ORDER BY seq DESC LIMIT $5::int",
		   6, p);
	ad_sql_add(q, "SELECT 1 WHERE $1::text IS NULL OR EXISTS (SELECT 1 FROM invocations "
		      "WHERE id = $1)",
		   1, &p[3]);
	ad_sql_run(q, listed, pg, free);
}

/* ---- wait ------------------------------------------------------------------------------- */

struct waiter {
	struct ad_timer timer;     /* first */
	struct waiter *prev, *next;
	struct ad_call *call;
	char id[33];
};

static struct waiter *waiters;
static size_t nwaiters;
static struct ad_timer poll_timer;
static bool polling;     /* a poll statement is out */
static bool poll_armed;  /* the poll timer is set */

static void unlink_waiter(struct waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		waiters = w->next;
	if (w->next)
		w->next->prev = w->prev;
	nwaiters--;
	ad_timer_stop(&w->timer);
}

static void waiter_cancelled(struct ad_call *call, void *arg)
{
	struct waiter *w = arg;

	unlink_waiter(w);
	free(w);
	ad_call_fail(call, AD_REASON_CANCELLED, "cancelled", NULL);
}

/* Its timeout: the row as it is now. */
static void waiter_timeout(struct ad_timer *t)
{
	struct waiter *w = (struct waiter *)(void *)t;
	struct ad_call *call = w->call;
	struct ad_sql *q;

	unlink_waiter(w);
	ad_call_on_cancel(call, NULL, NULL);
	if (!(q = ad_sql_new(call, 0))) {
		free(w);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	add_get(q, call, w->id);
	free(w);
	ad_sql_run(q, got, NULL, NULL);
}

void ig_waiters_wake(const char *id, const json_t *row)
{
	struct waiter *w = waiters, *next;

	for (; w; w = next) {
		next = w->next;
		if (strcmp(w->id, id))
			continue;
		unlink_waiter(w);
		ad_call_on_cancel(w->call, NULL, NULL);
		ad_call_reply(w->call, json_deep_copy(row));
		free(w);
	}
}

static void poll_fire(struct ad_timer *t);

void ig_terminal(const char *id, const json_t *row)
{
	json_t *m = json_pack("{s:s}", "finished", id);

	ig_waiters_wake(id, row);
	/* Waiters on the other instances look again at once, not at their poll. */
	if (m)
		(void)ad_module_broadcast("integrations", m);
	json_decref(m);
}

void ig_on_message(const json_t *msg)
{
	const char *id = json_string_value(json_object_get(msg, "finished"));

	if (!id || polling)
		return;
	for (struct waiter *w = waiters; w; w = w->next)
		if (!strcmp(w->id, id)) {
			ad_timer_stop(&poll_timer);
			poll_armed = false;
			poll_fire(NULL);
			return;
		}
}

static void polled(void *arg, const struct ad_sql_result *r)
{
	(void)arg;
	polling = false;
	if (!ad_sql_error(r, NULL))
		for (int i = 0; i < ad_sql_rows(r, 0); i++) {
			json_t *row = ig_row_json(r, 0, i, 0);

			if (row)
				ig_waiters_wake(json_string_value(json_object_get(row, "invocation_id")),
						row);
			json_decref(row);
		}
	if (waiters && !poll_armed) {
		poll_armed = true;
		ad_timer_start(&poll_timer, poll_ms(), poll_fire);
	}
}

/* One statement for every invocation waited on in this process. */
static void poll_fire(struct ad_timer *t)
{
	struct ad_sql *q;
	json_t *ids;
	char *text;

	(void)t;
	poll_armed = false;
	if (!waiters || polling)
		return;
	if (!(ids = json_array()))
		goto later;
	for (struct waiter *w = waiters; w; w = w->next)
		json_array_append_new(ids, json_string(w->id));
	text = json_dumps(ids, JSON_COMPACT);
	json_decref(ids);
	if (!text || !(q = ad_sql_new_background(0))) {
		free(text);
		goto later;
	}
	ad_sql_add(q,
		   "SELECT " IG_COLS " FROM invocations WHERE id IN (SELECT jsonb_array_elements_text("
		   "$1::jsonb)) AND status IN ('completed', 'failed', 'denied', 'expired')",
		   1, (const char *[]){ text });
	free(text);
	polling = true;
	ad_sql_run_background(q, polled, NULL);
	return;
later:
	poll_armed = true;
	ad_timer_start(&poll_timer, poll_ms(), poll_fire);
}

struct wait_req {
	int64_t timeout_ms;
};

static void wait_read(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	struct wait_req *wr = arg;
	struct waiter *w;
	const char *status;

	if (ad_sql_rows(r, 0) != 1) {
		free(wr);
		ad_call_fail(call, AD_REASON_NOT_FOUND, "No such invocation", NULL);
		return;
	}
	status = ad_sql_text(r, 0, 0, 5, NULL);
	if (ig_status_terminal(status) || wr->timeout_ms == 0) {
		free(wr);
		got(call, NULL, r);
		return;
	}
	if (nwaiters >= IG_MAX_WAITERS || !(w = calloc(1, sizeof(*w)))) {
		free(wr);
		ad_call_fail(call, AD_REASON_RATE_LIMITED, "Too many waits; poll invocations.get",
			     json_pack("{s:i}", "retry_after_ms", 1000));
		return;
	}
	w->call = call;
	snprintf(w->id, sizeof(w->id), "%s", ad_sql_text(r, 0, 0, 0, NULL));
	w->next = waiters;
	if (waiters)
		waiters->prev = w;
	waiters = w;
	nwaiters++;
	ad_call_on_cancel(call, waiter_cancelled, w);
	ad_timer_start(&w->timer, (uint32_t)wr->timeout_ms, waiter_timeout);
	if (!polling && !poll_armed) {
		poll_armed = true;
		ad_timer_start(&poll_timer, poll_ms(), poll_fire);
	}
	free(wr);
}

void ig_invocations_wait(struct ad_call *call)
{
	struct wait_req *wr = calloc(1, sizeof(*wr));
	struct ad_sql *q = wr ? ad_sql_new(call, 0) : NULL;

	if (!q) {
		free(wr);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	wr->timeout_ms = 30000;
	(void)ad_param_int(call, "timeout_ms", &wr->timeout_ms);
	add_get(q, call, ad_param_str(call, "invocation_id", NULL));
	ad_sql_run(q, wait_read, wr, free);
}
