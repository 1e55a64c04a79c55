/*
 * log.c - one line per event on stderr.
 *
 * Owns: formatting and the libevent log hook.  Under journald (stderr is the
 * stream JOURNAL_STREAM names) the timestamp is left to the journal and the
 * level becomes a <N> syslog prefix.
 * Must never: allocate, or log at a level that was filtered.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"

enum log_level log_min_level = LOG_INFO;
static int under_journal;

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const int syslog_prio[] = {7, 6, 4, 3};

int log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	return -1;
}

static void libevent_log(int severity, const char *msg)
{
	enum log_level l = severity == EVENT_LOG_DEBUG ? LOG_DEBUG :
			   severity == EVENT_LOG_MSG ? LOG_INFO :
			   severity == EVENT_LOG_WARN ? LOG_WARN : LOG_ERROR;
	if (l >= log_min_level)
		log_msg(l, "libevent: %s", msg);
}

/*
 * systemd sets JOURNAL_STREAM to the device:inode of the stream it connected
 * to the journal, and children inherit it: a gocd started by a service's
 * script with stderr sent to a file sees it too.  Only when stderr is that
 * stream do the journal's rules apply (systemd.exec(5) says to compare).
 */
static int stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 ||
	    fstat(STDERR_FILENO, &st) != 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_copy_message(char *dst, size_t len, const char *src)
{
	snprintf(dst, len, "%s", src);
	size_t n = strlen(dst);
	while (n > 0 && (dst[n - 1] == '\n' || dst[n - 1] == ' '))
		dst[--n] = '\0';
}

void log_init(void)
{
	under_journal = stderr_is_journal();
	event_set_log_callback(libevent_log);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	char line[2048];
	size_t n = 0;
	va_list ap;

	if (under_journal) {
		n = (size_t)snprintf(line, sizeof line, "<%d>", syslog_prio[lvl]);
	} else {
		struct timeval tv;
		struct tm tm;
		gettimeofday(&tv, NULL);
		gmtime_r(&tv.tv_sec, &tm);
		n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
		n += (size_t)snprintf(line + n, sizeof line - n, ".%03dZ %s ",
				      (int)(tv.tv_usec / 1000), level_names[lvl]);
	}
	size_t start = n;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof line - n, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += (size_t)m;
	if (n > sizeof line - 2)
		n = sizeof line - 2;
	/* libpq messages end with their own newline */
	while (n > 0 && line[n - 1] == '\n')
		n--;
	/* and some go on over more ("...unexpectedly\n\tThis probably
	 * means..."): one event, one line, or log readers split it */
	size_t w = start;
	bool ws = false;
	for (size_t i = start; i < n; i++) {
		ws = line[i] == '\n' || line[i] == '\t' || line[i] == '\r';
		if (ws && w > start && line[w - 1] == ' ')
			continue;
		line[w++] = ws ? ' ' : line[i];
	}
	if (ws && w > start && line[w - 1] == ' ')
		w--; /* "...\n\t" at the end */
	n = w;
	line[n++] = '\n';
	fwrite(line, 1, n, stderr);
}
