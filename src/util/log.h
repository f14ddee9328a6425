/*
 * log.h - leveled logging to stderr.
 *
 * One line per event, prefixed with a UTC timestamp and the level.  Nothing
 * that identifies a credential (tokens, passwords, cookies) may be passed to
 * these functions; callers log credential *ids*, never values.
 */
#ifndef AD_LOG_H
#define AD_LOG_H

#include "actiond/log.h"

#include <stdarg.h>

/* Parses "error", "warn", "info" or "debug"; returns -1 for anything else. */
int ad_log_level_parse(const char *s);

/* Like ad_log(), with a va_list. */
void ad_logv(enum ad_log_level level, const char *fmt, va_list ap);

#define ad_log_error(...) ad_log(AD_LOG_ERROR, __VA_ARGS__)
#define ad_log_warn(...)                                                       \
	do {                                                                   \
		if (ad_log_level >= AD_LOG_WARN)                               \
			ad_log(AD_LOG_WARN, __VA_ARGS__);                      \
	} while (0)
#define ad_log_info(...)                                                       \
	do {                                                                   \
		if (ad_log_level >= AD_LOG_INFO)                               \
			ad_log(AD_LOG_INFO, __VA_ARGS__);                      \
	} while (0)
#define ad_log_debug(...)                                                      \
	do {                                                                   \
		if (ad_log_level >= AD_LOG_DEBUG)                              \
			ad_log(AD_LOG_DEBUG, __VA_ARGS__);                     \
	} while (0)

/* Routes libwebsockets' own log lines through ad_log at a matching level. */
void ad_log_hook_lws(void);

#endif
