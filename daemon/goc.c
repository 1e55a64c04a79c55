/*
 * goc.c - get-or-create, one request at a time.
 *
 * The flow, each statement its own transaction at READ COMMITTED (so each
 * sees every row committed before it started):
 *
 *   SELECT   row found            -> created:false  (a hit writes nothing:
 *                                                    no sequence value, no dead tuple)
 *            none, op get         -> row:null
 *            none                 -> INSERT
 *   INSERT ... ON CONFLICT (key) DO NOTHING RETURNING row
 *            a row                -> created:true   (only the inserter sees RETURNING,
 *                                                    so exactly one caller is told created)
 *            nothing (lost race)  -> RESELECT
 *   RESELECT row found            -> created:false
 *            none (deleted since) -> INSERT again, at most MAX_ROUNDS times
 *
 * The INSERT holds its commit (see pgpool hold_commit): its row and its
 * transaction id are read first, then the commit is sent.  If the
 * connection dies during the commit, the outcome is unknown, so the row
 * is held and pg_xact_status(xid) is asked on a fresh connection, for as
 * long as request_timeout allows: committed, in the same server life and
 * with the key's row carrying that id -> created:true with the held row;
 * aborted -> run again, unless already answered; anything else -> timeout.
 * That keeps "exactly one created:true per row" even across a PostgreSQL
 * crash at the worst moment.
 *
 * The lock table in front of this keeps same-key requests of this gocd off
 * the database; other gocd instances and applications are covered by the
 * unique index, which is why the flow never trusts memory for "exists".
 *
 * Owns: request validation against the table, parameter texts, the lock
 * key, statement sequencing, retries and SQLSTATE -> error code mapping.
 * Must never: retry a constraint violation (it is that request's error), or
 * let one request's failure answer another request.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "config.h"
#include "batch.h"
#include "catalog.h"
#include "goc.h"
#include "gocd.h"
#include "log.h"
#include "req.h"
#include "stats.h"
#include "table.h"

#define MAX_ROUNDS 8 /* insert/reselect loops when rows vanish under us */
/* Each insert of the loop wrote nothing (it met a row, or a trigger
 * dropped it), and no read found the row it met.  A key's row that keeps
 * vanishing is rare; a row this role cannot see, or one whose key a
 * trigger rewrote, is not. */
#define ROW_NOT_READ_BACK \
	"no row for this key could be read back after inserts that wrote nothing (deleted " \
	"concurrently, hidden by a row-level security policy, or its key changed or the row " \
	"dropped by a trigger); this request wrote nothing"
#define XACT_RECHECKS 3 /* committed, row not (yet) visible: ask again this often */
#define XACT_LAST_ASK_MS 40 /* "in progress": the last ask, this long before the deadline (2 janitor ticks) */

#define REQ_OF(ptr, member) ((struct req *)((char *)(ptr) - offsetof(struct req, member)))

static void on_result(struct pgjob *job, const PGresult *res,
		      enum pgjob_outcome outcome, const char *msg);
static void on_committed(struct pgjob *job, const PGresult *res,
			 enum pgjob_outcome outcome, const char *msg);
static void finish_error(struct req *r, enum goc_err code, const char *msg);

/* Requests waiting for a connection to ask pg_xact_status on. */
static TAILQ_HEAD(, req) xact_wait = TAILQ_HEAD_INITIALIZER(xact_wait);

void goc_release(struct req *r)
{
	if (r->params_buf) /* kept for reuse with the request, see req.c */
		evbuffer_drain(r->params_buf, evbuffer_get_length(r->params_buf));
	free(r->params);
	free(r->select_sql);
	free(r->insert_sql);
	free(r->lockkey);
	free(r->held_row);
	free(r->xact_sql);
	free(r->xact_params);
	r->held_row = NULL;
	r->xact_sql = NULL;
	r->xact_params = NULL;
	r->params = NULL;
	r->select_sql = r->insert_sql = NULL;
	r->lockkey = NULL;
}

/* The key columns of t, for messages: "a, b". */
static void key_list(const struct table *t, char *buf, size_t len)
{
	size_t n = 0;
	buf[0] = '\0';
	for (int i = 0; i < t->conf->ncols && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? ", " : "", t->conf->cols[i]);
}

static int key_index(const struct table *t, const char *name)
{
	for (int i = 0; i < t->conf->ncols; i++)
		if (strcmp(t->conf->cols[i], name) == 0)
			return i;
	return -1;
}

/*
 * Validate r against its table and build its parameters and lock key.
 * Returns 0, or answers r with the error and returns -1.
 */
static int prepare(struct req *r, struct table *t)
{
	const struct table_conf *tc = t->conf;
	json_t *key = r->in.key, *defs = r->in.defaults, *v;
	const char *name, *why;
	char keys[256];
	int ndefs = defs ? (int)json_object_size(defs) : 0;
	int cols[32 + 1024];
	size_t offs[32 + 1024];
	bool isnull[32 + 1024];

	if (ndefs > 1024) {
		req_answer_error(r, GOC_E_BAD_REQUEST, "defaults has %d columns; at most 1024", ndefs);
		return -1;
	}
	json_object_foreach(key, name, v) {
		if (table_column(t, name) < 0) {
			catalog_recheck_hint(t);
			req_answer_error(r, GOC_E_UNKNOWN_COLUMN, "table \"%s\" has no column \"%.64s\"",
					 tc->name, name);
			return -1;
		}
		if (key_index(t, name) < 0) {
			key_list(t, keys, sizeof keys);
			req_answer_error(r, GOC_E_BAD_REQUEST,
					 "column \"%.64s\" is not part of the key of table \"%s\" "
					 "(key: %s); put other columns in defaults", name, tc->name, keys);
			return -1;
		}
	}
	for (int i = 0; i < tc->ncols; i++) {
		if (json_object_get(key, tc->cols[i]) == NULL) {
			key_list(t, keys, sizeof keys);
			req_answer_error(r, GOC_E_BAD_REQUEST,
					 "key is missing column \"%s\" (key of table \"%s\": %s)",
					 tc->cols[i], tc->name, keys);
			return -1;
		}
	}

	if (r->params_buf == NULL)
		r->params_buf = evbuffer_new();
	int n = 0;
	for (int i = 0; i < tc->ncols; i++, n++) {
		const struct column *col = &t->cols[t->key_col[i]];
		v = json_object_get(key, tc->cols[i]);
		cols[n] = t->key_col[i];
		offs[n] = evbuffer_get_length(r->params_buf);
		isnull[n] = json_is_null(v);
		if (isnull[n]) {
			if (!t->nulls_not_distinct) {
				req_answer_error(r, GOC_E_NULL_KEY,
						 "key column \"%s\" is null; NULLs never conflict in unique index %s, "
						 "so every call would create a new row (make the index NULLS NOT DISTINCT to allow it)",
						 col->name, t->index_name);
				return -1;
			}
			continue;
		}
		if (codec_value_text(v, col->is_json, r->params_buf, &why) != 0) {
			req_answer_error(r, GOC_E_INVALID_VALUE, "key column \"%s\" (%s): %s",
					 col->name, col->type, why);
			return -1;
		}
	}
	if (defs) {
		json_object_foreach(defs, name, v) {
			int ci = table_column(t, name);
			if (ci < 0) {
				catalog_recheck_hint(t);
				req_answer_error(r, GOC_E_UNKNOWN_COLUMN,
						 "table \"%s\" has no column \"%.64s\" (in defaults)", tc->name, name);
				return -1;
			}
			if (key_index(t, name) >= 0) {
				req_answer_error(r, GOC_E_BAD_REQUEST,
						 "defaults sets key column \"%.64s\"; key values belong in key", name);
				return -1;
			}
			cols[n] = ci;
			offs[n] = evbuffer_get_length(r->params_buf);
			isnull[n] = json_is_null(v);
			if (!isnull[n] && codec_value_text(v, t->cols[ci].is_json, r->params_buf, &why) != 0) {
				req_answer_error(r, GOC_E_INVALID_VALUE, "column \"%s\" (%s): %s",
						 t->cols[ci].name, t->cols[ci].type, why);
				return -1;
			}
			n++;
		}
	}

	/* Defaults in column order, so every request with the same set of
	 * columns has the same statement shape (and can share a batch). */
	for (int i = tc->ncols + 1; i < n; i++)
		for (int j = i; j > tc->ncols && cols[j - 1] > cols[j]; j--) {
			int c = cols[j]; cols[j] = cols[j - 1]; cols[j - 1] = c;
			size_t o = offs[j]; offs[j] = offs[j - 1]; offs[j - 1] = o;
			bool z = isnull[j]; isnull[j] = isnull[j - 1]; isnull[j - 1] = z;
		}

	/* Texts are final: now point into the (now contiguous) buffer. */
	const char *base = (const char *)evbuffer_pullup(r->params_buf, -1);
	r->params = malloc((sizeof *r->params * 2 + sizeof *r->param_cols) * (size_t)n);
	if (r->params == NULL)
		abort();
	r->select_params = r->params + n;
	r->param_cols = (int *)(r->select_params + n);
	memcpy(r->param_cols, cols, sizeof *cols * (size_t)n);
	r->nparams = n;
	r->nkey_params = 0;
	bool anynull = false;
	for (int i = 0; i < n; i++) {
		r->params[i] = isnull[i] ? NULL : base + offs[i];
		if (i < tc->ncols) {
			if (isnull[i])
				anynull = true;
			else
				r->select_params[r->nkey_params++] = r->params[i];
		}
	}
	r->batchable = !anynull;
	if (anynull)
		r->select_sql = table_sql_select_nulls(t, isnull);

	r->lockkey = locktab_key(t->idx, r->params, tc->ncols, &r->lockkey_len);
	r->layout = t->layout;
	return 0;
}

/* Point r->job at the statement for step. */
static struct pgjob *setup_job(struct req *r, enum req_step step)
{
	struct pgjob *j = &r->job;
	struct table *t = r->table;

	r->step = step;
	j->done = on_result;
	j->hold_commit = step == STEP_INSERT;
	j->committed = on_committed;
	if (step == STEP_INSERT) {
		/* Built here, not in prepare(): most requests are hits or go
		 * in batches and never run the single-row insert. */
		if (r->insert_sql == NULL && r->nparams > t->conf->ncols)
			r->insert_sql = table_sql_insert(t, r->param_cols, r->nparams);
		j->stmt = r->insert_sql ? -1 : t->stmt_insert_key;
		j->sql = r->insert_sql;
		j->params = r->params;
		j->nparams = r->nparams;
	} else {
		j->stmt = r->select_sql ? -1 : t->stmt_select;
		j->sql = r->select_sql;
		j->params = r->select_params;
		j->nparams = r->nkey_params;
	}
	return j;
}

/* Send the statement for step; -1 when no connection can be had. */
static int submit(struct req *r, enum req_step step, bool urgent)
{
	return pgpool_submit(setup_job(r, step), urgent);
}

/*
 * True, with r finished, when r was answered timeout already: no new
 * statement starts for it.  Its caller has had its timeout and may be
 * retrying already: a statement now would only race that retry, and could
 * create the row with a created:true nobody hears.  Its key goes to the
 * next waiter, which runs its own request.
 */
bool goc_answered_already(struct req *r)
{
	if (!r->answered)
		return false;
	finish_error(r, GOC_E_TIMEOUT, "");
	return true;
}

/* The single-row INSERT after a miss, unless the table changed under r
 * (its SQL would be built from a catalog that no longer holds). */
static void submit_insert(struct req *r)
{
	if (goc_answered_already(r))
		return;
	const char *why = table_unusable(r->table, r->layout);
	if (why != NULL)
		finish_error(r, GOC_E_UNAVAILABLE, why);
	else if (submit(r, STEP_INSERT, true) != 0)
		finish_error(r, GOC_E_UNAVAILABLE, "PostgreSQL is unavailable");
}

static enum req_step first_step(enum goc_phase phase)
{
	return phase == PHASE_LOOKUP ? STEP_SELECT :
	       phase == PHASE_INSERT ? STEP_INSERT : STEP_RESELECT;
}

struct pgjob *goc_single_job(struct req *r, enum goc_phase phase)
{
	return setup_job(r, first_step(phase));
}

/*
 * r failed on its own account.  Answer it, then let the next waiter for
 * the key (if any) run with its own request.  Waiters whose statement
 * cannot even be queued are answered 'unavailable' in turn; a loop, not
 * recursion, because a key may have thousands of waiters.
 */
/* r gives up its key: the next waiter (if any) runs its own request. */
static void release_to_next(struct req *r)
{
	struct lockwaiter *next = r->lock.ent ? locktab_release(&r->lock) : NULL;
	while (next) {
		struct req *nr = REQ_OF(next, lock);
		/* Checked here, not left to goc_run's own checks: those answer
		 * through finish_error, which would come back here, recursing
		 * once per waiter. */
		const char *why = pgpool_all_down() ? "PostgreSQL is unavailable"
						    : table_unusable(nr->table, nr->layout);
		if (why == NULL) {
			goc_run(nr, PHASE_LOOKUP);
			break;
		}
		req_answer_error(nr, GOC_E_UNAVAILABLE, "%s", why);
		next = locktab_release(&nr->lock);
		nr->step = STEP_NONE;
		req_idle(nr);
	}
}

static void finish_error(struct req *r, enum goc_err code, const char *msg)
{
	req_answer_error(r, code, "%s", msg);
	release_to_next(r);
	r->step = STEP_NONE;
	req_idle(r);
}

void goc_finish_error(struct req *r, enum goc_err code, const char *msg)
{
	finish_error(r, code, msg);
}

/* A request that waited behind the key's owner takes the owner's answer. */
static void answer_waiter(struct req *wr, const char *row, size_t len)
{
	wr->step = STEP_NONE;
	stats.coalesced++;
	if (row == NULL)
		stats.not_found++;
	else
		stats.found++;
	codec_render_row(wr->out, wr->in.id, false, row, len);
	req_answered(wr);
	req_idle(wr);
}

static void finish_row(struct req *r, const char *row, size_t len, bool created)
{
	if (!r->answered) {
		if (row == NULL)
			stats.not_found++;
		else if (created)
			stats.created++;
		else
			stats.found++;
		codec_render_row(r->out, r->in.id, created, row, len);
		req_answered(r);
	}
	if (row == NULL) {
		/* A get that found nothing.  The gets waiting right behind it
		 * were concurrent with it: they get the same answer.  A waiting
		 * get_or_create must still create: it runs its own request,
		 * and the gets behind it wait for its row. */
		struct lockwaiter *w;
		while (r->lock.ent && (w = locktab_first_waiter(&r->lock)) != NULL &&
		       REQ_OF(w, lock)->in.op == GOC_OP_GET)
			answer_waiter(REQ_OF(locktab_pop_waiter(&r->lock), lock), NULL, 0);
		release_to_next(r);
	} else if (r->lock.ent) {
		struct lockwaiter *w;
		while ((w = locktab_pop_waiter(&r->lock)) != NULL)
			answer_waiter(REQ_OF(w, lock), row, len);
		locktab_release(&r->lock);
	}
	r->step = STEP_NONE;
	req_idle(r);
}

void goc_finish_row(struct req *r, const char *row, size_t len, bool created)
{
	finish_row(r, row, len, created);
}

void goc_run(struct req *r, enum goc_phase phase)
{
	if (goc_answered_already(r))
		return;
	if (pgpool_all_down()) {
		finish_error(r, GOC_E_UNAVAILABLE, "PostgreSQL is unavailable (reconnecting)");
		return;
	}
	/* The catalog may have been re-read since r was prepared: a table
	 * that lost its index, or whose columns moved, takes no statement. */
	const char *why = table_unusable(r->table, r->layout);
	if (why != NULL) {
		finish_error(r, GOC_E_UNAVAILABLE, why);
		return;
	}
	r->phase = phase;
	if (r->batchable) {
		/* A skipped lookup stays PHASE_LOOKUP: batch_next knows it by that.
		 * A batch finds which request created a row by the key in the
		 * row, which a BEFORE INSERT trigger may have changed (the row
		 * would be created and nobody told, the request answered an
		 * error): on such a table only lookups are batched. */
		bool trig = r->table->insert_trigger;
		bool sel = phase != PHASE_INSERT && (trig || !batch_skip_lookup(r));
		if ((sel || !trig) && batch_enqueue(r, sel) == 0)
			return;
	}
	if (submit(r, first_step(phase), phase != PHASE_LOOKUP) != 0)
		finish_error(r, GOC_E_UNAVAILABLE, "PostgreSQL is unavailable (reconnecting)");
}

void goc_select_missed(struct req *r)
{
	if (r->in.op == GOC_OP_GET)
		finish_row(r, NULL, 0, false);
	else if (r->phase == PHASE_LOOKUP)
		goc_run(r, PHASE_INSERT);
	else if (++r->rounds >= MAX_ROUNDS)
		finish_error(r, GOC_E_INTERNAL,
			     ROW_NOT_READ_BACK);
	else
		goc_run(r, PHASE_INSERT);
}

/* Re-run the whole flow from the lookup, if retries remain. */
static void retry(struct req *r, const char *why)
{
	if (why == NULL) /* an error field PostgreSQL left out */
		why = "no message";
	char msg[CODEC_MSG_MAX];
	if (goc_answered_already(r)) /* before counting a retry that will not run */
		return;
	if (r->attempts++ < srv.cfg->retry_limit) {
		stats.retries++;
		log_debug("retrying request (attempt %d): %s", r->attempts, why);
		goc_run(r, PHASE_LOOKUP);
		return;
	}
	snprintf(msg, sizeof msg, "gave up after %d retries: %s", srv.cfg->retry_limit, why);
	finish_error(r, GOC_E_UNAVAILABLE, msg);
}

void goc_retry(struct req *r, const char *why)
{
	retry(r, why);
}

/*
 * SQLSTATEs that mean the table changed under a statement (dropped, a
 * column gone, a key column's type changed, a column's type renamed: the
 * SQL names it in its casts) when PostgreSQL raises them parsing the
 * statement again - and then the error points into it.  A value's own
 * input function raises the same codes and a few more ('nosuch'::regclass
 * is 42P01, an unknown regproc 42883, regtype 42704, a tsquery's syntax
 * 42601, a schema-qualified unknown name 3F000, a bad quoted name 42602),
 * pointing nowhere in the statement: that is the request's error.
 */
static bool schema_state(const char *state)
{
	return strcmp(state, "42P01") == 0 || strcmp(state, "42703") == 0 ||
	       strcmp(state, "42883") == 0 || strcmp(state, "42704") == 0;
}

static bool value_input_state(const char *state)
{
	return schema_state(state) || strcmp(state, "42601") == 0 || strcmp(state, "3F000") == 0 ||
	       strcmp(state, "42602") == 0;
}

static bool points_into_statement(const PGresult *res)
{
	return PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION) != NULL;
}

bool goc_schema_error(const PGresult *res)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (state == NULL)
		return false;
	if (strcmp(state, "42P10") == 0) /* no unique index fits ON CONFLICT: no value raises it */
		return true;
	return schema_state(state) && points_into_statement(res);
}

/*
 * An error gocd has no mapping for is logged, but at most once a second
 * per table, with a count of the rest: one that every request meets (a
 * revoked privilege: 42501; a read-only session: 25006) logged a line
 * per request, 15k lines a second under load.
 */
static void log_internal_error(struct table *t, const char *state, const char *primary)
{
	uint64_t now = gocd_now_ms();
	if (t->error_logged_ms != 0 && now - t->error_logged_ms < 1000) {
		t->errors_unlogged++;
		return;
	}
	if (t->errors_unlogged)
		log_warn("table \"%s\": PostgreSQL error %s: %s (and %u more errors answered "
			 "'internal' since the last one logged, %llu ms ago)", t->conf->name, state,
			 primary, t->errors_unlogged, (unsigned long long)(now - t->error_logged_ms));
	else
		log_warn("table \"%s\": PostgreSQL error %s: %s", t->conf->name, state, primary);
	t->error_logged_ms = now;
	t->errors_unlogged = 0;
}

static void on_sql_error(struct req *r, const PGresult *res)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
	const char *constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
	const char *column = PQresultErrorField(res, PG_DIAG_COLUMN_NAME);
	char msg[CODEC_MSG_MAX];

	if (state == NULL)
		state = "";
	if (primary == NULL)
		primary = PQresultErrorMessage(res);

	if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
	    strcmp(state, "57P01") == 0 || strcmp(state, "57P02") == 0 ||
	    strcmp(state, "57P03") == 0 || strncmp(state, "08", 2) == 0) {
		snprintf(msg, sizeof msg, "%s (SQLSTATE %s)", primary, state);
		retry(r, msg);
		return;
	}
	if (strncmp(state, "23", 2) == 0) {
		/* PostgreSQL's text usually names the constraint already. */
		bool named = constraint && strstr(primary, constraint) != NULL;
		snprintf(msg, sizeof msg, "%s%s%s%s", primary,
			 constraint && !named ? " (constraint " : "",
			 constraint && !named ? constraint : "", constraint && !named ? ")" : "");
		if (detail)
			snprintf(msg + strlen(msg), sizeof msg - strlen(msg), ": %s", detail);
		finish_error(r, GOC_E_CONSTRAINT_VIOLATION, msg);
		return;
	}
	if (strncmp(state, "22", 2) == 0 || strcmp(state, "428C9") == 0 ||
	    strcmp(state, "42804") == 0) {
		/* Usually the value; but a column whose type changed under gocd
		 * (ALTER ... TYPE) fails the same way, and nothing else would
		 * make gocd read the catalog again.  At most once a second. */
		if (strcmp(state, "428C9") != 0)
			catalog_recheck_hint(r->table);
		snprintf(msg, sizeof msg, "%s%s%s%s", primary, column ? " (column \"" : "",
			 column ? column : "", column ? "\")" : "");
		finish_error(r, GOC_E_INVALID_VALUE, msg);
		return;
	}
	if (value_input_state(state) && !points_into_statement(res)) {
		/* A value refused by its type's input function (see
		 * goc_schema_error).  A user's trigger failing the same way is
		 * this request's error too; a re-read of the catalog, at most
		 * once a second, covers a change this cannot tell apart. */
		if (schema_state(state))
			catalog_recheck_hint(r->table);
		snprintf(msg, sizeof msg, "%s (SQLSTATE %s)", primary, state);
		finish_error(r, GOC_E_INVALID_VALUE, msg);
		return;
	}
	if (strcmp(state, "57014") == 0) {
		/* statement_timeout is request_timeout, counted from the
		 * statement's start: when it fires, r's deadline has passed.
		 * Before that the cancel came from elsewhere (pg_cancel_backend:
		 * an administrator, a tool that cancels long queries), and the
		 * statement - or the commit, in its deferred triggers - rolled
		 * back: nothing was written, so r runs again. */
		snprintf(msg, sizeof msg, "%s (SQLSTATE %s)", primary, state);
		if (gocd_now_ms() < r->started_ms + (uint64_t)srv.cfg->request_timeout) {
			retry(r, msg);
			return;
		}
		snprintf(msg, sizeof msg, "statement cancelled by statement_timeout: %s", primary);
		finish_error(r, GOC_E_TIMEOUT, msg);
		return;
	}
	if (strcmp(state, "42883") == 0 || strcmp(state, "42704") == 0) {
		/* No operator for our SQL's types, or a type our casts name is
		 * gone: a column's type changed or was renamed under gocd.  Read
		 * the catalog again, and the SQL is rebuilt for the new types. */
		catalog_recheck_hint(r->table);
		snprintf(msg, sizeof msg, "%s (SQLSTATE %s); re-reading the table's definition, "
			 "send it again", primary, state);
		finish_error(r, GOC_E_UNAVAILABLE, msg);
		return;
	}
	if (strcmp(state, "42P01") == 0 || strcmp(state, "42703") == 0 ||
	    strcmp(state, "42P10") == 0) {
		/* The schema changed under us (table dropped, column gone, key
		 * index dropped): stop serving the table rather than run without
		 * the guarantee, and read the catalog again. */
		snprintf(msg, sizeof msg, "table \"%s\" changed under gocd and is not served until it "
			 "checks out again: %s (SQLSTATE %s)", r->table->conf->name, primary, state);
		table_invalidate(r->table, msg);
		catalog_recheck(r->table);
		finish_error(r, GOC_E_UNAVAILABLE, msg);
		return;
	}
	if (strncmp(state, "54", 2) == 0) {
		/* program limit exceeded: a value too large for its index, say */
		snprintf(msg, sizeof msg, "%s (SQLSTATE %s)", primary, state);
		finish_error(r, GOC_E_INVALID_VALUE, msg);
		return;
	}
	if (strncmp(state, "53", 2) == 0) {
		snprintf(msg, sizeof msg, "PostgreSQL is out of resources: %s (SQLSTATE %s)", primary, state);
		finish_error(r, GOC_E_UNAVAILABLE, msg);
		return;
	}
	/* "Object not in prerequisite state" is many things, among them ON
	 * CONFLICT meeting a deferrable unique constraint on the key created
	 * since the catalog was read: the catalog check refuses that table
	 * with the fix, so read it again (at most once a second). */
	if (strcmp(state, "55000") == 0)
		catalog_recheck_hint(r->table);
	log_internal_error(r->table, state, primary);
	snprintf(msg, sizeof msg, "PostgreSQL error %s: %s", state, primary);
	finish_error(r, GOC_E_INTERNAL, msg);
}

void goc_sql_error(struct req *r, const struct pg_result *res)
{
	on_sql_error(r, res);
}

static void on_result(struct pgjob *job, const PGresult *res,
		      enum pgjob_outcome outcome, const char *msg)
{
	struct req *r = REQ_OF(job, job);
	char buf[CODEC_MSG_MAX];

	switch (outcome) {
	case PGJOB_UNAVAILABLE:
		snprintf(buf, sizeof buf, "PostgreSQL is unavailable: %s", msg);
		finish_error(r, GOC_E_UNAVAILABLE, buf);
		return;
	case PGJOB_CONN_LOST:
		/* Every step is safe to re-run: a lookup is read-only, and an
		 * insert that did commit is found by the re-run's lookup. */
		retry(r, msg);
		return;
	case PGJOB_SQL_ERROR:
		on_sql_error(r, res);
		return;
	case PGJOB_OK:
		break;
	}

	bool have = PQntuples(res) > 0 && !PQgetisnull(res, 0, 0);
	const char *row = have ? PQgetvalue(res, 0, 0) : NULL;
	size_t len = have ? (size_t)PQgetlength(res, 0, 0) : 0;

	switch (r->step) {
	case STEP_SELECT:
		if (have)
			finish_row(r, row, len, false);
		else if (r->in.op == GOC_OP_GET)
			finish_row(r, NULL, 0, false);
		else
			submit_insert(r);
		return;
	case STEP_INSERT:
		/* Nothing is answered before the commit is confirmed. */
		goc_hold(r, row, len, have,
			 have && PQnfields(res) > 1 ? PQgetvalue(res, 0, 1) : "", job->life);
		return;
	case STEP_RESELECT:
		if (have)
			finish_row(r, row, len, false);
		else if (++r->rounds >= MAX_ROUNDS)
			finish_error(r, GOC_E_INTERNAL,
				     ROW_NOT_READ_BACK);
		else
			submit_insert(r);
		return;
	default:
		log_error("result for a request in step %d", (int)r->step);
		finish_error(r, GOC_E_INTERNAL, "internal state error");
		return;
	}
}

void goc_hold(struct req *r, const char *row, size_t len, bool created, const char *xid,
	      const char *life)
{
	free(r->held_row);
	r->held_row = NULL;
	r->held_len = len;
	if (row) {
		r->held_row = malloc(len + 1);
		if (r->held_row == NULL)
			abort();
		memcpy(r->held_row, row, len);
		r->held_row[len] = '\0';
	}
	r->held = true;
	r->held_created = created;
	snprintf(r->xid, sizeof r->xid, "%s", xid ? xid : "");
	snprintf(r->life, sizeof r->life, "%s", life && xid && *xid ? life : "");
}

/* Answer with the held row; r may be freed. */
static void deliver_held(struct req *r)
{
	char *row = r->held_row;
	r->held_row = NULL;
	r->held = false;
	finish_row(r, row, r->held_len, r->held_created);
	free(row);
}

static void drop_held(struct req *r)
{
	free(r->held_row);
	r->held_row = NULL;
	r->held = false;
	r->xid[0] = '\0';
	r->life[0] = '\0';
}

static void on_xact(struct pgjob *job, const PGresult *res,
		    enum pgjob_outcome outcome, const char *msg);

static void xact_prepare(struct req *r);

static void xact_check(struct req *r)
{
	struct pgjob *j = &r->job;
	const struct table *t = r->table;
	/* Unless the key's row cannot be looked up by this request's columns
	 * any more (a table merely out of service still can): then the status
	 * alone, which can only rule a commit out. */
	bool lookup = r->xact_sql != NULL ||
		      (r->layout == t->layout && t->cols != NULL && t->qname != NULL);
	if (lookup)
		xact_prepare(r);
	r->xid_param = r->xid;
	j->stmt = -1;
	j->sql = lookup ? r->xact_sql
			: "SELECT pg_catalog.pg_xact_status($1::xid8)::text, NULL::boolean, " PGPOOL_LIFE_SQL;
	j->nparams = lookup ? 1 + r->nkey_params : 1;
	j->params = lookup ? r->xact_params : &r->xid_param;
	j->done = on_xact;
	j->hold_commit = false;
	r->step = STEP_XACT;
	if (pgpool_submit(j, true) != 0) {
		r->step = STEP_XACT_WAIT;
		TAILQ_INSERT_TAIL(&xact_wait, r, xact_link);
	}
}

/* The status check's SQL and parameters, built once per request. */
static void xact_prepare(struct req *r)
{
	if (r->xact_sql == NULL) {
		const struct table_conf *tc = r->table->conf;
		bool isnull[32];
		for (int i = 0; i < tc->ncols; i++)
			isnull[i] = r->params[i] == NULL;
		r->xact_sql = table_sql_xact(r->table, isnull);
		r->xact_params = malloc(sizeof *r->xact_params * (size_t)(1 + r->nkey_params));
		if (r->xact_params == NULL)
			abort();
		r->xact_params[0] = r->xid;
		memcpy(r->xact_params + 1, r->select_params, sizeof *r->xact_params * (size_t)r->nkey_params);
	}
}

static void on_xact(struct pgjob *job, const PGresult *res,
		    enum pgjob_outcome outcome, const char *msg)
{
	struct req *r = REQ_OF(job, job);
	char buf[CODEC_MSG_MAX];
	(void)msg;

	if (outcome == PGJOB_CONN_LOST || outcome == PGJOB_UNAVAILABLE) {
		r->step = STEP_XACT_WAIT;
		TAILQ_INSERT_TAIL(&xact_wait, r, xact_link);
		return;
	}
	if (outcome == PGJOB_SQL_ERROR) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (state && strcmp(state, "22023") == 0) {
			/* "transaction ID is in the future": the server came back
			 * from a crash without the transaction in its WAL, so it
			 * never committed (nothing of it survived). */
			log_info("insert whose commit was cut off (transaction %s): lost in the crash",
				 r->xid);
			drop_held(r);
			retry(r, "the connection was lost during the commit, which did not survive");
			return;
		}
		if (state && strcmp(state, "57014") == 0 && !r->answered) {
			/* The check itself was cancelled (pg_cancel_backend: an
			 * administrator, a tool cancelling queries that wait on a
			 * lock) before the deadline: it only reads, so ask again,
			 * rather than answer timeout for a commit that may have
			 * happened.  The deadline still ends it (goc_tick). */
			r->xact_due_ms = gocd_now_ms() + 20;
			r->step = STEP_XACT_WAIT;
			TAILQ_INSERT_TAIL(&xact_wait, r, xact_link);
			return;
		}
		drop_held(r);
		const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
		snprintf(buf, sizeof buf, "the connection was lost during the commit, and whether "
			 "it happened cannot be learned: %s", primary ? primary : PQresultErrorMessage(res));
		finish_error(r, GOC_E_TIMEOUT, buf);
		return;
	}
	const char *st = PQgetisnull(res, 0, 0) ? NULL : PQgetvalue(res, 0, 0);
	bool committed = st && strcmp(st, "committed") == 0;
	bool ours = !PQgetisnull(res, 0, 1) && PQgetvalue(res, 0, 1)[0] == 't';
	/* The same server life, or the id may name another transaction: one
	 * that got it after a crash lost ours, and may have inserted this
	 * very key (then it has xmin and status both).  A server that names
	 * no life proves nothing. */
	bool same_life = r->life[0] && !PQgetisnull(res, 0, 2) &&
			 strcmp(PQgetvalue(res, 0, 2), r->life) == 0;
	bool in_progress = st && strcmp(st, "in progress") == 0;
	/* "in progress" once, not at every ask */
	enum log_level level = in_progress && r->xact_waits > 0 ? LOG_DEBUG : LOG_INFO;
	if (log_min_level <= level)
		log_msg(level, "insert whose commit was cut off (transaction %s): %s%s%s", r->xid,
			st ? st : "unknown",
			committed && !ours ? ", but the key's row is not its insert" :
			committed && !same_life ? ", but PostgreSQL crashed, restarted or failed over since" : "",
			r->answered ? " (its request was answered timeout already)" : "");
	if (committed && ours && !same_life) {
		drop_held(r);
		finish_error(r, GOC_E_TIMEOUT, "the connection was lost during the commit, and whether "
			     "it happened cannot be confirmed (PostgreSQL crashed, restarted or failed over since, "
			     "and a transaction id lost in a crash is handed out again)");
	} else if (committed && ours) {
		deliver_held(r);
	} else if (committed && !PQgetisnull(res, 0, 1) && ++r->xact_rechecks < XACT_RECHECKS) {
		/* The row check ran on the statement's snapshot, taken before
		 * the status was read: a commit finishing in between reads as
		 * committed but not yet visible.  Ask again (a fresh snapshot). */
		r->step = STEP_XACT_WAIT;
		TAILQ_INSERT_TAIL(&xact_wait, r, xact_link);
	} else if (committed) {
		/* Either the id was handed out again after a crash (ours never
		 * committed) or our row was updated or deleted since - or the
		 * table changed so that the row cannot be looked up: either
		 * way nobody may be told created:true on this evidence. */
		drop_held(r);
		finish_error(r, GOC_E_TIMEOUT, "the connection was lost during the commit, and whether "
			     "it happened cannot be confirmed (the key's row is not the one inserted: "
			     "changed since, or the transaction id was reused after a crash)");
	} else if (st && strcmp(st, "aborted") == 0) {
		drop_held(r);
		retry(r, "the connection was lost during the commit, which did not happen");
	} else if (in_progress) {
		/* The old backend is still finishing: ask again, backing off, as
		 * a commit held up by a trigger or a lock can take as long as
		 * request_timeout, and a batch's requests each ask. */
		int shift = r->xact_waits < 6 ? r->xact_waits : 6;
		uint64_t due = gocd_now_ms() + (uint64_t)(10 << shift > 500 ? 500 : 10 << shift);
		/* but ask once more just before the deadline (a time already
		 * past is due at once): a commit that finishes then is still
		 * learned, not answered timeout */
		uint64_t last = r->started_ms + (uint64_t)srv.cfg->request_timeout - XACT_LAST_ASK_MS;
		r->xact_waits++;
		r->xact_due_ms = due < last ? due : last;
		r->step = STEP_XACT_WAIT;
		TAILQ_INSERT_TAIL(&xact_wait, r, xact_link);
	} else {
		drop_held(r);
		finish_error(r, GOC_E_TIMEOUT, "the connection was lost during the commit, and whether "
			     "it happened cannot be learned (the transaction is too old for pg_xact_status)");
	}
}

void goc_tick(void)
{
	struct req *r, *next;
	int n = 0;
	uint64_t now = gocd_now_ms();
	for (r = TAILQ_FIRST(&xact_wait); r; r = next) {
		next = TAILQ_NEXT(r, xact_link);
		if (r->answered) {
			/* Its deadline passed and it had its timeout answer: it
			 * stops asking and lets go of its key, or every later
			 * request for the key would wait behind a check that may
			 * never end (a backend that stays "in progress",
			 * PostgreSQL down).  A retry settles the row. */
			TAILQ_REMOVE(&xact_wait, r, xact_link);
			drop_held(r);
			finish_error(r, GOC_E_TIMEOUT, "");
		} else if (r->xact_due_ms <= now && n < 1000 && !pgpool_all_down()) {
			TAILQ_REMOVE(&xact_wait, r, xact_link);
			xact_check(r); /* queued only: nothing else leaves the list meanwhile */
			n++;
		}
	}
}

void goc_commit_outcome(struct req *r, int outcome, const PGresult *res, const char *msg)
{
	switch ((enum pgjob_outcome)outcome) {
	case PGJOB_OK:
		if (r->held_row) {
			deliver_held(r);
		} else {
			drop_held(r); /* lost the race to another writer: read its row */
			goc_run(r, PHASE_RESELECT);
		}
		return;
	case PGJOB_SQL_ERROR:
		drop_held(r);
		on_sql_error(r, res);
		return;
	case PGJOB_CONN_LOST:
	case PGJOB_UNAVAILABLE:
		if (r->held_row && r->xid[0]) {
			/* A row this transaction inserted - for r, or in a batch
			 * for another spelling of r's key (then r holds it with
			 * created=false): it exists only if the commit happened. */
			r->xact_rechecks = 0;
			r->xact_waits = 0;
			r->xact_due_ms = 0;
			xact_check(r);
		} else if (r->held_row) {
			deliver_held(r); /* an existing row: its commit was not ours */
		} else {
			drop_held(r);
			retry(r, msg);
		}
		return;
	}
}

static void on_committed(struct pgjob *job, const PGresult *res,
			 enum pgjob_outcome outcome, const char *msg)
{
	goc_commit_outcome(REQ_OF(job, job), outcome, res, msg);
}

void goc_start(struct req *r)
{
	struct table *t = table_find(r->in.table);
	if (t == NULL) {
		req_answer_error(r, GOC_E_UNKNOWN_TABLE,
				 "table \"%.64s\" is not served by this gocd", r->in.table);
		return;
	}
	if (!t->ready) {
		req_answer_error(r, GOC_E_UNAVAILABLE, "%s", t->error);
		return;
	}
	r->table = t;
	if (prepare(r, t) != 0)
		return;
	req_compact(r);

	/* A get takes the key too: one that a client pipelines after a
	 * get_or_create of the same key must see that request's row. */
	r->busy = true;
	switch (locktab_acquire(&r->lock, r->lockkey, r->lockkey_len, srv.cfg->max_waiters)) {
	case LOCK_OWNED:
		break;
	case LOCK_QUEUED:
		r->step = STEP_WAITING;
		return;
	case LOCK_FULL:
		r->busy = false;
		req_answer_error(r, GOC_E_OVERLOADED,
				 "%d requests already wait on this key (max_waiters)",
				 srv.cfg->max_waiters);
		return;
	}
	goc_run(r, PHASE_LOOKUP);
}

void goc_on_timeout(struct req *r)
{
	if (r->step == STEP_XACT_WAIT) {
		/* PostgreSQL stayed away too long to learn the outcome. */
		TAILQ_REMOVE(&xact_wait, r, xact_link);
		drop_held(r);
		release_to_next(r);
		r->step = STEP_NONE;
		r->busy = false;
		return;
	}
	if (r->step == STEP_WAITING) {
		locktab_cancel(&r->lock);
		r->step = STEP_NONE;
		r->busy = false;
		return;
	}
	/* Still queued for a connection: it is answered timeout now, and no
	 * statement may start for it after that (see goc_answered_already) - it would
	 * create a row nobody is told created:true.  Dropped; a waiter behind
	 * it runs its own request.  That includes a half of a split batch
	 * waiting in the pool's queue (STEP_BATCH). */
	if (r->busy && (batch_cancel(r) || (r->job.queued && pgpool_cancel(&r->job)))) {
		release_to_next(r);
		r->step = STEP_NONE;
		r->busy = false;
	}
}
