/*
 * admin.c - the HTTP admin listener (libevent's evhttp).
 *
 * Owns: the admin socket, routing of /metrics (Prometheus text from
 * stats.c) and /healthz (200 while at least one PostgreSQL connection is up
 * and gocd is not shutting down, else 503), and the limits of an admin
 * request.  Anything else is 404; a method other than GET or HEAD is 405.
 * Must never: expose rows or configuration secrets (the postgres conninfo
 * may hold a password), accept writes, or block the loop.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "admin.h"
#include "gocd.h"
#include "log.h"
#include "pgpool.h"
#include "stats.h"

static struct evhttp *http;

static void reply_text(struct evhttp_request *req, int code, const char *reason,
		       const char *ctype, struct evbuffer *body)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Type", ctype);
	evhttp_add_header(h, "Cache-Control", "no-store");
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
		/* evhttp (2.1) leaves out a HEAD reply's Content-Length but
		 * still sends its body, which a client takes for the start of
		 * the next response.  The length, and no body. */
		char len[24];
		snprintf(len, sizeof len, "%zu", evbuffer_get_length(body));
		evhttp_add_header(h, "Content-Length", len);
		body = NULL;
	}
	evhttp_send_reply(req, code, reason, body);
}

static int method_ok(struct evhttp_request *req)
{
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	if (m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD)
		return 1;
	evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
	evhttp_send_error(req, 405, "Method Not Allowed");
	return 0;
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
	(void)arg;
	if (!method_ok(req))
		return;
	struct evbuffer *b = evbuffer_new();
	if (b == NULL) {
		evhttp_send_error(req, 500, "Internal Server Error");
		return;
	}
	stats_render_prometheus(b);
	reply_text(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", b);
	evbuffer_free(b);
}

static void on_healthz(struct evhttp_request *req, void *arg)
{
	(void)arg;
	if (!method_ok(req))
		return;
	struct pgpool_stats p;
	pgpool_get_stats(&p);
	int up = p.idle + p.busy;
	struct evbuffer *b = evbuffer_new();
	if (b == NULL) {
		evhttp_send_error(req, 500, "Internal Server Error");
		return;
	}
	int code;
	if (srv.shutting_down) {
		code = 503;
		evbuffer_add_printf(b, "shutting down\n");
	} else if (up > 0) {
		code = 200;
		evbuffer_add_printf(b, "ok: %d of %d PostgreSQL connections up\n", up, p.size);
	} else {
		code = 503;
		evbuffer_add_printf(b, "unavailable: no PostgreSQL connection up (%d connecting, "
				    "%d down)\n", p.connecting, p.down);
	}
	reply_text(req, code, code == 200 ? "OK" : "Service Unavailable",
		   "text/plain; charset=utf-8", b);
	evbuffer_free(b);
}

static void on_other(struct evhttp_request *req, void *arg)
{
	(void)arg;
	/* Not evhttp_send_error: its page goes out even for HEAD. */
	struct evbuffer *b = evbuffer_new();
	if (b == NULL) {
		evhttp_send_error(req, 500, "Internal Server Error");
		return;
	}
	evbuffer_add_printf(b, "not found: try /metrics or /healthz\n");
	reply_text(req, 404, "Not Found", "text/plain; charset=utf-8", b);
	evbuffer_free(b);
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
	struct evconnlistener *l = evconnlistener_new_bind(
		base, NULL, NULL,
		LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
		(struct sockaddr *)&ss, len);
	if (l == NULL) {
		log_error("admin_listen: cannot listen on %s: %s", addr, strerror(errno));
		return -1;
	}
	http = evhttp_new(base);
	if (http == NULL || evhttp_bind_listener(http, l) == NULL) {
		log_error("admin_listen: cannot start the HTTP server on %s", addr);
		if (http)
			evhttp_free(http);
		else
			evconnlistener_free(l);
		http = NULL;
		return -1;
	}
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
					 EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	evhttp_set_max_headers_size(http, ADMIN_MAX_HEADERS);
	/* Small bodies are read, so a POST gets 405 (not 413) from method_ok. */
	evhttp_set_max_body_size(http, ADMIN_MAX_BODY);
	evhttp_set_timeout(http, ADMIN_TIMEOUT_S);
	evhttp_set_cb(http, "/metrics", on_metrics, NULL);
	evhttp_set_cb(http, "/healthz", on_healthz, NULL);
	evhttp_set_gencb(http, on_other, NULL);
	log_info("admin listening on http://%s (/metrics, /healthz)", addr);
	return 0;
}

void admin_close(void)
{
	if (http)
		evhttp_free(http);
	http = NULL;
}

int admin_is_open(void)
{
	return http != NULL;
}
