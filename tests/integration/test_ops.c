/*
 * test_ops.c - gocd's operational promises against a real gocd and a real
 * PostgreSQL: systemd notifications (READY=1 only once the port accepts,
 * STATUS= lines, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on
 * SIGTERM, abstract sockets), the admin HTTP listener (/metrics numbers that
 * move with traffic, /healthz, 404/405, a taken port is not fatal, and its
 * limits: pipelining, a trickled head, too many connections, out of
 * descriptors), the
 * slow-request log, and starting up with many tables.
 *
 * Owns: these checks, the "ops" schema, the notification sockets it binds in
 * the harness directory, and the one gocd the READY test starts itself (it
 * must watch the datagram socket and the port at the same moment, which
 * tgocd_start's wait-for-port cannot do); that child is killed at teardown.
 * Must never: look inside the daemon (the wire, HTTP, datagrams, the log and
 * the database are the evidence), listen on anything but loopback, or leave
 * NOTIFY_SOCKET/WATCHDOG_* set for the next test.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "codec.h"
#include "errors.h"
#include "harness.h"

static const char SCHEMA[] =
	"CREATE TABLE ops(id bigserial primary key, k text not null unique, n int);"
	"CREATE TABLE ops_slow(id bigserial primary key, k text not null unique);";

#define OPS_TABLES "--table=ops=k", "--table=ops_slow=k"

static pid_t own_gocd;    /* the READY test's own child, 0 when none */
static int notify_fd = -1;

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int group_setup(void **state)
{
	(void)state;
	return tpg_start_with_schema(SCHEMA);
}

static int setup(void **state)
{
	return harness_test_setup(state);
}

static int teardown(void **state)
{
	if (own_gocd > 0) {
		kill(own_gocd, SIGKILL);
		waitpid(own_gocd, NULL, 0);
		own_gocd = 0;
	}
	if (notify_fd >= 0)
		close(notify_fd);
	notify_fd = -1;
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	return harness_test_teardown(state);
}

/* ---- notification socket ------------------------------------------------- */

/* Bind a datagram socket: a path in the harness directory, or with
 * abstract, an abstract name.  Returns the NOTIFY_SOCKET value to export. */
static const char *notify_bind(bool abstract)
{
	static char value[108];
	static int seq;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	socklen_t len;
	if (abstract) {
		snprintf(value, sizeof value, "@gocd-test-%d-%d", (int)getpid(), ++seq);
		memcpy(sun.sun_path + 1, value + 1, strlen(value) - 1);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(value));
	} else {
		snprintf(value, sizeof value, "%s/notify-%d.sock", harness_dir(), ++seq);
		snprintf(sun.sun_path, sizeof sun.sun_path, "%s", value);
		len = sizeof sun;
	}
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(notify_fd >= 0);
	if (bind(notify_fd, (struct sockaddr *)&sun, len) != 0)
		fail_msg("bind %s: %s", value, strerror(errno));
	return value;
}

/* One datagram within timeout_ms: 1 with it in buf, 0 on timeout. */
static int notify_recv(char *buf, size_t size, int timeout_ms)
{
	struct pollfd p = {.fd = notify_fd, .events = POLLIN};
	if (poll(&p, 1, timeout_ms) <= 0)
		return 0;
	ssize_t n = recv(notify_fd, buf, size - 1, 0);
	if (n < 0)
		return 0;
	buf[n] = '\0';
	return 1;
}

/* Does the message hold the line `assignment` (e.g. "READY=1")? */
static bool has_line(const char *msg, const char *assignment)
{
	size_t n = strlen(assignment);
	for (const char *p = msg; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, assignment, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
			return true;
	return false;
}

static bool has_prefix_line(const char *msg, const char *prefix)
{
	size_t n = strlen(prefix);
	for (const char *p = msg; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, prefix, n) == 0)
			return true;
	return false;
}

static bool tcp_accepts(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
	close(fd);
	return ok;
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return strdup("");
	size_t cap = 1 << 20;
	char *s = calloc(1, cap);
	size_t n = s ? fread(s, 1, cap - 1, f) : 0;
	if (s)
		s[n] = '\0';
	fclose(f);
	return s;
}

/* ---- HTTP ---------------------------------------------------------------- */

struct http_reply {
	int status;
	char *head; /* status line and headers */
	char *body;
	char *raw;
};

static void http_free(struct http_reply *r)
{
	free(r->raw);
	memset(r, 0, sizeof *r);
}

/*
 * A plain HTTP/1.0 request over a socket; the whole reply is read until the
 * server closes.  Connecting is retried for a while: the admin listener
 * opens just after the client port that tgocd_start waits for.
 * Returns 0, or -1 (connection refused throughout, or a timeout).
 */
static int http_request(int port, const char *method, const char *path, struct http_reply *out)
{
	memset(out, 0, sizeof *out);
	long long deadline = now_ms() + 5000;
	int fd = -1;
	for (;;) {
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
			break;
		if (fd >= 0)
			close(fd);
		fd = -1;
		if (now_ms() >= deadline)
			return -1;
		harness_sleep_ms(20);
	}
	char req[256];
	/* a POST carries a small body, as a real one would */
	bool post = strcmp(method, "POST") == 0;
	int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n%s\r\n%s", method, path,
			 post ? "Content-Length: 3\r\n" : "", post ? "x=1" : "");
	if (write(fd, req, (size_t)n) != n) {
		close(fd);
		return -1;
	}
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	deadline = now_ms() + HARNESS_IO_TIMEOUT_MS;
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int left = (int)(deadline - now_ms());
		if (left <= 0 || poll(&p, 1, left) <= 0) {
			fprintf(stderr, "http %s %s: timeout\n", method, path);
			free(buf);
			close(fd);
			return -1;
		}
		if (len + 4096 > cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		ssize_t r = read(fd, buf + len, cap - len - 1);
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	out->raw = buf;
	char *sep = strstr(buf, "\r\n\r\n");
	if (sep == NULL || sscanf(buf, "HTTP/1.%*d %d", &out->status) != 1) {
		fprintf(stderr, "http %s %s: not an HTTP reply:\n%s\n", method, path, buf);
		return -1;
	}
	*sep = '\0';
	out->head = buf;
	out->body = sep + 4;
	return 0;
}

/* The value of the sample "series value"; -1 when the series is absent. */
static double metric(const char *body, const char *series)
{
	size_t n = strlen(series);
	for (const char *p = body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, series, n) == 0 && p[n] == ' ')
			return strtod(p + n + 1, NULL);
	return -1;
}

static char *scrape(int admin_port)
{
	struct http_reply r;
	assert_int_equal(http_request(admin_port, "GET", "/metrics", &r), 0);
	if (r.status != 200)
		fail_msg("/metrics: HTTP %d\n%s", r.status, r.raw);
	assert_non_null(strstr(r.head, "Content-Type: text/plain; version=0.0.4"));
	char *body = strdup(r.body);
	http_free(&r);
	return body;
}

/* Wait until /healthz answers `status` (the pool connects asynchronously). */
static void wait_health(int admin_port, int status)
{
	long long deadline = now_ms() + 15000;
	int last = -1;
	while (now_ms() < deadline) {
		struct http_reply r;
		if (http_request(admin_port, "GET", "/healthz", &r) == 0) {
			last = r.status;
			http_free(&r);
			if (last == status)
				return;
		}
		harness_sleep_ms(50);
	}
	fail_msg("/healthz stayed %d, expected %d", last, status);
}

static struct tgocd *start_with_admin(int *admin_port, const char *extra)
{
	char admin[64];
	*admin_port = harness_free_port();
	snprintf(admin, sizeof admin, "--admin-listen=127.0.0.1:%d", *admin_port);
	struct tgocd *g = tgocd_start(OPS_TABLES, admin, extra ? extra : "--log-level=info", NULL);
	assert_non_null(g);
	return g;
}

static void call_ok(struct tclient *c, const char *req, struct goc_response *r)
{
	assert_int_equal(tclient_call(c, req, r), 0);
	if (!r->ok)
		fail_msg("request %s\n  expected ok, got %s", req, tclient_last(c));
}

/* ---- systemd notifications ----------------------------------------------- */

/*
 * READY=1 comes only once the client port accepts (checked the moment it
 * arrives), carries a STATUS=, is followed by STATUS= lines every second and
 * WATCHDOG=1 every WATCHDOG_USEC/2; SIGTERM brings STOPPING=1 and exit 0.
 */
static void test_notify_ready_status_watchdog_stopping(void **state)
{
	(void)state;
	const char *sock = notify_bind(false);
	int port = harness_free_port();
	char bin[300], listen[64], pg[200], log[300];
	const char *b = getenv("GOCD_BUILD");
	snprintf(bin, sizeof bin, "%s/gocd", b && *b ? b : "build");
	snprintf(listen, sizeof listen, "--listen=127.0.0.1:%d", port);
	snprintf(pg, sizeof pg, "--postgres=%s", tpg_conninfo());
	snprintf(log, sizeof log, "%s/gocd-notify.log", harness_dir());
	const char *argv[] = {bin, listen, pg, OPS_TABLES, "--admin-listen=", NULL};

	pid_t parent = getpid();
	own_gocd = fork();
	assert_true(own_gocd >= 0);
	if (own_gocd == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(126);
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		alarm(120);
		setenv("NOTIFY_SOCKET", sock, 1);
		setenv("WATCHDOG_USEC", "200000", 1); /* keep-alive every 100 ms */
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}

	char msg[1024];
	bool ready = false;
	long long deadline = now_ms() + 20000;
	while (!ready && now_ms() < deadline) {
		if (!notify_recv(msg, sizeof msg, 200))
			continue;
		if (has_line(msg, "READY=1")) {
			ready = true;
			if (!tcp_accepts(port))
				fail_msg("READY=1 arrived before port %d accepts", port);
			assert_true(has_prefix_line(msg, "STATUS="));
		}
	}
	if (!ready) {
		char *l = read_all(log);
		fail_msg("no READY=1 within 20 s; gocd log:\n%s", l);
	}

	/* 2.5 s: at least two STATUS= lines and many keep-alives. */
	int status = 0, watchdog = 0;
	char last_status[512] = "";
	deadline = now_ms() + 2500;
	while (now_ms() < deadline) {
		if (!notify_recv(msg, sizeof msg, 100))
			continue;
		if (has_line(msg, "WATCHDOG=1"))
			watchdog++;
		if (has_prefix_line(msg, "STATUS=")) {
			status++;
			snprintf(last_status, sizeof last_status, "%s", strstr(msg, "STATUS="));
		}
	}
	if (status < 2)
		fail_msg("%d STATUS= lines in 2.5 s, expected >= 2", status);
	if (watchdog < 10)
		fail_msg("%d WATCHDOG=1 in 2.5 s at WATCHDOG_USEC=200000, expected ~25", watchdog);
	assert_non_null(strstr(last_status, "clients"));
	assert_non_null(strstr(last_status, "req/s"));
	assert_non_null(strstr(last_status, "in flight"));
	assert_non_null(strstr(last_status, "idle"));

	assert_int_equal(kill(own_gocd, SIGTERM), 0);
	bool stopping = false;
	deadline = now_ms() + 10000;
	while (!stopping && now_ms() < deadline)
		if (notify_recv(msg, sizeof msg, 200) && has_line(msg, "STOPPING=1"))
			stopping = true;
	assert_true(stopping);
	int st = 0;
	deadline = now_ms() + 15000;
	while (waitpid(own_gocd, &st, WNOHANG) != own_gocd) {
		if (now_ms() >= deadline)
			fail_msg("gocd did not exit after SIGTERM");
		harness_sleep_ms(20);
	}
	own_gocd = 0;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		char *l = read_all(log);
		fail_msg("gocd exit status %d; log:\n%s", st, l);
	}
	harness_pass();
}

/* An abstract NOTIFY_SOCKET works; WATCHDOG_PID naming another process
 * means no keep-alives; SIGHUP brings RELOADING=1 with MONOTONIC_USEC= and
 * then READY=1. */
static void test_notify_abstract_socket_watchdog_pid_and_reload(void **state)
{
	(void)state;
	const char *sock = notify_bind(true);
	setenv("NOTIFY_SOCKET", sock, 1);
	setenv("WATCHDOG_USEC", "100000", 1);
	setenv("WATCHDOG_PID", "1", 1);
	struct tgocd *g = tgocd_start(OPS_TABLES, "--admin-listen=", NULL);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	assert_non_null(g);

	char msg[1024];
	bool ready = false;
	int watchdog = 0;
	long long deadline = now_ms() + 1500;
	while (now_ms() < deadline) {
		if (!notify_recv(msg, sizeof msg, 100))
			continue;
		ready |= has_line(msg, "READY=1");
		watchdog += has_line(msg, "WATCHDOG=1");
	}
	assert_true(ready);
	assert_int_equal(watchdog, 0);

	tgocd_signal(g, SIGHUP);
	bool reloading = false, ready_again = false;
	deadline = now_ms() + 5000;
	while (!ready_again && now_ms() < deadline) {
		if (!notify_recv(msg, sizeof msg, 100))
			continue;
		if (has_line(msg, "RELOADING=1")) {
			reloading = true;
			assert_true(has_prefix_line(msg, "MONOTONIC_USEC="));
		}
		if (reloading && has_line(msg, "READY=1"))
			ready_again = true;
	}
	assert_true(reloading);
	assert_true(ready_again);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* ---- admin listener ------------------------------------------------------ */

static void test_metrics_move_with_traffic(void **state)
{
	(void)state;
	int ap;
	struct tgocd *g = start_with_admin(&ap, NULL);
	wait_health(ap, 200);
	char *m1 = scrape(ap);

	struct tclient *c = tclient_tcp(g->port);
	assert_non_null(c);
	struct goc_response r;
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"ops\",\"key\":{\"k\":\"metrics-1\"}}", &r);
	assert_true(r.created);
	codec_response_free(&r);
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"ops\",\"key\":{\"k\":\"metrics-1\"}}", &r);
	assert_false(r.created);
	codec_response_free(&r);
	call_ok(c, "{\"op\":\"get\",\"table\":\"ops\",\"key\":{\"k\":\"metrics-none\"}}", &r);
	codec_response_free(&r);
	assert_int_equal(tclient_call(c, "{\"op\":\"get_or_create\",\"table\":\"nope\",\"key\":{\"k\":\"x\"}}", &r), 0);
	assert_false(r.ok);
	assert_int_equal(r.code, GOC_E_UNKNOWN_TABLE);
	codec_response_free(&r);
	assert_int_equal(tclient_call(c, "not json", &r), 0);
	assert_int_equal(r.code, GOC_E_BAD_JSON);
	codec_response_free(&r);

	char *m2 = scrape(ap);
#define DELTA(series) (metric(m2, series) - (metric(m1, series) < 0 ? 0 : metric(m1, series)))
	const char *goc_ok = "gocd_requests_total{op=\"get_or_create\",outcome=\"ok\"}";
	if (DELTA(goc_ok) != 2)
		fail_msg("%s moved by %g, expected 2\n%s", goc_ok, DELTA(goc_ok), m2);
	assert_true(DELTA("gocd_requests_total{op=\"get\",outcome=\"ok\"}") == 1);
	assert_true(DELTA("gocd_requests_total{op=\"get_or_create\",outcome=\"unknown_table\"}") == 1);
	assert_true(DELTA("gocd_requests_total{op=\"invalid\",outcome=\"bad_json\"}") == 1);
	assert_true(DELTA("gocd_rows_created_total") == 1);
	assert_true(DELTA("gocd_rows_found_total") == 1);
	assert_true(DELTA("gocd_rows_not_found_total") == 1);
	assert_true(DELTA("gocd_errors_total{code=\"unknown_table\"}") == 1);
	assert_true(DELTA("gocd_errors_total{code=\"bad_json\"}") == 1);
	assert_true(DELTA("gocd_request_duration_seconds_count{op=\"get_or_create\"}") == 3);
	assert_true(DELTA("gocd_request_duration_seconds_bucket{op=\"get_or_create\",le=\"+Inf\"}") == 3);
	assert_true(DELTA("gocd_postgres_round_trips_total") >= 2);
	assert_true(metric(m2, "gocd_clients_connected") >= 1);
	assert_true(metric(m2, "gocd_requests_in_flight") == 0);
	assert_true(metric(m2, "gocd_pool_connections{state=\"idle\"}") +
		    metric(m2, "gocd_pool_connections{state=\"busy\"}") >= 1);
	assert_true(metric(m2, "gocd_batch_queued") == 0);
	assert_true(metric(m2, "gocd_batches_total") >= 0);
	assert_true(metric(m2, "gocd_batch_keys_total") >= 0);
	assert_true(metric(m2, "gocd_coalesced_total") >= 0);
#undef DELTA

	/* The stats op tells the same story. */
	call_ok(c, "{\"op\":\"stats\"}", &r);
	assert_non_null(strstr(tclient_last(c), "\"created\":1,\"found\":1"));
	codec_response_free(&r);

	free(m1);
	free(m2);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* /healthz is 503 with no PostgreSQL connection up; unknown paths are 404,
 * other methods 405; HEAD works. */
static void test_healthz_503_without_postgres_and_http_errors(void **state)
{
	(void)state;
	int ap;
	int dead = harness_free_port(); /* nothing listens there */
	char pg[128];
	snprintf(pg, sizeof pg, "--postgres=host=127.0.0.1 port=%d dbname=postgres connect_timeout=1",
		 dead);
	struct tgocd *g = start_with_admin(&ap, pg);
	struct http_reply r;
	assert_int_equal(http_request(ap, "GET", "/healthz", &r), 0);
	if (r.status != 503)
		fail_msg("/healthz with PostgreSQL down: HTTP %d\n%s", r.status, r.raw);
	assert_non_null(strstr(r.body, "unavailable"));
	http_free(&r);

	assert_int_equal(http_request(ap, "GET", "/nope", &r), 0);
	assert_int_equal(r.status, 404);
	http_free(&r);
	/* empty lines before the request line are ignored (RFC 9112 2.2) */
	assert_int_equal(http_request(ap, "\r\n\r\nGET", "/nope", &r), 0);
	if (r.status != 404)
		fail_msg("a request after empty lines: HTTP %d", r.status);
	http_free(&r);
	assert_int_equal(http_request(ap, "POST", "/metrics", &r), 0);
	assert_int_equal(r.status, 405);
	http_free(&r);
	assert_int_equal(http_request(ap, "POST", "/healthz", &r), 0);
	assert_int_equal(r.status, 405);
	http_free(&r);
	/* HEAD: the length of what GET would send, and no body (evhttp sent
	 * the body, which a kept-alive client read as the next response) */
	const char *head_paths[] = {"/metrics", "/healthz", "/nope"};
	const int head_status[] = {200, 503, 404};
	for (int i = 0; i < 3; i++) {
		assert_int_equal(http_request(ap, "HEAD", head_paths[i], &r), 0);
		if (r.status != head_status[i] || r.body[0] != '\0' || !strstr(r.raw, "Content-Length: "))
			fail_msg("HEAD %s:\n%s", head_paths[i], r.raw);
		http_free(&r);
	}
	/* the metrics still render with the pool down */
	char *m = scrape(ap);
	assert_true(metric(m, "gocd_pool_connections{state=\"idle\"}") == 0);
	free(m);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* While SIGTERM drains a request, /healthz says 503 so a balancer stops
 * sending; the request is still answered. */
static void test_healthz_503_while_draining(void **state)
{
	(void)state;
	int ap;
	struct tgocd *g = start_with_admin(&ap, NULL);
	wait_health(ap, 200);
	struct tclient *c = tclient_tcp(g->port);
	assert_non_null(c);
	struct tpg_session *s = tpg_session_open();
	assert_non_null(s);
	assert_int_equal(tpg_session_exec(s, "BEGIN; LOCK TABLE ops IN ACCESS EXCLUSIVE MODE"), 0);
	assert_int_equal(tclient_sendf(c, "{\"op\":\"get_or_create\",\"table\":\"ops\","
					  "\"key\":{\"k\":\"drain-health\"}}\n"), 0);
	harness_sleep_ms(200);
	tgocd_signal(g, SIGTERM);
	wait_health(ap, 503);
	assert_int_equal(tpg_session_exec(s, "COMMIT"), 0);
	struct goc_response r;
	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_true(r.ok);
	codec_response_free(&r);
	assert_int_equal(tgocd_wait(g, 15000), 0);
	harness_pass();
}

/* A taken admin port is logged, and gocd serves clients without it. */
static void test_admin_port_taken_is_not_fatal(void **state)
{
	(void)state;
	int hold = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t alen = sizeof a;
	assert_int_equal(bind(hold, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(hold, 1), 0);
	assert_int_equal(getsockname(hold, (struct sockaddr *)&a, &alen), 0);
	char admin[64];
	snprintf(admin, sizeof admin, "--admin-listen=127.0.0.1:%d", ntohs(a.sin_port));
	struct tgocd *g = tgocd_start(OPS_TABLES, admin, NULL);
	assert_non_null(g);
	struct tclient *c = tclient_tcp(g->port);
	assert_non_null(c);
	struct goc_response r;
	call_ok(c, "{\"op\":\"ping\"}", &r);
	codec_response_free(&r);
	char *log = tgocd_log(g);
	assert_non_null(strstr(log, "continuing without the admin listener"));
	free(log);
	assert_int_equal(tgocd_stop(g), 0);
	close(hold);
	harness_pass();
}

/* daemon/admin.h's limits, as a client sees them. */
#define ADMIN_MAX_CONNS 64
#define ADMIN_TIMEOUT_MS 10000

/* Everything the server sends until it closes (or timeout_ms pass: then
 * -1), NUL-terminated in buf; the length, or -1. */
static long read_until_close(int fd, char *buf, size_t size, int timeout_ms)
{
	size_t len = 0;
	long long deadline = now_ms() + timeout_ms;
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int left = (int)(deadline - now_ms());
		if (left <= 0 || poll(&p, 1, left) <= 0)
			return -1;
		ssize_t n = read(fd, buf + len, size - len - 1);
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == size - 1)
			break;
	}
	buf[len] = '\0';
	return (long)len;
}

/*
 * A client pipelining GET /metrics on one connection without reading the
 * replies: gocd's memory stays bounded (evhttp kept reading requests and
 * queueing replies: about 1 GB in seconds) and it still serves clients.
 * One request per connection now: the rest is discarded, then closed.
 */
static void test_admin_pipelined_requests_keep_memory_bounded(void **state)
{
	(void)state;
	int ap;
	struct tgocd *g = start_with_admin(&ap, NULL);
	wait_health(ap, 200);
	long before = tgocd_rss_kb(g), peak = before;
	assert_true(before > 0);

	static const char get[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	size_t unit = sizeof get - 1, cap = unit * 1000;
	char *chunk = malloc(cap);
	assert_non_null(chunk);
	for (size_t i = 0; i < 1000; i++)
		memcpy(chunk + i * unit, get, unit);
	int fd = harness_tcp_fd(ap, 4096);
	assert_true(fd >= 0);
	size_t sent = 0, off = 0;
	long long end = now_ms() + 2000;
	while (now_ms() < end && sent < ((size_t)200 << 20)) {
		ssize_t n = send(fd, chunk + off, cap - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			sent += (size_t)n;
			off = (off + (size_t)n) % cap;
		} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			(void)poll(&p, 1, 10);
		} else {
			break; /* gocd closed it: also bounded */
		}
		long kb = tgocd_rss_kb(g);
		if (kb > peak)
			peak = kb;
	}
	close(fd);
	free(chunk);
	if (peak - before >= 20 * 1024)
		fail_msg("gocd's RSS grew from %ld to %ld KiB while a client pipelined %zu bytes "
			 "of GET /metrics", before, peak, sent);

	struct tclient *c = tclient_tcp(g->port);
	assert_non_null(c);
	struct goc_response r;
	call_ok(c, "{\"op\":\"ping\"}", &r);
	codec_response_free(&r);
	wait_health(ap, 200);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * Slowloris: a request head trickling in one byte every 500 ms is closed
 * at ADMIN_TIMEOUT_S from accept (evhttp's timeout was per read, so this
 * client kept its connection as long as it kept trickling).
 */
static void test_admin_slow_request_head_closed_at_deadline(void **state)
{
	(void)state;
	int ap;
	struct tgocd *g = start_with_admin(&ap, NULL);
	wait_health(ap, 200);
	int fd = harness_tcp_fd(ap, 0);
	assert_true(fd >= 0);
	long long t0 = now_ms();
	static const char start[] = "GET /metrics HTTP/1.1\r\n", trickle[] = "X-Slow: yes\r\n";
	assert_int_equal(send(fd, start, sizeof start - 1, MSG_NOSIGNAL), (ssize_t)sizeof start - 1);
	bool closed = false;
	for (size_t i = 0; !closed && now_ms() - t0 < ADMIN_TIMEOUT_MS + 4000; i++) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 500) > 0) {
			char buf[256];
			closed = read(fd, buf, sizeof buf) <= 0; /* no reply: only the close */
		}
		if (!closed && send(fd, &trickle[i % (sizeof trickle - 1)], 1, MSG_NOSIGNAL) != 1)
			closed = true;
	}
	long long took = now_ms() - t0;
	close(fd);
	if (!closed || took < ADMIN_TIMEOUT_MS - 1000 || took > ADMIN_TIMEOUT_MS + 2000)
		fail_msg("a trickling admin request was %s after %lld ms (expected closed at %d ms)",
			 closed ? "closed" : "still open", took, ADMIN_TIMEOUT_MS);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/*
 * ADMIN_MAX_CONNS idle admin connections: one more is told 503 and closed
 * at once (evhttp took them all, without limit); once they are gone
 * /healthz answers again.
 */
static void test_admin_connections_over_limit_refused(void **state)
{
	(void)state;
	int ap;
	struct tgocd *g = start_with_admin(&ap, NULL);
	wait_health(ap, 200);
	int idle[ADMIN_MAX_CONNS];
	for (int i = 0; i < ADMIN_MAX_CONNS; i++) {
		idle[i] = harness_tcp_fd(ap, 0);
		assert_true(idle[i] >= 0);
	}
	/* queued behind the idle ones, so accepted after them */
	int fd = harness_tcp_fd(ap, 0);
	assert_true(fd >= 0);
	char buf[1024];
	long n = read_until_close(fd, buf, sizeof buf, 3000);
	close(fd);
	if (n < 0 || strncmp(buf, "HTTP/1.1 503 ", 13) != 0 ||
	    !strstr(buf, "too many admin connections"))
		fail_msg("admin connection %d of %d: expected a 503 and a close, got %s",
			 ADMIN_MAX_CONNS + 1, ADMIN_MAX_CONNS, n < 0 ? "no close within 3 s" : buf);
	for (int i = 0; i < ADMIN_MAX_CONNS; i++)
		close(idle[i]);
	wait_health(ap, 200);
	char *log = tgocd_log(g);
	assert_non_null(strstr(log, "admin connections open (the most); refusing it"));
	free(log);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

static int count_fds(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	assert_non_null(d);
	int n = 0;
	for (struct dirent *e; (e = readdir(d)) != NULL;)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static int count_lines_with(const char *text, const char *needle)
{
	int n = 0;
	for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

/*
 * Out of descriptors with an admin connection waiting: accepting pauses
 * for 100 ms at a time, logged at most once a second (evhttp retried at
 * once, at 100% CPU and ~400k log lines a second); the connection is
 * served once descriptors are free again.
 */
static void test_admin_accept_emfile_pauses(void **state)
{
	(void)state;
	int ap;
	struct tgocd *g = start_with_admin(&ap, NULL);
	wait_health(ap, 200);
	int room = 4, nclients = 8;
	rlim_t lim = (rlim_t)(count_fds(g->pid) + room);
	struct rlimit rl = {lim, lim};
	assert_int_equal(prlimit(g->pid, RLIMIT_NOFILE, &rl, NULL), 0);
	int clients[8];
	for (int i = 0; i < nclients; i++) {
		clients[i] = harness_tcp_fd(g->port, 0);
		assert_true(clients[i] >= 0);
	}
	harness_sleep_ms(300); /* gocd takes all it can */
	int fd = harness_tcp_fd(ap, 0);
	assert_true(fd >= 0);
	harness_sleep_ms(200);
	char *log = tgocd_log(g);
	int lines0 = count_lines_with(log, "admin: accept failed");
	free(log);
	double cpu0 = harness_cpu_seconds(g->pid);
	assert_true(cpu0 >= 0);
	harness_sleep_ms(2000);
	double cpu1 = harness_cpu_seconds(g->pid);
	assert_true(cpu1 >= 0);
	double cpu = cpu1 - cpu0;
	log = tgocd_log(g);
	int lines = count_lines_with(log, "admin: accept failed") - lines0;
	free(log);
	/* at least one line: descriptors did run out */
	if (cpu > 0.5 || lines < 1 || lines > 3)
		fail_msg("out of descriptors with an admin connection waiting: %.2f s of CPU and %d "
			 "accept-failure lines in 2 s", cpu, lines);

	for (int i = 0; i < nclients; i++)
		close(clients[i]);
	static const char get[] = "GET /healthz HTTP/1.0\r\n\r\n";
	assert_int_equal(send(fd, get, sizeof get - 1, MSG_NOSIGNAL), (ssize_t)sizeof get - 1);
	char buf[1024];
	long n = read_until_close(fd, buf, sizeof buf, 5000);
	close(fd);
	if (n < 0 || strncmp(buf, "HTTP/1.1 200 ", 13) != 0)
		fail_msg("the waiting admin connection, descriptors free again: %s",
			 n < 0 ? "no reply within 5 s" : buf);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* ---- slow-request log ---------------------------------------------------- */

static void test_slow_request_logged_with_op_table_latency_outcome(void **state)
{
	(void)state;
	int ap;
	struct tgocd *g = start_with_admin(&ap, "--slow-request-ms=100");
	wait_health(ap, 200);
	struct tclient *c = tclient_tcp(g->port);
	assert_non_null(c);
	struct goc_response r;
	/* fast: not logged */
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"ops_slow\",\"key\":{\"k\":\"fast\"}}", &r);
	codec_response_free(&r);

	struct tpg_session *s = tpg_session_open();
	assert_non_null(s);
	assert_int_equal(tpg_session_exec(s, "BEGIN; LOCK TABLE ops_slow IN ACCESS EXCLUSIVE MODE"), 0);
	assert_int_equal(tclient_sendf(c, "{\"op\":\"get_or_create\",\"table\":\"ops_slow\","
					  "\"key\":{\"k\":\"slow\"}}\n"), 0);
	harness_sleep_ms(300);
	assert_int_equal(tpg_session_exec(s, "COMMIT"), 0);
	assert_int_equal(tclient_recv(c, &r, HARNESS_IO_TIMEOUT_MS), 0);
	assert_true(r.ok);
	assert_true(r.created);
	codec_response_free(&r);

	char *m = scrape(ap);
	assert_true(metric(m, "gocd_slow_requests_total") == 1);
	free(m);
	char *log = tgocd_log(g);
	const char *line = strstr(log, "slow request: op=get_or_create table=\"ops_slow\" latency=");
	if (line == NULL)
		fail_msg("no slow-request line in the log:\n%s", log);
	assert_non_null(strstr(line, "outcome=ok"));
	double ms = strtod(strstr(line, "latency=") + 8, NULL);
	assert_true(ms >= 250 && ms < 10000);
	/* exactly one: the fast request was not logged */
	assert_null(strstr(line + 1, "slow request:"));
	free(log);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* SIGUSR1 and SIGUSR2 (log reopening in nginx, pause in PgBouncer) killed
 * gocd on the spot, without the drain.  They are logged and ignored. */
static void test_sigusr_is_logged_and_ignored(void **state)
{
	(void)state;
	struct tgocd *g = tgocd_start(OPS_TABLES, "--admin-listen=", NULL);
	assert_non_null(g);
	struct tclient *c = tclient_tcp(g->port);
	assert_non_null(c);
	struct goc_response r;
	tgocd_signal(g, SIGUSR1);
	tgocd_signal(g, SIGUSR2);
	call_ok(c, "{\"op\":\"get_or_create\",\"table\":\"ops_slow\",\"key\":{\"k\":\"usr\"}}", &r);
	codec_response_free(&r);
	assert_true(tgocd_alive(g));
	/* the log lines may trail the answer */
	free(tgocd_wait_log(g, "SIGUSR1 ignored", 2000));
	char *log = tgocd_wait_log(g, "SIGUSR2 ignored", 2000);
	if (strstr(log, "SIGUSR1 ignored") == NULL || strstr(log, "SIGUSR2 ignored") == NULL)
		fail_msg("no 'ignored' line for each signal in the log:\n%s", log);
	free(log);
	tclient_close(c);
	assert_int_equal(tgocd_stop(g), 0);
	harness_pass();
}

/* ---- startup ------------------------------------------------------------- */

/*
 * Many tables: a new connection's setup reads the catalog once per table,
 * one round trip each.  connect_timeout used to cover the whole setup, so
 * past a few hundred tables (about 1.3 ms apiece here) no connection ever
 * became ready and every request was answered unavailable, forever.  Each
 * step has connect_timeout to itself now.
 */
static void test_many_tables_setup_within_connect_timeout(void **state)
{
	(void)state;
	/* 1500 tables at about 1.3 ms apiece take some 2 s: a setup bounded
	 * as a whole by connect_timeout (the old bug) never finishes, while
	 * 600 ms per step leaves a loaded machine room (300 did not, once) */
	enum { NTABLES = 1500 };
	char path[300];
	snprintf(path, sizeof path, "%s/many-tables.conf", harness_dir());
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	size_t cap = NTABLES * 80, len = 0;
	char *ddl = malloc(cap);
	assert_non_null(ddl);
	for (int i = 0; i < NTABLES; i++) {
		fprintf(f, "table = ops_many_%d=k\n", i);
		len += (size_t)snprintf(ddl + len, cap - len,
					"CREATE TABLE ops_many_%d(id serial primary key, k text unique);", i);
	}
	fclose(f);
	assert_int_equal(tpg_exec("%s", ddl), 0);
	free(ddl);
	char conf[320];
	snprintf(conf, sizeof conf, "--config=%s", path);
	/* request_timeout well above the setup's time: on a loaded machine
	 * (CI beside other jobs) the catalog reads took over the default 5 s,
	 * and a request queued for the connection was answered timeout */
	struct tgocd *g = tgocd_start(conf, "--connect-timeout=600", "--pool-size=2",
				      "--request-timeout=30000", NULL);
	assert_non_null(g);
	struct tclient *c = tclient_tcp(g->port);
	assert_non_null(c);
	struct goc_response r;
	for (int i = 0;; i++) {
		assert_int_equal(tclient_call(c, "{\"op\":\"get_or_create\",\"table\":\"ops_many_1499\","
						 "\"key\":{\"k\":\"last\"}}", &r), 0);
		if (r.ok || r.code != GOC_E_UNAVAILABLE || i == 100)
			break;
		codec_response_free(&r);
		harness_sleep_ms(100);
	}
	if (!r.ok)
		print_error("%d tables, connect_timeout 600 ms: %s\n", NTABLES, tclient_last(c));
	assert_true(r.ok);
	assert_true(r.created);
	codec_response_free(&r);
	assert_int_equal(tgocd_stop(g), 0);
	/* one statement: a connection per DROP took seconds */
	assert_int_equal(tpg_exec("DO $$BEGIN FOR i IN 0..%d LOOP "
				  "EXECUTE pg_catalog.format('DROP TABLE ops_many_%%s', i); END LOOP; END$$",
				  NTABLES - 1), 0);
	harness_pass();
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_notify_ready_status_watchdog_stopping),
		T(test_notify_abstract_socket_watchdog_pid_and_reload),
		T(test_metrics_move_with_traffic),
		T(test_healthz_503_without_postgres_and_http_errors),
		T(test_healthz_503_while_draining),
		T(test_admin_port_taken_is_not_fatal),
		T(test_admin_pipelined_requests_keep_memory_bounded),
		T(test_admin_slow_request_head_closed_at_deadline),
		T(test_admin_connections_over_limit_refused),
		T(test_admin_accept_emfile_pauses),
		T(test_slow_request_logged_with_op_table_latency_outcome),
		T(test_sigusr_is_logged_and_ignored),
		T(test_many_tables_setup_within_connect_timeout),
	};
	return cmocka_run_group_tests(tests, group_setup, harness_group_teardown);
}
