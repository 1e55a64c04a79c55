/*
 * jsonread.h - a fast, strict JSON reader for request lines.
 *
 * Owns: turning request bytes into jansson values, with the same rules as
 * json_loadb(JSON_REJECT_DUPLICATES | JSON_DECODE_ANY): RFC 8259 syntax,
 * strict UTF-8, no \u0000, no duplicate member names, 64-bit integers,
 * finite doubles, nesting at most JSON_PARSER_MAX_DEPTH.
 * Must never: read past len, recurse deeper than the limit, or accept
 * anything json_loadb would reject.  It exists because json_loadb's
 * character-at-a-time lexer was 45% of gocd's CPU per request (callgrind).
 */
#ifndef GOC_PROTO_JSONREAD_H
#define GOC_PROTO_JSONREAD_H

#include <stddef.h>

#include <jansson.h>

struct jsonread_error {
	size_t position; /* byte offset of the problem */
	char text[96];
};

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0.  Never reads at or past end. */
int jsonread_utf8_len(const unsigned char *p, const unsigned char *end);

/* Returns a new reference, or NULL with *err filled. */
json_t *jsonread(const char *p, size_t len, struct jsonread_error *err);

/*
 * Reading without building a tree, for clients that look at two or three
 * members of a line (goc-bench; every allocation there is load the box
 * under test does not get).  These check structure, escapes and number
 * syntax, not UTF-8 or duplicate names: use jsonread where that matters.
 */
/* Just past the one value starting at p (leading whitespace allowed), or NULL. */
const char *jsonread_skip(const char *p, const char *end);
/*
 * Call fn for each member of the object that is all of [p, end) (outer
 * whitespace allowed).  name is the raw text between the quotes (escapes
 * not decoded), value the member's raw text.  Returns 0, or -1 when the
 * text is not one object or fn returned non-zero.
 */
typedef int jsonread_member_fn(void *arg, const char *name, size_t name_len,
			       const char *value, size_t value_len);
int jsonread_members(const char *p, const char *end, jsonread_member_fn *fn, void *arg);

#endif
