"""Multi-threaded stress: 4 producers x 3 subscribers under overflow="block".

Each producer publishes its share of FRAMEBUS_STRESS_FRAMES (default 1,000,000
frames in total) as payload = producer id (1 byte) + per-producer counter (4
bytes) + a filler of varied length derived from the counter, mixing single
publishes and batches. The ring is small, so producers block often.

Broadcast: every subscriber must see every frame exactly once, each producer's
frames in order. Group: 3 members of one group; the union is exactly all frames,
each once, each producer's frames in order within each member.
"""

from __future__ import annotations

import os
import struct
import threading
import time

import numpy as np
import pytest
from conftest import start

import framebus as fb

TOTAL = int(os.environ.get("FRAMEBUS_STRESS_FRAMES", "1000000"))
PRODUCERS = 4
SUBSCRIBERS = 3
PER = TOTAL // PRODUCERS
# bounded, generous: scaled with the size of the run
LIMIT = max(120.0, TOTAL / 1_000_000 * 600.0)

FILL = bytes((i * 131 + 7) & 0xFF for i in range(256))
HEAD = struct.Struct("<BI")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(LIMIT) + 60)]


def filler(c: int) -> bytes:
    size = (c * 7919) % 97  # 0..96
    off = c % 61
    return FILL[off : off + size]


def payload(pid: int, c: int) -> bytes:
    return HEAD.pack(pid, c) + filler(c)


def produce(bus: fb.FrameBus, pid: int) -> int:
    """Chunks of 1..64 frames: every third chunk as single publishes, the rest as one batch."""
    c = 0
    j = 0
    while c < PER:
        n = min(PER - c, 1 + (j * 37 + pid * 11) % 64)
        frames = [payload(pid, k) for k in range(c, c + n)]
        if j % 3 == 0:
            for f in frames:
                bus.publish(f)
        else:
            bus.publish_batch(frames)
        c += n
        j += 1
    return c


def check_frame(p: bytes) -> tuple[int, int]:
    pid, c = HEAD.unpack_from(p)
    if p[5:] != filler(c):
        raise AssertionError(f"corrupt payload from producer {pid} counter {c}: {p!r}")
    return pid, c


def make_bus() -> fb.FrameBus:
    # ~4k frames / 256 KiB: producers fill it many times over
    return fb.FrameBus(
        ring_pow=12, ring_bytes=1 << 18, max_frame=4096, overflow="block", publish_timeout=LIMIT
    )


def test_stress_broadcast() -> None:
    bus = make_bus()
    try:
        subs = [bus.subscribe() for _ in range(SUBSCRIBERS)]
        total = PER * PRODUCERS

        def consume(sub: fb.Subscription) -> tuple[int, int]:
            expected = [0] * PRODUCERS
            seen = 0
            last_seq = -1
            deadline = time.monotonic() + LIMIT
            while seen < total:
                batch = sub.recv_batch(4096, timeout=30)
                if not batch:
                    raise AssertionError(
                        f"no frame within 30 s after {seen} of {total}: {expected}"
                    )
                for f in batch:
                    if f.seq != last_seq + 1:
                        raise AssertionError(f"seq {f.seq} after {last_seq}")
                    last_seq = f.seq
                    pid, c = check_frame(f.payload)
                    if c != expected[pid]:
                        raise AssertionError(
                            f"producer {pid}: got counter {c}, expected {expected[pid]} "
                            "(loss, duplicate or reorder)"
                        )
                    expected[pid] = c + 1
                seen += len(batch)
                if time.monotonic() > deadline:
                    raise AssertionError(f"too slow: {seen} of {total} in {LIMIT} s")
            assert expected == [PER] * PRODUCERS
            return seen, last_seq

        consumers = [start(lambda s=s: consume(s), f"consumer-{i}") for i, s in enumerate(subs)]
        producers = [start(lambda p=p: produce(bus, p), f"producer-{p}") for p in range(PRODUCERS)]
        for p in producers:
            assert p.finish(LIMIT) == PER
        for c in consumers:
            assert c.finish(LIMIT) == (total, total - 1)
        for s in subs:
            assert s.recv(0) is None  # nothing extra
        st = bus.stats()
        assert st["published"] == total
        assert st["dropped"] == 0
        assert st["ring_used"] == 0
    finally:
        bus.close()


def test_stress_group() -> None:
    bus = make_bus()
    try:
        members = [bus.subscribe(group="workers") for _ in range(SUBSCRIBERS)]
        watcher = bus.subscribe()  # a broadcast reader alongside, draining everything
        total = PER * PRODUCERS
        counts = [0] * SUBSCRIBERS
        stop = threading.Event()

        def consume(i: int) -> list[bytearray]:
            sub = members[i]
            seen = [bytearray(PER) for _ in range(PRODUCERS)]
            last = [-1] * PRODUCERS
            last_seq = -1
            while not stop.is_set():
                batch = sub.recv_batch(1024, timeout=0.2)
                for f in batch:
                    if f.seq <= last_seq:
                        raise AssertionError(f"member {i}: seq {f.seq} after {last_seq}")
                    last_seq = f.seq
                    pid, c = check_frame(f.payload)
                    if c <= last[pid]:
                        raise AssertionError(
                            f"member {i}: producer {pid} counter {c} after {last[pid]}"
                        )
                    last[pid] = c
                    seen[pid][c] += 1
                counts[i] += len(batch)
            return seen

        def watch() -> int:
            n = 0
            while n < total:
                batch = watcher.recv_batch(4096, timeout=30)
                if not batch:
                    raise AssertionError(f"watcher: no frame within 30 s after {n}")
                n += len(batch)
            return n

        consumers = [start(lambda i=i: consume(i), f"member-{i}") for i in range(SUBSCRIBERS)]
        w = start(watch, "watcher")
        producers = [start(lambda p=p: produce(bus, p), f"producer-{p}") for p in range(PRODUCERS)]
        for p in producers:
            assert p.finish(LIMIT) == PER
        assert w.finish(LIMIT) == total
        deadline = time.monotonic() + LIMIT
        while sum(counts) < total and time.monotonic() < deadline:
            if any(not c.is_alive() for c in consumers):
                break
            time.sleep(0.05)
        time.sleep(0.3)  # let a duplicate, if any, arrive before stopping
        stop.set()
        seen = [c.finish(30) for c in consumers]
        assert sum(counts) == total, f"members got {counts}, sum != {total}"
        for pid in range(PRODUCERS):
            union = sum(
                np.frombuffer(member[pid], dtype=np.uint8).astype(np.int64) for member in seen
            )
            missing = int((union == 0).sum())
            dup = int((union > 1).sum())
            assert (missing, dup) == (0, 0), f"producer {pid}: {missing} missing, {dup} duplicated"
        assert bus.stats()["dropped"] == 0
    finally:
        bus.close()
