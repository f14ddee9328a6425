/*
 * spec.h - the action registry: every module's specs joined to their
 * handlers.
 *
 * Specs are JSON documents (one per action), checked against
 * protocol/spec.schema.json, their schemas compiled once.  Modules add them
 * while they load (src/core/module.c); once every module is in, the
 * registry is sorted and frozen (ad_specs_finalize) and never changes
 * while the loop runs, so a spec pointer stays valid for the process.
 */
#ifndef AD_SPEC_H
#define AD_SPEC_H

#include "actiond/action.h"
#include "list.h"
#include "schema.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

enum ad_risk { AD_RISK_READ = 0, AD_RISK_WRITE, AD_RISK_DANGER };
enum ad_kind { AD_KIND_REQUEST = 0, AD_KIND_NOTIFICATION };
enum ad_rate_scope { AD_RATE_CREDENTIAL = 0, AD_RATE_ACCOUNT, AD_RATE_IP, AD_RATE_ORG };

/* Upper bounds (seconds) of the per-method latency histogram. */
#define AD_LATENCY_BUCKETS 11
extern const double ad_latency_le[AD_LATENCY_BUCKETS];

/* Rate limits an action may combine (e.g. per IP and per account). */
#define AD_MAX_RATE_RULES 4

/* Transports of ad_spec.transports and ad_requester_ops.transport. */
enum ad_transport { AD_TRANSPORT_HTTP = 0, AD_TRANSPORT_WS };
#define AD_TRANSPORT_BIT(t) (1u << (t))

/* Bit for a caller without credentials in ad_spec.cred_mask. */
#define AD_CRED_ANONYMOUS_BIT 1u
#define AD_CRED_BIT(kind) (1u << (kind))
#define AD_ROLE_BIT(role) (1u << (role))

struct ad_spec {
	const char *method;      /* points into doc */
	enum ad_kind kind;
	enum ad_risk risk;
	uint32_t cred_mask;      /* AD_CRED_BIT()s that may call it */
	uint32_t role_mask;      /* AD_ROLE_BIT()s for role-bearing credentials */
	bool side_effects;
	uint8_t transports;      /* AD_TRANSPORT_BIT()s it may be called over */
	bool tool;               /* offered as an MCP tool ("tool": true) */
	struct ad_rate_rule {
		uint32_t limit;      /* calls per window_ms */
		uint32_t window_ms;
		enum ad_rate_scope scope;
	} rates[AD_MAX_RATE_RULES]; /* all must allow a call */
	uint8_t nrates;
	uint32_t timeout_ms;
	uint32_t index;          /* position in the registry, for rate tables */
	struct ad_schema *params_schema;
	struct ad_schema *result_schema;
	json_t *doc;             /* the spec as loaded, for rpc.discover */
	json_t *positional;      /* names for by-position params, or NULL */
	ad_handler_fn handler;
	struct ad_list inflight; /* asynchronous calls, oldest deadline first */

	/* Per-method counters for /metrics: answers, errors, and a latency
	 * histogram (AD_LATENCY_BUCKETS, counts per bucket, not cumulative). */
	uint64_t stat_calls;
	uint64_t stat_errors;
	uint64_t stat_undeclared_writes;
	uint64_t stat_latency[AD_LATENCY_BUCKETS + 1];
	double stat_latency_sum;
};

/* Compiles the spec meta-schema (embedded from protocol/); 0 or -1. */
int ad_specs_init(char *err, size_t errlen);

/*
 * Parses one spec (len bytes of JSON), checks it against the meta-schema
 * and compiles its schemas into *s (zeroed first).  origin names it in
 * errors.  Returns 0, or -1 with the reason in err (s is then cleared).
 */
int ad_spec_parse(const char *json, size_t len, const char *origin,
		  struct ad_spec *s, char *err, size_t errlen);
/* Frees what ad_spec_parse() made; accepts a zeroed spec. */
void ad_spec_clear(struct ad_spec *s);

/* True if a method is in the registry already (before or after finalize). */
bool ad_specs_taken(const char *method);
/* Moves n parsed, handler-bound specs into the registry; 0 or -1 (memory). */
int ad_specs_add(struct ad_spec *specs, size_t n);
/* Sorts the registry and makes it live; 0, or -1 with a reason. */
int ad_specs_finalize(char *err, size_t errlen);
void ad_specs_free(void);

/* Applies the [rate_limits] overrides of the configuration. */
struct ad_config;
int ad_specs_override_rates(const struct ad_config *cfg, char *err, size_t errlen);

/* Finds a spec by method name (n bytes, not NUL-terminated); NULL if none. */
struct ad_spec *ad_spec_find(const char *method, size_t n);

/* All specs, in method-name order. */
extern struct ad_spec *ad_specs;
extern size_t ad_nspecs;

const char *ad_risk_name(enum ad_risk r);
const char *ad_cred_kind_name(enum ad_cred_kind k);

#endif
