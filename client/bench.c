/*
 * bench.c - goc-bench: load and correctness tester for gocd and its baselines.
 *
 * Owns: the option table, the run (connections, closed-loop pipelining or
 * open-loop pacing, the duration/request bound, drain), live progress, the
 * statistics and the final report (text or --json), and the exit status.
 * Must never: know how a target talks to its server (bench_gocd.c,
 * bench_pg.c), keep per-sample latencies (hist.c buckets them), or assert
 * timings: it measures and reports; only correctness violations fail a run.
 *
 * Exit status: 0 run completed; 1 --verify found a violation; 2 usage;
 * 3 the run could not happen (no connection, setup failed, every request
 * failed).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "bench.h"
#include "bench_db.h"
#include "bench_verify.h"

#define BENCH_VERIFY_LINES 20 /* violation lines printed before "... and N more" */
#define BENCH_FAIL_LINES 5    /* connection failure lines printed */

#ifndef GOCD_VERSION
#define GOCD_VERSION "dev"
#endif

/* ---- options: declared once; parser and --help come from this table ---- */

enum opt_id {
	O_TARGET = 256, O_ADDR, O_UNIX, O_POSTGRES, O_CONNECTIONS, O_PIPELINE,
	O_DURATION, O_REQUESTS, O_RATE, O_TABLE, O_KEY_COLUMN, O_ID_COLUMN,
	O_DEFAULTS, O_KEYS, O_KEY_PREFIX, O_PREPOPULATE, O_OP, O_VERIFY,
	O_VERIFY_DB, O_JSON, O_QUIET, O_SEED, O_CONNECT_TIMEOUT, O_DRAIN_TIMEOUT,
	O_WARMUP, O_TOKEN, O_HELP, O_VERSION,
};

struct bench_opt {
	const char *name;
	int has_arg;
	int id;
	const char *arg;  /* placeholder in --help */
	const char *help; /* one line, with the default */
};

static const struct bench_opt bench_opts[] = {
	{ "target", 1, O_TARGET, "gocd|direct|naive", "what to load (default gocd)" },
	{ "addr", 1, O_ADDR, "HOST:PORT", "gocd address (default 127.0.0.1:7432)" },
	{ "unix", 1, O_UNIX, "PATH", "gocd Unix socket instead of --addr" },
	{ "token", 1, O_TOKEN, "TOKEN", "authenticate each gocd connection first (gocd's auth_token; also $GOC_TOKEN)" },
	{ "postgres", 1, O_POSTGRES, "CONNINFO", "PostgreSQL for direct/naive, --prepopulate and the pre-run key snapshot" },
	{ "connections", 1, O_CONNECTIONS, "N", "concurrent connections (default 1)" },
	{ "pipeline", 1, O_PIPELINE, "D", "requests in flight per connection (default 1)" },
	{ "duration", 1, O_DURATION, "S", "stop issuing after S seconds (default 10 unless --requests)" },
	{ "requests", 1, O_REQUESTS, "N", "stop after N requests in total (0: none, to --prepopulate only)" },
	{ "rate", 1, O_RATE, "R", "open loop: R requests/s in total, latency from the scheduled time" },
	{ "table", 1, O_TABLE, "T", "table (default bench_kv)" },
	{ "key-column", 1, O_KEY_COLUMN, "C[,C..]", "key column(s); repeat or comma list (default k)" },
	{ "id-column", 1, O_ID_COLUMN, "C", "column identifying a row for --verify (default id)" },
	{ "defaults", 1, O_DEFAULTS, "JSON", "object of column values used when a row is created" },
	{ "keys", 1, O_KEYS, "DIST", "uniform:N | zipf:N:S | hot:K | fresh (default uniform:100000)" },
	{ "key-prefix", 1, O_KEY_PREFIX, "P", "key text is P followed by the key number (default k)" },
	{ "prepopulate", 1, O_PREPOPULATE, "N", "insert keys 0..N-1 first (needs --postgres or --verify-db)" },
	{ "op", 1, O_OP, "OP", "get_or_create | get | ping (default get_or_create)" },
	{ "verify", 0, O_VERIFY, NULL, "check one row id per key and created:true at most (exactly) once" },
	{ "verify-db", 1, O_VERIFY_DB, "CONNINFO", "also count rows per key in PostgreSQL afterwards (implies --verify)" },
	{ "json", 0, O_JSON, NULL, "print the report as one JSON object on stdout" },
	{ "quiet", 0, O_QUIET, NULL, "no progress lines and no text report when --json" },
	{ "seed", 1, O_SEED, "N", "PRNG seed for key draws (default: from the clock)" },
	{ "connect-timeout", 1, O_CONNECT_TIMEOUT, "S", "give up on connections not up after S s (default 10)" },
	{ "drain-timeout", 1, O_DRAIN_TIMEOUT, "S", "wait at most S s for in-flight answers at the end (default 10)" },
	{ "warmup", 1, O_WARMUP, "S", "run S s of load before measuring (with --duration; verify sees it all)" },
	{ "help", 0, O_HELP, NULL, "this text" },
	{ "version", 0, O_VERSION, NULL, "print the version" },
};
#define BENCH_NOPTS (sizeof bench_opts / sizeof bench_opts[0])

static void bench_usage(FILE *out)
{
	fprintf(out, "usage: goc-bench [options]\n"
		     "Load-test gocd (or PostgreSQL directly, or a naive SELECT-then-INSERT)\n"
		     "with get-or-create traffic; report throughput, latency and correctness.\n\n");
	for (size_t i = 0; i < BENCH_NOPTS; i++) {
		char left[64];
		snprintf(left, sizeof left, "--%s%s%s", bench_opts[i].name,
			 bench_opts[i].arg ? "=" : "", bench_opts[i].arg ? bench_opts[i].arg : "");
		fprintf(out, "  %-28s %s\n", left, bench_opts[i].help);
	}
	fprintf(out, "\nexit status: 0 ok, 1 verification failed, 2 usage, 3 run failed\n");
}

static int bench_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	if (*s < '0' || *s > '9')
		return -1;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int bench_parse_double(const char *s, double min, double max, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= min) || !(v <= max))
		return -1;
	*out = v;
	return 0;
}

static int bench_add_key_cols(struct bench_cfg *cfg, char *list)
{
	char *save = NULL;
	for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (*t == '\0')
			continue;
		if (cfg->nkey_cols == BENCH_MAX_KEY_COLS)
			return -1;
		cfg->key_cols[cfg->nkey_cols++] = t;
	}
	return 0;
}

/* Defaults as PostgreSQL parameter texts, for the pg targets and prepopulate. */
static int bench_defaults_params(struct bench_cfg *cfg)
{
	const char *col;
	json_t *v;
	struct evbuffer *b = evbuffer_new();
	if (b == NULL)
		return -1;
	json_object_foreach(cfg->defaults, col, v) {
		if (cfg->ndef == BENCH_MAX_DEFAULTS) {
			fprintf(stderr, "goc-bench: --defaults: more than %d columns\n",
				BENCH_MAX_DEFAULTS);
			evbuffer_free(b);
			return -1;
		}
		unsigned i = cfg->ndef++;
		cfg->def_cols[i] = col;
		cfg->def_vals[i] = NULL;
		if (json_is_null(v))
			continue;
		const char *why = NULL;
		bool as_json = json_is_object(v) || json_is_array(v);
		if (codec_value_text(v, as_json, b, &why)) {
			fprintf(stderr, "goc-bench: --defaults: column \"%s\": %s\n", col,
				why ? why : "bad value");
			evbuffer_free(b);
			return -1;
		}
		size_t n = evbuffer_get_length(b);
		cfg->def_vals[i] = malloc(n + 1);
		if (cfg->def_vals[i] == NULL) {
			evbuffer_free(b);
			return -1;
		}
		evbuffer_remove(b, cfg->def_vals[i], n);
		cfg->def_vals[i][n] = '\0';
	}
	evbuffer_free(b);
	return 0;
}

#define BENCH_USAGE_ERR(...)                                      \
	do {                                                      \
		fprintf(stderr, "goc-bench: " __VA_ARGS__);       \
		fprintf(stderr, " (see --help)\n");               \
		return 2;                                         \
	} while (0)

/* Returns -1 to go on, or an exit status. */
static int bench_parse_args(struct bench_cfg *cfg, int argc, char **argv)
{
	struct option lo[BENCH_NOPTS + 1];
	for (size_t i = 0; i < BENCH_NOPTS; i++) {
		lo[i].name = bench_opts[i].name;
		lo[i].has_arg = bench_opts[i].has_arg ? required_argument : no_argument;
		lo[i].flag = NULL;
		lo[i].val = bench_opts[i].id;
	}
	memset(&lo[BENCH_NOPTS], 0, sizeof lo[BENCH_NOPTS]);

	memset(cfg, 0, sizeof *cfg);
	cfg->target = BENCH_GOCD;
	cfg->target_name = "gocd";
	cfg->addr = "127.0.0.1:7432";
	cfg->token = getenv("GOC_TOKEN"); /* as goc: out of ps and shell history */
	cfg->connections = 1;
	cfg->pipeline = 1;
	cfg->table = "bench_kv";
	cfg->id_col = "id";
	cfg->keys_spec = "uniform:100000";
	cfg->key_prefix = "k";
	cfg->op = GOC_OP_GET_OR_CREATE;
	cfg->connect_timeout = 10;
	cfg->drain_timeout = 10;
	cfg->seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	bool have_duration = false;
	uint64_t u;
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case O_TARGET:
			if (!strcmp(optarg, "gocd"))
				cfg->target = BENCH_GOCD;
			else if (!strcmp(optarg, "direct"))
				cfg->target = BENCH_DIRECT;
			else if (!strcmp(optarg, "naive"))
				cfg->target = BENCH_NAIVE;
			else
				BENCH_USAGE_ERR("--target: \"%s\" is not gocd, direct or naive", optarg);
			cfg->target_name = optarg;
			break;
		case O_ADDR: cfg->addr = optarg; break;
		case O_UNIX: cfg->unix_path = optarg; break;
		case O_TOKEN: cfg->token = optarg; break;
		case O_POSTGRES: cfg->postgres = optarg; break;
		case O_CONNECTIONS:
			if (bench_parse_u64(optarg, 1, BENCH_MAX_CONNECTIONS, &u))
				BENCH_USAGE_ERR("--connections: \"%s\" is not in 1..%d", optarg,
						BENCH_MAX_CONNECTIONS);
			cfg->connections = (unsigned)u;
			break;
		case O_PIPELINE:
			if (bench_parse_u64(optarg, 1, BENCH_MAX_PIPELINE, &u))
				BENCH_USAGE_ERR("--pipeline: \"%s\" is not in 1..%d", optarg,
						BENCH_MAX_PIPELINE);
			cfg->pipeline = (unsigned)u;
			break;
		case O_DURATION:
			if (bench_parse_double(optarg, 0.001, 86400, &cfg->duration))
				BENCH_USAGE_ERR("--duration: \"%s\" is not seconds in (0, 86400]", optarg);
			have_duration = true;
			break;
		case O_REQUESTS:
			if (bench_parse_u64(optarg, 0, UINT64_MAX / 2, &cfg->requests))
				BENCH_USAGE_ERR("--requests: \"%s\" is not a count", optarg);
			if (cfg->requests == 0)
				cfg->requests = UINT64_MAX; /* marker: 0 requests (prepopulate only) */
			break;
		case O_RATE:
			if (bench_parse_double(optarg, 0.001, 1e9, &cfg->rate))
				BENCH_USAGE_ERR("--rate: \"%s\" is not requests/s in (0, 1e9]", optarg);
			break;
		case O_TABLE: cfg->table = optarg; break;
		case O_KEY_COLUMN:
			if (bench_add_key_cols(cfg, optarg))
				BENCH_USAGE_ERR("--key-column: more than %d columns", BENCH_MAX_KEY_COLS);
			break;
		case O_ID_COLUMN: cfg->id_col = optarg; break;
		case O_DEFAULTS: {
			json_error_t je;
			if (cfg->defaults)
				json_decref(cfg->defaults);
			cfg->defaults = json_loads(optarg, JSON_REJECT_DUPLICATES, &je);
			if (!json_is_object(cfg->defaults))
				BENCH_USAGE_ERR("--defaults: not a JSON object: %s",
						cfg->defaults ? "not an object" : je.text);
			break;
		}
		case O_KEYS: cfg->keys_spec = optarg; break;
		case O_KEY_PREFIX:
			if (strlen(optarg) > BENCH_KEY_MAX / 2 - 32)
				BENCH_USAGE_ERR("--key-prefix: longer than %d bytes", BENCH_KEY_MAX / 2 - 32);
			cfg->key_prefix = optarg;
			break;
		case O_PREPOPULATE:
			if (bench_parse_u64(optarg, 0, (uint64_t)1 << 40, &cfg->prepopulate))
				BENCH_USAGE_ERR("--prepopulate: \"%s\" is not a count", optarg);
			break;
		case O_OP:
			if (!strcmp(optarg, "get_or_create"))
				cfg->op = GOC_OP_GET_OR_CREATE;
			else if (!strcmp(optarg, "get"))
				cfg->op = GOC_OP_GET;
			else if (!strcmp(optarg, "ping"))
				cfg->op = GOC_OP_PING;
			else
				BENCH_USAGE_ERR("--op: \"%s\" is not get_or_create, get or ping", optarg);
			break;
		case O_VERIFY: cfg->verify = true; break;
		case O_VERIFY_DB: cfg->verify_db = optarg; cfg->verify = true; break;
		case O_JSON: cfg->json = true; break;
		case O_QUIET: cfg->quiet = true; break;
		case O_SEED:
			if (bench_parse_u64(optarg, 0, UINT64_MAX, &cfg->seed))
				BENCH_USAGE_ERR("--seed: \"%s\" is not a number", optarg);
			break;
		case O_CONNECT_TIMEOUT:
			if (bench_parse_double(optarg, 0.001, 3600, &cfg->connect_timeout))
				BENCH_USAGE_ERR("--connect-timeout: \"%s\" is not seconds", optarg);
			break;
		case O_DRAIN_TIMEOUT:
			if (bench_parse_double(optarg, 0, 3600, &cfg->drain_timeout))
				BENCH_USAGE_ERR("--drain-timeout: \"%s\" is not seconds", optarg);
			break;
		case O_WARMUP:
			if (bench_parse_double(optarg, 0, 3600, &cfg->warmup))
				BENCH_USAGE_ERR("--warmup: \"%s\" is not seconds in [0, 3600]", optarg);
			break;
		case O_HELP:
			bench_usage(stdout);
			return 0;
		case O_VERSION:
			printf("goc-bench %s\n", GOCD_VERSION);
			return 0;
		default:
			fprintf(stderr, "goc-bench: see --help\n");
			return 2;
		}
	}
	if (optind < argc)
		BENCH_USAGE_ERR("unexpected argument \"%s\"", argv[optind]);
	if (cfg->nkey_cols == 0) {
		cfg->key_cols[0] = "k";
		cfg->nkey_cols = 1;
	}
	if (!have_duration && cfg->requests == 0)
		cfg->duration = 10;
	if (cfg->warmup > 0 && cfg->requests)
		BENCH_USAGE_ERR("--warmup goes with --duration, not --requests");
	if (cfg->target != BENCH_GOCD && cfg->postgres == NULL)
		BENCH_USAGE_ERR("--target=%s needs --postgres=CONNINFO", cfg->target_name);
	if (cfg->prepopulate && !cfg->postgres && !cfg->verify_db)
		BENCH_USAGE_ERR("--prepopulate needs --postgres (or --verify-db) to load the table");
	if (cfg->defaults && bench_defaults_params(cfg))
		return 2;
	return -1;
}

/* ---- shared helpers ---- */

uint64_t bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

size_t bench_key_text(const struct bench *b, uint64_t n, char *buf)
{
	return keys_text(b->prefix, b->prefix_len, n, buf, BENCH_KEY_MAX);
}

const char *bench_err_name(int code)
{
	switch (code) {
	case BENCH_E_PROTOCOL: return "protocol";
	case BENCH_E_CONNECTION: return "connection";
	case BENCH_E_MULTIPLE_ROWS: return "multiple_rows";
	default: return goc_err_name((enum goc_err)code);
	}
}

int bench_sqlstate_code(const char *ss)
{
	if (ss == NULL)
		return BENCH_E_CONNECTION;
	if (!strncmp(ss, "22", 2))
		return GOC_E_INVALID_VALUE;
	if (!strncmp(ss, "23", 2))
		return GOC_E_CONSTRAINT_VIOLATION;
	if (!strncmp(ss, "08", 2) || !strcmp(ss, "57P01") || !strcmp(ss, "57P02") ||
	    !strcmp(ss, "57P03"))
		return GOC_E_UNAVAILABLE;
	if (!strcmp(ss, "57014"))
		return GOC_E_TIMEOUT;
	if (!strcmp(ss, "42P01") || !strcmp(ss, "3F000"))
		return GOC_E_UNKNOWN_TABLE;
	if (!strcmp(ss, "42703"))
		return GOC_E_UNKNOWN_COLUMN;
	return GOC_E_INTERNAL;
}

static double bench_ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

/* ---- the run ---- */

static void bench_finish(struct bench *b)
{
	if (b->finished)
		return;
	b->finished = true;
	if (!b->t_stop)
		b->t_stop = bench_now();
	event_base_loopbreak(b->base);
}

static void bench_stop_issuing(struct bench *b)
{
	if (b->stopping)
		return;
	b->stopping = true;
	b->t_stop = bench_now();
	if (b->ev_tick)
		event_del(b->ev_tick);
	if (b->ev_warm)
		event_del(b->ev_warm);
	if (b->cfg.rate > 0 && b->started) {
		/* requests the schedule wanted sent but no connection was free for */
		double due = (double)(b->t_stop - b->t_start) / 1e9 * b->cfg.rate;
		uint64_t d = (uint64_t)due + b->sched_base;
		if (b->cfg.requests && d > b->cfg.requests)
			d = b->cfg.requests;
		b->backlog = d > b->issued ? d - b->issued : 0;
	}
	struct timeval tv = { (time_t)b->cfg.drain_timeout,
			      (suseconds_t)(fmod(b->cfg.drain_timeout, 1.0) * 1e6) };
	event_add(b->ev_drain, &tv);
}

static void bench_check_end(struct bench *b)
{
	if (!b->started || b->finished)
		return;
	bool exhausted = b->cfg.requests && b->issued >= b->cfg.requests;
	if (exhausted && !b->stopping)
		bench_stop_issuing(b);
	if (b->stopping && b->inflight == 0) {
		/* end of run: when the last answer arrived */
		b->t_stop = bench_now();
		bench_finish(b);
	}
}

/* Open loop: wake up when the next request is due (precise timer). */
static void bench_arm_tick(struct bench *b, uint64_t due, uint64_t now)
{
	if (b->tick_armed && b->tick_at <= due)
		return;
	uint64_t d = due - now;
	struct timeval tv = { (time_t)(d / 1000000000u), (suseconds_t)(d % 1000000000u / 1000u) };
	event_add(b->ev_tick, &tv);
	b->tick_armed = true;
	b->tick_at = due;
}

void bench_pump(struct bconn *c)
{
	struct bench *b = c->b;
	const struct bench_cfg *cfg = &b->cfg;
	if (!b->started || b->stopping || c->dead || !c->ready)
		return;
	unsigned sent = 0;
	uint64_t now = 0;
	while (c->inflight < cfg->pipeline && !c->dead) {
		if (cfg->requests && b->issued >= cfg->requests)
			break;
		struct bench_req r;
		if (cfg->rate > 0) {
			/* open loop: request i is due at start + i/rate and its
			 * latency counts from then, queueing included */
			uint64_t due = b->t_start +
				       (uint64_t)((double)(b->issued - b->sched_base) * 1e9 / cfg->rate);
			if (now == 0)
				now = bench_now();
			if (due > now) {
				bench_arm_tick(b, due, now);
				break;
			}
			r.t0 = due;
		} else {
			r.t0 = bench_now();
		}
		r.key = keys_next(&b->keys);
		b->issued++;
		b->inflight++;
		c->inflight++;
		sent++;
		b->ops->send(c, &r);
	}
	if (sent && !c->dead)
		b->ops->flush(c);
	if (cfg->requests && b->issued >= cfg->requests)
		bench_check_end(b);
}

void bench_done(struct bconn *c, const struct bench_req *r,
		const struct bench_result *res)
{
	struct bench *b = c->b;
	struct bench_stats *st = &b->st;
	st->done++;
	b->prog_done++;
	if (res->code != GOC_OK)
		b->prog_errors++;
	else if (res->created)
		b->prog_created++;
	if (res->code == GOC_OK) {
		uint64_t now = bench_now();
		uint64_t lat = now > r->t0 ? now - r->t0 : 0;
		hist_record(b->h_all, lat);
		hist_record(b->h_int, lat);
		st->ok++;
		if (res->created)
			st->created++;
		else if (res->row_text)
			st->found++;
		else if (b->cfg.op != GOC_OP_PING)
			st->not_found++;
	} else {
		int code = res->code >= 0 && res->code < BENCH_E__COUNT ? res->code : GOC_E_INTERNAL;
		st->errors++;
		st->by_code[code]++;
		if (st->first_msg[code] == NULL && res->message) {
			st->first_msg[code] = strdup(res->message);
			char *nl = st->first_msg[code] ? strchr(st->first_msg[code], '\n') : NULL;
			if (nl)
				*nl = '\0';
		}
	}
	if (b->ver && b->cfg.op != GOC_OP_PING)
		verify_record(b->ver, r->key, b->cfg.op, res);
	c->inflight--;
	b->inflight--;
	bench_check_end(b);
}

static void bench_pump_all(struct bench *b)
{
	unsigned n = b->cfg.connections;
	unsigned from = b->pump_from;
	for (unsigned i = 0; i < n; i++)
		bench_pump(&b->conns[(from + i) % n]);
	/* rotate so no connection is always first in line for paced requests */
	b->pump_from = (from + 1) % n;
}

static void bench_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;
	b->tick_armed = false;
	bench_pump_all(b);
}

static void bench_stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;
	bench_stop_issuing(b);
	bench_check_end(b);
}

static void bench_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;
	if (!b->cfg.quiet)
		fprintf(stderr, "goc-bench: %" PRIu64 " requests still unanswered after "
			"--drain-timeout; giving up on them\n", b->inflight);
	bench_finish(b);
}

static void bench_progress_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;
	uint64_t now = bench_now();
	double dt = (double)(now - b->last_t) / 1e9;
	double since = (double)(now - b->t_run) / 1e9;
	fprintf(stderr, "progress: %.1f s%s, %.1f req/s, lat p50 %.3f ms p99 %.3f ms, "
		"%" PRIu64 " errors, %" PRIu64 " created\n", since,
		b->cfg.warmup > 0 && since <= b->cfg.warmup + 0.05 ? " (warmup)" : "",
		dt > 0 ? (double)(b->prog_done - b->last_done) / dt : 0.0,
		bench_ms(hist_percentile(b->h_int, 50)), bench_ms(hist_percentile(b->h_int, 99)),
		b->prog_errors - b->last_errors, b->prog_created - b->last_created);
	b->last_t = now;
	b->last_done = b->prog_done;
	b->last_errors = b->prog_errors;
	b->last_created = b->prog_created;
	hist_reset(b->h_int);
}

/* End of --warmup: measuring starts now; verification keeps what it saw. */
static void bench_warm_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;
	if (b->stopping)
		return;
	b->warming = false;
	b->t_start = bench_now();
	b->sched_base = b->issued;
	for (int i = 0; i < BENCH_E__COUNT; i++)
		free(b->st.first_msg[i]);
	memset(&b->st, 0, sizeof b->st);
	hist_reset(b->h_all);
	b->conn_failures = 0;
	b->reconnects = 0;
	if (!b->cfg.quiet)
		fprintf(stderr, "goc-bench: warmup done; measuring\n");
}

static void bench_start(struct bench *b)
{
	if (b->started)
		return;
	event_del(b->ev_connect);
	if (b->nready == 0) {
		fprintf(stderr, "goc-bench: no connection came up; nothing to measure\n");
		b->exit_code = 3;
		bench_finish(b);
		return;
	}
	for (unsigned i = 0; i < b->cfg.connections; i++)
		if (b->conns[i].dead)
			b->conns[i].gave_up = true;
	b->started = true;
	b->t_start = bench_now();
	b->t_run = b->last_t = b->t_start;
	hist_reset(b->h_int);
	const struct bench_cfg *cfg = &b->cfg;
	if (cfg->duration > 0) {
		double d = cfg->duration + cfg->warmup;
		struct timeval tv = { (time_t)d, (suseconds_t)(fmod(d, 1.0) * 1e6) };
		event_add(b->ev_stop, &tv);
	}
	if (cfg->warmup > 0) {
		struct timeval tv = { (time_t)cfg->warmup,
				      (suseconds_t)(fmod(cfg->warmup, 1.0) * 1e6) };
		b->warming = true;
		event_add(b->ev_warm, &tv);
	}
	if (!cfg->quiet) {
		struct timeval one = { 1, 0 };
		event_add(b->ev_progress, &one);
	}
	if (cfg->requests == UINT64_MAX) {
		/* --requests 0: nothing to send */
		bench_stop_issuing(b);
		bench_check_end(b);
		return;
	}
	bench_pump_all(b);
	bench_check_end(b);
}

void bench_conn_ready(struct bconn *c)
{
	struct bench *b = c->b;
	c->ready = true;
	c->retries = 0;
	b->nready++;
	if (!b->started && b->nready + b->ndead == b->cfg.connections)
		bench_start(b);
	else if (b->started)
		bench_pump(c);
}

/* Timer: reap the dead connection's target state and connect again. */
static void bench_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bconn *c = arg;
	struct bench *b = c->b;
	if (b->stopping || b->finished)
		return;
	b->ops->close(c);
	c->dead = false;
	c->ready = false;
	b->ndead--;
	b->reconnects++;
	if (b->ops->open(c))
		bench_conn_failed(c, "could not start reconnecting");
}

void bench_conn_failed(struct bconn *c, const char *why)
{
	struct bench *b = c->b;
	if (c->dead)
		return;
	bool was_ready = c->ready;
	c->dead = true;
	c->ready = false;
	if (was_ready)
		b->nready--;
	b->ndead++;
	b->conn_failures++;
	if (b->conn_failures <= BENCH_FAIL_LINES) {
		/* libpq's messages run over several lines: the first one says it */
		const char *nl = strchr(why, '\n');
		fprintf(stderr, "goc-bench: connection %u: %.*s\n", c->idx,
			nl ? (int)(nl - why) : (int)strlen(why), why);
	} else if (b->conn_failures == BENCH_FAIL_LINES + 1) {
		fprintf(stderr, "goc-bench: (more connection failures not shown)\n");
	}
	if (!b->started) {
		if (b->nready + b->ndead == b->cfg.connections)
			bench_start(b);
		return;
	}
	if (!was_ready)
		c->retries++;
	if (!b->stopping && c->retries < BENCH_RECONNECT_TRIES && c->ev_retry) {
		unsigned ms = BENCH_RECONNECT_MIN_MS << (c->retries < 5 ? c->retries : 5);
		if (ms > BENCH_RECONNECT_MAX_MS)
			ms = BENCH_RECONNECT_MAX_MS;
		struct timeval tv = { ms / 1000, (suseconds_t)(ms % 1000) * 1000 };
		event_add(c->ev_retry, &tv);
	} else {
		c->gave_up = true;
	}
	bool all_gave_up = true;
	for (unsigned i = 0; i < b->cfg.connections; i++)
		if (!b->conns[i].gave_up)
			all_gave_up = false;
	if (all_gave_up && !b->stopping) {
		b->lost_all = true;
		bench_stop_issuing(b);
	}
	bench_check_end(b);
}

static void bench_connect_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bench *b = arg;
	fprintf(stderr, "goc-bench: %u of %u connections up after --connect-timeout; "
		"starting with those\n", b->nready, b->cfg.connections);
	for (unsigned i = 0; i < b->cfg.connections; i++)
		if (!b->conns[i].ready && !b->conns[i].dead) {
			b->conns[i].dead = true;
			b->conns[i].gave_up = true;
			b->ndead++;
		}
	bench_start(b);
}

static void bench_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct bench *b = arg;
	if (!b->started || b->stopping) {
		bench_finish(b);
		return;
	}
	fprintf(stderr, "goc-bench: interrupted; draining\n");
	bench_stop_issuing(b);
	bench_check_end(b);
}

/* ---- report ---- */

struct bench_report {
	double elapsed, rps;
	double cpu_user, cpu_sys; /* goc-bench's own CPU seconds: it shares the host */
	struct verify_summary vs;
	struct db_check dc;
	bool have_vs, have_dc, dc_failed;
};

static void bench_print_text(const struct bench *b, const struct bench_report *rp, FILE *out)
{
	const struct bench_cfg *cfg = &b->cfg;
	const struct bench_stats *s = &b->st;
	const struct hist *h = b->h_all;
	fprintf(out, "target:       %s, op %s, table %s, keys %s\n", cfg->target_name,
		codec_op_name(cfg->op), cfg->table, cfg->keys_spec);
	fprintf(out, "load:         %u connections x pipeline %u, %s", cfg->connections,
		cfg->pipeline, cfg->rate > 0 ? "open loop" : "closed loop");
	if (cfg->rate > 0)
		fprintf(out, " at %.0f req/s", cfg->rate);
	fprintf(out, ", %.2f s", rp->elapsed);
	if (cfg->warmup > 0)
		fprintf(out, " after %.1f s warmup%s", cfg->warmup,
			b->warming ? " (stopped during warmup)" : "");
	fprintf(out, "\n");
	fprintf(out, "requests:     %" PRIu64 " (ok %" PRIu64 ", errors %" PRIu64
		", unanswered %" PRIu64 ")\n", s->done, s->ok, s->errors, b->inflight);
	fprintf(out, "throughput:   %.1f req/s (successful answers)\n", rp->rps);
	if (cfg->rate > 0)
		fprintf(out, "schedule:     %" PRIu64 " requests due but never sent (all connections busy)\n",
			b->backlog);
	fprintf(out, "client cpu:   %.2f s user, %.2f s sys (goc-bench itself, whole process)\n",
		rp->cpu_user, rp->cpu_sys);
	if (b->conn_failures)
		fprintf(out, "connections:  %" PRIu64 " failures, %" PRIu64 " reconnects%s\n",
			b->conn_failures, b->reconnects,
			b->lost_all ? "; all connections lost before the end" : "");
	fprintf(out, "latency ms:   min %.3f  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  "
		"max %.3f  mean %.3f  (successful answers, from %s)\n",
		bench_ms(h->count ? h->min : 0), bench_ms(hist_percentile(h, 50)),
		bench_ms(hist_percentile(h, 90)), bench_ms(hist_percentile(h, 99)),
		bench_ms(hist_percentile(h, 99.9)), bench_ms(h->max), hist_mean(h) / 1e6,
		cfg->rate > 0 ? "the scheduled time" : "the send");
	fprintf(out, "rows:         created %" PRIu64 ", found %" PRIu64 ", not found %" PRIu64 "\n",
		s->created, s->found, s->not_found);
	if (s->errors) {
		fprintf(out, "errors:\n");
		for (int i = 0; i < BENCH_E__COUNT; i++)
			if (s->by_code[i])
				fprintf(out, "  %-22s %" PRIu64 "  (first: %s)\n", bench_err_name(i),
					s->by_code[i], s->first_msg[i] ? s->first_msg[i] : "");
	}
	if (rp->have_vs) {
		fprintf(out, "verify:       %" PRIu64 " keys, %" PRIu64 " with violations "
			"(created more than once %" PRIu64 ", differing row ids %" PRIu64
			", created though pre-existing %" PRIu64 ", never created %" PRIu64
			"; outcome unknown %" PRIu64 ")\n",
			rp->vs.keys, rp->vs.violations, rp->vs.multi_created, rp->vs.id_mismatch,
			rp->vs.created_existing, rp->vs.never_created, rp->vs.uncertain);
		if (!rp->vs.exactly_once && cfg->op == GOC_OP_GET_OR_CREATE)
			fprintf(out, "              created:true checked at most once per key only: "
				"without --postgres or --verify-db the keys that existed before "
				"the run are unknown\n");
	}
	if (rp->have_dc)
		fprintf(out, "verify-db:    %" PRIu64 " keys counted, %" PRIu64 " with duplicate rows "
			"(%" PRIu64 " extra rows), %" PRIu64 " missing\n", rp->dc.keys,
			rp->dc.dup_keys, rp->dc.extra_rows, rp->dc.missing);
	else if (rp->dc_failed)
		fprintf(out, "verify-db:    failed (see above)\n");
}

static json_t *bench_json_report(const struct bench *b, const struct bench_report *rp)
{
	const struct bench_cfg *cfg = &b->cfg;
	const struct bench_stats *s = &b->st;
	const struct hist *h = b->h_all;
	json_t *o = json_object();
	json_t *kc = json_array();
	for (unsigned i = 0; i < cfg->nkey_cols; i++)
		json_array_append_new(kc, json_string(cfg->key_cols[i]));
	json_object_set_new(o, "target", json_string(cfg->target_name));
	json_object_set_new(o, "op", json_string(codec_op_name(cfg->op)));
	json_object_set_new(o, "table", json_string(cfg->table));
	json_object_set_new(o, "key_columns", kc);
	json_object_set_new(o, "keys", json_string(cfg->keys_spec));
	json_object_set_new(o, "key_prefix", json_string(b->prefix));
	json_object_set_new(o, "connections", json_integer(cfg->connections));
	json_object_set_new(o, "pipeline", json_integer(cfg->pipeline));
	json_object_set_new(o, "rate", cfg->rate > 0 ? json_real(cfg->rate) : json_null());
	json_object_set_new(o, "prepopulate", json_integer((json_int_t)cfg->prepopulate));
	json_object_set_new(o, "warmup_s", json_real(cfg->warmup));
	json_object_set_new(o, "elapsed_s", json_real(rp->elapsed));
	json_object_set_new(o, "requests", json_integer((json_int_t)s->done));
	json_object_set_new(o, "ok", json_integer((json_int_t)s->ok));
	json_object_set_new(o, "unanswered", json_integer((json_int_t)b->inflight));
	json_object_set_new(o, "backlog", json_integer((json_int_t)b->backlog));
	json_object_set_new(o, "throughput_rps", json_real(rp->rps));
	json_t *lat = json_object();
	json_object_set_new(lat, "min", json_real(bench_ms(h->count ? h->min : 0)));
	json_object_set_new(lat, "p50", json_real(bench_ms(hist_percentile(h, 50))));
	json_object_set_new(lat, "p90", json_real(bench_ms(hist_percentile(h, 90))));
	json_object_set_new(lat, "p99", json_real(bench_ms(hist_percentile(h, 99))));
	json_object_set_new(lat, "p99.9", json_real(bench_ms(hist_percentile(h, 99.9))));
	json_object_set_new(lat, "max", json_real(bench_ms(h->max)));
	json_object_set_new(lat, "mean", json_real(hist_mean(h) / 1e6));
	json_object_set_new(o, "latency_ms", lat);
	json_object_set_new(o, "created", json_integer((json_int_t)s->created));
	json_object_set_new(o, "found", json_integer((json_int_t)s->found));
	json_object_set_new(o, "not_found", json_integer((json_int_t)s->not_found));
	json_t *errs = json_object();
	for (int i = 0; i < BENCH_E__COUNT; i++)
		if (s->by_code[i])
			json_object_set_new(errs, bench_err_name(i), json_integer((json_int_t)s->by_code[i]));
	json_object_set_new(o, "errors", errs);
	json_object_set_new(o, "errors_total", json_integer((json_int_t)s->errors));
	json_object_set_new(o, "client_cpu_s", json_real(rp->cpu_user + rp->cpu_sys));
	json_object_set_new(o, "connection_failures", json_integer((json_int_t)b->conn_failures));
	json_object_set_new(o, "reconnects", json_integer((json_int_t)b->reconnects));
	if (rp->have_vs) {
		json_t *v = json_object();
		json_object_set_new(v, "keys", json_integer((json_int_t)rp->vs.keys));
		json_object_set_new(v, "violations", json_integer((json_int_t)rp->vs.violations));
		json_object_set_new(v, "created_more_than_once", json_integer((json_int_t)rp->vs.multi_created));
		json_object_set_new(v, "differing_row_ids", json_integer((json_int_t)rp->vs.id_mismatch));
		json_object_set_new(v, "created_though_preexisting", json_integer((json_int_t)rp->vs.created_existing));
		json_object_set_new(v, "never_created", json_integer((json_int_t)rp->vs.never_created));
		json_object_set_new(v, "outcome_unknown", json_integer((json_int_t)rp->vs.uncertain));
		json_object_set_new(v, "exactly_once_checked", json_boolean(rp->vs.exactly_once));
		json_object_set_new(o, "verify", v);
	} else {
		json_object_set_new(o, "verify", json_null());
	}
	if (rp->have_dc) {
		json_t *d = json_object();
		json_object_set_new(d, "keys", json_integer((json_int_t)rp->dc.keys));
		json_object_set_new(d, "duplicate_keys", json_integer((json_int_t)rp->dc.dup_keys));
		json_object_set_new(d, "extra_rows", json_integer((json_int_t)rp->dc.extra_rows));
		json_object_set_new(d, "missing", json_integer((json_int_t)rp->dc.missing));
		json_object_set_new(o, "verify_db", d);
	} else {
		json_object_set_new(o, "verify_db", json_null());
	}
	/* one number for tables: keys with more than one row (or answered as
	 * created more than once when the database was not counted) */
	uint64_t dups = rp->have_dc ? rp->dc.dup_keys : rp->have_vs ? rp->vs.multi_created : 0;
	json_object_set_new(o, "duplicates", (rp->have_dc || rp->have_vs)
					     ? json_integer((json_int_t)dups) : json_null());
	return o;
}

/* ---- main ---- */

static int bench_setup_prefix(struct bench *b)
{
	const struct bench_cfg *cfg = &b->cfg;
	if (b->keys.kind == KEYS_FRESH) {
		/* run-unique, so fresh keys never collide with any earlier run */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		uint64_t id = ((uint64_t)ts.tv_sec * 1000003u) ^ ((uint64_t)ts.tv_nsec << 7) ^
			      (uint64_t)getpid();
		snprintf(b->prefix, sizeof b->prefix, "%sf%" PRIx64 "-", cfg->key_prefix,
			 (uint64_t)(id & 0xffffffffffu));
	} else {
		snprintf(b->prefix, sizeof b->prefix, "%s", cfg->key_prefix);
	}
	b->prefix_len = strlen(b->prefix);
	return 0;
}

static void bench_free(struct bench *b)
{
	if (b->conns) {
		for (unsigned i = 0; i < b->cfg.connections; i++) {
			if (b->conns[i].impl)
				b->ops->close(&b->conns[i]);
			if (b->conns[i].ev_retry)
				event_free(b->conns[i].ev_retry);
		}
		free(b->conns);
	}
	struct event *evs[] = { b->ev_tick, b->ev_stop, b->ev_drain, b->ev_progress,
				b->ev_connect, b->ev_warm };
	for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
		if (evs[i])
			event_free(evs[i]);
	if (b->base)
		event_base_free(b->base);
	free(b->h_all);
	free(b->h_int);
	verify_free(b->ver);
	for (int i = 0; i < BENCH_E__COUNT; i++)
		free(b->st.first_msg[i]);
	for (unsigned i = 0; i < b->cfg.ndef; i++)
		free(b->cfg.def_vals[i]);
	if (b->cfg.defaults)
		json_decref(b->cfg.defaults);
}

int main(int argc, char **argv)
{
	static struct bench bench;
	struct bench *b = &bench;
	int rc = bench_parse_args(&b->cfg, argc, argv);
	if (rc >= 0)
		return rc;
	const struct bench_cfg *cfg = &b->cfg;
	signal(SIGPIPE, SIG_IGN);

	const char *why = NULL;
	if (keys_parse(&b->keys, cfg->keys_spec, &why)) {
		fprintf(stderr, "goc-bench: --keys %s: %s (see --help)\n", cfg->keys_spec, why);
		return 2;
	}
	keys_seed(&b->keys, cfg->seed);
	bench_setup_prefix(b);
	b->ops = cfg->target == BENCH_GOCD ? &bench_gocd_ops
		 : cfg->target == BENCH_DIRECT ? &bench_direct_ops : &bench_naive_ops;
	b->h_all = malloc(sizeof *b->h_all);
	b->h_int = malloc(sizeof *b->h_int);
	if (!b->h_all || !b->h_int) {
		fprintf(stderr, "goc-bench: out of memory\n");
		return 3;
	}
	hist_reset(b->h_all);
	hist_reset(b->h_int);

	const char *admin = cfg->postgres ? cfg->postgres : cfg->verify_db;
	rc = 0;
	if (cfg->prepopulate && db_prepopulate(b, admin, cfg->prepopulate)) {
		rc = 3;
		goto out;
	}
	if (cfg->verify) {
		uint64_t space = keys_space(&b->keys);
		b->ver = verify_new(space, cfg->id_col);
		if (b->ver == NULL) {
			fprintf(stderr, "goc-bench: out of memory for --verify\n");
			rc = 3;
			goto out;
		}
		if (b->keys.kind == KEYS_FRESH) {
			verify_set_preexist_known(b->ver, true);
		} else if (admin && cfg->op == GOC_OP_GET_OR_CREATE) {
			if (db_snapshot(b, admin)) {
				rc = 3;
				goto out;
			}
			verify_set_preexist_known(b->ver, true);
		}
	}

	if (!cfg->quiet) {
		fprintf(stderr, "goc-bench: target %s", cfg->target_name);
		if (cfg->target == BENCH_GOCD)
			fprintf(stderr, " at %s", cfg->unix_path ? cfg->unix_path : cfg->addr);
		fprintf(stderr, ", op %s, table %s, keys %s (prefix \"%s\"), %u connections x "
			"pipeline %u, ", codec_op_name(cfg->op), cfg->table, cfg->keys_spec,
			b->prefix, cfg->connections, cfg->pipeline);
		if (cfg->rate > 0)
			fprintf(stderr, "rate %.0f req/s, ", cfg->rate);
		if (cfg->warmup > 0)
			fprintf(stderr, "warmup %.1f s, ", cfg->warmup);
		if (cfg->requests == UINT64_MAX)
			fprintf(stderr, "no requests");
		else if (cfg->duration > 0)
			fprintf(stderr, "duration %.1f s", cfg->duration);
		if (cfg->requests && cfg->requests != UINT64_MAX)
			fprintf(stderr, "%s%" PRIu64 " requests", cfg->duration > 0 ? ", at most " : "",
				cfg->requests);
		fprintf(stderr, "%s, seed %" PRIu64 "\n", cfg->verify ? ", verify" : "", cfg->seed);
	}

	/* Precise timers for open-loop pacing below a millisecond only: they
	 * cost a timerfd_settime per loop turn, which a closed loop (the load
	 * of every target alike) does not need. */
	struct event_config *ec = event_config_new();
	if (ec) {
		if (cfg->rate > 0)
			event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
		b->base = event_base_new_with_config(ec);
		event_config_free(ec);
	}
	b->conns = calloc(cfg->connections, sizeof *b->conns);
	if (b->base == NULL || b->conns == NULL) {
		fprintf(stderr, "goc-bench: out of memory\n");
		rc = 3;
		goto out;
	}
	b->ev_tick = evtimer_new(b->base, bench_tick_cb, b);
	b->ev_stop = evtimer_new(b->base, bench_stop_cb, b);
	b->ev_drain = evtimer_new(b->base, bench_drain_cb, b);
	b->ev_progress = event_new(b->base, -1, EV_PERSIST, bench_progress_cb, b);
	b->ev_connect = evtimer_new(b->base, bench_connect_timeout_cb, b);
	b->ev_warm = evtimer_new(b->base, bench_warm_cb, b);
	struct event *ev_int = evsignal_new(b->base, SIGINT, bench_signal_cb, b);
	struct event *ev_term = evsignal_new(b->base, SIGTERM, bench_signal_cb, b);
	if (!b->ev_tick || !b->ev_stop || !b->ev_drain || !b->ev_progress ||
	    !b->ev_connect || !b->ev_warm || !ev_int || !ev_term) {
		fprintf(stderr, "goc-bench: cannot create events\n");
		rc = 3;
		goto out;
	}
	event_add(ev_int, NULL);
	event_add(ev_term, NULL);
	struct timeval ct = { (time_t)cfg->connect_timeout,
			      (suseconds_t)(fmod(cfg->connect_timeout, 1.0) * 1e6) };
	event_add(b->ev_connect, &ct);
	for (unsigned i = 0; i < cfg->connections; i++) {
		struct bconn *c = &b->conns[i];
		c->b = b;
		c->idx = i;
		c->ev_retry = evtimer_new(b->base, bench_retry_cb, c);
		if (b->ops->open(c)) {
			bench_conn_failed(c, "could not start connecting");
			if (b->finished)
				break;
		}
	}
	if (!b->finished)
		event_base_dispatch(b->base);
	event_free(ev_int);
	event_free(ev_term);
	if (b->exit_code) {
		rc = b->exit_code;
		goto out;
	}

	/* the connections go before the database is counted */
	for (unsigned i = 0; i < cfg->connections; i++)
		if (b->conns[i].impl)
			b->ops->close(&b->conns[i]);

	struct bench_report rp = { 0 };
	rp.elapsed = (double)(b->t_stop - b->t_start) / 1e9;
	rp.rps = rp.elapsed > 0 ? (double)b->st.ok / rp.elapsed : 0;
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) == 0) {
		rp.cpu_user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
		rp.cpu_sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	}
	FILE *vout = stderr;
	if (b->ver) {
		rp.have_vs = true;
		verify_finish(b->ver, b, vout, BENCH_VERIFY_LINES, &rp.vs);
	}
	if (cfg->verify_db) {
		if (db_check(b, cfg->verify_db, vout, BENCH_VERIFY_LINES, &rp.dc))
			rp.dc_failed = true;
		else
			rp.have_dc = true;
	}
	if (cfg->json) {
		json_t *o = bench_json_report(b, &rp);
		char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
		if (s)
			printf("%s\n", s);
		free(s);
		json_decref(o);
		if (!cfg->quiet)
			bench_print_text(b, &rp, stderr);
	} else {
		bench_print_text(b, &rp, stdout);
	}
	if ((rp.have_vs && rp.vs.violations) ||
	    (rp.have_dc && (rp.dc.dup_keys || rp.dc.missing)))
		rc = 1;
	else if (rp.dc_failed)
		rc = 3;
	else if (b->st.ok == 0 && (b->st.done > 0 || b->inflight > 0))
		rc = 3; /* sent, and not one success: errors only, or no answer at all */
	else if (b->lost_all)
		rc = 3;
out:
	fflush(stdout);
	bench_free(b);
	return rc;
}
