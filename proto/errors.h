/*
 * errors.h - the stable list of error codes a gocd response can carry.
 *
 * Owns: the enum and its snake_case wire names.  Clients match on these
 * names, so a code is never renamed or reused; new codes go at the end.
 * Must never: include daemon or client headers.
 */
#ifndef GOC_PROTO_ERRORS_H
#define GOC_PROTO_ERRORS_H

enum goc_err {
	GOC_OK = 0,
	GOC_E_BAD_JSON,             /* line is not a JSON object (syntax, UTF-8, duplicate keys, NUL) */
	GOC_E_BAD_REQUEST,          /* JSON is fine but a field is missing, mistyped or unknown */
	GOC_E_UNKNOWN_OP,           /* "op" names no operation */
	GOC_E_UNKNOWN_TABLE,        /* "table" is not served by this gocd */
	GOC_E_UNKNOWN_COLUMN,       /* a key or defaults column does not exist in the table */
	GOC_E_NULL_KEY,             /* a key value is null and the unique index treats NULLs as distinct */
	GOC_E_INVALID_VALUE,        /* PostgreSQL rejected a value for its column type */
	GOC_E_CONSTRAINT_VIOLATION, /* NOT NULL, CHECK, foreign key or another unique index failed */
	GOC_E_TOO_LARGE,            /* request line longer than max_line; the connection is closed */
	GOC_E_OVERLOADED,           /* a limit (clients, waiters, queue) is full; try again later */
	GOC_E_UNAVAILABLE,          /* PostgreSQL cannot be reached or the table is not ready */
	GOC_E_TIMEOUT,              /* no answer within request_timeout, or a commit in doubt not confirmed; outcome unknown, retry is safe */
	GOC_E_INTERNAL,             /* anything else; the message carries PostgreSQL's SQLSTATE */
	GOC_E_UNAUTHORIZED,         /* reserved for auth_token */
	GOC_E__COUNT
};

/* Wire name of a code ("bad_json", ...); "ok" for GOC_OK, "internal" if out of range. */
const char *goc_err_name(enum goc_err code);

/* Reverse lookup; returns GOC_E__COUNT when the name is unknown. */
enum goc_err goc_err_from_name(const char *name);

#endif
