/*
 * tokens.c - API tokens of the caller's account (account.token_*) and agent
 * sessions with their tokens (admin.agent_session_*).
 *
 * A token is made here, answered once, and stored only as its keyed hash;
 * the new credential enters this instance's cache when its row committed
 * and the other instances' through the notification its insert sends.  An
 * API token is inserted only while its account's membership is enabled
 * (locked, as a login does), so a disable that races it revokes it too.
 */
#include "identity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INTEGRATIONS 32

struct issued {
	struct ad_token tok;
	char *name;
	json_t *integrations;
	uint64_t seq;
};

static void issued_free(void *arg)
{
	struct issued *t = arg;

	ad_token_wipe(&t->tok);
	free(t->name);
	json_decref(t->integrations);
	free(t);
}

static struct issued *issued_new(struct ad_call *call, const char *prefix)
{
	bool failed;
	const char *name = id_text(call, "name", &failed);
	struct issued *t;

	if (failed)
		return NULL;
	if (!(t = calloc(1, sizeof(*t))) || !(t->name = strdup(name ? name : ""))) {
		free(t);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return NULL;
	}
	ad_token_new(prefix, &t->tok);
	return t;
}

/* ---- API tokens ------------------------------------------------------------ */

static void token_created(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	struct issued *t = arg;
	struct ad_identity_caller c;
	struct ad_issue is = { .kind = AD_CRED_API_TOKEN, .hash = t->tok.hash, .seq = t->seq };

	ad_identity_caller(call, &c);
	if (ad_sql_rows(r, 0) == 0) {
		issued_free(t);
		ad_call_fail(call, AD_REASON_FORBIDDEN, "This account is disabled", NULL);
		return;
	}
	is.db_id = ad_sql_int(r, 0, 0, 0);
	is.org_id = c.org_id;
	is.org = c.org;
	is.account_id = c.account_id;
	is.role = ad_call_role(call);
	is.expires_at = ad_sql_int(r, 0, 0, 3);
	if (ad_identity_cache_add(&is)) {
		issued_free(t);
		id_issue_lost(call, is.db_id, is.org_id);
		return;
	}
	ad_call_reply(call, json_pack("{s:I,s:s,s:s,s:o,s:o}", "id",
				      (json_int_t)ad_identity_id_out(AD_ID_API_TOKEN, is.db_id),
				      "token", t->tok.text, "name", t->name, "created_at",
				      ad_sql_string(r, 0, 0, 1), "expires_at",
				      ad_sql_string(r, 0, 0, 2)));
	issued_free(t);
}

void id_token_create(struct ad_call *call)
{
	struct ad_identity_caller c;
	int64_t expires_in = 0;
	struct issued *t = issued_new(call, "adt_");
	struct id_num org, acct, exp;
	const char *p[6];
	struct ad_sql *q;

	if (!t)
		return;
	if (!(q = ad_sql_new(call, 0))) {
		issued_free(t);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ad_identity_caller(call, &c);
	(void)ad_param_int(call, "expires_in_s", &expires_in);
	org = id_num(c.org_id);
	acct = id_num(c.account_id);
	exp = id_num(expires_in);
	p[0] = org.v;
	p[1] = acct.v;
	p[2] = t->tok.hex;
	p[3] = t->name;
	p[4] = exp.v;
	p[5] = ad_identity_instance();
	t->seq = ad_identity_revocation_seq();
	ad_sql_add(q,
		   "WITH m AS (SELECT 1 FROM memberships m JOIN accounts a ON a.id = m.account_id "
		   "WHERE m.org_id = $1::bigint AND m.account_id = $2::bigint "
		   "AND m.disabled_at IS NULL AND a.disabled_at IS NULL FOR SHARE OF m, a), "
		   "ins AS (INSERT INTO credentials (kind, org_id, account_id, token_hash, name, "
		   "expires_at) SELECT 'api_token', $1::bigint, $2::bigint, decode($3, 'hex'), $4, "
		   "CASE WHEN $5::bigint > 0 THEN now() + make_interval(secs => $5::bigint) END "
		   "WHERE EXISTS (SELECT 1 FROM m) RETURNING id, created_at, expires_at) "
		   "SELECT id, iso(created_at), iso(expires_at), "
		   "coalesce(extract(epoch FROM expires_at)::bigint, 0), "
		   "pg_notify('actiond', json_build_object('op', 'cred', 'id', id, "
		   "'from', $6::text)::text), "
		   "actiond_audit($1::bigint, 'account:' || $2, 'token_create', 'api_token:' || id) "
		   "FROM ins",
		   6, p);
	ad_sql_run(q, token_created, t, issued_free);
}

void id_token_revoke(struct ad_call *call)
{
	id_revoke_own(call, "api_token", AD_CRED_API_TOKEN, "token_id");
}

static void token_list_done(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	json_t *list = json_array();

	(void)arg;
	for (int i = 0; i < ad_sql_rows(r, 0); i++)
		json_array_append_new(list, json_pack("{s:I,s:o,s:o,s:o}", "id",
						      (json_int_t)ad_identity_id_out(
							      AD_ID_API_TOKEN, ad_sql_int(r, 0, i, 0)),
						      "name",
						      ad_sql_string(r, 0, i, 1), "created_at",
						      ad_sql_string(r, 0, i, 2), "expires_at",
						      ad_sql_string(r, 0, i, 3)));
	ad_call_reply(call, json_pack("{s:o}", "tokens", list));
}

void id_token_list(struct ad_call *call)
{
	struct ad_identity_caller c;
	struct id_num acct, org;
	const char *p[2];
	struct ad_sql *q = ad_sql_new(call, 0);

	if (!q) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ad_identity_caller(call, &c);
	acct = id_num(c.account_id);
	org = id_num(c.org_id);
	p[0] = acct.v;
	p[1] = org.v;
	ad_sql_add(q,
		   "SELECT id, name, iso(created_at), iso(expires_at) FROM credentials "
		   "WHERE kind = 'api_token' AND account_id = $1::bigint AND org_id = $2::bigint "
		   "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) "
		   "ORDER BY id",
		   2, p);
	ad_sql_run(q, token_list_done, NULL, NULL);
}

/* ---- agent sessions --------------------------------------------------------- */

static void agent_created(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	struct issued *t = arg;
	struct ad_identity_caller c;
	const char *names[MAX_INTEGRATIONS];
	struct ad_issue is = { .kind = AD_CRED_AGENT, .hash = t->tok.hash, .seq = t->seq,
			       .integrations = names };
	size_t i;
	json_t *v;

	ad_identity_caller(call, &c);
	json_array_foreach(t->integrations, i, v)
		if (is.n_integrations < MAX_INTEGRATIONS)
			names[is.n_integrations++] = json_string_value(v);
	is.agent_session_id = ad_sql_int(r, 0, 0, 0);
	is.db_id = ad_sql_int(r, 0, 0, 1);
	is.org_id = c.org_id;
	is.org = c.org;
	if (ad_identity_cache_add(&is)) {
		issued_free(t);
		id_issue_lost(call, is.db_id, is.org_id);
		return;
	}
	ad_call_reply(call, json_pack("{s:I,s:s,s:s,s:O}", "agent_session_id",
				      (json_int_t)ad_identity_id_out(AD_ID_AGENT_SESSION,
								     is.agent_session_id),
				      "token", t->tok.text,
				      "name", t->name, "integrations", t->integrations));
	issued_free(t);
}

void id_agent_session_create(struct ad_call *call)
{
	struct ad_identity_caller c;
	const json_t *integ = json_object_get(ad_call_params(call), "integrations");
	char arr[MAX_INTEGRATIONS * 66 + 4];
	struct issued *t = issued_new(call, "ada_");
	struct id_num org, acct;
	const char *p[7];
	struct ad_sql *q;
	size_t i, off = 0;
	json_t *v;

	if (!t)
		return;
	if (!(q = ad_sql_new(call, 0))) {
		issued_free(t);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ad_identity_caller(call, &c);
	/* A text[] literal; the names matched ^[a-z][a-z0-9_]*$ already. */
	arr[off++] = '{';
	json_array_foreach(integ, i, v)
		off += (size_t)snprintf(arr + off, sizeof(arr) - off, "%s%s", i ? "," : "",
					json_string_value(v));
	snprintf(arr + off, sizeof(arr) - off, "}");
	t->integrations = json_deep_copy(integ);
	org = id_num(c.org_id);
	acct = id_num(c.account_id);
	p[0] = org.v;
	p[1] = t->name;
	p[2] = arr;
	p[3] = acct.v;
	p[4] = t->tok.hex;
	p[5] = ad_identity_instance();
	p[6] = id_actor(call);
	t->seq = ad_identity_revocation_seq();
	ad_sql_add(q,
		   "WITH s AS (INSERT INTO agent_sessions (org_id, name, integrations, created_by) "
		   "VALUES ($1::bigint, $2, $3::text[], nullif($4, '0')::bigint) "
		   "RETURNING id, org_id), "
		   "c AS (INSERT INTO credentials (kind, org_id, agent_session_id, token_hash, name) "
		   "SELECT 'agent_token', org_id, id, decode($5, 'hex'), $2 FROM s "
		   "RETURNING id, agent_session_id, org_id) "
		   "SELECT agent_session_id, id, "
		   "pg_notify('actiond', json_build_object('op', 'cred', 'id', id, "
		   "'from', $6::text)::text), "
		   "actiond_audit(org_id, $7, 'agent_session_create', "
		   "'agent_session:' || agent_session_id) FROM c",
		   7, p);
	ad_sql_run(q, agent_created, t, issued_free);
}

void id_agent_session_revoke(struct ad_call *call)
{
	struct ad_identity_caller c;
	int64_t pub = 0, target;
	struct id_num id, org;
	const char *p[2];
	char tgt[48];
	struct ad_revoke_scope scope;
	struct ad_revocation *rv;

	ad_identity_caller(call, &c);
	(void)ad_param_int(call, "agent_session_id", &pub);
	target = ad_identity_id_in(AD_ID_AGENT_SESSION, pub);
	id = id_num(target);
	org = id_num(c.org_id);
	p[0] = id.v;
	p[1] = org.v;
	scope = (struct ad_revoke_scope){ .org_id = c.org_id, .agent_session_id = target };
	if (!(rv = ad_revocation_new(call, &scope, "agent session revoked"))) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	snprintf(tgt, sizeof(tgt), "agent_session:%lld", (long long)pub);
	ad_revocation_mark(rv,
			   "UPDATE agent_sessions SET revoked_at = now() WHERE id = $1::bigint "
			   "AND org_id = $2::bigint AND revoked_at IS NULL RETURNING id",
			   2, p);
	ad_sql_add(ad_revocation_sql(rv),
		   "UPDATE credentials SET revoked_at = now() WHERE agent_session_id = $1::bigint "
		   "AND org_id = $2::bigint AND revoked_at IS NULL",
		   2, p);
	ad_audit(ad_revocation_sql(rv), c.org_id, id_actor(call), "agent_session_revoke", tgt);
	ad_revocation_run(rv, true);
}

static void agent_list_done(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	const struct id_page *pg = arg;
	json_t *list = json_array();
	int rows = ad_sql_rows(r, 0), n = rows > pg->limit ? (int)pg->limit : rows;

	for (int i = 0; i < n; i++) {
		json_t *integ = ad_sql_json(r, 0, i, 2);

		json_array_append_new(list, json_pack("{s:I,s:o,s:o,s:o,s:o}", "agent_session_id",
						      (json_int_t)ad_identity_id_out(
							      AD_ID_AGENT_SESSION, ad_sql_int(r, 0, i, 0)),
						      "name",
						      ad_sql_string(r, 0, i, 1), "integrations",
						      json_is_array(integ) ? integ : json_array(),
						      "created_at", ad_sql_string(r, 0, i, 3),
						      "revoked_at", ad_sql_string(r, 0, i, 4)));
		if (!json_is_array(integ))
			json_decref(integ);
	}
	ad_call_reply(call, json_pack("{s:o,s:o}", "agent_sessions", list, "next_cursor",
				      id_page_next(pg, rows, n ? ad_sql_int(r, 0, n - 1, 0) : 0)));
	free(arg);
}

void id_agent_session_list(struct ad_call *call)
{
	struct ad_identity_caller c;
	struct id_page *pg = calloc(1, sizeof(*pg));
	struct ad_sql *q = pg ? ad_sql_new(call, 0) : NULL;
	bool all = json_is_true(json_object_get(ad_call_params(call), "include_revoked"));
	struct id_num org;
	const char *p[4];

	if (!q) {
		free(pg);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ad_identity_caller(call, &c);
	id_page_read(call, AD_ID_AGENT_SESSION, pg);
	org = id_num(c.org_id);
	p[0] = org.v;
	p[1] = pg->after.v;
	p[2] = pg->fetch.v;
	p[3] = all ? "t" : "f";
	ad_sql_add(q,
		   "SELECT id, name, to_json(integrations), iso(created_at), iso(revoked_at) "
		   "FROM agent_sessions WHERE org_id = $1::bigint AND id > $2::bigint "
		   "AND ($4::boolean OR revoked_at IS NULL) ORDER BY id LIMIT $3::int",
		   4, p);
	ad_sql_run(q, agent_list_done, pg, free);
}
