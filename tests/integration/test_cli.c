/*
 * test_cli.c - the goc command-line client against a real gocd and a real
 * PostgreSQL: what it prints, its exit statuses (0 ok, 1 an error answer,
 * 2 usage - nothing sent, 3 no connection), addresses, tokens, the Unix
 * socket and the stdin pass-through.
 *
 * Owns: these checks, the cli_* schema, and the goc processes it runs (each
 * waited for, or killed after a bounded time).
 * Must never: look inside goc or gocd (exit status, stdout, stderr, gocd's
 * stats and the table are the evidence), or connect beyond loopback.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

static const char SCHEMA[] =
	"CREATE TABLE cli_t(id bigserial primary key, k text not null unique, v text, n numeric);";

static struct tgocd *g;
static char unix_path[300];
static char tcp_addr[64];

struct run {
	int status;  /* exit status; -1 when it did not exit by itself */
	char *out;   /* stdout */
	char *err;   /* stderr */
};


static const char *goc_bin(void)
{
	static char bin[320];
	const char *b = getenv("GOCD_BUILD");
	snprintf(bin, sizeof bin, "%s/goc", b && *b ? b : "build");
	if (access(bin, X_OK) != 0) /* GOCD_BUILD=<dir of an old gocd>: this goc */
		snprintf(bin, sizeof bin, "build/goc");
	return bin;
}

/* Run goc with args (NULL-terminated) and stdin; env: "NAME=value" or NULL. */
static struct run goc_env(const char *in, const char *env, ...)
{
	const char *argv[32];
	int n = 0;
	argv[n++] = goc_bin();
	va_list ap;
	va_start(ap, env);
	const char *a;
	while ((a = va_arg(ap, const char *)) != NULL && n < 31)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;

	char pin[400], pout[400], perr[400];
	snprintf(pin, sizeof pin, "%s/goc-in", harness_dir());
	snprintf(pout, sizeof pout, "%s/goc-out", harness_dir());
	snprintf(perr, sizeof perr, "%s/goc-err", harness_dir());
	FILE *f = fopen(pin, "w");
	assert_non_null(f);
	fputs(in ? in : "", f);
	fclose(f);

	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int i = open(pin, O_RDONLY), o = open(pout, O_WRONLY | O_CREAT | O_TRUNC, 0644),
		    e = open(perr, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (i < 0 || o < 0 || e < 0)
			_exit(125);
		dup2(i, 0);
		dup2(o, 1);
		dup2(e, 2);
		unsetenv("GOC_ADDR");
		unsetenv("GOC_TOKEN");
		if (env)
			putenv((char *)env);
		signal(SIGPIPE, SIG_DFL);
		execv(argv[0], (char *const *)argv);
		_exit(126);
	}
	struct run r = {.status = -1};
	int st;
	for (int waited = 0; waited < 15000; waited += 10) {
		pid_t w = waitpid(pid, &st, WNOHANG);
		if (w == pid) {
			r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
			break;
		}
		harness_sleep_ms(10);
	}
	if (r.status == -1 && waitpid(pid, &st, WNOHANG) == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
	}
	r.out = harness_read_file(pout);
	r.err = harness_read_file(perr);
	return r;
}

#define goc(...) goc_env(NULL, NULL, __VA_ARGS__, (const char *)NULL)

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

static void expect(const struct run *r, int status, const char *in_out)
{
	if (r->status != status || (in_out && strstr(r->out, in_out) == NULL))
		fail_msg("goc exited %d (expected %d)\nstdout: %s\nstderr: %s\nexpected in stdout: %s",
			 r->status, status, r->out, r->err, in_out ? in_out : "-");
}

/* Requests gocd has counted so far (all ops). */
static long long requests_seen(void)
{
	char a[340];
	snprintf(a, sizeof a, "--unix=%s", unix_path);
	struct run r = goc(a, "stats");
	expect(&r, 0, "\"stats\"");
	long long sum = 0;
	const char *p = strstr(r.out, "\"requests\":{");
	assert_non_null(p);
	for (p = strchr(p, '{') + 1; *p && *p != '}'; p++)
		if (*p == ':')
			sum += strtoll(p + 1, NULL, 10);
	run_free(&r);
	return sum;
}

static int group_setup(void **state)
{
	(void)state;
	return tpg_start_with_schema(SCHEMA);
}

/* Each test gets its own gocd (the harness ends a test's gocds with it). */
static int cli_setup(void **state)
{
	harness_test_setup(state);
	snprintf(unix_path, sizeof unix_path, "%s/cli.sock", harness_dir());
	char u[340];
	snprintf(u, sizeof u, "--unix=%s", unix_path);
	g = tgocd_start("--table=cli_t=k", "--auth-token=cli-token", u, NULL);
	if (g == NULL)
		return -1;
	snprintf(tcp_addr, sizeof tcp_addr, "--addr=127.0.0.1:%d", g->port);
	return 0;
}

static int cli_teardown(void **state)
{
	if (g && tgocd_stop(g) != 0)
		fprintf(stderr, "test_cli: gocd did not stop cleanly\n");
	g = NULL;
	return harness_test_teardown(state);
}

static void test_commands_print_answers_and_exit_0(void **state)
{
	(void)state;
	char u[340];
	snprintf(u, sizeof u, "--unix=%s", unix_path);
	struct run r = goc(u, "ping");
	expect(&r, 0, NULL);
	assert_string_equal(r.out, "{\"ok\":true,\"pong\":true}\n");
	run_free(&r);

	r = goc(u, "get-or-create", "cli_t", "k=a", "--default", "v=first", "--id=7");
	expect(&r, 0, "\"created\":true");
	assert_non_null(strstr(r.out, "\"v\":\"first\""));
	assert_non_null(strstr(r.out, "\"id\":7"));
	run_free(&r);
	/* again: the same row, created:false, defaults unused */
	r = goc(u, "get_or_create", "cli_t", "k=a", "--defaults", "{\"v\":\"second\"}");
	expect(&r, 0, "\"created\":false");
	assert_non_null(strstr(r.out, "\"v\":\"first\""));
	run_free(&r);
	assert_int_equal(tpg_count("SELECT count(*) FROM cli_t WHERE k = 'a'"), 1);

	r = goc(u, "get", "cli_t", "k=nothing");
	expect(&r, 0, "\"row\":null");
	run_free(&r);

	/* JSON items: a wide numeric keeps every digit on the way back */
	r = goc(u, "get-or-create", "cli_t", "k=wide", "--default", "n=123456789012345678901234567890.5");
	expect(&r, 0, "123456789012345678901234567890.5");
	run_free(&r);
	r = goc(u, "--pretty", "get", "cli_t", "k:=\"wide\"");
	expect(&r, 0, "123456789012345678901234567890.5");
	assert_non_null(strstr(r.out, "\n  "));
	run_free(&r);
	harness_pass();
}

static void test_error_answers_exit_1(void **state)
{
	(void)state;
	char u[340];
	snprintf(u, sizeof u, "--unix=%s", unix_path);
	struct run r = goc(u, "get-or-create", "no_such_table", "k=a");
	expect(&r, 1, "\"unknown_table\"");
	run_free(&r);
	r = goc(u, "get-or-create", "cli_t", "k=b", "--default", "n=not-a-number");
	expect(&r, 1, "\"invalid_value\"");
	run_free(&r);
	assert_int_equal(tpg_count("SELECT count(*) FROM cli_t WHERE k = 'b'"), 0);
	/* TCP needs the token (gocd runs with auth_token) */
	r = goc(tcp_addr, "ping");
	expect(&r, 1, "\"unauthorized\"");
	run_free(&r);
	harness_pass();
}

static void test_usage_errors_exit_2_and_send_nothing(void **state)
{
	(void)state;
	char u[340];
	snprintf(u, sizeof u, "--unix=%s", unix_path);
	long long before = requests_seen();
	static const char *const bad_addr[] = {
		"--addr=127.0.0.1:83636", /* getaddrinfo would wrap it to 18100 */
		"--addr=127.0.0.1:65536", "--addr=127.0.0.1:0", "--addr=", "--addr=[::1]:99999",
		"--addr=127.0.0.1:7x", "--addr=127.0.0.1:", "--addr=[::1]:",
	};
	for (size_t i = 0; i < sizeof bad_addr / sizeof bad_addr[0]; i++) {
		struct run r = goc(bad_addr[i], "ping");
		if (r.status != 2 || r.err[0] == '\0')
			fail_msg("%s: exit %d, stderr: %s", bad_addr[i], r.status, r.err);
		run_free(&r);
	}
	struct run r = goc(u, "get-or-create", "cli_t", "k"); /* no = */
	expect(&r, 2, NULL);
	run_free(&r);
	r = goc(u, "frobnicate");
	expect(&r, 2, NULL);
	run_free(&r);
	r = goc(u, tcp_addr, "ping"); /* both */
	expect(&r, 2, NULL);
	run_free(&r);
	r = goc(u, "get-or-create", "cli_t", "k=x", "--default", "v=1", "--default", "v=2");
	expect(&r, 2, NULL);
	run_free(&r);
	r = goc(u, "--timeout=-1", "ping");
	expect(&r, 2, NULL);
	run_free(&r);
	/* nothing reached gocd: only requests_seen's own stats calls */
	assert_int_equal(requests_seen(), before + 1);
	assert_int_equal(tpg_count("SELECT count(*) FROM cli_t WHERE k = 'x'"), 0);
	harness_pass();
}

static void test_no_connection_exits_3(void **state)
{
	(void)state;
	char a[64];
	snprintf(a, sizeof a, "--addr=127.0.0.1:%d", harness_free_port()); /* nothing there */
	struct run r = goc(a, "ping");
	expect(&r, 3, NULL);
	assert_non_null(strstr(r.err, "cannot connect"));
	run_free(&r);
	char u[400];
	snprintf(u, sizeof u, "--unix=%s/no-such.sock", harness_dir());
	r = goc(u, "ping");
	expect(&r, 3, NULL);
	run_free(&r);
	harness_pass();
}

static void test_tokens(void **state)
{
	(void)state;
	struct run r = goc(tcp_addr, "--token=cli-token", "ping");
	expect(&r, 0, "\"pong\":true");
	run_free(&r);
	r = goc_env(NULL, "GOC_TOKEN=cli-token", tcp_addr, "ping", (const char *)NULL);
	expect(&r, 0, "\"pong\":true");
	run_free(&r);
	r = goc(tcp_addr, "--token=wrong", "ping");
	expect(&r, 1, NULL);
	assert_non_null(strstr(r.err, "authentication refused"));
	/* one line: not a second one about the close that follows */
	assert_null(strstr(r.err, "closed the connection"));
	run_free(&r);
	/* GOC_ADDR stands in for --addr, unix: included */
	char env[360];
	snprintf(env, sizeof env, "GOC_ADDR=unix:%s", unix_path);
	r = goc_env(NULL, env, "ping", (const char *)NULL);
	expect(&r, 0, "\"pong\":true");
	run_free(&r);
	/* a token on the Unix socket is accepted whatever it is */
	char u[340];
	snprintf(u, sizeof u, "--unix=%s", unix_path);
	r = goc(u, "--token=old-token", "ping");
	expect(&r, 0, "\"pong\":true");
	run_free(&r);
	harness_pass();
}

/* With a token, an answer to the auth that is not about the token
 * (overloaded: max_clients is full) is printed as it is, not reported as
 * "authentication refused". */
static void test_token_and_overloaded(void **state)
{
	(void)state;
	struct tgocd *full = tgocd_start("--table=cli_t=k", "--auth-token=cli-token", "--max-clients=1",
					 NULL);
	assert_non_null(full);
	/* take the one slot (the harness's own probe may hold it a moment) */
	struct tclient *hold = NULL;
	const char *auth = "{\"op\":\"auth\",\"token\":\"cli-token\"}\n";
	for (int i = 0; i < 50 && hold == NULL; i++) {
		const char *line;
		size_t len;
		hold = tclient_tcp(full->port);
		assert_non_null(hold);
		if (tclient_send(hold, auth, strlen(auth)) != 0 ||
		    tclient_line(hold, &line, &len, HARNESS_IO_TIMEOUT_MS) != 1 ||
		    strstr(line, "\"ok\":true") == NULL) {
			tclient_close(hold);
			hold = NULL;
			harness_sleep_ms(20);
		}
	}
	assert_non_null(hold);
	char a[64];
	snprintf(a, sizeof a, "--addr=127.0.0.1:%d", full->port);
	struct run r = goc(a, "--token=cli-token", "ping");
	expect(&r, 1, "\"overloaded\"");
	if (strstr(r.err, "authentication refused"))
		fail_msg("overloaded reported as a refused token: %s", r.err);
	run_free(&r);
	tclient_close(hold);
	assert_int_equal(tgocd_stop(full), 0);
	harness_pass();
}

/* No command: lines from stdin go as they are; one answer per request,
 * in order; an error among them makes the exit status 1. */
static void test_pass_through(void **state)
{
	(void)state;
	char u[340];
	snprintf(u, sizeof u, "--unix=%s", unix_path);
	struct run r = goc_env("{\"op\":\"ping\",\"id\":1}\n"
			       "\n"
			       "{\"op\":\"get_or_create\",\"id\":2,\"table\":\"cli_t\",\"key\":{\"k\":\"pt\"}}\n"
			       "{\"op\":\"get\",\"id\":3,\"table\":\"cli_t\",\"key\":{\"k\":\"pt\"}}",
			       NULL, u, (const char *)NULL);
	expect(&r, 0, NULL);
	const char *p1 = strstr(r.out, "\"id\":1"), *p2 = strstr(r.out, "\"id\":2"),
		   *p3 = strstr(r.out, "\"id\":3");
	if (!p1 || !p2 || !p3 || !(p1 < p2 && p2 < p3))
		fail_msg("pass-through answers out of order or missing:\n%s", r.out);
	int lines = 0;
	for (const char *p = r.out; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 3);
	run_free(&r);

	r = goc_env("{\"op\":\"ping\"}\nnot json\n{\"op\":\"ping\"}\n", NULL, u, "-", (const char *)NULL);
	expect(&r, 1, "\"bad_json\"");
	lines = 0;
	for (const char *p = r.out; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 3);
	run_free(&r);
	harness_pass();
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, cli_setup, cli_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_commands_print_answers_and_exit_0),
		T(test_error_answers_exit_1),
		T(test_usage_errors_exit_2_and_send_nothing),
		T(test_no_connection_exits_3),
		T(test_tokens),
		T(test_token_and_overloaded),
		T(test_pass_through),
	};
	return cmocka_run_group_tests_name("cli", tests, group_setup, harness_group_teardown);
}
