/*
 * outq.h - outgoing WebSocket messages and the per-connection queue.
 *
 * An ad_msg is one serialised text frame (header included), refcounted so a
 * broadcast is built once and shared by every recipient.  A connection's
 * queue is a ring of message pointers plus a byte count, allocated on first
 * use, so an idle connection costs nothing here.
 */
#ifndef AD_OUTQ_H
#define AD_OUTQ_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * data holds LWS_PRE bytes that lws_write() may use, then the frame header
 * (2 to 10 bytes, right-aligned in 10) and the payload, so that a frame can
 * be handed to lws where it lies.
 */
struct ad_msg {
	uint32_t refs;
	uint32_t frame_len;    /* header + payload bytes */
	uint8_t hdr_off;       /* the frame starts at data + hdr_off */
	unsigned char data[];  /* [LWS_PRE][up to 10 bytes of header][payload] */
};
#define AD_MSG_HDR_END (LWS_PRE + 10)

/* Builds a final, unmasked text frame around a copy of payload. */
struct ad_msg *ad_msg_new(const char *payload, size_t len);
struct ad_msg *ad_msg_ref(struct ad_msg *m);
/* Drops a reference; accepts NULL; returns NULL. */
struct ad_msg *ad_msg_unref(struct ad_msg *m);

static inline const unsigned char *ad_msg_frame(const struct ad_msg *m)
{
	return m->data + m->hdr_off;
}

/* The payload (the JSON text) of m and its length. */
static inline const char *ad_msg_payload(const struct ad_msg *m, size_t *ret_len)
{
	*ret_len = m->frame_len - (size_t)(AD_MSG_HDR_END - m->hdr_off);
	return (const char *)m->data + AD_MSG_HDR_END;
}

struct ad_outq {
	struct ad_msg **ring;
	uint32_t cap, head, count;
	size_t bytes; /* frame bytes queued, not yet handed to the socket */
};

/* Appends m (taking a new reference); false on allocation failure. */
bool ad_outq_push(struct ad_outq *q, struct ad_msg *m);
static inline struct ad_msg *ad_outq_peek(const struct ad_outq *q)
{
	return q->count ? q->ring[q->head] : NULL;
}
/* Removes the head and drops the queue's reference to it. */
void ad_outq_pop(struct ad_outq *q);
/* Empties the queue and frees its ring. */
void ad_outq_clear(struct ad_outq *q);

#endif
