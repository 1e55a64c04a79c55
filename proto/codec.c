/*
 * codec.c - request parsing, value text and response rendering.
 *
 * Owns: the request schema and the bytes of every response.
 * Must never: touch sockets, tables or PostgreSQL; reparse PostgreSQL's row
 * text (that would route numbers through a C double).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "codec.h"
#include "jsonread.h"

static const char *const op_names[GOC_OP__COUNT] = {
	[GOC_OP_GET_OR_CREATE] = "get_or_create",
	[GOC_OP_GET] = "get",
	[GOC_OP_PING] = "ping",
	[GOC_OP_STATS] = "stats",
	[GOC_OP_AUTH] = "auth",
};

const char *codec_op_name(enum goc_op op)
{
	return (unsigned)op < GOC_OP__COUNT ? op_names[op] : "?";
}

void codec_error_set(struct codec_error *err, enum goc_err code,
		     const char *fmt, ...)
{
	va_list ap;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
}

void codec_request_free(struct goc_request *req)
{
	if (req->root)
		json_decref(req->root);
	memset(req, 0, sizeof *req);
}

static const char *json_type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "object";
	case JSON_ARRAY: return "array";
	case JSON_STRING: return "string";
	case JSON_INTEGER:
	case JSON_REAL: return "number";
	case JSON_TRUE:
	case JSON_FALSE: return "boolean";
	case JSON_NULL: return "null";
	}
	return "?";
}

int codec_parse_request(const char *line, size_t len, struct goc_request *req,
			struct codec_error *err)
{
	struct jsonread_error jerr;

	memset(req, 0, sizeof *req);
	req->op = GOC_OP__COUNT; /* until "op" is known */
	/* Duplicate keys are rejected: with two "key" members the request
	 * would mean whatever the parser happened to keep. */
	json_t *root = jsonread(line, len, &jerr);
	if (root == NULL) {
		/* JSON text never holds a raw NUL; say so rather than report
		 * whatever the parser made of the bytes around it.  Looked for
		 * only here, off the path of requests that parse. */
		const char *nul = memchr(line, '\0', len);
		if (nul != NULL) {
			codec_error_set(err, GOC_E_BAD_JSON, "invalid JSON at byte %zu: a raw NUL byte "
					"(JSON text cannot contain one)", (size_t)(nul - line));
			return -1;
		}
		codec_error_set(err, GOC_E_BAD_JSON, "invalid JSON at byte %zu: %s%s",
				jerr.position, jerr.text,
				strstr(jerr.text, "too big") || strstr(jerr.text, "overflow") ?
				"; send numbers beyond 64-bit integers or double precision as strings" : "");
		return -1;
	}
	req->root = root;
	if (!json_is_object(root)) {
		codec_error_set(err, GOC_E_BAD_REQUEST,
				"request must be a JSON object, got %s",
				json_type_name(root));
		return -1;
	}
	req->id = json_object_get(root, "id");

	const char *name;
	json_t *v;
	json_t *op = NULL, *table = NULL, *token = NULL;
	json_object_foreach(root, name, v) {
		if (strcmp(name, "id") == 0)
			continue;
		else if (strcmp(name, "op") == 0)
			op = v;
		else if (strcmp(name, "table") == 0)
			table = v;
		else if (strcmp(name, "key") == 0)
			req->key = v;
		else if (strcmp(name, "defaults") == 0)
			req->defaults = v;
		else if (strcmp(name, "token") == 0)
			token = v;
		else {
			codec_error_set(err, GOC_E_BAD_REQUEST,
					"unknown field \"%.64s\" (expected op, id, table, key, defaults, token)",
					name);
			return -1;
		}
	}
	if (op == NULL) {
		codec_error_set(err, GOC_E_BAD_REQUEST, "missing field \"op\"");
		return -1;
	}
	if (!json_is_string(op)) {
		codec_error_set(err, GOC_E_BAD_REQUEST,
				"field \"op\" must be a string, got %s", json_type_name(op));
		return -1;
	}
	const char *ops = json_string_value(op);
	for (int i = 0; i < GOC_OP__COUNT; i++)
		if (strcmp(ops, op_names[i]) == 0)
			req->op = (enum goc_op)i;
	if (req->op == GOC_OP__COUNT) {
		codec_error_set(err, GOC_E_UNKNOWN_OP,
				"unknown op \"%.64s\" (expected get_or_create, get, ping, stats, auth)",
				ops);
		return -1;
	}

	if (req->op == GOC_OP_AUTH) {
		if (table || req->key || req->defaults) {
			codec_error_set(err, GOC_E_BAD_REQUEST, "op \"auth\" takes only a token");
			return -1;
		}
		if (!json_is_string(token)) {
			codec_error_set(err, GOC_E_BAD_REQUEST,
					token ? "field \"token\" must be a string" : "missing field \"token\"");
			return -1;
		}
		req->token = json_string_value(token);
		return 0;
	}
	if (token) {
		codec_error_set(err, GOC_E_BAD_REQUEST, "field \"token\" is only for op \"auth\"");
		return -1;
	}
	if (req->op == GOC_OP_PING || req->op == GOC_OP_STATS) {
		if (table || req->key || req->defaults) {
			codec_error_set(err, GOC_E_BAD_REQUEST,
					"op \"%s\" takes no table, key or defaults", ops);
			return -1;
		}
		return 0;
	}

	if (table == NULL || !json_is_string(table) || json_string_length(table) == 0) {
		codec_error_set(err, GOC_E_BAD_REQUEST,
				table ? "field \"table\" must be a non-empty string"
				      : "missing field \"table\"");
		return -1;
	}
	req->table = json_string_value(table);
	if (req->key == NULL) {
		codec_error_set(err, GOC_E_BAD_REQUEST, "missing field \"key\"");
		return -1;
	}
	if (!json_is_object(req->key) || json_object_size(req->key) == 0) {
		codec_error_set(err, GOC_E_BAD_REQUEST,
				"field \"key\" must be a non-empty object of column: value, got %s",
				json_is_object(req->key) ? "an empty object"
							 : json_type_name(req->key));
		return -1;
	}
	if (req->defaults != NULL) {
		if (req->op != GOC_OP_GET_OR_CREATE) {
			codec_error_set(err, GOC_E_BAD_REQUEST,
					"field \"defaults\" is only for get_or_create");
			return -1;
		}
		if (json_is_null(req->defaults)) {
			req->defaults = NULL;
		} else if (!json_is_object(req->defaults)) {
			codec_error_set(err, GOC_E_BAD_REQUEST,
					"field \"defaults\" must be an object of column: value, got %s",
					json_type_name(req->defaults));
			return -1;
		}
	}
	return 0;
}

/*
 * The shortest digits that read back as d, laid out as JavaScript prints
 * numbers: positional for 1e-6 <= |d| < 1e21, else with an exponent.  So
 * 20.0 is "20", which an integer column takes (printf's shortest %g gives
 * "2e+01", which it refuses), 0.1 is "0.1" and 1e300 is "1e+300".  In JSON
 * (as_json) a whole number gets ".0", so that it stays a real: "20.0".
 */
static void format_real(double d, bool as_json, char *buf, size_t size)
{
	char e[40], digits[20];
	int k = 0;

	for (int prec = 1; prec <= 17; prec++) {
		snprintf(e, sizeof e, "%.*e", prec - 1, d);
		if (strtod(e, NULL) == d)
			break;
	}
	/* e is [-]D[.DDD]e[+-]X: collect the digits, then the exponent. */
	const char *p = e + (e[0] == '-');
	for (; *p && *p != 'e'; p++)
		if (*p != '.')
			digits[k++] = *p;
	while (k > 1 && digits[k - 1] == '0')
		k--;
	int n = atoi(p + 1) + 1; /* d = 0.DIGITS x 10^n */
	char *o = buf, *end = buf + size - 1;
#define PUT(c) do { if (o < end) *o++ = (c); } while (0)
	if (e[0] == '-')
		PUT('-');
	if (d == 0) {
		PUT('0');
		n = k = 1;
	} else if (n >= k && n <= 21) {          /* whole: 12300 */
		for (int i = 0; i < n; i++)
			PUT(i < k ? digits[i] : '0');
	} else if (n > 0 && n <= 21) {           /* 12.3 */
		for (int i = 0; i < k; i++) {
			if (i == n)
				PUT('.');
			PUT(digits[i]);
		}
	} else if (n > -6 && n <= 0) {           /* 0.00123 */
		PUT('0');
		PUT('.');
		for (int i = n; i < 0; i++)
			PUT('0');
		for (int i = 0; i < k; i++)
			PUT(digits[i]);
	} else {                                 /* 1.23e+25 */
		PUT(digits[0]);
		if (k > 1)
			PUT('.');
		for (int i = 1; i < k; i++)
			PUT(digits[i]);
		char x[16];
		snprintf(x, sizeof x, "e%+d", n - 1);
		for (const char *q = x; *q; q++)
			PUT(*q);
	}
	if (as_json && n >= k && n <= 21) {
		PUT('.');
		PUT('0');
	}
#undef PUT
	*o = '\0';
}

static void add_json_string(struct evbuffer *out, const char *s);

/* Compact JSON of v with every real in shortest round-trip form (jansson's
 * own dump prints 0.1 as 0.10000000000000001).  Depth is bounded by the
 * parser's JSON_PARSER_MAX_DEPTH. */
static void add_json_value(struct evbuffer *out, const json_t *v)
{
	char num[40];
	const char *k;
	json_t *m;
	size_t i;
	int first = 1;

	switch (json_typeof(v)) {
	case JSON_OBJECT:
		evbuffer_add(out, "{", 1);
		json_object_foreach((json_t *)v, k, m) {
			if (!first)
				evbuffer_add(out, ",", 1);
			first = 0;
			add_json_string(out, k);
			evbuffer_add(out, ":", 1);
			add_json_value(out, m);
		}
		evbuffer_add(out, "}", 1);
		break;
	case JSON_ARRAY:
		evbuffer_add(out, "[", 1);
		json_array_foreach(v, i, m) {
			if (i)
				evbuffer_add(out, ",", 1);
			add_json_value(out, m);
		}
		evbuffer_add(out, "]", 1);
		break;
	case JSON_STRING:
		add_json_string(out, json_string_value(v));
		break;
	case JSON_INTEGER:
		snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		evbuffer_add(out, num, strlen(num));
		break;
	case JSON_REAL:
		format_real(json_real_value(v), true, num, sizeof num);
		evbuffer_add(out, num, strlen(num));
		break;
	case JSON_TRUE:
		evbuffer_add(out, "true", 4);
		break;
	case JSON_FALSE:
		evbuffer_add(out, "false", 5);
		break;
	case JSON_NULL:
		evbuffer_add(out, "null", 4);
		break;
	}
}

int codec_value_text(const json_t *v, bool as_json, struct evbuffer *out,
		     const char **why)
{
	if (json_is_null(v)) {
		*why = "null";
		return -1;
	}
	if (as_json) {
		add_json_value(out, v);
		evbuffer_add(out, "", 1);
		return 0;
	}
	if (json_is_string(v)) {
		evbuffer_add(out, json_string_value(v), json_string_length(v));
	} else if (json_is_object(v) || json_is_array(v)) {
		*why = "objects and arrays are accepted only for json and jsonb columns";
		return -1;
	} else if (json_is_real(v)) {
		char num[40];
		format_real(json_real_value(v), false, num, sizeof num);
		evbuffer_add(out, num, strlen(num));
	} else {
		add_json_value(out, v); /* integers and booleans read the same as JSON */
	}
	evbuffer_add(out, "", 1);
	return 0;
}

/* JSON string escaping that survives any bytes: invalid UTF-8 becomes '?'. */
static void add_json_string(struct evbuffer *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	const unsigned char *end = p + strlen(s);
	evbuffer_add(out, "\"", 1);
	while (*p) {
		/* Plain ASCII goes out a run at a time. */
		const unsigned char *q = p;
		while (*q >= 0x20 && *q < 0x80 && *q != '"' && *q != '\\')
			q++;
		if (q > p) {
			evbuffer_add(out, p, (size_t)(q - p));
			p = q;
			continue;
		}
		unsigned char c = *p;
		if (c == '"' || c == '\\') {
			char esc[2] = {'\\', (char)c};
			evbuffer_add(out, esc, 2);
			p++;
		} else if (c < 0x20) {
			evbuffer_add_printf(out, "\\u%04x", c);
			p++;
		} else if (c < 0x80) {
			evbuffer_add(out, p, 1);
			p++;
		} else {
			int n = jsonread_utf8_len(p, end);
			if (n > 0) {
				evbuffer_add(out, p, (size_t)n);
				p += n;
			} else {
				evbuffer_add(out, "?", 1);
				p++;
			}
		}
	}
	evbuffer_add(out, "\"", 1);
}

void codec_render_head(struct evbuffer *out, const json_t *id)
{
	evbuffer_add(out, "{", 1);
	if (id != NULL) {
		evbuffer_add(out, "\"id\":", 5);
		add_json_value(out, id);
		evbuffer_add(out, ",", 1);
	}
}

static void add_head(struct evbuffer *out, const json_t *id, bool ok)
{
	codec_render_head(out, id);
	if (ok)
		evbuffer_add(out, "\"ok\":true", 9);
	else
		evbuffer_add(out, "\"ok\":false", 10);
}

void codec_render_row(struct evbuffer *out, const json_t *id, bool created,
		      const char *row, size_t row_len)
{
	add_head(out, id, true);
	if (created)
		evbuffer_add(out, ",\"created\":true,\"row\":", 22);
	else
		evbuffer_add(out, ",\"created\":false,\"row\":", 23);
	if (row == NULL) {
		evbuffer_add(out, "null", 4);
	} else {
		/* Raw CR/LF can only be insignificant whitespace in valid JSON
		 * (a json column keeps its input text); blank them. */
		const char *p = row, *end = row + row_len;
		while (p < end) {
			const char *q = p;
			while (q < end && *q != '\n' && *q != '\r')
				q++;
			evbuffer_add(out, p, (size_t)(q - p));
			if (q < end) {
				evbuffer_add(out, " ", 1);
				q++;
			}
			p = q;
		}
	}
	evbuffer_add(out, "}\n", 2);
}

void codec_render_error(struct evbuffer *out, const json_t *id,
			enum goc_err code, const char *message)
{
	add_head(out, id, false);
	evbuffer_add(out, ",\"error\":{\"code\":", 17);
	add_json_string(out, goc_err_name(code));
	evbuffer_add(out, ",\"message\":", 11);
	add_json_string(out, message ? message : "");
	evbuffer_add(out, "}}\n", 3);
}

void codec_render_ok(struct evbuffer *out, const json_t *id, const char *fields)
{
	add_head(out, id, true);
	if (fields && *fields) {
		evbuffer_add(out, ",", 1);
		evbuffer_add(out, fields, strlen(fields));
	}
	evbuffer_add(out, "}\n", 2);
}

int codec_parse_response(const char *line, size_t len, struct goc_response *resp)
{
	memset(resp, 0, sizeof *resp);
	resp->message = "";
	/* Responses may carry 64-bit and wider numbers in rows; jansson keeps
	 * 64-bit integers exactly, which is what clients compare on. */
	json_t *root = json_loadb(line, len, 0, NULL);
	if (root == NULL)
		return -1;
	resp->root = root;
	if (!json_is_object(root))
		return -1;
	resp->id = json_object_get(root, "id");
	json_t *ok = json_object_get(root, "ok");
	if (!json_is_boolean(ok))
		return -1;
	resp->ok = json_is_true(ok);
	resp->created = json_is_true(json_object_get(root, "created"));
	json_t *row = json_object_get(root, "row");
	resp->row = json_is_object(row) ? row : NULL;
	resp->code = GOC_OK;
	if (!resp->ok) {
		json_t *e = json_object_get(root, "error");
		const char *c = json_string_value(json_object_get(e, "code"));
		const char *m = json_string_value(json_object_get(e, "message"));
		if (c == NULL)
			return -1;
		resp->code = goc_err_from_name(c);
		if (resp->code == GOC_E__COUNT)
			resp->code = GOC_E_INTERNAL;
		resp->message = m ? m : "";
	}
	return 0;
}

struct scan_state {
	struct goc_response_scan *s;
	bool have_ok;
};

static int scan_member(void *arg, const char *name, size_t nlen, const char *v, size_t vlen)
{
	struct scan_state *st = arg;
	bool t = vlen == 4 && memcmp(v, "true", 4) == 0;
	bool f = vlen == 5 && memcmp(v, "false", 5) == 0;
	if (nlen == 2 && memcmp(name, "ok", 2) == 0) {
		if (!t && !f)
			return -1;
		st->s->ok = t;
		st->have_ok = true;
	} else if (nlen == 7 && memcmp(name, "created", 7) == 0) {
		st->s->created = t;
	} else if (nlen == 3 && memcmp(name, "row", 3) == 0 && v[0] == '{') {
		st->s->row = v;
		st->s->row_len = vlen;
	}
	return 0;
}

int codec_scan_response(const char *line, size_t len, struct goc_response_scan *s)
{
	struct scan_state st = { s, false };
	memset(s, 0, sizeof *s);
	if (jsonread_members(line, line + len, scan_member, &st) != 0 || !st.have_ok)
		return -1;
	return 0;
}

void codec_response_free(struct goc_response *resp)
{
	if (resp->root)
		json_decref(resp->root);
	memset(resp, 0, sizeof *resp);
}

void codec_render_request(struct evbuffer *out, enum goc_op op, const json_t *id,
			  const char *table, const json_t *key,
			  const json_t *defaults)
{
	evbuffer_add(out, "{\"op\":", 6);
	add_json_string(out, codec_op_name(op));
	if (id) {
		evbuffer_add(out, ",\"id\":", 6);
		add_json_value(out, id);
	}
	if (table) {
		evbuffer_add(out, ",\"table\":", 9);
		add_json_string(out, table);
	}
	if (key) {
		evbuffer_add(out, ",\"key\":", 7);
		add_json_value(out, key);
	}
	if (defaults) {
		evbuffer_add(out, ",\"defaults\":", 12);
		add_json_value(out, defaults);
	}
	evbuffer_add(out, "}\n", 2);
}

void codec_render_auth(struct evbuffer *out, const char *token)
{
	evbuffer_add(out, "{\"op\":\"auth\",\"token\":", 21);
	add_json_string(out, token);
	evbuffer_add(out, "}\n", 2);
}
