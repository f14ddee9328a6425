/*
 * buf.c - growable byte buffer and compact JSON writers.
 */
#include "buf.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool ad_buf_reserve(struct ad_buf *b, size_t extra)
{
	size_t need, cap;
	char *p;

	if (b->oom)
		return false;
	need = b->len + extra + 1; /* keep room for a terminating NUL */
	if (need <= b->cap)
		return true;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	p = realloc(b->data, cap);
	if (!p) {
		b->oom = true;
		return false;
	}
	b->data = p;
	b->cap = cap;
	return true;
}

void ad_buf_append(struct ad_buf *b, const void *p, size_t n)
{
	if (!n || !ad_buf_reserve(b, n)) /* nothing: p may be NULL */
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void ad_buf_puts(struct ad_buf *b, const char *s)
{
	ad_buf_append(b, s, strlen(s));
}

void ad_buf_putc(struct ad_buf *b, char c)
{
	if (!ad_buf_reserve(b, 1))
		return;
	b->data[b->len++] = c;
	b->data[b->len] = '\0';
}

void ad_buf_printf(struct ad_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !ad_buf_reserve(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void ad_buf_reset(struct ad_buf *b)
{
	b->len = 0;
	b->oom = false;
	if (b->data)
		b->data[0] = '\0';
}

void ad_buf_free(struct ad_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
	b->oom = false;
}

size_t ad_fmt_int(char out[24], long long v)
{
	char tmp[24], *p = tmp + sizeof(tmp);
	unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
	size_t n;

	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		*--p = '-';
	n = (size_t)(tmp + sizeof(tmp) - p);
	memcpy(out, p, n);
	out[n] = '\0';
	return n;
}

void ad_buf_int(struct ad_buf *b, long long v)
{
	char tmp[24];
	size_t n = ad_fmt_int(tmp, v);

	ad_buf_append(b, tmp, n);
}

void ad_buf_json_str(struct ad_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, run = 0;

	if (!ad_buf_reserve(b, n + 2))
		return;
	ad_buf_putc(b, '"');
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[6];
		size_t elen = 2;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		ad_buf_append(b, s + run, i - run);
		run = i + 1;
		esc[0] = '\\';
		switch (c) {
		case '"': esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		default:
			esc[1] = 'u';
			esc[2] = '0';
			esc[3] = '0';
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			elen = 6;
		}
		ad_buf_append(b, esc, elen);
	}
	ad_buf_append(b, s + run, n - run);
	ad_buf_putc(b, '"');
}

int ad_fmt_real(char *out, double d)
{
	/* Formatted in a local buffer: with -O3 and UBSan, gcc 12 sees a NULL
	 * path through snprintf(out, ...) that cannot happen. */
	char tmp[32];
	int n = 0;

	if (!isfinite(d)) {
		memcpy(out, "null", 5);
		return 4;
	}
	for (int prec = 15; prec <= 17; prec++) {
		n = snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
		if (strtod(tmp, NULL) == d)
			break;
	}
	if (!strpbrk(tmp, ".eEn"))
		n += snprintf(tmp + n, sizeof(tmp) - (size_t)n, ".0");
	memcpy(out, tmp, (size_t)n + 1);
	return n;
}

void ad_buf_json(struct ad_buf *b, const json_t *v)
{
	char num[32];
	int n;

	switch (json_typeof(v)) {
	case JSON_NULL:
		ad_buf_append(b, "null", 4);
		break;
	case JSON_TRUE:
		ad_buf_append(b, "true", 4);
		break;
	case JSON_FALSE:
		ad_buf_append(b, "false", 5);
		break;
	case JSON_INTEGER:
		ad_buf_int(b, json_integer_value(v));
		break;
	case JSON_REAL:
		n = ad_fmt_real(num, json_real_value(v));
		ad_buf_append(b, num, (size_t)n);
		break;
	case JSON_STRING:
		ad_buf_json_str(b, json_string_value(v), json_string_length(v));
		break;
	case JSON_ARRAY: {
		size_t i;
		json_t *e;

		ad_buf_putc(b, '[');
		json_array_foreach(v, i, e) {
			if (i)
				ad_buf_putc(b, ',');
			ad_buf_json(b, e);
		}
		ad_buf_putc(b, ']');
		break;
	}
	case JSON_OBJECT: {
		const char *k;
		json_t *e;
		bool first = true;

		ad_buf_putc(b, '{');
		/* json_object_foreach keeps insertion order in jansson >= 2.8. */
		json_object_foreach((json_t *)v, k, e) {
			if (!first)
				ad_buf_putc(b, ',');
			first = false;
			ad_buf_json_str(b, k, strlen(k));
			ad_buf_putc(b, ':');
			ad_buf_json(b, e);
		}
		ad_buf_putc(b, '}');
		break;
	}
	}
}

size_t ad_utf8_valid_prefix(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < n) {
		unsigned char c = p[i];
		size_t len;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			len = 2;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4;
			cp = c & 0x07;
		} else {
			break;
		}
		if (i + len > n)
			break;
		for (size_t k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return i;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
			break;
		i += len;
	}
	return i;
}

void ad_buf_metric(struct ad_buf *b, const char *name, const char *type,
		   const char *help, uint64_t v)
{
	ad_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name,
		      type, name, (unsigned long long)v);
}
