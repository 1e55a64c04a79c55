/*
 * table.h - the tables gocd serves, as validated against PostgreSQL's catalog.
 *
 * Owns: the catalog query, the rule "a served table has a valid, immediate,
 * non-partial unique index on exactly its key columns", the column list and
 * types, and the SQL text of the get-or-create statements.
 * Must never: send anything to PostgreSQL itself (pgpool or the startup
 * check does) or hold pointers into requests.
 */
#ifndef GOCD_TABLE_H
#define GOCD_TABLE_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "config.h"
#include "pgpool.h"

struct column {
	char *name;  /* attname, unquoted */
	char *type;  /* format_type() text, for messages */
	bool is_json;/* json/jsonb: values are sent as JSON text */
	char *cast;  /* what key and default texts are cast to: type, but
		      * without a truncating typmod (see table.c SENSITIVE) */
	int varchar_typmod; /* >= 0: varchar(n), coerced as an assignment would */
	bool varchar_array; /* ... and the column is an array of varchar(n) */
};

struct table {
	int idx;                       /* stable: never reused, even after removal */
	const struct table_conf *conf; /* = &own */
	struct table_conf own;         /* name and key columns, copied from config */
	bool removed;                  /* dropped from the configuration by a reload */
	bool ready;                    /* catalog validated: requests may run */
	char error[512];               /* why not ready, for 'unavailable' messages */
	char *qname;                   /* "schema"."relname" from the catalog */
	struct column *cols;
	int ncols;
	int key_col[32];               /* index into cols, per conf->cols order */
	char *key_eq[32];              /* per key column, the key index's = as
					* OPERATOR(schema.=); NULL: plain = */
	bool nulls_not_distinct;
	/* A BEFORE INSERT row trigger (on the table or a partition) may change
	 * the key or skip the row: a batch, which matches inserted rows to
	 * requests by key, could not tell who created a row (goc.c). */
	bool insert_trigger;
	char *index_name;
	char *sql_select;              /* all-non-null key lookup, for preparing */
	char *sql_insert_key;          /* insert of key columns only, for preparing */
	char *conflict_target;         /* ("k1","k2") */
	int stmt_select;               /* pgpool statement ids, -1 until ready */
	int stmt_insert_key;
	unsigned gen;                  /* bumped on every catalog load: cached SQL is stale */
	unsigned layout;               /* bumped when the columns changed: positions in cols
					* held by requests and batch shapes are stale */
	struct pgjob check_job;        /* catalog re-check in flight, see catalog.c */
	bool checking;
	bool relog;                    /* a reload asked: log the refusal even if unchanged */
	uint64_t hinted_ms;            /* last re-check asked for by an unknown column */
	float miss_rate;               /* recent lookups that found no row (batch.c) */
	uint64_t catalog_seq;          /* sent_seq of the catalog read last applied (catalog.c) */
	uint64_t error_logged_ms;      /* last 'internal' error logged (goc.c) */
	unsigned errors_unlogged;      /* and those not logged since */
};

/* Every table ever configured in this process, by idx.  A reload marks
 * tables removed rather than freeing them: requests in flight and batch
 * shapes refer to them by pointer or idx. */
extern struct table **tables;
extern int ntables;

/*
 * Make the served set match cfg: new names (or a name whose key columns
 * changed) get a new, not-yet-ready table; names no longer configured are
 * marked removed; the rest are kept as they are.  Returns how many tables
 * were added (they need a catalog check).
 */
int table_sync(const struct config *cfg);
void table_free_all(void);

/* Why r's table cannot take its next statement (not ready, or its columns
 * changed since r was prepared), for an 'unavailable' answer; NULL if it can. */
const char *table_unusable(const struct table *t, unsigned layout);

/* Lookup by the name clients use; NULL if not served (or removed). */
struct table *table_find(const char *name);

/* Column index by name, or -1. */
int table_column(const struct table *t, const char *name);

/* The catalog query; one parameter: the configured table name. */
extern const char table_catalog_sql[];

/*
 * Apply a catalog query result.  On success the table becomes ready and
 * 0 is returned; on failure it becomes unready, t->error says why (with
 * the CREATE UNIQUE INDEX that would fix a missing index) and -1 is returned.
 * res may be an error result (e.g. bad name syntax).
 */
int table_apply_catalog(struct table *t, const PGresult *res);

/* SQL for an insert of the given columns (indexes into t->cols), a
 * lookup where the flagged key columns are NULL (NULLS NOT DISTINCT only),
 * and the check after a commit in doubt: ($1 = the xid, then the non-NULL
 * key texts) -> the xid's status, and whether the key's row has it as xmin.
 * All malloc'd; the caller frees. */
char *table_sql_insert(const struct table *t, const int *cols, int ncols);
char *table_sql_select_nulls(const struct table *t, const bool *isnull);
char *table_sql_xact(const struct table *t, const bool *isnull);

/*
 * Batch statements: every parameter is a text[] with one element per
 * request (keys first in configured order, then defcols in the given
 * order); each result row is (ord, row json text, created).  See table.c.
 */
char *table_sql_batch_goc(const struct table *t, const int *defcols, int ndef);
/* In the error of a batch that inserted a row under a key no request asked
 * for, or into a table with a BEFORE INSERT row trigger: nothing was
 * written, and the table may rewrite keys on insert.  The mark ends in a
 * number drawn at start: a client's own value that fails the same cast is
 * quoted in its error, and must not be able to pass for it. */
const char *table_key_rewritten_mark(void);
char *table_sql_batch_select(const struct table *t);

/* Mark not ready with a reason (schema changed under us, etc.). */
void table_invalidate(struct table *t, const char *why);

/*
 * Quote an identifier the way PostgreSQL's quote_ident would always do it
 * (always double-quoted), appended to a malloc'd string builder.
 */
char *table_quote_ident(const char *name);

#endif
