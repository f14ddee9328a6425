/*
 * mcp.h - the Model Context Protocol's Streamable HTTP transport at /mcp
 * (revisions 2025-06-18 and 2025-03-26): sessions, SSE streams with
 * resumption, and actions offered as tools through the dispatch core.
 * docs/mcp.md describes the wire side; mcp.c's opening comment the inside.
 */
#ifndef AD_MCP_H
#define AD_MCP_H

#include "buf.h"

#include <libwebsockets.h>

struct ad_http_exchange;

/*
 * LWS_CALLBACK_HTTP for /mcp, after http.c began the exchange: checks the
 * headers, and answers at once (GET, DELETE, refusals) or lets the body
 * come (POST).  Returns what the HTTP callback returns.
 */
int ad_mcp_request(struct ad_http_exchange *h, struct lws *wsi);
/* The body of a POST /mcp is in (h->mcp is set). */
int ad_mcp_body(struct ad_http_exchange *h, struct lws *wsi);
/* LWS_CALLBACK_HTTP_WRITEABLE of an exchange with h->mcp set. */
int ad_mcp_writable(struct ad_http_exchange *h, struct lws *wsi);
/*
 * The exchange ends (answered, or its connection closed): whatever stream
 * it carried goes on without it (resumable with Last-Event-ID).
 */
void ad_mcp_detach(struct ad_http_exchange *h);

/* SIGTERM: streams that carry nothing pending end now; waits for approvals stop. */
void ad_mcp_drain(void);

void ad_mcp_init(void);
/* Ends every session (before the loop goes away). */
void ad_mcp_free(void);

/* Sessions, streams, requests and replays for /metrics. */
void ad_mcp_metrics(struct ad_buf *b);

#endif
