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

Not here yet: the WAL flush duration and batch size histograms, the batch flush and
send duration histograms, batch memory, deadline misses, DataPort credits and
WouldBlock counts, EventBus requests and timeouts. They come with the layers that
produce them (Envelope deadlines, DataPort, EventBus, WAL timing in the header).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

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
        # families without samples (no WAL, no live bus) are left out of the scrape
        return iter([f for f in families if f.samples])


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
