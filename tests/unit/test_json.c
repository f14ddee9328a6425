/*
 * test_json.c - the fast JSON reader (src/util/json.c) next to jansson's.
 *
 * Random JSON texts (every kind of value, escapes of every kind, surrogate
 * pairs and lone halves, raw UTF-8 valid and not, integers at and past the
 * int64 limits, reals that overflow and underflow, duplicate keys, NULs,
 * random whitespace), each also cut, flipped and spliced, read under every
 * combination of the flags the server uses.  Whenever the fast reader gives
 * a value, jansson must give an equal one: same types, same bytes, same key
 * order.  ad_json_loadb() must always answer as json_loadb() does, errors
 * (text, line, column) included.  And the fast reader must decide most of
 * the valid texts itself, or it would be slower than no fast reader at all.
 */
#include "check.h"
#include "json.h"
#include "../fuzz/json_same.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint32_t rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return n ? (uint32_t)(rng % n) : 0;
}

struct text {
	char *p;
	size_t n, cap;
};

static void put(struct text *t, const char *s, size_t n)
{
	if (t->n + n > t->cap) {
		t->cap = (t->n + n) * 2 + 64;
		t->p = realloc(t->p, t->cap);
		if (!t->p)
			abort();
	}
	memcpy(t->p + t->n, s, n);
	t->n += n;
}

static void puts_(struct text *t, const char *s)
{
	put(t, s, strlen(s));
}

static void ws(struct text *t)
{
	static const char *const w[] = { "", "", "", " ", "\n", "\t", "\r\n  ", " \f" /* \f is not JSON space */ };

	puts_(t, w[rnd(rnd(40) ? 7 : 8)]);
}

static void gen_string(struct text *t)
{
	int n = (int)rnd(rnd(4) ? 12 : 80);

	put(t, "\"", 1);
	for (int i = 0; i < n; i++) {
		char b[16];
		uint32_t k = rnd(100);

		if (k < 60) {
			b[0] = (char)(' ' + rnd(95));
			if (b[0] == '"' || b[0] == '\\')
				b[0] = 'x';
			put(t, b, 1);
		} else if (k < 70) {
			static const char *const e[] = { "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\x", "\\" };
			puts_(t, e[rnd(rnd(20) ? 8 : 10)]);
		} else if (k < 80) {
			static const uint32_t cps[] = { 0, 1, 0x1f, 0x7f, 0x80, 0xe9, 0x7ff, 0x800, 0x2028, 0xfeff, 0xfffe, 0xffff,
							0xd800, 0xdbff, 0xdc00, 0xdfff, 0x4e2d };
			uint32_t cp = rnd(3) ? cps[rnd(sizeof(cps) / sizeof(*cps))] : rnd(0x10000);

			snprintf(b, sizeof(b), rnd(2) ? "\\u%04x" : "\\u%04X", cp);
			put(t, b, 6);
			if (cp >= 0xd800 && cp <= 0xdbff && rnd(4)) { /* its low half, mostly */
				snprintf(b, sizeof(b), "\\u%04x", 0xdc00 + rnd(0x400));
				put(t, b, 6);
			}
		} else if (k < 92) {
			static const char *const u[] = { "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80", "\xe2\x80\xa8",
							 "\xef\xbb\xbf", "\xf4\x8f\xbf\xbf" };
			puts_(t, u[rnd(6)]);
		} else {
			/* not UTF-8, or not JSON: overlong, surrogate, too high, cut, stray, control */
			static const char *const bad[] = { "\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
							   "\xf5\x80\x80\x80", "\xe4\xb8", "\x80", "\xff", "\x01", "\x1f", "\t" };
			puts_(t, bad[rnd(12)]);
		}
	}
	put(t, "\"", 1);
}

static void gen_number(struct text *t)
{
	static const char *const fixed[] = {
		"0", "-0", "1", "-1", "9223372036854775807", "-9223372036854775808", "9223372036854775808",
		"-9223372036854775809", "18446744073709551616", "12345678901234567890123", "0.0", "-0.0", "5.0",
		"1e5", "1E+2", "1e-2", "2.5e-3", "1e308", "1e309", "-1e309", "1e-400", "4.9e-324", "1.7976931348623157e308",
		"0.1", "123.456e7", "01", "1.", ".5", "-", "+1", "1e", "1e+", "--1", "0x10", "1.5E", "00", "-01",
		"0.30000000000000004", "100000000000000000000000000000000000000000000000000000000000000000000000.5",
	};
	char b[48];

	switch (rnd(3)) {
	case 0:
		puts_(t, fixed[rnd(sizeof(fixed) / sizeof(*fixed))]);
		break;
	case 1:
		snprintf(b, sizeof(b), "%s%u", rnd(3) ? "" : "-", rnd(1000000));
		puts_(t, b);
		break;
	default:
		snprintf(b, sizeof(b), "%s%u.%u%s", rnd(3) ? "" : "-", rnd(1000), rnd(100000),
			 rnd(2) ? "" : rnd(2) ? "e-7" : "E21");
		puts_(t, b);
	}
}

static void gen_value(struct text *t, int depth)
{
	uint32_t k = rnd(depth > 5 ? 6 : 9);

	ws(t);
	switch (k) {
	case 0: puts_(t, "null"); break;
	case 1: puts_(t, rnd(2) ? "true" : "false"); break;
	case 2: case 3: gen_number(t); break;
	case 4: case 5: gen_string(t); break;
	case 6: case 7: {
		int n = (int)rnd(5);

		put(t, "[", 1);
		for (int i = 0; i < n; i++) {
			if (i)
				put(t, ",", 1);
			gen_value(t, depth + 1);
		}
		if (!rnd(60))
			put(t, ",", 1);
		ws(t);
		put(t, "]", 1);
		break;
	}
	default: {
		static const char *const keys[] = { "\"a\"", "\"id\"", "\"method\"", "\"\"", "\"a\\u0000b\"",
						    "\"\\u00e9\"", "\"\xc3\xa9\"", "\"k\\n\"", "\"params\"", "\"a\"" };
		int n = (int)rnd(5);

		put(t, "{", 1);
		for (int i = 0; i < n; i++) {
			if (i)
				put(t, ",", 1);
			ws(t);
			if (rnd(3))
				puts_(t, keys[rnd(10)]);
			else
				gen_string(t);
			ws(t);
			put(t, ":", 1);
			gen_value(t, depth + 1);
		}
		ws(t);
		put(t, "}", 1);
	}
	}
	ws(t);
}

static size_t fast_valid, all_valid, disagreements;

static size_t big_read;

/*
 * Under AD_JSON_BIG_AS_REAL, a text jansson refuses may be read: only if
 * its one fault was integers beyond int64, which read as jansson reads them
 * with JSON_DECODE_INT_AS_REAL.
 */
static int big_ok(const char *p, size_t n, size_t flags, json_t *fast)
{
	json_t *as_real;
	int ok;

	if (!(flags & AD_JSON_BIG_AS_REAL))
		return 0;
	as_real = json_loadb(p, n, (flags & ~(size_t)AD_JSON_BIG_AS_REAL) | JSON_DECODE_INT_AS_REAL, NULL);
	ok = as_real && json_same_num(fast, as_real);
	json_decref(as_real);
	big_read += ok;
	return ok;
}

static void compare(const char *p, size_t n, size_t flags)
{
	json_error_t e1, e2;
	json_t *fast = ad_json_fast(p, n, flags);
	json_t *ref = json_loadb(p, n, flags & ~(size_t)AD_JSON_BIG_AS_REAL, &e1);
	json_t *via = ad_json_loadb(p, n, flags, &e2);
	int agree = !fast || (ref ? json_same(fast, ref) : big_ok(p, n, flags, fast));

	if (ref)
		all_valid++;
	if (fast && ref)
		fast_valid++;
	if (!agree && disagreements++ < 5)
		fprintf(stderr, "fast reader disagrees (flags %zx, jansson: %s): %.*s\n", flags,
			ref ? "another value" : e1.text, (int)n, p);
	CHECK(agree);
	CHECK(!via == !(ref || fast));
	if (via && ref)
		CHECK(json_same(via, ref));
	if (via && !ref)
		CHECK(fast && json_same(via, fast));
	if (!via && !ref)
		CHECK(!strcmp(e1.text, e2.text) && e1.line == e2.line && e1.column == e2.column &&
		      e1.position == e2.position);
	json_decref(fast);
	json_decref(ref);
	json_decref(via);
}

static void mutate(struct text *t)
{
	static const char *const tokens[] = { "\"", "\\", "\\u", "\\ud800", "{", "}", "[", "]", ",", ":", "-", "e",
					      ".", "0", "\xc3", "\x00", "null", "tru", " " };

	for (int k = 1 + (int)rnd(3); k > 0 && t->n; k--) {
		size_t at = rnd((uint32_t)t->n);

		switch (rnd(4)) {
		case 0:
			t->p[at] ^= (char)(1u << rnd(8));
			break;
		case 1:
			t->n = at;
			break;
		case 2: {
			const char *s = tokens[rnd(sizeof(tokens) / sizeof(*tokens))];
			size_t sl = *s ? strlen(s) : 1;
			char *rest = malloc(t->n - at + 1);

			memcpy(rest, t->p + at, t->n - at);
			size_t rl = t->n - at;
			t->n = at;
			put(t, s, sl);
			put(t, rest, rl);
			free(rest);
			break;
		}
		default:
			memmove(t->p + at, t->p + at + 1, t->n - at - 1);
			t->n--;
		}
	}
}

int main(int argc, char **argv)
{
	static const size_t flagsets[] = {
		0, JSON_DECODE_ANY, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, JSON_DECODE_ANY | JSON_ALLOW_NUL,
		JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, JSON_REJECT_DUPLICATES,
		JSON_DISABLE_EOF_CHECK, /* not the fast reader's: straight to jansson */
		JSON_DECODE_ANY | JSON_ALLOW_NUL | AD_JSON_BIG_AS_REAL, /* how SQL results are read */
	};
	long cases = argc > 1 ? atol(argv[1]) : 200000;
	struct text t = { 0 };
	size_t plain_fast = 0, plain_valid = 0;

	if (argc > 2)
		rng = strtoull(argv[2], NULL, 0) | 1;
	/* Fixed cases first. */
	{
		static const char *const fixed[] = {
			"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"data.find_many\",\"params\":{\"entity\":\"item\",\"filter\":{\"n\":4242},\"limit\":1}}",
			"[1,2,3]", "{}", "[]", " { } ", "{\"a\":1,\"a\":2}", "\"\\ud83d\\ude00\"", "\"\\ud83d\"", "\"\\ude00\"",
			"\"\\u0000\"", "{\"\\u0000\":1}", "[-9223372036854775808]", "[9223372036854775808]", "[1e309]",
			"[-0.0]", "[1e-400]", "", " ", "{", "[1,]", "{\"a\"}", "{\"a\":}", "nul", "[\"\x80\"]", "\xef\xbb\xbf{}",
			"{}x", "{} ", "[\"a\\/b\"]", "[\"\\uD834\\uDD1E\"]", "[\"\\uDBFF\\uDFFF\"]", "[0]", "[-]", "[01]",
			"{\"a\":[{\"b\":[{\"c\":[]}]}]}", "[true,false,null]", "[\"\t\"]", "[\"\x7f\"]",
			/* how PostgreSQL's jsonb writes 1e300 and -1e20 */
			"[1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
			"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
			"00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
			"0000000000000000, -100000000000000000000]",
		};

		for (size_t i = 0; i < sizeof(fixed) / sizeof(*fixed); i++)
			for (size_t f = 0; f < sizeof(flagsets) / sizeof(*flagsets); f++)
				compare(fixed[i], strlen(fixed[i]), flagsets[f]);
		/* with a NUL byte inside the text itself */
		compare("[\"a\0b\"]", 7, JSON_DECODE_ANY | JSON_ALLOW_NUL);
		compare("[1]\0", 4, 0);
		/* deeper than the fast reader goes: jansson decides */
		{
			char deep[2 * 300 + 1];

			memset(deep, '[', 300);
			memset(deep + 300, ']', 300);
			compare(deep, 600, 0);
		}
	}
	for (long i = 0; i < cases; i++) {
		size_t flags = flagsets[rnd(sizeof(flagsets) / sizeof(*flagsets))];
		size_t before_fast = fast_valid, before_valid = all_valid;

		t.n = 0;
		gen_value(&t, 0);
		compare(t.p, t.n, flags);
		if (flags != JSON_DISABLE_EOF_CHECK && all_valid > before_valid) {
			plain_valid++;
			plain_fast += fast_valid > before_fast;
		}
		mutate(&t);
		compare(t.p, t.n, flags);
	}
	free(t.p);
	printf("json: %zu of %zu valid texts read by the fast reader (%zu of %zu unmutated ones), "
	       "%zu with integers beyond int64 read as reals, %zu disagreements\n",
	       fast_valid, all_valid, plain_fast, plain_valid, big_read, disagreements);
	CHECK(disagreements == 0);
	CHECK(big_read > 0);
	/* The valid texts it leaves to jansson are the rare shapes only. */
	CHECK(plain_fast * 100 >= plain_valid * 90);
	return check_summary("json");
}
