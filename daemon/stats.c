/*
 * stats.c - counters and their JSON rendering.
 *
 * Owns: struct gocd_stats.  Must never: allocate on the request path.
 */
#include <time.h>

#include <event2/buffer.h>

#include "batch.h"
#include "conn.h"
#include "gocd.h"
#include "locktab.h"
#include "pgpool.h"
#include "req.h"
#include "stats.h"

struct gocd_stats stats;
static time_t started = 0;

void stats_request_done(const struct req *r)
{
	if (!started)
		started = time(NULL);
	if (r->in.root && (unsigned)r->in.op < GOC_OP__COUNT)
		stats.requests[r->in.op]++;
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

	evbuffer_add_printf(out, "\"stats\":{\"version\":\"%s\",\"requests\":{", GOCD_VERSION);
	for (int i = 0; i < GOC_OP__COUNT; i++)
		evbuffer_add_printf(out, "%s\"%s\":%llu", i ? "," : "", codec_op_name((enum goc_op)i),
				    stats.requests[i]);
	evbuffer_add_printf(out, "},\"created\":%llu,\"found\":%llu,\"not_found\":%llu,"
			    "\"coalesced\":%llu,\"retries\":%llu,\"errors\":{",
			    stats.created, stats.found, stats.not_found, stats.coalesced, stats.retries);
	int first = 1;
	for (int i = 1; i < GOC_E__COUNT; i++) {
		if (!stats.errors[i])
			continue;
		evbuffer_add_printf(out, "%s\"%s\":%llu", first ? "" : ",",
				    goc_err_name((enum goc_err)i), stats.errors[i]);
		first = 0;
	}
	evbuffer_add_printf(out, "},\"clients\":%d,\"clients_accepted\":%llu,\"clients_rejected\":%llu,"
			    "\"in_flight\":%d,\"keys_locked\":%zu,\"waiters\":%zu,"
			    "\"pool\":{\"size\":%d,\"idle\":%d,\"busy\":%d,\"connecting\":%d,\"down\":%d,"
			    "\"queued\":%d,\"round_trips\":%llu,\"connects\":%llu,"
			    "\"connect_failures\":%llu,\"lost\":%llu}",
			    conn_count(), stats.clients_accepted, stats.clients_rejected,
			    req_inflight(), l.keys, l.waiters, p.size, p.idle, p.busy,
			    p.connecting, p.down, p.queued, p.round_trips, p.connects,
			    p.connect_failures, p.lost);
	evbuffer_add_printf(out, ",\"batch\":{\"batches\":%llu,\"keys\":%llu,\"splits\":%llu,\"queued\":%d}}",
			    b.batches, b.keys, b.splits, b.queued);
}
