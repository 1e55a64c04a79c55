/*
 * listener.c - accepting clients.
 *
 * Owns: the listening sockets.  A client over max_clients gets one
 * 'overloaded' line and is closed, so it learns why instead of hanging.
 * On EMFILE/ENFILE accepting pauses briefly; otherwise libevent would spin
 * on a listener whose backlog it cannot drain.
 * Must never: block (the overloaded line is a best-effort non-blocking send).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "codec.h"
#include "config.h"
#include "conn.h"
#include "gocd.h"
#include "listener.h"
#include "log.h"
#include "stats.h"

#define MAX_LISTENERS 8
#define SD_LISTEN_FDS_START 3

static struct {
	struct evconnlistener *l[MAX_LISTENERS];
	int n;
	struct accept_pause pause; /* its timer re-enables them all */
	char *unix_path;
} ls;

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
		      struct sockaddr *sa, int socklen, void *arg)
{
	char peer[64] = "unix";
	(void)l;
	(void)socklen;
	(void)arg;

	if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
		char host[INET6_ADDRSTRLEN];
		int one = 1;
		int port = sa->sa_family == AF_INET ? ntohs(((struct sockaddr_in *)sa)->sin_port)
						    : ntohs(((struct sockaddr_in6 *)sa)->sin6_port);
		const void *addr = sa->sa_family == AF_INET ?
			(const void *)&((struct sockaddr_in *)sa)->sin_addr :
			(const void *)&((struct sockaddr_in6 *)sa)->sin6_addr;
		evutil_inet_ntop(sa->sa_family, addr, host, sizeof host);
		snprintf(peer, sizeof peer, "%s:%d", host, port);
		/* Answers are small and latency-bound: don't let Nagle hold them. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	/* Lingering connections give their slots up, when that makes room
	 * (after a reload lowered max_clients it may not). */
	int max = srv.cfg->max_clients;
	while (!srv.shutting_down && conn_count() >= max && conn_count() - conn_lingering() < max &&
	       conn_evict_lingering())
		;
	if (srv.shutting_down || conn_count() >= max) {
		struct evbuffer *b = evbuffer_new();
		if (b) {
			codec_render_error(b, NULL, GOC_E_OVERLOADED,
					   srv.shutting_down ? "gocd is shutting down"
							     : "too many clients (max_clients)");
			ssize_t w = send(fd, evbuffer_pullup(b, -1), evbuffer_get_length(b),
					 MSG_DONTWAIT | MSG_NOSIGNAL);
			(void)w;
			evbuffer_free(b);
		}
		stats.clients_rejected++;
		stats_error(GOC_E_OVERLOADED);
		listener_drain(fd); /* the client's request, unread, would make it a reset */
		evutil_closesocket(fd);
		return;
	}
	evutil_make_socket_nonblocking(fd);
	conn_accept(fd, peer, sa->sa_family == AF_UNIX);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	for (int i = 0; i < ls.n; i++)
		evconnlistener_enable(ls.l[i]);
}

void listener_drain(evutil_socket_t fd)
{
	char sink[4096];
	for (int i = 0; i < 16 && recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++)
		;
}

void listener_pause(struct evconnlistener *l, struct accept_pause *p, const char *who)
{
	int err = EVUTIL_SOCKET_ERROR();
	uint64_t now = gocd_now_ms();
	p->failures++;
	if (now - p->logged_ms >= 1000) {
		log_warn("%s: accept failed: %s; pausing accepts for 100 ms (%d failure(s) since the "
			 "last such line)", who, evutil_socket_error_to_string(err), p->failures);
		p->logged_ms = now;
		p->failures = 0;
	}
	evconnlistener_disable(l);
	struct timeval tv = {0, 100000};
	event_add(p->resume, &tv);
}

static void on_error(struct evconnlistener *l, void *arg)
{
	(void)arg;
	listener_pause(l, &ls.pause, "clients");
}

static int add(struct evconnlistener *l, const char *what)
{
	if (l == NULL) {
		log_error("cannot listen on %s: %s", what, strerror(errno));
		return -1;
	}
	evconnlistener_set_error_cb(l, on_error);
	ls.l[ls.n++] = l;
	log_info("listening on %s", what);
	return 0;
}

static int open_unix(const char *path, int mode)
{
	struct sockaddr_un sun;
	if (strlen(path) >= sizeof sun.sun_path) {
		log_error("unix socket path too long: %s", path);
		return -1;
	}
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, path);

	/* A socket file left by a dead gocd is removed; a live one is not. */
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			log_error("unix socket path %s exists and is not a socket", path);
			return -1;
		}
		int probe = socket(AF_UNIX, SOCK_STREAM, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sun, sizeof sun) == 0) {
			close(probe);
			log_error("unix socket %s is in use by another process", path);
			return -1;
		}
		if (probe >= 0)
			close(probe);
		unlink(path);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
		log_error("cannot bind unix socket %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (chmod(path, (mode_t)mode) != 0)
		log_warn("cannot chmod %s: %s", path, strerror(errno));
	if (listen(fd, 1024) != 0) {
		log_error("cannot listen on %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	ls.unix_path = strdup(path);
	char what[160];
	snprintf(what, sizeof what, "unix:%s (mode %04o)", path, mode);
	return add(evconnlistener_new(srv.base, on_accept, NULL, LEV_OPT_CLOSE_ON_FREE, -1, fd), what);
}

/*
 * Socket activation: systemd passes already-listening sockets as fds 3..
 * with LISTEN_PID (ours) and LISTEN_FDS.  Returns how many were adopted
 * (then listen/unix are not opened), or -1 on a bad hand-over.
 */
static int adopt_systemd_sockets(void)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	if (pid == NULL || fds == NULL || atol(pid) != (long)getpid())
		return 0;
	int n = atoi(fds);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (n < 1 || n > MAX_LISTENERS) {
		log_error("socket activation: LISTEN_FDS=%s is not 1..%d", fds, MAX_LISTENERS);
		return -1;
	}
	for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; fd++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof ss;
		int type = 0, acc = 0;
		socklen_t tl = sizeof type, al = sizeof acc;
		if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 ||
		    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM ||
		    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) != 0 || !acc) {
			log_error("socket activation: fd %d is not a listening stream socket", fd);
			return -1;
		}
		evutil_make_socket_nonblocking(fd);
		evutil_make_socket_closeonexec(fd);
		char what[64];
		snprintf(what, sizeof what, "fd %d from systemd (%s)", fd,
			 ss.ss_family == AF_UNIX ? "unix" : "tcp");
		if (add(evconnlistener_new(srv.base, on_accept, NULL, LEV_OPT_CLOSE_ON_FREE, -1, fd),
			what) != 0)
			return -1;
	}
	return n;
}

int listener_open_all(const struct config *cfg)
{
	ls.pause.resume = evtimer_new(srv.base, on_resume, NULL);
	int adopted = adopt_systemd_sockets();
	if (adopted < 0)
		return -1;
	if (adopted > 0) {
		log_info("socket activation: serving %d socket(s) from systemd; listen and unix are not opened",
			 adopted);
		return 0;
	}
	if (cfg->listen[0]) {
		struct sockaddr_storage ss;
		int len = sizeof ss;
		if (evutil_parse_sockaddr_port(cfg->listen, (struct sockaddr *)&ss, &len) != 0) {
			log_error("listen: \"%s\" is not HOST:PORT with a numeric address "
				  "(e.g. 127.0.0.1:7432 or [::1]:7432)", cfg->listen);
			return -1;
		}
		if (add(evconnlistener_new_bind(srv.base, on_accept, NULL,
						LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
						LEV_OPT_CLOSE_ON_EXEC, 1024,
						(struct sockaddr *)&ss, len), cfg->listen) != 0)
			return -1;
	}
	if (cfg->unix_path[0] && open_unix(cfg->unix_path, cfg->unix_mode) != 0)
		return -1;
	if (ls.n == 0) {
		log_error("no listener configured (listen and unix are both empty)");
		return -1;
	}
	return 0;
}

void listener_close_all(void)
{
	for (int i = 0; i < ls.n; i++)
		evconnlistener_free(ls.l[i]);
	ls.n = 0;
	if (ls.pause.resume) {
		event_free(ls.pause.resume);
		ls.pause.resume = NULL;
	}
	if (ls.unix_path) {
		unlink(ls.unix_path);
		free(ls.unix_path);
		ls.unix_path = NULL;
	}
}
