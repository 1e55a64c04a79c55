/*
 * harness.h - what an integration test needs around a real gocd: a private
 * PostgreSQL, gocd child processes and a small blocking client.
 *
 * Owns: the lifetime of every process and socket a test creates, so that a
 * failing assertion (cmocka longjmps out of the test) leaves nothing behind.
 * Must never: touch a PostgreSQL or gocd it did not start, listen on anything
 * but loopback, or block without a timeout.
 *
 * Prefixes: tpg_ (the test PostgreSQL), tgocd_ (a gocd child), tclient_ (a
 * client connection), harness_ (per-test bookkeeping).
 */
#ifndef GOC_TESTS_HARNESS_H
#define GOC_TESTS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "codec.h"

/* Default wait for one response line; generous because CI machines stall. */
#define HARNESS_IO_TIMEOUT_MS 15000

/* ---- per-test bookkeeping (cmocka setup/teardown) ------------------------ */

/* Use as the per-test setup and teardown of every integration test. */
int harness_test_setup(void **state);
/* Closes leftover clients and PostgreSQL sessions, kills leftover gocds and
 * restarts a cluster the test left stopped; when the test did not call
 * harness_pass(), prints the log of every gocd the test started. */
int harness_test_teardown(void **state);
/* The last statement of a test: the test got to its end, so gocd logs need
 * not be shown.  (cmocka gives a teardown no way to know the outcome.) */
void harness_pass(void);

/* ---- the private PostgreSQL ---------------------------------------------- */

/*
 * initdb a fresh cluster in a temporary directory and start it on a free
 * loopback port.  Once per test binary (group setup).  Returns 0, or -1 after
 * printing the initdb/server log and removing everything.
 * Environment: PG_BINDIR (default /usr/lib/postgresql/15/bin).
 */
int tpg_start(void) __attribute__((warn_unused_result));
/* Stop immediately and remove the directory; safe to call twice. */
void tpg_destroy(void);
/* Group setup/teardown for suites with one schema: start PostgreSQL and run
 * the schema (one string, run as one multi-statement query), or clean up. */
int tpg_start_with_schema(const char *schema) __attribute__((warn_unused_result));
int harness_group_teardown(void **state);
/* Fast shutdown keeping the data (to provoke `unavailable`). */
int tpg_stop(void) __attribute__((warn_unused_result));
/* Start the stopped cluster again on the same port. */
int tpg_resume(void) __attribute__((warn_unused_result));
int tpg_port(void);
/* "host=127.0.0.1 port=P user=postgres dbname=postgres" */
const char *tpg_conninfo(void);
void tpg_print_log(void);

/* Run SQL (one or more statements); 0, or -1 after printing the error. */
int tpg_exec(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same in another database of the cluster (e.g. one created by a test). */
int tpg_exec_db(const char *dbname, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* First column of the first row as a malloc'd string; NULL on error, no
 * rows or SQL NULL (an error is printed). */
char *tpg_value(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The result of a query returning one integer (e.g. count(*)); -1 on error. */
long long tpg_count(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * A PostgreSQL session that stays open across calls, to hold locks or an
 * open transaction while gocd works (e.g. LOCK TABLE to make a request wait).
 * Sessions left open are closed at test teardown, so a failed test cannot
 * leave a table locked for the next one.
 */
struct tpg_session;
struct tpg_session *tpg_session_open(void);
int tpg_session_exec(struct tpg_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void tpg_session_close(struct tpg_session *s);

/* The harness's scratch directory (logs, unix sockets); created on demand. */
const char *harness_dir(void);

/* ---- gocd child processes ------------------------------------------------ */

struct tgocd {
	pid_t pid;         /* 0 once reaped */
	int port;          /* TCP port it listens on (127.0.0.1) */
	int exit_status;   /* after tgocd_stop: exit code, or -1 (signal/hang) */
	bool stopped;      /* the test stopped or killed it (an exit is expected) */
	char log_path[256];
	struct tgocd *next;
};

/* Free TCP port on 127.0.0.1 (bound and released; good enough for tests). */
int harness_free_port(void);
/* The children of parent, from /proc (up to max, into out); how many. */
int harness_children(pid_t parent, pid_t *out, int max);
/* gocd runs under ASan or valgrind (the Makefile's build-asan and
 * build-valgrind): its memory figures are theirs, not gocd's. */
bool harness_gocd_instrumented(void);
/* A blocking TCP socket connected to 127.0.0.1:port, for tests that need
 * the raw socket (rcvbuf > 0: that SO_RCVBUF); -1 on failure. */
int harness_tcp_fd(int port, int rcvbuf);
/* A socket listening on 127.0.0.1 at a port the kernel picks (*port), for
 * tests that play a server (a PostgreSQL that never answers, a relay);
 * -1 on failure. */
int harness_listen_loopback(int backlog, int *port);
/* Whole file as a malloc'd string ("" when missing). */
char *harness_read_file(const char *path);
/* CPU seconds (user + system) process pid has used, from /proc; -1 if unreadable. */
double harness_cpu_seconds(pid_t pid);

/*
 * Start $GOCD_BUILD/gocd (default build/gocd) with
 * --listen=127.0.0.1:PORT --postgres=<tpg_conninfo()> --admin-listen= and the
 * given extra arguments (NULL-terminated; later flags override these), and
 * wait until the port (and a --unix socket, if given) accepts.  Its stdout
 * and stderr go to a log file.  A kill timer and PR_SET_PDEATHSIG make sure
 * it cannot outlive the test.  Returns NULL (after printing the log) when it
 * exits or does not listen within 20 s.  The harness owns the result; it is
 * freed at test teardown.
 */
struct tgocd *tgocd_start(const char *arg, ...) __attribute__((sentinel));
/* Same, with an argument vector (NULL-terminated). */
struct tgocd *tgocd_startv(const char *const *args);
/* SIGTERM, wait up to 15 s; returns the exit code (0 expected), or -1 when
 * it died of a signal, had to be killed, or its log holds a sanitizer
 * report.  Prints the log unless 0. */
int tgocd_stop(struct tgocd *g);
/* Send a signal without waiting (e.g. SIGTERM while requests are in flight). */
void tgocd_signal(struct tgocd *g, int sig);
/* Wait for an exit the test caused, at most timeout_ms; returns the exit
 * code, or -1 (signal, or still running: then it is killed).  Prints the log
 * unless 0. */
int tgocd_wait(struct tgocd *g, int timeout_ms);
/* SIGKILL and reap (for tests that do not care about the exit). */
void tgocd_kill(struct tgocd *g);
/* True while the process has not exited. */
bool tgocd_alive(struct tgocd *g);
/* Its resident memory (VmRSS) in KiB; -1 when it cannot be read. */
long tgocd_rss_kb(const struct tgocd *g);
/* Any "Name:  N kB" line of /proc/PID/status (field with the colon, e.g.
 * "VmHWM:" for the peak); -1 when it cannot be read. */
long tgocd_status_kb(const struct tgocd *g, const char *field);
void tgocd_print_log(const struct tgocd *g);
/* The log so far as a malloc'd string. */
char *tgocd_log(const struct tgocd *g);
/* The log as soon as it holds needle, or as it is after timeout_ms (the
 * caller checks); malloc'd.  For what gocd logs after an event it was
 * sent (a signal, a reload) and before anything a test can wait on. */
char *tgocd_wait_log(const struct tgocd *g, const char *needle, int timeout_ms);

/*
 * Run gocd with exactly these arguments (no --listen/--postgres added) to
 * completion, at most timeout_ms.  *output (malloc'd, may be NULL) receives
 * stdout+stderr.  Returns the exit code, or -1 on signal/timeout.
 */
int tgocd_run(char **output, int timeout_ms, const char *const *args);

/* ---- the client ---------------------------------------------------------- */

struct tclient;

/* Connect (blocking, 5 s at most); NULL after printing why.  The harness
 * closes any client left open at test teardown. */
struct tclient *tclient_tcp(int port);
struct tclient *tclient_unix(const char *path);
void tclient_close(struct tclient *c);
int tclient_fd(const struct tclient *c);

/* Send all bytes (timeout HARNESS_IO_TIMEOUT_MS); 0 or -1. */
int tclient_send(struct tclient *c, const void *data, size_t len);
int tclient_sendf(struct tclient *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Read one response line (without LF).  Returns 1 with the line in
 * *line and *len (valid until the next read on c), 0 at EOF or connection reset
 * with nothing buffered, -1 on timeout (prints what was read so far).
 */
int tclient_line(struct tclient *c, const char **line, size_t *len, int timeout_ms);
/* The last line read (NUL-terminated), for raw-text checks. */
const char *tclient_last(const struct tclient *c);

/* Read one line and decode it with codec_parse_response; 0 or -1 (timeout,
 * EOF or a line that is not a response: printed).  Free with
 * codec_response_free. */
int tclient_recv(struct tclient *c, struct goc_response *resp, int timeout_ms);
/* Send `request` (LF appended when missing) and receive its response. */
int tclient_call(struct tclient *c, const char *request, struct goc_response *resp);
/* Send {"op":"auth","token":token} (token as JSON string text); its code,
 * GOC_OK when answered ok, GOC_E__COUNT when nothing came back. */
enum goc_err tclient_auth(struct tclient *c, const char *token);

/*
 * Send `len` bytes while reading responses at the same time (so neither side
 * blocks on a full socket buffer), until `nlines` lines arrived.  *lines is a
 * malloc'd array of malloc'd strings (free with harness_free_lines).  Returns
 * the number of lines read (fewer on timeout/EOF).
 */
size_t tclient_exchange(struct tclient *c, const char *data, size_t len,
			size_t nlines, char ***lines, int timeout_ms);
void harness_free_lines(char **lines, size_t n);

/* Expect the peer to close: 0 when EOF/reset comes within timeout with no
 * further data, -1 otherwise (prints the unexpected data). */
int tclient_expect_eof(struct tclient *c, int timeout_ms);

/* Read and discard until EOF/reset, counting LF bytes into *lines; 0 at
 * EOF, -1 when the connection is still open after timeout_ms.  For tests
 * that expect megabytes, where line-by-line reading would be slow. */
int tclient_drain(struct tclient *c, int timeout_ms, size_t *lines);

/* Sleep for ms milliseconds. */
void harness_sleep_ms(int ms);

#endif
