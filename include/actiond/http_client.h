/*
 * actiond/http_client.h - outbound HTTP(S) for action handlers.
 *
 * Requests run on the event loop without blocking it: connections, TLS and
 * transfers are driven by the loop, and host names are resolved off the
 * loop.  Every request has a timeout, a cap on the response size, and TLS
 * verification on (the system's CA store); it can be cancelled, and a
 * request made for a call is cancelled with the call.
 *
 * Redirects are not followed (a 3xx is a response like any other), proxies
 * named in the environment are not used, and at most 256 requests are in
 * flight in the whole process: past that, a request fails at once
 * (AD_HTTP_FAILED).
 *
 * Threads: event loop only.
 */
#ifndef ACTIOND_HTTP_CLIENT_H
#define ACTIOND_HTTP_CLIENT_H

#include "actiond/action.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ad_http_request {
	const char *method;          /* "GET", "POST", ...; NULL = GET */
	const char *url;             /* http:// or https:// only */
	/*
	 * "Name: value" lines, NULL-terminated; may be NULL.  At most 64, no
	 * line breaks.  No Content-Type is sent unless given here, nor
	 * "Expect: 100-continue".
	 */
	const char *const *headers;
	const char *body;            /* may be NULL; may hold NULs */
	size_t body_len;
	uint32_t timeout_ms;         /* whole exchange; 0 = 30 s */
	size_t max_response;         /* body bytes kept; 0 = 1 MiB; at most 1 GiB */
};

enum ad_http_error {
	AD_HTTP_OK = 0,        /* a response arrived (any status) */
	AD_HTTP_TIMEOUT,       /* timeout_ms passed */
	AD_HTTP_CANCELLED,     /* ad_http_cancel(), or the call went away */
	AD_HTTP_TOO_LARGE,     /* the body passed max_response; transfer stopped */
	AD_HTTP_RESOLVE,       /* the host name did not resolve */
	AD_HTTP_CONNECT,       /* no connection */
	AD_HTTP_TLS,           /* TLS handshake or verification failed */
	AD_HTTP_FAILED,        /* anything else (bad URL, protocol error, ...) */
};

struct ad_http_response {
	enum ad_http_error error;
	const char *message;   /* why, for logs; "" when error is AD_HTTP_OK */
	int status;            /* HTTP status, 0 without a response */
	/*
	 * NUL-terminated for convenience; may hold NULs.  With
	 * AD_HTTP_TOO_LARGE, what arrived up to max_response.
	 */
	const char *body;
	size_t body_len;
	/*
	 * The final response's headers: at most 100, 64 KiB in all (more is
	 * AD_HTTP_TOO_LARGE); values without surrounding blanks.
	 */
	size_t nheaders;
	const char *const *header_names;  /* lower-cased */
	const char *const *header_values;
	uint32_t elapsed_ms;
};

/* The value of a response header (name in lower case), or NULL. */
const char *ad_http_header(const struct ad_http_response *r, const char *name);

struct ad_http;  /* a request in flight */

/*
 * Called exactly once per request, on the loop; resp is valid only during
 * the callback.
 */
typedef void (*ad_http_done_fn)(void *arg, const struct ad_http_response *resp);

/*
 * Starts a request (everything in req is copied).  Returns a handle for
 * ad_http_cancel(), or NULL when it could not start - then done has been
 * called already, with the reason.
 */
struct ad_http *ad_http_fetch(const struct ad_http_request *req, ad_http_done_fn done,
			      void *arg);

/*
 * Stops a request that is still in flight (its done callback has not run):
 * done runs now with AD_HTTP_CANCELLED.  NULL is fine.
 */
void ad_http_cancel(struct ad_http *h);

/*
 * A request on behalf of call: it holds the call's cancel hook while it
 * runs (replacing any the handler set, and clearing it before done runs),
 * so cancelling or timing out the call cancels the request (done then runs
 * with AD_HTTP_CANCELLED and the call answered already; the handler must
 * still finish it).  done runs exactly once, possibly before this returns.
 */
typedef void (*ad_call_http_done_fn)(struct ad_call *call, void *arg,
				     const struct ad_http_response *resp);
void ad_call_http(struct ad_call *call, const struct ad_http_request *req,
		  ad_call_http_done_fn done, void *arg);

#ifdef __cplusplus
}
#endif

#endif
