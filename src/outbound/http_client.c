/*
 * http_client.c - outbound HTTP(S) for action handlers: libcurl's multi
 * interface driven by the lws loop.
 *
 * libcurl does the protocol work (connections, TLS, HTTP/1.1 and HTTP/2,
 * keep-alive) and tells us, through its socket and timer callbacks, which
 * descriptors to watch and when to call it back; the loop watches them and
 * calls curl_multi_socket_action().  Host names are resolved by libcurl's
 * threaded resolver (checked at start: AsynchDNS), so getaddrinfo() never
 * runs on the loop.  CURLOPT_QUICK_EXIT matters here: without it, a
 * transfer stopped while its name is still being resolved (cancelled, timed
 * out) makes libcurl join the resolver thread, on the loop.
 *
 * Sockets: as in pg.c, lws owns what it polls and closes it when its wsi
 * goes, while libcurl owns and closes its sockets.  So each socket libcurl
 * names is watched through a dup() adopted as a raw file; the two share one
 * open file description, hence one readiness.  When libcurl lets a socket
 * go, the wsi is killed asynchronously (closing only the dup).  When lws
 * drops a dup by itself (a hang-up seen while only writing was watched,
 * e.g. a refused connect), libcurl is told at once and then every 50 ms
 * until it lets the socket go, since it checks the socket's state itself.
 *
 * Requests: one easy handle each, copied from the caller's request, with
 * the limits set on it (timeout, response size, protocols, no redirects,
 * verified TLS, no proxy from the environment).  A request ends exactly
 * once, in finish(), which detaches the handle, builds the response and
 * runs the done callback.
 */
#include "buf.h"
#include "actiond/http_client.h"
#include "list.h"
#include "log.h"
#include "outbound.h"
#include "loop.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifndef ACTIOND_VERSION
#define ACTIOND_VERSION "dev"
#endif

#define MAX_INFLIGHT 256
#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_MAX_RESPONSE ((size_t)1 << 20)
#define MAX_MAX_RESPONSE ((size_t)1 << 30)
#define MAX_URL 8192
#define MAX_METHOD 32
#define MAX_REQ_HEADERS 64
#define MAX_REQ_HEADER_LINE 8192
/* Response headers kept: at most this many, in this many bytes in all. */
#define MAX_RESP_HEADERS 100
#define MAX_RESP_HEADER_BYTES (64 * 1024)
#define KICK_RETRY_US (50 * 1000)

_Static_assert(AD_HTTP_FAILED + 1 == AD_OUTBOUND_KINDS,
	       "AD_OUTBOUND_KINDS must count enum ad_http_error");

/* A socket libcurl asked the loop to watch. */
struct csock {
	struct ad_list node;     /* socks */
	curl_socket_t fd;        /* libcurl's descriptor */
	struct lws *wsi;         /* the adopted dup, or NULL */
	int want;                /* CURL_POLL_IN / CURL_POLL_OUT bits */
	bool busy;               /* an event of its own is being handled */
	bool removed;            /* libcurl let it go meanwhile: free after */
	bool in_writable;        /* inside its LWS_CALLBACK_RAW_WRITEABLE_FILE */
	lws_sorted_usec_list_t rearm; /* POLLOUT again after that callback */
	lws_sorted_usec_list_t kick;  /* lws dropped the dup: tell libcurl */
};

struct ad_http {
	struct ad_list node;     /* inflight */
	CURL *easy;
	ad_http_done_fn done;
	void *arg;
	/* ad_call_http(): the call whose cancel hook this request holds. */
	struct ad_call *call;
	ad_call_http_done_fn call_done;
	void *call_arg;
	struct curl_slist *headers;
	size_t max_response;
	char *body;
	size_t body_len, body_cap;
	/* Response headers, packed as "name\0value\0" pairs. */
	char *hdr;
	size_t hdr_len, hdr_cap, nhdr;
	/* Why the transfer was stopped from a callback of ours, if it was. */
	enum ad_http_error abort_error;
	const char *abort_message;
	int64_t start_us;
	char errbuf[CURL_ERROR_SIZE];
};

struct ad_outbound_stats ad_outbound_stats;

static CURLM *multi;
static bool started;
static struct ad_list inflight;
static struct ad_list socks;
static lws_sorted_usec_list_t timer_sul;

static const char *const kind_names[AD_OUTBOUND_KINDS] = {
	"ok", "timeout", "cancelled", "too_large", "resolve", "connect", "tls", "failed",
};

const char *ad_outbound_kind_name(int kind)
{
	return kind >= 0 && kind < AD_OUTBOUND_KINDS ? kind_names[kind] : "failed";
}

static void read_done(void);
static void kick_fire(lws_sorted_usec_list_t *sul);

/* ---- the loop's side: sockets and the timer -------------------------------- */

/*
 * Calls libcurl for a socket event (or CURL_SOCKET_TIMEOUT), then finishes
 * whatever requests completed.  Done callbacks run only here and in
 * ad_http_cancel(), never inside libcurl, so they may start and cancel
 * requests freely.
 */
static void multi_action(curl_socket_t fd, int flags)
{
	int running;

	curl_multi_socket_action(multi, fd, flags, &running);
	read_done();
}

static void timer_fire(lws_sorted_usec_list_t *sul)
{
	(void)sul;
	multi_action(CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_TIMERFUNCTION: libcurl wants to be called after ms (-1: never). */
static int timer_cb(CURLM *m, long ms, void *userp)
{
	(void)m;
	(void)userp;
	if (ms < 0)
		lws_sul_cancel(&timer_sul);
	else
		lws_sul_schedule(ad_loop, 0, &timer_sul, timer_fire,
				 ms ? (lws_usec_t)ms * 1000 : 1);
	return 0;
}

static void sock_detach(struct csock *s)
{
	if (!s->wsi)
		return;
	lws_set_opaque_user_data(s->wsi, NULL);
	lws_rx_flow_control(s->wsi, 0);
	lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
	s->wsi = NULL;
}

static void sock_free(struct csock *s)
{
	lws_sul_cancel(&s->rearm);
	lws_sul_cancel(&s->kick);
	free(s);
}

/* libcurl is done with s (or we are shutting down). */
static void sock_release(struct csock *s)
{
	sock_detach(s);
	ad_list_del(&s->node);
	if (s->busy)
		s->removed = true;
	else
		sock_free(s);
}

static void rearm_fire(lws_sorted_usec_list_t *sul)
{
	struct csock *s = ad_container_of(sul, struct csock, rearm);

	if (s->wsi && (s->want & CURL_POLL_OUT))
		lws_callback_on_writable(s->wsi);
}

/*
 * Hands one readiness event of s to libcurl.  s may be released inside
 * (libcurl closes sockets as transfers end), hence busy and removed.
 */
static void sock_event(struct csock *s, int flags, bool from_writable)
{
	s->busy = true;
	s->in_writable = from_writable;
	multi_action(s->fd, flags);
	s->busy = false;
	s->in_writable = false;
	if (s->removed) {
		sock_free(s);
		return;
	}
	/*
	 * lws's raw-file role clears POLLOUT after the writable callback, and
	 * libcurl states its interest only when it changes: ask again.
	 */
	if (from_writable && s->wsi && (s->want & CURL_POLL_OUT))
		lws_sul_schedule(ad_loop, 0, &s->rearm, rearm_fire, 1);
	/* Unwatched but still wanted: let libcurl look again in a while. */
	if (!s->wsi)
		lws_sul_schedule(ad_loop, 0, &s->kick, kick_fire, KICK_RETRY_US);
}

static void kick_fire(lws_sorted_usec_list_t *sul)
{
	struct csock *s = ad_container_of(sul, struct csock, kick);

	if (s->wsi)
		return;
	sock_event(s, CURL_CSELECT_IN | CURL_CSELECT_OUT | CURL_CSELECT_ERR, false);
}

/* Gives lws a dup of s's descriptor to watch. */
static int sock_adopt(struct csock *s)
{
	lws_sock_file_fd_type fd;

	fd.filefd = dup(s->fd);
	if (fd.filefd < 0)
		return -1;
	s->wsi = lws_adopt_descriptor_vhost(ad_loop_vhost, LWS_ADOPT_RAW_FILE_DESC, fd,
					    AD_OUTBOUND_PROTOCOL, NULL);
	if (!s->wsi) {
		close(fd.filefd);
		return -1;
	}
	lws_set_opaque_user_data(s->wsi, s);
	return 0;
}

/* Makes what lws watches on s match what libcurl wants. */
static void sock_apply(struct csock *s)
{
	if (!s->wsi && sock_adopt(s)) {
		/* Polled from a timer instead, until libcurl lets it go. */
		ad_log_warn("outbound HTTP: cannot watch a socket");
		lws_sul_schedule(ad_loop, 0, &s->kick, kick_fire, KICK_RETRY_US);
		return;
	}
	lws_rx_flow_control(s->wsi, (s->want & CURL_POLL_IN) ? 1 : 0);
	if (s->want & CURL_POLL_OUT) {
		if (s->in_writable)
			lws_sul_schedule(ad_loop, 0, &s->rearm, rearm_fire, 1);
		else
			lws_callback_on_writable(s->wsi);
	}
}

/* CURLMOPT_SOCKETFUNCTION: what libcurl wants to hear about fd, if anything. */
static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct csock *s = socketp;

	(void)e;
	(void)userp;
	if (what == CURL_POLL_REMOVE) {
		if (s)
			sock_release(s);
		return 0;
	}
	if (!s) {
		struct ad_list *pos, *tmp;

		/* A descriptor number reused before we heard it was closed. */
		ad_list_foreach_safe(pos, tmp, &socks) {
			struct csock *o = ad_container_of(pos, struct csock, node);

			if (o->fd == fd)
				sock_release(o);
		}
		if (!(s = calloc(1, sizeof(*s)))) {
			ad_log_error("outbound HTTP: out of memory; a request will time out");
			return 0;
		}
		s->fd = fd;
		ad_list_add_tail(&socks, &s->node);
		curl_multi_assign(multi, fd, s);
	}
	s->want = what;
	sock_apply(s);
	return 0;
}

int ad_outbound_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
			 void *in, size_t len)
{
	struct csock *s = lws_get_opaque_user_data(wsi);

	(void)user;
	(void)in;
	(void)len;
	if (!s || s->wsi != wsi)
		return 0;
	switch (reason) {
	case LWS_CALLBACK_RAW_RX_FILE:
		sock_event(s, CURL_CSELECT_IN, false);
		return 0;
	case LWS_CALLBACK_RAW_WRITEABLE_FILE:
		sock_event(s, CURL_CSELECT_OUT, true);
		return 0;
	case LWS_CALLBACK_RAW_CLOSE_FILE:
		/*
		 * lws saw a hang-up and closed the dup.  libcurl still has its
		 * descriptor and looks at its state itself: let it, from a
		 * timer (not from inside lws's close), and again until it
		 * lets the socket go.
		 */
		s->wsi = NULL;
		lws_sul_schedule(ad_loop, 0, &s->kick, kick_fire, 1);
		return 0;
	default:
		return 0;
	}
}

/* ---- requests -------------------------------------------------------------- */

static enum ad_http_error map_error(CURLcode rc)
{
	switch (rc) {
	case CURLE_OK:
		return AD_HTTP_OK;
	case CURLE_OPERATION_TIMEDOUT:
		return AD_HTTP_TIMEOUT;
	case CURLE_FILESIZE_EXCEEDED:
		return AD_HTTP_TOO_LARGE;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return AD_HTTP_RESOLVE;
	case CURLE_COULDNT_CONNECT:
		return AD_HTTP_CONNECT;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED:
	case CURLE_SSL_ENGINE_INITFAILED:
	case CURLE_SSL_SHUTDOWN_FAILED:
		return AD_HTTP_TLS;
	default:
		return AD_HTTP_FAILED;
	}
}

static void request_free(struct ad_http *h)
{
	if (h->easy)
		curl_easy_cleanup(h->easy);
	curl_slist_free_all(h->headers);
	free(h->body);
	free(h->hdr);
	free(h);
}

/* The done callback of ad_call_http(): gives the call's cancel hook back. */
static void call_done_trampoline(void *arg, const struct ad_http_response *resp)
{
	struct ad_http *h = arg;

	ad_call_on_cancel(h->call, NULL, NULL);
	h->call_done(h->call, h->call_arg, resp);
}

/*
 * Ends h exactly once: takes it off libcurl and the in-flight list, runs
 * the done callback with the response, then frees h.
 */
static void finish(struct ad_http *h, enum ad_http_error error, const char *message)
{
	struct ad_http_response r = { .error = error, .message = message ? message : "" };
	const char **names = NULL, **values = NULL;
	long status = 0;

	curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_multi_remove_handle(multi, h->easy);
	ad_list_del(&h->node);
	ad_outbound_stats.inflight--;
	if (error != AD_HTTP_OK)
		ad_outbound_stats.errors[error]++;
	r.status = (int)status;
	r.body = h->body ? h->body : "";
	r.body_len = h->body_len;
	if (h->nhdr) {
		names = calloc(h->nhdr, sizeof(*names));
		values = calloc(h->nhdr, sizeof(*values));
	}
	if (names && values) {
		const char *p = h->hdr;

		for (size_t i = 0; i < h->nhdr; i++) {
			names[i] = p;
			p += strlen(p) + 1;
			values[i] = p;
			p += strlen(p) + 1;
		}
		r.nheaders = h->nhdr;
	}
	r.header_names = names;
	r.header_values = values;
	r.elapsed_ms = (uint32_t)((lws_now_usecs() - h->start_us) / 1000);
	/* The response keeps pointing into h: free only after the callback. */
	if (h->call)
		call_done_trampoline(h, &r);
	else
		h->done(h->arg, &r);
	free(names);
	free(values);
	request_free(h);
}

static void read_done(void)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(multi, &left))) {
		struct ad_http *h;
		char *priv = NULL;
		CURLcode rc = m->data.result;
		enum ad_http_error err;
		const char *msg;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
		if (!(h = (struct ad_http *)(void *)priv))
			continue;
		err = map_error(rc);
		msg = h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc);
		if (rc != CURLE_OK && h->abort_error != AD_HTTP_OK) {
			err = h->abort_error;
			msg = h->abort_message;
		}
		if (err == AD_HTTP_TOO_LARGE && rc == CURLE_FILESIZE_EXCEEDED)
			msg = "the response is larger than max_response";
		finish(h, err, rc == CURLE_OK ? "" : msg);
	}
}

/* CURLOPT_WRITEFUNCTION: keeps the body, up to max_response bytes. */
static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct ad_http *h = arg;
	size_t n = size * nmemb, keep = n;

	if (h->body_len + n > h->max_response) {
		keep = h->max_response - h->body_len;
		h->abort_error = AD_HTTP_TOO_LARGE;
		h->abort_message = "the response is larger than max_response";
	}
	if (h->body_len + keep + 1 > h->body_cap) {
		size_t cap = h->body_cap ? h->body_cap * 2 : 16384;
		char *p;

		if (cap < h->body_len + keep + 1)
			cap = h->body_len + keep + 1;
		if (cap > h->max_response + 1)
			cap = h->max_response + 1;
		if (!(p = realloc(h->body, cap))) {
			h->abort_error = AD_HTTP_FAILED;
			h->abort_message = "out of memory";
			return 0;
		}
		h->body = p;
		h->body_cap = cap;
	}
	memcpy(h->body + h->body_len, data, keep);
	h->body_len += keep;
	h->body[h->body_len] = '\0';
	return keep == n ? n : 0; /* anything else stops the transfer */
}

static bool hdr_reserve(struct ad_http *h, size_t more)
{
	char *p;
	size_t cap;

	if (h->hdr_len + more <= h->hdr_cap)
		return true;
	cap = h->hdr_cap ? h->hdr_cap * 2 : 1024;
	while (cap < h->hdr_len + more)
		cap *= 2;
	if (!(p = realloc(h->hdr, cap)))
		return false;
	h->hdr = p;
	h->hdr_cap = cap;
	return true;
}

static size_t headers_too_large(struct ad_http *h)
{
	h->abort_error = AD_HTTP_TOO_LARGE;
	h->abort_message = "the response headers are too large";
	return 0;
}

/*
 * CURLOPT_HEADERFUNCTION: one header line at a time.  Only the final
 * response's headers are kept (a status line starts over, after a 100
 * Continue), names lower-cased, values without surrounding blanks; a folded
 * line continues the previous value.
 */
static size_t on_header(char *line, size_t size, size_t nmemb, void *arg)
{
	struct ad_http *h = arg;
	size_t n = size * nmemb, len = n, nlen, vstart, vend;
	const char *colon;

	if (len >= 5 && !memcmp(line, "HTTP/", 5)) {
		h->hdr_len = h->nhdr = 0;
		return n;
	}
	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (!len)
		return n;
	if (line[0] == ' ' || line[0] == '\t') {
		size_t s = 0;

		if (!h->nhdr)
			return n;
		while (s < len && (line[s] == ' ' || line[s] == '\t'))
			s++;
		if (h->hdr_len + len - s + 1 > MAX_RESP_HEADER_BYTES)
			return headers_too_large(h);
		if (!hdr_reserve(h, len - s + 1))
			return headers_too_large(h);
		h->hdr[h->hdr_len - 1] = ' '; /* the value's NUL becomes a blank */
		memcpy(h->hdr + h->hdr_len, line + s, len - s);
		h->hdr_len += len - s;
		h->hdr[h->hdr_len++] = '\0';
		return n;
	}
	if (!(colon = memchr(line, ':', len)) || colon == line)
		return n; /* not a header line: nothing to keep */
	nlen = (size_t)(colon - line);
	vstart = nlen + 1;
	vend = len;
	while (vstart < vend && (line[vstart] == ' ' || line[vstart] == '\t'))
		vstart++;
	while (vend > vstart && (line[vend - 1] == ' ' || line[vend - 1] == '\t'))
		vend--;
	if (h->nhdr >= MAX_RESP_HEADERS ||
	    h->hdr_len + nlen + (vend - vstart) + 2 > MAX_RESP_HEADER_BYTES)
		return headers_too_large(h);
	if (!hdr_reserve(h, nlen + (vend - vstart) + 2))
		return headers_too_large(h);
	for (size_t i = 0; i < nlen; i++) {
		char c = line[i];

		h->hdr[h->hdr_len++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	h->hdr[h->hdr_len++] = '\0';
	memcpy(h->hdr + h->hdr_len, line + vstart, vend - vstart);
	h->hdr_len += vend - vstart;
	h->hdr[h->hdr_len++] = '\0';
	h->nhdr++;
	return n;
}

/* An RFC 9110 token: what a method may be made of. */
static bool is_token(const char *s)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";

	if (!*s || strlen(s) > MAX_METHOD)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || strchr(extra, *s)))
			return false;
	return true;
}

static bool has_header(const char *const *headers, const char *name)
{
	size_t nl = strlen(name);

	for (size_t i = 0; headers && headers[i]; i++)
		if (!strncasecmp(headers[i], name, nl) &&
		    (headers[i][nl] == ':' || headers[i][nl] == ';'))
			return true;
	return false;
}

/* Why req cannot be sent as it is, or NULL. */
static const char *check_request(const struct ad_http_request *req, const char *method)
{
	size_t n;

	if (!req->url)
		return "no URL";
	n = strlen(req->url);
	if (n > MAX_URL)
		return "the URL is too long";
	if (strncasecmp(req->url, "http://", 7) && strncasecmp(req->url, "https://", 8))
		return "only http:// and https:// URLs are allowed";
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)req->url[i] <= 0x20 || req->url[i] == 0x7f)
			return "the URL holds a blank or a control character";
	if (!is_token(method))
		return "the method is not a valid HTTP token";
	if (req->body_len && !req->body)
		return "body_len without a body";
	for (n = 0; req->headers && req->headers[n]; n++) {
		const char *line = req->headers[n];

		if (n == MAX_REQ_HEADERS)
			return "too many request headers";
		if (strlen(line) > MAX_REQ_HEADER_LINE)
			return "a request header is too long";
		if (strpbrk(line, "\r\n"))
			return "a request header holds a line break";
		if (!strchr(line, ':') && !strchr(line, ';'))
			return "a request header is not \"Name: value\"";
	}
	return NULL;
}

/* Appends to h's header list; false when out of memory. */
static bool add_header(struct ad_http *h, const char *line)
{
	struct curl_slist *l = curl_slist_append(h->headers, line);

	if (!l)
		return false;
	h->headers = l;
	return true;
}

/* Sets up h's easy handle for req; false when libcurl refused something. */
static bool setup_easy(struct ad_http *h, const struct ad_http_request *req,
		       const char *method)
{
	CURL *e = h->easy;
	uint32_t timeout = req->timeout_ms ? req->timeout_ms : DEFAULT_TIMEOUT_MS;
	bool ok = true;

	for (size_t i = 0; req->headers && req->headers[i]; i++)
		ok = ok && add_header(h, req->headers[i]);
	/* No "Expect: 100-continue" pause, no form type nobody asked for. */
	if (!has_header(req->headers, "Expect"))
		ok = ok && add_header(h, "Expect:");
	if (!has_header(req->headers, "Content-Type"))
		ok = ok && add_header(h, "Content-Type:");
	if (!ok)
		return false;

	ok = ok && !curl_easy_setopt(e, CURLOPT_URL, req->url);
	ok = ok && !curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)h);
	ok = ok && !curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->errbuf);
	ok = ok && !curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	ok = ok && !curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
	ok = ok && !curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	ok = ok && !curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	ok = ok && !curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	ok = ok && !curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	ok = ok && !curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	/*
	 * The CA bundle alone (Debian's libcurl also names /etc/ssl/certs,
	 * the same certificates hashed): libcurl caches a store it built from
	 * a file only, and building one takes ~20 ms of the loop's time.
	 */
	ok = ok && !curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
	ok = ok && !curl_easy_setopt(e, CURLOPT_PROXY, "");
	ok = ok && !curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout);
	ok = ok && !curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
				     (curl_off_t)h->max_response);
	ok = ok && !curl_easy_setopt(e, CURLOPT_USERAGENT, "actiond/" ACTIOND_VERSION);
	ok = ok && !curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
	ok = ok && !curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	ok = ok && !curl_easy_setopt(e, CURLOPT_WRITEDATA, h);
	ok = ok && !curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	ok = ok && !curl_easy_setopt(e, CURLOPT_HEADERDATA, h);
	if (!strcmp(method, "HEAD")) {
		ok = ok && !curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	} else if (req->body || (strcmp(method, "GET") && strcmp(method, "DELETE") &&
				  strcmp(method, "OPTIONS"))) {
		/* Size first: COPYPOSTFIELDS then copies exactly that many bytes. */
		ok = ok && !curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
					     (curl_off_t)req->body_len);
		ok = ok && !curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS,
					     req->body ? req->body : "");
		if (strcmp(method, "POST"))
			ok = ok && !curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	} else if (strcmp(method, "GET")) {
		ok = ok && !curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	}
	return ok;
}

/* Reports a request that never started. */
static void fail_now(ad_http_done_fn done, void *arg, enum ad_http_error error,
		     const char *message)
{
	struct ad_http_response r = { .error = error, .message = message, .body = "" };

	ad_outbound_stats.errors[error]++;
	done(arg, &r);
}

/*
 * Starts a request.  With call set, h holds the call's cancel hook and
 * reports through call_done; the hook is taken before anything can fail,
 * so every outcome goes through the same path.
 */
static struct ad_http *start(const struct ad_http_request *req, ad_http_done_fn done,
			     void *arg, struct ad_call *call,
			     ad_call_http_done_fn call_done, void *call_arg);

static void call_cancelled(struct ad_call *call, void *arg)
{
	(void)call;
	ad_http_cancel(arg);
}

struct ad_http *ad_http_fetch(const struct ad_http_request *req, ad_http_done_fn done,
			      void *arg)
{
	return start(req, done, arg, NULL, NULL, NULL);
}

static struct ad_http *start(const struct ad_http_request *req, ad_http_done_fn done,
			     void *arg, struct ad_call *call,
			     ad_call_http_done_fn call_done, void *call_arg)
{
	const char *method = req && req->method ? req->method : "GET";
	const char *why;
	struct ad_http *h;

	ad_outbound_stats.requests++;
	if (!(h = calloc(1, sizeof(*h)))) {
		if (call) {
			struct ad_http_response r = { .error = AD_HTTP_FAILED,
						      .message = "out of memory", .body = "" };

			ad_outbound_stats.errors[AD_HTTP_FAILED]++;
			call_done(call, call_arg, &r);
		} else {
			fail_now(done, arg, AD_HTTP_FAILED, "out of memory");
		}
		return NULL;
	}
	h->done = done;
	h->arg = arg;
	h->call = call;
	h->call_done = call_done;
	h->call_arg = call_arg;
	h->start_us = lws_now_usecs();
	if (call) {
		h->done = call_done_trampoline;
		h->arg = h;
		ad_call_on_cancel(call, call_cancelled, h);
	}
	why = !started ? "outbound HTTP is not running" : req ? check_request(req, method)
							      : "no request";
	if (!why && ad_outbound_stats.inflight >= MAX_INFLIGHT) {
		ad_outbound_stats.refused++;
		why = "too many outbound requests in flight";
	}
	if (!why && call && ad_call_is_cancelled(call)) {
		struct ad_http_response r = { .error = AD_HTTP_CANCELLED,
					      .message = "the call was cancelled", .body = "" };

		ad_outbound_stats.errors[AD_HTTP_CANCELLED]++;
		call_done_trampoline(h, &r);
		free(h);
		return NULL;
	}
	if (!why) {
		h->max_response = req->max_response ? req->max_response : DEFAULT_MAX_RESPONSE;
		if (h->max_response > MAX_MAX_RESPONSE)
			h->max_response = MAX_MAX_RESPONSE;
		if (!(h->easy = curl_easy_init()) || !setup_easy(h, req, method))
			why = "the request could not be set up";
		else if (curl_multi_add_handle(multi, h->easy))
			why = "the request could not be started";
	}
	if (why) {
		fail_now(h->done, h->arg, AD_HTTP_FAILED, why);
		request_free(h);
		return NULL;
	}
	ad_list_add_tail(&inflight, &h->node);
	ad_outbound_stats.inflight++;
	return h;
}

void ad_http_cancel(struct ad_http *h)
{
	if (!h)
		return;
	finish(h, AD_HTTP_CANCELLED, "cancelled");
}

void ad_call_http(struct ad_call *call, const struct ad_http_request *req,
		  ad_call_http_done_fn done, void *arg)
{
	start(req, NULL, NULL, call, done, arg);
}

const char *ad_http_header(const struct ad_http_response *r, const char *name)
{
	for (size_t i = 0; i < r->nheaders; i++)
		if (!strcmp(r->header_names[i], name))
			return r->header_values[i];
	return NULL;
}

/* ---- start and stop -------------------------------------------------------- */

int ad_outbound_init(void)
{
	const curl_version_info_data *v;

	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		ad_log_error("outbound HTTP: libcurl did not initialise");
		return -1;
	}
	v = curl_version_info(CURLVERSION_NOW);
	if (!(v->features & CURL_VERSION_ASYNCHDNS)) {
		ad_log_error("outbound HTTP: libcurl %s resolves host names on the calling "
			     "thread (no AsynchDNS), which would block the event loop",
			     v->version);
		goto fail;
	}
	if (v->version_num < 0x075700) {
		ad_log_error("outbound HTTP: libcurl %s is older than 7.87", v->version);
		goto fail;
	}
	if (!(v->features & CURL_VERSION_SSL)) {
		ad_log_error("outbound HTTP: libcurl %s has no TLS", v->version);
		goto fail;
	}
	if (!(multi = curl_multi_init()))
		goto fail;
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	ad_list_init(&inflight);
	ad_list_init(&socks);
	started = true;
	ad_log_debug("outbound HTTP: libcurl %s, %s", v->version,
		     v->ssl_version ? v->ssl_version : "");
	return 0;
fail:
	curl_global_cleanup();
	return -1;
}

void ad_outbound_shutdown(void)
{
	if (!started)
		return;
	while (!ad_list_empty(&inflight))
		finish(ad_container_of(ad_list_first(&inflight), struct ad_http, node),
		       AD_HTTP_CANCELLED, "shutting down");
	started = false;
	curl_multi_cleanup(multi); /* closes cached connections */
	multi = NULL;
	while (!ad_list_empty(&socks))
		sock_release(ad_container_of(ad_list_first(&socks), struct csock, node));
	lws_sul_cancel(&timer_sul);
	curl_global_cleanup();
}

void ad_outbound_metrics(struct ad_buf *b)
{
	ad_buf_metric(b, "actiond_http_client_requests_total", "counter",
		      "Outbound HTTP requests asked for by actions.", ad_outbound_stats.requests);
	ad_buf_metric(b, "actiond_http_client_inflight", "gauge",
		      "Outbound HTTP requests in flight.", ad_outbound_stats.inflight);
	ad_buf_metric(b, "actiond_http_client_refused_total", "counter",
		      "Outbound HTTP requests refused at once: too many in flight.",
		      ad_outbound_stats.refused);
	ad_buf_puts(b, "# HELP actiond_http_client_errors_total Outbound HTTP requests "
		       "that failed, by kind.\n"
		       "# TYPE actiond_http_client_errors_total counter\n");
	for (int k = 1; k < AD_OUTBOUND_KINDS; k++)
		ad_buf_printf(b, "actiond_http_client_errors_total{kind=\"%s\"} %llu\n",
			      ad_outbound_kind_name(k),
			      (unsigned long long)ad_outbound_stats.errors[k]);
}
