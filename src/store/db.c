/*
 * db.c - running a call's statements on the pool.
 */
#include "db.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

struct dbop {
	struct ad_call *call;
	struct ad_pg_job *job;
	ad_db_done_fn done;
	void *state;
	void (*free_state)(void *);
	bool submitting; /* inside ad_pg_submit(): the callback may come early */
	bool completed;
};

static void dbop_cancel(struct ad_call *call, void *arg)
{
	struct dbop *op = arg;

	ad_pg_abandon(op->job);
	if (op->free_state)
		op->free_state(op->state);
	free(op);
	ad_call_fail(call, AD_REASON_CANCELLED, "cancelled", NULL);
}

static void dbop_complete(void *arg, enum ad_pg_status status,
			  PGresult *const *results, int n, int failed)
{
	struct dbop *op = arg;
	struct ad_call *call = op->call;
	/* Inside ad_pg_submit() the op is freed by ad_db_run() afterwards. */
	bool keep = op->submitting;

	op->completed = true;
	ad_call_on_cancel(call, NULL, NULL);
	if (status == AD_PG_OK) {
		ad_db_done_fn done = op->done;
		void *state = op->state;

		if (!keep)
			free(op);
		done(call, state, results, n);
		return;
	}
	if (status == AD_PG_ERROR && failed >= 0 && failed < n && results[failed]) {
		const char *code = PQresultErrorField(results[failed], PG_DIAG_SQLSTATE);

		if (code && !strcmp(code, "23505")) {
			ad_call_fail(call, AD_REASON_CONFLICT, "It exists already", NULL);
		} else {
			ad_log_error("%s: statement %d failed: %s", ad_call_method(call),
				     failed, PQresultErrorMessage(results[failed]));
			ad_call_fail(call, AD_REASON_UNAVAILABLE,
				     "The database refused the operation", NULL);
		}
	} else {
		ad_call_fail(call, AD_REASON_UNAVAILABLE,
			     status == AD_PG_OVERLOADED ? "The database is overloaded"
							: "The database is unavailable",
			     NULL);
	}
	if (op->free_state)
		op->free_state(op->state);
	if (!keep)
		free(op);
}

void ad_db_run(struct ad_call *call, const struct ad_pg_stmt *stmts, int n,
	       const char *org, ad_db_done_fn done, void *state,
	       void (*free_state)(void *))
{
	struct dbop *op = calloc(1, sizeof(*op));

	if (!op) {
		if (free_state)
			free_state(state);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	op->call = call;
	op->done = done;
	op->state = state;
	op->free_state = free_state;
	ad_call_on_cancel(call, dbop_cancel, op);
	op->submitting = true;
	op->job = ad_pg_submit(stmts, n, 0, org, dbop_complete, op);
	op->submitting = false;
	if (op->completed) /* answered inside ad_pg_submit() */
		free(op);
}

long long ad_db_int(const PGresult *r, int row, int col)
{
	return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

const char *ad_db_text(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

json_t *ad_db_time(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? json_null()
					 : json_string(PQgetvalue(r, row, col));
}
