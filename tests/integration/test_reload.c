/*
 * test_reload.c - SIGHUP re-reads the configuration without dropping clients.
 *
 * Owns: tests of reload: tables added and removed, a bad file keeping the
 * running configuration, a table without a unique index refused on reload,
 * connections opened before the reload still served after it, a token
 * rotated through auth_token_file, a lowered request_timeout applying
 * to requests in flight and to PostgreSQL sessions' statement_timeout, a
 * new connect_timeout applying to the pool's next connection attempts, a
 * raised max_client_memory resuming reading at once, and a raised
 * max_clients raising the open files limit as a start does.
 * Must never: depend on timing beyond bounded polling.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <cmocka.h>

#include "codec.h"
#include "harness.h"

static char conf_path[512];

static int group_setup(void **state)
{
	(void)state;
	return tpg_start_with_schema("CREATE TABLE rl_a (id bigserial PRIMARY KEY, k text NOT NULL UNIQUE);"
		     "CREATE TABLE rl_b (id bigserial PRIMARY KEY, k text NOT NULL UNIQUE);"
		     "CREATE TABLE rl_noindex (id bigserial PRIMARY KEY, k text NOT NULL);"
		     "CREATE TABLE rl_noindex2 (id bigserial PRIMARY KEY, k text NOT NULL);");
}

static void write_conf(const char *text)
{
	snprintf(conf_path, sizeof conf_path, "%s/reload.conf", harness_dir());
	FILE *f = fopen(conf_path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* One request; returns the error code (GOC_OK when ok). */
static enum goc_err code_of(struct tclient *c, const char *table, const char *k)
{
	char req[256];
	struct goc_response r;
	snprintf(req, sizeof req,
		 "{\"op\":\"get_or_create\",\"table\":\"%s\",\"key\":{\"k\":\"%s\"}}", table, k);
	assert_int_equal(tclient_call(c, req, &r), 0);
	enum goc_err code = r.ok ? GOC_OK : r.code;
	codec_response_free(&r);
	return code;
}

/* gocd on conf_path, a client that has had one answer from rl_a, and a
 * session holding rl_a locked: rl_a's requests wait until it closes. */
static struct tgocd *start_with_rl_a_locked(struct tclient **c, struct tpg_session **s)
{
	struct tgocd *g = tgocd_start("-c", conf_path, NULL);
	assert_non_null(g);
	*c = tclient_tcp(g->port);
	assert_non_null(*c);
	assert_int_equal(code_of(*c, "rl_a", "warm"), GOC_OK);
	*s = tpg_session_open();
	assert_non_null(*s);
	assert_int_equal(tpg_session_exec(*s, "BEGIN; LOCK TABLE rl_a IN ACCESS EXCLUSIVE MODE"), 0);
	return g;
}

/* Poll (new connection each time) until table answers want, at most 10 s. */
static void wait_for(struct tgocd *g, const char *table, enum goc_err want)
{
	for (int i = 0; i < 200; i++) {
		struct tclient *c = tclient_tcp(g->port);
		assert_non_null(c);
		enum goc_err got = code_of(c, table, "poll");
		tclient_close(c);
		if (got == want)
			return;
		harness_sleep_ms(50);
	}
	tgocd_print_log(g);
	fail_msg("table %s never answered %s after the reload", table, goc_err_name(want));
}

/* Poll table on c until it answers unavailable with text in the message,
 * at most 10 s: unknown_table until the reload has been handled, then
 * unavailable only. */
static void wait_unavailable_saying(struct tclient *c, const char *table, const char *text)
{
	char req[200];
	snprintf(req, sizeof req, "{\"op\":\"get_or_create\",\"table\":\"%s\",\"key\":{\"k\":\"q\"}}",
		 table);
	bool told = false;
	for (int i = 0; i < 200 && !told; i++) {
		struct goc_response r;
		assert_int_equal(tclient_call(c, req, &r), 0);
		assert_false(r.ok);
		if (r.code != GOC_E_UNKNOWN_TABLE) {
			assert_int_equal(r.code, GOC_E_UNAVAILABLE);
			told = strstr(r.message, text) != NULL;
		}
		codec_response_free(&r);
		if (!told)
			harness_sleep_ms(50);
	}
	if (!told)
		print_error("%s never said \"%s\": %s\n", table, text, tclient_last(c));
	assert_true(told);
}

static void test_reload_adds_and_removes_tables_keeping_clients(void **state)
{
	(void)state;
	write_conf("table = rl_a=k\nrequest_timeout = 5000\n");
	struct tgocd *g = tgocd_start("-c", conf_path, NULL);
	assert_non_null(g);
	struct tclient *old = tclient_tcp(g->port);
	assert_non_null(old);
	assert_int_equal(code_of(old, "rl_a", "x"), GOC_OK);
	assert_int_equal(code_of(old, "rl_b", "x"), GOC_E_UNKNOWN_TABLE);

	write_conf("table = rl_b=k\n");
	tgocd_signal(g, SIGHUP);
	wait_for(g, "rl_b", GOC_OK);
	/* the connection opened before the reload is still served */
	assert_int_equal(code_of(old, "rl_b", "y"), GOC_OK);
	assert_int_equal(code_of(old, "rl_a", "y"), GOC_E_UNKNOWN_TABLE);
	assert_int_equal(tpg_count("SELECT count(*) FROM rl_b WHERE k = 'y'"), 1);

	/* a file that does not parse changes nothing */
	write_conf("table = rl_a=k\nthis is not an option\n");
	tgocd_signal(g, SIGHUP);
	harness_sleep_ms(300);
	assert_int_equal(code_of(old, "rl_b", "z"), GOC_OK);
	assert_int_equal(code_of(old, "rl_a", "z"), GOC_E_UNKNOWN_TABLE);
	char *log = tgocd_log(g);
	assert_non_null(strstr(log, "reload failed, keeping the running configuration"));
	free(log);

	/* a new table without a unique index on the key is refused, loudly,
	 * while the others keep working */
	write_conf("table = rl_b=k\ntable = rl_noindex=k\n");
	tgocd_signal(g, SIGHUP);
	wait_unavailable_saying(old, "rl_noindex", "CREATE UNIQUE INDEX");
	assert_int_equal(code_of(old, "rl_b", "w"), GOC_OK);
	assert_int_equal(tpg_count("SELECT count(*) FROM rl_noindex"), 0);

	/* fixing the schema brings the table in without another reload */
	assert_int_equal(tpg_exec("CREATE UNIQUE INDEX ON rl_noindex (k)"), 0);
	wait_for(g, "rl_noindex", GOC_OK);

	/* a table served again (it takes its old struct back) is checked
	 * again: a column added while it was not served can be given */
	assert_int_equal(tpg_exec("ALTER TABLE rl_a ADD COLUMN note text"), 0);
	for (int round = 0; round < 2; round++) {
		write_conf("table = rl_b=k\ntable = rl_a=k\n");
		tgocd_signal(g, SIGHUP);
		wait_for(g, "rl_a", GOC_OK);
		struct goc_response r;
		char req[160];
		snprintf(req, sizeof req, "{\"op\":\"get_or_create\",\"table\":\"rl_a\",\"key\":{\"k\":"
			 "\"again%d\"},\"defaults\":{\"note\":\"n\"}}", round);
		assert_int_equal(tclient_call(old, req, &r), 0);
		if (!r.ok)
			print_error("rl_a served again: %s\n", tclient_last(old));
		assert_true(r.ok && r.created);
		codec_response_free(&r);
		write_conf("table = rl_b=k\n");
		tgocd_signal(g, SIGHUP);
		wait_for(g, "rl_a", GOC_E_UNKNOWN_TABLE);
	}

	/* a name the catalog lookup itself fails on (to_regclass raises for
	 * too many dots): clients are told why, not "not checked yet" */
	write_conf("table = rl_b=k\ntable = a.b.c.d=k\n");
	tgocd_signal(g, SIGHUP);
	wait_unavailable_saying(old, "a.b.c.d", "catalog lookup failed");

	tclient_close(old);
	assert_int_equal(tgocd_stop(g), 0);
}

/* Authenticate on a new TCP connection; the auth answer's error code. */
static enum goc_err auth_code(struct tgocd *g, const char *token)
{
	struct tclient *c = tclient_tcp(g->port);
	assert_non_null(c);
	enum goc_err code = tclient_auth(c, token);
	assert_true(code != GOC_E__COUNT);
	tclient_close(c);
	return code;
}

/*
 * auth_token_file is read at start and again on SIGHUP: rewriting the file
 * and reloading rotates the token; connections authenticated before keep
 * being served; a file gone missing fails the reload and keeps the token.
 */
static void test_reload_rotates_auth_token_file(void **state)
{
	(void)state;
	char token_path[512], conf[1024];
	snprintf(token_path, sizeof token_path, "%s/reload.token", harness_dir());
	FILE *f = fopen(token_path, "w");
	assert_non_null(f);
	fputs("first-token\n", f);
	fclose(f);
	snprintf(conf, sizeof conf, "table = rl_a=k\nauth_token_file = %s\n", token_path);
	write_conf(conf);
	struct tgocd *g = tgocd_start("-c", conf_path, NULL);
	assert_non_null(g);

	assert_int_equal(auth_code(g, "first-token"), GOC_OK);
	assert_int_equal(auth_code(g, "first-token\\n"), GOC_E_UNAUTHORIZED);
	struct tclient *old = tclient_tcp(g->port);
	assert_non_null(old);
	assert_int_equal(tclient_auth(old, "first-token"), GOC_OK);
	assert_int_equal(code_of(old, "rl_a", "tok1"), GOC_OK);

	f = fopen(token_path, "w");
	assert_non_null(f);
	fputs("second-token\n", f);
	fclose(f);
	tgocd_signal(g, SIGHUP);
	bool rotated = false;
	for (int i = 0; i < 200 && !rotated; i++) {
		rotated = auth_code(g, "second-token") == GOC_OK;
		if (!rotated)
			harness_sleep_ms(50);
	}
	assert_true(rotated);
	assert_int_equal(auth_code(g, "first-token"), GOC_E_UNAUTHORIZED);
	assert_int_equal(code_of(old, "rl_a", "tok2"), GOC_OK);

	/* the file gone: the reload fails, the running token stays */
	assert_int_equal(unlink(token_path), 0);
	tgocd_signal(g, SIGHUP);
	char *log = tgocd_wait_log(g, "auth_token_file: cannot open", 10000);
	assert_non_null(strstr(log, "reload failed, keeping the running configuration"));
	assert_null(strstr(log, "second-token"));
	free(log);
	assert_int_equal(auth_code(g, "second-token"), GOC_OK);

	/* a FIFO nobody writes to: the reload fails at once, and gocd goes on
	 * serving (opening it used to block the loop until a writer came) */
	assert_int_equal(mkfifo(token_path, 0600), 0);
	tgocd_signal(g, SIGHUP);
	log = tgocd_wait_log(g, "is not a regular file", 5000);
	if (!strstr(log, "is not a regular file"))
		print_error("a FIFO as auth_token_file: %s\n", log);
	assert_non_null(strstr(log, "is not a regular file"));
	free(log);
	assert_int_equal(auth_code(g, "second-token"), GOC_OK);
	assert_int_equal(unlink(token_path), 0);

	tclient_close(old);
	assert_int_equal(tgocd_stop(g), 0);
}

/*
 * A reload that lowers request_timeout applies to requests in flight too,
 * and to one that arrived before the reload behind one that arrives after
 * (the timeout list is in arrival order): both get 'timeout' on the new
 * timeout, not the old 60 s one.
 */
static void test_reload_lowers_request_timeout_in_flight(void **state)
{
	(void)state;
	write_conf("table = rl_a=k\nrequest_timeout = 60000\n");
	struct tclient *c;
	struct tpg_session *s;
	struct tgocd *g = start_with_rl_a_locked(&c, &s);
	assert_int_equal(tclient_sendf(c, "{\"op\":\"get_or_create\",\"id\":1,\"table\":\"rl_a\","
					  "\"key\":{\"k\":\"stuck-old\"}}\n"), 0);
	harness_sleep_ms(200);
	write_conf("table = rl_a=k\nrequest_timeout = 1000\n");
	tgocd_signal(g, SIGHUP);
	harness_sleep_ms(200);
	assert_int_equal(tclient_sendf(c, "{\"op\":\"get_or_create\",\"id\":2,\"table\":\"rl_a\","
					  "\"key\":{\"k\":\"stuck-new\"}}\n"), 0);
	/* well within the old 60 s: the answers come about 1 s after each */
	for (int i = 1; i <= 2; i++) {
		struct goc_response r;
		assert_int_equal(tclient_recv(c, &r, 15000), 0);
		if (r.code != GOC_E_TIMEOUT)
			print_error("answer %d: %s\n", i, tclient_last(c));
		assert_int_equal(json_integer_value(r.id), i);
		assert_int_equal(r.code, GOC_E_TIMEOUT);
		codec_response_free(&r);
	}
	tpg_session_close(s);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * A reload that lowers max_pending below what a client has pending, then
 * the client's end of input after a last line without its LF: that line
 * was held back by the new limit, and the connection went to draining
 * without it - four answers, then the close, and the ping never answered.
 */
static void test_reload_lowering_max_pending_keeps_the_last_line(void **state)
{
	(void)state;
	write_conf("table = rl_a=k\nrequest_timeout = 20000\nmax_pending = 64\n");
	struct tclient *c;
	struct tpg_session *s;
	struct tgocd *g = start_with_rl_a_locked(&c, &s);
	for (int i = 1; i <= 4; i++)
		assert_int_equal(tclient_sendf(c, "{\"op\":\"get_or_create\",\"id\":%d,\"table\":\"rl_a\","
						  "\"key\":{\"k\":\"held-%d\"}}\n", i, i), 0);
	assert_int_equal(tclient_sendf(c, "{\"op\":\"ping\",\"id\":5}"), 0); /* no LF */
	harness_sleep_ms(300);
	write_conf("table = rl_a=k\nrequest_timeout = 20000\nmax_pending = 2\n");
	tgocd_signal(g, SIGHUP);
	free(tgocd_wait_log(g, "configuration reloaded", 10000));
	assert_int_equal(shutdown(tclient_fd(c), SHUT_WR), 0);
	harness_sleep_ms(300); /* gocd has read the end of input */
	tpg_session_close(s);
	for (int i = 1; i <= 5; i++) {
		struct goc_response r;
		if (tclient_recv(c, &r, 15000) != 0) {
			tgocd_print_log(g);
			fail_msg("answer %d of 5 never came", i);
		}
		assert_true(r.ok);
		assert_int_equal(json_integer_value(r.id), i);
		codec_response_free(&r);
	}
	assert_int_equal(tclient_expect_eof(c, 5000), 0);
	tclient_close(c);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

#define RL_MEM_LINES 100
#define RL_MEM_PAD 20000

/*
 * max_client_memory is live.  Raised by a reload while gocd reads from no
 * client for it, reading resumes at once: a bystander's ping is answered
 * while the requests that took the memory still wait on a lock, and those
 * are all answered, in order, once it goes.
 */
static void test_reload_raising_max_client_memory_resumes_reading(void **state)
{
	(void)state;
	write_conf("table = rl_a=k\nrequest_timeout = 60000\nmax_line = 1048576\n"
		   "max_client_memory = 1048576\n");
	struct tclient *c;
	struct tpg_session *s;
	struct tgocd *g = start_with_rl_a_locked(&c, &s);
	/* 2 MB of requests, padded with JSON whitespace: counted by their lines */
	size_t len = 0, cap = (size_t)RL_MEM_LINES * (RL_MEM_PAD + 128);
	char *data = malloc(cap);
	assert_non_null(data);
	for (int i = 0; i < RL_MEM_LINES; i++) {
		len += (size_t)snprintf(data + len, cap - len, "{\"op\":\"get_or_create\",\"id\":%d,"
					"\"table\":\"rl_a\",\"key\":{\"k\":\"mem-%d\"}", i, i);
		memset(data + len, ' ', RL_MEM_PAD);
		len += RL_MEM_PAD;
		len += (size_t)snprintf(data + len, cap - len, "}\n");
	}
	size_t off = 0;
	for (int i = 0; i < 100 && off < len; i++) {
		ssize_t n = send(tclient_fd(c), data + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0)
			off += (size_t)n;
		else
			harness_sleep_ms(20);
	}
	char *log = tgocd_wait_log(g, "reading from clients paused", 10000);
	bool paused = strstr(log, "reading from clients paused") != NULL;
	free(log);
	assert_true(paused);
	struct tclient *by = tclient_tcp(g->port);
	assert_non_null(by);
	assert_int_equal(tclient_sendf(by, "{\"op\":\"ping\"}\n"), 0);
	const char *line;
	size_t ll;
	assert_int_equal(tclient_line(by, &line, &ll, 500), -1); /* not read: over the budget */

	write_conf("table = rl_a=k\nrequest_timeout = 60000\nmax_line = 1048576\n"
		   "max_client_memory = 268435456\n");
	tgocd_signal(g, SIGHUP);
	struct goc_response r;
	if (tclient_recv(by, &r, 10000) != 0) {
		tgocd_print_log(g);
		fail_msg("the ping was not answered after max_client_memory was raised");
	}
	assert_true(r.ok);
	codec_response_free(&r);

	assert_int_equal(tpg_session_exec(s, "COMMIT"), 0);
	tpg_session_close(s);
	char **lines;
	size_t got = tclient_exchange(c, data + off, len - off, RL_MEM_LINES, &lines, 30000);
	assert_int_equal(got, RL_MEM_LINES);
	for (int i = 0; i < RL_MEM_LINES; i++) {
		struct goc_response a;
		assert_int_equal(codec_parse_response(lines[i], strlen(lines[i]), &a), 0);
		if (!a.ok || json_integer_value(a.id) != i)
			print_error("answer %d: %.200s\n", i, lines[i]);
		assert_true(a.ok);
		assert_int_equal(json_integer_value(a.id), i);
		codec_response_free(&a);
	}
	harness_free_lines(lines, got);
	free(data);
	tclient_close(by);
	tclient_close(c);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * statement_timeout follows request_timeout on reload.  Before, sessions
 * kept the value they were opened with: a statement blocked by someone
 * else's row lock held the only connection for the old 60 s, long after
 * its client had its timeout, and everything behind it timed out too.
 */
static void test_reload_renews_statement_timeout(void **state)
{
	(void)state;
	write_conf("table = rl_b=k\nrequest_timeout = 60000\npool_size = 1\n");
	struct tgocd *g = tgocd_start("-c", conf_path, NULL);
	assert_non_null(g);
	struct tclient *c = tclient_tcp(g->port);
	assert_non_null(c);
	assert_int_equal(code_of(c, "rl_b", "warm"), GOC_OK);
	write_conf("table = rl_b=k\nrequest_timeout = 1000\npool_size = 1\n");
	tgocd_signal(g, SIGHUP);
	harness_sleep_ms(300);
	struct tpg_session *s = tpg_session_open();
	assert_non_null(s);
	assert_int_equal(tpg_session_exec(s, "BEGIN; INSERT INTO rl_b(k) VALUES ('held')"), 0);
	/* its INSERT waits for s's transaction: cancelled after 1 s now */
	assert_int_equal(code_of(c, "rl_b", "held"), GOC_E_TIMEOUT);
	int ok = 0;
	for (int i = 0; i < 3; i++) {
		char k[24];
		snprintf(k, sizeof k, "free-%d", i);
		ok += code_of(c, "rl_b", k) == GOC_OK;
	}
	tpg_session_close(s);
	if (ok != 3)
		tgocd_print_log(g);
	assert_int_equal(ok, 3);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * A reload that turns auth_token on, while a connection opened without
 * one has a request waiting: the unauthenticated-client deadline sent
 * that connection an unsolicited "unauthorized" ahead of the answer it
 * was owed (a client matching by order took it for that request's
 * answer: "nothing written", for a call that created its row).  A
 * connection with answers owed is left alone; its answer comes first.
 * And an auth sent while auth was off (answered ok, any token) does not
 * count once it is on.
 */
static void test_reload_turning_auth_on_keeps_owed_answers(void **state)
{
	(void)state;
	/* client_idle_timeout 1 s: the time to authenticate is 1 s too */
	write_conf("table = rl_a=k\nrequest_timeout = 10000\nclient_idle_timeout = 1000\n");
	struct tgocd *g = tgocd_start("-c", conf_path, NULL);
	assert_non_null(g);
	struct tclient *c = tclient_tcp(g->port);
	assert_non_null(c);
	assert_int_equal(code_of(c, "rl_a", "auth-warm"), GOC_OK);
	struct tpg_session *s = tpg_session_open();
	assert_non_null(s);
	assert_int_equal(tpg_session_exec(s, "BEGIN; LOCK TABLE rl_a IN ACCESS EXCLUSIVE MODE"), 0);
	/* b sends an auth while auth is off (any token is fine then) */
	struct tclient *b = tclient_tcp(g->port);
	assert_non_null(b);
	assert_int_equal(tclient_auth(b, "whatever"), GOC_OK);
	struct goc_response br;
	assert_int_equal(tclient_sendf(c, "{\"op\":\"get_or_create\",\"id\":1,\"table\":\"rl_a\","
					  "\"key\":{\"k\":\"owed\"}}\n"), 0);
	harness_sleep_ms(200);
	write_conf("table = rl_a=k\nrequest_timeout = 10000\nclient_idle_timeout = 1000\n"
		   "auth_token = now-on\n");
	tgocd_signal(g, SIGHUP);
	harness_sleep_ms(200);
	/* b's auth of before does not let it in now */
	assert_int_equal(tclient_call(b, "{\"op\":\"ping\"}", &br), 0);
	if (br.ok || br.code != GOC_E_UNAUTHORIZED)
		print_error("an auth sent while auth was off, after turning it on: %s\n", tclient_last(b));
	assert_int_equal(br.code, GOC_E_UNAUTHORIZED);
	codec_response_free(&br);
	harness_sleep_ms(2300); /* past the janitor's checks */
	assert_int_equal(tpg_session_exec(s, "COMMIT"), 0);
	tpg_session_close(s);
	struct goc_response r;
	assert_int_equal(tclient_recv(c, &r, 5000), 0);
	if (!r.ok)
		print_error("first line after turning auth on: %s\n", tclient_last(c));
	assert_true(r.ok);
	assert_int_equal(json_integer_value(r.id), 1);
	assert_true(r.created);
	codec_response_free(&r);

	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* In a child: after delay_ms, SIGHUP every gocd that is a child of parent
 * (the harness forks and execs it; under valgrind it is "memcheck-...").
 * Its kill timer and PostgreSQL are left alone. */
static pid_t hup_children_later(pid_t parent, int delay_ms)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid > 0)
		return pid;
	harness_sleep_ms(delay_ms);
	pid_t kids[64];
	int n = harness_children(parent, kids, 64);
	for (int i = 0; i < n; i++) {
		char path[64], comm[64] = "";
		snprintf(path, sizeof path, "/proc/%d/comm", (int)kids[i]);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue;
		if (fgets(comm, sizeof comm, f) == NULL)
			comm[0] = '\0';
		fclose(f);
		if (strncmp(comm, "gocd", 4) == 0 || strncmp(comm, "memcheck", 8) == 0)
			kill(kids[i], SIGHUP);
	}
	_exit(0);
}

/*
 * SIGHUP while gocd is still checking its tables at start (here
 * PostgreSQL's address accepts connections and never answers, so the
 * check takes connect_timeout): it used to kill gocd (the default action,
 * before the loop handles signals).  Now the reload runs once gocd is up.
 */
static void test_hup_during_startup_check_reloads_after(void **state)
{
	(void)state;
	int lport;
	int lfd = harness_listen_loopback(16, &lport);
	assert_true(lfd >= 0);
	char pg[160];
	snprintf(pg, sizeof pg, "--postgres=host=127.0.0.1 port=%d user=postgres dbname=postgres",
		 lport);
	write_conf("table = rl_a=k\n");
	pid_t hupper = hup_children_later(getpid(), 500);
	struct tgocd *g = tgocd_start("-c", conf_path, pg, "--connect-timeout=1500", NULL);
	int st;
	waitpid(hupper, &st, 0);
	close(lfd);
	assert_non_null(g);
	char *log = tgocd_log(g);
	if (!strstr(log, "SIGHUP arrived while starting"))
		print_error("no reload after the early SIGHUP:\n%s\n", log);
	assert_non_null(strstr(log, "SIGHUP arrived while starting"));
	free(log);
	assert_true(tgocd_alive(g));
	assert_int_equal(tgocd_stop(g), 0);
}

/*
 * connect_timeout is a timeout like the others: a reload applies it to the
 * pool's next connection attempts.  The pool used to keep the value it
 * was started with, and said nothing.  PostgreSQL's address here accepts
 * connections and never answers, so every attempt ends at connect_timeout
 * and logs it.
 */
static void test_reload_applies_connect_timeout(void **state)
{
	(void)state;
	int lport;
	int lfd = harness_listen_loopback(64, &lport);
	assert_true(lfd >= 0);
	char pg[160];
	snprintf(pg, sizeof pg, "--postgres=host=127.0.0.1 port=%d user=postgres dbname=postgres",
		 lport);
	write_conf("table = rl_a=k\nlog_level = debug\nconnect_timeout = 200\n");
	struct tgocd *g = tgocd_start("-c", conf_path, pg, NULL);
	assert_non_null(g);
	write_conf("table = rl_a=k\nlog_level = debug\nconnect_timeout = 1700\n");
	tgocd_signal(g, SIGHUP);
	/* attempts under way keep 200 ms; the next ones (backoff <= 1 s) get
	 * 1700 ms */
	char *log = tgocd_wait_log(g, "within connect_timeout (1700 ms)", 8000);
	bool applied = strstr(log, "within connect_timeout (1700 ms)") != NULL;
	free(log);
	close(lfd);
	if (!applied)
		tgocd_print_log(g);
	assert_true(applied);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * A table refused on reload is logged once with its reason, not again at
 * every re-check of the catalog (every 5 s): an error line every 5 s for
 * as long as the schema is not fixed buried everything else in the log.
 */
static void test_refused_table_logged_once_not_every_recheck(void **state)
{
	(void)state;
	write_conf("table = rl_b=k\n");
	struct tgocd *g = tgocd_start("-c", conf_path, NULL);
	assert_non_null(g);
	struct tclient *c = tclient_tcp(g->port);
	assert_non_null(c);
	write_conf("table = rl_b=k\ntable = rl_noindex2=k\n");
	tgocd_signal(g, SIGHUP);
	wait_unavailable_saying(c, "rl_noindex2", "CREATE UNIQUE INDEX");
	harness_sleep_ms(11000); /* two re-checks */
	char *log = tgocd_log(g);
	int n = 0;
	for (const char *p = log; (p = strstr(p, "error table \"rl_noindex2\" has no unique")) != NULL; p++)
		n++;
	if (n != 1)
		print_error("the refusal was logged %d times:\n%s\n", n, log);
	free(log);
	assert_int_equal(n, 1);
	/* but a reload logs it again: what an operator who fixed the wrong
	 * thing looks for */
	tgocd_signal(g, SIGHUP);
	log = tgocd_wait_log(g, "configuration reloaded", 5000);
	free(log);
	harness_sleep_ms(1000);
	log = tgocd_log(g);
	n = 0;
	for (const char *p = log; (p = strstr(p, "error table \"rl_noindex2\" has no unique")) != NULL; p++)
		n++;
	if (n != 2)
		print_error("after a reload, the refusal was logged %d times in all:\n%s\n", n, log);
	free(log);
	assert_int_equal(n, 2);
	tclient_close(c);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * At start gocd raises its open files limit to max_clients + pool + 64 (as
 * far as the hard limit goes) and warns when it cannot.  A reload that
 * raised max_clients did neither: clients past the old limit then failed
 * accept with EMFILE, though the reload had said nothing.
 */
static void test_reload_raising_max_clients_raises_fd_limit(void **state)
{
	(void)state;
	struct rlimit own;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &own), 0);
	if (own.rlim_max != RLIM_INFINITY && own.rlim_max < 4096) {
		print_message("hard open files limit %llu < 4096: skipped\n",
			      (unsigned long long)own.rlim_max);
		skip();
	}
	write_conf("table = rl_a=k\nmax_clients = 100\n");
	struct tgocd *g = tgocd_start("-c", conf_path, NULL);
	assert_non_null(g);
	/* a soft limit well under what the new max_clients needs */
	struct rlimit rl;
	assert_int_equal(prlimit(g->pid, RLIMIT_NOFILE, NULL, &rl), 0);
	rl.rlim_cur = 512;
	assert_int_equal(prlimit(g->pid, RLIMIT_NOFILE, &rl, NULL), 0);
	write_conf("table = rl_a=k\nmax_clients = 3000\n");
	tgocd_signal(g, SIGHUP);
	free(tgocd_wait_log(g, "configuration reloaded", 10000));
	assert_int_equal(prlimit(g->pid, RLIMIT_NOFILE, NULL, &rl), 0);
	if (rl.rlim_cur < 3000 + 4 + 64)
		fail_msg("after raising max_clients to 3000 the open files limit is %llu",
			 (unsigned long long)rl.rlim_cur);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reload_adds_and_removes_tables_keeping_clients,
						harness_test_setup, harness_test_teardown),
		cmocka_unit_test_setup_teardown(test_reload_rotates_auth_token_file,
						harness_test_setup, harness_test_teardown),
		cmocka_unit_test_setup_teardown(test_reload_lowers_request_timeout_in_flight,
						harness_test_setup, harness_test_teardown),
		cmocka_unit_test_setup_teardown(test_reload_lowering_max_pending_keeps_the_last_line,
						harness_test_setup, harness_test_teardown),
		cmocka_unit_test_setup_teardown(test_reload_raising_max_client_memory_resumes_reading,
						harness_test_setup, harness_test_teardown),
		cmocka_unit_test_setup_teardown(test_reload_renews_statement_timeout,
						harness_test_setup, harness_test_teardown),
		cmocka_unit_test_setup_teardown(test_reload_turning_auth_on_keeps_owed_answers,
						harness_test_setup, harness_test_teardown),
		cmocka_unit_test_setup_teardown(test_hup_during_startup_check_reloads_after,
						harness_test_setup, harness_test_teardown),
		cmocka_unit_test_setup_teardown(test_reload_applies_connect_timeout,
						harness_test_setup, harness_test_teardown),
		cmocka_unit_test_setup_teardown(test_refused_table_logged_once_not_every_recheck,
						harness_test_setup, harness_test_teardown),
		cmocka_unit_test_setup_teardown(test_reload_raising_max_clients_raises_fd_limit,
						harness_test_setup, harness_test_teardown),
	};
	return cmocka_run_group_tests_name("reload", tests, group_setup, harness_group_teardown);
}
