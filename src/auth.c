/*
 * auth.c - configured API keys and bearer-token lookup.
 */
#include "auth.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

struct key_entry {
	uint8_t hash[32];
	struct ad_cred *cred;
};

static struct key_entry *keys;
static size_t nkeys;

struct ad_cred *ad_cred_ref(struct ad_cred *c)
{
	if (c)
		c->refs++;
	return c;
}

struct ad_cred *ad_cred_unref(struct ad_cred *c)
{
	if (!c || --c->refs)
		return NULL;
	free(c->org);
	free(c->id);
	free(c);
	return NULL;
}

static struct ad_cred *cred_new(enum ad_cred_kind kind, enum ad_role role,
				const char *org, const char *id)
{
	struct ad_cred *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->refs = 1;
	c->kind = kind;
	c->role = role;
	c->org = strdup(org);
	c->id = strdup(id);
	ad_list_init(&c->conns);
	if (!c->org || !c->id)
		return ad_cred_unref(c);
	return c;
}

int ad_auth_init(const struct ad_config *cfg)
{
	keys = calloc(cfg->n_api_keys ? cfg->n_api_keys : 1, sizeof(*keys));
	if (!keys)
		return -1;
	for (size_t i = 0; i < cfg->n_api_keys; i++) {
		const struct ad_api_key *k = &cfg->api_keys[i];
		char id[256];

		snprintf(id, sizeof(id), "api_key:%s", k->name);
		memcpy(keys[i].hash, k->hash, 32);
		keys[i].cred = cred_new(AD_CRED_API_KEY, k->role, k->org, id);
		if (!keys[i].cred)
			return -1;
		nkeys = i + 1;
	}
	return 0;
}

void ad_auth_free(void)
{
	for (size_t i = 0; i < nkeys; i++)
		ad_cred_unref(keys[i].cred);
	free(keys);
	keys = NULL;
	nkeys = 0;
}

void ad_token_hash(const char *token, size_t len, uint8_t out[32])
{
	crypto_generichash(out, 32, (const unsigned char *)token, len, NULL, 0);
}

struct ad_cred *ad_auth_bearer(const char *token, size_t len)
{
	struct ad_cred *found = NULL;
	uint8_t h[32];

	if (len == 0 || len > AD_TOKEN_MAX)
		return NULL;
	ad_token_hash(token, len, h);
	/* Compare against every key so the time taken does not depend on which
	 * one (if any) matched. */
	for (size_t i = 0; i < nkeys; i++)
		if (sodium_memcmp(h, keys[i].hash, 32) == 0)
			found = keys[i].cred;
	return ad_cred_ref(found);
}
