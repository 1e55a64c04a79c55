/*
 * bench_verify.c - per-key correctness bookkeeping for goc-bench --verify.
 *
 * Owns: one entry per key number (a flat array: key numbers are dense) and
 * the violation report.  Must never: touch the network or PostgreSQL, or
 * allocate on the record path except the first time a non-integer id is seen.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "bench_verify.h"
#include "jsonread.h"

enum {
	VE_SEEN = 1,        /* some response carried a row */
	VE_GOC = 2,         /* a get_or_create was answered (or may have run) */
	VE_PREEXIST = 4,    /* existed before the run */
	VE_UNCERTAIN = 8,   /* a get_or_create ended with an unknown outcome */
	VE_ID_TEXT = 16,    /* id is in id_s, not id_i */
};

struct ventry {
	uint32_t created;
	uint32_t mismatches;
	uint32_t flags;
	int64_t id_i;
	char *id_s;  /* owned: first id as JSON text when not an integer */
	char *other; /* owned: first differing id as JSON text */
};

struct verify {
	struct ventry *e;
	uint64_t cap;
	const char *id_col;
	bool preexist_known;
	uint64_t no_id;
};

static int verify_grow(struct verify *v, uint64_t key)
{
	if (key < v->cap)
		return 0;
	uint64_t ncap = v->cap ? v->cap : 1024;
	while (ncap <= key)
		ncap *= 2;
	struct ventry *ne = realloc(v->e, ncap * sizeof *ne);
	if (ne == NULL)
		return -1;
	memset(ne + v->cap, 0, (ncap - v->cap) * sizeof *ne);
	v->e = ne;
	v->cap = ncap;
	return 0;
}

struct verify *verify_new(uint64_t space, const char *id_col)
{
	struct verify *v = calloc(1, sizeof *v);
	if (v == NULL)
		return NULL;
	v->id_col = id_col;
	if (space && verify_grow(v, space - 1)) {
		free(v);
		return NULL;
	}
	return v;
}

void verify_free(struct verify *v)
{
	if (v == NULL)
		return;
	for (uint64_t i = 0; i < v->cap; i++) {
		free(v->e[i].id_s);
		free(v->e[i].other);
	}
	free(v->e);
	free(v);
}

void verify_set_preexist_known(struct verify *v, bool known)
{
	v->preexist_known = known;
}

void verify_mark_preexisting(struct verify *v, uint64_t key)
{
	if (verify_grow(v, key) == 0)
		v->e[key].flags |= VE_PREEXIST;
}

uint64_t verify_space(const struct verify *v)
{
	return v->cap;
}

bool verify_touched(const struct verify *v, uint64_t key)
{
	return key < v->cap && (v->e[key].flags & VE_GOC);
}

bool verify_has_row(const struct verify *v, uint64_t key)
{
	return key < v->cap && (v->e[key].flags & VE_SEEN);
}

/* Outcome unknown: the row may or may not have been written. */
static bool verify_uncertain_code(int code)
{
	return code == GOC_E_TIMEOUT || code == GOC_E_INTERNAL ||
	       code == BENCH_E_CONNECTION || code == BENCH_E_PROTOCOL;
}

static void verify_note_other(struct ventry *e, const char *id, size_t len)
{
	e->mismatches++;
	if (e->other == NULL)
		e->other = strndup(id, len);
}

/* The id column's raw JSON text in a row, found without building a tree. */
struct id_find {
	const char *name;
	size_t name_len;
	const char *val;
	size_t len;
};

static int find_id(void *arg, const char *name, size_t nlen, const char *v, size_t vlen)
{
	struct id_find *f = arg;
	if (nlen == f->name_len && memcmp(name, f->name, nlen) == 0) {
		f->val = v;
		f->len = vlen;
	}
	return 0;
}

/* A JSON integer that fits int64 (what bigserial ids are); else false. */
static bool id_integer(const char *p, size_t n, int64_t *out)
{
	size_t i = p[0] == '-';
	if (n == i || n - i > 19)
		return false;
	uint64_t v = 0;
	for (; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	if (v > (uint64_t)INT64_MAX)
		return false; /* INT64_MIN itself is taken as text: no bigserial is that */
	*out = p[0] == '-' ? -(int64_t)v : (int64_t)v;
	return true;
}

void verify_record(struct verify *v, uint64_t key, enum goc_op op,
		   const struct bench_result *res)
{
	if (verify_grow(v, key))
		return;
	struct ventry *e = &v->e[key];
	if (res->code != GOC_OK) {
		if (op == GOC_OP_GET_OR_CREATE && verify_uncertain_code(res->code))
			e->flags |= VE_UNCERTAIN | VE_GOC;
		return;
	}
	if (op == GOC_OP_GET_OR_CREATE)
		e->flags |= VE_GOC;
	if (res->created)
		e->created++;
	if (res->row_text == NULL)
		return;
	struct id_find f = { v->id_col, strlen(v->id_col), NULL, 0 };
	if (jsonread_members(res->row_text, res->row_text + res->row_len, find_id, &f) != 0 ||
	    f.val == NULL) {
		v->no_id++;
		return;
	}
	int64_t id_i;
	bool is_int = id_integer(f.val, f.len, &id_i);
	if (!(e->flags & VE_SEEN)) {
		e->flags |= VE_SEEN;
		if (is_int) {
			e->id_i = id_i;
		} else {
			e->flags |= VE_ID_TEXT;
			e->id_s = strndup(f.val, f.len);
		}
		return;
	}
	if (!(e->flags & VE_ID_TEXT)) {
		if (!is_int || id_i != e->id_i)
			verify_note_other(e, f.val, f.len);
	} else if (e->id_s == NULL || strlen(e->id_s) != f.len || memcmp(e->id_s, f.val, f.len) != 0) {
		verify_note_other(e, f.val, f.len);
	}
}

static void verify_say(FILE *out, unsigned *lines, unsigned max_lines,
		       const char *key, const char *what, const struct ventry *e)
{
	if (*lines >= max_lines) {
		(*lines)++;
		return;
	}
	(*lines)++;
	char first[64];
	if (e->flags & VE_ID_TEXT)
		snprintf(first, sizeof first, "%s", e->id_s ? e->id_s : "?");
	else
		snprintf(first, sizeof first, "%" PRId64, e->id_i);
	fprintf(out, "verify: key %s: %s (first row id %s", key, what,
		(e->flags & VE_SEEN) ? first : "none");
	if (e->other)
		fprintf(out, ", also row id %s", e->other);
	fprintf(out, ")\n");
}

uint64_t verify_finish(struct verify *v, const struct bench *b, FILE *out,
		       unsigned max_lines, struct verify_summary *sum)
{
	memset(sum, 0, sizeof *sum);
	sum->no_id = v->no_id;
	sum->exactly_once = v->preexist_known;
	unsigned lines = 0;
	char key[BENCH_KEY_MAX], what[512];
	for (uint64_t k = 0; k < v->cap; k++) {
		const struct ventry *e = &v->e[k];
		if (e->flags & VE_SEEN)
			sum->keys++;
		if (e->flags & VE_UNCERTAIN)
			sum->uncertain++;
		/* one line per key, naming every problem it has */
		size_t n = 0;
		what[0] = '\0';
		if (e->created > 1) {
			sum->multi_created++;
			n += (size_t)snprintf(what + n, sizeof what - n, "%screated:true in %u responses",
					      n ? "; " : "", e->created);
		}
		if (e->mismatches) {
			sum->id_mismatch++;
			n += (size_t)snprintf(what + n, sizeof what - n,
					      "%sanother row id in %u response%s",
					      n ? "; " : "", e->mismatches, e->mismatches == 1 ? "" : "s");
		}
		if ((e->flags & VE_PREEXIST) && e->created > 0) {
			sum->created_existing++;
			n += (size_t)snprintf(what + n, sizeof what - n,
					      "%sexisted before the run, yet was answered created:true",
					      n ? "; " : "");
		}
		if (v->preexist_known && (e->flags & VE_GOC) &&
		    !(e->flags & (VE_PREEXIST | VE_UNCERTAIN)) && e->created == 0) {
			sum->never_created++;
			n += (size_t)snprintf(what + n, sizeof what - n,
					      "%sdid not exist before the run, yet no response said created:true",
					      n ? "; " : "");
		}
		if (n) {
			sum->violations++;
			bench_key_text(b, k, key);
			verify_say(out, &lines, max_lines, key, what, e);
		}
	}
	if (v->no_id) {
		fprintf(out, "verify: %" PRIu64 " rows had no column \"%s\" (see --id-column)\n",
			v->no_id, v->id_col);
		sum->violations++;
	}
	if (lines > max_lines)
		fprintf(out, "verify: ... and %u more keys with violations\n", lines - max_lines);
	return sum->violations;
}
