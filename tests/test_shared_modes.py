"""The overflow modes, backpressure and hysteresis between processes: the publisher
is this process, the subscriber another one attached to the same segment."""

from __future__ import annotations

import multiprocessing as mp
import struct
from typing import Any

import pytest

import framebus as fb

CAPACITY = 1024  # frames: ring_pow 10 with the limit at 100 %
ctx = mp.get_context("fork")

pytestmark = [pytest.mark.xproc, pytest.mark.timeout(120)]


def _config(overflow: str, ring_bytes: int = 1 << 20) -> fb.BusConfig:
    return fb.BusConfig.preset(
        "memory_optimized",
        ring_pow=10,
        ring_bytes=ring_bytes,
        max_frame=1024,
        pause_hi=0.5,
        resume_lo=0.25,
        backpressure_threshold=1.0,
        overflow=overflow,
        publish_timeout=30,
    )


def _subscriber(name: str, ready: Any, go: Any, out: Any, pace: bool) -> None:
    """Subscribes, says so, waits for go, then reads until the bus is quiet and
    reports (sequence numbers, payload indexes, lagged, paused seen, paused after)."""
    bus = fb.FrameBus.attach(name)
    sub = bus.subscribe("t.>")
    ready.set()
    seqs: list[int] = []
    idx: list[int] = []
    paused_seen = False
    if not pace:
        assert go.wait(60)
    while True:
        paused_seen = paused_seen or bus.paused
        frames = sub.recv_batch(10 if pace else 4096, timeout=2.0)
        if not frames:
            break
        for f in frames:
            seqs.append(f.seq)
            idx.append(struct.unpack_from("<I", f.payload)[0])
    out.put((seqs, idx, sub.lagged, paused_seen, bus.paused))
    bus.close()


def _start(name: str, pace: bool = False) -> tuple[Any, Any, Any]:
    ready, go, out = ctx.Event(), ctx.Event(), ctx.SimpleQueue()
    child = ctx.Process(target=_subscriber, args=(name, ready, go, out, pace))
    child.start()
    assert ready.wait(60)
    return child, go, out


def _payload(i: int) -> bytes:
    return struct.pack("<I", i) + b"." * 60


def _finish(child: Any, out: Any) -> tuple[list[int], list[int], int, bool, bool]:
    result = out.get()
    child.join(60)
    assert child.exitcode == 0
    return result


def test_error_mode_refuses_at_capacity(name: str) -> None:
    with fb.FrameBus.create_shared(name, _config("error")) as bus:
        child, go, out = _start(name)
        for i in range(CAPACITY):
            assert bus.publish(_payload(i), topic="t.a") == i
        with pytest.raises(fb.WouldBlock):
            bus.publish(_payload(CAPACITY), topic="t.a")
        assert bus.try_publish(_payload(CAPACITY), topic="t.a") == -1
        assert bus.paused  # the flag lives in the segment
        go.set()
        seqs, idx, lagged, paused_seen, paused_after = _finish(child, out)
        assert seqs == idx == list(range(CAPACITY))
        assert (lagged, paused_seen, paused_after) == (0, True, False)
        s = bus.stats()
        assert (s["pause_events"], s["resume_events"], s["dropped"]) == (1, 1, 0)
        assert not bus.paused  # resumed by the other process's reads


def test_drop_mode_counts_what_did_not_fit(name: str) -> None:
    with fb.FrameBus.create_shared(name, _config("drop")) as bus:
        child, go, out = _start(name)
        for i in range(CAPACITY):
            assert bus.publish(_payload(i), topic="t.a") == i
        assert bus.publish(_payload(-1 & 0xFFFFFFFF), topic="t.a") == -1
        assert bus.publish_batch([_payload(0)] * 10, topic="t.a") == -1
        assert bus.stats()["dropped"] == 11
        go.set()
        seqs, idx, lagged, _, _ = _finish(child, out)
        assert seqs == idx == list(range(CAPACITY))
        assert lagged == 0


def test_overwrite_mode_laps_the_slow_process(name: str) -> None:
    # overwrite mode is bounded by the data area: 64 KiB holds 682 records of 96 bytes
    total = 3 * CAPACITY + 17
    with fb.FrameBus.create_shared(name, _config("overwrite", ring_bytes=1 << 16)) as bus:
        child, go, out = _start(name)
        for i in range(total):
            bus.publish(_payload(i), topic="t.a")  # never waits
        go.set()
        seqs, idx, lagged, _, _ = _finish(child, out)
        assert seqs == idx  # what survived is intact and in order
        assert seqs == list(range(seqs[0], total))
        assert 0 < len(seqs) <= (1 << 16) // 96
        assert lagged == seqs[0]  # everything before the survivors was lost, and counted


def test_block_mode_waits_for_the_other_process(name: str) -> None:
    total = 5 * CAPACITY
    with fb.FrameBus.create_shared(name, _config("block")) as bus:
        child, _, out = _start(name, pace=True)  # reads 10 at a time from the start
        first = bus.publish_batch([_payload(i) for i in range(100)], topic="t.a")
        assert first == 0
        for i in range(100, total):
            assert bus.publish(_payload(i), topic="t.b") == i  # waits for room
        seqs, idx, lagged, _, _ = _finish(child, out)
        assert seqs == idx == list(range(total))
        assert lagged == 0


def test_filters_apply_to_topics_of_the_other_process(name: str) -> None:
    with fb.FrameBus.create_shared(name, _config("error")) as bus:
        child, go, out = _start(name)
        for i in range(30):
            bus.publish(_payload(i), topic=("t.x", "u.x", "t.y.z")[i % 3])
        go.set()
        seqs, idx, _, _, _ = _finish(child, out)
        assert idx == [i for i in range(30) if i % 3 != 1]
        assert seqs == idx
