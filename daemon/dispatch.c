/*
 * dispatch.c - parse a line, route it by op.
 *
 * Owns: the mapping from op to handler and the answers of the ops that
 * need no database (ping, stats).  Must never: touch r after handing it
 * to a handler or answering it (it may already be freed).
 */
#include <event2/buffer.h>

#include <string.h>

#include "config.h"
#include "conn.h"
#include "dispatch.h"
#include "gocd.h"
#include "goc.h"
#include "req.h"
#include "stats.h"

static void op_ping(struct req *r)
{
	codec_render_ok(r->out, r->in.id, "\"pong\":true");
	req_answered(r);
}

static void op_stats(struct req *r)
{
	struct evbuffer *b = evbuffer_new();
	stats_render(b);
	evbuffer_add(b, "", 1);
	codec_render_ok(r->out, r->in.id, (const char *)evbuffer_pullup(b, -1));
	evbuffer_free(b);
	req_answered(r);
}

/* Compare without an early exit, so timing does not leak the token. */
static int token_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char d = la != lb;
	for (size_t i = 0; i < lb; i++)
		d |= (unsigned char)(a[i % (la ? la : 1)] ^ b[i]);
	return d == 0;
}

static void op_auth(struct req *r)
{
	struct conn *c = r->conn;
	/* A Unix-socket client needs no token, so whatever it sends is fine:
	 * one still sending a token rotated away must not be locked out. */
	if (srv.cfg->auth_token[0] == '\0' || (c && conn_is_unix(c)) ||
	    token_equal(r->in.token, srv.cfg->auth_token)) {
		/* Authenticated only by a real token: one sent while auth is
		 * off must not count once a reload turns it on. */
		if (c && srv.cfg->auth_token[0] != '\0')
			conn_set_authed(c);
		codec_render_ok(r->out, r->in.id, NULL);
		req_answered(r);
		return;
	}
	stats.auth_failures++;
	if (c)
		conn_drain(c);
	req_answer_error(r, GOC_E_UNAUTHORIZED, "wrong token; closing the connection");
}

static void (*const handlers[GOC_OP__COUNT])(struct req *) = {
	[GOC_OP_GET_OR_CREATE] = goc_start,
	[GOC_OP_GET] = goc_start,
	[GOC_OP_PING] = op_ping,
	[GOC_OP_STATS] = op_stats,
	[GOC_OP_AUTH] = op_auth,
};

void dispatch_line(struct conn *c, const char *line, size_t len)
{
	struct req *r = req_new(c, len);
	struct codec_error err;

	if (conn_needs_auth(c)) {
		/* Nothing but a valid auth request is even parsed further. */
		if (codec_parse_request(line, len, &r->in, &err) != 0 || r->in.op != GOC_OP_AUTH) {
			stats.auth_failures++;
			conn_drain(c);
			req_answer_error(r, GOC_E_UNAUTHORIZED,
					 "authenticate first: {\"op\":\"auth\",\"token\":\"...\"}; closing the connection");
			return;
		}
	} else if (codec_parse_request(line, len, &r->in, &err) != 0) {
		req_answer_error(r, err.code, "%s", err.message);
		return;
	}
	handlers[r->in.op](r);
}
