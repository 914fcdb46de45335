"""Graphs from files: ``flow.load(path)`` reads YAML (``.yaml``, ``.yml``) or JSON::

    name: ingest
    nodes:
      - {name: gen, kind: source, fn: "mypkg.flows:make_items"}
      - {name: parse, kind: map, fn: "mypkg.flows:parse", options: {retries: 2}}
      - {name: batch, kind: accumulate, options: {count: 100, ttl: 0.05}}
      - {name: store, kind: sink, fn: "mypkg.flows:store"}
    edges: [[gen, parse], [parse, batch], {src: batch, dst: store}]

Accumulate nodes take no ``fn`` (their ``until`` option may name one). The graph is
checked as ``flow.compile`` checks it, callables imported; every problem raises a
FlowError naming the file and the node or edge.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .errors import FlowError
from .graph import KINDS, Graph

__all__ = ["load"]

_NODE_FIELDS = ("name", "kind", "fn", "options")


def _read(path: str) -> Any:
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".yaml", ".yml", ".json"):
        raise FlowError(f"{path}: unknown graph file type {ext!r}; expected .yaml, .yml or .json")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise FlowError(f"{path}: no such file") from None
    except OSError as exc:
        raise FlowError(f"{path}: cannot read: {exc}") from exc
    try:
        if ext == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise FlowError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from exc
    except (ValueError, ImportError) as exc:
        raise FlowError(f"{path}: not valid {ext[1:].upper()}: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError: one line, naming the line
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise FlowError(f"{path}: {where}not valid YAML: {problem}") from exc


def _build(path: str, doc: Any) -> Graph:
    if not isinstance(doc, dict):
        raise FlowError(f"{path}: expected a mapping with name, nodes and edges")
    unknown = sorted(set(doc) - {"name", "nodes", "edges"})
    if unknown:
        raise FlowError(f"{path}: unknown field {unknown[0]!r}; expected name, nodes, edges")
    if "name" not in doc:
        raise FlowError(f"{path}: missing field 'name'")
    graph = Graph(doc["name"])
    nodes = doc.get("nodes")
    if not isinstance(nodes, list):
        raise FlowError(f"{path}: 'nodes' must be a list")
    for i, spec in enumerate(nodes):
        if not isinstance(spec, dict):
            raise FlowError(f"{path}: nodes[{i}] must be a mapping")
        name = spec.get("name")
        where = f"node {name!r}" if name is not None else f"nodes[{i}]"
        extra = sorted(set(spec) - set(_NODE_FIELDS))
        if extra:
            raise FlowError(
                f"{where}: unknown field {extra[0]!r}; expected " + ", ".join(_NODE_FIELDS)
            )
        if name is None:
            raise FlowError(f"{where}: missing field 'name'")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise FlowError(f"{where}: bad kind {kind!r}; expected one of {', '.join(KINDS)}")
        fn = spec.get("fn")
        if kind != "accumulate" and not isinstance(fn, str):
            raise FlowError(f'{where}: field fn must be a "module:function" string, not {fn!r}')
        if kind == "accumulate" and fn is not None:
            raise FlowError(f"{where}: an accumulate node takes no fn")
        options = spec.get("options") or {}
        if not isinstance(options, dict):
            raise FlowError(f"{where}: field options must be a mapping")
        graph.add(name, kind, fn, **options)
    edges = doc.get("edges", [])
    if not isinstance(edges, list):
        raise FlowError(f"{path}: 'edges' must be a list")
    for i, e in enumerate(edges):
        if isinstance(e, dict) and set(e) == {"src", "dst"}:
            graph.connect(e["src"], e["dst"])
        elif isinstance(e, (list, tuple)) and len(e) == 2:
            graph.connect(e[0], e[1])
        else:
            raise FlowError(f"edges[{i}]: expected [src, dst] or {{src, dst}}, not {e!r}")
    return graph


def load(path: str | os.PathLike[str]) -> Graph:
    """The graph in the YAML or JSON file ``path``, checked (see the module docstring)."""
    from .compile import FlowAdapter

    path = os.fspath(path)
    doc = _read(path)
    try:
        graph = _build(path, doc)
        FlowAdapter().compile(graph)  # every check, callables imported
    except FlowError as exc:
        msg = str(exc)
        raise FlowError(msg if msg.startswith(path) else f"{path}: {msg}") from exc
    return graph
