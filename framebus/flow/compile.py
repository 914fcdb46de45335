"""Compiling a graph into a plan: the checks, the topological order, fusion, and the
manifests, routes and schemas a runtime works from."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from framebus._reserved import FLOW
from framebus.envelope import MSGPACK

from .errors import FlowError
from .graph import Graph, Node, callable_name, resolve_callable

if TYPE_CHECKING:
    from framebus.bus import FrameBus

    from .report import Report

__all__ = ["RUNTIMES", "FlowAdapter", "Plan", "compile"]

RUNTIMES = ("sync", "inproc", "ipc")
SCHEMA_VER = 1


def _edge(a: str, b: str) -> str:
    return f"edge {a!r} -> {b!r}"


@dataclass
class CompiledNode:
    """A node as the engines see it: its callable resolved, its edges listed."""

    name: str
    kind: str
    fn: Callable[..., Any] | None
    options: dict[str, Any]
    inputs: list[str]
    outputs: list[str]
    stage: str = ""
    until: Callable[..., Any] | None = None


class Plan:
    """A compiled graph. ``manifests`` (one dict per node), ``routes`` and ``schemas``
    (one dict per edge), ``stages`` (stage names after fusion, in topological order);
    ``run()`` executes it and returns a :class:`~framebus.flow.Report`."""

    def __init__(
        self,
        graph: Graph,
        nodes: dict[str, CompiledNode],
        order: list[str],
        stages: list[list[str]],
        fused: bool,
    ) -> None:
        self.graph = graph
        self.name = graph.name
        self.nodes = nodes
        self.order = order  # topological, ties in declaration order
        self.stage_nodes = stages
        self.stages = ["+".join(s) for s in stages]
        self.fused = fused
        self.edges = list(graph.edges)
        stage_of = {n: "+".join(s) for s in stages for n in s}
        for name, node in nodes.items():
            node.stage = stage_of[name]
        self.manifests = [self._manifest(nodes[n]) for n in order]
        self.routes = []
        for a, b in self.edges:
            inner = stage_of[a] == stage_of[b]
            self.routes.append(
                {
                    "src": a,
                    "dst": b,
                    "topic": f"{FLOW}{graph.name}.{a}.{b}",
                    "port": None if inner else f"{graph.name}.{a}.{b}",
                    "window": nodes[b].options.get("window"),
                    "overflow": nodes[b].options.get("overflow"),
                }
            )
        out_types = self._content_types()
        self.schemas = [
            {"src": a, "dst": b, "content_type": out_types[a], "schema_ver": SCHEMA_VER}
            for a, b in self.edges
        ]

    def _manifest(self, node: CompiledNode) -> dict[str, Any]:
        options = dict(node.options)
        if options.get("until") is not None:
            options["until"] = callable_name(options["until"])
        return {
            "name": node.name,
            "kind": node.kind,
            "callable": None if node.fn is None else callable_name(self.graph.nodes[node.name].fn),
            "options": options,
            "stage": node.stage,
            "inputs": list(node.inputs),
            "outputs": list(node.outputs),
        }

    def _content_types(self) -> dict[str, str]:
        # what each node sends: its declared content_type, else msgpack (Python items);
        # a filter passes on what its inputs send when they all agree
        out: dict[str, str] = {}
        for name in self.order:
            node = self.nodes[name]
            declared = node.options.get("content_type")
            if declared:
                out[name] = declared
            elif node.kind == "filter":
                seen = {out[i] for i in node.inputs}
                out[name] = seen.pop() if len(seen) == 1 else MSGPACK
            else:
                out[name] = MSGPACK
        return out

    def __repr__(self) -> str:
        return f"<flow.Plan {self.name!r}: {' -> '.join(self.stages)}>"

    def run(
        self,
        runtime: str = "sync",
        clock: Callable[[], int] | None = None,
        timeout: float | None = None,
        sleep: Callable[[float], None] | None = None,
        *,
        bus: FrameBus | None = None,
        max_batch: int | None = None,
        metrics: Any = None,
        codec: str | None = None,
        start_method: str | None = None,
        wal: Any = None,
        handoff: str | None = None,
    ) -> Report:
        """Run the plan to the end of its sources (or ``timeout`` seconds by ``clock``)
        and return the Report. ``clock()`` returns nanoseconds (default
        ``time.monotonic_ns``); ``sleep(seconds)`` waits for backoff and rate shaping
        (default: ``sleep`` given, else ``clock.sleep`` if the clock has one, else
        ``time.sleep`` with the default clock, else no waiting).

        ``runtime="sync"`` runs in the calling thread (:mod:`framebus.flow.sync`, the
        reference semantics); ``runtime="inproc"`` runs the stages on threads of this
        process, their edges DataPorts of one FrameBus (:mod:`framebus.flow.inproc`
        states its rules). Inproc only: ``bus``, a FrameBus to run on (default: one of
        the run's own, closed at the end); ``max_batch``, the most items per frame
        (default 1024); ``metrics``, True or a prometheus_client CollectorRegistry to
        export the ``framebus_flow_*`` families in while the run is live; ``codec``,
        how items other than bytes cross a stage boundary: ``"ref"`` (default) as they
        are, the same objects the sync engine would hand on, or ``"msgpack"`` encoded
        in the frames, as they would cross processes (tuples arrive as lists);
        ``handoff``, ``"auto"`` (default): an idle stage's next frame runs in its
        sender's thread when the stage's frames take under 50 us each, which saves a
        thread hop (wake-up and GIL hand-over) on every such edge, or ``"thread"``:
        every frame is handed to the stage's own thread.

        ``runtime="ipc"`` runs each stage in processes of its own (``parallelism``
        processes for a map, filter or sink), their edges DataPorts of one shared bus
        made for the run and unlinked after it (:mod:`framebus.flow.ipc` states its
        rules): items cross as msgpack (``codec`` may only be ``"msgpack"``), every
        callable must be importable by ``"module:qualname"``, sources and sinks run in
        their workers (a sink's side effects happen in its process), and a worker
        process that dies ends the run with a FlowError naming its stage, unless its
        node has ``restart=True``: then a new worker takes over and what the dead one
        had not finished is handed on again (counted as ``redelivered``). It takes
        ``max_batch``, ``metrics`` (as inproc: the workers copy their counters to this
        process every 0.1 s) and ``start_method`` (``"spawn"``, the default,
        ``"forkserver"`` or ``"fork"``), not ``clock``, ``sleep`` or ``bus``. Its
        ``timeout`` counts from the moment every worker process is in place (the
        sources start emitting then), not from the call: starting the processes (with
        spawn a fresh interpreter each, a second or more for a few stages) does not eat
        into the run's time; the Report's ``duration_ns`` still counts from the call.

        ``wal`` (ipc only): a directory (str or path) for a durable run: the run's bus
        keeps its frames in a write-ahead log there, and a run started again with the
        same ``wal`` after a crash resumes from the offsets its stages committed,
        handing on again what they had not (at least once; counted as
        ``redelivered``); a source with ``resumable=True`` is called
        ``fn(resume=n)`` with the count of its items already stored. A node of
        parallelism n > 1 then gives each worker a port (and ack cursor) of its own, as
        with ``restart=True``; run it again with the same parallelism. See
        :mod:`framebus.flow.ipc`."""
        if runtime not in RUNTIMES:
            raise FlowError(
                f"unknown runtime {runtime!r}; expected one of "
                + ", ".join(repr(r) for r in RUNTIMES)
            )
        if timeout is not None and not (
            isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0
        ):
            raise FlowError(f"timeout={timeout!r} is invalid: expected a number > 0 or None")
        if runtime != "ipc" and start_method is not None:
            raise FlowError(
                f"start_method={start_method!r}: only the ipc runtime takes start_method"
            )
        if runtime != "inproc" and handoff is not None:
            raise FlowError(f"handoff={handoff!r}: only the inproc runtime takes handoff")
        if runtime != "ipc" and wal is not None:
            raise FlowError(
                f"wal={wal!r}: the {runtime} runtime does not take wal; durable runs are "
                'runtime="ipc" only'
            )
        if runtime == "ipc":
            refused: tuple[tuple[str, Any], ...] = (
                ("clock", clock),
                ("sleep", sleep),
                ("bus", bus),
            )
            for key, value in refused:
                if value is not None:
                    raise FlowError(
                        f"{key}={value!r}: the ipc runtime does not take {key} "
                        "(its workers use time.monotonic_ns and a bus of the run's own)"
                    )
            if codec not in (None, "msgpack"):
                raise FlowError(
                    f"codec={codec!r} is invalid for the ipc runtime: items cross processes "
                    'as "msgpack"'
                )
            from .inproc import MAX_BATCH as IPC_MAX_BATCH
            from .ipc import IpcEngine

            return IpcEngine(
                self,
                max_batch=IPC_MAX_BATCH if max_batch is None else max_batch,
                start_method=start_method,
                wal=wal,
            ).run(timeout=timeout, metrics=metrics)
        if runtime == "sync":
            for key, value in (
                ("bus", bus),
                ("max_batch", max_batch),
                ("metrics", metrics),
                ("codec", codec),
            ):
                if value is not None:
                    raise FlowError(f"{key}={value!r}: only the inproc runtime takes {key}")
            from .sync import SyncEngine

            return SyncEngine(self, clock=clock, sleep=sleep).run(timeout=timeout)
        from .inproc import MAX_BATCH, InprocEngine

        engine = InprocEngine(
            self,
            clock=clock,
            sleep=sleep,
            bus=bus,
            max_batch=MAX_BATCH if max_batch is None else max_batch,
            codec="ref" if codec is None else codec,
            handoff="auto" if handoff is None else handoff,
        )
        return engine.run(timeout=timeout, metrics=metrics)


class FlowAdapter:
    """Compiles graphs into plans: ``FlowAdapter().compile(graph)``; ``fuse=False``
    keeps every node a stage of its own."""

    def __init__(self, fuse: bool = True) -> None:
        self.fuse = fuse

    def compile(self, graph: Graph, fuse: bool | None = None) -> Plan:
        if not isinstance(graph, Graph):
            raise FlowError(f"compile takes a flow.Graph, not {type(graph).__name__}")
        fuse = self.fuse if fuse is None else fuse
        gname = f"graph {graph.name!r}"
        if not graph.nodes:
            raise FlowError(f"{gname} has no nodes")
        inputs: dict[str, list[str]] = {n: [] for n in graph.nodes}
        outputs: dict[str, list[str]] = {n: [] for n in graph.nodes}
        for a, b in graph.edges:
            for end in (a, b):
                if end not in graph.nodes:
                    raise FlowError(f"{_edge(a, b)}: unknown node {end!r}")
            if a == b:
                raise FlowError(f"{_edge(a, b)}: cycle {a} -> {a}")
            outputs[a].append(b)
            inputs[b].append(a)
        for name, node in graph.nodes.items():
            if node.kind == "source" and inputs[name]:
                raise FlowError(
                    f"source {name!r} has inputs ({_edge(inputs[name][0], name)}); "
                    "a source takes none"
                )
            if node.kind == "sink" and outputs[name]:
                raise FlowError(
                    f"sink {name!r} has outputs ({_edge(name, outputs[name][0])}); a sink has none"
                )
        order = _toposort(graph, inputs, outputs)
        reached = _reached(graph, outputs)
        for name in graph.nodes:
            if name not in reached:
                raise FlowError(f"node {name!r}: no source reaches it")
        nodes: dict[str, CompiledNode] = {}
        for name, node in graph.nodes.items():
            nodes[name] = _compile_node(node, inputs[name], outputs[name])
        stages = _stages(order, nodes) if fuse else [[n] for n in order]
        return Plan(graph, nodes, order, stages, fuse)


def _compile_node(node: Node, inputs: list[str], outputs: list[str]) -> CompiledNode:
    what = f"node {node.name!r}"
    fn = None if node.fn is None else resolve_callable(node.fn, what)
    until = node.options.get("until")
    until_fn = None if until is None else resolve_callable(until, f"{what}: option until")
    if node.options.get("resumable"):
        _check_resumable(what, fn)
    return CompiledNode(
        node.name, node.kind, fn, dict(node.options), list(inputs), list(outputs), until=until_fn
    )


def _check_resumable(what: str, fn: Any) -> None:
    # a resumable source is called fn(resume=n): it must take that keyword
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # not introspectable (a builtin): the call will tell
    try:
        sig.bind(resume=0)
    except TypeError:
        raise FlowError(
            f"{what}: option resumable=True needs a callable taking the keyword argument "
            f"resume (it is called fn(resume=n)); {callable_name(fn)!r} has the signature "
            f"{sig}"
        ) from None


def _toposort(
    graph: Graph, inputs: dict[str, list[str]], outputs: dict[str, list[str]]
) -> list[str]:
    # Kahn's algorithm; among ready nodes, the one declared first goes first
    position = {n: i for i, n in enumerate(graph.nodes)}
    pending = {n: len(inputs[n]) for n in graph.nodes}
    ready = sorted((n for n, k in pending.items() if k == 0), key=position.__getitem__)
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in outputs[n]:
            pending[m] -= 1
            if pending[m] == 0:
                ready.append(m)
                ready.sort(key=position.__getitem__)
    if len(order) < len(graph.nodes):
        raise FlowError(f"graph {graph.name!r}: cycle {_find_cycle(graph, outputs, order)}")
    return order


def _find_cycle(graph: Graph, outputs: dict[str, list[str]], done: list[str]) -> str:
    left = [n for n in graph.nodes if n not in set(done)]
    # every node left lies on or behind a cycle: walk outputs among them until one repeats
    left_set = set(left)
    path: list[str] = [left[0]]
    while True:
        nxt = next(m for m in outputs[path[-1]] if m in left_set)
        if nxt in path:
            cycle = path[path.index(nxt) :] + [nxt]
            return " -> ".join(cycle)
        path.append(nxt)


def _reached(graph: Graph, outputs: dict[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    todo = [n for n, node in graph.nodes.items() if node.kind == "source"]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(outputs[n])
    return seen


def _fusible(node: CompiledNode) -> bool:
    o = node.options
    return (
        node.kind in ("map", "filter") and o["pure"] and o["parallelism"] == 1 and o["rate"] is None
    )


def _stages(order: list[str], nodes: dict[str, CompiledNode]) -> list[list[str]]:
    # a pure map/filter with parallelism 1 joins its one input's stage when that input is
    # such a node too and it is that input's only output
    stages: list[list[str]] = []
    stage_of: dict[str, list[str]] = {}
    for name in order:
        node = nodes[name]
        if _fusible(node) and len(node.inputs) == 1:
            up = nodes[node.inputs[0]]
            if _fusible(up) and len(up.outputs) == 1:
                stage = stage_of[up.name]
                stage.append(name)
                stage_of[name] = stage
                continue
        stage = [name]
        stages.append(stage)
        stage_of[name] = stage
    return stages


def compile(graph: Graph, fuse: bool = True) -> Plan:
    """Check ``graph`` and compile it into a :class:`Plan` (``FlowAdapter().compile``)."""
    return FlowAdapter(fuse=fuse).compile(graph)
