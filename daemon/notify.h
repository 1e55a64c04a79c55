/*
 * notify.h - telling systemd what gocd is doing (sd_notify's protocol,
 * without libsystemd).
 *
 * Owns: the NOTIFY_SOCKET datagram socket, the STATUS= timer and the
 * watchdog timer.  Must never: block, fail the daemon (every message is
 * best effort), or send anything when NOTIFY_SOCKET is unset.
 *
 * Lifecycle as main.c drives it: notify_init() early; notify_start() once the
 * loop exists; notify_ready() once the listeners accept; notify_stopping() at
 * the start of a shutdown; notify_reloading() then notify_ready() around a
 * configuration reload; notify_stop() before the loop is freed.
 */
#ifndef GOCD_NOTIFY_H
#define GOCD_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

/* Interval of STATUS= updates. */
#define NOTIFY_STATUS_INTERVAL_MS 1000

/*
 * Read NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID from the environment and
 * open the socket.  Returns true when systemd (or a test) is listening.
 */
bool notify_init(void);

/* Start the STATUS= timer and, when WATCHDOG_USEC is set, WATCHDOG=1 at
 * half its interval.  Timers run in the loop, so a stuck loop stops them. */
void notify_start(struct event_base *base);
void notify_stop(void);

/* "READY=1" with a STATUS= line. */
void notify_ready(void);
/* "RELOADING=1" with "MONOTONIC_USEC=" (CLOCK_MONOTONIC); follow with notify_ready(). */
void notify_reloading(void);
/* "STOPPING=1" with a STATUS= line. */
void notify_stopping(void);
/* "STATUS=" + text (one line; newlines are replaced). */
void notify_status(const char *text);

/* Send one raw message (lines "NAME=value" separated by '\n').  Returns 0,
 * or -1 when there is no socket or the send failed. */
int notify_send(const char *msg);

/* For tests: parse a NOTIFY_SOCKET value into a sockaddr_un.  Returns the
 * address length to pass to sendto(), or 0 when the value is unusable
 * (empty, relative, too long). */
struct sockaddr_un;
size_t notify_parse_address(const char *value, struct sockaddr_un *sun);

/* For tests: the watchdog interval from WATCHDOG_USEC/WATCHDOG_PID values
 * (either may be NULL) for process pid; 0 when the watchdog is off. */
uint64_t notify_parse_watchdog(const char *usec, const char *wpid, long pid);

#endif
