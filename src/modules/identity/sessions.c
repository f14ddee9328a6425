/*
 * sessions.c - browser sessions: auth.login, auth.logout and the caller's
 * own sessions (account.session_*).
 *
 * A login checks the password with Argon2id on a worker (an unknown email
 * is checked against a dummy hash, so both cost the same), then inserts the
 * session only if the membership and the account are still enabled, locking
 * them: a disable that races the login either commits first (the insert
 * finds it and fails) or waits for the login and then revokes the new
 * session with the rest.
 */
#include "identity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One account the email names: a candidate until the password picks it. */
struct login_acct {
	int64_t account_id, org_id;
	bool disabled;
	char slug[64];
	char role[16];
};

struct login {
	struct id_pw pw;         /* first: freed through it */
	char *email;
	char *org;
	struct login_acct acct[ID_PW_CANDIDATES];
	int nacct;
	/* The one the password opened. */
	int64_t account_id, org_id;
	char slug[64];
	char role[16];
	struct ad_token tok;
	uint64_t seq;
};

static void login_free(struct id_pw *pw)
{
	struct login *l = (struct login *)pw;

	id_pw_clear(&l->pw);
	ad_token_wipe(&l->tok);
	free(l->email);
	free(l->org);
	free(l);
}

static void login_free_arg(void *arg)
{
	login_free(arg);
}

static void login_created(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	struct login *l = arg;
	const struct ad_identity_settings *set = ad_identity_settings();
	char cookie[256];
	struct ad_issue is = {
		.kind = AD_CRED_SESSION,
		.org_id = l->org_id,
		.org = l->slug,
		.account_id = l->account_id,
		.role = l->role,
		.hash = l->tok.hash,
		.seq = l->seq,
	};

	if (ad_sql_rows(r, 0) == 0) { /* disabled while the password was checked */
		login_free(&l->pw);
		ad_call_fail(call, AD_REASON_FORBIDDEN, "This account is disabled", NULL);
		return;
	}
	is.db_id = ad_sql_int(r, 0, 0, 0);
	is.expires_at = ad_sql_int(r, 0, 0, 2);
	if (ad_identity_cache_add(&is)) {
		login_free(&l->pw);
		id_issue_lost(call, is.db_id, is.org_id);
		return;
	}
	snprintf(cookie, sizeof(cookie),
		 "actiond_session=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%u%s",
		 l->tok.text, set->session_ttl_s, set->secure_cookies ? "; Secure" : "");
	ad_identity_set_cookie(call, cookie);
	sodium_memzero(cookie, sizeof(cookie));
	ad_call_reply(call, json_pack("{s:I,s:I,s:s,s:s,s:s,s:o}", "session_id",
				      (json_int_t)ad_identity_id_out(AD_ID_SESSION, is.db_id),
				      "account_id",
				      (json_int_t)ad_identity_id_out(AD_ID_ACCOUNT, l->account_id),
				      "email", l->email, "org",
				      l->slug, "role", l->role, "expires_at",
				      ad_sql_string(r, 0, 0, 1)));
	login_free(&l->pw);
}

static void login_verified(struct ad_call *call, struct id_pw *pw)
{
	struct login *l = (struct login *)pw;
	struct id_num org, acct, ttl = id_num(ad_identity_settings()->session_ttl_s);
	const char *p[5] = { NULL, NULL, l->tok.hex, ttl.v, ad_identity_instance() };
	struct ad_sql *q;

	int pick = -1, matches = 0;

	for (int i = 0; i < l->nacct; i++)
		if (pw->matched & (1u << i)) {
			matches++;
			pick = i;
		}
	id_guard_result(call, l->email, matches > 0);
	if (!matches) {
		login_free(pw);
		ad_call_fail(call, AD_REASON_UNAUTHENTICATED, "Wrong email or password", NULL);
		return;
	}
	/* The same password opens accounts in several orgs: which one? */
	if (matches > 1) {
		login_free(pw);
		ad_call_fail_params(call, "", "required",
				    "this email and password open accounts in several orgs: "
				    "name one in org");
		return;
	}
	if (l->acct[pick].disabled) {
		login_free(pw);
		ad_call_fail(call, AD_REASON_FORBIDDEN, "This account is disabled", NULL);
		return;
	}
	l->account_id = l->acct[pick].account_id;
	l->org_id = l->acct[pick].org_id;
	memcpy(l->slug, l->acct[pick].slug, sizeof(l->slug));
	memcpy(l->role, l->acct[pick].role, sizeof(l->role));
	org = id_num(l->org_id);
	acct = id_num(l->account_id);
	p[0] = org.v;
	p[1] = acct.v;
	if (!(q = ad_sql_new(call, 0))) {
		login_free(pw);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ad_token_new("ads_", &l->tok);
	/* The event belongs to the org logged into: run there. */
	ad_identity_sql_org(q, l->org_id);
	l->seq = ad_identity_revocation_seq();
	ad_sql_add(q,
		   "WITH m AS (SELECT 1 FROM memberships m JOIN accounts a ON a.id = m.account_id "
		   "WHERE m.org_id = $1::bigint AND m.account_id = $2::bigint "
		   "AND m.disabled_at IS NULL AND a.disabled_at IS NULL FOR SHARE OF m, a), "
		   "ins AS (INSERT INTO credentials (kind, org_id, account_id, token_hash, expires_at) "
		   "SELECT 'session', $1::bigint, $2::bigint, decode($3, 'hex'), "
		   "now() + make_interval(secs => $4::bigint) WHERE EXISTS (SELECT 1 FROM m) "
		   "RETURNING id, expires_at) "
		   "SELECT id, iso(expires_at), extract(epoch FROM expires_at)::bigint, "
		   "pg_notify('actiond', json_build_object('op', 'cred', 'id', id, "
		   "'from', $5::text)::text), "
		   "actiond_audit($1::bigint, 'account:' || $2, 'login', 'session:' || id) FROM ins",
		   5, p);
	ad_sql_run(q, login_created, l, login_free_arg);
}

static void login_found(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	struct login *l = arg;
	int rows = ad_sql_rows(r, 0);
	const char *password;
	size_t len = 0;

	/* Unknown email: verify against the dummy all the same. */
	l->nacct = rows < ID_PW_CANDIDATES ? rows : ID_PW_CANDIDATES;
	for (int i = 0; i < l->nacct; i++) {
		struct login_acct *a = &l->acct[i];

		snprintf(l->pw.candidates[i], sizeof(l->pw.candidates[i]), "%s",
			 ad_sql_text(r, 0, i, 1, NULL));
		a->account_id = ad_sql_int(r, 0, i, 0);
		a->disabled = ad_sql_bool(r, 0, i, 2);
		a->org_id = ad_sql_int(r, 0, i, 3);
		snprintf(a->slug, sizeof(a->slug), "%s", ad_sql_text(r, 0, i, 4, NULL));
		snprintf(a->role, sizeof(a->role), "%s", ad_sql_text(r, 0, i, 5, NULL));
	}
	l->pw.ncandidates = l->nacct;
	if (!l->nacct) {
		snprintf(l->pw.candidates[0], sizeof(l->pw.candidates[0]), "%s", id_dummy_hash);
		l->pw.ncandidates = 1;
	}
	l->pw.verify = true;
	l->pw.then = login_verified;
	password = ad_param_str(call, "password", &len);
	/* An address this account uses goes ahead of whatever floods in. */
	if (id_guard_known(call, l->email))
		id_pw_start_first(call, &l->pw, password, len);
	else
		id_pw_start(call, &l->pw, password, len);
}

void id_auth_login(struct ad_call *call)
{
	bool failed;
	const char *org = id_text(call, "org", &failed);
	struct login *l;
	struct ad_sql *q;
	const char *p[2];
	uint32_t retry_ms;

	if (failed)
		return;
	if (!(l = calloc(1, sizeof(*l))) || !(q = ad_sql_new(call, 0))) {
		free(l);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	l->pw.free_fn = login_free;
	if (!(l->email = id_email(call, "email"))) {
		ad_sql_free(q);
		free(l);
		return;
	}
	if (!id_guard_allows(call, l->email, &retry_ms)) {
		ad_sql_free(q);
		login_free(&l->pw);
		ad_call_fail(call, AD_REASON_RATE_LIMITED,
			     "Too many failed logins for this account; try again later",
			     json_pack("{s:I}", "retry_after_ms", (json_int_t)retry_ms));
		return;
	}
	l->org = strdup(org ? org : "");
	p[0] = l->email;
	p[1] = l->org ? l->org : "";
	ad_sql_add(q,
		   "SELECT a.id, a.password_hash, "
		   "(a.disabled_at IS NOT NULL OR m.disabled_at IS NOT NULL), "
		   "m.org_id, o.slug, m.role "
		   "FROM accounts a JOIN memberships m ON m.account_id = a.id "
		   "JOIN orgs o ON o.id = m.org_id "
		   "WHERE a.email = $1 AND ($2 = '' OR o.slug = $2) "
		   "ORDER BY m.org_id LIMIT 4",
		   2, p);
	ad_sql_run(q, login_found, l, login_free_arg);
}

/* ---- revocations of the caller's own --------------------------------------- */

void id_revoke(struct ad_call *call, const struct ad_revoke_scope *scope,
		   const char *reason, const char *sql, int n, const char *const *p,
		   const char *action, const char *target, bool none_is_error)
{
	struct ad_revocation *rv = ad_revocation_new(call, scope, reason);

	if (!rv) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ad_revocation_mark(rv, sql, n, p);
	ad_audit(ad_revocation_sql(rv), scope->org_id, id_actor(call), action, target);
	ad_revocation_run(rv, none_is_error);
}

void id_auth_logout(struct ad_call *call)
{
	struct ad_identity_caller c;
	struct id_num id, org;
	const char *p[2];
	struct ad_revoke_scope scope;

	ad_identity_caller(call, &c);
	id = id_num(c.cred_id);
	org = id_num(c.org_id);
	p[0] = id.v;
	p[1] = org.v;
	scope = (struct ad_revoke_scope){ .org_id = c.org_id, .cred_id = c.cred_id };
	ad_identity_set_cookie(call, "actiond_session=; Path=/; HttpOnly; SameSite=Strict; "
				     "Max-Age=0");
	id_revoke(call, &scope, "logout",
	       "UPDATE credentials SET revoked_at = now() WHERE id = $1::bigint "
	       "AND org_id = $2::bigint AND revoked_at IS NULL RETURNING id",
	       2, p, "logout", ad_call_credential_id(call), false);
}

void id_revoke_own(struct ad_call *call, const char *kind, enum ad_cred_kind k,
		   const char *param)
{
	struct ad_identity_caller c;
	int64_t pub = 0, target;
	struct id_num id, acct, org;
	char tgt[48];
	const char *p[4];
	struct ad_revoke_scope scope;

	ad_identity_caller(call, &c);
	(void)ad_param_int(call, param, &pub);
	target = ad_identity_id_in(k == AD_CRED_SESSION ? AD_ID_SESSION : AD_ID_API_TOKEN, pub);
	id = id_num(target);
	acct = id_num(c.account_id);
	org = id_num(c.org_id);
	p[0] = id.v;
	p[1] = acct.v;
	p[2] = org.v;
	p[3] = kind;
	scope = (struct ad_revoke_scope){ .org_id = c.org_id, .cred_id = target,
					  .account_id = c.account_id, .kind = k };
	snprintf(tgt, sizeof(tgt), "%s:%lld", kind, (long long)pub);
	id_revoke(call, &scope, "revoked",
	       "UPDATE credentials SET revoked_at = now() WHERE id = $1::bigint "
	       "AND account_id = $2::bigint AND org_id = $3::bigint AND kind = $4 "
	       "AND revoked_at IS NULL RETURNING id",
	       4, p, "revoke", tgt, true);
}

void id_session_revoke(struct ad_call *call)
{
	id_revoke_own(call, "session", AD_CRED_SESSION, "session_id");
}

void id_session_revoke_all(struct ad_call *call)
{
	struct ad_identity_caller c;
	bool all = json_is_true(json_object_get(ad_call_params(call), "include_current"));
	struct id_num acct, org, ex;
	const char *p[3];
	struct ad_revoke_scope scope;

	ad_identity_caller(call, &c);
	acct = id_num(c.account_id);
	org = id_num(c.org_id);
	ex = id_num(all ? 0 : c.cred_id);
	p[0] = acct.v;
	p[1] = org.v;
	p[2] = ex.v;
	scope = (struct ad_revoke_scope){ .org_id = c.org_id, .account_id = c.account_id,
					  .kind = AD_CRED_SESSION,
					  .except_cred_id = all ? 0 : c.cred_id };
	id_revoke(call, &scope, "revoked",
	       "UPDATE credentials SET revoked_at = now() WHERE kind = 'session' "
	       "AND account_id = $1::bigint AND org_id = $2::bigint AND id <> $3::bigint "
	       "AND revoked_at IS NULL RETURNING id",
	       3, p, "revoke_all_sessions", acct.v, false);
}

/* ---- listing ---------------------------------------------------------------- */

static void session_list_done(struct ad_call *call, void *arg, const struct ad_sql_result *r)
{
	struct ad_identity_caller c;
	json_t *list = json_array();

	(void)arg;
	ad_identity_caller(call, &c);
	for (int i = 0; i < ad_sql_rows(r, 0); i++) {
		int64_t id = ad_sql_int(r, 0, i, 0);

		json_array_append_new(list, json_pack("{s:I,s:o,s:o,s:b}", "id",
						      (json_int_t)ad_identity_id_out(AD_ID_SESSION, id),
						      "created_at", ad_sql_string(r, 0, i, 1),
						      "expires_at", ad_sql_string(r, 0, i, 2),
						      "current", c.cred_id == id));
	}
	ad_call_reply(call, json_pack("{s:o}", "sessions", list));
}

void id_session_list(struct ad_call *call)
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
		   "SELECT id, iso(created_at), iso(expires_at) FROM credentials "
		   "WHERE kind = 'session' AND account_id = $1::bigint AND org_id = $2::bigint "
		   "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) "
		   "ORDER BY id",
		   2, p);
	ad_sql_run(q, session_list_done, NULL, NULL);
}
