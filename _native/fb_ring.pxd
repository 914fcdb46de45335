# Declarations of the C ring (fb_ring.h). The ring struct is opaque to Cython:
# it holds _Atomic-style fields that Cython cannot parse.
from libc.stdint cimport uint32_t, uint64_t, int64_t

cdef extern from "fb_ring.h" nogil:
    enum:
        FB_RING_OK
        FB_RING_PAUSED
        FB_RING_RESUMED
        FB_RING_FULL
        FB_RING_EMPTY
        FB_RING_TOO_LARGE
        FB_RING_EINVAL
        FB_RING_CLOSED
        FB_RING_TIMEOUT
        FB_RING_NO_SLOT
        FB_RING_BAD_MAGIC
        FB_RING_BAD_VERSION
        FB_RING_INTR
        FB_RING_RETRY
        FB_RING_LAPPED
        FB_RING_OVERWRITE
        FB_RING_SHARED
        FB_WRITE_PARTIAL
        FB_RING_RECORD_HEADER
        FB_RING_TOPIC_MAX_LEN
        FB_RING_META_OFFSET
        FB_RING_META_BYTES
        FB_RING_USER_COUNTERS
        FB_RING_LAYOUT_VERSION

    ctypedef enum fb_signal_t:
        FB_SIGNAL_DATA
        FB_SIGNAL_SPACE
        FB_SIGNAL_TRANSITION
        FB_SIGNAL_USER
        FB_SIGNAL_COUNTER

    ctypedef struct fb_ring_t:
        pass

    ctypedef struct fb_ring_params_t:
        uint64_t data_bytes
        uint64_t frame_capacity
        uint32_t max_frame
        uint32_t max_readers
        uint32_t max_topics
        uint32_t flags
        double pause_hi
        double resume_lo
        double backpressure
        uint64_t unblock_timeout_ns
        uint64_t start_seq
        uint64_t dead_reader_timeout_ns
        uint64_t frame_limit

    ctypedef struct fb_claim_t:
        uint64_t seq
        uint64_t pos
        unsigned char *data
        uint32_t len

    ctypedef struct fb_iov_t:
        const void *data
        uint32_t len
        uint32_t topic

    ctypedef struct fb_frame_t:
        const unsigned char *data
        uint64_t seq
        uint64_t ts_ns
        uint64_t pos
        uint32_t len
        uint32_t topic

    ctypedef struct fb_read_t:
        uint32_t slot
        uint32_t resumed
        uint64_t start_pos
        uint64_t start_seq
        uint64_t pos
        uint64_t seq
        uint64_t intact_from
        uint64_t stall_pos
        uint64_t stall_since_ns
        uint64_t last_pos

    ctypedef struct fb_ring_stats_t:
        uint64_t published
        uint64_t published_bytes
        uint64_t dropped
        uint64_t used_frames
        uint64_t used_bytes
        uint64_t frame_capacity
        uint64_t data_bytes
        uint64_t pause_events
        uint64_t resume_events
        uint64_t unblocked
        uint64_t lapped
        uint64_t evicted
        uint64_t creator_pid
        uint64_t next_seq
        uint32_t paused
        uint32_t closed
        uint32_t readers
        uint32_t max_readers
        uint32_t topics

    ctypedef struct fb_reader_info_t:
        uint64_t pos
        uint64_t seq
        uint64_t backlog
        uint64_t lagged
        uint64_t group_key
        uint64_t owner_pid
        uint32_t members
        uint32_t active

    size_t fb_ring_required_size(const fb_ring_params_t *p)
    int fb_ring_validate_params(const fb_ring_params_t *p)
    int fb_ring_init(void *mem, size_t len, const fb_ring_params_t *p)
    int fb_ring_check(const void *mem, size_t len)
    void fb_ring_params(const fb_ring_t *r, fb_ring_params_t *out)

    int fb_ring_claim(fb_ring_t *r, uint32_t len, uint32_t topic, uint64_t ts_ns, fb_claim_t *out)
    int fb_ring_commit(fb_ring_t *r, const fb_claim_t *c)
    void fb_ring_abort(fb_ring_t *r, const fb_claim_t *c)
    int fb_ring_write(fb_ring_t *r, const void *data, uint32_t len, uint32_t topic, uint64_t ts_ns,
                      uint64_t *seq_out)
    int fb_ring_write_batch(fb_ring_t *r, const fb_iov_t *iov, uint32_t n, uint64_t ts_ns,
                            uint32_t flags, uint64_t *first_seq, uint32_t *written)
    int fb_ring_write_wait(fb_ring_t *r, const void *data, uint32_t len, uint32_t topic,
                           uint64_t ts_ns, uint64_t *seq_out, int64_t timeout_ns, uint32_t spin)
    int fb_ring_write_batch_wait(fb_ring_t *r, const fb_iov_t *iov, uint32_t n, uint64_t ts_ns,
                                 uint32_t flags, uint64_t *first_seq, uint32_t *written,
                                 int64_t timeout_ns, uint32_t spin, const volatile int *cancel)
    int fb_ring_writable(fb_ring_t *r, uint64_t record_bytes, uint64_t frames)
    uint64_t fb_ring_record_bytes(uint32_t len)
    void fb_ring_add_dropped(fb_ring_t *r, uint64_t n)

    int fb_ring_reader_open(fb_ring_t *r, uint64_t group_key, uint64_t pid, uint32_t *slot)
    int fb_ring_reader_close(fb_ring_t *r, uint32_t slot)
    int fb_ring_evict_dead(fb_ring_t *r)
    int fb_ring_attach_register(fb_ring_t *r, uint64_t pid)
    void fb_ring_attach_unregister(fb_ring_t *r, int entry, uint64_t pid)
    int fb_ring_attached_alive(const fb_ring_t *r)
    int fb_ring_read_begin(fb_ring_t *r, fb_read_t *rd)
    int fb_ring_read_next(fb_ring_t *r, fb_read_t *rd, fb_frame_t *out)
    int fb_ring_read_end(fb_ring_t *r, fb_read_t *rd)
    int fb_ring_readable(fb_ring_t *r, uint32_t slot)
    void fb_ring_reader_add_lagged(fb_ring_t *r, uint32_t slot, uint64_t n)
    int fb_ring_reader_info(const fb_ring_t *r, uint32_t slot, fb_reader_info_t *out)

    int fb_ring_wait_readable(fb_ring_t *r, uint32_t slot, int64_t timeout_ns, uint32_t spin)
    int fb_ring_wait_readable_cancel(fb_ring_t *r, uint32_t slot, int64_t timeout_ns, uint32_t spin,
                                     const volatile int *cancel)
    int fb_ring_wait_writable(fb_ring_t *r, uint64_t record_bytes, uint64_t frames,
                              int64_t timeout_ns, uint32_t spin)
    uint32_t fb_ring_watch(fb_ring_t *r, fb_signal_t which)
    int fb_ring_wait(fb_ring_t *r, fb_signal_t which, uint32_t seen, int64_t timeout_ns)
    void fb_ring_unwatch(fb_ring_t *r, fb_signal_t which)
    void fb_ring_wake(fb_ring_t *r, fb_signal_t which)
    uint32_t fb_ring_layout_version(const void *mem)
    void fb_ring_close(fb_ring_t *r)
    int fb_ring_is_closed(const fb_ring_t *r)
    int fb_ring_is_paused(const fb_ring_t *r)
    void fb_ring_stats(const fb_ring_t *r, fb_ring_stats_t *out)
    void fb_ring_transitions(const fb_ring_t *r, uint64_t *pauses, uint64_t *resumes)

    int fb_ring_topic_intern(fb_ring_t *r, const char *name, uint32_t len, uint32_t *id)
    int fb_ring_topic_name(const fb_ring_t *r, uint32_t id, const char **name, uint32_t *len)

    uint64_t fb_now_ns()
    uint64_t fb_ring_next_seq(const fb_ring_t *r)
    uint64_t fb_ring_user_add(fb_ring_t *r, uint32_t i, uint64_t delta)
    int fb_ring_user_dec(fb_ring_t *r, uint32_t i, uint64_t *out)
    uint64_t fb_ring_user_get(const fb_ring_t *r, uint32_t i)
    uint64_t fb_ring_counter_add(fb_ring_t *r, uint32_t id, uint64_t delta)
    uint64_t fb_ring_counter_take(fb_ring_t *r, uint32_t id, uint64_t max)
    uint64_t fb_ring_counter_exchange(fb_ring_t *r, uint32_t id, uint64_t value)
    uint64_t fb_ring_counter_max(fb_ring_t *r, uint32_t id, uint64_t value)
    uint64_t fb_ring_counter_get(const fb_ring_t *r, uint32_t id)
    uint64_t fb_mono_ns()
