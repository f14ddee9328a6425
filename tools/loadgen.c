/*
 * actiond-loadgen - JSON-RPC 2.0 over WebSocket load generator.
 *
 * Single-threaded, raw sockets + level-triggered epoll, a minimal RFC 6455
 * client (ws:// only).  Keeps exactly K requests in flight on each of C
 * connections; every reply (any text frame carrying a top-level "id")
 * triggers one replacement request on the same connection.
 *
 * Per epoll wake-up per connection: one read() of up to 64 KiB, parse every
 * complete frame, then all replacement requests (and pongs) go out in one
 * write().  No allocation per message: per-connection buffers are allocated
 * once and only grow for unusually large frames.
 *
 * Latency: CLOCK_MONOTONIC, from just before the write() that carried the
 * request to just after the read() that returned the reply.  Histogram is
 * log-linear (128 sub-buckets per power of two, < 0.8 % relative error).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK (64u * 1024u)
#define MAX_EVENTS 512
#define MAX_PENDING_CONNECTS 256
#define MAX_HANDSHAKE 16384u
#define MAX_FRAME (64ull * 1024 * 1024)
#define MAX_HEADERS 32
#define DRAIN_NS (2ull * 1000000000ull)

/* ------------------------------------------------------------------ */
/* small utilities                                                     */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (!q) {
		fprintf(stderr, "actiond-loadgen: out of memory\n");
		exit(3);
	}
	return q;
}

static uint32_t rng_state = 2463534242u;

static uint32_t rng32(void)
{
	uint32_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	rng_state = x;
	return x;
}

/* ------------------------------------------------------------------ */
/* SHA-1 and base64, only for the handshake                            */

static uint32_t rol32(uint32_t v, int s)
{
	return (v << s) | (v >> (32 - s));
}

static void sha1_block(uint32_t h[5], const uint8_t *p)
{
	uint32_t w[80], a, b, c, d, e, f, k, t;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
	for (i = 16; i < 80; i++)
		w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
	a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4];
	for (i = 0; i < 80; i++) {
		if (i < 20) {
			f = (b & c) | (~b & d);
			k = 0x5A827999u;
		} else if (i < 40) {
			f = b ^ c ^ d;
			k = 0x6ED9EBA1u;
		} else if (i < 60) {
			f = (b & c) | (b & d) | (c & d);
			k = 0x8F1BBCDCu;
		} else {
			f = b ^ c ^ d;
			k = 0xCA62C1D6u;
		}
		t = rol32(a, 5) + f + e + k + w[i];
		e = d;
		d = c;
		c = rol32(b, 30);
		b = a;
		a = t;
	}
	h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

static void sha1(const void *data, size_t len, uint8_t out[20])
{
	uint32_t h[5] = { 0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u,
			  0xC3D2E1F0u };
	const uint8_t *p = data;
	uint8_t tail[128];
	size_t n = len, rest, tl;
	uint64_t bits = (uint64_t)len * 8;
	int i;

	while (n >= 64) {
		sha1_block(h, p);
		p += 64;
		n -= 64;
	}
	rest = n;
	memset(tail, 0, sizeof(tail));
	memcpy(tail, p, rest);
	tail[rest] = 0x80;
	tl = rest + 1 + 8 <= 64 ? 64 : 128;
	for (i = 0; i < 8; i++)
		tail[tl - 1 - (size_t)i] = (uint8_t)(bits >> (8 * i));
	sha1_block(h, tail);
	if (tl == 128)
		sha1_block(h, tail + 64);
	for (i = 0; i < 5; i++) {
		out[4 * i] = (uint8_t)(h[i] >> 24);
		out[4 * i + 1] = (uint8_t)(h[i] >> 16);
		out[4 * i + 2] = (uint8_t)(h[i] >> 8);
		out[4 * i + 3] = (uint8_t)h[i];
	}
}

static void base64(const uint8_t *in, size_t n, char *out)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i;
	char *o = out;

	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		*o++ = tab[v >> 18];
		*o++ = tab[(v >> 12) & 63];
		*o++ = tab[(v >> 6) & 63];
		*o++ = tab[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		*o++ = tab[v >> 18];
		*o++ = tab[(v >> 12) & 63];
		*o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
		*o++ = '=';
	}
	*o = '\0';
}

/* ------------------------------------------------------------------ */
/* latency histogram: index = shift * 128 + (v >> shift)               */

#define SUB_BITS 7
#define SUB (1u << SUB_BITS)
#define HIST_BUCKETS ((64u - SUB_BITS) * SUB + 2 * SUB)

struct hist {
	uint64_t count[HIST_BUCKETS];
	uint64_t total;
	uint64_t max;
};

static unsigned hist_index(uint64_t v)
{
	unsigned msb = v ? 63u - (unsigned)__builtin_clzll(v) : 0u;
	unsigned shift = msb > SUB_BITS ? msb - SUB_BITS : 0u;

	return shift * SUB + (unsigned)(v >> shift);
}

static void hist_bucket(unsigned idx, uint64_t *lo, uint64_t *width)
{
	if (idx < 2 * SUB) {
		*lo = idx;
		*width = 1;
	} else {
		unsigned shift = (idx >> SUB_BITS) - 1;
		uint64_t m = idx - (uint64_t)shift * SUB;
		*lo = m << shift;
		*width = 1ull << shift;
	}
}

static inline void hist_record(struct hist *h, uint64_t v)
{
	h->count[hist_index(v)]++;
	h->total++;
	if (v > h->max)
		h->max = v;
}

/* value (ns) at quantile q: midpoint of the bucket holding that rank */
static double hist_quantile(const struct hist *h, double q)
{
	uint64_t rank, cum = 0, lo, w;
	unsigned i;

	if (!h->total)
		return 0;
	rank = (uint64_t)(q * (double)h->total + 0.999999);
	if (rank < 1)
		rank = 1;
	for (i = 0; i < HIST_BUCKETS; i++) {
		cum += h->count[i];
		if (cum >= rank) {
			double v;
			hist_bucket(i, &lo, &w);
			v = (double)lo + (double)(w - 1) / 2.0;
			return v > (double)h->max ? (double)h->max : v;
		}
	}
	return (double)h->max;
}

/* ------------------------------------------------------------------ */
/* configuration                                                       */

struct opts {
	const char *unix_path; /* connect here instead of HOST:PORT */
	char host[256];
	char port[16];
	char path[1024];
	int conns;
	int inflight;
	double duration;
	double warmup;
	const char *headers[MAX_HEADERS];
	int nheaders;
	const char *subprotocol;
	const char *method;
	const char *params;
	int idle;
	double hold;
	int json;
	int server_pid;
	double connect_timeout;
};

static struct opts O;

/* ------------------------------------------------------------------ */
/* connections                                                         */

enum cstate {
	CS_NEW = 0,
	CS_CONNECTING,	/* TCP connect in progress */
	CS_HANDSHAKE,	/* upgrade request sent, waiting for 101 */
	CS_OPEN,
	CS_CLOSING,	/* we sent close, waiting for server close */
	CS_CLOSE_WAIT,	/* close frames exchanged, waiting for EOF */
	CS_DONE,
	CS_FAILED,
};

struct conn {
	int fd;
	uint8_t state;
	uint8_t out_armed;
	uint8_t in_frag;
	uint8_t frag_text;
	uint32_t inflight;
	uint64_t seq;
	/* bytes of an incomplete frame (or handshake response) carried over */
	uint8_t *carry;
	size_t carry_len, carry_cap;
	/* reassembly of fragmented messages (rare) */
	uint8_t *msg;
	size_t msg_len, msg_cap;
	/* output the kernel did not take yet */
	uint8_t *out;
	size_t out_len, out_off, out_cap;
	/* per in-flight slot: id and send time (K slots) */
	uint64_t *slot_id;
	uint64_t *sent_ns;
	char key[32];
};

#define SLOT_FREE UINT64_MAX

static struct conn *conns;
static int epfd = -1;
static struct addrinfo *server_ai;

/* counters */
static struct hist lat;
static uint64_t completed, rpc_errors, unmatched, no_id_msgs, binary_msgs;
/* syscall counts in the measured window (how well the batching works) */
static uint64_t st_reads, st_writes, st_wakeups;
static uint64_t connect_failures, upgrade_failures, unexpected_closes,
		protocol_errors;
static int n_open, n_failed, n_pending, n_active, next_to_connect;

#define MAX_REASONS 8
static struct {
	char text[200];
	unsigned count;
} reasons[MAX_REASONS];
static int n_reasons;

static struct {
	int code;
	unsigned count;
} close_codes[16];
static int n_close_codes;

enum phase { PH_SETUP, PH_WARM, PH_MEASURE, PH_HOLD, PH_DRAIN };
static enum phase phase = PH_SETUP;
static uint64_t t_m0, t_m1;
static volatile sig_atomic_t interrupted;

/* request template: prefix + <id> + suffix */
static char *req_prefix, *req_suffix;
static size_t req_prefix_len, req_suffix_len;

/* shared buffers */
static uint8_t *rbuf;
static size_t rbuf_cap;
static uint8_t *wbuf;
static size_t wbuf_len, wbuf_cap;
static uint32_t *batch_slots;	/* slots queued in wbuf, for send time */
static size_t batch_n, batch_cap;

static void add_reason(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void add_reason(const char *fmt, ...)
{
	char tmp[200];
	va_list ap;
	int i;

	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	for (i = 0; i < n_reasons; i++)
		if (!strcmp(reasons[i].text, tmp)) {
			reasons[i].count++;
			return;
		}
	if (n_reasons < MAX_REASONS) {
		snprintf(reasons[n_reasons].text, sizeof(reasons[0].text), "%s", tmp);
		reasons[n_reasons++].count = 1;
	}
}

static void add_close_code(int code)
{
	int i;

	for (i = 0; i < n_close_codes; i++)
		if (close_codes[i].code == code) {
			close_codes[i].count++;
			return;
		}
	if (n_close_codes < 16) {
		close_codes[n_close_codes].code = code;
		close_codes[n_close_codes++].count = 1;
	}
}

static void ensure_cap(uint8_t **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return;
	size_t n = *cap ? *cap : 256;
	while (n < need)
		n *= 2;
	*buf = xrealloc(*buf, n);
	*cap = n;
}

static void conn_release(struct conn *c, enum cstate final)
{
	if (c->fd >= 0) {
		epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
	}
	if (c->state == CS_CONNECTING || c->state == CS_HANDSHAKE)
		n_pending--;
	if (c->state >= CS_OPEN && c->state <= CS_CLOSE_WAIT)
		n_open--;
	if (c->state != CS_NEW && c->state < CS_DONE)
		n_active--;
	c->state = (uint8_t)final;
	if (final == CS_FAILED)
		n_failed++;
	free(c->carry);
	free(c->msg);
	free(c->out);
	c->carry = c->msg = c->out = NULL;
	c->carry_len = c->carry_cap = c->msg_len = c->msg_cap = 0;
	c->out_len = c->out_off = c->out_cap = 0;
}

/* failure before the connection was upgraded */
static void conn_fail_setup(struct conn *c, int is_connect)
{
	if (is_connect)
		connect_failures++;
	else
		upgrade_failures++;
	conn_release(c, CS_FAILED);
}

/* the server went away while we did not expect it */
static void conn_unexpected_close(struct conn *c, int code, const char *why)
{
	if (phase != PH_DRAIN) {
		unexpected_closes++;
		add_close_code(code);
		add_reason("connection closed unexpectedly: %s", why);
	}
	conn_release(c, phase == PH_DRAIN ? CS_DONE : CS_FAILED);
}

static void set_out_interest(struct conn *c, int want)
{
	struct epoll_event ev;

	if ((int)c->out_armed == want)
		return;
	ev.events = EPOLLIN | (want ? EPOLLOUT : 0);
	ev.data.u32 = (uint32_t)(c - conns);
	epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
	c->out_armed = (uint8_t)want;
}

/* send data, keep whatever the kernel does not take; returns -1 on error */
static int conn_send(struct conn *c, const uint8_t *data, size_t len)
{
	ssize_t n = 0;

	if (c->out_len == c->out_off) {
		c->out_len = c->out_off = 0;
		n = send(c->fd, data, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				return -1;
			n = 0;
		}
		if ((size_t)n == len)
			return 0;
	}
	ensure_cap(&c->out, &c->out_cap, c->out_len + len - (size_t)n);
	memcpy(c->out + c->out_len, data + n, len - (size_t)n);
	c->out_len += len - (size_t)n;
	set_out_interest(c, 1);
	return 0;
}

static int conn_flush_out(struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == EINTR)
				continue;
			return -1;
		}
		c->out_off += (size_t)n;
	}
	c->out_len = c->out_off = 0;
	set_out_interest(c, 0);
	return 0;
}

/* ---- frame building into the shared write batch ---- */

static void wb_reserve(size_t n)
{
	ensure_cap(&wbuf, &wbuf_cap, wbuf_len + n);
}

static void mask_bytes(uint8_t *p, size_t n, uint32_t key)
{
	uint8_t k[4];
	size_t i = 0;

	memcpy(k, &key, 4);
	for (; i + 4 <= n; i += 4) {
		uint32_t v;
		memcpy(&v, p + i, 4);
		v ^= key;
		memcpy(p + i, &v, 4);
	}
	for (; i < n; i++)
		p[i] ^= k[i & 3];
}

/* frame header for a masked client frame; returns header length */
static size_t put_header(uint8_t *p, int opcode, size_t plen, uint32_t key)
{
	size_t h;

	p[0] = (uint8_t)(0x80 | opcode);
	if (plen < 126) {
		p[1] = (uint8_t)(0x80 | plen);
		h = 2;
	} else if (plen < 65536) {
		p[1] = 0x80 | 126;
		p[2] = (uint8_t)(plen >> 8);
		p[3] = (uint8_t)plen;
		h = 4;
	} else {
		int i;
		p[1] = 0x80 | 127;
		for (i = 0; i < 8; i++)
			p[2 + i] = (uint8_t)((uint64_t)plen >> (56 - 8 * i));
		h = 10;
	}
	memcpy(p + h, &key, 4);
	return h + 4;
}

static void wb_control(int opcode, const uint8_t *payload, size_t plen)
{
	uint32_t key = rng32();
	uint8_t *p;
	size_t h;

	wb_reserve(14 + plen);
	p = wbuf + wbuf_len;
	h = put_header(p, opcode, plen, key);
	if (plen)
		memcpy(p + h, payload, plen);
	mask_bytes(p + h, plen, key);
	wbuf_len += h + plen;
}

static size_t u64_to_dec(uint64_t v, char *out)
{
	char tmp[24];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

static void wb_request(struct conn *c, uint32_t slot)
{
	uint64_t id = c->seq++ * (uint64_t)O.inflight + slot;
	char digits[24];
	size_t nd = u64_to_dec(id, digits);
	size_t plen = req_prefix_len + nd + req_suffix_len;
	uint32_t key = rng32();
	uint8_t *p, *q;
	size_t h;

	wb_reserve(14 + plen);
	p = wbuf + wbuf_len;
	h = put_header(p, 1, plen, key);
	q = p + h;
	memcpy(q, req_prefix, req_prefix_len);
	memcpy(q + req_prefix_len, digits, nd);
	memcpy(q + req_prefix_len + nd, req_suffix, req_suffix_len);
	mask_bytes(q, plen, key);
	wbuf_len += h + plen;

	c->slot_id[slot] = id;
	c->inflight++;
	if (batch_n == batch_cap) {
		batch_cap = batch_cap ? batch_cap * 2 : 64;
		batch_slots = xrealloc(batch_slots, batch_cap * sizeof(*batch_slots));
	}
	batch_slots[batch_n++] = slot;
}

/* one write() for everything queued for this connection */
static int wb_flush(struct conn *c)
{
	int rc = 0;

	if (batch_n) {
		uint64_t t = now_ns();
		size_t i;
		for (i = 0; i < batch_n; i++)
			c->sent_ns[batch_slots[i]] = t;
	}
	if (wbuf_len) {
		rc = conn_send(c, wbuf, wbuf_len);
		if (phase == PH_MEASURE)
			st_writes++;
	}
	wbuf_len = 0;
	batch_n = 0;
	return rc;
}

/* ---- reply scanning ---- */

/*
 * Find the top-level "id" (non-negative integer) of a JSON object and
 * whether it has a top-level "error" member.  Returns the id or -1.
 */
static int64_t scan_reply(const uint8_t *s, size_t n, int *has_error)
{
	int depth = 0, have_id = 0, decided = 0;
	int64_t id = -1;
	size_t i = 0;

	*has_error = 0;
	while (i < n) {
		uint8_t ch = s[i];

		if (ch == '"') {
			size_t start = ++i, klen, j;
			for (;;) {
				const uint8_t *q = memchr(s + i, '"', n - i);
				size_t b;
				if (!q)
					return id;
				i = (size_t)(q - s);
				b = i;
				while (b > start && s[b - 1] == '\\')
					b--;
				if (((i - b) & 1) == 0)
					break;
				i++;
			}
			klen = i - start;
			i++;
			if (depth != 1)
				continue;
			j = i;
			while (j < n && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n' ||
					 s[j] == '\r'))
				j++;
			if (j >= n || s[j] != ':')
				continue;
			j++;
			if (klen == 2 && s[start] == 'i' && s[start + 1] == 'd') {
				uint64_t v = 0;
				int nd = 0;
				while (j < n && (s[j] == ' ' || s[j] == '\t' ||
						 s[j] == '\n' || s[j] == '\r'))
					j++;
				while (j < n && s[j] >= '0' && s[j] <= '9' && nd < 19) {
					v = v * 10 + (uint64_t)(s[j] - '0');
					j++;
					nd++;
				}
				if (nd && (j >= n || s[j] < '0' || s[j] > '9')) {
					id = (int64_t)v;
					have_id = 1;
				}
			} else if (klen == 5 && !memcmp(s + start, "error", 5)) {
				*has_error = 1;
				decided = 1;
			} else if (klen == 6 && !memcmp(s + start, "result", 6)) {
				decided = 1;
			}
			if (have_id && decided)
				return id;
			i = j;
			continue;
		}
		if (ch == '{' || ch == '[')
			depth++;
		else if (ch == '}' || ch == ']')
			depth--;
		i++;
	}
	return id;
}

static void on_message(struct conn *c, const uint8_t *p, size_t n, uint64_t now)
{
	int has_error;
	int64_t id = scan_reply(p, n, &has_error);
	uint32_t slot;

	if (id < 0 || !c->slot_id) {
		no_id_msgs++;
		return;
	}
	slot = (uint32_t)((uint64_t)id % (uint64_t)O.inflight);
	if (c->slot_id[slot] != (uint64_t)id) {
		unmatched++;
		return;
	}
	c->slot_id[slot] = SLOT_FREE;
	c->inflight--;
	if (phase == PH_MEASURE && now >= t_m0 && now < t_m1) {
		hist_record(&lat, now - c->sent_ns[slot]);
		completed++;
		if (has_error)
			rpc_errors++;
	}
	if ((phase == PH_WARM || phase == PH_MEASURE) && c->state == CS_OPEN)
		wb_request(c, slot);
}

/*
 * Parse every complete frame in buf; returns bytes consumed, or -1 if the
 * connection was closed/released.
 */
static ssize_t parse_frames(struct conn *c, uint8_t *buf, size_t len, uint64_t now)
{
	size_t off = 0;

	while (len - off >= 2) {
		uint8_t *p = buf + off;
		size_t avail = len - off, hl = 2;
		uint64_t plen = p[1] & 0x7f;
		int fin = p[0] & 0x80, op = p[0] & 0x0f, masked = p[1] & 0x80;
		uint8_t *pl;

		if (plen == 126) {
			if (avail < 4)
				break;
			plen = (uint64_t)p[2] << 8 | p[3];
			hl = 4;
		} else if (plen == 127) {
			int i;
			if (avail < 10)
				break;
			plen = 0;
			for (i = 0; i < 8; i++)
				plen = plen << 8 | p[2 + i];
			hl = 10;
		}
		if (plen > MAX_FRAME) {
			protocol_errors++;
			add_reason("protocol error: frame of %" PRIu64 " bytes", plen);
			conn_unexpected_close(c, 1009, "frame too large");
			return -1;
		}
		if (masked)
			hl += 4;
		if (avail < hl + plen)
			break;
		pl = p + hl;
		if (masked) {
			uint32_t key;
			memcpy(&key, p + hl - 4, 4);
			mask_bytes(pl, (size_t)plen, key);
		}
		off += hl + (size_t)plen;

		switch (op) {
		case 0x1: /* text */
		case 0x2: /* binary */
			if (c->in_frag) {
				protocol_errors++;
				add_reason("protocol error: new data frame inside fragmented message");
				conn_unexpected_close(c, 1002, "protocol error");
				return -1;
			}
			if (fin) {
				if (op == 0x1)
					on_message(c, pl, (size_t)plen, now);
				else
					binary_msgs++;
			} else {
				c->in_frag = 1;
				c->frag_text = op == 0x1;
				c->msg_len = 0;
				if (c->frag_text) {
					ensure_cap(&c->msg, &c->msg_cap, (size_t)plen);
					memcpy(c->msg, pl, (size_t)plen);
					c->msg_len = (size_t)plen;
				}
			}
			break;
		case 0x0: /* continuation */
			if (!c->in_frag) {
				protocol_errors++;
				add_reason("protocol error: unexpected continuation frame");
				conn_unexpected_close(c, 1002, "protocol error");
				return -1;
			}
			if (c->frag_text) {
				ensure_cap(&c->msg, &c->msg_cap, c->msg_len + (size_t)plen);
				memcpy(c->msg + c->msg_len, pl, (size_t)plen);
				c->msg_len += (size_t)plen;
			}
			if (fin) {
				c->in_frag = 0;
				if (c->frag_text)
					on_message(c, c->msg, c->msg_len, now);
				else
					binary_msgs++;
			}
			break;
		case 0x8: { /* close */
			int code = plen >= 2 ? (pl[0] << 8 | pl[1]) : 1005;
			if (c->state == CS_OPEN) {
				char why[160];
				int rl = plen > 2 ? (int)(plen - 2) : 0;
				if (rl > 100)
					rl = 100;
				snprintf(why, sizeof(why), "close code %d%s%.*s%s", code,
					 rl ? " reason '" : "", rl, (const char *)pl + 2,
					 rl ? "'" : "");
				/* answer the close, then drop the connection */
				wbuf_len = 0;
				batch_n = 0;
				wb_control(0x8, pl, plen >= 2 ? 2 : 0);
				wb_flush(c);
				conn_unexpected_close(c, code, why);
				return -1;
			}
			if (c->state == CS_CLOSING)
				c->state = CS_CLOSE_WAIT;
			return (ssize_t)len; /* ignore anything after close */
		}
		case 0x9: /* ping */
			if (c->state == CS_OPEN)
				wb_control(0xA, pl, (size_t)plen);
			break;
		case 0xA: /* pong */
			break;
		default:
			protocol_errors++;
			add_reason("protocol error: opcode %d", op);
			conn_unexpected_close(c, 1002, "protocol error");
			return -1;
		}
	}
	return (ssize_t)off;
}

/* ---- handshake ---- */

static void start_connect(struct conn *c)
{
	struct epoll_event ev;
	int one = 1, fd;

	fd = socket(server_ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		add_reason("socket: %s", strerror(errno));
		c->fd = -1;
		c->state = CS_CONNECTING;
		n_pending++;
		n_active++;
		conn_fail_setup(c, 1);
		return;
	}
	if (!O.unix_path)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	c->state = CS_CONNECTING;
	n_pending++;
	n_active++;
	if (connect(fd, server_ai->ai_addr, server_ai->ai_addrlen) < 0 &&
	    errno != EINPROGRESS) {
		add_reason("connect: %s", strerror(errno));
		conn_fail_setup(c, 1);
		return;
	}
	ev.events = EPOLLIN | EPOLLOUT;
	ev.data.u32 = (uint32_t)(c - conns);
	c->out_armed = 1;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		add_reason("epoll_ctl: %s", strerror(errno));
		conn_fail_setup(c, 1);
	}
}

static void send_upgrade(struct conn *c)
{
	uint8_t rnd[16];
	char req[8192];
	int n, i;
	size_t len;

	for (i = 0; i < 16; i += 4) {
		uint32_t r = rng32();
		memcpy(rnd + i, &r, 4);
	}
	base64(rnd, 16, c->key);
	n = snprintf(req, sizeof(req),
		     "GET %s HTTP/1.1\r\n"
		     "Host: %s:%s\r\n"
		     "Upgrade: websocket\r\n"
		     "Connection: Upgrade\r\n"
		     "Sec-WebSocket-Key: %s\r\n"
		     "Sec-WebSocket-Version: 13\r\n",
		     O.path, O.host, O.port, c->key);
	len = (size_t)n;
	if (O.subprotocol)
		len += (size_t)snprintf(req + len, sizeof(req) - len,
					"Sec-WebSocket-Protocol: %s\r\n", O.subprotocol);
	for (i = 0; i < O.nheaders && len < sizeof(req); i++)
		len += (size_t)snprintf(req + len, sizeof(req) - len, "%s\r\n",
					O.headers[i]);
	if (len + 3 > sizeof(req)) {
		fprintf(stderr, "actiond-loadgen: upgrade request too long\n");
		exit(2);
	}
	memcpy(req + len, "\r\n", 3);
	len += 2;
	c->state = CS_HANDSHAKE;
	if (conn_send(c, (const uint8_t *)req, len) < 0) {
		add_reason("send upgrade: %s", strerror(errno));
		conn_fail_setup(c, 1);
	}
}

/* find header value (case-insensitive name) within [hdr, end) */
static int find_header(const char *hdr, const char *end, const char *name,
		       const char **val, size_t *vlen)
{
	size_t nl = strlen(name);
	const char *p = hdr;

	while (p < end) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		if (!eol)
			eol = end;
		if ((size_t)(eol - p) > nl && p[nl] == ':' && !strncasecmp(p, name, nl)) {
			const char *v = p + nl + 1, *e = eol;
			while (v < e && (*v == ' ' || *v == '\t'))
				v++;
			while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
				e--;
			*val = v;
			*vlen = (size_t)(e - v);
			return 1;
		}
		p = eol + 2;
	}
	return 0;
}

static void start_requests(struct conn *c)
{
	uint32_t s;

	for (s = 0; s < (uint32_t)O.inflight; s++)
		wb_request(c, s);
	if (wb_flush(c) < 0)
		conn_unexpected_close(c, 1006, "write failed");
}

/* returns 1 if upgraded (leftover frames stay in carry), 0 if more needed */
static int check_handshake(struct conn *c)
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	const char *r = (const char *)c->carry, *end, *eol, *v;
	char kg[96], expect[32];
	uint8_t dig[20];
	size_t vlen, hlen;

	end = memmem(r, c->carry_len, "\r\n\r\n", 4);
	if (!end) {
		if (c->carry_len >= MAX_HANDSHAKE) {
			add_reason("upgrade failed: response headers too large");
			conn_fail_setup(c, 0);
			return -1;
		}
		return 0;
	}
	hlen = (size_t)(end - r) + 4;
	eol = memmem(r, hlen, "\r\n", 2);
	if ((size_t)(eol - r) < 12 || memcmp(r, "HTTP/1.", 7) || memcmp(r + 8, " 101", 4)) {
		add_reason("upgrade failed: %.*s", (int)(eol - r) > 120 ? 120 : (int)(eol - r), r);
		conn_fail_setup(c, 0);
		return -1;
	}
	snprintf(kg, sizeof(kg), "%s%s", c->key, guid);
	sha1(kg, strlen(kg), dig);
	base64(dig, 20, expect);
	if (!find_header(eol + 2, end + 2, "Sec-WebSocket-Accept", &v, &vlen) ||
	    vlen != strlen(expect) || memcmp(v, expect, vlen)) {
		add_reason("upgrade failed: missing or wrong Sec-WebSocket-Accept");
		conn_fail_setup(c, 0);
		return -1;
	}
	if (find_header(eol + 2, end + 2, "Sec-WebSocket-Protocol", &v, &vlen) &&
	    (!O.subprotocol || vlen != strlen(O.subprotocol) ||
	     memcmp(v, O.subprotocol, vlen))) {
		add_reason("upgrade failed: server chose subprotocol '%.*s'",
			   (int)(vlen > 60 ? 60 : vlen), v);
		conn_fail_setup(c, 0);
		return -1;
	}
	memmove(c->carry, c->carry + hlen, c->carry_len - hlen);
	c->carry_len -= hlen;
	c->state = CS_OPEN;
	n_pending--;
	n_open++;
	return 1;
}

/* keep the bytes of an incomplete frame for the next read */
static void keep_carry(struct conn *c, const uint8_t *p, size_t n)
{
	if (n)
		ensure_cap(&c->carry, &c->carry_cap, n);
	if (n && c->carry != p)
		memmove(c->carry, p, n);
	c->carry_len = n;
}

static void on_readable(struct conn *c)
{
	ssize_t n, used;
	size_t pre, total;
	uint64_t now;

	if (c->state == CS_HANDSHAKE) {
		ensure_cap(&c->carry, &c->carry_cap, c->carry_len + 4096);
		n = recv(c->fd, c->carry + c->carry_len, c->carry_cap - c->carry_len, 0);
		if (n <= 0) {
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				return;
			add_reason("upgrade failed: connection closed by server (%s)",
				   n ? strerror(errno) : "EOF");
			conn_fail_setup(c, 0);
			return;
		}
		c->carry_len += (size_t)n;
		if (check_handshake(c) <= 0)
			return;
		if (phase == PH_WARM || phase == PH_MEASURE)
			start_requests(c);
		if (c->state != CS_OPEN || !c->carry_len)
			return;
		/* frames that arrived together with the 101 */
		now = now_ns();
		used = parse_frames(c, c->carry, c->carry_len, now);
		if (used < 0)
			return;
		keep_carry(c, c->carry + used, c->carry_len - (size_t)used);
		if (wb_flush(c) < 0)
			conn_unexpected_close(c, 1006, "write failed");
		return;
	}

	pre = c->carry_len;
	if (rbuf_cap < pre + READ_CHUNK) {
		free(rbuf);
		rbuf_cap = pre + READ_CHUNK;
		rbuf = xrealloc(NULL, rbuf_cap);
	}
	if (pre)
		memcpy(rbuf, c->carry, pre);
	n = recv(c->fd, rbuf + pre, READ_CHUNK, 0);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (c->state == CS_OPEN) {
			char why[120];
			snprintf(why, sizeof(why), "%s without close frame (1006)",
				 n ? strerror(errno) : "EOF");
			conn_unexpected_close(c, 1006, why);
		} else {
			conn_release(c, CS_DONE);
		}
		return;
	}
	now = now_ns();
	if (phase == PH_MEASURE)
		st_reads++;
	total = pre + (size_t)n;
	used = parse_frames(c, rbuf, total, now);
	if (used < 0)
		return;
	keep_carry(c, rbuf + used, total - (size_t)used);
	if (wb_flush(c) < 0)
		conn_unexpected_close(c, 1006, "write failed");
}

static void on_writable(struct conn *c)
{
	if (c->state == CS_CONNECTING) {
		int err = 0;
		socklen_t el = sizeof(err);
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
		if (err) {
			add_reason("connect: %s", strerror(err));
			conn_fail_setup(c, 1);
			return;
		}
		set_out_interest(c, 0);
		send_upgrade(c);
		return;
	}
	if (conn_flush_out(c) < 0) {
		if (c->state == CS_HANDSHAKE) {
			add_reason("send upgrade: %s", strerror(errno));
			conn_fail_setup(c, 1);
		} else if (c->state == CS_OPEN) {
			conn_unexpected_close(c, 1006, "write failed");
		} else {
			conn_release(c, CS_DONE);
		}
	}
}

static void begin_close_all(void)
{
	static const uint8_t code1000[2] = { 0x03, 0xE8 };
	int i;

	for (i = 0; i < next_to_connect; i++) {
		struct conn *c = &conns[i];
		if (c->state == CS_CONNECTING || c->state == CS_HANDSHAKE) {
			conn_release(c, CS_DONE);
			continue;
		}
		if (c->state != CS_OPEN)
			continue;
		wbuf_len = 0;
		batch_n = 0;
		wb_control(0x8, code1000, 2);
		c->state = CS_CLOSING;
		if (wb_flush(c) < 0)
			conn_release(c, CS_DONE);
	}
}

/* ------------------------------------------------------------------ */
/* CPU accounting                                                      */

static double self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* utime+stime of another process in seconds, or -1 */
static double proc_cpu_s(int pid)
{
	char path[64], buf[2048], *p;
	unsigned long long ut, st;
	ssize_t n;
	int fd, field;

	if (pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p)
		return -1;
	p++;
	/* p points at " S ppid ...": field 3 is the state; utime is 14 */
	for (field = 2; field < 13 && p; field++)
		p = strchr(p + 1, ' ');
	if (!p || sscanf(p, " %llu %llu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ------------------------------------------------------------------ */
/* options                                                             */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: actiond-loadgen --url ws://HOST:PORT/PATH [options]\n"
		"  -c N                 connections (default 100)\n"
		"  -k K                 requests in flight per connection (default 16)\n"
		"  -d SECONDS           measured duration (default 10)\n"
		"  -w SECONDS           warm-up, not measured (default 2)\n"
		"  -H 'Name: value'     extra upgrade request header (repeatable)\n"
		"  --unix PATH          connect to this Unix socket; the URL still\n"
		"                       gives the Host header and the path\n"
		"  --subprotocol NAME   Sec-WebSocket-Protocol to request\n"
		"  --method NAME        JSON-RPC method (default heartbeat)\n"
		"  --params JSON        JSON-RPC params, inserted verbatim\n"
		"  --idle N --hold S    memory mode: open N idle connections, print\n"
		"                       idle_connections=N, hold S seconds, close\n"
		"  --server-pid PID     also report that process's CPU %% during the window\n"
		"  --connect-timeout S  time allowed to open all connections (default 30)\n"
		"  --json               one JSON object on stdout\n");
}

/* One address, the Unix socket at path, in getaddrinfo()'s shape. */
static int unix_addr(const char *path, struct addrinfo **out)
{
	static struct sockaddr_un sun;
	static struct addrinfo ai;

	if (!path || !*path || strlen(path) >= sizeof(sun.sun_path))
		return EAI_FAMILY;
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, path);
	ai.ai_family = AF_UNIX;
	ai.ai_socktype = SOCK_STREAM;
	ai.ai_addr = (struct sockaddr *)&sun;
	ai.ai_addrlen = (socklen_t)sizeof(sun);
	*out = &ai;
	return 0;
}

static int parse_url(const char *url)
{
	const char *p, *hs, *he, *ps, *slash;

	if (!strncmp(url, "wss://", 6)) {
		fprintf(stderr, "actiond-loadgen: wss:// is not supported (ws:// only)\n");
		return -1;
	}
	if (strncmp(url, "ws://", 5)) {
		fprintf(stderr, "actiond-loadgen: URL must start with ws://\n");
		return -1;
	}
	p = url + 5;
	slash = strchr(p, '/');
	if (!slash)
		slash = p + strlen(p);
	if (*p == '[') {
		hs = p + 1;
		he = memchr(hs, ']', (size_t)(slash - hs));
		if (!he)
			return -1;
		ps = he + 1;
	} else {
		hs = p;
		he = memchr(p, ':', (size_t)(slash - p));
		if (!he)
			he = slash;
		ps = he;
	}
	if (he == hs || (size_t)(he - hs) >= sizeof(O.host))
		return -1;
	memcpy(O.host, hs, (size_t)(he - hs));
	O.host[he - hs] = '\0';
	if (ps < slash && *ps == ':') {
		size_t pl = (size_t)(slash - ps - 1);
		if (!pl || pl >= sizeof(O.port))
			return -1;
		memcpy(O.port, ps + 1, pl);
		O.port[pl] = '\0';
	} else {
		strcpy(O.port, "80");
	}
	snprintf(O.path, sizeof(O.path), "%s", *slash ? slash : "/");
	return 0;
}

static double num_arg(const char *name, const char *v, double lo)
{
	char *end;
	double d;

	if (!v) {
		fprintf(stderr, "actiond-loadgen: %s needs a value\n", name);
		exit(2);
	}
	d = strtod(v, &end);
	if (*end || d < lo) {
		fprintf(stderr, "actiond-loadgen: bad value for %s: %s\n", name, v);
		exit(2);
	}
	return d;
}

static void json_escape_into(char *dst, size_t cap, const char *s)
{
	size_t o = 0;

	for (; *s && o + 7 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			dst[o++] = '\\';
			dst[o++] = (char)ch;
		} else if (ch < 0x20) {
			o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", ch);
		} else {
			dst[o++] = (char)ch;
		}
	}
	dst[o] = '\0';
}

static void parse_args(int argc, char **argv)
{
	const char *url = NULL;
	int i;

	O.conns = 100;
	O.inflight = 16;
	O.duration = 10;
	O.warmup = 2;
	O.method = "heartbeat";
	O.connect_timeout = 30;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

#define TAKE() (i++, v)
		if (!strcmp(a, "--url")) {
			url = TAKE();
		} else if (!strcmp(a, "--unix")) {
			O.unix_path = TAKE();
		} else if (!strcmp(a, "-c")) {
			O.conns = (int)num_arg(a, TAKE(), 1);
		} else if (!strcmp(a, "-k")) {
			O.inflight = (int)num_arg(a, TAKE(), 1);
		} else if (!strcmp(a, "-d")) {
			O.duration = num_arg(a, TAKE(), 0.001);
		} else if (!strcmp(a, "-w")) {
			O.warmup = num_arg(a, TAKE(), 0);
		} else if (!strcmp(a, "-H")) {
			if (!v) {
				fprintf(stderr, "actiond-loadgen: -H needs a value\n");
				exit(2);
			}
			if (!strchr(v, ':') || O.nheaders == MAX_HEADERS) {
				fprintf(stderr, "actiond-loadgen: bad or too many -H: %s\n", v);
				exit(2);
			}
			O.headers[O.nheaders++] = TAKE();
		} else if (!strcmp(a, "--subprotocol")) {
			O.subprotocol = TAKE();
		} else if (!strcmp(a, "--method")) {
			O.method = TAKE();
		} else if (!strcmp(a, "--params")) {
			O.params = TAKE();
		} else if (!strcmp(a, "--idle")) {
			O.idle = (int)num_arg(a, TAKE(), 1);
		} else if (!strcmp(a, "--hold")) {
			O.hold = num_arg(a, TAKE(), 0);
		} else if (!strcmp(a, "--server-pid")) {
			O.server_pid = (int)num_arg(a, TAKE(), 1);
		} else if (!strcmp(a, "--connect-timeout")) {
			O.connect_timeout = num_arg(a, TAKE(), 0.1);
		} else if (!strcmp(a, "--json")) {
			O.json = 1;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			exit(0);
		} else {
			fprintf(stderr, "actiond-loadgen: unknown option %s\n", a);
			usage(stderr);
			exit(2);
		}
#undef TAKE
		if (!v && (a[0] == '-' && strcmp(a, "--json"))) {
			fprintf(stderr, "actiond-loadgen: %s needs a value\n", a);
			exit(2);
		}
	}
	if (!url || !O.method || parse_url(url) < 0) {
		if (url)
			fprintf(stderr, "actiond-loadgen: bad URL %s\n", url);
		usage(stderr);
		exit(2);
	}
	if (O.idle)
		O.conns = O.idle;
	if (O.inflight > 1 << 20 || O.conns > 1 << 24) {
		fprintf(stderr, "actiond-loadgen: -c/-k too large\n");
		exit(2);
	}
}

static void build_template(void)
{
	static const char pre[] = "{\"jsonrpc\":\"2.0\",\"id\":";
	char m[512];
	size_t n;

	json_escape_into(m, sizeof(m), O.method);
	req_prefix = strdup(pre);
	req_prefix_len = strlen(pre);
	n = strlen(m) + (O.params ? strlen(O.params) : 0) + 64;
	req_suffix = xrealloc(NULL, n);
	if (O.params)
		snprintf(req_suffix, n, ",\"method\":\"%s\",\"params\":%s}", m, O.params);
	else
		snprintf(req_suffix, n, ",\"method\":\"%s\"}", m);
	req_suffix_len = strlen(req_suffix);
}

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_cur != RLIM_INFINITY && (rlim_t)O.conns + 16 > rl.rlim_cur)
		fprintf(stderr, "actiond-loadgen: warning: open-file limit %llu is below "
			"%d connections\n", (unsigned long long)rl.rlim_cur, O.conns);
}

static void print_errors(void)
{
	int i;

	for (i = 0; i < n_reasons; i++)
		fprintf(stderr, "actiond-loadgen: error: %s (x%u)\n", reasons[i].text,
			reasons[i].count);
	if (n_close_codes) {
		fprintf(stderr, "actiond-loadgen: unexpected close codes:");
		for (i = 0; i < n_close_codes; i++)
			fprintf(stderr, " %d(x%u)", close_codes[i].code, close_codes[i].count);
		fprintf(stderr, "\n");
	}
}

/* ------------------------------------------------------------------ */

static struct epoll_event *events;

int main(int argc, char **argv)
{
	struct sigaction sa;
	struct addrinfo hints;
	uint64_t t_setup_deadline, t_hold_end = 0, t_drain_end = 0, seed;
	double cpu0 = 0, cpu1 = 0, scpu0 = -1, scpu1 = -1;
	int i, rc, setup_failed = 0;

	parse_args(argc, argv);
	raise_nofile();

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
		seed = now_ns() ^ (uint64_t)getpid();
	rng_state = (uint32_t)(seed ^ (seed >> 32)) | 1u;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if (O.unix_path)
		rc = unix_addr(O.unix_path, &server_ai);
	else
		rc = getaddrinfo(O.host, O.port, &hints, &server_ai);
	if (rc == EAI_FAMILY) {
		fprintf(stderr, "actiond-loadgen: %s: not a usable socket path\n", O.unix_path);
		return 1;
	}
	if (rc) {
		fprintf(stderr, "actiond-loadgen: cannot resolve %s: %s\n", O.host,
			gai_strerror(rc));
		return 1;
	}

	build_template();
	conns = calloc((size_t)O.conns, sizeof(*conns));
	events = calloc(MAX_EVENTS, sizeof(*events));
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!conns || !events || epfd < 0) {
		fprintf(stderr, "actiond-loadgen: init failed\n");
		return 3;
	}
	if (!O.idle) {
		for (i = 0; i < O.conns; i++) {
			conns[i].slot_id = malloc((size_t)O.inflight * sizeof(uint64_t));
			conns[i].sent_ns = calloc((size_t)O.inflight, sizeof(uint64_t));
			if (!conns[i].slot_id || !conns[i].sent_ns) {
				fprintf(stderr, "actiond-loadgen: out of memory\n");
				return 3;
			}
			memset(conns[i].slot_id, 0xff, (size_t)O.inflight * sizeof(uint64_t));
		}
	}
	for (i = 0; i < O.conns; i++)
		conns[i].fd = -1;
	rbuf_cap = READ_CHUNK * 2;
	rbuf = xrealloc(NULL, rbuf_cap);
	wb_reserve((size_t)O.inflight * (req_prefix_len + req_suffix_len + 40) + 4096);

	t_setup_deadline = now_ns() + (uint64_t)(O.connect_timeout * 1e9);

	for (;;) {
		uint64_t now = now_ns(), deadline = 0;
		int timeout_ms, n;

		if (phase == PH_SETUP) {
			while (next_to_connect < O.conns && n_pending < MAX_PENDING_CONNECTS)
				start_connect(&conns[next_to_connect++]);
			if (interrupted || now >= t_setup_deadline) {
				for (i = 0; i < next_to_connect; i++)
					if (conns[i].state == CS_CONNECTING ||
					    conns[i].state == CS_HANDSHAKE) {
						add_reason("upgrade not completed within %.1f s",
							   O.connect_timeout);
						conn_fail_setup(&conns[i], conns[i].state ==
								CS_CONNECTING);
					}
				if (next_to_connect < O.conns) {
					add_reason("not all connections attempted (%d of %d)",
						   next_to_connect, O.conns);
					n_failed += O.conns - next_to_connect;
					next_to_connect = O.conns;
				}
			}
			if (next_to_connect == O.conns && n_open + n_failed == O.conns) {
				if (n_failed) {
					setup_failed = 1;
					phase = PH_DRAIN;
					begin_close_all();
					t_drain_end = now + DRAIN_NS;
				} else if (O.idle) {
					printf("idle_connections=%d\n", n_open);
					fflush(stdout);
					phase = PH_HOLD;
					t_hold_end = now + (uint64_t)(O.hold * 1e9);
				} else {
					phase = PH_WARM;
					t_m0 = now + (uint64_t)(O.warmup * 1e9);
					for (i = 0; i < O.conns; i++)
						if (conns[i].state == CS_OPEN)
							start_requests(&conns[i]);
				}
			}
			deadline = now + 50000000ull;
		}
		if (phase == PH_WARM) {
			if (now >= t_m0 || interrupted || n_open == 0) {
				phase = PH_MEASURE;
				t_m0 = now;
				t_m1 = now + (uint64_t)(O.duration * 1e9);
				cpu0 = self_cpu_s();
				scpu0 = proc_cpu_s(O.server_pid);
			} else {
				deadline = t_m0;
			}
		}
		if (phase == PH_MEASURE) {
			if ((interrupted || n_open == 0) && now < t_m1)
				t_m1 = now;
			if (now >= t_m1) {
				cpu1 = self_cpu_s();
				scpu1 = proc_cpu_s(O.server_pid);
				phase = PH_DRAIN;
				begin_close_all();
				t_drain_end = now + DRAIN_NS;
			} else {
				deadline = t_m1;
			}
		}
		if (phase == PH_HOLD) {
			if (now >= t_hold_end || interrupted) {
				phase = PH_DRAIN;
				begin_close_all();
				t_drain_end = now + DRAIN_NS;
			} else {
				deadline = t_hold_end;
			}
		}
		if (phase == PH_DRAIN) {
			if (n_active == 0 || now >= t_drain_end)
				break;
			deadline = t_drain_end;
		}

		timeout_ms = deadline > now ? (int)((deadline - now + 999999) / 1000000) : 0;
		n = epoll_wait(epfd, events, MAX_EVENTS, timeout_ms);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("epoll_wait");
			return 3;
		}
		if (phase == PH_MEASURE)
			st_wakeups++;
		for (i = 0; i < n; i++) {
			struct conn *c = &conns[events[i].data.u32];
			uint32_t ev = events[i].events;

			if (c->fd < 0)
				continue;
			if ((ev & (EPOLLOUT | EPOLLERR)) && c->state == CS_CONNECTING) {
				on_writable(c);
				continue;
			}
			if (ev & EPOLLOUT)
				on_writable(c);
			if (c->fd >= 0 && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
				on_readable(c);
		}
	}

	/* force-close whatever did not finish the close handshake in time */
	for (i = 0; i < next_to_connect; i++)
		if (conns[i].fd >= 0)
			conn_release(&conns[i], CS_DONE);

	{
		uint64_t errors = connect_failures + upgrade_failures + unexpected_closes +
				  protocol_errors + unmatched;
		double secs = (double)(t_m1 - t_m0) / 1e9;
		double rps = 0, lcpu = 0, scpu = -1;
		int fail = errors > 0 || rpc_errors > 0 || setup_failed;

		print_errors();
		if (setup_failed)
			fprintf(stderr, "actiond-loadgen: error: %d of %d connections failed "
				"(connect %" PRIu64 ", upgrade %" PRIu64 ")\n", n_failed, O.conns,
				connect_failures, upgrade_failures);
		if (unmatched)
			fprintf(stderr, "actiond-loadgen: error: %" PRIu64 " replies with an "
				"id that was not in flight\n", unmatched);
		if (rpc_errors)
			fprintf(stderr, "actiond-loadgen: error: %" PRIu64 " replies were "
				"JSON-RPC error responses\n", rpc_errors);
		if (binary_msgs)
			fprintf(stderr, "actiond-loadgen: note: %" PRIu64 " binary messages "
				"were ignored (replies must be text frames)\n", binary_msgs);
		if (!O.idle && !setup_failed && t_m1 > t_m0 && !completed) {
			fprintf(stderr, "actiond-loadgen: error: no replies completed in the "
				"measured window\n");
			fail = 1;
		}
		if (no_id_msgs)
			fprintf(stderr, "actiond-loadgen: note: %" PRIu64 " text messages "
				"without a top-level id were ignored\n", no_id_msgs);

		if (O.idle) {
			if (O.json)
				printf("{\"idle_connections\":%d,\"hold_s\":%.3f,\"errors\":%" PRIu64
				       "}\n", setup_failed ? n_open : O.conns, O.hold, errors);
			else
				printf("idle mode: %d connections held %.1f s, errors=%" PRIu64 "\n",
				       setup_failed ? n_open : O.conns, O.hold, errors);
			return fail ? 1 : 0;
		}
		if (setup_failed || t_m1 <= t_m0) {
			if (O.json)
				printf("{\"rps\":0,\"p50_us\":0,\"p99_us\":0,\"p999_us\":0,"
				       "\"max_us\":0,\"completed\":0,\"errors\":%" PRIu64 "}\n",
				       errors ? errors : 1);
			return 1;
		}
		if (secs > 0) {
			rps = (double)completed / secs;
			lcpu = 100.0 * (cpu1 - cpu0) / secs;
			if (scpu0 >= 0 && scpu1 >= 0)
				scpu = 100.0 * (scpu1 - scpu0) / secs;
		}
		if (O.json) {
			printf("{\"rps\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
			       "\"max_us\":%.1f,\"completed\":%" PRIu64 ",\"errors\":%" PRIu64
			       ",\"rpc_errors\":%" PRIu64 ",\"connections\":%d,\"inflight\":%d,"
			       "\"duration_s\":%.3f,\"loadgen_cpu_pct\":%.1f,"
			       "\"reads\":%" PRIu64 ",\"writes\":%" PRIu64 ",\"wakeups\":%" PRIu64 ",",
			       rps, hist_quantile(&lat, 0.50) / 1e3,
			       hist_quantile(&lat, 0.99) / 1e3, hist_quantile(&lat, 0.999) / 1e3,
			       (double)lat.max / 1e3, completed, errors, rpc_errors, O.conns,
			       O.inflight, secs, lcpu, st_reads, st_writes, st_wakeups);
			if (scpu >= 0)
				printf("\"server_cpu_pct\":%.1f}\n", scpu);
			else
				printf("\"server_cpu_pct\":null}\n");
		} else {
			printf("c=%d k=%d duration=%.2fs completed=%" PRIu64 " rps=%.0f "
			       "p50=%.1fus p99=%.1fus p99.9=%.1fus max=%.1fus errors=%" PRIu64
			       " rpc_errors=%" PRIu64 " loadgen_cpu=%.0f%%",
			       O.conns, O.inflight, secs, completed, rps,
			       hist_quantile(&lat, 0.50) / 1e3, hist_quantile(&lat, 0.99) / 1e3,
			       hist_quantile(&lat, 0.999) / 1e3, (double)lat.max / 1e3,
			       errors, rpc_errors, lcpu);
			if (scpu >= 0)
				printf(" server_cpu=%.0f%%", scpu);
			printf("\n");
		}
		return fail ? 1 : 0;
	}
}
