/*
 * fb_ring.c - see fb_ring.h for the contract.
 */
#define _GNU_SOURCE
#include "fb_ring.h"
#include "fb_atomic.h"

#include <errno.h>
#include <linux/futex.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ST_CLAIMED 1u
#define ST_DATA 2u
#define ST_PAD 3u
#define ST_UNBLOCKING 4u /* a reader is padding a claim whose header never came */
#define ST_MASK 7u

#define SLOT_FREE 0u
#define SLOT_OPENING 1u
#define SLOT_ACTIVE 2u

#define TOPIC_EMPTY 0u
#define TOPIC_WRITING 1u
#define TOPIC_READY 2u

#define HEADER_BYTES 4096u
#define FB_SLOT_PROCS 8u
#define PAGE 4096u

typedef struct {
    uint64_t commit; /* position | state; release-stored last */
    uint32_t len;
    uint32_t topic;
    uint64_t seq;
    uint64_t ts_ns;
} fb_rec_t;

_Static_assert(sizeof(fb_rec_t) == FB_RING_RECORD_HEADER, "record header is 32 bytes");

/* A wait queue in the header: a futex word, bumped by every wake and by every notify
 * while a waiter is registered, and the number of registered waiters. */
typedef struct {
    uint32_t signal; /* futex word */
    uint32_t waiters;
} fb_waitq_t;

/* One reader slot: the cursor on its own line (written by the reader, read by
 * producers), the bookkeeping on the next. */
typedef struct {
    fb_pair_t cursor;
    uint8_t _pad0[FB_CACHE_LINE - sizeof(fb_pair_t)];
    uint32_t state;
    uint32_t members;
    uint64_t group_key;
    uint64_t owner_pid;
    uint64_t owner_start;
    uint64_t lagged;
    uint64_t opened_ns;
    uint64_t dead_since_ns; /* monotonic time its owner was first seen dead, 0 = alive */
    uint32_t untracked;     /* group members of processes that found no procs entry */
    uint32_t _reserved;
    /* A group's member processes (registry lock held to change): evicted once all are dead. */
    struct {
        uint32_t pid;
        uint32_t count; /* members this process holds; 0 = entry free */
        uint64_t start;
    } procs[FB_SLOT_PROCS];
} fb_slot_t;

_Static_assert(sizeof(fb_slot_t) == 4 * FB_CACHE_LINE, "slot is four cache lines");

typedef struct {
    uint32_t state;
    uint32_t len;
    char name[FB_RING_TOPIC_MAX_LEN];
} fb_topic_t;

_Static_assert(sizeof(fb_topic_t) == FB_RING_TOPIC_ENTRY, "topic entry size");

struct fb_ring {
    /* Geometry: written once by fb_ring_init, read-only after. */
    struct FB_ALIGNED(FB_CACHE_LINE) {
        uint64_t magic;
        uint32_t version;
        uint32_t flags;
        uint64_t total_bytes;
        uint64_t readers_offset;
        uint64_t topics_offset;
        uint64_t data_offset;
        uint64_t data_bytes;
        uint64_t mask;
        uint64_t frame_capacity;
        uint32_t max_frame;
        uint32_t max_readers;
        uint32_t max_topics;
        uint32_t _r0;
        uint64_t limit_bytes, limit_frames;   /* backpressure threshold */
        uint64_t pause_bytes, pause_frames;   /* usage at or above pauses */
        uint64_t resume_bytes, resume_frames; /* usage at or below resumes */
        uint64_t unblock_timeout_ns;
        uint64_t start_seq;
        uint64_t dead_reader_timeout_ns;
        double pause_hi, resume_lo, backpressure;
        uint64_t created_ns;
        uint64_t creator_pid;
        uint64_t counters_offset; /* one cache line per topic id >= 1 */
    } geo;
    fb_pair_t tail FB_ALIGNED(FB_CACHE_LINE);      /* producers: next (position, seq) */
    fb_pair_t min_cache FB_ALIGNED(FB_CACHE_LINE); /* producers: a lower bound of the readers' cursors */
    fb_waitq_t data_q FB_ALIGNED(FB_CACHE_LINE);   /* FB_SIGNAL_DATA: readers wait for frames */
    fb_waitq_t space_q FB_ALIGNED(FB_CACHE_LINE);  /* FB_SIGNAL_SPACE: producers wait for space */
    struct FB_ALIGNED(FB_CACHE_LINE) {
        uint32_t paused;
        uint32_t closed;
        uint64_t registry_owner; /* pid holding the slot registry (open/close only) */
        uint32_t readers_hwm;    /* slots at or above this were never opened: scans stop here */
    } st;
    uint64_t published_bytes FB_ALIGNED(FB_CACHE_LINE);
    struct FB_ALIGNED(FB_CACHE_LINE) {
        uint64_t dropped;
        uint64_t pause_events;
        uint64_t resume_events;
        uint64_t unblocked;
        uint64_t lapped;
        uint64_t evicted;
    } ctr;
    struct FB_ALIGNED(FB_CACHE_LINE) {
        uint64_t value[FB_RING_USER_COUNTERS];
        uint32_t signal;        /* FB_SIGNAL_USER's futex word */
        fb_waitq_t transitions; /* FB_SIGNAL_TRANSITION: watchers of pause/resume */
        fb_waitq_t counters;    /* FB_SIGNAL_COUNTER: waiters for a topic counter to grow */
        uint32_t waiters;       /* FB_SIGNAL_USER's waiters: last, in what layout 3 left as
                                   padding (zero in every ring), so no other field moves */
    } user;
    /* Processes holding a mapping (pid, start time), for `framebus gc`. */
    struct {
        uint64_t pid;
        uint64_t start;
    } attached[FB_RING_MAX_ATTACHED] FB_ALIGNED(FB_CACHE_LINE);
};

_Static_assert(sizeof(struct fb_ring) <= FB_RING_META_OFFSET, "header leaves the meta area free");
_Static_assert(FB_RING_META_OFFSET + FB_RING_META_BYTES == HEADER_BYTES, "meta area ends the page");
_Static_assert(offsetof(struct fb_ring, geo) == 0, "magic first");
/* The futex words keep their layout-3 places: processes of builds before and after the
 * user queue got its waiters count still wait on and wake the same words. */
#define USER_AT(field) (offsetof(struct fb_ring, user.field) - offsetof(struct fb_ring, user))
_Static_assert(USER_AT(signal) == 32 && USER_AT(transitions) == 36 && USER_AT(counters) == 44 &&
                   USER_AT(waiters) == 52 && sizeof(((struct fb_ring *)0)->user) == FB_CACHE_LINE,
               "the user line's futex words stay where layout 3 put them");
#undef USER_AT

static inline uint8_t *base(const fb_ring_t *r) { return (uint8_t *)r; }
static inline fb_slot_t *slot_at(const fb_ring_t *r, uint32_t i)
{
    return (fb_slot_t *)(base(r) + r->geo.readers_offset) + i;
}
static inline fb_topic_t *topic_at(const fb_ring_t *r, uint32_t i)
{
    return (fb_topic_t *)(base(r) + r->geo.topics_offset) + i;
}
static inline uint64_t *counter_at(const fb_ring_t *r, uint32_t id)
{
    return (uint64_t *)(base(r) + r->geo.counters_offset + (uint64_t)(id - 1) * FB_CACHE_LINE);
}
static inline uint8_t *data_at(const fb_ring_t *r, uint64_t pos)
{
    return base(r) + r->geo.data_offset + (pos & r->geo.mask);
}
static inline int is_overwrite(const fb_ring_t *r) { return (r->geo.flags & FB_RING_OVERWRITE) != 0; }

static inline uint64_t rec_bytes(uint32_t len) { return ((uint64_t)FB_RING_RECORD_HEADER + len + 7u) & ~7ull; }
uint64_t fb_ring_record_bytes(uint32_t len) { return rec_bytes(len); }

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
uint64_t fb_now_ns(void) { return clock_ns(CLOCK_REALTIME); }
uint64_t fb_mono_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

/* ------------------------------------------------------------------ futex */

static int futex_wait(uint32_t *word, uint32_t seen, int64_t timeout_ns, int shared)
{
    struct timespec ts, *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tp = &ts;
    }
    long rc = syscall(SYS_futex, word, shared ? FUTEX_WAIT : FUTEX_WAIT_PRIVATE, seen, tp, NULL, 0);
    if (rc == 0)
        return FB_RING_OK;
    if (errno == ETIMEDOUT)
        return FB_RING_TIMEOUT;
    if (errno == EINTR)
        return FB_RING_INTR;
    return FB_RING_OK; /* EAGAIN: the word moved on before we slept */
}

static void futex_wake_all(uint32_t *word, int shared)
{
    syscall(SYS_futex, word, shared ? FUTEX_WAKE : FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static inline int shared_ring(const fb_ring_t *r) { return (r->geo.flags & FB_RING_SHARED) != 0; }

/* A wait queue as the helpers below see it: its futex word and its waiters count.
 * Every signal of fb_signal_t is one (see signal_queue). */
typedef struct {
    uint32_t *word;
    uint32_t *waiters;
} waitq_t;

static inline waitq_t signal_queue(fb_ring_t *r, fb_signal_t which)
{
    switch (which) {
    case FB_SIGNAL_DATA:
        return (waitq_t){&r->data_q.signal, &r->data_q.waiters};
    case FB_SIGNAL_SPACE:
        return (waitq_t){&r->space_q.signal, &r->space_q.waiters};
    case FB_SIGNAL_TRANSITION:
        return (waitq_t){&r->user.transitions.signal, &r->user.transitions.waiters};
    case FB_SIGNAL_USER:
        return (waitq_t){&r->user.signal, &r->user.waiters};
    case FB_SIGNAL_COUNTER:
        return (waitq_t){&r->user.counters.signal, &r->user.counters.waiters};
    }
    return (waitq_t){NULL, NULL};
}

/* Wakes the queue's sleepers if any registered. The caller's preceding store
 * (commit or cursor) must be ordered before the waiters load: the seq_cst
 * fence pairs with the fence in waitq_register (a Dekker pair: either the
 * waiter sees our store, or we see its registration). */
static inline void waitq_notify(fb_ring_t *r, waitq_t q)
{
    fb_fence_seq_cst();
    if (fb_load32_relaxed(q.waiters) != 0) {
        fb_fetch_add32(q.word, 1);
        futex_wake_all(q.word, shared_ring(r));
    }
}

/* Bumps the word and wakes every sleeper, registered or not (fb_ring_wake, close).
 * The bump is a seq_cst RMW: a waiter that loads it (acquire, in waitq_register)
 * sees what the caller stored before, e.g. a cancel flag or the close flag. */
static inline void waitq_wake(fb_ring_t *r, waitq_t q)
{
    fb_fetch_add32(q.word, 1);
    futex_wake_all(q.word, shared_ring(r));
}

static inline uint32_t waitq_register(waitq_t q)
{
    fb_fetch_add32(q.waiters, 1);
    fb_fence_seq_cst(); /* pairs with the fence in waitq_notify */
    /* acquire: pairs with the bump (a seq_cst RMW) in waitq_notify and the wakes; a
     * waiter that loads a bumped value then sees what the waker stored before it, so
     * its re-check cannot miss the change and sleep on a signal nobody bumps again */
    return fb_load32_acquire(q.word);
}

static inline void waitq_unregister(waitq_t q) { fb_fetch_sub32(q.waiters, 1); }

/* Sleeps while the word still holds seen, then unregisters (the register must precede). */
static inline int waitq_sleep(fb_ring_t *r, waitq_t q, uint32_t seen, int64_t timeout_ns)
{
    int w = futex_wait(q.word, seen, timeout_ns, shared_ring(r));
    waitq_unregister(q);
    return w;
}

static inline int64_t remaining_ns(int64_t timeout_ns, uint64_t deadline)
{
    if (timeout_ns < 0)
        return -1;
    uint64_t now = fb_mono_ns();
    return now >= deadline ? 0 : (int64_t)(deadline - now);
}

/* ------------------------------------------------------------ setup */

static uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
static int is_pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

int fb_ring_validate_params(const fb_ring_params_t *p)
{
    if (!p || !is_pow2(p->data_bytes) || p->data_bytes < FB_RING_MIN_DATA_BYTES ||
        p->data_bytes > (1ull << 40))
        return FB_RING_EINVAL;
    if (!is_pow2(p->frame_capacity) || p->frame_capacity > (1ull << 40))
        return FB_RING_EINVAL;
    if (p->max_readers < 1 || p->max_readers > FB_RING_MAX_READERS)
        return FB_RING_EINVAL;
    if (p->max_topics < 1 || p->max_topics > 65535)
        return FB_RING_EINVAL;
    if (!(p->resume_lo > 0.0 && p->resume_lo < p->pause_hi && p->pause_hi <= p->backpressure &&
          p->backpressure <= 1.0))
        return FB_RING_EINVAL;
    uint64_t limit = (uint64_t)(p->backpressure * (double)p->data_bytes);
    if (p->max_frame < 1 || 2 * rec_bytes(p->max_frame) > limit)
        return FB_RING_EINVAL;
    if (p->frame_limit == 0 && (uint64_t)(p->backpressure * (double)p->frame_capacity) < 2)
        return FB_RING_EINVAL;
    if (p->frame_limit > p->frame_capacity)
        return FB_RING_EINVAL;
    if (p->unblock_timeout_ns == 0)
        return FB_RING_EINVAL;
    return FB_RING_OK;
}

size_t fb_ring_required_size(const fb_ring_params_t *p)
{
    if (fb_ring_validate_params(p) != FB_RING_OK)
        return 0;
    uint64_t readers = round_up((uint64_t)p->max_readers * sizeof(fb_slot_t), PAGE);
    uint64_t topics =
        round_up((uint64_t)p->max_topics * (sizeof(fb_topic_t) + FB_CACHE_LINE), PAGE);
    return (size_t)(HEADER_BYTES + readers + topics + p->data_bytes);
}

static uint64_t ceil_frac(double f, uint64_t cap)
{
    double v = f * (double)cap;
    uint64_t u = (uint64_t)v;
    return ((double)u < v) ? u + 1 : u;
}

int fb_ring_init(void *mem, size_t len, const fb_ring_params_t *p)
{
    size_t need = fb_ring_required_size(p);
    if (!mem || need == 0 || len < need || ((uintptr_t)mem & (PAGE - 1)) != 0)
        return FB_RING_EINVAL;
    fb_ring_t *r = (fb_ring_t *)mem;
    r->geo.version = FB_RING_LAYOUT_VERSION;
    r->geo.flags = p->flags;
    r->geo.total_bytes = need;
    r->geo.readers_offset = HEADER_BYTES;
    r->geo.topics_offset = HEADER_BYTES + round_up((uint64_t)p->max_readers * sizeof(fb_slot_t), PAGE);
    r->geo.counters_offset = r->geo.topics_offset + (uint64_t)p->max_topics * sizeof(fb_topic_t);
    r->geo.data_offset =
        r->geo.topics_offset +
        round_up((uint64_t)p->max_topics * (sizeof(fb_topic_t) + FB_CACHE_LINE), PAGE);
    r->geo.data_bytes = p->data_bytes;
    r->geo.mask = p->data_bytes - 1;
    r->geo.frame_capacity = p->frame_capacity;
    r->geo.max_frame = p->max_frame;
    r->geo.max_readers = p->max_readers;
    r->geo.max_topics = p->max_topics;
    r->geo.limit_bytes = (uint64_t)(p->backpressure * (double)p->data_bytes);
    r->geo.limit_frames = p->frame_limit ? p->frame_limit
                                         : (uint64_t)(p->backpressure * (double)p->frame_capacity);
    r->geo.pause_bytes = ceil_frac(p->pause_hi, p->data_bytes);
    r->geo.pause_frames = ceil_frac(p->pause_hi, p->frame_capacity);
    r->geo.resume_bytes = (uint64_t)(p->resume_lo * (double)p->data_bytes);
    r->geo.resume_frames = (uint64_t)(p->resume_lo * (double)p->frame_capacity);
    r->geo.unblock_timeout_ns = p->unblock_timeout_ns;
    r->geo.start_seq = p->start_seq;
    r->geo.dead_reader_timeout_ns = p->dead_reader_timeout_ns;
    r->geo.pause_hi = p->pause_hi;
    r->geo.resume_lo = p->resume_lo;
    r->geo.backpressure = p->backpressure;
    r->geo.created_ns = fb_now_ns();
    r->geo.creator_pid = (uint64_t)getpid();
    r->tail.pos = 0;
    r->tail.seq = p->start_seq;
    r->min_cache = r->tail;
    /* release: everything above is visible before the magic that fb_ring_check
     * (possibly in another process) loads with acquire */
    fb_store_release(&r->geo.magic, FB_RING_MAGIC);
    return FB_RING_OK;
}

int fb_ring_check(const void *mem, size_t len)
{
    if (!mem || len < HEADER_BYTES)
        return FB_RING_EINVAL;
    const fb_ring_t *r = (const fb_ring_t *)mem;
    if (fb_load_acquire(&r->geo.magic) != FB_RING_MAGIC) /* pairs with the release in init */
        return FB_RING_BAD_MAGIC;
    if (r->geo.version != FB_RING_LAYOUT_VERSION)
        return FB_RING_BAD_VERSION;
    if (r->geo.total_bytes > len || !is_pow2(r->geo.data_bytes) ||
        r->geo.data_offset + r->geo.data_bytes != r->geo.total_bytes)
        return FB_RING_EINVAL;
    return FB_RING_OK;
}

void fb_ring_params(const fb_ring_t *r, fb_ring_params_t *out)
{
    out->data_bytes = r->geo.data_bytes;
    out->frame_capacity = r->geo.frame_capacity;
    out->max_frame = r->geo.max_frame;
    out->max_readers = r->geo.max_readers;
    out->max_topics = r->geo.max_topics;
    out->flags = r->geo.flags;
    out->pause_hi = r->geo.pause_hi;
    out->resume_lo = r->geo.resume_lo;
    out->backpressure = r->geo.backpressure;
    out->unblock_timeout_ns = r->geo.unblock_timeout_ns;
    out->frame_limit = r->geo.limit_frames; /* the effective limit */
    out->start_seq = r->geo.start_seq;
    out->dead_reader_timeout_ns = r->geo.dead_reader_timeout_ns;
}

/* ------------------------------------------------------- reader minimum */

/* The slowest active cursor, or the tail when no reader holds space. */
static fb_pair_t scan_min(fb_ring_t *r)
{
    fb_pair_t min = fb_pair_peek(&r->tail);
    /* acquire: pairs with the release in fb_ring_reader_open */
    uint32_t hwm = fb_load32_acquire(&r->st.readers_hwm);
    for (uint32_t i = 0; i < hwm; i++) {
        fb_slot_t *s = slot_at(r, i);
        if (fb_load32_acquire(&s->state) != SLOT_ACTIVE)
            continue;
        /* acquire: pairs with the reader's release of its cursor in read_end, so
         * its reads of the records happen before we let a producer reuse them */
        uint64_t pos = fb_load_acquire(&s->cursor.pos);
        uint64_t seq = fb_load_acquire(&s->cursor.seq);
        if (pos < min.pos)
            min.pos = pos;
        if (seq < min.seq)
            min.seq = seq;
    }
    return min;
}

static fb_pair_t refresh_min(fb_ring_t *r)
{
    fb_pair_t m = scan_min(r);
    /* relaxed: the cache is only ever a lower bound; a stale value is conservative */
    fb_store_relaxed(&r->min_cache.pos, m.pos);
    fb_store_relaxed(&r->min_cache.seq, m.seq);
    return m;
}

static inline fb_pair_t cached_min(fb_ring_t *r) { return fb_pair_peek(&r->min_cache); }

static inline int fits(const fb_ring_t *r, fb_pair_t min, uint64_t end_pos, uint64_t end_seq)
{
    return end_pos - min.pos <= r->geo.limit_bytes && end_seq - min.seq <= r->geo.limit_frames;
}

/* After a publish reaching end: pause if usage is at or above pause_hi. */
static int maybe_pause(fb_ring_t *r, uint64_t end_pos, uint64_t end_seq)
{
    if (fb_load32_relaxed(&r->st.paused))
        return FB_RING_OK;
    fb_pair_t m = cached_min(r);
    if (end_pos - m.pos < r->geo.pause_bytes && end_seq - m.seq < r->geo.pause_frames)
        return FB_RING_OK;
    m = refresh_min(r);
    fb_pair_t t = fb_pair_peek(&r->tail);
    if (t.pos - m.pos < r->geo.pause_bytes && t.seq - m.seq < r->geo.pause_frames)
        return FB_RING_OK;
    uint32_t expect = 0;
    if (!fb_cas_u32(&r->st.paused, &expect, 1))
        return FB_RING_OK;
    fb_fetch_add(&r->ctr.pause_events, 1);
    waitq_notify(r, signal_queue(r, FB_SIGNAL_TRANSITION));
    return FB_RING_PAUSED;
}

static int maybe_resume(fb_ring_t *r)
{
    if (!fb_load32_relaxed(&r->st.paused))
        return FB_RING_OK;
    fb_pair_t m = refresh_min(r);
    fb_pair_t t = fb_pair_peek(&r->tail);
    if (t.pos - m.pos > r->geo.resume_bytes || t.seq - m.seq > r->geo.resume_frames)
        return FB_RING_OK;
    uint32_t expect = 1;
    if (!fb_cas_u32(&r->st.paused, &expect, 0))
        return FB_RING_OK;
    fb_fetch_add(&r->ctr.resume_events, 1);
    waitq_notify(r, signal_queue(r, FB_SIGNAL_TRANSITION));
    return FB_RING_RESUMED;
}

/* ------------------------------------------------------------- producers */

static inline void write_pad(fb_ring_t *r, uint64_t pos, uint64_t bytes)
{
    if (bytes < FB_RING_RECORD_HEADER)
        return; /* readers skip a tail shorter than a header by themselves */
    fb_rec_t *rec = (fb_rec_t *)data_at(r, pos);
    rec->len = (uint32_t)(bytes - FB_RING_RECORD_HEADER);
    rec->topic = 0;
    rec->seq = 0;
    rec->ts_ns = 0;
    /* release: len before the state; pairs with the acquire in read_next */
    fb_store_release(&rec->commit, pos | ST_PAD);
}

/* Where one record of `need` bytes goes with the tail at `pos`: *pad gets the bytes
 * padded first (the room left before the end of the data area when the record does
 * not fit in it, else 0); returns the position after the record. */
static inline uint64_t place(const fb_ring_t *r, uint64_t pos, uint64_t need, uint64_t *pad)
{
    uint64_t room = r->geo.data_bytes - (pos & r->geo.mask);
    *pad = need > room ? room : 0;
    return pos + *pad + need;
}

int fb_ring_claim(fb_ring_t *r, uint32_t len, uint32_t topic, uint64_t ts_ns, fb_claim_t *out)
{
    if (fb_load32_relaxed(&r->st.closed))
        return FB_RING_CLOSED;
    if (len > r->geo.max_frame)
        return FB_RING_TOO_LARGE;
    uint64_t need = rec_bytes(len);
    int overwrite = is_overwrite(r);
    fb_pair_t t = fb_pair_peek(&r->tail);
    uint64_t pad, end;
    for (;;) {
        end = place(r, t.pos, need, &pad);
        /* the cached minimum is a lower bound: scan the readers only when it says no */
        if (!overwrite && !fits(r, cached_min(r), end, t.seq + 1) &&
            !fits(r, refresh_min(r), end, t.seq + 1))
            return FB_RING_FULL;
        fb_pair_t next = {end, t.seq + 1};
        /* full barrier: orders our claim before any write into the claimed
         * space; pairs with the acquire loads of the tail by readers */
        if (fb_pair_cas(&r->tail, &t, next))
            break;
    }
    if (pad)
        write_pad(r, t.pos, pad);
    uint64_t pos = t.pos + pad;
    fb_rec_t *rec = (fb_rec_t *)data_at(r, pos);
    rec->len = len;
    rec->topic = topic;
    rec->seq = t.seq;
    rec->ts_ns = ts_ns;
    /* release: len is valid before the claimed state; pairs with the acquire
     * in read_next, which needs len to skip a dead claim */
    fb_store_release(&rec->commit, pos | ST_CLAIMED);
    fb_fetch_add(&r->published_bytes, len);
    out->seq = t.seq;
    out->pos = pos;
    out->data = (uint8_t *)(rec + 1);
    out->len = len;
    return maybe_pause(r, end, t.seq + 1);
}

int fb_ring_commit(fb_ring_t *r, const fb_claim_t *c)
{
    fb_rec_t *rec = (fb_rec_t *)data_at(r, c->pos);
    /* release: publishes header and payload; pairs with the acquire in read_next */
    fb_store_release(&rec->commit, c->pos | ST_DATA);
    waitq_notify(r, signal_queue(r, FB_SIGNAL_DATA));
    return FB_RING_OK;
}

void fb_ring_abort(fb_ring_t *r, const fb_claim_t *c)
{
    fb_rec_t *rec = (fb_rec_t *)data_at(r, c->pos);
    /* release: pairs with the acquire in read_next, which then skips len bytes */
    fb_store_release(&rec->commit, c->pos | ST_PAD);
    waitq_notify(r, signal_queue(r, FB_SIGNAL_DATA));
}

int fb_ring_write(fb_ring_t *r, const void *data, uint32_t len, uint32_t topic, uint64_t ts_ns,
                  uint64_t *seq_out)
{
    fb_claim_t c;
    int rc = fb_ring_claim(r, len, topic, ts_ns, &c);
    if (rc < 0)
        return rc;
    if (len)
        memcpy(c.data, data, len);
    fb_ring_commit(r, &c);
    if (seq_out)
        *seq_out = c.seq;
    return rc;
}

/* How many of iov fit from tail t with reader minimum m; *end gets the end. */
static uint32_t batch_fit(const fb_ring_t *r, const fb_iov_t *iov, uint32_t n, fb_pair_t t,
                          fb_pair_t m, int bounded, uint64_t *end)
{
    uint64_t pos = t.pos, pad;
    uint32_t k;
    for (k = 0; k < n; k++) {
        uint64_t next = place(r, pos, rec_bytes(iov[k].len), &pad);
        if (bounded && !fits(r, m, next, t.seq + k + 1))
            break;
        if (!bounded && next - t.pos > r->geo.data_bytes)
            break;
        pos = next;
    }
    *end = pos;
    return k;
}

int fb_ring_write_batch(fb_ring_t *r, const fb_iov_t *iov, uint32_t n, uint64_t ts_ns,
                        uint32_t flags, uint64_t *first_seq, uint32_t *written)
{
    if (written)
        *written = 0;
    if (fb_load32_relaxed(&r->st.closed))
        return FB_RING_CLOSED;
    if (n == 0)
        return FB_RING_EINVAL;
    for (uint32_t i = 0; i < n; i++)
        if (iov[i].len > r->geo.max_frame)
            return FB_RING_TOO_LARGE;
    int overwrite = is_overwrite(r);
    int partial = (flags & FB_WRITE_PARTIAL) != 0;
    fb_pair_t t = fb_pair_peek(&r->tail);
    uint64_t end;
    uint32_t k;
    for (;;) {
        k = batch_fit(r, iov, n, t, cached_min(r), !overwrite, &end);
        if (k < n && !overwrite) /* the cache is a lower bound: rescan before giving up */
            k = batch_fit(r, iov, n, t, refresh_min(r), 1, &end);
        if (k < n && (!partial || k == 0)) {
            /* would it fit an empty ring at all? */
            uint64_t e2;
            uint32_t want = partial ? 1 : n;
            if (batch_fit(r, iov, want, t, t, !overwrite, &e2) < want)
                return FB_RING_TOO_LARGE;
            return FB_RING_FULL;
        }
        fb_pair_t next = {end, t.seq + k};
        /* full barrier, as in fb_ring_claim */
        if (fb_pair_cas(&r->tail, &t, next))
            break;
    }
    uint64_t pos = t.pos, pad;
    uint64_t seq = t.seq;
    uint64_t wrote_bytes = 0;
    for (uint32_t i = 0; i < k; i++) {
        uint64_t need = rec_bytes(iov[i].len);
        place(r, pos, need, &pad);
        if (pad) {
            write_pad(r, pos, pad);
            pos += pad;
        }
        fb_rec_t *rec = (fb_rec_t *)data_at(r, pos);
        rec->len = iov[i].len;
        rec->topic = iov[i].topic;
        rec->seq = seq + i;
        rec->ts_ns = ts_ns;
        if (iov[i].len)
            memcpy(rec + 1, iov[i].data, iov[i].len);
        /* release: publishes header and payload; pairs with the acquire in read_next */
        fb_store_release(&rec->commit, pos | ST_DATA);
        wrote_bytes += iov[i].len;
        pos += need;
    }
    fb_fetch_add(&r->published_bytes, wrote_bytes);
    waitq_notify(r, signal_queue(r, FB_SIGNAL_DATA));
    if (first_seq)
        *first_seq = seq;
    if (written)
        *written = k;
    return maybe_pause(r, end, seq + k);
}

int fb_ring_writable(fb_ring_t *r, uint64_t record_bytes, uint64_t frames)
{
    if (is_overwrite(r))
        return 1;
    fb_pair_t t = fb_pair_peek(&r->tail);
    uint64_t pad;
    uint64_t end = place(r, t.pos, record_bytes, &pad);
    return fits(r, refresh_min(r), end, t.seq + frames);
}

void fb_ring_add_dropped(fb_ring_t *r, uint64_t n) { fb_fetch_add(&r->ctr.dropped, n); }

int fb_ring_write_wait(fb_ring_t *r, const void *data, uint32_t len, uint32_t topic, uint64_t ts_ns,
                       uint64_t *seq_out, int64_t timeout_ns, uint32_t spin)
{
    /* only reached when the ring is full, so the batch path's cost does not matter */
    fb_iov_t one = {data, len, topic};
    return fb_ring_write_batch_wait(r, &one, 1, ts_ns, 0, seq_out, NULL, timeout_ns, spin, NULL);
}

int fb_ring_write_batch_wait(fb_ring_t *r, const fb_iov_t *iov, uint32_t n, uint64_t ts_ns,
                             uint32_t flags, uint64_t *first_seq, uint32_t *written,
                             int64_t timeout_ns, uint32_t spin, const volatile int *cancel)
{
    int rc = fb_ring_write_batch(r, iov, n, ts_ns, flags, first_seq, written);
    for (uint32_t i = 0; rc == FB_RING_FULL && i < spin; i++) {
        fb_cpu_relax();
        if ((i & 63) == 63)
            rc = fb_ring_write_batch(r, iov, n, ts_ns, flags, first_seq, written);
    }
    if (rc != FB_RING_FULL)
        return rc;
    uint64_t deadline = timeout_ns < 0 ? 0 : fb_mono_ns() + (uint64_t)timeout_ns;
    waitq_t space = signal_queue(r, FB_SIGNAL_SPACE);
    for (;;) {
        uint32_t seen = waitq_register(space);
        rc = fb_ring_write_batch(r, iov, n, ts_ns, flags, first_seq, written);
        if (rc != FB_RING_FULL) {
            waitq_unregister(space);
            return rc;
        }
        int64_t left = remaining_ns(timeout_ns, deadline);
        if (left == 0) {
            waitq_unregister(space);
            return FB_RING_TIMEOUT;
        }
        /* while full, look for dead readers now and then (they never free space) */
        int64_t nap = left;
        uint64_t check = r->geo.dead_reader_timeout_ns / 4 + 1;
        if (r->geo.dead_reader_timeout_ns && (nap < 0 || (uint64_t)nap > check))
            nap = (int64_t)check;
        int w = waitq_sleep(r, space, seen, nap);
        if (w == FB_RING_INTR)
            return FB_RING_INTR;
        if (cancel && *cancel)
            return FB_RING_CLOSED;
        if (r->geo.dead_reader_timeout_ns && fb_ring_evict_dead(r))
            refresh_min(r);
    }
}

/* --------------------------------------------------------- slot registry */

static int pid_alive(uint64_t pid)
{
    if (pid == 0 || pid > INT_MAX)
        return 0;
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/* Serialises opening and closing of slots (never the data path). A holder
 * that died is detected by its pid and replaced. */
static void registry_lock(fb_ring_t *r)
{
    uint64_t me = (uint64_t)getpid();
    uint64_t since = 0;
    for (;;) {
        uint64_t cur = 0;
        if (fb_cas_u64(&r->st.registry_owner, &cur, me))
            return;
        if (!since)
            since = fb_mono_ns();
        else if (fb_mono_ns() - since > 1000000000ull && cur != me && !pid_alive(cur))
            fb_cas_u64(&r->st.registry_owner, &cur, 0);
        sched_yield();
    }
}

static void registry_unlock(fb_ring_t *r) { fb_store_release(&r->st.registry_owner, 0); }

/* The tail as one consistent pair (a CAS that rewrites the same value). */
static fb_pair_t tail_snapshot(fb_ring_t *r)
{
    fb_pair_t t = fb_pair_peek(&r->tail);
    while (!fb_pair_cas(&r->tail, &t, t)) {
    }
    return t;
}

static int process_alive(uint64_t pid, uint64_t recorded_start);
static inline int is_group(const fb_slot_t *s) { return s->group_key != 0; }

/* Group membership per process (registry lock held). A process that finds no free
 * entry is counted as untracked, which keeps the group from ever being evicted. */
static void group_track(const fb_ring_t *r, fb_slot_t *s, uint64_t pid)
{
    if (!shared_ring(r))
        return; /* one process: nobody to outlive */
    uint64_t start = fb_proc_start_time(pid);
    int free_entry = -1;
    for (int i = 0; i < (int)FB_SLOT_PROCS; i++) {
        if (s->procs[i].count == 0) {
            if (free_entry < 0)
                free_entry = i;
        } else if (s->procs[i].pid == pid && s->procs[i].start == start) {
            s->procs[i].count++;
            return;
        } else if (!process_alive(s->procs[i].pid, s->procs[i].start)) {
            /* a dead process's members are gone: it cannot read or close them */
            fb_fetch_sub32(&s->members, s->procs[i].count);
            s->procs[i].count = 0;
            if (free_entry < 0)
                free_entry = i;
        }
    }
    if (pid == 0 || pid > UINT32_MAX || free_entry < 0) {
        s->untracked++;
        return;
    }
    s->procs[free_entry].pid = (uint32_t)pid;
    s->procs[free_entry].start = start;
    s->procs[free_entry].count = 1;
}

static void group_untrack(const fb_ring_t *r, fb_slot_t *s, uint64_t pid)
{
    if (!shared_ring(r))
        return;
    for (int i = 0; i < (int)FB_SLOT_PROCS; i++) {
        if (s->procs[i].count && s->procs[i].pid == pid) {
            s->procs[i].count--;
            return;
        }
    }
    if (s->untracked)
        s->untracked--;
}

/* Every member process of the group is dead (and all were tracked). */
static int group_dead(const fb_ring_t *r, const fb_slot_t *s)
{
    if (!shared_ring(r) || s->untracked)
        return 0;
    for (int i = 0; i < (int)FB_SLOT_PROCS; i++)
        if (s->procs[i].count && process_alive(s->procs[i].pid, s->procs[i].start))
            return 0;
    return 1;
}

int fb_ring_reader_open(fb_ring_t *r, uint64_t group_key, uint64_t pid, uint32_t *slot_out)
{
    registry_lock(r);
    uint32_t free_slot = UINT32_MAX;
    for (uint32_t i = 0; i < r->geo.max_readers; i++) {
        fb_slot_t *s = slot_at(r, i);
        uint32_t st = fb_load32_acquire(&s->state);
        if (st == SLOT_FREE) {
            if (free_slot == UINT32_MAX)
                free_slot = i;
        } else if (group_key != 0 && st == SLOT_ACTIVE && s->group_key == group_key) {
            fb_fetch_add32(&s->members, 1);
            group_track(r, s, pid);
            registry_unlock(r);
            *slot_out = i;
            return FB_RING_OK;
        }
    }
    if (free_slot == UINT32_MAX) {
        registry_unlock(r);
        return FB_RING_NO_SLOT;
    }
    fb_slot_t *s = slot_at(r, free_slot);
    if (free_slot + 1 > r->st.readers_hwm)
        fb_store32_release(&r->st.readers_hwm, free_slot + 1); /* before the slot turns active */
    s->group_key = group_key;
    s->members = 1;
    s->owner_pid = group_key ? 0 : pid; /* a group's members may live in several processes */
    s->owner_start = s->owner_pid ? fb_proc_start_time(pid) : 0;
    s->dead_since_ns = 0;
    s->lagged = 0;
    s->opened_ns = fb_now_ns();
    s->untracked = 0;
    memset(s->procs, 0, sizeof s->procs);
    if (group_key)
        group_track(r, s, pid);
    fb_pair_t t = tail_snapshot(r);
    s->cursor = t;
    /* seq_cst: producers scanning from now on hold space for this cursor */
    __atomic_store_n(&s->state, SLOT_ACTIVE, __ATOMIC_SEQ_CST);
    fb_fence_seq_cst();
    /* A producer that scanned before the store above saw a minimum no later
     * than the tail now, so it cannot overwrite anything from here on. */
    t = tail_snapshot(r);
    fb_store_release(&s->cursor.seq, t.seq);
    fb_store_release(&s->cursor.pos, t.pos);
    registry_unlock(r);
    *slot_out = free_slot;
    return FB_RING_OK;
}

int fb_ring_reader_close(fb_ring_t *r, uint32_t slot)
{
    if (slot >= r->geo.max_readers)
        return FB_RING_EINVAL;
    fb_slot_t *s = slot_at(r, slot);
    registry_lock(r);
    if (fb_load32_acquire(&s->state) != SLOT_ACTIVE) {
        registry_unlock(r);
        return FB_RING_EINVAL;
    }
    if (is_group(s))
        group_untrack(r, s, (uint64_t)getpid());
    if (fb_fetch_sub32(&s->members, 1) == 1) {
        /* release: the cursor no longer holds space; producers pick this up on their next scan */
        fb_store32_release(&s->state, SLOT_FREE);
    }
    registry_unlock(r);
    int rc = maybe_resume(r);
    waitq_notify(r, signal_queue(r, FB_SIGNAL_SPACE));
    return rc;
}

/* From /proc/<pid>/stat: the start time (field 22), and whether it is a zombie (a
 * killed process its parent has not reaped yet: dead for our purposes). */
static uint64_t proc_stat(uint64_t pid, int *zombie)
{
    char path[64], buf[1024];
    *zombie = 0;
    snprintf(path, sizeof path, "/proc/%llu/stat", (unsigned long long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p || p[1] != ' ')
        return 0;
    *zombie = p[2] == 'Z' || p[2] == 'X';
    /* after ") " come fields 3, 4, ...; starttime is field 22 */
    int field = 2;
    for (p++; *p && field < 21; p++)
        if (*p == ' ')
            field++;
    return strtoull(p, NULL, 10);
}

uint64_t fb_proc_start_time(uint64_t pid)
{
    int zombie;
    return proc_stat(pid, &zombie);
}

/* Alive: the pid exists, is not a zombie, and (when both are known) started when
 * the recorded process did, so a reused pid does not count. */
static int process_alive(uint64_t pid, uint64_t recorded_start)
{
    if (!pid_alive(pid))
        return 0;
    int zombie;
    uint64_t start = proc_stat(pid, &zombie);
    if (zombie)
        return 0;
    return start == 0 || recorded_start == 0 || start == recorded_start;
}

static int owner_alive(const fb_slot_t *s) { return process_alive(s->owner_pid, s->owner_start); }

int fb_ring_evict_dead(fb_ring_t *r)
{
    uint64_t timeout = r->geo.dead_reader_timeout_ns;
    if (timeout == 0)
        return 0;
    int evicted = 0;
    uint32_t hwm = fb_load32_acquire(&r->st.readers_hwm);
    for (uint32_t i = 0; i < hwm; i++) {
        fb_slot_t *s = slot_at(r, i);
        if (fb_load32_acquire(&s->state) != SLOT_ACTIVE)
            continue;
        if (!is_group(s) && s->owner_pid == 0)
            continue; /* an in-process reader: never evicted */
        if (is_group(s) ? !group_dead(r, s) : owner_alive(s)) {
            if (fb_load_relaxed(&s->dead_since_ns))
                fb_store_relaxed(&s->dead_since_ns, 0);
            continue;
        }
        uint64_t now = fb_mono_ns();
        uint64_t expect = 0;
        if (fb_cas_u64(&s->dead_since_ns, &expect, now) || now - expect < timeout)
            continue;
        registry_lock(r);
        if (fb_load32_acquire(&s->state) == SLOT_ACTIVE && s->dead_since_ns == expect) {
            s->members = 0;
            memset(s->procs, 0, sizeof s->procs);
            /* release: the cursor no longer holds space */
            fb_store32_release(&s->state, SLOT_FREE);
            fb_fetch_add(&r->ctr.evicted, 1);
            evicted++;
        }
        registry_unlock(r);
    }
    if (evicted) {
        maybe_resume(r);
        waitq_notify(r, signal_queue(r, FB_SIGNAL_SPACE));
    }
    return evicted;
}

int fb_ring_attach_register(fb_ring_t *r, uint64_t pid)
{
    uint64_t start = fb_proc_start_time(pid);
    for (int i = 0; i < (int)FB_RING_MAX_ATTACHED; i++) {
        uint64_t expect = 0;
        if (fb_cas_u64(&r->attached[i].pid, &expect, pid)) {
            fb_store_release(&r->attached[i].start, start);
            return i;
        }
        /* an entry of a process that died (or whose pid was reused) is taken over */
        if (!process_alive(expect, fb_load_acquire(&r->attached[i].start))) {
            if (fb_cas_u64(&r->attached[i].pid, &expect, pid)) {
                fb_store_release(&r->attached[i].start, start);
                return i;
            }
        }
    }
    return FB_RING_NO_SLOT;
}

void fb_ring_attach_unregister(fb_ring_t *r, int entry, uint64_t pid)
{
    if (entry < 0 || entry >= (int)FB_RING_MAX_ATTACHED)
        return;
    uint64_t expect = pid;
    fb_cas_u64(&r->attached[entry].pid, &expect, 0);
}

int fb_ring_attached_alive(const fb_ring_t *r)
{
    int alive = 0;
    for (int i = 0; i < (int)FB_RING_MAX_ATTACHED; i++) {
        uint64_t pid = fb_load_acquire(&r->attached[i].pid);
        if (pid && process_alive(pid, fb_load_acquire(&r->attached[i].start)))
            alive++;
    }
    return alive;
}

/* ------------------------------------------------------------- readers */

static inline uint64_t lap_start_after(const fb_ring_t *r, uint64_t tail_pos)
{
    /* the first lap boundary whose bytes are still intact */
    uint64_t lo = tail_pos > r->geo.data_bytes ? tail_pos - r->geo.data_bytes : 0;
    return round_up(lo, r->geo.data_bytes);
}

int fb_ring_read_begin(fb_ring_t *r, fb_read_t *rd)
{
    fb_slot_t *s = slot_at(r, rd->slot);
    fb_pair_t c;
    if (is_group(s)) {
        c = fb_pair_peek(&s->cursor);
        while (!fb_pair_cas(&s->cursor, &c, c)) {
        }
    } else {
        c.pos = fb_load_relaxed(&s->cursor.pos); /* our own cursor: no other writer */
        c.seq = fb_load_relaxed(&s->cursor.seq);
    }
    rd->start_pos = rd->pos = c.pos;
    rd->start_seq = rd->seq = c.seq;
    rd->intact_from = 0;
    rd->last_pos = c.pos;
    if (is_overwrite(r)) {
        uint64_t tail = fb_load_acquire(&r->tail.pos);
        if (tail > c.pos && tail - c.pos > r->geo.data_bytes) {
            rd->pos = lap_start_after(r, tail);
            rd->last_pos = rd->pos;
        }
    }
    return FB_RING_OK;
}

/* Find where a claim whose header was never written ends: the next record
 * start (a commit word naming its own position), a lap boundary, or the tail. */
static uint64_t dead_claim_end(const fb_ring_t *r, uint64_t pos, uint64_t tail)
{
    uint64_t lap_end = round_up(pos + 1, r->geo.data_bytes);
    uint64_t limit = tail < lap_end ? tail : lap_end;
    for (uint64_t x = pos + 8; x < limit; x += 8) {
        if (r->geo.data_bytes - (x & r->geo.mask) < FB_RING_RECORD_HEADER)
            break;
        uint64_t w = fb_load_acquire((const uint64_t *)data_at(r, x));
        uint64_t st = w & ST_MASK;
        if ((w & ~(uint64_t)ST_MASK) == x && st >= ST_CLAIMED && st <= ST_UNBLOCKING)
            return x;
    }
    return limit;
}

/* A claim left uncommitted past the unblock timeout becomes padding. */
static void unblock(fb_ring_t *r, uint64_t pos, uint64_t seen_commit, uint64_t tail)
{
    fb_rec_t *rec = (fb_rec_t *)data_at(r, pos);
    if (seen_commit == (pos | ST_UNBLOCKING))
        return; /* another reader is turning it into padding */
    if (seen_commit != (pos | ST_CLAIMED)) {
        /* no header was written: take the record over before writing its length */
        uint64_t end = dead_claim_end(r, pos, tail);
        if (end - pos < FB_RING_RECORD_HEADER)
            return;
        uint64_t expect = seen_commit;
        if (!fb_cas_u64(&rec->commit, &expect, pos | ST_UNBLOCKING))
            return;
        rec->len = (uint32_t)(end - pos - FB_RING_RECORD_HEADER);
        seen_commit = pos | ST_UNBLOCKING;
    }
    uint64_t expect = seen_commit;
    if (fb_cas_u64(&rec->commit, &expect, pos | ST_PAD))
        fb_fetch_add(&r->ctr.unblocked, 1);
}

int fb_ring_read_next(fb_ring_t *r, fb_read_t *rd, fb_frame_t *out)
{
    const uint64_t data_bytes = r->geo.data_bytes;
    for (;;) {
        uint64_t pos = rd->pos;
        uint64_t room = data_bytes - (pos & r->geo.mask);
        if (room < FB_RING_RECORD_HEADER) {
            rd->pos = pos + room;
            continue;
        }
        fb_rec_t *rec = (fb_rec_t *)data_at(r, pos);
        /* acquire: pairs with the producer's release of commit */
        uint64_t c = fb_load_acquire(&rec->commit);
        if (c == (pos | ST_DATA) || c == (pos | ST_PAD)) {
            uint32_t len = rec->len;
            uint64_t size = rec_bytes(len);
            if (size > room || (c == (pos | ST_DATA) && len > r->geo.max_frame)) {
                if (!is_overwrite(r))
                    return FB_RING_RETRY; /* a stale group member: its cursor moved on */
                return FB_RING_LAPPED;    /* torn by an overwriting producer */
            }
            rd->pos = pos + size;
            if (c == (pos | ST_PAD))
                continue;
            out->data = (const uint8_t *)(rec + 1);
            out->len = len;
            out->topic = rec->topic;
            out->seq = rec->seq;
            out->ts_ns = rec->ts_ns;
            out->pos = pos;
            rd->last_pos = pos;
            rd->seq = out->seq + 1;
            return FB_RING_OK;
        }
        /* acquire: a claimed tail beyond pos means a producer owns this record */
        uint64_t tail = fb_load_acquire(&r->tail.pos);
        if (tail <= pos)
            return FB_RING_EMPTY;
        if (is_overwrite(r) && tail - pos > data_bytes)
            return FB_RING_LAPPED;
        fb_slot_t *gs = slot_at(r, rd->slot);
        if (is_group(gs) && fb_load_acquire(&gs->cursor.pos) != rd->start_pos)
            return FB_RING_RETRY; /* another member moved on: this read is stale */
        uint64_t now = fb_mono_ns();
        if (rd->stall_pos != pos + 1) {
            rd->stall_pos = pos + 1; /* +1: position 0 is a valid stall */
            rd->stall_since_ns = now;
            return FB_RING_EMPTY;
        }
        if (now - rd->stall_since_ns < r->geo.unblock_timeout_ns)
            return FB_RING_EMPTY;
        unblock(r, pos, c, tail);
        rd->stall_pos = 0;
    }
}

int fb_ring_read_end(fb_ring_t *r, fb_read_t *rd)
{
    fb_slot_t *s = slot_at(r, rd->slot);
    rd->resumed = 0;
    if (rd->pos == rd->start_pos)
        return FB_RING_OK;
    uint64_t pos = rd->pos, seq = rd->seq;
    int lapped = 0;
    if (is_overwrite(r)) {
        fb_fence_acquire(); /* our copies of the records happen before this tail load */
        uint64_t tail = fb_load_relaxed(&r->tail.pos);
        rd->intact_from = tail > r->geo.data_bytes ? tail - r->geo.data_bytes : 0;
        if (rd->start_pos < rd->intact_from) {
            lapped = 1;
            if (rd->last_pos < rd->intact_from) {
                /* the chain of lengths (and the sequence numbers read) is
                 * untrustworthy: restart at a lap boundary, owing from start_seq */
                pos = lap_start_after(r, tail);
                seq = rd->start_seq;
            }
        }
    }
    if (is_group(s)) {
        fb_pair_t expect = {rd->start_pos, rd->start_seq};
        fb_pair_t next = {pos, seq};
        /* full barrier: our reads of the records happen before a producer
         * reuses the space; pairs with the acquire loads in scan_min */
        if (!fb_pair_cas(&s->cursor, &expect, next))
            return FB_RING_RETRY;
    } else {
        /* release: as above, pairs with the acquire loads in scan_min */
        fb_store_release(&s->cursor.seq, seq);
        fb_store_release(&s->cursor.pos, pos);
    }
    int rc = maybe_resume(r);
    rd->resumed = rc == FB_RING_RESUMED;
    waitq_notify(r, signal_queue(r, FB_SIGNAL_SPACE));
    if (lapped) {
        fb_fetch_add(&r->ctr.lapped, 1);
        return FB_RING_LAPPED;
    }
    return rc;
}

int fb_ring_readable(fb_ring_t *r, uint32_t slot)
{
    if (fb_load32_relaxed(&r->st.closed))
        return 1;
    fb_slot_t *s = slot_at(r, slot);
    uint64_t pos = fb_load_acquire(&s->cursor.pos);
    uint64_t tail = fb_load_acquire(&r->tail.pos);
    if (is_overwrite(r) && tail > pos && tail - pos > r->geo.data_bytes)
        return 1;
    for (int hops = 0; hops < 4; hops++) {
        if (pos >= tail)
            return 0;
        uint64_t room = r->geo.data_bytes - (pos & r->geo.mask);
        if (room < FB_RING_RECORD_HEADER) {
            pos += room;
            continue;
        }
        fb_rec_t *rec = (fb_rec_t *)data_at(r, pos);
        uint64_t c = fb_load_acquire(&rec->commit); /* pairs with the producer's release */
        if (c == (pos | ST_DATA))
            return 1;
        if (c != (pos | ST_PAD))
            return 0;
        uint64_t size = rec_bytes(rec->len);
        if (size > room)
            return 1; /* torn: let the reader find out */
        pos += size;
    }
    return 1;
}

void fb_ring_reader_add_lagged(fb_ring_t *r, uint32_t slot, uint64_t n)
{
    if (slot < r->geo.max_readers)
        fb_fetch_add(&slot_at(r, slot)->lagged, n);
}

int fb_ring_reader_info(const fb_ring_t *r, uint32_t slot, fb_reader_info_t *out)
{
    if (slot >= r->geo.max_readers)
        return FB_RING_EINVAL;
    fb_slot_t *s = slot_at(r, slot);
    out->active = fb_load32_acquire(&s->state) == SLOT_ACTIVE;
    out->pos = fb_load_acquire(&s->cursor.pos);
    out->seq = fb_load_acquire(&s->cursor.seq);
    uint64_t tail_seq = fb_load_acquire(&r->tail.seq);
    out->backlog = tail_seq > out->seq ? tail_seq - out->seq : 0;
    out->lagged = fb_load_relaxed(&s->lagged);
    out->group_key = s->group_key;
    out->owner_pid = s->owner_pid;
    out->members = fb_load32_relaxed(&s->members);
    return FB_RING_OK;
}

/* Has something changed that a waiting reader must look at? */
static int reader_should_wake(fb_ring_t *r, uint32_t slot, int *claim_pending,
                              const volatile int *cancel)
{
    if (fb_ring_readable(r, slot))
        return 1;
    if (cancel && __atomic_load_n(cancel, __ATOMIC_SEQ_CST))
        return 1;
    fb_slot_t *s = slot_at(r, slot);
    *claim_pending = fb_load_acquire(&r->tail.pos) > fb_load_acquire(&s->cursor.pos);
    return 0;
}

int fb_ring_wait_readable(fb_ring_t *r, uint32_t slot, int64_t timeout_ns, uint32_t spin)
{
    return fb_ring_wait_readable_cancel(r, slot, timeout_ns, spin, NULL);
}

int fb_ring_wait_readable_cancel(fb_ring_t *r, uint32_t slot, int64_t timeout_ns, uint32_t spin,
                                 const volatile int *cancel)
{
    if (slot >= r->geo.max_readers)
        return FB_RING_EINVAL;
    int pending = 0;
    if (reader_should_wake(r, slot, &pending, cancel))
        return fb_load32_relaxed(&r->st.closed) ? FB_RING_CLOSED : FB_RING_OK;
    for (uint32_t i = 0; i < spin; i++) {
        fb_cpu_relax();
        if ((i & 15) == 15 && fb_ring_readable(r, slot))
            return fb_load32_relaxed(&r->st.closed) ? FB_RING_CLOSED : FB_RING_OK;
    }
    uint64_t deadline = timeout_ns < 0 ? 0 : fb_mono_ns() + (uint64_t)timeout_ns;
    waitq_t data = signal_queue(r, FB_SIGNAL_DATA);
    for (;;) {
        uint32_t seen = waitq_register(data);
        if (reader_should_wake(r, slot, &pending, cancel)) {
            waitq_unregister(data);
            return fb_load32_relaxed(&r->st.closed) ? FB_RING_CLOSED : FB_RING_OK;
        }
        int64_t left = remaining_ns(timeout_ns, deadline);
        if (left == 0) {
            waitq_unregister(data);
            return FB_RING_TIMEOUT;
        }
        /* a pending claim may belong to a dead producer: come back in time to skip it */
        int64_t nap = left;
        if (pending && (nap < 0 || (uint64_t)nap > r->geo.unblock_timeout_ns))
            nap = (int64_t)r->geo.unblock_timeout_ns;
        int w = waitq_sleep(r, data, seen, nap);
        if (w == FB_RING_INTR)
            return FB_RING_INTR;
        if (w == FB_RING_OK) /* woken (data, a wake, close): the caller re-checks */
            return fb_load32_relaxed(&r->st.closed) ? FB_RING_CLOSED : FB_RING_OK;
        if (w == FB_RING_TIMEOUT && nap != left)
            return FB_RING_OK; /* the reader must look at the stalled claim */
    }
}

int fb_ring_wait_writable(fb_ring_t *r, uint64_t record_bytes, uint64_t frames, int64_t timeout_ns,
                          uint32_t spin)
{
    for (uint32_t i = 0; i <= spin; i++) {
        if (fb_load32_relaxed(&r->st.closed))
            return FB_RING_CLOSED;
        if (fb_ring_writable(r, record_bytes, frames))
            return FB_RING_OK;
        fb_cpu_relax();
    }
    uint64_t deadline = timeout_ns < 0 ? 0 : fb_mono_ns() + (uint64_t)timeout_ns;
    waitq_t space = signal_queue(r, FB_SIGNAL_SPACE);
    for (;;) {
        uint32_t seen = waitq_register(space);
        if (fb_load32_relaxed(&r->st.closed) || fb_ring_writable(r, record_bytes, frames)) {
            waitq_unregister(space);
            return fb_load32_relaxed(&r->st.closed) ? FB_RING_CLOSED : FB_RING_OK;
        }
        int64_t left = remaining_ns(timeout_ns, deadline);
        if (left == 0) {
            waitq_unregister(space);
            return FB_RING_TIMEOUT;
        }
        int w = waitq_sleep(r, space, seen, left);
        if (w == FB_RING_INTR)
            return FB_RING_INTR;
    }
}

/* ------------------------------------------------------------------ signals */

uint32_t fb_ring_watch(fb_ring_t *r, fb_signal_t which)
{
    waitq_t q = signal_queue(r, which);
    return q.word ? waitq_register(q) : 0;
}

int fb_ring_wait(fb_ring_t *r, fb_signal_t which, uint32_t seen, int64_t timeout_ns)
{
    waitq_t q = signal_queue(r, which);
    if (!q.word)
        return FB_RING_EINVAL;
    /* relaxed: close stores the flag before it bumps every word, so a wait that
     * misses the flag here finds the word moved (or is woken) and re-reads it below */
    if (fb_load32_relaxed(&r->st.closed)) {
        waitq_unregister(q);
        return FB_RING_CLOSED;
    }
    int w = waitq_sleep(r, q, seen, timeout_ns);
    return fb_load32_relaxed(&r->st.closed) ? FB_RING_CLOSED : w;
}

void fb_ring_unwatch(fb_ring_t *r, fb_signal_t which)
{
    waitq_t q = signal_queue(r, which);
    if (q.word)
        waitq_unregister(q);
}

void fb_ring_wake(fb_ring_t *r, fb_signal_t which)
{
    waitq_t q = signal_queue(r, which);
    if (q.word)
        waitq_wake(r, q);
}

uint32_t fb_ring_layout_version(const void *mem) { return ((const fb_ring_t *)mem)->geo.version; }

void fb_ring_close(fb_ring_t *r)
{
    /* seq_cst, before the bumps: a waiter woken by one (or loading it) sees the flag */
    __atomic_store_n(&r->st.closed, 1, __ATOMIC_SEQ_CST);
    for (int which = FB_SIGNAL_DATA; which <= FB_SIGNAL_COUNTER; which++)
        waitq_wake(r, signal_queue(r, (fb_signal_t)which));
}

void fb_ring_transitions(const fb_ring_t *r, uint64_t *pauses, uint64_t *resumes)
{
    *pauses = fb_load_relaxed(&r->ctr.pause_events);
    *resumes = fb_load_relaxed(&r->ctr.resume_events);
}

int fb_ring_is_closed(const fb_ring_t *r) { return (int)fb_load32_relaxed(&r->st.closed); }
int fb_ring_is_paused(const fb_ring_t *r) { return (int)fb_load32_relaxed(&r->st.paused); }

/* acquire: a caller that then waits for this sequence number to be persisted must
 * not see it before the claims below it */
uint64_t fb_ring_next_seq(const fb_ring_t *r) { return fb_load_acquire(&r->tail.seq); }

void fb_ring_stats(const fb_ring_t *r, fb_ring_stats_t *out)
{
    fb_ring_t *rw = (fb_ring_t *)r;
    fb_pair_t t = fb_pair_peek(&r->tail); /* torn halves are fine for counters */
    fb_pair_t m = scan_min(rw);
    out->next_seq = t.seq;
    out->published = t.seq - r->geo.start_seq;
    out->published_bytes = fb_load_relaxed(&r->published_bytes);
    out->dropped = fb_load_relaxed(&r->ctr.dropped);
    out->used_frames = t.seq - m.seq;
    out->used_bytes = t.pos - m.pos;
    if (out->used_bytes > r->geo.data_bytes)
        out->used_bytes = r->geo.data_bytes; /* lapped readers in overwrite mode */
    if (out->used_frames > r->geo.frame_capacity)
        out->used_frames = r->geo.frame_capacity;
    out->frame_capacity = r->geo.frame_capacity;
    out->data_bytes = r->geo.data_bytes;
    out->pause_events = fb_load_relaxed(&r->ctr.pause_events);
    out->resume_events = fb_load_relaxed(&r->ctr.resume_events);
    out->unblocked = fb_load_relaxed(&r->ctr.unblocked);
    out->lapped = fb_load_relaxed(&r->ctr.lapped);
    out->evicted = fb_load_relaxed(&r->ctr.evicted);
    out->creator_pid = r->geo.creator_pid;
    out->max_readers = r->geo.max_readers;
    out->paused = fb_load32_relaxed(&r->st.paused);
    out->closed = fb_load32_relaxed(&r->st.closed);
    uint32_t readers = 0;
    for (uint32_t i = 0; i < r->geo.max_readers; i++)
        readers += fb_load32_acquire(&slot_at(r, i)->state) == SLOT_ACTIVE;
    out->readers = readers;
    uint32_t topics = 0;
    for (uint32_t i = 0; i < r->geo.max_topics; i++) {
        if (fb_load32_acquire(&topic_at(r, i)->state) == TOPIC_EMPTY)
            break;
        topics++;
    }
    out->topics = topics;
}

/* ---------------------------------------------------------------- topics */

int fb_ring_topic_intern(fb_ring_t *r, const char *name, uint32_t len, uint32_t *id)
{
    if (len == 0) {
        *id = 0;
        return FB_RING_OK;
    }
    if (len > FB_RING_TOPIC_MAX_LEN)
        return FB_RING_TOO_LARGE;
    for (uint32_t i = 0; i < r->geo.max_topics; i++) {
        fb_topic_t *t = topic_at(r, i);
        uint32_t st = fb_load32_acquire(&t->state);
        if (st == TOPIC_EMPTY) {
            uint32_t expect = TOPIC_EMPTY;
            if (fb_cas_u32(&t->state, &expect, TOPIC_WRITING)) {
                memcpy(t->name, name, len);
                t->len = len;
                /* release: name before state; pairs with the acquire above */
                fb_store32_release(&t->state, TOPIC_READY);
                *id = i + 1;
                return FB_RING_OK;
            }
            st = expect;
        }
        /* every interner scans in order and waits on entries being written,
         * so two processes adding one name concurrently get one id */
        uint64_t since = 0;
        while (st == TOPIC_WRITING) {
            if (!since)
                since = fb_mono_ns();
            else if (fb_mono_ns() - since > 1000000000ull)
                break; /* its writer died: the entry stays unusable */
            sched_yield();
            st = fb_load32_acquire(&t->state);
        }
        if (st == TOPIC_READY && t->len == len && memcmp(t->name, name, len) == 0) {
            *id = i + 1;
            return FB_RING_OK;
        }
    }
    return FB_RING_NO_SLOT;
}

int fb_ring_topic_name(const fb_ring_t *r, uint32_t id, const char **name, uint32_t *len)
{
    if (id == 0) {
        *name = "";
        *len = 0;
        return FB_RING_OK;
    }
    if (id > r->geo.max_topics)
        return FB_RING_EINVAL;
    fb_topic_t *t = topic_at(r, id - 1);
    if (fb_load32_acquire(&t->state) != TOPIC_READY)
        return FB_RING_EINVAL;
    *name = t->name;
    *len = t->len;
    return FB_RING_OK;
}

/* ---------------------------------------------------------- user counters */

/* seq_cst throughout: these are control-plane counters (task accounting), not the
 * data path, and a waiter must see the counter move before it sees the signal. */
uint64_t fb_ring_user_add(fb_ring_t *r, uint32_t i, uint64_t delta)
{
    return __atomic_add_fetch(&r->user.value[i % FB_RING_USER_COUNTERS], delta, __ATOMIC_SEQ_CST);
}

int fb_ring_user_dec(fb_ring_t *r, uint32_t i, uint64_t *out)
{
    uint64_t *p = &r->user.value[i % FB_RING_USER_COUNTERS];
    uint64_t v = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    do {
        if (v == 0)
            return FB_RING_EMPTY;
    } while (!__atomic_compare_exchange_n(p, &v, v - 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    *out = v - 1;
    return FB_RING_OK;
}

uint64_t fb_ring_user_get(const fb_ring_t *r, uint32_t i)
{
    return __atomic_load_n(&r->user.value[i % FB_RING_USER_COUNTERS], __ATOMIC_SEQ_CST);
}

/* ---------------------------------------------------------- topic counters */

/* seq_cst like the user counters: control-plane values a waiter must see move
 * before it sees the signal. */
static inline int counter_valid(const fb_ring_t *r, uint32_t id)
{
    return id >= 1 && id <= r->geo.max_topics;
}

uint64_t fb_ring_counter_add(fb_ring_t *r, uint32_t id, uint64_t delta)
{
    if (!counter_valid(r, id))
        return 0;
    uint64_t v = __atomic_add_fetch(counter_at(r, id), delta, __ATOMIC_SEQ_CST);
    waitq_notify(r, signal_queue(r, FB_SIGNAL_COUNTER));
    return v;
}

uint64_t fb_ring_counter_take(fb_ring_t *r, uint32_t id, uint64_t max)
{
    if (!counter_valid(r, id))
        return 0;
    uint64_t *p = counter_at(r, id);
    uint64_t v = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    uint64_t n;
    do {
        n = v < max ? v : max;
        if (n == 0)
            return 0;
    } while (!__atomic_compare_exchange_n(p, &v, v - n, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    return n;
}

uint64_t fb_ring_counter_exchange(fb_ring_t *r, uint32_t id, uint64_t value)
{
    if (!counter_valid(r, id))
        return 0;
    uint64_t old = __atomic_exchange_n(counter_at(r, id), value, __ATOMIC_SEQ_CST);
    if (value > old)
        waitq_notify(r, signal_queue(r, FB_SIGNAL_COUNTER));
    return old;
}

uint64_t fb_ring_counter_max(fb_ring_t *r, uint32_t id, uint64_t value)
{
    if (!counter_valid(r, id))
        return 0;
    uint64_t *p = counter_at(r, id);
    uint64_t v = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (v < value) {
        if (__atomic_compare_exchange_n(p, &v, value, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            waitq_notify(r, signal_queue(r, FB_SIGNAL_COUNTER));
            return value;
        }
    }
    return v;
}

uint64_t fb_ring_counter_get(const fb_ring_t *r, uint32_t id)
{
    if (!counter_valid(r, id))
        return 0;
    return __atomic_load_n(counter_at(r, id), __ATOMIC_SEQ_CST);
}
