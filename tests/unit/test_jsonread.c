/*
 * test_jsonread.c - the request JSON reader agrees with jansson's json_loadb.
 *
 * Owns: differential tests of proto/jsonread.c against
 * json_loadb(JSON_REJECT_DUPLICATES | JSON_DECODE_ANY): same accept/reject
 * decision and equal trees, on hand-picked edge cases and on many seeded
 * random mutations of request lines.  Must never: depend on error texts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "jsonread.h"

static int count_member(void *arg, const char *name, size_t nlen, const char *v, size_t vlen)
{
	(void)arg;
	(void)name;
	(void)nlen;
	assert_non_null(jsonread_skip(v, v + vlen));
	return vlen > 0 ? 0 : -1;
}

static void same(const char *in, size_t len)
{
	json_error_t jerr;
	struct jsonread_error rerr;
	json_t *a = json_loadb(in, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	json_t *b = jsonread(in, len, &rerr);
	if ((a == NULL) != (b == NULL))
		fail_msg("disagree on %zu bytes \"%.*s\": jansson %s (%s), jsonread %s (%s)", len,
			 (int)(len > 200 ? 200 : len), in, a ? "accepts" : "rejects",
			 a ? "" : jerr.text, b ? "accepts" : "rejects", b ? "" : rerr.text);
	if (a && !json_equal(a, b))
		fail_msg("different trees for \"%.*s\"", (int)(len > 200 ? 200 : len), in);
	/* The tree-less skipper accepts at least what jansson accepts (it does
	 * not check UTF-8, \u0000 or duplicate names), and, for an object, the
	 * member walker agrees with it. */
	const char *end = in + len, *p = jsonread_skip(in, end);
	while (p && p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	if (a && p != end)
		fail_msg("skip rejects \"%.*s\", which jansson accepts", (int)(len > 200 ? 200 : len), in);
	if (p == end && json_is_object(a) != (jsonread_members(in, end, count_member, NULL) == 0) &&
	    a != NULL)
		fail_msg("member walk disagrees on \"%.*s\"", (int)(len > 200 ? 200 : len), in);
	json_decref(a);
	json_decref(b);
}

static void test_edge_cases(void **state)
{
	(void)state;
	static const char *const cases[] = {
		"{}", "[]", " {\"a\":1} ", "\t\r\n[1, 2 ,3]\n", "1", "-0", "0.5", "-1.5e-3", "1E+2",
		"true", "false", "null", "\"x\"", "\"\"", "{\"a\":{\"b\":[{}]}}",
		"9223372036854775807", "-9223372036854775808", "9223372036854775808",
		"-9223372036854775809", "1e308", "1e309", "-1e400", "1e-400", "123456789012345678901234567890",
		"01", "1.", ".5", "+1", "0x10", "NaN", "Infinity", "-", "1e", "1e+", "--1",
		"\"\\u0041\\u00e9\\u4e2d\\ud83d\\ude00\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"",
		"\"\\u0000\"", "\"\\u00\"", "\"\\x41\"", "\"\\/\\b\\f\\n\\r\\t\\\\\\\"\"",
		"\"\xc3\xa9\"", "\"\xc0\xaf\"", "\"\xe0\x80\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"",
		"\"\xff\"", "\"\x7f\"", "\"a\tb\"", "\"unterminated", "{\"a\":1,}", "[1,]", "{,}", "[,]",
		"{\"a\" 1}", "{\"a\":}", "{1:2}", "{\"a\":1 \"b\":2}", "{\"a\":1,\"a\":2}",
		"{\"a\":{\"x\":1,\"x\":1}}", "[1] [2]", "{} x", "", " ", "tru", "nul", "falsey",
		"{\"op\":\"get_or_create\",\"id\":[1,{\"n\":null}],\"table\":\"t\",\"key\":{\"k\":\"v\"}}",
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		same(cases[i], strlen(cases[i]));
	same("\"a\0b\"", 5);       /* raw NUL inside a string */
	same("{\"a\":1}\0", 8);    /* raw NUL after the value */
}

static void test_deep_nesting(void **state)
{
	(void)state;
	enum { N = 100000 };
	char *b = malloc(2 * N);
	memset(b, '[', N);
	memset(b + N, ']', N);
	struct jsonread_error err;
	assert_null(jsonread(b, 2 * N, &err)); /* rejected, no stack overflow */
	/* well inside the limit both accept */
	same(b + N - 100, 200);
	free(b);
}

/* Numbers longer than any fixed buffer: many digits can still make an
 * ordinary double (1.000..., 0.000...1, an exponent with leading zeros). */
static void test_numbers_longer_than_a_buffer(void **state)
{
	(void)state;
	/* each: what comes before and after 700 zeros */
	static const char *const shapes[][2] = {
		{"1.", ""}, {"0.", "1"}, {"-2.5e", "1"}, {"1e-", "5"}, {"[1", "]"}, {"9", ""},
	};
	char in[800];
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
		size_t a = strlen(shapes[i][0]), b = strlen(shapes[i][1]);
		memcpy(in, shapes[i][0], a);
		memset(in + a, '0', 700);
		memcpy(in + a + 700, shapes[i][1], b);
		same(in, a + 700 + b);
	}
}

/* Seeded random mutations of realistic request lines. */
static void test_random_mutations(void **state)
{
	(void)state;
	static const char *const seeds[] = {
		"{\"op\":\"get_or_create\",\"id\":12,\"table\":\"users\",\"key\":{\"email\":\"a@x\"},\"defaults\":{\"n\":1.5,\"ok\":true,\"d\":{\"a\":[1,2,null]}}}",
		"{\"op\":\"get\",\"table\":\"app.t\",\"key\":{\"a\":\"\\u00e9\\ud83d\\ude00\",\"b\":-12e3}}",
		"[\"x\",{\"y\":\"z\"},[[],{}],0,-0.0,1e5,true,false,null]",
	};
	static const char alphabet[] = "{}[]:,\"\\u0123456789abcdefEe.+- \t\ntrufalsn\xc3\xa9\xed\xa0\x80\xff";
	uint64_t x = 0x9E3779B97F4A7C15ULL;
	char buf[512];
	for (int it = 0; it < 60000; it++) {
		const char *s = seeds[it % 3];
		size_t n = strlen(s);
		memcpy(buf, s, n);
		int edits = 1 + (int)(x % 4);
		for (int e = 0; e < edits; e++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			size_t pos = (size_t)(x % n);
			int kind = (int)((x >> 20) % 3);
			char c = alphabet[(x >> 32) % (sizeof alphabet - 1)];
			if (kind == 0) {
				buf[pos] = c;
			} else if (kind == 1 && n + 1 < sizeof buf) {
				memmove(buf + pos + 1, buf + pos, n - pos);
				buf[pos] = c;
				n++;
			} else if (n > 1) {
				memmove(buf + pos, buf + pos + 1, n - pos - 1);
				n--;
			}
		}
		same(buf, n);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_edge_cases),
		cmocka_unit_test(test_deep_nesting),
		cmocka_unit_test(test_numbers_longer_than_a_buffer),
		cmocka_unit_test(test_random_mutations),
	};
	return cmocka_run_group_tests_name("jsonread", tests, NULL, NULL);
}
