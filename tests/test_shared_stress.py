"""Cross-process stress on a shared bus: 2 producer processes x 2 consumer processes,
broadcast and work-sharing group; a producer killed mid-stream.

The 2 x 2 runs are repeated with each receive path of the consumers: recv_batch,
recv_payloads (the producer id and counter in each payload carry the order) and
recv_frames (its seqs, topic ids, lengths and offsets checked too)."""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import signal
import struct
import time
from typing import Any

import pytest

import framebus as fb

PER = int(os.environ.get("FRAMEBUS_XPROC_FRAMES", "100000"))  # frames per producer
HEAD = struct.Struct("<II")
PATHS = ["recv_batch", "recv_payloads", "recv_frames"]
GROUP_IDLE = 15.0  # a group member stops after this long without a frame

pytestmark = [pytest.mark.slow, pytest.mark.xproc, pytest.mark.timeout(300)]


def _produce(name: str, pid: int, count: int, start: mp.Event) -> None:
    bus = fb.FrameBus.attach(name)
    start.wait(60)
    k = 0
    j = 0
    while k < count:
        n = min(count - k, 1 + (j * 37 + pid * 11) % 64)
        frames = [HEAD.pack(pid, k + i) + b"." * ((k + i) % 50) for i in range(n)]
        if j % 3 == 0:
            for f in frames:
                bus.publish(f, topic=f"p.{pid}")
        else:
            bus.publish_batch(frames, topic=f"p.{pid}")
        k += n
        j += 1
    bus.close()


def _receive(
    sub: fb.Subscription, path: str, tids: dict[int, int], timeout: float
) -> tuple[list[int] | None, list[bytes]]:
    """One read through the receive path: (seqs, or None for recv_payloads; payloads),
    each frame's topic checked against the producer id in its payload (tids: producer
    id by topic id) where the path shows topics."""
    if path == "recv_payloads":
        payloads = sub.recv_payloads(2000, timeout=timeout)
        assert all(type(p) is bytes for p in payloads)
        return None, payloads
    if path == "recv_batch":
        frames = sub.recv_batch(2000, timeout=timeout)
        for f in frames:
            assert f.topic == f"p.{HEAD.unpack_from(f.payload)[0]}"
        return [f.seq for f in frames], [f.payload for f in frames]
    batch = sub.recv_frames(2000, timeout=timeout)
    payloads = batch.payloads()
    lengths = [len(p) for p in payloads]
    assert batch.lengths.tolist() == lengths
    assert (
        batch.offsets.tolist()
        == list(itertools.accumulate(lengths[:-1], initial=0))[: len(lengths)]
    )
    assert batch.nbytes == sum(lengths)
    for tid, p in zip(batch.topic_ids.tolist(), payloads, strict=True):
        assert tids[tid] == HEAD.unpack_from(p)[0]
    return batch.seqs.tolist(), payloads


def _consume(
    name: str,
    group: str | None,
    total: int,
    ready: mp.Queue,
    out: mp.Queue,
    path: str = "recv_batch",
    taken: Any = None,  # multiprocessing.Value("q"), shared by the group
) -> None:
    """Receives through `path` until it has `total` frames (broadcast) or the group
    has (`taken`: the frames all members got), then reads once more for a frame too
    many. Puts its (producer, counter) pairs, in order, on `out`."""
    bus = fb.FrameBus.attach(name)
    sub = bus.subscribe("p.>", group=group)
    tids = {bus.topic_id(f"p.{p}"): p for p in (1, 2)}
    ready.put(os.getpid())
    got: list[tuple[int, int]] = []
    last_seq = -1
    idle = 0
    last_frame = time.monotonic()
    while (len(got) if taken is None else taken.value) < total:
        if taken is None and idle >= 3:
            break
        if taken is not None and time.monotonic() - last_frame > GROUP_IDLE:
            break
        seqs, batch = _receive(sub, path, tids, 0.2 if group else 30)
        idle = 0 if batch else idle + 1
        if batch:
            last_frame = time.monotonic()
        for seq in seqs or ():
            assert seq > last_seq
            last_seq = seq
        for p in batch:
            pid, k = HEAD.unpack_from(p)
            assert len(p) == 8 + k % 50
            got.append((pid, k))
        if taken is not None:
            with taken.get_lock():
                taken.value += len(batch)
    # nothing more may come (in a group: a frame delivered twice would come now)
    _, extra = _receive(sub, path, tids, 0 if taken is None else 0.5)
    got.extend(HEAD.unpack_from(p) for p in extra)
    out.put(got)
    sub.close()
    bus.close()


def _run(name: str, group: str | None, path: str) -> list[list[tuple[int, int]]]:
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    ready: mp.Queue = ctx.Queue()
    out: mp.Queue = ctx.Queue()
    taken = None if group is None else ctx.Value("q", 0)
    cfg = fb.BusConfig.preset("memory_optimized", ring_bytes=1 << 20, publish_timeout=120)
    with fb.FrameBus.create_shared(name, cfg):
        consumers = [
            ctx.Process(target=_consume, args=(name, group, 2 * PER, ready, out, path, taken))
            for _ in range(2)
        ]
        for c in consumers:
            c.start()
        for _ in consumers:
            ready.get(timeout=60)
        producers = [ctx.Process(target=_produce, args=(name, p, PER, start)) for p in (1, 2)]
        for p in producers:
            p.start()
        start.set()
        results = [out.get(timeout=240) for _ in consumers]
        for p in producers + consumers:
            p.join(60)
            assert p.exitcode == 0
    return results


def _check_order(got: list[tuple[int, int]]) -> None:
    for pid in (1, 2):
        mine = [k for p, k in got if p == pid]
        assert mine == sorted(set(mine)), f"producer {pid}: duplicated or reordered"


@pytest.mark.parametrize("path", PATHS)
def test_broadcast_two_by_two(name: str, path: str) -> None:
    for got in _run(name, None, path):
        _check_order(got)
        assert sorted(got) == [(p, k) for p in (1, 2) for k in range(PER)]


@pytest.mark.parametrize("path", PATHS)
def test_group_two_by_two(name: str, path: str) -> None:
    results = _run(name, "workers", path)
    for got in results:
        _check_order(got)
    union = sorted(results[0] + results[1])
    assert union == [(p, k) for p in (1, 2) for k in range(PER)]  # each frame exactly once


def _produce_forever(name: str, pid: int, ready: mp.Queue) -> None:
    bus = fb.FrameBus.attach(name)
    ready.put(pid)
    k = 0
    while True:
        bus.publish(HEAD.pack(pid, k), topic=f"p.{pid}")
        k += 1


@pytest.mark.crash
def test_killed_producer_does_not_stop_the_others(name: str) -> None:
    ctx = mp.get_context("spawn")
    ready: mp.Queue = ctx.Queue()
    start = ctx.Event()
    cfg = fb.BusConfig.preset("memory_optimized", unblock_timeout=0.2, publish_timeout=60)
    with fb.FrameBus.create_shared(name, cfg) as bus:
        sub = bus.subscribe("p.>")
        victim = ctx.Process(target=_produce_forever, args=(name, 9, ready))
        victim.start()
        ready.get(timeout=60)
        # let it publish for a while, then kill it wherever it is (maybe mid-claim)
        while sub.backlog < 5000:
            os.sched_yield()
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(30)
        survivor = ctx.Process(target=_produce, args=(name, 1, PER, start))
        survivor.start()
        start.set()
        seen: list[int] = []
        victim_frames: list[int] = []
        while len(seen) < PER:
            batch = sub.recv_batch(2000, timeout=30)
            assert batch, f"stalled after {len(seen)} of the survivor's frames"
            for f in batch:
                p, k = HEAD.unpack_from(f.payload)
                (seen if p == 1 else victim_frames).append(k)
        survivor.join(60)
        assert survivor.exitcode == 0
        assert seen == list(range(PER))
        assert victim_frames == list(range(len(victim_frames)))  # a prefix, in order
        assert bus.stats()["unblocked"] in (0, 1)


def _slow_reader(name: str, ready: mp.Queue) -> None:
    bus = fb.FrameBus.attach(name)
    sub = bus.subscribe("p.>")
    ready.put(os.getpid())
    while True:
        sub.recv_batch(10, timeout=1)  # reads a little, then gets killed mid-stream


@pytest.mark.crash
def test_killed_reader_does_not_stop_the_others(name: str) -> None:
    ctx = mp.get_context("spawn")
    ready: mp.Queue = ctx.Queue()
    start = ctx.Event()
    cfg = fb.BusConfig.preset(
        "memory_optimized", ring_bytes=1 << 20, dead_reader_timeout=0.3, publish_timeout=120
    )
    with fb.FrameBus.create_shared(name, cfg) as bus:
        sub = bus.subscribe("p.>")
        victim = ctx.Process(target=_slow_reader, args=(name, ready))
        victim.start()
        ready.get(timeout=60)
        producers = [ctx.Process(target=_produce, args=(name, p, PER, start)) for p in (1, 2)]
        for p in producers:
            p.start()
        start.set()
        got: list[tuple[int, int]] = []
        killed = False
        while len(got) < 2 * PER:
            if not killed and len(got) > PER // 2:
                os.kill(victim.pid, signal.SIGKILL)  # its cursor now holds the ring back
                killed = True
            batch = sub.recv_batch(2000, timeout=60)
            assert batch, f"stalled after {len(got)} frames"
            got.extend(HEAD.unpack_from(f.payload) for f in batch)
        for p in producers:
            p.join(60)
            assert p.exitcode == 0
        victim.join(30)
        _check_order(got)
        assert sorted(got) == [(p, k) for p in (1, 2) for k in range(PER)]
        s = bus.stats()
        assert (s["evicted"], s["readers"]) == (1, 1)
