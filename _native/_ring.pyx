# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: binding=False
"""Binding of the C ring (fb_ring.h): the frame hot paths of FrameBus and Subscription.

framebus.bus subclasses Ring and Reader, so `bus.publish` and `sub.recv` are these
C methods with no Python frame in between.
"""
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_FillInfo, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset
from posix.mman cimport MAP_ANONYMOUS, MAP_FAILED, MAP_PRIVATE, PROT_READ, PROT_WRITE, mmap, munmap
from posix.fcntl cimport O_CREAT, O_EXCL, O_RDWR
from posix.stat cimport fstat, struct_stat
from posix.unistd cimport close as c_close, ftruncate, getpid, usleep
from libc.errno cimport EEXIST, ENOENT, errno

from fb_ring cimport *

from framebus.errors import BusClosed, FrameBusError, FrameTooLarge, WouldBlock

cdef enum:
    OVERFLOW_NOWAIT = -1  # try_publish
    OVERFLOW_BLOCK = 0
    OVERFLOW_ERROR = 1
    OVERFLOW_DROP = 2
    OVERFLOW_OVERWRITE = 3
cdef dict _OVERFLOW_CODES = {"block": 0, "error": 1, "drop": 2, "overwrite": 3}

# Waits and large copies release the GIL; below this many payload bytes a
# batch is copied with the GIL held (releasing it costs more than the copy).
RELEASE_GIL_BYTES = 64 * 1024
cdef uint64_t _release_gil_bytes = RELEASE_GIL_BYTES

# The envelope type of the layer above (framebus.envelope), registered by it: publish
# encodes such objects and sets their seq and ts_ns. The binding imports nothing above it.
cdef object _Envelope = None


def register_envelope_type(envelope_type):
    """Publish encodes objects of exactly this type (``encode()``, ``topic``, ``seq``,
    ``ts_ns``) instead of treating them as payloads."""
    global _Envelope
    if not isinstance(envelope_type, type):
        raise TypeError(f"an envelope type must be a class, got {envelope_type!r}")
    _Envelope = envelope_type

cdef object _DEFAULT = object()
DEFAULT = _DEFAULT
CLOSED = FB_RING_CLOSED  # what the wait methods return once the ring is closed

cdef extern from "Python.h":
    int PyObject_CheckBuffer(object)
    object PyMemoryView_FromMemory(char *mem, Py_ssize_t size, int flags)
    int PyBUF_READ
    int PyBUF_WRITE

cdef extern from "sys/mman.h" nogil:
    int madvise(void *addr, size_t length, int advice)
    int MADV_HUGEPAGE
    int MAP_SHARED
    int shm_open(const char *name, int oflag, int mode)
    int shm_unlink(const char *name)

cdef extern from "sys/stat.h" nogil:
    int fchmod(int fd, int mode)


cdef extern from "fcntl.h" nogil:
    int posix_fallocate(int fd, long offset, long length)


cdef int _raise_shm_error(int err, bytes shm_name, str what) except -1:
    import os
    where = "/dev/shm" + shm_name.decode()
    name = shm_name.decode().removeprefix("/framebus.")
    if err == ENOENT:
        raise FileNotFoundError(err, f"no framebus segment named {name!r}", where)
    if err == EEXIST:
        raise FileExistsError(err, f"a shared segment named {name!r} already exists", where)
    raise OSError(err, f"cannot {what} the shared segment: {os.strerror(err)}", where)


cdef void _prefault(char *mem, size_t size) noexcept nogil:
    cdef size_t off = 0
    while off < size:
        (<volatile char *>mem)[off] = 0
        off += 4096


cdef int _check(int rc, str what) except -1:
    """The one error gate: ring result codes to framebus exceptions."""
    if rc >= 0:
        return 0
    if rc == FB_RING_FULL:
        raise WouldBlock(f"{what}: the ring is full (backpressure threshold reached)")
    if rc == FB_RING_TIMEOUT:
        raise WouldBlock(f"{what}: timed out waiting for space in the ring")
    if rc == FB_RING_CLOSED:
        raise BusClosed(f"{what}: the bus is closed")
    if rc == FB_RING_NO_SLOT:
        raise FrameBusError(f"{what}: no free reader slot (all max_readers slots are in use)")
    if rc == FB_RING_TOO_LARGE:
        raise ValueError(f"{what}: too large for the ring")
    if rc == FB_RING_BAD_MAGIC:
        raise FrameBusError(f"{what}: not a framebus ring (bad magic number)")
    if rc == FB_RING_BAD_VERSION:
        raise FrameBusError(f"{what}: ring layout version differs from this framebus build")
    if rc == FB_RING_EINVAL:
        raise ValueError(f"{what}: invalid argument")
    raise FrameBusError(f"{what}: ring error {rc}")


cdef inline int64_t _timeout_ns(object timeout) except -2:
    """None -> -1 (forever); seconds -> ns."""
    if timeout is None:
        return -1
    cdef double t
    if type(timeout) is float or type(timeout) is int:
        t = timeout
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        t = float(timeout)
    else:
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if not (t >= 0.0):
        raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
    if t > 1e9:
        return -1
    return <int64_t>(t * 1e9)


cdef int64_t timeout_arg(object timeout) except -2:
    """A timeout argument in ns (-1: forever), for the modules built on the binding."""
    return _timeout_ns(timeout)


cdef Py_ssize_t max_frames_arg(object max_frames) except -1:
    """A max_frames argument as a C size: an int >= 1 (ValueError naming it otherwise;
    TypeError for a value that is not an int)."""
    cdef Py_ssize_t n
    try:
        n = max_frames
    except OverflowError:
        raise ValueError(f"max_frames must be >= 1 and < 2**63, got {max_frames}") from None
    if n < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    return n


cdef uint64_t realtime_ns() noexcept nogil:
    return fb_now_ns()


cdef inline int64_t _left(int64_t timeout_ns, uint64_t deadline):
    if timeout_ns < 0:
        return -1
    cdef uint64_t now = fb_mono_ns()
    return 0 if now >= deadline else <int64_t>(deadline - now)


cdef uint64_t group_key_of(bytes name):
    """FNV-1a: stable across processes (str hashes are salted)."""
    cdef uint64_t h = 14695981039346656037ULL
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(name)
    cdef Py_ssize_t i
    for i in range(PyBytes_GET_SIZE(name)):
        h ^= p[i]
        h *= 1099511628211ULL
    return h if h != 0 else 1


@cython.freelist(2048)
@cython.no_gc
@cython.final
cdef class Frame:
    """One received frame: .seq .topic .payload .ts_ns."""

    def __init__(self, seq, topic, payload, ts_ns):
        self.seq = seq
        self.topic = topic
        self.payload = payload
        self.ts_ns = ts_ns

    def __repr__(self):
        body = self.payload if len(self.payload) <= 32 else self.payload[:32] + b"..."
        return f"Frame(seq={self.seq}, topic={self.topic!r}, payload={body!r}, ts_ns={self.ts_ns})"

    def __eq__(self, other):
        if not isinstance(other, Frame):
            return NotImplemented
        cdef Frame o = other
        return (self.seq == o.seq and self.ts_ns == o.ts_ns and self.topic == o.topic
                and self.payload == o.payload)

    def __hash__(self):
        return hash((self.seq, self.topic, self.payload, self.ts_ns))

    def __reduce__(self):
        return (Frame, (self.seq, self.topic, self.payload, self.ts_ns))


# Payloads at least this big are copied out of the ring after the Frames exist, in
# one pass that can drop the GIL (when the batch's total reaches RELEASE_GIL_BYTES).
cdef uint32_t _DEFER_COPY_BYTES = 1024
# In-process rings remember the last _OBJS_KEPT bytes payloads under _DEFER_COPY_BYTES
# that this process published (at most 4 MiB kept alive), so a reader that keeps up
# gets the published object itself rather than a copy out of the ring.
cdef uint64_t _OBJS_KEPT = 4096


cdef extern from "Python.h":
    # macros on borrowed pointers: no reference counting of temporaries around them
    void _incref "Py_INCREF"(PyObject *o)
    void _xdecref "Py_XDECREF"(PyObject *o)
    bint _is_exact_bytes "PyBytes_CheckExact"(PyObject *o)
    PyObject **PySequence_Fast_ITEMS(object o)


cdef inline object _payload_of(Ring ring, const fb_frame_t *f):
    """A received frame's payload: the published bytes object when this process still
    remembers it under the frame's sequence number, else a copy out of the ring."""
    cdef _objref *e
    if ring.objs != NULL:
        e = &ring.objs[f.seq & ring.objs_mask]
        if e.seq == f.seq and e.obj != NULL:
            return <object>e.obj
    return PyBytes_FromStringAndSize(<const char *>f.data, f.len)


cdef extern from *:
    """
    /* A cheap clock for batch durations: the TSC on x86-64 (a few ns; clock_gettime
     * costs ~35 ns on some VMs), converted to ns at scrape time; ns elsewhere. */
    #if defined(__x86_64__)
    #include <x86intrin.h>
    static inline unsigned long long fb_ticks(void) { return __rdtsc(); }
    #define FB_TICKS_ARE_NS 0
    #else
    #include <time.h>
    static inline unsigned long long fb_ticks(void) {
        struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
        return (unsigned long long)t.tv_sec * 1000000000ull + (unsigned long long)t.tv_nsec;
    }
    #define FB_TICKS_ARE_NS 1
    #endif
    """
    int __builtin_clzll(unsigned long long x) nogil
    unsigned long long fb_ticks() nogil
    int FB_TICKS_ARE_NS

cdef uint64_t _ticks0 = fb_ticks()
cdef uint64_t _mono0 = fb_mono_ns()


cdef double _tick_ns = 0.0


def _ns_per_tick():
    """Nanoseconds per fb_ticks() tick: measured once, over at least 20 ms from import,
    then fixed (histogram bucket bounds must not move between scrapes)."""
    global _tick_ns
    if FB_TICKS_ARE_NS:
        return 1.0
    cdef uint64_t t1, m1
    if _tick_ns == 0.0:
        while True:
            t1 = fb_ticks()
            m1 = fb_mono_ns()
            if m1 - _mono0 >= 20000000:
                break
            with nogil:
                usleep(5000)
        _tick_ns = (m1 - _mono0) / <double>(t1 - _ticks0)
    return _tick_ns


cdef class Log2Histogram:
    """Counts of values in power-of-two buckets: upper bounds 2**lo, 2**(lo+step), ...
    up to 2**hi, then +Inf. Updated per batch from C (no per-frame cost); read at
    scrape time."""

    def __init__(self, int lo, int hi, int step=1):
        if not (0 <= lo < hi < 64 and step >= 1 and (hi - lo) % step == 0
                and (hi - lo) // step < _HIST_MAX):
            raise ValueError(f"bad bucket exponents lo={lo} hi={hi} step={step}")
        self.lo = lo
        self.hi = hi
        self.step = step
        self.n = (hi - lo) // step + 1

    @cython.final
    cdef inline void add(self, uint64_t v) noexcept:
        cdef int idx = 0
        if v > (<uint64_t>1 << self.lo):
            # ceil(log2(v)) - lo, rounded up to a whole step
            idx = ((64 - __builtin_clzll(v - 1)) - self.lo + self.step - 1) // self.step
            if idx > self.n:
                idx = self.n  # +Inf
        self.counts[idx] += 1
        self.count += 1
        self.total += v

    def observe(self, uint64_t v):
        self.add(v)

    def snapshot(self):
        """(finite upper bounds, counts per bucket with +Inf last, sum)."""
        bounds = [float(<uint64_t>1 << (self.lo + i * self.step)) for i in range(self.n)]
        counts = [self.counts[i] for i in range(self.n + 1)]
        return bounds, counts, self.total


def _scaled(snap, double factor):
    bounds, counts, total = snap
    return [b * factor for b in bounds], counts, total * factor


cdef class Ring:
    """A ring in memory this object owns (anonymous mapping)."""

    def __cinit__(self):
        # powers of 4: few buckets keep a scrape cheap
        self.hist_batch_frames = Log2Histogram(0, 16, 2)
        self.hist_batch_bytes = Log2Histogram(6, 30, 2)
        self.hist_batch_ticks = Log2Histogram(10, 36, 2)
        self.ring = NULL
        self.mem = NULL
        self.topic_ids = {"": 0}
        self.topic_names = [""]
        self.last_topic = ""
        self.last_topic_id = 0
        self.transition_cb = None

    def _ring_open(self, *, uint64_t data_bytes, uint64_t frame_capacity, uint32_t max_frame,
                   uint32_t max_readers, uint32_t max_topics, str overflow, double pause_hi,
                   double resume_lo, double backpressure, double unblock_timeout,
                   uint64_t start_seq, object publish_timeout, uint32_t spin,
                   bytes shm_name=None, bytes meta=b"", double dead_reader_timeout=0.0,
                   uint64_t frame_limit=0):
        """Map and format a new ring: anonymous memory, or a new POSIX shared-memory
        segment (mode 0600) when shm_name is given, with meta stored for attachers."""
        cdef fb_ring_params_t p
        cdef int fd = -1
        if self.mem != NULL:
            raise RuntimeError("ring already open")
        if len(meta) > FB_RING_META_BYTES - 4:
            raise ValueError(f"ring meta of {len(meta)} bytes exceeds {FB_RING_META_BYTES - 4}")
        memset(&p, 0, sizeof(p))
        p.data_bytes = data_bytes
        p.frame_capacity = frame_capacity
        p.max_frame = max_frame
        p.max_readers = max_readers
        p.max_topics = max_topics
        p.flags = FB_RING_OVERWRITE if _OVERFLOW_CODES[overflow] == OVERFLOW_OVERWRITE else 0
        if shm_name is not None:
            p.flags |= FB_RING_SHARED
        p.pause_hi = pause_hi
        p.resume_lo = resume_lo
        p.backpressure = backpressure
        p.unblock_timeout_ns = <uint64_t>(unblock_timeout * 1e9)
        p.start_seq = start_seq
        p.frame_limit = frame_limit
        # only a shared ring has readers in other processes that can die
        if shm_name is not None:
            p.dead_reader_timeout_ns = <uint64_t>(dead_reader_timeout * 1e9)
        cdef size_t size = fb_ring_required_size(&p)
        if size == 0:
            raise ValueError("ring parameters rejected by the ring (see BusConfig for the valid ranges)")
        cdef void *mem
        if shm_name is None:
            mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            if mem == MAP_FAILED:
                raise MemoryError(f"cannot map {size} bytes for the ring")
        else:
            fd = shm_open(shm_name, O_CREAT | O_EXCL | O_RDWR, 0o600)
            if fd < 0:
                _raise_shm_error(errno, shm_name, "create")
            try:
                if fchmod(fd, 0o600) != 0 or ftruncate(fd, size) != 0:
                    _raise_shm_error(errno, shm_name, "size")
                # reserve the pages now: on a full /dev/shm the prefault below would
                # otherwise die of SIGBUS instead of raising
                err = posix_fallocate(fd, 0, size)
                if err != 0:
                    _raise_shm_error(err, shm_name, f"reserve {size} bytes of /dev/shm for")
                mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                if mem == MAP_FAILED:
                    _raise_shm_error(errno, shm_name, "map")
            except BaseException:
                c_close(fd)
                shm_unlink(shm_name)
                raise
            c_close(fd)
        # Huge pages where the kernel allows them, and every page faulted in now:
        # first-lap page faults would otherwise land on the publish path.
        madvise(mem, size, MADV_HUGEPAGE)
        _prefault(<char *>mem, size)
        cdef uint32_t meta_len = len(meta)
        memcpy(<char *>mem + FB_RING_META_OFFSET, &meta_len, 4)
        if meta_len:
            memcpy(<char *>mem + FB_RING_META_OFFSET + 4, PyBytes_AS_STRING(meta), meta_len)
        rc = fb_ring_init(mem, size, &p)
        if rc != FB_RING_OK:
            munmap(mem, size)
            if shm_name is not None:
                shm_unlink(shm_name)
            _check(rc, "ring init")
        self._adopt(mem, size, shm_name is not None)
        self._configure(overflow, publish_timeout, spin)

    def _ring_attach(self, bytes shm_name):
        """Map an existing shared segment; returns the meta its creator stored."""
        cdef int fd
        cdef struct_stat st
        cdef void *mem
        cdef uint32_t meta_len
        if self.mem != NULL:
            raise RuntimeError("ring already open")
        fd = shm_open(shm_name, O_RDWR, 0)
        if fd < 0:
            _raise_shm_error(errno, shm_name, "attach")
        if fstat(fd, &st) != 0:
            err = errno
            c_close(fd)
            _raise_shm_error(err, shm_name, "attach")
        cdef size_t size = st.st_size
        where = "/dev/shm" + shm_name.decode()
        if size < FB_RING_META_OFFSET + FB_RING_META_BYTES:
            c_close(fd)
            raise FrameBusError(f"{where} is not a framebus segment: it holds only {size} bytes")
        mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        c_close(fd)
        if mem == MAP_FAILED:
            _raise_shm_error(errno, shm_name, "map")
        rc = fb_ring_check(mem, size)
        if rc != FB_RING_OK:
            version = fb_ring_layout_version(mem)
            munmap(mem, size)
            if rc == FB_RING_BAD_MAGIC:
                raise FrameBusError(f"{where} is not a framebus segment (no framebus magic number)")
            if rc == FB_RING_BAD_VERSION:
                raise FrameBusError(
                    f"{where} is a framebus segment of layout version {version}; "
                    f"this framebus reads layout version {FB_RING_LAYOUT_VERSION}")
            raise FrameBusError(f"{where} is a damaged or truncated framebus segment")
        memcpy(&meta_len, <char *>mem + FB_RING_META_OFFSET, 4)
        if meta_len > FB_RING_META_BYTES - 4:
            munmap(mem, size)
            raise FrameBusError(f"{where} is a damaged framebus segment (bad meta length)")
        meta = (<char *>mem + FB_RING_META_OFFSET + 4)[:meta_len]
        self._adopt(mem, size, True)
        return meta

    cdef void _adopt(self, void *mem, size_t size, bint shared):
        cdef fb_ring_params_t p
        self.mem = mem
        self.mem_size = size
        self.ring = <fb_ring_t *>mem
        self.shared = shared
        self.attach_entry = -1
        if shared:
            self.attach_entry = fb_ring_attach_register(self.ring, getpid())
        fb_ring_params(self.ring, &p)
        self.max_frame = p.max_frame
        self._closed = False
        if not shared and self.objs == NULL:
            self.objs_mask = min(_OBJS_KEPT, p.frame_capacity) - 1
            self.objs = <_objref *>calloc(self.objs_mask + 1, sizeof(_objref))

    @cython.final
    cdef inline void _remember(self, uint64_t seq, PyObject *payload) noexcept:
        """Keeps ``payload`` (exact bytes, small) as the object of frame ``seq``; the
        entry's earlier object is let go. Readers check the seq, so an entry taken
        over by a later frame is never mistaken for this one."""
        cdef _objref *e = &self.objs[seq & self.objs_mask]
        cdef PyObject *old = e.obj
        _incref(payload)
        e.obj = payload
        e.seq = seq
        _xdecref(old)

    cdef void _forget_all(self) noexcept:
        cdef uint64_t i
        cdef _objref *objs = self.objs
        cdef PyObject *o
        if objs == NULL:
            return
        self.objs = NULL
        for i in range(self.objs_mask + 1):
            o = objs[i].obj
            objs[i].obj = NULL
            Py_XDECREF(o)
        free(objs)

    def _configure(self, str overflow, object publish_timeout, uint32_t spin):
        """This handle's publish policy (a shared ring's overwrite flag is the creator's)."""
        cdef fb_ring_params_t p
        fb_ring_params(self.ring, &p)
        cdef int code = _OVERFLOW_CODES[overflow]
        if (code == OVERFLOW_OVERWRITE) != ((p.flags & FB_RING_OVERWRITE) != 0):
            raise ValueError(f"overflow={overflow!r} does not match how the ring was created")
        self.overflow = code
        self.publish_timeout_ns = _timeout_ns(publish_timeout)
        self.spin = spin

    @staticmethod
    def _shm_unlink(bytes shm_name):
        if shm_unlink(shm_name) != 0:
            _raise_shm_error(errno, shm_name, "unlink")

    @property
    def closed(self):
        """True once close() was called."""
        return self._closed or self.ring == NULL

    def _set_transition_callback(self, cb):
        self.transition_cb = cb

    def _set_durability(self, waiter):
        """Every write path (publish, try_publish, publish_batch, loans, and the ports
        built on them) returns only once ``waiter.wait_durable(seq)`` has returned for
        what it wrote; None: no wait. Set once, by the bus, when it is made."""
        if waiter is not None and not callable(getattr(waiter, "wait_durable", None)):
            raise TypeError(f"a durability waiter needs a wait_durable(seq) method, got {waiter!r}")
        self.durability = waiter

    @property
    def mapped_bytes(self):
        """Size of the ring's mapping (header, reader slots, topic table, data)."""
        return self.mem_size

    cdef inline int _ensure_open(self) except -1:
        if self.ring == NULL or self._closed:
            raise BusClosed("the bus is closed")
        return 0

    cdef int _transition(self) except -1:
        # The callback fires pending transitions in ring order from the header's
        # counters, so it does not matter which thread reports which one.
        if self.transition_cb is not None:
            self.transition_cb()
        return 0

    def _transitions(self):
        """(pause_events, resume_events) from the ring header."""
        cdef uint64_t p = 0, q = 0
        if self.ring != NULL:
            fb_ring_transitions(self.ring, &p, &q)
        return p, q

    cdef void _leave_nogil(self):
        self.active -= 1
        if self.active == 0 and self._closed:
            self._unmap()

    cdef void _unmap(self):
        if self.mem != NULL and self.active == 0:
            if self.shared:
                fb_ring_attach_unregister(self.ring, self.attach_entry, getpid())
            munmap(self.mem, self.mem_size)
            self.mem = NULL
            self.ring = NULL

    def _ring_close(self):
        """Wakes this handle's blocked calls with BusClosed; frees the memory once none is
        inside. A shared ring stays open for the other processes."""
        if self._closed:
            return
        self._closed = True
        self._forget_all()
        if self.ring != NULL:
            if self.shared:
                fb_ring_wake(self.ring, FB_SIGNAL_DATA)
                fb_ring_wake(self.ring, FB_SIGNAL_SPACE)
                fb_ring_wake(self.ring, FB_SIGNAL_USER)
                fb_ring_wake(self.ring, FB_SIGNAL_TRANSITION)
            else:
                fb_ring_close(self.ring)
        self._unmap()

    def __dealloc__(self):
        self._forget_all()
        if self.mem != NULL:
            if self.shared:
                fb_ring_attach_unregister(self.ring, self.attach_entry, getpid())
            munmap(self.mem, self.mem_size)

    # ---------------------------------------------------------------- topics

    @cython.final
    cdef inline uint32_t _topic_id(self, object topic) except? 0xFFFFFFFF:
        # Publishers mostly pass the same str object again: compare identity first.
        if topic is self.last_topic:
            return self.last_topic_id
        cdef object tid = self.topic_ids.get(topic)
        cdef uint32_t t
        if tid is not None:
            t = tid
        else:
            t = self._intern(topic)
        self.last_topic = topic
        self.last_topic_id = t
        return t

    cdef uint32_t _intern(self, object topic) except? 0xFFFFFFFF:
        cdef bytes raw = self._topic_bytes(topic)
        cdef uint32_t tid
        rc = fb_ring_topic_intern(self.ring, PyBytes_AS_STRING(raw), <uint32_t>len(raw), &tid)
        if rc == FB_RING_NO_SLOT:
            raise FrameBusError(f"topic table full: cannot add {topic!r} (raise max_topics)")
        _check(rc, "topic")
        self.topic_ids[topic] = tid
        return tid

    @cython.final
    cdef inline str _topic_name(self, uint32_t tid):
        if tid < <uint32_t>len(self.topic_names):
            name = self.topic_names[tid]
            if name is not None:
                return name
        return self._load_topic_name(tid)

    cdef str _load_topic_name(self, uint32_t tid):
        cdef const char *name
        cdef uint32_t n
        if fb_ring_topic_name(self.ring, tid, &name, &n) != FB_RING_OK:
            return f"?{tid}"
        s = name[:n].decode("utf-8")
        while <uint32_t>len(self.topic_names) <= tid:
            self.topic_names.append(None)
        self.topic_names[tid] = s
        self.topic_ids.setdefault(s, tid)
        return s

    def _topic_bytes(self, topic):
        """A topic's UTF-8 bytes, checked, on its first use by this handle. The bus
        overrides this with the full topic rules (framebus.topics)."""
        if not isinstance(topic, str):
            raise TypeError(f"topic must be a str, not {type(topic).__name__}")
        raw = topic.encode("utf-8")
        if len(raw) > FB_RING_TOPIC_MAX_LEN:
            raise ValueError(f"topic {topic!r} is {len(raw)} UTF-8 bytes long: at most "
                             f"{FB_RING_TOPIC_MAX_LEN} allowed")
        return raw

    def topic_id(self, topic):
        self._ensure_open()
        return self._topic_id(topic)

    def topic_name(self, uint32_t tid):
        self._ensure_open()
        return self._topic_name(tid)

    # ------------------------------------------------------------- publishing

    @cython.final
    cdef inline int _get_payload(self, object data, Py_buffer *view, _payload *out) except -1:
        """bytes fast path; any contiguous buffer otherwise (view must be released)."""
        if PyBytes_CheckExact(data):
            out.ptr = PyBytes_AS_STRING(data)
            out.len = PyBytes_GET_SIZE(data)
            return 0
        if not PyObject_CheckBuffer(data):
            raise TypeError(
                "payload must be a bytes-like object (bytes, bytearray, memoryview, numpy array), "
                f"not {type(data).__name__!r}")
        try:
            PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
        except (BufferError, ValueError) as exc:
            raise TypeError(f"payload of type {type(data).__name__!r} is not C-contiguous: {exc}") from None
        out.ptr = <const char *>view.buf
        out.len = view.len
        return 1

    cdef int64_t _publish_timeout(self, object timeout) except -2:
        if timeout is _DEFAULT:
            return self.publish_timeout_ns
        return _timeout_ns(timeout)

    def publish(self, data, topic="", timeout=_DEFAULT):
        """Publish one frame; returns its sequence number (-1 if dropped in drop mode)."""
        return self._publish_one(data, topic, self.overflow, timeout)

    def try_publish(self, data, topic=""):
        """Publish without waiting: the sequence number, or -1 when there is no room."""
        return self._publish_one(data, topic, OVERFLOW_NOWAIT, None)

    @cython.final
    cdef inline object _publish_one(self, object data, object topic, int overflow, object timeout):
        cdef object env = None
        if type(data) is _Envelope:
            env = data
            topic = _envelope_topic(env, topic)
            data = env.encode()
        return self._write_one(data, topic, overflow, timeout, env, NULL)

    @cython.final
    cdef object _write_one(self, object data, object topic, int overflow, object timeout,
                           object env, bint *written):
        """The one single-frame write path: ``data`` (bytes-like; ``env``'s encoding when
        env is an Envelope, which gets the record's seq and ts_ns) on ``topic``. Returns
        the sequence number, -1 when not written; on a durable bus, once it is durable."""
        cdef Py_buffer view
        cdef _payload pl
        cdef fb_iov_t iov
        cdef uint64_t seq = 0
        cdef int rc
        cdef int has_view = 0
        self._ensure_open()
        cdef uint32_t tid = self._topic_id(topic)
        cdef uint64_t ts = fb_now_ns()
        if PyBytes_CheckExact(data):
            pl.ptr = PyBytes_AS_STRING(data)
            pl.len = PyBytes_GET_SIZE(data)
        else:
            has_view = self._get_payload(data, &view, &pl)
        try:
            if <uint64_t>pl.len > self.max_frame:
                raise FrameTooLarge(pl.len, self.max_frame)
            rc = fb_ring_write(self.ring, pl.ptr, <uint32_t>pl.len, tid, ts, &seq)
            if rc == FB_RING_FULL:
                if overflow == OVERFLOW_NOWAIT:
                    return -1
                if overflow == OVERFLOW_DROP:
                    fb_ring_add_dropped(self.ring, 1)
                    return -1
                if overflow == OVERFLOW_BLOCK:
                    iov.data = pl.ptr
                    iov.len = <uint32_t>pl.len
                    iov.topic = tid
                    rc = self._write_wait(&iov, 1, 0, &seq, NULL, timeout, "publish", ts)
            if rc > 0:
                self._transition()
            elif rc < 0:
                _check(rc, "publish")
        finally:
            if has_view:
                PyBuffer_Release(&view)
        if written != NULL:
            written[0] = True
        if self.objs != NULL and rc >= 0 and PyBytes_CheckExact(data) and <uint32_t>pl.len < _DEFER_COPY_BYTES:
            self._remember(seq, <PyObject *>data)
        if env is not None:
            env.seq = seq
            env.ts_ns = ts
        if self.durability is not None:
            self.durability.wait_durable(seq)
        return seq

    def publish_batch(self, frames, topic="", timeout=_DEFAULT):
        """Publish frames as one claim: consecutive sequence numbers; returns the first.

        In drop mode the longest prefix that fits is written and the rest counted as
        dropped; returns -1 when nothing fitted.
        """
        return self._publish_many(frames, topic, timeout, True, NULL)

    @cython.final
    cdef object _publish_many(self, object frames, object topic, object timeout,
                              bint envelopes_own_topic, bint *written_out):
        """The one batch write path. Envelopes among ``frames`` are encoded and get their
        record's seq and ts_ns; they go on their own topic (``envelopes_own_topic``) or
        on ``topic``. On a durable bus it returns once the batch is durable."""
        self._ensure_open()
        cdef uint64_t t0 = fb_ticks()
        cdef uint32_t tid = self._topic_id(topic)
        seq_obj = PySequence_Fast(frames, "publish_batch needs a sequence of bytes-like frames")
        cdef Py_ssize_t n = PySequence_Fast_GET_SIZE(seq_obj)
        if n == 0:
            raise ValueError("publish_batch needs at least one frame, got an empty sequence")
        if n > 0xFFFFFFF:
            raise ValueError(f"publish_batch: {n} frames in one batch is too many")
        cdef fb_iov_t *iov = <fb_iov_t *>malloc(n * sizeof(fb_iov_t))
        cdef Py_buffer *views = NULL
        cdef Py_ssize_t nviews = 0, i
        cdef object item
        cdef _payload pl
        cdef Py_buffer view
        cdef uint64_t first = 0, total = 0, ts = 0
        cdef uint32_t written = 0
        cdef int rc
        cdef list envs = None, encoded = None  # Envelopes in the batch, their encodings
        cdef PyObject **items
        if iov == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                item = <object>PySequence_Fast_GET_ITEM(seq_obj, i)
                iov[i].topic = tid
                if type(item) is _Envelope:
                    if envs is None:
                        envs = []
                        encoded = []
                    envs.append((i, item))
                    if envelopes_own_topic:
                        iov[i].topic = self._topic_id(_envelope_topic(item, topic))
                    item = (<object>item).encode()
                    encoded.append(item)
                if PyBytes_CheckExact(item):
                    pl.ptr = PyBytes_AS_STRING(item)
                    pl.len = PyBytes_GET_SIZE(item)
                else:
                    if views == NULL:
                        views = <Py_buffer *>malloc(n * sizeof(Py_buffer))
                        if views == NULL:
                            raise MemoryError()
                    self._get_payload(item, &views[nviews], &pl)
                    nviews += 1
                if <uint64_t>pl.len > self.max_frame:
                    raise FrameTooLarge(pl.len, self.max_frame)
                iov[i].data = pl.ptr
                iov[i].len = <uint32_t>pl.len
                total += <uint64_t>pl.len
            rc = self._write_batch(iov, <uint32_t>n, total, &first, &written, timeout, &ts)
            if rc == FB_RING_TOO_LARGE:
                raise ValueError(
                    f"publish_batch: {n} frames ({total} payload bytes) can never fit in this ring "
                    "at once; split the batch")
            if rc == FB_RING_FULL and self.overflow == OVERFLOW_DROP:
                fb_ring_add_dropped(self.ring, n)
                return -1
            if rc > 0:
                self._transition()
            elif rc < 0:
                _check(rc, "publish_batch")
            if <Py_ssize_t>written < n:
                fb_ring_add_dropped(self.ring, n - written)
            self.hist_batch_frames.add(<uint64_t>n)
            self.hist_batch_bytes.add(total)
            self.hist_batch_ticks.add(fb_ticks() - t0)
            if written_out != NULL:
                written_out[0] = True
            if self.objs != NULL:
                items = PySequence_Fast_ITEMS(seq_obj)
                for i in range(<Py_ssize_t>written):
                    if _is_exact_bytes(items[i]) and iov[i].len < _DEFER_COPY_BYTES:
                        self._remember(first + <uint64_t>i, items[i])
            if envs is not None:
                for i, item in envs:
                    if i < <Py_ssize_t>written:
                        item.seq = first + <uint64_t>i
                        item.ts_ns = ts
            if self.durability is not None and written:
                self.durability.wait_durable(first + written - 1)
            return first
        finally:
            for i in range(nviews):
                PyBuffer_Release(&views[i])
            free(views)
            free(iov)

    cdef int _write_batch(self, fb_iov_t *iov, uint32_t n, uint64_t total, uint64_t *first,
                          uint32_t *written, object timeout, uint64_t *ts_out=NULL) except? -100:
        cdef uint32_t flags = FB_WRITE_PARTIAL if self.overflow == OVERFLOW_DROP else 0
        cdef uint64_t ts = fb_now_ns()
        if ts_out != NULL:
            ts_out[0] = ts
        cdef int rc
        if total < _release_gil_bytes:
            rc = fb_ring_write_batch(self.ring, iov, n, ts, flags, first, written)
        else:
            self.active += 1
            with nogil:
                rc = fb_ring_write_batch(self.ring, iov, n, ts, flags, first, written)
            self._leave_nogil()
        if rc != FB_RING_FULL or self.overflow != OVERFLOW_BLOCK:
            return rc
        return self._write_wait(iov, n, flags, first, written, timeout, "publish_batch", ts)

    cdef int _write_wait(self, fb_iov_t *iov, uint32_t n, uint32_t flags, uint64_t *first,
                         uint32_t *written, object timeout, str what,
                         uint64_t ts=0) except? -100:
        """Blocking write with the GIL released; signals are handled between waits."""
        cdef int64_t timeout_ns = self._publish_timeout(timeout)
        cdef uint64_t deadline = fb_mono_ns() + <uint64_t>(timeout_ns if timeout_ns > 0 else 0)
        cdef int64_t left = timeout_ns
        if ts == 0:
            ts = fb_now_ns()
        cdef int rc
        while True:
            self.active += 1
            with nogil:
                rc = fb_ring_write_batch_wait(self.ring, iov, n, ts, flags, first, written, left,
                                              self.spin, <const volatile int *>&self._closed)
            self._leave_nogil()
            if rc != FB_RING_INTR:
                break
            PyErr_CheckSignals()
            self._ensure_open()
            left = _left(timeout_ns, deadline)
        if rc == FB_RING_TIMEOUT:
            raise WouldBlock(f"{what}: ring still full after {timeout_ns / 1e9:g} s")
        return rc

    # ------------------------------------------------------------------- loans

    def loan(self, Py_ssize_t nbytes, topic="", timeout=_DEFAULT):
        """Reserve nbytes in the ring and write the frame in place (no copy).

        ``with bus.loan(n, topic="cam.0") as buf: buf[:] = pixels`` publishes on a clean
        exit and gives the space up (readers skip it) if the block raises. ``buf`` is
        a writable memoryview, released at the end of the block; arrays made from it (numpy)
        must not be used after the block either. When the ring is
        full a loan waits in ``block`` mode and raises WouldBlock in the others.
        """
        cdef Loan ln = Loan.__new__(Loan)
        cdef int rc
        cdef int64_t timeout_ns, left
        cdef uint64_t deadline
        self._ensure_open()
        if nbytes < 0:
            raise ValueError(f"loan size must be >= 0, got {nbytes}")
        if <uint64_t>nbytes > self.max_frame:
            raise FrameTooLarge(nbytes, self.max_frame)
        cdef uint32_t tid = self._topic_id(topic)
        rc = fb_ring_claim(self.ring, <uint32_t>nbytes, tid, fb_now_ns(), &ln.claim)
        if rc == FB_RING_FULL and self.overflow == OVERFLOW_BLOCK:
            timeout_ns = self._publish_timeout(timeout)
            deadline = fb_mono_ns() + <uint64_t>(timeout_ns if timeout_ns > 0 else 0)
            while rc == FB_RING_FULL:
                left = _left(timeout_ns, deadline)
                if left == 0:
                    raise WouldBlock(f"loan: ring still full after {timeout_ns / 1e9:g} s")
                self.active += 1
                with nogil:
                    rc = fb_ring_wait_writable(self.ring, fb_ring_record_bytes(<uint32_t>nbytes), 1,
                                               left, self.spin)
                self._leave_nogil()
                if rc == FB_RING_INTR:
                    PyErr_CheckSignals()
                self._ensure_open()
                rc = fb_ring_claim(self.ring, <uint32_t>nbytes, tid, fb_now_ns(), &ln.claim)
        if rc == FB_RING_FULL:
            raise WouldBlock("loan: the ring is full (backpressure threshold reached)")
        _check(rc, "loan")
        if rc > 0:
            self._transition()
        ln.ring = self
        ln.view = PyMemoryView_FromMemory(<char *>ln.claim.data, nbytes, PyBUF_WRITE)
        self.active += 1  # the mapping outlives the loan even if the bus closes
        return ln

    # ------------------------------------------------------------------ state

    @property
    def paused(self):
        """True from the publish that brought usage to pause_hi until a read brings it to resume_lo."""
        if self.ring == NULL:
            return False
        return bool(fb_ring_is_paused(self.ring))

    @property
    def next_seq(self):
        """The sequence number the next published frame will get."""
        self._ensure_open()
        return fb_ring_next_seq(self.ring)

    def _ring_stats(self):
        cdef fb_ring_stats_t s
        self._ensure_open()
        fb_ring_stats(self.ring, &s)
        return {
            "published": s.published,
            "published_bytes": s.published_bytes,
            "dropped": s.dropped,
            "ring_used": s.used_frames,
            "ring_used_bytes": s.used_bytes,
            "capacity": s.frame_capacity,
            "capacity_bytes": s.data_bytes,
            "paused": bool(s.paused),
            "pause_events": s.pause_events,
            "resume_events": s.resume_events,
            "unblocked": s.unblocked,
            "lapped": s.lapped,
            "evicted": s.evicted,
            "creator_pid": s.creator_pid,
            "max_readers": s.max_readers,
            "next_seq": s.next_seq,
            "readers": s.readers,
            "topics": s.topics,
        }

    def _batch_histograms(self):
        """This process's publish_batch calls: {name: (bounds, counts, sum)}."""
        return {
            "batch_frames": self.hist_batch_frames.snapshot(),
            "batch_bytes": self.hist_batch_bytes.snapshot(),
            "batch_ns": _scaled(self.hist_batch_ticks.snapshot(), _ns_per_tick()),
        }

    def _reader_info(self, uint32_t slot):
        cdef fb_reader_info_t i
        self._ensure_open()
        _check(fb_ring_reader_info(self.ring, slot, &i), "reader info")
        return {"backlog": i.backlog, "lagged": i.lagged, "next_seq": i.seq,
                "members": i.members, "active": bool(i.active), "owner_pid": i.owner_pid,
                "group": i.group_key != 0}

    def _wait_data_signal_register(self):
        """Register as a data waiter; returns the signal value to wait on."""
        self._ensure_open()
        return fb_ring_watch(self.ring, FB_SIGNAL_DATA)

    def _wait_data_signal(self, uint32_t seen, timeout):
        """Sleep until the data signal moves (GIL released); unregisters. Returns a code."""
        cdef int64_t t = _timeout_ns(timeout)
        cdef int rc
        if self.ring == NULL:
            return FB_RING_CLOSED
        if self._closed:
            fb_ring_unwatch(self.ring, FB_SIGNAL_DATA)  # else a shared ring keeps a waiter
            return FB_RING_CLOSED
        self.active += 1
        with nogil:
            rc = fb_ring_wait(self.ring, FB_SIGNAL_DATA, seen, t)
        self._leave_nogil()
        return rc

    def _watch_transitions(self, timeout=None):
        """Sleeps (GIL released) until a pause/resume transition by any process, a wake
        or the timeout. Returns False once this handle is closed."""
        cdef int64_t t = _timeout_ns(timeout)
        cdef uint32_t seen
        cdef int rc
        if self.ring == NULL or self._closed:
            return False
        seen = fb_ring_watch(self.ring, FB_SIGNAL_TRANSITION)
        try:
            if self.transition_cb is not None:
                self.transition_cb()  # whatever happened before registering
        except BaseException:
            fb_ring_unwatch(self.ring, FB_SIGNAL_TRANSITION)
            raise
        self.active += 1
        with nogil:
            rc = fb_ring_wait(self.ring, FB_SIGNAL_TRANSITION, seen, t)
        self._leave_nogil()
        if rc == FB_RING_INTR:
            PyErr_CheckSignals()
        return not self._closed

    def _attached_alive(self):
        """Live processes holding this shared ring mapped (this one included)."""
        self._ensure_open()
        return fb_ring_attached_alive(self.ring)

    def _evict_dead(self):
        """Release the cursors of reader processes dead for dead_reader_timeout; how many."""
        self._ensure_open()
        return fb_ring_evict_dead(self.ring)

    def _wake_readers(self):
        if self.ring != NULL and not self._closed:
            fb_ring_wake(self.ring, FB_SIGNAL_DATA)

    # --------------------------- counters in the header for the layers above (task counts)

    cdef inline int _check_user(self, uint32_t i) except -1:
        self._ensure_open()
        if i >= FB_RING_USER_COUNTERS:
            raise ValueError(f"user counter index {i} out of range 0..{FB_RING_USER_COUNTERS - 1}")
        return 0

    def _user_add(self, uint32_t i, int64_t delta):
        """Adds delta to shared counter i; returns the new value."""
        self._check_user(i)
        return fb_ring_user_add(self.ring, i, <uint64_t>delta)

    def _user_dec(self, uint32_t i):
        """Decrements shared counter i unless it is 0: the new value, or -1 if it was 0."""
        cdef uint64_t v = 0
        self._check_user(i)
        if fb_ring_user_dec(self.ring, i, &v) != FB_RING_OK:
            return -1
        return v

    def _user_get(self, uint32_t i):
        self._check_user(i)
        return fb_ring_user_get(self.ring, i)

    def _user_wake(self):
        """Wakes every process waiting in _user_wait."""
        self._ensure_open()
        fb_ring_wake(self.ring, FB_SIGNAL_USER)

    def _user_wait(self, uint32_t i, uint64_t target, timeout=None, bint at_least=False):
        """Waits (GIL released) until counter i equals target (or, with at_least, reaches
        it): True, or False on timeout. Whoever moves the counter calls _user_wake."""
        cdef int64_t timeout_ns = _timeout_ns(timeout)
        cdef uint64_t deadline = 0
        cdef int64_t left
        cdef uint32_t seen
        cdef uint64_t v
        cdef int rc
        self._check_user(i)
        if timeout_ns > 0:
            deadline = fb_mono_ns() + <uint64_t>timeout_ns
        while True:
            # the signal first: a wake after this load makes the futex wait return
            seen = fb_ring_watch(self.ring, FB_SIGNAL_USER)
            v = fb_ring_user_get(self.ring, i)
            if v == target or (at_least and v > target):
                fb_ring_unwatch(self.ring, FB_SIGNAL_USER)
                return True
            left = _left(timeout_ns, deadline)
            if left == 0:
                fb_ring_unwatch(self.ring, FB_SIGNAL_USER)
                return False
            self.active += 1
            with nogil:
                rc = fb_ring_wait(self.ring, FB_SIGNAL_USER, seen, left)
            self._leave_nogil()
            if rc == FB_RING_INTR:
                PyErr_CheckSignals()
            self._ensure_open()

    # ------------------- per-topic counters for the layers above (DataPort credits)

    cdef inline int _check_counter(self, uint32_t tid) except -1:
        self._ensure_open()
        if tid == 0 or tid > self.ring_max_topics():
            raise ValueError(f"topic id {tid} has no counter (ids are 1..max_topics)")
        return 0

    cdef uint32_t ring_max_topics(self):
        cdef fb_ring_params_t p
        fb_ring_params(self.ring, &p)
        return p.max_topics

    def _counter_add(self, uint32_t tid, uint64_t delta):
        """Adds delta to topic tid's shared counter (waking waiters); the new value."""
        self._check_counter(tid)
        return fb_ring_counter_add(self.ring, tid, delta)

    def _counter_get(self, uint32_t tid):
        self._check_counter(tid)
        return fb_ring_counter_get(self.ring, tid)

    def _counter_exchange(self, uint32_t tid, uint64_t value):
        """Sets topic tid's counter to value; returns the old value."""
        self._check_counter(tid)
        return fb_ring_counter_exchange(self.ring, tid, value)

    def _counter_max(self, uint32_t tid, uint64_t value):
        """Raises topic tid's counter to value if below (waking waiters); the result."""
        self._check_counter(tid)
        return fb_ring_counter_max(self.ring, tid, value)

    def _counter_wait(self, uint32_t tid, uint64_t at_least, timeout=None):
        """Waits (GIL released) until topic tid's counter is >= at_least: True, or
        False on timeout. Raises BusClosed when the ring closes."""
        self._check_counter(tid)
        return self._await_counter(tid, at_least, False, _timeout_ns(timeout), None) != 0

    def _counter_sub(self, uint32_t tid, uint64_t delta):
        """Takes min(value, delta) from topic tid's counter at once; returns it."""
        self._check_counter(tid)
        return fb_ring_counter_take(self.ring, tid, delta)

    def _counter_wake(self):
        """Wakes every topic-counter wait on this ring (e.g. to see a close)."""
        self._ensure_open()
        fb_ring_wake(self.ring, FB_SIGNAL_COUNTER)

    cdef uint64_t _await_counter(self, uint32_t tid, uint64_t n, bint take,
                                 int64_t timeout_ns, object cancel) except? 0xFFFFFFFFFFFFFFFF:
        """With take: takes up to n from topic tid's counter, waiting (GIL released) up to
        timeout_ns (< 0: forever) for it to be nonzero; the amount taken, 0 on timeout.
        Without: 1 once the counter is >= n, 0 on timeout. cancel: an object whose
        truth, checked after each wake, ends the wait (0). BusClosed once closed."""
        cdef uint64_t deadline = 0
        cdef uint64_t got
        cdef int64_t left
        cdef uint32_t seen
        cdef int rc
        if timeout_ns > 0:
            deadline = fb_mono_ns() + <uint64_t>timeout_ns
        while True:
            # register first: an add after this makes the futex wait return
            seen = fb_ring_watch(self.ring, FB_SIGNAL_COUNTER)
            if take:
                got = fb_ring_counter_take(self.ring, tid, n)
            else:
                got = fb_ring_counter_get(self.ring, tid) >= n
            left = _left(timeout_ns, deadline)
            if got or left == 0 or self._closed or (cancel is not None and cancel):
                fb_ring_unwatch(self.ring, FB_SIGNAL_COUNTER)
                self._ensure_open()
                return got
            self.active += 1
            with nogil:
                rc = fb_ring_wait(self.ring, FB_SIGNAL_COUNTER, seen, left)
            self._leave_nogil()
            if rc == FB_RING_INTR:
                PyErr_CheckSignals()
            self._ensure_open()

    cdef uint64_t c_counter_take(self, uint32_t tid, uint64_t n) noexcept:
        return fb_ring_counter_take(self.ring, tid, n)

    cdef void c_counter_add(self, uint32_t tid, uint64_t n) noexcept:
        if n and not self._closed and self.ring != NULL:
            fb_ring_counter_add(self.ring, tid, n)

    cdef void c_user_add(self, uint32_t i, uint64_t n) noexcept:
        if not self._closed and self.ring != NULL and i < FB_RING_USER_COUNTERS:
            fb_ring_user_add(self.ring, i, n)

    def _intern_name(self, str name):
        """Interns any name (1..248 UTF-8 bytes, no topic syntax check): its id."""
        self._ensure_open()
        cdef object tid = self.topic_ids.get(name)
        if tid is not None:
            return tid
        cdef bytes raw = name.encode("utf-8")
        cdef uint32_t t
        if not raw or len(raw) > FB_RING_TOPIC_MAX_LEN:
            raise ValueError(f"name {name!r} must be 1..{FB_RING_TOPIC_MAX_LEN} UTF-8 bytes")
        rc = fb_ring_topic_intern(self.ring, PyBytes_AS_STRING(raw), <uint32_t>len(raw), &t)
        if rc == FB_RING_NO_SLOT:
            raise FrameBusError(f"topic table full: cannot add {name!r} (raise max_topics)")
        _check(rc, "topic")
        self.topic_ids[name] = t
        return t

    def _topic_names(self, uint32_t start=1):
        """(id, name) of the interned topics with id >= start, in id order."""
        self._ensure_open()
        cdef const char *name
        cdef uint32_t n
        cdef uint32_t tid = start if start else 1
        out = []
        while fb_ring_topic_name(self.ring, tid, &name, &n) == FB_RING_OK:
            out.append((tid, name[:n].decode("utf-8", "replace")))
            tid += 1
        return out


cdef object _envelope_topic(object env, object topic):
    """The topic an Envelope is published on: its own (a topic argument must agree)."""
    cdef str own = env.topic
    if topic is None or topic == "" or topic == own:
        return own
    raise ValueError(
        f"publishing an Envelope with topic {own!r} on topic {topic!r}: an Envelope goes "
        "on its own topic (leave the topic argument out)")


cdef object _frombuffer = None
cdef object _dtype_u64 = None
cdef object _dtype_u32 = None


cdef object _view(bytes buf, bint wide):
    """A numpy view of a FrameBatch field array (numpy imported on first use)."""
    global _frombuffer, _dtype_u64, _dtype_u32
    if _frombuffer is None:
        import numpy
        _dtype_u64 = numpy.dtype("uint64")
        _dtype_u32 = numpy.dtype("uint32")
        _frombuffer = numpy.frombuffer
    return _frombuffer(buf, _dtype_u64 if wide else _dtype_u32)


cdef inline bytes _u64_array(Py_ssize_t n):
    return PyBytes_FromStringAndSize(NULL, n * 8)


cdef inline bytes _u32_array(Py_ssize_t n):
    return PyBytes_FromStringAndSize(NULL, n * 4)


@cython.final
cdef class _RingSpan:
    """Read-only buffer over a borrowed span of the ring that counts its exports, so a
    numpy array or memoryview still alive at the release is noticed (BufferError)."""
    cdef const char *ptr
    cdef Py_ssize_t size
    cdef Py_ssize_t exports

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        PyBuffer_FillInfo(buffer, self, <void *>self.ptr, self.size, 1, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *buffer):
        self.exports -= 1


cdef class FrameBatch:
    """Frames read in one pass (``Subscription.recv_frames``): their payloads copied
    once, back to back (``data``), and their fields in arrays, so nothing is made per
    frame until it is asked for.

    ``len(batch)``; ``batch[i]`` and iteration make Frames; ``batch.payloads()`` makes
    the bytes; ``batch.topic(i)``. Numpy views without copies (numpy imported on first
    use): ``seqs``, ``ts_ns``, ``offsets`` (uint64; where each payload starts in
    ``data``), ``topic_ids``, ``lengths`` (uint32); ``batch.array(dtype, shape)``: the
    payloads as one array, when every frame has the same size.

    A borrowed batch (``recv_frames(n, borrow=True)``) copies nothing: ``data`` is a
    read-only memoryview of the ring span holding the frames (record headers between
    the payloads: use ``offsets``), valid until ``release()`` or the end of its
    with-block, which hand the frames back to the producers. Frames and bytes made
    from it are copies and stay valid; arrays from ``array()`` point into the ring.
    A batch that is not borrowed can be used in a with-block too (it does nothing).
    """

    @staticmethod
    cdef FrameBatch _build(Ring ring, bytes data, _rec *recs, Py_ssize_t n):
        cdef FrameBatch b = FrameBatch.__new__(FrameBatch)
        b._allocate(n, data)
        b._fill(ring, recs, n, NULL)
        return b

    cdef void _fill(self, Ring ring, _rec *recs, Py_ssize_t n, const char *base):
        """The field arrays from recs; offsets count from base (the ring span of a
        borrowed batch), or run back to back when base is NULL."""
        cdef Py_ssize_t i
        cdef uint64_t off = 0
        cdef uint32_t last_tid = 0xFFFFFFFF
        cdef uint64_t *seqs = <uint64_t *>PyBytes_AS_STRING(self._seqs)
        cdef uint64_t *ts = <uint64_t *>PyBytes_AS_STRING(self._ts)
        cdef uint64_t *offs = <uint64_t *>PyBytes_AS_STRING(self._offs)
        cdef uint32_t *tids = <uint32_t *>PyBytes_AS_STRING(self._tids)
        cdef uint32_t *lens = <uint32_t *>PyBytes_AS_STRING(self._lens)
        for i in range(n):
            seqs[i] = recs[i].seq
            ts[i] = recs[i].ts_ns
            lens[i] = recs[i].len
            tids[i] = recs[i].topic
            if base != NULL:
                offs[i] = <uint64_t>(<const char *>recs[i].data - base)
            else:
                offs[i] = off
            off += recs[i].len
            if recs[i].topic != last_tid:
                last_tid = recs[i].topic
                if last_tid not in self._topics:
                    self._topics[last_tid] = ring._topic_name(last_tid)
        self.total = off

    @staticmethod
    cdef FrameBatch _borrow(Ring ring, object reader, _rec *recs, Py_ssize_t n):
        """A batch over the n records in place (n >= 1, in one span of the ring)."""
        cdef FrameBatch b = FrameBatch.__new__(FrameBatch)
        cdef const char *lo = <const char *>recs[0].data
        cdef const char *hi = <const char *>recs[n - 1].data + recs[n - 1].len
        cdef _RingSpan span = _RingSpan.__new__(_RingSpan)
        span.ptr = lo
        span.size = hi - lo
        b._allocate(n, None)
        b.span = span
        b.data = memoryview(span)
        b.base = lo
        b._fill(ring, recs, n, lo)
        b.reader = reader
        return b

    @staticmethod
    def of(frames):
        """A FrameBatch of Frames already made (a durable group's frames from the WAL)."""
        cdef FrameBatch b = FrameBatch.__new__(FrameBatch)
        cdef Py_ssize_t n = len(frames), i
        cdef Frame fr
        cdef uint64_t off = 0
        cdef dict ids = {}
        b._allocate(n, b"".join([(<Frame>fr).payload for fr in frames]))
        cdef uint64_t *seqs = <uint64_t *>PyBytes_AS_STRING(b._seqs)
        cdef uint64_t *ts = <uint64_t *>PyBytes_AS_STRING(b._ts)
        cdef uint64_t *offs = <uint64_t *>PyBytes_AS_STRING(b._offs)
        cdef uint32_t *tids = <uint32_t *>PyBytes_AS_STRING(b._tids)
        cdef uint32_t *lens = <uint32_t *>PyBytes_AS_STRING(b._lens)
        for i in range(n):
            fr = <Frame>frames[i]
            seqs[i] = fr.seq
            ts[i] = fr.ts_ns
            offs[i] = off
            lens[i] = <uint32_t>len(fr.payload)
            off += lens[i]
            # ids local to this batch: these frames may not come from the ring's table
            tid = ids.get(fr.topic)
            if tid is None:
                tid = len(ids) + 1
                ids[fr.topic] = tid
                b._topics[tid] = fr.topic
            tids[i] = <uint32_t>tid
        b.total = off
        return b

    cdef void _allocate(self, Py_ssize_t n, bytes data):
        self.n = n
        self.data = data
        self.base = PyBytes_AS_STRING(data) if data is not None else NULL
        self._seqs = _u64_array(n)
        self._ts = _u64_array(n)
        self._offs = _u64_array(n)
        self._tids = _u32_array(n)
        self._lens = _u32_array(n)
        self._topics = {}

    cdef int _check_live(self) except -1:
        if self.base == NULL and self.n:
            raise ValueError("this borrowed FrameBatch was released: its frames are back "
                             "in the ring (copy what you keep before the release)")
        return 0

    @property
    def borrowed(self):
        """True while this batch holds frames in place in the ring (until release)."""
        return self.reader is not None

    def release(self):
        """Hand a borrowed batch's frames back to the producers (nothing to do for a
        batch that is not borrowed). Its arrays of fields stay usable."""
        if self.reader is None:
            return
        cdef Reader reader = <Reader>self.reader
        self.reader = None
        self.base = NULL
        leaked = False
        try:
            self.data.release()
        except BufferError:
            leaked = True
        # an array of array() keeps the span as its base: one reference more than ours
        leaked = (leaked or (<_RingSpan>self.span).exports > 0
                  or (<PyObject *>self.span).ob_refcnt > 1)
        self.span = None
        reader._end_view()
        if leaked:
            raise BufferError("an export of the borrowed batch (e.g. an array from array()) "
                              "outlived it; copy what you keep")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.release()
        return False

    def __dealloc__(self):
        if self.reader is not None:
            (<Reader>self.reader)._end_view()

    def __len__(self):
        return self.n

    def __bool__(self):
        return self.n > 0

    cdef Py_ssize_t _index(self, Py_ssize_t i) except -1:
        if i < 0:
            i += self.n
        if i < 0 or i >= self.n:
            raise IndexError(f"frame index out of range (this batch holds {self.n})")
        return i

    cdef bytes _payload(self, Py_ssize_t i):
        cdef uint64_t off = (<const uint64_t *>PyBytes_AS_STRING(self._offs))[i]
        cdef uint32_t n = (<const uint32_t *>PyBytes_AS_STRING(self._lens))[i]
        return PyBytes_FromStringAndSize(self.base + off, n)

    cdef Frame _frame_at(self, Py_ssize_t i):
        cdef Frame fr = Frame.__new__(Frame)
        fr.seq = (<const uint64_t *>PyBytes_AS_STRING(self._seqs))[i]
        fr.ts_ns = (<const uint64_t *>PyBytes_AS_STRING(self._ts))[i]
        fr.topic = self._topics[(<const uint32_t *>PyBytes_AS_STRING(self._tids))[i]]
        fr.payload = self._payload(i)
        return fr

    def __getitem__(self, index):
        self._check_live()
        if isinstance(index, slice):
            return [self._frame_at(i) for i in range(*index.indices(self.n))]
        return self._frame_at(self._index(index))

    def __iter__(self):
        cdef Py_ssize_t i
        for i in range(self.n):
            self._check_live()
            yield self._frame_at(i)

    def payloads(self):
        """The payloads as a list of bytes."""
        cdef Py_ssize_t i
        self._check_live()
        return [self._payload(i) for i in range(self.n)]

    def topic(self, Py_ssize_t i):
        """The topic of frame i."""
        i = self._index(i)
        return self._topics[(<const uint32_t *>PyBytes_AS_STRING(self._tids))[i]]

    @property
    def nbytes(self):
        """Payload bytes in the batch."""
        return self.total

    @property
    def seqs(self):
        return _view(self._seqs, True)

    @property
    def ts_ns(self):
        return _view(self._ts, True)

    @property
    def offsets(self):
        return _view(self._offs, True)

    @property
    def topic_ids(self):
        """Topic ids (the bus's topic table; see topic(i) for the names)."""
        return _view(self._tids, False)

    @property
    def lengths(self):
        return _view(self._lens, False)

    def array(self, dtype="u1", shape=None):
        """The payloads as one read-only numpy array of len(batch) rows, no copy: each
        row is a frame's payload as ``dtype`` (reshaped to ``shape`` when given).
        ValueError unless every frame in the batch has the same size. A borrowed batch
        gives a view into the ring (valid until its release) when its frames are evenly
        spaced there, a copy otherwise (frames of other topics between them)."""
        import numpy
        self._check_live()
        lens = self.lengths
        if self.n and (lens != lens[0]).any():
            sizes = sorted(set(lens.tolist()))
            raise ValueError(f"array() needs frames of one size; this batch holds sizes "
                             f"{sizes[:5]}{' ...' if len(sizes) > 5 else ''}")
        if self.n == 0:
            a = numpy.frombuffer(b"", dtype=dtype).reshape((0, 0))
            return a if shape is None else a.reshape((0, *((shape,) if isinstance(shape, int) else shape)))
        size = int(lens[0])
        if self.reader is None:
            a = numpy.frombuffer(self.data, dtype=dtype)
        else:
            offs = self.offsets
            stride = int(offs[1] - offs[0]) if self.n > 1 else size
            if self.n > 1 and (numpy.diff(offs) != stride).any():
                a = numpy.frombuffer(b"".join(self.payloads()), dtype=dtype)
            else:
                rows = numpy.ndarray((self.n, size), dtype="u1", buffer=self.span,
                                     offset=int(offs[0]), strides=(stride, 1))
                a = rows.view(dtype)
        if shape is None:
            return a.reshape((self.n, -1))
        if isinstance(shape, int):
            shape = (shape,)
        return a.reshape((self.n, *shape))

    def __repr__(self):
        how = ", borrowed" if self.reader is not None else ""
        return f"<FrameBatch of {self.n} frames, {self.total} payload bytes{how}>"


cdef class Loan:
    """Space claimed in the ring by FrameBus.loan(); publish with commit() or the with-block."""
    cdef Ring ring
    cdef fb_claim_t claim
    cdef object view
    cdef bint done

    @property
    def seq(self):
        """The sequence number the frame gets when committed."""
        return self.claim.seq

    def __enter__(self):
        return self.view

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False

    cdef int _finish(self, bint publish) except -1:
        if self.done:
            raise RuntimeError("this loan was already committed or aborted")
        self.done = True
        leaked = False
        try:
            self.view.release()
        except BufferError:
            leaked = True
        if self.ring.ring != NULL:
            if publish:
                fb_ring_commit(self.ring.ring, &self.claim)
            else:
                fb_ring_abort(self.ring.ring, &self.claim)
        self.ring._leave_nogil()
        if leaked:
            raise BufferError("an export of the loaned buffer (e.g. a pickle.PickleBuffer) outlived "
                              "the loan; the frame was " + ("published" if publish else "dropped"))
        return 0

    def commit(self):
        """Publish the frame; returns its sequence number (on a durable bus, once durable)."""
        cdef bint written = self.ring.ring != NULL
        self._finish(True)
        if written and self.ring.durability is not None:
            self.ring.durability.wait_durable(self.claim.seq)
        return self.claim.seq

    def abort(self):
        """Give the space up: readers skip it."""
        self._finish(False)

    def __dealloc__(self):
        if not self.done and self.ring is not None and self.ring.ring != NULL:
            fb_ring_abort(self.ring.ring, &self.claim)
            self.ring._leave_nogil()


cdef class FrameView:
    """A frame borrowed from the ring by Subscription.recv_view(): no copy.

    ``payload`` is a read-only memoryview valid inside the with-block; leaving it
    releases the frame to the producers. Arrays made from it (``array()``, numpy) point
    into the ring and must not be used after the block: copy what you keep.
    """
    cdef Reader reader
    cdef readonly uint64_t seq
    cdef readonly str topic
    cdef readonly uint64_t ts_ns
    cdef readonly object payload
    cdef bint done

    def array(self, dtype="u1", shape=None):
        """The payload as a numpy array (no copy), valid inside the with-block."""
        import numpy
        a = numpy.frombuffer(self.payload, dtype=dtype)
        return a if shape is None else a.reshape(shape)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.release()
        return False

    def release(self):
        """Hand the frame back (advance the subscription past it)."""
        if self.done:
            return
        self.done = True
        leaked = False
        try:
            self.payload.release()
        except BufferError:
            leaked = True
        self.reader._end_view()
        if leaked:
            raise BufferError("an export of the borrowed payload (e.g. a pickle.PickleBuffer) "
                              "outlived the view; copy what you keep")

    def __dealloc__(self):
        if not self.done and self.reader is not None:
            self.reader._end_view()


cdef class Reader:
    """One cursor in the ring (a subscription, or a member of a group)."""

    def __cinit__(self):
        self.opened = False
        self.match_state = NULL
        self.lap_log = NULL
        self.copies = NULL
        self.recs = NULL

    def _reader_open(self, Ring ring, object matcher, bint match_all, group):
        ring._ensure_open()
        cdef uint64_t key = 0
        if group is not None:
            key = group_key_of(group.encode("utf-8"))
        cdef uint32_t slot
        _check(fb_ring_reader_open(ring.ring, key, getpid(), &slot), "subscribe")
        self.ring = ring
        self.slot = slot
        self.is_group = key != 0
        memset(&self.rd, 0, sizeof(self.rd))
        self.rd.slot = slot
        self.matcher = matcher
        self.match_all = match_all
        self.overwrite = ring.overflow == OVERFLOW_OVERWRITE
        self.opened = True

    def _reader_close(self):
        if not self.opened:
            return
        if self.copying or self.view_out:
            self.close_pending = True  # closed once the copy is done / the view released
            return
        self.opened = False
        self.cancelled = 1  # before the wake (a seq_cst RMW), so a woken wait sees it
        if self.ring.ring != NULL and not self.ring._closed:
            rc = fb_ring_reader_close(self.ring.ring, self.slot)
            fb_ring_wake(self.ring.ring, FB_SIGNAL_DATA)
            if rc == FB_RING_RESUMED:
                self.ring._transition()

    def _forget(self):
        """Drop the cursor without releasing it: a forked child's copy of its parent's
        subscription must not release the parent's membership."""
        self.opened = False

    @property
    def closed(self):
        return not self.opened or self.ring is None or self.ring._closed

    def __dealloc__(self):
        free(self.match_state)
        free(self.lap_log)
        free(self.copies)
        free(self.recs)

    cdef inline int _ensure_open(self) except -1:
        if self.ring is None or self.ring.ring == NULL or self.ring._closed:
            raise BusClosed("the bus is closed")
        if not self.opened:
            raise BusClosed("the subscription is closed")
        return 0

    cdef int _matches(self, uint32_t tid) except -1:
        if self.match_all:
            return 1
        if tid < self.match_len and self.match_state[tid] != 0:
            return self.match_state[tid] == 1
        return self._resolve_match(tid)

    cdef int _resolve_match(self, uint32_t tid) except -1:
        cdef uint32_t n
        cdef unsigned char *grown
        if tid >= self.match_len:
            n = tid + 64
            grown = <unsigned char *>realloc(self.match_state, n)
            if grown == NULL:
                raise MemoryError()
            memset(grown + self.match_len, 0, n - self.match_len)
            self.match_state = grown
            self.match_len = n
        ok = bool(self.matcher(self.ring._topic_name(tid)))
        self.match_state[tid] = 1 if ok else 2
        return 1 if ok else 0

    @cython.final
    cdef inline Frame _frame(self, fb_frame_t *f):
        cdef Frame fr = Frame.__new__(Frame)
        fr.seq = f.seq
        fr.ts_ns = f.ts_ns
        fr.topic = self.ring._topic_name(f.topic)
        fr.payload = _payload_of(self.ring, f) if f.len < _DEFER_COPY_BYTES else \
            PyBytes_FromStringAndSize(<const char *>f.data, f.len)
        return fr

    cdef int _log_lap(self, Py_ssize_t i, fb_frame_t *f) except -1:
        cdef uint64_t *grown
        if i >= self.lap_cap:
            grown = <uint64_t *>realloc(self.lap_log, (i + 256) * 2 * sizeof(uint64_t))
            if grown == NULL:
                raise MemoryError()
            self.lap_log = grown
            self.lap_cap = i + 256
        self.lap_log[2 * i] = f.pos
        self.lap_log[2 * i + 1] = f.seq
        return 0

    cdef void _account_laps(self, Py_ssize_t logged, uint64_t intact_from):
        """Overwrite mode: sequence gaps among intact records are frames lost to lapping."""
        cdef Py_ssize_t i
        cdef uint64_t pos, seq, lost = 0
        # the cursor's sequence at begin is the next frame owed to this slot (shared by a group)
        cdef uint64_t expected = self.rd.start_seq
        for i in range(logged):
            pos = self.lap_log[2 * i]
            seq = self.lap_log[2 * i + 1]
            if pos < intact_from:
                continue
            if seq > expected:
                lost += seq - expected
            if seq + 1 > expected:
                expected = seq + 1
        if lost:
            self.lagged += lost
            fb_ring_reader_add_lagged(self.ring.ring, self.slot, lost)

    cdef list _take(self, Py_ssize_t max_frames, bint payloads_only=False):
        """Reads up to max_frames matching frames without waiting (GIL held): Frames,
        or with payloads_only their payloads (bytes), no Frame made."""
        cdef fb_ring_t *r = self.ring.ring
        cdef fb_frame_t f
        cdef int rc, erc
        cdef list out
        cdef Py_ssize_t logged, i, kept
        cdef list pos_list
        cdef Py_ssize_t taken
        cdef bint overwrite = self.overwrite
        cdef uint32_t last_tid = 0xFFFFFFFF
        cdef str last_topic = None
        cdef Frame fr
        cdef bytes payload
        cdef Py_ssize_t ncopies = 0
        cdef uint64_t deferred = 0
        while True:
            out = []
            taken = 0
            logged = 0
            pos_list = None
            fb_ring_read_begin(r, &self.rd)
            while taken < max_frames:
                rc = fb_ring_read_next(r, &self.rd, &f)
                if rc != FB_RING_OK:
                    break
                if overwrite:
                    self._log_lap(logged, &f)
                    logged += 1
                if not self.match_all and not self._matches(f.topic):
                    continue
                # payloads of _DEFER_COPY_BYTES and more are allocated now and filled
                # below: big copies run without the GIL
                if payloads_only:
                    if f.len < _DEFER_COPY_BYTES:
                        out.append(_payload_of(self.ring, &f))
                    else:
                        payload = PyBytes_FromStringAndSize(NULL, f.len)
                        self._defer_copy(ncopies, PyBytes_AS_STRING(payload), f.data, f.len)
                        ncopies += 1
                        deferred += f.len
                        out.append(payload)
                else:
                    if f.topic != last_tid:
                        last_tid = f.topic
                        last_topic = self.ring._topic_name(f.topic)
                    fr = Frame.__new__(Frame)
                    fr.seq = f.seq
                    fr.ts_ns = f.ts_ns
                    fr.topic = last_topic
                    if f.len < _DEFER_COPY_BYTES:
                        fr.payload = _payload_of(self.ring, &f)
                    else:
                        fr.payload = PyBytes_FromStringAndSize(NULL, f.len)
                        self._defer_copy(ncopies, PyBytes_AS_STRING(fr.payload), f.data, f.len)
                        ncopies += 1
                        deferred += f.len
                    out.append(fr)
                taken += 1
                if overwrite:
                    if pos_list is None:
                        pos_list = []
                    pos_list.append(f.pos)
            if ncopies:
                self._run_copies(ncopies, deferred >= _release_gil_bytes)
                ncopies = 0
                deferred = 0
            erc = self._end_read()
            if erc == FB_RING_RETRY:
                continue  # another member of the group took these frames first
            if self.overwrite:
                if erc == FB_RING_LAPPED:
                    kept = 0
                    for i in range(len(out)):
                        if <uint64_t>pos_list[i] >= self.rd.intact_from:
                            out[kept] = out[i]
                            kept += 1
                    del out[kept:]
                    self._account_laps(logged, self.rd.intact_from)
                else:
                    self._account_laps(logged, 0)
            if self.close_pending:
                self.close_pending = False
                self._reader_close()
            return out

    cdef int _defer_copy(self, Py_ssize_t i, char *dst, const unsigned char *src, uint32_t n) except -1:
        cdef _copy *grown
        if i >= self.copies_cap:
            grown = <_copy *>realloc(self.copies, (i + 64) * sizeof(_copy))
            if grown == NULL:
                raise MemoryError()
            self.copies = grown
            self.copies_cap = i + 64
        self.copies[i].dst = dst
        self.copies[i].src = src
        self.copies[i].len = n
        return 0

    cdef void _run_copies(self, Py_ssize_t n, bint release_gil):
        """Copy payloads out of the ring; the read is not ended yet, so they stay put.

        While the GIL is released a concurrent close of this subscription is held
        back (close_pending) so that its slot is not reused under the copy.
        """
        cdef Py_ssize_t i
        cdef _copy *c = self.copies
        if not release_gil:
            for i in range(n):
                memcpy(c[i].dst, c[i].src, c[i].len)
            return
        self.copying = True
        self.ring.active += 1
        with nogil:
            for i in range(n):
                memcpy(c[i].dst, c[i].src, c[i].len)
        self.ring._leave_nogil()
        self.copying = False

    cdef object _take_one(self):
        """The next matching frame or None, without waiting (GIL held)."""
        cdef fb_ring_t *r = self.ring.ring
        cdef fb_frame_t f
        cdef int rc, erc
        cdef object fr
        if self.overwrite:
            got = self._take(1)
            return got[0] if got else None
        while True:
            fr = None
            fb_ring_read_begin(r, &self.rd)
            while True:
                rc = fb_ring_read_next(r, &self.rd, &f)
                if rc != FB_RING_OK:
                    break
                if self._matches(f.topic):
                    fr = self._frame(&f)
                    break
            # read_end inline rather than _end_read: this is the single-frame hot path
            erc = fb_ring_read_end(r, &self.rd)
            if erc == FB_RING_RETRY:
                continue  # another member of the group took it first
            if self.rd.resumed:
                self.ring._transition()
            return fr

    cdef int _wait(self, int64_t timeout_ns) except -100:
        cdef int rc
        self.ring.active += 1
        with nogil:
            rc = fb_ring_wait_readable_cancel(self.ring.ring, self.slot, timeout_ns,
                                              self.ring.spin, <const volatile int *>&self.cancelled)
        self.ring._leave_nogil()
        if rc == FB_RING_INTR:
            PyErr_CheckSignals()
        return rc

    cdef object _recv(self, Py_ssize_t max_frames, object timeout, int kind=TAKE_FRAMES):
        """Up to max_frames frames, waiting up to timeout: a list of Frames, of payloads
        (TAKE_PAYLOADS) or a FrameBatch (TAKE_BATCH); empty on timeout."""
        cdef int64_t timeout_ns = _timeout_ns(timeout)
        cdef uint64_t deadline = 0
        cdef int64_t left
        cdef object got
        if self.busy:
            raise RuntimeError("this subscription is already being read by another thread; "
                               "give each thread its own subscription or use a group")
        self._ensure_open()
        got = self._take_kind(max_frames, kind)
        if got or timeout_ns == 0:
            return got
        if timeout_ns > 0:
            deadline = fb_mono_ns() + <uint64_t>timeout_ns
        self.busy = True
        try:
            while True:
                left = _left(timeout_ns, deadline)
                if left == 0:
                    return got
                self._wait(left)
                self._ensure_open()
                got = self._take_kind(max_frames, kind)
                if got:
                    return got
        finally:
            self.busy = False

    cdef inline object _take_kind(self, Py_ssize_t max_frames, int kind):
        if kind == TAKE_BATCH:
            return self._take_batch(max_frames)
        return self._take(max_frames, kind == TAKE_PAYLOADS)

    def recv(self, timeout=None):
        """The next frame, waiting up to timeout seconds (None: forever); None on timeout."""
        cdef object fr
        cdef list got
        if self.backfill is not None or self.decoder is not None:
            got = self._recv_modes(1, timeout)
            return got[0] if got else None
        if not self.busy and self.opened and not self.ring._closed:
            fr = self._take_one()
            if fr is not None:
                return fr
        got = self._recv(1, timeout)
        return got[0] if got else None

    def recv_batch(self, object max_frames, timeout=None):
        """Up to max_frames frames (at least one unless the timeout expires: then [])."""
        cdef Py_ssize_t n = max_frames_arg(max_frames)
        if self.backfill is not None or self.decoder is not None:
            return self._recv_modes(n, timeout)
        return self._recv(n, timeout)

    def recv_payloads(self, object max_frames, timeout=None):
        """Up to max_frames payloads (bytes), at least one unless the timeout expires
        (then []): recv_batch without a Frame per frame, for consumers that only want
        the payloads. Not for envelopes=True subscriptions (use recv_batch)."""
        cdef list frames
        cdef Py_ssize_t n = max_frames_arg(max_frames)
        if self.decoder is not None:
            raise ValueError("recv_payloads hands back raw payloads; this subscription "
                             "decodes envelopes (envelopes=True): use recv_batch")
        if self.backfill is not None:  # a durable group's frames from the WAL first
            frames = self._fetch(n, timeout)
            return [(<Frame>fr).payload for fr in frames]
        return self._recv(n, timeout, TAKE_PAYLOADS)

    def recv_frames(self, object max_frames, timeout=None, *, bint borrow=False):
        """Up to max_frames frames as one FrameBatch (empty on timeout): their payloads
        copied once, back to back, and their fields in arrays; a Frame or bytes is made
        only when asked for. Not for envelopes=True subscriptions.

        ``borrow=True``: no copy; the batch holds the frames in place in the ring until
        it is released (``with`` block or ``release()``), and the subscription cannot
        be read again until then. As ``recv_view``: only for subscriptions of their own
        (not groups) on a bus that is not in overwrite mode, where no producer can
        reuse the frames' space while they are borrowed.
        """
        cdef Py_ssize_t n = max_frames_arg(max_frames)
        if self.decoder is not None:
            raise ValueError("recv_frames hands back raw frames; this subscription "
                             "decodes envelopes (envelopes=True): use recv_batch")
        if borrow:
            return self._recv_borrowed(n, timeout)
        if self.backfill is not None:  # a durable group's frames from the WAL first
            return FrameBatch.of(self._fetch(n, timeout))
        return self._recv(n, timeout, TAKE_BATCH)

    cdef int _check_borrow(self, str call, str instead) except -1:
        """A borrowing read needs the frames to stay put until released: refused in
        overwrite mode, on groups (another member may commit past them) and while busy."""
        self._ensure_open()
        if self.overwrite:
            raise ValueError(f"{call} is not available in overwrite mode (frames can be "
                             f"overwritten while borrowed); use {instead}")
        if self.is_group:
            raise ValueError(f"{call} is not available on a group subscription; use {instead}")
        if self.busy:
            raise RuntimeError("this subscription is busy (another read or an unreleased "
                               "view or batch)")
        return 0

    cdef FrameBatch _recv_borrowed(self, Py_ssize_t max_frames, object timeout):
        cdef fb_ring_t *r
        cdef fb_frame_t f
        cdef fb_read_t before
        cdef Py_ssize_t n
        cdef int64_t timeout_ns = _timeout_ns(timeout)
        cdef uint64_t deadline = fb_mono_ns() + <uint64_t>(timeout_ns if timeout_ns > 0 else 0)
        cdef int64_t left
        self._check_borrow("recv_frames(borrow=True)", "recv_frames()")
        r = self.ring.ring
        while True:
            n = 0
            fb_ring_read_begin(r, &self.rd)
            while n < max_frames:
                before = self.rd
                if fb_ring_read_next(r, &self.rd, &f) != FB_RING_OK:
                    break
                if not self.match_all and not self._matches(f.topic):
                    continue
                if n and f.data < self.recs[n - 1].data:
                    self.rd = before  # the ring wrapped: this frame starts the next batch
                    break
                self._keep_rec(n, &f)
                n += 1
            if n:
                break
            self._end_read()  # skipped frames of other topics are passed
            left = _left(timeout_ns, deadline)
            if left == 0:
                return FrameBatch._build(self.ring, b"", self.recs, 0)
            self.busy = True
            try:
                self._wait(left)
            finally:
                self.busy = False
            self._ensure_open()
        try:
            b = FrameBatch._borrow(self.ring, self, self.recs, n)
        except BaseException:
            self._end_read()
            raise
        self.busy = True
        self.view_out = True
        self.ring.active += 1
        return b

    @cython.final
    cdef inline int _keep_rec(self, Py_ssize_t n, const fb_frame_t *f) except -1:
        """Record frame f as the n-th of the read in progress (ended on a failure)."""
        cdef _rec *grown
        if n >= self.recs_cap:
            grown = <_rec *>realloc(self.recs, (n * 2 + 64) * sizeof(_rec))
            if grown == NULL:
                self._end_read()
                raise MemoryError()
            self.recs = grown
            self.recs_cap = n * 2 + 64
        self.recs[n].seq = f.seq
        self.recs[n].ts_ns = f.ts_ns
        self.recs[n].pos = f.pos
        self.recs[n].data = f.data
        self.recs[n].topic = f.topic
        self.recs[n].len = f.len
        return 0

    cdef FrameBatch _take_batch(self, Py_ssize_t max_frames):
        """Reads up to max_frames matching frames without waiting (GIL held) into one
        FrameBatch: no Python object per frame."""
        cdef fb_ring_t *r = self.ring.ring
        cdef fb_frame_t f
        cdef int erc
        cdef Py_ssize_t n, i, kept, logged
        cdef uint64_t total
        cdef bint overwrite = self.overwrite
        cdef bytes data
        while True:
            n = 0
            total = 0
            logged = 0
            fb_ring_read_begin(r, &self.rd)
            while n < max_frames:
                if fb_ring_read_next(r, &self.rd, &f) != FB_RING_OK:
                    break
                if overwrite:
                    self._log_lap(logged, &f)
                    logged += 1
                if not self.match_all and not self._matches(f.topic):
                    continue
                self._keep_rec(n, &f)
                total += f.len
                n += 1
            data = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>total)
            self._copy_recs(PyBytes_AS_STRING(data), n, total >= _release_gil_bytes)
            erc = self._end_read()
            if erc == FB_RING_RETRY:
                continue  # another member of the group took these frames first
            if overwrite:
                if erc == FB_RING_LAPPED:
                    # a lapped record may be torn: keep the intact ones only
                    data, n = self._keep_intact(data, n, self.rd.intact_from)
                    self._account_laps(logged, self.rd.intact_from)
                else:
                    self._account_laps(logged, 0)
            if self.close_pending:
                self.close_pending = False
                self._reader_close()
            return FrameBatch._build(self.ring, data, self.recs, n)

    cdef tuple _keep_intact(self, bytes data, Py_ssize_t n, uint64_t intact_from):
        """(data, n) of the records at intact_from or later, moved to the front."""
        cdef Py_ssize_t i, kept = 0, keep_bytes = 0
        cdef uint64_t off = 0
        cdef _rec *recs = self.recs
        for i in range(n):
            if recs[i].pos >= intact_from:
                keep_bytes += recs[i].len
        fresh = PyBytes_FromStringAndSize(NULL, keep_bytes)
        cdef char *dst = PyBytes_AS_STRING(fresh)
        cdef const char *src = PyBytes_AS_STRING(data)
        for i in range(n):
            if recs[i].pos >= intact_from:
                memcpy(dst, src + off, recs[i].len)
                dst += recs[i].len
                recs[kept] = recs[i]
                kept += 1
            off += recs[i].len
        return fresh, kept

    cdef void _copy_recs(self, char *dst, Py_ssize_t n, bint release_gil):
        # the read is not ended yet, so the payloads stay put; a close meanwhile waits
        # (close_pending) so that the slot is not reused under the copy
        cdef Py_ssize_t i
        cdef _rec *recs = self.recs
        if not release_gil:
            for i in range(n):
                memcpy(dst, recs[i].data, recs[i].len)
                dst += recs[i].len
            return
        self.copying = True
        self.ring.active += 1
        with nogil:
            for i in range(n):
                memcpy(dst, recs[i].data, recs[i].len)
                dst += recs[i].len
        self.ring._leave_nogil()
        self.copying = False

    def _set_modes(self, backfill=None, decoder=None):
        """A durable group's backfill (``take(n)`` -> frames, ``done``) is read before the
        ring until it runs out; ``decoder(reader, frames)`` turns what is read into the
        items handed out (an empty result means all were dropped: read on)."""
        self.backfill = backfill
        self.decoder = decoder

    cdef list _fetch(self, Py_ssize_t max_frames, object timeout):
        cdef list got
        if self.backfill is not None:
            if not self.opened or self.ring._closed:
                raise BusClosed("the subscription is closed")
            got = self.backfill.take(max_frames)
            if got:
                return got
            if self.backfill.done:
                self.backfill = None
        return self._recv(max_frames, timeout)

    cdef list _recv_modes(self, Py_ssize_t max_frames, object timeout):
        cdef int64_t timeout_ns = _timeout_ns(timeout)
        cdef uint64_t deadline = fb_mono_ns() + <uint64_t>(timeout_ns if timeout_ns > 0 else 0)
        cdef int64_t left = timeout_ns
        cdef list frames, items
        while True:
            frames = self._fetch(max_frames, None if left < 0 else left / 1e9)
            if self.decoder is None or not frames:
                return frames
            items = self.decoder(self, frames)
            if items:
                return items
            left = _left(timeout_ns, deadline)  # all were dropped or skipped: read on

    def recv_view(self, timeout=None):
        """The next frame borrowed in place (FrameView), or None on timeout.

        Only for subscriptions of their own (not groups) on a bus that is not in
        overwrite mode: there no producer can reuse the frame's space until the view
        is released. The subscription cannot be read again until then.
        """
        cdef fb_frame_t f
        cdef int rc
        cdef int64_t timeout_ns = _timeout_ns(timeout)
        cdef uint64_t deadline = fb_mono_ns() + <uint64_t>(timeout_ns if timeout_ns > 0 else 0)
        cdef int64_t left
        self._check_borrow("recv_view", "recv")
        while True:
            fb_ring_read_begin(self.ring.ring, &self.rd)
            while True:
                rc = fb_ring_read_next(self.ring.ring, &self.rd, &f)
                if rc != FB_RING_OK or self._matches(f.topic):
                    break
            if rc == FB_RING_OK:
                break
            self._end_read()  # skipped frames of other topics are passed
            left = _left(timeout_ns, deadline)
            if left == 0:
                return None
            self.busy = True
            try:
                self._wait(left)
            finally:
                self.busy = False
            self._ensure_open()
        cdef FrameView v = FrameView.__new__(FrameView)
        v.reader = self
        v.seq = f.seq
        v.ts_ns = f.ts_ns
        v.topic = self.ring._topic_name(f.topic)
        v.payload = PyMemoryView_FromMemory(<char *>f.data, f.len, PyBUF_READ)
        self.busy = True
        self.view_out = True
        self.ring.active += 1
        return v

    cdef int _end_read(self) except -100:
        """End the read (publish the cursor); report a resume. Returns the ring's code."""
        cdef int erc = fb_ring_read_end(self.ring.ring, &self.rd)
        if self.rd.resumed:  # also set when the code is LAPPED
            self.ring._transition()
        return erc

    cdef int _end_view(self) except -1:
        self.busy = False
        self.view_out = False
        try:
            if self.ring.ring != NULL and self.opened:
                self._end_read()
        finally:
            self.ring._leave_nogil()
        if self.close_pending:
            self.close_pending = False
            self._reader_close()
        return 0

    cdef object _take_records(self, Py_ssize_t max_frames, dict topic_bytes,
                              record_encoder encode):
        """Up to max_frames frames passed to ``encode`` straight from the ring (no Frame
        objects): (keys, values, value_bytes, first_seq, last_seq), or None."""
        cdef fb_ring_t *r = self.ring.ring
        cdef fb_frame_t f
        cdef list keys = []
        cdef list values = []
        cdef Py_ssize_t total = 0, n = 0
        cdef uint64_t first = 0, last = 0
        cdef uint32_t last_tid = 0xFFFFFFFF
        cdef bytes tb = b""
        fb_ring_read_begin(r, &self.rd)
        try:
            while n < max_frames:
                if fb_ring_read_next(r, &self.rd, &f) != FB_RING_OK:
                    break
                if f.topic != last_tid:
                    name = self.ring._topic_name(f.topic)
                    t = topic_bytes.get(name)
                    if t is None:
                        t = name.encode("utf-8")
                        topic_bytes[name] = t
                    tb = <bytes>t
                    last_tid = f.topic
                if n == 0:
                    first = f.seq
                last = f.seq
                total += encode(keys, values, f.seq, tb, <const char *>f.data, f.len, f.ts_ns)
                n += 1
        finally:
            self._end_read()
        if n == 0:
            return None
        return keys, values, total, first, last

    cdef object take_records(self, Py_ssize_t max_frames, dict topic_bytes,
                             record_encoder encode, object timeout):
        """Like recv_batch, but every frame is handed to ``encode`` (see _take_records),
        for a writer of the frames elsewhere (the WAL): (keys, values, value_bytes,
        first_seq, last_seq), or None on timeout. For a broadcast subscription to every
        topic outside overwrite mode."""
        cdef int64_t timeout_ns = _timeout_ns(timeout)
        cdef uint64_t deadline = 0
        cdef int64_t left
        if self.is_group or self.overwrite or not self.match_all:
            raise ValueError("reading records needs a broadcast '>' subscription outside "
                             "overwrite mode")
        self._ensure_open()
        got = self._take_records(max_frames, topic_bytes, encode)
        if got is not None or timeout_ns == 0:
            return got
        if timeout_ns > 0:
            deadline = fb_mono_ns() + <uint64_t>timeout_ns
        while True:
            left = _left(timeout_ns, deadline)
            if left == 0:
                return None
            self._wait(left)
            self._ensure_open()
            got = self._take_records(max_frames, topic_bytes, encode)
            if got is not None:
                return got

    def _readable(self):
        if self.ring is None or self.ring.ring == NULL or self.ring._closed or not self.opened:
            return True
        return bool(fb_ring_readable(self.ring.ring, self.slot))

    def _info(self):
        self._ensure_open()
        return self.ring._reader_info(self.slot)


# ------------------------------------------------------- pickling help for Queue

cdef Py_ssize_t _plain_budget(object obj, Py_ssize_t budget, int depth):
    """Spends one unit per object; -1 once something is not a plain builtin."""
    cdef type t = type(obj)
    if budget <= 0 or depth > 8:
        return -1
    budget -= 1
    if (t is int or t is float or t is str or t is bytes or t is bool or obj is None
            or t is bytearray):
        return budget
    if t is tuple or t is list:
        for item in obj:
            budget = _plain_budget(item, budget, depth + 1)
            if budget < 0:
                return -1
        return budget
    if t is dict:
        for k, v in (<dict>obj).items():
            budget = _plain_budget(k, budget, depth + 1)
            if budget < 0:
                return -1
            budget = _plain_budget(v, budget, depth + 1)
            if budget < 0:
                return -1
        return budget
    return -1


def plain_builtins(obj, Py_ssize_t budget=256):
    """True if obj is made only of None, bool, int, float, str, bytes, bytearray,
    tuple, list and dict (at most ``budget`` objects): types every pickler handles
    itself, without consulting a dispatch table, so any pickler gives the same bytes."""
    return _plain_budget(obj, budget, 0) >= 0
