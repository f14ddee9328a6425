/*
 * cluster.c - instances, cross-instance credential changes and revocations.
 */
#include "buf.h"
#include "cluster.h"
#include "actiond/sql.h"
#include "pg.h"
#include "auth.h"
#include "module.h"
#include "log.h"
#include "loop.h"

#include <libwebsockets.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HEARTBEAT_MS 5000

uint64_t ad_cluster_revocations, ad_cluster_ack_timeouts;

static char instance_id[33];
static struct ad_timer heartbeat_timer;
static bool running;
static uint64_t revoke_seq;

/* A revocation waiting for the other instances to acknowledge. */
struct revwait {
	struct ad_list node;
	struct ad_call *call;
	struct ad_timer timer;
	char req[64];
	char **pending;        /* instance ids yet to acknowledge */
	size_t npending, ninstances;
	long long revoked;
	size_t closed;
	char report_field[32];   /* "" or the name of an extra count answered */
	long long report;
	bool none_is_error;
	bool in_revoke;        /* inside ad_auth_revoke(): defer a cancel */
	bool cancelled;
	struct ad_flush_wait *flush; /* this instance's close frames */
	bool flushed;
	bool arming;
};

static struct ad_list waits = { &waits, &waits };

/*
 * Acknowledgements that arrived before their revocation's own transaction
 * result did (the listener and the pool are different connections).  Kept
 * briefly, bounded, and consumed when the wait is registered.
 */
#define EARLY_ACKS 256
#define EARLY_ACK_TTL_US (10 * 1000 * 1000)
static struct early_ack {
	char req[64];
	char from[33];
	int64_t at;
} early[EARLY_ACKS];
static unsigned early_next;

static void early_ack_keep(const char *req, const char *from)
{
	struct early_ack *e = &early[early_next++ % EARLY_ACKS];

	snprintf(e->req, sizeof(e->req), "%s", req);
	snprintf(e->from, sizeof(e->from), "%s", from);
	e->at = lws_now_usecs();
}

const char *ad_cluster_instance(void)
{
	return instance_id;
}

static int64_t wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- instance registration ---------------------------------------------- */

static void heartbeat_done(void *arg, enum ad_pg_status st, PGresult *const *r,
			   int n, int failed)
{
	(void)arg;
	(void)r;
	(void)n;
	(void)failed;
	if (st != AD_PG_OK && st != AD_PG_UNAVAILABLE)
		ad_log_warn("instance heartbeat failed");
}

static void heartbeat(struct ad_timer *t)
{
	const char *p[1] = { instance_id };
	struct ad_pg_stmt s = {
		"INSERT INTO instances (id) VALUES ($1) "
		"ON CONFLICT (id) DO UPDATE SET seen_at = now()",
		1, p
	};

	if (!running)
		return;
	if (ad_pg_ready())
		ad_pg_submit(&s, 1, 0, NULL, heartbeat_done, NULL);
	ad_timer_start(t, HEARTBEAT_MS, heartbeat);
}

int ad_cluster_register(const char *conninfo)
{
	unsigned char raw[16];
	const char *p[1] = { instance_id };
	PGconn *c = PQconnectdb(conninfo);
	PGresult *r;
	int ret = -1;

	randombytes_buf(raw, sizeof(raw));
	sodium_bin2hex(instance_id, sizeof(instance_id), raw, sizeof(raw));
	if (PQstatus(c) == CONNECTION_OK) {
		r = PQexecParams(c, "INSERT INTO instances (id) VALUES ($1)", 1, NULL, p,
				 NULL, NULL, 0);
		ret = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : -1;
		PQclear(r);
	}
	if (ret)
		ad_log_error("cannot register this instance: %s", PQerrorMessage(c));
	PQfinish(c);
	return ret;
}

int ad_cluster_init(void)
{
	running = true;
	ad_timer_start(&heartbeat_timer, HEARTBEAT_MS, heartbeat);
	return 0;
}

static void revwait_free(struct revwait *w);

void ad_cluster_shutdown(const char *conninfo)
{
	const char *p[1] = { instance_id };
	PGconn *c;

	if (!running)
		return;
	running = false;
	ad_timer_stop(&heartbeat_timer);
	while (!ad_list_empty(&waits)) {
		struct revwait *w = ad_container_of(ad_list_first(&waits), struct revwait,
						    node);
		struct ad_call *call = w->call;

		/* Its flush wait may still be counted by sockets that close
		 * later (lws_context_destroy): orphan it, never free it here. */
		ad_call_on_cancel(call, NULL, NULL);
		revwait_free(w);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "shutting down", NULL);
	}
	c = PQconnectdb(conninfo);
	if (PQstatus(c) == CONNECTION_OK)
		PQclear(PQexecParams(c, "DELETE FROM instances WHERE id = $1", 1, NULL, p,
				     NULL, NULL, 0));
	PQfinish(c);
}

/* ---- revocation ------------------------------------------------------------ */

static void revwait_free(struct revwait *w)
{
	ad_flush_wait_orphan(w->flush);
	ad_list_del(&w->node);
	ad_timer_stop(&w->timer);
	for (size_t i = 0; i < w->npending; i++)
		free(w->pending[i]);
	free(w->pending);
	free(w);
}

static void revwait_answer(struct revwait *w)
{
	struct ad_call *call = w->call;
	json_t *missing = json_array();

	for (size_t i = 0; i < w->npending; i++)
		if (w->pending[i])
			json_array_append_new(missing, json_string(w->pending[i]));
	if (w->revoked == 0 && w->none_is_error) {
		json_decref(missing);
		revwait_free(w);
		ad_call_fail(call, AD_REASON_NOT_FOUND, "Nothing to revoke", NULL);
		return;
	}
	ad_call_on_cancel(call, NULL, NULL);
	{
		json_t *a = json_pack("{s:I,s:I,s:I,s:I,s:o}", "revoked",
				      (json_int_t)w->revoked, "sockets_closed",
				      (json_int_t)w->closed, "instances",
				      (json_int_t)w->ninstances, "instances_acked",
				      (json_int_t)(w->ninstances - json_array_size(missing)),
				      "instances_missing", missing);

		if (a && w->report_field[0])
			json_object_set_new(a, w->report_field, json_integer(w->report));
		ad_call_reply(call, a);
	}
	revwait_free(w);
}

static void ack_from(struct revwait *w, const char *from)
{
	for (size_t i = 0; i < w->npending; i++)
		if (w->pending[i] && !strcmp(w->pending[i], from)) {
			free(w->pending[i]);
			w->pending[i] = NULL;
		}
}

/* Applies acknowledgements that came before the wait existed. */
static void early_acks_apply(struct revwait *w)
{
	int64_t now = lws_now_usecs();

	for (size_t i = 0; i < EARLY_ACKS; i++)
		if (early[i].req[0] && now - early[i].at < EARLY_ACK_TTL_US &&
		    !strcmp(early[i].req, w->req)) {
			ack_from(w, early[i].from);
			early[i].req[0] = '\0';
		}
}

static size_t pending_left(const struct revwait *w)
{
	size_t n = 0;

	for (size_t i = 0; i < w->npending; i++)
		n += w->pending[i] != NULL;
	return n;
}

/* Answers once the local close frames are out and every instance acked. */
static void revwait_maybe_answer(struct revwait *w)
{
	if (w->flushed && !pending_left(w))
		revwait_answer(w);
}

static void revwait_flushed(struct ad_flush_wait *f)
{
	struct revwait *w = f->arg;

	free(f);
	w->flush = NULL;
	w->flushed = true;
	if (!w->arming)
		revwait_maybe_answer(w);
}

static void revwait_timeout(struct ad_timer *t)
{
	struct revwait *w = ad_container_of(t, struct revwait, timer);

	ad_cluster_ack_timeouts++;
	ad_log_warn("revocation %s: %zu instances did not acknowledge", w->req,
		    pending_left(w));
	revwait_answer(w);
}

static void revwait_cancel(struct ad_call *call, void *arg)
{
	struct revwait *w = arg;

	if (w->in_revoke) { /* the caller's own socket was among those closed */
		w->cancelled = true;
		return;
	}
	revwait_free(w);
	ad_call_fail(call, AD_REASON_CANCELLED, "cancelled", NULL);
}

static json_t *scope_json(const struct ad_revoke_scope *s)
{
	return json_pack("{s:I,s:I,s:I,s:I,s:i,s:I}", "cred", (json_int_t)s->cred_id,
			 "account", (json_int_t)s->account_id, "agent",
			 (json_int_t)s->agent_session_id, "org", (json_int_t)s->org_id,
			 "kind", (int)s->kind, "except", (json_int_t)s->except_cred_id);
}

struct revstate {
	struct ad_revoke_scope scope;
	char reason[64];
	char req[64];
	int nstmts;
	int report_stmt;         /* -1, or the statement whose rows are reported */
	char report_field[32];
	bool none_is_error;
};

struct ad_revocation {
	struct ad_call *call;
	struct ad_sql *q;
	struct revstate *st;
	char *payload;          /* the cross-instance notification */
	bool broken;
};

/*
 * The revoking statement has committed (with its notification, if it
 * revoked anything).  Closes this instance's sockets - only when something
 * was revoked: the cache follows what the database committed - and waits
 * for the other instances' acknowledgements.
 */
static void revoke_committed(struct ad_call *call, void *arg,
			     const struct ad_sql_result *res)
{
	struct revstate *st = arg;
	int inst = st->nstmts - 1, ninst = ad_sql_rows(res, inst);
	struct revwait *w = calloc(1, sizeof(*w));

	if (!w) {
		free(st);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ad_cluster_revocations++;
	w->call = call;
	w->none_is_error = st->none_is_error;
	w->revoked = ad_sql_rows(res, 0);
	if (st->report_stmt > 0) {
		snprintf(w->report_field, sizeof(w->report_field), "%s", st->report_field);
		w->report = ad_sql_affected(res, st->report_stmt);
	}
	memcpy(w->req, st->req, sizeof(w->req));
	w->pending = calloc((size_t)ninst + 1, sizeof(char *));
	/* Nothing revoked, nothing sent: no instance has anything to say. */
	for (int i = 0; w->revoked && w->pending && i < ninst; i++)
		w->pending[w->npending++] = strdup(ad_sql_text(res, inst, i, 0, NULL));
	w->ninstances = (size_t)ninst;
	early_acks_apply(w);
	ad_list_add_tail(&waits, &w->node);
	ad_call_on_cancel(call, revwait_cancel, w);
	w->flush = w->revoked ? ad_flush_wait_new(revwait_flushed, w) : NULL;
	if (!w->flush)
		w->flushed = true;
	/* Close this instance's sockets now, before anything answers. */
	w->in_revoke = true;
	if (w->revoked)
		w->closed = ad_auth_revoke(&st->scope, st->reason, lws_now_usecs(), w->flush);
	w->in_revoke = false;
	free(st);
	if (w->cancelled) {
		revwait_free(w);
		ad_call_fail(call, AD_REASON_CANCELLED, "cancelled", NULL);
		return;
	}
	if (w->flush) {
		w->arming = true;
		ad_flush_wait_arm(w->flush);
		w->arming = false;
	}
	if (w->flushed && !pending_left(w)) {
		revwait_answer(w);
		return;
	}
	ad_timer_start(&w->timer, AD_REVOKE_ACK_TIMEOUT_MS, revwait_timeout);
}

struct ad_revocation *ad_revocation_new(struct ad_call *call,
					const struct ad_revoke_scope *scope,
					const char *reason)
{
	struct ad_revocation *rv = calloc(1, sizeof(*rv));
	json_t *msg;

	if (!rv)
		return NULL;
	rv->call = call;
	rv->st = calloc(1, sizeof(*rv->st));
	rv->q = ad_sql_new(call, 0);
	if (!rv->st || !rv->q)
		goto fail;
	rv->st->scope = *scope;
	rv->st->report_stmt = -1;
	snprintf(rv->st->reason, sizeof(rv->st->reason), "%s", reason);
	snprintf(rv->st->req, sizeof(rv->st->req), "%s/%llu", instance_id,
		 (unsigned long long)++revoke_seq);
	msg = json_pack("{s:s,s:s,s:s,s:I,s:s,s:o}", "op", "revoke", "from", instance_id,
			"req", rv->st->req, "t", (json_int_t)wall_us(), "reason", reason,
			"scope", scope_json(scope));
	rv->payload = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
	if (rv->payload)
		return rv;
fail:
	ad_sql_free(rv->q);
	free(rv->st);
	free(rv);
	return NULL;
}

int ad_revocation_mark(struct ad_revocation *rv, const char *sql, int nparams,
		       const char *const *params)
{
	const char *p[32];
	char *wrapped = NULL;
	int r;

	if (rv->broken || nparams < 0 || nparams > 30 ||
	    asprintf(&wrapped,
		     "WITH revoked AS (%s) SELECT pg_notify('actiond', $%d) FROM revoked",
		     sql, nparams + 1) < 0) {
		rv->broken = true;
		return -1;
	}
	/* One row per revoked row; NOTIFY sends identical payloads once. */
	for (int i = 0; i < nparams; i++)
		p[i] = params[i];
	p[nparams] = rv->payload;
	r = ad_sql_add(rv->q, wrapped, nparams + 1, p);
	free(wrapped);
	return r;
}

struct ad_sql *ad_revocation_sql(struct ad_revocation *rv)
{
	return rv->q;
}

void ad_revocation_report(struct ad_revocation *rv, const char *field)
{
	rv->st->report_stmt = ad_sql_count(rv->q) - 1;
	snprintf(rv->st->report_field, sizeof(rv->st->report_field), "%s", field);
}

void ad_revocation_run(struct ad_revocation *rv, bool none_is_error)
{
	const char *ip[1] = { instance_id };
	struct ad_call *call = rv->call;
	struct revstate *st = rv->st;
	struct ad_sql *q = rv->q;
	bool broken = rv->broken;
	int n;

	ad_sql_add(q, "SELECT id FROM instances WHERE id <> $1 "
		      "AND seen_at > now() - interval '15 seconds'",
		   1, ip);
	st->none_is_error = none_is_error;
	n = ad_sql_count(q);
	st->nstmts = n;
	free(rv->payload);
	free(rv);
	if (broken) {
		free(st);
		ad_sql_free(q);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "The revocation could not be built",
			     NULL);
		return;
	}
	ad_sql_run(q, revoke_committed, st, free);
}

/* ---- notifications from the other instances -------------------------------- */

static void ack_done(void *arg, enum ad_pg_status st, PGresult *const *r, int n,
		     int failed)
{
	(void)arg;
	(void)st;
	(void)r;
	(void)n;
	(void)failed;
}

/* The revoked sockets here have their close frames out: acknowledge. */
static void ack_flushed(struct ad_flush_wait *f)
{
	const char *p[1] = { f->arg };
	struct ad_pg_stmt stmt = { "SELECT pg_notify('actiond', $1)", 1, p };

	if (running)
		ad_pg_submit(&stmt, 1, 0, NULL, ack_done, NULL);
	free(f->arg);
	free(f);
}

/*
 * The monotonic time of a wall-clock time sent_us, for the revoke-to-close
 * histogram (instances on other hosts add their clock skew).  A send time
 * that is missing or more than a day away from now counts as now: the
 * difference would mean nothing, and could overflow.
 */
static int64_t sent_to_monotonic(int64_t sent_us)
{
	const int64_t day = 86400ll * 1000000;
	int64_t now = lws_now_usecs(), wall = wall_us();

	if (sent_us < wall - day || sent_us > wall + day)
		return now;
	return now - (wall - sent_us);
}

static void on_revoke(const struct ad_cluster_msg *m)
{
	int64_t t0 = sent_to_monotonic(m->sent_us);
	json_t *ack = json_pack("{s:s,s:O,s:s}", "op", "ack", "req", m->req_json, "from",
				instance_id);
	char *payload = json_dumps(ack, JSON_COMPACT);
	struct ad_flush_wait *f = payload ? ad_flush_wait_new(ack_flushed, payload) : NULL;

	json_decref(ack);
	ad_auth_revoke(&m->scope, m->reason, t0, f);
	if (f)
		ad_flush_wait_arm(f); /* acknowledges once the close frames are out */
	else
		free(payload);
}

static void on_ack(const char *req, const char *from)
{
	struct ad_list *pos, *tmp;

	ad_list_foreach_safe(pos, tmp, &waits) {
		struct revwait *w = ad_container_of(pos, struct revwait, node);

		if (strcmp(w->req, req))
			continue;
		ack_from(w, from);
		revwait_maybe_answer(w);
		return;
	}
	/* Ours, but our transaction's result has not come back yet. */
	if (!strncmp(req, instance_id, strlen(instance_id)))
		early_ack_keep(req, from);
}

/*
 * A credential another instance created, loaded.  arg carries the local
 * revocation count when the load was sent: a revocation applied since then
 * that covers it wins (the row may have been read before it committed).
 */
static void cred_loaded(void *arg, enum ad_pg_status st, PGresult *const *r, int n,
			int failed)
{
	uint64_t seq = (uint64_t)(uintptr_t)arg;

	(void)failed;
	if (st != AD_PG_OK || n < 1)
		return;
	for (int i = 0; i < PQntuples(r[0]); i++) {
		struct ad_cred *c = ad_auth_cred_from_row(r[0], i);

		if (c && !ad_auth_revoked_since(seq, c))
			ad_auth_cache_add(c);
		ad_cred_unref(c);
	}
}

static char *load_one_sql;

static void on_cred(int64_t cred_id)
{
	char id[32];
	const char *p[1] = { id };
	struct ad_pg_stmt s;

	if (!load_one_sql &&
	    asprintf(&load_one_sql, "%s AND c.id = $1", ad_auth_load_sql) < 0) {
		load_one_sql = NULL;
		return;
	}
	snprintf(id, sizeof(id), "%lld", (long long)cred_id);
	s = (struct ad_pg_stmt){ load_one_sql, 1, p };
	ad_pg_submit(&s, 1, 0, NULL, cred_loaded, (void *)(uintptr_t)ad_auth_revocation_seq());
}

/*
 * After the listener lost its session, notifications may have been missed:
 * load every live credential again, add what is new, and revoke locally what
 * is gone.
 */
static void resync_loaded(void *arg, enum ad_pg_status st, PGresult *const *r,
			  int n, int failed)
{
	(void)arg;
	(void)failed;
	if (st != AD_PG_OK || n < 1)
		return;
	ad_auth_resync(r[0]);
}

/* The one operation of a layer above, and its handler (see cluster.h). */
static char foreign_op[16];
static void (*foreign_fn)(const json_t *msg);

void ad_cluster_on(const char *op, void (*fn)(const json_t *msg))
{
	snprintf(foreign_op, sizeof(foreign_op), "%s", op);
	foreign_fn = fn;
}

enum ad_cluster_op ad_cluster_parse(const char *payload, struct ad_cluster_msg *m)
{
	const char *op;
	json_t *sc;
	json_int_t kind;

	memset(m, 0, sizeof(*m));
	m->msg = json_loads(payload, 0, NULL);
	op = json_string_value(json_object_get(m->msg, "op"));
	m->from = json_string_value(json_object_get(m->msg, "from"));
	if (!op)
		return m->op;
	/* Acknowledgements count whoever sent them (on_ack() matches them). */
	if (!strcmp(op, "ack")) {
		m->req = json_string_value(json_object_get(m->msg, "req"));
		if (m->req && m->from)
			m->op = AD_CLUSTER_ACK;
		return m->op;
	}
	/* Everything else this instance did already when it sent it. */
	if (!m->from || !strcmp(m->from, instance_id))
		return m->op;
	if (!strcmp(op, "revoke")) {
		sc = json_object_get(m->msg, "scope");
		kind = json_integer_value(json_object_get(sc, "kind"));
		m->scope = (struct ad_revoke_scope){
			.cred_id = json_integer_value(json_object_get(sc, "cred")),
			.account_id = json_integer_value(json_object_get(sc, "account")),
			.agent_session_id = json_integer_value(json_object_get(sc, "agent")),
			.org_id = json_integer_value(json_object_get(sc, "org")),
			.except_cred_id = json_integer_value(json_object_get(sc, "except")),
		};
		if (kind >= 0 && kind <= AD_CRED_AGENT)
			m->scope.kind = (enum ad_cred_kind)kind;
		else
			m->scope.org_id = 0; /* a kind this instance does not know */
		m->reason = json_string_value(json_object_get(m->msg, "reason"));
		if (!m->reason)
			m->reason = "revoked";
		m->sent_us = json_integer_value(json_object_get(m->msg, "t"));
		m->req_json = json_object_get(m->msg, "req");
		m->op = AD_CLUSTER_REVOKE;
	} else if (!strcmp(op, "cred")) {
		m->cred_id = json_integer_value(json_object_get(m->msg, "id"));
		m->op = AD_CLUSTER_CRED;
	} else if (foreign_fn && !strcmp(op, foreign_op)) {
		m->op = AD_CLUSTER_FOREIGN;
	} else if (!strcmp(op, "module") &&
		   json_is_string(json_object_get(m->msg, "module")) &&
		   json_is_object(json_object_get(m->msg, "msg"))) {
		m->op = AD_CLUSTER_MODULE;
	}
	return m->op;
}

void ad_cluster_msg_free(struct ad_cluster_msg *m)
{
	json_decref(m->msg);
	memset(m, 0, sizeof(*m));
}

void ad_cluster_notify(const char *payload)
{
	struct ad_cluster_msg m;

	if (!payload) {
		struct ad_pg_stmt s = { ad_auth_load_sql, 0, NULL };

		if (running)
			ad_pg_submit(&s, 1, 0, NULL, resync_loaded, NULL);
		return;
	}
	switch (ad_cluster_parse(payload, &m)) {
	case AD_CLUSTER_REVOKE:
		on_revoke(&m);
		break;
	case AD_CLUSTER_CRED:
		on_cred(m.cred_id);
		break;
	case AD_CLUSTER_ACK:
		on_ack(m.req, m.from);
		break;
	case AD_CLUSTER_FOREIGN:
		foreign_fn(m.msg);
		break;
	case AD_CLUSTER_MODULE:
		ad_modules_deliver(json_string_value(json_object_get(m.msg, "module")), m.from,
				   json_object_get(m.msg, "msg"));
		break;
	case AD_CLUSTER_IGNORE:
		break;
	}
	ad_cluster_msg_free(&m);
}

void ad_identity_metrics(struct ad_buf *b)
{
	ad_buf_metric(b, "actiond_credentials_cached", "gauge",
		      "Live database credentials held in memory.", ad_auth_cache_size());
	ad_buf_metric(b, "actiond_revocations_total", "counter",
		      "Revocations committed by this instance.", ad_cluster_revocations);
	ad_buf_metric(b, "actiond_revoke_ack_timeouts_total", "counter",
		      "Revocations answered without every instance's acknowledgement.",
		      ad_cluster_ack_timeouts);
}
