/*
 * fuzz_rpc.c - fuzz driver for everything a peer's message goes through
 * before a handler: depth pre-scan, JSON parsing, the JSON-RPC envelope,
 * batches, method lookup, params validation against the specs' schemas,
 * authorization, rate limits and the answer writers.
 *
 * Built two ways: with -Dfuzzing=true under clang it is a libFuzzer target;
 * otherwise its main() replays a corpus and then a fixed number of
 * deterministic mutations of it, which is what the test suite runs.
 *
 * Every answer must be valid JSON of the right shape, or the driver aborts.
 */
#include "builtin.h"
#include "module.h"
#include "openrpc.h"
#include "auth.h"
#include "dispatch.h"
#include "loop.h"
#include "server.h"
#include "spec.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct ad_cred cred = { .refs = 1, .kind = AD_CRED_API_KEY,
			       .role = AD_ROLE_ADMIN, .org = "fuzz", .id = "api_key:fuzz" };
static size_t answers;

static void check_response(const json_t *r)
{
	const json_t *id = json_object_get(r, "id");

	if (!json_is_object(r) || !json_is_string(json_object_get(r, "jsonrpc")) ||
	    !id || (!!json_object_get(r, "result") == !!json_object_get(r, "error")))
		abort();
	if (json_object_get(r, "error") &&
	    !json_is_integer(json_object_get(json_object_get(r, "error"), "code")))
		abort();
}

static void deliver(struct ad_requester *r, const char *json, size_t len,
		    const struct ad_answer_meta *meta)
{
	json_t *v;
	size_t i;
	json_t *e;

	(void)r;
	(void)meta;
	if (!len)
		return;
	v = json_loadb(json, len, JSON_ALLOW_NUL, NULL);
	if (!v)
		abort(); /* an answer that is not JSON */
	if (json_is_array(v)) {
		if (!json_array_size(v))
			abort(); /* an empty batch answer must not be sent */
		json_array_foreach(v, i, e)
			check_response(e);
	} else {
		check_response(v);
	}
	answers++;
	json_decref(v);
}

static const struct ad_requester_ops ops = { .deliver = deliver };

static void init(void)
{
	struct lws_context_creation_info info;
	char err[256];

	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	lws_set_log_level(LLL_ERR, NULL);
	ad_config_init(&ad_srv.cfg);
	ad_cfg = &ad_srv.cfg;
	ad_list_init(&ad_srv.ws_active);
	ad_list_init(&ad_srv.http);
	ad_list_init(&cred.conns);
	ad_srv.lws = lws_create_context(&info); /* for timers; never serviced */
	ad_loop = ad_srv.lws;
	if (!ad_srv.lws || ad_specs_init(err, sizeof(err)))
		goto fail;
	for (const struct ad_module_info *const *m = ad_builtin_modules; *m; m++)
		if (ad_module_load(*m, "built-in", err, sizeof(err)))
			goto fail;
	if (ad_specs_finalize(err, sizeof(err))) {
fail:
		fprintf(stderr, "fuzz init failed: %s\n", err);
		exit(1);
	}
	ad_dispatch_init();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	struct ad_requester r;

	if (!ready) {
		init();
		ready = true;
	}
	ad_requester_init(&r, &ops);
	r.cred = &cred;
	ad_dispatch_message(&r, (const char *)data, size, 0);
	ad_requester_detach(&r); /* cancels what went asynchronous */
	return 0;
}

#ifndef AD_LIBFUZZER
#define FUZZ_NAME "fuzz_rpc"

static const char *const fuzz_tokens[] = {
	"{", "}", "[", "]", "\"", ",", ":", "null", "1e999", "-0", "\\u0000",
	"\"id\":", "\"method\":", "\xff", "\\ud800",
};

/* Prints what the run did and releases what the driver holds. */
static void fuzz_report(void)
{
	printf("%zu answers, no failure\n", answers);
	ad_dispatch_shutdown();
	lws_context_destroy(ad_srv.lws);
	ad_dispatch_free();
	ad_specs_free();
	ad_openrpc_free();
	ad_config_free(&ad_srv.cfg);
}

#include "replay.h"
#endif
