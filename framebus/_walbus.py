"""The bus's write-ahead log: one more ring reader, on a thread, that persists
batches of frames through `framebus.wal.WalLog`.

Because it is a ring reader, a WAL that falls behind holds the ring's space like
any slow subscriber (backpressure and hysteresis reach the publishers), and
batching comes for free: each write takes what the ring holds. A batch is written
once it holds ``max_batch_size`` frames or ``max_memory_bytes`` bytes of records,
once ``flush_interval`` seconds have passed since its first frame was taken, or as
soon as the ring has no more frames waiting, whichever comes first: the writer never
waits for frames to fill a batch. With ``wal_sync=True`` every write is fsynced and
the publishers wait for their frame's write: all publishers whose frames are in one
batch share one fsync (group commit).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from . import _ring
from ._internal import HeaderCounter, TopicCounter, topic_table
from ._reserved import WAL_COMMIT_ASK, WAL_COMMIT_DONE, Counter
from ._walcodec import read_ring_batch, wal_encode
from .errors import BusClosed, WalError
from .topics import TopicFilter

if TYPE_CHECKING:
    from .bus import FrameBus, Subscription
    from .config import BusConfig

log = logging.getLogger("framebus")

RETAIN_FRACTION = 0.9  # retention trims to this share of wal_max_bytes, not to the edge

# Other processes on a shared bus see the WAL through two header counters
# (Counter.WAL_DURABLE, Counter.WAL_STATE) and ask the writer for group commits
# through topic counters (WAL_COMMIT_ASK / WAL_COMMIT_DONE + group).
COMMIT_TIMEOUT = 30.0  # seconds a commit from another process waits for the writer
STATE_NONE, STATE_WRITING, STATE_DEGRADED = 0, 1, 2

# A batch as the ring gives it to the WAL: keys, values (records in framebus.wal's
# format), the values' total size in bytes, first and last sequence number.
Encoded = tuple[list[bytes], list[bytes], int, int, int]
# take(max_frames, timeout): the next records waiting in the ring, or None
Take = Callable[[int, float], Encoded | None]


def gather(
    got: Encoded,
    take: Take,
    max_frames: int,
    max_bytes: int,
    interval: float,
    clock: Callable[[], float] = time.monotonic,
) -> Encoded:
    """Grow the batch `got`, just taken from the ring, with what else is waiting there
    (`take` without waiting) while it holds fewer than `max_frames` frames and
    `max_bytes` bytes and less than `interval` seconds have passed: it stops at the
    first take that finds the ring empty. The bytes may overshoot (by the last
    take): `split` cuts the result. Per take, not per frame."""
    keys, values, nbytes, first, last = got
    if len(keys) < max_frames and nbytes < max_bytes:
        deadline = clock() + interval
        while len(keys) < max_frames and nbytes < max_bytes and clock() < deadline:
            more = take(max_frames - len(keys), 0)
            if more is None:
                break  # nothing more is waiting: write now, never wait to fill a batch
            keys += more[0]
            values += more[1]
            nbytes += more[2]
            last = more[4]
    return keys, values, nbytes, first, last


def split(batch: Encoded, max_bytes: int) -> list[Encoded]:
    """`batch` cut, in order, into batches of at most `max_bytes` bytes of values (a
    single record larger than that is a batch of its own)."""
    keys, values, nbytes, first, last = batch
    if nbytes <= max_bytes or len(keys) == 1:
        return [batch]
    ends = list(accumulate(map(len, values)))  # in C: one pass per batch
    parts: list[Encoded] = []
    start = base = 0
    while start < len(keys):
        end = max(bisect_right(ends, base + max_bytes, start), start + 1)
        top = ends[end - 1]
        a = first if start == 0 else int.from_bytes(keys[start], "big")
        b = last if end == len(keys) else int.from_bytes(keys[end - 1], "big")
        parts.append((keys[start:end], values[start:end], top - base, a, b))
        start, base = end, top
    return parts


class WalWriter:
    """Owns the WalLog of one bus and the thread that feeds it."""

    def __init__(self, config: BusConfig) -> None:
        # wal/ is installed as framebus.wal (package-dir), which mypy cannot follow
        from .wal import WalLog  # type: ignore[import-not-found,unused-ignore]

        assert config.wal_dir is not None
        self.wal = WalLog(config.wal_dir, max_bytes=config.wal_max_bytes)
        self.sync = config.wal_sync
        self.wait_s = config.wal_flush_ms / 1000
        # a batch is written at whichever of these it reaches first (or an idle ring)
        self.batch = config.max_batch_size
        self.batch_bytes = config.max_memory_bytes
        self.interval = config.flush_interval
        self.start_seq = self.wal.next_seq  # the ring numbers on from the log
        last = self.wal.last_seq
        self.durable = -1 if last is None else last  # highest seq in the log
        self.degraded: WalError | None = None
        self.cond = threading.Condition()
        self._commit_lock = threading.Lock()
        self._stopping = False  # asked to stop: write what is left, then end
        self._stopped = False  # the thread has ended
        self._sub: Subscription | None = None
        self._shared_bus: FrameBus | None = None  # a shared bus: tell other processes
        self._thread: threading.Thread | None = None
        self._names_seen = 1  # topic-table ids below this were looked at for commit asks
        self._asks: dict[str, tuple[TopicCounter, TopicCounter]] = {}  # group -> (ask, done)
        # per WAL batch (not per frame): write (+ fsync) time in ns, frames
        self.flush_ns = _ring.Log2Histogram(10, 34, 2)
        self.batch_frames = _ring.Log2Histogram(0, 16, 2)

    def start(self, bus: FrameBus) -> None:
        from .bus import Subscription

        if bus.shared:
            self._shared_bus = bus
            self._publish_state(STATE_WRITING)
            self._publish_durable()

        # not in bus._subs: the WAL's cursor is not a user subscription
        self._sub = Subscription(bus, TopicFilter(">"), None)
        self._thread = threading.Thread(target=self._run, name="framebus-wal", daemon=True)
        self._thread.start()
        # a bus left open at exit still writes what was published
        atexit.register(_stop_at_exit, weakref.ref(self))

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        sub = self._sub
        assert sub is not None
        topics = self.wal._topic_enc
        take: Take
        if sub._bus.config.overflow != "overwrite":
            # records straight from the ring, without Frame objects
            def take(n: int, timeout: float) -> Encoded | None:
                return read_ring_batch(sub, n, topics, timeout=timeout)

        else:
            # overwrite mode: lapped reads are checked after the fact, on Frames
            def take(n: int, timeout: float) -> Encoded | None:
                frames = sub.recv_batch(n, timeout=timeout)
                if not frames:
                    return None
                first, last = frames[0].seq, frames[-1].seq
                encoded = wal_encode(frames, topics, None)
                if encoded is None:
                    raise WalError(f"frames {first}..{last} do not fit the WAL's record format")
                return (*encoded, first, last)

        while True:
            try:
                if self._shared_bus is not None:
                    self._apply_remote_commits(self._shared_bus)
                got = take(self.batch, self.wait_s)
                if got is not None:
                    got = gather(got, take, self.batch, self.batch_bytes, self.interval)
                    for part in split(got, self.batch_bytes):
                        self._write_encoded(part)
                    continue
            except BusClosed:
                break
            except WalError as exc:
                self._degrade(exc)
                continue
            if self._stopping:
                break
        with self.cond:
            self._stopped = True
            self.cond.notify_all()

    def _write_encoded(self, got: Encoded) -> None:
        keys, values, nbytes, first, last = got
        if self.degraded is None:
            t0 = time.perf_counter_ns()
            try:
                self.wal.append_encoded(keys, values, nbytes, first, last, sync=self.sync)
            except WalError as exc:
                self._degrade(exc)
            else:
                self.flush_ns.observe(time.perf_counter_ns() - t0)
                self.batch_frames.observe(len(keys))
                self._written(last)

    def _written(self, last: int) -> None:
        with self.cond:
            self.durable = last
            self.cond.notify_all()
        if self._shared_bus is not None:
            self._publish_durable()
        if self.wal.byte_count > self.wal.max_bytes:
            self._retain()

    def _degrade(self, exc: WalError) -> None:
        log.error("framebus: the WAL cannot write, the bus goes on in memory: %s", exc)
        with self.cond:
            self.degraded = exc
            self.cond.notify_all()
        if self._shared_bus is not None:
            self._publish_state(STATE_DEGRADED)

    def _retain(self) -> None:
        try:
            self.wal.enforce_retention(int(self.wal.max_bytes * RETAIN_FRACTION))
        except WalError as exc:
            self._degrade(exc)

    # ------------------------------------------------------------ callers

    def wait_durable(self, seq: int, timeout: float | None = None) -> bool:
        """Wait until every frame up to `seq` is in the log: True, or False on
        timeout. Raises WalError once the log cannot write."""
        with self.cond:
            ok = self.cond.wait_for(
                lambda: self.durable >= seq or self.degraded is not None or self._stopped,
                timeout,
            )
            if self.degraded is not None and self.durable < seq:
                raise WalError(
                    f"frame {seq} is not durable: the WAL stopped writing ({self.degraded})"
                )
            if not ok:
                return False
            if self.durable < seq:
                raise BusClosed(f"the bus closed before frame {seq} reached the WAL")
            return True

    def stop(self) -> None:
        """Write what is left in the ring, then stop the thread and close the log."""
        with self.cond:
            if self.wal.closed:
                return
            self._stopping = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self._sub is not None:
            self._sub._reader_close()
        if self._shared_bus is not None and not self._shared_bus.closed:
            self._publish_state(STATE_NONE)
        self.wal.close()

    def _publish_durable(self) -> None:
        bus = self._shared_bus
        assert bus is not None
        # one writer (this thread, or start before it runs)
        HeaderCounter(bus, Counter.WAL_DURABLE).set(self.durable + 1)

    def _publish_state(self, state: int) -> None:
        bus = self._shared_bus
        assert bus is not None
        HeaderCounter(bus, Counter.WAL_STATE).set(state)

    def commit(self, group: str, next_seq: int) -> None:
        """Move `group`'s stored offset forward to `next_seq` (never back)."""
        with self._commit_lock:
            current = self.wal.committed(group)
            if current is None or next_seq > current:
                self.wal.commit(group, next_seq, sync=self.sync)

    def _apply_remote_commits(self, bus: FrameBus) -> None:
        # Other processes of a shared bus ask for a commit by raising the counter of
        # the name WAL_COMMIT_ASK + group in the topic table; once stored, the offset
        # goes into WAL_COMMIT_DONE + group, which they wait on. Per WAL batch: a few
        # loads.
        for tid, name in topic_table(bus, self._names_seen):
            self._names_seen = tid + 1
            if name.startswith(WAL_COMMIT_ASK):
                group = name[len(WAL_COMMIT_ASK) :]
                self._asks[group] = (
                    TopicCounter(bus, tid=tid),
                    TopicCounter(bus, WAL_COMMIT_DONE + group),
                )
        for group, (ask, done) in self._asks.items():
            wanted = ask.get()
            if wanted > done.get():
                try:
                    self.commit(group, wanted)
                except WalError as exc:
                    self._degrade(exc)  # the asking process sees the state and raises
                    return
                done.raise_to(wanted)

    def replay(
        self, from_seq: int = 0, to_seq: int | None = None, topic: str | None = None
    ) -> Iterator[Any]:
        return self.wal.read(from_seq, to_seq, topic)

    def stats(self, next_seq: int) -> dict[str, Any]:
        return {
            "wal_durable_seq": self.durable,
            "wal_bytes": self.wal.byte_count if not self.wal.closed else None,
            "wal_lag": max(0, next_seq - 1 - self.durable),
            "wal_degraded": self.degraded is not None,
            "wal_corrupt": self.wal.corrupt_count,
            "histograms": {
                "wal_flush_ns": self.flush_ns.snapshot(),
                "wal_batch_frames": self.batch_frames.snapshot(),
            },
        }


def _stop_at_exit(ref: weakref.ref[WalWriter]) -> None:
    writer = ref()
    if writer is not None:
        writer.stop()


class GroupBackfill:
    """The frames a consumer group gets again from the WAL after a restart: from its
    committed offset up to where its new ring cursor starts (``end``, inclusive).
    Shared by the group's members in this bus, so each frame goes to one of them."""

    def __init__(self, wal: Any, pattern: str, start: int, end: int) -> None:
        self._wal = wal  # a WalLog (read-only in a process other than the writer's)
        self._pattern = pattern
        self._next = start
        self._end = end
        self._buf: deque[Any] = deque()
        self._lock = threading.Lock()
        self._on_done: Callable[[], object] | None = None  # e.g. close a read-only log

    @property
    def done(self) -> bool:
        return not self._buf and self._next > self._end

    def take(self, n: int) -> list[Any]:
        with self._lock:
            while len(self._buf) < n and self._next <= self._end:
                chunk = self._wal.read_batch(
                    self._next, max(n, 1024), to_seq=self._end, topic=self._pattern
                )
                if not chunk:
                    self._next = self._end + 1
                    break
                self._buf.extend(chunk)
                self._next = chunk[-1].seq + 1
            got = [self._buf.popleft() for _ in range(min(n, len(self._buf)))]
            if self.done and self._on_done is not None:
                self._on_done()
                self._on_done = None
            return got


class RemoteWal:
    """The WAL of a shared bus as another process sees it: it is written by the bus's
    creating process, which publishes the durable sequence number and its state in
    the header. Synchronous publishes and flush() wait on that; replay opens the
    directory read-only."""

    def __init__(self, bus: FrameBus, config: BusConfig) -> None:
        assert config.wal_dir is not None
        self._bus = bus
        self._dir = config.wal_dir
        self._creator = int(bus._ring_stats()["creator_pid"])
        self._durable = HeaderCounter(bus, Counter.WAL_DURABLE)
        self._writer_state = HeaderCounter(bus, Counter.WAL_STATE)

    @property
    def durable(self) -> int:
        return self._durable.get() - 1

    def _state(self) -> int:
        return self._writer_state.get()

    def wait_durable(self, seq: int, timeout: float | None = None) -> bool:
        from ._shm import pid_alive

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.durable >= seq:
                return True
            state = self._state()
            if state == STATE_DEGRADED:
                raise WalError(f"frame {seq} is not durable: the WAL stopped writing")
            if state == STATE_NONE or not pid_alive(self._creator):
                raise WalError(
                    f"frame {seq} is not durable: the WAL's process (pid {self._creator}, "
                    "the bus's creator) closed it or is gone"
                )
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            # wake up every second to notice a creator that died
            step = 1.0 if left is None else min(left, 1.0)
            self._durable.wait(seq + 1, step, at_least=True)

    def commit(self, group: str, next_seq: int, timeout: float = COMMIT_TIMEOUT) -> None:
        """Ask the writing process to store `group`'s offset (forward only) and wait
        until it has: WalError if the WAL degrades, its process is gone, or `timeout`
        passes."""
        from ._shm import pid_alive

        bus = self._bus
        ask = TopicCounter(bus, WAL_COMMIT_ASK + group)
        done = TopicCounter(bus, WAL_COMMIT_DONE + group)
        ask.raise_to(next_seq)
        bus._wake_readers()  # the WAL thread looks at asks between batches
        deadline = time.monotonic() + timeout
        while not done.wait(next_seq, 0.2):
            if self._state() == STATE_DEGRADED:
                raise WalError(f"group {group!r} not committed: the WAL stopped writing")
            if self._state() == STATE_NONE or not pid_alive(self._creator):
                raise WalError(
                    f"group {group!r} not committed: the WAL's process (pid "
                    f"{self._creator}, the bus's creator) closed it or is gone"
                )
            if time.monotonic() > deadline:
                raise WalError(f"group {group!r} not committed within {timeout:g} s")
            bus._wake_readers()

    def open_log(self) -> Any:
        """The WAL opened read-only (close it when done)."""
        from .wal import WalLog  # type: ignore[import-not-found,unused-ignore]

        return WalLog(self._dir, read_only=True)

    def replay(
        self, from_seq: int = 0, to_seq: int | None = None, topic: str | None = None
    ) -> Iterator[Any]:
        wal = self.open_log()
        try:
            yield from wal.read(from_seq, to_seq, topic)
        finally:
            wal.close()

    def stats(self, next_seq: int) -> dict[str, Any]:
        durable = self.durable
        return {
            "wal_durable_seq": durable,
            "wal_bytes": None,  # known to the writing process
            "wal_lag": max(0, next_seq - 1 - durable),
            "wal_degraded": self._state() == STATE_DEGRADED,
            "wal_corrupt": None,
        }
