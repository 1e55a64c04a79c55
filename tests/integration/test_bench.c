/*
 * test_bench.c - goc-bench against a real gocd and PostgreSQL.
 *
 * Owns: tests that goc-bench's counts are true (created, ok, errors, what
 * --verify-db finds in the table), for each target, pipelined or not, and
 * that a key prefix needing JSON escapes reaches the table verbatim.  Every
 * later performance claim is measured with this tool, so what it counts
 * must be checked against the database, not against itself.
 * Must never: assert timings.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "harness.h"

#define T(fn) cmocka_unit_test_setup_teardown(fn, harness_test_setup, harness_test_teardown)

static int group_setup(void **state)
{
	(void)state;
	return tpg_start_with_schema(
		"CREATE TABLE bench_kv (id bigserial PRIMARY KEY, k text NOT NULL UNIQUE, v text);"
		/* the naive target's table: no unique index, as in the apps gocd replaces */
		"CREATE TABLE bench_naive (id bigserial PRIMARY KEY, k text NOT NULL, v text);");
}

/*
 * Run goc-bench with args (NULL-terminated) to completion, at most 60 s.
 * Returns its exit code (-1 on a signal) and its --json report in *report
 * (NULL if stdout held none).
 */
static int bench_run(json_t **report, const char *arg, ...)
{
	const char *argv[40];
	char bin[300], out[300], err[300];
	const char *b = getenv("GOCD_BUILD");
	snprintf(bin, sizeof bin, "%s/goc-bench", b && *b ? b : "build");
	snprintf(out, sizeof out, "%s/bench.out", harness_dir());
	snprintf(err, sizeof err, "%s/bench.err", harness_dir());
	size_t n = 0;
	argv[n++] = bin;
	va_list ap;
	va_start(ap, arg);
	for (const char *a = arg; a && n < 38; a = va_arg(ap, const char *))
		argv[n++] = a;
	va_end(ap);
	argv[n++] = "--json";
	argv[n] = NULL;

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fo < 0 || fe < 0)
			_exit(126);
		dup2(fo, 1);
		dup2(fe, 2);
		alarm(60);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	*report = json_load_file(out, 0, NULL);
	if (rc != 0 && rc != 1 && *report == NULL) {
		char cmd[400];
		snprintf(cmd, sizeof cmd, "cat %s >&2", err);
		if (system(cmd) != 0)
			print_error("(no stderr)\n");
	}
	return rc;
}

static long long num(const json_t *r, const char *path)
{
	char p[128];
	snprintf(p, sizeof p, "%s", path);
	const json_t *v = r;
	for (char *s = p, *dot; v && s; s = dot ? dot + 1 : NULL) {
		dot = strchr(s, '.');
		if (dot)
			*dot = '\0';
		v = json_object_get(v, s);
	}
	if (!json_is_integer(v))
		fail_msg("report has no integer %s", path);
	return json_integer_value(v);
}

static char addr[64];

static struct tgocd *gocd(void)
{
	struct tgocd *g = tgocd_start("--table=bench_kv=k", "--pool-size=2", NULL);
	assert_non_null(g);
	snprintf(addr, sizeof addr, "--addr=127.0.0.1:%d", g->port);
	return g;
}

static char verify_db[300];

static const char *verify_db_arg(void)
{
	snprintf(verify_db, sizeof verify_db, "--verify-db=%s", tpg_conninfo());
	return verify_db;
}

/* 16 connections racing on 5 keys: 5 created, the rest found, 5 rows. */
static void test_hot_keys_counted_and_verified(void **state)
{
	struct tgocd *g = gocd();
	json_t *r;
	assert_int_equal(bench_run(&r, addr, "--table=bench_kv", "--connections=16",
				   "--requests=4000", "--keys=hot:5", "--key-prefix=hot-",
				   "--defaults={\"v\":\"x\"}", verify_db_arg(), "--quiet", NULL), 0);
	assert_non_null(r);
	assert_int_equal(num(r, "ok"), 4000);
	assert_int_equal(num(r, "created"), 5);
	assert_int_equal(num(r, "found"), 3995);
	assert_int_equal(num(r, "errors_total"), 0);
	assert_int_equal(num(r, "verify.violations"), 0);
	assert_int_equal(num(r, "verify.keys"), 5);
	assert_int_equal(num(r, "verify_db.duplicate_keys"), 0);
	assert_int_equal(num(r, "verify_db.missing"), 0);
	json_decref(r);
	assert_int_equal(tpg_count("SELECT count(*) FROM bench_kv WHERE k LIKE 'hot-%%' AND v = 'x'"), 5);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* Eight requests in flight per connection, all new keys: each created once. */
static void test_pipelined_fresh_keys(void **state)
{
	struct tgocd *g = gocd();
	json_t *r;
	assert_int_equal(bench_run(&r, addr, "--table=bench_kv", "--connections=4",
				   "--pipeline=8", "--requests=5000", "--keys=fresh",
				   "--key-prefix=fresh-", verify_db_arg(), "--quiet", NULL), 0);
	assert_non_null(r);
	assert_int_equal(num(r, "ok"), 5000);
	assert_int_equal(num(r, "created"), 5000);
	assert_int_equal(num(r, "verify.violations"), 0);
	json_decref(r);
	/* fresh keys carry a run id after the prefix */
	assert_int_equal(tpg_count("SELECT count(*) FROM bench_kv WHERE k LIKE 'fresh-%%'"), 5000);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * goc-bench renders the request line once and splices each key's number
 * into it: a prefix with a quote, a backslash and a control byte must still
 * reach the table byte for byte (the control byte is also the template's
 * marker, so that run takes the render-every-line path).
 */
static void test_key_prefix_needing_escapes(void **state)
{
	struct tgocd *g = gocd();
	static const char *const prefixes[] = { "q\"\\-", "c\x01-" };
	for (int i = 0; i < 2; i++) {
		char arg[64];
		snprintf(arg, sizeof arg, "--key-prefix=%s", prefixes[i]);
		json_t *r;
		assert_int_equal(bench_run(&r, addr, "--table=bench_kv", "--connections=2",
					   "--requests=300", "--keys=uniform:7", arg, "--verify",
					   "--quiet", NULL), 0);
		assert_non_null(r);
		assert_int_equal(num(r, "ok"), 300);
		assert_int_equal(num(r, "verify.violations"), 0);
		long long created = num(r, "created");
		json_decref(r);
		assert_true(created >= 1 && created <= 7);
		assert_int_equal(tpg_count("SELECT count(*) FROM bench_kv WHERE left(k, 3) = "
					   "convert_from(decode('%s', 'hex'), 'UTF8')",
					   i == 0 ? "71225c" : "63012d"), created);
	}
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* Error answers are counted by code; a run with no success is a failed run (3). */
static void test_error_answers_counted(void **state)
{
	struct tgocd *g = gocd();
	json_t *r;
	assert_int_equal(bench_run(&r, addr, "--table=not_served", "--connections=3",
				   "--requests=90", "--quiet", NULL), 3);
	assert_non_null(r);
	assert_int_equal(num(r, "ok"), 0);
	assert_int_equal(num(r, "errors_total"), 90);
	assert_int_equal(num(r, "errors.unknown_table"), 90);
	json_decref(r);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* Nothing listening: exit 3 and no report. */
static void test_refused_connection_is_a_failed_run(void **state)
{
	char a[64];
	snprintf(a, sizeof a, "--addr=127.0.0.1:%d", harness_free_port());
	json_t *r;
	assert_int_equal(bench_run(&r, a, "--requests=10", "--connect-timeout=2", "--quiet", NULL), 3);
	json_decref(r);
	harness_pass();
}

/*
 * A target that accepts and never answers (a stopped gocd; here a socket
 * nobody reads): the run sent requests and got no answer at all.  That is
 * a failed run (3), not "completed and found nothing wrong" (0).
 */
static void test_no_answer_at_all_is_a_failed_run(void **state)
{
	int lport;
	int lfd = harness_listen_loopback(16, &lport); /* the backlog completes connects */
	assert_true(lfd >= 0);
	char a[64];
	snprintf(a, sizeof a, "--addr=127.0.0.1:%d", lport);
	json_t *r;
	int rc = bench_run(&r, a, "--connections=2", "--duration=1", "--drain-timeout=1", "--quiet",
			   NULL);
	close(lfd);
	assert_non_null(r);
	assert_int_equal(num(r, "ok"), 0);
	assert_true(num(r, "unanswered") > 0);
	json_decref(r);
	assert_int_equal(rc, 3);
	harness_pass();
}

/*
 * A gocd with auth_token: goc-bench --token authenticates each connection
 * first and then loads it; without the token every connection is refused
 * and the run fails (3).  goc-bench had no --token: a gocd with auth_token
 * could only be measured over its Unix socket.
 */
static void test_token_authenticates_each_connection(void **state)
{
	struct tgocd *g = tgocd_start("--table=bench_kv=k", "--pool-size=2", "--auth-token=s3cret",
				      NULL);
	assert_non_null(g);
	snprintf(addr, sizeof addr, "--addr=127.0.0.1:%d", g->port);
	json_t *r;
	int rc = bench_run(&r, addr, "--token=s3cret", "--connections=3", "--requests=300",
			   "--key-prefix=tok-", "--quiet", NULL);
	assert_non_null(r);
	if (rc != 0 || num(r, "ok") != 300)
		print_error("with --token: exit %d, ok %lld\n", rc, num(r, "ok"));
	assert_int_equal(rc, 0);
	assert_int_equal(num(r, "ok"), 300);
	assert_int_equal(num(r, "errors_total"), 0);
	json_decref(r);
	rc = bench_run(&r, addr, "--token=wrong", "--requests=10", "--connect-timeout=2", "--quiet",
		       NULL);
	json_decref(r);
	assert_int_equal(rc, 3);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * The baselines: direct (the careful SQL) never duplicates; naive
 * (SELECT then INSERT, no unique index) is caught duplicating by
 * --verify-db, with exit 1.  Races are likely, not certain, so naive gets
 * three tries.
 */
static void test_direct_clean_naive_caught(void **state)
{
	char pg[300];
	snprintf(pg, sizeof pg, "--postgres=%s", tpg_conninfo());
	json_t *r;
	assert_int_equal(bench_run(&r, "--target=direct", pg, "--table=bench_kv",
				   "--connections=16", "--requests=3000", "--keys=hot:3",
				   "--key-prefix=direct-", verify_db_arg(), "--quiet", NULL), 0);
	assert_non_null(r);
	assert_int_equal(num(r, "ok"), 3000);
	assert_int_equal(num(r, "created"), 3);
	assert_int_equal(num(r, "duplicates"), 0);
	json_decref(r);

	long long dups = 0;
	for (int i = 0; i < 3 && dups == 0; i++) {
		char prefix[64];
		snprintf(prefix, sizeof prefix, "--key-prefix=naive%d-", i);
		int rc = bench_run(&r, "--target=naive", pg, "--table=bench_naive",
				   "--connections=16", "--requests=3000", "--keys=hot:2", prefix,
				   verify_db_arg(), "--quiet", NULL);
		assert_non_null(r);
		dups = num(r, "duplicates");
		assert_int_equal(rc, dups > 0 ? 1 : 0);
		json_decref(r);
	}
	assert_true(dups > 0);
	harness_pass();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_hot_keys_counted_and_verified),
		T(test_pipelined_fresh_keys),
		T(test_key_prefix_needing_escapes),
		T(test_error_answers_counted),
		T(test_refused_connection_is_a_failed_run),
		T(test_no_answer_at_all_is_a_failed_run),
		T(test_token_authenticates_each_connection),
		T(test_direct_clean_naive_caught),
	};
	return cmocka_run_group_tests(tests, group_setup, harness_group_teardown);
}
