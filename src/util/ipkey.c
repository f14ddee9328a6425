/*
 * ipkey.c - per-address limit keys: IPv4 whole, IPv6 by prefix.
 */
#include "ipkey.h"

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
