/*
 * json.h - reading JSON text into jansson values, quickly.
 *
 * jansson's reader takes a character at a time through a stream with a
 * UTF-8 check and a buffer append for each: 26,500 instructions to read a
 * 111-byte JSON-RPC request into values and free them, a third of what
 * actiond spent on a database read; 9,400 here, most of them jansson's
 * allocations.  ad_json_loadb() reads the same text in one pass over the bytes and
 * builds the same values; whatever it does not decide itself (any text
 * jansson refuses, and a few rare shapes) it hands to json_loadb(), so the
 * result, and every error message, are jansson's.
 */
#ifndef AD_JSON_H
#define AD_JSON_H

#include <jansson.h>
#include <stddef.h>

/*
 * An integer beyond int64 (jansson refuses those) read as a real instead:
 * how PostgreSQL's jsonb writes a number such as 1e300 (all its digits, no
 * exponent), which must read back as the number it is.
 */
#define AD_JSON_BIG_AS_REAL 0x10000u

/*
 * json_loadb(buf, len, flags, err) with the same result.  The fast reader
 * takes JSON_DECODE_ANY, JSON_REJECT_DUPLICATES, JSON_ALLOW_NUL and
 * AD_JSON_BIG_AS_REAL; other flags go straight to jansson.
 */
json_t *ad_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *err);

/*
 * The fast reader alone: the value, or NULL when it leaves the text to
 * jansson (never a value jansson would not give).  For tests.
 */
json_t *ad_json_fast(const char *buf, size_t len, size_t flags);

#endif
