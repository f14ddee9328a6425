/*
 * chain.h - the link rule of the invocation event chain (audit.c), in one
 * place for everything that checks it: audit.verify, and the command
 * `actiond audit verify`, which reads the database itself.
 *
 * An org's linked events, in seq order, form a chain: seq runs 1, 2, ...
 * without a gap, each prev_hash is the hash before it (64 zeros for the
 * first), and hash = BLAKE2b-256(prev_hash || canonical row), where the
 * canonical row is the compact JSON, keys sorted, of {actor, at, detail,
 * event, invocation_id, seq} (at as the database's iso() writes it).
 *
 * Pure functions: no database, no loop; any thread.
 */
#ifndef AD_MOD_INTEGRATIONS_CHAIN_H
#define AD_MOD_INTEGRATIONS_CHAIN_H

#include <stdbool.h>
#include <stdint.h>

#define IG_ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

/* The hash of one event after prev (hex); false when detail is not JSON. */
bool ig_event_hash(int64_t seq, const char *invocation_id, const char *at, const char *event,
		   const char *actor, const char *detail_text, const char *prev, char out[65]);

/* A walk along one org's chain, from its start. */
struct ig_chain_walk {
	int64_t seq;        /* the last seq that linked; 0 before the first */
	char prev[65];      /* its hash */
};
void ig_chain_walk_init(struct ig_chain_walk *w);

/*
 * Checks the next linked event read in seq order.  Returns NULL when it
 * links (the walk moves on), else why not, with the seq of the first
 * broken link in *ret_bad (the walk stays where it was).
 */
const char *ig_chain_walk_step(struct ig_chain_walk *w, int64_t seq, const char *invocation_id,
			       const char *at, const char *event, const char *actor,
			       const char *detail_text, const char *prev_hash, const char *hash,
			       int64_t *ret_bad);

#endif
