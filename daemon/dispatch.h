/*
 * dispatch.h - from a request line to the handler of its op.
 *
 * Owns: the op -> handler table.  Must never: keep state between lines.
 */
#ifndef GOCD_DISPATCH_H
#define GOCD_DISPATCH_H

#include <stddef.h>

struct conn;

/* Parse one line and start (or answer) the request it holds. */
void dispatch_line(struct conn *c, const char *line, size_t len);

#endif
