/*
 * main.c - gocd's entry point: options, the startup check, the loop, signals.
 *
 * Owns: process lifetime.  Startup order matters: configuration, then a
 * blocking check of the tables (before the loop exists, so blocking is
 * harmless there) that refuses to start on an unsafe table, then
 * listeners, then the pool.  Must never: block once the loop runs.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "batch.h"
#include "config.h"
#include "conn.h"
#include "gocd.h"
#include "listener.h"
#include "locktab.h"
#include "log.h"
#include "pgpool.h"
#include "req.h"
#include "table.h"

#define JANITOR_MS 20

static struct config cfg;
static uint64_t shutdown_deadline;

/*
 * Check every table with a blocking connection.  Returns 0 when all are
 * valid, 1 when PostgreSQL could not be reached (msg says why), -1 when a
 * table is invalid (logged).
 */
static int check_tables(char *msg, size_t len)
{
	char timeout[16];
	snprintf(timeout, sizeof timeout, "%d", (cfg.connect_timeout + 999) / 1000);
	const char *keys[] = {"dbname", "client_encoding", "fallback_application_name",
			      "connect_timeout", NULL};
	const char *vals[] = {cfg.postgres, "UTF8", "gocd", timeout, NULL};
	PGconn *pg = PQconnectdbParams(keys, vals, 1);
	if (PQstatus(pg) != CONNECTION_OK) {
		snprintf(msg, len, "%s", PQerrorMessage(pg));
		size_t n = strlen(msg);
		while (n && (msg[n - 1] == '\n'))
			msg[--n] = '\0';
		PQfinish(pg);
		return 1;
	}
	int bad = 0;
	for (int i = 0; i < ntables; i++) {
		const char *name = tables[i].conf->name;
		PGresult *res = PQexecParams(pg, table_catalog_sql, 1, NULL, &name, NULL, NULL, 0);
		if (table_apply_catalog(&tables[i], res) != 0) {
			log_error("%s", tables[i].error);
			bad = 1;
		}
		PQclear(res);
	}
	PQfinish(pg);
	return bad ? -1 : 0;
}

/* Pool setup hook: re-read the catalog of every table on each connect. */
static void on_catalog(struct pgjob *job, const PGresult *res,
		       enum pgjob_outcome outcome, const char *msg)
{
	(void)outcome;
	(void)msg;
	for (int i = 0; i < ntables; i++) {
		if (job->params[0] != tables[i].conf->name)
			continue;
		if (table_apply_catalog(&tables[i], res) != 0)
			log_error("%s", tables[i].error);
	}
}

static bool setup_step(int step, struct pgjob *job)
{
	if (step >= ntables)
		return false;
	job->sql = table_catalog_sql;
	job->nparams = 1;
	job->params = (const char *const *)&tables[step].conf->name;
	job->done = on_catalog;
	return true;
}

static void begin_shutdown(const char *why)
{
	if (srv.shutting_down)
		return;
	srv.shutting_down = true;
	log_info("%s: stopping; finishing %d requests in flight (shutdown_timeout %d ms)",
		 why, req_inflight(), cfg.shutdown_timeout);
	shutdown_deadline = gocd_now_ms() + (uint64_t)cfg.shutdown_timeout;
	listener_close_all();
	conn_shutdown_all();
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	if (sig == SIGHUP) {
		log_warn("SIGHUP: configuration reload is not supported yet; restart to apply changes");
		return;
	}
	begin_shutdown(sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* One periodic timer: request deadlines and the end of a shutdown. */
static void on_janitor(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	uint64_t now = gocd_now_ms();
	req_expire(now);
	if (srv.shutting_down) {
		conn_shutdown_all();
		if (req_allocated() == 0 && conn_count() == 0) {
			log_info("all requests answered; exiting");
			event_base_loopexit(srv.base, NULL);
		} else if (now >= shutdown_deadline) {
			log_warn("shutdown_timeout reached with %d requests unanswered; exiting",
				 req_inflight());
			event_base_loopexit(srv.base, NULL);
		}
	}
}

int main(int argc, char **argv)
{
	struct cli_flags cli;
	char err[1024];

	log_init();
	if (config_load(&cfg, &cli, argc, argv, err, sizeof err) != 0) {
		fprintf(stderr, "gocd: %s\n", err);
		return 2;
	}
	if (cli.help) {
		config_usage(stdout);
		return 0;
	}
	if (cli.version) {
		printf("gocd %s (libevent %s, libpq %d, jansson %s)\n", GOCD_VERSION,
		       event_get_version(), PQlibVersion(), JANSSON_VERSION);
		return 0;
	}
	log_min_level = (enum log_level)log_level_parse(cfg.log_level);
	srv.cfg = &cfg;
	if (cfg.ntables == 0) {
		fprintf(stderr, "gocd: no table configured (use --table=NAME=COL[,COL...] or "
				"\"table = NAME=COL\" in the config file)\n");
		return 2;
	}

	table_init_all(&cfg);
	int rc = check_tables(err, sizeof err);
	if (rc < 0) {
		log_error("refusing to start: a configured table cannot be served safely");
		return 1;
	}
	if (rc > 0) {
		if (cli.test_only) {
			log_error("cannot check tables: PostgreSQL unreachable: %s", err);
			return 1;
		}
		log_warn("PostgreSQL unreachable at startup (%s); starting anyway, answering "
			 "'unavailable' and reconnecting", err);
	}
	if (cli.test_only) {
		printf("configuration ok\n");
		for (int i = 0; i < ntables; i++)
			printf("table %s: %s keyed by unique index %s%s\n", tables[i].conf->name,
			       tables[i].qname, tables[i].index_name,
			       tables[i].nulls_not_distinct ? " (NULLS NOT DISTINCT)" : "");
		table_free_all();
		config_free(&cfg);
		return 0;
	}

	signal(SIGPIPE, SIG_IGN);
	srv.base = event_base_new();
	if (srv.base == NULL || locktab_init() != 0) {
		log_error("cannot initialise the event loop");
		return 1;
	}
	if (listener_open_all(&cfg) != 0)
		return 1;

	struct pgpool_config pc = {
		.conninfo = cfg.postgres,
		.size = cfg.pool_size,
		.connect_timeout_ms = cfg.connect_timeout,
		.statement_timeout_ms = cfg.request_timeout,
		.setup = setup_step,
	};
	batch_init(cfg.batch_max);
	if (pgpool_init(srv.base, &pc) != 0) {
		log_error("cannot create the PostgreSQL pool");
		return 1;
	}

	struct event *sigs[3];
	const int signums[3] = {SIGTERM, SIGINT, SIGHUP};
	for (int i = 0; i < 3; i++) {
		sigs[i] = evsignal_new(srv.base, signums[i], on_signal, NULL);
		event_add(sigs[i], NULL);
	}
	struct event *janitor = event_new(srv.base, -1, EV_PERSIST, on_janitor, NULL);
	struct timeval tv = {0, JANITOR_MS * 1000};
	event_add(janitor, &tv);

	log_info("gocd %s ready: %d table(s), pool of %d, request_timeout %d ms", GOCD_VERSION,
		 ntables, cfg.pool_size, cfg.request_timeout);
	event_base_dispatch(srv.base);

	listener_close_all();
	pgpool_shutdown();
	batch_free_all();
	for (int i = 0; i < 3; i++)
		event_free(sigs[i]);
	event_free(janitor);
	locktab_free();
	table_free_all();
	event_base_free(srv.base);
	config_free(&cfg);
	log_info("bye");
	return 0;
}
