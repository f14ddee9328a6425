/*
 * loop.h - the event loop as every layer below the transport sees it.
 *
 * actiond runs one libwebsockets context on one thread.  The transport
 * creates it (src/transport/server.c) and publishes it here, so that the
 * store, the dispatch core and the services can schedule timers and adopt
 * descriptors without knowing about servers, sockets or HTTP.  The
 * configuration is published the same way.
 */
#ifndef AD_LOOP_H
#define AD_LOOP_H

#include "config.h"

#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>

/* The lws context and its vhost; NULL until the transport made them. */
extern struct lws_context *ad_loop;
extern struct lws_vhost *ad_loop_vhost;

/* The configuration in effect (set once at start, read-only after). */
extern const struct ad_config *ad_cfg;

/* True once SIGTERM began the drain: refuse new work. */
extern bool ad_loop_draining;

/* Monotonic microseconds (lws's clock). */
static inline int64_t ad_now_us(void)
{
	return (int64_t)lws_now_usecs();
}

#endif
