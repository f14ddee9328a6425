/*
 * actiond-httpgen - HTTP/1.1 keep-alive POST load generator (tools/bench-mcp).
 *
 * Single-threaded, raw sockets + level-triggered epoll, like actiond-loadgen
 * (which speaks WebSocket).  Keeps one request in flight on each of C
 * keep-alive connections: every complete response (a Content-Length body,
 * or a chunked one up to its last chunk, as an MCP SSE stream ends) sends
 * the next request on the same connection.  A response whose status is not
 * 2xx, or whose body lacks the --expect text, counts as an error.
 *
 * Latency: CLOCK_MONOTONIC from the write() of a request to the read() that
 * completed its response; percentiles over every response after warm-up.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEADERS 16
#define READ_CHUNK (64u * 1024u)

struct conn {
	int fd;
	char *in;
	size_t len, cap;
	uint64_t sent_ns;
	bool connected;
};

static const char *expect;
static char *request;
static size_t request_len;
static uint64_t completed, errors, warm_completed;
static uint32_t *lat_us;
static size_t nlat, lat_cap;
static bool measuring;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_of(int pid)
{
	char path[64], buf[2048], *p;
	unsigned long long ut, st;
	FILE *f;
	int field;

	if (pid <= 0) {
		struct rusage ru;

		getrusage(RUSAGE_SELF, &ru);
		return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
		       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	}
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (!(f = fopen(path, "r")))
		return -1;
	p = fgets(buf, sizeof(buf), f);
	fclose(f);
	if (!p || !(p = strrchr(buf, ')')))
		return -1;
	p++; /* " S ppid ...": the state is field 3, utime 14 */
	for (field = 2; field < 13 && p; field++)
		p = strchr(p + 1, ' ');
	if (!p || sscanf(p, " %llu %llu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int send_request(struct conn *c)
{
	size_t off = 0;

	c->sent_ns = now_ns();
	while (off < request_len) {
		ssize_t n = write(c->fd, request + off, request_len - off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1; /* the request is small: a full buffer is a failure */
		}
		off += (size_t)n;
	}
	return 0;
}

/*
 * Length of the complete response at the head of c->in, 0 if incomplete,
 * -1 if malformed.  *ok: 2xx and carrying the expected text.
 */
static long response_len(const struct conn *c, bool *ok)
{
	const char *in = c->in, *hend, *p, *body;
	size_t len = c->len;
	long clen = -1;
	bool chunked = false;
	int status;

	if (!(hend = memmem(in, len, "\r\n\r\n", 4)))
		return 0;
	if (sscanf(in, "HTTP/1.%*d %d", &status) != 1)
		return -1;
	for (p = strchr(in, '\n') + 1; p < hend; p = strchr(p, '\n') + 1) {
		if (!strncasecmp(p, "content-length:", 15))
			clen = strtol(p + 15, NULL, 10);
		else if (!strncasecmp(p, "transfer-encoding:", 18) && strstr(p, "chunked") &&
			 strstr(p, "chunked") < hend)
			chunked = true;
	}
	body = hend + 4;
	if (!chunked) {
		if (clen < 0)
			clen = 0;
		if ((size_t)(body - in) + (size_t)clen > len)
			return 0;
		*ok = status >= 200 && status < 300 &&
		      (!expect || memmem(body, (size_t)clen, expect, strlen(expect)));
		return (long)(body - in) + clen;
	}
	/* chunked: walk the chunks to the last one */
	p = body;
	for (;;) {
		const char *eol = memmem(p, len - (size_t)(p - in), "\r\n", 2);
		unsigned long n;

		if (!eol)
			return 0;
		n = strtoul(p, NULL, 16);
		if (n == 0) {
			if ((size_t)(eol + 4 - in) > len)
				return 0;
			*ok = status >= 200 && status < 300 &&
			      (!expect || memmem(body, (size_t)(eol - body), expect, strlen(expect)));
			return (long)(eol + 4 - in);
		}
		if ((size_t)(eol + 2 - in) + n + 2 > len)
			return 0;
		p = eol + 2 + n + 2;
	}
}

static void record(uint64_t ns)
{
	if (!measuring)
		return;
	if (nlat == lat_cap) {
		lat_cap = lat_cap ? 2 * lat_cap : 1 << 16;
		lat_us = realloc(lat_us, lat_cap * sizeof(*lat_us));
		if (!lat_us)
			exit(1);
	}
	lat_us[nlat++] = (uint32_t)(ns / 1000);
}

static int on_readable(struct conn *c)
{
	for (;;) {
		ssize_t n;
		long r;
		bool ok = false;

		if (c->cap - c->len < READ_CHUNK) {
			c->cap = c->cap * 2 + READ_CHUNK;
			if (!(c->in = realloc(c->in, c->cap)))
				exit(1);
		}
		n = read(c->fd, c->in + c->len, c->cap - c->len - 1);
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		if (n == 0)
			return -1;
		c->len += (size_t)n;
		c->in[c->len] = '\0';
		while ((r = response_len(c, &ok)) > 0) {
			uint64_t t = now_ns();

			memmove(c->in, c->in + r, c->len - (size_t)r);
			c->len -= (size_t)r;
			c->in[c->len] = '\0';
			if (measuring) {
				completed++;
				errors += !ok;
			} else {
				warm_completed++;
			}
			record(t - c->sent_ns);
			if (send_request(c))
				return -1;
		}
		if (r < 0)
			return -1;
	}
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: actiond-httpgen --url http://HOST:PORT/PATH --body JSON [options]\n"
		   "  -c N              connections, one request in flight each (default 50)\n"
		   "  -d SECONDS        measured duration (default 10)\n"
		   "  -w SECONDS        warm-up, not measured (default 2)\n"
		   "  -H 'Name: value'  a request header (repeatable, up to 16)\n"
		   "  --expect TEXT     a response body must contain TEXT, else it is an error\n"
		   "  --server-pid PID  report that process's CPU use\n"
		   "  --json            one JSON line: rps, p50_us, p99_us, errors, server_cpu_pct\n");
}

int main(int argc, char **argv)
{
	const char *url = NULL, *body = NULL, *headers[MAX_HEADERS];
	int nconn = 50, nheaders = 0, server_pid = 0, ep;
	double dur = 10, warm = 2;
	bool json = false;
	char host[256], path[1024];
	int port;
	struct sockaddr_in sa;
	struct conn *conns;
	uint64_t t_start, t_measure, t_end;
	double cpu0 = 0, cpu1;
	size_t cap;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--json")) {
			json = true;
			continue;
		}
		if (!v) {
			usage(stderr);
			return 2;
		}
		i++;
		if (!strcmp(a, "--url"))
			url = v;
		else if (!strcmp(a, "--body"))
			body = v;
		else if (!strcmp(a, "-c"))
			nconn = atoi(v);
		else if (!strcmp(a, "-d"))
			dur = atof(v);
		else if (!strcmp(a, "-w"))
			warm = atof(v);
		else if (!strcmp(a, "-H") && nheaders < MAX_HEADERS)
			headers[nheaders++] = v;
		else if (!strcmp(a, "--expect"))
			expect = v;
		else if (!strcmp(a, "--server-pid"))
			server_pid = atoi(v);
		else {
			usage(stderr);
			return 2;
		}
	}
	if (!url || !body || nconn < 1 ||
	    sscanf(url, "http://%255[^:/]:%d%1023s", host, &port, path) != 3) {
		usage(stderr);
		return 2;
	}
	cap = strlen(body) + strlen(path) + 512;
	for (int i = 0; i < nheaders; i++)
		cap += strlen(headers[i]) + 2;
	request = malloc(cap);
	request_len = (size_t)snprintf(request, cap, "POST %s HTTP/1.1\r\nHost: %s:%d\r\n"
				       "Content-Type: application/json\r\nContent-Length: %zu\r\n",
				       path, host, port, strlen(body));
	for (int i = 0; i < nheaders; i++)
		request_len += (size_t)snprintf(request + request_len, cap - request_len, "%s\r\n",
						headers[i]);
	request_len += (size_t)snprintf(request + request_len, cap - request_len, "\r\n%s", body);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "httpgen: %s is not an IPv4 address\n", host);
		return 2;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	conns = calloc((size_t)nconn, sizeof(*conns));
	for (int i = 0; i < nconn; i++) {
		struct conn *c = &conns[i];
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
		int one = 1;

		c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa))) {
			perror("httpgen: connect");
			return 1;
		}
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
		if (send_request(c)) {
			perror("httpgen: write");
			return 1;
		}
	}
	t_start = now_ns();
	t_measure = t_start + (uint64_t)(warm * 1e9);
	t_end = t_measure + (uint64_t)(dur * 1e9);
	for (;;) {
		struct epoll_event evs[256];
		uint64_t t = now_ns();
		int n;

		if (!measuring && t >= t_measure) {
			measuring = true;
			cpu0 = cpu_of(server_pid);
			t_measure = t;
		}
		if (t >= t_end)
			break;
		n = epoll_wait(ep, evs, 256, 50);
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;

			if (on_readable(c)) {
				fprintf(stderr, "httpgen: a connection failed or was closed\n");
				return 1;
			}
		}
	}
	cpu1 = cpu_of(server_pid);
	{
		double secs = (double)(now_ns() - t_measure) / 1e9;
		double rps = (double)completed / secs;
		double p50 = 0, p99 = 0;
		double scpu = server_pid > 0 && cpu0 >= 0 && cpu1 >= 0 ? 100 * (cpu1 - cpu0) / secs : -1;

		if (nlat) {
			qsort(lat_us, nlat, sizeof(*lat_us), cmp_u32);
			p50 = lat_us[nlat / 2];
			p99 = lat_us[(size_t)((double)nlat * 0.99)];
		}
		if (json) {
			printf("{\"rps\":%.1f,\"p50_us\":%.0f,\"p99_us\":%.0f,\"errors\":%" PRIu64
			       ",\"server_cpu_pct\":", rps, p50, p99, errors);
			if (scpu >= 0)
				printf("%.1f}\n", scpu);
			else
				printf("null}\n");
		} else {
			printf("c=%d duration=%.2fs completed=%" PRIu64 " errors=%" PRIu64
			       " rps=%.0f p50=%.0fus p99=%.0fus", nconn, secs, completed, errors, rps,
			       p50, p99);
			if (scpu >= 0)
				printf(" server_cpu=%.0f%%", scpu);
			printf("\n");
		}
	}
	return errors ? 3 : 0;
}
