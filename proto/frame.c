/*
 * frame.c - newline framing with a line limit.
 *
 * Owns: line boundaries.  Must never: parse JSON or allocate.
 */
#include <string.h>

#include <event2/buffer.h>

#include "frame.h"

/* buf[n] is the LF: the line is what precedes it, less one CR. */
static enum frame_rc cut_line(const char *buf, size_t n, size_t max_line,
			      const char **line, size_t *len, size_t *consumed)
{
	*consumed = n + 1;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	if (n > max_line)
		return FRAME_TOO_LARGE;
	*line = buf;
	*len = n;
	return FRAME_LINE;
}

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
	return cut_line((const char *)base, n, max_line, line, len, consumed);
}

enum frame_rc frame_next_mem(const char *buf, size_t avail, size_t max_line,
			     const char **line, size_t *len, size_t *consumed)
{
	size_t window = avail < max_line + 2 ? avail : max_line + 2;
	const char *nl = memchr(buf, '\n', window);
	if (nl == NULL)
		return avail > max_line + 1 ? FRAME_TOO_LARGE : FRAME_NEED_MORE;
	return cut_line(buf, (size_t)(nl - buf), max_line, line, len, consumed);
}

int frame_is_blank(const char *line, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (line[i] != ' ' && line[i] != '\t')
			return 0;
	return 1;
}
