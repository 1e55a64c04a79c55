/*
 * bench_db.c - blocking libpq work before and after a goc-bench run.
 *
 * Owns: the admin connection and the SQL of prepopulate, snapshot and the
 * rows-per-key count.  Must never: be called from the event loop while
 * requests are in flight (it blocks), or trust a key text into SQL other
 * than as a parameter.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <libpq-fe.h>

#include "bench_db.h"
#include "bench_verify.h"

static PGconn *db_connect(const char *conninfo)
{
	PGconn *c = PQconnectdb(conninfo);
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "goc-bench: cannot connect to PostgreSQL (%s): %s",
			conninfo, PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	PQsetNoticeProcessor(c, NULL, NULL);
	return c;
}

static void db_report(const char *what, const PGresult *r, PGconn *c)
{
	const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	fprintf(stderr, "goc-bench: %s failed: SQLSTATE %s: %s", what, st ? st : "?",
		r ? PQresultErrorMessage(r) : PQerrorMessage(c));
}

/* Append a quoted (possibly schema-qualified) identifier.  0 or -1. */
static int db_ident(PGconn *c, struct evbuffer *out, const char *name)
{
	const char *p = name;
	for (;;) {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);
		char *q = PQescapeIdentifier(c, p, n);
		if (q == NULL)
			return -1;
		evbuffer_add_printf(out, "%s", q);
		PQfreemem(q);
		if (!dot)
			return 0;
		evbuffer_add(out, ".", 1);
		p = dot + 1;
	}
}

/* SQL text of a buffer, NUL-terminated; caller frees. */
static char *db_text(struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);
	if (s) {
		evbuffer_remove(b, s, n);
		s[n] = '\0';
	}
	return s;
}

/* format_type() of table.column, or NULL (printed).  Caller frees. */
static char *db_coltype(PGconn *c, const char *table, const char *col)
{
	const char *sql = "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
			  "WHERE attrelid = $1::regclass AND attname = $2 "
			  "AND attnum > 0 AND NOT attisdropped";
	struct evbuffer *b = evbuffer_new();
	if (db_ident(c, b, table)) {
		evbuffer_free(b);
		return NULL;
	}
	char *rel = db_text(b);
	evbuffer_free(b);
	const char *params[2] = { rel, col };
	PGresult *r = PQexecParams(c, sql, 2, NULL, params, NULL, NULL, 0);
	char *t = NULL;
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		db_report("looking up column types", r, c);
	else if (PQntuples(r) != 1)
		fprintf(stderr, "goc-bench: table %s has no column \"%s\"\n", table, col);
	else
		t = strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	free(rel);
	return t;
}

int db_prepopulate(const struct bench *b, const char *conninfo, uint64_t n)
{
	const struct bench_cfg *cfg = &b->cfg;
	PGconn *c = db_connect(conninfo);
	if (c == NULL)
		return -1;
	int rc = -1;
	char *types[BENCH_MAX_KEY_COLS + BENCH_MAX_DEFAULTS] = { 0 };
	unsigned ncols = cfg->nkey_cols + cfg->ndef;
	char *sql = NULL;
	struct evbuffer *q = evbuffer_new();
	for (unsigned i = 0; i < ncols; i++) {
		const char *col = i < cfg->nkey_cols ? cfg->key_cols[i]
						     : cfg->def_cols[i - cfg->nkey_cols];
		if ((types[i] = db_coltype(c, cfg->table, col)) == NULL)
			goto out;
	}
	/* $1 prefix, $2 count, $3.. defaults.  NOT EXISTS keeps a table without
	 * a unique index (the naive baseline's) free of duplicates too. */
	evbuffer_add_printf(q, "INSERT INTO ");
	if (db_ident(c, q, cfg->table))
		goto out;
	evbuffer_add_printf(q, " (");
	for (unsigned i = 0; i < ncols; i++) {
		const char *col = i < cfg->nkey_cols ? cfg->key_cols[i]
						     : cfg->def_cols[i - cfg->nkey_cols];
		if (i)
			evbuffer_add(q, ",", 1);
		if (db_ident(c, q, col))
			goto out;
	}
	evbuffer_add_printf(q, ") SELECT ");
	for (unsigned i = 0; i < ncols; i++) {
		if (i)
			evbuffer_add(q, ",", 1);
		if (i < cfg->nkey_cols)
			evbuffer_add_printf(q, "($1::text || g::text)::%s", types[i]);
		else
			evbuffer_add_printf(q, "$%u::%s", 3 + i - cfg->nkey_cols, types[i]);
	}
	evbuffer_add_printf(q, " FROM generate_series(0::bigint, $2::bigint - 1) AS g "
			       "WHERE NOT EXISTS (SELECT 1 FROM ");
	if (db_ident(c, q, cfg->table))
		goto out;
	evbuffer_add_printf(q, " AS t WHERE ");
	for (unsigned i = 0; i < cfg->nkey_cols; i++) {
		if (i)
			evbuffer_add_printf(q, " AND ");
		evbuffer_add_printf(q, "t.");
		if (db_ident(c, q, cfg->key_cols[i]))
			goto out;
		evbuffer_add_printf(q, " = ($1::text || g::text)::%s", types[i]);
	}
	evbuffer_add_printf(q, ") ON CONFLICT DO NOTHING");
	sql = db_text(q);

	const char *params[2 + BENCH_MAX_DEFAULTS];
	char nbuf[32];
	snprintf(nbuf, sizeof nbuf, "%" PRIu64, n);
	params[0] = b->prefix;
	params[1] = nbuf;
	for (unsigned i = 0; i < cfg->ndef; i++)
		params[2 + i] = cfg->def_vals[i];
	uint64_t t0 = bench_now();
	PGresult *r = PQexecParams(c, sql, (int)(2 + cfg->ndef), NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		db_report("prepopulate", r, c);
	} else {
		if (!cfg->quiet)
			fprintf(stderr, "goc-bench: prepopulated %s: %s new rows of %" PRIu64
				" keys in %.1f s\n", cfg->table, PQcmdTuples(r), n,
				(double)(bench_now() - t0) / 1e9);
		rc = 0;
	}
	PQclear(r);
	if (rc == 0) {
		/* fresh statistics so the planner uses the key index at once */
		struct evbuffer *a = evbuffer_new();
		evbuffer_add_printf(a, "ANALYZE ");
		if (db_ident(c, a, cfg->table) == 0) {
			char *as = db_text(a);
			PQclear(PQexec(c, as));
			free(as);
		}
		evbuffer_free(a);
	}
out:
	for (unsigned i = 0; i < ncols; i++)
		free(types[i]);
	free(sql);
	evbuffer_free(q);
	PQfinish(c);
	return rc;
}

/* Key number of a key text of this run, or -1 when it is not one. */
static int64_t db_key_number(const struct bench *b, const char *s)
{
	if (strncmp(s, b->prefix, b->prefix_len) != 0)
		return -1;
	const char *d = s + b->prefix_len;
	if (*d == '\0' || (*d == '0' && d[1] != '\0'))
		return -1;
	uint64_t v = 0;
	for (; *d; d++) {
		if (*d < '0' || *d > '9' || v > UINT64_MAX / 10 - 1)
			return -1;
		v = v * 10 + (uint64_t)(*d - '0');
	}
	return v > INT64_MAX ? -1 : (int64_t)v;
}

int db_snapshot(struct bench *b, const char *conninfo)
{
	PGconn *c = db_connect(conninfo);
	if (c == NULL)
		return -1;
	int rc = -1;
	struct evbuffer *q = evbuffer_new();
	evbuffer_add_printf(q, "SELECT t.");
	if (db_ident(c, q, b->cfg.key_cols[0]))
		goto out;
	evbuffer_add_printf(q, "::text FROM ");
	if (db_ident(c, q, b->cfg.table))
		goto out;
	evbuffer_add_printf(q, " AS t WHERE starts_with(t.");
	if (db_ident(c, q, b->cfg.key_cols[0]))
		goto out;
	evbuffer_add_printf(q, "::text, $1)");
	char *sql = db_text(q);
	const char *params[1] = { b->prefix };
	PGresult *r = PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
	free(sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		db_report("snapshot of existing keys", r, c);
	} else {
		uint64_t space = keys_space(&b->keys);
		for (int i = 0; i < PQntuples(r); i++) {
			int64_t k = db_key_number(b, PQgetvalue(r, i, 0));
			if (k >= 0 && (space == 0 || (uint64_t)k < space))
				verify_mark_preexisting(b->ver, (uint64_t)k);
		}
		rc = 0;
	}
	PQclear(r);
out:
	evbuffer_free(q);
	PQfinish(c);
	return rc;
}

int db_check(const struct bench *b, const char *conninfo, FILE *out,
	     unsigned max_lines, struct db_check *res)
{
	const struct bench_cfg *cfg = &b->cfg;
	memset(res, 0, sizeof *res);
	PGconn *c = db_connect(conninfo);
	if (c == NULL)
		return -1;
	int rc = -1;
	char *types[BENCH_MAX_KEY_COLS] = { 0 };
	char *sql = NULL, *arr = NULL;
	struct evbuffer *q = evbuffer_new(), *a = evbuffer_new();
	for (unsigned i = 0; i < cfg->nkey_cols; i++)
		if ((types[i] = db_coltype(c, cfg->table, cfg->key_cols[i])) == NULL)
			goto out;

	/* The touched keys as one text[] literal; key texts are the prefix
	 * plus digits, quoted for the array syntax all the same. */
	char key[BENCH_KEY_MAX];
	evbuffer_add(a, "{", 1);
	uint64_t nkeys = 0;
	for (uint64_t k = 0; k < verify_space(b->ver); k++) {
		if (!verify_touched(b->ver, k))
			continue;
		size_t n = bench_key_text(b, k, key);
		if (nkeys++)
			evbuffer_add(a, ",", 1);
		evbuffer_add(a, "\"", 1);
		for (size_t i = 0; i < n; i++) {
			if (key[i] == '"' || key[i] == '\\')
				evbuffer_add(a, "\\", 1);
			evbuffer_add(a, &key[i], 1);
		}
		evbuffer_add(a, "\"", 1);
	}
	evbuffer_add(a, "}", 1);
	arr = db_text(a);
	res->keys = nkeys;
	if (nkeys == 0) {
		rc = 0;
		goto out;
	}

	evbuffer_add_printf(q, "SELECT u.k, count(t.");
	if (db_ident(c, q, cfg->key_cols[0]))
		goto out;
	evbuffer_add_printf(q, ") FROM unnest($1::text[]) AS u(k) LEFT JOIN ");
	if (db_ident(c, q, cfg->table))
		goto out;
	evbuffer_add_printf(q, " AS t ON ");
	for (unsigned i = 0; i < cfg->nkey_cols; i++) {
		if (i)
			evbuffer_add_printf(q, " AND ");
		evbuffer_add_printf(q, "t.");
		if (db_ident(c, q, cfg->key_cols[i]))
			goto out;
		evbuffer_add_printf(q, " = u.k::%s", types[i]);
	}
	evbuffer_add_printf(q, " GROUP BY u.k HAVING count(t.");
	if (db_ident(c, q, cfg->key_cols[0]))
		goto out;
	evbuffer_add_printf(q, ") <> 1 ORDER BY u.k");
	sql = db_text(q);
	const char *params[1] = { arr };
	PGresult *r = PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		db_report("counting rows per key", r, c);
		PQclear(r);
		goto out;
	}
	unsigned lines = 0;
	for (int i = 0; i < PQntuples(r); i++) {
		const char *k = PQgetvalue(r, i, 0);
		uint64_t cnt = strtoull(PQgetvalue(r, i, 1), NULL, 10);
		if (cnt == 0) {
			/* only a violation when a response carried a row for it */
			int64_t kn = db_key_number(b, k);
			if (kn < 0 || !verify_has_row(b->ver, (uint64_t)kn))
				continue;
			res->missing++;
			if (lines++ < max_lines)
				fprintf(out, "verify-db: key %s: no row in %s\n", k, cfg->table);
		} else {
			res->dup_keys++;
			res->extra_rows += cnt - 1;
			if (lines++ < max_lines)
				fprintf(out, "verify-db: key %s: %" PRIu64 " rows in %s\n", k,
					cnt, cfg->table);
		}
	}
	if (lines > max_lines)
		fprintf(out, "verify-db: ... and %u more\n", lines - max_lines);
	PQclear(r);
	rc = 0;
out:
	for (unsigned i = 0; i < cfg->nkey_cols; i++)
		free(types[i]);
	free(sql);
	free(arr);
	evbuffer_free(q);
	evbuffer_free(a);
	PQfinish(c);
	return rc;
}
