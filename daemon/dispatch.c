/*
 * dispatch.c - parse a line, route it by op.
 *
 * Owns: the mapping from op to handler and the answers of the ops that
 * need no database (ping, stats).  Must never: touch r after handing it
 * to a handler or answering it (it may already be freed).
 */
#include <event2/buffer.h>

#include "dispatch.h"
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

static void (*const handlers[GOC_OP__COUNT])(struct req *) = {
	[GOC_OP_GET_OR_CREATE] = goc_start,
	[GOC_OP_GET] = goc_start,
	[GOC_OP_PING] = op_ping,
	[GOC_OP_STATS] = op_stats,
};

void dispatch_line(struct conn *c, const char *line, size_t len)
{
	struct req *r = req_new(c);
	struct codec_error err;

	if (codec_parse_request(line, len, &r->in, &err) != 0) {
		req_answer_error(r, err.code, "%s", err.message);
		return;
	}
	handlers[r->in.op](r);
}
