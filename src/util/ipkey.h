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
#include <stdint.h>

/* Sets the IPv6 prefix length (1..128) used from now on. */
void ad_ip_key_prefix(unsigned bits);

/* Writes the key of the 16-byte address ip into out (which may be ip). */
void ad_ip_key(const uint8_t ip[16], uint8_t out[16]);

/* True if ip is an IPv4-mapped address (::ffff:a.b.c.d). */
bool ad_ip_is_v4(const uint8_t ip[16]);

#endif
