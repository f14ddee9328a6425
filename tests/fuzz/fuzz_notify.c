/*
 * fuzz_notify.c - fuzz driver for what actiond reads from the other
 * instances sharing its database: the payloads of NOTIFY on the channel
 * "actiond" (src/identity/cluster.c), whose ops are revoke, cred, ack and
 * publish (the last handed to src/transport/pubsub.c).
 *
 * An input is one payload.  Each is read by ad_cluster_parse(), then handed
 * to ad_cluster_notify() as the listener would, on a server without a
 * database (statements fail at once, as with the database down) and
 * without connections, whose credential cache holds a fixed set of
 * credentials.  An empty input stands for the listener's reconnection.
 * Built like fuzz_rpc.c: a libFuzzer target with -Dfuzzing=true, otherwise
 * a corpus replay plus deterministic mutations, run by the test suite.
 *
 * The driver aborts when the reading disagrees with the payload, when a
 * revocation leaves in the cache a credential its scope covers or takes
 * one it does not, when anything but a revocation changes the cache, or
 * when a publish is neither received nor counted as dropped (or anything
 * else counts as one).
 *
 * In tests/fuzz/corpus_notify/, revoke_sent_time_overflow.json reproduces
 * a signed overflow (UBSan) in mapping a send time onto the monotonic
 * clock, and revoke_kind_out_of_range.json a kind that wrapped round to a
 * known one; both are fixed.
 */
#include "auth.h"
#include "buf.h"
#include "cluster.h"
#include "log.h"
#include "loop.h"
#include "pubsub.h"
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The cache: credentials of two orgs, of every database kind. */
static const struct {
	enum ad_cred_kind kind;
	int64_t db_id, org_id, account_id, agent_session_id;
} creds[] = {
	{ AD_CRED_SESSION, 1, 1, 10, 0 },   { AD_CRED_SESSION, 2, 1, 11, 0 },
	{ AD_CRED_API_TOKEN, 3, 1, 10, 0 }, { AD_CRED_API_TOKEN, 4, 2, 20, 0 },
	{ AD_CRED_AGENT, 5, 1, 0, 7 },      { AD_CRED_AGENT, 6, 2, 0, 8 },
	{ AD_CRED_SESSION, 7, 2, 20, 0 },   { AD_CRED_AGENT, 8, 1, 0, 7 },
};
#define NCREDS (sizeof(creds) / sizeof(*creds))

static struct ad_cred *cache[NCREDS];
static size_t counts[AD_CLUSTER_FOREIGN + 1];

static void init(void)
{
	struct lws_context_creation_info info;

	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	lws_set_log_level(LLL_ERR, NULL);
	ad_log_level = AD_LOG_ERROR; /* failed fetches are logged as warnings */
	ad_config_init(&ad_srv.cfg);
	ad_cfg = &ad_srv.cfg;
	ad_list_init(&ad_srv.ws_active);
	ad_list_init(&ad_srv.http);
	ad_srv.lws = lws_create_context(&info); /* for timers; never serviced */
	ad_loop = ad_srv.lws;
	if (!ad_srv.lws) {
		fprintf(stderr, "fuzz init failed: no lws context\n");
		exit(1);
	}
	/* As with a database: publishes that name a row go to fetch it. */
	ad_pubsub_init(true);
}

static void cache_fill(void)
{
	if (ad_auth_init(&ad_srv.cfg))
		abort();
	for (size_t i = 0; i < NCREDS; i++) {
		uint8_t hash[32] = { (uint8_t)(i + 1) };

		cache[i] = ad_cred_new_db(creds[i].kind, creds[i].db_id, creds[i].org_id,
					  "fuzz", creds[i].account_id, AD_ROLE_MEMBER,
					  creds[i].agent_session_id, 0, hash);
		if (!cache[i] || ad_auth_cache_add(cache[i]))
			abort();
	}
	if (ad_auth_cache_size() != NCREDS)
		abort();
}

static void cache_drop(void)
{
	ad_auth_free();
	for (size_t i = 0; i < NCREDS; i++)
		ad_cred_unref(cache[i]);
}

/* What a revocation scope covers, as README.md and auth.h describe it. */
static bool covers(const struct ad_revoke_scope *s, const struct ad_cred *c)
{
	return s->org_id && c->org_id == s->org_id && c->db_id != s->except_cred_id &&
	       (!s->kind || c->kind == s->kind) && (!s->cred_id || c->db_id == s->cred_id) &&
	       (!s->account_id || c->account_id == s->account_id) &&
	       (!s->agent_session_id || c->agent_session_id == s->agent_session_id);
}

static long long int_of(const json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

/* Compares the reading with the payload itself. */
static void check_parse(const struct ad_cluster_msg *m)
{
	const char *op = json_string_value(json_object_get(m->msg, "op"));
	const char *from = json_string_value(json_object_get(m->msg, "from"));
	const json_t *sc = json_object_get(m->msg, "scope");
	long long kind = int_of(sc, "kind");

	if (m->from != from)
		abort();
	switch (m->op) {
	case AD_CLUSTER_IGNORE:
		/* Ignored: not JSON, no op, ours (this instance's id is ""), an ack
		 * without req and from, or an op nobody takes. */
		if (op && from && *from && (!strcmp(op, "revoke") || !strcmp(op, "cred") ||
					    !strcmp(op, "publish")))
			abort();
		if (op && !strcmp(op, "ack") && from &&
		    json_is_string(json_object_get(m->msg, "req")))
			abort();
		break;
	case AD_CLUSTER_REVOKE:
		if (!op || strcmp(op, "revoke") || !from || !*from || !m->reason ||
		    m->sent_us != int_of(m->msg, "t") ||
		    m->req_json != json_object_get(m->msg, "req"))
			abort();
		if (m->scope.cred_id != int_of(sc, "cred") ||
		    m->scope.account_id != int_of(sc, "account") ||
		    m->scope.agent_session_id != int_of(sc, "agent") ||
		    m->scope.except_cred_id != int_of(sc, "except"))
			abort();
		if (kind >= 0 && kind <= AD_CRED_AGENT ?
			    (m->scope.kind != kind || m->scope.org_id != int_of(sc, "org")) :
			    m->scope.org_id != 0)
			abort();
		break;
	case AD_CLUSTER_CRED:
		if (!op || strcmp(op, "cred") || !from || !*from || m->cred_id != int_of(m->msg, "id"))
			abort();
		break;
	case AD_CLUSTER_ACK:
		if (!op || strcmp(op, "ack") || !from || !m->req ||
		    m->req != json_string_value(json_object_get(m->msg, "req")))
			abort();
		break;
	case AD_CLUSTER_FOREIGN:
		if (!op || strcmp(op, "publish") || !from || !*from)
			abort();
		break;
	default:
		abort();
	}
}

/* The publish counters of /metrics that a received publish moves. */
static unsigned long long publishes_seen(void)
{
	static const char *const names[] = {
		"actiond_publish_received_total{via=\"notify\"} ",
		"actiond_publish_received_total{via=\"table\"} ",
		"actiond_publish_dropped_total{stage=\"receive\"} ",
	};
	struct ad_buf b = AD_BUF_INIT;
	unsigned long long sum = 0;

	ad_pubsub_metrics(&b);
	ad_buf_putc(&b, '\0');
	if (b.oom)
		abort();
	for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++) {
		const char *p = strstr(b.data, names[i]);

		if (!p)
			abort();
		sum += strtoull(p + strlen(names[i]), NULL, 10);
	}
	ad_buf_free(&b);
	return sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	struct ad_cluster_msg m;
	unsigned long long seen;
	char *payload;
	enum ad_cluster_op op;

	if (!ready) {
		init();
		ready = true;
	}
	cache_fill();
	if (size == 0) {
		ad_cluster_notify(NULL);
		if (ad_auth_cache_size() != NCREDS)
			abort();
		cache_drop();
		return 0;
	}
	/* NOTIFY payloads are text: they end at a NUL. */
	if (!(payload = malloc(size + 1)))
		abort();
	memcpy(payload, data, size);
	payload[size] = '\0';
	op = ad_cluster_parse(payload, &m);
	check_parse(&m);
	counts[op]++;
	seen = publishes_seen();
	ad_cluster_notify(payload);
	/* A publish is received, dropped, or received and then found broken. */
	seen = publishes_seen() - seen;
	if (op == AD_CLUSTER_FOREIGN ? seen < 1 || seen > 2 : seen != 0)
		abort();
	for (size_t i = 0; i < NCREDS; i++) {
		bool gone = op == AD_CLUSTER_REVOKE && covers(&m.scope, cache[i]);

		if (cache[i]->cached == gone || cache[i]->revoked != gone)
			abort();
	}
	ad_cluster_msg_free(&m);
	free(payload);
	cache_drop();
	return 0;
}

#ifndef AD_LIBFUZZER
#define FUZZ_NAME "fuzz_notify"

static const char *const fuzz_tokens[] = {
	"{", "}", "[", "]", "\"", ",", ":", "null", "true", "0", "-1", "1e3",
	"9223372036854775807", "-9223372036854775808", "18446744073709551616",
	"\\u0000", "\\ud800", "\"op\":", "\"from\":", "\"req\":", "\"scope\":",
	"\"kind\":", "\"org\":", "\"cred\":", "\"account\":", "\"agent\":",
	"\"except\":", "\"t\":", "\"id\":", "\"ref\":", "\"msg\":", "\"topic\":",
	"\"roles\":", "\"revoke\"", "\"cred\"", "\"ack\"", "\"publish\"", "\"\"",
	"\"b7e2\"",
};

static void fuzz_report(void)
{
	printf("%zu revocations, %zu credential loads, %zu acknowledgements, "
	       "%zu publishes, %zu ignored, no failure\n",
	       counts[AD_CLUSTER_REVOKE], counts[AD_CLUSTER_CRED], counts[AD_CLUSTER_ACK],
	       counts[AD_CLUSTER_FOREIGN], counts[AD_CLUSTER_IGNORE]);
	ad_pubsub_shutdown();
	ad_pubsub_free();
	lws_context_destroy(ad_srv.lws);
	ad_config_free(&ad_srv.cfg);
}

#include "replay.h"
#endif
