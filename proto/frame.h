/*
 * frame.h - newline framing of the gocd wire protocol, with a hard line limit.
 *
 * Owns: finding one request/response line in an input buffer.
 * Must never: buffer more than max_line bytes waiting for a newline (the
 * caller learns FRAME_TOO_LARGE instead), or know what a line means.
 */
#ifndef GOC_PROTO_FRAME_H
#define GOC_PROTO_FRAME_H

#include <stddef.h>

struct evbuffer;

enum frame_rc {
	FRAME_LINE,      /* line and len describe one line, without its LF (and CR) */
	FRAME_NEED_MORE, /* no complete line yet and the buffer is under the limit */
	FRAME_TOO_LARGE, /* no LF within max_line bytes: the stream cannot be resynced */
};

/*
 * Look for the next line in `in`.  On FRAME_LINE, *line points into the
 * buffer (made contiguous) and stays valid until the caller calls
 * evbuffer_drain(in, *consumed); *len excludes the LF and a trailing CR.
 * A line of exactly max_line bytes (not counting LF/CR) is accepted.
 *
 * searched (may be NULL) carries, from one call to the next, how many
 * bytes at the front of `in` are known to hold no LF: the search starts
 * after them, so a line that arrives in many small reads is searched once,
 * not once per read (which cost time quadratic in its length).  Set to the
 * buffer's length on FRAME_NEED_MORE, to 0 otherwise; the caller only
 * appends to `in` in between, or drains *consumed after a line.
 */
enum frame_rc frame_next(struct evbuffer *in, size_t max_line, size_t *searched,
			 const char **line, size_t *len, size_t *consumed);

/*
 * The same, over bytes in plain memory (a read buffer): on FRAME_LINE,
 * *line points into buf and *consumed bytes of buf are used up.  The scan
 * for LF stops at max_line + 2 bytes, so a long unterminated line costs a
 * bounded search.
 */
enum frame_rc frame_next_mem(const char *buf, size_t avail, size_t max_line,
			     const char **line, size_t *len, size_t *consumed);

/* True when the line is empty or only spaces, tabs and CRs: such lines are ignored. */
int frame_is_blank(const char *line, size_t len);

#endif
