/*
 * actiond/sql.h - PostgreSQL for action handlers, on the event loop.
 *
 * A handler builds a batch of parameterised statements for its call and
 * runs it; the batch goes down one pooled connection (pipelined with other
 * calls' batches) and its results come back to a callback on the loop.
 * Nothing blocks.
 *
 * Scope and safety, enforced by actiond rather than by each handler:
 *  - The batch is one transaction.  It is read-only unless the action's
 *    spec declares side effects; a failing statement rolls back the whole
 *    batch.
 *  - It runs as actiond's runtime role (no BYPASSRLS) with the setting
 *    app.org set, for this transaction only, to the caller's org id, so
 *    row-level security on tenant tables shows and accepts only the
 *    caller's rows.  Without an org (anonymous calls) the setting is empty
 *    and tenant tables show nothing.
 *  - A statement timeout bounds the batch by what is left of the call's
 *    timeout.  When the call is cancelled or times out, the statement
 *    running for it is cancelled in PostgreSQL too.
 *  - Statements are prepared once per pooled connection, keyed by their
 *    text (up to a bound per connection; beyond it they run unprepared).
 *
 * Parameters are text (PostgreSQL casts them: "$1::bigint"); NULL is SQL
 * NULL.  Text cannot carry U+0000: refuse such strings before (see
 * ad_param_str()).  Results are text, read through the accessors below.
 */
#ifndef ACTIOND_SQL_H
#define ACTIOND_SQL_H

#include "actiond/action.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ad_sql;        /* a batch being built */
struct ad_sql_result; /* the results of a batch, during its callback */

/* Flags for ad_sql_new(). */
#define AD_SQL_SEE_ERRORS 1u /* errors reach the callback; see ad_sql_run() */
/*
 * A read-only call's single SELECT that may run merged with other calls'
 * reads of the same org and the same text, sent in the same turn of the
 * loop: one execution for all, each call handed its own rows (see
 * src/core/sql.c).  The text must use each parameter where a text value
 * fits or with an explicit cast ($2::jsonb, never a bare $2 whose type
 * PostgreSQL would infer), and write $ only for parameters; else it runs
 * alone.  Meant for hot, similar reads (data.find_many).
 */
#define AD_SQL_MERGE 2u

/*
 * Starts a batch for call.  Returns NULL only when out of memory (the call
 * is then still the handler's to finish).
 */
struct ad_sql *ad_sql_new(struct ad_call *call, unsigned flags);

/*
 * Appends a statement with nparams text parameters (copied, like sql).  At
 * most 64 statements and 100 parameters each.  Returns 0 or -1 (the batch
 * remembers the failure and ad_sql_run() answers -32603).
 */
int ad_sql_add(struct ad_sql *q, const char *sql, int nparams,
	       const char *const *params);

/* How many statements the batch holds. */
int ad_sql_count(const struct ad_sql *q);

/* Drops a batch without running it (the call is untouched); NULL is fine. */
void ad_sql_free(struct ad_sql *q);

/*
 * Called once per batch that ran, on the loop.  res is valid only during
 * the callback.  arg is the handler's; the callback owns it from here.
 */
typedef void (*ad_sql_done_fn)(struct ad_call *call, void *arg,
			       const struct ad_sql_result *res);

/*
 * Runs the batch (and frees q).  On success, done runs with the results.
 * On failure, by default the call is answered here - "unavailable" when
 * the database is out of reach or overloaded, "conflict" for a unique
 * violation, "timeout" for a statement timeout, -32603 otherwise (logged)
 * - and free_arg(arg) runs instead of done; with AD_SQL_SEE_ERRORS, done
 * runs and ad_sql_error() says what failed.  When the call is cancelled
 * while the batch runs, free_arg(arg) runs (the call is answered already)
 * and the handler's part is over: free_arg must not touch the call.
 * free_arg may be NULL.
 */
void ad_sql_run(struct ad_sql *q, ad_sql_done_fn done, void *arg,
		void (*free_arg)(void *));

/* ---- work of no call (timers, sweepers) ------------------------------------ */

/*
 * A batch run for no call, e.g. from a module's timer: one transaction,
 * read-write, with the pool's default statement timeout (ad_sql_timeout()
 * sets another, in ms).  Outside an org (the default) tenant tables show
 * every org's rows - background work that spans orgs, such as expiring
 * what is overdue, is what this is for; ad_sql_in_org() scopes it to one
 * org instead.  Errors always reach done.
 */
struct ad_sql *ad_sql_new_background(unsigned flags);
void ad_sql_in_org(struct ad_sql *q, int64_t org_id);
void ad_sql_timeout(struct ad_sql *q, uint32_t ms);
typedef void (*ad_sql_bg_done_fn)(void *arg, const struct ad_sql_result *res);
void ad_sql_run_background(struct ad_sql *q, ad_sql_bg_done_fn done, void *arg);

/*
 * Batches run so far are written to the database at the end of the loop's
 * turn, together with whatever else the turn runs (one write per
 * connection).  ad_sql_send_now() writes them at once: for a batch the
 * database should start on while the caller goes on with slower work in
 * the same turn (answering the last batch's callers, say).
 */
void ad_sql_send_now(void);

/* ---- reading results ---------------------------------------------------- */

/*
 * NULL when every statement succeeded; else the SQLSTATE of the failure
 * ("57014", ...) or "unavailable" when no connection could run it.
 * *ret_stmt (may be NULL) gets the failing statement's index or -1;
 * ad_sql_error_message() the server's message (for logs, not clients).
 */
const char *ad_sql_error(const struct ad_sql_result *res, int *ret_stmt);
const char *ad_sql_error_message(const struct ad_sql_result *res);

int ad_sql_rows(const struct ad_sql_result *res, int stmt);
int ad_sql_cols(const struct ad_sql_result *res, int stmt);
/* Rows an INSERT/UPDATE/DELETE touched (its command tag), 0 otherwise. */
int64_t ad_sql_affected(const struct ad_sql_result *res, int stmt);
bool ad_sql_is_null(const struct ad_sql_result *res, int stmt, int row, int col);
/* A value as text ("" for NULL) and its length; valid during the callback. */
const char *ad_sql_text(const struct ad_sql_result *res, int stmt, int row, int col,
			size_t *ret_len);
/* An integer column (0 for NULL or non-numeric text). */
int64_t ad_sql_int(const struct ad_sql_result *res, int stmt, int row, int col);
/* true for PostgreSQL's "t". */
bool ad_sql_bool(const struct ad_sql_result *res, int stmt, int row, int col);
/* A json/jsonb column parsed (new reference), JSON null for SQL NULL. */
json_t *ad_sql_json(const struct ad_sql_result *res, int stmt, int row, int col);
/* A text column as a JSON string (new reference), JSON null for NULL. */
json_t *ad_sql_string(const struct ad_sql_result *res, int stmt, int row, int col);

#ifdef __cplusplus
}
#endif

#endif
