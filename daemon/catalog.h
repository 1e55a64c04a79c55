/*
 * catalog.h - when gocd reads PostgreSQL's catalog for its tables.
 *
 * Owns: the three moments a table is (re)validated: blocking at startup
 * (before the loop exists), on every pool connection's setup, and on
 * demand (after a reload added it, or after a statement showed the schema
 * changed under us).  Must never: block once the loop runs.
 */
#ifndef GOCD_CATALOG_H
#define GOCD_CATALOG_H

#include <stdbool.h>
#include <stddef.h>

#include "pgpool.h"

struct config;
struct table;

/*
 * Startup check over a blocking connection.  0: every table valid; 1:
 * PostgreSQL unreachable (msg says why); -1: some table invalid (logged).
 */
int catalog_check_blocking(const struct config *cfg, char *msg, size_t len);

/* pgpool setup hook: one catalog query per table on every new connection. */
bool catalog_setup_step(int step, struct pgjob *job);

/* Re-check one table through the pool (no-op if a check is in flight). */
void catalog_recheck(struct table *t);

/* A request named a column the table lacks: maybe it was just added.
 * Re-check, at most once a second per table. */
void catalog_recheck_hint(struct table *t);

#endif
