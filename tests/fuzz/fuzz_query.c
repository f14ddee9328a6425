/*
 * fuzz_query.c - fuzz driver for the SQL subset of data.query
 * (src/modules/data/query.c) and the SQL that its WHERE compiles to
 * (filter.c).
 *
 * An input is the query text; $1..$6 are a fixed set of values of every
 * JSON type.  Built like fuzz_rpc.c: a libFuzzer target with
 * -Dfuzzing=true, otherwise a corpus replay plus deterministic mutations,
 * run by the test suite.
 *
 * The driver aborts when the parser breaks its contract: a refusal must
 * name a position inside the text (and its message must start with it); an
 * accepted query must name a well-formed entity, fields that need no
 * quoting, a limit and an offset inside their bounds, and compile to SQL in
 * which no text of the query can end a literal or start a comment or a new
 * statement.
 *
 * In tests/fuzz/corpus_query/, param_at_end_overread.sql reproduces a read
 * past the end of the text (a $n parameter at its very end was read with
 * strtol); fixed.
 */
#include "data/data.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t accepted, refused, compiled;
static json_t *params;

static void check_field(const struct dm_field *f)
{
	size_t n = strlen(f->name);

	if (!n || n > DM_FIELD_MAX)
		abort();
	if (f->meta != DM_DATA)
		return;
	for (size_t i = 0; i < n; i++) {
		char c = f->name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (i && ((c >= '0' && c <= '9') || c == '_'))))
			abort();
	}
}

static void check_tree(const struct dm_node *n, int depth)
{
	if (depth > 2 * DM_FILTER_MAX_DEPTH + 2)
		abort();
	switch (n->kind) {
	case DM_AND:
	case DM_OR:
	case DM_NOT:
		if (!n->nkids || (n->kind == DM_NOT && n->nkids != 1))
			abort();
		for (size_t i = 0; i < n->nkids; i++)
			check_tree(n->kids[i], depth + 1);
		break;
	case DM_IN:
		if (!json_is_array(n->value) || json_array_size(n->value) > DM_IN_MAX)
			abort();
		check_field(&n->field);
		break;
	case DM_CMP:
	case DM_LIKE:
		if (!n->value)
			abort();
		check_field(&n->field);
		break;
	case DM_ISNULL:
		check_field(&n->field);
		break;
	}
}

/* The compiled SQL: quotes pair up, parentheses balance, no ; -- or slash-star. */
static void check_sql(const char *s, size_t len)
{
	bool quoted = false;
	long parens = 0;

	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (c == '\'') {
			quoted = !quoted;
			continue;
		}
		if (quoted) {
			/* Inside a literal only a field name or a type name appears. */
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') || c == '_'))
				abort();
			continue;
		}
		if (c == ';' || c == '\\' || c == '"' || (unsigned char)c < ' ' ||
		    (c == '-' && i + 1 < len && s[i + 1] == '-') ||
		    (c == '/' && i + 1 < len && s[i + 1] == '*'))
			abort();
		parens += c == '(';
		parens -= c == ')';
		if (parens < 0)
			abort();
	}
	if (quoted || parens)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dm_query q;
	struct dm_error e = { 0 };
	struct dm_buf b = { 0 };
	json_t *vals;

	if (!params)
		params = json_pack("[s, i, f, b, n, s, [i]]", "it's", 42, 2.5, 1,
				   "2026-11-29T00:00:00Z", 7);
	if (!dm_query_parse((const char *)data, size, params, &q, &e)) {
		char want[40];

		refused++;
		if (e.position < 0 || (size_t)e.position > size)
			abort();
		snprintf(want, sizeof(want), "at position %d", e.position);
		if (strncmp(e.message, want, strlen(want)) || strcmp(e.pointer, "/sql"))
			abort();
		dm_query_free(&q);
		return 0;
	}
	accepted++;
	if (!q.entity[0] || q.entity[0] < 'a' || q.entity[0] > 'z')
		abort();
	for (const char *p = q.entity; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			abort();
	if (q.limit < -1 || q.limit > DM_FIND_MAX || q.offset < 0 || q.offset > DM_OFFSET_MAX ||
	    q.norder > 4 || (q.count && (q.star || q.nfields || q.norder)) ||
	    (!q.count && !q.star && !q.nfields))
		abort();
	for (size_t i = 0; i < q.nfields; i++)
		check_field(&q.fields[i]);
	for (size_t i = 0; i < q.norder; i++) {
		check_field(&q.order[i]);
		dm_order_sql(&q.order[i], &b);
	}
	if (q.where) {
		check_tree(q.where, 0);
		vals = json_array();
		if (!vals)
			abort();
		if (dm_filter_sql(q.where, &b, vals, 3, "/sql", &e)) {
			char *text = json_dumps(vals, JSON_COMPACT | JSON_ENCODE_ANY);

			compiled++;
			if (!text)
				abort();
			free(text);
		} else if (!e.message[0]) {
			abort();
		}
		json_decref(vals);
	}
	if (!b.oom && b.data)
		check_sql(b.data, b.len);
	dm_buf_free(&b);
	dm_query_free(&q);
	return 0;
}

#ifndef AD_LIBFUZZER
#define FUZZ_NAME "fuzz_query"

static const char *const fuzz_tokens[] = {
	"SELECT ", "select ", "* ", "COUNT(*) ", "FROM ", "contact ", "WHERE ", "AND ", "OR ",
	"NOT ", "(", ")", ",", "=", "<>", "!=", "<", "<=", ">", ">=", "IN ", "LIKE ",
	"IS NULL ", "IS NOT NULL ", "ORDER BY ", "ASC ", "DESC ", "LIMIT ", "OFFSET ",
	"$1", "$2", "$3", "$4", "$5", "$6", "$7", "$0", "$99999999999", "'a''b'", "'",
	"\"name\"", "\"", "name ", "_id ", "_version ", "_created_at ", "_nope ", "age ",
	"5", "-1", "2.5e3", "1e999", "200", "201", "10000", "10001", "99999999999999999999",
	"TRUE ", "FALSE ", "NULL ", ";", "--", "/*", "*/", "\\", "\xc3\xa9", " ", "\t",
	"\n", "now()", "pg_sleep(1)", "union ", "data_records ",
};

static void fuzz_report(void)
{
	printf("%zu accepted (%zu WHERE compiled), %zu refused, no failure\n", accepted,
	       compiled, refused);
}

#include "replay.h"
#endif
