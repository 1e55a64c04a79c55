/*
 * codec.h - requests and responses of the gocd wire protocol <-> JSON.
 *
 * Owns: the request schema (which fields, which types), the JSON -> text
 * mapping of column values, and the exact bytes of every response line.
 * Must never: know about tables, PostgreSQL or sockets; include daemon or
 * client headers.  The daemon, the CLI, goc-bench and the fuzzer all go
 * through this file so that there is one parser, not three.
 */
#ifndef GOC_PROTO_CODEC_H
#define GOC_PROTO_CODEC_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "errors.h"

struct evbuffer;

enum goc_op {
	GOC_OP_GET_OR_CREATE,
	GOC_OP_GET,
	GOC_OP_PING,
	GOC_OP_STATS,
	GOC_OP_AUTH,
	GOC_OP__COUNT
};

const char *codec_op_name(enum goc_op op);

/* Longest error message we produce; longer text is cut. */
#define CODEC_MSG_MAX 512

struct codec_error {
	enum goc_err code;
	char message[CODEC_MSG_MAX];
};

/*
 * A parsed request.  `root` owns the JSON tree; every other pointer is
 * borrowed from it and lives exactly as long as root.
 */
struct goc_request {
	json_t *root;
	enum goc_op op;
	json_t *id;        /* NULL when absent; echoed back verbatim */
	const char *table; /* NULL for ping/stats */
	json_t *key;       /* object, non-empty; NULL for ping/stats */
	json_t *defaults;  /* object or NULL */
	const char *token; /* auth only */
};

/*
 * Parse one request line.  Returns 0 and fills *req (caller owns req->root:
 * release with codec_request_free), or -1 and fills *err.  Even on error,
 * req->id is set when the line was a JSON object with an "id", so that the
 * error can still be matched by the client; the caller must still call
 * codec_request_free.
 */
int codec_parse_request(const char *line, size_t len, struct goc_request *req,
			struct codec_error *err)
	__attribute__((warn_unused_result));

void codec_request_free(struct goc_request *req);

/* Fill err with a printf-style message. */
void codec_error_set(struct codec_error *err, enum goc_err code,
		     const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Text form of a JSON value as a PostgreSQL parameter, appended to `out`
 * (NUL-terminated).  Strings are sent as their contents; integers exactly;
 * reals as the shortest text that reads back as the same double; booleans
 * as true/false.  With as_json (json/jsonb columns) every value is sent as
 * its compact JSON text instead.  Objects and arrays are accepted only
 * as_json.  Returns 0, or -1 with *why set to a static explanation; null is
 * the caller's business (it becomes SQL NULL) and returns -1 here.
 */
int codec_value_text(const json_t *v, bool as_json, struct evbuffer *out,
		     const char **why);

/*
 * Response lines, each appended to `out` with its trailing LF.  `id` may be
 * NULL (field omitted).  `row` is JSON text produced by PostgreSQL and is
 * copied verbatim (no reparse, so numbers keep every digit); raw CR/LF in it
 * (legal whitespace in a json column) are turned into spaces so the line
 * stays one line.  row == NULL renders "row":null.
 */
void codec_render_row(struct evbuffer *out, const json_t *id, bool created,
		      const char *row, size_t row_len);
void codec_render_error(struct evbuffer *out, const json_t *id,
			enum goc_err code, const char *message);
/* {"id":..,"ok":true,<fields>} where fields is JSON text of members, or NULL. */
void codec_render_ok(struct evbuffer *out, const json_t *id, const char *fields);
/*
 * What every response line to a request with this id begins with: "{" and,
 * unless id is NULL, the "id" member.  For a caller that must let go of
 * the id's tree long before it answers (an array id costs many times its
 * text): it keeps this text, renders the answer with id NULL, and puts the
 * text in place of that answer's leading "{".
 */
void codec_render_head(struct evbuffer *out, const json_t *id);

/*
 * Client side: a response line decoded.  `root` owns everything; `row` is
 * NULL when absent or null.  Returns 0, or -1 when the line is not a valid
 * response.
 */
struct goc_response {
	json_t *root;
	json_t *id;
	bool ok;
	bool created;
	json_t *row;
	enum goc_err code;   /* GOC_OK when ok */
	const char *message; /* "" when ok */
};
int codec_parse_response(const char *line, size_t len, struct goc_response *resp)
	__attribute__((warn_unused_result));
void codec_response_free(struct goc_response *resp);

/*
 * The same line read without allocating, for load generators: ok, created
 * and the row's raw text (pointing into line).  Returns -1 when the line
 * is not one JSON object with a boolean "ok".  An error response (ok
 * false) carries no code here: parse it with codec_parse_response.
 */
struct goc_response_scan {
	bool ok;
	bool created;
	const char *row; /* the "row" object's text, or NULL (absent or null) */
	size_t row_len;
};
int codec_scan_response(const char *line, size_t len, struct goc_response_scan *s)
	__attribute__((warn_unused_result));

/* Requests rendered by clients (one line each, LF appended). */
void codec_render_request(struct evbuffer *out, enum goc_op op, const json_t *id,
			  const char *table, const json_t *key,
			  const json_t *defaults);
/* {"op":"auth","token":...}, LF appended: what a TCP client sends first to a
 * gocd with auth_token. */
void codec_render_auth(struct evbuffer *out, const char *token);

#endif
