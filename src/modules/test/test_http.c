/*
 * test_http.c - test.http_fetch, compiled only into test builds: runs one
 * request through the outbound HTTP client for the call and describes what
 * came back, so the suite can drive the client against local servers.
 * Written against the public module API only.
 */
#include "actiond/action.h"
#include "actiond/http_client.h"

#include <stdlib.h>
#include <string.h>

#define MAX_HEADERS 16
#define HEAD_BYTES 64

void ad_test_http_fetch(struct ad_call *call);

static const char *const error_names[] = {
	[AD_HTTP_OK] = "ok",
	[AD_HTTP_TIMEOUT] = "timeout",
	[AD_HTTP_CANCELLED] = "cancelled",
	[AD_HTTP_TOO_LARGE] = "too_large",
	[AD_HTTP_RESOLVE] = "resolve",
	[AD_HTTP_CONNECT] = "connect",
	[AD_HTTP_TLS] = "tls",
	[AD_HTTP_FAILED] = "failed",
};

/*
 * A JSON string of at most max bytes of s, with every byte outside
 * printable ASCII shown as '?': what a server sends need not be UTF-8.
 */
static json_t *printable(const char *s, size_t len, size_t max)
{
	char buf[256];

	if (len > max)
		len = max;
	if (len > sizeof(buf))
		len = sizeof(buf);
	for (size_t i = 0; i < len; i++)
		buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	return json_stringn(buf, len);
}

static void fetched(struct ad_call *call, void *arg, const struct ad_http_response *r)
{
	const char *ctype = ad_http_header(r, "content-type");
	json_t *out;

	(void)arg;
	if (r->error == AD_HTTP_CANCELLED && ad_call_is_cancelled(call)) {
		/* Answered already by the core; the handler still finishes. */
		ad_call_fail(call, AD_REASON_CANCELLED, "cancelled", NULL);
		return;
	}
	out = json_pack("{s:s,s:o,s:i,s:I,s:o,s:I}", "error", error_names[r->error],
			"message", printable(r->message, strlen(r->message), 200),
			"status", r->status, "body_len", (json_int_t)r->body_len,
			"body_head", printable(r->body, r->body_len, HEAD_BYTES),
			"elapsed_ms", (json_int_t)r->elapsed_ms);
	if (out && ctype)
		json_object_set_new(out, "header_content_type",
				    printable(ctype, strlen(ctype), 200));
	if (!out) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	ad_call_reply(call, out);
}

/*
 * An integer param (the schema has checked it; "integer" admits 5.0), or
 * 0 when absent.
 */
static int64_t integer(const json_t *v)
{
	return json_is_real(v) ? (int64_t)json_real_value(v) : (int64_t)json_integer_value(v);
}

/* params[key] as a C string, or NULL when absent; *bad when it holds a NUL. */
static const char *cstring(const json_t *v, bool *bad)
{
	const char *s = json_string_value(v);

	if (s && strlen(s) != json_string_length(v))
		*bad = true;
	return s;
}

void ad_test_http_fetch(struct ad_call *call)
{
	const json_t *p = ad_call_params(call), *hs = json_object_get(p, "headers"), *v;
	const char *headers[MAX_HEADERS + 1] = { NULL };
	struct ad_http_request req = { 0 };
	bool bad = false;
	size_t i;

	req.url = cstring(json_object_get(p, "url"), &bad);
	req.method = cstring(json_object_get(p, "method"), &bad);
	if ((v = json_object_get(p, "body"))) {
		req.body = json_string_value(v);
		req.body_len = json_string_length(v);
	}
	json_array_foreach(hs, i, v) {
		if (i < MAX_HEADERS) /* the schema says so already */
			headers[i] = cstring(v, &bad);
	}
	req.headers = hs ? headers : NULL;
	req.timeout_ms = (uint32_t)integer(json_object_get(p, "timeout_ms"));
	req.max_response = (size_t)integer(json_object_get(p, "max_response"));
	if (bad) {
		ad_call_fail_params(call, "", "type", "strings must not hold U+0000");
		return;
	}
	ad_call_http(call, &req, fetched, NULL);
}
