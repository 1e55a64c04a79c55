/*
 * main.c - gocd's entry point: options, the startup check, the loop, signals.
 *
 * Owns: process lifetime and configuration reload.  Startup order matters:
 * configuration, then a blocking check of the tables (before the loop
 * exists, so blocking is harmless there) that refuses to start on an
 * unsafe table, then listeners, then the pool.
 * Must never: block once the loop runs.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <event2/event.h>

#include "admin.h"
#include "batch.h"
#include "catalog.h"
#include "config.h"
#include "conn.h"
#include "goc.h"
#include "gocd.h"
#include "jalloc.h"
#include "listener.h"
#include "locktab.h"
#include "log.h"
#include "notify.h"
#include "pgpool.h"
#include "req.h"
#include "stats.h"
#include "table.h"

#define JANITOR_MS 20
#define RECHECK_MS 5000 /* re-read the catalog of tables that are not servable */

static struct config *cfg;
static int saved_argc;
static char **saved_argv;
static uint64_t shutdown_deadline;
static uint64_t next_recheck;
static uint64_t next_idle_check;

static void begin_shutdown(const char *why)
{
	if (srv.shutting_down)
		return;
	srv.shutting_down = true;
	notify_stopping();
	log_info("%s: stopping; finishing %d requests in flight (shutdown_timeout %d ms)",
		 why, req_inflight(), cfg->shutdown_timeout);
	shutdown_deadline = gocd_now_ms() + (uint64_t)cfg->shutdown_timeout;
	listener_close_all();
	conn_shutdown_all();
}

/* Options that only take effect at startup; a reload keeps the old value. */
static void keep_restart_only(struct config *nc, const struct config *old)
{
	struct {
		const char *name;
		char **n;
		char *const *o;
	} strs[] = {
		{"listen", &nc->listen, &old->listen},
		{"unix", &nc->unix_path, &old->unix_path},
		{"postgres", &nc->postgres, &old->postgres},
		{"admin_listen", &nc->admin_listen, &old->admin_listen},
	};
	for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
		if (strcmp(*strs[i].n, *strs[i].o) != 0) {
			log_warn("reload: %s changed; it takes effect after a restart", strs[i].name);
			free(*strs[i].n);
			*strs[i].n = strdup(*strs[i].o);
		}
	}
	struct {
		const char *name;
		int *n;
		const int *o;
	} ints[] = {
		{"unix_mode", &nc->unix_mode, &old->unix_mode},
		{"pool_size", &nc->pool_size, &old->pool_size},
	};
	for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
		if (*ints[i].n != *ints[i].o) {
			log_warn("reload: %s changed; it takes effect after a restart", ints[i].name);
			*ints[i].n = *ints[i].o;
		}
	}
}

/* Like Redis: ask for enough descriptors for max_clients, as far as the
 * hard limit allows, and say so when it does not. */
static void raise_fd_limit(int want)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= (rlim_t)want)
		return;
	rlim_t target = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= (rlim_t)want ?
			(rlim_t)want : rl.rlim_max;
	rl.rlim_cur = target;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || target < (rlim_t)want)
		log_warn("open files limit is %llu, below max_clients + pool (%d): clients past it "
			 "wait in the listen queue until descriptors free up; raise LimitNOFILE / ulimit -n",
			 (unsigned long long)target, want);
}

/* SIGHUP before the loop handles signals (the startup check can take
 * connect_timeout per table): its default action would kill gocd, so it is
 * remembered and the reload runs once the loop is up. */
static volatile sig_atomic_t early_hup;

static void on_early_hup(int sig)
{
	(void)sig;
	early_hup = 1;
}

/*
 * SIGHUP: read the configuration again (file, then the same flags).  A
 * configuration that fails to load changes nothing.  Connected clients
 * are not touched; new limits apply to what happens next.
 */
static void reload(void)
{
	struct config *nc = calloc(1, sizeof *nc);
	struct cli_flags cli;
	char err[1024];

	if (nc == NULL)
		return;
	log_info("SIGHUP: reloading configuration");
	notify_reloading();
	if (config_load(nc, &cli, saved_argc, saved_argv, err, sizeof err) != 0 ||
	    (nc->ntables == 0 && (snprintf(err, sizeof err, "no table configured"), 1))) {
		log_error("reload failed, keeping the running configuration: %s", err);
		config_free(nc);
		free(nc);
		notify_ready();
		return;
	}
	keep_restart_only(nc, cfg);
	/* max_clients is live: a raised one needs its descriptors now, as at
	 * start (and a warning when the hard limit is short), or the clients
	 * past the old limit fail accept (EMFILE) without a word. */
	raise_fd_limit(nc->max_clients + nc->pool_size + 64);
	log_min_level = (enum log_level)log_level_parse(nc->log_level);
	batch_set_max(nc->batch_max, nc->insert_batches);
	pgpool_reload_sessions(nc->request_timeout);
	pgpool_set_connect_timeout(nc->connect_timeout);

	struct config *old = cfg;
	if ((old->auth_token[0] != '\0') != (nc->auth_token[0] != '\0'))
		conn_auth_changed(nc->auth_token[0] != '\0');
	cfg = nc;
	srv.cfg = nc;
	conn_mem_check();
	table_sync(nc);
	/* Every table, served ones too: a reload is how an operator makes gocd
	 * see a change in the catalog that no statement fails on (a trigger
	 * added, see table.h insert_trigger). */
	for (int i = 0; i < ntables; i++)
		if (!tables[i]->removed) {
			tables[i]->relog = true; /* a refusal is logged afresh */
			catalog_recheck(tables[i]);
		}
	config_free(old);
	free(old);
	log_info("configuration reloaded: %d table(s) served", nc->ntables);
	notify_ready();
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	if (sig == SIGHUP) {
		if (!srv.shutting_down)
			reload();
		return;
	}
	if (sig == SIGUSR1 || sig == SIGUSR2) {
		log_warn("%s ignored: SIGHUP reloads the configuration, SIGTERM stops gocd",
			 sig == SIGUSR1 ? "SIGUSR1" : "SIGUSR2");
		return;
	}
	begin_shutdown(sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* One periodic timer: request deadlines, table re-checks, shutdown's end. */
static void on_janitor(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	uint64_t now = gocd_now_ms();
	req_expire(now);
	conn_linger_expire(now);
	goc_tick();
	batch_tick();
	if (now >= next_idle_check) {
		/* A walk over every connection: once a second, or at a quarter
		 * of a shorter client_idle_timeout, so 200 ms means about 200 ms. */
		int every = cfg->client_idle_timeout > 0 ? cfg->client_idle_timeout / 4 : 1000;
		next_idle_check = now + (uint64_t)(every > 1000 ? 1000 : every < JANITOR_MS ? JANITOR_MS : every);
		conn_janitor(now, cfg->client_idle_timeout);
	}
	if (now >= next_recheck) {
		next_recheck = now + RECHECK_MS;
		for (int i = 0; i < ntables; i++)
			if (!tables[i]->removed && !tables[i]->ready && pgpool_ever_ready())
				catalog_recheck(tables[i]);
	}
	if (srv.shutting_down) {
		conn_shutdown_all();
		if (req_allocated() == 0 && conn_count() == 0) {
			log_info("all requests answered; exiting");
			event_base_loopexit(srv.base, NULL);
		} else if (now >= shutdown_deadline) {
			log_warn("shutdown_timeout reached with %d requests unanswered (answered timeout "
				 "now) and %d client connections open (%d of them lingering); exiting",
				 req_inflight(), conn_count(), conn_lingering());
			req_expire_all();
			event_base_loopexit(srv.base, NULL);
		}
	}
}

static void print_tables(FILE *out)
{
	for (int i = 0; i < ntables; i++)
		fprintf(out, "table %s: %s keyed by unique index %s%s\n", tables[i]->own.name,
			tables[i]->qname, tables[i]->index_name,
			tables[i]->nulls_not_distinct ? " (NULLS NOT DISTINCT)" : "");
}

int main(int argc, char **argv)
{
	struct cli_flags cli;
	char err[1024];

	jalloc_init(); /* before any JSON value exists */
	log_init();
	saved_argc = argc;
	saved_argv = argv;
	cfg = calloc(1, sizeof *cfg);
	if (cfg == NULL)
		return 1;
	if (config_load(cfg, &cli, argc, argv, err, sizeof err) != 0) {
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
	log_min_level = (enum log_level)log_level_parse(cfg->log_level);
	srv.cfg = cfg;
	if (cfg->ntables == 0) {
		fprintf(stderr, "gocd: no table configured (use --table=NAME=COL[,COL...] or "
				"\"table = NAME=COL\" in the config file)\n");
		return 2;
	}

	if (!cfg->listen[0] && !cfg->unix_path[0] && getenv("LISTEN_FDS") == NULL) {
		fprintf(stderr, "gocd: no listener configured: listen and unix are both empty "
				"(and no sockets come from systemd)\n");
		return 2;
	}

	struct sigaction hup = {.sa_handler = on_early_hup};
	sigemptyset(&hup.sa_mask);
	sigaction(SIGHUP, &hup, NULL);
	/* SIGUSR1/2 mean something else in other daemons (nginx reopens its
	 * logs, PgBouncer pauses); here their default action would kill gocd
	 * without the drain.  Logged and ignored once the loop is up. */
	signal(SIGUSR1, SIG_IGN);
	signal(SIGUSR2, SIG_IGN);
	table_sync(cfg);
	int rc = catalog_check_blocking(cfg, err, sizeof err);
	if (rc < 0) {
		log_error("refusing to start: a configured table cannot be served safely");
		return 1;
	}
	if (rc > 0) {
		if (cli.test_only) {
			log_error("cannot check tables: no connection to PostgreSQL: %s", err);
			return 1;
		}
		log_warn("no connection to PostgreSQL at startup (%s); starting anyway, answering "
			 "'unavailable' and reconnecting", err);
	}
	if (cli.test_only) {
		printf("configuration ok\n");
		print_tables(stdout);
		table_free_all();
		config_free(cfg);
		free(cfg);
		jalloc_release();
		return 0;
	}

	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit(cfg->max_clients + cfg->pool_size + 64);
	stats_init();
	notify_init();
	/* The changelist folds the epoll_ctl calls of one loop iteration
	 * (enable then disable of the same event costs nothing). */
	struct event_config *ecfg = event_config_new();
	if (ecfg)
		event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	srv.base = ecfg ? event_base_new_with_config(ecfg) : event_base_new();
	if (ecfg)
		event_config_free(ecfg);
	if (srv.base == NULL || locktab_init() != 0) {
		log_error("cannot initialise the event loop");
		return 1;
	}
	/* Handlers before listeners: once a port accepts, a client or a
	 * supervisor may act on it, and a SIGTERM or SIGUSR1 sent then must not
	 * meet the default action or SIG_IGN.  They run only in the loop, by
	 * which time the pool and listeners exist.  Static so the events stay
	 * reachable on the early exits below. */
	static const int signums[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2};
	enum { NSIGS = sizeof signums / sizeof signums[0] };
	static struct event *sigs[NSIGS];
	for (int i = 0; i < NSIGS; i++) {
		sigs[i] = evsignal_new(srv.base, signums[i], on_signal, NULL);
		event_add(sigs[i], NULL);
	}
	if (listener_open_all(cfg) != 0)
		return 1;

	struct pgpool_config pc = {
		.conninfo = cfg->postgres,
		.size = cfg->pool_size,
		.connect_timeout_ms = cfg->connect_timeout,
		.statement_timeout_ms = cfg->request_timeout,
		.setup = catalog_setup_step,
	};
	batch_init(cfg->batch_max, cfg->insert_batches);
	if (pgpool_init(srv.base, &pc) != 0) {
		log_error("cannot create the PostgreSQL pool");
		return 1;
	}

	/* The admin listener is optional: gocd serves clients without it. */
	if (admin_open(srv.base, cfg->admin_listen) != 0)
		log_error("continuing without the admin listener (admin_listen %s)", cfg->admin_listen);

	struct event *janitor = event_new(srv.base, -1, EV_PERSIST, on_janitor, NULL);
	struct timeval tv = {0, JANITOR_MS * 1000};
	event_add(janitor, &tv);
	next_recheck = gocd_now_ms() + RECHECK_MS;

	log_info("gocd %s ready: %d table(s), pool of %d, request_timeout %d ms", GOCD_VERSION,
		 cfg->ntables, cfg->pool_size, cfg->request_timeout);
	notify_start(srv.base);
	notify_ready();
	if (early_hup) {
		log_info("SIGHUP arrived while starting: reloading now");
		reload();
	}
	event_base_dispatch(srv.base);

	notify_stop();
	admin_close();
	listener_close_all();
	pgpool_shutdown();
	batch_free_all();
	for (int i = 0; i < NSIGS; i++)
		event_free(sigs[i]);
	event_free(janitor);
	locktab_free();
	req_shutdown();
	conn_mem_free();
	table_free_all();
	event_base_free(srv.base);
	config_free(cfg);
	free(cfg);
	jalloc_release();
	log_info("bye");
	return 0;
}
