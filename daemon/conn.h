/*
 * conn.h - a client connection.
 *
 * Owns: the socket (read and written directly; libevent only says when),
 * line framing and its limits, the FIFO that keeps answers in request
 * order, read backpressure, and closing.
 * Must never: free itself inside a callback that is still using it (it is
 * marked and reaped at the end of the callback), or free a request that
 * is still running (requests are detached and outlive their client).
 */
#ifndef GOCD_CONN_H
#define GOCD_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <event2/util.h>

struct conn;
struct req;

/* Take ownership of an accepted socket.  peer is for log lines. */
void conn_accept(evutil_socket_t fd, const char *peer, int is_unix);

/* Stop reading from c; close it once its answers are flushed. */
void conn_drain(struct conn *c);

/* TCP clients must authenticate when auth_token is set. */
int conn_is_unix(const struct conn *c);
int conn_needs_auth(const struct conn *c);
void conn_set_authed(struct conn *c);

/* Close connections idle for longer than idle_ms (0: never), draining
 * ones whose client stopped reading, and TCP ones that never authenticated
 * (see conn.c). */
void conn_janitor(uint64_t now_ms, int idle_ms);
/* auth_token was turned on (true) or off by a reload: connections already
 * open get their time to authenticate from now. */
void conn_auth_changed(int on);

/* Append r to c's FIFO (called by req_new). */
void conn_add_req(struct conn *c, struct req *r);

/* A request of c was answered with `bytes` of answer: move answered
 * requests at the head of the FIFO to the socket; drop the client when
 * its unsent answers (those behind an unanswered request included) pass
 * max_output.  May free c (then its requests are detached). */
void conn_answered(struct conn *c, size_t bytes);

/* Begin graceful shutdown: stop reading; close each once it has answered. */
void conn_shutdown_all(void);
/* Close connections that lingered LINGER_MS (see conn.c). */
void conn_linger_expire(uint64_t now_ms);
/* Close the oldest lingering connection to free its slot; 0 if none. */
int conn_evict_lingering(void);

/*
 * max_client_memory, the clients' memory counted together (see conn.c):
 * a request of `bytes` was read (+) or answered (-).  O(1); may pause or
 * resume reading from every client, and schedule dropping one.
 */
void conn_mem_requests(long bytes);
/* What is counted now: unfinished input, requests not yet answered,
 * unsent answers (the gauge). */
size_t conn_mem_total(void);
/* A reload may have changed max_client_memory: apply it now. */
void conn_mem_check(void);
/* At exit. */
void conn_mem_free(void);

int conn_count(void);
/* Of those, connections lingering after an error close (see conn.c). */
int conn_lingering(void);

#endif
