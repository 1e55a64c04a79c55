/*
 * table.c - served tables: catalog validation and statement text.
 *
 * Owns: what makes a table safe to serve, and the exact SQL gocd runs.
 * Every identifier in that SQL comes from the catalog and is quoted; every
 * value is a parameter.  Must never: talk to PostgreSQL or keep pointers
 * into requests; a catalog reload may replace any field here at any time.
 *
 * The statements (the heart of the design, see README "How it works"):
 *   select: SELECT row_to_json(t.*)::text FROM tbl AS t WHERE k1 = $1 AND ...
 *   insert: INSERT INTO tbl AS t (k1, .., d1, ..) VALUES ($1, ..)
 *           ON CONFLICT (k1, ..) DO NOTHING RETURNING row_to_json(t.*)::text
 * "t.*" rather than "t" so a column that happens to be named t is not
 * picked up instead of the whole row.  Functions are called by their
 * pg_catalog name: a call resolves over the search_path, where an exact
 * match beats pg_catalog's polymorphic or record version even though
 * pg_catalog is searched first, so a row_to_json(users) or unnest(text[])
 * in public answered made-up rows or stored other keys than asked.
 * ON CONFLICT names the key columns,
 * so only the key's unique index is an arbiter; any other unique index
 * still raises 23505 and becomes that request's constraint_violation.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "log.h"
#include "pgpool.h"
#include "table.h"

struct table **tables;
int ntables;

/* Types whose length coercion truncates in an explicit cast but refuses in
 * an assignment: 'abcdefgh'::varchar(5) is 'abcde', while inserting it into
 * a varchar(5) column is an error. */
#define SENSITIVE "'varchar'::regtype, 'bpchar'::regtype, 'bit'::regtype, 'varbit'::regtype"

const char table_catalog_sql[] =
	"SELECT n.nspname, c.relname, c.relkind::text,"
	" (SELECT json_agg(json_build_array(a.attname, format_type(a.atttypid, a.atttypmod),"
	"                  a.atttypid IN ('json'::regtype, 'jsonb'::regtype),"
	/* the type values are cast to (see struct column's cast) */
	"                  CASE WHEN b.oid IN (" SENSITIVE ") OR b.typelem IN (" SENSITIVE ")"
	"                       THEN format_type(b.oid, -1)"
	"                       ELSE format_type(a.atttypid, a.atttypmod) END,"
	/* varchar's typmod (of the elements, for an array), applied as an
	 * assignment applies it (see sb_value) */
	"                  CASE WHEN 'varchar'::regtype IN (b.oid, b.typelem) THEN b.tm ELSE -1 END,"
	"                  b.typelem = 'varchar'::regtype) ORDER BY a.attnum)"
	"    FROM pg_attribute a CROSS JOIN LATERAL"
	/* b: the type under all domains */
	"     (WITH RECURSIVE r(oid, tm) AS (SELECT a.atttypid, a.atttypmod UNION ALL"
	"       SELECT t.typbasetype, t.typtypmod FROM r JOIN pg_type t ON t.oid = r.oid AND t.typtype = 'd')"
	"      SELECT t.oid, t.typelem, r.tm FROM r JOIN pg_type t ON t.oid = r.oid AND t.typtype <> 'd') b"
	"    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)::text,"
	" (SELECT json_agg(json_build_array(i.indexrelid::regclass::text, i.indnullsnotdistinct,"
	/* the key columns only: INCLUDE columns (after indnkeyatts) are
	 * carried, not compared, and ON CONFLICT does not count them */
	"                  (SELECT json_agg(a.attname) FROM pg_attribute a"
	"                    WHERE a.attrelid = c.oid AND a.attnum = ANY (i.indkey[0:i.indnkeyatts - 1])),"
	/* a key column whose equality in the index is not the column's own */
	"                  (SELECT format('%s (collation %s in the index, %s in the column)',"
	"                                 a.attname, ic.collname, ac.collname)"
	"                    FROM generate_subscripts(i.indkey, 1) k"
	"                    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[k]"
	"                    JOIN pg_collation ic ON ic.oid = i.indcollation[k]"
	"                    JOIN pg_collation ac ON ac.oid = a.attcollation"
	"                    WHERE ic.oid <> ac.oid AND NOT (ic.collisdeterministic AND ac.collisdeterministic)"
	"                    LIMIT 1),"
	/* deferrable: not an arbiter, and ON CONFLICT refuses to run beside it */
	"                  i.indimmediate,"
	/* a key column whose equality in the index is not the column's own:
	 * an operator class whose = is not that of the default operator class
	 * for the column's type (text_ops on a citext column is case-sensitive;
	 * record_image_ops compares bytes).  Types without a default of their
	 * own (varchar, arrays, enums) take the default for the class's type. */
	"                  (SELECT format('%s (operator class %s in the index, comparing with %s)',"
	"                                 a.attname, ic.opcname, ieq.amopopr::regoperator)"
	"                    FROM generate_series(0, i.indnkeyatts - 1) k"
	"                    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[k]"
	"                    JOIN pg_opclass ic ON ic.oid = i.indclass[k]"
	"                    LEFT JOIN pg_amop ieq ON ieq.amopfamily = ic.opcfamily AND ieq.amopstrategy = 3"
	"                     AND ieq.amoplefttype = ic.opcintype AND ieq.amoprighttype = ic.opcintype"
	"                    CROSS JOIN LATERAL"
	"                     (WITH RECURSIVE r(oid) AS (SELECT a.atttypid UNION ALL"
	"                       SELECT t.typbasetype FROM r JOIN pg_type t ON t.oid = r.oid AND t.typtype = 'd')"
	"                      SELECT r.oid FROM r JOIN pg_type t ON t.oid = r.oid AND t.typtype <> 'd') b"
	"                    WHERE ieq.amopopr IS DISTINCT FROM"
	"                     (SELECT deq.amopopr FROM pg_opclass d JOIN pg_amop deq ON deq.amopfamily = d.opcfamily"
	"                       AND deq.amopstrategy = 3 AND deq.amoplefttype = d.opcintype"
	"                       AND deq.amoprighttype = d.opcintype"
	"                      WHERE d.opcmethod = ic.opcmethod AND d.opcdefault AND d.opcintype ="
	"                       coalesce((SELECT e.opcintype FROM pg_opclass e WHERE e.opcmethod = ic.opcmethod"
	"                                  AND e.opcdefault AND e.opcintype = b.oid), ic.opcintype))"
	"                    LIMIT 1),"
	/* per key column, the index's equality operator by its schema:
	 * lookups compare with it (see sb_eq) */
	"                  (SELECT json_object_agg(a.attname, format('OPERATOR(%I.%s)', o.nspname, op.oprname))"
	"                    FROM generate_series(0, i.indnkeyatts - 1) k"
	"                    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[k]"
	"                    JOIN pg_opclass ic ON ic.oid = i.indclass[k]"
	"                    JOIN pg_amop ieq ON ieq.amopfamily = ic.opcfamily AND ieq.amopstrategy = 3"
	"                     AND ieq.amoplefttype = ic.opcintype AND ieq.amoprighttype = ic.opcintype"
	"                    JOIN pg_operator op ON op.oid = ieq.amopopr"
	"                    JOIN pg_namespace o ON o.oid = op.oprnamespace)))"
	"    FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid"
	"     AND i.indisready AND i.indpred IS NULL AND i.indexprs IS NULL)::text,"
	/* what this role lacks for get_or_create: a warning, see below */
	" concat_ws(', ',"
	"  CASE WHEN NOT has_table_privilege(c.oid, 'SELECT') THEN 'SELECT on ' || c.oid::regclass::text END,"
	"  CASE WHEN NOT has_any_column_privilege(c.oid, 'INSERT') THEN 'INSERT on ' || c.oid::regclass::text END,"
	"  (SELECT string_agg('USAGE on sequence ' || q.s::text, ', ') FROM"
	"    (SELECT DISTINCT pg_get_serial_sequence(c.oid::regclass::text, a.attname)::regclass AS s"
	"      FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
	"       AND a.attidentity = '') q"
	"    WHERE q.s IS NOT NULL AND NOT has_sequence_privilege(q.s, 'USAGE'))),"
	/* a BEFORE INSERT FOR EACH ROW trigger (tgtype bits ROW|BEFORE|INSERT)
	 * that fires, here or on a partition: see struct table's insert_trigger */
	" EXISTS (SELECT FROM (SELECT c.oid UNION ALL SELECT relid FROM pg_partition_tree(c.oid::regclass)) p(r)"
	"   JOIN pg_trigger g ON g.tgrelid = p.r WHERE g.tgenabled <> 'D' AND (g.tgtype & 7) = 7),"
	/* UNLOGGED, itself or a partition: a crash empties it (warned below) */
	" EXISTS (SELECT FROM (SELECT c.oid UNION ALL SELECT relid FROM pg_partition_tree(c.oid::regclass)) p(r)"
	"   JOIN pg_class u ON u.oid = p.r WHERE u.relpersistence = 'u')"
	" FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
	" WHERE c.oid = to_regclass($1)";

const char *table_key_rewritten_mark(void)
{
	static char mark[128];
	if (mark[0] == '\0') {
		unsigned long long r = 0;
		if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
			r = (unsigned long long)time(NULL) * 6364136223846793005ULL ^ (unsigned long long)getpid();
		snprintf(mark, sizeof mark, "gocd: a BEFORE INSERT trigger may have changed an inserted key (%016llx)", r);
	}
	return mark;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);
	if (p == NULL) {
		log_error("out of memory");
		abort();
	}
	return p;
}

char *table_quote_ident(const char *name)
{
	size_t n = strlen(name);
	char *q = xmalloc(2 * n + 3), *p = q;
	*p++ = '"';
	for (const char *s = name; *s; s++) {
		if (*s == '"')
			*p++ = '"';
		*p++ = *s;
	}
	*p++ = '"';
	*p = '\0';
	return q;
}

/* A tiny growable string for building SQL. */
struct sb {
	char *s;
	size_t len, cap;
};

static void sb_add(struct sb *b, const char *s)
{
	size_t n = strlen(s);
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		char *p = realloc(b->s, b->cap);
		if (p == NULL)
			abort();
		b->s = p;
	}
	memcpy(b->s + b->len, s, n + 1);
	b->len += n;
}

static void sb_ident(struct sb *b, const char *name)
{
	char *q = table_quote_ident(name);
	sb_add(b, q);
	free(q);
}

static void sb_param(struct sb *b, int n)
{
	char num[16];
	snprintf(num, sizeof num, "$%d", n);
	sb_add(b, num);
}

static void free_columns(struct column *cols, int n)
{
	for (int i = 0; i < n; i++) {
		free(cols[i].name);
		free(cols[i].type);
		free(cols[i].cast);
	}
	free(cols);
}

static void clear_catalog(struct table *t)
{
	free_columns(t->cols, t->ncols);
	free(t->qname);
	free(t->index_name);
	free(t->sql_select);
	free(t->sql_insert_key);
	free(t->conflict_target);
	for (int k = 0; k < 32; k++) {
		free(t->key_eq[k]);
		t->key_eq[k] = NULL;
	}
	t->cols = NULL;
	t->ncols = 0;
	t->qname = t->index_name = t->sql_select = t->sql_insert_key = NULL;
	t->conflict_target = NULL;
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);
	if (p == NULL)
		abort();
	return p;
}

static bool same_key(const struct table_conf *a, const struct table_conf *b)
{
	if (a->ncols != b->ncols)
		return false;
	for (int i = 0; i < a->ncols; i++)
		if (strcmp(a->cols[i], b->cols[i]) != 0)
			return false;
	return true;
}

/* Not served until the catalog says it may be. */
static void unchecked(struct table *t)
{
	t->ready = false;
	snprintf(t->error, sizeof t->error, "table \"%s\" has not been checked against PostgreSQL yet",
		 t->own.name);
}

int table_sync(const struct config *cfg)
{
	int added = 0;
	for (int i = 0; i < ntables; i++) {
		bool keep = false;
		for (int j = 0; j < cfg->ntables; j++)
			if (strcmp(cfg->tables[j].name, tables[i]->own.name) == 0 &&
			    same_key(&cfg->tables[j], &tables[i]->own))
				keep = true;
		if (!keep && !tables[i]->removed) {
			tables[i]->removed = true;
			log_info("table \"%s\": no longer served", tables[i]->own.name);
		}
	}
	for (int j = 0; j < cfg->ntables; j++) {
		struct table *found = NULL;
		for (int i = 0; i < ntables; i++)
			if (!tables[i]->removed && strcmp(tables[i]->own.name, cfg->tables[j].name) == 0)
				found = tables[i];
		if (found)
			continue;
		/* A table served again with the same key takes its old struct
		 * back (requests in flight may still point at it, so it was never
		 * freed): a config that keeps toggling a table must not grow gocd
		 * and every connection's setup by one table per reload. */
		for (int i = 0; i < ntables && !found; i++)
			if (tables[i]->removed && strcmp(tables[i]->own.name, cfg->tables[j].name) == 0 &&
			    same_key(&cfg->tables[j], &tables[i]->own))
				found = tables[i];
		if (found) {
			found->removed = false;
			unchecked(found); /* it may have changed meanwhile */
			added++;
			continue;
		}
		struct table **nt = realloc(tables, sizeof *nt * (size_t)(ntables + 1));
		struct table *t = calloc(1, sizeof *t);
		if (nt == NULL || t == NULL)
			abort();
		tables = nt;
		t->idx = ntables;
		t->own.name = xstrdup(cfg->tables[j].name);
		t->own.ncols = cfg->tables[j].ncols;
		t->own.cols = calloc((size_t)t->own.ncols, sizeof *t->own.cols);
		if (t->own.cols == NULL)
			abort();
		for (int k = 0; k < t->own.ncols; k++)
			t->own.cols[k] = xstrdup(cfg->tables[j].cols[k]);
		t->conf = &t->own;
		t->stmt_select = t->stmt_insert_key = -1;
		unchecked(t);
		tables[ntables++] = t;
		added++;
	}
	return added;
}

void table_free_all(void)
{
	for (int i = 0; i < ntables; i++) {
		struct table *t = tables[i];
		clear_catalog(t);
		for (int k = 0; k < t->own.ncols; k++)
			free(t->own.cols[k]);
		free(t->own.cols);
		free(t->own.name);
		free(t);
	}
	free(tables);
	tables = NULL;
	ntables = 0;
}

struct table *table_find(const char *name)
{
	for (int i = 0; i < ntables; i++)
		if (!tables[i]->removed && strcmp(tables[i]->own.name, name) == 0)
			return tables[i];
	return NULL;
}

int table_column(const struct table *t, const char *name)
{
	for (int i = 0; i < t->ncols; i++)
		if (strcmp(t->cols[i].name, name) == 0)
			return i;
	return -1;
}

const char *table_unusable(const struct table *t, unsigned layout)
{
	if (!t->ready)
		return t->error;
	if (layout != t->layout)
		return "the table's columns changed while this request was in flight; send it again";
	return NULL;
}

void table_invalidate(struct table *t, const char *why)
{
	if (t->ready)
		log_error("table \"%s\" is no longer served: %s", t->conf->name, why);
	t->ready = false;
	snprintf(t->error, sizeof t->error, "%s", why);
}

static int fail(struct table *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int fail(struct table *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(t->error, sizeof t->error, fmt, ap);
	va_end(ap);
	t->ready = false;
	return -1;
}

/* The CREATE UNIQUE INDEX that would make the table servable. */
static void fix_hint(const struct table *t, char *buf, size_t len)
{
	struct sb b = {0};
	sb_add(&b, "CREATE UNIQUE INDEX ON ");
	sb_add(&b, t->qname ? t->qname : t->conf->name);
	sb_add(&b, " (");
	for (int i = 0; i < t->conf->ncols; i++) {
		if (i)
			sb_add(&b, ", ");
		sb_ident(&b, t->conf->cols[i]);
	}
	sb_add(&b, ");");
	snprintf(buf, len, "%s", b.s);
	free(b.s);
}

static void build_sql(struct table *t)
{
	struct sb b = {0};
	const struct table_conf *tc = t->conf;

	static const bool none_null[32];
	t->sql_select = table_sql_select_nulls(t, none_null);

	sb_add(&b, "(");
	for (int i = 0; i < tc->ncols; i++) {
		if (i)
			sb_add(&b, ", ");
		sb_ident(&b, tc->cols[i]);
	}
	sb_add(&b, ")");
	t->conflict_target = b.s;

	int cols[32];
	for (int i = 0; i < tc->ncols; i++)
		cols[i] = t->key_col[i];
	t->sql_insert_key = table_sql_insert(t, cols, tc->ncols);
}

/* text::type - a key or default text (a parameter, or i.cN in a batch)
 * converted as PostgreSQL would convert a typed parameter, so batches
 * accept exactly what single statements do: the cast keeps a typmod that
 * rounds (numeric(5,2)) and drops one that would truncate (char(5)),
 * leaving that to the INSERT, which refuses a value too long as the
 * single statement does. */
static void sb_value(struct sb *b, const char *text, const struct column *col)
{
	if (col->varchar_typmod >= 0) {
		/* varchar(n) as an assignment coerces: trailing spaces past n
		 * are dropped, anything else too long is an error (the explicit
		 * cast would truncate it).  So 'hello  ' finds the row the
		 * INSERT stored as 'hello'. */
		char c[96];
		if (col->varchar_array) {
			/* No SQL function coerces an array's elements that way,
			 * but the array parser applies the element typmod as
			 * varchar's input does, which is the same rule; its
			 * result is typed anyarray, hence the text round trip. */
			sb_add(b, "pg_catalog.array_in(");
			sb_add(b, text);
			snprintf(c, sizeof c, "::cstring, 'pg_catalog.varchar'::regtype, %d)::text::%s",
				 col->varchar_typmod, col->cast);
		} else {
			sb_add(b, "pg_catalog.varchar(");
			sb_add(b, text);
			snprintf(c, sizeof c, "::character varying, %d, false)", col->varchar_typmod);
		}
		sb_add(b, c);
		return;
	}
	sb_add(b, text);
	sb_add(b, "::");
	sb_add(b, col->cast);
}

/* $n, converted as sb_value converts. */
static void sb_param_value(struct sb *b, int n, const struct column *col)
{
	char prm[16];
	snprintf(prm, sizeof prm, "$%d", n);
	sb_value(b, prm, col);
}

/*
 * " = " between key column k and a value: the key index's own equality
 * operator, named by its schema.  A bare = resolves over the search_path,
 * where an operator with the column's exact types (an =(varchar, varchar)
 * that ignores case, say) beats pg_catalog's texteq, which varchar reaches
 * only by a cast: lookups found rows the unique index holds apart.
 */
static void sb_eq(struct sb *b, const struct table *t, int k)
{
	sb_add(b, " ");
	sb_add(b, t->key_eq[k] ? t->key_eq[k] : "=");
	sb_add(b, " ");
}

/* "FROM tbl AS t WHERE k1 = $p AND k2 IS NULL ..", parameters from $p on. */
static void sb_from_key(struct sb *b, const struct table *t, const bool *isnull, int p)
{
	const struct table_conf *tc = t->conf;
	sb_add(b, " FROM ");
	sb_add(b, t->qname);
	sb_add(b, " AS t WHERE ");
	for (int i = 0; i < tc->ncols; i++) {
		if (i)
			sb_add(b, " AND ");
		sb_ident(b, tc->cols[i]);
		if (isnull[i]) {
			sb_add(b, " IS NULL");
		} else {
			/* cast as the batch does: a key the column rounds on
			 * storing (numeric(5,2), timestamp(0)) must find its row */
			sb_eq(b, t, i);
			sb_param_value(b, p++, &t->cols[t->key_col[i]]);
		}
	}
}

char *table_sql_select_nulls(const struct table *t, const bool *isnull)
{
	struct sb b = {0};
	sb_add(&b, "SELECT pg_catalog.row_to_json(t.*)::text");
	sb_from_key(&b, t, isnull, 1);
	return b.s;
}

/*
 * After a commit in doubt: did transaction $1 commit, and is the key's
 * row the one it inserted, and which server life is this?  pg_xact_status
 * alone is not enough after a crash: a transaction whose WAL never reached
 * disk leaves its id to be handed out again, and the status is then
 * another transaction's.  The row's xmin (the low 32 bits of the inserting
 * id) tells them apart unless that transaction inserted the same key; the
 * life (PGPOOL_LIFE_SQL) tells whether a crash happened at all.
 */
char *table_sql_xact(const struct table *t, const bool *isnull)
{
	struct sb b = {0};
	sb_add(&b, "SELECT pg_catalog.pg_xact_status($1::xid8)::text, EXISTS (SELECT");
	sb_from_key(&b, t, isnull, 2);
	sb_add(&b, " AND t.xmin::text::numeric = $1::xid8::text::numeric OPERATOR(pg_catalog.%) 4294967296::numeric), ");
	sb_add(&b, PGPOOL_LIFE_SQL);
	return b.s;
}

/* ROWS FROM (pg_catalog.unnest($1::text[]), ...) WITH ORDINALITY AS
 * i(c0, .., ord): what unnest($1, $2, ..) stands for, spelled out, since
 * unnest($1) alone is an ordinary call that an unnest(text[]) on the
 * search_path would win (see table_sql_insert) */
static void sb_unnest(struct sb *b, int n)
{
	sb_add(b, "ROWS FROM (");
	for (int i = 0; i < n; i++) {
		if (i)
			sb_add(b, ", ");
		sb_add(b, "pg_catalog.unnest(");
		sb_param(b, i + 1);
		sb_add(b, "::text[])");
	}
	sb_add(b, ") WITH ORDINALITY AS i(");
	for (int i = 0; i < n; i++) {
		char c[16];
		snprintf(c, sizeof c, "c%d, ", i);
		sb_add(b, c);
	}
	sb_add(b, "ord)");
}

char *table_sql_insert(const struct table *t, const int *cols, int ncols)
{
	struct sb b = {0};
	sb_add(&b, "INSERT INTO ");
	sb_add(&b, t->qname);
	sb_add(&b, " AS t (");
	for (int i = 0; i < ncols; i++) {
		if (i)
			sb_add(&b, ", ");
		sb_ident(&b, t->cols[cols[i]].name);
	}
	sb_add(&b, ") VALUES (");
	for (int i = 0; i < ncols; i++) {
		/* Cast like the lookup and the batch: it also makes the text
		 * (and so the prepared statement) change with the column's type,
		 * since a prepared statement keeps the parameter types it was
		 * prepared with. */
		if (i)
			sb_add(&b, ", ");
		sb_param_value(&b, i + 1, &t->cols[cols[i]]);
	}
	sb_add(&b, ") ON CONFLICT ");
	sb_add(&b, t->conflict_target);
	/* The xid is read before the commit is sent, so that a connection
	 * lost during the commit can still learn whether it happened. */
	sb_add(&b, " DO NOTHING RETURNING pg_catalog.row_to_json(t.*)::text, pg_catalog.pg_current_xact_id()::text");
	return b.s;
}

static void sb_cast(struct sb *b, const char *alias, int n, const struct column *col)
{
	char c[32];
	snprintf(c, sizeof c, "%s.c%d", alias, n);
	sb_value(b, c, col);
}

/* AND-joined "left.k = i.cN::type" over the key columns. */
static void sb_key_match(struct sb *b, const struct table *t, const char *left, bool quoted)
{
	for (int k = 0; k < t->conf->ncols; k++) {
		if (k)
			sb_add(b, " AND ");
		sb_add(b, left);
		if (quoted) {
			sb_ident(b, t->conf->cols[k]);
		} else {
			char c[16];
			snprintf(c, sizeof c, "gk%d", k);
			sb_add(b, c);
		}
		sb_eq(b, t, k);
		sb_cast(b, "i", k, &t->cols[t->key_col[k]]);
	}
}

/* The order the batch INSERT takes its inputs in: by key, so concurrent
 * batches lock index entries in the same order (no deadlock), then by input
 * number, so ties - equal keys spelled differently - have one first. */
static void sb_insert_order(struct sb *b, const struct table *t)
{
	for (int k = 0; k < t->conf->ncols; k++) {
		sb_cast(b, "i", k, &t->cols[t->key_col[k]]);
		sb_add(b, ", ");
	}
	sb_add(b, "i.ord");
}

/*
 * One statement for many keys:
 *   i: the input rows, numbered;
 *   f: the keys that exist (hits write nothing: they never reach the INSERT);
 *   n: INSERT of the rest, in key order so that concurrent batches take
 *      their index locks in the same order and cannot deadlock each other;
 *      ON CONFLICT DO NOTHING names the key, as in the single statement.
 * A key that another transaction committed after this statement's
 * snapshot is neither in f nor in n: the caller re-reads it with a fresh
 * statement.  Two inputs that are the same value spelled differently
 * ("1" and "01" for an int, "a@x" and "A@X" for citext) both match the one
 * row inserted for them.  Of such inputs, the INSERT takes the first in
 * sb_insert_order's order and the rest conflict with it; row_number()
 * ranks them in that same order, so created=true goes to the input whose
 * values (key spelling, defaults) are in the row, and to no other.  It
 * ranks per inserted key, not per row text: two rows may print alike
 * (float8 under extra_float_digits = 0 prints 15 digits), and each has
 * its own creator.
 */
char *table_sql_batch_goc(const struct table *t, const int *defcols, int ndef)
{
	struct sb b = {0};
	int nk = t->conf->ncols;
	char c[32];

	sb_add(&b, "WITH i AS MATERIALIZED (SELECT * FROM ");
	sb_unnest(&b, nk + ndef);
	sb_add(&b, "), f AS MATERIALIZED (SELECT i.ord, pg_catalog.row_to_json(t.*)::text AS r FROM i JOIN ");
	sb_add(&b, t->qname);
	sb_add(&b, " AS t ON ");
	sb_key_match(&b, t, "t.", true);
	sb_add(&b, "), n AS (INSERT INTO ");
	sb_add(&b, t->qname);
	sb_add(&b, " AS t (");
	for (int k = 0; k < nk + ndef; k++) {
		if (k)
			sb_add(&b, ", ");
		sb_ident(&b, k < nk ? t->conf->cols[k] : t->cols[defcols[k - nk]].name);
	}
	sb_add(&b, ") SELECT ");
	for (int k = 0; k < nk + ndef; k++) {
		if (k)
			sb_add(&b, ", ");
		sb_cast(&b, "i", k, &t->cols[k < nk ? t->key_col[k] : defcols[k - nk]]);
	}
	sb_add(&b, " FROM i WHERE NOT EXISTS (SELECT FROM f WHERE f.ord = i.ord) ORDER BY ");
	sb_insert_order(&b, t);
	sb_add(&b, " ON CONFLICT ");
	sb_add(&b, t->conflict_target);
	sb_add(&b, " DO NOTHING RETURNING ");
	for (int k = 0; k < nk; k++) {
		sb_add(&b, "t.");
		sb_ident(&b, t->conf->cols[k]);
		snprintf(c, sizeof c, " AS gk%d, ", k);
		sb_add(&b, c);
	}
	/*
	 * A BEFORE INSERT row trigger added since the catalog was read (see
	 * struct table's insert_trigger) fails the whole statement once it
	 * inserted a row, so its transaction rolls back: the key it stored may
	 * match no input (committed, nobody could be told it was created), or
	 * another input's ("Ann" stored as "ann", where "ann" is asked for too:
	 * "ann" would be told created:true for Ann's row, and Ann, which wrote
	 * it, that it wrote nothing).  Only the trigger tells the second case
	 * from a plain insert, so it is looked for, in the same catalog terms
	 * as table_catalog_sql: on each partition a row went to (a partitioned
	 * table's row triggers are cloned onto its partitions), once per
	 * statement (an uncorrelated subquery), read after the statement took
	 * the table's lock, which CREATE TRIGGER on the table waits for (one
	 * created on a partition alone can slip in before the row is routed
	 * there and the partition locked).  An inserted row that matches no
	 * input fails it too.  The cast error carries a mark batch.c knows; the ||
	 * keeps the planner from folding it into a constant.
	 */
	sb_add(&b, "t.tableoid AS gt, pg_catalog.row_to_json(t.*)::text AS r) "
		   "SELECT f.ord, f.r, false, NULL::text FROM f UNION ALL "
		   "SELECT CASE WHEN i.ord IS NULL OR (SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger g"
		   " WHERE g.tgrelid IN (SELECT n.gt FROM n) AND g.tgenabled <> 'D' AND (g.tgtype & 7) = 7))"
		   " THEN ('");
	sb_add(&b, table_key_rewritten_mark());
	sb_add(&b, "' OPERATOR(pg_catalog.||) pg_catalog.left(n.r, 0))::bigint"
		   " ELSE i.ord END, n.r, pg_catalog.row_number() OVER (PARTITION BY ");
	for (int k = 0; k < nk; k++) {
		snprintf(c, sizeof c, "%sn.gk%d", k ? ", " : "", k);
		sb_add(&b, c);
	}
	sb_add(&b, " ORDER BY ");
	sb_insert_order(&b, t);
	sb_add(&b, ") = 1, pg_catalog.pg_current_xact_id_if_assigned()::text FROM n LEFT JOIN i ON ");
	sb_key_match(&b, t, "n.", false);
	return b.s;
}

char *table_sql_batch_select(const struct table *t)
{
	struct sb b = {0};
	sb_add(&b, "SELECT i.ord, pg_catalog.row_to_json(t.*)::text, false FROM ");
	sb_unnest(&b, t->conf->ncols);
	sb_add(&b, " JOIN ");
	sb_add(&b, t->qname);
	sb_add(&b, " AS t ON ");
	sb_key_match(&b, t, "t.", true);
	return b.s;
}

int table_apply_catalog(struct table *t, const PGresult *res)
{
	const struct table_conf *tc = t->conf;
	char hint[600];

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
		return fail(t, "table \"%s\": catalog lookup failed: %s (SQLSTATE %s)",
			    tc->name, msg ? msg : PQresultErrorMessage(res), st ? st : "?");
	}
	if (PQntuples(res) == 0)
		return fail(t, "table \"%s\" does not exist (or is not visible on the search_path)",
			    tc->name);

	const char *kind = PQgetvalue(res, 0, 2);
	if (strcmp(kind, "r") != 0 && strcmp(kind, "p") != 0)
		return fail(t, "table \"%s\" is not a table (relkind %s)", tc->name, kind);

	/* Requests and batch shapes hold positions in cols: keep the old list
	 * to tell whether they still mean the same columns. */
	struct column *old = t->cols;
	int nold = t->ncols;
	t->cols = NULL;
	t->ncols = 0;
	char *oldq = t->qname;
	t->qname = NULL;
	clear_catalog(t);
	char *nsp = table_quote_ident(PQgetvalue(res, 0, 0));
	char *rel = table_quote_ident(PQgetvalue(res, 0, 1));
	t->qname = xmalloc(strlen(nsp) + strlen(rel) + 2);
	sprintf(t->qname, "%s.%s", nsp, rel);
	free(nsp);
	free(rel);
	/* A name that is not schema-qualified is looked up on the role's
	 * search_path at every catalog read (each connect, reload, re-check):
	 * a table of that name created since in a schema earlier on the path
	 * takes over, and keys that existed in the old one are created again
	 * in the new one.  Say so, loudly: nothing else would. */
	if (oldq != NULL && strcmp(oldq, t->qname) != 0)
		log_warn("table \"%s\" now resolves to %s, no longer %s (the search_path finds "
			 "another table of that name): keys are looked up and created there from now on. "
			 "Configure the name schema-qualified to keep it fixed", tc->name, t->qname, oldq);
	free(oldq);

	json_t *cols = json_loads(PQgetvalue(res, 0, 3), 0, NULL);
	size_t ncols = json_array_size(cols);
	t->cols = calloc(ncols ? ncols : 1, sizeof *t->cols);
	if (t->cols == NULL)
		abort();
	for (size_t i = 0; i < ncols; i++) {
		json_t *c = json_array_get(cols, i);
		t->cols[i].name = strdup(json_string_value(json_array_get(c, 0)));
		t->cols[i].type = strdup(json_string_value(json_array_get(c, 1)));
		t->cols[i].is_json = json_is_true(json_array_get(c, 2));
		t->cols[i].cast = strdup(json_string_value(json_array_get(c, 3)));
		t->cols[i].varchar_typmod = (int)json_integer_value(json_array_get(c, 4));
		t->cols[i].varchar_array = json_is_true(json_array_get(c, 5));
	}
	t->ncols = (int)ncols;
	json_decref(cols);
	/* A column added at the end moves nothing: only the old positions
	 * matter (a client starting to send the new column is just what
	 * makes gocd re-read the catalog). */
	bool same = nold <= t->ncols;
	for (int i = 0; same && i < nold; i++)
		same = strcmp(old[i].name, t->cols[i].name) == 0 &&
		       strcmp(old[i].cast, t->cols[i].cast) == 0 && old[i].is_json == t->cols[i].is_json &&
		       old[i].varchar_typmod == t->cols[i].varchar_typmod &&
		       old[i].varchar_array == t->cols[i].varchar_array;
	if (!same)
		t->layout++;
	free_columns(old, nold);

	/* key_col changes only once every key column is found: a request
	 * still holding this table must never meet a -1 in it. */
	int key_col[32];
	for (int k = 0; k < tc->ncols; k++) {
		key_col[k] = table_column(t, tc->cols[k]);
		if (key_col[k] < 0)
			return fail(t, "table \"%s\" has no column \"%s\" (configured as a key column)",
				    tc->name, tc->cols[k]);
	}
	memcpy(t->key_col, key_col, sizeof key_col[0] * (size_t)tc->ncols);

	/* Find a unique index whose column set is exactly the key. */
	json_t *idx = PQgetisnull(res, 0, 4) ? NULL : json_loads(PQgetvalue(res, 0, 4), 0, NULL);
	const char *collation = NULL, *deferrable = NULL, *opclass = NULL;
	json_t *found = NULL; /* the index chosen: [name, nulls not distinct, .., key ='s] */
	bool nnd = false;
	for (size_t i = 0; i < json_array_size(idx); i++) {
		json_t *ix = json_array_get(idx, i);
		json_t *icols = json_array_get(ix, 2);
		if (json_array_size(icols) != (size_t)tc->ncols)
			continue;
		int all = 1;
		for (size_t j = 0; j < json_array_size(icols) && all; j++) {
			const char *name = json_string_value(json_array_get(icols, j));
			int hit = 0;
			for (int k = 0; k < tc->ncols; k++)
				if (name && strcmp(name, tc->cols[k]) == 0)
					hit = 1;
			all = hit;
		}
		if (!all)
			continue;
		/* Lookups compare keys with the column's collation, ON CONFLICT
		 * with the index's - with every unique index on exactly the key,
		 * since the conflict target names columns only: if only one of
		 * them is case-insensitive (say), a key would miss, conflict,
		 * and miss again.  So one such index rules the table out. */
		if (json_is_string(json_array_get(ix, 3))) {
			collation = json_string_value(json_array_get(ix, 3));
			continue;
		}
		/* The same with an operator class: a batch inserted 'Ann' and
		 * 'ann' into a citext column under a text_ops index, two rows
		 * for one key, each lookup finding either. */
		if (json_is_string(json_array_get(ix, 5))) {
			opclass = json_string_value(json_array_get(ix, 5));
			continue;
		}
		/* ON CONFLICT (key) infers every such index as an arbiter, and
		 * fails every statement ("does not support deferrable unique
		 * constraints") when one is deferrable, however good the others. */
		if (json_is_false(json_array_get(ix, 4))) {
			deferrable = json_string_value(json_array_get(ix, 0));
			continue;
		}
		if (found == NULL)
			found = ix;
		/* Any NULLS NOT DISTINCT arbiter makes a NULL key conflict. */
		if (json_is_true(json_array_get(ix, 1))) {
			nnd = true;
			found = ix;
		}
	}
	if (collation != NULL || opclass != NULL || deferrable != NULL) {
		/* before json_decref: they point into idx */
		int rc = collation != NULL
			? fail(t, "table \"%s\": its unique index on the key compares %s differently "
			       "from the column, so lookups and the index would disagree on which keys "
			       "are equal. Fix: give the index the column's collation, or the column the "
			       "index's", tc->name, collation)
			: opclass != NULL
			? fail(t, "table \"%s\": its unique index on the key compares %s, not as the "
			       "column's type does, so lookups and the index would disagree on which keys "
			       "are equal. Fix: build the index with the type's default operator class",
			       tc->name, opclass)
			: fail(t, "table \"%s\": unique index %s on the key is deferrable, and INSERT ... "
			       "ON CONFLICT refuses to run on a key with a deferrable constraint. Fix: make "
			       "it NOT DEFERRABLE (ALTER TABLE ... ALTER CONSTRAINT ... NOT DEFERRABLE), or "
			       "drop it", tc->name, deferrable);
		json_decref(idx);
		return rc;
	}
	if (found == NULL) {
		json_decref(idx);
		fix_hint(t, hint, sizeof hint);
		return fail(t, "table \"%s\" has no unique index or constraint on exactly (%s%s%s%s); "
			    "without one the database cannot guarantee one row per key. Fix: %s",
			    tc->name, tc->cols[0], tc->ncols > 1 ? ", " : "",
			    tc->ncols > 1 ? tc->cols[1] : "", tc->ncols > 2 ? ", ..." : "", hint);
	}
	t->index_name = strdup(json_string_value(json_array_get(found, 0)));
	/* Every index here compares as the column's type does (checked
	 * above), so any one's operators will do. */
	for (int k = 0; k < tc->ncols; k++) {
		const char *eq = json_string_value(json_object_get(json_array_get(found, 6), tc->cols[k]));
		t->key_eq[k] = eq ? xstrdup(eq) : NULL;
	}
	t->nulls_not_distinct = nnd;
	bool trig = PQgetvalue(res, 0, 6)[0] == 't';
	if (trig && (!t->ready || !t->insert_trigger))
		log_info("table \"%s\": a BEFORE INSERT row trigger may change a key, so its inserts "
			 "run one request at a time, not in batches", tc->name);
	t->insert_trigger = trig;
	json_decref(idx);

	build_sql(t);
	t->gen++;
	t->stmt_select = pgpool_statement(t->sql_select);
	t->stmt_insert_key = pgpool_statement(t->sql_insert_key);
	if (!t->ready) {
		log_info("table \"%s\": serving %s keyed by unique index %s%s", tc->name,
			 t->qname, t->index_name, nnd ? " (NULLS NOT DISTINCT)" : "");
		/* Only warned: a role may be meant for gets alone, and grants
		 * can change while gocd runs.  But -t should show it. */
		const char *lacks = PQgetvalue(res, 0, 5);
		if (lacks[0])
			log_warn("table \"%s\": this PostgreSQL role lacks %s; requests that need it "
				 "will fail with 'internal' (permission denied) until it is granted",
				 tc->name, lacks);
		/* Served all the same: it may be a cache by design.  But every
		 * created:true on it lasts only until PostgreSQL's next crash. */
		if (PQgetvalue(res, 0, 7)[0] == 't')
			log_warn("table \"%s\" is UNLOGGED: a PostgreSQL crash empties it, so rows "
				 "answered created:true can be lost and created again", tc->name);
	}
	t->ready = true;
	t->error[0] = '\0';
	return 0;
}
