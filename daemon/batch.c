/*
 * batch.c - the batcher: the pool's source of work.
 *
 * Requests queue here per shape; at the end of each loop turn (pgpool's
 * pump) a free connection asks batch_next() for work and gets the oldest
 * shape's queue, up to batch_max requests, as one statement (see
 * table_sql_batch_goc for the SQL and why it is safe).  A queue holding a
 * single request is sent as the plain single-row flow, so light load pays
 * nothing for batching.  Two measured refinements: while most lookups of
 * a table miss, get_or_create skips the lookup batch (batch_skip_lookup),
 * and a shape has one insert batch in flight at a time, for a while
 * (INSERT_GATE_MS).
 *
 * Failure isolation: a batch statement is atomic, so when it fails nothing
 * of it was written.  A failure that is not retryable is bisected: each
 * half is sent again on its own, until the failing request is alone and
 * gets its own error; the rest succeed.
 *
 * Owns: shapes, queues and in-flight batch structs.
 * Must never: answer a client directly or touch the lock table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "goc.h"
#include "gocd.h"
#include "log.h"
#include "pgpool.h"
#include "req.h"
#include "table.h"

#define MAX_SHAPES 1024
#define SHAPE_BUCKETS 256
/* Beyond: send SQL text instead of preparing.  Every pool connection
 * prepares each statement it runs, at about 75 KB of backend memory
 * apiece (a client cycling through 30k sets of defaults grew each backend
 * to 310 MB at 4096); normal use needs a handful per table. */
#define MAX_STATEMENTS 512
/* How long an insert batch in flight holds back the next one of its shape
 * (see batch_next); past this it is probably waiting on a row lock of
 * someone else's, and the rest must not queue behind it. */
#define INSERT_GATE_MS 20

struct shape {
	struct shape *hnext;
	TAILQ_ENTRY(shape) ready_link;
	TAILQ_ENTRY(shape) lru_link; /* bt.lru: least recently queued first */
	int live;               /* batches built on it and not yet freed, or
				 * a drain in progress: not to be evicted */
	bool ready;             /* on the ready list (queue non-empty) */
	TAILQ_HEAD(, req) q;
	int n;
	int table;
	unsigned layout;        /* table layout defcols refer to */
	bool select_only;
	int ndef;
	int *defcols;
	uint64_t hash;
	unsigned gen;           /* table generation the SQL was built for */
	int stmt;               /* registered statement, or -1 with sql */
	char *sql;
	int inserting;          /* insert batches sent, results not yet read */
	uint64_t insert_sent_ms; /* when the last one was sent */
};

struct batch {
	struct pgjob job;
	TAILQ_ENTRY(batch) link; /* bt.live: built and not yet freed */
	struct shape *s;
	int n;
	struct req **reqs;
	char **arrays;
	char *sql;         /* own copy of unprepared SQL: the shape's may be
			    * rebuilt while this batch waits in the pool queue */
};

static struct {
	int batch_max;
	int insert_batches;  /* insert batches of one shape in flight (within INSERT_GATE_MS) */
	struct shape *buckets[SHAPE_BUCKETS];
	int nshapes;
	TAILQ_HEAD(, shape) ready;
	TAILQ_HEAD(, shape) lru;
	/* Every batch not yet freed.  One whose rows all existed has
	 * answered everyone and waits only for its commit's result: if gocd
	 * stops then, nothing else would free it. */
	TAILQ_HEAD(, batch) live;
	int queued;
	int deferring;   /* >0: don't kick the pool per enqueue */
	unsigned long long batches, keys, splits;
} bt;

static struct pgjob *batch_next(void);
static void batch_fail_all(const char *why);
static void on_batch(struct pgjob *job, const PGresult *res,
		     enum pgjob_outcome outcome, const char *msg);
static void on_batch_committed(struct pgjob *job, const PGresult *res,
			       enum pgjob_outcome outcome, const char *msg);

void batch_set_max(int batch_max, int insert_batches)
{
	bt.batch_max = batch_max;
	bt.insert_batches = insert_batches;
}

void batch_init(int batch_max, int insert_batches)
{
	bt.batch_max = batch_max;
	bt.insert_batches = insert_batches;
	TAILQ_INIT(&bt.ready);
	TAILQ_INIT(&bt.lru);
	TAILQ_INIT(&bt.live);
	pgpool_set_source(batch_next, batch_fail_all);
}

static void batch_free(struct batch *b);

void batch_free_all(void)
{
	/* After the loop stopped: no pool callback can reach these any more. */
	while (!TAILQ_EMPTY(&bt.live))
		batch_free(TAILQ_FIRST(&bt.live));
	for (int i = 0; i < SHAPE_BUCKETS; i++) {
		struct shape *s = bt.buckets[i], *n;
		for (; s; s = n) {
			n = s->hnext;
			free(s->defcols);
			free(s->sql);
			free(s);
		}
		bt.buckets[i] = NULL;
	}
	TAILQ_INIT(&bt.lru);
	bt.nshapes = 0;
}

static uint64_t shape_hash(int table, bool sel, const int *cols, int n)
{
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)table ^ ((uint64_t)sel << 40);
	for (int i = 0; i < n; i++) {
		h ^= (uint64_t)cols[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/*
 * Bounded memory without a one-way door: at MAX_SHAPES, the least recently
 * queued shape that nothing uses (no queue, no batch) makes room.  Without
 * this, one client cycling through default-column sets, or a few schema
 * changes (each leaves its table's old shapes behind), switched batching
 * off for every table until a restart.
 */
static bool shape_evict(void)
{
	struct shape *s;
	TAILQ_FOREACH(s, &bt.lru, lru_link)
		if (s->n == 0 && s->live == 0) /* (no batch: none inserting either) */
			break;
	if (s == NULL)
		return false;
	struct shape **p = &bt.buckets[s->hash % SHAPE_BUCKETS];
	while (*p != s)
		p = &(*p)->hnext;
	*p = s->hnext;
	TAILQ_REMOVE(&bt.lru, s, lru_link);
	free(s->defcols);
	free(s->sql);
	free(s);
	bt.nshapes--;
	return true;
}

static struct shape *shape_get(const struct req *r, bool sel)
{
	int nk = r->table->conf->ncols;
	int ndef = sel ? 0 : r->nparams - nk;
	const int *defcols = r->param_cols + nk;
	uint64_t h = shape_hash(r->table->idx, sel, defcols, ndef);
	struct shape **b = &bt.buckets[h % SHAPE_BUCKETS];

	for (struct shape *s = *b; s; s = s->hnext)
		if (s->hash == h && s->table == r->table->idx && s->layout == r->layout &&
		    s->select_only == sel &&
		    s->ndef == ndef && memcmp(s->defcols, defcols, sizeof *defcols * (size_t)ndef) == 0) {
			TAILQ_REMOVE(&bt.lru, s, lru_link);
			TAILQ_INSERT_TAIL(&bt.lru, s, lru_link);
			return s;
		}
	if (bt.nshapes >= MAX_SHAPES && !shape_evict())
		return NULL; /* every shape busy: this one goes alone */
	struct shape *s = calloc(1, sizeof *s);
	if (s == NULL)
		abort();
	s->defcols = malloc(sizeof *defcols * (size_t)(ndef ? ndef : 1));
	if (s->defcols == NULL)
		abort();
	memcpy(s->defcols, defcols, sizeof *defcols * (size_t)ndef);
	s->ndef = ndef;
	s->table = r->table->idx;
	s->layout = r->layout;
	s->select_only = sel;
	s->hash = h;
	s->stmt = -1;
	TAILQ_INIT(&s->q);
	s->hnext = *b;
	*b = s;
	TAILQ_INSERT_TAIL(&bt.lru, s, lru_link);
	bt.nshapes++;
	return s;
}

/*
 * Fold a batch's lookups (first-time get_or_create lookups only: re-reads
 * and gets say nothing about how often keys are new) into the table's
 * miss rate; a batch of 32 or more replaces it.
 */
static void note_lookups(struct table *t, int lookups, int misses)
{
	if (lookups == 0)
		return;
	float w = lookups >= 32 ? 1.0f : (float)lookups / 32.0f;
	t->miss_rate += ((float)misses / (float)lookups - t->miss_rate) * w;
}

static bool first_lookup(const struct req *r)
{
	return r->phase == PHASE_LOOKUP && r->in.op == GOC_OP_GET_OR_CREATE;
}

bool batch_skip_lookup(const struct req *r)
{
	return first_lookup(r) && !r->lookup_first && r->table->miss_rate > 0.5f;
}

int batch_enqueue(struct req *r, bool select_only)
{
	struct shape *s = shape_get(r, select_only);
	if (s == NULL)
		return -1;
	TAILQ_INSERT_TAIL(&s->q, r, batch_link);
	s->n++;
	bt.queued++;
	r->shape = s;
	r->step = STEP_QUEUED;
	if (!s->ready) {
		s->ready = true;
		TAILQ_INSERT_TAIL(&bt.ready, s, ready_link);
	}
	if (bt.deferring == 0)
		pgpool_kick();
	return 0;
}

/* Take r out of its shape's queue; an emptied shape leaves the ready list. */
static void shape_remove(struct shape *s, struct req *r)
{
	TAILQ_REMOVE(&s->q, r, batch_link);
	s->n--;
	bt.queued--;
	r->shape = NULL;
	if (s->n == 0 && s->ready) {
		s->ready = false;
		TAILQ_REMOVE(&bt.ready, s, ready_link);
	}
}

static struct req *shape_pop(struct shape *s)
{
	struct req *r = TAILQ_FIRST(&s->q);
	if (r != NULL)
		shape_remove(s, r);
	return r;
}

/* Answer every request queued in s 'unavailable'. */
static void shape_fail(struct shape *s, const char *why)
{
	struct req *r;
	s->live++; /* an answer can queue a waiter in a new shape:
		    * this one must not be evicted meanwhile */
	while ((r = shape_pop(s)) != NULL)
		goc_finish_error(r, GOC_E_UNAVAILABLE, why);
	s->live--;
}


/*
 * PostgreSQL array literal of one column across the batch: {"a","b\"c",NULL}.
 * Measured first, then written into one allocation: this runs for every
 * batch, and an evbuffer cost an allocation per chain plus a call per
 * piece.
 */
static char *array_literal(struct req **reqs, int n, int col)
{
	size_t len = 3; /* { } NUL */
	for (int i = 0; i < n; i++) {
		const char *v = reqs[i]->params[col];
		len += 1; /* comma */
		if (v == NULL) {
			len += 4;
			continue;
		}
		len += 2;
		for (const char *p = v; *p; p++)
			len += 1 + (*p == '"' || *p == '\\');
	}
	char *s = malloc(len);
	if (s == NULL)
		abort();
	char *w = s;
	*w++ = '{';
	for (int i = 0; i < n; i++) {
		const char *v = reqs[i]->params[col];
		if (i)
			*w++ = ',';
		if (v == NULL) {
			memcpy(w, "NULL", 4);
			w += 4;
			continue;
		}
		*w++ = '"';
		for (const char *p = v; *p; p++) {
			if (*p == '"' || *p == '\\')
				*w++ = '\\';
			*w++ = *p;
		}
		*w++ = '"';
	}
	*w++ = '}';
	*w = '\0';
	return s;
}

static bool shape_sql(struct shape *s, struct table *t)
{
	if (s->gen == t->gen && (s->stmt >= 0 || s->sql))
		return true;
	free(s->sql);
	s->sql = s->select_only ? table_sql_batch_select(t)
				: table_sql_batch_goc(t, s->defcols, s->ndef);
	s->stmt = -1;
	/* Counted in distinct texts: a rebuild after a catalog re-read
	 * usually gives the same text, and the same statement - which is
	 * found even once no new one may be added. */
	s->stmt = pgpool_statement_count() < MAX_STATEMENTS ? pgpool_statement(s->sql)
							    : pgpool_statement_find(s->sql);
	s->gen = t->gen;
	return true;
}

/* Build a batch job over reqs (takes ownership of the array). */
static struct batch *batch_build(struct shape *s, struct req **reqs, int n)
{
	struct table *t = tables[s->table];
	int ncols = t->conf->ncols + s->ndef;
	struct batch *b = calloc(1, sizeof *b);
	if (b == NULL)
		abort();
	TAILQ_INSERT_TAIL(&bt.live, b, link);
	b->s = s;
	s->live++;
	b->n = n;
	b->reqs = reqs;
	b->arrays = malloc(sizeof *b->arrays * (size_t)ncols);
	if (b->arrays == NULL)
		abort();
	for (int c = 0; c < ncols; c++)
		b->arrays[c] = array_literal(reqs, n, c);
	shape_sql(s, t);
	b->job.stmt = s->stmt;
	if (s->stmt < 0) {
		b->sql = strdup(s->sql);
		if (b->sql == NULL)
			abort();
	}
	b->job.sql = b->sql;
	b->job.nparams = ncols;
	b->job.params = (const char *const *)b->arrays;
	b->job.done = on_batch;
	/* An inserting batch reads its rows before committing, so a commit
	 * cut off by a lost connection can be resolved (goc_commit_outcome). */
	b->job.hold_commit = !s->select_only;
	b->job.committed = on_batch_committed;
	if (!s->select_only) {
		s->inserting++;
		s->insert_sent_ms = gocd_now_ms();
	}
	for (int i = 0; i < n; i++)
		reqs[i]->step = STEP_BATCH;
	bt.batches++;
	bt.keys += (unsigned long long)n;
	return b;
}

/* A batch built but never sent (or handed back unsent): it inserts nothing. */
static void batch_unsent(struct batch *b)
{
	if (!b->s->select_only)
		b->s->inserting--;
}

static void batch_free(struct batch *b)
{
	TAILQ_REMOVE(&bt.live, b, link);
	b->s->live--;
	int ncols = tables[b->s->table]->conf->ncols + b->s->ndef;
	for (int c = 0; c < ncols; c++)
		free(b->arrays[c]);
	free(b->arrays);
	free(b->reqs);
	free(b->sql);
	free(b);
}

/*
 * r is in a half of a failed batch that waits in the pool's queue (see
 * split): take it out, so that no statement starts for it after its
 * timeout answer (goc_answered_already says why).  The others keep their
 * place; an emptied half leaves the queue.  Only a queued batch is
 * searched: every request in it is still alive (a sent one may hold
 * requests answered and freed since).
 */
static bool batch_drop_queued(struct req *r)
{
	struct batch *b;
	int i = 0;
	TAILQ_FOREACH(b, &bt.live, link) {
		if (!b->job.queued)
			continue;
		for (i = 0; i < b->n && b->reqs[i] != r; i++)
			;
		if (i < b->n)
			break;
	}
	if (b == NULL)
		return false;
	memmove(b->reqs + i, b->reqs + i + 1, sizeof *b->reqs * (size_t)(b->n - i - 1));
	b->n--;
	if (b->n == 0) {
		pgpool_cancel(&b->job);
		batch_unsent(b);
		batch_free(b);
		return true;
	}
	/* The statement takes arrays of any length: only they change. */
	int ncols = tables[b->s->table]->conf->ncols + b->s->ndef;
	for (int c = 0; c < ncols; c++) {
		free(b->arrays[c]);
		b->arrays[c] = array_literal(b->reqs, b->n, c);
	}
	return true;
}

bool batch_cancel(struct req *r)
{
	if (r->step == STEP_BATCH)
		return batch_drop_queued(r);
	if (r->shape == NULL || r->step != STEP_QUEUED)
		return false;
	shape_remove(r->shape, r);
	return true;
}

static struct pgjob *batch_next(void)
{
	struct shape *s, *next;
	for (s = TAILQ_FIRST(&bt.ready); s != NULL; s = next) {
		next = TAILQ_NEXT(s, ready_link);
		struct table *t = tables[s->table];
		const char *why = table_unusable(t, s->layout);
		if (why != NULL) {
			/* The table stopped being safe, or its columns moved,
			 * while these queued. */
			bt.deferring++;
			shape_fail(s, why);
			bt.deferring--;
			next = TAILQ_FIRST(&bt.ready);
			continue;
		}
		/*
		 * insert_batches (default 1) insert batches of a shape at a
		 * time: the next one waits for the rows of one in flight (and
		 * grows meanwhile), then goes out on the same connection right
		 * behind its commit.  Measured at 64 clients on 2 cores,
		 * sharing them with PostgreSQL: one at a time did 66-73k req/s
		 * on sequential new keys and 63k on random ones; without the
		 * limit, 51-58k and 54k (more, smaller batches, and backends
		 * fighting over index pages).
		 */
		if (!s->select_only && s->inserting >= bt.insert_batches &&
		    gocd_now_ms() - s->insert_sent_ms < INSERT_GATE_MS)
			continue;
		/* Alone, a request runs the plain statements (no batch SQL),
		 * except a lookup sent here because most keys are new: the
		 * insert batch does in one round trip what the plain flow
		 * does in two.  Inserts into a table found to have a BEFORE
		 * INSERT trigger since they queued go alone too (see goc_run). */
		if ((s->n == 1 && (s->select_only || TAILQ_FIRST(&s->q)->phase != PHASE_LOOKUP)) ||
		    (!s->select_only && t->insert_trigger)) {
			struct req *r = shape_pop(s);
			return goc_single_job(r, (enum goc_phase)r->phase);
		}
		int n = s->n < bt.batch_max ? s->n : bt.batch_max;
		struct req **reqs = malloc(sizeof *reqs * (size_t)n);
		if (reqs == NULL)
			abort();
		for (int i = 0; i < n; i++)
			reqs[i] = shape_pop(s);
		/* Round-robin between shapes: a busy shape goes to the back. */
		if (s->ready) {
			TAILQ_REMOVE(&bt.ready, s, ready_link);
			TAILQ_INSERT_TAIL(&bt.ready, s, ready_link);
		}
		return &batch_build(s, reqs, n)->job;
	}
	return NULL;
}

static void batch_fail_all(const char *why)
{
	struct shape *s;
	char msg[512];
	snprintf(msg, sizeof msg, "PostgreSQL is unavailable: %s", why);
	bt.deferring++;
	while ((s = TAILQ_FIRST(&bt.ready)) != NULL)
		shape_fail(s, msg);
	bt.deferring--;
}

static bool retryable(const char *state)
{
	return strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
	       strcmp(state, "57P01") == 0 || strcmp(state, "57P02") == 0 ||
	       strcmp(state, "57P03") == 0 || strncmp(state, "08", 2) == 0;
}

/* Alone: the plain flow, which maps its own error, at the queue's head. */
static void run_alone(struct req *r)
{
	if (pgpool_submit(goc_single_job(r, (enum goc_phase)r->phase), true) != 0)
		goc_finish_error(r, GOC_E_UNAVAILABLE, "PostgreSQL is unavailable");
}

/*
 * A failed batch, which wrote nothing, about to be sent again in some form:
 * keep only the requests that may still run.  If the table changed so that
 * its SQL cannot be rebuilt for them, all are answered; a request answered
 * timeout meanwhile is not sent again.  Returns how many are left (b->n).
 */
static int keep_runnable(struct batch *b)
{
	const char *why = table_unusable(tables[b->s->table], b->s->layout);
	int kept = 0;
	for (int i = 0; i < b->n; i++) {
		if (why != NULL)
			goc_finish_error(b->reqs[i], GOC_E_UNAVAILABLE, why);
		else if (!goc_answered_already(b->reqs[i]))
			b->reqs[kept++] = b->reqs[i];
	}
	b->n = kept;
	return kept;
}

/* Send both halves of a failed batch on their own, at the queue's head. */
static void split(struct batch *b)
{
	if (keep_runnable(b) <= 1) {
		if (b->n == 1)
			run_alone(b->reqs[0]);
		return;
	}
	int h = b->n / 2;
	struct req **lo = malloc(sizeof *lo * (size_t)h);
	struct req **hi = malloc(sizeof *hi * (size_t)(b->n - h));
	if (lo == NULL || hi == NULL)
		abort();
	memcpy(lo, b->reqs, sizeof *lo * (size_t)h);
	memcpy(hi, b->reqs + h, sizeof *hi * (size_t)(b->n - h));
	bt.splits++;
	struct batch *parts[2] = {batch_build(b->s, lo, h), batch_build(b->s, hi, b->n - h)};
	for (int p = 0; p < 2; p++) {
		struct batch *x = parts[p];
		if (x->n == 1) {
			struct req *r = x->reqs[0];
			x->reqs[0] = NULL;
			x->n = 0;
			batch_unsent(x);
			batch_free(x);
			run_alone(r);
			continue;
		}
		if (pgpool_submit(&x->job, true) != 0) {
			for (int i = 0; i < x->n; i++)
				goc_finish_error(x->reqs[i], GOC_E_UNAVAILABLE, "PostgreSQL is unavailable");
			batch_unsent(x);
			batch_free(x);
		}
	}
}

/* The mark of table_sql_batch_goc's check, raised as a cast error. */
static bool key_rewritten(const PGresult *res)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	return state && strcmp(state, "22P02") == 0 && msg && strstr(msg, table_key_rewritten_mark());
}

/* The batch wrote nothing: each request not answered yet runs the plain
 * flow, whose INSERT ... RETURNING hands back its own row whatever key the
 * table stored it under. */
static void run_each_alone(struct batch *b)
{
	keep_runnable(b);
	for (int i = 0; i < b->n; i++)
		run_alone(b->reqs[i]);
}

/*
 * Failures of the statement as a whole, that no single request caused:
 * splitting would only run the halves into them again.  A statement
 * timeout (a key blocked by someone else's open transaction: every request
 * in the batch is past request_timeout by then) would hold a connection
 * for another timeout per level; a changed table fails every half.
 */
static bool whole_statement(const PGresult *res)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	/* 25006: a read-only session (default_transaction_read_only for the
	 * role, a standby): every half fails the same, 2n-1 statements. */
	return (state && (strcmp(state, "57014") == 0 || strcmp(state, "25006") == 0)) ||
	       goc_schema_error(res);
}

/*
 * A read-only session (25006: a role or database with
 * default_transaction_read_only, a standby) refused an insert batch.  Its
 * requests that skipped their lookup (batch_skip_lookup: most keys were
 * new) may well have rows, which a lookup - all a hit is - finds: they
 * are looked up now, and only the keys that miss meet the refusal again,
 * on their own insert.  Otherwise every existing key was answered
 * 'internal' while the session stayed read-only, since a batch that fails
 * teaches the miss rate nothing and it stayed high.  The rest get the
 * error: the statement refuses them all alike (no split).
 */
static void read_only_refusal(struct batch *b, const PGresult *res)
{
	for (int i = 0; i < b->n; i++) {
		struct req *r = b->reqs[i];
		if (first_lookup(r) && !r->lookup_first) {
			r->lookup_first = true;
			goc_run(r, PHASE_LOOKUP);
		} else {
			goc_sql_error(r, res);
		}
	}
}

static void on_batch(struct pgjob *job, const PGresult *res,
		     enum pgjob_outcome outcome, const char *msg)
{
	struct batch *b = (struct batch *)job; /* job is the first member */
	bt.deferring++;
	if (!b->s->select_only)
		b->s->inserting--; /* results are in: the next insert batch may go */

	switch (outcome) {
	case PGJOB_OK: {
		if (b->job.hold_commit) {
			/* Keep each result until the commit is confirmed, except a
			 * row that existed before this statement (no xid: the f part
			 * of the SQL): someone else committed it, so it is answered
			 * now and leaves the batch. */
			int rows = PQntuples(res), lookups = 0, misses = 0;
			for (int i = 0; i < b->n; i++)
				goc_hold(b->reqs[i], NULL, 0, false, "", "");
			for (int i = 0; i < rows; i++) {
				int ord = atoi(PQgetvalue(res, i, 0));
				if (ord < 1 || ord > b->n)
					continue;
				goc_hold(b->reqs[ord - 1], PQgetvalue(res, i, 1),
					 (size_t)PQgetlength(res, i, 1), PQgetvalue(res, i, 2)[0] == 't',
					 PQgetisnull(res, i, 3) ? "" : PQgetvalue(res, i, 3), b->job.life);
			}
			int kept = 0;
			for (int i = 0; i < b->n; i++) {
				struct req *r = b->reqs[i];
				bool existing = r->held_row && !r->held_created && r->xid[0] == '\0';
				if (first_lookup(r)) {
					lookups++;
					misses += !existing;
				}
				if (existing)
					goc_commit_outcome(r, PGJOB_OK, NULL, NULL);
				else
					b->reqs[kept++] = r;
			}
			b->n = kept;
			note_lookups(tables[b->s->table], lookups, misses);
			bt.deferring--;
			return; /* the batch lives on until on_batch_committed */
		}
		bool *got = calloc((size_t)b->n, sizeof *got);
		if (got == NULL)
			abort();
		int rows = PQntuples(res), lookups = 0, misses = 0;
		for (int i = 0; i < b->n; i++)
			lookups += first_lookup(b->reqs[i]);
		for (int i = 0; i < rows; i++) {
			int ord = atoi(PQgetvalue(res, i, 0));
			if (ord < 1 || ord > b->n || got[ord - 1])
				continue; /* cannot happen: one row per input at most */
			got[ord - 1] = true;
			goc_finish_row(b->reqs[ord - 1], PQgetvalue(res, i, 1),
				       (size_t)PQgetlength(res, i, 1),
				       PQgetvalue(res, i, 2)[0] == 't');
		}
		for (int i = 0; i < b->n; i++)
			misses += !got[i] && first_lookup(b->reqs[i]);
		note_lookups(tables[b->s->table], lookups, misses);
		for (int i = 0; i < b->n; i++) {
			if (got[i])
				continue;
			if (b->s->select_only)
				goc_select_missed(b->reqs[i]);
			else
				goc_run(b->reqs[i], PHASE_RESELECT); /* lost a race: re-read */
		}
		free(got);
		break;
	}
	case PGJOB_SQL_ERROR: {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (key_rewritten(res)) {
			struct table *t = tables[b->s->table];
			if (!t->insert_trigger)
				log_warn("table \"%s\": an insert batch met a BEFORE INSERT row trigger "
					 "added since gocd read the catalog, or stored a row under a key no "
					 "request asked for; nothing was written, and its inserts now run one "
					 "request at a time", t->conf->name);
			t->insert_trigger = true;
			run_each_alone(b);
		} else if (state && retryable(state)) {
			for (int i = 0; i < b->n; i++)
				goc_retry(b->reqs[i], PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
		} else if (!b->s->select_only && state && strcmp(state, "25006") == 0) {
			read_only_refusal(b, res);
		} else if (whole_statement(res)) {
			if (!b->s->select_only && state && strcmp(state, "57014") == 0)
				/* An insert batch that waited out statement_timeout:
				 * a lock that blocks inserts and not reads (CREATE
				 * INDEX holds one for its whole build) or a key held
				 * by an open transaction.  Its lookups were skipped
				 * because most keys were new, and a failed batch
				 * teaches the miss rate nothing: existing keys timed
				 * out for as long as the lock stayed, where a lookup
				 * answers them at once.  Lookups first, then, until
				 * they miss again. */
				tables[b->s->table]->miss_rate = 0.0f;
			for (int i = 0; i < b->n; i++)
				goc_sql_error(b->reqs[i], res);
		} else if (b->n > 1) {
			log_debug("batch of %d failed (%s); splitting", b->n, state ? state : "?");
			split(b);
		} else {
			goc_sql_error(b->reqs[0], res);
		}
		break;
	}
	case PGJOB_CONN_LOST:
		for (int i = 0; i < b->n; i++)
			goc_retry(b->reqs[i], msg);
		break;
	case PGJOB_UNAVAILABLE:
		for (int i = 0; i < b->n; i++)
			goc_finish_error(b->reqs[i], GOC_E_UNAVAILABLE, msg);
		break;
	}
	batch_free(b);
	bt.deferring--;
	pgpool_kick();
}

static void on_batch_committed(struct pgjob *job, const PGresult *res,
			       enum pgjob_outcome outcome, const char *msg)
{
	struct batch *b = (struct batch *)job;
	bt.deferring++;
	if (outcome == PGJOB_SQL_ERROR && b->n > 1) {
		/* The commit itself failed (a deferred constraint): nothing was
		 * written; find the culprit as for a failed statement. */
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		for (int i = 0; i < b->n; i++)
			goc_hold(b->reqs[i], NULL, 0, false, "", "");
		if (state && retryable(state))
			for (int i = 0; i < b->n; i++)
				goc_retry(b->reqs[i], PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
		else
			split(b);
	} else {
		for (int i = 0; i < b->n; i++)
			goc_commit_outcome(b->reqs[i], outcome, res, msg);
	}
	batch_free(b);
	bt.deferring--;
	pgpool_kick();
}

void batch_tick(void)
{
	/* Requests held back behind an insert batch past INSERT_GATE_MS may
	 * go now, even if nothing else happens to wake the pool. */
	if (bt.queued > 0)
		pgpool_kick();
}

void batch_get_stats(struct batch_stats *out)
{
	out->batches = bt.batches;
	out->keys = bt.keys;
	out->splits = bt.splits;
	out->queued = bt.queued;
}
