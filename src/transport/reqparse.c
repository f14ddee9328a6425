/*
 * reqparse.c - header and query parsers for the HTTP request path.
 */
#include "reqparse.h"

#include <jansson.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

static bool blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Trims blanks from both ends of [p, p + n). */
static struct ad_span trim(const char *p, size_t n)
{
	while (n && blank(*p))
		p++, n--;
	while (n && blank(p[n - 1]))
		n--;
	return (struct ad_span){ p, n };
}

int ad_parse_bearer(const char *v, size_t n, struct ad_span *tok)
{
	struct ad_span s = trim(v, n);

	if (s.n < 7 || strncasecmp(s.p, "Bearer", 6) || !blank(s.p[6]))
		return -1;
	*tok = trim(s.p + 7, s.n - 7);
	for (size_t i = 0; i < tok->n; i++)
		if (blank(tok->p[i]) || tok->p[i] == ',')
			return -1;
	return tok->n ? 0 : -1;
}

bool ad_parse_cookie(const char *v, size_t n, const char *name, struct ad_span *val)
{
	size_t nl = strlen(name), i = 0;

	while (i < n) {
		size_t start = i, end;
		struct ad_span pair;

		while (i < n && v[i] != ';')
			i++;
		end = i++;
		pair = trim(v + start, end - start);
		if (pair.n > nl && !memcmp(pair.p, name, nl) && pair.p[nl] == '=') {
			struct ad_span s = { pair.p + nl + 1, pair.n - nl - 1 };

			if (s.n >= 2 && s.p[0] == '"' && s.p[s.n - 1] == '"') {
				s.p++;
				s.n -= 2;
			}
			*val = s;
			return true;
		}
	}
	return false;
}

enum ad_subproto ad_parse_subprotocols(const char *v, size_t n, struct ad_span *bearer)
{
	static const char v1[] = AD_SUBPROTOCOL, pre[] = AD_SUBPROTOCOL_BEARER;
	bool have_v1 = false, foreign = false;
	size_t i = 0;

	bearer->p = NULL;
	bearer->n = 0;
	while (i <= n) {
		size_t start = i;
		struct ad_span t;

		while (i < n && v[i] != ',')
			i++;
		t = trim(v + start, i - start);
		i++;
		if (!t.n)
			continue;
		if (t.n == sizeof(v1) - 1 && !memcmp(t.p, v1, t.n))
			have_v1 = true;
		else if (t.n > sizeof(pre) - 1 && !memcmp(t.p, pre, sizeof(pre) - 1) &&
			 !bearer->n)
			*bearer = (struct ad_span){ t.p + sizeof(pre) - 1,
						    t.n - (sizeof(pre) - 1) };
		else
			foreign = true;
	}
	if (foreign)
		return AD_SUBPROTO_FOREIGN;
	return have_v1 ? AD_SUBPROTO_OK : AD_SUBPROTO_NO_V1;
}

/* True if [p, p + n) is well-formed UTF-8 (no overlongs, no surrogates). */
static bool utf8_valid(const char *p, size_t n)
{
	const unsigned char *s = (const unsigned char *)p;
	size_t i = 0;

	while (i < n) {
		unsigned c = s[i], need;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			need = 1, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			need = 2, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			need = 3, cp = c & 0x07;
		else
			return false;
		if (n - i <= need)
			return false;
		for (unsigned k = 1; k <= need; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (need == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return false;
		i += need + 1;
	}
	return true;
}

/* The value of argument name, or NULL. */
static const struct ad_span *arg(const struct ad_span *args, size_t nargs,
				 const char *name, struct ad_span *ret)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i < nargs; i++)
		if (args[i].n > nl && !memcmp(args[i].p, name, nl) && args[i].p[nl] == '=') {
			*ret = (struct ad_span){ args[i].p + nl + 1, args[i].n - nl - 1 };
			return ret;
		}
	return NULL;
}

int ad_parse_get_rpc(const struct ad_span *args, size_t nargs, struct ad_buf *out,
		     const char **why, bool *parse_error)
{
	struct ad_span m, p, id;
	json_error_t jerr;
	json_t *v;

	*parse_error = false;
	if (!arg(args, nargs, "method", &m) || !m.n) {
		*why = "GET /rpc needs ?method=";
		return -1;
	}
	if (!utf8_valid(m.p, m.n) || (arg(args, nargs, "id", &id) && !utf8_valid(id.p, id.n))) {
		*parse_error = true;
		*why = "method and id must be UTF-8";
		return -1;
	}
	ad_buf_puts(out, "{\"jsonrpc\":\"2.0\",\"method\":");
	ad_buf_json_str(out, m.p, m.n);
	if (arg(args, nargs, "params", &p)) {
		/* Checked on its own: one value, an object or an array. */
		v = json_loadb(p.p, p.n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES |
			       JSON_ALLOW_NUL, &jerr);
		if (!v || (!json_is_object(v) && !json_is_array(v))) {
			*parse_error = !v;
			*why = v ? "params must be an object or an array"
				 : "params is not valid JSON";
			json_decref(v);
			return -1;
		}
		json_decref(v);
		ad_buf_puts(out, ",\"params\":");
		ad_buf_append(out, p.p, p.n);
	}
	ad_buf_puts(out, ",\"id\":");
	if (!arg(args, nargs, "id", &id)) {
		ad_buf_puts(out, "null");
	} else {
		v = json_loadb(id.p, id.n, JSON_DECODE_ANY, &jerr);
		if (v && (json_is_string(v) || json_is_number(v) || json_is_null(v)))
			ad_buf_json(out, v);
		else
			ad_buf_json_str(out, id.p, id.n);
		json_decref(v);
	}
	ad_buf_putc(out, '}');
	if (out->oom) {
		*why = "Out of memory";
		return -1;
	}
	return 0;
}
