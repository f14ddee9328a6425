/*
 * actiond/log.h - leveled logging to actiond's log (stderr).
 *
 * One line per event, prefixed with a UTC timestamp and the level.  Safe to
 * call from any thread.  Nothing that identifies a credential (tokens,
 * passwords, cookies) may be passed: log credential ids, never values.
 */
#ifndef ACTIOND_LOG_H
#define ACTIOND_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

enum ad_log_level {
	AD_LOG_ERROR = 0,
	AD_LOG_WARN,
	AD_LOG_INFO,
	AD_LOG_DEBUG,
};

/* The configured level: lines above it are dropped. */
extern enum ad_log_level ad_log_level;

void ad_log(enum ad_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif

#endif
