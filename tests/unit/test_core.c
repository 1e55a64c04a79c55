/*
 * test_core.c - unit tests of the lock table, the canonical key, the
 * option table (with conf/gocd.conf checked against it) and the log's
 * choice of the journal format.
 *
 * Owns: tests of daemon modules that need no network.  Must never: start
 * PostgreSQL or gocd (tests/integration does).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <jansson.h>

#include "../../daemon/config.h"
#include "../../daemon/locktab.h"
#include "../../daemon/log.h"
#include "codec.h"

static int setup_locktab(void **state)
{
	(void)state;
	return locktab_init();
}

static int teardown_locktab(void **state)
{
	(void)state;
	locktab_free();
	return 0;
}

static void test_lock_owner_waiters_release(void **state)
{
	(void)state;
	struct lockwaiter a = {0}, b = {0}, c = {0};
	assert_int_equal(locktab_acquire(&a, "k1", 2, 10), LOCK_OWNED);
	assert_int_equal(locktab_acquire(&b, "k1", 2, 10), LOCK_QUEUED);
	assert_int_equal(locktab_acquire(&c, "k1", 2, 10), LOCK_QUEUED);
	assert_true(locktab_is_owner(&a));
	assert_false(locktab_is_owner(&b));
	assert_int_equal(locktab_nwaiters(&a), 2);

	/* success: waiters leave in FIFO order, then the key is free */
	assert_ptr_equal(locktab_pop_waiter(&a), &b);
	assert_ptr_equal(locktab_pop_waiter(&a), &c);
	assert_null(locktab_pop_waiter(&a));
	assert_null(locktab_release(&a));
	struct locktab_stats st;
	locktab_get_stats(&st);
	assert_int_equal(st.keys, 0);
	assert_int_equal(st.waiters, 0);
	assert_int_equal(locktab_acquire(&a, "k1", 2, 10), LOCK_OWNED);
	assert_null(locktab_release(&a));
}

static void test_lock_failure_hands_over(void **state)
{
	(void)state;
	struct lockwaiter a = {0}, b = {0}, c = {0}, d = {0};
	assert_int_equal(locktab_acquire(&a, "k", 1, 10), LOCK_OWNED);
	assert_int_equal(locktab_acquire(&b, "k", 1, 10), LOCK_QUEUED);
	assert_int_equal(locktab_acquire(&c, "k", 1, 10), LOCK_QUEUED);
	/* owner failed: the next waiter owns the key, the key stays locked */
	assert_ptr_equal(locktab_release(&a), &b);
	assert_true(locktab_is_owner(&b));
	assert_int_equal(locktab_acquire(&d, "k", 1, 10), LOCK_QUEUED);
	/* a waiter that times out leaves without disturbing the others */
	locktab_cancel(&c);
	assert_null(c.ent);
	assert_ptr_equal(locktab_release(&b), &d);
	assert_null(locktab_release(&d));
}

static void test_lock_max_waiters(void **state)
{
	(void)state;
	struct lockwaiter w[4];
	memset(w, 0, sizeof w);
	assert_int_equal(locktab_acquire(&w[0], "x", 1, 2), LOCK_OWNED);
	assert_int_equal(locktab_acquire(&w[1], "x", 1, 2), LOCK_QUEUED);
	assert_int_equal(locktab_acquire(&w[2], "x", 1, 2), LOCK_QUEUED);
	assert_int_equal(locktab_acquire(&w[3], "x", 1, 2), LOCK_FULL);
	assert_null(w[3].ent);
	while (locktab_pop_waiter(&w[0]))
		;
	assert_null(locktab_release(&w[0]));
}

/* Many distinct keys force the table to grow; every key stays findable. */
static void test_lock_many_keys(void **state)
{
	(void)state;
	enum { N = 20000 };
	struct lockwaiter *own = calloc(N, sizeof *own), *dup = calloc(N, sizeof *dup);
	char k[32];
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof k, "key-%d", i);
		assert_int_equal(locktab_acquire(&own[i], k, strlen(k), 5), LOCK_OWNED);
	}
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof k, "key-%d", i);
		assert_int_equal(locktab_acquire(&dup[i], k, strlen(k), 5), LOCK_QUEUED);
	}
	struct locktab_stats st;
	locktab_get_stats(&st);
	assert_int_equal(st.keys, N);
	assert_int_equal(st.waiters, N);
	assert_true(st.buckets >= N);
	for (int i = 0; i < N; i++) {
		assert_ptr_equal(locktab_pop_waiter(&own[i]), &dup[i]);
		assert_null(locktab_release(&own[i]));
	}
	locktab_get_stats(&st);
	assert_int_equal(st.keys, 0);
	free(own);
	free(dup);
}

/* Key texts for a JSON key object, in the given column order. */
static unsigned char *key_of(const char *json, const char *const *cols, int n, size_t *len)
{
	json_t *o = json_loads(json, 0, NULL);
	assert_non_null(o);
	struct evbuffer *b = evbuffer_new();
	size_t offs[8];
	int isnull[8];
	for (int i = 0; i < n; i++) {
		const char *why;
		json_t *v = json_object_get(o, cols[i]);
		offs[i] = evbuffer_get_length(b);
		isnull[i] = json_is_null(v);
		if (!isnull[i])
			assert_int_equal(codec_value_text(v, false, b, &why), 0);
	}
	const char *base = (const char *)evbuffer_pullup(b, -1);
	const char *texts[8];
	for (int i = 0; i < n; i++)
		texts[i] = isnull[i] ? NULL : base + offs[i];
	unsigned char *k = locktab_key(3, texts, n, len);
	evbuffer_free(b);
	json_decref(o);
	return k;
}

static void test_canonical_key(void **state)
{
	(void)state;
	const char *cols[] = {"org", "user"};
	size_t l1, l2;
	/* member order and JSON spelling don't matter */
	unsigned char *a = key_of("{\"org\":1,\"user\":\"ann\"}", cols, 2, &l1);
	unsigned char *b = key_of("{\"user\":\"\\u0061nn\",\"org\":\"1\"}", cols, 2, &l2);
	assert_int_equal(l1, l2);
	assert_memory_equal(a, b, l1);
	free(b);
	/* values differ */
	b = key_of("{\"org\":1,\"user\":\"anne\"}", cols, 2, &l2);
	assert_true(l1 != l2 || memcmp(a, b, l1) != 0);
	free(b);
	free(a);
	/* boundaries between columns are part of the key */
	a = key_of("{\"org\":\"ab\",\"user\":\"c\"}", cols, 2, &l1);
	b = key_of("{\"org\":\"a\",\"user\":\"bc\"}", cols, 2, &l2);
	assert_true(l1 != l2 || memcmp(a, b, l1) != 0);
	free(a);
	free(b);
	/* NULL is not the empty string */
	a = key_of("{\"org\":null,\"user\":\"x\"}", cols, 2, &l1);
	b = key_of("{\"org\":\"\",\"user\":\"x\"}", cols, 2, &l2);
	assert_true(l1 != l2 || memcmp(a, b, l1) != 0);
	free(a);
	free(b);
}

static void test_config_defaults_and_flags(void **state)
{
	(void)state;
	struct config cfg;
	struct cli_flags cli;
	char err[512];
	char *argv[] = {"gocd", "--pool-size=7", "--table=users=email", "--table",
			"app.m=org_id, user_id", "--request_timeout", "250", "-t", NULL};
	assert_int_equal(config_load(&cfg, &cli, 8, argv, err, sizeof err), 0);
	assert_true(cli.test_only);
	assert_string_equal(cfg.listen, "127.0.0.1:7432");
	assert_int_equal(cfg.pool_size, 7);
	assert_int_equal(cfg.request_timeout, 250);
	assert_int_equal(cfg.ntables, 2);
	assert_string_equal(cfg.tables[1].name, "app.m");
	assert_int_equal(cfg.tables[1].ncols, 2);
	assert_string_equal(cfg.tables[1].cols[1], "user_id");
	config_free(&cfg);
	/* a value that looks like an action flag is the option's value: this
	 * token is "-t", and gocd is not in test mode (nor reading "-c"'s file) */
	char *argv2[] = {"gocd", "--auth-token", "-t", "--unix", "-c", "--table=t=k", NULL};
	assert_int_equal(config_load(&cfg, &cli, 6, argv2, err, sizeof err), 0);
	assert_false(cli.test_only);
	assert_null(cli.config_path);
	assert_string_equal(cfg.auth_token, "-t");
	assert_string_equal(cfg.unix_path, "-c");
	config_free(&cfg);
}

static void test_config_errors(void **state)
{
	(void)state;
	struct config cfg;
	struct cli_flags cli;
	char err[512];
	struct {
		const char *arg, *want;
	} cases[] = {
		{"--pool-size=0", "--pool-size: 0 is out of range"},
		{"--pool_size=0", "--pool_size: 0 is out of range"},
		{"--table=u=a,a", "--table \"u\": key column \"a\" given twice"},
		{"-x", "unknown option \"-x\""},
		/* admin_listen is 127.0.0.1:7433 by default */
		{"--listen=0.0.0.0:7433", "would both bind port 7433"},
		{"--listen=127.0.0.1:7433", "would both bind port 7433"},
		{"--listen=[::]:7433", "would both bind port 7433"},
		{"--listen=[::ffff:127.0.0.1]:7433", "would both bind port 7433"},
		{"--pool-size=abc", "not a whole number"},
		{"--request-timeout=99999999999999999999", "out of range"},
		{"--unix-mode=7777777777777777777777", "out of range"},
		{"--table=users", "expected NAME=COL"},
		{"--table=users=", "no key columns"},
		{"--table=u=a,a", "given twice"},
		{"--log-level=loud", "debug, info, warn, error"},
		{"--listen=127.0.0.1:0", "a port from 1 to 65535"},
		{"--postgres=hots=127.0.0.1", "postgres: invalid connection option \"hots\""},
		{"--postgres=host=127.0.0.1 port", "postgres: missing \"=\" after \"port\""},
		{"--postgres=postgresql://[::1", "postgres: end of string reached"},
		{"--no-such=1", "unknown option"},
		{"stray", "unexpected argument"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *argv[] = {"gocd", (char *)cases[i].arg, NULL};
		assert_int_equal(config_load(&cfg, &cli, 2, argv, err, sizeof err), -1);
		if (strstr(err, cases[i].want) == NULL)
			fail_msg("%s: got \"%s\", want \"%s\"", cases[i].arg, err, cases[i].want);
		config_free(&cfg);
	}
	/* another address on the admin port is fine */
	char *ok[] = {"gocd", "--listen=[::1]:7433", "--table=t=k", NULL};
	assert_int_equal(config_load(&cfg, &cli, 3, ok, err, sizeof err), 0);
	config_free(&cfg);
	/* an IPv4 wildcard and an IPv6 address share a port (the kernel
	 * binds both) */
	char *ok2[] = {"gocd", "--listen=0.0.0.0:7433", "--admin-listen=[::1]:7433", "--table=t=k", NULL};
	if (config_load(&cfg, &cli, 4, ok2, err, sizeof err) != 0)
		fail_msg("0.0.0.0 beside [::1]: %s", err);
	config_free(&cfg);
	/* libpq's parse error quotes the piece it choked on, which can be a
	 * password's; that message goes to the journal */
	const char *secret[][2] = {
		{"--postgres=host=x password=S3cret Pw0rd", "Pw0rd"},
		{"--postgres=postgresql://u:S3cret%zz@h/x", "S3cret"},
		{"--postgres=host=x PASSWORD = 'S3cret", "S3cret"},
	};
	for (size_t i = 0; i < sizeof secret / sizeof secret[0]; i++) {
		char *argv[] = {"gocd", (char *)secret[i][0], NULL};
		assert_int_equal(config_load(&cfg, &cli, 2, argv, err, sizeof err), -1);
		if (strstr(err, "postgres:") == NULL || strstr(err, secret[i][1]) != NULL)
			fail_msg("%s: got \"%s\"", secret[i][0], err);
		config_free(&cfg);
	}
	/* libpq takes a bare word as a database name, not as a conninfo */
	char *ok3[] = {"gocd", "--postgres=app", "--table=t=k", NULL};
	if (config_load(&cfg, &cli, 3, ok3, err, sizeof err) != 0)
		fail_msg("postgres = a database name: %s", err);
	config_free(&cfg);
	/* as documented: the later line wins; table lines add up */
	config_defaults(&cfg);
	assert_int_equal(config_parse_text(&cfg, "pool_size = 3\ntable = a=k\npool_size = 5\n"
					   "table = b=k\n", "f", err, sizeof err), 0);
	assert_int_equal(cfg.pool_size, 5);
	assert_int_equal(cfg.ntables, 2);
	config_free(&cfg);
	config_defaults(&cfg);
	assert_int_equal(config_parse_text(&cfg, "pool_size = 3\nbogus line\n", "f", err, sizeof err), -1);
	assert_non_null(strstr(err, "f:2:"));
	config_free(&cfg);
	/* No comments at the end of a line: the rest would be the value. */
	config_defaults(&cfg);
	assert_int_equal(config_parse_text(&cfg, "auth_token = s3cret # rotated\n", "f", err, sizeof err), -1);
	assert_non_null(strstr(err, "f:1: auth_token: a '#' after a space"));
	config_free(&cfg);
	/* A whole value that reads as a comment is one too: "auth_token = #
	 * none yet" made "# none yet" the token, and "unix = # off" a socket
	 * named "# off" in the working directory. */
	config_defaults(&cfg);
	assert_int_equal(config_parse_text(&cfg, "auth_token = # none yet\n", "f", err, sizeof err), -1);
	assert_non_null(strstr(err, "f:1: auth_token: a '#' after a space"));
	config_free(&cfg);
	config_defaults(&cfg);
	assert_int_equal(config_parse_text(&cfg, "unix =\t#off\n", "f", err, sizeof err), -1);
	assert_non_null(strstr(err, "f:1: unix: a '#' after a space"));
	config_free(&cfg);
	config_defaults(&cfg);
	assert_int_equal(config_parse_text(&cfg, "auth_token = 's3cret # kept'\npostgres = password=a#b\n",
					   "f", err, sizeof err), 0);
	assert_string_equal(cfg.auth_token, "s3cret # kept");
	assert_string_equal(cfg.postgres, "password=a#b");
	config_free(&cfg);
	/* no space before the '#': part of the value, as in password=a#b */
	config_defaults(&cfg);
	assert_int_equal(config_parse_text(&cfg, "auth_token=#s3cret\n", "f", err, sizeof err), 0);
	assert_string_equal(cfg.auth_token, "#s3cret");
	config_free(&cfg);
}

static void write_file(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	fclose(f);
}

/* auth_token_file: the first line is the token; mistakes name the file. */
static void test_config_auth_token_file(void **state)
{
	(void)state;
	struct config cfg;
	struct cli_flags cli;
	char err[512], path[64], arg[96];
	snprintf(path, sizeof path, "/tmp/gocd-token-test.%d", (int)getpid());
	snprintf(arg, sizeof arg, "--auth-token-file=%s", path);
	char *argv[] = {"gocd", arg, NULL, NULL};

	write_file(path, "s3cret\r\nsecond line ignored\n", 28);
	assert_int_equal(config_load(&cfg, &cli, 2, argv, err, sizeof err), 0);
	assert_string_equal(cfg.auth_token, "s3cret");
	/* a dump never shows the token */
	char dump[4096] = "";
	FILE *mf = fmemopen(dump, sizeof dump - 1, "w");
	assert_non_null(mf);
	config_dump(&cfg, mf);
	fclose(mf);
	assert_null(strstr(dump, "s3cret"));
	assert_non_null(strstr(dump, "auth_token = (set)"));
	config_free(&cfg);

	write_file(path, "no-newline", 10);
	assert_int_equal(config_load(&cfg, &cli, 2, argv, err, sizeof err), 0);
	assert_string_equal(cfg.auth_token, "no-newline");
	config_free(&cfg);

	struct {
		const char *text;
		size_t len;
		const char *want;
	} bad[] = {
		{"\nafter an empty first line\n", 27, "first line is empty"},
		{"", 0, "first line is empty"},
		{"to\0ken\n", 7, "NUL byte"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		write_file(path, bad[i].text, bad[i].len);
		assert_int_equal(config_load(&cfg, &cli, 2, argv, err, sizeof err), -1);
		if (strstr(err, bad[i].want) == NULL || strstr(err, path) == NULL)
			fail_msg("case %zu: got \"%s\", want \"%s\" and the path", i, err, bad[i].want);
		config_free(&cfg);
	}

	argv[2] = "--auth-token=inline";
	write_file(path, "s3cret\n", 7);
	assert_int_equal(config_load(&cfg, &cli, 3, argv, err, sizeof err), -1);
	assert_non_null(strstr(err, "both set"));
	config_free(&cfg);

	unlink(path);
	assert_int_equal(config_load(&cfg, &cli, 2, argv, err, sizeof err), -1);
	assert_non_null(strstr(err, "cannot open"));
	assert_non_null(strstr(err, path));
	config_free(&cfg);
}

/* The sample file parses, and documents every option of the table. */
static void test_sample_conf_documents_every_option(void **state)
{
	(void)state;
	FILE *f = fopen("conf/gocd.conf", "r");
	assert_non_null(f);
	static char text[1 << 16];
	size_t n = fread(text, 1, sizeof text - 1, f);
	fclose(f);
	text[n] = '\0';
	struct config cfg;
	char err[512];
	config_defaults(&cfg);
	if (config_parse_text(&cfg, text, "conf/gocd.conf", err, sizeof err) != 0)
		fail_msg("%s", err);
	config_free(&cfg);
	for (int i = 0; i < config_option_count(); i++) {
		char pat[80];
		snprintf(pat, sizeof pat, "\n%s =", config_option_name(i));
		char pat2[80];
		snprintf(pat2, sizeof pat2, "# example: %s =", config_option_name(i));
		if (strstr(text, pat) == NULL && strstr(text, pat2) == NULL)
			fail_msg("conf/gocd.conf does not document option %s", config_option_name(i));
	}
}

/* One info line logged with JOURNAL_STREAM=js and stderr sent to a file:
 * the line as written (malloc'd). */
static char *log_line_with(const char *js, bool js_is_the_file)
{
	char path[64];
	snprintf(path, sizeof path, "/tmp/gocd-log-test.%d", (int)getpid());
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	char env[64];
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	if (js_is_the_file)
		snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev,
			 (unsigned long long)st.st_ino);
	else
		snprintf(env, sizeof env, "%s", js);
	setenv("JOURNAL_STREAM", env, 1);
	fflush(stderr);
	int saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	log_init();
	log_msg(LOG_INFO, "hello");
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	unsetenv("JOURNAL_STREAM");
	log_init();
	char *buf = calloc(1, 256);
	assert_non_null(buf);
	assert_true(pread(fd, buf, 255, 0) > 0);
	close(fd);
	unlink(path);
	return buf;
}

/* The journal's format (<6>, no timestamp) only when stderr is the stream
 * JOURNAL_STREAM names: a child of a service with stderr sent to a file
 * inherits the variable and still needs timestamps. */
static void test_log_journal_format_only_on_the_journal_stream(void **state)
{
	(void)state;
	char *line = log_line_with("1:1", false);
	if (strncmp(line, "<6>", 3) == 0)
		fail_msg("stderr is a file, JOURNAL_STREAM another stream: got \"%s\"", line);
	assert_non_null(strstr(line, " info hello"));
	free(line);
	line = log_line_with(NULL, true);
	assert_string_equal(line, "<6>hello\n");
	free(line);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_lock_owner_waiters_release, setup_locktab, teardown_locktab),
		cmocka_unit_test_setup_teardown(test_lock_failure_hands_over, setup_locktab, teardown_locktab),
		cmocka_unit_test_setup_teardown(test_lock_max_waiters, setup_locktab, teardown_locktab),
		cmocka_unit_test_setup_teardown(test_lock_many_keys, setup_locktab, teardown_locktab),
		cmocka_unit_test(test_canonical_key),
		cmocka_unit_test(test_config_defaults_and_flags),
		cmocka_unit_test(test_config_errors),
		cmocka_unit_test(test_config_auth_token_file),
		cmocka_unit_test(test_sample_conf_documents_every_option),
		cmocka_unit_test(test_log_journal_format_only_on_the_journal_stream),
	};
	return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
