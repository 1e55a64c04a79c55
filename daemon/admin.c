/*
 * admin.c - the HTTP admin listener: a small HTTP/1.x server of its own.
 *
 * Owns: the admin socket, its connections (struct admin_conn), routing of
 * /metrics (Prometheus text from stats.c) and /healthz (200 while at least
 * one PostgreSQL connection is up and gocd is not shutting down, else 503),
 * and the limits of an admin connection.  Any other path is 404; a method
 * other than GET or HEAD on those two is 405.
 *
 * One request per connection, and every resource bounded (libevent's evhttp
 * was not: it kept reading pipelined requests while a reply waited, timed
 * out per read rather than per request, had no connection limit, and spun
 * on EMFILE).  A connection's states:
 *   READING  the request head, into a fixed buffer of ADMIN_MAX_HEADERS;
 *            a body, if any, is never read (404 and 405 need none);
 *   WRITING  the reply, which says Connection: close; nothing is read;
 *   LINGER   reply flushed and half-closed (FIN): read and discard until
 *            the client closes, ADMIN_LINGER_MS pass or ADMIN_LINGER_BYTES
 *            arrive, because closing with its input unread would send a
 *            reset, which can destroy the reply before the client reads it.
 * ADMIN_TIMEOUT_S from accept bounds the three together.  Past
 * ADMIN_MAX_CONNS a new connection is told 503 and closed at once.
 * Must never: expose rows or configuration secrets (the postgres conninfo
 * may hold a password), accept writes, or block the loop.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "admin.h"
#include "gocd.h"
#include "listener.h"
#include "log.h"
#include "pgpool.h"
#include "stats.h"

/* As conn.c's LINGER_MS, within the connection's ADMIN_TIMEOUT_S; and a
 * client still sending this much after its reply is not waiting for it. */
#define ADMIN_LINGER_MS 5000
#define ADMIN_LINGER_BYTES (1024 * 1024)
/* How often "too many admin connections" is logged, at most. */
#define ADMIN_FULL_LOG_MS 1000

enum admin_state { ADMIN_READING, ADMIN_WRITING, ADMIN_LINGER };
static const char *const admin_state_names[] = {"reading", "writing", "linger"};

struct admin_conn {
	evutil_socket_t fd;
	enum admin_state state;
	struct event *rev;      /* EV_READ, added while READING or LINGER */
	struct event *wev;      /* EV_WRITE, added only while the reply is stuck */
	struct event *timer;    /* the deadline; in LINGER, the linger's end */
	struct evbuffer *out;   /* the reply, not yet taken by the socket */
	uint64_t deadline_ms;   /* accept + ADMIN_TIMEOUT_S */
	size_t discarded;       /* bytes read and dropped while lingering */
	size_t nhead;
	char head[ADMIN_MAX_HEADERS];
	char peer[64];
	LIST_ENTRY(admin_conn) link;
};

static struct {
	struct evconnlistener *l;
	struct accept_pause pause; /* out of descriptors, as the client listener */
	LIST_HEAD(, admin_conn) conns;
	int nconns;
	uint64_t full_log_ms;      /* last "too many connections" line */
} adm;

static bool would_block(int err)
{
	return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

/* The socket, events and buffer, and the struct: the caller must not
 * touch c again.  Every callback of c ends here or returns without it. */
static void admin_conn_free(struct admin_conn *c)
{
	LIST_REMOVE(c, link);
	adm.nconns--;
	if (c->rev)
		event_free(c->rev);
	if (c->wev)
		event_free(c->wev);
	if (c->timer)
		event_free(c->timer);
	if (c->out)
		evbuffer_free(c->out);
	evutil_closesocket(c->fd);
	free(c);
}

/* The only place c->state changes; rev follows it (see struct admin_conn). */
static void admin_conn_set_state(struct admin_conn *c, enum admin_state s)
{
	log_debug("admin %s: %s -> %s", c->peer, admin_state_names[c->state], admin_state_names[s]);
	c->state = s;
	if (s == ADMIN_WRITING)
		event_del(c->rev);
	else
		event_add(c->rev, NULL);
}

static void admin_conn_linger(struct admin_conn *c)
{
	if (shutdown(c->fd, SHUT_WR) != 0) {
		admin_conn_free(c);
		return;
	}
	admin_conn_set_state(c, ADMIN_LINGER);
	uint64_t now = gocd_now_ms();
	uint64_t left = c->deadline_ms > now ? c->deadline_ms - now : 0;
	if (left > ADMIN_LINGER_MS)
		left = ADMIN_LINGER_MS;
	struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
	event_add(c->timer, &tv); /* replaces the deadline */
}

/* Write what the socket takes; EV_WRITE only while some is left. */
static void admin_conn_write(struct admin_conn *c)
{
	if (evbuffer_write(c->out, c->fd) < 0 && !would_block(errno)) {
		log_debug("admin %s: write: %s", c->peer, strerror(errno));
		admin_conn_free(c);
		return;
	}
	if (evbuffer_get_length(c->out) > 0) {
		event_add(c->wev, NULL);
		return;
	}
	event_del(c->wev);
	admin_conn_linger(c);
}

static void admin_on_writable(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	admin_conn_write(arg);
}

static const char *admin_reason(int code)
{
	switch (code) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 431: return "Request Header Fields Too Large";
	case 503: return "Service Unavailable";
	default: return "Internal Server Error";
	}
}

/*
 * Send c->out (the body, already rendered) as the reply, after its head;
 * for HEAD only the head, with the length the body would have.
 */
static void admin_conn_reply(struct admin_conn *c, int code, const char *ctype, bool head_only)
{
	size_t len = evbuffer_get_length(c->out);
	if (head_only)
		evbuffer_drain(c->out, len);
	char h[320];
	int n = snprintf(h, sizeof h,
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			 "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
			 code, admin_reason(code), ctype, len,
			 code == 405 ? "Allow: GET, HEAD\r\n" : "");
	admin_conn_set_state(c, ADMIN_WRITING);
	if (evbuffer_prepend(c->out, h, (size_t)n) != 0) {
		log_error("admin %s: out of memory for a reply; closing", c->peer);
		admin_conn_free(c);
		return;
	}
	admin_conn_write(c);
}

/* A request that cannot be served: 400 or 431, whatever its method. */
static void admin_conn_error(struct admin_conn *c, int code, const char *msg)
{
	log_debug("admin %s: %d %s", c->peer, code, msg);
	evbuffer_add_printf(c->out, "%s\n", msg);
	admin_conn_reply(c, code, "text/plain; charset=utf-8", false);
}

/* RFC 9112 2.2: a server ignores empty lines received before the request
 * line (some clients send a CRLF after a POST body).  Answered 400, they
 * were. */
static size_t leading_empty_lines(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && (p[i] == '\r' || p[i] == '\n'))
		i++;
	return i;
}

/*
 * The method and path of the request line "METHOD TARGET HTTP/1.x" at the
 * start of head (n bytes, with a line end), NUL-terminated in place; the
 * target's query string is cut off.  0, or -1 when it is not such a line.
 */
static int admin_parse(char *head, size_t n, const char **method, const char **path)
{
	size_t skip = leading_empty_lines(head, n);
	head += skip;
	n -= skip;
	char *eol = memchr(head, '\n', n);
	if (eol == NULL)
		return -1;
	if (eol > head && eol[-1] == '\r')
		eol--;
	*eol = '\0'; /* an embedded NUL only makes the line shorter: rejected */
	char *target = strchr(head, ' ');
	if (target == NULL || target == head)
		return -1;
	*target++ = '\0';
	char *version = strchr(target, ' ');
	if (version == NULL || version == target)
		return -1;
	*version++ = '\0';
	if (strncmp(version, "HTTP/1.", 7) != 0 || version[7] < '0' || version[7] > '9' ||
	    version[8] != '\0')
		return -1;
	/* absolute-form (RFC 9112 3.2.2), which servers must accept */
	*method = head;
	if (strncasecmp(target, "http://", 7) == 0 || strncasecmp(target, "https://", 8) == 0) {
		target = strchr(strstr(target, "//") + 2, '/');
		if (target == NULL) {
			*path = "/";
			return 0;
		}
	}
	target[strcspn(target, "?#")] = '\0';
	*path = target;
	return 0;
}

static void admin_conn_answer(struct admin_conn *c)
{
	const char *method, *path;
	if (admin_parse(c->head, c->nhead, &method, &path) != 0) {
		admin_conn_error(c, 400, "bad request: expected METHOD /path HTTP/1.x");
		return;
	}
	bool head_only = strcmp(method, "HEAD") == 0;
	bool metrics = strcmp(path, "/metrics") == 0;
	log_debug("admin %s: %s %s", c->peer, method, path);
	if (!metrics && strcmp(path, "/healthz") != 0) {
		evbuffer_add_printf(c->out, "not found: try /metrics or /healthz\n");
		admin_conn_reply(c, 404, "text/plain; charset=utf-8", head_only);
	} else if (!head_only && strcmp(method, "GET") != 0) {
		evbuffer_add_printf(c->out, "method not allowed: use GET or HEAD\n");
		admin_conn_reply(c, 405, "text/plain; charset=utf-8", false);
	} else if (metrics) {
		stats_render_prometheus(c->out);
		admin_conn_reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", head_only);
	} else {
		struct pgpool_stats p;
		pgpool_get_stats(&p);
		int up = p.idle + p.busy, code = 503;
		if (srv.shutting_down) {
			evbuffer_add_printf(c->out, "shutting down\n");
		} else if (up > 0) {
			code = 200;
			evbuffer_add_printf(c->out, "ok: %d of %d PostgreSQL connections up\n", up, p.size);
		} else {
			evbuffer_add_printf(c->out, "unavailable: no PostgreSQL connection up "
					    "(%d connecting, %d down)\n", p.connecting, p.down);
		}
		admin_conn_reply(c, code, "text/plain; charset=utf-8", head_only);
	}
}

/* A head ends at an empty line: "\r\n\r\n", or "\n\n" from a lax client. */
static bool admin_head_complete(const char *p, size_t n)
{
	size_t skip = leading_empty_lines(p, n);
	p += skip;
	n -= skip;
	return memmem(p, n, "\n\n", 2) != NULL || memmem(p, n, "\n\r\n", 3) != NULL;
}

/* One read per readiness: the head while READING, discarded input while
 * lingering; the end of input closes either. */
static void admin_on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct admin_conn *c = arg;
	static char sink[16384];
	(void)what;
	if (c->state == ADMIN_LINGER) {
		ssize_t n = recv(fd, sink, sizeof sink, 0);
		if (n > 0)
			c->discarded += (size_t)n;
		if (n == 0 || (n < 0 && !would_block(errno)) || c->discarded > ADMIN_LINGER_BYTES)
			admin_conn_free(c);
		return;
	}
	/* READING: below ADMIN_MAX_HEADERS, or the reply would be on its way */
	ssize_t n = recv(fd, c->head + c->nhead, sizeof c->head - c->nhead, 0);
	if (n < 0 && would_block(errno))
		return;
	if (n <= 0) {
		log_debug("admin %s: closed before a whole request", c->peer);
		admin_conn_free(c);
		return;
	}
	size_t from = c->nhead > 2 ? c->nhead - 2 : 0; /* an end split across reads */
	c->nhead += (size_t)n;
	if (admin_head_complete(c->head + from, c->nhead - from))
		admin_conn_answer(c);
	else if (c->nhead == sizeof c->head) {
		char msg[64];
		snprintf(msg, sizeof msg, "request head over %d bytes", ADMIN_MAX_HEADERS);
		admin_conn_error(c, 431, msg);
	}
}

static void admin_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct admin_conn *c = arg;
	(void)fd;
	(void)what;
	log_debug("admin %s: %s ended by its %s; closing", c->peer, admin_state_names[c->state],
		  c->state == ADMIN_LINGER ? "linger time" : "deadline");
	admin_conn_free(c);
}

/* Past ADMIN_MAX_CONNS: a 503 if the socket takes it at once, then close. */
static void admin_refuse(evutil_socket_t fd, const char *peer)
{
	static const char reply[] =
		"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
		"Content-Length: 27\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
		"too many admin connections\n";
	uint64_t now = gocd_now_ms();
	if (now - adm.full_log_ms >= ADMIN_FULL_LOG_MS) {
		adm.full_log_ms = now;
		log_warn("admin %s: %d admin connections open (the most); refusing it", peer,
			 ADMIN_MAX_CONNS);
	}
	ssize_t w = send(fd, reply, sizeof reply - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)w;
	listener_drain(fd);
	evutil_closesocket(fd);
}

static void admin_on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
			    int socklen, void *arg)
{
	char host[INET6_ADDRSTRLEN], port[8], peer[64];
	(void)l;
	(void)arg;
	if (getnameinfo(sa, (socklen_t)socklen, host, sizeof host, port, sizeof port,
			NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		strcpy(host, "?");
		strcpy(port, "?");
	}
	snprintf(peer, sizeof peer, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
	if (adm.nconns >= ADMIN_MAX_CONNS) {
		admin_refuse(fd, peer);
		return;
	}
	struct admin_conn *c = calloc(1, sizeof *c);
	if (c == NULL) {
		evutil_closesocket(fd);
		return;
	}
	c->fd = fd;
	LIST_INSERT_HEAD(&adm.conns, c, link);
	adm.nconns++;
	snprintf(c->peer, sizeof c->peer, "%s", peer);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->rev = event_new(srv.base, fd, EV_READ | EV_PERSIST, admin_on_readable, c);
	c->wev = event_new(srv.base, fd, EV_WRITE | EV_PERSIST, admin_on_writable, c);
	c->timer = evtimer_new(srv.base, admin_on_timer, c);
	c->out = evbuffer_new();
	c->deadline_ms = gocd_now_ms() + ADMIN_TIMEOUT_S * 1000;
	struct timeval tv = {ADMIN_TIMEOUT_S, 0};
	if (!c->rev || !c->wev || !c->timer || !c->out || event_add(c->rev, NULL) != 0 ||
	    event_add(c->timer, &tv) != 0) {
		log_error("admin %s: out of memory; closing", peer);
		admin_conn_free(c);
		return;
	}
	log_debug("admin %s: connected", peer);
}

static void admin_on_resume(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (adm.l)
		evconnlistener_enable(adm.l);
}

static void admin_on_accept_error(struct evconnlistener *l, void *arg)
{
	(void)arg;
	listener_pause(l, &adm.pause, "admin");
}

int admin_open(struct event_base *base, const char *addr)
{
	if (addr == NULL || *addr == '\0')
		return 0;
	struct sockaddr_storage ss;
	int len = sizeof ss;
	if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss, &len) != 0) {
		log_error("admin_listen: \"%s\" is not HOST:PORT with a numeric address "
			  "(e.g. 127.0.0.1:7433 or [::1]:7433)", addr);
		return -1;
	}
	LIST_INIT(&adm.conns);
	adm.pause.resume = evtimer_new(base, admin_on_resume, NULL);
	if (adm.pause.resume == NULL) {
		log_error("admin_listen: cannot start the HTTP server on %s", addr);
		return -1;
	}
	adm.l = evconnlistener_new_bind(base, admin_on_accept, NULL,
					LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
					128, (struct sockaddr *)&ss, len);
	if (adm.l == NULL) {
		log_error("admin_listen: cannot listen on %s: %s", addr, strerror(errno));
		admin_close();
		return -1;
	}
	evconnlistener_set_error_cb(adm.l, admin_on_accept_error);
	log_info("admin listening on http://%s (/metrics, /healthz)", addr);
	return 0;
}

void admin_close(void)
{
	struct admin_conn *c;
	if (adm.l)
		evconnlistener_free(adm.l);
	adm.l = NULL;
	if (adm.pause.resume)
		event_free(adm.pause.resume);
	adm.pause.resume = NULL;
	while ((c = LIST_FIRST(&adm.conns)) != NULL)
		admin_conn_free(c);
}

int admin_is_open(void)
{
	return adm.l != NULL;
}
