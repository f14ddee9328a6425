/*
 * test_config.c - INI parsing, value parsers and validation of src/config.c.
 */
#include "check.h"
#include "config.h"

#include <stdlib.h>
#include <unistd.h>

static char path[] = "/tmp/actiond-test-config-XXXXXX";

static int load(struct ad_config *c, const char *text, char *err, size_t errlen)
{
	FILE *f = fopen(path, "w");

	fputs(text, f);
	fclose(f);
	ad_config_init(c);
	return ad_config_load(c, path, err, errlen);
}

int main(void)
{
	struct ad_config c;
	char err[256];
	size_t sz;
	uint32_t ms;
	int fd = mkstemp(path);

	close(fd);

	CHECK(ad_parse_size("1MiB", &sz) == 0 && sz == 1048576);
	CHECK(ad_parse_size("64 KiB", &sz) == 0 && sz == 65536);
	CHECK(ad_parse_size("100", &sz) == 0 && sz == 100);
	CHECK(ad_parse_size("1TB", &sz) == -1);
	CHECK(ad_parse_size("-1", &sz) == -1);
	CHECK(ad_parse_size("", &sz) == -1);
	CHECK(ad_parse_duration_ms("60s", &ms) == 0 && ms == 60000);
	CHECK(ad_parse_duration_ms("250ms", &ms) == 0 && ms == 250);
	CHECK(ad_parse_duration_ms("2m", &ms) == 0 && ms == 120000);
	CHECK(ad_parse_duration_ms("5", &ms) == -1); /* a unit is required */
	CHECK(ad_parse_duration_ms("99999999h", &ms) == -1);

	CHECK(load(&c,
		   "# comment\n"
		   "[server]\n"
		   "listen = [::1]:9000\n"
		   "heartbeat_timeout = 30s\n"
		   "\n"
		   "[limits]\n"
		   "  max_batch = 10  \n"
		   "max_message = 512KiB\n"
		   "; another comment\n"
		   "[api_key ci bot]\n"
		   "org = acme\n"
		   "role = member\n"
		   "token_hash = 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
		   err, sizeof(err)) == 0);
	CHECK_STR(c.listen_host, "::1");
	CHECK(c.listen_port == 9000);
	CHECK(c.heartbeat_timeout_ms == 30000);
	CHECK(c.max_batch == 10);
	CHECK(c.max_message == 512 * 1024);
	CHECK(c.n_api_keys == 1);
	CHECK_STR(c.api_keys[0].name, "ci bot");
	CHECK(c.api_keys[0].role == AD_ROLE_MEMBER && c.api_keys[0].hash[31] == 0xff);
	CHECK(ad_config_check(&c, err, sizeof(err)) == 0);
	ad_config_free(&c);

	/* Errors name the file and line. */
	CHECK(load(&c, "[server]\nlisten = 127.0.0.1:8080\nbogus = 1\n", err, sizeof(err)) == -1);
	CHECK(strstr(err, ":3: unknown setting server.bogus") != NULL);
	ad_config_free(&c);
	CHECK(load(&c, "listen = x\n", err, sizeof(err)) == -1);
	CHECK(strstr(err, ":1: setting outside a section") != NULL);
	ad_config_free(&c);
	CHECK(load(&c, "[nope]\n", err, sizeof(err)) == -1);
	ad_config_free(&c);
	CHECK(load(&c, "[server]\nlisten = 127.0.0.1:70000\n", err, sizeof(err)) == -1);
	ad_config_free(&c);
	CHECK(load(&c, "[limits]\nmax_batch = 0\n", err, sizeof(err)) == -1);
	ad_config_free(&c);
	CHECK(load(&c, "[api_key a]\norg = x\n[api_key a]\n", err, sizeof(err)) == -1);
	ad_config_free(&c);
	CHECK(load(&c, "[api_key a]\ntoken_hash = abc\n", err, sizeof(err)) == -1);
	ad_config_free(&c);
	CHECK(load(&c, "[api_key a]\nrole = superuser\n", err, sizeof(err)) == -1);
	ad_config_free(&c);

	/* Cross-field checks. */
	CHECK(load(&c, "[api_key a]\norg = x\n", err, sizeof(err)) == 0);
	CHECK(ad_config_check(&c, err, sizeof(err)) == -1); /* no role, no hash */
	ad_config_free(&c);
	CHECK(load(&c, "[server]\ntls_cert = /x\n", err, sizeof(err)) == 0);
	CHECK(ad_config_check(&c, err, sizeof(err)) == -1);
	ad_config_free(&c);
	CHECK(load(&c, "[limits]\nmax_queue = 1KiB\n", err, sizeof(err)) == 0);
	CHECK(ad_config_check(&c, err, sizeof(err)) == -1);
	ad_config_free(&c);

	/* modules.dir: none by default, a path from [modules], never empty. */
	ad_config_init(&c);
	CHECK(c.modules_dir == NULL);
	ad_config_free(&c);
	CHECK(load(&c, "[modules]\ndir = /opt/actiond/modules\n", err, sizeof(err)) == 0);
	CHECK_STR(c.modules_dir, "/opt/actiond/modules");
	ad_config_free(&c);
	CHECK(load(&c, "[modules]\ndir =\n", err, sizeof(err)) == -1);
	CHECK(strstr(err, "bad value for modules.dir") != NULL);
	ad_config_free(&c);
	CHECK(load(&c, "[modules]\npath = /x\n", err, sizeof(err)) == -1);
	ad_config_free(&c);

	/* From memory: the name stands for the file; the last line needs no break. */
	{
		static const char text[] = "[server]\r\nlisten = 127.0.0.1:9100\r\n"
					   "[limits]\nmax_batch = 7";
		static const char nul[] = "[server]\nlog_level = info\0debug\n";
		char longline[5000];

		ad_config_init(&c);
		CHECK(ad_config_parse(&c, "mem", text, strlen(text), err, sizeof(err)) == 0);
		CHECK(c.listen_port == 9100 && c.max_batch == 7);
		ad_config_free(&c);
		/* Only len bytes are read: the cut value is "1", not "10". */
		ad_config_init(&c);
		CHECK(ad_config_parse(&c, "mem", "[limits]\nmax_batch = 10", 22, err,
				      sizeof(err)) == 0);
		CHECK(c.max_batch == 1);
		ad_config_free(&c);
		ad_config_init(&c);
		CHECK(ad_config_parse(&c, "mem", "[limits]\n\nmax_batch = 0\n", 24, err,
				      sizeof(err)) == -1);
		CHECK(strncmp(err, "mem:3: bad value for limits.max_batch", 37) == 0);
		ad_config_free(&c);
		ad_config_init(&c);
		CHECK(ad_config_parse(&c, "mem", nul, sizeof(nul) - 1, err, sizeof(err)) == -1);
		CHECK_STR(err, "mem:2: NUL byte in the line");
		ad_config_free(&c);
		memset(longline, 'x', sizeof(longline));
		memcpy(longline, "[server]\n#", 10);
		ad_config_init(&c);
		CHECK(ad_config_parse(&c, "mem", longline, sizeof(longline), err,
				      sizeof(err)) == -1);
		CHECK_STR(err, "mem:2: line too long");
		ad_config_free(&c);
		/* 4095 bytes is the longest line taken. */
		ad_config_init(&c);
		CHECK(ad_config_parse(&c, "mem", longline, 9 + 4095, err, sizeof(err)) == 0);
		CHECK(ad_config_parse(&c, "mem", longline, 9 + 4096, err, sizeof(err)) == -1);
		ad_config_free(&c);
	}

	/* A refused origin list leaves the previous one as it was. */
	CHECK(load(&c, "[security]\nallowed_origins = https://a.example, http://b.example\n"
		       "allowed_origins = https://c.example, ftp://d.example\n",
		   err, sizeof(err)) == -1);
	CHECK(strstr(err, ":3: bad value for security.allowed_origins") != NULL);
	CHECK(c.n_origins == 2);
	if (c.n_origins == 2) {
		CHECK_STR(c.origins[0], "https://a.example");
		CHECK_STR(c.origins[1], "http://b.example");
	}
	ad_config_free(&c);
	CHECK(load(&c, "[security]\nallowed_origins = https://a.example\n"
		       "allowed_origins = http://x.example https://y.example\n",
		   err, sizeof(err)) == 0);
	CHECK(c.n_origins == 2);
	ad_config_free(&c);

	/* So does a refused log level. */
	ad_config_init(&c);
	CHECK(ad_config_set(&c, "server", "log_level", "debug", err, sizeof(err)) == 0);
	CHECK(ad_config_set(&c, "server", "log_level", "loud", err, sizeof(err)) == -1);
	CHECK(c.log_level == 3);
	ad_config_free(&c);

	/* A file over 1 MiB is not read. */
	{
		FILE *f = fopen(path, "w");

		for (int i = 0; i < 70000; i++)
			fputs("# sixteen bytes\n", f);
		fclose(f);
		ad_config_init(&c);
		CHECK(ad_config_load(&c, path, err, sizeof(err)) == -1);
		CHECK(strstr(err, ": larger than 1 MiB") != NULL);
		ad_config_free(&c);
	}

	/* The same setter serves --set. */
	ad_config_init(&c);
	CHECK(ad_config_set(&c, "limits", "max_depth", "16", err, sizeof(err)) == 0);
	CHECK(c.max_depth == 16);
	CHECK(c.slow_queue_bytes == 256 << 10 && c.slow_queue_time_ms == 10000);
	CHECK(ad_config_set(&c, "limits", "slow_queue_bytes", "64KiB", err, sizeof(err)) == 0);
	CHECK(ad_config_set(&c, "limits", "slow_queue_time", "1500ms", err, sizeof(err)) == 0);
	CHECK(c.slow_queue_bytes == 64 << 10 && c.slow_queue_time_ms == 1500);
	CHECK(ad_config_set(&c, "limits", "slow_queue_time", "10", err, sizeof(err)) == -1);
	CHECK(ad_config_set(&c, "limits", "max_depth", "x", err, sizeof(err)) == -1);
	ad_config_free(&c);

	unlink(path);
	return check_summary("config");
}
