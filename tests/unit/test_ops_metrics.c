/*
 * test_ops_metrics.c - unit tests of the operations modules: the Prometheus text
 * that stats.c renders (format, families, histogram invariants, counters
 * moving with requests), the STATUS= line, and notify.c's parsing of
 * NOTIFY_SOCKET / WATCHDOG_USEC plus one real datagram round trip.
 *
 * Owns: these checks only.  Must never: start a daemon, touch the network
 * beyond a private AF_UNIX socket in a temporary directory, or depend on
 * another test's counters (each test reads deltas, or resets stats).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <jansson.h>

#include "../../daemon/config.h"
#include "../../daemon/gocd.h"
#include "../../daemon/notify.h"
#include "../../daemon/req.h"
#include "../../daemon/stats.h"
#include "codec.h"

static struct config cfg;

static int setup(void **state)
{
	(void)state;
	config_defaults(&cfg);
	srv.cfg = &cfg;
	memset(&stats, 0, sizeof stats);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	srv.cfg = NULL;
	config_free(&cfg);
	return 0;
}

static char *render_metrics(void)
{
	struct evbuffer *b = evbuffer_new();
	stats_render_prometheus(b);
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);
	assert_non_null(s);
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	evbuffer_free(b);
	return s;
}

/* Value of the sample whose name-and-labels text is exactly `series`; -1
 * when absent. */
static double sample(const char *text, const char *series)
{
	size_t n = strlen(series);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, series, n) == 0 && p[n] == ' ')
			return strtod(p + n + 1, NULL);
	}
	return -1;
}

/* A request as req_answered would see it: parsed line, outcome, start time. */
static void fake_request(enum goc_op op, const char *table, enum goc_err outcome,
			 uint64_t took_us)
{
	struct req r;
	memset(&r, 0, sizeof r);
	r.in.root = json_object();
	r.in.op = op;
	r.in.table = table;
	r.outcome = outcome;
	r.started_us = gocd_now_us() - took_us;
	stats_request_done(&r);
	json_decref(r.in.root);
}

/* Every line is a comment or "name{labels} value"; every sample's family
 * has HELP and TYPE lines before it. */
static void test_metrics_text_format(void **state)
{
	(void)state;
	fake_request(GOC_OP_GET_OR_CREATE, "users", GOC_OK, 300);
	char *text = render_metrics();
	char *copy = strdup(text), *save = NULL;
	int samples = 0;
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0)
			continue;
		assert_true(line[0] != '#');
		char name[128];
		size_t i = 0;
		while (line[i] && line[i] != '{' && line[i] != ' ' && i < sizeof name - 1) {
			name[i] = line[i];
			i++;
		}
		name[i] = '\0';
		assert_true(strncmp(name, "gocd_", 5) == 0);
		char *sp = strrchr(line, ' ');
		assert_non_null(sp);
		char *end;
		strtod(sp + 1, &end);
		if (*end != '\0')
			fail_msg("sample value not a number: %s", line);
		/* the family: strip histogram suffixes */
		char fam[128];
		snprintf(fam, sizeof fam, "%s", name);
		const char *suffixes[] = {"_bucket", "_sum", "_count"};
		for (int k = 0; k < 3; k++) {
			size_t fl = strlen(fam), sl = strlen(suffixes[k]);
			if (strncmp(fam, "gocd_request_duration_seconds", 29) == 0 && fl > sl &&
			    strcmp(fam + fl - sl, suffixes[k]) == 0)
				fam[fl - sl] = '\0';
		}
		char help[200], type[200];
		snprintf(help, sizeof help, "# HELP %s ", fam);
		snprintf(type, sizeof type, "# TYPE %s ", fam);
		char *h = strstr(text, help), *t = strstr(text, type);
		if (h == NULL || t == NULL || h > strstr(text, line) || t > strstr(text, line))
			fail_msg("no HELP/TYPE before %s", line);
		samples++;
	}
	assert_true(samples > 50);
	free(copy);
	free(text);
}

static void test_metrics_names_required_by_issue_5(void **state)
{
	(void)state;
	char *text = render_metrics();
	const char *names[] = {
		"# TYPE gocd_requests_total counter", "# TYPE gocd_rows_created_total counter",
		"# TYPE gocd_rows_found_total counter", "# TYPE gocd_coalesced_total counter",
		"# TYPE gocd_errors_total counter", "# TYPE gocd_requests_in_flight gauge",
		"# TYPE gocd_batch_queued gauge", "# TYPE gocd_pool_connections gauge",
		"# TYPE gocd_postgres_round_trips_total counter", "# TYPE gocd_batches_total counter",
		"# TYPE gocd_batch_keys_total counter", "# TYPE gocd_clients_connected gauge",
		"# TYPE gocd_request_duration_seconds histogram",
		"gocd_pool_connections{state=\"idle\"} ", "gocd_pool_connections{state=\"busy\"} ",
		"gocd_pool_connections{state=\"down\"} ", "gocd_errors_total{code=\"timeout\"} ",
	};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strstr(text, names[i]) == NULL)
			fail_msg("/metrics lacks \"%s\"", names[i]);
	free(text);
}

static void test_requests_total_by_op_and_outcome(void **state)
{
	(void)state;
	fake_request(GOC_OP_GET_OR_CREATE, "users", GOC_OK, 10);
	fake_request(GOC_OP_GET_OR_CREATE, "users", GOC_OK, 10);
	fake_request(GOC_OP_GET, "nope", GOC_E_UNKNOWN_TABLE, 10);
	/* a line that never parsed: no root, op counted as invalid */
	struct req r;
	memset(&r, 0, sizeof r);
	r.outcome = GOC_E_TOO_LARGE;
	r.started_us = gocd_now_us();
	stats_request_done(&r);

	char *text = render_metrics();
	assert_true(sample(text, "gocd_requests_total{op=\"get_or_create\",outcome=\"ok\"}") == 2);
	assert_true(sample(text, "gocd_requests_total{op=\"get\",outcome=\"unknown_table\"}") == 1);
	assert_true(sample(text, "gocd_requests_total{op=\"invalid\",outcome=\"too_large\"}") == 1);
	/* ok series exist from the start; untouched error series do not */
	assert_true(sample(text, "gocd_requests_total{op=\"ping\",outcome=\"ok\"}") == 0);
	assert_true(sample(text, "gocd_requests_total{op=\"ping\",outcome=\"timeout\"}") == -1);
	/* the stats op keeps its per-op counters (invalid lines are not an op) */
	assert_int_equal(stats.requests[GOC_OP_GET_OR_CREATE], 2);
	assert_int_equal(stats.requests[GOC_OP_GET], 1);
	free(text);
}

/* Buckets are cumulative, end with +Inf == _count, and the sum is exact. */
static void test_latency_histogram(void **state)
{
	(void)state;
	fake_request(GOC_OP_GET, "t", GOC_OK, 50);        /* <= 0.0001 */
	fake_request(GOC_OP_GET, "t", GOC_OK, 2000);      /* <= 0.0025 */
	fake_request(GOC_OP_GET, "t", GOC_OK, 20000000);  /* > 10 s: +Inf only */
	char *text = render_metrics();
	const char *p = "gocd_request_duration_seconds_bucket{op=\"get\",le=";
	char series[160];
	double prev = -1;
	for (int i = 0; i < STATS_LATENCY_BUCKETS; i++) {
		char le[32];
		double bound = (double)stats_latency_bounds_us[i] / 1e6;
		snprintf(le, sizeof le, "%g", bound);
		snprintf(series, sizeof series, "%s\"%s\"}", p, le);
		double v = sample(text, series);
		if (v < 0)
			fail_msg("missing %s", series);
		assert_true(v >= prev);
		prev = v;
	}
	snprintf(series, sizeof series, "%s\"0.0001\"}", p);
	assert_true(sample(text, series) == 1);
	snprintf(series, sizeof series, "%s\"0.0025\"}", p);
	assert_true(sample(text, series) == 2);
	snprintf(series, sizeof series, "%s\"10\"}", p);
	assert_true(sample(text, series) == 2);
	snprintf(series, sizeof series, "%s\"+Inf\"}", p);
	assert_true(sample(text, series) == 3);
	assert_true(sample(text, "gocd_request_duration_seconds_count{op=\"get\"}") == 3);
	double sum = sample(text, "gocd_request_duration_seconds_sum{op=\"get\"}");
	/* the clock moves between fake_request's start and done: allow 1 s */
	assert_true(sum >= 20.00205 && sum < 21.0);
	free(text);
}

static void test_slow_requests_counted_only_above_threshold(void **state)
{
	(void)state;
	cfg.slow_request_ms = 100;
	fake_request(GOC_OP_GET, "t", GOC_OK, 1000);
	assert_int_equal(stats.slow, 0);
	fake_request(GOC_OP_GET_OR_CREATE, "t\nforged line", GOC_E_TIMEOUT, 150000);
	assert_int_equal(stats.slow, 1);
	cfg.slow_request_ms = 0; /* off */
	fake_request(GOC_OP_GET, "t", GOC_OK, 5000000);
	assert_int_equal(stats.slow, 1);
}

static void test_stats_op_json_parses(void **state)
{
	(void)state;
	fake_request(GOC_OP_PING, NULL, GOC_OK, 10);
	struct evbuffer *b = evbuffer_new();
	evbuffer_add(b, "{", 1);
	stats_render(b);
	evbuffer_add(b, "}", 2);
	json_error_t err;
	json_t *j = json_loads((const char *)evbuffer_pullup(b, -1), 0, &err);
	if (j == NULL)
		fail_msg("stats JSON does not parse: %s", err.text);
	json_t *s = json_object_get(j, "stats");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "requests"), "ping")), 1);
	assert_non_null(json_object_get(s, "pool"));
	assert_non_null(json_object_get(s, "batch"));
	assert_true(json_is_integer(json_object_get(s, "uptime_s")));
	assert_true(json_is_integer(json_object_get(s, "slow")));
	json_decref(j);
	evbuffer_free(b);
}

static void test_status_line(void **state)
{
	(void)state;
	char buf[256];
	stats_status_line(buf, sizeof buf, 1000000);
	for (int i = 0; i < 50; i++)
		fake_request(GOC_OP_PING, NULL, GOC_OK, 1);
	stats_status_line(buf, sizeof buf, 1500000); /* 50 in half a second */
	assert_non_null(strstr(buf, "100 req/s"));
	assert_non_null(strstr(buf, "clients"));
	assert_non_null(strstr(buf, "in flight"));
	assert_non_null(strstr(buf, "idle"));
	assert_null(strchr(buf, '\n'));
}

static void test_notify_parse_address(void **state)
{
	(void)state;
	struct sockaddr_un sun;
	size_t n = notify_parse_address("/run/systemd/notify", &sun);
	assert_int_equal(n, offsetof(struct sockaddr_un, sun_path) + strlen("/run/systemd/notify") + 1);
	assert_string_equal(sun.sun_path, "/run/systemd/notify");
	n = notify_parse_address("@gocd/notify", &sun);
	assert_int_equal(n, offsetof(struct sockaddr_un, sun_path) + strlen("@gocd/notify"));
	assert_int_equal(sun.sun_path[0], '\0');
	assert_memory_equal(sun.sun_path + 1, "gocd/notify", 11);
	assert_int_equal(notify_parse_address("relative/path", &sun), 0);
	assert_int_equal(notify_parse_address("", &sun), 0);
	assert_int_equal(notify_parse_address("@", &sun), 0);
	assert_int_equal(notify_parse_address(NULL, &sun), 0);
	char longp[200];
	memset(longp, 'x', sizeof longp - 1);
	longp[0] = '/';
	longp[sizeof longp - 1] = '\0';
	assert_int_equal(notify_parse_address(longp, &sun), 0);
}

static void test_notify_parse_watchdog(void **state)
{
	(void)state;
	assert_int_equal(notify_parse_watchdog("30000000", NULL, 42), 30000000);
	assert_int_equal(notify_parse_watchdog("30000000", "42", 42), 30000000);
	assert_int_equal(notify_parse_watchdog("30000000", "43", 42), 0); /* someone else's */
	assert_int_equal(notify_parse_watchdog(NULL, NULL, 42), 0);
	assert_int_equal(notify_parse_watchdog("", NULL, 42), 0);
	assert_int_equal(notify_parse_watchdog("0", NULL, 42), 0);
	assert_int_equal(notify_parse_watchdog("12abc", NULL, 42), 0);
}

/* notify_init() with NOTIFY_SOCKET unset sends nothing; with it set, the
 * messages arrive as single datagrams in the documented format. */
static void test_notify_datagrams(void **state)
{
	(void)state;
	unsetenv("NOTIFY_SOCKET");
	assert_false(notify_init());
	assert_int_equal(notify_send("READY=1"), -1);

	char dir[] = "/tmp/gocd-notify-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[128];
	snprintf(path, sizeof path, "%s/notify", dir);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_un sun;
	size_t len = notify_parse_address(path, &sun);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, (socklen_t)len), 0);
	struct timeval tv = {2, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

	setenv("NOTIFY_SOCKET", path, 1);
	assert_true(notify_init());
	char buf[512];
	ssize_t n;

	notify_ready();
	n = recv(fd, buf, sizeof buf - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_true(strncmp(buf, "READY=1\nSTATUS=", 15) == 0);

	notify_reloading();
	n = recv(fd, buf, sizeof buf - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_true(strncmp(buf, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0);
	unsigned long long mono = strtoull(buf + 27, NULL, 10);
	unsigned long long now = (unsigned long long)gocd_now_us();
	assert_true(mono > 0 && mono <= now && now - mono < 5000000);

	notify_stopping();
	n = recv(fd, buf, sizeof buf - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_true(strncmp(buf, "STOPPING=1\n", 11) == 0);

	notify_status("two\nlines");
	n = recv(fd, buf, sizeof buf - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, "STATUS=two lines");

	notify_stop();
	unsetenv("NOTIFY_SOCKET");
	close(fd);
	unlink(path);
	rmdir(dir);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_metrics_text_format),
		T(test_metrics_names_required_by_issue_5),
		T(test_requests_total_by_op_and_outcome),
		T(test_latency_histogram),
		T(test_slow_requests_counted_only_above_threshold),
		T(test_stats_op_json_parses),
		T(test_status_line),
		T(test_notify_parse_address),
		T(test_notify_parse_watchdog),
		T(test_notify_datagrams),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
