/*
 * fb_ring.h - the framebus ring: a lock-free multi-producer, multi-reader
 * broadcast ring of variable-size frames in caller-owned memory.
 *
 * Layout. One contiguous region: a header page (magic, layout version, geometry,
 * the producers' tail, counters, the signals' futex words, the attachment table;
 * every hot field on its own 64-byte line; its second half, from
 * FB_RING_META_OFFSET, is the embedding layer's), then max_readers reader slots,
 * then the topic table and one counter line per topic id, then the data area (a
 * power of two of bytes). Everything is addressed by offsets from the region's
 * start, never by pointers, so the same bytes work on the heap and in a POSIX
 * shared-memory segment mapped at different addresses.
 *
 * Records. [commit u64 | len u32 | topic u32 | seq u64 | ts_ns u64 | payload],
 * 8-byte aligned, never spanning the end of the data area: a padding record
 * fills the end (or, when fewer than 32 bytes are left, the reader skips them
 * implicitly). Every multiple of the data size is therefore a record boundary.
 * `commit` holds the record's absolute position with its state in the low three
 * bits (CLAIMED, DATA, PAD), so a stale record from an earlier lap never looks
 * committed, and zeroed memory never does either.
 *
 * Producers (any number, any process). fb_ring_claim takes space and the next
 * sequence number with one 16-byte CAS on the (position, sequence) tail, so
 * ring order and sequence order are the same. Sequence numbers are consecutive
 * (padding takes none); fb_ring_write_batch claims a whole batch at once, so a
 * batch's sequence numbers are consecutive too. The producer writes the header,
 * copies the payload and release-stores `commit` (fb_ring_commit). Free space is
 * bounded by the slowest reader (unless the ring was made with FB_RING_OVERWRITE)
 * and by the backpressure threshold, in bytes and in frames.
 *
 * Readers (at most max_readers slots). A slot is one cursor: either one
 * subscription (broadcast: every slot sees every frame) or a group whose
 * members share the cursor (work-sharing: each frame goes to one member).
 * A read is begin / next... / end: next returns records in order without
 * moving the shared cursor; end publishes the cursor (a group member's end
 * fails with FB_RING_RETRY when another member moved first: the caller drops
 * what it read and starts again). Payload pointers returned by next stay valid
 * until end, except in overwrite mode, where end says from which position the
 * records read were intact (fb_read_t.intact_from).
 *
 * Waiting is not the ring's business beyond one mechanism, the signals
 * (fb_signal_t: DATA, SPACE, TRANSITION, USER, COUNTER): a futex word each with a
 * count of registered waiters, bumped (and woken) by the ring only when a waiter has
 * registered, so an idle or unwatched ring makes no system calls. The blocking calls
 * wait on them, and so can a caller: fb_ring_watch, then fb_ring_wait or
 * fb_ring_unwatch; fb_ring_wake wakes a signal's sleepers.
 *
 * A producer that dies between claim and commit does not stall readers: after
 * unblock_timeout_ns a reader turns the record into padding and counts it.
 *
 * Results: FB_RING_OK (0) and the positive FB_RING_PAUSED / FB_RING_RESUMED
 * (success, and this call moved the hysteresis state) or a negative code.
 */
#ifndef FB_RING_H
#define FB_RING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FB_RING_MAGIC 0x3153554245524646ULL /* "FFREBUS1" little-endian */
#define FB_RING_LAYOUT_VERSION 3u
#define FB_RING_RECORD_HEADER 32u
#define FB_RING_MAX_READERS 1024u
#define FB_RING_TOPIC_ENTRY 256u
#define FB_RING_TOPIC_MAX_LEN (FB_RING_TOPIC_ENTRY - 8u)
#define FB_RING_MIN_DATA_BYTES 4096u
/* Bytes of the header page left to the embedding layer (e.g. the bus's config for
 * processes that attach): written before fb_ring_init, published by its magic store. */
#define FB_RING_META_OFFSET 2048u
#define FB_RING_META_BYTES 2048u
#define FB_RING_MAX_ATTACHED 64u
#define FB_RING_USER_COUNTERS 4u

enum fb_ring_result {
    FB_RING_OK = 0,
    FB_RING_PAUSED = 1,   /* ok, and this call paused the ring */
    FB_RING_RESUMED = 2,  /* ok, and this call resumed it */
    FB_RING_FULL = -1,
    FB_RING_EMPTY = -2,
    FB_RING_TOO_LARGE = -3,
    FB_RING_EINVAL = -4,
    FB_RING_CLOSED = -5,
    FB_RING_TIMEOUT = -6,
    FB_RING_NO_SLOT = -7,
    FB_RING_BAD_MAGIC = -8,
    FB_RING_BAD_VERSION = -9,
    FB_RING_INTR = -10,
    FB_RING_RETRY = -11,
    FB_RING_LAPPED = -12,
};

/* Ring flags (fb_ring_params_t.flags). */
#define FB_RING_OVERWRITE 1u /* producers never wait for readers; slow readers are lapped */
#define FB_RING_SHARED 2u    /* mapped by several processes: use shared futexes */

/* fb_ring_write_batch flags. */
#define FB_WRITE_PARTIAL 1u /* write the longest prefix that fits instead of failing */

typedef struct fb_ring fb_ring_t; /* the region itself; opaque */

typedef struct {
    uint64_t data_bytes;      /* power of two, >= FB_RING_MIN_DATA_BYTES */
    uint64_t frame_capacity;  /* power of two: most frames held at once */
    uint32_t max_frame;       /* largest payload; 2 records of it must fit under the threshold */
    uint32_t max_readers;     /* 1 .. FB_RING_MAX_READERS */
    uint32_t max_topics;      /* topic table entries */
    uint32_t flags;           /* FB_RING_OVERWRITE | FB_RING_SHARED */
    double pause_hi;          /* 0 < resume_lo < pause_hi <= backpressure <= 1 */
    double resume_lo;
    double backpressure;
    uint64_t unblock_timeout_ns; /* a claimed record uncommitted this long is skipped */
    uint64_t start_seq;          /* sequence number of the first frame */
    uint64_t dead_reader_timeout_ns; /* evict a dead process's cursor after this; 0 = never */
    uint64_t frame_limit; /* most frames held at once, 1..frame_capacity (a queue's maxsize);
                             0 = backpressure * frame_capacity */
} fb_ring_params_t;

typedef struct {
    uint64_t seq;
    uint64_t pos; /* absolute position of the reserved record */
    uint8_t *data;
    uint32_t len;
} fb_claim_t;

typedef struct {
    const void *data;
    uint32_t len;
    uint32_t topic;
} fb_iov_t;

typedef struct {
    const uint8_t *data;
    uint64_t seq;
    uint64_t ts_ns;
    uint64_t pos;
    uint32_t len;
    uint32_t topic;
} fb_frame_t;

typedef struct {
    uint32_t slot;        /* set by the caller; the rest belongs to the ring */
    uint32_t resumed;     /* set by end: this read resumed the ring (also when it returns LAPPED) */
    uint64_t start_pos;   /* cursor when the read began */
    uint64_t start_seq;
    uint64_t pos;         /* next record to read */
    uint64_t seq;         /* next expected sequence number */
    uint64_t intact_from; /* overwrite mode: after end, records below this were overwritten */
    uint64_t stall_pos;   /* unblock bookkeeping: uncommitted record seen at stall_pos ... */
    uint64_t stall_since_ns; /* ... since this monotonic time */
    uint64_t last_pos;    /* position of the last record returned by next */
} fb_read_t;

typedef struct {
    uint64_t published;       /* frames given sequence numbers */
    uint64_t published_bytes; /* payload bytes */
    uint64_t dropped;         /* counted by fb_ring_add_dropped */
    uint64_t used_frames;     /* frames between the slowest holding reader and the tail */
    uint64_t used_bytes;      /* bytes (records, headers, padding) likewise */
    uint64_t frame_capacity;
    uint64_t data_bytes;
    uint64_t pause_events;
    uint64_t resume_events;
    uint64_t unblocked;       /* dead claims turned into padding */
    uint64_t lapped;          /* times a reader was lapped (overwrite mode) */
    uint64_t evicted;         /* cursors of dead processes released */
    uint64_t creator_pid;     /* process that formatted the ring */
    uint64_t next_seq;
    uint32_t paused;
    uint32_t closed;
    uint32_t readers;         /* active slots */
    uint32_t max_readers;
    uint32_t topics;
} fb_ring_stats_t;

typedef struct {
    uint64_t pos;
    uint64_t seq;        /* next sequence number the slot will read */
    uint64_t backlog;    /* frames published and not yet read by the slot */
    uint64_t lagged;     /* frames lost to lapping */
    uint64_t group_key;  /* 0 for a broadcast slot */
    uint64_t owner_pid;
    uint32_t members;
    uint32_t active;
} fb_reader_info_t;

/* Each function below says who may call it, what it returns and what it leaves behind.
 * "Any thread" means any thread of any process that maps the ring. */

/* Geometry and setup. */
/* Any thread: the bytes a ring with params p needs, 0 if p is invalid. Pure. */
size_t fb_ring_required_size(const fb_ring_params_t *p);
/* Any thread: FB_RING_OK, or FB_RING_EINVAL when p breaks a rule of fb_ring_params_t. Pure. */
int fb_ring_validate_params(const fb_ring_params_t *p);
/* The creator, once, before anyone else uses the region: formats mem (zeroed,
 * 4096-aligned, len >= fb_ring_required_size(p)). FB_RING_OK or FB_RING_EINVAL. The
 * meta area is left as written; the magic is stored last, publishing the ring. */
int fb_ring_init(void *mem, size_t len, const fb_ring_params_t *p);
/* Whoever maps an existing region, before using it: FB_RING_OK, FB_RING_BAD_MAGIC (not
 * a ring, or not formatted yet), FB_RING_BAD_VERSION or FB_RING_EINVAL. Reads only. */
int fb_ring_check(const void *mem, size_t len);
/* Any thread: the ring's parameters into *out (frame_limit: the effective limit). */
void fb_ring_params(const fb_ring_t *r, fb_ring_params_t *out);
/* After fb_ring_check said FB_RING_BAD_VERSION: the layout version stored in the region
 * (for error messages). */
uint32_t fb_ring_layout_version(const void *mem);

/* Producer side: any thread of any process. */
/* Takes room for one record of len payload bytes and the next sequence number.
 * FB_RING_OK or FB_RING_PAUSED (this claim paused the ring): *out holds seq, pos and
 * data (len bytes for the caller to fill); the space and seq are taken, and the caller
 * must fb_ring_commit or fb_ring_abort (readers stop at the record until then, or
 * until unblock_timeout_ns). FB_RING_FULL, FB_RING_TOO_LARGE (len > max_frame) or
 * FB_RING_CLOSED: nothing taken. */
int fb_ring_claim(fb_ring_t *r, uint32_t len, uint32_t topic, uint64_t ts_ns, fb_claim_t *out);
/* The claim's holder, once: publishes the record to readers and notifies
 * FB_SIGNAL_DATA. Always FB_RING_OK; c may be discarded after. */
int fb_ring_commit(fb_ring_t *r, const fb_claim_t *c);
/* The claim's holder, once, instead of commit: gives the claim up. Readers skip it as
 * padding (its sequence number is never delivered: a gap). */
void fb_ring_abort(fb_ring_t *r, const fb_claim_t *c);
/* claim + copy + commit: the claim's results; on success *seq_out (may be NULL) is the
 * frame's sequence number and the frame is published. */
int fb_ring_write(fb_ring_t *r, const void *data, uint32_t len, uint32_t topic, uint64_t ts_ns,
                  uint64_t *seq_out);
/* Writes n >= 1 frames with consecutive sequence numbers in one claim: all of them, or
 * with FB_WRITE_PARTIAL the longest prefix that fits (at least one). FB_RING_OK or
 * FB_RING_PAUSED: *first_seq and *written (either may be NULL) say which were
 * published. FB_RING_FULL, FB_RING_TOO_LARGE (a frame > max_frame, or more than an
 * empty ring holds), FB_RING_EINVAL (n == 0), FB_RING_CLOSED: nothing written, *written 0. */
int fb_ring_write_batch(fb_ring_t *r, const fb_iov_t *iov, uint32_t n, uint64_t ts_ns,
                        uint32_t flags, uint64_t *first_seq, uint32_t *written);
/* Any thread: would `frames` frames taking `record_bytes` bytes in all (fb_ring_record_bytes
 * of each) fit now? 1 / 0, always 1 in overwrite mode. Refreshes the cached reader minimum. */
int fb_ring_writable(fb_ring_t *r, uint64_t record_bytes, uint64_t frames);
/* Bytes a record of len payload bytes takes in the data area (header, payload, alignment). */
uint64_t fb_ring_record_bytes(uint32_t len);
/* Any thread: adds n to the dropped count of fb_ring_stats (frames the caller gave up on). */
void fb_ring_add_dropped(fb_ring_t *r, uint64_t n);

/* Reader side. group_key 0 = a slot of its own. pid: the owning process, for
 * eviction when it dies (0 = never evicted). On a shared ring a group slot records
 * its members' processes (up to 8; a group with more is never evicted) and is
 * evicted once all of them are dead. fb_ring_reader_close must be called by the
 * process that opened the member. */
/* Any thread (slot opens and closes are serialised by a lock in the header).
 * FB_RING_OK: *slot is a new cursor at the tail (it reads what is published from now
 * on) or the group's existing one, holding space until fb_ring_reader_close.
 * FB_RING_NO_SLOT: all max_readers slots are taken. */
int fb_ring_reader_open(fb_ring_t *r, uint64_t group_key, uint64_t pid, uint32_t *slot);
/* Releases the cursors (broadcast slots and whole groups) of reader processes that
 * have been dead (pid gone, or reused by a process with another start time) for
 * dead_reader_timeout_ns; returns how many (0 when that timeout is 0). Any thread;
 * blocking writers call it while the ring is full. Freed space may resume the ring
 * and notifies FB_SIGNAL_SPACE. */
int fb_ring_evict_dead(fb_ring_t *r);
/* Attachment table (processes holding a mapping): register (a process, on attaching)
 * returns an entry index (or FB_RING_NO_SLOT when all 64 are held by live processes)
 * that holds pid until unregister (the same process, with the entry and pid it
 * registered); attached_alive counts the live ones (pid alive with the same start time). */
int fb_ring_attach_register(fb_ring_t *r, uint64_t pid);
void fb_ring_attach_unregister(fb_ring_t *r, int entry, uint64_t pid);
int fb_ring_attached_alive(const fb_ring_t *r);
/* Any thread: a process's start time (clock ticks since boot, /proc/<pid>/stat), 0 if
 * unknown. */
uint64_t fb_proc_start_time(uint64_t pid);
/* The process that opened the member, once per open: the member leaves; the last one
 * frees the slot (its space released, FB_SIGNAL_SPACE notified). FB_RING_OK, FB_RING_RESUMED
 * (closing the slowest slot resumed the ring) or FB_RING_EINVAL (not an open slot). It
 * wakes no reader: one waiting on the slot is woken with fb_ring_wake(r, FB_SIGNAL_DATA). */
int fb_ring_reader_close(fb_ring_t *r, uint32_t slot);
/* A read is begin, next..., end, by one thread with its own fb_read_t (rd->slot set by
 * the caller; each member of a group has its own). begin: always FB_RING_OK; rd holds a
 * snapshot of the slot's cursor (the cursor itself does not move); next is valid until end. */
int fb_ring_read_begin(fb_ring_t *r, fb_read_t *rd);
/* FB_RING_OK: *out is the next committed frame (its data stays put until end; in
 * overwrite mode producers may overwrite it meanwhile, and end tells) and rd moves
 * past it. FB_RING_EMPTY: nothing more
 * committed yet (a claim stalled past unblock_timeout_ns becomes padding here).
 * FB_RING_RETRY: another group member moved the cursor, this read is stale.
 * FB_RING_LAPPED: overwrite mode, producers overwrote the next record. After any of
 * these but OK, stop reading; end follows in every case. */
int fb_ring_read_next(fb_ring_t *r, fb_read_t *rd, fb_frame_t *out);
/* Once per begin: publishes the cursor past what next went over (nothing when it
 * moved nothing), freeing that space (FB_SIGNAL_SPACE notified). FB_RING_OK, or
 * FB_RING_RESUMED (this read resumed the ring; rd->resumed is set too). FB_RING_RETRY:
 * a group member moved first: nothing published, drop what was read and begin again.
 * FB_RING_LAPPED (overwrite mode): only frames at positions >= rd->intact_from were
 * intact; the cursor moved on anyway. */
int fb_ring_read_end(fb_ring_t *r, fb_read_t *rd);
/* Any thread: is a committed record (or the close flag) waiting at the slot's cursor?
 * 1 / 0 (1 also when the reader was lapped or a record looks torn: next tells). */
int fb_ring_readable(fb_ring_t *r, uint32_t slot);
/* Any thread: adds n to the slot's lagged count (frames it lost to lapping). */
void fb_ring_reader_add_lagged(fb_ring_t *r, uint32_t slot, uint64_t n);
/* Any thread: a snapshot of the slot into *out; FB_RING_OK, FB_RING_EINVAL (no such slot). */
int fb_ring_reader_info(const fb_ring_t *r, uint32_t slot, fb_reader_info_t *out);

/* Waiting: spin `spin` times, then sleep on the futex; timeout_ns < 0 = forever.
 * OK when the condition may hold, TIMEOUT, CLOSED, or INTR (a signal arrived).
 * Any thread; each registers on its signal (DATA, SPACE) only while it sleeps. */
/* The slot's reader: OK means "read now" (also a wake, or a claim stalled long enough
 * to skip); FB_RING_EINVAL for a slot out of range. */
int fb_ring_wait_readable(fb_ring_t *r, uint32_t slot, int64_t timeout_ns, uint32_t spin);
/* The same, also returning OK once *cancel is nonzero: a thread closing the reader sets
 * it, then calls fb_ring_wake(r, FB_SIGNAL_DATA), so a wait that began just before the
 * close ends. */
int fb_ring_wait_readable_cancel(fb_ring_t *r, uint32_t slot, int64_t timeout_ns, uint32_t spin,
                                 const volatile int *cancel);
/* A producer: OK once fb_ring_writable(r, record_bytes, frames) holds (another producer
 * may take the space before the caller claims it). */
int fb_ring_wait_writable(fb_ring_t *r, uint64_t record_bytes, uint64_t frames, int64_t timeout_ns,
                          uint32_t spin);
/* Blocking writes: retry until written (the results of fb_ring_write / write_batch),
 * FB_RING_TIMEOUT, FB_RING_CLOSED or FB_RING_INTR (a signal arrived: the caller
 * handles it and calls again). While full they evict dead readers now and then (when
 * dead_reader_timeout_ns is set). */
int fb_ring_write_wait(fb_ring_t *r, const void *data, uint32_t len, uint32_t topic, uint64_t ts_ns,
                       uint64_t *seq_out, int64_t timeout_ns, uint32_t spin);
/* cancel (may be NULL): a caller's flag; once it is nonzero a woken writer returns
 * FB_RING_CLOSED (how one process closes its handle on a shared ring; wake the
 * writers with fb_ring_wake(r, FB_SIGNAL_SPACE)). */
int fb_ring_write_batch_wait(fb_ring_t *r, const fb_iov_t *iov, uint32_t n, uint64_t ts_ns,
                             uint32_t flags, uint64_t *first_seq, uint32_t *written,
                             int64_t timeout_ns, uint32_t spin, const volatile int *cancel);

/* Signals: one futex word each, with a count of registered waiters. The ring bumps a
 * signal (and wakes its sleepers) on the events below only while a waiter is registered;
 * fb_ring_wake and fb_ring_close bump and wake unconditionally. */
typedef enum {
    FB_SIGNAL_DATA = 0,   /* records committed or aborted; readers wait on it */
    FB_SIGNAL_SPACE,      /* cursors moved, slots closed or evicted; writers wait on it */
    FB_SIGNAL_TRANSITION, /* the ring paused or resumed (e.g. for other processes' callbacks) */
    FB_SIGNAL_USER,       /* the user counters: moved only by fb_ring_wake */
    FB_SIGNAL_COUNTER,    /* a topic counter grew (one signal for every id) */
} fb_signal_t;
/* Any thread: registers a waiter on the signal and returns its value. The caller checks
 * its condition, then exactly one of fb_ring_wait (to sleep) or fb_ring_unwatch (done)
 * must follow: both unregister. A change notified after the watch ends the wait, so no
 * wake-up is lost between the check and the sleep. */
uint32_t fb_ring_watch(fb_ring_t *r, fb_signal_t which);
/* Sleeps while the signal still equals seen (timeout_ns 0: not at all, < 0: forever),
 * then unregisters. FB_RING_OK (it moved, or a spurious return: check again),
 * FB_RING_TIMEOUT, FB_RING_INTR (a signal arrived), FB_RING_CLOSED (the ring is closed,
 * without sleeping if it already was), FB_RING_EINVAL (no such signal: nothing done). */
int fb_ring_wait(fb_ring_t *r, fb_signal_t which, uint32_t seen, int64_t timeout_ns);
/* The watcher: unregisters a watch that no fb_ring_wait follows. */
void fb_ring_unwatch(fb_ring_t *r, fb_signal_t which);
/* Any thread: bumps the signal and wakes all its sleepers so they re-check (a closed
 * subscription, a cancel flag, a moved user counter); they see the caller's stores
 * made before the call. */
void fb_ring_wake(fb_ring_t *r, fb_signal_t which);

/* Any thread, once or more: sets the close flag and wakes every signal. Claims and
 * writes fail with FB_RING_CLOSED from then on and every wait returns it; what was
 * committed can still be read. */
void fb_ring_close(fb_ring_t *r);
/* Any thread: the close flag and the pause state, 1 / 0. */
int fb_ring_is_closed(const fb_ring_t *r);
int fb_ring_is_paused(const fb_ring_t *r);
/* Any thread: the sequence number the next claim will get (published so far =
 * next_seq - start_seq). */
uint64_t fb_ring_next_seq(const fb_ring_t *r);

/* Any thread: counters, usage and state into *out (a snapshot; it scans the reader
 * slots and the topic table). */
void fb_ring_stats(const fb_ring_t *r, fb_ring_stats_t *out);
/* Any thread: pause_events and resume_events only (cheap: no reader scan). */
void fb_ring_transitions(const fb_ring_t *r, uint64_t *pauses, uint64_t *resumes);

/* Topic table: names (bytes, 1..FB_RING_TOPIC_MAX_LEN) to ids >= 1; id 0 is the empty topic.
 * intern, any thread: FB_RING_OK (*id: the name's id, the same in every process; a new
 * name stays in the table for good), FB_RING_TOO_LARGE or FB_RING_NO_SLOT (table full).
 * name: FB_RING_OK (*name points into the ring, *len bytes, no terminating 0) or
 * FB_RING_EINVAL (no such id). */
int fb_ring_topic_intern(fb_ring_t *r, const char *name, uint32_t len, uint32_t *id);
int fb_ring_topic_name(const fb_ring_t *r, uint32_t id, const char **name, uint32_t *len);

/* Counters for the embedding layer (e.g. a queue's unfinished tasks) in the header,
 * index i < FB_RING_USER_COUNTERS (taken modulo it), any thread. Moving one wakes
 * nobody: the caller follows with fb_ring_wake(r, FB_SIGNAL_USER). */
uint64_t fb_ring_user_add(fb_ring_t *r, uint32_t i, uint64_t delta); /* returns the new value */
/* Decrements counter i unless it is 0: FB_RING_OK (new value in *out) or FB_RING_EMPTY. */
int fb_ring_user_dec(fb_ring_t *r, uint32_t i, uint64_t *out);
uint64_t fb_ring_user_get(const fb_ring_t *r, uint32_t i);

/* One counter per topic id (>= 1) for the embedding layer, e.g. a DataPort's credits;
 * any thread. add, and exchange or max when they raise the value, notify
 * FB_SIGNAL_COUNTER. add returns the new value; take removes min(value, max) at once
 * and returns it; exchange sets a value and returns the old one. An id outside the
 * table: add/take/exchange/max/get return 0. */
uint64_t fb_ring_counter_add(fb_ring_t *r, uint32_t id, uint64_t delta);
uint64_t fb_ring_counter_take(fb_ring_t *r, uint32_t id, uint64_t max);
uint64_t fb_ring_counter_exchange(fb_ring_t *r, uint32_t id, uint64_t value);
/* Raises the counter to value if it is below; returns the result. */
uint64_t fb_ring_counter_max(fb_ring_t *r, uint32_t id, uint64_t value);
uint64_t fb_ring_counter_get(const fb_ring_t *r, uint32_t id);

uint64_t fb_now_ns(void);      /* CLOCK_REALTIME, as time.time_ns() */
uint64_t fb_mono_ns(void);     /* CLOCK_MONOTONIC */

#ifdef __cplusplus
}
#endif
#endif /* FB_RING_H */
