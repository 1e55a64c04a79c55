/*
 * bench_keys.c - key distributions for goc-bench.
 *
 * Owns: the PRNG and the samplers.  Must never: allocate or print; keys are
 * drawn on the hot path.  Zipf uses rejection-inversion sampling so that a
 * million-key space costs no table and O(1) per draw.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench_keys.h"

static uint64_t keys_rand64(struct keys *k)
{
	/* xorshift64*: fast, good enough for load generation. */
	uint64_t x = k->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	k->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

double keys_rand01(struct keys *k)
{
	return (double)(keys_rand64(k) >> 11) * (1.0 / 9007199254740992.0);
}

void keys_seed(struct keys *k, uint64_t seed)
{
	/* splitmix64 once so that small seeds still give a busy state */
	uint64_t z = seed + 0x9E3779B97F4A7C15ULL;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	z ^= z >> 31;
	k->rng = z ? z : 1;
}

/* log1p(x)/x, accurate near 0 */
static double zipf_helper1(double x)
{
	return fabs(x) > 1e-8 ? log1p(x) / x : 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
}

/* expm1(x)/x, accurate near 0 */
static double zipf_helper2(double x)
{
	return fabs(x) > 1e-8 ? expm1(x) / x : 1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x));
}

static double zipf_h(const struct keys *k, double x)
{
	return exp(-k->s * log(x));
}

static double zipf_hint(const struct keys *k, double x)
{
	double lx = log(x);
	return zipf_helper2((1.0 - k->s) * lx) * lx;
}

static double zipf_hint_inv(const struct keys *k, double x)
{
	double t = x * (1.0 - k->s);
	if (t < -1.0)
		t = -1.0;
	return exp(zipf_helper1(t) * x);
}

static void zipf_init(struct keys *k)
{
	k->z_hx1 = zipf_hint(k, 1.5) - 1.0;
	k->z_hn = zipf_hint(k, (double)k->n + 0.5);
	k->z_s = 2.0 - zipf_hint_inv(k, zipf_hint(k, 2.5) - zipf_h(k, 2.0));
}

/* Rank in [1, n]; rank 1 is the most popular. */
static uint64_t zipf_next(struct keys *k)
{
	for (;;) {
		double u = k->z_hn + keys_rand01(k) * (k->z_hx1 - k->z_hn);
		double x = zipf_hint_inv(k, u);
		double kx = floor(x + 0.5);
		if (kx < 1)
			kx = 1;
		else if (kx > (double)k->n)
			kx = (double)k->n;
		if (kx - x <= k->z_s || u >= zipf_hint(k, kx + 0.5) - zipf_h(k, kx))
			return (uint64_t)kx;
	}
}

static int keys_parse_u64(const char *s, char **end, uint64_t *out)
{
	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, end, 10);
	if (errno || v == 0)
		return -1;
	*out = v;
	return 0;
}

int keys_parse(struct keys *k, const char *spec, const char **why)
{
	memset(k, 0, sizeof *k);
	k->rng = 1;
	char *end = NULL;
	if (strcmp(spec, "fresh") == 0) {
		k->kind = KEYS_FRESH;
		return 0;
	}
	if (strncmp(spec, "uniform:", 8) == 0) {
		k->kind = KEYS_UNIFORM;
		if (keys_parse_u64(spec + 8, &end, &k->n) || *end) {
			*why = "uniform:N needs a positive integer N";
			return -1;
		}
		return 0;
	}
	if (strncmp(spec, "hot:", 4) == 0) {
		k->kind = KEYS_HOT;
		if (keys_parse_u64(spec + 4, &end, &k->n) || *end) {
			*why = "hot:K needs a positive integer K";
			return -1;
		}
		return 0;
	}
	if (strncmp(spec, "zipf:", 5) == 0) {
		k->kind = KEYS_ZIPF;
		if (keys_parse_u64(spec + 5, &end, &k->n) || *end != ':') {
			*why = "zipf:N:S needs a positive integer N";
			return -1;
		}
		const char *sp = end + 1;
		errno = 0;
		k->s = strtod(sp, &end);
		if (errno || end == sp || *end || !(k->s > 0) || k->s > 10) {
			*why = "zipf:N:S needs an exponent S in (0, 10]";
			return -1;
		}
		if (fabs(k->s - 1.0) < 1e-9)
			k->s = 1.0 + 1e-9; /* the formulas have a removable singularity at 1 */
		zipf_init(k);
		return 0;
	}
	*why = "expected uniform:N, zipf:N:S, hot:K or fresh";
	return -1;
}

uint64_t keys_space(const struct keys *k)
{
	return k->kind == KEYS_FRESH ? 0 : k->n;
}

uint64_t keys_next(struct keys *k)
{
	switch (k->kind) {
	case KEYS_UNIFORM:
	case KEYS_HOT:
		/* multiply-shift: unbiased enough for n << 2^64 and no division */
		return (uint64_t)(((unsigned __int128)keys_rand64(k) * k->n) >> 64);
	case KEYS_ZIPF:
		return zipf_next(k) - 1;
	case KEYS_FRESH:
		return k->next_fresh++;
	}
	return 0;
}

size_t keys_text(const char *prefix, size_t prefix_len, uint64_t n, char *buf,
		 size_t cap)
{
	char digits[24];
	size_t nd = 0;
	do {
		digits[nd++] = (char)('0' + n % 10);
		n /= 10;
	} while (n);
	if (prefix_len + nd + 1 > cap)
		return 0;
	memcpy(buf, prefix, prefix_len);
	for (size_t i = 0; i < nd; i++)
		buf[prefix_len + i] = digits[nd - 1 - i];
	buf[prefix_len + nd] = '\0';
	return prefix_len + nd;
}
