/*
 * batch.h - many queued requests of one table as one statement.
 *
 * Owns: per-shape queues (a shape is table + lookup-only or get-or-create
 * + the set of defaults columns), building one batch statement's array
 * parameters from up to batch_max requests, and splitting a failed batch
 * until the failure is pinned on the request that caused it.
 * Must never: decide a request's outcome itself (goc.c does, through its
 * goc_* hooks), or put two requests for the same lock key in one batch
 * (the lock table already guarantees one owner per key).
 */
#ifndef GOCD_BATCH_H
#define GOCD_BATCH_H

#include <stdbool.h>

struct req;

void batch_init(int batch_max, int insert_batches);
void batch_set_max(int batch_max, int insert_batches); /* reload */
void batch_free_all(void);

/* Queue r (busy, validated, batchable); 0, or -1 when r must go alone. */
int batch_enqueue(struct req *r, bool select_only);
/*
 * True when r is a get_or_create's first lookup and most recent lookups
 * on its table found no row: it then goes straight into an insert batch,
 * whose statement finds existing rows itself, saving the lookup round
 * trip (fresh keys).
 */
bool batch_skip_lookup(const struct req *r);
/* From the janitor: let held-back requests go once their gate expired. */
void batch_tick(void);

/* Take r out of its queue if it is still there, or out of a split batch
 * still waiting for a connection (timeout). */
bool batch_cancel(struct req *r);

/* Batch-size histogram for stats: counts of batches by size bucket. */
struct batch_stats {
	unsigned long long batches, keys, splits;
	int queued;
};
void batch_get_stats(struct batch_stats *out);

#endif
