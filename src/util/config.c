/*
 * config.c - defaults, INI parsing and validation of actiond's settings.
 */
#include "config.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *ad_role_name(enum ad_role r)
{
	switch (r) {
	case AD_ROLE_MEMBER: return "member";
	case AD_ROLE_ADMIN: return "admin";
	case AD_ROLE_OWNER: return "owner";
	default: return "none";
	}
}

int ad_role_parse(const char *s)
{
	if (!strcmp(s, "member"))
		return AD_ROLE_MEMBER;
	if (!strcmp(s, "admin"))
		return AD_ROLE_ADMIN;
	if (!strcmp(s, "owner"))
		return AD_ROLE_OWNER;
	return -1;
}

void ad_config_init(struct ad_config *c)
{
	memset(c, 0, sizeof(*c));
	c->listen_host = strdup("127.0.0.1");
	c->listen_port = 8080;
	c->unix_socket_mode = 0660;
	c->log_level = AD_LOG_INFO;
	c->heartbeat_timeout_ms = 60000;
	c->shutdown_timeout_ms = 10000;
	c->access_log = true;
	c->max_message = 1 << 20;
	c->max_preauth_body = 16 << 10;
	c->max_batch = 100;
	c->max_depth = 64;
	c->max_queue = 4 << 20;
	c->slow_queue_bytes = 256 << 10;
	c->slow_queue_time_ms = 10000;
	c->max_conns_per_ip = 1000;
	c->max_http_conns_per_ip = 256;
	c->header_timeout_ms = 5000;
	c->ipv6_prefix = 64;
	c->max_inflight = 256;
	c->mcp_sessions = 16;
	c->mcp_streams = 4;
	c->mcp_idle_ms = 30 * 60 * 1000;
	c->mcp_events = 256;
	c->mcp_event_bytes = 1 << 20;
	c->mcp_keepalive_ms = 15000;
	c->data_dir = strdup("data");
	c->pg_bin = strdup("/usr/lib/postgresql/15/bin");
	c->pg_user = strdup("postgres");
	c->db_pool = 4;
	c->db_fsync = true;
	c->session_ttl_ms = 12u * 3600 * 1000;
	c->token_ttl_max_ms = UINT32_MAX;
}

void ad_config_free(struct ad_config *c)
{
	free(c->listen_host);
	free(c->listen_unix);
	free(c->tls_cert);
	free(c->tls_key);
	free(c->db_url);
	free(c->data_dir);
	free(c->pg_bin);
	free(c->pg_user);
	free(c->master_key_file);
	free(c->modules_dir);
	for (size_t i = 0; i < c->n_rate_overrides; i++)
		free(c->rate_overrides[i].method);
	free(c->rate_overrides);
	for (size_t i = 0; i < c->n_origins; i++)
		free(c->origins[i]);
	free(c->origins);
	free(c->trusted_proxies);
	if (c->metrics_token)
		memset(c->metrics_token, 0, strlen(c->metrics_token));
	free(c->metrics_token);
	for (size_t i = 0; i < c->n_api_keys; i++) {
		free(c->api_keys[i].name);
		free(c->api_keys[i].org);
	}
	free(c->api_keys);
	for (size_t i = 0; i < c->n_module_settings; i++) {
		free(c->module_settings[i].module);
		free(c->module_settings[i].key);
		free(c->module_settings[i].value);
	}
	free(c->module_settings);
	memset(c, 0, sizeof(*c));
}

/*
 * What the last parser that failed expected, for the error message ("bad
 * value for x.y: \"v\" (hint)").  Set by the parsers, read by
 * ad_config_set() on the main thread, before anything else runs.
 */
static const char *hint;

/* Reads a decimal number; *unit gets what follows it, spaces skipped. */
static int number_and_unit(const char *s, unsigned long long *v, const char **unit)
{
	char *end;

	errno = 0;
	if (!isdigit((unsigned char)*s))
		return -1;
	*v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	while (*end == ' ')
		end++;
	*unit = end;
	return 0;
}

int ad_parse_size(const char *s, size_t *ret)
{
	unsigned long long v, mul;
	const char *u;

	hint = "a size: a number with an optional unit B, KiB, MiB or GiB, e.g. 4MiB";
	if (number_and_unit(s, &v, &u))
		return -1;
	if (!*u || !strcasecmp(u, "B"))
		mul = 1;
	else if (!strcasecmp(u, "KiB") || !strcasecmp(u, "K"))
		mul = 1ull << 10;
	else if (!strcasecmp(u, "MiB") || !strcasecmp(u, "M"))
		mul = 1ull << 20;
	else if (!strcasecmp(u, "GiB") || !strcasecmp(u, "G"))
		mul = 1ull << 30;
	else
		return -1;
	if (v > SIZE_MAX / mul)
		return -1;
	*ret = (size_t)(v * mul);
	return 0;
}

int ad_parse_duration_ms(const char *s, uint32_t *ret)
{
	unsigned long long v, mul;
	const char *u;

	hint = "a duration with a unit: ms, s, m or h, e.g. 30s";
	if (number_and_unit(s, &v, &u))
		return -1;
	if (!strcmp(u, "ms"))
		mul = 1;
	else if (!strcmp(u, "s"))
		mul = 1000;
	else if (!strcmp(u, "m") || !strcmp(u, "min"))
		mul = 60000;
	else if (!strcmp(u, "h"))
		mul = 3600000;
	else
		return -1; /* a bare number is ambiguous: demand a unit */
	if (v > UINT32_MAX / mul)
		return -1;
	*ret = (uint32_t)(v * mul);
	return 0;
}

static int parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *ret)
{
	static char range[64];
	char *end;
	unsigned long v;

	snprintf(range, sizeof(range), "a whole number from %u to %u", min, max);
	hint = range;
	errno = 0;
	if (!isdigit((unsigned char)*s))
		return -1;
	v = strtoul(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*ret = (uint32_t)v;
	return 0;
}

static int parse_bool(const char *s, bool *ret)
{
	hint = "on or off";
	if (!strcmp(s, "on") || !strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "1"))
		*ret = true;
	else if (!strcmp(s, "off") || !strcmp(s, "false") || !strcmp(s, "no") ||
		 !strcmp(s, "0"))
		*ret = false;
	else
		return -1;
	return 0;
}

/*
 * A comma-separated list of origins such as https://app.example.com.  The
 * list replaces the one in c only if every entry is good.
 */
static int parse_origins(struct ad_config *c, const char *v)
{
	char *copy = strdup(v), *save = NULL, **list = NULL;
	size_t n = 0;
	int ret = -1;

	hint = "comma-separated origins such as https://app.example.com";
	if (!copy)
		return -1;
	for (char *t = strtok_r(copy, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
		char **o;

		if (strncmp(t, "http://", 7) && strncmp(t, "https://", 8))
			goto out;
		if (!(o = realloc(list, (n + 1) * sizeof(*o))))
			goto out;
		list = o;
		if (!(list[n] = strdup(t)))
			goto out;
		n++;
	}
	for (size_t i = 0; i < c->n_origins; i++)
		free(c->origins[i]);
	free(c->origins);
	c->origins = list;
	c->n_origins = n;
	list = NULL;
	n = 0;
	ret = 0;
out:
	for (size_t i = 0; i < n; i++)
		free(list[i]);
	free(list);
	free(copy);
	return ret;
}

/* A comma-separated list of addresses and CIDR ranges, IPv4 or IPv6. */
static int parse_proxies(struct ad_config *c, const char *v)
{
	char *copy = strdup(v), *save = NULL;
	struct ad_cidr *list = NULL;
	size_t n = 0;

	hint = "comma-separated addresses or CIDR ranges, e.g. 10.0.0.0/8, ::1, or unix";
	if (!copy)
		return -1;
	for (char *t = strtok_r(copy, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
		struct ad_cidr *l = realloc(list, (n + 1) * sizeof(*l));

		/* Peers on the Unix socket have no address: they are "::". */
		if (l && !strcmp(t, "unix"))
			t = (char *)"::/128";
		if (!l || ad_cidr_parse(t, &l[n])) {
			free(l ? l : list);
			free(copy);
			return -1;
		}
		list = l;
		n++;
	}
	free(copy);
	free(c->trusted_proxies);
	c->trusted_proxies = list;
	c->n_trusted_proxies = n;
	return 0;
}

/* "N/DURATION" (e.g. 100/1m) or "off". */
static int add_rate_override(struct ad_config *c, const char *method, const char *v)
{
	struct ad_rate_override o = { 0 }, *arr;
	const char *slash = strchr(v, '/');
	char num[16];

	if (strcmp(v, "off") != 0) {
		hint = "N/DURATION, e.g. 100/1m, or off";
		if (!slash || (size_t)(slash - v) >= sizeof(num))
			return -1;
		memcpy(num, v, (size_t)(slash - v));
		num[slash - v] = '\0';
		if (parse_u32(num, 1, 1000000, &o.limit) ||
		    ad_parse_duration_ms(slash + 1, &o.window_ms) || !o.window_ms)
			return -1;
	}
	arr = realloc(c->rate_overrides, (c->n_rate_overrides + 1) * sizeof(*arr));
	if (!arr)
		return -1;
	c->rate_overrides = arr; /* the old array may be gone already */
	if (!(o.method = strdup(method)))
		return -1;
	arr[c->n_rate_overrides++] = o;
	return 0;
}

static int set_str(char **dst, const char *v)
{
	char *p = strdup(v);

	if (!p)
		return -1;
	free(*dst);
	*dst = p;
	return 0;
}

static int parse_listen(struct ad_config *c, const char *v)
{
	const char *colon = strrchr(v, ':');
	uint32_t port;
	char host[256];
	size_t hl;

	hint = "HOST:PORT (e.g. 127.0.0.1:8080, [::1]:8080) or unix:/absolute/path";
	if (!strncmp(v, "unix:", 5)) {
		/* sun_path holds 108 bytes with its NUL */
		if (v[5] != '/' || strlen(v + 5) > 107)
			return -1;
		return set_str(&c->listen_unix, v + 5);
	}
	free(c->listen_unix);
	c->listen_unix = NULL;
	if (!colon || parse_u32(colon + 1, 0, 65535, &port))
		return -1;
	hl = (size_t)(colon - v);
	if (hl == 0 || hl >= sizeof(host))
		return -1;
	memcpy(host, v, hl);
	host[hl] = '\0';
	if (host[0] == '[' && host[hl - 1] == ']') { /* [::1]:8080 */
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	if (set_str(&c->listen_host, host))
		return -1;
	c->listen_port = (int)port;
	return 0;
}

/* Keeps module's setting key = v (the last one wins). */
static int module_setting_add(struct ad_config *c, const char *module, size_t mlen,
			      const char *key, const char *v)
{
	struct ad_module_setting *arr, *m;

	hint = "[module.NAME] sections hold NAME's own settings (key = value)";
	if (!mlen || !*key || mlen > 64 || strlen(key) > 64 || strlen(v) > 4096)
		return -1;
	for (size_t i = 0; i < c->n_module_settings; i++) {
		m = &c->module_settings[i];
		if (strlen(m->module) == mlen && !strncmp(m->module, module, mlen) &&
		    !strcmp(m->key, key))
			return set_str(&m->value, v);
	}
	if (c->n_module_settings >= 1024)
		return -1;
	arr = realloc(c->module_settings, (c->n_module_settings + 1) * sizeof(*arr));
	if (!arr)
		return -1;
	c->module_settings = arr;
	m = &arr[c->n_module_settings];
	m->module = strndup(module, mlen);
	m->key = strdup(key);
	m->value = strdup(v);
	if (!m->module || !m->key || !m->value) {
		free(m->module);
		free(m->key);
		free(m->value);
		return -1;
	}
	c->n_module_settings++;
	return 0;
}

const char *ad_config_module_setting(const struct ad_config *c, const char *module,
				     const char *key)
{
	for (size_t i = 0; c && i < c->n_module_settings; i++)
		if (!strcmp(c->module_settings[i].module, module) &&
		    !strcmp(c->module_settings[i].key, key))
			return c->module_settings[i].value;
	return NULL;
}

int ad_config_set(struct ad_config *c, const char *section, const char *key,
		  const char *v, char *err, size_t errlen)
{
	int r = -1;

	hint = NULL;
#define KEY(s, k) (!strcmp(section, s) && !strcmp(key, k))
	if (KEY("server", "listen"))
		r = parse_listen(c, v);
	else if (KEY("server", "unix_socket_mode")) {
		char *end;
		unsigned long m;

		hint = "octal permission bits, e.g. 0660";
		errno = 0;
		m = strtoul(v, &end, 8);
		r = (*v >= '0' && *v <= '7' && !*end && !errno && m <= 0777) ? 0 : -1;
		if (!r)
			c->unix_socket_mode = (uint32_t)m;
	} else if (KEY("server", "tls_cert"))
		r = set_str(&c->tls_cert, v);
	else if (KEY("server", "tls_key"))
		r = set_str(&c->tls_key, v);
	else if (KEY("server", "log_level")) {
		int level = ad_log_level_parse(v);

		hint = "error, warn, info or debug";
		if (level >= 0)
			c->log_level = level;
		r = level < 0 ? -1 : 0;
	} else if (KEY("server", "heartbeat_timeout"))
		r = ad_parse_duration_ms(v, &c->heartbeat_timeout_ms);
	else if (KEY("server", "shutdown_timeout"))
		r = ad_parse_duration_ms(v, &c->shutdown_timeout_ms);
	else if (KEY("server", "access_log"))
		r = parse_bool(v, &c->access_log);
	else if (KEY("server", "mcp_keepalive"))
		r = ad_parse_duration_ms(v, &c->mcp_keepalive_ms) || c->mcp_keepalive_ms < 1000 ? -1 : 0;
	else if (KEY("limits", "max_message"))
		r = ad_parse_size(v, &c->max_message);
	else if (KEY("limits", "max_preauth_body"))
		r = ad_parse_size(v, &c->max_preauth_body);
	else if (KEY("limits", "max_queue"))
		r = ad_parse_size(v, &c->max_queue);
	else if (KEY("limits", "slow_queue_bytes"))
		r = ad_parse_size(v, &c->slow_queue_bytes);
	else if (KEY("limits", "slow_queue_time"))
		r = ad_parse_duration_ms(v, &c->slow_queue_time_ms);
	else if (KEY("limits", "max_batch"))
		r = parse_u32(v, 1, 100000, &c->max_batch);
	else if (KEY("limits", "max_depth"))
		r = parse_u32(v, 2, 1000, &c->max_depth);
	else if (KEY("limits", "max_conns_per_ip"))
		r = parse_u32(v, 1, 1000000, &c->max_conns_per_ip);
	else if (KEY("limits", "max_http_conns_per_ip"))
		r = parse_u32(v, 1, 1000000, &c->max_http_conns_per_ip);
	else if (KEY("limits", "header_timeout"))
		r = ad_parse_duration_ms(v, &c->header_timeout_ms) ||
		    c->header_timeout_ms < 1000 || c->header_timeout_ms > 3600000 ? -1 : 0;
	else if (KEY("limits", "ipv6_prefix"))
		r = parse_u32(v, 1, 128, &c->ipv6_prefix);
	else if (KEY("limits", "max_inflight"))
		r = parse_u32(v, 1, 100000, &c->max_inflight);
	else if (KEY("limits", "mcp_sessions"))
		r = parse_u32(v, 1, 100000, &c->mcp_sessions);
	else if (KEY("limits", "mcp_streams"))
		r = parse_u32(v, 1, 1000, &c->mcp_streams);
	else if (KEY("limits", "mcp_idle"))
		r = ad_parse_duration_ms(v, &c->mcp_idle_ms) || c->mcp_idle_ms < 1000 ? -1 : 0;
	else if (KEY("limits", "mcp_events"))
		r = parse_u32(v, 1, 100000, &c->mcp_events);
	else if (KEY("limits", "mcp_event_bytes"))
		r = ad_parse_size(v, &c->mcp_event_bytes) || c->mcp_event_bytes < 1024 ? -1 : 0;
	else if (KEY("database", "url"))
		r = set_str(&c->db_url, v);
	else if (KEY("database", "data_dir"))
		r = set_str(&c->data_dir, v);
	else if (KEY("database", "postgres_bin"))
		r = set_str(&c->pg_bin, v);
	else if (KEY("database", "run_as"))
		r = set_str(&c->pg_user, v);
	else if (KEY("database", "pool_size"))
		r = parse_u32(v, 1, 64, &c->db_pool);
	else if (KEY("database", "fsync"))
		r = parse_bool(v, &c->db_fsync);
	else if (KEY("modules", "dir"))
		r = *v ? set_str(&c->modules_dir, v) : -1;
	else if (KEY("security", "master_key_file"))
		r = set_str(&c->master_key_file, v);
	else if (KEY("security", "allowed_origins"))
		r = parse_origins(c, v);
	else if (KEY("security", "session_ttl"))
		r = ad_parse_duration_ms(v, &c->session_ttl_ms);
	else if (KEY("security", "trusted_proxies"))
		r = parse_proxies(c, v);
	else if (KEY("security", "metrics_token")) {
		hint = "16 to 256 bytes of printable ASCII without spaces";
		r = strlen(v) < 16 || strlen(v) > 256 ? -1 : 0;
		for (const char *q = v; !r && *q; q++)
			if (*q <= ' ' || *q > '~')
				r = -1;
		if (!r)
			r = set_str(&c->metrics_token, v);
		if (r) {
			/* A secret: the message names the key, never the value. */
			snprintf(err, errlen, "bad value for security.metrics_token (expected %s)",
				 hint);
			return -1;
		}
	}
	else if (!strcmp(section, "rate_limits"))
		r = add_rate_override(c, key, v);
	else if (!strncmp(section, "module.", 7))
		r = module_setting_add(c, section + 7, strlen(section + 7), key, v);
	else if (!strcmp(section, "module") && strchr(key, '.'))
		/* -s module.NAME.KEY=VALUE */
		r = module_setting_add(c, key, (size_t)(strchr(key, '.') - key),
				       strchr(key, '.') + 1, v);
	else if (KEY("database", "enabled")) {
		bool on;

		if ((r = parse_bool(v, &on)) == 0)
			c->db_disabled = !on;
	} else {
		snprintf(err, errlen, "unknown setting %s.%s", section, key);
		return -1;
	}
#undef KEY
	if (r)
		snprintf(err, errlen, "bad value for %s.%s: \"%s\"%s%s%s", section, key, v,
			 hint ? " (expected " : "", hint ? hint : "", hint ? ")" : "");
	return r;
}

static int hex_decode(const char *hex, uint8_t *out, size_t n)
{
	if (strlen(hex) != n * 2)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned v;

		if (!isxdigit((unsigned char)hex[2 * i]) ||
		    !isxdigit((unsigned char)hex[2 * i + 1]) ||
		    sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (uint8_t)v;
	}
	return 0;
}

static int set_api_key(struct ad_api_key *k, const char *key, const char *v)
{
	int role;

	if (!strcmp(key, "org"))
		return *v ? set_str(&k->org, v) : -1;
	if (!strcmp(key, "role")) {
		if ((role = ad_role_parse(v)) < 0)
			return -1;
		k->role = (enum ad_role)role;
		return 0;
	}
	if (!strcmp(key, "token_hash")) {
		if (hex_decode(v, k->hash, sizeof(k->hash)))
			return -1;
		k->have_hash = true;
		return 0;
	}
	return -2;
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int api_key_add(struct ad_config *c, const char *name)
{
	struct ad_api_key *k;

	for (size_t i = 0; i < c->n_api_keys; i++)
		if (!strcmp(c->api_keys[i].name, name))
			return -1;
	k = realloc(c->api_keys, (c->n_api_keys + 1) * sizeof(*k));
	if (!k)
		return -1;
	c->api_keys = k;
	k = &c->api_keys[c->n_api_keys];
	memset(k, 0, sizeof(*k));
	if (!(k->name = strdup(name)))
		return -1;
	c->n_api_keys++;
	return 0;
}

/* The longest line the reader takes, without its line break. */
#define LINE_MAX_LEN 4095

int ad_config_parse(struct ad_config *c, const char *name, const char *text, size_t len,
		    char *err, size_t errlen)
{
	char line[LINE_MAX_LEN + 1], section[64] = "", why[256];
	struct ad_api_key *key = NULL;
	size_t lineno = 0, pos = 0;

	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t n = (nl ? (size_t)(nl - text) : len) - pos;
		char *s, *eq, *k, *v;

		lineno++;
		if (n > LINE_MAX_LEN) {
			snprintf(why, sizeof(why), "line too long");
			goto bad;
		}
		if (memchr(text + pos, '\0', n)) {
			snprintf(why, sizeof(why), "NUL byte in the line");
			goto bad;
		}
		memcpy(line, text + pos, n);
		line[n] = '\0';
		pos += n + 1;
		s = trim(line);
		if (!*s || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			char *end = strchr(s, ']'), *kname;

			if (!end || end[1]) {
				snprintf(why, sizeof(why), "malformed section header");
				goto bad;
			}
			*end = '\0';
			s = trim(s + 1);
			key = NULL;
			if (!strncmp(s, "api_key", 7) && isspace((unsigned char)s[7])) {
				kname = trim(s + 7);
				if (!*kname || api_key_add(c, kname)) {
					snprintf(why, sizeof(why),
						 "api_key needs a unique name");
					goto bad;
				}
				key = &c->api_keys[c->n_api_keys - 1];
				snprintf(section, sizeof(section), "api_key");
			} else if (!strcmp(s, "server") || !strcmp(s, "limits") ||
				   !strcmp(s, "database") || !strcmp(s, "security") ||
				   !strcmp(s, "modules") ||
				   !strcmp(s, "rate_limits") ||
				   (!strncmp(s, "module.", 7) && s[7] &&
				    strlen(s) < sizeof(section))) {
				snprintf(section, sizeof(section), "%s", s);
			} else {
				snprintf(why, sizeof(why), "unknown section [%s]", s);
				goto bad;
			}
			continue;
		}
		if (!(eq = strchr(s, '='))) {
			snprintf(why, sizeof(why), "expected key = value");
			goto bad;
		}
		*eq = '\0';
		k = trim(s);
		v = trim(eq + 1);
		if (!*section) {
			snprintf(why, sizeof(why), "setting outside a section");
			goto bad;
		}
		if (key) {
			int r = set_api_key(key, k, v);

			if (r == -2)
				snprintf(why, sizeof(why), "unknown api_key setting %s", k);
			else if (r)
				snprintf(why, sizeof(why), "bad value for api_key %s", k);
			if (r)
				goto bad;
			continue;
		}
		if (ad_config_set(c, section, k, v, why, sizeof(why)))
			goto bad;
	}
	return 0;
bad:
	snprintf(err, errlen, "%s:%zu: %s", name, lineno, why);
	return -1;
}

/* Configuration files are small; this bounds what a wrong -c can cost. */
#define FILE_MAX_LEN (1 << 20)

int ad_config_load(struct ad_config *c, const char *path, char *err, size_t errlen)
{
	char *text = NULL;
	size_t len = 0, cap = 0;
	int ret = -1;
	FILE *f;

	if (!(f = fopen(path, "re"))) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (!feof(f) && !ferror(f) && len <= FILE_MAX_LEN) {
		if (len == cap) {
			char *t = realloc(text, cap + 65536);

			if (!t) {
				snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
				goto out;
			}
			text = t;
			cap += 65536;
		}
		len += fread(text + len, 1, cap - len, f);
	}
	if (ferror(f))
		snprintf(err, errlen, "%s: read error", path);
	else if (len > FILE_MAX_LEN)
		snprintf(err, errlen, "%s: larger than 1 MiB", path);
	else
		ret = ad_config_parse(c, path, text ? text : "", len, err, errlen);
out:
	free(text);
	fclose(f);
	return ret;
}

int ad_config_check(const struct ad_config *c, char *err, size_t errlen)
{
	if (!!c->tls_cert != !!c->tls_key) {
		snprintf(err, errlen, "tls_cert and tls_key go together");
		return -1;
	}
	for (size_t i = 0; i < c->n_api_keys; i++) {
		const struct ad_api_key *k = &c->api_keys[i];

		if (!k->org || !k->role || !k->have_hash) {
			snprintf(err, errlen,
				 "api_key %s needs org, role and token_hash", k->name);
			return -1;
		}
	}
	if (c->max_preauth_body > c->max_message) {
		snprintf(err, errlen, "max_preauth_body exceeds max_message");
		return -1;
	}
	if (c->max_queue < 2 * c->max_message) {
		snprintf(err, errlen, "max_queue must be at least twice max_message");
		return -1;
	}
	return 0;
}
