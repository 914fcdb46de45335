"""The report of a run: per node counts and times, end-to-end latency percentiles (an
HDR histogram) and the dead letters."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

__all__ = ["BUCKET_BOUNDS_NS", "PERCENTILES", "DeadLetter", "NodeStats", "Report"]

PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p99.9", 99.9))
# latencies from 1 ns to one hour, to 3 significant digits (values up to 2047 ns exact)
_LOWEST, _HIGHEST, _DIGITS = 1, 3_600_000_000_000, 3
# the buckets framebus.metrics exposes: 1 us, 4 us, 16 us, ... (powers of four), ~18 min
BUCKET_BOUNDS_NS = [1000 * 4**k for k in range(16)]


@dataclass
class DeadLetter:
    """An item a node gave up on: the node, the item, and the repr of the last error."""

    node: str
    item: Any
    error: str


@dataclass
class NodeStats:
    """One node's numbers. ``items_out``: items passed on (a filter's passed items, an
    accumulator's lists, a sink's items consumed without error). ``errors``: failed
    calls (each attempt); ``retries``: calls repeated; ``dead_letters``: items given up.
    ``dropped``: items dropped for a missed deadline, and (inproc) items a sender
    dropped on the way to the node for want of credit (``overflow`` drop modes).
    Times in ns by the run's clock: ``busy_ns`` in the node's callable, ``blocked_ns``
    waiting for downstream credit (0 in the sync runtime; inproc counts it on a
    stage's last node), ``throttled_ns`` waiting for its ``rate``. ``redelivered``
    (ipc, ``restart=True``): items handed again to the worker started in place of one
    that died."""

    kind: str
    stage: str
    items_in: int = 0
    items_out: int = 0
    errors: int = 0
    retries: int = 0
    dead_letters: int = 0
    deadline_misses: int = 0
    dropped: int = 0
    busy_ns: int = 0
    blocked_ns: int = 0
    throttled_ns: int = 0
    redelivered: int = 0  # ipc, restart=True: items handed again to a restarted worker
    flushes: dict[str, int] = field(default_factory=dict)  # accumulators: by reason


class Report:
    """What ``plan.run()`` returns. ``nodes``: name -> NodeStats; ``latency``: the HDR
    histogram of end-to-end latencies (ns from source emission to sink, by the clock),
    summarised by ``latency_ns()``; ``e2e_deadline_misses``: items reaching a sink past
    the deadline their source gave them; ``dead_letters``; ``print(report)`` shows a
    table, ``to_json()`` the same as JSON."""

    def __init__(self, graph: str, runtime: str, nodes: dict[str, NodeStats]) -> None:
        self.graph = graph
        self.runtime = runtime
        self.nodes = nodes
        self.latency = HdrHistogram(_LOWEST, _HIGHEST, _DIGITS)
        self._buckets = [0] * (len(BUCKET_BOUNDS_NS) + 1)
        self._sum_ns = 0
        self.e2e_deadline_misses = 0
        self.dead_letters: list[DeadLetter] = []
        self.duration_ns = 0
        self.timed_out = False

    def record_latency(self, ns: int) -> None:
        self.record_latency_n(ns, 1)

    def record_latency_n(self, ns: int, count: int) -> None:
        """Record ``count`` items of latency ``ns`` (a batch delivered together)."""
        ns = min(max(ns, _LOWEST), _HIGHEST)
        self.latency.record_value(ns, count)
        q = (ns + 999) // 1000  # in us, rounded up: the first bound >= ns is 4**k us
        k = ((q - 1).bit_length() + 1) // 2 if q > 1 else 0
        self._buckets[min(k, len(BUCKET_BOUNDS_NS))] += count
        self._sum_ns += ns * count

    def buckets(self) -> tuple[list[int], list[int], int]:
        """The latencies recorded, for Prometheus: (bounds in ns, counts per bucket
        with the count above the last bound last, sum in ns)."""
        return list(BUCKET_BOUNDS_NS), list(self._buckets), self._sum_ns

    def latency_ns(self) -> dict[str, int]:
        """count, min, max and p50/p95/p99/p99.9 of the end-to-end latency in ns (each
        to the histogram's precision: exact below 2048 ns, 0.1 % above); zeros when no
        item reached a sink."""
        h = self.latency
        count = h.get_total_count()
        out = {
            "count": count,
            "min": h.get_min_value() if count else 0,
            "max": h.get_max_value() if count else 0,
        }
        for key, p in PERCENTILES:
            out[key] = h.get_value_at_percentile(p) if count else 0
        return out

    @property
    def items_emitted(self) -> int:
        return sum(s.items_out for s in self.nodes.values() if s.kind == "source")

    @property
    def items_delivered(self) -> int:
        return sum(s.items_out for s in self.nodes.values() if s.kind == "sink")

    def to_dict(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "runtime": self.runtime,
            "duration_ns": self.duration_ns,
            "timed_out": self.timed_out,
            "items_emitted": self.items_emitted,
            "items_delivered": self.items_delivered,
            "e2e_deadline_misses": self.e2e_deadline_misses,
            "latency_ns": self.latency_ns(),
            "nodes": {name: asdict(s) for name, s in self.nodes.items()},
            "dead_letters": [
                {"node": d.node, "item": repr(d.item), "error": d.error} for d in self.dead_letters
            ],
        }

    def to_json(self, **kwargs: Any) -> str:
        """The report as a JSON string (items of dead letters as their repr)."""
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self) -> str:
        cols = (
            "node",
            "kind",
            "in",
            "out",
            "errors",
            "retries",
            "dead",
            "missed",
            "dropped",
            "busy_ms",
            "blocked_ms",
        )
        rows = [cols]
        for name, s in self.nodes.items():
            rows.append(
                (
                    name,
                    s.kind,
                    str(s.items_in),
                    str(s.items_out),
                    str(s.errors),
                    str(s.retries),
                    str(s.dead_letters),
                    str(s.deadline_misses),
                    str(s.dropped),
                    f"{s.busy_ns / 1e6:.3f}",
                    f"{s.blocked_ns / 1e6:.3f}",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        lines = [
            f"flow {self.graph!r} ({self.runtime}): {self.items_emitted} emitted, "
            f"{self.items_delivered} delivered in {self.duration_ns / 1e6:.3f} ms"
            + (" (timed out)" if self.timed_out else "")
        ]
        for r in rows:
            lines.append(
                "  ".join(
                    v.ljust(w) if i < 2 else v.rjust(w)
                    for i, (v, w) in enumerate(zip(r, widths, strict=True))
                ).rstrip()
            )
        lat = self.latency_ns()
        lines.append(
            f"latency (us): p50 {lat['p50'] / 1e3:.3f}  p95 {lat['p95'] / 1e3:.3f}  "
            f"p99 {lat['p99'] / 1e3:.3f}  p99.9 {lat['p99.9'] / 1e3:.3f}  "
            f"max {lat['max'] / 1e3:.3f}  (n={lat['count']})"
        )
        lines.append(
            f"end-to-end deadline misses: {self.e2e_deadline_misses}; "
            f"dead letters: {len(self.dead_letters)}"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"<flow.Report {self.graph!r} {self.runtime}: {self.items_emitted} emitted, "
            f"{self.items_delivered} delivered>"
        )
