/*
 * test_buf.c - the JSON writers and the UTF-8 validator of src/buf.c.
 */
#include "buf.h"
#include "check.h"

#include <math.h>
#include <stdlib.h>

static void roundtrip(const char *text)
{
	json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	struct ad_buf b = AD_BUF_INIT;
	json_t *back;

	CHECK(v != NULL);
	ad_buf_json(&b, v);
	back = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	CHECK(back != NULL && json_equal(v, back));
	json_decref(v);
	json_decref(back);
	ad_buf_free(&b);
}

static void real_is(double d, const char *want)
{
	char out[32];

	ad_fmt_real(out, d);
	CHECK_STR(out, want);
}

int main(void)
{
	struct ad_buf b = AD_BUF_INIT;

	/* Reals take the shortest form that reads back exactly. */
	real_is(0.1, "0.1");
	real_is(1.5, "1.5");
	real_is(1e-7, "1e-07");
	real_is(3.0, "3.0");
	real_is(-2.5e300, "-2.5e+300");
	real_is(0.30000000000000004, "0.30000000000000004");
	real_is(NAN, "null");

	ad_buf_int(&b, 0);
	ad_buf_putc(&b, ' ');
	ad_buf_int(&b, -9223372036854775807LL - 1);
	ad_buf_putc(&b, ' ');
	ad_buf_int(&b, 1234567890123LL);
	CHECK_STR(b.data, "0 -9223372036854775808 1234567890123");
	ad_buf_reset(&b);

	/* Strings escape exactly what JSON requires; UTF-8 passes through. */
	ad_buf_json_str(&b, "a\"b\\c\n\x01\x1f\xc3\xa9/", 11);
	CHECK_STR(b.data, "\"a\\\"b\\\\c\\n\\u0001\\u001f\xc3\xa9/\"");
	ad_buf_reset(&b);
	ad_buf_json_str(&b, "x\0y", 3);
	CHECK_STR(b.data, "\"x\\u0000y\"");
	ad_buf_free(&b);

	roundtrip("{\"a\":[1,2.5,\"x\",null,true,false,{}],\"b\":{\"c\":[]}}");
	roundtrip("\"\\u0000 \\ud83d\\ude00 \\t\"");
	roundtrip("[1e300,-0.0,12345678901234567]");

	/* Growth across many appends, and printf. */
	for (int i = 0; i < 10000; i++)
		ad_buf_putc(&b, 'x');
	ad_buf_printf(&b, "%d-%s", 42, "end");
	CHECK(b.len == 10006 && !strcmp(b.data + 10000, "42-end"));
	ad_buf_free(&b);

	/* UTF-8 validity. */
	CHECK(ad_utf8_valid_prefix("abc", 3) == 3);
	CHECK(ad_utf8_valid_prefix("\xc3\xa9", 2) == 2);
	CHECK(ad_utf8_valid_prefix("\xf0\x9f\x98\x80", 4) == 4);
	CHECK(ad_utf8_valid_prefix("a\xff", 2) == 1);
	CHECK(ad_utf8_valid_prefix("\xc0\xaf", 2) == 0);          /* overlong */
	CHECK(ad_utf8_valid_prefix("\xed\xa0\x80", 3) == 0);      /* surrogate */
	CHECK(ad_utf8_valid_prefix("\xf4\x90\x80\x80", 4) == 0);  /* > U+10FFFF */
	CHECK(ad_utf8_valid_prefix("ab\xe2\x82", 4) == 2);        /* truncated */
	return check_summary("buf");
}
