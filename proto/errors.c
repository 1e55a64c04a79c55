/*
 * errors.c - wire names of the error codes.
 *
 * Owns: the name table.  Must never: change a published name.
 */
#include <string.h>

#include "errors.h"

static const char *const names[GOC_E__COUNT] = {
	[GOC_OK] = "ok",
	[GOC_E_BAD_JSON] = "bad_json",
	[GOC_E_BAD_REQUEST] = "bad_request",
	[GOC_E_UNKNOWN_OP] = "unknown_op",
	[GOC_E_UNKNOWN_TABLE] = "unknown_table",
	[GOC_E_UNKNOWN_COLUMN] = "unknown_column",
	[GOC_E_NULL_KEY] = "null_key",
	[GOC_E_INVALID_VALUE] = "invalid_value",
	[GOC_E_CONSTRAINT_VIOLATION] = "constraint_violation",
	[GOC_E_TOO_LARGE] = "too_large",
	[GOC_E_OVERLOADED] = "overloaded",
	[GOC_E_UNAVAILABLE] = "unavailable",
	[GOC_E_TIMEOUT] = "timeout",
	[GOC_E_INTERNAL] = "internal",
	[GOC_E_UNAUTHORIZED] = "unauthorized",
};

const char *goc_err_name(enum goc_err code)
{
	if ((unsigned)code >= GOC_E__COUNT)
		return "internal";
	return names[code];
}

enum goc_err goc_err_from_name(const char *name)
{
	for (int i = 0; i < GOC_E__COUNT; i++)
		if (strcmp(names[i], name) == 0)
			return (enum goc_err)i;
	return GOC_E__COUNT;
}
