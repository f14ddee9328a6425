/*
 * actiond/secrets.h - sealing secrets at rest.
 *
 * Secrets (integration credentials, OAuth tokens) are stored sealed with
 * libsodium's secretbox under a key derived from actiond's master key, which
 * never enters the database.  A module seals what it stores and opens what
 * it reads back; a sealed value is useless without this process's key.
 * The bytes opened are the module's to wipe (sodium_memzero) when done.
 *
 * Threads: any.
 */
#ifndef ACTIOND_SECRETS_H
#define ACTIOND_SECRETS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes a sealed value has beyond the plain one (nonce and MAC). */
#define AD_SECRET_OVERHEAD (24 + 16)

/* Seals len bytes into out (len + AD_SECRET_OVERHEAD bytes). */
void ad_secret_seal(const uint8_t *in, size_t len, uint8_t *out);

/*
 * Opens a sealed value of len bytes into out (len - AD_SECRET_OVERHEAD
 * bytes).  Returns 0, or -1 if it was not sealed by this key or was
 * altered.
 */
int ad_secret_open(const uint8_t *in, size_t len, uint8_t *out);

#ifdef __cplusplus
}
#endif

#endif
