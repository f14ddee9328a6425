/*
 * test_rxguard.c - the frame check and the header watch of
 * src/transport/rxguard.c, fed whole and one byte at a time.
 */
#include "check.h"
#include "rxguard.h"

#include <stdbool.h>

/* rxguard.c reports to ws.c; here nothing listens. */
void ad_ws_protocol_error(struct lws *wsi, const char *why);
void ad_ws_protocol_error(struct lws *wsi, const char *why)
{
	(void)wsi;
	(void)why;
}
void ad_ws_peer_close_seen(struct lws *wsi);
void ad_ws_peer_close_seen(struct lws *wsi)
{
	(void)wsi;
}

/* A masked client frame into out; returns its length. */
static size_t frame(uint8_t *out, uint8_t b0, const uint8_t *p, size_t n, bool mask)
{
	static const uint8_t key[4] = { 0x11, 0x22, 0x33, 0x44 };
	size_t o = 0;

	out[o++] = b0;
	if (n < 126) {
		out[o++] = (uint8_t)((mask ? 0x80 : 0) | n);
	} else {
		out[o++] = (uint8_t)((mask ? 0x80 : 0) | 126);
		out[o++] = (uint8_t)(n >> 8);
		out[o++] = (uint8_t)n;
	}
	if (mask) {
		memcpy(out + o, key, 4);
		o += 4;
	}
	for (size_t i = 0; i < n; i++)
		out[o + i] = mask ? p[i] ^ key[i & 3] : p[i];
	return o + n;
}

static void ws_guard(struct ad_rxguard *g)
{
	memset(g, 0, sizeof(*g));
	g->fd = 0; /* set_mode wants a guarded descriptor */
	ad_rxguard_set_mode(g, AD_RXG_WS);
}

/*
 * Scans buf whole and byte by byte; both must agree: how many bytes pass
 * and why (NULL: none failed).
 */
static void expect(const uint8_t *buf, size_t n, size_t pass, const char *why)
{
	struct ad_rxguard g;
	bool pc;
	size_t got, at = n;

	ws_guard(&g);
	got = ad_rxguard_scan_ws(&g, buf, n, &pc);
	CHECK(got == pass);
	CHECK(why ? g.why && !strcmp(g.why, why) : !g.why);
	if (got != pass || (why ? !g.why || strcmp(g.why, why) : !!g.why))
		fprintf(stderr, "  whole: passed %zu of %zu (want %zu), why %s (want %s)\n", got, n,
			pass, g.why ? g.why : "-", why ? why : "-");
	ws_guard(&g);
	for (size_t i = 0; i < n; i++)
		if (!ad_rxguard_scan_ws(&g, buf + i, 1, &pc) && at == n)
			at = i;
	CHECK(at == pass);
	CHECK(why ? g.why && !strcmp(g.why, why) : !g.why);
}

int main(void)
{
	uint8_t buf[1024], big[300] = { 0 }, code[4];
	size_t n, m;
	struct ad_rxguard g;
	bool pc;

	/* Valid: text, a fragmented message with a ping inside, a close. */
	n = frame(buf, 0x81, (const uint8_t *)"{}", 2, true);
	n += frame(buf + n, 0x01, (const uint8_t *)"[", 1, true);
	n += frame(buf + n, 0x89, (const uint8_t *)"p", 1, true);
	n += frame(buf + n, 0x80, (const uint8_t *)"]", 1, true);
	n += frame(buf + n, 0x82, big, sizeof(big), true);
	code[0] = 0x03, code[1] = 0xe8; /* 1000 */
	n += frame(buf + n, 0x88, code, 2, true);
	expect(buf, n, n, NULL);

	/* Each violation stops at the byte that shows it. */
	m = frame(buf, 0x81, (const uint8_t *)"{}", 2, true);
	n = frame(buf + m, 0x81, (const uint8_t *)"{}", 2, false);
	expect(buf, m + n, m + 1, "unmasked frame");
	n = frame(buf, 0x89, big, 126, true);
	expect(buf, n, 1, "control frame over 125 bytes");
	n = frame(buf, 0xc1, (const uint8_t *)"x", 1, true);
	expect(buf, n, 0, "reserved bits set");
	n = frame(buf, 0x83, (const uint8_t *)"x", 1, true);
	expect(buf, n, 0, "unknown opcode");
	n = frame(buf, 0x09, (const uint8_t *)"x", 1, true);
	expect(buf, n, 0, "fragmented control frame");
	n = frame(buf, 0x80, (const uint8_t *)"x", 1, true);
	expect(buf, n, 0, "continuation outside a message");
	m = frame(buf, 0x01, (const uint8_t *)"x", 1, true);
	n = frame(buf + m, 0x81, (const uint8_t *)"x", 1, true);
	expect(buf, m + n, m, "new message inside a fragmented one");
	n = frame(buf, 0x88, code, 1, true);
	expect(buf, n, 1, "close frame of 1 byte");
	for (unsigned c = 0; c <= 65535; c++) {
		if (c > 5100 && c < 65535)
			c = 65535;
		code[0] = (uint8_t)(c >> 8), code[1] = (uint8_t)c;
		n = frame(buf, 0x88, code, 2, true);
		if (ad_close_code_valid(c))
			expect(buf, n, n, NULL);
		else
			expect(buf, n, 7, "invalid close code");
	}
	CHECK(ad_close_code_valid(1000) && ad_close_code_valid(1012) && ad_close_code_valid(4999));
	CHECK(!ad_close_code_valid(1005) && !ad_close_code_valid(1015) && !ad_close_code_valid(5000));

	/* After a violation, the peer's close frame is still noticed. */
	n = frame(buf, 0x81, (const uint8_t *)"x", 1, false);
	code[0] = 0x03, code[1] = 0xe8;
	n += frame(buf + n, 0x88, code, 2, true);
	ws_guard(&g);
	CHECK(ad_rxguard_scan_ws(&g, buf, n, &pc) == 1 && pc && g.mode == AD_RXG_FAILED);

	/* Headers: a block ending with the read may become a WebSocket. */
	memset(&g, 0, sizeof(g));
	g.fd = 0;
	ad_rxguard_set_mode(&g, AD_RXG_HEADERS);
	ad_rxguard_scan_headers(&g, (const uint8_t *)"GET /ws HTTP/1.1\r\nHost: x\r\n", 27);
	CHECK(!ad_rxguard_upgrade_ok(&g));
	ad_rxguard_scan_headers(&g, (const uint8_t *)"\r\n", 2);
	CHECK(ad_rxguard_upgrade_ok(&g));
	/* ... but not with bytes behind it. */
	ad_rxguard_set_mode(&g, AD_RXG_HEADERS);
	ad_rxguard_scan_headers(&g, (const uint8_t *)"GET /ws HTTP/1.1\n\n\x81", 19);
	CHECK(!ad_rxguard_upgrade_ok(&g));
	return check_summary("rxguard");
}
