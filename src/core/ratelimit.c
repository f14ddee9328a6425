/*
 * ratelimit.c - token buckets in one open-addressing table.
 *
 * Keys are SipHash-2-4 digests (random key per process) of the spec index,
 * the scope and the scope's value, so a peer cannot aim collisions.  A bucket
 * that has refilled completely carries no information; such buckets are
 * dropped whenever the table is rebuilt, which keeps it as small as the set
 * of callers that are actually being limited.  Addresses are keyed by
 * ad_ip_key(): an IPv6 caller is its /64 (limits.ipv6_prefix).
 */
#include "ratelimit.h"
#include "ipkey.h"
#include "log.h"

#include <libwebsockets.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define RATE_MAX_SLOTS (1u << 20)

struct bucket {
	uint64_t key;    /* 0 = empty slot */
	int64_t last_us; /* when tokens was computed */
	double tokens;
	uint32_t spec;   /* spec and rule index, to know the refill rate on rebuild */
	uint32_t rule;
};

static struct bucket *slots;
static size_t nslots, nused;
static unsigned char sip_key[crypto_shorthash_KEYBYTES];
static bool keyed;

static uint64_t bucket_key(const struct ad_spec *s, unsigned rule,
			   const struct ad_cred *cred, const uint8_t ip[16])
{
	enum ad_rate_scope scope = s->rates[rule].scope;
	unsigned char msg[8 + 256];
	size_t n = 0;
	uint64_t h;

	memcpy(msg, &s->index, 4);
	msg[4] = (unsigned char)rule;
	n = 5;
	if (!cred || scope == AD_RATE_IP) {
		msg[n++] = 'i';
		ad_ip_key(ip, msg + n);
		n += 16;
	} else if (scope == AD_RATE_ACCOUNT && cred->account_id) {
		msg[n++] = 'a';
		memcpy(msg + n, &cred->account_id, sizeof(cred->account_id));
		n += sizeof(cred->account_id);
	} else {
		/* An account-scoped limit falls back to the credential for
		 * callers without an account (agents, API keys). */
		const char *v = scope == AD_RATE_ORG ? cred->org : cred->id;
		size_t vl = strlen(v);

		msg[n++] = scope == AD_RATE_ORG ? 'o' : 'c';
		if (vl > sizeof(msg) - n)
			vl = sizeof(msg) - n;
		memcpy(msg + n, v, vl);
		n += vl;
	}
	crypto_shorthash((unsigned char *)&h, msg, n, sip_key);
	return h ? h : 1;
}

static const struct ad_rate_rule *rule_of(const struct bucket *b)
{
	return &ad_specs[b->spec].rates[b->rule];
}

static double refill(const struct bucket *b, int64_t now)
{
	const struct ad_rate_rule *r = rule_of(b);
	double t = b->tokens + (double)(now - b->last_us) / 1000.0 * r->limit / r->window_ms;

	return t > r->limit ? r->limit : t;
}

static struct bucket *slot_find(struct bucket *tab, size_t n, uint64_t key)
{
	size_t i = key & (n - 1);

	while (tab[i].key && tab[i].key != key)
		i = (i + 1) & (n - 1);
	return &tab[i];
}

/* Rebuilds the table at the given size, keeping only non-full buckets. */
static int rebuild(size_t n, int64_t now)
{
	struct bucket *tab = calloc(n, sizeof(*tab));

	if (!tab)
		return -1;
	nused = 0;
	for (size_t i = 0; i < nslots; i++) {
		struct bucket *b = &slots[i];

		if (!b->key || refill(b, now) >= rule_of(b)->limit)
			continue;
		*slot_find(tab, n, b->key) = *b;
		nused++;
	}
	free(slots);
	slots = tab;
	nslots = n;
	return 0;
}

/* Makes room for AD_MAX_RATE_RULES more buckets; false if out of memory. */
static bool table_room(int64_t now)
{
	if (nused + AD_MAX_RATE_RULES > nslots / 2) {
		size_t n = nslots ? nslots : 64;

		/* First drop full buckets; grow only if that leaves it crowded. */
		if (nslots && rebuild(nslots, now))
			return false;
		if (nused + AD_MAX_RATE_RULES > n / 4 && n < RATE_MAX_SLOTS)
			n *= 2;
		if ((n != nslots && rebuild(n, now)) ||
		    nused + AD_MAX_RATE_RULES > nslots / 2) {
			ad_log_warn("rate limiter table full; forgetting all buckets");
			free(slots);
			slots = NULL;
			nslots = nused = 0;
			if (rebuild(64, now))
				return false;
		}
	}
	return true;
}

bool ad_rate_take(const struct ad_spec *s, const struct ad_cred *cred,
		  const uint8_t ip[16], uint32_t *ret_retry_ms)
{
	int64_t now = lws_now_usecs();
	struct bucket *b[AD_MAX_RATE_RULES];
	uint32_t retry = 0;

	if (!keyed) {
		crypto_shorthash_keygen(sip_key);
		keyed = true;
	}
	if (!table_room(now))
		return true; /* out of memory: fail open */
	for (unsigned i = 0; i < s->nrates; i++) {
		uint64_t key = bucket_key(s, i, cred, ip);

		b[i] = slot_find(slots, nslots, key);
		if (!b[i]->key) {
			b[i]->key = key;
			b[i]->spec = s->index;
			b[i]->rule = i;
			b[i]->tokens = s->rates[i].limit;
			nused++;
		} else {
			b[i]->tokens = refill(b[i], now);
		}
		b[i]->last_us = now;
		if (b[i]->tokens < 1.0) {
			uint32_t r = (uint32_t)((1.0 - b[i]->tokens) * s->rates[i].window_ms /
						s->rates[i].limit) + 1;

			if (r > retry)
				retry = r;
		}
	}
	if (retry) { /* some rule says no: take nothing from the others */
		*ret_retry_ms = retry;
		return false;
	}
	for (unsigned i = 0; i < s->nrates; i++)
		b[i]->tokens -= 1.0;
	return true;
}

size_t ad_rate_buckets(void)
{
	return nused;
}

void ad_rate_free(void)
{
	free(slots);
	slots = NULL;
	nslots = nused = 0;
}
