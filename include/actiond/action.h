/*
 * actiond/action.h - the interface between actiond's dispatch core and the
 * code that implements an action.
 *
 * An action is declared as data (a JSON spec under protocol/) and implemented
 * by one handler function.  By the time the handler runs, the core has
 * authenticated the caller, validated the params against the spec's input
 * schema, checked roles and rate limits.  The handler may answer at once or
 * later (after a database or HTTP round trip): either way it finishes by
 * calling exactly one of ad_call_reply() or ad_call_fail().
 *
 * Timeouts and cancellation: when the spec's timeout passes, the client
 * cancels the request, or the connection goes away, the core answers for the
 * handler (reason "timeout" or "cancelled") and invokes the cancel hook the
 * handler registered, if any.  The handler must still finish with
 * ad_call_reply() or ad_call_fail() (whose answer is then discarded); only
 * after that is the call freed.
 *
 * Threads: every function of this API runs on the event-loop thread only,
 * except ad_log() (any thread) and what actiond/offload.h says runs on a
 * worker.  Nothing here blocks.
 *
 * Ownership: strings and JSON values the call hands out (params, org, ids)
 * belong to the call and stay valid until the handler finishes it.
 */
#ifndef ACTIOND_ACTION_H
#define ACTIOND_ACTION_H

#include "actiond/log.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ad_call;

/* Application error reasons; each has a stable error.data.reason string. */
enum ad_reason {
	AD_REASON_UNAUTHENTICATED = 1,
	AD_REASON_FORBIDDEN,
	AD_REASON_RATE_LIMITED,
	AD_REASON_TIMEOUT,
	AD_REASON_CANCELLED,
	AD_REASON_NOT_FOUND,
	AD_REASON_CONFLICT,
	AD_REASON_EXPIRED,
	AD_REASON_DENIED,
	AD_REASON_UNAVAILABLE,
	AD_REASON_PAYLOAD_TOO_LARGE,
	AD_REASON__COUNT
};

/* The kinds of credential a caller can present. */
enum ad_cred_kind {
	AD_CRED_API_KEY = 1, /* configured service key */
	AD_CRED_SESSION,     /* browser login */
	AD_CRED_API_TOKEN,   /* account-owned token */
	AD_CRED_AGENT,       /* agent token bound to an agent session */
};

typedef void (*ad_handler_fn)(struct ad_call *call);
typedef void (*ad_cancel_fn)(struct ad_call *call, void *arg);

/* The validated params (always an object; {} when the request had none). */
const json_t *ad_call_params(const struct ad_call *call);
const char *ad_call_method(const struct ad_call *call);

/*
 * Who is calling.  The org (slug and internal id) and the credential are
 * those the call authenticated with; for an anonymous call (only actions
 * whose spec allows it) the org is NULL and every id 0.  The account is 0
 * for agents and configured API keys; the agent session is 0 for anything
 * but an agent token.  Internal ids are for SQL parameters: never hand them
 * to clients (ids on the wire are opaque).
 */
const char *ad_call_org(const struct ad_call *call);
int64_t ad_call_org_id(const struct ad_call *call);
int64_t ad_call_account_id(const struct ad_call *call);
int64_t ad_call_agent_session_id(const struct ad_call *call);
/*
 * The integrations the caller's agent session may use (agent tokens only;
 * 0 for anything else): their count, and the i-th name.
 */
size_t ad_call_integration_count(const struct ad_call *call);
const char *ad_call_integration(const struct ad_call *call, size_t i);
/* A stable name of the credential, safe to log: "api_token:12". */
const char *ad_call_credential_id(const struct ad_call *call);
enum ad_cred_kind ad_call_credential_kind(const struct ad_call *call);
/* "owner", "admin", "member", or "none" (agents, anonymous). */
const char *ad_call_role(const struct ad_call *call);
/* The request id as sent (NULL for a notification). */
const json_t *ad_call_request_id(const struct ad_call *call);
/*
 * The caller's address: 16 bytes, IPv6 or IPv4 mapped into IPv6
 * (::ffff:a.b.c.d); the client's own address when it came through a trusted
 * proxy.
 */
void ad_call_peer(const struct ad_call *call, uint8_t out[16]);
/* What is left of the call's timeout, in ms (0 once it passed). */
int64_t ad_call_time_left_ms(const struct ad_call *call);
/* True once the core has answered for the handler (timeout or cancel). */
bool ad_call_is_cancelled(const struct ad_call *call);

/*
 * Registers fn to be called (once) if the call is cancelled or times out
 * before the handler finishes; NULL removes it.  There is one hook per
 * call: the services of actiond/sql.h, http_client.h and offload.h hold it
 * while an operation of theirs runs (and then report the cancellation to
 * their own callback instead).  fn must release what the handler holds and
 * then call ad_call_fail() or ad_call_reply(), now or later.
 */
void ad_call_on_cancel(struct ad_call *call, ad_cancel_fn fn, void *arg);

/*
 * Logs one line tagged with the method and the request id.  Never pass a
 * secret (token, password, cookie): log credential ids instead.
 */
void ad_call_log(const struct ad_call *call, enum ad_log_level level,
		 const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Sends the caller a "progress" notification {request_id, ...params} while
 * the call runs (WebSocket callers; over HTTP there is nobody to tell and
 * it is dropped).  Takes ownership of params (an object, or NULL).
 */
void ad_call_progress(struct ad_call *call, json_t *params);

/*
 * Sets the HTTP status of a single successful answer, e.g. 202 for a call
 * accepted and pending.  Batches and WebSocket answers ignore it.
 */
void ad_call_set_http_status(struct ad_call *call, int status);

/*
 * Reading validated params.  JSON Schema's "integer" accepts 5.0, and JSON
 * strings may hold U+0000: read numbers and strings only through these.
 *
 * ad_json_int: true if v is an integer, or a real with an integral value in
 * the int64 range; *ret is then set, else left alone.
 * ad_param_int: the same for params[key]; false when absent.
 * ad_param_str: params[key] as a string and its length in bytes (may hold
 * NUL bytes: compare with the length); NULL when absent or not a string.
 */
bool ad_json_int(const json_t *v, int64_t *ret);
bool ad_param_int(const struct ad_call *call, const char *key, int64_t *ret);
const char *ad_param_str(const struct ad_call *call, const char *key, size_t *ret_len);

/*
 * Cancels the caller's own unanswered request with this id (on the same
 * connection), which then answers "cancelled".  Returns false if there is
 * none.  What the protocol action "cancel" does.
 */
bool ad_call_cancel_request(struct ad_call *call, const json_t *request_id);

/*
 * JSON Schema (draft-07) for values a module reads from elsewhere than the
 * params, such as the params of an integration action named inside them:
 * the same validator the core runs on every call's params.
 *
 * ad_json_schema_new compiles schema (copied; a local document: no "$ref"
 * to other documents) and returns NULL when it is malformed, with why in
 * err (errlen bytes).  Call it from init(), or from a handler for a
 * schema known only then (compiling costs in proportion to the schema:
 * bound its size first); the compiled schema is immutable and may be used
 * for the process.  ad_json_schema_free accepts NULL.
 *
 * ad_call_check_value validates value; when it breaks the schema the call
 * is answered -32602 exactly as for its own params, with prefix (a JSON
 * pointer inside the call's params, "" for none) put before the pointer of
 * the failing value, and false is returned: the handler's part is over.
 * ad_json_schema_valid only says whether value conforms.
 */
struct ad_json_schema;
struct ad_json_schema *ad_json_schema_new(const json_t *schema, char *err, size_t errlen);
void ad_json_schema_free(struct ad_json_schema *s);
bool ad_call_check_value(struct ad_call *call, const struct ad_json_schema *s,
			 const json_t *value, const char *prefix);
bool ad_json_schema_valid(const struct ad_json_schema *s, const json_t *value);

/*
 * Ids on the wire are opaque: a keyed permutation of the internal id, one
 * per kind, the same the identity actions show (admin.agent_session_list,
 * admin.account_list).  ad_public_id_in answers 0 for a number that is no
 * valid public id of that kind.
 */
enum ad_public_kind {
	AD_PUBLIC_ACCOUNT = 1,
	AD_PUBLIC_AGENT_SESSION,
};
int64_t ad_public_id_out(enum ad_public_kind kind, int64_t id);
int64_t ad_public_id_in(enum ad_public_kind kind, int64_t pub);

/* The OpenRPC 1.2 document of every registered action (new reference). */
json_t *ad_openrpc(void);

/* Handler-private pointer, NULL until set. */
void ad_call_set_data(struct ad_call *call, void *data);
void *ad_call_data(const struct ad_call *call);

/* Finishes the call with a result; takes ownership of result (NULL = null). */
void ad_call_reply(struct ad_call *call, json_t *result);

/*
 * Finishes the call with a result already serialised as JSON text (len
 * bytes), for hot paths that can write their answer without building a DOM.
 * The text must be valid JSON; debug builds parse it and check it against
 * the output schema.
 */
void ad_call_reply_raw(struct ad_call *call, const char *json, size_t len);

/*
 * Finishes the call with an application error.  message is a short sentence
 * for people; data (owned, may be NULL) is merged into error.data next to the
 * reason.
 */
void ad_call_fail(struct ad_call *call, enum ad_reason reason,
		  const char *message, json_t *data);

/*
 * Finishes the call with -32602 for a rule the schema cannot express.
 * pointer is the JSON pointer inside params, keyword names the broken rule.
 */
void ad_call_fail_params(struct ad_call *call, const char *pointer,
			 const char *keyword, const char *message);

/*
 * The same with more facts for error.data (owned, may be NULL), merged
 * next to pointer, keyword and message: {"position": 17} for an error at a
 * character of a text param, say.
 */
void ad_call_fail_params_data(struct ad_call *call, const char *pointer,
			      const char *keyword, const char *message, json_t *data);

/*
 * A one-shot timer on the event loop, embedded in its owner's state (recover
 * the owner in the callback with container_of).  Zero-initialise it before
 * first use; starting a running timer reschedules it.
 */
struct ad_timer {
	void *opaque_[8];
};
typedef void (*ad_timer_fn)(struct ad_timer *t);
void ad_timer_start(struct ad_timer *t, uint32_t ms, ad_timer_fn fn);
/* Stops the timer if it is pending; harmless otherwise. */
void ad_timer_stop(struct ad_timer *t);

#ifdef __cplusplus
}
#endif

#endif
