/*
 * test_ratelimit.c - token buckets of src/ratelimit.c: limits per credential,
 * account, address and org; rules that combine; a refused call takes nothing;
 * retry_after; IPv6 callers counted by /64; and a table that grows to many
 * callers and stays correct.
 * Windows are long (minutes) so that refill during the test is negligible.
 */
#include "check.h"
#include "ratelimit.h"

#include <sodium.h>
#include <stdlib.h>

/* The registry ratelimit.c reads (spec.c's, which is not linked here). */
struct ad_spec *ad_specs;
size_t ad_nspecs;

static struct ad_spec specs[3];

static struct ad_cred *cred(const char *id, const char *org, int64_t account)
{
	struct ad_cred *c = calloc(1, sizeof(*c));

	c->refs = 1;
	c->kind = AD_CRED_API_TOKEN;
	c->id = strdup(id);
	c->org = strdup(org);
	c->account_id = account;
	ad_list_init(&c->conns);
	return c;
}

static void cred_free(struct ad_cred *c)
{
	free(c->id);
	free(c->org);
	free(c);
}

static int take_n(const struct ad_spec *s, const struct ad_cred *c, const uint8_t ip[16],
		  int n, uint32_t *retry)
{
	int ok = 0;

	for (int i = 0; i < n; i++)
		ok += ad_rate_take(s, c, ip, retry);
	return ok;
}

int main(void)
{
	/* 10.0.0.1 and 10.0.0.2, IPv4-mapped as ad_peer_ip() gives them. */
	uint8_t ip1[16] = { [10] = 0xff, [11] = 0xff, [12] = 10, [15] = 1 };
	uint8_t ip2[16] = { [10] = 0xff, [11] = 0xff, [12] = 10, [15] = 2 };
	/* 2001:db8::1 and 2001:db8::2:3 share a /64; 2001:db8:0:1::1 does not. */
	uint8_t v6a[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
	uint8_t v6b[16] = { 0x20, 0x01, 0x0d, 0xb8, [13] = 2, [15] = 3 };
	uint8_t v6c[16] = { 0x20, 0x01, 0x0d, 0xb8, [7] = 1, [15] = 1 };
	struct ad_cred *a1, *a2, *b1;
	uint32_t retry = 0;

	if (sodium_init() < 0)
		return 1;
	ad_specs = specs;
	ad_nspecs = 3;
	/* 0: 5 per minute per credential */
	specs[0].index = 0;
	specs[0].nrates = 1;
	specs[0].rates[0] = (struct ad_rate_rule){ 5, 60000, AD_RATE_CREDENTIAL };
	/* 1: 3 per minute per account and 4 per minute per address */
	specs[1].index = 1;
	specs[1].nrates = 2;
	specs[1].rates[0] = (struct ad_rate_rule){ 3, 60000, AD_RATE_ACCOUNT };
	specs[1].rates[1] = (struct ad_rate_rule){ 4, 60000, AD_RATE_IP };
	/* 2: 2 per minute per org */
	specs[2].index = 2;
	specs[2].nrates = 1;
	specs[2].rates[0] = (struct ad_rate_rule){ 2, 60000, AD_RATE_ORG };

	a1 = cred("api_token:1", "acme", 10); /* two credentials of one account */
	a2 = cred("api_token:2", "acme", 10);
	b1 = cred("api_token:3", "globex", 20);

	/* Per credential: each has its own five; the sixth waits ~12 s. */
	CHECK(take_n(&specs[0], a1, ip1, 6, &retry) == 5);
	CHECK(retry > 11000 && retry <= 12001);
	CHECK(take_n(&specs[0], a2, ip1, 5, &retry) == 5);

	/* Per account and per address at once. */
	CHECK(take_n(&specs[1], a1, ip1, 2, &retry) == 2);
	CHECK(take_n(&specs[1], a2, ip2, 2, &retry) == 1); /* the account's 3rd, then no */
	CHECK(take_n(&specs[1], b1, ip1, 3, &retry) == 2); /* ip1 had 2 of 4 left */
	/* Refused calls took nothing: b1's account still has one call left. */
	CHECK(take_n(&specs[1], b1, ip2, 1, &retry) == 1);

	/* Anonymous callers are keyed by address whatever the scope. */
	CHECK(take_n(&specs[2], NULL, ip2, 3, &retry) == 2);
	CHECK(take_n(&specs[2], a1, ip1, 3, &retry) == 2); /* org acme */
	CHECK(take_n(&specs[2], a2, ip2, 1, &retry) == 0); /* same org, spent */
	CHECK(take_n(&specs[2], b1, ip1, 1, &retry) == 1); /* another org */

	/* IPv6 callers are one caller per /64 (the default prefix). */
	CHECK(take_n(&specs[2], NULL, v6a, 1, &retry) == 1);
	CHECK(take_n(&specs[2], NULL, v6b, 2, &retry) == 1); /* same /64: 2 in all */
	CHECK(take_n(&specs[2], NULL, v6c, 2, &retry) == 2); /* another /64 */

	/* Thousands of callers: the table grows and keeps every bucket. */
	for (int round = 0; round < 2; round++) {
		int allowed = 0;

		for (int i = 0; i < 20000; i++) {
			uint8_t ip[16] = { [10] = 0xff, [11] = 0xff };

			ip[12] = (uint8_t)(i >> 8);
			ip[13] = (uint8_t)i;
			ip[14] = 7;
			allowed += ad_rate_take(&specs[2], NULL, ip, &retry);
		}
		/* First round: each address has 2; second: 1 left each. */
		CHECK(allowed == 20000);
	}
	CHECK(ad_rate_buckets() >= 20000);

	ad_rate_free();
	cred_free(a1);
	cred_free(a2);
	cred_free(b1);
	return check_summary("ratelimit");
}
