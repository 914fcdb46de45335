"""Overflow modes (block, error, drop, overwrite), hysteresis transitions and the
on_pause / on_resume callbacks."""

from __future__ import annotations

import queue
import struct

import pytest
from conftest import record_size, start

import framebus as fb

pytestmark = pytest.mark.timeout(60)

# SMALL ring with the threshold below 1: 921 frames (floor(0.9 * 1024)) fit.
LIMITED = dict(backpressure_threshold=0.9, pause_hi=0.85, resume_lo=0.7)
LIMIT = 921


def drain(sub: fb.Subscription) -> list[fb.Frame]:
    out: list[fb.Frame] = []
    while True:
        got = sub.recv_batch(1000, timeout=0)
        if not got:
            return out
        out.extend(got)


def fill(bus: fb.FrameBus, n: int, payload: bytes = b"") -> None:
    for i in range(n):
        assert bus.publish(payload) == i


def u64(i: int) -> bytes:
    return struct.pack("<Q", i)


# ----------------------------------------------------------------------- block


def test_block_times_out_with_wouldblock(small_bus) -> None:
    bus = small_bus(overflow="block", publish_timeout=0.05, **LIMITED)
    sub = bus.subscribe()
    fill(bus, LIMIT)
    with pytest.raises(fb.WouldBlock) as info:
        bus.publish(b"late")
    assert isinstance(info.value, queue.Full)
    assert str(info.value) == "publish: ring still full after 0.05 s"
    with pytest.raises(fb.WouldBlock) as info:
        bus.publish_batch([b"late"])
    assert str(info.value) == "publish_batch: ring still full after 0.05 s"
    # the timeout argument overrides the configured one
    with pytest.raises(fb.WouldBlock, match=r"^publish: ring still full after 0 s$"):
        bus.publish(b"late", timeout=0)
    with pytest.raises(fb.WouldBlock, match=r"^publish_batch: ring still full after 0\.01 s$"):
        bus.publish_batch([b"late"], timeout=0.01)
    assert bus.try_publish(b"late") == -1
    st = bus.stats()
    assert (st["published"], st["dropped"]) == (LIMIT, 0)
    # refused frames took no sequence number
    assert sub.recv(0).seq == 0
    assert bus.publish(b"fits") == LIMIT
    assert [f.seq for f in drain(sub)] == list(range(1, LIMIT + 1))


def test_block_timeout_argument_with_wait_forever_config(small_bus) -> None:
    bus = small_bus(overflow="block", publish_timeout=None, **LIMITED)
    sub = bus.subscribe()  # noqa: F841
    fill(bus, LIMIT)
    with pytest.raises(fb.WouldBlock, match=r"^publish: ring still full after 0\.02 s$"):
        bus.publish(b"", timeout=0.02)


def test_block_publisher_waits_for_reader(small_bus) -> None:
    bus = small_bus(overflow="block", publish_timeout=None, **LIMITED)
    sub = bus.subscribe()
    n = 5000

    def produce() -> list[int]:
        seqs = []
        for i in range(n):
            if i % 10 == 0:
                seqs.append(bus.publish_batch([u64(i + k) for k in range(10)]))
        return seqs

    w = start(produce)
    got: list[fb.Frame] = []
    while len(got) < n:
        batch = sub.recv_batch(333, timeout=10)
        assert batch, f"no frame within 10 s after {len(got)}"
        got.extend(batch)
    assert w.finish() == list(range(0, n, 10))
    assert [f.seq for f in got] == list(range(n))
    assert [f.payload for f in got] == [u64(i) for i in range(n)]
    assert bus.stats()["dropped"] == 0


def test_block_single_publishes_wait_for_reader(small_bus) -> None:
    bus = small_bus(overflow="block", publish_timeout=30.0, **LIMITED)
    sub = bus.subscribe()
    n = 3000
    w = start(lambda: [bus.publish(u64(i)) for i in range(n)])
    got = []
    while len(got) < n:
        f = sub.recv(timeout=10)
        assert f is not None, f"no frame within 10 s after {len(got)}"
        got.append(f)
    assert w.finish() == list(range(n))
    assert [(f.seq, f.payload) for f in got] == [(i, u64(i)) for i in range(n)]


# ----------------------------------------------------------------------- error


def test_error_mode_refuses_at_once(small_bus) -> None:
    bus = small_bus(overflow="error", publish_timeout=None, **LIMITED)
    sub = bus.subscribe()
    fill(bus, LIMIT)
    with pytest.raises(fb.WouldBlock) as info:
        bus.publish(b"x")  # would hang if error mode waited (publish_timeout=None)
    assert str(info.value) == "publish: the ring is full (backpressure threshold reached)"
    with pytest.raises(fb.WouldBlock) as info:
        bus.publish(b"x", timeout=None)
    assert str(info.value) == "publish: the ring is full (backpressure threshold reached)"
    with pytest.raises(fb.WouldBlock) as info:
        bus.publish_batch([b"x"])
    assert str(info.value) == "publish_batch: the ring is full (backpressure threshold reached)"
    assert bus.try_publish(b"x") == -1
    assert bus.stats()["published"] == LIMIT
    assert bus.stats()["dropped"] == 0
    assert len(sub.recv_batch(5, timeout=0)) == 5
    # a batch is all or nothing: 6 frames do not fit in 5 free slots
    with pytest.raises(fb.WouldBlock):
        bus.publish_batch([b"b"] * 6)
    assert bus.stats()["published"] == LIMIT
    assert bus.publish_batch([b"b"] * 5) == LIMIT
    got = drain(sub)
    assert [f.seq for f in got] == list(range(5, LIMIT + 5))
    assert [f.payload for f in got[-5:]] == [b"b"] * 5


# ------------------------------------------------------------------------ drop


def test_drop_mode_single_publishes(small_bus) -> None:
    bus = small_bus(overflow="drop", publish_timeout=None, **LIMITED)
    sub = bus.subscribe()
    fill(bus, LIMIT, b"k")
    for k in range(1, 11):
        assert bus.publish(b"lost") == -1
        assert bus.stats()["dropped"] == k
    st = bus.stats()
    assert (st["published"], st["published_bytes"], st["dropped"]) == (LIMIT, LIMIT, 10)
    got = drain(sub)
    assert [f.seq for f in got] == list(range(LIMIT))  # drops take no sequence number
    assert all(f.payload == b"k" for f in got)
    assert bus.publish(b"again") == LIMIT
    assert sub.recv(0).payload == b"again"


def test_drop_mode_batch_writes_longest_prefix(small_bus) -> None:
    bus = small_bus(overflow="drop", **LIMITED)
    sub = bus.subscribe()
    fill(bus, LIMIT - 5)
    batch = [u64(i) for i in range(10)]
    assert bus.publish_batch(batch) == LIMIT - 5
    st = bus.stats()
    assert (st["published"], st["dropped"]) == (LIMIT, 5)
    assert bus.publish_batch(batch) == -1  # nothing fits
    assert bus.stats()["dropped"] == 15
    assert bus.publish(b"x") == -1
    assert bus.stats()["dropped"] == 16
    got = drain(sub)
    assert [f.seq for f in got] == list(range(LIMIT))
    assert [f.payload for f in got[-5:]] == batch[:5]


def test_drop_mode_batch_prefix_limited_by_bytes(make_bus) -> None:
    bus = make_bus(
        ring_pow=10,
        ring_bytes=4096,
        max_frame=1024,
        backpressure_threshold=1.0,
        pause_hi=0.9,
        resume_lo=0.5,
        overflow="drop",
    )
    sub = bus.subscribe()
    # 3 records of 1056 bytes (1024-byte payloads) fit in 4096 bytes, a 4th does not
    frames = [bytes([i]) * 1024 for i in range(5)]
    assert bus.publish_batch(frames) == 0
    assert bus.stats()["dropped"] == 2
    assert bus.stats()["ring_used_bytes"] == 3 * record_size(1024)
    assert [f.payload for f in drain(sub)] == frames[:3]


# ------------------------------------------------------------------- overwrite


def test_overwrite_never_blocks_and_accounts_for_every_frame(small_bus) -> None:
    bus = small_bus(overflow="overwrite", publish_timeout=None, ring_bytes=1 << 12, max_frame=64)
    sub = bus.subscribe()
    idle = bus.subscribe()
    n = 20_000
    for i in range(n):
        assert bus.publish(u64(i) * 3) == i  # never blocks, never refused
    assert bus.try_publish(b"t") == n
    n += 1
    assert sub.backlog == n
    got = drain(sub)
    assert got, "a lapped subscription must still receive the newest frames"
    seqs = [f.seq for f in got]
    assert seqs == sorted(set(seqs))
    assert seqs[-1] == n - 1
    for f in got[:-1]:
        assert f.payload == u64(f.seq) * 3
    assert got[-1].payload == b"t"
    assert sub.lagged + len(got) == n
    assert sub.lagged > 0
    assert sub.backlog == 0
    assert bus.stats()["dropped"] == 0
    assert bus.stats()["published"] == n
    # the idle subscription has not read, so it has not noticed being lapped yet
    assert idle.lagged == 0
    lagged_in_stats = sorted(d["lagged"] for d in bus.stats()["subscriptions"])
    assert lagged_in_stats == [0, sub.lagged]
    # after catching up it keeps receiving everything
    for i in range(10):
        bus.publish(u64(n + i))
    assert [(f.seq, f.payload) for f in drain(sub)] == [(n + i, u64(n + i)) for i in range(10)]
    assert sub.lagged + len(got) + 10 == n + 10


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_overwrite_accounting_with_batches_and_varied_sizes(small_bus, batch: int) -> None:
    bus = small_bus(overflow="overwrite", ring_bytes=1 << 12, max_frame=256)
    sub = bus.subscribe()
    n = 5000
    first = 0
    while first < n:
        chunk = [u64(i) * (1 + i % 17) for i in range(first, min(n, first + 10))]
        assert bus.publish_batch(chunk) == first
        first += len(chunk)
        # read a little in between, so the reader is sometimes lapped mid-way
        sub.recv_batch(batch, timeout=0)
    # start over with a fresh subscription to check exact accounting
    sub2 = bus.subscribe()
    received: list[fb.Frame] = []
    for i in range(n, 3 * n):
        bus.publish(u64(i) * (1 + i % 17))
        if i % 97 == 0:
            received.extend(sub2.recv_batch(batch, timeout=0))
    received.extend(drain(sub2))
    seqs = [f.seq for f in received]
    assert seqs == sorted(set(seqs))
    assert all(n <= s < 3 * n for s in seqs)
    for f in received:
        assert f.payload == u64(f.seq) * (1 + f.seq % 17)
    assert sub2.lagged + len(received) == 2 * n


@pytest.mark.timeout(120)
def test_overwrite_with_concurrent_reader(small_bus) -> None:
    bus = small_bus(overflow="overwrite", ring_bytes=1 << 14, max_frame=512)
    sub = bus.subscribe()
    n = 200_000
    done = []

    def produce() -> None:
        for i in range(0, n, 20):
            bus.publish_batch([u64(k) * (1 + k % 9) for k in range(i, i + 20)])
        done.append(True)

    w = start(produce)
    got: list[fb.Frame] = []
    while True:
        batch = sub.recv_batch(64, timeout=0.1)
        got.extend(batch)
        if not batch and done:
            got.extend(drain(sub))
            break
    w.finish(60)
    seqs = [f.seq for f in got]
    assert seqs == sorted(set(seqs)), "seqs must strictly increase"
    bad = [f.seq for f in got if f.payload != u64(f.seq) * (1 + f.seq % 9)]
    assert bad == [], f"{len(bad)} torn frames, first {bad[:5]}"
    assert sub.lagged + len(got) == n
    assert seqs[-1] == n - 1


def test_overwrite_group_members_are_not_lagged_by_each_other(small_bus) -> None:
    """Nothing is lapped here (30 tiny frames in 64 KiB): frames another member of
    the group took are not lost, so lagged must stay 0."""
    bus = small_bus(overflow="overwrite")
    m1 = bus.subscribe(group="g")
    m2 = bus.subscribe(group="g")
    for i in range(30):
        bus.publish(u64(i))
    a = m1.recv_batch(10, timeout=0)
    b = m2.recv_batch(10, timeout=0)
    c = m1.recv_batch(10, timeout=0)
    assert [f.seq for f in a + b + c] == list(range(30))
    assert bus.stats()["lapped"] == 0
    assert (m1.lagged, m2.lagged) == (0, 0)
    assert [d["lagged"] for d in bus.stats()["subscriptions"]] == [0, 0]


def test_overwrite_filtered_subscription(small_bus) -> None:
    bus = small_bus(overflow="overwrite", ring_bytes=1 << 12, max_frame=64)
    sub = bus.subscribe("even")
    for i in range(2000):
        bus.publish(u64(i), topic="even" if i % 2 == 0 else "odd")
    got = drain(sub)
    assert got
    assert all(f.topic == "even" and f.seq % 2 == 0 and f.payload == u64(f.seq) for f in got)
    seqs = [f.seq for f in got]
    assert seqs == sorted(set(seqs))
    assert got[-1].seq == 1998
    assert sub.lagged > 0


# ------------------------------------------------------------------ hysteresis


class Counter:
    def __init__(self) -> None:
        self.events: list[str] = []

    def attach(self, bus: fb.FrameBus) -> None:
        bus.on_pause(lambda: self.events.append("pause"))
        bus.on_resume(lambda: self.events.append("resume"))


def test_pause_and_resume_exact_transition_points(small_bus) -> None:
    bus = small_bus(overflow="error")
    c = Counter()
    c.attach(bus)
    sub = bus.subscribe()
    for i in range(511):
        bus.publish(b"")
        assert bus.paused is False, f"paused after {i + 1} frames"
    assert c.events == []
    bus.publish(b"")  # 512 / 1024 = pause_hi
    assert bus.paused is True
    assert c.events == ["pause"]
    st = bus.stats()
    assert (st["paused"], st["pause_events"]) == (True, 1)
    for _ in range(300):  # above pause_hi: no new transition
        bus.publish(b"")
    assert c.events == ["pause"]
    assert bus.stats()["pause_events"] == 1
    # 812 used; read down to 257: still paused
    assert len(sub.recv_batch(555, timeout=0)) == 555
    assert bus.stats()["ring_used"] == 257
    assert bus.paused is True
    assert c.events == ["pause"]
    assert sub.recv(0).seq == 555  # 256 used = resume_lo
    assert bus.paused is False
    assert c.events == ["pause", "resume"]
    assert bus.stats()["paused"] is False
    # publishing back up to 511 used does not pause; 512 does
    for _ in range(255):
        bus.publish(b"")
    assert bus.stats()["ring_used"] == 511
    assert bus.paused is False
    bus.publish(b"")
    assert bus.paused is True
    assert c.events == ["pause", "resume", "pause"]
    assert bus.stats()["pause_events"] == 2
    drain(sub)
    assert bus.paused is False
    assert c.events == ["pause", "resume", "pause", "resume"]
    assert bus.stats()["pause_events"] == 2


def test_pause_by_bytes(small_bus) -> None:
    bus = small_bus(overflow="error")
    c = Counter()
    c.attach(bus)
    sub = bus.subscribe()
    payload = b"b" * 992  # 1024-byte records: 32 of them are half of 64 KiB
    for _ in range(31):
        bus.publish(payload)
    assert bus.paused is False
    bus.publish(payload)
    assert bus.paused is True
    assert c.events == ["pause"]
    assert len(sub.recv_batch(15, timeout=0)) == 15  # 17 records = 17408 bytes > 16384
    assert bus.paused is True
    sub.recv(0)  # 16 records = 16384 bytes = resume_lo
    assert bus.paused is False
    assert c.events == ["pause", "resume"]


def test_resume_needs_bytes_and_frames_below_resume_lo(small_bus) -> None:
    bus = small_bus(overflow="error")
    c = Counter()
    c.attach(bus)
    sub = bus.subscribe()
    # frames pause it: 512 tiny frames; then 20 big ones keep bytes up
    for _ in range(512):
        bus.publish(b"")
    assert c.events == ["pause"]
    for _ in range(20):
        bus.publish(b"B" * 992)
    # read all tiny frames: 20 frames used (< 256) but 20480 bytes > 16384
    assert len(sub.recv_batch(512, timeout=0)) == 512
    assert bus.stats()["ring_used"] == 20
    assert bus.paused is True
    assert len(sub.recv_batch(3, timeout=0)) == 3  # 17 * 1024 > 16384
    assert bus.paused is True
    sub.recv(0)  # 16 * 1024 = 16384
    assert bus.paused is False
    assert c.events == ["pause", "resume"]


def test_batch_crossing_pause_hi_fires_once(small_bus) -> None:
    bus = small_bus(overflow="error")
    c = Counter()
    c.attach(bus)
    sub = bus.subscribe()
    assert bus.publish_batch([b""] * 600) == 0
    assert bus.paused is True
    assert c.events == ["pause"]
    assert bus.stats()["pause_events"] == 1
    drain(sub)
    assert c.events == ["pause", "resume"]


def test_try_publish_crossing_pause_hi(small_bus) -> None:
    bus = small_bus(overflow="error")
    c = Counter()
    c.attach(bus)
    sub = bus.subscribe()  # noqa: F841
    for _ in range(511):
        assert bus.try_publish(b"") >= 0
    assert c.events == []
    bus.try_publish(b"")
    assert c.events == ["pause"]
    assert bus.paused is True


def test_no_pause_without_subscription(small_bus) -> None:
    bus = small_bus()
    c = Counter()
    c.attach(bus)
    for _ in range(3000):
        bus.publish(b"")
    assert bus.paused is False
    assert c.events == []
    assert bus.stats()["pause_events"] == 0


def test_slowest_subscription_decides_resume(small_bus) -> None:
    bus = small_bus(overflow="error")
    c = Counter()
    c.attach(bus)
    fast = bus.subscribe()
    slow = bus.subscribe()
    for _ in range(600):
        bus.publish(b"")
    assert c.events == ["pause"]
    drain(fast)
    assert bus.paused is True
    assert c.events == ["pause"]
    slow.recv_batch(343, timeout=0)  # 257 left
    assert bus.paused is True
    slow.recv(0)
    assert bus.paused is False
    assert c.events == ["pause", "resume"]


def test_group_read_resumes(small_bus) -> None:
    bus = small_bus(overflow="error")
    c = Counter()
    c.attach(bus)
    m1 = bus.subscribe(group="g")
    m2 = bus.subscribe(group="g")
    for _ in range(512):
        bus.publish(b"")
    assert c.events == ["pause"]
    m1.recv_batch(200, timeout=0)
    assert c.events == ["pause"]
    m2.recv_batch(56, timeout=0)
    assert bus.paused is False
    assert c.events == ["pause", "resume"]


def test_resume_by_closing_subscription_fires_on_resume(small_bus) -> None:
    """Closing the slowest subscription brings usage to 0: that is a resume
    transition, so on_resume must run exactly once, as for a read."""
    bus = small_bus(overflow="error")
    c = Counter()
    c.attach(bus)
    slow = bus.subscribe()
    fast = bus.subscribe()
    for _ in range(600):
        bus.publish(b"")
    drain(fast)
    assert c.events == ["pause"]
    slow.close()
    assert bus.paused is False
    assert bus.stats()["pause_events"] == 1
    assert c.events == ["pause", "resume"]


def test_overwrite_pause_and_resume(small_bus) -> None:
    bus = small_bus(overflow="overwrite", ring_bytes=1 << 12, max_frame=64)
    c = Counter()
    c.attach(bus)
    sub = bus.subscribe()
    for _ in range(63):
        bus.publish(b"")
    assert c.events == []
    bus.publish(b"")  # 64 * 32 = 2048 bytes = pause_hi of 4 KiB
    assert bus.paused is True
    assert c.events == ["pause"]
    assert len(sub.recv_batch(32, timeout=0)) == 32  # 1024 bytes = resume_lo
    assert bus.paused is False
    assert c.events == ["pause", "resume"]


def test_overwrite_lapped_read_that_resumes_fires_on_resume(small_bus) -> None:
    """A lapped subscription catching up brings usage to 0: the read is a resume
    transition even though it also reports the lap, so on_resume must run."""
    bus = small_bus(overflow="overwrite", ring_bytes=1 << 12, max_frame=64)
    c = Counter()
    c.attach(bus)
    sub = bus.subscribe()
    for _ in range(1000):
        bus.publish(b"")
    assert c.events == ["pause"]
    got = sub.recv_batch(2000, timeout=0)
    assert sub.lagged + len(got) == 1000
    assert bus.paused is False
    st = bus.stats()
    assert (st["pause_events"], st["resume_events"]) == (1, 1)
    assert c.events == ["pause", "resume"]


def test_drops_make_no_transition(small_bus) -> None:
    bus = small_bus(overflow="drop", pause_hi=0.9, resume_lo=0.5)
    c = Counter()
    c.attach(bus)
    sub = bus.subscribe()
    for _ in range(921):
        bus.publish(b"")
    assert c.events == []
    bus.publish(b"")  # 922 >= ceil(0.9 * 1024) = 922
    assert c.events == ["pause"]
    results = [bus.publish(b"") for _ in range(200)]
    assert results == list(range(922, 1024)) + [-1] * 98
    assert c.events == ["pause"]
    assert bus.stats()["dropped"] == 922 + 200 - 1024
    drain(sub)
    assert c.events == ["pause", "resume"]


def test_callback_errors_are_counted_and_do_not_break_publish(small_bus, caplog) -> None:
    bus = small_bus(overflow="error")
    calls: list[str] = []

    def bad_pause() -> None:
        calls.append("bad_pause")
        raise RuntimeError("pause callback failed")

    def bad_resume() -> None:
        calls.append("bad_resume")
        raise KeyError("resume callback failed")

    assert bus.on_pause(bad_pause) is bad_pause  # usable as a decorator
    assert bus.on_resume(bad_resume) is bad_resume

    @bus.on_pause
    def good_pause() -> None:
        calls.append("good_pause")

    @bus.on_resume
    def good_resume() -> None:
        calls.append("good_resume")

    sub = bus.subscribe()
    for _ in range(511):
        bus.publish(b"")
    assert bus.publish(b"x") == 511  # the pausing publish still returns its seq
    assert bus.paused is True
    assert calls == ["bad_pause", "good_pause"]
    assert bus.stats()["callback_errors"] == 1
    got = sub.recv_batch(256, timeout=0)  # the resuming read still returns its frames
    assert [f.seq for f in got] == list(range(256))
    assert bus.paused is False
    assert calls == ["bad_pause", "good_pause", "bad_resume", "good_resume"]
    assert bus.stats()["callback_errors"] == 2
    assert bus.stats()["pause_events"] == 1
    # a pausing batch and a resuming single recv, too
    assert bus.publish_batch([b""] * 300) == 512
    assert bus.stats()["callback_errors"] == 3
    sub.recv_batch(300, timeout=0)
    assert sub.recv(0).seq == 556
    assert bus.stats()["callback_errors"] == 4
    assert calls.count("good_pause") == 2 and calls.count("good_resume") == 2
    assert "pause callback failed" in caplog.text


@pytest.mark.timeout(180)
def test_callbacks_run_in_transition_order(make_bus) -> None:
    """on_pause / on_resume drive sources: a resume callback that runs before the
    pause callback of the transition it follows leaves a source paused on a bus
    that is not. A large batch (copied without the GIL) pauses the bus while the
    main thread drains it and resumes it. Whether a try pauses at all depends on
    scheduling; up to 400 tries, stopping after 60 that paused."""
    bad = []
    paused_runs = 0
    for trial in range(400):
        bus = make_bus(
            ring_pow=12,
            ring_bytes=1 << 20,
            max_frame=1 << 16,
            pause_hi=0.5,
            resume_lo=0.25,
            backpressure_threshold=1.0,
        )
        c = Counter()
        c.attach(bus)
        sub = bus.subscribe()
        w = start(lambda bus=bus: bus.publish_batch([b"x" * 40_000] * 14))  # 560 KB >= 512 KiB
        n = 0
        while n < 14:
            got = sub.recv_batch(100, timeout=10)
            assert got
            n += len(got)
        w.finish()
        assert bus.paused is False
        st = bus.stats()
        assert (
            st["pause_events"]
            == st["resume_events"]
            == c.events.count("pause")
            == c.events.count("resume")
        )
        if st["pause_events"]:
            paused_runs += 1
            if c.events != ["pause", "resume"]:
                bad.append((trial, c.events))
        bus.close()
        if paused_runs >= 60:
            break
    assert bad == [], (
        f"callbacks out of order in {len(bad)} of {paused_runs} runs that paused, e.g. {bad[:3]}"
    )


def test_callbacks_with_blocking_publisher_thread(small_bus) -> None:
    bus = small_bus(overflow="block", publish_timeout=None)
    c = Counter()
    c.attach(bus)
    sub = bus.subscribe()
    n = 20_000
    w = start(lambda: [bus.publish_batch([b""] * 100) for _ in range(n // 100)])
    got = 0
    while got < n:
        batch = sub.recv_batch(100, timeout=10)
        assert batch
        got += len(batch)
    w.finish()
    st = bus.stats()
    assert bus.paused is False
    # one call per transition (callbacks run in the thread that made the
    # transition, so their order across threads is not asserted)
    assert c.events.count("pause") == st["pause_events"] > 0
    assert c.events.count("resume") == st["resume_events"] == st["pause_events"]
