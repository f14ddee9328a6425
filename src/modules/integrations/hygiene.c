/*
 * hygiene.c - what may be stored, shown and published of an invocation:
 * sensitive keys and the injected credential redacted, results cut to
 * 10 KB without breaking JSON or UTF-8, upstream text made printable; and
 * the canonical text and BLAKE2b hashes that bind params and events.
 */
#include "integrations.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REDACTED "[redacted]"
#define MAX_DEPTH 64

static const char *const sensitive[] = {
	"token",         "secret",       "password",     "authorization", "api_key",
	"apikey",        "access_token", "refresh_token", "client_secret", "cookie",
};

static bool sensitive_key(const char *k)
{
	for (size_t i = 0; i < sizeof(sensitive) / sizeof(sensitive[0]); i++)
		if (!strcasecmp(k, sensitive[i]))
			return true;
	return false;
}

/* s (len bytes) with every occurrence of secret replaced; NULL when none. */
static char *replace_secret(const char *s, size_t len, const char *secret, size_t slen,
			    size_t *ret_len)
{
	size_t n = 0, out = 0;
	char *r;

	if (!secret || !slen || len < slen)
		return NULL;
	for (size_t i = 0; i + slen <= len;)
		if (!memcmp(s + i, secret, slen)) {
			n++;
			i += slen;
		} else {
			i++;
		}
	if (!n || !(r = malloc(len - n * slen + n * strlen(REDACTED) + 1)))
		return NULL;
	for (size_t i = 0; i < len;) {
		if (i + slen <= len && !memcmp(s + i, secret, slen)) {
			memcpy(r + out, REDACTED, strlen(REDACTED));
			out += strlen(REDACTED);
			i += slen;
		} else {
			r[out++] = s[i++];
		}
	}
	r[out] = '\0';
	*ret_len = out;
	return r;
}

static json_t *redact(const json_t *v, const char *secret, size_t slen, int depth)
{
	if (depth > MAX_DEPTH)
		return json_string("[too deep]");
	if (json_is_object(v)) {
		json_t *o = json_object(), *m;
		const char *k;

		json_object_foreach((json_t *)v, k, m) {
			size_t klen;
			char *nk = replace_secret(k, strlen(k), secret, slen, &klen);

			json_object_set_new(o, nk ? nk : k,
					    sensitive_key(k) ? json_string(REDACTED)
							     : redact(m, secret, slen, depth + 1));
			free(nk);
		}
		return o;
	}
	if (json_is_array(v)) {
		json_t *a = json_array(), *m;
		size_t i;

		json_array_foreach(v, i, m)
			json_array_append_new(a, redact(m, secret, slen, depth + 1));
		return a;
	}
	if (json_is_string(v)) {
		size_t len;
		char *r = replace_secret(json_string_value(v), json_string_length(v), secret, slen,
					 &len);
		json_t *s;

		if (!r)
			return json_copy((json_t *)v);
		s = json_stringn(r, len);
		free(r);
		return s;
	}
	return json_copy((json_t *)v);
}

json_t *ig_redact(const json_t *v, const char *secret, size_t secret_len)
{
	return v ? redact(v, secret, secret_len, 0) : json_null();
}

/* The length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

char *ig_clean_text(const char *s, size_t len, size_t max, const char *secret,
		    size_t secret_len)
{
	size_t rlen, out = 0;
	char *replaced = replace_secret(s, len, secret, secret_len, &rlen);
	const unsigned char *p = (const unsigned char *)(replaced ? replaced : s);
	size_t n = replaced ? rlen : len;
	char *r = malloc((n < max ? n : max) + 1);

	if (!r) {
		free(replaced);
		return NULL;
	}
	for (size_t i = 0; i < n;) {
		size_t q = utf8_seq(p + i, n - i);

		if (q == 1 && (p[i] < 0x20 || p[i] == 0x7f) && p[i] != '\n' && p[i] != '\t')
			q = 0;
		if (out + (q ? q : 1) > max)
			break;
		if (q) {
			memcpy(r + out, p + i, q);
			out += q;
			i += q;
		} else {
			r[out++] = '?';
			i++;
		}
	}
	r[out] = '\0';
	free(replaced);
	return r;
}

json_t *ig_truncate(json_t *v, size_t max)
{
	char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	size_t len = text ? strlen(text) : 0, keep;
	json_t *out = NULL;

	if (!text) {
		json_decref(v);
		return json_pack("{s:b,s:s}", "truncated", true, "preview", "");
	}
	if (len <= max) {
		free(text);
		return v;
	}
	json_decref(v);
	/* Escaping can grow the preview: shrink until the whole fits. */
	for (keep = max - 100; keep > 0; keep = keep * 3 / 4) {
		char *head = ig_clean_text(text, len, keep, NULL, 0);
		char *dump;

		json_decref(out);
		out = json_pack("{s:b,s:I,s:s}", "truncated", true, "bytes", (json_int_t)len,
				"preview", head ? head : "");
		free(head);
		dump = json_dumps(out, JSON_COMPACT);
		if (dump && strlen(dump) <= max) {
			free(dump);
			break;
		}
		free(dump);
	}
	free(text);
	return out;
}

/* A copy with integral reals made integers, as PostgreSQL's jsonb keeps them. */
static json_t *normalise(const json_t *v)
{
	if (json_is_object(v)) {
		json_t *o = json_object(), *m;
		const char *k;

		json_object_foreach((json_t *)v, k, m)
			json_object_set_new(o, k, normalise(m));
		return o;
	}
	if (json_is_array(v)) {
		json_t *a = json_array(), *m;
		size_t i;

		json_array_foreach(v, i, m)
			json_array_append_new(a, normalise(m));
		return a;
	}
	if (json_is_real(v)) {
		int64_t i;

		if (ad_json_int(v, &i))
			return json_integer((json_int_t)i);
	}
	return json_copy((json_t *)v);
}

char *ig_canonical(const json_t *v)
{
	json_t *n = normalise(v);
	char *text = n ? json_dumps(n, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;

	json_decref(n);
	return text;
}

bool ig_has_nul(const json_t *v)
{
	const char *k;
	json_t *m;
	size_t i;

	if (json_is_string(v))
		return strlen(json_string_value(v)) != json_string_length(v);
	if (json_is_object(v)) {
		json_object_foreach((json_t *)v, k, m) {
			if (ig_has_nul(m))
				return true;
		}
	}
	if (json_is_array(v)) {
		json_array_foreach(v, i, m) {
			if (ig_has_nul(m))
				return true;
		}
	}
	return false;
}

void ig_hash_hex(const void *s, size_t len, char out[65])
{
	ig_hash2_hex(s, len, NULL, 0, out);
}

void ig_hash2_hex(const void *a, size_t alen, const void *b, size_t blen, char out[65])
{
	crypto_generichash_state st;
	uint8_t h[32];

	crypto_generichash_init(&st, NULL, 0, sizeof(h));
	crypto_generichash_update(&st, a, alen);
	if (blen)
		crypto_generichash_update(&st, b, blen);
	crypto_generichash_final(&st, h, sizeof(h));
	sodium_bin2hex(out, 65, h, sizeof(h));
}
