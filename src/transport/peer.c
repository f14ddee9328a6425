/*
 * peer.c - per-address connection counts and the per-connection record.
 *
 * Why the byte mark: lws 4.1 keeps bytes it read past the end of one HTTP
 * request on the connection's buffer list and parses the next request from
 * there once the first is answered.  If that next request has a body, its
 * body loop (lws_http_action() in lws 4.1.6) reads the buffer list from its
 * head again, which still holds the request's own header bytes, and when
 * those run out it calls the body-completion callback forever without
 * consuming anything: the loop never returns to poll, and every turn
 * dispatches and allocates.  No callback can break that loop safely, so
 * actiond refuses such a request before lws gets there (see http.c).  To
 * tell a request read from the socket after the previous answer from one
 * left over in lws's buffer, it compares how many bytes lws has read (every
 * read passes through rxguard.c, which counts them: for TLS, the plaintext
 * SSL_read() handed out) with the figure at the end of the previous
 * exchange: equal means no read happened since, so the request came from
 * the buffer.
 */
#include "peer.h"
#include "ipkey.h"
#include "log.h"
#include "pg.h"
#include "server.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* ---- counters by address ------------------------------------------------- */

struct ad_ip_slot {
	uint8_t key[16];
	uint32_t count; /* 0 = free */
};

static size_t slot_hash(const uint8_t key[16])
{
	uint64_t h = 1469598103934665603ull;

	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 1099511628211ull;
	return (size_t)h;
}

/* The slot holding key, or the free slot where it would go; NULL if empty. */
static struct ad_ip_slot *slot_find(const struct ad_iptab *t, const uint8_t key[16])
{
	size_t i;

	if (!t->cap)
		return NULL;
	i = slot_hash(key) & (t->cap - 1);
	while (t->slots[i].count && memcmp(t->slots[i].key, key, 16))
		i = (i + 1) & (t->cap - 1);
	return &t->slots[i];
}

/* Keeps the table at most half full; false on allocation failure. */
static bool grow(struct ad_iptab *t)
{
	size_t ncap;
	struct ad_ip_slot *n;

	if (t->used + 1 <= t->cap / 2)
		return true;
	ncap = t->cap ? t->cap * 2 : 256;
	n = calloc(ncap, sizeof(*n));
	if (!n)
		return false;
	for (size_t k = 0; k < t->cap; k++) {
		size_t i;

		if (!t->slots[k].count)
			continue;
		i = slot_hash(t->slots[k].key) & (ncap - 1);
		while (n[i].count)
			i = (i + 1) & (ncap - 1);
		n[i] = t->slots[k];
	}
	free(t->slots);
	t->slots = n;
	t->cap = ncap;
	return true;
}

uint32_t ad_iptab_count(const struct ad_iptab *t, const uint8_t key[16])
{
	const struct ad_ip_slot *s = slot_find(t, key);

	return s ? s->count : 0;
}

bool ad_iptab_take(struct ad_iptab *t, const uint8_t key[16], uint32_t max)
{
	struct ad_ip_slot *s;

	if (!grow(t))
		return false;
	s = slot_find(t, key);
	if (s->count >= max)
		return false;
	if (!s->count++) {
		memcpy(s->key, key, 16);
		t->used++;
	}
	return true;
}

void ad_iptab_release(struct ad_iptab *t, const uint8_t key[16])
{
	struct ad_ip_slot *s = slot_find(t, key);
	size_t i, j;

	if (!s || !s->count || --s->count)
		return;
	/* Backward-shift deletion keeps linear probing chains intact. */
	t->used--;
	i = (size_t)(s - t->slots);
	j = i;
	for (;;) {
		size_t home;

		j = (j + 1) & (t->cap - 1);
		if (!t->slots[j].count)
			break;
		home = slot_hash(t->slots[j].key) & (t->cap - 1);
		if ((j > i && (home <= i || home > j)) ||
		    (j < i && (home <= i && home > j))) {
			t->slots[i] = t->slots[j];
			t->slots[j].count = 0;
			i = j;
		}
	}
}

void ad_iptab_free(struct ad_iptab *t)
{
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

/* ---- connections ---------------------------------------------------------- */

static struct ad_iptab http_ips;

static bool is_trusted(const uint8_t ip[16])
{
	for (size_t i = 0; i < ad_srv.cfg.n_trusted_proxies; i++)
		if (ad_cidr_match(&ad_srv.cfg.trusted_proxies[i], ip))
			return true;
	return false;
}

int ad_peer_accept(struct lws *wsi)
{
	struct ad_peer *p = calloc(1, sizeof(*p));

	if (!p)
		return -1;
	ad_peer_ip(wsi, p->ip);
	ad_ip_key(p->ip, p->key);
	p->trusted = is_trusted(p->ip);
	/*
	 * A trusted proxy carries the connections of many clients, and which
	 * client a connection is for is known only from its headers: the cap
	 * per address would throttle everyone behind the proxy, so it is not
	 * applied to it.  Its clients meet the WebSocket cap and the rate
	 * limits under their own addresses.
	 */
	if (!p->trusted) {
		if (!ad_iptab_take(&http_ips, p->key, ad_srv.cfg.max_http_conns_per_ip)) {
			free(p);
			ad_srv.http_refused++;
			return -1;
		}
		p->http_counted = true;
	}
	ad_rxguard_attach(&p->rx, wsi, ad_srv.tls);
	lws_set_opaque_user_data(wsi, p);
	return 0;
}

struct ad_peer *ad_peer_of(struct lws *wsi)
{
	const struct lws_protocols *proto = lws_get_protocol(wsi);

	/*
	 * Only client connections (HTTP, then WebSocket: the actiond.v1
	 * protocol) carry a peer; the raw-file wsis of the database and of
	 * outbound HTTP keep their own opaque data (pg.c, http_client.c).
	 */
	if (!proto || !proto->name || strcmp(proto->name, "actiond.v1") != 0)
		return NULL;
	return lws_get_opaque_user_data(wsi);
}

static void uncount(struct ad_peer *p)
{
	if (p->http_counted) {
		ad_iptab_release(&http_ips, p->key);
		p->http_counted = false;
	}
}

void ad_peer_upgraded(struct lws *wsi)
{
	struct ad_peer *p = ad_peer_of(wsi);

	/* It stays: the frame check (rxguard.c) reads through it. */
	if (p)
		uncount(p);
}

void ad_peer_destroy(struct lws *wsi)
{
	struct ad_peer *p = ad_peer_of(wsi);

	if (!p)
		return;
	uncount(p);
	ad_rxguard_detach(&p->rx);
	lws_set_opaque_user_data(wsi, NULL);
	free(p);
}

uint32_t ad_peer_http_count(const uint8_t key[16])
{
	return ad_iptab_count(&http_ips, key);
}

void ad_peer_mark_exchange(struct lws *wsi)
{
	struct ad_peer *p = ad_peer_of(wsi);

	if (!p)
		return;
	p->marked = true;
	p->rx_mark = p->rx.rx_bytes;
	ad_rxguard_set_mode(&p->rx, AD_RXG_HEADERS);
}

bool ad_peer_maybe_pipelined(struct lws *wsi)
{
	struct ad_peer *p = ad_peer_of(wsi);

	if (!p)
		return true;
	if (!p->marked)
		return false; /* the first request: lws read it from the socket */
	return p->rx.rx_bytes == p->rx_mark;
}

/* The longest X-Forwarded-For walked, and the most entries looked at. */
#define XFF_MAX 2048
#define XFF_HOPS 32

/*
 * Strips an entry of X-Forwarded-For down to its address: spaces around
 * it, and the brackets and port of "[v6]:port" or the port of "v4:port".
 */
static int xff_entry(const char *s, size_t n, uint8_t out[16])
{
	const char *colon;

	while (n && (*s == ' ' || *s == '\t'))
		s++, n--;
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	if (n && *s == '[') {
		const char *close = memchr(s, ']', n);

		if (!close)
			return -1;
		return ad_ip_parse(s + 1, (size_t)(close - s - 1), out);
	}
	colon = memchr(s, ':', n);
	if (colon && !memchr(colon + 1, ':', n - (size_t)(colon + 1 - s)))
		n = (size_t)(colon - s); /* a.b.c.d:port */
	return ad_ip_parse(s, n, out);
}

void ad_peer_client_ip(struct lws *wsi, uint8_t out[16], uint8_t ret_via[16])
{
	static char xff[XFF_MAX + 1];
	struct ad_peer *p = ad_peer_of(wsi);
	uint8_t peer[16], hop[16];
	int n, hops = 0;

	if (p)
		memcpy(peer, p->ip, 16);
	else
		ad_peer_ip(wsi, peer);
	if (ret_via)
		memcpy(ret_via, peer, 16);
	memcpy(out, peer, 16);
	if (!p || !p->trusted ||
	    (n = lws_hdr_total_length(wsi, WSI_TOKEN_X_FORWARDED_FOR)) <= 0)
		return;
	/* Longer than any real chain of proxies: the proxy is the client. */
	if (n > XFF_MAX || lws_hdr_copy(wsi, xff, sizeof(xff), WSI_TOKEN_X_FORWARDED_FOR) <= 0)
		return;
	/*
	 * From the right: each trusted proxy names the address it got the
	 * request from; the first that is not one of ours is the client.  An
	 * entry that is not an address ends the walk at the proxy that wrote
	 * it, which is as far as trust reaches.
	 */
	for (size_t end = (size_t)n; hops < XFF_HOPS; hops++) {
		size_t start = end;

		while (start && xff[start - 1] != ',')
			start--;
		if (xff_entry(xff + start, end - start, hop))
			return;
		memcpy(out, hop, 16);
		if (!is_trusted(hop) || !start)
			return;
		end = start - 1;
	}
}

void ad_peer_free_all(void)
{
	ad_iptab_free(&http_ips);
}
