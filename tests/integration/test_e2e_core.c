/*
 * test_e2e_core.c - gocd's core promises, proven against a real gocd and a real
 * PostgreSQL: one row and one created:true per key under concurrency (one and
 * two daemons), ordered pipelining, no sequence values burnt on hits, every
 * error code a request can cause, exact round-trips of wide values, and the
 * connection lifecycle (disconnects, half-close, SIGTERM, refusing to start).
 *
 * Owns: these end-to-end checks and the schema they run on.
 * Must never: look inside the daemon (only the wire, the exit status, the log
 * and the database are evidence), or depend on another test's rows: each test
 * uses its own tables or key prefix.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "codec.h"
#include "errors.h"
#include "harness.h"

/* Tables must exist before gocd starts: it reads the catalog at connect. */
static const char SCHEMA[] =
	"CREATE TABLE users(id bigserial primary key, email text not null unique, name text,"
	"  age int check (age >= 0), nick text unique, status text not null default 'new');"
	"CREATE TABLE race1(id bigserial primary key, k text not null unique, n int);"
	"CREATE TABLE race2(id bigserial primary key, k text not null unique, n int);"
	"CREATE TABLE pipe(id bigserial primary key, k text not null unique, n int);"
	"CREATE TABLE seqt(id bigserial primary key, k text not null unique, n int);"
	"CREATE TABLE pairs(id bigserial primary key, tenant int not null, ext text not null,"
	"  payload jsonb, unique (tenant, ext));"
	"CREATE TABLE docs(id bigserial primary key, k text not null unique, big bigint,"
	"  num numeric, ts timestamptz, flag boolean, score double precision, note text, doc jsonb);"
	"CREATE TABLE ints(id bigserial primary key, n bigint not null unique, label text);"
	/* one key, many spellings: "ab" = "AB" here */
	"CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);"
	"CREATE TABLE cikeys(id bigserial primary key, k text collate ci not null unique, label text);"
	/* refused: the index's equality is not the column's */
	"CREATE TABLE collidx(id bigserial primary key, k text not null);"
	"CREATE UNIQUE INDEX collidx_k ON collidx (k COLLATE ci);"
	/* refused too: a good index, but ON CONFLICT (k) also uses the other */
	"CREATE TABLE collidx2(id bigserial primary key, k text not null unique);"
	"CREATE UNIQUE INDEX collidx2_k ON collidx2 (k COLLATE ci);"
	/* typmods: varchar(n) refuses what is too long, numeric(p,s) rounds */
	"CREATE TABLE vc(id bigserial primary key, k varchar(5) not null unique, v varchar(3));"
	"CREATE TABLE nm(id bigserial primary key, k numeric(5,2) not null unique);"
	"CREATE DOMAIN d5 AS varchar(5); CREATE DOMAIN d5b AS d5;"
	"CREATE TABLE vcd(id bigserial primary key, k d5b not null unique);"
	/* and varchar(n) arrays, whose elements an INSERT coerces the same way */
	"CREATE TABLE vca(id bigserial primary key, k varchar(5)[] not null unique);"
	/* eleven optional columns: 2048 sets of defaults, 2048 batch shapes */
	"CREATE TABLE wide(id bigserial primary key, k text not null unique,"
	" c0 int, c1 int, c2 int, c3 int, c4 int, c5 int, c6 int, c7 int, c8 int, c9 int, c10 int);"
	"CREATE DOMAIN d5a AS varchar(5)[];"
	"CREATE TABLE vcad(id bigserial primary key, k d5a not null unique);"
	/* a foreign key checked only at commit: an insert can fail after its rows */
	"CREATE TABLE dparent(id int primary key); INSERT INTO dparent VALUES (1);"
	"CREATE TABLE dchild(id bigserial primary key, k text not null unique,"
	"  p int references dparent(id) deferrable initially deferred);"
	"CREATE SCHEMA app;"
	"CREATE TABLE app.items(id bigserial primary key, sku text not null unique, qty int);"
	/* tables gocd must refuse to serve with key email / k / a */
	"CREATE TABLE noidx(id bigserial primary key, email text);"
	"CREATE TABLE partialidx(id bigserial primary key, k text);"
	"CREATE UNIQUE INDEX partialidx_k ON partialidx(k) WHERE k <> '';"
	"CREATE TABLE wideidx(id bigserial primary key, a text, b text, unique (a, b));"
	"CREATE TABLE tt(id bigserial primary key, a text not null, b text not null, unique (a, b));"
	/* NULL is a value here: the key may be null */
	"CREATE TABLE nnd(id bigserial primary key, k text, v int, unique nulls not distinct (k));"
	/* identifiers that only work quoted */
	"CREATE TABLE kw(id bigserial primary key, \"user\" text not null unique, \"order\" int,"
	"  \"select\" text);"
	/* a database whose sessions default to REPEATABLE READ, where ON CONFLICT
	 * raises serialization failures unless gocd runs at READ COMMITTED */
	"CREATE DATABASE rr;"
	"ALTER DATABASE rr SET default_transaction_isolation = 'repeatable read';";

/* The tables every standard gocd serves. */
#define STD_ARGS \
	"--table=users=email", "--table=race1=k", "--table=race2=k", "--table=pipe=k", \
	"--table=seqt=k", "--table=pairs=tenant,ext", "--table=docs=k", "--table=ints=n", \
	"--table=cikeys=k", "--table=vc=k", "--table=nm=k", "--table=vcd=k", \
	"--table=vca=k", "--table=vcad=k", "--table=wide=k", \
	"--table=app.items=sku", "--table=nnd=k", "--table=kw=user", "--table=tt=a,b", \
	"--table=dchild=k", \
	"--pool-size=8", "--request-timeout=10000", \
	"--max-line=8192", "--log-level=info"
#define STD_MAX_LINE 8192

#define T(fn) cmocka_unit_test_setup_teardown(fn, harness_test_setup, harness_test_teardown)

static int group_setup(void **state)
{
	if (tpg_start() != 0)
		return -1;
	/* CREATE DATABASE cannot run inside the implicit transaction of a
	 * multi-statement string, so the schema goes statement by statement. */
	char *sql = strdup(SCHEMA);
	for (char *stmt = strtok(sql, ";"); stmt; stmt = strtok(NULL, ";")) {
		if (tpg_exec("%s", stmt) != 0) {
			free(sql);
			tpg_destroy();
			return -1;
		}
	}
	free(sql);
	if (tpg_exec_db("rr", "CREATE TABLE rrt(id bigserial primary key, k text not null unique, n int)") != 0) {
		tpg_destroy();
		return -1;
	}
	return 0;
}


/* ---- helpers ------------------------------------------------------------- */

static struct tgocd *start_std(void)
{
	struct tgocd *g = tgocd_start(STD_ARGS, NULL);
	assert_non_null(g);
	return g;
}

static struct tclient *connect_to(const struct tgocd *g)
{
	struct tclient *c = tclient_tcp(g->port);
	assert_non_null(c);
	return c;
}

/* Send `req`, expect ok; the response stays in *r for further checks. */
static void call_ok(struct tclient *c, const char *req, struct goc_response *r)
{
	assert_int_equal(tclient_call(c, req, r), 0);
	if (!r->ok)
		print_error("request %s\n  expected ok, got %s\n", req, tclient_last(c));
	assert_true(r->ok);
}

/* Send `req`, expect error `code` (and the id echoed when want_id). */
static void call_error(struct tclient *c, const char *req, enum goc_err code)
{
	struct goc_response r;
	assert_int_equal(tclient_call(c, req, &r), 0);
	if (r.ok || r.code != code)
		print_error("request %s\n  expected %s, got %s\n", req, goc_err_name(code),
			    tclient_last(c));
	assert_false(r.ok);
	assert_int_equal(r.code, code);
	/* Errors name what is wrong. */
	assert_true(strlen(r.message) > 0);
	codec_response_free(&r);
}

static long long row_int(const struct goc_response *r, const char *col)
{
	assert_non_null(r->row);
	json_t *v = json_object_get(r->row, col);
	if (!json_is_integer(v))
		print_error("row has no integer column %s\n", col);
	assert_true(json_is_integer(v));
	return json_integer_value(v);
}

static const char *row_str(const struct goc_response *r, const char *col)
{
	assert_non_null(r->row);
	const char *s = json_string_value(json_object_get(r->row, col));
	if (s == NULL)
		print_error("row has no string column %s\n", col);
	assert_non_null(s);
	return s;
}

/* Both the connection that saw an error (when it stays open) and a
 * bystander connection must still be served. */
static void check_still_serving(struct tclient *same, struct tclient *bystander, const char *tag)
{
	struct goc_response r;
	char req[256];
	if (same) {
		call_ok(same, "{\"op\":\"ping\",\"id\":\"after\"}", &r);
		assert_string_equal(json_string_value(r.id), "after");
		codec_response_free(&r);
	}
	snprintf(req, sizeof req,
		 "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"email\":\"bystander-%s\"}}",
		 tag);
	call_ok(bystander, req, &r);
	assert_non_null(r.row);
	assert_string_equal(row_str(&r, "email") + strlen("bystander-"), tag);
	codec_response_free(&r);
}

/* ---- 1, 2: one row and one created:true per key under a thundering herd --- */

#define HERD_CONNS 64
#define HERD_KEYS 50

/*
 * For each key: write the same get_or_create (ids and defaults differ per
 * connection) to every connection back to back, then read all answers.
 * Each connection's index goes into defaults.n, so the row tells which
 * request created it, and that must be the one answered created:true.
 */
static void herd(struct tclient **cl, const char *table, const char *prefix)
{
	static char req[HERD_CONNS][256];
	for (int k = 0; k < HERD_KEYS; k++) {
		for (int i = 0; i < HERD_CONNS; i++)
			snprintf(req[i], sizeof req[i],
				 "{\"op\":\"get_or_create\",\"id\":%d,\"table\":\"%s\","
				 "\"key\":{\"k\":\"%s-%d\"},\"defaults\":{\"n\":%d}}\n",
				 i, table, prefix, k, i);
		for (int i = 0; i < HERD_CONNS; i++)
			assert_int_equal(tclient_send(cl[i], req[i], strlen(req[i])), 0);

		long long id = -1, n[HERD_CONNS];
		int created = 0, creator = -1;
		char key[64];
		snprintf(key, sizeof key, "%s-%d", prefix, k);
		for (int i = 0; i < HERD_CONNS; i++) {
			struct goc_response r;
			assert_int_equal(tclient_recv(cl[i], &r, HARNESS_IO_TIMEOUT_MS), 0);
			if (!r.ok)
				print_error("key %s conn %d: %s\n", key, i, tclient_last(cl[i]));
			assert_true(r.ok);
			assert_int_equal(json_integer_value(r.id), i);
			assert_string_equal(row_str(&r, "k"), key);
			long long rid = row_int(&r, "id");
			if (id == -1)
				id = rid;
			if (rid != id)
				print_error("key %s: conn %d got row id %lld, others %lld\n", key, i, rid, id);
			assert_int_equal(rid, id);
			if (r.created) {
				created++;
				creator = i;
			}
			n[i] = row_int(&r, "n");
			codec_response_free(&r);
		}
		if (created != 1)
			print_error("key %s: %d responses said created:true, expected exactly 1\n",
				    key, created);
		assert_int_equal(created, 1);
		/* every answer carries the creator's defaults: the same row */
		for (int i = 0; i < HERD_CONNS; i++)
			assert_int_equal(n[i], creator);
		assert_int_equal(tpg_count("SELECT count(*) FROM %s WHERE k = '%s'", table, key), 1);
		assert_int_equal(tpg_count("SELECT n FROM %s WHERE k = '%s'", table, key), creator);
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM %s WHERE k LIKE '%s-%%'", table, prefix),
			 HERD_KEYS);
}

static void test_herd_one_gocd_one_row_per_key(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *cl[HERD_CONNS];
	for (int i = 0; i < HERD_CONNS; i++)
		cl[i] = connect_to(g);
	herd(cl, "race1", "one");
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* Two daemons share nothing but the database: only PostgreSQL's unique
 * index can keep one row per key, and only the INSERT's RETURNING can say
 * which caller created it. */
static void test_herd_two_gocds_one_row_per_key(void **state)
{
	struct tgocd *g[2] = { start_std(), start_std() };
	struct tclient *cl[HERD_CONNS];
	for (int i = 0; i < HERD_CONNS; i++)
		cl[i] = connect_to(g[i % 2]);
	herd(cl, "race2", "two");
	assert_int_equal(tgocd_stop(g[0]), 0);
	assert_int_equal(tgocd_stop(g[1]), 0);
	harness_pass();
}

/* ---- 3: pipelining --------------------------------------------------------- */

#define PIPE_N 1000
#define PIPE_KEYS 37

/*
 * 1000 requests written in one go: get_or_create over 37 keys (creates and
 * hits, several per key in flight at once), pings, unknown tables and gets
 * of missing keys, whose answers take different paths through gocd.  The
 * answers must come back complete and in request order.
 */
static void pipeline_check(struct tgocd *g, const char *prefix)
{
	struct tclient *c = connect_to(g);

	size_t cap = PIPE_N * 200, len = 0;
	char *buf = malloc(cap);
	assert_non_null(buf);
	for (int i = 0; i < PIPE_N; i++) {
		switch (i % 10) {
		case 3:
			len += (size_t)snprintf(buf + len, cap - len, "{\"op\":\"ping\",\"id\":%d}\n", i);
			break;
		case 7:
			len += (size_t)snprintf(buf + len, cap - len,
						"{\"id\":%d,\"op\":\"get\",\"table\":\"nosuch\",\"key\":{\"k\":1}}\n", i);
			break;
		case 9:
			len += (size_t)snprintf(buf + len, cap - len,
						"{\"id\":%d,\"op\":\"get\",\"table\":\"pipe\",\"key\":{\"k\":\"missing-%d\"}}\n",
						i, i);
			break;
		default:
			len += (size_t)snprintf(buf + len, cap - len,
						"{\"op\":\"get_or_create\",\"id\":%d,\"table\":\"pipe\","
						"\"key\":{\"k\":\"%s-%d\"},\"defaults\":{\"n\":%d}}\n",
						i, prefix, i % PIPE_KEYS, i);
		}
	}
	char **lines;
	size_t got = tclient_exchange(c, buf, len, PIPE_N, &lines, 60000);
	free(buf);
	assert_int_equal(got, PIPE_N);

	long long ids[PIPE_KEYS];
	int created[PIPE_KEYS] = { 0 };
	for (int k = 0; k < PIPE_KEYS; k++)
		ids[k] = -1;
	for (int i = 0; i < PIPE_N; i++) {
		struct goc_response r;
		if (codec_parse_response(lines[i], strlen(lines[i]), &r) != 0)
			print_error("response %d is not a response: %s\n", i, lines[i]);
		assert_non_null(r.root);
		if (!json_is_integer(r.id) || json_integer_value(r.id) != i)
			print_error("response %d out of order: %s\n", i, lines[i]);
		assert_int_equal(json_integer_value(r.id), i);
		switch (i % 10) {
		case 3:
			assert_true(r.ok);
			assert_true(json_is_true(json_object_get(r.root, "pong")));
			break;
		case 7:
			assert_false(r.ok);
			assert_int_equal(r.code, GOC_E_UNKNOWN_TABLE);
			break;
		case 9:
			assert_true(r.ok);
			assert_false(r.created);
			assert_null(r.row);
			assert_true(json_is_null(json_object_get(r.root, "row")));
			break;
		default: {
			if (!r.ok)
				print_error("response %d: %s\n", i, lines[i]);
			assert_true(r.ok);
			int k = i % PIPE_KEYS;
			long long rid = row_int(&r, "id");
			if (ids[k] == -1)
				ids[k] = rid;
			assert_int_equal(rid, ids[k]);
			if (r.created)
				created[k]++;
		}
		}
		codec_response_free(&r);
	}
	harness_free_lines(lines, got);
	for (int k = 0; k < PIPE_KEYS; k++)
		assert_int_equal(created[k], 1);
	assert_int_equal(tpg_count("SELECT count(*) FROM pipe WHERE k LIKE '%s-%%'", prefix),
			 PIPE_KEYS);
}

static void test_pipeline_1000_in_order(void **state)
{
	struct tgocd *g = start_std();
	pipeline_check(g, "p");
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* With max_pending far below the pipeline depth gocd must apply
 * backpressure (stop reading), not drop or refuse requests. */
static void test_pipeline_backpressure_max_pending(void **state)
{
	struct tgocd *g = tgocd_start(STD_ARGS, "--max-pending=4", NULL);
	assert_non_null(g);
	pipeline_check(g, "bp");
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* ---- 4: hits burn no sequence values --------------------------------------- */

#define SEQ_KEYS 20
#define SEQ_CONNS 8
#define SEQ_HITS_PER_CONN 100

/* INSERT ... ON CONFLICT DO NOTHING evaluates nextval() before it finds the
 * conflict; a get_or_create that finds the row must not get that far. */
static void test_hits_consume_no_sequence_values(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	char req[256];
	for (int k = 0; k < SEQ_KEYS; k++) {
		struct goc_response r;
		snprintf(req, sizeof req,
			 "{\"op\":\"get_or_create\",\"table\":\"seqt\",\"key\":{\"k\":\"s-%d\"}}", k);
		call_ok(c, req, &r);
		assert_true(r.created);
		codec_response_free(&r);
	}
	long long before = tpg_count("SELECT last_value FROM seqt_id_seq");
	long long before_fn = tpg_count("SELECT pg_sequence_last_value('seqt_id_seq')");
	assert_true(before >= SEQ_KEYS);
	assert_int_equal(before_fn, before);

	/* Concurrent hits from several connections, pipelined, with defaults. */
	struct tclient *cl[SEQ_CONNS];
	for (int i = 0; i < SEQ_CONNS; i++) {
		cl[i] = connect_to(g);
		for (int j = 0; j < SEQ_HITS_PER_CONN; j++) {
			snprintf(req, sizeof req,
				 "{\"op\":\"get_or_create\",\"id\":%d,\"table\":\"seqt\","
				 "\"key\":{\"k\":\"s-%d\"},\"defaults\":{\"n\":%d}}\n",
				 j, (i + j) % SEQ_KEYS, j);
			assert_int_equal(tclient_send(cl[i], req, strlen(req)), 0);
		}
	}
	for (int i = 0; i < SEQ_CONNS; i++)
		for (int j = 0; j < SEQ_HITS_PER_CONN; j++) {
			struct goc_response r;
			assert_int_equal(tclient_recv(cl[i], &r, HARNESS_IO_TIMEOUT_MS), 0);
			assert_true(r.ok);
			assert_false(r.created);
			assert_int_equal(json_integer_value(r.id), j);
			codec_response_free(&r);
		}

	long long after = tpg_count("SELECT last_value FROM seqt_id_seq");
	if (after != before)
		print_error("%d hits moved seqt_id_seq from %lld to %lld\n",
			    SEQ_CONNS * SEQ_HITS_PER_CONN, before, after);
	assert_int_equal(after, before);
	assert_int_equal(tpg_count("SELECT count(*) FROM seqt"), SEQ_KEYS);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* ---- 5: every error code a request can cause -------------------------------- */

/* Lines that are not JSON: answered with bad_json and no id (there is none
 * to echo); the connection stays open. */
static void test_error_bad_json(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g), *by = connect_to(g);
	static const char *const lines[] = {
		"{\"op\":",
		"{\"op\":\"ping\",\"id\":\"\xff\xfe\"}",
		"{\"op\":\"get\",\"table\":\"users\",\"key\":{\"email\":\"a\\u0000b\"}}",
		"{\"op\":\"ping\",\"op\":\"ping\"}",
		"{\"op\":\"get\",\"table\":\"ints\",\"key\":{\"n\":123456789012345678901234567890}}",
		"not json at all",
	};
	for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
		struct goc_response r;
		assert_int_equal(tclient_call(c, lines[i], &r), 0);
		if (r.ok || r.code != GOC_E_BAD_JSON)
			print_error("line %zu: %s\n  expected bad_json, got %s\n", i, lines[i],
				    tclient_last(c));
		assert_false(r.ok);
		assert_int_equal(r.code, GOC_E_BAD_JSON);
		codec_response_free(&r);
		check_still_serving(c, by, "bad_json");
	}
	/* The first line had no complete JSON, so no id may be invented. */
	struct goc_response r;
	assert_int_equal(tclient_call(c, "{\"id\":5,", &r), 0);
	assert_int_equal(r.code, GOC_E_BAD_JSON);
	assert_null(r.id);
	codec_response_free(&r);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

static void test_error_bad_request(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g), *by = connect_to(g);
	static const char *const lines[] = {
		"[1,2]",
		"{\"id\":1}",
		"{\"id\":2,\"op\":\"get\",\"table\":\"users\",\"key\":{\"email\":\"a\"},\"extra\":1}",
		"{\"id\":3,\"op\":\"get\",\"table\":\"users\"}",
		"{\"id\":4,\"op\":\"get_or_create\",\"table\":\"users\",\"key\":\"a@x\"}",
		"{\"id\":5,\"op\":\"get\",\"table\":\"users\",\"key\":{\"email\":\"a\"},\"defaults\":{}}",
		/* key naming columns that are not exactly the key */
		"{\"id\":6,\"op\":\"get\",\"table\":\"users\",\"key\":{\"name\":\"x\"}}",
		"{\"id\":7,\"op\":\"get\",\"table\":\"users\",\"key\":{\"email\":\"a\",\"name\":\"x\"}}",
		"{\"id\":8,\"op\":\"get_or_create\",\"table\":\"pairs\",\"key\":{\"tenant\":1}}",
		"{\"id\":9,\"op\":\"ping\",\"table\":\"users\"}",
	};
	for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
		call_error(c, lines[i], GOC_E_BAD_REQUEST);
		check_still_serving(c, by, "bad_request");
	}
	/* the id is echoed on errors */
	struct goc_response r;
	assert_int_equal(tclient_call(c, lines[6], &r), 0);
	assert_int_equal(json_integer_value(r.id), 6);
	codec_response_free(&r);
	/* nothing was created by any of these */
	assert_int_equal(tpg_count("SELECT count(*) FROM users WHERE email = 'a'"), 0);
	assert_int_equal(tpg_count("SELECT count(*) FROM pairs WHERE tenant = 1"), 0);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

static void test_error_unknown_op(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g), *by = connect_to(g);
	call_error(c, "{\"op\":\"frobnicate\",\"id\":\"x\"}", GOC_E_UNKNOWN_OP);
	assert_non_null(strstr(tclient_last(c), "\"id\":\"x\""));
	check_still_serving(c, by, "unknown_op");
	call_error(c, "{\"op\":\"create\",\"table\":\"users\",\"key\":{\"email\":\"a\"}}",
		   GOC_E_UNKNOWN_OP);
	check_still_serving(c, by, "unknown_op2");
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

static void test_error_unknown_table(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g), *by = connect_to(g);
	call_error(c, "{\"op\":\"get_or_create\",\"table\":\"nosuch\",\"key\":{\"k\":1}}",
		   GOC_E_UNKNOWN_TABLE);
	/* exists in PostgreSQL but is not served by this gocd */
	call_error(c, "{\"op\":\"get\",\"table\":\"noidx\",\"key\":{\"email\":\"a\"}}",
		   GOC_E_UNKNOWN_TABLE);
	check_still_serving(c, by, "unknown_table");
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

static void test_error_unknown_column(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g), *by = connect_to(g);
	call_error(c, "{\"op\":\"get_or_create\",\"id\":1,\"table\":\"users\","
		      "\"key\":{\"email\":\"uc@x\"},\"defaults\":{\"nosuch\":1}}",
		   GOC_E_UNKNOWN_COLUMN);
	/* the message names the column at fault */
	assert_non_null(strstr(tclient_last(c), "nosuch"));
	check_still_serving(c, by, "unknown_column");
	/* the example of PROTOCOL.md: a typo in the key */
	call_error(c, "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"emial\":\"uc@x\"}}",
		   GOC_E_UNKNOWN_COLUMN);
	check_still_serving(c, by, "unknown_column2");
	assert_int_equal(tpg_count("SELECT count(*) FROM users WHERE email = 'uc@x'"), 0);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* NULLs never conflict in a unique index: every call would create a row. */
static void test_error_null_key(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g), *by = connect_to(g);
	long long before = tpg_count("SELECT count(*) FROM users");
	call_error(c, "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"email\":null}}",
		   GOC_E_NULL_KEY);
	check_still_serving(c, by, "null_key");
	call_error(c, "{\"op\":\"get_or_create\",\"table\":\"pairs\",\"key\":{\"tenant\":1,\"ext\":null}}",
		   GOC_E_NULL_KEY);
	call_error(c, "{\"op\":\"get\",\"table\":\"users\",\"key\":{\"email\":null}}", GOC_E_NULL_KEY);
	check_still_serving(c, by, "null_key2");
	/* only the two bystander rows were added */
	assert_int_equal(tpg_count("SELECT count(*) FROM users"), before + 2);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

static void test_error_invalid_value(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g), *by = connect_to(g);
	call_error(c, "{\"op\":\"get_or_create\",\"id\":1,\"table\":\"users\","
		      "\"key\":{\"email\":\"iv@x\"},\"defaults\":{\"age\":\"abc\"}}",
		   GOC_E_INVALID_VALUE);
	/* PostgreSQL's own message, which quotes the value */
	assert_non_null(strstr(tclient_last(c), "abc"));
	check_still_serving(c, by, "invalid_value");
	/* in the key, for get and get_or_create */
	call_error(c, "{\"op\":\"get\",\"table\":\"ints\",\"key\":{\"n\":\"abc\"}}", GOC_E_INVALID_VALUE);
	call_error(c, "{\"op\":\"get_or_create\",\"table\":\"ints\",\"key\":{\"n\":\"abc\"}}",
		   GOC_E_INVALID_VALUE);
	check_still_serving(c, by, "invalid_value2");
	/* out of range for int (22003) and a bad timestamp (22007) */
	call_error(c, "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"email\":\"iv@x\"},"
		      "\"defaults\":{\"age\":99999999999}}",
		   GOC_E_INVALID_VALUE);
	call_error(c, "{\"op\":\"get_or_create\",\"table\":\"docs\",\"key\":{\"k\":\"iv\"},"
		      "\"defaults\":{\"ts\":\"not a time\"}}",
		   GOC_E_INVALID_VALUE);
	/* an object for a text column */
	call_error(c, "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"email\":\"iv@x\"},"
		      "\"defaults\":{\"name\":{\"a\":1}}}",
		   GOC_E_INVALID_VALUE);
	check_still_serving(c, by, "invalid_value3");
	assert_int_equal(tpg_count("SELECT count(*) FROM users WHERE email = 'iv@x'"), 0);
	assert_int_equal(tpg_count("SELECT count(*) FROM docs WHERE k = 'iv'"), 0);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* CHECK, NOT NULL and a unique index other than the key's are the request's
 * fault and must not be hidden by a re-read (the Django mistake). */
static void test_error_constraint_violation(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g), *by = connect_to(g);
	struct goc_response r;

	call_error(c, "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"email\":\"cv1@x\"},"
		      "\"defaults\":{\"age\":-1}}",
		   GOC_E_CONSTRAINT_VIOLATION);
	check_still_serving(c, by, "check");
	call_error(c, "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"email\":\"cv2@x\"},"
		      "\"defaults\":{\"status\":null}}",
		   GOC_E_CONSTRAINT_VIOLATION);
	check_still_serving(c, by, "not_null");

	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"email\":\"cv3@x\"},"
		   "\"defaults\":{\"nick\":\"dup\"}}", &r);
	assert_true(r.created);
	codec_response_free(&r);
	call_error(c, "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"email\":\"cv4@x\"},"
		      "\"defaults\":{\"nick\":\"dup\"}}",
		   GOC_E_CONSTRAINT_VIOLATION);
	check_still_serving(c, by, "unique");

	assert_int_equal(tpg_count("SELECT count(*) FROM users WHERE email IN ('cv1@x','cv2@x','cv4@x')"), 0);
	/* the same key with valid defaults works afterwards */
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"email\":\"cv4@x\"},"
		   "\"defaults\":{\"nick\":\"other\",\"age\":3}}", &r);
	assert_true(r.created);
	assert_int_equal(row_int(&r, "age"), 3);
	codec_response_free(&r);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A ping whose line is exactly `len` bytes long (without the LF). */
static char *ping_of_length(size_t len, int id)
{
	/* {"op":"ping","id":N} padded with spaces before the closing brace */
	char *s = malloc(len + 2);
	assert_non_null(s);
	int n = snprintf(s, len + 1, "{\"op\":\"ping\",\"id\":%d", id);
	assert_true((size_t)n + 1 <= len);
	memset(s + n, ' ', len - (size_t)n - 1);
	s[len - 1] = '}';
	s[len] = '\n';
	s[len + 1] = '\0';
	return s;
}

/* Pings with ids 1..n, a line over max_line, then `after` pings without
 * ids: what a client that sends everything before reading sends. */
static char *pings_around_big(int n, int after, size_t *len)
{
	char *big = ping_of_length(STD_MAX_LINE + 1, 0);
	size_t cap = (size_t)(n + after) * 40 + strlen(big) + 1, l = 0;
	char *all = malloc(cap);
	assert_non_null(all);
	for (int i = 1; i <= n; i++)
		l += (size_t)snprintf(all + l, cap - l, "{\"op\":\"ping\",\"id\":%d}\n", i);
	l += (size_t)snprintf(all + l, cap - l, "%s", big);
	for (int i = 0; i < after; i++)
		l += (size_t)snprintf(all + l, cap - l, "{\"op\":\"ping\"}\n");
	free(big);
	*len = l;
	return all;
}

/* A line over max_line cannot be resynchronised: answers to earlier
 * requests, then too_large, then close.  Exactly max_line is fine. */
static void test_error_too_large(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g), *by = connect_to(g);
	struct goc_response r;

	char *exact = ping_of_length(STD_MAX_LINE, 1);
	assert_int_equal(tclient_send(c, exact, strlen(exact)), 0);
	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	if (!r.ok)
		print_error("a line of exactly max_line bytes was refused: %s\n", tclient_last(c));
	assert_true(r.ok);
	assert_int_equal(json_integer_value(r.id), 1);
	codec_response_free(&r);
	free(exact);

	/* over the limit, after a normal request on the same connection */
	char *big = ping_of_length(STD_MAX_LINE + 1, 3);
	assert_int_equal(tclient_sendf(c, "{\"op\":\"ping\",\"id\":2}\n"), 0);
	tclient_send(c, big, strlen(big)); /* may fail once gocd has closed */
	free(big);
	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_true(r.ok);
	assert_int_equal(json_integer_value(r.id), 2);
	codec_response_free(&r);
	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	if (r.code != GOC_E_TOO_LARGE)
		print_error("expected too_large, got %s\n", tclient_last(c));
	assert_false(r.ok);
	assert_int_equal(r.code, GOC_E_TOO_LARGE);
	codec_response_free(&r);
	assert_int_equal(tclient_expect_eof(c, 5000), 0);
	tclient_close(c);
	check_still_serving(NULL, by, "too_large");

	/* a client streaming bytes without any newline is cut off too */
	c = connect_to(g);
	size_t n = STD_MAX_LINE * 4;
	char *junk = malloc(n);
	assert_non_null(junk);
	memset(junk, 'x', n);
	tclient_send(c, junk, n);
	free(junk);
	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_int_equal(r.code, GOC_E_TOO_LARGE);
	codec_response_free(&r);
	assert_int_equal(tclient_expect_eof(c, 5000), 0);
	tclient_close(c);
	check_still_serving(NULL, by, "too_large2");

	/* A client that sends everything before reading: the line too large
	 * comes with more behind it, unread when gocd is done.  Closing then
	 * reset the connection, which destroyed the answers on their way (34
	 * of 100 arrived); gocd half-closes and lingers instead. */
	c = connect_to(g);
	size_t len;
	char *all = pings_around_big(100, 1000, &len);
	assert_int_equal(tclient_send(c, all, len), 0);
	free(all);
	harness_sleep_ms(300); /* gocd has answered, and is done with c */
	for (int i = 1; i <= 100; i++) {
		assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
		assert_true(r.ok);
		assert_int_equal(json_integer_value(r.id), i);
		codec_response_free(&r);
	}
	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_int_equal(r.code, GOC_E_TOO_LARGE);
	codec_response_free(&r);
	assert_int_equal(tclient_expect_eof(c, 5000), 0);
	tclient_close(c);

	/* ... and one whose further requests come a moment after gocd is
	 * done, while its answers still sit in gocd's socket (a small receive
	 * buffer): nothing was unread when gocd closed, the late bytes met a
	 * closed socket, and the reset threw away the answers not yet
	 * delivered (76 of 600 arrived). */
	int fd = harness_tcp_fd(g->port, 4096);
	assert_true(fd >= 0);
	all = pings_around_big(2000, 0, &len);
	for (size_t off = 0; off < len;) {
		ssize_t w = write(fd, all + off, len - off);
		assert_true(w > 0);
		off += (size_t)w;
	}
	harness_sleep_ms(300); /* answered; gocd is done with it */
	fcntl(fd, F_SETFL, O_NONBLOCK);
	for (int i = 0; i < 100; i++)
		if (write(fd, "{\"op\":\"ping\"}\n", 14) < 0)
			break;
	free(all);
	size_t lines = 0, got = 0;
	char tail[256] = "";
	char chunk[65536];
	long long deadline = mono_ms() + HARNESS_IO_TIMEOUT_MS;
	for (;;) {
		ssize_t rn = read(fd, chunk, sizeof chunk);
		if (rn > 0) {
			for (ssize_t k = 0; k < rn; k++)
				lines += chunk[k] == '\n';
			got += (size_t)rn;
			size_t keep = (size_t)rn < sizeof tail - 1 ? (size_t)rn : sizeof tail - 1;
			memcpy(tail, chunk + rn - (ssize_t)keep, keep);
			tail[keep] = '\0';
			continue;
		}
		if (rn == 0 || (errno != EAGAIN && errno != EINTR) || mono_ms() > deadline)
			break;
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		poll(&pf, 1, 100);
	}
	close(fd);
	if (lines != 2001 || !strstr(tail, "too_large"))
		print_error("late bytes after too_large: %zu lines (%zu bytes) arrived, expected 2001 "
			    "ending in too_large\n", lines, got);
	assert_int_equal(lines, 2001);
	assert_non_null(strstr(tail, "too_large"));

	/* A client lingered on after too_large that keeps its socket open:
	 * once it has every answer, gocd's exit does not wait for it. */
	c = connect_to(g);
	big = ping_of_length(STD_MAX_LINE + 1, 0);
	tclient_send(c, big, strlen(big));
	free(big);
	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_int_equal(r.code, GOC_E_TOO_LARGE);
	codec_response_free(&r);
	long long stop_at = mono_ms();
	assert_int_equal(tgocd_stop(g), 0);
	long long stop_ms = mono_ms() - stop_at;
	if (stop_ms >= 4000) /* the linger is 5 s; an exit waiting for it is the bug */
		print_error("gocd took %lld ms to exit with a lingering client\n", stop_ms);
	assert_true(stop_ms < 4000);
	tclient_close(c);
	harness_pass();
}

/* PostgreSQL down: `unavailable`, promptly, nothing written; back up: gocd
 * serves again on its own within a few seconds. */
static void test_error_unavailable_and_recovery(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g), *by = connect_to(g);
	struct goc_response r;

	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"email\":\"before-outage\"}}", &r);
	codec_response_free(&r);

	assert_int_equal(tpg_stop(), 0);
	call_error(c, "{\"op\":\"get_or_create\",\"id\":1,\"table\":\"users\",\"key\":{\"email\":\"outage@x\"}}",
		   GOC_E_UNAVAILABLE);
	call_error(by, "{\"op\":\"get\",\"table\":\"users\",\"key\":{\"email\":\"before-outage\"}}",
		   GOC_E_UNAVAILABLE);
	/* the daemon itself is still up */
	call_ok(c, "{\"op\":\"ping\"}", &r);
	codec_response_free(&r);
	assert_true(tgocd_alive(g));

	assert_int_equal(tpg_resume(), 0);
	/* nothing was written while it was down */
	assert_int_equal(tpg_count("SELECT count(*) FROM users WHERE email = 'outage@x'"), 0);

	int waited = 0;
	for (;;) {
		assert_int_equal(tclient_call(c, "{\"op\":\"get_or_create\",\"table\":\"users\","
					     "\"key\":{\"email\":\"outage@x\"}}", &r), 0);
		bool ok = r.ok;
		if (!ok && r.code != GOC_E_UNAVAILABLE)
			print_error("while recovering: %s\n", tclient_last(c));
		assert_true(ok || r.code == GOC_E_UNAVAILABLE);
		codec_response_free(&r);
		if (ok)
			break;
		if (waited >= 10000)
			fail_msg("gocd still unavailable %d ms after PostgreSQL came back", waited);
		harness_sleep_ms(200);
		waited += 200;
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM users WHERE email = 'outage@x'"), 1);
	check_still_serving(c, by, "unavailable");
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* ---- 6: exact round-trips --------------------------------------------------- */

static void test_composite_key_and_jsonb_round_trip(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	struct goc_response r;
	const char *payload = "{\"s\":\"h\\u00e9llo \\\"q\\\"\\n\",\"n\":[1,2,{\"deep\":null}],"
			      "\"b\":true,\"i\":-3,\"f\":2.5,\"e\":{}}";
	char req[512];
	snprintf(req, sizeof req,
		 "{\"op\":\"get_or_create\",\"table\":\"pairs\",\"key\":{\"tenant\":7,\"ext\":\"a\"},"
		 "\"defaults\":{\"payload\":%s}}", payload);
	call_ok(c, req, &r);
	assert_true(r.created);
	long long id = row_int(&r, "id");
	assert_int_equal(row_int(&r, "tenant"), 7);
	assert_string_equal(row_str(&r, "ext"), "a");
	json_t *want = json_loads(payload, 0, NULL);
	assert_non_null(want);
	if (!json_equal(json_object_get(r.row, "payload"), want))
		print_error("payload did not round-trip: %s\n", tclient_last(c));
	assert_true(json_equal(json_object_get(r.row, "payload"), want));
	codec_response_free(&r);

	/* column order in key does not matter, and 7 and "7" are the same key */
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"pairs\",\"key\":{\"ext\":\"a\",\"tenant\":\"7\"},"
		   "\"defaults\":{\"payload\":[1]}}", &r);
	assert_false(r.created);
	assert_int_equal(row_int(&r, "id"), id);
	assert_true(json_equal(json_object_get(r.row, "payload"), want));
	codec_response_free(&r);

	call_ok(c, "{\"op\":\"get\",\"table\":\"pairs\",\"key\":{\"tenant\":7,\"ext\":\"a\"}}", &r);
	assert_false(r.created);
	assert_int_equal(row_int(&r, "id"), id);
	codec_response_free(&r);

	/* one column differs: another row */
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"pairs\",\"key\":{\"tenant\":8,\"ext\":\"a\"},"
		   "\"defaults\":{\"payload\":\"abc\"}}", &r);
	assert_true(r.created);
	assert_true(row_int(&r, "id") != id);
	/* in a jsonb column a string is stored as a JSON string */
	assert_string_equal(row_str(&r, "payload"), "abc");
	codec_response_free(&r);
	char *stored = tpg_value("SELECT payload::text FROM pairs WHERE tenant = 8");
	assert_non_null(stored);
	assert_string_equal(stored, "\"abc\"");
	free(stored);

	assert_int_equal(tpg_count("SELECT count(*) FROM pairs WHERE ext = 'a'"), 2);
	json_decref(want);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* Find "col":<value> in a raw row and return the value text (malloc'd). */
static char *raw_member(const char *line, const char *col)
{
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\":", col);
	const char *p = strstr(line, pat);
	if (p == NULL) {
		print_error("no %s in %s\n", pat, line);
		return NULL;
	}
	p += strlen(pat);
	while (*p == ' ')
		p++;
	const char *e = p;
	if (*p == '"') {
		e = strchr(p + 1, '"');
		return e ? strndup(p + 1, (size_t)(e - p - 1)) : NULL;
	}
	while (*e && *e != ',' && *e != '}')
		e++;
	return strndup(p, (size_t)(e - p));
}

/* Wide values come back with every digit: the row is PostgreSQL's text,
 * never routed through a C double.  (A 30-digit number is beyond jansson,
 * so these checks read the raw line.) */
static void test_wide_values_keep_every_digit(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	const char *line;
	size_t len;

	assert_int_equal(tclient_sendf(c,
		"{\"op\":\"get_or_create\",\"table\":\"docs\",\"key\":{\"k\":\"wide\"},"
		"\"defaults\":{\"big\":9007199254740993,\"num\":\"123456789012345678901234567890\","
		"\"ts\":\"2026-11-28T10:00:00.123456Z\",\"flag\":true,\"score\":0.1,"
		"\"note\":\"line1\\nline2\"}}\n"), 0);
	assert_int_equal(tclient_line(c, &line, &len, HARNESS_IO_TIMEOUT_MS), 1);
	char *first = strdup(line);
	if (strstr(first, "\"ok\":true") == NULL)
		fail_msg("expected ok, got %s", first);
	assert_non_null(strstr(first, "\"created\":true"));

	char *v = raw_member(first, "big");
	assert_non_null(v);
	assert_string_equal(v, "9007199254740993");
	free(v);
	v = raw_member(first, "num");
	assert_non_null(v);
	assert_string_equal(v, "123456789012345678901234567890");
	free(v);
	v = raw_member(first, "flag");
	assert_non_null(v);
	assert_string_equal(v, "true");
	free(v);
	v = raw_member(first, "score");
	assert_non_null(v);
	assert_string_equal(v, "0.1");
	free(v);
	v = raw_member(first, "note");
	assert_non_null(v);
	assert_string_equal(v, "line1\\nline2");
	free(v);
	v = raw_member(first, "ts");
	assert_non_null(v);
	/* rendered in the session's time zone, with every fractional digit */
	assert_non_null(strstr(v, ".123456"));
	assert_int_equal(tpg_count("SELECT ('%s'::timestamptz = '2026-11-28T10:00:00.123456Z')::int", v), 1);
	free(v);

	/* and in the database, exactly what was sent */
	assert_int_equal(tpg_count("SELECT count(*) FROM docs WHERE k = 'wide' AND big = 9007199254740993"
				   " AND num = 123456789012345678901234567890"), 1);

	/* a hit returns the same row bytes */
	assert_int_equal(tclient_sendf(c, "{\"op\":\"get\",\"table\":\"docs\",\"key\":{\"k\":\"wide\"}}\n"), 0);
	assert_int_equal(tclient_line(c, &line, &len, HARNESS_IO_TIMEOUT_MS), 1);
	const char *row1 = strstr(first, "\"row\":"), *row2 = strstr(line, "\"row\":");
	assert_non_null(row1);
	assert_non_null(row2);
	assert_string_equal(row1, row2);
	free(first);

	/* a bigint key: 2^53+1 as a number and as a string is the same key */
	struct goc_response r;
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"ints\",\"key\":{\"n\":9007199254740993}}", &r);
	assert_true(r.created);
	assert_int_equal(row_int(&r, "n"), 9007199254740993LL);
	long long id = row_int(&r, "id");
	codec_response_free(&r);
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"ints\",\"key\":{\"n\":\"9007199254740993\"}}", &r);
	assert_false(r.created);
	assert_int_equal(row_int(&r, "id"), id);
	codec_response_free(&r);
	call_ok(c, "{\"op\":\"get\",\"table\":\"ints\",\"key\":{\"n\":9007199254740992}}", &r);
	assert_null(r.row);
	codec_response_free(&r);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* A whole decimal (what Python's json.dumps writes for 20.0) reaches an
 * integer column as 20, not as "2e+01", which PostgreSQL refuses. */
static void test_whole_decimals_read_as_integers(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	struct goc_response r;
	call_ok(c, "{\"op\":\"get_or_create\",\"id\":1E2,\"table\":\"docs\",\"key\":{\"k\":\"whole-real\"},"
		   "\"defaults\":{\"big\":20.0,\"note\":1500.0,\"doc\":{\"x\":20.0}}}", &r);
	assert_true(r.created);
	assert_int_equal(row_int(&r, "big"), 20);
	assert_string_equal(row_str(&r, "note"), "1500");
	assert_true(json_is_real(r.id) && json_real_value(r.id) == 100.0);
	codec_response_free(&r);
	char *doc = tpg_value("SELECT doc::text FROM docs WHERE k = 'whole-real'");
	assert_non_null(doc);
	assert_string_equal(doc, "{\"x\": 20.0}");
	free(doc);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* jsonb stores numbers as numeric, digit for digit: a 0.1 nested in an
 * object must arrive as 0.1, not 0.10000000000000001. */
static void test_jsonb_nested_real_exact(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	struct goc_response r;
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"docs\",\"key\":{\"k\":\"nested-real\"},"
		   "\"defaults\":{\"doc\":{\"x\":0.1,\"y\":[0.3]}}}", &r);
	codec_response_free(&r);
	char *stored = tpg_value("SELECT doc::text FROM docs WHERE k = 'nested-real'");
	assert_non_null(stored);
	if (strcmp(stored, "{\"x\": 0.1, \"y\": [0.3]}") != 0)
		print_error("stored %s, sent {\"x\":0.1,\"y\":[0.3]}\n", stored);
	assert_string_equal(stored, "{\"x\": 0.1, \"y\": [0.3]}");
	free(stored);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* ---- connection lifecycle ---------------------------------------------------- */

static void test_get_missing_key_returns_null_row(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	struct goc_response r;
	call_ok(c, "{\"op\":\"get\",\"id\":\"g\",\"table\":\"users\",\"key\":{\"email\":\"nobody@x\"}}", &r);
	assert_false(r.created);
	assert_null(r.row);
	assert_true(json_is_null(json_object_get(r.root, "row")));
	assert_string_equal(json_string_value(r.id), "g");
	codec_response_free(&r);
	/* get never creates */
	assert_int_equal(tpg_count("SELECT count(*) FROM users WHERE email = 'nobody@x'"), 0);
	/* ping and stats */
	call_ok(c, "{\"op\":\"stats\"}", &r);
	assert_true(json_is_object(json_object_get(r.root, "stats")));
	codec_response_free(&r);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * A get pipelined behind a get_or_create of the same key on one connection
 * must see the row the connection was just told about: gets take the key in
 * the lock table like get_or_create does.  And a get that finds nothing must
 * not answer a get_or_create waiting behind it with its null row.
 */
static void test_pipelined_get_sees_earlier_create(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	enum { ROUNDS = 20 };
	for (int k = 0; k < ROUNDS; k++) {
		/* get (miss), get_or_create, get, get_or_create, get: one write */
		assert_int_equal(tclient_sendf(c,
			"{\"op\":\"get\",\"id\":0,\"table\":\"pipe\",\"key\":{\"k\":\"getpipe-%d\"}}\n"
			"{\"op\":\"get_or_create\",\"id\":1,\"table\":\"pipe\",\"key\":{\"k\":\"getpipe-%d\"},\"defaults\":{\"n\":%d}}\n"
			"{\"op\":\"get\",\"id\":2,\"table\":\"pipe\",\"key\":{\"k\":\"getpipe-%d\"}}\n"
			"{\"op\":\"get_or_create\",\"id\":3,\"table\":\"pipe\",\"key\":{\"k\":\"getpipe-%d\"}}\n"
			"{\"op\":\"get\",\"id\":4,\"table\":\"pipe\",\"key\":{\"k\":\"getpipe-%d\"}}\n",
			k, k, k, k, k, k), 0);
		long long id = -1;
		for (int i = 0; i < 5; i++) {
			struct goc_response r;
			assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
			if (!r.ok || (i > 0 && r.row == NULL))
				print_error("round %d answer %d: %s\n", k, i, tclient_last(c));
			assert_true(r.ok);
			assert_int_equal(json_integer_value(r.id), i);
			assert_int_equal(r.created, i == 1);
			if (i == 0) {
				assert_null(r.row);
			} else {
				assert_int_equal(row_int(&r, "n"), k);
				if (id == -1)
					id = row_int(&r, "id");
				assert_int_equal(row_int(&r, "id"), id);
			}
			codec_response_free(&r);
		}
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM pipe WHERE k LIKE 'getpipe-%%'"), ROUNDS);

	/* Gets of a missing key queued behind one another are answered with
	 * the first one's null row, not run one after another. */
	struct goc_response st;
	call_ok(c, "{\"op\":\"stats\"}", &st);
	long long before = json_integer_value(json_object_get(json_object_get(st.root, "stats"), "coalesced"));
	codec_response_free(&st);
	enum { GETS = 500 };
	static const char get[] = "{\"op\":\"get\",\"table\":\"pipe\",\"key\":{\"k\":\"getpipe-none\"}}\n";
	char *buf = malloc(sizeof get * GETS);
	assert_non_null(buf);
	for (int i = 0; i < GETS; i++)
		memcpy(buf + i * (sizeof get - 1), get, sizeof get - 1);
	assert_int_equal(tclient_send(c, buf, (sizeof get - 1) * GETS), 0);
	free(buf);
	for (int i = 0; i < GETS; i++) {
		struct goc_response r;
		assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
		assert_true(r.ok);
		assert_null(r.row);
		codec_response_free(&r);
	}
	call_ok(c, "{\"op\":\"stats\"}", &st);
	long long after = json_integer_value(json_object_get(json_object_get(st.root, "stats"), "coalesced"));
	codec_response_free(&st);
	if (after - before < GETS / 2)
		print_error("%lld of %d gets of a missing key coalesced\n", after - before, GETS);
	assert_true(after - before >= GETS / 2);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* A client that vanishes (mid-line, or right after a full request, with a
 * reset) must not disturb anyone else; its complete request still runs. */
static void test_disconnect_mid_request_does_not_disturb_others(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *by = connect_to(g);
	struct goc_response r;

	for (int round = 0; round < 20; round++) {
		struct tclient *half = connect_to(g), *gone = connect_to(g);
		assert_int_equal(tclient_sendf(half, "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"em"), 0);
		assert_int_equal(tclient_sendf(gone, "{\"op\":\"get_or_create\",\"table\":\"users\","
						     "\"key\":{\"email\":\"gone-%d@x\"}}\n", round), 0);
		if (round % 2) {
			/* reset instead of FIN */
			struct linger lg = { 1, 0 };
			setsockopt(tclient_fd(gone), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
		}
		tclient_close(gone);
		tclient_close(half);
		char req[160];
		snprintf(req, sizeof req, "{\"op\":\"get_or_create\",\"table\":\"users\","
					  "\"key\":{\"email\":\"gone-%d@x\"}}", round);
		call_ok(by, req, &r);
		codec_response_free(&r);
	}
	/* every full request ran exactly once: one row per key */
	assert_int_equal(tpg_count("SELECT count(*) FROM users WHERE email LIKE 'gone-%%@x'"), 20);
	check_still_serving(NULL, by, "disconnect");
	assert_true(tgocd_alive(g));
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* nc -N: the client shuts down its sending side and still reads every
 * answer, then gocd closes. */
static void test_half_close_gets_all_answers(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	for (int i = 0; i < 20; i++)
		assert_int_equal(tclient_sendf(c, "{\"op\":\"get_or_create\",\"id\":%d,\"table\":\"users\","
						  "\"key\":{\"email\":\"half-%d@x\"}}\n", i, i % 7), 0);
	/* the last line has no LF: the end of input ends it */
	assert_int_equal(tclient_sendf(c, "{\"op\":\"get_or_create\",\"id\":20,\"table\":\"users\","
					  "\"key\":{\"email\":\"half-last@x\"}}"), 0);
	assert_int_equal(shutdown(tclient_fd(c), SHUT_WR), 0);
	for (int i = 0; i <= 20; i++) {
		struct goc_response r;
		assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
		assert_true(r.ok);
		assert_int_equal(json_integer_value(r.id), i);
		if (i == 20)
			assert_true(r.created);
		codec_response_free(&r);
	}
	assert_int_equal(tclient_expect_eof(c, 5000), 0);
	assert_int_equal(tpg_count("SELECT count(*) FROM users WHERE email LIKE 'half-%%@x'"), 8);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* Half-close while requests are still waiting in PostgreSQL: gocd must not
 * take the client's EOF as the end of the conversation. */
static void test_half_close_with_slow_requests(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	struct tpg_session *s = tpg_session_open();
	assert_non_null(s);
	assert_int_equal(tpg_session_exec(s, "BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE"), 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(tclient_sendf(c, "{\"op\":\"get_or_create\",\"id\":%d,\"table\":\"users\","
						  "\"key\":{\"email\":\"hs-%d@x\"}}\n", i, i), 0);
	assert_int_equal(shutdown(tclient_fd(c), SHUT_WR), 0);
	harness_sleep_ms(300);
	assert_int_equal(tpg_session_exec(s, "COMMIT"), 0);
	for (int i = 0; i < 5; i++) {
		struct goc_response r;
		assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
		assert_true(r.ok);
		assert_true(r.created);
		assert_int_equal(json_integer_value(r.id), i);
		codec_response_free(&r);
	}
	assert_int_equal(tclient_expect_eof(c, 5000), 0);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

static void test_sigterm_exits_zero(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *idle = connect_to(g), *busy = connect_to(g);
	struct goc_response r;
	call_ok(busy, "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"email\":\"term@x\"}}", &r);
	codec_response_free(&r);
	/* with connections open (one idle), SIGTERM means a clean exit 0 */
	assert_int_equal(tgocd_stop(g), 0);
	/* and the connections are closed, not left hanging */
	assert_int_equal(tclient_expect_eof(idle, 5000), 0);
	harness_pass();
}

/* users locked by the returned session; c sends get_or_create of email
 * (id 1), then more (lines, may be ""); once it waits on the lock, SIGTERM. */
static struct tpg_session *sigterm_with_request_stuck(struct tgocd *g, struct tclient *c,
						      const char *email, const char *more)
{
	struct tpg_session *s = tpg_session_open();
	assert_non_null(s);
	assert_int_equal(tpg_session_exec(s, "BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE"), 0);
	assert_int_equal(tclient_sendf(c, "{\"op\":\"get_or_create\",\"id\":1,\"table\":\"users\","
					  "\"key\":{\"email\":\"%s\"}}\n%s", email, more), 0);
	harness_sleep_ms(200);
	tgocd_signal(g, SIGTERM);
	return s;
}

/* SIGTERM drains: a request already running in PostgreSQL is answered
 * before gocd exits 0. */
static void test_sigterm_drains_in_flight_requests(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	struct goc_response r;
	struct tpg_session *s = sigterm_with_request_stuck(g, c, "drain@x", "");
	harness_sleep_ms(300);
	/* still waiting for its request, not gone */
	assert_true(tgocd_alive(g));
	assert_int_equal(tpg_session_exec(s, "COMMIT"), 0);
	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	if (!r.ok)
		print_error("in-flight request during shutdown: %s\n", tclient_last(c));
	assert_true(r.ok);
	assert_true(r.created);
	codec_response_free(&r);
	assert_int_equal(tgocd_wait(g, 15000), 0);
	assert_int_equal(tpg_count("SELECT count(*) FROM users WHERE email = 'drain@x'"), 1);
	harness_pass();
}

/*
 * shutdown_timeout shorter than the wait: the request stuck on a lock is
 * answered `timeout` before gocd exits, and the ping pipelined behind it
 * gets its answer (both used to get a bare end of file).
 */
static void test_shutdown_timeout_answers_timeout(void **state)
{
	struct tgocd *g = tgocd_start(STD_ARGS, "--shutdown-timeout=500", NULL);
	assert_non_null(g);
	struct tclient *c = connect_to(g);
	struct goc_response r;
	struct tpg_session *s = sigterm_with_request_stuck(g, c, "stuck-at-exit@x",
							   "{\"op\":\"ping\",\"id\":2}\n");
	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	if (r.ok || r.code != GOC_E_TIMEOUT)
		print_error("the stuck request at shutdown_timeout: %s\n", tclient_last(c));
	assert_int_equal(json_integer_value(r.id), 1);
	assert_int_equal(r.code, GOC_E_TIMEOUT);
	codec_response_free(&r);
	/* the ping's answer was ready, waiting behind it in order */
	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_int_equal(json_integer_value(r.id), 2);
	assert_true(r.ok);
	codec_response_free(&r);
	assert_int_equal(tgocd_wait(g, 15000), 0);
	assert_int_equal(tpg_session_exec(s, "COMMIT"), 0);
	tpg_session_close(s);
	tclient_close(c);
	harness_pass();
}

static void test_unix_socket(void **state)
{
	char path[300], arg[320];
	snprintf(path, sizeof path, "%s/gocd.sock", harness_dir());
	snprintf(arg, sizeof arg, "--unix=%s", path);
	struct tgocd *g = tgocd_start(STD_ARGS, arg, NULL);
	assert_non_null(g);
	struct tclient *c = tclient_unix(path);
	assert_non_null(c);
	struct goc_response r;
	call_ok(c, "{\"op\":\"ping\",\"id\":1}", &r);
	codec_response_free(&r);
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"email\":\"unix@x\"}}", &r);
	assert_true(r.created);
	codec_response_free(&r);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

static void test_schema_qualified_table(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	struct goc_response r;
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"app.items\",\"key\":{\"sku\":\"S1\"},"
		   "\"defaults\":{\"qty\":4}}", &r);
	assert_true(r.created);
	assert_int_equal(row_int(&r, "qty"), 4);
	codec_response_free(&r);
	assert_int_equal(tpg_count("SELECT qty FROM app.items WHERE sku = 'S1'"), 4);
	call_error(c, "{\"op\":\"get\",\"table\":\"items\",\"key\":{\"sku\":\"S1\"}}", GOC_E_UNKNOWN_TABLE);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* ---- limits and slow PostgreSQL -------------------------------------------- */

static long long elapsed_ms(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1000LL + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

/* A statement stuck behind a lock: `timeout` after request_timeout, other
 * tables keep being served, and calling again later returns the row. */
static void test_timeout_when_postgres_is_stuck(void **state)
{
	struct tgocd *g = tgocd_start(STD_ARGS, "--request-timeout=1000", NULL);
	assert_non_null(g);
	struct tclient *c = connect_to(g), *by = connect_to(g);
	struct goc_response r;
	struct tpg_session *s = tpg_session_open();
	assert_non_null(s);
	assert_int_equal(tpg_session_exec(s, "BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE"), 0);

	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	call_error(c, "{\"op\":\"get_or_create\",\"id\":1,\"table\":\"users\",\"key\":{\"email\":\"to@x\"}}",
		   GOC_E_TIMEOUT);
	long long ms = elapsed_ms(&t0);
	if (ms < 900 || ms > 5000)
		print_error("timeout answered after %lld ms with request_timeout 1000\n", ms);
	assert_true(ms >= 900 && ms <= 5000);

	/* one stuck table does not stop the others */
	call_ok(by, "{\"op\":\"get_or_create\",\"table\":\"ints\",\"key\":{\"n\":424242}}", &r);
	codec_response_free(&r);

	/* Pipelined behind a stuck request, fast ones keep their order: the
	 * timeout first, then the others. */
	assert_int_equal(tclient_sendf(c,
		"{\"op\":\"get_or_create\",\"id\":2,\"table\":\"users\",\"key\":{\"email\":\"to2@x\"}}\n"
		"{\"op\":\"get_or_create\",\"id\":3,\"table\":\"ints\",\"key\":{\"n\":424243}}\n"
		"{\"op\":\"ping\",\"id\":4}\n"), 0);
	for (int id = 2; id <= 4; id++) {
		assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
		if (json_integer_value(r.id) != id)
			print_error("expected the answer to id %d, got %s\n", id, tclient_last(c));
		assert_int_equal(json_integer_value(r.id), id);
		if (id == 2)
			assert_int_equal(r.code, GOC_E_TIMEOUT);
		else
			assert_true(r.ok);
		codec_response_free(&r);
	}

	assert_int_equal(tpg_session_exec(s, "COMMIT"), 0);
	tpg_session_close(s);
	/* The abandoned statements finish now; their late results must not
	 * produce a second answer.  Retry is safe: the row, exactly once. */
	harness_sleep_ms(300);
	call_ok(c, "{\"op\":\"get_or_create\",\"id\":5,\"table\":\"users\",\"key\":{\"email\":\"to@x\"}}", &r);
	if (json_integer_value(r.id) != 5)
		print_error("expected the answer to id 5, got %s\n", tclient_last(c));
	assert_int_equal(json_integer_value(r.id), 5);
	assert_string_equal(row_str(&r, "email"), "to@x");
	codec_response_free(&r);
	call_ok(c, "{\"op\":\"get_or_create\",\"id\":6,\"table\":\"users\",\"key\":{\"email\":\"to2@x\"}}", &r);
	assert_int_equal(json_integer_value(r.id), 6);
	codec_response_free(&r);
	assert_int_equal(tpg_count("SELECT count(*) FROM users WHERE email = 'to2@x'"), 1);
	assert_int_equal(tpg_count("SELECT count(*) FROM users WHERE email = 'to@x'"), 1);
	check_still_serving(c, by, "timeout");
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* PROTOCOL.md: "A request keeps running when its client disconnects; other
 * clients waiting on the same key get the row."  The first request is held
 * in PostgreSQL by a lock while its client leaves and a second client
 * queues on the same key. */
static void test_disconnected_request_still_serves_waiters(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *a = connect_to(g), *b = connect_to(g);
	struct goc_response r;
	struct tpg_session *s = tpg_session_open();
	assert_non_null(s);
	assert_int_equal(tpg_session_exec(s, "BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE"), 0);

	assert_int_equal(tclient_sendf(a, "{\"op\":\"get_or_create\",\"table\":\"users\","
					  "\"key\":{\"email\":\"dw@x\"},\"defaults\":{\"name\":\"A\"}}\n"), 0);
	harness_sleep_ms(200);
	tclient_close(a);
	harness_sleep_ms(100);
	assert_int_equal(tclient_sendf(b, "{\"op\":\"get_or_create\",\"table\":\"users\","
					  "\"key\":{\"email\":\"dw@x\"},\"defaults\":{\"name\":\"B\"}}\n"), 0);
	harness_sleep_ms(200);
	assert_int_equal(tpg_session_exec(s, "COMMIT"), 0);

	assert_int_equal(tclient_recv(b, &r, HARNESS_IO_TIMEOUT_MS), 0);
	const char *name = r.row ? json_string_value(json_object_get(r.row, "name")) : NULL;
	if (!r.ok || r.created || name == NULL || strcmp(name, "A") != 0)
		print_error("expected A's row with created:false, got %s\n", tclient_last(b));
	assert_true(r.ok);
	assert_false(r.created);
	assert_string_equal(row_str(&r, "name"), "A");
	codec_response_free(&r);
	assert_int_equal(tpg_count("SELECT count(*) FROM users WHERE email = 'dw@x'"), 1);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* max_clients: one more connection gets one `overloaded` line and is
 * closed; a freed slot is usable again, and so is a lingering one's. */
static void test_overloaded_max_clients(void **state)
{
	struct tgocd *g = tgocd_start(STD_ARGS, "--max-clients=3", NULL);
	assert_non_null(g);
	struct tclient *c[3];
	struct goc_response r;
	for (int i = 0; i < 3; i++) {
		c[i] = connect_to(g);
		call_ok(c[i], "{\"op\":\"ping\"}", &r);
		codec_response_free(&r);
	}
	struct tclient *extra = connect_to(g);
	assert_int_equal(tclient_recv(extra, &r, HARNESS_IO_TIMEOUT_MS), 0);
	if (r.ok || r.code != GOC_E_OVERLOADED)
		print_error("expected overloaded, got %s\n", tclient_last(extra));
	assert_int_equal(r.code, GOC_E_OVERLOADED);
	codec_response_free(&r);
	assert_int_equal(tclient_expect_eof(extra, 5000), 0);
	tclient_close(extra);

	/* the others are unaffected */
	call_ok(c[0], "{\"op\":\"ping\"}", &r);
	codec_response_free(&r);

	tclient_close(c[2]);
	int waited = 0;
	for (;;) {
		struct tclient *again = connect_to(g);
		int rc = tclient_call(again, "{\"op\":\"ping\"}", &r);
		bool ok = rc == 0 && r.ok;
		if (rc == 0)
			codec_response_free(&r);
		tclient_close(again);
		if (ok)
			break;
		if (waited >= 5000)
			fail_msg("a freed client slot was not reusable within %d ms", waited);
		harness_sleep_ms(100);
		waited += 100;
	}

	/* Full again; then one client breaks max_line and keeps its socket
	 * open, so gocd lingers on it (5 s).  Its slot goes to the next
	 * client at once rather than that client being refused. */
	for (waited = 0;; waited += 100) {
		c[2] = connect_to(g);
		int rc = tclient_call(c[2], "{\"op\":\"ping\"}", &r);
		bool ok = rc == 0 && r.ok;
		if (rc == 0)
			codec_response_free(&r);
		if (ok)
			break;
		tclient_close(c[2]);
		if (waited >= 5000)
			fail_msg("a freed client slot was not reusable within %d ms", waited);
		harness_sleep_ms(100);
	}
	char *big = ping_of_length(STD_MAX_LINE + 1, 0);
	tclient_send(c[1], big, strlen(big));
	free(big);
	assert_int_equal(tclient_recv(c[1], &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_int_equal(r.code, GOC_E_TOO_LARGE);
	codec_response_free(&r);
	extra = connect_to(g);
	assert_int_equal(tclient_call(extra, "{\"op\":\"ping\"}", &r), 0);
	if (!r.ok)
		print_error("a lingering connection kept its slot: %s\n", tclient_last(extra));
	assert_true(r.ok);
	codec_response_free(&r);
	call_ok(c[0], "{\"op\":\"ping\"}", &r);
	codec_response_free(&r);
	for (int i = 0; i < 3; i++)
		tclient_close(c[i]);
	tclient_close(extra);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* max_waiters: the owner plus max_waiters queued requests per key; the
 * next one gets `overloaded` at once and its connection stays open. */
static void test_overloaded_max_waiters(void **state)
{
	struct tgocd *g = tgocd_start(STD_ARGS, "--max-waiters=2", NULL);
	assert_non_null(g);
	struct tclient *c[4];
	struct goc_response r;
	for (int i = 0; i < 4; i++)
		c[i] = connect_to(g);
	struct tpg_session *s = tpg_session_open();
	assert_non_null(s);
	assert_int_equal(tpg_session_exec(s, "BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE"), 0);

	for (int i = 0; i < 4; i++) {
		assert_int_equal(tclient_sendf(c[i], "{\"op\":\"get_or_create\",\"id\":%d,\"table\":\"users\","
						     "\"key\":{\"email\":\"mw@x\"}}\n", i), 0);
		harness_sleep_ms(100);
	}
	/* answered while the other three still wait on the lock */
	assert_int_equal(tclient_recv(c[3], &r, 3000), 0);
	if (r.code != GOC_E_OVERLOADED)
		print_error("expected overloaded, got %s\n", tclient_last(c[3]));
	assert_int_equal(r.code, GOC_E_OVERLOADED);
	assert_int_equal(json_integer_value(r.id), 3);
	codec_response_free(&r);

	assert_int_equal(tpg_session_exec(s, "COMMIT"), 0);
	int created = 0;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(tclient_recv(c[i], &r, HARNESS_IO_TIMEOUT_MS), 0);
		if (!r.ok)
			print_error("conn %d: %s\n", i, tclient_last(c[i]));
		assert_true(r.ok);
		created += r.created;
		codec_response_free(&r);
	}
	assert_int_equal(created, 1);
	/* the refused connection stays open and is served */
	call_ok(c[3], "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"email\":\"mw@x\"}}", &r);
	assert_false(r.created);
	codec_response_free(&r);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* Framing on the wire: CRLF accepted, blank lines ignored (no answer), and
 * any JSON id echoed verbatim. */
static void test_crlf_blank_lines_and_id_echo(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	struct goc_response r;
	assert_int_equal(tclient_sendf(c,
		"\n \t\n{\"op\":\"ping\",\"id\":1}\r\n\r\n"
		"{\"op\":\"ping\",\"id\":\"two\"}\n"
		"{\"op\":\"ping\",\"id\":{\"a\":[1,\"x\",{\"b\":null}]}}\n"
		"{\"op\":\"ping\",\"id\":null}\n"
		"{\"op\":\"ping\",\"id\":1.5}\n"
		"{\"op\":\"ping\",\"id\":9007199254740993}\n"
		"{\"op\":\"ping\"}\n"
		"{\"op\":\"ping\",\"id\":\"end\"}\n"), 0);

	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_int_equal(json_integer_value(r.id), 1);
	codec_response_free(&r);

	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_string_equal(json_string_value(r.id), "two");
	codec_response_free(&r);

	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	json_t *want = json_loads("{\"a\":[1,\"x\",{\"b\":null}]}", 0, NULL);
	assert_true(json_equal(r.id, want));
	json_decref(want);
	codec_response_free(&r);

	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_non_null(r.id);
	assert_true(json_is_null(r.id));
	codec_response_free(&r);

	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_true(json_is_real(r.id));
	assert_true(json_real_value(r.id) == 1.5);
	codec_response_free(&r);

	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_int_equal(json_integer_value(r.id), 9007199254740993LL);
	assert_non_null(strstr(tclient_last(c), "\"id\":9007199254740993"));
	codec_response_free(&r);

	/* no id in the request: none in the answer */
	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_null(r.id);
	assert_null(strstr(tclient_last(c), "\"id\""));
	codec_response_free(&r);

	/* and nothing was answered for the blank lines */
	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_string_equal(json_string_value(r.id), "end");
	codec_response_free(&r);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* Boot order: gocd started while PostgreSQL is down serves `unavailable`
 * (not a hang, not an exit), then real answers once PostgreSQL is up. */
static void test_starts_while_postgres_down(void **state)
{
	assert_int_equal(tpg_stop(), 0);
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	struct goc_response r;
	call_error(c, "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"email\":\"boot@x\"}}",
		   GOC_E_UNAVAILABLE);
	assert_true(tgocd_alive(g));
	assert_int_equal(tpg_resume(), 0);
	int waited = 0;
	for (;;) {
		assert_int_equal(tclient_call(c, "{\"op\":\"get_or_create\",\"table\":\"users\","
					     "\"key\":{\"email\":\"boot@x\"}}", &r), 0);
		bool ok = r.ok;
		if (!ok && r.code != GOC_E_UNAVAILABLE)
			print_error("while PostgreSQL comes up: %s\n", tclient_last(c));
		assert_true(ok || r.code == GOC_E_UNAVAILABLE);
		if (ok)
			assert_true(r.created);
		codec_response_free(&r);
		if (ok)
			break;
		if (waited >= 10000)
			fail_msg("gocd still unavailable %d ms after PostgreSQL came up", waited);
		harness_sleep_ms(200);
		waited += 200;
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM users WHERE email = 'boot@x'"), 1);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

#define MAXOUT_REQUESTS 3000

/* max_output: a client that sends but never reads is dropped once its
 * unread answers pass the limit, instead of growing gocd's memory; others
 * are not affected. */
static void test_max_output_drops_client_that_never_reads(void **state)
{
	assert_int_equal(tpg_exec("INSERT INTO docs(k, note) VALUES ('bigrow', repeat('x', 6000))"), 0);
	struct tgocd *g = tgocd_start(STD_ARGS, "--max-output=65536", NULL);
	assert_non_null(g);
	struct tclient *c = connect_to(g), *by = connect_to(g);
	/* A small receive buffer (no autotuning) keeps the kernel from
	 * absorbing the answers on machines with large socket buffers. */
	int rcvbuf = 16384;
	setsockopt(tclient_fd(c), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);

	/* about 18 MB of answers: more than the kernel's socket buffers */
	static const char req[] = "{\"op\":\"get\",\"table\":\"docs\",\"key\":{\"k\":\"bigrow\"}}\n";
	size_t n = sizeof req - 1;
	char *buf = malloc(n * MAXOUT_REQUESTS);
	assert_non_null(buf);
	for (int i = 0; i < MAXOUT_REQUESTS; i++)
		memcpy(buf + (size_t)i * n, req, n);
	/* may fail part-way once gocd has dropped us */
	tclient_send(c, buf, n * MAXOUT_REQUESTS);
	free(buf);

	check_still_serving(NULL, by, "max_output");
	harness_sleep_ms(2000);
	size_t lines = 0;
	assert_int_equal(tclient_drain(c, 20000, &lines), 0);
	if (lines >= MAXOUT_REQUESTS)
		print_error("all %d answers were delivered: the client was never dropped\n",
			    MAXOUT_REQUESTS);
	assert_true(lines < MAXOUT_REQUESTS);
	/* dropped for this reason, not another: operators are told the limit */
	char *log = tgocd_log(g);
	assert_non_null(log);
	if (strstr(log, "max_output") == NULL)
		print_error("gocd log does not name max_output as the reason for the drop\n");
	assert_non_null(strstr(log, "max_output"));
	free(log);
	check_still_serving(NULL, by, "max_output2");
	assert_true(tgocd_alive(g));
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* With a NULLS NOT DISTINCT unique index a null key is a key like any
 * other: found by the SELECT (IS NOT DISTINCT FROM, not =) and created
 * exactly once. */
static void test_nulls_not_distinct_key(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	struct goc_response r;
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"nnd\",\"key\":{\"k\":null},\"defaults\":{\"v\":1}}", &r);
	assert_true(r.created);
	long long id = row_int(&r, "id");
	assert_true(json_is_null(json_object_get(r.row, "k")));
	codec_response_free(&r);
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"nnd\",\"key\":{\"k\":null},\"defaults\":{\"v\":2}}", &r);
	assert_false(r.created);
	assert_int_equal(row_int(&r, "id"), id);
	assert_int_equal(row_int(&r, "v"), 1);
	codec_response_free(&r);
	call_ok(c, "{\"op\":\"get\",\"table\":\"nnd\",\"key\":{\"k\":null}}", &r);
	assert_int_equal(row_int(&r, "id"), id);
	codec_response_free(&r);
	assert_int_equal(tpg_count("SELECT count(*) FROM nnd WHERE k IS NULL"), 1);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* Column names that are SQL keywords must be quoted in every statement. */
static void test_keyword_column_names(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	struct goc_response r;
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"kw\",\"key\":{\"user\":\"u1\"},"
		   "\"defaults\":{\"order\":3,\"select\":\"x\"}}", &r);
	assert_true(r.created);
	assert_int_equal(row_int(&r, "order"), 3);
	assert_string_equal(row_str(&r, "select"), "x");
	codec_response_free(&r);
	call_ok(c, "{\"op\":\"get\",\"table\":\"kw\",\"key\":{\"user\":\"u1\"}}", &r);
	assert_string_equal(row_str(&r, "user"), "u1");
	codec_response_free(&r);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* A database defaulting to REPEATABLE READ: two daemons racing on the same
 * keys must still give one row and one created:true per key, with no
 * serialization failure reaching the client. */
static void test_herd_repeatable_read_database(void **state)
{
	char pg[200];
	snprintf(pg, sizeof pg, "--postgres=host=127.0.0.1 port=%d user=postgres dbname=rr", tpg_port());
	struct tgocd *g[2];
	for (int i = 0; i < 2; i++) {
		g[i] = tgocd_start("--table=rrt=k", "--pool-size=8", "--request-timeout=10000", pg, NULL);
		assert_non_null(g[i]);
	}
	struct tclient *cl[HERD_CONNS];
	for (int i = 0; i < HERD_CONNS; i++)
		cl[i] = connect_to(g[i % 2]);
	static char req[HERD_CONNS][200];
	for (int k = 0; k < 20; k++) {
		for (int i = 0; i < HERD_CONNS; i++)
			snprintf(req[i], sizeof req[i],
				 "{\"op\":\"get_or_create\",\"id\":%d,\"table\":\"rrt\","
				 "\"key\":{\"k\":\"rr-%d\"},\"defaults\":{\"n\":%d}}\n", i, k, i);
		for (int i = 0; i < HERD_CONNS; i++)
			assert_int_equal(tclient_send(cl[i], req[i], strlen(req[i])), 0);
		int created = 0;
		for (int i = 0; i < HERD_CONNS; i++) {
			struct goc_response r;
			assert_int_equal(tclient_recv(cl[i], &r, HARNESS_IO_TIMEOUT_MS), 0);
			if (!r.ok)
				print_error("key rr-%d conn %d: %s\n", k, i, tclient_last(cl[i]));
			assert_true(r.ok);
			created += r.created;
			codec_response_free(&r);
		}
		assert_int_equal(created, 1);
	}
	assert_int_equal(tgocd_stop(g[0]), 0);
	assert_int_equal(tgocd_stop(g[1]), 0);
	harness_pass();
}

/* ---- batching (a pool smaller than the offered load) ------------------------ */

/* A counter from the `stats` answer's "batch" object: proves a batching
 * test really sent batches (otherwise it would prove nothing). */
static long long batch_stat(struct tclient *c, const char *name)
{
	struct goc_response r;
	call_ok(c, "{\"op\":\"stats\"}", &r);
	json_t *v = json_object_get(json_object_get(json_object_get(r.root, "stats"), "batch"), name);
	if (!json_is_integer(v))
		print_error("stats has no batch.%s: %s\n", name, tclient_last(c));
	assert_true(json_is_integer(v));
	long long n = json_integer_value(v);
	codec_response_free(&r);
	return n;
}

#define BATCH_CONNS 8
#define BATCH_PER_CONN 60

/* Expected outcome of request j in test_batches_isolate_failures. */
static enum goc_err batch_expect(int j, const char **age)
{
	switch (j % 6) {
	case 1: *age = "-1"; return GOC_E_CONSTRAINT_VIOLATION;
	case 3: *age = "\"abc\""; return GOC_E_INVALID_VALUE;
	case 5: *age = "99999999999"; return GOC_E_INVALID_VALUE;
	default: *age = "7"; return GOC_OK;
	}
}

#define TRIG_CONNS 4
#define TRIG_PER_CONN 40

/* Pipelined get_or_create of new mixed-case keys over TRIG_CONNS connections
 * (batches, with one pool connection): each must be told created:true with
 * the row the trigger lower-cased. */
static void trig_batch_all_created(struct tgocd *g, const char *table);

/*
 * A BEFORE INSERT trigger that changes the key (here: lower-cases it).  A
 * batch matched the rows it inserted to its requests by key, so it missed
 * every such row: the rows were created, nobody was told created:true, and
 * each request was answered `internal`, which says nothing was written.
 * Each request that creates a row must be told so, batched or not.
 */
static void test_trigger_changing_key_in_batches(void **state)
{
	/* (not in SCHEMA, which is split at every semicolon) */
	assert_int_equal(tpg_exec(
		"CREATE TABLE trigk(id bigserial primary key, k text not null unique, n int);"
		"CREATE FUNCTION trigk_lower() RETURNS trigger LANGUAGE plpgsql AS"
		"  $$BEGIN NEW.k := lower(NEW.k); RETURN NEW; END$$;"
		"CREATE TRIGGER trigk_lower BEFORE INSERT ON trigk FOR EACH ROW"
		"  EXECUTE FUNCTION trigk_lower();"), 0);
	struct tgocd *g = tgocd_start(STD_ARGS, "--table=trigk=k", "--pool-size=1", NULL);
	assert_non_null(g);
	trig_batch_all_created(g, "trigk");
	/* the key as the trigger stored it is found */
	struct tclient *c = connect_to(g);
	struct goc_response r;
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"trigk\",\"key\":{\"k\":\"trig-0-0\"}}", &r);
	assert_false(r.created);
	codec_response_free(&r);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * A trigger that drops some rows (RETURN NULL): the insert writes nothing,
 * the re-read finds nothing, and after a few rounds the request is answered
 * internal.  The answer used to blame a concurrent delete only; it names
 * the likelier causes now, and says nothing was written - which is checked.
 */
static void test_row_dropped_by_trigger_is_explained(void **state)
{
	assert_int_equal(tpg_exec(
		"CREATE TABLE trigdrop(id bigserial primary key, k text not null unique);"
		"CREATE FUNCTION trigdrop_f() RETURNS trigger LANGUAGE plpgsql AS"
		"  $$BEGIN IF NEW.k LIKE 'drop%%' THEN RETURN NULL; END IF; RETURN NEW; END$$;"
		"CREATE TRIGGER trigdrop_t BEFORE INSERT ON trigdrop FOR EACH ROW"
		"  EXECUTE FUNCTION trigdrop_f();"), 0);
	struct tgocd *g = tgocd_start(STD_ARGS, "--table=trigdrop=k", NULL);
	assert_non_null(g);
	struct tclient *c = connect_to(g);
	struct goc_response r;
	assert_int_equal(tclient_call(c, "{\"op\":\"get_or_create\",\"table\":\"trigdrop\","
				      "\"key\":{\"k\":\"drop-me\"}}", &r), 0);
	if (r.ok || r.code != GOC_E_INTERNAL || strstr(r.message, "dropped by a trigger") == NULL ||
	    strstr(r.message, "this request wrote nothing") == NULL)
		print_error("a row the trigger drops: %s\n", tclient_last(c));
	assert_int_equal(r.code, GOC_E_INTERNAL);
	assert_non_null(strstr(r.message, "dropped by a trigger"));
	codec_response_free(&r);
	assert_int_equal(tpg_count("SELECT count(*) FROM trigdrop"), 0);
	/* and the table serves the rows the trigger keeps */
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"trigdrop\",\"key\":{\"k\":\"kept\"}}", &r);
	assert_true(r.created);
	codec_response_free(&r);
	tclient_close(c);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * gocd serving a new table `name` through one pool connection that is up
 * and has read the catalog (no reconnect would see a trigger by itself),
 * then a lower-casing BEFORE INSERT trigger created on the table.
 */
static struct tgocd *start_then_add_trigger(const char *name)
{
	assert_int_equal(tpg_exec("CREATE TABLE %s(id bigserial primary key, k text not null "
				  "unique, n int)", name), 0);
	char table[64], req[160];
	snprintf(table, sizeof table, "--table=%s=k", name);
	struct tgocd *g = tgocd_start(STD_ARGS, table, "--pool-size=1", NULL);
	assert_non_null(g);
	struct tclient *c = connect_to(g);
	struct goc_response r;
	snprintf(req, sizeof req, "{\"op\":\"get_or_create\",\"table\":\"%s\",\"key\":{\"k\":\"warm\"}}",
		 name);
	call_ok(c, req, &r);
	assert_true(r.created);
	codec_response_free(&r);
	tclient_close(c);
	assert_int_equal(tpg_exec(
		"CREATE FUNCTION %s_lower() RETURNS trigger LANGUAGE plpgsql AS"
		"  $$BEGIN NEW.k := lower(NEW.k); RETURN NEW; END$$;"
		"CREATE TRIGGER %s_lower BEFORE INSERT ON %s FOR EACH ROW"
		"  EXECUTE FUNCTION %s_lower();", name, name, name, name), 0);
	return g;
}

/* Wait for `line` in g's log; fail, showing the log, if it never comes. */
static void expect_log(struct tgocd *g, const char *line)
{
	char *log = tgocd_wait_log(g, line, 5000);
	bool seen = strstr(log, line) != NULL;
	free(log);
	if (!seen)
		tgocd_print_log(g);
	assert_true(seen);
}

/* A trigger created while gocd runs: a reload (SIGHUP) is how it is seen. */
static void test_trigger_added_then_reload(void **state)
{
	struct tgocd *g = start_then_add_trigger("trigk2");
	tgocd_signal(g, SIGHUP);
	expect_log(g, "table \"trigk2\": a BEFORE INSERT row trigger");
	trig_batch_all_created(g, "trigk2");
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * A trigger created while gocd runs, and no reload: the first insert batch
 * stored every row under the lower-cased key, matched none of them to its
 * requests, and committed anyway; nobody was told created:true and each
 * request was answered internal.  The batch now fails on such a row, so
 * nothing is written; its requests run alone, and the table's inserts stay
 * one at a time.
 */
static void test_trigger_added_without_reload(void **state)
{
	struct tgocd *g = start_then_add_trigger("trigk4");
	trig_batch_all_created(g, "trigk4");
	expect_log(g, "table \"trigk4\": an insert batch met a BEFORE INSERT row trigger");
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * The same, where the trigger folds each rewritten key onto another
 * request's key in the batch ("Fold-0" stored as "fold-0", where "fold-0"
 * is asked for too).  Every inserted row then matched some request, so
 * the batch committed: "fold-N" was told created:true for the row "Fold-N"
 * inserted (with Fold-N's defaults), and "Fold-N", which did write it, was
 * answered internal, "this request wrote nothing".  Whoever is told
 * created:true must be the request whose values are in the row.
 */
static void test_trigger_added_folding_keys_onto_others(void **state)
{
	struct tgocd *g = start_then_add_trigger("trigk5");
	enum { PAIRS = 8 };
	struct tclient *c = connect_to(g);
	char buf[PAIRS * 2 * 128];
	size_t len = 0;
	for (int i = 0; i < PAIRS; i++)
		for (int up = 1; up >= 0; up--) /* n = 1: the upper-case spelling */
			len += (size_t)snprintf(buf + len, sizeof buf - len,
				"{\"op\":\"get_or_create\",\"table\":\"trigk5\",\"key\":{\"k\":\"%s-%d\"},"
				"\"defaults\":{\"n\":%d}}\n", up ? "Fold" : "fold", i, up);
	assert_int_equal(tclient_send(c, buf, len), 0); /* one write: one batch */
	for (int i = 0; i < PAIRS; i++) {
		int created = 0;
		for (int up = 1; up >= 0; up--) {
			struct goc_response r;
			assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
			if (r.ok && r.created && row_int(&r, "n") != up)
				print_error("%s-%d told created:true for another request's row: %s\n",
					    up ? "Fold" : "fold", i, tclient_last(c));
			if (r.ok && r.created) {
				assert_int_equal(row_int(&r, "n"), up);
				created++;
			}
			codec_response_free(&r);
		}
		assert_int_equal(created, 1);
	}
	tclient_close(c);
	assert_int_equal(tpg_count("SELECT count(*) FROM trigk5 WHERE k LIKE 'fold-%%'"), PAIRS);
	expect_log(g, "table \"trigk5\": an insert batch met a BEFORE INSERT row trigger");
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * The trigger is seen (a reload) while inserts already wait in the insert
 * queue: they were queued when batching them was still right, and went out
 * as one batch that lost who created each row.  Here most keys are new, so
 * requests skip the lookup and queue for an insert batch straight away;
 * they wait behind a statement blocked by a lock held by the transaction
 * that creates the trigger, and the reload's catalog check runs before them.
 */
static void test_trigger_seen_while_inserts_queued(void **state)
{
	assert_int_equal(tpg_exec(
		"CREATE TABLE trigk3(id bigserial primary key, k text not null unique, n int);"), 0);
	struct tgocd *g = tgocd_start(STD_ARGS, "--table=trigk3=k", "--pool-size=1", NULL);
	assert_non_null(g);
	/* all new keys: from now on lookups are skipped */
	struct tclient *warm = connect_to(g);
	for (int j = 0; j < 64; j++)
		assert_int_equal(tclient_sendf(warm, "{\"op\":\"get_or_create\",\"table\":\"trigk3\","
					       "\"key\":{\"k\":\"warm-%d\"}}\n", j), 0);
	struct goc_response r;
	for (int j = 0; j < 64; j++) {
		assert_int_equal(tclient_recv(warm, &r, HARNESS_IO_TIMEOUT_MS), 0);
		assert_true(r.ok && r.created);
		codec_response_free(&r);
	}
	tclient_close(warm);
	struct tpg_session *s = tpg_session_open();
	assert_non_null(s);
	assert_int_equal(tpg_session_exec(s,
		"BEGIN; LOCK TABLE trigk3 IN ACCESS EXCLUSIVE MODE;"
		"CREATE FUNCTION trigk3_lower() RETURNS trigger LANGUAGE plpgsql AS"
		"  $$BEGIN NEW.k := lower(NEW.k); RETURN NEW; END$$;"
		"CREATE TRIGGER trigk3_lower BEFORE INSERT ON trigk3 FOR EACH ROW"
		"  EXECUTE FUNCTION trigk3_lower()"), 0);
	struct tclient *blocker = connect_to(g);
	assert_int_equal(tclient_sendf(blocker, "{\"op\":\"get_or_create\",\"table\":\"trigk3\","
				       "\"key\":{\"k\":\"blocker\"}}\n"), 0);
	harness_sleep_ms(200);
	struct tclient *cl[TRIG_CONNS];
	for (int i = 0; i < TRIG_CONNS; i++) {
		cl[i] = connect_to(g);
		for (int j = 0; j < TRIG_PER_CONN; j++)
			assert_int_equal(tclient_sendf(cl[i], "{\"op\":\"get_or_create\",\"table\":\"trigk3\","
						       "\"key\":{\"k\":\"Late-%d-%d\"}}\n", i, j), 0);
	}
	harness_sleep_ms(200);
	tgocd_signal(g, SIGHUP);
	harness_sleep_ms(200);
	assert_int_equal(tpg_session_exec(s, "COMMIT"), 0);
	tpg_session_close(s);
	assert_int_equal(tclient_recv(blocker, &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_true(r.ok && r.created);
	codec_response_free(&r);
	for (int i = 0; i < TRIG_CONNS; i++) {
		for (int j = 0; j < TRIG_PER_CONN; j++) {
			assert_int_equal(tclient_recv(cl[i], &r, HARNESS_IO_TIMEOUT_MS), 0);
			if (!r.ok || !r.created)
				print_error("Late-%d-%d: %s\n", i, j, tclient_last(cl[i]));
			assert_true(r.ok && r.created);
			codec_response_free(&r);
		}
		tclient_close(cl[i]);
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM trigk3 WHERE k LIKE 'late-%%'"),
			 TRIG_CONNS * TRIG_PER_CONN);
	/* Seen by the reload, or first by the blocked statement itself, which
	 * runs once the trigger is committed and so meets it. */
	char *log = tgocd_log(g);
	assert_true(strstr(log, "table \"trigk3\": a BEFORE INSERT row trigger") != NULL ||
		    strstr(log, "table \"trigk3\": an insert batch met a BEFORE INSERT row trigger") != NULL);
	free(log);
	tclient_close(blocker);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

static void trig_batch_all_created(struct tgocd *g, const char *table)
{
	struct tclient *cl[TRIG_CONNS];
	for (int i = 0; i < TRIG_CONNS; i++)
		cl[i] = connect_to(g);
	for (int i = 0; i < TRIG_CONNS; i++) {
		char buf[TRIG_PER_CONN * 128];
		size_t len = 0;
		for (int j = 0; j < TRIG_PER_CONN; j++)
			len += (size_t)snprintf(buf + len, sizeof buf - len,
				"{\"op\":\"get_or_create\",\"table\":\"%s\","
				"\"key\":{\"k\":\"Trig-%d-%d\"},\"defaults\":{\"n\":%d}}\n", table, i, j, j);
		assert_int_equal(tclient_send(cl[i], buf, len), 0);
	}
	for (int i = 0; i < TRIG_CONNS; i++)
		for (int j = 0; j < TRIG_PER_CONN; j++) {
			struct goc_response r;
			assert_int_equal(tclient_recv(cl[i], &r, HARNESS_IO_TIMEOUT_MS), 0);
			if (!r.ok || !r.created)
				print_error("conn %d req %d: expected created, got %s\n", i, j,
					    tclient_last(cl[i]));
			assert_true(r.ok);
			assert_true(r.created);
			char want[64];
			snprintf(want, sizeof want, "trig-%d-%d", i, j);
			assert_string_equal(row_str(&r, "k"), want);
			assert_int_equal(row_int(&r, "n"), j);
			codec_response_free(&r);
		}
	assert_int_equal(tpg_count("SELECT count(*) FROM %s WHERE k LIKE 'trig-%%'", table),
			 TRIG_CONNS * TRIG_PER_CONN);
	for (int i = 0; i < TRIG_CONNS; i++)
		tclient_close(cl[i]);
}

/*
 * With one pool connection, concurrent requests of the same shape are sent
 * as one statement.  A bad value or a CHECK failure in one of them must
 * get that request its own error and leave the others created, each
 * exactly once.  Run twice: the second pass is all hits.
 */
static void test_batches_isolate_failures(void **state)
{
	struct tgocd *g = tgocd_start(STD_ARGS, "--pool-size=1", NULL);
	assert_non_null(g);
	struct tclient *cl[BATCH_CONNS];
	for (int i = 0; i < BATCH_CONNS; i++)
		cl[i] = connect_to(g);

	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < BATCH_CONNS; i++) {
			char *buf = malloc(BATCH_PER_CONN * 200);
			size_t len = 0;
			assert_non_null(buf);
			for (int j = 0; j < BATCH_PER_CONN; j++) {
				const char *age;
				batch_expect(j, &age);
				len += (size_t)sprintf(buf + len,
					"{\"op\":\"get_or_create\",\"id\":%d,\"table\":\"users\","
					"\"key\":{\"email\":\"batch-%d-%d\"},\"defaults\":{\"age\":%s}}\n",
					j, i, j, age);
			}
			assert_int_equal(tclient_send(cl[i], buf, len), 0);
			free(buf);
		}
		for (int i = 0; i < BATCH_CONNS; i++)
			for (int j = 0; j < BATCH_PER_CONN; j++) {
				struct goc_response r;
				const char *age;
				enum goc_err want = batch_expect(j, &age);
				assert_int_equal(tclient_recv(cl[i], &r, HARNESS_IO_TIMEOUT_MS), 0);
				assert_int_equal(json_integer_value(r.id), j);
				if (r.code != want || (want == GOC_OK && r.created != (pass == 0)))
					print_error("pass %d conn %d req %d (age %s): expected %s%s, got %s\n",
						    pass, i, j, age, goc_err_name(want),
						    want == GOC_OK ? (pass == 0 ? " created" : " found") : "",
						    tclient_last(cl[i]));
				assert_int_equal(r.code, want);
				if (want == GOC_OK) {
					assert_int_equal(r.created, pass == 0);
					assert_int_equal(row_int(&r, "age"), 7);
				}
				codec_response_free(&r);
			}
	}
	int good = 0;
	for (int j = 0; j < BATCH_PER_CONN; j++) {
		const char *age;
		good += batch_expect(j, &age) == GOC_OK;
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM users WHERE email LIKE 'batch-%%'"),
			 good * BATCH_CONNS);
	/* batches were sent, and failing ones were split to isolate the bad request */
	assert_true(batch_stat(cl[0], "batches") > 0);
	assert_true(batch_stat(cl[0], "splits") > 0);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * Some types' input functions raise what otherwise means "the table changed
 * under gocd": 'nosuch'::regclass is 42P01, an unknown regproc 42883,
 * regtype 42704, a bad tsquery 42601, 'nosuch_schema.t'::regclass 3F000,
 * '"x'::regclass 42602.  Such a value is its request's
 * invalid_value: the rest of its batch is created, and the table stays in
 * service (it used to fail the whole batch `unavailable` and, for 42P01,
 * take the table out of service for everyone).
 */
static void test_value_errors_that_look_like_schema_errors(void **state)
{
	assert_int_equal(tpg_exec("DROP TABLE IF EXISTS regv; CREATE TABLE regv(id bigserial primary key,"
				  " k text not null unique, r regclass, p regproc, q tsquery, t regtype)"), 0);
	struct tgocd *g = tgocd_start("--table=regv=k", "--pool-size=1", "--log-level=info", NULL);
	assert_non_null(g);
	static const char *const bad[] = {
		"\"r\":\"nosuch_rel\",\"p\":\"now\",\"q\":\"a & b\",\"t\":\"int4\"",
		"\"r\":\"pg_class\",\"p\":\"nosuch_fn\",\"q\":\"a & b\",\"t\":\"int4\"",
		"\"r\":\"pg_class\",\"p\":\"now\",\"q\":\"a & b\",\"t\":\"nosuch_type\"",
		"\"r\":\"pg_class\",\"p\":\"now\",\"q\":\"&&&\",\"t\":\"int4\"",
		"\"r\":\"nosuch_schema.t\",\"p\":\"now\",\"q\":\"a & b\",\"t\":\"int4\"",
		"\"r\":\"\\\"x\",\"p\":\"now\",\"q\":\"a & b\",\"t\":\"int4\"",
	};
	static const char good[] = "\"r\":\"pg_class\",\"p\":\"now\",\"q\":\"a & b\",\"t\":\"int4\"";
	enum { CONNS = 6, PER = 30, BAD_AT = 13 };
	struct tclient *cl[CONNS];
	for (int i = 0; i < CONNS; i++)
		cl[i] = connect_to(g);
	for (int i = 0; i < CONNS; i++) {
		char buf[PER * 200];
		size_t len = 0;
		for (int j = 0; j < PER; j++)
			len += (size_t)sprintf(buf + len, "{\"op\":\"get_or_create\",\"id\":%d,\"table\":\"regv\","
					       "\"key\":{\"k\":\"v%d-%d\"},\"defaults\":{%s}}\n",
					       j, i, j, j == BAD_AT ? bad[i] : good);
		assert_int_equal(tclient_send(cl[i], buf, len), 0);
	}
	for (int i = 0; i < CONNS; i++)
		for (int j = 0; j < PER; j++) {
			struct goc_response r;
			enum goc_err want = j == BAD_AT ? GOC_E_INVALID_VALUE : GOC_OK;
			assert_int_equal(tclient_recv(cl[i], &r, HARNESS_IO_TIMEOUT_MS), 0);
			if (r.code != want || (want == GOC_OK && !r.created))
				print_error("conn %d req %d: expected %s, got %s\n", i, j,
					    want == GOC_OK ? "created" : "invalid_value", tclient_last(cl[i]));
			assert_int_equal(r.code, want);
			if (want == GOC_OK)
				assert_true(r.created);
			codec_response_free(&r);
		}
	assert_int_equal(tpg_count("SELECT count(*) FROM regv"), CONNS * (PER - 1));
	/* alone (the single-row statement), then a good one right behind it */
	for (int i = 0; i < CONNS; i++) {
		struct goc_response r;
		assert_int_equal(tclient_sendf(cl[0], "{\"op\":\"get_or_create\",\"table\":\"regv\","
					       "\"key\":{\"k\":\"alone%d\"},\"defaults\":{%s}}\n", i, bad[i]), 0);
		assert_int_equal(tclient_recv(cl[0], &r, HARNESS_IO_TIMEOUT_MS), 0);
		if (r.code != GOC_E_INVALID_VALUE)
			print_error("bad value %d alone: %s\n", i, tclient_last(cl[0]));
		assert_int_equal(r.code, GOC_E_INVALID_VALUE);
		codec_response_free(&r);
		char req[200];
		snprintf(req, sizeof req, "{\"op\":\"get_or_create\",\"table\":\"regv\","
			 "\"key\":{\"k\":\"after%d\"}}", i);
		call_ok(cl[1], req, &r);
		assert_true(r.created);
		codec_response_free(&r);
	}
	char *log = tgocd_log(g);
	if (strstr(log, "changed under gocd"))
		print_error("a value took the table out of service:\n%s\n", log);
	assert_null(strstr(log, "changed under gocd"));
	free(log);
	for (int i = 0; i < CONNS; i++)
		tclient_close(cl[i]);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * A column's type renamed under gocd (ALTER TYPE ... RENAME): its casts
 * name the old type, so new statements fail with 42704 pointing into
 * gocd's SQL.  That is the table's change, not the client's value: gocd
 * re-reads the catalog and serves the new name (it answered invalid_value,
 * or before that internal, until a reconnect).
 */
static void test_renamed_column_type_is_reread(void **state)
{
	assert_int_equal(tpg_exec("DROP TABLE IF EXISTS rent; DROP TYPE IF EXISTS mood2; DROP TYPE IF EXISTS mood;"
				  "CREATE TYPE mood AS ENUM ('happy', 'sad', 'calm', 'wry');"
				  "CREATE TABLE rent(id bigserial primary key, k mood not null unique, note text)"), 0);
	struct tgocd *g = tgocd_start("--table=rent=k", "--pool-size=1", NULL);
	assert_non_null(g);
	struct tclient *c = connect_to(g);
	struct goc_response r;
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"rent\",\"key\":{\"k\":\"happy\"}}", &r);
	assert_true(r.created);
	codec_response_free(&r);
	assert_int_equal(tpg_exec("ALTER TYPE mood RENAME TO mood2"), 0);
	static const char *const keys[] = { "sad", "calm", "wry" };
	for (int i = 0; i < 3; i++) {
		char req[200];
		snprintf(req, sizeof req, "{\"op\":\"get_or_create\",\"table\":\"rent\",\"key\":{\"k\":\"%s\"},"
			 "\"defaults\":{\"note\":\"n%d\"}}", keys[i], i);
		bool ok = false;
		for (int tries = 0; tries < 50 && !ok; tries++) {
			assert_int_equal(tclient_call(c, req, &r), 0);
			ok = r.ok;
			if (!ok && r.code != GOC_E_UNAVAILABLE)
				print_error("after the type's rename: %s\n", tclient_last(c));
			assert_true(r.ok || r.code == GOC_E_UNAVAILABLE);
			if (ok)
				assert_true(r.created);
			codec_response_free(&r);
			if (!ok)
				harness_sleep_ms(100);
		}
		assert_true(ok);
	}
	tclient_close(c);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * A deferred foreign key fails at commit, after the batch statement has
 * returned its rows: only the request with the bad reference may get the
 * error, the others must be created exactly once (the commit of the next
 * batch travels with the sync of the previous one on the one connection).
 * The second pass asks again for the good keys only: all hits, and hits
 * write nothing, so the id sequence does not move, whether the lookups
 * ran alone or inside insert batches (after a pass of new keys gocd skips
 * the lookup round trip and lets the insert batch find existing rows).
 */
static void test_commit_failure_isolated(void **state)
{
	struct tgocd *g = tgocd_start(STD_ARGS, "--pool-size=1", NULL);
	assert_non_null(g);
	struct tclient *cl[BATCH_CONNS];
	for (int i = 0; i < BATCH_CONNS; i++)
		cl[i] = connect_to(g);

	long long seq_after_first = 0;
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < BATCH_CONNS; i++) {
			char *buf = malloc(BATCH_PER_CONN * 200);
			size_t len = 0;
			assert_non_null(buf);
			for (int j = 0; j < BATCH_PER_CONN; j++)
				if (pass == 0 || j % 7 != 3)
					len += (size_t)sprintf(buf + len,
					"{\"op\":\"get_or_create\",\"id\":%d,\"table\":\"dchild\","
					"\"key\":{\"k\":\"fk-%d-%d\"},\"defaults\":{\"p\":%d}}\n",
					j, i, j, j % 7 == 3 ? 999 : 1);
			assert_int_equal(tclient_send(cl[i], buf, len), 0);
			free(buf);
		}
		for (int i = 0; i < BATCH_CONNS; i++)
			for (int j = 0; j < BATCH_PER_CONN; j++) {
				struct goc_response r;
				enum goc_err want = j % 7 == 3 ? GOC_E_CONSTRAINT_VIOLATION : GOC_OK;
				if (pass == 1 && want != GOC_OK)
					continue;
				assert_int_equal(tclient_recv(cl[i], &r, HARNESS_IO_TIMEOUT_MS), 0);
				assert_int_equal(json_integer_value(r.id), j);
				if (r.code != want || (want == GOC_OK && r.created != (pass == 0)))
					print_error("pass %d conn %d req %d: got %s\n", pass, i, j,
						    tclient_last(cl[i]));
				assert_int_equal(r.code, want);
				if (want == GOC_OK)
					assert_int_equal(r.created, pass == 0);
				codec_response_free(&r);
			}
		if (pass == 0)
			seq_after_first = tpg_count("SELECT last_value FROM dchild_id_seq");
	}
	int good = 0;
	for (int j = 0; j < BATCH_PER_CONN; j++)
		good += j % 7 != 3;
	assert_int_equal(tpg_count("SELECT count(*) FROM dchild WHERE k LIKE 'fk-%%'"),
			 good * BATCH_CONNS);
	assert_int_equal(tpg_count("SELECT count(*) FROM dchild WHERE p <> 1"), 0);
	assert_int_equal(tpg_count("SELECT last_value FROM dchild_id_seq"), seq_after_first);
	assert_true(batch_stat(cl[0], "splits") > 0);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * A key whose row another session inserted and has not committed makes its
 * insert wait on that row's lock.  gocd holds a shape's next insert batch
 * back while one is in flight (fewer index-page fights), but only briefly:
 * inserts of other keys must still be answered while the lock is held,
 * and the waiting request gets the other session's row once it commits.
 */
static void test_row_lock_wait_does_not_stall_other_inserts(void **state)
{
	struct tgocd *g = tgocd_start(STD_ARGS, NULL);
	assert_non_null(g);
	struct tpg_session *holder = tpg_session_open();
	assert_non_null(holder);
	assert_int_equal(tpg_session_exec(holder, "BEGIN; INSERT INTO race2(k, n) VALUES ('held', 7)"), 0);

	struct tclient *a = connect_to(g), *b = connect_to(g);
	/* New keys first: most lookups miss, so gocd sends the next ones
	 * straight as insert batches, the path that is held back. */
	for (int i = 0; i < 64; i++)
		assert_int_equal(tclient_sendf(b, "{\"op\":\"get_or_create\",\"table\":\"race2\","
						  "\"key\":{\"k\":\"warm-%d\"},\"defaults\":{\"n\":1}}\n", i), 0);
	for (int i = 0; i < 64; i++) {
		struct goc_response r;
		assert_int_equal(tclient_recv(b, &r, HARNESS_IO_TIMEOUT_MS), 0);
		assert_int_equal(r.code, GOC_OK);
		codec_response_free(&r);
	}
	assert_int_equal(tclient_sendf(a, "{\"op\":\"get_or_create\",\"table\":\"race2\","
					  "\"key\":{\"k\":\"held\"},\"defaults\":{\"n\":1}}\n"), 0);
	/* until a's insert waits on the lock (bounded polling) */
	long long waiting = 0;
	for (int i = 0; i < 200 && waiting == 0; i++) {
		waiting = tpg_count("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gocd'"
				    " AND wait_event_type = 'Lock'");
		if (waiting == 0)
			usleep(50 * 1000);
	}
	assert_int_equal(waiting, 1);

	for (int i = 0; i < 20; i++)
		assert_int_equal(tclient_sendf(b, "{\"op\":\"get_or_create\",\"table\":\"race2\","
						  "\"key\":{\"k\":\"free-%d\"},\"defaults\":{\"n\":1}}\n", i), 0);
	for (int i = 0; i < 20; i++) {
		struct goc_response r;
		assert_int_equal(tclient_recv(b, &r, HARNESS_IO_TIMEOUT_MS), 0);
		if (r.code != GOC_OK)
			print_error("free-%d: %s\n", i, tclient_last(b));
		assert_int_equal(r.code, GOC_OK);
		assert_true(r.created);
		codec_response_free(&r);
	}
	/* the held key is still waiting, and gets the holder's row */
	assert_int_equal(tpg_count("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gocd'"
				   " AND wait_event_type = 'Lock'"), 1);
	assert_int_equal(tpg_session_exec(holder, "COMMIT"), 0);
	struct goc_response r;
	assert_int_equal(tclient_recv(a, &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_int_equal(r.code, GOC_OK);
	assert_false(r.created);
	assert_int_equal(row_int(&r, "n"), 7);
	codec_response_free(&r);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * Batches carry their keys as PostgreSQL array literals: keys with quotes,
 * backslashes, commas, braces, spaces, the text NULL and multibyte
 * characters must reach the table byte for byte, each created once, and
 * be found again by a batch of lookups.
 */
static void test_batch_keys_with_array_syntax(void **state)
{
	static const char *const keys[] = {
		"a\\\"b", "\\\\", "\\\"", "c,d", "{e}", " f ", "NULL", "null", "",
		"\u00e9t\u00e9", "x\\\\y\\\"z", "'q'", "NULL,NULL", "}{", "\\\\\\\"",
	};
	enum { NK = sizeof keys / sizeof keys[0], ROUNDS = 4 };
	struct tgocd *g = tgocd_start(STD_ARGS, "--pool-size=1", NULL);
	assert_non_null(g);
	struct tclient *c = connect_to(g);
	for (int pass = 0; pass < 2; pass++) {
		char buf[8192];
		size_t len = 0;
		for (int r = 0; r < ROUNDS; r++)
			for (int k = 0; k < NK; k++)
				len += (size_t)snprintf(buf + len, sizeof buf - len,
					"{\"op\":\"get_or_create\",\"id\":%d,\"table\":\"pipe\","
					"\"key\":{\"k\":\"arr-%s\"},\"defaults\":{\"n\":%d}}\n",
					r * NK + k, keys[k], k);
		assert_true(len < sizeof buf);
		assert_int_equal(tclient_send(c, buf, len), 0);
		int created[NK] = {0};
		for (int i = 0; i < ROUNDS * NK; i++) {
			struct goc_response r;
			assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
			if (!r.ok)
				print_error("req %d: %s\n", i, tclient_last(c));
			assert_true(r.ok);
			int k = (int)(json_integer_value(r.id) % NK);
			assert_int_equal(row_int(&r, "n"), k);
			created[k] += r.created;
			codec_response_free(&r);
		}
		for (int k = 0; k < NK; k++)
			assert_int_equal(created[k], pass == 0 ? 1 : 0);
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM pipe WHERE k LIKE 'arr-%%'"), NK);
	/* byte for byte: the table holds exactly the decoded JSON strings */
	assert_int_equal(tpg_count("SELECT count(*) FROM pipe WHERE k IN ('arr-a\"b', 'arr-\\', "
				   "'arr-\"', 'arr-c,d', 'arr-{e}', 'arr- f ', 'arr-NULL', 'arr-null', 'arr-', "
				   "'arr-\u00e9t\u00e9', 'arr-x\\y\"z', 'arr-''q''', 'arr-NULL,NULL', 'arr-}{', "
				   "'arr-\\\"')"), NK);
	assert_true(batch_stat(c, "batches") > 0);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * insert_batches > 1: several insert batches of one table in flight on
 * different connections, with keys shared across clients so that batches
 * race on the same keys.  Still one row and one created:true per key.
 */
#define IB_CONNS 16
#define IB_PER_CONN 100
#define IB_KEYS 200
static void test_insert_batches_in_parallel_keep_the_guarantee(void **state)
{
	struct tgocd *g = tgocd_start(STD_ARGS, "--pool-size=4", "--insert-batches=4", NULL);
	assert_non_null(g);
	struct tclient *cl[IB_CONNS];
	for (int i = 0; i < IB_CONNS; i++) {
		cl[i] = connect_to(g);
		char *buf = malloc(IB_PER_CONN * 160);
		size_t len = 0;
		assert_non_null(buf);
		for (int j = 0; j < IB_PER_CONN; j++)
			len += (size_t)sprintf(buf + len,
				"{\"op\":\"get_or_create\",\"id\":%d,\"table\":\"pipe\","
				"\"key\":{\"k\":\"ib-%d\"},\"defaults\":{\"n\":%d}}\n",
				j, (i * 37 + j) % IB_KEYS, i);
		assert_int_equal(tclient_send(cl[i], buf, len), 0);
		free(buf);
	}
	static long long row_id[IB_KEYS];
	int created[IB_KEYS] = {0};
	for (int k = 0; k < IB_KEYS; k++)
		row_id[k] = -1;
	for (int i = 0; i < IB_CONNS; i++)
		for (int j = 0; j < IB_PER_CONN; j++) {
			struct goc_response r;
			int k = (i * 37 + j) % IB_KEYS;
			assert_int_equal(tclient_recv(cl[i], &r, HARNESS_IO_TIMEOUT_MS), 0);
			if (!r.ok)
				print_error("conn %d req %d: %s\n", i, j, tclient_last(cl[i]));
			assert_true(r.ok);
			assert_int_equal(json_integer_value(r.id), j);
			long long id = row_int(&r, "id");
			if (row_id[k] == -1)
				row_id[k] = id;
			assert_int_equal(id, row_id[k]);
			created[k] += r.created;
			codec_response_free(&r);
		}
	for (int k = 0; k < IB_KEYS; k++) {
		if (created[k] != 1)
			print_error("key ib-%d: created:true %d times\n", k, created[k]);
		assert_int_equal(created[k], 1);
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM pipe WHERE k LIKE 'ib-%%'"), IB_KEYS);
	assert_true(batch_stat(cl[0], "batches") > 0);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * Keys that differ as text but are one value to PostgreSQL ("01", " 1",
 * "+1", 1 for a bigint; "Ab" and "aB" under a case-insensitive collation)
 * are different entries in gocd's lock table, so they meet in one batch
 * statement: still one row, one created:true, and that answer goes to the
 * request whose spelling and defaults the row holds - the one whose INSERT
 * made it - not to another one of them.
 */
static void spelled_rounds(struct tgocd *g, const char *table, const char *col,
			   const char *const (*spell)[2], int nspell, int first)
{
	enum { ROUNDS = 20, MAXSPELL = 8 };
	struct tclient *cl[MAXSPELL];
	assert_true(nspell <= MAXSPELL);
	for (int i = 0; i < nspell; i++)
		cl[i] = connect_to(g);
	for (int k = 0; k < ROUNDS; k++) {
		int v = first + k;
		for (int i = 0; i < nspell; i++) {
			char req[300];
			snprintf(req, sizeof req,
				 "{\"op\":\"get_or_create\",\"table\":\"%s\",\"key\":{\"%s\":%s%d%s},"
				 "\"defaults\":{\"label\":\"by %d\"}}\n",
				 table, col, spell[i][0], v, spell[i][1], i);
			assert_int_equal(tclient_send(cl[i], req, strlen(req)), 0);
		}
		int created = 0;
		long long id = -1;
		for (int i = 0; i < nspell; i++) {
			struct goc_response r;
			char label[32];
			assert_int_equal(tclient_recv(cl[i], &r, HARNESS_IO_TIMEOUT_MS), 0);
			if (!r.ok)
				print_error("%s: value %d spelled %s%d%s: %s\n", table, v, spell[i][0], v,
					    spell[i][1], tclient_last(cl[i]));
			assert_true(r.ok);
			if (id == -1)
				id = row_int(&r, "id");
			assert_int_equal(row_int(&r, "id"), id);
			snprintf(label, sizeof label, "by %d", i);
			if (r.created && strcmp(row_str(&r, "label"), label) != 0)
				print_error("%s: value %d: created:true went to spelling %d, the row is %s\n",
					    table, v, i, tclient_last(cl[i]));
			if (r.created)
				assert_string_equal(row_str(&r, "label"), label);
			created += r.created;
			codec_response_free(&r);
		}
		if (created != 1)
			print_error("%s: value %d: %d created:true\n", table, v, created);
		assert_int_equal(created, 1);
	}
	for (int i = 0; i < nspell; i++)
		tclient_close(cl[i]);
}

static void test_equal_values_spelled_differently(void **state)
{
	struct tgocd *g = tgocd_start(STD_ARGS, "--pool-size=1", NULL);
	assert_non_null(g);
	/* prefix and suffix around the digits */
	static const char *const ints[][2] = {
		{ "", "" }, { "\"", "\"" }, { "\"0", "\"" }, { "\" ", "\"" }, { "\"+", "\"" }, { "\"", " \"" },
	};
	static const char *const cases[][2] = {
		{ "\"ab", "\"" }, { "\"AB", "\"" }, { "\"aB", "\"" }, { "\"Ab", "\"" },
	};
	spelled_rounds(g, "ints", "n", ints, sizeof ints / sizeof ints[0], 7000000);
	assert_int_equal(tpg_count("SELECT count(*) FROM ints WHERE n BETWEEN 7000000 AND 7000019"), 20);
	spelled_rounds(g, "cikeys", "k", cases, sizeof cases / sizeof cases[0], 0);
	assert_int_equal(tpg_count("SELECT count(*) FROM cikeys"), 20);
	struct tclient *c = connect_to(g);
	assert_true(batch_stat(c, "batches") > 0);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * gocd, with one pool connection, logged in as a new role `role` that has
 * `setting` (ALTER ROLE ... SET), serving `table` (created by `create`),
 * and a client that has sent the n requests in `burst` in one write (one
 * batch).  Drop the role with drop_role() once gocd has stopped.
 */
/* A new superuser role (dropped first if left over) with a setting of its
 * own, as ALTER ROLE ... SET gives it: `setting` is "name = value". */
static void create_role_with(const char *role, const char *setting)
{
	assert_int_equal(tpg_exec("DROP ROLE IF EXISTS %s; CREATE ROLE %s LOGIN SUPERUSER;"
				  "ALTER ROLE %s SET %s", role, role, role, setting), 0);
}

/* gocd with one pool connection, logged in as `role`. */
static struct tgocd *start_as(const char *role, const char *table_arg)
{
	char pg[160];
	snprintf(pg, sizeof pg, "--postgres=host=127.0.0.1 port=%d user=%s dbname=postgres",
		 tpg_port(), role);
	struct tgocd *g = tgocd_start(STD_ARGS, table_arg, pg, "--pool-size=1", NULL);
	assert_non_null(g);
	return g;
}

static struct tgocd *start_as_role_with_burst(const char *role, const char *setting,
					      const char *create, const char *table_arg,
					      const char *burst, struct tclient **client)
{
	create_role_with(role, setting);
	assert_int_equal(tpg_exec("%s", create), 0);
	struct tgocd *g = start_as(role, table_arg);
	*client = connect_to(g);
	assert_int_equal(tclient_send(*client, burst, strlen(burst)), 0);
	return g;
}

static void drop_role(const char *role)
{
	assert_int_equal(tpg_exec("DROP ROLE %s", role), 0);
}

/*
 * A role or database with extra_float_digits = 0 made float8 print 15
 * significant digits: 1.0000000000000002 and 1.0000000000000004 are two keys
 * and two rows, both answered {"k":1}.  Answers rounded the stored value,
 * and a batch, which ranked its inputs per row by the row's text, took the
 * four rows below for one: one request heard created:true, three
 * created:false for rows they had just inserted.  gocd's sessions now print
 * floats exactly (extra_float_digits 1), and a batch ranks per inserted key,
 * not per text; the second fix is kept for any type whose output is lossy.
 */
static void test_distinct_keys_with_equal_rows_each_have_a_creator(void **state)
{
	static const char *const keys[] = {"1.0000000000000002", "1.0000000000000004",
					   "1.0000000000000007", "1.0000000000000009"};
	enum { N = sizeof keys / sizeof keys[0] };
	char buf[1024];
	size_t n = 0;
	for (int i = 0; i < N; i++)
		n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"op\":\"get_or_create\",\"table\":\"fkeys\","
				      "\"key\":{\"k\":%s}}\n", keys[i]);
	struct tclient *c;
	struct tgocd *g = start_as_role_with_burst("gocd_lossy", "extra_float_digits = 0",
						   "DROP TABLE IF EXISTS fkeys;"
						   "CREATE TABLE fkeys(k float8 primary key)",
						   "--table=fkeys=k", buf, &c);
	for (int i = 0; i < N; i++) {
		struct goc_response r;
		assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
		if (!r.ok || !r.created || strstr(tclient_last(c), keys[i]) == NULL)
			print_error("%s: %s\n", keys[i], tclient_last(c));
		assert_true(r.ok && r.created);
		/* the row as stored, every digit */
		char want[64];
		snprintf(want, sizeof want, "\"k\":%s}", keys[i]);
		assert_non_null(strstr(tclient_last(c), want));
		codec_response_free(&r);
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM fkeys"), N);
	assert_true(batch_stat(c, "batches") > 0);
	assert_int_equal(tgocd_stop(g), 0);
	drop_role("gocd_lossy");
	harness_pass();
}

/*
 * A null default is SQL NULL in a batch as alone, whatever the role's
 * array_nulls.  A batch carries each column as a text array, where NULL
 * is the unquoted word; under array_nulls = off (a role or database
 * setting) array input reads it as the string "NULL", and batched rows
 * were stored with v = 'NULL' while the same request alone stored NULL.
 */
static void test_null_defaults_in_batches_with_array_nulls_off(void **state)
{
	enum { N = 4 };
	char buf[1024];
	size_t n = 0;
	for (int i = 0; i < N; i++)
		n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"op\":\"get_or_create\",\"table\":\"nulldefs\","
				      "\"key\":{\"k\":\"n%d\"},\"defaults\":{\"v\":null}}\n", i);
	struct tclient *c;
	struct tgocd *g = start_as_role_with_burst("gocd_legacy", "array_nulls = off",
						   "DROP TABLE IF EXISTS nulldefs;"
						   "CREATE TABLE nulldefs(id bigserial primary key,"
						   " k text not null unique, v text default 'dflt')",
						   "--table=nulldefs=k", buf, &c);
	for (int i = 0; i < N; i++) {
		struct goc_response r;
		assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
		if (!r.ok || !r.created || !json_is_null(json_object_get(r.row, "v")))
			print_error("n%d: %s\n", i, tclient_last(c));
		assert_true(r.ok && r.created);
		assert_true(json_is_null(json_object_get(r.row, "v")));
		codec_response_free(&r);
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM nulldefs WHERE v IS NULL"), N);
	assert_true(batch_stat(c, "batches") > 0);
	assert_int_equal(tgocd_stop(g), 0);
	drop_role("gocd_legacy");
	harness_pass();
}

/*
 * search_path.  A function call resolves over it, and an exact match beats
 * pg_catalog's record or polymorphic version even though pg_catalog comes
 * first: a row_to_json(tbl) or an unnest(text[]) in a schema on the role's
 * path was called in place of pg_catalog's.  Answers were made-up rows,
 * and batches stored keys other than the ones asked for (lower-cased here),
 * while the same request alone stored it as sent.
 */
static void test_functions_on_the_search_path_do_not_shadow_gocds(void **state)
{
	create_role_with("gocd_shadowed", "search_path = shadow, public");
	assert_int_equal(tpg_exec("DROP SCHEMA IF EXISTS shadow CASCADE; DROP TABLE IF EXISTS shadowed;"
				  "CREATE TABLE shadowed(id bigserial primary key, k text not null unique, v text);"
				  "CREATE SCHEMA shadow;"
				  "CREATE FUNCTION shadow.row_to_json(public.shadowed) RETURNS json LANGUAGE sql"
				  " AS $$ SELECT '{\"made\":\"up\"}'::json $$;"
				  "CREATE FUNCTION shadow.unnest(text[]) RETURNS SETOF text LANGUAGE sql"
				  " AS $$ SELECT pg_catalog.lower(x) FROM pg_catalog.unnest($1) x $$;"), 0);
	struct tgocd *g = start_as("gocd_shadowed", "--table=shadowed=k");
	struct tclient *c = connect_to(g);
	enum { N = 4 };
	for (int round = 0; round < 3; round++) {
		/* round 0: one write, one batch; round 1 alone; round 2 the
		 * same keys again, batched: found, not created */
		char buf[1024];
		size_t n = 0;
		int k0 = round == 1 ? N : 0, nk = round == 1 ? 1 : N;
		for (int i = k0; i < k0 + nk; i++)
			n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"op\":\"get_or_create\",\"table\":"
					      "\"shadowed\",\"key\":{\"k\":\"Key%d\"},\"defaults\":{\"v\":\"V\"}}\n", i);
		assert_int_equal(tclient_send(c, buf, n), 0);
		for (int i = k0; i < k0 + nk; i++) {
			struct goc_response r;
			char want[16];
			snprintf(want, sizeof want, "Key%d", i);
			assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
			const char *k = json_string_value(json_object_get(r.row, "k"));
			if (!r.ok || r.created != (round < 2) || k == NULL || strcmp(k, want) != 0)
				print_error("round %d %s: %s\n", round, want, tclient_last(c));
			assert_true(r.ok && r.created == (round < 2));
			assert_non_null(k);
			assert_string_equal(k, want);
			codec_response_free(&r);
		}
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM shadowed WHERE k LIKE 'Key%%'"), N + 1);
	assert_int_equal(tpg_count("SELECT count(*) FROM shadowed"), N + 1);
	assert_true(batch_stat(c, "batches") > 0);
	assert_int_equal(tgocd_stop(g), 0);
	assert_int_equal(tpg_exec("DROP SCHEMA shadow CASCADE; DROP TABLE shadowed; DROP ROLE gocd_shadowed"), 0);
	harness_pass();
}

/*
 * The same for operators: varchar has no = of its own in pg_catalog (it
 * reaches texteq by a cast), so an =(varchar, varchar) on the role's
 * search_path - here one that ignores case - was the one a bare = called.
 * The unique index holds 'Ann' and 'ann' apart, but lookups, alone and
 * batched, answered 'Ann''s row for 'ann', 'ANN' and 'aNN': rows of
 * other keys, and the keys never created.  Lookups now compare with the
 * index's own operator.
 */
static void test_operators_on_the_search_path_do_not_shadow_the_keys(void **state)
{
	create_role_with("gocd_shadowed", "search_path = shadow, public");
	assert_int_equal(tpg_exec("DROP SCHEMA IF EXISTS shadow CASCADE; DROP TABLE IF EXISTS shadowv;"
				  "CREATE TABLE shadowv(id bigserial primary key, k varchar(20) not null unique);"
				  "INSERT INTO shadowv(k) VALUES ('Ann');"
				  "CREATE SCHEMA shadow;"
				  "CREATE FUNCTION shadow.ci_eq(varchar, varchar) RETURNS bool LANGUAGE sql IMMUTABLE"
				  " AS $$ SELECT pg_catalog.lower($1) OPERATOR(pg_catalog.=) pg_catalog.lower($2) $$;"
				  "CREATE OPERATOR shadow.= (leftarg = varchar, rightarg = varchar, procedure = shadow.ci_eq);"), 0);
	struct tgocd *g = start_as("gocd_shadowed", "--table=shadowv=k");
	struct tclient *c = connect_to(g);
	static const char *const keys[] = { "ann", "ANN", "aNN", "Ann" };
	for (int round = 0; round < 2; round++) {
		/* round 0: "ann" alone; round 1: the rest in one write */
		char buf[1024];
		size_t n = 0;
		int k0 = round ? 1 : 0, k1 = round ? 4 : 1;
		for (int i = k0; i < k1; i++)
			n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"op\":\"get_or_create\",\"table\":"
					      "\"shadowv\",\"key\":{\"k\":\"%s\"}}\n", keys[i]);
		assert_int_equal(tclient_send(c, buf, n), 0);
		for (int i = k0; i < k1; i++) {
			struct goc_response r;
			bool created = strcmp(keys[i], "Ann") != 0;
			assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
			const char *k = json_string_value(json_object_get(r.row, "k"));
			if (!r.ok || r.created != created || k == NULL || strcmp(k, keys[i]) != 0)
				print_error("%s: %s\n", keys[i], tclient_last(c));
			assert_true(r.ok && r.created == created);
			assert_non_null(k);
			assert_string_equal(k, keys[i]);
			codec_response_free(&r);
		}
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM shadowv"), 4);
	assert_int_equal(tgocd_stop(g), 0);
	assert_int_equal(tpg_exec("DROP SCHEMA shadow CASCADE; DROP TABLE shadowv; DROP ROLE gocd_shadowed"), 0);
	harness_pass();
}

/*
 * The other way round: citext installed in a schema that is not on the
 * role's search_path (CREATE EXTENSION citext SCHEMA ext).  A bare = then
 * found no citext = and fell back to text = by citext's implicit cast,
 * comparing case-sensitively while the unique index (citext_ops) does
 * not: with 'Ann' stored, every get_or_create of 'ann' missed, conflicted,
 * missed again and was answered 'internal' after its retries, and a get
 * answered row:null for a key the index holds.
 */
static void test_key_type_from_a_schema_off_the_search_path(void **state)
{
	if (tpg_count("SELECT count(*) FROM pg_available_extensions WHERE name = 'citext'") != 1) {
		print_message("citext is not available in this PostgreSQL: nothing to test\n");
		harness_pass();
		return;
	}
	assert_int_equal(tpg_exec("DROP TABLE IF EXISTS offpath; DROP SCHEMA IF EXISTS offext CASCADE;"
				  "CREATE SCHEMA offext; CREATE EXTENSION citext SCHEMA offext;"
				  "CREATE TABLE offpath(id bigserial primary key, k offext.citext not null unique);"
				  "INSERT INTO offpath(k) VALUES ('Ann')"), 0);
	struct tgocd *g = tgocd_start(STD_ARGS, "--table=offpath=k", "--pool-size=1", NULL);
	assert_non_null(g);
	struct tclient *c = connect_to(g);
	static const char *const reqs[] = { "get_or_create", "get_or_create", "get_or_create", "get" };
	static const char *const keys[] = { "ann", "ANN", "aNN", "AnN" };
	for (int round = 0; round < 2; round++) {
		/* round 0: "ann" alone; round 1: the rest in one write */
		char buf[1024];
		size_t n = 0;
		int k0 = round ? 1 : 0, k1 = round ? 4 : 1;
		for (int i = k0; i < k1; i++)
			n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"op\":\"%s\",\"table\":\"offpath\","
					      "\"key\":{\"k\":\"%s\"}}\n", reqs[i], keys[i]);
		assert_int_equal(tclient_send(c, buf, n), 0);
		for (int i = k0; i < k1; i++) {
			struct goc_response r;
			assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
			const char *k = json_string_value(json_object_get(r.row, "k"));
			if (!r.ok || r.created || k == NULL || strcmp(k, "Ann") != 0)
				print_error("%s: %s\n", keys[i], tclient_last(c));
			assert_true(r.ok && !r.created);
			assert_non_null(k);
			assert_string_equal(k, "Ann");
			codec_response_free(&r);
		}
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM offpath"), 1);
	assert_int_equal(tgocd_stop(g), 0);
	assert_int_equal(tpg_exec("DROP TABLE offpath; DROP SCHEMA offext CASCADE"), 0);
	harness_pass();
}

/*
 * A batch that inserts a row under a key no request asked for (a BEFORE
 * INSERT trigger created since the catalog was read) fails on a cast whose
 * error carries a mark, and gocd then runs that table's inserts one at a
 * time.  The mark was a constant, and a client's own value failing the
 * same kind of cast is quoted in its error: the key "gocd: a BEFORE INSERT
 * trigger may have changed an inserted key" (the mark without its number)
 * on an integer column switched batching off for the table, for every
 * client, with a false warning.
 */
static void test_a_value_cannot_pass_for_the_key_rewritten_mark(void **state)
{
	assert_int_equal(tpg_exec("DROP TABLE IF EXISTS markt;"
				  "CREATE TABLE markt(id bigserial primary key, k int not null unique)"), 0);
	struct tgocd *g = tgocd_start(STD_ARGS, "--table=markt=k", "--pool-size=1", NULL);
	assert_non_null(g);
	struct tclient *c = connect_to(g);
	char buf[1024];
	size_t n = 0;
	for (int i = 0; i < 4; i++)
		n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"op\":\"get_or_create\",\"table\":\"markt\","
				      "\"key\":{\"k\":%s}}\n", i == 1 ? "\"gocd: a BEFORE INSERT trigger may have changed an inserted key\""
				      : i == 0 ? "1" : i == 2 ? "2" : "3");
	assert_int_equal(tclient_send(c, buf, n), 0); /* one write: one batch */
	for (int i = 0; i < 4; i++) {
		struct goc_response r;
		assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
		assert_int_equal(r.code, i == 1 ? GOC_E_INVALID_VALUE : GOC_OK);
		codec_response_free(&r);
	}
	assert_int_equal(tgocd_stop(g), 0);
	FILE *f = fopen(g->log_path, "r");
	assert_non_null(f);
	char line[1024];
	bool flipped = false;
	while (fgets(line, sizeof line, f))
		if (strstr(line, "its inserts now run one request at a time"))
			flipped = true;
	fclose(f);
	if (flipped)
		print_error("a client's value made gocd take markt for a table that rewrites keys\n");
	assert_false(flipped);
	assert_int_equal(tpg_count("SELECT count(*) FROM markt"), 3);
	assert_int_equal(tpg_exec("DROP TABLE markt"), 0);
	harness_pass();
}

/*
 * exit_on_error = on for the role (any role may set it).  Every ERROR then
 * ends the session: a bad value killed gocd's connection, which gocd takes
 * for a lost connection and re-runs - the whole batch, not the culprit -
 * until retry_limit.  One client's "abc" for an integer key got every
 * request in its batch answered 'unavailable', and itself too, instead of
 * invalid_value.
 */
static void test_exit_on_error_does_not_let_one_bad_value_fail_a_batch(void **state)
{
	create_role_with("gocd_eoe", "exit_on_error = on");
	assert_int_equal(tpg_exec("DROP TABLE IF EXISTS eoe;"
				  " CREATE TABLE eoe(id bigserial primary key, k int not null unique)"), 0);
	struct tgocd *g = start_as("gocd_eoe", "--table=eoe=k");
	struct tclient *c = connect_to(g);
	for (int round = 0; round < 2; round++) {
		/* round 0: the bad one alone; round 1: in a batch with good ones */
		char buf[1024];
		size_t n = 0;
		int nreq = round ? 4 : 1;
		for (int i = 0; i < nreq; i++) {
			char v[16];
			snprintf(v, sizeof v, "%d", round * 10 + i);
			n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"op\":\"get_or_create\",\"table\":\"eoe\","
					      "\"key\":{\"k\":%s}}\n", i == 0 ? "\"abc\"" : v);
		}
		assert_int_equal(tclient_send(c, buf, n), 0);
		for (int i = 0; i < nreq; i++) {
			struct goc_response r;
			assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
			enum goc_err want = i == 0 ? GOC_E_INVALID_VALUE : GOC_OK;
			if (r.code != want)
				print_error("round %d request %d: %s\n", round, i, tclient_last(c));
			assert_int_equal(r.code, want);
			codec_response_free(&r);
		}
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM eoe"), 3);
	assert_int_equal(tgocd_stop(g), 0);
	assert_int_equal(tpg_exec("DROP TABLE eoe; DROP ROLE gocd_eoe"), 0);
	harness_pass();
}

/*
 * A read-only role (default_transaction_read_only, as on a standby): every
 * insert fails 25006 whoever sent it.  A failed batch was split down to
 * single requests all the same, 2n-1 statements for n requests that could
 * never succeed; now each gets the error from the one statement.
 */
static void test_read_only_role_does_not_split_batches(void **state)
{
	char buf[2048];
	size_t n = 0;
	enum { N = 16 };
	for (int i = 0; i < N; i++)
		n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"op\":\"get_or_create\",\"table\":\"rot\","
				      "\"key\":{\"k\":\"r%d\"}}\n", i);
	struct tclient *c;
	struct tgocd *g = start_as_role_with_burst("gocd_ro", "default_transaction_read_only = on",
						   "DROP TABLE IF EXISTS rot;"
						   "CREATE TABLE rot(id bigserial primary key, k text not null unique)",
						   "--table=rot=k", buf, &c);
	for (int i = 0; i < N; i++) {
		struct goc_response r;
		assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
		if (r.ok || strstr(tclient_last(c), "25006") == NULL)
			print_error("r%d: %s\n", i, tclient_last(c));
		assert_false(r.ok);
		assert_non_null(strstr(tclient_last(c), "25006"));
		codec_response_free(&r);
	}
	assert_true(batch_stat(c, "batches") > 0);
	long long splits = batch_stat(c, "splits");
	if (splits != 0)
		print_error("%lld splits for a read-only session\n", splits);
	assert_int_equal(splits, 0);
	assert_int_equal(tgocd_stop(g), 0);
	drop_role("gocd_ro");
	harness_pass();
}

/*
 * A role turned read-only while most keys were new: a get_or_create then
 * skips its lookup and goes straight into an insert batch, which the
 * session refuses whole (25006) - the keys that exist too, though a lookup
 * (all a hit is) finds them.  A failed batch teaches the miss rate
 * nothing, so it stayed high, and every existing key was answered
 * 'internal' for as long as the role stayed read-only.  Now the refused
 * batch's skipped lookups are run: existing keys get their rows, and only
 * new keys the error.
 */
static void test_read_only_session_answers_existing_keys(void **state)
{
	create_role_with("gocd_ro2", "default_transaction_read_only = off");
	assert_int_equal(tpg_exec("DROP TABLE IF EXISTS rohit;"
				  "CREATE TABLE rohit(id bigserial primary key, k text not null unique)"), 0);
	struct tgocd *g = start_as("gocd_ro2", "--table=rohit=k");
	struct tclient *c = connect_to(g);
	char buf[4096];
	struct goc_response r;
	/* New keys, 32 at a time: the lookups miss, and later ones are skipped */
	for (int round = 0; round < 2; round++) {
		size_t n = 0;
		for (int i = 0; i < 32; i++)
			n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"op\":\"get_or_create\","
					      "\"table\":\"rohit\",\"key\":{\"k\":\"n%d-%d\"}}\n", round, i);
		assert_int_equal(tclient_send(c, buf, n), 0);
		for (int i = 0; i < 32; i++) {
			assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
			if (!r.ok || !r.created)
				print_error("n%d-%d: %s\n", round, i, tclient_last(c));
			assert_true(r.ok && r.created);
			codec_response_free(&r);
		}
	}
	/* The role turns read-only; gocd's new session has it once a new key is refused. */
	assert_int_equal(tpg_exec("ALTER ROLE gocd_ro2 SET default_transaction_read_only = on;"
				  "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'gocd_ro2'"), 0);
	bool refused = false;
	for (int i = 0; i < 200 && !refused; i++) {
		char req[160];
		snprintf(req, sizeof req, "{\"op\":\"get_or_create\",\"table\":\"rohit\",\"key\":{\"k\":\"p%d\"}}", i);
		assert_int_equal(tclient_call(c, req, &r), 0);
		refused = !r.ok && strstr(tclient_last(c), "25006") != NULL;
		codec_response_free(&r);
		if (!refused)
			harness_sleep_ms(20);
	}
	assert_true(refused);
	/* Existing keys and new ones, in one burst */
	size_t n = 0;
	for (int i = 0; i < 16; i++)
		n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"op\":\"get_or_create\",\"table\":\"rohit\","
				      "\"key\":{\"k\":\"%s%d\"}}\n", i % 2 ? "new" : "n0-", i);
	assert_int_equal(tclient_send(c, buf, n), 0);
	for (int i = 0; i < 16; i++) {
		assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
		bool existing = i % 2 == 0;
		if (existing ? !r.ok || r.created : r.ok || strstr(tclient_last(c), "25006") == NULL)
			print_error("%s key %d while read-only: %s\n", existing ? "existing" : "new", i,
				    tclient_last(c));
		if (existing)
			assert_true(r.ok && !r.created);
		else
			assert_false(r.ok);
		codec_response_free(&r);
	}
	tclient_close(c);
	assert_int_equal(tgocd_stop(g), 0);
	drop_role("gocd_ro2");
	harness_pass();
}

/*
 * An error that every request meets and gocd has no code for (a read-only
 * role's 25006 here; a revoked INSERT privilege's 42501) is answered
 * 'internal' and logged - a line per request: 72597 lines in 5 s under
 * load.  At most one a second per table now, with a count of the rest.
 */
static void test_internal_errors_do_not_flood_the_log(void **state)
{
	enum { N = 64 };
	static char buf[N * 100];
	size_t n = 0;
	for (int i = 0; i < N; i++)
		n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"op\":\"get_or_create\",\"table\":\"rof\","
				      "\"key\":{\"k\":\"f%d\"}}\n", i);
	struct tclient *c;
	struct tgocd *g = start_as_role_with_burst("gocd_rof", "default_transaction_read_only = on",
						   "DROP TABLE IF EXISTS rof;"
						   "CREATE TABLE rof(id bigserial primary key, k text not null unique)",
						   "--table=rof=k", buf, &c);
	for (int i = 0; i < N; i++) {
		struct goc_response r;
		assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
		if (r.ok || r.code != GOC_E_INTERNAL)
			print_error("f%d: %s\n", i, tclient_last(c));
		assert_int_equal(r.code, GOC_E_INTERNAL);
		codec_response_free(&r);
	}
	tclient_close(c);
	assert_int_equal(tgocd_stop(g), 0);
	FILE *f = fopen(g->log_path, "r");
	assert_non_null(f);
	char line[4096];
	int lines = 0;
	while (fgets(line, sizeof line, f))
		if (strstr(line, "PostgreSQL error 25006"))
			lines++;
	fclose(f);
	if (lines > 3)
		print_error("%d log lines for %d requests that met 25006\n", lines, N);
	assert_true(lines >= 1 && lines <= 3);
	drop_role("gocd_rof");
	harness_pass();
}

/*
 * A role whose statement_timeout is shorter than gocd's session setup
 * takes (1 ms): the setup statement, the one that sets gocd's own
 * statement_timeout, ran under the role's and was cancelled at every
 * connect, so gocd answered 'unavailable' for good.  A session now starts
 * with SET statement_timeout = 0, which takes microseconds, and then the
 * session statement sets request_timeout (read back through a default).
 */
static void test_role_statement_timeout_shorter_than_setup(void **state)
{
	create_role_with("gocd_st", "statement_timeout = 1");
	assert_int_equal(tpg_exec("DROP TABLE IF EXISTS stt; CREATE TABLE stt(id bigserial primary key,"
				  " k text not null unique, st text default current_setting('statement_timeout'))"), 0);
	struct tgocd *g = start_as("gocd_st", "--table=stt=k");
	struct tclient *c = connect_to(g);
	struct goc_response r;
	bool ok = false;
	for (int i = 0; i < 100 && !ok; i++) { /* the pool's first connect may still be under way */
		assert_int_equal(tclient_call(c, "{\"op\":\"get_or_create\",\"table\":\"stt\","
					      "\"key\":{\"k\":\"a\"}}", &r), 0);
		ok = r.ok;
		if (!ok && r.code != GOC_E_UNAVAILABLE)
			print_error("with the role's 1 ms statement_timeout: %s\n", tclient_last(c));
		codec_response_free(&r);
		if (!ok)
			harness_sleep_ms(30);
	}
	if (!ok)
		print_error("with the role's 1 ms statement_timeout: %s\n", tclient_last(c));
	assert_true(ok);
	char *st = tpg_value("SELECT st FROM stt WHERE k = 'a'");
	assert_non_null(st);
	if (strcmp(st, "10s") != 0)
		print_error("the session's statement_timeout: %s, not request_timeout\n", st);
	assert_string_equal(st, "10s");
	free(st);
	tclient_close(c);
	assert_int_equal(tgocd_stop(g), 0);
	drop_role("gocd_st");
	harness_pass();
}

/*
 * idle_session_timeout on the role (PostgreSQL 14+): gocd's pool keeps its
 * connections open between requests, by design, and the server closed
 * each one as soon as it had been idle that long.  With 20 ms, every
 * connection was replaced about 15 times a second, each replacement a
 * warning, and a request arriving as one closed met a lost connection.
 * gocd's sessions turn it off, as PgBouncer's server connections live
 * until its own server_idle_timeout.  The row records the backend that
 * inserted it: with one pool connection, the two requests 300 ms apart
 * must share it.
 */
static void test_role_idle_session_timeout_does_not_close_the_pool(void **state)
{
	create_role_with("gocd_idle", "idle_session_timeout = 20");
	assert_int_equal(tpg_exec("DROP TABLE IF EXISTS idle_s; CREATE TABLE idle_s(id bigserial primary key,"
				  " k text not null unique, pid int default pg_backend_pid())"), 0);
	struct tgocd *g = start_as("gocd_idle", "--table=idle_s=k");
	struct tclient *c = connect_to(g);
	struct goc_response r;
	bool ok = false;
	for (int i = 0; i < 100 && !ok; i++) { /* the pool's first connect may still be under way */
		assert_int_equal(tclient_call(c, "{\"op\":\"get_or_create\",\"table\":\"idle_s\","
					      "\"key\":{\"k\":\"a\"}}", &r), 0);
		ok = r.ok;
		codec_response_free(&r);
		if (!ok)
			harness_sleep_ms(30);
	}
	assert_true(ok);
	harness_sleep_ms(300);
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"idle_s\",\"key\":{\"k\":\"b\"}}", &r);
	assert_true(r.created);
	codec_response_free(&r);
	char *n = tpg_value("SELECT count(DISTINCT pid) FROM idle_s");
	assert_non_null(n);
	if (strcmp(n, "1") != 0)
		print_error("two requests 300 ms apart ran on %s backends: the idle one was closed\n", n);
	assert_string_equal(n, "1");
	free(n);
	tclient_close(c);
	assert_int_equal(tgocd_stop(g), 0);
	drop_role("gocd_idle");
	harness_pass();
}

/*
 * client_min_messages = debug5 for the role: every statement sent gocd a
 * dozen DEBUG notices, each logged as a line of gocd's (57k lines in a 3 s
 * run of 16 clients, 20% of the throughput).  gocd's sessions take
 * notices from NOTICE up, as by default.
 */
static void test_role_client_min_messages_does_not_flood_the_log(void **state)
{
	create_role_with("gocd_chatty", "client_min_messages = debug5");
	assert_int_equal(tpg_exec("DROP TABLE IF EXISTS chatty;"
				  " CREATE TABLE chatty(id bigserial primary key, k text not null unique)"), 0);
	struct tgocd *g = start_as("gocd_chatty", "--table=chatty=k");
	struct tclient *c = connect_to(g);
	for (int i = 0; i < 4; i++) {
		struct goc_response r;
		char req[160];
		snprintf(req, sizeof req, "{\"op\":\"get_or_create\",\"table\":\"chatty\",\"key\":{\"k\":\"c%d\"}}", i);
		call_ok(c, req, &r);
		codec_response_free(&r);
	}
	assert_int_equal(tgocd_stop(g), 0);
	FILE *f = fopen(g->log_path, "r");
	assert_non_null(f);
	char line[4096];
	int debug = 0;
	while (fgets(line, sizeof line, f))
		if (strstr(line, "postgres: DEBUG"))
			debug++;
	fclose(f);
	if (debug)
		print_error("%d DEBUG lines from PostgreSQL in gocd's log\n", debug);
	assert_int_equal(debug, 0);
	assert_int_equal(tpg_exec("DROP TABLE chatty; DROP ROLE gocd_chatty"), 0);
	harness_pass();
}

/*
 * A table name that is not schema-qualified follows the role's search_path
 * at every catalog read.  A table of the same name created in a schema
 * earlier on the path took over at the next reconnect without a word in
 * the log: a key that existed in the old table was answered created:true
 * again from the new one.  It is logged as a warning now.
 */
static void test_a_table_taken_over_on_the_search_path_is_logged(void **state)
{
	create_role_with("gocd_early", "search_path = early, public");
	assert_int_equal(tpg_exec("DROP SCHEMA IF EXISTS early CASCADE; DROP TABLE IF EXISTS movt;"
				  "CREATE SCHEMA early;"
				  "CREATE TABLE movt(id bigserial primary key, k text not null unique)"), 0);
	struct tgocd *g = start_as("gocd_early", "--table=movt=k");
	struct tclient *c = connect_to(g);
	struct goc_response r;
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"movt\",\"key\":{\"k\":\"m\"}}", &r);
	assert_true(r.created);
	codec_response_free(&r);
	assert_int_equal(tpg_exec("CREATE TABLE early.movt(id bigserial primary key, k text not null unique);"
				  "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'gocd_early'"), 0);
	bool warned = false;
	for (int i = 0; i < 100 && !warned; i++) {
		usleep(50 * 1000);
		FILE *f = fopen(g->log_path, "r");
		assert_non_null(f);
		char line[2048];
		while (fgets(line, sizeof line, f))
			if (strstr(line, "table \"movt\" now resolves to \"early\".\"movt\", no longer \"public\".\"movt\""))
				warned = true;
		fclose(f);
	}
	if (!warned)
		print_error("no warning that \"movt\" moved to early.movt\n");
	assert_true(warned);
	assert_int_equal(tgocd_stop(g), 0);
	assert_int_equal(tpg_exec("DROP SCHEMA early CASCADE; DROP TABLE movt; DROP ROLE gocd_early"), 0);
	harness_pass();
}

/*
 * enable_nestloop = off for the role (or database).  gocd turns hash and
 * merge joins off itself, so every join in its batch statements was a
 * disabled one, costed 1e10: far past jit_above_cost, so each statement
 * was JIT-compiled with inlining and optimisation, ~100 ms a batch (a
 * 16-client run fell from 50k to 33 req/s, requests answered after 1.5 s).
 * jit_dump_bitcode leaves a .bc file in the data directory for every JIT
 * compilation, so the test counts them instead of timing anything.
 */
static void test_role_planner_settings_do_not_make_statements_jit_compiled(void **state)
{
	if (tpg_count("SELECT pg_jit_available()::int") != 1) {
		print_message("JIT is not available in this PostgreSQL: nothing to test\n");
		harness_pass();
		return;
	}
	create_role_with("gocd_nonest", "enable_nestloop = off");
	assert_int_equal(tpg_exec("ALTER ROLE gocd_nonest SET jit_dump_bitcode = on;"
				  " DROP TABLE IF EXISTS nonest;"
				  " CREATE TABLE nonest(id bigserial primary key, k text not null unique, v text)"), 0);
	long long bc0 = tpg_count("SELECT count(*) FROM pg_ls_dir('.') f WHERE f LIKE '%%.bc'");
	struct tgocd *g = start_as("gocd_nonest", "--table=nonest=k");
	struct tclient *c = connect_to(g);
	enum { N = 4 };
	for (int round = 0; round < 3; round++) {
		/* new keys, batched; the same again (found); gets */
		char buf[1024];
		size_t n = 0;
		for (int i = 0; i < N; i++)
			n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"op\":\"%s\",\"table\":\"nonest\","
					      "\"key\":{\"k\":\"j%d\"}}\n", round == 2 ? "get" : "get_or_create", i);
		assert_int_equal(tclient_send(c, buf, n), 0);
		for (int i = 0; i < N; i++) {
			struct goc_response r;
			assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
			if (!r.ok || r.created != (round == 0))
				print_error("round %d j%d: %s\n", round, i, tclient_last(c));
			assert_true(r.ok && r.created == (round == 0));
			codec_response_free(&r);
		}
	}
	assert_true(batch_stat(c, "batches") > 0);
	assert_int_equal(tgocd_stop(g), 0);
	long long bc = tpg_count("SELECT count(*) FROM pg_ls_dir('.') f WHERE f LIKE '%%.bc'") - bc0;
	if (bc != 0)
		print_error("gocd's statements were JIT-compiled %lld times\n", bc);
	assert_int_equal(bc, 0);
	assert_int_equal(tpg_count("SELECT count(*) FROM nonest"), N);
	assert_int_equal(tpg_exec("DROP TABLE nonest; DROP ROLE gocd_nonest"), 0);
	harness_pass();
}

/*
 * lock_timeout set for the role.  A key whose row another transaction has
 * just inserted waits for that transaction, bounded by request_timeout (the
 * statement_timeout gocd gives its sessions), and is answered with the
 * holder's row once it commits.  Under the role's lock_timeout the insert
 * was cancelled after 100 ms instead (55P03), and the request answered
 * 'internal', though the row came within request_timeout.
 */
static void test_role_lock_timeout_does_not_cut_a_key_wait_short(void **state)
{
	create_role_with("gocd_locky", "lock_timeout = '100ms'");
	assert_int_equal(tpg_exec("DROP TABLE IF EXISTS lockt;"
				  " CREATE TABLE lockt(id bigserial primary key, k text not null unique, n int)"), 0);
	struct tgocd *g = start_as("gocd_locky", "--table=lockt=k");
	struct tpg_session *holder = tpg_session_open();
	assert_non_null(holder);
	assert_int_equal(tpg_session_exec(holder, "BEGIN; INSERT INTO lockt(k, n) VALUES ('held', 7)"), 0);
	struct tclient *c = connect_to(g);
	assert_int_equal(tclient_sendf(c, "{\"op\":\"get_or_create\",\"table\":\"lockt\","
					  "\"key\":{\"k\":\"held\"},\"defaults\":{\"n\":1}}\n"), 0);
	/* until the insert waits on the lock, then past the role's lock_timeout */
	long long waiting = 0;
	for (int i = 0; i < 200 && waiting == 0; i++) {
		waiting = tpg_count("SELECT count(*) FROM pg_stat_activity WHERE usename = 'gocd_locky'"
				    " AND wait_event_type = 'Lock'");
		if (waiting == 0)
			usleep(10 * 1000);
	}
	usleep(400 * 1000);
	assert_int_equal(tpg_session_exec(holder, "COMMIT"), 0);
	tpg_session_close(holder);
	struct goc_response r;
	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	if (r.code != GOC_OK || r.created)
		print_error("held: %s\n", tclient_last(c));
	assert_int_equal(r.code, GOC_OK);
	assert_false(r.created);
	assert_int_equal(row_int(&r, "n"), 7);
	codec_response_free(&r);
	assert_int_equal(tpg_count("SELECT count(*) FROM lockt"), 1);
	assert_int_equal(tgocd_stop(g), 0);
	assert_int_equal(tpg_exec("DROP TABLE lockt; DROP ROLE gocd_locky"), 0);
	harness_pass();
}

/*
 * session_replication_role = replica for the role (a superuser can set it
 * for any role).  It turns off every ordinary trigger, and foreign keys
 * are triggers: a default naming no parent row was stored, alone and in a
 * batch, where PROTOCOL.md promises constraint_violation.  gocd's
 * sessions run as 'origin'.
 */
static void test_replica_role_does_not_turn_foreign_keys_off(void **state)
{
	create_role_with("gocd_replica", "session_replication_role = replica");
	assert_int_equal(tpg_exec("DROP TABLE IF EXISTS replchild, replparent;"
				  " CREATE TABLE replparent(id int primary key);"
				  " INSERT INTO replparent VALUES (1);"
				  " CREATE TABLE replchild(id bigserial primary key, k text not null unique,"
				  " p int references replparent(id))"), 0);
	struct tgocd *g = start_as("gocd_replica", "--table=replchild=k");
	struct tclient *c = connect_to(g);
	for (int round = 0; round < 2; round++) {
		/* round 0: "bad0" alone; round 1: in a batch with good ones */
		char buf[1024];
		size_t n = 0;
		int nreq = round ? 4 : 1;
		for (int i = 0; i < nreq; i++)
			n += (size_t)snprintf(buf + n, sizeof buf - n, "{\"op\":\"get_or_create\",\"table\":"
					      "\"replchild\",\"key\":{\"k\":\"%s%d\"},\"defaults\":{\"p\":%d}}\n",
					      i == 0 ? "bad" : "good", round * 10 + i, i == 0 ? 99 : 1);
		assert_int_equal(tclient_send(c, buf, n), 0);
		for (int i = 0; i < nreq; i++) {
			struct goc_response r;
			assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
			enum goc_err want = i == 0 ? GOC_E_CONSTRAINT_VIOLATION : GOC_OK;
			if (r.code != want)
				print_error("round %d request %d: %s\n", round, i, tclient_last(c));
			assert_int_equal(r.code, want);
			codec_response_free(&r);
		}
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM replchild WHERE p NOT IN (SELECT id FROM replparent)"), 0);
	assert_int_equal(tpg_count("SELECT count(*) FROM replchild"), 3);
	assert_int_equal(tgocd_stop(g), 0);
	assert_int_equal(tpg_exec("DROP TABLE replchild, replparent; DROP ROLE gocd_replica"), 0);
	harness_pass();
}

/*
 * A key or default the column cannot hold gets invalid_value in a batch as
 * it does alone - never a silently truncated value matching or creating
 * another key's row ('abcdeXYZ' cast explicitly to varchar(5) is 'abcde').
 * A key the column rounds (numeric(5,2)) finds the row it rounds to.
 */
static void test_typmod_keys_in_batches(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	assert_int_equal(tpg_exec("INSERT INTO vc(k) VALUES ('abcde'); INSERT INTO vca(k) VALUES ('{abcde}')"), 0);
	static const struct {
		const char *req;
		bool ok, created;
	} want[] = {
		{ "{\"op\":\"get_or_create\",\"table\":\"vc\",\"key\":{\"k\":\"abcdeXYZ\"}}", false, false },
		{ "{\"op\":\"get_or_create\",\"table\":\"vc\",\"key\":{\"k\":\"zzzzz1\"}}", false, false },
		{ "{\"op\":\"get_or_create\",\"table\":\"vc\",\"key\":{\"k\":\"zzzzz2\"}}", false, false },
		{ "{\"op\":\"get_or_create\",\"table\":\"vc\",\"key\":{\"k\":\"q\"},\"defaults\":{\"v\":\"long\"}}", false, false },
		{ "{\"op\":\"get_or_create\",\"table\":\"vc\",\"key\":{\"k\":\"abcde\"}}", true, false },
		{ "{\"op\":\"get_or_create\",\"table\":\"vc\",\"key\":{\"k\":\"r\"},\"defaults\":{\"v\":\"ok\"}}", true, true },
		/* spaces past n are dropped on storing, so they find 'abcde' */
		{ "{\"op\":\"get_or_create\",\"table\":\"vc\",\"key\":{\"k\":\"abcde  \"}}", true, false },
		{ "{\"op\":\"get\",\"table\":\"vc\",\"key\":{\"k\":\"abcde \"}}", true, false },
		{ "{\"op\":\"get_or_create\",\"table\":\"nm\",\"key\":{\"k\":\"1.005\"}}", true, true },
		{ "{\"op\":\"get_or_create\",\"table\":\"nm\",\"key\":{\"k\":\"1.01\"}}", true, false },
		{ "{\"op\":\"get_or_create\",\"table\":\"nm\",\"key\":{\"k\":1.014}}", true, false },
		/* a domain over a domain over varchar(5) */
		{ "{\"op\":\"get_or_create\",\"table\":\"vcd\",\"key\":{\"k\":\"zzzzzzzz\"}}", false, false },
		{ "{\"op\":\"get_or_create\",\"table\":\"vcd\",\"key\":{\"k\":\"yyyyyyyyy\"}}", false, false },
		{ "{\"op\":\"get_or_create\",\"table\":\"vcd\",\"key\":{\"k\":\"xx\"}}", true, true },
		/* arrays of varchar(5): each element as the INSERT takes it.
		 * (No failing request for vcad: a batch split may run its two
		 * spellings in either order.) */
		{ "{\"op\":\"get_or_create\",\"table\":\"vca\",\"key\":{\"k\":\"{\\\"abcde  \\\"}\"}}", true, false },
		{ "{\"op\":\"get_or_create\",\"table\":\"vca\",\"key\":{\"k\":\"{\\\"abcdeX\\\"}\"}}", false, false },
		{ "{\"op\":\"get_or_create\",\"table\":\"vca\",\"key\":{\"k\":\"{q,\\\"abcde \\\"}\"}}", true, true },
		{ "{\"op\":\"get_or_create\",\"table\":\"vcad\",\"key\":{\"k\":\"{\\\"ab     \\\"}\"}}", true, true },
		{ "{\"op\":\"get_or_create\",\"table\":\"vcad\",\"key\":{\"k\":\"{\\\"ab   \\\"}\"}}", true, false },
		{ "{\"op\":\"get\",\"table\":\"vcad\",\"key\":{\"k\":\"{\\\"ab   \\\"}\"}}", true, false },
	};
	enum { N = sizeof want / sizeof want[0] };
	for (int round = 0; round < 2; round++) {
		/* round 0: one write, so they meet in batches; round 1: one by one
		 * (everything exists now, so nothing is created) */
		for (int i = 0; i < N; i++) {
			assert_int_equal(tclient_sendf(c, "%s\n", want[i].req), 0);
			if (round == 0)
				continue;
			struct goc_response r;
			assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
			if (r.ok != want[i].ok || r.created)
				print_error("alone: %s -> %s\n", want[i].req, tclient_last(c));
			assert_int_equal(r.ok, want[i].ok);
			assert_false(r.created);
			codec_response_free(&r);
		}
		for (int i = 0; round == 0 && i < N; i++) {
			struct goc_response r;
			assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
			if (r.ok != want[i].ok || r.created != want[i].created ||
			    (!r.ok && r.code != GOC_E_INVALID_VALUE))
				print_error("batched: %s -> %s\n", want[i].req, tclient_last(c));
			assert_int_equal(r.ok, want[i].ok);
			assert_int_equal(r.created, want[i].created);
			if (!r.ok)
				assert_int_equal(r.code, GOC_E_INVALID_VALUE);
			codec_response_free(&r);
		}
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM vc"), 2);
	assert_int_equal(tpg_count("SELECT count(*) FROM vc WHERE k IN ('abcde', 'r') AND v IS NOT DISTINCT FROM "
				   "CASE k WHEN 'r' THEN 'ok' END"), 2);
	assert_int_equal(tpg_count("SELECT count(*) FROM nm WHERE k = 1.01"), 1);
	assert_int_equal(tpg_count("SELECT count(*) FROM nm"), 1);
	assert_int_equal(tpg_count("SELECT count(*) FROM vcd"), 1);
	assert_int_equal(tpg_count("SELECT count(*) FROM vca"), 2);
	assert_int_equal(tpg_count("SELECT count(*) FROM vca WHERE k IN ('{abcde}', '{q,abcde}')"), 2);
	assert_int_equal(tpg_count("SELECT count(*) FROM vcad WHERE k = '{\"ab   \"}'"), 1);
	assert_int_equal(tpg_count("SELECT count(*) FROM vcad"), 1);
	assert_true(batch_stat(c, "batches") > 0);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * Batch shapes are bounded (1024) but were never freed: one client
 * cycling through sets of defaults filled them, and from then on no new
 * shape - for any table, plain gets included - was ever batched until a
 * restart.  An unused shape now makes room.
 */
static void test_shapes_do_not_run_out(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	enum { SETS = 1100 };
	/* pipelined, so their lookups meet in batches and the misses queue
	 * for insert batches: one shape per set of defaults */
	size_t cap = SETS * 256, len = 0;
	char *all = malloc(cap);
	assert_non_null(all);
	for (int i = 1; i <= SETS; i++) {
		len += (size_t)snprintf(all + len, cap - len, "{\"op\":\"get_or_create\",\"table\":\"wide\","
					"\"key\":{\"k\":\"set-%d\"},\"defaults\":{", i);
		for (int b = 0, first = 1; b < 11; b++)
			if (i & (1 << b)) {
				len += (size_t)snprintf(all + len, cap - len, "%s\"c%d\":%d", first ? "" : ",", b, b);
				first = 0;
			}
		len += (size_t)snprintf(all + len, cap - len, "}}\n");
	}
	assert_int_equal(tclient_send(c, all, len), 0);
	free(all);
	for (int i = 1; i <= SETS; i++) {
		struct goc_response r;
		assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
		if (!r.ok)
			print_error("set %d -> %s\n", i, tclient_last(c));
		assert_true(r.ok);
		codec_response_free(&r);
	}
	/* a shape never seen before: 400 pipelined gets of one table */
	long long before = batch_stat(c, "batches");
	char buf[400 * 80];
	len = 0;
	for (int i = 0; i < 400; i++)
		len += (size_t)snprintf(buf + len, sizeof buf - len,
					"{\"op\":\"get\",\"table\":\"pipe\",\"key\":{\"k\":\"none-%d\"}}\n", i);
	assert_int_equal(tclient_send(c, buf, len), 0);
	for (int i = 0; i < 400; i++) {
		struct goc_response r;
		assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
		assert_true(r.ok);
		codec_response_free(&r);
	}
	long long batches = batch_stat(c, "batches") - before;
	if (batches == 0)
		print_error("400 pipelined gets went out unbatched after %d sets of defaults\n", SETS);
	assert_true(batches > 0);
	assert_int_equal(tpg_count("SELECT count(*) FROM wide"), SETS);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * A key held by someone else's open transaction blocks the whole batch
 * until statement_timeout (= request_timeout), when every request in it is
 * past its deadline.  Splitting would block again per level and hold the
 * connection that long; the batch is answered 'timeout' instead, and the
 * next request runs at once.
 */
static void test_statement_timeout_does_not_split_batches(void **state)
{
	struct tgocd *g = tgocd_start(STD_ARGS, "--pool-size=1", "--request-timeout=1000", NULL);
	assert_non_null(g);
	struct tclient *c = connect_to(g);
	struct tpg_session *s = tpg_session_open();
	assert_non_null(s);
	assert_int_equal(tpg_session_exec(s, "BEGIN; INSERT INTO pipe(k) VALUES ('held-3')"), 0);
	long long splits = batch_stat(c, "splits");
	char buf[2048];
	size_t len = 0;
	for (int i = 0; i < 8; i++) /* one write: one batch */
		len += (size_t)snprintf(buf + len, sizeof buf - len,
					"{\"op\":\"get_or_create\",\"id\":%d,\"table\":\"pipe\","
					"\"key\":{\"k\":\"%s-%d\"}}\n", i, i == 3 ? "held" : "beside", i);
	assert_int_equal(tclient_send(c, buf, len), 0);
	for (int i = 0; i < 8; i++) {
		struct goc_response r;
		assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
		if (r.ok || r.code != GOC_E_TIMEOUT)
			print_error("answer %d: %s\n", i, tclient_last(c));
		assert_int_equal(r.code, GOC_E_TIMEOUT);
		codec_response_free(&r);
	}
	/* the one connection is free again: this one is not stuck behind halves */
	struct goc_response r;
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"pipe\",\"key\":{\"k\":\"after-the-block\"}}", &r);
	assert_true(r.created);
	codec_response_free(&r);
	assert_int_equal(batch_stat(c, "splits"), splits);
	tpg_session_close(s);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* The pool's connections die under gocd (pg_terminate_backend: a restart,
 * a failover, a firewall killing idle sessions).  PostgreSQL is not down,
 * so requests must be re-run on fresh connections, not fail. */
static void test_killed_backends_are_replaced_transparently(void **state)
{
	struct tgocd *g = start_std();
	struct tclient *c = connect_to(g);
	struct goc_response r;
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"users\",\"key\":{\"email\":\"kb0@x\"}}", &r);
	codec_response_free(&r);

	/* idle connections killed, then a request right away */
	assert_true(tpg_count("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
			      "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()") > 0);
	harness_sleep_ms(100);
	for (int i = 1; i <= 3; i++) {
		char req[160];
		snprintf(req, sizeof req, "{\"op\":\"get_or_create\",\"table\":\"users\","
					  "\"key\":{\"email\":\"kb%d@x\"}}", i);
		call_ok(c, req, &r);
		assert_true(r.created);
		codec_response_free(&r);
	}

	/* a connection killed while its statement waits: the outcome is
	 * unknown to gocd, and get-or-create is safe to run again */
	struct tpg_session *s = tpg_session_open();
	assert_non_null(s);
	assert_int_equal(tpg_session_exec(s, "BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE"), 0);
	assert_int_equal(tclient_sendf(c, "{\"op\":\"get_or_create\",\"id\":9,\"table\":\"users\","
					  "\"key\":{\"email\":\"kb-wait@x\"}}\n"), 0);
	int killed = 0;
	for (int waited = 0; waited < 3000 && killed == 0; waited += 50) {
		harness_sleep_ms(50);
		killed = (int)tpg_count("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
					"WHERE wait_event_type = 'Lock' AND backend_type = 'client backend'");
	}
	assert_true(killed > 0);
	harness_sleep_ms(300);
	assert_int_equal(tpg_session_exec(s, "COMMIT"), 0);
	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	if (!r.ok)
		print_error("request whose connection was killed: %s\n", tclient_last(c));
	assert_true(r.ok);
	assert_true(r.created);
	assert_int_equal(json_integer_value(r.id), 9);
	codec_response_free(&r);
	assert_int_equal(tpg_count("SELECT count(*) FROM users WHERE email = 'kb-wait@x'"), 1);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * Composite keys whose texts concatenate alike ("ab"+"c", "a"+"bc", with
 * separators a lock key might use) are different keys: while all of them
 * wait together, none may be handed another's row.
 */
static void test_composite_keys_never_share_a_lock(void **state)
{
	static const char *const keys[][2] = {
		{ "ab", "c" }, { "a", "bc" }, { "", "abc" }, { "abc", "" },
		{ "a\\u0001b", "c" }, { "a", "b\\u0001c" },
		{ "a,b", "c" }, { "a", "b,c" }, { "a\\tb", "c" }, { "a", "b\\tc" },
		{ "a|b", "c" }, { "a", "b|c" }, { "a\\\"", "b" }, { "a", "\\\"b" },
	};
	enum { N = sizeof keys / sizeof keys[0] };
	struct tgocd *g = start_std();
	struct tclient *cl[N];
	for (int i = 0; i < N; i++)
		cl[i] = connect_to(g);
	struct tpg_session *s = tpg_session_open();
	assert_non_null(s);
	assert_int_equal(tpg_session_exec(s, "BEGIN; LOCK TABLE tt IN ACCESS EXCLUSIVE MODE"), 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(tclient_sendf(cl[i], "{\"op\":\"get_or_create\",\"id\":%d,\"table\":\"tt\","
						     "\"key\":{\"a\":\"%s\",\"b\":\"%s\"}}\n",
					       i, keys[i][0], keys[i][1]), 0);
	harness_sleep_ms(300);
	assert_int_equal(tpg_session_exec(s, "COMMIT"), 0);
	long long ids[N];
	for (int i = 0; i < N; i++) {
		struct goc_response r;
		assert_int_equal(tclient_recv(cl[i], &r, HARNESS_IO_TIMEOUT_MS), 0);
		if (!r.ok || !r.created)
			print_error("key %d (%s|%s): %s\n", i, keys[i][0], keys[i][1], tclient_last(cl[i]));
		assert_true(r.ok);
		assert_true(r.created);
		/* the row is this request's own key, decoded the same way */
		char want[64];
		snprintf(want, sizeof want, "{\"a\":\"%s\",\"b\":\"%s\"}", keys[i][0], keys[i][1]);
		json_t *w = json_loads(want, 0, NULL);
		assert_non_null(w);
		assert_true(json_equal(json_object_get(r.row, "a"), json_object_get(w, "a")));
		assert_true(json_equal(json_object_get(r.row, "b"), json_object_get(w, "b")));
		json_decref(w);
		ids[i] = row_int(&r, "id");
		for (int j = 0; j < i; j++)
			assert_true(ids[j] != ids[i]);
		codec_response_free(&r);
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM tt"), N);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* ---- startup checks ---------------------------------------------------------- */

/* Run gocd (with -t or for real) against a table and return its exit code;
 * *out receives its output. */
static int run_gocd_with_table(const char *table_arg, bool check_only, char **out)
{
	char listen[64], pg[200];
	snprintf(listen, sizeof listen, "--listen=127.0.0.1:%d", harness_free_port());
	snprintf(pg, sizeof pg, "--postgres=%s", tpg_conninfo());
	/* no admin listener: its default port is shared with the machine */
	const char *args[] = { listen, pg, "--admin-listen=", table_arg, NULL };
	const char *check[] = { "-t", listen, pg, "--admin-listen=", table_arg, NULL };
	return tgocd_run(out, 20000, check_only ? check : args);
}

/* Without a unique index on exactly the key columns gocd cannot promise
 * one row per key: it must refuse to start and say how to fix it. */
static void test_refuses_table_without_unique_index(void **state)
{
	static const char *const tables[] = {
		"--table=noidx=email",   /* no unique index at all */
		"--table=partialidx=k",  /* only a partial unique index */
		"--table=wideidx=a",     /* unique on (a, b), not on a */
	};
	for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
		for (int check_only = 0; check_only <= 1; check_only++) {
			char *out = NULL;
			int rc = run_gocd_with_table(tables[i], check_only, &out);
			if (rc == 0 || out == NULL || strstr(out, "CREATE UNIQUE INDEX") == NULL)
				print_error("%s%s: exit %d, output:\n%s\n", check_only ? "-t " : "",
					    tables[i], rc, out ? out : "(none)");
			assert_true(rc > 0);
			assert_non_null(out);
			assert_non_null(strstr(out, "CREATE UNIQUE INDEX"));
			free(out);
		}
	}
	harness_pass();
}

/*
 * A unique index's INCLUDE columns are carried, not compared: UNIQUE (k)
 * INCLUDE (v) is unique on k.  gocd took it for an index on (k, v): it
 * served a table keyed (k, v) whose every insert then failed 42P10 (ON
 * CONFLICT (k, v) matches no index), taking the table out of service
 * again every few seconds, and refused the table keyed (k) it does fit.
 */
static void test_unique_index_include_columns_are_not_key(void **state)
{
	assert_int_equal(tpg_exec("DROP TABLE IF EXISTS incidx;"
				  "CREATE TABLE incidx(id bigserial, k int not null, v text not null);"
				  "CREATE UNIQUE INDEX incidx_k ON incidx(k) INCLUDE (v)"), 0);
	char *out = NULL;
	int rc = run_gocd_with_table("--table=incidx=k,v", true, &out);
	if (rc <= 0 || out == NULL || strstr(out, "CREATE UNIQUE INDEX") == NULL)
		print_error("-t --table=incidx=k,v: exit %d, output:\n%s\n", rc, out ? out : "(none)");
	assert_true(rc > 0);
	assert_non_null(strstr(out, "CREATE UNIQUE INDEX"));
	free(out);

	struct tgocd *g = tgocd_start(STD_ARGS, "--table=incidx=k", NULL);
	assert_non_null(g);
	struct tclient *c = connect_to(g);
	struct goc_response r;
	static const char req[] = "{\"op\":\"get_or_create\",\"table\":\"incidx\",\"key\":{\"k\":1},"
				  "\"defaults\":{\"v\":\"a\"}}";
	for (int i = 0; i < 2; i++) {
		assert_int_equal(tclient_call(c, req, &r), 0);
		if (!r.ok || r.created != (i == 0))
			print_error("incidx, call %d: %s\n", i, tclient_last(c));
		assert_true(r.ok);
		assert_int_equal(r.created, i == 0);
		codec_response_free(&r);
	}
	assert_int_equal(tpg_count("SELECT count(*) FROM incidx"), 1);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* A unique index whose collation makes other keys equal than the column's
 * (case-insensitive in the index only): a case variant would miss the
 * lookup, conflict on insert, and miss again.  Refused, with the reason. */
static void test_refuses_index_with_another_collation(void **state)
{
	for (int t = 0; t < 4; t++) {
		int check_only = t & 1;
		char *out = NULL;
		int rc = run_gocd_with_table(t < 2 ? "--table=collidx=k" : "--table=collidx2=k",
					     check_only, &out);
		const char *want = "compares k (collation ci in the index, default in the column)";
		if (rc != 1 || out == NULL || strstr(out, want) == NULL)
			print_error("%scollidx%s: exit %d, output:\n%s\n", check_only ? "-t " : "",
				    t < 2 ? "" : "2", rc, out ? out : "(none)");
		assert_int_equal(rc, 1);
		assert_non_null(strstr(out, want));
		free(out);
	}
	harness_pass();
}

/*
 * The same with an operator class: record_image_ops compares bytes, so
 * (1.0) and (1.00) are two keys to the index and one to the column's =.
 * Served, a batch of both inserted two rows for one key and told neither
 * caller created:true (text_ops on a citext column did the same with
 * 'Ann', 'ann' and 'ANN': three rows).  Refused, with the reason; an
 * operator class that
 * compares as the default does (text_pattern_ops) is served.
 */
static void test_refuses_index_with_another_operator_class(void **state)
{
	assert_int_equal(tpg_exec("DROP TABLE IF EXISTS opcidx, opcok; DROP TYPE IF EXISTS opc_pair;"
				  "CREATE TYPE opc_pair AS (a numeric);"
				  "CREATE TABLE opcidx(id bigserial primary key, k opc_pair not null);"
				  "CREATE UNIQUE INDEX opcidx_k ON opcidx (k record_image_ops);"
				  "CREATE TABLE opcok(id bigserial primary key, k text not null);"
				  "CREATE UNIQUE INDEX opcok_k ON opcok (k text_pattern_ops)"), 0);
	char *out = NULL;
	int rc = run_gocd_with_table("--table=opcidx=k", true, &out);
	const char *want = "compares k (operator class record_image_ops in the index";
	if (rc != 1 || out == NULL || strstr(out, want) == NULL)
		print_error("-t opcidx: exit %d, output:\n%s\n", rc, out ? out : "(none)");
	assert_int_equal(rc, 1);
	assert_non_null(strstr(out, want));
	free(out);
	out = NULL;
	rc = run_gocd_with_table("--table=opcok=k", true, &out);
	if (rc != 0)
		print_error("-t opcok: exit %d, output:\n%s\n", rc, out ? out : "(none)");
	assert_int_equal(rc, 0);
	free(out);
	harness_pass();
}

/* Read exactly n bytes (blocking); 0, or -1 at EOF or error. */
static int read_full(int fd, void *buf, size_t n)
{
	for (size_t got = 0; got < n;) {
		ssize_t r = read(fd, (char *)buf + got, n - got);
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/*
 * In a child: a "PostgreSQL" on lfd that logs every client in (SSL and GSS
 * encryption refused, AuthenticationOk, ReadyForQuery) and then never
 * answers a query, as a frozen backend or a pooler queueing for a server
 * that is down does.  One client at a time, until it hangs up.
 */
static pid_t mute_postgres(int lfd)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid > 0)
		return pid;
	alarm(60);
	for (;;) {
		int c = accept(lfd, NULL, NULL);
		if (c < 0)
			_exit(1);
		unsigned char hdr[8], body[1024];
		for (;;) {
			if (read_full(c, hdr, 8) != 0)
				break;
			uint32_t len = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) |
				       ((uint32_t)hdr[2] << 8) | hdr[3];
			uint32_t code = ((uint32_t)hdr[4] << 24) | ((uint32_t)hdr[5] << 16) |
					((uint32_t)hdr[6] << 8) | hdr[7];
			if (len < 8 || len - 8 > sizeof body || read_full(c, body, len - 8) != 0)
				break;
			if (code == 80877103 || code == 80877104) { /* SSL, GSS: no */
				if (write(c, "N", 1) != 1)
					break;
				continue;
			}
			static const unsigned char in[] = {
				'R', 0, 0, 0, 8, 0, 0, 0, 0,   /* AuthenticationOk */
				'K', 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 2,
				'Z', 0, 0, 0, 5, 'I',          /* ReadyForQuery */
			};
			if (write(c, in, sizeof in) != (ssize_t)sizeof in)
				break;
			while (read(c, body, sizeof body) > 0)
				; /* the queries: never answered */
			break;
		}
		close(c);
	}
}

/*
 * A server that takes the login and then answers nothing: libpq's
 * connect_timeout ends at the login, and the startup check's catalog query
 * waited for ever (gocd -t hung; gocd never got to READY=1).  It is bounded
 * by connect_timeout, as a pool connection's setup steps are: -t says
 * PostgreSQL could not be checked (exit 1), and a real start goes ahead as
 * with PostgreSQL down.
 */
static void test_startup_check_bounded_when_postgres_never_answers(void **state)
{
	int lport;
	int lfd = harness_listen_loopback(16, &lport);
	assert_true(lfd >= 0);
	pid_t mute = mute_postgres(lfd);
	char pg[200], listen_arg[64];
	snprintf(pg, sizeof pg, "--postgres=host=127.0.0.1 port=%d user=postgres dbname=postgres "
		 "sslmode=disable gssencmode=disable", lport);
	snprintf(listen_arg, sizeof listen_arg, "--listen=127.0.0.1:%d", harness_free_port());
	const char *args[] = { "-t", listen_arg, pg, "--admin-listen=", "--table=users=email",
			       "--connect-timeout=1500", NULL };
	char *out = NULL;
	int rc = tgocd_run(&out, 15000, args); /* -1: still running after 15 s */
	kill(mute, SIGKILL);
	waitpid(mute, NULL, 0);
	close(lfd);
	if (rc != 1 || out == NULL || strstr(out, "no answer to the catalog query") == NULL)
		print_error("gocd -t against a mute server: exit %d, output:\n%s\n", rc,
			    out ? out : "(none)");
	assert_int_equal(rc, 1);
	assert_non_null(strstr(out, "within connect_timeout (1500 ms)"));
	free(out);
	harness_pass();
}

/*
 * The startup check's connection attempt is bounded by connect_timeout in
 * milliseconds, as the pool's are.  It went through libpq's connect_timeout,
 * which counts whole seconds and takes nothing under 2 s: with
 * connect_timeout 300, gocd -t against a server that never answers the
 * login waited 2 s, and said "timeout expired" without naming the option.
 */
static void test_startup_connect_bounded_by_connect_timeout_ms(void **state)
{
	(void)state;
	int lport;
	int lfd = harness_listen_loopback(16, &lport); /* never accepts: no login answer */
	assert_true(lfd >= 0);
	char pg[200], listen_arg[64];
	snprintf(pg, sizeof pg, "--postgres=host=127.0.0.1 port=%d user=postgres dbname=postgres "
		 "sslmode=disable gssencmode=disable", lport);
	snprintf(listen_arg, sizeof listen_arg, "--listen=127.0.0.1:%d", harness_free_port());
	const char *args[] = { "-t", listen_arg, pg, "--admin-listen=", "--table=users=email",
			       "--connect-timeout=300", NULL };
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	char *out = NULL;
	int rc = tgocd_run(&out, 15000, args);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	close(lfd);
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	/* under valgrind or ASan, gocd's own start takes part of the time */
	long max_ms = harness_gocd_instrumented() ? 15000 : 1500;
	if (rc != 1 || ms > max_ms || out == NULL ||
	    strstr(out, "within connect_timeout (300 ms)") == NULL)
		print_error("gocd -t, connect_timeout 300, a server that never answers: exit %d after "
			    "%ld ms, output:\n%s\n", rc, ms, out ? out : "(none)");
	assert_int_equal(rc, 1);
	assert_true(ms <= max_ms);
	assert_non_null(strstr(out, "within connect_timeout (300 ms)"));
	free(out);
	harness_pass();
}

/*
 * The startup check's catalog reads are setup steps, each bounded by
 * connect_timeout, and one that runs long says nothing about the table.
 * They ran under the pool's session settings, statement_timeout =
 * request_timeout among them, and a read cancelled by it was taken for the
 * table's own failure: with request_timeout 300 and connect_timeout 10000,
 * a catalog read held up for a second (here by a lock on pg_collation,
 * which it reads; under load, by the machine) made gocd -t fail the table
 * and gocd refuse to start ("catalog lookup failed: canceling statement
 * due to statement timeout").
 */
static void test_startup_catalog_read_bounded_by_connect_timeout(void **state)
{
	(void)state;
	assert_int_equal(tpg_exec("DROP TABLE IF EXISTS scb; CREATE TABLE scb(id bigserial primary key,"
				  " k text not null unique)"), 0);
	PGconn *holder = PQconnectdb(tpg_conninfo());
	assert_int_equal(PQstatus(holder), CONNECTION_OK);
	/* Holds the lock for 1.5 s, then lets go by itself. */
	assert_int_equal(PQsendQuery(holder, "BEGIN; LOCK TABLE pg_catalog.pg_collation IN ACCESS "
				     "EXCLUSIVE MODE; SELECT pg_sleep(1.5); COMMIT"), 1);
	harness_sleep_ms(200);
	char pg[300], listen_arg[64];
	snprintf(pg, sizeof pg, "--postgres=%s", tpg_conninfo());
	snprintf(listen_arg, sizeof listen_arg, "--listen=127.0.0.1:%d", harness_free_port());
	const char *args[] = { "-t", listen_arg, pg, "--admin-listen=", "--table=scb=k",
			       "--request-timeout=300", "--connect-timeout=10000", NULL };
	char *out = NULL;
	int rc = tgocd_run(&out, 30000, args);
	PGresult *res;
	while ((res = PQgetResult(holder)) != NULL)
		PQclear(res);
	PQfinish(holder);
	if (rc != 0 || out == NULL || strstr(out, "configuration ok") == NULL)
		print_error("gocd -t, a catalog read held up past request_timeout but within "
			    "connect_timeout: exit %d, output:\n%s\n", rc, out ? out : "(none)");
	assert_int_equal(rc, 0);
	assert_non_null(strstr(out, "keyed by unique index"));
	free(out);
	harness_pass();
}

/*
 * A good unique index on the key beside a deferrable unique constraint on
 * the same columns: ON CONFLICT (k) takes both as arbiters and fails every
 * statement with 55000, so a table gocd (and -t) accepted answered every
 * get_or_create 'internal'.  It must be refused up front, like a collation.
 */
static void test_refuses_key_with_deferrable_constraint(void **state)
{
	assert_int_equal(tpg_exec("CREATE TABLE defk(id bigserial primary key, k text not null);"
				  "CREATE UNIQUE INDEX defk_k ON defk (k);"
				  "ALTER TABLE defk ADD CONSTRAINT defk_k_d UNIQUE (k) DEFERRABLE;"), 0);
	for (int check_only = 0; check_only < 2; check_only++) {
		char *out = NULL;
		int rc = run_gocd_with_table("--table=defk=k", check_only, &out);
		const char *want = "unique index defk_k_d on the key is deferrable";
		if (rc != 1 || out == NULL || strstr(out, want) == NULL)
			print_error("%sdefk: exit %d, output:\n%s\n", check_only ? "-t " : "", rc,
				    out ? out : "(none)");
		assert_int_equal(rc, 1);
		assert_non_null(strstr(out, want));
		free(out);
	}
	harness_pass();
}

/*
 * The same constraint added while gocd serves the table: every insert
 * failed internal (SQLSTATE 55000) until a reload or a reconnect read the
 * catalog again.  The error now asks for that re-read, and the table is
 * refused with the fix.
 */
static void test_deferrable_constraint_added_is_seen(void **state)
{
	assert_int_equal(tpg_exec("CREATE TABLE defk2(id bigserial primary key, k text not null);"
				  "CREATE UNIQUE INDEX defk2_k ON defk2 (k);"), 0);
	/* one connection, up before the change: no new connection's setup
	 * reads the catalog meanwhile */
	struct tgocd *g = tgocd_start(STD_ARGS, "--table=defk2=k", "--pool-size=1", NULL);
	assert_non_null(g);
	struct tclient *c = connect_to(g);
	struct goc_response r;
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"defk2\",\"key\":{\"k\":\"before\"}}", &r);
	assert_true(r.created);
	codec_response_free(&r);
	assert_int_equal(tpg_exec("ALTER TABLE defk2 ADD CONSTRAINT defk2_k_d UNIQUE (k) DEFERRABLE"), 0);
	bool refused = false;
	for (int i = 0; i < 50 && !refused; i++) {
		assert_int_equal(tclient_sendf(c, "{\"op\":\"get_or_create\",\"table\":\"defk2\","
					       "\"key\":{\"k\":\"after-%d\"}}\n", i), 0);
		assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
		assert_false(r.ok); /* internal (55000) until the re-read, then unavailable */
		refused = r.code == GOC_E_UNAVAILABLE && strstr(r.message, "deferrable") != NULL;
		codec_response_free(&r);
		if (!refused)
			harness_sleep_ms(100);
	}
	if (!refused)
		print_error("still not refused after 5 s: %s\n", tclient_last(c));
	assert_true(refused);
	assert_int_equal(tpg_count("SELECT count(*) FROM defk2"), 1);
	tclient_close(c);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

static void test_check_mode_accepts_good_config(void **state)
{
	char pg[200];
	snprintf(pg, sizeof pg, "--postgres=%s", tpg_conninfo());
	const char *args[] = { "-t", pg, "--admin-listen=", STD_ARGS, NULL };
	char *out = NULL;
	int rc = tgocd_run(&out, 20000, args);
	if (rc != 0)
		print_error("gocd -t: exit %d, output:\n%s\n", rc, out ? out : "");
	assert_int_equal(rc, 0);
	free(out);
	harness_pass();
}

/* A role without INSERT (or without USAGE on the id sequence) can serve
 * hits but fails every create with 'internal'; -t must say so up front. */
static void test_check_mode_warns_about_missing_grants(void **state)
{
	assert_int_equal(tpg_exec("DROP ROLE IF EXISTS gocd_reader; CREATE ROLE gocd_reader LOGIN;"
				  "GRANT SELECT ON users TO gocd_reader;"
				  "GRANT SELECT, INSERT ON race1 TO gocd_reader;"), 0);
	char pg[200];
	snprintf(pg, sizeof pg, "--postgres=host=127.0.0.1 port=%d user=gocd_reader dbname=postgres",
		 tpg_port());
	const char *args[] = { "-t", pg, "--admin-listen=", "--table=users=email", "--table=race1=k",
			       NULL };
	char *out = NULL;
	int rc = tgocd_run(&out, 20000, args);
	if (rc != 0 || out == NULL || strstr(out, "lacks INSERT on users, USAGE on sequence users_id_seq") == NULL ||
	    strstr(out, "lacks USAGE on sequence race1_id_seq") == NULL)
		print_error("gocd -t as gocd_reader: exit %d, output:\n%s\n", rc, out ? out : "");
	assert_int_equal(rc, 0);
	assert_non_null(strstr(out, "table \"users\": this PostgreSQL role lacks INSERT on users, "
				    "USAGE on sequence users_id_seq"));
	assert_non_null(strstr(out, "table \"race1\": this PostgreSQL role lacks USAGE on sequence race1_id_seq"));
	free(out);
	assert_int_equal(tpg_exec("DROP OWNED BY gocd_reader; DROP ROLE gocd_reader;"), 0);
	harness_pass();
}

/* An UNLOGGED table (or partition) is served, but a crash empties it and
 * with it every created:true: the operator is told, at start and by -t. */
static void test_check_mode_warns_about_unlogged_tables(void **state)
{
	assert_int_equal(tpg_exec("DROP TABLE IF EXISTS ulog, ulogp;"
				  "CREATE UNLOGGED TABLE ulog(k text primary key);"
				  "CREATE TABLE ulogp(k int primary key) PARTITION BY RANGE (k);"
				  "CREATE UNLOGGED TABLE ulogp1 PARTITION OF ulogp FOR VALUES FROM (0) TO (10)"), 0);
	char pg[200];
	snprintf(pg, sizeof pg, "--postgres=%s", tpg_conninfo());
	const char *args[] = { "-t", pg, "--admin-listen=", "--table=ulog=k", "--table=ulogp=k",
			       "--table=users=email", NULL };
	char *out = NULL;
	int rc = tgocd_run(&out, 20000, args);
	if (rc != 0 || out == NULL || strstr(out, "table \"ulog\" is UNLOGGED") == NULL ||
	    strstr(out, "table \"ulogp\" is UNLOGGED") == NULL || strstr(out, "\"users\" is UNLOGGED"))
		print_error("gocd -t with unlogged tables: exit %d, output:\n%s\n", rc, out ? out : "");
	assert_int_equal(rc, 0);
	assert_non_null(strstr(out, "table \"ulog\" is UNLOGGED: a PostgreSQL crash empties it"));
	assert_non_null(strstr(out, "table \"ulogp\" is UNLOGGED"));
	assert_null(strstr(out, "\"users\" is UNLOGGED"));
	free(out);
	assert_int_equal(tpg_exec("DROP TABLE ulog, ulogp"), 0);
	harness_pass();
}

/*
 * A catalog lookup that fails (here: EXECUTE on to_regclass revoked from
 * gocd's role after it started; a statement timeout or a lost connection
 * fail it the same way) says nothing about the table.  It used to take the
 * table out of service on every connection that set up after it.
 */
static void test_failed_catalog_lookup_keeps_the_table(void **state)
{
	assert_int_equal(tpg_exec("DROP ROLE IF EXISTS gocd_cat; CREATE ROLE gocd_cat LOGIN;"
				  "GRANT SELECT, INSERT ON race2 TO gocd_cat;"
				  "GRANT USAGE ON SEQUENCE race2_id_seq TO gocd_cat;"), 0);
	char pg[200];
	snprintf(pg, sizeof pg, "--postgres=host=127.0.0.1 port=%d user=gocd_cat dbname=postgres",
		 tpg_port());
	struct tgocd *g = tgocd_start(pg, "--admin-listen=", "--table=race2=k", "--pool-size=1", NULL);
	assert_non_null(g);
	struct tclient *c = connect_to(g);
	struct goc_response r;
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"race2\",\"key\":{\"k\":\"cat-1\"}}", &r);
	codec_response_free(&r);
	assert_int_equal(tpg_exec("REVOKE EXECUTE ON FUNCTION pg_catalog.to_regclass(text) FROM PUBLIC;"
				  "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
				  " WHERE usename = 'gocd_cat'"), 0);
	char *log = tgocd_wait_log(g, "catalog lookup failed", 10000);
	bool failed = strstr(log, "catalog lookup failed") != NULL;
	free(log);
	int rc = tclient_call(c, "{\"op\":\"get_or_create\",\"table\":\"race2\",\"key\":{\"k\":\"cat-2\"}}", &r);
	assert_int_equal(tpg_exec("GRANT EXECUTE ON FUNCTION pg_catalog.to_regclass(text) TO PUBLIC"), 0);
	assert_true(failed);
	assert_int_equal(rc, 0);
	if (!r.ok)
		print_error("after a failed catalog lookup: %s\n", tclient_last(c));
	assert_true(r.ok && r.created);
	codec_response_free(&r);
	tclient_close(c);
	assert_int_equal(tgocd_stop(g), 0);
	assert_int_equal(tpg_exec("DROP OWNED BY gocd_cat; DROP ROLE gocd_cat;"), 0);
	harness_pass();
}

/* What -t passes must start: an address the listeners cannot open is a
 * configuration error (exit 2) for -t and for a real start alike, not a
 * "configuration ok" followed by a start that fails or, for admin_listen,
 * goes on without it. */
static void test_check_mode_refuses_unopenable_addresses(void **state)
{
	char pg[200], longpath[160];
	snprintf(pg, sizeof pg, "--postgres=%s", tpg_conninfo());
	snprintf(longpath, sizeof longpath, "--unix=/tmp/%0120d", 0);
	static const char *const want[] = {
		"is not HOST:PORT", "is not HOST:PORT", "at most 107", "no listener configured",
		"admin_listen: \"bogus\" is not HOST:PORT",
		"\"127.0.0.1:7433x\" is not HOST:PORT",
		"would both bind port 7777; they need different ports",
		"would both bind port 7778; they need different ports",
	};
	const char *bad[][2] = {
		{ "--listen=localhost:7432", "--admin-listen=" },
		{ "--listen=127.0.0.1:99999", "--admin-listen=" },
		{ longpath, "--admin-listen=" },
		{ "--listen=", "--unix=" },
		{ "--listen=127.0.0.1:1", "--admin-listen=bogus" },
		{ "--listen=127.0.0.1:7433x", "--admin-listen=" },
		{ "--listen=127.0.0.1:7777", "--admin-listen=127.0.0.1:7777" },
		{ "--listen=0.0.0.0:7778", "--admin-listen=127.0.0.1:7778" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		for (int check_only = 0; check_only <= 1; check_only++) {
			const char *args[] = { check_only ? "-t" : "--log-level=info", pg, bad[i][0],
					       bad[i][1], "--table=users=email", NULL };
			char *out = NULL;
			int rc = tgocd_run(&out, 20000, args);
			if (rc != 2 || out == NULL || strstr(out, want[i]) == NULL)
				print_error("%s %s %s: exit %d, output:\n%s\n", args[0], bad[i][0], bad[i][1],
					    rc, out ? out : "(none)");
			assert_int_equal(rc, 2);
			assert_non_null(strstr(out, want[i]));
			free(out);
		}
	}
	harness_pass();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_herd_one_gocd_one_row_per_key),
		T(test_herd_two_gocds_one_row_per_key),
		T(test_pipeline_1000_in_order),
		T(test_pipeline_backpressure_max_pending),
		T(test_hits_consume_no_sequence_values),
		T(test_error_bad_json),
		T(test_error_bad_request),
		T(test_error_unknown_op),
		T(test_error_unknown_table),
		T(test_error_unknown_column),
		T(test_error_null_key),
		T(test_error_invalid_value),
		T(test_error_constraint_violation),
		T(test_error_too_large),
		T(test_error_unavailable_and_recovery),
		T(test_composite_key_and_jsonb_round_trip),
		T(test_composite_keys_never_share_a_lock),
		T(test_wide_values_keep_every_digit),
		T(test_jsonb_nested_real_exact),
		T(test_whole_decimals_read_as_integers),
		T(test_get_missing_key_returns_null_row),
		T(test_pipelined_get_sees_earlier_create),
		T(test_disconnect_mid_request_does_not_disturb_others),
		T(test_half_close_gets_all_answers),
		T(test_half_close_with_slow_requests),
		T(test_sigterm_exits_zero),
		T(test_sigterm_drains_in_flight_requests),
		T(test_shutdown_timeout_answers_timeout),
		T(test_unix_socket),
		T(test_schema_qualified_table),
		T(test_timeout_when_postgres_is_stuck),
		T(test_disconnected_request_still_serves_waiters),
		T(test_overloaded_max_clients),
		T(test_overloaded_max_waiters),
		T(test_crlf_blank_lines_and_id_echo),
		T(test_nulls_not_distinct_key),
		T(test_keyword_column_names),
		T(test_herd_repeatable_read_database),
		T(test_batches_isolate_failures),
		T(test_trigger_changing_key_in_batches),
		T(test_trigger_added_without_reload),
		T(test_trigger_added_folding_keys_onto_others),
		T(test_trigger_added_then_reload),
		T(test_trigger_seen_while_inserts_queued),
		T(test_row_dropped_by_trigger_is_explained),
		T(test_value_errors_that_look_like_schema_errors),
		T(test_renamed_column_type_is_reread),
		T(test_commit_failure_isolated),
		T(test_row_lock_wait_does_not_stall_other_inserts),
		T(test_insert_batches_in_parallel_keep_the_guarantee),
		T(test_batch_keys_with_array_syntax),
		T(test_equal_values_spelled_differently),
		T(test_distinct_keys_with_equal_rows_each_have_a_creator),
		T(test_null_defaults_in_batches_with_array_nulls_off),
		T(test_read_only_role_does_not_split_batches),
		T(test_read_only_session_answers_existing_keys),
		T(test_role_statement_timeout_shorter_than_setup),
		T(test_internal_errors_do_not_flood_the_log),
		T(test_functions_on_the_search_path_do_not_shadow_gocds),
		T(test_operators_on_the_search_path_do_not_shadow_the_keys),
		T(test_key_type_from_a_schema_off_the_search_path),
		T(test_a_value_cannot_pass_for_the_key_rewritten_mark),
		T(test_exit_on_error_does_not_let_one_bad_value_fail_a_batch),
		T(test_role_client_min_messages_does_not_flood_the_log),
		T(test_role_idle_session_timeout_does_not_close_the_pool),
		T(test_a_table_taken_over_on_the_search_path_is_logged),
		T(test_role_planner_settings_do_not_make_statements_jit_compiled),
		T(test_role_lock_timeout_does_not_cut_a_key_wait_short),
		T(test_replica_role_does_not_turn_foreign_keys_off),
		T(test_typmod_keys_in_batches),
		T(test_shapes_do_not_run_out),
		T(test_statement_timeout_does_not_split_batches),
		T(test_starts_while_postgres_down),
		T(test_killed_backends_are_replaced_transparently),
		T(test_max_output_drops_client_that_never_reads),
		T(test_refuses_table_without_unique_index),
		T(test_unique_index_include_columns_are_not_key),
		T(test_refuses_index_with_another_collation),
		T(test_refuses_index_with_another_operator_class),
		T(test_refuses_key_with_deferrable_constraint),
		T(test_deferrable_constraint_added_is_seen),
		T(test_startup_check_bounded_when_postgres_never_answers),
		T(test_startup_connect_bounded_by_connect_timeout_ms),
		T(test_startup_catalog_read_bounded_by_connect_timeout),
		T(test_check_mode_accepts_good_config),
		T(test_check_mode_warns_about_missing_grants),
		T(test_check_mode_warns_about_unlogged_tables),
		T(test_failed_catalog_lookup_keeps_the_table),
		T(test_check_mode_refuses_unopenable_addresses),
	};
	/* GOCD_TEST_FILTER=test_error_* runs a subset while debugging. */
	const char *filter = getenv("GOCD_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	return cmocka_run_group_tests(tests, group_setup, harness_group_teardown);
}
