/*
 * test_outq.c - frame building and the per-connection ring of src/outq.c.
 */
#include "check.h"
#include "outq.h"

#include <libwebsockets.h>

#include <stdlib.h>

static void frame_header(size_t len, const unsigned char *want, size_t wlen)
{
	char *payload = malloc(len + 1);
	struct ad_msg *m;

	memset(payload, 'p', len);
	m = ad_msg_new(payload, len);
	CHECK(m && m->frame_len == wlen + len);
	CHECK(m && memcmp(ad_msg_frame(m), want, wlen) == 0);
	CHECK(m && memcmp(ad_msg_frame(m) + wlen, payload, len) == 0);
	/* lws_write() may use the LWS_PRE bytes in front of what it is given. */
	if (m)
		memset((unsigned char *)ad_msg_frame(m) - LWS_PRE, 0xa5, LWS_PRE);
	CHECK(m && m->refs == 1 && m->frame_len == wlen + len);
	CHECK(m && memcmp(ad_msg_frame(m), want, wlen) == 0);
	ad_msg_unref(m);
	free(payload);
}

int main(void)
{
	static const unsigned char h5[] = { 0x81, 5 };
	static const unsigned char h125[] = { 0x81, 125 };
	static const unsigned char h126[] = { 0x81, 126, 0, 126 };
	static const unsigned char h65535[] = { 0x81, 126, 0xff, 0xff };
	static const unsigned char h65536[] = { 0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0 };
	struct ad_outq q = { 0 };
	struct ad_msg *a, *b;

	frame_header(5, h5, sizeof(h5));
	frame_header(125, h125, sizeof(h125));
	frame_header(126, h126, sizeof(h126));
	frame_header(65535, h65535, sizeof(h65535));
	frame_header(65536, h65536, sizeof(h65536));

	/* A shared message is freed only when its last queue lets go. */
	a = ad_msg_new("hello", 5);
	b = ad_msg_new("x", 1);
	for (int i = 0; i < 100; i++) /* grows the ring across wrap-arounds */
		CHECK(ad_outq_push(&q, i % 3 ? a : b));
	CHECK(q.count == 100 && a->refs == 67 && b->refs == 35);
	CHECK(q.bytes == 66 * 7 + 34 * 3);
	for (int i = 0; i < 60; i++) {
		CHECK(ad_outq_peek(&q) == (i % 3 ? a : b));
		ad_outq_pop(&q);
	}
	for (int i = 0; i < 30; i++)
		CHECK(ad_outq_push(&q, a));
	CHECK(q.count == 70);
	for (int i = 60; i < 100; i++) {
		CHECK(ad_outq_peek(&q) == (i % 3 ? a : b));
		ad_outq_pop(&q);
	}
	CHECK(ad_outq_peek(&q) == a);
	ad_outq_clear(&q);
	CHECK(q.count == 0 && q.bytes == 0 && q.ring == NULL && ad_outq_peek(&q) == NULL);
	CHECK(a->refs == 1 && b->refs == 1);
	ad_msg_unref(a);
	ad_msg_unref(b);
	return check_summary("outq");
}
