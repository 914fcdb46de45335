# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: binding=False
"""The C half of DataPort (framebus.dataport): credits and the per-batch receive path."""
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from libc.stdint cimport int64_t, uint32_t, uint64_t

from framebus._ring cimport (TAKE_BATCH, TAKE_PAYLOADS, Frame, Reader, Ring, realtime_ns,
                             timeout_arg, max_frames_arg)

from framebus._envelope import Envelope as _Envelope, decode_frames as _decode_frames
from framebus.errors import BusClosed, WouldBlock

from framebus._ring import DEFAULT as _DEFAULT


cdef class PortCore:
    """The C half of a DataPort (framebus.dataport subclasses it): every frame sent
    spends one credit; every frame received gives one back.

    Credits live in the ring's counter of the port's topic (shared by every process
    on the bus). acquire_credit moves some into ``held``; send_frame spends a held one
    (taking one from the pool when none is held); no credit: WouldBlock. Frames go out
    on ``topic`` (bytes-like) or ``env_topic`` (an Envelope, encoded). The receiver
    gives credits back in steps of ``grant_step`` and before it waits.
    """
    cdef Ring ring
    cdef readonly uint32_t credit_id  # the topic id whose counter is the credit pool
    cdef str topic, env_topic, label
    cdef readonly uint64_t held
    cdef readonly uint64_t sent
    cdef readonly uint64_t would_block
    cdef readonly uint64_t received
    cdef readonly uint64_t deadline_misses
    cdef uint64_t pending      # consumed, credit not yet given back
    cdef uint64_t grant_step
    cdef bint drop_late
    cdef uint32_t deadline_counter  # the ring header's counter of late envelopes
    cdef object versions, types
    cdef public bint closed  # set by the port's close: calls raise BusClosed

    def _core_init(self, Ring ring, uint32_t credit_id, str topic, str env_topic, str label,
                   uint64_t grant_step, bint drop_late, versions, types,
                   uint32_t deadline_counter):
        ring._check_counter(credit_id)
        ring._check_user(deadline_counter)
        self.deadline_counter = deadline_counter
        self.ring = ring
        self.credit_id = credit_id
        self.topic = topic
        self.env_topic = env_topic
        self.label = label
        self.grant_step = grant_step if grant_step else 1
        self.drop_late = drop_late
        self.versions = versions
        self.types = types

    def __bool__(self):
        return self.closed  # the cancel flag of a credit wait

    cdef int _check(self) except -1:
        if self.closed:
            raise BusClosed(f"data port {self.label!r} is closed")
        self.ring._ensure_open()
        return 0

    cdef int _no_credit(self) except -1:
        self.would_block += 1
        raise WouldBlock(f"data port {self.label!r}: no credit (the receiver has granted none "
                         "beyond what was sent)")

    # ------------------------------------------------------------------ sending

    def acquire_credit(self, n=1, timeout=0):
        """Take up to ``n`` credits, waiting up to ``timeout`` seconds (None: until some
        come or the port closes) for at least one: how many were granted. Raises
        WouldBlock when none was, BusClosed when the port or bus is closed."""
        if type(n) is not int or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        self._check()
        cdef uint64_t want = <uint64_t>min(n, 0xFFFFFFFFFFFFFFFF)
        cdef int64_t timeout_ns = timeout_arg(timeout)
        # without waiting first: a credit in the pool costs one CAS
        cdef uint64_t got = self.ring.c_counter_take(self.credit_id, want)
        if got == 0 and timeout_ns != 0:
            got = self.ring._await_counter(self.credit_id, want, True, timeout_ns, self)
        if got == 0:
            if self.closed:
                raise BusClosed(f"data port {self.label!r} is closed")
            self._no_credit()
        self.held += got
        return got

    def _release_credits(self):
        """Gives the held credits back to the pool (on close)."""
        cdef uint64_t n = self.held
        self.held = 0
        self.ring.c_counter_add(self.credit_id, n)
        return n

    def send_frame(self, data, timeout=_DEFAULT):
        """Send one frame (bytes-like or an Envelope) against a credit: its sequence
        number. Raises WouldBlock without credit. ``timeout`` bounds a wait for ring
        space (the bus's overflow mode applies), not for credit."""
        cdef object topic = self.topic
        cdef object env = None
        cdef bint written = False
        self._check()
        if self.held == 0:
            if self.ring.c_counter_take(self.credit_id, 1) == 0:
                self._no_credit()
            self.held = 1
        if type(data) is _Envelope:
            topic = self.env_topic
            env = data
            data = env.encode()
        self.held -= 1
        try:
            seq = self.ring._write_one(data, topic, self.ring.overflow, timeout, env, &written)
        except BaseException:
            if written:
                self.sent += 1  # in the ring, not durable (WalError): the credit is spent
            else:
                self.held += 1
            raise
        if seq < 0:
            self.held += 1  # dropped (drop mode): the credit was not spent
        else:
            self.sent += 1
        return seq

    def send_batch(self, frames, timeout=_DEFAULT):
        """Send the longest prefix of ``frames`` that credit covers, as one batch:
        (first sequence number, frames sent). WouldBlock when there is no credit. A
        batch is all bytes-like frames or all Envelopes."""
        seq_obj = PySequence_Fast(frames, "send_batch needs a sequence of frames")
        cdef Py_ssize_t n = PySequence_Fast_GET_SIZE(seq_obj)
        cdef Py_ssize_t i, nenv = 0
        cdef uint64_t k
        cdef bint written = False
        self._check()
        if n == 0:
            raise ValueError("send_batch needs at least one frame, got an empty sequence")
        for i in range(n):
            if type(<object>PySequence_Fast_GET_ITEM(seq_obj, i)) is _Envelope:
                nenv += 1
        if nenv and nenv != n:
            raise TypeError("send_batch: a batch is all Envelopes or all bytes-like frames, "
                            f"got {nenv} Envelopes among {n} frames")
        if self.held < <uint64_t>n:
            self.held += self.ring.c_counter_take(self.credit_id, <uint64_t>n - self.held)
        if self.held == 0:
            self._no_credit()
        k = <uint64_t>n if self.held >= <uint64_t>n else self.held
        batch = seq_obj if k == <uint64_t>n else seq_obj[:k]
        self.held -= k
        try:
            first = self.ring._publish_many(batch, self.env_topic if nenv else self.topic,
                                            timeout, False, &written)
        except BaseException:
            if written:
                self.sent += k  # in the ring, not durable (WalError): the credits are spent
            else:
                self.held += k
            raise
        if first < 0:
            self.held += k
            return (first, 0)
        self.sent += k
        return (first, k)

    # ---------------------------------------------------------------- receiving

    cdef int _grant(self, uint64_t n) except -1:
        self.received += n
        self.pending += n
        if self.pending >= self.grant_step:
            self._flush()
        return 0

    def _flush(self):
        """Gives back the credits of every frame consumed so far."""
        cdef uint64_t n = self.pending
        self.pending = 0
        self.ring.c_counter_add(self.credit_id, n)

    def _receive(self, Reader sub, object max_frames, timeout, bint grant=True):
        """One read from the port's cursor: (items, frames read). Waits (up to timeout)
        only after giving pending credits back. Items are the frames, or, when an
        Envelope is among them, Frames and decoded Envelopes (late or undecodable ones
        left out; see _bad). With grant, the frames' credits are given back."""
        cdef Py_ssize_t most = max_frames_arg(max_frames)
        cdef int64_t timeout_ns = timeout_arg(timeout)  # checked even when frames wait
        cdef list frames = sub._recv(most, 0)
        if not frames and timeout_ns != 0:
            self._flush()
            frames = sub._recv(most, timeout)
        cdef Py_ssize_t n = len(frames)
        if n == 0:
            return frames, 0
        return self._process(frames, grant), n

    def _receive_raw(self, Reader sub, object max_frames, timeout, bint payloads):
        """One read from the port's cursor as raw frames: a list of payloads, or a
        FrameBatch; Envelopes arrive encoded. Their credits are given back."""
        cdef int kind = TAKE_PAYLOADS if payloads else TAKE_BATCH
        cdef Py_ssize_t most = max_frames_arg(max_frames)
        cdef int64_t timeout_ns = timeout_arg(timeout)  # checked even when frames wait
        got = sub._recv(most, 0, kind)
        if not got and timeout_ns != 0:
            self._flush()
            got = sub._recv(most, timeout, kind)
        if got:
            self._grant(<uint64_t>len(got))
        return got

    def _process(self, list frames, bint grant=True):
        """Frames read from the port's cursor as items (see _receive)."""
        cdef Py_ssize_t n = len(frames)
        cdef list items = frames
        cdef Frame f
        for item in frames:
            f = <Frame>item
            if f.topic is self.topic:
                continue  # the ring's own str for the bytes topic: no compare needed
            if f.topic is self.env_topic or f.topic == self.env_topic:
                items, misses, bad = _decode_frames(frames, self.env_topic, self.drop_late,
                                                    realtime_ns(), self.versions, self.types)
                if misses:
                    self.deadline_misses += misses
                    self.ring.c_user_add(self.deadline_counter, misses)
                if bad:
                    self._bad(bad)
                break
        if grant:
            self._grant(<uint64_t>n)
        return items

    def _grant_consumed(self, uint64_t n):
        self._grant(n)

    def _bad(self, bad):
        pass  # overridden: count and log frames that did not decode
