"""`Queue` and `JoinableQueue`: drop-ins for `multiprocessing.Queue` on a shared ring.

Objects are pickled with multiprocessing's `ForkingPickler` (the reducers
`multiprocessing.Queue` uses), but in `put` itself rather than in a feeder
thread: an unpicklable object raises from `put`, and mutating an object after
`put` does not change what the getter receives. Pickles travel inline in the
ring; one too large for its share of the ring goes through a file in /dev/shm
(mode 0600) whose name travels instead, removed by the getter.

Every process holding the queue is a member of one work-sharing group on the
ring, so each object goes to exactly one `get`. The group's cursor is created
with the queue and kept for as long as the segment exists, so objects put
before a consumer process has attached are kept for it.
"""

from __future__ import annotations

import collections
import copyreg
import io
import itertools
import logging
import os
import pickle
import queue
import secrets
import threading
import time
import weakref
from multiprocessing import util as mp_util
from multiprocessing.reduction import ForkingPickler
from typing import Any

from ._internal import HeaderCounter, attached_processes
from ._reserved import Counter
from ._ring import plain_builtins as _plain_builtins
from .bus import FrameBus, Subscription
from .config import BusConfig
from .errors import BusClosed, FrameBusError, WouldBlock

__all__ = ["JoinableQueue", "Queue"]

log = logging.getLogger("framebus")

MAX_BOUNDED = 1 << 20  # largest maxsize: its frame limit and ring stay in memory bounds
MAX_RING_BYTES = 1 << 30

_GROUP = "queue"
_INLINE = ""  # topic of a frame carrying the pickle itself
_SPILLED = "s"  # topic of a frame carrying the name of a spill file
_SPILL_DIR = "/dev/shm"
SPILL_PREFIX = "framebus-spill."
_FEED_WAIT = 0.5  # seconds the feeder waits per attempt before checking for shutdown
ALONE_GRACE = 5.0  # seconds with no other process attached before buffered objects are given up


# multiprocessing's own registry of reducers (sockets, connections, methods, ...)
_EXTRA_REDUCERS: dict[Any, Any] = ForkingPickler._extra_reducers  # type: ignore[attr-defined]


class _Pickler(pickle.Pickler):
    # ForkingPickler's reducers without its per-call copy of the dispatch table;
    # rebuilt when a reducer is registered.
    dispatch_table: dict[Any, Any] = {}


_tables: tuple[dict[Any, Any], dict[Any, Any]] = ({}, {})  # what _Pickler's table was built from
# reused: building a pickler costs more than a small dump
_picklers: list[tuple[pickle.Pickler, io.BytesIO]] = []


def _dumps(obj: object) -> bytes:
    if _plain_builtins(obj):
        return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)  # the same bytes, 3x faster
    return _dumps_forking(obj)


def _dumps_forking(obj: object) -> bytes:
    if _EXTRA_REDUCERS != _tables[0] or copyreg.dispatch_table != _tables[1]:
        _refresh_picklers()  # a reducer was registered or replaced
    # pop/append are atomic under the GIL, so each pickler serves one thread at a time;
    # one whose dump raised is dropped
    pickler, buf = _picklers.pop() if _picklers else _new_pickler()
    pickler.dump(obj)
    data = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    pickler.clear_memo()
    _picklers.append((pickler, buf))
    return data


def _new_pickler() -> tuple[pickle.Pickler, io.BytesIO]:
    buf = io.BytesIO()
    return _Pickler(buf, pickle.HIGHEST_PROTOCOL), buf


def _refresh_picklers() -> None:
    global _tables
    extra, base = dict(_EXTRA_REDUCERS), dict(copyreg.dispatch_table)
    _Pickler.dispatch_table = {**base, **extra}
    _tables = (extra, base)
    _picklers.clear()


_loads = ForkingPickler.loads


def _check_maxsize(maxsize: object) -> int:
    if isinstance(maxsize, bool) or not isinstance(maxsize, int):
        raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
    if maxsize > MAX_BOUNDED:
        raise ValueError(
            f"maxsize={maxsize} exceeds {MAX_BOUNDED}, the largest bounded framebus.Queue; "
            "use maxsize=0 for an unbounded queue"
        )
    return max(maxsize, 0)


def _pow2_at_least(n: int) -> int:
    return 1 << max(n - 1, 1).bit_length()


def queue_config(maxsize: int, ring_bytes: int | None = None) -> BusConfig:
    """The ring a queue of this maxsize uses.

    A bounded queue holds exactly maxsize objects: the frame limit is maxsize and
    pickles inline are capped at ring_bytes / (maxsize + 2) so that bytes never run
    out first (bigger ones are spilled). An unbounded queue buffers in the putting
    process when its ring is full, as multiprocessing.Queue does.
    """
    if ring_bytes is not None:
        if isinstance(ring_bytes, bool) or not isinstance(ring_bytes, int):
            raise TypeError(f"ring_bytes must be an int or None, not {type(ring_bytes).__name__}")
        if ring_bytes > MAX_RING_BYTES:
            raise ValueError(
                f"ring_bytes={ring_bytes} exceeds {MAX_RING_BYTES} (1 GiB), the largest "
                "framebus.Queue ring"
            )
    if ring_bytes is None:
        if maxsize == 0:
            ring_bytes = 8 << 20
        else:
            ring_bytes = min(max(_pow2_at_least((maxsize + 2) * 1024), 1 << 20), 128 << 20)
    if maxsize == 0:
        inline = min(1 << 20, ring_bytes // 8)
        ring_pow = min(30, max(10, (ring_bytes // 32).bit_length() - 1))
    else:
        inline = min(1 << 20, ring_bytes // (maxsize + 2))
        ring_pow = max(10, (maxsize - 1).bit_length())
    inline = (inline - 32) & ~7  # the record header and its alignment
    if inline < 64:
        raise ValueError(
            f"ring_bytes={ring_bytes} is too small for maxsize={maxsize}: "
            f"need at least {_pow2_at_least((maxsize + 2) * 96)}"
        )
    return BusConfig.preset(
        "default",
        ring_bytes=ring_bytes,
        ring_pow=ring_pow,
        frame_limit=maxsize,
        max_frame=inline,
        pause_hi=1.0,
        resume_lo=0.5,
        backpressure_threshold=1.0,
        max_readers=4,
        max_topics=4,
        overflow="block",
        wal_dir=None,  # never a WAL, whatever FRAMEBUS_WAL_DIR says
    )


def _timeout(block: bool, timeout: float | None) -> float | None:
    # multiprocessing treats a negative timeout as 0 and ignores it when not blocking
    if not block:
        return 0.0
    if timeout is None:
        return None
    return max(float(timeout), 0.0)


_live: weakref.WeakSet[Queue] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for q in list(_live):
        try:
            q._after_fork()
        except Exception:  # one queue's failure must not cost the others their handle
            log.exception("framebus: %r could not re-attach in the forked child", q)


os.register_at_fork(after_in_child=_after_fork_in_child)


class Queue:
    """A process-shared FIFO with `multiprocessing.Queue`'s API and semantics.

    ``Queue(maxsize=0)``: ``maxsize <= 0`` is unbounded (a put never blocks: when
    the ring is full the object waits in this process's feeder thread, as in
    multiprocessing); otherwise at most ``maxsize`` objects (``<= 2**20``) are in
    the queue and ``put`` blocks or raises ``queue.Full``. ``ctx`` is accepted for
    signature compatibility: the queue works under every start method.
    ``ring_bytes`` sizes the shared ring (pickles too large for their share of it
    go through a file in /dev/shm).
    """

    _joinable = False

    def __init__(self, maxsize: int = 0, *, ctx: Any = None, ring_bytes: int | None = None):
        self._maxsize = _check_maxsize(maxsize)
        name = f"q{os.getpid()}-{secrets.token_hex(6)}"
        bus = FrameBus.create_shared(name, queue_config(self._maxsize, ring_bytes))
        # The group's first member is never released: the cursor then outlives any
        # moment when no process happens to hold the queue open.
        bus.subscribe(">", group=_GROUP)._forget()
        self._init(name, os.getpid(), bus)

    # -------------------------------------------------------------- lifecycle

    def _init(self, name: str, creator: int, bus: FrameBus) -> None:
        self._name = name
        self._creator = creator
        self._bus = bus
        self._unfinished = HeaderCounter(bus, Counter.QUEUE_UNFINISHED)  # JoinableQueue
        self._inline_max = bus.max_frame
        self._spill_ids = itertools.count()
        self._local = threading.local()
        # every process holding the queue is a member from the start, so the group's
        # cursor (and what it holds) lasts while any of them lives
        self._thread_sub()
        self._closed = False
        self._feeder = _Feeder(bus)  # unbounded queues: objects waiting for room
        self._plain = not self._joinable
        self._try_publish = bus.try_publish
        self._finalizer = weakref.finalize(self, _release, bus, name, creator, self._feeder)
        self._register_mp_exit()
        _live.add(self)

    def _register_mp_exit(self) -> None:
        # multiprocessing's exit hook runs in its children, which leave by os._exit
        # (no atexit); a forked child's registry is cleared after the fork, hence the
        # registration again after it
        mp_util.Finalize(self, self._finalizer, exitpriority=-10)
        mp_util.register_after_fork(self, Queue._register_mp_exit)

    def __reduce__(self) -> tuple[Any, ...]:
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        return (_rebuild, (type(self), self._name, self._creator, self._maxsize))

    def _after_fork(self) -> None:
        # The child shares the parent's mapping but must not release the parent's
        # group memberships, nor inherit its feeder thread: take a handle of its own.
        old = self._bus
        for sub in list(old._subs):
            sub._forget()
        self._finalizer.detach()
        if self._closed:
            return  # closed in the parent: stays closed, nothing to take
        try:
            bus = FrameBus.attach(self._name)
        except FileNotFoundError:
            bus = old  # the name is gone (its creator exited): keep the inherited mapping
        self._init(self._name, self._creator, bus)

    # ------------------------------------------------------------------ put

    def put(self, obj: object, block: bool = True, timeout: float | None = None) -> None:
        """Put obj; with a maxsize, wait while the queue is full (raises queue.Full
        after ``timeout`` seconds, at once when ``block`` is false)."""
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        data = _dumps(obj)
        # fast path: inline, nothing buffered ahead of it, no task to count
        if (
            self._plain
            and len(data) <= self._inline_max
            and not self._feeder.pending
            and self._try_publish(data) >= 0
        ):
            return
        self._put(data, block, timeout)

    def _put(self, data: bytes, block: bool, timeout: float | None) -> None:
        topic = _INLINE
        if len(data) > self._inline_max:
            data, topic = self._spill(data), _SPILLED
        if self._joinable:
            self._unfinished.add(1)
        try:
            if self._maxsize:
                if self._bus.try_publish(data, topic) < 0:
                    t = _timeout(block, timeout)
                    if t == 0.0:
                        raise queue.Full
                    try:
                        self._bus.publish(data, topic, timeout=t)
                    except WouldBlock:
                        raise queue.Full from None
            elif self._feeder.pending or self._bus.try_publish(data, topic) < 0:
                self._feeder.put(data, topic)
        except BaseException:
            if topic is _SPILLED:
                self._unlink_spill(data)
            if self._joinable and self._unfinished.add(-1) == 0:
                self._unfinished.wake()
            raise

    def put_nowait(self, obj: object) -> None:
        self.put(obj, False)

    # ------------------------------------------------------------------ get

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return an object; raises queue.Empty after ``timeout`` seconds
        (at once when ``block`` is false). ``timeout=None`` waits forever."""
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        try:
            try:
                recv = self._local.recv
            except AttributeError:
                recv = self._thread_sub().recv
            frame = recv() if block and timeout is None else recv(_timeout(block, timeout))
        except BusClosed:
            raise ValueError(f"Queue {self!r} is closed") from None
        if frame is None:
            raise queue.Empty
        if frame.topic:
            return _loads(self._unspill(frame.payload))
        return _loads(frame.payload)

    def get_nowait(self) -> Any:
        return self.get(False)

    def _thread_sub(self) -> Subscription:
        sub = self._bus.subscribe(">", group=_GROUP)
        self._local.sub = sub
        self._local.recv = sub.recv
        return sub

    # ---------------------------------------------------------------- sizes

    @property
    def maxsize(self) -> int:
        """The bound given at construction; 0 for an unbounded queue."""
        return self._maxsize

    def qsize(self) -> int:
        """Objects put and not yet got (those still in another process's feeder
        thread are not counted; like multiprocessing's, a snapshot)."""
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        try:
            sub = self._local.sub
        except AttributeError:
            sub = self._thread_sub()
        return sub.backlog + self._feeder.pending

    def empty(self) -> bool:
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        try:
            sub = self._local.sub
        except AttributeError:
            sub = self._thread_sub()
        return not sub._readable()

    def full(self) -> bool:
        return bool(self._maxsize) and self.qsize() >= self._maxsize

    # ---------------------------------------------------------------- close

    def close(self) -> None:
        """No more puts or gets from this process (a get blocked in another thread
        wakes with ValueError). Objects waiting in the feeder thread are still
        written to the ring (join_thread waits for that). The queue itself lives on
        for the other processes; the creator removes it when its object is
        garbage-collected or at exit."""
        if self._closed:
            return
        self._closed = True
        for sub in list(self._bus._subs):
            sub.close()
        self._feeder.close()

    def join_thread(self) -> None:
        """After close(): wait until the feeder thread has written everything
        buffered (only an unbounded queue whose ring filled up has one)."""
        if not self._closed:
            raise AssertionError(f"Queue {self!r} not closed")
        self._feeder.join()

    def cancel_join_thread(self) -> None:
        """Do not wait for the feeder thread at close or exit: objects it still
        buffers are lost."""
        self._feeder.cancelled = True

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        bound = f"maxsize={self._maxsize}" if self._maxsize else "unbounded"
        return f"<{type(self).__name__} {self._name} {bound} {state}>"

    # ---------------------------------------------------------------- spill

    def _spill_path(self, ref: bytes) -> str:
        return f"{_SPILL_DIR}/{SPILL_PREFIX}{self._name}.{ref.decode()}"

    def _spill(self, data: bytes) -> bytes:
        ref = f"{os.getpid()}.{next(self._spill_ids)}".encode()
        path = self._spill_path(ref)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        return ref

    def _unspill(self, ref: bytes) -> bytes:
        path = self._spill_path(ref)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise FrameBusError(f"queue object lost: its spill file {path} is gone") from None
        os.unlink(path)
        return data

    def _unlink_spill(self, ref: bytes) -> None:
        try:
            os.unlink(self._spill_path(ref))
        except FileNotFoundError:
            pass


class JoinableQueue(Queue):
    """`Queue` with `task_done` and `join`, counted in the ring header (shared by
    every process)."""

    _joinable = True

    def task_done(self) -> None:
        """Mark one object got from the queue as processed."""
        left = self._unfinished.decrement()
        if left < 0:
            raise ValueError("task_done() called too many times")
        if left == 0:
            self._unfinished.wake()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every object put has been marked done; False on timeout."""
        return self._unfinished.wait(0, timeout)


class _Feeder:
    """The objects an unbounded queue could not write at once, in put order, and
    the thread that writes them as room appears (multiprocessing's feeder)."""

    def __init__(self, bus: FrameBus) -> None:
        self.bus = bus
        self.cond = threading.Condition(threading.Lock())
        self.buffer: collections.deque[tuple[bytes, str] | None] = collections.deque()
        self.pending = 0  # buffered or being written: later puts must queue behind
        self.thread: threading.Thread | None = None
        self.cancelled = False

    def put(self, data: bytes, topic: str) -> None:
        with self.cond:
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._run, name="framebus-QueueFeeder", daemon=True
                )
                self.thread.start()
                # multiprocessing's exit hook (it runs in its child processes too, which
                # leave by os._exit without atexit) flushes the feeder, as it does its own
                mp_util.Finalize(self.thread, _join_feeder, [weakref.ref(self)], exitpriority=-5)
            self.buffer.append((data, topic))
            self.pending += 1
            self.cond.notify()

    def close(self) -> bool:
        """Ask the thread to stop once it has written everything; False if none runs."""
        with self.cond:
            if self.thread is None:
                return False
            self.buffer.append(None)
            self.cond.notify()
            return True

    def join(self) -> None:
        thread = self.thread
        if thread is None:
            return
        self.close()
        alone_since = None
        while thread.is_alive() and not self.cancelled:
            thread.join(_FEED_WAIT)
            if not thread.is_alive():
                break
            if self.bus.closed:
                self.cancelled = True
            elif attached_processes(self.bus) > 1:
                alone_since = None
            elif alone_since is None:
                alone_since = time.monotonic()
            elif time.monotonic() - alone_since >= ALONE_GRACE:
                # nobody has held the queue for a while: what is buffered cannot be
                # written (multiprocessing would wait forever here)
                log.warning(
                    "framebus queue: dropping %d objects no process is left to read",
                    self.pending,
                )
                self.cancelled = True

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.buffer:
                    self.cond.wait()
                item = self.buffer[0]
            if item is None or self.cancelled:
                return
            data, topic = item
            while True:
                try:
                    self.bus.publish(data, topic, timeout=_FEED_WAIT)
                    break
                except WouldBlock:
                    if self.cancelled:
                        return
                except BusClosed:
                    return
            with self.cond:
                self.buffer.popleft()
                self.pending -= 1


def _join_feeder(ref: weakref.ref[_Feeder]) -> None:
    feeder = ref()
    if feeder is not None:
        feeder.join()


def _rebuild(cls: type[Queue], name: str, creator: int, maxsize: int) -> Queue:
    q = cls.__new__(cls)
    q._maxsize = maxsize
    try:
        bus = FrameBus.attach(name)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"framebus queue {name!r} no longer exists: its creating process "
            f"(pid {creator}) released it"
        ) from None
    q._init(name, creator, bus)
    return q


def _release(bus: FrameBus, name: str, creator: int, feeder: _Feeder) -> None:
    """At garbage collection or exit: flush the feeder and detach this process; the
    creator also removes the name (attached processes keep their mapping). Spill
    files go once no other process holds the queue and none can attach any more."""
    feeder.join()
    if bus.closed:
        return
    try:
        others = attached_processes(bus) - 1
    except BusClosed:
        others = 1
    bus.close()
    if os.getpid() == creator:
        try:
            FrameBus.unlink(name)
        except FileNotFoundError:
            pass
    if others <= 0 and not os.path.exists(f"{_SPILL_DIR}/framebus.{name}"):
        remove_spill_files(name)


def remove_spill_files(name: str) -> int:
    """Remove the spill files of queue ``name``; returns how many."""
    prefix = f"{SPILL_PREFIX}{name}."
    n = 0
    try:
        entries = os.listdir(_SPILL_DIR)
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.startswith(prefix):
            try:
                os.unlink(os.path.join(_SPILL_DIR, entry))
                n += 1
            except FileNotFoundError:
                pass
    return n
