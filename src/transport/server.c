/*
 * server.c - the lws context, the protocol callback that routes events to
 * http.c and ws.c, the periodic tick, signals and the graceful drain.
 */
#include "server.h"
#include "auth.h"
#include "cluster.h"
#include "dispatch.h"
#include "embedded.h"
#include "http.h"
#include "ipkey.h"
#include "log.h"
#include "loop.h"
#include "mcp.h"
#include "module.h"
#include "peer.h"
#include "outbound.h"
#include "pg.h"
#include "rxguard.h"
#include "worker.h"
#include "ws.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define TICK_US (250 * 1000)
/* After the drain deadline, how long cancelled calls get to be answered. */
#define DRAIN_GRACE_US (1000 * 1000)

struct ad_server ad_srv;

/* lws allocates one of these per connection; which member is live depends
 * on the callback reason (HTTP or WebSocket). */
union pss {
	struct ad_http_exchange http;
	struct ad_conn ws;
};

void ad_peer_ip(struct lws *wsi, uint8_t out[16])
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = lws_get_socket_fd(wsi);

	memset(out, 0, 16);
	if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl))
		return;
	if (ss.ss_family == AF_INET6) {
		memcpy(out, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
	} else if (ss.ss_family == AF_INET) {
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
	}
}

void ad_server_time_iso(char *out, size_t len)
{
	struct timespec ts;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void close_all_ws(void)
{
	struct ad_list *pos, *tmp;

	ad_list_foreach_safe(pos, tmp, &ad_srv.ws_active) {
		struct ad_conn *c = ad_container_of(pos, struct ad_conn, node);

		if (!c->req.inflight && !c->outq.count)
			ad_ws_close(c, AD_CLOSE_SHUTDOWN);
	}
}

static void tick(lws_sorted_usec_list_t *sul)
{
	int64_t now = lws_now_usecs();

	ad_ws_tick(now);
	if (ad_srv.db_embedded)
		ad_embedded_check();
	if (ad_srv.db_conninfo[0] && ++ad_srv.ticks % 4 == 0)
		ad_auth_expire((int64_t)time(NULL));
	if (ad_srv.draining) {
		close_all_ws();
		ad_mcp_drain();
		ad_http_close_idle();
		if (now >= ad_srv.drain_deadline_us && ad_dispatch_stats.calls_inflight) {
			ad_log_warn("drain deadline passed; cancelling %llu calls",
				    (unsigned long long)ad_dispatch_stats.calls_inflight);
			ad_dispatch_cancel_all(AD_REASON_UNAVAILABLE);
		}
		if (now >= ad_srv.drain_deadline_us + DRAIN_GRACE_US) {
			struct ad_list *pos, *tmp;

			ad_list_foreach_safe(pos, tmp, &ad_srv.ws_active)
				ad_ws_close(ad_container_of(pos, struct ad_conn, node),
					    AD_CLOSE_SHUTDOWN);
		}
		if ((!ad_srv.n_ws && !ad_srv.n_http) ||
		    now >= ad_srv.drain_deadline_us + 4 * DRAIN_GRACE_US) {
			ad_srv.stop = true;
			lws_cancel_service(ad_srv.lws); /* wake the poll to leave */
			return;
		}
	}
	lws_sul_schedule(ad_srv.lws, 0, sul, tick,
			 ad_srv.draining ? TICK_US / 5 : TICK_US);
}

void ad_server_drain(void)
{
	if (ad_srv.draining)
		return;
	ad_log_info("draining: %u WebSockets, %llu calls in flight", ad_srv.n_ws,
		    (unsigned long long)ad_dispatch_stats.calls_inflight);
	ad_srv.draining = true;
	ad_loop_draining = true;
	ad_srv.drain_deadline_us =
		lws_now_usecs() + (int64_t)ad_srv.cfg.shutdown_timeout_ms * 1000;
	/*
	 * New connections are hung up on at accept from here on (see
	 * LWS_CALLBACK_FILTER_NETWORK_CONNECTION).  lws_context_deprecate()
	 * would close the listener instead, but in lws 4.1 it touches the
	 * listening wsi after freeing it.
	 */
	close_all_ws();
	ad_http_close_idle();
	lws_sul_schedule(ad_srv.lws, 0, &ad_srv.tick, tick, 1000);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason,
		    void *user, void *in, size_t len)
{
	union pss *pss = user;

	switch (reason) {
	case LWS_CALLBACK_HTTP:
	case LWS_CALLBACK_HTTP_BODY:
	case LWS_CALLBACK_HTTP_BODY_COMPLETION:
	case LWS_CALLBACK_HTTP_WRITEABLE:
	case LWS_CALLBACK_CLOSED_HTTP:
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
		return ad_http_callback(wsi, reason, pss ? &pss->http : NULL, in, len);
	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
		if (!in || strcmp((const char *)in, "websocket") != 0)
			return -1;
		return ad_ws_confirm_upgrade(wsi);
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
	case LWS_CALLBACK_ESTABLISHED:
	case LWS_CALLBACK_RECEIVE:
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
	case LWS_CALLBACK_SERVER_WRITEABLE:
	case LWS_CALLBACK_CLOSED:
	case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
		return ad_ws_callback(wsi, reason, pss ? &pss->ws : NULL, in, len);
	case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
		return ad_srv.draining ? 1 : 0;
	case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
		return ad_peer_accept(wsi);
	case LWS_CALLBACK_WSI_DESTROY:
		ad_peer_destroy(wsi);
		return 0;
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
		ad_worker_reap();
		if (ad_srv.signalled && !ad_srv.draining)
			ad_server_drain();
		return 0;
	default:
		return 0;
	}
}

static struct lws_protocols protocols[] = {
	{
		.name = "actiond.v1",
		.callback = callback,
		.per_session_data_size = sizeof(union pss),
		/*
		 * The per-connection receive buffer lws allocates for every
		 * WebSocket: calls fit (a heartbeat is ~60 bytes, an identity
		 * call a few hundred), longer messages are assembled in a
		 * buffer made for them (ad_conn.rx).  1536 rather than 2048
		 * saves ~500 bytes per idle connection (docs/benchmarks.md).
		 */
		.rx_buffer_size = 1536,
		/* Lets one lws_write carry a whole coalesced batch of frames. */
		.tx_packet_size = 16 << 20,
	},
	{
		/* The libpq sockets (dups adopted as raw files), see pg.c. */
		.name = AD_PG_PROTOCOL,
		.callback = ad_pg_callback,
	},
	{
		/* libcurl's sockets (dups adopted as raw files), see http_client.c. */
		.name = AD_OUTBOUND_PROTOCOL,
		.callback = ad_outbound_callback,
	},
	{ NULL, NULL, 0, 0, 0, NULL, 0 }
};

static void on_signal(int sig)
{
	(void)sig;
	ad_srv.signalled = 1;
	if (ad_srv.lws)
		lws_cancel_service(ad_srv.lws);
}

/*
 * lws unlinks whatever is at a Unix socket's path before binding it.  Only
 * a socket nobody listens on any more (left by a server that died) may go:
 * not a file that is not a socket, nor the socket of a server still running.
 */
static int unix_path_free(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, live;

	if (lstat(path, &st)) {
		if (errno == ENOENT)
			return 0;
		ad_log_error("cannot listen on unix:%s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		ad_log_error("cannot listen on unix:%s: a file that is not a socket is there "
			     "(remove it or choose another path)", path);
		return -1;
	}
	strcpy(sun.sun_path, path); /* config.c checked the length */
	/* non-blocking: a live server with a full backlog answers EAGAIN */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return 0;
	live = !connect(fd, (struct sockaddr *)&sun, sizeof(sun)) || errno == EAGAIN;
	close(fd);
	if (live) {
		ad_log_error("cannot listen on unix:%s: another server is listening there", path);
		return -1;
	}
	return 0;
}

int ad_server_init(void)
{
	mode_t umask_was = 0;
	struct lws_context_creation_info info;
	struct sigaction sa;

	ad_list_init(&ad_srv.ws_active);
	ad_list_init(&ad_srv.ws_slow);
	ad_list_init(&ad_srv.http);
	if (ad_rxguard_init()) {
		ad_log_error("out of memory");
		return -1;
	}
	ad_log_hook_lws();
	ad_ip_key_prefix(ad_srv.cfg.ipv6_prefix);

	memset(&info, 0, sizeof(info));
	info.port = ad_srv.cfg.listen_port;
	info.iface = ad_srv.cfg.listen_host;
	info.protocols = protocols;
	/* The security headers are http.c's own (one set, and the console
	 * page's stricter policy instead of a second one). */
	info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
	if (ad_srv.cfg.listen_unix) {
		if (unix_path_free(ad_srv.cfg.listen_unix))
			return -1;
		info.options |= LWS_SERVER_OPTION_UNIX_SOCK;
		info.iface = ad_srv.cfg.listen_unix;
		info.port = 0;
		/* bind() creates the socket with these bits, never wider */
		umask_was = umask(~(mode_t)ad_srv.cfg.unix_socket_mode & 0777);
	}
	/*
	 * Header slots: one per connection that is sending headers.  There
	 * are far more of them than one address may hold connections
	 * (limits.max_http_conns_per_ip), and a connection has
	 * limits.header_timeout to send its headers, so slow or silent
	 * connections from a few addresses cannot starve everybody else.
	 */
	info.max_http_header_data = AD_HTTP_HEADER_MAX;
	info.max_http_header_pool = 1024;
	info.pt_serv_buf_size = 64 * 1024;
	/*
	 * lws counts the first from accept until a slot is free, the second
	 * while a connection holds a slot and has not finished its headers;
	 * the first also bounds every gap in a request body.
	 */
	info.timeout_secs = (ad_srv.cfg.header_timeout_ms + 999) / 1000;
	info.timeout_secs_ah_idle = info.timeout_secs;
	info.keepalive_timeout = 10;
	info.alpn = "http/1.1";
	if (ad_srv.cfg.tls_cert) {
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
		info.ssl_cert_filepath = ad_srv.cfg.tls_cert;
		info.ssl_private_key_filepath = ad_srv.cfg.tls_key;
		ad_srv.tls = true;
	}
	ad_srv.lws = lws_create_context(&info);
	if (ad_srv.cfg.listen_unix)
		umask(umask_was);
	if (!ad_srv.lws) {
		char where[320];

		if (ad_srv.cfg.listen_unix)
			snprintf(where, sizeof(where), "unix:%s", ad_srv.cfg.listen_unix);
		else
			snprintf(where, sizeof(where), "%s:%d", ad_srv.cfg.listen_host,
				 ad_srv.cfg.listen_port);
		ad_log_error("cannot listen on %s%s", where,
			     ad_srv.tls ? " (or the TLS certificate/key failed)" : "");
		return -1;
	}
	ad_dispatch_init();
	ad_ws_init();
	ad_mcp_init();

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);

	lws_sul_schedule(ad_srv.lws, 0, &ad_srv.tick, tick, TICK_US);
	ad_srv.vhost = lws_get_vhost_by_name(ad_srv.lws, "default");
	ad_loop = ad_srv.lws;
	ad_loop_vhost = ad_srv.vhost;
	if (ad_outbound_init())
		return -1;
	/* With port 0 the kernel picks one; say which (tests read this line). */
	if (ad_srv.db_conninfo[0]) {
		struct ad_pg_options po = {
			.conninfo = ad_srv.db_conninfo,
			.pool_size = (int)ad_srv.cfg.db_pool,
			.max_pending = 10000,
			.runtime_role = true,
		};

		if (ad_pg_init(&po, "actiond", ad_cluster_notify) || ad_cluster_init())
			return -1;
	}
	ad_pubsub_init(ad_srv.db_conninfo[0] != '\0');
	ad_modules_start(ad_srv.db_conninfo[0] != '\0');
	if (ad_srv.cfg.listen_unix)
		ad_log(AD_LOG_INFO, "listening on %s over unix:%s", ad_srv.tls ? "https" : "http",
		       ad_srv.cfg.listen_unix);
	else
		ad_log(AD_LOG_INFO, "listening on %s://%s:%d", ad_srv.tls ? "https" : "http",
		       ad_srv.cfg.listen_host,
		       ad_srv.vhost ? lws_get_vhost_listen_port(ad_srv.vhost)
				    : ad_srv.cfg.listen_port);
	return 0;
}

int ad_server_run(void)
{
	while (!ad_srv.stop) {
		if (lws_service(ad_srv.lws, 0) < 0)
			return 1;
		if (ad_srv.signalled && !ad_srv.draining)
			ad_server_drain();
	}
	ad_log_info("stopped");
	return 0;
}

void ad_server_free(void)
{
	if (ad_srv.lws) {
		lws_sul_cancel(&ad_srv.tick);
		ad_mcp_free();
		if (ad_srv.db_conninfo[0])
			ad_cluster_shutdown(ad_srv.db_conninfo);
		ad_pubsub_shutdown();
		ad_pg_shutdown();
		ad_dispatch_shutdown();
		ad_outbound_shutdown();
		lws_context_destroy(ad_srv.lws); /* closes what is still open */
		ad_srv.lws = NULL;
		ad_loop = NULL;
		ad_loop_vhost = NULL;
	}
	ad_dispatch_free();
	ad_ws_free();
	ad_peer_free_all();
	ad_rxguard_free();
	ad_pubsub_free();
	if (ad_srv.db_embedded)
		ad_embedded_stop();
}
