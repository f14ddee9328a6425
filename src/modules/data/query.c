/*
 * query.c - data.query: a small SQL subset, parsed here into the filter
 * tree of filter.c and compiled the same way.  docs/data.md has the
 * grammar.  The text itself never reaches PostgreSQL: field names are
 * checked against a strict pattern, literals and $n become elements of the
 * one JSON array parameter, and anything outside the subset (comments,
 * semicolons, functions, subqueries, other tables) is refused with the
 * character position where it starts.
 */
#include "data.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUERY_FIELDS_MAX 32

enum tok {
	T_END, T_IDENT, T_QIDENT, T_STRING, T_NUMBER, T_PARAM,
	T_STAR, T_COMMA, T_LPAREN, T_RPAREN,
	T_EQ, T_NE, T_LT, T_LE, T_GT, T_GE,
};

struct lex {
	const char *s;
	size_t len, pos;
	/* The current token: its kind, where it starts, its text. */
	enum tok t;
	size_t start, tlen;
	const json_t *params;
	struct dm_error *e;
	bool failed;
};

static bool fail_at(struct lex *x, size_t pos, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static bool fail_at(struct lex *x, size_t pos, const char *fmt, ...)
{
	if (!x->failed) {
		char msg[240];
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		dm_error_set(x->e, "/sql", "syntax", "at position %zu: %.160s", pos, msg);
		x->e->position = (int)pos;
		x->failed = true;
	}
	return false;
}

/* Reads the next token; false (and the error set) on a character outside the subset. */
static bool next(struct lex *x)
{
	const char *s = x->s;
	size_t p = x->pos;

	while (p < x->len && (s[p] == ' ' || s[p] == '\t' || s[p] == '\n' || s[p] == '\r'))
		p++;
	x->start = p;
	if (p >= x->len) {
		x->t = T_END;
		x->tlen = 0;
		x->pos = p;
		return true;
	}
	if (isalpha((unsigned char)s[p]) || s[p] == '_') {
		while (p < x->len && (isalnum((unsigned char)s[p]) || s[p] == '_'))
			p++;
		x->t = T_IDENT;
	} else if (s[p] == '"') {
		for (p++; p < x->len && s[p] != '"'; p++)
			;
		if (p >= x->len)
			return fail_at(x, x->start, "%s", "unterminated quoted name");
		p++;
		x->t = T_QIDENT;
	} else if (s[p] == '\'') {
		for (p++;; p++) {
			if (p >= x->len)
				return fail_at(x, x->start, "%s", "unterminated string");
			if (s[p] == '\'') {
				if (p + 1 < x->len && s[p + 1] == '\'') {
					p++;
					continue;
				}
				break;
			}
			if (!s[p])
				return fail_at(x, p, "%s", "a string cannot hold U+0000");
		}
		p++;
		x->t = T_STRING;
	} else if (isdigit((unsigned char)s[p]) ||
		   (s[p] == '-' && p + 1 < x->len && isdigit((unsigned char)s[p + 1]))) {
		if (s[p] == '-')
			p++;
		while (p < x->len && isdigit((unsigned char)s[p]))
			p++;
		if (p < x->len && s[p] == '.') {
			p++;
			if (p >= x->len || !isdigit((unsigned char)s[p]))
				return fail_at(x, p, "%s", "a digit must follow the decimal point");
			while (p < x->len && isdigit((unsigned char)s[p]))
				p++;
		}
		if (p < x->len && (s[p] == 'e' || s[p] == 'E')) {
			p++;
			if (p < x->len && (s[p] == '+' || s[p] == '-'))
				p++;
			if (p >= x->len || !isdigit((unsigned char)s[p]))
				return fail_at(x, p, "%s", "a digit must follow the exponent");
			while (p < x->len && isdigit((unsigned char)s[p]))
				p++;
		}
		if (p < x->len && (isalpha((unsigned char)s[p]) || s[p] == '_'))
			return fail_at(x, p, "%s", "a number runs into a name");
		x->t = T_NUMBER;
	} else if (s[p] == '$') {
		p++;
		if (p >= x->len || !isdigit((unsigned char)s[p]))
			return fail_at(x, x->start, "%s", "$ must be followed by a parameter number");
		while (p < x->len && isdigit((unsigned char)s[p]) && p - x->start < 5)
			p++;
		x->t = T_PARAM;
	} else {
		static const struct {
			const char *text;
			enum tok t;
		} ops[] = {
			{ "<=", T_LE }, { ">=", T_GE }, { "<>", T_NE }, { "!=", T_NE },
			{ "=", T_EQ }, { "<", T_LT }, { ">", T_GT }, { "*", T_STAR },
			{ ",", T_COMMA }, { "(", T_LPAREN }, { ")", T_RPAREN },
		};
		size_t i;

		for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
			size_t n = strlen(ops[i].text);

			if (p + n <= x->len && !memcmp(s + p, ops[i].text, n)) {
				x->t = ops[i].t;
				p += n;
				break;
			}
		}
		if (i == sizeof(ops) / sizeof(ops[0])) {
			char c[8];

			snprintf(c, sizeof(c), isprint((unsigned char)s[p]) ? "'%c'" : "0x%02x",
				 (unsigned char)s[p]);
			return fail_at(x, p, "unexpected character %s", c);
		}
	}
	x->tlen = p - x->start;
	x->pos = p;
	return true;
}

/* Whether the current token is the keyword kw (any case). */
static bool is_kw(const struct lex *x, const char *kw)
{
	return x->t == T_IDENT && strlen(kw) == x->tlen && !strncasecmp(x->s + x->start, kw, x->tlen);
}

static bool expect_kw(struct lex *x, const char *kw)
{
	if (!is_kw(x, kw))
		return fail_at(x, x->start, "expected %s", kw);
	return next(x);
}

static const char *const reserved[] = {
	"select", "from", "where", "and", "or", "not", "in", "like", "is", "null", "true",
	"false", "order", "by", "asc", "desc", "limit", "offset", "count",
};

/* A field name (plain or "quoted"); keywords need quotes. */
static bool field(struct lex *x, struct dm_field *f)
{
	const char *s = x->s + x->start;
	size_t n = x->tlen;

	if (x->t == T_QIDENT) {
		s++;
		n -= 2;
	} else if (x->t == T_IDENT) {
		for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
			if (is_kw(x, reserved[i]))
				return fail_at(x, x->start, "expected a field name, not %s",
					       reserved[i]);
	} else
		return fail_at(x, x->start, "%s", "expected a field name");
	if (!dm_field_parse(s, n, f))
		return fail_at(x, x->start, "%s",
			       "not a field: a data field is [A-Za-z][A-Za-z0-9_]*, or one of "
			       "_id, _version, _created_at, _updated_at");
	return next(x);
}

/* A literal or $n as a JSON value (new reference); NULL on error. */
static json_t *value(struct lex *x)
{
	const char *s = x->s + x->start;
	size_t at = x->start;
	json_t *v = NULL;

	switch (x->t) {
	case T_STRING: {
		char *buf = malloc(x->tlen);
		size_t o = 0;

		if (!buf)
			break;
		for (size_t i = 1; i + 1 < x->tlen; i++) {
			buf[o++] = s[i];
			if (s[i] == '\'')
				i++;
		}
		v = json_stringn(buf, o);
		free(buf);
		if (!v)
			fail_at(x, at, "%s", "a string is not valid UTF-8");
		break;
	}
	case T_NUMBER:
		v = json_loadb(s, x->tlen, JSON_DECODE_ANY, NULL);
		if (!v)
			fail_at(x, at, "%s", "not a number JSON can hold");
		break;
	case T_PARAM: {
		/* The token is "$" and 1 to 4 digits; the text may not end after it. */
		long n = 0;

		for (size_t i = 1; i < x->tlen; i++)
			n = n * 10 + (s[i] - '0');
		if (n < 1 || (size_t)n > json_array_size(x->params)) {
			fail_at(x, at, "%s", "no such parameter in params");
			return NULL;
		}
		v = json_incref(json_array_get(x->params, (size_t)n - 1));
		break;
	}
	case T_IDENT:
		if (is_kw(x, "true"))
			v = json_true();
		else if (is_kw(x, "false"))
			v = json_false();
		else if (is_kw(x, "null"))
			v = json_null();
		else
			fail_at(x, at, "%s", "expected a value (a string, a number, true, false, "
					   "null or $n)");
		break;
	default:
		fail_at(x, at, "%s", "expected a value (a string, a number, true, false, null or $n)");
		break;
	}
	if (!v) {
		fail_at(x, at, "%s", "out of memory");
		return NULL;
	}
	if (!next(x)) {
		json_decref(v);
		return NULL;
	}
	return v;
}

/*
 * The condition's tree is bounded as a JSON filter's is (DM_TREE_MAX
 * levels): depth counts the levels above the unary being read - the top
 * OR and AND, one per NOT, two per parenthesis (its OR and AND).
 */
#define DM_TREE_MAX (2 * DM_FILTER_MAX_DEPTH + 2)

struct parse {
	struct lex *x;
	size_t nodes;
	int depth;
};

static struct dm_node *expr(struct parse *ps);

static struct dm_node *node(struct parse *ps, enum dm_kind kind, size_t at)
{
	struct dm_node *n;

	if (++ps->nodes > DM_FILTER_MAX_NODES) {
		fail_at(ps->x, at, "more than %s conditions", "128");
		return NULL;
	}
	if (!(n = dm_node_new(kind)))
		fail_at(ps->x, at, "%s", "out of memory");
	return n;
}

/* A value that must suit the field f (checked where it starts). */
static json_t *value_for(struct lex *x, const struct dm_field *f)
{
	size_t at = x->start;
	json_t *v = value(x);
	struct dm_error e;

	if (v && !dm_value_ok(f, v, "/sql", &e)) {
		json_decref(v);
		fail_at(x, at, "%s", e.message);
		return NULL;
	}
	return v;
}

static struct dm_node *predicate(struct parse *ps)
{
	struct lex *x = ps->x;
	size_t at = x->start;
	struct dm_field f;
	struct dm_node *n;
	bool negate = false;

	if (!field(x, &f))
		return NULL;
	if (is_kw(x, "is")) {
		if (!next(x))
			return NULL;
		if (is_kw(x, "not")) {
			negate = true;
			if (!next(x))
				return NULL;
		}
		if (!is_kw(x, "null")) {
			fail_at(x, x->start, "%s", "expected NULL");
			return NULL;
		}
		if (!next(x) || !(n = node(ps, DM_ISNULL, at)))
			return NULL;
		n->field = f;
		n->negate = negate;
		return n;
	}
	if (is_kw(x, "not")) {
		negate = true;
		if (!next(x))
			return NULL;
		if (!is_kw(x, "in") && !is_kw(x, "like")) {
			fail_at(x, x->start, "%s", "expected IN or LIKE after NOT");
			return NULL;
		}
	}
	if (is_kw(x, "like")) {
		size_t vat;

		if (!next(x) || !(n = node(ps, DM_LIKE, at)))
			return NULL;
		n->field = f;
		n->negate = negate;
		vat = x->start;
		if (!(n->value = value(x)) || !json_is_string(n->value)) {
			if (n->value)
				fail_at(x, vat, "%s", "LIKE takes a string pattern");
			dm_node_free(n);
			return NULL;
		}
		if (f.meta != DM_DATA && f.meta != DM_ID) {
			fail_at(x, at, "%s", "LIKE applies to data fields and _id");
			dm_node_free(n);
			return NULL;
		}
		return n;
	}
	if (is_kw(x, "in")) {
		if (!next(x))
			return NULL;
		if (x->t != T_LPAREN) {
			fail_at(x, x->start, "%s", "expected ( after IN");
			return NULL;
		}
		if (!next(x) || !(n = node(ps, DM_IN, at)))
			return NULL;
		n->field = f;
		n->negate = negate;
		if (!(n->value = json_array())) {
			dm_node_free(n);
			fail_at(x, at, "%s", "out of memory");
			return NULL;
		}
		for (;;) {
			json_t *v;

			if (json_array_size(n->value) == DM_IN_MAX) {
				fail_at(x, x->start, "more than %s values in IN", "100");
				dm_node_free(n);
				return NULL;
			}
			if (!(v = value_for(x, &f)) || json_array_append_new(n->value, v)) {
				dm_node_free(n);
				return NULL;
			}
			if (x->t == T_RPAREN)
				break;
			if (x->t != T_COMMA) {
				fail_at(x, x->start, "%s", "expected , or )");
				dm_node_free(n);
				return NULL;
			}
			if (!next(x)) {
				dm_node_free(n);
				return NULL;
			}
		}
		if (!next(x)) {
			dm_node_free(n);
			return NULL;
		}
		return n;
	}
	if (x->t < T_EQ || x->t > T_GE) {
		fail_at(x, x->start, "%s", "expected a comparison (=, !=, <, <=, >, >=), IN, LIKE or IS");
		return NULL;
	}
	if (!(n = node(ps, DM_CMP, at)))
		return NULL;
	n->field = f;
	n->op = (enum dm_op)(x->t - T_EQ);
	if (!next(x) || !(n->value = value_for(x, &f))) {
		dm_node_free(n);
		return NULL;
	}
	return n;
}

static struct dm_node *unary(struct parse *ps)
{
	struct lex *x = ps->x;
	size_t at = x->start;
	struct dm_node *n, *k;
	int levels = is_kw(x, "not") ? 1 : x->t == T_LPAREN ? 2 : 0;

	/* Its levels and a comparison under them. */
	if (ps->depth + levels + 1 > DM_TREE_MAX) {
		fail_at(x, at, "%s", "the condition nests too deep");
		return NULL;
	}
	if (!levels)
		return predicate(ps);
	ps->depth += levels;
	if (levels == 1) {
		if (!next(x) || !(n = node(ps, DM_NOT, at)))
			return NULL;
		if (!(k = unary(ps)) || !dm_node_add(n, k)) {
			dm_node_free(k);
			dm_node_free(n);
			return NULL;
		}
	} else {
		if (!next(x) || !(n = expr(ps)))
			return NULL;
		if (x->t != T_RPAREN) {
			fail_at(x, x->start, "%s", "expected )");
			dm_node_free(n);
			return NULL;
		}
		if (!next(x)) {
			dm_node_free(n);
			return NULL;
		}
	}
	ps->depth -= levels;
	return n;
}

/* A chain of AND (or of OR) over sub, as one node when there are several. */
static struct dm_node *chain(struct parse *ps, const char *kw, enum dm_kind kind,
			     struct dm_node *(*sub)(struct parse *))
{
	struct lex *x = ps->x;
	size_t at = x->start;
	struct dm_node *first = sub(ps), *n, *k;

	if (!first || !is_kw(x, kw))
		return first;
	if (!(n = node(ps, kind, at)) || !dm_node_add(n, first)) {
		dm_node_free(n);
		dm_node_free(first);
		return NULL;
	}
	while (is_kw(x, kw)) {
		if (!next(x) || !(k = sub(ps)) || !dm_node_add(n, k)) {
			dm_node_free(n);
			return NULL;
		}
	}
	return n;
}

static struct dm_node *and_chain(struct parse *ps)
{
	return chain(ps, "and", DM_AND, unary);
}

static struct dm_node *expr(struct parse *ps)
{
	return chain(ps, "or", DM_OR, and_chain);
}

/* A non-negative integer literal (LIMIT, OFFSET) of at most max. */
static bool count(struct lex *x, int64_t max, int64_t *ret)
{
	size_t at = x->start;
	json_t *v;
	int64_t n;

	if (x->t != T_NUMBER && x->t != T_PARAM)
		return fail_at(x, at, "%s", "expected a whole number");
	if (!(v = value(x)))
		return false;
	if (!ad_json_int(v, &n) || n < 0 || n > max) {
		char m[32];

		json_decref(v);
		snprintf(m, sizeof(m), "%lld", (long long)max);
		return fail_at(x, at, "expected a whole number from 0 to %s", m);
	}
	json_decref(v);
	*ret = n;
	return true;
}

bool dm_query_parse(const char *sql, size_t len, const json_t *params, struct dm_query *q,
		    struct dm_error *e)
{
	struct lex x = { .s = sql, .len = len, .params = params, .e = e };
	struct parse ps = { &x, 0, 2 }; /* under the top OR and AND */
	size_t at;

	memset(q, 0, sizeof(*q));
	q->limit = -1;
	e->position = -1;
	if (!next(&x) || !expect_kw(&x, "select"))
		return false;
	if (x.t == T_STAR) {
		q->star = true;
		if (!next(&x))
			return false;
	} else if (is_kw(&x, "count")) {
		q->count = true;
		if (!next(&x))
			return false;
		if (x.t != T_LPAREN || !next(&x) || x.t != T_STAR || !next(&x) || x.t != T_RPAREN)
			return fail_at(&x, x.start, "%s", "COUNT takes (*)");
		if (!next(&x))
			return false;
	} else
		for (;;) {
			struct dm_field *f;

			if (q->nfields == QUERY_FIELDS_MAX)
				return fail_at(&x, x.start, "more than %s fields", "32");
			if (!(f = realloc(q->fields, (q->nfields + 1) * sizeof(*f))))
				return fail_at(&x, x.start, "%s", "out of memory");
			q->fields = f;
			if (!field(&x, &q->fields[q->nfields]))
				return false;
			q->nfields++;
			if (x.t != T_COMMA)
				break;
			if (!next(&x))
				return false;
		}
	if (!expect_kw(&x, "from"))
		return false;
	at = x.start;
	if (x.t != T_IDENT || x.tlen > 63 || !islower((unsigned char)sql[at]))
		return fail_at(&x, at, "%s", "expected an entity name ([a-z][a-z0-9_]*)");
	for (size_t i = 0; i < x.tlen; i++)
		if (!islower((unsigned char)sql[at + i]) && !isdigit((unsigned char)sql[at + i]) &&
		    sql[at + i] != '_')
			return fail_at(&x, at, "%s", "expected an entity name ([a-z][a-z0-9_]*)");
	memcpy(q->entity, sql + at, x.tlen);
	q->entity[x.tlen] = '\0';
	if (!next(&x))
		return false;
	if (is_kw(&x, "where")) {
		if (!next(&x) || !(q->where = expr(&ps)))
			return false;
	}
	if (is_kw(&x, "order")) {
		if (q->count)
			return fail_at(&x, x.start, "%s", "COUNT(*) takes no ORDER BY");
		if (!next(&x) || !expect_kw(&x, "by"))
			return false;
		for (;;) {
			if (q->norder == sizeof(q->order) / sizeof(q->order[0]))
				return fail_at(&x, x.start, "more than %s ORDER BY fields", "4");
			if (!field(&x, &q->order[q->norder]))
				return false;
			if (is_kw(&x, "asc") || is_kw(&x, "desc")) {
				q->desc[q->norder] = is_kw(&x, "desc");
				if (!next(&x))
					return false;
			}
			q->norder++;
			if (x.t != T_COMMA)
				break;
			if (!next(&x))
				return false;
		}
	}
	if (is_kw(&x, "limit")) {
		if (q->count)
			return fail_at(&x, x.start, "%s", "COUNT(*) takes no LIMIT");
		if (!next(&x) || !count(&x, DM_FIND_MAX, &q->limit))
			return false;
	}
	if (is_kw(&x, "offset")) {
		if (q->count)
			return fail_at(&x, x.start, "%s", "COUNT(*) takes no OFFSET");
		if (!next(&x) || !count(&x, DM_OFFSET_MAX, &q->offset))
			return false;
	}
	if (x.t != T_END)
		return fail_at(&x, x.start, "%s", "expected the end of the query");
	return true;
}

void dm_query_free(struct dm_query *q)
{
	free(q->fields);
	dm_node_free(q->where);
	memset(q, 0, sizeof(*q));
}

/* ---- the action ------------------------------------------------------------ */

/* What query_done()'s rows are: a count, records, or chosen fields. */
static char count_rows, star_rows;
#define COUNT ((void *)&count_rows)
#define STAR ((void *)&star_rows)

static void query_done(struct ad_call *call, void *arg, const struct ad_sql_result *res)
{
	struct dm_buf b = { 0 };

	if (ad_sql_error(res, NULL)) {
		dm_fail_sql(call, res);
		return;
	}
	if (arg == COUNT) {
		ad_call_reply(call, json_pack("{s:I}", "count",
					      (json_int_t)ad_sql_int(res, 0, 0, 0)));
		return;
	}
	/* Written around the rows' text, as find_many's answer is. */
	dm_buf_put(&b, "{\"rows\":[");
	for (int r = 0; r < ad_sql_rows(res, 0); r++) {
		if (r)
			dm_buf_put(&b, ",");
		if (arg == STAR)
			dm_record_put(&b, res, r, 0);
		else
			dm_buf_put(&b, ad_sql_text(res, 0, r, 0, NULL));
	}
	dm_buf_put(&b, "]}");
	dm_reply_buf(call, &b);
}

void dm_query(struct ad_call *call)
{
	const json_t *params = ad_call_params(call);
	size_t len;
	const char *sql = ad_param_str(call, "sql", &len);
	const json_t *qparams = json_object_get(params, "params");
	struct dm_query q;
	struct dm_error e;
	struct dm_buf b = { 0 };
	json_t *vals = json_array();
	struct dm_num limit, offset, org = dm_num(ad_call_org_id(call));
	const char *p[4];
	int np = 0;
	char *vtext = NULL;
	struct ad_sql *sq;

	if (!vals) {
		dm_fail_oom(call);
		return;
	}
	if (!dm_query_parse(sql, len, qparams, &q, &e)) {
		dm_query_free(&q);
		json_decref(vals);
		dm_fail_error(call, &e);
		return;
	}
	p[np++] = org.v;
	if (q.count)
		dm_buf_put(&b, "SELECT count(*)");
	else if (q.star)
		dm_buf_put(&b, "SELECT " DM_RECORD_COLS);
	else {
		dm_buf_put(&b, "SELECT jsonb_build_object(");
		for (size_t i = 0; i < q.nfields; i++) {
			dm_buf_printf(&b, "%s'%s', ", i ? ", " : "", q.fields[i].name);
			dm_value_sql(&q.fields[i], &b);
		}
		dm_buf_put(&b, ")");
	}
	if (!dm_from_sql(&b, q.entity)) {
		dm_error_set(&e, "/sql", "syntax", "not an entity name");
		dm_fail_error(call, &e);
		goto out;
	}
	if (q.where) {
		dm_buf_put(&b, " AND ");
		if (!dm_filter_sql(q.where, &b, vals, 2, "/sql", &e)) {
			dm_fail_error(call, &e);
			goto out;
		}
	}
	if (!dm_vals_param(call, vals, &vtext, p, &np))
		goto out;
	if (!q.count) {
		dm_buf_put(&b, " ORDER BY ");
		for (size_t i = 0; i < q.norder; i++) {
			dm_order_sql(&q.order[i], &b);
			dm_buf_printf(&b, "%s%s, ", q.desc[i] ? " DESC" : " ASC",
				      dm_order_nulls(&q.order[i], q.desc[i]));
		}
		dm_buf_put(&b, "r.id");
		limit = dm_num(q.limit < 0 ? DM_FIND_MAX : q.limit);
		offset = dm_num(q.offset);
		dm_buf_printf(&b, " LIMIT $%d::bigint OFFSET $%d::bigint", np + 1, np + 2);
		p[np++] = limit.v;
		p[np++] = offset.v;
	}
	if (b.oom || !(sq = ad_sql_new(call, AD_SQL_SEE_ERRORS))) {
		dm_fail_oom(call);
		goto out;
	}
	ad_sql_add(sq, b.data, np, p);
	ad_sql_run(sq, query_done, q.count ? COUNT : q.star ? STAR : NULL, NULL);
out:
	free(vtext);
	json_decref(vals);
	dm_buf_free(&b);
	dm_query_free(&q);
}
