/*
 * feed.c - the change feed: numbering what writes captured,
 * changes.subscribe, changes.unsubscribe, and the delivery of committed
 * changes to the subscribed sockets of this instance, in seq order, with
 * no gap and no duplicate.
 *
 * Writes capture their changes in data_changes in the writing transaction
 * (the triggers of the migrations), without a seq; data_sequence() numbers
 * an org's captured changes under the org's feed row lock, so seqs commit
 * in order and without holes.  The data module's own writes number theirs
 * at the end of their batch's transaction (records.c); the writes of other
 * modules to their tenant tables are numbered after they commit: the
 * capture announces the org through NOTIFY (delivered at commit, to every
 * instance), and a numbering run starts for it, one at a time per org,
 * covering every write that committed meanwhile, so their writers never
 * wait for each other.  Numbered changes are delivered here and announced
 * to the other instances (module messages); a timer numbers what a
 * stopped instance left behind.
 *
 * Each instance delivers to its own sockets, from the database: for every
 * org that has subscribers here it keeps the last seq it delivered, and a
 * poll reads what follows it: when another instance announces a write to
 * the org, and every poll_ms in case an announcement was lost.  Delivery
 * goes to this instance's sockets only (ad_publish_here): every instance
 * reads the same rows.
 *
 * A socket subscribes at the org's delivered seq D, on the loop, in the
 * same turn as its answer: the answer replays what followed since up to
 * D, and every later change reaches it live.  The replay reads the
 * database; when D moved past what that read could see, it reads again.
 *
 * Retention: a sweep deletes changes older than retention_seconds and
 * notes the highest seq removed per org; a since below it answers reset.
 */
#include "data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ORGS 4096
#define REPLAY_MAX 1000
#define POLL_ROWS 500
#define SUBSCRIBE_ROUNDS 8
#define MARKER_TOPIC "data.changes"

struct org_feed {
	struct org_feed *next;
	int64_t org;
	int64_t delivered;   /* last seq delivered here; -1 until known */
	int pending;         /* subscribes in flight */
};

static struct {
	struct org_feed *orgs;
	size_t norgs;
	struct ad_timer poll_timer, sweep_timer;
	bool polling, again, started, sweeping, numbering;
	uint32_t poll_ms, sweep_ms;
	int64_t retention_s;
} feed;

static void topic_of(const char *entity, char *out, size_t cap)
{
	snprintf(out, cap, MARKER_TOPIC "/%s", entity);
}

static struct org_feed *org_find(int64_t org)
{
	for (struct org_feed *o = feed.orgs; o; o = o->next)
		if (o->org == org)
			return o;
	return NULL;
}

static struct org_feed *org_get(int64_t org)
{
	struct org_feed *o = org_find(org);

	if (o || feed.norgs >= MAX_ORGS || !(o = calloc(1, sizeof(*o))))
		return o;
	o->org = org;
	o->delivered = -1;
	o->next = feed.orgs;
	feed.orgs = o;
	feed.norgs++;
	return o;
}

/* Publishes one change to the org's subscribers of its entity, here. */
static void deliver(int64_t org, int64_t seq, const char *entity, const char *op, json_t *ids)
{
	char topic[128];
	struct ad_audience a = { .org_id = org, .topic = topic };
	json_t *params = json_pack("{s:s,s:s,s:O,s:I}", "entity", entity, "op", op, "ids", ids,
				   "seq", (json_int_t)seq);

	topic_of(entity, topic, sizeof(topic));
	if (params && ad_publish_here(&a, "changes", params) < 0)
		ad_log(AD_LOG_WARN, "data: the change %lld of org %lld could not be delivered",
		       (long long)seq, (long long)org);
	json_decref(params);
}

/* ---- polling ---------------------------------------------------------------- */

static void poll_start(void);

static void poll_done(void *arg, const struct ad_sql_result *res)
{
	(void)arg;
	feed.polling = false;
	if (ad_sql_error(res, NULL))
		ad_log(AD_LOG_WARN, "data: reading the change feed failed: %s",
		       ad_sql_error_message(res));
	else
		for (int r = 0; r < ad_sql_rows(res, 0); r++) {
			struct org_feed *o = org_find(ad_sql_int(res, 0, r, 0));
			int64_t seq = ad_sql_int(res, 0, r, 1);
			json_t *ids;

			if (!o || o->delivered < 0 || seq <= o->delivered)
				continue;
			ids = ad_sql_json(res, 0, r, 4);
			deliver(o->org, seq, ad_sql_text(res, 0, r, 2, NULL),
				ad_sql_text(res, 0, r, 3, NULL), ids);
			json_decref(ids);
			o->delivered = seq;
			if (r == ad_sql_rows(res, 0) - 1 && r + 1 >= POLL_ROWS)
				feed.again = true;
		}
	if (feed.again) {
		feed.again = false;
		poll_start();
	}
}

/*
 * Forgets orgs nobody here subscribes to any more, then reads what follows
 * each remaining org's delivered seq, one statement for all of them.
 */
static void poll_start(void)
{
	struct org_feed **pp = &feed.orgs, *o;
	struct dm_buf orgs = { 0 }, after = { 0 };
	struct ad_sql *q;

	if (feed.polling) {
		feed.again = true;
		return;
	}
	while ((o = *pp)) {
		if (!o->pending && !ad_topic_subscribers(o->org, MARKER_TOPIC)) {
			*pp = o->next;
			feed.norgs--;
			free(o);
			continue;
		}
		if (o->delivered >= 0) {
			dm_buf_printf(&orgs, "%s%lld", orgs.len ? "," : "{", (long long)o->org);
			dm_buf_printf(&after, "%s%lld", after.len ? "," : "{",
				      (long long)o->delivered);
		}
		pp = &o->next;
	}
	if (!orgs.len || orgs.oom || after.oom || !(q = ad_sql_new_background(0))) {
		dm_buf_free(&orgs);
		dm_buf_free(&after);
		return;
	}
	dm_buf_put(&orgs, "}");
	dm_buf_put(&after, "}");
	{
		const char *p[3] = { orgs.data, after.data, dm_num(POLL_ROWS).v };

		ad_sql_add(q, "SELECT w.org, c.seq, c.entity, c.op, to_jsonb(c.ids) "
			      "FROM unnest($1::bigint[], $2::bigint[]) AS w(org, after) "
			      "CROSS JOIN LATERAL (SELECT seq, entity, op, ids FROM data_changes "
			      "WHERE org_id = w.org AND seq > w.after ORDER BY seq "
			      "LIMIT $3::bigint) c ORDER BY w.org, c.seq",
			   3, p);
	}
	dm_buf_free(&orgs);
	dm_buf_free(&after);
	feed.polling = true;
	ad_sql_run_background(q, poll_done, NULL);
}

static void stale_done(void *arg, const struct ad_sql_result *res)
{
	(void)arg;
	feed.numbering = false;
	if (ad_sql_error(res, NULL))
		ad_log(AD_LOG_WARN, "data: numbering left-over changes failed: %s",
		       ad_sql_error_message(res));
	else if (ad_sql_int(res, 0, 0, 0) > 0)
		poll_start();
}

/*
 * Every poll_ms: reads what may have been missed, and numbers changes that
 * committed over a second ago and are still without a seq (their writer's
 * instance stopped before numbering them).
 */
static void poll_tick(struct ad_timer *t)
{
	struct ad_sql *q;

	poll_start();
	if (!feed.numbering && (q = ad_sql_new_background(0))) {
		ad_sql_add(q, "SELECT data_sequence_stale()", 0, NULL);
		feed.numbering = true;
		ad_sql_run_background(q, stale_done, NULL);
	}
	ad_timer_start(t, feed.poll_ms, poll_tick);
}

/* ---- retention ---------------------------------------------------------------- */

static void sweep_done(void *arg, const struct ad_sql_result *res)
{
	(void)arg;
	feed.sweeping = false;
	if (ad_sql_error(res, NULL))
		ad_log(AD_LOG_WARN, "data: the change feed sweep failed: %s",
		       ad_sql_error_message(res));
}

static void sweep_tick(struct ad_timer *t)
{
	struct dm_num keep = dm_num(feed.retention_s);
	const char *p[1] = { keep.v };
	struct ad_sql *q;

	ad_timer_start(t, feed.sweep_ms, sweep_tick);
	if (feed.sweeping || !(q = ad_sql_new_background(0)))
		return;
	ad_sql_add(q, "WITH gone AS (DELETE FROM data_changes "
		      "WHERE at < now() - make_interval(secs => $1::bigint) AND seq IS NOT NULL "
		      "RETURNING org_id, seq) "
		      "UPDATE data_feed f SET pruned_seq = g.top FROM "
		      "(SELECT org_id, max(seq) AS top FROM gone GROUP BY org_id) g "
		      "WHERE f.org_id = g.org_id AND f.pruned_seq < g.top",
		   1, p);
	feed.sweeping = true;
	ad_sql_run_background(q, sweep_done, NULL);
}

/* A setting of [module.data] as a number in [lo, hi], or def. */
static int64_t setting(const char *key, int64_t def, int64_t lo, int64_t hi)
{
	const char *s = ad_module_setting("data", key);
	char *end;
	long long v;

	if (!s)
		return def;
	v = strtoll(s, &end, 10);
	if (*end || v < lo || v > hi) {
		ad_log(AD_LOG_WARN, "data: module.data.%s = %s is out of range; using %lld", key,
		       s, (long long)def);
		return def;
	}
	return v;
}

/* Starts the timers on the loop (at start, or the first time the module serves). */
static void feed_start(void)
{
	if (feed.started)
		return;
	feed.started = true;
	/* Writes elsewhere are announced (dm_feed_on_message): the poll only
	 * bounds a lost announcement. */
	feed.poll_ms = (uint32_t)setting("poll_ms", 1000, 10, 60000);
	feed.sweep_ms = (uint32_t)setting("sweep_ms", 60000, 100, 3600000);
	feed.retention_s = setting("retention_seconds", 86400, 1, 86400 * 365);
	ad_timer_start(&feed.poll_timer, feed.poll_ms, poll_tick);
	ad_timer_start(&feed.sweep_timer, feed.sweep_ms, sweep_tick);
}

static void leakproof_done(void *arg, const struct ad_sql_result *res)
{
	(void)arg;
	if (!ad_sql_error(res, NULL) && strcmp(ad_sql_text(res, 0, 0, 0, NULL), "t"))
		ad_log(AD_LOG_WARN, "data: declared indexes cannot serve filters here: jsonb's "
				    "field access and comparisons are not LEAKPROOF in this database "
				    "(a superuser can mark them: see docs/data.md, Indexes)");
}

void dm_feed_on_start(bool database)
{
	struct ad_sql *q;

	if (!database)
		return;
	feed_start();
	if ((q = ad_sql_new_background(0))) {
		ad_sql_add(q, "SELECT coalesce(bool_and(proleakproof), false) FROM pg_proc WHERE oid IN "
			      "('pg_catalog.jsonb_object_field(jsonb,text)'::regprocedure, "
			      "'pg_catalog.jsonb_eq(jsonb,jsonb)'::regprocedure)",
			   0, NULL);
		ad_sql_run_background(q, leakproof_done, NULL);
	}
}

/* ---- numbered changes ------------------------------------------------------ */

void dm_feed_numbered(int64_t org, const json_t *rows)
{
	struct org_feed *o = org_find(org);
	bool gap = false;
	size_t i;
	json_t *row;

	feed_start();
	json_array_foreach(rows, i, row) {
		int64_t seq = json_integer_value(json_array_get(row, 1));
		const char *action = json_string_value(json_array_get(row, 6));

		/* Checked once, where it was numbered. */
		if (action)
			(void)ad_action_write_seen(action,
						   json_string_value(json_array_get(row, 5)));
		if (!o || o->delivered < 0 || seq <= o->delivered)
			continue;
		if (seq != o->delivered + 1) {
			gap = true; /* numbered elsewhere, not delivered here yet */
			continue;
		}
		deliver(org, seq, json_string_value(json_array_get(row, 2)),
			json_string_value(json_array_get(row, 3)), json_array_get(row, 4));
		o->delivered = seq;
	}
	if (gap)
		poll_start();
	if (json_array_size(rows)) {
		/* The other instances' subscribers: their feed looks at once. */
		json_t *m = json_pack("{s:I}", "org", (json_int_t)org);

		if (m)
			(void)ad_module_broadcast("data", m);
		json_decref(m);
	}
}

/* ---- numbering what other modules wrote ------------------------------------- */

/* An org whose changes are being numbered here, one run at a time. */
struct org_seq {
	struct org_seq *next;
	int64_t org;
	bool again;
};

static struct org_seq *seqs;

static void sequence_start(int64_t org);

static void sequence_done(void *arg, const struct ad_sql_result *res)
{
	struct org_seq *os = arg, **sp;

	if (ad_sql_error(res, NULL)) {
		ad_log(AD_LOG_WARN, "data: numbering the changes of org %lld failed: %s",
		       (long long)os->org, ad_sql_error_message(res));
	} else {
		json_t *rows = ad_sql_json(res, 0, 0, 0);

		dm_feed_numbered(os->org, rows);
		json_decref(rows);
	}
	for (sp = &seqs; *sp; sp = &(*sp)->next)
		if (*sp == os) {
			*sp = os->next;
			break;
		}
	if (os->again)
		sequence_start(os->org);
	free(os);
}

/* Numbers what committed for the org, one run at a time per org. */
static void sequence_start(int64_t org)
{
	struct dm_num n = dm_num(org);
	const char *p[1] = { n.v };
	struct org_seq *os;
	struct ad_sql *q;

	for (os = seqs; os && os->org != org; os = os->next)
		;
	if (os) {
		os->again = true;
		return;
	}
	if (!(os = calloc(1, sizeof(*os))) || !(q = ad_sql_new_background(0))) {
		free(os);
		return; /* the timer numbers it */
	}
	os->org = org;
	os->next = seqs;
	seqs = os;
	ad_sql_add(q, "SELECT " DM_NUMBERED_JSON " FROM data_sequence($1::bigint)", 1, p);
	ad_sql_run_background(q, sequence_done, os);
}

/*
 * A module message: another instance numbered changes of org (poll when
 * someone here follows it), or the capture on another module's table says
 * that a write to org committed (number it; every instance is told, and
 * all but one find nothing left to number).
 */
void dm_feed_on_message(const json_t *msg)
{
	int64_t org;

	if (!ad_json_int(json_object_get(msg, "org"), &org) || org <= 0)
		return;
	if (json_is_true(json_object_get(msg, "captured"))) {
		feed_start();
		sequence_start(org);
	} else if (org_find(org)) {
		poll_start();
	}
}

void dm_feed_fini(void)
{
	while (seqs) {
		struct org_seq *os = seqs;

		seqs = os->next;
		free(os);
	}
	while (feed.orgs) {
		struct org_feed *o = feed.orgs;

		feed.orgs = o->next;
		free(o);
	}
	feed.norgs = 0;
}

/* ---- changes.subscribe ---------------------------------------------------------- */

struct sub {
	int64_t org;
	int64_t since;       /* -1: none */
	int64_t from;        /* this round reads after it */
	int rounds;
	json_t *entities;    /* the names (params) */
	json_t *replay;      /* [change] collected so far */
	char *names;         /* entities as a JSON array text */
};

static void sub_free(void *p)
{
	struct sub *s = p;
	struct org_feed *o = org_find(s->org);

	if (o && o->pending)
		o->pending--;
	json_decref(s->replay);
	free(s->names);
	free(s);
}

static void sub_round(struct ad_call *call, struct sub *s);

/* Answers, subscribing the socket now, in the same turn of the loop. */
static void sub_answer(struct ad_call *call, struct sub *s, int64_t live, const char *epoch,
		       bool more, bool reset)
{
	char topic[128];
	size_t i;
	json_t *e, *ans;

	if (!more) {
		int bad = ad_call_subscribe(call, MARKER_TOPIC);

		json_array_foreach(s->entities, i, e) {
			topic_of(json_string_value(e), topic, sizeof(topic));
			bad |= ad_call_subscribe(call, topic);
		}
		if (bad) {
			json_array_foreach(s->entities, i, e) {
				topic_of(json_string_value(e), topic, sizeof(topic));
				ad_call_unsubscribe(call, topic);
			}
			sub_free(s);
			ad_call_fail(call, AD_REASON_CONFLICT,
				     "This connection has too many subscriptions", NULL);
			return;
		}
	}
	ans = json_pack("{s:I,s:s,s:O,s:b,s:b}", "seq", (json_int_t)live, "epoch", epoch,
			"changes", s->replay, "more", more, "reset", reset);
	sub_free(s);
	ad_call_reply(call, ans);
}

static void sub_done(struct ad_call *call, void *arg, const struct ad_sql_result *res)
{
	struct sub *s = arg;
	struct org_feed *o = org_find(s->org);
	int64_t last = ad_sql_int(res, 1, 0, 0), pruned = ad_sql_int(res, 1, 0, 1);
	const char *epoch = ad_sql_text(res, 1, 0, 2, NULL);
	const char *want = json_string_value(json_object_get(ad_call_params(call), "epoch"));
	int rows = ad_sql_rows(res, 2);
	int64_t seen = last; /* this read saw every change up to it */
	int64_t live;

	if (!o) {
		sub_free(s);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "Too many orgs are subscribed here",
			     NULL);
		return;
	}
	if (s->since >= 0 && !s->rounds &&
	    (s->since < pruned || s->since > last || (want && strcmp(want, epoch)))) {
		/* History is lost (or never was): start afresh, live from now. */
		s->since = -1;
		if (o->delivered < 0)
			o->delivered = last;
		sub_answer(call, s, o->delivered, epoch, false, true);
		return;
	}
	if (o->delivered < 0)
		o->delivered = last;
	live = o->delivered;
	for (int r = 0; r < rows; r++) {
		int64_t seq = ad_sql_int(res, 2, r, 0);

		if (seq > live)
			break;
		if (json_array_size(s->replay) == REPLAY_MAX) {
			int64_t top = json_integer_value(json_object_get(
				json_array_get(s->replay, REPLAY_MAX - 1), "seq"));

			sub_answer(call, s, top, epoch, true, false);
			return;
		}
		json_array_append_new(s->replay, json_pack("{s:o,s:o,s:o,s:I}",
			"entity", ad_sql_string(res, 2, r, 1), "op", ad_sql_string(res, 2, r, 2),
			"ids", ad_sql_json(res, 2, r, 3), "seq", (json_int_t)seq));
		s->from = seq;
	}
	if (s->since >= 0 && seen < live && rows <= REPLAY_MAX) {
		/* Delivered here meanwhile, past what this read saw: read on. */
		if (seen > s->from)
			s->from = seen;
		if (++s->rounds >= SUBSCRIBE_ROUNDS) {
			sub_free(s);
			ad_call_fail(call, AD_REASON_CONFLICT,
				     "The feed moves too fast to catch up; try again", NULL);
			return;
		}
		sub_round(call, s);
		return;
	}
	sub_answer(call, s, live, epoch, false, false);
}

/* One read: the org's feed row (made if missing) and the changes after s->from. */
static void sub_round(struct ad_call *call, struct sub *s)
{
	struct dm_num from = dm_num(s->from), cap = dm_num(REPLAY_MAX + 1);
	const char *p[3] = { from.v, s->names, cap.v };
	struct ad_sql *q = ad_sql_new(call, 0);

	if (!q) {
		sub_free(s);
		dm_fail_oom(call);
		return;
	}
	ad_sql_add(q, "INSERT INTO data_feed (org_id) VALUES (actiond_org()) "
		      "ON CONFLICT (org_id) DO NOTHING", 0, NULL);
	ad_sql_add(q, "SELECT last_seq, pruned_seq, epoch FROM data_feed", 0, NULL);
	if (s->since >= 0)
		ad_sql_add(q, "SELECT seq, entity, op, to_jsonb(ids) FROM data_changes "
			      "WHERE seq > $1::bigint AND entity = ANY (ARRAY("
			      "SELECT jsonb_array_elements_text($2::jsonb))) "
			      "ORDER BY seq LIMIT $3::bigint",
			   3, p);
	ad_sql_run(q, sub_done, s, sub_free);
}

void dm_changes_subscribe(struct ad_call *call)
{
	const json_t *params = ad_call_params(call);
	struct sub *s = calloc(1, sizeof(*s));
	struct org_feed *o;

	feed_start();
	if (!s || !(s->replay = json_array()) ||
	    !(s->names = json_dumps(json_object_get(params, "entities"), JSON_COMPACT))) {
		if (s)
			json_decref(s->replay);
		free(s);
		dm_fail_oom(call);
		return;
	}
	s->org = ad_call_org_id(call);
	s->entities = json_object_get(params, "entities");
	s->since = -1;
	if (ad_param_int(call, "since", &s->since))
		s->from = s->since;
	if (!(o = org_get(s->org))) {
		json_decref(s->replay);
		free(s->names);
		free(s);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "Too many orgs are subscribed here",
			     NULL);
		return;
	}
	o->pending++;
	sub_round(call, s);
}

void dm_changes_unsubscribe(struct ad_call *call)
{
	const json_t *entities = json_object_get(ad_call_params(call), "entities");
	char topic[128];
	size_t i;
	json_t *e;

	json_array_foreach(entities, i, e) {
		topic_of(json_string_value(e), topic, sizeof(topic));
		ad_call_unsubscribe(call, topic);
	}
	ad_call_reply(call, json_pack("{s:I}", "unsubscribed", (json_int_t)i));
}
