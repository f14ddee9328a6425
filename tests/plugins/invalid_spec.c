/*
 * invalid_spec.c - a plugin whose one action spec fails the spec
 * meta-schema: its risk is "maybe".
 */
#include <actiond/actiond.h>

#include <string.h>

static const char spec[] =
	"{\"method\": \"invalid_spec.ping\","
	" \"summary\": \"Answers pong, if it ever loads.\","
	" \"kind\": \"request_response\","
	" \"auth\": {\"credentials\": [\"api_key\"], \"roles\": [\"member\", \"admin\", \"owner\"]},"
	" \"risk\": \"maybe\","
	" \"side_effects\": false,"
	" \"rate_limit\": null,"
	" \"timeout_ms\": 1000,"
	" \"params\": {\"type\": \"object\", \"additionalProperties\": false},"
	" \"result\": {\"const\": \"pong\"},"
	" \"writes\": []}";

static void ping(struct ad_call *call)
{
	ad_call_reply(call, json_string("pong"));
}

static int init(struct ad_module *m)
{
	return ad_module_add_action(m, spec, strlen(spec), ping);
}

AD_MODULE_EXPORT("invalid_spec", "1.0", init, NULL);
