"""The cross-process runtime (``plan.run(runtime="ipc")``): each stage of the plan runs
in processes of its own, and its edges are DataPorts on one shared FrameBus made for
the run, so credits carry backpressure from the sinks back to the sources across
processes.

Processes. A stage (a fused chain, or one node) runs in one worker process, or in
``parallelism`` n processes for a map, filter or sink (an accumulate has
parallelism 1). Without restart or a WAL the n workers are members of the node's
input port, ``<graph>.<node>``, as a work-sharing group (each frame goes to whichever
takes it first) and draw on its one credit pool. With ``restart=True`` on the node, or
in a durable run, each worker k has a port of its own, ``<graph>.<node>.<k>``, with
its own credit window (the node's ``window``), end-of-input marks and ack group (below):
a sender puts each frame on one of the n ports, the one with the most credit left
(round robin among ties; a batch a 1/n share at a time), so a slow worker, whose
credits come back slowly, gets fewer frames; the end marker goes to every port. The
workers are started with
``multiprocessing`` (``start_method``: ``"spawn"`` by default, or ``"forkserver"``;
``"fork"`` only when asked), so a worker imports the graph's callables by their
``"module:qualname"`` (``plan.manifests``): a lambda, a local function, a bound
method or a callable object is refused with a FlowError naming the node before any
process starts. Sources run in their worker process (the callable produces the items
there), and so do sinks: a sink's side effects happen in the sink's process (a sink
appending to a list of the parent's leaves the parent's list empty; write to a file,
a database or a bus). With ``rate`` on a node of ``parallelism`` n, each of its n
processes paces at ``rate / n``.

Frames. As the inproc runtime with ``codec="msgpack"``: one msgpack array ``[kind,
emitted_ns, deadline_ns, items]`` per frame (bytes stay bytes, tuples arrive as
lists, an Envelope arrives as an equal Envelope; an item msgpack cannot encode is a
dead letter of the node that produced it), the same adaptive batching (``max_batch``),
end markers, order (per path of parallelism-1 stages, the source's order) and output
multiset as the sync engine. Emission times are ``time.monotonic_ns``, one clock for
every process of the machine: the latency histogram is end to end across processes.

Failures. As inproc: retries, backoff, dead letters (in the report, the item as
itself when msgpack can carry it, else its repr) and deadline misses; the workers
publish dead letters on ``_flow.dead.<graph>`` of the run's bus too. A worker process
that dies (killed, or exited without its result) ends the run: every other worker is
stopped and ``run`` raises a FlowError naming the stage, the process and its exit
code or signal.

Restart. A stage with ``restart=True`` on one of its nodes (a map, filter or sink, of
any parallelism) gets a new worker when one of its workers dies, up to MAX_RESTARTS
(3) times a run for the stage, then the run ends as above. With parallelism n each
worker's port (above) is restarted on its own, as the one port of a stage of one
worker is: the other workers go on meanwhile. Its worker acknowledges each frame it received
only after the frame's outputs are sent (with ``overflow="block"``, the default: in
the next port): its port has a second cursor, the ack group, that the worker moves
past the frames it finished and the parent holds open. When the worker dies, the
parent publishes again on the port every frame between the two cursors (taken, not
acknowledged) and starts the new worker, which takes them before the port's end: no
item is lost, and an item whose outputs were sent before the death is handed on twice
(at least once; a sink's side effects may repeat). The items handed on again are
counted as the head node's ``redelivered``. The counters of the dead worker are lost:
the report counts what its replacement did. The pool takes back the credits of the
frames handed on again, so the window stays a bound (at most a quarter window of
credits, the dead worker's grants not yet given back, is lost per restart).

Durable runs. With ``wal=DIR`` the run's bus has its write-ahead log in DIR (the
parent writes it), so every frame the stages send is stored, and every stage's
port has the ack cursor described above, as a durable consumer group: the worker
(with parallelism n, one per worker's port) commits it past the frames it finished
once every frame it sent before is durable
(asked of the WAL's writer without waiting; at the stage's end, waited for). A
source with ``resumable=True`` commits, the same way, how many items it yielded (a
group ``<graph>.<source>:made`` whose offset is that count). A run started with a
WAL that an earlier run of the graph left (killed, or ended) first reads each ack
group's frames from its committed offset to the log's end and publishes the data
frames among them again on their port (end markers left out; counted as the head
node's ``redelivered``; their credits taken from the pool), then starts the workers;
a resumable source is called ``fn(resume=n)`` with its stored count, any other
``fn()`` (it starts over). Nothing is lost; an item whose outputs were stored before
the crash, or a non-resumable source's, comes again (at least once). A node of
parallelism n resumes each of its ports, ``<graph>.<node>.<k>``, from its own ack
group: run the graph again with the same parallelism (were it lowered, the frames a
dropped worker's port had not committed would not be handed on). The segments of
dead earlier runs of the graph are unlinked first.

Stopping. At the end of every source, at ``timeout`` or on Ctrl-C in the parent, the
sources stop and the rest drains, as inproc (Ctrl-C re-raises KeyboardInterrupt with
the partial Report as ``.report``; a second one stops every worker at once).
``timeout`` counts from the moment every worker process is in place (when the sources
start emitting), not from the call: starting the processes (spawn: a fresh
interpreter each, a second or more for a few stages on a loaded machine) does not eat
into the run's time. A source stops at its timeout by itself; the parent stops the
sources at its own (started when it sees every worker in place), and the Report says
``timed_out``. The
workers ignore SIGINT: the parent leads the stop. When ``run`` returns or raises, every
worker process has ended (one not ending 10 s after a stop is terminated, then
killed) and the run's shared-memory segment is unlinked. Workers whose parent
process is gone (killed) stop within about a second; that run's segment is left for
``framebus gc``. The report is gathered from
the workers at the end: each sends its node counters, latency histogram (HDR,
encoded) and dead letters over a result queue.

Live numbers. The run has a block of int64 counters in anonymous shared memory
(``multiprocessing``'s heap; nothing of it outlives the run's processes), one row per
worker process: per node of the plan items in, items out, errors and deadline misses,
a flag set once the worker is in place, the end-to-end deadline misses and the sink's
latency buckets and their sum (ns). Each worker copies its counters into its row every
PUBLISH (0.1) s and once more when it finishes, before it sends its result, so
``IpcEngine.snapshot()`` in the parent gives the numbers so far as
``InprocEngine.snapshot()`` does (for framebus.metrics and ``framebus run``'s
progress), and after the run the numbers of the Report. A worker started in place of
one that died (``restart``) goes on from the numbers its predecessor left in the row,
so the live counts never go back (the Report counts what the replacement did).
``run(metrics=True)`` (or a prometheus_client registry) exports the run's
``framebus_flow_*`` families while it is live, as the inproc runtime does.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import queue
import secrets
import signal
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import msgpack
from hdrh.histogram import HdrHistogram

from framebus._internal import TopicCounter
from framebus._reserved import FLOW, WAL_COMMIT_ASK, port_topics
from framebus.dataport import DataPort
from framebus.errors import WalError, WouldBlock

from .errors import FlowError
from .graph import Graph, callable_name, resolve_callable
from .inproc import (
    _DATA,
    _END,
    _POLL,
    _RECV_FRAMES,
    MAX_BATCH,
    _default,
    _export,
    _Out,
    _Run,
    _Stage,
    _Stop,
    _unpack,
    _Wake,
    _Worker,
)
from .report import BUCKET_BOUNDS_NS, DeadLetter, NodeStats, Report

if TYPE_CHECKING:
    from framebus.bus import FrameBus, Subscription

    from .compile import CompiledNode, Plan

__all__ = ["PUBLISH", "START_METHODS", "IpcEngine"]

START_METHODS = ("spawn", "forkserver", "fork")
_RING_BYTES = 1 << 25
_RING_POW = 14
_MAX_FRAME = 1 << 22
_GRACE = 10.0  # s: how long a stopped run waits for a worker before terminating it
_WATCH = 0.5  # s: how often a worker checks that the run's parent lives
MAX_RESTARTS = 3  # restarts of one stage's workers in one run, at most
_SPREAD_WAIT = 0.002  # s: a sender to several workers' ports waits on each in turn
_EXIT_GRACE = 2.0  # s: how long a worker that exited 0 has for its result to arrive
PUBLISH = 0.1  # s: how often a worker copies its counters into its row of the block
_FIELDS = ("items_in", "items_out", "errors", "deadline_misses")  # per node, live
_NB = len(BUCKET_BOUNDS_NS) + 1  # latency buckets (the last one: above every bound)


class _Layout:
    """Where a worker's numbers go in its row of the run's counters: per node of the
    plan its _FIELDS, then the flag "in place", the end-to-end deadline misses, the
    latency buckets and their sum (ns)."""

    def __init__(self, nodes: list[str]) -> None:
        self.nodes = {n: i * len(_FIELDS) for i, n in enumerate(nodes)}
        self.started = len(nodes) * len(_FIELDS)  # 1 once the worker is in place
        self.e2e = self.started + 1
        self.buckets = self.e2e + 1
        self.sum = self.buckets + _NB
        self.width = self.sum + 1


class _Counters:
    """A worker's side of its row: ``publish()`` writes the worker's counters into it,
    on top of the numbers a dead predecessor left there; ``start()`` runs a thread
    doing so every PUBLISH s, ``stop()`` ends it and publishes once more."""

    def __init__(self, cells: Any, row: int, nodes: list[str]) -> None:
        self.cells = cells
        self.lay = lay = _Layout(nodes)
        self.at = row * lay.width
        self.base = list(cells[self.at : self.at + lay.width])  # a predecessor's numbers
        self.worker: _IpcWorker | None = None
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def in_place(self) -> None:
        self.cells[self.at + self.lay.started] = 1

    def publish(self) -> None:
        w = self.worker
        if w is None:
            return
        cells, at, lay, base = self.cells, self.at, self.lay, self.base
        for name, s in list(w.stats.items()):
            i = lay.nodes[name]
            for j, f in enumerate(_FIELDS):
                cells[at + i + j] = base[i + j] + getattr(s, f)
        rep = w.report
        cells[at + lay.e2e] = base[lay.e2e] + rep.e2e_deadline_misses
        for j, c in enumerate(list(rep._buckets)):
            cells[at + lay.buckets + j] = base[lay.buckets + j] + c
        cells[at + lay.sum] = base[lay.sum] + rep._sum_ns

    def start(self, worker: _IpcWorker) -> None:
        self.worker = worker

        def loop() -> None:
            while not self.done.wait(PUBLISH):
                self.publish()

        self.thread = threading.Thread(target=loop, name="framebus-flow-counters", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()
        self.publish()


def _ctl(head: str, what: str) -> str:
    # the run's own counters in the topic table; ":" is in no graph or node name
    return f"{FLOW}ipc:{head}:{what}"


def _workers(plan: Plan, names: list[str]) -> int:
    """How many worker processes the stage of ``names`` runs in."""
    return plan.nodes[names[0]].options.get("parallelism", 1) if len(names) == 1 else 1


def _ports(plan: Plan, names: list[str], wal: bool) -> int:
    """How many input ports the stage of ``names`` has: one per worker when its workers
    acknowledge what they finished (restart=True, or a run with a WAL), else one that
    its workers share as a group (each frame to whichever worker is free first)."""
    n = _workers(plan, names)
    return n if n > 1 and (wal or _restarts(plan, names)) else 1


def _port_name(graph: str, head: str, k: int, n: int) -> str:
    # the input port of worker k of n of the stage headed by ``head``: one port per
    # worker when there are several (node names have no ".", so no name is another's)
    return f"{graph}.{head}" if n == 1 else f"{graph}.{head}.{k}"


def _ack_group(port: str) -> str:
    # the second cursor of a port whose worker acknowledges (a group name, not a topic)
    return f"{FLOW}ipc:{port}:ack"


def _made_group(graph: str, source: str) -> str:
    # the WAL "group" whose offset is a resumable source's count of items yielded
    return f"{FLOW}ipc:{graph}.{source}:made"


def _bus_name(graph: str) -> str:
    return f"flow-{graph}-{os.getpid()}-{secrets.token_hex(4)}"


class _Flag:
    """A flag in shared memory, set once (stop, abort): the ``threading.Event`` calls
    the inproc stages make (is_set, set), readable at the cost of a memory load."""

    def __init__(self, ctx: Any) -> None:
        self.value = ctx.RawValue(ctypes.c_int, 0)

    def is_set(self) -> bool:
        return bool(self.value.value)

    def set(self) -> None:
        self.value.value = 1


class _SharedPort(DataPort):
    """A DataPort whose receiving side several processes share: each is a member of
    the port's group. The run's parent made the group and filled the credit pool before
    any worker started, so a member neither checks for other receivers nor resets the
    pool, and leaves the pool as it is when it closes."""

    def _receive_side(self) -> Subscription:
        sub = self._sub
        if sub is None:
            with self._lock:
                self._check_open()
                if self._sub is None:
                    self._sub = self._bus.subscribe(self._group + ".*", group=self._group)
                sub = self._sub
        return sub

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            sub = self._sub
        if not self._bus.closed:
            self._release_credits()
            self._credits.wake()
        if sub is not None:
            sub.close()


class _IpcWorker(_Worker):
    """An inproc stage worker in a process of its own: the end markers and the count of
    finished workers live in counters of the shared ring; receiving waits in the ring.

    With ``restart``, every frame received is acknowledged only once its outputs are
    sent: the worker then moves the port's second cursor (the ack group, which the
    parent holds open) past it. What lies between that cursor and the port's own is
    what a worker took and did not finish; the parent hands it on again to the worker
    it starts in place of one that died."""

    finished: TopicCounter
    ack: Subscription | None = None  # restart or wal: the port's ack cursor
    ack_group: str | None = None  # wal: the ack cursor's group, committed in the WAL
    wal: Any = None  # wal: the bus's WAL as this process sees it (RemoteWal)
    made_group: str | None = None  # wal, a source: where it stores its count
    made = 0  # wal, a source: items its iterator has yielded, in every run
    max_out_seq = -1  # the last frame this worker sent (restart or wal)
    port_index = 0  # which of its stage's ports it receives on (0: the only one)

    def setup_ends(self, bus: FrameBus) -> None:
        self.held_frames: deque[tuple[int, int]] = deque()
        self.held_items = 0
        # wal: offsets to store once the frames sent before them are durable:
        # (the last frame sent then, group, offset); the newest offset per group
        self.checkpoints: deque[tuple[int, str, int]] = deque()
        self.latest: dict[str, int] = {}
        self.asks: dict[str, TopicCounter] = {}
        head = self.stage.head.name
        # one mark per input: an end marker handed on again is counted once
        self.end_marks = {
            src: TopicCounter(bus, _ctl(head, f"end:{src}:{self.port_index}"))
            for src in self.stage.head.inputs
        }

    def _ends_complete(self) -> bool:
        return all(c.get() >= 1 for c in self.end_marks.values())

    def _finish(self) -> None:
        self._finish_stage()
        if self.wal is not None:
            self._commit_all()

    def _finish_stage(self) -> None:
        # inproc's _finish with the stage's running count in the ring and the sender
        # named in the end marker
        for out in self.outs:
            if out.pending:
                self._push(out, [], [], wait=True)
        stage = self.stage
        if self.finished.add(1) < stage.workers:
            return
        if stage.acc is not None and len(stage.acc):
            self._send(self._flush_acc("end"))
        if self.outs:
            end = self.packer.pack([_END, 0, 0, stage.tail.name])
            for out in self.outs:
                if isinstance(out, _SpreadOut):
                    for port in out.ports:  # every worker of the next stage ends
                        self._spread(out, [port], [end], [0], wait=True)
                else:
                    self._push(out, [end], [0], wait=True)
        if self.ack is not None and self.held_frames:
            self._acknowledge(self.ack, [seq for seq, _n in self.held_frames])
            self.held_frames.clear()

    def _consume(self) -> None:
        # inproc's _consume: receive in the ring (no wake-up from another process's
        # thread); once every input has sent its end marker, what the port still
        # holds (frames handed on again after a restart) is taken before the end
        stage = self.stage
        port = stage.port
        assert port is not None
        run = self.run
        acc = stage.acc
        ttl_ns = None if acc is None else acc.ttl_ns
        take = min(_RECV_FRAMES, port.window)
        ack = self.ack
        seqs: list[int] = []
        held: deque[tuple[int, int]] = self.held_frames  # acc: frames not all flushed
        while True:
            self._check_abort()
            complete = self._ends_complete()
            timeout = 0.0 if complete else _POLL
            if acc is not None and ttl_ns is not None and len(acc):
                left = acc.first_at + ttl_ns - self.clock()
                timeout = min(timeout, max(0.0, left / 1e9))
            if ack is None:
                payloads = port.recv_payloads(take, timeout)
            else:
                batch = port.recv_frames(take, timeout)
                payloads = batch.payloads()
                seqs = list(map(int, batch.seqs))
            if complete and not payloads:
                return
            if acc is not None and acc.expired(self.clock()):
                self._send(self._flush_acc("ttl"))
            for at, payload in enumerate(payloads):
                kind, emitted, deadline, items = _unpack(payload)
                if ack is not None and acc is not None:
                    self.held_frames.append((seqs[at], len(items) if kind == _DATA else 0))
                    self.held_items += len(items) if kind == _DATA else 0
                if kind == _END:
                    mark = self.end_marks.get(items)
                    if mark is not None:
                        mark.raise_to(1)
                    continue
                if kind != _DATA:
                    continue
                if acc is not None:
                    self._send(self._accumulate(items, emitted))
                else:
                    items = self._chain(items, emitted, deadline)
                    if items:
                        self._send(self._frame(emitted, deadline, items))
            if ack is not None and acc is not None:
                self._acknowledge_flushed(ack, held)
            elif ack is not None and seqs:
                self._acknowledge(ack, seqs)
            if not payloads:
                for o in self.outs:
                    if o.pending:
                        self._push(o, [], [], wait=False)
            if run.abort.is_set():
                raise _Stop

    def _acknowledge_flushed(self, ack: Subscription, held: deque[tuple[int, int]]) -> None:
        # an accumulator's frames are done once every item of theirs was flushed: the
        # items it holds are the newest len(acc)
        acc = self.stage.acc
        assert acc is not None
        keep = len(acc)
        done: list[int] = []
        while held and self.held_items - held[0][1] >= keep:
            seq, n = held.popleft()
            self.held_items -= n
            done.append(seq)
        if done:
            self._acknowledge(ack, done)

    def _acknowledge(self, ack: Subscription, seqs: list[int]) -> None:
        """Moves the ack cursor past the frames ``seqs`` (handled, outputs sent) and,
        with a WAL, commits them once those outputs are in it."""
        nxt = ack._info()["next_seq"]
        need = sum(1 for seq in seqs if seq >= nxt)
        while need > 0:
            self._check_abort()
            need -= len(ack.recv_batch(need, _POLL))
        if self.ack_group is not None:
            self._checkpoint(self.ack_group, max(seqs) + 1)

    def _send(self, frames: list[tuple[bytes, int]], outs: list[_Out] | None = None) -> None:
        super()._send(frames, outs)
        if self.made_group is not None and frames:
            # a source: its count is stored once the frames are in the WAL
            self._checkpoint(self.made_group, self.made)

    # -- wal: commits ----------------------------------------------------------------

    def _checkpoint(self, group: str, offset: int) -> None:
        """``group``'s offset is ``offset`` once every frame this worker sent so far is
        in the WAL: asked of the WAL's writer then, without waiting for it."""
        self.latest[group] = offset
        self.checkpoints.append((self.max_out_seq, group, offset))
        durable = self.wal.durable
        due: dict[str, int] = {}
        cps = self.checkpoints
        while cps and cps[0][0] <= durable:
            _seq, g, off = cps.popleft()
            due[g] = off
        bus = self.run.bus
        assert bus is not None
        for g, off in due.items():
            ask = self.asks.get(g)
            if ask is None:
                ask = self.asks[g] = TopicCounter(bus, WAL_COMMIT_ASK + g)
            ask.raise_to(off)
        if due:
            bus._wake_readers()  # the WAL's thread takes asks between batches

    def _commit_all(self) -> None:
        """At the end: every offset stored, and waited for."""
        if self.max_out_seq >= 0:
            self.wal.wait_durable(self.max_out_seq)
        self.checkpoints.clear()
        for group, offset in self.latest.items():
            self.wal.commit(group, offset)

    def _open(self, node: CompiledNode) -> Any:
        it = super()._open(node)
        if it is None or self.made_group is None:
            return it
        # a source in a run with a WAL: its items counted as they are taken
        return _counted_async(self, it) if hasattr(it, "__anext__") else _counted(self, it)

    def _push(self, out: _Out, data: list[bytes], counts: list[int], wait: bool) -> None:
        if isinstance(out, _SpreadOut):
            self._spread(out, out.ports, data, counts, wait)
            return
        if self.ack is None and self.wal is None:
            super()._push(out, data, counts, wait)
            return
        # inproc's _push for a worker that may be restarted: it waits for credit in the
        # pool instead of taking credit it would hold (and lose, were it killed)
        port = out.port
        data, counts = self._with_pending(out, data, counts)
        i, n = 0, len(data)
        tail = self.stats[self.stage.tail.name]
        credits = port._credits
        while i < n:
            try:
                first, k = port.send_batch(data if i == 0 else data[i:], timeout=_POLL)
            except WouldBlock:
                k = 0
            if k:
                self.max_out_seq = max(self.max_out_seq, first + k - 1)
            i += k
            if i >= n:
                return
            if not wait:
                break
            self._check_abort()
            start = self.clock()
            credits.wait(1, _POLL)
            tail.blocked_ns += self.clock() - start
        self._park(out, data[i:], counts[i:])

    def _spread(
        self,
        out: _SpreadOut,
        ports: list[DataPort],
        data: list[bytes],
        counts: list[int],
        wait: bool,
    ) -> None:
        """_push to a node of several workers, a port each: every frame goes to one of
        ``ports``, the one with the most credit (round robin among ties), at most a
        1/len(ports) share of the batch at a time, so a slow worker (its credits come
        back slowly) gets fewer frames. It waits for credit in the pools, holding none
        (a worker that may be restarted would lose what it holds)."""
        data, counts = self._with_pending(out, data, counts)
        m = len(ports)
        i, n = 0, len(data)
        share = max(1, -(-n // m))
        tail = self.stats[self.stage.tail.name]
        while i < n:
            best, most, at = None, 0, 0
            for j in range(m):
                pick = (out.rr + j) % m
                port = ports[pick]
                c = port._credits.get() + port.held
                if c > most:
                    best, most, at = port, c, pick
            if best is not None:
                out.rr = (at + 1) % m
                try:
                    first, k = best.send_batch(data[i : i + min(n - i, most, share)], _POLL)
                except WouldBlock:
                    k = 0  # taken by another sender meanwhile, or no room in the ring
                if k:
                    self.max_out_seq = max(self.max_out_seq, first + k - 1)
                    i += k
                    continue
            if not wait:
                break
            self._check_abort()
            start = self.clock()
            # no wait on several counters at once: a short one on each in turn
            out.rr = (out.rr + 1) % m
            ports[out.rr]._credits.wait(1, _SPREAD_WAIT)
            tail.blocked_ns += self.clock() - start
        self._park(out, data[i:], counts[i:])


class _SpreadOut(_Out):
    """The sending end of a node of several workers: one port per worker."""

    __slots__ = ("ports", "rr")

    def __init__(self, dst: CompiledNode, ports: list[DataPort]) -> None:
        super().__init__(dst, ports[0], _Wake())
        self.ports = ports
        self.rr = 0  # where the round robin among ports with equal credit starts


def check_importable(plan: Plan) -> None:
    """Every callable of the plan can be imported by its "module:qualname" in another
    process (and names the very object given); a FlowError naming the node if not."""
    for name, node in plan.graph.nodes.items():
        for what, fn in (("callable", node.fn), ("option until", node.options.get("until"))):
            if fn is None or isinstance(fn, str):
                continue
            spec = callable_name(fn)
            where = f"node {name!r}: {what} {spec!r}"
            if "<lambda>" in spec or "<locals>" in spec:
                raise FlowError(
                    f"{where} cannot run in another process: the ipc runtime imports "
                    'callables by "module:qualname"; define it at module level'
                )
            try:
                found = resolve_callable(spec, f"node {name!r}")
            except FlowError as exc:
                raise FlowError(f"{where} is not importable by name: {exc}") from None
            if found is not fn:
                raise FlowError(
                    f"{where} is not importable by name: {spec!r} imports {found!r}, not "
                    f"{fn!r} (a bound method or a callable object cannot be named); "
                    "use a module-level function"
                )


def _rebuild(spec: dict[str, Any]) -> Plan:
    from .compile import compile

    g = Graph(spec["graph"])
    for m in spec["manifests"]:
        options = dict(m["options"])
        if m["kind"] == "accumulate":
            g.add(m["name"], "accumulate", None, **options)
        else:
            g.add(m["name"], m["kind"], m["callable"], **options)
    for a, b in spec["edges"]:
        g.connect(a, b)
    return compile(g, fuse=spec["fused"])


def _counted(worker: _IpcWorker, it: Iterator[Any]) -> Iterator[Any]:
    # a source's items counted as its worker takes them (the count stored in the WAL)
    try:
        for item in it:
            worker.made += 1
            yield item
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


async def _counted_async(worker: _IpcWorker, it: Any) -> AsyncIterator[Any]:
    try:
        async for item in it:
            worker.made += 1
            yield item
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()


def _watch_parent(pid: int, abort: _Flag) -> None:
    # a run whose parent died (killed) stops: its workers would wait for it forever
    while not abort.is_set():
        time.sleep(_WATCH)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            abort.set()
            return
        except PermissionError:
            pass


def _pack_dead(dead: list[DeadLetter]) -> bytes:
    packer = msgpack.Packer(use_bin_type=True, default=_default)
    rows = []
    for d in dead:
        try:
            packer.pack(d.item)
            item = d.item
        except Exception:
            packer.reset()
            item = repr(d.item)
        rows.append([d.node, item, d.error])
    return packer.pack(rows)


def _exc_payload(exc: BaseException) -> tuple[str, bytes | None]:
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
    except Exception:
        return f"{type(exc).__name__}: {exc}", None
    return f"{type(exc).__name__}: {exc}", data


def worker_main(spec: dict[str, Any], stop: _Flag, abort: _Flag, results: Any, cells: Any) -> None:
    """A worker process: attaches to the run's bus, runs its stage's worker (its
    counters copied into its row of ``cells`` as it goes), sends its numbers to the
    parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent leads the stop
    threading.Thread(
        target=_watch_parent, args=(spec["parent"], abort), name="framebus-flow-watch", daemon=True
    ).start()
    from framebus.bus import FrameBus

    from .inproc import InprocEngine

    stage_name, index = spec["stage_name"], spec["index"]
    out: dict[str, Any] = {"stage": stage_name, "index": index, "fatal": None}
    bus: FrameBus | None = None
    ports: list[DataPort] = []
    ack: Subscription | None = None
    counters = _Counters(cells, spec["row"], spec["order"])
    try:
        bus = FrameBus.attach(spec["bus"])
        plan = _rebuild(spec)
        names = plan.stage_nodes[spec["stage"]]
        engine = InprocEngine(plan, bus=bus, max_batch=spec["max_batch"], codec="msgpack")
        engine.max_frame = bus.config.max_frame - 64
        run = _Run(engine)
        run.bus = bus
        run.stopping = stop  # type: ignore[assignment]
        run.abort = abort  # type: ignore[assignment]
        stage = _Stage(plan, names)
        for node in stage.nodes:
            rate = node.options.get("rate")
            if rate is not None and stage.workers > 1:
                node.options["rate"] = rate / stage.workers
        head = stage.head
        nports = _ports(plan, names, spec["wal"])
        port_index = index if nports > 1 else 0
        in_port = _port_name(plan.name, head.name, port_index, nports)
        if stage.kind != "source":
            port = _SharedPort(bus, in_port, window=head.options["window"])
            ports.append(port)
            port._receive_side()
            stage.port = port
        worker = _IpcWorker(engine, run, stage, index)
        worker.port_index = port_index
        worker.setup_ends(bus)
        worker.finished = TopicCounter(bus, _ctl(head.name, "fin"))
        if spec["acked"]:
            group = _ack_group(in_port)
            ack = bus.subscribe(port_topics(in_port)[2] + ".*", group=group)
            worker.ack = ack
            if spec["wal"]:
                worker.ack_group = group
        if spec["wal"]:
            worker.wal = bus._wal_view
            if spec["resume"] is not None:  # a resumable source
                worker.made_group = _made_group(plan.name, head.name)
                worker.made = worker.resume = spec["resume"]
        heads = {names[0]: _ports(plan, names, spec["wal"]) for names in plan.stage_nodes}
        for dst in stage.tail.outputs:
            dnode = plan.nodes[dst]
            n_dst = heads[dst]
            outs = [
                DataPort(bus, _port_name(plan.name, dst, k, n_dst), window=dnode.options["window"])
                for k in range(n_dst)
            ]
            ports.extend(outs)
            if n_dst == 1:
                worker.outs.append(_Out(dnode, outs[0], _Wake()))
            else:
                worker.outs.append(_SpreadOut(dnode, outs))
        ready = TopicCounter(bus, _ctl("", "ready"))
        if stage.kind == "source":
            # the sources start once every other worker is in its port: no item waits
            # for a process still starting; the timeout counts from then
            counters.in_place()
            while not ready.wait(spec["receivers"], _POLL):
                if abort.is_set() or stop.is_set():
                    break
            if spec["timeout"] is not None:
                engine.limit = time.monotonic_ns() + int(spec["timeout"] * 1e9)
        else:
            ready.add(1)
            counters.in_place()  # after ready: all in place, the sources are released
        counters.start(worker)
        worker.main()  # in this thread: catches what the stage raises into run.fatal
        out["stats"] = {n: asdict(s) for n, s in worker.stats.items()}
        out["dropped"] = {o.dst: o.dropped for o in worker.outs}
        rep = worker.report
        out["latency"] = rep.latency.encode()
        out["buckets"] = list(rep._buckets)
        out["sum_ns"] = rep._sum_ns
        out["e2e"] = rep.e2e_deadline_misses
        out["dead"] = _pack_dead(run.dead)
        out["timed_out"] = run.timed_out
        if run.fatal is not None:
            out["fatal"] = _exc_payload(run.fatal)
    except BaseException as exc:  # noqa: BLE001 - all of it goes to the parent
        abort.set()
        out["fatal"] = _exc_payload(exc)
    finally:
        # the row's last numbers are in place before the parent has the result
        with contextlib.suppress(Exception):
            counters.stop()
        if ack is not None:
            with contextlib.suppress(Exception):
                ack.close()
        for p in reversed(ports):
            with contextlib.suppress(Exception):
                p.close()
        if bus is not None:
            with contextlib.suppress(Exception):
                bus.close()
    results.put(out)


def _restarts(plan: Plan, names: list[str]) -> bool:
    """Whether the stage of ``names`` is restarted when its worker dies (restart=True
    on any of its nodes)."""
    return any(plan.nodes[n].options.get("restart", False) for n in names)


def _remove_stale_segments(graph: str) -> None:
    """Unlinks the segments of earlier runs of ``graph`` that no live process holds
    (a run killed as a whole leaves its segment): a run with a WAL resumes them."""
    from framebus._internal import attached_processes, reader_slots
    from framebus._shm import pid_alive
    from framebus.bus import FrameBus

    prefix = f"framebus.flow-{graph}-"
    try:
        names = [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
    except FileNotFoundError:
        return
    for entry in names:
        name = entry[len("framebus.") :]
        try:
            bus = FrameBus.attach(name)
        except Exception:
            continue
        try:
            held = attached_processes(bus) - 1 > 0 or any(
                info["owner_pid"] and pid_alive(info["owner_pid"]) for info in reader_slots(bus)
            )
        finally:
            bus.close()
        if not held:
            with contextlib.suppress(FileNotFoundError):
                FrameBus.unlink(name)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    if code == 1:  # an exception in the worker before it could run its stage
        return (
            "exited with code 1 without its result (its traceback is on stderr; with "
            "spawn or forkserver every worker imports the program's __main__ module, so "
            "a script must start its run under if __name__ == '__main__':)"
        )
    return f"exited with code {code} without its result"


class IpcEngine:
    """Runs a Plan in worker processes; see the module's docstring."""

    def __init__(
        self,
        plan: Plan,
        max_batch: int = MAX_BATCH,
        start_method: str | None = None,
        wal: str | os.PathLike[str] | None = None,
    ) -> None:
        self.plan = plan
        self.wal: str | None = None
        if wal is not None:
            if not isinstance(wal, (str, os.PathLike)) or not os.fspath(wal):
                raise FlowError(f"wal={wal!r} is invalid: expected a directory path or None")
            self.wal = os.path.abspath(os.fspath(wal))
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise FlowError(f"max_batch={max_batch!r} is invalid: expected an int >= 1")
        self.max_batch = max_batch
        method = "spawn" if start_method is None else start_method
        if method not in START_METHODS:
            raise FlowError(
                f"start_method={start_method!r} is invalid: expected one of "
                + ", ".join(map(repr, START_METHODS))
            )
        self.start_method = method
        for name, node in plan.nodes.items():
            if node.kind == "accumulate" and node.options.get("parallelism", 1) != 1:
                raise FlowError(
                    f"node {name!r}: option parallelism={node.options['parallelism']!r} is "
                    "invalid for an accumulate node in the ipc runtime: expected 1"
                )
        check_importable(plan)
        self.bus_name: str | None = None
        self.bus: FrameBus | None = None
        # the workers that acknowledge what they finished (restart or wal), by (stage
        # name, index): their port's group, ack group, bytes topic, head node and the
        # ack group's name
        self.acked: dict[tuple[str, int], tuple[Subscription, Subscription, str, str, str]] = {}
        self.restartable: set[str] = set()
        self.specs: dict[tuple[str, int], dict[str, Any]] = {}
        self.restarts: dict[str, int] = {}
        self.redelivered: dict[str, int] = {}
        self.arrived: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        # the live counters: one row per worker process, (stage name, index) -> row
        self.layout = _Layout(list(plan.order))
        self.rows: dict[tuple[str, int], int] = {}
        self.stages: list[tuple[str, list[str], int]] = []  # (stage name, nodes, workers)
        for names in plan.stage_nodes:
            n = _workers(plan, names)
            stage_name = "+".join(names)
            self.stages.append((stage_name, names, n))
            for k in range(n):
                self.rows[(stage_name, k)] = len(self.rows)
        self.cells: Any = None  # the run's block of counters (a RawArray of int64)

    def snapshot(self) -> dict[str, Any]:
        """The run's numbers so far, as ``InprocEngine.snapshot()`` gives them (for
        framebus.metrics while it is live, and ``framebus run``'s progress): per node
        items in and out, errors and deadline misses, end-to-end deadline misses and
        the latency of each sink stage as (bucket bounds in ns, counts, sum in ns).
        What the workers last copied into their rows (every PUBLISH s): zeros before
        they start, the Report's numbers once the run has ended."""
        plan = self.plan
        lay = self.layout
        nodes = {n: dict.fromkeys(_FIELDS, 0) for n in plan.order}
        latency: dict[str, tuple[list[int], list[int], int]] = {}
        e2e = 0
        cells = self.cells
        values = cells[:] if cells is not None else [0] * (len(self.rows) * lay.width)
        for stage_name, names, n in self.stages:
            counts = [0] * _NB
            total = 0
            for k in range(n):
                row = self.rows[(stage_name, k)] * lay.width
                for name in names:
                    at = row + lay.nodes[name]
                    d = nodes[name]
                    for j, f in enumerate(_FIELDS):
                        d[f] += values[at + j]
                e2e += values[row + lay.e2e]
                b = row + lay.buckets
                counts = [a + c for a, c in zip(counts, values[b : b + _NB], strict=True)]
                total += values[row + lay.sum]
            if plan.nodes[names[-1]].kind == "sink":
                latency[stage_name] = (list(BUCKET_BOUNDS_NS), counts, total)
        return {"graph": plan.name, "nodes": nodes, "e2e_deadline_misses": e2e, "latency": latency}

    def _all_in_place(self) -> bool:
        cells = self.cells
        lay = self.layout
        return all(cells[row * lay.width + lay.started] for row in self.rows.values())

    def run(self, timeout: float | None = None, metrics: Any = None) -> Report:
        """Runs the plan to the end of its sources; ``timeout`` (seconds) counts from
        the moment every worker process is in place. ``metrics``: True or a
        prometheus_client CollectorRegistry to export the run's ``framebus_flow_*``
        families in while it is live."""
        from framebus.bus import FrameBus

        if not (metrics is None or isinstance(metrics, bool) or hasattr(metrics, "register")):
            raise FlowError(
                f"metrics={metrics!r} is invalid: expected True, False, None or a "
                "prometheus_client CollectorRegistry"
            )
        plan = self.plan
        ctx: Any = multiprocessing.get_context(self.start_method)
        started = time.monotonic_ns()
        stop, abort = _Flag(ctx), _Flag(ctx)
        results = ctx.Queue()
        self.cells = ctx.RawArray(ctypes.c_int64, len(self.rows) * self.layout.width)
        self._make = (ctx, stop, abort, results)
        self.bus = None
        done = threading.Event()
        receiver = threading.Thread(
            target=self._receive_results,
            args=(results, done),
            name=f"framebus-flow-{plan.name}-results",
            daemon=True,
        )
        name = _bus_name(plan.name)
        self.bus_name = name
        if self.wal is not None:
            _remove_stale_segments(plan.name)
        try:
            bus = FrameBus.create_shared(
                name,
                wal_dir=self.wal,
                ring_bytes=_RING_BYTES,
                ring_pow=_RING_POW,
                max_frame=_MAX_FRAME,
            )
        except WalError as exc:
            raise FlowError(f"flow {plan.name!r}: wal={self.wal!r} cannot be used: {exc}") from None
        self.bus = bus
        subs: list[Subscription] = []
        procs: list[tuple[str, int, Any]] = []
        got: dict[tuple[str, int], dict[str, Any]] = {}
        state: dict[str, Any] = {"fatal": None, "interrupted": None, "timed_out": False}
        registry: Any = None
        try:
            receiver.start()
            for names in plan.stage_nodes:
                head = plan.nodes[names[0]]
                n = _ports(plan, names, self.wal is not None)
                stage_name = "+".join(names)
                for k in range(n if head.kind != "source" else 0):
                    # the stage's ports (one per worker, or one its workers share):
                    # their groups and credit pools exist before any worker does
                    port = _port_name(plan.name, head.name, k, n)
                    bytes_topic, _env, group = port_topics(port)
                    main = bus.subscribe(group + ".*", group=group)
                    subs.append(main)
                    TopicCounter(bus, tid=bus.topic_id(bytes_topic)).exchange(
                        head.options["window"]
                    )
                    if _restarts(plan, names) or self.wal is not None:
                        ack_group = _ack_group(port)
                        ack = bus.subscribe(group + ".*", group=ack_group)
                        subs.append(ack)
                        self.acked[(stage_name, k)] = (main, ack, bytes_topic, head.name, ack_group)
                    for src in head.inputs:
                        TopicCounter(bus, _ctl(head.name, f"end:{src}:{k}"))
                if head.kind != "source" and _restarts(plan, names):
                    self.restartable.add(stage_name)
                TopicCounter(bus, _ctl(head.name, "fin"))
            resume = self._resume(bus) if self.wal is not None else {}
            base = {
                "bus": name,
                "graph": plan.name,
                "manifests": plan.manifests,
                "edges": plan.edges,
                "fused": plan.fused,
                "max_batch": self.max_batch,
                "timeout": timeout,
                "order": list(plan.order),
                "parent": os.getpid(),
                "receivers": sum(
                    _workers(plan, names)
                    for names in plan.stage_nodes
                    if plan.nodes[names[0]].kind != "source"
                ),
            }
            for i, names in enumerate(plan.stage_nodes):
                head = plan.nodes[names[0]]
                n = _workers(plan, names)
                stage_name = "+".join(names)
                for k in range(n):
                    spec = dict(
                        base,
                        stage=i,
                        stage_name=stage_name,
                        index=k,
                        acked=(stage_name, k) in self.acked,
                        wal=self.wal is not None,
                        resume=resume.get(names[0]),
                        row=self.rows[(stage_name, k)],
                    )
                    self.specs[(stage_name, k)] = spec
                    procs.append((stage_name, k, self._process(spec)))
            if metrics:
                registry = _export(self, metrics)
            try:
                for _s, _k, p in reversed(procs):  # the sources last
                    p.start()
            except KeyboardInterrupt as exc:
                state["interrupted"] = exc
                abort.set()
            self._wait(procs, got, stop, abort, timeout, state)
        except BaseException:
            abort.set()
            raise
        finally:
            if registry is not None:
                from framebus import metrics as _metrics

                _metrics.unregister_flow(self, None if registry is True else registry)
            self._reap(procs, got, abort)
            done.set()
            if receiver.ident is not None:
                receiver.join()
            self._collect(got, 0)
            results.close()
            results.join_thread()
            for sub in subs:
                with contextlib.suppress(Exception):
                    sub.close()
            bus.close()
            with contextlib.suppress(FileNotFoundError):
                FrameBus.unlink(name)
        report = self._report(got, started, state)
        fatal = state["fatal"] if state["fatal"] is not None else state["interrupted"]
        if fatal is not None:
            if isinstance(fatal, KeyboardInterrupt):
                fatal.report = report  # type: ignore[attr-defined]
            raise fatal
        return report

    def _resume(self, bus: FrameBus) -> dict[str, int]:
        """A run with a WAL: hands on again what an earlier run's stages took and did
        not commit (the ack groups' backfill from the WAL; end markers left out), and
        returns where each resumable source resumes (the count it stored)."""
        plan = self.plan
        again: list[tuple[str, str, Any]] = []
        for _main, ack, bytes_topic, head, _group in self.acked.values():
            while True:  # the backfill, before anything is published on this bus
                frames = ack.recv_batch(256, 0)
                if not frames:
                    break
                again.extend((head, bytes_topic, f) for f in frames)
        for head, bytes_topic, frame in again:
            kind, _emitted, _deadline, items = _unpack(frame.payload)
            if kind != _DATA:
                continue
            bus.publish(frame.payload, bytes_topic)
            # handed on without credit, it gives one back when taken: taken from the
            # port's pool now, so the window stays a bound (as far as the pool holds)
            TopicCounter(bus, tid=bus.topic_id(bytes_topic)).take(1)
            self.redelivered[head] = self.redelivered.get(head, 0) + len(items)
        writer = bus._wal_writer
        assert writer is not None
        for _main, _ack, _topic, _head, group in self.acked.values():
            if writer.wal.committed(group) is None:
                # a first run: its stages' offsets start at its first frame, so a
                # crash before a stage commits hands on everything again
                writer.commit(group, writer.start_seq)
        resume: dict[str, int] = {}
        for name, node in plan.nodes.items():
            if node.kind == "source" and node.options.get("resumable"):
                resume[name] = writer.wal.committed(_made_group(plan.name, name)) or 0
        return resume

    def _process(self, spec: dict[str, Any]) -> Any:
        ctx, stop, abort, results = self._make
        return ctx.Process(
            target=worker_main,
            args=(spec, stop, abort, results, self.cells),
            name=f"framebus-flow-{self.plan.name}-{spec['stage_name']}-{spec['index']}",
            daemon=True,
        )

    def _restart(self, procs: list[tuple[str, int, Any]], at: int) -> None:
        """Hands on again what the dead worker ``procs[at]`` took and did not finish
        (the frames between its port's ack cursor and the port's cursor, republished
        on the port), then starts a worker in its place."""
        stage_name, k, dead = procs[at]
        main, ack, bytes_topic, head, _group = self.acked[(stage_name, k)]
        bus = self.bus
        assert bus is not None
        end = main._info()["next_seq"]  # the port's cursor: no member reads it now
        again = frames_again = 0
        while ack._info()["next_seq"] < end:
            frames = ack.recv_batch(1, 0)
            if not frames:
                break
            frame = frames[0]
            bus.publish(frame.payload, bytes_topic)
            frames_again += 1
            kind, _emitted, _deadline, items = _unpack(frame.payload)
            if kind == _DATA:
                again += len(items)
            if frame.seq >= end:
                break  # read one past the cursor: handed on twice, never lost
        # the frames handed on again came without credit and will give theirs back:
        # take as many from the pool, so the window stays a bound
        TopicCounter(bus, tid=bus.topic_id(bytes_topic)).take(frames_again)
        self.redelivered[head] = self.redelivered.get(head, 0) + again
        self.restarts[stage_name] = self.restarts.get(stage_name, 0) + 1
        with contextlib.suppress(ValueError):
            dead.close()
        p = self._process(self.specs[(stage_name, k)])
        procs[at] = (stage_name, k, p)
        p.start()

    def _collect(self, got: dict[tuple[str, int], dict[str, Any]], wait: float) -> None:
        try:
            r = self.arrived.get(timeout=wait) if wait else self.arrived.get_nowait()
        except queue.Empty:
            return
        while True:
            got[(r["stage"], r["index"])] = r
            try:
                r = self.arrived.get_nowait()
            except queue.Empty:
                return

    def _receive_results(self, results: Any, done: threading.Event) -> None:
        # on a thread of its own: a Ctrl-C (raised in the main thread) never breaks off
        # a read of the results pipe halfway
        while True:
            try:
                r = results.get(timeout=_POLL)
            except queue.Empty:
                if done.is_set():
                    return
                continue
            except (EOFError, OSError, ValueError):
                return
            self.arrived.put(r)

    def _fail(self, state: dict[str, Any], exc: BaseException, abort: _Flag) -> None:
        if state["fatal"] is None:
            state["fatal"] = exc
        abort.set()

    def _wait(
        self,
        procs: list[tuple[str, int, Any]],
        got: dict[tuple[str, int], dict[str, Any]],
        stop: _Flag,
        abort: _Flag,
        timeout: float | None,
        state: dict[str, Any],
    ) -> None:
        """Until every worker has sent its result: the timeout (counted from when every
        worker is in place), Ctrl-C (the first drains, a second aborts), failed and dead
        workers."""
        exited_at: dict[tuple[str, int], float] = {}
        graph = self.plan.name
        limit: int | None = None
        while True:
            try:
                if len(got) == len(procs) or (abort.is_set() and state["fatal"] is not None):
                    return
                if abort.is_set() and all(
                    p.pid is None or p.exitcode is not None for _s, _k, p in procs
                ):
                    return
                self._collect(got, _POLL)
                for key, r in got.items():
                    if r["fatal"] is not None and state["fatal"] is None:
                        self._fail(state, _rebuild_exc(key[0], r["fatal"]), abort)
                now = time.monotonic()
                for at, (s, k, p) in enumerate(procs):
                    if (s, k) in got or p.exitcode is None:
                        continue
                    if p.pid is None:
                        continue  # never started
                    if p.exitcode == 0:
                        # its result may still be on the way
                        if now - exited_at.setdefault((s, k), now) < _EXIT_GRACE:
                            continue
                    elif (
                        s in self.restartable
                        and not abort.is_set()
                        and self.restarts.get(s, 0) < MAX_RESTARTS
                    ):
                        self._restart(procs, at)
                        continue
                    self._fail(
                        state,
                        FlowError(
                            f"flow {graph!r}: stage {s!r}: worker process {k} (pid {p.pid}) "
                            f"{_describe_exit(p.exitcode)}"
                            + (
                                f" (after {self.restarts[s]} restarts)"
                                if self.restarts.get(s)
                                else ""
                            )
                            + "; the run was stopped"
                        ),
                        abort,
                    )
                if timeout is not None and limit is None and self._all_in_place():
                    limit = time.monotonic_ns() + int(timeout * 1e9)
                if limit is not None and not stop.is_set() and time.monotonic_ns() >= limit:
                    state["timed_out"] = True
                    stop.set()
            except KeyboardInterrupt as exc:
                if state["interrupted"] is None:
                    state["interrupted"] = exc
                    stop.set()
                else:
                    abort.set()
                    return

    def _reap(
        self,
        procs: list[tuple[str, int, Any]],
        got: dict[tuple[str, int], dict[str, Any]],
        abort: _Flag,
    ) -> None:
        """Every worker ends: waited for _GRACE s (their results collected meanwhile),
        then terminated, then killed."""
        end = time.monotonic() + _GRACE
        live = [p for _s, _k, p in procs if p.pid is not None]
        while True:
            try:
                self._collect(got, 0)
                live = [p for p in live if p.exitcode is None]
                if not live:
                    break
                if time.monotonic() >= end:
                    abort.set()
                    for p in live:
                        p.terminate()
                    for p in live:
                        p.join(1.0)
                        if p.exitcode is None:
                            p.kill()
                            p.join(1.0)
                    break
                live[0].join(_POLL)
            except KeyboardInterrupt:
                abort.set()
        self._collect(got, 0)
        for _s, _k, p in procs:
            if p.pid is not None:
                p.join(1.0)
                with contextlib.suppress(ValueError):
                    p.close()

    def _report(
        self, got: dict[tuple[str, int], dict[str, Any]], started: int, state: dict[str, Any]
    ) -> Report:
        plan = self.plan
        report = Report(
            plan.name,
            "ipc",
            {n: NodeStats(plan.nodes[n].kind, plan.nodes[n].stage) for n in plan.order},
        )
        timed_out = state["timed_out"]
        for r in got.values():
            if "stats" not in r:
                continue
            for name, s in r["stats"].items():
                into = report.nodes[name]
                for key, value in s.items():
                    if key == "flushes":
                        for reason, k in value.items():
                            into.flushes[reason] = into.flushes.get(reason, 0) + k
                    elif key not in ("kind", "stage"):
                        setattr(into, key, getattr(into, key) + value)
            for dst, k in r["dropped"].items():
                report.nodes[dst].dropped += k
            report.latency.add(HdrHistogram.decode(r["latency"]))
            report._buckets = [a + b for a, b in zip(report._buckets, r["buckets"], strict=True)]
            report._sum_ns += r["sum_ns"]
            report.e2e_deadline_misses += r["e2e"]
            for node, item, error in _unpack(r["dead"]):
                report.dead_letters.append(DeadLetter(node, item, error))
            timed_out = timed_out or r["timed_out"]
        for head, n in self.redelivered.items():
            report.nodes[head].redelivered += n
        report.timed_out = bool(timed_out)
        report.duration_ns = time.monotonic_ns() - started
        return report


def _rebuild_exc(stage: str, fatal: tuple[str, bytes | None]) -> BaseException:
    text, data = fatal
    if data is not None:
        try:
            exc = pickle.loads(data)
            if isinstance(exc, BaseException):
                return exc
        except Exception:
            pass
    return FlowError(f"stage {stage!r}: {text}")
