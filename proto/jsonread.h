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

#endif
