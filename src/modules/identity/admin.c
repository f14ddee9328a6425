/*
 * admin.c - what admins and owners do to their org: accounts, the
 * revocation of everyone's sessions or tokens, integration secrets.
 */
#include "identity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- accounts ---------------------------------------------------------------- */

struct acreate {
	struct id_pw pw;         /* first: freed through it */
	char *email;
	char role[16];
};

static void acreate_free(struct id_pw *pw)
{
	struct acreate *a = (struct acreate *)pw;

	id_pw_clear(&a->pw);
	free(a->email);
	free(a);
}

static void acreate_free_arg(void *arg)
{
	acreate_free(arg);
}

static void account_created(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	struct acreate *a = arg;

	if (ad_sql_rows(r, 0) == 0) {
		acreate_free(&a->pw);
		ad_call_fail(call, AD_REASON_CONFLICT, "An account with this email exists in this org",
			     NULL);
		return;
	}
	ad_call_reply(call, json_pack("{s:I,s:s,s:s}", "account_id",
				      (json_int_t)ad_identity_id_out(AD_ID_ACCOUNT,
								     ad_sql_int(r, 0, 0, 0)),
				      "email", a->email,
				      "role", a->role));
	acreate_free(&a->pw);
}

static void account_hashed(struct ad_call *call, struct id_pw *pw)
{
	struct acreate *a = (struct acreate *)pw;
	struct ad_identity_caller c;
	struct id_num org;
	const char *p[5];
	struct ad_sql *q;

	if (!pw->ok || !(q = ad_sql_new(call, 0))) {
		acreate_free(pw);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "Password hashing failed", NULL);
		return;
	}
	ad_identity_caller(call, &c);
	org = id_num(c.org_id);
	p[0] = a->email;
	p[1] = pw->hash;
	p[2] = org.v;
	p[3] = a->role;
	p[4] = id_actor(call);
	ad_sql_add(q,
		   "WITH a AS (INSERT INTO accounts (org_id, email, password_hash) "
		   "VALUES ($3::bigint, $1, $2) ON CONFLICT (org_id, email) DO NOTHING "
		   "RETURNING id), "
		   "m AS (INSERT INTO memberships (org_id, account_id, role) "
		   "SELECT $3::bigint, id, $4 FROM a RETURNING account_id) "
		   "SELECT account_id, actiond_audit($3::bigint, $5, 'account_create', "
		   "'account:' || account_id) FROM m",
		   5, p);
	ad_sql_run(q, account_created, a, acreate_free_arg);
}

void id_account_create(struct ad_call *call)
{
	struct ad_identity_caller c;
	bool failed;
	const char *role = id_text(call, "role", &failed);
	size_t pwlen = 0;
	const char *password = ad_param_str(call, "password", &pwlen);
	struct acreate *a;

	if (failed)
		return;
	ad_identity_caller(call, &c);
	if (!strcmp(role, "owner") && c.role != AD_IDROLE_OWNER) {
		ad_call_fail(call, AD_REASON_FORBIDDEN, "Only owners create owners", NULL);
		return;
	}
	if (!(a = calloc(1, sizeof(*a)))) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	a->pw.free_fn = acreate_free;
	if (!(a->email = id_email(call, "email"))) {
		free(a);
		return;
	}
	snprintf(a->role, sizeof(a->role), "%s", role);
	a->pw.then = account_hashed;
	id_pw_start(call, &a->pw, password, pwlen);
}

void id_account_disable(struct ad_call *call)
{
	struct ad_identity_caller c;
	int64_t pub = 0, target;
	struct id_num org, acct, self;
	const char *p[4], *p2[2], *ev[3];
	struct ad_revoke_scope scope;
	struct ad_revocation *rv;
	struct ad_sql *q;

	ad_identity_caller(call, &c);
	(void)ad_param_int(call, "account_id", &pub);
	target = ad_identity_id_in(AD_ID_ACCOUNT, pub);
	if (target == c.account_id) {
		ad_call_fail(call, AD_REASON_CONFLICT, "You cannot disable yourself", NULL);
		return;
	}
	org = id_num(c.org_id);
	acct = id_num(target);
	self = id_num(c.account_id);
	p[0] = p2[0] = ev[0] = org.v;
	p[1] = p2[1] = acct.v;
	p[2] = self.v;
	p[3] = c.role == AD_IDROLE_OWNER ? "owner" : "admin";
	ev[1] = id_actor(call);
	ev[2] = acct.v;
	scope = (struct ad_revoke_scope){ .org_id = c.org_id, .account_id = target };
	if (!(rv = ad_revocation_new(call, &scope, "account disabled"))) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	q = ad_revocation_sql(rv);
	/* What it revokes is the membership: when the caller may not disable
	 * this account, nothing is marked and nothing else happens. */
	ad_revocation_mark(rv,
			   "UPDATE memberships SET disabled_at = now() WHERE org_id = $1::bigint "
			   "AND account_id = $2::bigint AND account_id <> $3::bigint "
			   "AND disabled_at IS NULL AND (role <> 'owner' OR $4 = 'owner') "
			   "RETURNING account_id",
			   4, p);
	ad_sql_add(q,
		   "UPDATE credentials SET revoked_at = now() WHERE org_id = $1::bigint "
		   "AND account_id = $2::bigint AND revoked_at IS NULL AND EXISTS (SELECT 1 "
		   "FROM memberships WHERE org_id = $1::bigint AND account_id = $2::bigint "
		   "AND disabled_at = now())",
		   2, p2);
	ad_revocation_report(rv, "credentials_revoked");
	ad_sql_add(q,
		   "SELECT actiond_audit($1::bigint, $2, 'account_disable', 'account:' || $3) "
		   "FROM memberships WHERE org_id = $1::bigint AND account_id = $3::bigint "
		   "AND disabled_at = now()",
		   3, ev);
	ad_revocation_run(rv, true);
}

static void account_list_done(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	const struct id_page *pg = arg;
	json_t *list = json_array();
	int rows = ad_sql_rows(r, 0), n = rows > pg->limit ? (int)pg->limit : rows;

	for (int i = 0; i < n; i++)
		json_array_append_new(list, json_pack("{s:I,s:o,s:o,s:b,s:o}", "account_id",
						      (json_int_t)ad_identity_id_out(
							      AD_ID_ACCOUNT, ad_sql_int(r, 0, i, 0)),
						      "email",
						      ad_sql_string(r, 0, i, 1), "role",
						      ad_sql_string(r, 0, i, 2), "disabled",
						      ad_sql_bool(r, 0, i, 3), "created_at",
						      ad_sql_string(r, 0, i, 4)));
	ad_call_reply(call, json_pack("{s:o,s:o}", "accounts", list, "next_cursor",
				      id_page_next(pg, rows, n ? ad_sql_int(r, 0, n - 1, 0) : 0)));
	free(arg);
}

void id_account_list(struct ad_call *call)
{
	struct ad_identity_caller c;
	struct id_page *pg = calloc(1, sizeof(*pg));
	struct ad_sql *q = pg ? ad_sql_new(call, 0) : NULL;
	struct id_num org;
	const char *p[3];

	if (!q) {
		free(pg);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ad_identity_caller(call, &c);
	id_page_read(call, AD_ID_ACCOUNT, pg);
	org = id_num(c.org_id);
	p[0] = org.v;
	p[1] = pg->after.v;
	p[2] = pg->fetch.v;
	ad_sql_add(q,
		   "SELECT a.id, a.email, m.role, "
		   "(m.disabled_at IS NOT NULL OR a.disabled_at IS NOT NULL), iso(m.created_at) "
		   "FROM memberships m JOIN accounts a ON a.id = m.account_id "
		   "WHERE m.org_id = $1::bigint AND a.id > $2::bigint ORDER BY a.id LIMIT $3::int",
		   3, p);
	ad_sql_run(q, account_list_done, pg, free);
}

/* admin.session_revoke_all / admin.token_revoke_all */
static void admin_revoke_all(struct ad_call *call, const char *kind, enum ad_cred_kind k)
{
	struct ad_identity_caller c;
	int64_t pub = 0, account;
	struct id_num org, acct, ex;
	const char *p[4];
	char target[40] = "";
	struct ad_revoke_scope scope;

	ad_identity_caller(call, &c);
	(void)ad_param_int(call, "account_id", &pub);
	/* Absent or 0: everyone's; anything else names one account. */
	account = pub ? ad_identity_id_in(AD_ID_ACCOUNT, pub) : 0;
	if (pub && !account) {
		ad_call_fail(call, AD_REASON_NOT_FOUND, "No such account", NULL);
		return;
	}
	org = id_num(c.org_id);
	acct = id_num(account);
	ex = id_num(c.cred_id);
	p[0] = org.v;
	p[1] = kind;
	p[2] = acct.v;
	p[3] = ex.v;
	if (account)
		snprintf(target, sizeof(target), "account:%lld", (long long)account);
	scope = (struct ad_revoke_scope){ .org_id = c.org_id, .account_id = account,
					  .kind = k, .except_cred_id = c.cred_id };
	id_revoke(call, &scope, "revoked",
		  "UPDATE credentials SET revoked_at = now() WHERE org_id = $1::bigint "
		  "AND kind = $2 AND ($3::bigint = 0 OR account_id = $3::bigint) "
		  "AND id <> $4::bigint AND revoked_at IS NULL RETURNING id",
		  4, p, k == AD_CRED_SESSION ? "revoke_all_sessions" : "revoke_all_tokens",
		  account ? target : NULL, false);
}

void id_admin_session_revoke_all(struct ad_call *call)
{
	admin_revoke_all(call, "session", AD_CRED_SESSION);
}

void id_admin_token_revoke_all(struct ad_call *call)
{
	admin_revoke_all(call, "api_token", AD_CRED_API_TOKEN);
}

/* ---- one credential of the org ------------------------------------------------- */

static void credential_list_done(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	struct ad_identity_caller c;
	json_t *list = json_array();

	(void)arg;
	ad_identity_caller(call, &c);
	for (int i = 0; i < ad_sql_rows(r, 0); i++) {
		int64_t id = ad_sql_int(r, 0, i, 0);
		bool session = !strcmp(ad_sql_text(r, 0, i, 1, NULL), "session");

		json_array_append_new(list, json_pack(
			"{s:s,s:I,s:I,s:o,s:o,s:o,s:o,s:b}", "kind", session ? "session" : "api_token",
			"id", (json_int_t)ad_identity_id_out(session ? AD_ID_SESSION : AD_ID_API_TOKEN, id),
			"account_id", (json_int_t)ad_identity_id_out(AD_ID_ACCOUNT, ad_sql_int(r, 0, i, 2)),
			"email", ad_sql_string(r, 0, i, 3), "name", ad_sql_string(r, 0, i, 4),
			"created_at", ad_sql_string(r, 0, i, 5), "expires_at", ad_sql_string(r, 0, i, 6),
			"current", c.cred_id == id));
	}
	ad_call_reply(call, json_pack("{s:o}", "credentials", list));
}

/* admin.credential_list {kind?, account_id?}: the org's live sessions and API tokens. */
void id_admin_credential_list(struct ad_call *call)
{
	struct ad_identity_caller c;
	const char *kind = ad_param_str(call, "kind", NULL);
	int64_t pub = 0, account;
	struct id_num org, acct;
	const char *p[3];
	struct ad_sql *q;

	ad_identity_caller(call, &c);
	(void)ad_param_int(call, "account_id", &pub);
	account = pub ? ad_identity_id_in(AD_ID_ACCOUNT, pub) : 0;
	if (pub && !account) {
		ad_call_reply(call, json_pack("{s:[]}", "credentials"));
		return;
	}
	if (!(q = ad_sql_new(call, 0))) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	org = id_num(c.org_id);
	acct = id_num(account);
	p[0] = org.v;
	p[1] = kind ? kind : "";
	p[2] = acct.v;
	ad_sql_add(q,
		   "SELECT c.id, c.kind, c.account_id, a.email, c.name, iso(c.created_at), "
		   "iso(c.expires_at) FROM credentials c JOIN accounts a ON a.id = c.account_id "
		   "WHERE c.org_id = $1::bigint AND c.kind IN ('session', 'api_token') "
		   "AND ($2 = '' OR c.kind = $2) AND ($3::bigint = 0 OR c.account_id = $3::bigint) "
		   "AND c.revoked_at IS NULL AND (c.expires_at IS NULL OR c.expires_at > now()) "
		   "ORDER BY c.id DESC LIMIT 500",
		   3, p);
	ad_sql_run(q, credential_list_done, NULL, NULL);
}

/* admin.credential_revoke {kind, id}: one session or API token of the org, whoever's. */
void id_admin_credential_revoke(struct ad_call *call)
{
	struct ad_identity_caller c;
	const char *kind = ad_param_str(call, "kind", NULL);
	bool session = kind && !strcmp(kind, "session");
	int64_t pub = 0, target;
	struct id_num id, org;
	const char *p[3];
	char tgt[48];
	struct ad_revoke_scope scope;

	ad_identity_caller(call, &c);
	(void)ad_param_int(call, "id", &pub);
	target = ad_identity_id_in(session ? AD_ID_SESSION : AD_ID_API_TOKEN, pub);
	id = id_num(target);
	org = id_num(c.org_id);
	p[0] = id.v;
	p[1] = org.v;
	p[2] = session ? "session" : "api_token";
	scope = (struct ad_revoke_scope){ .org_id = c.org_id, .cred_id = target,
					  .kind = session ? AD_CRED_SESSION : AD_CRED_API_TOKEN };
	snprintf(tgt, sizeof(tgt), "%s:%lld", p[2], (long long)pub);
	id_revoke(call, &scope, "revoked",
		  "UPDATE credentials SET revoked_at = now() WHERE id = $1::bigint "
		  "AND org_id = $2::bigint AND kind = $3 AND revoked_at IS NULL RETURNING id",
		  3, p, "admin_revoke", tgt, true);
}

/* ---- integration secrets ------------------------------------------------------ */

static void secret_stored(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	(void)arg;
	ad_call_reply(call, json_pack("{s:s,s:o}", "integration",
				      ad_param_str(call, "integration", NULL), "updated_at",
				      ad_sql_string(r, 0, 0, 0)));
}

/*
 * Seals the secret (a string, whose bytes may include U+0000, or an object
 * as compact JSON) under the master key's sealing key; only the box enters
 * the database.
 */
void id_credential_set(struct ad_call *call)
{
	struct ad_identity_caller c;
	const json_t *secret = json_object_get(ad_call_params(call), "secret");
	const char *integration = ad_param_str(call, "integration", NULL);
	char *text = json_is_string(secret) ? NULL : json_dumps(secret, JSON_COMPACT);
	const char *plain = text ? text : json_string_value(secret);
	size_t len = text ? strlen(text) : json_string_length(secret);
	uint8_t *sealed = malloc(len + AD_SEAL_OVERHEAD);
	char *nonce_hex = malloc(2 * 24 + 1), *box_hex = malloc(2 * (len + 16) + 1);
	struct id_num org, acct;
	const char *p[5];
	struct ad_sql *q = ad_sql_new(call, 0);

	if (!plain || !sealed || !nonce_hex || !box_hex || !q) {
		ad_sql_free(q);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		goto out;
	}
	ad_identity_caller(call, &c);
	org = id_num(c.org_id);
	acct = id_num(c.account_id);
	ad_identity_seal((const uint8_t *)plain, len, sealed);
	sodium_bin2hex(nonce_hex, 2 * 24 + 1, sealed, 24);
	sodium_bin2hex(box_hex, 2 * (len + 16) + 1, sealed + 24, len + 16);
	p[0] = org.v;
	p[1] = integration;
	p[2] = nonce_hex;
	p[3] = box_hex;
	p[4] = acct.v;
	ad_sql_add(q,
		   "INSERT INTO integration_secrets (org_id, integration, nonce, sealed, updated_by) "
		   "VALUES ($1::bigint, $2, decode($3, 'hex'), decode($4, 'hex'), "
		   "nullif($5, '0')::bigint) "
		   "ON CONFLICT (org_id, integration) DO UPDATE SET nonce = excluded.nonce, "
		   "sealed = excluded.sealed, updated_by = excluded.updated_by, updated_at = now() "
		   "RETURNING iso(updated_at)",
		   5, p);
	{
		char target[80];

		snprintf(target, sizeof(target), "integration:%s", integration);
		ad_audit(q, c.org_id, id_actor(call), "credential_set", target);
	}
	ad_sql_run(q, secret_stored, NULL, NULL);
out:
	if (text)
		sodium_memzero(text, strlen(text));
	free(text);
	free(sealed);
	free(nonce_hex);
	free(box_hex);
}
