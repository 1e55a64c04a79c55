/*
 * stats.h - counters and gauges.
 *
 * Owns: the numbers gocd reports and their names, in three renderings: the
 * stats op's JSON, the Prometheus text of /metrics, and the one-line STATUS=
 * summary systemd shows.  Also the slow-request log line, because it is
 * decided from the same latency the histogram records.
 * Must never: change behaviour (counting is all it does), or allocate on the
 * request path.
 */
#ifndef GOCD_STATS_H
#define GOCD_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

struct req;
struct evbuffer;

/* Upper bounds (microseconds) of the request latency histogram's buckets;
 * a last, implicit bucket is +Inf. */
#define STATS_LATENCY_BUCKETS 16
extern const uint64_t stats_latency_bounds_us[STATS_LATENCY_BUCKETS];

/* Requests whose op could not be read (bad JSON, unknown op, too long) are
 * counted under this op index, rendered as op="invalid". */
#define STATS_OP_INVALID GOC_OP__COUNT
#define STATS_NOPS (GOC_OP__COUNT + 1)

struct gocd_stats {
	unsigned long long requests[GOC_OP__COUNT];
	unsigned long long created, found, not_found, coalesced;
	unsigned long long errors[GOC_E__COUNT];
	unsigned long long retries;
	unsigned long long clients_accepted, clients_closed, clients_rejected;
	unsigned long long backpressure, dropped_slow, clients_idle_closed, auth_failures;
	unsigned long long dropped_memory; /* the biggest client, over max_client_memory */

	/* Answered requests by op (STATS_OP_INVALID included) and outcome. */
	unsigned long long answered[STATS_NOPS][GOC_E__COUNT];
	unsigned long long answered_total;
	/* Latency by op: per-bucket counts (not cumulative), sum in us. */
	unsigned long long latency[STATS_NOPS][STATS_LATENCY_BUCKETS + 1];
	unsigned long long latency_sum_us[STATS_NOPS];
	unsigned long long slow;
};

extern struct gocd_stats stats;

/* Record the process start (wall clock, for uptime and start time). */
void stats_init(void);

/*
 * Called exactly once per answered request (req_answered): counts it by op
 * and outcome, records its latency from r->started_us, and logs it when it
 * took longer than slow_request_ms.
 */
void stats_request_done(const struct req *r);
void stats_error(enum goc_err code);

/* The "stats" member of the stats op's answer, as JSON object text. */
void stats_render(struct evbuffer *out);

/* Prometheus text exposition format 0.0.4 of every counter and gauge. */
void stats_render_prometheus(struct evbuffer *out);

/*
 * A one-line human summary for systemd's STATUS=: clients, requests per
 * second since the previous call (now_us is gocd_now_us()), in flight, pool
 * states.  Always NUL-terminated; returns buf.
 */
char *stats_status_line(char *buf, size_t len, uint64_t now_us);

/* The op label of r ("get_or_create", ..., or "invalid"). */
int stats_op_index(const struct req *r);

#endif
