/*
 * db.h - glue between calls and the database pool: run statements for a
 * call and continue when they are done, with cancellation and error mapping
 * handled once.
 */
#ifndef AD_DB_H
#define AD_DB_H

#include "actiond/action.h"
#include "pg.h"

/*
 * Continues a call after its statements ran.  It must finish the call
 * (reply or fail) or hand it to another ad_db_run().  state is the
 * handler's; ad_db_run frees it with free_state when the call is cancelled.
 */
typedef void (*ad_db_done_fn)(struct ad_call *call, void *state,
			      PGresult *const *results, int n);

/*
 * Runs stmts (one implicit transaction; org sets app.org) for call.  On
 * failure the call is answered here: "unavailable" when the database is
 * out of reach, "conflict" for a unique violation, -32603 otherwise; state
 * is then freed with free_state (may be NULL).
 */
void ad_db_run(struct ad_call *call, const struct ad_pg_stmt *stmts, int n,
	       const char *org, ad_db_done_fn done, void *state,
	       void (*free_state)(void *));

/* Integer and text helpers for results. */
long long ad_db_int(const PGresult *r, int row, int col);
const char *ad_db_text(const PGresult *r, int row, int col); /* NULL if null */
/* An ISO-8601 UTC timestamp of a timestamptz column, or JSON null. */
json_t *ad_db_time(const PGresult *r, int row, int col);

#endif
