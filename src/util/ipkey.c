/*
 * ipkey.c - per-address limit keys (IPv4 whole, IPv6 by prefix), and
 * addresses and ranges as text.
 */
#include "ipkey.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned v6_prefix = 64;

void ad_ip_key_prefix(unsigned bits)
{
	if (bits >= 1 && bits <= 128)
		v6_prefix = bits;
}

bool ad_ip_is_v4(const uint8_t ip[16])
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return !memcmp(ip, mapped, sizeof(mapped));
}

void ad_ip_key(const uint8_t ip[16], uint8_t out[16])
{
	unsigned whole, rest;

	if (out != ip)
		memcpy(out, ip, 16);
	if (ad_ip_is_v4(ip))
		return;
	whole = v6_prefix / 8;
	rest = v6_prefix % 8;
	if (whole < 16) {
		out[whole] &= (uint8_t)(0xff00u >> rest);
		memset(out + whole + 1, 0, 16 - whole - 1);
	}
}

bool ad_ip_is_loopback(const uint8_t ip[16])
{
	static const uint8_t v6[16] = { [15] = 1 };

	return ad_ip_is_v4(ip) ? ip[12] == 127 : !memcmp(ip, v6, 16);
}

int ad_ip_parse(const char *s, size_t len, uint8_t out[16])
{
	char text[AD_IP_TEXT_MAX];
	uint8_t a[16];

	if (!len || len >= sizeof(text))
		return -1;
	memcpy(text, s, len);
	text[len] = '\0';
	if (inet_pton(AF_INET, text, a + 12) == 1) {
		memset(a, 0, 10);
		a[10] = a[11] = 0xff;
	} else if (inet_pton(AF_INET6, text, a) != 1) {
		return -1;
	}
	memcpy(out, a, 16);
	return 0;
}

void ad_ip_format(const uint8_t ip[16], char out[AD_IP_TEXT_MAX])
{
	static const uint8_t none[16];

	/* "::" never sends a packet: it is a peer on the Unix socket */
	if (!memcmp(ip, none, 16)) {
		snprintf(out, AD_IP_TEXT_MAX, "unix");
		return;
	}
	if (!(ad_ip_is_v4(ip) ? inet_ntop(AF_INET, ip + 12, out, AD_IP_TEXT_MAX)
			      : inet_ntop(AF_INET6, ip, out, AD_IP_TEXT_MAX)))
		snprintf(out, AD_IP_TEXT_MAX, "?");
}

int ad_cidr_parse(const char *s, struct ad_cidr *ret)
{
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	struct ad_cidr c;
	unsigned max;

	if (ad_ip_parse(s, alen, c.addr))
		return -1;
	max = ad_ip_is_v4(c.addr) ? 32 : 128;
	if (slash) {
		char *end;
		unsigned long b;

		if (slash[1] < '0' || slash[1] > '9')
			return -1;
		b = strtoul(slash + 1, &end, 10);
		if (*end || b > max)
			return -1;
		c.bits = (uint8_t)(b + (max == 32 ? 96 : 0));
	} else {
		c.bits = 128;
	}
	/* Clear the host bits, so matching compares prefixes only. */
	for (unsigned i = c.bits; i < 128; i++)
		c.addr[i / 8] &= (uint8_t)~(0x80u >> (i % 8));
	*ret = c;
	return 0;
}

bool ad_cidr_match(const struct ad_cidr *c, const uint8_t ip[16])
{
	unsigned whole = c->bits / 8, rest = c->bits % 8;

	if (memcmp(c->addr, ip, whole))
		return false;
	return !rest || !((c->addr[whole] ^ ip[whole]) & (uint8_t)(0xff00u >> rest));
}
