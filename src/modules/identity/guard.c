/*
 * guard.c - password guessing, per account.
 *
 * The login limit per address (the spec's rate limit) does not stop a
 * guesser with many addresses.  So each account (by email, known or not)
 * also has a budget of failed logins: 10, earning one back a minute.  An
 * empty budget refuses further attempts before any password is checked -
 * except from an address this account logged in from lately (the last
 * four), so a guesser cannot lock its owner out of the places the owner
 * uses; from a new address the owner waits until the guessing stops.
 *
 * The table is bounded (4096 sets of 4); when a set is full, the entry with
 * the fewest failures makes room, so a flood of made-up emails cannot push
 * out the budget of an account under attack.  Email keys are SipHash with a
 * key drawn at start.
 */
#include "identity.h"

#include <string.h>
#include <time.h>

#define SETS 4096
#define WAYS 4
#define KNOWN 4
#define BUDGET 10.0
#define EARN_MS 60000.0

struct acct {
	uint64_t email;          /* 0: free */
	double debt;             /* failures not yet earned back */
	int64_t at_ms;           /* when debt was last brought up to date */
	uint64_t known[KNOWN];   /* addresses of recent successful logins */
	unsigned next_known;
};

static struct acct table[SETS][WAYS];
static unsigned char hash_key[crypto_shorthash_KEYBYTES];
static bool ready;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t email_key(const char *email)
{
	uint64_t h;

	if (!ready) {
		randombytes_buf(hash_key, sizeof(hash_key));
		ready = true;
	}
	crypto_shorthash((unsigned char *)&h, (const unsigned char *)email, strlen(email),
			 hash_key);
	return h ? h : 1;
}

/* The caller's address as a key: IPv4 whole, IPv6 by its /64. */
static uint64_t peer_key(struct ad_call *call)
{
	static const uint8_t v4[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	uint8_t ip[16];
	uint64_t h = 1469598103934665603ull;

	ad_call_peer(call, ip);
	for (int i = 0, n = memcmp(ip, v4, 12) ? 8 : 16; i < n; i++)
		h = (h ^ ip[i]) * 1099511628211ull;
	return h;
}

/* The entry of email, made if need be; debt brought up to date. */
static struct acct *lookup(uint64_t email, bool create)
{
	struct acct *set = table[email % SETS], *victim = &set[0];
	int64_t now = now_ms();

	for (int i = 0; i < WAYS; i++) {
		struct acct *a = &set[i];

		if (a->email == email) {
			a->debt -= (double)(now - a->at_ms) / EARN_MS;
			if (a->debt < 0)
				a->debt = 0;
			a->at_ms = now;
			return a;
		}
		if (!a->email || a->debt < victim->debt)
			victim = a;
	}
	if (!create)
		return NULL;
	memset(victim, 0, sizeof(*victim));
	victim->email = email;
	victim->at_ms = now;
	return victim;
}

static bool known(const struct acct *a, uint64_t peer)
{
	for (int i = 0; i < KNOWN; i++)
		if (a->known[i] == peer)
			return true;
	return false;
}

bool id_guard_allows(struct ad_call *call, const char *email, uint32_t *ret_retry_ms)
{
	struct acct *a = lookup(email_key(email), false);

	if (!a || a->debt < BUDGET || known(a, peer_key(call)))
		return true;
	*ret_retry_ms = (uint32_t)((a->debt - BUDGET + 1) * EARN_MS);
	return false;
}

bool id_guard_known(struct ad_call *call, const char *email)
{
	struct acct *a = lookup(email_key(email), false);

	return a && known(a, peer_key(call));
}

void id_guard_result(struct ad_call *call, const char *email, bool success)
{
	struct acct *a = lookup(email_key(email), true);

	if (success) {
		uint64_t peer = peer_key(call);

		if (!known(a, peer))
			a->known[a->next_known++ % KNOWN] = peer;
	} else {
		a->debt += 1;
	}
}
