/*
 * ipkey.h - the key under which per-address limits count a peer.
 *
 * An IPv4 peer (held as an IPv4-mapped IPv6 address) is keyed on its whole
 * address.  An IPv6 peer is keyed on its network prefix, /64 unless
 * configured otherwise: one subscriber usually holds a whole /64, so keying
 * on the full address would let one machine pose as billions of callers.
 */
#ifndef AD_IPKEY_H
#define AD_IPKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Sets the IPv6 prefix length (1..128) used from now on. */
void ad_ip_key_prefix(unsigned bits);

/* Writes the key of the 16-byte address ip into out (which may be ip). */
void ad_ip_key(const uint8_t ip[16], uint8_t out[16]);

/* True if ip is an IPv4-mapped address (::ffff:a.b.c.d). */
bool ad_ip_is_v4(const uint8_t ip[16]);

/* True for 127.0.0.0/8 and ::1. */
bool ad_ip_is_loopback(const uint8_t ip[16]);

/*
 * Parses len bytes of text, an IPv4 or IPv6 address, into out (IPv4 mapped
 * into IPv6).  Returns 0, or -1 (out untouched) if it is not one.
 */
int ad_ip_parse(const char *s, size_t len, uint8_t out[16]);

/* Writes ip as text (a.b.c.d for a mapped IPv4 address; "unix" for ::,
 * the address of peers on the Unix socket) into out. */
#define AD_IP_TEXT_MAX 46
void ad_ip_format(const uint8_t ip[16], char out[AD_IP_TEXT_MAX]);

/* An address range: the first bits of addr (IPv4 ranges mapped, +96). */
struct ad_cidr {
	uint8_t addr[16];
	uint8_t bits;
};

/*
 * Parses "ADDR" or "ADDR/BITS" (IPv4: up to 32 bits; IPv6: up to 128).
 * Returns 0, or -1 if malformed.
 */
int ad_cidr_parse(const char *s, struct ad_cidr *ret);

/* True if ip lies in c. */
bool ad_cidr_match(const struct ad_cidr *c, const uint8_t ip[16]);

#endif
