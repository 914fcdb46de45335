"""sub.recv_frames(n, borrow=True): a FrameBatch over the frames in place in the ring."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import numpy as np
import pytest
from test_recv_payloads import _publisher

import framebus as fb


def fields(frames: list[fb.Frame]) -> list[tuple[int, str, bytes, int]]:
    return [(f.seq, f.topic, f.payload, f.ts_ns) for f in frames]


def test_borrowed_batches_match_recv_batch_across_wraps(small_bus: Any) -> None:
    # 1000 frames of varied sizes through a 64 KiB ring: it wraps many times, and a
    # borrowed batch ends where the ring wraps (one span of memory)
    bus = small_bus()
    reference = bus.subscribe("a.*")
    borrowing = bus.subscribe("a.*")
    expected: list[fb.Frame] = []
    got: list[tuple[int, str, bytes, int]] = []
    sizes: list[int] = []
    for i in range(1000):
        bus.publish(b"%d" % i * (i % 13 + 1), "a.x" if i % 4 else "b.y")
        if i % 7 == 6 or i == 999:
            expected += reference.recv_batch(1000, timeout=0)
            while True:
                with borrowing.recv_frames(5, timeout=0, borrow=True) as batch:
                    if not batch:
                        break
                    assert batch.borrowed
                    sizes.append(len(batch))
                    got += fields(list(batch))
                    assert batch.payloads() == [f.payload for f in batch]
                    offs, lens = batch.offsets, batch.lengths
                    for k in range(len(batch)):
                        assert bytes(batch.data[offs[k] : offs[k] + lens[k]]) == batch[k].payload
                    assert batch.nbytes == int(lens.sum())
                assert not batch.borrowed
    assert got == fields(expected)
    assert len(got) == 750
    assert max(sizes) == 5 and min(sizes) >= 1


def test_borrowed_batch_holds_producers_back_until_released(small_bus: Any) -> None:
    bus = small_bus(overflow="error")
    sub = bus.subscribe()
    for i in range(3):
        bus.publish(b"first%d" % i)
    batch = sub.recv_frames(10, timeout=5, borrow=True)
    held = batch.array("u1").copy()
    n = 0
    with pytest.raises(fb.WouldBlock):
        while True:
            bus.publish(b"x" * 64)
            n += 1
    assert n > 0
    assert (batch.array("u1") == held).all()  # never overwritten while borrowed
    assert batch.payloads() == [b"first0", b"first1", b"first2"]
    with pytest.raises(RuntimeError, match="busy|already being read"):
        sub.recv_batch(1, timeout=0)
    with pytest.raises(RuntimeError, match="busy"):
        sub.recv_frames(1, timeout=0, borrow=True)
    batch.release()
    assert bus.try_publish(b"y") >= 0
    assert len(sub.recv_batch(n + 10, timeout=1)) == n + 1


def test_borrowed_batch_released_on_exception(small_bus: Any) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    bus.publish_batch([b"a", b"b"])
    with pytest.raises(KeyError):
        with sub.recv_frames(10, timeout=5, borrow=True) as batch:
            raise KeyError("consumer failed")
    assert not batch.borrowed
    bus.publish(b"c")
    assert [f.payload for f in sub.recv_batch(10, timeout=1)] == [b"c"]


def test_released_batch_keeps_fields_refuses_payloads(small_bus: Any) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    seqs = [bus.publish(b"p%d" % i, "t") for i in range(4)]
    with sub.recv_frames(10, timeout=5, borrow=True) as batch:
        kept = batch[1]
    assert kept.payload == b"p1" and kept.seq == seqs[1]
    assert batch.seqs.tolist() == seqs and batch.topic(3) == "t"
    for use in (batch.payloads, lambda: batch[0], lambda: batch.array(), lambda: list(batch)):
        with pytest.raises(ValueError, match="was released"):
            use()
    batch.release()  # twice is harmless


def test_borrowed_array_is_a_view_into_the_ring(small_bus: Any) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    rows = np.arange(40, dtype="<u4").reshape(5, 8)
    bus.publish_batch([r.tobytes() for r in rows])
    with sub.recv_frames(10, timeout=5, borrow=True) as batch:
        a = batch.array("<u4")
        assert not a.flags.owndata and not a.flags.writeable
        assert (a == rows).all()
        assert (batch.array("<u4", (2, 4)) == rows.reshape(5, 2, 4)).all()
        del a
    with pytest.raises(BufferError, match="outlived"):
        with sub.recv_frames(10, timeout=0, borrow=True) as batch:
            pass  # empty: nothing borrowed
        bus.publish_batch([r.tobytes() for r in rows])
        with sub.recv_frames(10, timeout=5, borrow=True) as batch:
            kept = batch.array("<u4")
    assert (kept.shape, batch.borrowed) == ((5, 8), False)
    assert sub.recv_batch(10, timeout=0) == []  # the frames were handed back
    bus.publish(b"raw")
    with pytest.raises(BufferError, match="outlived"):
        with sub.recv_frames(10, timeout=5, borrow=True) as batch:
            raw = np.frombuffer(batch.data, dtype="u1")
    assert bytes(raw[:0]) == b""


def test_borrowed_array_of_unevenly_spaced_frames_is_a_copy(small_bus: Any) -> None:
    bus = small_bus()
    sub = bus.subscribe("keep")
    for i in range(6):
        bus.publish(bytes([i]) * 8, "keep" if i % 2 == 0 else "skip" * (i + 1))
        bus.publish(bytes([i]) * 8, "keep")
    with sub.recv_frames(20, timeout=5, borrow=True) as batch:
        a = batch.array()
        assert a[:, 0].tolist() == [0, 0, 1, 2, 2, 3, 4, 4, 5]
        assert a.flags.owndata or a.base is not None


def test_borrow_refused_where_recv_view_is(make_bus: Any) -> None:
    bus = make_bus(preset="memory_optimized")
    g = bus.subscribe(group="g")
    with pytest.raises(ValueError, match="not available on a group subscription"):
        g.recv_frames(1, timeout=0, borrow=True)
    env = bus.subscribe(envelopes=True)
    with pytest.raises(ValueError, match="envelopes=True"):
        env.recv_frames(1, timeout=0, borrow=True)
    with pytest.raises(ValueError, match="max_frames must be >= 1, got 0"):
        bus.subscribe().recv_frames(0, timeout=0, borrow=True)
    over = make_bus(preset="memory_optimized", overflow="overwrite")
    with pytest.raises(ValueError, match="not available in overwrite mode"):
        over.subscribe().recv_frames(1, timeout=0, borrow=True)


def test_close_while_borrowed_waits_for_the_release(make_bus: Any) -> None:
    bus = make_bus(preset="memory_optimized")
    sub = bus.subscribe()
    bus.publish_batch([b"z1", b"z2"])
    batch = sub.recv_frames(10, timeout=5, borrow=True)
    sub.close()  # pending until the release
    assert batch.payloads() == [b"z1", b"z2"]
    batch.release()
    with pytest.raises(fb.BusClosed):
        sub.recv_frames(1, timeout=0, borrow=True)
    sub2 = bus.subscribe()
    bus.publish(b"z3")
    batch = sub2.recv_frames(10, timeout=5, borrow=True)
    bus.close()  # the mapping stays until the batch is released
    assert batch.payloads() == [b"z3"]
    batch.release()


@pytest.mark.xproc
def test_borrowed_batches_across_processes(name: str) -> None:
    bus = fb.FrameBus.create_shared(name, preset="memory_optimized")
    try:
        sub = bus.subscribe()
        proc = mp.get_context("spawn").Process(target=_publisher, args=(name, 1000))
        proc.start()
        got: list[bytes] = []
        seqs: list[int] = []
        while len(got) < 1000:
            with sub.recv_frames(256, timeout=30, borrow=True) as batch:
                assert batch, "timed out waiting for the other process's frames"
                got += batch.payloads()
                seqs += batch.seqs.tolist()
        proc.join(30)
        assert proc.exitcode == 0
        assert got == [b"p%d" % j for j in range(1000)]
        assert seqs == list(range(seqs[0], seqs[0] + 1000))
    finally:
        bus.close()
