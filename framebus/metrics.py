"""Prometheus metrics for framebus buses.

A ``prometheus_client`` collector that reads ``bus.stats()`` (the counters kept in
the ring header, plus the WAL's state) when it is scraped; nothing is updated per
frame in Python, so registering costs nothing on the publish path.

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
the bus. Buckets are powers of two.

Flow layer: ``framebus_deadline_misses`` (envelopes received past their deadline, every
process of the bus), per DataPort of this process ``framebus_dataport_credits`` (the
shared pool), ``framebus_dataport_held_credits``, ``framebus_dataport_sent_frames``,
``framebus_dataport_received_frames``, ``framebus_dataport_would_block`` and
``framebus_dataport_callback_errors``, and per EventBus of this process
``framebus_eventbus_requests``, ``framebus_eventbus_timeouts``,
``framebus_eventbus_no_responders``, ``framebus_eventbus_published``,
``framebus_eventbus_replies`` and ``framebus_eventbus_handler_errors``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, start_http_server
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

__all__ = ["FrameBusCollector", "MetricsServer", "register", "serve", "unregister"]

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


class FrameBusCollector(Collector):
    """Exposes the registered buses of one registry; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # the weakref callback may run inside add()
        # id(bus) -> (weak ref, bus label); weak so an unclosed, dropped bus can go
        self._buses: dict[int, tuple[weakref.ref[FrameBus], str]] = {}
        self._count = 0  # registrations so far: default labels are never reused

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
        # nothing: the families depend on which buses are live at scrape time
        return iter(())

    def collect(self) -> Iterator[Metric]:
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
        bus_l = ["bus"]
        families: list[Metric] = []
        for key, name, doc, kind in _SIMPLE:
            fam: GaugeMetricFamily | CounterMetricFamily
            if kind == "counter":
                fam = CounterMetricFamily(name, doc, labels=bus_l)
            else:
                fam = GaugeMetricFamily(name, doc, labels=bus_l)
            for label, s in snapshots:
                value = s.get(key)
                if value is not None:  # WAL keys: absent without a WAL, None when unknown
                    fam.add_metric([label], float(value))
            families.append(fam)
        dropped = CounterMetricFamily(
            "framebus_dropped_frames",
            "Frames dropped for want of room (overflow='drop').",
            labels=["bus", "reason"],
        )
        transitions = CounterMetricFamily(
            "framebus_pause_transitions",
            "Hysteresis transitions.",
            labels=["bus", "direction"],
        )
        backlog = GaugeMetricFamily(
            "framebus_subscription_backlog_frames",
            "Frames waiting for a subscription of this process (the most behind of "
            "subscriptions with the same filter and group).",
            labels=["bus", "filter", "group"],
        )
        lagged = CounterMetricFamily(
            "framebus_subscription_lagged_frames",
            "Frames a subscription of this process lost by being lapped (overwrite mode).",
            labels=["bus", "filter", "group"],
        )
        for label, s in snapshots:
            dropped.add_metric([label, "overflow"], s["dropped"])
            transitions.add_metric([label, "pause"], s["pause_events"])
            transitions.add_metric([label, "resume"], s["resume_events"])
            for (filt, group), (back, lost) in _per_subscription(s["subscriptions"]).items():
                backlog.add_metric([label, filt, group], back)
                lagged.add_metric([label, filt, group], lost)
        families += [dropped, transitions, backlog, lagged]
        families += _histogram_families(snapshots)
        families += _flow_families(snapshots)
        # families without samples (no WAL, no live bus) are left out of the scrape
        return iter([f for f in families if f.samples])


def _histogram_families(snapshots: list[tuple[str, dict[str, Any]]]) -> list[Metric]:
    out: list[Metric] = []
    for key, name, doc, scale in _HISTOGRAMS:
        fam = HistogramMetricFamily(name, doc, labels=["bus"])
        for label, s in snapshots:
            h = s.get("histograms", {}).get(key)
            if h is None:
                continue
            bounds, counts, total = h
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip(bounds, counts[:-1], strict=True):
                cumulative += n
                buckets.append((floatToGoString(bound * scale), cumulative))
            cumulative += counts[-1]
            buckets.append(("+Inf", cumulative))
            fam.add_metric([label], buckets, total * scale)
        out.append(fam)
    return out


def _flow_families(snapshots: list[tuple[str, dict[str, Any]]]) -> list[Metric]:
    out: list[Metric] = []
    for key, name, doc, kind in _PORT:
        fam: GaugeMetricFamily | CounterMetricFamily
        if kind == "counter":
            fam = CounterMetricFamily(name, doc, labels=["bus", "port"])
        else:
            fam = GaugeMetricFamily(name, doc, labels=["bus", "port"])
        for label, s in snapshots:
            totals: dict[str, float] = {}
            for port in s.get("ports", ()):
                # several handles of one port in this process: one series
                value = float(port[key])
                if key == "available":
                    totals[port["name"]] = value  # the shared pool: the same for each
                else:
                    totals[port["name"]] = totals.get(port["name"], 0.0) + value
            for port_name, value in totals.items():
                fam.add_metric([label, port_name], value)
        out.append(fam)
    for key, name, doc in _EVENTS:
        counter = CounterMetricFamily(name, doc, labels=["bus"])
        for label, s in snapshots:
            events = s.get("events")
            if events is not None:
                counter.add_metric([label], float(events[key]))
        out.append(counter)
    return out


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
        collector = _collectors.get(reg)
        if collector is None:
            collector = FrameBusCollector()
            reg.register(collector)
            _collectors[reg] = collector
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
        self.server.server_close()
        self.thread.join(5.0)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` (default ``prometheus_client.REGISTRY``) over HTTP on a daemon
    thread, at ``/metrics`` (any path works). Port 0 picks a free port: see ``.port``.
    Listens on loopback unless ``addr`` says otherwise."""
    reg = REGISTRY if registry is None else registry
    server, thread = start_http_server(port, addr=addr, registry=reg)
    return MetricsServer(server, thread)
