/*
 * test_codec.c - unit tests of proto/: request parsing, value text, response
 * rendering and line framing.
 *
 * Owns: the contract of codec.h and frame.h as the daemon and clients rely on
 * it (every error code the parser can produce, exact bytes of responses).
 * Must never: open sockets or talk to PostgreSQL; depend on daemon internals.
 * Expected strings are written out literally so a change of wire bytes shows
 * up here first.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <jansson.h>

#include "codec.h"
#include "errors.h"
#include "frame.h"

/* ---- helpers ------------------------------------------------------------ */

/* Parse a NUL-terminated line; the request is freed by the caller. */
static int parse(const char *line, struct goc_request *req, struct codec_error *err)
{
	memset(err, 0, sizeof *err);
	return codec_parse_request(line, strlen(line), req, err);
}

/* Assert that `line` is refused with `code`; returns nothing, frees all. */
static void expect_parse_error(const char *line, enum goc_err code)
{
	struct goc_request req;
	struct codec_error err;
	int rc = parse(line, &req, &err);
	if (rc != -1 || err.code != code)
		print_error("line %s: rc %d code %s (%s), expected %s\n", line, rc,
			    goc_err_name(err.code), err.message, goc_err_name(code));
	assert_int_equal(rc, -1);
	assert_int_equal(err.code, code);
	/* A client must be told what was wrong. */
	assert_true(strlen(err.message) > 0);
	codec_request_free(&req);
}

/* The evbuffer's bytes as a NUL-terminated malloc'd string. */
static char *buf_text(struct evbuffer *b, size_t *len)
{
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);
	assert_non_null(s);
	evbuffer_copyout(b, s, n);
	s[n] = '\0';
	if (len)
		*len = n;
	return s;
}

/* ---- codec_parse_request: accepted requests ---------------------------- */

static void test_parse_get_or_create_all_fields(void **state)
{
	struct goc_request req;
	struct codec_error err;
	const char *line = "{\"op\":\"get_or_create\",\"id\":7,\"table\":\"users\","
			   "\"key\":{\"email\":\"a@x\"},\"defaults\":{\"name\":\"Ann\",\"age\":3}}";

	assert_int_equal(parse(line, &req, &err), 0);
	assert_int_equal(req.op, GOC_OP_GET_OR_CREATE);
	assert_non_null(req.id);
	assert_true(json_is_integer(req.id));
	assert_int_equal(json_integer_value(req.id), 7);
	assert_string_equal(req.table, "users");
	assert_true(json_is_object(req.key));
	assert_int_equal(json_object_size(req.key), 1);
	assert_string_equal(json_string_value(json_object_get(req.key, "email")), "a@x");
	assert_true(json_is_object(req.defaults));
	assert_string_equal(json_string_value(json_object_get(req.defaults, "name")), "Ann");
	assert_int_equal(json_integer_value(json_object_get(req.defaults, "age")), 3);
	codec_request_free(&req);
	assert_null(req.root);
}

static void test_parse_get_ping_stats(void **state)
{
	struct goc_request req;
	struct codec_error err;

	assert_int_equal(parse("{\"op\":\"get\",\"table\":\"app.users\",\"key\":{\"a\":1,\"b\":\"x\"}}",
			       &req, &err), 0);
	assert_int_equal(req.op, GOC_OP_GET);
	assert_string_equal(req.table, "app.users");
	assert_int_equal(json_object_size(req.key), 2);
	assert_null(req.defaults);
	assert_null(req.id);
	codec_request_free(&req);

	assert_int_equal(parse("{\"op\":\"ping\"}", &req, &err), 0);
	assert_int_equal(req.op, GOC_OP_PING);
	assert_null(req.table);
	assert_null(req.key);
	assert_null(req.id);
	codec_request_free(&req);

	assert_int_equal(parse(" {\"id\":\"s1\", \"op\" : \"stats\"} ", &req, &err), 0);
	assert_int_equal(req.op, GOC_OP_STATS);
	assert_string_equal(json_string_value(req.id), "s1");
	codec_request_free(&req);
}

/* "defaults": null means no defaults, not an error. */
static void test_parse_null_defaults_is_absent(void **state)
{
	struct goc_request req;
	struct codec_error err;
	assert_int_equal(parse("{\"op\":\"get_or_create\",\"table\":\"t\",\"key\":{\"k\":1},"
			       "\"defaults\":null}", &req, &err), 0);
	assert_null(req.defaults);
	codec_request_free(&req);
}

/* The parser must stop at len: frame_next hands it a line inside a buffer
 * that is not NUL-terminated after the line. */
static void test_parse_honours_len(void **state)
{
	struct goc_request req;
	struct codec_error err;
	const char *buf = "{\"op\":\"ping\"}{\"op\":\"nope\"}";
	assert_int_equal(codec_parse_request(buf, 13, &req, &err), 0);
	assert_int_equal(req.op, GOC_OP_PING);
	codec_request_free(&req);
	/* ...and the whole buffer is two values: trailing data is bad_json. */
	expect_parse_error(buf, GOC_E_BAD_JSON);
}

/* Any JSON value is a legal id and must come back verbatim. */
static void test_parse_id_any_value(void **state)
{
	struct goc_request req;
	struct codec_error err;
	assert_int_equal(parse("{\"op\":\"ping\",\"id\":{\"a\":[1,\"x\",null]}}", &req, &err), 0);
	json_t *want = json_loads("{\"a\":[1,\"x\",null]}", 0, NULL);
	assert_non_null(want);
	assert_true(json_equal(req.id, want));
	json_decref(want);
	codec_request_free(&req);

	assert_int_equal(parse("{\"op\":\"ping\",\"id\":null}", &req, &err), 0);
	assert_non_null(req.id);
	assert_true(json_is_null(req.id));
	codec_request_free(&req);
}

/* ---- codec_parse_request: every error the parser can produce ------------ */

static void test_parse_bad_json_syntax(void **state)
{
	expect_parse_error("", GOC_E_BAD_JSON);
	expect_parse_error("{\"op\":", GOC_E_BAD_JSON);
	expect_parse_error("{\"op\":\"ping\"", GOC_E_BAD_JSON);
	expect_parse_error("{op:\"ping\"}", GOC_E_BAD_JSON);
	expect_parse_error("{\"op\":\"ping\",}", GOC_E_BAD_JSON);
	expect_parse_error("{\"op\":\"ping\"} x", GOC_E_BAD_JSON);
	expect_parse_error("{\"op\":'ping'}", GOC_E_BAD_JSON);
}

static void test_parse_bad_json_invalid_utf8(void **state)
{
	expect_parse_error("{\"op\":\"ping\",\"id\":\"\xff\"}", GOC_E_BAD_JSON);
	/* overlong encoding of '/' */
	expect_parse_error("{\"op\":\"ping\",\"id\":\"\xc0\xaf\"}", GOC_E_BAD_JSON);
	/* UTF-16 surrogate encoded as UTF-8 */
	expect_parse_error("{\"op\":\"ping\",\"id\":\"\xed\xa0\x80\"}", GOC_E_BAD_JSON);
	/* truncated sequence */
	expect_parse_error("{\"op\":\"ping\",\"id\":\"\xc3\"}", GOC_E_BAD_JSON);
}

/* A NUL cannot be sent to PostgreSQL as a text parameter. */
static void test_parse_bad_json_nul(void **state)
{
	expect_parse_error("{\"op\":\"get\",\"table\":\"t\",\"key\":{\"k\":\"a\\u0000b\"}}",
			   GOC_E_BAD_JSON);
	/* A raw NUL byte inside the line, passed with its true length. */
	struct goc_request req;
	struct codec_error err;
	const char raw[] = "{\"op\":\"ping\",\"id\":\"a\0b\"}";
	assert_int_equal(codec_parse_request(raw, sizeof raw - 1, &req, &err), -1);
	assert_int_equal(err.code, GOC_E_BAD_JSON);
	codec_request_free(&req);
}

/* With two "key" members the request would mean whatever the parser kept. */
static void test_parse_bad_json_duplicate_member(void **state)
{
	expect_parse_error("{\"op\":\"ping\",\"op\":\"ping\"}", GOC_E_BAD_JSON);
	expect_parse_error("{\"op\":\"get\",\"table\":\"t\",\"key\":{\"k\":1,\"k\":2}}",
			   GOC_E_BAD_JSON);
}

/* Integers beyond 64 bits must be refused, never rounded; the message
 * tells the client to send them as strings. */
static void test_parse_bad_json_number_too_big(void **state)
{
	struct goc_request req;
	struct codec_error err;
	assert_int_equal(parse("{\"op\":\"get\",\"table\":\"t\",\"key\":{\"k\":123456789012345678901234567890}}",
			       &req, &err), -1);
	assert_int_equal(err.code, GOC_E_BAD_JSON);
	assert_non_null(strstr(err.message, "as strings"));
	codec_request_free(&req);

	expect_parse_error("{\"op\":\"ping\",\"id\":9223372036854775808}", GOC_E_BAD_JSON);
	expect_parse_error("{\"op\":\"ping\",\"id\":1e999}", GOC_E_BAD_JSON);

	/* The edge itself is fine. */
	assert_int_equal(parse("{\"op\":\"ping\",\"id\":9223372036854775807}", &req, &err), 0);
	assert_int_equal(json_integer_value(req.id), INT64_MAX);
	codec_request_free(&req);
}

static void test_parse_bad_request_not_object(void **state)
{
	expect_parse_error("[1,2]", GOC_E_BAD_REQUEST);
	expect_parse_error("[]", GOC_E_BAD_REQUEST);
	expect_parse_error("[{\"op\":\"ping\"}]", GOC_E_BAD_REQUEST);
}

/* PROTOCOL.md: bad_json is "not valid JSON"; bad_request is "valid JSON,
 * wrong shape: not an object".  A bare scalar is valid JSON (RFC 8259). */
static void test_parse_bad_request_scalar(void **state)
{
	expect_parse_error("\"ping\"", GOC_E_BAD_REQUEST);
	expect_parse_error("42", GOC_E_BAD_REQUEST);
	expect_parse_error("null", GOC_E_BAD_REQUEST);
}

static void test_parse_bad_request_op(void **state)
{
	expect_parse_error("{}", GOC_E_BAD_REQUEST);
	expect_parse_error("{\"id\":1}", GOC_E_BAD_REQUEST);
	expect_parse_error("{\"op\":1}", GOC_E_BAD_REQUEST);
	expect_parse_error("{\"op\":null}", GOC_E_BAD_REQUEST);
	expect_parse_error("{\"op\":[\"ping\"]}", GOC_E_BAD_REQUEST);
}

/* A typo must not be silently ignored. */
static void test_parse_bad_request_unknown_field(void **state)
{
	struct goc_request req;
	struct codec_error err;
	assert_int_equal(parse("{\"op\":\"get_or_create\",\"table\":\"t\",\"key\":{\"k\":1},"
			       "\"defualts\":{}}", &req, &err), -1);
	assert_int_equal(err.code, GOC_E_BAD_REQUEST);
	/* The message names the field at fault. */
	assert_non_null(strstr(err.message, "defualts"));
	codec_request_free(&req);

	expect_parse_error("{\"op\":\"ping\",\"Op\":\"ping\"}", GOC_E_BAD_REQUEST);
}

static void test_parse_bad_request_table(void **state)
{
	expect_parse_error("{\"op\":\"get\",\"key\":{\"k\":1}}", GOC_E_BAD_REQUEST);
	expect_parse_error("{\"op\":\"get\",\"table\":\"\",\"key\":{\"k\":1}}", GOC_E_BAD_REQUEST);
	expect_parse_error("{\"op\":\"get\",\"table\":5,\"key\":{\"k\":1}}", GOC_E_BAD_REQUEST);
	expect_parse_error("{\"op\":\"get\",\"table\":null,\"key\":{\"k\":1}}", GOC_E_BAD_REQUEST);
	/* ping and stats take no table, key or defaults */
	expect_parse_error("{\"op\":\"ping\",\"table\":\"t\"}", GOC_E_BAD_REQUEST);
	expect_parse_error("{\"op\":\"stats\",\"key\":{\"k\":1}}", GOC_E_BAD_REQUEST);
}

static void test_parse_bad_request_key(void **state)
{
	expect_parse_error("{\"op\":\"get_or_create\",\"table\":\"t\"}", GOC_E_BAD_REQUEST);
	expect_parse_error("{\"op\":\"get\",\"table\":\"t\",\"key\":{}}", GOC_E_BAD_REQUEST);
	expect_parse_error("{\"op\":\"get\",\"table\":\"t\",\"key\":[1]}", GOC_E_BAD_REQUEST);
	expect_parse_error("{\"op\":\"get\",\"table\":\"t\",\"key\":\"k\"}", GOC_E_BAD_REQUEST);
	expect_parse_error("{\"op\":\"get\",\"table\":\"t\",\"key\":null}", GOC_E_BAD_REQUEST);
}

static void test_parse_bad_request_defaults(void **state)
{
	/* defaults only make sense when a row may be created */
	expect_parse_error("{\"op\":\"get\",\"table\":\"t\",\"key\":{\"k\":1},\"defaults\":{}}",
			   GOC_E_BAD_REQUEST);
	expect_parse_error("{\"op\":\"get_or_create\",\"table\":\"t\",\"key\":{\"k\":1},\"defaults\":[1]}",
			   GOC_E_BAD_REQUEST);
	expect_parse_error("{\"op\":\"get_or_create\",\"table\":\"t\",\"key\":{\"k\":1},\"defaults\":\"x\"}",
			   GOC_E_BAD_REQUEST);
	expect_parse_error("{\"op\":\"ping\",\"defaults\":{}}", GOC_E_BAD_REQUEST);
}

static void test_parse_unknown_op(void **state)
{
	expect_parse_error("{\"op\":\"frobnicate\"}", GOC_E_UNKNOWN_OP);
	/* op names are case sensitive */
	expect_parse_error("{\"op\":\"PING\"}", GOC_E_UNKNOWN_OP);
	expect_parse_error("{\"op\":\"\"}", GOC_E_UNKNOWN_OP);
	expect_parse_error("{\"op\":\"get_or_create \",\"table\":\"t\",\"key\":{\"k\":1}}",
			   GOC_E_UNKNOWN_OP);
}

/* A raw NUL byte is named as such, not as whatever the parser makes of
 * the bytes around it ("end of file expected"). */
static void test_parse_raw_nul(void **state)
{
	struct goc_request req;
	struct codec_error err;
	static const char line[] = "{\"op\":\"ping\"}\0";
	assert_int_equal(codec_parse_request(line, sizeof line - 1, &req, &err), -1);
	assert_int_equal(err.code, GOC_E_BAD_JSON);
	assert_non_null(strstr(err.message, "at byte 13: a raw NUL byte"));
	codec_request_free(&req);
}

/* An error response can only be matched by the client if the id survives
 * the failed parse. */
static void test_parse_error_keeps_id(void **state)
{
	struct goc_request req;
	struct codec_error err;

	assert_int_equal(parse("{\"op\":\"frob\",\"id\":\"abc\"}", &req, &err), -1);
	assert_int_equal(err.code, GOC_E_UNKNOWN_OP);
	assert_string_equal(json_string_value(req.id), "abc");
	codec_request_free(&req);

	assert_int_equal(parse("{\"id\":5}", &req, &err), -1);
	assert_int_equal(err.code, GOC_E_BAD_REQUEST);
	assert_int_equal(json_integer_value(req.id), 5);
	codec_request_free(&req);

	assert_int_equal(parse("{\"id\":[9],\"op\":\"get\",\"table\":\"t\",\"key\":{},\"x\":1}",
			       &req, &err), -1);
	assert_int_equal(err.code, GOC_E_BAD_REQUEST);
	assert_true(json_is_array(req.id));
	codec_request_free(&req);

	/* Not JSON: no id at all. */
	assert_int_equal(parse("{\"id\":5,", &req, &err), -1);
	assert_null(req.id);
	codec_request_free(&req);
}

/* ---- codec_value_text ---------------------------------------------------- */

/* Run codec_value_text and return its text (without the NUL it appends). */
static char *value_text(json_t *v, bool as_json, int *rc, const char **why)
{
	struct evbuffer *b = evbuffer_new();
	assert_non_null(b);
	*why = NULL;
	*rc = codec_value_text(v, as_json, b, why);
	size_t n;
	char *s = buf_text(b, &n);
	if (*rc == 0) {
		/* The contract: the text is NUL-terminated in the buffer, ready to
		 * be a PQexecParams parameter. */
		assert_true(n >= 1);
		assert_int_equal(s[n - 1], '\0');
		assert_int_equal(strlen(s), n - 1);
	}
	evbuffer_free(b);
	json_decref(v);
	return s;
}

static void expect_text(json_t *v, bool as_json, const char *want)
{
	int rc;
	const char *why;
	char *got = value_text(v, as_json, &rc, &why);
	if (rc != 0 || strcmp(got, want) != 0)
		print_error("value text: rc %d got \"%s\" want \"%s\" (%s)\n", rc, got, want,
			    why ? why : "");
	assert_int_equal(rc, 0);
	assert_string_equal(got, want);
	free(got);
}

static void test_value_text_string(void **state)
{
	expect_text(json_string("a@x"), false, "a@x");
	expect_text(json_string(""), false, "");
	expect_text(json_string("h\xc3\xa9llo \"q\" \\"), false, "h\xc3\xa9llo \"q\" \\");
	expect_text(json_string("2026-11-28T10:00:00Z"), false, "2026-11-28T10:00:00Z");
}

/* 2^53 + 1 is where a double would round: integers must stay exact. */
static void test_value_text_int64_exact(void **state)
{
	expect_text(json_integer(9007199254740993LL), false, "9007199254740993");
	expect_text(json_integer(INT64_MAX), false, "9223372036854775807");
	expect_text(json_integer(INT64_MIN), false, "-9223372036854775808");
	expect_text(json_integer(0), false, "0");
	expect_text(json_integer(-42), false, "-42");
}

/* Shortest text that reads back as the same double: 0.1 must not become
 * 0.10000000000000001, which a numeric column would store as written. */
static void test_value_text_real_shortest(void **state)
{
	expect_text(json_real(0.1), false, "0.1");
	expect_text(json_real(-2.5), false, "-2.5");
	expect_text(json_real(0.30000000000000004), false, "0.30000000000000004");
	expect_text(json_real(1e300), false, "1e+300");
	expect_text(json_real(1.0), false, "1");
	/* Positional, as JavaScript prints numbers, for 1e-6 <= |d| < 1e21:
	 * a whole double must read as an integer ("2e+01" is refused by int
	 * columns and stored as such by text ones). */
	expect_text(json_real(20.0), false, "20");
	expect_text(json_real(1500.0), false, "1500");
	expect_text(json_real(12000000.0), false, "12000000");
	expect_text(json_real(-100.0), false, "-100");
	expect_text(json_real(1e20), false, "100000000000000000000");
	expect_text(json_real(1e21), false, "1e+21");
	expect_text(json_real(1.25e22), false, "1.25e+22");
	expect_text(json_real(123.456), false, "123.456");
	expect_text(json_real(0.000001), false, "0.000001");
	expect_text(json_real(0.00000123), false, "0.00000123");
	expect_text(json_real(1e-7), false, "1e-7");
	expect_text(json_real(-1.5e-7), false, "-1.5e-7");
	expect_text(json_real(5e-324), false, "5e-324");
	expect_text(json_real(1.7976931348623157e308), false, "1.7976931348623157e+308");
	expect_text(json_real(0.0), false, "0");
	expect_text(json_real(-0.0), false, "-0");
	/* and what the parser produces from the wire reads back identically */
	json_t *v = json_loads("[0.1]", 0, NULL);
	assert_non_null(v);
	expect_text(json_incref(json_array_get(v, 0)), false, "0.1");
	json_decref(v);
}

/* Any double, in either mode: the text reads back as the same double, is a
 * JSON real in JSON mode, and is no longer than a double's 17 digits need. */
static void test_value_text_real_round_trips(void **state)
{
	uint64_t x = 88172645463325252ULL; /* xorshift64: the same doubles every run */
	for (int i = 0; i < 60000; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		double d;
		uint64_t bits = i < 30000 ? x : (x >> 12) | 0x4000000000000000ULL; /* then 2..4 */
		memcpy(&d, &bits, sizeof d);
		if (!isfinite(d))
			continue;
		if (i % 3 == 0)
			d = round(d); /* whole numbers too */
		for (int as_json = 0; as_json <= 1; as_json++) {
			int rc;
			const char *why;
			char *got = value_text(json_real(d), as_json, &rc, &why);
			/* in JSON it must parse as a real (a whole number as
			 * digits only would be an integer, or too big for one) */
			json_t *back = as_json ? json_loads(got, JSON_DECODE_ANY, NULL) : NULL;
			double r = strtod(got, NULL);
			if (rc != 0 || (as_json && !json_is_real(back)) || r != d || strlen(got) > 26)
				print_error("%.17g (json %d) -> \"%s\" -> %.17g\n", d, as_json, got, r);
			assert_int_equal(rc, 0);
			assert_true(!as_json || json_is_real(back));
			assert_true(r == d && signbit(r) == signbit(d));
			assert_true(strlen(got) <= 26);
			json_decref(back);
			free(got);
		}
	}
}

static void test_value_text_bool(void **state)
{
	expect_text(json_true(), false, "true");
	expect_text(json_false(), false, "false");
}

/* null is SQL NULL, decided by the caller; the function refuses it. */
static void test_value_text_null_refused(void **state)
{
	int rc;
	const char *why;
	char *got = value_text(json_null(), false, &rc, &why);
	assert_int_equal(rc, -1);
	assert_non_null(why);
	free(got);
	got = value_text(json_null(), true, &rc, &why);
	assert_int_equal(rc, -1);
	free(got);
}

/* Objects and arrays only make sense for json/jsonb columns. */
static void test_value_text_object_refused_without_json(void **state)
{
	int rc;
	const char *why;
	char *got = value_text(json_pack("{s:i}", "a", 1), false, &rc, &why);
	assert_int_equal(rc, -1);
	assert_non_null(why);
	assert_non_null(strstr(why, "json"));
	free(got);
	got = value_text(json_pack("[i]", 1), false, &rc, &why);
	assert_int_equal(rc, -1);
	assert_non_null(why);
	free(got);
}

static void test_value_text_json_mode(void **state)
{
	/* In json mode a string is stored as a JSON string, not its contents. */
	expect_text(json_string("abc"), true, "\"abc\"");
	expect_text(json_integer(9007199254740993LL), true, "9007199254740993");
	expect_text(json_real(0.1), true, "0.1");
	/* a whole real stays a real in JSON */
	expect_text(json_real(20.0), true, "20.0");
	expect_text(json_real(-0.0), true, "-0.0");
	expect_text(json_real(1e21), true, "1e+21");
	expect_text(json_loads("[1E2,2.50]", 0, NULL), true, "[100.0,2.5]");
	expect_text(json_true(), true, "true");
	expect_text(json_false(), true, "false");
	expect_text(json_loads("{\"a\":[1,\"x\",{\"b\":null}],\"c\":true}", 0, NULL), true,
		    "{\"a\":[1,\"x\",{\"b\":null}],\"c\":true}");
	expect_text(json_loads("[]", 0, NULL), true, "[]");
}

/* A real inside an object must be as exact as a real on its own: jsonb
 * stores numbers as numeric, so 0.10000000000000001 would be a different
 * value from the 0.1 the client sent. */
static void test_value_text_json_nested_real_shortest(void **state)
{
	expect_text(json_loads("{\"x\":0.1,\"y\":[2.5,0.3]}", 0, NULL), true,
		    "{\"x\":0.1,\"y\":[2.5,0.3]}");
}

/* ---- codec_render_row / error / ok -------------------------------------- */

static char *render_row(const json_t *id, bool created, const char *row)
{
	struct evbuffer *b = evbuffer_new();
	codec_render_row(b, id, created, row, row ? strlen(row) : 0);
	char *s = buf_text(b, NULL);
	evbuffer_free(b);
	return s;
}

/* PostgreSQL's row text is copied byte for byte: no reparse, so wide
 * numbers and key order survive. */
static void test_render_row_verbatim(void **state)
{
	json_t *id = json_integer(1);
	char *s = render_row(id, true,
			     "{\"id\":1,\"n\":123456789012345678901234567890,\"b\":9007199254740993,"
			     "\"z\" : 1.10}");
	assert_string_equal(s, "{\"id\":1,\"ok\":true,\"created\":true,\"row\":"
			       "{\"id\":1,\"n\":123456789012345678901234567890,\"b\":9007199254740993,"
			       "\"z\" : 1.10}}\n");
	free(s);
	json_decref(id);

	s = render_row(NULL, false, "{\"a\":\"x\"}");
	assert_string_equal(s, "{\"ok\":true,\"created\":false,\"row\":{\"a\":\"x\"}}\n");
	free(s);
}

/* An id comes back as the value it was: a real in its shortest form
 * (jansson's own dump would say 0.10000000000000001), and still a real. */
static void test_render_id_real_shortest(void **state)
{
	static const char *const in[] = { "0.1", "1E2", "-2.50", "[0.1,{\"a\":1e-7}]" };
	static const char *const out[] = { "0.1", "100.0", "-2.5", "[0.1,{\"a\":1e-7}]" };
	for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
		json_t *id = json_loads(in[i], JSON_DECODE_ANY, NULL);
		assert_non_null(id);
		char *s = render_row(id, false, NULL);
		char want[128];
		snprintf(want, sizeof want, "{\"id\":%s,\"ok\":true,\"created\":false,\"row\":null}\n",
			 out[i]);
		assert_string_equal(s, want);
		free(s);
		json_decref(id);
	}
}

static void test_render_row_null(void **state)
{
	json_t *id = json_string("q\"1");
	char *s = render_row(id, false, NULL);
	assert_string_equal(s, "{\"id\":\"q\\\"1\",\"ok\":true,\"created\":false,\"row\":null}\n");
	free(s);
	json_decref(id);
}

/* A json column keeps its input whitespace; raw CR/LF would split the
 * response into two lines. */
static void test_render_row_blanks_cr_lf(void **state)
{
	char *s = render_row(NULL, true, "{\"j\":{\r\n\"a\":\n1}\r}");
	assert_string_equal(s, "{\"ok\":true,\"created\":true,\"row\":{\"j\":{  \"a\": 1} }}\n");
	/* exactly one LF, at the end */
	assert_ptr_equal(strchr(s, '\n'), s + strlen(s) - 1);
	assert_null(strchr(s, '\r'));
	free(s);
}

/* Response rendered from the id, parsed back by the client codec. */
static void test_render_row_parses_back(void **state)
{
	json_t *id = json_pack("{s:[i,s]}", "k", 1, "x");
	char *s = render_row(id, true, "{\"id\":42,\"email\":\"a@x\"}");
	struct goc_response r;
	assert_int_equal(codec_parse_response(s, strlen(s) - 1, &r), 0);
	assert_true(r.ok);
	assert_true(r.created);
	assert_int_equal(r.code, GOC_OK);
	assert_true(json_equal(r.id, id));
	assert_non_null(r.row);
	assert_int_equal(json_integer_value(json_object_get(r.row, "id")), 42);
	codec_response_free(&r);
	free(s);
	json_decref(id);
}

static char *render_error(const json_t *id, enum goc_err code, const char *msg)
{
	struct evbuffer *b = evbuffer_new();
	codec_render_error(b, id, code, msg);
	char *s = buf_text(b, NULL);
	evbuffer_free(b);
	return s;
}

static void test_render_error_escaping(void **state)
{
	json_t *id = json_integer(3);
	char *s = render_error(id, GOC_E_UNKNOWN_COLUMN,
			       "table \"users\" has no column \"emi\\al\"\n\tx\x01");
	assert_string_equal(s, "{\"id\":3,\"ok\":false,\"error\":{\"code\":\"unknown_column\","
			       "\"message\":\"table \\\"users\\\" has no column \\\"emi\\\\al\\\"\\u000a\\u0009x\\u0001\"}}\n");

	struct goc_response r;
	assert_int_equal(codec_parse_response(s, strlen(s) - 1, &r), 0);
	assert_false(r.ok);
	assert_int_equal(r.code, GOC_E_UNKNOWN_COLUMN);
	assert_string_equal(r.message, "table \"users\" has no column \"emi\\al\"\n\tx\x01");
	assert_int_equal(json_integer_value(r.id), 3);
	codec_response_free(&r);
	free(s);
	json_decref(id);

	/* no id, NULL message */
	s = render_error(NULL, GOC_E_TOO_LARGE, NULL);
	assert_string_equal(s, "{\"ok\":false,\"error\":{\"code\":\"too_large\",\"message\":\"\"}}\n");
	free(s);
}

/* PostgreSQL messages quote the client's bytes; whatever they hold, the
 * response must stay one valid JSON line (invalid UTF-8 becomes '?'). */
static void test_render_error_invalid_utf8(void **state)
{
	char *s = render_error(NULL, GOC_E_INVALID_VALUE, "a\xff" "b\xc3\xa9" "c\xc3");
	assert_string_equal(s, "{\"ok\":false,\"error\":{\"code\":\"invalid_value\","
			       "\"message\":\"a?b\xc3\xa9" "c?\"}}\n");
	free(s);

	static const char *const bad[] = {
		"\xc0\x80",         /* overlong NUL */
		"\xe0\x80\xaf",     /* overlong 3-byte */
		"\xed\xa0\x80",     /* surrogate */
		"\xf4\x90\x80\x80", /* beyond U+10FFFF */
		"\xf8\x88\x80\x80\x80",
		"\x80\x80",
		"\xe2\x82",         /* truncated at end */
	};
	int invalid = 0;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char msg[64];
		snprintf(msg, sizeof msg, "x%sy", bad[i]);
		s = render_error(NULL, GOC_E_INVALID_VALUE, msg);
		struct goc_response r;
		/* Report every failing input before failing the test. */
		if (codec_parse_response(s, strlen(s) - 1, &r) != 0) {
			print_error("bad[%zu]: rendered line is not valid JSON (raw bytes passed through)\n", i);
			invalid++;
		} else {
			assert_int_equal(r.code, GOC_E_INVALID_VALUE);
			/* The valid parts survive. */
			assert_int_equal(r.message[0], 'x');
			assert_int_equal(r.message[strlen(r.message) - 1], 'y');
		}
		codec_response_free(&r);
		free(s);
	}
	assert_int_equal(invalid, 0);
}

static void test_render_error_every_code_round_trips(void **state)
{
	for (int c = GOC_E_BAD_JSON; c < GOC_E__COUNT; c++) {
		char *s = render_error(NULL, (enum goc_err)c, "m");
		struct goc_response r;
		assert_int_equal(codec_parse_response(s, strlen(s) - 1, &r), 0);
		assert_int_equal(r.code, c);
		assert_string_equal(r.message, "m");
		codec_response_free(&r);
		free(s);
	}
	/* Published names are stable. */
	assert_string_equal(goc_err_name(GOC_E_BAD_JSON), "bad_json");
	assert_string_equal(goc_err_name(GOC_E_CONSTRAINT_VIOLATION), "constraint_violation");
	assert_string_equal(goc_err_name(GOC_E_UNAVAILABLE), "unavailable");
	assert_int_equal(goc_err_from_name("null_key"), GOC_E_NULL_KEY);
	assert_int_equal(goc_err_from_name("no_such_code"), GOC_E__COUNT);
}

static void test_render_ok(void **state)
{
	struct evbuffer *b = evbuffer_new();
	json_t *id = json_integer(9);
	codec_render_ok(b, id, "\"pong\":true");
	codec_render_ok(b, NULL, NULL);
	char *s = buf_text(b, NULL);
	assert_string_equal(s, "{\"id\":9,\"ok\":true,\"pong\":true}\n{\"ok\":true}\n");
	free(s);
	json_decref(id);
	evbuffer_free(b);
}

/* codec_render_head is the start of every answer: an answer rendered
 * without its id, with its "{" swapped for the head, is the answer. */
static void test_render_head_is_every_answers_start(void **state)
{
	json_t *ids[] = {json_loads("[1,2.5,{\"a\":[null,\"\\u00e9\"]}]", 0, NULL),
			 json_integer(3), NULL};
	for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
		for (int kind = 0; kind < 3; kind++) {
			struct evbuffer *want = evbuffer_new(), *got = evbuffer_new(),
					*head = evbuffer_new();
			if (kind == 0) {
				codec_render_row(want, ids[i], true, "{\"k\":1}", 7);
				codec_render_row(got, NULL, true, "{\"k\":1}", 7);
			} else if (kind == 1) {
				codec_render_error(want, ids[i], GOC_E_TIMEOUT, "m");
				codec_render_error(got, NULL, GOC_E_TIMEOUT, "m");
			} else {
				codec_render_ok(want, ids[i], "\"pong\":true");
				codec_render_ok(got, NULL, "\"pong\":true");
			}
			codec_render_head(head, ids[i]);
			evbuffer_drain(got, 1);
			evbuffer_prepend_buffer(got, head);
			char *w = buf_text(want, NULL), *g = buf_text(got, NULL);
			assert_string_equal(g, w);
			free(w);
			free(g);
			evbuffer_free(want);
			evbuffer_free(got);
			evbuffer_free(head);
		}
		json_decref(ids[i]);
	}
}

/* The client side refuses lines that are not responses. */
static void test_parse_response_rejects_garbage(void **state)
{
	static const char *const bad[] = {
		"", "[1]", "{\"x\":1}", "{\"ok\":1}", "{\"ok\":false}",
		"{\"ok\":false,\"error\":{\"message\":\"m\"}}", "{\"ok\":true",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct goc_response r;
		assert_int_equal(codec_parse_response(bad[i], strlen(bad[i]), &r), -1);
		codec_response_free(&r);
	}
}

/*
 * goc-bench reads responses with codec_scan_response (no allocation): it
 * must agree with codec_parse_response on what is a response, on ok and
 * created, and give the row's exact text.
 */
static void test_scan_response_agrees_with_parse(void **state)
{
	static const char *const lines[] = {
		"{\"ok\":true,\"created\":true,\"row\":{\"id\":1,\"k\":\"a\"}}",
		"{\"id\":7,\"ok\":true,\"created\":false,\"row\":{\"id\":12345678901234567,\"k\":\"q\\\"}\",\"d\":{\"x\":[1,{\"y\":null}]}}}",
		" { \"ok\" : true , \"row\" : null } ",
		"{\"ok\":true,\"pong\":true}",
		"{\"id\":\"s\",\"ok\":false,\"error\":{\"code\":\"timeout\",\"message\":\"m\"}}",
		"{\"ok\":true,\"created\":true,\"row\":{\"n\":-1.5e-3,\"t\":\"\\u00e9\"}}",
		/* not responses: both refuse */
		"", "[1]", "{\"x\":1}", "{\"ok\":1}", "{\"ok\":true", "{\"ok\":true}x",
		"{\"ok\":true,\"row\":{\"a\":01}}", "{\"ok\":true,\"row\":{\"a\":\"\\q\"}}",
		"{\"ok\":true,}", "{\"ok\":tru}", "{\"ok\":true,\"row\":{\"a\":1,}}",
		"{\"ok\":true,\"row\":[1,2}", "{\"ok\":true,\"m\":\"a\tb\"}",
	};
	for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
		const char *l = lines[i];
		struct goc_response r;
		struct goc_response_scan sc;
		int pr = codec_parse_response(l, strlen(l), &r);
		int sr = codec_scan_response(l, strlen(l), &sc);
		/* an error response without a code is refused by parse only */
		if (pr != 0 && sr == 0 && !sc.ok) {
			codec_response_free(&r);
			continue;
		}
		if (pr != sr)
			fail_msg("line %zu: parse %d, scan %d: %s", i, pr, sr, l);
		if (pr == 0) {
			assert_int_equal(sc.ok, r.ok);
			assert_int_equal(sc.created, r.created);
			assert_int_equal(sc.row != NULL, r.row != NULL);
			if (sc.row) {
				json_t *j = json_loadb(sc.row, sc.row_len, 0, NULL);
				assert_non_null(j);
				assert_true(json_equal(j, r.row));
				json_decref(j);
			}
		}
		codec_response_free(&r);
	}
}

/* ---- frame_next ---------------------------------------------------------- */

struct framed {
	enum frame_rc rc;
	char text[256];
	size_t len, consumed;
};

/* One frame_next call (checked against frame_next_mem on the same bytes);
 * on FRAME_LINE the line is copied out and drained. */
static struct framed next_frame(struct evbuffer *in, size_t max_line)
{
	struct framed f;
	const char *line = NULL;
	memset(&f, 0, sizeof f);
	/* frame_next_mem over a flat copy must agree with frame_next */
	size_t avail = evbuffer_get_length(in);
	char *flat = malloc(avail + 1);
	assert_non_null(flat);
	assert_int_equal(evbuffer_copyout(in, flat, avail), (ev_ssize_t)avail);
	const char *mline = NULL;
	size_t mlen = 0, mconsumed = 0;
	enum frame_rc mrc = frame_next_mem(flat, avail, max_line, &mline, &mlen, &mconsumed);
	f.rc = frame_next(in, max_line, NULL, &line, &f.len, &f.consumed);
	assert_int_equal(mrc, f.rc);
	if (f.rc == FRAME_LINE) {
		assert_ptr_equal(mline, flat);
		assert_int_equal(mlen, f.len);
		assert_int_equal(mconsumed, f.consumed);
		assert_memory_equal(mline, line, f.len);
	}
	free(flat);
	if (f.rc == FRAME_LINE) {
		assert_true(f.len < sizeof f.text);
		memcpy(f.text, line, f.len);
		evbuffer_drain(in, f.consumed);
	}
	return f;
}

/* With `searched`, a line fed a byte at a time is cut as without it, and
 * nothing already searched is searched again. */
static void test_frame_searched_carries_over(void **state)
{
	static const char text[] = "{\"op\":\"ping\"}\r\n\n{\"a\":1}\nlong-unfinished";
	struct evbuffer *in = evbuffer_new();
	size_t searched = 0, lines = 0;
	for (size_t i = 0; i < sizeof text - 1; i++) {
		evbuffer_add(in, text + i, 1);
		for (;;) {
			const char *line;
			size_t len, consumed;
			enum frame_rc rc = frame_next(in, 64, &searched, &line, &len, &consumed);
			if (rc == FRAME_NEED_MORE) {
				assert_int_equal(searched, evbuffer_get_length(in));
				break;
			}
			assert_int_equal(rc, FRAME_LINE);
			assert_int_equal(searched, 0);
			static const char *const want[] = {"{\"op\":\"ping\"}", "", "{\"a\":1}"};
			assert_true(lines < 3);
			assert_int_equal(len, strlen(want[lines]));
			assert_memory_equal(line, want[lines], len);
			lines++;
			evbuffer_drain(in, consumed);
		}
	}
	assert_int_equal(lines, 3);
	/* An LF in the part said to be searched is not looked for again. */
	evbuffer_drain(in, evbuffer_get_length(in));
	evbuffer_add(in, "ab\ncd", 5);
	searched = 3;
	const char *line;
	size_t len, consumed;
	assert_int_equal(frame_next(in, 64, &searched, &line, &len, &consumed), FRAME_NEED_MORE);
	assert_int_equal(searched, 5);
	evbuffer_add(in, "\n", 1);
	assert_int_equal(frame_next(in, 64, &searched, &line, &len, &consumed), FRAME_LINE);
	assert_int_equal(len, 5);
	/* Too long without an LF is noticed however it was searched. */
	evbuffer_drain(in, evbuffer_get_length(in));
	searched = 0;
	for (int i = 0; i < 70; i++) {
		evbuffer_add(in, "x", 1);
		enum frame_rc rc = frame_next(in, 64, &searched, &line, &len, &consumed);
		assert_int_equal(rc, i + 1 > 65 ? FRAME_TOO_LARGE : FRAME_NEED_MORE);
	}
	evbuffer_free(in);
}

static void test_frame_line(void **state)
{
	struct evbuffer *in = evbuffer_new();
	evbuffer_add_printf(in, "{\"op\":\"ping\"}\nab");
	struct framed f = next_frame(in, 100);
	assert_int_equal(f.rc, FRAME_LINE);
	assert_int_equal(f.len, 13);
	assert_int_equal(f.consumed, 14);
	assert_memory_equal(f.text, "{\"op\":\"ping\"}", 13);
	/* the rest stays buffered until its LF comes */
	assert_int_equal(evbuffer_get_length(in), 2);
	assert_int_equal(next_frame(in, 100).rc, FRAME_NEED_MORE);
	evbuffer_add(in, "c\n", 2);
	f = next_frame(in, 100);
	assert_int_equal(f.rc, FRAME_LINE);
	assert_string_equal(f.text, "abc");
	assert_int_equal(evbuffer_get_length(in), 0);
	assert_int_equal(next_frame(in, 100).rc, FRAME_NEED_MORE);
	evbuffer_free(in);
}

static void test_frame_crlf(void **state)
{
	struct evbuffer *in = evbuffer_new();
	evbuffer_add_printf(in, "abc\r\ndef\n\r\n\n a\rb\n");
	struct framed f = next_frame(in, 100);
	assert_int_equal(f.rc, FRAME_LINE);
	assert_int_equal(f.len, 3);
	assert_int_equal(f.consumed, 5);
	assert_string_equal(f.text, "abc");
	f = next_frame(in, 100);
	assert_string_equal(f.text, "def");
	assert_int_equal(f.consumed, 4);
	/* "\r\n" and "\n" are empty lines; blank lines are ignored by callers */
	f = next_frame(in, 100);
	assert_int_equal(f.rc, FRAME_LINE);
	assert_int_equal(f.len, 0);
	assert_int_equal(f.consumed, 2);
	f = next_frame(in, 100);
	assert_int_equal(f.rc, FRAME_LINE);
	assert_int_equal(f.len, 0);
	/* only a CR right before the LF is dropped */
	f = next_frame(in, 100);
	assert_int_equal(f.len, 4);
	assert_memory_equal(f.text, " a\rb", 4);
	evbuffer_free(in);
}

/* A line split over several evbuffer chains still comes out whole. */
static void test_frame_across_chains(void **state)
{
	struct evbuffer *in = evbuffer_new();
	static const char a[] = "{\"op\":", b[] = "\"ping\"", c[] = "}\r\n";
	evbuffer_add_reference(in, a, sizeof a - 1, NULL, NULL);
	evbuffer_add_reference(in, b, sizeof b - 1, NULL, NULL);
	evbuffer_add_reference(in, c, sizeof c - 1, NULL, NULL);
	struct framed f = next_frame(in, 100);
	assert_int_equal(f.rc, FRAME_LINE);
	assert_string_equal(f.text, "{\"op\":\"ping\"}");
	assert_int_equal(f.consumed, 15);
	evbuffer_free(in);
}

static void test_frame_need_more(void **state)
{
	struct evbuffer *in = evbuffer_new();
	assert_int_equal(next_frame(in, 8).rc, FRAME_NEED_MORE);
	evbuffer_add(in, "12345678", 8);
	assert_int_equal(next_frame(in, 8).rc, FRAME_NEED_MORE);
	/* max_line bytes + CR may still be a legal line waiting for its LF */
	evbuffer_add(in, "\r", 1);
	assert_int_equal(next_frame(in, 8).rc, FRAME_NEED_MORE);
	evbuffer_add(in, "\n", 1);
	struct framed f = next_frame(in, 8);
	assert_int_equal(f.rc, FRAME_LINE);
	assert_int_equal(f.len, 8);
	assert_int_equal(f.consumed, 10);
	evbuffer_free(in);
}

/* A line of exactly max_line bytes is accepted, one more is too large. */
static void test_frame_exact_limit(void **state)
{
	struct evbuffer *in = evbuffer_new();
	evbuffer_add(in, "12345678\n", 9);
	struct framed f = next_frame(in, 8);
	assert_int_equal(f.rc, FRAME_LINE);
	assert_int_equal(f.len, 8);
	assert_string_equal(f.text, "12345678");

	evbuffer_add(in, "12345678\r\n", 10);
	f = next_frame(in, 8);
	assert_int_equal(f.rc, FRAME_LINE);
	assert_int_equal(f.len, 8);

	evbuffer_add(in, "123456789\n", 10);
	assert_int_equal(next_frame(in, 8).rc, FRAME_TOO_LARGE);
	evbuffer_free(in);

	in = evbuffer_new();
	evbuffer_add(in, "123456789\r\n", 11);
	assert_int_equal(next_frame(in, 8).rc, FRAME_TOO_LARGE);
	evbuffer_free(in);
}

/* Without an LF, the buffer may not grow past the limit (+CR): a client
 * streaming bytes without newlines is cut off instead of buffered. */
static void test_frame_too_large_without_lf(void **state)
{
	struct evbuffer *in = evbuffer_new();
	evbuffer_add(in, "1234567890", 10);
	assert_int_equal(next_frame(in, 8).rc, FRAME_TOO_LARGE);
	evbuffer_free(in);

	in = evbuffer_new();
	char big[70000];
	memset(big, 'x', sizeof big);
	evbuffer_add(in, big, sizeof big);
	assert_int_equal(next_frame(in, 65536).rc, FRAME_TOO_LARGE);
	evbuffer_free(in);
}

/* An earlier complete line is returned before a later oversized one is
 * noticed, so earlier requests are still answered. */
static void test_frame_line_before_oversized(void **state)
{
	struct evbuffer *in = evbuffer_new();
	evbuffer_add(in, "ok\n1234567890123", 16);
	struct framed f = next_frame(in, 8);
	assert_int_equal(f.rc, FRAME_LINE);
	assert_string_equal(f.text, "ok");
	assert_int_equal(next_frame(in, 8).rc, FRAME_TOO_LARGE);
	evbuffer_free(in);
}

static void test_frame_is_blank(void **state)
{
	assert_true(frame_is_blank("", 0));
	assert_true(frame_is_blank("  \t ", 4));
	assert_true(frame_is_blank(" \r ", 3)); /* JSON whitespace, as a CR-only line's */
	assert_false(frame_is_blank(" x ", 3));
	assert_false(frame_is_blank("{}", 2));
	/* only len bytes count */
	assert_true(frame_is_blank("  x", 2));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_get_or_create_all_fields),
		cmocka_unit_test(test_parse_get_ping_stats),
		cmocka_unit_test(test_parse_null_defaults_is_absent),
		cmocka_unit_test(test_parse_honours_len),
		cmocka_unit_test(test_parse_id_any_value),
		cmocka_unit_test(test_parse_bad_json_syntax),
		cmocka_unit_test(test_parse_bad_json_invalid_utf8),
		cmocka_unit_test(test_parse_bad_json_nul),
		cmocka_unit_test(test_parse_bad_json_duplicate_member),
		cmocka_unit_test(test_parse_bad_json_number_too_big),
		cmocka_unit_test(test_parse_bad_request_not_object),
		cmocka_unit_test(test_parse_bad_request_scalar),
		cmocka_unit_test(test_parse_bad_request_op),
		cmocka_unit_test(test_parse_bad_request_unknown_field),
		cmocka_unit_test(test_parse_bad_request_table),
		cmocka_unit_test(test_parse_bad_request_key),
		cmocka_unit_test(test_parse_bad_request_defaults),
		cmocka_unit_test(test_parse_unknown_op),
		cmocka_unit_test(test_parse_raw_nul),
		cmocka_unit_test(test_parse_error_keeps_id),
		cmocka_unit_test(test_value_text_string),
		cmocka_unit_test(test_value_text_int64_exact),
		cmocka_unit_test(test_value_text_real_shortest),
		cmocka_unit_test(test_value_text_real_round_trips),
		cmocka_unit_test(test_value_text_bool),
		cmocka_unit_test(test_value_text_null_refused),
		cmocka_unit_test(test_value_text_object_refused_without_json),
		cmocka_unit_test(test_value_text_json_mode),
		cmocka_unit_test(test_value_text_json_nested_real_shortest),
		cmocka_unit_test(test_render_id_real_shortest),
		cmocka_unit_test(test_render_row_verbatim),
		cmocka_unit_test(test_render_row_null),
		cmocka_unit_test(test_render_row_blanks_cr_lf),
		cmocka_unit_test(test_render_row_parses_back),
		cmocka_unit_test(test_render_error_escaping),
		cmocka_unit_test(test_render_error_invalid_utf8),
		cmocka_unit_test(test_render_error_every_code_round_trips),
		cmocka_unit_test(test_render_ok),
		cmocka_unit_test(test_render_head_is_every_answers_start),
		cmocka_unit_test(test_parse_response_rejects_garbage),
		cmocka_unit_test(test_scan_response_agrees_with_parse),
		cmocka_unit_test(test_frame_line),
		cmocka_unit_test(test_frame_crlf),
		cmocka_unit_test(test_frame_across_chains),
		cmocka_unit_test(test_frame_need_more),
		cmocka_unit_test(test_frame_exact_limit),
		cmocka_unit_test(test_frame_too_large_without_lf),
		cmocka_unit_test(test_frame_line_before_oversized),
		cmocka_unit_test(test_frame_is_blank),
		cmocka_unit_test(test_frame_searched_carries_over),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
