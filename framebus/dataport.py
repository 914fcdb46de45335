"""DataPort: a point-to-point channel on a bus, with credit-based flow control.

```python
port = bus.data_port("cam0", window=64)   # the same call on both sides, any process
# receiver (one per port at a time):
port.on_frame(callback)                   # callback(item) on a thread of the port
# ... or: item = port.recv(timeout=1.0); items = port.recv_batch(256); for item in port
# ... or: item = await port.arecv(); async for item in port
# sender (any number, any process on the bus):
granted = port.acquire_credit(16, timeout=0)   # WouldBlock when none is granted
seq = port.send_frame(b"...")                  # WouldBlock without credit
first, sent = port.send_batch(frames)          # the prefix that credit covers
```

Credits. The receiver grants ``window`` credits when it opens and one more for every
frame it has consumed: a frame returned by ``recv``/``recv_batch``/iteration counts as
consumed when it is handed over; with ``on_frame``, once the callback has returned
for it. Grants go back in steps of ``max(1, window // 4)``, and whatever is pending
goes back before the receiver waits for more, so neither side waits on the other.
Every frame sent spends one credit, so at most ``window`` frames (plus those being
handled) are ever between sender and receiver: a slow receiver stops the
sender, and nothing grows. Credits live in a counter in the ring's memory, so senders
in any process draw on one pool (``acquire_credit`` moves some into this handle's
``held``; ``send_frame`` spends a held one, or takes one from the pool when none is
held). With no receiver there is no credit: senders get WouldBlock.

Window size. Throughput is at most ``window`` frames per credit round trip (a grant
back to a waiting sender: a wake-up, in one process a hand-over of the GIL). The
default of 64 suits control-sized flows; for bulk frames use thousands: with 8192,
``bench/dataport.py`` measured 0.83x-0.98x the raw bus's throughput, with 1024 down
to 0.67x for batches between two threads of one process.

Items. ``send_frame(data)`` takes a bytes-like object, delivered as a `Frame` (topic
``_port.<name>.b``), or an `Envelope`, delivered as an Envelope (seq and ts_ns set;
``on_deadline``, ``schema_versions`` and ``content_types`` as for
``bus.subscribe(..., envelopes=True)``; a late or undecodable envelope still returns
its credit).

Callbacks. ``on_frame`` runs the callback on one thread of the port; an exception
it raises is caught, counted (``stats()["callback_errors"]``, ``last_error``) and
logged (the first 10, then every 1000th), and the port goes on.

Lifetime. ``close()`` (also ``bus.close()`` and the with-block) stops the callback
thread, gives held credits back, and, on the receiver, takes the pool to zero so
senders block instead of sending to nobody; frames still in the ring for a closed
receiver are not delivered (close senders first). A receiver process that dies
leaves its grants in the pool: a new receiver resets the pool to its window when it
opens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import _port
from ._internal import TopicCounter
from ._reserved import Counter, port_topics
from .errors import BusClosed, FrameBusError
from .topics import validate_topic

if TYPE_CHECKING:
    from .bus import FrameBatch, FrameBus, Subscription

__all__ = ["DataPort"]

log = logging.getLogger("framebus")

_MAX_WINDOW = 1 << 31


class DataPort(_port.PortCore):
    """One end (or both ends) of a named point-to-point channel; see the module docs.

    ``acquire_credit``, ``send_frame`` and ``send_batch`` (and the per-batch receive
    path) are C methods of the base class.
    """

    def __init__(
        self,
        bus: FrameBus,
        name: str,
        *,
        window: int = 64,
        batch: int = 256,
        on_deadline: str = "deliver",
        schema_versions: Collection[int] | None = None,
        content_types: Collection[str] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"data port name must be a non-empty str, got {name!r}")
        try:
            validate_topic(name)
        except ValueError as exc:
            raise ValueError(f"data port name {name!r} is not usable as a topic: {exc}") from None
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window < _MAX_WINDOW:
            raise ValueError(f"window must be an int in 1..{_MAX_WINDOW - 1}, got {window!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an int >= 1, got {batch!r}")
        if on_deadline not in ("deliver", "drop"):
            raise ValueError(f"on_deadline must be 'deliver' or 'drop', got {on_deadline!r}")
        self._bus = bus
        self._name = name
        self._window = window
        self._batch = batch
        # the ring's own strs for the topics (interned up front: a full topic table
        # fails here), so received frames are told apart by identity
        bytes_topic, envelope_topic, self._group = port_topics(name)
        credit_id = bus.topic_id(bytes_topic)  # its counter: the pool
        topic = bus.topic_name(credit_id)
        env_topic = bus.topic_name(bus.topic_id(envelope_topic))
        self._credits = TopicCounter(bus, tid=credit_id)
        self._core_init(
            bus,
            credit_id,
            topic,
            env_topic,
            name,
            max(1, window // 4),
            on_deadline == "drop",
            None if schema_versions is None else frozenset(schema_versions),
            None if content_types is None else frozenset(content_types),
            Counter.DEADLINE_MISSES,
        )
        self._lock = threading.Lock()
        self._sub: Subscription | None = None
        self._thread: threading.Thread | None = None
        self._decode_errors = 0
        self._callback_errors = 0
        self.last_error: BaseException | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def window(self) -> int:
        return self._window

    @property
    def available(self) -> int:
        """Credits in the shared pool (granted by the receiver, not yet acquired)."""
        if self._bus.closed:
            return 0
        return self._credits.get()

    # ---------------------------------------------------------------- receiver

    def _receive_side(self) -> Subscription:
        sub = self._sub
        if sub is not None:
            return sub
        with self._lock:
            self._check_open()
            if self._sub is None:
                # a group cursor: its member count says whether another receiver exists,
                # in any process, and a dead receiver's cursor is evicted like any other
                sub = self._bus.subscribe(self._group + ".*", group=self._group)
                if sub._info()["members"] > 1:
                    sub.close()
                    raise FrameBusError(f"data port {self._name!r} already has a receiver")
                self._credits.exchange(self._window)
                self._sub = sub
            return self._sub

    def _bad(self, bad: Sequence[tuple[int, str]]) -> None:
        self._decode_errors += len(bad)
        for seq, why in bad[:3]:
            log.warning("framebus: data port %r skipped frame %d: %s", self._name, seq, why)

    def recv_batch(self, max_frames: int = 256, timeout: float | None = None) -> list[Any]:
        """Up to ``max_frames`` items (Frames or Envelopes), waiting up to ``timeout``
        for the first; [] on timeout. Their credits go back to the sender."""
        sub = self._sub
        if sub is None or self._thread is not None:
            sub = self._direct()
        items, n = self._receive(sub, max_frames, timeout)
        if items or not n:
            return items  # type: ignore[no-any-return]
        # every frame read was late (dropped) or undecodable: read on until the timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            items, n = self._receive(sub, max_frames, left)
            if items or not n:
                return items  # type: ignore[no-any-return]

    def recv_payloads(self, max_frames: int = 256, timeout: float | None = None) -> list[bytes]:
        """Up to ``max_frames`` payloads (bytes, no Frame per frame), waiting up to
        ``timeout`` for the first; [] on timeout. Raw frames: an Envelope sent on the
        port arrives encoded (``Envelope.decode``), with no deadline check."""
        return self._raw(max_frames, timeout, True)

    def recv_frames(self, max_frames: int = 256, timeout: float | None = None) -> FrameBatch:
        """Up to ``max_frames`` frames as one `FrameBatch` (empty on timeout); raw frames
        as recv_payloads."""
        return self._raw(max_frames, timeout, False)

    def _raw(self, max_frames: int, timeout: float | None, payloads: bool) -> Any:
        sub = self._sub
        if sub is None or self._thread is not None:
            sub = self._direct()
        return self._receive_raw(sub, max_frames, timeout, payloads)

    def recv(self, timeout: float | None = None) -> Any:
        """The next item, or None on timeout (see recv_batch)."""
        items = self.recv_batch(1, timeout)
        return items[0] if items else None

    async def arecv(self, timeout: float | None = None) -> Any:
        """Await the next item (None on timeout) without blocking the event loop."""
        sub = self._direct()
        loop_deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if loop_deadline is None else max(0.0, loop_deadline - time.monotonic())
            frame = sub.recv(0)
            if frame is None:
                self._flush()
                frame = await sub.arecv(left)
            if frame is None:
                return None
            items = self._process([frame])
            if items:
                return items[0]

    def _direct(self) -> Subscription:
        if self._thread is not None:
            raise FrameBusError(
                f"data port {self._name!r} delivers to its on_frame callback; recv is not available"
            )
        return self._receive_side()

    def on_frame(self, callback: Callable[[Any], object]) -> Callable[[Any], object]:
        """Run ``callback(item)`` for every item on a thread of the port (usable as a
        decorator). One callback per port; see the module docs for errors."""
        if not callable(callback):
            raise TypeError(f"on_frame needs a callable, got {type(callback).__name__}")
        with self._lock:
            if self._thread is not None:
                raise FrameBusError(f"data port {self._name!r} already has an on_frame callback")
        sub = self._receive_side()
        with self._lock:
            self._check_open()
            if self._thread is not None:
                raise FrameBusError(f"data port {self._name!r} already has an on_frame callback")
            self._thread = threading.Thread(
                target=self._run_callbacks,
                args=(sub, callback),
                name=f"framebus-port-{self._name}",
                daemon=True,
            )
            self._thread.start()
        return callback

    def _run_callbacks(self, sub: Subscription, callback: Callable[[Any], object]) -> None:
        while not self.closed:
            try:
                items, n = self._receive(sub, self._batch, None, False)
            except BusClosed:
                return
            for item in items:
                try:
                    callback(item)
                except Exception as exc:
                    self._callback_errors += 1
                    self.last_error = exc
                    k = self._callback_errors
                    if k <= 10 or k % 1000 == 0:
                        log.exception(
                            "framebus: data port %r callback %r failed (%d failures so far)",
                            self._name,
                            callback,
                            k,
                        )
            self._grant_consumed(n)  # handled: their credits go back

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            item = self.recv()
        except BusClosed:
            raise StopIteration from None
        return item

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.arecv()
        except BusClosed:
            raise StopAsyncIteration from None

    # --------------------------------------------------------------- lifetime

    def _check_open(self) -> None:
        if self.closed:
            raise BusClosed(f"data port {self._name!r} is closed")
        if self._bus.closed:
            raise BusClosed("the bus is closed")

    def stats(self) -> dict[str, Any]:
        """This handle's counters; ``available`` is the shared pool."""
        return {
            "name": self._name,
            "window": self._window,
            "available": self.available,
            "held": self.held,
            "sent": self.sent,
            "would_block": self.would_block,
            "received": self.received,
            "deadline_misses": self.deadline_misses,
            "decode_errors": self._decode_errors,
            "callback_errors": self._callback_errors,
            "receiver": self._sub is not None and not self.closed,
        }

    def close(self) -> None:
        """Stop the callback thread, give credits back, and release the receiver."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            sub, thread = self._sub, self._thread
        bus_open = not self._bus.closed
        if bus_open:
            self._release_credits()
            self._credits.wake()  # a sender waiting for credit sees the close
        if sub is not None:
            sub.close()  # wakes the callback thread's recv with BusClosed
            if bus_open:
                self._credits.exchange(0)
        if thread is not None and thread is not threading.current_thread():
            thread.join(10.0)

    def __enter__(self) -> DataPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<DataPort {self._name!r} window={self._window} {state}>"
