"""Multi-threaded stress: 4 producers x 3 subscribers under overflow="block".

Each producer publishes its share of the run's frames as payload = producer id (1
byte) + per-producer counter (4 bytes) + a filler of varied length derived from the
counter, mixing single publishes and batches. The ring is small, so producers block
often.

Every test runs once per receive path of the consumers: recv_batch, recv_payloads
(payloads only: the producer id and counter in them carry the order) and
recv_frames (FrameBatch; its seqs, lengths, offsets and topic ids checked too). A
run publishes a third of FRAMEBUS_STRESS_FRAMES (default 1,000,000), so the three
paths together publish it.

Broadcast: every subscriber must see every frame exactly once, each producer's
frames in order (and with seqs, every seq in order). Group: 3 members of one
group; the union is exactly all frames, each once, each producer's frames (and the
seqs) in order within each member.
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
PATHS = ["recv_batch", "recv_payloads", "recv_frames"]
PER = TOTAL // len(PATHS) // PRODUCERS  # per producer, in the run of each path
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


def produce(bus: fb.FrameBus, pid: int) -> np.ndarray:
    """Chunks of 1..64 frames: every third chunk as single publishes, the rest as one
    batch. Returns the seq each counter was published at."""
    seqs = np.full(PER, -1, dtype=np.int64)
    c = 0
    j = 0
    while c < PER:
        n = min(PER - c, 1 + (j * 37 + pid * 11) % 64)
        frames = [payload(pid, k) for k in range(c, c + n)]
        if j % 3 == 0:
            for k, f in enumerate(frames):
                seqs[c + k] = bus.publish(f)
        else:
            first = bus.publish_batch(frames)
            seqs[c : c + n] = np.arange(first, first + n)
        c += n
        j += 1
    return seqs


def code(pid: int, c: int) -> int:
    return pid << 32 | c


def seqs_of(codes: list[int], published: list[np.ndarray]) -> np.ndarray:
    """The seqs the producers published the frames of these codes at."""
    a = np.array(codes, dtype=np.int64)
    pids, cs = a >> 32, a & 0xFFFFFFFF
    out = np.full(len(a), -1, dtype=np.int64)
    for pid, seqs in enumerate(published):
        mine = pids == pid
        out[mine] = seqs[cs[mine]]
    return out


def check_frame(p: bytes) -> tuple[int, int]:
    pid, c = HEAD.unpack_from(p)
    if p[5:] != filler(c):
        raise AssertionError(f"corrupt payload from producer {pid} counter {c}: {p!r}")
    return pid, c


def receive(
    sub: fb.Subscription, path: str, max_frames: int, timeout: float
) -> tuple[list[int] | None, list[bytes]]:
    """One read through the receive path: (seqs, or None for recv_payloads; payloads)."""
    if path == "recv_payloads":
        payloads = sub.recv_payloads(max_frames, timeout=timeout)
        if any(type(p) is not bytes for p in payloads):
            raise AssertionError("recv_payloads gave something else than bytes")
        return None, payloads
    if path == "recv_batch":
        frames = sub.recv_batch(max_frames, timeout=timeout)
        return [f.seq for f in frames], [f.payload for f in frames]
    batch = sub.recv_frames(max_frames, timeout=timeout)
    payloads = batch.payloads()
    lengths = np.array([len(p) for p in payloads], dtype=np.uint64)
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(batch) else lengths
    if not (np.array_equal(batch.lengths, lengths) and np.array_equal(batch.offsets, offsets)):
        raise AssertionError("a FrameBatch's lengths or offsets disagree with its payloads")
    if batch.nbytes != int(lengths.sum()):
        raise AssertionError("a FrameBatch's data size disagrees with its payloads")
    if len(batch) and ((batch.topic_ids != batch.topic_ids[0]).any() or batch.topic(0) != ""):
        raise AssertionError("a FrameBatch's topics are wrong (all frames are on topic '')")
    return batch.seqs.tolist(), payloads


def make_bus() -> fb.FrameBus:
    # ~4k frames / 256 KiB: producers fill it many times over
    return fb.FrameBus(
        ring_pow=12, ring_bytes=1 << 18, max_frame=4096, overflow="block", publish_timeout=LIMIT
    )


@pytest.mark.parametrize("path", PATHS)
def test_stress_broadcast(path: str) -> None:
    bus = make_bus()
    try:
        subs = [bus.subscribe() for _ in range(SUBSCRIBERS)]
        total = PER * PRODUCERS

        def consume(sub: fb.Subscription) -> tuple[int, int, list[int]]:
            expected = [0] * PRODUCERS
            codes: list[int] = []  # every frame's producer and counter, as received
            seen = 0
            last_seq = -1
            deadline = time.monotonic() + LIMIT
            while seen < total:
                seqs, batch = receive(sub, path, 4096, 30)
                if not batch:
                    raise AssertionError(
                        f"no frame within 30 s after {seen} of {total}: {expected}"
                    )
                if seqs is not None:
                    if seqs != list(range(last_seq + 1, last_seq + 1 + len(batch))):
                        raise AssertionError(f"seqs {seqs[:3]}... after {last_seq}")
                    last_seq = seqs[-1]
                for p in batch:
                    pid, c = check_frame(p)
                    if c != expected[pid]:
                        raise AssertionError(
                            f"producer {pid}: got counter {c}, expected {expected[pid]} "
                            "(loss, duplicate or reorder)"
                        )
                    expected[pid] = c + 1
                    codes.append(code(pid, c))
                seen += len(batch)
                if time.monotonic() > deadline:
                    raise AssertionError(f"too slow: {seen} of {total} in {LIMIT} s")
            assert expected == [PER] * PRODUCERS
            return seen, last_seq, codes

        consumers = [start(lambda s=s: consume(s), f"consumer-{i}") for i, s in enumerate(subs)]
        producers = [start(lambda p=p: produce(bus, p), f"producer-{p}") for p in range(PRODUCERS)]
        published = [p.finish(LIMIT) for p in producers]
        for c in consumers:
            seen, last_seq, codes = c.finish(LIMIT)
            # recv_payloads shows no seqs: its last_seq stays -1
            assert (seen, last_seq) == (total, -1 if path == "recv_payloads" else total - 1)
            # every frame where the producer's publish put it: the ring's whole order
            assert np.array_equal(seqs_of(codes, published), np.arange(total))
        for s in subs:
            assert s.recv(0) is None  # nothing extra
        st = bus.stats()
        assert st["published"] == total
        assert st["dropped"] == 0
        assert st["ring_used"] == 0
    finally:
        bus.close()


@pytest.mark.parametrize("path", PATHS)
def test_stress_group(path: str) -> None:
    bus = make_bus()
    try:
        members = [bus.subscribe(group="workers") for _ in range(SUBSCRIBERS)]
        watcher = bus.subscribe()  # a broadcast reader alongside, draining everything
        total = PER * PRODUCERS
        counts = [0] * SUBSCRIBERS
        stop = threading.Event()

        def consume(i: int) -> tuple[list[bytearray], list[int], list[int]]:
            sub = members[i]
            seen = [bytearray(PER) for _ in range(PRODUCERS)]
            codes: list[int] = []  # every frame's producer and counter, as received
            got_seqs: list[int] = []
            last = [-1] * PRODUCERS
            last_seq = -1
            while not stop.is_set():
                seqs, batch = receive(sub, path, 1024, 0.2)
                for seq in seqs or ():
                    if seq <= last_seq:
                        raise AssertionError(f"member {i}: seq {seq} after {last_seq}")
                    last_seq = seq
                got_seqs += seqs or ()
                for p in batch:
                    pid, c = check_frame(p)
                    if c <= last[pid]:
                        raise AssertionError(
                            f"member {i}: producer {pid} counter {c} after {last[pid]}"
                        )
                    last[pid] = c
                    seen[pid][c] += 1
                    codes.append(code(pid, c))
                counts[i] += len(batch)
            return seen, codes, got_seqs

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
        published = [p.finish(LIMIT) for p in producers]
        assert w.finish(LIMIT) == total
        deadline = time.monotonic() + LIMIT
        while sum(counts) < total and time.monotonic() < deadline:
            if any(not c.is_alive() for c in consumers):
                break
            time.sleep(0.05)
        time.sleep(0.3)  # let a duplicate, if any, arrive before stopping
        stop.set()
        results = [c.finish(30) for c in consumers]
        assert sum(counts) == total, f"members got {counts}, sum != {total}"
        for _, codes, got_seqs in results:
            # each member's frames in the ring's order (the seqs their publish gave)
            mapped = seqs_of(codes, published)
            assert (np.diff(mapped) > 0).all()
            if path != "recv_payloads":
                assert mapped.tolist() == got_seqs
        seen = [r[0] for r in results]
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
