/*
 * json.c - a one-pass JSON reader that builds jansson values (see json.h).
 *
 * The rule that keeps it safe: it returns a value only when json_loadb()
 * with the same flags would return an equal one (same types, same bytes,
 * same key order); at the first thing it does not like - any syntax error,
 * an integer out of range (unless AD_JSON_BIG_AS_REAL), a NUL in a key, a
 * duplicate key under JSON_REJECT_DUPLICATES, a real that overflows, deep
 * nesting - it gives up and json_loadb() reads the text again and decides,
 * with its own message.  tests/unit/test_json.c and tests/fuzz/fuzz_json.c
 * hold it to that against jansson.
 */
#include "json.h"
#include "buf.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FAST_FLAGS (JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | AD_JSON_BIG_AS_REAL)
/* Deeper text is jansson's (its own limit is 2048). */
#define DEPTH_MAX 1024
/* Longer numbers are copied to the heap for strtod(). */
#define REAL_MAX 63

struct reader {
	const unsigned char *p, *end;
	size_t flags;
	int depth;
	/* strings with escapes are decoded here */
	char *tmp;
	size_t cap;
	bool heap;
	char stack[256];
};

static json_t *read_value(struct reader *r);

static void skip_ws(struct reader *r)
{
	while (r->p < r->end &&
	       (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
		r->p++;
}

static int hex4(const unsigned char *p, const unsigned char *end, uint32_t *v)
{
	uint32_t x = 0;

	if (end - p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		unsigned char c = p[i];

		x <<= 4;
		if (c >= '0' && c <= '9')
			x |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			x |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			x |= (uint32_t)(c - 'A' + 10);
		else
			return -1;
	}
	*v = x;
	return 0;
}

static size_t put_utf8(char *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* Room in r->tmp for n bytes (a decoded string is never longer than its text). */
static int tmp_room(struct reader *r, size_t n)
{
	char *t;

	if (n <= r->cap)
		return 0;
	t = r->heap ? realloc(r->tmp, n) : malloc(n);
	if (!t)
		return -1;
	if (!r->heap)
		r->heap = true;
	r->tmp = t;
	r->cap = n;
	return 0;
}

/*
 * One escape at p (just after the backslash) decoded to o; returns the
 * bytes written and moves *pp past it, or 0 to give up (a lone or
 * mismatched surrogate, a bad escape, or \u0000 where NUL is not allowed).
 */
static size_t unescape(struct reader *r, const unsigned char **pp, char *o, bool *nul)
{
	const unsigned char *p = *pp;
	uint32_t cp, lo;

	switch (*p) {
	case '"': case '\\': case '/':
		*o = (char)*p;
		break;
	case 'b': *o = '\b'; break;
	case 'f': *o = '\f'; break;
	case 'n': *o = '\n'; break;
	case 'r': *o = '\r'; break;
	case 't': *o = '\t'; break;
	case 'u':
		if (hex4(p + 1, r->end, &cp))
			return 0;
		p += 5;
		if (cp >= 0xdc00 && cp <= 0xdfff)
			return 0;
		if (cp >= 0xd800 && cp <= 0xdbff) {
			if (r->end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
			    hex4(p + 2, r->end, &lo) || lo < 0xdc00 || lo > 0xdfff)
				return 0;
			cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			p += 6;
		}
		if (!cp) {
			if (!(r->flags & JSON_ALLOW_NUL))
				return 0;
			*nul = true;
		}
		*pp = p;
		return put_utf8(o, cp);
	default:
		return 0;
	}
	*pp = p + 1;
	return 1;
}

/*
 * A string, r->p just after its opening quote: *s, *n its bytes, in the
 * text itself or (when it had escapes) in r->tmp; *nul if one is NUL.
 */
static int read_string(struct reader *r, const char **s, size_t *n, bool *nul)
{
	const unsigned char *start = r->p, *p = start, *end = r->end;
	size_t o = 0;
	bool copying = false;

	*nul = false;
	for (;;) {
		const unsigned char *run = p;

		while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
			p++;
		if (copying) {
			memcpy(r->tmp + o, run, (size_t)(p - run));
			o += (size_t)(p - run);
		}
		if (p >= end || *p < 0x20)
			return -1;
		if (*p == '"')
			break;
		if (*p >= 0x80) {
			size_t k = *p >= 0xf0 ? 4 : *p >= 0xe0 ? 3 : 2;
			size_t room = (size_t)(end - p) < 4 ? (size_t)(end - p) : 4;

			if (ad_utf8_valid_prefix((const char *)p, room) < k)
				return -1;
			if (copying) {
				memcpy(r->tmp + o, p, k);
				o += k;
			}
			p += k;
			continue;
		}
		/* a backslash */
		if (!copying) {
			if (tmp_room(r, (size_t)(end - start)))
				return -1;
			o = (size_t)(p - start);
			memcpy(r->tmp, start, o);
			copying = true;
		}
		p++;
		if (p >= end)
			return -1;
		{
			size_t w = unescape(r, &p, r->tmp + o, nul);

			if (!w)
				return -1;
			o += w;
		}
	}
	r->p = p + 1;
	if (copying) {
		*s = r->tmp;
		*n = o;
	} else {
		*s = (const char *)start;
		*n = (size_t)(p - start);
	}
	return 0;
}

static bool digit(const unsigned char *p, const unsigned char *end)
{
	return p < end && *p >= '0' && *p <= '9';
}

/*
 * The number text s[0..n) as a real, or NULL on overflow, as jansson
 * reads it (an underflow is the nearest double, down to 0).  PostgreSQL
 * writes numbers in full: 1e300 with 301 digits, 5e-324 with 340.
 */
static json_t *real_of(const unsigned char *s, size_t n)
{
	char small[REAL_MAX + 1], *text = small, *e;
	json_t *v = NULL;
	double d;

	if (n > REAL_MAX && !(text = malloc(n + 1)))
		return NULL;
	memcpy(text, s, n);
	text[n] = '\0';
	errno = 0;
	d = strtod(text, &e);
	if (e == text + n && !((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE))
		v = json_real(d);
	if (text != small)
		free(text);
	return v;
}

static json_t *read_number(struct reader *r)
{
	const unsigned char *s = r->p, *p = s, *end = r->end;
	bool neg = false, real = false, big = false;
	uint64_t v = 0;
	int digits = 0;

	if (*p == '-') {
		neg = true;
		p++;
	}
	if (!digit(p, end))
		return NULL;
	if (*p == '0') {
		p++;
		if (digit(p, end))
			return NULL;
	} else {
		while (digit(p, end)) {
			if (++digits > 19) { /* cannot fit; jansson says so */
				if (!(r->flags & AD_JSON_BIG_AS_REAL))
					return NULL;
				big = true;
			}
			v = v * 10 + (uint64_t)(*p++ - '0');
		}
	}
	if (p < end && *p == '.') {
		real = true;
		p++;
		if (!digit(p, end))
			return NULL;
		while (digit(p, end))
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		real = true;
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (!digit(p, end))
			return NULL;
		while (digit(p, end))
			p++;
	}
	r->p = p;
	if (!real && !big) {
		if (!neg && v <= (uint64_t)INT64_MAX)
			return json_integer((json_int_t)v);
		if (neg && v == (uint64_t)INT64_MAX + 1)
			return json_integer(INT64_MIN);
		if (neg && v <= (uint64_t)INT64_MAX)
			return json_integer(-(json_int_t)v);
		if (!(r->flags & AD_JSON_BIG_AS_REAL))
			return NULL;
	}
	return real_of(s, (size_t)(p - s));
}

static json_t *read_array(struct reader *r)
{
	json_t *a = json_array();

	if (!a)
		return NULL;
	r->p++;
	skip_ws(r);
	if (r->p < r->end && *r->p == ']') {
		r->p++;
		return a;
	}
	for (;;) {
		json_t *v = read_value(r);

		if (!v || json_array_append_new(a, v))
			break;
		skip_ws(r);
		if (r->p >= r->end)
			break;
		if (*r->p == ']') {
			r->p++;
			return a;
		}
		if (*r->p != ',')
			break;
		r->p++;
		skip_ws(r);
	}
	json_decref(a);
	return NULL;
}

static json_t *read_object(struct reader *r)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	r->p++;
	skip_ws(r);
	if (r->p < r->end && *r->p == '}') {
		r->p++;
		return o;
	}
	for (;;) {
		const char *k;
		char *copy = NULL;
		size_t kn;
		bool nul;
		json_t *v;

		if (r->p >= r->end || *r->p != '"')
			break;
		r->p++;
		if (read_string(r, &k, &kn, &nul) || nul)
			break;
		if (k == r->tmp) { /* the value may need r->tmp */
			if (!(copy = malloc(kn ? kn : 1)))
				break;
			memcpy(copy, k, kn);
			k = copy;
		}
		skip_ws(r);
		if (r->p >= r->end || *r->p != ':') {
			free(copy);
			break;
		}
		r->p++;
		skip_ws(r);
		v = read_value(r);
		if (!v || ((r->flags & JSON_REJECT_DUPLICATES) && json_object_getn(o, k, kn))) {
			json_decref(v);
			free(copy);
			break;
		}
		if (json_object_setn_new_nocheck(o, k, kn, v)) {
			free(copy);
			break;
		}
		free(copy);
		skip_ws(r);
		if (r->p >= r->end)
			break;
		if (*r->p == '}') {
			r->p++;
			return o;
		}
		if (*r->p != ',')
			break;
		r->p++;
		skip_ws(r);
	}
	json_decref(o);
	return NULL;
}

static json_t *read_value(struct reader *r)
{
	const unsigned char *p = r->p;
	size_t left = (size_t)(r->end - p);
	json_t *v = NULL;

	if (!left)
		return NULL;
	switch (*p) {
	case '{':
	case '[':
		if (++r->depth > DEPTH_MAX)
			return NULL;
		v = *p == '{' ? read_object(r) : read_array(r);
		r->depth--;
		return v;
	case '"': {
		const char *s;
		size_t n;
		bool nul;

		r->p++;
		if (read_string(r, &s, &n, &nul))
			return NULL;
		return json_stringn_nocheck(s, n);
	}
	case 't':
		if (left >= 4 && !memcmp(p, "true", 4)) {
			r->p += 4;
			return json_true();
		}
		return NULL;
	case 'f':
		if (left >= 5 && !memcmp(p, "false", 5)) {
			r->p += 5;
			return json_false();
		}
		return NULL;
	case 'n':
		if (left >= 4 && !memcmp(p, "null", 4)) {
			r->p += 4;
			return json_null();
		}
		return NULL;
	default:
		return read_number(r);
	}
}

json_t *ad_json_fast(const char *buf, size_t len, size_t flags)
{
	struct reader r;
	json_t *v = NULL;

	if ((flags & ~(size_t)FAST_FLAGS) || !buf)
		return NULL;
	r.p = (const unsigned char *)buf;
	r.end = r.p + len;
	r.flags = flags;
	r.depth = 0;
	r.tmp = r.stack;
	r.cap = sizeof(r.stack);
	r.heap = false;
	skip_ws(&r);
	if ((flags & JSON_DECODE_ANY) || (r.p < r.end && (*r.p == '{' || *r.p == '[')))
		v = read_value(&r);
	if (v) {
		skip_ws(&r);
		if (r.p != r.end) {
			json_decref(v);
			v = NULL;
		}
	}
	if (r.heap)
		free(r.tmp);
	return v;
}

json_t *ad_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *err)
{
	json_t *v = ad_json_fast(buf, len, flags);

	if (!v)
		return json_loadb(buf, len, flags & ~(size_t)AD_JSON_BIG_AS_REAL, err);
	if (err) {
		err->text[0] = '\0';
		err->line = -1;
		err->column = -1;
		err->position = 0;
		strcpy(err->source, "<buffer>");
	}
	return v;
}
