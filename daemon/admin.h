/*
 * admin.h - the HTTP admin listener: GET /metrics and GET /healthz.
 *
 * Owns: the admin socket and the small HTTP/1.x server on it (admin.c):
 * one request per connection, every connection bounded in bytes, time and
 * number.
 * Must never: serve rows or accept writes; it only reads counters.
 */
#ifndef GOCD_ADMIN_H
#define GOCD_ADMIN_H

struct event_base;

/* Limits of the admin listener: bytes of one request head (over it: 431),
 * seconds from accept for the request, the reply and the close together,
 * and connections open at once (past it: 503 and closed). */
#define ADMIN_MAX_HEADERS 8192
#define ADMIN_TIMEOUT_S 10
#define ADMIN_MAX_CONNS 64

/*
 * Listen on HOST:PORT (numeric address).  An empty address means no admin
 * listener and returns 0.  Returns -1 (logged) when the address is malformed
 * or cannot be bound; the caller decides whether that is fatal.
 */
int admin_open(struct event_base *base, const char *addr) __attribute__((warn_unused_result));
/* Close the listener and every admin connection (at exit). */
void admin_close(void);

/* 1 when the listener is open. */
int admin_is_open(void);

#endif
