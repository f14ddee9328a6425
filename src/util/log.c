/*
 * log.c - leveled logging to stderr, and the bridge for libwebsockets' logs.
 */
#include "log.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum ad_log_level ad_log_level = AD_LOG_INFO;

int ad_log_level_parse(const char *s)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };

	for (int i = 0; i < 4; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

static void log_line(const char *tag, const char *msg, size_t len)
{
	struct timespec ts;
	struct tm tm;
	char stamp[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	/* One fprintf per line so concurrent writers never interleave mid-line. */
	fprintf(stderr, "%s.%03ldZ %s %.*s\n", stamp, ts.tv_nsec / 1000000, tag,
		(int)len, msg);
}

void ad_log(enum ad_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ad_logv(level, fmt, ap);
	va_end(ap);
}

void ad_logv(enum ad_log_level level, const char *fmt, va_list ap)
{
	static const char *const tags[] = { "ERROR", "WARN", "INFO", "DEBUG" };
	char msg[1024];
	int n;

	if (level > ad_log_level || level < AD_LOG_ERROR)
		return;
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	log_line(tags[level], msg, (size_t)n);
}

static void lws_emit(int level, const char *line)
{
	size_t len = strlen(line);

	/* lws lines end in a newline and carry their own timestamp prefix. */
	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	log_line(level & LLL_ERR    ? "ERROR lws:"
		 : level & LLL_WARN ? "WARN lws:"
				    : "DEBUG lws:",
		 line, len);
}

void ad_log_hook_lws(void)
{
	int mask = LLL_ERR;

	if (ad_log_level >= AD_LOG_WARN)
		mask |= LLL_WARN;
	if (ad_log_level >= AD_LOG_DEBUG)
		mask |= LLL_NOTICE;
	lws_set_log_level(mask, lws_emit);
}
