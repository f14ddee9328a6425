/*
 * sql.c - the SQL service of actiond/sql.h: a call's statements as one
 * scoped job on the database pool (src/store/pg.c), with the call's
 * cancellation and deadline carried down to PostgreSQL.
 */
#include "actiond/sql.h"
#include "buf.h"
#include "dispatch.h"
#include "hash.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "pg.h"
#include "spec.h"
#include "sql_internal.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STMTS 64
#define INLINE_STMTS 4
#define MAX_PARAMS 100
/* The least statement timeout a job gets, even when its call is nearly due. */
#define MIN_TIMEOUT_MS 10

struct ad_sql {
	struct ad_call *call;    /* NULL: background work */
	unsigned flags;
	int n, cap;
	/* Texts and params owned here, each statement's in one block (its
	 * params array, then its text and values): most calls add one or two
	 * statements, kept inline (a 64-slot array made every call's query an
	 * allocation too big for malloc's per-thread cache). */
	struct ad_pg_stmt *stmts;
	struct ad_pg_stmt inline_stmts[INLINE_STMTS];
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
	/* A merged read's share: statement 0's rows are rows[0..nrows) of
	 * r[0], its columns from col0 on (see merged reads below). */
	const int *rows;
	int nrows;
	int col0;
};

struct merge;

struct sqlop {
	struct ad_call *call;
	struct ad_pg_job *job;
	ad_sql_done_fn done;
	void *arg;
	void (*free_arg)(void *);
	unsigned flags;
	bool submitting; /* inside ad_pg_submit(): the callback may come early */
	bool completed;
	/* A mergeable read (AD_SQL_MERGE) until it is sent: */
	struct sqlop *next;      /* on the waiting list */
	bool waiting;
	uint64_t hash;           /* of its statement text */
	struct ad_pg_stmt stmt;  /* its statement (owned while waiting) */
	struct ad_pg_scope scope;
	char org[24];
	struct merge *merge;     /* the merged statement it runs in */
	bool gone;               /* cancelled while its merged statement runs */
};

static struct ad_sql *sql_new(struct ad_call *call, unsigned flags)
{
	struct ad_sql *q = calloc(1, sizeof(*q));

	if (q) {
		q->stmts = q->inline_stmts;
		q->cap = INLINE_STMTS;
		q->call = call;
		q->flags = flags;
	}
	return q;
}

struct ad_sql *ad_sql_new(struct ad_call *call, unsigned flags)
{
	struct ad_sql *q = sql_new(call, flags);

	if (q)
		q->org_id = ad_call_org_id(call);
	return q;
}

void ad_sql_set_org(struct ad_sql *q, int64_t org_id)
{
	q->org_id = org_id;
}

static void stmts_free(struct ad_sql *q)
{
	for (int i = 0; i < q->n; i++)
		free((void *)q->stmts[i].params); /* the statement's block */
	if (q->stmts != q->inline_stmts)
		free(q->stmts);
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
	size_t size, len[MAX_PARAMS + 1];
	const char **copy;
	char *p;

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
	if (q->n == q->cap) {
		struct ad_pg_stmt *more = malloc((size_t)MAX_STMTS * sizeof(*more));

		if (!more)
			goto oom;
		memcpy(more, q->stmts, (size_t)q->n * sizeof(*more));
		q->stmts = more;
		q->cap = MAX_STMTS;
	}
	size = (size_t)(nparams + 1) * sizeof(char *) + (len[nparams] = strlen(sql) + 1);
	for (int k = 0; k < nparams; k++)
		size += len[k] = params[k] ? strlen(params[k]) + 1 : 0;
	if (!(copy = malloc(size)))
		goto oom;
	p = (char *)(copy + nparams + 1);
	q->stmts[q->n++] = (struct ad_pg_stmt){
		.sql = memcpy(p, sql, len[nparams]),
		.nparams = nparams,
		.params = copy,
	};
	p += len[nparams];
	for (int k = 0; k < nparams; k++) {
		copy[k] = params[k] ? memcpy(p, params[k], len[k]) : NULL;
		p += len[k];
	}
	copy[nparams] = NULL;
	return 0;
oom:
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

static void waiting_remove(struct sqlop *op);
static void merge_member_gone(struct sqlop *op);

static void stmt_clear(struct ad_pg_stmt *st)
{
	free((void *)st->params); /* the statement's block (see ad_sql_add()) */
	*st = (struct ad_pg_stmt){ 0 };
}

static void sqlop_cancel(struct ad_call *call, void *arg)
{
	struct sqlop *op = arg;

	if (op->free_arg)
		op->free_arg(op->arg);
	op->free_arg = NULL;
	if (op->merge) {
		merge_member_gone(op); /* the merged statement frees it */
	} else {
		if (op->waiting)
			waiting_remove(op);
		ad_pg_cancel(op->job); /* also in PostgreSQL, if it is running */
		stmt_clear(&op->stmt);
		free(op);
	}
	ad_call_fail(call, AD_REASON_CANCELLED, "cancelled", NULL);
}

/* What a job's status and results say, as the callbacks see it. */
static struct ad_sql_result result_of(enum ad_pg_status status, PGresult *const *results,
				      int n, int failed)
{
	struct ad_sql_result res = { .r = results, .n = n, .failed = failed };

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
	return res;
}

/* Hands res to op's handler (or answers its failure); op stays. */
static void sqlop_deliver(struct sqlop *op, const struct ad_sql_result *res)
{
	struct ad_call *call = op->call;

	op->completed = true;
	ad_call_on_cancel(call, NULL, NULL);
	if (!res->state || (op->flags & AD_SQL_SEE_ERRORS)) {
		op->done(call, op->arg, res);
	} else {
		answer_failure(call, res);
		if (op->free_arg)
			op->free_arg(op->arg);
	}
}

static void sqlop_complete(void *arg, enum ad_pg_status status, PGresult *const *results,
			   int n, int failed)
{
	struct sqlop *op = arg;
	struct ad_sql_result res = result_of(status, results, n, failed);
	bool keep = op->submitting; /* its submitter frees it afterwards */

	sqlop_deliver(op, &res);
	if (!keep)
		free(op);
}

/* ---- merged reads ------------------------------------------------------------
 *
 * A call's read flagged AD_SQL_MERGE waits for the end of the loop's turn.
 * The reads of one org then waiting with the same statement text run as
 * one statement, each call's parameters a row of arrays:
 *
 *   SELECT b.i, s.* FROM unnest($1::text[], ...) WITH ORDINALITY AS b(p1, ..., i)
 *   CROSS JOIN LATERAL (<the statement, reading $n as b.pn>) s
 *
 * and each call is handed its own rows (b.i says whose).  PostgreSQL does
 * one execution for all of them instead of one each: measured with pgbench
 * on data.find_many's indexed read, 16 reads as one statement give 2.4
 * times the reads per second of 16 statements in one transaction.  When
 * the merged statement fails, each call runs alone, so one call's bad
 * value fails that call only; a text that does not merge (PostgreSQL
 * refuses the rewrite) is remembered and not merged again.
 */
#define MERGE_MAX 64
#define NO_MERGE_SLOTS 64

struct merge {
	struct ad_pg_job *job;
	int n;
	bool submitting;
	bool completed;
	struct sqlop *ops[];
};

static struct sqlop *waiting, **waiting_tail = &waiting;
static lws_sorted_usec_list_t merge_sul;
static uint64_t no_merge[NO_MERGE_SLOTS]; /* hashes of texts that do not merge */

static void waiting_remove(struct sqlop *op)
{
	for (struct sqlop **pp = &waiting; *pp; pp = &(*pp)->next)
		if (*pp == op) {
			if (!(*pp = op->next))
				waiting_tail = pp;
			break;
		}
	op->waiting = false;
	op->next = NULL;
}

/*
 * sql with each $n written b.pn, into b; false when the text has what the
 * rewrite cannot be sure of (comments, dollar quotes, E'' strings).
 */
static bool rewrite_params(const char *sql, int nparams, struct ad_buf *b)
{
	for (const char *c = sql; *c;) {
		if (*c == '\'' || *c == '"') {
			char q = *c;

			if (q == '\'' && c > sql && (c[-1] == 'E' || c[-1] == 'e'))
				return false;
			ad_buf_putc(b, *c++);
			while (*c && *c != q)
				ad_buf_putc(b, *c++);
			if (!*c)
				return false;
			ad_buf_putc(b, *c++); /* a doubled quote reopens at once */
		} else if ((c[0] == '-' && c[1] == '-') || (c[0] == '/' && c[1] == '*')) {
			return false;
		} else if (*c == '$') {
			char *end;
			long n = strtol(c + 1, &end, 10);

			if (end == c + 1 || n < 1 || n > nparams)
				return false;
			ad_buf_puts(b, "b.p");
			ad_buf_int(b, n);
			c = end;
		} else {
			ad_buf_putc(b, *c++);
		}
	}
	return !b->oom;
}

/* A text array literal of the calls' parameter k. */
static void param_array(struct merge *m, int k, struct ad_buf *b)
{
	ad_buf_putc(b, '{');
	for (int i = 0; i < m->n; i++) {
		const char *v = m->ops[i]->stmt.params[k];

		if (i)
			ad_buf_putc(b, ',');
		if (!v) {
			ad_buf_puts(b, "NULL");
			continue;
		}
		ad_buf_putc(b, '"');
		for (; *v; v++) {
			if (*v == '"' || *v == '\\')
				ad_buf_putc(b, '\\');
			ad_buf_putc(b, *v);
		}
		ad_buf_putc(b, '"');
	}
	ad_buf_putc(b, '}');
}

/* Sends op's statement as a job of its own. */
static void submit_alone(struct sqlop *op)
{
	op->submitting = true;
	op->job = ad_pg_submit(&op->stmt, 1, 0, &op->scope, sqlop_complete, op);
	op->submitting = false;
	stmt_clear(&op->stmt);
	if (op->completed) /* answered inside ad_pg_submit() */
		free(op);
}

static void merge_free(struct merge *m)
{
	for (int i = 0; i < m->n; i++) {
		stmt_clear(&m->ops[i]->stmt);
		free(m->ops[i]);
	}
	free(m);
}

static void merge_member_gone(struct sqlop *op)
{
	struct merge *m = op->merge;
	int live = 0;

	op->gone = true;
	for (int i = 0; i < m->n; i++)
		live += !m->ops[i]->gone;
	if (!live)
		ad_pg_cancel(m->job);
}

static void merge_complete(void *arg, enum ad_pg_status status, PGresult *const *results,
			   int n, int failed)
{
	struct merge *m = arg;
	struct ad_sql_result all = result_of(status, results, n, failed);
	const PGresult *r = n == 1 ? results[0] : NULL;
	int rows = r ? PQntuples(r) : 0, *map = NULL, *start = NULL, *fill = NULL;

	m->completed = true;
	if (all.state && status == AD_PG_ERROR) {
		/* Whose value failed is not known: each runs alone.  A text
		 * PostgreSQL would not take merged is not merged again. */
		if (!strncmp(all.state, "42", 2)) {
			uint64_t h = m->ops[0]->hash;

			no_merge[h % NO_MERGE_SLOTS] = h;
			ad_log_warn("a mergeable statement did not merge (SQLSTATE %s: %s); "
				    "it runs alone from now on", all.state, all.message);
		}
		for (int i = 0; i < m->n; i++) {
			struct sqlop *op = m->ops[i];

			m->ops[i] = NULL;
			op->merge = NULL;
			if (op->gone) {
				stmt_clear(&op->stmt);
				free(op);
			} else {
				submit_alone(op);
			}
		}
		m->n = 0;
		if (!m->submitting)
			merge_free(m);
		return;
	}
	if (!all.state) {
		map = calloc((size_t)rows + 1, sizeof(int));
		start = calloc((size_t)m->n + 1, sizeof(int));
		fill = calloc((size_t)m->n + 1, sizeof(int));
		if (!map || !start || !fill) {
			all.state = "unavailable";
			all.message = "out of memory";
		} else {
			/* Rows grouped by whose they are, each call's in their order. */
			for (int row = 0; row < rows; row++) {
				long i = strtol(PQgetvalue(r, row, 0), NULL, 10);

				if (i >= 1 && i <= m->n)
					start[i]++;
			}
			for (int i = 1; i <= m->n; i++)
				start[i] += start[i - 1];
			for (int row = 0; row < rows; row++) {
				long i = strtol(PQgetvalue(r, row, 0), NULL, 10);

				if (i >= 1 && i <= m->n)
					map[start[i - 1] + fill[i - 1]++] = row;
			}
		}
	}
	for (int i = 0; i < m->n; i++) {
		struct sqlop *op = m->ops[i];
		struct ad_sql_result res = all;

		if (op->gone)
			continue;
		if (!all.state) {
			res.rows = map + start[i];
			res.nrows = fill[i];
			res.col0 = 1;
		}
		sqlop_deliver(op, &res);
	}
	free(map);
	free(start);
	free(fill);
	if (!m->submitting)
		merge_free(m);
}

/* Sends the n reads at ops (same org, same text) as one statement. */
static void submit_merged(struct sqlop **ops, int n)
{
	struct merge *m = calloc(1, sizeof(*m) + (size_t)n * sizeof(struct sqlop *));
	struct ad_buf sql = AD_BUF_INIT;
	int np = ops[0]->stmt.nparams;
	struct ad_buf *arrays = calloc((size_t)np + 1, sizeof(struct ad_buf));
	const char **params = calloc((size_t)np + 1, sizeof(char *));
	struct ad_pg_stmt st;
	struct ad_pg_scope scope = ops[0]->scope;
	bool ok = m && arrays && params;

	if (ok) {
		m->n = n;
		memcpy(m->ops, ops, (size_t)n * sizeof(*ops));
		ad_buf_puts(&sql, "SELECT b.i, s.* FROM unnest(");
		for (int k = 0; k < np; k++)
			ad_buf_printf(&sql, "%s$%d::text[]", k ? ", " : "", k + 1);
		ad_buf_puts(&sql, ") WITH ORDINALITY AS b(");
		for (int k = 0; k < np; k++)
			ad_buf_printf(&sql, "p%d, ", k + 1);
		ad_buf_puts(&sql, "i) CROSS JOIN LATERAL (");
		ok = rewrite_params(ops[0]->stmt.sql, np, &sql);
		ad_buf_puts(&sql, ") s");
		for (int k = 0; ok && k < np; k++) {
			param_array(m, k, &arrays[k]);
			ad_buf_putc(&arrays[k], '\0');
			params[k] = arrays[k].data;
			ok = !arrays[k].oom;
		}
		ad_buf_putc(&sql, '\0');
		ok = ok && !sql.oom;
	}
	if (ok) {
		for (int i = 0; i < n; i++) {
			ops[i]->merge = m;
			if (ops[i]->scope.timeout_ms > scope.timeout_ms)
				scope.timeout_ms = ops[i]->scope.timeout_ms;
		}
		scope.org = ops[0]->org;
		st = (struct ad_pg_stmt){ .sql = sql.data, .nparams = np, .params = params };
		ad_pg_stats.merged += (uint64_t)n;
		m->submitting = true;
		m->job = ad_pg_submit(&st, 1, 0, &scope, merge_complete, m);
		m->submitting = false;
		if (m->completed)
			merge_free(m);
	} else {
		free(m);
		for (int i = 0; i < n; i++)
			submit_alone(ops[i]);
	}
	for (int k = 0; arrays && k < np; k++)
		ad_buf_free(&arrays[k]);
	free(arrays);
	free(params);
	ad_buf_free(&sql);
}

/* The end of the turn: the waiting reads go, merged where they can. */
static void merge_flush(lws_sorted_usec_list_t *sul)
{
	struct sqlop *list = waiting, *group[MERGE_MAX];

	(void)sul;
	waiting = NULL;
	waiting_tail = &waiting;
	while (list) {
		struct sqlop *head = list, **pp;
		int n = 1;

		list = head->next;
		head->waiting = false;
		group[0] = head;
		for (pp = &list; *pp && n < MERGE_MAX;) {
			struct sqlop *o = *pp;

			if (o->hash == head->hash && !strcmp(o->org, head->org) &&
			    !strcmp(o->stmt.sql, head->stmt.sql) &&
			    o->stmt.nparams == head->stmt.nparams) {
				*pp = o->next;
				o->waiting = false;
				group[n++] = o;
			} else {
				pp = &o->next;
			}
		}
		if (n == 1)
			submit_alone(head);
		else
			submit_merged(group, n);
	}
	ad_pg_send_now(); /* this turn, not the next */
}

/* Whether q's read may wait to be merged. */
static bool mergeable(const struct ad_sql *q, const struct ad_pg_scope *scope, uint64_t *hash)
{
	if (!(q->flags & AD_SQL_MERGE) || q->n != 1 || !scope->read_only || q->org_id <= 0)
		return false;
	*hash = ad_hash_text(q->stmts[0].sql);
	return no_merge[*hash % NO_MERGE_SLOTS] != *hash;
}

void ad_sql_run(struct ad_sql *q, ad_sql_done_fn done, void *arg, void (*free_arg)(void *))
{
	struct ad_call *call = q->call;
	const struct ad_spec *spec = ad_call_spec(call);
	struct sqlop *op = q->broken ? NULL : calloc(1, sizeof(*op));
	int64_t left_ms = (ad_call_deadline_us(call) - ad_now_us()) / 1000;

	if (!op) {
		stmts_free(q);
		if (free_arg)
			free_arg(arg);
		ad_call_fail_params(call, "", "internal", "a statement could not be built");
		return;
	}
	if (q->org_id > 0)
		ad_fmt_int(op->org, (long long)q->org_id);
	op->scope = (struct ad_pg_scope){
		.org = op->org,
		.timeout_ms = left_ms < MIN_TIMEOUT_MS ? MIN_TIMEOUT_MS : (uint32_t)left_ms,
		.read_only = !spec->side_effects,
		.action = spec->method,
	};
	op->call = call;
	op->done = done;
	op->arg = arg;
	op->free_arg = free_arg;
	op->flags = q->flags;
	ad_call_on_cancel(call, sqlop_cancel, op);
	if (mergeable(q, &op->scope, &op->hash)) {
		op->stmt = q->stmts[0]; /* taken */
		q->n = 0;
		op->waiting = true;
		*waiting_tail = op;
		waiting_tail = &op->next;
		if (lws_dll2_is_detached(&merge_sul.list))
			lws_sul_schedule(ad_loop, 0, &merge_sul, merge_flush, 1);
		stmts_free(q);
		return;
	}
	op->submitting = true;
	op->job = ad_pg_submit(q->stmts, q->n, 0, &op->scope, sqlop_complete, op);
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
	return sql_new(NULL, flags | AD_SQL_SEE_ERRORS);
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
	struct ad_sql_result res = result_of(status, results, n, failed);

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
		ad_fmt_int(org, (long long)q->org_id);
	scope.timeout_ms = q->timeout_ms;
	op->done = done;
	op->arg = arg;
	ad_pg_submit(q->stmts, q->n, 0, &scope, bg_complete, op);
	stmts_free(q);
}

void ad_sql_send_now(void)
{
	ad_pg_send_now();
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

/* Whether stmt's rows are a merged read's share of a larger result. */
static bool shared(const struct ad_sql_result *res, int stmt)
{
	return res->rows && stmt == 0;
}

int ad_sql_rows(const struct ad_sql_result *res, int stmt)
{
	const PGresult *r = stmt_result(res, stmt);

	if (r && shared(res, stmt))
		return res->nrows;
	return r ? PQntuples(r) : 0;
}

int ad_sql_cols(const struct ad_sql_result *res, int stmt)
{
	const PGresult *r = stmt_result(res, stmt);

	if (r && shared(res, stmt))
		return PQnfields(r) - res->col0;
	return r ? PQnfields(r) : 0;
}

int64_t ad_sql_affected(const struct ad_sql_result *res, int stmt)
{
	const PGresult *r = stmt_result(res, stmt);
	const char *t = r ? PQcmdTuples((PGresult *)r) : "";

	if (r && shared(res, stmt))
		return res->nrows;
	return *t ? strtoll(t, NULL, 10) : 0;
}

/* The result holding a cell, with *row and *col made its own; NULL if none. */
static const PGresult *cell(const struct ad_sql_result *res, int stmt, int *row, int *col)
{
	const PGresult *r = stmt_result(res, stmt);

	if (r && shared(res, stmt)) {
		if (*row < 0 || *row >= res->nrows || *col < 0)
			return NULL;
		*row = res->rows[*row];
		*col += res->col0;
	}
	return r && *row >= 0 && *row < PQntuples(r) && *col >= 0 && *col < PQnfields(r)
		       ? r : NULL;
}

bool ad_sql_is_null(const struct ad_sql_result *res, int stmt, int row, int col)
{
	const PGresult *r = cell(res, stmt, &row, &col);

	return !r || PQgetisnull(r, row, col);
}

const char *ad_sql_text(const struct ad_sql_result *res, int stmt, int row, int col,
			size_t *ret_len)
{
	const PGresult *r = cell(res, stmt, &row, &col);

	if (!r) {
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
	v = ad_json_loadb(t, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | AD_JSON_BIG_AS_REAL, NULL);
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
