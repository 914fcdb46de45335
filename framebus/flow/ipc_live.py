"""The ipc runtime watched while it runs (``framebus run/demo --runtime ipc``,
``LiveRun``): ``LiveIpcEngine`` is framebus.flow.ipc's engine whose workers also copy
their node counters into a block of shared memory made for the run, every ``publish``
seconds and once more when they finish, so ``snapshot()`` in the parent gives the
numbers so far, as the inproc runtime's does: per node items in and out, errors and
deadline misses, end-to-end deadline misses and each sink stage's latency buckets.

The block is one row of int64 per worker process (a stage with ``parallelism`` n has
n rows; the parent sums them). A worker started in place of one that died (``restart``)
goes on from the numbers its predecessor left in the row, so the live counts never go
back; the Report, gathered from the workers at the end, counts what the replacement
did (see framebus.flow.ipc). The block is anonymous shared memory
(``multiprocessing``'s heap): nothing of it outlives the run's processes.

``timeout`` counts from the moment every worker process is in place (when the sources
start emitting), not from the call: starting the processes (spawn: a fresh
interpreter each, about a quarter of a second) does not eat into a run of a few
seconds. Then the run stops as the ipc runtime's does at its timeout (the sources
stop, the rest drains) and the Report says ``timed_out``.

The report and everything else are the ipc runtime's: the engine only adds the rows
and the later start of the timeout.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import threading
from typing import TYPE_CHECKING, Any

from .inproc import MAX_BATCH
from .ipc import IpcEngine
from .report import BUCKET_BOUNDS_NS

if TYPE_CHECKING:
    from .compile import Plan

__all__ = ["PUBLISH", "LiveIpcEngine"]

PUBLISH = 0.1  # s: how often a worker copies its counters into its row
FIELDS = ("items_in", "items_out", "errors", "deadline_misses")
_NB = len(BUCKET_BOUNDS_NS) + 1  # latency buckets (the last one: above every bound)


class _Layout:
    """Where a worker's numbers go in its row: per node of the plan its FIELDS, then
    the end-to-end deadline misses, the latency buckets and their sum (ns)."""

    def __init__(self, nodes: list[str]) -> None:
        self.nodes = {n: i * len(FIELDS) for i, n in enumerate(nodes)}
        self.started = len(nodes) * len(FIELDS)  # 1 once the worker is in place
        self.e2e = self.started + 1
        self.buckets = self.e2e + 1
        self.sum = self.buckets + _NB
        self.width = self.sum + 1


class LiveIpcEngine(IpcEngine):
    """An IpcEngine with ``snapshot()``; see the module's docstring."""

    def __init__(
        self,
        plan: Plan,
        max_batch: int = MAX_BATCH,
        start_method: str | None = None,
        publish: float = PUBLISH,
    ) -> None:
        super().__init__(plan, max_batch, start_method)
        self.publish = publish
        self.layout = _Layout(list(plan.order))
        # one row per worker process: (stage name, worker index) -> row
        self.rows: dict[tuple[str, int], int] = {}
        self.stages: list[tuple[str, list[str], int]] = []
        for names in plan.stage_nodes:
            n = plan.nodes[names[0]].options.get("parallelism", 1) if len(names) == 1 else 1
            stage_name = "+".join(names)
            self.stages.append((stage_name, names, n))
            for k in range(n):
                self.rows[(stage_name, k)] = len(self.rows)
        self.cells: Any = None

    def run(self, timeout: float | None = None) -> Any:
        ctx: Any = multiprocessing.get_context(self.start_method)
        lay = self.layout
        cells = ctx.RawArray(ctypes.c_int64, len(self.rows) * lay.width)
        self.cells = cells
        if timeout is None:
            return super().run()
        flags = [row * lay.width + lay.started for row in self.rows.values()]
        ended = threading.Event()
        fired = threading.Event()

        def timer() -> None:
            while not all(cells[i] for i in flags):
                if ended.wait(0.01):
                    return
            if ended.wait(timeout):
                return
            self._make[1].set()  # stop: the sources stop, the rest drains
            fired.set()

        thread = threading.Thread(target=timer, name="framebus-flow-timeout", daemon=True)
        thread.start()
        try:
            report = super().run()
        except KeyboardInterrupt as exc:
            if fired.is_set() and getattr(exc, "report", None) is not None:
                exc.report.timed_out = True  # type: ignore[attr-defined]
            raise
        finally:
            ended.set()
            thread.join()
        if fired.is_set():
            report.timed_out = True
        return report

    def _process(self, spec: dict[str, Any]) -> Any:
        ctx, stop, abort, results = self._make
        start = self.rows[(spec["stage_name"], spec["index"])] * self.layout.width
        return ctx.Process(
            target=live_worker_main,
            args=(
                spec,
                stop,
                abort,
                results,
                self.cells,
                start,
                list(self.plan.order),
                self.publish,
            ),
            name=f"framebus-flow-{self.plan.name}-{spec['stage_name']}-{spec['index']}",
            daemon=True,
        )

    def snapshot(self) -> dict[str, Any]:
        """The run's numbers so far, as ``InprocEngine.snapshot()`` gives them (zeros
        before the workers start)."""
        plan = self.plan
        lay = self.layout
        nodes = {n: dict.fromkeys(FIELDS, 0) for n in plan.order}
        latency: dict[str, tuple[list[int], list[int], int]] = {}
        e2e = 0
        cells = self.cells
        values = cells[:] if cells is not None else [0] * (len(self.rows) * lay.width)
        for stage_name, names, n in self.stages:
            sink = plan.nodes[names[-1]].kind == "sink"
            counts = [0] * _NB
            total = 0
            for k in range(n):
                row = self.rows[(stage_name, k)] * lay.width
                for name in names:
                    at = row + lay.nodes[name]
                    d = nodes[name]
                    for j, f in enumerate(FIELDS):
                        d[f] += values[at + j]
                e2e += values[row + lay.e2e]
                b = row + lay.buckets
                counts = [a + c for a, c in zip(counts, values[b : b + _NB], strict=True)]
                total += values[row + lay.sum]
            if sink:
                latency[stage_name] = (list(BUCKET_BOUNDS_NS), counts, total)
        return {"graph": plan.name, "nodes": nodes, "e2e_deadline_misses": e2e, "latency": latency}


def live_worker_main(
    spec: dict[str, Any],
    stop: Any,
    abort: Any,
    results: Any,
    cells: Any,
    start: int,
    nodes: list[str],
    publish: float,
) -> None:
    """A worker process of a LiveIpcEngine: framebus.flow.ipc's ``worker_main``, with a
    thread copying the stage worker's counters into the row at ``start`` of ``cells``."""
    from . import ipc

    lay = _Layout(nodes)
    base = list(cells[start : start + lay.width])  # a dead predecessor's numbers
    seen: list[Any] = []

    class _Watched(ipc._IpcWorker):  # type: ignore[misc,name-defined]
        def setup_ends(self, bus: Any) -> None:
            seen.append(self)
            super().setup_ends(bus)
            cells[start + lay.started] = 1

    # this process runs one stage worker: the class ipc.worker_main makes is ours
    ipc._IpcWorker = _Watched  # type: ignore[misc]

    def copy() -> None:
        if not seen:
            return
        w = seen[0]
        for name, s in list(w.stats.items()):
            at = lay.nodes[name]
            for j, f in enumerate(FIELDS):
                cells[start + at + j] = base[at + j] + getattr(s, f)
        rep = w.report
        cells[start + lay.e2e] = base[lay.e2e] + rep.e2e_deadline_misses
        for j, c in enumerate(list(rep._buckets)):
            cells[start + lay.buckets + j] = base[lay.buckets + j] + c
        cells[start + lay.sum] = base[lay.sum] + rep._sum_ns

    done = threading.Event()

    def copier() -> None:
        while not done.wait(publish):
            copy()

    thread = threading.Thread(target=copier, name="framebus-flow-live", daemon=True)
    thread.start()
    try:
        ipc.worker_main(spec, stop, abort, results)
    finally:
        done.set()
        thread.join()
        copy()
