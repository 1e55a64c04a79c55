/*
 * bench_gocd.c - goc-bench's --target=gocd: NDJSON over TCP or a Unix socket.
 *
 * Owns: one bufferevent per connection and the FIFO of its in-flight
 * requests (gocd answers in request order).  Requests are rendered and
 * responses parsed only through proto/ (codec, frame).
 * Must never: build or parse protocol JSON by hand, or free a bufferevent
 * from inside its own callback (a dead connection is reaped by close).
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

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#include "bench.h"
#include "frame.h"

struct gconn {
	struct bconn *c;
	struct bufferevent *bev;
	struct bench_req *fifo; /* ring of cfg.pipeline requests */
	unsigned head, len, cap;
	json_t *key;            /* {"col":"text",...}, values rewritten per request */
	json_t *key_vals[BENCH_MAX_KEY_COLS];
};

static void gocd_fail(struct gconn *g, const char *why)
{
	struct bconn *c = g->c;
	if (c->dead)
		return;
	if (g->bev)
		bufferevent_disable(g->bev, EV_READ | EV_WRITE);
	struct bench_result res = { .code = BENCH_E_CONNECTION, .message = why };
	while (g->len) {
		struct bench_req r = g->fifo[g->head];
		g->head = (g->head + 1) % g->cap;
		g->len--;
		bench_done(c, &r, &res);
	}
	bench_conn_failed(c, why);
}

static void gocd_read_cb(struct bufferevent *bev, void *arg)
{
	struct gconn *g = arg;
	struct bconn *c = g->c;
	struct evbuffer *in = bufferevent_get_input(bev);
	for (;;) {
		const char *line;
		size_t len, consumed;
		enum frame_rc fr = frame_next(in, BENCH_MAX_RESPONSE, &line, &len, &consumed);
		if (fr == FRAME_NEED_MORE)
			break;
		if (fr == FRAME_TOO_LARGE) {
			gocd_fail(g, "response line longer than the limit");
			return;
		}
		if (frame_is_blank(line, len)) {
			evbuffer_drain(in, consumed);
			continue;
		}
		if (g->len == 0) {
			gocd_fail(g, "response without a request in flight");
			return;
		}
		struct bench_req r = g->fifo[g->head];
		g->head = (g->head + 1) % g->cap;
		g->len--;
		struct goc_response resp;
		struct bench_result res = { 0 };
		if (codec_parse_response(line, len, &resp) != 0) {
			res.code = BENCH_E_PROTOCOL;
			res.message = "response is not a valid gocd response";
		} else if (resp.ok) {
			res.code = GOC_OK;
			res.created = resp.created;
			res.row = resp.row;
		} else {
			res.code = (int)resp.code;
			res.message = resp.message;
		}
		bench_done(c, &r, &res);
		codec_response_free(&resp);
		evbuffer_drain(in, consumed);
	}
	bench_pump(c);
}

static void gocd_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct gconn *g = arg;
	if (what & BEV_EVENT_CONNECTED) {
		if (g->c->b->cfg.unix_path == NULL) {
			int one = 1;
			evutil_socket_t fd = bufferevent_getfd(bev);
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		}
		bench_conn_ready(g->c);
		return;
	}
	char why[256];
	if (what & BEV_EVENT_EOF)
		snprintf(why, sizeof why, "gocd closed the connection");
	else
		snprintf(why, sizeof why, "connection error: %s",
			 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	gocd_fail(g, why);
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
	struct gconn *g = calloc(1, sizeof *g);
	if (g == NULL)
		return -1;
	c->impl = g;
	g->c = c;
	g->cap = cfg->pipeline;
	g->fifo = calloc(g->cap, sizeof *g->fifo);
	g->key = json_object();
	if (g->fifo == NULL || g->key == NULL)
		return -1;
	for (unsigned i = 0; i < cfg->nkey_cols; i++) {
		g->key_vals[i] = json_string("");
		if (g->key_vals[i] == NULL ||
		    json_object_set_new(g->key, cfg->key_cols[i], g->key_vals[i]))
			return -1;
	}

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
	g->bev = bufferevent_socket_new(c->b->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (g->bev == NULL)
		return -1;
	bufferevent_setcb(g->bev, gocd_read_cb, NULL, gocd_event_cb, g);
	if (bufferevent_enable(g->bev, EV_READ | EV_WRITE))
		return -1;
	if (bufferevent_socket_connect(g->bev, (struct sockaddr *)&ss, sslen)) {
		fprintf(stderr, "goc-bench: cannot connect to %s: %s\n",
			cfg->unix_path ? cfg->unix_path : cfg->addr, strerror(errno));
		return -1;
	}
	return 0;
}

static void gocd_send(struct bconn *c, const struct bench_req *r)
{
	struct gconn *g = c->impl;
	const struct bench_cfg *cfg = &c->b->cfg;
	g->fifo[(g->head + g->len) % g->cap] = *r;
	g->len++;
	struct evbuffer *out = bufferevent_get_output(g->bev);
	if (cfg->op == GOC_OP_PING) {
		codec_render_request(out, cfg->op, NULL, NULL, NULL, NULL);
		return;
	}
	char key[BENCH_KEY_MAX];
	size_t n = bench_key_text(c->b, r->key, key);
	for (unsigned i = 0; i < cfg->nkey_cols; i++)
		(void)json_string_setn(g->key_vals[i], key, n);
	codec_render_request(out, cfg->op, NULL, cfg->table, g->key,
			     cfg->op == GOC_OP_GET_OR_CREATE ? cfg->defaults : NULL);
}

static void gocd_flush(struct bconn *c)
{
	/* the bufferevent writes when the loop next runs */
	(void)c;
}

static void gocd_close(struct bconn *c)
{
	struct gconn *g = c->impl;
	if (g == NULL)
		return;
	if (g->bev)
		bufferevent_free(g->bev);
	if (g->key)
		json_decref(g->key);
	free(g->fifo);
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
