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

/*
 * LISTEN callback (NULL payload: the listener reconnected): reads the
 * payload with ad_cluster_parse() and does what it asks.
 */
void ad_cluster_notify(const char *payload);

/* What a notification on the channel asks of this instance. */
enum ad_cluster_op {
	AD_CLUSTER_IGNORE = 0, /* not JSON, no op, sent by this instance, or an
				* op nobody here takes */
	AD_CLUSTER_REVOKE,     /* close what scope covers, then acknowledge */
	AD_CLUSTER_CRED,       /* load credential cred_id into the cache */
	AD_CLUSTER_ACK,        /* instance "from" closed what revocation req covered */
	AD_CLUSTER_FOREIGN,    /* the op of ad_cluster_on(): msg goes to its handler */
	AD_CLUSTER_MODULE,     /* a module's message to its peers (module.h) */
};

/* A notification as read, before anything is done about it. */
struct ad_cluster_msg {
	enum ad_cluster_op op;
	json_t *msg;                 /* the whole payload (owned), NULL if not JSON */
	const char *from;            /* the sending instance; points into msg */
	/* AD_CLUSTER_REVOKE */
	struct ad_revoke_scope scope; /* an unknown kind leaves org_id 0: covers nothing */
	const char *reason;          /* "revoked" when the payload gives none */
	int64_t sent_us;             /* wall-clock send time; 0 when not given */
	const json_t *req_json;      /* echoed in the acknowledgement; NULL: none is sent */
	/* AD_CLUSTER_ACK: req and from are strings */
	const char *req;
	/* AD_CLUSTER_CRED */
	int64_t cred_id;
};

/*
 * Reads a payload (a NUL-terminated string, as NOTIFY delivers it) into m
 * without side effects: no cache, database or socket is touched.  Returns
 * m->op; m must be released with ad_cluster_msg_free() whatever it is.
 */
enum ad_cluster_op ad_cluster_parse(const char *payload, struct ad_cluster_msg *m);
void ad_cluster_msg_free(struct ad_cluster_msg *m);

/* Counters for /metrics. */
extern uint64_t ad_cluster_revocations, ad_cluster_ack_timeouts;

/* Identity's figures for /metrics: the credential cache, revocations. */
struct ad_buf;
void ad_identity_metrics(struct ad_buf *b);
#endif
