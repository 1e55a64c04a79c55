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

enum frame_rc frame_next(struct evbuffer *in, size_t max_line, size_t *searched,
			 const char **line, size_t *len, size_t *consumed)
{
	size_t avail = evbuffer_get_length(in);
	size_t from = searched && *searched <= avail ? *searched : 0;
	struct evbuffer_ptr start, p;
	if (from == avail) {
		p.pos = -1; /* nothing new (or nothing at all) since the last search */
	} else if (from > 0 && evbuffer_ptr_set(in, &start, from, EVBUFFER_PTR_SET) == 0) {
		p = evbuffer_search(in, "\n", 1, &start);
	} else {
		p = evbuffer_search(in, "\n", 1, NULL);
	}
	/* The buffer never holds much more than a legal line (+CR +LF) without
	 * an LF: past that the caller learns FRAME_TOO_LARGE and stops. */
	if (p.pos < 0) {
		if (searched)
			*searched = avail;
		if (avail == 0)
			return FRAME_NEED_MORE;
		return avail > max_line + 1 ? FRAME_TOO_LARGE : FRAME_NEED_MORE;
	}
	if (searched)
		*searched = 0;
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
	/* JSON's whitespace (an LF cannot be inside a line): " \r " was
	 * answered bad_json while " \r" (its CR cut as the line end's) was
	 * blank. */
	for (size_t i = 0; i < len; i++)
		if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r')
			return 0;
	return 1;
}
