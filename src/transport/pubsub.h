/*
 * pubsub.h - the inside of actiond/publish.h: the index of WebSocket
 * connections by org, class, account, agent session and topic, local
 * delivery, and the trip through PostgreSQL to the other instances.
 *
 * ws.c enrols a connection when it opens and withdraws it when its close is
 * decided; cluster.c hands over the "publish" notifications of the other
 * instances.
 */
#ifndef AD_PUBSUB_H
#define AD_PUBSUB_H

#include "buf.h"
#include "list.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define AD_TOPIC_MAX 128
#define AD_TOPICS_PER_CONN 64
/* The largest notification a publish may serialise to. */
#define AD_PUBLISH_MAX (1u << 20)

struct ad_audience;
struct ad_conn;
struct ad_msg;
struct ps_sub;

/* What the index keeps inside each connection (struct ad_conn). */
struct ad_ps_conn {
	struct ad_list org_node; /* on its org's list for its class */
	struct ad_list who_node; /* on its account's or agent session's list */
	struct ps_sub *subs;     /* its topics */
	uint8_t nsubs;
	bool enrolled;
};

/*
 * ad_publish() of a notification already framed (its payload at most
 * AD_PUBLISH_MAX bytes): for senders that publish one frame repeatedly.
 * m is borrowed.
 */
int ad_publish_msg(const struct ad_audience *a, struct ad_msg *m);

/* Enrols an open connection (its credential set); false when out of memory. */
bool ad_pubsub_join(struct ad_conn *c);
/* Withdraws c from every list and frees its topics; idempotent. */
void ad_pubsub_leave(struct ad_conn *c);

/*
 * A "publish" notification from another instance (the parsed NOTIFY
 * payload): delivered here, in the order the instances sent them; a
 * payload that passed through the table is fetched first.
 */
void ad_pubsub_remote(const json_t *m);

/* Starts the periodic cleanup of the table; needs the pool. */
void ad_pubsub_init(bool with_db);
/* Drops what is queued or in flight (before the pool shuts down). */
void ad_pubsub_shutdown(void);
/* Frees the index, empty once every connection is gone. */
void ad_pubsub_free(void);

/* Appends the pubsub metrics in Prometheus text format. */
void ad_pubsub_metrics(struct ad_buf *b);

#endif
