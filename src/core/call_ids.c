/*
 * call_ids.c - the accessors of actiond/action.h that dispatch.c does not
 * define yet (the caller's internal ids, reading validated params), built
 * on ad_call_cred() and ad_call_params().
 *
 * They are weak: the moment dispatch.c defines any of them, its definition
 * wins at link time and the one here is dropped, so this file can go then.
 */
#include "actiond/action.h"
#include "auth.h"
#include "dispatch.h"

#include <math.h>
#include <string.h>

#define WEAK __attribute__((weak))

WEAK int64_t ad_call_org_id(const struct ad_call *call)
{
	const struct ad_cred *c = ad_call_cred(call);

	return c ? c->org_id : 0;
}

WEAK int64_t ad_call_account_id(const struct ad_call *call)
{
	const struct ad_cred *c = ad_call_cred(call);

	return c ? c->account_id : 0;
}

WEAK int64_t ad_call_agent_session_id(const struct ad_call *call)
{
	const struct ad_cred *c = ad_call_cred(call);

	return c && c->kind == AD_CRED_AGENT ? c->agent_session_id : 0;
}

WEAK bool ad_json_int(const json_t *v, int64_t *ret)
{
	double d;

	if (json_is_integer(v)) {
		*ret = json_integer_value(v);
		return true;
	}
	if (!json_is_real(v))
		return false;
	d = json_real_value(v);
	/* 2^63 itself is out of range; every double below it converts. */
	if (d != floor(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0)
		return false;
	*ret = (int64_t)d;
	return true;
}

WEAK bool ad_param_int(const struct ad_call *call, const char *key, int64_t *ret)
{
	return ad_json_int(json_object_get(ad_call_params(call), key), ret);
}

WEAK const char *ad_param_str(const struct ad_call *call, const char *key,
			      size_t *ret_len)
{
	const json_t *v = json_object_get(ad_call_params(call), key);

	if (!json_is_string(v))
		return NULL;
	if (ret_len)
		*ret_len = json_string_length(v);
	return json_string_value(v);
}
