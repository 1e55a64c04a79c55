/*
 * req.h - one client request, from its line to its answer.
 *
 * Owns: a request's memory, its answer buffer, its place in the timeout
 * list, and the rule for when it may be freed: only when it has been
 * answered, handed to (or abandoned by) its connection, and nothing in
 * flight (pool job, lock table) still points at it.
 * Must never: write to a socket itself (conn.c flushes answers in order).
 */
#ifndef GOCD_REQ_H
#define GOCD_REQ_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "codec.h"
#include "locktab.h"
#include "pgpool.h"

struct conn;
struct table;

enum req_step {
	STEP_NONE,     /* not running SQL */
	STEP_WAITING,  /* behind another request for the same key */
	STEP_SELECT,   /* looking the key up */
	STEP_INSERT,   /* INSERT ... ON CONFLICT DO NOTHING RETURNING */
	STEP_RESELECT, /* the insert lost to another writer: read the winner's row */
	STEP_QUEUED,   /* in a batch shape's queue, see batch.c */
	STEP_BATCH,    /* part of a batch statement in flight */
	STEP_XACT,     /* asking pg_xact_status whether our lost commit happened */
	STEP_XACT_WAIT,/* ... waiting for a connection to ask on */
};

struct req {
	struct conn *conn;            /* NULL once answered-and-flushed or the client left */
	TAILQ_ENTRY(req) conn_link;   /* the connection's FIFO, arrival order */
	TAILQ_ENTRY(req) timer_link;  /* the global timeout list while unanswered */
	LIST_ENTRY(req) live_link;    /* every allocated request, for the exit */
	struct goc_request in;        /* owns the parsed JSON */
	struct evbuffer *out;         /* the answer line once answered */
	char *head;                   /* the answer's start with its id, once
				       * the id's tree is gone (req_compact) */
	size_t head_len;
	uint64_t started_ms;
	uint64_t started_us;          /* for the latency histogram */
	enum goc_err outcome;         /* GOC_OK, or the error code answered */
	bool answered;
	bool busy;                    /* a pool job or the lock table refers to it */
	size_t mem;                   /* counted in max_client_memory until answered */

	/* get-or-create state, see goc.c */
	struct table *table;
	unsigned layout;              /* table->layout that param_cols refer to */
	enum req_step step;
	int attempts;                 /* re-runs after retryable failures */
	int rounds;                   /* insert/reselect loops */
	int phase;                    /* enum goc_phase of the current run */
	struct evbuffer *params_buf;  /* texts of params, NUL-separated */
	const char **params;          /* key params first, then defaults */
	int nkey_params;              /* non-null key params (for the select) */
	int nparams;                  /* all insert params */
	const char **select_params;
	int *param_cols;              /* column index of each param; defaults sorted by it */
	bool batchable;               /* no NULL key: may share a batch statement */
	bool lookup_first;            /* never skip the lookup (see batch.c's read_only_refusal) */
	struct shape *shape;          /* while STEP_QUEUED */
	TAILQ_ENTRY(req) batch_link;  /* in shape's queue */
	char *select_sql;             /* NULL: the table's prepared lookup */
	char *insert_sql;             /* built on first single-row insert with defaults; NULL: the table's prepared key-only insert */
	unsigned char *lockkey;
	size_t lockkey_len;
	struct lockwaiter lock;
	/* An inserted row held until its commit is confirmed (see goc.c). */
	char *held_row;
	size_t held_len;
	bool held;                    /* held_row (maybe NULL) is this request's result */
	bool held_created;
	char xid[24];                 /* transaction that inserted held_row, "" if none */
	char life[PGPOOL_LIFE_MAX];   /* the server life xid was handed out in */
	char *xact_sql;               /* the status check (table_sql_xact), once needed */
	const char **xact_params;     /* its parameters: xid, then the key texts */
	const char *xid_param;        /* = xid, for the status-only check */
	int xact_rechecks;
	int xact_waits;               /* "in progress" answers so far */
	uint64_t xact_due_ms;         /* not to be asked again before */
	TAILQ_ENTRY(req) xact_link;   /* while STEP_XACT_WAIT */
	struct pgjob job;             /* at most one statement in flight */
};

/* A new request read as a line of line_len bytes, appended to conn's FIFO
 * (conn may be NULL in tests), and counted in max_client_memory until it
 * is answered. */
struct req *req_new(struct conn *conn, size_t line_len);

/*
 * Render nothing, but mark r answered with what is in r->out, remove it
 * from the timeout list and let its connection flush.  Answering twice is
 * a no-op, so a late database result after a timeout is simply dropped.
 */
void req_answered(struct req *r);
void req_answer_error(struct req *r, enum goc_err code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * r is going to wait for PostgreSQL with its key and defaults in parameter
 * texts: let go of their trees, and of its id's, keeping the id as the
 * text its answer will start with.  A tree costs up to ~36 times its text
 * (an array of small numbers), and max_pending requests of a connection
 * may wait as long as request_timeout.
 */
void req_compact(struct req *r);

/* The connection no longer refers to r (flushed, or client gone). */
void req_detach(struct req *r);
/* Nothing in flight refers to r any more. */
void req_idle(struct req *r);

/* Answer every request whose deadline passed; returns how many. */
int req_expire(uint64_t now_ms);

/* shutdown_timeout: answer every unanswered request timeout now (written
 * if its socket takes it), rather than closing on it without a word. */
int req_expire_all(void);

/* Requests not yet answered (in-flight gauge). */
int req_inflight(void);
/* At exit: free every request left (one a pool job still pointed at) and
 * the reuse list, so leak checkers see a clean heap. */
void req_shutdown(void);
int req_allocated(void);

#endif
