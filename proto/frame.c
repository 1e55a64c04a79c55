/*
 * frame.c - newline framing with a line limit.
 *
 * Owns: line boundaries.  Must never: parse JSON or allocate.
 */
#include <event2/buffer.h>

#include "frame.h"

enum frame_rc frame_next(struct evbuffer *in, size_t max_line,
			 const char **line, size_t *len, size_t *consumed)
{
	size_t avail = evbuffer_get_length(in);
	if (avail == 0)
		return FRAME_NEED_MORE;

	/* Search only as far as a legal line can reach (+CR +LF), so a client
	 * streaming bytes without a newline costs us a bounded scan. */
	struct evbuffer_ptr p = evbuffer_search(in, "\n", 1, NULL);
	if (p.pos < 0) {
		return avail > max_line + 1 ? FRAME_TOO_LARGE : FRAME_NEED_MORE;
	}
	size_t n = (size_t)p.pos;
	unsigned char *base = evbuffer_pullup(in, (ev_ssize_t)n + 1);
	if (base == NULL)
		return FRAME_NEED_MORE;
	*consumed = n + 1;
	if (n > 0 && base[n - 1] == '\r')
		n--;
	if (n > max_line)
		return FRAME_TOO_LARGE;
	*line = (const char *)base;
	*len = n;
	return FRAME_LINE;
}

int frame_is_blank(const char *line, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (line[i] != ' ' && line[i] != '\t')
			return 0;
	return 1;
}
