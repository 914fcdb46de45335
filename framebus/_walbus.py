"""The bus's write-ahead log: one more ring reader, on a thread, that persists
batches of frames through `framebus.wal.WalLog`.

Because it is a ring reader, a WAL that falls behind holds the ring's space like
any slow subscriber (backpressure and hysteresis reach the publishers), and
batching comes for free: each write takes what the ring holds, up to
``max_batch_size`` frames. With ``wal_sync=True`` every write is fsynced and the
publishers wait for their frame's write: all publishers whose frames are in one
batch share one fsync (group commit).
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import BusClosed, WalError
from .topics import TopicFilter

if TYPE_CHECKING:
    from .bus import FrameBus, Subscription
    from .config import BusConfig

log = logging.getLogger("framebus")

RETAIN_FRACTION = 0.9  # retention trims to this share of wal_max_bytes, not to the edge


class WalWriter:
    """Owns the WalLog of one bus and the thread that feeds it."""

    def __init__(self, config: BusConfig) -> None:
        # wal/ is installed as framebus.wal (package-dir), which mypy cannot follow
        from .wal import WalLog  # type: ignore[import-not-found,unused-ignore]

        assert config.wal_dir is not None
        self.wal = WalLog(config.wal_dir, max_bytes=config.wal_max_bytes)
        self.sync = config.wal_sync
        self.wait_s = config.wal_flush_ms / 1000
        self.batch = config.max_batch_size
        self.start_seq = self.wal.next_seq  # the ring numbers on from the log
        last = self.wal.last_seq
        self.durable = -1 if last is None else last  # highest seq in the log
        self.degraded: WalError | None = None
        self.cond = threading.Condition()
        self._commit_lock = threading.Lock()
        self._stopping = False  # asked to stop: write what is left, then end
        self._stopped = False  # the thread has ended
        self._sub: Subscription | None = None
        self._thread: threading.Thread | None = None

    def start(self, bus: FrameBus) -> None:
        from .bus import Subscription

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
        while True:
            try:
                frames = sub.recv_batch(self.batch, timeout=self.wait_s)
            except BusClosed:
                break
            if frames:
                self._write(frames)
            elif self._stopping:
                break
        with self.cond:
            self._stopped = True
            self.cond.notify_all()

    def _write(self, frames: list[Any]) -> None:
        last = frames[-1].seq
        if self.degraded is None:
            try:
                self.wal.append_frames(frames, sync=self.sync)
            except WalError as exc:
                self._degrade(exc)
            else:
                with self.cond:
                    self.durable = last
                    self.cond.notify_all()
                if self.wal.byte_count > self.wal.max_bytes:
                    self._retain()
        # degraded: the frames stay in memory only; the cursor moves on so that
        # the bus keeps running

    def _degrade(self, exc: WalError) -> None:
        log.error("framebus: the WAL cannot write, the bus goes on in memory: %s", exc)
        with self.cond:
            self.degraded = exc
            self.cond.notify_all()

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
        self.wal.close()

    def commit(self, group: str, next_seq: int) -> None:
        """Move `group`'s stored offset forward to `next_seq` (never back)."""
        with self._commit_lock:
            current = self.wal.committed(group)
            if current is None or next_seq > current:
                self.wal.commit(group, next_seq, sync=self.sync)

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
        }


def _stop_at_exit(ref: weakref.ref[WalWriter]) -> None:
    writer = ref()
    if writer is not None:
        writer.stop()


class GroupBackfill:
    """The frames a consumer group gets again from the WAL after a restart: from its
    committed offset up to where its new ring cursor starts (``end``, inclusive).
    Shared by the group's members in this bus, so each frame goes to one of them."""

    def __init__(self, writer: WalWriter, pattern: str, start: int, end: int) -> None:
        self._writer = writer
        self._pattern = pattern
        self._next = start
        self._end = end
        self._buf: deque[Any] = deque()
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        return not self._buf and self._next > self._end

    def take(self, n: int) -> list[Any]:
        with self._lock:
            while len(self._buf) < n and self._next <= self._end:
                chunk = self._writer.wal.read_batch(
                    self._next, max(n, 1024), to_seq=self._end, topic=self._pattern
                )
                if not chunk:
                    self._next = self._end + 1
                    break
                self._buf.extend(chunk)
                self._next = chunk[-1].seq + 1
            return [self._buf.popleft() for _ in range(min(n, len(self._buf)))]
