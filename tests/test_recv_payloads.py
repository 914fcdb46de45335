"""Subscription.recv_payloads: the payloads of recv_batch, built in one pass without
a Frame per frame, in every reading mode."""

from __future__ import annotations

import contextlib
import re
import struct
from collections.abc import Iterator
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


BACKFILLED = [b"%d" % i for i in range(1, 20)] + [b"live"]


@contextlib.contextmanager
def group_with_backfill(wal_dir: Path) -> Iterator[fb.Subscription]:
    """A durable group that committed frame 0 of 0..19 ("j.a") and comes back: its
    subscription gets 1..19 from the WAL, then b"live" ("j.b") from the ring."""
    with fb.FrameBus(preset="memory_optimized", wal_dir=str(wal_dir)) as bus:
        sub = bus.subscribe("j.>", group="g")
        bus.publish_batch([b"%d" % i for i in range(20)], topic="j.a")
        first = sub.recv(timeout=5)
        assert first is not None
        sub.commit(first.seq)
    with fb.FrameBus(preset="memory_optimized", wal_dir=str(wal_dir)) as bus:
        sub = bus.subscribe("j.>", group="g")
        bus.publish(b"live", topic="j.b")
        yield sub


def test_a_durable_group_gets_its_backfill_as_payloads(tmp_path: Path) -> None:
    with group_with_backfill(tmp_path) as sub:
        assert drain_payloads(sub, 7) == BACKFILLED


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


# ------------------------------------------------------------------ recv_frames


def drain_batches(sub: fb.Subscription, n: int = 37) -> list[fb.FrameBatch]:
    out = []
    while True:
        batch = sub.recv_frames(n, timeout=0)
        if not batch:
            return out
        out.append(batch)


def test_frame_batch_holds_what_recv_batch_would(make_bus: Any) -> None:
    np = pytest.importorskip("numpy")
    bus = make_bus(preset="memory_optimized")
    a, b = bus.subscribe("a.>"), bus.subscribe("a.>")
    payloads = [b"%d" % i * (i % 5) for i in range(300)] + [b"z" * 70_000]
    for i, p in enumerate(payloads):
        bus.publish(p, "a.x" if i % 2 else ("a.y" if i % 3 else "other"))
    want = b.recv_batch(1000, timeout=1)
    batches = drain_batches(a)
    assert sum(len(x) for x in batches) == len(want)
    got = [f for x in batches for f in x]  # iteration makes Frames
    assert got == want
    first = batches[0]
    assert first[0] == want[0] and first[-1] == want[len(first) - 1]
    assert first[1:3] == want[1:3]
    assert first.payloads() == [f.payload for f in want[: len(first)]]
    assert [first.topic(i) for i in range(len(first))] == [f.topic for f in want[: len(first)]]
    assert first.seqs.tolist() == [f.seq for f in want[: len(first)]]
    assert first.ts_ns.tolist() == [f.ts_ns for f in want[: len(first)]]
    assert first.lengths.tolist() == [len(f.payload) for f in want[: len(first)]]
    assert first.offsets.tolist() == list(np.cumsum([0] + first.lengths.tolist()[:-1]))
    assert first.data == b"".join(first.payloads()) and first.nbytes == len(first.data)
    ids = {bus.topic_id(t) for t in ("a.x", "a.y")}
    assert set(first.topic_ids.tolist()) <= ids
    assert first.seqs.dtype == np.uint64 and first.lengths.dtype == np.uint32
    with pytest.raises(IndexError, match="out of range"):
        first[len(first)]
    assert a.recv_frames(10, timeout=0.01).__len__() == 0  # timeout: an empty batch


def test_frame_batch_array_views_fixed_size_frames(make_bus: Any) -> None:
    np = pytest.importorskip("numpy")
    bus = make_bus(preset="memory_optimized")
    sub = bus.subscribe()
    rows = np.arange(40, dtype="<u4").reshape(10, 4)
    bus.publish_batch([r.tobytes() for r in rows], "m")
    batch = sub.recv_frames(100, timeout=1)
    arr = batch.array("<u4")
    assert arr.shape == (10, 4) and (arr == rows).all()
    assert batch.array("<u4", (2, 2)).shape == (10, 2, 2)
    assert not arr.flags.writeable  # a view of the batch's bytes, not a copy
    bus.publish_batch([b"ab", b"abc"], "m")
    uneven = sub.recv_frames(10, timeout=1)
    with pytest.raises(ValueError, match=r"one size; this batch holds sizes \[2, 3\]"):
        uneven.array()


def test_frame_batches_in_every_mode(small_bus: Any, tmp_path: Path) -> None:
    bus = small_bus(overflow="overwrite", publish_timeout=None, ring_bytes=1 << 12, max_frame=64)
    sub = bus.subscribe()
    n = 5000
    for i in range(n):
        bus.publish(struct.pack("<Q", i) * 3)
    frames = [f for batch in drain_batches(sub) for f in batch]
    assert all(f.payload == struct.pack("<Q", f.seq) * 3 for f in frames)  # never torn
    assert [f.seq for f in frames][-1] == n - 1 and sub.lagged + len(frames) == n
    assert sub.lagged > 0

    with fb.FrameBus(preset="memory_optimized") as g:
        m1, m2 = g.subscribe("g.>", group="w"), g.subscribe("g.>", group="w")
        g.publish_batch([b"%d" % i for i in range(300)], "g.t")
        got = m1.recv_frames(100, timeout=1).payloads()
        got += [p for b in drain_batches(m2) for p in b.payloads()]
        got += [p for b in drain_batches(m1) for p in b.payloads()]
        assert sorted(got, key=int) == [b"%d" % i for i in range(300)]

    with group_with_backfill(tmp_path) as s:
        batches = drain_batches(s, 7)
        assert [p for b in batches for p in b.payloads()] == BACKFILLED
        assert batches[0].topic(0) == "j.a" and batches[-1].topic(-1) == "j.b"

    env_sub = bus.subscribe(envelopes=True)
    with pytest.raises(ValueError, match="envelopes=True"):
        env_sub.recv_frames(10)
    with pytest.raises(ValueError, match="max_frames must be >= 1"):
        sub.recv_frames(0)


# ------------------------------------------------------------------ bad arguments

# recv_batch, the reference, with the two paths that must agree with it
RECEIVE_PATHS = ["recv_batch", "recv_payloads", "recv_frames"]

# (bad max_frames, exception, text of its message: the value, or for a value of the
# wrong type the type's name)
BAD_MAX_FRAMES = [
    pytest.param(0, ValueError, "max_frames must be >= 1, got 0", id="zero"),
    pytest.param(-1, ValueError, "max_frames must be >= 1, got -1", id="negative"),
    pytest.param(
        -(2**63), ValueError, "max_frames must be >= 1, got -9223372036854775808", id="min"
    ),
    pytest.param(1.5, TypeError, "'float'", id="float"),
    pytest.param(4.0, TypeError, "'float'", id="integral-float"),
    pytest.param("3", TypeError, "'str'", id="str"),
    pytest.param(None, TypeError, "'NoneType'", id="None"),
]

NEGATIVE = "timeout must be >= 0 seconds or None, got "
NOT_A_NUMBER = "timeout must be a number of seconds or None, not "
BAD_TIMEOUTS = [
    pytest.param(-1, ValueError, NEGATIVE + "-1", id="-1"),
    pytest.param(-0.001, ValueError, NEGATIVE + "-0.001", id="-1ms"),
    pytest.param(float("-inf"), ValueError, NEGATIVE + "-inf", id="-inf"),
    pytest.param(float("nan"), ValueError, NEGATIVE + "nan", id="nan"),
    pytest.param("1", TypeError, NOT_A_NUMBER + "str", id="str"),
    pytest.param(b"1", TypeError, NOT_A_NUMBER + "bytes", id="bytes"),
    pytest.param([1], TypeError, NOT_A_NUMBER + "list", id="list"),
    pytest.param(True, TypeError, NOT_A_NUMBER + "bool", id="bool"),
]


@pytest.fixture(params=["subscription", "port"])
def endpoint(request: pytest.FixtureRequest, make_bus: Any) -> tuple[Any, Any]:
    """(receiver, put): a subscription or an open DataPort receiver, and a function
    that makes one frame b"ready" available to it."""
    bus = make_bus(preset="memory_optimized")
    if request.param == "subscription":
        return bus.subscribe(), lambda: bus.publish(b"ready")
    rx, tx = bus.data_port("bad", window=8), bus.data_port("bad", window=8)
    assert rx.recv_payloads(1, timeout=0) == []  # opens the receiver: grants credit
    return rx, lambda: tx.send_frame(b"ready")


def _payloads(got: Any) -> list[bytes]:
    if isinstance(got, fb.FrameBatch):
        return got.payloads()
    return [p if isinstance(p, bytes) else p.payload for p in got]


@pytest.mark.parametrize("path", RECEIVE_PATHS)
@pytest.mark.parametrize(("bad", "exc", "text"), BAD_MAX_FRAMES)
def test_bad_max_frames_is_refused_by_name(
    endpoint: tuple[Any, Any], path: str, bad: Any, exc: type, text: str
) -> None:
    rx, put = endpoint
    with pytest.raises(exc, match=re.escape(text)):
        getattr(rx, path)(bad, timeout=0)
    put()
    with pytest.raises(exc, match=re.escape(text)):
        getattr(rx, path)(bad, timeout=0)
    assert _payloads(getattr(rx, path)(10, timeout=0)) == [b"ready"]  # nothing was taken


@pytest.mark.parametrize("path", RECEIVE_PATHS)
@pytest.mark.parametrize("huge", [2**31, 2**62, 2**63 - 1])
def test_a_huge_max_frames_returns_what_is_there(
    endpoint: tuple[Any, Any], path: str, huge: int
) -> None:
    rx, put = endpoint
    assert len(getattr(rx, path)(huge, timeout=0)) == 0
    for _ in range(3):
        put()
    assert _payloads(getattr(rx, path)(huge, timeout=0)) == [b"ready"] * 3


@pytest.mark.parametrize("path", RECEIVE_PATHS)
@pytest.mark.parametrize("huge", [2**63, 10**30])
def test_max_frames_beyond_ssize_t_is_refused_by_name(
    endpoint: tuple[Any, Any], path: str, huge: int
) -> None:
    rx, _ = endpoint
    with pytest.raises((OverflowError, ValueError)) as info:
        getattr(rx, path)(huge, timeout=0)
    assert "max_frames" in str(info.value) and str(huge) in str(info.value)


@pytest.mark.parametrize("path", RECEIVE_PATHS)
@pytest.mark.parametrize(("bad", "exc", "text"), BAD_TIMEOUTS)
def test_bad_timeout_is_refused_by_name(
    endpoint: tuple[Any, Any], path: str, bad: Any, exc: type, text: str
) -> None:
    rx, _ = endpoint
    with pytest.raises(exc, match=re.escape(text)):
        getattr(rx, path)(5, timeout=bad)


@pytest.mark.parametrize("path", RECEIVE_PATHS)
@pytest.mark.parametrize(("bad", "exc", "text"), BAD_TIMEOUTS)
def test_bad_timeout_is_refused_with_a_frame_ready(
    make_bus: Any, path: str, bad: Any, exc: type, text: str
) -> None:
    bus = make_bus(preset="memory_optimized")
    sub = bus.subscribe()
    bus.publish(b"ready")
    with pytest.raises(exc, match=re.escape(text)):
        getattr(sub, path)(5, timeout=bad)
    assert _payloads(getattr(sub, path)(5, timeout=0)) == [b"ready"]  # nothing was taken


@pytest.mark.parametrize("path", RECEIVE_PATHS)
@pytest.mark.parametrize(("bad", "exc", "text"), BAD_TIMEOUTS)
def test_bad_timeout_is_refused_by_a_port_with_a_frame_ready(
    make_bus: Any, path: str, bad: Any, exc: type, text: str
) -> None:
    bus = make_bus(preset="memory_optimized")
    rx, tx = bus.data_port("bad", window=8), bus.data_port("bad", window=8)
    assert rx.recv_payloads(1, timeout=0) == []  # opens the receiver: grants credit
    tx.send_frame(b"ready")
    with pytest.raises(exc, match=re.escape(text)):
        getattr(rx, path)(5, timeout=bad)
    assert _payloads(getattr(rx, path)(5, timeout=0)) == [b"ready"]  # nothing was taken
