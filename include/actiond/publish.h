/*
 * actiond/publish.h - server-to-client notifications, on every instance.
 *
 * A publish sends one JSON-RPC notification to the WebSocket connections of
 * one org that match an audience: a set of roles, an account, an agent
 * session, a topic the connection subscribed to - or all of them.  The
 * notification is serialised once and the same frame is queued on every
 * recipient (no copy per socket).  Connections are indexed by org, account,
 * agent session and topic, so a publish touches only its recipients.
 *
 * Every actiond instance sharing the database delivers it to its own
 * connections: the publish travels through PostgreSQL NOTIFY (payloads over
 * NOTIFY's 8000-byte limit pass through a table).  Delivery is at most
 * once, in order per publishing instance; a connection that cannot keep up
 * is closed (4008) rather than allowed to hold memory.
 *
 * Threads: event loop only.
 */
#ifndef ACTIOND_PUBLISH_H
#define ACTIOND_PUBLISH_H

#include "actiond/action.h"

#include <jansson.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Role bits for ad_audience.roles. */
#define AD_AUDIENCE_MEMBER (1u << 1)
#define AD_AUDIENCE_ADMIN (1u << 2)
#define AD_AUDIENCE_OWNER (1u << 3)
#define AD_AUDIENCE_AGENTS (1u << 4) /* agent tokens (they carry no role) */
#define AD_AUDIENCE_KEYS (1u << 5)   /* configured API keys */

/*
 * Who receives a publish: connections of org_id matching every field set.
 * roles 0 means any; account_id, agent_session_id 0 mean any; topic NULL
 * means any connection, else only those subscribed to it (within the org).
 *
 * Each connection is of exactly one class for roles: an agent token is
 * AGENTS, a configured API key is KEYS whatever role it is configured with,
 * and a session or API token has its account's role (MEMBER, ADMIN, OWNER).
 */
struct ad_audience {
	int64_t org_id;           /* required */
	uint32_t roles;           /* AD_AUDIENCE_* bits, 0 = any */
	int64_t account_id;
	int64_t agent_session_id;
	const char *topic;        /* at most 128 bytes */
};

/*
 * Publishes {"jsonrpc":"2.0","method":method,"params":params} to the
 * audience here and on every other instance.  params is borrowed (an
 * object or array; NULL leaves "params" out).  Returns the number of
 * connections reached on this instance, or -1 (bad audience, out of
 * memory, notification over 1 MiB, or too much waiting to go to the other
 * instances); -1 means nobody received it.
 */
int ad_publish(const struct ad_audience *a, const char *method, const json_t *params);

/*
 * The same on this instance only: for a module that brings a notification
 * to every instance itself (each reads it from the database, say), where
 * ad_publish() would deliver it once per instance.  Returns the number of
 * connections reached, or -1 as ad_publish().
 */
int ad_publish_here(const struct ad_audience *a, const char *method, const json_t *params);

/*
 * How many connections of this instance subscribe to topic in org_id: 0
 * when none (or the topic is not valid).
 */
int ad_topic_subscribers(int64_t org_id, const char *topic);

/*
 * Subscribes the caller's WebSocket to a topic of its org (idempotent), or
 * unsubscribes it.  Returns 0, or -1 when the call did not come over a
 * WebSocket, the connection has too many topics (64), or the topic is
 * longer than 128 bytes.
 */
int ad_call_subscribe(struct ad_call *call, const char *topic);
int ad_call_unsubscribe(struct ad_call *call, const char *topic);

#ifdef __cplusplus
}
#endif

#endif
