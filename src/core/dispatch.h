/*
 * dispatch.h - the one dispatch core shared by WebSocket and HTTP.
 *
 * A transport hands in each complete incoming message with
 * ad_dispatch_message().  The core parses it, checks the JSON-RPC envelope,
 * and runs every request of it through the same pipeline:
 *
 *   authenticate -> validate params -> authorize (roles) -> rate limit
 *   -> run the handler under its timeout, cancellable -> check the result
 *   (debug builds) -> answer
 *
 * Answers to one message (a single response or one batch array) are handed
 * back to the transport in one piece through its requester's deliver().
 * Handlers may answer later; a transport that goes away calls
 * ad_requester_detach(), which cancels everything still running for it.
 */
#ifndef AD_DISPATCH_H
#define AD_DISPATCH_H

#include "actiond/action.h"
#include "cred.h"
#include "buf.h"
#include "list.h"
#include "spec.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct ad_requester;

/* What a transport needs besides the JSON text of an answer. */
struct ad_answer_meta {
	int http_status;         /* of a single answer; 200 for a batch */
	uint32_t retry_after_ms; /* for 429 */
	char *set_cookie;        /* a Set-Cookie value for HTTP, or NULL */
};

struct ad_requester_ops {
	/*
	 * Takes the answer to one incoming message: a JSON response or an array
	 * of them, len 0 when nothing is to be sent (notifications only).  May
	 * be called from inside ad_dispatch_message() or later.  The text is
	 * only valid during the call.
	 */
	void (*deliver)(struct ad_requester *r, const char *json, size_t len,
			const struct ad_answer_meta *meta);
	/*
	 * Sends a server-to-client notification (len bytes of JSON) now, out
	 * of band of the answers; NULL for a transport that cannot (HTTP).
	 */
	void (*notify)(struct ad_requester *r, const char *json, size_t len);
	enum ad_transport transport;
};

/* The party a batch of calls answers to: a WebSocket or an HTTP exchange. */
struct ad_requester {
	const struct ad_requester_ops *ops;
	struct ad_cred *cred;   /* NULL when anonymous (HTTP only) */
	struct ad_list batches; /* messages not fully answered yet */
	uint32_t inflight;      /* calls not answered yet */
	size_t inflight_bytes;  /* size of the messages those calls came in */
	uint8_t ip[16];         /* peer address, IPv4 mapped into IPv6 */
};

/* Flags for ad_dispatch_message(). */
#define AD_DISPATCH_READ_ONLY 1u /* GET /rpc: only actions of risk "read" */

void ad_requester_init(struct ad_requester *r, const struct ad_requester_ops *ops);
/*
 * Detaches r from everything in flight: calls still running are cancelled
 * and their answers dropped.  Call before r's memory goes away.
 */
void ad_requester_detach(struct ad_requester *r);

/* Parses and runs one incoming message (len bytes of JSON text). */
void ad_dispatch_message(struct ad_requester *r, const char *data, size_t len,
			 unsigned flags);

/* Same, for a request already in object form (GET /rpc); takes req. */
void ad_dispatch_object(struct ad_requester *r, json_t *req, unsigned flags);

/*
 * Cancels the unanswered call with this id that r sent; returns true if one
 * was found.  Unknown ids are a no-op.
 */
bool ad_dispatch_cancel(struct ad_requester *r, const json_t *id);

/* Cancels every call in flight with the given reason (shutdown deadline). */
void ad_dispatch_cancel_all(enum ad_reason reason);

/* The credential the call came with (NULL when anonymous). */
const struct ad_cred *ad_call_cred(const struct ad_call *call);
/* The peer address of the call (16 bytes, IPv4 mapped). */
const uint8_t *ad_call_ip(const struct ad_call *call);
/*
 * The caller's address as a fairness key for shared queues: the hash of
 * its per-address key (ipkey.h: IPv6 by its prefix).
 */
uint64_t ad_call_fair_key(const struct ad_call *call);
/* Asks HTTP to send Set-Cookie: value with the answer (copied). */
void ad_call_set_cookie(struct ad_call *call, const char *value);
/* Overrides the HTTP status of a single successful answer (e.g. 202). */
void ad_call_set_http_status(struct ad_call *call, int status);

/* The spec of a call (once it passed method lookup). */
const struct ad_spec *ad_call_spec(const struct ad_call *call);
/* When the call's timeout passes (monotonic microseconds). */
int64_t ad_call_deadline_us(const struct ad_call *call);

/* The requester of a call, NULL once it went away. */
struct ad_requester *ad_call_requester(const struct ad_call *call);

/* Prepares the call-timeout timer; needs the lws context to exist. */
void ad_dispatch_init(void);
/* Stops the timer (before the lws context goes). */
void ad_dispatch_shutdown(void);
/* Frees what is left once no connection can reach the core any more. */
void ad_dispatch_free(void);

/* Counters for /metrics. */
struct ad_dispatch_stats {
	uint64_t messages;
	uint64_t calls;
	uint64_t errors;
	uint64_t timeouts;
	uint64_t cancels;
	uint64_t calls_inflight;
};
extern struct ad_dispatch_stats ad_dispatch_stats;

/* Returns true if a JSON text nests deeper than max (outside strings). */
bool ad_json_too_deep(const char *s, size_t n, uint32_t max);

/* The core's figures for /metrics: calls, methods, rate limits, workers. */
void ad_dispatch_metrics(struct ad_buf *b);
#endif
