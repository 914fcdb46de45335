"""bus.loan (write in place) and sub.recv_view (read in place)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import framebus as fb


def test_loan_publishes_in_place() -> None:
    with fb.FrameBus(preset="default") as bus:
        sub = bus.subscribe()
        pixels = np.arange(480 * 640, dtype=np.uint32).astype(np.uint8).reshape(480, 640)
        with bus.loan(pixels.nbytes, topic="cam.0") as buf:
            buf[:] = pixels.tobytes()
        f = sub.recv(timeout=5)
        assert (f.seq, f.topic, f.payload) == (0, "cam.0", pixels.tobytes())
        loan = bus.loan(3)
        assert loan.seq == 1
        with loan as buf:
            buf[:] = b"abc"
        assert sub.recv(timeout=5).payload == b"abc"
        with pytest.raises(ValueError, match="released"):
            buf[0] = 1  # the view is dead once the loan is published


def test_loan_aborted_by_an_exception_is_skipped() -> None:
    with fb.FrameBus(preset="memory_optimized") as bus:
        sub = bus.subscribe()
        with pytest.raises(KeyError):
            with bus.loan(10, topic="t") as buf:
                buf[:2] = b"xx"
                raise KeyError("boom")
        bus.publish(b"next", topic="t")
        f = sub.recv(timeout=5)
        assert (f.payload, f.seq) == (b"next", 1)  # seq 0 was given up
        assert sub.recv(timeout=0) is None


def test_loan_errors() -> None:
    with fb.FrameBus(preset="memory_optimized", max_frame=1024, overflow="error") as bus:
        with pytest.raises(fb.FrameTooLarge):
            bus.loan(1025)
        with pytest.raises(ValueError, match="loan size must be >= 0"):
            bus.loan(-1)
        loan = bus.loan(4)
        loan.commit()
        with pytest.raises(RuntimeError, match="already committed"):
            loan.commit()
        sub = bus.subscribe()
        with pytest.raises(fb.WouldBlock, match="loan: the ring is full"):
            for _ in range(1_000_000):
                bus.loan(1000).commit()
        assert sub.backlog > 0


def test_loan_view_must_not_outlive_the_loan() -> None:
    with fb.FrameBus(preset="memory_optimized") as bus:
        sub = bus.subscribe()
        loan = bus.loan(8)
        buf = loan.__enter__()
        buf[:] = b"\x07" * 8
        part = pickle.PickleBuffer(buf)  # holds an export of the loaned view
        with pytest.raises(BufferError, match="outlived the loan; the frame was published"):
            loan.__exit__(None, None, None)
        del part
        assert sub.recv(timeout=5).payload == b"\x07" * 8


def test_recv_view_borrows_without_copy() -> None:
    with fb.FrameBus(preset="memory_optimized") as bus:
        sub = bus.subscribe("cam.*")
        bus.publish(b"skip", topic="other")
        frame = bytes(range(256)) * 10
        seq = bus.publish(frame, topic="cam.0")
        with sub.recv_view(timeout=5) as v:
            assert (v.seq, v.topic) == (seq, "cam.0")
            assert v.payload.readonly and bytes(v.payload) == frame
            a = v.array("u1", (10, 256))
            assert a.shape == (10, 256) and int(a[3, 255]) == 255
            with pytest.raises(RuntimeError, match="already being read"):
                sub.recv(timeout=0)
            del a
        assert sub.recv_view(timeout=0.01) is None
        bus.publish(b"after", topic="cam.1")
        assert sub.recv(timeout=5).payload == b"after"


def test_recv_view_holds_back_producers_until_released() -> None:
    cfg = fb.BusConfig.preset("memory_optimized", overflow="error")
    with fb.FrameBus(cfg) as bus:
        sub = bus.subscribe()
        bus.publish(b"first")
        view = sub.recv_view(timeout=5)
        n = 0
        with pytest.raises(fb.WouldBlock):
            while True:
                bus.publish(b"x" * 64)
                n += 1
        assert bytes(view.payload) == b"first"  # never overwritten while borrowed
        view.release()
        assert bus.try_publish(b"y") >= 0
        assert len(sub.recv_batch(n + 10, timeout=1)) == n + 1


def test_recv_view_refused_for_groups_and_overwrite() -> None:
    with fb.FrameBus(preset="memory_optimized") as bus:
        g = bus.subscribe(group="g")
        with pytest.raises(ValueError, match="not available on a group subscription"):
            g.recv_view(timeout=0)
    with fb.FrameBus(preset="memory_optimized", overflow="overwrite") as bus:
        s = bus.subscribe()
        with pytest.raises(ValueError, match="not available in overwrite mode"):
            s.recv_view(timeout=0)


def test_recv_view_of_closed_bus() -> None:
    bus = fb.FrameBus(preset="memory_optimized")
    sub = bus.subscribe()
    bus.publish(b"z")
    view = sub.recv_view(timeout=5)
    bus.close()  # the mapping stays until the view is released
    assert bytes(view.payload) == b"z"
    view.release()
    with pytest.raises(fb.BusClosed):
        sub.recv_view(timeout=0)
