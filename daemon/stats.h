/*
 * stats.h - counters and gauges.
 *
 * Owns: the numbers gocd reports (stats op) and their names.
 * Must never: change behaviour; counting is all it does.
 */
#ifndef GOCD_STATS_H
#define GOCD_STATS_H

#include "codec.h"

struct req;
struct evbuffer;

struct gocd_stats {
	unsigned long long requests[GOC_OP__COUNT];
	unsigned long long created, found, not_found, coalesced;
	unsigned long long errors[GOC_E__COUNT];
	unsigned long long retries;
	unsigned long long clients_accepted, clients_closed, clients_rejected;
	unsigned long long backpressure, dropped_slow;
};

extern struct gocd_stats stats;

void stats_request_done(const struct req *r);
void stats_error(enum goc_err code);

/* The "stats" member of the stats op's answer, as JSON object text. */
void stats_render(struct evbuffer *out);

#endif
