/*
 * pgpool.c - PostgreSQL connections as explicit state machines on the loop.
 *
 * Owns: every PGconn.  Each connection is DOWN -> CONNECTING -> SETUP ->
 * IDLE <-> BUSY, and back to DOWN on any failure; pgc_set_state() is the
 * only place that changes state.  Must never: call a blocking libpq
 * function (PQexec, PQconnectdb, PQcancel), or touch a job after handing
 * it back through its done callback.
 *
 * libpq rules followed here (see shared NOTES): the socket may change during
 * PQconnectPoll, so the event is re-armed after every poll; connect_timeout
 * does not apply to async connects, so a timer of our own bounds them;
 * after sending, PQflush until 0, waiting for read *or* write readiness;
 * on readable, PQconsumeInput, then PQgetResult while !PQisBusy.
 *
 * Connections run in pipeline mode, one job at a time, plus at most one
 * held job whose commit (sync) went out just ahead of it.  That lets a job
 * carry its PREPARE in the same round trip, and lets a held job (see
 * hold_commit) read its results - including the transaction id - before
 * the sync commits it: the one moment after which a lost connection
 * leaves the outcome unknown.  Results arrive per command, each followed
 * by a NULL from PQgetResult, and a PGRES_PIPELINE_SYNC per sync.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "log.h"
#include "pgpool.h"

enum pgc_state {
	PGC_DOWN,       /* no PGconn; the timer is the reconnect backoff */
	PGC_CONNECTING, /* PQconnectPoll in progress; timer = connect deadline */
	PGC_SETUP,      /* session settings and setup steps; timer = deadline */
	PGC_IDLE,       /* ready, on the idle list, no job */
	PGC_BUSY,       /* one job sent, result being read */
};
static const char *const pgc_state_names[] = {"down", "connecting", "setup", "idle", "busy"};

struct stmt {
	char *sql;
	char name[24];
};

struct pgconn {
	int idx;
	PGconn *pg;
	enum pgc_state state;
	struct event ev;       /* socket readiness */
	int ev_fd;
	short ev_what;         /* 0 when not armed */
	struct event timer;
	int backoff_ms;
	struct pgjob *job;     /* in flight: a caller's job or &setup_job */
	struct pgjob setup_job;
	int setup_step;        /* -2, -1 = session settings, then caller's steps */
	unsigned session_gen;  /* pool.session_gen its session settings are of */
	bool resession;        /* the setup job in flight only renews those */
	bool preparing;        /* the first command in flight is PREPARE for job->stmt */
	int expect;            /* commands sent for the job (results end with NULL) */
	int nulls;             /* command results completed so far */
	bool sync_sent;
	enum { PH_RESULTS, PH_COMMIT, PH_DISCARD } phase;
	PGresult *res;         /* result kept while the rest is drained */
	struct pgjob *cjob;    /* committing: its sync went out ahead of job */
	int cphase;            /* PH_COMMIT or PH_DISCARD, for cjob */
	int cnulls;            /* NULLs from PQgetResult in a row while cjob waits */
	PGresult *cres;        /* an error the commit returned */
	bool *prepared;        /* per registered statement */
	int prepared_cap;
	char life[PGPOOL_LIFE_MAX]; /* the server's life this connection lives in (pgjob.life) */
	TAILQ_ENTRY(pgconn) idle_link;
};

static struct {
	struct event_base *base;
	struct pgpool_config cfg;
	char *conninfo;
	char session_sql[PGPOOL_SESSION_SQL_MAX];
	unsigned session_gen;  /* bumped when session_sql changes (a reload) */
	struct pgconn *conns;
	TAILQ_HEAD(, pgjob) queue;
	int nqueued;
	TAILQ_HEAD(, pgconn) idle;
	struct stmt *stmts;
	int nstmts;
	bool ever_ready;
	pgpool_source_fn *source;
	pgpool_source_fail_fn *source_fail;
	struct event pump_ev;  /* pump() at the end of this loop turn */
	bool pump_pending;
	unsigned long long round_trips, connects, connect_failures, lost;
	uint64_t sent_seq;     /* jobs sent so far (pgjob.sent_seq) */
} pool;

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000

static void pgc_on_event(evutil_socket_t fd, short what, void *arg);
static void pgc_on_timer(evutil_socket_t fd, short what, void *arg);
static void pgc_send(struct pgconn *c, struct pgjob *job);
static void pgc_down(struct pgconn *c, const char *why, bool was_connected);
static void pump(void);
static struct pgjob *next_work(void);
static void pump_later(void);

static void pgc_set_state(struct pgconn *c, enum pgc_state s)
{
	log_debug("pg[%d]: %s -> %s", c->idx, pgc_state_names[c->state], pgc_state_names[s]);
	if (c->state == PGC_IDLE)
		TAILQ_REMOVE(&pool.idle, c, idle_link);
	if (s == PGC_IDLE) {
		TAILQ_INSERT_HEAD(&pool.idle, c, idle_link); /* LIFO keeps hot connections hot */
		evtimer_del(&c->timer); /* nothing is awaited (see pgc_watch) */
	}
	c->state = s;
}

static void pgc_arm(struct pgconn *c, short what)
{
	int fd = c->pg ? PQsocket(c->pg) : -1;
	if (c->ev_what == what && c->ev_fd == fd)
		return;
	if (c->ev_what)
		event_del(&c->ev);
	c->ev_what = 0;
	if (fd < 0 || what == 0)
		return;
	event_assign(&c->ev, pool.base, fd, what | EV_PERSIST, pgc_on_event, c);
	event_add(&c->ev, NULL);
	c->ev_fd = fd;
	c->ev_what = what;
}

static void pgc_timer(struct pgconn *c, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(&c->timer, &tv);
}

/*
 * Something was sent: an answer is due.  A statement ends by itself within
 * statement_timeout, but a frozen backend, a dead host or a partition
 * answers nothing, ever (TCP keepalive would notice after two hours), and
 * every request sent there would time out while new connections work.  So
 * a connection silent for twice statement_timeout (plus a second) is
 * dropped; what was in flight is then handled as for any lost connection.
 * During setup the timer is connect_timeout, per step.
 */
static int stuck_ms(void)
{
	int st = pool.cfg.statement_timeout_ms;
	return st > 0 ? 2 * st + 1000 : 60000;
}

static void pgc_watch(struct pgconn *c)
{
	pgc_timer(c, c->state == PGC_SETUP ? pool.cfg.connect_timeout_ms : stuck_ms());
}

/* DEBUG and LOG messages come only when the role or database lowers
 * client_min_messages (the session statement raises it again, but runs
 * under it): a dozen a statement at debug5, so they go to gocd's debug
 * level, not info. */
void pgpool_log_notice(const char *who, const PGresult *res)
{
	const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	enum log_level l = sev && (strcmp(sev, "DEBUG") == 0 || strcmp(sev, "LOG") == 0)
				   ? LOG_DEBUG : LOG_INFO;
	if (log_min_level <= l)
		log_msg(l, "%spostgres: %s", who, PQresultErrorMessage(res));
}

static void notice_receiver(void *arg, const PGresult *res)
{
	struct pgconn *c = arg;
	char who[16];
	snprintf(who, sizeof who, "pg[%d]: ", c->idx);
	pgpool_log_notice(who, res);
}

/* Make the conninfo tell us who we are and speak UTF-8, whatever it says. */
static void pgc_connect(struct pgconn *c)
{
	const char *keys[] = {"dbname", "client_encoding", "fallback_application_name", NULL};
	const char *vals[] = {pool.conninfo, "UTF8", "gocd", NULL};

	pool.connects++;
	c->life[0] = '\0'; /* a new server life, maybe: until the session says */
	c->pg = PQconnectStartParams(keys, vals, 1);
	if (c->pg == NULL) {
		pgc_down(c, "out of memory", false);
		return;
	}
	if (PQstatus(c->pg) == CONNECTION_BAD) {
		pgc_down(c, PQerrorMessage(c->pg), false);
		return;
	}
	PQsetNoticeReceiver(c->pg, notice_receiver, c);
	pgc_set_state(c, PGC_CONNECTING);
	c->ev_fd = -1;
	pgc_arm(c, EV_WRITE);
	pgc_timer(c, pool.cfg.connect_timeout_ms);
}

static void pgc_ready(struct pgconn *c);
static bool pgc_renew(struct pgconn *c);

static void setup_next(struct pgconn *c)
{
	struct pgjob *j = &c->setup_job;
	memset(j, 0, sizeof *j);
	j->stmt = -1;
	if (c->setup_step == -2) {
		j->sql = PGPOOL_SETUP_TIMEOUT_SQL;
	} else if (c->setup_step < 0) {
		j->sql = pool.session_sql;
		c->session_gen = pool.session_gen;
	} else if (pool.cfg.setup == NULL || !pool.cfg.setup(c->setup_step, j)) {
		evtimer_del(&c->timer);
		c->backoff_ms = 0;
		if (!pool.ever_ready || c->idx == 0)
			log_info("pg[%d]: connected and ready", c->idx);
		pool.ever_ready = true;
		pgc_ready(c);
		pump_later();
		return;
	}
	j->stmt = -1;
	pgc_send(c, j);
}

/*
 * A connection with nothing in flight: idle, unless its session settings
 * are older than a reload's (statement_timeout follows request_timeout),
 * when it renews them first - one round trip, instead of reconnecting
 * and losing its prepared statements.
 */
static bool pgc_renew(struct pgconn *c)
{
	if (c->session_gen == pool.session_gen)
		return false;
	c->resession = true;
	c->setup_step = -1;
	if (c->state == PGC_IDLE)
		pgc_set_state(c, PGC_BUSY);
	setup_next(c);
	return true;
}

static void pgc_ready(struct pgconn *c)
{
	if (!pgc_renew(c))
		pgc_set_state(c, PGC_IDLE);
}

static void fail_queue(const char *why)
{
	struct pgjob *j;
	while ((j = TAILQ_FIRST(&pool.queue)) != NULL) {
		TAILQ_REMOVE(&pool.queue, j, link);
		pool.nqueued--;
		j->queued = false;
		j->done(j, NULL, PGJOB_UNAVAILABLE, why);
	}
}

static bool all_down(void)
{
	for (int i = 0; i < pool.cfg.size; i++)
		if (pool.conns[i].state != PGC_DOWN)
			return false;
	return true;
}

/*
 * Drop the connection and schedule a reconnect.  A caller's job in flight
 * is handed back as CONN_LOST only after the connection is consistently
 * DOWN, because its callback may submit again.
 */
static void pgc_down(struct pgconn *c, const char *why, bool was_connected)
{
	struct pgjob *job = c->job;
	char msg[512];

	log_copy_message(msg, sizeof msg, why && *why ? why : "connection lost");

	if (was_connected) {
		pool.lost++;
		log_warn("pg[%d]: connection lost: %s", c->idx, msg);
	} else {
		pool.connect_failures++;
		if (c->backoff_ms <= BACKOFF_MIN_MS)
			log_warn("pg[%d]: cannot connect: %s", c->idx, msg);
		else
			log_debug("pg[%d]: cannot connect: %s", c->idx, msg);
	}
	pgc_arm(c, 0);
	evtimer_del(&c->timer);
	if (c->res) {
		PQclear(c->res);
		c->res = NULL;
	}
	if (c->cres) {
		PQclear(c->cres);
		c->cres = NULL;
	}
	if (c->pg) {
		PQfinish(c->pg);
		c->pg = NULL;
	}
	if (c->prepared)
		memset(c->prepared, 0, sizeof(bool) * (size_t)c->prepared_cap);
	int phase = c->phase;
	struct pgjob *cjob = c->cjob;
	int cphase = c->cphase;
	c->cjob = NULL;
	c->job = NULL;
	c->preparing = false;
	c->resession = false; /* a new session gets the current settings anyway */
	pgc_set_state(c, PGC_DOWN);
	if (was_connected && c->backoff_ms == 0) {
		/* It was serving (backoff is reset once setup completes): try
		 * again at once, before anything is failed, so a terminated
		 * backend with PostgreSQL still up costs no request.  The next
		 * failure in a row backs off. */
		c->backoff_ms = BACKOFF_MIN_MS;
		pgc_connect(c);
	} else {
		c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_MIN_MS;
		if (c->backoff_ms > BACKOFF_MAX_MS)
			c->backoff_ms = BACKOFF_MAX_MS;
		pgc_timer(c, c->backoff_ms);
	}

	/* The committing job's sync was sent first: settle it first. */
	if (cjob && cphase == PH_COMMIT)
		cjob->committed(cjob, NULL, PGJOB_CONN_LOST, msg);
	if (job && job != &c->setup_job) {
		if (phase == PH_COMMIT)
			job->committed(job, NULL, PGJOB_CONN_LOST, msg);
		else if (phase == PH_RESULTS)
			job->done(job, NULL, PGJOB_CONN_LOST, msg);
		/* PH_DISCARD: the job already had its answer */
	}
	if (all_down()) {
		fail_queue(msg);
		if (pool.source_fail)
			pool.source_fail(msg);
	}
}

static void pgc_flush(struct pgconn *c)
{
	int f = PQflush(c->pg);
	if (f < 0) {
		pgc_down(c, PQerrorMessage(c->pg), true);
		return;
	}
	pgc_arm(c, f ? EV_READ | EV_WRITE : EV_READ);
}

static void pgc_send(struct pgconn *c, struct pgjob *job)
{
	int ok = 1;

	c->job = job;
	job->life = c->life;
	job->sent_seq = ++pool.sent_seq;
	c->res = NULL;
	c->expect = 0;
	c->nulls = 0;
	c->sync_sent = false;
	c->preparing = false;
	c->phase = PH_RESULTS;
	if (c->state == PGC_IDLE)
		pgc_set_state(c, PGC_BUSY);
	pool.round_trips++;
	if (job->stmt >= 0) {
		const struct stmt *s = &pool.stmts[job->stmt];
		if (job->stmt >= c->prepared_cap || !c->prepared[job->stmt]) {
			/* Same round trip: PREPARE, then the statement. */
			c->preparing = true;
			c->expect++;
			ok = PQsendPrepare(c->pg, s->name, s->sql, 0, NULL);
		}
		ok = ok && PQsendQueryPrepared(c->pg, s->name, job->nparams, job->params,
					       NULL, NULL, 0);
	} else {
		ok = PQsendQueryParams(c->pg, job->sql, job->nparams, NULL, job->params,
				       NULL, NULL, 0);
	}
	c->expect++;
	if (ok) {
		if (job->hold_commit) {
			ok = PQsendFlushRequest(c->pg);
		} else {
			ok = PQpipelineSync(c->pg);
			c->sync_sent = true;
		}
	}
	if (!ok) {
		pgc_down(c, PQerrorMessage(c->pg), true);
		return;
	}
	pgc_watch(c);
	pgc_flush(c);
}

static void mark_prepared(struct pgconn *c, int stmt)
{
	if (stmt >= c->prepared_cap) {
		int cap = stmt + 16;
		bool *p = realloc(c->prepared, sizeof *p * (size_t)cap);
		if (p == NULL)
			abort();
		memset(p + c->prepared_cap, 0, sizeof *p * (size_t)(cap - c->prepared_cap));
		c->prepared = p;
		c->prepared_cap = cap;
	}
	c->prepared[stmt] = true;
}

/* The job is over on this connection: back to idle, then the callback. */
static void pgc_release(struct pgconn *c, struct pgjob *job, pgjob_fn *fn,
			PGresult *res, enum pgjob_outcome outcome)
{
	c->job = NULL;
	pgc_ready(c);
	if (fn)
		fn(job, res, outcome, NULL);
	PQclear(res);
	pump_later();
}

/*
 * An error of severity FATAL or PANIC ends the session, and the server
 * sends it as the answer to whatever statement is on its way then:
 * idle_session_timeout firing as the statement arrived (57P05), a
 * database dropped WITH (FORCE), a standby's recovery conflict.  It says
 * nothing about the statement, which did not run to its end: the
 * connection is lost.  (Without a held commit the sync's result never
 * comes, and the closed socket says so anyway.)
 */
static bool session_ended(const PGresult *res)
{
	const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	return sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0);
}

/* A held job's command results are complete and nothing is committed yet. */
static void pgc_results_done(struct pgconn *c)
{
	struct pgjob *job = c->job;
	PGresult *res = c->res;
	c->res = NULL;
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	bool ok = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;

	if (!ok && res && session_ended(res)) {
		/* Not the statement's error: the server ended the session as
		 * it arrived (nothing committed: that is the sync, not sent). */
		char msg[512];
		log_copy_message(msg, sizeof msg, PQresultErrorMessage(res));
		PQclear(res);
		pgc_down(c, msg, true); /* the job: CONN_LOST, re-run */
		return;
	}
	/* Either way the transaction ends with the sync: a commit after an
	 * OK, a rollback (the server skips to the sync) after an error. */
	c->phase = ok ? PH_COMMIT : PH_DISCARD;
	job->done(job, res, ok ? PGJOB_OK : PGJOB_SQL_ERROR, NULL);
	PQclear(res);
	if (!PQpipelineSync(c->pg)) {
		pgc_down(c, PQerrorMessage(c->pg), true);
		return;
	}
	c->sync_sent = true;
	pgc_watch(c); /* the commit's answer is due */
	/*
	 * While the commit travels, the connection takes its next job: it is
	 * sent right behind the sync, so the server commits and runs it in one
	 * wake-up and a connection costs one round trip per batch, not two.
	 * Results stay in order: first the sync's, then the next job's.
	 */
	c->cjob = job;
	c->cphase = c->phase;
	c->cnulls = 0;
	c->job = NULL;
	if (pgc_renew(c))
		return; /* a connection kept busy this way is never idle */
	struct pgjob *next = next_work();
	if (next)
		pgc_send(c, next);
	else
		pgc_flush(c);
}

/* The committing job's sync result arrived: its transaction is over. */
static void pgc_commit_done(struct pgconn *c)
{
	struct pgjob *job = c->cjob;
	PGresult *res = c->cres;
	c->cjob = NULL;
	c->cres = NULL;
	bool failed = res && PQresultStatus(res) == PGRES_FATAL_ERROR;
	if (c->job == NULL)
		pgc_ready(c);
	/* An error here is the commit itself failing: nothing written. */
	if (c->cphase == PH_COMMIT)
		job->committed(job, res, failed ? PGJOB_SQL_ERROR : PGJOB_OK, NULL);
	PQclear(res);
	if (c->job == NULL)
		pump_later();
}

/* PGRES_PIPELINE_SYNC: the job's transaction is over. */
static void pgc_sync_done(struct pgconn *c)
{
	struct pgjob *job = c->job;
	PGresult *res = c->res;
	c->res = NULL;
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	bool ok = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;

	if (job == &c->setup_job) {
		if (job->done)
			job->done(job, res, ok ? PGJOB_OK : PGJOB_SQL_ERROR, NULL);
		int life = ok && c->setup_step < 0 && PQntuples(res) == 1 ? PQfnumber(res, "life") : -1;
		if (life >= 0)
			snprintf(c->life, sizeof c->life, "%s", PQgetvalue(res, 0, life));
		if (!ok && c->setup_step < 0) {
			char msg[512];
			snprintf(msg, sizeof msg, "session setup failed: %s",
				 res ? PQresultErrorMessage(res) : "no result");
			PQclear(res);
			c->job = NULL;
			pgc_down(c, msg, true);
			return;
		}
		PQclear(res);
		c->job = NULL;
		if (c->resession) {
			c->resession = false;
			pgc_ready(c);
			pump_later();
			return;
		}
		c->setup_step++;
		setup_next(c);
		return;
	}
	pgc_release(c, job, job->done, res, ok ? PGJOB_OK : PGJOB_SQL_ERROR);
}

static void pgc_io(struct pgconn *c, short what)
{
	if ((what & EV_READ) && !PQconsumeInput(c->pg)) {
		pgc_down(c, PQerrorMessage(c->pg), true);
		return;
	}
	if (c->ev_what & EV_WRITE) {
		pgc_flush(c);
		if (c->state == PGC_DOWN)
			return;
	}
	while ((c->job || c->cjob) && !PQisBusy(c->pg)) {
		PGresult *r = PQgetResult(c->pg);
		if (c->cjob) {
			/* Everything before the sync's result belongs to the commit. */
			if (r == NULL) {
				if (++c->cnulls > 1)
					break; /* nothing more parsed yet */
				continue;
			}
			c->cnulls = 0;
			if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
				PQclear(r);
				pgc_commit_done(c);
				if (c->state != PGC_BUSY)
					return; /* idle now, or down */
				continue;
			}
			if (c->cres == NULL || PQresultStatus(r) == PGRES_FATAL_ERROR) {
				PQclear(c->cres);
				c->cres = r;
			} else {
				PQclear(r);
			}
			continue;
		}
		if (r == NULL) {
			/* One command's results are complete. */
			if (++c->nulls == 1 && c->preparing) {
				if (c->res == NULL)
					mark_prepared(c, c->job->stmt);
				c->preparing = false;
			}
			if (c->nulls == c->expect && !c->sync_sent) {
				pgc_results_done(c);
				return;
			}
			if (c->nulls > c->expect)
				break; /* the sync's result has not arrived yet */
			continue;
		}
		ExecStatusType st = PQresultStatus(r);
		if (st == PGRES_PIPELINE_SYNC) {
			PQclear(r);
			pgc_sync_done(c);
			return;
		}
		if (st == PGRES_PIPELINE_ABORTED) {
			PQclear(r); /* the error that aborted it is already kept */
			continue;
		}
		if (c->preparing && c->nulls == 0 && st == PGRES_COMMAND_OK) {
			PQclear(r);
			continue;
		}
		/* Keep the first result, unless a later one is an error. */
		if (c->res == NULL) {
			c->res = r;
		} else if (st == PGRES_FATAL_ERROR) {
			PQclear(c->res);
			c->res = r;
		} else {
			PQclear(r);
		}
	}
	if (c->pg && PQstatus(c->pg) == CONNECTION_BAD)
		pgc_down(c, PQerrorMessage(c->pg), true);
}

static void pgc_on_event(evutil_socket_t fd, short what, void *arg)
{
	struct pgconn *c = arg;
	(void)fd;

	switch (c->state) {
	case PGC_CONNECTING:
		switch (PQconnectPoll(c->pg)) {
		case PGRES_POLLING_FAILED:
			pgc_down(c, PQerrorMessage(c->pg), false);
			return;
		case PGRES_POLLING_READING:
			pgc_arm(c, EV_READ);
			return;
		case PGRES_POLLING_WRITING:
			pgc_arm(c, EV_WRITE);
			return;
		case PGRES_POLLING_OK:
			if (PQsetnonblocking(c->pg, 1) != 0 || !PQenterPipelineMode(c->pg)) {
				pgc_down(c, PQerrorMessage(c->pg), false);
				return;
			}
			pgc_set_state(c, PGC_SETUP);
			c->setup_step = -2;
			setup_next(c);
			return;
		default:
			return;
		}
	case PGC_SETUP:
	case PGC_BUSY:
		pgc_io(c, what);
		return;
	case PGC_IDLE:
		/* Nothing is expected: this is the server going away (or a
		 * notice).  Reading it now means the next job won't be sent
		 * into a dead socket. */
		{
			int ok = PQconsumeInput(c->pg);
			/* Parse what arrived: a FATAL sent to an idle session (say
			 * pg_terminate_backend's 57P01) reaches the notice processor,
			 * and so the log, only once libpq parses it. */
			(void)PQisBusy(c->pg);
			if (!ok || PQstatus(c->pg) == CONNECTION_BAD) {
				pgc_down(c, PQerrorMessage(c->pg), true);
				return;
			}
		}
		return;
	case PGC_DOWN:
		return;
	}
}

static void pgc_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct pgconn *c = arg;
	(void)fd;
	(void)what;
	if (c->state == PGC_DOWN) {
		pgc_connect(c);
	} else if (c->state == PGC_CONNECTING || c->state == PGC_SETUP) {
		char msg[80];
		snprintf(msg, sizeof msg, "no connection within connect_timeout (%d ms)%s",
			 pool.cfg.connect_timeout_ms, c->state == PGC_SETUP ? " for a setup step" : "");
		pgc_down(c, msg, false);
	} else if (c->state == PGC_BUSY) {
		char msg[120];
		snprintf(msg, sizeof msg, "no answer from PostgreSQL for %d ms (backend or network "
			 "stuck); reconnecting", stuck_ms());
		pgc_down(c, msg, true);
	}
}

/* The next job to send: the pool's own queue first, then the batcher. */
static struct pgjob *next_work(void)
{
	struct pgjob *j = TAILQ_FIRST(&pool.queue);
	if (j != NULL) {
		TAILQ_REMOVE(&pool.queue, j, link);
		pool.nqueued--;
		j->queued = false;
		return j;
	}
	return pool.source ? pool.source() : NULL;
}

static void pump(void)
{
	struct pgconn *c;
	struct pgjob *j;
	while ((c = TAILQ_FIRST(&pool.idle)) != NULL) {
		if ((j = next_work()) == NULL)
			return;
		pgc_send(c, j);
	}
}

void pgpool_set_source(pgpool_source_fn *fn, pgpool_source_fail_fn *fail)
{
	pool.source = fn;
	pool.source_fail = fail;
}

/*
 * Work is sent at the end of the current loop turn, not when it arrives:
 * event_active() queues the pump behind the events already active from
 * this epoll_wait, so every request read in this turn joins one batch
 * instead of the first one going out alone to whichever connection is
 * idle.  (Measured: at 64 clients, most round trips were batches of one
 * before.)  Same priority, so the pump cannot be starved.
 */
static void on_pump(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	pool.pump_pending = false;
	pump();
}

static void pump_later(void)
{
	if (pool.pump_pending || pool.base == NULL)
		return;
	pool.pump_pending = true;
	event_active(&pool.pump_ev, EV_TIMEOUT, 0);
}

void pgpool_kick(void)
{
	pump_later();
}

bool pgpool_all_down(void)
{
	return all_down();
}

int pgpool_submit(struct pgjob *job, bool urgent)
{
	if (all_down())
		return -1;
	if (urgent)
		TAILQ_INSERT_HEAD(&pool.queue, job, link);
	else
		TAILQ_INSERT_TAIL(&pool.queue, job, link);
	job->queued = true;
	pool.nqueued++;
	pump_later();
	return 0;
}

bool pgpool_cancel(struct pgjob *job)
{
	if (!job->queued)
		return false;
	TAILQ_REMOVE(&pool.queue, job, link);
	pool.nqueued--;
	job->queued = false;
	return true;
}

int pgpool_statement_count(void)
{
	return pool.nstmts;
}

int pgpool_statement_find(const char *sql)
{
	for (int i = 0; i < pool.nstmts; i++)
		if (strcmp(pool.stmts[i].sql, sql) == 0)
			return i;
	return -1;
}

int pgpool_statement(const char *sql)
{
	int found = pgpool_statement_find(sql);
	if (found >= 0)
		return found;
	struct stmt *s = realloc(pool.stmts, sizeof *s * (size_t)(pool.nstmts + 1));
	if (s == NULL)
		abort();
	pool.stmts = s;
	s = &pool.stmts[pool.nstmts];
	s->sql = strdup(sql);
	if (s->sql == NULL)
		abort();
	snprintf(s->name, sizeof s->name, "gocd_%d", pool.nstmts);
	return pool.nstmts++;
}

int pgpool_session_sql(char *buf, size_t len, int statement_timeout_ms)
{
	int n = snprintf(buf, len,
		 "SELECT pg_catalog.set_config('default_transaction_isolation', 'read committed', false),"
		 " pg_catalog.set_config('statement_timeout', '%d', false),"
		 " pg_catalog.set_config('lock_timeout', '0', false),"
		 " pg_catalog.set_config('exit_on_error', 'off', false),"
		 " pg_catalog.set_config('client_min_messages', 'notice', false),"
		 " pg_catalog.set_config('max_parallel_workers_per_gather', '0', false),"
		 " CASE WHEN pg_catalog.current_setting('session_replication_role') = 'replica'"
		 "  THEN pg_catalog.set_config('session_replication_role', 'origin', false) END,"
		 " pg_catalog.set_config('synchronous_commit', coalesce(nullif((SELECT reset_val FROM"
		 " pg_catalog.pg_settings WHERE name = 'synchronous_commit'), 'off'), 'on'), false),"
		 " pg_catalog.set_config('plan_cache_mode', 'force_generic_plan', false),"
		 " pg_catalog.set_config('enable_seqscan', 'off', false),"
		 " pg_catalog.set_config('enable_hashjoin', 'off', false),"
		 " pg_catalog.set_config('enable_mergejoin', 'off', false),"
		 " pg_catalog.set_config('enable_nestloop', 'on', false),"
		 " pg_catalog.set_config('enable_indexscan', 'on', false),"
		 " pg_catalog.set_config('jit', 'off', false),"
		 " pg_catalog.set_config('array_nulls', 'on', false),"
		 " pg_catalog.set_config('extra_float_digits', '1', false),"
		 /* The pool's connections idle between requests by design; a
		  * role's idle_session_timeout (14+) closed them as soon as
		  * they did, and each was replaced, logged, and lost to a
		  * request arriving just then.  Like PgBouncer's server
		  * connections, they live until gocd closes them. */
		 " CASE WHEN pg_catalog.current_setting('server_version_num')::pg_catalog.int4 >= 140000"
		 "  THEN pg_catalog.set_config('idle_session_timeout', '0', false) END,"
		 " " PGPOOL_LIFE_SQL " AS life", statement_timeout_ms);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

static void session_sql_build(int statement_timeout_ms)
{
	if (pgpool_session_sql(pool.session_sql, sizeof pool.session_sql, statement_timeout_ms) != 0)
		abort(); /* a cut statement would leave a setting unset: the buffer is too small */
}

void pgpool_reload_sessions(int ms)
{
	pool.cfg.statement_timeout_ms = ms;
	session_sql_build(ms);
	pool.session_gen++;
	for (int i = 0; i < pool.cfg.size; i++)
		if (pool.conns[i].state == PGC_IDLE)
			pgc_ready(&pool.conns[i]);
	/* busy ones renew when their job is over (pgc_ready) */
}

void pgpool_set_connect_timeout(int ms)
{
	pool.cfg.connect_timeout_ms = ms;
}

int pgpool_init(struct event_base *base, const struct pgpool_config *cfg)
{
	pool.base = base;
	pool.cfg = *cfg;
	pool.conninfo = strdup(cfg->conninfo ? cfg->conninfo : "");
	/*
	 * Session settings, in one round trip:
	 * - READ COMMITTED whatever the role's default: gocd's correctness
	 *   argument needs each statement's fresh snapshot, so the re-read
	 *   after a lost ON CONFLICT sees the winner's row.
	 * - statement_timeout = request_timeout, and no lock_timeout: a key
	 *   another transaction has just inserted waits for it, as long as
	 *   the request may.  A role's lock_timeout cancelled the wait (55P03,
	 *   answered 'internal') though the row came within request_timeout.
	 * - synchronous_commit off becomes on: an answer says "committed",
	 *   and off acknowledges commits a crash then loses (the row gone,
	 *   its id handed out again).  Any other level is kept, so
	 *   remote_apply stays remote_apply.  It is the server's (role's,
	 *   connection string's) level that is read, not the session's, so
	 *   a reload of gocd picks up a change (see pgpool_reload_sessions);
	 *   until then the session keeps its own, and lowering the server's
	 *   to off never reaches it.
	 * - Generic plans: every statement gocd prepares is a key lookup whose
	 *   best plan does not depend on the values.  In auto mode PostgreSQL
	 *   kept re-planning the batch statements (a custom plan for a known
	 *   array length looks cheaper); forcing generic plans measured
	 *   +18..28% at 16-64 clients.
	 * - And it reads the server's life (PGPOOL_LIFE_SQL): a connection
	 *   never outlives one, so a job is known to have run in it.
	 * - No seq scans, hash or merge joins: a generic plan made while the
	 *   table was empty was a hash join over a seq scan, kept for the life
	 *   of the connection while the table grew (seen in make soak: 1.5k
	 *   req/s until a reconnect).  The unique index is always the way in.
	 *   So index scans and nested loops on, whatever the role says: with
	 *   enable_nestloop off too (a role or database setting) every join
	 *   was a disabled one, and
	 * - jit off: a disabled plan node costs 1e10, far past jit_above_cost,
	 *   so every batch statement was JIT-compiled with inlining and
	 *   optimisation, ~100 ms each (33 req/s instead of 50k).  Key lookups
	 *   never gain from JIT anyway.
	 * - exit_on_error off: on (any role may set it) made every ERROR end
	 *   the session, so a bad value looked like a lost connection and its
	 *   whole batch was re-run, not split, until every request in it was
	 *   answered 'unavailable'.
	 * - client_min_messages notice: at debug5 each statement sent a dozen
	 *   DEBUG notices, each a line of gocd's log (57k lines in 3 s).
	 * - max_parallel_workers_per_gather 0: a role's force_parallel_mode
	 *   started a parallel worker for every lookup (3.6k req/s, not 50k);
	 *   this turns parallel plans off whatever that setting is called.
	 * - session_replication_role replica becomes origin: replica turns
	 *   ordinary triggers off, foreign keys among them, and rows naming
	 *   no parent were stored where constraint_violation was due.  Only
	 *   a superuser may change it: a role that is not one and has it set
	 *   fails its session setup (logged) rather than run without them.
	 * - array_nulls on: a batch sends each column as a text array, where
	 *   the unquoted NULL is SQL NULL only with it on.  A role or database
	 *   with it off made batched null defaults the string 'NULL'.
	 * - extra_float_digits 1: a float in an answer is the stored value's
	 *   shortest exact form (any setting above 0 prints the same).  At 0
	 *   or below, a role or database setting, float8 printed 15 digits:
	 *   answers rounded the value stored, and two keys printed alike.
	 */
	session_sql_build(cfg->statement_timeout_ms);
	TAILQ_INIT(&pool.queue);
	TAILQ_INIT(&pool.idle);
	event_assign(&pool.pump_ev, base, -1, 0, on_pump, NULL);
	pool.conns = calloc((size_t)cfg->size, sizeof *pool.conns);
	if (pool.conns == NULL || pool.conninfo == NULL)
		return -1;
	for (int i = 0; i < cfg->size; i++) {
		struct pgconn *c = &pool.conns[i];
		c->idx = i;
		c->state = PGC_DOWN;
		c->ev_fd = -1;
		evtimer_assign(&c->timer, base, pgc_on_timer, c);
		pgc_connect(c);
	}
	return 0;
}

void pgpool_shutdown(void)
{
	if (pool.base)
		event_del(&pool.pump_ev);
	for (int i = 0; i < pool.cfg.size; i++) {
		struct pgconn *c = &pool.conns[i];
		pgc_arm(c, 0);
		evtimer_del(&c->timer);
		if (c->res)
			PQclear(c->res);
		if (c->cres)
			PQclear(c->cres);
		if (c->pg)
			PQfinish(c->pg);
		free(c->prepared);
	}
	free(pool.conns);
	for (int i = 0; i < pool.nstmts; i++)
		free(pool.stmts[i].sql);
	free(pool.stmts);
	free(pool.conninfo);
	memset(&pool, 0, sizeof pool);
}

void pgpool_get_stats(struct pgpool_stats *out)
{
	memset(out, 0, sizeof *out);
	out->size = pool.cfg.size;
	for (int i = 0; i < pool.cfg.size; i++) {
		switch (pool.conns[i].state) {
		case PGC_IDLE: out->idle++; break;
		case PGC_BUSY: out->busy++; break;
		case PGC_DOWN: out->down++; break;
		default: out->connecting++; break;
		}
	}
	out->queued = pool.nqueued;
	out->round_trips = pool.round_trips;
	out->connects = pool.connects;
	out->connect_failures = pool.connect_failures;
	out->lost = pool.lost;
}

bool pgpool_ever_ready(void)
{
	return pool.ever_ready;
}
