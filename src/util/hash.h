/*
 * hash.h - a hash of a text for tables that compare the texts anyway (the
 * pool's prepared statements, the reads that may merge): eight bytes a
 * step, where FNV-1a's byte a step was most of the cost of looking up a
 * statement of a few hundred characters.
 */
#ifndef AD_UTIL_HASH_H
#define AD_UTIL_HASH_H

#include <stdint.h>
#include <string.h>

static inline uint64_t ad_hash_text(const char *s)
{
	size_t n = strlen(s);
	uint64_t h = 0x9e3779b97f4a7c15ull ^ n, w;

	for (; n >= 8; s += 8, n -= 8) {
		memcpy(&w, s, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	w = 0;
	memcpy(&w, s, n);
	h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
	return h ^ (h >> 29);
}

#endif
