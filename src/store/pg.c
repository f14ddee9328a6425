/*
 * pg.c - a pool of non-blocking, pipelined libpq connections on the lws loop.
 *
 * Sockets: lws owns every descriptor it polls and closes it when the wsi
 * goes, while libpq owns its socket and replaces it on every reconnect.  So
 * each connection hands lws a dup() of PQsocket() (adopted as a raw file);
 * both descriptors share one open file description, hence one readiness.
 * When libpq's socket changes (a new connection), the old wsi is killed
 * asynchronously (closing only the dup) and the new socket is adopted.
 *
 * Jobs: each job is one pipeline segment closed by a Sync, so its statements
 * form one implicit transaction and its results arrive in order.  A scoped
 * job starts with one statement that sets app.org, statement_timeout and
 * transaction_read_only for that transaction only (set_config(..., true),
 * i.e. SET LOCAL).  A
 * connection keeps up to PIPE_DEPTH jobs in flight; more wait on a bounded
 * pending list.
 *
 * Sending: a job submitted goes on the pending list, which is sent once per
 * turn of the loop (a timer due at once), so the jobs that one turn's
 * sockets made travel together, one write per connection.  Read-only jobs
 * of the same org sent in one turn share a transaction (see send_group()):
 * one scope statement and one Sync for the lot, which halves what
 * PostgreSQL does per read.  When a connection breaks, the jobs on it fail with
 * AD_PG_UNAVAILABLE (they may or may not have committed, like any lost
 * connection); when no connection is up, new jobs fail at once.
 */
#include "buf.h"
#include "hash.h"
#include "pg.h"
#include "list.h"
#include "log.h"
#include "loop.h"

#include <arpa/inet.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PIPE_DEPTH 64
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define CONNECT_TIMEOUT_US (5 * 1000 * 1000)
#define MAX_CONNS 64
#define MAX_PREPARED 256
/*
 * Read-only jobs sharing one transaction at most (past that, the next
 * ones go to the next connection), and how far down the list to look.
 * 16 measured best: 53k reads/s against 50k with 4 and 40k with 1.
 */
#define GROUP_MAX 16
#define GROUP_SCAN 256

/*
 * What each item sent for a job serves: a statement index (>= 0), -1 for
 * setting app.org, and PREPARE_ITEM(i) for the Prepare of statement i (or of
 * the app.org statement, i = -1).
 */
#define PREPARE_ITEM(i) ((int16_t)(-(i) - 3))
#define PREPARED_STMT(item) (-(item) - 3)
/* Cancel requests being sent at once (each on a short-lived thread). */
#define MAX_CANCEL_THREADS 16
/* SQLSTATE of a statement cancelled by a request or a timeout. */
#define SQLSTATE_CANCELED "57014"
/* SQLSTATE of a statement run by a prepared name that does not exist. */
#define SQLSTATE_NO_PREPARED "26000"

static const char scope_sql[] =
	"SELECT set_config('app.org', $1, true), "
	"set_config('statement_timeout', $2, true), "
	"set_config('transaction_read_only', $3, true), "
	"set_config('app.action', $4, true)";

enum conn_state { C_DOWN = 0, C_CONNECTING, C_SETUP, C_READY };

/* A statement prepared on one session, found by the hash of its text. */
struct prep {
	uint64_t hash;
	char *sql;       /* NULL: a free slot */
};

struct pgconn {
	PGconn *pg;
	struct lws *wsi;       /* the adopted dup of PQsocket(), or NULL */
	int sock;              /* PQsocket() the wsi was made for */
	enum conn_state state;
	PostgresPollingStatusType want; /* while connecting */
	int64_t deadline_us;   /* connect timeout, or next attempt when down */
	uint32_t backoff_ms;
	bool listener;         /* the LISTEN connection, not pipelined */
	bool listening;        /* LISTEN sent on this session */
	struct ad_list inflight; /* jobs sent, oldest first */
	uint32_t ninflight;
	/*
	 * Statements prepared on this session, keyed by their text; bounded:
	 * past MAX_PREPARED, new texts run unprepared.
	 */
	struct prep prepared[MAX_PREPARED];
	int nprepared;
	uint32_t cancel_gen;     /* cancel requests issued on this session */
	bool setup_failed;
	bool in_writable;        /* inside its LWS_CALLBACK_RAW_WRITEABLE_FILE */
	bool segment_failed;     /* a statement failed since the last Sync */
	lws_sorted_usec_list_t rearm; /* asks for POLLOUT after that callback */
};

struct ad_pg_job {
	struct ad_list node;   /* on a connection's inflight list or pending */
	ad_pg_done_fn fn;
	void *arg;
	struct pgconn *conn;   /* while queued */
	bool abandoned;
	bool queued;           /* on a connection's pipeline */
	bool cancel;           /* cancel its statement when it reaches the head */
	bool cancel_sent;
	bool retried;          /* run again once after a stray cancel */
	bool scoped;
	bool read_only;
	bool no_sync;          /* grouped, not last: ends with its last item */
	bool aborted;          /* grouped: skipped after another job failed */
	bool solo;             /* never grouped again */
	uint32_t timeout_ms;
	uint32_t sent_timeout_ms; /* the statement_timeout it ran under */
	uint32_t gen;          /* the connection's cancel_gen when it was sent */
	int n;                 /* caller's statements */
	int cursor;            /* sent item whose results are being read */
	int nsent;
	int16_t *sent;         /* per sent item, see PREPARE_ITEM() */
	int failed;
	enum ad_pg_status status;
	char *org;             /* and the action after it, in one allocation */
	const char *action;
	struct ad_pg_stmt *stmts;
	PGresult **results;
};

struct ad_pg_stats ad_pg_stats;

static struct pgconn conns[MAX_CONNS + 1]; /* the last one listens */
static int nconns;
static struct ad_list pending;
static struct ad_pg_options opts;
static char *conninfo;
static char *listen_channel;
static void (*on_notify)(const char *payload);
static lws_sorted_usec_list_t pool_sul;
static lws_sorted_usec_list_t send_sul; /* sends the pending jobs */
static bool pool_up;
/*
 * Until the pool first connects (or CONNECT_TIMEOUT_US after start), jobs
 * wait on the pending list instead of failing: a call that arrives just
 * after "listening" is not refused because the pool is still connecting.
 */
static bool ever_ready;
static int64_t startup_until_us;

static bool starting(void)
{
	return !ever_ready && lws_now_usecs() < startup_until_us;
}

static void fail_pending(void);

static atomic_int cancel_threads; /* cancel requests in flight */

static void conn_fail(struct pgconn *c, const char *why);
static void send_pending(void);
static void send_soon(void);

/* ---- jobs --------------------------------------------------------------- */

static void job_free(struct ad_pg_job *j)
{
	for (int i = 0; i < j->n; i++)
		PQclear(j->results[i]);
	free(j->org);
	free(j);
}

/* Runs the callback (unless abandoned) and frees the job. */
static void job_finish(struct ad_pg_job *j, enum ad_pg_status status)
{
	if (status != AD_PG_OK && j->status == AD_PG_OK)
		j->status = status;
	if (j->status == AD_PG_ERROR)
		ad_pg_stats.errors++;
	else if (j->status == AD_PG_UNAVAILABLE)
		ad_pg_stats.unavailable++;
	if (!j->abandoned)
		j->fn(j->arg, j->status, j->results, j->n, j->failed);
	job_free(j);
}

/*
 * Copies statements and parameters into one allocation with the job, so the
 * caller's buffers may go away as soon as ad_pg_submit() returns.  Layout,
 * most aligned first: the job, statements, result pointers, parameter
 * pointers, the int16 item map, then the parameter strings.
 */
static struct ad_pg_job *job_new(const struct ad_pg_stmt *stmts, int n,
				 const struct ad_pg_scope *scope, ad_pg_done_fn fn,
				 void *arg)
{
	size_t nptrs = 0, strings = 0, size;
	const char **pp;
	struct ad_pg_job *j;
	char *p;

	for (int i = 0; i < n; i++) {
		strings += strlen(stmts[i].sql) + 1;
		nptrs += (size_t)stmts[i].nparams;
		for (int k = 0; k < stmts[i].nparams; k++)
			if (stmts[i].params[k])
				strings += strlen(stmts[i].params[k]) + 1;
	}
	size = sizeof(struct ad_pg_job) + (size_t)n * sizeof(struct ad_pg_stmt) +
	       (size_t)n * sizeof(PGresult *) + nptrs * sizeof(char *) +
	       (size_t)(2 * n + 2) * sizeof(int16_t) + strings;
	if (!(j = calloc(1, size)))
		return NULL;
	j->fn = fn;
	j->arg = arg;
	j->n = n;
	j->failed = -1;
	j->stmts = (struct ad_pg_stmt *)(j + 1);
	j->results = (PGresult **)(j->stmts + n);
	pp = (const char **)(j->results + n);
	j->sent = (int16_t *)(void *)(pp + nptrs);
	p = (char *)(j->sent + 2 * n + 2);
	for (int i = 0; i < n; i++) {
		const char **params = pp;

		pp += stmts[i].nparams;
		memcpy(p, stmts[i].sql, strlen(stmts[i].sql) + 1);
		j->stmts[i].sql = p;
		p += strlen(p) + 1;
		j->stmts[i].nparams = stmts[i].nparams;
		j->stmts[i].params = params;
		for (int k = 0; k < stmts[i].nparams; k++) {
			const char *v = stmts[i].params[k];

			if (!v) {
				params[k] = NULL;
				continue;
			}
			params[k] = p;
			memcpy(p, v, strlen(v) + 1);
			p += strlen(v) + 1;
		}
	}
	if (scope) {
		j->scoped = true;
		j->read_only = scope->read_only;
		j->timeout_ms = scope->timeout_ms ? scope->timeout_ms
						  : opts.statement_timeout_ms;
		const char *org = scope->org ? scope->org : "";
		const char *action = scope->action ? scope->action : "";
		size_t lo = strlen(org) + 1, la = strlen(action) + 1;

		if (!(j->org = malloc(lo + la))) {
			free(j);
			return NULL;
		}
		memcpy(j->org, org, lo);
		memcpy(j->org + lo, action, la);
		j->action = j->org + lo;
	}
	return j;
}

/*
 * The name of sql's prepared statement on c, preparing it if it is new;
 * NULL to run it unnamed (the table is full or out of memory), "" when
 * libpq refused to queue the Prepare.
 */
static const char *stmt_name(struct pgconn *c, struct ad_pg_job *j, const char *sql,
			     int nparams, int idx, char name[16])
{
	uint64_t h = ad_hash_text(sql);
	int k, free_slot = -1;

	for (k = 0; k < c->nprepared; k++) {
		if (!c->prepared[k].sql) {
			if (free_slot < 0)
				free_slot = k;
			continue;
		}
		if (c->prepared[k].hash == h && !strcmp(c->prepared[k].sql, sql))
			break;
	}
	if (k == c->nprepared) {
		if (free_slot >= 0)
			k = free_slot;
		else if (c->nprepared == MAX_PREPARED)
			return NULL;
		snprintf(name, 16, "a%d", k);
		if (!(c->prepared[k].sql = strdup(sql)))
			return NULL;
		if (!PQsendPrepare(c->pg, name, sql, nparams, NULL)) {
			c->prepared[k].sql = (free(c->prepared[k].sql), NULL);
			return "";
		}
		c->prepared[k].hash = h;
		if (k == c->nprepared)
			c->nprepared++;
		j->sent[j->nsent++] = PREPARE_ITEM(idx);
	}
	snprintf(name, 16, "a%d", k);
	return name;
}

/* Forgets sql's prepared statement on c (its Prepare failed). */
static void stmt_forget(struct pgconn *c, const char *sql)
{
	for (int k = 0; k < c->nprepared; k++)
		if (c->prepared[k].sql && !strcmp(c->prepared[k].sql, sql))
			c->prepared[k].sql = (free(c->prepared[k].sql), NULL);
}

static void prepared_clear(struct pgconn *c)
{
	for (int k = 0; k < c->nprepared; k++)
		c->prepared[k].sql = (free(c->prepared[k].sql), NULL);
	c->nprepared = 0;
}

/* Sends one statement, as a prepared one when possible. */
static int stmt_send(struct pgconn *c, struct ad_pg_job *j, const char *sql, int nparams,
		     const char *const *params, int idx)
{
	char name[16];
	const char *n = stmt_name(c, j, sql, nparams, idx, name);

	if (n && !*n)
		return -1;
	j->sent[j->nsent++] = (int16_t)idx;
	if (n)
		return PQsendQueryPrepared(c->pg, n, nparams, params, NULL, NULL, 0) ? 0 : -1;
	return PQsendQueryParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0) ? 0 : -1;
}

/*
 * Queues the job's statements on c's pipeline: after the scope statement
 * when scope is set (with that statement_timeout), and followed by a Sync
 * when sync is.  Statements are prepared once per session (the Prepare
 * travels in the same pipeline), so PostgreSQL parses and plans each only
 * once per connection.
 */
static int job_send(struct pgconn *c, struct ad_pg_job *j, bool scope, bool sync,
		    uint32_t timeout_ms)
{
	j->nsent = 0;
	j->sent_timeout_ms = timeout_ms;
	if (scope) {
		char ms[16];
		const char *p[4] = { j->org, ms, j->read_only ? "on" : "off", j->action };

		snprintf(ms, sizeof(ms), "%u", timeout_ms);
		if (stmt_send(c, j, scope_sql, 4, p, -1))
			return -1;
	}
	for (int i = 0; i < j->n; i++)
		if (stmt_send(c, j, j->stmts[i].sql, j->stmts[i].nparams,
			      j->stmts[i].params, i))
			return -1;
	if (sync && !PQpipelineSync(c->pg))
		return -1;
	j->no_sync = !sync;
	j->queued = true;
	j->conn = c;
	/* A cancel still on its way may hit this job: count it as issued. */
	j->gen = c->cancel_gen - (uint32_t)atomic_load(&cancel_threads);
	ad_list_add_tail(&c->inflight, &j->node);
	c->ninflight++;
	return 0;
}

/* ---- cancelling a running statement ------------------------------------ */

struct cancel_req {
	PGcancel *pc;
	char who[32];
};

static void *cancel_thread(void *arg)
{
	struct cancel_req *r = arg;
	char err[256];

	/* PQcancel opens a connection and waits: never on the loop. */
	if (!PQcancel(r->pc, err, sizeof(err)))
		ad_log_warn("cancel request for %s failed: %s", r->who, err);
	PQfreeCancel(r->pc);
	free(r);
	atomic_fetch_sub(&cancel_threads, 1);
	return NULL;
}

/* Sends a cancel request for whatever c runs now (the head job). */
static void conn_send_cancel(struct pgconn *c, struct ad_pg_job *j)
{
	struct cancel_req *r;
	pthread_attr_t attr;
	pthread_t t;

	j->cancel_sent = true;
	if (atomic_load(&cancel_threads) >= MAX_CANCEL_THREADS ||
	    !(r = calloc(1, sizeof(*r)))) {
		ad_log_warn("too many cancel requests at once; the statement timeout "
			    "will end this one");
		return;
	}
	if (!(r->pc = PQgetCancel(c->pg))) {
		free(r);
		return;
	}
	snprintf(r->who, sizeof(r->who), "connection %d", (int)(c - conns));
	c->cancel_gen++;
	ad_pg_stats.cancels++;
	atomic_fetch_add(&cancel_threads, 1);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, cancel_thread, r)) {
		atomic_fetch_sub(&cancel_threads, 1);
		PQfreeCancel(r->pc);
		free(r);
	}
	pthread_attr_destroy(&attr);
}

/* Cancels the head job of c if it asked for it. */
static void conn_cancel_head(struct pgconn *c)
{
	struct ad_pg_job *j;

	/* After a failure PostgreSQL skips the rest of the segment: the head
	 * job is not running, and a cancel would hit a later one. */
	if (ad_list_empty(&c->inflight) || c->segment_failed)
		return;
	j = ad_container_of(ad_list_first(&c->inflight), struct ad_pg_job, node);
	if (j->cancel && !j->cancel_sent)
		conn_send_cancel(c, j);
}

static void rearm_fire(lws_sorted_usec_list_t *sul)
{
	struct pgconn *c = ad_container_of(sul, struct pgconn, rearm);

	if (c->wsi)
		lws_callback_on_writable(c->wsi);
}

/*
 * Asks to hear when c's socket is writable.  lws's raw-file role clears
 * POLLOUT after the writable callback returns, so a request made inside that
 * callback would be lost: it is deferred to a timer due at once.
 */
static void conn_want_write(struct pgconn *c)
{
	if (!c->wsi)
		return;
	if (c->in_writable)
		lws_sul_schedule(ad_loop, 0, &c->rearm, rearm_fire, 1);
	else
		lws_callback_on_writable(c->wsi);
}

static void conn_flush(struct pgconn *c)
{
	int r = PQflush(c->pg);

	if (r < 0)
		conn_fail(c, PQerrorMessage(c->pg));
	else if (r > 0)
		conn_want_write(c);
}

static struct pgconn *pick_conn(void)
{
	struct pgconn *best = NULL;

	for (int i = 0; i < nconns; i++) {
		struct pgconn *c = &conns[i];

		if (c->state == C_READY && c->ninflight < PIPE_DEPTH &&
		    (!best || c->ninflight < best->ninflight))
			best = c;
	}
	return best;
}

bool ad_pg_ready(void)
{
	return ad_pg_stats.ready_conns > 0;
}

struct ad_pg_job *ad_pg_submit(const struct ad_pg_stmt *stmts, int n,
			       unsigned flags, const struct ad_pg_scope *scope,
			       ad_pg_done_fn fn, void *arg)
{
	struct ad_pg_job *j;

	(void)flags;
	ad_pg_stats.jobs++;
	if (!ad_pg_ready() && !starting()) {
		ad_pg_stats.unavailable++;
		fn(arg, AD_PG_UNAVAILABLE, NULL, 0, -1);
		return NULL;
	}
	if (!(j = job_new(stmts, n, scope, fn, arg))) {
		fn(arg, AD_PG_UNAVAILABLE, NULL, 0, -1);
		return NULL;
	}
	if (!pick_conn() && ad_pg_stats.pending >= (uint32_t)opts.max_pending) {
		j->status = AD_PG_OVERLOADED;
		job_finish(j, AD_PG_OVERLOADED);
		return NULL;
	}
	ad_list_add_tail(&pending, &j->node);
	ad_pg_stats.pending++;
	send_soon();
	return j;
}

void ad_pg_abandon(struct ad_pg_job *j)
{
	if (!j)
		return;
	if (j->queued) {
		j->abandoned = true; /* its results still have to be read */
		return;
	}
	ad_list_del(&j->node);
	ad_pg_stats.pending--;
	job_free(j);
}

void ad_pg_cancel(struct ad_pg_job *j)
{
	if (!j)
		return;
	if (!j->queued) {
		ad_pg_abandon(j);
		return;
	}
	j->abandoned = true;
	j->cancel = true;
	conn_cancel_head(j->conn);
}

/* Whether a 57014 came from a cancel request ("... due to user request"),
 * not from statement_timeout. */
static bool by_request(const PGresult *r)
{
	const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);

	return m && strstr(m, "user request");
}

/*
 * A job that failed only because of another job - a cancel meant for that
 * one reached its statement, or that one's Prepare of a statement it uses
 * was skipped - changed nothing (its transaction rolled back), so it runs
 * again, once.
 */
static bool job_retryable(const struct pgconn *c, const struct ad_pg_job *j)
{
	const char *state;

	if (j->abandoned || j->retried || j->status != AD_PG_ERROR)
		return false;
	if (j->failed < 0 || j->failed >= j->n || !j->results[j->failed])
		return false;
	state = PQresultErrorField(j->results[j->failed], PG_DIAG_SQLSTATE);
	if (!state)
		return false;
	/*
	 * A job sent while an earlier one's Prepare was queued, and that Prepare
	 * was skipped (its job failed first): the name it used does not exist.
	 * The name is forgotten by now; running the job again prepares it.
	 */
	if (!strcmp(state, SQLSTATE_NO_PREPARED))
		return true;
	if (strcmp(state, SQLSTATE_CANCELED))
		return false;
	/* Timed out in a group whose statement_timeout was shorter than its own. */
	if (j->sent_timeout_ms < j->timeout_ms)
		return true;
	/*
	 * A cancel request, where nobody asked to cancel this job: one meant for
	 * a job before it, which PostgreSQL took only once this one ran (the
	 * request is sent from a thread and delivered by a signal, so it may
	 * land after the job it was for has ended).  PostgreSQL says so in the
	 * message (a timeout says "statement timeout"); with messages in
	 * another language, cancels issued since this job was sent tell.
	 */
	if (!j->cancel && by_request(j->results[j->failed]))
		return true;
	return j->gen != c->cancel_gen;
}

/*
 * Puts j back first in line.  solo: it was skipped for another job's
 * failure, and runs again alone; else it was hit by another job's cancel
 * or Prepare, and runs again once.
 */
static void job_requeue(struct ad_pg_job *j, bool solo)
{
	for (int i = 0; i < j->n; i++) {
		PQclear(j->results[i]);
		j->results[i] = NULL;
	}
	j->status = AD_PG_OK;
	j->failed = -1;
	j->cursor = j->nsent = 0;
	j->queued = false;
	j->conn = NULL;
	j->aborted = j->no_sync = false;
	if (solo) {
		j->solo = true;
	} else {
		j->retried = true;
		ad_pg_stats.retries++;
	}
	/* First in line: it has waited once already. */
	ad_list_add_tail(pending.next, &j->node);
	ad_pg_stats.pending++;
}

/* Whether j may share a transaction with other jobs: a read-only call's. */
static bool groupable(const struct ad_pg_job *j)
{
	return j->scoped && j->read_only && !j->solo && j->n > 0;
}

/*
 * Sends j and up to GROUP_MAX - 1 later pending jobs of the same org that
 * may share its transaction, as one segment: the scope statement (under the
 * least statement_timeout of them), every job's statements, one Sync.
 * Each job is answered when its own results are in; a job whose
 * statement fails takes the rest of the segment with it (PostgreSQL skips
 * them), and those run again, alone.
 */
static int send_group(struct pgconn *c, struct ad_pg_job *j)
{
	struct ad_pg_job *group[GROUP_MAX];
	uint32_t timeout = j->timeout_ms;
	int n = 1, scanned = 0;

	group[0] = j;
	for (struct ad_list *it = pending.next; it != &pending && n < GROUP_MAX &&
					       scanned < GROUP_SCAN; scanned++) {
		struct ad_pg_job *o = ad_container_of(it, struct ad_pg_job, node);

		it = it->next;
		if (!groupable(o) || strcmp(o->org, j->org))
			continue;
		ad_list_del(&o->node);
		ad_pg_stats.pending--;
		group[n++] = o;
		if (o->timeout_ms < timeout)
			timeout = o->timeout_ms;
	}
	if (n > 1)
		ad_pg_stats.grouped += (uint64_t)n;
	for (int i = 0; i < n; i++)
		if (job_send(c, group[i], i == 0, i == n - 1, timeout)) {
			/* The ones not sent yet are lost with the connection too. */
			for (int k = i; k < n; k++)
				job_finish(group[k], AD_PG_UNAVAILABLE);
			return -1;
		}
	return 0;
}

/* Sends what is pending, as far as the connections take it: see the top. */
static void send_pending(void)
{
	bool dirty[MAX_CONNS] = { false };
	struct pgconn *c;

	lws_sul_cancel(&send_sul);
	while (!ad_list_empty(&pending) && (c = pick_conn())) {
		struct ad_pg_job *j = ad_container_of(ad_list_first(&pending),
						      struct ad_pg_job, node);
		int failed;

		ad_list_del(&j->node);
		ad_pg_stats.pending--;
		if (groupable(j)) {
			failed = send_group(c, j);
		} else if ((failed = job_send(c, j, j->scoped, true, j->timeout_ms))) {
			job_finish(j, AD_PG_UNAVAILABLE);
		}
		if (failed) {
			dirty[c - conns] = false;
			conn_fail(c, PQerrorMessage(c->pg));
			continue;
		}
		dirty[c - conns] = true;
	}
	for (int i = 0; i < nconns; i++)
		if (dirty[i] && conns[i].state == C_READY)
			conn_flush(&conns[i]);
}

static void send_fire(lws_sorted_usec_list_t *sul)
{
	(void)sul;
	send_pending();
}

void ad_pg_send_now(void)
{
	send_pending();
}

/* Sends the pending jobs at the start of the loop's next turn. */
static void send_soon(void)
{
	if (!lws_dll2_is_detached(&send_sul.list))
		return;
	lws_sul_schedule(ad_loop, 0, &send_sul, send_fire, 1);
}

/* ---- results -------------------------------------------------------------- */

/* j's results are all in: answered, or run again. */
static void job_done(struct pgconn *c, struct ad_pg_job *j)
{
	ad_list_del(&j->node);
	c->ninflight--;
	if (j->aborted && j->status == AD_PG_OK && !j->abandoned)
		job_requeue(j, true); /* another job of its group failed */
	else if (job_retryable(c, j))
		job_requeue(j, false);
	else
		job_finish(j, AD_PG_OK);
}

/*
 * Reads every result libpq has complete.  In pipeline mode each statement's
 * results end with a NULL, and each job ends with PGRES_PIPELINE_SYNC.
 */
static void conn_read_results(struct pgconn *c)
{
	while (!ad_list_empty(&c->inflight) && !PQisBusy(c->pg)) {
		struct ad_pg_job *j = ad_container_of(ad_list_first(&c->inflight),
						      struct ad_pg_job, node);
		PGresult *res = PQgetResult(c->pg);
		int item;

		if (!res) {
			j->cursor++; /* the end of one item's results */
			if (j->no_sync && j->cursor >= j->nsent)
				job_done(c, j);
			continue;
		}
		if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
			PQclear(res);
			c->segment_failed = false;
			job_done(c, j);
			continue;
		}
		item = j->cursor < j->nsent ? j->sent[j->cursor] : -1;
		if (PQresultStatus(res) == PGRES_PIPELINE_ABORTED) {
			/*
			 * Skipped after an earlier failure of its job: a Prepare
			 * skipped so never made its statement, which must be
			 * prepared again next time.
			 */
			if (item < -1) {
				int st = PREPARED_STMT(item);

				stmt_forget(c, st >= 0 ? j->stmts[st].sql : scope_sql);
			}
			j->aborted = true;
			PQclear(res);
			continue;
		}
		if (PQresultStatus(res) == PGRES_FATAL_ERROR && item < -1) {
			/* A Prepare failed: forget it, and blame its statement. */
			int st = PREPARED_STMT(item);

			stmt_forget(c, st >= 0 ? j->stmts[st].sql : scope_sql);
			item = st;
		}
		if (PQresultStatus(res) == PGRES_FATAL_ERROR)
			c->segment_failed = true;
		if (PQresultStatus(res) == PGRES_FATAL_ERROR && j->status == AD_PG_OK) {
			j->status = AD_PG_ERROR;
			/* A failure setting app.org counts for the first statement. */
			j->failed = item >= 0 ? item : 0;
			if (item < 0 && j->n > 0 && !j->results[0]) {
				j->results[0] = res; /* keep the error */
				continue;
			}
		}
		if (item >= 0 && item < j->n) {
			PQclear(j->results[item]);
			j->results[item] = res;
		} else {
			PQclear(res);
		}
	}
	/* Whatever is at the head now is waiting for PostgreSQL: cancel it if
	 * it asked (not earlier: its results might have been in already). */
	conn_cancel_head(c);
	send_soon();
}

static void drain_listener(struct pgconn *c)
{
	PGnotify *n;
	PGresult *res;

	while (!PQisBusy(c->pg) && (res = PQgetResult(c->pg)))
		PQclear(res);
	while ((n = PQnotifies(c->pg))) {
		ad_pg_stats.notifications++;
		if (on_notify)
			on_notify(n->extra);
		PQfreemem(n);
	}
}

/* ---- connections ---------------------------------------------------------- */

static void conn_detach_wsi(struct pgconn *c)
{
	lws_sul_cancel(&c->rearm);
	if (!c->wsi)
		return;
	lws_set_opaque_user_data(c->wsi, NULL);
	lws_rx_flow_control(c->wsi, 0);
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
	c->wsi = NULL;
	c->sock = -1;
}

/* Gives lws a dup of libpq's current socket, if it changed. */
static int conn_adopt(struct pgconn *c)
{
	lws_sock_file_fd_type fd;
	int s = PQsocket(c->pg);

	if (s < 0)
		return -1;
	if (c->wsi && s == c->sock)
		return 0;
	conn_detach_wsi(c);
	fd.filefd = dup(s);
	if (fd.filefd < 0)
		return -1;
	c->wsi = lws_adopt_descriptor_vhost(ad_loop_vhost, LWS_ADOPT_RAW_FILE_DESC, fd,
					    AD_PG_PROTOCOL, NULL);
	if (!c->wsi) {
		close(fd.filefd);
		return -1;
	}
	lws_set_opaque_user_data(c->wsi, c);
	c->sock = s;
	return 0;
}

static void pool_sul_arm(int64_t at)
{
	int64_t now = lws_now_usecs();

	lws_sul_schedule(ad_loop, 0, &pool_sul, pool_sul.cb,
			 at > now ? at - now : 1);
}

static void conn_down(struct pgconn *c)
{
	conn_detach_wsi(c);
	if (c->pg) {
		PQfinish(c->pg);
		c->pg = NULL;
	}
	if (c->state == C_READY && !c->listener)
		ad_pg_stats.ready_conns--;
	c->state = C_DOWN;
	c->segment_failed = false;
	c->listening = false;
	prepared_clear(c); /* a new session knows none of them */
	c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (c->backoff_ms > BACKOFF_MAX_MS)
		c->backoff_ms = BACKOFF_MAX_MS;
	c->deadline_us = lws_now_usecs() + (int64_t)c->backoff_ms * 1000;
	pool_sul_arm(c->deadline_us);
}

static void conn_fail(struct pgconn *c, const char *why)
{
	size_t wl = strlen(why);

	while (wl && why[wl - 1] == '\n')
		wl--;
	if (c->state == C_READY)
		ad_log_warn("database connection lost: %.*s", (int)wl, why);
	else
		ad_log_debug("database connection attempt failed: %.*s", (int)wl, why);
	while (!ad_list_empty(&c->inflight)) {
		struct ad_pg_job *j = ad_container_of(ad_list_first(&c->inflight),
						      struct ad_pg_job, node);

		ad_list_del(&j->node);
		job_finish(j, AD_PG_UNAVAILABLE);
	}
	c->ninflight = 0;
	conn_down(c);
	/* With nothing left to send on, waiting jobs fail now, not later. */
	if (!ad_pg_ready() && !starting())
		fail_pending();
}

static void fail_pending(void)
{
	while (!ad_list_empty(&pending)) {
		struct ad_pg_job *j = ad_container_of(ad_list_first(&pending),
						      struct ad_pg_job, node);

		ad_list_del(&j->node);
		ad_pg_stats.pending--;
		job_finish(j, AD_PG_UNAVAILABLE);
	}
}

/* The session is set up: pipeline mode, and jobs may flow. */
static void conn_pipeline(struct pgconn *c)
{
	if (!PQenterPipelineMode(c->pg)) {
		conn_fail(c, PQerrorMessage(c->pg));
		return;
	}
	c->state = C_READY;
	ever_ready = true;
	if (ad_pg_stats.ready_conns++ == 0)
		ad_log_info("database connected");
	send_pending();
}

/*
 * Reads the answer to the session setup (role and statement timeout).  A
 * failure here is a configuration problem (say, the runtime role does not
 * exist): it is logged as an error, and the connection retried with backoff.
 */
static void conn_setup_results(struct pgconn *c)
{
	PGresult *res;

	while (!PQisBusy(c->pg) && (res = PQgetResult(c->pg))) {
		if (PQresultStatus(res) == PGRES_FATAL_ERROR) {
			ad_log_error("database session setup failed: %s",
				     PQresultErrorMessage(res));
			c->setup_failed = true;
		}
		PQclear(res);
	}
	if (PQisBusy(c->pg))
		return;
	if (c->setup_failed) {
		c->setup_failed = false;
		conn_fail(c, "session setup failed");
		return;
	}
	conn_pipeline(c);
}

static void conn_ready(struct pgconn *c)
{
	char setup[160];

	/* Counted as ready only once set up (conn_pipeline). */
	c->state = c->listener ? C_READY : C_SETUP;
	c->backoff_ms = 0;
	if (PQsetnonblocking(c->pg, 1)) {
		conn_fail(c, "cannot set non-blocking mode");
		return;
	}
	if (c->listener) {
		char *chan = PQescapeIdentifier(c->pg, listen_channel, strlen(listen_channel));
		char sql[256];

		snprintf(sql, sizeof(sql), "LISTEN %s", chan ? chan : "actiond");
		PQfreemem(chan);
		if (!PQsendQuery(c->pg, sql)) {
			conn_fail(c, PQerrorMessage(c->pg));
			return;
		}
		c->listening = true;
		conn_flush(c);
		/* Whatever was sent while it was down is lost: say so. */
		if (on_notify)
			on_notify(NULL);
		return;
	}
	/*
	 * Pooled sessions serve calls: the runtime role, a statement timeout,
	 * and generic plans for prepared statements.  Left to choose, the
	 * planner keeps planning anew each execution when a custom plan looks
	 * cheaper than the generic one, which under row-level security it
	 * nearly always does; every statement here is parameterised on keys
	 * (org, entity, ids), whose generic plans are the same index scans.
	 */
	snprintf(setup, sizeof(setup),
		 "%sSET statement_timeout = %u; SET plan_cache_mode = force_generic_plan",
		 opts.runtime_role ? "SET ROLE " AD_PG_RUNTIME_ROLE "; " : "",
		 opts.statement_timeout_ms);
	if (!PQsendQuery(c->pg, setup)) {
		conn_fail(c, PQerrorMessage(c->pg));
		return;
	}
	conn_flush(c);
}

/* Drives PQconnectPoll; call when the socket is ready as c->want says. */
static void conn_connect_step(struct pgconn *c)
{
	c->want = PQconnectPoll(c->pg);
	if (c->want == PGRES_POLLING_FAILED) {
		conn_fail(c, PQerrorMessage(c->pg));
		return;
	}
	if (conn_adopt(c)) {
		conn_fail(c, "cannot watch the database socket");
		return;
	}
	if (c->want == PGRES_POLLING_OK)
		conn_ready(c);
	else if (c->want == PGRES_POLLING_WRITING)
		conn_want_write(c);
}

static void conn_start(struct pgconn *c)
{
	ad_pg_stats.reconnects++;
	c->pg = PQconnectStart(conninfo);
	if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
		conn_fail(c, c->pg ? PQerrorMessage(c->pg) : "out of memory");
		return;
	}
	c->state = C_CONNECTING;
	c->want = PGRES_POLLING_WRITING;
	c->deadline_us = lws_now_usecs() + CONNECT_TIMEOUT_US;
	pool_sul_arm(c->deadline_us);
	if (conn_adopt(c)) {
		conn_fail(c, "cannot watch the database socket");
		return;
	}
	lws_callback_on_writable(c->wsi);
}

/* Starts due reconnects and times out slow connection attempts. */
static void pool_tick(lws_sorted_usec_list_t *sul)
{
	int64_t now = lws_now_usecs(), next = 0;

	(void)sul;
	if (!pool_up)
		return;
	/* The start-up grace is over and nothing connected: stop waiting. */
	if (!ever_ready && !starting() && !ad_pg_ready())
		fail_pending();
	for (int i = 0; i <= nconns; i++) {
		struct pgconn *c = &conns[i];

		if (i == nconns && !listen_channel)
			break;
		if (c->state == C_DOWN && now >= c->deadline_us)
			conn_start(c);
		else if ((c->state == C_CONNECTING || c->state == C_SETUP) &&
			 now >= c->deadline_us)
			conn_fail(c, "connection attempt timed out");
		if (c->state != C_READY && (!next || c->deadline_us < next))
			next = c->deadline_us;
	}
	if (next)
		pool_sul_arm(next);
}

int ad_pg_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
		   void *in, size_t len)
{
	struct pgconn *c = lws_get_opaque_user_data(wsi);

	(void)user;
	(void)in;
	(void)len;
	switch (reason) {
	case LWS_CALLBACK_RAW_RX_FILE:
		if (!c || c->wsi != wsi)
			return 0;
		if (c->state == C_CONNECTING) {
			if (c->want == PGRES_POLLING_READING)
				conn_connect_step(c);
			return 0;
		}
		if (!PQconsumeInput(c->pg)) {
			conn_fail(c, PQerrorMessage(c->pg));
			return 0;
		}
		if (c->listener)
			drain_listener(c);
		else if (c->state == C_SETUP)
			conn_setup_results(c);
		else
			conn_read_results(c);
		if (c->state == C_READY && PQstatus(c->pg) == CONNECTION_BAD)
			conn_fail(c, PQerrorMessage(c->pg));
		return 0;
	case LWS_CALLBACK_RAW_WRITEABLE_FILE:
		if (!c || c->wsi != wsi)
			return 0;
		c->in_writable = true;
		if (c->state == C_CONNECTING) {
			if (c->want == PGRES_POLLING_WRITING)
				conn_connect_step(c);
		} else {
			conn_flush(c);
		}
		c->in_writable = false;
		return 0;
	case LWS_CALLBACK_RAW_CLOSE_FILE:
		/* lws gave up the descriptor (hang-up seen): libpq will notice. */
		if (c && c->wsi == wsi) {
			c->wsi = NULL;
			c->sock = -1;
			if (c->state != C_DOWN)
				conn_fail(c, "database socket closed");
		}
		return 0;
	default:
		return 0;
	}
}

/* The first address of host, as text in ip (INET6_ADDRSTRLEN); 0 or -1. */
static int resolve_one(const char *host, char *ip)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
	unsigned char tmp[sizeof(struct in6_addr)];
	int rc;

	/* Numeric already, or a Unix socket directory: nothing to look up. */
	if (host[0] == '/' || inet_pton(AF_INET, host, tmp) == 1 ||
	    inet_pton(AF_INET6, host, tmp) == 1) {
		ip[0] = '\0';
		return 0;
	}
	if ((rc = getaddrinfo(host, NULL, &hints, &res))) {
		ad_log_error("database host %s: %s", host, gai_strerror(rc));
		return -1;
	}
	if (res->ai_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip,
			  INET6_ADDRSTRLEN);
	else
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, ip,
			  INET6_ADDRSTRLEN);
	freeaddrinfo(res);
	ad_log_info("database host %s is %s (resolved once, at start)", host, ip);
	return 0;
}

/*
 * PQconnectStart() resolves host names with the blocking getaddrinfo(), and
 * it runs on the loop at every reconnect.  So each host name - database.url
 * may list several, "host=a,b" or "postgresql://a,b/db" - is resolved here,
 * once, before the loop starts, and handed to libpq as the matching element
 * of hostaddr (host stays, for TLS and messages); paths (Unix sockets) and
 * numeric addresses get an empty element, which needs no lookup either.
 * Returns a new string, or NULL on failure (logged).
 */
static char *resolve_conninfo(const char *ci)
{
	PQconninfoOption *parsed = PQconninfoParse(ci, NULL), *o;
	const char *host = NULL, *hostaddr = NULL;
	char *hosts = NULL, *save = NULL, *out = NULL, *list = NULL;
	size_t len = 0, cap = 0;
	bool any = false;

	if (!parsed) {
		ad_log_error("database.url is not a valid connection string");
		return NULL;
	}
	for (o = parsed; o->keyword; o++) {
		if (!strcmp(o->keyword, "host") && o->val && *o->val)
			host = o->val;
		if (!strcmp(o->keyword, "hostaddr") && o->val && *o->val)
			hostaddr = o->val;
	}
	if (!host || hostaddr) {
		out = strdup(ci);
		goto done;
	}
	if (!(hosts = strdup(host)))
		goto done;
	for (char *h = strtok_r(hosts, ",", &save); h; h = strtok_r(NULL, ",", &save)) {
		char ip[INET6_ADDRSTRLEN];
		size_t n;

		if (resolve_one(h, ip))
			goto done;
		any |= ip[0] != '\0';
		n = strlen(ip) + 2;
		if (len + n > cap) {
			char *t;

			cap = (len + n) * 2;
			if (!(t = realloc(list, cap)))
				goto done;
			list = t;
		}
		len += (size_t)sprintf(list + len, "%s%s", len ? "," : "", ip);
	}
	if (!any) { /* nothing was a name */
		out = strdup(ci);
		goto done;
	}
	/* A URI ("postgresql://...") takes it as a query parameter. */
	if (asprintf(&out, strstr(ci, "://") ? (strchr(ci, '?') ? "%s&hostaddr=%s"
								  : "%s?hostaddr=%s")
					     : "%s hostaddr='%s'",
		     ci, list) < 0)
		out = NULL;
done:
	free(hosts);
	free(list);
	PQconninfoFree(parsed);
	return out;
}

int ad_pg_init(const struct ad_pg_options *opt, const char *channel,
	       void (*notify_fn)(const char *payload))
{
	opts = *opt;
	if (opts.pool_size < 1)
		opts.pool_size = 1;
	if (opts.pool_size > MAX_CONNS)
		opts.pool_size = MAX_CONNS;
	if (opts.max_pending < 1)
		opts.max_pending = 1000;
	if (!opts.statement_timeout_ms)
		opts.statement_timeout_ms = 30000;
	conninfo = resolve_conninfo(opt->conninfo);
	listen_channel = channel ? strdup(channel) : NULL;
	if (!conninfo || (channel && !listen_channel))
		return -1;
	on_notify = notify_fn;
	nconns = opts.pool_size;
	ad_list_init(&pending);
	for (int i = 0; i <= nconns; i++) {
		memset(&conns[i], 0, sizeof(conns[i]));
		conns[i].sock = -1;
		ad_list_init(&conns[i].inflight);
	}
	conns[nconns].listener = true;
	pool_sul.cb = pool_tick;
	pool_up = true;
	ever_ready = false;
	startup_until_us = lws_now_usecs() + CONNECT_TIMEOUT_US;
	for (int i = 0; i < nconns; i++)
		conn_start(&conns[i]);
	if (listen_channel)
		conn_start(&conns[nconns]);
	return 0;
}

void ad_pg_shutdown(void)
{
	if (!pool_up)
		return;
	pool_up = false;
	lws_sul_cancel(&pool_sul);
	lws_sul_cancel(&send_sul);
	while (!ad_list_empty(&pending)) {
		struct ad_pg_job *j = ad_container_of(ad_list_first(&pending),
						      struct ad_pg_job, node);

		ad_list_del(&j->node);
		job_finish(j, AD_PG_UNAVAILABLE);
	}
	ad_pg_stats.pending = 0;
	for (int i = 0; i <= nconns; i++) {
		struct pgconn *c = &conns[i];

		while (!ad_list_empty(&c->inflight)) {
			struct ad_pg_job *j = ad_container_of(ad_list_first(&c->inflight),
							      struct ad_pg_job, node);

			ad_list_del(&j->node);
			job_finish(j, AD_PG_UNAVAILABLE);
		}
		conn_detach_wsi(c);
		if (c->pg)
			PQfinish(c->pg);
		c->pg = NULL;
		c->state = C_DOWN;
	}
	ad_pg_stats.ready_conns = 0;
	free(conninfo);
	free(listen_channel);
	conninfo = listen_channel = NULL;
}

void ad_pg_metrics(struct ad_buf *b)
{
	ad_buf_metric(b, "actiond_db_ready_connections", "gauge",
		      "Pooled database connections ready.", ad_pg_stats.ready_conns);
	ad_buf_metric(b, "actiond_db_jobs_total", "counter", "Database jobs submitted.",
		      ad_pg_stats.jobs);
	ad_buf_metric(b, "actiond_db_errors_total", "counter",
		      "Database jobs whose statement failed.", ad_pg_stats.errors);
	ad_buf_metric(b, "actiond_db_unavailable_total", "counter",
		      "Database jobs failed for want of a connection.", ad_pg_stats.unavailable);
	ad_buf_metric(b, "actiond_db_connects_total", "counter",
		      "Database connection attempts.", ad_pg_stats.reconnects);
	ad_buf_metric(b, "actiond_db_pending", "gauge",
		      "Database jobs waiting for a connection.", ad_pg_stats.pending);
	ad_buf_metric(b, "actiond_db_notifications_total", "counter",
		      "NOTIFY messages received from the database.",
		      ad_pg_stats.notifications);
	ad_buf_metric(b, "actiond_db_cancels_total", "counter",
		      "Cancel requests sent to PostgreSQL for cancelled or timed-out calls.",
		      ad_pg_stats.cancels);
	ad_buf_metric(b, "actiond_db_retries_total", "counter",
		      "Jobs run again after a cancel meant for another job hit them.",
		      ad_pg_stats.retries);
	ad_buf_metric(b, "actiond_db_merged_reads_total", "counter",
		      "Reads run merged with others of their org into one statement.",
		      ad_pg_stats.merged);
	ad_buf_metric(b, "actiond_db_grouped_jobs_total", "counter",
		      "Read-only jobs sent sharing a transaction with others of their org.",
		      ad_pg_stats.grouped);
}
