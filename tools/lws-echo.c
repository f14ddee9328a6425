/*
 * lws-echo - reference WebSocket echo server on libwebsockets 4.1.
 *
 * Written the way the libwebsockets minimal examples write an echo server
 * (minimal-ws-server-echo pattern): default poll event loop, every received
 * message is copied into a per-connection ring and echoed back from
 * LWS_CALLBACK_SERVER_WRITEABLE with exactly one lws_write() per callback.
 * rx flow control is switched off while the ring is full and back on once
 * it has drained to half.
 *
 * It does no JSON parsing and no dispatch, so it is the ceiling for any
 * server built on this libwebsockets: same library, same event loop, the
 * least possible work per message.
 *
 *   lws-echo [-p PORT]        listens on 127.0.0.1:PORT (default 7681)
 *
 * Subprotocol "actiond.v1"; connections that ask for no subprotocol are
 * accepted too (bound to the same, default, protocol).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <libwebsockets.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define RING_DEPTH 64

struct echo_msg {
	void *payload; /* malloc'd, LWS_PRE bytes of headroom in front */
	size_t len;
	unsigned char binary;
	unsigned char first;
	unsigned char final;
};

struct echo_pss {
	struct lws_ring *ring;
	uint32_t tail;
	unsigned char flow_controlled;
};

static struct lws_context *context;
static volatile sig_atomic_t interrupted;

static void echo_msg_destroy(void *m)
{
	struct echo_msg *msg = m;

	free(msg->payload);
	msg->payload = NULL;
	msg->len = 0;
}

static int callback_echo(struct lws *wsi, enum lws_callback_reasons reason,
			 void *user, void *in, size_t len)
{
	struct echo_pss *pss = user;
	const struct echo_msg *pm;
	struct echo_msg amsg;
	size_t nfree;
	int n, flags;

	switch (reason) {
	case LWS_CALLBACK_ESTABLISHED:
		pss->ring = lws_ring_create(sizeof(struct echo_msg), RING_DEPTH,
					    echo_msg_destroy);
		if (!pss->ring)
			return 1;
		pss->tail = 0;
		pss->flow_controlled = 0;
		break;

	case LWS_CALLBACK_RECEIVE:
		if (!pss->ring)
			return 1;
		nfree = lws_ring_get_count_free_elements(pss->ring);
		if (!nfree) {
			/* cannot happen with rx flow control, but be safe */
			lwsl_err("lws-echo: ring full, dropping message\n");
			break;
		}
		amsg.first = (unsigned char)lws_is_first_fragment(wsi);
		amsg.final = (unsigned char)lws_is_final_fragment(wsi);
		amsg.binary = (unsigned char)lws_frame_is_binary(wsi);
		amsg.len = len;
		amsg.payload = malloc(LWS_PRE + len);
		if (!amsg.payload) {
			lwsl_err("lws-echo: OOM, dropping message\n");
			break;
		}
		if (len)
			memcpy((char *)amsg.payload + LWS_PRE, in, len);
		if (!lws_ring_insert(pss->ring, &amsg, 1)) {
			echo_msg_destroy(&amsg);
			lwsl_err("lws-echo: ring insert failed\n");
			break;
		}
		lws_callback_on_writable(wsi);

		if (nfree <= 1 && !pss->flow_controlled) {
			/* that filled the ring: stop reading from this peer */
			pss->flow_controlled = 1;
			lws_rx_flow_control(wsi, 0);
		}
		break;

	case LWS_CALLBACK_SERVER_WRITEABLE:
		if (!pss->ring)
			break;
		pm = lws_ring_get_element(pss->ring, &pss->tail);
		if (!pm)
			break;

		flags = lws_write_ws_flags(pm->binary ? LWS_WRITE_BINARY :
							LWS_WRITE_TEXT,
					   pm->first, pm->final);
		n = lws_write(wsi, (unsigned char *)pm->payload + LWS_PRE,
			      pm->len, (enum lws_write_protocol)flags);
		if (n < (int)pm->len) {
			lwsl_err("lws-echo: write failed (%d)\n", n);
			return -1;
		}
		lws_ring_consume_single_tail(pss->ring, &pss->tail, 1);

		/* exactly one write per WRITEABLE: come back for the rest */
		if (lws_ring_get_element(pss->ring, &pss->tail))
			lws_callback_on_writable(wsi);

		if (pss->flow_controlled &&
		    lws_ring_get_count_free_elements(pss->ring) >= RING_DEPTH / 2) {
			pss->flow_controlled = 0;
			lws_rx_flow_control(wsi, 1);
		}
		break;

	case LWS_CALLBACK_CLOSED:
		if (pss->ring) {
			lws_ring_destroy(pss->ring);
			pss->ring = NULL;
		}
		break;

	default:
		break;
	}

	return 0;
}

static struct lws_protocols protocols[] = {
	/* index 0: also the default for upgrades that name no subprotocol */
	{ "actiond.v1", callback_echo, sizeof(struct echo_pss), 0, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 }
};

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
	if (context)
		lws_cancel_service(context);
}

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, const char **argv)
{
	struct lws_context_creation_info info;
	struct sigaction sa;
	const char *p;
	int n = 0, port = 7681;

	if (lws_cmdline_option(argc, argv, "-h")) {
		fprintf(stdout, "usage: lws-echo [-p PORT]   (listens on 127.0.0.1)\n");
		return 0;
	}
	if ((p = lws_cmdline_option(argc, argv, "-p")))
		port = atoi(p);
	if (port <= 0 || port > 65535) {
		fprintf(stderr, "lws-echo: bad port\n");
		return 2;
	}

	raise_nofile();
	lws_set_log_level(LLL_ERR, NULL);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	memset(&info, 0, sizeof(info));
	info.port = port;
	info.iface = "127.0.0.1";
	info.protocols = protocols;
	info.pt_serv_buf_size = 32 * 1024;
	info.options = LWS_SERVER_OPTION_DISABLE_IPV6;

	context = lws_create_context(&info);
	if (!context) {
		fprintf(stderr, "lws-echo: lws init failed (port %d in use?)\n", port);
		return 1;
	}
	fprintf(stderr, "lws-echo: listening on ws://127.0.0.1:%d/ (subprotocol actiond.v1)\n",
		port);

	while (n >= 0 && !interrupted)
		n = lws_service(context, 0);

	lws_context_destroy(context);
	return 0;
}
