/*
 * buf.h - a growable byte buffer and the JSON text writers built on it.
 *
 * The writers produce compact JSON with exactly the escaping RFC 8259 needs;
 * they are what the hot path uses to frame JSON-RPC envelopes around values
 * without going through a DOM.
 */
#ifndef AD_BUF_H
#define AD_BUF_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ad_buf {
	char *data;
	size_t len;
	size_t cap;
	bool oom; /* set once an allocation failed; later appends are no-ops */
};

#define AD_BUF_INIT { NULL, 0, 0, false }

/* Ensures room for extra more bytes; returns false (and sets oom) on failure. */
bool ad_buf_reserve(struct ad_buf *b, size_t extra);
void ad_buf_append(struct ad_buf *b, const void *p, size_t n);
void ad_buf_puts(struct ad_buf *b, const char *s);
void ad_buf_putc(struct ad_buf *b, char c);
void ad_buf_printf(struct ad_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void ad_buf_reset(struct ad_buf *b);
/* Frees the storage; the buffer is empty and usable afterwards. */
void ad_buf_free(struct ad_buf *b);

/* Appends a decimal integer (no printf on the hot path). */
void ad_buf_int(struct ad_buf *b, long long v);
/* Writes v in decimal with its NUL into out; returns the length. */
size_t ad_fmt_int(char out[24], long long v);

/* Appends s (n bytes, UTF-8) as a quoted JSON string. */
void ad_buf_json_str(struct ad_buf *b, const char *s, size_t n);
/*
 * Appends v as compact JSON.  Reals are written in the shortest form that
 * reads back to the same double, so an id such as 0.1 is echoed as 0.1.
 */
void ad_buf_json(struct ad_buf *b, const json_t *v);

/* One Prometheus metric without labels: HELP, TYPE and its value. */
void ad_buf_metric(struct ad_buf *b, const char *name, const char *type,
		   const char *help, uint64_t v);

/*
 * Formats a double in its shortest round-trip form into out (at least 32
 * bytes); returns the length.  Integral values keep a ".0" so they stay reals.
 */
int ad_fmt_real(char *out, double d);

/* Length of the longest prefix of s[0..n) that is valid UTF-8. */
size_t ad_utf8_valid_prefix(const char *s, size_t n);

#endif
