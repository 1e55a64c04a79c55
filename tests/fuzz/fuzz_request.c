/*
 * fuzz_request.c - libFuzzer target for the wire codec: one request line in,
 * the daemon's rendering of an answer out.
 *
 * Owns: the oracles the fuzzer checks on every input: codec_parse_request
 * either succeeds or names an error code, whatever the bytes; the parameter
 * text of every key/defaults value can be produced; and every response line
 * gocd would render for it (a row, an error carrying the parser's own
 * message, an ok) is exactly one line of valid JSON that codec_parse_response
 * reads back with the same id, ok flag and code.  A request rendered by
 * codec_render_request (what goc sends) must parse again with the same op.
 * frame_next_mem (the daemon's read-buffer framing) cuts exactly the lines
 * frame_next does.  The tree-less reader (jsonread_skip/members, codec_scan_response, used by
 * goc-bench) stays inside the input and agrees with the strict one.
 * Must never: include daemon headers (proto/ stands alone, like the CLI), keep
 * state between inputs, or print on the happy path (libFuzzer runs millions).
 * Build: make fuzz (clang -fsanitize=fuzzer,address,undefined).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "codec.h"
#include "errors.h"
#include "frame.h"
#include "jsonread.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An oracle failure is a bug: abort so libFuzzer saves the input. */
#define CHECK(cond, what)                                                       \
	do {                                                                    \
		if (!(cond)) {                                                  \
			fprintf(stderr, "fuzz_request: %s\n", what);            \
			abort();                                                \
		}                                                               \
	} while (0)

/* The evbuffer holds exactly one rendered line: LF-terminated, no other LF
 * or CR inside, and it must parse back as a response agreeing with what
 * was rendered. */
static void check_line(struct evbuffer *out, const json_t *id, bool ok, enum goc_err code)
{
	size_t n = evbuffer_get_length(out);
	CHECK(n >= 2, "empty response line");
	const char *line = (const char *)evbuffer_pullup(out, -1);
	CHECK(line[n - 1] == '\n', "response line not LF-terminated");
	CHECK(memchr(line, '\n', n - 1) == NULL, "LF inside a response line");
	CHECK(memchr(line, '\r', n - 1) == NULL, "CR inside a response line");

	struct goc_response r;
	int rc = codec_parse_response(line, n - 1, &r);
	if (rc != 0)
		fprintf(stderr, "fuzz_request: unparsable response: %.*s\n", (int)n, line);
	CHECK(rc == 0, "rendered response does not parse");
	CHECK(r.ok == ok, "ok flag changed in rendering");
	if (!ok)
		CHECK(r.code == code, "error code changed in rendering");
	if (id == NULL)
		CHECK(r.id == NULL, "id invented");
	else
		CHECK(r.id != NULL, "id lost");
	codec_response_free(&r);
	/* goc-bench reads the same line without a tree: same verdict. */
	struct goc_response_scan sc;
	CHECK(codec_scan_response(line, n - 1, &sc) == 0, "rendered response does not scan");
	CHECK(sc.ok == ok, "scan reads another ok flag");
	evbuffer_drain(out, n);
}

static int member_ok(void *arg, const char *name, size_t nlen, const char *v, size_t vlen)
{
	(void)arg;
	(void)name;
	(void)nlen;
	CHECK(vlen > 0 && jsonread_skip(v, v + vlen) == v + vlen, "member value is not one value");
	return 0;
}

/* The tree-less reader on raw bytes: never reads past the end, and accepts
 * at least what the strict reader accepts. */
static void check_skip(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	const char *e = jsonread_skip(p, end);
	CHECK(e == NULL || (e > p && e <= end), "skip ended outside the input");
	struct jsonread_error jerr;
	json_t *j = jsonread(p, size, &jerr);
	if (j != NULL) {
		while (e && e < end && (*e == ' ' || *e == '\t' || *e == '\n' || *e == '\r'))
			e++;
		CHECK(e == end, "skip rejects what jsonread accepts");
		if (json_is_object(j))
			CHECK(jsonread_members(p, end, member_ok, NULL) == 0,
			      "member walk rejects an object jsonread accepts");
		json_decref(j);
	} else {
		(void)jsonread_members(p, end, member_ok, NULL);
	}
}

static void check_values(const json_t *obj, struct evbuffer *scratch)
{
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)obj, k, v) {
		for (int as_json = 0; as_json <= 1; as_json++) {
			const char *why = NULL;
			int rc = codec_value_text(v, as_json, scratch, &why);
			if (rc != 0)
				CHECK(why != NULL && *why, "value refused without a reason");
			else {
				/* A parameter is a C string: NUL-terminated, once. */
				size_t n = evbuffer_get_length(scratch);
				const char *t = (const char *)evbuffer_pullup(scratch, -1);
				CHECK(n >= 1 && t[n - 1] == '\0', "value text not NUL-terminated");
			}
			evbuffer_drain(scratch, evbuffer_get_length(scratch));
		}
	}
}

/* The daemon's framing runs first; feed the same bytes through it so the
 * line limit and CR handling are fuzzed too. */
static void check_frame(const uint8_t *data, size_t size)
{
	struct evbuffer *in = evbuffer_new();
	CHECK(in != NULL, "evbuffer_new");
	evbuffer_add(in, data, size);
	const char *flat = (const char *)data; /* frame_next_mem walks the same bytes */
	size_t left = size;
	for (int i = 0; i < 64; i++) {
		const char *line, *mline = NULL;
		size_t len, consumed, mlen = 0, mconsumed = 0;
		enum frame_rc mrc = frame_next_mem(flat, left, 64, &mline, &mlen, &mconsumed);
		enum frame_rc rc = frame_next(in, 64, NULL, &line, &len, &consumed);
		CHECK(mrc == rc, "frame_next_mem and frame_next disagree");
		if (rc != FRAME_LINE)
			break;
		CHECK(mline == flat && mlen == len && mconsumed == consumed &&
		      memcmp(mline, line, len) == 0, "frame_next_mem cut another line");
		flat += consumed;
		left -= consumed;
		CHECK(len <= 64, "frame returned a line over the limit");
		CHECK(consumed >= len + 1 && consumed <= len + 2, "frame consumed bytes");
		CHECK(memchr(line, '\n', len) == NULL, "LF inside a framed line");
		(void)frame_is_blank(line, len);
		evbuffer_drain(in, consumed);
	}
	evbuffer_free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct goc_request req;
	struct codec_error err;
	struct evbuffer *out = evbuffer_new();
	CHECK(out != NULL, "evbuffer_new");

	check_frame(data, size);
	check_skip(data, size);

	memset(&err, 0, sizeof err);
	int rc = codec_parse_request((const char *)data, size, &req, &err);
	if (rc != 0) {
		CHECK(err.code > GOC_OK && err.code < GOC_E__COUNT, "error without a code");
		CHECK(memchr(err.message, '\0', sizeof err.message) != NULL, "message not terminated");
		/* What the daemon answers: the error with the parser's message
		 * (which may quote the client's bytes) and the id if any. */
		codec_render_error(out, req.id, err.code, err.message);
		check_line(out, req.id, false, err.code);
	} else {
		CHECK(req.op < GOC_OP__COUNT, "op out of range");
		if (req.op == GOC_OP_GET_OR_CREATE || req.op == GOC_OP_GET) {
			CHECK(req.table != NULL && *req.table, "table missing");
			CHECK(json_is_object(req.key) && json_object_size(req.key) > 0, "key missing");
			check_values(req.key, out);
			if (req.defaults) {
				CHECK(json_is_object(req.defaults), "defaults not an object");
				check_values(req.defaults, out);
			}
			/* What goc would send for this request must be a request. */
			codec_render_request(out, req.op, req.id, req.table, req.key, req.defaults);
			size_t n = evbuffer_get_length(out);
			const char *line = (const char *)evbuffer_pullup(out, -1);
			CHECK(n >= 1 && line[n - 1] == '\n', "request line not LF-terminated");
			CHECK(memchr(line, '\n', n - 1) == NULL, "LF inside a request line");
			struct goc_request again;
			struct codec_error err2;
			int rc2 = codec_parse_request(line, n - 1, &again, &err2);
			if (rc2 != 0)
				fprintf(stderr, "fuzz_request: re-rendered request refused (%s): %.*s\n",
					err2.message, (int)n, line);
			CHECK(rc2 == 0, "re-rendered request does not parse");
			CHECK(again.op == req.op, "op changed in re-rendering");
			CHECK(strcmp(again.table, req.table) == 0, "table changed in re-rendering");
			CHECK(json_object_size(again.key) == json_object_size(req.key),
			      "key size changed in re-rendering");
			codec_request_free(&again);
			evbuffer_drain(out, n);
		}
		/* A row as PostgreSQL would render it, with raw newlines that
		 * a json column may keep. */
		static const char row[] = "{\"id\":1,\"doc\":{\n\"a\":\r\n[1,\n2]}}";
		codec_render_row(out, req.id, true, row, sizeof row - 1);
		check_line(out, req.id, true, GOC_OK);
		codec_render_row(out, req.id, false, NULL, 0);
		check_line(out, req.id, true, GOC_OK);
		codec_render_ok(out, req.id, "\"pong\":true");
		check_line(out, req.id, true, GOC_OK);
		/* An error whose message quotes the table name (unknown_table). */
		if (req.table) {
			char msg[CODEC_MSG_MAX];
			snprintf(msg, sizeof msg, "table \"%s\" is not served", req.table);
			codec_render_error(out, req.id, GOC_E_UNKNOWN_TABLE, msg);
			check_line(out, req.id, false, GOC_E_UNKNOWN_TABLE);
		}
	}
	codec_request_free(&req);
	evbuffer_free(out);
	return 0;
}
