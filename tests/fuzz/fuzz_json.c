/*
 * fuzz_json.c - fuzz driver for the fast JSON reader (src/util/json.c)
 * against jansson's own.
 *
 * An input's first byte picks the flags (bits 0-3: JSON_DECODE_ANY,
 * JSON_REJECT_DUPLICATES, JSON_ALLOW_NUL, AD_JSON_BIG_AS_REAL); the rest
 * is the text.  Whenever the fast reader gives a value, json_loadb() must
 * give an equal one (same types, bytes and key order) - or, under
 * AD_JSON_BIG_AS_REAL, refuse it only for integers beyond int64 and read it
 * with JSON_DECODE_INT_AS_REAL as a value of the same numbers;
 * ad_json_loadb() must otherwise answer as json_loadb() does, its error
 * text and position included.  Built like
 * fuzz_rpc.c: a libFuzzer target with -Dfuzzing=true, otherwise a corpus
 * replay plus deterministic mutations, run by the test suite.
 */
#include "json.h"
#include "json_same.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t decided, valid;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t bits[] = { JSON_DECODE_ANY, JSON_REJECT_DUPLICATES, JSON_ALLOW_NUL,
				       AD_JSON_BIG_AS_REAL };
	const char *text = (const char *)data + 1;
	size_t flags = 0, n;
	json_error_t e1, e2;
	json_t *fast, *ref, *via;

	if (!size)
		return 0;
	for (int i = 0; i < 4; i++)
		if (data[0] & (1u << i))
			flags |= bits[i];
	n = size - 1;
	fast = ad_json_fast(text, n, flags);
	ref = json_loadb(text, n, flags & ~(size_t)AD_JSON_BIG_AS_REAL, &e1);
	via = ad_json_loadb(text, n, flags, &e2);
	if (fast && !ref) {
		json_t *as_real = (flags & AD_JSON_BIG_AS_REAL)
			? json_loadb(text, n, (flags & ~(size_t)AD_JSON_BIG_AS_REAL) | JSON_DECODE_INT_AS_REAL, NULL)
			: NULL;

		if (!as_real || !json_same_num(fast, as_real))
			abort();
		json_decref(as_real);
	} else if (fast && !json_same(fast, ref)) {
		abort();
	}
	if (!via != !(ref || fast) || (via && !json_same(via, ref ? ref : fast)))
		abort();
	if (!via && (strcmp(e1.text, e2.text) || e1.line != e2.line || e1.column != e2.column ||
		     e1.position != e2.position))
		abort();
	valid += ref != NULL;
	decided += fast != NULL;
	json_decref(fast);
	json_decref(ref);
	json_decref(via);
	return 0;
}

#ifndef AD_LIBFUZZER
#define FUZZ_NAME "fuzz_json"

static const char *const fuzz_tokens[] = {
	"\"", "\\", "\\u", "\\ud800", "\\udc00", "\\u0000", "{", "}", "[", "]", ",", ":",
	"-", "e", "E+", ".", "0", "9223372036854775808", "1e309", "\xc3\xa9", "\xed\xa0\x80",
	"\xf0\x9f\x98\x80", "\xff", "null", "true", "false", " ", "\n",
};

static void fuzz_report(void)
{
	printf("%zu valid, %zu read by the fast reader, no disagreement\n", valid, decided);
}

#include "replay.h"
#endif
