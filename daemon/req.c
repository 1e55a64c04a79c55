/*
 * req.c - request lifetime.
 *
 * Owns: allocation, the answered/busy/attached rule for freeing, and the
 * global timeout list.  Requests enter that list in arrival order with the
 * same request_timeout, so the list is sorted by deadline and expiry only
 * ever looks at its head.
 * Must never: free a request that a pool job or the lock table still
 * points at, or one its connection has not let go of.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "config.h"
#include "conn.h"
#include "goc.h"
#include "gocd.h"
#include "req.h"
#include "stats.h"

static TAILQ_HEAD(, req) pending = TAILQ_HEAD_INITIALIZER(pending);
/* An exit at shutdown_timeout leaves requests a pool job still points at
 * (a statement stuck on a lock): req_shutdown frees them by this list. */
static LIST_HEAD(, req) live = LIST_HEAD_INITIALIZER(live);
static int npending, nallocated;

/* Freed requests kept for reuse with their buffers: malloc/free were a
 * quarter of gocd's instructions per request (callgrind). */
#define FREELIST_MAX 4096
static struct req *freelist[FREELIST_MAX];
static int nfree;

/*
 * What a request waiting for its answer costs beyond its line, counted in
 * max_client_memory: struct req (576 bytes), its two evbuffers, parameter
 * arrays, its lock-table and batch entries.  Measured: 10,000 requests of
 * 100-byte lines waiting on a locked table grew gocd by 27 MB (2.7 kB each),
 * of 1.1 kB lines by 39 MB.  Its line stands for the key and defaults texts
 * it keeps (the parsed tree goes, see req_compact).
 */
#define REQ_MEM_FIXED 2560

struct req *req_new(struct conn *conn, size_t line_len)
{
	struct req *r;
	if (nfree > 0) {
		r = freelist[--nfree];
		struct evbuffer *out = r->out, *pb = r->params_buf;
		memset(r, 0, sizeof *r);
		r->out = out;
		r->params_buf = pb;
	} else {
		r = calloc(1, sizeof *r);
		if (r == NULL)
			abort();
		r->out = evbuffer_new();
		if (r->out == NULL)
			abort();
	}
	r->conn = conn;
	r->mem = line_len + REQ_MEM_FIXED;
	conn_mem_requests((long)r->mem);
	r->started_us = gocd_now_us();
	r->started_ms = r->started_us / 1000;
	TAILQ_INSERT_TAIL(&pending, r, timer_link);
	LIST_INSERT_HEAD(&live, r, live_link);
	npending++;
	nallocated++;
	if (conn)
		conn_add_req(conn, r);
	return r;
}

/* Its share of max_client_memory goes back once it is answered (its answer
 * is counted as its connection's output then), or freed unanswered. */
static void req_uncount(struct req *r)
{
	if (r->mem) {
		conn_mem_requests(-(long)r->mem);
		r->mem = 0;
	}
}

static void req_free(struct req *r)
{
	req_uncount(r);
	goc_release(r);
	free(r->head);
	r->head = NULL;
	codec_request_free(&r->in);
	LIST_REMOVE(r, live_link);
	nallocated--;
	if (nfree < FREELIST_MAX && evbuffer_get_length(r->out) == 0) {
		freelist[nfree++] = r;
		return;
	}
	evbuffer_free(r->out);
	if (r->params_buf)
		evbuffer_free(r->params_buf);
	free(r);
}

/*
 * An answered request that nothing in flight refers to needs its parsed
 * line no more.  Let go of it now: an answer may wait in the FIFO behind
 * a slow request, and the tree (up to ~36 times its line: an array of
 * small numbers) must not wait with it.  op stays for the code that
 * looks at it.
 */
static void drop_input(struct req *r)
{
	enum goc_op op = r->in.op;
	codec_request_free(&r->in);
	r->in.op = op;
}

static void maybe_free(struct req *r)
{
	if (r->answered && r->conn == NULL && !r->busy)
		req_free(r);
}

void req_compact(struct req *r)
{
	json_t *root = r->in.root;
	if (root == NULL)
		return;
	json_object_del(root, "key");
	json_object_del(root, "defaults");
	r->in.key = r->in.defaults = NULL;
	/* Scalars cost about their text anyway. */
	if (!json_is_object(r->in.id) && !json_is_array(r->in.id))
		return;
	struct evbuffer *b = evbuffer_new();
	if (b == NULL)
		return; /* keep the tree */
	codec_render_head(b, r->in.id);
	size_t n = evbuffer_get_length(b);
	char *head = malloc(n);
	if (head != NULL && evbuffer_remove(b, head, n) == (int)n) {
		r->head = head;
		r->head_len = n;
		json_object_del(root, "id");
		r->in.id = NULL;
	} else {
		free(head);
	}
	evbuffer_free(b);
}

void req_answered(struct req *r)
{
	if (r->answered)
		return;
	if (r->head != NULL && evbuffer_get_length(r->out) > 0) {
		/* Rendered without its id: its own head replaces the "{". */
		evbuffer_drain(r->out, 1);
		evbuffer_prepend(r->out, r->head, r->head_len);
	}
	r->answered = true;
	req_uncount(r);
	TAILQ_REMOVE(&pending, r, timer_link);
	npending--;
	stats_request_done(r);
	if (!r->busy)
		drop_input(r);
	if (r->conn)
		conn_answered(r->conn, evbuffer_get_length(r->out)); /* may detach r */
	else
		maybe_free(r);
}

void req_answer_error(struct req *r, enum goc_err code, const char *fmt, ...)
{
	char msg[CODEC_MSG_MAX];
	va_list ap;

	if (r->answered)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	stats_error(code);
	r->outcome = code;
	codec_render_error(r->out, r->in.id, code, msg);
	req_answered(r);
}

void req_detach(struct req *r)
{
	r->conn = NULL;
	if (!r->answered)
		return; /* still in the timeout list; freed once answered */
	maybe_free(r);
}

void req_idle(struct req *r)
{
	r->busy = false;
	if (r->answered)
		drop_input(r);
	maybe_free(r);
}

#define MAY_OR_MAY_NOT "the row may or may not have been created, calling again is safe"

int req_expire(uint64_t now_ms)
{
	int n = 0;
	struct req *r;
	/* The deadline is taken from the current request_timeout, not the one
	 * at arrival: then the list, in arrival order, is in deadline order
	 * even after a reload lowered the timeout, and only its head need be
	 * looked at.  A reload changes the timeout of requests in flight too. */
	uint64_t timeout = (uint64_t)srv.cfg->request_timeout;
	while ((r = TAILQ_FIRST(&pending)) != NULL && r->started_ms + timeout <= now_ms) {
		goc_on_timeout(r);
		req_answer_error(r, GOC_E_TIMEOUT, "no answer within request_timeout (%d ms); %s",
				 srv.cfg->request_timeout, MAY_OR_MAY_NOT);
		n++;
	}
	return n;
}

int req_expire_all(void)
{
	int n = 0;
	struct req *r;
	while ((r = TAILQ_FIRST(&pending)) != NULL) {
		goc_on_timeout(r);
		req_answer_error(r, GOC_E_TIMEOUT, "gocd is shutting down and shutdown_timeout (%d ms) "
				 "passed before an answer; %s", srv.cfg->shutdown_timeout, MAY_OR_MAY_NOT);
		n++;
	}
	return n;
}

void req_shutdown(void)
{
	struct req *r;
	while ((r = LIST_FIRST(&live)) != NULL) {
		if (!r->answered) {
			TAILQ_REMOVE(&pending, r, timer_link);
			npending--;
		}
		evbuffer_drain(r->out, evbuffer_get_length(r->out)); /* onto the freelist, freed below */
		req_free(r);
	}
	while (nfree > 0) {
		r = freelist[--nfree];
		evbuffer_free(r->out);
		if (r->params_buf)
			evbuffer_free(r->params_buf);
		free(r);
	}
}

int req_inflight(void)
{
	return npending;
}

int req_allocated(void)
{
	return nallocated;
}
