/*
 * test_ring.c - self-contained tests for the framebus ring (_native/fb_ring.h).
 *
 * Usage: test_ring [SCALE [FILTER]]
 *   SCALE  multiplies the frame counts of the stress-type tests (default 1)
 *   FILTER runs only the tests whose name contains this substring
 *
 * No framework: CHECK* record a failure (file:line, expression, values) and go
 * on; REQUIRE* also return from the current test function. Exit status is 0
 * only when every check passed. A per-test alarm turns a hang into a failure.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fb_ring.h"

/* ------------------------------------------------------------------------- */
/* Minimal check machinery                                                    */

static unsigned long g_failures;          /* updated atomically */
static double g_scale = 1.0;
static const char *volatile g_test_name = "?";

static const char *rc_name(long long rc)
{
    switch (rc) {
    case FB_RING_OK: return "OK";
    case FB_RING_PAUSED: return "PAUSED";
    case FB_RING_RESUMED: return "RESUMED";
    case FB_RING_FULL: return "FULL";
    case FB_RING_EMPTY: return "EMPTY";
    case FB_RING_TOO_LARGE: return "TOO_LARGE";
    case FB_RING_EINVAL: return "EINVAL";
    case FB_RING_CLOSED: return "CLOSED";
    case FB_RING_TIMEOUT: return "TIMEOUT";
    case FB_RING_NO_SLOT: return "NO_SLOT";
    case FB_RING_BAD_MAGIC: return "BAD_MAGIC";
    case FB_RING_BAD_VERSION: return "BAD_VERSION";
    case FB_RING_INTR: return "INTR";
    case FB_RING_RETRY: return "RETRY";
    case FB_RING_LAPPED: return "LAPPED";
    default: return "?";
    }
}

static int note_failure(void)
{
    unsigned long n = __atomic_add_fetch(&g_failures, 1, __ATOMIC_RELAXED);
    return n <= 60; /* print only the first failures */
}

static void fail_expr(const char *file, int line, const char *expr)
{
    if (note_failure())
        fprintf(stderr, "%s:%d: [%s] CHECK failed: %s\n", file, line, g_test_name, expr);
}

static void fail_eq(const char *file, int line, const char *ea, const char *eb, long long a, long long b)
{
    if (note_failure())
        fprintf(stderr, "%s:%d: [%s] CHECK failed: %s == %s  (%lld vs %lld; 0x%llx vs 0x%llx)\n", file,
                line, g_test_name, ea, eb, a, b, (unsigned long long)a, (unsigned long long)b);
}

static void fail_rc(const char *file, int line, const char *ea, long long a, long long b)
{
    if (note_failure())
        fprintf(stderr, "%s:%d: [%s] CHECK failed: %s returned %s (%lld), expected %s (%lld)\n", file,
                line, g_test_name, ea, rc_name(a), a, rc_name(b), b);
}

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            fail_expr(__FILE__, __LINE__, #c);                                                     \
    } while (0)
#define REQUIRE(c)                                                                                 \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fail_expr(__FILE__, __LINE__, #c);                                                     \
            return;                                                                                \
        }                                                                                          \
    } while (0)
#define CHECK_EQ(a, b)                                                                             \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            fail_eq(__FILE__, __LINE__, #a, #b, a_, b_);                                           \
    } while (0)
#define REQUIRE_EQ(a, b)                                                                           \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            fail_eq(__FILE__, __LINE__, #a, #b, a_, b_);                                           \
            return;                                                                                \
        }                                                                                          \
    } while (0)
#define CHECK_RC(expr, want)                                                                       \
    do {                                                                                           \
        long long r_ = (long long)(expr), w_ = (long long)(want);                                  \
        if (r_ != w_)                                                                              \
            fail_rc(__FILE__, __LINE__, #expr, r_, w_);                                            \
    } while (0)
#define REQUIRE_RC(expr, want)                                                                     \
    do {                                                                                           \
        long long r_ = (long long)(expr), w_ = (long long)(want);                                  \
        if (r_ != w_) {                                                                            \
            fail_rc(__FILE__, __LINE__, #expr, r_, w_);                                            \
            return;                                                                                \
        }                                                                                          \
    } while (0)
/* success: OK, PAUSED or RESUMED */
#define CHECK_OKISH(expr)                                                                          \
    do {                                                                                           \
        long long r_ = (long long)(expr);                                                          \
        if (r_ < 0)                                                                                \
            fail_rc(__FILE__, __LINE__, #expr, r_, 0);                                             \
    } while (0)

static unsigned long failures_now(void) { return __atomic_load_n(&g_failures, __ATOMIC_RELAXED); }

/* ------------------------------------------------------------------------- */
/* Helpers                                                                    */

#define MS 1000000ull
#define SEC 1000000000ull

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / SEC), (long)(ns % SEC)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static uint64_t scaled(uint64_t n)
{
    double v = (double)n * g_scale;
    return v < 1.0 ? 1 : (uint64_t)v;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static uint64_t rec_bytes(uint32_t len) { return ((uint64_t)FB_RING_RECORD_HEADER + len + 7) & ~7ull; }

/* Payload pattern keyed by (usually) the sequence number. */
static void fill_pat(uint8_t *b, uint64_t key, uint32_t len)
{
    uint8_t base = (uint8_t)(mix64(key) >> 56);
    for (uint32_t j = 0; j < len; j++)
        b[j] = (uint8_t)(base + j * 167u + (j >> 8));
}

static int check_pat(const uint8_t *b, uint64_t key, uint32_t len)
{
    uint8_t base = (uint8_t)(mix64(key) >> 56);
    for (uint32_t j = 0; j < len; j++)
        if (b[j] != (uint8_t)(base + j * 167u + (j >> 8)))
            return 0;
    return 1;
}

static fb_ring_params_t mkparams(uint64_t data, uint64_t frames, uint32_t max_frame)
{
    fb_ring_params_t p;
    memset(&p, 0, sizeof p);
    p.data_bytes = data;
    p.frame_capacity = frames;
    p.max_frame = max_frame;
    p.max_readers = 8;
    p.max_topics = 16;
    p.flags = 0;
    p.pause_hi = 0.75;
    p.resume_lo = 0.5;
    p.backpressure = 1.0;
    p.unblock_timeout_ns = 30 * SEC; /* never in the way unless a test wants it */
    p.start_seq = 1000;
    return p;
}

typedef struct {
    fb_ring_t *r;
    uint8_t *mem;
    size_t size;
    fb_ring_params_t p;
} ring_t;

static int ring_make(ring_t *R, const fb_ring_params_t *p)
{
    memset(R, 0, sizeof *R);
    R->p = *p;
    R->size = fb_ring_required_size(p);
    if (R->size == 0) {
        fprintf(stderr, "  fb_ring_required_size returned 0\n");
        return -100;
    }
    size_t alloc = (R->size + 4095) & ~(size_t)4095;
    R->mem = aligned_alloc(4096, alloc);
    if (!R->mem)
        return -101;
    memset(R->mem, 0, alloc);
    int rc = fb_ring_init(R->mem, R->size, p);
    if (rc != FB_RING_OK) {
        fprintf(stderr, "  fb_ring_init returned %s (%d)\n", rc_name(rc), rc);
        free(R->mem);
        R->mem = NULL;
        return rc;
    }
    R->r = (fb_ring_t *)R->mem;
    return 0;
}

static void ring_free(ring_t *R)
{
    free(R->mem);
    R->mem = NULL;
    R->r = NULL;
}

#define RING(R, params) REQUIRE_EQ(ring_make(&(R), &(params)), 0)

static fb_ring_stats_t stats_of(ring_t *R)
{
    fb_ring_stats_t s;
    memset(&s, 0, sizeof s);
    fb_ring_stats(R->r, &s);
    return s;
}

/* Is [p, p+len) inside the region? (guards copies of possibly torn records) */
static int in_region(const ring_t *R, const uint8_t *p, uint32_t len)
{
    return p >= R->mem && p <= R->mem + R->size && (size_t)(R->mem + R->size - p) >= len;
}

/*
 * A single-threaded producer/consumer pair with exact bookkeeping: payloads
 * are pattern(seq), topics seq % 7, timestamps seq * 3 + 1.
 */
typedef struct {
    ring_t *R;
    fb_read_t rd;
    uint32_t slot;
    uint64_t wseq;     /* next sequence number to be written */
    uint64_t rseq;     /* next sequence number expected by the reader */
    uint64_t last_pos; /* position and length of the last frame read */
    uint32_t last_len;
    uint8_t buf[1 << 16];
} pc_t;

static void pc_init(pc_t *pc, ring_t *R, int open_reader)
{
    memset(pc, 0, sizeof *pc);
    pc->R = R;
    pc->wseq = pc->rseq = R->p.start_seq;
    pc->slot = UINT32_MAX;
    if (open_reader) {
        int rc = fb_ring_reader_open(R->r, 0, 4242, &pc->slot);
        CHECK_RC(rc, FB_RING_OK);
        pc->rd.slot = pc->slot;
    }
}

/* Writes one frame of len bytes; returns the ring's result. */
static int pc_put(pc_t *pc, uint32_t len)
{
    uint64_t seq = ~0ull;
    if (len <= sizeof pc->buf)
        fill_pat(pc->buf, pc->wseq, len);
    int rc = fb_ring_write(pc->R->r, pc->buf, len, (uint32_t)(pc->wseq % 7), pc->wseq * 3 + 1, &seq);
    if (rc >= 0) {
        CHECK_EQ(seq, pc->wseq);
        pc->wseq++;
    }
    return rc;
}

/* Verifies one frame against the bookkeeping. */
static void pc_check_frame(pc_t *pc, const fb_frame_t *f)
{
    CHECK_EQ(f->seq, pc->rseq);
    CHECK_EQ(f->topic, f->seq % 7);
    CHECK_EQ(f->ts_ns, f->seq * 3 + 1);
    CHECK(f->len <= pc->R->p.max_frame);
    CHECK(f->len == 0 || in_region(pc->R, f->data, f->len));
    if (f->len <= pc->R->p.max_frame && (f->len == 0 || in_region(pc->R, f->data, f->len)))
        CHECK(check_pat(f->data, f->seq, f->len));
    pc->rseq = f->seq + 1;
    pc->last_pos = f->pos;
    pc->last_len = f->len;
}

/* Reads up to max frames in one begin/end; returns the number read. */
static uint64_t pc_read(pc_t *pc, uint64_t max)
{
    uint64_t n = 0;
    fb_frame_t f;
    CHECK_RC(fb_ring_read_begin(pc->R->r, &pc->rd), FB_RING_OK);
    while (n < max) {
        int rc = fb_ring_read_next(pc->R->r, &pc->rd, &f);
        if (rc == FB_RING_EMPTY)
            break;
        CHECK_RC(rc, FB_RING_OK);
        if (rc != FB_RING_OK)
            break;
        pc_check_frame(pc, &f);
        n++;
    }
    CHECK_OKISH(fb_ring_read_end(pc->R->r, &pc->rd));
    return n;
}

static uint64_t pc_drain(pc_t *pc) { return pc_read(pc, UINT64_MAX); }

/* ------------------------------------------------------------------------- */
/* Parameters, geometry, region checks                                        */

static void test_params(void)
{
    CHECK_EQ(fb_ring_record_bytes(0), 32);
    CHECK_EQ(fb_ring_record_bytes(1), 40);
    CHECK_EQ(fb_ring_record_bytes(8), 40);
    CHECK_EQ(fb_ring_record_bytes(9), 48);
    CHECK_EQ(fb_ring_record_bytes(2016), 2048);
    CHECK_EQ(fb_ring_record_bytes(UINT32_MAX), rec_bytes(UINT32_MAX));

    fb_ring_params_t good = mkparams(4096, 256, 1000), p;
    CHECK_RC(fb_ring_validate_params(&good), FB_RING_OK);
    CHECK(fb_ring_required_size(&good) > 4096);

#define BAD(mutation)                                                                              \
    do {                                                                                           \
        p = good;                                                                                  \
        mutation;                                                                                  \
        if (fb_ring_validate_params(&p) != FB_RING_EINVAL)                                         \
            fail_rc(__FILE__, __LINE__, "validate(" #mutation ")", fb_ring_validate_params(&p),    \
                    FB_RING_EINVAL);                                                               \
        if (fb_ring_required_size(&p) != 0)                                                        \
            fail_expr(__FILE__, __LINE__, "required_size(" #mutation ") == 0");                    \
    } while (0)
#define GOOD(mutation)                                                                             \
    do {                                                                                           \
        p = good;                                                                                  \
        mutation;                                                                                  \
        if (fb_ring_validate_params(&p) != FB_RING_OK)                                             \
            fail_rc(__FILE__, __LINE__, "validate(" #mutation ")", fb_ring_validate_params(&p),    \
                    FB_RING_OK);                                                                   \
        if (fb_ring_required_size(&p) == 0)                                                        \
            fail_expr(__FILE__, __LINE__, "required_size(" #mutation ") != 0");                    \
    } while (0)

    /* data_bytes: power of two >= 4096 */
    BAD(p.data_bytes = 4096 * 3);
    BAD(p.data_bytes = 6000);
    BAD(p.data_bytes = 2048);
    BAD(p.data_bytes = 0);
    GOOD(p.data_bytes = 8192);
    GOOD(p.data_bytes = 1 << 20);
    /* frame_capacity: power of two */
    BAD(p.frame_capacity = 1000);
    BAD(p.frame_capacity = 3);
    BAD(p.frame_capacity = 0);
    GOOD(p.frame_capacity = 1024);
    /* max_frame: two records of it must fit under backpressure * data_bytes */
    GOOD(p.max_frame = 2016);                       /* 2 * 2048 == 4096 */
    BAD(p.max_frame = 2017);                        /* 2 * 2056 > 4096 */
    BAD(p.max_frame = 4096);
    BAD(p.max_frame = UINT32_MAX);
    GOOD(p.max_frame = 992; p.pause_hi = 0.5; p.resume_lo = 0.25; p.backpressure = 0.5);
    BAD(p.max_frame = 993; p.pause_hi = 0.5; p.resume_lo = 0.25; p.backpressure = 0.5);
    /* readers */
    BAD(p.max_readers = 0);
    BAD(p.max_readers = FB_RING_MAX_READERS + 1);
    GOOD(p.max_readers = 1);
    GOOD(p.max_readers = FB_RING_MAX_READERS);
    /* hysteresis: 0 < resume_lo < pause_hi <= backpressure <= 1 */
    BAD(p.resume_lo = p.pause_hi);
    BAD(p.resume_lo = 0.8; p.pause_hi = 0.6);
    BAD(p.resume_lo = 0.0);
    BAD(p.resume_lo = -0.1);
    BAD(p.pause_hi = 0.9; p.backpressure = 0.8);
    BAD(p.backpressure = 1.5);
    BAD(p.pause_hi = 1.2; p.backpressure = 1.2);
    BAD(p.pause_hi = NAN);
    BAD(p.resume_lo = NAN);
    BAD(p.backpressure = NAN);
    GOOD(p.pause_hi = 0.8; p.backpressure = 0.8);
    GOOD(p.pause_hi = 1.0; p.backpressure = 1.0);
#undef BAD
#undef GOOD

    /* fb_ring_init refuses invalid params and a short region */
    size_t size = fb_ring_required_size(&good);
    size_t alloc = (size + 4095) & ~(size_t)4095;
    uint8_t *mem = aligned_alloc(4096, alloc);
    REQUIRE(mem != NULL);
    memset(mem, 0, alloc);
    p = good;
    p.data_bytes = 5000;
    CHECK_RC(fb_ring_init(mem, alloc, &p), FB_RING_EINVAL);
    CHECK_RC(fb_ring_init(mem, size - 1, &good), FB_RING_EINVAL);
    CHECK_RC(fb_ring_init(mem, size, &good), FB_RING_OK);
    fb_ring_params_t back;
    memset(&back, 0, sizeof back);
    fb_ring_params((fb_ring_t *)mem, &back);
    CHECK_EQ(back.data_bytes, good.data_bytes);
    CHECK_EQ(back.frame_capacity, good.frame_capacity);
    CHECK_EQ(back.max_frame, good.max_frame);
    CHECK_EQ(back.max_readers, good.max_readers);
    CHECK_EQ(back.max_topics, good.max_topics);
    CHECK_EQ(back.flags, good.flags);
    CHECK(back.pause_hi == good.pause_hi);
    CHECK(back.resume_lo == good.resume_lo);
    CHECK(back.backpressure == good.backpressure);
    CHECK_EQ(back.unblock_timeout_ns, good.unblock_timeout_ns);
    CHECK_EQ(back.start_seq, good.start_seq);
    free(mem);
}

static void test_check(void)
{
    fb_ring_params_t p = mkparams(8192, 256, 1000);
    ring_t R;
    RING(R, p);
    CHECK_RC(fb_ring_check(R.mem, R.size), FB_RING_OK);

    uint64_t magic;
    uint32_t version;
    memcpy(&magic, R.mem, 8);
    memcpy(&version, R.mem + 8, 4);
    CHECK_EQ(magic, FB_RING_MAGIC);
    CHECK_EQ(version, FB_RING_LAYOUT_VERSION);

    /* too short */
    CHECK_RC(fb_ring_check(R.mem, R.size - 4096), FB_RING_EINVAL);
    CHECK_RC(fb_ring_check(R.mem, R.size - 1), FB_RING_EINVAL);
    CHECK_RC(fb_ring_check(R.mem, 16), FB_RING_EINVAL);
    CHECK_RC(fb_ring_check(R.mem, 0), FB_RING_EINVAL);

    /* wrong version */
    uint32_t v2 = FB_RING_LAYOUT_VERSION + 1;
    memcpy(R.mem + 8, &v2, 4);
    CHECK_RC(fb_ring_check(R.mem, R.size), FB_RING_BAD_VERSION);
    memcpy(R.mem + 8, &version, 4);
    CHECK_RC(fb_ring_check(R.mem, R.size), FB_RING_OK);

    /* wrong magic */
    R.mem[3] ^= 0x40;
    CHECK_RC(fb_ring_check(R.mem, R.size), FB_RING_BAD_MAGIC);
    R.mem[3] ^= 0x40;
    CHECK_RC(fb_ring_check(R.mem, R.size), FB_RING_OK);

    /* garbage and zeroes */
    uint8_t *junk = aligned_alloc(4096, R.size + 4096);
    REQUIRE(junk != NULL);
    uint64_t s = 0x1234567;
    for (size_t i = 0; i < R.size; i++)
        junk[i] = (uint8_t)rng_next(&s);
    CHECK_RC(fb_ring_check(junk, R.size), FB_RING_BAD_MAGIC);
    memset(junk, 0, R.size);
    CHECK_RC(fb_ring_check(junk, R.size), FB_RING_BAD_MAGIC);
    free(junk);
    ring_free(&R);
}

/* ------------------------------------------------------------------------- */
/* Basic reading and writing                                                  */

static void test_empty(void)
{
    fb_ring_params_t p = mkparams(4096, 64, 1000);
    ring_t R;
    RING(R, p);
    uint32_t slot = 99;
    REQUIRE_RC(fb_ring_reader_open(R.r, 0, 1, &slot), FB_RING_OK);
    CHECK(slot < p.max_readers);
    CHECK_EQ(fb_ring_readable(R.r, slot), 0);
    fb_read_t rd;
    memset(&rd, 0, sizeof rd);
    rd.slot = slot;
    fb_frame_t f;
    CHECK_RC(fb_ring_read_begin(R.r, &rd), FB_RING_OK);
    CHECK_RC(fb_ring_read_next(R.r, &rd, &f), FB_RING_EMPTY);
    CHECK_RC(fb_ring_read_next(R.r, &rd, &f), FB_RING_EMPTY);
    CHECK_RC(fb_ring_read_end(R.r, &rd), FB_RING_OK);
    CHECK_EQ(fb_ring_readable(R.r, slot), 0);
    fb_ring_stats_t s = stats_of(&R);
    CHECK_EQ(s.published, 0);
    CHECK_EQ(s.next_seq, p.start_seq);
    CHECK_EQ(s.used_frames, 0);
    CHECK_EQ(s.used_bytes, 0);
    CHECK_EQ(s.readers, 1);
    fb_reader_info_t info;
    memset(&info, 0, sizeof info);
    CHECK_RC(fb_ring_reader_info(R.r, slot, &info), FB_RING_OK);
    CHECK_EQ(info.seq, p.start_seq);
    CHECK_EQ(info.backlog, 0);
    CHECK_EQ(info.active, 1);
    CHECK_EQ(info.group_key, 0);
    CHECK_EQ(info.owner_pid, 1);
    ring_free(&R);
}

static void test_single_frame(void)
{
    fb_ring_params_t p = mkparams(4096, 64, 1000);
    ring_t R;
    RING(R, p);
    uint32_t slot;
    REQUIRE_RC(fb_ring_reader_open(R.r, 0, 4242, &slot), FB_RING_OK);
    const char msg[] = "hello framebus";
    uint64_t seq = 0;
    CHECK_RC(fb_ring_write(R.r, msg, (uint32_t)strlen(msg), 7, 123456789ull, &seq), FB_RING_OK);
    CHECK_EQ(seq, p.start_seq);
    CHECK_EQ(fb_ring_readable(R.r, slot), 1);

    fb_read_t rd;
    memset(&rd, 0, sizeof rd);
    rd.slot = slot;
    fb_frame_t f;
    memset(&f, 0, sizeof f);
    CHECK_RC(fb_ring_read_begin(R.r, &rd), FB_RING_OK);
    REQUIRE_RC(fb_ring_read_next(R.r, &rd, &f), FB_RING_OK);
    CHECK_EQ(f.seq, p.start_seq);
    CHECK_EQ(f.topic, 7);
    CHECK_EQ(f.ts_ns, 123456789ull);
    CHECK_EQ(f.len, strlen(msg));
    CHECK(in_region(&R, f.data, f.len));
    CHECK(memcmp(f.data, msg, strlen(msg)) == 0);
    CHECK_EQ(f.pos % p.data_bytes, 0);
    uint64_t first_pos = f.pos;
    CHECK_RC(fb_ring_read_next(R.r, &rd, &f), FB_RING_EMPTY);
    CHECK_RC(fb_ring_read_end(R.r, &rd), FB_RING_OK);
    CHECK_EQ(fb_ring_readable(R.r, slot), 0);

    /* a zero-length frame, then a second ordinary one */
    CHECK_RC(fb_ring_write(R.r, msg, 0, 0, 5, &seq), FB_RING_OK);
    CHECK_EQ(seq, p.start_seq + 1);
    CHECK_RC(fb_ring_write(R.r, "xyz", 3, 65535, 77, &seq), FB_RING_OK);
    CHECK_EQ(seq, p.start_seq + 2);
    CHECK_RC(fb_ring_read_begin(R.r, &rd), FB_RING_OK);
    REQUIRE_RC(fb_ring_read_next(R.r, &rd, &f), FB_RING_OK);
    CHECK_EQ(f.seq, p.start_seq + 1);
    CHECK_EQ(f.len, 0);
    CHECK_EQ(f.topic, 0);
    CHECK_EQ(f.ts_ns, 5);
    CHECK_EQ(f.pos, first_pos + rec_bytes((uint32_t)strlen(msg)));
    REQUIRE_RC(fb_ring_read_next(R.r, &rd, &f), FB_RING_OK);
    CHECK_EQ(f.seq, p.start_seq + 2);
    CHECK_EQ(f.len, 3);
    CHECK_EQ(f.topic, 65535);
    CHECK_EQ(f.ts_ns, 77);
    CHECK(memcmp(f.data, "xyz", 3) == 0);
    CHECK_EQ(f.pos, first_pos + rec_bytes((uint32_t)strlen(msg)) + rec_bytes(0));
    CHECK_EQ(rd.last_pos, f.pos);
    CHECK_RC(fb_ring_read_next(R.r, &rd, &f), FB_RING_EMPTY);
    CHECK_RC(fb_ring_read_end(R.r, &rd), FB_RING_OK);

    fb_reader_info_t info;
    memset(&info, 0, sizeof info);
    CHECK_RC(fb_ring_reader_info(R.r, slot, &info), FB_RING_OK);
    CHECK_EQ(info.seq, p.start_seq + 3);
    CHECK_EQ(info.backlog, 0);
    CHECK_EQ(info.owner_pid, 4242);
    CHECK_EQ(info.active, 1);
    ring_free(&R);
}

/*
 * Records straddle the end of a 4096-byte data area again and again. Every
 * third frame is sized to leave exactly 0, 8, 16, 24, 32, 40 or 48 bytes at
 * the end of the lap, so the exact fit, the implicit skip (< 32 bytes) and the
 * padding record are all used. The writer predicts each record's position from
 * the layout rules; the reader checks positions, sequence and contents.
 */
static void test_wrap_padding(void)
{
    const uint64_t D = 4096;
    fb_ring_params_t p = mkparams(D, 256, 1000);
    ring_t R;
    RING(R, p);
    static pc_t pc;
    pc_init(&pc, &R, 1);
    const uint64_t total = scaled(3000) < 600 ? 600 : scaled(3000);
    uint32_t *lens = calloc(total, sizeof *lens);
    uint64_t *poss = calloc(total, sizeof *poss);
    REQUIRE(lens && poss);
    static const uint32_t gaps[] = {0, 8, 16, 24, 32, 40, 48};
    uint64_t rs = 0x9e3779b97f4a7c15ull, gi = 0;
    uint64_t written = 0, nread = 0, base = 0, next_pos = 0;
    uint64_t n_exact = 0, n_implicit = 0, n_padded = 0;

    /* the first frame through claim, to learn the base position */
    {
        fb_claim_t c;
        memset(&c, 0, sizeof c);
        REQUIRE_RC(fb_ring_claim(R.r, 5, (uint32_t)(pc.wseq % 7), pc.wseq * 3 + 1, &c), FB_RING_OK);
        CHECK_EQ(c.seq, pc.wseq);
        CHECK_EQ(c.len, 5);
        CHECK_EQ(c.pos % D, 0);
        fill_pat(c.data, c.seq, 5);
        CHECK_OKISH(fb_ring_commit(R.r, &c));
        base = c.pos;
        lens[0] = 5;
        poss[0] = c.pos;
        next_pos = c.pos + rec_bytes(5);
        pc.wseq++;
        written = 1;
    }

    int stuck = 0;
    while (nread < total && stuck < 3) {
        uint64_t progress = 0;
        /* write a burst */
        uint64_t burst = 1 + rng_next(&rs) % 40;
        for (uint64_t k = 0; k < burst && written < total; k++) {
            uint64_t off = next_pos % D, rem = D - off;
            uint32_t len = (uint32_t)(1 + (written * 37 + rng_next(&rs) % 50) % 700);
            if (written % 3 == 2) {
                uint64_t g = gaps[gi++ % 7];
                if (rem >= g + 40 && rem - g - 32 <= 700)
                    len = (uint32_t)(rem - g - 32);
            }
            uint64_t rec = rec_bytes(len);
            uint64_t pos = off + rec > D ? next_pos + rem : next_pos;
            int rc;
            if (written % 5 == 0) {
                fb_claim_t c;
                memset(&c, 0, sizeof c);
                rc = fb_ring_claim(R.r, len, (uint32_t)(pc.wseq % 7), pc.wseq * 3 + 1, &c);
                if (rc >= 0) {
                    CHECK_EQ(c.seq, pc.wseq);
                    CHECK_EQ(c.pos, pos);
                    CHECK_EQ(c.len, len);
                    fill_pat(c.data, c.seq, len);
                    CHECK_OKISH(fb_ring_commit(R.r, &c));
                    pc.wseq++;
                }
            } else {
                rc = pc_put(&pc, len);
            }
            if (rc == FB_RING_FULL) {
                CHECK(nread < written); /* never FULL while the reader has caught up */
                break;
            }
            CHECK_OKISH(rc);
            if (rc < 0)
                break;
            lens[written] = len;
            poss[written] = pos;
            next_pos = pos + rec;
            written++;
            progress++;
        }
        /* read a burst */
        uint64_t rburst = 1 + rng_next(&rs) % 60;
        fb_frame_t f;
        CHECK_RC(fb_ring_read_begin(R.r, &pc.rd), FB_RING_OK);
        for (uint64_t k = 0; k < rburst; k++) {
            int rc = fb_ring_read_next(R.r, &pc.rd, &f);
            if (rc == FB_RING_EMPTY)
                break;
            CHECK_RC(rc, FB_RING_OK);
            if (rc != FB_RING_OK)
                break;
            uint64_t i = f.seq - p.start_seq;
            CHECK_EQ(i, nread);
            if (i >= written) {
                CHECK(!"read a frame that was not written");
                break;
            }
            CHECK_EQ(f.len, lens[i]);
            CHECK_EQ(f.pos, poss[i]);
            pc_check_frame(&pc, &f);
            if (i > 0) {
                uint64_t prev_end = poss[i - 1] + rec_bytes(lens[i - 1]);
                if (f.pos != prev_end) {
                    CHECK_EQ(f.pos % D, 0);
                    CHECK(f.pos > prev_end && f.pos - prev_end < rec_bytes(f.len));
                    if (f.pos - prev_end < 32)
                        n_implicit++;
                    else
                        n_padded++;
                } else if (f.pos % D == 0) {
                    n_exact++;
                }
            }
            nread++;
            progress++;
        }
        CHECK_OKISH(fb_ring_read_end(R.r, &pc.rd));
        stuck = progress ? 0 : stuck + 1;
        if (failures_now() > 40)
            break;
    }
    CHECK_EQ(nread, total);
    CHECK_EQ(written, total);
    uint64_t laps = (next_pos - base) / D;
    CHECK(laps > 50);
    CHECK(n_exact > 0);
    CHECK(n_implicit > 0);
    CHECK(n_padded > 0);
    printf("    %llu frames, %llu laps: %llu exact fits, %llu implicit skips, %llu padding records\n",
           (unsigned long long)total, (unsigned long long)laps, (unsigned long long)n_exact,
           (unsigned long long)n_implicit, (unsigned long long)n_padded);
    fb_ring_stats_t s = stats_of(&R);
    CHECK_EQ(s.published, total);
    CHECK_EQ(s.next_seq, p.start_seq + total);
    free(lens);
    free(poss);
    ring_free(&R);
}

/* Writes records of exactly `d` bytes in total (d % 8 == 0, d == 0 or d >= 40). */
static void fill_bytes(pc_t *pc, uint64_t d, uint64_t max_rec)
{
    while (d > 0) {
        uint64_t r = d < max_rec ? d : max_rec;
        if (d - r > 0 && d - r < 40)
            r = d - 40;
        CHECK_OKISH(pc_put(pc, (uint32_t)(r - 32)));
        pc_drain(pc);
        d -= r;
    }
}

/* The largest allowed frame is accepted at every reachable offset of the data area. */
static void test_max_frame(void)
{
    const uint64_t D = 4096;
    const uint32_t M = 2016; /* record 2048: two of them fill the area exactly */
    fb_ring_params_t p = mkparams(D, 256, M);
    ring_t R;
    RING(R, p);
    static pc_t pc;
    pc_init(&pc, &R, 1);
    uint64_t max_rec = rec_bytes(M);

    CHECK_OKISH(pc_put(&pc, 8));
    CHECK_EQ(pc_drain(&pc), 1);
    uint64_t next_pos = pc.last_pos + rec_bytes(pc.last_len);
    int tested = 0;
    for (uint64_t o = 0; o < D; o += 8) {
        if (o > 0 && o < 40)
            continue; /* records are >= 40 bytes: no record can start there */
        uint64_t off = next_pos % D;
        if (off != o) {
            if (off != 0) {
                uint64_t rem = D - off;
                if (rem < 40) { /* skip to the next lap with a frame that does not fit */
                    CHECK_OKISH(pc_put(&pc, 8));
                    pc_drain(&pc);
                    rem = D - 40;
                }
                fill_bytes(&pc, rem, max_rec);
            }
            fill_bytes(&pc, o, max_rec);
            if (pc.rseq > p.start_seq)
                next_pos = pc.last_pos + rec_bytes(pc.last_len);
            REQUIRE_EQ(next_pos % D, o);
        }
        uint64_t lap = next_pos - o;
        uint64_t want = o + max_rec <= D ? lap + o : lap + D;
        int rc = pc_put(&pc, M);
        CHECK_OKISH(rc);
        if (rc < 0) {
            fprintf(stderr, "    max frame refused at offset %llu\n", (unsigned long long)o);
            break;
        }
        CHECK_EQ(pc_drain(&pc), 1);
        CHECK_EQ(pc.last_len, M);
        CHECK_EQ(pc.last_pos, want);
        next_pos = pc.last_pos + max_rec;
        tested++;
        if (failures_now() > 40)
            break;
    }
    CHECK_EQ(tested, 1 + (D - 40) / 8);

    /* one byte more is too large, whatever the path */
    uint8_t big[4096];
    memset(big, 1, sizeof big);
    uint64_t seq;
    fb_claim_t c;
    CHECK_RC(fb_ring_write(R.r, big, M + 1, 0, 0, &seq), FB_RING_TOO_LARGE);
    CHECK_RC(fb_ring_write(R.r, big, UINT32_MAX, 0, 0, &seq), FB_RING_TOO_LARGE);
    CHECK_RC(fb_ring_claim(R.r, M + 1, 0, 0, &c), FB_RING_TOO_LARGE);
    CHECK_RC(fb_ring_claim(R.r, UINT32_MAX, 0, 0, &c), FB_RING_TOO_LARGE);
    fb_iov_t iov[2] = {{big, 10, 0}, {big, M + 1, 0}};
    uint32_t written = 0;
    CHECK_RC(fb_ring_write_batch(R.r, iov, 2, 0, 0, &seq, &written), FB_RING_TOO_LARGE);
    fb_ring_stats_t s = stats_of(&R);
    CHECK_EQ(s.next_seq, pc.wseq); /* nothing was published by the refused calls */
    ring_free(&R);
}

/* ------------------------------------------------------------------------- */
/* Backpressure                                                               */

static void test_full(void)
{
    fb_ring_params_t p = mkparams(65536, 1024, 2000);
    p.backpressure = 0.5;
    p.pause_hi = 0.5;
    p.resume_lo = 0.25;
    static pc_t pc;

    /* frame-count limit: 0.5 * 1024 = 512 frames of 40 bytes (20480 < 32768 bytes) */
    {
        ring_t R;
        RING(R, p);
        pc_init(&pc, &R, 1);
        uint64_t n = 0;
        int rc;
        while ((rc = pc_put(&pc, 1)) >= 0 && n < 5000)
            n++;
        CHECK_RC(rc, FB_RING_FULL);
        CHECK_EQ(n, 512);
        fb_ring_stats_t s = stats_of(&R);
        CHECK_EQ(s.used_frames, 512);
        CHECK_EQ(s.used_bytes, 512 * 40);
        CHECK_EQ(fb_ring_writable(R.r, 40, 1), 0);
        fb_claim_t c;
        CHECK_RC(fb_ring_claim(R.r, 1, 0, 0, &c), FB_RING_FULL);
        uint64_t seq;
        uint32_t w = 0;
        fb_iov_t iov = {pc.buf, 1, 0};
        CHECK_RC(fb_ring_write_batch(R.r, &iov, 1, 0, 0, &seq, &w), FB_RING_FULL);
        CHECK_EQ(stats_of(&R).published, 512);

        CHECK_EQ(pc_read(&pc, 10), 10);
        CHECK_EQ(fb_ring_writable(R.r, 40, 1), 1);
        CHECK_EQ(fb_ring_writable(R.r, 40, 10), 1);
        CHECK_EQ(fb_ring_writable(R.r, 40, 11), 0);
        n = 0;
        while ((rc = pc_put(&pc, 1)) >= 0 && n < 5000)
            n++;
        CHECK_RC(rc, FB_RING_FULL);
        CHECK_EQ(n, 10);

        /* closing the only reader removes the backpressure (and the full ring was paused) */
        CHECK_RC(fb_ring_reader_close(R.r, pc.slot), FB_RING_RESUMED);
        CHECK_EQ(stats_of(&R).readers, 0);
        for (int i = 0; i < 3000; i++)
            CHECK_OKISH(pc_put(&pc, 1));
        ring_free(&R);
    }

    /* byte limit: 0.5 * 65536 = 32768 bytes; records of 1032 bytes -> 31 fit */
    {
        ring_t R;
        RING(R, p);
        pc_init(&pc, &R, 1);
        uint64_t n = 0;
        int rc;
        while ((rc = pc_put(&pc, 1000)) >= 0 && n < 5000)
            n++;
        CHECK_RC(rc, FB_RING_FULL);
        CHECK_EQ(n, 31);
        fb_ring_stats_t s = stats_of(&R);
        CHECK_EQ(s.used_frames, 31);
        CHECK_EQ(s.used_bytes, 31 * 1032);
        CHECK_EQ(fb_ring_writable(R.r, 1032, 1), 0);
        CHECK_EQ(fb_ring_writable(R.r, 32768 - 31 * 1032, 1), 1);
        CHECK_EQ(pc_read(&pc, 10), 10);
        n = 0;
        while ((rc = pc_put(&pc, 1000)) >= 0 && n < 5000)
            n++;
        CHECK_RC(rc, FB_RING_FULL);
        CHECK_EQ(n, 10);
        CHECK_EQ(pc_drain(&pc), 31);
        CHECK_EQ(stats_of(&R).used_bytes, 0);
        ring_free(&R);
    }

    /* no reader: frames are discarded, writes never report FULL */
    {
        ring_t R;
        RING(R, p);
        pc_init(&pc, &R, 0);
        int full = 0;
        for (int i = 0; i < 10 * 1024; i++) {
            int rc = pc_put(&pc, (uint32_t)(i % 3 == 0 ? 1000 : 1 + i % 64));
            if (rc < 0) {
                full++;
                CHECK_RC(rc, FB_RING_OK);
                break;
            }
        }
        CHECK_EQ(full, 0);
        CHECK_EQ(stats_of(&R).published, 10 * 1024);
        CHECK_EQ(fb_ring_writable(R.r, 1032, 1), 1);
        ring_free(&R);
    }
}

/* The slowest reader holds the space; the others do not. */
static void test_slowest_reader(void)
{
    fb_ring_params_t p = mkparams(4096, 256, 1000);
    ring_t R;
    RING(R, p);
    static pc_t a;
    pc_init(&a, &R, 1);
    uint32_t slow;
    REQUIRE_RC(fb_ring_reader_open(R.r, 0, 2, &slow), FB_RING_OK);
    CHECK(slow != a.slot);
    fb_read_t rd;
    memset(&rd, 0, sizeof rd);
    rd.slot = slow;
    uint64_t n = 0;
    int rc;
    while ((rc = pc_put(&a, 100)) >= 0 && n < 1000) {
        n++;
        CHECK_EQ(pc_drain(&a), 1);
    }
    CHECK_RC(rc, FB_RING_FULL);
    CHECK_EQ(n, 4096 / 136); /* 30 records of 136 bytes */
    fb_reader_info_t info;
    CHECK_RC(fb_ring_reader_info(R.r, slow, &info), FB_RING_OK);
    CHECK_EQ(info.backlog, n);
    CHECK_EQ(info.seq, p.start_seq);
    CHECK_RC(fb_ring_reader_info(R.r, a.slot, &info), FB_RING_OK);
    CHECK_EQ(info.backlog, 0);
    /* the slow reader reads 5: exactly 5 more fit */
    fb_frame_t f;
    CHECK_RC(fb_ring_read_begin(R.r, &rd), FB_RING_OK);
    for (int i = 0; i < 5; i++) {
        CHECK_RC(fb_ring_read_next(R.r, &rd, &f), FB_RING_OK);
        CHECK_EQ(f.seq, p.start_seq + (uint64_t)i);
    }
    CHECK_OKISH(fb_ring_read_end(R.r, &rd));
    n = 0;
    while ((rc = pc_put(&a, 100)) >= 0 && n < 1000) {
        n++;
        CHECK_EQ(pc_drain(&a), 1);
    }
    CHECK_RC(rc, FB_RING_FULL);
    CHECK_EQ(n, 5);
    ring_free(&R);
}

/* An explicit frame limit (a queue's maxsize) holds exactly that many frames. */
static void test_frame_limit(void)
{
    fb_ring_params_t p = mkparams(65536, 64, 1000), q;
    q = p;
    q.frame_limit = 65;
    CHECK_RC(fb_ring_validate_params(&q), FB_RING_EINVAL); /* above frame_capacity */
    q = mkparams(65536, 1, 1000);
    CHECK_RC(fb_ring_validate_params(&q), FB_RING_EINVAL); /* one frame only by explicit limit */
    q.frame_limit = 1;
    CHECK_RC(fb_ring_validate_params(&q), FB_RING_OK);
    for (uint64_t limit = 1; limit <= 3; limit++) {
        p.frame_limit = limit;
        ring_t R;
        RING(R, p);
        fb_ring_params_t back;
        fb_ring_params(R.r, &back);
        CHECK_EQ(back.frame_limit, limit);
        static pc_t a;
        pc_init(&a, &R, 1);
        for (int round = 0; round < 3; round++) {
            for (uint64_t i = 0; i < limit; i++)
                CHECK_RC(pc_put(&a, 10), FB_RING_OK);
            CHECK_RC(pc_put(&a, 10), FB_RING_FULL);
            CHECK_EQ(fb_ring_writable(R.r, fb_ring_record_bytes(10), 1), 0);
            CHECK_EQ(pc_read(&a, 1), 1); /* one read makes room for exactly one */
            CHECK_RC(pc_put(&a, 10), FB_RING_OK);
            CHECK_RC(pc_put(&a, 10), FB_RING_FULL);
            CHECK_EQ(pc_drain(&a), limit);
        }
        ring_free(&R);
    }
}

/* A pid that is certainly dead: a child that exited and was reaped. */
static uint64_t dead_pid(void)
{
    pid_t c = fork();
    if (c == 0)
        _exit(0);
    waitpid(c, NULL, 0);
    return (uint64_t)c;
}

/* Fills the ring, then checks eviction of (group) readers on a shared ring. */
static void test_group_eviction(void)
{
    fb_ring_params_t p = mkparams(4096, 64, 100);
    p.flags = FB_RING_SHARED;
    p.dead_reader_timeout_ns = 20 * MS;
    uint64_t me = (uint64_t)getpid(), dead = dead_pid();
    for (int live_member = 0; live_member <= 1; live_member++) {
        ring_t R;
        RING(R, p);
        static pc_t a;
        pc_init(&a, &R, 0);
        uint32_t g1, g2;
        /* the live member joins first (a join drops dead processes' members) */
        REQUIRE_RC(fb_ring_reader_open(R.r, 77, live_member ? me : dead, &g2), FB_RING_OK);
        REQUIRE_RC(fb_ring_reader_open(R.r, 77, dead, &g1), FB_RING_OK);
        CHECK_EQ(g1, g2);
        int rc;
        while ((rc = pc_put(&a, 50)) >= 0) {
        }
        CHECK_RC(rc, FB_RING_FULL);
        CHECK_EQ(fb_ring_evict_dead(R.r), 0); /* first sight: the timeout starts */
        usleep(40 * 1000);
        fb_reader_info_t info;
        if (live_member) {
            CHECK_EQ(fb_ring_evict_dead(R.r), 0);
            CHECK_RC(fb_ring_reader_info(R.r, g1, &info), FB_RING_OK);
            CHECK_EQ(info.active, 1);
            CHECK_EQ(info.members, 2);
            CHECK_RC(pc_put(&a, 50), FB_RING_FULL);
            /* the live member leaves: only the dead process remains, and it goes */
            CHECK_OKISH(fb_ring_reader_close(R.r, g2));
            CHECK_EQ(fb_ring_evict_dead(R.r), 0);
            usleep(40 * 1000);
        }
        CHECK_EQ(fb_ring_evict_dead(R.r), 1);
        CHECK_RC(fb_ring_reader_info(R.r, g1, &info), FB_RING_OK);
        CHECK_EQ(info.active, 0);
        CHECK_EQ(stats_of(&R).evicted, 1);
        CHECK_RC(pc_put(&a, 50), FB_RING_OK); /* nothing holds the ring back any more */
        ring_free(&R);
    }
    /* a joining process drops the members of dead ones from the count */
    ring_t R;
    RING(R, p);
    uint32_t g1, g2;
    REQUIRE_RC(fb_ring_reader_open(R.r, 77, dead, &g1), FB_RING_OK);
    REQUIRE_RC(fb_ring_reader_open(R.r, 77, me, &g2), FB_RING_OK);
    fb_reader_info_t info;
    CHECK_RC(fb_ring_reader_info(R.r, g2, &info), FB_RING_OK);
    CHECK_EQ(info.members, 1);
    ring_free(&R);
}

static void test_write_batch(void)
{
    fb_ring_params_t p = mkparams(65536, 64, 2000);
    ring_t R;
    RING(R, p);
    static pc_t pc;
    pc_init(&pc, &R, 1);
    static uint8_t bufs[16][2000];
    fb_iov_t iov[16];
    for (int i = 0; i < 16; i++) {
        iov[i].data = bufs[i];
        iov[i].len = (uint32_t)(1 + i * 37);
        iov[i].topic = (uint32_t)(100 + i);
        fill_pat(bufs[i], (uint64_t)i, sizeof bufs[i]); /* prefix-consistent pattern */
    }
    uint64_t first = 0;
    uint32_t written = 0;
    CHECK_RC(fb_ring_write_batch(R.r, iov, 10, 555, 0, &first, &written), FB_RING_OK);
    CHECK_EQ(first, p.start_seq);
    CHECK_EQ(written, 10);

    fb_frame_t f;
    CHECK_RC(fb_ring_read_begin(R.r, &pc.rd), FB_RING_OK);
    for (int i = 0; i < 10; i++) {
        REQUIRE_RC(fb_ring_read_next(R.r, &pc.rd, &f), FB_RING_OK);
        CHECK_EQ(f.seq, first + (uint64_t)i);
        CHECK_EQ(f.len, iov[i].len);
        CHECK_EQ(f.topic, iov[i].topic);
        CHECK_EQ(f.ts_ns, 555);
        CHECK(check_pat(f.data, (uint64_t)i, f.len));
    }
    CHECK_RC(fb_ring_read_next(R.r, &pc.rd, &f), FB_RING_EMPTY);
    CHECK_OKISH(fb_ring_read_end(R.r, &pc.rd));
    pc.wseq = pc.rseq = first + 10;

    /* fill to 60 of 64 frames */
    for (int i = 0; i < 60; i++)
        CHECK_OKISH(pc_put(&pc, 8));
    uint64_t before = stats_of(&R).published;
    /* without PARTIAL: FULL and nothing written */
    written = 0;
    CHECK_RC(fb_ring_write_batch(R.r, iov, 10, 1, 0, &first, &written), FB_RING_FULL);
    CHECK_EQ(written, 0);
    CHECK_EQ(stats_of(&R).published, before);
    /* with PARTIAL: the first 4 */
    written = 0;
    first = 0;
    CHECK_OKISH(fb_ring_write_batch(R.r, iov, 10, 2, FB_WRITE_PARTIAL, &first, &written));
    CHECK_EQ(written, 4);
    CHECK_EQ(first, pc.wseq);
    CHECK_EQ(stats_of(&R).published, before + 4);
    /* nothing fits any more */
    written = 0;
    CHECK_RC(fb_ring_write_batch(R.r, iov, 10, 3, FB_WRITE_PARTIAL, &first, &written), FB_RING_FULL);
    CHECK_EQ(written, 0);
    CHECK_EQ(stats_of(&R).published, before + 4);
    /* read back: 60 pattern frames then batch items 0..3 */
    CHECK_EQ(pc_read(&pc, 60), 60);
    CHECK_RC(fb_ring_read_begin(R.r, &pc.rd), FB_RING_OK);
    for (int i = 0; i < 4; i++) {
        REQUIRE_RC(fb_ring_read_next(R.r, &pc.rd, &f), FB_RING_OK);
        CHECK_EQ(f.seq, pc.wseq + (uint64_t)i);
        CHECK_EQ(f.len, iov[i].len);
        CHECK_EQ(f.topic, iov[i].topic);
        CHECK_EQ(f.ts_ns, 2);
        CHECK(check_pat(f.data, (uint64_t)i, f.len));
    }
    CHECK_RC(fb_ring_read_next(R.r, &pc.rd, &f), FB_RING_EMPTY);
    CHECK_OKISH(fb_ring_read_end(R.r, &pc.rd));
    ring_free(&R);

    /* byte-limited partial batch, and a batch that wraps with padding inside */
    p = mkparams(4096, 256, 1000);
    RING(R, p);
    pc_init(&pc, &R, 1);
    for (int i = 0; i < 5; i++)
        iov[i].len = 1000; /* 1032-byte records: 3 fit in 4096 */
    /* a batch bigger than the whole ring can never fit: TOO_LARGE (not FULL) */
    written = 0;
    CHECK_RC(fb_ring_write_batch(R.r, iov, 5, 9, 0, &first, &written), FB_RING_TOO_LARGE);
    CHECK_EQ(stats_of(&R).published, 0);
    /* 3 fit an empty ring but only 2 fit now: FULL, nothing written */
    CHECK_OKISH(pc_put(&pc, 1000));
    CHECK_RC(fb_ring_write_batch(R.r, iov, 3, 9, 0, &first, &written), FB_RING_FULL);
    CHECK_EQ(stats_of(&R).published, 1);
    CHECK_EQ(pc_drain(&pc), 1);
    uint64_t base = pc.last_pos + 1032;
    written = 0;
    CHECK_OKISH(fb_ring_write_batch(R.r, iov, 5, 9, FB_WRITE_PARTIAL, &first, &written));
    CHECK_EQ(written, 3);
    CHECK_EQ(first, p.start_seq + 1);
    pc.wseq += 3;
    /* PARTIAL with nothing fitting now is FULL, even when the whole batch could
     * never fit: the caller is meant to wait and write the prefix later */
    written = 0;
    CHECK_RC(fb_ring_write_batch(R.r, iov, 5, 9, FB_WRITE_PARTIAL, &first, &written), FB_RING_FULL);
    CHECK_EQ(written, 0);
    CHECK_RC(fb_ring_write_batch_wait(R.r, iov, 5, 9, FB_WRITE_PARTIAL, &first, &written, 10 * MS, 0, NULL),
             FB_RING_TIMEOUT);
    CHECK_EQ(stats_of(&R).published, 4);
    CHECK_RC(fb_ring_read_begin(R.r, &pc.rd), FB_RING_OK);
    for (int i = 0; i < 3; i++) {
        REQUIRE_RC(fb_ring_read_next(R.r, &pc.rd, &f), FB_RING_OK);
        CHECK_EQ(f.seq, p.start_seq + 1 + (uint64_t)i);
        CHECK_EQ(f.pos, i < 2 ? base + (uint64_t)i * 1032 : base + 3064); /* 3rd wraps */
        CHECK(check_pat(f.data, (uint64_t)i, 1000));
    }
    CHECK_OKISH(fb_ring_read_end(R.r, &pc.rd));
    /* now at 4096 + 1032; move to offset 3096 with two 1032-byte records */
    CHECK_OKISH(pc_put(&pc, 1000));
    CHECK_OKISH(pc_put(&pc, 1000));
    pc.rseq = pc.wseq - 2;
    CHECK_EQ(pc_drain(&pc), 2);
    CHECK_EQ((pc.last_pos + 1032) % 4096, 3096);
    uint64_t at = pc.last_pos + 1032;
    for (int i = 0; i < 3; i++)
        iov[i].len = 600; /* 632-byte records from 3096: the second one wraps */
    written = 0;
    CHECK_OKISH(fb_ring_write_batch(R.r, iov, 3, 10, 0, &first, &written));
    CHECK_EQ(written, 3);
    CHECK_EQ(first, pc.wseq);
    CHECK_RC(fb_ring_read_begin(R.r, &pc.rd), FB_RING_OK);
    const uint64_t want[3] = {at, at + 1000, at + 1000 + 632};
    for (int i = 0; i < 3; i++) {
        REQUIRE_RC(fb_ring_read_next(R.r, &pc.rd, &f), FB_RING_OK);
        CHECK_EQ(f.seq, first + (uint64_t)i);
        CHECK_EQ(f.pos, want[i]);
        CHECK_EQ(f.len, 600);
        CHECK(check_pat(f.data, (uint64_t)i, 600));
    }
    CHECK_RC(fb_ring_read_next(R.r, &pc.rd, &f), FB_RING_EMPTY);
    CHECK_OKISH(fb_ring_read_end(R.r, &pc.rd));
    ring_free(&R);
}

/* ------------------------------------------------------------------------- */
/* Claim / commit and dead producers                                          */

static void test_claim_commit(void)
{
    fb_ring_params_t p = mkparams(65536, 1024, 2000);
    ring_t R;
    RING(R, p);
    static pc_t pc;
    pc_init(&pc, &R, 1);
    fb_claim_t a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    REQUIRE_RC(fb_ring_claim(R.r, 100, 1, 11, &a), FB_RING_OK);
    REQUIRE_RC(fb_ring_claim(R.r, 50, 2, 22, &b), FB_RING_OK);
    CHECK_EQ(a.seq, p.start_seq);
    CHECK_EQ(b.seq, p.start_seq + 1);
    CHECK_EQ(a.len, 100);
    CHECK_EQ(b.len, 50);
    CHECK_EQ(b.pos, a.pos + rec_bytes(100));
    REQUIRE(in_region(&R, a.data, 100) && in_region(&R, b.data, 50));
    CHECK(b.data >= a.data + 100);
    fill_pat(b.data, b.seq, 50);
    CHECK_OKISH(fb_ring_commit(R.r, &b));
    /* b is committed, but a (before it) is not: nothing is readable */
    CHECK_EQ(fb_ring_readable(R.r, pc.slot), 0);
    fb_frame_t f;
    CHECK_RC(fb_ring_read_begin(R.r, &pc.rd), FB_RING_OK);
    CHECK_RC(fb_ring_read_next(R.r, &pc.rd, &f), FB_RING_EMPTY);
    CHECK_RC(fb_ring_read_end(R.r, &pc.rd), FB_RING_OK);
    fill_pat(a.data, a.seq, 100);
    CHECK_OKISH(fb_ring_commit(R.r, &a));
    CHECK_EQ(fb_ring_readable(R.r, pc.slot), 1);
    CHECK_RC(fb_ring_read_begin(R.r, &pc.rd), FB_RING_OK);
    REQUIRE_RC(fb_ring_read_next(R.r, &pc.rd, &f), FB_RING_OK);
    CHECK_EQ(f.seq, a.seq);
    CHECK_EQ(f.pos, a.pos);
    CHECK_EQ(f.len, 100);
    CHECK_EQ(f.topic, 1);
    CHECK_EQ(f.ts_ns, 11);
    CHECK(f.data == a.data);
    CHECK(check_pat(f.data, a.seq, 100));
    REQUIRE_RC(fb_ring_read_next(R.r, &pc.rd, &f), FB_RING_OK);
    CHECK_EQ(f.seq, b.seq);
    CHECK_EQ(f.len, 50);
    CHECK_EQ(f.topic, 2);
    CHECK_EQ(f.ts_ns, 22);
    CHECK(check_pat(f.data, b.seq, 50));
    CHECK_RC(fb_ring_read_next(R.r, &pc.rd, &f), FB_RING_EMPTY);
    CHECK_OKISH(fb_ring_read_end(R.r, &pc.rd));
    /* zero-length claim */
    fb_claim_t z;
    REQUIRE_RC(fb_ring_claim(R.r, 0, 3, 33, &z), FB_RING_OK);
    CHECK_EQ(z.seq, p.start_seq + 2);
    CHECK_OKISH(fb_ring_commit(R.r, &z));
    CHECK_RC(fb_ring_read_begin(R.r, &pc.rd), FB_RING_OK);
    REQUIRE_RC(fb_ring_read_next(R.r, &pc.rd, &f), FB_RING_OK);
    CHECK_EQ(f.seq, z.seq);
    CHECK_EQ(f.len, 0);
    CHECK_OKISH(fb_ring_read_end(R.r, &pc.rd));
    fb_ring_stats_t s = stats_of(&R);
    CHECK_EQ(s.published, 3);
    CHECK_EQ(s.published_bytes, 150);
    ring_free(&R);
}

/* A claim never committed is skipped after unblock_timeout_ns. */
static void test_unblock(void)
{
    fb_ring_params_t p = mkparams(65536, 1024, 2000);
    p.unblock_timeout_ns = 20 * MS;
    ring_t R;
    RING(R, p);
    static pc_t pc;
    pc_init(&pc, &R, 1);

    /* 1: one long read polls read_next until the dead claim is skipped */
    CHECK_OKISH(pc_put(&pc, 10)); /* X = start */
    fb_claim_t dead;
    uint64_t t_claim = now_ns();
    REQUIRE_RC(fb_ring_claim(R.r, 10, 0, 0, &dead), FB_RING_OK);
    CHECK_EQ(dead.seq, p.start_seq + 1);
    pc.wseq++; /* the dead claim took a sequence number */
    CHECK_OKISH(pc_put(&pc, 20));
    CHECK_OKISH(pc_put(&pc, 30));
    fb_frame_t f;
    CHECK_RC(fb_ring_read_begin(R.r, &pc.rd), FB_RING_OK);
    REQUIRE_RC(fb_ring_read_next(R.r, &pc.rd, &f), FB_RING_OK);
    pc_check_frame(&pc, &f);
    int rc = fb_ring_read_next(R.r, &pc.rd, &f);
    if (now_ns() - t_claim < 15 * MS)
        CHECK_RC(rc, FB_RING_EMPTY);
    uint64_t deadline = now_ns() + 3 * SEC;
    while (rc == FB_RING_EMPTY && now_ns() < deadline) {
        sleep_ns(1 * MS);
        rc = fb_ring_read_next(R.r, &pc.rd, &f);
    }
    REQUIRE_RC(rc, FB_RING_OK);
    CHECK(now_ns() - t_claim >= 20 * MS);
    CHECK_EQ(f.seq, p.start_seq + 2);
    pc.rseq = f.seq;
    pc_check_frame(&pc, &f);
    REQUIRE_RC(fb_ring_read_next(R.r, &pc.rd, &f), FB_RING_OK);
    pc_check_frame(&pc, &f);
    CHECK_RC(fb_ring_read_next(R.r, &pc.rd, &f), FB_RING_EMPTY);
    CHECK_OKISH(fb_ring_read_end(R.r, &pc.rd));
    CHECK_EQ(stats_of(&R).unblocked, 1);
    CHECK_OKISH(pc_put(&pc, 40));
    CHECK_EQ(pc_drain(&pc), 1);

    /* 2: a polling reader (begin / next / end, again and again) also gets past it */
    t_claim = now_ns();
    REQUIRE_RC(fb_ring_claim(R.r, 10, 0, 0, &dead), FB_RING_OK);
    pc.wseq++;
    CHECK_OKISH(pc_put(&pc, 50));
    uint64_t got = 0;
    deadline = now_ns() + 3 * SEC;
    while (got == 0 && now_ns() < deadline) {
        CHECK_RC(fb_ring_read_begin(R.r, &pc.rd), FB_RING_OK);
        rc = fb_ring_read_next(R.r, &pc.rd, &f);
        if (rc == FB_RING_OK) {
            CHECK_EQ(f.seq, dead.seq + 1);
            pc.rseq = f.seq;
            pc_check_frame(&pc, &f);
            got++;
        } else {
            CHECK_RC(rc, FB_RING_EMPTY);
        }
        CHECK_OKISH(fb_ring_read_end(R.r, &pc.rd));
        if (!got)
            sleep_ns(2 * MS);
    }
    CHECK_EQ(got, 1);
    CHECK(now_ns() - t_claim >= 20 * MS);
    CHECK_EQ(stats_of(&R).unblocked, 2);

    /* 3: a reader that sleeps in fb_ring_wait_readable(forever) when it finds
     * nothing is not stalled by a dead claim either */
    REQUIRE_RC(fb_ring_claim(R.r, 10, 0, 0, &dead), FB_RING_OK);
    pc.wseq++;
    CHECK_OKISH(pc_put(&pc, 60));
    got = 0;
    int waits = 0;
    while (got == 0 && waits < 100) {
        CHECK_RC(fb_ring_read_begin(R.r, &pc.rd), FB_RING_OK);
        rc = fb_ring_read_next(R.r, &pc.rd, &f);
        if (rc == FB_RING_OK) {
            pc.rseq = f.seq;
            pc_check_frame(&pc, &f);
            got++;
        }
        CHECK_OKISH(fb_ring_read_end(R.r, &pc.rd));
        if (!got) {
            waits++;
            CHECK_RC(fb_ring_wait_readable(R.r, pc.slot, -1, 0), FB_RING_OK);
        }
    }
    CHECK_EQ(got, 1);
    CHECK(waits <= 3);
    CHECK_EQ(stats_of(&R).unblocked, 3);
    /* the ring goes on normally */
    for (int i = 0; i < 100; i++)
        CHECK_OKISH(pc_put(&pc, (uint32_t)i));
    CHECK_EQ(pc_drain(&pc), 100);
    CHECK_EQ(stats_of(&R).unblocked, 3);
    ring_free(&R);
}

/* ------------------------------------------------------------------------- */
/* Hysteresis                                                                 */

static void test_hysteresis(void)
{
    fb_ring_params_t p = mkparams(65536, 1024, 1000);
    p.pause_hi = 0.5;
    p.resume_lo = 0.25;
    p.backpressure = 1.0;
    ring_t R;
    RING(R, p);
    static pc_t pc;
    pc_init(&pc, &R, 1);
    /* 40-byte records: 512 frames are 20480 bytes, far under half the bytes */
    for (int i = 1; i <= 600; i++) {
        int rc = pc_put(&pc, 1);
        if (i == 512)
            CHECK_RC(rc, FB_RING_PAUSED);
        else
            CHECK_RC(rc, FB_RING_OK);
        if (i == 511)
            CHECK_EQ(fb_ring_is_paused(R.r), 0);
    }
    CHECK_EQ(fb_ring_is_paused(R.r), 1);
    fb_ring_stats_t s = stats_of(&R);
    CHECK_EQ(s.paused, 1);
    CHECK_EQ(s.pause_events, 1);
    CHECK_EQ(s.resume_events, 0);
    CHECK_EQ(s.used_frames, 600);

    /* read one frame per begin/end: used goes 599 .. 256 (RESUMED) .. 200 */
    int resumed = 0;
    fb_frame_t f;
    for (int k = 1; k <= 400; k++) {
        CHECK_RC(fb_ring_read_begin(R.r, &pc.rd), FB_RING_OK);
        REQUIRE_RC(fb_ring_read_next(R.r, &pc.rd, &f), FB_RING_OK);
        pc_check_frame(&pc, &f);
        int rc = fb_ring_read_end(R.r, &pc.rd);
        if (600 - k == 256) {
            CHECK_RC(rc, FB_RING_RESUMED);
        } else {
            CHECK_RC(rc, FB_RING_OK);
        }
        if (rc == FB_RING_RESUMED)
            resumed++;
    }
    CHECK_EQ(resumed, 1);
    s = stats_of(&R);
    CHECK_EQ(s.paused, 0);
    CHECK_EQ(s.resume_events, 1);
    CHECK_EQ(s.used_frames, 200);
    CHECK_EQ(fb_ring_is_paused(R.r), 0);
    /* 200 -> 512 pauses again on the 312th write */
    for (int i = 1; i <= 320; i++) {
        int rc = pc_put(&pc, 1);
        if (i == 312)
            CHECK_RC(rc, FB_RING_PAUSED);
        else
            CHECK_RC(rc, FB_RING_OK);
    }
    s = stats_of(&R);
    CHECK_EQ(s.pause_events, 2);
    CHECK_EQ(s.paused, 1);
    /* one big read down to 0: that end resumes */
    CHECK_RC(fb_ring_read_begin(R.r, &pc.rd), FB_RING_OK);
    int n = 0;
    while (fb_ring_read_next(R.r, &pc.rd, &f) == FB_RING_OK) {
        pc_check_frame(&pc, &f);
        n++;
    }
    CHECK_EQ(n, 520);
    CHECK_RC(fb_ring_read_end(R.r, &pc.rd), FB_RING_RESUMED);
    s = stats_of(&R);
    CHECK_EQ(s.resume_events, 2);
    CHECK_EQ(s.paused, 0);
    ring_free(&R);
}

/* ------------------------------------------------------------------------- */
/* Broadcast and groups                                                       */

static void test_broadcast(void)
{
    fb_ring_params_t p = mkparams(65536, 1024, 2000);
    ring_t R;
    RING(R, p);
    static pc_t a, b;
    pc_init(&a, &R, 1);
    pc_init(&b, &R, 1);
    CHECK(a.slot != b.slot);
    CHECK_EQ(stats_of(&R).readers, 2);
    uint64_t rs = 42;
    for (int chunk = 0; chunk < 20; chunk++) {
        for (int i = 0; i < 25; i++) {
            CHECK_OKISH(pc_put(&a, (uint32_t)(rng_next(&rs) % 600)));
        }
        b.wseq = a.wseq;
        CHECK_EQ(pc_drain(&a), 25);
        if (chunk % 2 == 1)
            CHECK_EQ(pc_drain(&b), 50);
    }
    CHECK_EQ(a.rseq, p.start_seq + 500);
    CHECK_EQ(b.rseq, p.start_seq + 500);
    fb_reader_info_t ia, ib;
    CHECK_RC(fb_ring_reader_info(R.r, a.slot, &ia), FB_RING_OK);
    CHECK_RC(fb_ring_reader_info(R.r, b.slot, &ib), FB_RING_OK);
    CHECK_EQ(ia.seq, p.start_seq + 500);
    CHECK_EQ(ib.seq, p.start_seq + 500);
    CHECK_EQ(ia.pos, ib.pos);
    ring_free(&R);
}

/* Two members of one group split the frames; a broadcast reader sees them all. */
static void test_group(void)
{
    fb_ring_params_t p = mkparams(65536, 1024, 2000);
    ring_t R;
    RING(R, p);
    static pc_t w;
    pc_init(&w, &R, 1); /* also a broadcast reader */
    uint32_t s1 = 77, s2 = 88;
    REQUIRE_RC(fb_ring_reader_open(R.r, 0xfeedu, 11, &s1), FB_RING_OK);
    REQUIRE_RC(fb_ring_reader_open(R.r, 0xfeedu, 12, &s2), FB_RING_OK);
    CHECK_EQ(s1, s2);
    CHECK(s1 != w.slot);
    fb_reader_info_t info;
    CHECK_RC(fb_ring_reader_info(R.r, s1, &info), FB_RING_OK);
    CHECK_EQ(info.members, 2);
    CHECK_EQ(info.group_key, 0xfeedu);
    CHECK_EQ(info.active, 1);
    CHECK_EQ(stats_of(&R).readers, 2);

    const int N = 1000;
    for (int i = 0; i < N; i++)
        CHECK_OKISH(pc_put(&w, (uint32_t)(i % 50)));
    CHECK_EQ(pc_drain(&w), N);

    /* single-threaded interleaving of the two members' reads */
    struct member {
        fb_read_t rd;
        int state; /* 0 idle, 1 reading */
        int want, n;
        uint64_t seqs[16];
        uint64_t last;
        uint64_t got, retries;
    } m[2];
    memset(m, 0, sizeof m);
    m[0].rd.slot = s1;
    m[1].rd.slot = s2;
    uint8_t *seen = calloc((size_t)N, 1);
    REQUIRE(seen != NULL);
    uint64_t rs = 7, consumed = 0, steps = 0;
    while (consumed < (uint64_t)N && steps < 200000) {
        steps++;
        struct member *x = &m[rng_next(&rs) % 2];
        fb_frame_t f;
        if (x->state == 0) {
            CHECK_RC(fb_ring_read_begin(R.r, &x->rd), FB_RING_OK);
            x->state = 1;
            x->n = 0;
            x->want = (int)(1 + rng_next(&rs) % 16);
        } else if (x->n < x->want && rng_next(&rs) % 4 != 0) {
            int rc = fb_ring_read_next(R.r, &x->rd, &f);
            if (rc == FB_RING_OK) {
                CHECK(check_pat(f.data, f.seq, f.len));
                CHECK_EQ(f.len, (f.seq - p.start_seq) % 50);
                x->seqs[x->n++] = f.seq;
            } else if (rc == FB_RING_EMPTY) {
                x->want = x->n;
            } else {
                CHECK(rc == FB_RING_RETRY);
                x->want = x->n;
            }
        } else {
            int rc = fb_ring_read_end(R.r, &x->rd);
            x->state = 0;
            if (rc == FB_RING_RETRY) {
                x->retries++;
                continue; /* drop what was read */
            }
            CHECK_OKISH(rc);
            for (int i = 0; i < x->n; i++) {
                uint64_t k = x->seqs[i] - p.start_seq;
                REQUIRE(k < (uint64_t)N);
                CHECK_EQ(seen[k], 0);
                seen[k]++;
                CHECK(x->seqs[i] > x->last || x->last == 0);
                x->last = x->seqs[i];
                consumed++;
                x->got++;
            }
        }
    }
    CHECK_EQ(consumed, N);
    for (int i = 0; i < N; i++)
        if (seen[i] != 1) {
            CHECK_EQ(seen[i], 1);
            break;
        }
    CHECK(m[0].got > 0 && m[1].got > 0);
    CHECK(m[0].retries + m[1].retries > 0);
    printf("    member frames %llu + %llu, retries %llu + %llu\n", (unsigned long long)m[0].got,
           (unsigned long long)m[1].got, (unsigned long long)m[0].retries,
           (unsigned long long)m[1].retries);
    free(seen);
    CHECK_RC(fb_ring_reader_info(R.r, s1, &info), FB_RING_OK);
    CHECK_EQ(info.seq, p.start_seq + (uint64_t)N);
    CHECK_EQ(info.backlog, 0);
    /* leaving the group */
    CHECK_RC(fb_ring_reader_close(R.r, s1), FB_RING_OK);
    CHECK_RC(fb_ring_reader_info(R.r, s1, &info), FB_RING_OK);
    CHECK_EQ(info.members, 1);
    CHECK_EQ(info.active, 1);
    CHECK_RC(fb_ring_reader_close(R.r, s2), FB_RING_OK);
    CHECK_RC(fb_ring_reader_info(R.r, s1, &info), FB_RING_OK);
    CHECK_EQ(info.active, 0);
    CHECK_EQ(stats_of(&R).readers, 1);
    ring_free(&R);
}

/*
 * A group member that stays inside an old read while the other member moves
 * the cursor on and producers reuse the space must not touch the new records:
 * nobody died, so nothing may be unblocked and the group must lose nothing.
 * Layout (4096-byte area, 232-byte records): f0..f2 at 0, 232, 464; the
 * refill wraps and puts records at 4096, 4328 (= 232 + 4096) and 4560.
 */
static void test_group_stale_member(void)
{
    fb_ring_params_t p = mkparams(4096, 64, 1000);
    p.unblock_timeout_ns = 20 * MS;
    ring_t R;
    RING(R, p);
    static pc_t w, ga;
    pc_init(&w, &R, 0);
    pc_init(&ga, &R, 0);
    uint32_t s1, s2;
    REQUIRE_RC(fb_ring_reader_open(R.r, 0x51, 1, &s1), FB_RING_OK);
    REQUIRE_RC(fb_ring_reader_open(R.r, 0x51, 2, &s2), FB_RING_OK);
    REQUIRE_EQ(s1, s2);
    ga.rd.slot = s1;
    fb_read_t b;
    memset(&b, 0, sizeof b);
    b.slot = s2;
    for (int i = 0; i < 3; i++)
        CHECK_OKISH(pc_put(&w, 200));
    fb_frame_t f;
    CHECK_RC(fb_ring_read_begin(R.r, &ga.rd), FB_RING_OK);
    CHECK_RC(fb_ring_read_begin(R.r, &b), FB_RING_OK);
    REQUIRE_RC(fb_ring_read_next(R.r, &b, &f), FB_RING_OK); /* B holds f0, now at 232 */
    for (int i = 0; i < 3; i++) {
        REQUIRE_RC(fb_ring_read_next(R.r, &ga.rd, &f), FB_RING_OK);
        pc_check_frame(&ga, &f);
    }
    REQUIRE_RC(fb_ring_read_end(R.r, &ga.rd), FB_RING_OK); /* A consumed f0..f2 */
    uint64_t n = 0;
    while (pc_put(&w, 200) >= 0 && n < 100)
        n++;
    CHECK_EQ(n, 17);
    /* B polls inside its old read for longer than the unblock timeout */
    int rc1 = fb_ring_read_next(R.r, &b, &f);
    sleep_ns(30 * MS);
    int rc2 = fb_ring_read_next(R.r, &b, &f);
    CHECK_RC(fb_ring_read_end(R.r, &b), FB_RING_RETRY);
    /* A (the group) must get all 17 frames, intact */
    uint64_t got = 0, deadline = now_ns() + 300 * MS;
    while (got < n && now_ns() < deadline) {
        got += pc_read(&ga, n - got);
        if (got < n)
            sleep_ns(5 * MS);
    }
    CHECK_EQ(got, n);
    CHECK_EQ(ga.rseq, w.wseq);
    CHECK_EQ(stats_of(&R).unblocked, 0);
    if (failures_now())
        printf("    stale member's next: %s then %s\n", rc_name(rc1), rc_name(rc2));
    ring_free(&R);
}

static void test_reader_slots(void)
{
    fb_ring_params_t p = mkparams(4096, 64, 1000);
    p.max_readers = 2;
    ring_t R;
    RING(R, p);
    uint32_t a, b, c, g1, g2;
    REQUIRE_RC(fb_ring_reader_open(R.r, 0, 1, &a), FB_RING_OK);
    REQUIRE_RC(fb_ring_reader_open(R.r, 0, 2, &b), FB_RING_OK);
    CHECK(a != b && a < 2 && b < 2);
    CHECK_RC(fb_ring_reader_open(R.r, 0, 3, &c), FB_RING_NO_SLOT);
    CHECK_RC(fb_ring_reader_open(R.r, 5, 3, &c), FB_RING_NO_SLOT);
    CHECK_EQ(stats_of(&R).readers, 2);
    CHECK_RC(fb_ring_reader_close(R.r, a), FB_RING_OK);
    CHECK_EQ(stats_of(&R).readers, 1);
    REQUIRE_RC(fb_ring_reader_open(R.r, 5, 4, &g1), FB_RING_OK);
    REQUIRE_RC(fb_ring_reader_open(R.r, 5, 5, &g2), FB_RING_OK); /* joins: no new slot needed */
    CHECK_EQ(g1, g2);
    CHECK_EQ(stats_of(&R).readers, 2);
    CHECK_RC(fb_ring_reader_open(R.r, 6, 6, &c), FB_RING_NO_SLOT);
    fb_reader_info_t info;
    CHECK(fb_ring_reader_info(R.r, 2, &info) < 0);
    CHECK(fb_ring_reader_info(R.r, 1000, &info) < 0);
    CHECK(fb_ring_reader_close(R.r, 1000) < 0);
    CHECK(fb_ring_wait_readable(R.r, 1000, 0, 0) < 0);
    /* fb_ring_readable / read_begin / read_end do not range-check the slot
     * (not part of the contract): not called with a bad slot here */
    ring_free(&R);
}

/* ------------------------------------------------------------------------- */
/* Overwrite mode                                                             */

typedef struct {
    uint64_t seq, pos;
    uint32_t len, topic;
    int ok; /* copy complete */
    uint8_t data[600];
} ow_copy_t;

static uint32_t ow_len(uint64_t seq) { return (uint32_t)(8 + mix64(seq) % 500); }

/*
 * One overwrite-mode read: copies up to max frames, ends, discards copies below
 * intact_from when end says LAPPED, validates the rest. Returns the number of
 * valid frames; *last_seq is the highest sequence number accepted so far.
 */
static uint64_t ow_read(ring_t *R, fb_read_t *rd, ow_copy_t *cp, int max, uint64_t *last_seq,
                        uint64_t *discarded, int *lapped_end)
{
    int n = 0;
    fb_frame_t f;
    int rc = fb_ring_read_begin(R->r, rd);
    CHECK_RC(rc, FB_RING_OK);
    while (n < max) {
        rc = fb_ring_read_next(R->r, rd, &f);
        if (rc != FB_RING_OK)
            break;
        ow_copy_t *c = &cp[n++];
        c->seq = f.seq;
        c->pos = f.pos;
        c->len = f.len;
        c->topic = f.topic;
        c->ok = f.len <= sizeof c->data && in_region(R, f.data, f.len);
        if (c->ok)
            memcpy(c->data, f.data, f.len);
    }
    if (rc != FB_RING_OK && rc != FB_RING_EMPTY && rc != FB_RING_LAPPED)
        CHECK_RC(rc, FB_RING_OK);
    int erc = fb_ring_read_end(R->r, rd);
    *lapped_end = erc == FB_RING_LAPPED;
    if (erc != FB_RING_LAPPED)
        CHECK_OKISH(erc);
    uint64_t valid = 0;
    for (int i = 0; i < n; i++) {
        ow_copy_t *c = &cp[i];
        if (erc == FB_RING_LAPPED && c->pos < rd->intact_from) {
            (*discarded)++;
            continue;
        }
        CHECK(c->ok);
        if (!(c->seq > *last_seq || *last_seq == 0)) {
            CHECK(c->seq > *last_seq);
            if (failures_now() < 5)
                fprintf(stderr,
                        "    overwrite: kept seq %llu pos %llu after seq %llu; read %d/%d, end %s, "
                        "start_pos %llu intact_from %llu last_pos %llu rd.pos %llu\n",
                        (unsigned long long)c->seq, (unsigned long long)c->pos,
                        (unsigned long long)*last_seq, i, n, rc_name(erc),
                        (unsigned long long)rd->start_pos, (unsigned long long)rd->intact_from,
                        (unsigned long long)rd->last_pos, (unsigned long long)rd->pos);
        }
        CHECK_EQ(c->len, ow_len(c->seq));
        CHECK_EQ(c->topic, c->seq % 7);
        if (c->ok && c->len == ow_len(c->seq))
            CHECK(check_pat(c->data, c->seq, c->len));
        *last_seq = c->seq;
        valid++;
    }
    return valid;
}

static int ow_put(ring_t *R, uint64_t expect_seq)
{
    uint8_t buf[600];
    uint32_t len = ow_len(expect_seq);
    fill_pat(buf, expect_seq, len);
    uint64_t seq = 0;
    int rc = fb_ring_write(R->r, buf, len, (uint32_t)(expect_seq % 7), expect_seq, &seq);
    if (rc >= 0)
        CHECK_EQ(seq, expect_seq);
    return rc;
}

static void test_overwrite(void)
{
    fb_ring_params_t p = mkparams(4096, 64, 1000);
    p.flags = FB_RING_OVERWRITE;
    ring_t R;
    RING(R, p);
    uint32_t slot;
    REQUIRE_RC(fb_ring_reader_open(R.r, 0, 1, &slot), FB_RING_OK);
    fb_read_t rd;
    memset(&rd, 0, sizeof rd);
    rd.slot = slot;
    static ow_copy_t cp[256];
    uint64_t seq = p.start_seq, last = 0, discarded = 0, valid = 0;
    int lapped_end;

    /* 1: the reader is lapped many times before it reads at all */
    for (int i = 0; i < 300; i++)
        CHECK_OKISH(ow_put(&R, seq++)); /* never FULL */
    for (int k = 0; k < 100; k++) {
        uint64_t v = ow_read(&R, &rd, cp, 256, &last, &discarded, &lapped_end);
        valid += v;
        if (v == 0 && !lapped_end)
            break;
    }
    CHECK(valid > 0);
    CHECK(valid < 300);
    CHECK_EQ(last, seq - 1); /* it caught up with the tail */
    fb_reader_info_t info;
    CHECK_RC(fb_ring_reader_info(R.r, slot, &info), FB_RING_OK);
    CHECK_EQ(info.seq, seq);
    CHECK_EQ(info.backlog, 0);
    fb_ring_stats_t s = stats_of(&R);
    CHECK(s.lapped > 0);
    CHECK_EQ(s.published, 300);
    printf("    part 1: %llu valid frames of 300, %llu discarded, lapped %llu\n",
           (unsigned long long)valid, (unsigned long long)discarded, (unsigned long long)s.lapped);

    /* 2: lapped in the middle of a read: end says LAPPED, intact_from is past all */
    for (int i = 0; i < 5; i++)
        CHECK_OKISH(ow_put(&R, seq++));
    fb_frame_t f;
    uint64_t poss[3];
    CHECK_RC(fb_ring_read_begin(R.r, &rd), FB_RING_OK);
    for (int i = 0; i < 3; i++) {
        REQUIRE_RC(fb_ring_read_next(R.r, &rd, &f), FB_RING_OK);
        CHECK_EQ(f.seq, last + 1 + (uint64_t)i);
        poss[i] = f.pos;
    }
    for (int i = 0; i < 100; i++)
        CHECK_OKISH(ow_put(&R, seq++));
    CHECK_RC(fb_ring_read_end(R.r, &rd), FB_RING_LAPPED);
    for (int i = 0; i < 3; i++)
        CHECK(poss[i] < rd.intact_from);
    CHECK(stats_of(&R).lapped > s.lapped); /* a lap found by read_end is a lap too */
    /* and it goes on reading valid frames up to the tail */
    last = last + 3;
    valid = 0;
    for (int k = 0; k < 100; k++) {
        uint64_t v = ow_read(&R, &rd, cp, 256, &last, &discarded, &lapped_end);
        valid += v;
        if (v == 0 && !lapped_end)
            break;
    }
    CHECK(valid > 0);
    CHECK_EQ(last, seq - 1);

    /* 3: a reader that keeps up is never lapped and misses nothing */
    uint64_t lapped_before = stats_of(&R).lapped;
    for (int i = 0; i < 2000; i++) {
        CHECK_OKISH(ow_put(&R, seq++));
        uint64_t before = last;
        CHECK_EQ(ow_read(&R, &rd, cp, 4, &last, &discarded, &lapped_end), 1);
        CHECK_EQ(last, before + 1);
        CHECK(!lapped_end);
    }
    CHECK_EQ(stats_of(&R).lapped, lapped_before);
    ring_free(&R);
}

/*
 * Overwrite mode, reader caught up with a tail that stops less than 32 bytes
 * before the end of the lap (records of 1024, 1024, 1024, 1008 end at 4080): the reader
 * skips the last 16 bytes implicitly, so its cursor may run ahead of the tail.
 * It must then see nothing new, not a lap's worth of old frames again.
 */
static void test_overwrite_cursor_past_tail(void)
{
    fb_ring_params_t p = mkparams(4096, 64, 1000);
    p.flags = FB_RING_OVERWRITE;
    ring_t R;
    RING(R, p);
    static pc_t pc;
    pc_init(&pc, &R, 1);
    for (int i = 0; i < 4; i++)
        CHECK_OKISH(pc_put(&pc, i < 3 ? 992 : 976)); /* 3 x 1024 + 1008 = 4080 */
    CHECK_EQ(pc_drain(&pc), 4);
    CHECK_EQ(pc.last_pos + 1008, 4080);
    /* nothing new was written: */
    CHECK_EQ(fb_ring_readable(R.r, pc.slot), 0);
    CHECK_RC(fb_ring_wait_readable(R.r, pc.slot, 10 * MS, 0), FB_RING_TIMEOUT);
    CHECK_EQ(pc_drain(&pc), 0); /* a re-read would fail the seq check in pc_check_frame */
    CHECK_EQ(pc.rseq, pc.wseq);
    CHECK_EQ(stats_of(&R).lapped, 0);
    /* the next frame (at 4096) is read exactly once */
    CHECK_OKISH(pc_put(&pc, 10));
    CHECK_EQ(pc_drain(&pc), 1);
    CHECK_EQ(pc.last_pos, 4096);
    CHECK_EQ(pc_drain(&pc), 0);
    CHECK_EQ(stats_of(&R).lapped, 0);
    ring_free(&R);

    /* the same in normal mode (control) */
    p.flags = 0;
    RING(R, p);
    pc_init(&pc, &R, 1);
    for (int i = 0; i < 4; i++)
        CHECK_OKISH(pc_put(&pc, i < 3 ? 992 : 976));
    CHECK_EQ(pc_drain(&pc), 4);
    CHECK_EQ(fb_ring_readable(R.r, pc.slot), 0);
    CHECK_EQ(pc_drain(&pc), 0);
    CHECK_OKISH(pc_put(&pc, 10));
    CHECK_EQ(pc_drain(&pc), 1);
    CHECK_EQ(pc.last_pos, 4096);
    ring_free(&R);
}

typedef struct {
    ring_t *R;
    uint64_t n;
    volatile int done;
} ow_thread_t;

static void *ow_producer(void *arg)
{
    ow_thread_t *t = arg;
    uint64_t seq = t->R->p.start_seq;
    for (uint64_t i = 0; i < t->n; i++) {
        int rc = ow_put(t->R, seq++);
        if (rc < 0) {
            CHECK_OKISH(rc);
            break;
        }
        if (i % 64 == 0)
            sched_yield();
    }
    __atomic_store_n(&t->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* A slow reader racing a fast producer in overwrite mode: torn reads are discarded. */
static void test_overwrite_threaded(void)
{
    fb_ring_params_t p = mkparams(16384, 256, 1000);
    p.flags = FB_RING_OVERWRITE;
    ring_t R;
    RING(R, p);
    uint32_t slot;
    REQUIRE_RC(fb_ring_reader_open(R.r, 0, 1, &slot), FB_RING_OK);
    fb_read_t rd;
    memset(&rd, 0, sizeof rd);
    rd.slot = slot;
    ow_thread_t t = {&R, scaled(100000), 0};
    pthread_t th;
    REQUIRE_EQ(pthread_create(&th, NULL, ow_producer, &t), 0);
    static ow_copy_t cp[64];
    uint64_t last = 0, discarded = 0, valid = 0, lapped_ends = 0, iters = 0;
    uint64_t final_seq = p.start_seq + t.n - 1;
    uint64_t deadline = now_ns() + 60 * SEC;
    int lapped_end;
    while (last != final_seq && now_ns() < deadline && failures_now() < 40) {
        uint64_t v = ow_read(&R, &rd, cp, 1 + (int)(iters % 64), &last, &discarded, &lapped_end);
        valid += v;
        lapped_ends += (uint64_t)lapped_end;
        if (iters++ % 16 == 0)
            sleep_ns(20000); /* fall behind now and then */
        if (v == 0 && !lapped_end && __atomic_load_n(&t.done, __ATOMIC_ACQUIRE) &&
            fb_ring_readable(R.r, slot) == 0)
            break;
    }
    pthread_join(th, NULL);
    CHECK_EQ(last, final_seq);
    fb_ring_stats_t s = stats_of(&R);
    CHECK_EQ(s.published, t.n);
    printf("    %llu written, %llu valid, %llu discarded, %llu lapped ends, stats.lapped %llu\n",
           (unsigned long long)t.n, (unsigned long long)valid, (unsigned long long)discarded,
           (unsigned long long)lapped_ends, (unsigned long long)s.lapped);
    ring_free(&R);
}

/* ------------------------------------------------------------------------- */
/* Close and waiting                                                          */

typedef struct {
    ring_t *R;
    uint32_t slot;
    int64_t timeout;
    int kind; /* 0 wait_readable, 1 wait_writable, 2 wait on FB_SIGNAL_DATA, 3 write_wait */
    uint32_t seen;
    uint64_t record_bytes;
    volatile int started, done;
    int rc;
    uint64_t t_done;
} waiter_t;

static void *waiter_main(void *arg)
{
    waiter_t *w = arg;
    __atomic_store_n(&w->started, 1, __ATOMIC_RELEASE);
    switch (w->kind) {
    case 0:
        w->rc = fb_ring_wait_readable(w->R->r, w->slot, w->timeout, 0);
        break;
    case 1:
        /* the waiting loop a producer would run */
        do {
            w->rc = fb_ring_wait_writable(w->R->r, w->record_bytes, 1, w->timeout, 0);
        } while (w->rc == FB_RING_OK && !fb_ring_writable(w->R->r, w->record_bytes, 1));
        break;
    case 2:
        w->rc = fb_ring_wait(w->R->r, FB_SIGNAL_DATA, w->seen, w->timeout);
        break;
    case 3: {
        uint8_t buf[1000];
        uint64_t seq;
        fill_pat(buf, 999999, (uint32_t)(w->record_bytes - 32));
        w->rc = fb_ring_write_wait(w->R->r, buf, (uint32_t)(w->record_bytes - 32), 0, 0, &seq,
                                   w->timeout, 0);
        break;
    }
    }
    w->t_done = now_ns();
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static int waiter_start(waiter_t *w, pthread_t *th)
{
    w->started = w->done = 0;
    w->rc = 12345;
    if (pthread_create(th, NULL, waiter_main, w) != 0)
        return -1;
    while (!__atomic_load_n(&w->started, __ATOMIC_ACQUIRE))
        sleep_ns(100000);
    return 0;
}

static int is_done(waiter_t *w) { return __atomic_load_n(&w->done, __ATOMIC_ACQUIRE); }

static void test_close(void)
{
    fb_ring_params_t p = mkparams(4096, 64, 1000);
    ring_t R;
    RING(R, p);
    static pc_t pc;
    pc_init(&pc, &R, 1);
    CHECK_EQ(fb_ring_is_closed(R.r), 0);
    /* waiters blocked forever: a reader on an empty slot, a writer on a full ring,
     * a notifier on the data signal, a blocking write */
    uint32_t slot2;
    REQUIRE_RC(fb_ring_reader_open(R.r, 0, 2, &slot2), FB_RING_OK);
    waiter_t wr = {.R = &R, .slot = slot2, .timeout = -1, .kind = 0};
    pthread_t t_wr;
    REQUIRE_EQ(waiter_start(&wr, &t_wr), 0);
    for (int i = 0; i < 4; i++)
        CHECK_OKISH(pc_put(&pc, 992)); /* 4 x 1024 bytes: full (slot2 holds them) */
    CHECK_RC(pc_put(&pc, 992), FB_RING_FULL);
    CHECK_EQ(pc_drain(&pc), 4); /* pc's slot is empty; slot2 still holds the space */
    CHECK_RC(pc_put(&pc, 992), FB_RING_FULL);
    waiter_t ww = {.R = &R, .timeout = -1, .kind = 1, .record_bytes = 1024};
    waiter_t wd = {.R = &R, .timeout = -1, .kind = 2, .seen = fb_ring_watch(R.r, FB_SIGNAL_DATA)};
    waiter_t wb = {.R = &R, .timeout = -1, .kind = 3, .record_bytes = 1024};
    pthread_t t_ww, t_wd, t_wb;
    REQUIRE_EQ(waiter_start(&ww, &t_ww), 0);
    REQUIRE_EQ(waiter_start(&wd, &t_wd), 0);
    REQUIRE_EQ(waiter_start(&wb, &t_wb), 0);
    sleep_ns(50 * MS);
    /* wr may have been woken by the writes (slot2 has data now): that is fine */
    CHECK(!is_done(&ww));
    CHECK(!is_done(&wd));
    CHECK(!is_done(&wb));
    uint64_t t_close = now_ns();
    fb_ring_close(R.r);
    pthread_join(t_wr, NULL);
    pthread_join(t_ww, NULL);
    pthread_join(t_wd, NULL);
    pthread_join(t_wb, NULL);
    if (wr.t_done >= t_close)
        CHECK_RC(wr.rc, FB_RING_CLOSED);
    CHECK_RC(ww.rc, FB_RING_CLOSED);
    CHECK(wd.rc == FB_RING_CLOSED || wd.rc == FB_RING_OK);
    CHECK_RC(wb.rc, FB_RING_CLOSED);

    CHECK_EQ(fb_ring_is_closed(R.r), 1);
    CHECK_EQ(stats_of(&R).closed, 1);
    CHECK_RC(pc_put(&pc, 1), FB_RING_CLOSED);
    uint64_t seq;
    uint32_t w = 0;
    fb_claim_t c;
    fb_iov_t iov = {pc.buf, 1, 0};
    CHECK_RC(fb_ring_claim(R.r, 1, 0, 0, &c), FB_RING_CLOSED);
    CHECK_RC(fb_ring_write_batch(R.r, &iov, 1, 0, 0, &seq, &w), FB_RING_CLOSED);
    CHECK_RC(fb_ring_write_wait(R.r, pc.buf, 1, 0, 0, &seq, -1, 0), FB_RING_CLOSED);
    CHECK_RC(fb_ring_wait_readable(R.r, pc.slot, 10 * MS, 0), FB_RING_CLOSED);
    CHECK_RC(fb_ring_wait_readable(R.r, pc.slot, -1, 0), FB_RING_CLOSED);
    CHECK_RC(fb_ring_wait_writable(R.r, 40, 1, -1, 0), FB_RING_CLOSED);
    CHECK_EQ(fb_ring_readable(R.r, pc.slot), 1);
    CHECK_EQ(stats_of(&R).published, 4);
    ring_free(&R);

    /* a reader blocked forever on an empty ring is woken by close */
    RING(R, p);
    pc_init(&pc, &R, 1);
    waiter_t w0 = {.R = &R, .slot = pc.slot, .timeout = -1, .kind = 0};
    pthread_t t0;
    REQUIRE_EQ(waiter_start(&w0, &t0), 0);
    sleep_ns(30 * MS);
    CHECK(!is_done(&w0));
    fb_ring_close(R.r);
    pthread_join(t0, NULL);
    CHECK_RC(w0.rc, FB_RING_CLOSED);
    ring_free(&R);
}

/*
 * fb_ring_wake(r, FB_SIGNAL_DATA) wakes every waiting reader so it re-checks its
 * state (e.g. a closed subscription): a reader blocked in fb_ring_wait_readable must
 * return promptly after its subscription is closed and the readers are woken,
 * for a slot of its own and for a group member. (The waits use a 1.5 s timeout
 * so that a failure does not hang the suite.)
 */
static void test_wake_readers(void)
{
    fb_ring_params_t p = mkparams(4096, 64, 1000);
    ring_t R;
    RING(R, p);
    uint32_t own, g1, g2;
    REQUIRE_RC(fb_ring_reader_open(R.r, 0, 1, &own), FB_RING_OK);
    REQUIRE_RC(fb_ring_reader_open(R.r, 0x77, 2, &g1), FB_RING_OK);
    REQUIRE_RC(fb_ring_reader_open(R.r, 0x77, 3, &g2), FB_RING_OK);
    REQUIRE_EQ(g1, g2);
    for (int round = 0; round < 2; round++) {
        uint32_t slot = round == 0 ? own : g1;
        waiter_t w = {.R = &R, .slot = slot, .timeout = 3 * (int64_t)SEC / 2, .kind = 0};
        pthread_t th;
        REQUIRE_EQ(waiter_start(&w, &th), 0);
        sleep_ns(30 * MS);
        CHECK(!is_done(&w));
        uint64_t t0 = now_ns();
        CHECK_RC(fb_ring_reader_close(R.r, slot), FB_RING_OK);
        fb_ring_wake(R.r, FB_SIGNAL_DATA);
        pthread_join(th, NULL);
        uint64_t el = w.t_done - t0;
        CHECK(el < SEC / 2);
        CHECK(w.rc != FB_RING_TIMEOUT);
        if (el >= SEC / 2)
            printf("    %s: waiter returned %s after %.2f s\n", round == 0 ? "own slot" : "group member",
                   rc_name(w.rc), (double)el / 1e9);
    }
    ring_free(&R);
}

/*
 * The signal family, for every signal, on a private and on a shared-futex ring:
 * a wait with nothing happening times out; the ring's own event for a signal moves
 * it only while a waiter is watching (so fb_ring_wait and fb_ring_unwatch both
 * unregister), and never moves FB_SIGNAL_USER; fb_ring_wake moves it and releases
 * a sleeper; fb_ring_close releases every sleeper with CLOSED, and a wait after it
 * returns CLOSED at once.
 */
static const fb_signal_t all_signals[] = {FB_SIGNAL_DATA, FB_SIGNAL_SPACE, FB_SIGNAL_TRANSITION,
                                          FB_SIGNAL_USER, FB_SIGNAL_COUNTER};
#define N_SIGNALS ((int)(sizeof all_signals / sizeof all_signals[0]))

typedef struct {
    ring_t *R;
    fb_signal_t which;
    int64_t timeout;
    volatile int started, done;
    int rc;
    uint64_t t_done;
} sig_waiter_t;

static void *sig_waiter_main(void *arg)
{
    sig_waiter_t *w = arg;
    uint32_t seen = fb_ring_watch(w->R->r, w->which);
    __atomic_store_n(&w->started, 1, __ATOMIC_RELEASE);
    w->rc = fb_ring_wait(w->R->r, w->which, seen, w->timeout);
    w->t_done = now_ns();
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static int sig_waiter_start(sig_waiter_t *w, pthread_t *th)
{
    w->started = w->done = 0;
    w->rc = 12345;
    if (pthread_create(th, NULL, sig_waiter_main, w) != 0)
        return -1;
    while (!__atomic_load_n(&w->started, __ATOMIC_ACQUIRE))
        sleep_ns(100000);
    return 0;
}

/* What the ring does by itself that notifies `which` (FB_SIGNAL_USER: nothing does;
 * a user counter moving is tried instead). */
static void ring_event(pc_t *pc, uint32_t tid, fb_signal_t which)
{
    fb_ring_t *r = pc->R->r;
    switch (which) {
    case FB_SIGNAL_DATA:
        CHECK_OKISH(pc_put(pc, 8)); /* a commit */
        break;
    case FB_SIGNAL_SPACE:
        CHECK_OKISH(pc_put(pc, 8));
        CHECK(pc_drain(pc) >= 1); /* a read's end moves the cursor */
        break;
    case FB_SIGNAL_TRANSITION: {
        pc_drain(pc);
        int rc = FB_RING_OK;
        for (int i = 0; i < 8 && rc == FB_RING_OK; i++)
            rc = pc_put(pc, 992);
        CHECK_RC(rc, FB_RING_PAUSED); /* a pause ... */
        CHECK(pc_drain(pc) >= 1);     /* ... and a resume */
        CHECK_EQ(fb_ring_is_paused(r), 0);
        break;
    }
    case FB_SIGNAL_USER:
        fb_ring_user_add(r, 0, 1);
        break;
    case FB_SIGNAL_COUNTER:
        fb_ring_counter_add(r, tid, 1);
        break;
    }
}

static void signals_on(uint32_t flags)
{
    fb_ring_params_t p = mkparams(4096, 64, 1000); /* pauses at 3 records of 992 bytes */
    p.flags = flags;
    ring_t R;
    RING(R, p);
    static pc_t pc;
    pc_init(&pc, &R, 1);
    uint32_t tid = 0;
    REQUIRE_RC(fb_ring_topic_intern(R.r, "credits", 7, &tid), FB_RING_OK);
    for (int k = 0; k < N_SIGNALS; k++) {
        fb_signal_t which = all_signals[k];
        /* nothing happens: the wait times out (and, with timeout 0, does not sleep) */
        uint64_t t0 = now_ns();
        CHECK_RC(fb_ring_wait(R.r, which, fb_ring_watch(R.r, which), 10 * MS), FB_RING_TIMEOUT);
        CHECK(now_ns() - t0 >= 9 * MS);
        CHECK_RC(fb_ring_wait(R.r, which, fb_ring_watch(R.r, which), 0), FB_RING_TIMEOUT);

        /* nobody watching (the waits above and this unwatch unregistered): the ring's
         * event leaves the signal where it was */
        uint32_t v0 = fb_ring_watch(R.r, which);
        fb_ring_unwatch(R.r, which);
        ring_event(&pc, tid, which);
        uint32_t v1 = fb_ring_watch(R.r, which);
        CHECK_EQ(v1, v0);
        /* watched: the event moves it, and a wait on the value seen returns at once */
        ring_event(&pc, tid, which);
        t0 = now_ns();
        if (which == FB_SIGNAL_USER) {
            CHECK_RC(fb_ring_wait(R.r, which, v1, 0), FB_RING_TIMEOUT); /* only wake moves it */
        } else {
            CHECK_RC(fb_ring_wait(R.r, which, v1, 5 * (int64_t)SEC), FB_RING_OK);
            CHECK(now_ns() - t0 < SEC);
        }

        /* fb_ring_wake moves it, watched or not */
        v0 = fb_ring_watch(R.r, which);
        fb_ring_unwatch(R.r, which);
        fb_ring_wake(R.r, which);
        v1 = fb_ring_watch(R.r, which);
        CHECK(v1 != v0);
        CHECK_RC(fb_ring_wait(R.r, which, v0, 5 * (int64_t)SEC), FB_RING_OK);

        /* and releases a sleeper */
        sig_waiter_t w = {.R = &R, .which = which, .timeout = 5 * (int64_t)SEC};
        pthread_t th;
        REQUIRE_EQ(sig_waiter_start(&w, &th), 0);
        sleep_ns(30 * MS);
        CHECK(!__atomic_load_n(&w.done, __ATOMIC_ACQUIRE));
        uint64_t t_wake = now_ns();
        fb_ring_wake(R.r, which);
        pthread_join(th, NULL);
        CHECK_RC(w.rc, FB_RING_OK);
        CHECK(w.t_done - t_wake < SEC);
    }

    /* no such signal */
    CHECK_EQ(fb_ring_watch(R.r, (fb_signal_t)N_SIGNALS), 0);
    CHECK_RC(fb_ring_wait(R.r, (fb_signal_t)N_SIGNALS, 0, 0), FB_RING_EINVAL);
    fb_ring_unwatch(R.r, (fb_signal_t)N_SIGNALS);
    fb_ring_wake(R.r, (fb_signal_t)N_SIGNALS);

    /* close releases a sleeper on every signal */
    sig_waiter_t ws[N_SIGNALS];
    pthread_t ths[N_SIGNALS];
    for (int k = 0; k < N_SIGNALS; k++) {
        ws[k] = (sig_waiter_t){.R = &R, .which = all_signals[k], .timeout = 5 * (int64_t)SEC};
        REQUIRE_EQ(sig_waiter_start(&ws[k], &ths[k]), 0);
    }
    sleep_ns(30 * MS);
    for (int k = 0; k < N_SIGNALS; k++)
        CHECK(!__atomic_load_n(&ws[k].done, __ATOMIC_ACQUIRE));
    uint64_t t_close = now_ns();
    fb_ring_close(R.r);
    for (int k = 0; k < N_SIGNALS; k++) {
        pthread_join(ths[k], NULL);
        CHECK_RC(ws[k].rc, FB_RING_CLOSED);
        CHECK(ws[k].t_done - t_close < SEC);
    }
    /* after the close a wait returns CLOSED without sleeping */
    for (int k = 0; k < N_SIGNALS; k++) {
        uint64_t t0 = now_ns();
        CHECK_RC(fb_ring_wait(R.r, all_signals[k], fb_ring_watch(R.r, all_signals[k]),
                              5 * (int64_t)SEC),
                 FB_RING_CLOSED);
        CHECK(now_ns() - t0 < SEC);
    }
    ring_free(&R);
}

static void test_signals(void)
{
    signals_on(0);
    signals_on(FB_RING_SHARED);
}

static void test_waits(void)
{
    fb_ring_params_t p = mkparams(4096, 64, 1000);
    ring_t R;
    RING(R, p);
    static pc_t pc;
    pc_init(&pc, &R, 1);

    /* timeouts */
    uint64_t t0 = now_ns();
    CHECK_RC(fb_ring_wait_readable(R.r, pc.slot, 10 * MS, 0), FB_RING_TIMEOUT);
    uint64_t el = now_ns() - t0;
    CHECK(el >= 9 * MS);
    CHECK(el < 2 * SEC);
    CHECK_RC(fb_ring_wait_readable(R.r, pc.slot, 0, 100), FB_RING_TIMEOUT);
    {
        /* a cancel set before the wait (the reader closed by another thread just as
         * this one began to wait) ends even a wait forever at once */
        int cancel = 0;
        CHECK_RC(fb_ring_wait_readable_cancel(R.r, pc.slot, 5 * MS, 0, &cancel), FB_RING_TIMEOUT);
        cancel = 1;
        CHECK_RC(fb_ring_wait_readable_cancel(R.r, pc.slot, -1, 0, &cancel), FB_RING_OK);
    }
    t0 = now_ns();
    CHECK_RC(fb_ring_wait(R.r, FB_SIGNAL_DATA, fb_ring_watch(R.r, FB_SIGNAL_DATA), 10 * MS),
             FB_RING_TIMEOUT);
    CHECK(now_ns() - t0 >= 9 * MS);
    CHECK_RC(fb_ring_wait_writable(R.r, 40, 1, 10 * MS, 0), FB_RING_OK); /* plenty of room */

    /* a producer writing after 20 ms wakes a reader blocked forever */
    waiter_t w = {.R = &R, .slot = pc.slot, .timeout = -1, .kind = 0};
    pthread_t th;
    REQUIRE_EQ(waiter_start(&w, &th), 0);
    sleep_ns(20 * MS);
    CHECK(!is_done(&w));
    uint64_t t_write = now_ns();
    CHECK_OKISH(pc_put(&pc, 100));
    pthread_join(th, NULL);
    CHECK_RC(w.rc, FB_RING_OK);
    CHECK(w.t_done >= t_write);
    CHECK_EQ(fb_ring_readable(R.r, pc.slot), 1);
    CHECK_RC(fb_ring_wait_readable(R.r, pc.slot, 10 * MS, 0), FB_RING_OK);
    CHECK_EQ(pc_drain(&pc), 1);

    /* the same through the data signal (a notifier thread) */
    waiter_t wd = {.R = &R, .timeout = 5 * SEC, .kind = 2, .seen = fb_ring_watch(R.r, FB_SIGNAL_DATA)};
    REQUIRE_EQ(waiter_start(&wd, &th), 0);
    sleep_ns(50 * MS);
    CHECK(!is_done(&wd));
    CHECK_OKISH(pc_put(&pc, 100));
    pthread_join(th, NULL);
    CHECK_RC(wd.rc, FB_RING_OK);
    CHECK_EQ(pc_drain(&pc), 1);

    /* fill the ring; wait_writable times out, then wakes when the reader frees space */
    uint64_t nfill = 0;
    int frc;
    while ((frc = pc_put(&pc, 992)) >= 0 && nfill < 10)
        nfill++;
    CHECK_RC(frc, FB_RING_FULL);
    CHECK(nfill >= 3);
    t0 = now_ns();
    CHECK_RC(fb_ring_wait_writable(R.r, 1024, 1, 10 * MS, 0), FB_RING_TIMEOUT);
    CHECK(now_ns() - t0 >= 9 * MS);
    waiter_t ww = {.R = &R, .timeout = -1, .kind = 1, .record_bytes = 1024};
    REQUIRE_EQ(waiter_start(&ww, &th), 0);
    sleep_ns(20 * MS);
    CHECK(!is_done(&ww));
    uint64_t t_read = now_ns();
    CHECK_EQ(pc_read(&pc, 1), 1);
    pthread_join(th, NULL);
    CHECK_RC(ww.rc, FB_RING_OK);
    CHECK(ww.t_done >= t_read);
    CHECK_OKISH(pc_put(&pc, 992));

    /* fb_ring_write_wait: times out while full, completes once space is freed */
    uint64_t seq;
    t0 = now_ns();
    CHECK_RC(fb_ring_write_wait(R.r, pc.buf, 992, 0, 0, &seq, 10 * MS, 0), FB_RING_TIMEOUT);
    CHECK(now_ns() - t0 >= 9 * MS);
    waiter_t wb = {.R = &R, .timeout = -1, .kind = 3, .record_bytes = 1024};
    REQUIRE_EQ(waiter_start(&wb, &th), 0);
    sleep_ns(20 * MS);
    CHECK(!is_done(&wb));
    t_read = now_ns();
    CHECK_EQ(pc_read(&pc, 1), 1);
    pthread_join(th, NULL);
    CHECK_OKISH(wb.rc);
    CHECK(wb.t_done >= t_read);
    CHECK_EQ(stats_of(&R).published, 2 + nfill + 1 + 1);
    ring_free(&R);
}

/* ------------------------------------------------------------------------- */
/* Topics                                                                     */

static void test_topics(void)
{
    fb_ring_params_t p = mkparams(4096, 64, 1000);
    p.max_topics = 8;
    ring_t R;
    RING(R, p);
    uint32_t a = 0, a2 = 0, b = 0, ab = 0;
    CHECK_RC(fb_ring_topic_intern(R.r, "alpha", 5, &a), FB_RING_OK);
    CHECK_RC(fb_ring_topic_intern(R.r, "alpha", 5, &a2), FB_RING_OK);
    CHECK_RC(fb_ring_topic_intern(R.r, "beta", 4, &b), FB_RING_OK);
    CHECK_RC(fb_ring_topic_intern(R.r, "alphab", 5, &ab), FB_RING_OK); /* len 5: "alpha" */
    CHECK(a >= 1);
    CHECK(b >= 1);
    CHECK_EQ(a, a2);
    CHECK_EQ(ab, a);
    CHECK(a != b);
    const char *name = NULL;
    uint32_t len = 0;
    CHECK_RC(fb_ring_topic_name(R.r, a, &name, &len), FB_RING_OK);
    CHECK_EQ(len, 5);
    CHECK(name && memcmp(name, "alpha", 5) == 0);
    CHECK_RC(fb_ring_topic_name(R.r, b, &name, &len), FB_RING_OK);
    CHECK_EQ(len, 4);
    CHECK(name && memcmp(name, "beta", 4) == 0);
    CHECK(fb_ring_topic_name(R.r, 1000, &name, &len) < 0);

    /* lengths: MAX_LEN is fine, one more is too large */
    char longname[FB_RING_TOPIC_MAX_LEN + 2];
    memset(longname, 'x', sizeof longname);
    uint32_t l = 0;
    CHECK_RC(fb_ring_topic_intern(R.r, longname, FB_RING_TOPIC_MAX_LEN + 1, &l), FB_RING_TOO_LARGE);
    CHECK_RC(fb_ring_topic_intern(R.r, longname, FB_RING_TOPIC_MAX_LEN, &l), FB_RING_OK);
    CHECK_RC(fb_ring_topic_name(R.r, l, &name, &len), FB_RING_OK);
    CHECK_EQ(len, FB_RING_TOPIC_MAX_LEN);
    CHECK(name && memcmp(name, longname, FB_RING_TOPIC_MAX_LEN) == 0);
    l = 99;
    CHECK_RC(fb_ring_topic_intern(R.r, "", 0, &l), FB_RING_OK); /* id 0 is the empty topic */
    CHECK_EQ(l, 0);
    CHECK_RC(fb_ring_topic_name(R.r, 0, &name, &len), FB_RING_OK);
    CHECK_EQ(len, 0);
    /* binary names, distinct by one byte */
    uint32_t z1 = 0, z2 = 0;
    CHECK_RC(fb_ring_topic_intern(R.r, "a\0b", 3, &z1), FB_RING_OK);
    CHECK_RC(fb_ring_topic_intern(R.r, "a\0c", 3, &z2), FB_RING_OK);
    CHECK(z1 != z2 && z1 >= 1 && z2 >= 1);

    /* fill the table */
    uint32_t ids[64];
    int n = 0, rc = FB_RING_OK;
    char nm[16];
    for (int i = 0; i < 64; i++) {
        int k = snprintf(nm, sizeof nm, "fill-%d", i);
        rc = fb_ring_topic_intern(R.r, nm, (uint32_t)k, &ids[i]);
        if (rc != FB_RING_OK)
            break;
        n++;
    }
    CHECK_RC(rc, FB_RING_NO_SLOT);
    uint32_t total = (uint32_t)n + 5; /* alpha, beta, long, a\0b, a\0c */
    CHECK(total == p.max_topics || total == p.max_topics - 1);
    CHECK_EQ(stats_of(&R).topics, total);
    /* existing names still resolve; new ones do not */
    CHECK_RC(fb_ring_topic_intern(R.r, "beta", 4, &b), FB_RING_OK);
    CHECK_RC(fb_ring_topic_intern(R.r, "gamma", 5, &l), FB_RING_NO_SLOT);
    for (int i = 0; i < n; i++) {
        uint32_t again = 0;
        int k = snprintf(nm, sizeof nm, "fill-%d", i);
        CHECK_RC(fb_ring_topic_intern(R.r, nm, (uint32_t)k, &again), FB_RING_OK);
        CHECK_EQ(again, ids[i]);
        CHECK_RC(fb_ring_topic_name(R.r, ids[i], &name, &len), FB_RING_OK);
        CHECK(len == (uint32_t)k && memcmp(name, nm, len) == 0);
    }
    ring_free(&R);
}

#define TOPIC_THREADS 4
#define TOPIC_NAMES 40

typedef struct {
    ring_t *R;
    pthread_barrier_t *bar;
    int id;
    uint32_t ids[TOPIC_NAMES];
} topic_thread_t;

static void *topic_thread(void *arg)
{
    topic_thread_t *t = arg;
    uint64_t rs = 0x1000 + (uint64_t)t->id;
    int order[TOPIC_NAMES];
    for (int i = 0; i < TOPIC_NAMES; i++)
        order[i] = i;
    pthread_barrier_wait(t->bar);
    for (int rep = 0; rep < 50; rep++) {
        for (int i = TOPIC_NAMES - 1; i > 0; i--) {
            int j = (int)(rng_next(&rs) % (uint64_t)(i + 1));
            int x = order[i];
            order[i] = order[j];
            order[j] = x;
        }
        for (int i = 0; i < TOPIC_NAMES; i++) {
            char nm[32];
            int k = order[i];
            int len = snprintf(nm, sizeof nm, "topic/%d/%s", k, k % 2 ? "odd" : "even");
            uint32_t id = 0;
            int rc = fb_ring_topic_intern(t->R->r, nm, (uint32_t)len, &id);
            CHECK_RC(rc, FB_RING_OK);
            if (rep == 0)
                t->ids[k] = id;
            else
                CHECK_EQ(id, t->ids[k]);
        }
    }
    return NULL;
}

static void test_topics_concurrent(void)
{
    fb_ring_params_t p = mkparams(4096, 64, 1000);
    p.max_topics = 64;
    ring_t R;
    RING(R, p);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, TOPIC_THREADS);
    static topic_thread_t t[TOPIC_THREADS];
    pthread_t th[TOPIC_THREADS];
    for (int i = 0; i < TOPIC_THREADS; i++) {
        t[i].R = &R;
        t[i].bar = &bar;
        t[i].id = i;
        REQUIRE_EQ(pthread_create(&th[i], NULL, topic_thread, &t[i]), 0);
    }
    for (int i = 0; i < TOPIC_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&bar);
    for (int k = 0; k < TOPIC_NAMES; k++) {
        CHECK(t[0].ids[k] >= 1);
        for (int i = 1; i < TOPIC_THREADS; i++)
            CHECK_EQ(t[i].ids[k], t[0].ids[k]);
        for (int j = 0; j < k; j++)
            CHECK(t[0].ids[j] != t[0].ids[k]);
    }
    CHECK_EQ(stats_of(&R).topics, TOPIC_NAMES);
    ring_free(&R);
}

/* Topic counters: exact take semantics, conservation under concurrent takers, waits. */

#define CREDIT_THREADS 4
#define CREDIT_TOTAL 200000u

typedef struct {
    ring_t *R;
    uint32_t id;
    uint64_t taken;
} credit_thread_t;

static void *credit_taker(void *arg)
{
    credit_thread_t *t = arg;
    for (;;) {
        uint64_t got = fb_ring_counter_take(t->R->r, t->id, 3);
        if (got == 0) {
            uint32_t seen = fb_ring_watch(t->R->r, FB_SIGNAL_COUNTER);
            got = fb_ring_counter_take(t->R->r, t->id, 3);
            if (got) {
                fb_ring_unwatch(t->R->r, FB_SIGNAL_COUNTER);
            } else if (fb_ring_wait(t->R->r, FB_SIGNAL_COUNTER, seen, 20000000) == FB_RING_CLOSED) {
                got = fb_ring_counter_take(t->R->r, t->id, 3);
                if (got == 0)
                    break;
            }
        }
        t->taken += got;
    }
    return NULL;
}

static void test_topic_counters(void)
{
    fb_ring_params_t p = mkparams(4096, 64, 1000);
    p.max_topics = 8;
    ring_t R;
    RING(R, p);
    uint32_t a = 0, b = 0;
    CHECK_RC(fb_ring_topic_intern(R.r, "a", 1, &a), FB_RING_OK);
    CHECK_RC(fb_ring_topic_intern(R.r, "b", 1, &b), FB_RING_OK);
    CHECK_EQ(fb_ring_counter_get(R.r, a), 0);
    CHECK_EQ(fb_ring_counter_add(R.r, a, 5), 5);
    CHECK_EQ(fb_ring_counter_get(R.r, b), 0); /* counters are independent */
    CHECK_EQ(fb_ring_counter_take(R.r, a, 3), 3);
    CHECK_EQ(fb_ring_counter_take(R.r, a, 3), 2); /* only what is there */
    CHECK_EQ(fb_ring_counter_take(R.r, a, 3), 0);
    CHECK_EQ(fb_ring_counter_exchange(R.r, a, 7), 0);
    CHECK_EQ(fb_ring_counter_exchange(R.r, a, 0), 7);
    CHECK_EQ(fb_ring_counter_max(R.r, a, 9), 9);
    CHECK_EQ(fb_ring_counter_max(R.r, a, 4), 9); /* never lowered */
    CHECK_EQ(fb_ring_counter_max(R.r, a, 12), 12);
    CHECK_EQ(fb_ring_counter_exchange(R.r, a, 0), 12);
    /* ids outside 1..max_topics have no counter */
    CHECK_EQ(fb_ring_counter_add(R.r, 0, 1), 0);
    CHECK_EQ(fb_ring_counter_add(R.r, 9, 1), 0);
    CHECK_EQ(fb_ring_counter_get(R.r, 8), 0);
    CHECK_EQ(fb_ring_counter_add(R.r, 8, 2), 2); /* the last id has one */
    /* a wait with nothing added times out */
    uint32_t seen = fb_ring_watch(R.r, FB_SIGNAL_COUNTER);
    CHECK_RC(fb_ring_wait(R.r, FB_SIGNAL_COUNTER, seen, 1000000), FB_RING_TIMEOUT);
    seen = fb_ring_watch(R.r, FB_SIGNAL_COUNTER);
    fb_ring_counter_add(R.r, a, 1); /* an add after registering: the wait returns at once */
    CHECK_RC(fb_ring_wait(R.r, FB_SIGNAL_COUNTER, seen, 5000000000), FB_RING_OK);

    /* concurrent takers while the main thread adds: nothing created or lost */
    credit_thread_t t[CREDIT_THREADS];
    pthread_t th[CREDIT_THREADS];
    for (int i = 0; i < CREDIT_THREADS; i++) {
        t[i].R = &R;
        t[i].id = b;
        t[i].taken = 0;
        REQUIRE_EQ(pthread_create(&th[i], NULL, credit_taker, &t[i]), 0);
    }
    for (uint32_t k = 0; k < CREDIT_TOTAL; k += 2)
        fb_ring_counter_add(R.r, b, 2);
    uint64_t deadline = now_ns() + 10000000000ull;
    for (;;) {
        uint64_t sum = 0;
        for (int i = 0; i < CREDIT_THREADS; i++)
            sum += __atomic_load_n(&t[i].taken, __ATOMIC_RELAXED);
        if (sum + fb_ring_counter_get(R.r, b) >= CREDIT_TOTAL || now_ns() > deadline)
            break;
        usleep(1000);
    }
    fb_ring_close(R.r); /* wakes the sleeping takers */
    uint64_t sum = 0;
    for (int i = 0; i < CREDIT_THREADS; i++) {
        pthread_join(th[i], NULL);
        sum += t[i].taken;
    }
    CHECK_EQ(sum + fb_ring_counter_get(R.r, b), CREDIT_TOTAL);
    ring_free(&R);
}

/* ------------------------------------------------------------------------- */
/* Stats                                                                      */

static void test_stats(void)
{
    fb_ring_params_t p = mkparams(65536, 512, 2000);
    ring_t R;
    RING(R, p);
    static pc_t pc;
    pc_init(&pc, &R, 1);
    uint64_t bytes = 0, rbytes = 0;
    for (uint32_t i = 0; i < 100; i++) {
        CHECK_OKISH(pc_put(&pc, i * 3));
        bytes += i * 3;
        rbytes += rec_bytes(i * 3);
    }
    fb_ring_add_dropped(R.r, 5);
    fb_ring_add_dropped(R.r, 7);
    uint32_t tid;
    CHECK_RC(fb_ring_topic_intern(R.r, "t", 1, &tid), FB_RING_OK);
    fb_ring_stats_t s = stats_of(&R);
    CHECK_EQ(s.published, 100);
    CHECK_EQ(s.published_bytes, bytes);
    CHECK_EQ(s.dropped, 12);
    CHECK_EQ(s.used_frames, 100);
    CHECK_EQ(s.used_bytes, rbytes);
    CHECK_EQ(s.frame_capacity, 512);
    CHECK_EQ(s.data_bytes, 65536);
    CHECK_EQ(s.next_seq, p.start_seq + 100);
    CHECK_EQ(s.readers, 1);
    CHECK_EQ(s.topics, 1);
    CHECK_EQ(s.closed, 0);
    CHECK_EQ(s.unblocked, 0);
    CHECK_EQ(s.lapped, 0);
    CHECK_EQ(pc_read(&pc, 40), 40);
    s = stats_of(&R);
    CHECK_EQ(s.used_frames, 60);
    fb_reader_info_t info;
    CHECK_RC(fb_ring_reader_info(R.r, pc.slot, &info), FB_RING_OK);
    CHECK_EQ(info.backlog, 60);
    CHECK_EQ(info.seq, p.start_seq + 40);
    CHECK_EQ(info.lagged, 0);
    fb_ring_reader_add_lagged(R.r, pc.slot, 3);
    CHECK_RC(fb_ring_reader_info(R.r, pc.slot, &info), FB_RING_OK);
    CHECK_EQ(info.lagged, 3);
    CHECK_EQ(pc_drain(&pc), 60);
    s = stats_of(&R);
    CHECK_EQ(s.used_frames, 0);
    CHECK_EQ(s.used_bytes, 0);
    CHECK_EQ(s.published, 100);
    ring_free(&R);
}

/* ------------------------------------------------------------------------- */
/* Multi-threaded stress                                                      */

#define SP 4       /* producers */
#define SBATCH 32  /* frames per read */
#define SMAXLEN 256

typedef struct {
    ring_t R;
    uint64_t per_prod;
    uint64_t total;
    uint64_t deadline;
    int abort;               /* atomic */
    uint8_t *seen[SP];       /* group: frames consumed by the union of members */
    uint64_t group_consumed; /* atomic */
} stress_t;

typedef struct {
    stress_t *S;
    int id;
    uint64_t full_waits;
} sprod_t;

typedef struct {
    stress_t *S;
    int id;
    uint32_t slot;
    int group;
    uint64_t got, retries, waits, reads, lapped_next;
} sreader_t;

static uint32_t stress_len(int pid, uint64_t c) { return (uint32_t)(16 + mix64(((uint64_t)pid << 40) ^ c) % 241); }

static void stress_fill(uint8_t *b, int pid, uint64_t c, uint32_t len)
{
    uint32_t hdr[2] = {(uint32_t)pid, len};
    memcpy(b, hdr, 8);
    memcpy(b + 8, &c, 8);
    fill_pat(b + 16, ((uint64_t)pid << 48) ^ c, len - 16);
}

static int stress_aborted(stress_t *S)
{
    if (__atomic_load_n(&S->abort, __ATOMIC_RELAXED))
        return 1;
    if (now_ns() > S->deadline) {
        if (!__atomic_exchange_n(&S->abort, 1, __ATOMIC_RELAXED))
            CHECK(!"stress deadline exceeded");
        return 1;
    }
    return 0;
}

static void stress_fail(stress_t *S) { __atomic_store_n(&S->abort, 1, __ATOMIC_RELAXED); }

static void stress_producer_run(sprod_t *P)
{
    stress_t *S = P->S;
    fb_ring_t *r = S->R.r;
    uint8_t buf[8][SMAXLEN];
    uint64_t c = 0;
    uint64_t rs = 0x5eed + (uint64_t)P->id;
    while (c < S->per_prod) {
        if (stress_aborted(S))
            return;
        uint32_t len = stress_len(P->id, c);
        int rc;
        int mode = P->id % 4;
        if (mode == 3)
            mode = (rng_next(&rs) % 3 == 0) ? 1 : 0;
        if (mode == 0) {
            stress_fill(buf[0], P->id, c, len);
            uint64_t seq;
            rc = fb_ring_write(r, buf[0], len, (uint32_t)P->id + 1, c, &seq);
            if (rc >= 0)
                c++;
        } else if (mode == 1) {
            fb_claim_t cl;
            rc = fb_ring_claim(r, len, (uint32_t)P->id + 1, c, &cl);
            if (rc >= 0) {
                stress_fill(cl.data, P->id, c, len);
                int crc = fb_ring_commit(r, &cl);
                CHECK_OKISH(crc);
                c++;
            }
        } else {
            fb_iov_t iov[8];
            uint32_t n = (uint32_t)(1 + rng_next(&rs) % 8);
            if (n > S->per_prod - c)
                n = (uint32_t)(S->per_prod - c);
            for (uint32_t i = 0; i < n; i++) {
                uint32_t l = stress_len(P->id, c + i);
                stress_fill(buf[i], P->id, c + i, l);
                iov[i].data = buf[i];
                iov[i].len = l;
                iov[i].topic = (uint32_t)P->id + 1;
            }
            uint64_t first;
            uint32_t written = 0;
            rc = fb_ring_write_batch(r, iov, n, c, FB_WRITE_PARTIAL, &first, &written);
            if (rc >= 0) {
                CHECK(written >= 1 && written <= n);
                c += written;
            }
        }
        if (rc == FB_RING_FULL) {
            P->full_waits++;
            int wrc = fb_ring_wait_writable(r, fb_ring_record_bytes(len), 1, 50 * MS, 64);
            if (wrc != FB_RING_OK && wrc != FB_RING_TIMEOUT) {
                CHECK_RC(wrc, FB_RING_OK);
                stress_fail(S);
                return;
            }
        } else if (rc < 0) {
            CHECK_RC(rc, FB_RING_OK);
            stress_fail(S);
            return;
        }
    }
}

static void *stress_producer(void *arg)
{
    stress_producer_run(arg);
    return NULL;
}

typedef struct {
    uint64_t seq, ts;
    uint32_t len, topic;
    uint8_t data[SMAXLEN];
} scopy_t;

static void stress_reader_run(sreader_t *Rd)
{
    stress_t *S = Rd->S;
    fb_ring_t *r = S->R.r;
    fb_read_t rd;
    memset(&rd, 0, sizeof rd);
    rd.slot = Rd->slot;
    static __thread scopy_t cp[SBATCH];
    uint64_t next_c[SP], last_seq = 0;
    int64_t last_c[SP];
    for (int i = 0; i < SP; i++) {
        next_c[i] = 0;
        last_c[i] = -1;
    }
    uint64_t expect_seq = S->R.p.start_seq;
    for (;;) {
        if (Rd->group ? __atomic_load_n(&S->group_consumed, __ATOMIC_ACQUIRE) >= S->total
                      : Rd->got >= S->total)
            break;
        if (stress_aborted(S))
            return;
        int rc = fb_ring_read_begin(r, &rd);
        if (rc != FB_RING_OK) {
            CHECK_RC(rc, FB_RING_OK);
            stress_fail(S);
            return;
        }
        int n = 0;
        fb_frame_t f;
        while (n < SBATCH) {
            rc = fb_ring_read_next(r, &rd, &f);
            if (rc != FB_RING_OK)
                break;
            scopy_t *c = &cp[n++];
            c->seq = f.seq;
            c->ts = f.ts_ns;
            c->topic = f.topic;
            c->len = f.len;
            if (f.len <= SMAXLEN && in_region(&S->R, f.data, f.len))
                memcpy(c->data, f.data, f.len);
            else
                c->len = UINT32_MAX;
        }
        /* A group member whose read went stale (the other member moved the cursor
         * and producers reused the space) may see a torn record: the ring says
         * LAPPED even in normal mode. Tolerated, but then end must say RETRY. */
        int stale_next = Rd->group && (rc == FB_RING_RETRY || rc == FB_RING_LAPPED);
        if (rc != FB_RING_OK && rc != FB_RING_EMPTY && !stale_next) {
            CHECK_RC(rc, FB_RING_OK);
            stress_fail(S);
            return;
        }
        int erc = fb_ring_read_end(r, &rd);
        Rd->reads++;
        if (stale_next && rc == FB_RING_LAPPED) {
            Rd->lapped_next++;
            if (erc != FB_RING_RETRY) {
                CHECK_RC(erc, FB_RING_RETRY);
                stress_fail(S);
                return;
            }
        }
        if (erc == FB_RING_RETRY && Rd->group) {
            Rd->retries++;
            continue;
        }
        if (erc < 0) {
            CHECK_RC(erc, FB_RING_OK);
            stress_fail(S);
            return;
        }
        for (int i = 0; i < n; i++) {
            scopy_t *c = &cp[i];
            int bad = 0;
            if (c->len < 16 || c->len > SMAXLEN) {
                bad = 1;
            } else {
                uint32_t hdr[2];
                uint64_t cnt;
                memcpy(hdr, c->data, 8);
                memcpy(&cnt, c->data + 8, 8);
                int pid = (int)hdr[0];
                if (pid < 0 || pid >= SP || hdr[1] != c->len || c->topic != (uint32_t)pid + 1 ||
                    cnt >= S->per_prod || c->len != stress_len(pid, cnt) ||
                    !check_pat(c->data + 16, ((uint64_t)pid << 48) ^ cnt, c->len - 16)) {
                    bad = 1;
                } else if (Rd->group) {
                    if ((int64_t)cnt <= last_c[pid]) {
                        CHECK(!"group member: producer frames out of order");
                        bad = 1;
                    }
                    last_c[pid] = (int64_t)cnt;
                    if (__atomic_exchange_n(&S->seen[pid][cnt], 1, __ATOMIC_RELAXED) != 0) {
                        CHECK(!"group: frame delivered twice");
                        bad = 1;
                    }
                    if (c->seq <= last_seq) {
                        CHECK(!"group member: sequence numbers not increasing");
                        bad = 1;
                    }
                } else {
                    if (cnt != next_c[pid]) {
                        CHECK_EQ(cnt, next_c[pid]);
                        bad = 1;
                    }
                    next_c[pid] = cnt + 1;
                    if (c->seq != expect_seq) {
                        CHECK_EQ(c->seq, expect_seq);
                        bad = 1;
                    }
                }
            }
            if (bad) {
                if (note_failure())
                    fprintf(stderr, "    reader %d: bad frame seq %llu len %u topic %u\n", Rd->id,
                            (unsigned long long)c->seq, c->len, c->topic);
                stress_fail(S);
                return;
            }
            expect_seq = c->seq + 1;
            last_seq = c->seq;
            Rd->got++;
        }
        if (Rd->group && n > 0)
            __atomic_add_fetch(&S->group_consumed, (uint64_t)n, __ATOMIC_ACQ_REL);
        if (n == 0) {
            Rd->waits++;
            int wrc = fb_ring_wait_readable(r, Rd->slot, 20 * MS, 64);
            if (wrc != FB_RING_OK && wrc != FB_RING_TIMEOUT) {
                CHECK_RC(wrc, FB_RING_OK);
                stress_fail(S);
                return;
            }
        }
    }
    if (!Rd->group)
        for (int i = 0; i < SP; i++)
            CHECK_EQ(next_c[i], S->per_prod);
}

static void *stress_reader(void *arg)
{
    stress_reader_run(arg);
    return NULL;
}

static void stress_run(int group_mode)
{
    static stress_t S;
    memset(&S, 0, sizeof S);
    fb_ring_params_t p = mkparams(1 << 18, 1024, 1024);
    p.max_readers = 8;
    RING(S.R, p);
    S.per_prod = scaled(100000);
    S.total = S.per_prod * SP;
    S.deadline = now_ns() + (uint64_t)(90.0 * (g_scale < 1 ? 1 : g_scale)) * SEC;
    for (int i = 0; i < SP; i++) {
        S.seen[i] = calloc(S.per_prod, 1);
        REQUIRE(S.seen[i] != NULL);
    }
    /* broadcast: 3 readers; group: 2 members of one group + 1 broadcast reader */
    const int NR = 3;
    sreader_t rdr[3];
    memset(rdr, 0, sizeof rdr);
    for (int i = 0; i < NR; i++) {
        rdr[i].S = &S;
        rdr[i].id = i;
        rdr[i].group = group_mode && i < 2;
        REQUIRE_RC(fb_ring_reader_open(S.R.r, rdr[i].group ? 0xabcdu : 0, (uint64_t)i + 1, &rdr[i].slot),
                   FB_RING_OK);
    }
    if (group_mode)
        CHECK_EQ(rdr[0].slot, rdr[1].slot);
    sprod_t prod[SP];
    pthread_t tr[3], tp[SP];
    uint64_t t0 = now_ns();
    for (int i = 0; i < NR; i++)
        REQUIRE_EQ(pthread_create(&tr[i], NULL, stress_reader, &rdr[i]), 0);
    for (int i = 0; i < SP; i++) {
        prod[i].S = &S;
        prod[i].id = i;
        prod[i].full_waits = 0;
        REQUIRE_EQ(pthread_create(&tp[i], NULL, stress_producer, &prod[i]), 0);
    }
    for (int i = 0; i < SP; i++)
        pthread_join(tp[i], NULL);
    for (int i = 0; i < NR; i++)
        pthread_join(tr[i], NULL);
    double secs = (double)(now_ns() - t0) / 1e9;
    CHECK_EQ(__atomic_load_n(&S.abort, __ATOMIC_RELAXED), 0);
    fb_ring_stats_t s = stats_of(&S.R);
    CHECK_EQ(s.published, S.total);
    CHECK_EQ(s.next_seq, p.start_seq + S.total);
    CHECK_EQ(s.unblocked, 0);
    if (group_mode) {
        CHECK_EQ(rdr[0].got + rdr[1].got, S.total);
        CHECK_EQ(rdr[2].got, S.total);
        for (int i = 0; i < SP; i++)
            for (uint64_t c = 0; c < S.per_prod; c++)
                if (S.seen[i][c] != 1) {
                    CHECK_EQ(S.seen[i][c], 1);
                    break;
                }
    } else {
        for (int i = 0; i < NR; i++)
            CHECK_EQ(rdr[i].got, S.total);
    }
    uint64_t fw = 0;
    for (int i = 0; i < SP; i++)
        fw += prod[i].full_waits;
    printf("    %llu frames in %.2fs; FULL waits %llu; reader got/reads/waits/retries/next-LAPPED:",
           (unsigned long long)S.total, secs, (unsigned long long)fw);
    for (int i = 0; i < NR; i++)
        printf(" [%llu/%llu/%llu/%llu/%llu]", (unsigned long long)rdr[i].got,
               (unsigned long long)rdr[i].reads, (unsigned long long)rdr[i].waits,
               (unsigned long long)rdr[i].retries, (unsigned long long)rdr[i].lapped_next);
    printf("\n");
    for (int i = 0; i < SP; i++)
        free(S.seen[i]);
    ring_free(&S.R);
}

static void test_stress_broadcast(void) { stress_run(0); }
static void test_stress_group(void) { stress_run(1); }

/* ------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    void (*fn)(void);
} test_t;

static const test_t tests[] = {
    {"params", test_params},
    {"check", test_check},
    {"empty", test_empty},
    {"single_frame", test_single_frame},
    {"wrap_padding", test_wrap_padding},
    {"max_frame", test_max_frame},
    {"full", test_full},
    {"slowest_reader", test_slowest_reader},
    {"frame_limit", test_frame_limit},
    {"group_eviction", test_group_eviction},
    {"write_batch", test_write_batch},
    {"claim_commit", test_claim_commit},
    {"unblock", test_unblock},
    {"hysteresis", test_hysteresis},
    {"broadcast", test_broadcast},
    {"group", test_group},
    {"group_stale_member", test_group_stale_member},
    {"reader_slots", test_reader_slots},
    {"overwrite", test_overwrite},
    {"overwrite_cursor_past_tail", test_overwrite_cursor_past_tail},
    {"overwrite_threaded", test_overwrite_threaded},
    {"close", test_close},
    {"waits", test_waits},
    {"wake_readers", test_wake_readers},
    {"signals", test_signals},
    {"topics", test_topics},
    {"topics_concurrent", test_topics_concurrent},
    {"topic_counters", test_topic_counters},
    {"stats", test_stats},
    {"stress_broadcast", test_stress_broadcast},
    {"stress_group", test_stress_group},
};

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "\n*** watchdog: test timed out (hang): ";
    ssize_t rc = write(2, msg, sizeof msg - 1);
    const char *n = g_test_name;
    rc = write(2, n, strlen(n));
    rc = write(2, "\n", 1);
    (void)rc;
    _exit(3);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        char *end = NULL;
        g_scale = strtod(argv[1], &end);
        if (!end || *end || !(g_scale > 0)) {
            fprintf(stderr, "usage: %s [SCALE>0 [FILTER]]\n", argv[0]);
            return 2;
        }
    }
    const char *filter = argc > 2 ? argv[2] : NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGALRM, on_alarm);
    unsigned timeout = (unsigned)(60.0 + 120.0 * g_scale);
    int ran = 0, failed = 0;
    uint64_t t_all = now_ns();
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        if (filter && !strstr(tests[i].name, filter))
            continue;
        g_test_name = tests[i].name;
        unsigned long before = failures_now();
        printf("[ RUN  ] %s\n", tests[i].name);
        uint64_t t0 = now_ns();
        alarm(timeout);
        tests[i].fn();
        alarm(0);
        double ms = (double)(now_ns() - t0) / 1e6;
        unsigned long nf = failures_now() - before;
        ran++;
        if (nf) {
            failed++;
            printf("[ FAIL ] %s (%lu failed checks, %.0f ms)\n", tests[i].name, nf, ms);
        } else {
            printf("[   OK ] %s (%.0f ms)\n", tests[i].name, ms);
        }
    }
    printf("%d tests, %d failed, %lu failed checks, scale %g, %.1f s\n", ran, failed, failures_now(),
           g_scale, (double)(now_ns() - t_all) / 1e9);
    if (ran == 0) {
        fprintf(stderr, "no test matched the filter\n");
        return 2;
    }
    return failed ? 1 : 0;
}
