/*
 * catalog.c - reading the catalog at the right moments.
 *
 * Owns: the startup check, the per-connection setup steps and on-demand
 * re-checks.  What a valid table is belongs to table.c.
 * Must never: block after startup.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "config.h"
#include "gocd.h"
#include "log.h"
#include "pgpool.h"
#include "table.h"

/*
 * One catalog query on the startup connection, bounded by connect_timeout
 * as each setup step of a pool connection is.  libpq's connect_timeout
 * ends at the login: a server that took the connection and then answers
 * nothing (a frozen backend, a pooler queueing for a server that is down)
 * held gocd's start, and gocd -t, for ever.  The result (the caller
 * clears it), or NULL with msg set.
 */
static PGresult *exec_bounded(PGconn *pg, const char *sql, const char *param, int timeout_ms,
			      char *msg, size_t len)
{
	if (!PQsendQueryParams(pg, sql, param ? 1 : 0, NULL, param ? &param : NULL, NULL, NULL, 0)) {
		log_copy_message(msg, len, PQerrorMessage(pg));
		return NULL;
	}
	uint64_t deadline = gocd_now_ms() + (uint64_t)timeout_ms;
	while (PQisBusy(pg)) {
		uint64_t now = gocd_now_ms();
		struct pollfd pfd = {.fd = PQsocket(pg), .events = POLLIN};
		int n = now < deadline ? poll(&pfd, 1, (int)(deadline - now)) : 0;
		if (n < 0 && errno == EINTR)
			continue; /* an early SIGHUP: remembered, handled once up */
		if (n == 0) {
			snprintf(msg, len, "no answer to the catalog query within connect_timeout (%d ms)",
				 timeout_ms);
			return NULL;
		}
		if (n < 0 || !PQconsumeInput(pg)) {
			if (n < 0)
				snprintf(msg, len, "poll: %s", strerror(errno));
			else
				log_copy_message(msg, len, PQerrorMessage(pg));
			return NULL;
		}
	}
	PGresult *res = PQgetResult(pg), *extra;
	while ((extra = PQgetResult(pg)) != NULL)
		PQclear(extra);
	if (res == NULL)
		log_copy_message(msg, len, PQerrorMessage(pg));
	return res;
}

/*
 * The startup check's connection, bounded by connect_timeout in
 * milliseconds as a pool connection's attempt is.  libpq's own
 * connect_timeout counts whole seconds and takes nothing under 2 s:
 * connect_timeout 300 waited 2 s at start, and said only "timeout
 * expired".  The connection (the caller finishes it), or NULL with msg set.
 */
static PGconn *connect_bounded(const char *const *keys, const char *const *vals, int timeout_ms,
			       char *msg, size_t len)
{
	PGconn *pg = PQconnectStartParams(keys, vals, 1);
	if (pg == NULL) {
		snprintf(msg, len, "out of memory for a PostgreSQL connection");
		return NULL;
	}
	uint64_t deadline = gocd_now_ms() + (uint64_t)timeout_ms;
	/* As libpq says: the first poll waits as if PQconnectPoll had
	 * returned PGRES_POLLING_WRITING. */
	PostgresPollingStatusType st = PQstatus(pg) == CONNECTION_BAD ? PGRES_POLLING_FAILED
								       : PGRES_POLLING_WRITING;
	while (st != PGRES_POLLING_OK) {
		if (st == PGRES_POLLING_FAILED) {
			log_copy_message(msg, len, PQerrorMessage(pg));
			PQfinish(pg);
			return NULL;
		}
		uint64_t now = gocd_now_ms();
		/* PQsocket may change between polls (another address, SSL
		 * refused): read it again every time. */
		struct pollfd pfd = {.fd = PQsocket(pg),
				     .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
		int n = now < deadline ? poll(&pfd, 1, (int)(deadline - now)) : 0;
		if (n < 0 && errno == EINTR)
			continue; /* an early SIGHUP: remembered, handled once up */
		if (n == 0) {
			snprintf(msg, len, "no connection within connect_timeout (%d ms)", timeout_ms);
			PQfinish(pg);
			return NULL;
		}
		if (n < 0) {
			snprintf(msg, len, "poll: %s", strerror(errno));
			PQfinish(pg);
			return NULL;
		}
		st = PQconnectPoll(pg);
	}
	return pg;
}

/* As the pool's connections log notices (libpq's default prints them raw). */
static void startup_notice(void *arg, const PGresult *res)
{
	(void)arg;
	pgpool_log_notice("", res);
}

int catalog_check_blocking(const struct config *cfg, char *msg, size_t len)
{
	const char *keys[] = {"dbname", "client_encoding", "fallback_application_name", NULL};
	const char *vals[] = {cfg->postgres, "UTF8", "gocd", NULL};
	PGconn *pg = connect_bounded(keys, vals, cfg->connect_timeout, msg, len);
	if (pg == NULL)
		return 1;
	PQsetNoticeReceiver(pg, startup_notice, NULL);
	/* The pool's session settings first, as its connections have them
	 * before they read the catalog: the role's own can make the catalog
	 * query crawl (enable_nestloop off disables its lateral joins, and
	 * then JIT compiles it: ~1.8 s a table).  But with connect_timeout as
	 * statement_timeout, not request_timeout: each read here is a setup
	 * step, bounded by connect_timeout (exec_bounded), and one cancelled
	 * sooner by a shorter request_timeout (a loaded machine, a lock on a
	 * catalog) was taken for the table failing its check: gocd refused to
	 * start, and -t failed a good table. */
	char session[PGPOOL_SESSION_SQL_MAX];
	if (pgpool_session_sql(session, sizeof session, cfg->connect_timeout) != 0)
		abort();
	PGresult *res = exec_bounded(pg, PGPOOL_SETUP_TIMEOUT_SQL, NULL, cfg->connect_timeout, msg, len);
	if (res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK) {
		PQclear(res);
		res = exec_bounded(pg, session, NULL, cfg->connect_timeout, msg, len);
	}
	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
		if (res != NULL)
			log_copy_message(msg, len, PQresultErrorMessage(res));
		PQclear(res);
		PQfinish(pg);
		return 1;
	}
	PQclear(res);
	int bad = 0;
	for (int i = 0; i < ntables; i++) {
		struct table *t = tables[i];
		if (t->removed)
			continue;
		res = exec_bounded(pg, table_catalog_sql, t->own.name, cfg->connect_timeout, msg, len);
		const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		if (state != NULL && strcmp(state, "57014") == 0) {
			/* connect_timeout passed on the server's clock before ours:
			 * the same timeout, not a verdict on the table */
			snprintf(msg, len, "no answer to the catalog query within connect_timeout (%d ms)",
				 cfg->connect_timeout);
			PQclear(res);
			res = NULL;
		}
		if (res == NULL) {
			/* as unreachable: gocd starts and checks again on connect */
			PQfinish(pg);
			return 1;
		}
		if (table_apply_catalog(t, res) != 0) {
			log_error("%s", t->error);
			bad = 1;
		}
		PQclear(res);
	}
	PQfinish(pg);
	return bad ? -1 : 0;
}

/* Which table a catalog job was for: its parameter is the table's name. */
static struct table *table_of(const struct pgjob *job)
{
	for (int i = 0; i < ntables; i++)
		if (job->params[0] == tables[i]->own.name)
			return tables[i];
	return NULL;
}

static void apply(struct table *t, const PGresult *res, uint64_t seq)
{
	if (t == NULL || t->removed)
		return;
	/* Reads of one table run on several connections (each connection's
	 * setup, re-checks) and their answers can come back out of order.
	 * One sent before the last applied has an older snapshot: applied,
	 * it took the table back to columns or an index it no longer has (a
	 * column added since vanished, and the columns "moved" under the
	 * requests in flight, answered unavailable). */
	if (seq < t->catalog_seq) {
		log_debug("table \"%s\": a catalog read older than the last one applied came back "
			  "late; ignored", t->own.name);
		return;
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		/* The lookup failed, not the table (a statement timeout, a lost
		 * connection, PostgreSQL out of resources): nothing was learned,
		 * so the table stays as it was.  A table that really changed
		 * fails its own statements, and they take it out of service. */
		const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		const char *m = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
		char why[sizeof t->error];
		snprintf(why, sizeof why, "table \"%s\": catalog lookup failed: %s (SQLSTATE %s)%s",
			 t->own.name, m ? m : "no result", st ? st : "none",
			 st && strcmp(st, "57014") == 0 ? "; it runs under request_timeout" : "");
		if (t->ready) {
			log_warn("%s; the table stays in service", why);
		} else if (strcmp(why, t->error) != 0) {
			/* Out of service: this is the reason clients are given, and
			 * it is logged once, not at every re-check. */
			snprintf(t->error, sizeof t->error, "%s", why);
			log_error("%s", why);
		}
		return;
	}
	/* Logged when the table leaves service, and when a re-check finds a
	 * new reason; the same reason at every 5 s re-check is not news (it
	 * is what clients are answered, and every reload logs it afresh). */
	t->catalog_seq = seq;
	bool was = t->ready;
	char before[sizeof t->error];
	snprintf(before, sizeof before, "%s", t->error);
	bool relog = t->relog;
	t->relog = false;
	if (table_apply_catalog(t, res) != 0 &&
	    (was || relog || (t->checking && strcmp(before, t->error) != 0)))
		log_error("%s", t->error);
}

static void on_setup_catalog(struct pgjob *job, const PGresult *res,
			     enum pgjob_outcome outcome, const char *msg)
{
	(void)outcome;
	(void)msg;
	apply(table_of(job), res, job->sent_seq);
}

bool catalog_setup_step(int step, struct pgjob *job)
{
	if (step >= ntables)
		return false;
	/* Removed tables are checked too (harmlessly): the step number must
	 * map to exactly one table. */
	job->sql = table_catalog_sql;
	job->nparams = 1;
	job->params = (const char *const *)&tables[step]->own.name;
	job->done = on_setup_catalog;
	return true;
}

static void on_recheck(struct pgjob *job, const PGresult *res,
		       enum pgjob_outcome outcome, const char *msg)
{
	struct table *t = table_of(job);
	if (t == NULL)
		return;
	if (outcome == PGJOB_OK || outcome == PGJOB_SQL_ERROR)
		apply(t, res, job->sent_seq);
	else
		log_debug("table \"%s\": catalog re-check deferred to the next connection: %s",
			  t->own.name, msg);
	t->checking = false;
}

void catalog_recheck_hint(struct table *t)
{
	uint64_t now = gocd_now_ms();
	if (now - t->hinted_ms < 1000)
		return;
	t->hinted_ms = now;
	catalog_recheck(t);
}

void catalog_recheck(struct table *t)
{
	if (t->checking || t->removed)
		return;
	struct pgjob *j = &t->check_job;
	memset(j, 0, sizeof *j);
	j->stmt = -1;
	j->sql = table_catalog_sql;
	j->nparams = 1;
	j->params = (const char *const *)&t->own.name;
	j->done = on_recheck;
	t->checking = true;
	if (pgpool_submit(j, true) != 0)
		t->checking = false; /* all down: the next connection's setup checks it */
}
