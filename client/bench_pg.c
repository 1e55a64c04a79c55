/*
 * bench_pg.c - goc-bench's PostgreSQL baselines, --target=direct and naive.
 *
 * Owns: one non-blocking libpq connection per bench connection, driven from
 * the shared libevent loop in pipeline mode (each statement followed by its
 * own sync, so a failure never takes another request with it), the FIFO of
 * statements in flight, and the two get-or-create flows:
 *
 *   direct: what a careful application writes against PostgreSQL:
 *     SELECT; on a miss INSERT ... ON CONFLICT (key) DO NOTHING RETURNING;
 *     when another writer won, SELECT again (a new snapshot per statement in
 *     READ COMMITTED).  Prepared statements; 40001/40P01 retried.
 *   naive: the Django-style SELECT, then a plain INSERT on a miss, against a
 *     table without a unique index on the key: it races and duplicates.
 *
 * Rows are fetched as row_to_json(t.*)::text so that ids compare exactly as
 * gocd's rows do.  Must never: block (no PQexec, no PQprepare), or free a
 * PGconn inside one of its own callbacks (close reaps it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <libpq-fe.h>

#include "bench.h"

enum pg_state {
	PGS_CONNECTING, /* PQconnectPoll in progress */
	PGS_PREPARING,  /* connected; PREPAREs in flight */
	PGS_READY,      /* serving requests */
	PGS_DEAD,       /* failed; waiting for close */
};

static const char *const pg_state_name[] = {
	[PGS_CONNECTING] = "connecting",
	[PGS_PREPARING] = "preparing",
	[PGS_READY] = "ready",
	[PGS_DEAD] = "dead",
};

enum pg_stmt { ST_SEL, ST_INS, ST_PING, ST__COUNT };
static const char *const pg_stmt_name[ST__COUNT] = { "gb_sel", "gb_ins", "gb_ping" };

enum pg_step {
	FL_SEL,    /* get_or_create: first SELECT */
	FL_INS,    /* get_or_create: INSERT after a miss */
	FL_REREAD, /* direct: SELECT after the INSERT lost a race */
	FL_GET,    /* get: SELECT only */
	FL_PING,   /* ping: SELECT 1 */
};

#define PG_MAX_RETRIES 3 /* 40001/40P01 retries, and INSERT/re-read loops */

struct pgflow {
	struct bench_req r;
	unsigned char step, tries;
};

enum { Q_PREPARE, Q_STMT };
struct pgq {
	int flow;              /* index in flows, -1 for a PREPARE */
	unsigned char kind;
	unsigned char phase;   /* 0: want result, 1: want NULL, 2: want SYNC */
};

struct pgc {
	struct bconn *c;
	PGconn *pg;
	bool naive;
	enum pg_state state;
	struct event *ev_conn;    /* one-shot during connect (the socket may change) */
	struct event *rev, *wev;  /* after connect: persistent read, one-shot write */
	struct pgflow *flows;
	unsigned *free_flows, nfree;
	struct pgq *q;            /* ring of statements in flight */
	unsigned qhead, qlen, qcap;
	unsigned prep_left;
};

/* Statement texts, built once per process for the configured table. */
static char *pg_sql[2][ST__COUNT];

static void pg_ident(struct evbuffer *out, const char *name)
{
	/* "a.b" is schema-qualified; each part is quoted, quotes doubled */
	evbuffer_add(out, "\"", 1);
	for (const char *p = name; *p; p++) {
		if (*p == '.') {
			evbuffer_add(out, "\".\"", 3);
			continue;
		}
		if (*p == '"')
			evbuffer_add(out, "\"", 1);
		evbuffer_add(out, p, 1);
	}
	evbuffer_add(out, "\"", 1);
}

static char *pg_take(struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);
	if (s) {
		evbuffer_remove(b, s, n);
		s[n] = '\0';
	}
	return s;
}

static int pg_build_sql(const struct bench_cfg *cfg, bool naive)
{
	char **sql = pg_sql[naive];
	if (sql[ST_SEL])
		return 0;
	struct evbuffer *b = evbuffer_new();
	if (b == NULL)
		return -1;

	evbuffer_add_printf(b, "SELECT row_to_json(t.*)::text FROM ");
	pg_ident(b, cfg->table);
	evbuffer_add_printf(b, " AS t WHERE ");
	for (unsigned i = 0; i < cfg->nkey_cols; i++) {
		evbuffer_add_printf(b, "%st.", i ? " AND " : "");
		pg_ident(b, cfg->key_cols[i]);
		evbuffer_add_printf(b, " = $%u", i + 1);
	}
	/* naive reads like Django's get(): more than one row is an error */
	evbuffer_add_printf(b, naive ? " LIMIT 2" : "");
	sql[ST_SEL] = pg_take(b);

	evbuffer_add_printf(b, "INSERT INTO ");
	pg_ident(b, cfg->table);
	evbuffer_add_printf(b, " AS t (");
	for (unsigned i = 0; i < cfg->nkey_cols + cfg->ndef; i++) {
		if (i)
			evbuffer_add(b, ",", 1);
		pg_ident(b, i < cfg->nkey_cols ? cfg->key_cols[i]
					       : cfg->def_cols[i - cfg->nkey_cols]);
	}
	evbuffer_add_printf(b, ") VALUES (");
	for (unsigned i = 0; i < cfg->nkey_cols + cfg->ndef; i++)
		evbuffer_add_printf(b, "%s$%u", i ? "," : "", i + 1);
	evbuffer_add_printf(b, ")");
	if (!naive) {
		evbuffer_add_printf(b, " ON CONFLICT (");
		for (unsigned i = 0; i < cfg->nkey_cols; i++) {
			if (i)
				evbuffer_add(b, ",", 1);
			pg_ident(b, cfg->key_cols[i]);
		}
		evbuffer_add_printf(b, ") DO NOTHING");
	}
	evbuffer_add_printf(b, " RETURNING row_to_json(t.*)::text");
	sql[ST_INS] = pg_take(b);

	sql[ST_PING] = strdup("SELECT 1");
	evbuffer_free(b);
	return sql[ST_SEL] && sql[ST_INS] && sql[ST_PING] ? 0 : -1;
}

/*
 * The one place a connection changes state.  Legal moves: connecting ->
 * preparing -> ready, and any -> dead.  Anything else is a bug in this file.
 */
static void pg_set_state(struct pgc *p, enum pg_state to)
{
	bool ok = to == PGS_DEAD ||
		  (p->state == PGS_CONNECTING && to == PGS_PREPARING) ||
		  (p->state == PGS_PREPARING && to == PGS_READY);
	if (!ok) {
		fprintf(stderr, "goc-bench: internal error: connection %u: %s -> %s\n",
			p->c->idx, pg_state_name[p->state], pg_state_name[to]);
		abort();
	}
	p->state = to;
}

static void pg_fail(struct pgc *p, const char *why)
{
	struct bconn *c = p->c;
	if (p->state == PGS_DEAD)
		return;
	pg_set_state(p, PGS_DEAD);
	if (p->ev_conn)
		event_del(p->ev_conn);
	if (p->rev)
		event_del(p->rev);
	if (p->wev)
		event_del(p->wev);
	struct bench_result res = { .code = BENCH_E_CONNECTION, .message = why };
	for (unsigned i = 0; i < p->qlen; i++) {
		const struct pgq *e = &p->q[(p->qhead + i) % p->qcap];
		/* phase 0 only: a later phase is a statement already answered,
		 * whose flow may since carry another request */
		if (e->kind == Q_STMT && e->phase == 0)
			bench_done(c, &p->flows[e->flow].r, &res);
	}
	p->qlen = 0;
	bench_conn_failed(c, why);
}

static void pg_fail_conn(struct pgc *p, const char *what)
{
	char why[512];
	const char *m = PQerrorMessage(p->pg);
	size_t n = strlen(m);
	while (n && (m[n - 1] == '\n' || m[n - 1] == ' '))
		n--;
	snprintf(why, sizeof why, "%s: %.*s", what, (int)n, m);
	pg_fail(p, why);
}

/* Push what libpq has buffered; arm the write event when the socket is full. */
static void pg_flush(struct pgc *p)
{
	if (p->state == PGS_DEAD || p->state == PGS_CONNECTING)
		return;
	int rc = PQflush(p->pg);
	if (rc < 0)
		pg_fail_conn(p, "sending to PostgreSQL");
	else if (rc > 0)
		event_add(p->wev, NULL);
}

static void pg_qpush(struct pgc *p, int flow, unsigned char kind)
{
	struct pgq *e = &p->q[(p->qhead + p->qlen) % p->qcap];
	e->flow = flow;
	e->kind = kind;
	e->phase = 0;
	p->qlen++;
}

/* Send one statement for flow fi, followed by its own sync. */
static void pg_send_stmt(struct pgc *p, unsigned fi, enum pg_stmt st)
{
	const struct bench_cfg *cfg = &p->c->b->cfg;
	struct pgflow *f = &p->flows[fi];
	char key[BENCH_KEY_MAX];
	const char *vals[BENCH_MAX_KEY_COLS + BENCH_MAX_DEFAULTS];
	int n = 0;
	if (st != ST_PING) {
		bench_key_text(p->c->b, f->r.key, key);
		for (unsigned i = 0; i < cfg->nkey_cols; i++)
			vals[n++] = key;
	}
	if (st == ST_INS)
		for (unsigned i = 0; i < cfg->ndef; i++)
			vals[n++] = cfg->def_vals[i];
	if (!PQsendQueryPrepared(p->pg, pg_stmt_name[st], n, vals, NULL, NULL, 0) ||
	    !PQpipelineSync(p->pg)) {
		/* the flow is not in the FIFO yet: finish it here */
		struct bench_result res = { .code = BENCH_E_CONNECTION,
					    .message = "cannot send to PostgreSQL" };
		bench_done(p->c, &f->r, &res);
		p->free_flows[p->nfree++] = fi;
		pg_fail_conn(p, "sending to PostgreSQL");
		return;
	}
	pg_qpush(p, (int)fi, Q_STMT);
}

static void pg_finish(struct pgc *p, unsigned fi, const struct bench_result *res)
{
	bench_done(p->c, &p->flows[fi].r, res);
	p->free_flows[p->nfree++] = fi;
}

static void pg_finish_row(struct pgc *p, unsigned fi, const PGresult *r, bool created)
{
	struct bench_result res = { .code = GOC_OK, .created = created };
	if (r && PQntuples(r) > 0) {
		res.row_text = PQgetvalue(r, 0, 0);
		res.row_len = (size_t)PQgetlength(r, 0, 0);
	}
	pg_finish(p, fi, &res);
}

static void pg_stmt_result(struct pgc *p, unsigned fi, const PGresult *r)
{
	struct pgflow *f = &p->flows[fi];
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		const char *ss = PQresultErrorField(r, PG_DIAG_SQLSTATE);
		if (ss && (!strcmp(ss, "40001") || !strcmp(ss, "40P01")) &&
		    f->tries < PG_MAX_RETRIES) {
			f->tries++;
			pg_send_stmt(p, fi, f->step == FL_INS ? ST_INS
					   : f->step == FL_PING ? ST_PING : ST_SEL);
			return;
		}
		struct bench_result res = {
			.code = bench_sqlstate_code(ss),
			.message = PQresultErrorMessage(r),
		};
		pg_finish(p, fi, &res);
		return;
	}
	int rows = PQntuples(r);
	switch ((enum pg_step)f->step) {
	case FL_PING:
		pg_finish_row(p, fi, NULL, false);
		return;
	case FL_SEL:
	case FL_GET:
		if (rows > 1) {
			struct bench_result res = {
				.code = BENCH_E_MULTIPLE_ROWS,
				.message = "SELECT found more than one row for the key",
			};
			pg_finish(p, fi, &res);
		} else if (rows == 1 || f->step == FL_GET) {
			pg_finish_row(p, fi, r, false);
		} else {
			f->step = FL_INS;
			pg_send_stmt(p, fi, ST_INS);
		}
		return;
	case FL_INS:
		if (rows == 1) {
			pg_finish_row(p, fi, r, true);
		} else if (p->naive) {
			struct bench_result res = { .code = GOC_E_INTERNAL,
						    .message = "INSERT returned no row" };
			pg_finish(p, fi, &res);
		} else {
			/* another writer won the race: read its row */
			f->step = FL_REREAD;
			pg_send_stmt(p, fi, ST_SEL);
		}
		return;
	case FL_REREAD:
		if (rows == 1) {
			pg_finish_row(p, fi, r, false);
		} else if (++f->tries <= PG_MAX_RETRIES) {
			/* the winner's row was deleted in between: try again */
			f->step = FL_INS;
			pg_send_stmt(p, fi, ST_INS);
		} else {
			struct bench_result res = {
				.code = GOC_E_INTERNAL,
				.message = "row neither inserted nor found after retries",
			};
			pg_finish(p, fi, &res);
		}
		return;
	}
}

static void pg_prepare_result(struct pgc *p, const PGresult *r)
{
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		char why[512];
		const char *ss = PQresultErrorField(r, PG_DIAG_SQLSTATE);
		const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
		snprintf(why, sizeof why, "PREPARE failed: SQLSTATE %s: %s", ss ? ss : "?",
			 m ? m : PQresultErrorMessage(r));
		pg_fail(p, why);
		return;
	}
	if (--p->prep_left == 0) {
		pg_set_state(p, PGS_READY);
		bench_conn_ready(p->c);
	}
}

/*
 * Take every complete result libpq has.  Each statement yields: its result,
 * a NULL (end of that query), then PGRES_PIPELINE_SYNC for its sync.
 */
static void pg_drain(struct pgc *p)
{
	int nulls = 0;
	while (p->qlen && p->state != PGS_DEAD) {
		if (PQisBusy(p->pg))
			break;
		PGresult *r = PQgetResult(p->pg);
		struct pgq *h = &p->q[p->qhead];
		if (r == NULL) {
			if (h->phase == 1)
				h->phase = 2;
			else if (++nulls > 1)
				break; /* nothing more is ready */
			continue;
		}
		nulls = 0;
		if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
			PQclear(r);
			p->qhead = (p->qhead + 1) % p->qcap;
			p->qlen--;
			continue;
		}
		if (h->phase == 0) {
			struct pgq e = *h;
			h->phase = 1;
			if (e.kind == Q_PREPARE)
				pg_prepare_result(p, r);
			else
				pg_stmt_result(p, (unsigned)e.flow, r);
		}
		PQclear(r);
	}
}

static void pg_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pgc *p = arg;
	if (p->state == PGS_DEAD)
		return;
	if (!PQconsumeInput(p->pg)) {
		pg_fail_conn(p, "reading from PostgreSQL");
		return;
	}
	pg_drain(p);
	if (p->state == PGS_READY)
		bench_pump(p->c); /* calls flush when it sent something */
	pg_flush(p);
}

static void pg_write_cb(evutil_socket_t fd, short what, void *arg)
{
	pg_flush(arg);
}

static void pg_connected(struct pgc *p)
{
	const struct bench_cfg *cfg = &p->c->b->cfg;
	int fd = PQsocket(p->pg);
	if (PQsetnonblocking(p->pg, 1) || !PQenterPipelineMode(p->pg)) {
		pg_fail_conn(p, "entering pipeline mode");
		return;
	}
	PQsetNoticeProcessor(p->pg, NULL, NULL);
	p->rev = event_new(p->c->b->base, fd, EV_READ | EV_PERSIST, pg_read_cb, p);
	p->wev = event_new(p->c->b->base, fd, EV_WRITE, pg_write_cb, p);
	if (p->rev == NULL || p->wev == NULL || event_add(p->rev, NULL)) {
		pg_fail(p, "cannot create events");
		return;
	}
	pg_set_state(p, PGS_PREPARING);
	unsigned nparams[ST__COUNT] = {
		[ST_SEL] = cfg->nkey_cols,
		[ST_INS] = cfg->nkey_cols + cfg->ndef,
		[ST_PING] = 0,
	};
	for (int st = 0; st < ST__COUNT; st++) {
		if (!PQsendPrepare(p->pg, pg_stmt_name[st], pg_sql[p->naive][st],
				   (int)nparams[st], NULL) ||
		    !PQpipelineSync(p->pg)) {
			pg_fail_conn(p, "sending PREPARE");
			return;
		}
		pg_qpush(p, -1, Q_PREPARE);
		p->prep_left++;
	}
	pg_flush(p);
}

static void pg_connect_cb(evutil_socket_t fd, short what, void *arg);

static void pg_connect_arm(struct pgc *p, short what)
{
	if (p->ev_conn)
		event_free(p->ev_conn);
	p->ev_conn = event_new(p->c->b->base, PQsocket(p->pg), what, pg_connect_cb, p);
	if (p->ev_conn == NULL || event_add(p->ev_conn, NULL))
		pg_fail(p, "cannot create events");
}

static void pg_connect_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pgc *p = arg;
	if (p->state != PGS_CONNECTING)
		return;
	switch (PQconnectPoll(p->pg)) {
	case PGRES_POLLING_READING:
		pg_connect_arm(p, EV_READ);
		return;
	case PGRES_POLLING_WRITING:
		pg_connect_arm(p, EV_WRITE);
		return;
	case PGRES_POLLING_OK:
		pg_connected(p);
		return;
	default:
		pg_fail_conn(p, "connecting to PostgreSQL");
		return;
	}
}

static int pg_open(struct bconn *c, bool naive)
{
	const struct bench_cfg *cfg = &c->b->cfg;
	if (pg_build_sql(cfg, naive))
		return -1;
	struct pgc *p = calloc(1, sizeof *p);
	if (p == NULL)
		return -1;
	c->impl = p;
	p->c = c;
	p->naive = naive;
	/* a flow can have two entries: one answered and waiting for its sync,
	 * and the next statement it sent */
	p->qcap = 2 * cfg->pipeline + ST__COUNT + 1;
	p->q = calloc(p->qcap, sizeof *p->q);
	p->flows = calloc(cfg->pipeline, sizeof *p->flows);
	p->free_flows = calloc(cfg->pipeline, sizeof *p->free_flows);
	if (p->q == NULL || p->flows == NULL || p->free_flows == NULL)
		return -1;
	for (unsigned i = 0; i < cfg->pipeline; i++)
		p->free_flows[p->nfree++] = cfg->pipeline - 1 - i;

	const char *keys[] = { "dbname", "application_name", NULL };
	const char *vals[] = { cfg->postgres, naive ? "goc-bench-naive" : "goc-bench-direct", NULL };
	p->pg = PQconnectStartParams(keys, vals, 1);
	if (p->pg == NULL || PQstatus(p->pg) == CONNECTION_BAD) {
		fprintf(stderr, "goc-bench: cannot start connecting to PostgreSQL: %s",
			p->pg ? PQerrorMessage(p->pg) : "out of memory\n");
		return -1;
	}
	p->state = PGS_CONNECTING;
	pg_connect_arm(p, EV_WRITE);
	return 0;
}

static int pg_open_direct(struct bconn *c)
{
	return pg_open(c, false);
}

static int pg_open_naive(struct bconn *c)
{
	return pg_open(c, true);
}

static void pg_send(struct bconn *c, const struct bench_req *r)
{
	struct pgc *p = c->impl;
	unsigned fi = p->free_flows[--p->nfree];
	struct pgflow *f = &p->flows[fi];
	f->r = *r;
	f->tries = 0;
	switch (c->b->cfg.op) {
	case GOC_OP_PING:
		f->step = FL_PING;
		pg_send_stmt(p, fi, ST_PING);
		return;
	case GOC_OP_GET:
		f->step = FL_GET;
		break;
	default:
		f->step = FL_SEL;
		break;
	}
	pg_send_stmt(p, fi, ST_SEL);
}

static void pg_flush_cb(struct bconn *c)
{
	pg_flush(c->impl);
}

static void pg_close(struct bconn *c)
{
	struct pgc *p = c->impl;
	if (p == NULL)
		return;
	if (p->ev_conn)
		event_free(p->ev_conn);
	if (p->rev)
		event_free(p->rev);
	if (p->wev)
		event_free(p->wev);
	if (p->pg)
		PQfinish(p->pg);
	free(p->q);
	free(p->flows);
	free(p->free_flows);
	free(p);
	c->impl = NULL;
}

const struct target_ops bench_direct_ops = {
	.name = "direct",
	.open = pg_open_direct,
	.send = pg_send,
	.flush = pg_flush_cb,
	.close = pg_close,
};

const struct target_ops bench_naive_ops = {
	.name = "naive",
	.open = pg_open_naive,
	.send = pg_send,
	.flush = pg_flush_cb,
	.close = pg_close,
};
