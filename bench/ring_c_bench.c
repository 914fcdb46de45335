/*
 * The ring alone, no Python: one thread writes a 64-byte frame and reads it back,
 * N times; prints ns per write+read.
 *
 *   gcc -O3 -mcx16 -I_native bench/ring_c_bench.c _native/fb_ring.c -o build/ring_c_bench
 *   build/ring_c_bench [N]
 */
#include "fb_ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 10000000;
    fb_ring_params_t p = {0};
    p.data_bytes = 1u << 26;
    p.frame_capacity = 1u << 20;
    p.max_frame = 1u << 20;
    p.max_readers = 64;
    p.max_topics = 1024;
    p.pause_hi = 0.85;
    p.resume_lo = 0.70;
    p.backpressure = 0.90;
    p.unblock_timeout_ns = 1000000000;
    size_t size = fb_ring_required_size(&p);
    void *mem = aligned_alloc(4096, size);
    if (!mem)
        return 1;
    memset(mem, 0, size);
    if (fb_ring_init(mem, size, &p) != FB_RING_OK)
        return 1;
    fb_ring_t *r = mem;
    uint32_t slot;
    fb_ring_reader_open(r, 0, 0, &slot);
    char payload[64] = {0};
    fb_read_t rd = {0};
    rd.slot = slot;
    fb_frame_t f;
    uint64_t seq, sum = 0;
    uint64_t t0 = fb_mono_ns();
    for (long i = 0; i < n; i++) {
        fb_ring_write(r, payload, sizeof payload, 0, 0, &seq);
        fb_ring_read_begin(r, &rd);
        if (fb_ring_read_next(r, &rd, &f) == FB_RING_OK)
            sum += f.len;
        fb_ring_read_end(r, &rd);
    }
    uint64_t t1 = fb_mono_ns();
    printf("64 B write+read: %.1f ns per frame (%llu bytes read)\n", (double)(t1 - t0) / (double)n,
           (unsigned long long)sum);
    free(mem);
    return 0;
}
