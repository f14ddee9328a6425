/*
 * ws.h - WebSocket connections: authentication at the upgrade, message
 * assembly, the outgoing queue with backpressure, slow consumers,
 * heartbeats.
 */
#ifndef AD_WS_H
#define AD_WS_H

#include "buf.h"
#include "cred.h"
#include "dispatch.h"
#include "list.h"
#include "outq.h"
#include "pubsub.h"

#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>

/* Close codes of the wire contract. */
#define AD_CLOSE_SHUTDOWN 1001
#define AD_CLOSE_POLICY 1008
#define AD_CLOSE_TOO_BIG 1009
#define AD_CLOSE_HEARTBEAT 4000
#define AD_CLOSE_REVOKED 4001
#define AD_CLOSE_SLOW 4008

/* One WebSocket connection; lws allocates it as the wsi's user data. */
struct ad_conn {
	struct ad_requester req;
	struct lws *wsi;
	struct ad_list node;      /* on ad_srv.ws_active until closing */
	struct ad_list cred_node; /* on req.cred->conns */
	struct ad_list slow_node; /* on ad_srv.ws_slow while over slow_queue_bytes */
	int64_t slow_since_us;
	struct ad_ps_conn ps;     /* publish/subscribe index (pubsub.c) */
	int64_t last_rx_us;
	struct ad_buf *rx;        /* a message arriving in several pieces, or NULL */
	struct ad_outq outq;
	uint16_t close_code;      /* set: close with it once the queue is sent */
	int64_t revoke_t0_us;     /* when the credential was revoked */
	struct ad_flush_wait *flush_wait; /* told when the close frame is out */
	const char *close_why;    /* the reason sent with a 1002 close */
	int64_t opened_us;        /* for the access log */
	uint64_t msgs_in, msgs_out;
	uint8_t via[16];          /* the TCP peer (a proxy, or the client) */
	uint16_t peer_close_code; /* the code of the peer's close frame */
	bool established;
	bool close_sent;          /* our close frame is out; awaiting the peer's */
	bool peer_close_seen;     /* the peer's close came (after a violation) */
	bool rx_paused;
	bool ip_counted;
};

/* The name of the browser session cookie. */
#define AD_SESSION_COOKIE "actiond_session"

/*
 * The credential a request presents: Authorization: Bearer, the
 * actiond.bearer.<token> subprotocol, or the session cookie (only with an
 * allowed Origin).  Returns a new reference, or NULL with *ret_why saying
 * why ("Credentials are required" when nothing was presented).
 */
struct ad_cred *ad_ws_authenticate(struct lws *wsi, const char **ret_why);

/* The LWS_CALLBACK_HTTP_CONFIRM_UPGRADE step: auth and limits, or 401/429. */
int ad_ws_confirm_upgrade(struct lws *wsi);

/* Handles the WebSocket callback reasons. */
int ad_ws_callback(struct lws *wsi, enum lws_callback_reasons reason,
		   struct ad_conn *c, void *in, size_t len);

/*
 * Queues m on c.  If the queue passes the limit the connection is closed
 * with 4008 instead and its queue freed.
 */
void ad_ws_send(struct ad_conn *c, struct ad_msg *m);

/* Asks for c to be closed with code from the next writable callback. */
void ad_ws_close(struct ad_conn *c, uint16_t code);

/*
 * The client broke RFC 6455 (rxguard.c found why, a short static text):
 * nothing it sent after the violation is processed, answers already queued
 * go out, and the socket is closed with 1002.  Ignored unless wsi is an
 * open WebSocket.
 */
void ad_ws_protocol_error(struct lws *wsi, const char *why);

/*
 * After a protocol error, the client's close frame came: the socket is hung
 * up on once ours is out.
 */
void ad_ws_peer_close_seen(struct lws *wsi);

/*
 * The credential under c was revoked: in-flight calls are cancelled, the
 * queue is replaced by one session_revoked notification, then the socket is
 * closed with 4001.  Unlinks c from its credential.  w (may be NULL) counts
 * c until its close frame is written or it is gone.
 */
void ad_ws_revoke(struct ad_conn *c, const char *reason, int64_t t0_us,
		  struct ad_flush_wait *w);

/* Seconds from revocation to the close frame, as a Prometheus histogram. */
#define AD_REVOKE_BUCKETS 14
extern const double ad_revoke_bucket_le[AD_REVOKE_BUCKETS];
struct ad_revoke_hist {
	uint64_t buckets[AD_REVOKE_BUCKETS]; /* cumulative at export time */
	uint64_t count;
	double sum;
};
extern struct ad_revoke_hist ad_revoke_hist;

/*
 * Closes sockets silent past the heartbeat timeout, and those whose queue
 * stayed over slow_queue_bytes for slow_queue_time (4008).
 */
void ad_ws_tick(int64_t now);

/* The connection behind a requester, or NULL if r is not a WebSocket. */
struct ad_conn *ad_ws_conn_of(struct ad_requester *r);

/* Tells the identity layer how revoked sockets are closed. */
void ad_ws_init(void);
void ad_ws_free(void);

/* The transport's figures for /metrics: sockets, closes, publishes, revocations. */
void ad_transport_metrics(struct ad_buf *b);
#endif
