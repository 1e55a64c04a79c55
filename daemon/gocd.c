/*
 * gocd.c - the process-wide facts declared in gocd.h.
 *
 * Owns: their storage, kept out of main.c so unit tests can link every
 * other daemon object.  Must never: hold logic.
 */
#include <time.h>

#include "gocd.h"

struct gocd srv;

uint64_t gocd_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

uint64_t gocd_now_ms(void)
{
	return gocd_now_us() / 1000;
}
