"""Payloads of 1 KiB and more take the deferred-copy path of recv/recv_batch
(copied after the Frames exist, without the GIL once a batch reaches 64 KiB)."""

from __future__ import annotations

import random
import threading

import pytest

import framebus as fb


def payloads(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [
        rng.randbytes(rng.choice((1023, 1024, 1025, 4096, 65536 - 32, 100_000))) for _ in range(n)
    ]


@pytest.mark.parametrize("overflow", ["block", "overwrite"])
def test_large_batches_arrive_byte_exact(overflow: str) -> None:
    with fb.FrameBus(ring_bytes=1 << 24, overflow=overflow) as bus:
        sub = bus.subscribe()
        sent = payloads(300, seed=7)
        for i in range(0, len(sent), 50):
            bus.publish_batch(sent[i : i + 50], topic="big")
        got = []
        while len(got) < len(sent):
            batch = sub.recv_batch(64, timeout=5)
            assert batch, "frames went missing"
            got.extend(batch)
        assert [f.payload for f in got] == sent
        assert [f.seq for f in got] == list(range(len(sent)))
        assert {f.topic for f in got} == {"big"}
        assert sub.lagged == 0


def test_large_frames_single_recv_and_mixed_sizes() -> None:
    with fb.FrameBus(ring_bytes=1 << 22) as bus:
        sub = bus.subscribe()
        sent = [b"s" * 10, b"L" * 2000, b"m" * 1023, b"M" * 1024, b""]
        for p in sent:
            bus.publish(p)
        assert [sub.recv(timeout=5).payload for _ in sent] == sent


@pytest.mark.timeout(120)
def test_large_batches_between_threads() -> None:
    sent = payloads(2000, seed=11)
    with fb.FrameBus(ring_bytes=1 << 22, max_frame=1 << 17) as bus:
        sub = bus.subscribe()

        def produce() -> None:
            for i in range(0, len(sent), 25):
                bus.publish_batch(sent[i : i + 25], timeout=30)

        t = threading.Thread(target=produce)
        t.start()
        got: list[bytes] = []
        while len(got) < len(sent):
            batch = sub.recv_batch(100, timeout=30)
            assert batch, "frames went missing"
            got.extend(f.payload for f in batch)
        t.join(30)
        assert got == sent
