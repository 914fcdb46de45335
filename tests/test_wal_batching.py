"""The WAL writer's batches: max_batch_size, max_memory_bytes and flush_interval (a
batch is written at whichever it reaches first, or as soon as the ring has nothing
more waiting), the flush histogram, and FRAMEBUS_WAL_DIR."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import start
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import framebus as fb
import framebus.metrics
from framebus import _walbus
from framebus._walbus import gather, split
from framebus.config import WAL_DIR_ENV, BusConfig
from framebus.queue import queue_config
from framebus.wal import WalLog

TOPIC = "t"
OVERHEAD = 20  # bytes of a WAL record besides topic and payload (wal/_format.py)


def record(payload: int) -> int:
    """Bytes of the WAL record of a frame on TOPIC with `payload` bytes."""
    return OVERHEAD + len(TOPIC) + payload


class Held:
    """The WAL thread of the next bus waits for `release()` before its first read; every
    write it makes is recorded as (frames, value bytes, first seq, last seq)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.writes: list[tuple[int, int, int, int]] = []

    def release(self) -> None:
        self.gate.set()

    @property
    def sizes(self) -> list[int]:
        return [w[0] for w in self.writes]


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    h = Held()
    run = _walbus.WalWriter._run
    append = WalLog.append_encoded

    def held_run(self: _walbus.WalWriter) -> None:
        h.gate.wait(60)
        run(self)

    def spy(
        self: WalLog,
        keys: list[bytes],
        values: list[bytes],
        value_bytes: int,
        first_seq: int,
        last_seq: int,
        *,
        sync: bool = False,
    ) -> int:
        h.writes.append((len(keys), value_bytes, first_seq, last_seq))
        return append(self, keys, values, value_bytes, first_seq, last_seq, sync=sync)

    monkeypatch.setattr(_walbus.WalWriter, "_run", held_run)
    monkeypatch.setattr(WalLog, "append_encoded", spy)
    yield h
    h.release()  # a failed test must not leave the thread waiting


def bus_at(path: Path, **kw: Any) -> fb.FrameBus:
    return fb.FrameBus(preset="memory_optimized", wal_dir=str(path), **kw)


def published_then_released(bus: fb.FrameBus, held: Held, payloads: list[bytes]) -> None:
    for p in payloads:
        bus.publish(p, topic=TOPIC)
    assert held.writes == []
    held.release()
    assert bus.flush(timeout=60)


def assert_replay(bus: fb.FrameBus, payloads: list[bytes]) -> None:
    got = [(f.seq, f.topic, f.payload) for f in bus.replay()]
    assert got == [(i, TOPIC, p) for i, p in enumerate(payloads)]


# ------------------------------------------------------------ max_batch_size


@pytest.mark.parametrize("overflow", ["block", "overwrite"])
def test_batches_are_cut_at_max_batch_size(tmp_path: Path, held: Held, overflow: str) -> None:
    payloads = [b"%d" % i for i in range(35)]
    with bus_at(tmp_path, max_batch_size=10, overflow=overflow) as bus:
        published_then_released(bus, held, payloads)
        assert held.sizes == [10, 10, 10, 5]
        assert [(w[2], w[3]) for w in held.writes] == [(0, 9), (10, 19), (20, 29), (30, 34)]
        hist = bus.stats()["histograms"]
        _, counts, total = hist["wal_batch_frames"]
        assert (sum(counts), total) == (4, 35)
        assert sum(hist["wal_flush_ns"][1]) == 4
        assert_replay(bus, payloads)


def test_a_batch_below_every_limit_is_written_when_the_ring_is_idle(
    tmp_path: Path, held: Held
) -> None:
    payloads = [b"x"] * 5
    with bus_at(tmp_path, max_batch_size=10, flush_interval=3600.0) as bus:
        published_then_released(bus, held, payloads)
        assert held.sizes == [5]
        assert_replay(bus, payloads)


# ----------------------------------------------------------- max_memory_bytes


@pytest.mark.parametrize("overflow", ["block", "overwrite"])
def test_batches_are_cut_at_max_memory_bytes(tmp_path: Path, held: Held, overflow: str) -> None:
    payloads = [bytes(79)] * 10  # records of 100 bytes
    assert record(79) == 100
    with bus_at(tmp_path, max_memory_bytes=300, max_batch_size=100, overflow=overflow) as bus:
        published_then_released(bus, held, payloads)
        assert held.writes == [(3, 300, 0, 2), (3, 300, 3, 5), (3, 300, 6, 8), (1, 100, 9, 9)]
        # wal_bytes counts the same records plus their 8-byte keys
        assert bus.stats()["wal_bytes"] == 10 * (100 + 8)
        assert_replay(bus, payloads)


def test_a_frame_larger_than_max_memory_bytes_is_a_batch_of_its_own(
    tmp_path: Path, held: Held
) -> None:
    payloads = [bytes(n) for n in (79, 279, 79, 79, 79)]  # records of 100, 300, 100, 100, 100
    with bus_at(tmp_path, max_memory_bytes=250) as bus:
        published_then_released(bus, held, payloads)
        assert held.writes == [(1, 100, 0, 0), (1, 300, 1, 1), (2, 200, 2, 3), (1, 100, 4, 4)]
        assert_replay(bus, payloads)


def test_both_limits_whichever_first(tmp_path: Path, held: Held) -> None:
    payloads = [bytes(79)] * 11  # records of 100 bytes
    with bus_at(tmp_path, max_batch_size=4, max_memory_bytes=250) as bus:
        published_then_released(bus, held, payloads)
        # bytes cut each read of 4 frames in two; the last read holds 3 frames
        assert held.sizes == [2, 2, 2, 2, 2, 1]
        assert_replay(bus, payloads)


# ------------------------------------------------------------- flush_interval


def test_wal_sync_publish_is_not_held_for_flush_interval(tmp_path: Path) -> None:
    # a batch that reaches neither limit is written at once when nothing more waits,
    # so a synchronous publish returns long before an hour has passed
    with bus_at(tmp_path, wal_sync=True, flush_interval=3600.0, max_batch_size=2000) as bus:
        worker = start(lambda: [bus.publish(b"%d" % i, topic=TOPIC) for i in range(3)])
        assert worker.finish(timeout=60) == [0, 1, 2]
        assert bus.stats()["wal_durable_seq"] == 2
        assert_replay(bus, [b"0", b"1", b"2"])


def test_the_writer_reads_its_limits_from_the_config(tmp_path: Path) -> None:
    with bus_at(tmp_path, max_batch_size=7, max_memory_bytes=1234, flush_interval=0.25) as bus:
        writer = bus._wal_writer
        assert writer is not None
        assert (writer.batch, writer.batch_bytes, writer.interval) == (7, 1234, 0.25)


def encoded(seqs: range, size: int = 10) -> tuple[list[bytes], list[bytes], int, int, int]:
    keys = [s.to_bytes(8, "big") for s in seqs]
    values = [bytes(size)] * len(seqs)
    return keys, values, size * len(seqs), seqs[0], seqs[-1]


class FakeRing:
    """take() hands out `chunk` frames per call (or nothing once `left` runs out); each
    call moves a fake clock on by one second."""

    def __init__(self, next_seq: int, chunk: int, left: int) -> None:
        self.next_seq, self.chunk, self.left = next_seq, chunk, left
        self.now = 0.0
        self.calls: list[tuple[int, float]] = []

    def clock(self) -> float:
        return self.now

    def take(self, n: int, timeout: float) -> Any:
        self.calls.append((n, timeout))
        self.now += 1.0
        k = min(n, self.chunk, self.left)
        if k == 0:
            return None
        self.left -= k
        seqs = range(self.next_seq, self.next_seq + k)
        self.next_seq += k
        return encoded(seqs)


def test_gather_stops_at_flush_interval_while_frames_keep_arriving() -> None:
    ring = FakeRing(next_seq=3, chunk=2, left=1000)
    keys, values, nbytes, first, last = gather(
        encoded(range(3)), ring.take, 1000, 1 << 20, 5.0, ring.clock
    )
    # takes at t = 0, 1, 2, 3, 4; at t = 5 the interval since the first frame is over
    assert ring.calls == [(997, 0), (995, 0), (993, 0), (991, 0), (989, 0)]
    assert (len(keys), len(values), nbytes, first, last) == (13, 13, 130, 0, 12)
    assert keys == [s.to_bytes(8, "big") for s in range(13)]


def test_gather_stops_when_the_ring_is_empty() -> None:
    ring = FakeRing(next_seq=3, chunk=2, left=3)
    got = gather(encoded(range(3)), ring.take, 1000, 1 << 20, 3600.0, ring.clock)
    assert ring.calls == [(997, 0), (995, 0), (994, 0)]  # the third finds nothing
    assert (len(got[0]), got[2], got[3], got[4]) == (6, 60, 0, 5)


def test_gather_stops_at_max_batch_size_and_max_memory_bytes() -> None:
    ring = FakeRing(next_seq=3, chunk=4, left=1000)
    got = gather(encoded(range(3)), ring.take, 10, 1 << 20, 3600.0, ring.clock)
    assert ring.calls == [(7, 0), (3, 0)]
    assert (len(got[0]), got[4]) == (10, 9)

    ring = FakeRing(next_seq=3, chunk=4, left=1000)
    got = gather(encoded(range(3)), ring.take, 1000, 75, 3600.0, ring.clock)
    assert ring.calls == [(997, 0), (993, 0)]  # 30, 70, then 110 bytes >= 75
    assert (len(got[0]), got[2]) == (11, 110)

    # a batch already at a limit takes nothing more
    ring = FakeRing(next_seq=3, chunk=4, left=1000)
    assert gather(encoded(range(3)), ring.take, 3, 1 << 20, 3600.0, ring.clock)[4] == 2
    assert gather(encoded(range(3)), ring.take, 1000, 30, 3600.0, ring.clock)[4] == 2
    assert ring.calls == []


def test_split_cuts_by_bytes_in_order() -> None:
    keys = [s.to_bytes(8, "big") for s in range(100, 106)]
    values = [bytes(n) for n in (5, 5, 12, 1, 1, 4)]
    parts = split((keys, values, 28, 100, 105), 10)
    assert [(len(k), v, n, a, b) for k, v, n, a, b in parts] == [
        (2, [bytes(5)] * 2, 10, 100, 101),
        (1, [bytes(12)], 12, 102, 102),
        (3, [bytes(1), bytes(1), bytes(4)], 6, 103, 105),
    ]
    assert [k for part in parts for k in part[0]] == keys
    whole = (keys, values, 28, 100, 105)
    assert split(whole, 28) == [whole]
    one = (keys[:1], values[2:3], 12, 100, 100)
    assert split(one, 1) == [one]


# --------------------------------------------------------------- the histogram


def test_flush_histogram_counts_each_write(tmp_path: Path, held: Held) -> None:
    registry = CollectorRegistry()
    with bus_at(tmp_path, max_batch_size=10) as bus:
        framebus.metrics.register(bus, registry, name="w")
        published_then_released(bus, held, [b"x"] * 35)
        samples = {
            (s.name, s.labels.get("le")): s.value
            for fam in text_string_to_metric_families(generate_latest(registry).decode())
            for s in fam.samples
            if s.labels.get("bus") == "w"
        }
    assert samples[("framebus_wal_flush_seconds_count", None)] == 4
    assert samples[("framebus_wal_flush_seconds_bucket", "+Inf")] == 4
    assert samples[("framebus_wal_flush_seconds_sum", None)] > 0
    assert samples[("framebus_wal_batch_frames_count", None)] == 4
    assert samples[("framebus_wal_batch_frames_sum", None)] == 35
    assert samples[("framebus_wal_batch_frames_bucket", "4.0")] == 0
    assert samples[("framebus_wal_batch_frames_bucket", "16.0")] == 4
    assert not any(name.startswith("framebus_wal_batch_flush") for name, _ in samples)


# ------------------------------------------------------------ FRAMEBUS_WAL_DIR


def test_wal_dir_env_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_dir = str(tmp_path / "env-wal")
    monkeypatch.setenv(WAL_DIR_ENV, env_dir)
    assert BusConfig().wal_dir == env_dir
    for name in BusConfig.presets():
        assert BusConfig.preset(name).wal_dir == env_dir
    assert BusConfig(wal_dir="other").wal_dir == "other"
    assert BusConfig.preset("default", wal_dir=tmp_path / "p").wal_dir == str(tmp_path / "p")
    # passed explicitly, None means no WAL whatever the environment
    assert BusConfig(wal_dir=None).wal_dir is None
    assert BusConfig.preset("low_latency", wal_dir=None).wal_dir is None
    cfg = BusConfig.preset("default")
    assert cfg.replace(spin=1).wal_dir == env_dir
    assert BusConfig(**cfg.to_dict()) == cfg
    # read when the config is built
    monkeypatch.setenv(WAL_DIR_ENV, "later")
    assert cfg.wal_dir == env_dir
    assert BusConfig().wal_dir == "later"
    # framebus.Queue's rings never have a WAL
    assert queue_config(10).wal_dir is None


@pytest.mark.parametrize("value", [None, ""])
def test_wal_dir_env_unset_or_empty_means_no_wal(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv(WAL_DIR_ENV, raising=False)
    else:
        monkeypatch.setenv(WAL_DIR_ENV, value)
    assert BusConfig().wal_dir is None
    assert BusConfig.preset("high_throughput").wal_dir is None


def test_a_bus_writes_its_wal_in_the_env_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(WAL_DIR_ENV, "rel-wal")  # relative: to the cwd at creation
    with fb.FrameBus(preset="memory_optimized") as bus:
        assert bus.config.wal_dir == str(tmp_path / "rel-wal")
        assert bus.publish(b"a", topic=TOPIC) == 0
        assert bus.flush(timeout=60)
    with WalLog(tmp_path / "rel-wal", read_only=True) as wal:
        assert [(f.seq, f.topic, f.payload) for f in wal.read()] == [(0, TOPIC, b"a")]
    with fb.FrameBus(preset="memory_optimized", wal_dir=None) as bus:
        assert bus.config.wal_dir is None
        with pytest.raises(fb.FrameBusError, match="needs a write-ahead log"):
            bus.replay()


def test_the_env_dir_takes_one_bus_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WAL_DIR_ENV, str(tmp_path / "wal"))
    with fb.FrameBus(preset="memory_optimized") as bus:
        assert bus.config.wal_dir == str(tmp_path / "wal")
        with pytest.raises(fb.WalError, match="already open"):
            fb.FrameBus(preset="memory_optimized")
        with fb.FrameBus(preset="memory_optimized", wal_dir=None) as other:
            assert other.config.wal_dir is None
