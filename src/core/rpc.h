/*
 * rpc.h - JSON-RPC 2.0 vocabulary: error codes, application reasons, and the
 * writers of response envelopes.
 *
 * Application errors use the server range; the stable contract for clients is
 * error.data.reason, the code merely mirrors it:
 *
 *   reason              code    HTTP
 *   unauthenticated     -32001  401
 *   forbidden           -32003  403
 *   rate_limited        -32029  429   (error.data.retry_after_ms)
 *   timeout             -32008  504
 *   cancelled           -32010  409
 *   not_found           -32004  404
 *   conflict            -32009  409
 *   expired             -32011  410
 *   denied              -32012  403
 *   unavailable         -32050  503
 *   payload_too_large   -32013  413
 */
#ifndef AD_RPC_H
#define AD_RPC_H

#include "actiond/action.h"
#include "buf.h"

#include <jansson.h>

#define AD_RPC_PARSE_ERROR -32700
#define AD_RPC_INVALID_REQUEST -32600
#define AD_RPC_METHOD_NOT_FOUND -32601
#define AD_RPC_INVALID_PARAMS -32602
#define AD_RPC_INTERNAL_ERROR -32603

const char *ad_reason_name(enum ad_reason r);
int ad_reason_code(enum ad_reason r);
int ad_reason_http_status(enum ad_reason r);
/* The HTTP status for a single (non-batch) error answer with this code. */
int ad_rpc_code_http_status(int code);

/* Appends {"jsonrpc":"2.0","id":<id>,"result":<result>}; id NULL -> null. */
void ad_rpc_write_result(struct ad_buf *b, const json_t *id, const json_t *result);

/* Same, with the result already serialised (trusted to be valid JSON). */
void ad_rpc_write_raw_result(struct ad_buf *b, const json_t *id, const char *json,
			     size_t len);

/*
 * Appends an error response.  data (may be NULL) is written as error.data;
 * for application errors pass ad_rpc_reason_data() output.
 */
void ad_rpc_write_error(struct ad_buf *b, const json_t *id, int code,
			const char *message, const json_t *data);

#endif
