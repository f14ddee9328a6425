/*
 * server.h - the process-wide server state and the event loop around
 * libwebsockets.
 *
 * actiond runs one event loop on one thread (lws's own poll loop).  All
 * connection, dispatch and timer state below is touched only from it.
 */
#ifndef AD_SERVER_H
#define AD_SERVER_H

#include "config.h"
#include "list.h"

#include <libwebsockets.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

struct ad_server {
	struct ad_config cfg;
	struct lws_context *lws;
	struct lws_vhost *vhost;
	bool tls;
	char db_conninfo[1024];   /* empty: no database */
	bool db_embedded;

	struct ad_list ws_active; /* open WebSockets, least recently heard first */
	struct ad_list ws_slow;   /* over slow_queue_bytes, longest first */
	uint32_t n_slow;
	uint32_t n_ws;            /* open WebSockets, including closing ones */
	struct ad_list http;      /* HTTP connections */
	uint32_t n_http;

	bool draining;            /* SIGTERM seen: refuse new work */
	bool stop;                /* leave the loop */
	int64_t drain_deadline_us;
	volatile sig_atomic_t signalled;

	lws_sorted_usec_list_t tick; /* idle sweep and drain progress */
	uint64_t ticks;

	/* Counters for /metrics. */
	uint64_t ws_accepted;
	uint64_t ws_refused;
	uint64_t http_refused;    /* connections hung up on at accept (per-address cap) */
	uint64_t close_heartbeat;
	uint64_t close_slow;
	uint64_t close_slow_time;
	uint64_t close_too_big;
	uint64_t close_protocol;  /* 1002: the client broke RFC 6455 */
	uint64_t metrics_refused; /* /metrics answered 403 */
	uint64_t http_requests;
	uint64_t bytes_out;
};

extern struct ad_server ad_srv;

/* Creates the lws context and listening socket from ad_srv.cfg. */
int ad_server_init(void);
/* Runs the loop until shutdown has completed; returns the exit status. */
int ad_server_run(void);
void ad_server_free(void);

/* Begins the graceful drain (what SIGTERM does). */
void ad_server_drain(void);

/* The peer's address as 16 bytes (IPv4 mapped into IPv6). */
void ad_peer_ip(struct lws *wsi, uint8_t out[16]);

/* The wall-clock time as "YYYY-MM-DDTHH:MM:SS.mmmZ" (out >= 32 bytes). */
void ad_server_time_iso(char *out, size_t len);

#endif
