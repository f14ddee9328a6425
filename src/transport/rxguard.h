/*
 * rxguard.h - the bytes a client sends, checked on their way into
 * libwebsockets.
 *
 * lws 4.1 parses WebSocket frames itself and lets some violations of
 * RFC 6455 through: it accepts unmasked client frames, echoes close frames
 * whose code is not allowed on the wire, drops the connection without a
 * close frame on a control frame over 125 bytes, and says nothing of any of
 * it to the protocol callback.  The frame header that tells (the mask bit,
 * the length) never reaches a callback.  So actiond reads the bytes before
 * lws does: recv() and SSL_read() are defined in rxguard.c and stand in for
 * libc's and OpenSSL's in the whole process.  Descriptors that are not
 * client connections (the database, outbound HTTP, the listener) pass
 * straight through.  A client connection is, by mode:
 *
 *   HEADERS  reading a request's headers: watched for where the header
 *            block ends, so that an upgrade is accepted only if lws holds
 *            no byte sent after it, and the frame check starts at the
 *            first byte of the WebSocket;
 *   BODY     reading a request body: passed through;
 *   WS       a WebSocket: every frame header is checked; at the first
 *            violation lws gets only the bytes before it, and the
 *            connection is closed with 1002 and a short reason;
 *   FAILED   after a violation: read and discarded (the close frame is
 *            sent from the writable callback), watching for the peer's
 *            close frame to hang up once it came.
 */
#ifndef AD_RXGUARD_H
#define AD_RXGUARD_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ad_rxg_mode {
	AD_RXG_OFF = 0,
	AD_RXG_HEADERS,
	AD_RXG_BODY,
	AD_RXG_WS,
	AD_RXG_FAILED,
};

/* The WebSocket close code for a protocol violation. */
#define AD_CLOSE_PROTOCOL 1002

/* One client connection's read state; embedded in struct ad_peer. */
struct ad_rxguard {
	struct lws *wsi;
	int fd;
	uint8_t mode;            /* enum ad_rxg_mode */
	bool tls;                /* read through SSL_read(), not recv() */
	uint64_t rx_bytes;       /* handed to lws so far (for TLS: plaintext) */
	/* HEADERS */
	uint8_t eol;             /* 0: in a line, 1: after LF, 2: after LF CR */
	bool at_header_end;      /* the last byte handed out ended a header block */
	bool overread;           /* bytes came behind a header block */
	int64_t req_start_us;    /* when the first byte of this request came */
	/* WS and FAILED: the frame being read */
	uint8_t hdr[14];
	uint8_t hdr_len, hdr_need;
	uint8_t opcode;
	bool in_message;         /* a fragmented data message is open */
	uint64_t payload_left;
	uint64_t payload_pos;    /* payload bytes of this frame seen */
	uint8_t close_code[2];   /* unmasked first two bytes of a close frame */
	const char *why;         /* the violation, for the close frame */
	bool peer_close;         /* the client's close frame came after it */
	lws_sorted_usec_list_t sul; /* reports the violation after lws's read */
};

/*
 * Prepares the descriptor table (sized by RLIMIT_NOFILE) and looks up the
 * real SSL_read(); once, on the loop thread, before any connection.
 * Returns 0, or -1 if memory ran out.
 */
int ad_rxguard_init(void);
void ad_rxguard_free(void);

/*
 * Starts guarding wsi's descriptor in HEADERS mode (tls: it is read with
 * SSL_read).  g must stay put until ad_rxguard_detach().
 */
void ad_rxguard_attach(struct ad_rxguard *g, struct lws *wsi, bool tls);
void ad_rxguard_detach(struct ad_rxguard *g);

/* Switches modes: BODY once a request's headers are in, HEADERS after its
 * answer, WS at the upgrade (the frame parser starts afresh). */
void ad_rxguard_set_mode(struct ad_rxguard *g, enum ad_rxg_mode mode);

/*
 * True if an upgrade request may become a WebSocket: the last byte lws took
 * from the socket ended the request's headers and nothing came behind them
 * since the previous exchange, so whatever the client sent after it is
 * still in the kernel and will be checked as frames.
 */
bool ad_rxguard_upgrade_ok(const struct ad_rxguard *g);

/*
 * The frame check on its own (tests and the fuzz driver use it): feeds n
 * bytes of a client's WebSocket stream to g, which must be in WS or FAILED
 * mode.  Returns how many leading bytes may be handed to lws: n, or the
 * offset of the byte that revealed a violation, after which g is FAILED
 * with g->why set.  Bytes after a violation are still parsed (leniently);
 * *ret_peer_close is set if a complete close frame was seen in FAILED mode.
 */
size_t ad_rxguard_scan_ws(struct ad_rxguard *g, const uint8_t *p, size_t n,
			  bool *ret_peer_close);

/*
 * Follows n bytes read in HEADERS mode: where header blocks end (a blank
 * line), whether bytes came behind one, and when a request began.
 */
void ad_rxguard_scan_headers(struct ad_rxguard *g, const uint8_t *p, size_t n);

/* True if a close frame may carry code (RFC 6455 7.4 and IANA's registry). */
bool ad_close_code_valid(unsigned code);

#endif
