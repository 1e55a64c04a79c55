/*
 * harness.c - private PostgreSQL, gocd children and a blocking client for
 * the integration tests.
 *
 * Owns: every process, file and socket the integration tests create.  A
 * scratch directory (/tmp/gocd-test-XXXXXX) holds the cluster, the logs and
 * unix sockets; a detached "reaper" process removes it and stops the cluster
 * when the test binary dies, however it dies (a timeout's SIGKILL included).
 * Must never: signal a process it did not start (only PIDs it forked), bind
 * anything but 127.0.0.1, wait without a deadline, or talk to a PostgreSQL
 * other than its own.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "harness.h"

/* A gocd that outlives this many seconds gets SIGALRM (alarm() survives
 * exec), so a hung daemon cannot hold up CI longer than the suite timeout. */
#define GOCD_KILL_AFTER_S 280
#define GOCD_START_TIMEOUT_MS 20000
#define GOCD_STOP_TIMEOUT_MS 15000
#define PG_CMD_TIMEOUT_MS 120000
/* Logs bigger than this are printed from their tail: the end is what failed. */
#define LOG_PRINT_MAX (64 * 1024)

static char g_dir[64];       /* scratch directory, "" until created */
static char g_pgdir[96];     /* g_dir/pg: data, socket and server log */
static int g_pgport;
static char g_conninfo[128];
static bool g_pg_created;    /* initdb done; cluster belongs to us */
static bool g_pg_running;
static int g_reaper_fd = -1; /* write end; the reaper waits for its EOF */
static int g_gocd_seq;
static bool g_passed;

static struct tgocd *g_gocds;      /* started by the current test */
static struct tclient *g_clients;  /* open clients of the current test */

struct tclient {
	int fd;
	char *buf;       /* bytes received, not yet consumed */
	size_t len, cap;
	size_t consumed; /* bytes of the line last returned, dropped on next read */
	char *last;      /* copy of the last line */
	struct tclient *next;
};

/* ---- small utilities ----------------------------------------------------- */

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void harness_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static char *vformat(const char *fmt, va_list ap)
{
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0)
		return NULL;
	return s;
}

/* Whole file as a malloc'd string ("" when missing). */
char *harness_read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return strdup("");
	size_t cap = 4096, len = 0;
	char *s = malloc(cap);
	size_t n;
	while (s && (n = fread(s + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len < 2) {
			char *t = realloc(s, cap * 2);
			if (t == NULL) {
				free(s);
				s = NULL;
				break;
			}
			s = t;
			cap *= 2;
		}
	}
	fclose(f);
	if (s)
		s[len] = '\0';
	return s;
}

double harness_cpu_seconds(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	char *st = harness_read_file(path);
	if (st == NULL)
		return -1;
	unsigned long ut = 0, stime = 0;
	char *p = strrchr(st, ')'); /* the command name may hold spaces */
	int ok = p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
			     &stime) == 2;
	free(st);
	if (!ok)
		return -1;
	return (double)(ut + stime) / (double)sysconf(_SC_CLK_TCK);
}

static void print_file(const char *title, const char *path)
{
	char *s = harness_read_file(path);
	if (s == NULL)
		return;
	size_t len = strlen(s);
	const char *from = s;
	if (len > LOG_PRINT_MAX) {
		from = s + len - LOG_PRINT_MAX;
		fprintf(stderr, "---- %s (%s), last %d bytes ----\n", title, path, LOG_PRINT_MAX);
	} else {
		fprintf(stderr, "---- %s (%s) ----\n", title, path);
	}
	fputs(from, stderr);
	if (len && s[len - 1] != '\n')
		fputc('\n', stderr);
	fprintf(stderr, "---- end of %s ----\n", title);
	free(s);
}

/*
 * Wait for pid at most timeout_ms.  Returns 0 with *status, or -1 when it is
 * still running.  Polling keeps this free of SIGCHLD handlers, which cmocka
 * and libpq would not expect.
 */
static int wait_pid(pid_t pid, int timeout_ms, int *status)
{
	long long deadline = now_ms() + timeout_ms;
	for (;;) {
		pid_t r = waitpid(pid, status, WNOHANG);
		if (r == pid)
			return 0;
		if (r < 0 && errno != EINTR) {
			*status = 0;
			return 0; /* not our child any more: nothing to wait for */
		}
		if (now_ms() >= deadline)
			return -1;
		harness_sleep_ms(10);
	}
}

/* Point stdin at /dev/null and stdout+stderr at path (or /dev/null). */
static void child_redirect(const char *path)
{
	int in = open("/dev/null", O_RDONLY);
	int out = path ? open(path, O_WRONLY | O_CREAT | O_APPEND, 0644)
		       : open("/dev/null", O_WRONLY);
	if (in >= 0)
		dup2(in, 0);
	if (out >= 0) {
		dup2(out, 1);
		dup2(out, 2);
	}
	if (in > 2)
		close(in);
	if (out > 2)
		close(out);
}

/*
 * Run argv to completion (at most timeout_ms) with output appended to
 * out_path.  With as_pg and when root, runs it as user postgres: the server
 * refuses to run as root.  Returns the exit code, or -1.
 */
static int run_cmd(const char *const *argv, bool as_pg, const char *out_path, int timeout_ms)
{
	const char *full[32];
	size_t n = 0;
	if (as_pg && geteuid() == 0) {
		full[n++] = "runuser";
		full[n++] = "-u";
		full[n++] = "postgres";
		full[n++] = "--";
	}
	for (size_t i = 0; argv[i] && n < 31; i++)
		full[n++] = argv[i];
	full[n] = NULL;

	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "harness: fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		child_redirect(out_path);
		/* postgres must be able to stat its working directory */
		if (chdir(g_dir[0] ? g_dir : "/") != 0 && chdir("/") != 0)
			_exit(126);
		execvp(full[0], (char *const *)full);
		fprintf(stderr, "harness: exec %s: %s\n", full[0], strerror(errno));
		_exit(127);
	}
	int status;
	if (wait_pid(pid, timeout_ms, &status) != 0) {
		fprintf(stderr, "harness: %s did not finish within %d ms; killing it\n",
			argv[0], timeout_ms);
		kill(pid, SIGKILL);
		wait_pid(pid, 5000, &status);
		return -1;
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return -1;
}

/* ---- scratch directory and reaper ---------------------------------------- */

static void pg_ctl_argv_stop(const char **argv, char *bin, size_t binsz,
			     char *data, size_t datasz, const char *mode);

/*
 * The reaper is a detached process (own session, so a timeout killing our
 * process group leaves it alive) that blocks on a pipe until this binary is
 * gone, then stops the cluster and removes the directory if a normal
 * teardown did not.  Its stdio is /dev/null so it never holds the pipe that
 * run-suites.sh reads.
 */
static void reaper_start(void)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0)
		return;
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return;
	}
	if (pid == 0) {
		setsid();
		child_redirect(NULL);
		for (int fd = 3; fd < 1024; fd++)
			if (fd != p[0])
				close(fd);
		/* Its own death must not be tied to cmocka's handlers. */
		signal(SIGINT, SIG_IGN);
		signal(SIGTERM, SIG_IGN);
		char c;
		while (read(p[0], &c, 1) != 0 && errno == EINTR)
			;
		char pidfile[400];
		snprintf(pidfile, sizeof pidfile, "%s/data/postmaster.pid", g_pgdir);
		if (g_pgdir[0] && access(pidfile, F_OK) == 0) {
			const char *argv[16];
			char bin[300], data[400];
			pg_ctl_argv_stop(argv, bin, sizeof bin, data, sizeof data, "immediate");
			run_cmd(argv, true, NULL, 60000);
		}
		const char *rm[] = { "rm", "-rf", g_dir, NULL };
		if (g_dir[0])
			run_cmd(rm, false, NULL, 60000);
		_exit(0);
	}
	close(p[0]);
	g_reaper_fd = p[1];
}

const char *harness_dir(void)
{
	if (g_dir[0])
		return g_dir;
	char tmpl[] = "/tmp/gocd-test-XXXXXX";
	if (mkdtemp(tmpl) == NULL) {
		fprintf(stderr, "harness: mkdtemp: %s\n", strerror(errno));
		abort();
	}
	/* 0755: user postgres must traverse it to reach its own pg/ below. */
	chmod(tmpl, 0755);
	snprintf(g_dir, sizeof g_dir, "%s", tmpl);
	snprintf(g_pgdir, sizeof g_pgdir, "%s/pg", g_dir);
	reaper_start();
	return g_dir;
}

/* ---- PostgreSQL ---------------------------------------------------------- */

static const char *pg_bindir(void)
{
	const char *d = getenv("PG_BINDIR");
	return d && *d ? d : "/usr/lib/postgresql/15/bin";
}

static void pg_ctl_argv_stop(const char **argv, char *bin, size_t binsz,
			     char *data, size_t datasz, const char *mode)
{
	snprintf(bin, binsz, "%s/pg_ctl", pg_bindir());
	snprintf(data, datasz, "%s/data", g_pgdir);
	size_t n = 0;
	argv[n++] = bin;
	argv[n++] = "-D";
	argv[n++] = data;
	argv[n++] = "-m";
	argv[n++] = mode;
	argv[n++] = "-w";
	argv[n++] = "-t";
	argv[n++] = "60";
	argv[n++] = "stop";
	argv[n] = NULL;
}

int tpg_port(void)
{
	return g_pgport;
}

const char *tpg_conninfo(void)
{
	return g_conninfo;
}

void tpg_print_log(void)
{
	char path[400];
	snprintf(path, sizeof path, "%s/server.log", g_pgdir);
	print_file("PostgreSQL server log", path);
}

int tpg_resume(void)
{
	char bin[300], data[400], log[400], opts[600], out[400];
	snprintf(bin, sizeof bin, "%s/pg_ctl", pg_bindir());
	snprintf(data, sizeof data, "%s/data", g_pgdir);
	snprintf(log, sizeof log, "%s/server.log", g_pgdir);
	snprintf(out, sizeof out, "%s/pg_ctl.log", g_dir);
	/* fsync off: a test cluster is thrown away; max_connections leaves room
	 * for two gocd pools plus the tests' own sessions. */
	snprintf(opts, sizeof opts,
		 "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off "
		 "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
		 g_pgport, g_pgdir);
	const char *argv[] = { bin, "-D", data, "-l", log, "-w", "-t", "60", "-o", opts,
			       "start", NULL };
	if (run_cmd(argv, true, out, PG_CMD_TIMEOUT_MS) != 0) {
		fprintf(stderr, "harness: pg_ctl start failed (port %d)\n", g_pgport);
		print_file("pg_ctl output", out);
		tpg_print_log();
		return -1;
	}
	g_pg_running = true;
	return 0;
}

int tpg_stop(void)
{
	const char *argv[16];
	char bin[300], data[400], out[400];
	snprintf(out, sizeof out, "%s/pg_ctl.log", g_dir);
	pg_ctl_argv_stop(argv, bin, sizeof bin, data, sizeof data, "fast");
	if (run_cmd(argv, true, out, PG_CMD_TIMEOUT_MS) != 0) {
		fprintf(stderr, "harness: pg_ctl stop failed\n");
		print_file("pg_ctl output", out);
		return -1;
	}
	g_pg_running = false;
	return 0;
}

void tpg_destroy(void)
{
	if (g_pg_created && g_pg_running) {
		const char *argv[16];
		char bin[300], data[400];
		pg_ctl_argv_stop(argv, bin, sizeof bin, data, sizeof data, "immediate");
		run_cmd(argv, true, NULL, PG_CMD_TIMEOUT_MS);
	}
	g_pg_running = false;
	g_pg_created = false;
	if (g_dir[0]) {
		const char *rm[] = { "rm", "-rf", g_dir, NULL };
		run_cmd(rm, false, NULL, 60000);
	}
	/* Nothing left for the reaper: let it go. */
	if (g_reaper_fd >= 0) {
		close(g_reaper_fd);
		g_reaper_fd = -1;
	}
	g_dir[0] = '\0';
	g_pgdir[0] = '\0';
}

int tpg_start(void)
{
	harness_dir();
	if (mkdir(g_pgdir, 0700) != 0) {
		fprintf(stderr, "harness: mkdir %s: %s\n", g_pgdir, strerror(errno));
		return -1;
	}
	if (geteuid() == 0) {
		struct passwd *pw = getpwnam("postgres");
		if (pw == NULL) {
			fprintf(stderr, "harness: running as root but there is no user postgres\n");
			tpg_destroy();
			return -1;
		}
		if (chown(g_pgdir, pw->pw_uid, pw->pw_gid) != 0) {
			fprintf(stderr, "harness: chown %s: %s\n", g_pgdir, strerror(errno));
			tpg_destroy();
			return -1;
		}
	}
	g_pgport = harness_free_port();
	snprintf(g_conninfo, sizeof g_conninfo,
		 "host=127.0.0.1 port=%d user=postgres dbname=postgres", g_pgport);

	char bin[300], data[400], out[400];
	snprintf(bin, sizeof bin, "%s/initdb", pg_bindir());
	snprintf(data, sizeof data, "%s/data", g_pgdir);
	snprintf(out, sizeof out, "%s/initdb.log", g_dir);
	/* UTF8 whatever the environment's locale: the tests send non-ASCII
	 * text and \u escapes into jsonb. */
	const char *argv[] = { bin, "-D", data, "-A", "trust", "--nosync", "-U", "postgres",
			       "-E", "UTF8", "--no-locale", NULL };
	if (run_cmd(argv, true, out, PG_CMD_TIMEOUT_MS) != 0) {
		fprintf(stderr, "harness: initdb failed (PG_BINDIR=%s)\n", pg_bindir());
		print_file("initdb output", out);
		tpg_destroy();
		return -1;
	}
	g_pg_created = true;
	if (tpg_resume() != 0) {
		tpg_destroy();
		return -1;
	}
	long long one = tpg_count("SELECT 1");
	if (one != 1) {
		fprintf(stderr, "harness: PostgreSQL started but does not answer\n");
		tpg_print_log();
		tpg_destroy();
		return -1;
	}
	return 0;
}

static void notice_quiet(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* Run one SQL text in dbname (NULL: postgres); returns the result (caller
 * clears) or NULL after printing the error. */
static PGresult *pg_query_db(const char *dbname, const char *sql)
{
	char conninfo[256];
	if (dbname)
		snprintf(conninfo, sizeof conninfo,
			 "host=127.0.0.1 port=%d user=postgres dbname=%s", g_pgport, dbname);
	else
		snprintf(conninfo, sizeof conninfo, "%s", g_conninfo);
	PGconn *c = PQconnectdb(conninfo);
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "harness: connect to test PostgreSQL: %s", PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	/* DROP ... IF EXISTS notices are not test output. */
	PQsetNoticeProcessor(c, notice_quiet, NULL);
	PGresult *r = PQexec(c, sql);
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		fprintf(stderr, "harness: SQL failed: %s\n  %s", sql, PQresultErrorMessage(r));
		PQclear(r);
		r = NULL;
	}
	PQfinish(c);
	return r;
}

static PGresult *pg_query(const char *sql)
{
	return pg_query_db(NULL, sql);
}

int tpg_exec_db(const char *dbname, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *sql = vformat(fmt, ap);
	va_end(ap);
	if (sql == NULL)
		return -1;
	PGresult *r = pg_query_db(dbname, sql);
	free(sql);
	if (r == NULL)
		return -1;
	PQclear(r);
	return 0;
}

int tpg_exec(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *sql = vformat(fmt, ap);
	va_end(ap);
	if (sql == NULL)
		return -1;
	PGresult *r = pg_query(sql);
	free(sql);
	if (r == NULL)
		return -1;
	PQclear(r);
	return 0;
}

static char *vvalue(const char *fmt, va_list ap)
{
	char *sql = vformat(fmt, ap);
	if (sql == NULL)
		return NULL;
	PGresult *r = pg_query(sql);
	char *v = NULL;
	if (r == NULL) {
		/* printed */
	} else if (PQntuples(r) < 1 || PQnfields(r) < 1) {
		fprintf(stderr, "harness: query returned no rows: %s\n", sql);
	} else if (!PQgetisnull(r, 0, 0)) {
		v = strdup(PQgetvalue(r, 0, 0));
	}
	if (r)
		PQclear(r);
	free(sql);
	return v;
}

char *tpg_value(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *v = vvalue(fmt, ap);
	va_end(ap);
	return v;
}

long long tpg_count(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *v = vvalue(fmt, ap);
	va_end(ap);
	if (v == NULL)
		return -1;
	char *end;
	long long n = strtoll(v, &end, 10);
	if (*end != '\0') {
		fprintf(stderr, "harness: expected an integer, got \"%s\"\n", v);
		n = -1;
	}
	free(v);
	return n;
}

struct tpg_session {
	PGconn *pg;
	struct tpg_session *next;
};

static struct tpg_session *g_sessions; /* open sessions of the current test */

struct tpg_session *tpg_session_open(void)
{
	PGconn *c = PQconnectdb(g_conninfo);
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "harness: session connect: %s", PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	PQsetNoticeProcessor(c, notice_quiet, NULL);
	struct tpg_session *s = calloc(1, sizeof *s);
	if (s == NULL) {
		PQfinish(c);
		return NULL;
	}
	s->pg = c;
	s->next = g_sessions;
	g_sessions = s;
	return s;
}

int tpg_session_exec(struct tpg_session *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *sql = vformat(fmt, ap);
	va_end(ap);
	if (sql == NULL)
		return -1;
	PGresult *r = PQexec(s->pg, sql);
	ExecStatusType st = PQresultStatus(r);
	int rc = 0;
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		fprintf(stderr, "harness: SQL failed: %s\n  %s", sql, PQresultErrorMessage(r));
		rc = -1;
	}
	PQclear(r);
	free(sql);
	return rc;
}

void tpg_session_close(struct tpg_session *s)
{
	if (s == NULL)
		return;
	for (struct tpg_session **pp = &g_sessions; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	/* PQfinish ends the session; PostgreSQL rolls back and drops its locks. */
	PQfinish(s->pg);
	free(s);
}

/* ---- gocd ---------------------------------------------------------------- */

int harness_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t alen = sizeof a;
	int port = -1;
	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &alen) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	if (port < 0) {
		fprintf(stderr, "harness: no free port: %s\n", strerror(errno));
		abort();
	}
	return port;
}

int harness_listen_loopback(int backlog, int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof a;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, backlog) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
		close(fd);
		return -1;
	}
	*port = ntohs(a.sin_port);
	return fd;
}

int harness_tcp_fd(int port, int rcvbuf)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	if (rcvbuf > 0) /* before connect, so the window starts small */
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static const char *gocd_bin(char *buf, size_t size)
{
	const char *b = getenv("GOCD_BUILD");
	snprintf(buf, size, "%s/gocd", b && *b ? b : "build");
	return buf;
}

int harness_children(pid_t parent, pid_t *out, int max)
{
	DIR *d = opendir("/proc");
	if (d == NULL)
		return 0;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL && n < max) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);
		if (*end != '\0' || pid <= 0)
			continue;
		char path[64], buf[512];
		snprintf(path, sizeof path, "/proc/%ld/stat", pid);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue;
		size_t len = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[len] = '\0';
		/* "pid (comm) state ppid ...": comm may hold spaces, so parse
		 * from the last ')'. */
		char *rp = strrchr(buf, ')');
		long ppid;
		char state;
		if (rp && sscanf(rp + 1, " %c %ld", &state, &ppid) == 2 && ppid == parent)
			out[n++] = (pid_t)pid;
	}
	closedir(d);
	return n;
}

bool harness_gocd_instrumented(void)
{
	const char *b = getenv("GOCD_BUILD");
	return b && (strstr(b, "asan") || strstr(b, "valgrind"));
}

/* fork + exec gocd with argv (argv[0] is the binary); output to log_path. */
static pid_t gocd_spawn(const char *const *argv, const char *log_path)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "harness: fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		/* Dies with the test binary, and on its own after a while. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(126);
		child_redirect(log_path);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		signal(SIGALRM, SIG_DFL);
		alarm(GOCD_KILL_AFTER_S);
		execv(argv[0], (char *const *)argv);
		fprintf(stderr, "harness: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

static bool port_accepts(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
	close(fd);
	return ok;
}

static bool unix_accepts(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
	bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
	close(fd);
	return ok;
}

static void gocd_note_exit(struct tgocd *g, int status)
{
	g->pid = 0;
	if (WIFEXITED(status)) {
		g->exit_status = WEXITSTATUS(status);
	} else {
		g->exit_status = -1;
		if (WIFSIGNALED(status))
			fprintf(stderr, "harness: gocd (port %d) died of signal %d (%s)\n", g->port,
				WTERMSIG(status), strsignal(WTERMSIG(status)));
	}
}

struct tgocd *tgocd_startv(const char *const *args)
{
	char bin[300], listen[64], pg[200];
	const char *argv[64];
	size_t n = 0;

	struct tgocd *g = calloc(1, sizeof *g);
	if (g == NULL)
		return NULL;
	g->port = harness_free_port();
	snprintf(g->log_path, sizeof g->log_path, "%s/gocd-%d.log", harness_dir(), ++g_gocd_seq);
	g->next = g_gocds;
	g_gocds = g;

	snprintf(listen, sizeof listen, "--listen=127.0.0.1:%d", g->port);
	snprintf(pg, sizeof pg, "--postgres=%s", g_conninfo);
	argv[n++] = gocd_bin(bin, sizeof bin);
	argv[n++] = listen;
	argv[n++] = pg;
	/* No admin HTTP listener unless the test asks for one (a later
	 * --admin-listen wins): the default 127.0.0.1:7433 is a fixed port that
	 * other gocds on this machine may own. */
	argv[n++] = "--admin-listen=";
	/* gocd may open its listeners one after the other: ready means every
	 * one it was given accepts, the unix socket included. */
	const char *unix_path = NULL;
	for (size_t i = 0; args && args[i] && n < 63; i++) {
		argv[n++] = args[i];
		if (strncmp(args[i], "--unix=", 7) == 0 && args[i][7])
			unix_path = args[i] + 7;
	}
	argv[n] = NULL;

	/* Say how it was started: the first line of its log. */
	FILE *f = fopen(g->log_path, "w");
	if (f) {
		fputs("# harness started:", f);
		for (size_t i = 0; argv[i]; i++)
			fprintf(f, " '%s'", argv[i]);
		fputc('\n', f);
		fclose(f);
	}
	if (access(bin, X_OK) != 0) {
		fprintf(stderr, "harness: %s is not built (set GOCD_BUILD?)\n", bin);
		g->stopped = true; /* never ran: nothing more to report */
		return NULL;
	}
	g->pid = gocd_spawn(argv, g->log_path);
	if (g->pid < 0) {
		g->pid = 0;
		g->stopped = true;
		return NULL;
	}

	long long deadline = now_ms() + GOCD_START_TIMEOUT_MS;
	for (;;) {
		int status;
		if (waitpid(g->pid, &status, WNOHANG) == g->pid) {
			gocd_note_exit(g, status);
			fprintf(stderr, "harness: gocd exited with %d during startup\n",
				g->exit_status);
			tgocd_print_log(g);
			return NULL;
		}
		if (port_accepts(g->port) && (unix_path == NULL || unix_accepts(unix_path)))
			return g;
		if (now_ms() >= deadline) {
			fprintf(stderr, "harness: gocd not listening on %d after %d ms\n",
				g->port, GOCD_START_TIMEOUT_MS);
			tgocd_kill(g);
			tgocd_print_log(g);
			return NULL;
		}
		harness_sleep_ms(20);
	}
}

struct tgocd *tgocd_start(const char *arg, ...)
{
	const char *args[64];
	size_t n = 0;
	va_list ap;
	va_start(ap, arg);
	for (const char *a = arg; a && n < 63; a = va_arg(ap, const char *))
		args[n++] = a;
	va_end(ap);
	args[n] = NULL;
	return tgocd_startv(args);
}

bool tgocd_alive(struct tgocd *g)
{
	if (g->pid == 0)
		return false;
	int status;
	if (waitpid(g->pid, &status, WNOHANG) == g->pid) {
		gocd_note_exit(g, status);
		return false;
	}
	return true;
}

long tgocd_status_kb(const struct tgocd *g, const char *field)
{
	char path[64], line[256];
	size_t n = strlen(field);
	snprintf(path, sizeof path, "/proc/%d/status", (int)g->pid);
	FILE *f = g->pid ? fopen(path, "r") : NULL;
	if (f == NULL)
		return -1;
	long kb = -1;
	while (fgets(line, sizeof line, f))
		if (strncmp(line, field, n) == 0)
			kb = strtol(line + n, NULL, 10);
	fclose(f);
	return kb;
}

long tgocd_rss_kb(const struct tgocd *g)
{
	return tgocd_status_kb(g, "VmRSS:");
}

static bool log_has_sanitizer_report(const struct tgocd *g)
{
	static const char *const marks[] = {
		"runtime error:", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
		"WARNING: AddressSanitizer", "ThreadSanitizer", "==ERROR",
	};
	char *log = harness_read_file(g->log_path);
	bool found = false;
	for (size_t i = 0; log && i < sizeof marks / sizeof marks[0]; i++)
		if (strstr(log, marks[i]))
			found = true;
	free(log);
	return found;
}

void tgocd_signal(struct tgocd *g, int sig)
{
	if (g->pid > 0)
		kill(g->pid, sig);
}

int tgocd_stop(struct tgocd *g)
{
	tgocd_signal(g, SIGTERM);
	return tgocd_wait(g, GOCD_STOP_TIMEOUT_MS);
}

int tgocd_wait(struct tgocd *g, int timeout_ms)
{
	g->stopped = true;
	if (g->pid == 0)
		return g->exit_status;
	int status;
	if (wait_pid(g->pid, timeout_ms, &status) != 0) {
		fprintf(stderr, "harness: gocd (port %d) still running %d ms after SIGTERM; killing it\n",
			g->port, timeout_ms);
		kill(g->pid, SIGKILL);
		wait_pid(g->pid, 5000, &status);
		g->pid = 0;
		g->exit_status = -1;
	} else {
		gocd_note_exit(g, status);
	}
	if (g->exit_status != 0) {
		fprintf(stderr, "harness: gocd (port %d) exited with %d after SIGTERM, expected 0\n",
			g->port, g->exit_status);
		tgocd_print_log(g);
	} else if (log_has_sanitizer_report(g)) {
		/* A sanitizer report fails the test even when the exit was clean
		 * (e.g. a recoverable UBSan finding). */
		fprintf(stderr, "harness: gocd (port %d) log has a sanitizer report\n", g->port);
		tgocd_print_log(g);
		g->exit_status = -1;
	}
	return g->exit_status;
}

void tgocd_kill(struct tgocd *g)
{
	g->stopped = true;
	if (g->pid == 0)
		return;
	int status;
	kill(g->pid, SIGKILL);
	wait_pid(g->pid, 5000, &status);
	g->pid = 0;
	g->exit_status = -1;
}

void tgocd_print_log(const struct tgocd *g)
{
	char title[64];
	snprintf(title, sizeof title, "gocd log, port %d", g->port);
	print_file(title, g->log_path);
}

char *tgocd_log(const struct tgocd *g)
{
	return harness_read_file(g->log_path);
}

char *tgocd_wait_log(const struct tgocd *g, const char *needle, int timeout_ms)
{
	char *log = tgocd_log(g);
	for (int waited = 0; strstr(log, needle) == NULL && waited < timeout_ms; waited += 20) {
		harness_sleep_ms(20);
		free(log);
		log = tgocd_log(g);
	}
	return log;
}

int tgocd_run(char **output, int timeout_ms, const char *const *args)
{
	char bin[300], out[300];
	const char *argv[64];
	size_t n = 0;
	argv[n++] = gocd_bin(bin, sizeof bin);
	for (size_t i = 0; args && args[i] && n < 63; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	snprintf(out, sizeof out, "%s/gocd-run-%d.log", harness_dir(), ++g_gocd_seq);
	if (output)
		*output = NULL;

	pid_t pid = gocd_spawn(argv, out);
	if (pid < 0)
		return -1;
	int status, rc;
	if (wait_pid(pid, timeout_ms, &status) != 0) {
		fprintf(stderr, "harness: '%s' still running after %d ms; killing it\n",
			argv[1] ? argv[1] : argv[0], timeout_ms);
		kill(pid, SIGKILL);
		wait_pid(pid, 5000, &status);
		rc = -1;
	} else {
		rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	}
	if (output)
		*output = harness_read_file(out);
	unlink(out);
	return rc;
}

/* ---- per-test bookkeeping ------------------------------------------------ */

int harness_test_setup(void **state)
{
	(void)state;
	g_passed = false;
	return 0;
}

void harness_pass(void)
{
	g_passed = true;
}

int harness_test_teardown(void **state)
{
	(void)state;
	while (g_clients)
		tclient_close(g_clients);
	while (g_sessions)
		tpg_session_close(g_sessions);
	struct tgocd *g = g_gocds;
	g_gocds = NULL;
	while (g) {
		struct tgocd *next = g->next;
		bool was_alive = tgocd_alive(g);
		if (was_alive)
			tgocd_kill(g);
		else if (!g->stopped)
			fprintf(stderr, "harness: gocd (port %d) had exited on its own (status %d) "
				"before the test ended\n", g->port, g->exit_status);
		if (!g_passed) {
			/* The test stopped early: its gocd's view is the evidence. */
			tgocd_print_log(g);
		}
		free(g);
		g = next;
	}
	/* A test that failed while the cluster was stopped must not take the
	 * following tests down with it. */
	if (g_pg_created && !g_pg_running) {
		fprintf(stderr, "harness: restarting PostgreSQL stopped by a failed test\n");
		if (tpg_resume() != 0)
			return -1;
	}
	return 0;
}

/* ---- client -------------------------------------------------------------- */

static struct tclient *client_new(int fd)
{
	struct tclient *c = calloc(1, sizeof *c);
	if (c == NULL) {
		close(fd);
		return NULL;
	}
	c->fd = fd;
	c->next = g_clients;
	g_clients = c;
	return c;
}

/* Non-blocking connect with a 5 s deadline. */
static int connect_fd(int fd, const struct sockaddr *a, socklen_t alen)
{
	if (connect(fd, a, alen) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EAGAIN)
		return -1;
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	if (poll(&p, 1, 5000) != 1) {
		errno = ETIMEDOUT;
		return -1;
	}
	int err = 0;
	socklen_t elen = sizeof err;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
		return -1;
	if (err != 0) {
		errno = err;
		return -1;
	}
	return 0;
}

struct tclient *tclient_tcp(int port)
{
	/* CLOEXEC: a gocd started later must not inherit (and keep open) our
	 * client sockets. */
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return NULL;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect_fd(fd, (struct sockaddr *)&a, sizeof a) != 0) {
		fprintf(stderr, "harness: connect 127.0.0.1:%d: %s\n", port, strerror(errno));
		close(fd);
		return NULL;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return client_new(fd);
}

struct tclient *tclient_unix(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return NULL;
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
	if (connect_fd(fd, (struct sockaddr *)&a, sizeof a) != 0) {
		fprintf(stderr, "harness: connect %s: %s\n", path, strerror(errno));
		close(fd);
		return NULL;
	}
	return client_new(fd);
}

void tclient_close(struct tclient *c)
{
	if (c == NULL)
		return;
	for (struct tclient **pp = &g_clients; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	close(c->fd);
	free(c->buf);
	free(c->last);
	free(c);
}

int tclient_fd(const struct tclient *c)
{
	return c->fd;
}

const char *tclient_last(const struct tclient *c)
{
	return c->last ? c->last : "";
}

int tclient_send(struct tclient *c, const void *data, size_t len)
{
	const char *p = data;
	long long deadline = now_ms() + HARNESS_IO_TIMEOUT_MS;
	while (len > 0) {
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			fprintf(stderr, "harness: send: %s\n", strerror(errno));
			return -1;
		}
		int left = (int)(deadline - now_ms());
		struct pollfd pf = { .fd = c->fd, .events = POLLOUT };
		if (left <= 0 || poll(&pf, 1, left) == 0) {
			fprintf(stderr, "harness: send timed out with %zu bytes left\n", len);
			return -1;
		}
	}
	return 0;
}

int tclient_sendf(struct tclient *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = vformat(fmt, ap);
	va_end(ap);
	if (s == NULL)
		return -1;
	int rc = tclient_send(c, s, strlen(s));
	free(s);
	return rc;
}

/* Drop the line returned last. */
static void client_consume(struct tclient *c)
{
	if (c->consumed) {
		memmove(c->buf, c->buf + c->consumed, c->len - c->consumed);
		c->len -= c->consumed;
		c->consumed = 0;
	}
}

/* One read into the buffer: >0 bytes, 0 EOF/reset, -1 nothing yet. */
static ssize_t client_fill(struct tclient *c)
{
	if (c->cap - c->len < 65536) {
		size_t cap = c->cap ? c->cap * 2 : 131072;
		char *b = realloc(c->buf, cap);
		if (b == NULL)
			return 0;
		c->buf = b;
		c->cap = cap;
	}
	ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
	if (n > 0) {
		c->len += (size_t)n;
		return n;
	}
	if (n == 0 || errno == ECONNRESET || errno == EPIPE)
		return 0;
	return -1;
}

/* A complete line in the buffer?  Then NUL it, remember it and return 1. */
static int client_take_line(struct tclient *c, const char **line, size_t *len)
{
	char *nl = c->buf ? memchr(c->buf, '\n', c->len) : NULL;
	if (nl == NULL)
		return 0;
	*nl = '\0';
	*line = c->buf;
	*len = (size_t)(nl - c->buf);
	c->consumed = *len + 1;
	free(c->last);
	c->last = strdup(c->buf);
	return 1;
}

int tclient_line(struct tclient *c, const char **line, size_t *len, int timeout_ms)
{
	client_consume(c);
	long long deadline = now_ms() + timeout_ms;
	for (;;) {
		if (client_take_line(c, line, len))
			return 1;
		ssize_t n = client_fill(c);
		if (n > 0)
			continue;
		if (n == 0) {
			if (c->len)
				fprintf(stderr, "harness: connection closed after a partial line: %.*s\n",
					(int)c->len, c->buf);
			return 0;
		}
		if (errno != EAGAIN && errno != EINTR) {
			fprintf(stderr, "harness: recv: %s\n", strerror(errno));
			return 0;
		}
		int left = (int)(deadline - now_ms());
		struct pollfd pf = { .fd = c->fd, .events = POLLIN };
		if (left <= 0 || poll(&pf, 1, left) == 0) {
			fprintf(stderr, "harness: no response line within %d ms (%zu bytes buffered)\n",
				timeout_ms, c->len);
			return -1;
		}
	}
}

int tclient_recv(struct tclient *c, struct goc_response *resp, int timeout_ms)
{
	const char *line;
	size_t len;
	memset(resp, 0, sizeof *resp);
	int rc = tclient_line(c, &line, &len, timeout_ms);
	if (rc != 1) {
		if (rc == 0)
			fprintf(stderr, "harness: connection closed while waiting for a response\n");
		return -1;
	}
	if (codec_parse_response(line, len, resp) != 0) {
		fprintf(stderr, "harness: not a valid response line: %s\n", line);
		codec_response_free(resp);
		return -1;
	}
	return 0;
}

int tclient_call(struct tclient *c, const char *request, struct goc_response *resp)
{
	size_t n = strlen(request);
	memset(resp, 0, sizeof *resp);
	if (tclient_send(c, request, n) != 0)
		return -1;
	if ((n == 0 || request[n - 1] != '\n') && tclient_send(c, "\n", 1) != 0)
		return -1;
	return tclient_recv(c, resp, HARNESS_IO_TIMEOUT_MS);
}

enum goc_err tclient_auth(struct tclient *c, const char *token)
{
	char req[512];
	struct goc_response r;
	snprintf(req, sizeof req, "{\"op\":\"auth\",\"token\":\"%s\"}", token);
	if (tclient_call(c, req, &r) != 0)
		return GOC_E__COUNT; /* no answer at all */
	enum goc_err code = r.ok ? GOC_OK : r.code;
	codec_response_free(&r);
	return code;
}

size_t tclient_exchange(struct tclient *c, const char *data, size_t len,
			size_t nlines, char ***lines, int timeout_ms)
{
	char **out = calloc(nlines ? nlines : 1, sizeof *out);
	size_t got = 0;
	long long deadline = now_ms() + timeout_ms;
	client_consume(c);
	*lines = out;
	while (got < nlines) {
		const char *l;
		size_t ll;
		if (client_take_line(c, &l, &ll)) {
			out[got++] = strdup(l);
			client_consume(c);
			continue;
		}
		int left = (int)(deadline - now_ms());
		if (left <= 0) {
			fprintf(stderr, "harness: exchange: %zu of %zu lines after %d ms, %zu bytes unsent\n",
				got, nlines, timeout_ms, len);
			break;
		}
		struct pollfd pf = { .fd = c->fd, .events = POLLIN | (len ? POLLOUT : 0) };
		if (poll(&pf, 1, left) <= 0)
			continue;
		if (len && (pf.revents & POLLOUT)) {
			ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
			if (n > 0) {
				data += n;
				len -= (size_t)n;
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				fprintf(stderr, "harness: exchange send: %s\n", strerror(errno));
				len = 0;
			}
		}
		if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = client_fill(c);
			if (n == 0) {
				fprintf(stderr, "harness: exchange: connection closed after %zu of %zu lines\n",
					got, nlines);
				break;
			}
		}
	}
	return got;
}

void harness_free_lines(char **lines, size_t n)
{
	if (lines == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(lines[i]);
	free(lines);
}

int tclient_expect_eof(struct tclient *c, int timeout_ms)
{
	client_consume(c);
	if (c->len) {
		fprintf(stderr, "harness: expected EOF, have data: %.*s\n", (int)c->len, c->buf);
		return -1;
	}
	long long deadline = now_ms() + timeout_ms;
	for (;;) {
		ssize_t n = client_fill(c);
		if (n == 0)
			return 0;
		if (n > 0) {
			fprintf(stderr, "harness: expected EOF, got: %.*s\n", (int)c->len, c->buf);
			return -1;
		}
		int left = (int)(deadline - now_ms());
		struct pollfd pf = { .fd = c->fd, .events = POLLIN };
		if (left <= 0 || poll(&pf, 1, left) == 0) {
			fprintf(stderr, "harness: connection still open after %d ms\n", timeout_ms);
			return -1;
		}
	}
}

int tclient_drain(struct tclient *c, int timeout_ms, size_t *lines)
{
	client_consume(c);
	*lines = 0;
	for (size_t i = 0; i < c->len; i++)
		*lines += c->buf[i] == '\n';
	c->len = 0;
	long long deadline = now_ms() + timeout_ms;
	char chunk[65536];
	for (;;) {
		ssize_t n = recv(c->fd, chunk, sizeof chunk, 0);
		if (n > 0) {
			for (ssize_t i = 0; i < n; i++)
				*lines += chunk[i] == '\n';
			continue;
		}
		if (n == 0 || errno == ECONNRESET || errno == EPIPE)
			return 0;
		if (errno != EAGAIN && errno != EINTR) {
			fprintf(stderr, "harness: recv: %s\n", strerror(errno));
			return 0;
		}
		int left = (int)(deadline - now_ms());
		struct pollfd pf = { .fd = c->fd, .events = POLLIN };
		if (left <= 0 || poll(&pf, 1, left) == 0) {
			fprintf(stderr, "harness: connection still open after %d ms (%zu lines read)\n",
				timeout_ms, *lines);
			return -1;
		}
	}
}

int tpg_start_with_schema(const char *schema)
{
	if (tpg_start() != 0)
		return -1;
	if (tpg_exec("%s", schema) != 0) {
		tpg_destroy();
		return -1;
	}
	return 0;
}

int harness_group_teardown(void **state)
{
	(void)state;
	tpg_destroy();
	return 0;
}
