/*
 * keys.h - the master key and what is derived from it.
 *
 * The master key (32 bytes) comes from $ACTIOND_MASTER_KEY or from
 * security.master_key_file, 64 hex digits either way; with the embedded
 * database and neither set, one is generated into <data_dir>/master.key on
 * first start.  It never enters the database.  Two subkeys are derived from
 * it with libsodium's KDF: one keys the BLAKE2b hash under which tokens are
 * stored, the other seals integration secrets (secretbox).
 */
#ifndef AD_KEYS_H
#define AD_KEYS_H

#include "config.h"
#include "issuer.h"

#include <stddef.h>
#include <stdint.h>

int ad_keys_init(const struct ad_config *cfg, bool embedded);
void ad_keys_free(void);

/* Keyed BLAKE2b-256 of a token, as stored in credentials.token_hash. */
void ad_keys_token_hash(const char *token, size_t len, uint8_t out[32]);

/*
 * Makes a new token: prefix (e.g. "adt_") then 32 random bytes in unpadded
 * base64url.  out needs AD_TOKEN_TEXT_MAX bytes.
 */
void ad_keys_new_token(const char *prefix, char *out);

/*
 * Seals len bytes: out gets nonce (24 bytes) || MAC || ciphertext, i.e.
 * len + AD_SEAL_OVERHEAD bytes.  Opening returns -1 if the box was forged.
 */
void ad_keys_seal(const uint8_t *in, size_t len, uint8_t *out);
int ad_keys_open(const uint8_t *in, size_t len, uint8_t *out);

/*
 * The public id of an internal one of a kind (AD_ID_*), and back; 0 when
 * the input is not a valid id (ad_keys_id_in of a number no public id has
 * maps to some internal id that will not be found in the caller's org).
 */
int64_t ad_keys_id_out(int kind, int64_t id);
int64_t ad_keys_id_in(int kind, int64_t pub);

#endif
