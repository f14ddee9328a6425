/*
 * cluster.h - what crosses actiond instances that share one database:
 * instance registration, credential changes and revocations, all through
 * PostgreSQL LISTEN/NOTIFY on the channel "actiond".
 *
 * A revocation commits, with its NOTIFY in the same transaction; every
 * instance closes the sockets it covers and acknowledges with a NOTIFY of its
 * own; the revoking call answers once every live instance has acknowledged
 * (or after AD_REVOKE_ACK_TIMEOUT_MS, saying which did not).
 */
#ifndef AD_CLUSTER_H
#define AD_CLUSTER_H

#include "actiond/action.h"
#include "auth.h"

#define AD_REVOKE_ACK_TIMEOUT_MS 3000

/*
 * Registers this instance (blocking; before the server accepts anything, so
 * no revocation can miss it).
 */
int ad_cluster_register(const char *conninfo);
/* Starts the instance heartbeat; needs the pool. */
int ad_cluster_init(void);
/* Unregisters this instance (blocking; after the loop ended). */
void ad_cluster_shutdown(const char *conninfo);
const char *ad_cluster_instance(void);

/*
 * Routes notifications whose "op" is op (and that came from another
 * instance) to fn: how a layer above - publish/subscribe in the transport -
 * uses the channel without identity knowing it.  One such op.
 */
#include <jansson.h>
void ad_cluster_on(const char *op, void (*fn)(const json_t *msg));

/* LISTEN callback (NULL payload: the listener reconnected). */
void ad_cluster_notify(const char *payload);

/* Counters for /metrics. */
extern uint64_t ad_cluster_revocations, ad_cluster_ack_timeouts;

/* Identity's figures for /metrics: the credential cache, revocations. */
struct ad_buf;
void ad_identity_metrics(struct ad_buf *b);
#endif
