/*
 * peer.h - what actiond knows about a TCP peer: per-address connection
 * counts, and one record per accepted connection that outlives the HTTP
 * exchanges on it.
 *
 * Both the HTTP and the WebSocket connection caps count by ad_ip_key(), so
 * an IPv6 peer is counted by its /64 (limits.ipv6_prefix).
 */
#ifndef AD_PEER_H
#define AD_PEER_H

#include "rxguard.h"

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Counters keyed by address: an open-addressing table that grows. */
struct ad_ip_slot;
struct ad_iptab {
	struct ad_ip_slot *slots;
	size_t cap, used;
};

/* key's count (0 if it has none). */
uint32_t ad_iptab_count(const struct ad_iptab *t, const uint8_t key[16]);
/*
 * Adds one to key's count if that keeps it at or below max.  Returns false
 * (and counts nothing) if key is already at max or memory ran out.
 */
bool ad_iptab_take(struct ad_iptab *t, const uint8_t key[16], uint32_t max);
/* Takes one from key's count; a count that reaches zero frees its slot. */
void ad_iptab_release(struct ad_iptab *t, const uint8_t key[16]);
void ad_iptab_free(struct ad_iptab *t);

/*
 * One accepted TCP connection, from accept to close (HTTP exchanges come and
 * go on it; lws reallocates their per-exchange data).  Kept as the wsi's
 * opaque user data.
 */
struct ad_peer {
	uint8_t ip[16];       /* the full address */
	uint8_t key[16];      /* ad_ip_key(ip) */
	struct ad_rxguard rx; /* what it sends, checked before lws parses it */
	bool trusted;         /* a trusted proxy (security.trusted_proxies) */
	bool http_counted;    /* counts against max_http_conns_per_ip */
	bool marked;          /* an exchange was completed on it */
	uint64_t rx_mark;     /* bytes lws had read when the last one completed */
};

/*
 * A new connection was accepted: records it, or returns -1 if its address
 * already has max_http_conns_per_ip connections (the caller hangs up).
 */
int ad_peer_accept(struct lws *wsi);
/* The connection is being destroyed (any wsi; others are ignored). */
void ad_peer_destroy(struct lws *wsi);
/* The record of a connection accepted by ad_peer_accept(), or NULL. */
struct ad_peer *ad_peer_of(struct lws *wsi);
/* The connection became a WebSocket: it leaves the HTTP count. */
void ad_peer_upgraded(struct lws *wsi);

/*
 * An HTTP exchange on wsi has been answered and lws is about to read the
 * next one: remembers how much of the byte stream lws had taken off the
 * socket by then.
 */
void ad_peer_mark_exchange(struct lws *wsi);
/*
 * True if the request whose headers lws has just parsed may have come out
 * of bytes lws read before the previous exchange ended (pipelining), as
 * opposed to a read made after it.  Errs on the side of true.
 */
bool ad_peer_maybe_pipelined(struct lws *wsi);

/*
 * The address of the client behind wsi's request: the TCP peer, or, when
 * the peer is a trusted proxy, the rightmost address of X-Forwarded-For
 * that is not a trusted proxy itself (see README: security.trusted_proxies).
 * Headers must still be available (an HTTP request, or the upgrade).
 * ret_via, if not NULL, gets the TCP peer's address.
 */
void ad_peer_client_ip(struct lws *wsi, uint8_t out[16], uint8_t ret_via[16]);

/* Open HTTP connections (not yet upgraded) of key's address. */
uint32_t ad_peer_http_count(const uint8_t key[16]);

void ad_peer_free_all(void);

#endif
