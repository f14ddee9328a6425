/*
 * sample.c - a complete actiond plugin: per-org notes.
 *
 * The module "sample" owns one tenant table, sample_notes, made by its
 * migration and put under forced row-level security keyed on the caller's
 * org (actiond_tenant_table).  Its statements never filter by org
 * themselves: sample.note_list reads the whole table and still sees only
 * the caller's notes, and sample.note_count_anonymous, callable without
 * credentials, counts nothing at all.  docs/modules.md walks through it.
 */
#include <actiond/actiond.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* ---- migrations -------------------------------------------------------- */

static const char migration_1[] =
	"CREATE TABLE sample_notes ("
	" id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
	" org_id bigint NOT NULL,"
	" body text NOT NULL CHECK (length(body) <= 1000),"
	" created_at timestamptz DEFAULT now());"
	"SELECT actiond_tenant_table('sample_notes');";

static const char migration_2[] =
	"CREATE TABLE sample_cups ("
	" id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
	" org_id bigint NOT NULL,"
	" account_id bigint NOT NULL,"
	" day date NOT NULL DEFAULT current_date,"
	" cups integer NOT NULL CHECK (cups BETWEEN 0 AND 50),"
	" UNIQUE (org_id, account_id, day));"
	"SELECT actiond_tenant_table('sample_cups');";

/* ---- specs (see protocol/spec.schema.json) ------------------------------ */

static const char set_cups_spec[] =
	"{"
	"\"method\": \"sample.set_cups\","
	"\"summary\": \"Sets how many cups of water the caller drank today.\","
	"\"kind\": \"request_response\","
	"\"auth\": {\"credentials\": [\"session\", \"api_token\"],"
	"          \"roles\": [\"member\", \"admin\", \"owner\"]},"
	"\"risk\": \"write\","
	"\"side_effects\": true,"
	"\"rate_limit\": {\"limit\": 120, \"window_ms\": 60000, \"per\": \"credential\"},"
	"\"timeout_ms\": 5000,"
	"\"tool\": true,"
	"\"params\": {\"type\": \"object\", \"additionalProperties\": false,"
	"             \"required\": [\"cups\"],"
	"             \"properties\": {\"cups\": {\"type\": \"integer\", \"minimum\": 0,"
	"                                       \"maximum\": 50}}},"
	"\"result\": {\"type\": \"object\", \"additionalProperties\": false,"
	"             \"required\": [\"id\", \"day\", \"cups\"],"
	"             \"properties\": {\"id\": {\"type\": \"integer\"},"
	"                              \"day\": {\"type\": \"string\"},"
	"                              \"cups\": {\"type\": \"integer\"}}},"
	"\"writes\": [\"sample_cups\"]"
	"}";

static const char note_add_spec[] =
	"{"
	"\"method\": \"sample.note_add\","
	"\"summary\": \"Adds a note to the caller's org and answers its id.\","
	"\"kind\": \"request_response\","
	"\"auth\": {\"credentials\": [\"api_key\", \"session\", \"api_token\"],"
	"          \"roles\": [\"member\", \"admin\", \"owner\"]},"
	"\"risk\": \"write\","
	"\"side_effects\": true,"
	"\"rate_limit\": {\"limit\": 600, \"window_ms\": 60000, \"per\": \"credential\"},"
	"\"timeout_ms\": 5000,"
	"\"tool\": true,"
	"\"params\": {\"type\": \"object\", \"additionalProperties\": false,"
	"             \"required\": [\"body\"],"
	"             \"properties\": {\"body\": {\"type\": \"string\", \"minLength\": 1,"
	"                                       \"maxLength\": 1000}}},"
	"\"result\": {\"type\": \"object\", \"additionalProperties\": false,"
	"             \"required\": [\"id\"],"
	"             \"properties\": {\"id\": {\"type\": \"integer\", \"minimum\": 1}}},"
	"\"writes\": [\"sample_notes\"]"
	"}";

static const char note_list_spec[] =
	"{"
	"\"method\": \"sample.note_list\","
	"\"summary\": \"Lists the notes of the caller's org, oldest first.\","
	"\"kind\": \"request_response\","
	"\"auth\": {\"credentials\": [\"api_key\", \"session\", \"api_token\"],"
	"          \"roles\": [\"member\", \"admin\", \"owner\"]},"
	"\"risk\": \"read\","
	"\"side_effects\": false,"
	"\"rate_limit\": null,"
	"\"timeout_ms\": 5000,"
	"\"tool\": true,"
	"\"params\": {\"type\": \"object\", \"additionalProperties\": false},"
	"\"result\": {\"type\": \"object\", \"additionalProperties\": false,"
	"             \"required\": [\"notes\"],"
	"             \"properties\": {\"notes\": {\"type\": \"array\", \"items\": {"
	"               \"type\": \"object\", \"additionalProperties\": false,"
	"               \"required\": [\"id\", \"body\"],"
	"               \"properties\": {\"id\": {\"type\": \"integer\"},"
	"                              \"body\": {\"type\": \"string\"}}}}}},"
	"\"writes\": []"
	"}";

static const char note_count_anonymous_spec[] =
	"{"
	"\"method\": \"sample.note_count_anonymous\","
	"\"summary\": \"Counts the notes a caller without credentials can see: none.\","
	"\"description\": \"Runs an unscoped count(*) with no org set, to show that"
	" row-level security hides every tenant row from anonymous callers.\","
	"\"kind\": \"request_response\","
	"\"auth\": {\"credentials\": [\"anonymous\"], \"roles\": []},"
	"\"risk\": \"read\","
	"\"side_effects\": false,"
	"\"rate_limit\": {\"limit\": 60, \"window_ms\": 60000, \"per\": \"ip\"},"
	"\"timeout_ms\": 5000,"
	"\"tool\": true,"
	"\"params\": {\"type\": \"object\", \"additionalProperties\": false},"
	"\"result\": {\"type\": \"object\", \"additionalProperties\": false,"
	"             \"required\": [\"count\"],"
	"             \"properties\": {\"count\": {\"type\": \"integer\", \"minimum\": 0}}},"
	"\"writes\": []"
	"}";

/* ---- handlers ------------------------------------------------------------ */

/* Answers a call whose batch could not even be built. */
static void no_batch(struct ad_call *call)
{
	ad_call_fail(call, AD_REASON_UNAVAILABLE, "Out of memory", NULL);
}

static void note_added(struct ad_call *call, void *arg, const struct ad_sql_result *res)
{
	ad_call_reply(call, json_pack("{s:I}", "id", (json_int_t)ad_sql_int(res, 0, 0, 0)));
}

/*
 * sample.note_add {body}: inserts the note for the caller's org.  The
 * table's policy would refuse any other org_id, so the value written is the
 * caller's own by construction and by check.
 */
static void note_add(struct ad_call *call)
{
	const char *params[2];
	char org[24];
	struct ad_sql *q;
	size_t len;
	const char *body = ad_param_str(call, "body", &len);

	/* PostgreSQL text cannot hold U+0000, which JSON strings may. */
	if (!body || strlen(body) != len) {
		ad_call_fail_params(call, "/body", "pattern", "body may not contain U+0000");
		return;
	}
	snprintf(org, sizeof(org), "%" PRId64, ad_call_org_id(call));
	params[0] = org;
	params[1] = body;
	if (!(q = ad_sql_new(call, 0))) {
		no_batch(call);
		return;
	}
	ad_sql_add(q,
		   "INSERT INTO sample_notes (org_id, body) VALUES ($1::bigint, $2)"
		   " RETURNING id",
		   2, params);
	ad_sql_run(q, note_added, NULL, NULL);
}

static void notes_listed(struct ad_call *call, void *arg, const struct ad_sql_result *res)
{
	json_t *notes = json_array();
	int n = ad_sql_rows(res, 0);

	for (int i = 0; i < n; i++)
		json_array_append_new(notes,
				      json_pack("{s:I,s:o}", "id",
						(json_int_t)ad_sql_int(res, 0, i, 0), "body",
						ad_sql_string(res, 0, i, 1)));
	ad_call_reply(call, json_pack("{s:o}", "notes", notes));
}

/*
 * sample.note_list {}: a deliberately unscoped SELECT.  Row-level security
 * limits it to the caller's org.
 */
static void note_list(struct ad_call *call)
{
	struct ad_sql *q = ad_sql_new(call, 0);

	if (!q) {
		no_batch(call);
		return;
	}
	ad_sql_add(q, "SELECT id, body FROM sample_notes ORDER BY id", 0, NULL);
	ad_sql_run(q, notes_listed, NULL, NULL);
}

static void notes_counted(struct ad_call *call, void *arg, const struct ad_sql_result *res)
{
	ad_call_reply(call, json_pack("{s:I}", "count", (json_int_t)ad_sql_int(res, 0, 0, 0)));
}

/*
 * sample.note_count_anonymous {}: an unscoped count(*) for a caller
 * without an org; with app.org unset it sees no rows and answers 0.
 */
static void note_count_anonymous(struct ad_call *call)
{
	struct ad_sql *q = ad_sql_new(call, 0);

	if (!q) {
		no_batch(call);
		return;
	}
	ad_sql_add(q, "SELECT count(*) FROM sample_notes", 0, NULL);
	ad_sql_run(q, notes_counted, NULL, NULL);
}

static void cups_set(struct ad_call *call, void *arg, const struct ad_sql_result *res)
{
	ad_call_reply(call, json_pack("{s:I,s:o,s:I}", "id", (json_int_t)ad_sql_int(res, 0, 0, 0),
				      "day", ad_sql_string(res, 0, 0, 1), "cups",
				      (json_int_t)ad_sql_int(res, 0, 0, 2)));
}

/*
 * sample.set_cups {cups}: today's count for the calling account, made or
 * replaced.  The spec admits only credentials of an account (a session or
 * an API token), so there is always one.
 */
static void set_cups(struct ad_call *call)
{
	char org[24], account[24], cups[24];
	const char *params[3] = { org, account, cups };
	int64_t n;
	struct ad_sql *q;

	if (!ad_param_int(call, "cups", &n)) { /* the spec requires it */
		ad_call_fail_params(call, "/cups", "type", "cups is an integer");
		return;
	}
	snprintf(org, sizeof(org), "%" PRId64, ad_call_org_id(call));
	snprintf(account, sizeof(account), "%" PRId64, ad_call_account_id(call));
	snprintf(cups, sizeof(cups), "%" PRId64, n);
	if (!(q = ad_sql_new(call, 0))) {
		no_batch(call);
		return;
	}
	ad_sql_add(q,
		   "INSERT INTO sample_cups (org_id, account_id, cups)"
		   " VALUES ($1::bigint, $2::bigint, $3::integer)"
		   " ON CONFLICT (org_id, account_id, day) DO UPDATE SET cups = excluded.cups"
		   " RETURNING id, day::text, cups",
		   3, params);
	ad_sql_run(q, cups_set, NULL, NULL);
}

/* ---- the module --------------------------------------------------------- */

/* Registers the migrations and the four actions; any failure refuses all. */
static int sample_init(struct ad_module *m)
{
	if (ad_module_add_migration(m, 1, "sample_notes", migration_1) ||
	    ad_module_add_migration(m, 2, "sample_cups", migration_2) ||
	    ad_module_add_action(m, set_cups_spec, strlen(set_cups_spec), set_cups) ||
	    ad_module_add_action(m, note_add_spec, strlen(note_add_spec), note_add) ||
	    ad_module_add_action(m, note_list_spec, strlen(note_list_spec), note_list) ||
	    ad_module_add_action(m, note_count_anonymous_spec,
				 strlen(note_count_anonymous_spec), note_count_anonymous))
		return -1;
	return 0;
}

AD_MODULE_EXPORT("sample", "1.0.0", sample_init, NULL);
