# The binding's types for the modules built on it (framebus._port, framebus._walcodec).
# They reach the ring only through these methods: the C ring is linked into
# framebus._ring alone.
cimport cython
from cpython.buffer cimport Py_buffer
from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint32_t, uint64_t

from fb_ring cimport fb_frame_t, fb_iov_t, fb_read_t, fb_ring_t

cdef enum:
    _HIST_MAX = 32

cdef enum:
    TAKE_FRAMES = 0    # what a read hands back: Frames,
    TAKE_PAYLOADS = 1  # their payloads,
    TAKE_BATCH = 2     # or one FrameBatch

cdef struct _payload:
    const char *ptr
    Py_ssize_t len

cdef struct _copy:
    char *dst
    const unsigned char *src
    uint32_t len

cdef struct _objref:  # a payload object this process published, by sequence number
    uint64_t seq
    PyObject *obj

cdef struct _rec:  # one record of a FrameBatch read, while the read is open
    uint64_t seq
    uint64_t ts_ns
    uint64_t pos
    const unsigned char *data
    uint32_t topic
    uint32_t len

# Appends one frame, encoded, to keys and values: the bytes of the value (see
# Reader.take_records).
ctypedef Py_ssize_t (*record_encoder)(list keys, list values, uint64_t seq, bytes topic,
                                      const char *payload, uint32_t length,
                                      uint64_t ts_ns) except -1

cdef class Ring
cdef class Frame

cdef int _check(int rc, str what) except -1
cdef int64_t timeout_arg(object timeout) except -2
cdef Py_ssize_t max_frames_arg(object max_frames) except -1
cdef uint64_t realtime_ns() noexcept nogil


cdef class Frame:
    cdef readonly uint64_t seq
    cdef readonly str topic
    cdef readonly bytes payload
    cdef readonly uint64_t ts_ns


cdef class Log2Histogram:
    cdef uint64_t counts[_HIST_MAX + 1]
    cdef readonly uint64_t total
    cdef readonly uint64_t count
    cdef readonly int lo, hi, step
    cdef int n  # finite buckets

    @cython.final
    cdef inline void add(self, uint64_t v) noexcept


cdef class Ring:
    cdef fb_ring_t *ring
    cdef void *mem
    cdef size_t mem_size
    cdef int active            # calls inside nogil sections; the mapping outlives them
    cdef bint _closed
    cdef readonly int overflow
    cdef int64_t publish_timeout_ns
    cdef uint32_t spin
    cdef readonly uint32_t max_frame
    cdef dict topic_ids
    cdef list topic_names
    cdef object last_topic
    cdef uint32_t last_topic_id
    cdef readonly bint shared
    cdef int attach_entry
    cdef object transition_cb
    cdef object durability  # None, or what every write path waits on (a wal_sync bus)
    # In-process rings: the bytes objects published last, so that a reader hands out
    # the same immutable object instead of a new copy (NULL: off, e.g. shared rings)
    cdef _objref *objs
    cdef uint64_t objs_mask
    # publish_batch calls of this process: frames, payload bytes, duration (ns)
    cdef Log2Histogram hist_batch_frames, hist_batch_bytes, hist_batch_ticks

    cdef void _adopt(self, void *mem, size_t size, bint shared)
    @cython.final
    cdef inline void _remember(self, uint64_t seq, PyObject *payload) noexcept
    cdef void _forget_all(self) noexcept
    cdef int _ensure_open(self) except -1
    cdef int _transition(self) except -1
    cdef void _leave_nogil(self)
    cdef void _unmap(self)
    @cython.final
    cdef inline uint32_t _topic_id(self, object topic) except? 0xFFFFFFFF
    cdef uint32_t _intern(self, object topic) except? 0xFFFFFFFF
    @cython.final
    cdef inline str _topic_name(self, uint32_t tid)
    cdef str _load_topic_name(self, uint32_t tid)
    @cython.final
    cdef inline int _get_payload(self, object data, Py_buffer *view, _payload *out) except -1
    cdef int64_t _publish_timeout(self, object timeout) except -2
    @cython.final
    cdef inline object _publish_one(self, object data, object topic, int overflow, object timeout)
    # written (if given) turns true once the frames are in the ring: an error raised
    # after that (the durability wait) leaves them there
    @cython.final
    cdef object _write_one(self, object data, object topic, int overflow, object timeout,
                           object env, bint *written)
    @cython.final
    cdef object _publish_many(self, object frames, object topic, object timeout,
                              bint envelopes_own_topic, bint *written_out)
    cdef int _write_batch(self, fb_iov_t *iov, uint32_t n, uint64_t total, uint64_t *first,
                          uint32_t *written, object timeout, uint64_t *ts_out=*) except? -100
    cdef int _write_wait(self, fb_iov_t *iov, uint32_t n, uint32_t flags, uint64_t *first,
                         uint32_t *written, object timeout, str what,
                         uint64_t ts=*) except? -100
    cdef int _check_user(self, uint32_t i) except -1
    cdef int _check_counter(self, uint32_t tid) except -1
    cdef uint32_t ring_max_topics(self)
    cdef uint64_t _await_counter(self, uint32_t tid, uint64_t n, bint take,
                                 int64_t timeout_ns, object cancel) except? 0xFFFFFFFFFFFFFFFF
    # for the modules built on the binding: no checks (the caller checked the id)
    cdef uint64_t c_counter_take(self, uint32_t tid, uint64_t n) noexcept
    cdef void c_counter_add(self, uint32_t tid, uint64_t n) noexcept
    cdef void c_user_add(self, uint32_t i, uint64_t n) noexcept


cdef class FrameBatch:
    cdef Py_ssize_t n
    cdef readonly object data  # bytes: the payloads back to back; borrowed: a ring span
    cdef const char *base  # where offsets count from; NULL once a borrowed batch is released
    cdef object reader  # the Reader a borrowed batch holds back; None when owned
    cdef object span  # a borrowed batch's _RingSpan (data is a memoryview of it)
    cdef uint64_t total  # payload bytes
    cdef bytes _seqs, _ts, _offs  # uint64 arrays
    cdef bytes _tids, _lens  # uint32 arrays
    cdef dict _topics  # topic id -> name, for the ids in this batch

    @staticmethod
    cdef FrameBatch _build(Ring ring, bytes data, _rec *recs, Py_ssize_t n)
    cdef void _allocate(self, Py_ssize_t n, bytes data)
    cdef Py_ssize_t _index(self, Py_ssize_t i) except -1
    cdef bytes _payload(self, Py_ssize_t i)
    cdef Frame _frame_at(self, Py_ssize_t i)
    cdef int _check_live(self) except -1
    cdef void _fill(self, Ring ring, _rec *recs, Py_ssize_t n, const char *base)
    @staticmethod
    cdef FrameBatch _borrow(Ring ring, object reader, _rec *recs, Py_ssize_t n)


cdef class Reader:
    cdef Ring ring
    cdef fb_read_t rd
    cdef readonly uint32_t slot
    cdef bint opened
    cdef bint busy
    cdef bint match_all
    cdef bint overwrite
    cdef object matcher
    cdef unsigned char *match_state     # per topic id: 0 unknown, 1 match, 2 no match
    cdef uint32_t match_len
    cdef readonly uint64_t lagged
    cdef uint64_t *lap_log              # overwrite mode: (pos, seq) of records read in a batch
    cdef Py_ssize_t lap_cap
    cdef _copy *copies                  # payload copies deferred to run without the GIL
    cdef Py_ssize_t copies_cap
    cdef _rec *recs                     # a FrameBatch's records while its read is open
    cdef Py_ssize_t recs_cap
    cdef bint copying
    cdef bint close_pending
    cdef bint view_out
    cdef bint is_group
    cdef int cancelled                  # set by close: ends a wait that began just before
    # Modes, set once by the subscription when it is made (None: plain frames):
    cdef object backfill  # a durable group's frames from the WAL, read before the ring's
    cdef object decoder   # decoder(reader, frames) -> items (e.g. Envelopes; may drop some)

    cdef int _ensure_open(self) except -1
    cdef int _matches(self, uint32_t tid) except -1
    cdef int _resolve_match(self, uint32_t tid) except -1
    @cython.final
    cdef inline Frame _frame(self, fb_frame_t *f)
    cdef int _log_lap(self, Py_ssize_t i, fb_frame_t *f) except -1
    cdef void _account_laps(self, Py_ssize_t logged, uint64_t intact_from)
    cdef list _take(self, Py_ssize_t max_frames, bint payloads_only=*)
    cdef int _defer_copy(self, Py_ssize_t i, char *dst, const unsigned char *src,
                         uint32_t n) except -1
    cdef void _run_copies(self, Py_ssize_t n, bint release_gil)
    cdef object _take_one(self)
    cdef int _wait(self, int64_t timeout_ns) except -100
    cdef object _recv(self, Py_ssize_t max_frames, object timeout, int kind=*)
    cdef object _take_kind(self, Py_ssize_t max_frames, int kind)
    cdef FrameBatch _take_batch(self, Py_ssize_t max_frames)
    @cython.final
    cdef inline int _keep_rec(self, Py_ssize_t n, const fb_frame_t *f) except -1
    cdef int _check_borrow(self, str call, str instead) except -1
    cdef FrameBatch _recv_borrowed(self, Py_ssize_t max_frames, object timeout)
    cdef tuple _keep_intact(self, bytes data, Py_ssize_t n, uint64_t intact_from)
    cdef void _copy_recs(self, char *dst, Py_ssize_t n, bint release_gil)
    cdef list _fetch(self, Py_ssize_t max_frames, object timeout)
    cdef list _recv_modes(self, Py_ssize_t max_frames, object timeout)
    cdef int _end_read(self) except -100
    cdef int _end_view(self) except -1
    cdef object _take_records(self, Py_ssize_t max_frames, dict topic_bytes,
                              record_encoder encode)
    cdef object take_records(self, Py_ssize_t max_frames, dict topic_bytes,
                             record_encoder encode, object timeout)
