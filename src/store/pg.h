/*
 * pg.h - PostgreSQL on the event loop.
 *
 * A small pool of libpq connections in non-blocking pipeline mode, driven by
 * the same lws loop as the sockets: statements from many requests share
 * round trips, nothing ever blocks the loop, and when the server goes away
 * every waiting job fails at once with AD_PG_UNAVAILABLE while the pool
 * reconnects with backoff.
 *
 * A job is a short list of statements sent as one pipeline segment (one Sync
 * at its end), so they form one transaction: a failing statement rolls the
 * whole job back.  A scoped job (the SQL service's jobs for calls) first
 * sets, for its transaction only, app.org (row-level security), a statement
 * timeout and read-only mode.  Results come back to the job's callback, in
 * order, once the whole segment has been answered.
 *
 * The pooled sessions run as the runtime role (AD_PG_RUNTIME_ROLE, made by
 * the migrations without BYPASSRLS) with a default statement timeout; only
 * migrations and start-up work, on their own connections, run as the owner.
 */
#ifndef AD_PG_H
#define AD_PG_H

#include <libpq-fe.h>
#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ad_pg_job;

enum ad_pg_status {
	AD_PG_OK = 0,
	AD_PG_ERROR,       /* a statement failed; its result says why */
	AD_PG_UNAVAILABLE, /* no connection, or it was lost with the job on it */
	AD_PG_OVERLOADED,  /* too many jobs waiting */
};

/* One statement; parameters in text format, NULL for SQL NULL. */
struct ad_pg_stmt {
	const char *sql;   /* copied into the job */
	int nparams;
	const char *const *params;
};

/* The role pooled sessions run as (see src/store/migrations/). */
#define AD_PG_RUNTIME_ROLE "actiond_app"

/* What a scoped job sets for its own transaction. */
struct ad_pg_scope {
	const char *org;       /* app.org: an org id, "" for none (RLS shows nothing) */
	uint32_t timeout_ms;   /* statement_timeout; 0: the session default */
	bool read_only;
	const char *action;    /* app.action: the method the transaction serves, or NULL */
};

/*
 * Called once per job that was not abandoned.  results[i] is the result of
 * stmts[i] (NULL if the statement was skipped after an earlier failure or if
 * status is AD_PG_UNAVAILABLE); they are freed after the callback returns.
 * failed is the index of the failing statement for AD_PG_ERROR, else -1.
 */
typedef void (*ad_pg_done_fn)(void *arg, enum ad_pg_status status,
			      PGresult *const *results, int n, int failed);

/* Settings of the pool. */
struct ad_pg_options {
	const char *conninfo;  /* libpq connection string */
	int pool_size;         /* pipelined connections */
	int max_pending;       /* jobs waiting for a connection */
	uint32_t statement_timeout_ms; /* session default; 0 = 30 s */
	bool runtime_role;     /* SET ROLE AD_PG_RUNTIME_ROLE on pooled sessions */
};

/*
 * Opens the pool (connections come up asynchronously on the loop) and the
 * LISTEN connection, if channel is not NULL, whose notifications go to
 * notify_fn.  Needs the lws context; returns 0 or -1.
 */
int ad_pg_init(const struct ad_pg_options *opt, const char *channel,
	       void (*notify_fn)(const char *payload));
void ad_pg_shutdown(void);

/*
 * Submits a job.  flags: none defined yet (0).  scope (may be NULL: an
 * unscoped job, for actiond's own bookkeeping) is copied.  SQL texts and
 * parameters are copied.  The callback may run before this returns
 * (AD_PG_UNAVAILABLE, AD_PG_OVERLOADED).  Returns a handle for
 * ad_pg_abandon() and ad_pg_cancel(), or NULL when the callback already ran.
 */
struct ad_pg_job *ad_pg_submit(const struct ad_pg_stmt *stmts, int n,
			       unsigned flags, const struct ad_pg_scope *scope,
			       ad_pg_done_fn fn, void *arg);

/* The caller no longer wants the result: the callback will not be called. */
void ad_pg_abandon(struct ad_pg_job *job);

/*
 * Like ad_pg_abandon(), and the statement running for the job is cancelled
 * in PostgreSQL (a cancel request sent from a helper thread, never from the
 * loop).  A job still queued behind others on its connection is cancelled
 * when it reaches the head; another job hit by the cancel's race (it
 * started just as the cancelled one ended) fails with 57014 and is rolled
 * back, so it is run once more, transparently.
 */
void ad_pg_cancel(struct ad_pg_job *job);

/*
 * Sends what is pending now instead of at the start of the next turn: for
 * code that itself runs at the start of a turn and submitted jobs.
 */
void ad_pg_send_now(void);

/* True while at least one pooled connection is ready. */
bool ad_pg_ready(void);

/* Counters for /metrics. */
struct ad_pg_stats {
	uint64_t jobs;
	uint64_t errors;
	uint64_t unavailable;
	uint64_t reconnects;
	uint64_t notifications;
	uint64_t cancels;         /* cancel requests sent to PostgreSQL */
	uint64_t retries;         /* jobs run again after a stray cancel */
	uint64_t grouped;         /* read-only jobs sent sharing a transaction */
	uint64_t merged;          /* reads run merged into one statement (sql.c) */
	uint32_t ready_conns;
	uint32_t pending;
};
extern struct ad_pg_stats ad_pg_stats;

/* The lws protocol that serves the adopted libpq sockets. */
#define AD_PG_PROTOCOL "actiond-pg"
int ad_pg_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
		   void *in, size_t len);

/* The store's figures for /metrics. */
struct ad_buf;
void ad_pg_metrics(struct ad_buf *b);
#endif
