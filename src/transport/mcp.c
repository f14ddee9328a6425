/*
 * mcp.c - the Model Context Protocol's Streamable HTTP transport at /mcp
 * (MCP revisions 2025-06-18 and 2025-03-26; docs/mcp.md is the wire side).
 *
 * Objects, all on the loop thread:
 *
 *   session  made by `initialize`, named by 128 random bits (hex) in the
 *            Mcp-Session-Id header, owned by the credential that made it:
 *            it hangs on that credential (cred.h: an ad_cred_link), so
 *            revoking the credential ends it at once, like a WebSocket.
 *   stream   where the answers to one POST go (or the session's GET
 *            stream).  It starts undecided and is answered as one
 *            application/json body if every answer is ready before it has
 *            to say anything else; it becomes text/event-stream (SSE) when
 *            it must send something first (a progress notification, an
 *            approval to wait for) or after a second without an answer,
 *            if the client accepts SSE.  An SSE stream outlives the
 *            connection that carried it: its events go into the session's
 *            bounded log, and a GET with Last-Event-ID takes the stream
 *            over and gets what came after that event.
 *   conn     one HTTP exchange on /mcp (h->mcp): a POST waiting for its
 *            answers, or a connection writing a stream.  SSE goes out with
 *            chunked transfer encoding written here (lws 4.1 would close
 *            the connection after a body without a length), so the
 *            connection is kept alive after the stream ends.
 *   request  a tools/list or tools/call in flight, with its own requester
 *            into the dispatch core: a tool call is the JSON-RPC request of
 *            its action handed to ad_dispatch_message(), so it meets the
 *            same validation, roles, rate limits, timeouts and audit as
 *            /rpc; notifications/cancelled is ad_dispatch_cancel().
 *
 * Writes happen only from the writable callback.  lws 4.1 serves POLLOUT
 * to an h1 connection only while it is read, so a connection is read while
 * something waits to be written and not otherwise (as http.c does); the
 * client's bytes arriving meanwhile can only be a request sent into an
 * open response, which http.c hangs up on.  A client that goes away is
 * noticed when lws reads its EOF, or by the sweep (once a second: POLLRDHUP
 * on the socket), which also sends keep-alive comments, expires idle
 * sessions and wakes approval waits that were told to retry later.
 */
#include "mcp.h"
#include "dispatch.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "rpc.h"
#include "server.h"
#include "spec.h"
#include "ws.h"

#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define V_LATEST "2025-06-18"
#define V_OLDER "2025-03-26"
#define PAGE_SIZE 50             /* tools per tools/list page */
#define WAIT_SLICE_MS 2000       /* one invocations.wait while an approval is awaited */
#define SSE_AFTER_US (1000 * 1000) /* an undecided stream becomes SSE after this */
#define SWEEP_US (1000 * 1000)
#define NBUCKETS 1024
#define HDR_ROOM 1024
#define IDEMPOTENCY_META "actiond/idempotency_key"
#define SESSION_HEADER "mcp-session-id:"
#define VERSION_HEADER "mcp-protocol-version:"
#define LAST_EVENT_HEADER "last-event-id:"

struct mcp_session;
struct mcp_stream;

/* ---- state ------------------------------------------------------------------ */

struct ad_mcp_conn {
	struct ad_http_exchange *h;
	struct lws *wsi;
	struct mcp_stream *st;          /* the stream it carries, or NULL */
	struct mcp_session *counted_in; /* an open SSE stream of this session */
	struct ad_list node;            /* on conns */
	struct ad_buf out;              /* bytes to write */
	struct ad_flush_wait *flush_wait; /* a revocation waits for its end */
	int status;                     /* for the access log */
	size_t bytes_out;
	int64_t last_write_us;
	bool sse;                       /* the SSE headers are out or queued */
	bool ending;                    /* end the response once out is written */
	bool hangup;                    /* ... and close the connection */
	bool json_ok, sse_ok;           /* what the client accepts */
};

enum st_mode { ST_UNDECIDED = 0, ST_SSE };

struct mcp_stream {
	struct ad_list node;            /* on s->streams */
	struct mcp_session *s;
	struct ad_mcp_conn *conn;       /* the connection writing it, or NULL */
	uint32_t id;
	uint32_t open;                  /* answers still to come (+1 while a POST is read) */
	enum st_mode mode;
	bool sse_ok;                    /* the client accepts text/event-stream */
	bool json_ok;                   /* ... and application/json */
	bool standalone;                /* the GET stream */
	bool batch;                     /* the POST was an array */
	bool finished;                  /* SSE: every answer is in the log */
	uint32_t nevents;               /* its events in the session's log */
	char **answers;                 /* undecided: the answers so far */
	uint32_t nanswers, answers_cap;
	int64_t created_us;
};

struct mcp_event {
	struct ad_list node;            /* on s->events, oldest first */
	struct mcp_stream *st;
	uint64_t seq;
	size_t len;
	char text[];                    /* "id: S-N\ndata: ...\n\n" */
};

struct mcp_session {
	struct ad_cred_link link;       /* on cred->links */
	struct ad_list node;            /* on sessions */
	struct ad_list bucket;          /* on its hash bucket */
	struct ad_cred *cred;
	char id[33];
	char version[11];
	int64_t last_used_us;
	struct ad_list streams;
	struct ad_list reqs;            /* requests in flight */
	struct ad_list events;
	uint32_t nevents;
	size_t event_bytes;
	uint32_t next_stream;
	uint64_t next_seq;
	uint32_t open_sse;              /* SSE connections attached */
	struct mcp_stream *standalone;
};

enum req_kind { RQ_LIST, RQ_CALL };

struct mcp_req {
	struct ad_requester req;        /* its calls into the dispatch core */
	struct ad_list node;            /* on s->reqs */
	struct mcp_session *s;
	struct mcp_stream *st;
	json_t *id;                     /* the client's request id */
	enum req_kind kind;
	bool inner;                     /* a call of it is in flight */
	bool cancelled;                 /* notifications/cancelled: answer nothing */
	bool draining;                  /* SIGTERM stopped its wait */
	/* tools/list */
	size_t offset;
	/* tools/call */
	char *tool;
	bool adapter;                   /* an integration action, run by actions.invoke */
	json_t *token;                  /* _meta.progressToken, or NULL */
	uint32_t progress;              /* last progress value sent */
	int stage;                      /* 1 pending, 2 approved, 3 executing (reported) */
	bool waiting;                   /* in the approval wait */
	bool sleeping;                  /* waits again at wake_us */
	int64_t wake_us;
	int64_t wait_started_us;
	char invocation[33];
	int64_t deadline_unix;          /* of the approval; 0 unknown */
};

static struct ad_list sessions;     /* every session */
static struct ad_list buckets[NBUCKETS];
static struct ad_list conns;        /* every /mcp exchange with state */
static lws_sorted_usec_list_t sweep_sul;
static bool ready;

static struct {
	uint64_t sessions_open, sessions_created, sessions_ended_revoked,
		 sessions_ended_idle, sessions_ended_deleted, sessions_evicted;
	uint64_t posts, tool_calls, streams_open, replays, events_replayed,
		 refused;
} st_stats;

static void stream_answered(struct mcp_stream *st);
static void stream_maybe_free(struct mcp_stream *st);
static void stream_to_sse(struct mcp_stream *st);
static void conn_kick(struct ad_mcp_conn *c);
static void conn_end(struct ad_mcp_conn *c, bool hangup);
static void wait_next(struct mcp_req *q);

/* ---- small helpers ---------------------------------------------------------- */

/* A header lws does not know (name in lower case, with its colon), trimmed. */
static int custom_header(struct lws *wsi, const char *name, char *buf, size_t size)
{
	int n = lws_hdr_custom_length(wsi, name, (int)strlen(name));
	char *p = buf;

	if (n < 0)
		return -1;
	if ((size_t)n >= size)
		return -2;
	if (lws_hdr_custom_copy(wsi, buf, (int)size, name, (int)strlen(name)) < 0)
		return -2;
	while (*p == ' ' || *p == '\t')
		p++;
	n = (int)strlen(p);
	while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	memmove(buf, p, (size_t)n);
	buf[n] = '\0';
	return n;
}

/* What an Accept header admits; absent: anything. */
static void accepts(struct lws *wsi, bool *json, bool *sse)
{
	static char v[AD_HTTP_HEADER_MAX + 1];
	char *save = NULL, *tok;

	*json = *sse = false;
	if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_ACCEPT) <= 0 ||
	    lws_hdr_copy(wsi, v, sizeof(v), WSI_TOKEN_HTTP_ACCEPT) <= 0) {
		*json = *sse = true;
		return;
	}
	for (tok = strtok_r(v, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *semi = strchr(tok, ';');
		size_t n;

		if (semi)
			*semi = '\0';
		while (*tok == ' ' || *tok == '\t')
			tok++;
		n = strlen(tok);
		while (n && (tok[n - 1] == ' ' || tok[n - 1] == '\t'))
			tok[--n] = '\0';
		if (!strcasecmp(tok, "*/*")) {
			*json = *sse = true;
		} else if (!strcasecmp(tok, "application/json") ||
			   !strcasecmp(tok, "application/*")) {
			*json = true;
		} else if (!strcasecmp(tok, "text/event-stream") || !strcasecmp(tok, "text/*")) {
			*sse = true;
		}
	}
}

static bool origin_listed(const char *o)
{
	for (size_t i = 0; i < ad_srv.cfg.n_origins; i++)
		if (!strcmp(o, ad_srv.cfg.origins[i]))
			return true;
	return false;
}

/*
 * DNS rebinding: a browser page may reach a local server under a name of
 * its own, so an Origin must be one allowed, or this server's own
 * (scheme://Host).  No Origin: not a browser's cross-origin request.
 */
static bool origin_ok(struct lws *wsi)
{
	static char origin[AD_HTTP_HEADER_MAX + 1], host[AD_HTTP_HEADER_MAX + 1];
	char own[AD_HTTP_HEADER_MAX + 16];

	if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) <= 0)
		return true;
	if (lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) <= 0)
		return false;
	if (origin_listed(origin))
		return true;
	if (lws_hdr_total_length(wsi, WSI_TOKEN_HOST) <= 0 ||
	    lws_hdr_copy(wsi, host, sizeof(host), WSI_TOKEN_HOST) <= 0)
		return false;
	snprintf(own, sizeof(own), "%s://%s", ad_srv.tls ? "https" : "http", host);
	return !strcasecmp(origin, own);
}

/* An HTTP/1.0 request (lws 4.1 tells only through the status line it writes). */
static bool http10(struct lws *wsi)
{
	static unsigned char buf[4096];
	unsigned char *p = buf;

	return !lws_add_http_header_status(wsi, 200, &p, buf + sizeof(buf) - 1) &&
	       p - buf >= 8 && !memcmp(buf, "HTTP/1.0", 8);
}

static bool version_supported(const char *v)
{
	return !strcmp(v, V_LATEST) || !strcmp(v, V_OLDER);
}

static void hex(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

static size_t bucket_of(const char *id)
{
	uint32_t h = 2166136261u;

	for (const char *p = id; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	return h % NBUCKETS;
}

/* "2025-01-02T03:04:05.678Z" as Unix seconds, 0 if it is not that. */
static int64_t iso_seconds(const char *s)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (!s || sscanf(s, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
			 &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm);
}

/* A JSON-RPC error response text. */
static void rpc_error(struct ad_buf *b, const json_t *id, int code, const char *message,
		      const char *reason)
{
	json_t *data = reason ? json_pack("{s:s}", "reason", reason) : NULL;

	ad_rpc_write_error(b, id, code, message, data);
	json_decref(data);
}

/* ---- writing responses ------------------------------------------------------- */

struct hdr {
	const char *name;   /* lower case, with its colon */
	const char *value;
};

/*
 * Status line and headers into buf (room bytes).  len: the body's length,
 * or LWS_ILLEGAL_HTTP_CONTENT_LEN for a chunked body.  Returns the length,
 * or 0 if they do not fit.
 */
static size_t headers(struct lws *wsi, int status, const char *ctype, lws_filepos_t len,
		      const struct hdr *extra, size_t nextra, unsigned char *buf, size_t room)
{
	/* As every answer of http.c: no sniffing, framing, referrer or content. */
	static const struct hdr always[] = {
		{ "cache-control:", "no-store" },
		{ "x-content-type-options:", "nosniff" },
		{ "x-frame-options:", "DENY" },
		{ "referrer-policy:", "no-referrer" },
		{ "content-security-policy:", "default-src 'none'; frame-ancestors 'none'" },
	};
	unsigned char *p = buf, *end = buf + room - 1;

	if (len == LWS_ILLEGAL_HTTP_CONTENT_LEN) {
		if (lws_add_http_header_status(wsi, (unsigned)status, &p, end) ||
		    lws_add_http_header_by_name(wsi, (const unsigned char *)"content-type:",
						(const unsigned char *)ctype, (int)strlen(ctype),
						&p, end) ||
		    lws_add_http_header_by_name(wsi,
						(const unsigned char *)"transfer-encoding:",
						(const unsigned char *)"chunked", 7, &p, end))
			return 0;
	} else if (lws_add_http_common_headers(wsi, (unsigned)status, ctype, len, &p, end)) {
		return 0;
	}
	for (size_t i = 0; i < sizeof(always) / sizeof(always[0]); i++)
		if (lws_add_http_header_by_name(wsi, (const unsigned char *)always[i].name,
						(const unsigned char *)always[i].value,
						(int)strlen(always[i].value), &p, end))
			return 0;
	for (size_t i = 0; i < nextra; i++)
		if (extra[i].value &&
		    lws_add_http_header_by_name(wsi, (const unsigned char *)extra[i].name,
						(const unsigned char *)extra[i].value,
						(int)strlen(extra[i].value), &p, end))
			return 0;
	if (lws_finalize_http_header(wsi, &p, end))
		return 0;
	return (size_t)(p - buf);
}

/*
 * Answers now, from inside the HTTP callback, and ends the exchange.
 * Returns what the callback should return.
 */
static int answer_now(struct ad_http_exchange *h, struct lws *wsi, int status,
		      const char *ctype, const char *body, size_t blen,
		      const struct hdr *extra, size_t nextra)
{
	unsigned char *buf = malloc(LWS_PRE + HDR_ROOM + blen);
	size_t n;
	int r;

	if (!buf)
		return -1;
	n = headers(wsi, status, ctype, blen, extra, nextra, buf + LWS_PRE, HDR_ROOM);
	if (!n) {
		free(buf);
		return -1;
	}
	if (blen)
		memcpy(buf + LWS_PRE + n, body, blen);
	r = lws_write(wsi, buf + LWS_PRE, n + blen, LWS_WRITE_HTTP_FINAL);
	free(buf);
	return ad_http_done(h, wsi, status, n + blen, r >= 0, true);
}

/*
 * Refuses a request with a JSON-RPC error (id null) and an HTTP status;
 * error.data.reason names the refusal.
 */
static int refuse(struct ad_http_exchange *h, struct lws *wsi, int status, int code,
		  const char *reason, const char *message)
{
	struct ad_buf b = AD_BUF_INIT;
	struct hdr extra[2];
	size_t n = 0;
	int r;

	st_stats.refused++;
	rpc_error(&b, NULL, code, message, reason);
	if (status == 401)
		extra[n++] = (struct hdr){ "www-authenticate:", "Bearer" };
	if (status == 405)
		extra[n++] = (struct hdr){ "allow:", "GET, POST, DELETE" };
	r = b.oom ? -1 : answer_now(h, wsi, status, "application/json", b.data, b.len, extra, n);
	ad_buf_free(&b);
	return r;
}

static int refuse_reason(struct ad_http_exchange *h, struct lws *wsi, enum ad_reason reason,
			 const char *message)
{
	return refuse(h, wsi, ad_reason_http_status(reason), ad_reason_code(reason),
		      ad_reason_name(reason), message);
}

/* ---- connections -------------------------------------------------------------- */

static struct ad_mcp_conn *conn_new(struct ad_http_exchange *h, struct lws *wsi)
{
	struct ad_mcp_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->h = h;
	c->wsi = wsi;
	c->status = 200;
	c->last_write_us = lws_now_usecs();
	ad_list_add_tail(&conns, &c->node);
	h->mcp = c;
	return c;
}

/* Not read until there is something to write (see the top of the file). */
static void conn_quiet(struct ad_mcp_conn *c)
{
	lws_set_timeout(c->wsi, NO_PENDING_TIMEOUT, 0);
	if (!c->h->rx_off) {
		lws_rx_flow_control(c->wsi, 0);
		c->h->rx_off = true;
	}
}

static void conn_kick(struct ad_mcp_conn *c)
{
	if (c->h->rx_off) {
		c->h->rx_off = false;
		lws_rx_flow_control(c->wsi, 1);
	}
	lws_callback_on_writable(c->wsi);
}

/* One chunk of a chunked body. */
static void conn_chunk(struct ad_mcp_conn *c, const char *p, size_t n)
{
	if (c->ending || !n)
		return;
	ad_buf_printf(&c->out, "%zx\r\n", n);
	ad_buf_append(&c->out, p, n);
	ad_buf_puts(&c->out, "\r\n");
	if (c->out.oom || c->out.len > ad_srv.cfg.max_queue) {
		/* It does not read: the events stay in the log for a resumption. */
		ad_log_info("mcp: closing a stream that does not read (%zu bytes queued)",
			    c->out.len);
		c->ending = c->hangup = true;
		ad_buf_free(&c->out);
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_HTTP_CONTENT, LWS_TO_KILL_ASYNC);
		return;
	}
	conn_kick(c);
}

static void conn_uncount(struct ad_mcp_conn *c)
{
	if (c->counted_in) {
		c->counted_in->open_sse--;
		c->counted_in = NULL;
		st_stats.streams_open--;
	}
}

/* Starts an SSE response on c (the headers go first). */
static void conn_start_sse(struct ad_mcp_conn *c, struct mcp_session *s)
{
	unsigned char buf[HDR_ROOM];
	size_t n;

	if (c->sse || c->ending)
		return;
	n = headers(c->wsi, 200, "text/event-stream", LWS_ILLEGAL_HTTP_CONTENT_LEN, NULL, 0,
		    buf, sizeof(buf));
	if (!n) {
		c->ending = c->hangup = true;
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_HTTP_CONTENT, LWS_TO_KILL_ASYNC);
		return;
	}
	ad_buf_append(&c->out, buf, n);
	c->sse = true;
	if (s) {
		c->counted_in = s;
		s->open_sse++;
		st_stats.streams_open++;
	}
	conn_kick(c);
}

/*
 * Ends c's response once what is queued is out: the last chunk of an SSE
 * body.  A connection that has sent nothing yet gets an error instead.
 */
static void conn_end(struct ad_mcp_conn *c, bool hangup)
{
	if (c->ending)
		return;
	c->hangup = c->hangup || hangup;
	if (c->sse) {
		ad_buf_puts(&c->out, "0\r\n\r\n");
	} else if (!c->out.len) {
		/* A POST whose answers will not come (its session ended). */
		struct ad_buf b = AD_BUF_INIT;
		unsigned char buf[HDR_ROOM];
		size_t n;

		rpc_error(&b, NULL, ad_reason_code(AD_REASON_NOT_FOUND),
			  "The MCP session ended", "not_found");
		n = headers(c->wsi, 404, "application/json", b.len, NULL, 0, buf, sizeof(buf));
		c->status = 404;
		if (n && !b.oom) {
			ad_buf_append(&c->out, buf, n);
			ad_buf_append(&c->out, b.data, b.len);
		} else {
			c->hangup = true;
		}
		ad_buf_free(&b);
	}
	c->ending = true;
	conn_kick(c);
}

static void conn_release_wait(struct ad_mcp_conn *c)
{
	if (c->flush_wait) {
		struct ad_flush_wait *w = c->flush_wait;

		c->flush_wait = NULL;
		ad_flush_wait_release(w);
	}
}

void ad_mcp_detach(struct ad_http_exchange *h)
{
	struct ad_mcp_conn *c = h->mcp;
	struct mcp_stream *st;

	if (!c)
		return;
	h->mcp = NULL;
	conn_uncount(c);
	conn_release_wait(c);
	if ((st = c->st)) {
		c->st = NULL;
		st->conn = NULL;
		stream_maybe_free(st);
	}
	ad_list_del(&c->node);
	ad_buf_free(&c->out);
	free(c);
}

int ad_mcp_writable(struct ad_http_exchange *h, struct lws *wsi)
{
	struct ad_mcp_conn *c = h->mcp;

	if (c->out.len) {
		unsigned char *buf = malloc(LWS_PRE + c->out.len);
		size_t n = c->out.len;
		int r = -1;

		if (buf) {
			memcpy(buf + LWS_PRE, c->out.data, n);
			r = lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_HTTP);
			free(buf);
		}
		ad_buf_reset(&c->out);
		if (r < 0) {
			conn_release_wait(c);
			return ad_http_done(h, wsi, c->status, c->bytes_out, false, false);
		}
		c->bytes_out += n;
		c->last_write_us = lws_now_usecs();
		if (!c->ending) {
			/* Come back once lws has it all out, then stop reading. */
			lws_callback_on_writable(wsi);
			return 0;
		}
	}
	if (c->ending) {
		bool keep = !c->hangup;

		conn_release_wait(c);
		return ad_http_done(h, wsi, c->status, c->bytes_out, true, keep);
	}
	conn_quiet(c);
	return 0;
}

/* The client went away without lws noticing yet (nothing was being read). */
static bool conn_gone(const struct ad_mcp_conn *c)
{
	struct pollfd p = { .fd = lws_get_socket_fd(c->wsi), .events = POLLRDHUP };

	if (p.fd < 0)
		return false;
	return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* ---- streams and the event log ---------------------------------------------- */

static struct mcp_stream *stream_new(struct mcp_session *s)
{
	struct mcp_stream *st = calloc(1, sizeof(*st));

	if (!st)
		return NULL;
	st->s = s;
	st->id = ++s->next_stream;
	st->created_us = lws_now_usecs();
	ad_list_add_tail(&s->streams, &st->node);
	return st;
}

static void stream_free(struct mcp_stream *st)
{
	struct mcp_session *s = st->s;

	if (st->conn) {
		st->conn->st = NULL;
		st->conn = NULL;
	}
	if (s->standalone == st)
		s->standalone = NULL;
	for (uint32_t i = 0; i < st->nanswers; i++)
		free(st->answers[i]);
	free(st->answers);
	ad_list_del(&st->node);
	free(st);
}

/* Frees st once nothing can come of it any more. */
static void stream_maybe_free(struct mcp_stream *st)
{
	if (st->conn || st->open || st->nevents)
		return;
	if (st->mode == ST_SSE && !st->finished && !st->standalone)
		return;
	stream_free(st);
}

static void event_drop(struct mcp_session *s, struct mcp_event *ev)
{
	struct mcp_stream *st = ev->st;

	ad_list_del(&ev->node);
	s->nevents--;
	s->event_bytes -= ev->len;
	free(ev);
	if (st) {
		st->nevents--;
		stream_maybe_free(st);
	}
}

/* An SSE event of st: into the log (the oldest make room), and out. */
static void stream_event(struct mcp_stream *st, const char *json, size_t len)
{
	struct mcp_session *s = st->s;
	struct ad_buf b = AD_BUF_INIT;
	struct mcp_event *ev;
	uint64_t seq = ++s->next_seq;

	ad_buf_printf(&b, "id: %s%u-%llu\ndata: ", st->standalone ? "g" : "", st->id,
		      (unsigned long long)seq);
	ad_buf_append(&b, json, len);
	ad_buf_puts(&b, "\n\n");
	if (b.oom) {
		ad_buf_free(&b);
		return;
	}
	if (b.len <= ad_srv.cfg.mcp_event_bytes && (ev = malloc(sizeof(*ev) + b.len))) {
		ev->st = st;
		ev->seq = seq;
		ev->len = b.len;
		memcpy(ev->text, b.data, b.len);
		ad_list_add_tail(&s->events, &ev->node);
		st->nevents++;
		s->nevents++;
		s->event_bytes += b.len;
		while (s->nevents > ad_srv.cfg.mcp_events ||
		       s->event_bytes > ad_srv.cfg.mcp_event_bytes) {
			struct mcp_event *old = ad_container_of(ad_list_first(&s->events),
								struct mcp_event, node);

			if (old == ev)
				break;
			event_drop(s, old);
		}
	}
	if (st->conn)
		conn_chunk(st->conn, b.data, b.len);
	ad_buf_free(&b);
}

/* An event with an id and no data: lets a client resume before anything came. */
static void stream_prime(struct mcp_stream *st)
{
	char buf[64];
	int n = snprintf(buf, sizeof(buf), "id: %s%u-%llu\ndata: \n\n",
			 st->standalone ? "g" : "", st->id, (unsigned long long)++st->s->next_seq);

	if (st->conn)
		conn_chunk(st->conn, buf, (size_t)n);
}

/* Attaches c to write st, as SSE. */
static void stream_attach_sse(struct mcp_stream *st, struct ad_mcp_conn *c)
{
	st->conn = c;
	c->st = st;
	conn_start_sse(c, st->s);
}

/* The stream must say something before its answers are all in. */
static void stream_to_sse(struct mcp_stream *st)
{
	uint32_t n = st->nanswers;

	if (st->mode == ST_SSE || !st->sse_ok)
		return;
	if (st->conn && st->json_ok && st->s->open_sse >= ad_srv.cfg.mcp_streams) {
		/* The session has as many streams open as allowed: JSON it is. */
		st->sse_ok = false;
		return;
	}
	st->mode = ST_SSE;
	if (st->conn) {
		conn_start_sse(st->conn, st->s);
		stream_prime(st);
	}
	st->nanswers = 0;
	for (uint32_t i = 0; i < n; i++) {
		stream_event(st, st->answers[i], strlen(st->answers[i]));
		free(st->answers[i]);
	}
}

/*
 * A message for the client on st: a response (answers one of its
 * requests) or a notification (dropped by a stream that cannot be SSE).
 */
static void stream_emit(struct mcp_stream *st, const char *json, size_t len, bool response)
{
	if (st->mode != ST_SSE && !response)
		stream_to_sse(st);
	if (st->mode == ST_SSE) {
		stream_event(st, json, len);
	} else if (response) {
		char *copy;

		if (st->nanswers == st->answers_cap) {
			uint32_t cap = st->answers_cap ? 2 * st->answers_cap : 4;
			char **a = realloc(st->answers, cap * sizeof(*a));

			if (!a)
				goto done;
			st->answers = a;
			st->answers_cap = cap;
		}
		if ((copy = malloc(len + 1))) {
			memcpy(copy, json, len);
			copy[len] = '\0';
			st->answers[st->nanswers++] = copy;
		}
	}
done:
	if (response)
		stream_answered(st);
}

static void stream_emit_buf(struct mcp_stream *st, struct ad_buf *b, bool response)
{
	if (b->oom) {
		struct ad_buf e = AD_BUF_INIT;

		rpc_error(&e, NULL, AD_RPC_INTERNAL_ERROR, "Out of memory", NULL);
		if (response)
			stream_emit(st, e.data ? e.data : "", e.len, true);
		ad_buf_free(&e);
		return;
	}
	stream_emit(st, b->data, b->len, response);
}

/* Every answer of st is in: the JSON body, or the end of the SSE stream. */
static void stream_complete(struct mcp_stream *st)
{
	struct ad_mcp_conn *c = st->conn;

	if (st->mode == ST_SSE) {
		st->finished = true;
		if (c)
			conn_end(c, false);
		stream_maybe_free(st);
		return;
	}
	if (c && !c->ending) {
		struct ad_buf body = AD_BUF_INIT;
		unsigned char buf[HDR_ROOM];
		size_t n;
		int status = 200;

		if (st->batch && st->nanswers)
			ad_buf_putc(&body, '[');
		for (uint32_t i = 0; i < st->nanswers; i++) {
			if (i)
				ad_buf_putc(&body, ',');
			ad_buf_puts(&body, st->answers[i]);
		}
		if (st->batch && st->nanswers)
			ad_buf_putc(&body, ']');
		if (!st->nanswers)
			status = 202; /* every request was cancelled */
		n = headers(c->wsi, status, status == 202 ? NULL : "application/json", body.len,
			    NULL, 0, buf, sizeof(buf));
		if (!n || body.oom) {
			c->hangup = true;
		} else {
			ad_buf_append(&c->out, buf, n);
			if (body.len) /* none when every request was cancelled */
				ad_buf_append(&c->out, body.data, body.len);
		}
		ad_buf_free(&body);
		c->status = status;
		c->ending = true;
		conn_kick(c);
	}
	stream_maybe_free(st);
}

static void stream_answered(struct mcp_stream *st)
{
	if (st->open && --st->open == 0)
		stream_complete(st);
}

/* ---- sessions ----------------------------------------------------------------- */

enum end_why { END_REVOKED, END_DELETED, END_IDLE, END_EVICTED, END_SHUTDOWN };

static void req_free(struct mcp_req *q);

/*
 * Ends s: its requests are cancelled (a revocation answers them with
 * unauthenticated), its connections end (hung up on for a revocation,
 * counted on w until their last bytes are out), its events go.  Returns how
 * many connections were ended.
 */
static size_t session_end(struct mcp_session *s, enum end_why why, const char *reason,
			  struct ad_flush_wait *w)
{
	struct ad_list *pos, *tmp;
	size_t closed = 0;

	ad_list_foreach_safe(pos, tmp, &s->reqs) {
		struct mcp_req *q = ad_container_of(pos, struct mcp_req, node);
		struct mcp_stream *st = q->st;

		q->cancelled = true;
		ad_requester_detach(&q->req);
		ad_list_del(&q->node);
		if (why == END_REVOKED) {
			struct ad_buf b = AD_BUF_INIT;
			char msg[128];

			snprintf(msg, sizeof(msg), "The credential of this MCP session was %s",
				 reason && !strcmp(reason, "expired") ? "expired" : "revoked");
			rpc_error(&b, q->id, ad_reason_code(AD_REASON_UNAUTHENTICATED), msg,
				  "unauthenticated");
			stream_emit_buf(st, &b, true);
			ad_buf_free(&b);
		} else {
			stream_answered(st);
		}
		req_free(q);
	}
	ad_list_foreach_safe(pos, tmp, &s->streams) {
		struct mcp_stream *st = ad_container_of(pos, struct mcp_stream, node);
		struct ad_mcp_conn *c = st->conn;

		if (c) {
			c->st = NULL;
			st->conn = NULL;
			conn_uncount(c);
			if (w && !c->flush_wait) {
				w->pending++;
				c->flush_wait = w;
			}
			closed++;
			if (why == END_REVOKED || why == END_SHUTDOWN)
				c->hangup = true;
			conn_end(c, c->hangup);
		}
	}
	while (!ad_list_empty(&s->events)) {
		struct mcp_event *ev = ad_container_of(ad_list_first(&s->events),
						       struct mcp_event, node);

		ev->st = NULL;
		event_drop(s, ev);
	}
	while (!ad_list_empty(&s->streams))
		stream_free(ad_container_of(ad_list_first(&s->streams), struct mcp_stream, node));
	ad_cred_link_del(&s->link);
	ad_list_del(&s->node);
	ad_list_del(&s->bucket);
	ad_log_debug("mcp: session %.8s… of %s ended (%s)", s->id, s->cred->id,
		     why == END_REVOKED ? "revoked" : why == END_DELETED ? "deleted"
		     : why == END_IDLE ? "idle" : why == END_EVICTED ? "evicted" : "shutdown");
	switch (why) {
	case END_REVOKED: st_stats.sessions_ended_revoked++; break;
	case END_DELETED: st_stats.sessions_ended_deleted++; break;
	case END_IDLE: st_stats.sessions_ended_idle++; break;
	case END_EVICTED: st_stats.sessions_evicted++; break;
	default: break;
	}
	st_stats.sessions_open--;
	ad_cred_unref(s->cred);
	sodium_memzero(s->id, sizeof(s->id));
	free(s);
	return closed;
}

static size_t session_revoked(struct ad_cred_link *l, const char *reason, int64_t t0_us,
			      struct ad_flush_wait *w)
{
	(void)t0_us;
	return session_end(ad_container_of(l, struct mcp_session, link), END_REVOKED, reason, w);
}

static bool session_idle(const struct mcp_session *s)
{
	return !s->open_sse && ad_list_empty(&s->reqs);
}

static struct mcp_session *session_find(const char *id)
{
	struct ad_list *pos, *tmp, *b = &buckets[bucket_of(id)];

	ad_list_foreach_safe(pos, tmp, b) {
		struct mcp_session *s = ad_container_of(pos, struct mcp_session, bucket);

		if (!strcmp(s->id, id))
			return s;
	}
	return NULL;
}

/*
 * The session a request names, checked against its credential.  Returns
 * it, or NULL having answered (400 without the header, 404 for an unknown
 * session or another credential's, 400 for an unsupported protocol
 * version); *ret is then what the callback returns.
 */
static struct mcp_session *session_of(struct ad_http_exchange *h, struct lws *wsi, int *ret)
{
	char id[80], ver[32];
	struct mcp_session *s;
	int n = custom_header(wsi, SESSION_HEADER, id, sizeof(id));

	if (n == -1) {
		*ret = refuse(h, wsi, 400, AD_RPC_INVALID_REQUEST, "invalid_request",
			      "Bad Request: the Mcp-Session-Id header is required "
			      "(initialize makes a session)");
		return NULL;
	}
	s = n == 32 ? session_find(id) : NULL;
	if (!s || strcmp(s->cred->id, h->req.cred->id) != 0) {
		*ret = refuse(h, wsi, 404, ad_reason_code(AD_REASON_NOT_FOUND), "not_found",
			      "No such MCP session (it ended, or is not this credential's); "
			      "initialize a new one");
		return NULL;
	}
	n = custom_header(wsi, VERSION_HEADER, ver, sizeof(ver));
	if (n != -1 && (n < 0 || !version_supported(ver))) {
		*ret = refuse(h, wsi, 400, AD_RPC_INVALID_REQUEST, "invalid_request",
			      "Unsupported MCP-Protocol-Version (supported: " V_LATEST ", " V_OLDER ")");
		return NULL;
	}
	s->last_used_us = lws_now_usecs();
	return s;
}

/* ---- requests: common ------------------------------------------------------- */

static const struct ad_requester_ops req_ops;

static struct mcp_req *req_new(struct mcp_session *s, struct mcp_stream *st, const json_t *id,
			       enum req_kind kind, const uint8_t ip[16])
{
	struct mcp_req *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	ad_requester_init(&q->req, &req_ops);
	q->req.cred = ad_cred_ref(s->cred);
	memcpy(q->req.ip, ip, 16);
	q->s = s;
	q->st = st;
	q->id = json_incref((json_t *)id);
	q->kind = kind;
	ad_list_add_tail(&s->reqs, &q->node);
	return q;
}

static void req_free(struct mcp_req *q)
{
	ad_requester_detach(&q->req);
	ad_cred_unref(q->req.cred);
	json_decref(q->id);
	json_decref(q->token);
	free(q->tool);
	free(q);
}

/* The request is over; its answer (if any) was emitted already. */
static void req_end(struct mcp_req *q)
{
	ad_list_del(&q->node);
	req_free(q);
}

static void req_result(struct mcp_req *q, const json_t *result)
{
	struct ad_buf b = AD_BUF_INIT;
	struct mcp_stream *st = q->st;

	ad_rpc_write_result(&b, q->id, result);
	req_end(q);
	stream_emit_buf(st, &b, true);
	ad_buf_free(&b);
}

static void req_error(struct mcp_req *q, int code, const char *message)
{
	struct ad_buf b = AD_BUF_INIT;
	struct mcp_stream *st = q->st;

	ad_rpc_write_error(&b, q->id, code, message, NULL);
	req_end(q);
	stream_emit_buf(st, &b, true);
	ad_buf_free(&b);
}

/* The request was cancelled: it ends without an answer. */
static void req_drop(struct mcp_req *q)
{
	struct mcp_stream *st = q->st;

	req_end(q);
	stream_answered(st);
}

/* Runs method with params (borrowed) for q through the dispatch core. */
static void req_dispatch(struct mcp_req *q, const char *method, const json_t *params)
{
	struct ad_buf b = AD_BUF_INIT;

	ad_buf_puts(&b, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":");
	ad_buf_json_str(&b, method, strlen(method));
	ad_buf_puts(&b, ",\"params\":");
	ad_buf_json(&b, params);
	ad_buf_putc(&b, '}');
	if (b.oom) {
		ad_buf_free(&b);
		req_error(q, AD_RPC_INTERNAL_ERROR, "Out of memory");
		return;
	}
	q->inner = true;
	/* May answer at once: q may be gone when this returns. */
	ad_dispatch_message(&q->req, b.data, b.len, 0);
	ad_buf_free(&b);
}

/* A notifications/progress for q (when the client asked for them). */
static void req_progress(struct mcp_req *q, uint32_t total, const char *message)
{
	struct ad_buf b = AD_BUF_INIT;

	if (!q->token)
		return;
	ad_buf_puts(&b, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\","
			"\"params\":{\"progressToken\":");
	ad_buf_json(&b, q->token);
	ad_buf_puts(&b, ",\"progress\":");
	ad_buf_int(&b, ++q->progress);
	if (total) {
		ad_buf_puts(&b, ",\"total\":");
		ad_buf_int(&b, total);
	}
	if (message) {
		ad_buf_puts(&b, ",\"message\":");
		ad_buf_json_str(&b, message, strlen(message));
	}
	ad_buf_puts(&b, "}}");
	if (!b.oom)
		stream_emit(q->st, b.data, b.len, false);
	ad_buf_free(&b);
}

/* ---- tools ------------------------------------------------------------------ */

static bool spec_tool_allowed(const struct ad_spec *sp, const struct ad_cred *cr)
{
	return sp->tool && sp->kind == AD_KIND_REQUEST &&
	       (sp->cred_mask & AD_CRED_BIT(cr->kind)) &&
	       (!cr->role || (sp->role_mask & AD_ROLE_BIT(cr->role))) &&
	       (sp->transports & AD_TRANSPORT_BIT(AD_TRANSPORT_HTTP));
}

static bool cred_has_integration(const struct ad_cred *cr, const char *name, size_t n)
{
	if (cr->kind != AD_CRED_AGENT)
		return false;
	for (size_t i = 0; i < cr->n_integrations; i++)
		if (strlen(cr->integrations[i]) == n && !strncmp(cr->integrations[i], name, n))
			return true;
	return false;
}

/*
 * A params schema as an MCP inputSchema: an object schema whose properties
 * are objects (MCP's schema has no place for the boolean schemas JSON
 * Schema allows there: true is {}, false is {"not": {}}).
 */
static json_t *input_schema(const json_t *params)
{
	json_t *c, *props, *v;
	const char *k;

	if (!json_is_object(params))
		return json_pack("{s:s}", "type", "object");
	c = json_copy((json_t *)params);
	if (!c)
		return NULL;
	if (!json_object_get(c, "type"))
		json_object_set_new(c, "type", json_string("object"));
	props = json_object_get(c, "properties");
	if (json_is_object(props) && json_object_size(props)) {
		json_t *copy = json_copy(props);

		json_object_foreach(copy, k, v)
			if (json_is_boolean(v))
				json_object_set_new(copy, k, json_is_true(v) ? json_object()
							   : json_pack("{s:{}}", "not"));
		json_object_set_new(c, "properties", copy);
	}
	return c;
}

static json_t *annotations(const char *risk, bool open_world)
{
	json_t *a = json_object();

	if (!strcmp(risk, "read")) {
		json_object_set_new(a, "readOnlyHint", json_true());
	} else {
		json_object_set_new(a, "readOnlyHint", json_false());
		json_object_set_new(a, "destructiveHint", json_boolean(!strcmp(risk, "danger")));
	}
	json_object_set_new(a, "openWorldHint", json_boolean(open_world));
	return a;
}

static json_t *spec_tool(const struct ad_spec *sp)
{
	const char *summary = json_string_value(json_object_get(sp->doc, "summary"));
	const char *desc = json_string_value(json_object_get(sp->doc, "description"));
	struct ad_buf d = AD_BUF_INIT;
	json_t *t;

	ad_buf_puts(&d, summary ? summary : sp->method);
	if (desc) {
		ad_buf_puts(&d, "\n\n");
		ad_buf_puts(&d, desc);
	}
	t = json_pack("{s:s,s:s%,s:o,s:o}", "name", sp->method, "description",
		      d.data ? d.data : "", d.len, "inputSchema",
		      input_schema(json_object_get(sp->doc, "params")), "annotations",
		      annotations(ad_risk_name(sp->risk), false));
	ad_buf_free(&d);
	return t;
}

/* The tools of one integration entry of actions.available. */
static void adapter_tools(json_t *out, const json_t *integ)
{
	const char *name = json_string_value(json_object_get(integ, "integration"));
	const char *cstatus = json_string_value(json_object_get(integ, "credential_status"));
	const char *creason = json_string_value(json_object_get(integ, "credential_reason"));
	const json_t *a;
	size_t i;

	if (!name)
		return;
	json_array_foreach(json_object_get(integ, "actions"), i, a) {
		const char *action = json_string_value(json_object_get(a, "action"));
		const char *summary = json_string_value(json_object_get(a, "summary"));
		const char *risk = json_string_value(json_object_get(a, "risk"));
		struct ad_buf n = AD_BUF_INIT, d = AD_BUF_INIT;
		json_t *t;

		if (!action || !risk)
			continue;
		ad_buf_printf(&n, "%s.%s", name, action);
		ad_buf_printf(&d, "%s (%s, through actiond with its stored credential", summary ? summary : action, name);
		if (!strcmp(risk, "write"))
			ad_buf_puts(&d, "; risk write: each call waits for an admin's approval");
		else if (!strcmp(risk, "danger"))
			ad_buf_puts(&d, "; risk danger: refused to agents");
		ad_buf_putc(&d, ')');
		if (cstatus && strcmp(cstatus, "ok"))
			ad_buf_printf(&d, " - the credential is broken: %s",
				      creason ? creason : "calls fail until an admin sets it again");
		t = json_pack("{s:s%,s:s%,s:o,s:o}", "name", n.data ? n.data : "", n.len,
			      "description", d.data ? d.data : "", d.len, "inputSchema",
			      input_schema(json_object_get(a, "params")), "annotations",
			      annotations(risk, true));
		if (t && !n.oom && !d.oom)
			json_array_append_new(out, t);
		else
			json_decref(t);
		ad_buf_free(&n);
		ad_buf_free(&d);
	}
}

static int tool_cmp(const void *a, const void *b)
{
	return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "name")),
		      json_string_value(json_object_get(*(json_t *const *)b, "name")));
}

/* Answers tools/list: spec tools, and the adapter tools of available (may be NULL). */
static void list_answer(struct mcp_req *q, const json_t *available)
{
	json_t *all = json_array(), *page = json_array(), *res, *v;
	const struct ad_cred *cr = q->s->cred;
	size_t i, n;

	for (i = 0; i < ad_nspecs; i++)
		if (spec_tool_allowed(&ad_specs[i], cr))
			json_array_append_new(all, spec_tool(&ad_specs[i]));
	json_array_foreach(json_object_get(available, "integrations"), i, v)
		adapter_tools(all, v);
	n = json_array_size(all);
	{
		json_t **items = malloc((n ? n : 1) * sizeof(*items));

		if (items) {
			for (i = 0; i < n; i++)
				items[i] = json_array_get(all, i);
			qsort(items, n, sizeof(*items), tool_cmp);
			for (i = q->offset; i < n && i < q->offset + PAGE_SIZE; i++)
				json_array_append(page, items[i]);
			free(items);
		}
	}
	res = json_pack("{s:o}", "tools", page);
	if (q->offset + PAGE_SIZE < n) {
		char cur[32];

		snprintf(cur, sizeof(cur), "%zu", q->offset + PAGE_SIZE);
		json_object_set_new(res, "nextCursor", json_string(cur));
	}
	json_decref(all);
	req_result(q, res);
	json_decref(res);
}

static void start_list(struct mcp_session *s, struct mcp_stream *st, const json_t *id,
		       const json_t *params, const uint8_t ip[16])
{
	const json_t *cursor = json_object_get(params, "cursor");
	struct mcp_req *q;
	size_t offset = 0;

	if (cursor && !json_is_null(cursor)) {
		const char *c = json_string_value(cursor);
		char *end;
		unsigned long long v;

		if (!c || c[0] < '0' || c[0] > '9' || (v = strtoull(c, &end, 10), *end) ||
		    v > 1000000) {
			struct ad_buf b = AD_BUF_INIT;

			ad_rpc_write_error(&b, id, AD_RPC_INVALID_PARAMS, "Invalid cursor", NULL);
			stream_emit_buf(st, &b, true);
			ad_buf_free(&b);
			return;
		}
		offset = (size_t)v;
	}
	if (!(q = req_new(s, st, id, RQ_LIST, ip))) {
		struct ad_buf b = AD_BUF_INIT;

		ad_rpc_write_error(&b, id, AD_RPC_INTERNAL_ERROR, "Out of memory", NULL);
		stream_emit_buf(st, &b, true);
		ad_buf_free(&b);
		return;
	}
	q->offset = offset;
	if (s->cred->kind == AD_CRED_AGENT && s->cred->n_integrations) {
		json_t *none = json_object();

		/* The agent session's integrations, as the core tells them to it. */
		req_dispatch(q, "actions.available", none);
		json_decref(none);
		return;
	}
	list_answer(q, NULL);
}

static void list_answered(struct mcp_req *q, const json_t *doc)
{
	const json_t *err = json_object_get(doc, "error");

	if (err) {
		char msg[512];

		snprintf(msg, sizeof(msg), "The integration tools could not be listed: %s",
			 json_string_value(json_object_get(err, "message"))
			 ? json_string_value(json_object_get(err, "message")) : "error");
		req_error(q, AD_RPC_INTERNAL_ERROR, msg);
		return;
	}
	list_answer(q, json_object_get(doc, "result"));
}

/* ---- tools/call ----------------------------------------------------------------- */

/* Answers a CallToolResult: text (the JSON of what came) and, for an object, structuredContent. */
static void call_result(struct mcp_req *q, const json_t *value, bool is_error, const char *text)
{
	char *dump = text || !value ? NULL : json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
	json_t *res = json_pack("{s:[{s:s,s:s}]}", "content", "type", "text", "text",
				text ? text : dump ? dump : "");

	free(dump);
	if (!res) {
		req_error(q, AD_RPC_INTERNAL_ERROR, "Out of memory");
		return;
	}
	if (json_is_object(value))
		json_object_set(res, "structuredContent", (json_t *)value);
	if (is_error)
		json_object_set_new(res, "isError", json_true());
	req_result(q, res);
	json_decref(res);
}

/* A JSON-RPC error of the action, as a tool execution error. */
static void call_failed(struct mcp_req *q, const json_t *err)
{
	const char *message = json_string_value(json_object_get(err, "message"));
	const json_t *data = json_object_get(err, "data");
	struct ad_buf t = AD_BUF_INIT;
	json_t *sc = json_pack("{s:O}", "error", (json_t *)err);

	ad_buf_puts(&t, message ? message : "Error");
	if (data) {
		ad_buf_putc(&t, ' ');
		ad_buf_json(&t, data);
	}
	call_result(q, sc, true, t.oom ? "Error" : t.data);
	json_decref(sc);
	ad_buf_free(&t);
}

static bool terminal(const char *status)
{
	return status && (!strcmp(status, "completed") || !strcmp(status, "failed") ||
			  !strcmp(status, "denied") || !strcmp(status, "expired"));
}

/* An invocation that ended: its outcome as the tool's result. */
static void call_outcome(struct mcp_req *q, const json_t *inv)
{
	const char *status = json_string_value(json_object_get(inv, "status"));
	const char *error = json_string_value(json_object_get(inv, "error"));
	const char *reason = json_string_value(json_object_get(inv, "reason"));
	const char *by = json_string_value(json_object_get(inv, "decided_by"));
	const json_t *up = json_object_get(inv, "upstream_status");
	char text[1024];

	if (!strcmp(status, "completed")) {
		call_result(q, inv, false, NULL);
		return;
	}
	if (!strcmp(status, "failed") && json_is_integer(up))
		snprintf(text, sizeof(text), "Invocation %s failed: %s (upstream status %lld)",
			 q->invocation, error ? error : "upstream failure",
			 (long long)json_integer_value(up));
	else if (!strcmp(status, "failed"))
		snprintf(text, sizeof(text), "Invocation %s failed: %s", q->invocation,
			 error ? error : "upstream failure");
	else if (!strcmp(status, "denied"))
		snprintf(text, sizeof(text), "Invocation %s was denied%s%s%s%s", q->invocation,
			 by ? " by " : "", by ? by : "", reason ? ": " : "", reason ? reason : "");
	else
		snprintf(text, sizeof(text), "Invocation %s expired: no admin approved it before its "
			 "deadline%s%s", q->invocation, reason ? " - " : "", reason ? reason : "");
	call_result(q, inv, true, text);
}

/* Progress for the approval stages the invocation has reached. */
static void call_stages(struct mcp_req *q, const json_t *inv)
{
	const char *status = json_string_value(json_object_get(inv, "status"));
	const char *by = json_string_value(json_object_get(inv, "decided_by"));
	bool decided = json_is_string(json_object_get(inv, "decided_at"));
	bool approved = decided && status && strcmp(status, "denied") && strcmp(status, "expired");
	bool executing = (status && !strcmp(status, "executing")) ||
			 json_is_string(json_object_get(inv, "started_at"));

	if (q->stage < 2 && approved) {
		char msg[256];

		q->stage = 2;
		snprintf(msg, sizeof(msg), "approved%s%s", by ? " by " : "", by ? by : "");
		req_progress(q, 4, msg);
	}
	if (q->stage < 3 && executing && status && strcmp(status, "denied") &&
	    strcmp(status, "expired")) {
		q->stage = 3;
		req_progress(q, 4, "executing");
	}
}

/* The answer of one invocations.wait. */
static void wait_answered(struct mcp_req *q, const json_t *doc)
{
	const json_t *err = json_object_get(doc, "error");
	const json_t *inv = json_object_get(doc, "result");
	const char *status = json_string_value(json_object_get(inv, "status"));

	if (q->draining) {
		char text[256];

		snprintf(text, sizeof(text), "The server is shutting down; invocation %s is still "
			 "%s and may yet be decided", q->invocation, status ? status : "pending");
		call_result(q, json_object_get(doc, "result"), true, text);
		return;
	}
	if (err) {
		const json_t *data = json_object_get(err, "data");
		const char *reason = json_string_value(json_object_get(data, "reason"));
		json_int_t retry = json_integer_value(json_object_get(data, "retry_after_ms"));

		if (reason && !strcmp(reason, "rate_limited")) {
			q->sleeping = true;
			q->wake_us = lws_now_usecs() + (retry > 0 ? retry : 1000) * 1000;
			return;
		}
		call_failed(q, err);
		return;
	}
	call_stages(q, inv);
	if (terminal(status)) {
		call_outcome(q, inv);
		return;
	}
	if (lws_now_usecs() - q->wait_started_us < 200 * 1000) {
		/* It answered at once without an outcome: not in a loop. */
		q->sleeping = true;
		q->wake_us = lws_now_usecs() + 500 * 1000;
		return;
	}
	wait_next(q);
}

/* Waits a slice for the invocation's outcome, through the core. */
static void wait_next(struct mcp_req *q)
{
	json_t *p;

	q->sleeping = false;
	if (ad_srv.draining) {
		char text[256];

		snprintf(text, sizeof(text), "The server is shutting down; invocation %s is still "
			 "pending and may yet be decided", q->invocation);
		call_result(q, NULL, true, text);
		return;
	}
	if (q->deadline_unix && (int64_t)time(NULL) > q->deadline_unix + 30) {
		char text[256];

		snprintf(text, sizeof(text), "Invocation %s has no outcome 30 s after its deadline",
			 q->invocation);
		call_result(q, NULL, true, text);
		return;
	}
	p = json_pack("{s:s,s:i}", "invocation_id", q->invocation, "timeout_ms", WAIT_SLICE_MS);
	q->wait_started_us = lws_now_usecs();
	req_dispatch(q, "invocations.wait", p);
	json_decref(p);
}

static void call_answered(struct mcp_req *q, const json_t *doc)
{
	const json_t *err = json_object_get(doc, "error");
	const json_t *res = json_object_get(doc, "result");
	const char *status;

	if (q->waiting) {
		wait_answered(q, doc);
		return;
	}
	if (err) {
		const json_t *data = json_object_get(err, "data");
		const char *ptr = json_string_value(json_object_get(data, "pointer"));
		json_int_t code = json_integer_value(json_object_get(err, "code"));

		if (q->adapter && code == AD_RPC_INVALID_PARAMS && ptr &&
		    (!strcmp(ptr, "/action") || !strcmp(ptr, "/integration"))) {
			char msg[200];

			snprintf(msg, sizeof(msg), "Unknown tool: %.150s", q->tool);
			req_error(q, AD_RPC_INVALID_PARAMS, msg);
			return;
		}
		call_failed(q, err);
		return;
	}
	if (!q->adapter) {
		call_result(q, res, false, NULL);
		return;
	}
	status = json_string_value(json_object_get(res, "status"));
	if (status && !strcmp(status, "pending")) {
		const char *id = json_string_value(json_object_get(res, "invocation_id"));
		const char *deadline = json_string_value(json_object_get(res, "deadline"));
		char msg[256];

		snprintf(q->invocation, sizeof(q->invocation), "%s", id ? id : "");
		q->deadline_unix = iso_seconds(deadline);
		stream_to_sse(q->st);
		if (q->st->mode != ST_SSE || !q->invocation[0]) {
			/* A client that takes JSON only gets the pending state. */
			char text[512];

			snprintf(text, sizeof(text), "Invocation %s is pending: it runs once an admin "
				 "approves it (deadline %s); this client takes no event stream, so the "
				 "outcome is not awaited here", q->invocation, deadline ? deadline : "-");
			call_result(q, res, false, text);
			return;
		}
		q->stage = 1;
		q->waiting = true;
		snprintf(msg, sizeof(msg), "pending: invocation %s waits for an admin's approval "
			 "until %s", q->invocation, deadline ? deadline : "its deadline");
		req_progress(q, 4, msg);
		wait_next(q);
		return;
	}
	if (terminal(status)) {
		const char *iid = json_string_value(json_object_get(res, "invocation_id"));

		snprintf(q->invocation, sizeof(q->invocation), "%s", iid ? iid : "");
		call_outcome(q, res);
		return;
	}
	call_result(q, res, false, NULL);
}

static void start_call(struct mcp_session *s, struct mcp_stream *st, const json_t *id,
		       const json_t *params, const uint8_t ip[16])
{
	const char *name = json_string_value(json_object_get(params, "name"));
	const json_t *args = json_object_get(params, "arguments");
	const json_t *meta = json_object_get(params, "_meta");
	const json_t *token = json_object_get(meta, "progressToken");
	const json_t *idem = json_object_get(meta, IDEMPOTENCY_META);
	const struct ad_cred *cr = s->cred;
	const struct ad_spec *sp = NULL;
	const char *dot = name ? strchr(name, '.') : NULL;
	struct ad_buf b = AD_BUF_INIT;
	struct mcp_req *q;
	bool adapter;
	json_t *inner;

	if (!name || (args && !json_is_object(args)) || (meta && !json_is_object(meta)) ||
	    (token && !json_is_string(token) && !json_is_integer(token)) ||
	    (idem && !json_is_string(idem))) {
		ad_rpc_write_error(&b, id, AD_RPC_INVALID_PARAMS,
				   "Invalid params: tools/call takes {name, arguments?, _meta?}", NULL);
		goto answer;
	}
	adapter = dot && dot[1] && cred_has_integration(cr, name, (size_t)(dot - name));
	if (!adapter) {
		sp = ad_spec_find(name, strlen(name));
		if (!sp || !spec_tool_allowed(sp, cr)) {
			char msg[200];

			snprintf(msg, sizeof(msg), "Unknown tool: %.150s", name);
			ad_rpc_write_error(&b, id, AD_RPC_INVALID_PARAMS, msg, NULL);
			goto answer;
		}
	}
	if (!(q = req_new(s, st, id, RQ_CALL, ip)) || !(q->tool = strdup(name))) {
		if (q)
			req_end(q);
		ad_rpc_write_error(&b, id, AD_RPC_INTERNAL_ERROR, "Out of memory", NULL);
		goto answer;
	}
	st_stats.tool_calls++;
	q->adapter = adapter;
	q->token = json_incref((json_t *)token);
	if (adapter) {
		char integ[64];

		snprintf(integ, sizeof(integ), "%.*s", (int)(dot - name), name);
		inner = json_pack("{s:s,s:s,s:o}", "integration", integ, "action", dot + 1,
				  "params", args ? json_incref((json_t *)args) : json_object());
		if (inner && idem)
			json_object_set(inner, "idempotency_key", (json_t *)idem);
		req_dispatch(q, "actions.invoke", inner);
		json_decref(inner);
		return;
	}
	if (!args) {
		inner = json_object();
		req_dispatch(q, sp->method, inner);
		json_decref(inner);
		return;
	}
	req_dispatch(q, sp->method, args);
	return;
answer:
	stream_emit_buf(st, &b, true);
	ad_buf_free(&b);
}

/* ---- the requester of requests ------------------------------------------------ */

static void req_deliver(struct ad_requester *r, const char *json, size_t len,
			const struct ad_answer_meta *meta)
{
	struct mcp_req *q = ad_container_of(r, struct mcp_req, req);
	json_t *doc;

	(void)meta;
	q->inner = false;
	if (q->cancelled) {
		req_drop(q);
		return;
	}
	doc = json_loadb(json, len, 0, NULL);
	if (!doc) {
		req_error(q, AD_RPC_INTERNAL_ERROR, "Internal error");
		return;
	}
	if (q->kind == RQ_LIST)
		list_answered(q, doc);
	else
		call_answered(q, doc);
	json_decref(doc);
}

/* A handler's progress (ad_call_progress) as notifications/progress. */
static void req_notify(struct ad_requester *r, const char *json, size_t len)
{
	struct mcp_req *q = ad_container_of(r, struct mcp_req, req);
	json_t *doc, *p;
	char *msg;

	if (!q->token || q->cancelled)
		return;
	doc = json_loadb(json, len, 0, NULL);
	p = json_object_get(doc, "params");
	if (json_is_object(p))
		json_object_del(p, "request_id");
	msg = p ? json_dumps(p, JSON_COMPACT) : NULL;
	req_progress(q, 0, msg);
	free(msg);
	json_decref(doc);
}

static const struct ad_requester_ops req_ops = {
	.deliver = req_deliver,
	.notify = req_notify,
	.transport = AD_TRANSPORT_HTTP,
};

/* notifications/cancelled: the request ends without an answer. */
static void cancel_request(struct mcp_session *s, const json_t *rid)
{
	struct ad_list *pos, *tmp;

	if (!rid)
		return;
	ad_list_foreach_safe(pos, tmp, &s->reqs) {
		struct mcp_req *q = ad_container_of(pos, struct mcp_req, node);

		if (!json_equal(q->id, (json_t *)rid))
			continue;
		q->cancelled = true;
		if (q->inner) {
			json_t *one = json_integer(1);
			bool found = ad_dispatch_cancel(&q->req, one); /* delivers: q goes */

			json_decref(one);
			if (found)
				return;
		}
		req_drop(q);
		return;
	}
}

/* ---- POST ------------------------------------------------------------------------ */

enum msg_kind { M_INVALID, M_REQUEST, M_NOTIFICATION, M_RESPONSE };

static enum msg_kind classify(const json_t *m, const char **why)
{
	const json_t *id, *v;

	*why = NULL;
	if (!json_is_object(m)) {
		*why = "a message must be an object";
		return M_INVALID;
	}
	v = json_object_get(m, "jsonrpc");
	if (!json_is_string(v) || strcmp(json_string_value(v), "2.0")) {
		*why = "jsonrpc must be \"2.0\"";
		return M_INVALID;
	}
	id = json_object_get(m, "id");
	if (json_object_get(m, "method")) {
		if (!json_is_string(json_object_get(m, "method"))) {
			*why = "method must be a string";
			return M_INVALID;
		}
		if ((v = json_object_get(m, "params")) && !json_is_object(v)) {
			*why = "params must be an object";
			return M_INVALID;
		}
		if (!id)
			return M_NOTIFICATION;
		if (!json_is_string(id) && !json_is_integer(id)) {
			*why = "id must be a string or an integer";
			return M_INVALID;
		}
		return M_REQUEST;
	}
	if (id && (json_object_get(m, "result") || json_object_get(m, "error")))
		return M_RESPONSE;
	*why = "neither a request, a notification nor a response";
	return M_INVALID;
}

static void handle_notification(struct mcp_session *s, const json_t *m)
{
	const char *method = json_string_value(json_object_get(m, "method"));
	const json_t *params = json_object_get(m, "params");

	if (!strcmp(method, "notifications/cancelled"))
		cancel_request(s, json_object_get(params, "requestId"));
	/* notifications/initialized and the rest: nothing to do. */
}

static void handle_request(struct mcp_session *s, struct mcp_stream *st, const json_t *m,
			   const uint8_t ip[16])
{
	const char *method = json_string_value(json_object_get(m, "method"));
	const json_t *id = json_object_get(m, "id");
	const json_t *params = json_object_get(m, "params");
	json_t *empty = NULL;
	struct ad_buf b = AD_BUF_INIT;

	if (!params)
		params = empty = json_object();
	if (!strcmp(method, "tools/call")) {
		start_call(s, st, id, params, ip);
	} else if (!strcmp(method, "tools/list")) {
		start_list(s, st, id, params, ip);
	} else if (!strcmp(method, "ping")) {
		ad_rpc_write_raw_result(&b, id, "{}", 2);
		stream_emit_buf(st, &b, true);
	} else if (!strcmp(method, "initialize")) {
		ad_rpc_write_error(&b, id, AD_RPC_INVALID_REQUEST,
				   "This session is initialized already", NULL);
		stream_emit_buf(st, &b, true);
	} else {
		json_t *d = json_pack("{s:s}", "method", method);

		ad_rpc_write_error(&b, id, AD_RPC_METHOD_NOT_FOUND, "Method not found", d);
		json_decref(d);
		stream_emit_buf(st, &b, true);
	}
	ad_buf_free(&b);
	json_decref(empty);
}

/* The least recently used idle session of cr, or NULL. */
static struct mcp_session *evictable(struct ad_cred *cr, size_t *ret_count)
{
	struct mcp_session *lru = NULL;
	struct ad_list *pos, *tmp;

	*ret_count = 0;
	if (!cr->links.next)
		return NULL;
	ad_list_foreach_safe(pos, tmp, &cr->links) {
		struct ad_cred_link *l = ad_container_of(pos, struct ad_cred_link, node);
		struct mcp_session *s;

		if (l->revoked != session_revoked)
			continue;
		s = ad_container_of(l, struct mcp_session, link);
		(*ret_count)++;
		if (session_idle(s) && (!lru || s->last_used_us < lru->last_used_us))
			lru = s;
	}
	return lru;
}

static int do_initialize(struct ad_http_exchange *h, struct lws *wsi, const json_t *m)
{
	const json_t *id = json_object_get(m, "id");
	const json_t *params = json_object_get(m, "params");
	const char *want = json_string_value(json_object_get(params, "protocolVersion"));
	struct ad_cred *cr = h->req.cred;
	struct mcp_session *s, *old;
	struct ad_buf b = AD_BUF_INIT;
	uint8_t raw[16];
	struct hdr extra[1];
	size_t count;
	json_t *res;
	int r;

	if (!want) {
		ad_rpc_write_error(&b, id, AD_RPC_INVALID_PARAMS,
				   "Invalid params: initialize needs protocolVersion", NULL);
		r = answer_now(h, wsi, 400, "application/json", b.data, b.len, NULL, 0);
		ad_buf_free(&b);
		return r;
	}
	old = evictable(cr, &count);
	if (count >= ad_srv.cfg.mcp_sessions) {
		if (!old)
			return refuse(h, wsi, 429, ad_reason_code(AD_REASON_RATE_LIMITED),
				      "rate_limited",
				      "This credential has as many MCP sessions as allowed, all "
				      "busy; end one (DELETE /mcp)");
		session_end(old, END_EVICTED, NULL, NULL);
	}
	if (!(s = calloc(1, sizeof(*s))))
		return -1;
	randombytes_buf(raw, sizeof(raw));
	hex(raw, sizeof(raw), s->id);
	snprintf(s->version, sizeof(s->version), "%s", version_supported(want) ? want : V_LATEST);
	s->cred = ad_cred_ref(cr);
	s->last_used_us = lws_now_usecs();
	s->link.revoked = session_revoked;
	ad_list_init(&s->streams);
	ad_list_init(&s->reqs);
	ad_list_init(&s->events);
	ad_cred_link_add(cr, &s->link);
	ad_list_add_tail(&sessions, &s->node);
	ad_list_add_tail(&buckets[bucket_of(s->id)], &s->bucket);
	st_stats.sessions_open++;
	st_stats.sessions_created++;

	res = json_pack("{s:s,s:{s:{s:b}},s:{s:s,s:s,s:s},s:s}", "protocolVersion", s->version,
			"capabilities", "tools", "listChanged", 0, "serverInfo", "name", "actiond",
			"title", "actiond", "version", ACTIOND_VERSION, "instructions",
			"actiond's actions as tools. Integration tools of risk write wait for an "
			"admin's approval; progress notifications tell how far they are.");
	ad_rpc_write_result(&b, id, res);
	json_decref(res);
	extra[0] = (struct hdr){ SESSION_HEADER, s->id };
	r = b.oom ? -1 : answer_now(h, wsi, 200, "application/json", b.data, b.len, extra, 1);
	ad_buf_free(&b);
	return r;
}

int ad_mcp_body(struct ad_http_exchange *h, struct lws *wsi)
{
	struct ad_mcp_conn *c = h->mcp;
	const char *data = h->body.data ? h->body.data : "";
	struct mcp_session *s;
	struct mcp_stream *st;
	json_error_t jerr;
	json_t *doc, *m;
	size_t n, i, nanswer = 0, ninit = 0;
	const char *why;
	int r;

	if (h->too_big)
		return refuse_reason(h, wsi, AD_REASON_PAYLOAD_TOO_LARGE,
				     "The body is larger than allowed");
	h->body_unread = false;
	st_stats.posts++;
	if (ad_json_too_deep(data, h->body.len, ad_srv.cfg.max_depth))
		return refuse(h, wsi, 400, AD_RPC_INVALID_REQUEST, "payload_too_large",
			      "JSON nested too deeply");
	doc = ad_json_loadb(data, h->body.len, JSON_REJECT_DUPLICATES, &jerr);
	if (!doc) {
		char msg[256];

		snprintf(msg, sizeof(msg), "Parse error: %s (line %d, column %d)", jerr.text,
			 jerr.line, jerr.column);
		return refuse(h, wsi, 400, AD_RPC_PARSE_ERROR, "parse_error", msg);
	}
	n = json_is_array(doc) ? json_array_size(doc) : 1;
	if (json_is_array(doc) && n == 0) {
		json_decref(doc);
		return refuse(h, wsi, 400, AD_RPC_INVALID_REQUEST, "invalid_request",
			      "An empty batch is not a message");
	}
	if (n > ad_srv.cfg.max_batch) {
		char msg[128];

		json_decref(doc);
		snprintf(msg, sizeof(msg), "Batch too long (limits.max_batch is %u)",
			 ad_srv.cfg.max_batch);
		return refuse(h, wsi, 400, AD_RPC_INVALID_REQUEST, "payload_too_large", msg);
	}
	for (i = 0; i < n; i++) {
		enum msg_kind k;

		m = json_is_array(doc) ? json_array_get(doc, i) : doc;
		k = classify(m, &why);
		if (k == M_REQUEST || k == M_INVALID)
			nanswer++;
		if (k == M_REQUEST &&
		    !strcmp(json_string_value(json_object_get(m, "method")), "initialize"))
			ninit++;
	}
	if (ninit) {
		if (json_is_array(doc)) {
			json_decref(doc);
			return refuse(h, wsi, 400, AD_RPC_INVALID_REQUEST, "invalid_request",
				      "initialize must be sent alone, not in a batch");
		}
		r = do_initialize(h, wsi, doc);
		json_decref(doc);
		return r;
	}
	if (!(s = session_of(h, wsi, &r))) {
		json_decref(doc);
		return r;
	}
	if (!nanswer) {
		/* Notifications and responses: accepted, answered with nothing. */
		for (i = 0; i < n; i++) {
			m = json_is_array(doc) ? json_array_get(doc, i) : doc;
			if (classify(m, &why) == M_NOTIFICATION)
				handle_notification(s, m);
		}
		json_decref(doc);
		return answer_now(h, wsi, 202, NULL, NULL, 0, NULL, 0);
	}
	if (!(st = stream_new(s))) {
		json_decref(doc);
		return -1;
	}
	st->json_ok = c->json_ok;
	/* Past the cap of open streams a POST is answered as JSON. */
	st->sse_ok = c->sse_ok && s->open_sse < ad_srv.cfg.mcp_streams;
	if (!st->json_ok && !st->sse_ok) {
		stream_free(st);
		json_decref(doc);
		return refuse(h, wsi, 429, ad_reason_code(AD_REASON_RATE_LIMITED), "rate_limited",
			      "This MCP session has as many open streams as allowed");
	}
	st->batch = json_is_array(doc);
	st->open = (uint32_t)nanswer + 1;
	st->conn = c;
	c->st = st;
	conn_quiet(c);
	if (!st->json_ok)
		stream_to_sse(st);
	for (i = 0; i < n; i++) {
		m = json_is_array(doc) ? json_array_get(doc, i) : doc;
		switch (classify(m, &why)) {
		case M_REQUEST:
			handle_request(s, st, m, h->req.ip);
			break;
		case M_NOTIFICATION:
			handle_notification(s, m);
			break;
		case M_INVALID: {
			struct ad_buf b = AD_BUF_INIT;
			json_t *id = json_is_object(m) ? json_object_get(m, "id") : NULL;
			json_t *d = json_pack("{s:s}", "detail", why);

			if (id && !json_is_string(id) && !json_is_integer(id))
				id = NULL;
			ad_rpc_write_error(&b, id, AD_RPC_INVALID_REQUEST, "Invalid Request", d);
			json_decref(d);
			stream_emit_buf(st, &b, true);
			ad_buf_free(&b);
			break;
		}
		default:
			break;
		}
	}
	json_decref(doc);
	stream_answered(st); /* the one held while reading */
	return 0;
}

/* ---- GET and DELETE -------------------------------------------------------------- */

/* A new GET stream: what the server says unasked goes on the newest one. */
static int open_standalone(struct ad_http_exchange *h, struct lws *wsi, struct mcp_session *s)
{
	struct mcp_stream *st;
	struct ad_mcp_conn *c;

	if (s->open_sse >= ad_srv.cfg.mcp_streams)
		return refuse(h, wsi, 429, ad_reason_code(AD_REASON_RATE_LIMITED), "rate_limited",
			      "This MCP session has as many open streams as allowed");
	if (!(st = stream_new(s)))
		return -1;
	st->standalone = true;
	st->mode = ST_SSE;
	st->sse_ok = true;
	s->standalone = st;
	if (!(c = conn_new(h, wsi))) {
		stream_free(st);
		return -1;
	}
	c->sse_ok = true;
	conn_quiet(c);
	stream_attach_sse(st, c);
	stream_prime(st);
	return 0;
}

/*
 * GET with Last-Event-ID "S-N" (a POST's stream) or "gS-N" (a GET's): the
 * stream takes over this connection, from after event N on.
 */
static int resume(struct ad_http_exchange *h, struct lws *wsi, struct mcp_session *s,
		  const char *last)
{
	bool get_stream = last[0] == 'g';
	unsigned sid;
	unsigned long long seq;
	char tail;
	struct mcp_stream *st = NULL;
	struct ad_list *pos, *tmp;
	struct ad_mcp_conn *c, *old;
	size_t replay = 0;

	if (sscanf(last + get_stream, "%u-%llu%c", &sid, &seq, &tail) != 2 || !sid ||
	    sid > s->next_stream || seq > s->next_seq)
		return refuse(h, wsi, 400, AD_RPC_INVALID_REQUEST, "invalid_request",
			      "Last-Event-ID names no event of this session");
	ad_list_foreach_safe(pos, tmp, &s->streams) {
		struct mcp_stream *x = ad_container_of(pos, struct mcp_stream, node);

		if (x->id == sid)
			st = x;
	}
	if (st && (st->standalone != get_stream || st->mode != ST_SSE))
		return refuse(h, wsi, 400, AD_RPC_INVALID_REQUEST, "invalid_request",
			      "Last-Event-ID names no event of this session");
	if (!st) {
		/* Gone: a GET stream with nothing kept starts afresh; a POST's is over. */
		if (get_stream)
			return open_standalone(h, wsi, s);
		return answer_now(h, wsi, 204, NULL, NULL, 0, NULL, 0);
	}
	ad_list_foreach_safe(pos, tmp, &s->events) {
		struct mcp_event *ev = ad_container_of(pos, struct mcp_event, node);

		if (ev->st == st && ev->seq > seq)
			replay++;
	}
	if (st->finished && !replay && !st->open)
		return answer_now(h, wsi, 204, NULL, NULL, 0, NULL, 0); /* nothing more */
	old = st->conn;
	if (!old && s->open_sse >= ad_srv.cfg.mcp_streams)
		return refuse(h, wsi, 429, ad_reason_code(AD_REASON_RATE_LIMITED), "rate_limited",
			      "This MCP session has as many open streams as allowed");
	if (old) {
		/* The client left it: the old connection ends and is hung up on. */
		old->st = NULL;
		st->conn = NULL;
		conn_uncount(old);
		conn_end(old, true);
	}
	if (!(c = conn_new(h, wsi)))
		return -1;
	c->sse_ok = true;
	conn_quiet(c);
	stream_attach_sse(st, c);
	st_stats.replays++;
	ad_list_foreach_safe(pos, tmp, &s->events) {
		struct mcp_event *ev = ad_container_of(pos, struct mcp_event, node);

		if (ev->st == st && ev->seq > seq) {
			conn_chunk(c, ev->text, ev->len);
			st_stats.events_replayed++;
		}
	}
	if (st->finished)
		conn_end(c, false);
	if (st->standalone)
		s->standalone = st;
	return 0;
}

static int open_get(struct ad_http_exchange *h, struct lws *wsi, struct mcp_session *s)
{
	char last[128];
	int n = custom_header(wsi, LAST_EVENT_HEADER, last, sizeof(last));

	if (n >= 0)
		return resume(h, wsi, s, last);
	if (n == -2)
		return refuse(h, wsi, 400, AD_RPC_INVALID_REQUEST, "invalid_request",
			      "Malformed Last-Event-ID");
	return open_standalone(h, wsi, s);
}

int ad_mcp_request(struct ad_http_exchange *h, struct lws *wsi)
{
	bool get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;
	bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
	bool del = lws_hdr_total_length(wsi, WSI_TOKEN_DELETE_URI) > 0;
	bool json_ok, sse_ok;
	struct mcp_session *s;
	const char *why;
	int r;

	if (!get && !post && !del)
		return refuse(h, wsi, 405, AD_RPC_INVALID_REQUEST, "method_not_allowed",
			      "/mcp takes GET, POST and DELETE");
	if (!origin_ok(wsi))
		return refuse(h, wsi, 403, ad_reason_code(AD_REASON_FORBIDDEN), "forbidden",
			      "Origin not allowed");
	if (ad_srv.draining)
		return refuse_reason(h, wsi, AD_REASON_UNAVAILABLE, "The server is shutting down");
	h->req.cred = ad_ws_authenticate(wsi, &why);
	if (!h->req.cred)
		return refuse(h, wsi, !strcmp(why, "Origin not allowed") ? 403 : 401,
			      ad_reason_code(!strcmp(why, "Origin not allowed")
					     ? AD_REASON_FORBIDDEN : AD_REASON_UNAUTHENTICATED),
			      !strcmp(why, "Origin not allowed") ? "forbidden" : "unauthenticated",
			      why);
	accepts(wsi, &json_ok, &sse_ok);
	if (http10(wsi))
		sse_ok = false; /* SSE goes out chunked, which HTTP/1.0 lacks */
	if (post) {
		char cl[32], ct[128], *end;
		unsigned long long len;
		struct ad_mcp_conn *c;

		if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0)
			return refuse(h, wsi, 411, AD_RPC_INVALID_REQUEST, "length_required",
				      "POST /mcp needs a Content-Length (no chunked bodies)");
		if (lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0 ||
		    cl[0] < '0' || cl[0] > '9' || (len = strtoull(cl, &end, 10), *end))
			return refuse(h, wsi, 400, AD_RPC_INVALID_REQUEST, "invalid_request",
				      "Malformed Content-Length");
		if (len > ad_srv.cfg.max_message)
			return refuse_reason(h, wsi, AD_REASON_PAYLOAD_TOO_LARGE,
					     "The body is larger than allowed");
		if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE) > 0 &&
		    (lws_hdr_copy(wsi, ct, sizeof(ct), WSI_TOKEN_HTTP_CONTENT_TYPE) <= 0 ||
		     strncasecmp(ct, "application/json", 16) ||
		     (ct[16] && ct[16] != ';' && ct[16] != ' ')))
			return refuse(h, wsi, 415, AD_RPC_INVALID_REQUEST, "invalid_request",
				      "POST /mcp takes Content-Type: application/json");
		if (!json_ok && !sse_ok)
			return refuse(h, wsi, 406, AD_RPC_INVALID_REQUEST, "not_acceptable",
				      "Accept application/json and text/event-stream");
		if (!(c = conn_new(h, wsi)))
			return -1;
		c->json_ok = json_ok;
		c->sse_ok = sse_ok;
		h->body_limit = ad_srv.cfg.max_message;
		return 0; /* the body follows */
	}
	if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0)
		return refuse(h, wsi, 400, AD_RPC_INVALID_REQUEST, "invalid_request",
			      "GET and DELETE /mcp take no body");
	if (!(s = session_of(h, wsi, &r)))
		return r;
	if (del) {
		session_end(s, END_DELETED, NULL, NULL);
		return answer_now(h, wsi, 204, NULL, NULL, 0, NULL, 0);
	}
	if (!sse_ok)
		return refuse(h, wsi, 406, AD_RPC_INVALID_REQUEST, "not_acceptable",
			      "GET /mcp answers text/event-stream only (over HTTP/1.1)");
	return open_get(h, wsi, s);
}

/* ---- the sweep, the drain ----------------------------------------------------- */

static void sweep(lws_sorted_usec_list_t *sul)
{
	int64_t now = lws_now_usecs(), keep = (int64_t)ad_srv.cfg.mcp_keepalive_ms * 1000;
	int64_t idle = (int64_t)ad_srv.cfg.mcp_idle_ms * 1000;
	struct ad_list *pos, *tmp, *p2, *t2;

	ad_list_foreach_safe(pos, tmp, &conns) {
		struct ad_mcp_conn *c = ad_container_of(pos, struct ad_mcp_conn, node);
		struct mcp_stream *st = c->st;

		if (c->ending)
			continue;
		if (conn_gone(c)) {
			lws_set_timeout(c->wsi, PENDING_TIMEOUT_HTTP_CONTENT, LWS_TO_KILL_ASYNC);
			continue;
		}
		if (st && st->mode == ST_UNDECIDED && st->sse_ok &&
		    now - st->created_us >= SSE_AFTER_US)
			stream_to_sse(st);
		if (c->sse && now - c->last_write_us >= keep) {
			c->last_write_us = now;
			conn_chunk(c, ": ping\n\n", 8);
		}
	}
	ad_list_foreach_safe(pos, tmp, &sessions) {
		struct mcp_session *s = ad_container_of(pos, struct mcp_session, node);

		ad_list_foreach_safe(p2, t2, &s->reqs) {
			struct mcp_req *q = ad_container_of(p2, struct mcp_req, node);

			if (q->sleeping && now >= q->wake_us) {
				wait_next(q);
				/* q and its neighbours may be gone: the rest next time. */
				break;
			}
		}
	}
	ad_list_foreach_safe(pos, tmp, &sessions) {
		struct mcp_session *s = ad_container_of(pos, struct mcp_session, node);

		if (session_idle(s) && now - s->last_used_us >= idle)
			session_end(s, END_IDLE, NULL, NULL);
	}
	lws_sul_schedule(ad_srv.lws, 0, sul, sweep, SWEEP_US);
}

void ad_mcp_drain(void)
{
	struct ad_list *pos, *tmp, *p2, *t2;

	if (!ready)
		return;
	ad_list_foreach_safe(pos, tmp, &sessions) {
		struct mcp_session *s = ad_container_of(pos, struct mcp_session, node);
		bool again = true;

		/* Approval waits stop: the client hears that the decision is still to come. */
		while (again) {
			again = false;
			ad_list_foreach_safe(p2, t2, &s->reqs) {
				struct mcp_req *q = ad_container_of(p2, struct mcp_req, node);

				if (!q->waiting || q->draining)
					continue;
				q->draining = true;
				if (q->inner) {
					json_t *one = json_integer(1);

					ad_dispatch_cancel(&q->req, one);
					json_decref(one);
				} else {
					wait_next(q);
				}
				again = true;
				break;
			}
		}
		/* The GET streams end now; POST streams once their answers are out. */
		ad_list_foreach_safe(p2, t2, &s->streams) {
			struct mcp_stream *st = ad_container_of(p2, struct mcp_stream, node);
			struct ad_mcp_conn *c = st->conn;

			if (!st->standalone || !c)
				continue;
			c->st = NULL;
			st->conn = NULL;
			conn_uncount(c);
			conn_end(c, true);
			stream_maybe_free(st);
		}
	}
}

void ad_mcp_init(void)
{
	ad_list_init(&sessions);
	ad_list_init(&conns);
	for (size_t i = 0; i < NBUCKETS; i++)
		ad_list_init(&buckets[i]);
	lws_sul_schedule(ad_srv.lws, 0, &sweep_sul, sweep, SWEEP_US);
	ready = true;
}

void ad_mcp_free(void)
{
	struct ad_list *pos, *tmp;

	if (!ready)
		return;
	lws_sul_cancel(&sweep_sul);
	ad_list_foreach_safe(pos, tmp, &sessions)
		session_end(ad_container_of(pos, struct mcp_session, node), END_SHUTDOWN, NULL, NULL);
	ready = false;
}

void ad_mcp_metrics(struct ad_buf *b)
{
	ad_buf_metric(b, "actiond_mcp_sessions", "gauge", "Open MCP sessions.",
		      st_stats.sessions_open);
	ad_buf_metric(b, "actiond_mcp_sessions_created_total", "counter",
		      "MCP sessions initialized.", st_stats.sessions_created);
	ad_buf_puts(b, "# HELP actiond_mcp_sessions_ended_total MCP sessions ended, by why.\n"
		       "# TYPE actiond_mcp_sessions_ended_total counter\n");
	ad_buf_printf(b, "actiond_mcp_sessions_ended_total{why=\"revoked\"} %llu\n"
			 "actiond_mcp_sessions_ended_total{why=\"deleted\"} %llu\n"
			 "actiond_mcp_sessions_ended_total{why=\"idle\"} %llu\n"
			 "actiond_mcp_sessions_ended_total{why=\"evicted\"} %llu\n",
		      (unsigned long long)st_stats.sessions_ended_revoked,
		      (unsigned long long)st_stats.sessions_ended_deleted,
		      (unsigned long long)st_stats.sessions_ended_idle,
		      (unsigned long long)st_stats.sessions_evicted);
	ad_buf_metric(b, "actiond_mcp_streams", "gauge", "Open MCP SSE streams.",
		      st_stats.streams_open);
	ad_buf_metric(b, "actiond_mcp_posts_total", "counter", "POST /mcp bodies read.",
		      st_stats.posts);
	ad_buf_metric(b, "actiond_mcp_tool_calls_total", "counter", "MCP tools/call started.",
		      st_stats.tool_calls);
	ad_buf_metric(b, "actiond_mcp_resumptions_total", "counter",
		      "MCP streams resumed with Last-Event-ID.", st_stats.replays);
	ad_buf_metric(b, "actiond_mcp_events_replayed_total", "counter",
		      "SSE events sent again on a resumption.", st_stats.events_replayed);
	ad_buf_metric(b, "actiond_mcp_refused_total", "counter",
		      "MCP requests refused with an HTTP error status.", st_stats.refused);
}
