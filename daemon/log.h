/*
 * log.h - the daemon's one logger.
 *
 * Owns: log levels, line format, and routing libevent's and libpq's own
 * messages into the same stream.  Must never: block on anything but stderr.
 */
#ifndef GOCD_LOG_H
#define GOCD_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

extern enum log_level log_min_level;

/* Parse "debug"/"info"/"warn"/"error"; -1 if unknown. */
int log_level_parse(const char *s);

void log_init(void);
/* src into dst without the newline (and spaces) libpq ends its messages
 * with, for text that goes into an answer or an error string. */
void log_copy_message(char *dst, size_t len, const char *src);
void log_msg(enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* The level check happens before any argument is formatted. */
#define log_debug(...) do { if (log_min_level <= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...)  do { if (log_min_level <= LOG_INFO)  log_msg(LOG_INFO,  __VA_ARGS__); } while (0)
#define log_warn(...)  do { if (log_min_level <= LOG_WARN)  log_msg(LOG_WARN,  __VA_ARGS__); } while (0)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
