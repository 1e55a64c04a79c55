/*
 * bench_db.h - goc-bench's blocking PostgreSQL chores around a run.
 *
 * Owns: --prepopulate (one INSERT ... SELECT generate_series), the
 * pre-run snapshot of which keys already exist (for exactly-once checks),
 * and --verify-db (rows per key counted after the run).
 * Must never: run while the load is running; it blocks.
 */
#ifndef GOC_CLIENT_BENCH_DB_H
#define GOC_CLIENT_BENCH_DB_H

#include <stdint.h>
#include <stdio.h>

#include "bench.h"

struct db_check {
	uint64_t keys;       /* keys counted */
	uint64_t dup_keys;   /* keys with more than one row */
	uint64_t extra_rows; /* rows beyond the first, summed over dup_keys */
	uint64_t missing;    /* keys answered with a row that has no row now */
};

/* Insert keys 0..n-1 that do not exist yet (with --defaults).  0 or -1. */
int db_prepopulate(const struct bench *b, const char *conninfo, uint64_t n)
	__attribute__((warn_unused_result));

/* Mark in b->ver every key of the run's prefix that exists now.  0 or -1. */
int db_snapshot(struct bench *b, const char *conninfo)
	__attribute__((warn_unused_result));

/* Count rows per key the run touched; print violations.  0 or -1. */
int db_check(const struct bench *b, const char *conninfo, FILE *out,
	     unsigned max_lines, struct db_check *res)
	__attribute__((warn_unused_result));

#endif
