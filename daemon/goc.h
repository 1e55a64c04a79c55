/*
 * goc.h - the get-or-create flow of one request.
 *
 * Owns: validation of a request against its table, the parameters and the
 * canonical lock key, and the statement sequence SELECT -> INSERT ... ON
 * CONFLICT DO NOTHING -> SELECT, with its bounded retries and error
 * mapping.  Must never: write to sockets, or decide anything from memory
 * alone that the unique index should decide.
 */
#ifndef GOCD_GOC_H
#define GOCD_GOC_H

#include <stdbool.h>
#include <stddef.h>

#include "errors.h"

struct req;

/* Handler for get_or_create and get. */
void goc_start(struct req *r);

/* r's deadline passed and it is about to be answered 'timeout'. */
void goc_on_timeout(struct req *r);

/*
 * The interface between a request's flow and the batcher (batch.c).
 * PHASE_LOOKUP reads (get, and the first look of get_or_create, so a hit
 * never touches an INSERT); PHASE_INSERT inserts what the lookup missed;
 * PHASE_RESELECT reads the row of a writer that won the insert race.
 */
enum goc_phase { PHASE_LOOKUP, PHASE_INSERT, PHASE_RESELECT };
struct pgjob;
struct pg_result;

void goc_run(struct req *r, enum goc_phase phase);
/* Prepare r->job for a single-request step (the batcher's batch of one). */
struct pgjob *goc_single_job(struct req *r, enum goc_phase phase);
void goc_finish_row(struct req *r, const char *row, size_t len, bool created);
void goc_finish_error(struct req *r, enum goc_err code, const char *msg);
/* True, with r finished, when r was answered timeout already: no new
 * statement may start for it (goc.c says why). */
bool goc_answered_already(struct req *r);
/* A lookup found nothing: get answers null, get_or_create inserts. */
void goc_select_missed(struct req *r);
void goc_retry(struct req *r, const char *why);
void goc_sql_error(struct req *r, const struct pg_result *res);
/* The statement no longer fits its table (dropped, changed): no request's
 * fault, and every request sent with it fails the same way. */
bool goc_schema_error(const struct pg_result *res);
/* Keep r's result until its statement's commit is confirmed: xid is the
 * transaction that inserted row ("" if none), in the server life life
 * (pgjob.life). */
void goc_hold(struct req *r, const char *row, size_t len, bool created, const char *xid,
	      const char *life);
/* The held statement's commit: pgjob outcome OK / SQL_ERROR / CONN_LOST. */
void goc_commit_outcome(struct req *r, int outcome, const struct pg_result *res,
			const char *msg);
/* Janitor tick: ask pg_xact_status for requests that were waiting on a connection. */
void goc_tick(void);

/* Free what goc_start allocated for r (called when r is freed). */
void goc_release(struct req *r);

#endif
