/*
 * duplicate_method.c - a plugin that claims "heartbeat", a method of the
 * built-in protocol module.  A valid spec of its own comes first, so the
 * refusal must also drop what was already registered.
 */
#include <actiond/actiond.h>

#include <string.h>

#define SPEC(method)                                                           \
	"{\"method\": \"" method "\","                                          \
	" \"summary\": \"Answers an empty object.\","                          \
	" \"kind\": \"request_response\","                                     \
	" \"auth\": {\"credentials\": [\"api_key\"], \"roles\": [\"member\", \"admin\", \"owner\"]}," \
	" \"risk\": \"read\","                                                 \
	" \"side_effects\": false,"                                            \
	" \"rate_limit\": null,"                                               \
	" \"timeout_ms\": 1000,"                                               \
	" \"params\": {\"type\": \"object\", \"additionalProperties\": false}," \
	" \"result\": {\"type\": \"object\"},"                                 \
	" \"writes\": []}"

static const char own[] = SPEC("duplicate_method.ok");
static const char stolen[] = SPEC("heartbeat");

static void empty(struct ad_call *call)
{
	ad_call_reply(call, json_object());
}

static int init(struct ad_module *m)
{
	if (ad_module_add_action(m, own, strlen(own), empty))
		return -1;
	return ad_module_add_action(m, stolen, strlen(stolen), empty);
}

AD_MODULE_EXPORT("duplicate_method", "1.0", init, NULL);
