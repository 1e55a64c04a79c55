/*
 * bench.h - what goc-bench's core and its targets share.
 *
 * Owns: the run configuration, the request/result records passed between
 * the core (bench.c: scheduling, stats, report) and a target (bench_gocd.c,
 * bench_pg.c: how a request reaches the database), and the target
 * interface.  Must never: hold target-specific state; the core never knows
 * whether a connection speaks NDJSON or libpq.
 */
#ifndef GOC_CLIENT_BENCH_H
#define GOC_CLIENT_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "bench_keys.h"
#include "codec.h"
#include "errors.h"
#include "hist.h"

struct event_base;
struct event;
struct verify;

enum bench_target { BENCH_GOCD, BENCH_DIRECT, BENCH_NAIVE };

/*
 * Error slots: every protocol code keeps its own slot, then the errors only
 * a client can see.  Reported by name, never by number.
 */
enum {
	BENCH_E_PROTOCOL = GOC_E__COUNT, /* response line is not a valid response */
	BENCH_E_CONNECTION,              /* connection lost with the request in flight */
	BENCH_E_MULTIPLE_ROWS,           /* naive: SELECT found more than one row for a key */
	BENCH_E__COUNT
};
const char *bench_err_name(int code);

/* Named limits. */
#define BENCH_MAX_CONNECTIONS 10000
#define BENCH_MAX_PIPELINE 4096
#define BENCH_MAX_KEY_COLS 16
#define BENCH_MAX_DEFAULTS 64
#define BENCH_KEY_MAX 256            /* bytes of one key text */
#define BENCH_MAX_RESPONSE (16u << 20) /* longest response line accepted */
#define BENCH_RECONNECT_TRIES 10     /* failed reconnects in a row before a connection gives up */
#define BENCH_RECONNECT_MIN_MS 100   /* first reconnect delay; doubles up to the max */
#define BENCH_RECONNECT_MAX_MS 2000

struct bench_cfg {
	enum bench_target target;
	const char *target_name;
	const char *addr;      /* gocd TCP HOST:PORT */
	const char *unix_path; /* gocd Unix socket, overrides addr */
	const char *token;     /* gocd's auth_token, sent first on each connection */
	const char *postgres;  /* direct/naive: the database; any target: prepopulate */
	const char *verify_db; /* count rows per key after the run */
	unsigned connections, pipeline;
	double duration;   /* seconds, 0 = bounded by requests only */
	uint64_t requests; /* 0 = bounded by duration only */
	double rate;       /* total req/s, 0 = closed loop */
	const char *table;
	const char *key_cols[BENCH_MAX_KEY_COLS];
	unsigned nkey_cols;
	const char *id_col;
	json_t *defaults; /* object or NULL; owned */
	/* defaults as PostgreSQL parameters (NULL value = SQL NULL); owned */
	const char *def_cols[BENCH_MAX_DEFAULTS];
	char *def_vals[BENCH_MAX_DEFAULTS];
	unsigned ndef;
	const char *keys_spec;
	const char *key_prefix; /* as given; the run's prefix is bench.prefix */
	uint64_t prepopulate;
	enum goc_op op;
	bool verify, json, quiet;
	uint64_t seed;
	double connect_timeout, drain_timeout;
	double warmup; /* seconds of load before measuring starts (needs duration) */
};

/* One request as the core hands it to a target. */
struct bench_req {
	uint64_t key; /* key number; its text is bench_key_text() */
	uint64_t t0;  /* ns (CLOCK_MONOTONIC) the latency is measured from */
};

/* What a target reports back for one request. */
struct bench_result {
	int code;             /* GOC_OK or an error slot */
	bool created;
	const char *row_text; /* the row's JSON text, or NULL; valid during bench_done */
	size_t row_len;
	const char *message;  /* for the first error of each code; may be NULL */
};

struct bconn;

struct target_ops {
	const char *name;
	/* Start connecting.  Later calls bench_conn_ready or bench_conn_failed. */
	int (*open)(struct bconn *c) __attribute__((warn_unused_result));
	/* Queue one request; it must end in exactly one bench_done. */
	void (*send)(struct bconn *c, const struct bench_req *r);
	/* Push queued requests to the wire (after a batch of send). */
	void (*flush)(struct bconn *c);
	/* Release everything; in-flight requests are dropped without bench_done. */
	void (*close)(struct bconn *c);
};

extern const struct target_ops bench_gocd_ops;
extern const struct target_ops bench_direct_ops;
extern const struct target_ops bench_naive_ops;

struct bench;

struct bconn {
	struct bench *b;
	unsigned idx;
	void *impl;        /* the target's; owned by the target */
	unsigned inflight; /* sent, no bench_done yet */
	bool ready, dead;
	bool gave_up;      /* out of reconnect attempts */
	unsigned retries;  /* failed reconnects in a row */
	struct event *ev_retry; /* reconnect timer: close+open happen outside target callbacks */
};

struct bench_stats {
	uint64_t done, ok, created, found, not_found, errors;
	uint64_t by_code[BENCH_E__COUNT];
	char *first_msg[BENCH_E__COUNT]; /* owned */
};

struct bench {
	struct bench_cfg cfg;
	const struct target_ops *ops;
	struct event_base *base;
	struct bconn *conns;
	unsigned nready, ndead;
	uint64_t reconnects, conn_failures;
	uint64_t backlog; /* open loop: requests due by the end but never sent */
	bool lost_all; /* every connection gave up before the run's bound */
	struct keys keys;
	char prefix[BENCH_KEY_MAX / 2]; /* run's key prefix (fresh adds a run id) */
	size_t prefix_len;
	struct verify *ver; /* NULL unless --verify */
	uint64_t t_start, t_stop;
	uint64_t issued;  /* requests handed to targets */
	uint64_t sched_base; /* open loop: issued when the schedule (t_start) began */
	bool warming;     /* in --warmup: load runs, statistics are discarded after */
	uint64_t inflight;
	bool started, stopping, finished;
	struct bench_stats st;  /* the measured part (reset when --warmup ends) */
	/* progress lines: whole-run counters, never reset, and their values at
	 * the previous line */
	uint64_t prog_done, prog_errors, prog_created;
	uint64_t last_done, last_errors, last_created, last_t;
	uint64_t t_run; /* when load began, warmup included */
	struct hist *h_all, *h_int; /* whole run; since the last progress line */
	struct event *ev_tick, *ev_stop, *ev_drain, *ev_progress, *ev_connect, *ev_warm;
	uint64_t tick_at;    /* open loop: when ev_tick fires */
	bool tick_armed;
	unsigned pump_from;  /* open loop: where the next round-robin pump starts */
	int exit_code;
};

uint64_t bench_now(void);
/* Text of key number n, NUL-terminated in buf (BENCH_KEY_MAX); returns length. */
size_t bench_key_text(const struct bench *b, uint64_t n, char *buf);

/* Called by targets. */
void bench_conn_ready(struct bconn *c);
void bench_conn_failed(struct bconn *c, const char *why);
void bench_done(struct bconn *c, const struct bench_req *r,
		const struct bench_result *res);
/* Issue as many requests on c as pipeline, rate and bounds allow. */
void bench_pump(struct bconn *c);

/* Classify a SQLSTATE into an error slot (pg targets and bench_db). */
int bench_sqlstate_code(const char *sqlstate);

#endif
