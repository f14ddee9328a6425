/*
 * identity.h - shared parts of the identity module (PRODUCT.md 4.1):
 * parameter reading, password work on the workers, and the handlers of
 * sessions.c, tokens.c and admin.c.
 *
 * The module stands on the public API and on the identity layer's one
 * interface for it (issuer.h).  Every statement is scoped to the caller's
 * org (row-level security does it for tenant tables; the statements say
 * it for the others), whatever ids the params carry.
 */
#ifndef AD_MOD_IDENTITY_H
#define AD_MOD_IDENTITY_H

#include "issuer.h"

#include <sodium.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A decimal int64 for an SQL parameter. */
struct id_num {
	char v[24];
};
struct id_num id_num(int64_t v);

/*
 * params[key] as a C string; a string holding U+0000 cannot be one, so the
 * call is answered -32602 and NULL returned.  NULL too (without answering)
 * when the key is absent.
 */
const char *id_text(struct ad_call *call, const char *key, bool *ret_failed);

/* params[key] as an email: lower-cased ASCII copy (free it); NULL: answered. */
char *id_email(struct ad_call *call, const char *key);

/* The actor of identity events: the caller's credential id. */
const char *id_actor(struct ad_call *call);

/*
 * Keyset paging: params limit (default 50) and cursor (the last id of the
 * previous page).  Fills the limit and the id to start after, as SQL
 * parameters; pages fetch limit + 1 rows to know whether another follows.
 */
struct id_page {
	enum ad_id_kind kind;      /* of the ids paged through (the cursor) */
	int64_t limit;
	struct id_num after;
	struct id_num fetch;       /* limit + 1 */
};
void id_page_read(struct ad_call *call, enum ad_id_kind kind, struct id_page *pg);
/* The next_cursor of a page whose last row has id last: a string, or null. */
json_t *id_page_next(const struct id_page *pg, int rows, int64_t last);

/* ---- passwords on the worker threads ------------------------------------- */

#define ID_PW_CANDIDATES 4

struct id_pw {
	char *password;          /* len bytes, may hold NUL; wiped and freed */
	size_t len;
	char hash[crypto_pwhash_STRBYTES]; /* hash: out */
	/* verify: the hashes to try (an email may have accounts in several
	 * orgs, each with its own password); matched gets a bit for each that
	 * the password opens. */
	char candidates[ID_PW_CANDIDATES][crypto_pwhash_STRBYTES];
	int ncandidates;
	unsigned matched;
	bool verify;
	bool ok;                 /* hash: it worked; verify: matched != 0 */
	/* On the loop, unless the call was cancelled meanwhile (then the
	 * module frees the job and finishes the call itself). */
	void (*then)(struct ad_call *call, struct id_pw *pw);
	void (*free_fn)(struct id_pw *pw); /* frees the containing object */
};
/*
 * Copies password and runs the hash or verify on a worker.  When the queue
 * is full the call is answered rate_limited and pw freed.
 */
void id_pw_start(struct ad_call *call, struct id_pw *pw, const char *password,
		 size_t len);
/* The same, ahead of ordinary work (a login from a known address). */
void id_pw_start_first(struct ad_call *call, struct id_pw *pw, const char *password,
		       size_t len);
void id_pw_clear(struct id_pw *pw);

/* A hash of a random password, verified against for unknown emails. */
extern char id_dummy_hash[crypto_pwhash_STRBYTES];

/* ---- password guessing per account (guard.c) -------------------------------- */

/* False (with when to retry) if email's failure budget is spent here. */
bool id_guard_allows(struct ad_call *call, const char *email, uint32_t *ret_retry_ms);
/* True if this address logged in to email's account lately. */
bool id_guard_known(struct ad_call *call, const char *email);
/* Counts a checked login of email: a failure, or a success from this address. */
void id_guard_result(struct ad_call *call, const char *email, bool success);

/* ---- handlers -------------------------------------------------------------- */

void id_auth_login(struct ad_call *call);
void id_auth_logout(struct ad_call *call);
void id_session_list(struct ad_call *call);
void id_session_revoke(struct ad_call *call);
void id_session_revoke_all(struct ad_call *call);
void id_token_create(struct ad_call *call);
void id_token_list(struct ad_call *call);
void id_token_revoke(struct ad_call *call);
void id_agent_session_create(struct ad_call *call);
void id_agent_session_revoke(struct ad_call *call);
void id_account_create(struct ad_call *call);
void id_account_disable(struct ad_call *call);
void id_admin_session_revoke_all(struct ad_call *call);
void id_admin_token_revoke_all(struct ad_call *call);
void id_credential_set(struct ad_call *call);
void id_account_list(struct ad_call *call);
void id_agent_session_list(struct ad_call *call);

/*
 * Runs a revocation of scope whose marking statement is sql (n params p),
 * recording the identity event action on target with it.
 */
void id_revoke(struct ad_call *call, const struct ad_revoke_scope *scope,
	       const char *reason, const char *sql, int n, const char *const *p,
	       const char *action, const char *target, bool none_is_error);
/* Revokes one credential of kind, id in params[param], of the caller's account. */
void id_revoke_own(struct ad_call *call, const char *kind, enum ad_cred_kind k,
		   const char *param);

/* admin.credential_list and admin.credential_revoke (admin.c). */
void id_admin_credential_list(struct ad_call *call);
void id_admin_credential_revoke(struct ad_call *call);

/* Revokes one credential row that lost a race with a revocation, then fails. */
void id_issue_lost(struct ad_call *call, int64_t cred_id, int64_t org_id);

#endif
