"""The ingestion example ``framebus demo`` runs (and ``examples/ingest.yaml`` names):
synthetic sensor readings -> parse -> validate -> accumulate (count and TTL) -> a sink
storing each batch as one frame on a WAL-backed bus, so the batches outlive the run.

The callables are importable by name ("framebus.flow.demo:parse", ...). The sink
``store`` writes under ``$FRAMEBUS_DEMO_DIR`` (default ``./framebus-data``): the WAL in
``wal/``, reused and appended to by every run; ``close_store()`` flushes and closes it
(also at interpreter exit). With the ipc runtime the sink runs in a worker process: the
WAL is opened there, on the first batch, in the directory the worker finds in
``$FRAMEBUS_DEMO_DIR`` (``framebus demo`` sets it for its workers), and closed when that
process exits (spawn, the default start method, runs the exit handlers)."""

from __future__ import annotations

import atexit
import os
import random
import threading
from collections.abc import Iterator
from typing import Any

import msgpack

from .graph import Graph

__all__ = [
    "BATCH_TOPIC",
    "DIR_ENV",
    "BatchStore",
    "close_store",
    "demo_graph",
    "parse",
    "sensor_readings",
    "store",
    "valid",
]

BATCH_TOPIC = "sensors.batches"
DIR_ENV = "FRAMEBUS_DEMO_DIR"  # where the sink writes, unless its directory is set
SENSORS = 64
LOW, HIGH = -40.0, 125.0  # the sensors' valid range, degrees Celsius


def sensor_readings(seed: int = 7) -> Iterator[bytes]:
    """Readings ``b"sensor=<id>,seq=<n>,value=<celsius>"``, without end: each sensor
    drifts around its own mean; about 1 % are glitches far out of range."""
    rng = random.Random(seed)
    means = [rng.uniform(10.0, 30.0) for _ in range(SENSORS)]
    n = 0
    while True:
        sensor = n % SENSORS
        value = means[sensor] + rng.gauss(0.0, 0.5)
        if rng.random() < 0.01:
            value = rng.choice((-273.15, 999.9))  # a glitch
        yield b"sensor=%d,seq=%d,value=%.2f" % (sensor, n, value)
        n += 1


def parse(line: bytes) -> tuple[int, int, float]:
    """``(sensor, seq, value)`` of a reading; ValueError for a malformed one."""
    sensor, seq, value = (field.partition(b"=")[2] for field in line.split(b","))
    return int(sensor), int(seq), float(value)


def valid(reading: tuple[int, int, float]) -> bool:
    return LOW <= reading[2] <= HIGH


class BatchStore:
    """A sink: each batch (a list of readings) becomes one msgpack frame on topic
    ``sensors.batches`` of a FrameBus with its WAL in ``<directory>/wal``, opened on
    the first batch (in the process that runs the sink)."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory
        self.bus: Any = None
        self.batches = 0
        self.lock = threading.Lock()

    def path(self) -> str:
        base = self.directory or os.environ.get(DIR_ENV) or "framebus-data"
        return os.path.join(base, "wal")

    def __call__(self, batch: list[Any]) -> None:
        with self.lock:
            if self.bus is None:
                from framebus.bus import FrameBus

                path = self.path()
                os.makedirs(path, exist_ok=True)
                self.bus = FrameBus(wal_dir=path)
                atexit.register(self.close)
            self.bus.publish(msgpack.packb(batch, use_bin_type=True), BATCH_TOPIC)
            self.batches += 1

    def close(self) -> None:
        """Flush the WAL and close the bus (a no-op when nothing was stored)."""
        with self.lock:
            if self.bus is not None:
                self.bus.flush()
                self.bus.close()
                self.bus = None


store = BatchStore()


def close_store() -> None:
    store.close()


def demo_graph(rate: float | None = 20_000.0, batch: int = 500, ttl: float = 0.05) -> Graph:
    """The demo's graph: sensors (at ``rate`` readings/s) -> parse -> valid -> batch
    (``batch`` readings or ``ttl`` s) -> store."""
    g = Graph("ingest")
    src = g.source("sensors", "framebus.flow.demo:sensor_readings", rate=rate)
    (
        src
        >> g.map("parse", "framebus.flow.demo:parse")
        >> g.filter("valid", "framebus.flow.demo:valid")
        >> g.accumulate("batch", count=batch, ttl=ttl)
        >> g.sink("store", "framebus.flow.demo:store")
    )
    return g
