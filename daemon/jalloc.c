/*
 * jalloc.c - the allocator gocd gives jansson: per-size free lists.
 *
 * Owns: the free lists.  Must never: hand a block to a size class it was
 * not made for, keep more than JA_KEEP free blocks per class, or be used
 * from a second thread (gocd has one).
 *
 * Why: a request's tree is about twenty small blocks, allocated when its
 * line is read and freed when it is answered, with hundreds of requests
 * in flight.  That overflows glibc's per-size cache (7 blocks), and
 * callgrind put malloc and free at 37% of gocd's instructions at 64
 * clients, consolidation passes included.  Here a block goes back on its
 * class's list and the next request takes it: a few instructions.
 */
#include <stddef.h>
#include <stdlib.h>

#include <jansson.h>

#include "jalloc.h"

#define JA_STEP 16                        /* class c holds blocks of c * 16 bytes */
#define JA_CLASSES 16                     /* up to 256 bytes; larger go to malloc */
#define JA_KEEP 1024                      /* free blocks kept per class: < 5 MB in all */
#define JA_HDR 16                         /* keeps malloc's 16-byte alignment */

struct ja_block {
	struct ja_block *next;
};

static struct {
	struct ja_block *head;
	unsigned n;
} cls[JA_CLASSES + 1];

#if defined(__SANITIZE_ADDRESS__)
#define JA_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define JA_SANITIZED 1
#endif
#endif

#ifndef JA_SANITIZED
static void *ja_malloc(size_t size)
{
	size_t c = size ? (size + JA_STEP - 1) / JA_STEP : 1;
	if (c <= JA_CLASSES && cls[c].head) {
		struct ja_block *b = cls[c].head;
		cls[c].head = b->next;
		cls[c].n--;
		return b;
	}
	size_t bytes = c <= JA_CLASSES ? c * JA_STEP : size;
	size_t *h = malloc(JA_HDR + bytes);
	if (h == NULL)
		return NULL;
	h[0] = c <= JA_CLASSES ? c : 0;
	return (char *)h + JA_HDR;
}

static void ja_free(void *p)
{
	if (p == NULL)
		return;
	size_t *h = (size_t *)((char *)p - JA_HDR);
	size_t c = h[0];
	if (c == 0 || cls[c].n >= JA_KEEP) {
		free(h);
		return;
	}
	struct ja_block *b = p;
	b->next = cls[c].head;
	cls[c].head = b;
	cls[c].n++;
}
#endif

void jalloc_init(void)
{
#ifndef JA_SANITIZED
	/* Recycled blocks would hide use-after-free from the sanitizer. */
	json_set_alloc_funcs(ja_malloc, ja_free);
#endif
}

void jalloc_release(void)
{
	for (int c = 1; c <= JA_CLASSES; c++) {
		while (cls[c].head) {
			struct ja_block *b = cls[c].head;
			cls[c].head = b->next;
			free((char *)b - JA_HDR);
		}
		cls[c].n = 0;
	}
}
