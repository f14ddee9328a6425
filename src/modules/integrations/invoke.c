/*
 * invoke.c - what an agent may do (actions.available, which also shows
 * whether the org's credential for each integration works) and asks for
 * (actions.invoke).
 *
 * An invoke is one transaction: an advisory lock on the agent session
 * serialises its invokes, so the count of its pending invocations that the
 * INSERT ... SELECT ... WHERE count < 10 reads cannot be overtaken by a
 * concurrent one (on any instance); the row is inserted with the status the
 * risk gives it (read: executing, write: pending, danger: denied), and its
 * events with it.  An idempotency key is unique per agent session: the
 * INSERT does nothing when the key exists, and the same transaction reads
 * the row that holds it.
 */
#include "integrations.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool session_has(struct ad_call *call, const char *integration)
{
	for (size_t i = 0; i < ad_call_integration_count(call); i++)
		if (!strcmp(ad_call_integration(call, i), integration))
			return true;
	return false;
}

/* One integration of actions.available, with its credential's status. */
static json_t *available_one(const struct ig_adapter *a, const struct ad_sql_result *r)
{
	json_t *acts = json_array(), *o;
	const char *status = "broken", *reason = "no credential is set (admin.credential_set)";

	for (int i = 0; i < ad_sql_rows(r, 0); i++)
		if (!strcmp(ad_sql_text(r, 0, i, 0, NULL), a->name)) {
			status = ad_sql_text(r, 0, i, 1, NULL);
			reason = ad_sql_is_null(r, 0, i, 2) ? NULL : ad_sql_text(r, 0, i, 2, NULL);
			break;
		}
	for (size_t j = 0; j < a->nactions; j++) {
		const struct ig_action *x = &a->actions[j];

		json_array_append_new(acts, json_pack("{s:s,s:s,s:s,s:O}", "action", x->name,
						      "summary", x->summary, "risk",
						      ig_risk_name(x->risk), "params", x->params));
	}
	o = json_pack("{s:s,s:s,s:s,s:o}", "integration", a->name, "summary", a->summary,
		      "credential_status", strcmp(status, "broken") ? "ok" : "broken", "actions",
		      acts);
	if (o && !strcmp(status, "broken"))
		json_object_set_new(o, "credential_reason",
				    json_string(reason ? reason : "no reason recorded"));
	return o;
}

static void available(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	json_t *list = json_array();

	(void)arg;
	if (ad_call_credential_kind(call) == AD_CRED_AGENT) {
		for (size_t i = 0; i < ad_call_integration_count(call); i++) {
			const struct ig_adapter *a = ig_adapter(ad_call_integration(call, i));

			if (a)
				json_array_append_new(list, available_one(a, r));
		}
	} else {
		/* An admin or owner: every integration actiond serves. */
		for (size_t i = 0; i < ig_adapter_count(); i++)
			json_array_append_new(list, available_one(ig_adapter_at(i), r));
	}
	ad_call_reply(call, json_pack("{s:o}", "integrations", list));
}

void ig_actions_available(struct ad_call *call)
{
	struct ad_sql *q = ad_sql_new(call, 0);

	if (!q) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ig_oauth_add_status(q);
	ad_sql_run(q, available, NULL, NULL);
}

/* ---- actions.invoke ------------------------------------------------------------------ */

struct invoke {
	char id[33];
	char hash[65];
	char *params_text;
	const struct ig_action *action;
	bool keyed;
};

static void invoke_free(void *arg)
{
	struct invoke *iv = arg;

	free(iv->params_text);
	free(iv);
}

static void pending_answer(struct ad_call *call, const char *id, json_t *deadline)
{
	ad_call_set_http_status(call, 202);
	ad_call_reply(call, json_pack("{s:s,s:s,s:o}", "invocation_id", id, "status", "pending",
				      "deadline", deadline));
}

static void denied_answer(struct ad_call *call, const char *id)
{
	ad_call_fail(call, AD_REASON_DENIED,
		     "This action is dangerous: it is denied by policy and was not run",
		     json_pack("{s:s,s:s}", "invocation_id", id, "status", "denied"));
}

/* The key was used before: the stored outcome, or why not. */
static void replay(struct ad_call *call, struct invoke *iv, const struct ad_sql_result *r)
{
	json_t *row = ig_row_json(r, 2, 0, 0);
	const char *status = json_string_value(json_object_get(row, "status"));
	const char *id = json_string_value(json_object_get(row, "invocation_id"));
	size_t hl;
	const char *hash = ad_sql_text(r, 2, 0, IG_NCOLS, &hl);

	if (!row) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
	} else if (strcmp(hash, iv->hash) ||
		   strcmp(json_string_value(json_object_get(row, "integration")),
			  ad_param_str(call, "integration", NULL)) ||
		   strcmp(json_string_value(json_object_get(row, "action")),
			  ad_param_str(call, "action", NULL))) {
		ad_call_fail(call, AD_REASON_CONFLICT,
			     "This idempotency key was used with other params",
			     json_pack("{s:s}", "detail", "params_mismatch"));
	} else if (!strcmp(status, "executing") || !strcmp(status, "approved")) {
		ad_call_fail(call, AD_REASON_CONFLICT,
			     "The invocation with this idempotency key is still running",
			     json_pack("{s:s,s:s}", "detail", "in_progress", "invocation_id", id));
	} else if (!strcmp(status, "pending")) {
		pending_answer(call, id, json_incref(json_object_get(row, "deadline")));
	} else if (!strcmp(status, "denied") && !strcmp(ad_sql_text(r, 2, 0, 4, NULL), "danger")) {
		denied_answer(call, id);
	} else {
		ad_call_reply(call, json_incref(row));
	}
	json_decref(row);
	invoke_free(iv);
}

static void invoked(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	struct invoke *iv = arg;
	json_t *row;
	const char *status;

	if (ad_sql_rows(r, 1) == 0) {
		if (iv->keyed && ad_sql_rows(r, 2) == 1) {
			replay(call, iv, r);
			return;
		}
		invoke_free(iv);
		ad_call_fail(call, AD_REASON_RATE_LIMITED,
			     "This agent session has the most invocations waiting for approval "
			     "it may have; wait for a decision",
			     json_pack("{s:i}", "max_pending", IG_MAX_PENDING));
		return;
	}
	if (!(row = ig_row_json(r, 1, 0, 0))) {
		invoke_free(iv);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ig_chain_soon();
	status = json_string_value(json_object_get(row, "status"));
	if (!strcmp(status, "pending")) {
		json_t *note = json_pack("{s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O}", "invocation_id",
					 json_object_get(row, "invocation_id"), "agent_session_id",
					 json_object_get(row, "agent_session_id"), "integration",
					 json_object_get(row, "integration"), "action",
					 json_object_get(row, "action"), "risk",
					 json_object_get(row, "risk"), "params",
					 json_object_get(row, "params"), "deadline",
					 json_object_get(row, "deadline"), "created_at",
					 json_object_get(row, "created_at"));

		ig_publish(ad_call_org_id(call), 0, "approval_requested", note);
		json_decref(note);
		pending_answer(call, iv->id, json_incref(json_object_get(row, "deadline")));
	} else if (!strcmp(status, "denied")) {
		denied_answer(call, iv->id);
	} else {
		/* read: executing, and this call waits for the outcome. */
		ig_run_start(call, ad_call_org_id(call), ad_call_agent_session_id(call), row,
			     iv->params_text, iv->hash,
			     ad_sql_rows(r, 3) == 1 ? ad_sql_text(r, 3, 0, 0, NULL) : NULL);
	}
	json_decref(row);
	invoke_free(iv);
}

void ig_actions_invoke(struct ad_call *call)
{
	const json_t *p = ad_call_params(call), *params = json_object_get(p, "params");
	const char *integration = ad_param_str(call, "integration", NULL);
	const char *action = ad_param_str(call, "action", NULL);
	size_t keylen = 0;
	const char *key = ad_param_str(call, "idempotency_key", &keylen);
	const struct ig_adapter *a;
	struct invoke *iv;
	struct ad_sql *q;
	struct ig_num org, as, ms;
	json_t *shown;
	char *shown_text;
	const char *status, *sp[16];
	uint8_t rnd[16];

	if (!session_has(call, integration)) {
		ad_call_fail(call, AD_REASON_FORBIDDEN,
			     "This agent session may not use this integration",
			     json_pack("{s:s}", "integration", integration));
		return;
	}
	if (!(a = ig_adapter(integration))) {
		ad_call_fail_params(call, "/integration", "enum",
				    "actiond has no adapter for this integration");
		return;
	}
	if (!ig_action(a, action)) {
		ad_call_fail_params(call, "/action", "enum", "the integration has no such action");
		return;
	}
	if (!ad_call_check_value(call, ig_action(a, action)->schema, params, "/params"))
		return;
	if (ig_has_nul(params)) {
		ad_call_fail_params(call, "/params", "pattern", "strings must not hold U+0000");
		return;
	}
	if (!(iv = calloc(1, sizeof(*iv))) || !(iv->params_text = ig_canonical(params))) {
		free(iv);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	if (strlen(iv->params_text) > IG_PARAMS_MAX) {
		invoke_free(iv);
		ad_call_fail_params(call, "/params", "maxLength", "params are larger than 64 KiB");
		return;
	}
	iv->action = ig_action(a, action);
	iv->keyed = key != NULL;
	randombytes_buf(rnd, sizeof(rnd));
	sodium_bin2hex(iv->id, sizeof(iv->id), rnd, sizeof(rnd));
	ig_hash_hex(iv->params_text, strlen(iv->params_text), iv->hash);
	shown = ig_redact(params, NULL, 0);
	shown_text = shown ? json_dumps(shown, JSON_COMPACT) : NULL;
	json_decref(shown);
	if (!shown_text || !(q = ad_sql_new(call, 0))) {
		free(shown_text);
		invoke_free(iv);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	status = iv->action->risk == IG_READ ? "executing"
		 : iv->action->risk == IG_WRITE ? "pending"
						 : "denied";
	org = ig_num(ad_call_org_id(call));
	as = ig_num(ad_call_agent_session_id(call));
	ms = ig_num(iv->action->approval_ms);
	sp[0] = iv->id;
	sp[1] = org.v;
	sp[2] = as.v;
	sp[3] = integration;
	sp[4] = action;
	sp[5] = ig_risk_name(iv->action->risk);
	sp[6] = status;
	sp[7] = iv->params_text;
	sp[8] = iv->hash;
	sp[9] = ms.v;
	sp[10] = ig_runner_id();
	sp[11] = key;
	sp[12] = ad_call_credential_id(call);
	sp[13] = shown_text;
	ad_sql_add(q, "SELECT pg_advisory_xact_lock(hashint8($1::bigint))", 1, &sp[2]);
	ad_sql_add(q,
		   "WITH i AS (INSERT INTO invocations (id, org_id, agent_session_id, integration, "
		   "action, risk, status, params, params_hash, deadline, decided_by, decided_at, "
		   "reason, started_at, runner, idempotency_key, finished_at) "
		   "SELECT $1, $2::bigint, $3::bigint, $4, $5, $6, $7, $8::jsonb, $9, "
		   "CASE WHEN $7 = 'pending' THEN now() + $10::bigint * interval '1 millisecond' END, "
		   "CASE WHEN $7 <> 'pending' THEN 'policy' END, "
		   "CASE WHEN $7 <> 'pending' THEN now() END, "
		   "CASE WHEN $7 = 'denied' THEN 'risk danger: denied by policy' END, "
		   "CASE WHEN $7 = 'executing' THEN now() END, "
		   "CASE WHEN $7 = 'executing' THEN $11 END, $12, "
		   "CASE WHEN $7 = 'denied' THEN now() END "
		   "WHERE $7 <> 'pending' OR (SELECT count(*) FROM invocations WHERE "
		   "agent_session_id = $3::bigint AND status = 'pending' AND deadline > now()) < 10 "
		   "ON CONFLICT (agent_session_id, idempotency_key) WHERE idempotency_key IS NOT NULL "
		   "DO NOTHING RETURNING *), "
		   "e AS (INSERT INTO invocation_events (org_id, invocation_id, event, actor, detail) "
		   "SELECT org_id, id, 'invoked', $13, jsonb_build_object('integration', integration, "
		   "'action', action, 'risk', risk, 'params', $14::jsonb, 'params_hash', params_hash) "
		   "FROM i UNION ALL "
		   "SELECT org_id, id, CASE WHEN status = 'denied' THEN 'denied' ELSE 'approved' END, "
		   "'policy', jsonb_build_object('risk', risk) FROM i WHERE status <> 'pending' "
		   "UNION ALL SELECT org_id, id, 'executing', 'policy', '{}'::jsonb FROM i "
		   "WHERE status = 'executing') "
		   "SELECT " IG_COLS " FROM i",
		   14, sp);
	if (key)
		ad_sql_add(q,
			   "SELECT " IG_COLS ", params_hash FROM invocations WHERE "
			   "agent_session_id = $1::bigint AND idempotency_key = $2",
			   2, (const char *[]){ as.v, key });
	else
		ad_sql_add(q, "SELECT 1 WHERE false", 0, NULL);
	if (iv->action->risk == IG_READ)
		ad_sql_add(q,
			   "SELECT encode(nonce || sealed, 'hex') FROM integration_secrets "
			   "WHERE integration = $1",
			   1, &sp[3]);
	free(shown_text);
	ad_sql_run(q, invoked, iv, invoke_free);
}
