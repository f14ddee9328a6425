/*
 * ratelimit.h - token buckets for the per-action rate limits of the specs.
 *
 * Each spec may declare {"limit": N, "window_ms": W, "per": "credential" |
 * "account" | "ip" | "org"}: at most N calls per W milliseconds for each
 * credential (or account, peer address, org), refilled continuously.  Anonymous callers are keyed
 * by address whatever the scope.  Every member of a batch takes a token.
 */
#ifndef AD_RATELIMIT_H
#define AD_RATELIMIT_H

#include "cred.h"
#include "spec.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * Takes one token for a call of s.  Returns true if allowed; otherwise false
 * and *ret_retry_ms says when the next token will be there.
 */
bool ad_rate_take(const struct ad_spec *s, const struct ad_cred *cred,
		  const uint8_t ip[16], uint32_t *ret_retry_ms);

/* Number of buckets currently tracked (for /metrics). */
size_t ad_rate_buckets(void);
void ad_rate_free(void);

#endif
