/*
 * console.c - the browser console and the JavaScript client, compiled into
 * the binary (console/ and the client generated from protocol/) and served
 * by the transport (ad_http_set_files).
 *
 * At start each file gets a content hash (BLAKE2b, 16 hex digits).  The
 * files that name others (the page names the script and the style sheet,
 * the script imports the client) have those names rewritten to hashed
 * ones, /console/app.<hash>.js, so that a hashed name is served as
 * immutable for a year while the page itself is revalidated on every load
 * (no-cache with its ETag).  The unhashed names are served too,
 * revalidated, for whoever links them (a page of one's own importing
 * /client/actiond-client.mjs).
 *
 * The page's policy: scripts, styles and connections from this origin
 * only, nothing inline, no framing.
 */
#include "console.h"
#include "http.h"
#include "log.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const struct ad_module_text ad_console_files[];
extern const size_t ad_console_files_count;

#define CSP                                                                           \
	"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " \
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
#define IMMUTABLE "public, max-age=31536000, immutable"
#define REVALIDATE "no-cache"
#define MAX_FILES 16

/* One embedded file as served: its plain and hashed paths. */
struct asset {
	char plain[96];
	char hashed[128];
	char *body;               /* after rewriting */
	size_t len;
	char etag[40];
	struct ad_http_file plain_f, hashed_f;
};

static struct asset assets[MAX_FILES];
static size_t nassets;
static const struct ad_http_file *index_f;

/* Where an embedded file is served, by its name in the source tree. */
static const struct {
	const char *name, *path, *ctype;
} places[] = {
	{ "actiond-client.mjs", "/client/actiond-client.mjs", "text/javascript; charset=utf-8" },
	{ "actiond-client.d.ts", "/client/actiond-client.d.ts", "text/plain; charset=utf-8" },
	{ "app.css", "/console/app.css", "text/css; charset=utf-8" },
	{ "app.js", "/console/app.js", "text/javascript; charset=utf-8" },
	{ "index.html", "/console/index.html", "text/html; charset=utf-8" },
};

/* body with every occurrence of from replaced by to (a new string). */
static char *replace_all(const char *body, size_t len, const char *from, const char *to,
			 size_t *ret_len)
{
	size_t fl = strlen(from), tl = strlen(to), count = 0, o = 0;
	const char *p = body, *end = body + len, *hit;
	char *out;

	while ((hit = memmem(p, (size_t)(end - p), from, fl))) {
		count++;
		p = hit + fl;
	}
	if (!(out = malloc(len + count * (tl > fl ? tl - fl : 0) + 1)))
		return NULL;
	for (p = body; (hit = memmem(p, (size_t)(end - p), from, fl)); p = hit + fl) {
		memcpy(out + o, p, (size_t)(hit - p));
		o += (size_t)(hit - p);
		memcpy(out + o, to, tl);
		o += tl;
	}
	memcpy(out + o, p, (size_t)(end - p));
	o += (size_t)(end - p);
	out[o] = '\0';
	*ret_len = o;
	return out;
}

/* Makes an asset of text, naming the assets made before it by their hashed paths. */
static int asset_make(const char *path, const char *ctype, const char *data, size_t len)
{
	struct asset *a = &assets[nassets];
	unsigned char h[8];
	char hex[17];
	const char *dot;

	if (nassets == MAX_FILES || !(a->body = malloc(len + 1)))
		return -1;
	memcpy(a->body, data, len);
	a->body[len] = '\0';
	a->len = len;
	for (size_t i = 0; i < nassets; i++) {
		size_t n;
		char *r = replace_all(a->body, a->len, assets[i].plain, assets[i].hashed, &n);

		if (!r)
			return -1;
		free(a->body);
		a->body = r;
		a->len = n;
	}
	crypto_generichash(h, sizeof(h), (const unsigned char *)a->body, a->len, NULL, 0);
	sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
	snprintf(a->plain, sizeof(a->plain), "%s", path);
	dot = strrchr(path, '.');
	snprintf(a->hashed, sizeof(a->hashed), "%.*s.%s%s", (int)(dot - path), path, hex, dot);
	snprintf(a->etag, sizeof(a->etag), "\"%s\"", hex);
	a->plain_f = (struct ad_http_file){ ctype, REVALIDATE, a->etag, NULL, a->body, a->len };
	a->hashed_f = (struct ad_http_file){ ctype, IMMUTABLE, a->etag, NULL, a->body, a->len };
	if (!strcmp(path, "/console/index.html")) {
		a->plain_f.csp = CSP;
		index_f = &a->plain_f;
	}
	nassets++;
	return 0;
}

static const struct ad_http_file *lookup(const char *path)
{
	if (!strcmp(path, "/") && index_f)
		return index_f;
	for (size_t i = 0; i < nassets; i++) {
		if (!strcmp(path, assets[i].plain))
			return &assets[i].plain_f;
		if (!strcmp(path, assets[i].hashed))
			return &assets[i].hashed_f;
	}
	return NULL;
}

int ad_console_init(void)
{
	/* In the order of places: a file may name only those before it. */
	for (size_t k = 0; k < sizeof(places) / sizeof(places[0]); k++)
		for (size_t i = 0; i < ad_console_files_count; i++)
			if (!strcmp(ad_console_files[i].name, places[k].name) &&
			    asset_make(places[k].path, places[k].ctype, ad_console_files[i].data,
				       ad_console_files[i].len)) {
				ad_log_error("the console's files could not be prepared");
				return -1;
			}
	ad_http_set_files(lookup);
	return 0;
}

void ad_console_fini(void)
{
	ad_http_set_files(NULL);
	for (size_t i = 0; i < nassets; i++)
		free(assets[i].body);
	nassets = 0;
	index_f = NULL;
}
