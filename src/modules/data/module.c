/*
 * module.c - the data module: its registration, its migration, the cache
 * of compiled entity schemas, and the answers to failed batches.
 */
#include "builtin.h"
#include "data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- failed batches --------------------------------------------------------- */

void dm_fail_oom(struct ad_call *call)
{
	ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
}

void dm_reply_buf(struct ad_call *call, struct dm_buf *b)
{
	if (b->oom)
		dm_fail_oom(call);
	else
		ad_call_reply_raw(call, b->data, b->len);
	dm_buf_free(b);
}

void dm_fail_state(struct ad_call *call, const char *st, const char *msg, int stmt)
{
	if (!st)
		st = "XX000";
	if (!strcmp(st, "unavailable"))
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "The database is unavailable", NULL);
	else if (!strcmp(st, "57014"))
		ad_call_fail(call, AD_REASON_TIMEOUT, "The database statement timed out", NULL);
	else if (!strcmp(st, "23505") || !strcmp(st, "40001") || !strcmp(st, "40P01"))
		ad_call_fail(call, AD_REASON_CONFLICT,
			     "A concurrent change got in the way; try again", NULL);
	else if (!strncmp(st, "22", 2))
		/* A value the database could not take (a date out of range, say). */
		ad_call_fail_params(call, "", "format", "A value is out of range for its field");
	else {
		ad_call_log(call, AD_LOG_ERROR, "statement %d failed: %s (SQLSTATE %s)", stmt,
			    msg ? msg : "", st);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "The database refused the operation",
			     NULL);
	}
}

void dm_fail_sql(struct ad_call *call, const struct ad_sql_result *res)
{
	int stmt;
	const char *st = ad_sql_error(res, &stmt);

	dm_fail_state(call, st, ad_sql_error_message(res), stmt);
}

/* ---- compiled schemas --------------------------------------------------------- */

/*
 * A small cache of compiled schemas, keyed by org and entity and carrying
 * the version it was compiled from.  A write checks in its transaction that
 * the version is still current, so a stale entry costs a retry, never a
 * record validated against the wrong schema.  Full: the oldest slot goes.
 */
#define CACHE_SLOTS 256

struct slot {
	int64_t org;
	int64_t version;
	char entity[64];
	struct ad_json_schema *s;
};

static struct slot cache[CACHE_SLOTS];
static size_t cache_next;

const struct ad_json_schema *dm_schema_get(int64_t org, const char *entity, int64_t *version)
{
	for (size_t i = 0; i < CACHE_SLOTS; i++)
		if (cache[i].s && cache[i].org == org && !strcmp(cache[i].entity, entity)) {
			*version = cache[i].version;
			return cache[i].s;
		}
	return NULL;
}

void dm_schema_forget(int64_t org, const char *entity)
{
	for (size_t i = 0; i < CACHE_SLOTS; i++)
		if (cache[i].s && cache[i].org == org && !strcmp(cache[i].entity, entity)) {
			ad_json_schema_free(cache[i].s);
			cache[i].s = NULL;
		}
}

const struct ad_json_schema *dm_schema_put(int64_t org, const char *entity, int64_t version,
					    const json_t *schema, char *err, size_t errlen)
{
	struct ad_json_schema *s;
	struct slot *sl;

	if (strlen(entity) >= sizeof(cache[0].entity)) {
		snprintf(err, errlen, "entity name too long");
		return NULL;
	}
	if (!(s = ad_json_schema_new(schema, err, errlen)))
		return NULL;
	dm_schema_forget(org, entity);
	sl = &cache[cache_next];
	cache_next = (cache_next + 1) % CACHE_SLOTS;
	ad_json_schema_free(sl->s);
	sl->org = org;
	sl->version = version;
	snprintf(sl->entity, sizeof(sl->entity), "%s", entity);
	sl->s = s;
	return s;
}

void dm_schema_clear(void)
{
	for (size_t i = 0; i < CACHE_SLOTS; i++) {
		ad_json_schema_free(cache[i].s);
		cache[i].s = NULL;
	}
}

/* ---- registration -------------------------------------------------------------- */

static int data_init(struct ad_module *m)
{
	static const struct {
		const char *method;
		ad_handler_fn fn;
	} handlers[] = {
		{ "entities.define", dm_entities_define },
		{ "entities.list", dm_entities_list },
		{ "data.mutate", dm_mutate },
		{ "data.mutate_many", dm_mutate_many },
		{ "data.find_one", dm_find_one },
		{ "data.find_many", dm_find_many },
		{ "data.query", dm_query },
		{ "changes.subscribe", dm_changes_subscribe },
		{ "changes.unsubscribe", dm_changes_unsubscribe },
	};

	for (size_t i = 0; i < ad_data_specs_count; i++)
		if (ad_module_add_spec(m, ad_data_specs[i].data, ad_data_specs[i].len))
			return -1;
	for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++)
		if (ad_module_handle(m, handlers[i].method, handlers[i].fn))
			return -1;
	ad_module_on_start(m, dm_feed_on_start);
	ad_module_on_message(m, dm_feed_on_message);
	for (size_t i = 0; i < ad_data_migrations_count; i++) {
		char *sql = strndup(ad_data_migrations[i].data, ad_data_migrations[i].len);
		int rc;

		if (!sql)
			return ad_module_refuse(m, "out of memory");
		rc = ad_module_add_migration(m, (uint32_t)i + 1, ad_data_migrations[i].name, sql);
		free(sql);
		if (rc)
			return -1;
	}
	return 0;
}

static void data_fini(void)
{
	dm_feed_fini();
	dm_records_fini();
	dm_schema_clear();
}

const struct ad_module_info ad_data_module = {
	AD_MODULE_API_VERSION, "data", ACTIOND_VERSION, data_init, data_fini,
};
