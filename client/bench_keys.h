/*
 * bench_keys.h - goc-bench key distributions (--keys).
 *
 * Owns: parsing "uniform:N", "zipf:N:S", "hot:K" and "fresh", and drawing
 * the next key number from them with a seeded PRNG.  A key is a number;
 * its text is the run's key prefix followed by the number in decimal.
 * Must never: allocate per draw, or know about targets or the wire.
 */
#ifndef GOC_CLIENT_BENCH_KEYS_H
#define GOC_CLIENT_BENCH_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum keys_kind { KEYS_UNIFORM, KEYS_ZIPF, KEYS_HOT, KEYS_FRESH };

struct keys {
	enum keys_kind kind;
	uint64_t n;        /* key space size (0 for fresh) */
	double s;          /* zipf exponent */
	uint64_t rng;      /* xorshift64* state, never 0 */
	uint64_t next_fresh;
	/* Rejection-inversion zipf constants (Hoermann & Derflinger 1996). */
	double z_hx1, z_hn, z_s;
};

/* Parse spec into k.  Returns 0, or -1 with *why set to a static message. */
int keys_parse(struct keys *k, const char *spec, const char **why)
	__attribute__((warn_unused_result));
void keys_seed(struct keys *k, uint64_t seed);
uint64_t keys_next(struct keys *k);
/* Uniform double in [0, 1). */
double keys_rand01(struct keys *k);
/* Key space size, or 0 when unbounded (fresh). */
uint64_t keys_space(const struct keys *k);
/* Render "<prefix><n>" into buf (NUL-terminated); returns its length. */
size_t keys_text(const char *prefix, size_t prefix_len, uint64_t n, char *buf,
		 size_t cap);

#endif
