/*
 * goc.h - the get-or-create flow of one request.
 *
 * Owns: validation of a request against its table, the parameters and the
 * canonical lock key, and the statement sequence SELECT -> INSERT ... ON
 * CONFLICT DO NOTHING -> SELECT, with its bounded retries and error
 * mapping.  Must never: write to sockets, or decide anything from memory
 * alone that the unique index should decide.
 */
#ifndef GOCD_GOC_H
#define GOCD_GOC_H

struct req;

/* Handler for get_or_create and get. */
void goc_start(struct req *r);

/* r's deadline passed and it is about to be answered 'timeout'. */
void goc_on_timeout(struct req *r);

/* Free what goc_start allocated for r (called when r is freed). */
void goc_release(struct req *r);

#endif
