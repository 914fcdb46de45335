"""The in-process runtime (``plan.run(runtime="inproc")``): each stage of the plan runs
on threads of this process, and its edges are DataPorts on one in-process FrameBus, so
credits carry backpressure from the sinks back to the sources.

Stages. A stage (a fused chain, or one node) runs on one thread, or on ``parallelism``
threads for a map, filter or sink (they take turns receiving from the node's one
input port; each works through what it took). All the edges into a node share one
DataPort, ``<graph>.<node>``, with the node's ``window`` (credits, in frames); its
``overflow`` says what a sender does without credit: ``block`` waits, ``drop`` drops
the frames credit does not cover, ``drop_oldest`` keeps the newest ``window`` frames
waiting and drops older ones (dropped items count as ``dropped`` of the node). A
stage with ``async def`` callables runs them on an asyncio loop of its own thread
(:class:`AsyncEngine`), one item at a time as the sync engine does; the loop runs
only while the stage works on a batch.

Batches. Items move in frames of up to ``max_batch`` items. With ``codec="ref"`` (the
default) a frame is a header ``kind, emitted_ns, deadline_ns, token`` and its items
stay in the run's table under the token until the receiver takes them: they arrive
as the very objects sent, as in the sync engine (a fan-out's receivers share them).
With ``codec="msgpack"`` a frame is one msgpack array ``[kind, emitted_ns,
deadline_ns, items]``, as items would cross processes. A source asks its iterator
for one item while the stage after it is idle (nothing in flight on its port) and
for twice as many as last time while it is loaded, up to ``max_batch``; other stages
keep the frames they get (a filter may shrink them; an accumulator sends each list
in a frame of its own). A batch waits for its last item, so a source that blocks
between items (waiting for data) is best run with ``max_batch=1`` or a ``rate``.
msgpack-encoded items: bytes stay bytes, ints, floats, strs, None, lists and dicts
(any keys) come back equal, tuples come back as lists (as on any msgpack channel), an
Envelope travels as its encoding and comes back an equal Envelope; an item msgpack
cannot encode is a dead letter of the node that produced it. Inside a fused stage
items are passed as they are.

Handoff. With ``handoff="auto"`` (the default) a sender runs a frame for the next
stage itself, in its own thread, when that stage is idle (nobody holds its lock) and
cheap: its frames took under 50 us each (a moving average of real time, a sample
capped at 100 us, over at least 8 frames its own thread worked through first). The
frames waiting on the stage's port go first, so a path keeps its order; the stage's
thread holds the same lock while it takes and works through frames. An idle pipe then
pays no thread hop per stage (a wake-up and a GIL hand-over, 25-70 us at the median
here and far more at the tail); a loaded stage (its lock held by its thread) or a
slow one gets its frames on its port as before, and a source batches as before (and
also, when a next stage may run inline, while its items come faster than 10 us each:
such a pipe never looks loaded). Only stages of
one worker, without ``async def`` callables or ``rate``, with ``codec="ref"``, are run
inline. A call that hangs inline is reported under the sender's thread.
``handoff="thread"``: every frame goes to the stage's own thread.

Time. ``clock()`` gives ns (default ``time.monotonic_ns``). A frame carries one
emission time: for a frame of one item, the clock when its source produced it (as
in sync); for a larger frame, the clock just before the source was asked for the
first of its items, so no item's latency is under-reported. Deadline checks
(``deadline``/``on_deadline`` per node, a source's ``deadline`` end to end) and the
latency histogram use that time. An accumulator's list carries its oldest item's.
TTLs are checked by the accumulator's own thread when a frame arrives and whenever
it waits, so a list is flushed once its first item has been held longer than ``ttl``
even if nothing else comes.

Order. A path of stages with parallelism 1 delivers in the order its source
produced (one ring: the frames of one sender arrive in the order sent); items
of different sources, or from the two sides of a fan-in, interleave in no set order;
a node with ``parallelism`` > 1 gives no order. The output multiset is the sync
engine's for the same input (with msgpack, the caveat above).

Failures. As in sync: a call that raises is retried ``retries`` times after
``backoff * 2**(k-1)`` s, then the item is a dead letter (``report.dead_letters``,
and a msgpack map ``{"node", "item", "error"}`` published on topic
``_flow.dead.<graph>`` of the run's bus, the item as its repr when msgpack cannot
encode it) and the run goes on. A source that raises ends there.

Stopping. At the end of every source (or at ``timeout`` by the clock, or on Ctrl-C)
the sources stop and the rest drains: every item in flight reaches the sinks and the
accumulators flush, then each stage ends when all its inputs have. After a Ctrl-C the
run re-raises KeyboardInterrupt once drained, with the partial Report as its
``report`` attribute. A second Ctrl-C, an exception other than Exception
(KeyboardInterrupt, SystemExit) in a node, or an internal error stops every stage at
once, and that exception is raised. When ``run`` returns or raises, the run's threads
are joined, its ports closed and its bus (if it made it) closed; except that a stage
inside a call that does not return (a source blocked in its iterator, a sink that
hangs) cannot be stopped: 10 s after the stop the run logs a warning naming it and
raises, leaving its (daemon) thread.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import queue
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import compress, islice
from typing import TYPE_CHECKING, Any

import msgpack

from framebus._reserved import FLOW
from framebus.envelope import Envelope
from framebus.errors import BusClosed, FrameBusError, WouldBlock

from .accumulate import Accumulator
from .errors import FlowError
from .report import DeadLetter, NodeStats, Report
from .sync import call_source, clock_and_sleep, source_iterator

if TYPE_CHECKING:
    from framebus.bus import FrameBus
    from framebus.dataport import DataPort

    from .compile import CompiledNode, Plan

__all__ = ["AsyncEngine", "InprocEngine", "dead_topic"]

log = logging.getLogger("framebus")

_DATA, _END = 0, 1
_ENVELOPE_EXT = 1
MAX_BATCH = 1024  # items per frame a source asks for at most
_RECV_FRAMES = 64  # frames a stage takes per receive
_POLL = 0.02  # s: the longest a blocked stage goes without checking for a stop
_GRACE = 10.0  # s: how long a stopped run waits for a stage stuck in a call
_FRAME_BYTES = 1 << 20  # a frame of several items larger than this is split
# The run's own bus. Its ring must hold the frames in flight: a stage waiting for
# credit keeps its place in the ring, and what is published after that place stays
# until it reads on. Ports hold `window` frames each, mostly far below 1 MiB.
_RING_BYTES = 1 << 25
_RING_POW = 14
_MAX_FRAME = 1 << 22  # the largest frame: one item alone up to about this
# handoff="auto": a stage runs a frame in its sender's thread when it is idle and its
# frames have taken under _INLINE_NS each (a moving average, real time, over at least
# _INLINE_WARMUP frames): a thread hop costs more than that here (wake-up and GIL
# hand-over, 25-70 us at the median on 2 cores, far more at the tail).
_INLINE_NS = 50_000
_INLINE_WARMUP = 8
# Only frames of up to this many items run inline: larger ones mean a loaded pipe,
# where the stages' threads overlap what they do without the GIL.
_INLINE_ITEMS = 32
_FAST_ITEM_NS = 10_000  # a source whose iterator gives items faster than this is batched
HANDOFFS = ("auto", "thread")

_DEAD = object()  # a result given up on (dead letter)
# codec="ref": a frame is this header; its items stay in the run's table, by token
_REF = struct.Struct("<BQQQ")  # kind, emitted_ns, deadline_ns, token
CODECS = ("ref", "msgpack")


def dead_topic(graph: str) -> str:
    """The topic a graph's dead letters are published on: ``<FLOW>dead.<graph>``. A
    graph or node name holds no dot, so an edge topic ``<FLOW><g>.<a>.<b>`` has two
    dots after the prefix and this topic one: they never meet."""
    return f"{FLOW}dead.{graph}"


def _default(obj: Any) -> Any:
    if type(obj) is Envelope:
        return msgpack.ExtType(_ENVELOPE_EXT, obj.encode())
    raise TypeError(f"cannot encode {type(obj).__name__} with msgpack")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _ENVELOPE_EXT:
        return Envelope.decode(data)
    return msgpack.ExtType(code, data)


def _unpack(payload: bytes) -> Any:
    return msgpack.unpackb(payload, ext_hook=_ext_hook, strict_map_key=False)


class _Stop(Exception):
    """The run is stopping at once (abort); a stage leaves what it is doing."""


class AsyncEngine:
    """The asyncio loop of one stage thread: ``async def`` callables and async
    iterators of the stage run on it, each awaitable to completion in turn. Made on
    first use, closed when the stage ends."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def run(self, awaitable: Any) -> Any:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop.run_until_complete(awaitable)

    def close(self) -> None:
        if self.loop is not None:
            try:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()
                self.loop = None


class _Run:
    """What every thread of one run shares."""

    def __init__(self, engine: InprocEngine) -> None:
        self.engine = engine
        self.stopping = threading.Event()  # sources stop; the rest drains
        self.abort = threading.Event()  # every stage stops now
        self.fatal: BaseException | None = None
        self.timed_out = False
        self.lock = threading.Lock()
        self.dead: list[DeadLetter] = []
        self.bus: FrameBus | None = None
        self.topic = dead_topic(engine.plan.name)
        self.packer = msgpack.Packer(use_bin_type=True, default=_default)
        self.by_ref = engine.codec == "ref"
        self.refs: dict[int, list[Any]] = {}  # codec="ref": items of frames in flight
        self.tokens = itertools.count(1)  # next() is atomic under the GIL

    def forget(self, frames: Any) -> None:
        """codec="ref": frames that will never be received (dropped) let their items go."""
        if self.by_ref:
            for frame in frames:
                self.refs.pop(_REF.unpack(frame)[3], None)

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.fatal is None:
                self.fatal = exc
        self.abort.set()

    def dead_letter(self, node: str, item: Any, exc: BaseException | str) -> None:
        error = exc if isinstance(exc, str) else repr(exc)
        with self.lock:
            self.dead.append(DeadLetter(node, item, error))
            try:
                payload = self.packer.pack({"node": node, "item": item, "error": error})
            except Exception:
                self.packer.reset()
                payload = self.packer.pack({"node": node, "item_repr": repr(item), "error": error})
        bus = self.bus
        if bus is not None:
            try:
                bus.try_publish(payload, self.topic)
            except (FrameBusError, ValueError):
                pass  # a full ring or a closed bus: the list still has it


class _Stage:
    """One stage: its nodes (a chain), its input port and its shared counters."""

    def __init__(self, plan: Plan, names: list[str]) -> None:
        self.nodes: list[CompiledNode] = [plan.nodes[n] for n in names]
        self.name = "+".join(names)
        self.head = self.nodes[0]
        self.tail = self.nodes[-1]
        self.kind = self.head.kind
        self.workers = self.head.options.get("parallelism", 1) if len(names) == 1 else 1
        self.expected_ends = len(self.head.inputs)
        self.ends = 0
        self.done = False
        self.running = self.workers
        self.port: DataPort | None = None
        self.wake = _Wake()
        self.recv_lock = threading.Lock()
        self.mu = threading.Lock()
        self.next_at: int | None = None  # rate: the clock time the next item is due
        # handoff="auto": whoever holds `own` works for the stage (its thread, or a
        # sender running a frame inline); `inline` says senders may try
        self.own = threading.Lock()
        self.inline = False
        self.owner: _Worker | None = None
        self.cost_ns = 0  # real ns per frame, a moving average (1/8 weight)
        self.measured = 0  # frames measured so far
        self.acc: Accumulator | None = None
        if self.kind == "accumulate":
            o = self.head.options
            self.acc = Accumulator(o["count"], o["size"], o["ttl"], self.head.until)

    def note_cost(self, ns: int, frames: int) -> None:
        # a sample is capped at twice the limit: one preemption of the thread (a
        # millisecond or more, now and then) does not stop the hand-off alone
        sample = min(ns // frames, 2 * _INLINE_NS)
        if self.measured:
            self.cost_ns += (sample - self.cost_ns) >> 3
        else:
            self.cost_ns = sample
        self.measured += frames

    @property
    def cheap(self) -> bool:
        """Whether a sender may run a frame of this stage in its own thread."""
        return self.inline and self.measured >= _INLINE_WARMUP and self.cost_ns <= _INLINE_NS


class _Out:
    """A worker's sending end of one output port."""

    __slots__ = (
        "dst",
        "port",
        "wake",
        "overflow",
        "window",
        "pending",
        "pending_n",
        "dropped",
        "target",
    )

    def __init__(self, dst: CompiledNode, port: DataPort, wake: _Wake) -> None:
        self.dst = dst.name
        self.port = port
        self.wake = wake  # poked after every send: the receiving stage waits on it
        self.overflow: str = dst.options.get("overflow", "block")
        self.window: int = dst.options.get("window", 64)
        self.pending: deque[bytes] = deque()  # drop_oldest: frames waiting for credit
        self.pending_n: deque[int] = deque()
        self.dropped = 0  # items dropped for want of credit
        self.target: _Worker | None = None  # handoff="auto": the stage's worker (_offer)


class _Worker:
    """One thread of a stage, with its own counters (summed into the report)."""

    def __init__(self, engine: InprocEngine, run: _Run, stage: _Stage, index: int) -> None:
        self.engine = engine
        self.run = run
        self.stage = stage
        self.index = index
        self.clock = engine.clock
        self.sleep = engine.sleep
        self.stats = {n.name: NodeStats(n.kind, n.stage) for n in stage.nodes}
        self.report = Report(engine.plan.name, "inproc", {})  # latency and e2e misses
        self.latencies: list[tuple[int, int]] = []  # (ns, items) not yet in the histogram
        self.outs: list[_Out] = []
        self.inline_outs = False  # some out's stage may take frames in this thread
        self.aio = AsyncEngine()
        self.is_async = {n.name: _is_async(n.fn) for n in stage.nodes}
        self.packer = msgpack.Packer(use_bin_type=True, default=_default)
        self.resume = 0  # a resumable source: where it resumes (the ipc runtime sets it)
        self.thread = threading.Thread(
            target=self.main,
            name=f"framebus-flow-{engine.plan.name}-{stage.name}-{index}",
            daemon=True,
        )

    # -- the thread ------------------------------------------------------------------

    def main(self) -> None:
        stage = self.stage
        try:
            try:
                if stage.kind == "source":
                    self._source()
                elif stage.inline:
                    self._consume_owned()
                else:
                    self._consume()
                self._finish()
            finally:
                self._record()
                self.aio.close()
        except _Stop:
            pass
        except BusClosed:
            if not self.run.abort.is_set():
                self.run.fail(FlowError(f"stage {stage.name!r}: the run's bus was closed"))
        except BaseException as exc:  # FlowError, KeyboardInterrupt, a bug: stop the run
            self.run.fail(exc)

    def _finish(self) -> None:
        """The drain's last steps: the pending frames, the end-of-input flush and, from
        the stage's last worker, the end marker to every output."""
        for out in self.outs:
            if out.pending:
                self._push(out, [], [], wait=True)
        stage = self.stage
        with stage.mu:
            stage.running -= 1
            last = stage.running == 0
        if not last:
            return
        if stage.acc is not None and len(stage.acc):
            self._send(self._flush_acc("end"))
        if self.outs:
            if self.run.by_ref:
                end = _REF.pack(_END, 0, 0, 0)
            else:
                end = self.packer.pack([_END, 0, 0, None])
            for out in self.outs:
                self._push(out, [end], [0], wait=True)

    def _record(self) -> None:
        latencies, self.latencies = self.latencies, []
        record = self.report.record_latency_n
        for ns, n in latencies:
            record(ns, n)

    # -- sending ---------------------------------------------------------------------

    def _check_abort(self) -> None:
        if self.run.abort.is_set():
            raise _Stop

    def _emit(self, emitted: int, deadline: int, items: list[Any]) -> None:
        """Sends items on: an idle stage that takes them inline (handoff="auto") runs
        them in this thread; the other outputs get them as frames."""
        outs: list[_Out] | None = None
        if self.inline_outs:
            outs = [
                o
                for o in self.outs
                if o.target is None or o.pending or not o.target._offer(items, emitted, deadline)
            ]
            if not outs:
                return
        self._send(self._frame(emitted, deadline, items), outs)

    def _offer(self, items: list[Any], emitted: int, deadline: int) -> bool:
        """Runs a frame of items for this worker's stage in the caller's thread, if the
        stage is cheap and nobody works for it now: the frames waiting on its port
        first, for their order. False: the caller sends the frame to the port."""
        stage = self.stage
        if len(items) > _INLINE_ITEMS or not stage.cheap:
            return False
        own = stage.own
        if not own.acquire(False):
            return False
        try:
            start = time.perf_counter_ns()
            port = stage.port
            assert port is not None
            waiting = port.recv_payloads(min(_RECV_FRAMES, port.window), 0)
            if waiting:
                self._handle(waiting)
            self._take(items, emitted, deadline)
            stage.note_cost(time.perf_counter_ns() - start, len(waiting) + 1)
            acc = stage.acc
            if acc is not None and len(acc) and stage.wake.sleeping:
                stage.wake.poke()  # its thread times the TTL of what is held now
        finally:
            own.release()
        return True

    def _send(self, frames: list[tuple[bytes, int]], outs: list[_Out] | None = None) -> None:
        if outs is None:
            outs = self.outs
        if not frames or not outs:
            return
        data = [f for f, _ in frames]
        counts = [n for _, n in frames]
        for i, out in enumerate(outs):
            if i and self.run.by_ref:
                data = [self._ref_again(f) for f in data]  # each receiver takes its own
            self._push(out, data, counts, wait=out.overflow == "block")

    def _ref_again(self, frame: bytes) -> bytes:
        kind, emitted, deadline, token = _REF.unpack(frame)
        if kind != _DATA:
            return frame
        again = next(self.run.tokens)
        self.run.refs[again] = self.run.refs[token]
        return _REF.pack(kind, emitted, deadline, again)

    def _push(self, out: _Out, data: list[bytes], counts: list[int], wait: bool) -> None:
        port = out.port
        data, counts = self._with_pending(out, data, counts)
        i, n = 0, len(data)
        tail = self.stats[self.stage.tail.name]
        while i < n:
            try:
                _first, k = port.send_batch(data if i == 0 else data[i:], timeout=_POLL)
            except WouldBlock:
                k = 0  # no credit, or no room in the ring within _POLL
            if k and out.wake.sleeping:
                out.wake.poke()
            i += k
            if i >= n:
                return
            if not wait:
                break
            self._check_abort()
            start = self.clock()
            try:
                port.acquire_credit(n - i, timeout=_POLL)
            except WouldBlock:
                pass
            tail.blocked_ns += self.clock() - start
        self._park(out, data[i:], counts[i:])

    @staticmethod
    def _with_pending(
        out: _Out, data: list[bytes], counts: list[int]
    ) -> tuple[list[bytes], list[int]]:
        """The frames to send: those parked by an earlier send first (drop_oldest)."""
        if out.overflow == "drop_oldest" or out.pending:
            out.pending.extend(data)
            out.pending_n.extend(counts)
            data, counts = list(out.pending), list(out.pending_n)
            out.pending.clear()
            out.pending_n.clear()
        return data, counts

    def _park(self, out: _Out, rest: list[bytes], rest_n: list[int]) -> None:
        """Frames a send could not place: dropped ("drop"), or parked for the next send,
        the newest ``window`` of them ("drop_oldest")."""
        if not rest:
            return
        if out.overflow == "drop":
            out.dropped += sum(rest_n)
            self.run.forget(rest)
            return
        out.pending.extend(rest)
        out.pending_n.extend(rest_n)
        while len(out.pending) > out.window:
            self.run.forget([out.pending.popleft()])
            out.dropped += out.pending_n.popleft()

    def _frame(self, emitted: int, deadline: int, items: list[Any]) -> list[tuple[bytes, int]]:
        """The frames for ``items`` (split when over _FRAME_BYTES); an item msgpack
        cannot encode, or too large for a frame of the bus alone, is a dead letter of
        the stage's last node. codec="ref": one frame naming the items, kept as they are."""
        if self.run.by_ref:
            token = next(self.run.tokens)
            self.run.refs[token] = items
            return [(_REF.pack(_DATA, emitted, deadline, token), len(items))]
        try:
            payload = self.packer.pack([_DATA, emitted, deadline, items])
        except Exception:
            self.packer.reset()
            return self._frame_each(emitted, deadline, items)
        if len(payload) <= min(_FRAME_BYTES, self.engine.max_frame):
            return [(payload, len(items))]
        if len(items) == 1:
            return self._frame_each(emitted, deadline, items)  # too large alone
        half = len(items) // 2
        return self._frame(emitted, deadline, items[:half]) + self._frame(
            emitted, deadline, items[half:]
        )

    def _frame_each(self, emitted: int, deadline: int, items: list[Any]) -> list[tuple[bytes, int]]:
        good: list[Any] = []
        tail = self.stage.tail
        for item in items:
            try:
                size = len(self.packer.pack(item))
            except Exception as exc:
                self.packer.reset()
                self._lost(tail, item, exc)
                continue
            if size > self.engine.max_frame:
                self._lost(tail, item, f"FlowError('item of {size} bytes: over the frame limit')")
                continue
            good.append(item)
        out: list[tuple[bytes, int]] = []
        for item in good:  # one frame each: rare, and always small enough
            out.append((self.packer.pack([_DATA, emitted, deadline, [item]]), 1))
        return out

    def _lost(self, node: CompiledNode, item: Any, exc: BaseException | str) -> None:
        st = self.stats[node.name]
        st.errors += 1
        st.dead_letters += 1
        st.items_out -= 1
        self.run.dead_letter(node.name, item, exc)

    # -- sources ---------------------------------------------------------------------

    def _source(self) -> None:
        node = self.stage.head
        run = self.run
        st = self.stats[node.name]
        clock = self.clock
        limit = self.engine.limit
        deadline = node.options.get("deadline")
        deadline_ns = None if deadline is None else int(deadline * 1e9)
        rate = node.options.get("rate")
        it = self._open(node)
        if it is None:
            return
        is_async = hasattr(it, "__anext__")
        try:
            n = 1
            while not run.stopping.is_set():
                self._check_abort()
                if limit is not None and clock() >= limit:
                    run.timed_out = True
                    run.stopping.set()
                    break
                want = n
                if rate is not None:
                    want = self._pace(node, rate, self.engine.max_batch)
                start = clock()
                took = time.perf_counter_ns()
                buf: list[Any] = []
                failed: BaseException | None = None
                try:
                    if is_async:
                        failed = self.aio.run(_atake(it, want, buf))
                    else:
                        buf.extend(islice(it, want))
                except Exception as exc:
                    failed = exc
                now = clock()
                took = time.perf_counter_ns() - took
                st.busy_ns += now - start
                if buf:
                    emitted = now if want == 1 else start
                    st.items_out += len(buf)
                    dl = 0 if deadline_ns is None else emitted + deadline_ns
                    self._emit(emitted, dl, buf)
                if failed is not None:
                    st.errors += 1
                    st.dead_letters += 1
                    run.dead_letter(node.name, None, failed)
                    break
                if len(buf) < want:
                    break  # exhausted
                if rate is None:
                    # a source whose items come at once is batched when its stages run
                    # inline, else the pipe would never look loaded
                    fast = self.inline_outs and took <= want * _FAST_ITEM_NS
                    n = min(self.engine.max_batch, n * 2) if fast or self._loaded() else 1
        finally:
            try:
                if hasattr(it, "aclose"):
                    self.aio.run(it.aclose())
                elif hasattr(it, "close"):
                    it.close()
            except Exception:  # a source failing to close has ended all the same
                pass

    def _loaded(self) -> bool:
        if not self.outs:
            return True  # nothing downstream: batches as large as they come
        for out in self.outs:
            port = out.port
            if port.available + port.held < out.window:
                return True
        return False

    def _open(self, node: CompiledNode) -> Any:
        st = self.stats[node.name]
        start = self.clock()
        try:
            made = call_source(node, self.resume)
            if inspect.isawaitable(made):
                made = self.aio.run(made)
        except Exception as exc:
            st.errors += 1
            st.dead_letters += 1
            self.run.dead_letter(node.name, None, exc)
            return None
        finally:
            st.busy_ns += self.clock() - start
        return source_iterator(node, made)

    def _pace(self, node: CompiledNode, rate: float, most: int = 1) -> int:
        """Waits until an item is due at ``rate``: how many are due now (at most
        ``most``). The schedule keeps the average rate when the OS wakes the thread
        late, catching up by at most 1 ms (or one item) worth of items at once."""
        stage = self.stage
        interval = 1e9 / rate
        burst = max(interval, 1e6)
        now = self.clock()
        with stage.mu:
            due = stage.next_at
        if due is not None and now < due:
            self.sleep((due - now) / 1e9)
            after = self.clock()
            self.stats[node.name].throttled_ns += max(0, after - now)
            now = after
        with stage.mu:
            at = stage.next_at
            start = now if at is None else max(at, now - burst)
            k = 1 if now < start else min(most, 1 + int((now - start) // interval))
            stage.next_at = round(start + k * interval)
        return k

    # -- the other stages ------------------------------------------------------------

    def _handle(self, payloads: list[bytes]) -> None:
        """Each frame's items through the stage, in order; an end marker counted."""
        stage = self.stage
        by_ref, refs, ref_header = self.run.by_ref, self.run.refs, _REF.unpack
        for payload in payloads:  # each frame's output goes on before the next
            items: list[Any]
            if by_ref:
                kind, emitted, deadline, token = ref_header(payload)
                items = refs.pop(token) if kind == _DATA else []
            else:
                kind, emitted, deadline, items = _unpack(payload)
            if kind == _END:
                with stage.mu:
                    stage.ends += 1
                    if stage.ends >= stage.expected_ends:
                        stage.done = True
                continue
            self._take(items, emitted, deadline)

    def _take(self, items: list[Any], emitted: int, deadline: int) -> None:
        if self.stage.acc is not None:
            self._send(self._accumulate(items, emitted))
        else:
            items = self._chain(items, emitted, deadline)
            if items:
                self._emit(emitted, deadline, items)

    def _consume_owned(self) -> None:
        """_consume for a stage whose senders may run frames inline (handoff="auto"):
        the thread holds the stage's lock while it takes and works through frames, and
        lets go while it waits, so that an idle stage's next frame can run at once in
        the sender's thread instead of waking this one."""
        stage = self.stage
        port = stage.port
        assert port is not None
        own, wake, acc, clock = stage.own, stage.wake, stage.acc, self.clock
        ttl_ns = None if acc is None else acc.ttl_ns
        take = min(_RECV_FRAMES, port.window)
        while True:
            self._check_abort()
            if not own.acquire(timeout=_POLL):
                continue
            try:
                if stage.done:
                    return
                if acc is not None and acc.expired(clock()):
                    self._send(self._flush_acc("ttl"))
                payloads = port.recv_payloads(take, 0)
                if not payloads:
                    wake.sleeping = True
                    payloads = port.recv_payloads(take, 0)  # a send before `sleeping`
                if payloads:
                    wake.sleeping = False
                    start = time.perf_counter_ns()
                    self._handle(payloads)
                    stage.note_cost(time.perf_counter_ns() - start, len(payloads))
                    continue
                for o in self.outs:
                    if o.pending:
                        self._push(o, [], [], wait=False)
                port._flush()  # the credits of what was consumed go back before waiting
                timeout = _POLL
                if acc is not None and ttl_ns is not None and len(acc):
                    timeout = min(_POLL, max(0.0, (acc.first_at + ttl_ns - clock()) / 1e9))
            finally:
                own.release()
            try:
                wake.wait(timeout)
            finally:
                wake.sleeping = False

    def _consume(self) -> None:
        stage = self.stage
        port = stage.port
        assert port is not None
        run = self.run
        acc = stage.acc
        ttl_ns = None if acc is None else acc.ttl_ns
        shared = stage.workers > 1
        take = min(_RECV_FRAMES, port.window)  # credits this stage holds back at most
        while True:
            self._check_abort()
            timeout = _POLL
            if acc is not None and ttl_ns is not None and len(acc):
                left = acc.first_at + ttl_ns - self.clock()
                timeout = min(_POLL, max(0.0, left / 1e9))
            if shared:
                with stage.recv_lock:
                    if stage.done:
                        return
                    payloads = _receive(port, stage.wake, take, timeout)
            else:
                if stage.done:
                    return
                payloads = _receive(port, stage.wake, take, timeout)
            if acc is not None and acc.expired(self.clock()):
                self._send(self._flush_acc("ttl"))
            if payloads:
                self._handle(payloads)
            else:
                for o in self.outs:
                    if o.pending:
                        self._push(o, [], [], wait=False)
            if run.abort.is_set():
                raise _Stop

    def _chain(self, items: list[Any], emitted: int, deadline: int) -> list[Any]:
        for node in self.stage.nodes:
            items = self._node(node, items, emitted, deadline)
            if not items:
                break
        return items

    def _node(self, node: CompiledNode, items: list[Any], emitted: int, deadline: int) -> list[Any]:
        options = node.options
        rate = options.get("rate")
        if rate is not None:
            out: list[Any] = []
            for item in items:
                self._check_abort()
                self._pace(node, rate)
                out += self._call(node, [item], emitted, deadline)
            return out
        return self._call(node, items, emitted, deadline)

    def _call(self, node: CompiledNode, items: list[Any], emitted: int, deadline: int) -> list[Any]:
        st = self.stats[node.name]
        n = len(items)
        st.items_in += n
        clock = self.clock
        node_deadline = node.options.get("deadline")
        if node_deadline is not None and clock() - emitted > node_deadline * 1e9:
            st.deadline_misses += n
            if node.options["on_deadline"] == "drop":
                st.dropped += n
                return []
        start = clock()
        if self.is_async[node.name]:
            results, ndead, slept = self.aio.run(self._aapply(node, items))
        else:
            results, ndead, slept = self._apply(node, items)
        now = clock()
        st.busy_ns += now - start - slept
        kind = node.kind
        if kind == "map":
            out = results if not ndead else [r for r in results if r is not _DEAD]
        elif kind == "filter":
            if ndead:
                results = [r is not _DEAD and r for r in results]
            out = list(compress(items, results))
        else:  # sink
            ok = n - ndead
            st.items_out += ok
            if ok:
                self.latencies.append((now - emitted, ok))
                if len(self.latencies) >= 256:  # the histogram's Python costs per call
                    self._record()
                if deadline and now > deadline:
                    self.report.e2e_deadline_misses += ok
            return []
        st.items_out += len(out)
        return out

    def _apply(self, node: CompiledNode, items: list[Any]) -> tuple[list[Any], int, int]:
        """fn over items in one C loop; a failing item is retried and, given up, its
        place holds _DEAD. Returns (results, dead count, ns slept in backoff)."""
        fn = node.fn
        results: list[Any] = []
        it = iter(items)
        ndead = slept = 0
        while True:
            try:
                results.extend(map(fn, it))  # type: ignore[arg-type]
                break
            except Exception as exc:
                result, s = self._retry(node, items[len(results)], exc)
                slept += s
                ndead += result is _DEAD
                results.append(result)
        if results and inspect.isawaitable(results[0]):
            # fn returns awaitables without being an async def: await them in turn
            self.is_async[node.name] = True
            self.stage.inline = False  # its loop stays on the stage's thread
            return self.aio.run(self._aapply(node, items, results))  # type: ignore[no-any-return]
        return results, ndead, slept

    def _retry(self, node: CompiledNode, item: Any, exc: BaseException) -> tuple[Any, int]:
        st = self.stats[node.name]
        st.errors += 1
        retries = node.options.get("retries", 0)
        backoff = node.options.get("backoff", 0.0)
        fn = node.fn
        assert fn is not None
        slept = 0
        for attempt in range(1, retries + 1):
            self._check_abort()
            st.retries += 1
            if backoff:
                start = self.clock()
                self.sleep(backoff * 2 ** (attempt - 1))
                slept += self.clock() - start
            try:
                result = fn(item)
                if inspect.isawaitable(result):
                    result = self.aio.run(result)
                return result, slept
            except Exception as again:
                st.errors += 1
                exc = again
        st.dead_letters += 1
        self.run.dead_letter(node.name, item, exc)
        return _DEAD, slept

    async def _aapply(
        self, node: CompiledNode, items: list[Any], started: list[Any] | None = None
    ) -> tuple[list[Any], int, int]:
        fn = node.fn
        assert fn is not None
        st = self.stats[node.name]
        retries = node.options.get("retries", 0)
        backoff = node.options.get("backoff", 0.0)
        results: list[Any] = []
        ndead = slept = 0
        for i, item in enumerate(items):
            attempt = 0
            while True:
                try:
                    result = started[i] if started is not None and attempt == 0 else fn(item)
                    if inspect.isawaitable(result):
                        result = await result
                    results.append(result)
                    break
                except Exception as exc:
                    st.errors += 1
                    if attempt < retries:
                        attempt += 1
                        st.retries += 1
                        self._check_abort()
                        if backoff:
                            start = self.clock()
                            self.sleep(backoff * 2 ** (attempt - 1))
                            slept += self.clock() - start
                        continue
                    st.dead_letters += 1
                    self.run.dead_letter(node.name, item, exc)
                    results.append(_DEAD)
                    ndead += 1
                    break
        return results, ndead, slept

    # -- accumulators ----------------------------------------------------------------

    def _accumulate(self, items: list[Any], emitted: int) -> list[tuple[bytes, int]]:
        node = self.stage.head
        acc = self.stage.acc
        assert acc is not None
        st = self.stats[node.name]
        st.items_in += len(items)
        clock = self.clock
        deadline = node.options.get("deadline")
        if deadline is not None and clock() - emitted > deadline * 1e9:
            st.deadline_misses += len(items)
            if node.options["on_deadline"] == "drop":
                st.dropped += len(items)
                return []
        out: list[tuple[bytes, int]] = []
        now = clock()
        if acc.expired(now):
            out += self._flush_acc("ttl")
        for item in items:
            try:
                reason = acc.add(item, emitted, now)
            except Exception as exc:  # the until predicate raised: the item stays held
                st.errors += 1
                st.dead_letters += 1
                self.run.dead_letter(node.name, item, exc)
                reason = None
            if reason is not None:
                out += self._flush_acc(reason)
        st.busy_ns += clock() - now
        return out

    def _flush_acc(self, reason: str) -> list[tuple[bytes, int]]:
        acc = self.stage.acc
        assert acc is not None
        if not len(acc):
            return []
        values, oldest = acc.take()
        st = self.stats[self.stage.head.name]
        st.items_out += 1
        st.flushes[reason] = st.flushes.get(reason, 0) + 1
        return self._frame(oldest, 0, [values])


class _Wake:
    """How a sender wakes an idle stage: a token in a SimpleQueue (C calls), put only
    while the stage says it is sleeping. Idle stages wait here, not in the ring: a
    frame on the ring wakes every reader waiting in it, whatever its port, and on a
    run's one bus each idle stage woken was measured to add about 35 us to a hop."""

    __slots__ = ("sleeping", "tokens")

    def __init__(self) -> None:
        self.sleeping = False
        self.tokens: queue.SimpleQueue[None] = queue.SimpleQueue()

    def poke(self) -> None:
        self.tokens.put(None)

    def wait(self, timeout: float) -> None:
        """Up to ``timeout`` s for a poke; the pokes already in are taken with it (they
        are for frames the receive after this takes too)."""
        tokens = self.tokens
        try:
            tokens.get(timeout=timeout)
            while True:
                tokens.get_nowait()
        except queue.Empty:
            pass


def _receive(port: DataPort, wake: _Wake, take: int, timeout: float) -> list[bytes]:
    """Up to ``take`` payloads, waiting up to ``timeout`` for the first (on ``wake``)."""
    payloads = port.recv_payloads(take, 0)
    if payloads or not timeout:
        return payloads
    wake.sleeping = True
    try:
        payloads = port.recv_payloads(take, 0)  # a send just before `sleeping` was set
        if payloads:
            return payloads
        port._flush()  # the credits of what was consumed go back before waiting
        wake.wait(timeout)
    finally:
        wake.sleeping = False
    return port.recv_payloads(take, 0)


async def _atake(it: Any, n: int, buf: list[Any]) -> BaseException | None:
    """Up to n items of an async iterator into buf; the exception that ended it."""
    for _ in range(n):
        try:
            buf.append(await it.__anext__())
        except StopAsyncIteration:
            break
        except Exception as exc:
            return exc
    return None


def _is_async(fn: Any) -> bool:
    # a callable returning awaitables without being an async def is found at its
    # first batch (_apply)
    return fn is not None and inspect.iscoroutinefunction(fn)


class InprocEngine:
    """Runs a Plan on threads of this process; see the module's docstring. ``bus``: a
    FrameBus to run on (left open; its other users must keep up with its ring),
    default a bus of the run's own; ``max_batch``: the most items a source puts in
    one frame."""

    def __init__(
        self,
        plan: Plan,
        clock: Callable[[], int] | None = None,
        sleep: Callable[[float], None] | None = None,
        bus: FrameBus | None = None,
        max_batch: int = MAX_BATCH,
        codec: str = "ref",
        handoff: str = "auto",
    ) -> None:
        self.plan = plan
        self.clock, self.sleep = clock_and_sleep(clock, sleep)
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise FlowError(f"max_batch={max_batch!r} is invalid: expected an int >= 1")
        self.max_batch = max_batch
        if codec not in CODECS:
            raise FlowError(
                f"codec={codec!r} is invalid: expected one of " + ", ".join(map(repr, CODECS))
            )
        self.codec = codec
        if handoff not in HANDOFFS:
            raise FlowError(
                f"handoff={handoff!r} is invalid: expected one of " + ", ".join(map(repr, HANDOFFS))
            )
        self.handoff = handoff
        if bus is not None:
            from framebus.bus import FrameBus

            if not isinstance(bus, FrameBus):
                raise FlowError(f"bus={bus!r} is invalid: expected a framebus.FrameBus")
            if bus.closed:
                raise FlowError("bus: the FrameBus given is closed")
        self.bus = bus
        self.limit: int | None = None
        self.max_frame = _MAX_FRAME
        self.workers: list[_Worker] = []
        self.ports: list[DataPort] = []
        self.run_state: _Run | None = None
        for name, node in plan.nodes.items():
            if node.kind == "accumulate" and node.options.get("parallelism", 1) != 1:
                raise FlowError(
                    f"node {name!r}: option parallelism={node.options['parallelism']!r} is "
                    "invalid for an accumulate node in the inproc runtime: expected 1"
                )

    # -- live numbers ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The run's numbers so far (for framebus.metrics while it is live): per node
        items in and out, errors and deadline misses, end-to-end deadline misses and
        the latency of each sink as (bucket bounds in ns, counts, sum in ns; a sink
        records its frames' latencies 256 frames at a time)."""
        nodes: dict[str, dict[str, int]] = {}
        latency: dict[str, tuple[list[int], list[int], int]] = {}
        e2e = 0
        for w in list(self.workers):
            for name, s in w.stats.items():
                d = nodes.setdefault(
                    name, {"items_in": 0, "items_out": 0, "errors": 0, "deadline_misses": 0}
                )
                d["items_in"] += s.items_in
                d["items_out"] += s.items_out
                d["errors"] += s.errors
                d["deadline_misses"] += s.deadline_misses
            e2e += w.report.e2e_deadline_misses
            if w.stage.kind == "sink":
                bounds, counts, total = w.report.buckets()
                have = latency.get(w.stage.name)
                if have is None:
                    latency[w.stage.name] = (bounds, counts, total)
                else:
                    latency[w.stage.name] = (
                        bounds,
                        [a + b for a, b in zip(have[1], counts, strict=True)],
                        have[2] + total,
                    )
        return {
            "graph": self.plan.name,
            "nodes": nodes,
            "e2e_deadline_misses": e2e,
            "latency": latency,
        }

    # -- the run ---------------------------------------------------------------------

    def _setup(self, run: _Run, bus: FrameBus) -> None:
        plan = self.plan
        stages = [_Stage(plan, names) for names in plan.stage_nodes]
        by_head = {s.head.name: s for s in stages}
        ports: dict[str, str] = {}
        for stage in stages:
            if stage.kind == "source":
                continue
            name = f"{plan.name}.{stage.head.name}"
            ports[stage.head.name] = name
            try:
                port = bus.data_port(name, window=stage.head.options["window"])
                self.ports.append(port)
                port.recv_payloads(1, 0)  # the receiver side: credits for senders
                stage.port = port
            except (FrameBusError, ValueError) as exc:  # ValueError: a window too large
                raise FlowError(
                    f"node {stage.head.name!r}: cannot open its input port {name!r} "
                    f"(window={stage.head.options['window']!r}): {exc}"
                ) from exc
        for stage in stages:
            for i in range(stage.workers):
                w = _Worker(self, run, stage, i)
                for dst in stage.tail.outputs:
                    head = by_head[dst].head
                    port = bus.data_port(ports[dst], window=head.options["window"])
                    self.ports.append(port)
                    w.outs.append(_Out(head, port, by_head[dst].wake))
                self.workers.append(w)
                if stage.workers == 1:
                    stage.owner = w
        for stage in stages:
            stage.inline = self._may_inline(stage)
        for w in self.workers:
            for out in w.outs:
                to = by_head[out.dst]
                out.target = to.owner if to.inline else None
            w.inline_outs = any(out.target is not None for out in w.outs)

    def _may_inline(self, stage: _Stage) -> bool:
        """handoff="auto": whether a sender may run this stage's frames in its own
        thread: items passed by reference, one worker, no async callable (its loop is
        the stage thread's) and no rate (a paced node would hold its sender back)."""
        return (
            self.handoff == "auto"
            and self.codec == "ref"
            and stage.kind != "source"
            and stage.workers == 1
            and not any(_is_async(n.fn) or n.options.get("rate") for n in stage.nodes)
        )

    def run(self, timeout: float | None = None, metrics: Any = None) -> Report:
        if not (metrics is None or isinstance(metrics, bool) or hasattr(metrics, "register")):
            raise FlowError(
                f"metrics={metrics!r} is invalid: expected True, False, None or a "
                "prometheus_client CollectorRegistry"
            )
        run = _Run(self)
        self.run_state = run
        started = self.clock()
        self.limit = None if timeout is None else started + int(timeout * 1e9)
        own = self.bus is None
        bus = self.bus
        interrupted: BaseException | None = None
        registry: Any = None
        try:
            if own:
                from framebus.bus import FrameBus

                bus = FrameBus(
                    wal_dir=None, ring_bytes=_RING_BYTES, ring_pow=_RING_POW, max_frame=_MAX_FRAME
                )
            assert bus is not None
            self.max_frame = bus.config.max_frame - 64  # room for the frame's header
            run.bus = bus
            self._setup(run, bus)
            if metrics:
                registry = _export(self, metrics)
            try:
                for w in reversed(self.workers):  # the sources last
                    w.thread.start()
            except KeyboardInterrupt as exc:
                interrupted = exc
                started_all = all(w.thread.ident is not None for w in self.workers)
                (run.stopping if started_all else run.abort).set()
            interrupted = self._wait(run, interrupted)
        except BaseException:
            run.abort.set()
            raise
        finally:
            if registry is not None:
                from framebus import metrics as _metrics

                _metrics.unregister_flow(self, None if registry is True else registry)
            stuck = self._join(run)
            for port in reversed(self.ports):  # senders first, then the receivers
                port.close()
            run.bus = None
            if own and bus is not None:
                bus.close()
        report = self._report(run, started)
        fatal = run.fatal if run.fatal is not None else interrupted
        if stuck:
            why = (
                f"flow {self.plan.name!r}: stages did not stop within {_GRACE} s of the stop "
                f"(each in a call that has not returned; their threads are left running): "
                f"{', '.join(stuck)}"
            )
            log.warning("framebus: %s", why)
            if fatal is None:
                fatal = FlowError(why)
        if fatal is not None:
            if isinstance(fatal, KeyboardInterrupt):
                fatal.report = report  # type: ignore[attr-defined]
            raise fatal
        return report

    def _wait(self, run: _Run, interrupted: BaseException | None) -> BaseException | None:
        """Waits for every stage to end; Ctrl-C starts the drain, a second stops."""
        threads = [w.thread for w in self.workers]
        sources = [w.thread for w in self.workers if w.stage.kind == "source"]
        while True:
            try:
                alive = [t for t in threads if t.is_alive()]
                if not alive or run.abort.is_set():
                    return interrupted  # on abort, _join waits for the stages a while
                alive[0].join(_POLL)
                if (
                    self.limit is not None
                    and not run.stopping.is_set()
                    and self.clock() >= self.limit
                ):
                    if any(t.is_alive() for t in sources):
                        run.timed_out = True
                    run.stopping.set()
            except KeyboardInterrupt as exc:
                if interrupted is None:
                    interrupted = exc
                    run.stopping.set()
                else:
                    run.abort.set()

    def _join(self, run: _Run) -> list[str]:
        """Joins the stages (a stopped one within _GRACE s): the names of those left."""
        end = time.monotonic() + _GRACE
        for w in self.workers:
            t = w.thread
            if not t.is_alive() and t.ident is not None:
                t.join()
                continue
            if t.ident is None:
                continue  # never started
            while t.is_alive():
                try:
                    t.join(max(0.0, min(_POLL, end - time.monotonic())))
                except KeyboardInterrupt:
                    run.abort.set()
                if time.monotonic() >= end:
                    break
        return [w.thread.name for w in self.workers if w.thread.is_alive()]

    def _report(self, run: _Run, started: int) -> Report:
        plan = self.plan
        report = Report(
            plan.name,
            "inproc",
            {n: NodeStats(plan.nodes[n].kind, plan.nodes[n].stage) for n in plan.order},
        )
        for w in self.workers:
            for name, s in w.stats.items():
                _add_stats(report.nodes[name], s)
            for out in w.outs:
                report.nodes[out.dst].dropped += out.dropped
            if w.report.latency.get_total_count():  # hdrh's add of an empty one zeroes min
                report.latency.add(w.report.latency)
            report.e2e_deadline_misses += w.report.e2e_deadline_misses
        report.dead_letters = list(run.dead)
        report.timed_out = run.timed_out
        report.duration_ns = self.clock() - started
        return report


def _export(engine: Any, metrics: Any) -> Any:
    """Registers a live run (inproc or ipc) with framebus.metrics; the registry used."""
    from framebus import metrics as _metrics

    registry = None if metrics is True else metrics
    _metrics.register_flow(engine, registry)
    return True if registry is None else registry


def _add_stats(into: NodeStats, s: NodeStats) -> None:
    for field in (
        "items_in",
        "items_out",
        "errors",
        "retries",
        "dead_letters",
        "deadline_misses",
        "dropped",
        "busy_ns",
        "blocked_ns",
        "throttled_ns",
    ):
        setattr(into, field, getattr(into, field) + getattr(s, field))
    for reason, k in s.flushes.items():
        into.flushes[reason] = into.flushes.get(reason, 0) + k
