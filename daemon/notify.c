/*
 * notify.c - systemd's notification protocol, spoken directly.
 *
 * Owns: one AF_UNIX datagram socket aimed at $NOTIFY_SOCKET (a path, or an
 * abstract name when it starts with '@'), and two timers: STATUS= every
 * NOTIFY_STATUS_INTERVAL_MS and WATCHDOG=1 every WATCHDOG_USEC/2.  The
 * watchdog is fed from the event loop on purpose: if the loop stalls, the
 * keep-alives stop and systemd restarts gocd.
 * Must never: block (sends are MSG_DONTWAIT), let a failed send affect the
 * daemon, or send when NOTIFY_SOCKET is unset (gocd outside systemd).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "gocd.h"
#include "log.h"
#include "notify.h"
#include "stats.h"

static struct {
	int fd;
	struct sockaddr_un addr;
	socklen_t addrlen;
	uint64_t watchdog_us; /* 0: no watchdog */
	struct event *status_ev, *watchdog_ev;
	bool warned;          /* one log line for failing sends, not one per second */
} nt = {.fd = -1};

size_t notify_parse_address(const char *value, struct sockaddr_un *sun)
{
	if (value == NULL || (value[0] != '/' && value[0] != '@'))
		return 0;
	size_t n = strlen(value);
	memset(sun, 0, sizeof *sun);
	if (n < 2 || n >= sizeof sun->sun_path)
		return 0;
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, value, n);
	if (value[0] == '@') {
		/* Abstract namespace: a leading NUL, and the length counts
		 * exactly the name's bytes (no terminating NUL). */
		sun->sun_path[0] = '\0';
		return offsetof(struct sockaddr_un, sun_path) + n;
	}
	return offsetof(struct sockaddr_un, sun_path) + n + 1;
}

uint64_t notify_parse_watchdog(const char *usec, const char *wpid, long pid)
{
	if (usec == NULL || *usec == '\0')
		return 0;
	if (wpid && *wpid) {
		char *end;
		long p = strtol(wpid, &end, 10);
		if (*end != '\0' || p != pid)
			return 0; /* meant for another process */
	}
	char *end;
	errno = 0;
	unsigned long long v = strtoull(usec, &end, 10);
	if (errno || *end != '\0' || v == 0)
		return 0;
	return v;
}

bool notify_init(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	if (path == NULL || *path == '\0')
		return false;
	size_t len = notify_parse_address(path, &nt.addr);
	if (len == 0) {
		log_warn("NOTIFY_SOCKET=%s is not an absolute path or @abstract name; "
			 "not notifying systemd", path);
		return false;
	}
	nt.addrlen = (socklen_t)len;
	nt.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (nt.fd < 0) {
		log_warn("cannot create the systemd notification socket: %s", strerror(errno));
		return false;
	}
	nt.watchdog_us = notify_parse_watchdog(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"),
					       (long)getpid());
	log_debug("notifying systemd at %s%s", path, nt.watchdog_us ? " (watchdog on)" : "");
	return true;
}

int notify_send(const char *msg)
{
	if (nt.fd < 0)
		return -1;
	ssize_t n = sendto(nt.fd, msg, strlen(msg), MSG_DONTWAIT | MSG_NOSIGNAL,
			   (const struct sockaddr *)&nt.addr, nt.addrlen);
	if (n < 0) {
		if (!nt.warned)
			log_warn("systemd notification failed: %s (further failures not logged)",
				 strerror(errno));
		nt.warned = true;
		return -1;
	}
	return 0;
}

/* "PREFIX" + "\nSTATUS=" + the live summary. */
static void send_with_status(const char *prefix)
{
	char status[256], msg[320];
	stats_status_line(status, sizeof status, gocd_now_us());
	snprintf(msg, sizeof msg, "%s%sSTATUS=%s", prefix, *prefix ? "\n" : "", status);
	notify_send(msg);
}

void notify_status(const char *text)
{
	char msg[512];
	snprintf(msg, sizeof msg, "STATUS=%s", text);
	for (char *p = msg; *p; p++)
		if (*p == '\n')
			*p = ' ';
	notify_send(msg);
}

void notify_ready(void)
{
	send_with_status("READY=1");
}

void notify_stopping(void)
{
	send_with_status("STOPPING=1");
}

void notify_reloading(void)
{
	char msg[96];
	snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading configuration",
		 (unsigned long long)gocd_now_us());
	notify_send(msg);
}

static void on_status(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	send_with_status("");
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	notify_send("WATCHDOG=1");
}

void notify_start(struct event_base *base)
{
	if (nt.fd < 0)
		return;
	struct timeval tv = {NOTIFY_STATUS_INTERVAL_MS / 1000, (NOTIFY_STATUS_INTERVAL_MS % 1000) * 1000};
	nt.status_ev = event_new(base, -1, EV_PERSIST, on_status, NULL);
	if (nt.status_ev)
		event_add(nt.status_ev, &tv);
	if (nt.watchdog_us) {
		uint64_t half = nt.watchdog_us / 2;
		struct timeval wv = {(time_t)(half / 1000000), (suseconds_t)(half % 1000000)};
		nt.watchdog_ev = event_new(base, -1, EV_PERSIST, on_watchdog, NULL);
		if (nt.watchdog_ev)
			event_add(nt.watchdog_ev, &wv);
		/* The first keep-alive now: startup may have used part of the interval. */
		notify_send("WATCHDOG=1");
	}
}

void notify_stop(void)
{
	if (nt.status_ev)
		event_free(nt.status_ev);
	if (nt.watchdog_ev)
		event_free(nt.watchdog_ev);
	nt.status_ev = nt.watchdog_ev = NULL;
	if (nt.fd >= 0)
		close(nt.fd);
	nt.fd = -1;
}
