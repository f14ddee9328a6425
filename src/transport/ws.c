/*
 * ws.c - WebSocket connections.
 *
 * Writes leave only from the writable callback.  Each writable callback
 * coalesces as many queued frames as fit in one 64 KiB buffer into a single
 * send, so a connection with many answers ready costs one syscall and one
 * poll cycle, not one per message.  Frames are handed to lws whole (as raw
 * bytes, pre-framed by outq.c); lws keeps any part the kernel did not take
 * and flushes it before calling us again, so frames never interleave with
 * the control frames lws sends itself.
 *
 * Backpressure: reading stops while a connection has max_inflight calls
 * unanswered, or half its queue limit waiting to be sent, or half of it in
 * requests still being worked on; past the limit it is closed with 4008 and
 * its queue freed at once.  A queue can also be slow without being big: one
 * that stays over slow_queue_bytes for slow_queue_time is closed with 4008
 * too.  Connections over that mark sit on ad_srv.ws_slow in the order they
 * crossed it, so the tick looks only at those whose time is up.
 */
#include "pubsub.h"
#include "ws.h"
#include "auth.h"
#include "http.h"
#include "ipkey.h"
#include "log.h"
#include "peer.h"
#include "reqparse.h"
#include "server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define WBUF_SIZE (64 * 1024)
/* Grace for a closing client to read its close frame before the TCP close. */
#define CLOSE_GRACE_SECS 5

static unsigned char wbuf[LWS_PRE + WBUF_SIZE];

const double ad_revoke_bucket_le[AD_REVOKE_BUCKETS] = {
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
	0.025, 0.05, 0.1, 0.25, 0.5, 1, 5,
};
struct ad_revoke_hist ad_revoke_hist;

static void revoke_observe(int64_t t0_us)
{
	double s = (double)(lws_now_usecs() - t0_us) / 1e6;

	if (s < 0)
		s = 0;
	ad_revoke_hist.count++;
	ad_revoke_hist.sum += s;
	for (int i = 0; i < AD_REVOKE_BUCKETS; i++)
		if (s <= ad_revoke_bucket_le[i]) {
			ad_revoke_hist.buckets[i]++;
			break;
		}
}

/* The credential accepted at CONFIRM_UPGRADE, picked up by the new wsi's
 * user data in FILTER_PROTOCOL_CONNECTION (lws reallocates user data between
 * the two; both happen within one service call). */
static struct {
	struct lws *wsi;
	struct ad_cred *cred;
	uint8_t ip[16];  /* the client (see ad_peer_client_ip) */
	uint8_t via[16]; /* the TCP peer */
} pending_upgrade;

/* Open WebSockets per address key (ad_ip_key). */
static struct ad_iptab ws_ips;

/* ---- the upgrade --------------------------------------------------------- */

/*
 * Copies header t of wsi into buf (AD_HTTP_HEADER_MAX + 1 bytes, which any
 * header lws accepted fits); returns its length, 0 if absent, -1 on error.
 */
static int header(struct lws *wsi, enum lws_token_indexes t, char *buf)
{
	if (lws_hdr_total_length(wsi, t) <= 0)
		return 0;
	return lws_hdr_copy(wsi, buf, AD_HTTP_HEADER_MAX + 1, t);
}

static bool origin_allowed(const char *origin)
{
	for (size_t i = 0; i < ad_srv.cfg.n_origins; i++)
		if (!strcmp(origin, ad_srv.cfg.origins[i]))
			return true;
	return false;
}

struct ad_cred *ad_ws_authenticate(struct lws *wsi, const char **ret_why)
{
	/* The loop is single-threaded; two header-sized buffers suffice. */
	static char hdr[AD_HTTP_HEADER_MAX + 1], origin[AD_HTTP_HEADER_MAX + 1];
	struct ad_span tok = { NULL, 0 };
	struct ad_cred *cred;
	int n;

	*ret_why = NULL;
	if ((n = header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, hdr)) != 0) {
		if (n < 0 || ad_parse_bearer(hdr, (size_t)n, &tok)) {
			*ret_why = "Malformed Authorization header (want: Bearer <token>)";
			return NULL;
		}
	} else if ((n = header(wsi, WSI_TOKEN_PROTOCOL, hdr)) > 0 &&
		   (ad_parse_subprotocols(hdr, (size_t)n, &tok), tok.n)) {
		/* tok points into hdr */
	} else if ((n = header(wsi, WSI_TOKEN_HTTP_COOKIE, hdr)) > 0 &&
		   ad_parse_cookie(hdr, (size_t)n, AD_SESSION_COOKIE, &tok)) {
		/* A cookie rides along on cross-site requests: only an allowed
		 * Origin may use it. */
		if (header(wsi, WSI_TOKEN_ORIGIN, origin) <= 0) {
			*ret_why = "A session cookie needs an Origin header";
			return NULL;
		}
		if (!origin_allowed(origin)) {
			*ret_why = "Origin not allowed";
			return NULL;
		}
		cred = ad_auth_token(tok.p, tok.n, AD_CRED_SESSION);
		if (!cred)
			*ret_why = "Unknown, expired or revoked session";
		return cred;
	} else {
		*ret_why = "Credentials are required";
		return NULL;
	}
	cred = ad_auth_token(tok.p, tok.n, 0);
	if (!cred)
		*ret_why = "Unknown, expired, revoked or malformed credential";
	return cred;
}

int ad_ws_confirm_upgrade(struct lws *wsi)
{
	static char proto[AD_HTTP_HEADER_MAX + 1];
	struct ad_span bearer;
	char uri[64];
	int n;
	struct ad_cred *cred;
	struct ad_peer *p = ad_peer_of(wsi);
	const char *why;
	uint8_t ip[16], via[16], key[16];

	if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 ||
	    strcmp(uri, "/ws") != 0)
		return ad_http_reply_error(wsi, 404, "not_found",
					   "WebSockets are served at /ws");
	if (ad_srv.draining)
		return ad_http_reply_error(wsi, 503, "unavailable",
					   "The server is shutting down");
	/*
	 * The frame check (rxguard.c) must start at the first byte after the
	 * request.  It can only if lws holds none of them, which is so unless
	 * the client sent them in the same read as the request: behind a
	 * request body, or before the answer, which RFC 6455 (4.1) forbids.
	 */
	if (!p || !ad_rxguard_upgrade_ok(&p->rx)) {
		ad_srv.ws_refused++;
		return ad_http_reply_error(wsi, 400, "invalid_request",
					   "Send the upgrade request alone, and nothing "
					   "after it before the answer");
	}
	/*
	 * lws selects a subprotocol by its name among all of ours, and the
	 * database sockets are one of them (AD_PG_PROTOCOL): a client naming
	 * it would get a socket nothing counts, limits or closes.  Clients get
	 * actiond.v1 and nothing else.
	 */
	if ((n = header(wsi, WSI_TOKEN_PROTOCOL, proto)) < 0 ||
	    (n > 0 && ad_parse_subprotocols(proto, (size_t)n, &bearer) != AD_SUBPROTO_OK)) {
		ad_srv.ws_refused++;
		return ad_http_reply_error(wsi, 400, "invalid_request",
					   "Offer the subprotocol " AD_SUBPROTOCOL
					   " (and nothing else but a bearer token)");
	}
	cred = ad_ws_authenticate(wsi, &why);
	if (!cred) {
		ad_srv.ws_refused++;
		return ad_http_reply_error(wsi, !strcmp(why, "Origin not allowed") ? 403 : 401,
					   !strcmp(why, "Origin not allowed") ? "forbidden"
									 : "unauthenticated",
					   why);
	}
	ad_peer_client_ip(wsi, ip, via);
	ad_ip_key(ip, key);
	if (ad_iptab_count(&ws_ips, key) >= ad_srv.cfg.max_conns_per_ip) {
		ad_cred_unref(cred);
		ad_srv.ws_refused++;
		return ad_http_reply_error(wsi, 429, "rate_limited",
					   "Too many connections from this address");
	}
	ad_cred_unref(pending_upgrade.cred);
	pending_upgrade.wsi = wsi;
	pending_upgrade.cred = cred;
	memcpy(pending_upgrade.ip, ip, 16);
	memcpy(pending_upgrade.via, via, 16);
	return 0;
}

/* ---- flow control and writing -------------------------------------------- */

static void update_rx_flow(struct ad_conn *c)
{
	size_t mark;
	bool pause;

	if (c->close_code)
		return;
	/* Hysteresis: pause at half the queue limit, resume at a quarter. */
	mark = c->rx_paused ? ad_srv.cfg.max_queue / 4 : ad_srv.cfg.max_queue / 2;

	pause = c->req.inflight >= ad_srv.cfg.max_inflight ||
		c->outq.bytes >= mark || c->req.inflight_bytes >= mark;
	if (pause != c->rx_paused) {
		c->rx_paused = pause;
		lws_rx_flow_control(c->wsi, pause ? 0 : 1);
	}
}

/* Keeps c on ad_srv.ws_slow exactly while its queue is over the mark. */
static void update_slow(struct ad_conn *c)
{
	bool over = c->outq.bytes > ad_srv.cfg.slow_queue_bytes &&
		    ad_srv.cfg.slow_queue_time_ms && !c->close_code;

	if (over == ad_list_linked(&c->slow_node))
		return;
	if (over) {
		c->slow_since_us = lws_now_usecs();
		ad_list_add_tail(&ad_srv.ws_slow, &c->slow_node);
		ad_srv.n_slow++;
	} else {
		ad_list_del(&c->slow_node);
		ad_srv.n_slow--;
	}
}

/*
 * Decides to close c with code.  keep_queue: what is queued goes out ahead
 * of the close frame (else it is dropped).
 */
static void close_with(struct ad_conn *c, uint16_t code, bool keep_queue)
{
	if (c->close_code)
		return;
	c->close_code = code;
	ad_list_del(&c->node);
	if (!keep_queue)
		ad_outq_clear(&c->outq);
	update_slow(c);
	/*
	 * Keep reading (and discarding, see ws_receive) until the close
	 * handshake ends: closing a socket with unread input makes the kernel
	 * send RST, and the peer may then never see our close frame.
	 */
	if (c->rx_paused) {
		c->rx_paused = false;
		lws_rx_flow_control(c->wsi, 1);
	}
	lws_callback_on_writable(c->wsi);
	/* A peer that never reads never makes us writable: bound the wait. */
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, CLOSE_GRACE_SECS);
}

void ad_ws_close(struct ad_conn *c, uint16_t code)
{
	close_with(c, code, false);
}

/* c's close frame is out (or c is gone): let its waiter know. */
static void flush_wait_release(struct ad_conn *c)
{
	struct ad_flush_wait *w = c->flush_wait;

	if (!w)
		return;
	c->flush_wait = NULL;
	ad_flush_wait_release(w);
}

void ad_ws_revoke(struct ad_conn *c, const char *reason, int64_t t0_us,
		  struct ad_flush_wait *w)
{
	struct ad_buf b = AD_BUF_INIT;
	struct ad_msg *m;

	ad_list_del(&c->cred_node);
	if (c->close_code)
		return;
	if (w && !c->flush_wait) {
		w->pending++;
		c->flush_wait = w;
	}
	ad_requester_detach(&c->req); /* nothing more is answered on it */
	ad_ws_close(c, AD_CLOSE_REVOKED);
	c->revoke_t0_us = t0_us ? t0_us : lws_now_usecs();
	ad_buf_puts(&b, "{\"jsonrpc\":\"2.0\",\"method\":\"session_revoked\","
			"\"params\":{\"credential\":");
	ad_buf_json_str(&b, c->req.cred->id, strlen(c->req.cred->id));
	ad_buf_puts(&b, ",\"reason\":");
	ad_buf_json_str(&b, reason, strlen(reason));
	ad_buf_puts(&b, "}}");
	m = b.oom ? NULL : ad_msg_new(b.data, b.len);
	ad_buf_free(&b);
	/* The one message allowed out after the close was decided. */
	if (m && ad_outq_push(&c->outq, m))
		lws_callback_on_writable(c->wsi);
	ad_msg_unref(m);
}

void ad_ws_send(struct ad_conn *c, struct ad_msg *m)
{
	if (c->close_code)
		return;
	if (c->outq.bytes + m->frame_len > ad_srv.cfg.max_queue ||
	    !ad_outq_push(&c->outq, m)) {
		ad_log_info("closing slow consumer (credential %s): %zu bytes queued",
			    c->req.cred ? c->req.cred->id : "-", c->outq.bytes);
		ad_srv.close_slow++;
		ad_ws_close(c, AD_CLOSE_SLOW);
		return;
	}
	c->msgs_out++;
	if (c->outq.count == 1)
		lws_callback_on_writable(c->wsi);
	update_slow(c);
	update_rx_flow(c);
}

void ad_ws_protocol_error(struct lws *wsi, const char *why)
{
	struct ad_peer *p = ad_peer_of(wsi);
	struct ad_conn *c = lws_wsi_user(wsi);

	if (!p || p->rx.mode < AD_RXG_WS || !c || !c->established || c->close_code)
		return;
	ad_log_debug("closing a WebSocket (credential %s) with 1002: %s",
		     c->req.cred ? c->req.cred->id : "-", why);
	ad_srv.close_protocol++;
	c->close_why = why;
	/*
	 * Answers already queued (to messages ahead of the violation) go out
	 * before the close frame; calls still in flight are cancelled.
	 */
	ad_requester_detach(&c->req);
	close_with(c, AD_CLOSE_PROTOCOL, true);
}

void ad_ws_peer_close_seen(struct lws *wsi)
{
	struct ad_peer *p = ad_peer_of(wsi);
	struct ad_conn *c = lws_wsi_user(wsi);

	if (!p || p->rx.mode < AD_RXG_WS || !c || !c->established)
		return;
	c->peer_close_seen = true;
	if (c->close_sent)
		lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_ACK, LWS_TO_KILL_ASYNC);
}

static const char *close_reason(const struct ad_conn *c)
{
	switch (c->close_code) {
	case AD_CLOSE_PROTOCOL: return c->close_why ? c->close_why : "protocol error";
	case AD_CLOSE_HEARTBEAT: return "heartbeat timeout";
	case AD_CLOSE_SLOW: return "slow consumer";
	case AD_CLOSE_REVOKED: return "credential revoked";
	case AD_CLOSE_TOO_BIG: return "message too big";
	default: return "server shutting down";
	}
}

static int ws_writable(struct ad_conn *c)
{
	struct ad_msg *m;
	size_t n = 0;

	if (c->close_code && !c->outq.count) {
		/* lws_write() may use LWS_PRE bytes in front of the frame. */
		static unsigned char buf[LWS_PRE + 2 + 2 + 64];
		unsigned char *frame = buf + LWS_PRE;
		const char *r = close_reason(c);
		size_t rl = strlen(r);

		if (c->close_sent)
			return 0;
		/*
		 * The close frame goes out as raw bytes, and the socket stays
		 * open, reading and discarding, until the peer answers with
		 * its own close (see LWS_CALLBACK_WS_PEER_INITIATED_CLOSE) or
		 * the close timeout passes.  Returning -1 here instead would
		 * hang up at once, and with unread input queued the kernel
		 * sends RST, which can overtake the close frame.
		 */
		frame[0] = 0x88; /* FIN | close */
		frame[1] = (unsigned char)(2 + rl);
		frame[2] = (unsigned char)(c->close_code >> 8);
		frame[3] = (unsigned char)c->close_code;
		memcpy(frame + 4, r, rl);
		if (c->close_code == AD_CLOSE_REVOKED && c->revoke_t0_us)
			revoke_observe(c->revoke_t0_us);
		c->close_sent = true;
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, CLOSE_GRACE_SECS);
		if (lws_write(c->wsi, frame, 4 + rl, LWS_WRITE_HTTP) < 0)
			return -1;
		flush_wait_release(c);
		/* After a protocol error the peer's close may be in already. */
		if (c->peer_close_seen)
			lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, LWS_TO_KILL_ASYNC);
		return 0;
	}
	while ((m = ad_outq_peek(&c->outq))) {
		if (n + m->frame_len > WBUF_SIZE) {
			if (n)
				break;
			/*
			 * A frame bigger than the buffer goes out on its own,
			 * from where it lies (outq.c keeps LWS_PRE in front).
			 */
			if (lws_write(c->wsi, (unsigned char *)ad_msg_frame(m),
				      m->frame_len, LWS_WRITE_HTTP) < 0)
				return -1;
			ad_srv.bytes_out += m->frame_len;
			ad_outq_pop(&c->outq);
			goto out;
		}
		memcpy(wbuf + LWS_PRE + n, ad_msg_frame(m), m->frame_len);
		n += m->frame_len;
		ad_outq_pop(&c->outq);
	}
	/*
	 * LWS_WRITE_HTTP makes lws send the bytes as they are: they are
	 * complete WebSocket frames already.
	 */
	if (n && lws_write(c->wsi, wbuf + LWS_PRE, n, LWS_WRITE_HTTP) < 0)
		return -1;
	ad_srv.bytes_out += n;
out:
	if (c->outq.count || (c->close_code && !c->close_sent))
		lws_callback_on_writable(c->wsi);
	update_slow(c);
	update_rx_flow(c);
	if (ad_srv.draining && !c->req.inflight && !c->outq.count)
		ad_ws_close(c, AD_CLOSE_SHUTDOWN);
	return 0;
}

/* ---- the requester side -------------------------------------------------- */

static void ws_deliver(struct ad_requester *r, const char *json, size_t len,
		       const struct ad_answer_meta *meta)
{
	struct ad_conn *c = ad_container_of(r, struct ad_conn, req);
	struct ad_msg *m;

	(void)meta;
	if (len && !c->close_code) {
		if (!(m = ad_msg_new(json, len))) {
			ad_ws_close(c, AD_CLOSE_SLOW);
			return;
		}
		ad_ws_send(c, m);
		ad_msg_unref(m);
	}
	update_rx_flow(c);
	if (ad_srv.draining && !c->req.inflight && !c->outq.count)
		ad_ws_close(c, AD_CLOSE_SHUTDOWN);
}

/* A notification for this socket alone (progress of one of its calls). */
static void ws_notify(struct ad_requester *r, const char *json, size_t len)
{
	struct ad_conn *c = ad_container_of(r, struct ad_conn, req);
	struct ad_msg *m;

	if (c->close_code)
		return;
	if (!(m = ad_msg_new(json, len))) {
		ad_ws_close(c, AD_CLOSE_SLOW);
		return;
	}
	ad_ws_send(c, m);
	ad_msg_unref(m);
}

static const struct ad_requester_ops ws_ops = { .deliver = ws_deliver,
						.notify = ws_notify,
						.transport = AD_TRANSPORT_WS };

/* ---- receiving ----------------------------------------------------------- */

static void rx_drop(struct ad_conn *c)
{
	if (c->rx) {
		ad_buf_free(c->rx);
		free(c->rx);
		c->rx = NULL;
	}
}

static int ws_receive(struct ad_conn *c, const char *in, size_t len)
{
	size_t have;
	struct lws *wsi = c->wsi;
	size_t remaining = lws_remaining_packet_payload(wsi);
	size_t max = ad_srv.cfg.max_message;

	if (c->close_code)
		return 0;
	c->last_rx_us = lws_now_usecs();
	ad_list_move_tail(&ad_srv.ws_active, &c->node);
	if (lws_frame_is_binary(wsi)) {
		static const char why[] = "JSON-RPC needs text frames";

		lws_close_reason(wsi, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE,
				 (unsigned char *)why, sizeof(why) - 1);
		c->close_code = LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE; /* for the log */
		return -1;
	}
	have = c->rx ? c->rx->len : 0;
	if (have + len + remaining > max) {
		/*
		 * Not "return -1" here: in the middle of a frame lws would hang
		 * up without a close frame.  Stop reading, drop what we have,
		 * and close from the writable callback.
		 */
		ad_srv.close_too_big++;
		rx_drop(c);
		ad_ws_close(c, AD_CLOSE_TOO_BIG);
		return 0;
	}
	if (lws_is_final_fragment(wsi) && !remaining)
		c->msgs_in++;
	if (lws_is_first_fragment(wsi) && lws_is_final_fragment(wsi) && !have) {
		ad_dispatch_message(&c->req, in, len, 0);
	} else {
		/* A message in pieces: assembled in a buffer made for it (an
		 * idle connection pays a pointer, not a buffer). */
		if (!c->rx && !(c->rx = calloc(1, sizeof(*c->rx))))
			return -1;
		ad_buf_append(c->rx, in, len);
		if (c->rx->oom)
			return -1;
		if (lws_is_final_fragment(wsi)) {
			ad_dispatch_message(&c->req, c->rx->data, c->rx->len, 0);
			rx_drop(c);
		}
	}
	update_rx_flow(c);
	return 0;
}

/* The access log's name for a peer: the client, and the proxy it came by. */
static void peer_text(const uint8_t ip[16], const uint8_t via[16], char *out, size_t len)
{
	char a[AD_IP_TEXT_MAX], b[AD_IP_TEXT_MAX];

	ad_ip_format(ip, a);
	if (!memcmp(ip, via, 16)) {
		snprintf(out, len, "%s", a);
		return;
	}
	ad_ip_format(via, b);
	snprintf(out, len, "%s via=%s", a, b);
}

static void conn_open(struct ad_conn *c, struct lws *wsi, struct ad_cred *cred,
		      const uint8_t ip[16], const uint8_t via[16])
{
	struct ad_peer *p = ad_peer_of(wsi);
	uint8_t key[16];

	ad_requester_init(&c->req, &ws_ops);
	c->req.cred = cred;
	c->wsi = wsi;
	c->established = true;
	c->last_rx_us = c->opened_us = lws_now_usecs();
	memcpy(c->req.ip, ip, 16);
	memcpy(c->via, via, 16);
	/* From here on every frame header is checked before lws parses it. */
	if (p)
		ad_rxguard_set_mode(&p->rx, AD_RXG_WS);
	ad_list_add_tail(&ad_srv.ws_active, &c->node);
	ad_list_add_tail(&cred->conns, &c->cred_node);
	if (!ad_pubsub_join(c))
		ad_log_warn("out of memory: credential %s gets no publishes", cred->id);
	ad_ip_key(c->req.ip, key);
	c->ip_counted = ad_iptab_take(&ws_ips, key, UINT32_MAX);
	ad_peer_upgraded(wsi);
	ad_srv.n_ws++;
	ad_srv.ws_accepted++;
	if (ad_srv.cfg.access_log && ad_log_level >= AD_LOG_INFO) {
		char peer[2 * AD_IP_TEXT_MAX + 8];

		peer_text(ip, via, peer, sizeof(peer));
		ad_log_info("access ws open peer=%s credential=%s", peer, cred->id);
	}
}

static void conn_closed(struct ad_conn *c)
{
	struct ad_peer *p;

	if (!c->established)
		return;
	c->established = false;
	if ((p = ad_peer_of(c->wsi)))
		ad_rxguard_set_mode(&p->rx, AD_RXG_BODY); /* nothing more to check */
	if (ad_srv.cfg.access_log && ad_log_level >= AD_LOG_INFO) {
		char peer[2 * AD_IP_TEXT_MAX + 8];
		/* Ours if we closed first, else the peer's; 1006: no close frame. */
		unsigned code = c->close_code ? c->close_code
			      : c->peer_close_code ? c->peer_close_code : 1006;

		peer_text(c->req.ip, c->via, peer, sizeof(peer));
		ad_log_info("access ws close peer=%s credential=%s code=%u by=%s ms=%lld "
			    "msgs_in=%llu msgs_out=%llu",
			    peer, c->req.cred ? c->req.cred->id : "-", code,
			    c->close_code ? "server" : c->peer_close_code ? "client" : "none",
			    (long long)((lws_now_usecs() - c->opened_us) / 1000),
			    (unsigned long long)c->msgs_in, (unsigned long long)c->msgs_out);
	}
	flush_wait_release(c);
	ad_requester_detach(&c->req);
	ad_outq_clear(&c->outq);
	update_slow(c);
	ad_pubsub_leave(c);
	rx_drop(c);
	ad_list_del(&c->node);
	ad_list_del(&c->cred_node);
	c->req.cred = ad_cred_unref(c->req.cred);
	if (c->ip_counted) {
		uint8_t key[16];

		ad_ip_key(c->req.ip, key);
		ad_iptab_release(&ws_ips, key);
	}
	ad_srv.n_ws--;
}

int ad_ws_callback(struct lws *wsi, enum lws_callback_reasons reason,
		   struct ad_conn *c, void *in, size_t len)
{
	switch (reason) {
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		if (pending_upgrade.wsi != wsi || !pending_upgrade.cred)
			return 1; /* not through CONFIRM_UPGRADE: refuse */
		memset(c, 0, sizeof(*c));
		c->req.cred = pending_upgrade.cred;
		memcpy(c->req.ip, pending_upgrade.ip, 16);
		memcpy(c->via, pending_upgrade.via, 16);
		pending_upgrade.cred = NULL;
		pending_upgrade.wsi = NULL;
		return 0;
	case LWS_CALLBACK_ESTABLISHED: {
		uint8_t ip[16], via[16];

		if (!c->req.cred)
			return -1;
		memcpy(ip, c->req.ip, 16);
		memcpy(via, c->via, 16);
		conn_open(c, wsi, c->req.cred, ip, via);
		return 0;
	}
	case LWS_CALLBACK_RECEIVE:
		return c->established ? ws_receive(c, in, len) : -1;
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		/*
		 * lws has already replaced a code not allowed on the wire with
		 * 1002 here, but rxguard.c closed such a socket before lws saw
		 * the frame; what arrives is a valid close.
		 */
		if (c && len >= 2 && !c->peer_close_code) {
			struct ad_peer *p = ad_peer_of(wsi);
			uint8_t *code = in;

			/*
			 * lws 4.1 also takes 1012-1014 (registered since) for
			 * reserved and would echo 1002: put back what came,
			 * which rxguard.c kept, before lws echoes it.
			 */
			if (p && p->rx.mode == AD_RXG_WS &&
			    ad_close_code_valid((unsigned)p->rx.close_code[0] << 8 |
						p->rx.close_code[1])) {
				code[0] = p->rx.close_code[0];
				code[1] = p->rx.close_code[1];
			}
			c->peer_close_code = (uint16_t)(code[0] << 8 | code[1]);
		}
		else if (c && !c->peer_close_code)
			c->peer_close_code = 1005; /* no status code present */
		/* Our own close frame went first: hang up without echoing. */
		return c && c->close_sent ? 1 : 0;
	case LWS_CALLBACK_SERVER_WRITEABLE:
		return c->established ? ws_writable(c) : -1;
	case LWS_CALLBACK_CLOSED:
	case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
		if (c)
			conn_closed(c);
		return 0;
	default:
		return 0;
	}
}

/*
 * When the kernel last received data on c's socket, on the lws_now_usecs()
 * clock; 0 if it cannot say.
 *
 * This is how a ping counts as activity.  lws 4.1 answers a ping inside its
 * frame parser (lib/roles/ws/ops-ws.c, LWSWSOPC_PING: it stashes the payload
 * and asks for POLLOUT to send the pong) and tells the protocol nothing:
 * only a pong is reported (LWS_CALLBACK_RECEIVE_PONG), and lws's own
 * validity timer is confirmed by pongs, not pings.  The kernel, though,
 * keeps the time since data last arrived on every TCP socket
 * (TCP_INFO.tcpi_last_data_recv).  Asking it costs one getsockopt() for a
 * socket that has reached the timeout, and nothing per message or per idle
 * connection.  Any bytes count: a ping, a pong, or part of a message.
 */
static int64_t kernel_last_rx_us(const struct ad_conn *c, int64_t now)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	int fd = lws_get_socket_fd(c->wsi);

	if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) ||
	    len < offsetof(struct tcp_info, tcpi_last_data_recv) + sizeof(ti.tcpi_last_data_recv))
		return 0;
	return now - (int64_t)ti.tcpi_last_data_recv * 1000;
}

void ad_ws_tick(int64_t now)
{
	int64_t limit = (int64_t)ad_srv.cfg.heartbeat_timeout_ms * 1000;
	int64_t slow = (int64_t)ad_srv.cfg.slow_queue_time_ms * 1000;

	while (!ad_list_empty(&ad_srv.ws_active)) {
		struct ad_conn *c = ad_container_of(ad_list_first(&ad_srv.ws_active),
						    struct ad_conn, node);
		int64_t heard;

		if (now - c->last_rx_us < limit)
			break;
		heard = kernel_last_rx_us(c, now);
		if (now - heard < limit && heard > c->last_rx_us) {
			/*
			 * Bytes came that no callback saw (a ping).  Requeued
			 * at the tail, c may be checked up to (now - heard)
			 * late; the kernel is asked again then.
			 */
			c->last_rx_us = heard;
			ad_list_move_tail(&ad_srv.ws_active, &c->node);
			continue;
		}
		ad_srv.close_heartbeat++;
		ad_ws_close(c, AD_CLOSE_HEARTBEAT);
	}
	while (!ad_list_empty(&ad_srv.ws_slow)) {
		struct ad_conn *c = ad_container_of(ad_list_first(&ad_srv.ws_slow),
						    struct ad_conn, slow_node);

		if (now - c->slow_since_us < slow)
			break;
		ad_log_info("closing slow consumer (credential %s): over %zu bytes "
			    "queued for %lld ms (%zu now)",
			    c->req.cred ? c->req.cred->id : "-",
			    ad_srv.cfg.slow_queue_bytes,
			    (long long)((now - c->slow_since_us) / 1000), c->outq.bytes);
		ad_srv.close_slow_time++;
		ad_ws_close(c, AD_CLOSE_SLOW);
	}
}

/* How identity closes a socket whose credential it revoked (see cred.h). */
static void revoke_hook(struct ad_list *node, const char *reason, int64_t t0_us,
			struct ad_flush_wait *w)
{
	ad_ws_revoke(ad_container_of(node, struct ad_conn, cred_node), reason, t0_us, w);
}

void ad_ws_init(void)
{
	ad_cred_set_revoke_hook(revoke_hook);
}

struct ad_conn *ad_ws_conn_of(struct ad_requester *r)
{
	return r && r->ops == &ws_ops ? ad_container_of(r, struct ad_conn, req) : NULL;
}

void ad_ws_free(void)
{
	ad_cred_unref(pending_upgrade.cred);
	pending_upgrade.cred = NULL;
	ad_iptab_free(&ws_ips);
}

void ad_transport_metrics(struct ad_buf *b)
{
	uint64_t cum = 0;

	ad_buf_metric(b, "actiond_ws_connections", "gauge", "Open WebSocket connections.",
		      ad_srv.n_ws);
	ad_buf_metric(b, "actiond_http_connections", "gauge", "Open HTTP connections.",
		      ad_srv.n_http);
	ad_buf_metric(b, "actiond_ws_accepted_total", "counter",
		      "WebSocket upgrades accepted.", ad_srv.ws_accepted);
	ad_buf_metric(b, "actiond_ws_refused_total", "counter",
		      "WebSocket upgrades refused.", ad_srv.ws_refused);
	ad_buf_metric(b, "actiond_http_refused_total", "counter",
		      "Connections hung up on at accept: their address had "
		      "max_http_conns_per_ip open.", ad_srv.http_refused);
	ad_buf_puts(b, "# HELP actiond_ws_closed_total WebSockets closed by the "
		       "server, by reason.\n# TYPE actiond_ws_closed_total counter\n");
	ad_buf_printf(b, "actiond_ws_closed_total{reason=\"heartbeat_timeout\"} %llu\n",
		      (unsigned long long)ad_srv.close_heartbeat);
	ad_buf_printf(b, "actiond_ws_closed_total{reason=\"slow_consumer\"} %llu\n",
		      (unsigned long long)ad_srv.close_slow);
	ad_buf_printf(b, "actiond_ws_closed_total{reason=\"message_too_big\"} %llu\n",
		      (unsigned long long)ad_srv.close_too_big);
	ad_buf_printf(b, "actiond_ws_closed_total{reason=\"slow_consumer_time\"} %llu\n",
		      (unsigned long long)ad_srv.close_slow_time);
	ad_buf_printf(b, "actiond_ws_closed_total{reason=\"protocol_error\"} %llu\n",
		      (unsigned long long)ad_srv.close_protocol);
	ad_buf_metric(b, "actiond_metrics_refused_total", "counter",
		      "Requests for /metrics answered 403.", ad_srv.metrics_refused);
	ad_buf_metric(b, "actiond_ws_slow_queues", "gauge",
		      "WebSockets whose queue is over slow_queue_bytes.", ad_srv.n_slow);
	ad_buf_metric(b, "actiond_ws_sent_bytes_total", "counter",
		      "Bytes handed to WebSocket sockets.", ad_srv.bytes_out);
	ad_buf_metric(b, "actiond_http_requests_total", "counter", "HTTP requests.",
		      ad_srv.http_requests);
	ad_buf_metric(b, "actiond_draining", "gauge", "1 while shutting down.",
		      ad_srv.draining);
	ad_pubsub_metrics(b);
	ad_buf_puts(b, "# HELP actiond_revoke_close_seconds From a credential's "
		       "revocation to the close frame of a socket resting on it.\n"
		       "# TYPE actiond_revoke_close_seconds histogram\n");
	for (int i = 0; i < AD_REVOKE_BUCKETS; i++) {
		cum += ad_revoke_hist.buckets[i];
		ad_buf_printf(b, "actiond_revoke_close_seconds_bucket{le=\"%g\"} %llu\n",
			      ad_revoke_bucket_le[i], (unsigned long long)cum);
	}
	ad_buf_printf(b, "actiond_revoke_close_seconds_bucket{le=\"+Inf\"} %llu\n"
			 "actiond_revoke_close_seconds_sum %.6f\n"
			 "actiond_revoke_close_seconds_count %llu\n",
		      (unsigned long long)ad_revoke_hist.count, ad_revoke_hist.sum,
		      (unsigned long long)ad_revoke_hist.count);
}
