/*
 * http.c - HTTP requests into the dispatch core, and the operational
 * endpoints.
 *
 * Responses are written in one piece (status line, headers and body in a
 * single buffer, one lws_write) from the writable callback once the dispatch
 * core has delivered the answer, which may be long after the request arrived.
 * Only HTTP/1.1 is offered (ALPN), which is what makes the single write valid.
 */
#include "http.h"
#include "auth.h"
#include "cluster.h"
#include "ipkey.h"
#include "pg.h"
#include "log.h"
#include "mcp.h"
#include "peer.h"
#include "outbound.h"
#include "ratelimit.h"
#include "reqparse.h"
#include "rpc.h"
#include "server.h"
#include "spec.h"
#include "ws.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HDR_ROOM 1024

/* ---- the access log -------------------------------------------------------- */

/* The request's method, from the header lws filed its target under. */
static const char *method_of(struct lws *wsi, enum lws_token_indexes *ret_tok)
{
	static const struct {
		enum lws_token_indexes tok;
		const char *name;
	} methods[] = {
		{ WSI_TOKEN_GET_URI, "GET" },       { WSI_TOKEN_POST_URI, "POST" },
		{ WSI_TOKEN_PUT_URI, "PUT" },       { WSI_TOKEN_PATCH_URI, "PATCH" },
		{ WSI_TOKEN_DELETE_URI, "DELETE" }, { WSI_TOKEN_OPTIONS_URI, "OPTIONS" },
		{ WSI_TOKEN_HEAD_URI, "HEAD" },
	};

	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (lws_hdr_total_length(wsi, methods[i].tok) > 0) {
			*ret_tok = methods[i].tok;
			return methods[i].name;
		}
	return NULL;
}

/*
 * Logs one answered request: method, path (the query string is never
 * logged: GET /rpc carries params there), status, time since its first
 * byte, client (and proxy), credential id, bytes in and out.  The path is
 * the client's text: it is cut at 200 bytes and anything but printable
 * ASCII is escaped, so it cannot forge a line.
 */
static void access_http(struct lws *wsi, const uint8_t ip[16], const uint8_t via[16],
			int64_t start_us, int status, const char *cred_id,
			size_t in_bytes, size_t out_bytes)
{
	static char raw[AD_HTTP_URI_MAX + 1];
	char path[4 * 200 + 4], a[AD_IP_TEXT_MAX], b[AD_IP_TEXT_MAX];
	enum lws_token_indexes tok = WSI_TOKEN_GET_URI;
	const char *method;
	size_t o = 0;
	int n;

	if (!ad_srv.cfg.access_log || ad_log_level < AD_LOG_INFO)
		return;
	method = method_of(wsi, &tok);
	n = method ? lws_hdr_copy(wsi, raw, sizeof(raw), tok) : -1;
	if (n < 0)
		snprintf(raw, sizeof(raw), "-");
	for (const unsigned char *q = (const unsigned char *)raw; *q; q++) {
		if (q - (const unsigned char *)raw >= 200) {
			memcpy(path + o, "...", 3);
			o += 3;
			break;
		}
		if (*q > ' ' && *q < 0x7f && *q != '\\')
			path[o++] = (char)*q;
		else
			o += (size_t)snprintf(path + o, sizeof(path) - o, "\\x%02x", *q);
	}
	path[o] = '\0';
	ad_ip_format(ip, a);
	ad_ip_format(via, b);
	ad_log_info("access http peer=%s%s%s method=%s path=%s status=%d ms=%.1f "
		    "credential=%s bytes_in=%zu bytes_out=%zu",
		    a, memcmp(ip, via, 16) ? " via=" : "", memcmp(ip, via, 16) ? b : "",
		    method ? method : "-", path, status,
		    start_us ? (double)(lws_now_usecs() - start_us) / 1000.0 : 0.0,
		    cred_id ? cred_id : "-", in_bytes, out_bytes);
}

/* When the current request's first byte came (rxguard.c saw it). */
static int64_t request_start(struct lws *wsi)
{
	struct ad_peer *p = ad_peer_of(wsi);

	return p && p->rx.req_start_us ? p->rx.req_start_us : lws_now_usecs();
}

static int add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p,
		      unsigned char *end)
{
	return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
					   (const unsigned char *)value, (int)strlen(value), p, end);
}

/* What no answer may do: be sniffed, framed, leak a referrer, run anything. */
#define NO_CONTENT_POLICY "default-src 'none'; frame-ancestors 'none'"

static int add_security_headers(struct lws *wsi, const char *csp, unsigned char **p,
				unsigned char *end)
{
	return add_header(wsi, "x-content-type-options:", "nosniff", p, end) ||
	       add_header(wsi, "x-frame-options:", "DENY", p, end) ||
	       add_header(wsi, "referrer-policy:", "no-referrer", p, end) ||
	       add_header(wsi, "content-security-policy:", csp, p, end);
}

/*
 * Builds status line, headers and body into one buffer with LWS_PRE bytes of
 * headroom.  Returns NULL on failure.
 */
static unsigned char *build_response(struct lws *wsi, int status,
				     const char *ctype, const char *body,
				     size_t blen, uint32_t retry_after_ms,
				     const char *set_cookie, size_t *ret_len)
{
	size_t room = HDR_ROOM + (set_cookie ? strlen(set_cookie) + 32 : 0);
	unsigned char *buf = malloc(LWS_PRE + room + blen);
	unsigned char *start, *p, *end;

	if (!buf)
		return NULL;
	start = p = buf + LWS_PRE;
	end = buf + LWS_PRE + room - 1;
	if (lws_add_http_common_headers(wsi, (unsigned)status, ctype, blen, &p, end))
		goto fail;
	if (lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
					(const unsigned char *)"no-store", 8, &p, end) ||
	    add_security_headers(wsi, NO_CONTENT_POLICY, &p, end))
		goto fail;
	if (status == 401 &&
	    lws_add_http_header_by_name(wsi,
					(const unsigned char *)"www-authenticate:",
					(const unsigned char *)"Bearer", 6, &p, end))
		goto fail;
	if (status == 429 && retry_after_ms) {
		char v[16];
		int n = snprintf(v, sizeof(v), "%u", (retry_after_ms + 999) / 1000);

		if (lws_add_http_header_by_name(wsi,
						(const unsigned char *)"retry-after:",
						(unsigned char *)v, n, &p, end))
			goto fail;
	}
	if (set_cookie &&
	    lws_add_http_header_by_name(wsi, (const unsigned char *)"set-cookie:",
					(const unsigned char *)set_cookie,
					(int)strlen(set_cookie), &p, end))
		goto fail;
	if (lws_finalize_http_header(wsi, &p, end))
		goto fail;
	if (blen)
		memcpy(p, body, blen);
	*ret_len = (size_t)(p - start) + blen;
	return buf;
fail:
	free(buf);
	return NULL;
}

static void http_end(struct ad_http_exchange *h);

/*
 * Writes a response at once and ends the exchange; returns what the HTTP
 * callback should return.
 */
static int respond_now(struct ad_http_exchange *h, struct lws *wsi, int status, const char *ctype,
		       const char *body, size_t blen)
{
	size_t n;
	unsigned char *buf = build_response(wsi, status, ctype, body, blen, 0, NULL, &n);
	int r;

	if (!buf)
		return -1;
	r = lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_HTTP_FINAL);
	free(buf);
	return ad_http_done(h, wsi, status, n, r >= 0, true);
}

int ad_http_done(struct ad_http_exchange *h, struct lws *wsi, int status, size_t out_bytes,
		 bool ok, bool keep_alive)
{
	access_http(wsi, h->req.ip, h->via, h->start_us, status,
		    h->req.cred ? h->req.cred->id : NULL, h->body.len, out_bytes);
	http_end(h);
	/*
	 * Answered before its body was read: lws would discard the body and
	 * then read on, but the mark below would be taken too early to tell a
	 * pipelined request from a fresh one.  Hang up instead.
	 */
	if (!ok || !keep_alive || ad_srv.draining || h->body_unread)
		return -1;
	ad_peer_mark_exchange(wsi);
	return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static void error_body(struct ad_buf *b, const char *reason, const char *message)
{
	ad_buf_puts(b, "{\"error\":{\"reason\":");
	ad_buf_json_str(b, reason, strlen(reason));
	ad_buf_puts(b, ",\"message\":");
	ad_buf_json_str(b, message, strlen(message));
	ad_buf_puts(b, "}}");
}

int ad_http_reply_error(struct lws *wsi, int status, const char *reason,
			const char *message)
{
	struct ad_buf b = AD_BUF_INIT;
	unsigned char *buf;
	size_t n;

	error_body(&b, reason, message);
	buf = build_response(wsi, status, "application/json", b.data, b.len, 0, NULL, &n);
	ad_buf_free(&b);
	if (!buf)
		return -1;
	if (lws_write(wsi, buf + LWS_PRE, n, LWS_WRITE_HTTP_FINAL) < 0) {
		free(buf);
		return -1;
	}
	free(buf);
	if (ad_srv.cfg.access_log) {
		uint8_t ip[16], via[16];

		ad_peer_client_ip(wsi, ip, via);
		access_http(wsi, ip, via, request_start(wsi), status, NULL, 0, n);
	}
	return 1;
}

static int respond_error(struct ad_http_exchange *h, struct lws *wsi, int status, const char *reason,
			 const char *message)
{
	struct ad_buf b = AD_BUF_INIT;
	int r;

	error_body(&b, reason, message);
	r = respond_now(h, wsi, status, "application/json", b.data, b.len);
	ad_buf_free(&b);
	return r;
}

/* ---- /metrics ------------------------------------------------------------ */

static void (*metrics_fn)(struct ad_buf *b);

void ad_http_set_metrics(void (*fn)(struct ad_buf *b))
{
	metrics_fn = fn;
}

/* The page is assembled by whoever set it (src/app/metrics.c). */
static int serve_metrics(struct ad_http_exchange *h, struct lws *wsi)
{
	struct ad_buf b = AD_BUF_INIT;
	int r;

	if (!metrics_fn)
		return respond_error(h, wsi, 404, "not_found", "No metrics here");
	metrics_fn(&b);
	r = b.oom ? -1 : respond_now(h, wsi, 200, "text/plain; version=0.0.4", b.data, b.len);
	ad_buf_free(&b);
	return r;
}

/* ---- files ------------------------------------------------------------- */

static const struct ad_http_file *(*files_fn)(const char *path);

void ad_http_set_files(const struct ad_http_file *(*lookup)(const char *path))
{
	files_fn = lookup;
}

/*
 * A file, with the security headers of every answer and the file's own
 * Content-Security-Policy (the console page's).  A GET whose If-None-Match
 * holds the file's tag gets 304.
 */
static int serve_file(struct ad_http_exchange *h, struct lws *wsi, const struct ad_http_file *f)
{
	char inm[128];
	bool fresh = f->etag && lws_hdr_copy(wsi, inm, sizeof(inm), WSI_TOKEN_HTTP_IF_NONE_MATCH) > 0 &&
		     strstr(inm, f->etag);
	int status = fresh ? 304 : 200;
	size_t blen = fresh ? 0 : f->len, room = 1024 + (f->csp ? strlen(f->csp) : 0), n;
	unsigned char *buf = malloc(LWS_PRE + room + blen), *start, *p, *end;
	int r;

	if (!buf)
		return -1;
	start = p = buf + LWS_PRE;
	end = buf + LWS_PRE + room - 1;
	if (lws_add_http_common_headers(wsi, (unsigned)status, f->ctype, blen, &p, end) ||
	    add_header(wsi, "cache-control:", f->cache, &p, end) ||
	    (f->etag && add_header(wsi, "etag:", f->etag, &p, end)) ||
	    add_security_headers(wsi, f->csp ? f->csp : NO_CONTENT_POLICY, &p, end) ||
	    lws_finalize_http_header(wsi, &p, end)) {
		free(buf);
		return -1;
	}
	if (blen)
		memcpy(p, f->data, blen);
	n = (size_t)(p - start) + blen;
	r = lws_write(wsi, start, n, LWS_WRITE_HTTP_FINAL);
	free(buf);
	return ad_http_done(h, wsi, status, n, r >= 0, true);
}

/*
 * Whether /metrics may be served: to a loopback client (the address after
 * trusted proxies, so a local proxy does not open it to the world), or to
 * anyone presenting security.metrics_token as a Bearer token.  The tokens
 * are compared as BLAKE2b hashes with sodium_memcmp(), which takes the
 * same time wherever they differ and whatever their lengths.
 */
static bool metrics_allowed(struct ad_http_exchange *h, struct lws *wsi)
{
	static char hdr[AD_HTTP_HEADER_MAX + 1];
	unsigned char want[32], got[32];
	const char *tok = ad_srv.cfg.metrics_token;
	struct ad_span bearer;
	int n;

	if (ad_ip_is_loopback(h->req.ip))
		return true;
	if (!tok || lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION) <= 0 ||
	    (n = lws_hdr_copy(wsi, hdr, sizeof(hdr), WSI_TOKEN_HTTP_AUTHORIZATION)) <= 0 ||
	    ad_parse_bearer(hdr, (size_t)n, &bearer))
		return false;
	crypto_generichash(want, sizeof(want), (const unsigned char *)tok, strlen(tok), NULL, 0);
	crypto_generichash(got, sizeof(got), (const unsigned char *)bearer.p, bearer.n, NULL, 0);
	sodium_memzero(hdr, (size_t)n);
	return sodium_memcmp(want, got, sizeof(want)) == 0;
}

/* ---- the requester side -------------------------------------------------- */

static void http_deliver(struct ad_requester *r, const char *json, size_t len,
			 const struct ad_answer_meta *meta)
{
	struct ad_http_exchange *h = ad_container_of(r, struct ad_http_exchange, req);

	h->resp_status = meta->http_status;
	h->resp = build_response(h->wsi, meta->http_status,
				 len ? "application/json" : NULL, json, len,
				 meta->retry_after_ms, meta->set_cookie, &h->resp_len);
	/* lws 4.1 serves no POLLOUT for an h1 connection that is not read. */
	if (h->rx_off) {
		h->rx_off = false;
		lws_rx_flow_control(h->wsi, 1);
	}
	if (!h->resp)
		lws_set_timeout(h->wsi, PENDING_TIMEOUT_HTTP_CONTENT, LWS_TO_KILL_ASYNC);
	else
		lws_callback_on_writable(h->wsi);
}

static const struct ad_requester_ops http_ops = { .deliver = http_deliver,
						  .transport = AD_TRANSPORT_HTTP };

static void http_begin(struct ad_http_exchange *h, struct lws *wsi)
{
	if (!h->active) {
		ad_requester_init(&h->req, &http_ops);
		h->wsi = wsi;
		h->active = true;
		ad_list_add_tail(&ad_srv.http, &h->node);
		ad_srv.n_http++;
	}
	h->busy = true;
	h->too_big = false;
	ad_buf_reset(&h->body);
	ad_peer_client_ip(wsi, h->req.ip, h->via);
	h->start_us = request_start(wsi);
	ad_srv.http_requests++;
}

/* Ends one request/response exchange (the connection may live on). */
static void http_end(struct ad_http_exchange *h)
{
	if (h->mcp)
		ad_mcp_detach(h);
	ad_requester_detach(&h->req);
	h->req.cred = ad_cred_unref(h->req.cred);
	free(h->resp);
	h->resp = NULL;
	if (h->body.cap > 16 * 1024)
		ad_buf_free(&h->body);
	h->busy = false;
}

static void http_close(struct ad_http_exchange *h)
{
	if (!h->active)
		return;
	http_end(h);
	ad_buf_free(&h->body);
	ad_list_del(&h->node);
	ad_srv.n_http--;
	h->active = false;
}

/*
 * The request is complete and goes to the dispatch core; its answer may come
 * much later.  Until then the connection is not read: lws would otherwise
 * keep offering bytes a client pipelined behind the request, which it cannot
 * take while an exchange is open, and its loop would spin without waiting
 * in poll.
 */
static void wait_for_answer(struct ad_http_exchange *h, struct lws *wsi)
{
	lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
	lws_rx_flow_control(wsi, 0);
	h->rx_off = true;
}

/*
 * Refuses a /rpc request with a JSON-RPC 2.0 error response (id null: the
 * request was not read), the HTTP status mirroring it; error.data.reason
 * names the refusal.
 */
static int rpc_refuse(struct ad_http_exchange *h, struct lws *wsi, int status, int code,
		      const char *reason, const char *message)
{
	struct ad_buf b = AD_BUF_INIT;
	json_t *data = json_pack("{s:s}", "reason", reason);
	int r;

	ad_rpc_write_error(&b, NULL, code, message, data);
	json_decref(data);
	r = b.oom ? -1 : respond_now(h, wsi, status, "application/json", b.data, b.len);
	ad_buf_free(&b);
	return r;
}

static int rpc_refuse_reason(struct ad_http_exchange *h, struct lws *wsi, enum ad_reason reason,
			     const char *message)
{
	return rpc_refuse(h, wsi, ad_reason_http_status(reason), ad_reason_code(reason),
			  ad_reason_name(reason), message);
}

#define MAX_QUERY_ARGS 32

/*
 * GET /rpc?method=..&params=<json>&id=<json>: a read action.  The request is
 * built as JSON text and goes through the same path as a POST body, so the
 * same size, depth and envelope checks apply.
 */
static int serve_get_rpc(struct ad_http_exchange *h, struct lws *wsi)
{
	static char frag[AD_HTTP_HEADER_MAX + MAX_QUERY_ARGS];
	struct ad_span args[MAX_QUERY_ARGS];
	struct ad_buf req = AD_BUF_INIT;
	size_t nargs = 0, used = 0;
	const char *why;
	bool parse_error;
	int n;

	if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) +
	    lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS) > AD_HTTP_URI_MAX)
		return rpc_refuse(h, wsi, 414, ad_reason_code(AD_REASON_PAYLOAD_TOO_LARGE),
				  "payload_too_large", "The request target is too long");
	while ((n = lws_hdr_copy_fragment(wsi, frag + used, (int)(sizeof(frag) - used),
					  WSI_TOKEN_HTTP_URI_ARGS, (int)nargs)) >= 0) {
		if (nargs == MAX_QUERY_ARGS)
			return rpc_refuse(h, wsi, 400, AD_RPC_INVALID_REQUEST, "invalid_request",
					  "Too many query arguments");
		args[nargs++] = (struct ad_span){ frag + used, (size_t)n };
		used += (size_t)n + 1;
	}
	if (ad_parse_get_rpc(args, nargs, &req, &why, &parse_error)) {
		ad_buf_free(&req);
		return rpc_refuse(h, wsi, 400,
				  parse_error ? AD_RPC_PARSE_ERROR : AD_RPC_INVALID_REQUEST,
				  parse_error ? "parse_error" : "invalid_request", why);
	}
	if (req.len > (h->req.cred ? ad_srv.cfg.max_message : ad_srv.cfg.max_preauth_body)) {
		ad_buf_free(&req);
		return rpc_refuse_reason(h, wsi, AD_REASON_PAYLOAD_TOO_LARGE,
					 "The request is larger than allowed");
	}
	wait_for_answer(h, wsi);
	ad_dispatch_message(&h->req, req.data, req.len, AD_DISPATCH_READ_ONLY);
	ad_buf_free(&req);
	return 0;
}

static int on_http(struct ad_http_exchange *h, struct lws *wsi, const char *path)
{
	bool get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;
	bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
	const char *why;

	/*
	 * A request with a body parsed from bytes lws had buffered before the
	 * previous answer would send lws 4.1 into an endless loop (see
	 * peer.c): hang up instead.  The earlier requests have their answers;
	 * a client that pipelines starts again on a new connection.  So is
	 * one sent while an MCP stream is still being written (mcp.c).
	 */
	if (h->active && h->mcp) {
		ad_log_debug("closing a connection that sent a request into an MCP stream");
		return -1;
	}
	if ((post || lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0) &&
	    ad_peer_maybe_pipelined(wsi)) {
		ad_log_debug("closing a connection that pipelined a request with a body");
		return -1;
	}
	{
		struct ad_peer *p = ad_peer_of(wsi);

		/* A body, if any, is read as it comes (rxguard.h). */
		if (p)
			ad_rxguard_set_mode(&p->rx, AD_RXG_BODY);
	}
	http_begin(h, wsi);
	h->body_unread = post || lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0;
	if (!strcmp(path, "/healthz"))
		return get ? respond_now(h, wsi, 200, "application/json",
					 "{\"status\":\"ok\"}", 15)
			   : respond_error(h, wsi, 405, "method_not_allowed", "Use GET");
	if (!strcmp(path, "/readyz")) {
		if (ad_srv.draining)
			return respond_error(h, wsi, 503, "unavailable", "Draining");
		if (ad_srv.db_conninfo[0] && !ad_pg_ready())
			return respond_error(h, wsi, 503, "unavailable",
					     "No database connection");
		return respond_now(h, wsi, 200, "application/json",
				   "{\"status\":\"ready\"}", 18);
	}
	if (!strcmp(path, "/metrics")) {
		if (!metrics_allowed(h, wsi)) {
			ad_srv.metrics_refused++;
			return respond_error(h, wsi, 403, "forbidden",
					     ad_srv.cfg.metrics_token
					     ? "Metrics are served to loopback addresses, "
					       "or with the metrics Bearer token"
					     : "Metrics are served to loopback addresses only");
		}
		return serve_metrics(h, wsi);
	}
	if (!strcmp(path, "/mcp"))
		return ad_mcp_request(h, wsi);
	if (!strcmp(path, "/ws"))
		return respond_error(h, wsi, 426, "upgrade_required",
				     "/ws speaks WebSocket only");
	if (strcmp(path, "/rpc") && files_fn) {
		const struct ad_http_file *f = files_fn(path);

		if (f)
			return get ? serve_file(h, wsi, f)
				   : respond_error(h, wsi, 405, "method_not_allowed", "Use GET");
	}
	if (strcmp(path, "/rpc") != 0)
		return respond_error(h, wsi, 404, "not_found", "No such path");
	/* From here on every answer is a JSON-RPC response. */
	if (!get && !post)
		return rpc_refuse(h, wsi, 405, AD_RPC_INVALID_REQUEST, "method_not_allowed",
				  "Use GET or POST");
	if (get && lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0)
		return rpc_refuse(h, wsi, 400, AD_RPC_INVALID_REQUEST, "invalid_request",
				  "GET /rpc takes no body");
	if (post && lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0)
		/* lws 4.1 would wait for 100 MB of body; chunked is not read. */
		return rpc_refuse(h, wsi, 411, AD_RPC_INVALID_REQUEST, "length_required",
				  "POST /rpc needs a Content-Length (no chunked bodies)");
	if (ad_srv.draining)
		return rpc_refuse_reason(h, wsi, AD_REASON_UNAVAILABLE,
					 "The server is shutting down");

	h->req.cred = ad_ws_authenticate(wsi, &why);
	/* Nothing presented is fine here: some actions are anonymous. */
	if (!h->req.cred && strcmp(why, "Credentials are required") != 0)
		return rpc_refuse_reason(h, wsi, !strcmp(why, "Origin not allowed")
					 ? AD_REASON_FORBIDDEN : AD_REASON_UNAUTHENTICATED,
					 why);
	if (get)
		return serve_get_rpc(h, wsi);

	h->body_limit = h->req.cred ? ad_srv.cfg.max_message
				    : ad_srv.cfg.max_preauth_body;
	{
		char cl[32], *end;
		unsigned long long n;

		if (lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0 ||
		    cl[0] < '0' || cl[0] > '9' || (n = strtoull(cl, &end, 10), *end))
			return rpc_refuse(h, wsi, 400, AD_RPC_INVALID_REQUEST,
					  "invalid_request", "Malformed Content-Length");
		if (n > h->body_limit)
			return rpc_refuse_reason(h, wsi, AD_REASON_PAYLOAD_TOO_LARGE,
						 "The body is larger than allowed");
	}
	return 0; /* the body follows */
}

int ad_http_callback(struct lws *wsi, enum lws_callback_reasons reason,
		     struct ad_http_exchange *h, void *in, size_t len)
{
	switch (reason) {
	case LWS_CALLBACK_HTTP:
		return on_http(h, wsi, (const char *)in);
	case LWS_CALLBACK_HTTP_BODY:
		if (!h->active || h->too_big)
			return 0;
		if (h->body.len + len > h->body_limit) {
			h->too_big = true;
			return 0;
		}
		ad_buf_append(&h->body, in, len);
		return h->body.oom ? -1 : 0;
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
		if (!h->active)
			return -1;
		if (h->mcp)
			return ad_mcp_body(h, wsi);
		if (h->too_big)
			return rpc_refuse_reason(h, wsi, AD_REASON_PAYLOAD_TOO_LARGE,
						 "The body is larger than allowed");
		h->body_unread = false;
		wait_for_answer(h, wsi);
		ad_dispatch_message(&h->req, h->body.data ? h->body.data : "",
				    h->body.len, 0);
		return 0;
	case LWS_CALLBACK_HTTP_WRITEABLE: {
		int r;

		if (h->active && h->mcp)
			return ad_mcp_writable(h, wsi);
		if (!h->active || !h->resp)
			return 0;
		r = lws_write(wsi, h->resp + LWS_PRE, h->resp_len, LWS_WRITE_HTTP_FINAL);
		return ad_http_done(h, wsi, h->resp_status, h->resp_len, r >= 0, true);
	}
	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
		if (h)
			http_close(h);
		return 0;
	default:
		return 0;
	}
}

void ad_http_close_idle(void)
{
	struct ad_list *pos, *tmp;

	ad_list_foreach_safe(pos, tmp, &ad_srv.http) {
		struct ad_http_exchange *h = ad_container_of(pos, struct ad_http_exchange, node);

		if (!h->busy)
			lws_set_timeout(h->wsi, PENDING_TIMEOUT_HTTP_KEEPALIVE_IDLE,
					LWS_TO_KILL_ASYNC);
	}
}
