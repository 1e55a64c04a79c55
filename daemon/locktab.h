/*
 * locktab.h - the per-key lock table.
 *
 * Owns: "is a request for this key already in flight?" and the FIFO of
 * requests waiting behind it.  Must never: talk to PostgreSQL, answer
 * clients, or know what a request is beyond the waiter embedded in it.
 */
#ifndef GOCD_LOCKTAB_H
#define GOCD_LOCKTAB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

struct lockent;

/* Embedded in each request that takes part. */
struct lockwaiter {
	TAILQ_ENTRY(lockwaiter) link;
	struct lockent *ent; /* NULL when not in the table */
};

enum lock_rc {
	LOCK_OWNED,  /* nobody had the key: the caller runs it */
	LOCK_QUEUED, /* someone runs it: the caller waits */
	LOCK_FULL,   /* max_waiters already wait on this key */
};

struct locktab_stats {
	size_t keys;    /* keys in flight */
	size_t waiters; /* requests waiting behind them */
	size_t buckets;
};

/*
 * The canonical key of a request: table id, then each key column's
 * parameter text in configured order with its length (NULL has its own
 * marker), so ("ab","c") and ("a","bc") differ and equal values spelled
 * differently in JSON are equal.  Returns a malloc'd buffer; *len is set.
 */
unsigned char *locktab_key(int table, const char *const *texts, int n, size_t *len);

int locktab_init(void) __attribute__((warn_unused_result));
void locktab_free(void);

/*
 * Take the key (table id + canonical key bytes; copied) for w.  The key
 * bytes are opaque: callers make equal keys byte-identical.
 */
enum lock_rc locktab_acquire(struct lockwaiter *w, const void *key, size_t len,
			     int max_waiters);

/* Owner only: the next waiter, left in place, or NULL. */
struct lockwaiter *locktab_first_waiter(const struct lockwaiter *owner);

/* Owner only: remove and return the next waiter, or NULL. */
struct lockwaiter *locktab_pop_waiter(struct lockwaiter *owner);

/*
 * Owner is done.  If waiters remain, the first becomes the owner and is
 * returned (the key stays locked: it must now run); otherwise the key is
 * released and NULL is returned.
 */
struct lockwaiter *locktab_release(struct lockwaiter *owner);

/* A waiter gives up (timeout).  Not for owners. */
void locktab_cancel(struct lockwaiter *w);

int locktab_is_owner(const struct lockwaiter *w);
int locktab_nwaiters(const struct lockwaiter *owner);

void locktab_get_stats(struct locktab_stats *out);

#endif
