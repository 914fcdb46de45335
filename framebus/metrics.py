"""Prometheus metrics for framebus buses.

A ``prometheus_client`` collector that reads ``bus.stats()`` (the counters kept in
the ring header, plus the WAL's state) when it is scraped; nothing is updated per
frame in Python, so registering costs nothing on the publish path. ``serve()``
writes the framebus families' text itself (``FrameBusCollector.text``) and every other
collector of the registry through ``text_exposition``, prometheus_client's text
format byte for byte.

```python
import framebus.metrics

framebus.metrics.register(bus)                  # bus label: shared name, or "bus0", ...
server = framebus.metrics.serve(9464)           # http://127.0.0.1:9464/metrics
...
server.close()
```

Every metric has a ``bus`` label. A closed (or garbage-collected) bus disappears from
the scrape. One collector per registry holds all its buses, so each metric family is
exposed once however many buses are registered.

Histograms are kept per batch, never per frame, in the process that does the work:
``framebus_batch_size_frames``, ``framebus_batch_memory_bytes`` and
``framebus_batch_send_seconds`` describe this process's ``publish_batch`` calls (frames,
payload bytes, duration including any wait for room); ``framebus_wal_flush_seconds``
(one RocksDB write, and its fsync with ``wal_sync``: the WAL writer's batch flush) and
``framebus_wal_batch_frames`` are kept by the WAL writer, in the process that created
the bus. Bucket bounds are powers of four; a histogram with no observation yet is
left out of the scrape.

Flow-layer API (ports): ``framebus_deadline_misses`` (envelopes received past their deadline, every
process of the bus), per DataPort of this process ``framebus_dataport_credits`` (the
shared pool), ``framebus_dataport_held_credits``, ``framebus_dataport_sent_frames``,
``framebus_dataport_received_frames``, ``framebus_dataport_would_block`` and
``framebus_dataport_callback_errors``, and per EventBus of this process
``framebus_eventbus_requests``, ``framebus_eventbus_timeouts``,
``framebus_eventbus_no_responders``, ``framebus_eventbus_published``,
``framebus_eventbus_replies`` and ``framebus_eventbus_handler_errors``.

Flow runs (``plan.run(runtime="inproc", metrics=True)``, or ``runtime="ipc"``,
registers its run with ``register_flow`` while it is live): ``framebus_flow_items``
(labels graph, node, direction in/out), ``framebus_flow_errors`` and
``framebus_flow_deadline_misses`` (graph, node; node ``""`` for the end-to-end misses
counted at the sinks) and ``framebus_flow_latency_seconds`` (end-to-end latency per
graph and sink node). This module knows a flow run only as an object with
``snapshot()``; it never imports the flow layer.
"""

from __future__ import annotations

import functools
import gzip
import re
import select
import socket
import threading
import weakref
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder, generate_latest, gzip_accepted
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from .bus import FrameBus
from .errors import BusClosed

__all__ = [
    "FrameBusCollector",
    "MetricsServer",
    "register",
    "register_flow",
    "serve",
    "text_exposition",
    "unregister",
    "unregister_flow",
]

# (stats key, metric name, help, kind); counters get "_total" from prometheus_client
_SIMPLE: tuple[tuple[str, str, str, str], ...] = (
    ("published", "framebus_published_frames", "Frames published.", "counter"),
    ("published_bytes", "framebus_published_bytes", "Payload bytes published.", "counter"),
    ("ring_used", "framebus_ring_used_frames", "Frames held in the ring.", "gauge"),
    (
        "ring_used_bytes",
        "framebus_ring_used_bytes",
        "Ring bytes held (headers, payloads, padding).",
        "gauge",
    ),
    ("capacity", "framebus_ring_capacity_frames", "Ring capacity in frames.", "gauge"),
    ("capacity_bytes", "framebus_ring_capacity_bytes", "Ring data area in bytes.", "gauge"),
    ("paused", "framebus_paused", "1 while the bus is paused (hysteresis).", "gauge"),
    (
        "unblocked",
        "framebus_unblocked_claims",
        "Claimed records skipped because their producer never committed them.",
        "counter",
    ),
    (
        "evicted",
        "framebus_evicted_readers",
        "Subscriptions (or groups) of dead processes evicted.",
        "counter",
    ),
    (
        "lapped",
        "framebus_lapped_readers",
        "Times a subscription fell a whole ring behind (overwrite mode) and skipped ahead.",
        "counter",
    ),
    ("readers", "framebus_readers", "Reader slots in use.", "gauge"),
    ("topics", "framebus_topics", "Topics interned in the topic table.", "gauge"),
    (
        "callback_errors",
        "framebus_callback_errors",
        "on_pause/on_resume callbacks that raised (this process).",
        "counter",
    ),
    ("wal_bytes", "framebus_wal_bytes", "Bytes in the write-ahead log.", "gauge"),
    (
        "wal_lag",
        "framebus_wal_lag_frames",
        "Frames published but not yet durable in the WAL.",
        "gauge",
    ),
    ("wal_degraded", "framebus_wal_degraded", "1 while the WAL writer is degraded.", "gauge"),
    (
        "wal_durable_seq",
        "framebus_wal_durable_seq",
        "Highest sequence number durable in the WAL.",
        "gauge",
    ),
    (
        "wal_corrupt",
        "framebus_wal_corrupt_records",
        "Damaged WAL records found.",
        "counter",
    ),
    (
        "deadline_misses",
        "framebus_deadline_misses",
        "Envelopes received after their deadline_ns (all processes of the bus).",
        "counter",
    ),
)

# stats()["histograms"] key, metric name, help, scale (ns -> s)
_HISTOGRAMS: tuple[tuple[str, str, str, float], ...] = (
    (
        "batch_frames",
        "framebus_batch_size_frames",
        "Frames per publish_batch call (this process).",
        1.0,
    ),
    (
        "batch_bytes",
        "framebus_batch_memory_bytes",
        "Payload bytes per publish_batch call (this process).",
        1.0,
    ),
    (
        "batch_ns",
        "framebus_batch_send_seconds",
        "Duration of publish_batch calls, waits for room included (this process).",
        1e-9,
    ),
    (
        "wal_flush_ns",
        "framebus_wal_flush_seconds",
        "WAL batch flush: one RocksDB write (and fsync with wal_sync).",
        1e-9,
    ),
    (
        "wal_batch_frames",
        "framebus_wal_batch_frames",
        "Frames per WAL batch.",
        1.0,
    ),
)

# the families with labels beyond "bus": name, kind, help, label names
_FIXED: tuple[tuple[str, str, str, list[str]], ...] = (
    (
        "framebus_dropped_frames",
        "counter",
        "Frames dropped for want of room (overflow='drop').",
        ["bus", "reason"],
    ),
    ("framebus_pause_transitions", "counter", "Hysteresis transitions.", ["bus", "direction"]),
    (
        "framebus_subscription_backlog_frames",
        "gauge",
        "Frames waiting for a subscription of this process (the most behind of "
        "subscriptions with the same filter and group).",
        ["bus", "filter", "group"],
    ),
    (
        "framebus_subscription_lagged_frames",
        "counter",
        "Frames a subscription of this process lost by being lapped (overwrite mode).",
        ["bus", "filter", "group"],
    ),
)

# DataPort stats key, metric name, help, kind
_PORT: tuple[tuple[str, str, str, str], ...] = (
    ("available", "framebus_dataport_credits", "Credits granted and not yet taken.", "gauge"),
    ("held", "framebus_dataport_held_credits", "Credits this handle holds.", "gauge"),
    ("sent", "framebus_dataport_sent_frames", "Frames sent through the port.", "counter"),
    ("received", "framebus_dataport_received_frames", "Frames the port received.", "counter"),
    (
        "would_block",
        "framebus_dataport_would_block",
        "Sends and credit requests refused with WouldBlock.",
        "counter",
    ),
    (
        "callback_errors",
        "framebus_dataport_callback_errors",
        "on_frame callbacks that raised.",
        "counter",
    ),
)

_EVENTS: tuple[tuple[str, str, str], ...] = (
    ("requests", "framebus_eventbus_requests", "Requests sent."),
    ("timeouts", "framebus_eventbus_timeouts", "Requests that got no reply in time."),
    ("no_responders", "framebus_eventbus_no_responders", "Requests that found no responder."),
    ("published", "framebus_eventbus_published", "Events published."),
    ("replies", "framebus_eventbus_replies", "Replies sent by this process's handlers."),
    ("handler_errors", "framebus_eventbus_handler_errors", "Event handlers that raised."),
)


# flow families: name, kind, help, label names
_FLOW: tuple[tuple[str, str, str, list[str]], ...] = (
    (
        "framebus_flow_items",
        "counter",
        "Items into and out of a flow node.",
        ["graph", "node", "direction"],
    ),
    (
        "framebus_flow_errors",
        "counter",
        "Failed calls of a flow node (each attempt).",
        ["graph", "node"],
    ),
    (
        "framebus_flow_deadline_misses",
        "counter",
        'Items past their deadline at a flow node (node "": end to end, at the sinks).',
        ["graph", "node"],
    ),
    (
        "framebus_flow_latency_seconds",
        "histogram",
        "End-to-end latency of items reaching a flow sink.",
        ["graph", "node"],
    ),
)


class FrameBusCollector(Collector):
    """Exposes the registered buses of one registry; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # the weakref callback may run inside add()
        # id(bus) -> (weak ref, bus label); weak so an unclosed, dropped bus can go
        self._buses: dict[int, tuple[weakref.ref[FrameBus], str]] = {}
        self._count = 0  # registrations so far: default labels are never reused
        self._flows: dict[int, weakref.ref[Any]] = {}  # live flow runs (snapshot())

    def add_flow(self, run: Any) -> None:
        if not callable(getattr(run, "snapshot", None)):
            raise TypeError(f"expected an object with snapshot(), not {type(run).__name__}")
        with self._lock:
            key = id(run)

            def forget(_ref: object, key: int = key) -> None:
                with self._lock:
                    self._flows.pop(key, None)

            self._flows[key] = weakref.ref(run, forget)

    def remove_flow(self, run: Any) -> None:
        with self._lock:
            self._flows.pop(id(run), None)

    def _flow_snapshots(self) -> list[dict[str, Any]]:
        with self._lock:
            runs = [ref() for ref in self._flows.values()]
        return [run.snapshot() for run in runs if run is not None]

    def add(self, bus: FrameBus, name: str | None = None) -> None:
        if not isinstance(bus, FrameBus):
            raise TypeError(f"expected a FrameBus, not {type(bus).__name__}")
        with self._lock:
            if self._ref_of(bus) is not None:
                raise ValueError(f"this bus is already registered as {self._label_of(bus)!r}")
            if name is None:
                name = bus.name if bus.name is not None else f"bus{self._count}"
            elif not isinstance(name, str) or not name:
                raise ValueError(f"name must be a non-empty str, got {name!r}")
            if any(label == name for _, label in self._buses.values()):
                raise ValueError(f"a bus labelled {name!r} is already registered")
            self._count += 1
            key = id(bus)

            def forget(_ref: object, key: int = key) -> None:
                with self._lock:
                    self._buses.pop(key, None)

            self._buses[key] = (weakref.ref(bus, forget), name)

    def remove(self, bus: FrameBus) -> None:
        with self._lock:
            if self._ref_of(bus) is None:
                raise ValueError("this bus is not registered")
            del self._buses[id(bus)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._buses)

    def _ref_of(self, bus: FrameBus) -> weakref.ref[FrameBus] | None:
        entry = self._buses.get(id(bus))
        # a dead ref under a reused id is another object's
        return entry[0] if entry is not None and entry[0]() is bus else None

    def _label_of(self, bus: FrameBus) -> str:
        return self._buses[id(bus)][1]

    def describe(self) -> Iterator[Metric]:
        # every family this collector can expose (with no samples), so the registry
        # knows the names: duplicates are refused at registration, and ?name[]= works
        kinds = [(name, kind, doc) for _, name, doc, kind in _SIMPLE]
        kinds += [(name, kind, doc) for name, kind, doc, _ in _FIXED]
        kinds += [(name, "histogram", doc) for _, name, doc, _ in _HISTOGRAMS]
        kinds += [(name, kind, doc) for _, name, doc, kind in _PORT]
        kinds += [(name, "counter", doc) for _, name, doc in _EVENTS]
        kinds += [(name, kind, doc) for name, kind, doc, _ in _FLOW]
        families: list[Metric] = []
        for name, kind, doc in kinds:
            cls = {
                "counter": CounterMetricFamily,
                "gauge": GaugeMetricFamily,
                "histogram": HistogramMetricFamily,
            }[kind]
            families.append(cls(name, doc, labels=[]))
        return iter(families)

    def _snapshots(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            entries = [(ref(), label) for ref, label in self._buses.values()]
        snapshots: list[tuple[str, dict[str, Any]]] = []
        for bus, label in entries:
            if bus is None or bus.closed:
                continue
            try:
                snapshots.append((label, bus.stats()))
            except BusClosed:
                continue  # closed by another thread since the check
        return snapshots

    def collect(self) -> Iterator[Metric]:
        if getattr(_rendering, "collector", None) is self:
            return iter(())  # serve() writes this collector's text itself
        families: list[Metric] = []
        for name, kind, doc, labelnames, samples in _specs(
            self._snapshots(), self._flow_snapshots()
        ):
            fam: Metric
            if kind == "histogram":
                fam = HistogramMetricFamily(name, doc, labels=labelnames)
                for values, buckets, total in samples:
                    fam.add_metric(values, buckets, total)
            else:
                cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                fam = cls(name, doc, labels=labelnames)
                for values, value in samples:
                    fam.add_metric(values, value)
            families.append(fam)
        return iter(families)

    def text(self) -> str:
        """This collector's part of a scrape in the text format, written directly from
        the buses' stats (what text_exposition makes of collect(), without building
        prometheus_client objects: a scrape holds the GIL for less time)."""
        out: list[str] = []
        for name, kind, doc, labelnames, samples in _specs(
            self._snapshots(), self._flow_snapshots()
        ):
            full = name + "_total" if kind == "counter" else name
            out.append(_header(full, kind, doc))
            if kind == "histogram":
                for values, buckets, total in samples:
                    labels = ",".join(
                        f'{k}="{_esc(v)}"' for k, v in zip(labelnames, values, strict=True)
                    )
                    for le, count in buckets:
                        out.append(f'{name}_bucket{{{labels},le="{le}"}} {_num(count)}\n')
                    out.append(f"{name}_count{{{labels}}} {_num(buckets[-1][1])}\n")
                    out.append(f"{name}_sum{{{labels}}} {_num(total)}\n")
            else:
                for values, value in samples:
                    labels = ",".join(
                        f'{k}="{_esc(v)}"' for k, v in zip(labelnames, values, strict=True)
                    )
                    out.append(f"{full}{{{labels}}} {_num(value)}\n")
        return "".join(out)


_rendering = threading.local()  # the collector whose text serve() is writing


@functools.lru_cache(maxsize=256)
def _header(name: str, kind: str, doc: str) -> str:
    return f"# HELP {name} {_esc_doc(doc)}\n# TYPE {name} {kind}\n"


def _esc(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _esc_doc(doc: str) -> str:
    return doc.replace("\\", r"\\").replace("\n", r"\n")


def _num(value: float) -> str:
    # floatToGoString gives repr() for every finite value below 1e6 (Go switches to
    # exponents above): the common case without its checks
    if -1e300 < value < 1e6:
        return repr(value)
    return floatToGoString(value)  # type: ignore[no-any-return]


# (name, kind, help, label names, samples): samples are (label values, value), or for
# histograms (label values, [(le, cumulative count), ...], sum); label names sorted
Spec = tuple[str, str, str, list[str], list[Any]]


def _specs(
    snapshots: list[tuple[str, dict[str, Any]]], flows: list[dict[str, Any]] | None = None
) -> list[Spec]:
    """Every family with at least one sample (a scrape's cost grows with both)."""
    specs: list[Spec] = _flow_specs(flows) if flows else []
    for key, name, doc, kind in _SIMPLE:
        samples = [
            ([label], float(s[key]))
            for label, s in snapshots
            if s.get(key) is not None  # WAL keys: absent without a WAL, None when unknown
        ]
        if samples:
            specs.append((name, kind, doc, ["bus"], samples))
    if not snapshots:
        return specs
    dropped, transitions, backlog, lagged = [], [], [], []
    for label, s in snapshots:
        dropped.append(([label, "overflow"], float(s["dropped"])))
        transitions.append(([label, "pause"], float(s["pause_events"])))
        transitions.append(([label, "resume"], float(s["resume_events"])))
        for (filt, group), (back, lost) in _per_subscription(s["subscriptions"]).items():
            backlog.append(([label, filt, group], float(back)))
            lagged.append(([label, filt, group], float(lost)))
    for (name, kind, doc, labelnames), samples in zip(
        _FIXED, (dropped, transitions, backlog, lagged), strict=True
    ):
        if samples:
            specs.append((name, kind, doc, labelnames, samples))
    for key, name, doc, scale in _HISTOGRAMS:
        hists = []
        for label, s in snapshots:
            h = s.get("histograms", {}).get(key)
            if h is None or not any(h[1]):
                continue  # nothing observed yet: no series
            bounds, counts, total = h
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip(bounds, counts[:-1], strict=True):
                cumulative += n
                buckets.append((_bound_text(bound * scale), float(cumulative)))
            buckets.append(("+Inf", float(cumulative + counts[-1])))
            hists.append(([label], buckets, total * scale))
        if hists:
            specs.append((name, "histogram", doc, ["bus"], hists))
    if any(s.get("ports") for _, s in snapshots):
        for key, name, doc, kind in _PORT:
            samples = []
            for label, s in snapshots:
                totals: dict[str, float] = {}
                for port in s.get("ports", ()):
                    # several handles of one port in this process: one series
                    value = float(port[key])
                    if key == "available":
                        totals[port["name"]] = value  # the shared pool: the same for each
                    else:
                        totals[port["name"]] = totals.get(port["name"], 0.0) + value
                samples += [([label, port_name], v) for port_name, v in totals.items()]
            specs.append((name, kind, doc, ["bus", "port"], samples))
    events = [(label, s["events"]) for label, s in snapshots if s.get("events") is not None]
    if events:
        for key, name, doc in _EVENTS:
            specs.append(
                (name, "counter", doc, ["bus"], [([label], float(e[key])) for label, e in events])
            )
    return specs


def _flow_specs(flows: list[dict[str, Any]]) -> list[Spec]:
    items: list[Any] = []
    errors: list[Any] = []
    misses: list[Any] = []
    hists: list[Any] = []
    for f in flows:
        g = f["graph"]
        for node, s in f["nodes"].items():
            items.append(([g, node, "in"], float(s["items_in"])))
            items.append(([g, node, "out"], float(s["items_out"])))
            errors.append(([g, node], float(s["errors"])))
            misses.append(([g, node], float(s["deadline_misses"])))
        misses.append(([g, ""], float(f["e2e_deadline_misses"])))
        for node, (bounds, counts, total) in f["latency"].items():
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip(bounds, counts[:-1], strict=True):
                cumulative += n
                buckets.append((_bound_text(bound * 1e-9), float(cumulative)))
            buckets.append(("+Inf", float(cumulative + counts[-1])))
            hists.append(([g, node], buckets, total * 1e-9))
    specs: list[Spec] = []
    for (name, kind, doc, labelnames), samples in zip(
        _FLOW, (items, errors, misses, hists), strict=True
    ):
        if samples:
            specs.append((name, kind, doc, labelnames, samples))
    return specs


_bound_texts: dict[float, str] = {}


def _bound_text(bound: float) -> str:
    text = _bound_texts.get(bound)
    if text is None:
        text = _bound_texts[bound] = floatToGoString(bound)
    return text


def _per_subscription(subs: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    # One series per (filter, group): members of a group share one cursor (count it
    # once); separate subscriptions with the same filter: the most behind, all losses.
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for sub in subs:
        key = (sub["filter"], sub["group"] or "")
        back, lost = sub["backlog"], sub["lagged"]
        if key in out:
            prev_back, prev_lost = out[key]
            back = max(back, prev_back)
            lost = prev_lost if sub["group"] else prev_lost + lost
        out[key] = (back, lost)
    return out


# one collector per registry (a metric family may appear once per exposition)
_collectors: weakref.WeakKeyDictionary[CollectorRegistry, FrameBusCollector] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def _collector_of(reg: CollectorRegistry) -> FrameBusCollector:
    """The registry's one FrameBusCollector, registered on first use (under _lock)."""
    collector = _collectors.get(reg)
    if collector is None:
        collector = FrameBusCollector()
        reg.register(collector)
        _collectors[reg] = collector
    return collector


def register(
    bus: FrameBus, registry: CollectorRegistry | None = None, *, name: str | None = None
) -> FrameBusCollector:
    """Expose ``bus`` in ``registry`` (default ``prometheus_client.REGISTRY``).

    ``name`` is the ``bus`` label: by default the shared segment's name, or ``bus0``,
    ``bus1``, ... in registration order for in-process buses. Returns the registry's
    collector. Raises ``ValueError`` if the bus, or another bus with that label, is
    already registered there.
    """
    reg = REGISTRY if registry is None else registry
    with _lock:
        collector = _collector_of(reg)
        collector.add(bus, name)
        return collector


def unregister(bus: FrameBus, registry: CollectorRegistry | None = None) -> None:
    """Stop exposing ``bus`` in ``registry``; ``ValueError`` if it is not registered."""
    reg = REGISTRY if registry is None else registry
    with _lock:
        collector = _collectors.get(reg)
        if collector is None:
            raise ValueError("this bus is not registered")
        collector.remove(bus)


def register_flow(run: Any, registry: CollectorRegistry | None = None) -> FrameBusCollector:
    """Expose a live flow run (an object with ``snapshot()``; the inproc and ipc
    runtimes register themselves) in ``registry`` (default ``prometheus_client.REGISTRY``) until
    ``unregister_flow``."""
    reg = REGISTRY if registry is None else registry
    with _lock:
        collector = _collector_of(reg)
        collector.add_flow(run)
        return collector


def unregister_flow(run: Any, registry: CollectorRegistry | None = None) -> None:
    """Stop exposing a flow run (nothing happens if it is not exposed)."""
    reg = REGISTRY if registry is None else registry
    with _lock:
        collector = _collectors.get(reg)
        if collector is not None:
            collector.remove_flow(run)


class MetricsServer:
    """The HTTP server ``serve()`` started; ``close()`` (or ``with``) stops it."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    @property
    def address(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose when ``serve(0)``)."""
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5.0)  # it ends at once: shutdown wakes its select
        self.server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_LEGACY_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LEGACY_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")
_TYPE_MUNGE = {
    "info": ("_info", "gauge"),
    "stateset": ("", "gauge"),
    "gaugehistogram": ("", "histogram"),
    "unknown": ("", "untyped"),
}


def text_exposition(registry: Any) -> bytes:
    """The Prometheus text format (0.0.4) of ``registry``, byte for byte what
    ``prometheus_client.generate_latest`` writes, in a fraction of its time: the
    per-sample name and label checks are done once per name. Any family outside the
    plain case (names that need escaping, timestamps) goes to generate_latest."""
    families = list(registry.collect())
    out: list[str] = []
    valid: dict[str, bool] = {}

    def ok(name: str, pattern: re.Pattern[str] = _LEGACY_NAME) -> bool:
        key = name if pattern is _LEGACY_NAME else "{" + name
        v = valid.get(key)
        if v is None:
            v = valid[key] = pattern.fullmatch(name) is not None
        return v

    for metric in families:
        mname, mtype = metric.name, metric.type
        if mtype == "counter":
            mname += "_total"
        elif mtype in _TYPE_MUNGE:
            suffix, mtype = _TYPE_MUNGE[mtype]
            mname += suffix
        if not ok(mname):
            return generate_latest(_Families(families))
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {mname} {doc}\n# TYPE {mname} {mtype}\n")
        extra: dict[str, list[str]] = {}
        for sample in metric.samples:
            name, labels = sample.name, sample.labels
            if sample.timestamp is not None or not ok(name):
                return generate_latest(_Families(families))
            if labels:
                parts = []
                for k in sorted(labels):
                    if not ok(k, _LEGACY_LABEL):
                        return generate_latest(_Families(families))
                    v = labels[k].replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
                    parts.append(f'{k}="{v}"')
                line = f"{name}{{{','.join(parts)}}} {floatToGoString(sample.value)}\n"
            else:
                line = f"{name} {floatToGoString(sample.value)}\n"
            for suffix in _OM_SUFFIXES:
                if name == metric.name + suffix:
                    extra.setdefault(suffix, []).append(line)
                    break
            else:
                out.append(line)
        for suffix, lines in sorted(extra.items()):
            out.append(f"# HELP {metric.name}{suffix} {doc}\n# TYPE {metric.name}{suffix} gauge\n")
            out.extend(lines)
    return "".join(out).encode("utf-8")


class _Families:
    """Already collected families, as a collector (for generate_latest)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _text_scrape(registry: CollectorRegistry) -> bytes:
    # the framebus collector writes its own text; every other collector goes through
    # text_exposition (prometheus_client's format, byte for byte)
    ours = _collectors.get(registry)
    if ours is None:
        return text_exposition(registry)
    _rendering.collector = ours
    try:
        rest = text_exposition(registry)
    finally:
        _rendering.collector = None
    return ours.text().encode("utf-8") + rest


class _ScrapeServer:
    """A minimal HTTP/1.1 server for scrapes on one daemon thread: one request per
    connection, GET only. A scrape's whole cost is GIL time taken from the bus's
    threads; the http.server stack cost more than the exposition itself."""

    def __init__(self, addr: str, port: int, registry: CollectorRegistry) -> None:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((addr, port))
            self._sock.listen(16)
        except OSError:
            self._sock.close()
            raise
        self._registry = registry
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()  # ends the select at shutdown
        self.server_address = self._sock.getsockname()
        self.server_port: int = self.server_address[1]

    def serve_forever(self) -> None:
        while not self._stopping.is_set():
            ready, _, _ = select.select([self._sock, self._wake_r], [], [])
            if self._stopping.is_set():
                return
            if self._sock not in ready:
                continue
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            try:
                conn.settimeout(5.0)
                self._handle(conn)
            except OSError:
                pass  # the client went away
            finally:
                conn.close()

    def _handle(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(8192)
            if not chunk or len(data) > 65536:
                return
            data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        parts = head[0].split(" ")
        if len(parts) != 3:
            conn.sendall(_response("400 Bad Request", b"bad request line\n"))
            return
        method, target, _ = parts
        if method != "GET":
            conn.sendall(_response("405 Method Not Allowed", b"", [("Allow", "GET")]))
            return
        headers: dict[str, str] = {}
        for line in head[1:]:
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        params = parse_qs(urlparse(target).query)
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        if "name[]" in params:
            body = encoder(self._registry.restricted_registry(params["name[]"]))
        elif encoder is generate_latest:
            body = _text_scrape(self._registry)
        else:
            body = encoder(self._registry)
        extra = [("Content-Type", content_type)]
        if gzip_accepted(headers.get("accept-encoding", "")):
            body = gzip.compress(body)
            extra.append(("Content-Encoding", "gzip"))
        conn.sendall(_response("200 OK", body, extra))

    def shutdown(self) -> None:
        self._stopping.set()
        self._wake_w.send(b"x")

    def server_close(self) -> None:
        self._sock.close()
        self._wake_r.close()
        self._wake_w.close()


def _response(status: str, body: bytes, headers: list[tuple[str, str]] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers or ()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def serve(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` (default ``prometheus_client.REGISTRY``) over HTTP on a daemon
    thread, at ``/metrics`` (any path works; ``?name[]=...`` selects metrics, gzip when
    accepted). Port 0 picks a free port: see ``.port``. Listens on loopback unless
    ``addr`` says otherwise."""
    reg = REGISTRY if registry is None else registry
    server = _ScrapeServer(addr, port, reg)
    thread = threading.Thread(target=server.serve_forever, name="framebus-metrics", daemon=True)
    thread.start()
    return MetricsServer(server, thread)
