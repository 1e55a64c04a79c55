/*
 * hist.c - log-bucketed latency histogram.
 *
 * Owns: bucket arithmetic and percentile lookup.  Must never: allocate,
 * print, or sort samples; recording is O(1) and branch-light because it is
 * on goc-bench's hot path.
 */
#include <string.h>

#include "hist.h"

#define SUB_COUNT ((uint64_t)1 << HIST_SUB_BITS)

static unsigned hist_index(uint64_t v)
{
	if (v >= ((uint64_t)1 << HIST_MAX_BITS))
		return HIST_BUCKETS - 1;
	if (v < 2 * SUB_COUNT)
		return (unsigned)v;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v);
	unsigned shift = msb - HIST_SUB_BITS;
	/* v >> shift lies in [SUB_COUNT, 2*SUB_COUNT). */
	return (unsigned)(shift * SUB_COUNT + (v >> shift));
}

/* Highest value that lands in bucket i. */
static uint64_t hist_bucket_top(unsigned i)
{
	if (i < 2 * SUB_COUNT)
		return i;
	unsigned shift = (unsigned)(i >> HIST_SUB_BITS) - 1;
	uint64_t top = i - (uint64_t)shift * SUB_COUNT;
	return ((top + 1) << shift) - 1;
}

void hist_reset(struct hist *h)
{
	memset(h, 0, sizeof *h);
	h->min = UINT64_MAX;
}

void hist_record(struct hist *h, uint64_t ns)
{
	h->b[hist_index(ns)]++;
	h->count++;
	h->sum += (double)ns;
	if (ns < h->min)
		h->min = ns;
	if (ns > h->max)
		h->max = ns;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	if (src->count == 0)
		return;
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		dst->b[i] += src->b[i];
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
	if (h->count == 0)
		return 0;
	if (p <= 0)
		return h->min;
	if (p >= 100)
		return h->max;
	/* Rank of the sample at percentile p, 1-based, rounded up. */
	double want = p / 100.0 * (double)h->count;
	uint64_t rank = (uint64_t)want;
	if ((double)rank < want)
		rank++;
	if (rank == 0)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank) {
			uint64_t v = hist_bucket_top(i);
			if (v > h->max)
				v = h->max;
			if (v < h->min)
				v = h->min;
			return v;
		}
	}
	return h->max;
}

double hist_mean(const struct hist *h)
{
	return h->count ? h->sum / (double)h->count : 0.0;
}
