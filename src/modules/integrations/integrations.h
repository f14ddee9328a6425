/*
 * integrations.h - shared parts of the integrations module (PRODUCT.md
 * 4.2): agents invoke actions of outside services (adapters, described as
 * data in protocol/integrations/), reads run at once, writes wait for an
 * admin's approval, dangerous ones are denied; every invocation is a row of
 * `invocations` and every change of one an event of the org's hash chain.
 *
 * Files: module.c (registration, adapters loaded, shared helpers),
 * adapters.c (requests built from an adapter's templates), run.c (an
 * invocation executing: credential, upstream request, outcome recorded),
 * hygiene.c (redaction, truncation, canonical text and hashes), invoke.c
 * (actions.available, actions.invoke), decide.c (approve, deny), read.c
 * (get, list, wait and its waiters), sweeper.c (expiry, interrupted runs,
 * the runner heartbeat), audit.c (the chain: linking, verify, export),
 * oauth.c (OAuth2 refresh-token credentials: tokens refreshed once per
 * credential across processes, broken credentials shown to admins).
 *
 * Everything runs on the event loop.
 */
#ifndef AD_MOD_INTEGRATIONS_H
#define AD_MOD_INTEGRATIONS_H

#include "actiond/actiond.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- limits ------------------------------------------------------------------ */

#define IG_MAX_PENDING 10              /* per agent session, in the database */
#define IG_APPROVAL_MS (5 * 60 * 1000) /* default approval deadline */
#define IG_TIMEOUT_MS 30000            /* default and largest upstream timeout */
#define IG_MAX_RESPONSE (1024 * 1024)  /* upstream body kept */
#define IG_RESULT_MAX 10240            /* stored result, as JSON text */
#define IG_ERROR_MAX 1000              /* stored error text */
#define IG_PARAMS_MAX 65536            /* params, as canonical JSON text */
#define IG_MAX_WAITERS 4096            /* invocations.wait calls per process */

/* ---- adapters (module.c, adapters.c) ------------------------------------------ */

enum ig_risk { IG_READ, IG_WRITE, IG_DANGER };

struct ig_action {
	const char *name;
	const char *summary;
	enum ig_risk risk;
	uint32_t timeout_ms;       /* the whole upstream exchange, retry included */
	uint32_t approval_ms;      /* writes: how long the approval may take */
	const json_t *params;      /* the params schema, as data */
	struct ad_json_schema *schema;
	const json_t *request;     /* REST: method, path, query, headers, body */
	const json_t *graphql;     /* GraphQL: document, variables */
};

struct ig_adapter {
	const char *name;
	const char *summary;
	json_t *doc;               /* owns every string above and below */
	char *base_url;            /* setting NAME.base_url, else the adapter's */
	const char *auth_header;   /* "Authorization" */
	const char *auth_format;   /* "Bearer {secret}" */
	const char *graphql_path;
	char *token_url;           /* OAuth2: setting NAME.token_url, else the adapter's */
	const char *oauth_format;  /* OAuth2: the header's format, "Bearer {secret}" */
	struct ig_action *actions;
	size_t nactions;
};

const struct ig_adapter *ig_adapter(const char *name);
const struct ig_action *ig_action(const struct ig_adapter *a, const char *name);
size_t ig_adapter_count(void);
const struct ig_adapter *ig_adapter_at(size_t i);
const char *ig_risk_name(enum ig_risk r);

/* Reads and checks one adapter document; 0, or -1 with why in err. */
int ig_adapter_load(struct ig_adapter *a, const char *text, size_t len, char *err,
		    size_t errlen);
void ig_adapter_free(struct ig_adapter *a);

/*
 * An upstream request built from an action's template and params: the URL,
 * method, header lines (the credential's last) and body, all owned.
 */
struct ig_request {
	char *url;
	const char *method;
	char *headers[16];
	size_t nheaders;
	char *body;
	size_t body_len;
};
/* Builds it; 0, or -1 with why in err (errlen bytes). */
int ig_request_build(const struct ig_adapter *a, const struct ig_action *act,
		     const json_t *params, const char *auth_line, struct ig_request *out,
		     char *err, size_t errlen);
void ig_request_free(struct ig_request *r);

/* ---- hygiene (hygiene.c) -------------------------------------------------------- */

/*
 * A copy of v with the values of sensitive keys (token, secret, password,
 * authorization, api_key, ... at any depth, case-insensitive) replaced by
 * "[redacted]", and every occurrence of secret (len bytes; NULL for none)
 * in strings and keys replaced as well.  Nesting deeper than 64 is cut.
 */
json_t *ig_redact(const json_t *v, const char *secret, size_t secret_len);
/*
 * v (taken over) if its compact JSON text fits max bytes; else an object
 * {truncated: true, bytes, preview} whose preview is the text's head, cut
 * on a UTF-8 boundary, that fits.  Valid JSON, valid UTF-8 either way.
 */
json_t *ig_truncate(json_t *v, size_t max);
/*
 * len bytes of s as a NUL-terminated, valid UTF-8 string of at most max
 * bytes: invalid sequences and control characters become '?', and every
 * occurrence of secret "[redacted]".  Free it.
 */
char *ig_clean_text(const char *s, size_t len, size_t max, const char *secret,
		    size_t secret_len);
/* Canonical text of a JSON value (sorted keys, compact, integral reals as
 * integers); NULL when out of memory.  Free it. */
char *ig_canonical(const json_t *v);
/* BLAKE2b-256 of len bytes, in hex. */
void ig_hash_hex(const void *s, size_t len, char out[65]);
/* BLAKE2b-256 of a || b, in hex. */
void ig_hash2_hex(const void *a, size_t alen, const void *b, size_t blen, char out[65]);
/* True if a string anywhere in v holds U+0000 (PostgreSQL cannot store it). */
bool ig_has_nul(const json_t *v);

/* ---- rows ---------------------------------------------------------------------- */

/*
 * The columns every read of an invocation selects, in the order
 * ig_row_json() reads them; they name columns of invocations unqualified,
 * so they work on the table and on a CTE of RETURNING *.
 */
#define IG_COLS                                                                          \
	"id, agent_session_id, integration, action, risk, status, params::text, "        \
	"iso(deadline), decided_by, iso(decided_at), reason, comment, result::text, "    \
	"error, upstream_status, iso(created_at), iso(started_at), iso(finished_at), "   \
	"org_id"
#define IG_NCOLS 19
/* The invocation of row `row` of statement stmt, from column col on; params
 * and result shown redacted. */
json_t *ig_row_json(const struct ad_sql_result *res, int stmt, int row, int col);
/* The org id of that row (column col + 18). */
int64_t ig_row_org(const struct ad_sql_result *res, int stmt, int row, int col);
bool ig_status_terminal(const char *status);

/* A decimal int64 for an SQL parameter. */
struct ig_num {
	char v[24];
};
struct ig_num ig_num(int64_t v);

/* This process's runner id (random), recorded on the rows it executes. */
const char *ig_runner_id(void);

/* ---- publishing (module.c) ------------------------------------------------------- */

/*
 * Publishes method with params to the org's admins and owners and, when
 * agent_session_id is not 0, to that agent session's sockets.
 */
void ig_publish(int64_t org_id, int64_t agent_session_id, const char *method,
		const json_t *params);
/* approval_resolved for an invocation row (status approved, denied or expired). */
void ig_publish_resolved(int64_t org_id, int64_t agent_session_id, const json_t *row);

/* ---- running (run.c) -------------------------------------------------------------- */

/*
 * Runs an invocation whose row the caller has just moved to executing
 * (one compare-and-set: this is the only run of it).  row is the row
 * (ig_row_json), params_text and params_hash what is stored, sealed_hex the
 * org's sealed credential (NULL when none).  When call is not NULL it
 * is answered with the invocation once finished (or cancelled: the run goes
 * on).  Takes nothing over; copies what it needs.
 */
void ig_run_start(struct ad_call *call, int64_t org_id, int64_t agent_session_id,
		  const json_t *row, const char *params_text, const char *params_hash,
		  const char *sealed_hex);

/* ---- OAuth2 credentials (oauth.c) -------------------------------------------------- */

/* True if an opened credential is an OAuth2 client with a refresh token. */
bool ig_oauth_is(const json_t *secret);

/*
 * A run waiting for an access token, embedded in the run (the timer first,
 * so that its callback finds the waiter).  done gets the token (valid only
 * during the call: copy it) and its version, or why there is none (text
 * safe to store and show: no secret in it); exactly once.
 */
struct ig_token_wait;
typedef void (*ig_token_fn)(struct ig_token_wait *w, const char *token, int64_t version,
			    const char *error);
struct ig_token_wait {
	struct ad_timer timer;         /* how long it may wait for a refresh */
	struct ig_token_wait *next;
	struct ig_flight *flight;      /* the refresh it waits for */
	int64_t org_id;
	const struct ig_adapter *adapter;
	char invocation_id[33];
	ig_token_fn done;
	uint32_t wait_ms;
};

/*
 * An access token of the org's OAuth2 credential for adapter a: the stored
 * one when it is valid for at least 60 s more, else one refresh shared by
 * every run that needs it, in this process and across processes.  force
 * (after the upstream refused a token of seen_version with 401) skips the
 * stored token unless it is newer than seen_version.  wait_ms bounds the
 * wait for a refresh; invocation_id names the run in the audit event of a
 * credential found broken.  done may run before this returns.
 */
void ig_oauth_token(struct ig_token_wait *w, int64_t org_id, const struct ig_adapter *a,
		    const char *invocation_id, bool force, int64_t seen_version, uint32_t wait_ms,
		    ig_token_fn done);

/*
 * Adds a statement reading, for the batch's org, each integration with a
 * credential: integration, status ("ok" or "broken") and the reason.
 */
void ig_oauth_add_status(struct ad_sql *q);

/* ---- waiting (read.c) --------------------------------------------------------------- */

/* An invocation reached a terminal state here: answers its waiters. */
void ig_waiters_wake(const char *id, const json_t *row);
/* The same, and tells the other instances, whose waiters then look again. */
void ig_terminal(const char *id, const json_t *row);
/* A message from this module on another instance (module.h). */
void ig_on_message(const json_t *msg);

/* ---- background (sweeper.c, audit.c) ------------------------------------------------ */

/* The module's start hook: the sweeper's timer, when there is a database. */
void ig_sweeper_start(bool database);
/* Links the events written lately into their orgs' chains, soon. */
void ig_chain_soon(void);
/* One linking round (audit.c); done(arg) after it. */
void ig_chain_run(void (*done)(void *arg), void *arg);

/* ---- handlers -------------------------------------------------------------------- */

void ig_actions_available(struct ad_call *call);
void ig_actions_invoke(struct ad_call *call);
void ig_invocations_get(struct ad_call *call);
void ig_invocations_list(struct ad_call *call);
void ig_invocations_wait(struct ad_call *call);
void ig_invocations_approve(struct ad_call *call);
void ig_invocations_deny(struct ad_call *call);
void ig_audit_verify(struct ad_call *call);
void ig_audit_export(struct ad_call *call);

#endif
