/*
 * ratelimit.c - token buckets in one open-addressing table.
 *
 * Keys are SipHash-2-4 digests (random key per process) of the spec index,
 * the scope and the scope's value, so a peer cannot aim collisions.  A bucket
 * that has refilled completely carries no information; such buckets are
 * dropped whenever the table is rebuilt, which keeps it as small as the set
 * of callers that are actually being limited.
 */
#include "ratelimit.h"
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
	uint32_t spec;   /* spec index, to know the refill rate on rebuild */
};

static struct bucket *slots;
static size_t nslots, nused;
static unsigned char sip_key[crypto_shorthash_KEYBYTES];
static bool keyed;

static uint64_t bucket_key(const struct ad_spec *s, const struct ad_cred *cred,
			   const uint8_t ip[16])
{
	unsigned char msg[8 + 256];
	size_t n = 0;
	uint64_t h;

	memcpy(msg, &s->index, 4);
	n = 4;
	if (!cred || s->rate_scope == AD_RATE_IP) {
		msg[n++] = 'i';
		memcpy(msg + n, ip, 16);
		n += 16;
	} else if (s->rate_scope == AD_RATE_ACCOUNT && cred->account_id) {
		msg[n++] = 'a';
		memcpy(msg + n, &cred->account_id, sizeof(cred->account_id));
		n += sizeof(cred->account_id);
	} else {
		/* An account-scoped limit falls back to the credential for
		 * callers without an account (agents, API keys). */
		const char *v = s->rate_scope == AD_RATE_ORG ? cred->org : cred->id;
		size_t vl = strlen(v);

		msg[n++] = s->rate_scope == AD_RATE_ORG ? 'o' : 'c';
		if (vl > sizeof(msg) - n)
			vl = sizeof(msg) - n;
		memcpy(msg + n, v, vl);
		n += vl;
	}
	crypto_shorthash((unsigned char *)&h, msg, n, sip_key);
	return h ? h : 1;
}

static double refill(const struct bucket *b, int64_t now)
{
	const struct ad_spec *s = &ad_specs[b->spec];
	double t = b->tokens + (double)(now - b->last_us) / 1000.0 *
				       s->rate_limit / s->rate_window_ms;

	return t > s->rate_limit ? s->rate_limit : t;
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

		if (!b->key || refill(b, now) >= ad_specs[b->spec].rate_limit)
			continue;
		*slot_find(tab, n, b->key) = *b;
		nused++;
	}
	free(slots);
	slots = tab;
	nslots = n;
	return 0;
}

bool ad_rate_take(const struct ad_spec *s, const struct ad_cred *cred,
		  const uint8_t ip[16], uint32_t *ret_retry_ms)
{
	int64_t now = lws_now_usecs();
	struct bucket *b;
	uint64_t key;

	if (!keyed) {
		crypto_shorthash_keygen(sip_key);
		keyed = true;
	}
	if (nused + 1 > nslots / 2) {
		size_t n = nslots ? nslots : 64;

		/* First drop full buckets; grow only if that leaves it crowded. */
		if (nslots && rebuild(nslots, now))
			return true; /* out of memory: fail open */
		if (nused + 1 > n / 4 && n < RATE_MAX_SLOTS)
			n *= 2;
		if ((n != nslots && rebuild(n, now)) || nused + 1 > nslots / 2) {
			ad_log_warn("rate limiter table full; forgetting all buckets");
			free(slots);
			slots = NULL;
			nslots = nused = 0;
			if (rebuild(64, now))
				return true;
		}
	}
	key = bucket_key(s, cred, ip);
	b = slot_find(slots, nslots, key);
	if (!b->key) {
		b->key = key;
		b->spec = s->index;
		b->tokens = s->rate_limit;
		b->last_us = now;
		nused++;
	} else {
		b->tokens = refill(b, now);
		b->last_us = now;
	}
	if (b->tokens >= 1.0) {
		b->tokens -= 1.0;
		return true;
	}
	*ret_retry_ms = (uint32_t)((1.0 - b->tokens) * s->rate_window_ms /
				   s->rate_limit) + 1;
	return false;
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
