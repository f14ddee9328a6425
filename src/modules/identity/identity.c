/*
 * identity.c - the identity and admin actions (PRODUCT.md 4.1): login and
 * logout, sessions, API tokens, accounts, agent sessions, integration
 * secrets.
 *
 * Every statement is scoped to the caller's org (org_id of its credential),
 * whatever ids the params carry.  Passwords are hashed and verified with
 * Argon2id on the worker threads, never on the loop.  Tokens are made here,
 * answered once, and stored only as their keyed hash; the new credential
 * enters this instance's cache at once and the others' through NOTIFY.
 */
#include "builtin.h"
#include "auth.h"
#include "cluster.h"
#include "db.h"
#include "dispatch.h"
#include "keys.h"
#include "log.h"
#include "server.h"
#include "worker.h"
#include "ws.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PW_MAX 256

/* A hash of a random password: verified against when an email is unknown,
 * so a wrong email costs as long as a wrong password. */
static char dummy_hash[crypto_pwhash_STRBYTES];

int ad_identity_init(void)
{
	char pw[32];

	randombytes_buf(pw, sizeof(pw) - 1);
	pw[sizeof(pw) - 1] = '\0';
	return crypto_pwhash_str(dummy_hash, pw, sizeof(pw) - 1,
				 crypto_pwhash_OPSLIMIT_INTERACTIVE,
				 crypto_pwhash_MEMLIMIT_INTERACTIVE);
}

/* ---- small helpers ------------------------------------------------------ */

struct idbuf {
	char v[24];
};

static struct idbuf num(long long v)
{
	struct idbuf b;

	snprintf(b.v, sizeof(b.v), "%lld", v);
	return b;
}

static const char *param_str(struct ad_call *call, const char *key)
{
	return json_string_value(json_object_get(ad_call_params(call), key));
}

static long long param_int(struct ad_call *call, const char *key)
{
	return (long long)json_integer_value(json_object_get(ad_call_params(call), key));
}

static void hex32(const uint8_t h[32], char out[65])
{
	sodium_bin2hex(out, 65, h, 32);
}

/* ---- password work on the worker threads ------------------------------- */

struct pw_work {
	struct ad_work w;
	struct ad_call *call;
	bool verify;               /* else: hash */
	bool ok;
	bool abandoned;            /* the call went away while it ran */
	char password[PW_MAX + 1];
	char hash[crypto_pwhash_STRBYTES];
	void (*then)(struct pw_work *pw);
};

static void pw_run(struct ad_work *w)
{
	struct pw_work *pw = (struct pw_work *)w;

	if (pw->verify)
		pw->ok = crypto_pwhash_str_verify(pw->hash, pw->password,
						  strlen(pw->password)) == 0;
	else
		pw->ok = crypto_pwhash_str(pw->hash, pw->password, strlen(pw->password),
					   crypto_pwhash_OPSLIMIT_INTERACTIVE,
					   crypto_pwhash_MEMLIMIT_INTERACTIVE) == 0;
	sodium_memzero(pw->password, sizeof(pw->password));
}

static void pw_done(struct ad_work *w)
{
	struct pw_work *pw = (struct pw_work *)w;

	if (pw->abandoned || !w->ran) {
		if (!pw->abandoned)
			ad_call_fail(pw->call, AD_REASON_UNAVAILABLE, "shutting down", NULL);
		free(pw);
		return;
	}
	ad_call_on_cancel(pw->call, NULL, NULL);
	pw->then(pw); /* owns pw from here */
}

static void pw_cancel(struct ad_call *call, void *arg)
{
	struct pw_work *pw = arg;

	pw->abandoned = true; /* the worker still holds it; pw_done frees it */
	ad_call_fail(call, AD_REASON_CANCELLED, "cancelled", NULL);
}

/* Queues pw (which must start with struct pw_work) on the workers. */
static void pw_submit(struct pw_work *pw)
{
	pw->w.run = pw_run;
	pw->w.done = pw_done;
	ad_call_on_cancel(pw->call, pw_cancel, pw);
	if (!ad_worker_submit(&pw->w)) {
		ad_call_on_cancel(pw->call, NULL, NULL);
		ad_call_fail(pw->call, AD_REASON_UNAVAILABLE,
			     "Too many password checks are waiting", NULL);
		free(pw);
	}
}

/* ---- auth.login --------------------------------------------------------- */

struct login {
	struct pw_work pw;       /* first: pw_submit() sees a pw_work */
	char email[256];
	char org[64];
	bool found, ambiguous, disabled;
	long long account_id, org_id;
	char slug[64];
	char role[16];
	char token[AD_TOKEN_TEXT_MAX];
	uint8_t hash[32];
};

static void login_created(struct ad_call *call, void *arg, PGresult *const *r, int n)
{
	struct login *l = arg;
	char cookie[256];
	struct ad_cred *c;
	long long ttl_s = ad_srv.cfg.session_ttl_ms / 1000;
	int role = ad_role_parse(l->role);

	(void)n;
	c = ad_cred_new_db(AD_CRED_SESSION, ad_db_int(r[0], 0, 0), l->org_id, l->slug,
			   l->account_id, role < 0 ? AD_ROLE_NONE : (enum ad_role)role, 0,
			   ad_db_int(r[0], 0, 2), l->hash);
	if (c)
		ad_auth_cache_add(c);
	ad_cred_unref(c);
	snprintf(cookie, sizeof(cookie),
		 AD_SESSION_COOKIE "=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%lld%s",
		 l->token, ttl_s, ad_srv.tls ? "; Secure" : "");
	ad_call_set_cookie(call, cookie);
	ad_call_reply(call, json_pack("{s:I,s:I,s:s,s:s,s:s,s:o}", "session_id",
				      (json_int_t)ad_db_int(r[0], 0, 0), "account_id",
				      (json_int_t)l->account_id, "email", l->email, "org",
				      l->slug, "role", l->role, "expires_at",
				      ad_db_time(r[0], 0, 1)));
	sodium_memzero(l->token, sizeof(l->token));
	free(l);
}

static void login_verified(struct pw_work *pw)
{
	struct login *l = (struct login *)pw;
	struct ad_call *call = pw->call;
	char hash_hex[65];
	struct idbuf org = num(l->org_id), acct = num(l->account_id),
		     ttl = num(ad_srv.cfg.session_ttl_ms / 1000);
	const char *p[6] = { org.v, acct.v, hash_hex, ttl.v, ad_cluster_instance(),
			     "login" };
	struct ad_pg_stmt s = {
		"WITH ins AS (INSERT INTO credentials (kind, org_id, account_id, token_hash, expires_at) "
		"VALUES ('session', $1, $2, decode($3, 'hex'), now() + make_interval(secs => $4::bigint)) "
		"RETURNING id, org_id, account_id, expires_at), "
		"ev AS (INSERT INTO identity_events (org_id, actor, action, target) "
		"SELECT org_id, 'account:' || account_id, $6, 'session:' || id FROM ins) "
		"SELECT id, iso(expires_at), extract(epoch FROM expires_at)::bigint, "
		"pg_notify('actiond', json_build_object('op', 'cred', 'id', id, 'from', $5::text)::text) "
		"FROM ins",
		6, p
	};

	if (!pw->ok || !l->found) {
		free(l);
		ad_call_fail(call, AD_REASON_UNAUTHENTICATED, "Wrong email or password", NULL);
		return;
	}
	if (l->ambiguous) {
		free(l);
		ad_call_fail_params(call, "", "required",
				    "this account belongs to several orgs: name one in org");
		return;
	}
	if (l->disabled) {
		free(l);
		ad_call_fail(call, AD_REASON_FORBIDDEN, "This account is disabled", NULL);
		return;
	}
	ad_keys_new_token("ads_", l->token);
	ad_keys_token_hash(l->token, strlen(l->token), l->hash);
	hex32(l->hash, hash_hex);
	ad_db_run(call, &s, 1, NULL, login_created, l, free);
}

static void login_found(struct ad_call *call, void *arg, PGresult *const *r, int n)
{
	struct login *l = arg;
	const PGresult *res = r[0];
	int rows = PQntuples(res);

	(void)n;
	l->found = rows > 0;
	l->ambiguous = rows > 1;
	/* Unknown email: verify against the dummy all the same. */
	snprintf(l->pw.hash, sizeof(l->pw.hash), "%s",
		 rows ? PQgetvalue(res, 0, 1) : dummy_hash);
	if (rows) {
		l->account_id = ad_db_int(res, 0, 0);
		l->disabled = !strcmp(PQgetvalue(res, 0, 2), "t");
		l->org_id = ad_db_int(res, 0, 3);
		snprintf(l->slug, sizeof(l->slug), "%s", PQgetvalue(res, 0, 4));
		snprintf(l->role, sizeof(l->role), "%s", PQgetvalue(res, 0, 5));
	}
	l->pw.call = call;
	l->pw.verify = true;
	l->pw.then = login_verified;
	pw_submit(&l->pw);
}

static void auth_login(struct ad_call *call)
{
	const char *email = param_str(call, "email"), *password = param_str(call, "password");
	const char *org = param_str(call, "org");
	struct login *l = calloc(1, sizeof(*l));
	const char *p[2];
	struct ad_pg_stmt s = {
		"SELECT a.id, a.password_hash, "
		"(a.disabled_at IS NOT NULL OR m.disabled_at IS NOT NULL), "
		"m.org_id, o.slug, m.role "
		"FROM accounts a JOIN memberships m ON m.account_id = a.id "
		"JOIN orgs o ON o.id = m.org_id "
		"WHERE a.email = lower($1) AND ($2 = '' OR o.slug = $2) "
		"ORDER BY m.org_id LIMIT 2",
		2, p
	};

	if (!l) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	if (strlen(password) > PW_MAX) {
		free(l);
		ad_call_fail_params(call, "/password", "maxLength", "password too long");
		return;
	}
	snprintf(l->email, sizeof(l->email), "%s", email);
	for (char *c = l->email; *c; c++)
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c - 'A' + 'a');
	snprintf(l->org, sizeof(l->org), "%s", org ? org : "");
	snprintf(l->pw.password, sizeof(l->pw.password), "%s", password);
	p[0] = l->email;
	p[1] = l->org;
	ad_db_run(call, &s, 1, NULL, login_found, l, free);
}

/* ---- revocations ---------------------------------------------------------- */

/* The actor column of identity_events: the caller's credential id. */
static const char *actor(struct ad_call *call)
{
	return ad_call_credential_id(call);
}

static void auth_logout(struct ad_call *call)
{
	const struct ad_cred *c = ad_call_cred(call);
	struct idbuf id = num(c->db_id), org = num(c->org_id);
	const char *p[2] = { id.v, org.v };
	const char *ev[4] = { org.v, actor(call), "logout", c->id };
	struct ad_pg_stmt s[2] = {
		{ "UPDATE credentials SET revoked_at = now() WHERE id = $1 AND org_id = $2 "
		  "AND revoked_at IS NULL RETURNING id",
		  2, p },
		{ "INSERT INTO identity_events (org_id, actor, action, target) "
		  "VALUES ($1, $2, $3, $4)",
		  4, ev },
	};
	struct ad_revoke_scope scope = { .org_id = c->org_id, .cred_id = c->db_id };

	ad_call_set_cookie(call, AD_SESSION_COOKIE "=; Path=/; HttpOnly; SameSite=Strict; "
						   "Max-Age=0");
	ad_cluster_revoke(call, s, 2, &scope, "logout", false);
}

/* Revokes one credential of kind owned by the caller's account. */
static void revoke_own(struct ad_call *call, const char *kind, enum ad_cred_kind k,
		       const char *param)
{
	const struct ad_cred *c = ad_call_cred(call);
	long long target = param_int(call, param);
	struct idbuf id = num(target), acct = num(c->account_id), org = num(c->org_id);
	char tgt[48];
	const char *p[4] = { id.v, acct.v, org.v, kind };
	const char *ev[4] = { org.v, actor(call), "revoke", tgt };
	struct ad_pg_stmt s[2] = {
		{ "UPDATE credentials SET revoked_at = now() WHERE id = $1 AND account_id = $2 "
		  "AND org_id = $3 AND kind = $4 AND revoked_at IS NULL RETURNING id",
		  4, p },
		{ "INSERT INTO identity_events (org_id, actor, action, target) "
		  "VALUES ($1, $2, $3, $4)",
		  4, ev },
	};
	struct ad_revoke_scope scope = { .org_id = c->org_id, .cred_id = target,
					 .account_id = c->account_id, .kind = k };

	snprintf(tgt, sizeof(tgt), "%s:%lld", kind, target);
	ad_cluster_revoke(call, s, 2, &scope, "revoked", true);
}

static void session_revoke(struct ad_call *call)
{
	revoke_own(call, "session", AD_CRED_SESSION, "session_id");
}

static void token_revoke(struct ad_call *call)
{
	revoke_own(call, "api_token", AD_CRED_API_TOKEN, "token_id");
}

static void session_revoke_all(struct ad_call *call)
{
	const struct ad_cred *c = ad_call_cred(call);
	bool all = json_is_true(json_object_get(ad_call_params(call), "include_current"));
	long long except = all ? 0 : c->db_id;
	struct idbuf acct = num(c->account_id), org = num(c->org_id), ex = num(except);
	const char *p[3] = { acct.v, org.v, ex.v };
	const char *ev[4] = { org.v, actor(call), "revoke_all_sessions", acct.v };
	struct ad_pg_stmt s[2] = {
		{ "UPDATE credentials SET revoked_at = now() WHERE kind = 'session' "
		  "AND account_id = $1 AND org_id = $2 AND id <> $3 AND revoked_at IS NULL "
		  "RETURNING id",
		  3, p },
		{ "INSERT INTO identity_events (org_id, actor, action, target) "
		  "VALUES ($1, $2, $3, 'account:' || $4)",
		  4, ev },
	};
	struct ad_revoke_scope scope = { .org_id = c->org_id, .account_id = c->account_id,
					 .kind = AD_CRED_SESSION, .except_cred_id = except };

	ad_cluster_revoke(call, s, 2, &scope, "revoked", false);
}

/* admin.session_revoke_all / admin.token_revoke_all */
static void admin_revoke_all(struct ad_call *call, const char *kind, enum ad_cred_kind k)
{
	const struct ad_cred *c = ad_call_cred(call);
	long long account = param_int(call, "account_id");
	struct idbuf org = num(c->org_id), acct = num(account), ex = num(c->db_id);
	const char *p[4] = { org.v, kind, acct.v, ex.v };
	const char *ev[4] = { org.v, actor(call), k == AD_CRED_SESSION ? "revoke_all_sessions"
								       : "revoke_all_tokens",
			      account ? acct.v : "" };
	struct ad_pg_stmt s[2] = {
		{ "UPDATE credentials SET revoked_at = now() WHERE org_id = $1 AND kind = $2 "
		  "AND ($3::bigint = 0 OR account_id = $3::bigint) AND id <> $4 "
		  "AND revoked_at IS NULL RETURNING id",
		  4, p },
		{ "INSERT INTO identity_events (org_id, actor, action, target) "
		  "VALUES ($1, $2, $3, nullif('account:' || $4, 'account:'))",
		  4, ev },
	};
	struct ad_revoke_scope scope = { .org_id = c->org_id, .account_id = account,
					 .kind = k, .except_cred_id = c->db_id };

	ad_cluster_revoke(call, s, 2, &scope, "revoked", false);
}

static void admin_session_revoke_all(struct ad_call *call)
{
	admin_revoke_all(call, "session", AD_CRED_SESSION);
}

static void admin_token_revoke_all(struct ad_call *call)
{
	admin_revoke_all(call, "api_token", AD_CRED_API_TOKEN);
}

static void account_disable(struct ad_call *call)
{
	const struct ad_cred *c = ad_call_cred(call);
	long long target = param_int(call, "account_id");
	struct idbuf org = num(c->org_id), acct = num(target), self = num(c->account_id);
	const char *role = ad_role_name(c->role);
	const char *p[4] = { org.v, acct.v, self.v, role };
	const char *p2[2] = { org.v, acct.v };
	const char *ev[4] = { org.v, actor(call), "account_disable", acct.v };
	struct ad_pg_stmt s[3] = {
		{ "UPDATE memberships SET disabled_at = now() WHERE org_id = $1 "
		  "AND account_id = $2 AND account_id <> $3 AND disabled_at IS NULL "
		  "AND (role <> 'owner' OR $4 = 'owner') RETURNING account_id",
		  4, p },
		{ "UPDATE credentials SET revoked_at = now() WHERE org_id = $1 "
		  "AND account_id = $2 AND revoked_at IS NULL AND EXISTS (SELECT 1 FROM "
		  "memberships WHERE org_id = $1 AND account_id = $2 AND disabled_at IS NOT NULL)",
		  2, p2 },
		{ "INSERT INTO identity_events (org_id, actor, action, target) "
		  "VALUES ($1, $2, $3, 'account:' || $4)",
		  4, ev },
	};
	struct ad_revoke_scope scope = { .org_id = c->org_id, .account_id = target };

	if (target == c->account_id) {
		ad_call_fail(call, AD_REASON_CONFLICT, "You cannot disable yourself", NULL);
		return;
	}
	ad_cluster_revoke(call, s, 3, &scope, "account disabled", true);
}

static void agent_session_revoke(struct ad_call *call)
{
	const struct ad_cred *c = ad_call_cred(call);
	long long target = param_int(call, "agent_session_id");
	struct idbuf id = num(target), org = num(c->org_id);
	const char *p[2] = { id.v, org.v };
	const char *ev[4] = { org.v, actor(call), "agent_session_revoke", id.v };
	struct ad_pg_stmt s[3] = {
		{ "UPDATE agent_sessions SET revoked_at = now() WHERE id = $1 AND org_id = $2 "
		  "AND revoked_at IS NULL RETURNING id",
		  2, p },
		{ "UPDATE credentials SET revoked_at = now() WHERE agent_session_id = $1 "
		  "AND org_id = $2 AND revoked_at IS NULL",
		  2, p },
		{ "INSERT INTO identity_events (org_id, actor, action, target) "
		  "VALUES ($1, $2, $3, 'agent_session:' || $4)",
		  4, ev },
	};
	struct ad_revoke_scope scope = { .org_id = c->org_id, .agent_session_id = target };

	ad_cluster_revoke(call, s, 3, &scope, "agent session revoked", true);
}

/* ---- lists ----------------------------------------------------------------- */

static void session_list_done(struct ad_call *call, void *arg, PGresult *const *r, int n)
{
	const struct ad_cred *c = ad_call_cred(call);
	json_t *list = json_array();

	(void)arg;
	(void)n;
	for (int i = 0; i < PQntuples(r[0]); i++) {
		long long id = ad_db_int(r[0], i, 0);

		json_array_append_new(list, json_pack("{s:I,s:o,s:o,s:b}", "id", (json_int_t)id,
						      "created_at", ad_db_time(r[0], i, 1),
						      "expires_at", ad_db_time(r[0], i, 2),
						      "current", c->db_id == id));
	}
	ad_call_reply(call, json_pack("{s:o}", "sessions", list));
}

static void session_list(struct ad_call *call)
{
	const struct ad_cred *c = ad_call_cred(call);
	struct idbuf acct = num(c->account_id), org = num(c->org_id);
	const char *p[2] = { acct.v, org.v };
	struct ad_pg_stmt s = {
		"SELECT id, iso(created_at), iso(expires_at) FROM credentials "
		"WHERE kind = 'session' AND account_id = $1 AND org_id = $2 "
		"AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) "
		"ORDER BY id",
		2, p
	};

	ad_db_run(call, &s, 1, NULL, session_list_done, NULL, NULL);
}

static void token_list_done(struct ad_call *call, void *arg, PGresult *const *r, int n)
{
	json_t *list = json_array();

	(void)arg;
	(void)n;
	for (int i = 0; i < PQntuples(r[0]); i++) {
		const char *name = ad_db_text(r[0], i, 1);

		json_array_append_new(list, json_pack("{s:I,s:o,s:o,s:o}", "id",
						      (json_int_t)ad_db_int(r[0], i, 0), "name",
						      name ? json_string(name) : json_null(),
						      "created_at", ad_db_time(r[0], i, 2),
						      "expires_at", ad_db_time(r[0], i, 3)));
	}
	ad_call_reply(call, json_pack("{s:o}", "tokens", list));
}

static void token_list(struct ad_call *call)
{
	const struct ad_cred *c = ad_call_cred(call);
	struct idbuf acct = num(c->account_id), org = num(c->org_id);
	const char *p[2] = { acct.v, org.v };
	struct ad_pg_stmt s = {
		"SELECT id, name, iso(created_at), iso(expires_at) FROM credentials "
		"WHERE kind = 'api_token' AND account_id = $1 AND org_id = $2 "
		"AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) "
		"ORDER BY id",
		2, p
	};

	ad_db_run(call, &s, 1, NULL, token_list_done, NULL, NULL);
}

/* ---- issuing tokens ------------------------------------------------------- */

struct issued {
	enum ad_cred_kind kind;
	char token[AD_TOKEN_TEXT_MAX];
	uint8_t hash[32];
	char name[256];
	json_t *integrations;
};

static void issued_free(void *arg)
{
	struct issued *t = arg;

	sodium_memzero(t->token, sizeof(t->token));
	json_decref(t->integrations);
	free(t);
}

static struct issued *issue(enum ad_cred_kind kind, const char *name, char hex[65])
{
	struct issued *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->kind = kind;
	snprintf(t->name, sizeof(t->name), "%s", name);
	ad_keys_new_token(kind == AD_CRED_AGENT ? "ada_" : "adt_", t->token);
	ad_keys_token_hash(t->token, strlen(t->token), t->hash);
	hex32(t->hash, hex);
	return t;
}

static void token_created(struct ad_call *call, void *arg, PGresult *const *r, int n)
{
	struct issued *t = arg;
	const struct ad_cred *c = ad_call_cred(call);
	struct ad_cred *nc;

	(void)n;
	nc = ad_cred_new_db(AD_CRED_API_TOKEN, ad_db_int(r[0], 0, 0), c->org_id, c->org,
			    c->account_id, c->role, 0, ad_db_int(r[0], 0, 3), t->hash);
	if (nc)
		ad_auth_cache_add(nc);
	ad_cred_unref(nc);
	ad_call_reply(call, json_pack("{s:I,s:s,s:s,s:o,s:o}", "id",
				      (json_int_t)ad_db_int(r[0], 0, 0), "token", t->token,
				      "name", t->name, "created_at", ad_db_time(r[0], 0, 1),
				      "expires_at", ad_db_time(r[0], 0, 2)));
	issued_free(t);
}

static void token_create(struct ad_call *call)
{
	const struct ad_cred *c = ad_call_cred(call);
	char hex[65];
	struct issued *t = issue(AD_CRED_API_TOKEN, param_str(call, "name"), hex);
	struct idbuf org = num(c->org_id), acct = num(c->account_id),
		     exp = num(param_int(call, "expires_in_s"));
	const char *p[6] = { org.v, acct.v, hex, t ? t->name : "", exp.v,
			     ad_cluster_instance() };
	struct ad_pg_stmt s = {
		"WITH ins AS (INSERT INTO credentials (kind, org_id, account_id, token_hash, name, expires_at) "
		"VALUES ('api_token', $1, $2, decode($3, 'hex'), $4, CASE WHEN $5::bigint > 0 "
		"THEN now() + make_interval(secs => $5::bigint) END) "
		"RETURNING id, org_id, account_id, created_at, expires_at), "
		"ev AS (INSERT INTO identity_events (org_id, actor, action, target) "
		"SELECT org_id, 'account:' || account_id, 'token_create', 'api_token:' || id FROM ins) "
		"SELECT id, iso(created_at), iso(expires_at), "
		"coalesce(extract(epoch FROM expires_at)::bigint, 0), "
		"pg_notify('actiond', json_build_object('op', 'cred', 'id', id, 'from', $6::text)::text) "
		"FROM ins",
		6, p
	};

	if (!t) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ad_db_run(call, &s, 1, NULL, token_created, t, issued_free);
}

static void agent_created(struct ad_call *call, void *arg, PGresult *const *r, int n)
{
	struct issued *t = arg;
	const struct ad_cred *c = ad_call_cred(call);
	struct ad_cred *nc;
	char *names[32];
	size_t k = 0, i;
	json_t *v;

	(void)n;
	nc = ad_cred_new_db(AD_CRED_AGENT, ad_db_int(r[0], 0, 1), c->org_id, c->org, 0,
			    AD_ROLE_NONE, ad_db_int(r[0], 0, 0), 0, t->hash);
	json_array_foreach(t->integrations, i, v)
		if (k < 32)
			names[k++] = (char *)json_string_value(v);
	if (nc && ad_cred_set_integrations(nc, names, k) == 0)
		ad_auth_cache_add(nc);
	ad_cred_unref(nc);
	ad_call_reply(call, json_pack("{s:I,s:s,s:s,s:O}", "agent_session_id",
				      (json_int_t)ad_db_int(r[0], 0, 0), "token", t->token,
				      "name", t->name, "integrations", t->integrations));
	issued_free(t);
}

static void agent_session_create(struct ad_call *call)
{
	const struct ad_cred *c = ad_call_cred(call);
	const json_t *integ = json_object_get(ad_call_params(call), "integrations");
	char hex[65], arr[32 * 66 + 4];
	struct issued *t = issue(AD_CRED_AGENT, param_str(call, "name"), hex);
	struct idbuf org = num(c->org_id), acct = num(c->account_id);
	const char *p[8] = { org.v, t ? t->name : "", arr, acct.v, hex, ad_cluster_instance(),
			     actor(call), "agent_session_create" };
	struct ad_pg_stmt s = {
		"WITH s AS (INSERT INTO agent_sessions (org_id, name, integrations, created_by) "
		"VALUES ($1, $2, $3::text[], nullif($4, '0')::bigint) RETURNING id, org_id), "
		"c AS (INSERT INTO credentials (kind, org_id, agent_session_id, token_hash, name) "
		"SELECT 'agent_token', org_id, id, decode($5, 'hex'), $2 FROM s "
		"RETURNING id, agent_session_id, org_id), "
		"ev AS (INSERT INTO identity_events (org_id, actor, action, target) "
		"SELECT org_id, $7, $8, 'agent_session:' || agent_session_id FROM c) "
		"SELECT agent_session_id, id, "
		"pg_notify('actiond', json_build_object('op', 'cred', 'id', id, 'from', $6::text)::text) "
		"FROM c",
		8, p
	};
	size_t i, off = 0;
	json_t *v;

	if (!t) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	/* A text[] literal; the names matched ^[a-z][a-z0-9_]*$ already. */
	arr[off++] = '{';
	json_array_foreach(integ, i, v)
		off += (size_t)snprintf(arr + off, sizeof(arr) - off, "%s%s", i ? "," : "",
					json_string_value(v));
	snprintf(arr + off, sizeof(arr) - off, "}");
	t->integrations = json_deep_copy(integ);
	ad_db_run(call, &s, 1, NULL, agent_created, t, issued_free);
}

/* ---- accounts ---------------------------------------------------------------- */

struct acreate {
	struct pw_work pw;
	char email[256];
	char role[16];
};

static void account_created(struct ad_call *call, void *arg, PGresult *const *r, int n)
{
	struct acreate *a = arg;

	(void)n;
	if (PQntuples(r[0]) == 0) {
		free(a);
		ad_call_fail(call, AD_REASON_CONFLICT, "An account with this email exists", NULL);
		return;
	}
	ad_call_reply(call, json_pack("{s:I,s:s,s:s}", "account_id",
				      (json_int_t)ad_db_int(r[0], 0, 0), "email", a->email,
				      "role", a->role));
	free(a);
}

static void account_hashed(struct pw_work *pw)
{
	struct acreate *a = (struct acreate *)pw;
	struct ad_call *call = pw->call;
	const struct ad_cred *c = ad_call_cred(call);
	struct idbuf org = num(c->org_id);
	const char *p[5] = { a->email, pw->hash, org.v, a->role, actor(call) };
	struct ad_pg_stmt s = {
		"WITH a AS (INSERT INTO accounts (email, password_hash) VALUES (lower($1), $2) "
		"ON CONFLICT (email) DO NOTHING RETURNING id), "
		"m AS (INSERT INTO memberships (org_id, account_id, role) SELECT $3, id, $4 FROM a "
		"RETURNING account_id), "
		"ev AS (INSERT INTO identity_events (org_id, actor, action, target) "
		"SELECT $3, $5, 'account_create', 'account:' || account_id FROM m) "
		"SELECT id FROM a",
		5, p
	};

	if (!pw->ok) {
		free(a);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "Password hashing failed", NULL);
		return;
	}
	ad_db_run(call, &s, 1, NULL, account_created, a, free);
}

static void account_create(struct ad_call *call)
{
	const struct ad_cred *c = ad_call_cred(call);
	const char *role = param_str(call, "role"), *password = param_str(call, "password");
	struct acreate *a;

	if (!strcmp(role, "owner") && c->role != AD_ROLE_OWNER) {
		ad_call_fail(call, AD_REASON_FORBIDDEN, "Only owners create owners", NULL);
		return;
	}
	if (strlen(password) > PW_MAX) {
		ad_call_fail_params(call, "/password", "maxLength", "password too long");
		return;
	}
	if (!(a = calloc(1, sizeof(*a)))) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	snprintf(a->email, sizeof(a->email), "%s", param_str(call, "email"));
	for (char *p = a->email; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	snprintf(a->role, sizeof(a->role), "%s", role);
	snprintf(a->pw.password, sizeof(a->pw.password), "%s", password);
	a->pw.call = call;
	a->pw.then = account_hashed;
	pw_submit(&a->pw);
}

/* ---- integration secrets ------------------------------------------------------ */

static void secret_stored(struct ad_call *call, void *arg, PGresult *const *r, int n)
{
	(void)arg;
	(void)n;
	ad_call_reply(call, json_pack("{s:s,s:o}", "integration",
				      param_str(call, "integration"), "updated_at",
				      ad_db_time(r[0], 0, 0)));
}

static void credential_set(struct ad_call *call)
{
	const struct ad_cred *c = ad_call_cred(call);
	const json_t *secret = json_object_get(ad_call_params(call), "secret");
	char *text = json_is_string(secret) ? strdup(json_string_value(secret))
					    : json_dumps(secret, JSON_COMPACT);
	size_t len = text ? strlen(text) : 0;
	uint8_t *sealed = text ? malloc(len + AD_SEAL_OVERHEAD) : NULL;
	char *nonce_hex = malloc(2 * 24 + 1), *box_hex = malloc(2 * (len + 16) + 1);
	struct idbuf org = num(c->org_id), acct = num(c->account_id);
	const char *p[5] = { org.v, param_str(call, "integration"), nonce_hex, box_hex,
			     acct.v };
	const char *ev[3] = { org.v, actor(call), param_str(call, "integration") };
	struct ad_pg_stmt s[2] = {
		{ "INSERT INTO integration_secrets (org_id, integration, nonce, sealed, updated_by) "
		  "VALUES ($1, $2, decode($3, 'hex'), decode($4, 'hex'), nullif($5, '0')::bigint) "
		  "ON CONFLICT (org_id, integration) DO UPDATE SET nonce = excluded.nonce, "
		  "sealed = excluded.sealed, updated_by = excluded.updated_by, updated_at = now() "
		  "RETURNING iso(updated_at)",
		  5, p },
		{ "INSERT INTO identity_events (org_id, actor, action, target) "
		  "VALUES ($1, $2, 'credential_set', 'integration:' || $3)",
		  3, ev },
	};

	if (!sealed || !nonce_hex || !box_hex) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		goto out;
	}
	ad_keys_seal((const uint8_t *)text, len, sealed);
	sodium_bin2hex(nonce_hex, 2 * 24 + 1, sealed, 24);
	sodium_bin2hex(box_hex, 2 * (len + 16) + 1, sealed + 24, len + 16);
	ad_db_run(call, s, 2, NULL, secret_stored, NULL, NULL);
out:
	if (text)
		sodium_memzero(text, len);
	free(text);
	free(sealed);
	free(nonce_hex);
	free(box_hex);
}

static int identity_init(struct ad_module *m)
{
	static const struct {
		const char *method;
		ad_handler_fn fn;
	} handlers[] = {
		{ "auth.login", auth_login },
		{ "auth.logout", auth_logout },
		{ "account.session_list", session_list },
		{ "account.session_revoke", session_revoke },
		{ "account.session_revoke_all", session_revoke_all },
		{ "account.token_create", token_create },
		{ "account.token_list", token_list },
		{ "account.token_revoke", token_revoke },
		{ "admin.account_create", account_create },
		{ "admin.account_disable", account_disable },
		{ "admin.session_revoke_all", admin_session_revoke_all },
		{ "admin.token_revoke_all", admin_token_revoke_all },
		{ "admin.agent_session_create", agent_session_create },
		{ "admin.agent_session_revoke", agent_session_revoke },
		{ "admin.credential_set", credential_set },
	};

	for (size_t i = 0; i < ad_identity_specs_count; i++)
		if (ad_module_add_spec(m, ad_identity_specs[i].data, ad_identity_specs[i].len))
			return -1;
	for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++)
		if (ad_module_handle(m, handlers[i].method, handlers[i].fn))
			return -1;
	return 0;
}

const struct ad_module_info ad_identity_module = {
	AD_MODULE_API_VERSION, "identity", ACTIOND_VERSION, identity_init, NULL,
};
