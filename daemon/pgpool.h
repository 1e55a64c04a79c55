/*
 * pgpool.h - a pool of PostgreSQL connections driven by libpq's
 * non-blocking API inside the libevent loop.
 *
 * Owns: connecting (with its own timeout and backoff), the per-connection
 * setup (session settings, then the caller's setup steps such as catalog
 * checks), lazy preparation of registered statements, a FIFO of jobs, and
 * noticing dead connections.
 * Must never: block the loop, interpret results (callers do), or retry a
 * job on its own: whether a statement may be re-run is the caller's call.
 */
#ifndef GOCD_PGPOOL_H
#define GOCD_PGPOOL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <libpq-fe.h>

struct event_base;

enum pgjob_outcome {
	PGJOB_OK,          /* res is the statement's result (tuples or command) */
	PGJOB_SQL_ERROR,   /* res is PostgreSQL's error result */
	PGJOB_CONN_LOST,   /* the connection died with the job sent or about to be: outcome unknown */
	PGJOB_UNAVAILABLE, /* no connection could be had; the job was never sent */
};

struct pgjob;
/*
 * Called exactly once per submitted job, from the event loop.  res is valid
 * only during the call (the pool clears it afterwards); msg explains
 * CONN_LOST/UNAVAILABLE.  The callback may submit jobs, including this one.
 */
typedef void pgjob_fn(struct pgjob *job, const PGresult *res,
		      enum pgjob_outcome outcome, const char *msg);

struct pgjob {
	TAILQ_ENTRY(pgjob) link;
	int stmt;                  /* registered statement id, or -1 to send sql */
	const char *sql;           /* text when stmt < 0; owned by the submitter */
	int nparams;
	const char *const *params; /* owned by the submitter until done runs */
	pgjob_fn *done;
	/*
	 * hold_commit: the statement runs in a transaction that is committed
	 * only after done() has seen its results (PQsendFlushRequest, then
	 * the sync).  done() gets OK/SQL_ERROR/CONN_LOST as usual; after an OK
	 * the pool commits and calls committed() with OK (committed),
	 * SQL_ERROR (the commit failed: nothing was written) or CONN_LOST
	 * (the commit was sent and the connection died: outcome unknown, ask
	 * pg_xact_status).  The job must stay alive until committed() ran.
	 */
	bool hold_commit;
	pgjob_fn *committed;
	bool queued;               /* in the pool's wait queue (not yet sent) */
	/* Set when the job is sent: the life of the server it runs on
	 * (PGPOOL_LIFE_SQL), "" if the server did not say.  Valid until the
	 * job's last callback has returned. */
	const char *life;
	/* Set when the job is sent: one more than the job sent before it, on
	 * any connection.  A statement's snapshot is taken as it starts, and
	 * a job goes to an idle connection (or right behind a commit), so
	 * this orders snapshots but for that commit's time: catalog.c keeps
	 * a table's catalog from going back to one read before. */
	uint64_t sent_seq;
};

/*
 * A server's life: from its start, or its last crash recovery, to the next
 * crash or stop.  Within one life a transaction id names one transaction;
 * across a crash it need not (an id that never reached the WAL is handed
 * out again).  Two readings name it together: the postmaster's start time
 * tells servers and restarts apart (a standby promoted in a failover, a
 * cold copy of the data directory), and the time the shared statistics
 * were last reset tells crash recoveries apart (recovery resets them; the
 * postmaster lives on through it).  An explicit
 * pg_stat_reset_shared('bgwriter') also starts a "life", and a clean
 * restart does too: the checks that use it are only more careful then.
 */
#define PGPOOL_LIFE_SQL                                                                  \
	"(SELECT extract(epoch FROM pg_catalog.pg_postmaster_start_time())::text || '/' ||"         \
	" extract(epoch FROM stats_reset)::text FROM pg_catalog.pg_stat_bgwriter)"
#define PGPOOL_LIFE_MAX 64

/* Setup step n for a fresh connection: fill job (sql, params, done) and
 * return true, or return false when setup is complete. */
typedef bool pgpool_setup_fn(int step, struct pgjob *job);

struct pgpool_config {
	const char *conninfo;
	int size;
	int connect_timeout_ms;
	int statement_timeout_ms; /* server-side; 0 = leave as is */
	pgpool_setup_fn *setup;
};

int pgpool_init(struct event_base *base, const struct pgpool_config *cfg)
	__attribute__((warn_unused_result));
/* Log a PostgreSQL notice, prefixed by who: DEBUG and LOG ones (see
 * client_min_messages) at gocd's debug level, the rest at info. */
void pgpool_log_notice(const char *who, const PGresult *res);
/*
 * A new session's first statement, before the session statement: a role's
 * or database's statement_timeout governs a session's first statement,
 * and one shorter than the session statement takes (a fresh backend's
 * took 2-25 ms here; the role's was 1 ms) cancelled it at every connect,
 * so gocd never got a connection.  This one takes microseconds; after it
 * the session statement runs without a timeout (connect_timeout bounds
 * it) and sets request_timeout.
 */
#define PGPOOL_SETUP_TIMEOUT_SQL "SET statement_timeout = 0"
/* Room for the session statement (pgpool_session_sql). */
#define PGPOOL_SESSION_SQL_MAX 2048
/* The statement that gives a session gocd's settings (see pgpool_init), for
 * a connection outside the pool (the startup check): 0, or -1 when len is
 * too small. */
int pgpool_session_sql(char *buf, size_t len, int statement_timeout_ms)
	__attribute__((warn_unused_result));
/* A reload: every connection renews its session settings (statement_timeout
 * = the new request_timeout, synchronous_commit read again), idle ones now,
 * busy ones as soon as their job is over.  One round trip each; prepared
 * statements stay. */
void pgpool_reload_sessions(int ms);
/* A reload's connect_timeout: for every connection attempt and setup step
 * that starts from now on (one already under way keeps its deadline). */
void pgpool_set_connect_timeout(int ms);
void pgpool_shutdown(void);

/*
 * Queue a job (urgent: at the head, for follow-up statements of a request
 * already running).  Returns 0 when queued or sent; -1 when every
 * connection is down, in which case done is NOT called and the caller
 * answers 'unavailable' itself.
 */
int pgpool_submit(struct pgjob *job, bool urgent) __attribute__((warn_unused_result));

/*
 * A source of work the pool pulls from when a connection is idle and its
 * own queue is empty: the batcher, which builds one statement from
 * whatever queued up while the connections were busy.  Returns NULL when
 * there is nothing to do.  pgpool_kick() says the source has work.
 */
typedef struct pgjob *pgpool_source_fn(void);
/* Called when every connection is down: the source fails what it holds. */
typedef void pgpool_source_fail_fn(const char *why);
void pgpool_set_source(pgpool_source_fn *fn, pgpool_source_fail_fn *fail);
void pgpool_kick(void);
/* True when no connection can take work now or soon (all are down). */
bool pgpool_all_down(void);

/* Remove a job that is still queued (not sent); returns true if removed. */
bool pgpool_cancel(struct pgjob *job);

/* Register statement text once; every connection prepares it on first use. */
int pgpool_statement(const char *sql);
/* The registered statement with this text, or -1. */
int pgpool_statement_find(const char *sql);
/* How many distinct statements pgpool_statement has registered. */
int pgpool_statement_count(void);

/* Gauges for stats. */
struct pgpool_stats {
	int size, idle, busy, connecting, down;
	int queued;
	unsigned long long round_trips, connects, connect_failures, lost;
};
void pgpool_get_stats(struct pgpool_stats *out);

/* True once any connection has completed setup since start. */
bool pgpool_ever_ready(void);

#endif
