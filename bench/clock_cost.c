/* What one clock read costs on this machine (the reason batch send durations are
 * timed with the TSC).
 *     gcc -O2 -o /tmp/clock_cost bench/clock_cost.c && /tmp/clock_cost
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

static uint64_t ns(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

int main(void)
{
    const int n = 5000000;
    const struct {
        const char *name;
        clockid_t id;
    } clocks[] = {{"CLOCK_MONOTONIC", CLOCK_MONOTONIC}, {"CLOCK_REALTIME", CLOCK_REALTIME}};
    volatile uint64_t sink = 0;
    for (int c = 0; c < 2; c++) {
        uint64_t t0 = ns(CLOCK_MONOTONIC);
        for (int i = 0; i < n; i++)
            sink += ns(clocks[c].id);
        printf("%-16s %6.1f ns per read\n", clocks[c].name, (double)(ns(CLOCK_MONOTONIC) - t0) / n);
    }
#if defined(__x86_64__)
    uint64_t t0 = ns(CLOCK_MONOTONIC);
    for (int i = 0; i < n; i++)
        sink += __rdtsc();
    printf("%-16s %6.1f ns per read\n", "rdtsc", (double)(ns(CLOCK_MONOTONIC) - t0) / n);
#endif
    return (int)(sink & 0);
}
