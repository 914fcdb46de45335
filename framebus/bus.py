"""FrameBus and Subscription: the in-process API over the C ring.

The frame hot paths (publish, try_publish, publish_batch, recv, recv_batch) are the
extension's C methods, inherited unchanged; this module adds configuration,
subscriptions, callbacks, stats and asyncio.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any, cast

from . import _envelope, _ring
from ._internal import HeaderCounter
from ._reserved import Counter
from ._walbus import GroupBackfill, RemoteWal, WalWriter
from .config import BusConfig
from .errors import BusClosed, ConfigError, FrameBusError
from .topics import TopicFilter, validate_topic

if TYPE_CHECKING:
    from .dataport import DataPort
    from .eventbus import EventBus

__all__ = ["Frame", "FrameBatch", "FrameBus", "Subscription"]

log = logging.getLogger("framebus")

Frame = _ring.Frame
FrameBatch = _ring.FrameBatch
_ring.register_envelope_type(_envelope.Envelope)


class FrameBus(_ring.Ring):
    """A frame bus on a ring in this process's memory.

    ``FrameBus(config=None, *, preset=None, **overrides)``: a `BusConfig`, or a preset
    name (default ``"default"``) with field overrides.
    """

    def __init__(
        self, config: BusConfig | None = None, *, preset: str | None = None, **overrides: Any
    ) -> None:
        self._setup(_resolve_config(config, preset, overrides), shm=None)

    # the binding checks a topic with these rules when this handle first uses it
    _topic_bytes = staticmethod(validate_topic)

    def _setup(self, config: BusConfig, *, shm: str | None, attach: bool = False) -> None:
        # the WAL: written by the bus's creator (writer); seen by every handle (view)
        self._wal_writer: WalWriter | None = None
        self._wal_view: WalWriter | RemoteWal | None = None
        if config.wal_dir is not None and not attach and not os.path.isabs(config.wal_dir):
            # other processes find the WAL through this config: not relative to our cwd
            config = config.replace(wal_dir=os.path.abspath(config.wal_dir))
        self._config = config
        self._shm_name = shm
        start_seq = 0
        if config.wal_dir is not None and not attach:
            self._wal_writer = WalWriter(config)  # opens the log: the ring numbers on from it
            start_seq = self._wal_writer.start_seq
        if attach:
            assert shm is not None
            self._configure(config.overflow, config.publish_timeout, config.spin)
        else:
            meta = b""
            if shm is not None:
                meta = json.dumps({"config": config.to_dict()}).encode()
            self._ring_open(
                data_bytes=config.ring_bytes,
                frame_capacity=config.frame_capacity,
                frame_limit=_frame_limit(config),
                max_frame=config.max_frame,
                max_readers=config.max_readers,
                max_topics=config.max_topics,
                overflow=config.overflow,
                pause_hi=config.pause_hi,
                resume_lo=config.resume_lo,
                backpressure=config.backpressure_threshold,
                unblock_timeout=config.unblock_timeout,
                start_seq=start_seq,
                publish_timeout=config.publish_timeout,
                spin=config.spin,
                shm_name=None if shm is None else _shm_path(shm),
                meta=meta,
                dead_reader_timeout=config.dead_reader_timeout,
            )
        self._lock = threading.Lock()
        self._subs: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._groups: dict[str, str] = {}
        self._group_lock = threading.Lock()
        self._backfills: dict[str, GroupBackfill | None] = {}
        self._on_pause: list[Callable[[], object]] = []
        self._on_resume: list[Callable[[], object]] = []
        self._callback_errors = 0
        self._transition_lock = threading.Lock()
        self._fired_pauses, self._fired_resumes = self._transitions()
        self._notifier: _Notifier | None = None
        self._watcher: threading.Thread | None = None
        self._events: Any = None  # EventBus, made on first use
        self._ports: weakref.WeakSet[Any] = weakref.WeakSet()  # DataPorts of this handle
        self._set_transition_callback(self._on_transition)
        if self._wal_writer is not None:
            self._wal_writer.start(self)
            self._wal_view = self._wal_writer
        elif config.wal_dir is not None:
            self._wal_view = RemoteWal(self, config)
        # the one place the publishing mode is chosen: every write path checks it
        self._set_durability(self._wal_view if config.wal_sync else None)

    # ---------------------------------------------------------- shared memory

    @classmethod
    def create_shared(
        cls,
        name: str,
        config: BusConfig | None = None,
        *,
        preset: str | None = None,
        **overrides: Any,
    ) -> FrameBus:
        """Create a bus in a new POSIX shared-memory segment (mode 0600) named ``name``.

        Other processes join it with ``FrameBus.attach(name)``. The segment lives until
        ``FrameBus.unlink(name)``; ``close()`` only detaches this process.
        """
        bus = cls.__new__(cls)
        bus._setup(_resolve_config(config, preset, overrides), shm=_check_name(name))
        return bus

    @classmethod
    def attach(cls, name: str) -> FrameBus:
        """Attach to the shared bus ``name`` with the configuration its creator gave it.

        Raises FileNotFoundError if there is no such segment and FrameBusError if the
        segment is not a framebus ring or was made by another layout version.
        """
        bus = cls.__new__(cls)
        meta = bus._ring_attach(_shm_path(_check_name(name)))
        try:
            config = BusConfig(**json.loads(meta)["config"])
        except (ValueError, KeyError, TypeError) as exc:
            bus._ring_close()
            msg = f"shared bus {name!r} carries an unreadable config: {exc}"
            raise FrameBusError(msg) from None
        bus._setup(config, shm=name, attach=True)
        return bus

    @staticmethod
    def unlink(name: str) -> None:
        """Remove the shared segment's name; processes attached to it keep working."""
        _ring.Ring._shm_unlink(_shm_path(_check_name(name)))

    @property
    def name(self) -> str | None:
        """The shared segment's name, or None for an in-process bus."""
        return self._shm_name

    # ------------------------------------------------------------------ config

    @property
    def config(self) -> BusConfig:
        return self._config

    # ----------------------------------------------------------- subscriptions

    def subscribe(
        self,
        filter: str = ">",
        *,
        group: str | None = None,
        envelopes: bool = False,
        on_deadline: str = "deliver",
        schema_versions: Collection[int] | None = None,
        content_types: Collection[str] | None = None,
    ) -> Subscription:
        """A subscription to topics matching ``filter`` (NATS style: ``a.b``, ``a.*.c``, ``a.>``).

        Without ``group`` it sees every matching frame published from now on. Members of
        one ``group`` share a cursor: each frame goes to one of them.

        With ``envelopes=True`` it hands back `Envelope` objects (seq and ts_ns set)
        instead of Frames. An envelope whose nonzero ``deadline_ns`` has passed when it
        is received is a deadline miss, counted (``sub.deadline_misses`` and the bus's
        ``stats()["deadline_misses"]``, shared by every process) and, by ``on_deadline``,
        delivered with ``deadline_missed=True`` (``"deliver"``) or dropped (``"drop"``).
        A frame that does not decode, or whose schema_ver / content_type is not in the
        given ``schema_versions`` / ``content_types``, is skipped, counted in
        ``sub.decode_errors`` and logged (its seq and the DecodeError's reason).
        """
        if on_deadline not in ("deliver", "drop"):
            raise ValueError(f"on_deadline must be 'deliver' or 'drop', got {on_deadline!r}")
        if not envelopes and (
            on_deadline != "deliver" or schema_versions is not None or content_types is not None
        ):
            raise ValueError(
                "on_deadline, schema_versions and content_types apply to envelopes=True"
            )
        tf = TopicFilter(filter)
        if group is not None:
            if not isinstance(group, str) or not group:
                raise ValueError(f"group must be a non-empty str, got {group!r}")
            with self._lock:
                known = self._groups.setdefault(group, tf.pattern)
            if known != tf.pattern:
                raise ValueError(
                    f"group {group!r} already subscribes to {known!r}; "
                    f"every member of a group must use the same filter, not {tf.pattern!r}"
                )
        if group is not None and self._wal_view is not None:
            sub = self._subscribe_durable_group(tf, group)
        else:
            sub = Subscription(self, tf, group)
            self._subs.add(sub)
        if envelopes:
            sub._envelope_mode(
                on_deadline == "drop",
                None if schema_versions is None else frozenset(schema_versions),
                None if content_types is None else frozenset(content_types),
            )
        return sub

    def _subscribe_durable_group(self, tf: TopicFilter, group: str) -> Subscription:
        # A group that committed before gets again, from the WAL, every frame from its
        # committed offset up to where its new cursor starts in the ring: no gap and
        # no duplicate at the seam. One that never committed starts at the live end.
        # In a process other than the WAL's writer, the WAL is read from a read-only
        # open, once the frames before the cursor are durable.
        writer = self._wal_writer
        view = self._wal_view
        assert view is not None
        with self._group_lock:
            sub = Subscription(self, tf, group)
            self._subs.add(sub)
            backfill = self._backfills.get(group)
            info = sub._info()
            if info["members"] == 1:  # a new cursor, at the live end
                backfill = None
                live = int(info["next_seq"])
                close: Callable[[], object] | None = None
                if writer is not None:
                    wal = writer.wal
                else:
                    view.wait_durable(live - 1)
                    wal = cast(RemoteWal, view).open_log()
                    close = wal.close
                try:
                    committed = wal.committed(group)
                    if committed is not None:
                        lost = wal.lost(committed)
                        if lost:
                            sub.retention_lost = lost
                            log.warning(
                                "framebus: group %r committed %d, but retention deleted %d "
                                "frames after it; it resumes at %d",
                                group,
                                committed,
                                lost,
                                wal.retained_from,
                            )
                        start = max(committed, wal.retained_from)
                        if start < live:
                            view.wait_durable(live - 1)
                            backfill = GroupBackfill(wal, tf.pattern, start, live - 1)
                            backfill._on_done, close = close, None  # the backfill closes it
                finally:
                    if close is not None:
                        close()
                self._backfills[group] = backfill
            if backfill is not None and not backfill.done:
                sub._attach_backfill(backfill)
        return sub

    # ------------------------------------------------------ flow-layer API

    @property
    def events(self) -> EventBus:
        """The control plane on this bus: publish / subscribe / request (see EventBus)."""
        with self._lock:
            if self._events is None:
                if self.closed:
                    raise BusClosed("the bus is closed")
                from .eventbus import EventBus

                self._events = EventBus(self)
            return self._events  # type: ignore[no-any-return]

    def data_port(self, name: str, **options: Any) -> DataPort:
        """A point-to-point channel with credit-based flow control (see DataPort)."""
        from .dataport import DataPort

        port = DataPort(self, name, **options)
        self._ports.add(port)
        return port

    # ------------------------------------------------------------- hysteresis

    def on_pause(self, callback: Callable[[], object]) -> Callable[[], object]:
        """Call ``callback()`` when usage reaches pause_hi (usable as a decorator).

        On a shared bus this includes transitions made by other processes: a
        watcher thread (one per bus, started here) runs the callbacks for those.
        """
        self._on_pause.append(callback)
        self._watch_other_processes()
        return callback

    def on_resume(self, callback: Callable[[], object]) -> Callable[[], object]:
        """Call ``callback()`` when usage falls back to resume_lo (see on_pause)."""
        self._on_resume.append(callback)
        self._watch_other_processes()
        return callback

    def _watch_other_processes(self) -> None:
        if not self.shared or self.closed:
            return
        with self._lock:
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=_watch_transitions,
                    args=(weakref.ref(self),),
                    name="framebus-transitions",
                    daemon=True,
                )
                self._watcher.start()

    def _on_transition(self) -> None:
        # Called by whichever thread saw a transition in the ring. Transitions
        # alternate (pause, resume, pause, ...) and are counted in the header, so
        # firing from the counters under one lock runs every callback exactly once
        # per transition and in ring order, whatever the threads' timing. A failing
        # callback is logged and counted; it never reaches the publisher.
        # One thread fires at a time; the others leave what they saw to it (never
        # blocking on a callback), and it looks again after letting go.
        while self._next_transition() is not None:
            if not self._transition_lock.acquire(blocking=False):
                return
            try:
                while (kind := self._next_transition()) is not None:
                    if kind == "pause":
                        self._fired_pauses += 1
                        self._run_callbacks(self._on_pause, kind)
                    else:
                        self._fired_resumes += 1
                        self._run_callbacks(self._on_resume, kind)
            finally:
                self._transition_lock.release()

    def _next_transition(self) -> str | None:
        pauses, resumes = self._transitions()
        if self._fired_pauses == self._fired_resumes and self._fired_pauses < pauses:
            return "pause"
        if self._fired_resumes < self._fired_pauses and self._fired_resumes < resumes:
            return "resume"
        return None

    def _run_callbacks(self, callbacks: list[Callable[[], object]], kind: str) -> None:
        for cb in list(callbacks):
            try:
                cb()
            except Exception:
                self._callback_errors += 1
                log.exception("framebus %s callback %r failed", kind, cb)

    # -------------------------------------------------------------------- WAL

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every frame published so far is in the WAL: True, or False on
        timeout (True at once without a WAL). Raises WalError if the WAL cannot write."""
        view = self._wal_view
        if view is None:
            return True
        return view.wait_durable(self.next_seq - 1, timeout)

    def replay(
        self, from_seq: int = 0, to_seq: int | None = None, topic: str | None = None
    ) -> Iterator[Frame]:
        """Frames in the WAL with from_seq <= seq <= to_seq (and matching the topic
        filter), in order. It holds what was written when iteration starts: call
        flush() first to include every frame published."""
        view = self._wal_view
        if view is None:
            raise FrameBusError("replay needs a write-ahead log: this bus has wal_dir=None")
        return view.replay(from_seq, to_seq, topic)

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        """Counters from the ring header plus one entry per live subscription."""
        s: dict[str, Any] = self._ring_stats()
        s["overflow"] = self._config.overflow
        s["max_frame"] = self._config.max_frame
        s["callback_errors"] = self._callback_errors
        s["deadline_misses"] = HeaderCounter(self, Counter.DEADLINE_MISSES).get()
        histograms = self._batch_histograms()
        if self._wal_view is not None:
            wal = self._wal_view.stats(s["next_seq"])
            histograms.update(wal.pop("histograms", {}))
            s.update(wal)
        # (bounds, counts per bucket with +Inf last, sum) of this process's batches
        s["histograms"] = histograms
        s["ports"] = [port.stats() for port in list(self._ports) if not port.closed]
        events = self._events
        s["events"] = None if events is None or events.closed else events.stats()
        subs = []
        for sub in list(self._subs):
            if sub.closed:
                continue
            info = sub._info()
            subs.append(
                {
                    "filter": sub.filter,
                    "group": sub.group,
                    "backlog": info["backlog"],
                    "lagged": info["lagged"],
                    "next_seq": info["next_seq"],
                }
            )
        s["subscriptions"] = subs
        return s

    # ------------------------------------------------------------------ close

    def close(self) -> None:
        """Close the bus: blocked recv/publish calls wake with BusClosed."""
        notifier = self._notifier
        if not self.closed:
            for port in list(self._ports):
                port.close()
            if self._events is not None:
                self._events.close()
        if self._wal_writer is not None and not self.closed:
            self._wal_writer.stop()  # writes what was published before closing
        if self.shared and not self.closed:
            for sub in list(self._subs):
                sub._reader_close()  # free this process's cursors for the others
        self._ring_close()
        if notifier is not None:
            notifier.stop()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(5.0)  # woken by the close; never blocks on anything else

    def __enter__(self) -> FrameBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("paused" if self.paused else "open")
        c = self._config
        return (
            f"<FrameBus {state} ring_bytes={c.ring_bytes} capacity={c.frame_capacity} "
            f"overflow={c.overflow!r}>"
        )

    # ---------------------------------------------------------------- asyncio

    def _async_notifier(self) -> _Notifier:
        with self._lock:
            if self._notifier is None:
                self._notifier = _Notifier(self)
                self._notifier.start()
            return self._notifier


class Subscription(_ring.Reader):
    """A cursor over the bus: ``recv``, ``recv_batch``, iteration, ``arecv``, ``async for``."""

    def __init__(self, bus: FrameBus, filter: TopicFilter, group: str | None) -> None:
        self._bus = bus
        self._filter = filter
        self._group = group
        self._efd: int | None = None
        self._awaiting = 0
        self._reader_open(bus, filter.matches, filter.match_all, group)

    retention_lost = 0  # frames a durable group could no longer get (WAL retention)
    deadline_misses = 0  # envelopes received after their deadline (envelopes=True)
    decode_errors = 0  # frames skipped because they did not decode (envelopes=True)
    _decode: tuple[bool, frozenset[int] | None, frozenset[str] | None] | None = None
    _backfill: GroupBackfill | None = None

    def _envelope_mode(
        self, drop_late: bool, versions: frozenset[int] | None, types: frozenset[str] | None
    ) -> None:
        # every frame read (a durable group's backfill included) is decoded on the way out
        self._decode = (drop_late, versions, types)
        self._set_modes(self._backfill, _decode_envelopes)

    @property
    def filter(self) -> str:
        return self._filter.pattern

    # ------------------------------------------------- durable consumer groups

    def commit(self, seq: int) -> None:
        """Record that this subscription's group has processed every frame up to and
        including ``seq`` (Kafka semantics: the WAL stores ``seq + 1``, the next frame
        wanted). After a restart the group gets every frame after it again, in order,
        then live frames. Offsets only move forward. Needs a group and a WAL. In a
        process attached to a shared bus the bus's creator stores it: this waits until
        it has (WalError if the WAL degrades, its process is gone, or 30 s pass)."""
        if self._group is None:
            raise FrameBusError("commit needs a group subscription: subscribe(..., group=...)")
        view = self._bus._wal_view
        if view is None:
            raise FrameBusError("commit needs a bus with a write-ahead log (wal_dir)")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValueError(f"seq must be an int >= 0 (a frame's .seq), got {seq!r}")
        # in another process than the WAL's writer: asked of it, and waited for
        view.commit(self._group, seq + 1)

    def _attach_backfill(self, backfill: GroupBackfill) -> None:
        self._backfill = backfill
        self._set_modes(backfill, None if self._decode is None else _decode_envelopes)

    @property
    def group(self) -> str | None:
        return self._group

    @property
    def backlog(self) -> int:
        """Frames published (on any topic) that this cursor has not passed yet."""
        return int(self._info()["backlog"])

    def close(self) -> None:
        """Release the cursor; a recv blocked on it wakes with BusClosed."""
        self._reader_close()
        notifier = self._bus._notifier
        if notifier is not None:
            notifier.fire(self)
        if self._efd is not None and not self._awaiting:
            os.close(self._efd)  # else the pending arecv closes it once it has woken
            self._efd = None

    def __del__(self) -> None:
        try:
            self._reader_close()
            if self._efd is not None:
                os.close(self._efd)
        except Exception:
            pass

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[_ring.Frame]:
        return self

    def __next__(self) -> _ring.Frame:
        try:
            frame = self.recv()
        except BusClosed:
            raise StopIteration from None
        assert frame is not None  # recv() without a timeout returns a frame or raises
        return frame

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        group = f" group={self._group!r}" if self._group else ""
        return f"<Subscription {self.filter!r}{group} {state}>"

    # ---------------------------------------------------------------- asyncio

    async def arecv(self, timeout: float | None = None) -> _ring.Frame | None:
        """Await the next frame (None on timeout) without blocking the event loop.

        Readiness comes from an eventfd registered with the loop, written by the
        bus's single notifier thread when the ring signals data for this cursor.
        """
        frame = self.recv(0)
        if frame is not None:
            return frame
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if self._efd is None:
            self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        fd = self._efd
        notifier = self._bus._async_notifier()
        while True:
            ready = loop.create_future()

            def on_ready(fut: asyncio.Future[None] = ready) -> None:
                try:
                    os.eventfd_read(fd)
                except BlockingIOError:
                    pass
                if not fut.done():
                    fut.set_result(None)

            loop.add_reader(fd, on_ready)
            self._awaiting += 1
            try:
                notifier.arm(self, fd)
                if not self._readable():
                    left = None if deadline is None else deadline - loop.time()
                    if left is not None and left <= 0:
                        return self.recv(0)
                    try:
                        await asyncio.wait_for(ready, left)
                    except asyncio.TimeoutError:
                        return self.recv(0)
            finally:
                loop.remove_reader(fd)
                notifier.disarm(self)
                self._awaiting -= 1
                if self.closed and not self._awaiting and self._efd is not None:
                    os.close(self._efd)
                    self._efd = None
            frame = self.recv(0)
            if frame is not None:
                return frame

    def __aiter__(self) -> AsyncIterator[_ring.Frame]:
        return self

    async def __anext__(self) -> _ring.Frame:
        try:
            frame = await self.arecv()
        except BusClosed:
            raise StopAsyncIteration from None
        assert frame is not None
        return frame


def _decode_envelopes(sub: Subscription, frames: list[_ring.Frame]) -> list[Any]:
    """An envelope subscription's decoder (see Reader._set_modes): Envelopes, with late
    and undecodable ones counted and, by the subscription's settings, dropped."""
    assert sub._decode is not None
    drop_late, versions, types = sub._decode
    items, misses, bad = _envelope.decode_frames(
        frames, None, drop_late, time.time_ns(), versions, types
    )
    if misses:
        sub.deadline_misses += misses
        HeaderCounter(sub._bus, Counter.DEADLINE_MISSES).add(misses)
    if bad:
        sub.decode_errors += len(bad)
        for seq, why in bad[:3]:
            log.warning("framebus: subscription %r skipped frame %d: %s", sub.filter, seq, why)
    return items  # type: ignore[no-any-return]


class _Notifier(threading.Thread):
    """One thread per bus that turns the ring's data futex into eventfd writes.

    It sleeps on a condition while no coroutine waits, so producers pay nothing;
    while one does, it is a registered ring waiter and wakes once per signal.
    """

    def __init__(self, bus: FrameBus) -> None:
        super().__init__(name="framebus-notifier", daemon=True)
        self._bus = weakref.ref(bus)
        self._armed: dict[Subscription, int] = {}
        self._cond = threading.Condition()
        self._stopping = False

    def arm(self, sub: Subscription, fd: int) -> None:
        with self._cond:
            self._armed[sub] = fd
            self._cond.notify()

    def disarm(self, sub: Subscription) -> None:
        with self._cond:
            self._armed.pop(sub, None)

    def fire(self, sub: Subscription) -> None:
        with self._cond:
            fd = self._armed.pop(sub, None)
        if fd is not None:
            _poke(fd)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            armed, self._armed = self._armed, {}
            self._cond.notify()
        for fd in armed.values():
            _poke(fd)

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._armed and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
            bus = self._bus()
            if bus is None:
                return
            try:
                seen = bus._wait_data_signal_register()
            except BusClosed:
                self.stop()
                return
            with self._cond:
                ready = [(s, fd) for s, fd in self._armed.items() if s._readable()]
                for s, _ in ready:
                    del self._armed[s]
            for _, fd in ready:
                _poke(fd)
            rc = bus._wait_data_signal(seen, 0 if ready else None)
            del bus
            if rc == _ring.CLOSED:
                self.stop()
                return


def _watch_transitions(ref: weakref.ref[FrameBus]) -> None:
    # Holds the bus only while waiting (bounded), so an unclosed bus can still be
    # collected; a close wakes the wait at once.
    while True:
        bus = ref()
        if bus is None:
            return
        try:
            if not bus._watch_transitions(1.0):
                return
        except BusClosed:
            return
        finally:
            del bus


_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"shared bus name must be a str, not {type(name).__name__}")
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"shared bus name {name!r} is invalid: use 1-200 letters, digits, '_', '.' or '-'"
        )
    return name


def _shm_path(name: str) -> bytes:
    return f"/framebus.{name}".encode()


def _resolve_config(
    config: BusConfig | None, preset: str | None, overrides: dict[str, Any]
) -> BusConfig:
    if config is not None and preset is not None:
        raise ConfigError("pass either config or preset, not both")
    if config is None:
        return BusConfig.preset(preset or "default", **overrides)
    if not isinstance(config, BusConfig):
        raise TypeError(f"config must be a BusConfig, not {type(config).__name__}")
    return config.replace(**overrides) if overrides else config


def _frame_limit(config: BusConfig) -> int:
    """The ring's frame limit: with a WAL, at most async_write_queue_size frames are in
    the ring (the WAL's write queue) at once."""
    if config.wal_dir is None:
        return config.frame_limit  # 0: the ring derives it from the threshold
    limit = config.frame_limit or int(config.backpressure_threshold * config.frame_capacity)
    return min(limit, config.async_write_queue_size)


def _poke(fd: int) -> None:
    try:
        os.eventfd_write(fd, 1)
    except OSError:
        pass  # closed by its subscription meanwhile
