"""asyncio: Subscription.arecv and ``async for``.

Every await that could hang is wrapped in asyncio.wait_for with a generous
limit, and each test has a pytest-timeout as a last resort.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time

import pytest
from conftest import start

import framebus as fb

pytestmark = pytest.mark.timeout(60)

LIMIT = 20.0  # seconds: only to turn a hang into a failure


def u32(i: int) -> bytes:
    return struct.pack("<I", i)


@pytest.mark.asyncio
async def test_arecv_gets_frame_published_from_thread(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    t = threading.Timer(0.1, lambda: bus.publish(b"hello", topic="a.b"))
    t.start()
    f = await asyncio.wait_for(sub.arecv(timeout=None), LIMIT)
    t.join()
    assert (f.seq, f.topic, f.payload) == (0, "a.b", b"hello")


@pytest.mark.asyncio
async def test_arecv_returns_available_frame_at_once(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    bus.publish_batch([b"1", b"2"])
    assert (await sub.arecv()).payload == b"1"
    assert (await sub.arecv(timeout=0)).payload == b"2"
    assert await sub.arecv(timeout=0) is None


@pytest.mark.asyncio
async def test_arecv_timeout_returns_none(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    assert await asyncio.wait_for(sub.arecv(timeout=0.05), LIMIT) is None
    # a frame on a topic it does not want does not end the wait with a frame
    filtered = bus.subscribe("mine")
    bus.publish(b"x", topic="other")
    assert await asyncio.wait_for(filtered.arecv(timeout=0.05), LIMIT) is None
    # and it still works afterwards
    bus.publish(b"y", topic="mine")
    f = await asyncio.wait_for(filtered.arecv(timeout=5), LIMIT)
    assert (f.seq, f.payload) == (1, b"y")


@pytest.mark.asyncio
async def test_arecv_does_not_block_the_event_loop(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            if ticks == 5:
                # the frame only comes after the loop has run other tasks
                threading.Thread(target=bus.publish, args=(b"after-ticks",)).start()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        f = await asyncio.wait_for(sub.arecv(), LIMIT)
    finally:
        task.cancel()
    assert f.payload == b"after-ticks"
    assert ticks >= 5


@pytest.mark.asyncio
async def test_async_for_in_order_and_stops_on_bus_close(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    n = 3000
    got: list[fb.Frame] = []
    have_all = asyncio.Event()

    async def consume() -> None:
        async for f in sub:
            got.append(f)
            if len(got) == n:
                have_all.set()

    task = asyncio.create_task(consume())
    w = start(lambda: [bus.publish(u32(i), topic="t") for i in range(n)])
    await asyncio.wait_for(have_all.wait(), LIMIT)
    w.finish()
    await asyncio.sleep(0.05)  # let the consumer await again before closing
    bus.close()
    await asyncio.wait_for(task, LIMIT)  # ends without an exception
    assert [f.seq for f in got] == list(range(n))
    assert [f.payload for f in got] == [u32(i) for i in range(n)]


@pytest.mark.asyncio
async def test_async_for_stops_when_bus_closed_from_thread(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    got = []

    async def consume() -> None:
        async for f in sub:
            got.append(f.payload)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    bus.publish(b"one")

    def closer() -> None:
        time.sleep(0.2)
        bus.close()

    w = start(closer)
    await asyncio.wait_for(task, LIMIT)
    w.finish()
    assert got == [b"one"]


@pytest.mark.asyncio
async def test_async_for_stops_when_subscription_closed(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    other = bus.subscribe()
    got = []

    async def consume() -> None:
        async for f in sub:
            got.append(f.seq)

    task = asyncio.create_task(consume())
    bus.publish_batch([b"a", b"b"])
    for _ in range(200):
        if len(got) == 2:
            break
        await asyncio.sleep(0.01)
    sub.close()
    await asyncio.wait_for(task, 5)
    assert got == [0, 1]
    bus.publish(b"c")
    assert [f.seq for f in other.recv_batch(10, timeout=5)] == [0, 1, 2]


@pytest.mark.asyncio
async def test_arecv_raises_bus_closed_when_bus_closes(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    task = asyncio.create_task(sub.arecv())
    await asyncio.sleep(0.05)
    bus.close()
    with pytest.raises(fb.BusClosed, match="^the bus is closed$"):
        await asyncio.wait_for(task, LIMIT)
    with pytest.raises(fb.BusClosed):
        await sub.arecv(timeout=0)


@pytest.mark.asyncio
async def test_arecv_raises_bus_closed_when_subscription_closes(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    task = asyncio.create_task(sub.arecv(timeout=None))
    await asyncio.sleep(0.05)
    sub.close()
    with pytest.raises(fb.BusClosed, match="^the subscription is closed$"):
        await asyncio.wait_for(task, 5)


@pytest.mark.asyncio
async def test_cancelled_arecv_leaves_subscription_usable(small_bus) -> None:
    bus = small_bus()
    sub = bus.subscribe()
    for _ in range(3):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sub.arecv(), 0.05)
    bus.publish(b"after-cancel")
    f = await asyncio.wait_for(sub.arecv(), LIMIT)
    assert (f.seq, f.payload) == (0, b"after-cancel")
    threading.Timer(0.1, lambda: bus.publish(b"later")).start()
    f = await asyncio.wait_for(sub.arecv(), LIMIT)
    assert (f.seq, f.payload) == (1, b"later")


@pytest.mark.asyncio
async def test_many_concurrent_arecv(small_bus) -> None:
    bus = small_bus(max_readers=128)
    subs = [bus.subscribe() for _ in range(100)]
    n = 300

    async def consume(sub: fb.Subscription) -> list[int]:
        seqs = []
        while len(seqs) < n:
            f = await sub.arecv(timeout=LIMIT)
            assert f is not None, f"timed out after {len(seqs)} frames"
            assert f.payload == u32(f.seq)
            seqs.append(f.seq)
        return seqs

    def produce() -> None:
        for i in range(n):
            bus.publish(u32(i))
            if i % 50 == 0:
                time.sleep(0.001)

    tasks = [asyncio.create_task(consume(s)) for s in subs]
    await asyncio.sleep(0.05)
    w = start(produce)
    results = await asyncio.wait_for(asyncio.gather(*tasks), 2 * LIMIT)
    w.finish()
    assert all(r == list(range(n)) for r in results)


@pytest.mark.asyncio
async def test_arecv_on_group_members_splits_frames(small_bus) -> None:
    bus = small_bus()
    members = [bus.subscribe(group="g") for _ in range(4)]
    n = 2000
    seen: list[list[int]] = [[] for _ in members]
    total = 0
    done = asyncio.Event()

    async def consume(i: int) -> None:
        nonlocal total
        while not done.is_set():
            f = await members[i].arecv(timeout=0.05)
            if f is None:
                continue
            seen[i].append(f.seq)
            total += 1
            if total == n:
                done.set()

    tasks = [asyncio.create_task(consume(i)) for i in range(len(members))]
    w = start(lambda: [bus.publish(u32(k)) for k in range(n)])
    await asyncio.wait_for(done.wait(), 2 * LIMIT)
    w.finish()
    await asyncio.wait_for(asyncio.gather(*tasks), LIMIT)
    union = sorted(s for member in seen for s in member)
    assert union == list(range(n))  # every frame exactly once
    for member in seen:
        assert member == sorted(member)


@pytest.mark.asyncio
async def test_arecv_with_blocking_publisher(small_bus) -> None:
    bus = small_bus(
        overflow="block",
        publish_timeout=None,
        backpressure_threshold=0.9,
        pause_hi=0.85,
        resume_lo=0.7,
    )
    sub = bus.subscribe()
    n = 5000  # several times the ring: the producer must wait for the coroutine
    w = start(
        lambda: [bus.publish_batch([u32(k) for k in range(i, i + 10)]) for i in range(0, n, 10)]
    )
    got = []
    async for f in sub:
        got.append(f)
        if len(got) == n:
            break
    w.finish()
    assert [f.seq for f in got] == list(range(n))
    assert [f.payload for f in got] == [u32(i) for i in range(n)]


def test_arecv_under_asyncio_run(small_bus) -> None:
    """Without pytest-asyncio: a fresh loop per asyncio.run, twice on one bus."""
    bus = small_bus()
    sub = bus.subscribe()

    async def main(k: int) -> bytes:
        threading.Timer(0.05, lambda: bus.publish(bytes([k]))).start()
        f = await asyncio.wait_for(sub.arecv(), LIMIT)
        return f.payload

    assert asyncio.run(main(1)) == b"\x01"
    assert asyncio.run(main(2)) == b"\x02"
