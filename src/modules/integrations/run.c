/*
 * run.c - an invocation executing: the stored params checked against their
 * hash, the org's credential opened and injected, one upstream request
 * (again once after a Retry-After that fits the action's time), and the
 * outcome recorded - redacted and truncated - with its event, published,
 * handed to waiters and to the call that started it.
 *
 * A run belongs to no call: it was started by one (a read invoke, an
 * approve) which gets the outcome if it is still there, but a caller that
 * goes away does not stop it, so an invocation never stays executing
 * because its caller left.  Its database work is background work scoped
 * to the invocation's org.
 *
 * The credential: opened only here, wiped when the run ends; it goes into
 * one header line and nowhere else, and its bytes are redacted from
 * whatever the upstream answers before anything is stored or shown.  An
 * OAuth2 credential is not sent itself: the run asks oauth.c for an access
 * token (stored, or refreshed), injects that, and after an upstream 401
 * asks once for a newer one and sends the request once more.
 */
#include "integrations.h"

#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct run {
	struct ad_timer retry;         /* first: recovered from the timer */
	struct ig_token_wait token;    /* OAuth2: waiting for an access token */
	struct ad_call *call;          /* NULL once answered or gone */
	struct ad_http *http;          /* the upstream request in flight, or NULL */
	bool caller_left;              /* a read's caller cancelled it */
	int64_t org_id;
	int64_t agent_session_id;
	char id[33];
	const struct ig_adapter *adapter;
	const struct ig_action *action;
	json_t *params;
	char *secret;                  /* the injected credential; wiped */
	size_t secret_len;
	char *auth_line;               /* its header line; wiped */
	uint64_t started_ms;
	bool retried;
	bool oauth;                    /* the credential is an OAuth2 client */
	bool reauthorised;             /* a 401 made it ask for a newer token */
	int64_t token_version;         /* of the access token injected */
	/* the outcome */
	bool ok;
	json_t *result;
	char *error;
	int upstream_status;
	uint32_t retry_after_ms;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void wipe_free(char *s, size_t len)
{
	if (s) {
		sodium_memzero(s, len);
		free(s);
	}
}

static void run_free(struct run *r)
{
	wipe_free(r->secret, r->secret_len);
	wipe_free(r->auth_line, r->auth_line ? strlen(r->auth_line) : 0);
	json_decref(r->params);
	json_decref(r->result);
	free(r->error);
	free(r);
}

/*
 * The call went away (cancelled, timed out).  A write's run goes on without
 * it (an approved write is not taken back by the approver leaving); a
 * read's upstream request is cancelled with it, and the invocation ends
 * failed.
 */
static void call_gone(struct ad_call *call, void *arg)
{
	struct run *r = arg;

	r->call = NULL;
	ad_call_fail(call, AD_REASON_CANCELLED, "cancelled", NULL);
	if (r->http && r->action && r->action->risk == IG_READ) {
		r->caller_left = true;
		ad_http_cancel(r->http); /* upstream_done runs, now or soon */
	}
}

static void answer(struct run *r, json_t *row)
{
	if (!r->call) {
		json_decref(row);
		return;
	}
	ad_call_on_cancel(r->call, NULL, NULL);
	if (row)
		ad_call_reply(r->call, row);
	else
		ad_call_fail(r->call, AD_REASON_UNAVAILABLE,
			     "The outcome could not be recorded; see invocations.get", NULL);
	r->call = NULL;
}

/* ---- recording the outcome ----------------------------------------------------------- */

static void recorded(void *arg, const struct ad_sql_result *res)
{
	struct run *r = arg;
	json_t *row = NULL;

	if (ad_sql_error(res, NULL)) {
		ad_log(AD_LOG_ERROR, "integrations: invocation %s: outcome not recorded: %s", r->id,
		       ad_sql_error_message(res));
	} else if (ad_sql_rows(res, 0) == 1) {
		row = ig_row_json(res, 0, 0, 0);
	} else if (ad_sql_rows(res, 1) == 1) {
		/* Someone else ended it meanwhile (an instance that took this
		 * process for gone): its state stands. */
		row = ig_row_json(res, 1, 0, 0);
	}
	if (row && ad_sql_rows(res, 0) == 1) {
		ig_publish(r->org_id, r->agent_session_id, "invocation_completed", row);
		ig_terminal(r->id, row);
	}
	ig_chain_soon();
	answer(r, row);
	run_free(r);
}

static void finish(struct run *r)
{
	struct ad_sql *q = ad_sql_new_background(0);
	char *result = NULL, status[8];
	struct ig_num org = ig_num(r->org_id);
	const char *p[6];

	snprintf(status, sizeof(status), "%d", r->upstream_status);
	if (r->result) {
		json_t *clean = ig_truncate(ig_redact(r->result, r->secret, r->secret_len),
					    IG_RESULT_MAX);

		result = clean ? json_dumps(clean, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		json_decref(clean);
	}
	if (!q || (r->result && !result)) {
		ad_sql_free(q);
		free(result);
		ad_log(AD_LOG_ERROR, "integrations: invocation %s: out of memory", r->id);
		answer(r, NULL);
		run_free(r);
		return;
	}
	ad_sql_in_org(q, r->org_id);
	p[0] = r->id;
	p[1] = r->ok ? "completed" : "failed";
	p[2] = result;
	p[3] = r->error;
	p[4] = r->upstream_status ? status : NULL;
	p[5] = org.v;
	ad_sql_add(q,
		   "WITH u AS (UPDATE invocations SET status = $2, result = $3::jsonb, error = $4, "
		   "upstream_status = $5::int, finished_at = now() WHERE id = $1 AND org_id = "
		   "$6::bigint AND status = 'executing' RETURNING *), "
		   "e AS (INSERT INTO invocation_events (org_id, invocation_id, event, actor, detail) "
		   "SELECT org_id, id, status, 'actiond', jsonb_strip_nulls(jsonb_build_object("
		   "'upstream_status', upstream_status, 'error', error)) FROM u) "
		   "SELECT " IG_COLS " FROM u",
		   6, p);
	ad_sql_add(q, "SELECT " IG_COLS " FROM invocations WHERE id = $1", 1, p);
	free(result);
	ad_sql_run_background(q, recorded, r);
}

static void failed(struct run *r, int upstream_status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void failed(struct run *r, int upstream_status, const char *fmt, ...)
{
	char buf[IG_ERROR_MAX + 1];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	r->ok = false;
	r->upstream_status = upstream_status;
	/* Whatever came from upstream went into buf: clean it once more. */
	r->error = ig_clean_text(buf, strlen(buf), IG_ERROR_MAX, r->secret, r->secret_len);
	finish(r);
}

/* ---- the upstream exchange ------------------------------------------------------------- */

static void send_request(struct run *r);
static void oauth_ask(struct run *r, bool force);
static int make_auth_line(struct run *r);

static void retry_fire(struct ad_timer *t)
{
	send_request((struct run *)(void *)t);
}

/* Retry-After in ms (delta-seconds only), or -1 when absent or a date. */
static int64_t retry_after(const struct ad_http_response *resp)
{
	const char *v = ad_http_header(resp, "retry-after");
	char *end;
	long long s;

	if (!v)
		return -1;
	s = strtoll(v, &end, 10);
	if (end == v || *end || s < 0)
		return -1;
	return s > 86400 * 365 ? (int64_t)86400 * 365 * 1000 : (int64_t)s * 1000;
}

/* An excerpt of what the upstream said, for the error text. */
static char *excerpt(struct run *r, const struct ad_http_response *resp)
{
	return ig_clean_text(resp->body ? resp->body : "", resp->body_len, 300, r->secret,
			     r->secret_len);
}

static void on_graphql(struct run *r, json_t *doc, int status)
{
	const json_t *errors = json_object_get(doc, "errors");

	if (json_is_array(errors) && json_array_size(errors)) {
		const char *msg = json_string_value(json_object_get(json_array_get(errors, 0),
								    "message"));

		failed(r, status, "upstream GraphQL error: %s", msg ? msg : "(no message)");
		json_decref(doc);
		return;
	}
	r->ok = true;
	r->upstream_status = status;
	r->result = json_incref(json_object_get(doc, "data"));
	if (!r->result)
		r->result = json_null();
	json_decref(doc);
	finish(r);
}

static void upstream_done(void *arg, const struct ad_http_response *resp)
{
	struct run *r = arg;
	uint64_t elapsed = now_ms() - r->started_ms;
	json_error_t jerr;
	json_t *doc;
	int64_t wait;

	r->http = NULL;
	switch (resp->error) {
	case AD_HTTP_OK:
		break;
	case AD_HTTP_TIMEOUT:
		failed(r, 0, "upstream did not answer within %u ms", r->action->timeout_ms);
		return;
	case AD_HTTP_TOO_LARGE:
		failed(r, resp->status, "upstream answer larger than %u bytes",
		       (unsigned)IG_MAX_RESPONSE);
		return;
	case AD_HTTP_CANCELLED:
		failed(r, 0, r->caller_left ? "cancelled by the caller"
					    : "upstream request cancelled (shutting down)");
		return;
	case AD_HTTP_RESOLVE:
	case AD_HTTP_CONNECT:
	case AD_HTTP_TLS:
	case AD_HTTP_FAILED:
	default:
		failed(r, 0, "upstream unreachable (%s)",
		       resp->error == AD_HTTP_RESOLVE   ? "name not resolved"
		       : resp->error == AD_HTTP_CONNECT ? "no connection"
		       : resp->error == AD_HTTP_TLS     ? "TLS failed"
							: "request failed");
		return;
	}
	if ((resp->status == 429 || resp->status == 503) && (wait = retry_after(resp)) >= 0) {
		/* Honoured, clamped to the action's timeout, once, if it fits. */
		if (wait > r->action->timeout_ms)
			wait = r->action->timeout_ms;
		if (!r->retried && elapsed + (uint64_t)wait + 100 < r->action->timeout_ms) {
			r->retried = true;
			ad_timer_start(&r->retry, (uint32_t)wait, retry_fire);
			return;
		}
		failed(r, resp->status, "upstream asked to retry after %lld ms",
		       (long long)wait);
		return;
	}
	if (resp->status == 401 && r->oauth && !r->reauthorised &&
	    elapsed + 100 < r->action->timeout_ms) {
		/* The access token was refused: a newer one, once. */
		r->reauthorised = true;
		oauth_ask(r, true);
		return;
	}
	if (resp->status < 200 || resp->status > 299) {
		char *ex = excerpt(r, resp);

		failed(r, resp->status, "upstream answered HTTP %d: %s", resp->status,
		       ex ? ex : "");
		free(ex);
		return;
	}
	if (!resp->body_len || resp->status == 204) {
		r->ok = true;
		r->upstream_status = resp->status;
		r->result = json_null();
		finish(r);
		return;
	}
	if (!(doc = json_loadb(resp->body, resp->body_len, JSON_DECODE_ANY, &jerr))) {
		failed(r, resp->status, "upstream answered invalid JSON (%s)",
		       jerr.text[0] ? "parse error" : "empty");
		return;
	}
	if (r->action->graphql) {
		on_graphql(r, doc, resp->status);
		return;
	}
	r->ok = true;
	r->upstream_status = resp->status;
	r->result = doc;
	finish(r);
}

static void send_request(struct run *r)
{
	struct ig_request req;
	struct ad_http_request h = { 0 };
	const char *headers[17];
	char err[160];
	uint64_t elapsed = now_ms() - r->started_ms;

	if (ig_request_build(r->adapter, r->action, r->params, r->auth_line, &req, err,
			     sizeof(err))) {
		failed(r, 0, "the request could not be built: %s", err);
		return;
	}
	for (size_t i = 0; i < req.nheaders; i++)
		headers[i] = req.headers[i];
	headers[req.nheaders] = NULL;
	h.method = req.method;
	h.url = req.url;
	h.headers = headers;
	h.body = req.body;
	h.body_len = req.body_len;
	h.timeout_ms = elapsed < r->action->timeout_ms
			       ? r->action->timeout_ms - (uint32_t)elapsed
			       : 1;
	h.max_response = IG_MAX_RESPONSE;
	/* Copied by the client: the request's strings are ours to wipe now.
	 * When it could not start, done has run (and r may be gone). */
	{
		struct ad_http *started = ad_http_fetch(&h, upstream_done, r);

		if (started)
			r->http = started;
	}
	ig_request_free(&req);
}

/* ---- OAuth2 ------------------------------------------------------------------------------ */

static void token_ready(struct ig_token_wait *w, const char *token, int64_t version,
			const char *error)
{
	struct run *r = (struct run *)(void *)((char *)w - offsetof(struct run, token));

	if (!token) {
		failed(r, 0, "%s", error ? error : "no access token");
		return;
	}
	wipe_free(r->secret, r->secret_len);
	wipe_free(r->auth_line, r->auth_line ? strlen(r->auth_line) : 0);
	r->auth_line = NULL;
	r->secret_len = strlen(token);
	r->token_version = version;
	if (!(r->secret = strdup(token)) || make_auth_line(r)) {
		r->secret_len = 0;
		failed(r, 0, "out of memory");
		return;
	}
	send_request(r);
}

/* An access token, then the request; force: newer than the one refused. */
static void oauth_ask(struct run *r, bool force)
{
	uint64_t elapsed = now_ms() - r->started_ms;

	ig_oauth_token(&r->token, r->org_id, r->adapter, r->id, force, r->token_version,
		       elapsed < r->action->timeout_ms
			       ? r->action->timeout_ms - (uint32_t)elapsed
			       : 1,
		       token_ready);
}

/* ---- starting ------------------------------------------------------------------------------ */

/*
 * The credential of a sealed secret: a string secret is used as it is; an
 * object's token, access_token or api_key member; an OAuth2 client only
 * marks the run (r->oauth), whose tokens come from oauth.c.  Returns 0 or
 * -1.
 */
static int open_secret(struct run *r, const char *sealed_hex)
{
	size_t hexlen = strlen(sealed_hex), blen;
	uint8_t *bin = malloc(hexlen / 2 + 1), *plain = NULL;
	int rc = -1;

	if (!bin || sodium_hex2bin(bin, hexlen / 2 + 1, sealed_hex, hexlen, NULL, &blen, NULL) ||
	    blen <= AD_SECRET_OVERHEAD || !(plain = malloc(blen - AD_SECRET_OVERHEAD + 1)) ||
	    ad_secret_open(bin, blen, plain))
		goto out;
	blen -= AD_SECRET_OVERHEAD;
	plain[blen] = '\0';
	if (plain[0] == '{') {
		json_t *o = json_loadb((const char *)plain, blen, 0, NULL);
		const char *t;

		if (ig_oauth_is(o)) {
			const char *k;
			json_t *m;

			r->oauth = true;
			json_object_foreach(o, k, m) {
				if (json_is_string(m))
					sodium_memzero((char *)json_string_value(m),
						       json_string_length(m));
			}
			json_decref(o);
			sodium_memzero(plain, blen);
			rc = 0;
			goto out;
		}
		t = json_string_value(json_object_get(o, "token"));
		if (!t)
			t = json_string_value(json_object_get(o, "access_token"));
		if (!t)
			t = json_string_value(json_object_get(o, "api_key"));
		if (t && (r->secret = strdup(t)))
			r->secret_len = strlen(t);
		if (t)
			sodium_memzero((char *)t, strlen(t));
		json_decref(o);
	} else if ((r->secret = malloc(blen + 1))) {
		memcpy(r->secret, plain, blen + 1);
		r->secret_len = blen;
	}
	rc = r->secret && r->secret_len && strlen(r->secret) == r->secret_len &&
			     !strpbrk(r->secret, "\r\n")
		     ? 0
		     : -1;
	sodium_memzero(plain, blen);
out:
	free(plain);
	free(bin);
	return rc;
}

/* The header line of the credential: the adapter's format around it. */
static int make_auth_line(struct run *r)
{
	const char *f = r->oauth ? r->adapter->oauth_format : r->adapter->auth_format;
	const char *at = strstr(f, "{secret}");
	size_t n = strlen(r->adapter->auth_header) + 2 + strlen(f) + r->secret_len + 1;

	if (!(r->auth_line = malloc(n)))
		return -1;
	snprintf(r->auth_line, n, "%s: %.*s%s%s", r->adapter->auth_header, (int)(at - f), f,
		 r->secret, at + strlen("{secret}"));
	return 0;
}

void ig_run_start(struct ad_call *call, int64_t org_id, int64_t agent_session_id,
		  const json_t *row, const char *params_text, const char *params_hash,
		  const char *sealed_hex)
{
	struct run *r = calloc(1, sizeof(*r));
	const char *id = json_string_value(json_object_get(row, "invocation_id"));
	char *canonical = NULL;
	char hash[65];

	if (!r) {
		ad_log(AD_LOG_ERROR, "integrations: out of memory starting a run");
		if (call)
			ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	r->call = call;
	r->org_id = org_id;
	r->agent_session_id = agent_session_id;
	snprintf(r->id, sizeof(r->id), "%s", id ? id : "");
	r->adapter = ig_adapter(json_string_value(json_object_get(row, "integration")));
	r->action = ig_action(r->adapter, json_string_value(json_object_get(row, "action")));
	r->started_ms = now_ms();
	if (call)
		ad_call_on_cancel(call, call_gone, r);
	if (!r->action) {
		failed(r, 0, "this integration action is no longer served");
		return;
	}
	/* The params that run are those stored, and those hashed when proposed. */
	r->params = json_loads(params_text ? params_text : "", 0, NULL);
	if (r->params && (canonical = ig_canonical(r->params)))
		ig_hash_hex(canonical, strlen(canonical), hash);
	free(canonical);
	if (!json_is_object(r->params) || !canonical || !params_hash ||
	    strcmp(hash, params_hash)) {
		failed(r, 0, "the stored params do not match their hash; not run");
		return;
	}
	if (!sealed_hex) {
		failed(r, 0, "no credential is set for %s (admin.credential_set)",
		       r->adapter->name);
		return;
	}
	if (open_secret(r, sealed_hex) || (!r->oauth && make_auth_line(r))) {
		failed(r, 0, "the credential for %s cannot be used", r->adapter->name);
		return;
	}
	if (r->oauth) {
		oauth_ask(r, false);
		return;
	}
	send_request(r);
}
