/*
 * gocd.h - the few process-wide facts every module may read.
 *
 * Owns: nothing but their declaration (main.c sets them).
 * Must never: grow into a grab bag; a fact belongs here only if most
 * modules need it.
 */
#ifndef GOCD_GOCD_H
#define GOCD_GOCD_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct config;

struct gocd {
	struct event_base *base;
	const struct config *cfg;
	bool shutting_down;
};

extern struct gocd srv;

/* Monotonic clock (CLOCK_MONOTONIC, a vDSO call: cheap). */
uint64_t gocd_now_ms(void);
uint64_t gocd_now_us(void);

#endif
