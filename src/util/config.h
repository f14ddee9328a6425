/*
 * config.h - actiond's configuration: defaults, the INI file, flag overrides.
 *
 * The file is INI-style:
 *
 *     [server]
 *     listen = 127.0.0.1:8080
 *     [limits]
 *     max_message = 1MiB
 *     [api_key ci]
 *     org = acme
 *     role = admin
 *     token_hash = <64 hex digits: BLAKE2b-256 of the token, see `actiond hash-token`>
 *
 * Every key is documented in README.md; config_set() is the single place that
 * knows them, so a flag `--set section.key=value` and the file agree.
 */
#ifndef AD_CONFIG_H
#define AD_CONFIG_H

#include "ipkey.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ad_role {
	AD_ROLE_NONE = 0, /* agents carry no role */
	AD_ROLE_MEMBER = 1,
	AD_ROLE_ADMIN = 2,
	AD_ROLE_OWNER = 3,
};

const char *ad_role_name(enum ad_role r);
int ad_role_parse(const char *s); /* -1 if unknown */

struct ad_api_key {
	char *name;
	char *org;
	enum ad_role role;
	uint8_t hash[32]; /* BLAKE2b-256 of the token text */
	bool have_hash;
};

struct ad_config {
	/* [server] */
	char *listen_host;
	int listen_port;
	char *listen_unix;      /* listen = unix:PATH instead of HOST:PORT */
	uint32_t unix_socket_mode; /* its permission bits */
	char *tls_cert;
	char *tls_key;
	int log_level;
	uint32_t heartbeat_timeout_ms; /* close a silent socket with 4000 */
	uint32_t shutdown_timeout_ms;  /* SIGTERM drain deadline */
	bool access_log;               /* a line per HTTP request and WebSocket */
	uint32_t mcp_keepalive_ms;     /* ": ping" on an MCP SSE stream this long silent */

	/* [limits] */
	size_t max_message;      /* WebSocket message / HTTP body, bytes */
	size_t max_preauth_body; /* HTTP body before credentials are known */
	uint32_t max_batch;
	uint32_t max_depth;
	size_t max_queue;        /* per-connection outgoing bytes -> 4008 */
	uint32_t max_conns_per_ip;     /* open WebSockets per address */
	uint32_t max_http_conns_per_ip; /* HTTP connections per address */
	uint32_t header_timeout_ms;    /* to send a request's headers (and body gaps) */
	uint32_t ipv6_prefix;          /* IPv6 peers are counted per this prefix */
	size_t slow_queue_bytes;     /* a queue above this for ... */
	uint32_t slow_queue_time_ms; /* ... this long -> 4008 (0: never) */
	uint32_t max_inflight;   /* calls in flight per connection */
	uint32_t mcp_sessions;   /* MCP sessions per credential */
	uint32_t mcp_streams;    /* open SSE streams per MCP session */
	uint32_t mcp_idle_ms;    /* an MCP session unused this long ends */
	uint32_t mcp_events;     /* SSE events an MCP session keeps for resumption ... */
	size_t mcp_event_bytes;  /* ... and their bytes at most */

	/* [database] */
	char *db_url;            /* libpq conninfo; NULL: embedded cluster */
	char *data_dir;          /* where the embedded cluster lives */
	char *pg_bin;            /* PostgreSQL server binaries */
	char *pg_user;           /* OS user the embedded server runs as (root only) */
	uint32_t db_pool;        /* pipelined connections */
	bool db_fsync;           /* embedded cluster only; off for tests */
	bool db_disabled;        /* no database at all (core tests, benchmarks) */

	/* [modules] */
	char *modules_dir;       /* plugins (*.so) loaded at start; NULL: none */

	/* [security] */
	char *master_key_file;   /* 32-byte key, hex; or ACTIOND_MASTER_KEY */
	char **origins;          /* allowed Origins for cookie sessions */
	size_t n_origins;
	uint32_t session_ttl_ms;
	uint32_t token_ttl_max_ms; /* longest expiry an api token may ask for */
	struct ad_cidr *trusted_proxies; /* peers whose X-Forwarded-For counts */
	size_t n_trusted_proxies;
	char *metrics_token;     /* Bearer token that opens /metrics to anyone */

	/* [rate_limits]: per-method overrides of the specs' limits */
	struct ad_rate_override {
		char *method;
		uint32_t limit;     /* 0: no limit */
		uint32_t window_ms;
	} *rate_overrides;
	size_t n_rate_overrides;

	struct ad_api_key *api_keys;
	size_t n_api_keys;

	/* [module.NAME] sections: settings actiond passes to modules as they are. */
	struct ad_module_setting {
		char *module;
		char *key;
		char *value;
	} *module_settings;
	size_t n_module_settings;
};

/* A module's setting (section [module.NAME]), or NULL. */
const char *ad_config_module_setting(const struct ad_config *c, const char *module,
				     const char *key);

/* Fills c with the defaults. */
void ad_config_init(struct ad_config *c);
void ad_config_free(struct ad_config *c);

/*
 * Reads an INI file (at most 1 MiB) into c.  On error returns -1 and writes
 * "file:line: why" into err ("file: why" when the file cannot be read).
 */
int ad_config_load(struct ad_config *c, const char *path, char *err, size_t errlen);

/*
 * Reads INI text of len bytes (no terminating NUL needed) into c, as
 * ad_config_load() reads a file's contents; name stands for the file in
 * error messages ("name:line: why").  Lines are at most 4095 bytes and hold
 * no NUL byte.  Settings read before an error stay in c (ad_config_free()
 * releases them).  Returns 0, or -1 with the reason in err.
 */
int ad_config_parse(struct ad_config *c, const char *name, const char *text, size_t len,
		    char *err, size_t errlen);

/*
 * Sets one key.  section is "server", "limits", "database", "modules",
 * "security" or "rate_limits" (api keys come only from files).  Returns 0, or -1 with a reason in err.
 */
int ad_config_set(struct ad_config *c, const char *section, const char *key,
		  const char *value, char *err, size_t errlen);

/* Checks cross-field consistency after everything is loaded. */
int ad_config_check(const struct ad_config *c, char *err, size_t errlen);

/* Parsers shared with the command line; they return -1 on malformed input. */
int ad_parse_size(const char *s, size_t *ret);
int ad_parse_duration_ms(const char *s, uint32_t *ret);

#endif
