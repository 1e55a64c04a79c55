/*
 * bench_verify.h - goc-bench's --verify bookkeeping.
 *
 * Owns: per-key memory of the row id first seen and how many responses said
 * created:true, and the end-of-run judgement: one row id per key, created at
 * most once, exactly once for keys known not to exist before the run.
 * Must never: talk to a database or a socket (bench_db.c counts rows).
 */
#ifndef GOC_CLIENT_BENCH_VERIFY_H
#define GOC_CLIENT_BENCH_VERIFY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "bench.h"

struct verify_summary {
	uint64_t keys;             /* keys with at least one row seen */
	uint64_t violations;       /* keys with at least one problem */
	uint64_t multi_created;    /* keys answered created:true more than once */
	uint64_t id_mismatch;      /* keys answered with more than one row id */
	uint64_t created_existing; /* keys that existed before yet were "created" */
	uint64_t never_created;    /* new keys that no response said it created */
	uint64_t uncertain;        /* keys with a timeout/lost answer: exactly-once not judged */
	uint64_t no_id;            /* rows without the id column */
	bool exactly_once;         /* "created exactly once" was judged (pre-run state known) */
};

/* space: key numbers expected to be below it (grows as needed). */
struct verify *verify_new(uint64_t space, const char *id_col);
void verify_free(struct verify *v);

/* Whether "did this key exist before the run" is known for every key. */
void verify_set_preexist_known(struct verify *v, bool known);
void verify_mark_preexisting(struct verify *v, uint64_t key);

/* One response for key (only get_or_create and get responses). */
void verify_record(struct verify *v, uint64_t key, enum goc_op op,
		   const struct bench_result *res);

/* Keys that a get_or_create answered (or may have touched), for bench_db. */
uint64_t verify_space(const struct verify *v);
bool verify_touched(const struct verify *v, uint64_t key);
/* Some successful response carried a row for key. */
bool verify_has_row(const struct verify *v, uint64_t key);

/*
 * Judge every key, print at most `max_lines` violations (with the key text)
 * to out, and fill *sum.  Returns the number of keys with a violation.
 */
uint64_t verify_finish(struct verify *v, const struct bench *b, FILE *out,
		       unsigned max_lines, struct verify_summary *sum);

#endif
