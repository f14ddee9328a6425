/*
 * check.h - a minimal assertion kit for the unit tests: each CHECK prints
 * the failing expression with its location and counts; main() returns
 * check_summary(), non-zero if anything failed.
 */
#ifndef AD_TEST_CHECK_H
#define AD_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures, check_total;

#define CHECK(cond)                                                            \
	do {                                                                   \
		check_total++;                                                 \
		if (!(cond)) {                                                 \
			check_failures++;                                      \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
		}                                                              \
	} while (0)

#define CHECK_STR(a, b)                                                        \
	do {                                                                   \
		const char *a_ = (a), *b_ = (b);                               \
		check_total++;                                                 \
		if (!a_ || !b_ || strcmp(a_, b_)) {                            \
			check_failures++;                                      \
			fprintf(stderr, "%s:%d: \"%s\" != \"%s\"\n", __FILE__,  \
				__LINE__, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
		}                                                              \
	} while (0)

static inline int check_summary(const char *name)
{
	printf("%s: %d/%d checks passed\n", name, check_total - check_failures,
	       check_total);
	return check_failures ? 1 : 0;
}

#endif
