/*
 * locktab.c - per-key serialization in memory.
 *
 * How it fits (the design in one paragraph): every get_or_create computes a
 * canonical key (table id + each key column's parameter text in configured
 * order).  The first request for a key becomes its owner and runs the SQL;
 * later requests for the same key queue here instead of reaching PostgreSQL.
 * When the owner gets a row, every waiter is answered with that row and
 * created:false.  When the owner fails, its failure is its own: the next
 * waiter becomes owner and runs with its own defaults.  This is only an
 * optimisation (it spares PostgreSQL the duplicates); the guarantee comes
 * from the unique index and ON CONFLICT, which also covers other gocd
 * instances and applications writing the same table.
 *
 * Owns: a chained hash table of in-flight keys with a random seed (so
 * clients cannot aim keys at one bucket without knowing it).
 * Must never: talk to PostgreSQL or answer anyone.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "locktab.h"

struct lockent {
	struct lockent *next;
	uint64_t hash;
	struct lockwaiter *owner;
	TAILQ_HEAD(, lockwaiter) waiters;
	int nwaiters;
	size_t len;
	unsigned char key[];
};

static struct {
	struct lockent **buckets;
	size_t nbuckets; /* power of two */
	size_t nkeys, nwaiters;
	uint64_t seed;
} lt;

/* FNV-1a with a secret seed and a murmur finaliser. */
static uint64_t hash_key(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ lt.seed;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

unsigned char *locktab_key(int table, const char *const *texts, int n, size_t *len)
{
	size_t klen = 4;
	for (int i = 0; i < n; i++)
		klen += 4 + (texts[i] ? strlen(texts[i]) : 0);
	unsigned char *key = malloc(klen), *p = key;
	if (key == NULL)
		abort();
	uint32_t u = (uint32_t)table;
	memcpy(p, &u, 4);
	p += 4;
	for (int i = 0; i < n; i++) {
		size_t l = texts[i] ? strlen(texts[i]) : 0;
		u = texts[i] ? (uint32_t)l : UINT32_MAX;
		memcpy(p, &u, 4);
		p += 4;
		memcpy(p, texts[i] ? texts[i] : "", l);
		p += l;
	}
	*len = klen;
	return key;
}

int locktab_init(void)
{
	lt.nbuckets = 1024;
	lt.buckets = calloc(lt.nbuckets, sizeof *lt.buckets);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	lt.seed = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^
		  ((uint64_t)getpid() << 16) ^ (uint64_t)(uintptr_t)&ts;
	return lt.buckets ? 0 : -1;
}

void locktab_free(void)
{
	for (size_t i = 0; i < lt.nbuckets; i++) {
		struct lockent *e = lt.buckets[i], *n;
		for (; e; e = n) {
			n = e->next;
			free(e);
		}
	}
	free(lt.buckets);
	memset(&lt, 0, sizeof lt);
}

static void grow(void)
{
	size_t nb = lt.nbuckets * 2;
	struct lockent **b = calloc(nb, sizeof *b);
	if (b == NULL)
		return; /* keep the longer chains rather than fail */
	for (size_t i = 0; i < lt.nbuckets; i++) {
		struct lockent *e = lt.buckets[i], *n;
		for (; e; e = n) {
			n = e->next;
			size_t k = e->hash & (nb - 1);
			e->next = b[k];
			b[k] = e;
		}
	}
	free(lt.buckets);
	lt.buckets = b;
	lt.nbuckets = nb;
}

enum lock_rc locktab_acquire(struct lockwaiter *w, const void *key, size_t len,
			     int max_waiters)
{
	uint64_t h = hash_key(key, len);
	struct lockent *e = lt.buckets[h & (lt.nbuckets - 1)];
	for (; e; e = e->next)
		if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0)
			break;
	if (e) {
		if (e->nwaiters >= max_waiters)
			return LOCK_FULL;
		TAILQ_INSERT_TAIL(&e->waiters, w, link);
		e->nwaiters++;
		lt.nwaiters++;
		w->ent = e;
		return LOCK_QUEUED;
	}
	if (lt.nkeys >= lt.nbuckets)
		grow();
	e = malloc(sizeof *e + len);
	if (e == NULL)
		abort();
	e->hash = h;
	e->len = len;
	memcpy(e->key, key, len);
	e->owner = w;
	TAILQ_INIT(&e->waiters);
	e->nwaiters = 0;
	size_t k = h & (lt.nbuckets - 1);
	e->next = lt.buckets[k];
	lt.buckets[k] = e;
	lt.nkeys++;
	w->ent = e;
	return LOCK_OWNED;
}

int locktab_is_owner(const struct lockwaiter *w)
{
	return w->ent != NULL && w->ent->owner == w;
}

int locktab_nwaiters(const struct lockwaiter *owner)
{
	return owner->ent ? owner->ent->nwaiters : 0;
}

struct lockwaiter *locktab_first_waiter(const struct lockwaiter *owner)
{
	return TAILQ_FIRST(&owner->ent->waiters);
}

struct lockwaiter *locktab_pop_waiter(struct lockwaiter *owner)
{
	struct lockent *e = owner->ent;
	struct lockwaiter *w = TAILQ_FIRST(&e->waiters);
	if (w) {
		TAILQ_REMOVE(&e->waiters, w, link);
		e->nwaiters--;
		lt.nwaiters--;
		w->ent = NULL;
	}
	return w;
}

struct lockwaiter *locktab_release(struct lockwaiter *owner)
{
	struct lockent *e = owner->ent;
	owner->ent = NULL;
	struct lockwaiter *w = TAILQ_FIRST(&e->waiters);
	if (w) {
		TAILQ_REMOVE(&e->waiters, w, link);
		e->nwaiters--;
		lt.nwaiters--;
		e->owner = w;
		return w;
	}
	struct lockent **pp = &lt.buckets[e->hash & (lt.nbuckets - 1)];
	while (*pp != e)
		pp = &(*pp)->next;
	*pp = e->next;
	lt.nkeys--;
	free(e);
	return NULL;
}

void locktab_cancel(struct lockwaiter *w)
{
	struct lockent *e = w->ent;
	if (e == NULL || e->owner == w)
		return;
	TAILQ_REMOVE(&e->waiters, w, link);
	e->nwaiters--;
	lt.nwaiters--;
	w->ent = NULL;
}

void locktab_get_stats(struct locktab_stats *out)
{
	out->keys = lt.nkeys;
	out->waiters = lt.nwaiters;
	out->buckets = lt.nbuckets;
}
