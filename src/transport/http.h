/*
 * http.h - the HTTP side: POST /rpc, GET /rpc, /healthz, /readyz, /metrics.
 */
#ifndef AD_HTTP_H
#define AD_HTTP_H

#include "buf.h"
#include "dispatch.h"
#include "list.h"

#include <libwebsockets.h>
#include <stdbool.h>

/*
 * The header space of one request (lws's max_http_header_data): the request
 * line, query string and every header together.  A request over it is hung
 * up on by lws without a status.
 */
#define AD_HTTP_HEADER_MAX (16 * 1024)
/* The longest request target (path and query) answered; longer: 414. */
#define AD_HTTP_URI_MAX (8 * 1024)

/* One HTTP connection; lws allocates it as the wsi's user data. */
struct ad_http_exchange {
	struct ad_requester req;
	struct lws *wsi;
	struct ad_list node;   /* on ad_srv.http */
	struct ad_buf body;    /* request body being received */
	uint8_t via[16];       /* the TCP peer (req.ip is the client) */
	int64_t start_us;      /* when the request's first byte came */
	size_t body_limit;
	unsigned char *resp;   /* LWS_PRE bytes, then the whole response */
	size_t resp_len;
	int resp_status;       /* for the access log */
	bool active;           /* initialised and counted */
	bool busy;             /* a request is being served */
	bool too_big;          /* the body passed body_limit */
	bool body_unread;      /* the request has a body not read yet */
	bool rx_off;           /* not read while the answer is awaited */
	struct ad_mcp_conn *mcp; /* /mcp: this exchange's MCP side (mcp.c), or NULL */
};

/* Handles the HTTP callback reasons. */
int ad_http_callback(struct lws *wsi, enum lws_callback_reasons reason,
		     struct ad_http_exchange *h, void *in, size_t len);

/*
 * Writes a complete JSON error response {"error":{"reason":..,"message":..}}
 * right away, from inside an HTTP callback.  Returns the value the callback
 * should return for a rejected upgrade (1).
 */
int ad_http_reply_error(struct lws *wsi, int status, const char *reason,
			const char *message);

/*
 * Ends an exchange whose answer was written (out_bytes of it, with ok false
 * when the write failed): logs it with status, then readies the connection
 * for the next request, or returns -1 to hang up (keep_alive false, a
 * failed write, the drain, a body left unread).  Returns what the HTTP
 * callback should return.
 */
int ad_http_done(struct ad_http_exchange *h, struct lws *wsi, int status, size_t out_bytes,
		 bool ok, bool keep_alive);

/* Closes idle keep-alive connections (during the drain). */
void ad_http_close_idle(void);

/* Sets what writes the /metrics page (the app layer does). */
void ad_http_set_metrics(void (*fn)(struct ad_buf *b));

/*
 * A file served as it is (the console and the JavaScript client, from
 * src/app/console.c).  All fields live as long as the process.
 */
struct ad_http_file {
	const char *ctype;
	const char *cache;   /* Cache-Control */
	const char *etag;    /* quoted strong validator: If-None-Match gets 304 */
	const char *csp;     /* Content-Security-Policy, or NULL */
	const char *data;
	size_t len;
};
/* lookup(path) answers the file for a GET of path, or NULL (404). */
void ad_http_set_files(const struct ad_http_file *(*lookup)(const char *path));

#endif
