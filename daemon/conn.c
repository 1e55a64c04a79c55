/*
 * conn.c - client connections: framing, ordering, backpressure, closing.
 *
 * Owns: struct conn and its states:
 *   OPEN      reading requests and answering them;
 *   DRAINING  no more reading (peer half-closed, too_large, shutdown):
 *             answer what was read, flush, then close - or linger;
 *   LINGER    answers all sent, but the client's input was not all read:
 *             closing now would send a reset, which destroys answers still
 *             in flight or unread by the client.  So: half-close (FIN after
 *             the answers), read and discard until the client closes or
 *             LINGER_MS pass, then close;
 *   CLOSED    socket gone; the struct is freed at the next safe point.
 * conn_set_state() is the only place that changes state.
 * Also owns the count of what all clients make gocd hold together, held
 * under max_client_memory (see "The clients' memory" below).
 * Must never: buffer more than max_line bytes of an unfinished line, or
 * more than max_pending unanswered requests (it stops reading instead, so
 * TCP pushes back on the client), read from any client while the clients'
 * memory is over max_client_memory, or free a running request.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "codec.h"
#include "config.h"
#include "conn.h"
#include "dispatch.h"
#include "frame.h"
#include "gocd.h"
#include "listener.h"
#include "log.h"
#include "req.h"
#include "stats.h"

enum conn_state { CONN_OPEN, CONN_DRAINING, CONN_LINGER, CONN_CLOSED };
static const char *const conn_state_names[] = {"open", "draining", "linger", "closed"};

/* As nginx's lingering close: long enough for a client that sends
 * everything before it reads, bounded so a client that never stops
 * sending cannot keep a connection. */
#define LINGER_MS 5000
/* See conn_janitor. */
#define DRAIN_STALL_MS 30000
#define AUTH_WAIT_MS 10000
/* See conn_answered. */
#define ANSWER_COPY_MAX 2048

/*
 * We read ourselves rather than through a bufferevent because libevent's
 * reader asks the kernel how much is waiting (FIONREAD) before every read:
 * an extra system call per request.  All connections read into one buffer
 * (the loop is single-threaded and a callback is done with it before it
 * returns); lines that arrive whole are framed straight out of it, and
 * only an unfinished tail, or input held back by max_pending, is copied
 * into the connection's own buffer.  One read per readiness, as Redis does:
 * a client with more waiting is called again on the next turn, after the
 * others, so a pipelining client cannot hold the loop for long.
 */
static char rbuf[16384];

struct conn {
	evutil_socket_t fd;
	struct event *rev;      /* EV_READ, added while reading */
	struct event *wev;      /* EV_WRITE, added only while output is stuck */
	struct evbuffer *in;    /* bytes read, not yet framed */
	size_t in_searched;     /* of those, searched for an LF already (frame_next) */
	struct evbuffer *out;   /* answers, not yet taken by the socket */
	enum conn_state state;
	TAILQ_HEAD(, req) reqs; /* arrival order; answers leave from the head */
	int npending;           /* unanswered or unflushed requests */
	size_t parked;          /* answer bytes of answered requests still in
				 * reqs, behind an unanswered one: unsent
				 * output as much as out is (see max_output) */
	bool reading;           /* EV_READ enabled */
	bool writing;           /* EV_WRITE enabled: the socket did not take everything */
	bool is_unix;           /* trusted by the socket's file mode: no auth */
	bool authed;
	bool eof;               /* the client half-closed: nothing more to read */
	bool must_linger;       /* closed for an error while the client may
				 * still be sending: linger whatever is pending */
	bool idle_closed;       /* counted in clients_idle_closed already */
	int last_outq;          /* unacknowledged bytes in the kernel at the
				 * janitor's last look; -1 before the first */
	uint64_t last_active_ms; /* bytes last moved either way */
	uint64_t accepted_ms;
	uint64_t linger_until_ms;
	TAILQ_ENTRY(conn) linger_link; /* on lingering while CONN_LINGER */
	size_t mem;             /* in + out + parked, as last counted in mem_held */
	bool mem_waiting;       /* on mem_waitq: reading held back by max_client_memory */
	TAILQ_ENTRY(conn) mem_link;
	int in_callback;        /* >0 while a callback of ours is on the stack */
	char peer[64];
	LIST_ENTRY(conn) link;
};

static LIST_HEAD(, conn) conns = LIST_HEAD_INITIALIZER(conns);
static int nconns;
/* In the order they began, which is deadline order (one LINGER_MS). */
static TAILQ_HEAD(, conn) lingering = TAILQ_HEAD_INITIALIZER(lingering);
static int nlingering;

int conn_lingering(void)
{
	return nlingering;
}

static void conn_reap(struct conn *c);
static void conn_process_input(struct conn *c);
static void conn_close(struct conn *c);

/*
 * The clients' memory (max_client_memory).  Per-connection limits bound
 * one connection; many connections, or many clients during a PostgreSQL
 * stall, could still take gocd's memory without bound.  So what clients
 * make gocd hold is counted as it changes, never by walking them:
 *   mem_held  each connection's unfinished input and unsent answers (out,
 *             and answers parked behind a slower request): its c->mem,
 *             brought up to date by conn_account after they move;
 *   mem_reqs  requests read and not answered yet, whether their client is
 *             still there or not (req.c charges each its line and a fixed
 *             cost).
 * Over the budget no client is read: TCP pushes back on all of them, while
 * the requests already read go on and give their share back as they are
 * answered.  Reading resumes below 90% of it, so that it does not flap at
 * the edge, or once no request is left to answer: what is held then, only
 * the clients can give back (by reading their answers, or by sending the
 * rest of a line, which needs reading), so waiting for it would be for
 * ever.  And while what is held alone is over the budget, no answer can
 * bring it down: the client holding the most is dropped, as max_output
 * drops one client (and Redis's maxmemory-clients its biggest).
 */
static size_t mem_held, mem_reqs;
static bool mem_paused, mem_pause_logged;
/* Connections whose reading waits for the budget, in the order they
 * stopped: resumed in that order, as far as the budget goes. */
static TAILQ_HEAD(, conn) mem_waitq = TAILQ_HEAD_INITIALIZER(mem_waitq);
static struct event *mem_ev; /* runs on_mem at a safe point */
static uint64_t mem_logged_ms;

/* The drop and the resume run outside every connection's callbacks: the
 * count changes deep inside them (an answer to one client can be made
 * while another's line is read). */
static void mem_kick(void)
{
	if (mem_ev)
		event_active(mem_ev, EV_TIMEOUT, 0);
}

static void mem_changed(void)
{
	if (srv.cfg == NULL)
		return;
	size_t budget = (size_t)srv.cfg->max_client_memory;
	size_t total = mem_held + mem_reqs;
	if (!mem_paused) {
		if (total > budget) {
			mem_paused = true;
			uint64_t now = gocd_now_ms();
			mem_pause_logged = now - mem_logged_ms >= 1000;
			if (mem_pause_logged) {
				mem_logged_ms = now;
				log_warn("clients hold %zu bytes (%zu in requests waiting for answers, %zu "
					 "unfinished input and unsent answers), over max_client_memory (%zu): "
					 "reading from clients paused", total, mem_reqs, mem_held, budget);
			}
		}
	} else if (total <= budget - budget / 10 || mem_reqs == 0) {
		mem_paused = false;
		if (mem_pause_logged)
			log_info("clients hold %zu bytes: reading from clients resumed", total);
		mem_kick();
	}
	if (mem_held > budget)
		mem_kick();
}

/* Bring c's share of mem_held up to date (after in, out or parked moved). */
static void conn_account(struct conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	size_t now = evbuffer_get_length(c->in) + evbuffer_get_length(c->out) + c->parked;
	if (now == c->mem)
		return;
	mem_held = mem_held - c->mem + now;
	c->mem = now;
	mem_changed();
}

void conn_mem_requests(long bytes)
{
	if (bytes >= 0)
		mem_reqs += (size_t)bytes;
	else
		mem_reqs -= (size_t)-bytes;
	mem_changed();
}

size_t conn_mem_total(void)
{
	return mem_held + mem_reqs;
}

void conn_mem_check(void)
{
	mem_changed();
}

static void on_mem(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	size_t budget = (size_t)srv.cfg->max_client_memory;
	while (mem_held > budget) {
		struct conn *c, *big = NULL;
		LIST_FOREACH(c, &conns, link)
			if (c->state != CONN_CLOSED && (big == NULL || c->mem > big->mem))
				big = c;
		if (big == NULL || big->mem == 0)
			break;
		log_warn("client %s: holds %zu bytes of unfinished input and unsent answers, the most "
			 "of any client, while clients hold %zu of them (max_client_memory %zu); "
			 "dropping the client", big->peer, big->mem, mem_held, budget);
		stats.dropped_memory++;
		conn_close(big);
		conn_reap(big);
	}
	struct conn *c;
	while (!mem_paused && (c = TAILQ_FIRST(&mem_waitq)) != NULL) {
		TAILQ_REMOVE(&mem_waitq, c, mem_link);
		c->mem_waiting = false;
		/* A connection also at max_pending resumes with its answers. */
		if (c->state == CONN_OPEN && c->npending < srv.cfg->max_pending) {
			c->in_callback++;
			conn_process_input(c);
			c->in_callback--;
			conn_reap(c);
		}
	}
}

void conn_mem_free(void)
{
	if (mem_ev)
		event_free(mem_ev);
	mem_ev = NULL;
}

int conn_count(void)
{
	return nconns;
}

static void conn_set_state(struct conn *c, enum conn_state s)
{
	if (c->state == s)
		return;
	log_debug("client %s: %s -> %s", c->peer, conn_state_names[c->state], conn_state_names[s]);
	c->state = s;
	if (s != CONN_OPEN && c->rev && c->reading) {
		event_del(c->rev);
		c->reading = false;
	}
}

/* Release the socket and its events and buffers (any may be missing). */
static void conn_free_io(struct conn *c)
{
	if (c->rev)
		event_free(c->rev);
	if (c->wev)
		event_free(c->wev);
	if (c->in)
		evbuffer_free(c->in);
	if (c->out)
		evbuffer_free(c->out);
	c->rev = c->wev = NULL;
	c->in = c->out = NULL;
	evutil_closesocket(c->fd);
	c->fd = -1;
}

/* Drop the socket now; running requests carry on detached. */
static void conn_close(struct conn *c)
{
	struct req *r;
	if (c->state == CONN_CLOSED)
		return;
	if (c->state == CONN_LINGER) {
		TAILQ_REMOVE(&lingering, c, linger_link);
		nlingering--;
	}
	conn_set_state(c, CONN_CLOSED);
	while ((r = TAILQ_FIRST(&c->reqs)) != NULL) {
		TAILQ_REMOVE(&c->reqs, r, conn_link);
		req_detach(r);
	}
	c->npending = 0;
	c->parked = 0;
	conn_free_io(c);
	if (c->mem_waiting) {
		TAILQ_REMOVE(&mem_waitq, c, mem_link);
		c->mem_waiting = false;
	}
	mem_held -= c->mem;
	c->mem = 0;
	mem_changed();
}

static void set_reading(struct conn *c, bool on)
{
	if (c->reading == on || c->state != CONN_OPEN)
		return;
	c->reading = on;
	if (on)
		event_add(c->rev, NULL);
	else
		event_del(c->rev);
}

/* Stop reading c until the clients' memory is back under the budget. */
static void mem_wait(struct conn *c)
{
	set_reading(c, false);
	if (!c->mem_waiting) {
		c->mem_waiting = true;
		TAILQ_INSERT_TAIL(&mem_waitq, c, mem_link);
	}
}

/* Frame and dispatch buffered lines while under max_pending.  Lines
 * already read are dispatched over the budget too: they are requests
 * read, and their bytes are counted either way. */
static void process_lines(struct conn *c)
{
	const struct config *cfg = srv.cfg;
	struct evbuffer *in = c->in;

	while (c->state == CONN_OPEN) {
		if (c->npending >= cfg->max_pending) {
			set_reading(c, false); /* TCP backpressure until answers leave */
			stats.backpressure++;
			return;
		}
		const char *line;
		size_t len, used;
		enum frame_rc rc = frame_next(in, (size_t)cfg->max_line, &c->in_searched, &line,
					      &len, &used);
		if (rc == FRAME_NEED_MORE)
			break;
		if (rc == FRAME_TOO_LARGE) {
			struct req *r = req_new(c, 0);
			conn_set_state(c, CONN_DRAINING);
			c->must_linger = true;
			evbuffer_drain(in, evbuffer_get_length(in));
			log_info("client %s: request line over max_line (%d bytes); closing",
				 c->peer, cfg->max_line);
			req_answer_error(r, GOC_E_TOO_LARGE,
					 "request line longer than max_line (%d bytes); closing the connection",
					 cfg->max_line);
			return;
		}
		if (!frame_is_blank(line, len))
			dispatch_line(c, line, len);
		if (c->state == CONN_CLOSED)
			return; /* dropped while answering (max_output); in is gone */
		evbuffer_drain(in, used);
	}
	if (c->eof) {
		/* Every line before the end of input is dispatched (lines held
		 * back by max_pending were, as answers made room): now drain. */
		if (c->state == CONN_OPEN)
			conn_set_state(c, CONN_DRAINING);
		return;
	}
	if (mem_paused && c->state == CONN_OPEN)
		mem_wait(c);
	else
		set_reading(c, c->state == CONN_OPEN);
}

static void conn_process_input(struct conn *c)
{
	process_lines(c);
	conn_account(c);
}

/* n bytes just read: dispatch the whole lines, keep the rest in c->in. */
static void conn_take(struct conn *c, const char *buf, size_t n)
{
	const struct config *cfg = srv.cfg;
	/* Straight from buf only when nothing older waits in c->in. */
	if (evbuffer_get_length(c->in) == 0) {
		while (n > 0 && c->state == CONN_OPEN && c->npending < cfg->max_pending) {
			const char *line;
			size_t len, used;
			/* need-more and too-large are conn_process_input's, from c->in */
			if (frame_next_mem(buf, n, (size_t)cfg->max_line, &line, &len, &used) != FRAME_LINE)
				break;
			if (!frame_is_blank(line, len))
				dispatch_line(c, line, len);
			if (c->state == CONN_CLOSED)
				return;
			buf += used;
			n -= used;
		}
	}
	if (c->state != CONN_OPEN)
		return; /* draining: what was not read as a line is dropped */
	if (n > 0 && evbuffer_add(c->in, buf, n) != 0) {
		log_error("client %s: out of memory for its input; closing", c->peer);
		conn_close(c);
		return;
	}
	conn_process_input(c);
}

/*
 * Readable: take what the socket has (a bounded amount), frame it.  End of
 * input is a half-close: answer everything already read, then close.
 * Reading is on only below max_pending, and every whole line is framed
 * before the next read, so at end of input c->in holds at most the tail.
 */
static void on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)what;
	if (c->state == CONN_LINGER) {
		ssize_t n = read(fd, rbuf, sizeof rbuf); /* discarded */
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
			conn_close(c);
			conn_reap(c);
		}
		return;
	}
	if (c->state != CONN_OPEN || !c->reading)
		return;
	if (mem_paused) {
		mem_wait(c);
		return;
	}
	c->last_active_ms = gocd_now_ms();
	c->in_callback++;
	ssize_t n = read(fd, rbuf, sizeof rbuf);
	if (n > 0) {
		conn_take(c, rbuf, (size_t)n);
	} else if (n == 0) {
		c->eof = true;
		/* A last line without its LF (printf '{"op":"ping"}' | nc -N)
		 * is still a line: ending the input ends it.  It fits: an
		 * unfinished line is never kept past max_line.  Held back if a
		 * reload lowered max_pending below what is pending: it goes
		 * once answers make room, and then the connection drains. */
		if (evbuffer_get_length(c->in) > 0)
			evbuffer_add(c->in, "\n", 1);
		conn_process_input(c);
		log_debug("client %s: end of input", c->peer);
	} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		log_debug("client %s: read: %s", c->peer, strerror(errno));
		conn_close(c);
	}
	c->in_callback--;
	conn_reap(c);
}

/* Write what the socket takes; 0, or -1 if the connection was closed. */
static int write_out(struct conn *c)
{
	if (evbuffer_get_length(c->out) == 0)
		return 0;
	int n = evbuffer_write(c->out, c->fd);
	if (n > 0)
		c->last_active_ms = gocd_now_ms();
	if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		log_debug("client %s: write: %s", c->peer, strerror(errno));
		conn_close(c);
		return -1;
	}
	conn_account(c);
	return 0;
}

/*
 * Answers are written to the socket right away; the write event is armed
 * only for what the socket would not take.  Leaving EV_WRITE on for every
 * answer cost two epoll_ctl calls and an extra wake-up per request, which
 * at one request in flight was most of gocd's CPU time.
 */
static void conn_send(struct conn *c)
{
	if (c->writing || write_out(c) != 0)
		return;
	if (evbuffer_get_length(c->out) > 0) {
		c->writing = true;
		event_add(c->wev, NULL);
	}
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	(void)what;
	if (write_out(c) != 0) {
		conn_reap(c);
		return;
	}
	if (c->writing && evbuffer_get_length(c->out) == 0) {
		c->writing = false;
		event_del(c->wev);
	}
	/* Output drained below the limit: we may read again. */
	if (c->state == CONN_OPEN && !c->reading && c->npending < srv.cfg->max_pending) {
		c->in_callback++;
		conn_process_input(c);
		c->in_callback--;
	}
	conn_reap(c);
}

void conn_add_req(struct conn *c, struct req *r)
{
	TAILQ_INSERT_TAIL(&c->reqs, r, conn_link);
	c->npending++;
}

void conn_answered(struct conn *c, size_t bytes)
{
	struct req *r;
	if (c->state == CONN_CLOSED)
		return;
	c->parked += bytes;
	struct evbuffer *out = c->out;
	while ((r = TAILQ_FIRST(&c->reqs)) != NULL && r->answered) {
		TAILQ_REMOVE(&c->reqs, r, conn_link);
		c->npending--;
		size_t n = evbuffer_get_length(r->out);
		c->parked -= n;
		if (n <= ANSWER_COPY_MAX && evbuffer_get_length(out) > 0) {
			/* Behind unsent answers: copy into the free space of the
			 * last chunk.  Moved, each answer's own chunk (about 1 kB
			 * however short the answer) would wait with it, and a
			 * client that stops reading would cost many times
			 * max_output. */
			evbuffer_add(out, evbuffer_pullup(r->out, -1), n);
			evbuffer_drain(r->out, n);
		} else
			evbuffer_add_buffer(out, r->out);
		req_detach(r);
	}
	conn_send(c);
	if (c->state == CONN_CLOSED) {
		conn_reap(c);
		return;
	}
	/* Answers parked behind a slow request count: the client cannot read
	 * them yet, but they (and their requests) are held for it all the
	 * same, and a stuck first request would let them grow without bound.
	 * They reach out at once when it is answered, and would pass the
	 * limit there. */
	if (evbuffer_get_length(out) + c->parked > (size_t)srv.cfg->max_output) {
		log_warn("client %s: %zu bytes of answers unsent, %zu of them behind an unanswered "
			 "request (max_output %d); dropping the client", c->peer,
			 evbuffer_get_length(out) + c->parked, c->parked, srv.cfg->max_output);
		stats.dropped_slow++;
		conn_close(c);
	} else if (c->state == CONN_OPEN && !c->reading && c->npending < srv.cfg->max_pending &&
		   c->in_callback == 0) {
		/* Room again: resume reading; buffered lines first. */
		c->in_callback++;
		conn_process_input(c);
		c->in_callback--;
	}
	conn_account(c);
	conn_reap(c);
}

/* Answers all sent: close, or linger if the client's input was not all
 * read (see LINGER). */
static void conn_finish(struct conn *c)
{
	int unread = 0;
	/* After an error (too_large, unauthorized) the client is likely still
	 * sending: its next bytes may be a moment away, so linger anyway.
	 * Otherwise (idle, shutdown) only if input is waiting, so an ordinary
	 * close, and gocd's exit, are not held up. */
	if (c->eof || (!c->must_linger && (ioctl(c->fd, FIONREAD, &unread) != 0 || unread <= 0)) ||
	    shutdown(c->fd, SHUT_WR) != 0) {
		conn_close(c);
		return;
	}
	conn_set_state(c, CONN_LINGER);
	c->linger_until_ms = gocd_now_ms() + LINGER_MS;
	TAILQ_INSERT_TAIL(&lingering, c, linger_link);
	nlingering++;
	if (event_add(c->rev, NULL) != 0)
		conn_close(c);
}

/* The safe point: close a drained connection, free a closed one. */
static void conn_reap(struct conn *c)
{
	if (c->in_callback)
		return;
	if (c->state == CONN_DRAINING && TAILQ_EMPTY(&c->reqs) &&
	    evbuffer_get_length(c->out) == 0)
		conn_finish(c);
	if (c->state == CONN_CLOSED) {
		LIST_REMOVE(c, link);
		nconns--;
		stats.clients_closed++;
		free(c);
	}
}

void conn_drain(struct conn *c)
{
	if (c->state == CONN_OPEN) {
		conn_set_state(c, CONN_DRAINING);
		c->must_linger = true; /* closed on it for an error (auth) */
	}
}

int conn_needs_auth(const struct conn *c)
{
	return srv.cfg->auth_token[0] != '\0' && !c->is_unix && !c->authed;
}

int conn_is_unix(const struct conn *c)
{
	return c->is_unix;
}

void conn_set_authed(struct conn *c)
{
	c->authed = true;
}

/* auth_token turned on (by a reload) after c was accepted: its time to
 * authenticate starts then, not at its accept. */
static uint64_t auth_on_ms;

void conn_auth_changed(int on)
{
	auth_on_ms = on ? gocd_now_ms() : 0;
}

static uint64_t auth_from(const struct conn *c)
{
	return c->accepted_ms > auth_on_ms ? c->accepted_ms : auth_on_ms;
}

/*
 * A walk over every connection (main.c's janitor, at most once a second
 * or at a quarter of client_idle_timeout).  "Active" is bytes moving in
 * either direction.
 *  - idle: nothing pending, or answers not taken, for client_idle_timeout;
 *  - draining with its answers not taken for that long (DRAIN_STALL_MS
 *    without an idle timeout): the client stopped reading, and would keep
 *    its buffers and its max_clients slot for good;
 *  - TCP without a successful auth for AUTH_WAIT_MS, or client_idle_timeout
 *    if shorter (with auth_token): unauthenticated clients, trickling
 *    bytes or silent, must not be able to fill max_clients.
 */
void conn_janitor(uint64_t now_ms, int idle_ms)
{
	struct conn *c, *next;
	int auth_wait = idle_ms > 0 && idle_ms < AUTH_WAIT_MS ? idle_ms : AUTH_WAIT_MS;
	uint64_t limit = (uint64_t)(idle_ms > 0 ? idle_ms : DRAIN_STALL_MS);
	for (c = LIST_FIRST(&conns); c; c = next) {
		next = LIST_NEXT(c, link);
		if (c->state != CONN_OPEN && c->state != CONN_DRAINING)
			continue;
		/* (now_ms was read before this tick's other work, which may
		 * have moved bytes since) */
		uint64_t quiet = now_ms > c->last_active_ms ? now_ms - c->last_active_ms : 0;
		/* A client reading steadily out of the kernel's send queue may
		 * leave gocd nothing to write for seconds (the queue is large):
		 * the queue moving is the client's activity too.  Asked only of
		 * connections getting near a limit (one call each). */
		int outq;
		if ((c->state == CONN_DRAINING || idle_ms > 0) && quiet > limit / 2 &&
		    ioctl(c->fd, TIOCOUTQ, &outq) == 0) {
			/* Real reading, not a trickle that opens the window now
			 * and then to keep megabytes of answers parked here: 64 KB
			 * taken since the last look, or everything. */
			if (c->last_outq > 0 && (outq == 0 || outq <= c->last_outq - 65536)) {
				c->last_active_ms = now_ms;
				quiet = 0;
			}
			c->last_outq = outq;
		}
		/* Held back by max_client_memory, a client may have sent its
		 * auth line, or more requests, that gocd has not read: it is
		 * not the one idling.  (One not reading its answers is.) */
		bool held_back = c->mem_waiting && evbuffer_get_length(c->out) == 0;
		if (c->state == CONN_OPEN && conn_needs_auth(c) && c->npending == 0 && !c->mem_waiting &&
		    now_ms > auth_from(c) && now_ms - auth_from(c) > (uint64_t)auth_wait) {
			/* before the idle check: a silent unauthenticated client
			 * is told why, and counted as an auth failure */
			char msg[80];
			snprintf(msg, sizeof msg, "no auth within %d ms; closing the connection", auth_wait);
			stats.auth_failures++;
			codec_render_error(c->out, NULL, GOC_E_UNAUTHORIZED, msg);
			conn_set_state(c, CONN_DRAINING);
			c->in_callback++;
			conn_send(c);
			c->in_callback--;
			conn_account(c);
			conn_reap(c);
		} else if (c->state == CONN_OPEN && idle_ms > 0 && quiet > limit && !held_back &&
			   (c->npending == 0 || evbuffer_get_length(c->out) > 0)) {
			log_debug("client %s: idle for over client_idle_timeout; closing", c->peer);
			stats.clients_idle_closed++;
			c->idle_closed = true;
			conn_set_state(c, CONN_DRAINING);
			conn_reap(c); /* closes it now unless answers are still unsent */
		} else if (c->state == CONN_DRAINING && quiet > limit && evbuffer_get_length(c->out) > 0) {
			log_info("client %s: not reading its last %zu bytes of answers; closing", c->peer,
				 evbuffer_get_length(c->out));
			if (!c->idle_closed) /* one client, one count */
				stats.dropped_slow++;
			conn_close(c);
			conn_reap(c);
		}
	}
}

/* A full max_clients takes a lingering connection's slot back, oldest
 * first (as nginx reuses its lingering and keep-alive connections when it
 * runs out): every answer of it was sent, and a client waiting to connect
 * matters more than the tail of a courtesy to one that broke a rule. */
int conn_evict_lingering(void)
{
	struct conn *c = TAILQ_FIRST(&lingering);
	if (c == NULL)
		return 0;
	listener_drain(c->fd);
	conn_close(c);
	conn_reap(c);
	return 1;
}

void conn_linger_expire(uint64_t now_ms)
{
	struct conn *c;
	while ((c = TAILQ_FIRST(&lingering)) != NULL && c->linger_until_ms <= now_ms) {
		conn_close(c);
		conn_reap(c);
	}
}

void conn_accept(evutil_socket_t fd, const char *peer, int is_unix)
{
	if (mem_ev == NULL)
		mem_ev = event_new(srv.base, -1, 0, on_mem, NULL);
	struct conn *c = calloc(1, sizeof *c);
	if (c == NULL || mem_ev == NULL) {
		free(c);
		evutil_closesocket(fd);
		return;
	}
	c->fd = fd;
	c->rev = event_new(srv.base, fd, EV_READ | EV_PERSIST, on_readable, c);
	c->wev = event_new(srv.base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
	c->in = evbuffer_new();
	c->out = evbuffer_new();
	if (!c->rev || !c->wev || !c->in || !c->out || event_add(c->rev, NULL) != 0) {
		log_error("client %s: out of memory; closing", peer);
		conn_free_io(c);
		free(c);
		return;
	}
	TAILQ_INIT(&c->reqs);
	snprintf(c->peer, sizeof c->peer, "%s", peer);
	c->state = CONN_OPEN;
	c->is_unix = is_unix;
	c->last_active_ms = c->accepted_ms = gocd_now_ms();
	c->last_outq = -1;
	LIST_INSERT_HEAD(&conns, c, link);
	nconns++;
	stats.clients_accepted++;
	c->reading = true;
	log_debug("client %s: connected", c->peer);
}

void conn_shutdown_all(void)
{
	struct conn *c, *next;
	int outq;
	for (c = LIST_FIRST(&conns); c; c = next) {
		next = LIST_NEXT(c, link);
		if (c->state == CONN_OPEN)
			conn_set_state(c, CONN_DRAINING);
		/* A lingering connection whose answers the client has all
		 * acknowledged loses nothing to a close: gocd's exit does not
		 * wait out its LINGER_MS. */
		if (c->state == CONN_LINGER && ioctl(c->fd, TIOCOUTQ, &outq) == 0 && outq == 0)
			conn_close(c);
		conn_reap(c);
	}
}
