/*
 * auth.h - credentials: lookup at connection time, the in-memory cache of
 * database credentials, and revocation.
 *
 * A credential that authenticated a caller is an ad_cred: refcounted, shared
 * by every connection resting on it, and linked to those connections so that
 * revoking it can close them all at once.  Tokens are never kept: only their
 * hash, compared in constant time.
 *
 * Why a cache: a WebSocket upgrade must be accepted or refused inside one
 * lws callback, with no chance to wait for the database.  So every live
 * session, API token and agent token is held in memory (about 200 bytes
 * each), loaded at start and kept current by the instance that changes one
 * and, on the others, by LISTEN/NOTIFY; a listener that lost its connection
 * reloads everything.  The database stays the source of truth.
 */
#ifndef AD_AUTH_H
#define AD_AUTH_H

#include "actiond/action.h"
#include "config.h"
#include "cred.h"
#include "issuer.h"
#include "list.h"

#include <stddef.h>
#include <stdint.h>

/* Tokens longer than this are refused before hashing. */
#define AD_TOKEN_MAX 512

/* Builds the API-key table from the configuration. */
int ad_auth_init(const struct ad_config *cfg);
void ad_auth_free(void);

/*
 * Looks up a bearer token (len bytes).  Returns a new reference, or NULL if
 * the token is unknown, revoked, expired or malformed.  want_kind 0 accepts
 * any kind; AD_CRED_SESSION is what a cookie may carry.
 */
struct ad_cred *ad_auth_token(const char *token, size_t len,
			      enum ad_cred_kind want_kind);

/* BLAKE2b-256 of a configured API key, as written in token_hash. */
void ad_token_hash(const char *token, size_t len, uint8_t out[32]);

/*
 * Builds a database credential (one reference, not cached yet).  org is the
 * slug; integrations may be NULL.
 */
struct ad_cred *ad_cred_new_db(enum ad_cred_kind kind, int64_t db_id,
			       int64_t org_id, const char *org, int64_t account_id,
			       enum ad_role role, int64_t agent_session_id,
			       int64_t expires_at, const uint8_t hash[32]);
int ad_cred_set_integrations(struct ad_cred *c, char *const *names, size_t n);

/* Puts c in the token table (taking a reference); replaces a same-id one. */
int ad_auth_cache_add(struct ad_cred *c);
size_t ad_auth_cache_size(void);

/*
 * Loads every live database credential (blocking; before the loop runs).
 * Returns the number loaded or -1.
 */
int ad_auth_load(const char *conninfo);

/*
 * Gives each configured API key the id of its org, creating the org if it
 * does not exist (blocking; before the loop runs).
 */
int ad_auth_resolve_orgs(const char *conninfo);

/*
 * The query that lists live credentials, and the builder of one from a row
 * of it; a "WHERE c.id = $1"-style suffix may be appended with AND.
 */
extern const char *const ad_auth_load_sql;
struct pg_result;
struct ad_cred *ad_auth_cred_from_row(const struct pg_result *r, int row);

/*
 * Revokes every cached credential the scope matches: removes it from the
 * cache and closes each WebSocket resting on it (a session_revoked
 * notification, then close 4001).  t0_us is when the revocation happened,
 * for the revoke-to-close histogram; w (may be NULL) counts the sockets until
 * their close frames are written.  Returns the number of sockets closed.
 */
size_t ad_auth_revoke(const struct ad_revoke_scope *s, const char *reason,
		      int64_t t0_us, struct ad_flush_wait *w);

/*
 * Makes the cache match a full result of ad_auth_load_sql: adds what is new,
 * revokes locally (closing sockets) what is no longer there.
 */
void ad_auth_resync(const struct pg_result *r);

/*
 * The number of scope revocations this instance has applied so far, and
 * whether one applied after seq covers c (see ad_identity_cache_add()).
 */
uint64_t ad_auth_revocation_seq(void);
bool ad_auth_revoked_since(uint64_t seq, const struct ad_cred *c);

/* Drops expired credentials from the cache, closing their sockets. */
void ad_auth_expire(int64_t now_unix);

#endif
