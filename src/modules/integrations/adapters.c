/*
 * adapters.c - integration adapters as data, and the one engine that turns
 * an action's request template and an invocation's params into an HTTP
 * request.
 *
 * An adapter (protocol/integrations/NAME.json) names the service, its base
 * URL, how the credential is sent (a header and a format around
 * "{secret}"), optionally what OAuth2 takes ("oauth": the token_url, and
 * the format of an access token in the header, "Bearer {secret}" by
 * default), and its actions: each with a risk, a params schema, an
 * optional timeout_ms and approval_timeout_ms, and either a REST template
 * (method, path, query, headers, body) or a GraphQL one (document,
 * variables) POSTed to graphql_path.
 *
 * Templates: in a path, "{name}" is replaced by the param, percent-encoded
 * (the param must be present); in query values, headers of the template and
 * JSON bodies or variables, a string that is exactly "{name}" stands for
 * the param's value, and is left out (with its key) when the param is
 * absent; an object all of whose members were left out is left out too.
 * Nothing else is interpolated, so a param can never add a header, a query
 * parameter or a path segment of its own.
 */
#include "integrations.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static const char *str(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static bool valid_name(const char *s)
{
	if (!s || !islower((unsigned char)*s) || strlen(s) > 63)
		return false;
	for (; *s; s++)
		if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '_')
			return false;
	return true;
}

static uint32_t ms_of(const json_t *o, const char *key, uint32_t dflt, uint32_t max)
{
	json_int_t v = json_integer_value(json_object_get(o, key));

	if (!json_is_integer(json_object_get(o, key)) || v <= 0)
		return dflt;
	return v > (json_int_t)max ? max : (uint32_t)v;
}

static int load_action(struct ig_adapter *a, struct ig_action *act, const char *name,
		       const json_t *d, uint32_t timeout, char *err, size_t errlen)
{
	const char *risk = str(d, "risk");
	char why[200];

	act->name = name;
	act->summary = str(d, "summary");
	act->params = json_object_get(d, "params");
	act->request = json_object_get(d, "request");
	act->graphql = json_object_get(d, "graphql");
	if (!valid_name(name) || !act->summary || !json_is_object(act->params))
		return fail(err, errlen, "action %s: needs a name, summary and params schema",
			    name);
	if (!risk || (strcmp(risk, "read") && strcmp(risk, "write") && strcmp(risk, "danger")))
		return fail(err, errlen, "action %s: risk must be read, write or danger", name);
	act->risk = !strcmp(risk, "read") ? IG_READ : !strcmp(risk, "write") ? IG_WRITE
									 : IG_DANGER;
	act->timeout_ms = ms_of(d, "timeout_ms", timeout, IG_TIMEOUT_MS);
	act->approval_ms = ms_of(d, "approval_timeout_ms", IG_APPROVAL_MS, 24 * 3600 * 1000);
	if (!!act->request == !!act->graphql)
		return fail(err, errlen, "action %s: needs exactly one of request and graphql",
			    name);
	if (act->request && (!str(act->request, "method") || !str(act->request, "path")))
		return fail(err, errlen, "action %s: a request needs a method and a path", name);
	if (act->graphql && (!str(act->graphql, "document") || !a->graphql_path))
		return fail(err, errlen,
			    "action %s: GraphQL needs a document and the adapter's graphql_path",
			    name);
	if (!(act->schema = ad_json_schema_new(act->params, why, sizeof(why))))
		return fail(err, errlen, "action %s: params schema: %s", name, why);
	return 0;
}

int ig_adapter_load(struct ig_adapter *a, const char *text, size_t len, char *err,
		    size_t errlen)
{
	json_error_t jerr;
	const json_t *auth, *acts, *d, *oauth;
	const char *name, *base;
	uint32_t timeout;
	size_t i = 0;

	memset(a, 0, sizeof(*a));
	if (!(a->doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr)))
		return fail(err, errlen, "not JSON: %s", jerr.text);
	a->name = str(a->doc, "integration");
	a->summary = str(a->doc, "summary");
	base = str(a->doc, "base_url");
	auth = json_object_get(a->doc, "auth");
	acts = json_object_get(a->doc, "actions");
	a->auth_header = str(auth, "header");
	a->auth_format = str(auth, "format");
	a->graphql_path = str(a->doc, "graphql_path");
	oauth = json_object_get(a->doc, "oauth");
	a->oauth_format = oauth && str(oauth, "format") ? str(oauth, "format") : "Bearer {secret}";
	if (!valid_name(a->name) || !a->summary || !base || !json_is_object(acts) ||
	    !json_object_size(acts) || json_object_size(acts) > 64)
		return fail(err, errlen, "needs integration, summary, base_url and 1-64 actions");
	if (!a->auth_header || !a->auth_format || !strstr(a->auth_format, "{secret}"))
		return fail(err, errlen, "auth needs a header and a format with {secret}");
	if (oauth && (!json_is_object(oauth) || !strstr(a->oauth_format, "{secret}") ||
		      (json_object_get(oauth, "token_url") && !str(oauth, "token_url"))))
		return fail(err, errlen, "oauth needs a token_url string and a format with {secret}");
	if ((oauth && str(oauth, "token_url") && !(a->token_url = strdup(str(oauth, "token_url")))) ||
	    !(a->base_url = strdup(base)) ||
	    !(a->actions = calloc(json_object_size(acts), sizeof(*a->actions))))
		return fail(err, errlen, "out of memory");
	timeout = ms_of(a->doc, "timeout_ms", IG_TIMEOUT_MS, IG_TIMEOUT_MS);
	json_object_foreach((json_t *)acts, name, d) {
		a->nactions = i + 1;
		if (load_action(a, &a->actions[i++], name, d, timeout, err, errlen))
			return -1;
	}
	return 0;
}

void ig_adapter_free(struct ig_adapter *a)
{
	for (size_t i = 0; i < a->nactions; i++)
		ad_json_schema_free(a->actions[i].schema);
	free(a->actions);
	free(a->base_url);
	free(a->token_url);
	json_decref(a->doc);
	memset(a, 0, sizeof(*a));
}

/* ---- templates ------------------------------------------------------------------ */

/* growable text */
struct text {
	char *s;
	size_t len, cap;
	bool oom;
};

static void put(struct text *t, const char *s, size_t n)
{
	if (t->oom)
		return;
	if (t->len + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 128;
		char *p;

		while (cap < t->len + n + 1)
			cap *= 2;
		if (!(p = realloc(t->s, cap))) {
			t->oom = true;
			return;
		}
		t->s = p;
		t->cap = cap;
	}
	memcpy(t->s + t->len, s, n);
	t->len += n;
	t->s[t->len] = '\0';
}

static void puts_(struct text *t, const char *s)
{
	put(t, s, strlen(s));
}

/* RFC 3986: everything but unreserved characters percent-encoded. */
static void put_encoded(struct text *t, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
			put(t, (const char *)&s[i], 1);
		} else {
			char e[3] = { '%', hex[c >> 4], hex[c & 15] };

			put(t, e, 3);
		}
	}
}

/* The param a template string stands for ("{name}"), or NULL. */
static const json_t *placeholder(const char *s, const json_t *params, bool *is_ph)
{
	size_t n = strlen(s);
	char name[64];

	*is_ph = n >= 3 && n - 2 < sizeof(name) && s[0] == '{' && s[n - 1] == '}';
	if (!*is_ph)
		return NULL;
	memcpy(name, s + 1, n - 2);
	name[n - 2] = '\0';
	return json_object_get(params, name);
}

/* A scalar param as text for a path or query (NULL for objects and arrays). */
static char *scalar_text(const json_t *v)
{
	char buf[64];

	if (json_is_string(v))
		return strndup(json_string_value(v), json_string_length(v));
	if (json_is_integer(v))
		snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
	else if (json_is_real(v))
		snprintf(buf, sizeof(buf), "%.17g", json_real_value(v));
	else if (json_is_boolean(v))
		snprintf(buf, sizeof(buf), "%s", json_is_true(v) ? "true" : "false");
	else
		return NULL;
	return strdup(buf);
}

/* The template with its placeholders filled (new reference), or NULL: left out. */
static json_t *fill(const json_t *tmpl, const json_t *params)
{
	bool is_ph;
	const json_t *v;

	if (json_is_string(tmpl)) {
		v = placeholder(json_string_value(tmpl), params, &is_ph);
		return is_ph ? json_incref((json_t *)v) : json_copy((json_t *)tmpl);
	}
	if (json_is_object(tmpl)) {
		json_t *o = json_object();
		const char *k;
		json_t *m, *f;

		json_object_foreach((json_t *)tmpl, k, m) {
			if ((f = fill(m, params)))
				json_object_set_new(o, k, f);
		}
		if (json_object_size(tmpl) && !json_object_size(o)) {
			json_decref(o);
			return NULL;
		}
		return o;
	}
	if (json_is_array(tmpl)) {
		json_t *a = json_array(), *m, *f;
		size_t i;

		json_array_foreach(tmpl, i, m) {
			if ((f = fill(m, params)))
				json_array_append_new(a, f);
		}
		return a;
	}
	return json_copy((json_t *)tmpl);
}

static int build_path(struct text *url, const char *path, const json_t *params, char *err,
		      size_t errlen)
{
	while (*path) {
		const char *open = strchr(path, '{'), *close;
		char name[64];
		char *v;

		if (!open) {
			puts_(url, path);
			break;
		}
		put(url, path, (size_t)(open - path));
		if (!(close = strchr(open, '}')) || (size_t)(close - open - 1) >= sizeof(name))
			return fail(err, errlen, "bad path template");
		memcpy(name, open + 1, (size_t)(close - open - 1));
		name[close - open - 1] = '\0';
		if (!(v = scalar_text(json_object_get(params, name))))
			return fail(err, errlen, "the path needs param %s", name);
		put_encoded(url, v, strlen(v));
		free(v);
		path = close + 1;
	}
	return 0;
}

static void build_query(struct text *url, const json_t *query, const json_t *params)
{
	const char *k;
	json_t *m;
	bool first = !strchr(url->s ? url->s : "", '?');

	json_object_foreach((json_t *)query, k, m) {
		bool is_ph;
		const json_t *v = json_is_string(m)
					  ? placeholder(json_string_value(m), params, &is_ph)
					  : NULL;
		char *text;

		if (!json_is_string(m))
			continue;
		if (!is_ph)
			v = m;
		if (!v || !(text = scalar_text(v)))
			continue;
		puts_(url, first ? "?" : "&");
		first = false;
		put_encoded(url, k, strlen(k));
		puts_(url, "=");
		put_encoded(url, text, strlen(text));
		free(text);
	}
}

static int add_header(struct ig_request *r, const char *name, const char *value)
{
	size_t n = strlen(name) + strlen(value) + 3;

	if (r->nheaders >= sizeof(r->headers) / sizeof(r->headers[0]) - 1 ||
	    strpbrk(name, "\r\n:") || strpbrk(value, "\r\n") ||
	    !(r->headers[r->nheaders] = malloc(n)))
		return -1;
	snprintf(r->headers[r->nheaders++], n, "%s: %s", name, value);
	return 0;
}

int ig_request_build(const struct ig_adapter *a, const struct ig_action *act,
		     const json_t *params, const char *auth_line, struct ig_request *r,
		     char *err, size_t errlen)
{
	struct text url = { 0 };
	json_t *body = NULL;
	const char *k;
	json_t *m;

	memset(r, 0, sizeof(*r));
	puts_(&url, a->base_url);
	if (act->request) {
		r->method = str(act->request, "method");
		if (build_path(&url, str(act->request, "path"), params, err, errlen))
			goto fail;
		build_query(&url, json_object_get(act->request, "query"), params);
		json_object_foreach(json_object_get(act->request, "headers"), k, m) {
			if (json_is_string(m) && add_header(r, k, json_string_value(m))) {
				fail(err, errlen, "bad header %s", k);
				goto fail;
			}
		}
		if (json_object_get(act->request, "body") &&
		    !(body = fill(json_object_get(act->request, "body"), params)))
			body = json_object();
	} else {
		json_t *vars = fill(json_object_get(act->graphql, "variables"), params);

		r->method = "POST";
		puts_(&url, a->graphql_path);
		body = json_pack("{s:s,s:o}", "query", str(act->graphql, "document"), "variables",
				 vars ? vars : json_object());
		if (add_header(r, "Content-Type", "application/json"))
			goto oom;
	}
	if (add_header(r, "Accept", "application/json"))
		goto oom;
	if (body) {
		if (!(r->body = json_dumps(body, JSON_COMPACT)))
			goto oom;
		r->body_len = strlen(r->body);
		json_decref(body);
		body = NULL;
	}
	/* The credential last, so nothing of the template can stand in for it. */
	if (auth_line && (r->nheaders >= sizeof(r->headers) / sizeof(r->headers[0]) - 1 ||
			  !(r->headers[r->nheaders++] = strdup(auth_line))))
		goto oom;
	if (url.oom)
		goto oom;
	r->url = url.s;
	return 0;
oom:
	fail(err, errlen, "out of memory");
fail:
	json_decref(body);
	free(url.s);
	ig_request_free(r);
	return -1;
}

void ig_request_free(struct ig_request *r)
{
	for (size_t i = 0; i < r->nheaders; i++) {
		/* The credential's line is wiped, not only freed. */
		memset(r->headers[i], 0, strlen(r->headers[i]));
		free(r->headers[i]);
	}
	free(r->url);
	free(r->body);
	memset(r, 0, sizeof(*r));
}
