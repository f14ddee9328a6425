/*
 * fuzz_http.c - fuzz driver for the parsers of the HTTP request path
 * (src/transport/reqparse.c): the Authorization, Cookie and
 * Sec-WebSocket-Protocol headers and the query of GET /rpc.
 *
 * An input is lines: the Authorization value, the Cookie value, the
 * Sec-WebSocket-Protocol value, then one decoded query argument per line.
 * Built like fuzz_rpc.c: a libFuzzer target with -Dfuzzing=true, otherwise
 * a corpus replay plus deterministic mutations, run by the test suite.
 *
 * Every span must lie inside the input, a bearer token must be one word,
 * and a GET request that is built must be a JSON object with exactly the
 * members the query named (nothing smuggled in through a value).
 */
#include "reqparse.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t built;

static void in_input(const struct ad_span *s, const char *p, size_t n)
{
	if (s->n && (s->p < p || s->p + s->n > p + n))
		abort();
}

static void check_get(const struct ad_span *args, size_t nargs)
{
	struct ad_buf b = AD_BUF_INIT;
	const char *why;
	bool perr;
	json_t *v, *m;
	size_t expect = 3;

	if (ad_parse_get_rpc(args, nargs, &b, &why, &perr)) {
		if (!why || !*why)
			abort();
		ad_buf_free(&b);
		return;
	}
	v = json_loadb(b.data, b.len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
	if (!v || !json_is_object(v))
		abort();
	m = json_object_get(v, "method");
	if (!json_is_string(m) || !json_object_get(v, "id") ||
	    strcmp(json_string_value(json_object_get(v, "jsonrpc")), "2.0"))
		abort();
	if (json_object_get(v, "params")) {
		json_t *p = json_object_get(v, "params");

		if (!json_is_object(p) && !json_is_array(p))
			abort();
		expect = 4;
	}
	if (json_object_size(v) != expect)
		abort();
	built++;
	json_decref(v);
	ad_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	struct ad_span lines[40], args[32], tok, bearer;
	size_t n = 0, start = 0;

	for (size_t i = 0; i <= size && n < 40; i++)
		if (i == size || p[i] == '\n') {
			lines[n++] = (struct ad_span){ p + start, i - start };
			start = i + 1;
		}
	if (n > 0 && !ad_parse_bearer(lines[0].p, lines[0].n, &tok)) {
		in_input(&tok, p, size);
		if (!tok.n || memchr(tok.p, ' ', tok.n) || memchr(tok.p, '\t', tok.n))
			abort();
	}
	if (n > 1 && ad_parse_cookie(lines[1].p, lines[1].n, "actiond_session", &tok))
		in_input(&tok, p, size);
	if (n > 2) {
		enum ad_subproto r = ad_parse_subprotocols(lines[2].p, lines[2].n, &bearer);

		if (r != AD_SUBPROTO_OK && r != AD_SUBPROTO_NO_V1 && r != AD_SUBPROTO_FOREIGN)
			abort();
		in_input(&bearer, p, size);
	}
	for (size_t i = 3; i < n && i - 3 < 32; i++)
		args[i - 3] = lines[i];
	check_get(args, n > 3 ? (n - 3 < 32 ? n - 3 : 32) : 0);
	return 0;
}

#ifndef AD_LIBFUZZER
#define FUZZ_NAME "fuzz_http"

static const char *const fuzz_tokens[] = {
	"\n", ";", ",", "=", "\"", " ", "\t", "actiond_session=", "actiond.v1",
	"actiond.bearer.", "Bearer ", "params=", "id=", "method=", "{", "}", "[",
	"]", "\\u0000",
};

static void fuzz_report(void)
{
	printf("%zu requests built, no failure\n", built);
}

#include "replay.h"
#endif
