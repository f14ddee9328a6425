/*
 * main.c - command line, configuration and start-up of actiond.
 */
#include "builtin.h"
#include "audit_cmd.h"
#include "auth.h"
#include "bootstrap.h"
#include "cluster.h"
#include "config.h"
#include "console.h"
#include "embedded.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "http.h"
#include "loop.h"
#include "migrate.h"
#include "module.h"
#include "openrpc.h"
#include "plugins.h"
#include "ratelimit.h"
#include "server.h"
#include "spec.h"
#include "worker.h"

#include <getopt.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: actiond [OPTIONS]\n"
		"       actiond hash-token     < TOKEN   print the token_hash of a token\n"
		"       actiond gen-token                print a new random token and its hash\n"
		"       actiond [-c FILE] bootstrap --org SLUG [--org-name NAME] --email EMAIL\n"
		"                                        [--password-stdin]\n"
		"                                        create the first org, its owner, an API\n"
		"                                        token and an agent token, and print them\n"
		"       actiond [-c FILE] audit verify [--org SLUG]\n"
		"                                        check the invocation event chain of every\n"
		"                                        org (or one) in the database; exit 1 if\n"
		"                                        one is broken, naming its first broken link\n"
		"\n"
		"A JSON-RPC 2.0 action gateway over WebSocket (GET /ws) and HTTP (/rpc).\n"
		"Without database.url it creates and runs its own PostgreSQL 15 cluster in\n"
		"database.data_dir (default ./data); database.enabled=off runs without one.\n"
		"modules.dir (e.g. -s modules.dir=DIR) loads the plugins (*.so) of DIR at\n"
		"start; see docs/modules.md.\n"
		"\n"
		"Options:\n"
		"  -c, --config FILE        read settings from an INI file (see README.md)\n"
		"  -l, --listen HOST:PORT   address to listen on (default 127.0.0.1:8080),\n"
		"                           or unix:/PATH for a Unix socket\n"
		"      --tls-cert FILE      serve wss/https with this certificate (PEM)...\n"
		"      --tls-key FILE       ...and this private key (PEM)\n"
		"      --log-level LEVEL    error, warn, info (default) or debug\n"
		"  -s, --set SECTION.KEY=VALUE\n"
		"                           override one setting, e.g. -s limits.max_batch=50\n"
		"      --check-config       load everything, report problems, and exit\n"
		"  -h, --help               show this help and exit\n"
		"  -V, --version            show the version and exit\n"
		"\n"
		"Limits against hostile peers (all in README.md), for example:\n"
		"  -s limits.header_timeout=5s         time to send a request's headers\n"
		"  -s limits.max_http_conns_per_ip=256 HTTP connections per address\n"
		"  -s limits.ipv6_prefix=64            IPv6 peers count per this prefix\n"
		"  -s security.trusted_proxies=10.0.0.0/8,::1\n"
		"                                      peers whose X-Forwarded-For names the client\n"
		"  -s security.metrics_token=TOKEN     /metrics for this Bearer token from anywhere\n"
		"                                      (without it: loopback clients only)\n"
		"  -s server.access_log=off            no access lines (on by default, at info)\n"
		"\n"
		"Signals: SIGTERM or SIGINT drain in-flight calls, close sockets with\n"
		"1001, and exit 0.\n");
}

static void print_hex(const uint8_t *h, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("%02x", h[i]);
}

static int cmd_hash_token(void)
{
	char tok[AD_TOKEN_MAX + 2];
	size_t n = fread(tok, 1, sizeof(tok), stdin);
	uint8_t h[32];

	while (n && (tok[n - 1] == '\n' || tok[n - 1] == '\r'))
		n--;
	if (n == 0 || n > AD_TOKEN_MAX) {
		fprintf(stderr, "actiond: expected a token of 1..%d bytes on stdin\n",
			AD_TOKEN_MAX);
		return 2;
	}
	ad_token_hash(tok, n, h);
	print_hex(h, 32);
	printf("\n");
	return 0;
}

static int cmd_gen_token(void)
{
	unsigned char raw[32];
	char tok[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
	uint8_t h[32];

	randombytes_buf(raw, sizeof(raw));
	sodium_bin2base64(tok, sizeof(tok), raw, sizeof(raw),
			  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	ad_token_hash(tok, strlen(tok), h);
	printf("token=%s\ntoken_hash=", tok);
	print_hex(h, 32);
	printf("\n");
	return 0;
}

static int set_flag(struct ad_config *c, const char *section, const char *key,
		    const char *value)
{
	char err[256];

	if (ad_config_set(c, section, key, value, err, sizeof(err))) {
		fprintf(stderr, "actiond: %s\n", err);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	enum { OPT_TLS_CERT = 256, OPT_TLS_KEY, OPT_LOG_LEVEL, OPT_CHECK };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "listen", required_argument, NULL, 'l' },
		{ "tls-cert", required_argument, NULL, OPT_TLS_CERT },
		{ "tls-key", required_argument, NULL, OPT_TLS_KEY },
		{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
		{ "set", required_argument, NULL, 's' },
		{ "check-config", no_argument, NULL, OPT_CHECK },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct ad_config *cfg = &ad_srv.cfg;
	const char *config_path = NULL;
	char err[512];
	bool check_only = false;
	struct ad_bootstrap_opts boot = { 0 };
	bool bootstrap = false;
	bool audit = false;
	const char *audit_org = NULL;
	char pwline[300];
	int opt, status, n;

	if (sodium_init() < 0) {
		fprintf(stderr, "actiond: libsodium failed to initialise\n");
		return 1;
	}
	if (argc > 1 && !strcmp(argv[1], "hash-token"))
		return cmd_hash_token();
	if (argc > 1 && !strcmp(argv[1], "gen-token"))
		return cmd_gen_token();

	/* "bootstrap" and its own options may follow the usual options. */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "bootstrap") != 0)
			continue;
		bootstrap = true;
		for (int k = i + 1; k < argc; k++) {
			if (!strcmp(argv[k], "--org") && k + 1 < argc)
				boot.org = argv[++k];
			else if (!strcmp(argv[k], "--org-name") && k + 1 < argc)
				boot.org_name = argv[++k];
			else if (!strcmp(argv[k], "--email") && k + 1 < argc)
				boot.email = argv[++k];
			else if (!strcmp(argv[k], "--password-stdin")) {
				if (!fgets(pwline, sizeof(pwline), stdin))
					pwline[0] = '\0';
				pwline[strcspn(pwline, "\r\n")] = '\0';
				boot.password = pwline;
			} else {
				fprintf(stderr, "actiond bootstrap: unexpected \"%s\"\n", argv[k]);
				return 2;
			}
		}
		argc = i; /* getopt sees only what came before */
		break;
	}
	/* So may "audit verify" and its own. */
	for (int i = 1; !bootstrap && i < argc; i++) {
		if (strcmp(argv[i], "audit") != 0)
			continue;
		if (i + 1 >= argc || strcmp(argv[i + 1], "verify") != 0) {
			fprintf(stderr, "actiond audit: the command is \"audit verify [--org SLUG]\"\n");
			return 2;
		}
		audit = true;
		for (int k = i + 2; k < argc; k++) {
			if (!strcmp(argv[k], "--org") && k + 1 < argc) {
				audit_org = argv[++k];
			} else {
				fprintf(stderr, "actiond audit verify: unexpected \"%s\"\n", argv[k]);
				return 2;
			}
		}
		argc = i;
		break;
	}
	if (bootstrap && (!boot.org || !boot.email)) {
		fprintf(stderr, "actiond bootstrap: --org and --email are required\n");
		return 2;
	}
	ad_config_init(cfg);
	ad_cfg = cfg;
	/* The file is read first so that flags override it, whatever order. */
	for (int i = 1; i < argc - 1; i++)
		if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config"))
			config_path = argv[i + 1];
	for (int i = 1; i < argc; i++)
		if (!strncmp(argv[i], "--config=", 9))
			config_path = argv[i] + 9;
	if (config_path && ad_config_load(cfg, config_path, err, sizeof(err))) {
		fprintf(stderr, "actiond: %s\n", err);
		return 2;
	}
	while ((opt = getopt_long(argc, argv, "c:l:s:hV", opts, NULL)) != -1) {
		char *dot, *eq;

		switch (opt) {
		case 'c':
			break;
		case 'l':
			if (set_flag(cfg, "server", "listen", optarg))
				return 2;
			break;
		case OPT_TLS_CERT:
			if (set_flag(cfg, "server", "tls_cert", optarg))
				return 2;
			break;
		case OPT_TLS_KEY:
			if (set_flag(cfg, "server", "tls_key", optarg))
				return 2;
			break;
		case OPT_LOG_LEVEL:
			if (set_flag(cfg, "server", "log_level", optarg))
				return 2;
			break;
		case 's':
			dot = strchr(optarg, '.');
			eq = strchr(optarg, '=');
			if (!dot || !eq || eq < dot) {
				fprintf(stderr, "actiond: --set wants SECTION.KEY=VALUE\n");
				return 2;
			}
			*dot = *eq = '\0';
			if (set_flag(cfg, optarg, dot + 1, eq + 1))
				return 2;
			break;
		case OPT_CHECK:
			check_only = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
#ifdef NDEBUG
			printf("actiond %s\n", ACTIOND_VERSION);
#else
			printf("actiond %s (debug build: results checked against their schemas)\n",
			       ACTIOND_VERSION);
#endif
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "actiond: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (ad_config_check(cfg, err, sizeof(err))) {
		fprintf(stderr, "actiond: %s\n", err);
		return 2;
	}
	ad_log_level = (enum ad_log_level)cfg->log_level;

	if (ad_specs_init(err, sizeof(err))) {
		fprintf(stderr, "actiond: protocol: %s\n", err);
		return 2;
	}
	for (const struct ad_module_info *const *m = ad_builtin_modules; *m; m++) {
		if (ad_module_load(*m, "built-in", err, sizeof(err))) {
			fprintf(stderr, "actiond: built-in module %s: %s\n", (*m)->name, err);
			ad_modules_fini();
			ad_specs_free();
			return 2;
		}
	}
	/*
	 * Plugins register after the built-in modules (whose methods they may
	 * not take) and before the registry is finalised and migrations run.
	 */
	err[0] = '\0';
	if (ad_plugins_load(cfg->modules_dir) < 0 ||
	    ad_specs_finalize(err, sizeof(err))) {
		if (err[0])
			fprintf(stderr, "actiond: %s\n", err);
		ad_modules_fini();
		ad_plugins_unload();
		ad_specs_free();
		return 2;
	}
	if (ad_specs_override_rates(cfg, err, sizeof(err))) {
		fprintf(stderr, "actiond: %s\n", err);
		ad_modules_fini();
		ad_plugins_unload();
		ad_specs_free();
		return 2;
	}
	if (ad_auth_init(cfg)) {
		fprintf(stderr, "actiond: out of memory\n");
		return 1;
	}
	if (check_only) {
		printf("configuration ok: %zu actions, %zu api keys\n", ad_nspecs,
		       cfg->n_api_keys);
		status = 0;
		goto out;
	}
	if (!cfg->n_api_keys && cfg->db_disabled)
		ad_log_warn("no [api_key] and no database: every call will be refused");
	if (!cfg->db_disabled) {
		if (cfg->db_url) {
			snprintf(ad_srv.db_conninfo, sizeof(ad_srv.db_conninfo), "%s",
				 cfg->db_url);
		} else {
			ad_srv.db_embedded = true;
			if (ad_embedded_start(cfg, ad_srv.db_conninfo,
					      sizeof(ad_srv.db_conninfo))) {
				status = 1;
				goto out;
			}
		}
		if (ad_keys_init(cfg, ad_srv.db_embedded) ||
		    ad_migrate(ad_srv.db_conninfo) < 0 ||
		    ad_modules_migrate(ad_srv.db_conninfo) < 0) {
			status = audit ? 2 : 1;
			goto out;
		}
		if (audit) {
			status = ad_audit_verify_cmd(ad_srv.db_conninfo, audit_org);
			goto out;
		}
		n = ad_auth_load(ad_srv.db_conninfo);
		if (n < 0 || ad_auth_resolve_orgs(ad_srv.db_conninfo)) {
			status = 1;
			goto out;
		}
		ad_log_info("%d live credentials loaded", n);
	} else if (bootstrap || audit) {
		fprintf(stderr, "actiond %s: the database is disabled\n",
			bootstrap ? "bootstrap" : "audit verify");
		status = 2;
		goto out;
	}
	if (bootstrap) {
		status = ad_bootstrap(ad_srv.db_conninfo, &boot);
		goto out;
	}
	if (!cfg->db_disabled && ad_cluster_register(ad_srv.db_conninfo)) {
		status = 1;
		goto out;
	}
	if (ad_identity_init() || ad_worker_init(2, 128, 2)) {
		ad_log_error("cannot start worker threads");
		status = 1;
		goto out;
	}
	ad_http_set_metrics(ad_metrics_page);
	if (ad_console_init()) {
		status = 1;
		goto out;
	}
	status = ad_server_init() ? 1 : ad_server_run();
out:
	ad_server_free();
	ad_console_fini();
	ad_worker_shutdown();
	ad_modules_fini();
	ad_plugins_unload();
	ad_keys_free();
	ad_openrpc_free();
	ad_rate_free();
	ad_auth_free();
	ad_specs_free();
	ad_config_free(cfg);
	return status;
}
