/*
 * listener.h - the sockets gocd accepts clients on.
 *
 * Owns: TCP and Unix listeners, max_clients at accept time, and pausing
 * accept when the process runs out of descriptors.
 * Must never: read from a client (conn.c does).
 */
#ifndef GOCD_LISTENER_H
#define GOCD_LISTENER_H

struct config;

/* Open every configured listener; logs and returns -1 on the first failure. */
int listener_open_all(const struct config *cfg) __attribute__((warn_unused_result));
void listener_close_all(void);

#endif
