/*
 * config.h - gocd's options: one table declares every option once.
 *
 * Owns: option names, types, defaults, bounds and help; parsing of the
 * config file and of command-line flags (flags override the file).
 * Must never: act on an option (open sockets, connect); it only fills
 * struct config, so a configuration can be checked without side effects.
 */
#ifndef GOCD_CONFIG_H
#define GOCD_CONFIG_H

#include <stddef.h>
#include <stdio.h>

struct table_conf {
	char *name;   /* as clients name it; passed to to_regclass() */
	char **cols;  /* key columns, exactly as pg_attribute.attname */
	int ncols;
};

struct config {
	char *listen;       /* HOST:PORT, "" = no TCP listener */
	char *unix_path;    /* "" = no Unix socket */
	int unix_mode;
	char *postgres;     /* libpq conninfo */
	struct table_conf *tables;
	int ntables;
	int pool_size;
	int batch_max;
	int insert_batches;
	int max_clients;
	int max_line;
	int max_pending;
	int max_output;
	int max_client_memory; /* bytes, all clients together */
	int max_waiters;
	int request_timeout;  /* ms */
	int connect_timeout;  /* ms */
	int shutdown_timeout; /* ms */
	int retry_limit;
	char *log_level;
	char *auth_token;      /* "" = TCP clients need no token */
	char *auth_token_file; /* "" = none; else auth_token is read from it */
	int client_idle_timeout; /* ms, 0 = never */
	int slow_request_ms;  /* 0 = no slow-request log */
	char *admin_listen;   /* HOST:PORT for /metrics and /healthz, "" = none */
};

struct cli_flags {
	int test_only; /* -t */
	int help;
	int version;
	const char *config_path;
};

/*
 * Build a configuration: defaults, then the file (--config), then flags.
 * Returns 0, or -1 with a message naming the option, file and line in err.
 */
int config_load(struct config *cfg, struct cli_flags *cli, int argc, char **argv,
		char *err, size_t errlen) __attribute__((warn_unused_result));

/* Parse a config file's text onto cfg (used by config_load and the fuzzer). */
int config_parse_text(struct config *cfg, const char *text, const char *origin,
		      char *err, size_t errlen) __attribute__((warn_unused_result));

void config_defaults(struct config *cfg);
/* The option table, for tests that check docs against it. */
int config_option_count(void);
const char *config_option_name(int i);
void config_free(struct config *cfg);
void config_usage(FILE *out);
/* Print the effective configuration in config-file syntax (for -t -v). */
void config_dump(const struct config *cfg, FILE *out);

#endif
