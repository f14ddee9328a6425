/*
 * dispatch.c - the dispatch core: JSON-RPC envelopes, batches, the call
 * pipeline, timeouts and cancellation.
 *
 * Ownership: one incoming message becomes one ad_batch holding its calls
 * inline (a single request is a batch of one, so it costs one allocation).
 * The batch lives while any of its handlers has not finished ("live") and
 * answers its requester once every call is answered ("pending").  Both
 * counts start one higher than the number of calls while the message is
 * being dispatched, so a handler that answers synchronously can never free
 * the batch under the dispatcher's feet.
 */
#include "worker.h"
#include "dispatch.h"
#include "ipkey.h"
#include "json.h"
#include "log.h"
#include "ratelimit.h"
#include "rpc.h"
#include "loop.h"
#include "spec.h"

#include <libwebsockets.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct ad_batch;

struct ad_call {
	struct ad_batch *batch;
	const struct ad_spec *spec;
	json_t *id;        /* NULL for a notification */
	json_t *params;
	ad_cancel_fn cancel_fn;
	void *cancel_arg;
	void *data;
	struct ad_list timeout_node; /* on spec->inflight while running async */
	int64_t deadline_us;
	int64_t start_us;          /* when the pipeline started, for latency */
	bool answered;
	bool handler_done;
	bool cancelled;
};

struct ad_batch {
	struct ad_requester *req; /* NULL once the requester went away */
	struct ad_list req_node;
	struct ad_cred *cred;
	struct ad_buf out;        /* answers written so far */
	struct ad_answer_meta meta;
	uint32_t ncalls;
	uint32_t pending;         /* calls (+1 while dispatching) unanswered */
	uint32_t live;            /* calls (+1 while dispatching) not finished */
	uint32_t nanswers;        /* responses written into out */
	int success_status;       /* HTTP status of a single success, 0 = 200 */
	size_t msg_len;           /* counted in req->inflight_bytes until answered */
	bool is_array;
	enum ad_transport transport;
	uint8_t ip[16];
	struct ad_call calls[];
};

struct ad_dispatch_stats ad_dispatch_stats;

static json_t *empty_params;
static lws_sorted_usec_list_t timeout_sul;
static int64_t timeout_sul_at; /* when timeout_sul fires, 0 if idle */

/* ---- helpers ------------------------------------------------------------ */

bool ad_json_too_deep(const char *s, size_t n, uint32_t max)
{
	uint32_t depth = 0;
	size_t i = 0;

	while (i < n) {
		char c = s[i++];

		if (c == '"') {
			/* Skip the string, honouring backslash escapes. */
			while (i < n && s[i] != '"')
				i += s[i] == '\\' ? 2 : 1;
			i++;
		} else if (c == '[' || c == '{') {
			if (++depth > max)
				return true;
		} else if (c == ']' || c == '}') {
			if (depth)
				depth--;
		}
	}
	return false;
}

static bool valid_id(const json_t *id)
{
	return json_is_string(id) || json_is_number(id) || json_is_null(id);
}

static json_t *reason_data(enum ad_reason reason, json_t *extra)
{
	json_t *d = json_is_object(extra) ? extra : json_object();

	if (extra && d != extra)
		json_decref(extra);
	json_object_set_new(d, "reason", json_string(ad_reason_name(reason)));
	return d;
}

static void batch_free(struct ad_batch *b)
{
	for (uint32_t i = 0; i < b->ncalls; i++) {
		json_decref(b->calls[i].id);
		json_decref(b->calls[i].params);
	}
	ad_buf_free(&b->out);
	ad_cred_unref(b->cred);
	free(b->meta.set_cookie);
	free(b);
}

static void batch_release(struct ad_batch *b)
{
	if (--b->live == 0)
		batch_free(b);
}

static void batch_deliver(struct ad_batch *b)
{
	struct ad_requester *r = b->req;

	if (b->is_array) {
		if (b->nanswers)
			ad_buf_putc(&b->out, ']');
		else
			ad_buf_reset(&b->out); /* all notifications: say nothing */
		b->meta.http_status = b->nanswers ? 200 : 204;
	} else if (!b->nanswers) {
		b->meta.http_status = 204;
	}
	if (!r)
		return;
	ad_list_del(&b->req_node);
	b->req = NULL;
	r->inflight_bytes -= b->msg_len;
	if (b->out.oom) {
		ad_log_error("out of memory building an answer; sending an error");
		ad_buf_reset(&b->out);
		ad_rpc_write_error(&b->out, NULL, AD_RPC_INTERNAL_ERROR,
				   "Internal error", NULL);
		b->meta.http_status = 500;
	}
	r->ops->deliver(r, b->out.data, b->out.len, &b->meta);
}

static void batch_answered(struct ad_batch *b)
{
	if (--b->pending == 0)
		batch_deliver(b);
}

/* Starts one response inside the batch's output; returns the buffer. */
/* Counts an answer of c's method, its latency and whether it failed. */
static void method_stats(struct ad_call *c, bool error)
{
	struct ad_spec *s = (struct ad_spec *)c->spec;
	double secs;
	int i;

	if (!s)
		return;
	secs = (double)(lws_now_usecs() - c->start_us) / 1e6;
	s->stat_calls++;
	s->stat_errors += error;
	s->stat_latency_sum += secs;
	for (i = 0; i < AD_LATENCY_BUCKETS && secs > ad_latency_le[i]; i++)
		;
	s->stat_latency[i]++;
}

static struct ad_buf *answer_begin(struct ad_call *c)
{
	struct ad_batch *b = c->batch;

	c->answered = true;
	ad_dispatch_stats.calls_inflight--;
	if (b->req && b->req->inflight)
		b->req->inflight--;
	if (!c->id) /* notifications are never answered */
		return NULL;
	if (b->is_array)
		ad_buf_putc(&b->out, b->nanswers ? ',' : '[');
	b->nanswers++;
	return &b->out;
}

static void answer_error(struct ad_call *c, int code, const char *message,
			 json_t *data)
{
	struct ad_buf *out = answer_begin(c);

	ad_dispatch_stats.errors++;
	method_stats(c, true);
	if (out) {
		ad_rpc_write_error(out, c->id, code, message, data);
		if (!c->batch->is_array)
			c->batch->meta.http_status = ad_rpc_code_http_status(code);
	}
	json_decref(data);
	batch_answered(c->batch);
}

static void answer_reason(struct ad_call *c, enum ad_reason reason,
			  const char *message, json_t *extra)
{
	json_t *data = reason_data(reason, extra);
	int64_t retry;

	/* A handler's rate_limited carries its Retry-After too. */
	if (reason == AD_REASON_RATE_LIMITED && !c->batch->is_array &&
	    ad_json_int(json_object_get(data, "retry_after_ms"), &retry) && retry > 0)
		c->batch->meta.retry_after_ms = retry > UINT32_MAX ? UINT32_MAX : (uint32_t)retry;
	answer_error(c, ad_reason_code(reason), message, data);
}

static void answer_result(struct ad_call *c, const json_t *result)
{
	struct ad_buf *out = answer_begin(c);

	method_stats(c, false);
	if (out) {
		ad_rpc_write_result(out, c->id, result);
		if (c->batch->success_status)
			c->batch->meta.http_status = c->batch->success_status;
	}
	batch_answered(c->batch);
}

/* ---- timeouts ------------------------------------------------------------ */

static void timeout_arm(int64_t at)
{
	if (timeout_sul_at && timeout_sul_at <= at)
		return;
	timeout_sul_at = at;
	lws_sul_schedule(ad_loop, 0, &timeout_sul, timeout_sul.cb,
			 at > lws_now_usecs() ? at - lws_now_usecs() : 0);
}

static void call_cancel(struct ad_call *c, enum ad_reason reason);

static void timeout_fire(lws_sorted_usec_list_t *sul)
{
	int64_t now = lws_now_usecs(), next = 0;

	timeout_sul_at = 0;
	for (size_t i = 0; i < ad_nspecs; i++) {
		struct ad_list *h = &ad_specs[i].inflight;

		while (!ad_list_empty(h)) {
			struct ad_call *c = ad_container_of(ad_list_first(h),
							    struct ad_call,
							    timeout_node);

			if (c->deadline_us > now) {
				if (!next || c->deadline_us < next)
					next = c->deadline_us;
				break;
			}
			ad_dispatch_stats.timeouts++;
			call_cancel(c, AD_REASON_TIMEOUT);
		}
	}
	if (next)
		timeout_arm(next);
}

/* ---- the call API for handlers ------------------------------------------- */

static void call_finish(struct ad_call *c)
{
	c->handler_done = true;
	ad_list_del(&c->timeout_node);
	batch_release(c->batch);
}

/*
 * Answers for the handler with an error and lets it know.  The handler still
 * finishes the call itself; its late answer is dropped.
 */
static void call_cancel(struct ad_call *c, enum ad_reason reason)
{
	ad_cancel_fn fn = c->cancel_fn;

	if (c->answered || c->handler_done)
		return;
	ad_list_del(&c->timeout_node);
	c->cancelled = true;
	c->cancel_fn = NULL;
	answer_reason(c, reason,
		      reason == AD_REASON_TIMEOUT ? "The action timed out"
						  : "The request was cancelled",
		      NULL);
	if (fn)
		fn(c, c->cancel_arg); /* may finish and free the call */
}

void ad_call_reply(struct ad_call *c, json_t *result)
{
	if (c->handler_done) {
		ad_log_error("%s: handler finished twice", c->spec->method);
		json_decref(result);
		return;
	}
	if (!c->answered) {
#ifndef NDEBUG
		struct ad_schema_error err;

		if (c->spec->result_schema &&
		    !ad_schema_validate(c->spec->result_schema,
					result ? result : json_null(), &err)) {
			ad_log_error("%s: result breaks its schema at \"%s\": %s",
				     c->spec->method, err.pointer, err.message);
			answer_error(c, AD_RPC_INTERNAL_ERROR, "Internal error",
				     json_pack("{s:s,s:s}", "detail",
					       "result does not match the output schema",
					       "pointer", err.pointer));
			json_decref(result);
			call_finish(c);
			return;
		}
#endif
		answer_result(c, result);
	}
	json_decref(result);
	call_finish(c);
}

void ad_call_reply_raw(struct ad_call *c, const char *json, size_t len)
{
	struct ad_buf *out;

	if (c->handler_done || c->answered) {
		if (!c->handler_done)
			call_finish(c);
		return;
	}
#ifndef NDEBUG
	{
		json_t *v = ad_json_loadb(json, len, JSON_DECODE_ANY | AD_JSON_BIG_AS_REAL, NULL);

		if (!v) {
			ad_log_error("%s: raw result is not JSON", c->spec->method);
			answer_error(c, AD_RPC_INTERNAL_ERROR, "Internal error", NULL);
			call_finish(c);
			return;
		}
		/* The schema check in ad_call_reply() applies to both. */
		ad_call_reply(c, v);
		return;
	}
#endif
	out = answer_begin(c);
	method_stats(c, false);
	if (out)
		ad_rpc_write_raw_result(out, c->id, json, len);
	batch_answered(c->batch);
	call_finish(c);
}

void ad_call_fail(struct ad_call *c, enum ad_reason reason, const char *message,
		  json_t *data)
{
	if (c->handler_done) {
		ad_log_error("%s: handler finished twice", c->spec->method);
		json_decref(data);
		return;
	}
	if (!c->answered)
		answer_reason(c, reason, message, data);
	else
		json_decref(data);
	call_finish(c);
}

void ad_call_fail_params_data(struct ad_call *c, const char *pointer,
			      const char *keyword, const char *message, json_t *data)
{
	json_t *d;

	if (c->handler_done) {
		json_decref(data);
		return;
	}
	if (!c->answered) {
		d = json_pack("{s:s,s:s,s:s}", "pointer", pointer, "keyword", keyword,
			      "message", message);
		if (d && json_is_object(data))
			json_object_update_missing(d, data);
		answer_error(c, AD_RPC_INVALID_PARAMS, "Invalid params", d);
	}
	json_decref(data);
	call_finish(c);
}

void ad_call_fail_params(struct ad_call *c, const char *pointer,
			 const char *keyword, const char *message)
{
	ad_call_fail_params_data(c, pointer, keyword, message, NULL);
}

void ad_call_on_cancel(struct ad_call *c, ad_cancel_fn fn, void *arg)
{
	c->cancel_fn = fn;
	c->cancel_arg = arg;
}

const json_t *ad_call_params(const struct ad_call *c) { return c->params; }
const char *ad_call_method(const struct ad_call *c) { return c->spec->method; }
const json_t *ad_call_request_id(const struct ad_call *c) { return c->id; }
bool ad_call_is_cancelled(const struct ad_call *c) { return c->cancelled; }
void ad_call_set_data(struct ad_call *c, void *data) { c->data = data; }
void *ad_call_data(const struct ad_call *c) { return c->data; }

const char *ad_call_org(const struct ad_call *c)
{
	return c->batch->cred ? c->batch->cred->org : NULL;
}

int64_t ad_call_org_id(const struct ad_call *c)
{
	return c->batch->cred ? c->batch->cred->org_id : 0;
}

int64_t ad_call_account_id(const struct ad_call *c)
{
	return c->batch->cred ? c->batch->cred->account_id : 0;
}

int64_t ad_call_agent_session_id(const struct ad_call *c)
{
	return c->batch->cred ? c->batch->cred->agent_session_id : 0;
}

size_t ad_call_integration_count(const struct ad_call *c)
{
	const struct ad_cred *cr = c->batch->cred;

	return cr && cr->kind == AD_CRED_AGENT ? cr->n_integrations : 0;
}

const char *ad_call_integration(const struct ad_call *c, size_t i)
{
	return i < ad_call_integration_count(c) ? c->batch->cred->integrations[i] : NULL;
}

void ad_call_log(const struct ad_call *c, enum ad_log_level level, const char *fmt, ...)
{
	char msg[768], id[64] = "-";
	va_list ap;

	if (level > ad_log_level)
		return;
	if (c->id && !json_is_null(c->id)) {
		char *t = json_dumps(c->id, JSON_ENCODE_ANY | JSON_COMPACT);

		snprintf(id, sizeof(id), "%s", t ? t : "?");
		free(t);
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ad_log(level, "%s [id %s, %s]: %s", c->spec->method, id,
	       c->batch->cred ? c->batch->cred->id : "anonymous", msg);
}

void ad_call_progress(struct ad_call *c, json_t *params)
{
	struct ad_requester *r = c->batch->req;
	struct ad_buf b = AD_BUF_INIT;
	json_t *p = json_is_object(params) ? params : json_object();

	if (params && p != params)
		json_decref(params);
	if (c->answered || !c->id || !r || !r->ops->notify) {
		json_decref(p);
		return;
	}
	json_object_set(p, "request_id", c->id);
	ad_buf_puts(&b, "{\"jsonrpc\":\"2.0\",\"method\":\"progress\",\"params\":");
	ad_buf_json(&b, p);
	ad_buf_putc(&b, '}');
	if (!b.oom)
		r->ops->notify(r, b.data, b.len);
	ad_buf_free(&b);
	json_decref(p);
}

bool ad_call_cancel_request(struct ad_call *c, const json_t *request_id)
{
	struct ad_requester *r = c->batch->req;

	return r && request_id && ad_dispatch_cancel(r, request_id);
}

bool ad_json_int(const json_t *v, int64_t *ret)
{
	double d;

	if (json_is_integer(v)) {
		*ret = (int64_t)json_integer_value(v);
		return true;
	}
	if (!json_is_real(v))
		return false;
	d = json_real_value(v);
	/* Integral and inside int64 (2^63 itself is not). */
	if (d != d || d < -9223372036854775808.0 || d >= 9223372036854775808.0 ||
	    d != (double)(int64_t)d)
		return false;
	*ret = (int64_t)d;
	return true;
}

bool ad_param_int(const struct ad_call *c, const char *key, int64_t *ret)
{
	return ad_json_int(json_object_get(c->params, key), ret);
}

const char *ad_param_str(const struct ad_call *c, const char *key, size_t *ret_len)
{
	const json_t *v = json_object_get(c->params, key);

	if (!json_is_string(v))
		return NULL;
	if (ret_len)
		*ret_len = json_string_length(v);
	return json_string_value(v);
}

const char *ad_call_credential_id(const struct ad_call *c)
{
	return c->batch->cred ? c->batch->cred->id : NULL;
}

enum ad_cred_kind ad_call_credential_kind(const struct ad_call *c)
{
	return c->batch->cred ? c->batch->cred->kind : 0;
}

const char *ad_call_role(const struct ad_call *c)
{
	return c->batch->cred ? ad_role_name(c->batch->cred->role) : "none";
}

const struct ad_spec *ad_call_spec(const struct ad_call *c)
{
	return c->spec;
}

int64_t ad_call_deadline_us(const struct ad_call *c)
{
	return c->start_us + (int64_t)c->spec->timeout_ms * 1000;
}

int64_t ad_call_time_left_ms(const struct ad_call *c)
{
	int64_t left = (ad_call_deadline_us(c) - ad_now_us()) / 1000;

	return left > 0 ? left : 0;
}

struct ad_requester *ad_call_requester(const struct ad_call *c)
{
	return c->batch->req;
}

const struct ad_cred *ad_call_cred(const struct ad_call *c)
{
	return c->batch->cred;
}

const uint8_t *ad_call_ip(const struct ad_call *c)
{
	return c->batch->ip;
}

void ad_call_peer(const struct ad_call *c, uint8_t out[16])
{
	memcpy(out, c->batch->ip, 16);
}

uint64_t ad_call_fair_key(const struct ad_call *c)
{
	uint8_t key[16];
	uint64_t h = 1469598103934665603ull;

	ad_ip_key(c->batch->ip, key);
	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 1099511628211ull;
	return h;
}

void ad_call_set_cookie(struct ad_call *c, const char *value)
{
	free(c->batch->meta.set_cookie);
	c->batch->meta.set_cookie = strdup(value);
}

void ad_call_set_http_status(struct ad_call *c, int status)
{
	if (!c->batch->is_array)
		c->batch->success_status = status;
}

/* ---- the pipeline ------------------------------------------------------- */

/*
 * Maps by-position params onto names as the spec's "positional" list says.
 * Returns a new object, or NULL (with *ret_why set) if there are more
 * elements than names.
 */
static json_t *params_by_position(const struct ad_spec *s, const json_t *arr,
				  const char **ret_why)
{
	size_t nnames = json_array_size(s->positional), n = json_array_size(arr);
	json_t *obj = json_object();

	for (size_t i = 0; i < nnames && i < n; i++) {
		const char *name = json_string_value(json_array_get(s->positional, i));

		if (!strncmp(name, "...", 3)) {
			json_t *rest = json_array();

			for (size_t k = i; k < n; k++)
				json_array_append(rest, json_array_get(arr, k));
			json_object_set_new(obj, name + 3, rest);
			return obj;
		}
		json_object_set(obj, name, json_array_get(arr, i));
	}
	if (n > nnames) {
		json_decref(obj);
		*ret_why = "more params by position than the method takes";
		return NULL;
	}
	return obj;
}

/*
 * Answers "forbidden" saying who may call the method and what the caller
 * is, in the message and in error.data (allowed_credentials, allowed_roles).
 */
static void forbidden(struct ad_call *c, const struct ad_spec *s, const struct ad_cred *cred)
{
	json_t *kinds = json_array(), *roles = json_array();
	char msg[256];
	size_t n = 0;
	bool by_kind = !(s->cred_mask & AD_CRED_BIT(cred->kind));

	for (int k = AD_CRED_API_KEY; k <= AD_CRED_AGENT; k++)
		if (s->cred_mask & AD_CRED_BIT(k))
			json_array_append_new(kinds, json_string(ad_cred_kind_name(k)));
	for (int r = AD_ROLE_MEMBER; r <= AD_ROLE_OWNER; r++)
		if (s->role_mask & AD_ROLE_BIT(r))
			json_array_append_new(roles, json_string(ad_role_name(r)));
	n = (size_t)snprintf(msg, sizeof(msg), "%s is for ", s->method);
	if (by_kind) {
		for (size_t i = 0; i < json_array_size(kinds) && n < sizeof(msg); i++)
			n += (size_t)snprintf(msg + n, sizeof(msg) - n, "%s%s", i ? ", " : "",
					      json_string_value(json_array_get(kinds, i)));
		if (n < sizeof(msg))
			snprintf(msg + n, sizeof(msg) - n, " credentials; this is a %s",
				 ad_cred_kind_name(cred->kind));
	} else {
		for (size_t i = 0; i < json_array_size(roles) && n < sizeof(msg); i++)
			n += (size_t)snprintf(msg + n, sizeof(msg) - n, "%s%s", i ? ", " : "",
					      json_string_value(json_array_get(roles, i)));
		if (n < sizeof(msg))
			snprintf(msg + n, sizeof(msg) - n, "; this credential's role is %s",
				 ad_role_name(cred->role));
	}
	answer_reason(c, AD_REASON_FORBIDDEN, msg,
		      json_pack("{s:o,s:o}", "allowed_credentials", kinds, "allowed_roles",
				roles));
}

static void run_call(struct ad_call *c, json_t *req, unsigned flags)
{
	struct ad_batch *b = c->batch;
	const struct ad_cred *cred = b->cred;
	const char *method = json_string_value(json_object_get(req, "method"));
	size_t mlen = json_string_length(json_object_get(req, "method"));
	json_t *params = json_object_get(req, "params");
	struct ad_schema_error verr;
	const struct ad_spec *s;
	uint32_t retry_ms;
	int64_t start;

	ad_dispatch_stats.calls++;
	c->start_us = start = lws_now_usecs();
	s = ad_spec_find(method, mlen);
	if (!s) {
		json_t *d = json_object();

		json_object_set_new(d, "method", json_stringn(method, mlen));
		answer_error(c, AD_RPC_METHOD_NOT_FOUND, "Method not found", d);
		goto done_sync;
	}
	c->spec = s;

	/* authenticate */
	if (!cred && !(s->cred_mask & AD_CRED_ANONYMOUS_BIT)) {
		answer_reason(c, AD_REASON_UNAUTHENTICATED,
			      "Credentials are required", NULL);
		goto done_sync;
	}

	/* validate */
	if (!params) {
		c->params = json_incref(empty_params);
	} else if (json_is_array(params)) {
		const char *why = "this method takes params by name (an object)";

		if (!s->positional || !(c->params = params_by_position(s, params, &why))) {
			answer_error(c, AD_RPC_INVALID_PARAMS, "Invalid params",
				     json_pack("{s:s,s:s,s:s}", "pointer", "",
					       "keyword", "type", "message", why));
			goto done_sync;
		}
	} else {
		c->params = json_incref(params);
	}
	if (s->params_schema &&
	    !ad_schema_validate(s->params_schema, c->params, &verr)) {
		answer_error(c, AD_RPC_INVALID_PARAMS, "Invalid params",
			     json_pack("{s:s,s:s,s:s}", "pointer", verr.pointer,
				       "keyword", verr.keyword, "message",
				       verr.message));
		goto done_sync;
	}

	/* authorize */
	if (cred && (!(s->cred_mask & AD_CRED_BIT(cred->kind)) ||
		     (cred->role && !(s->role_mask & AD_ROLE_BIT(cred->role))))) {
		forbidden(c, s, cred);
		goto done_sync;
	}
	if (!(s->transports & AD_TRANSPORT_BIT(b->transport))) {
		answer_error(c, AD_RPC_INVALID_REQUEST,
			     b->transport == AD_TRANSPORT_WS
				     ? "This method is served over HTTP only: POST /rpc"
				     : "This method is served over WebSocket only: GET /ws",
			     json_pack("{s:s}", "method", s->method));
		goto done_sync;
	}
	if ((flags & AD_DISPATCH_READ_ONLY) && s->risk != AD_RISK_READ) {
		answer_error(c, AD_RPC_INVALID_REQUEST,
			     "GET /rpc serves read actions only; use POST",
			     json_pack("{s:s}", "risk", ad_risk_name(s->risk)));
		if (!b->is_array)
			b->meta.http_status = 405;
		goto done_sync;
	}

	/* rate limit */
	if (s->nrates && !ad_rate_take(s, cred, b->ip, &retry_ms)) {
		answer_reason(c, AD_REASON_RATE_LIMITED, "Rate limit exceeded",
			      json_pack("{s:I}", "retry_after_ms", (json_int_t)retry_ms));
		if (!b->is_array)
			b->meta.retry_after_ms = retry_ms;
		goto done_sync;
	}
	if (ad_loop_draining) {
		answer_reason(c, AD_REASON_UNAVAILABLE, "The server is shutting down",
			      NULL);
		goto done_sync;
	}

	/* run */
	s->handler(c);
	if (!c->handler_done && !c->answered) {
		c->deadline_us = start + (int64_t)s->timeout_ms * 1000;
		ad_list_add_tail(&((struct ad_spec *)s)->inflight, &c->timeout_node);
		timeout_arm(c->deadline_us);
	}
	return;

done_sync:
	call_finish(c);
}

/*
 * Checks one request object; on a malformed one answers -32600 and returns
 * false.  The id is echoed whenever it is itself well-formed.
 */
static bool check_envelope(struct ad_call *c, json_t *req)
{
	const char *why = NULL;
	json_t *id, *v;

	if (!json_is_object(req)) {
		why = "a request must be an object";
		goto bad;
	}
	id = json_object_get(req, "id");
	if (id && !valid_id(id)) {
		why = "id must be a string, a number or null";
		goto bad;
	}
	/* A request with a well-formed id is answered with it, even if bad. */
	c->id = json_incref(id);
	v = json_object_get(req, "jsonrpc");
	if (!json_is_string(v) || strcmp(json_string_value(v), "2.0") != 0)
		why = "jsonrpc must be \"2.0\"";
	else if (!json_is_string(json_object_get(req, "method")))
		why = "method must be a string";
	else if ((v = json_object_get(req, "params")) && !json_is_object(v) &&
		 !json_is_array(v))
		why = "params must be an object or an array";
	if (!why)
		return true;
bad:
	/* An invalid request is answered even without an id (with null). */
	if (!c->id)
		c->id = json_null();
	answer_error(c, AD_RPC_INVALID_REQUEST, "Invalid Request",
		     json_pack("{s:s}", "detail", why));
	call_finish(c);
	return false;
}

static struct ad_batch *batch_new(struct ad_requester *r, uint32_t n, bool is_array)
{
	struct ad_batch *b = calloc(1, sizeof(*b) + n * sizeof(struct ad_call));

	if (!b)
		return NULL;
	b->req = r;
	b->cred = ad_cred_ref(r->cred);
	b->ncalls = n;
	b->pending = b->live = n + 1;
	b->is_array = is_array;
	b->meta.http_status = 200;
	memcpy(b->ip, r->ip, sizeof(b->ip));
	b->transport = r->ops->transport;
	ad_list_add_tail(&r->batches, &b->req_node);
	r->inflight += n;
	ad_dispatch_stats.calls_inflight += n;
	for (uint32_t i = 0; i < n; i++)
		b->calls[i].batch = b;
	return b;
}

/* Answers a message-level error (parse error, empty batch...) at once. */
static void answer_message_error(struct ad_requester *r, int code,
				 const char *message, json_t *data)
{
	struct ad_batch *b = batch_new(r, 1, false);

	if (!b) {
		json_decref(data);
		return;
	}
	b->calls[0].id = json_null();
	answer_error(&b->calls[0], code, message, data);
	call_finish(&b->calls[0]);
	batch_answered(b);
	batch_release(b);
}

/* Runs a parsed message; msg_len (its text size) counts in inflight_bytes. */
static void dispatch_doc(struct ad_requester *r, json_t *doc, unsigned flags,
			 size_t msg_len)
{
	struct ad_batch *b;
	size_t n = 1;

	if (json_is_array(doc)) {
		n = json_array_size(doc);
		if (n == 0) {
			answer_message_error(r, AD_RPC_INVALID_REQUEST, "Invalid Request",
					     json_pack("{s:s}", "detail",
						       "an empty batch is not a request"));
			goto out;
		}
		if (n > ad_cfg->max_batch) {
			answer_message_error(
				r, AD_RPC_INVALID_REQUEST, "Invalid Request",
				json_pack("{s:s,s:s,s:I}", "reason", "payload_too_large",
					  "detail", "batch too long", "max_batch",
					  (json_int_t)ad_cfg->max_batch));
			goto out;
		}
	}
	b = batch_new(r, (uint32_t)n, json_is_array(doc));
	if (!b)
		goto out;
	b->msg_len = msg_len;
	r->inflight_bytes += msg_len;
	for (size_t i = 0; i < n; i++) {
		struct ad_call *c = &b->calls[i];
		json_t *req = json_is_array(doc) ? json_array_get(doc, i) : doc;

		if (check_envelope(c, req))
			run_call(c, req, flags);
	}
	batch_answered(b);
	batch_release(b);
out:
	json_decref(doc);
}

void ad_dispatch_message(struct ad_requester *r, const char *data, size_t len,
			 unsigned flags)
{
	json_error_t jerr;
	json_t *doc;

	ad_dispatch_stats.messages++;
	if (ad_json_too_deep(data, len, ad_cfg->max_depth)) {
		answer_message_error(r, AD_RPC_INVALID_REQUEST, "Invalid Request",
				     json_pack("{s:s,s:s,s:I}", "reason",
					       "payload_too_large", "detail",
					       "JSON nested too deeply", "max_depth",
					       (json_int_t)ad_cfg->max_depth));
		return;
	}
	doc = ad_json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (!doc) {
		answer_message_error(r, AD_RPC_PARSE_ERROR, "Parse error",
				     json_pack("{s:s,s:i,s:i}", "detail", jerr.text,
					       "line", jerr.line, "column",
					       jerr.column));
		return;
	}
	dispatch_doc(r, doc, flags, len);
}

void ad_dispatch_object(struct ad_requester *r, json_t *doc, unsigned flags)
{
	dispatch_doc(r, doc, flags, 0);
}

/* ---- requesters and cancellation ---------------------------------------- */

void ad_requester_init(struct ad_requester *r, const struct ad_requester_ops *ops)
{
	memset(r, 0, sizeof(*r));
	r->ops = ops;
	ad_list_init(&r->batches);
}

void ad_requester_detach(struct ad_requester *r)
{
	struct ad_list *pos, *tmp;

	ad_list_foreach_safe(pos, tmp, &r->batches) {
		struct ad_batch *b = ad_container_of(pos, struct ad_batch, req_node);

		b->live++; /* keep b while its handlers react */
		ad_list_del(&b->req_node);
		b->req = NULL;
		r->inflight_bytes -= b->msg_len;
		for (uint32_t i = 0; i < b->ncalls; i++)
			call_cancel(&b->calls[i], AD_REASON_CANCELLED);
		batch_release(b);
	}
	r->inflight = 0;
	r->inflight_bytes = 0;
}

bool ad_dispatch_cancel(struct ad_requester *r, const json_t *id)
{
	struct ad_list *pos, *tmp;

	ad_list_foreach_safe(pos, tmp, &r->batches) {
		struct ad_batch *b = ad_container_of(pos, struct ad_batch, req_node);

		for (uint32_t i = 0; i < b->ncalls; i++) {
			struct ad_call *c = &b->calls[i];

			if (c->id && !c->answered && c->spec && json_equal(c->id, id)) {
				ad_dispatch_stats.cancels++;
				call_cancel(c, AD_REASON_CANCELLED);
				return true;
			}
		}
	}
	return false;
}

void ad_dispatch_cancel_all(enum ad_reason reason)
{
	for (size_t i = 0; i < ad_nspecs; i++) {
		struct ad_list *h = &ad_specs[i].inflight;

		while (!ad_list_empty(h))
			call_cancel(ad_container_of(ad_list_first(h), struct ad_call,
						    timeout_node),
				    reason);
	}
}

void ad_dispatch_init(void)
{
	empty_params = json_object();
	timeout_sul.cb = timeout_fire;
}

void ad_dispatch_shutdown(void)
{
	lws_sul_cancel(&timeout_sul);
	timeout_sul_at = 0;
}

void ad_dispatch_free(void)
{
	json_decref(empty_params);
	empty_params = NULL;
}

void ad_dispatch_metrics(struct ad_buf *b)
{
	const struct ad_dispatch_stats *d = &ad_dispatch_stats;

	ad_buf_metric(b, "actiond_rpc_messages_total", "counter",
		      "JSON-RPC messages received (a batch counts once).", d->messages);
	ad_buf_metric(b, "actiond_rpc_calls_total", "counter", "JSON-RPC calls run.",
		      d->calls);
	ad_buf_metric(b, "actiond_rpc_errors_total", "counter",
		      "JSON-RPC calls answered with an error.", d->errors);
	ad_buf_metric(b, "actiond_rpc_timeouts_total", "counter", "Calls that timed out.",
		      d->timeouts);
	ad_buf_metric(b, "actiond_rpc_cancels_total", "counter",
		      "Calls cancelled by their client.", d->cancels);
	ad_buf_metric(b, "actiond_rpc_calls_inflight", "gauge", "Calls not answered yet.",
		      d->calls_inflight);
	ad_buf_metric(b, "actiond_rate_limit_buckets", "gauge",
		      "Rate-limit buckets being tracked.", ad_rate_buckets());
	ad_buf_puts(b, "# HELP actiond_method_calls_total Answers per method "
		       "(unknown methods are not counted here).\n"
		       "# TYPE actiond_method_calls_total counter\n");
	for (size_t i = 0; i < ad_nspecs; i++)
		ad_buf_printf(b, "actiond_method_calls_total{method=\"%s\"} %llu\n",
			      ad_specs[i].method, (unsigned long long)ad_specs[i].stat_calls);
	ad_buf_puts(b, "# HELP actiond_method_errors_total Error answers per method.\n"
		       "# TYPE actiond_method_errors_total counter\n");
	for (size_t i = 0; i < ad_nspecs; i++)
		ad_buf_printf(b, "actiond_method_errors_total{method=\"%s\"} %llu\n",
			      ad_specs[i].method, (unsigned long long)ad_specs[i].stat_errors);
	ad_buf_puts(b, "# HELP actiond_undeclared_writes_total Writes the change capture saw "
		       "a method make to a table its spec's writes list leaves out.\n"
		       "# TYPE actiond_undeclared_writes_total counter\n");
	for (size_t i = 0; i < ad_nspecs; i++)
		if (ad_specs[i].stat_undeclared_writes)
			ad_buf_printf(b, "actiond_undeclared_writes_total{method=\"%s\"} %llu\n",
				      ad_specs[i].method,
				      (unsigned long long)ad_specs[i].stat_undeclared_writes);
	ad_buf_puts(b, "# HELP actiond_method_seconds From a call entering the dispatch "
		       "core to its answer.\n# TYPE actiond_method_seconds histogram\n");
	for (size_t i = 0; i < ad_nspecs; i++) {
		const struct ad_spec *sp = &ad_specs[i];
		uint64_t cum = 0;

		if (!sp->stat_calls)
			continue; /* keep the page short: only methods in use */
		for (int k = 0; k < AD_LATENCY_BUCKETS; k++) {
			cum += sp->stat_latency[k];
			ad_buf_printf(b, "actiond_method_seconds_bucket{method=\"%s\",le=\"%g\"} %llu\n",
				      sp->method, ad_latency_le[k], (unsigned long long)cum);
		}
		ad_buf_printf(b, "actiond_method_seconds_bucket{method=\"%s\",le=\"+Inf\"} %llu\n"
				 "actiond_method_seconds_sum{method=\"%s\"} %.6f\n"
				 "actiond_method_seconds_count{method=\"%s\"} %llu\n",
			      sp->method, (unsigned long long)sp->stat_calls, sp->method,
			      sp->stat_latency_sum, sp->method,
			      (unsigned long long)sp->stat_calls);
	}
	ad_buf_metric(b, "actiond_worker_queued", "gauge",
		      "Offloaded work items waiting for a worker thread.",
		      (uint64_t)ad_worker_queued());
}
