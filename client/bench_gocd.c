/*
 * bench_gocd.c - goc-bench's --target=gocd: NDJSON over TCP or a Unix socket.
 *
 * Owns: one non-blocking socket per connection, its input and output
 * buffers, and the FIFO of its in-flight requests (gocd answers in request
 * order).  Requests are rendered and responses read only through proto/
 * (codec, jsonread): a request line is rendered once by the codec with a
 * marker where the key goes, and later lines are that text with the key's
 * digits spliced in; responses are read by codec_scan_response, which does
 * not allocate.
 * Must never: build or parse protocol JSON by hand, or spend per request
 * what a lean client would not: this process shares the machine with the
 * gocd and PostgreSQL it measures (a bufferevent and jansson trees cost as
 * much CPU per request as gocd itself did).  Must never free a connection
 * from inside its own callback either (a dead connection is reaped by close).
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/util.h>

#include "bench.h"
#include "frame.h"

#define READ_CHUNK 16384

struct gconn {
	struct bconn *c;
	evutil_socket_t fd;
	struct event rev, wev;  /* readable (persistent); writable while connecting or out is full */
	bool connecting, wev_on;
	bool authing;           /* --token sent; its answer comes before any request's */
	int conn_err;           /* connect() failed at once: reported from the loop */
	struct bench_req *fifo; /* ring of cfg.pipeline requests */
	unsigned head, len, cap;
	char *in;               /* received, not yet a whole line */
	size_t in_len, in_cap;
	char *out;              /* rendered, not yet written */
	size_t out_len, out_off, out_cap;
};

/*
 * The request line, cut where the key's number goes: frag[0] digits
 * frag[1] digits ... frag[nfrag-1].  The codec renders it once per run,
 * with the key prefix followed by a marker byte it escapes as \u0001.
 * NULL frags (the marker showed up elsewhere too): render every line.
 */
static struct {
	bool built;
	char **frag;
	size_t *frag_len;
	unsigned nfrag;
} tpl;

static void need_out(struct gconn *g, size_t more)
{
	if (g->out_len + more <= g->out_cap)
		return;
	if (g->out_off) {
		memmove(g->out, g->out + g->out_off, g->out_len - g->out_off);
		g->out_len -= g->out_off;
		g->out_off = 0;
		if (g->out_len + more <= g->out_cap)
			return;
	}
	size_t cap = g->out_cap ? g->out_cap : 4096;
	while (cap < g->out_len + more)
		cap *= 2;
	char *p = realloc(g->out, cap);
	if (p == NULL)
		abort();
	g->out = p;
	g->out_cap = cap;
}

static void put_out(struct gconn *g, const void *p, size_t n)
{
	need_out(g, n);
	memcpy(g->out + g->out_len, p, n);
	g->out_len += n;
}

/* The line the codec renders for key text `key` (LF included). */
static void render_line(struct evbuffer *b, const struct bench_cfg *cfg, const char *key)
{
	json_t *k = json_object();
	for (unsigned i = 0; i < cfg->nkey_cols; i++)
		json_object_set_new(k, cfg->key_cols[i], json_string(key));
	codec_render_request(b, cfg->op, NULL, cfg->table, k,
			     cfg->op == GOC_OP_GET_OR_CREATE ? cfg->defaults : NULL);
	json_decref(k);
}

static void build_template(const struct bench *b)
{
	const struct bench_cfg *cfg = &b->cfg;
	static const char marker[] = "\\u0001";
	tpl.built = true;
	if (cfg->op == GOC_OP_PING)
		return;
	char key[BENCH_KEY_MAX + 2];
	snprintf(key, sizeof key, "%.*s\x01", (int)b->prefix_len, b->prefix);
	struct evbuffer *eb = evbuffer_new();
	render_line(eb, cfg, key);
	size_t n = evbuffer_get_length(eb);
	char *line = malloc(n + 1);
	if (line == NULL)
		abort();
	evbuffer_remove(eb, line, n);
	line[n] = '\0';
	evbuffer_free(eb);

	unsigned count = 0;
	for (const char *p = line; (p = strstr(p, marker)) != NULL; p += sizeof marker - 1)
		count++;
	if (count != cfg->nkey_cols) {
		free(line);
		return; /* the marker is in the prefix, defaults...: no template */
	}
	tpl.nfrag = count + 1;
	tpl.frag = calloc(tpl.nfrag, sizeof *tpl.frag);
	tpl.frag_len = calloc(tpl.nfrag, sizeof *tpl.frag_len);
	if (tpl.frag == NULL || tpl.frag_len == NULL)
		abort();
	const char *p = line;
	for (unsigned i = 0; i < tpl.nfrag; i++) {
		const char *m = i + 1 < tpl.nfrag ? strstr(p, marker) : line + n;
		tpl.frag_len[i] = (size_t)(m - p);
		tpl.frag[i] = malloc(tpl.frag_len[i] + 1);
		if (tpl.frag[i] == NULL)
			abort();
		memcpy(tpl.frag[i], p, tpl.frag_len[i]);
		p = m + sizeof marker - 1;
	}
	free(line);
}

static void want_write(struct gconn *g, bool on)
{
	if (on == g->wev_on)
		return;
	if (on)
		event_add(&g->wev, NULL);
	else
		event_del(&g->wev);
	g->wev_on = on;
}

static void gocd_fail(struct gconn *g, const char *why)
{
	struct bconn *c = g->c;
	if (c->dead)
		return;
	event_del(&g->rev);
	want_write(g, false);
	struct bench_result res = { .code = BENCH_E_CONNECTION, .message = why };
	while (g->len) {
		struct bench_req r = g->fifo[g->head];
		g->head = (g->head + 1) % g->cap;
		g->len--;
		bench_done(c, &r, &res);
	}
	bench_conn_failed(c, why);
}

static void fail_errno(struct gconn *g, const char *what, int err)
{
	char why[256];
	snprintf(why, sizeof why, "%s: %s", what, evutil_socket_error_to_string(err));
	gocd_fail(g, why);
}

/* One response line (without LF/CR). */
static void on_line(struct gconn *g, const char *line, size_t len)
{
	struct bench_req r = g->fifo[g->head];
	g->head = (g->head + 1) % g->cap;
	g->len--;
	struct goc_response_scan sc;
	struct goc_response resp = { 0 }; /* errors only: they are rare */
	struct bench_result res = {
		.code = BENCH_E_PROTOCOL, .message = "response is not a valid gocd response",
	};
	if (codec_scan_response(line, len, &sc) == 0 && sc.ok) {
		res = (struct bench_result){ .code = GOC_OK, .created = sc.created,
					     .row_text = sc.row, .row_len = sc.row_len };
	} else if (codec_parse_response(line, len, &resp) == 0) {
		res.code = (int)resp.code;
		res.message = resp.message;
	}
	bench_done(g->c, &r, &res);
	codec_response_free(&resp);
}

/* The answer to --token's auth: ok makes the connection ready for load;
 * anything else fails it with gocd's reason.  False when it failed. */
static bool auth_answered(struct gconn *g, const char *line, size_t len)
{
	struct goc_response resp = { 0 };
	char why[300];
	g->authing = false;
	if (codec_parse_response(line, len, &resp) != 0) {
		codec_response_free(&resp);
		gocd_fail(g, "the answer to --token's auth is not a gocd response");
		return false;
	}
	if (!resp.ok) {
		snprintf(why, sizeof why, "authentication refused (--token): %s: %s",
			 goc_err_name(resp.code), resp.message ? resp.message : "");
		codec_response_free(&resp);
		gocd_fail(g, why);
		return false;
	}
	codec_response_free(&resp);
	bench_conn_ready(g->c);
	return true;
}

static void gocd_readable(struct gconn *g)
{
	struct bconn *c = g->c;
	if (g->in_cap - g->in_len < READ_CHUNK) {
		size_t cap = g->in_cap ? g->in_cap * 2 : 2 * READ_CHUNK;
		char *p = realloc(g->in, cap);
		if (p == NULL)
			abort();
		g->in = p;
		g->in_cap = cap;
	}
	ssize_t n = read(g->fd, g->in + g->in_len, g->in_cap - g->in_len);
	if (n == 0) {
		gocd_fail(g, "gocd closed the connection");
		return;
	}
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			fail_errno(g, "connection error", errno);
		return;
	}
	g->in_len += (size_t)n;
	size_t pos = 0;
	for (;;) {
		char *nl = memchr(g->in + pos, '\n', g->in_len - pos);
		if (nl == NULL)
			break;
		size_t len = (size_t)(nl - (g->in + pos));
		size_t consumed = len + 1;
		if (len && g->in[pos + len - 1] == '\r')
			len--;
		if (len > BENCH_MAX_RESPONSE) {
			gocd_fail(g, "response line longer than the limit");
			return;
		}
		const char *line = g->in + pos;
		pos += consumed;
		if (frame_is_blank(line, len))
			continue;
		if (g->authing) {
			if (!auth_answered(g, line, len))
				return;
			continue;
		}
		if (g->len == 0) {
			gocd_fail(g, "response without a request in flight");
			return;
		}
		on_line(g, line, len);
		if (c->dead)
			return;
	}
	if (g->in_len - pos > BENCH_MAX_RESPONSE) {
		gocd_fail(g, "response line longer than the limit");
		return;
	}
	memmove(g->in, g->in + pos, g->in_len - pos);
	g->in_len -= pos;
	bench_pump(c);
}

static void gocd_write_some(struct gconn *g)
{
	while (g->out_off < g->out_len) {
		ssize_t n = write(g->fd, g->out + g->out_off, g->out_len - g->out_off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				want_write(g, true);
				return;
			}
			fail_errno(g, "connection error", errno);
			return;
		}
		g->out_off += (size_t)n;
	}
	g->out_off = g->out_len = 0;
	want_write(g, false);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	gocd_readable(arg);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
	struct gconn *g = arg;
	(void)what;
	if (g->connecting) {
		int err = g->conn_err;
		socklen_t el = sizeof err;
		if (err == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
			err = errno;
		g->wev_on = false; /* not persistent: it fired once */
		if (err) {
			fail_errno(g, "connection error", err);
			return;
		}
		g->connecting = false;
		event_add(&g->rev, NULL);
		if (g->c->b->cfg.unix_path == NULL) {
			int one = 1;
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		}
		const char *token = g->c->b->cfg.token;
		if (token && *token) {
			/* ready once gocd has said ok to it (on a Unix socket it
			 * always does) */
			struct evbuffer *eb = evbuffer_new();
			if (eb == NULL)
				abort();
			codec_render_auth(eb, token);
			size_t n = evbuffer_get_length(eb);
			need_out(g, n);
			evbuffer_remove(eb, g->out + g->out_len, n);
			g->out_len += n;
			evbuffer_free(eb);
			g->authing = true;
			gocd_write_some(g);
			return;
		}
		bench_conn_ready(g->c);
		return;
	}
	g->wev_on = false;
	gocd_write_some(g);
}

/*
 * --addr as a socket address: numeric first, else one getaddrinfo (this
 * blocks, but only before the first connection; the answer is cached).
 */
static int gocd_resolve(const char *addr, struct sockaddr_storage *ss, int *sslen)
{
	static struct sockaddr_storage cached;
	static int cached_len;
	if (cached_len) {
		*ss = cached;
		*sslen = cached_len;
		return 0;
	}
	*sslen = (int)sizeof *ss;
	if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)ss, sslen) != 0) {
		char host[256];
		const char *colon = strrchr(addr, ':');
		size_t hl = colon ? (size_t)(colon - addr) : 0;
		if (colon == NULL || hl == 0 || hl >= sizeof host || colon[1] == '\0') {
			fprintf(stderr, "goc-bench: --addr %s is not HOST:PORT\n", addr);
			return -1;
		}
		memcpy(host, addr, hl);
		host[hl] = '\0';
		struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
		struct addrinfo *res = NULL;
		int rc = getaddrinfo(host, colon + 1, &hints, &res);
		if (rc != 0 || res == NULL) {
			fprintf(stderr, "goc-bench: --addr %s: %s\n", addr, gai_strerror(rc));
			return -1;
		}
		memcpy(ss, res->ai_addr, res->ai_addrlen);
		*sslen = (int)res->ai_addrlen;
		freeaddrinfo(res);
	}
	cached = *ss;
	cached_len = *sslen;
	return 0;
}

static int gocd_open(struct bconn *c)
{
	const struct bench_cfg *cfg = &c->b->cfg;
	if (!tpl.built)
		build_template(c->b);
	struct gconn *g = calloc(1, sizeof *g);
	if (g == NULL)
		return -1;
	c->impl = g;
	g->c = c;
	g->fd = -1;
	g->cap = cfg->pipeline;
	g->fifo = calloc(g->cap, sizeof *g->fifo);
	if (g->fifo == NULL)
		return -1;

	struct sockaddr_storage ss;
	int sslen = (int)sizeof ss;
	memset(&ss, 0, sizeof ss);
	if (cfg->unix_path) {
		struct sockaddr_un *su = (struct sockaddr_un *)&ss;
		if (strlen(cfg->unix_path) >= sizeof su->sun_path) {
			fprintf(stderr, "goc-bench: --unix path too long\n");
			return -1;
		}
		su->sun_family = AF_UNIX;
		strcpy(su->sun_path, cfg->unix_path);
		sslen = (int)sizeof *su;
	} else if (gocd_resolve(cfg->addr, &ss, &sslen)) {
		return -1;
	}
	g->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (g->fd < 0) {
		fprintf(stderr, "goc-bench: socket: %s\n", strerror(errno));
		return -1;
	}
	event_assign(&g->rev, c->b->base, g->fd, EV_READ | EV_PERSIST, on_read, g);
	event_assign(&g->wev, c->b->base, g->fd, EV_WRITE, on_write, g);
	g->connecting = true;
	if (connect(g->fd, (struct sockaddr *)&ss, (socklen_t)sslen) != 0 && errno != EINPROGRESS) {
		/* Refused at once (say a Unix socket that is not there): a
		 * connection failure like any other, reported from the loop. */
		g->conn_err = errno;
		event_active(&g->wev, EV_WRITE, 0);
		return 0;
	}
	want_write(g, true);
	return 0;
}

static void gocd_send(struct bconn *c, const struct bench_req *r)
{
	struct gconn *g = c->impl;
	const struct bench_cfg *cfg = &c->b->cfg;
	g->fifo[(g->head + g->len) % g->cap] = *r;
	g->len++;
	if (cfg->op == GOC_OP_PING || tpl.frag == NULL) {
		struct evbuffer *eb = evbuffer_new();
		if (cfg->op == GOC_OP_PING) {
			codec_render_request(eb, cfg->op, NULL, NULL, NULL, NULL);
		} else {
			char key[BENCH_KEY_MAX];
			bench_key_text(c->b, r->key, key);
			render_line(eb, cfg, key);
		}
		size_t n = evbuffer_get_length(eb);
		need_out(g, n);
		evbuffer_remove(eb, g->out + g->out_len, n);
		g->out_len += n;
		evbuffer_free(eb);
		return;
	}
	char digits[24];
	size_t nd = 0;
	uint64_t k = r->key;
	do {
		digits[sizeof digits - 1 - nd++] = (char)('0' + k % 10);
		k /= 10;
	} while (k);
	const char *d = digits + sizeof digits - nd;
	for (unsigned i = 0; i < tpl.nfrag; i++) {
		if (i)
			put_out(g, d, nd);
		put_out(g, tpl.frag[i], tpl.frag_len[i]);
	}
}

static void gocd_flush(struct bconn *c)
{
	struct gconn *g = c->impl;
	if (!g->connecting && !g->wev_on)
		gocd_write_some(g);
}

static void gocd_close(struct bconn *c)
{
	struct gconn *g = c->impl;
	if (g == NULL)
		return;
	if (g->fd >= 0) {
		event_del(&g->rev);
		event_del(&g->wev);
		close(g->fd);
	}
	free(g->fifo);
	free(g->in);
	free(g->out);
	free(g);
	c->impl = NULL;
}

const struct target_ops bench_gocd_ops = {
	.name = "gocd",
	.open = gocd_open,
	.send = gocd_send,
	.flush = gocd_flush,
	.close = gocd_close,
};
