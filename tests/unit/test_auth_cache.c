/*
 * test_auth_cache.c - the credential cache of src/auth.c: issued tokens found
 * by their keyed hash, the open-addressing table kept consistent through
 * thousands of insertions and scope revocations (backward-shift deletion),
 * and revocation scopes that match exactly what they say.
 *
 * The revoke hook (cred.h) is how the transport closes a socket whose
 * credential was revoked; here it records the sockets it is asked to close
 * instead of closing them.
 */
#include "auth.h"
#include "check.h"
#include "keys.h"

#include <sodium.h>
#include <stdlib.h>

#define N 3000

static size_t closed;

static void revoke_hook(struct ad_list *node, const char *reason, int64_t t0_us,
			struct ad_flush_wait *w)
{
	(void)reason;
	(void)t0_us;
	(void)w;
	ad_list_del(node);
	closed++;
}

struct issued {
	char token[AD_TOKEN_TEXT_MAX];
	int64_t org, account, agent;
	enum ad_cred_kind kind;
	bool revoked;
	struct ad_list conn; /* one fake socket resting on it */
};

static struct issued *tok;

static bool expect_match(const struct ad_revoke_scope *s, const struct issued *t,
			 int64_t id)
{
	if (id == s->except_cred_id || t->org != s->org_id)
		return false;
	return (!s->kind || t->kind == s->kind) && (!s->cred_id || id == s->cred_id) &&
	       (!s->account_id || t->account == s->account_id) &&
	       (!s->agent_session_id || t->agent == s->agent_session_id);
}

static void revoke_and_check(const struct ad_revoke_scope *s)
{
	size_t want = 0, got;

	for (int i = 0; i < N; i++)
		if (!tok[i].revoked && expect_match(s, &tok[i], i + 1)) {
			tok[i].revoked = true;
			want++;
		}
	closed = 0;
	got = ad_auth_revoke(s, "test", 0, NULL);
	CHECK(got == want && closed == want);
	/* Everything else is still found, nothing revoked is. */
	for (int i = 0; i < N; i++) {
		struct ad_cred *c = ad_auth_token(tok[i].token, strlen(tok[i].token), 0);

		CHECK(!c == tok[i].revoked);
		ad_cred_unref(c);
	}
}

int main(void)
{
	struct ad_config cfg;
	uint8_t h[32];

	setenv("ACTIOND_MASTER_KEY",
	       "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 1);
	ad_cred_set_revoke_hook(revoke_hook);
	if (sodium_init() < 0)
		return 1;
	ad_config_init(&cfg);
	CHECK(ad_keys_init(&cfg, false) == 0);
	CHECK(ad_auth_init(&cfg) == 0);
	tok = calloc(N, sizeof(*tok));
	for (int i = 0; i < N; i++) {
		struct issued *t = &tok[i];
		struct ad_cred *c;

		t->kind = i % 3 == 0 ? AD_CRED_SESSION : i % 3 == 1 ? AD_CRED_API_TOKEN
								    : AD_CRED_AGENT;
		t->org = 1 + i % 4;
		t->account = t->kind == AD_CRED_AGENT ? 0 : 1 + i % 50;
		t->agent = t->kind == AD_CRED_AGENT ? 1 + i % 20 : 0;
		ad_keys_new_token(t->kind == AD_CRED_SESSION ? "ads_" :
				  t->kind == AD_CRED_AGENT ? "ada_" : "adt_", t->token);
		ad_keys_token_hash(t->token, strlen(t->token), h);
		c = ad_cred_new_db(t->kind, i + 1, t->org, "org", t->account,
				   t->kind == AD_CRED_AGENT ? AD_ROLE_NONE : AD_ROLE_MEMBER,
				   t->agent, 0, h);
		CHECK(c && ad_auth_cache_add(c) == 0);
		CHECK(c && ad_auth_cache_add(c) == 0); /* a second add changes nothing */
		ad_list_add_tail(&c->conns, &t->conn);
		ad_cred_unref(c);
	}
	CHECK(ad_auth_cache_size() == N);

	/* Lookups: the right kind, the want_kind filter, unknown tokens. */
	{
		struct ad_cred *c = ad_auth_token(tok[0].token, strlen(tok[0].token), 0);

		CHECK(c && c->kind == AD_CRED_SESSION && c->db_id == 1);
		ad_cred_unref(c);
		CHECK(!ad_auth_token(tok[1].token, strlen(tok[1].token), AD_CRED_SESSION));
		CHECK(!ad_auth_token("adt_nope", 8, 0));
		CHECK(!ad_auth_token("", 0, 0));
	}

	/* Revocations of every shape, each checked against a model. */
	revoke_and_check(&(struct ad_revoke_scope){ .org_id = 2, .cred_id = 2 });
	revoke_and_check(&(struct ad_revoke_scope){ .org_id = 1, .cred_id = 2 }); /* wrong org */
	revoke_and_check(&(struct ad_revoke_scope){ .org_id = 3, .account_id = 7,
						    .kind = AD_CRED_SESSION });
	revoke_and_check(&(struct ad_revoke_scope){ .org_id = 1, .agent_session_id = 5 });
	revoke_and_check(&(struct ad_revoke_scope){ .org_id = 4, .kind = AD_CRED_API_TOKEN,
						    .except_cred_id = 8 });
	revoke_and_check(&(struct ad_revoke_scope){ .org_id = 2, .account_id = 12 });
	revoke_and_check(&(struct ad_revoke_scope){ .org_id = 1 });
	revoke_and_check(&(struct ad_revoke_scope){ .cred_id = 3 }); /* no org: nothing */
	revoke_and_check(&(struct ad_revoke_scope){ .org_id = 3 });
	{
		size_t left = 0;

		for (int i = 0; i < N; i++)
			left += !tok[i].revoked;
		CHECK(ad_auth_cache_size() == left);
	}
	ad_auth_free();
	ad_keys_free();
	ad_config_free(&cfg);
	free(tok);
	return check_summary("auth-cache");
}
