/*
 * jsonread.c - recursive-descent JSON reader building jansson values.
 *
 * Owns: lexing and validation of request JSON.  Must never: accept what
 * RFC 8259 or json_loadb's flags used by the codec would reject; the unit
 * tests and the fuzzer hold it to that.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonread.h"

struct rd {
	const unsigned char *p, *end, *start;
	int depth;
	struct jsonread_error *err;
	char *buf;   /* scratch for unescaped strings */
	size_t cap;
};

static json_t *fail(struct rd *r, const unsigned char *at, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static json_t *fail(struct rd *r, const unsigned char *at, const char *fmt, ...)
{
	va_list ap;
	r->err->position = (size_t)(at - r->start);
	va_start(ap, fmt);
	vsnprintf(r->err->text, sizeof r->err->text, fmt, ap);
	va_end(ap);
	return NULL;
}

static void skip_ws(struct rd *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
		r->p++;
}

static json_t *read_value(struct rd *r);

static int ensure(struct rd *r, size_t need)
{
	if (need <= r->cap)
		return 0;
	size_t cap = r->cap ? r->cap : 64;
	while (cap < need)
		cap *= 2;
	char *b = realloc(r->buf, cap);
	if (b == NULL)
		return -1;
	r->buf = b;
	r->cap = cap;
	return 0;
}

static int hex4(const unsigned char *p, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned c = p[i], d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return -1;
		v = v << 4 | d;
	}
	*out = v;
	return 0;
}

int jsonread_utf8_len(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0];
	int n;
	unsigned lo = 0x80, hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF) {
		n = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else
		return 0;
	if (end - p < n || p[1] < lo || p[1] > hi)
		return 0;
	for (int i = 2; i < n; i++)
		if ((p[i] & 0xC0) != 0x80)
			return 0;
	return n;
}

/* Bytes a string's fast path copies as they are: printable ASCII but the
 * quote and the backslash.  One table lookup per byte instead of four
 * comparisons (read_string was the top function under callgrind). */
static const unsigned char plain_byte[256] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

/* Read a string (r->p at the opening quote) into r->buf; returns its length or -1. */
static long read_string(struct rd *r)
{
	const unsigned char *s = ++r->p;
	/* Fast path: a run with no escapes and no multibyte characters. */
	while (r->p < r->end && plain_byte[*r->p])
		r->p++;
	size_t n = (size_t)(r->p - s);
	if (ensure(r, n + 1) != 0) {
		fail(r, s, "out of memory");
		return -1;
	}
	memcpy(r->buf, s, n);
	while (r->p < r->end) {
		unsigned c = *r->p;
		if (c == '"') {
			r->p++;
			r->buf[n] = '\0';
			return (long)n;
		}
		if (ensure(r, n + 8) != 0) {
			fail(r, r->p, "out of memory");
			return -1;
		}
		if (c < 0x20) {
			fail(r, r->p, "control character 0x%x in string", c);
			return -1;
		}
		if (c < 0x80) {
			if (c != '\\') {
				r->buf[n++] = (char)c;
				r->p++;
				continue;
			}
			if (r->end - r->p < 2)
				break;
			unsigned e = r->p[1];
			r->p += 2;
			switch (e) {
			case '"': r->buf[n++] = '"'; continue;
			case '\\': r->buf[n++] = '\\'; continue;
			case '/': r->buf[n++] = '/'; continue;
			case 'b': r->buf[n++] = '\b'; continue;
			case 'f': r->buf[n++] = '\f'; continue;
			case 'n': r->buf[n++] = '\n'; continue;
			case 'r': r->buf[n++] = '\r'; continue;
			case 't': r->buf[n++] = '\t'; continue;
			case 'u': break;
			default:
				fail(r, r->p - 2, "invalid escape");
				return -1;
			}
			unsigned u, u2;
			if (r->end - r->p < 4 || hex4(r->p, &u) != 0) {
				fail(r, r->p - 2, "invalid \\u escape");
				return -1;
			}
			r->p += 4;
			if (u >= 0xD800 && u <= 0xDBFF) {
				if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u' ||
				    hex4(r->p + 2, &u2) != 0 || u2 < 0xDC00 || u2 > 0xDFFF) {
					fail(r, r->p - 6, "invalid Unicode surrogate pair");
					return -1;
				}
				r->p += 6;
				u = 0x10000 + ((u - 0xD800) << 10) + (u2 - 0xDC00);
			} else if (u >= 0xDC00 && u <= 0xDFFF) {
				fail(r, r->p - 6, "invalid Unicode low surrogate");
				return -1;
			}
			if (u == 0) {
				fail(r, r->p - 6, "\\u0000 (NUL) is not allowed in strings");
				return -1;
			}
			if (u < 0x80) {
				r->buf[n++] = (char)u;
			} else if (u < 0x800) {
				r->buf[n++] = (char)(0xC0 | u >> 6);
				r->buf[n++] = (char)(0x80 | (u & 0x3F));
			} else if (u < 0x10000) {
				r->buf[n++] = (char)(0xE0 | u >> 12);
				r->buf[n++] = (char)(0x80 | ((u >> 6) & 0x3F));
				r->buf[n++] = (char)(0x80 | (u & 0x3F));
			} else {
				r->buf[n++] = (char)(0xF0 | u >> 18);
				r->buf[n++] = (char)(0x80 | ((u >> 12) & 0x3F));
				r->buf[n++] = (char)(0x80 | ((u >> 6) & 0x3F));
				r->buf[n++] = (char)(0x80 | (u & 0x3F));
			}
			continue;
		}
		int l = jsonread_utf8_len(r->p, r->end);
		if (l == 0) {
			fail(r, r->p, "unable to decode byte 0x%x", c);
			return -1;
		}
		memcpy(r->buf + n, r->p, (size_t)l);
		n += (size_t)l;
		r->p += l;
	}
	fail(r, r->p, "premature end of input in string");
	return -1;
}

static json_t *read_number(struct rd *r)
{
	const unsigned char *s = r->p, *q = r->p;
	int is_int = 1;
	if (q < r->end && *q == '-')
		q++;
	if (q < r->end && *q == '0')
		q++;
	else if (q < r->end && *q >= '1' && *q <= '9')
		while (q < r->end && *q >= '0' && *q <= '9')
			q++;
	else
		return fail(r, s, "invalid token");
	if (q < r->end && *q == '.') {
		is_int = 0;
		q++;
		if (q >= r->end || *q < '0' || *q > '9')
			return fail(r, q, "invalid number");
		while (q < r->end && *q >= '0' && *q <= '9')
			q++;
	}
	if (q < r->end && (*q == 'e' || *q == 'E')) {
		is_int = 0;
		q++;
		if (q < r->end && (*q == '+' || *q == '-'))
			q++;
		if (q >= r->end || *q < '0' || *q > '9')
			return fail(r, q, "invalid number");
		while (q < r->end && *q >= '0' && *q <= '9')
			q++;
	}
	/* strtod/strtoll need a terminated copy.  Length alone says nothing
	 * of range (1.000..., an exponent with leading zeros): a long one is
	 * copied to the heap, as jansson would read it. */
	char small[512], *tmp = small;
	size_t n = (size_t)(q - s);
	if (n >= sizeof small && (tmp = malloc(n + 1)) == NULL)
		return fail(r, s, "out of memory");
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	r->p = q;
	errno = 0;
	json_t *v = NULL;
	if (is_int) {
		long long i = strtoll(tmp, NULL, 10);
		if (errno == ERANGE)
			fail(r, s, "integer too big for 64 bits (%s)", i < 0 ? "below -2^63" : "over 2^63-1");
		else
			v = json_integer(i);
	} else {
		double d = strtod(tmp, NULL);
		if (errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL))
			fail(r, s, "real number overflow");
		else
			v = json_real(d);
	}
	if (tmp != small)
		free(tmp);
	return v;
}

static json_t *read_object(struct rd *r)
{
	const unsigned char *open = r->p++;
	json_t *o = json_object();
	if (o == NULL)
		return fail(r, open, "out of memory");
	skip_ws(r);
	if (r->p < r->end && *r->p == '}') {
		r->p++;
		return o;
	}
	for (;;) {
		skip_ws(r);
		if (r->p >= r->end || *r->p != '"') {
			json_decref(o);
			return fail(r, r->p, r->p >= r->end ? "premature end of input" : "string or '}' expected");
		}
		const unsigned char *kat = r->p;
		long kl = read_string(r);
		if (kl < 0) {
			json_decref(o);
			return NULL;
		}
		if (memchr(r->buf, '\0', (size_t)kl) != NULL) {
			json_decref(o);
			return fail(r, kat, "NUL byte in object key not supported");
		}
		/* r->buf is reused by the value: keep the key on the stack when small. */
		char small[128], *key = (size_t)kl < sizeof small ? small : malloc((size_t)kl + 1);
		if (key == NULL) {
			json_decref(o);
			return fail(r, kat, "out of memory");
		}
		memcpy(key, r->buf, (size_t)kl + 1);
		if (json_object_get(o, key) != NULL) {
			if (key != small)
				free(key);
			json_decref(o);
			return fail(r, kat, "duplicate object key");
		}
		skip_ws(r);
		if (r->p >= r->end || *r->p != ':') {
			if (key != small)
				free(key);
			json_decref(o);
			return fail(r, r->p, "':' expected");
		}
		r->p++;
		json_t *v = read_value(r);
		if (v == NULL || json_object_set_new_nocheck(o, key, v) != 0) {
			if (key != small)
				free(key);
			json_decref(o);
			return NULL;
		}
		if (key != small)
			free(key);
		skip_ws(r);
		if (r->p < r->end && *r->p == ',') {
			r->p++;
			continue;
		}
		if (r->p < r->end && *r->p == '}') {
			r->p++;
			return o;
		}
		json_decref(o);
		return fail(r, r->p, r->p >= r->end ? "premature end of input" : "'}' expected");
	}
}

static json_t *read_array(struct rd *r)
{
	const unsigned char *open = r->p++;
	json_t *a = json_array();
	if (a == NULL)
		return fail(r, open, "out of memory");
	skip_ws(r);
	if (r->p < r->end && *r->p == ']') {
		r->p++;
		return a;
	}
	for (;;) {
		json_t *v = read_value(r);
		if (v == NULL || json_array_append_new(a, v) != 0) {
			json_decref(a);
			return NULL;
		}
		skip_ws(r);
		if (r->p < r->end && *r->p == ',') {
			r->p++;
			continue;
		}
		if (r->p < r->end && *r->p == ']') {
			r->p++;
			return a;
		}
		json_decref(a);
		return fail(r, r->p, r->p >= r->end ? "premature end of input" : "']' expected");
	}
}

static int word(struct rd *r, const char *w, size_t n)
{
	if ((size_t)(r->end - r->p) < n || memcmp(r->p, w, n) != 0)
		return 0;
	r->p += n;
	return 1;
}

static json_t *read_value(struct rd *r)
{
	skip_ws(r);
	if (r->p >= r->end)
		return fail(r, r->p, "premature end of input");
	json_t *v;
	switch (*r->p) {
	case '{':
	case '[':
		if (++r->depth > JSON_PARSER_MAX_DEPTH)
			return fail(r, r->p, "maximum parsing depth reached");
		v = *r->p == '{' ? read_object(r) : read_array(r);
		r->depth--;
		return v;
	case '"': {
		long n = read_string(r);
		if (n < 0)
			return NULL;
		return json_stringn_nocheck(r->buf, (size_t)n);
	}
	case 't':
		if (word(r, "true", 4))
			return json_true();
		break;
	case 'f':
		if (word(r, "false", 5))
			return json_false();
		break;
	case 'n':
		if (word(r, "null", 4))
			return json_null();
		break;
	default:
		if (*r->p == '-' || (*r->p >= '0' && *r->p <= '9'))
			return read_number(r);
		break;
	}
	return fail(r, r->p, "invalid token");
}

json_t *jsonread(const char *p, size_t len, struct jsonread_error *err)
{
	struct rd r = {
		.p = (const unsigned char *)p,
		.end = (const unsigned char *)p + len,
		.start = (const unsigned char *)p,
		.err = err,
	};
	/* The scratch buffer outlives the call: every user of proto is a
	 * single-threaded event loop, and a fresh buffer per line was a
	 * malloc/free pair on the hot path. */
	static char *scratch;
	static size_t scratch_cap;
	r.buf = scratch;
	r.cap = scratch_cap;
	json_t *v = read_value(&r);
	if (v != NULL) {
		skip_ws(&r);
		if (r.p != r.end) {
			json_decref(v);
			v = fail(&r, r.p, "end of file expected");
		}
	}
	if (r.cap > 1 << 20) { /* don't keep a huge buffer after a huge line */
		free(r.buf);
		r.buf = NULL;
		r.cap = 0;
	}
	scratch = r.buf;
	scratch_cap = r.cap;
	return v;
}

/* ---- reading without building: skip a value, find a member ---------------- */

static const char *skip_ws_raw(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* p at the opening quote; returns just past the closing one, or NULL. */
static const char *skip_string_raw(const char *p, const char *end)
{
	for (p++; p < end; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '"')
			return p + 1;
		if (c < 0x20)
			return NULL;
		if (c != '\\')
			continue;
		if (++p >= end)
			return NULL;
		if (*p == 'u') {
			unsigned v;
			if (end - p < 5 || hex4((const unsigned char *)p + 1, &v) != 0)
				return NULL;
			p += 4;
		} else if (strchr("\"\\/bfnrt", *p) == NULL || *p == '\0') {
			return NULL;
		}
	}
	return NULL;
}

static const char *skip_digits(const char *p, const char *end)
{
	const char *s = p;
	while (p < end && *p >= '0' && *p <= '9')
		p++;
	return p > s ? p : NULL;
}

static const char *skip_value_raw(const char *p, const char *end, int depth)
{
	p = skip_ws_raw(p, end);
	if (p >= end || depth > JSON_PARSER_MAX_DEPTH)
		return NULL;
	switch (*p) {
	case '"':
		return skip_string_raw(p, end);
	case '{':
	case '[': {
		char close = *p == '{' ? '}' : ']';
		p = skip_ws_raw(p + 1, end);
		if (p < end && *p == close)
			return p + 1;
		for (;;) {
			if (close == '}') {
				if (p >= end || *p != '"' || (p = skip_string_raw(p, end)) == NULL)
					return NULL;
				p = skip_ws_raw(p, end);
				if (p >= end || *p++ != ':')
					return NULL;
			}
			if ((p = skip_value_raw(p, end, depth + 1)) == NULL)
				return NULL;
			p = skip_ws_raw(p, end);
			if (p >= end)
				return NULL;
			if (*p == close)
				return p + 1;
			if (*p++ != ',')
				return NULL;
			p = skip_ws_raw(p, end);
		}
	}
	case 't':
		return end - p >= 4 && memcmp(p, "true", 4) == 0 ? p + 4 : NULL;
	case 'f':
		return end - p >= 5 && memcmp(p, "false", 5) == 0 ? p + 5 : NULL;
	case 'n':
		return end - p >= 4 && memcmp(p, "null", 4) == 0 ? p + 4 : NULL;
	default:
		if (*p == '-')
			p++;
		if (p < end && *p == '0')
			p++;
		else if ((p = skip_digits(p, end)) == NULL)
			return NULL;
		if (p < end && *p == '.' && (p = skip_digits(p + 1, end)) == NULL)
			return NULL;
		if (p < end && (*p == 'e' || *p == 'E')) {
			p++;
			if (p < end && (*p == '+' || *p == '-'))
				p++;
			if ((p = skip_digits(p, end)) == NULL)
				return NULL;
		}
		return p;
	}
}

const char *jsonread_skip(const char *p, const char *end)
{
	return skip_value_raw(p, end, 0);
}

int jsonread_members(const char *p, const char *end, jsonread_member_fn *fn, void *arg)
{
	p = skip_ws_raw(p, end);
	if (p >= end || *p != '{')
		return -1;
	p = skip_ws_raw(p + 1, end);
	if (p < end && *p == '}')
		return skip_ws_raw(p + 1, end) == end ? 0 : -1;
	for (;;) {
		const char *name = p, *ne;
		if (p >= end || *p != '"' || (ne = skip_string_raw(p, end)) == NULL)
			return -1;
		p = skip_ws_raw(ne, end);
		if (p >= end || *p++ != ':')
			return -1;
		const char *v = skip_ws_raw(p, end), *ve = skip_value_raw(v, end, 1);
		if (ve == NULL)
			return -1;
		if (fn(arg, name + 1, (size_t)(ne - name - 2), v, (size_t)(ve - v)) != 0)
			return -1;
		p = skip_ws_raw(ve, end);
		if (p >= end)
			return -1;
		if (*p == '}')
			return skip_ws_raw(p + 1, end) == end ? 0 : -1;
		if (*p++ != ',')
			return -1;
		p = skip_ws_raw(p, end);
	}
}
