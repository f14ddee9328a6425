/*
 * auth.h - credentials and their lookup.
 *
 * A credential that authenticated a caller is an ad_cred: refcounted, shared
 * by every connection resting on it, and linked to those connections so that
 * revoking it can close them all at once.  Tokens are never kept: only their
 * BLAKE2b-256 hash, compared in constant time.
 */
#ifndef AD_AUTH_H
#define AD_AUTH_H

#include "actiond/action.h"
#include "config.h"
#include "list.h"

#include <stddef.h>
#include <stdint.h>

/* Tokens longer than this are refused before hashing. */
#define AD_TOKEN_MAX 512

struct ad_cred {
	uint32_t refs;
	enum ad_cred_kind kind;
	enum ad_role role;
	char *org;
	char *id;           /* stable credential id, safe to log */
	struct ad_list conns; /* WebSocket connections authenticated by it */
};

struct ad_cred *ad_cred_ref(struct ad_cred *c);
/* Drops a reference; accepts NULL; returns NULL. */
struct ad_cred *ad_cred_unref(struct ad_cred *c);

/* Builds the API-key table from the configuration. */
int ad_auth_init(const struct ad_config *cfg);
void ad_auth_free(void);

/*
 * Looks up a bearer token (len bytes).  Returns a new reference, or NULL if
 * the token is unknown or malformed.
 */
struct ad_cred *ad_auth_bearer(const char *token, size_t len);

/* BLAKE2b-256 of a token, as stored in configuration. */
void ad_token_hash(const char *token, size_t len, uint8_t out[32]);

#endif
