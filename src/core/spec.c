/*
 * spec.c - the action registry: parsing and checking specs, and the sorted
 * table the dispatch core looks methods up in.
 */
#include "spec.h"
#include "actiond/module.h"
#include "config.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const struct ad_module_text ad_meta_files[];
extern const size_t ad_meta_files_count;

struct ad_spec *ad_specs;
size_t ad_nspecs;
static size_t specs_cap;
static bool finalized;
static struct ad_schema *meta;
static json_t *metadoc;

const double ad_latency_le[AD_LATENCY_BUCKETS] = {
	0.0001, 0.00025, 0.001, 0.0025, 0.01, 0.025, 0.1, 0.25, 1, 2.5, 10,
};

static const char *const cred_names[] = {
	[AD_CRED_API_KEY] = "api_key",
	[AD_CRED_SESSION] = "session",
	[AD_CRED_API_TOKEN] = "api_token",
	[AD_CRED_AGENT] = "agent_token",
};

const char *ad_cred_kind_name(enum ad_cred_kind k)
{
	return k >= AD_CRED_API_KEY && k <= AD_CRED_AGENT ? cred_names[k] : "none";
}

const char *ad_risk_name(enum ad_risk r)
{
	static const char *const names[] = { "read", "write", "danger" };

	return names[r];
}

static int name_index(const char *s, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		if (names[i] && !strcmp(s, names[i]))
			return i;
	return -1;
}

/* Fills the scalar fields of s from its (meta-schema-valid) document. */
static int spec_read(struct ad_spec *s, const char *file, char *err, size_t errlen)
{
	static const char *const risks[] = { "read", "write", "danger" };
	static const char *const scopes[] = { "credential", "account", "ip", "org" };
	json_t *doc = s->doc, *auth, *rl, *v;
	size_t i;

	s->method = json_string_value(json_object_get(doc, "method"));
	s->kind = !strcmp(json_string_value(json_object_get(doc, "kind")),
			  "notification") ? AD_KIND_NOTIFICATION : AD_KIND_REQUEST;
	s->risk = (enum ad_risk)name_index(
		json_string_value(json_object_get(doc, "risk")), risks, 3);
	s->side_effects = json_is_true(json_object_get(doc, "side_effects"));
	s->timeout_ms = (uint32_t)json_integer_value(json_object_get(doc, "timeout_ms"));
	s->positional = json_object_get(doc, "positional");
	s->tool = json_is_true(json_object_get(doc, "tool"));
	s->transports = 0;
	json_array_foreach(json_object_get(doc, "transports"), i, v)
		s->transports |= AD_TRANSPORT_BIT(!strcmp(json_string_value(v), "websocket")
							  ? AD_TRANSPORT_WS : AD_TRANSPORT_HTTP);
	if (!s->transports)
		s->transports = AD_TRANSPORT_BIT(AD_TRANSPORT_HTTP) |
				AD_TRANSPORT_BIT(AD_TRANSPORT_WS);

	auth = json_object_get(doc, "auth");
	json_array_foreach(json_object_get(auth, "credentials"), i, v) {
		const char *n = json_string_value(v);
		int k = name_index(n, cred_names, AD_CRED_AGENT + 1);

		if (!strcmp(n, "anonymous"))
			s->cred_mask |= AD_CRED_ANONYMOUS_BIT;
		else if (k > 0)
			s->cred_mask |= AD_CRED_BIT(k);
	}
	json_array_foreach(json_object_get(auth, "roles"), i, v) {
		int r = ad_role_parse(json_string_value(v));

		if (r > 0)
			s->role_mask |= AD_ROLE_BIT(r);
	}
	/* One rule or an array of them; every rule must allow a call. */
	rl = json_object_get(doc, "rate_limit");
	if (json_is_object(rl) || json_is_array(rl)) {
		json_t *arr = json_is_array(rl) ? rl : NULL;
		size_t nr = arr ? json_array_size(arr) : 1;

		for (i = 0; i < nr && i < AD_MAX_RATE_RULES; i++) {
			json_t *r = arr ? json_array_get(arr, i) : rl;
			struct ad_rate_rule *rule = &s->rates[s->nrates++];

			rule->limit = (uint32_t)json_integer_value(json_object_get(r, "limit"));
			rule->window_ms =
				(uint32_t)json_integer_value(json_object_get(r, "window_ms"));
			rule->scope = (enum ad_rate_scope)name_index(
				json_string_value(json_object_get(r, "per")), scopes, 4);
		}
	}
	if (!s->cred_mask) {
		snprintf(err, errlen, "%s: auth.credentials is empty", file);
		return -1;
	}
	return 0;
}

static int compile_schema(json_t *doc, const char *key, const char *file,
			  struct ad_schema **ret, char *err, size_t errlen)
{
	char why[256], uri[256];

	snprintf(uri, sizeof(uri), "actiond:/protocol/%s#/%s", file, key);
	if (ad_schema_compile(json_object_get(doc, key), uri, NULL, NULL, ret,
			      why, sizeof(why))) {
		snprintf(err, errlen, "%s: %s schema: %s", file, key, why);
		return -1;
	}
	return 0;
}

static int cmp_spec(const void *a, const void *b)
{
	return strcmp(((const struct ad_spec *)a)->method,
		      ((const struct ad_spec *)b)->method);
}

int ad_specs_init(char *err, size_t errlen)
{
	json_error_t jerr;

	if (meta)
		return 0;
	if (ad_meta_files_count < 1) {
		snprintf(err, errlen, "spec.schema.json is not compiled in");
		return -1;
	}
	metadoc = json_loadb(ad_meta_files[0].data, ad_meta_files[0].len,
			     JSON_REJECT_DUPLICATES, &jerr);
	if (!metadoc) {
		snprintf(err, errlen, "spec.schema.json:%d: %s", jerr.line, jerr.text);
		return -1;
	}
	if (ad_schema_compile(metadoc, "actiond:/protocol/spec.schema.json", NULL, NULL,
			      &meta, err, errlen)) {
		metadoc = (json_decref(metadoc), NULL);
		return -1;
	}
	return 0;
}

int ad_spec_parse(const char *json, size_t len, const char *origin,
		  struct ad_spec *s, char *err, size_t errlen)
{
	struct ad_schema_error verr;
	json_error_t jerr;

	memset(s, 0, sizeof(*s));
	if (!meta && ad_specs_init(err, errlen))
		return -1;
	if (!(s->doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr))) {
		snprintf(err, errlen, "%s:%d: %s", origin, jerr.line, jerr.text);
		return -1;
	}
	if (!ad_schema_validate(meta, s->doc, &verr)) {
		snprintf(err, errlen, "%s: at \"%s\": %s (%s)", origin, verr.pointer,
			 verr.message, verr.keyword);
		goto fail;
	}
	if (spec_read(s, origin, err, errlen) ||
	    compile_schema(s->doc, "params", origin, &s->params_schema, err, errlen) ||
	    compile_schema(s->doc, "result", origin, &s->result_schema, err, errlen))
		goto fail;
	ad_list_init(&s->inflight);
	return 0;
fail:
	ad_spec_clear(s);
	return -1;
}

void ad_spec_clear(struct ad_spec *s)
{
	ad_schema_free(s->params_schema);
	ad_schema_free(s->result_schema);
	json_decref(s->doc);
	memset(s, 0, sizeof(*s));
}

bool ad_specs_taken(const char *method)
{
	for (size_t i = 0; i < ad_nspecs; i++)
		if (!strcmp(ad_specs[i].method, method))
			return true;
	return false;
}

int ad_specs_add(struct ad_spec *specs, size_t n)
{
	if (finalized)
		return -1;
	if (!n)
		return 0;
	if (ad_nspecs + n > specs_cap) {
		size_t cap = specs_cap ? specs_cap : 32;
		struct ad_spec *t;

		while (cap < ad_nspecs + n)
			cap *= 2;
		if (!(t = realloc(ad_specs, cap * sizeof(*t))))
			return -1;
		ad_specs = t;
		specs_cap = cap;
	}
	memcpy(ad_specs + ad_nspecs, specs, n * sizeof(*specs));
	ad_nspecs += n;
	return 0;
}

int ad_specs_finalize(char *err, size_t errlen)
{
	qsort(ad_specs, ad_nspecs, sizeof(*ad_specs), cmp_spec);
	for (size_t i = 0; i < ad_nspecs; i++) {
		ad_specs[i].index = (uint32_t)i;
		ad_list_init(&ad_specs[i].inflight); /* the array moved the heads */
		if (i && !strcmp(ad_specs[i].method, ad_specs[i - 1].method)) {
			snprintf(err, errlen, "method %s is declared twice",
				 ad_specs[i].method);
			return -1;
		}
	}
	finalized = true;
	return 0;
}

void ad_specs_free(void)
{
	for (size_t i = 0; i < ad_nspecs; i++)
		ad_spec_clear(&ad_specs[i]);
	free(ad_specs);
	ad_specs = NULL;
	ad_nspecs = specs_cap = 0;
	finalized = false;
	ad_schema_free(meta);
	meta = NULL;
	metadoc = (json_decref(metadoc), NULL);
}

struct ad_spec *ad_spec_find(const char *method, size_t n)
{
	size_t lo = 0, hi = ad_nspecs;

	if (memchr(method, '\0', n))
		return NULL;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const char *m = ad_specs[mid].method;
		int c = strncmp(m, method, n);

		if (c == 0 && m[n] != '\0')
			c = 1; /* m is longer than the key */
		if (c == 0)
			return &ad_specs[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

int ad_specs_override_rates(const struct ad_config *cfg, char *err, size_t errlen)
{
	for (size_t i = 0; i < cfg->n_rate_overrides; i++) {
		const struct ad_rate_override *o = &cfg->rate_overrides[i];
		struct ad_spec *s = ad_spec_find(o->method, strlen(o->method));

		if (!s) {
			snprintf(err, errlen, "[rate_limits] %s: no such method", o->method);
			return -1;
		}
		/* The override replaces the spec's rules with one of its own
		 * window, keeping the first rule's scope. */
		s->nrates = o->limit ? 1 : 0;
		s->rates[0].limit = o->limit;
		s->rates[0].window_ms = o->window_ms;
	}
	return 0;
}
