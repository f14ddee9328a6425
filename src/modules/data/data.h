/*
 * data.h - shared parts of the data module (PRODUCT.md 4.3): entities an
 * org defines, their records, the filter language and the SQL subset that
 * both compile to parameterised SQL, and the change feed.
 *
 * Every statement runs under the caller's org scope (row-level security on
 * every table of the module); no text a client sends becomes SQL: field
 * names are checked against a strict pattern and quoted as literals, and
 * every value travels in one JSON array parameter.
 */
#ifndef AD_MOD_DATA_H
#define AD_MOD_DATA_H

#include "actiond/actiond.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bounds on what an org and a client can make the module hold or do. */
#define DM_SCHEMA_MAX_BYTES 16384
#define DM_SCHEMA_MAX_DEPTH 16
#define DM_ENTITIES_MAX 100
#define DM_FILTER_MAX_NODES 128
#define DM_FILTER_MAX_DEPTH 16
#define DM_IN_MAX 100
#define DM_FIND_MAX 200
#define DM_MANY_MAX 100
#define DM_OFFSET_MAX 10000
#define DM_FIELD_MAX 63

/* A decimal int64 for an SQL parameter. */
struct dm_num {
	char v[24];
};
struct dm_num dm_num(int64_t v);

/* A growing text buffer; oom sticks. */
struct dm_buf {
	char *data;
	size_t len, cap;
	bool oom;
};
void dm_buf_put(struct dm_buf *b, const char *s);
void dm_buf_putn(struct dm_buf *b, const char *s, size_t n);
void dm_buf_int(struct dm_buf *b, int64_t v); /* in decimal */
/* v as compact JSON text (keys in their order; what json_dumps() gives up
 * to the escapes chosen and the spelling of reals). */
void dm_json_put(struct dm_buf *b, const json_t *v);
/* The same as a string to free(), or NULL when out of memory. */
char *dm_json_text(const json_t *v);
void dm_buf_printf(struct dm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dm_buf_free(struct dm_buf *b);

/*
 * A record is read as these columns of r, and written to an answer from
 * them as data_record_json() would write it: the same keys in the same
 * order and spacing, data as PostgreSQL printed it (building the JSON in
 * the database cost it more than the index lookup did).
 */
#define DM_RECORD_COLS "r.id, r.data, r.version, iso(r.created_at), iso(r.updated_at)"
#define DM_RECORD_NCOLS 5
void dm_record_put(struct dm_buf *b, const struct ad_sql_result *res, int row, int col);

/* Answers a failed batch the way ad_sql_run() would have. */
void dm_fail_sql(struct ad_call *call, const struct ad_sql_result *res);
/* The same from a SQLSTATE (NULL: internal), its message and statement index. */
void dm_fail_state(struct ad_call *call, const char *st, const char *msg, int stmt);
/* Answers "out of memory" (unavailable). */
void dm_fail_oom(struct ad_call *call);
/* Answers with b's JSON text (out of memory when b ran out), and frees b. */
void dm_reply_buf(struct ad_call *call, struct dm_buf *b);

/* ---- fields and filters (filter.c) ------------------------------------------ */

/*
 * A field a filter, an order or a query names: one of the record's data
 * (a top-level key), or of its metadata (_id, _version, _created_at,
 * _updated_at).  Nothing else is addressable: not the org, not the entity.
 */
enum dm_meta { DM_DATA, DM_ID, DM_VERSION, DM_CREATED, DM_UPDATED };
struct dm_field {
	enum dm_meta meta;
	char name[DM_FIELD_MAX + 1];
};
/* Reads a field name; false when it is none (bad characters, too long, unknown _name). */
bool dm_field_parse(const char *s, size_t len, struct dm_field *f);

enum dm_kind { DM_AND, DM_OR, DM_NOT, DM_CMP, DM_IN, DM_LIKE, DM_ISNULL };
enum dm_op { DM_EQ, DM_NE, DM_LT, DM_LE, DM_GT, DM_GE };

/* A filter tree: what the JSON filters and the WHERE of data.query become. */
struct dm_node {
	enum dm_kind kind;
	enum dm_op op;           /* DM_CMP */
	bool negate;             /* DM_ISNULL: IS NOT NULL; DM_LIKE, DM_IN: NOT */
	struct dm_field field;
	json_t *value;           /* DM_CMP, DM_LIKE: a value; DM_IN: an array (owned) */
	struct dm_node **kids;   /* DM_AND, DM_OR (n), DM_NOT (1) */
	size_t nkids;
};
void dm_node_free(struct dm_node *n);
struct dm_node *dm_node_new(enum dm_kind kind);
bool dm_node_add(struct dm_node *parent, struct dm_node *kid);

/* Where a filter is bad: a JSON pointer inside params and a sentence. */
struct dm_error {
	char pointer[256];
	char keyword[32];
	char message[200];
	int position;            /* data.query: the character, from 0; else -1 */
};
void dm_error_set(struct dm_error *e, const char *pointer, const char *keyword,
		  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Answers the call -32602 with e. */
void dm_fail_error(struct ad_call *call, const struct dm_error *e);

/*
 * Reads a JSON filter (params at pointer base) into a tree; NULL with e
 * filled when it is not valid.  A NULL or empty filter reads as no filter
 * (*ret NULL, true).
 */
bool dm_filter_parse(const json_t *filter, const char *base, struct dm_node **ret,
		     struct dm_error *e);

/*
 * Whether a value suits its field (_version wants an integer, _id a string,
 * _created_at and _updated_at an ISO 8601 time stamp); else e is set.
 */
bool dm_value_ok(const struct dm_field *f, const json_t *v, const char *pointer,
		 struct dm_error *e);

/*
 * Appends the SQL of a tree over the records aliased r to b.  The values
 * are appended to vals (a JSON array travelling as the parameter $vp),
 * referenced by index.  A value that does not suit its field fails the
 * compile with e set (pointer "base").
 */
bool dm_filter_sql(const struct dm_node *n, struct dm_buf *b, json_t *vals, int vp,
		   const char *base, struct dm_error *e);

/*
 * When a filter put values in vals, adds them as the next statement
 * parameter p[(*np)++], as text kept in *text (the caller frees it); false
 * when out of memory (the call is answered).
 */
bool dm_vals_param(struct ad_call *call, const json_t *vals, char **text, const char **p,
		   int *np);

/*
 * Starts a read of data_records r: "FROM data_records r WHERE r.org_id =
 * $1::bigint AND r.entity = '<entity>'".  The org is the caller's (both
 * layers of isolation: this condition and the row-level policy); the
 * entity is a literal so that the partial index of a declared field
 * (migration 2) can serve the read.  False when entity is not an entity
 * name (nothing appended).
 */
bool dm_from_sql(struct dm_buf *b, const char *entity);
/*
 * The SQL of a field's value for ORDER BY, and what follows its direction:
 * a record without a data field (SQL NULL) sorts first ascending, last
 * descending, as the declared index (migration 3) holds them, so an order
 * on a declared field reads that index in order.
 */
void dm_order_sql(const struct dm_field *f, struct dm_buf *b);
const char *dm_order_nulls(const struct dm_field *f, bool desc);
/* The SQL type a field's order value is compared as, for keyset cursors. */
const char *dm_order_type(const struct dm_field *f);
/* The SQL of a field's value as JSON (for SELECT lists). */
void dm_value_sql(const struct dm_field *f, struct dm_buf *b);

/* ---- the SQL subset (query.c) --------------------------------------------- */

struct dm_query {
	bool count;              /* SELECT COUNT(*) */
	bool star;               /* SELECT * */
	struct dm_field *fields; /* the SELECT list */
	size_t nfields;
	char entity[64];
	struct dm_node *where;   /* NULL: none */
	struct dm_field order[4];
	bool desc[4];
	size_t norder;
	int64_t limit;           /* -1: none given */
	int64_t offset;
};
/*
 * Parses sql (len bytes) with params ($1 is params[0]); the $n are replaced
 * by their values in the tree.  false with e (position set) when the text
 * is outside the subset.
 */
bool dm_query_parse(const char *sql, size_t len, const json_t *params, struct dm_query *q,
		    struct dm_error *e);
void dm_query_free(struct dm_query *q);

/* ---- handlers ------------------------------------------------------------- */

void dm_entities_define(struct ad_call *call);
void dm_entities_list(struct ad_call *call);
void dm_mutate(struct ad_call *call);
void dm_mutate_many(struct ad_call *call);
void dm_find_one(struct ad_call *call);
void dm_find_many(struct ad_call *call);
void dm_query(struct ad_call *call);
void dm_changes_subscribe(struct ad_call *call);
void dm_changes_unsubscribe(struct ad_call *call);

/* ---- compiled schemas (module.c) ------------------------------------------ */

/* The compiled schema of an org's entity at a version, or NULL if not cached. */
const struct ad_json_schema *dm_schema_get(int64_t org, const char *entity, int64_t *version);
/* Compiles and caches schema; NULL when it does not compile (err set). */
const struct ad_json_schema *dm_schema_put(int64_t org, const char *entity, int64_t version,
					    const json_t *schema, char *err, size_t errlen);
void dm_schema_forget(int64_t org, const char *entity);
void dm_schema_clear(void);

/* ---- the change feed (feed.c) --------------------------------------------- */

/*
 * The columns of data_sequence() as one JSON array, in seq order:
 * [[change id, seq, entity, op, ids, source table, action], ...].
 */
#define DM_NUMBERED_JSON                                                                  \
	"coalesce(jsonb_agg(jsonb_build_array(id, seq, entity, op, ids, source, action) " \
	"ORDER BY seq), '[]')"
/*
 * Changes of org that were just numbered (rows as DM_NUMBERED_JSON): the
 * writes they saw are checked against the writing action's spec, they are
 * delivered here when they follow what was delivered (else a poll reads
 * them), and the other instances are told.
 */
void dm_feed_numbered(int64_t org, const json_t *rows);
/* Starts the poll and the retention sweep when actiond serves with a database. */
void dm_feed_on_start(bool database);
/* Another instance's data module says an org was written (module.h messages). */
void dm_feed_on_message(const json_t *msg);
void dm_records_fini(void); /* schema reads still waited for */
void dm_feed_fini(void);

#endif
