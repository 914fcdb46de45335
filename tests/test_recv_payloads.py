"""Subscription.recv_payloads: the payloads of recv_batch, built in one pass without
a Frame per frame, in every reading mode."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

import framebus as fb


def drain_payloads(sub: fb.Subscription, n: int = 37) -> list[bytes]:
    got: list[bytes] = []
    while True:
        batch = sub.recv_payloads(n, timeout=0)
        if not batch:
            return got
        got += batch


def test_payloads_match_recv_batch_in_order_with_filters(make_bus: Any) -> None:
    bus = make_bus(preset="memory_optimized")
    a, b = bus.subscribe("a.>"), bus.subscribe("a.>")
    payloads = [b"%d" % i * (i % 7) for i in range(500)] + [b"y" * 70_000]  # big: copied later
    for i, p in enumerate(payloads):
        bus.publish(p, "a.x" if i % 3 else "other")
    want = [f.payload for f in b.recv_batch(1000, timeout=1)]
    assert want == [p for i, p in enumerate(payloads) if i % 3]
    got = drain_payloads(a)
    assert got == want
    assert all(type(p) is bytes for p in got)
    assert a.recv_payloads(5, timeout=0.01) == []  # timeout: empty
    bus.publish(b"late", "a.z")
    assert a.recv_payloads(5, timeout=None) == [b"late"]


def test_arguments_and_modes_are_checked(make_bus: Any) -> None:
    bus = make_bus(preset="memory_optimized")
    sub = bus.subscribe()
    with pytest.raises(ValueError, match="max_frames must be >= 1, got 0"):
        sub.recv_payloads(0)
    env_sub = bus.subscribe(envelopes=True)
    with pytest.raises(ValueError, match="envelopes=True"):
        env_sub.recv_payloads(10)
    sub.close()
    with pytest.raises(fb.BusClosed):
        sub.recv_payloads(10, timeout=0)


def test_group_members_share_the_payloads(make_bus: Any) -> None:
    bus = make_bus(preset="memory_optimized")
    m1, m2 = bus.subscribe("g.>", group="w"), bus.subscribe("g.>", group="w")
    bus.publish_batch([b"%d" % i for i in range(300)], "g.t")
    got = m1.recv_payloads(100, timeout=1) + drain_payloads(m2) + drain_payloads(m1)
    assert sorted(got, key=int) == [b"%d" % i for i in range(300)]
    assert len(got) == 300


def test_overwrite_mode_leaves_out_lapped_payloads(small_bus: Any) -> None:
    bus = small_bus(overflow="overwrite", publish_timeout=None, ring_bytes=1 << 12, max_frame=64)
    sub = bus.subscribe()
    n = 5000
    for i in range(n):
        bus.publish(struct.pack("<Q", i) * 3)
    got = drain_payloads(sub)
    seqs = [struct.unpack_from("<Q", p)[0] for p in got]
    assert got == [struct.pack("<Q", s) * 3 for s in seqs]  # intact, never torn
    assert seqs == sorted(set(seqs)) and seqs[-1] == n - 1
    assert sub.lagged + len(got) == n
    assert sub.lagged > 0  # it was lapped


def test_a_durable_group_gets_its_backfill_as_payloads(tmp_path: Path) -> None:
    with fb.FrameBus(preset="memory_optimized", wal_dir=str(tmp_path)) as bus:
        sub = bus.subscribe("j.>", group="g")
        bus.publish_batch([b"%d" % i for i in range(20)], topic="j.a")
        first = sub.recv(timeout=5)
        assert first is not None
        sub.commit(first.seq)
    with fb.FrameBus(preset="memory_optimized", wal_dir=str(tmp_path)) as bus:
        sub = bus.subscribe("j.>", group="g")
        bus.publish(b"live", topic="j.b")
        got = drain_payloads(sub, 7)
        assert got == [b"%d" % i for i in range(1, 20)] + [b"live"]


def _publisher(name: str, count: int) -> None:
    bus = fb.FrameBus.attach(name)
    try:
        for i in range(0, count, 10):
            bus.publish_batch([b"p%d" % j for j in range(i, i + 10)], "x")
    finally:
        bus.close()


@pytest.mark.xproc
def test_payloads_across_processes(name: str) -> None:
    import multiprocessing as mp

    bus = fb.FrameBus.create_shared(name, preset="memory_optimized")
    try:
        sub = bus.subscribe()
        proc = mp.get_context("spawn").Process(target=_publisher, args=(name, 1000))
        proc.start()
        got: list[bytes] = []
        while len(got) < 1000:
            batch = sub.recv_payloads(256, timeout=30)
            assert batch, "timed out waiting for the other process's frames"
            got += batch
        proc.join(30)
        assert proc.exitcode == 0
        assert got == [b"p%d" % j for j in range(1000)]
    finally:
        bus.close()
