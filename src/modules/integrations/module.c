/*
 * module.c - the integrations module: its registration (specs, migration,
 * adapters), the settings of each adapter, and the helpers the handlers
 * share (rows as JSON, publishing).
 */
#include "builtin.h"
#include "integrations.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct ig_adapter *adapters;
static size_t nadapters;
static char runner_id[33];

const struct ig_adapter *ig_adapter(const char *name)
{
	for (size_t i = 0; name && i < nadapters; i++)
		if (!strcmp(adapters[i].name, name))
			return &adapters[i];
	return NULL;
}

const struct ig_action *ig_action(const struct ig_adapter *a, const char *name)
{
	for (size_t i = 0; a && name && i < a->nactions; i++)
		if (!strcmp(a->actions[i].name, name))
			return &a->actions[i];
	return NULL;
}

size_t ig_adapter_count(void)
{
	return nadapters;
}

const struct ig_adapter *ig_adapter_at(size_t i)
{
	return i < nadapters ? &adapters[i] : NULL;
}

const char *ig_risk_name(enum ig_risk r)
{
	return r == IG_READ ? "read" : r == IG_WRITE ? "write" : "danger";
}

const char *ig_runner_id(void)
{
	return runner_id;
}

struct ig_num ig_num(int64_t v)
{
	struct ig_num b;

	snprintf(b.v, sizeof(b.v), "%lld", (long long)v);
	return b;
}

bool ig_status_terminal(const char *s)
{
	return s && (!strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "denied") ||
		     !strcmp(s, "expired"));
}

/* ---- rows ------------------------------------------------------------------------ */

/* A json/jsonb column shown redacted (params, result); null for NULL. */
static json_t *redacted_column(const struct ad_sql_result *res, int stmt, int row, int col)
{
	json_t *v = ad_sql_json(res, stmt, row, col), *r;

	if (!v)
		return json_null();
	r = ig_redact(v, NULL, 0);
	json_decref(v);
	return r ? r : json_null();
}

json_t *ig_row_json(const struct ad_sql_result *res, int stmt, int row, int c)
{
	json_t *o = json_object(), *params;

	if (!o)
		return NULL;
	params = redacted_column(res, stmt, row, c + 6);
	if (!json_is_object(params)) {
		json_decref(params);
		params = json_object();
	}
	json_object_set_new(o, "invocation_id", ad_sql_string(res, stmt, row, c));
	json_object_set_new(o, "agent_session_id",
			    json_integer(ad_public_id_out(AD_PUBLIC_AGENT_SESSION,
							  ad_sql_int(res, stmt, row, c + 1))));
	json_object_set_new(o, "integration", ad_sql_string(res, stmt, row, c + 2));
	json_object_set_new(o, "action", ad_sql_string(res, stmt, row, c + 3));
	json_object_set_new(o, "risk", ad_sql_string(res, stmt, row, c + 4));
	json_object_set_new(o, "status", ad_sql_string(res, stmt, row, c + 5));
	json_object_set_new(o, "params", params);
	json_object_set_new(o, "deadline", ad_sql_string(res, stmt, row, c + 7));
	json_object_set_new(o, "decided_by", ad_sql_string(res, stmt, row, c + 8));
	json_object_set_new(o, "decided_at", ad_sql_string(res, stmt, row, c + 9));
	json_object_set_new(o, "reason", ad_sql_string(res, stmt, row, c + 10));
	json_object_set_new(o, "comment", ad_sql_string(res, stmt, row, c + 11));
	json_object_set_new(o, "result", redacted_column(res, stmt, row, c + 12));
	json_object_set_new(o, "error", ad_sql_string(res, stmt, row, c + 13));
	json_object_set_new(o, "upstream_status",
			    ad_sql_is_null(res, stmt, row, c + 14)
				    ? json_null()
				    : json_integer(ad_sql_int(res, stmt, row, c + 14)));
	json_object_set_new(o, "created_at", ad_sql_string(res, stmt, row, c + 15));
	json_object_set_new(o, "started_at", ad_sql_string(res, stmt, row, c + 16));
	json_object_set_new(o, "finished_at", ad_sql_string(res, stmt, row, c + 17));
	return o;
}

int64_t ig_row_org(const struct ad_sql_result *res, int stmt, int row, int c)
{
	return ad_sql_int(res, stmt, row, c + 18);
}

/* ---- publishing -------------------------------------------------------------------- */

void ig_publish(int64_t org_id, int64_t agent_session_id, const char *method,
		const json_t *params)
{
	struct ad_audience people = { .org_id = org_id,
				      .roles = AD_AUDIENCE_ADMIN | AD_AUDIENCE_OWNER };

	if (ad_publish(&people, method, params) < 0)
		ad_log(AD_LOG_WARN, "integrations: %s could not be published", method);
	if (agent_session_id) {
		struct ad_audience agent = { .org_id = org_id, .roles = AD_AUDIENCE_AGENTS,
					     .agent_session_id = agent_session_id };

		if (ad_publish(&agent, method, params) < 0)
			ad_log(AD_LOG_WARN, "integrations: %s could not be published", method);
	}
}

void ig_publish_resolved(int64_t org_id, int64_t agent_session_id, const json_t *row)
{
	static const char *const keys[] = { "invocation_id", "integration", "action", "status",
					    "decided_by", "decided_at", "reason", "comment" };
	json_t *p = json_object();

	if (!p)
		return;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		json_object_set(p, keys[i], json_object_get(row, keys[i]));
	/* The decision, not where the run went since. */
	if (!strcmp(json_string_value(json_object_get(row, "status")), "executing") ||
	    json_is_string(json_object_get(row, "started_at")))
		json_object_set_new(p, "status", json_string("approved"));
	ig_publish(org_id, agent_session_id, "approval_resolved", p);
	json_decref(p);
}

/* ---- registration ---------------------------------------------------------------------- */

/* A duration setting in ms: "1500", "1500ms", "2s"; 0 when absent or bad. */
static uint32_t setting_ms(const char *integration, const char *key)
{
	char name[96], *end;
	const char *v;
	unsigned long n;

	snprintf(name, sizeof(name), "%s.%s", integration, key);
	if (!(v = ad_module_setting("integrations", name)))
		return 0;
	n = strtoul(v, &end, 10);
	if (!strcmp(end, "s"))
		n *= 1000;
	else if (*end && strcmp(end, "ms"))
		return 0;
	return n > 3600000 ? 3600000 : (uint32_t)n;
}

static int load_adapters(struct ad_module *m)
{
	char err[256], why[320], name[96];

	if (!(adapters = calloc(ad_integrations_adapters_count, sizeof(*adapters))))
		return ad_module_refuse(m, "out of memory");
	for (size_t i = 0; i < ad_integrations_adapters_count; i++) {
		struct ig_adapter *a = &adapters[nadapters];
		const char *base;
		uint32_t t;

		if (ig_adapter_load(a, ad_integrations_adapters[i].data,
				    ad_integrations_adapters[i].len, err, sizeof(err))) {
			ig_adapter_free(a);
			snprintf(why, sizeof(why), "adapter %s: %s", ad_integrations_adapters[i].name,
				 err);
			return ad_module_refuse(m, why);
		}
		nadapters++;
		snprintf(name, sizeof(name), "%s.base_url", a->name);
		if ((base = ad_module_setting("integrations", name))) {
			free(a->base_url);
			if (!(a->base_url = strdup(base)))
				return ad_module_refuse(m, "out of memory");
		}
		snprintf(name, sizeof(name), "%s.token_url", a->name);
		if ((base = ad_module_setting("integrations", name))) {
			free(a->token_url);
			if (!(a->token_url = strdup(base)))
				return ad_module_refuse(m, "out of memory");
		}
		/* An operator may shorten an adapter's timeouts (never lengthen). */
		if ((t = setting_ms(a->name, "timeout_ms")))
			for (size_t j = 0; j < a->nactions; j++)
				if (t < a->actions[j].timeout_ms)
					a->actions[j].timeout_ms = t;
		if ((t = setting_ms(a->name, "approval_ms")))
			for (size_t j = 0; j < a->nactions; j++)
				a->actions[j].approval_ms = t;
	}
	return 0;
}

static void integrations_fini(void)
{
	for (size_t i = 0; i < nadapters; i++)
		ig_adapter_free(&adapters[i]);
	free(adapters);
	adapters = NULL;
	nadapters = 0;
}

static int integrations_init(struct ad_module *m)
{
	static const struct {
		const char *method;
		ad_handler_fn fn;
	} handlers[] = {
		{ "actions.available", ig_actions_available },
		{ "actions.invoke", ig_actions_invoke },
		{ "invocations.get", ig_invocations_get },
		{ "invocations.list", ig_invocations_list },
		{ "invocations.wait", ig_invocations_wait },
		{ "invocations.approve", ig_invocations_approve },
		{ "invocations.deny", ig_invocations_deny },
		{ "audit.verify", ig_audit_verify },
		{ "audit.export", ig_audit_export },
	};
	uint8_t rnd[16];

	randombytes_buf(rnd, sizeof(rnd));
	sodium_bin2hex(runner_id, sizeof(runner_id), rnd, sizeof(rnd));
	for (size_t i = 0; i < ad_integrations_migrations_count; i++)
		if (ad_module_add_migration(m, (uint32_t)i + 1, ad_integrations_migrations[i].name,
					    ad_integrations_migrations[i].data))
			return -1;
	for (size_t i = 0; i < ad_integrations_specs_count; i++)
		if (ad_module_add_spec(m, ad_integrations_specs[i].data,
				       ad_integrations_specs[i].len))
			return -1;
	for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++)
		if (ad_module_handle(m, handlers[i].method, handlers[i].fn))
			return -1;
	if (load_adapters(m)) {
		integrations_fini();
		return -1;
	}
	return ad_module_on_message(m, ig_on_message) || ad_module_on_start(m, ig_sweeper_start);
}

const struct ad_module_info ad_integrations_module = {
	AD_MODULE_API_VERSION, "integrations", ACTIOND_VERSION, integrations_init,
	integrations_fini,
};
