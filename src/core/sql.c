/*
 * sql.c - the SQL service of actiond/sql.h: a call's statements as one
 * scoped job on the database pool (src/store/pg.c), with the call's
 * cancellation and deadline carried down to PostgreSQL.
 */
#include "actiond/sql.h"
#include "dispatch.h"
#include "log.h"
#include "loop.h"
#include "pg.h"
#include "spec.h"
#include "sql_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STMTS 64
#define MAX_PARAMS 100
/* The least statement timeout a job gets, even when its call is nearly due. */
#define MIN_TIMEOUT_MS 10

struct ad_sql {
	struct ad_call *call;    /* NULL: background work */
	unsigned flags;
	int n;
	struct ad_pg_stmt stmts[MAX_STMTS]; /* texts and params owned here */
	int64_t org_id;          /* background: 0 = every org */
	uint32_t timeout_ms;     /* background: 0 = the pool's default */
	bool broken;
};

struct ad_sql_result {
	PGresult *const *r;
	int n;
	const char *state;    /* NULL, a SQLSTATE, or "unavailable" */
	const char *message;
	int failed;
};

struct sqlop {
	struct ad_call *call;
	struct ad_pg_job *job;
	ad_sql_done_fn done;
	void *arg;
	void (*free_arg)(void *);
	unsigned flags;
	bool submitting; /* inside ad_pg_submit(): the callback may come early */
	bool completed;
};

struct ad_sql *ad_sql_new(struct ad_call *call, unsigned flags)
{
	struct ad_sql *q = calloc(1, sizeof(*q));

	if (q) {
		q->call = call;
		q->flags = flags;
		q->org_id = ad_call_org_id(call);
	}
	return q;
}

void ad_sql_set_org(struct ad_sql *q, int64_t org_id)
{
	q->org_id = org_id;
}

static void stmts_free(struct ad_sql *q)
{
	for (int i = 0; i < q->n; i++) {
		for (int k = 0; k < q->stmts[i].nparams; k++)
			free((char *)q->stmts[i].params[k]);
		free((void *)q->stmts[i].params);
		free((char *)q->stmts[i].sql);
	}
	free(q);
}

int ad_sql_count(const struct ad_sql *q)
{
	return q->n;
}

void ad_sql_free(struct ad_sql *q)
{
	if (q)
		stmts_free(q);
}

int ad_sql_add(struct ad_sql *q, const char *sql, int nparams, const char *const *params)
{
	struct ad_pg_stmt *st;
	char **copy;

	if (q->broken)
		return -1;
	if (!sql || q->n == MAX_STMTS || nparams < 0 || nparams > MAX_PARAMS ||
	    (nparams && !params)) {
		if (q->call)
			ad_call_log(q->call, AD_LOG_ERROR, "bad SQL statement #%d (%s)", q->n,
				    q->n == MAX_STMTS ? "too many statements"
						      : "bad parameters");
		else
			ad_log_error("bad background SQL statement #%d", q->n);
		q->broken = true;
		return -1;
	}
	st = &q->stmts[q->n];
	copy = calloc((size_t)nparams + 1, sizeof(char *));
	st->sql = strdup(sql);
	if (!copy || !st->sql)
		goto oom;
	st->params = (const char *const *)copy;
	st->nparams = nparams;
	q->n++; /* counted now, so that stmts_free() frees what is copied */
	for (int k = 0; k < nparams; k++)
		if (params[k] && !(copy[k] = strdup(params[k])))
			goto oom;
	return 0;
oom:
	if (st->params != (const char *const *)copy) {
		free(copy);
		free((char *)st->sql);
		st->sql = NULL;
	}
	q->broken = true;
	return -1;
}

/* Answers a failed batch for the handler, as sql.h promises. */
static void answer_failure(struct ad_call *call, const struct ad_sql_result *res)
{
	const char *st = res->state;

	if (!strcmp(st, "unavailable")) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, res->message, NULL);
	} else if (!strcmp(st, "23505")) {
		ad_call_fail(call, AD_REASON_CONFLICT, "It exists already", NULL);
	} else if (!strcmp(st, "57014")) {
		ad_call_fail(call, AD_REASON_TIMEOUT, "The database statement timed out",
			     NULL);
	} else {
		ad_call_log(call, AD_LOG_ERROR, "statement %d failed: %s (SQLSTATE %s)",
			    res->failed, res->message, st);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "The database refused the operation",
			     NULL);
	}
}

static void sqlop_cancel(struct ad_call *call, void *arg)
{
	struct sqlop *op = arg;

	ad_pg_cancel(op->job); /* also in PostgreSQL, if it is running */
	if (op->free_arg)
		op->free_arg(op->arg);
	free(op);
	ad_call_fail(call, AD_REASON_CANCELLED, "cancelled", NULL);
}

static void sqlop_complete(void *arg, enum ad_pg_status status, PGresult *const *results,
			   int n, int failed)
{
	struct sqlop *op = arg;
	struct ad_call *call = op->call;
	struct ad_sql_result res = { .r = results, .n = n, .failed = failed };
	bool keep = op->submitting; /* ad_sql_run() frees it afterwards */

	op->completed = true;
	ad_call_on_cancel(call, NULL, NULL);
	if (status == AD_PG_ERROR) {
		const PGresult *e = failed >= 0 && failed < n ? results[failed] : NULL;

		res.state = e ? PQresultErrorField(e, PG_DIAG_SQLSTATE) : NULL;
		res.message = e ? PQresultErrorField(e, PG_DIAG_MESSAGE_PRIMARY) : NULL;
		if (!res.state)
			res.state = "XX000";
		if (!res.message)
			res.message = "statement failed";
	} else if (status != AD_PG_OK) {
		res.state = "unavailable";
		res.message = status == AD_PG_OVERLOADED ? "The database is overloaded"
							  : "The database is unavailable";
		res.failed = -1;
	}
	if (!res.state || (op->flags & AD_SQL_SEE_ERRORS)) {
		op->done(call, op->arg, &res);
	} else {
		answer_failure(call, &res);
		if (op->free_arg)
			op->free_arg(op->arg);
	}
	if (!keep)
		free(op);
}

void ad_sql_run(struct ad_sql *q, ad_sql_done_fn done, void *arg, void (*free_arg)(void *))
{
	struct ad_call *call = q->call;
	const struct ad_spec *spec = ad_call_spec(call);
	struct sqlop *op = q->broken ? NULL : calloc(1, sizeof(*op));
	int64_t left_ms = (ad_call_deadline_us(call) - ad_now_us()) / 1000;
	char org[24] = "";
	struct ad_pg_scope scope = {
		.org = org,
		.timeout_ms = left_ms < MIN_TIMEOUT_MS ? MIN_TIMEOUT_MS : (uint32_t)left_ms,
		.read_only = !spec->side_effects,
		.action = spec->method,
	};

	if (!op) {
		stmts_free(q);
		if (free_arg)
			free_arg(arg);
		ad_call_fail_params(call, "", "internal", "a statement could not be built");
		return;
	}
	if (q->org_id > 0)
		snprintf(org, sizeof(org), "%lld", (long long)q->org_id);
	op->call = call;
	op->done = done;
	op->arg = arg;
	op->free_arg = free_arg;
	op->flags = q->flags;
	ad_call_on_cancel(call, sqlop_cancel, op);
	op->submitting = true;
	op->job = ad_pg_submit(q->stmts, q->n, 0, &scope, sqlop_complete, op);
	op->submitting = false;
	stmts_free(q);
	if (op->completed) /* answered inside ad_pg_submit() */
		free(op);
}

/* ---- background batches ---------------------------------------------------- */

struct bgop {
	ad_sql_bg_done_fn done;
	void *arg;
};

struct ad_sql *ad_sql_new_background(unsigned flags)
{
	struct ad_sql *q = calloc(1, sizeof(*q));

	if (q)
		q->flags = flags | AD_SQL_SEE_ERRORS;
	return q;
}

void ad_sql_in_org(struct ad_sql *q, int64_t org_id)
{
	q->org_id = org_id;
}

void ad_sql_timeout(struct ad_sql *q, uint32_t ms)
{
	q->timeout_ms = ms;
}

static void bg_complete(void *arg, enum ad_pg_status status, PGresult *const *results,
			int n, int failed)
{
	struct bgop *op = arg;
	struct ad_sql_result res = { .r = results, .n = n, .failed = failed };

	if (status == AD_PG_ERROR) {
		const PGresult *e = failed >= 0 && failed < n ? results[failed] : NULL;
		const char *st = e ? PQresultErrorField(e, PG_DIAG_SQLSTATE) : NULL;
		const char *msg = e ? PQresultErrorField(e, PG_DIAG_MESSAGE_PRIMARY) : NULL;

		res.state = st ? st : "XX000";
		res.message = msg ? msg : "statement failed";
	} else if (status != AD_PG_OK) {
		res.state = "unavailable";
		res.message = "The database is unavailable";
		res.failed = -1;
	}
	if (op->done)
		op->done(op->arg, &res);
	free(op);
}

/*
 * app.org is "*" for background work across orgs: the tenant policies
 * (migration 005) let that see every org; a call's batch can never have it
 * (ad_sql_run() sets a number or nothing).
 */
void ad_sql_run_background(struct ad_sql *q, ad_sql_bg_done_fn done, void *arg)
{
	struct bgop *op = q->broken ? NULL : calloc(1, sizeof(*op));
	char org[24] = "*";
	struct ad_pg_scope scope = { .org = org };

	if (!op) {
		struct ad_sql_result res = { .state = "XX000", .message = "not built",
					     .failed = -1 };

		stmts_free(q);
		if (done)
			done(arg, &res);
		return;
	}
	if (q->org_id > 0)
		snprintf(org, sizeof(org), "%lld", (long long)q->org_id);
	scope.timeout_ms = q->timeout_ms;
	op->done = done;
	op->arg = arg;
	ad_pg_submit(q->stmts, q->n, 0, &scope, bg_complete, op);
	stmts_free(q);
}

/* ---- results ------------------------------------------------------------- */

static const PGresult *stmt_result(const struct ad_sql_result *res, int stmt)
{
	return stmt >= 0 && stmt < res->n ? res->r[stmt] : NULL;
}

const PGresult *ad_sql_pgresult(const struct ad_sql_result *res, int stmt)
{
	return stmt_result(res, stmt);
}

const char *ad_sql_error(const struct ad_sql_result *res, int *ret_stmt)
{
	if (ret_stmt)
		*ret_stmt = res->state ? res->failed : -1;
	return res->state;
}

const char *ad_sql_error_message(const struct ad_sql_result *res)
{
	return res->message ? res->message : "";
}

int ad_sql_rows(const struct ad_sql_result *res, int stmt)
{
	const PGresult *r = stmt_result(res, stmt);

	return r ? PQntuples(r) : 0;
}

int ad_sql_cols(const struct ad_sql_result *res, int stmt)
{
	const PGresult *r = stmt_result(res, stmt);

	return r ? PQnfields(r) : 0;
}

int64_t ad_sql_affected(const struct ad_sql_result *res, int stmt)
{
	const PGresult *r = stmt_result(res, stmt);
	const char *t = r ? PQcmdTuples((PGresult *)r) : "";

	return *t ? strtoll(t, NULL, 10) : 0;
}

static bool in_range(const PGresult *r, int row, int col)
{
	return r && row >= 0 && row < PQntuples(r) && col >= 0 && col < PQnfields(r);
}

bool ad_sql_is_null(const struct ad_sql_result *res, int stmt, int row, int col)
{
	const PGresult *r = stmt_result(res, stmt);

	return !in_range(r, row, col) || PQgetisnull(r, row, col);
}

const char *ad_sql_text(const struct ad_sql_result *res, int stmt, int row, int col,
			size_t *ret_len)
{
	const PGresult *r = stmt_result(res, stmt);

	if (!in_range(r, row, col)) {
		if (ret_len)
			*ret_len = 0;
		return "";
	}
	if (ret_len)
		*ret_len = (size_t)PQgetlength(r, row, col);
	return PQgetvalue(r, row, col);
}

int64_t ad_sql_int(const struct ad_sql_result *res, int stmt, int row, int col)
{
	return strtoll(ad_sql_text(res, stmt, row, col, NULL), NULL, 10);
}

bool ad_sql_bool(const struct ad_sql_result *res, int stmt, int row, int col)
{
	return !strcmp(ad_sql_text(res, stmt, row, col, NULL), "t");
}

json_t *ad_sql_json(const struct ad_sql_result *res, int stmt, int row, int col)
{
	size_t len;
	const char *t;
	json_t *v;

	if (ad_sql_is_null(res, stmt, row, col))
		return json_null();
	t = ad_sql_text(res, stmt, row, col, &len);
	v = json_loadb(t, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	return v ? v : json_null();
}

json_t *ad_sql_string(const struct ad_sql_result *res, int stmt, int row, int col)
{
	size_t len;
	const char *t;

	if (ad_sql_is_null(res, stmt, row, col))
		return json_null();
	t = ad_sql_text(res, stmt, row, col, &len);
	return json_stringn(t, len);
}
