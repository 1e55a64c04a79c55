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

static void verify_note_other(struct ventry *e, const json_t *id)
{
	e->mismatches++;
	if (e->other == NULL)
		e->other = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
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
	json_t *parsed = NULL;
	const json_t *row = res->row;
	if (row == NULL && res->row_text) {
		parsed = json_loadb(res->row_text, res->row_len, 0, NULL);
		row = parsed;
	}
	if (res->created)
		e->created++;
	if (row == NULL)
		return;
	const json_t *id = json_object_get(row, v->id_col);
	if (id == NULL) {
		v->no_id++;
		goto out;
	}
	if (!(e->flags & VE_SEEN)) {
		e->flags |= VE_SEEN;
		if (json_is_integer(id)) {
			e->id_i = json_integer_value(id);
		} else {
			e->flags |= VE_ID_TEXT;
			e->id_s = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
		}
		goto out;
	}
	if (!(e->flags & VE_ID_TEXT)) {
		if (!json_is_integer(id) || json_integer_value(id) != e->id_i)
			verify_note_other(e, id);
	} else {
		char *t = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
		if (t == NULL || e->id_s == NULL || strcmp(t, e->id_s) != 0)
			verify_note_other(e, id);
		free(t);
	}
out:
	if (parsed)
		json_decref(parsed);
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
