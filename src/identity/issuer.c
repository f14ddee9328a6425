/*
 * issuer.c - the identity layer's interface for the identity module
 * (export/issuer.h), over the credential cache, the keys and the core.
 */
#include "issuer.h"
#include "auth.h"
#include "cluster.h"
#include "dispatch.h"
#include "keys.h"
#include "loop.h"
#include "sql_internal.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ad_identity_caller(const struct ad_call *call, struct ad_identity_caller *out)
{
	const struct ad_cred *c = ad_call_cred(call);

	memset(out, 0, sizeof(*out));
	if (!c)
		return;
	out->cred_id = c->db_id;
	out->org_id = c->org_id;
	out->account_id = c->account_id;
	out->role = (enum ad_identity_role)c->role;
	out->org = c->org;
}

const struct ad_identity_settings *ad_identity_settings(void)
{
	static struct ad_identity_settings s;

	s.session_ttl_s = ad_cfg->session_ttl_ms / 1000;
	s.secure_cookies = ad_cfg->tls_cert != NULL;
	return &s;
}

const char *ad_identity_instance(void)
{
	return ad_cluster_instance();
}

void ad_identity_set_cookie(struct ad_call *call, const char *value)
{
	ad_call_set_cookie(call, value);
}

void ad_identity_sql_org(struct ad_sql *q, int64_t org_id)
{
	ad_sql_set_org(q, org_id);
}

int64_t ad_identity_id_out(enum ad_id_kind kind, int64_t id)
{
	return ad_keys_id_out((int)kind, id);
}

int64_t ad_identity_id_in(enum ad_id_kind kind, int64_t pub)
{
	return ad_keys_id_in((int)kind, pub);
}

/* The public API's view of the same permutations (actiond/action.h). */
static enum ad_id_kind public_kind(enum ad_public_kind kind)
{
	return kind == AD_PUBLIC_ACCOUNT ? AD_ID_ACCOUNT : AD_ID_AGENT_SESSION;
}

int64_t ad_public_id_out(enum ad_public_kind kind, int64_t id)
{
	return ad_keys_id_out((int)public_kind(kind), id);
}

int64_t ad_public_id_in(enum ad_public_kind kind, int64_t pub)
{
	return ad_keys_id_in((int)public_kind(kind), pub);
}

void ad_token_new(const char *prefix, struct ad_token *t)
{
	ad_keys_new_token(prefix, t->text);
	ad_keys_token_hash(t->text, strlen(t->text), t->hash);
	sodium_bin2hex(t->hex, sizeof(t->hex), t->hash, sizeof(t->hash));
}

void ad_token_wipe(struct ad_token *t)
{
	sodium_memzero(t, sizeof(*t));
}

void ad_identity_seal(const uint8_t *in, size_t len, uint8_t *out)
{
	ad_keys_seal(in, len, out);
}

uint64_t ad_identity_revocation_seq(void)
{
	return ad_auth_revocation_seq();
}

int ad_identity_cache_add(const struct ad_issue *is)
{
	int role = is->role ? ad_role_parse(is->role) : 0;
	struct ad_cred *c = ad_cred_new_db(is->kind, is->db_id, is->org_id, is->org,
					   is->account_id,
					   role > 0 ? (enum ad_role)role : AD_ROLE_NONE,
					   is->agent_session_id, is->expires_at, is->hash);
	int ret = 0;

	if (!c)
		return 0; /* out of memory: the next resync brings it */
	if (ad_auth_revoked_since(is->seq, c))
		ret = -1;
	else if (is->n_integrations &&
		 ad_cred_set_integrations(c, (char *const *)is->integrations,
					  is->n_integrations))
		ret = 0; /* not cached; the next resync brings it */
	else
		ad_auth_cache_add(c);
	ad_cred_unref(c);
	return ret;
}

int ad_audit(struct ad_sql *q, int64_t org_id, const char *actor, const char *action,
	     const char *target)
{
	char org[24];
	const char *p[4] = { org, actor, action, target };

	snprintf(org, sizeof(org), "%lld", (long long)org_id);
	return ad_sql_add(q, "SELECT actiond_audit($1::bigint, $2, $3, $4)", 4, p);
}
