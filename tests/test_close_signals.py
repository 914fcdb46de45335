"""close(), timeouts, signals and threads.

Waits in these tests only give other threads a chance to block first; no
assertion depends on how long anything took. Signal tests use SIGALRM, so
their pytest-timeout runs in a thread instead of on SIGALRM.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import start

import framebus as fb

pytestmark = pytest.mark.timeout(60)

FULL = dict(backpressure_threshold=1.0, pause_hi=0.9, resume_lo=0.5)


def settle() -> None:
    """Give a just-started thread time to block (not needed for correctness)."""
    time.sleep(0.2)


def full_bus(small_bus, **kw) -> tuple[fb.FrameBus, fb.Subscription]:
    bus = small_bus(overflow="block", publish_timeout=None, **{**FULL, **kw})
    sub = bus.subscribe()
    for _ in range(1024):
        bus.publish(b"")
    assert bus.try_publish(b"") == -1
    return bus, sub


# ------------------------------------------------------------------------ close


def test_close_wakes_blocked_recv(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    w = start(lambda: sub.recv(timeout=None))
    settle()
    bus.close()
    with pytest.raises(fb.BusClosed, match="^the bus is closed$"):
        w.finish()


def test_close_wakes_blocked_recv_batch(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    w = start(lambda: sub.recv_batch(10, timeout=None))
    settle()
    bus.close()
    with pytest.raises(fb.BusClosed, match="^the bus is closed$"):
        w.finish()


def test_close_wakes_blocked_publish(small_bus) -> None:
    bus, _sub = full_bus(small_bus)
    w = start(lambda: bus.publish(b"blocked"))
    settle()
    bus.close()
    with pytest.raises(fb.BusClosed, match="^publish: the bus is closed$"):
        w.finish()


def test_close_wakes_blocked_publish_batch(small_bus) -> None:
    bus, _sub = full_bus(small_bus)
    w = start(lambda: bus.publish_batch([b"a", b"b"]))
    settle()
    bus.close()
    with pytest.raises(fb.BusClosed, match="^publish_batch: the bus is closed$"):
        w.finish()


def test_close_wakes_every_blocked_thread(small_bus) -> None:
    bus, sub = full_bus(small_bus)
    other_subs = [bus.subscribe() for _ in range(3)]
    waiters = [start(lambda s=s: s.recv(timeout=None)) for s in other_subs]
    waiters += [start(lambda: bus.publish(b"p")) for _ in range(2)]
    waiters.append(start(lambda: bus.publish_batch([b"q"] * 3)))
    settle()
    bus.close()
    for w in waiters:
        with pytest.raises(fb.BusClosed):
            w.finish()
    del sub


def test_everything_raises_bus_closed_after_close(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    bus.publish(b"unread")
    bus.close()
    assert bus.closed is True
    assert sub.closed is True
    assert bus.paused is False
    calls = {
        "publish": lambda: bus.publish(b"x"),
        "try_publish": lambda: bus.try_publish(b"x"),
        "publish_batch": lambda: bus.publish_batch([b"x"]),
        "subscribe": lambda: bus.subscribe(),
        "recv": lambda: sub.recv(),
        "recv0": lambda: sub.recv(0),
        "recv_timeout": lambda: sub.recv(timeout=0.01),
        "recv_batch": lambda: sub.recv_batch(5),
        "recv_batch0": lambda: sub.recv_batch(5, 0),
        "backlog": lambda: sub.backlog,
    }
    for name, call in calls.items():
        with pytest.raises(fb.BusClosed, match="the bus is closed$"):
            call()
            pytest.fail(f"{name} did not raise")
    assert list(sub) == []
    sub.close()  # closing a subscription of a closed bus is fine
    bus.close()  # and closing twice
    assert bus.closed


def test_payload_type_checked_before_or_after_close_is_bus_closed(small_bus) -> None:
    bus = small_bus()
    bus.close()
    with pytest.raises(fb.BusClosed):
        bus.publish("not bytes")  # type: ignore[arg-type]


def test_iteration_ends_when_bus_closes(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    got: list[bytes] = []
    all_in = threading.Event()

    def consume() -> None:
        for f in sub:
            got.append(f.payload)
            if len(got) == 100:
                all_in.set()

    w = start(consume)
    for i in range(100):
        bus.publish(str(i).encode())
    assert all_in.wait(10)
    settle()
    bus.close()
    w.finish()
    assert got == [str(i).encode() for i in range(100)]


def test_iteration_ends_when_subscription_closes(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    other = bus.subscribe()
    got: list[int] = []
    all_in = threading.Event()

    def consume() -> None:
        for f in sub:
            got.append(f.seq)
            if len(got) == 50:
                all_in.set()

    w = start(consume)
    bus.publish_batch([b"x"] * 50)
    assert all_in.wait(10)
    settle()
    sub.close()
    w.finish()
    assert got == list(range(50))
    # the bus and the other subscription carry on
    assert not bus.closed
    bus.publish(b"y")
    assert [f.seq for f in other.recv_batch(100, timeout=5)] == list(range(51))


def test_closing_subscription_wakes_its_blocked_recv(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    other = bus.subscribe()
    w = start(lambda: sub.recv(timeout=None))
    w2 = start(lambda: other.recv(timeout=None))
    settle()
    sub.close()
    with pytest.raises(fb.BusClosed, match="^the subscription is closed$"):
        w.finish()
    assert w2.is_alive()  # not woken for good: it still waits for a frame
    bus.publish(b"for-other")
    assert w2.finish().payload == b"for-other"
    with pytest.raises(fb.BusClosed, match="^the subscription is closed$"):
        sub.recv(0)
    with pytest.raises(fb.BusClosed, match="^the subscription is closed$"):
        sub.recv_batch(3, timeout=0)
    sub.close()  # idempotent
    assert sub.closed and not bus.closed


def test_closing_group_member_wakes_only_that_member(small_bus) -> None:
    bus = small_bus()
    m1 = bus.subscribe(group="g")
    m2 = bus.subscribe(group="g")
    w1 = start(lambda: m1.recv(timeout=None))
    w2 = start(lambda: m2.recv(timeout=None))
    settle()
    m1.close()
    with pytest.raises(fb.BusClosed, match="^the subscription is closed$"):
        w1.finish()
    bus.publish(b"only-m2")
    f = w2.finish()
    assert (f.seq, f.payload) == (0, b"only-m2")


def test_closing_subscription_from_with_block(small_bus) -> None:
    bus = small_bus()
    with bus.subscribe() as sub:
        bus.publish(b"a")
        assert sub.recv(timeout=5).payload == b"a"
    assert sub.closed
    assert bus.stats()["subscriptions"] == []


# --------------------------------------------------------------------- timeouts


def test_recv_timeout_returns_none(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    assert sub.recv(timeout=0.05) is None
    assert sub.recv_batch(4, timeout=0.05) == []
    bus.publish(b"x", topic="other")
    filtered = bus.subscribe("mine")
    bus.publish(b"y", topic="other")
    assert filtered.recv(timeout=0.05) is None  # frames that do not match do not wake it for good


def test_recv_with_timeout_gets_frame_published_later(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    go = threading.Event()

    def late() -> int:
        go.wait(10)
        time.sleep(0.05)
        return bus.publish(b"late")

    w = start(late)
    go.set()
    f = sub.recv(timeout=10)
    assert f is not None and (f.seq, f.payload) == (0, b"late")
    assert w.finish() == 0


def test_recv_batch_with_timeout_gets_frames_published_later(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    w = start(lambda: (time.sleep(0.05), bus.publish_batch([b"1", b"2", b"3"]))[1])
    got = []
    while len(got) < 3:
        batch = sub.recv_batch(10, timeout=10)
        assert batch
        got += batch
    assert [f.payload for f in got] == [b"1", b"2", b"3"]
    w.finish()


def test_filtered_recv_waits_past_other_topics(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe("want")

    def produce() -> None:
        for _ in range(200):
            bus.publish(b"no", topic="other")
        bus.publish(b"yes", topic="want")

    w = start(produce)
    f = sub.recv(timeout=10)
    w.finish()
    assert (f.seq, f.topic, f.payload) == (200, "want", b"yes")


def test_publish_timeout_then_success(small_bus) -> None:
    bus, sub = full_bus(small_bus)
    with pytest.raises(fb.WouldBlock, match=r"^publish: ring still full after 0\.05 s$"):
        bus.publish(b"x", timeout=0.05)
    w = start(lambda: bus.publish(b"x", timeout=30))
    settle()
    assert sub.recv(timeout=5).seq == 0
    assert w.finish() == 1024


def test_closing_slow_subscription_wakes_blocked_publisher(small_bus) -> None:
    bus, slow = full_bus(small_bus)
    fast = bus.subscribe()
    w = start(lambda: bus.publish(b"unblocked"))
    settle()
    slow.close()  # the ring is empty for every open subscription now
    assert w.finish() == 1024
    f = fast.recv(timeout=5)
    assert (f.seq, f.payload) == (1024, b"unblocked")


def test_filtered_reader_passing_frames_wakes_blocked_publisher(small_bus) -> None:
    bus = small_bus(overflow="block", publish_timeout=None, **FULL)
    sub = bus.subscribe("wanted")
    for _ in range(1024):
        bus.publish(b"", topic="other")
    w = start(lambda: bus.publish(b"w", topic="wanted"))
    settle()
    # moves past 1024 unwanted frames; the woken publisher may already have
    # written its frame by the time this recv looks again
    f = sub.recv(0) or sub.recv(timeout=5)
    assert w.finish() == 1024
    assert (f.seq, f.payload) == (1024, b"w")


def test_concurrent_recv_on_one_subscription_is_refused(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    w = start(lambda: sub.recv(timeout=None))
    deadline = time.monotonic() + 10
    while True:  # until the worker is inside its blocking recv
        try:
            assert sub.recv(timeout=0) is None
        except RuntimeError as exc:
            assert str(exc) == (
                "this subscription is already being read by another thread; "
                "give each thread its own subscription or use a group"
            )
            break
        assert time.monotonic() < deadline, "the worker never blocked in recv"
        time.sleep(0.01)
    bus.publish(b"x")
    assert w.finish().payload == b"x"


# ---------------------------------------------------------------------- signals


class Interrupt(Exception):
    pass


@pytest.fixture
def alarm() -> Iterator[None]:
    old = signal.getsignal(signal.SIGALRM)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def raising_handler(signum, frame):  # noqa: ANN001
    raise Interrupt("SIGALRM")


@pytest.mark.timeout(30, method="thread")
def test_signal_interrupts_blocked_recv(small_bus, alarm) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    signal.signal(signal.SIGALRM, raising_handler)
    with pytest.raises(Interrupt, match="^SIGALRM$"):
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        sub.recv(timeout=None)
    # the subscription is usable afterwards
    bus.publish(b"after")
    assert sub.recv(timeout=5).payload == b"after"
    with pytest.raises(Interrupt):
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        sub.recv_batch(10, timeout=None)
    bus.publish(b"again")
    assert [f.payload for f in sub.recv_batch(10, timeout=5)] == [b"again"]


@pytest.mark.timeout(30, method="thread")
def test_non_raising_signal_lets_recv_continue(small_bus, alarm) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    hits: list[int] = []
    signal.signal(signal.SIGALRM, lambda s, f: hits.append(s))
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    w = start(lambda: (time.sleep(0.5), bus.publish(b"late"))[1])
    f = sub.recv(timeout=None)
    assert (f.seq, f.payload) == (0, b"late")
    assert w.finish() == 0
    assert hits == [signal.SIGALRM]


@pytest.mark.timeout(30, method="thread")
def test_repeated_signals_do_not_extend_recv_timeout(small_bus, alarm) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    hits: list[int] = []
    signal.signal(signal.SIGALRM, lambda s, f: hits.append(s))
    signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)  # every 10 ms
    # a timeout restarted on every signal would never expire (the test would time out)
    assert sub.recv(timeout=0.3) is None
    assert sub.recv_batch(3, timeout=0.3) == []
    signal.setitimer(signal.ITIMER_REAL, 0)
    assert hits


@pytest.mark.timeout(30, method="thread")
def test_signal_interrupts_blocked_publish(small_bus, alarm) -> None:
    bus, sub = full_bus(small_bus)
    signal.signal(signal.SIGALRM, raising_handler)
    with pytest.raises(Interrupt):
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        bus.publish(b"blocked")
    with pytest.raises(Interrupt):
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        bus.publish_batch([b"blocked"] * 2)
    st = bus.stats()
    assert (st["published"], st["dropped"]) == (1024, 0)
    assert sub.recv(timeout=5).seq == 0
    assert bus.publish(b"fits") == 1024  # the interrupted publishes used no seq


@pytest.mark.timeout(30, method="thread")
def test_non_raising_signal_lets_publish_continue(small_bus, alarm) -> None:
    bus, sub = full_bus(small_bus)
    hits: list[int] = []
    signal.signal(signal.SIGALRM, lambda s, f: hits.append(s))
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    w = start(lambda: (time.sleep(0.5), sub.recv_batch(2, timeout=5))[1])
    assert bus.publish(b"p") == 1024
    assert len(w.finish()) == 2
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    w = start(lambda: (time.sleep(0.5), sub.recv_batch(3, timeout=5))[1])
    assert bus.publish_batch([b"q", b"r"]) == 1025
    assert len(w.finish()) == 3
    assert len(hits) == 2
    rest = sub.recv_batch(2000, timeout=5)
    assert [f.seq for f in rest] == list(range(5, 1027))
    assert [f.payload for f in rest[-3:]] == [b"p", b"q", b"r"]


@pytest.mark.timeout(30, method="thread")
def test_repeated_signals_do_not_extend_publish_timeout(small_bus, alarm) -> None:
    bus, _sub = full_bus(small_bus)
    signal.signal(signal.SIGALRM, lambda s, f: None)
    signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)
    with pytest.raises(fb.WouldBlock, match=r"^publish: ring still full after 0\.3 s$"):
        bus.publish(b"x", timeout=0.3)
    with pytest.raises(fb.WouldBlock, match=r"^publish_batch: ring still full after 0\.3 s$"):
        bus.publish_batch([b"x"], timeout=0.3)


# ----------------------------------------------------------------------- threads


@pytest.mark.timeout(120)
def test_many_publishers_many_subscribers_small(small_bus) -> None:
    bus = small_bus(overflow="block", publish_timeout=None)
    subs = [bus.subscribe() for _ in range(3)]
    per = 5000

    def produce(pid: int) -> None:
        for i in range(per):
            bus.publish(pid.to_bytes(1, "little") + i.to_bytes(4, "little"))

    def consume(sub: fb.Subscription) -> list[bytes]:
        out = []
        while len(out) < 4 * per:
            batch = sub.recv_batch(500, timeout=10)
            assert batch, f"stalled after {len(out)}"
            out.extend(f.payload for f in batch)
        return out

    consumers = [start(lambda s=s: consume(s)) for s in subs]
    producers = [start(lambda p=p: produce(p)) for p in range(4)]
    for p in producers:
        p.finish(60)
    results = [c.finish(60) for c in consumers]
    assert results[0] == results[1] == results[2]  # every subscription sees one order
    for pid in range(4):
        mine = [int.from_bytes(x[1:], "little") for x in results[0] if x[0] == pid]
        assert mine == list(range(per))


@pytest.mark.parametrize("group", [None, "g"])
def test_close_racing_a_starting_wait_never_hangs(group: str | None) -> None:
    # A close landing just as another thread's recv starts to wait must still end that
    # wait (the reader's cancel flag, checked after the waiter registers).
    bus = fb.FrameBus()
    try:
        keep = bus.subscribe("x", group=group)  # a group stays alive after a member closes
        for _ in range(200):
            sub = bus.subscribe("x", group=group)
            ended: list[str] = []

            def read(s: fb.Subscription = sub, ended: list[str] = ended) -> None:
                try:
                    s.recv()
                except fb.BusClosed:
                    ended.append("closed")

            t = threading.Thread(target=read)
            t.start()
            sub.close()
            t.join(10)
            assert not t.is_alive(), "recv missed the close"
            assert ended == ["closed"]
        keep.close()
    finally:
        bus.close()
