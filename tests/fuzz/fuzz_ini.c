/*
 * fuzz_ini.c - fuzz driver for the configuration reader (src/util/config.c):
 * the INI text of `actiond -c FILE`, every setting's value parser, and the
 * cross-field checks.
 *
 * An input is the text of a configuration file, read by ad_config_parse()
 * from memory.  Built like fuzz_rpc.c: a libFuzzer target with
 * -Dfuzzing=true, otherwise a corpus replay plus deterministic mutations,
 * run by the test suite.
 *
 * The driver aborts when the reader breaks its contract: an error must read
 * "fuzz.ini:LINE: why" with LINE one of the input's lines, and the lines
 * before it must read without error; a configuration that reads without
 * error must hold every value inside the range its key allows.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t accepted, refused, checked;

static void check_ranges(const struct ad_config *c)
{
	if (!c->listen_host || c->listen_port < 0 || c->listen_port > 65535 ||
	    c->log_level < 0 || c->log_level > 3)
		abort();
	if (c->max_batch < 1 || c->max_batch > 100000 || c->max_depth < 2 ||
	    c->max_depth > 1000 || c->max_conns_per_ip < 1 ||
	    c->max_conns_per_ip > 1000000 || c->max_http_conns_per_ip < 1 ||
	    c->max_http_conns_per_ip > 1000000 || c->header_timeout_ms < 1000 ||
	    c->header_timeout_ms > 3600000 || c->ipv6_prefix < 1 || c->ipv6_prefix > 128 ||
	    c->max_inflight < 1 || c->max_inflight > 100000)
		abort();
	if (!c->data_dir || !c->pg_bin || !c->pg_user || c->db_pool < 1 || c->db_pool > 64 ||
	    (c->modules_dir && !*c->modules_dir))
		abort();
	if (c->n_origins && !c->origins)
		abort();
	for (size_t i = 0; i < c->n_origins; i++)
		if (!c->origins[i] || (strncmp(c->origins[i], "http://", 7) &&
				       strncmp(c->origins[i], "https://", 8)))
			abort();
	for (size_t i = 0; i < c->n_rate_overrides; i++) {
		const struct ad_rate_override *o = &c->rate_overrides[i];

		if (!o->method || (o->limit && (o->limit > 1000000 || !o->window_ms)))
			abort();
	}
	if ((c->n_trusted_proxies && !c->trusted_proxies) ||
	    (!c->n_trusted_proxies && c->trusted_proxies))
		abort();
	if (c->metrics_token) {
		size_t n = strlen(c->metrics_token);

		if (n < 16 || n > 256)
			abort();
		for (const char *q = c->metrics_token; *q; q++)
			if (*q <= ' ' || *q > '~')
				abort();
	}
	for (size_t i = 0; i < c->n_module_settings; i++) {
		const struct ad_module_setting *m = &c->module_settings[i];

		if (!m->module || !*m->module || !m->key || !*m->key || !m->value ||
		    ad_config_module_setting(c, m->module, m->key) != m->value)
			abort();
	}
	for (size_t i = 0; i < c->n_api_keys; i++) {
		const struct ad_api_key *k = &c->api_keys[i];

		if (!k->name || !*k->name || (k->org && !*k->org) || k->role > AD_ROLE_OWNER)
			abort();
		for (size_t j = 0; j < i; j++)
			if (!strcmp(c->api_keys[j].name, k->name))
				abort();
	}
}

/* Checks the form of an error and returns its line number. */
static size_t error_line(const char *err, size_t lines)
{
	static const char prefix[] = "fuzz.ini:";
	char *end;
	unsigned long line;

	if (strncmp(err, prefix, sizeof(prefix) - 1))
		abort();
	line = strtoul(err + sizeof(prefix) - 1, &end, 10);
	if (line < 1 || line > lines || strncmp(end, ": ", 2) || !end[2])
		abort();
	return line;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	struct ad_config c;
	char err[512];
	size_t lines = 1, line, prefix = 0;

	for (size_t i = 0; i < size; i++)
		lines += text[i] == '\n';
	ad_config_init(&c);
	if (ad_config_parse(&c, "fuzz.ini", text, size, err, sizeof(err)) == 0) {
		accepted++;
		check_ranges(&c);
		err[0] = '\0';
		if (ad_config_check(&c, err, sizeof(err)) == 0)
			checked++;
		else if (!err[0])
			abort();
		ad_config_free(&c);
		return 0;
	}
	refused++;
	line = error_line(err, lines);
	ad_config_free(&c);
	/* The reader goes line by line: what came before the bad line reads. */
	for (size_t l = 1; l < line; l++)
		prefix = (size_t)((const char *)memchr(text + prefix, '\n', size - prefix) -
				  text) + 1;
	ad_config_init(&c);
	if (ad_config_parse(&c, "fuzz.ini", text, prefix, err, sizeof(err)))
		abort();
	check_ranges(&c);
	ad_config_free(&c);
	return 0;
}

#ifndef AD_LIBFUZZER
#define FUZZ_NAME "fuzz_ini"

static const char *const fuzz_tokens[] = {
	"\n", "\r\n", "[", "]", "=", " ", "\t", "#", ";", ",", "/", "\\", "\"",
	"[server]\n", "[limits]\n", "[database]\n", "[security]\n", "[modules]\n",
	"[rate_limits]\n", "[api_key k]\n", "[api_key ]\n", "listen = ", "[::1]:",
	"allowed_origins = https://a.example, ", "http://", "token_hash = ",
	"role = owner\n", "org = ", "B", "KiB", "MiB", "GiB", "ms", "s", "m", "h",
	"0", "1", "65536", "4294967295", "18446744073709551616", "-1", "on", "off",
	"1/1s", "off\n", "[module.sample]\n", "[module.]\n", "access_log = ",
	"trusted_proxies = 10.0.0.0/8, ", "::1/128", "metrics_token = ",
	"0123456789abcdef",
};

static void fuzz_report(void)
{
	printf("%zu read (%zu passed the cross-field checks), %zu refused, no failure\n",
	       accepted, checked, refused);
}

#include "replay.h"
#endif
