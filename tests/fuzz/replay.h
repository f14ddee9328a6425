/*
 * replay.h - the main() that the test suite runs for a fuzz driver: every
 * file of a corpus directory, in name order and as it is, then a fixed
 * number of deterministic mutations of them (bit flips, cuts, inserted
 * tokens, splices of two inputs, repeated chunks).  Each input is handed
 * over in an allocation of exactly its size, so that AddressSanitizer sees a
 * read past its end.
 *
 * A driver defines LLVMFuzzerTestOneInput(), FUZZ_NAME, the tokens its
 * format is made of (fuzz_tokens) and fuzz_report(), which prints what the
 * run did and releases what the driver holds; then it includes this file
 * once, outside AD_LIBFUZZER (libFuzzer brings its own main()).
 */
#ifndef AD_FUZZ_REPLAY_H
#define AD_FUZZ_REPLAY_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPLAY_MAX_INPUTS 256
#define REPLAY_MAX_LEN 65536
#define REPLAY_MUTANT_LEN 16384

static uint64_t replay_rng = 0x9e3779b97f4a7c15ull;

static uint64_t replay_rand(void)
{
	replay_rng ^= replay_rng << 13;
	replay_rng ^= replay_rng >> 7;
	replay_rng ^= replay_rng << 17;
	return replay_rng;
}

static void replay_run(const uint8_t *data, size_t len)
{
	uint8_t *exact = malloc(len ? len : 1);

	if (!exact)
		abort();
	memcpy(exact, data, len);
	LLVMFuzzerTestOneInput(exact, len);
	free(exact);
}

/* Runs a copy of in with one to four random edits. */
static void replay_mutate(const uint8_t *in, size_t n, const uint8_t *other, size_t on)
{
	static uint8_t buf[REPLAY_MUTANT_LEN];
	size_t len = n < sizeof(buf) ? n : sizeof(buf);
	size_t ntokens = sizeof(fuzz_tokens) / sizeof(*fuzz_tokens);

	memcpy(buf, in, len);
	for (int k = 1 + (int)(replay_rand() % 4); k > 0; k--) {
		size_t at = len ? replay_rand() % len : 0, tl;
		const char *t;

		switch (replay_rand() % 6) {
		case 0: /* flip a bit */
			if (len)
				buf[at] ^= (uint8_t)(1u << (replay_rand() % 8));
			break;
		case 1: /* cut the rest */
			len = at;
			break;
		case 2: /* delete a few bytes */
			tl = 1 + replay_rand() % 8;
			if (at + tl <= len) {
				memmove(buf + at, buf + at + tl, len - at - tl);
				len -= tl;
			}
			break;
		case 3: /* insert a token */
			t = fuzz_tokens[replay_rand() % ntokens];
			tl = strlen(t);
			if (len + tl <= sizeof(buf)) {
				memmove(buf + at + tl, buf + at, len - at);
				memcpy(buf + at, t, tl);
				len += tl;
			}
			break;
		case 4: /* splice in the tail of another input */
			if (on) {
				size_t from = replay_rand() % on, take = on - from;

				if (at + take > sizeof(buf))
					take = sizeof(buf) - at;
				memcpy(buf + at, other + from, take);
				len = at + take;
			}
			break;
		default: /* repeat the rest */
			if (2 * len - at <= sizeof(buf)) {
				memcpy(buf + len, buf + at, len - at);
				len += len - at;
			}
		}
	}
	replay_run(buf, len);
}

static int replay_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
	char *names[REPLAY_MAX_INPUTS];
	uint8_t *inputs[REPLAY_MAX_INPUTS];
	size_t lens[REPLAY_MAX_INPUTS], n = 0;
	long iterations = argc > 2 ? atol(argv[2]) : 20000;
	struct dirent *e;
	DIR *d;

	if (argc < 2 || !(d = opendir(argv[1]))) {
		fprintf(stderr, "usage: %s CORPUS_DIR [ITERATIONS]\n", FUZZ_NAME);
		return 2;
	}
	while ((e = readdir(d)) && n < REPLAY_MAX_INPUTS)
		if (e->d_name[0] != '.' && (names[n] = strdup(e->d_name)))
			n++;
	closedir(d);
	if (!n) {
		fprintf(stderr, "%s: no corpus in %s\n", FUZZ_NAME, argv[1]);
		return 2;
	}
	/* Name order, so that the mutations are the same on every machine. */
	qsort(names, n, sizeof(*names), replay_name_cmp);
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		FILE *f;

		snprintf(path, sizeof(path), "%s/%s", argv[1], names[i]);
		if (!(f = fopen(path, "rb")) || !(inputs[i] = malloc(REPLAY_MAX_LEN))) {
			fprintf(stderr, "%s: cannot read %s\n", FUZZ_NAME, path);
			return 2;
		}
		lens[i] = fread(inputs[i], 1, REPLAY_MAX_LEN, f);
		fclose(f);
		replay_run(inputs[i], lens[i]);
	}
	for (long i = 0; i < iterations; i++) {
		size_t a = replay_rand() % n, b = replay_rand() % n;

		replay_mutate(inputs[a], lens[a], inputs[b], lens[b]);
	}
	printf("%s: %zu corpus inputs, %ld mutations, ", FUZZ_NAME, n, iterations);
	fuzz_report();
	for (size_t i = 0; i < n; i++) {
		free(inputs[i]);
		free(names[i]);
	}
	return 0;
}

#endif
