/*
 * fb_atomic.h - the only place framebus touches atomics.
 *
 * GCC/Clang __atomic builtins rather than <stdatomic.h>: the ring mixes a
 * 16-byte compare-and-swap of (position, sequence) with 8-byte loads of the
 * halves, which _Atomic types cannot express. Every helper names its memory
 * order; call sites say in one line what each one pairs with.
 *
 * Everything here is address-free, so it works the same on heap memory and
 * on a MAP_SHARED mapping used by several processes.
 */
#ifndef FB_ATOMIC_H
#define FB_ATOMIC_H

#include <stdint.h>

#if !defined(__GNUC__)
#error "framebus needs GCC or Clang atomic builtins"
#endif

#if defined(__x86_64__) && !defined(__GCC_HAVE_SYNC_COMPARE_AND_SWAP_16)
#error "build with -mcx16: the ring claims (position, sequence) with cmpxchg16b"
#endif

#define FB_CACHE_LINE 64
#define FB_ALIGNED(n) __attribute__((aligned(n)))

static inline uint64_t fb_load_relaxed(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint64_t fb_load_acquire(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void fb_store_relaxed(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline void fb_store_release(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint64_t fb_fetch_add(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline int fb_cas_u64(uint64_t *p, uint64_t *expected, uint64_t desired)
{
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static inline uint32_t fb_load32_relaxed(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint32_t fb_load32_acquire(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint32_t fb_load32_seq_cst(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void fb_store32_release(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint32_t fb_fetch_add32(uint32_t *p, uint32_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline uint32_t fb_fetch_sub32(uint32_t *p, uint32_t v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
static inline int fb_cas_u32(uint32_t *p, uint32_t *expected, uint32_t desired)
{
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static inline void fb_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void fb_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }

/* A (position, sequence) pair moved as one 16-byte unit. */
typedef struct FB_ALIGNED(16) {
    uint64_t pos;
    uint64_t seq;
} fb_pair_t;

typedef unsigned __int128 fb_u128;

static inline fb_u128 fb_pair_pack(fb_pair_t v) { return ((fb_u128)v.seq << 64) | v.pos; }
static inline fb_pair_t fb_pair_unpack(fb_u128 v)
{
    fb_pair_t r = {(uint64_t)v, (uint64_t)(v >> 64)};
    return r;
}

/* A possibly torn snapshot: only good as the first guess of a CAS loop. */
static inline fb_pair_t fb_pair_peek(const fb_pair_t *p)
{
    fb_pair_t r = {fb_load_relaxed(&p->pos), fb_load_relaxed(&p->seq)};
    return r;
}

/*
 * Full-barrier 16-byte CAS (lock cmpxchg16b on x86-64). On failure *expected
 * is refreshed with the current value, read atomically.
 */
static inline int fb_pair_cas(fb_pair_t *p, fb_pair_t *expected, fb_pair_t desired)
{
    fb_u128 old = fb_pair_pack(*expected);
    fb_u128 seen = __sync_val_compare_and_swap((fb_u128 *)p, old, fb_pair_pack(desired));
    if (seen == old)
        return 1;
    *expected = fb_pair_unpack(seen);
    return 0;
}

static inline void fb_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif /* FB_ATOMIC_H */
