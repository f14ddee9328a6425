/*
 * test_pubsub.c - test-only actions around actiond/publish.h, written
 * against the public module API alone (as a plugin would be):
 *
 *   test.publish {size, roles?, account?, agent_session?, topic?, tag?}
 *       publishes "test.published" {tag, pad} (pad: size bytes) to the
 *       caller's org; answers {recipients} on this instance.
 *   test.subscribe {topic}, test.unsubscribe {topic}
 *       for the caller's WebSocket.
 *   test.whoami
 *       the caller's internal ids, so tests can aim at an account or an
 *       agent session.
 */
#include "test_pubsub.h"
#include "actiond/actiond.h"

#include <stdlib.h>
#include <string.h>

static uint32_t role_bit(const char *name)
{
	static const struct {
		const char *name;
		uint32_t bit;
	} map[] = {
		{ "member", AD_AUDIENCE_MEMBER }, { "admin", AD_AUDIENCE_ADMIN },
		{ "owner", AD_AUDIENCE_OWNER },   { "agents", AD_AUDIENCE_AGENTS },
		{ "keys", AD_AUDIENCE_KEYS },
	};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (!strcmp(name, map[i].name))
			return map[i].bit;
	return 0;
}

void ad_test_publish(struct ad_call *call)
{
	const json_t *p = ad_call_params(call), *roles = json_object_get(p, "roles"), *r;
	struct ad_audience a = { .org_id = ad_call_org_id(call) };
	const char *tag;
	int64_t size = 0;
	size_t i, tl = 0;
	json_t *params;
	char *pad;
	int n;

	ad_param_int(call, "size", &size);
	ad_param_int(call, "account", &a.account_id);
	ad_param_int(call, "agent_session", &a.agent_session_id);
	a.topic = ad_param_str(call, "topic", &tl);
	if (a.topic && strlen(a.topic) != tl) {
		ad_call_fail_params(call, "/topic", "pattern", "A topic cannot hold U+0000");
		return;
	}
	json_array_foreach(roles, i, r)
		a.roles |= role_bit(json_string_value(r));
	tag = ad_param_str(call, "tag", &tl);
	if (!(pad = malloc((size_t)size + 1))) {
		ad_call_fail(call, AD_REASON_UNAVAILABLE, "out of memory", NULL);
		return;
	}
	memset(pad, 'p', (size_t)size);
	params = json_pack("{s:s,s:s#}", "tag", tag ? tag : "", "pad", pad, (int)size);
	free(pad);
	n = params ? ad_publish(&a, "test.published", params) : -1;
	json_decref(params);
	if (n < 0) {
		ad_call_fail(call, AD_REASON_PAYLOAD_TOO_LARGE,
			     "The publish was refused (too large, or no room)", NULL);
		return;
	}
	ad_call_reply(call, json_pack("{s:i}", "recipients", n));
}

static void subscription(struct ad_call *call, bool on)
{
	size_t tl = 0;
	const char *topic = ad_param_str(call, "topic", &tl);

	if (!topic || strlen(topic) != tl) {
		ad_call_fail_params(call, "/topic", "pattern", "A topic cannot hold U+0000");
		return;
	}
	if ((on ? ad_call_subscribe(call, topic) : ad_call_unsubscribe(call, topic)) < 0) {
		ad_call_fail(call, AD_REASON_DENIED,
			     "Only a WebSocket may subscribe, to at most 64 topics of at "
			     "most 128 bytes", NULL);
		return;
	}
	ad_call_reply(call, json_pack("{s:b}", "ok", 1));
}

void ad_test_subscribe(struct ad_call *call)
{
	subscription(call, true);
}

void ad_test_unsubscribe(struct ad_call *call)
{
	subscription(call, false);
}

void ad_test_whoami(struct ad_call *call)
{
	ad_call_reply(call, json_pack("{s:I,s:I,s:I,s:s}", "org_id",
				      (json_int_t)ad_call_org_id(call), "account_id",
				      (json_int_t)ad_call_account_id(call), "agent_session_id",
				      (json_int_t)ad_call_agent_session_id(call), "role",
				      ad_call_role(call)));
}
