"""The graph model: nodes (source, map, filter, accumulate, sink), their options and
the edges between them. Nothing is checked across nodes until ``flow.compile``; a
node's own name and options are checked when it is added."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from framebus.envelope import MSGPACK, OCTET_STREAM

from .errors import FlowError

__all__ = ["KINDS", "Graph", "Node", "callable_name", "resolve_callable"]

KINDS = ("source", "map", "filter", "accumulate", "sink")
ON_DEADLINE = ("count", "drop")
OVERFLOW = ("block", "drop", "drop_oldest")
CONTENT_TYPES = (MSGPACK, OCTET_STREAM)
_NAME = re.compile(r"[A-Za-z0-9_-]+\Z")

# The options each kind takes, with their defaults.
_DEFAULTS: dict[str, Any] = {
    "deadline": None,
    "on_deadline": "count",
    "retries": 0,
    "backoff": 0.0,
    "rate": None,
    "parallelism": 1,
    "pure": True,
    "overflow": "block",
    "window": 64,
    "count": None,
    "size": None,
    "ttl": None,
    "until": None,
    "content_type": None,
    "restart": False,
    "resumable": False,
}
_PORTED = ("deadline", "on_deadline", "rate", "parallelism", "overflow", "window")
_CALLS = ("retries", "backoff")
OPTIONS: dict[str, tuple[str, ...]] = {
    "source": ("deadline", "rate", "content_type", "resumable"),
    "map": (*_PORTED, *_CALLS, "pure", "content_type", "restart"),
    "filter": (*_PORTED, *_CALLS, "pure", "restart"),
    "accumulate": (*_PORTED, "count", "size", "ttl", "until"),
    "sink": (*_PORTED, *_CALLS, "restart"),
}


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_option(node: str, key: str, value: Any) -> None:
    def bad(expected: str) -> FlowError:
        return FlowError(f"node {node!r}: option {key}={value!r} is invalid: expected {expected}")

    if key in ("deadline", "rate", "ttl"):
        if value is not None and not (_is_number(value) and value > 0):
            raise bad("a number > 0 (seconds)" if key != "rate" else "a number > 0 (items/s)")
    elif key == "backoff":
        if not (_is_number(value) and value >= 0):
            raise bad("a number >= 0 (seconds)")
    elif key == "retries":
        if not (_is_int(value) and value >= 0):
            raise bad("an int >= 0")
    elif key in ("parallelism", "window"):
        if not (_is_int(value) and value >= 1):
            raise bad("an int >= 1")
    elif key in ("count", "size"):
        if value is not None and not (_is_int(value) and value >= 1):
            raise bad("an int >= 1 or None")
    elif key == "on_deadline":
        if value not in ON_DEADLINE:
            raise bad(" or ".join(repr(v) for v in ON_DEADLINE))
    elif key == "overflow":
        if value not in OVERFLOW:
            raise bad(", ".join(repr(v) for v in OVERFLOW))
    elif key in ("pure", "restart", "resumable"):
        if not isinstance(value, bool):
            raise bad("True or False")
    elif key == "content_type":
        if value is not None and value not in CONTENT_TYPES:
            raise bad(" or ".join(repr(v) for v in CONTENT_TYPES))
    elif key == "until":
        if value is not None and not (callable(value) or isinstance(value, str)):
            raise bad('a callable, "module:qualname" or None')


def callable_name(fn: Any) -> str:
    """``"module:qualname"`` of a callable (as given, for a string)."""
    if isinstance(fn, str):
        return fn
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{qualname}"


def resolve_callable(spec: Any, what: str) -> Callable[..., Any]:
    """The callable ``spec`` names: a callable itself, or ``"module:qualname"`` imported
    now. ``what`` (e.g. "node 'parse'") starts the FlowError's message."""
    name = spec if isinstance(spec, str) else callable_name(spec)
    if isinstance(spec, str):
        module_name, sep, qualname = spec.partition(":")
        if not sep or not module_name or not qualname:
            raise FlowError(f'{what}: callable {spec!r} is not of the form "module:qualname"')
        try:
            obj: Any = importlib.import_module(module_name)
        except Exception as exc:  # ImportError and whatever the module raises
            raise FlowError(f"{what}: cannot import {spec!r}: {exc!r}") from exc
        for part in qualname.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError as exc:
                raise FlowError(
                    f"{what}: cannot import {spec!r}: {module_name} has no {qualname!r}"
                ) from exc
        spec = obj
    if not callable(spec):
        raise FlowError(f"{what}: {name!r} is not callable ({spec!r})")
    return spec  # type: ignore[no-any-return]


class Node:
    """One node of a graph. ``a >> b`` connects a to b and returns b, so chains read
    ``src >> m >> f >> k``; the right-hand side may be a node or a node's name."""

    __slots__ = ("graph", "name", "kind", "fn", "options")

    def __init__(
        self, graph: Graph, name: str, kind: str, fn: Any, options: dict[str, Any]
    ) -> None:
        self.graph = graph
        self.name = name
        self.kind = kind
        self.fn = fn
        self.options = options

    def __rshift__(self, other: Node | str) -> Node:
        self.graph.connect(self, other)
        return self.graph.node(other.name if isinstance(other, Node) else other)

    def __repr__(self) -> str:
        return f"<flow.Node {self.kind} {self.name!r}>"


class Graph:
    """A dataflow graph: add nodes with ``source``/``map``/``filter``/``accumulate``/
    ``sink``, connect them with ``>>`` or ``connect``, run it with
    ``flow.compile(graph).run()``. Nodes and edges keep their declaration order, which
    the sync engine follows."""

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise FlowError(f"graph name {name!r} is invalid: expected letters, digits, _ or -")
        self.name = name
        self.nodes: dict[str, Node] = {}
        self.edges: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return f"<flow.Graph {self.name!r}: {len(self.nodes)} nodes, {len(self.edges)} edges>"

    def add(self, name: str, kind: str, fn: Any = None, **options: Any) -> Node:
        """Add a node of ``kind`` (one of KINDS); the methods below call this."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise FlowError(f"node name {name!r} is invalid: expected letters, digits, _ or -")
        if name in self.nodes:
            raise FlowError(f"node {name!r}: duplicate name")
        if kind not in KINDS:
            raise FlowError(f"node {name!r}: unknown kind {kind!r}; expected one of {KINDS}")
        if kind == "accumulate":
            if fn is not None:
                raise FlowError(f"node {name!r}: an accumulate node takes no callable")
        elif fn is None:
            raise FlowError(f"node {name!r}: a {kind} node needs a callable")
        allowed = OPTIONS[kind]
        for key, value in options.items():
            if key not in allowed:
                raise FlowError(
                    f"node {name!r}: unknown option {key!r} for a {kind} node; "
                    f"expected one of {', '.join(allowed)}"
                )
            _check_option(name, key, value)
        full = {key: options.get(key, _DEFAULTS[key]) for key in allowed}
        node = Node(self, name, kind, fn, full)
        self.nodes[name] = node
        return node

    def source(self, name: str, fn: Any, **options: Any) -> Node:
        """``fn()`` returns an iterable or an async iterable of items (``fn`` may be an
        ``async def`` or an async generator function). With ``resumable=True`` it is
        called ``fn(resume=n)`` and yields the items from position ``n`` on: ``n`` is
        how many it yielded in earlier runs of the same ``wal`` (0 without one)."""
        return self.add(name, "source", fn, **options)

    def map(self, name: str, fn: Any, **options: Any) -> Node:
        """``fn(item)`` returns the item to pass on; ``async def`` allowed."""
        return self.add(name, "map", fn, **options)

    def filter(self, name: str, fn: Any, **options: Any) -> Node:
        """``fn(item)`` is true for the items to pass on; ``async def`` allowed."""
        return self.add(name, "filter", fn, **options)

    def accumulate(
        self,
        name: str,
        count: int | None = None,
        size: int | None = None,
        ttl: float | None = None,
        until: Any = None,
        **options: Any,
    ) -> Node:
        """Collect items and pass them on as lists: when ``count`` are held, when their
        ``size`` (the sum of ``len(item)``) reaches ``size``, when the oldest held is
        older than ``ttl`` seconds, when ``until(held_list)`` is true, and at the end of
        the input (a partial list)."""
        return self.add(
            name, "accumulate", None, count=count, size=size, ttl=ttl, until=until, **options
        )

    def sink(self, name: str, fn: Any, **options: Any) -> Node:
        """``fn(item)`` consumes each item; ``async def`` allowed."""
        return self.add(name, "sink", fn, **options)

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise FlowError(f"graph {self.name!r} has no node {name!r}") from None

    def connect(self, src: Node | str, dst: Node | str) -> None:
        """Add the edge src -> dst (nodes or names; names may be added later, they are
        checked by compile)."""
        a: object = src.name if isinstance(src, Node) else src
        b: object = dst.name if isinstance(dst, Node) else dst
        for end in (a, b):
            if not isinstance(end, str):  # neither a Node nor a name
                raise FlowError(f"edge {a!r} -> {b!r}: an end is not a node or a name")
        for end in (src, dst):
            if isinstance(end, Node) and end.graph is not self:
                raise FlowError(f"edge {a!r} -> {b!r}: node {end.name!r} is of another graph")
        assert isinstance(a, str) and isinstance(b, str)
        if (a, b) in self.edges:
            raise FlowError(f"edge {a!r} -> {b!r}: duplicate edge")
        self.edges.append((a, b))
