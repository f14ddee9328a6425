/*
 * module.c - the identity module: its registration and the helpers its
 * handlers share.
 */
#include "builtin.h"
#include "identity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char id_dummy_hash[crypto_pwhash_STRBYTES];

int ad_identity_init(void)
{
	char pw[32];

	randombytes_buf(pw, sizeof(pw));
	return crypto_pwhash_str(id_dummy_hash, pw, sizeof(pw),
				 crypto_pwhash_OPSLIMIT_INTERACTIVE,
				 crypto_pwhash_MEMLIMIT_INTERACTIVE);
}

struct id_num id_num(int64_t v)
{
	struct id_num b;

	snprintf(b.v, sizeof(b.v), "%lld", (long long)v);
	return b;
}

const char *id_text(struct ad_call *call, const char *key, bool *ret_failed)
{
	size_t len;
	const char *s = ad_param_str(call, key, &len);
	char ptr[64];

	*ret_failed = false;
	if (!s || strlen(s) == len)
		return s;
	snprintf(ptr, sizeof(ptr), "/%s", key);
	ad_call_fail_params(call, ptr, "pattern", "must not contain U+0000");
	*ret_failed = true;
	return NULL;
}

char *id_email(struct ad_call *call, const char *key)
{
	bool failed;
	const char *s = id_text(call, key, &failed);
	char *e;

	if (failed)
		return NULL;
	if (!s || !(e = strdup(s))) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return NULL;
	}
	for (char *c = e; *c; c++)
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c - 'A' + 'a');
	return e;
}

const char *id_actor(struct ad_call *call)
{
	return ad_call_credential_id(call);
}

void id_page_read(struct ad_call *call, enum ad_id_kind kind, struct id_page *pg)
{
	const char *cursor = ad_param_str(call, "cursor", NULL);
	/* The cursor is the public id of the last row shown. */
	int64_t after = cursor ? ad_identity_id_in(kind, strtoll(cursor, NULL, 10)) : 0;

	pg->kind = kind;
	pg->limit = 50;
	(void)ad_param_int(call, "limit", &pg->limit);
	pg->after = id_num(after);
	pg->fetch = id_num(pg->limit + 1);
}

json_t *id_page_next(const struct id_page *pg, int rows, int64_t last)
{
	char v[24];

	if (rows <= pg->limit)
		return json_null();
	snprintf(v, sizeof(v), "%lld", (long long)ad_identity_id_out(pg->kind, last));
	return json_string(v);
}

/* ---- passwords ------------------------------------------------------------ */

void id_pw_clear(struct id_pw *pw)
{
	if (pw->password) {
		sodium_memzero(pw->password, pw->len);
		free(pw->password);
		pw->password = NULL;
	}
}

static void pw_run(void *arg)
{
	struct id_pw *pw = arg;

	if (pw->verify) {
		for (int i = 0; i < pw->ncandidates && i < ID_PW_CANDIDATES; i++)
			if (crypto_pwhash_str_verify(pw->candidates[i], pw->password, pw->len) == 0)
				pw->matched |= 1u << i;
		pw->ok = pw->matched != 0;
	} else
		pw->ok = crypto_pwhash_str(pw->hash, pw->password, pw->len,
					   crypto_pwhash_OPSLIMIT_INTERACTIVE,
					   crypto_pwhash_MEMLIMIT_INTERACTIVE) == 0;
	sodium_memzero(pw->password, pw->len);
}

static void pw_done(struct ad_call *call, void *arg, bool ran)
{
	struct id_pw *pw = arg;

	id_pw_clear(pw);
	if (ad_call_is_cancelled(call)) {
		pw->free_fn(pw);
		ad_call_fail(call, AD_REASON_CANCELLED, "cancelled", NULL);
		return;
	}
	if (!ran) {
		pw->free_fn(pw);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "shutting down", NULL);
		return;
	}
	pw->then(call, pw);
}

static void pw_start(struct ad_call *call, struct id_pw *pw, const char *password,
		     size_t len, bool first)
{
	pw->len = len;
	pw->password = malloc(len ? len : 1);
	if (!pw->password) {
		pw->free_fn(pw);
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	memcpy(pw->password, password, len);
	if ((first ? ad_call_offload_first : ad_call_offload)(call, pw_run, pw_done, pw)) {
		id_pw_clear(pw);
		pw->free_fn(pw);
		ad_call_fail(call, AD_REASON_RATE_LIMITED,
			     "Too many password checks are waiting; try again shortly",
			     json_pack("{s:i}", "retry_after_ms", 1000));
	}
}

void id_pw_start(struct ad_call *call, struct id_pw *pw, const char *password,
		 size_t len)
{
	pw_start(call, pw, password, len, false);
}

void id_pw_start_first(struct ad_call *call, struct id_pw *pw, const char *password,
		       size_t len)
{
	pw_start(call, pw, password, len, true);
}

/* ---- a credential that lost a race with a revocation ----------------------- */

static void lost_done(struct ad_call *call, void *arg, const struct ad_sql_result *res)
{
	(void)arg;
	(void)res;
	ad_call_fail(call, AD_REASON_CONFLICT,
		     "The account changed while this ran (revoked or disabled); try again",
		     NULL);
}

void id_issue_lost(struct ad_call *call, int64_t cred_id, int64_t org_id)
{
	struct id_num id = id_num(cred_id), org = id_num(org_id);
	const char *p[2] = { id.v, org.v };
	struct ad_sql *q = ad_sql_new(call, 0);

	if (!q) {
		lost_done(call, NULL, NULL);
		return;
	}
	ad_identity_sql_org(q, org_id);
	ad_sql_add(q, "UPDATE credentials SET revoked_at = now() WHERE id = $1::bigint "
		      "AND org_id = $2::bigint AND revoked_at IS NULL",
		   2, p);
	ad_sql_run(q, lost_done, NULL, NULL);
}

/* ---- registration ---------------------------------------------------------- */

static int identity_init(struct ad_module *m)
{
	static const struct {
		const char *method;
		ad_handler_fn fn;
	} handlers[] = {
		{ "auth.login", id_auth_login },
		{ "auth.logout", id_auth_logout },
		{ "account.session_list", id_session_list },
		{ "account.session_revoke", id_session_revoke },
		{ "account.session_revoke_all", id_session_revoke_all },
		{ "account.token_create", id_token_create },
		{ "account.token_list", id_token_list },
		{ "account.token_revoke", id_token_revoke },
		{ "admin.account_create", id_account_create },
		{ "admin.account_disable", id_account_disable },
		{ "admin.session_revoke_all", id_admin_session_revoke_all },
		{ "admin.token_revoke_all", id_admin_token_revoke_all },
		{ "admin.agent_session_create", id_agent_session_create },
		{ "admin.agent_session_revoke", id_agent_session_revoke },
		{ "admin.credential_set", id_credential_set },
		{ "admin.account_list", id_account_list },
		{ "admin.agent_session_list", id_agent_session_list },
		{ "admin.credential_list", id_admin_credential_list },
		{ "admin.credential_revoke", id_admin_credential_revoke },
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
