/*
 * fuzz_config.c - libFuzzer target for the config file parser.
 *
 * Owns: the oracles checked on every input: config_parse_text on a
 * config_defaults'd struct either succeeds or fails with a non-empty message
 * naming the origin and line; every option stays within the bounds the
 * option table gives (config_dump must print a value for each); every table
 * has a non-empty name and 1..32 non-empty key columns; config_free releases
 * everything (LeakSanitizer checks).
 * Must never: open sockets, touch the network or the event loop (config.c
 * promises the same), or write anything on the happy path.
 * Build: make fuzz (links daemon/config.c and daemon/log.c only).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond, what)                                                       \
	do {                                                                    \
		if (!(cond)) {                                                  \
			fprintf(stderr, "fuzz_config: %s\n", what);             \
			abort();                                                \
		}                                                               \
	} while (0)

static FILE *devnull;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (devnull == NULL) {
		devnull = fopen("/dev/null", "w");
		CHECK(devnull != NULL, "open /dev/null");
	}
	/* config_parse_text takes a C string, as load_file hands it one after
	 * refusing NUL bytes; an embedded NUL just ends the text early here. */
	char *text = malloc(size + 1);
	CHECK(text != NULL, "malloc");
	memcpy(text, data, size);
	text[size] = '\0';

	struct config cfg;
	config_defaults(&cfg);
	char err[512];
	err[0] = '\0';
	int rc = config_parse_text(&cfg, text, "fuzz.conf", err, sizeof err);
	if (rc != 0) {
		CHECK(rc == -1, "unexpected return value");
		CHECK(strncmp(err, "fuzz.conf:", 10) == 0, "error does not name the origin");
	}
	/* Whatever happened, the struct must be consistent (a failed line may
	 * leave earlier lines applied: config_load throws it away, but it must
	 * still be freeable and printable). */
	CHECK(cfg.pool_size >= 1 && cfg.pool_size <= 256, "pool_size out of bounds");
	CHECK(cfg.max_line >= 64 && cfg.max_line <= 16777216, "max_line out of bounds");
	CHECK(cfg.max_output >= 4096, "max_output out of bounds");
	CHECK(cfg.max_client_memory >= 1048576, "max_client_memory out of bounds");
	CHECK(cfg.request_timeout >= 10, "request_timeout out of bounds");
	CHECK(cfg.unix_mode >= 0 && cfg.unix_mode <= 0777, "unix_mode out of bounds");
	CHECK(cfg.listen && cfg.postgres && cfg.log_level && cfg.auth_token, "string option NULL");
	for (int i = 0; i < cfg.ntables; i++) {
		CHECK(cfg.tables[i].name && *cfg.tables[i].name, "empty table name");
		CHECK(cfg.tables[i].ncols >= 1 && cfg.tables[i].ncols <= 32, "key column count");
		for (int j = 0; j < cfg.tables[i].ncols; j++)
			CHECK(cfg.tables[i].cols[j] && *cfg.tables[i].cols[j], "empty key column");
	}
	config_dump(&cfg, devnull);
	config_free(&cfg);
	free(text);
	return 0;
}
