/*
 * rxguard.c - client bytes checked before libwebsockets parses them (see
 * rxguard.h for why).
 *
 * This file defines recv() and SSL_read().  The executable's definitions
 * come first in symbol lookup, so lws's calls (and every other library's)
 * land here; a descriptor with no guard goes on to the real function at
 * once: recvfrom() for recv(), and the SSL_read() found behind this one
 * with dlsym(RTLD_NEXT).  A TLS connection's ciphertext passes through
 * recv() untouched (OpenSSL reads the socket with it) and its plaintext is
 * checked in SSL_read().  Guards are registered and looked up only on the
 * loop thread; other threads never read a guarded descriptor.
 */
#include "rxguard.h"
#include "ws.h"

#include <dlfcn.h>
#include <errno.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

/* Guards by descriptor; sized once at start, so lookups never race a
 * reallocation. */
static struct ad_rxguard **by_fd;
static size_t n_fd;

typedef int (*ssl_read_fn)(SSL *ssl, void *buf, int num);
static ssl_read_fn real_ssl_read;

int ad_rxguard_init(void)
{
	struct rlimit rl;
	size_t n = 65536;

	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur > n)
		n = rl.rlim_cur > (1u << 20) ? (1u << 20) : (size_t)rl.rlim_cur;
	if (!by_fd) {
		/* Untouched pages of a large calloc cost no memory. */
		if (!(by_fd = calloc(n, sizeof(*by_fd))))
			return -1;
		n_fd = n;
	}
	if (!real_ssl_read)
		real_ssl_read = (ssl_read_fn)dlsym(RTLD_NEXT, "SSL_read");
	return 0;
}

void ad_rxguard_free(void)
{
	free(by_fd);
	by_fd = NULL;
	n_fd = 0;
}

static struct ad_rxguard *guard_of(int fd)
{
	return fd >= 0 && (size_t)fd < n_fd ? by_fd[fd] : NULL;
}

void ad_rxguard_attach(struct ad_rxguard *g, struct lws *wsi, bool tls)
{
	int fd = lws_get_socket_fd(wsi);

	memset(g, 0, sizeof(*g));
	g->wsi = wsi;
	g->fd = -1;
	g->tls = tls;
	if (fd < 0 || (size_t)fd >= n_fd)
		return; /* not guarded: upgrades are refused (see upgrade_ok) */
	g->fd = fd;
	g->mode = AD_RXG_HEADERS;
	g->eol = 1; /* a request starts at a line start */
	by_fd[fd] = g;
}

void ad_rxguard_detach(struct ad_rxguard *g)
{
	lws_sul_cancel(&g->sul);
	if (g->fd >= 0 && (size_t)g->fd < n_fd && by_fd[g->fd] == g)
		by_fd[g->fd] = NULL;
	g->fd = -1;
	g->mode = AD_RXG_OFF;
}

void ad_rxguard_set_mode(struct ad_rxguard *g, enum ad_rxg_mode mode)
{
	if (g->fd < 0 || g->mode == AD_RXG_FAILED)
		return;
	g->mode = (uint8_t)mode;
	if (mode == AD_RXG_HEADERS) {
		g->eol = 1;
		g->at_header_end = false;
		g->overread = false;
		g->req_start_us = 0;
	} else if (mode == AD_RXG_WS) {
		g->hdr_len = 0;
		g->hdr_need = 2;
		g->payload_left = 0;
		g->in_message = false;
	}
}

bool ad_rxguard_upgrade_ok(const struct ad_rxguard *g)
{
	return g->fd >= 0 && g->mode == AD_RXG_HEADERS && g->at_header_end && !g->overread;
}

bool ad_close_code_valid(unsigned code)
{
	/* 1004-1006 and 1015 are reserved; 1016-2999 unassigned; 1012-1014
	 * are registered (service restart, try again later, bad gateway). */
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
	       (code >= 3000 && code <= 4999);
}

/* ---- headers --------------------------------------------------------------- */

void ad_rxguard_scan_headers(struct ad_rxguard *g, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];

		if (g->at_header_end) {
			/* Bytes behind a request, in lws's hands now. */
			g->at_header_end = false;
			g->overread = true;
			g->req_start_us = 0;
			g->eol = 1;
		}
		if (!g->req_start_us)
			g->req_start_us = lws_now_usecs();
		/*
		 * lws ends a header block at a line feed that starts a line
		 * (parsers.c, WSI_TOKEN_NAME_PART), a carriage return before
		 * it being optional; so does this.
		 */
		if (c == '\n') {
			if (g->eol)
				g->at_header_end = true;
			g->eol = 1;
		} else if (c == '\r' && g->eol == 1) {
			g->eol = 2;
		} else if (c != '\r') {
			g->eol = 0;
		}
	}
}

/* ---- WebSocket frames ------------------------------------------------------ */

/*
 * Checks the header byte just added (at index g->hdr_len - 1); returns the
 * violation or NULL.  Called only while not FAILED.
 */
static const char *check_header_byte(struct ad_rxguard *g)
{
	uint8_t b0 = g->hdr[0], op = b0 & 0x0f;

	if (g->hdr_len == 1) {
		if (b0 & 0x70)
			return "reserved bits set";
		if (op > 2 && op != 8 && op != 9 && op != 10)
			return "unknown opcode";
		if ((op & 8) && !(b0 & 0x80))
			return "fragmented control frame";
		if (op == 0 && !g->in_message)
			return "continuation outside a message";
		if ((op == 1 || op == 2) && g->in_message)
			return "new message inside a fragmented one";
		return NULL;
	}
	if (g->hdr_len == 2) {
		uint8_t len7 = g->hdr[1] & 0x7f;

		if (!(g->hdr[1] & 0x80))
			return "unmasked frame";
		if ((op & 8) && len7 > 125)
			return "control frame over 125 bytes";
		if (op == 8 && len7 == 1)
			return "close frame of 1 byte";
		return NULL;
	}
	if (g->hdr_len == 3 && (g->hdr[1] & 0x7f) == 127 && (g->hdr[2] & 0x80))
		return "frame length over 2^63";
	return NULL;
}

/* The frame header is complete: length, and the message state. */
static void header_done(struct ad_rxguard *g)
{
	uint8_t len7 = g->hdr[1] & 0x7f, op = g->hdr[0] & 0x0f;
	uint64_t len = len7;
	int ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;

	if (ext) {
		len = 0;
		for (int i = 0; i < ext; i++)
			len = len << 8 | g->hdr[2 + i];
	}
	g->opcode = op;
	g->payload_left = len;
	g->payload_pos = 0;
	if (!(op & 8))
		g->in_message = !(g->hdr[0] & 0x80);
	g->hdr_len = 0; /* the bytes stay: mask_key() reads them */
}

/* The mask key of the frame header in g->hdr. */
static const uint8_t *mask_key(const struct ad_rxguard *g)
{
	uint8_t len7 = g->hdr[1] & 0x7f;

	return g->hdr + 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
}

size_t ad_rxguard_scan_ws(struct ad_rxguard *g, const uint8_t *p, size_t n,
			  bool *ret_peer_close)
{
	size_t i = 0, pass = n;

	*ret_peer_close = false;
	while (i < n) {
		if (!g->hdr_need && !g->payload_left)
			g->hdr_need = 2; /* between frames */
		if (g->hdr_need) {
			/* Collecting a frame header. */
			const char *why;

			g->hdr[g->hdr_len++] = p[i];
			if (g->hdr_len == 2) {
				uint8_t len7 = p[i] & 0x7f;

				g->hdr_need = (uint8_t)(2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) +
							(p[i] & 0x80 ? 4 : 0));
			}
			if (g->mode != AD_RXG_FAILED && (why = check_header_byte(g))) {
				g->mode = AD_RXG_FAILED;
				g->why = why;
				pass = i;
			}
			i++;
			if (g->hdr_len < g->hdr_need)
				continue;
			/* hdr keeps the mask key while the payload is read. */
			g->hdr_need = 0;
			header_done(g);
			if (g->payload_left)
				continue;
		} else {
			/* Inside a payload: only a close frame's code is looked at. */
			uint64_t take = n - i;

			if (take > g->payload_left)
				take = g->payload_left;
			while (g->opcode == 8 && g->payload_pos < 2 && take) {
				const uint8_t *key = mask_key(g);
				uint8_t b = p[i];

				if (g->hdr[1] & 0x80)
					b ^= key[g->payload_pos & 3];
				g->close_code[g->payload_pos++] = b;
				i++;
				take--;
				g->payload_left--;
				if (g->payload_pos == 2 && g->mode != AD_RXG_FAILED &&
				    !ad_close_code_valid((unsigned)g->close_code[0] << 8 |
							 g->close_code[1])) {
					g->mode = AD_RXG_FAILED;
					g->why = "invalid close code";
					pass = i - 1;
				}
			}
			i += take;
			g->payload_left -= take;
			g->payload_pos += take;
			if (g->payload_left)
				continue;
		}
		/* A frame ended here. */
		if (g->opcode == 8 && g->mode == AD_RXG_FAILED)
			*ret_peer_close = true;
		g->hdr_len = 0;
		g->hdr_need = 2;
	}
	return pass;
}

/* ---- the read path --------------------------------------------------------- */

/*
 * Tells ws.c, from a timer due at once: by then lws has parsed the bytes
 * before the violation, so the messages that came ahead of it are served.
 */
static void report(lws_sorted_usec_list_t *sul)
{
	struct ad_rxguard *g = lws_container_of(sul, struct ad_rxguard, sul);

	ad_ws_protocol_error(g->wsi, g->why);
	if (g->peer_close)
		ad_ws_peer_close_seen(g->wsi);
}

/* Notes the client's close frame, seen after a violation. */
static void peer_closed(struct ad_rxguard *g)
{
	g->peer_close = true;
	if (!lws_dll2_is_detached(&g->sul.list))
		return; /* report() will tell */
	ad_ws_peer_close_seen(g->wsi);
}

/* How one connection is read: plain (recv) or TLS (SSL_read). */
struct reader {
	int fd;
	SSL *ssl;
};

/* A read; returns like recv() (plain) or SSL_read() (TLS). */
static long do_read(const struct reader *r, void *buf, size_t len)
{
	if (r->ssl)
		return real_ssl_read(r->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
	return recvfrom(r->fd, buf, len, 0, NULL, NULL);
}

/*
 * The guarded read: returns what lws should see, in the convention of the
 * reader (for TLS, a return <= 0 leaves OpenSSL's error state as the real
 * SSL_read() left it).
 */
static long counted_read(struct ad_rxguard *g, const struct reader *r, void *buf, size_t len)
{
	long n = do_read(r, buf, len);

	if (n > 0)
		g->rx_bytes += (uint64_t)n;
	return n;
}

static long guarded_read(struct ad_rxguard *g, const struct reader *r, uint8_t *buf,
			 size_t len)
{
	long n;
	size_t pass;
	bool peer_close = false;

	switch (g->mode) {
	case AD_RXG_HEADERS:
		n = counted_read(g, r, buf, len);
		if (n > 0)
			ad_rxguard_scan_headers(g, buf, (size_t)n);
		return n;
	case AD_RXG_WS:
		n = counted_read(g, r, buf, len);
		if (n <= 0)
			return n;
		pass = ad_rxguard_scan_ws(g, buf, (size_t)n, &peer_close);
		if (g->mode != AD_RXG_FAILED)
			return n;
		/* The first violation: lws gets what came before it. */
		g->peer_close = peer_close;
		lws_sul_schedule(lws_get_context(g->wsi), 0, &g->sul, report, 0);
		if (pass)
			return (long)pass;
		break;
	case AD_RXG_FAILED:
		break;
	default:
		return counted_read(g, r, buf, len);
	}
	/*
	 * FAILED: read and discard until the socket has nothing more (or
	 * ends), then return that last result, so lws goes back to poll (or
	 * sees the end) in the usual way.
	 */
	while ((n = counted_read(g, r, buf, len)) > 0) {
		(void)ad_rxguard_scan_ws(g, buf, (size_t)n, &peer_close);
		if (peer_close)
			peer_closed(g);
	}
	return n;
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	struct ad_rxguard *g = guard_of(fd);
	struct reader r = { fd, NULL };

	if (!g || g->tls || flags)
		return recvfrom(fd, buf, len, flags, NULL, NULL);
	return guarded_read(g, &r, buf, len);
}

int SSL_read(SSL *ssl, void *buf, int num)
{
	struct ad_rxguard *g;
	struct reader r;

	if (!real_ssl_read)
		real_ssl_read = (ssl_read_fn)dlsym(RTLD_NEXT, "SSL_read");
	g = guard_of(SSL_get_fd(ssl));
	if (!g || !g->tls || num <= 0)
		return real_ssl_read(ssl, buf, num);
	r.fd = g->fd;
	r.ssl = ssl;
	return (int)guarded_read(g, &r, buf, (size_t)num);
}
