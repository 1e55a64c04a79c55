/*
 * listener.h - the sockets gocd accepts clients on.
 *
 * Owns: TCP and Unix listeners, max_clients at accept time, and pausing
 * accept when the process runs out of descriptors.
 * Must never: read from a client (conn.c does).
 */
#ifndef GOCD_LISTENER_H
#define GOCD_LISTENER_H

#include <stdint.h>

#include <event2/util.h>

struct config;
struct event;
struct evconnlistener;

/* Open every configured listener; logs and returns -1 on the first failure. */
int listener_open_all(const struct config *cfg) __attribute__((warn_unused_result));
void listener_close_all(void);

/*
 * A listener that cannot accept (out of descriptors, most likely: libevent
 * would call again at once for the connection still waiting) pauses for
 * 100 ms, until resume (the caller's timer) re-enables it; who says which
 * in the log line, at most one a second with the failures since.  Used by
 * the admin listener too.
 */
struct accept_pause {
	struct event *resume;
	uint64_t logged_ms;
	int failures;
};
void listener_pause(struct evconnlistener *l, struct accept_pause *p, const char *who);

/* Before closing a socket whose peer may still be sending: read what has
 * arrived (bounded), so that the close is a FIN, not a reset, which can
 * destroy an answer still in flight. */
void listener_drain(evutil_socket_t fd);

#endif
