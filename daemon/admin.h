/*
 * admin.h - the HTTP admin listener: GET /metrics and GET /healthz.
 *
 * Owns: the admin socket and libevent's evhttp server on it.
 * Must never: serve rows or accept writes; it only reads counters.
 */
#ifndef GOCD_ADMIN_H
#define GOCD_ADMIN_H

struct event_base;

/* Limits of one admin request (header bytes, seconds to send/receive). */
#define ADMIN_MAX_HEADERS 8192
#define ADMIN_MAX_BODY 1024 /* read and ignored: no endpoint takes one */
#define ADMIN_TIMEOUT_S 10

/*
 * Listen on HOST:PORT (numeric address).  An empty address means no admin
 * listener and returns 0.  Returns -1 (logged) when the address is malformed
 * or cannot be bound; the caller decides whether that is fatal.
 */
int admin_open(struct event_base *base, const char *addr) __attribute__((warn_unused_result));
void admin_close(void);

/* 1 when the listener is open. */
int admin_is_open(void);

#endif
