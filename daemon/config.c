/*
 * config.c - the option table and its two parsers (file and flags).
 *
 * Owns: every option's declaration.  --help and conf/gocd.conf are checked
 * against this table (tests/unit), so docs cannot drift from code.
 * Must never: touch the network or the event loop.  (Addresses are parsed
 * with libevent's evutil_parse_sockaddr_port, a pure parser, because the
 * listeners use it: what passes here is what they accept.  The postgres
 * conninfo likewise goes through libpq's own parser, PQconninfoParse,
 * which reads no file and opens nothing.)
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcntl.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <event2/util.h>
#include <libpq-fe.h>

#include "config.h"
#include "log.h"

enum opt_type { OPT_STR, OPT_INT, OPT_OCTAL, OPT_TABLE, OPT_LEVEL };

struct option_def {
	const char *name;
	enum opt_type type;
	size_t offset;
	const char *def;
	long min, max;
	const char *unit;
	const char *help;
};

#define OFF(f) offsetof(struct config, f)

static const struct option_def options[] = {
	{"listen", OPT_STR, OFF(listen), "127.0.0.1:7432", 0, 0, "HOST:PORT",
	 "TCP address to listen on; empty for none"},
	{"unix", OPT_STR, OFF(unix_path), "", 0, 0, "PATH",
	 "Unix socket path; empty for none"},
	{"unix_mode", OPT_OCTAL, OFF(unix_mode), "0660", 0, 0777, "octal",
	 "permissions of the Unix socket"},
	{"postgres", OPT_STR, OFF(postgres), "", 0, 0, "CONNINFO",
	 "libpq connection string (empty: PGHOST, PGDATABASE... environment)"},
	{"table", OPT_TABLE, OFF(tables), NULL, 0, 0, "NAME=COL[,COL]",
	 "serve table NAME keyed by its unique index on COLs; repeatable"},
	{"pool_size", OPT_INT, OFF(pool_size), "4", 1, 256, "connections",
	 "PostgreSQL connections in the pool"},
	{"batch_max", OPT_INT, OFF(batch_max), "32", 1, 10000, "keys",
	 "most requests of one table sent as one statement"},
	{"insert_batches", OPT_INT, OFF(insert_batches), "1", 1, 256, "batches",
	 "inserting batches of one table (and defaults columns) in flight at once"},
	{"max_clients", OPT_INT, OFF(max_clients), "10000", 1, 1000000, "connections",
	 "client connections; one more gets 'overloaded' and is closed"},
	{"max_line", OPT_INT, OFF(max_line), "65536", 64, 16777216, "bytes",
	 "longest request line; longer gets 'too_large' and a close"},
	{"max_pending", OPT_INT, OFF(max_pending), "1024", 1, 1000000, "requests",
	 "unanswered requests per connection before gocd stops reading it"},
	{"max_output", OPT_INT, OFF(max_output), "16777216", 4096, 1073741824, "bytes",
	 "unsent response bytes per connection before it is dropped"},
	{"max_client_memory", OPT_INT, OFF(max_client_memory), "268435456", 1048576, 2147483647, "bytes",
	 "client input, waiting requests and unsent answers of all clients together before gocd stops reading"},
	{"max_waiters", OPT_INT, OFF(max_waiters), "10000", 1, 10000000, "requests",
	 "requests queued behind one key; more get 'overloaded'"},
	{"request_timeout", OPT_INT, OFF(request_timeout), "5000", 10, 3600000, "ms",
	 "a request unanswered this long gets 'timeout'"},
	{"connect_timeout", OPT_INT, OFF(connect_timeout), "5000", 10, 600000, "ms",
	 "give up on one PostgreSQL connection attempt after this long"},
	{"shutdown_timeout", OPT_INT, OFF(shutdown_timeout), "10000", 0, 3600000, "ms",
	 "on SIGTERM, wait this long for in-flight requests"},
	{"retry_limit", OPT_INT, OFF(retry_limit), "5", 0, 100, "retries",
	 "re-runs of a request after serialization failure, deadlock or lost connection"},
	{"auth_token", OPT_STR, OFF(auth_token), "", 0, 0, "TOKEN",
	 "shared secret TCP clients must send first ({\"op\":\"auth\",\"token\":..}); empty: none"},
	{"auth_token_file", OPT_STR, OFF(auth_token_file), "", 0, 0, "PATH",
	 "read auth_token from this file's first line (at start and on reload); empty: none"},
	{"client_idle_timeout", OPT_INT, OFF(client_idle_timeout), "0", 0, 86400000, "ms",
	 "close client connections idle this long; 0 = never"},
	{"log_level", OPT_LEVEL, OFF(log_level), "info", 0, 0, "level",
	 "debug, info, warn or error"},
	{"slow_request_ms", OPT_INT, OFF(slow_request_ms), "1000", 0, 3600000, "ms",
	 "log requests answered slower than this; 0 = off"},
	{"admin_listen", OPT_STR, OFF(admin_listen), "127.0.0.1:7433", 0, 0, "HOST:PORT",
	 "HTTP admin listener (/metrics, /healthz); empty for none"},
};
#define NOPTIONS (sizeof options / sizeof options[0])

static void errf(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);
	if (p == NULL) {
		fputs("gocd: out of memory\n", stderr);
		abort();
	}
	return p;
}

static void free_tables(struct config *cfg)
{
	for (int i = 0; i < cfg->ntables; i++) {
		free(cfg->tables[i].name);
		for (int j = 0; j < cfg->tables[i].ncols; j++)
			free(cfg->tables[i].cols[j]);
		free(cfg->tables[i].cols);
	}
	free(cfg->tables);
	cfg->tables = NULL;
	cfg->ntables = 0;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* NAME=COL[,COL...]; the '=' that splits is the first one outside quotes. */
static int add_table(struct config *cfg, const char *value, char *err, size_t errlen)
{
	char *buf = xstrdup(value);
	char *split = NULL;
	int inq = 0;
	for (char *p = buf; *p; p++) {
		if (*p == '"')
			inq = !inq;
		else if (*p == '=' && !inq) {
			split = p;
			break;
		}
	}
	if (split == NULL) {
		errf(err, errlen, "table \"%s\": expected NAME=COL[,COL...]", value);
		free(buf);
		return -1;
	}
	*split = '\0';
	char *name = trim(buf);
	if (*name == '\0') {
		errf(err, errlen, "table \"%s\": empty table name", value);
		free(buf);
		return -1;
	}
	for (int i = 0; i < cfg->ntables; i++)
		if (strcmp(cfg->tables[i].name, name) == 0) {
			errf(err, errlen, "table \"%s\" is configured twice", name);
			free(buf);
			return -1;
		}
	struct table_conf tc = {xstrdup(name), NULL, 0};
	char *save = NULL;
	for (char *tok = strtok_r(split + 1, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char *c = trim(tok);
		if (*c == '\0')
			continue;
		for (int j = 0; j < tc.ncols; j++)
			if (strcmp(tc.cols[j], c) == 0) {
				errf(err, errlen, "table \"%s\": key column \"%s\" given twice", name, c);
				goto fail;
			}
		char **n = realloc(tc.cols, sizeof *n * (size_t)(tc.ncols + 1));
		if (n == NULL)
			abort();
		tc.cols = n;
		tc.cols[tc.ncols++] = xstrdup(c);
	}
	if (tc.ncols == 0) {
		errf(err, errlen, "table \"%s\": no key columns (expected NAME=COL[,COL...])", name);
		goto fail;
	}
	if (tc.ncols > 32) {
		errf(err, errlen, "table \"%s\": at most 32 key columns", name);
		goto fail;
	}
	struct table_conf *t = realloc(cfg->tables, sizeof *t * (size_t)(cfg->ntables + 1));
	if (t == NULL)
		abort();
	cfg->tables = t;
	cfg->tables[cfg->ntables++] = tc;
	free(buf);
	return 0;
fail:
	for (int j = 0; j < tc.ncols; j++)
		free(tc.cols[j]);
	free(tc.cols);
	free(tc.name);
	free(buf);
	return -1;
}

static const struct option_def *find_option(const char *name, size_t len)
{
	char norm[64];
	if (len >= sizeof norm)
		return NULL;
	for (size_t i = 0; i < len; i++)
		norm[i] = name[i] == '-' ? '_' : name[i];
	norm[len] = '\0';
	for (size_t i = 0; i < NOPTIONS; i++)
		if (strcmp(options[i].name, norm) == 0)
			return &options[i];
	return NULL;
}

static int set_option(struct config *cfg, const struct option_def *o,
		      const char *value, char *err, size_t errlen)
{
	char *base = (char *)cfg;
	switch (o->type) {
	case OPT_STR: {
		char **p = (char **)(base + o->offset);
		free(*p);
		*p = xstrdup(value);
		return 0;
	}
	case OPT_LEVEL: {
		if (log_level_parse(value) < 0) {
			errf(err, errlen, "%s: \"%s\" is not one of debug, info, warn, error",
			     o->name, value);
			return -1;
		}
		char **p = (char **)(base + o->offset);
		free(*p);
		*p = xstrdup(value);
		return 0;
	}
	case OPT_INT:
	case OPT_OCTAL: {
		char *end;
		errno = 0;
		long v = strtol(value, &end, o->type == OPT_OCTAL ? 8 : 10);
		if ((errno && errno != ERANGE) || end == value || *end != '\0') {
			errf(err, errlen, "%s: \"%s\" is not %s", o->name, value,
			     o->type == OPT_OCTAL ? "an octal number" : "a whole number");
			return -1;
		}
		/* Digits beyond a long (ERANGE) are out of range, not "not a
		 * whole number". */
		if (errno == ERANGE || v < o->min || v > o->max) {
			if (o->type == OPT_OCTAL)
				errf(err, errlen, "%s: %s is out of range %lo..0%lo (octal)", o->name,
				     value, o->min, o->max);
			else
				errf(err, errlen, "%s: %s is out of range %ld..%ld %s", o->name, value,
				     o->min, o->max, o->unit);
			return -1;
		}
		*(int *)(base + o->offset) = (int)v;
		return 0;
	}
	case OPT_TABLE:
		return add_table(cfg, value, err, errlen);
	}
	return -1;
}

int config_option_count(void)
{
	return (int)NOPTIONS;
}

const char *config_option_name(int i)
{
	return i >= 0 && i < (int)NOPTIONS ? options[i].name : NULL;
}

void config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	for (size_t i = 0; i < NOPTIONS; i++) {
		char e[8];
		if (options[i].def && set_option(cfg, &options[i], options[i].def, e, sizeof e) != 0)
			abort(); /* a bad default is a programming error */
	}
}

void config_free(struct config *cfg)
{
	for (size_t i = 0; i < NOPTIONS; i++)
		if (options[i].type == OPT_STR || options[i].type == OPT_LEVEL)
			free(*(char **)((char *)cfg + options[i].offset));
	free_tables(cfg);
	memset(cfg, 0, sizeof *cfg);
}

int config_parse_text(struct config *cfg, const char *text, const char *origin,
		      char *err, size_t errlen)
{
	char *copy = xstrdup(text);
	int lineno = 0, rc = 0;
	char *p = copy;
	while (p && rc == 0) {
		char *nl = strchr(p, '\n');
		if (nl)
			*nl = '\0';
		lineno++;
		char *line = trim(p);
		p = nl ? nl + 1 : NULL;
		if (*line == '\0' || *line == '#')
			continue;
		char *eq = strchr(line, '=');
		if (eq == NULL) {
			errf(err, errlen, "%s:%d: expected \"name = value\"", origin, lineno);
			rc = -1;
			break;
		}
		*eq = '\0';
		char *name = trim(line);
		char *value = trim(eq + 1);
		/* Values may be quoted to keep leading/trailing spaces, or a
		 * '#' after a space.  Unquoted, that looks like a comment at the
		 * end of the line, which is not one here: "auth_token = s3cret
		 * # rotated" made the whole rest the token.  Refused instead;
		 * so is a value that starts with one after the spaces that
		 * follow '=' ("unix = # off" is not an empty value). */
		size_t vl = strlen(value);
		if (vl >= 2 && value[0] == '\'' && value[vl - 1] == '\'') {
			value[vl - 1] = '\0';
			value++;
		} else {
			const char *after_eq = eq + 1;
			for (size_t i = 0; i < vl; i++)
				if (value[i] == '#' &&
				    (i > 0 ? isspace((unsigned char)value[i - 1]) : value != after_eq)) {
					errf(err, errlen, "%s:%d: %s: a '#' after a space in the value; "
					     "comments go on lines of their own, and a value that holds "
					     "one is quoted ('...')", origin, lineno, name);
					rc = -1;
					break;
				}
			if (rc != 0)
				break;
		}
		const struct option_def *o = find_option(name, strlen(name));
		if (o == NULL) {
			errf(err, errlen, "%s:%d: unknown option \"%s\"", origin, lineno, name);
			rc = -1;
			break;
		}
		char sub[512];
		if (set_option(cfg, o, value, sub, sizeof sub) != 0) {
			errf(err, errlen, "%s:%d: %s", origin, lineno, sub);
			rc = -1;
		}
	}
	free(copy);
	return rc;
}

/*
 * A whole small text file, NUL-terminated, for the config file and the
 * token file alike: refused if over max bytes or holding a NUL byte (a
 * C string would silently end there).  Errors name what it is and the
 * path.  NULL on error.
 */
static char *read_text_file(const char *what, const char *path, size_t max, char *err,
			    size_t errlen)
{
	/* Non-blocking open and a regular file only: opening a FIFO with no
	 * writer would block, and a reload runs inside the event loop - every
	 * client would wait for someone to write to it. */
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		errf(err, errlen, "%s: cannot open %s: %s", what, path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	if (!S_ISREG(st.st_mode)) {
		errf(err, errlen, "%s %s is not a regular file", what, path);
		close(fd);
		return NULL;
	}
	FILE *f = fdopen(fd, "r");
	if (f == NULL) {
		errf(err, errlen, "%s: cannot open %s: %s", what, path, strerror(errno));
		close(fd);
		return NULL;
	}
	size_t cap = 4096, len = 0, n;
	char *buf = malloc(cap);
	if (buf == NULL)
		abort();
	while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (len > max) {
			errf(err, errlen, "%s %s is larger than %zu bytes", what, path, max);
			free(buf);
			fclose(f);
			return NULL;
		}
		if (len + 1 == cap) {
			char *nb = realloc(buf, cap *= 2);
			if (nb == NULL)
				abort();
			buf = nb;
		}
	}
	int rerr = ferror(f);
	fclose(f);
	if (rerr) {
		errf(err, errlen, "%s: cannot read %s", what, path);
		free(buf);
		return NULL;
	}
	buf[len] = '\0';
	if (memchr(buf, '\0', len) != NULL) {
		errf(err, errlen, "%s %s contains a NUL byte", what, path);
		free(buf);
		return NULL;
	}
	return buf;
}

static int load_file(struct config *cfg, const char *path, char *err, size_t errlen)
{
	char *buf = read_text_file("config file", path, (size_t)1 << 24, err, errlen);
	if (buf == NULL)
		return -1;
	int rc = config_parse_text(cfg, buf, path, err, errlen);
	free(buf);
	return rc;
}

/*
 * auth_token_file: the secret lives in a file only gocd's user can read
 * (systemd's LoadCredential=), because gocd.conf must stay readable by the
 * dynamic user and so is world-readable.  Its first line is the token;
 * a trailing newline (and CR) is not part of it.  Read on every load, so a
 * reload picks up a rotated token.
 */
static int load_token_file(struct config *cfg, char *err, size_t errlen)
{
	const char *path = cfg->auth_token_file;
	if (cfg->auth_token[0] != '\0') {
		errf(err, errlen, "auth_token and auth_token_file are both set; use one");
		return -1;
	}
	char *buf = read_text_file("auth_token_file", path, (size_t)1 << 20, err, errlen);
	if (buf == NULL)
		return -1;
	char *nl = strchr(buf, '\n');
	if (nl)
		*nl = '\0';
	size_t len = strlen(buf);
	if (len > 0 && buf[len - 1] == '\r')
		buf[--len] = '\0';
	int rc = -1;
	if (len > 4096)
		errf(err, errlen, "auth_token_file %s: the token is longer than 4096 bytes", path);
	else if (len == 0)
		errf(err, errlen, "auth_token_file %s: the first line is empty", path);
	else
		rc = 0;
	if (rc == 0) {
		free(cfg->auth_token);
		cfg->auth_token = xstrdup(buf);
	}
	free(buf);
	return rc;
}

static int port_of(const struct sockaddr_storage *ss)
{
	return ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
					       : ((const struct sockaddr_in *)ss)->sin_port);
}

static bool wildcard(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
	return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
}

/* [::ffff:a.b.c.d] is bound as the IPv4 address a.b.c.d. */
static struct sockaddr_storage as_v4(const struct sockaddr_storage *ss)
{
	struct sockaddr_storage out = *ss;
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
	if (ss->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&out;
		memset(&out, 0, sizeof out);
		s4->sin_family = AF_INET;
		s4->sin_port = s6->sin6_port;
		memcpy(&s4->sin_addr, &s6->sin6_addr.s6_addr[12], 4);
	}
	return out;
}

/* Two listeners on one port that the kernel would refuse: the same address,
 * [::] (which takes IPv4 too) and any other, or 0.0.0.0 and any other IPv4
 * address.  0.0.0.0 and a specific IPv6 address ([::1]) do not overlap. */
static bool same_port_overlap(const struct sockaddr_storage *pa, const struct sockaddr_storage *pb)
{
	if (port_of(pa) != port_of(pb))
		return false;
	struct sockaddr_storage sa = as_v4(pa), sb = as_v4(pb);
	const struct sockaddr_storage *a = &sa, *b = &sb;
	if ((a->ss_family == AF_INET6 && wildcard(a)) || (b->ss_family == AF_INET6 && wildcard(b)))
		return true;
	if (a->ss_family != b->ss_family)
		return false;
	if (wildcard(a) || wildcard(b))
		return true;
	if (a->ss_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
	return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
	       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
}

/* Values that parse as options but could never be opened: refused here, so
 * that -t, a start and a reload all say so the same way, before anything
 * has been opened. */
/* A password keyword, or a URI's user:password@: the parts a parse error
 * must not quote back. */
static bool conninfo_may_hold_password(const char *c)
{
	if (strncmp(c, "postgresql://", 13) == 0 || strncmp(c, "postgres://", 11) == 0)
		return strchr(c, '@') != NULL || strcasestr(c, "password") != NULL;
	return strcasestr(c, "password") != NULL;
}

static int check_addresses(const struct config *cfg, char *err, size_t errlen)
{
	const char *const name[] = {"listen", "admin_listen"};
	const char *const val[] = {cfg->listen, cfg->admin_listen};
	struct sockaddr_storage sa[2];
	for (int i = 0; i < 2; i++) {
		struct sockaddr_storage ss;
		int len = sizeof ss;
		memset(&ss, 0, sizeof ss);
		/* evutil reads the port with strtol and stops at junk
		 * ("7432x" is 7432): the port must be digits to the end. */
		const char *colon = strrchr(val[i], ':');
		bool digits = colon && colon[1] != '\0' && strspn(colon + 1, "0123456789") == strlen(colon + 1);
		if (val[i][0] && (!digits ||
				  evutil_parse_sockaddr_port(val[i], (struct sockaddr *)&ss, &len) != 0)) {
			errf(err, errlen, "%s: \"%s\" is not HOST:PORT with a numeric address and a port "
			     "from 1 to 65535 (e.g. 127.0.0.1:7432 or [::1]:7432; names are not resolved)",
			     name[i], val[i]);
			return -1;
		}
		sa[i] = ss;
	}
	if (cfg->listen[0] && cfg->admin_listen[0] && same_port_overlap(&sa[0], &sa[1])) {
		errf(err, errlen, "listen (%s) and admin_listen (%s) would both bind port %d; "
		     "they need different ports", cfg->listen, cfg->admin_listen, port_of(&sa[0]));
		return -1;
	}
	/* A conninfo libpq cannot parse (a typo in a keyword, a stray word)
	 * can never connect: it is a configuration error, not "PostgreSQL
	 * unreachable" to be retried for ever. */
	/* Only what libpq itself parses as one: it is handed over as dbname
	 * with expand_dbname, and a value without '=' that is not a URI is
	 * a database name ("postgres = app"), which PQconninfoParse refuses. */
	if (strchr(cfg->postgres, '=') != NULL || strncmp(cfg->postgres, "postgresql://", 13) == 0 ||
	    strncmp(cfg->postgres, "postgres://", 11) == 0) {
		char *perr = NULL;
		PQconninfoOption *opts = PQconninfoParse(cfg->postgres, &perr);
		if (opts == NULL) {
			char why[256];
			log_copy_message(why, sizeof why, perr ? perr : "out of memory parsing it");
			/* libpq quotes the piece it choked on, which can be part of
			 * a password ("password=S3cret Pw0rd": missing "=" after
			 * "Pw0rd"), and this goes to the journal: say where to
			 * look instead. */
			if (conninfo_may_hold_password(cfg->postgres))
				snprintf(why, sizeof why, "libpq cannot parse it (its message is not shown: it "
					 "can quote the password); check the quoting ('a b') of values "
					 "with spaces, or the percent-encoding of a URI");
			errf(err, errlen, "postgres: %s", why);
			PQfreemem(perr);
			return -1;
		}
		PQconninfoFree(opts);
	}
	struct sockaddr_un sun;
	if (strlen(cfg->unix_path) >= sizeof sun.sun_path) {
		errf(err, errlen, "unix: the path is %zu bytes long; a Unix socket path has at most %zu",
		     strlen(cfg->unix_path), sizeof sun.sun_path - 1);
		return -1;
	}
	/* Not checked: that the socket's directory exists.  That is the
	 * machine's state, not the configuration's (systemd makes /run/gocd
	 * only while the service runs), like a port already in use. */
	return 0;
}

int config_load(struct config *cfg, struct cli_flags *cli, int argc, char **argv,
		char *err, size_t errlen)
{
	memset(cli, 0, sizeof *cli);
	config_defaults(cfg);

	/* First pass: find --config and the action flags. */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
			cli->help = 1;
		else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0)
			cli->version = 1;
		else if (strcmp(a, "-t") == 0 || strcmp(a, "--test") == 0)
			cli->test_only = 1;
		else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			if (i + 1 >= argc) {
				errf(err, errlen, "%s needs a file name", a);
				return -1;
			}
			cli->config_path = argv[++i];
		} else if (strncmp(a, "--config=", 9) == 0)
			cli->config_path = a + 9;
		else if (strncmp(a, "--", 2) == 0 && strchr(a, '=') == NULL &&
			 find_option(a + 2, strlen(a + 2)) != NULL)
			i++; /* its value, which may look like a flag: "--auth-token -t" */
	}
	if (cli->help || cli->version)
		return 0;
	if (cli->config_path && load_file(cfg, cli->config_path, err, errlen) != 0)
		return -1;

	/* Second pass: flags override the file; any --table replaces the
	 * file's table list rather than appending to it. */
	int tables_from_flags = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 ||
		    strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0 ||
		    strcmp(a, "-t") == 0 || strcmp(a, "--test") == 0 ||
		    strncmp(a, "--config=", 9) == 0)
			continue;
		if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			i++;
			continue;
		}
		if (strncmp(a, "--", 2) != 0) {
			errf(err, errlen, "%s \"%s\" (see --help)",
			     a[0] == '-' ? "unknown option" : "unexpected argument", a);
			return -1;
		}
		const char *name = a + 2;
		const char *eq = strchr(name, '=');
		size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
		const struct option_def *o = find_option(name, nlen);
		if (o == NULL) {
			errf(err, errlen, "unknown option \"%.*s\" (see --help)", (int)nlen + 2, a);
			return -1;
		}
		const char *value;
		if (eq)
			value = eq + 1;
		else if (i + 1 < argc)
			value = argv[++i];
		else {
			errf(err, errlen, "option --%.*s needs a value", (int)nlen, name);
			return -1;
		}
		if (o->type == OPT_TABLE && !tables_from_flags) {
			free_tables(cfg);
			tables_from_flags = 1;
		}
		char sub[512];
		if (set_option(cfg, o, value, sub, sizeof sub) != 0) {
			/* Named as typed (--pool-size), not as in the file (pool_size). */
			size_t on = strlen(o->name);
			const char *rest = strncmp(sub, o->name, on) == 0 ? sub + on : sub;
			errf(err, errlen, "--%.*s%s", (int)nlen, name, rest);
			return -1;
		}
	}
	if (check_addresses(cfg, err, errlen) != 0)
		return -1;
	if (cfg->auth_token_file[0] != '\0')
		return load_token_file(cfg, err, errlen);
	return 0;
}

void config_usage(FILE *out)
{
	fprintf(out,
		"usage: gocd [-c FILE] [-t] [--OPTION=VALUE ...]\n"
		"\n"
		"gocd answers get-or-create requests (NDJSON over TCP or a Unix socket) with\n"
		"exactly one row per key, backed by PostgreSQL's unique index.\n"
		"\n"
		"  -c, --config=FILE   read options from FILE (\"name = value\" lines)\n"
		"  -t, --test          check the configuration and the tables, then exit\n"
		"  -h, --help          this text\n"
		"  -V, --version       print the version\n"
		"\n"
		"Options (file name, or as --flag with '-' or '_'; flags override the file):\n");
	for (size_t i = 0; i < NOPTIONS; i++) {
		char flag[64];
		snprintf(flag, sizeof flag, "--%s=%s", options[i].name, options[i].unit);
		for (char *p = flag + 2; *p && *p != '='; p++)
			if (*p == '_')
				*p = '-';
		fprintf(out, "  %-30s %s", flag, options[i].help);
		if (options[i].def)
			fprintf(out, " (default: %s)", *options[i].def ? options[i].def : "empty");
		if (options[i].type == OPT_INT)
			fprintf(out, " [%ld..%ld]", options[i].min, options[i].max);
		fputc('\n', out);
	}
}

void config_dump(const struct config *cfg, FILE *out)
{
	const char *base = (const char *)cfg;
	for (size_t i = 0; i < NOPTIONS; i++) {
		const struct option_def *o = &options[i];
		switch (o->type) {
		case OPT_STR:
		case OPT_LEVEL: {
			const char *v = *(char *const *)(base + o->offset);
			/* a dump is for logs and tickets: never the secret itself */
			if (o->offset == OFF(auth_token) && v[0] != '\0')
				v = "(set)";
			fprintf(out, "%s = %s\n", o->name, v);
			break;
		}
		case OPT_INT:
			fprintf(out, "%s = %d\n", o->name, *(const int *)(base + o->offset));
			break;
		case OPT_OCTAL:
			fprintf(out, "%s = %04o\n", o->name, *(const int *)(base + o->offset));
			break;
		case OPT_TABLE:
			for (int t = 0; t < cfg->ntables; t++) {
				fprintf(out, "table = %s=", cfg->tables[t].name);
				for (int c = 0; c < cfg->tables[t].ncols; c++)
					fprintf(out, "%s%s", c ? "," : "", cfg->tables[t].cols[c]);
				fputc('\n', out);
			}
			break;
		}
	}
}
