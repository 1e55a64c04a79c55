/*
 * test_ops_install.c - `make install` and what it installs: the tree (files,
 * modes), gocd.conf never overwritten, the systemd unit accepted by
 * `systemd-analyze verify` with no output at all and kept at its exposure
 * score, and the man pages rendered by `man -l` without a warning.
 *
 * Owns: these checks and the temporary directories they install into.
 * Must never: install outside a mkdtemp() directory, touch /etc or the real
 * systemd, or fail for a missing tool (systemd-analyze, man): it skips.
 * Runs from the repository root (like every suite in make check), with
 * GOCD_BUILD naming the build directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

/* Exposure in tenths, as systemd-analyze security --threshold takes it:
 * the unit scores 0.9; fail when a change makes it worse than 1.0. */
#define EXPOSURE_MAX_TENTHS 10

static char tmp[64];

static int setup(void **state)
{
	(void)state;
	snprintf(tmp, sizeof tmp, "/tmp/gocd-install-XXXXXX");
	return mkdtemp(tmp) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
	return system(cmd) == 0 ? 0 : -1;
}

static const char *build_dir(void)
{
	const char *b = getenv("GOCD_BUILD");
	return b && *b ? b : "build";
}

/* Run a shell command; its output goes to *out (malloc'd) when out is not
 * NULL.  Returns the exit status, or -1. */
static int run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run(char **out, const char *fmt, ...)
{
	char cmd[2048], full[2300], log[128];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	snprintf(log, sizeof log, "%s/cmd.out", tmp);
	snprintf(full, sizeof full, "(%s) >'%s' 2>&1", cmd, log);
	int st = system(full);
	if (out) {
		FILE *f = fopen(log, "r");
		size_t cap = 1 << 16, n = 0;
		*out = calloc(1, cap);
		if (f && *out) {
			n = fread(*out, 1, cap - 1, f);
			(*out)[n] = '\0';
		}
		if (f)
			fclose(f);
	}
	return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int have(const char *tool)
{
	return run(NULL, "command -v %s", tool) == 0;
}

/* make install with a staging DESTDIR; make check has built everything
 * already, so "-o all" only copies (and never relinks under a test). */
static void make_install(const char *destdir, const char *extra)
{
	char *out = NULL;
	int rc = run(&out, "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s --no-print-directory "
			   "-o all install BUILD='%s' DESTDIR='%s' %s", build_dir(), destdir, extra);
	if (rc != 0)
		fail_msg("make install failed (%d):\n%s", rc, out ? out : "");
	free(out);
}

static void expect_mode(const char *root, const char *path, mode_t mode)
{
	char full[512];
	struct stat st;
	snprintf(full, sizeof full, "%s%s", root, path);
	if (stat(full, &st) != 0)
		fail_msg("not installed: %s", full);
	if (!S_ISREG(st.st_mode) || (st.st_mode & 07777) != mode)
		fail_msg("%s: mode %04o, expected a regular file with %04o", path,
			 (unsigned)(st.st_mode & 07777), (unsigned)mode);
}

static void test_install_tree_and_modes(void **state)
{
	(void)state;
	char dest[128];
	snprintf(dest, sizeof dest, "%s/stage", tmp);
	make_install(dest, "");
	expect_mode(dest, "/usr/local/sbin/gocd", 0755);
	expect_mode(dest, "/usr/local/bin/goc", 0755);
	expect_mode(dest, "/usr/local/bin/goc-bench", 0755);
	expect_mode(dest, "/usr/local/share/man/man8/gocd.8", 0644);
	expect_mode(dest, "/usr/local/share/man/man1/goc.1", 0644);
	expect_mode(dest, "/usr/local/share/man/man1/goc-bench.1", 0644);
	expect_mode(dest, "/usr/local/lib/systemd/system/gocd.service", 0644);
	expect_mode(dest, "/etc/gocd/gocd.conf", 0644);

	/* the installed gocd runs, and the unit points at it and at the conf */
	char *out = NULL;
	assert_int_equal(run(&out, "'%s/usr/local/sbin/gocd' --version", dest), 0);
	assert_non_null(strstr(out, "gocd "));
	free(out);
	assert_int_equal(run(&out, "grep -x 'ExecStart=/usr/local/sbin/gocd -c /etc/gocd/gocd.conf' "
				   "'%s/usr/local/lib/systemd/system/gocd.service'", dest), 0);
	free(out);
}

static void test_install_keeps_existing_conf(void **state)
{
	(void)state;
	char dest[128], conf[256];
	snprintf(dest, sizeof dest, "%s/stage", tmp);
	make_install(dest, "");
	snprintf(conf, sizeof conf, "%s/etc/gocd/gocd.conf", dest);
	FILE *f = fopen(conf, "w");
	assert_non_null(f);
	fputs("# edited by the operator\ntable = users=email\n", f);
	fclose(f);
	make_install(dest, "");
	char *out = NULL;
	assert_int_equal(run(&out, "cat '%s'", conf), 0);
	assert_string_equal(out, "# edited by the operator\ntable = users=email\n");
	free(out);
	/* the binaries were refreshed all the same */
	expect_mode(dest, "/usr/local/sbin/gocd", 0755);
}

/* PREFIX moves everything but /etc; the unit's ExecStart follows SBINDIR. */
static void test_install_prefix_rewrites_unit(void **state)
{
	(void)state;
	char dest[128];
	snprintf(dest, sizeof dest, "%s/stage", tmp);
	make_install(dest, "PREFIX=/usr");
	expect_mode(dest, "/usr/sbin/gocd", 0755);
	expect_mode(dest, "/usr/share/man/man8/gocd.8", 0644);
	expect_mode(dest, "/usr/lib/systemd/system/gocd.service", 0644);
	expect_mode(dest, "/etc/gocd/gocd.conf", 0644);
	char *out = NULL;
	assert_int_equal(run(&out, "grep -x 'ExecStart=/usr/sbin/gocd -c /etc/gocd/gocd.conf' "
				   "'%s/usr/lib/systemd/system/gocd.service'", dest), 0);
	free(out);
}

/*
 * systemd-analyze verify checks that ExecStart's binary and the
 * Documentation= man page exist, so the unit is installed for real under
 * a temporary PREFIX (SYSCONFDIR too) and verified there.  verify only warns
 * on some mistakes: any output at all is a failure.
 */
static void test_unit_verifies_cleanly(void **state)
{
	(void)state;
	if (!have("systemd-analyze")) {
		print_message("systemd-analyze not installed (package systemd): skipped\n");
		skip();
	}
	char prefix[128], unit[256];
	snprintf(prefix, sizeof prefix, "%s/usr", tmp);
	char extra[512];
	snprintf(extra, sizeof extra, "PREFIX='%s' SYSCONFDIR='%s/etc'", prefix, tmp);
	make_install("", extra);
	snprintf(unit, sizeof unit, "%s/lib/systemd/system/gocd.service", prefix);
	char *out = NULL;
	int rc = run(&out, "cd / && MANPATH='%s/share/man' SYSTEMD_LOG_COLOR=0 "
			   "systemd-analyze verify '%s'", prefix, unit);
	if (rc != 0 || (out && *out))
		fail_msg("systemd-analyze verify (exit %d) said:\n%s", rc, out ? out : "");
	free(out);
}

static void test_unit_exposure_score(void **state)
{
	(void)state;
	if (!have("systemd-analyze")) {
		print_message("systemd-analyze not installed (package systemd): skipped\n");
		skip();
	}
	char *out = NULL;
	int rc = run(&out, "systemd-analyze security --offline=true --no-pager --threshold=%d "
			   "systemd/gocd.service", EXPOSURE_MAX_TENTHS);
	if (rc != 0)
		fail_msg("exposure above %d.%d:\n%s", EXPOSURE_MAX_TENTHS / 10,
			 EXPOSURE_MAX_TENTHS % 10, out ? out : "");
	free(out);
}

static void test_man_pages_render_without_warnings(void **state)
{
	(void)state;
	if (!have("man")) {
		print_message("man not installed (package man-db): skipped\n");
		skip();
	}
	const char *pages[] = {"man/gocd.8", "man/goc.1", "man/goc-bench.1"};
	for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
		char *out = NULL;
		/* stdout discarded: only warnings (stderr) are captured */
		int rc = run(&out, "LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l '%s' 2>&1 >/dev/null",
			     pages[i]);
		if (rc != 0 || (out && *out))
			fail_msg("man -l %s (exit %d) warned:\n%s", pages[i], rc, out ? out : "");
		free(out);
		/* and it says something: the NAME section renders */
		assert_int_equal(run(&out, "MANWIDTH=80 man -l '%s' | grep -q '^NAME'", pages[i]), 0);
		free(out);
	}
}

/* Every option of gocd --help appears in gocd(8). */
static void test_gocd_man_page_documents_every_option(void **state)
{
	(void)state;
	char *help = NULL;
	char bin[256];
	snprintf(bin, sizeof bin, "%s/gocd", build_dir());
	assert_int_equal(run(&help, "'%s' --help", bin), 0);
	char *page = NULL;
	assert_int_equal(run(&page, "cat man/gocd.8"), 0);
	int n = 0;
	for (char *p = strstr(help, "\n  --"); p; p = strstr(p + 1, "\n  --")) {
		char name[64];
		size_t i = 0;
		for (const char *q = p + 5; *q && *q != '=' && i < sizeof name - 1; q++)
			name[i++] = *q == '-' ? '_' : *q;
		name[i] = '\0';
		if (strcmp(name, "config") == 0 || strcmp(name, "test") == 0 ||
		    strcmp(name, "help") == 0 || strcmp(name, "version") == 0)
			continue;
		char want[96];
		snprintf(want, sizeof want, ".BI %s ", name);
		if (strstr(page, want) == NULL)
			fail_msg("man/gocd.8 does not document option %s", name);
		n++;
	}
	assert_true(n >= 15);
	free(help);
	free(page);
}

/*
 * Every --flag that `prog --help` lists at the start of a line (after
 * spaces) appears in its man page (as roff, "\-\-flag").
 */
static void check_flags_documented(const char *prog, const char *page_path)
{
	char *help = NULL, *page = NULL;
	assert_int_equal(run(&help, "'%s/%s' --help", build_dir(), prog), 0);
	assert_int_equal(run(&page, "cat '%s'", page_path), 0);
	int n = 0;
	for (char *line = help; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
		const char *p = line;
		while (*p == ' ')
			p++;
		if (p == line || strncmp(p, "--", 2) != 0 || p[2] == ' ')
			continue;
		char flag[64], want[160];
		size_t i = 0;
		for (p += 2; *p && (*p == '-' || *p == '_' || (*p >= 'a' && *p <= 'z')) && i < sizeof flag - 1; p++)
			flag[i++] = *p;
		flag[i] = '\0';
		/* roff escapes each '-' of the flag */
		size_t w = (size_t)snprintf(want, sizeof want, "\\-\\-");
		for (i = 0; flag[i] && w + 3 < sizeof want; i++) {
			if (flag[i] == '-') {
				want[w++] = '\\';
				want[w++] = '-';
			} else {
				want[w++] = flag[i];
			}
		}
		want[w] = '\0';
		if (strstr(page, want) == NULL)
			fail_msg("%s does not document --%s (from %s --help)", page_path, flag, prog);
		n++;
	}
	assert_true(n >= 5);
	free(help);
	free(page);
}

static void test_client_man_pages_document_every_flag(void **state)
{
	(void)state;
	check_flags_documented("goc", "man/goc.1");
	check_flags_documented("goc-bench", "man/goc-bench.1");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_install_tree_and_modes),
		T(test_install_keeps_existing_conf),
		T(test_install_prefix_rewrites_unit),
		T(test_unit_verifies_cleanly),
		T(test_unit_exposure_score),
		T(test_man_pages_render_without_warnings),
		T(test_gocd_man_page_documents_every_option),
		T(test_client_man_pages_document_every_flag),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
