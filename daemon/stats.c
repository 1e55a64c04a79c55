/*
 * stats.c - counters and their renderings (stats op JSON, Prometheus text,
 * the systemd STATUS= line) and the slow-request log.
 *
 * Owns: struct gocd_stats.  Other modules bump its plain counters directly;
 * everything derived (rates, cumulative buckets) is computed here at render
 * time, so the request path pays a few increments and one clock read.
 * Must never: allocate on the request path, or change what a request gets.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "batch.h"
#include "config.h"
#include "conn.h"
#include "gocd.h"
#include "locktab.h"
#include "log.h"
#include "pgpool.h"
#include "req.h"
#include "stats.h"

struct gocd_stats stats;
static time_t started = 0;

/* 100 us .. 10 s: a hit on a warm pool is ~0.2-1 ms, a batch under load a
 * few ms, anything past request_timeout (5 s default) is a timeout. */
const uint64_t stats_latency_bounds_us[STATS_LATENCY_BUCKETS] = {
	100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
	250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

/* The "le" label of each bound, written once so rendering does no float
 * formatting of bounds. */
static const char *const bound_labels[STATS_LATENCY_BUCKETS] = {
	"0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
	"0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
};

static const char *op_label(int op)
{
	return op == STATS_OP_INVALID ? "invalid" : codec_op_name((enum goc_op)op);
}

void stats_init(void)
{
	started = time(NULL);
}

int stats_op_index(const struct req *r)
{
	/* A request whose line never parsed (too_large) has a zeroed op. */
	if (r->in.root && (unsigned)r->in.op < GOC_OP__COUNT)
		return (int)r->in.op;
	return STATS_OP_INVALID;
}

/* Client-supplied text for a log line: printable ASCII only, bounded. */
static void log_safe(char *dst, size_t len, const char *src)
{
	size_t i = 0;
	if (src == NULL)
		src = "-";
	for (; *src && i + 1 < len; src++)
		dst[i++] = (*src >= 0x20 && *src < 0x7f && *src != '"' && *src != '\\') ? *src : '?';
	dst[i] = '\0';
}

void stats_request_done(const struct req *r)
{
	if (!started)
		started = time(NULL);
	int op = stats_op_index(r);
	if (op != STATS_OP_INVALID)
		stats.requests[op]++;
	unsigned outcome = (unsigned)r->outcome < GOC_E__COUNT ? (unsigned)r->outcome : GOC_E_INTERNAL;
	stats.answered[op][outcome]++;
	stats.answered_total++;

	uint64_t now = gocd_now_us();
	uint64_t us = now > r->started_us ? now - r->started_us : 0;
	int b = 0;
	while (b < STATS_LATENCY_BUCKETS && us > stats_latency_bounds_us[b])
		b++;
	stats.latency[op][b]++;
	stats.latency_sum_us[op] += us;

	int slow_ms = srv.cfg ? srv.cfg->slow_request_ms : 0;
	if (slow_ms > 0 && us >= (uint64_t)slow_ms * 1000) {
		stats.slow++;
		if (log_min_level <= LOG_WARN) {
			char table[80];
			log_safe(table, sizeof table, r->in.root ? r->in.table : NULL);
			log_msg(LOG_WARN, "slow request: op=%s table=\"%s\" latency=%.1f ms outcome=%s "
				"attempts=%d (slow_request_ms %d)", op_label(op), table,
				(double)us / 1000.0, goc_err_name((enum goc_err)outcome),
				r->attempts + 1, slow_ms);
		}
	}
}

void stats_error(enum goc_err code)
{
	if ((unsigned)code < GOC_E__COUNT)
		stats.errors[code]++;
}

void stats_render(struct evbuffer *out)
{
	struct pgpool_stats p;
	struct locktab_stats l;
	struct batch_stats b;
	batch_get_stats(&b);
	pgpool_get_stats(&p);
	locktab_get_stats(&l);

	evbuffer_add_printf(out, "\"stats\":{\"version\":\"%s\",\"uptime_s\":%lld,\"requests\":{",
			    GOCD_VERSION, started ? (long long)(time(NULL) - started) : 0LL);
	for (int i = 0; i < GOC_OP__COUNT; i++)
		evbuffer_add_printf(out, "%s\"%s\":%llu", i ? "," : "", codec_op_name((enum goc_op)i),
				    stats.requests[i]);
	evbuffer_add_printf(out, "},\"created\":%llu,\"found\":%llu,\"not_found\":%llu,"
			    "\"coalesced\":%llu,\"retries\":%llu,\"slow\":%llu,\"errors\":{",
			    stats.created, stats.found, stats.not_found, stats.coalesced, stats.retries,
			    stats.slow);
	int first = 1;
	for (int i = 1; i < GOC_E__COUNT; i++) {
		if (!stats.errors[i])
			continue;
		evbuffer_add_printf(out, "%s\"%s\":%llu", first ? "" : ",",
				    goc_err_name((enum goc_err)i), stats.errors[i]);
		first = 0;
	}
	evbuffer_add_printf(out, "},\"clients\":%d,\"clients_accepted\":%llu,\"clients_rejected\":%llu,"
			    "\"clients_idle_closed\":%llu,\"clients_dropped_slow\":%llu,"
			    "\"clients_dropped_memory\":%llu,\"client_memory\":%zu,"
			    "\"auth_failures\":%llu,\"backpressure\":%llu,"
			    "\"in_flight\":%d,\"keys_locked\":%zu,\"waiters\":%zu,"
			    "\"pool\":{\"size\":%d,\"idle\":%d,\"busy\":%d,\"connecting\":%d,\"down\":%d,"
			    "\"queued\":%d,\"round_trips\":%llu,\"connects\":%llu,"
			    "\"connect_failures\":%llu,\"lost\":%llu}",
			    conn_count(), stats.clients_accepted, stats.clients_rejected,
			    stats.clients_idle_closed, stats.dropped_slow, stats.dropped_memory,
			    conn_mem_total(), stats.auth_failures,
			    stats.backpressure,
			    req_inflight(), l.keys, l.waiters, p.size, p.idle, p.busy,
			    p.connecting, p.down, p.queued, p.round_trips, p.connects,
			    p.connect_failures, p.lost);
	evbuffer_add_printf(out, ",\"batch\":{\"batches\":%llu,\"keys\":%llu,\"splits\":%llu,\"queued\":%d}}",
			    b.batches, b.keys, b.splits, b.queued);
}

/* ---- Prometheus text format ---------------------------------------------- */

static void family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(struct evbuffer *out, const char *name, const char *help,
		    unsigned long long v)
{
	family(out, name, "counter", help);
	evbuffer_add_printf(out, "%s %llu\n", name, v);
}

static void gauge(struct evbuffer *out, const char *name, const char *help, long long v)
{
	family(out, name, "gauge", help);
	evbuffer_add_printf(out, "%s %lld\n", name, v);
}

/* Microseconds as seconds, exactly (no float rounding of the integer part). */
static void add_seconds(struct evbuffer *out, unsigned long long us)
{
	evbuffer_add_printf(out, "%llu.%06llu", us / 1000000, us % 1000000);
}

void stats_render_prometheus(struct evbuffer *out)
{
	struct pgpool_stats p;
	struct locktab_stats l;
	struct batch_stats b;
	batch_get_stats(&b);
	pgpool_get_stats(&p);
	locktab_get_stats(&l);

	family(out, "gocd_build_info", "gauge", "Version of this gocd (always 1).");
	evbuffer_add_printf(out, "gocd_build_info{version=\"%s\"} 1\n", GOCD_VERSION);
	gauge(out, "gocd_start_time_seconds", "Start time of the process since the Unix epoch.",
	      (long long)started);

	/* ok is always present for every real op, so rate() has a series from
	 * the start; error outcomes appear once they happen. */
	family(out, "gocd_requests_total", "counter",
	       "Answered requests by op and outcome (ok or the error code).");
	for (int op = 0; op < STATS_NOPS; op++)
		for (int e = 0; e < GOC_E__COUNT; e++) {
			unsigned long long v = stats.answered[op][e];
			if (v == 0 && (e != GOC_OK || op == STATS_OP_INVALID))
				continue;
			evbuffer_add_printf(out, "gocd_requests_total{op=\"%s\",outcome=\"%s\"} %llu\n",
					    op_label(op), goc_err_name((enum goc_err)e), v);
		}

	family(out, "gocd_request_duration_seconds", "histogram",
	       "Time from reading a request line to its answer, by op.");
	for (int op = 0; op < STATS_NOPS; op++) {
		unsigned long long cum = 0;
		for (int i = 0; i <= STATS_LATENCY_BUCKETS; i++) {
			cum += stats.latency[op][i];
			evbuffer_add_printf(out, "gocd_request_duration_seconds_bucket{op=\"%s\",le=\"%s\"} %llu\n",
					    op_label(op),
					    i < STATS_LATENCY_BUCKETS ? bound_labels[i] : "+Inf", cum);
		}
		evbuffer_add_printf(out, "gocd_request_duration_seconds_sum{op=\"%s\"} ", op_label(op));
		add_seconds(out, stats.latency_sum_us[op]);
		evbuffer_add_printf(out, "\ngocd_request_duration_seconds_count{op=\"%s\"} %llu\n",
				    op_label(op), cum);
	}

	family(out, "gocd_errors_total", "counter",
	       "Error answers by code, including clients refused at accept (overloaded).");
	for (int e = 1; e < GOC_E__COUNT; e++)
		evbuffer_add_printf(out, "gocd_errors_total{code=\"%s\"} %llu\n",
				    goc_err_name((enum goc_err)e), stats.errors[e]);

	counter(out, "gocd_rows_created_total", "Rows inserted (answers with created:true).",
		stats.created);
	counter(out, "gocd_rows_found_total", "Answers with an existing row (created:false).",
		stats.found);
	counter(out, "gocd_rows_not_found_total", "get answers with row:null.", stats.not_found);
	counter(out, "gocd_coalesced_total",
		"Requests answered from another request's result for the same key.", stats.coalesced);
	counter(out, "gocd_retries_total",
		"Re-runs after a serialization failure, deadlock or lost connection.", stats.retries);
	counter(out, "gocd_slow_requests_total", "Requests slower than slow_request_ms.", stats.slow);

	gauge(out, "gocd_requests_in_flight", "Requests read but not yet answered.", req_inflight());
	gauge(out, "gocd_keys_locked", "Keys with a request running in the lock table.",
	      (long long)l.keys);
	gauge(out, "gocd_lock_waiters", "Requests waiting behind another request for their key.",
	      (long long)l.waiters);

	gauge(out, "gocd_clients_connected", "Client connections open.", conn_count());
	counter(out, "gocd_clients_accepted_total", "Client connections accepted.",
		stats.clients_accepted);
	counter(out, "gocd_clients_rejected_total",
		"Client connections refused (max_clients or shutting down).", stats.clients_rejected);
	counter(out, "gocd_clients_dropped_slow_total",
		"Clients dropped for not reading their answers (over max_output, or stalled "
		"while being closed).", stats.dropped_slow);
	counter(out, "gocd_clients_dropped_memory_total",
		"Clients dropped for holding the most unfinished input and unsent answers while "
		"those alone were over max_client_memory.", stats.dropped_memory);
	gauge(out, "gocd_client_memory_bytes",
	      "What clients make gocd hold, counted against max_client_memory: unfinished input, "
	      "requests waiting for answers, unsent answers.", (long long)conn_mem_total());
	counter(out, "gocd_clients_idle_closed_total",
		"Client connections closed after client_idle_timeout without activity.",
		stats.clients_idle_closed);
	counter(out, "gocd_auth_failures_total",
		"TCP clients refused for a missing or wrong auth_token.", stats.auth_failures);
	counter(out, "gocd_backpressure_total",
		"Times reading a client paused at max_pending unanswered requests.",
		stats.backpressure);

	gauge(out, "gocd_pool_size", "Configured PostgreSQL connections (pool_size).", p.size);
	family(out, "gocd_pool_connections", "gauge", "PostgreSQL connections by state.");
	evbuffer_add_printf(out, "gocd_pool_connections{state=\"idle\"} %d\n"
			    "gocd_pool_connections{state=\"busy\"} %d\n"
			    "gocd_pool_connections{state=\"connecting\"} %d\n"
			    "gocd_pool_connections{state=\"down\"} %d\n",
			    p.idle, p.busy, p.connecting, p.down);
	gauge(out, "gocd_pool_queued", "Statements waiting for a free PostgreSQL connection.",
	      p.queued);
	counter(out, "gocd_postgres_round_trips_total", "Statements sent to PostgreSQL.",
		p.round_trips);
	counter(out, "gocd_postgres_connects_total", "PostgreSQL connections established.",
		p.connects);
	counter(out, "gocd_postgres_connect_failures_total", "Failed PostgreSQL connection attempts.",
		p.connect_failures);
	counter(out, "gocd_postgres_connections_lost_total",
		"PostgreSQL connections lost after being established.", p.lost);

	counter(out, "gocd_batches_total", "Batch statements sent (several keys in one statement).",
		b.batches);
	counter(out, "gocd_batch_keys_total", "Keys sent inside batch statements.", b.keys);
	counter(out, "gocd_batch_splits_total", "Failed batches split to find the failing key.",
		b.splits);
	gauge(out, "gocd_batch_queued", "Requests queued for the next batch statement.", b.queued);
}

/* ---- systemd STATUS= ----------------------------------------------------- */

char *stats_status_line(char *buf, size_t len, uint64_t now_us)
{
	static uint64_t last_us;
	static unsigned long long last_total;
	struct pgpool_stats p;
	pgpool_get_stats(&p);

	double rate = 0;
	if (last_us && now_us > last_us)
		rate = (double)(stats.answered_total - last_total) * 1e6 / (double)(now_us - last_us);
	last_us = now_us;
	last_total = stats.answered_total;

	snprintf(buf, len, "%s%d clients, %.0f req/s, %d in flight; pool %d idle, %d busy, "
		 "%d connecting, %d down",
		 srv.shutting_down ? "stopping: " : "", conn_count(), rate, req_inflight(),
		 p.idle, p.busy, p.connecting, p.down);
	return buf;
}
