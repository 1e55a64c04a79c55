/*
 * hist.h - log-bucketed latency histogram for goc-bench.
 *
 * Owns: recording durations (nanoseconds) into fixed buckets and reading
 * percentiles back with HdrHistogram-like precision (better than 0.1%
 * relative error).  Must never: keep individual samples, allocate on the
 * record path, or know what is being measured.
 */
#ifndef GOC_CLIENT_HIST_H
#define GOC_CLIENT_HIST_H

#include <stdint.h>

/*
 * Buckets: values below 2^(HIST_SUB_BITS+1) are exact; above, each power of
 * two is split into 2^HIST_SUB_BITS linear sub-buckets, so a bucket is at
 * most 1/1024 of its value wide.  Values at or above HIST_MAX_NS are counted
 * in the last bucket (and max stays exact).
 */
#define HIST_SUB_BITS 10
#define HIST_MAX_BITS 42 /* 2^42 ns ~ 73 minutes */
#define HIST_BUCKETS (((HIST_MAX_BITS - HIST_SUB_BITS) + 1) << HIST_SUB_BITS)

struct hist {
	uint64_t count;
	uint64_t min, max; /* exact; min is UINT64_MAX when empty */
	double sum;        /* for the mean */
	uint64_t b[HIST_BUCKETS];
};

void hist_reset(struct hist *h);
void hist_record(struct hist *h, uint64_t ns);
/* Add every sample of src into dst. */
void hist_merge(struct hist *dst, const struct hist *src);
/*
 * Value at percentile p (0..100): the highest value equivalent to the
 * bucket holding the sample of that rank, clamped to [min, max].
 * 0 when empty.
 */
uint64_t hist_percentile(const struct hist *h, double p);
double hist_mean(const struct hist *h);

#endif
