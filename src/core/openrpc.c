/*
 * openrpc.c - generates the OpenRPC 1.2 document answered by rpc.discover
 * from the loaded specs.  Everything the specs say beyond OpenRPC (kind,
 * auth, risk, rate limit, timeout, side effects, writes) travels in an
 * "x-actiond" extension object on each method.
 */
#include "openrpc.h"
#include "spec.h"
#include "rpc.h"

#include <string.h>

static json_t *document;

static json_t *content_descriptors(json_t *params_schema)
{
	json_t *props = json_object_get(params_schema, "properties");
	json_t *required = json_object_get(params_schema, "required");
	json_t *out = json_array(), *v;
	const char *k;

	json_object_foreach(props, k, v) {
		bool req = false;
		size_t i;
		json_t *r;

		json_array_foreach(required, i, r)
			if (json_is_string(r) && !strcmp(json_string_value(r), k))
				req = true;
		json_array_append_new(out, json_pack("{s:s,s:b,s:O}", "name", k,
						     "required", req, "schema", v));
	}
	return out;
}

static json_t *method_object(const struct ad_spec *s)
{
	json_t *doc = s->doc, *m, *x, *rs;

	rs = s->kind == AD_KIND_NOTIFICATION
		     ? json_pack("{s:s}", "type", "null")
		     : json_incref(json_object_get(doc, "result"));
	m = json_pack("{s:s,s:s,s:o,s:{s:s,s:o}}", "name", s->method,
		      "paramStructure", s->positional ? "either" : "by-name", "params",
		      content_descriptors(json_object_get(doc, "params")), "result",
		      "name", "result", "schema", rs);
	if (json_object_get(doc, "summary"))
		json_object_set(m, "summary", json_object_get(doc, "summary"));
	if (json_object_get(doc, "description"))
		json_object_set(m, "description", json_object_get(doc, "description"));
	x = json_pack("{s:O,s:O,s:O,s:O,s:O,s:O}", "kind", json_object_get(doc, "kind"),
		      "auth", json_object_get(doc, "auth"), "risk",
		      json_object_get(doc, "risk"), "side_effects",
		      json_object_get(doc, "side_effects"), "timeout_ms",
		      json_object_get(doc, "timeout_ms"), "rate_limit",
		      json_object_get(doc, "rate_limit"));
	if (json_object_get(doc, "writes"))
		json_object_set(x, "writes", json_object_get(doc, "writes"));
	json_object_set_new(m, "x-actiond", x);
	return m;
}

static json_t *error_components(void)
{
	json_t *errs = json_object();

	for (int r = 1; r < AD_REASON__COUNT; r++)
		json_object_set_new(errs, ad_reason_name(r),
				    json_pack("{s:i,s:s,s:{s:s}}", "code",
					      ad_reason_code(r), "message",
					      ad_reason_name(r), "data", "reason",
					      ad_reason_name(r)));
	return errs;
}

json_t *ad_openrpc_document(void)
{
	json_t *methods;

	if (document)
		return document;
	methods = json_array();
	for (size_t i = 0; i < ad_nspecs; i++)
		json_array_append_new(methods, method_object(&ad_specs[i]));
	document = json_pack(
		"{s:s,s:{s:s,s:s,s:s},s:o,s:{s:o}}", "openrpc", "1.2.6", "info",
		"title", "actiond", "version", ACTIOND_VERSION, "description",
		"JSON-RPC 2.0 action gateway over WebSocket (/ws) and HTTP (/rpc).",
		"methods", methods, "components", "errors", error_components());
	return document;
}

void ad_openrpc_free(void)
{
	json_decref(document);
	document = NULL;
}

json_t *ad_openrpc(void)
{
	return json_incref(ad_openrpc_document());
}
