/*
 * outq.c - shared outgoing frames and the per-connection ring of them.
 */
#include "outq.h"

#include <stdlib.h>

_Static_assert(AD_MSG_HDR_END <= 255, "hdr_off must fit in a byte");
#include <string.h>

struct ad_msg *ad_msg_new(const char *payload, size_t len)
{
	struct ad_msg *m = malloc(sizeof(*m) + AD_MSG_HDR_END + len);
	unsigned char *h;
	int hl;

	if (!m)
		return NULL;
	hl = len < 126 ? 2 : len < 65536 ? 4 : 10;
	m->refs = 1;
	m->hdr_off = (uint8_t)(AD_MSG_HDR_END - hl);
	m->frame_len = (uint32_t)(hl + len);
	h = m->data + m->hdr_off;
	h[0] = 0x81; /* FIN | text */
	if (hl == 2) {
		h[1] = (unsigned char)len;
	} else if (hl == 4) {
		h[1] = 126;
		h[2] = (unsigned char)(len >> 8);
		h[3] = (unsigned char)len;
	} else {
		h[1] = 127;
		for (int i = 0; i < 8; i++)
			h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
	}
	memcpy(m->data + AD_MSG_HDR_END, payload, len);
	return m;
}

struct ad_msg *ad_msg_ref(struct ad_msg *m)
{
	m->refs++;
	return m;
}

struct ad_msg *ad_msg_unref(struct ad_msg *m)
{
	if (m && --m->refs == 0)
		free(m);
	return NULL;
}

bool ad_outq_push(struct ad_outq *q, struct ad_msg *m)
{
	if (q->count == q->cap) {
		uint32_t cap = q->cap ? q->cap * 2 : 8;
		struct ad_msg **r = malloc(cap * sizeof(*r));

		if (!r)
			return false;
		/* Unwrap the ring into the new array. */
		for (uint32_t i = 0; i < q->count; i++)
			r[i] = q->ring[(q->head + i) & (q->cap - 1)];
		free(q->ring);
		q->ring = r;
		q->cap = cap;
		q->head = 0;
	}
	q->ring[(q->head + q->count) & (q->cap - 1)] = ad_msg_ref(m);
	q->count++;
	q->bytes += m->frame_len;
	return true;
}

void ad_outq_pop(struct ad_outq *q)
{
	struct ad_msg *m = q->ring[q->head];

	q->bytes -= m->frame_len;
	q->head = (q->head + 1) & (q->cap - 1);
	q->count--;
	ad_msg_unref(m);
}

void ad_outq_clear(struct ad_outq *q)
{
	while (q->count)
		ad_outq_pop(q);
	free(q->ring);
	q->ring = NULL;
	q->cap = q->head = 0;
	q->bytes = 0;
}
