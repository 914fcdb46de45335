"""framebus.flow: dataflow graphs on framebus.

```python
from framebus import flow

g = flow.Graph("ingest")
src = g.source("gen", make_items)            # make_items() -> iterable / async iterable
src >> g.map("parse", parse) >> g.filter("valid", is_valid) \
    >> g.accumulate("batch", count=100, ttl=0.05) >> g.sink("store", store)
plan = flow.compile(g)                       # checks, fusion, manifests/routes/schemas
report = plan.run(runtime="sync")            # flow.Report
print(report)
```

``flow.load(path)`` reads a graph from YAML or JSON. The sync runtime
(:mod:`framebus.flow.sync`) is the reference semantics; ``runtime="inproc"``
(:mod:`framebus.flow.inproc`) runs the stages on threads with DataPorts between them;
``runtime="ipc"`` (:mod:`framebus.flow.ipc`) runs them in worker processes on a shared
bus. Nothing below this package imports it.

Durable runs: ``plan.run(runtime="ipc", wal=DIR)`` keeps the run's frames in a
write-ahead log in ``DIR``; a run killed (even SIGKILL of every process) and started
again with the same ``wal`` hands on again what its stages had not committed, so
nothing is lost (at least once: an item may arrive twice). A source declared with
``resumable=True`` is called ``fn(resume=n)``, ``n`` being how many of its items
earlier runs of that ``wal`` stored (0 in a first run, and without a ``wal``), and
yields from there on; other sources are called ``fn()`` and start over.
"""

from __future__ import annotations

from .accumulate import Accumulator
from .clock import ManualClock
from .compile import RUNTIMES, FlowAdapter, Plan, compile
from .errors import FlowError
from .graph import KINDS, Graph, Node
from .inproc import AsyncEngine, InprocEngine
from .ipc import IpcEngine
from .load import load
from .report import DeadLetter, NodeStats, Report
from .sync import SyncEngine

__all__ = [
    "KINDS",
    "RUNTIMES",
    "Accumulator",
    "AsyncEngine",
    "DeadLetter",
    "FlowAdapter",
    "FlowError",
    "Graph",
    "InprocEngine",
    "IpcEngine",
    "ManualClock",
    "Node",
    "NodeStats",
    "Plan",
    "Report",
    "SyncEngine",
    "compile",
    "load",
]
