/*
 * test_socket_activation.c - gocd adopts listening sockets handed over the
 * systemd way (LISTEN_PID, LISTEN_FDS, fds from 3).
 *
 * Owns: starting gocd with a pre-bound socket as fd 3 and checking it
 * serves on it and exits 0 on SIGTERM.  Must never: bind the port in gocd
 * (its --listen is empty, so only the handed socket can answer).
 */
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "codec.h"
#include "harness.h"

static int group_setup(void **state)
{
	(void)state;
	return tpg_start_with_schema("CREATE TABLE sa (id bigserial PRIMARY KEY, k text NOT NULL UNIQUE)");
}

static void test_adopts_socket_from_systemd(void **state)
{
	(void)state;
	int s = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s >= 0);
	int one = 1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof sin), 0);
	socklen_t sl = sizeof sin;
	assert_int_equal(getsockname(s, (struct sockaddr *)&sin, &sl), 0);
	assert_int_equal(listen(s, 16), 0);
	int port = ntohs(sin.sin_port);

	const char *b = getenv("GOCD_BUILD");
	char bin[512], pg[512], log[600];
	snprintf(bin, sizeof bin, "%s/gocd", b && *b ? b : "build");
	snprintf(pg, sizeof pg, "--postgres=%s", tpg_conninfo());
	snprintf(log, sizeof log, "%s/sa.log", harness_dir());
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char p[32];
		if (dup2(s, 3) < 0)
			_exit(120);
		if (s != 3)
			close(s);
		snprintf(p, sizeof p, "%d", (int)getpid());
		setenv("LISTEN_PID", p, 1);
		setenv("LISTEN_FDS", "1", 1);
		FILE *f = freopen(log, "w", stderr);
		(void)f;
		execl(bin, bin, "--listen=", "--admin-listen=", pg, "--table=sa=k", (char *)NULL);
		_exit(121);
	}
	close(s);

	struct tclient *c = NULL;
	for (int i = 0; i < 100 && c == NULL; i++) {
		c = tclient_tcp(port);
		if (c == NULL)
			harness_sleep_ms(50);
	}
	assert_non_null(c);
	struct goc_response r;
	assert_int_equal(tclient_call(c, "{\"op\":\"get_or_create\",\"table\":\"sa\",\"key\":{\"k\":\"x\"}}", &r), 0);
	if (!r.ok)
		fail_msg("expected ok, got %s", tclient_last(c));
	assert_true(r.created);
	codec_response_free(&r);
	tclient_close(c);

	kill(pid, SIGTERM);
	int st = 0;
	for (int i = 0; i < 200 && waitpid(pid, &st, WNOHANG) == 0; i++)
		harness_sleep_ms(50);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		fail_msg("gocd did not exit 0 after SIGTERM (see %s)", log);
	}
	harness_pass();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_adopts_socket_from_systemd,
						harness_test_setup, harness_test_teardown),
	};
	return cmocka_run_group_tests_name("socket_activation", tests, group_setup, harness_group_teardown);
}
