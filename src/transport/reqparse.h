/*
 * reqparse.h - parsers of what a peer sends in an HTTP request: the
 * Authorization, Cookie and Sec-WebSocket-Protocol headers and the query of
 * GET /rpc.
 *
 * They work on plain byte ranges and know nothing of lws, so the fuzz
 * driver (tests/fuzz/fuzz_http.c) runs them without a socket.  None of them
 * reads past the n bytes it is given or needs them NUL-terminated.
 */
#ifndef AD_REQPARSE_H
#define AD_REQPARSE_H

#include "buf.h"

#include <stdbool.h>
#include <stddef.h>

/* A range inside the input. */
struct ad_span {
	const char *p;
	size_t n;
};

/* The only WebSocket subprotocol served, and the bearer-token prefix. */
#define AD_SUBPROTOCOL "actiond.v1"
#define AD_SUBPROTOCOL_BEARER "actiond.bearer."

/*
 * "Bearer <token>" (scheme in any case, blanks around the token).  Returns
 * 0 with the token, or -1 if the value is anything else or the token empty.
 */
int ad_parse_bearer(const char *v, size_t n, struct ad_span *tok);

/*
 * Finds the cookie name in a Cookie header value ("a=1; b=2"), however many
 * others come before it.  The first one of that name wins; a value in
 * double quotes loses them.  Returns true with its value.
 */
bool ad_parse_cookie(const char *v, size_t n, const char *name, struct ad_span *val);

enum ad_subproto {
	AD_SUBPROTO_OK,      /* actiond.v1 offered, nothing else but a bearer */
	AD_SUBPROTO_NO_V1,   /* actiond.v1 is not among them */
	AD_SUBPROTO_FOREIGN, /* something other than ours is offered */
};

/*
 * Checks a Sec-WebSocket-Protocol value (comma-separated tokens).  *bearer
 * gets the token of an actiond.bearer.<token> entry (n = 0 if none).
 */
enum ad_subproto ad_parse_subprotocols(const char *v, size_t n, struct ad_span *bearer);

/*
 * Builds the JSON-RPC request of GET /rpc from its decoded query arguments
 * ("name=value" each): method (required), params (JSON, optional) and id
 * (JSON; anything that is not a JSON string, number or null is taken as a
 * string; absent: null).  Each JSON value must be one complete value on its
 * own, so nothing in one argument can add members to the request.
 *
 * Returns 0 with the request text appended to out, or -1 with *why naming
 * the problem and *parse_error set if it is malformed JSON (rather than a
 * missing method or a params that is not an object or array).
 */
int ad_parse_get_rpc(const struct ad_span *args, size_t nargs, struct ad_buf *out,
		     const char **why, bool *parse_error);

#endif
