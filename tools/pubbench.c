/*
 * actiond-pubbench - fan-out benchmark client: how long one publish takes to
 * reach every one of N WebSocket connections.
 *
 * Single-threaded, raw sockets + epoll, a minimal RFC 6455 client (ws://
 * only).  It opens N authenticated connections, then connection 0 asks the
 * server to publish (a JSON-RPC request with the given method and
 * {"size": S}) and every connection counts the notifications it receives.
 *
 *   latency phase: P publishes, one at a time; for each, the time from
 *     just before the write() of the request to the read() that completed
 *     the notification on the last connection.  Prints p50/p99/max.
 *   burst phase: B publish requests written at once; the time until every
 *     connection has all B; prints deliveries per second (N * B / time).
 *
 * Frames are parsed as a byte stream (no buffering of whole frames); a text
 * frame counts as a notification when "method" appears in its first bytes,
 * which an answer ({"jsonrpc":"2.0","id":..,"result":..}) never has there.
 *
 *   actiond-pubbench --url ws://127.0.0.1:8080/ws [--token T] --conns N
 *       [--method test.publish] [--size 128] [--publishes 100] [--burst 100]
 *       [--hold S]
 *
 * --hold S: once every connection is open, print "connections_open=N" and
 * wait S seconds before publishing (for RSS sampling by the caller).
 * --server-pid P: also print the CPU time the server (and this client) used
 * per publish in the latency phase, from /proc/P/stat and getrusage(): on a
 * shared machine the wall-clock figures carry other work's noise, these do
 * not.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 1024
#define CONNECT_BATCH 200
#define PEEK 48u

enum cstate { C_CONNECTING, C_HANDSHAKE, C_OPEN, C_DEAD };

struct conn {
	int fd;
	enum cstate st;
	uint32_t count;        /* notifications received */
	uint16_t resp_len;     /* handshake bytes read */
	uint8_t hl, need;      /* header bytes held / needed */
	uint8_t opcode, peek_len;
	uint64_t remaining;    /* payload bytes still to come */
	bool in_payload;
	uint8_t hdr[14];
	char peek[PEEK];
	char *resp;            /* handshake response, freed once open */
};

static struct conn *conns;
static int nconns, epfd, n_open, n_dead;
static struct sockaddr_in addr;
static char host[256], path[256] = "/ws", token[600], method[64] = "test.publish";
static int port, size = 128, publishes = 100, burst = 100, hold, server_pid;

/* Progress of the phase running: every connection needs target frames. */
static uint32_t target;
static int reached;         /* connections at target */
static uint64_t t_last;     /* when the last one got there */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "pubbench: %s\n", what);
	exit(1);
}

static void conn_dead(struct conn *c, const char *why)
{
	if (c->st == C_DEAD)
		return;
	if (n_dead < 5)
		fprintf(stderr, "pubbench: connection %d: %s\n", (int)(c - conns), why);
	c->st = C_DEAD;
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->resp);
	c->resp = NULL;
	n_dead++;
}

static void start_connect(struct conn *c)
{
	struct epoll_event ev = { .events = EPOLLOUT };
	int one = 1;

	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		die("socket() failed (open-file limit?)");
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) && errno != EINPROGRESS)
		die("connect() failed");
	c->st = C_CONNECTING;
	ev.data.ptr = c;
	epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Writes all of buf (small: requests and the upgrade) or gives up on c. */
static void send_all(struct conn *c, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(c->fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			conn_dead(c, "write failed");
			return;
		}
		p += n;
		len -= (size_t)n;
	}
}

static void send_upgrade(struct conn *c)
{
	char req[1024];
	int n = snprintf(req, sizeof(req),
			 "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
			 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
			 "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: actiond.v1\r\n"
			 "%s%s%s\r\n",
			 path, host, port, *token ? "Authorization: Bearer " : "", token,
			 *token ? "\r\n" : "");
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };

	c->st = C_HANDSHAKE;
	c->resp = malloc(2048);
	if (!c->resp)
		die("out of memory");
	epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
	send_all(c, req, (size_t)n);
}

/* One complete frame: count a notification. */
static void frame_done(struct conn *c)
{
	if (c->opcode == 8) {
		conn_dead(c, "closed by the server");
		return;
	}
	if (c->opcode != 1 || !memmem(c->peek, c->peek_len, "\"method\"", 8))
		return;
	if (++c->count == target) {
		reached++;
		t_last = now_ns();
	}
}

static void parse(struct conn *c, const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n && c->st == C_OPEN) {
		if (!c->in_payload) {
			c->hdr[c->hl++] = p[i++];
			if (c->hl == 2) {
				uint8_t l7 = c->hdr[1] & 0x7f;

				c->need = (uint8_t)(2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) +
						    (c->hdr[1] & 0x80 ? 4 : 0));
			}
			if (c->hl < 2 || c->hl < c->need)
				continue;
			c->opcode = c->hdr[0] & 0x0f;
			c->remaining = c->hdr[1] & 0x7f;
			if (c->remaining == 126)
				c->remaining = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
			else if (c->remaining == 127)
				for (int k = 0; k < 8; k++)
					c->remaining = (k ? c->remaining << 8 : 0) | c->hdr[2 + k];
			c->hl = 0;
			c->peek_len = 0;
			c->in_payload = true;
		} else {
			size_t take = n - i < c->remaining ? n - i : (size_t)c->remaining;

			if (c->peek_len < PEEK) {
				size_t room = PEEK - c->peek_len;
				size_t k = room < take ? room : take;

				memcpy(c->peek + c->peek_len, p + i, k);
				c->peek_len = (uint8_t)(c->peek_len + k);
			}
			i += take;
			c->remaining -= take;
		}
		if (c->in_payload && !c->remaining) {
			c->in_payload = false;
			frame_done(c);
		}
	}
}

static void on_handshake(struct conn *c, const uint8_t *p, size_t n)
{
	char *end;
	size_t used;

	if (c->resp_len + n >= 2048) {
		conn_dead(c, "handshake response too long");
		return;
	}
	memcpy(c->resp + c->resp_len, p, n);
	c->resp_len = (uint16_t)(c->resp_len + n);
	c->resp[c->resp_len] = '\0';
	if (!(end = strstr(c->resp, "\r\n\r\n")))
		return;
	if (strncmp(c->resp, "HTTP/1.1 101", 12)) {
		conn_dead(c, "upgrade refused");
		return;
	}
	used = (size_t)(end + 4 - c->resp);
	c->st = C_OPEN;
	n_open++;
	if (used < c->resp_len) {
		char rest[2048];
		size_t rl = c->resp_len - used;

		memcpy(rest, c->resp + used, rl);
		free(c->resp);
		c->resp = NULL;
		parse(c, (uint8_t *)rest, rl);
		return;
	}
	free(c->resp);
	c->resp = NULL;
}

static void on_event(struct conn *c, uint32_t events)
{
	static uint8_t buf[256 * 1024];

	if (c->st == C_CONNECTING) {
		int err = 0;
		socklen_t el = sizeof(err);

		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
		if (err || (events & (EPOLLERR | EPOLLHUP)))
			conn_dead(c, "connect failed");
		else
			send_upgrade(c);
		return;
	}
	for (;;) {
		ssize_t n = read(c->fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			conn_dead(c, "connection closed");
			return;
		}
		if (c->st == C_HANDSHAKE)
			on_handshake(c, buf, (size_t)n);
		else
			parse(c, buf, (size_t)n);
		if ((size_t)n < sizeof(buf) || c->st == C_DEAD)
			return;
	}
}

static void poll_once(int timeout_ms)
{
	struct epoll_event ev[MAX_EVENTS];
	int n = epoll_wait(epfd, ev, MAX_EVENTS, timeout_ms);

	for (int i = 0; i < n; i++)
		on_event(ev[i].data.ptr, ev[i].events);
}

/* A masked text frame carrying one publish request. */
static size_t publish_frame(uint8_t *out, size_t cap, unsigned id)
{
	char body[256];
	int len = snprintf(body, sizeof(body),
			   "{\"jsonrpc\":\"2.0\",\"id\":%u,\"method\":\"%s\",\"params\":{\"size\":%d}}",
			   id, method, size);
	const uint8_t key[4] = { 0x12, 0x34, 0x56, 0x78 };

	if (len < 0 || (size_t)len + 8 > cap)
		die("request too long");
	out[0] = 0x81;
	if (len < 126) {
		out[1] = (uint8_t)(0x80 | len);
		memcpy(out + 2, key, 4);
		for (int i = 0; i < len; i++)
			out[6 + i] = (uint8_t)body[i] ^ key[i & 3];
		return (size_t)len + 6;
	}
	out[1] = 0x80 | 126;
	out[2] = (uint8_t)(len >> 8);
	out[3] = (uint8_t)len;
	memcpy(out + 4, key, 4);
	for (int i = 0; i < len; i++)
		out[8 + i] = (uint8_t)body[i] ^ key[i & 3];
	return (size_t)len + 8;
}

/* Waits (at most 60 s) until every live connection has target frames. */
static bool wait_all(void)
{
	uint64_t deadline = now_ns() + 60000000000ull;

	while (reached + n_dead < nconns && now_ns() < deadline)
		poll_once(100);
	return reached + n_dead >= nconns && !n_dead;
}

/* CPU time (user + system) of process pid in ms, or -1. */
static double proc_cpu_ms(int pid)
{
	char file[64], buf[1024], *p;
	unsigned long long ut, st;
	FILE *f;
	size_t n;

	snprintf(file, sizeof(file), "/proc/%d/stat", pid);
	if (!(f = fopen(file, "r")))
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* Fields after the command name: state is 3rd, utime 14th, stime 15th. */
	if (!(p = strrchr(buf, ')')) ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
		   &st) != 2)
		return -1;
	return (double)(ut + st) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void usage(void)
{
	fprintf(stderr, "usage: actiond-pubbench --url ws://HOST:PORT/PATH [--token T] "
			"--conns N [--method M] [--size S] [--publishes P] [--burst B] "
			"[--hold S]\n");
	exit(2);
}

static void parse_url(const char *url)
{
	const char *p, *colon, *slash;

	if (strncmp(url, "ws://", 5))
		usage();
	p = url + 5;
	colon = strchr(p, ':');
	slash = strchr(p, '/');
	if (!colon || (slash && slash < colon) || (size_t)(colon - p) >= sizeof(host))
		usage();
	memcpy(host, p, (size_t)(colon - p));
	port = atoi(colon + 1);
	if (slash)
		snprintf(path, sizeof(path), "%s", slash);
	if (inet_pton(AF_INET, host, &addr.sin_addr) != 1)
		die("--url needs a numeric IPv4 host");
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)port);
}

int main(int argc, char **argv)
{
	struct rlimit rl;
	uint64_t *lat, t0;
	uint8_t frame[512];
	int started = 0;
	double srv0, cli0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v)
			usage();
		if (!strcmp(a, "--url"))
			parse_url(v);
		else if (!strcmp(a, "--token"))
			snprintf(token, sizeof(token), "%s", v);
		else if (!strcmp(a, "--conns"))
			nconns = atoi(v);
		else if (!strcmp(a, "--method"))
			snprintf(method, sizeof(method), "%s", v);
		else if (!strcmp(a, "--size"))
			size = atoi(v);
		else if (!strcmp(a, "--publishes"))
			publishes = atoi(v);
		else if (!strcmp(a, "--burst"))
			burst = atoi(v);
		else if (!strcmp(a, "--hold"))
			hold = atoi(v);
		else if (!strcmp(a, "--server-pid"))
			server_pid = atoi(v);
		else
			usage();
		i++;
	}
	if (!port || nconns < 1 || publishes < 1 || burst < 0 || size < 0)
		usage();
	if (!getrlimit(RLIMIT_NOFILE, &rl)) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	conns = calloc((size_t)nconns, sizeof(*conns));
	lat = calloc((size_t)publishes, sizeof(*lat));
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!conns || !lat || epfd < 0)
		die("out of memory");

	/* Connect in batches, so the listen backlog never overflows. */
	while (n_open + n_dead < nconns) {
		while (started < nconns && started - n_open - n_dead < CONNECT_BATCH)
			start_connect(&conns[started++]);
		poll_once(100);
	}
	if (n_dead)
		die("not every connection opened");
	printf("connections_open=%d\n", n_open);
	fflush(stdout);
	if (hold)
		sleep((unsigned)hold);

	srv0 = server_pid ? proc_cpu_ms(server_pid) : -1;
	cli0 = self_cpu_ms();
	for (int p = 0; p < publishes; p++) {
		size_t fl = publish_frame(frame, sizeof(frame), (unsigned)p + 1);

		target = (uint32_t)p + 1;
		reached = 0;
		t0 = now_ns();
		send_all(&conns[0], frame, fl);
		if (!wait_all())
			die("a publish did not reach every connection within 60 s");
		lat[p] = t_last - t0;
	}
	if (srv0 >= 0)
		printf("server_cpu_ms_per_publish=%.2f\n",
		       (proc_cpu_ms(server_pid) - srv0) / publishes);
	printf("client_cpu_ms_per_publish=%.2f\n", (self_cpu_ms() - cli0) / publishes);
	qsort(lat, (size_t)publishes, sizeof(*lat), cmp_u64);
	printf("conns=%d size=%d publishes=%d\n", nconns, size, publishes);
	printf("fanout_p50_ms=%.3f\nfanout_p99_ms=%.3f\nfanout_max_ms=%.3f\n",
	       lat[publishes / 2] / 1e6, lat[(publishes * 99) / 100] / 1e6,
	       lat[publishes - 1] / 1e6);

	if (burst) {
		uint8_t *all = malloc((size_t)burst * sizeof(frame));
		size_t len = 0;

		if (!all)
			die("out of memory");
		for (int b = 0; b < burst; b++)
			len += publish_frame(all + len, sizeof(frame),
					     (unsigned)(publishes + b + 1));
		target = (uint32_t)(publishes + burst);
		reached = 0;
		t0 = now_ns();
		send_all(&conns[0], all, len);
		free(all);
		if (!wait_all())
			die("the burst did not reach every connection within 60 s");
		printf("burst=%d burst_ms=%.3f deliveries_per_s=%.0f\n", burst,
		       (t_last - t0) / 1e6,
		       (double)nconns * burst / ((t_last - t0) / 1e9));
	}
	fflush(stdout);
	for (int i = 0; i < nconns; i++)
		if (conns[i].st != C_DEAD)
			close(conns[i].fd);
	free(conns);
	free(lat);
	return 0;
}
