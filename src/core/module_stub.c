/*
 * module_stub.c - TEMPORARY stand-in for the module registry.
 *
 * It checks what a module registers the way the registry will (specs
 * against the spec meta-schema, methods not taken, a handler per spec) so
 * that the plugin loader can be exercised, but it serves nothing: accepted
 * actions are dropped.  Deleted when the registry lands on the main branch.
 */
#include "module.h"
#include "log.h"
#include "schema.h"
#include "spec.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

extern const struct ad_embedded_file ad_protocol_files[];
extern const size_t ad_protocol_files_count;

struct ad_module {
	const struct ad_module_info *info;
	struct ad_schema *meta;
	json_t *methods; /* method -> true once it has a handler */
	char reason[256];
};

static int refuse(struct ad_module *m, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int refuse(struct ad_module *m, const char *fmt, ...)
{
	va_list ap;

	if (!m->reason[0]) {
		va_start(ap, fmt);
		vsnprintf(m->reason, sizeof(m->reason), fmt, ap);
		va_end(ap);
	}
	return -1;
}

int ad_module_refuse(struct ad_module *m, const char *reason)
{
	return refuse(m, "%s", reason ? reason : "refused by its init()");
}

const char *ad_module_name(const struct ad_module *m)
{
	return m->info->name;
}

int ad_module_add_spec(struct ad_module *m, const char *json, size_t len)
{
	struct ad_schema_error e;
	const char *method;
	json_t *doc;

	if (!json || !(doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL)))
		return refuse(m, "%s", "a spec is not valid JSON");
	if (!ad_schema_validate(m->meta, doc, &e)) {
		refuse(m, "invalid spec: at \"%s\": %s", e.pointer, e.message);
		json_decref(doc);
		return -1;
	}
	method = json_string_value(json_object_get(doc, "method"));
	if (ad_spec_find(method, strlen(method)) || json_object_get(m->methods, method)) {
		refuse(m, "method %s exists already", method);
		json_decref(doc);
		return -1;
	}
	json_object_set_new(m->methods, method, json_false());
	json_decref(doc);
	return 0;
}

int ad_module_handle(struct ad_module *m, const char *method, ad_handler_fn fn)
{
	if (!method || !fn)
		return refuse(m, "%s", "a handler without a method or function");
	json_object_set_new(m->methods, method, json_true());
	return 0;
}

int ad_module_add_action(struct ad_module *m, const char *json, size_t len,
			 ad_handler_fn fn)
{
	json_t *doc = json ? json_loadb(json, len, 0, NULL) : NULL;
	const char *method = json_string_value(json_object_get(doc, "method"));
	int r = ad_module_add_spec(m, json, len);

	if (!r)
		r = ad_module_handle(m, method, fn);
	json_decref(doc);
	return r;
}

int ad_module_add_migration(struct ad_module *m, uint32_t version, const char *name,
			    const char *sql)
{
	return version && sql ? 0 : refuse(m, "%s", "a migration without a version or SQL");
}

int ad_module_load(const struct ad_module_info *info, const char *origin, char *err,
		   size_t errlen)
{
	struct ad_module m = { .info = info };
	const char *method;
	json_t *meta = NULL, *v;
	int r = -1;

	for (size_t i = 0; i < ad_protocol_files_count; i++)
		if (!strcmp(ad_protocol_files[i].name, "spec.schema.json"))
			meta = json_loadb(ad_protocol_files[i].data, ad_protocol_files[i].len,
					  0, NULL);
	if (!meta || ad_schema_compile(meta, "actiond:/protocol/spec.schema.json", NULL,
				       NULL, &m.meta, NULL, 0)) {
		snprintf(err, errlen, "the spec meta-schema did not compile");
		json_decref(meta);
		return -1;
	}
	m.methods = json_object();
	if (!info->name || !info->init)
		refuse(&m, "%s", "the module has no name or no init()");
	else if (info->init(&m) && !m.reason[0])
		refuse(&m, "%s", "its init() failed");
	json_object_foreach(m.methods, method, v)
		if (!json_is_true(v))
			refuse(&m, "method %s has no handler", method);
	if (m.reason[0]) {
		snprintf(err, errlen, "%s", m.reason);
	} else {
		ad_log_warn("module %s from %s: the registry is a stub, its actions "
			    "are not served", info->name, origin);
		r = 0;
	}
	json_decref(m.methods);
	ad_schema_free(m.meta);
	json_decref(meta);
	return r;
}
