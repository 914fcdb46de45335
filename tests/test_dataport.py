"""DataPort: exact credit accounting, WouldBlock points, callbacks, Envelopes,
backpressure without growth, and ports between processes on a shared bus."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import start

import framebus as fb
from framebus.envelope import MSGPACK


@pytest.fixture
def bus(make_bus: Callable[..., fb.FrameBus]) -> fb.FrameBus:
    return make_bus()


def _wait_for(cond: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


# ------------------------------------------------------------------ credits


def test_no_receiver_means_no_credit(bus: fb.FrameBus) -> None:
    port = bus.data_port("p")
    with pytest.raises(fb.WouldBlock, match="no credit"):
        port.send_frame(b"x")
    with pytest.raises(fb.WouldBlock):
        port.acquire_credit(4)
    with pytest.raises(fb.WouldBlock):
        port.send_batch([b"a", b"b"])
    assert port.stats()["would_block"] == 3
    assert port.stats()["sent"] == 0
    assert bus.stats()["published"] == 0  # nothing went out without a credit


def test_exact_wouldblock_points(bus: fb.FrameBus) -> None:
    tx = bus.data_port("p", window=5)
    rx = bus.data_port("p", window=5)
    assert rx.recv(timeout=0) is None  # opens the receiver: grants the window
    assert tx.available == 5
    assert tx.acquire_credit(3) == 3
    assert (tx.held, tx.available) == (3, 2)
    assert tx.acquire_credit(10) == 2  # only what the pool holds
    assert (tx.held, tx.available) == (5, 0)
    with pytest.raises(fb.WouldBlock):
        tx.acquire_credit(1)
    for i in range(5):
        assert tx.send_frame(b"%d" % i) == i
    with pytest.raises(fb.WouldBlock):
        tx.send_frame(b"6th")
    # consuming returns credits one for one
    assert [f.payload for f in rx.recv_batch(2, timeout=0)] == [b"0", b"1"]
    assert tx.available == 2
    assert tx.send_frame(b"5") == 5  # takes one from the pool by itself
    assert tx.send_frame(b"6") == 6
    with pytest.raises(fb.WouldBlock):
        tx.send_frame(b"7")
    assert [f.payload for f in rx.recv_batch(10, timeout=0)] == [b"2", b"3", b"4", b"5", b"6"]
    assert tx.available == 5
    s = tx.stats()
    assert (s["sent"], s["would_block"]) == (7, 3)
    assert rx.stats()["received"] == 7


def test_send_batch_sends_the_prefix_credit_covers(bus: fb.FrameBus) -> None:
    tx = bus.data_port("p", window=3)
    rx = bus.data_port("p", window=3)
    rx.recv(timeout=0)
    first, sent = tx.send_batch([b"a", b"b", b"c", b"d", b"e"])
    assert (first, sent) == (0, 3)
    with pytest.raises(fb.WouldBlock):
        tx.send_batch([b"d", b"e"])
    assert [f.payload for f in rx.recv_batch(10, timeout=0)] == [b"a", b"b", b"c"]
    assert tx.send_batch([b"d", b"e"]) == (3, 2)
    with pytest.raises(ValueError, match="at least one"):
        tx.send_batch([])
    with pytest.raises(TypeError, match="all Envelopes or all bytes"):
        tx.send_batch([b"x", fb.Envelope("t", b"y")])
    assert (tx.held, tx.available) == (0, 1)  # the refused calls took nothing
    assert [f.payload for f in rx.recv_batch(10, timeout=0)] == [b"d", b"e"]


def test_refused_send_keeps_its_credit(bus: fb.FrameBus) -> None:
    small = bus.config.max_frame
    tx = bus.data_port("p", window=2)
    rx = bus.data_port("p", window=2)
    rx.recv(timeout=0)
    with pytest.raises(fb.FrameTooLarge):
        tx.send_frame(b"x" * (small + 1))
    with pytest.raises(TypeError):
        tx.send_frame(12345)
    assert tx.held + tx.available == 2  # neither failure spent a credit
    assert tx.stats()["sent"] == 0


def test_acquire_waits_for_a_grant(bus: fb.FrameBus) -> None:
    tx = bus.data_port("p", window=1)
    rx = bus.data_port("p", window=1)
    rx.recv(timeout=0)
    tx.send_frame(b"first")
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(tx.acquire_credit(1, timeout=30)))
    waiter.start()
    time.sleep(0.05)
    assert got == []  # still waiting: no credit yet
    assert rx.recv(timeout=5).payload == b"first"  # consuming grants one
    waiter.join(30)
    assert got == [1]
    with pytest.raises(fb.WouldBlock):
        tx.acquire_credit(1, timeout=0.05)


def test_close_wakes_a_waiting_sender(bus: fb.FrameBus) -> None:
    tx = bus.data_port("p", window=1)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            tx.acquire_credit(1, timeout=None)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.05)
    tx.close()
    t.join(10)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], fb.BusClosed)
    with pytest.raises(fb.BusClosed):
        tx.send_frame(b"x")


def test_one_receiver_per_port(bus: fb.FrameBus) -> None:
    a = bus.data_port("p")
    b = bus.data_port("p")
    a.recv(timeout=0)
    with pytest.raises(fb.FrameBusError, match="already has a receiver"):
        b.recv(timeout=0)
    a.close()
    assert b.recv(timeout=0) is None  # free again once the first one closed


def test_receiver_close_takes_the_pool_to_zero(bus: fb.FrameBus) -> None:
    tx = bus.data_port("p", window=8)
    rx = bus.data_port("p", window=8)
    rx.recv(timeout=0)
    assert tx.acquire_credit(3) == 3
    rx.close()
    assert tx.available == 0
    tx.close()  # gives its held credits back: nobody can use them, but none vanish
    assert bus.data_port("p").available == 3


def test_bad_arguments(bus: fb.FrameBus) -> None:
    for bad in ["", "a b", "a.*", "a..b"]:
        with pytest.raises(ValueError, match="data port name"):
            bus.data_port(bad)
    with pytest.raises(ValueError, match="window"):
        bus.data_port("p", window=0)
    with pytest.raises(ValueError, match="on_deadline"):
        bus.data_port("p", on_deadline="later")
    port = bus.data_port("p")
    with pytest.raises(ValueError, match="n must be"):
        port.acquire_credit(0)
    with pytest.raises(TypeError, match="callable"):
        port.on_frame(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------- callbacks


def test_on_frame_delivers_everything_and_returns_credit(bus: fb.FrameBus) -> None:
    tx = bus.data_port("p", window=16)
    rx = bus.data_port("p", window=16)
    got: list[bytes] = []
    rx.on_frame(lambda f: got.append(f.payload))
    total = 5000
    i = 0
    while i < total:
        tx.acquire_credit(16, timeout=30)
        while tx.held and i < total:
            tx.send_frame(struct.pack("<I", i))
            i += 1
    _wait_for(lambda: len(got) == total, "all frames")
    assert [struct.unpack("<I", p)[0] for p in got] == list(range(total))
    _wait_for(lambda: tx.available + tx.held == 16, "credits back")
    with pytest.raises(fb.FrameBusError, match="on_frame callback"):
        rx.recv(timeout=0)


def test_callback_errors_are_counted_and_the_port_goes_on(
    bus: fb.FrameBus, caplog: pytest.LogCaptureFixture
) -> None:
    tx = bus.data_port("p", window=4)
    rx = bus.data_port("p", window=4)
    seen: list[bytes] = []

    def callback(frame: fb.Frame) -> None:
        seen.append(frame.payload)
        if frame.payload.startswith(b"bad"):
            raise RuntimeError(f"cannot take {frame.payload!r}")

    rx.on_frame(callback)
    payloads = [b"ok0", b"bad1", b"ok2", b"bad3", b"ok4", b"ok5"]
    for p in payloads:
        tx.acquire_credit(1, timeout=30)
        tx.send_frame(p)
    _wait_for(lambda: len(seen) == len(payloads), "every callback")
    _wait_for(lambda: tx.available + tx.held == 4, "every credit back")
    assert seen == payloads
    assert rx.stats()["callback_errors"] == 2
    assert isinstance(rx.last_error, RuntimeError)
    assert "bad3" in str(rx.last_error)
    assert sum("callback" in r.message and "failed" in r.message for r in caplog.records) == 2


def test_slow_receiver_stops_the_sender_without_growth(bus: fb.FrameBus) -> None:
    window = 8
    tx = bus.data_port("p", window=window)
    rx = bus.data_port("p", window=window)
    in_flight_max = 0
    sent = 0
    done = 0
    lock = threading.Lock()

    def slow(frame: fb.Frame) -> None:
        nonlocal done
        time.sleep(0.002)
        with lock:
            done += 1

    rx.on_frame(slow)
    used_max = 0
    while sent < 200:
        tx.acquire_credit(1, timeout=30)
        tx.send_frame(b"x" * 100)
        sent += 1
        with lock:
            in_flight_max = max(in_flight_max, sent - done)
        used_max = max(used_max, bus.stats()["ring_used"])
    _wait_for(lambda: done == 200, "the slow receiver")
    # sent but not yet handled never exceeds the window (+1: the frame in the callback)
    assert in_flight_max <= window + 1
    assert used_max <= window + 1
    assert tx.stats()["would_block"] == 0  # the sender waited for credit instead


# ---------------------------------------------------------------- envelopes


def test_envelopes_through_a_port(bus: fb.FrameBus) -> None:
    tx = bus.data_port("p", window=8)
    rx = bus.data_port("p", window=8, on_deadline="drop")
    rx.recv(timeout=0)
    env = fb.Envelope("cam.0", b"pixels", src="cam", dst="sink", corr_id=9, priority=3)
    seq = tx.send_frame(env)
    assert env.seq == seq
    late = fb.Envelope("cam.0", b"late", deadline_ns=time.time_ns() - 1)
    tx.send_frame(late)
    tx.send_frame(b"raw")
    msg = fb.Envelope("cam.0", {"k": [1, 2]}, content_type=MSGPACK)
    assert tx.send_batch([msg, msg.replace(corr_id=1)]) == (seq + 3, 2)
    items = rx.recv_batch(10, timeout=1)
    assert items[0] == env and items[0].seq == seq and items[0].ts_ns is not None
    assert items[0].deadline_missed is False
    assert isinstance(items[1], fb.Frame) and items[1].payload == b"raw"
    assert items[2].payload == {"k": [1, 2]} and items[3].corr_id == 1
    assert len(items) == 4  # the late one was dropped ...
    assert rx.stats()["deadline_misses"] == 1
    assert bus.stats()["deadline_misses"] == 1
    assert tx.available == 8  # ... and still returned its credit


def test_deliver_flagged_and_refused_schema(bus: fb.FrameBus) -> None:
    tx = bus.data_port("p")
    rx = bus.data_port("p", schema_versions={2})
    rx.recv(timeout=0)
    tx.send_frame(fb.Envelope("t", b"v1", schema_ver=1))
    tx.send_frame(fb.Envelope("t", b"v2", schema_ver=2, deadline_ns=1))
    items = rx.recv_batch(10, timeout=1)
    assert [(e.payload, e.deadline_missed) for e in items] == [(b"v2", True)]
    assert rx.stats()["decode_errors"] == 1


def test_iteration_and_async(bus: fb.FrameBus) -> None:
    tx = bus.data_port("p", window=4)
    rx = bus.data_port("p", window=4)
    rx.recv(timeout=0)
    tx.send_frame(b"a")
    tx.send_frame(b"b")
    it = iter(rx)
    assert next(it).payload == b"a"

    async def main() -> list[bytes]:
        out = [(await rx.arecv(timeout=5)).payload]
        tx.send_frame(b"c")
        async for f in rx:
            out.append(f.payload)
            if len(out) == 2:
                break
        assert await rx.arecv(timeout=0.01) is None
        return out

    assert asyncio.run(main()) == [b"b", b"c"]
    rx.close()
    assert list(rx) == []  # a closed port ends iteration


def test_bus_close_closes_ports(make_bus: Callable[..., fb.FrameBus]) -> None:
    bus = make_bus()
    rx = bus.data_port("p")
    rx.on_frame(lambda f: None)
    tx = bus.data_port("p")
    bus.close()
    assert rx.closed and tx.closed
    assert not [t for t in threading.enumerate() if t.name.startswith("framebus-port")]


# ------------------------------------------------------------ across processes


def _receiver(name: str, count: int, ready: Any, result: Any, mode: str = "items") -> None:
    bus = fb.FrameBus.attach(name)
    try:
        rx = bus.data_port("xp", window=32)
        got: list[int] = []
        rx.recv(timeout=0)
        ready.set()
        while len(got) < count:
            if mode == "payloads":
                payloads = rx.recv_payloads(64, timeout=30)
            elif mode == "frames":
                payloads = rx.recv_frames(64, timeout=30).payloads()
            else:
                payloads = [item.payload for item in rx.recv_batch(64, timeout=30)]
            for p in payloads:
                got.append(struct.unpack("<I", p[:4])[0])
        result.put((got == list(range(count)), len(got), rx.stats()["received"]))
    finally:
        bus.close()


def _sender(name: str, count: int, result: Any) -> None:
    bus = fb.FrameBus.attach(name)
    try:
        tx = bus.data_port("xp")
        for i in range(count):
            tx.acquire_credit(1, timeout=30)
            tx.send_frame(struct.pack("<I", i))
        result.put(tx.stats()["sent"])
    finally:
        bus.close()


def _start_receiver(name: str, count: int, mode: str = "items") -> tuple[Any, Any, Any]:
    """A receiver of `count` frames on port "xp" in a spawned process (reading with
    recv_batch, recv_payloads or recv_frames by `mode`), once it has granted its window:
    (context, process, result queue)."""
    ctx = mp.get_context("spawn")
    ready, result = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_receiver, args=(name, count, ready, result, mode))
    proc.start()
    assert ready.wait(60)
    return ctx, proc, result


@pytest.mark.timeout(120)
@pytest.mark.xproc
def test_port_between_processes(name: str) -> None:
    count = 3000
    bus = fb.FrameBus.create_shared(name, preset="default")
    try:
        ctx, rx, result = _start_receiver(name, count)
        tx = ctx.Process(target=_sender, args=(name, count, result))
        tx.start()
        outcomes = [result.get(timeout=90), result.get(timeout=90)]
        tx.join(30)
        rx.join(30)
        assert tx.exitcode == 0 and rx.exitcode == 0
        assert count in outcomes  # the sender's count
        assert (True, count, count) in outcomes  # the receiver got all, in order
        # this process sees the shared pool: the receiver closed, so it was emptied
        assert bus.data_port("xp").available == 0
    finally:
        bus.close()


@pytest.mark.timeout(120)
@pytest.mark.xproc
@pytest.mark.parametrize("mode", ["items", "payloads", "frames"])
def test_sender_here_receiver_there(name: str, mode: str) -> None:
    count = 500
    bus = fb.FrameBus.create_shared(name, preset="default")
    try:
        _, proc, result = _start_receiver(name, count, mode)
        tx = bus.data_port("xp")
        assert tx.available == 32  # granted by the other process
        with pytest.raises(fb.FrameBusError, match="already has a receiver"):
            bus.data_port("xp").recv(timeout=0)
        for i in range(count):
            tx.acquire_credit(1, timeout=30)
            tx.send_frame(struct.pack("<I", i) + b"x" * 60)
        assert result.get(timeout=90) == (True, count, count)
        proc.join(30)
        assert proc.exitcode == 0
    finally:
        bus.close()


def test_raw_receiving_returns_credit_and_keeps_envelopes_encoded(bus: fb.FrameBus) -> None:
    np = pytest.importorskip("numpy")
    port = bus.data_port("raw", window=8)
    assert port.recv_payloads(4, timeout=0) == []  # opens the receiver: 8 credits
    assert len(port.recv_frames(4, timeout=0)) == 0
    first, sent = port.send_batch([b"a%d" % i for i in range(8)])
    assert (sent, port.available) == (8, 0)
    assert port.recv_payloads(3, timeout=1) == [b"a0", b"a1", b"a2"]
    batch = port.recv_frames(10, timeout=1)
    assert batch.payloads() == [b"a%d" % i for i in range(3, 8)]
    assert batch.seqs.tolist() == list(range(first + 3, first + 8))
    assert batch.seqs.dtype == np.uint64
    port._flush()  # what is pending goes back before a wait; here at once
    assert port.available == 8 and port.stats()["received"] == 8
    env = fb.Envelope("ignored", b"payload")
    port.send_frame(env)
    (raw,) = port.recv_payloads(1, timeout=1)
    assert fb.Envelope.decode(raw).payload == b"payload"
    with pytest.raises(ValueError, match="max_frames must be >= 1"):
        port.recv_payloads(0)


def test_one_stream_through_alternating_receive_paths(bus: fb.FrameBus) -> None:
    """recv_batch, recv_payloads and recv_frames in turn on one port, with varied
    max_frames: together they hand over exactly the sent stream (payloads and seqs,
    in order), and each returns its frames' credits, so a sender that can hold no
    more than the window keeps going to the end."""
    pytest.importorskip("numpy")
    count, window = 2000, 16
    tx = bus.data_port("alt", window=window)
    rx = bus.data_port("alt", window=window)
    assert rx.recv_payloads(1, timeout=0) == []  # opens the receiver: grants the window
    sent = [struct.pack("<I", i) + b"%d" % i * (i % 5) for i in range(count)]

    def send() -> list[int]:
        seqs = []
        for p in sent:
            tx.acquire_credit(1, timeout=30)  # WouldBlock, not a hang, if credit stops
            seqs.append(tx.send_frame(p))
        return seqs

    sender = start(send, "port-sender")
    got: list[tuple[int | None, bytes]] = []  # (seq, or None for recv_payloads; payload)
    calls = 0
    while len(got) < count:
        how, max_frames = calls % 3, 1 + (calls * 7) % 40
        if how == 0:
            frames = rx.recv_batch(max_frames, timeout=30)
            assert len({f.topic for f in frames}) <= 1
            new = [(f.seq, f.payload) for f in frames]
        elif how == 1:
            new = [(None, p) for p in rx.recv_payloads(max_frames, timeout=30)]
        else:
            batch = rx.recv_frames(max_frames, timeout=30)
            assert {batch.topic(i) for i in range(len(batch))} <= {"_port.alt.b"}
            new = list(zip(batch.seqs.tolist(), batch.payloads(), strict=True))
        assert 0 < len(new) <= max_frames, f"nothing within 30 s after {len(got)} frames"
        got += new
        calls += 1
    seqs = sender.finish(60)
    assert [p for _, p in got] == sent
    assert [s for s, _ in got if s is not None] == [
        seq for seq, (s, _) in zip(seqs, got, strict=True) if s is not None
    ]
    assert seqs == list(range(seqs[0], seqs[0] + count))
    assert rx.recv_payloads(1, timeout=0.01) == []  # nothing more; pending credits go back
    assert (tx.available, tx.held) == (window, 0)  # every credit came back
    assert (tx.stats()["sent"], tx.stats()["would_block"]) == (count, 0)
    assert rx.stats()["received"] == count


def test_public_names(bus: fb.FrameBus) -> None:
    assert type(bus.data_port("p")) is fb.DataPort
    assert type(bus.events) is fb.EventBus
    assert type(bus.events.subscribe("x")) is fb.EventSubscription
