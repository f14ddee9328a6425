/*
 * keys.c - master key loading and the derived token-hash and sealing keys.
 */
#include "keys.h"
#include "actiond/secrets.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint8_t token_key[crypto_generichash_KEYBYTES];
static uint8_t seal_key[crypto_secretbox_KEYBYTES];
static uint8_t id_key[crypto_generichash_KEYBYTES];

static int parse_hex_key(const char *text, uint8_t out[32])
{
	size_t bin_len;
	const char *end;

	if (sodium_hex2bin(out, 32, text, strlen(text), " \t\r\n", &bin_len, &end) ||
	    bin_len != 32 || *end)
		return -1;
	return 0;
}

static int read_key_file(const char *path, uint8_t out[32])
{
	char text[160];
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f)
		return -errno;
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	while (n && (text[n - 1] == '\n' || text[n - 1] == '\r'))
		text[--n] = '\0';
	return parse_hex_key(text, out) ? -EINVAL : 0;
}

/* Writes a fresh key to path (0600, never overwriting). */
static int generate_key_file(const char *path, uint8_t out[32])
{
	char hex[65];
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	bool ok;

	if (fd < 0)
		return -errno;
	randombytes_buf(out, 32);
	sodium_bin2hex(hex, sizeof(hex), out, 32);
	hex[64] = '\n';
	ok = write(fd, hex, 65) == 65 && fsync(fd) == 0;
	sodium_memzero(hex, sizeof(hex));
	close(fd);
	return ok ? 0 : -EIO;
}

int ad_keys_init(const struct ad_config *cfg, bool embedded)
{
	const char *env = getenv("ACTIOND_MASTER_KEY");
	uint8_t master[32];
	char path[4200];
	int r;

	if (env && *env) {
		if (parse_hex_key(env, master)) {
			ad_log_error("ACTIOND_MASTER_KEY must be 64 hex digits");
			return -1;
		}
	} else if (cfg->master_key_file) {
		if ((r = read_key_file(cfg->master_key_file, master))) {
			ad_log_error("%s: %s", cfg->master_key_file,
				     r == -EINVAL ? "expected 64 hex digits" : strerror(-r));
			return -1;
		}
	} else if (embedded) {
		snprintf(path, sizeof(path), "%s/master.key", cfg->data_dir);
		r = read_key_file(path, master);
		if (r == -ENOENT) {
			ad_log_info("generating a master key in %s", path);
			r = generate_key_file(path, master);
		}
		if (r) {
			ad_log_error("%s: %s", path, strerror(-r));
			return -1;
		}
	} else {
		ad_log_error("a master key is required with an external database: set "
			     "ACTIOND_MASTER_KEY or security.master_key_file");
		return -1;
	}
	crypto_kdf_derive_from_key(token_key, sizeof(token_key), 1, "actiondT", master);
	crypto_kdf_derive_from_key(seal_key, sizeof(seal_key), 2, "actiondS", master);
	crypto_kdf_derive_from_key(id_key, sizeof(id_key), 3, "actiondI", master);
	sodium_memzero(master, sizeof(master));
	return 0;
}

void ad_keys_free(void)
{
	sodium_memzero(token_key, sizeof(token_key));
	sodium_memzero(seal_key, sizeof(seal_key));
	sodium_memzero(id_key, sizeof(id_key));
}

void ad_keys_token_hash(const char *token, size_t len, uint8_t out[32])
{
	crypto_generichash(out, 32, (const unsigned char *)token, len, token_key,
			   sizeof(token_key));
}

void ad_keys_new_token(const char *prefix, char *out)
{
	unsigned char raw[32];
	size_t pl = strlen(prefix);

	randombytes_buf(raw, sizeof(raw));
	memcpy(out, prefix, pl);
	sodium_bin2base64(out + pl, AD_TOKEN_TEXT_MAX - pl, raw, sizeof(raw),
			  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	sodium_memzero(raw, sizeof(raw));
}

void ad_keys_seal(const uint8_t *in, size_t len, uint8_t *out)
{
	randombytes_buf(out, crypto_secretbox_NONCEBYTES);
	crypto_secretbox_easy(out + crypto_secretbox_NONCEBYTES, in, len, out, seal_key);
}

int ad_keys_open(const uint8_t *in, size_t len, uint8_t *out)
{
	if (len < AD_SEAL_OVERHEAD)
		return -1;
	return crypto_secretbox_open_easy(out, in + crypto_secretbox_NONCEBYTES,
					  len - crypto_secretbox_NONCEBYTES, in, seal_key);
}

/*
 * Public ids: a keyed permutation of 52-bit numbers (a four-round Feistel
 * network on two 26-bit halves, keyed BLAKE2b as the round function, the
 * kind mixed in so that account 5 and session 5 look unrelated), plus one
 * so that no public id is 0.  Every public id stays below 2^53, a safe JSON
 * integer.  Without the key, consecutive internal ids give unrelated public
 * ones, so a client learns nothing of how busy other orgs are.
 */
#define HALF_BITS 26
#define HALF_MASK ((1u << HALF_BITS) - 1)

static uint32_t round_fn(int kind, int round, uint32_t half)
{
	uint8_t in[6] = { (uint8_t)kind, (uint8_t)round, (uint8_t)half,
			  (uint8_t)(half >> 8), (uint8_t)(half >> 16), (uint8_t)(half >> 24) };
	uint8_t out[8];

	crypto_generichash(out, sizeof(out), in, sizeof(in), id_key, sizeof(id_key));
	return ((uint32_t)out[0] | (uint32_t)out[1] << 8 | (uint32_t)out[2] << 16 |
		(uint32_t)out[3] << 24) & HALF_MASK;
}

int64_t ad_keys_id_out(int kind, int64_t id)
{
	uint32_t l = (uint32_t)((uint64_t)id >> HALF_BITS) & HALF_MASK;
	uint32_t r = (uint32_t)id & HALF_MASK;

	if (id <= 0 || (uint64_t)id >> (2 * HALF_BITS))
		return 0;
	for (int i = 0; i < 4; i++) {
		uint32_t t = r;

		r = l ^ round_fn(kind, i, r);
		l = t;
	}
	return (int64_t)(((uint64_t)l << HALF_BITS | r) + 1);
}

int64_t ad_keys_id_in(int kind, int64_t pub)
{
	uint64_t v = (uint64_t)pub - 1;
	uint32_t l, r;

	if (pub <= 0 || v >> (2 * HALF_BITS))
		return 0;
	l = (uint32_t)(v >> HALF_BITS) & HALF_MASK;
	r = (uint32_t)v & HALF_MASK;
	for (int i = 3; i >= 0; i--) {
		uint32_t t = l;

		l = r ^ round_fn(kind, i, l);
		r = t;
	}
	return (int64_t)((uint64_t)l << HALF_BITS | r);
}

void ad_secret_seal(const uint8_t *in, size_t len, uint8_t *out)
{
	ad_keys_seal(in, len, out);
}

int ad_secret_open(const uint8_t *in, size_t len, uint8_t *out)
{
	return ad_keys_open(in, len, out);
}
