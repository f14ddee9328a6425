/*
 * audit.c - the tamper-evident trail of invocation events.
 *
 * Events are inserted by the transaction that makes the change they
 * record, unlinked.  The chainer then links them, per org, in the order it
 * finds them: seq = the org's last seq + 1, prev_hash = that row's hash
 * (64 zeros for the first), hash = BLAKE2b-256(prev_hash || canonical row),
 * where the canonical row is the compact JSON, keys sorted, of
 * {actor, at, detail, event, invocation_id, seq}.  Linking is optimistic:
 * a row is linked only while unlinked (UPDATE ... WHERE seq IS NULL), and
 * (org_id, seq) is unique, so two instances linking at once cannot fork a
 * chain: the one that loses the race rolls back and tries again later
 * (both compute the same links from the same rows).  Linked rows cannot be
 * changed by the runtime role (a trigger and column grants); audit.verify
 * finds whatever the owner changed behind its back.
 */
#include "chain.h"
#include "integrations.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINK_BATCH 60  /* statements per batch stay under 64 */
#define VERIFY_PAGE 2000
#define ZERO_HASH IG_ZERO_HASH

bool ig_event_hash(int64_t seq, const char *invocation_id, const char *at, const char *event,
		   const char *actor, const char *detail_text, const char *prev, char out[65])
{
	json_t *detail = json_loads(detail_text, JSON_DECODE_ANY, NULL);
	json_t *o = detail ? json_pack("{s:s,s:s,s:O,s:s,s:s,s:I}", "actor", actor, "at", at,
				       "detail", detail, "event", event, "invocation_id",
				       invocation_id, "seq", (json_int_t)seq)
			   : NULL;
	char *text = o ? ig_canonical(o) : NULL;

	json_decref(detail);
	json_decref(o);
	if (!text)
		return false;
	ig_hash2_hex(prev, strlen(prev), text, strlen(text), out);
	free(text);
	return true;
}

void ig_chain_walk_init(struct ig_chain_walk *w)
{
	w->seq = 0;
	memcpy(w->prev, ZERO_HASH, sizeof(w->prev));
}

const char *ig_chain_walk_step(struct ig_chain_walk *w, int64_t seq, const char *invocation_id,
			       const char *at, const char *event, const char *actor,
			       const char *detail_text, const char *prev_hash, const char *hash,
			       int64_t *ret_bad)
{
	char h[65];

	if (seq != w->seq + 1) {
		*ret_bad = w->seq + 1;
		return "missing event";
	}
	*ret_bad = seq;
	if (strcmp(prev_hash, w->prev))
		return "prev_hash does not match the previous hash";
	if (!ig_event_hash(seq, invocation_id, at, event, actor, detail_text, w->prev, h) ||
	    strcmp(h, hash))
		return "hash does not match the event";
	memcpy(w->prev, h, sizeof(w->prev));
	w->seq = seq;
	return NULL;
}

/* ---- linking ------------------------------------------------------------------------- */

struct chain_round {
	void (*done)(void *arg);
	void *arg;
	bool full;
};

static bool chaining, chain_again;
static struct ad_timer soon_timer;
static bool soon_armed;

static void round_end(struct chain_round *cr, bool more)
{
	void (*done)(void *) = cr->done;
	void *arg = cr->arg;

	free(cr);
	chaining = false;
	if (more || chain_again) {
		chain_again = false;
		ig_chain_soon();
	}
	if (done)
		done(arg);
}

static void linked(void *arg, const struct ad_sql_result *r)
{
	struct chain_round *cr = arg;

	if (ad_sql_error(r, NULL))
		ad_log(AD_LOG_DEBUG, "integrations: linking events: %s (retried)",
		       ad_sql_error_message(r));
	round_end(cr, cr->full && !ad_sql_error(r, NULL));
}

static void unlinked(void *arg, const struct ad_sql_result *r)
{
	struct chain_round *cr = arg;
	struct ad_sql *q;
	int rows = ad_sql_rows(r, 0);
	int64_t org = 0, seq = 0;
	char prev[65] = ZERO_HASH;

	if (ad_sql_error(r, NULL) || rows == 0 || !(q = ad_sql_new_background(AD_SQL_SEE_ERRORS))) {
		round_end(cr, false);
		return;
	}
	cr->full = rows == LINK_BATCH;
	for (int i = 0; i < rows; i++) {
		char hash[65];
		struct ig_num id = ig_num(ad_sql_int(r, 0, i, 0)), s;
		const char *p[4];

		if (i == 0 || ad_sql_int(r, 0, i, 1) != org) {
			org = ad_sql_int(r, 0, i, 1);
			seq = ad_sql_int(r, 0, i, 7);
			snprintf(prev, sizeof(prev), "%s", ad_sql_text(r, 0, i, 8, NULL));
		}
		seq++;
		if (!ig_event_hash(seq, ad_sql_text(r, 0, i, 2, NULL), ad_sql_text(r, 0, i, 3, NULL),
				ad_sql_text(r, 0, i, 4, NULL), ad_sql_text(r, 0, i, 5, NULL),
				ad_sql_text(r, 0, i, 6, NULL), prev, hash)) {
			ad_sql_free(q);
			round_end(cr, false);
			return;
		}
		s = ig_num(seq);
		p[0] = id.v;
		p[1] = s.v;
		p[2] = prev;
		p[3] = hash;
		ad_sql_add(q,
			   "UPDATE invocation_events SET seq = $2::bigint, prev_hash = $3, hash = $4 "
			   "WHERE id = $1::bigint AND seq IS NULL",
			   4, p);
		memcpy(prev, hash, sizeof(prev));
	}
	ad_sql_run_background(q, linked, cr);
}

void ig_chain_run(void (*done)(void *arg), void *arg)
{
	struct chain_round *cr;
	struct ad_sql *q;

	if (chaining || !(cr = calloc(1, sizeof(*cr)))) {
		chain_again = chaining;
		if (done)
			done(arg);
		return;
	}
	if (!(q = ad_sql_new_background(AD_SQL_SEE_ERRORS))) {
		free(cr);
		if (done)
			done(arg);
		return;
	}
	chaining = true;
	cr->done = done;
	cr->arg = arg;
	/* Unlinked rows, oldest first, each with its org's last link. */
	ad_sql_add(q,
		   "SELECT e.id, e.org_id, e.invocation_id, iso(e.at), e.event, e.actor, "
		   "e.detail::text, coalesce(l.seq, 0), coalesce(l.hash, '" ZERO_HASH "') "
		   "FROM (SELECT * FROM invocation_events WHERE seq IS NULL ORDER BY id LIMIT "
		   "60) e LEFT JOIN LATERAL (SELECT c.seq, c.hash FROM invocation_events c "
		   "WHERE c.org_id = e.org_id AND c.seq IS NOT NULL ORDER BY c.seq DESC LIMIT 1) "
		   "l ON true ORDER BY e.org_id, e.id",
		   0, NULL);
	ad_sql_run_background(q, unlinked, cr);
}

static void soon_fire(struct ad_timer *t)
{
	(void)t;
	soon_armed = false;
	ig_chain_run(NULL, NULL);
}

void ig_chain_soon(void)
{
	if (chaining) {
		chain_again = true;
		return;
	}
	if (!soon_armed) {
		soon_armed = true;
		ad_timer_start(&soon_timer, 20, soon_fire);
	}
}

/* ---- audit.verify ---------------------------------------------------------------------- */

struct verify {
	struct ig_chain_walk w;
	int64_t unchained;
};

static void verify_page(struct ad_call *call, struct verify *v);

static void verify_free(void *arg)
{
	free(arg);
}

static void verify_answer(struct ad_call *call, struct verify *v, int64_t bad_seq,
			  const char *reason)
{
	json_t *broken = reason ? json_pack("{s:I,s:s}", "seq", (json_int_t)bad_seq, "reason",
					    reason)
				: json_null();

	ad_call_reply(call, json_pack("{s:b,s:I,s:I,s:o,s:o}", "ok", reason == NULL, "checked",
				      (json_int_t)v->w.seq, "unchained", (json_int_t)v->unchained,
				      "head", v->w.seq ? json_string(v->w.prev) : json_null(),
				      "broken", broken));
	free(v);
}

static void verify_rows(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	struct verify *v = arg;
	int rows = ad_sql_rows(r, 0);

	if (v->w.seq == 0 && ad_sql_rows(r, 1) == 1)
		v->unchained = ad_sql_int(r, 1, 0, 0);
	for (int i = 0; i < rows; i++) {
		int64_t bad;
		const char *why = ig_chain_walk_step(
			&v->w, ad_sql_int(r, 0, i, 0), ad_sql_text(r, 0, i, 1, NULL),
			ad_sql_text(r, 0, i, 2, NULL), ad_sql_text(r, 0, i, 3, NULL),
			ad_sql_text(r, 0, i, 4, NULL), ad_sql_text(r, 0, i, 5, NULL),
			ad_sql_text(r, 0, i, 6, NULL), ad_sql_text(r, 0, i, 7, NULL), &bad);

		if (why) {
			verify_answer(call, v, bad, why);
			return;
		}
	}
	if (rows < VERIFY_PAGE) {
		verify_answer(call, v, 0, NULL);
		return;
	}
	verify_page(call, v);
}

static void verify_page(struct ad_call *call, struct verify *v)
{
	struct ad_sql *q = ad_sql_new(call, 0);
	struct ig_num after = ig_num(v->w.seq), page = ig_num(VERIFY_PAGE);

	if (!q) {
		free(v);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ad_sql_add(q,
		   "SELECT seq, invocation_id, iso(at), event, actor, detail::text, prev_hash, hash "
		   "FROM invocation_events WHERE seq > $1::bigint ORDER BY seq LIMIT $2::int",
		   2, (const char *[]){ after.v, page.v });
	if (v->w.seq == 0)
		ad_sql_add(q, "SELECT count(*) FROM invocation_events WHERE seq IS NULL", 0, NULL);
	ad_sql_run(q, verify_rows, v, verify_free);
}

void ig_audit_verify(struct ad_call *call)
{
	struct verify *v = calloc(1, sizeof(*v));

	if (!v) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ig_chain_walk_init(&v->w);
	verify_page(call, v);
}

/* ---- audit.export ---------------------------------------------------------------------- */

struct export {
	int64_t limit;
};

static void exported(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	struct export *ex = arg;
	int rows = ad_sql_rows(r, 0), n = rows > ex->limit ? (int)ex->limit : rows;
	char *lines = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&lines, &len);

	for (int i = 0; f && i < n; i++) {
		json_t *detail = ad_sql_json(r, 0, i, 5);
		json_t *o = json_pack("{s:I,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "seq",
				      (json_int_t)ad_sql_int(r, 0, i, 0), "invocation_id",
				      ad_sql_string(r, 0, i, 1), "at", ad_sql_string(r, 0, i, 2),
				      "event", ad_sql_string(r, 0, i, 3), "actor",
				      ad_sql_string(r, 0, i, 4), "detail",
				      detail ? detail : json_object(), "prev_hash",
				      ad_sql_string(r, 0, i, 6), "hash", ad_sql_string(r, 0, i, 7));
		char *text = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;

		if (text)
			fprintf(f, "%s\n", text);
		free(text);
		json_decref(o);
	}
	if (!f || fclose(f)) {
		free(ex);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ad_call_reply(call, json_pack("{s:s,s:i,s:o}", "lines", lines ? lines : "", "count", n,
				      "next_after",
				      rows > ex->limit && n ? json_integer(ad_sql_int(r, 0, n - 1, 0))
							    : json_null()));
	free(lines);
	free(ex);
}

void ig_audit_export(struct ad_call *call)
{
	struct export *ex = calloc(1, sizeof(*ex));
	struct ad_sql *q = ex ? ad_sql_new(call, 0) : NULL;
	int64_t after = 0;
	struct ig_num a, l;

	if (!q) {
		free(ex);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ex->limit = 200;
	(void)ad_param_int(call, "limit", &ex->limit);
	(void)ad_param_int(call, "after", &after);
	a = ig_num(after);
	l = ig_num(ex->limit + 1);
	ad_sql_add(q,
		   "SELECT seq, invocation_id, iso(at), event, actor, detail::text, prev_hash, hash "
		   "FROM invocation_events WHERE seq > $1::bigint ORDER BY seq LIMIT $2::int",
		   2, (const char *[]){ a.v, l.v });
	ad_sql_run(q, exported, ex, free);
}
