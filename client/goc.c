/*
 * goc.c - goc, the command-line client of gocd.
 *
 * Owns: goc's argv (global options, the four commands, httpie-style
 * `col=value` / `col:=JSON` items), its usage text (the --help below is the
 * manual), one connection to gocd over TCP or a Unix socket with a timeout,
 * the stdin pass-through mode, and the mapping from responses to the exit
 * status (0 all ok, 1 an error response, 2 usage, 3 connection/timeout).
 *
 * Must never: write or parse protocol JSON by hand.  Requests are rendered by
 * codec_render_request and responses are split by frame_next and decoded by
 * codec_parse_response, so the CLI cannot drift from what the daemon
 * accepts.  Must never reformat a number either: response lines are printed
 * byte for byte as received (rows can hold numerics wider than a double), and
 * --pretty only re-indents the received text.  Must never include daemon
 * headers.
 *
 * Functions are prefixed cli_ rather than goc_ because daemon/goc.c owns the
 * goc_ prefix (the get-or-create flow) and proto/errors.h already uses it.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "codec.h"
#include "errors.h"
#include "frame.h"

#ifndef GOCD_VERSION
#define GOCD_VERSION "unknown"
#endif

/* Exit statuses; scripts branch on these, so they never change meaning. */
#define CLI_EXIT_OK    0 /* every response was ok */
#define CLI_EXIT_ERROR 1 /* at least one response was an error */
#define CLI_EXIT_USAGE 2 /* bad command line; nothing was sent */
#define CLI_EXIT_CONN  3 /* could not connect, timed out, or the stream broke */

#define CLI_DEFAULT_ADDR    "127.0.0.1:7432"
#define CLI_DEFAULT_PORT    "7432"
#define CLI_DEFAULT_TIMEOUT 10.0

/*
 * Longest response line we buffer (--max-line).  The daemon bounds requests,
 * not rows: a row with a large text or jsonb column makes a long response, so
 * the default is generous; past it the stream cannot be resynchronised and
 * goc gives up rather than grow without bound.
 */
#define CLI_DEFAULT_MAX_LINE ((size_t)64 << 20)
#define CLI_MIN_MAX_LINE     ((size_t)64)

/* Bytes moved per read/send call. */
#define CLI_IO_CHUNK 65536

/*
 * In pass-through mode, stop reading stdin while this many request bytes wait
 * to be sent: a daemon that reads slowly must not make goc buffer an entire
 * input file in memory.
 */
#define CLI_OUT_HIGH ((size_t)1 << 20)

/* ------------------------------------------------------------------ */
/* Command line                                                        */

enum cli_mode {
	CLI_MODE_COMMAND, /* one request built from argv */
	CLI_MODE_STDIN,   /* NDJSON request lines copied from stdin */
};

struct cli_opts {
	const char *addr;      /* --addr or GOC_ADDR; NULL when unix_path is set */
	char host[256];        /* addr split by cli_split_hostport */
	char port[32];
	const char *unix_path; /* --unix or an addr of the form unix:PATH */
	double timeout;        /* seconds; 0 means wait forever */
	size_t max_line;       /* longest response line accepted */
	bool pretty;
	const char *token;     /* --token or GOC_TOKEN: sent as an auth request first */
	json_t *id;            /* --id, owned; NULL when absent */
	json_t *defaults;      /* --defaults / --default, owned; NULL when absent */

	enum cli_mode mode;
	enum goc_op op;
	const char *table;     /* borrowed from argv */
	json_t *key;           /* owned */
};

static void cli_opts_free(struct cli_opts *o)
{
	if (o->id)
		json_decref(o->id);
	if (o->defaults)
		json_decref(o->defaults);
	if (o->key)
		json_decref(o->key);
}

static const char cli_usage_text[] =
"NAME\n"
"    goc - command-line client of gocd, the get-or-create daemon\n"
"\n"
"SYNOPSIS\n"
"    goc [OPTIONS] get-or-create TABLE ITEM... [--defaults JSON] [--default ITEM]...\n"
"    goc [OPTIONS] get TABLE ITEM...\n"
"    goc [OPTIONS] ping\n"
"    goc [OPTIONS] stats\n"
"    goc [OPTIONS] [-]          < requests.ndjson\n"
"    goc --help | --version\n"
"\n"
"DESCRIPTION\n"
"    goc sends requests to gocd over its NDJSON wire protocol and prints each\n"
"    response line on stdout, exactly as received (compact JSON, one per\n"
"    line).  Numbers in rows are never reformatted, so wide bigints and\n"
"    numerics keep every digit.\n"
"\n"
"OPTIONS\n"
"    --addr=HOST:PORT  TCP address of gocd (default " CLI_DEFAULT_ADDR ", or\n"
"                      $GOC_ADDR).  IPv6 as [::1]:7432.  A missing port\n"
"                      means 7432, a missing host 127.0.0.1.  unix:PATH\n"
"                      means a Unix socket, as --unix=PATH does.\n"
"    --unix=PATH       connect to gocd's Unix socket instead of TCP.\n"
"    --token=TOKEN     authenticate first (gocd's auth_token; also $GOC_TOKEN).\n"
"    --timeout=SECONDS give up (exit 3) when connecting takes longer, or when\n"
"                      a response is due and nothing arrives for SECONDS\n"
"                      (default 10; fractions allowed; 0 waits forever).\n"
"    --id=JSON         any JSON value, sent as the request's \"id\" and echoed\n"
"                      back in the response (commands only).\n"
"    --pretty          indent each response (digits are kept as received).\n"
"    --max-line=BYTES  longest response line accepted (default 64 MiB).\n"
"    --help, -h        this text.   --version, -V   print the version.\n"
"    Options may also follow the command; `--` ends them.\n"
"\n"
"COMMANDS\n"
"    get-or-create TABLE ITEM...\n"
"        Return the row of TABLE whose key columns equal the ITEMs, creating\n"
"        it if it does not exist.  The ITEMs must name exactly the table's\n"
"        configured key columns.  \"created\" is true for the one call that\n"
"        inserted the row.  (get_or_create is accepted too.)\n"
"        --defaults JSON   a JSON object of column: value used only when the\n"
"                          row is created.\n"
"        --default ITEM    one default column; repeatable, combines with\n"
"                          --defaults (a column may be given only once).\n"
"    get TABLE ITEM...\n"
"        Return the row if it exists; \"row\" is null when it does not.\n"
"    ping\n"
"        Check that gocd answers: {\"ok\":true,\"pong\":true}.\n"
"    stats\n"
"        Print gocd's counters.\n"
"    - (or no command)\n"
"        Pass-through: copy NDJSON request lines from stdin to gocd as they\n"
"        are read, print each response as it arrives, and half-close the\n"
"        connection at end of input.  Lines are sent verbatim; a missing\n"
"        final newline is added.  Blank lines get no response.\n"
"\n"
"ITEMS\n"
"    col=value    the column's value is the string `value` (PostgreSQL\n"
"                 converts it to the column's type: email=a@example.com,\n"
"                 id=5, at=2026-11-28T10:00:00Z, price=19.99).\n"
"    col:=JSON    the value is a JSON literal: id:=5, flag:=true, n:=null,\n"
"                 doc:='{\"a\":1}'.  Integers wider than 64 bits and exact\n"
"                 decimals should be given as strings (col=value).\n"
"    The column name ends at the first `=` (`:=` for JSON), so a column\n"
"    name cannot contain `=`.\n"
"\n"
"EXIT STATUS\n"
"    0  every response was ok\n"
"    1  at least one response was an error (\"ok\":false); also when gocd\n"
"       closed the connection after an error it documents as closing\n"
"       (too_large, overloaded, unauthorized)\n"
"    2  usage error: nothing was sent\n"
"    3  could not connect, timed out, the connection broke before every\n"
"       request was answered, or the reply was not the gocd protocol.  After\n"
"       a timeout the request may or may not have been carried out;\n"
"       get-or-create is safe to repeat.\n"
"\n"
"ENVIRONMENT\n"
"    GOC_ADDR     default for --addr when neither --addr nor --unix is given.\n"
"    GOC_TOKEN    default for --token (keeps the token out of ps and shell history).\n"
"\n"
"EXAMPLES\n"
"    goc ping\n"
"    goc get-or-create users email=a@example.com --defaults '{\"name\":\"Ann\"}'\n"
"    goc get-or-create users email=a@example.com --default name=Ann --default age:=31\n"
"    goc --id=7 get users email=a@example.com\n"
"    goc --unix=/run/gocd/gocd.sock get-or-create app.tags tenant:=3 name=red\n"
"    GOC_ADDR=db1:7432 goc --pretty stats\n"
"    printf '%s\\n' '{\"op\":\"ping\",\"id\":1}' '{\"op\":\"stats\",\"id\":2}' | goc\n"
"    goc --timeout=2 < requests.ndjson > responses.ndjson\n";

static void cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Report a command-line mistake on stderr; the caller exits CLI_EXIT_USAGE. */
static void cli_usage_error(const char *fmt, ...)
{
	va_list ap;
	fputs("goc: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'goc --help' for more information.\n", stderr);
}

/*
 * Parse a JSON literal from the command line.  Any value is allowed (not only
 * objects); duplicate members are refused for the same reason the protocol
 * refuses them.  Returns a new reference, or NULL after reporting.
 */
static json_t *cli_json_arg(const char *what, const char *text)
{
	json_error_t jerr;
	json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
	if (v == NULL)
		cli_usage_error("%s: invalid JSON: %s (at character %d)%s", what,
				jerr.text, jerr.position,
				strstr(jerr.text, "too big") ?
				"; give numbers wider than 64 bits as strings: col=value" : "");
	return v;
}

/*
 * Parse one `col=value` or `col:=JSON` item and add it to `obj`.  Returns 0,
 * or -1 after reporting (empty or repeated column, bad JSON, bad UTF-8).
 * `what` names the place for messages ("key", "--default").
 */
static int __attribute__((warn_unused_result))
cli_item_add(json_t *obj, const char *what, const char *item)
{
	const char *eq = strchr(item, '=');
	if (eq == NULL) {
		cli_usage_error("%s item \"%s\" is not col=value or col:=JSON", what, item);
		return -1;
	}
	bool typed = eq > item && eq[-1] == ':';
	size_t col_len = (size_t)(eq - item) - (typed ? 1 : 0);
	if (col_len == 0) {
		cli_usage_error("%s item \"%s\" has an empty column name", what, item);
		return -1;
	}
	char *col = strndup(item, col_len);
	if (col == NULL) {
		perror("goc");
		return -1;
	}
	int rc = -1;
	json_t *v = NULL;
	if (json_object_get(obj, col) != NULL) {
		cli_usage_error("%s column \"%s\" is given more than once", what, col);
		goto out;
	}
	if (typed) {
		char where[128];
		snprintf(where, sizeof where, "%s item \"%.80s\"", what, item);
		v = cli_json_arg(where, eq + 1);
	} else {
		/* json_string refuses invalid UTF-8, which the daemon would
		 * reject as bad_json anyway; say so before connecting. */
		v = json_string(eq + 1);
		if (v == NULL)
			cli_usage_error("%s item \"%s\": value is not valid UTF-8", what, col);
	}
	if (v == NULL)
		goto out;
	if (json_object_set_new(obj, col, v) != 0) {
		cli_usage_error("%s column \"%s\" is not valid UTF-8", what, col);
		goto out;
	}
	rc = 0;
out:
	free(col);
	return rc;
}

/* Merge --defaults JSON (must be an object) into o->defaults.  0 or -1. */
static int __attribute__((warn_unused_result))
cli_defaults_merge(struct cli_opts *o, const char *text)
{
	json_t *obj = cli_json_arg("--defaults", text);
	if (obj == NULL)
		return -1;
	if (!json_is_object(obj)) {
		cli_usage_error("--defaults must be a JSON object of column: value, got %s", text);
		json_decref(obj);
		return -1;
	}
	const char *col;
	json_t *v;
	json_object_foreach(obj, col, v) {
		if (json_object_get(o->defaults, col) != NULL) {
			cli_usage_error("--defaults column \"%s\" is given more than once", col);
			json_decref(obj);
			return -1;
		}
		json_object_set(o->defaults, col, v);
	}
	json_decref(obj);
	return 0;
}

/* Parse a non-negative number of seconds (fractions allowed).  0 or -1. */
static int __attribute__((warn_unused_result))
cli_parse_seconds(const char *s, double *out)
{
	char *end;
	errno = 0;
	double d = strtod(s, &end);
	if (errno || end == s || *end != '\0' || !isfinite(d) || d < 0 || d > 86400.0 * 365)
		return -1;
	*out = d;
	return 0;
}

/*
 * Split HOST:PORT (or [V6]:PORT, HOST, :PORT) into host and port buffers.
 * A missing host means 127.0.0.1, a missing port (no colon) 7432.  0 or -1.
 */
static int cli_split_hostport(const char *addr, char *host, size_t hostsz,
			      char *port, size_t portsz)
{
	const char *h = addr, *p = NULL;
	size_t hl;
	if (addr[0] == '[') {
		const char *close = strchr(addr, ']');
		if (close == NULL || (close[1] != '\0' && close[1] != ':'))
			return -1;
		h = addr + 1;
		hl = (size_t)(close - h);
		if (close[1] == ':')
			p = close + 2;
	} else {
		const char *colon = strrchr(addr, ':');
		if (colon && strchr(addr, ':') != colon)
			return -1; /* bare IPv6 needs brackets to tell the port apart */
		hl = colon ? (size_t)(colon - addr) : strlen(addr);
		if (colon)
			p = colon + 1;
	}
	if (hl == 0) {
		h = "127.0.0.1";
		hl = strlen(h);
	}
	if (p == NULL)
		p = CLI_DEFAULT_PORT;
	else if (*p == '\0')
		return -1; /* "host:" is a port left out by mistake; gocd --listen refuses it too */
	/* getaddrinfo would take 83636 as 18100 (modulo 65536) */
	long port_no = 0;
	for (const char *d = p; *d; d++) {
		if (*d < '0' || *d > '9' || port_no > 65535)
			return -1;
		port_no = port_no * 10 + (*d - '0');
	}
	if (port_no < 1 || port_no > 65535)
		return -1;
	if (hl >= hostsz || strlen(p) >= portsz)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, p);
	return 0;
}

enum {
	CLI_OPT_ADDR = 256,
	CLI_OPT_UNIX,
	CLI_OPT_TIMEOUT,
	CLI_OPT_ID,
	CLI_OPT_PRETTY,
	CLI_OPT_TOKEN,
	CLI_OPT_MAX_LINE,
	CLI_OPT_DEFAULTS,
	CLI_OPT_DEFAULT,
};

static const struct option cli_longopts[] = {
	{"addr", required_argument, NULL, CLI_OPT_ADDR},
	{"unix", required_argument, NULL, CLI_OPT_UNIX},
	{"timeout", required_argument, NULL, CLI_OPT_TIMEOUT},
	{"id", required_argument, NULL, CLI_OPT_ID},
	{"pretty", no_argument, NULL, CLI_OPT_PRETTY},
	{"token", required_argument, NULL, CLI_OPT_TOKEN},
	{"max-line", required_argument, NULL, CLI_OPT_MAX_LINE},
	{"defaults", required_argument, NULL, CLI_OPT_DEFAULTS},
	{"default", required_argument, NULL, CLI_OPT_DEFAULT},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{NULL, 0, NULL, 0},
};

/*
 * Fill *o from argv.  Returns -1 to proceed, or an exit status (0 after
 * --help/--version, CLI_EXIT_USAGE after reporting a mistake).
 */
static int cli_args_parse(int argc, char **argv, struct cli_opts *o)
{
	bool saw_addr = false, saw_defaults = false;

	memset(o, 0, sizeof *o);
	o->timeout = CLI_DEFAULT_TIMEOUT;
	o->max_line = CLI_DEFAULT_MAX_LINE;
	o->defaults = json_object();
	if (o->defaults == NULL)
		return CLI_EXIT_USAGE;

	opterr = 0; /* we word the messages ourselves */
	int c;
	while ((c = getopt_long(argc, argv, ":hV", cli_longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			fputs(cli_usage_text, stdout);
			return CLI_EXIT_OK;
		case 'V':
			printf("goc %s (gocd wire protocol: NDJSON)\n", GOCD_VERSION);
			return CLI_EXIT_OK;
		case CLI_OPT_ADDR:
			o->addr = optarg;
			saw_addr = true;
			break;
		case CLI_OPT_UNIX:
			o->unix_path = optarg;
			break;
		case CLI_OPT_TIMEOUT:
			if (cli_parse_seconds(optarg, &o->timeout) != 0) {
				cli_usage_error("--timeout=%s: expected seconds >= 0 (0 waits forever)",
						optarg);
				return CLI_EXIT_USAGE;
			}
			break;
		case CLI_OPT_ID:
			if (o->id)
				json_decref(o->id);
			o->id = cli_json_arg("--id", optarg);
			if (o->id == NULL)
				return CLI_EXIT_USAGE;
			break;
		case CLI_OPT_PRETTY:
			o->pretty = true;
			break;
		case CLI_OPT_TOKEN:
			o->token = optarg;
			break;
		case CLI_OPT_MAX_LINE: {
			char *end;
			errno = 0;
			unsigned long long n = strtoull(optarg, &end, 10);
			if (errno || end == optarg || *end || optarg[0] == '-' ||
			    n < CLI_MIN_MAX_LINE || n > SIZE_MAX / 2) {
				cli_usage_error("--max-line=%s: expected a number of bytes >= %zu",
						optarg, CLI_MIN_MAX_LINE);
				return CLI_EXIT_USAGE;
			}
			o->max_line = (size_t)n;
			break;
		}
		case CLI_OPT_DEFAULTS:
			saw_defaults = true;
			if (cli_defaults_merge(o, optarg) != 0)
				return CLI_EXIT_USAGE;
			break;
		case CLI_OPT_DEFAULT:
			saw_defaults = true;
			if (cli_item_add(o->defaults, "--default", optarg) != 0)
				return CLI_EXIT_USAGE;
			break;
		case ':':
			cli_usage_error("option %s needs a value", argv[optind - 1]);
			return CLI_EXIT_USAGE;
		default:
			if (optopt && optopt < 256)
				cli_usage_error("unknown option -%c", optopt);
			else
				cli_usage_error("unknown or ambiguous option %s", argv[optind - 1]);
			return CLI_EXIT_USAGE;
		}
	}
	if (!saw_defaults) {
		json_decref(o->defaults);
		o->defaults = NULL;
	}

	if (saw_addr && o->unix_path) {
		cli_usage_error("give --addr or --unix, not both");
		return CLI_EXIT_USAGE;
	}
	if (!saw_addr && !o->unix_path) {
		const char *env = getenv("GOC_ADDR");
		o->addr = env && *env ? env : CLI_DEFAULT_ADDR;
	}
	if (o->addr && strncmp(o->addr, "unix:", 5) == 0) {
		o->unix_path = o->addr + 5;
		o->addr = NULL;
	}
	if (o->addr && (*o->addr == '\0' || cli_split_hostport(o->addr, o->host, sizeof o->host,
							      o->port, sizeof o->port) != 0)) {
		cli_usage_error("cannot parse address \"%s\" (from %s): expected HOST:PORT "
				"(PORT 1-65535), [IPv6]:PORT or unix:PATH", o->addr,
				saw_addr ? "--addr" : "GOC_ADDR");
		return CLI_EXIT_USAGE;
	}
	if (o->unix_path) {
		struct sockaddr_un sun;
		if (*o->unix_path == '\0' || strlen(o->unix_path) >= sizeof sun.sun_path) {
			cli_usage_error("Unix socket path \"%s\" is empty or longer than %zu bytes",
					o->unix_path, sizeof sun.sun_path - 1);
			return CLI_EXIT_USAGE;
		}
	}

	char **args = argv + optind;
	int nargs = argc - optind;
	const char *cmd = nargs > 0 ? args[0] : "-";

	if (strcmp(cmd, "-") == 0) {
		o->mode = CLI_MODE_STDIN;
		if (nargs > 1) {
			cli_usage_error("pass-through mode takes no arguments, got \"%s\"", args[1]);
			return CLI_EXIT_USAGE;
		}
		/* These shape one request goc builds; in pass-through mode the
		 * lines are sent as they are, so they would be silently lost. */
		if (o->id || saw_defaults) {
			cli_usage_error("--id, --defaults and --default apply to a COMMAND, "
					"not to requests read from stdin");
			return CLI_EXIT_USAGE;
		}
		/* A bare `goc` typed at a terminal would otherwise sit silent. */
		if (nargs == 0 && isatty(STDIN_FILENO))
			fputs("goc: reading NDJSON requests from the terminal, one per line; "
			      "Ctrl-D ends (see goc --help for commands)\n", stderr);
		return -1;
	}

	o->mode = CLI_MODE_COMMAND;
	if (strcmp(cmd, "get-or-create") == 0 || strcmp(cmd, "get_or_create") == 0)
		o->op = GOC_OP_GET_OR_CREATE;
	else if (strcmp(cmd, "get") == 0)
		o->op = GOC_OP_GET;
	else if (strcmp(cmd, "ping") == 0)
		o->op = GOC_OP_PING;
	else if (strcmp(cmd, "stats") == 0)
		o->op = GOC_OP_STATS;
	else {
		cli_usage_error("unknown command \"%s\" (expected get-or-create, get, ping, stats or -)",
				cmd);
		return CLI_EXIT_USAGE;
	}

	if (o->op == GOC_OP_PING || o->op == GOC_OP_STATS) {
		if (nargs > 1) {
			cli_usage_error("%s takes no arguments, got \"%s\"", cmd, args[1]);
			return CLI_EXIT_USAGE;
		}
		if (saw_defaults) {
			cli_usage_error("--defaults and --default are only for get-or-create");
			return CLI_EXIT_USAGE;
		}
		return -1;
	}

	if (o->op == GOC_OP_GET && saw_defaults) {
		cli_usage_error("--defaults and --default are only for get-or-create");
		return CLI_EXIT_USAGE;
	}
	if (nargs < 2 || args[1][0] == '\0') {
		cli_usage_error("%s needs a TABLE", cmd);
		return CLI_EXIT_USAGE;
	}
	o->table = args[1];
	json_t *t = json_string(o->table); /* validates UTF-8 */
	if (t == NULL) {
		cli_usage_error("table name is not valid UTF-8");
		return CLI_EXIT_USAGE;
	}
	json_decref(t);
	if (nargs < 3) {
		cli_usage_error("%s needs at least one key item col=value or col:=JSON", cmd);
		return CLI_EXIT_USAGE;
	}
	o->key = json_object();
	if (o->key == NULL)
		return CLI_EXIT_USAGE;
	for (int i = 2; i < nargs; i++)
		if (cli_item_add(o->key, "key", args[i]) != 0)
			return CLI_EXIT_USAGE;
	return -1;
}

/* ------------------------------------------------------------------ */
/* Connecting                                                          */

static double cli_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* poll() timeout in ms until `deadline`; -1 (forever) when deadline is 0. */
static int cli_poll_ms(double deadline)
{
	if (deadline == 0)
		return -1;
	double left = deadline - cli_now();
	if (left <= 0)
		return 0;
	double ms = ceil(left * 1000.0);
	return ms > 1e9 ? 1000000000 : (int)ms;
}

/*
 * Finish a non-blocking connect on fd by `deadline`.  Returns 0, or an errno
 * value (ETIMEDOUT when the deadline passed).
 */
static int cli_connect_wait(int fd, const struct sockaddr *sa, socklen_t salen,
			    double deadline)
{
	if (connect(fd, sa, salen) == 0)
		return 0;
	if (errno != EINPROGRESS)
		return errno;
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int n = poll(&p, 1, cli_poll_ms(deadline));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno;
		if (n == 0)
			return ETIMEDOUT;
		int err = 0;
		socklen_t len = sizeof err;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
			return errno;
		return err;
	}
}

/*
 * Connect to o's address within the timeout, trying each resolved address in
 * turn.  Returns a non-blocking socket, or -1 after printing why (address and
 * errno text) on stderr.  *name is set to the address as the user gave it,
 * for later messages.
 */
static int cli_connect(const struct cli_opts *o, char *name, size_t namesz)
{
	double deadline = o->timeout > 0 ? cli_now() + o->timeout : 0;
	int err;

	if (o->unix_path) {
		snprintf(name, namesz, "unix:%s", o->unix_path);
		struct sockaddr_un sun = {.sun_family = AF_UNIX};
		strcpy(sun.sun_path, o->unix_path); /* length checked in cli_args_parse */
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			fprintf(stderr, "goc: cannot create a socket for %s: %s\n", name,
				strerror(errno));
			return -1;
		}
		err = cli_connect_wait(fd, (struct sockaddr *)&sun, sizeof sun, deadline);
		if (err == 0)
			return fd;
		close(fd);
		fprintf(stderr, "goc: cannot connect to %s: %s%s\n", name, strerror(err),
			err == ENOENT || err == ECONNREFUSED ? " (is gocd running? see --unix)" : "");
		return -1;
	}

	snprintf(name, namesz, "%s", o->addr);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	int gai = getaddrinfo(o->host, o->port, &hints, &res);
	if (gai != 0) {
		fprintf(stderr, "goc: cannot resolve %s: %s\n", name,
			gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
		return -1;
	}
	err = ENOENT;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
				ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		err = cli_connect_wait(fd, ai->ai_addr, ai->ai_addrlen, deadline);
		if (err == 0) {
			/* Requests are small and latency is the point; do not let
			 * Nagle hold a pipelined request back for an ACK. */
			int one = 1;
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
			freeaddrinfo(res);
			return fd;
		}
		close(fd);
		if (err == ETIMEDOUT)
			break; /* the whole --timeout is spent */
	}
	freeaddrinfo(res);
	if (err == ETIMEDOUT)
		fprintf(stderr, "goc: cannot connect to %s: %s (no answer within --timeout=%gs)\n",
			name, strerror(err), o->timeout);
	else
		fprintf(stderr, "goc: cannot connect to %s: %s%s\n", name, strerror(err),
			err == ECONNREFUSED ? " (is gocd running? see --addr, --unix, GOC_ADDR)" : "");
	return -1;
}

/* ------------------------------------------------------------------ */
/* Printing responses                                                  */

static void cli_indent(FILE *f, int depth)
{
	fputc('\n', f);
	for (int i = 0; i < depth; i++)
		fputs("  ", f);
}

/*
 * Re-indent one JSON text that is already known to be valid.  This only moves
 * whitespace: strings and numbers are copied byte for byte, which jansson's
 * own pretty-printer cannot promise (it would route a numeric column through
 * a double or fail on integers wider than 64 bits).
 */
static void cli_print_pretty(FILE *f, const char *s, size_t len)
{
	int depth = 0;
	bool in_str = false, esc = false;

	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (in_str) {
			fputc(c, f);
			if (esc)
				esc = false;
			else if (c == '\\')
				esc = true;
			else if (c == '"')
				in_str = false;
			continue;
		}
		switch (c) {
		case '"':
			in_str = true;
			fputc(c, f);
			break;
		case '{':
		case '[': {
			size_t j = i + 1;
			while (j < len && strchr(" \t\r\n", s[j]) && s[j] != '\0')
				j++;
			fputc(c, f);
			if (j < len && s[j] == (c == '{' ? '}' : ']')) {
				fputc(s[j], f); /* {} and [] stay on one line */
				i = j;
			} else {
				cli_indent(f, ++depth);
			}
			break;
		}
		case '}':
		case ']':
			cli_indent(f, --depth);
			fputc(c, f);
			break;
		case ',':
			fputc(c, f);
			cli_indent(f, depth);
			break;
		case ':':
			fputs(": ", f);
			break;
		case ' ':
		case '\t':
		case '\r':
		case '\n':
			break;
		default:
			fputc(c, f);
		}
	}
	fputc('\n', f);
}

/* ------------------------------------------------------------------ */
/* The exchange                                                        */

/*
 * The session's phases, in the only order they can happen.  Every move goes
 * through cli_session_phase, which refuses to go backwards.
 */
enum cli_phase {
	CLI_PHASE_SENDING,     /* stdin still open: its bytes go out as they come */
	CLI_PHASE_FLUSHING,    /* no more requests; queued bytes still being sent */
	CLI_PHASE_HALF_CLOSED, /* all sent and SHUT_WR done: only reading responses */
	CLI_PHASE_DONE,        /* every request answered, or the connection ended */
};

/*
 * Blank-line tracking for stdin, mirroring frame_next + frame_is_blank on the
 * daemon side (one trailing CR is dropped; spaces and tabs are blank), so
 * goc knows how many responses are due without parsing the requests.
 */
struct cli_linescan {
	bool content; /* the current line has a non-blank byte */
	bool cr;      /* the previous byte was a CR that may still be trailing */
	bool partial; /* bytes were read since the last LF */
};

/* Feed n bytes; returns how many non-blank lines they completed. */
static long cli_linescan_feed(struct cli_linescan *ls, const char *buf, size_t n)
{
	long lines = 0;
	for (size_t i = 0; i < n; i++) {
		char c = buf[i];
		if (c == '\n') {
			if (ls->content)
				lines++;
			ls->content = ls->cr = ls->partial = false;
			continue;
		}
		ls->partial = true;
		if (ls->cr)
			ls->content = true; /* that CR was not the one before LF */
		ls->cr = c == '\r';
		if (c != ' ' && c != '\t' && c != '\r')
			ls->content = true;
	}
	return lines;
}

struct cli_session {
	int fd;
	const char *name;        /* address for messages */
	const struct cli_opts *opts;
	enum cli_phase phase;
	int in_fd;               /* stdin in pass-through mode, else -1 */
	struct cli_linescan scan;
	struct evbuffer *out;    /* request bytes not yet sent; owned */
	struct evbuffer *in;     /* response bytes not yet framed; owned */
	size_t in_searched;      /* of those, searched for an LF already (frame_next) */
	long due;                /* requests queued or sent, minus responses */
	long errors;
	enum goc_err last_error; /* code of the latest error response */
	const json_t *expect_id; /* command mode: the id we sent, or NULL */
	bool auth_pending;       /* the next response answers our auth request: not printed */
	double last_progress;    /* when bytes last moved on the socket */

	/* The exchange broke; set and reported once, by cli_session_fail. */
	bool failed;
	bool closed_by_peer;     /* EOF or reset from gocd before everything was answered */
};

static const char *const cli_phase_names[] = {
	[CLI_PHASE_SENDING] = "sending",
	[CLI_PHASE_FLUSHING] = "flushing",
	[CLI_PHASE_HALF_CLOSED] = "half-closed",
	[CLI_PHASE_DONE] = "done",
};

static const char *cli_phase_name(enum cli_phase p)
{
	return (unsigned)p <= CLI_PHASE_DONE ? cli_phase_names[p] : "?";
}

static void cli_session_phase(struct cli_session *s, enum cli_phase to)
{
	if (to < s->phase) {
		/* A bug, not a runtime condition: say so loudly. */
		fprintf(stderr, "goc: internal error: phase %s -> %s\n",
			cli_phase_name(s->phase), cli_phase_name(to));
		abort();
	}
	s->phase = to;
}

static void cli_session_fail(struct cli_session *s, bool by_peer, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Report a broken exchange once and end the session. */
static void cli_session_fail(struct cli_session *s, bool by_peer, const char *fmt, ...)
{
	if (!s->failed) {
		va_list ap;
		fputs("goc: ", stderr);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
	s->failed = true;
	s->closed_by_peer = by_peer;
	cli_session_phase(s, CLI_PHASE_DONE);
}

/*
 * Decide ok/error for a line codec_parse_response refused.  The codec parses
 * integers as 64-bit, so a row holding a wider numeric (legal: gocd copies
 * PostgreSQL's digits) fails there; reading numbers as doubles is fine for
 * the only thing we need here, the "ok" member.  Returns 1 ok, 0 error, -1 when
 * the line is not a gocd response at all.
 */
static int cli_response_ok_fallback(const char *line, size_t len, enum goc_err *code)
{
	json_t *root = json_loadb(line, len, JSON_DECODE_INT_AS_REAL, NULL);
	if (root == NULL)
		return -1;
	int rc = -1;
	json_t *ok = json_object_get(root, "ok");
	if (json_is_boolean(ok)) {
		rc = json_is_true(ok);
		if (!rc) {
			const char *c = json_string_value(
				json_object_get(json_object_get(root, "error"), "code"));
			*code = c ? goc_err_from_name(c) : GOC_E_INTERNAL;
			if (*code == GOC_E__COUNT)
				*code = GOC_E_INTERNAL;
		}
	}
	json_decref(root);
	return rc;
}

/* Handle one response line: print it, count it.  Blank lines are skipped. */
static void cli_session_response(struct cli_session *s, const char *line, size_t len)
{
	struct goc_response r;
	int ok;
	enum goc_err code = GOC_OK;
	bool valid = true;

	if (frame_is_blank(line, len))
		return;
	if (codec_parse_response(line, len, &r) == 0) {
		ok = r.ok;
		code = r.code;
		if (s->expect_id && (r.id == NULL || !json_equal(r.id, s->expect_id)))
			fprintf(stderr, "goc: warning: response id does not match the request's --id\n");
	} else {
		ok = cli_response_ok_fallback(line, len, &code);
		valid = ok >= 0;
	}
	codec_response_free(&r);

	if (s->auth_pending && valid) {
		s->auth_pending = false;
		s->due--;
		if (!ok) {
			s->errors++;
			s->last_error = code;
			if (code == GOC_E_UNAUTHORIZED) {
				/* gocd closes the connection after a wrong token
				 * and carries out nothing sent after it: one line
				 * says so, not a second about the close. */
				cli_session_fail(s, true, "authentication refused by %s (check --token / "
						 "GOC_TOKEN); no request was carried out", s->name);
			} else {
				/* Not about the token (overloaded, say): the answer
				 * itself tells why, as it would without a token. */
				fwrite(line, 1, len, stdout);
				fputc('\n', stdout);
			}
		}
		return;
	}
	if (s->opts->pretty && valid)
		cli_print_pretty(stdout, line, len);
	else {
		fwrite(line, 1, len, stdout);
		fputc('\n', stdout);
	}

	if (!valid) {
		cli_session_fail(s, false, "%s sent a line that is not a gocd response "
				 "(is it gocd?)", s->name);
		return;
	}
	s->due--;
	if (!ok) {
		s->errors++;
		s->last_error = code;
	}
}

/*
 * Frame and handle every complete line in s->in.  At EOF a leftover partial
 * line means the response was cut off.
 */
static void cli_session_frame(struct cli_session *s, bool eof)
{
	const char *line;
	size_t len, consumed;

	while (s->phase != CLI_PHASE_DONE) {
		enum frame_rc rc = frame_next(s->in, s->opts->max_line, &s->in_searched, &line, &len,
					      &consumed);
		if (rc == FRAME_NEED_MORE)
			break;
		if (rc == FRAME_TOO_LARGE) {
			cli_session_fail(s, false, "a response from %s is longer than "
					 "--max-line=%zu bytes", s->name, s->opts->max_line);
			return;
		}
		cli_session_response(s, line, len);
		evbuffer_drain(s->in, consumed);
	}
	if (eof && s->phase != CLI_PHASE_DONE && evbuffer_get_length(s->in) > 0)
		cli_session_fail(s, true, "%s closed the connection in the middle of a response",
				 s->name);
	if (fflush(stdout) != 0) {
		/* Not a connection problem, but there is no one left to tell. */
		fprintf(stderr, "goc: cannot write to stdout: %s\n", strerror(errno));
		exit(CLI_EXIT_ERROR);
	}
}

/* Read from stdin into s->out; at EOF, add a missing final LF and stop. */
static void cli_session_read_stdin(struct cli_session *s)
{
	char buf[CLI_IO_CHUNK];
	ssize_t n = read(s->in_fd, buf, sizeof buf);
	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return;
		fprintf(stderr, "goc: cannot read stdin: %s; sending what was read\n",
			strerror(errno));
		n = 0;
	}
	if (n == 0) {
		/* The daemon only answers a line once it sees its LF, and on
		 * half-close a trailing partial line would just be lost. */
		if (s->scan.partial) {
			evbuffer_add(s->out, "\n", 1);
			s->due += cli_linescan_feed(&s->scan, "\n", 1);
		}
		cli_session_phase(s, CLI_PHASE_FLUSHING);
		return;
	}
	/* The --timeout clock measures gocd, not the user: when nothing was
	 * owed, it starts now rather than at the last response. */
	if (s->due <= 0 && evbuffer_get_length(s->out) == 0)
		s->last_progress = cli_now();
	evbuffer_add(s->out, buf, (size_t)n);
	s->due += cli_linescan_feed(&s->scan, buf, (size_t)n);
}

/* Send what s->out holds, as far as the socket takes it. */
static void cli_session_send(struct cli_session *s)
{
	size_t n = evbuffer_get_length(s->out);
	if (n > CLI_IO_CHUNK)
		n = CLI_IO_CHUNK;
	unsigned char *p = evbuffer_pullup(s->out, (ev_ssize_t)n);
	/* MSG_NOSIGNAL: a daemon that closed on us (too_large, overloaded)
	 * must give an error we can explain, not kill goc with SIGPIPE. */
	ssize_t w = send(s->fd, p, n, MSG_NOSIGNAL);
	if (w < 0) {
		if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		/* Stop sending but keep reading: the reason (an error response
		 * before gocd closed) may already be waiting in our socket. */
		int err = errno;
		evbuffer_drain(s->out, evbuffer_get_length(s->out));
		bool unread = s->phase == CLI_PHASE_SENDING;
		if (unread)
			cli_session_phase(s, CLI_PHASE_FLUSHING);
		cli_session_phase(s, CLI_PHASE_HALF_CLOSED);
		fprintf(stderr, "goc: cannot send to %s: %s%s\n", s->name, strerror(err),
			unread ? "; the rest of stdin is not sent" : "");
		return;
	}
	evbuffer_drain(s->out, (size_t)w);
	s->last_progress = cli_now();
}

/* Read what the socket holds and handle complete response lines. */
static void cli_session_recv(struct cli_session *s)
{
	int n = evbuffer_read(s->in, s->fd, CLI_IO_CHUNK);
	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		int err = errno;
		cli_session_frame(s, false);
		if (s->phase != CLI_PHASE_DONE)
			cli_session_fail(s, true, "connection to %s failed with %ld request%s "
					 "unanswered: %s", s->name, s->due > 0 ? s->due : 0,
					 s->due == 1 ? "" : "s", strerror(err));
		return;
	}
	s->last_progress = cli_now();
	cli_session_frame(s, n == 0);
	if (n == 0 && s->phase != CLI_PHASE_DONE) {
		if (s->due > 0)
			cli_session_fail(s, true, "%s closed the connection (end of stream) "
					 "with %ld request%s unanswered", s->name, s->due,
					 s->due == 1 ? "" : "s");
		else if (s->phase == CLI_PHASE_SENDING)
			cli_session_fail(s, true, "%s closed the connection (end of stream)",
					 s->name);
		else
			cli_session_phase(s, CLI_PHASE_DONE);
	}
}

/*
 * Run the exchange until every request is answered or the connection ends.
 * Reading and writing are interleaved in one poll loop, so a long pipelined
 * input cannot deadlock against a daemon that is busy writing responses.
 */
static void cli_session_run(struct cli_session *s)
{
	const struct cli_opts *o = s->opts;

	s->last_progress = cli_now();
	while (s->phase != CLI_PHASE_DONE) {
		if (s->phase == CLI_PHASE_FLUSHING && evbuffer_get_length(s->out) == 0) {
			/* Half-close: gocd answers everything it has read, then
			 * closes; and goc never leaves it waiting for more. */
			/* ENOTCONN: gocd already closed (overloaded); the read
			 * side reports that with the reason. */
			if (shutdown(s->fd, SHUT_WR) != 0 && errno != ENOTCONN && !s->failed)
				fprintf(stderr, "goc: shutdown of %s: %s\n", s->name, strerror(errno));
			cli_session_phase(s, CLI_PHASE_HALF_CLOSED);
		}
		if (s->phase == CLI_PHASE_HALF_CLOSED && s->due <= 0 && !s->failed) {
			cli_session_phase(s, CLI_PHASE_DONE);
			break;
		}

		struct pollfd p[2];
		int np = 0;
		p[np++] = (struct pollfd){
			.fd = s->fd,
			.events = POLLIN | (evbuffer_get_length(s->out) ? POLLOUT : 0),
		};
		bool want_stdin = s->phase == CLI_PHASE_SENDING &&
				  evbuffer_get_length(s->out) < CLI_OUT_HIGH;
		if (want_stdin)
			p[np++] = (struct pollfd){.fd = s->in_fd, .events = POLLIN};

		/* The clock runs only while gocd owes us something: an idle
		 * interactive session may wait for the user forever. */
		bool owed = s->due > 0 || evbuffer_get_length(s->out) > 0;
		double deadline = owed && o->timeout > 0 ? s->last_progress + o->timeout : 0;
		int ms = cli_poll_ms(deadline);
		if (deadline != 0 && ms == 0) {
			cli_session_fail(s, false, "timed out after %gs waiting for %ld response%s "
					 "from %s: %s (the request%s may or may not have been "
					 "carried out; get-or-create is safe to repeat)",
					 o->timeout, s->due, s->due == 1 ? "" : "s", s->name,
					 strerror(ETIMEDOUT), s->due == 1 ? "" : "s");
			break;
		}
		int n = poll(p, (nfds_t)np, ms);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			cli_session_fail(s, false, "poll: %s", strerror(errno));
			break;
		}
		if (n == 0)
			continue;
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR))
			cli_session_recv(s);
		if (s->phase != CLI_PHASE_DONE && (p[0].revents & POLLOUT))
			cli_session_send(s);
		if (s->phase == CLI_PHASE_SENDING && want_stdin &&
		    (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
			cli_session_read_stdin(s);
	}
}

/*
 * The exit status, per the table in --help.  A close by gocd is explained
 * (exit 1, not 3) when the last response was an error gocd documents as
 * closing the connection.
 */
static int cli_session_status(const struct cli_session *s)
{
	if (s->failed) {
		bool explained = s->closed_by_peer && s->errors > 0 &&
				 (s->last_error == GOC_E_TOO_LARGE ||
				  s->last_error == GOC_E_OVERLOADED ||
				  s->last_error == GOC_E_UNAUTHORIZED);
		return explained ? CLI_EXIT_ERROR : CLI_EXIT_CONN;
	}
	return s->errors > 0 ? CLI_EXIT_ERROR : CLI_EXIT_OK;
}

int main(int argc, char **argv)
{
	struct cli_opts o;
	int rc = cli_args_parse(argc, argv, &o);
	if (rc >= 0) {
		cli_opts_free(&o);
		return rc;
	}

	struct cli_session s = {
		.fd = -1,
		.opts = &o,
		.in_fd = -1,
		.out = evbuffer_new(),
		.in = evbuffer_new(),
		.last_error = GOC_OK,
	};
	if (s.out == NULL || s.in == NULL) {
		fputs("goc: out of memory\n", stderr);
		return CLI_EXIT_CONN;
	}
	if (o.token == NULL)
		o.token = getenv("GOC_TOKEN");
	if (o.token && *o.token) {
		/* gocd with auth_token wants this first on TCP (on a Unix socket it
		 * is simply answered ok). */
		codec_render_auth(s.out, o.token);
		s.auth_pending = true;
		s.due++;
	}
	if (o.mode == CLI_MODE_COMMAND) {
		codec_render_request(s.out, o.op, o.id, o.table, o.key, o.defaults);
		s.expect_id = o.id;
		s.due++;
		s.phase = CLI_PHASE_FLUSHING;
	} else {
		s.in_fd = STDIN_FILENO;
		s.phase = CLI_PHASE_SENDING;
	}

	char name[512];
	s.fd = cli_connect(&o, name, sizeof name);
	if (s.fd < 0) {
		rc = CLI_EXIT_CONN;
	} else {
		s.name = name;
		cli_session_run(&s);
		rc = cli_session_status(&s);
		close(s.fd);
	}
	evbuffer_free(s.out);
	evbuffer_free(s.in);
	cli_opts_free(&o);
	return rc;
}
