"""Cross-process stress on a shared bus: 2 producer processes x 2 consumer processes,
broadcast and work-sharing group; a producer killed mid-stream."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import struct

import pytest

import framebus as fb

PER = int(os.environ.get("FRAMEBUS_XPROC_FRAMES", "100000"))  # frames per producer
HEAD = struct.Struct("<II")

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


def _consume(name: str, group: str | None, total: int, ready: mp.Queue, out: mp.Queue) -> None:
    bus = fb.FrameBus.attach(name)
    sub = bus.subscribe("p.>", group=group)
    ready.put(os.getpid())
    got: list[tuple[int, int]] = []
    idle = 0
    while len(got) < total and idle < 3:
        batch = sub.recv_batch(2000, timeout=5 if group else 30)
        idle = 0 if batch else idle + 1
        for f in batch:
            p, k = HEAD.unpack_from(f.payload)
            assert f.topic == f"p.{p}" and len(f.payload) == 8 + k % 50
            got.append((p, k))
    out.put(got)
    sub.close()
    bus.close()


def _run(name: str, group: str | None) -> list[list[tuple[int, int]]]:
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    ready: mp.Queue = ctx.Queue()
    out: mp.Queue = ctx.Queue()
    cfg = fb.BusConfig.preset("memory_optimized", ring_bytes=1 << 20, publish_timeout=120)
    with fb.FrameBus.create_shared(name, cfg):
        consumers = [
            ctx.Process(target=_consume, args=(name, group, 2 * PER, ready, out)) for _ in range(2)
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


def test_broadcast_two_by_two(name: str) -> None:
    for got in _run(name, None):
        _check_order(got)
        assert sorted(got) == [(p, k) for p in (1, 2) for k in range(PER)]


def test_group_two_by_two(name: str) -> None:
    results = _run(name, "workers")
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
