/*
 * entities.c - entities.define and entities.list: the entities an org
 * defines, each with the JSON Schema its records must satisfy and the
 * fields it wants indexed.
 */
#include "data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The deepest nesting of v (a scalar is 0), stopping past limit. */
static int json_depth(const json_t *v, int limit)
{
	const char *k;
	json_t *x;
	size_t i;
	int d = 0, sub;

	if (limit < 0)
		return 1;
	if (json_is_object(v)) {
		json_object_foreach((json_t *)v, k, x) {
			sub = json_depth(x, limit - 1) + 1;
			if (sub > d)
				d = sub;
			if (d > limit)
				break;
		}
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, x) {
			sub = json_depth(x, limit - 1) + 1;
			if (sub > d)
				d = sub;
			if (d > limit)
				break;
		}
	}
	return d;
}

static int size_cb(const char *buf, size_t size, void *data)
{
	size_t *n = data;

	(void)buf;
	*n += size;
	return *n > DM_SCHEMA_MAX_BYTES ? -1 : 0;
}

/* Statement 0 takes the entity's lock; 1 is the upsert. */
static void define_done(struct ad_call *call, void *arg, const struct ad_sql_result *res)
{
	json_t *indexes = arg;

	if (!ad_sql_rows(res, 1)) {
		json_decref(indexes);
		ad_call_fail(call, AD_REASON_CONFLICT,
			     "This org has as many entities as it may (100)", NULL);
		return;
	}
	dm_schema_forget(ad_call_org_id(call), ad_sql_text(res, 1, 0, 0, NULL));
	ad_call_reply(call, json_pack("{s:o,s:I,s:o,s:o,s:o}",
				      "entity", ad_sql_string(res, 1, 0, 0),
				      "version", (json_int_t)ad_sql_int(res, 1, 0, 1),
				      "indexes", indexes,
				      "created_at", ad_sql_string(res, 1, 0, 2),
				      "updated_at", ad_sql_string(res, 1, 0, 3)));
}

static void free_json(void *p)
{
	json_decref(p);
}

/*
 * Checks the schema (size, depth, that it compiles), then upserts the
 * entity and makes the indexes, in one transaction.  The count of entities
 * is checked by the same statement.
 */
void dm_entities_define(struct ad_call *call)
{
	const json_t *params = ad_call_params(call);
	const char *entity = json_string_value(json_object_get(params, "entity"));
	const json_t *schema = json_object_get(params, "schema");
	json_t *indexes = json_object_get(params, "indexes");
	struct ad_json_schema *compiled;
	char err[200], *schema_text, *idx_text;
	size_t n = 0, i;
	struct ad_sql *q;
	json_t *f;

	if (json_dump_callback(schema, size_cb, &n, JSON_COMPACT) || n > DM_SCHEMA_MAX_BYTES) {
		ad_call_fail_params(call, "/schema", "maxLength",
				    "The schema is larger than 16 KiB");
		return;
	}
	if (json_depth(schema, DM_SCHEMA_MAX_DEPTH) > DM_SCHEMA_MAX_DEPTH) {
		ad_call_fail_params(call, "/schema", "maxDepth",
				    "The schema nests deeper than 16 levels");
		return;
	}
	if (!(compiled = ad_json_schema_new(schema, err, sizeof(err)))) {
		ad_call_fail_params(call, "/schema", "$schema", err);
		return;
	}
	ad_json_schema_free(compiled);
	indexes = indexes ? json_incref(indexes) : json_array();
	schema_text = json_dumps(schema, JSON_COMPACT | JSON_ENCODE_ANY);
	idx_text = json_dumps(indexes, JSON_COMPACT);
	q = ad_sql_new(call, 0);
	if (!indexes || !schema_text || !idx_text || !q) {
		free(schema_text);
		free(idx_text);
		ad_sql_free(q);
		json_decref(indexes);
		dm_fail_oom(call);
		return;
	}
	{
		const char *p[4] = { entity, schema_text, idx_text, dm_num(DM_ENTITIES_MAX).v };

		/* Waits for the writers validated against the old schema (data_apply). */
		ad_sql_add(q, "SELECT pg_advisory_xact_lock(data_entity_key(actiond_org(), $1))",
			   1, p);
		ad_sql_add(q, "INSERT INTO data_entities AS e (org_id, name, schema, indexes) "
			      "SELECT actiond_org(), $1, $2::jsonb, "
			      "ARRAY(SELECT jsonb_array_elements_text($3::jsonb)) "
			      "WHERE (SELECT count(*) FROM data_entities) < $4::bigint "
			      "OR EXISTS (SELECT 1 FROM data_entities WHERE name = $1) "
			      "ON CONFLICT (org_id, name) DO UPDATE SET schema = excluded.schema, "
			      "indexes = excluded.indexes, version = e.version + 1, updated_at = now() "
			      "RETURNING name, version, iso(created_at), iso(updated_at)",
			   4, p);
	}
	json_array_foreach(indexes, i, f) {
		const char *p[2] = { entity, json_string_value(f) };

		ad_sql_add(q, "SELECT data_ensure_index($1, $2)", 2, p);
	}
	free(schema_text);
	free(idx_text);
	ad_sql_run(q, define_done, indexes, free_json);
}

static void list_done(struct ad_call *call, void *arg, const struct ad_sql_result *res)
{
	json_t *list = json_array();

	(void)arg;
	for (int r = 0; list && r < ad_sql_rows(res, 0); r++)
		json_array_append_new(list, json_pack("{s:o,s:o,s:o,s:I,s:o,s:o}",
			"entity", ad_sql_string(res, 0, r, 0),
			"schema", ad_sql_json(res, 0, r, 1),
			"indexes", ad_sql_json(res, 0, r, 2),
			"version", (json_int_t)ad_sql_int(res, 0, r, 3),
			"created_at", ad_sql_string(res, 0, r, 4),
			"updated_at", ad_sql_string(res, 0, r, 5)));
	ad_call_reply(call, json_pack("{s:o}", "entities", list));
}

void dm_entities_list(struct ad_call *call)
{
	struct ad_sql *q = ad_sql_new(call, 0);

	if (!q) {
		dm_fail_oom(call);
		return;
	}
	ad_sql_add(q, "SELECT name, schema, to_jsonb(indexes), version, iso(created_at), "
		      "iso(updated_at) FROM data_entities ORDER BY name",
		   0, NULL);
	ad_sql_run(q, list_done, NULL, NULL);
}
