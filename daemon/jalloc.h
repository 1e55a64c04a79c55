/*
 * jalloc.h - the allocator gocd gives jansson.
 *
 * Owns: recycling the small blocks every request's JSON tree is made of.
 * Must never: be installed after any jansson value exists (a block freed
 * here must have been allocated here), or keep more than a bounded number
 * of free blocks.
 */
#ifndef GOCD_JALLOC_H
#define GOCD_JALLOC_H

/* Install (first thing in main); no-op under AddressSanitizer. */
void jalloc_init(void);
/* Return the kept free blocks to malloc (at exit, for leak checkers). */
void jalloc_release(void);

#endif
