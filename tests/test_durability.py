"""Every publishing API on a wal_sync bus returns only once what it wrote is durable.

The mode is chosen once, when the bus is made, and checked by the binding's write
paths (single frames, batches, loans); DataPort and EventBus publish through them.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import framebus as fb

pytestmark = pytest.mark.timeout(120)


def wal_bus(path: Path) -> fb.FrameBus:
    return fb.FrameBus(preset="memory_optimized", wal_dir=str(path), wal_sync=True)


def durable(bus: fb.FrameBus) -> int:
    return int(bus.stats()["wal_durable_seq"])


def test_every_publishing_api_waits_for_the_wal(tmp_path: Path) -> None:
    with wal_bus(tmp_path) as bus:
        seqs: list[int] = []

        def check(seq: int) -> None:
            assert seq >= 0
            assert durable(bus) >= seq, f"seq {seq} returned before it was durable"
            seqs.append(seq)

        for i in range(20):
            check(bus.publish(b"p%d" % i, "plain"))
            check(bus.try_publish(b"t%d" % i, "plain"))
            first = bus.publish_batch([b"a", b"b", b"c"], "plain")
            check(first + 2)
            check(bus.publish(fb.Envelope("env.t", b"e")))
            with bus.loan(4, topic="loan") as buf:
                buf[:] = b"loan"
            loan = bus.loan(2, topic="loan")
            loan_seq = loan.seq
            loan.__enter__()[:] = b"ok"
            assert loan.commit() == loan_seq
            check(loan_seq)

        port = bus.data_port("p", window=1024)
        assert port.recv_batch(1, timeout=0) == []  # opens the receiver: credits granted
        for i in range(20):
            check(port.send_frame(b"f%d" % i))
            first, sent = port.send_batch([b"x", b"y"])
            assert sent == 2
            check(first + 1)
            env = fb.Envelope("ignored", b"pe")
            check(port.send_frame(env))
            envs = [fb.Envelope("ignored", b"b%d" % k) for k in range(3)]
            first, sent = port.send_batch(envs)
            assert sent == 3
            check(first + 2)
            assert [e.seq for e in envs] == [first, first + 1, first + 2]

        ev = bus.events
        for i in range(20):
            check(ev.publish("ctl.x", {"i": i}))

        # nothing returned twice, and the log holds every frame up to the last
        assert len(set(seqs)) == len(seqs)
        assert bus.flush(10)
        replayed = {f.seq for f in bus.replay()}
        assert set(seqs) <= replayed


class _Recorder:
    """A durability waiter that records what it was asked for, in order."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.lock = threading.Lock()

    def wait_durable(self, seq: int, timeout: float | None = None) -> bool:
        with self.lock:
            self.asked.append(seq)
        return True


def test_the_one_mode_switch_covers_ports_and_events(make_bus: Any) -> None:
    bus = make_bus(preset="memory_optimized")
    rec = _Recorder()
    bus._set_durability(rec)

    seq = bus.publish(b"a")
    assert rec.asked == [seq]
    first = bus.publish_batch([b"b", b"c"])
    assert rec.asked[-1] == first + 1
    with bus.loan(1) as buf:
        buf[:] = b"l"
    assert rec.asked[-1] == first + 2

    port = bus.data_port("q", window=8)
    port.recv_batch(1, timeout=0)
    assert port.send_frame(b"d") == first + 3
    assert rec.asked[-1] == first + 3
    first2, sent = port.send_batch([b"e", b"f"])
    assert (first2, sent) == (first + 4, 2) and rec.asked[-1] == first + 5

    ev = bus.events
    responder = ev.subscribe("svc.echo", lambda m: {"echo": m})
    try:
        raw = bus.subscribe("_ev.>")
        before = len(rec.asked)
        assert ev.request("svc.echo", 7, timeout=10) == {"echo": 7}
        request_frame = raw.recv(timeout=5)
        assert request_frame is not None
        # the request frame waited before the requester did; the reply is published by
        # the responder's thread, through the same path
        assert request_frame.seq in rec.asked[before:]
        for _ in range(1000):
            with rec.lock:
                if len(rec.asked) >= before + 2:
                    break
            threading.Event().wait(0.01)
        assert len(rec.asked) == before + 2
        raw.close()
    finally:
        responder.close()

    with pytest.raises(TypeError, match="wait_durable"):
        bus._set_durability(object())
    bus._set_durability(None)
    n = len(rec.asked)
    bus.publish(b"no wait")
    assert len(rec.asked) == n


def test_envelope_timestamp_is_the_ring_records(make_bus: Any) -> None:
    bus = make_bus(preset="memory_optimized")
    sub = bus.subscribe("_port.>")
    port = bus.data_port("ts", window=64)
    port.recv_batch(1, timeout=0)
    one = fb.Envelope("x", b"1")
    port.send_frame(one)
    batch = [fb.Envelope("x", b"%d" % i) for i in range(3)]
    port.send_batch(batch)
    frames = sub.recv_batch(10, timeout=5)
    assert [f.seq for f in frames] == [one.seq] + [e.seq for e in batch]
    assert [f.ts_ns for f in frames] == [one.ts_ns] + [e.ts_ns for e in batch]
    received = port.recv_batch(10, timeout=5)
    assert [(e.seq, e.ts_ns) for e in received] == [(one.seq, one.ts_ns)] + [
        (e.seq, e.ts_ns) for e in batch
    ]

    plain = bus.subscribe("env.>")
    env = fb.Envelope("env.a", b"a")
    bus.publish(env)
    frame = plain.recv(timeout=5)
    assert frame is not None and (frame.seq, frame.ts_ns) == (env.seq, env.ts_ns)


class _Failing:
    def wait_durable(self, seq: int, timeout: float | None = None) -> bool:
        raise fb.WalError(f"frame {seq} is not durable: the WAL stopped writing")


def test_a_send_that_is_written_but_not_durable_spends_its_credit(make_bus: Any) -> None:
    bus = make_bus(preset="memory_optimized")
    port = bus.data_port("degraded", window=8)
    port.recv_batch(1, timeout=0)
    bus._set_durability(_Failing())
    with pytest.raises(fb.WalError, match="not durable"):
        port.send_frame(b"a")
    with pytest.raises(fb.WalError, match="not durable"):
        port.send_batch([b"b", b"c"])
    # the frames are in the ring, counted as sent, their credits spent
    assert (port.sent, port.held, port.available) == (3, 0, 5)
    bus._set_durability(None)
    assert [f.payload for f in port.recv_batch(10, timeout=5)] == [b"a", b"b", b"c"]
