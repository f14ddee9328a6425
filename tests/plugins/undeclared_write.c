/*
 * undeclared_write.c - a plugin that loads and serves, but whose one
 * action writes a table its spec's "writes" list leaves out: it declares
 * undeclared_notes and writes undeclared_marks.  The change capture sees
 * the write (it shows in the feed) and actiond counts it
 * (actiond_undeclared_writes_total{method="undeclared_write.mark"}).
 */
#include <actiond/actiond.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char migration[] =
	"CREATE TABLE undeclared_marks ("
	" id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
	" org_id bigint NOT NULL);"
	"SELECT actiond_tenant_table('undeclared_marks');";

static const char spec[] =
	"{\"method\": \"undeclared_write.mark\","
	" \"summary\": \"Adds a mark, saying it writes another table.\","
	" \"kind\": \"request_response\","
	" \"auth\": {\"credentials\": [\"api_key\"], \"roles\": [\"member\", \"admin\", \"owner\"]},"
	" \"risk\": \"write\","
	" \"side_effects\": true,"
	" \"rate_limit\": null,"
	" \"timeout_ms\": 5000,"
	" \"params\": {\"type\": \"object\", \"additionalProperties\": false},"
	" \"result\": {\"type\": \"object\"},"
	" \"writes\": [\"undeclared_notes\"]}";

static void marked(struct ad_call *call, void *arg, const struct ad_sql_result *res)
{
	ad_call_reply(call, json_pack("{s:I}", "id", (json_int_t)ad_sql_int(res, 0, 0, 0)));
}

static void mark(struct ad_call *call)
{
	char org[24];
	const char *p[1] = { org };
	struct ad_sql *q = ad_sql_new(call, 0);

	if (!q) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "Out of memory", NULL);
		return;
	}
	snprintf(org, sizeof(org), "%" PRId64, ad_call_org_id(call));
	ad_sql_add(q, "INSERT INTO undeclared_marks (org_id) VALUES ($1::bigint) RETURNING id", 1,
		   p);
	ad_sql_run(q, marked, NULL, NULL);
}

static int init(struct ad_module *m)
{
	if (ad_module_add_migration(m, 1, "undeclared_marks", migration))
		return -1;
	return ad_module_add_action(m, spec, strlen(spec), mark);
}

AD_MODULE_EXPORT("undeclared_write", "1.0", init, NULL);
