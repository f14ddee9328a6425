/*
 * filter.c - the filter tree of the data module: reading the JSON filter
 * language, and compiling a tree (from a filter or from data.query's
 * WHERE) to SQL over the records.
 *
 * The JSON language:
 *
 *     filter := {"and": [filter, ...]} | {"or": [filter, ...]} | {"not": filter}
 *             | {FIELD: cond, ...}              (several keys: all must hold)
 *     cond   := VALUE                           (equality; not an object)
 *             | {"eq"|"ne"|"lt"|"le"|"gt"|"ge": VALUE, "in": [VALUE, ...],
 *                "like": STRING, "is_null": BOOLEAN}   (several: all must hold)
 *
 * Compiled SQL names fields only after checking them against a strict
 * pattern (a data field is a literal key of r.data); every value is an
 * element of one JSON array parameter, referenced by its index.
 * Comparisons are between JSON values of the same type: {"gt": 5} matches
 * numbers greater than 5, never strings.
 */
#include "data.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* v in decimal, ending at end (exclusive); returns where it starts. */
static char *decimal(char *end, int64_t v)
{
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;

	do
		*--end = (char)('0' + u % 10);
	while (u /= 10);
	if (v < 0)
		*--end = '-';
	return end;
}

struct dm_num dm_num(int64_t v)
{
	struct dm_num b;
	char t[24], *p = decimal(t + sizeof(t), v);

	memcpy(b.v, p, (size_t)(t + sizeof(t) - p));
	b.v[t + sizeof(t) - p] = '\0';
	return b;
}

/* ---- buffers ------------------------------------------------------------- */

static void buf_need(struct dm_buf *b, size_t n)
{
	size_t cap;
	char *d;

	if (b->oom || b->len + n + 1 <= b->cap)
		return;
	cap = b->cap ? b->cap : 256;
	while (cap < b->len + n + 1)
		cap *= 2;
	if (!(d = realloc(b->data, cap))) {
		b->oom = true;
		return;
	}
	b->data = d;
	b->cap = cap;
}

void dm_buf_put(struct dm_buf *b, const char *s)
{
	size_t n = strlen(s);

	buf_need(b, n);
	if (b->oom)
		return;
	memcpy(b->data + b->len, s, n + 1);
	b->len += n;
}

void dm_buf_putn(struct dm_buf *b, const char *s, size_t n)
{
	buf_need(b, n);
	if (b->oom)
		return;
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void dm_buf_int(struct dm_buf *b, int64_t v)
{
	char t[24], *p = decimal(t + sizeof(t), v);

	dm_buf_putn(b, p, (size_t)(t + sizeof(t) - p));
}

/* A JSON string: quotes, backslashes and control characters escaped. */
static void json_str_put(struct dm_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t run = 0;

	dm_buf_putn(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		dm_buf_putn(b, s + run, i - run);
		run = i + 1;
		if (c == '"' || c == '\\') {
			esc[1] = (char)c;
			dm_buf_putn(b, esc, 2);
		} else {
			dm_buf_putn(b, esc, 6);
		}
	}
	dm_buf_putn(b, s + run, n - run);
	dm_buf_putn(b, "\"", 1);
}

void dm_record_put(struct dm_buf *b, const struct ad_sql_result *res, int row, int col)
{
	static const char *const keys[DM_RECORD_NCOLS] = {
		"{\"id\": ", ", \"data\": ", ", \"version\": ", ", \"created_at\": \"",
		"\", \"updated_at\": \"",
	};
	size_t n;
	const char *v;

	for (int k = 0; k < DM_RECORD_NCOLS; k++) {
		dm_buf_put(b, keys[k]);
		v = ad_sql_text(res, 0, row, col + k, &n);
		if (k)
			dm_buf_putn(b, v, n); /* JSON, a number, a timestamp */
		else
			json_str_put(b, v, n);
	}
	dm_buf_putn(b, "\"}", 2);
}

void dm_json_put(struct dm_buf *b, const json_t *v)
{
	const char *k;
	json_t *x;
	size_t i;
	char *t;

	switch (json_typeof(v)) {
	case JSON_OBJECT:
		dm_buf_putn(b, "{", 1);
		i = 0;
		json_object_foreach((json_t *)v, k, x) {
			if (i++)
				dm_buf_putn(b, ",", 1);
			json_str_put(b, k, strlen(k));
			dm_buf_putn(b, ":", 1);
			dm_json_put(b, x);
		}
		dm_buf_putn(b, "}", 1);
		break;
	case JSON_ARRAY:
		dm_buf_putn(b, "[", 1);
		json_array_foreach(v, i, x) {
			if (i)
				dm_buf_putn(b, ",", 1);
			dm_json_put(b, x);
		}
		dm_buf_putn(b, "]", 1);
		break;
	case JSON_STRING:
		json_str_put(b, json_string_value(v), json_string_length(v));
		break;
	case JSON_INTEGER:
		dm_buf_int(b, json_integer_value(v));
		break;
	case JSON_TRUE:
		dm_buf_put(b, "true");
		break;
	case JSON_FALSE:
		dm_buf_put(b, "false");
		break;
	case JSON_NULL:
		dm_buf_put(b, "null");
		break;
	default: /* a real: jansson's shortest round-trip text (rare here) */
		if (!(t = json_dumps(v, JSON_ENCODE_ANY))) {
			b->oom = true;
			return;
		}
		dm_buf_put(b, t);
		free(t);
	}
}

char *dm_json_text(const json_t *v)
{
	struct dm_buf b = { 0 };

	dm_json_put(&b, v);
	if (b.oom || !b.data) {
		free(b.data);
		return NULL;
	}
	return b.data;
}

void dm_buf_printf(struct dm_buf *b, const char *fmt, ...)
{
	char small[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->oom = true;
		return;
	}
	if ((size_t)n < sizeof(small)) {
		dm_buf_put(b, small);
		return;
	}
	buf_need(b, (size_t)n);
	if (b->oom)
		return;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void dm_buf_free(struct dm_buf *b)
{
	free(b->data);
	*b = (struct dm_buf){ 0 };
}

/* ---- errors ---------------------------------------------------------------- */

void dm_error_set(struct dm_error *e, const char *pointer, const char *keyword,
		  const char *fmt, ...)
{
	va_list ap;

	snprintf(e->pointer, sizeof(e->pointer), "%s", pointer);
	snprintf(e->keyword, sizeof(e->keyword), "%s", keyword);
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
}

void dm_fail_error(struct ad_call *call, const struct dm_error *e)
{
	ad_call_fail_params_data(call, e->pointer, e->keyword, e->message,
				 e->position >= 0 ? json_pack("{s:i}", "position", e->position)
						  : NULL);
}

/* ---- fields ---------------------------------------------------------------- */

bool dm_field_parse(const char *s, size_t len, struct dm_field *f)
{
	static const struct {
		const char *name;
		enum dm_meta meta;
	} metas[] = {
		{ "_id", DM_ID },
		{ "_version", DM_VERSION },
		{ "_created_at", DM_CREATED },
		{ "_updated_at", DM_UPDATED },
	};

	if (!len || len > DM_FIELD_MAX)
		return false;
	for (size_t i = 0; i < sizeof(metas) / sizeof(metas[0]); i++)
		if (strlen(metas[i].name) == len && !memcmp(metas[i].name, s, len)) {
			f->meta = metas[i].meta;
			memcpy(f->name, s, len);
			f->name[len] = '\0';
			return true;
		}
	if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
		return false;
	for (size_t i = 1; i < len; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_'))
			return false;
	}
	f->meta = DM_DATA;
	memcpy(f->name, s, len);
	f->name[len] = '\0';
	return true;
}

/* The column or JSON path of a field, as SQL over the records aliased r. */
static void field_sql(const struct dm_field *f, bool as_text, struct dm_buf *b)
{
	switch (f->meta) {
	case DM_ID:
		dm_buf_put(b, "r.id");
		break;
	case DM_VERSION:
		dm_buf_put(b, "r.version");
		break;
	case DM_CREATED:
		dm_buf_put(b, "r.created_at");
		break;
	case DM_UPDATED:
		dm_buf_put(b, "r.updated_at");
		break;
	case DM_DATA:
		/* The name matched [A-Za-z][A-Za-z0-9_]*: it needs no quoting. */
		dm_buf_put(b, as_text ? "(r.data ->> '" : "(r.data -> '");
		dm_buf_put(b, f->name);
		dm_buf_put(b, "')");
		break;
	}
}

bool dm_from_sql(struct dm_buf *b, const char *entity)
{
	size_t n = strlen(entity);

	if (!n || n > 63 || entity[0] < 'a' || entity[0] > 'z' ||
	    strspn(entity, "abcdefghijklmnopqrstuvwxyz0123456789_") != n)
		return false;
	dm_buf_put(b, " FROM data_records r WHERE r.org_id = $1::bigint AND r.entity = '");
	dm_buf_putn(b, entity, n);
	dm_buf_put(b, "'");
	return true;
}

void dm_order_sql(const struct dm_field *f, struct dm_buf *b)
{
	field_sql(f, false, b);
}

const char *dm_order_nulls(const struct dm_field *f, bool desc)
{
	if (f->meta != DM_DATA)
		return "";
	return desc ? " NULLS LAST" : " NULLS FIRST";
}

const char *dm_order_type(const struct dm_field *f)
{
	switch (f->meta) {
	case DM_ID:
		return "text";
	case DM_VERSION:
		return "bigint";
	case DM_CREATED:
	case DM_UPDATED:
		return "timestamptz";
	case DM_DATA:
		break;
	}
	return "jsonb";
}

void dm_value_sql(const struct dm_field *f, struct dm_buf *b)
{
	switch (f->meta) {
	case DM_ID:
		dm_buf_put(b, "to_jsonb(r.id)");
		break;
	case DM_VERSION:
		dm_buf_put(b, "to_jsonb(r.version)");
		break;
	case DM_CREATED:
		dm_buf_put(b, "to_jsonb(iso(r.created_at))");
		break;
	case DM_UPDATED:
		dm_buf_put(b, "to_jsonb(iso(r.updated_at))");
		break;
	case DM_DATA:
		dm_buf_printf(b, "(r.data -> '%s')", f->name);
		break;
	}
}

/* ---- the tree ---------------------------------------------------------------- */

struct dm_node *dm_node_new(enum dm_kind kind)
{
	struct dm_node *n = calloc(1, sizeof(*n));

	if (n)
		n->kind = kind;
	return n;
}

bool dm_node_add(struct dm_node *parent, struct dm_node *kid)
{
	struct dm_node **k = realloc(parent->kids, (parent->nkids + 1) * sizeof(*k));

	if (!k)
		return false;
	parent->kids = k;
	parent->kids[parent->nkids++] = kid;
	return true;
}

void dm_node_free(struct dm_node *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->nkids; i++)
		dm_node_free(n->kids[i]);
	free(n->kids);
	json_decref(n->value);
	free(n);
}

/* ---- reading JSON filters ------------------------------------------------------ */

struct rd {
	struct dm_error *e;
	size_t nodes;
};

/* Appends /key to a JSON pointer, escaping ~ and / (RFC 6901). */
static void ptr_join(char *out, size_t cap, const char *base, const char *key)
{
	size_t o = strlen(base);

	if (o + 2 > cap)
		o = cap - 2;
	memmove(out, base, o);
	out[o++] = '/';
	for (const char *k = key; *k && o + 3 < cap; k++) {
		if (*k == '~' || *k == '/') {
			out[o++] = '~';
			out[o++] = *k == '~' ? '0' : '1';
		} else
			out[o++] = *k;
	}
	if (o < cap)
		out[o] = '\0';
	else
		out[cap - 1] = '\0';
}

static struct dm_node *rd_node(struct rd *r, enum dm_kind kind, const char *ptr)
{
	struct dm_node *n;

	if (++r->nodes > DM_FILTER_MAX_NODES) {
		dm_error_set(r->e, ptr, "maxProperties", "the filter has more than %d conditions",
			     DM_FILTER_MAX_NODES);
		return NULL;
	}
	if (!(n = dm_node_new(kind)))
		dm_error_set(r->e, ptr, "memory", "out of memory");
	return n;
}

static struct dm_node *rd_filter(struct rd *r, const json_t *f, const char *ptr, int depth);

static const struct {
	const char *name;
	enum dm_op op;
} cmp_ops[] = {
	{ "eq", DM_EQ }, { "ne", DM_NE }, { "lt", DM_LT },
	{ "le", DM_LE }, { "gt", DM_GT }, { "ge", DM_GE },
};

/* One operator of a condition on a field. */
static struct dm_node *rd_op(struct rd *r, const struct dm_field *fld, const char *op,
			     json_t *v, const char *ptr)
{
	struct dm_node *n;

	for (size_t i = 0; i < sizeof(cmp_ops) / sizeof(cmp_ops[0]); i++)
		if (!strcmp(op, cmp_ops[i].name)) {
			if (!(n = rd_node(r, DM_CMP, ptr)))
				return NULL;
			n->op = cmp_ops[i].op;
			n->value = json_incref(v);
			n->field = *fld;
			return n;
		}
	if (!strcmp(op, "in")) {
		if (!json_is_array(v) || json_array_size(v) > DM_IN_MAX) {
			dm_error_set(r->e, ptr, json_is_array(v) ? "maxItems" : "type",
				     "in takes an array of at most %d values", DM_IN_MAX);
			return NULL;
		}
		if (!(n = rd_node(r, DM_IN, ptr)))
			return NULL;
	} else if (!strcmp(op, "like")) {
		if (!json_is_string(v)) {
			dm_error_set(r->e, ptr, "type", "like takes a string pattern");
			return NULL;
		}
		if (!(n = rd_node(r, DM_LIKE, ptr)))
			return NULL;
	} else if (!strcmp(op, "is_null")) {
		if (!json_is_boolean(v)) {
			dm_error_set(r->e, ptr, "type", "is_null takes true or false");
			return NULL;
		}
		if (!(n = rd_node(r, DM_ISNULL, ptr)))
			return NULL;
		n->negate = json_is_false(v);
		n->field = *fld;
		return n;
	} else {
		dm_error_set(r->e, ptr, "operator",
			     "unknown operator (eq, ne, lt, le, gt, ge, in, like, is_null)");
		return NULL;
	}
	n->value = json_incref(v);
	n->field = *fld;
	return n;
}

/* A field's condition: a value (equality) or an object of operators. */
static struct dm_node *rd_cond(struct rd *r, const char *key, json_t *cond, const char *ptr)
{
	struct dm_field fld;
	struct dm_node *and, *k;
	const char *op;
	json_t *v;
	char sub[256];

	if (!dm_field_parse(key, strlen(key), &fld)) {
		dm_error_set(r->e, ptr, "field",
			     "not a field: a data field is [A-Za-z][A-Za-z0-9_]* (at most %d "
			     "characters), or one of _id, _version, _created_at, _updated_at",
			     DM_FIELD_MAX);
		return NULL;
	}
	if (!json_is_object(cond))
		return rd_op(r, &fld, "eq", cond, ptr);
	if (!json_object_size(cond)) {
		dm_error_set(r->e, ptr, "minProperties", "a condition needs an operator");
		return NULL;
	}
	if (json_object_size(cond) == 1) {
		op = json_object_iter_key(json_object_iter(cond));
		ptr_join(sub, sizeof(sub), ptr, op);
		return rd_op(r, &fld, op, json_object_get(cond, op), sub);
	}
	if (!(and = rd_node(r, DM_AND, ptr)))
		return NULL;
	json_object_foreach(cond, op, v) {
		ptr_join(sub, sizeof(sub), ptr, op);
		if (!(k = rd_op(r, &fld, op, v, sub)) || !dm_node_add(and, k)) {
			if (k) {
				dm_node_free(k);
				dm_error_set(r->e, ptr, "memory", "out of memory");
			}
			dm_node_free(and);
			return NULL;
		}
	}
	return and;
}

/* The kids of and/or: a non-empty array of filters. */
static struct dm_node *rd_list(struct rd *r, enum dm_kind kind, const json_t *a,
			       const char *ptr, int depth)
{
	struct dm_node *n, *k;
	char sub[256];
	size_t i;
	json_t *f;

	if (!json_is_array(a) || !json_array_size(a)) {
		dm_error_set(r->e, ptr, "type", "and and or take a non-empty array of filters");
		return NULL;
	}
	if (!(n = rd_node(r, kind, ptr)))
		return NULL;
	json_array_foreach(a, i, f) {
		snprintf(sub, sizeof(sub), "%s/%zu", ptr, i);
		if (!(k = rd_filter(r, f, sub, depth + 1)) || !dm_node_add(n, k)) {
			if (k) {
				dm_node_free(k);
				dm_error_set(r->e, ptr, "memory", "out of memory");
			}
			dm_node_free(n);
			return NULL;
		}
	}
	return n;
}

static struct dm_node *rd_member(struct rd *r, const char *key, json_t *v, const char *ptr,
				 int depth)
{
	struct dm_node *n, *k;

	if (!strcmp(key, "and"))
		return rd_list(r, DM_AND, v, ptr, depth);
	if (!strcmp(key, "or"))
		return rd_list(r, DM_OR, v, ptr, depth);
	if (!strcmp(key, "not")) {
		if (!(n = rd_node(r, DM_NOT, ptr)))
			return NULL;
		if (!(k = rd_filter(r, v, ptr, depth + 1)) || !dm_node_add(n, k)) {
			if (k) {
				dm_node_free(k);
				dm_error_set(r->e, ptr, "memory", "out of memory");
			}
			dm_node_free(n);
			return NULL;
		}
		return n;
	}
	return rd_cond(r, key, v, ptr);
}

static struct dm_node *rd_filter(struct rd *r, const json_t *f, const char *ptr, int depth)
{
	struct dm_node *and, *k;
	const char *key;
	json_t *v;
	char sub[256];

	if (depth > DM_FILTER_MAX_DEPTH) {
		dm_error_set(r->e, ptr, "maxDepth", "the filter nests deeper than %d",
			     DM_FILTER_MAX_DEPTH);
		return NULL;
	}
	if (!json_is_object(f) || !json_object_size(f)) {
		dm_error_set(r->e, ptr, "type", "a filter is a non-empty object");
		return NULL;
	}
	if (json_object_size(f) == 1) {
		key = json_object_iter_key(json_object_iter((json_t *)f));
		ptr_join(sub, sizeof(sub), ptr, key);
		return rd_member(r, key, json_object_get(f, key), sub, depth);
	}
	if (!(and = rd_node(r, DM_AND, ptr)))
		return NULL;
	json_object_foreach((json_t *)f, key, v) {
		ptr_join(sub, sizeof(sub), ptr, key);
		if (!(k = rd_member(r, key, v, sub, depth)) || !dm_node_add(and, k)) {
			if (k) {
				dm_node_free(k);
				dm_error_set(r->e, ptr, "memory", "out of memory");
			}
			dm_node_free(and);
			return NULL;
		}
	}
	return and;
}

bool dm_filter_parse(const json_t *filter, const char *base, struct dm_node **ret,
		     struct dm_error *e)
{
	struct rd r = { e, 0 };

	*ret = NULL;
	e->position = -1;
	if (!filter || (json_is_object(filter) && !json_object_size(filter)))
		return true;
	*ret = rd_filter(&r, filter, base, 0);
	return *ret != NULL;
}

/* ---- compiling ----------------------------------------------------------------- */

static const char *const op_sql[] = { "=", "<>", "<", "<=", ">", ">=" };

/* A value of _created_at or _updated_at: an ISO 8601 date or time stamp. */
static bool is_timestamp(const char *s)
{
	/* YYYY-MM-DD, optionally followed by T or space and a time. */
	static const char shape[] = "dddd-dd-dd";
	size_t i;

	for (i = 0; shape[i]; i++)
		if (shape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != shape[i])
			return false;
	if (!s[i])
		return true;
	if (s[i] != 'T' && s[i] != ' ')
		return false;
	for (i++; s[i]; i++)
		if (!strchr("0123456789:.+-Z", s[i]))
			return false;
	return strlen(s) <= 40;
}

/* Whether v suits f; else e is set. */
bool dm_value_ok(const struct dm_field *f, const json_t *v, const char *ptr,
		     struct dm_error *e)
{
	int64_t i;

	switch (f->meta) {
	case DM_DATA:
		return true;
	case DM_ID:
		if (json_is_string(v))
			return true;
		dm_error_set(e, ptr, "type", "_id is compared with strings");
		return false;
	case DM_VERSION:
		if (ad_json_int(v, &i))
			return true;
		dm_error_set(e, ptr, "type", "_version is compared with integers");
		return false;
	case DM_CREATED:
	case DM_UPDATED:
		if (json_is_string(v) && is_timestamp(json_string_value(v)))
			return true;
		dm_error_set(e, ptr, "format", "%s is compared with ISO 8601 time stamps", f->name);
		return false;
	}
	return false;
}

/* Appends v to vals; returns its index, or -1 (out of memory). */
static long val_add(json_t *vals, const json_t *v)
{
	if (json_array_append(vals, (json_t *)v))
		return -1;
	return (long)json_array_size(vals) - 1;
}

/* The SQL of a value of field f, read from the values parameter at index k. */
static void val_sql(const struct dm_field *f, int vp, long k, struct dm_buf *b)
{
	dm_buf_put(b, "($");
	dm_buf_int(b, vp);
	dm_buf_put(b, f->meta == DM_DATA ? "::jsonb -> " : "::jsonb ->> ");
	dm_buf_int(b, k);
	switch (f->meta) {
	case DM_DATA:
	case DM_ID:
		dm_buf_put(b, ")");
		break;
	case DM_VERSION:
		dm_buf_put(b, ")::bigint");
		break;
	case DM_CREATED:
	case DM_UPDATED:
		dm_buf_put(b, ")::timestamptz");
		break;
	}
}

static const char *json_type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "object";
	case JSON_ARRAY:
		return "array";
	case JSON_STRING:
		return "string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "boolean";
	default:
		return "null";
	}
}

bool dm_vals_param(struct ad_call *call, const json_t *vals, char **text, const char **p,
		   int *np)
{
	if (!json_array_size(vals))
		return true;
	if (!(*text = dm_json_text(vals))) {
		dm_fail_oom(call);
		return false;
	}
	p[(*np)++] = *text;
	return true;
}

bool dm_filter_sql(const struct dm_node *n, struct dm_buf *b, json_t *vals, int vp,
		   const char *base, struct dm_error *e)
{
	size_t i;
	long k;
	json_t *v;

	switch (n->kind) {
	case DM_AND:
	case DM_OR:
		dm_buf_put(b, "(");
		for (i = 0; i < n->nkids; i++) {
			if (i)
				dm_buf_put(b, n->kind == DM_AND ? " AND " : " OR ");
			if (!dm_filter_sql(n->kids[i], b, vals, vp, base, e))
				return false;
		}
		dm_buf_put(b, ")");
		return true;
	case DM_NOT:
		dm_buf_put(b, "(NOT coalesce(");
		if (!dm_filter_sql(n->kids[0], b, vals, vp, base, e))
			return false;
		dm_buf_put(b, ", false))");
		return true;
	case DM_CMP:
		if (!dm_value_ok(&n->field, n->value, base, e))
			return false;
		if ((k = val_add(vals, n->value)) < 0)
			goto oom;
		dm_buf_put(b, "(");
		field_sql(&n->field, false, b);
		dm_buf_put(b, " ");
		dm_buf_put(b, op_sql[n->op]);
		dm_buf_put(b, " ");
		val_sql(&n->field, vp, k, b);
		/* Order only within one JSON type: 5 < "a" must not hold. */
		if (n->field.meta == DM_DATA && n->op != DM_EQ && n->op != DM_NE)
			dm_buf_printf(b, " AND jsonb_typeof(r.data -> '%s') = '%s'", n->field.name,
				      json_type_name(n->value));
		dm_buf_put(b, ")");
		return true;
	case DM_LIKE:
		if (n->field.meta != DM_DATA && n->field.meta != DM_ID) {
			dm_error_set(e, base, "type", "LIKE applies to data fields and _id");
			return false;
		}
		if ((k = val_add(vals, n->value)) < 0)
			goto oom;
		dm_buf_put(b, n->negate ? "(NOT coalesce(" : "(");
		field_sql(&n->field, true, b);
		dm_buf_printf(b, " LIKE ($%d::jsonb ->> %ld)", vp, k);
		dm_buf_put(b, n->negate ? ", false))" : ")");
		return true;
	case DM_IN:
		json_array_foreach(n->value, i, v)
			if (!dm_value_ok(&n->field, v, base, e))
				return false;
		if ((k = val_add(vals, n->value)) < 0)
			goto oom;
		dm_buf_put(b, n->negate ? "(NOT coalesce(" : "(");
		field_sql(&n->field, false, b);
		if (n->field.meta == DM_DATA)
			dm_buf_printf(b, " = ANY (ARRAY(SELECT jsonb_array_elements($%d::jsonb -> %ld)))",
				      vp, k);
		else
			dm_buf_printf(b, " = ANY (ARRAY(SELECT x::%s FROM "
					 "jsonb_array_elements_text($%d::jsonb -> %ld) x))",
				      dm_order_type(&n->field), vp, k);
		dm_buf_put(b, n->negate ? ", false))" : ")");
		return true;
	case DM_ISNULL:
		if (n->field.meta != DM_DATA)
			dm_buf_put(b, n->negate ? "true" : "false");
		else
			dm_buf_printf(b, "(%s(r.data -> '%s' IS NULL OR r.data -> '%s' = 'null'::jsonb))",
				      n->negate ? "NOT " : "", n->field.name, n->field.name);
		return true;
	}
	return false;
oom:
	dm_error_set(e, base, "memory", "out of memory");
	return false;
}
