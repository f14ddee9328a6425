/*
 * metrics.c - the /metrics page (Prometheus text format): each layer writes
 * its own figures; this module only puts them in order.  The transport
 * serves it (ad_http_set_metrics) behind its own guard.
 */
#include "metrics.h"
#include "cluster.h"
#include "dispatch.h"
#include "mcp.h"
#include "outbound.h"
#include "pg.h"
#include "ws.h"

void ad_metrics_page(struct ad_buf *b)
{
	ad_transport_metrics(b);
	ad_mcp_metrics(b);
	ad_dispatch_metrics(b);
	ad_pg_metrics(b);
	ad_outbound_metrics(b);
	ad_identity_metrics(b);
}
