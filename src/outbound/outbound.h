/*
 * outbound.h - the server's side of outbound HTTP (actiond/http_client.h):
 * starting and stopping the client, its lws protocol, and its counters.
 *
 * Threads: event loop only (init and shutdown on the main thread, around
 * the loop).
 */
#ifndef AD_OUTBOUND_H
#define AD_OUTBOUND_H

#include <libwebsockets.h>
#include <stdint.h>

/* The lws protocol of the sockets libcurl asks the loop to watch. */
#define AD_OUTBOUND_PROTOCOL "actiond-http-client"

/* Result kinds, indexed like enum ad_http_error (0 is success). */
#define AD_OUTBOUND_KINDS 8

struct ad_outbound_stats {
	uint64_t requests;                   /* asked for, refused ones included */
	uint64_t errors[AD_OUTBOUND_KINDS];  /* finished with each error kind */
	uint64_t refused;                    /* over the in-flight cap */
	uint32_t inflight;
};

extern struct ad_outbound_stats ad_outbound_stats;

/* The stable name of a result kind ("ok", "timeout", ...). */
const char *ad_outbound_kind_name(int kind);

/*
 * Starts the client on ad_srv's lws context, which must exist.  Fails (-1,
 * logged) when the linked libcurl would resolve host names on the loop
 * (no AsynchDNS), is older than 7.87, or has no TLS.
 */
int ad_outbound_init(void);

/*
 * Cancels every request left (each done callback runs with
 * AD_HTTP_CANCELLED) and frees the client.  Call before the lws context is
 * destroyed.  Harmless when the client never started.
 */
void ad_outbound_shutdown(void);

int ad_outbound_callback(struct lws *wsi, enum lws_callback_reasons reason,
			 void *user, void *in, size_t len);

/* Outbound HTTP's figures for /metrics. */
struct ad_buf;
void ad_outbound_metrics(struct ad_buf *b);
#endif
