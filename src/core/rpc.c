/*
 * rpc.c - JSON-RPC 2.0 error vocabulary and response writers.
 */
#include "rpc.h"

#include <string.h>

static const struct {
	const char *name;
	int code;
	int http;
} reasons[AD_REASON__COUNT] = {
	[AD_REASON_UNAUTHENTICATED] = { "unauthenticated", -32001, 401 },
	[AD_REASON_FORBIDDEN] = { "forbidden", -32003, 403 },
	[AD_REASON_RATE_LIMITED] = { "rate_limited", -32029, 429 },
	[AD_REASON_TIMEOUT] = { "timeout", -32008, 504 },
	[AD_REASON_CANCELLED] = { "cancelled", -32010, 409 },
	[AD_REASON_NOT_FOUND] = { "not_found", -32004, 404 },
	[AD_REASON_CONFLICT] = { "conflict", -32009, 409 },
	[AD_REASON_EXPIRED] = { "expired", -32011, 410 },
	[AD_REASON_DENIED] = { "denied", -32012, 403 },
	[AD_REASON_UNAVAILABLE] = { "unavailable", -32050, 503 },
	[AD_REASON_PAYLOAD_TOO_LARGE] = { "payload_too_large", -32013, 413 },
};

const char *ad_reason_name(enum ad_reason r)
{
	return r > 0 && r < AD_REASON__COUNT ? reasons[r].name : "internal";
}

int ad_reason_code(enum ad_reason r)
{
	return r > 0 && r < AD_REASON__COUNT ? reasons[r].code : AD_RPC_INTERNAL_ERROR;
}

int ad_reason_http_status(enum ad_reason r)
{
	return r > 0 && r < AD_REASON__COUNT ? reasons[r].http : 500;
}

int ad_rpc_code_http_status(int code)
{
	switch (code) {
	case AD_RPC_PARSE_ERROR:
	case AD_RPC_INVALID_REQUEST:
	case AD_RPC_INVALID_PARAMS:
		return 400;
	case AD_RPC_METHOD_NOT_FOUND:
		return 404;
	case AD_RPC_INTERNAL_ERROR:
		return 500;
	}
	for (int r = 1; r < AD_REASON__COUNT; r++)
		if (reasons[r].code == code)
			return reasons[r].http;
	return 500;
}

static void write_head(struct ad_buf *b, const json_t *id)
{
	ad_buf_append(b, "{\"jsonrpc\":\"2.0\",\"id\":", 22);
	if (id)
		ad_buf_json(b, id);
	else
		ad_buf_append(b, "null", 4);
}

void ad_rpc_write_result(struct ad_buf *b, const json_t *id, const json_t *result)
{
	write_head(b, id);
	ad_buf_append(b, ",\"result\":", 10);
	if (result)
		ad_buf_json(b, result);
	else
		ad_buf_append(b, "null", 4);
	ad_buf_putc(b, '}');
}

void ad_rpc_write_raw_result(struct ad_buf *b, const json_t *id, const char *json,
			     size_t len)
{
	write_head(b, id);
	ad_buf_append(b, ",\"result\":", 10);
	ad_buf_append(b, json, len);
	ad_buf_putc(b, '}');
}

void ad_rpc_write_error(struct ad_buf *b, const json_t *id, int code,
			const char *message, const json_t *data)
{
	write_head(b, id);
	ad_buf_append(b, ",\"error\":{\"code\":", 17);
	ad_buf_int(b, code);
	ad_buf_append(b, ",\"message\":", 11);
	ad_buf_json_str(b, message, strlen(message));
	if (data) {
		ad_buf_append(b, ",\"data\":", 8);
		ad_buf_json(b, data);
	}
	ad_buf_append(b, "}}", 2);
}
