/*
 * cred.h - a credential as the dispatch core and the transports see it.
 *
 * A credential that authenticated a caller is an ad_cred: refcounted, shared
 * by every connection resting on it, and linked to those connections so that
 * revoking it can close them all at once.  The identity layer
 * (src/identity/auth.c) makes them and keeps the cache; the transport links
 * its connections to them and says, through ad_cred_set_revoke_hook(), how
 * one of its connections is closed when its credential is revoked.  So the
 * identity layer never needs to know what a socket is.
 */
#ifndef AD_CRED_H
#define AD_CRED_H

#include "actiond/action.h"
#include "config.h"
#include "list.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ad_cred {
	uint32_t refs;
	enum ad_cred_kind kind;
	enum ad_role role;       /* the account's role in the org; none for agents */
	char *org;               /* org slug */
	char *id;                /* "api_token:12": stable and safe to log */
	int64_t db_id;           /* credentials.id, 0 for configured API keys */
	int64_t org_id;
	int64_t account_id;      /* 0 for agents and API keys */
	int64_t agent_session_id;
	int64_t expires_at;      /* unix seconds, 0 = never */
	char **integrations;     /* agent sessions: what they may use */
	size_t n_integrations;
	uint8_t hash[32];        /* keyed token hash (database credentials) */
	bool cached;             /* in the token table */
	bool revoked;
	bool seen;               /* scratch for ad_auth_resync() */
	struct ad_list conns;    /* connections resting on it (their link nodes) */
	struct ad_list links;    /* other things resting on it (ad_cred_link); zeroed: none */
	struct ad_list org_node; /* on its org's list in the cache (auth.c) */
	uint32_t heap_pos;       /* 1 + its place in the expiry heap, 0: none */
};

struct ad_cred *ad_cred_ref(struct ad_cred *c);
/* Drops a reference; accepts NULL; returns NULL. */
struct ad_cred *ad_cred_unref(struct ad_cred *c);

/*
 * Counts revoked connections whose close frame has not been written yet, so
 * that a revocation answers (or acknowledges) only once they all have.
 * done runs when the count reaches zero; a waiter whose owner went away is
 * orphaned and freed at zero instead.
 */
struct ad_flush_wait {
	uint32_t pending;
	bool armed;                 /* done may run (all sockets counted) */
	bool orphan;
	void (*done)(struct ad_flush_wait *w);
	void *arg;
};
struct ad_flush_wait *ad_flush_wait_new(void (*done)(struct ad_flush_wait *w), void *arg);
/* Everything is counted: runs done now if nothing is pending. */
void ad_flush_wait_arm(struct ad_flush_wait *w);
/* The owner no longer cares; w is freed once nothing points at it. */
void ad_flush_wait_orphan(struct ad_flush_wait *w);
/* One counted connection is done (its close frame is out, or it is gone). */
void ad_flush_wait_release(struct ad_flush_wait *w);

/*
 * How the transport closes the connection whose node (on cred->conns) is
 * given, because its credential was revoked: it must unlink the node, and
 * count the connection on w (may be NULL) until its close frame is out.
 */
typedef void (*ad_cred_revoke_fn)(struct ad_list *node, const char *reason,
				  int64_t t0_us, struct ad_flush_wait *w);
void ad_cred_set_revoke_hook(ad_cred_revoke_fn fn);

/*
 * Something other than a connection that rests on a credential (an MCP
 * session, src/transport/mcp.c) and must end when it is revoked.  revoked
 * is called with the link already unlinked; it counts what it closes on w
 * (may be NULL) as the hook does, and returns how many connections it
 * closed.
 */
struct ad_cred_link {
	struct ad_list node;
	size_t (*revoked)(struct ad_cred_link *l, const char *reason, int64_t t0_us,
			  struct ad_flush_wait *w);
};
void ad_cred_link_add(struct ad_cred *c, struct ad_cred_link *l);
/* Unlinks l (a no-op when it is not linked). */
void ad_cred_link_del(struct ad_cred_link *l);

/*
 * Marks c revoked and closes every connection on it, and ends every link on
 * it; returns how many connections were closed.
 */
size_t ad_cred_close_all(struct ad_cred *c, const char *reason, int64_t t0_us,
			 struct ad_flush_wait *w);

#endif
