/*
 * issuer.h - the identity layer's one interface for the identity module.
 *
 * The identity actions (src/modules/identity/) are a module like any other:
 * they reach the database, the workers and the caller through the public
 * API (include/actiond/).  What only identity may do goes through this
 * header, and nothing else of actiond's internals is on that module's
 * include path: make tokens, put a committed credential into the cache,
 * revoke credentials on every instance, seal secrets, set the session
 * cookie, and run a statement in an org other than the caller's (a login
 * records its event in the org it logged into).
 *
 * Threads: the event loop, except ad_token_new() (any thread).
 */
#ifndef AD_ISSUER_H
#define AD_ISSUER_H

#include "actiond/actiond.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the caller ---------------------------------------------------------- */

enum ad_identity_role { AD_IDROLE_NONE = 0, AD_IDROLE_MEMBER, AD_IDROLE_ADMIN, AD_IDROLE_OWNER };

struct ad_identity_caller {
	int64_t cred_id;     /* credentials.id; 0 for configured API keys */
	int64_t org_id;
	int64_t account_id;
	enum ad_identity_role role;
	const char *org;     /* slug; valid while the call runs */
};
/* Fills out for an authenticated call (zeroes for an anonymous one). */
void ad_identity_caller(const struct ad_call *call, struct ad_identity_caller *out);

/* Settings identity needs. */
struct ad_identity_settings {
	uint32_t session_ttl_s;
	bool secure_cookies;    /* served over TLS: cookies get Secure */
};
const struct ad_identity_settings *ad_identity_settings(void);

/* This instance's id, for the "from" of cross-instance notifications. */
const char *ad_identity_instance(void);

/* Asks HTTP to send Set-Cookie: value with the answer (copied). */
void ad_identity_set_cookie(struct ad_call *call, const char *value);

/* Runs q in org_id's scope instead of the caller's. */
void ad_identity_sql_org(struct ad_sql *q, int64_t org_id);

/* ---- ids handed to clients ------------------------------------------------- */

/*
 * Ids on the wire are opaque: a keyed permutation of the internal id (a
 * safe JSON integer, 1..2^53), different for each kind, so they reveal
 * nothing about other orgs' activity.  Convert every id going out and every
 * id coming in; an id that came in and is no valid one converts to 0.
 */
enum ad_id_kind {
	AD_ID_ACCOUNT = 1,
	AD_ID_SESSION,
	AD_ID_API_TOKEN,
	AD_ID_AGENT_SESSION,
	AD_ID_AGENT_TOKEN,
};
int64_t ad_identity_id_out(enum ad_id_kind kind, int64_t id);
int64_t ad_identity_id_in(enum ad_id_kind kind, int64_t pub);

/* ---- tokens -------------------------------------------------------------- */

#define AD_TOKEN_TEXT_MAX 64

struct ad_token {
	char text[AD_TOKEN_TEXT_MAX]; /* prefix + 43 base64url characters */
	uint8_t hash[32];             /* keyed BLAKE2b, what the database keeps */
	char hex[65];                 /* hash in hex, for SQL parameters */
};
/* A new random token with its keyed hash; what actiond bootstrap uses too. */
void ad_token_new(const char *prefix, struct ad_token *t);
/* Erases the token text (and the rest) from memory. */
void ad_token_wipe(struct ad_token *t);

/* Seals a secret for integration_secrets: nonce || MAC || ciphertext. */
#define AD_SEAL_OVERHEAD (24 + 16)
void ad_identity_seal(const uint8_t *in, size_t len, uint8_t *out);

/* ---- issuing into the cache ---------------------------------------------- */

/*
 * A sequence number of local scope revocations.  Read it before submitting
 * the statement that creates a credential, and hand it to
 * ad_identity_cache_add(): a credential whose scope was revoked in between
 * must not enter the cache (its creation raced the revocation).
 */
uint64_t ad_identity_revocation_seq(void);

/* A credential row that committed. */
struct ad_issue {
	enum ad_cred_kind kind;
	int64_t db_id;
	int64_t org_id;
	const char *org;             /* slug */
	int64_t account_id;          /* 0 for agents */
	const char *role;            /* "member", "admin", "owner"; NULL for agents */
	int64_t agent_session_id;    /* agents only */
	int64_t expires_at;          /* unix seconds, 0 = never */
	const uint8_t *hash;         /* 32 bytes */
	const char *const *integrations; /* agents: names */
	size_t n_integrations;
	uint64_t seq;                /* ad_identity_revocation_seq() before the insert */
};
/*
 * Puts the credential into this instance's cache (the others learn of it
 * through the notification its insert sent).  Returns 0; or -1 when a
 * revocation covering it ran since seq - then it was not added, and the
 * caller must revoke its row and fail the call.
 */
int ad_identity_cache_add(const struct ad_issue *is);

/* ---- revocation on every instance ----------------------------------------- */

/* What a revocation covers: credentials of org_id matching every field set. */
struct ad_revoke_scope {
	int64_t org_id;
	int64_t cred_id;
	int64_t account_id;
	int64_t agent_session_id;
	enum ad_cred_kind kind;   /* 0 = any */
	int64_t except_cred_id;   /* spared (e.g. the caller's own session) */
};

struct ad_revocation;

/* Starts a revocation for call (NULL when out of memory: answer it). */
struct ad_revocation *ad_revocation_new(struct ad_call *call,
					const struct ad_revoke_scope *scope,
					const char *reason);
/*
 * The statement that marks what is revoked (an UPDATE ... RETURNING), added
 * first.  What it returns is what was revoked: only when it returns rows
 * are sockets closed, here and on the other instances (the notification
 * that tells them is sent by this same statement, so it commits with it).
 */
int ad_revocation_mark(struct ad_revocation *rv, const char *sql, int nparams,
		       const char *const *params);
/* The batch, to add what must commit with the revocation (audit events). */
struct ad_sql *ad_revocation_sql(struct ad_revocation *rv);
/*
 * The rows the statement last added to the batch touched are answered too,
 * as field (e.g. "credentials_revoked").
 */
void ad_revocation_report(struct ad_revocation *rv, const char *field);
/*
 * Runs it.  Answers once every socket it covers, on every live instance,
 * got its 4001 close: {revoked, sockets_closed, instances, instances_acked,
 * instances_missing}; "not_found" when nothing was revoked and
 * none_is_error.
 */
void ad_revocation_run(struct ad_revocation *rv, bool none_is_error);

/* ---- the audit trail ------------------------------------------------------- */

/*
 * Adds the statement that records an identity event (org, actor, action,
 * target) to q.  In SQL, actiond_audit(org, actor, action, target) does the
 * same inside a larger statement.
 */
int ad_audit(struct ad_sql *q, int64_t org_id, const char *actor, const char *action,
	     const char *target);

#endif
