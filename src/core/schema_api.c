/*
 * schema_api.c - JSON Schema for modules (actiond/action.h): the core's
 * validator behind a handle a module can hold, and a check that answers
 * -32602 the way the dispatch core answers bad params.
 */
#include "actiond/action.h"
#include "schema.h"

#include <stdio.h>
#include <stdlib.h>

struct ad_json_schema {
	struct ad_schema *compiled;
};

struct ad_json_schema *ad_json_schema_new(const json_t *schema, char *err, size_t errlen)
{
	struct ad_json_schema *s;
	json_t *copy;

	if (!(s = calloc(1, sizeof(*s))) || !(copy = json_deep_copy(schema))) {
		free(s);
		if (errlen)
			snprintf(err, errlen, "out of memory");
		return NULL;
	}
	/* The compiled schema keeps its own reference to the copy. */
	if (ad_schema_compile(copy, NULL, NULL, NULL, &s->compiled, err, errlen)) {
		json_decref(copy);
		free(s);
		return NULL;
	}
	json_decref(copy);
	return s;
}

void ad_json_schema_free(struct ad_json_schema *s)
{
	if (!s)
		return;
	ad_schema_free(s->compiled);
	free(s);
}

bool ad_call_check_value(struct ad_call *call, const struct ad_json_schema *s,
			 const json_t *value, const char *prefix)
{
	struct ad_schema_error e;
	char pointer[512];

	if (ad_schema_validate(s->compiled, value, &e))
		return true;
	snprintf(pointer, sizeof(pointer), "%s%s", prefix ? prefix : "", e.pointer);
	ad_call_fail_params(call, pointer, e.keyword, e.message);
	return false;
}

bool ad_json_schema_valid(const struct ad_json_schema *s, const json_t *value)
{
	struct ad_schema_error e;

	return ad_schema_validate(s->compiled, value, &e);
}
