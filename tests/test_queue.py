"""framebus.Queue and JoinableQueue: multiprocessing.Queue's semantics on a shared ring.

Single-process semantics, the unbounded queue's feeder, the same exceptions as
multiprocessing.Queue, children under fork / spawn / forkserver, threads, passing
a queue, cleanup of /dev/shm, and the pickling. Functions run by child processes
live in tests/queue_workers.py (importable by module path under spawn).

The cross-process stress size is FRAMEBUS_QUEUE_ITEMS objects per producer
(default 20000), e.g. ``FRAMEBUS_QUEUE_ITEMS=200000 python -m pytest tests/test_queue.py``.
"""

from __future__ import annotations

import copyreg
import gc
import multiprocessing as mp
import os
import pickle
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.reduction import ForkingPickler
from typing import Any

import numpy as np
import pytest
import queue_workers as w
from conftest import start
from queue_workers import Point

import framebus as fb
from framebus.queue import _dumps, _dumps_forking

SHM = "/dev/shm"
PER = int(os.environ.get("FRAMEBUS_QUEUE_ITEMS", "20000"))  # objects per producer (stress)
METHODS = ["fork", "spawn", "forkserver"]
SMALL_RING = 1 << 16
BIG = 5 << 20  # bytes: more than any inline share, so the object is spilled
# a generous upper bound for anything that should be quick (detects hangs, not speed)
QUICK = 5.0

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------- fixtures


def _ours() -> set[str]:
    """This process's queue segments and spill files (other suites may run alongside)."""
    tag = f"q{os.getpid()}-"
    return {
        e for e in os.listdir(SHM) if e.startswith((f"framebus.{tag}", f"framebus-spill.{tag}"))
    }


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Every queue a test made and dropped is gone from /dev/shm. (A failed test's
    traceback still holds its queues: those are released later, by their finalizers.)"""
    before = _ours()
    yield
    gc.collect()
    alive = {q._name for q in list(fb.queue._live)}
    left = {e for e in _ours() - before if not any(f".{n}" in e for n in alive)}
    for e in left:
        try:
            os.unlink(os.path.join(SHM, e))
        except FileNotFoundError:
            pass
    assert not left, f"left in {SHM}: {sorted(left)}"


def spill_files(name: str) -> list[str]:
    prefix = f"framebus-spill.{name}."
    return sorted(e for e in os.listdir(SHM) if e.startswith(prefix))


@pytest.fixture(params=METHODS)
def ctx(request: pytest.FixtureRequest) -> mp.context.BaseContext:
    return mp.get_context(request.param)


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    """Processes a test starts; any still alive at teardown is killed."""
    made: list[Any] = []
    yield made
    for p in made:
        if p.is_alive():
            p.kill()
        p.join(10)


def launch(procs: list[Any], ctx: Any, target: Callable[..., None], *args: Any) -> Any:
    p = ctx.Process(target=target, args=args)
    p.start()
    procs.append(p)
    return p


def finish(p: Any) -> None:
    p.join(60)
    assert p.exitcode == 0, f"{p} exited with {p.exitcode}"


def pickled_len_bytes(n: int) -> int:
    return len(_dumps(b"x" * n))


def bytes_pickling_to(length: int) -> bytes:
    """A bytes object whose pickle is exactly ``length`` bytes."""
    overhead = pickled_len_bytes(length - 32) - (length - 32)
    obj = b"x" * (length - overhead)
    assert len(_dumps(obj)) == length
    return obj


# ------------------------------------------------- 1. single-process semantics


@pytest.mark.parametrize("maxsize", [0, 5000])
def test_fifo_order(maxsize: int) -> None:
    q = fb.Queue(maxsize)
    items = list(range(3000)) + [str(i) for i in range(1000)]
    for x in items:
        q.put(x)
    assert q.qsize() == len(items)
    assert [q.get(timeout=QUICK) for _ in items] == items
    assert q.empty() and q.qsize() == 0


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a: int, b: str) -> None:
        self.a, self.b = a, b

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Slotted) and (self.a, self.b) == (other.a, other.b)


KINDS = {
    "int": 7,
    "negative-int": -(2**70),
    "float": 1.5,
    "nan-free-floats": [0.0, -1e308, 3.25],
    "str": "héllo wörld ☃",
    "empty-str": "",
    "bytes": b"\x00\xff" * 10,
    "bytearray": bytearray(b"abc"),
    "none": None,
    "bools": (True, False),
    "nested": {"a": [1, (2, 3), {"b": None}], "c": ((), [], {}), 5: "five"},
    "deep": [[[[[[[[[[[["deep"]]]]]]]]]]]],
    "set": {1, 2, 3},
    "frozenset": frozenset({"x"}),
    "complex": 1 + 2j,
    "point": Point(3, 4),
    "points": [Point(i, -i) for i in range(50)],
    "slotted": Slotted(1, "one"),
    "big-bytes": b"\xab" * BIG,
    "big-str": "s" * (3 << 20),
    "big-list": list(range(300_000)),
    "exception": ValueError("boom"),
    "range": range(3, 30, 3),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("maxsize", [0, 3])
def test_round_trip_kinds(kind: str, maxsize: int) -> None:
    obj = KINDS[kind]
    q = fb.Queue(maxsize)
    q.put(obj)
    got = q.get(timeout=QUICK)
    assert type(got) is type(obj)
    if isinstance(obj, Exception):
        assert got.args == obj.args
    else:
        assert got == obj
    assert spill_files(q._name) == []


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.zeros((0, 3), dtype=np.int64),
        np.array([1 + 1j, 2], dtype=np.complex128),
        np.arange(1 << 20, dtype=np.float64),  # 8 MiB: spilled
        np.arange(24, dtype=np.int16).reshape(2, 3, 4)[:, ::2, 1:],  # not contiguous
    ],
    ids=["f32-2d", "empty", "complex", "8MiB", "strided"],
)
def test_round_trip_numpy(arr: np.ndarray) -> None:
    q = fb.Queue()
    q.put(arr)
    got = q.get(timeout=QUICK)
    assert isinstance(got, np.ndarray)
    assert got.dtype == arr.dtype and got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)
    assert spill_files(q._name) == []


def test_spill_file_exists_while_queued_and_is_removed_by_get() -> None:
    q = fb.Queue()
    big = os.urandom(BIG)
    q.put(big)
    files = spill_files(q._name)
    assert len(files) == 1
    assert re.fullmatch(rf"framebus-spill\.{re.escape(q._name)}\.{os.getpid()}\.\d+", files[0])
    assert stat.S_IMODE(os.stat(f"{SHM}/{files[0]}").st_mode) == 0o600
    assert q.qsize() == 1
    assert q.get(timeout=QUICK) == big
    assert spill_files(q._name) == []


@pytest.mark.parametrize("maxsize", [0, 1, 50])
def test_inline_limit_boundary(maxsize: int) -> None:
    """A pickle of exactly _inline_max bytes travels inline; one byte more is spilled."""
    q = fb.Queue(maxsize)
    at = bytes_pickling_to(q._inline_max)
    over = bytes_pickling_to(q._inline_max + 1)
    q.put(at)
    assert spill_files(q._name) == []
    assert q.get(timeout=QUICK) == at
    q.put(over)
    assert len(spill_files(q._name)) == 1
    assert q.get(timeout=QUICK) == over
    assert spill_files(q._name) == []


def test_mutating_after_put_does_not_change_what_get_returns() -> None:
    q = fb.Queue()
    obj = {"k": [1, 2, 3]}
    p = Point(1, 2)
    q.put(obj)
    q.put(p)
    obj["k"].append(4)
    p.x = 99
    assert q.get(timeout=QUICK) == {"k": [1, 2, 3]}
    assert q.get(timeout=QUICK) == Point(1, 2)


@pytest.mark.parametrize("maxsize", [1, 3, 1000])
def test_maxsize_boundary(maxsize: int) -> None:
    q = fb.Queue(maxsize)
    assert q.maxsize == maxsize
    for i in range(maxsize):
        assert not q.full()
        q.put_nowait(i)
    assert q.qsize() == maxsize and q.full() and not q.empty()
    with pytest.raises(queue.Full):
        q.put_nowait("one too many")
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put("one too many", timeout=0.1)
    assert time.monotonic() - t0 < QUICK
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put("one too many", block=False, timeout=10)  # not blocking: the timeout is ignored
    assert time.monotonic() - t0 < QUICK
    assert q.qsize() == maxsize
    assert q.get(timeout=QUICK) == 0
    assert not q.full() and q.qsize() == maxsize - 1
    q.put_nowait("room for one")
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait("and no more")
    assert [q.get_nowait() for _ in range(maxsize)] == list(range(1, maxsize)) + ["room for one"]
    assert q.empty() and not q.full() and q.qsize() == 0


@pytest.mark.parametrize("maxsize", [2, 50, 1000])
def test_bounded_holds_maxsize_of_the_largest_inline_objects(maxsize: int) -> None:
    """Bytes never run out before the frame limit: maxsize pickles of the largest inline
    size fit, wherever the ring's head is (offset here so that records wrap)."""
    q = fb.Queue(maxsize)
    largest = bytes_pickling_to(q._inline_max)
    for k in range(1, 4):
        q.put_nowait(b"y" * (k * 1237))
        q.get_nowait()
        for _ in range(maxsize):
            q.put_nowait(largest)
        with pytest.raises(queue.Full):
            q.put_nowait(b"")
        assert spill_files(q._name) == []
        for _ in range(maxsize):
            assert q.get_nowait() == largest
        assert q.empty()


def test_bounded_full_put_of_a_spilled_object_leaves_no_spill_file() -> None:
    q = fb.Queue(2)
    big = [os.urandom(BIG) for _ in range(3)]
    q.put(big[0])
    q.put(big[1])
    assert len(spill_files(q._name)) == 2
    with pytest.raises(queue.Full):
        q.put_nowait(big[2])
    with pytest.raises(queue.Full):
        q.put(big[2], timeout=0.05)
    assert len(spill_files(q._name)) == 2
    assert q.get(timeout=QUICK) == big[0]
    assert q.get(timeout=QUICK) == big[1]
    assert spill_files(q._name) == []


def test_blocked_put_proceeds_when_a_get_makes_room() -> None:
    q = fb.Queue(1)
    q.put("first")
    putter = start(lambda: q.put("second", timeout=30))
    time.sleep(0.1)
    assert putter.is_alive()  # blocked on the full queue
    assert q.get(timeout=QUICK) == "first"
    putter.finish(QUICK)
    assert q.get(timeout=QUICK) == "second"


def test_get_without_timeout_waits_for_a_put() -> None:
    q = fb.Queue()
    getter = start(lambda: q.get())
    time.sleep(0.2)
    assert getter.is_alive()
    q.put(("late", 1))
    assert getter.finish(QUICK) == ("late", 1)


def test_get_timeouts_on_an_empty_queue() -> None:
    q = fb.Queue()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert time.monotonic() - t0 < QUICK
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(False, 30)  # not blocking: the timeout is ignored
    with pytest.raises(queue.Empty):
        q.get(True, 0)
    assert time.monotonic() - t0 < QUICK


def test_negative_timeouts_act_like_zero() -> None:
    q = fb.Queue()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=-1)
    with pytest.raises(queue.Empty):
        q.get(True, -1e9)
    assert time.monotonic() - t0 < QUICK
    q.put("there")
    assert q.get(timeout=-5) == "there"  # available: returned at once
    b = fb.Queue(1)
    b.put("a", timeout=-1)
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        b.put("b", timeout=-1)
    assert time.monotonic() - t0 < QUICK
    assert b.get(timeout=-1) == "a"


def test_qsize_empty_full() -> None:
    q = fb.Queue(3)
    assert (q.qsize(), q.empty(), q.full()) == (0, True, False)
    q.put(1)
    assert (q.qsize(), q.empty(), q.full()) == (1, False, False)
    q.put(2)
    q.put(3)
    assert (q.qsize(), q.empty(), q.full()) == (3, False, True)
    q.get()
    assert (q.qsize(), q.empty(), q.full()) == (2, False, False)
    q.get()
    q.get()
    assert (q.qsize(), q.empty(), q.full()) == (0, True, False)
    u = fb.Queue()
    for i in range(100):
        u.put(i)
    assert (u.qsize(), u.empty(), u.full()) == (100, False, False)  # unbounded: never full


@pytest.mark.parametrize("maxsize", [0, -1, -(2**40)])
def test_maxsize_zero_or_less_is_unbounded(maxsize: int) -> None:
    q = fb.Queue(maxsize)
    assert q.maxsize == 0
    for i in range(5000):
        q.put_nowait(i)
    assert not q.full()
    assert [q.get_nowait() for _ in range(5000)] == list(range(5000))


def test_largest_maxsize() -> None:
    q = fb.Queue(fb.queue.MAX_BOUNDED)
    assert q.maxsize == 2**20
    q.put(1)
    assert q.get(timeout=QUICK) == 1


@pytest.mark.parametrize("bad", ["3", 3.0, None, True, [3]])
def test_maxsize_must_be_an_int(bad: object) -> None:
    with pytest.raises(TypeError, match=r"maxsize must be an int, not \w+"):
        fb.Queue(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [2**20 + 1, 2**31, 10**30])
def test_maxsize_too_large(bad: int) -> None:
    with pytest.raises(ValueError, match=rf"maxsize={bad} exceeds 1048576"):
        fb.Queue(bad)


@pytest.mark.parametrize(
    "maxsize, ring_bytes",
    [(0, 100), (0, 0), (0, -1), (1000, 1 << 16), (2**20, 1 << 20)],
)
def test_ring_bytes_too_small(maxsize: int, ring_bytes: int) -> None:
    with pytest.raises(ValueError, match=rf"ring_bytes={ring_bytes} is too small.*need at least"):
        fb.Queue(maxsize, ring_bytes=ring_bytes)


def test_ring_bytes_not_a_power_of_two() -> None:
    with pytest.raises(fb.ConfigError, match="ring_bytes=196608 is not a power of two"):
        fb.Queue(ring_bytes=3 << 16)


@pytest.mark.parametrize("bad", ["big", 1.5e6, b"1"])
def test_ring_bytes_must_be_an_int(bad: object) -> None:
    with pytest.raises(TypeError, match="ring_bytes"):
        fb.Queue(ring_bytes=bad)  # type: ignore[arg-type]


def test_ring_bytes_sizes_the_ring() -> None:
    q = fb.Queue(ring_bytes=1 << 12)
    assert q._bus.config.ring_bytes == 1 << 12
    for i in range(1000):  # far more than 4 KiB holds: the feeder keeps the rest
        q.put(i)
    assert [q.get(timeout=QUICK) for _ in range(1000)] == list(range(1000))
    q.close()
    q.join_thread()


def test_ctx_is_accepted() -> None:
    q = fb.Queue(2, ctx=mp.get_context("spawn"))
    q.put("x")
    assert q.get(timeout=QUICK) == "x"


@pytest.mark.parametrize("cls", [fb.Queue, fb.JoinableQueue])
def test_close(cls: type[fb.Queue]) -> None:
    q = cls(3)
    q.put(1)
    with pytest.raises(AssertionError):
        q.join_thread()  # not closed yet
    q.close()
    q.close()  # twice is fine
    q.join_thread()
    for call in (
        lambda: q.put(2),
        lambda: q.put_nowait(2),
        lambda: q.get(),
        lambda: q.get(timeout=0.1),
        q.get_nowait,
        q.qsize,
        q.empty,
        lambda: pickle.dumps(q),
    ):
        with pytest.raises(ValueError, match="closed"):
            call()
    assert "closed" in repr(q)


def test_close_wakes_a_blocked_get_in_another_thread() -> None:
    q = fb.Queue()
    getter = start(lambda: q.get(timeout=30))
    time.sleep(0.1)
    q.close()
    with pytest.raises(ValueError, match="closed"):
        getter.finish(QUICK)


def test_repr() -> None:
    assert re.fullmatch(rf"<Queue q{os.getpid()}-[0-9a-f]{{12}} unbounded open>", repr(fb.Queue()))
    j = fb.JoinableQueue(7)
    assert re.fullmatch(r"<JoinableQueue q\d+-[0-9a-f]+ maxsize=7 open>", repr(j))
    j.close()
    assert repr(j).endswith("maxsize=7 closed>")


UNPICKLABLE = {
    "lambda": lambda: None,
    "lock": threading.Lock(),
    "nested-lock": [1, {"k": threading.Lock()}],
    "generator": (i for i in range(3)),
}


@pytest.mark.parametrize("kind", sorted(UNPICKLABLE))
@pytest.mark.parametrize("maxsize", [0, 2])
def test_unpicklable_object_raises_from_put(kind: str, maxsize: int) -> None:
    q = fb.Queue(maxsize)
    q.put("before")
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        q.put(UNPICKLABLE[kind])
    assert q.qsize() == 1
    q.put(Point(1, 2))  # the shared pickler still works after a failed dump
    assert [q.get(timeout=QUICK) for _ in range(2)] == ["before", Point(1, 2)]
    assert q.empty()


def test_joinable_unpicklable_put_leaves_the_task_count() -> None:
    q = fb.JoinableQueue()
    assert q.join(timeout=0) is True
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        q.put(threading.Lock())
    assert q.join(timeout=0) is True  # nothing was counted
    q.put("task")
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        q.put(lambda: None)
    assert q.join(timeout=0.1) is False
    assert q.get(timeout=QUICK) == "task"
    q.task_done()
    assert q.join(timeout=0) is True
    with pytest.raises(ValueError, match=r"task_done\(\) called too many times"):
        q.task_done()


def test_joinable_full_put_leaves_the_task_count() -> None:
    q = fb.JoinableQueue(2)
    q.put(1)
    q.put(b"z" * BIG)  # spilled
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(b"z" * BIG, timeout=0.05)
    assert q.get(timeout=QUICK) == 1
    q.task_done()
    assert q.join(timeout=0.05) is False
    assert q.get(timeout=QUICK) == b"z" * BIG
    q.task_done()
    assert q.join(timeout=0) is True
    with pytest.raises(ValueError, match=r"task_done\(\) called too many times"):
        q.task_done()


def test_joinable_join_in_one_thread_task_done_in_another() -> None:
    q = fb.JoinableQueue()
    for i in range(100):
        q.put(i)
    assert q.join(timeout=0.1) is False
    joiner = start(lambda: q.join())  # no timeout: waits for the count to reach 0

    def work() -> list[int]:
        got = []
        for _ in range(100):
            got.append(q.get(timeout=QUICK))
            q.task_done()
        return got

    worker = start(work)
    assert worker.finish(30) == list(range(100))
    assert joiner.finish(30) is True
    assert q.join(timeout=0) is True


def test_joinable_counts_objects_waiting_in_the_feeder() -> None:
    q = fb.JoinableQueue(ring_bytes=SMALL_RING)
    for i in range(5000):
        q.put(i)
    assert q._feeder.pending > 0
    assert q.join(timeout=0.05) is False
    for i in range(5000):
        assert q.get(timeout=QUICK) == i
        q.task_done()
    assert q.join(timeout=QUICK) is True
    q.close()
    q.join_thread()


# ---------------------------------------------------------- 2. unbounded overflow


def _settle(q: fb.Queue, expect: int) -> int:
    deadline = time.monotonic() + QUICK
    n = q.qsize()
    while n != expect and time.monotonic() < deadline:
        time.sleep(0.01)
        n = q.qsize()
    return n


def test_unbounded_put_never_blocks_and_keeps_order() -> None:
    q = fb.Queue(ring_bytes=SMALL_RING)
    n = 20_000
    t0 = time.monotonic()
    for i in range(n):
        q.put((i, "x" * (i % 13)))
    assert time.monotonic() - t0 < 30  # no consumer, yet nothing blocked
    assert q._feeder.pending > 0  # most wait in the feeder thread
    assert _settle(q, n) == n
    assert not q.full() and not q.empty()
    for i in range(n):
        assert q.get(timeout=QUICK) == (i, "x" * (i % 13))
    assert q.empty() and q.qsize() == 0 and q._feeder.pending == 0
    q.close()
    t0 = time.monotonic()
    q.join_thread()
    assert time.monotonic() - t0 < QUICK


def test_unbounded_overflow_with_spilled_objects() -> None:
    q = fb.Queue(ring_bytes=SMALL_RING)
    objs = [(i, os.urandom(20_000) if i % 5 == 0 else i) for i in range(400)]
    for o in objs:
        q.put(o)
    assert [q.get(timeout=QUICK) for _ in objs] == objs
    assert spill_files(q._name) == []
    q.close()
    q.join_thread()


@pytest.mark.xproc
def test_close_keeps_feeding_another_process(procs: list[Any]) -> None:
    """Objects waiting in the feeder at close() still reach the ring (join_thread waits)."""
    ctx = mp.get_context("fork")
    q = fb.Queue(ring_bytes=SMALL_RING)
    out = fb.Queue()
    n = 20_000
    for i in range(n):
        q.put(i)
    p = launch(procs, ctx, w.drain_count, q, out, n)
    q.close()
    q.join_thread()
    assert out.get(timeout=60) == (n, True)
    finish(p)


@pytest.mark.slow
def test_join_thread_returns_when_nobody_can_drain() -> None:
    # multiprocessing.Queue would wait forever here; framebus gives up once no other
    # process holds the queue (the objects left in the feeder are lost)
    q = fb.Queue(ring_bytes=SMALL_RING)
    for i in range(20_000):
        q.put(i)
    q.close()
    t0 = time.monotonic()
    q.join_thread()
    assert time.monotonic() - t0 < 10


def test_cancel_join_thread() -> None:
    q = fb.Queue(ring_bytes=SMALL_RING)
    for i in range(20_000):
        q.put(i)
    q.cancel_join_thread()
    q.close()
    t0 = time.monotonic()
    q.join_thread()
    assert time.monotonic() - t0 < QUICK


# ------------------------------------------- 3. the same exceptions as multiprocessing


def _outcome(call: Callable[[], object]) -> object:
    try:
        call()
    except Exception as exc:
        return type(exc)
    return "ok"


def _fresh_calls(q: Any) -> list[Callable[[], object]]:
    return [
        q.get_nowait,
        lambda: q.get(False),
        lambda: q.get(timeout=0.05),
        lambda: q.get(True, -1),
        lambda: q.get(False, 5),
        q.qsize,
        q.empty,
        q.full,
        q.join_thread,  # not closed
    ]


def _full_calls(q: Any) -> list[Callable[[], object]]:
    return [
        lambda: q.put_nowait("x"),
        lambda: q.put("x", False),
        lambda: q.put("x", timeout=0.05),
        lambda: q.put("x", True, -1),
        lambda: q.put("x", False, 5),
        q.full,
        q.qsize,
    ]


def _closed_calls(q: Any) -> list[Callable[[], object]]:
    return [
        lambda: q.put(1),
        lambda: q.put_nowait(1),
        lambda: q.get(timeout=0.05),
        q.get_nowait,
        q.join_thread,
    ]


def test_same_exceptions_as_multiprocessing() -> None:
    ctx = mp.get_context("spawn")
    results = {}
    for kind, make in (("fb", fb.Queue), ("mp", ctx.Queue)):
        fresh = make()
        full = make(2)
        full.put(1)
        full.put(2)
        closed = make()
        closed.close()
        results[kind] = (
            [_outcome(c) for c in _fresh_calls(fresh)],
            [_outcome(c) for c in _full_calls(full)],
            [_outcome(c) for c in _closed_calls(closed)],
            (fresh.qsize(), fresh.empty(), fresh.full(), full.qsize(), full.full()),
        )
        fresh.close()
        full.close()
        full.join_thread()
    assert results["fb"] == results["mp"]
    fresh_outcomes = results["fb"][0]
    assert fresh_outcomes[:5] == [queue.Empty] * 5  # exactly the class queue.Empty
    assert results["fb"][1][:5] == [queue.Full] * 5
    assert results["fb"][2] == [ValueError] * 4 + ["ok"]


def test_same_messages_as_multiprocessing() -> None:
    ctx = mp.get_context("spawn")
    msgs = {}
    for kind, make in (("fb", fb.JoinableQueue), ("mp", ctx.JoinableQueue)):
        q = make()
        with pytest.raises(ValueError) as too_many:
            q.task_done()
        with pytest.raises(AssertionError, match="not closed"):
            q.join_thread()
        q.close()
        with pytest.raises(ValueError, match=r"Queue .* is closed") as closed:
            q.put(1)
        msgs[kind] = str(too_many.value)
        assert str(closed.value).startswith("Queue <") and str(closed.value).endswith("> is closed")
    assert msgs["fb"] == msgs["mp"] == "task_done() called too many times"


# ------------------------------------------------------------ 4. child processes


@pytest.mark.xproc
def test_child_gets(ctx: Any, procs: list[Any]) -> None:
    q = fb.Queue()
    out = fb.Queue()
    before = [0, "s", (1, 2), {"k": [1, 2]}, Point(3, 4), b"x" * BIG, None]
    after = list(range(200))
    for x in before:
        q.put(x)
    p = launch(procs, ctx, w.get_n, q, out, len(before) + len(after))
    for x in after:
        q.put(x)
    assert out.get(timeout=60) == before + after
    finish(p)
    assert q.empty()
    assert spill_files(q._name) == []


@pytest.mark.xproc
def test_child_puts_and_its_feeder_is_flushed_at_exit(ctx: Any, procs: list[Any]) -> None:
    """The child returns right after its puts, most of which still wait in its feeder
    thread (the ring holds ~1500 of them): its exit must flush them, as mp's does."""
    q = fb.Queue(ring_bytes=SMALL_RING)
    n = 10_000
    p = launch(procs, ctx, w.put_range, q, n)
    got = [q.get(timeout=60) for _ in range(n)]
    assert got == list(range(n))
    finish(p)
    assert q.empty()


@pytest.mark.xproc
def test_child_puts_then_parent_sees_sizes(ctx: Any, procs: list[Any]) -> None:
    q = fb.Queue(10)
    p = launch(procs, ctx, w.put_range, q, 10)
    finish(p)
    assert (q.qsize(), q.empty(), q.full()) == (10, False, True)
    with pytest.raises(queue.Full):
        q.put_nowait("x")
    assert [q.get_nowait() for _ in range(10)] == list(range(10))


@pytest.mark.xproc
def test_hand_built_pool(ctx: Any, procs: list[Any]) -> None:
    tasks = fb.Queue()
    results = fb.Queue()
    n = 300
    workers = [launch(procs, ctx, w.square_worker, tasks, results, wid) for wid in range(2)]
    for t in range(n):
        tasks.put(t)
    for _ in workers:
        tasks.put(None)
    got = [results.get(timeout=60) for _ in range(n + len(workers))]
    for p in workers:
        finish(p)
    done = sorted(t for _, t, _ in got if t is not None)
    assert done == list(range(n))  # every task exactly once
    assert all(sq == t * t for _, t, sq in got if t is not None)
    assert sorted(wid for wid, t, _ in got if t is None) == [0, 1]  # one sentinel each
    assert tasks.empty() and results.empty()


@pytest.mark.xproc
def test_joinable_queue_across_processes(ctx: Any, procs: list[Any]) -> None:
    tasks = fb.JoinableQueue()
    results = fb.Queue()
    n = 200
    for t in range(n):
        tasks.put(t)
    t0 = time.monotonic()
    assert tasks.join(timeout=0.1) is False  # nothing done yet
    assert time.monotonic() - t0 < QUICK
    workers = [launch(procs, ctx, w.joinable_worker, tasks, results) for _ in range(2)]
    for _ in workers:
        tasks.put(None)
    assert tasks.join(timeout=60) is True
    assert sorted(results.get(timeout=QUICK) for _ in range(n)) == list(range(n))
    for p in workers:
        finish(p)
    assert results.empty()
    with pytest.raises(ValueError, match=r"task_done\(\) called too many times"):
        tasks.task_done()


@pytest.mark.xproc
def test_close_right_after_starting_a_child(ctx: Any, procs: list[Any]) -> None:
    """multiprocessing's close() only ends this process's use of the queue: a child
    started just before still gets every object."""
    q = fb.Queue()
    out = fb.Queue()
    p = launch(procs, ctx, w.get_n, q, out, 10)
    for i in range(10):
        q.put(i)
    q.close()
    q.join_thread()
    finish(p)
    assert out.get(timeout=QUICK) == list(range(10))


# ------------------------------------------------- 5. multi-producer / multi-consumer


@pytest.mark.timeout(max(120, PER // 200))
@pytest.mark.parametrize("maxsize", [0, 64], ids=["unbounded-small-ring", "bounded-64"])
@pytest.mark.xproc
def test_two_producers_two_consumers(maxsize: int, procs: list[Any]) -> None:
    ctx = mp.get_context("forkserver")
    q = fb.Queue(maxsize, ring_bytes=SMALL_RING if maxsize == 0 else None)
    out = fb.Queue()
    consumers = [launch(procs, ctx, w.consumer, q, out) for _ in range(2)]
    producers = [launch(procs, ctx, w.producer, q, pid, PER) for pid in (1, 2)]
    for p in producers:
        finish(p)
    for _ in consumers:
        q.put(None)  # after every producer's object: the producers have exited
    results = dict(out.get(timeout=max(60, PER // 500)) for _ in consumers)
    for p in consumers:
        finish(p)
    assert sorted(results) == sorted(p.pid for p in consumers)
    union = sorted(x for got in results.values() for x in got)
    assert union == [(pid, i) for pid in (1, 2) for i in range(PER)]  # no loss, no duplicate
    for got in results.values():
        for pid in (1, 2):
            mine = [i for p, i in got if p == pid]
            assert mine == sorted(mine), f"producer {pid}'s order broken"
    assert q.empty()


# ---------------------------------------------------------------------- 6. threads


def test_threads_get_concurrently() -> None:
    q = fb.Queue(ring_bytes=SMALL_RING)
    n, nthreads = 20_000, 4

    def take() -> list[int]:
        got = []
        while (x := q.get(timeout=30)) is not None:
            got.append(x)
        return got

    getters = [start(take, f"getter-{k}") for k in range(nthreads)]
    for i in range(n):
        q.put(i)
    for _ in getters:
        q.put(None)
    results = [g.finish(60) for g in getters]
    assert sorted(x for r in results for x in r) == list(range(n))
    for r in results:
        assert r == sorted(r)  # each thread's gets follow the queue order
    assert q.empty()


def test_threads_put_concurrently() -> None:
    q = fb.Queue(ring_bytes=SMALL_RING)
    per, nthreads = 5000, 4

    def put(tid: int) -> None:
        for i in range(per):
            q.put((tid, i))

    putters = [start(lambda t=t: put(t), f"putter-{t}") for t in range(nthreads)]
    got = [q.get(timeout=30) for _ in range(per * nthreads)]
    for p in putters:
        p.finish(30)
    for t in range(nthreads):
        assert [i for tid, i in got if tid == t] == list(range(per))
    assert q.empty()


def test_threads_bounded_blocking_both_ways() -> None:
    q = fb.Queue(4)
    n = 3000

    def put(tid: int) -> None:
        for i in range(n):
            q.put((tid, i), timeout=30)

    def take() -> list[tuple[int, int]]:
        return [q.get(timeout=30) for _ in range(n)]

    putters = [start(lambda t=t: put(t)) for t in range(2)]
    takers = [start(take) for _ in range(2)]
    for p in putters:
        p.finish(60)
    results = [t.finish(60) for t in takers]
    assert sorted(x for r in results for x in r) == [(t, i) for t in range(2) for i in range(n)]


# -------------------------------------------------------------- 7. passing a queue


@pytest.mark.xproc
def test_queues_through_a_queue_to_a_child(procs: list[Any]) -> None:
    ctx = mp.get_context("spawn")
    outer = fb.Queue()
    down = fb.JoinableQueue(5)
    up = fb.Queue()
    p = launch(procs, ctx, w.queues_from_queue, outer)
    outer.put((down, up))
    down.put("ping")
    assert up.get(timeout=60) == ("echo", "ping")
    assert up.get(timeout=60) == ("hello", p.pid)
    assert down.join(timeout=60) is True  # the child's task_done
    outer.put("done")
    finish(p)
    assert outer.empty() and down.empty() and up.empty()


def test_pickled_queue_is_the_same_queue() -> None:
    q = fb.JoinableQueue(3)
    q2 = pickle.loads(pickle.dumps(q))
    assert type(q2) is fb.JoinableQueue
    assert q2._name == q._name and q2.maxsize == 3
    q.put("a")
    assert q2.qsize() == 1 and q2.get(timeout=QUICK) == "a"
    q2.task_done()
    assert q.join(timeout=QUICK) is True
    q2.close()  # detaches only q2's handle
    q.put("b")
    assert q.get(timeout=QUICK) == "b"


def test_unpickling_after_the_creator_released_the_queue() -> None:
    q = fb.Queue()
    blob = pickle.dumps(q)
    q.close()
    del q
    gc.collect()
    with pytest.raises(FileNotFoundError, match=r"no longer exists: its creating process"):
        pickle.loads(blob)


def fork_child(body: Callable[[], None]) -> int:
    """Run body in an os.fork() child (exit status 0 if it returns); the child's pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            body()
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def wait_child(pid: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"forked child {pid} still running after 60 s")


@pytest.mark.xproc
def test_os_fork_child_uses_the_inherited_queues() -> None:
    down = fb.Queue()  # parent -> child
    up = fb.Queue(2)  # child -> parent
    down.put("from parent")

    def child() -> None:
        assert down.get(timeout=30) == "from parent"
        up.put(("child", os.getpid()))
        up.put(("echo", down.get(timeout=30)))

    pid = fork_child(child)
    assert up.get(timeout=30) == ("child", pid)
    down.put("ping")
    assert up.get(timeout=30) == ("echo", "ping")
    assert wait_child(pid) == 0
    assert down.empty() and up.empty()
    down.put("parent still works")
    assert down.get(timeout=QUICK) == "parent still works"


@pytest.mark.xproc
def test_os_fork_with_a_closed_queue_alive() -> None:
    """A queue closed (and so released) by its creator but still referenced must not
    break the at-fork re-attachment of the other queues in the child."""
    closed = fb.Queue()
    closed.close()
    live = [fb.Queue() for _ in range(4)]
    for k, q in enumerate(live):
        q.put(k)
    feeders = [q._feeder for q in live]
    seen: list[Any] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:

        def child() -> None:
            assert not seen, [s.exc_value for s in seen]
            for k, q in enumerate(live):
                assert q._feeder is not feeders[k]  # re-attached in the child
                assert q.get(timeout=QUICK) == k

        code = wait_child(fork_child(child))
    finally:
        sys.unraisablehook = old_hook
    assert code == 0
    assert not seen


# ------------------------------------------------------------------- 8. cleanup


@pytest.mark.parametrize("cls", [fb.Queue, fb.JoinableQueue])
def test_close_and_delete_removes_segment_and_spill_files(cls: type[fb.Queue]) -> None:
    q = cls()
    name = q._name
    q.put(b"a" * BIG)  # never got: its spill file stays until the queue goes
    q.put(b"b" * BIG)
    assert len(spill_files(name)) == 2
    assert os.path.exists(f"{SHM}/framebus.{name}")
    q.close()
    del q
    gc.collect()
    assert not os.path.exists(f"{SHM}/framebus.{name}")
    assert spill_files(name) == []


@pytest.mark.slow
def test_garbage_collected_queue_is_removed() -> None:
    q = fb.Queue(ring_bytes=SMALL_RING)
    name = q._name
    for i in range(3000):  # some wait in the feeder, with no one to drain them
        q.put(i)
    q.put(b"c" * BIG)
    del q
    gc.collect()
    assert not os.path.exists(f"{SHM}/framebus.{name}")
    assert spill_files(name) == []


@pytest.mark.xproc
def test_queue_is_removed_at_interpreter_exit(tmp_path: Any) -> None:
    code = (
        "import framebus as fb\n"
        "q = fb.Queue()\n"
        "q.put(b'x' * (5 << 20))\n"
        "j = fb.JoinableQueue(3)\n"
        "j.put(1)\n"
        "print(q._name, j._name)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    names = res.stdout.split()
    assert len(names) == 2
    for name in names:
        assert not os.path.exists(f"{SHM}/framebus.{name}")
        assert spill_files(name) == []
    assert res.stderr == ""


@pytest.mark.xproc
@pytest.mark.crash
def test_killed_child_does_not_prevent_cleanup(ctx: Any, procs: list[Any]) -> None:
    q = fb.Queue()
    ready = fb.Queue()
    name = q._name
    q.put("first")
    child = launch(procs, ctx, w.hold_until_killed, q, ready)
    assert ready.get(timeout=60) == (child.pid, "first")
    q.put(b"d" * BIG)  # spilled, left in the queue
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    q.put("still works")
    assert q.get(timeout=QUICK) == b"d" * BIG
    assert q.get(timeout=QUICK) == "still works"
    q.put(b"e" * BIG)
    q.close()
    del q
    gc.collect()
    assert not os.path.exists(f"{SHM}/framebus.{name}")
    assert spill_files(name) == []


@pytest.mark.xproc
def test_spill_files_removed_when_a_child_is_the_last_holder(ctx: Any, procs: list[Any]) -> None:
    """The creator drops the queue while a child still holds it: the child, last out,
    removes the spill files of objects never got (under every start method)."""
    q = fb.Queue()
    ready = fb.Queue()
    name = q._name
    q.put(b"f" * BIG)
    child = launch(procs, ctx, w.hold_for, q, ready, 1.0)
    assert ready.get(timeout=60) == child.pid
    del q
    gc.collect()
    assert not os.path.exists(f"{SHM}/framebus.{name}")  # the creator removed the name
    finish(child)
    assert spill_files(name) == []


# ------------------------------------------------------------------- 9. pickling


PLAIN = [
    0,
    -1,
    2**200,
    1.25,
    "",
    "text ☃",
    b"",
    b"bytes",
    bytearray(b"ba"),
    None,
    True,
    False,
    (),
    (1, "a", None),
    [1, [2, [3, [4]]]],
    {"a": 1, 2: [3.0, None], "t": (True,)},
    [b"x" * 1000] * 3,
    list(range(500)),  # beyond the plain-builtins budget: the ForkingPickler path
]


@pytest.mark.parametrize("obj", PLAIN, ids=[f"plain{i}" for i in range(len(PLAIN))])
def test_dumps_of_plain_builtins_is_pickle_dumps(obj: object) -> None:
    assert _dumps(obj) == pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    assert _dumps(obj) == _dumps(obj)
    assert pickle.loads(_dumps(obj)) == obj


OTHER = [
    Point(1, 2),
    [Point(1, 2), Point(1, 2)],
    {1, 2},
    frozenset({3}),
    1j,
    np.arange(6).reshape(2, 3),
    ValueError("x"),
    Slotted(1, "a"),
    range(4),
]


@pytest.mark.parametrize("obj", OTHER, ids=[type(o).__name__ + str(i) for i, o in enumerate(OTHER)])
def test_dumps_of_other_objects_is_forking_pickler(obj: object) -> None:
    want = bytes(ForkingPickler.dumps(obj, pickle.HIGHEST_PROTOCOL))
    assert _dumps(obj) == want
    assert _dumps(obj) == want  # the reused pickler gives the same bytes again
    assert _dumps_forking(obj) == want


def test_dumps_after_a_failed_dump() -> None:
    good = [Point(5, 6), {7}]
    want = bytes(ForkingPickler.dumps(good, pickle.HIGHEST_PROTOCOL))
    for _ in range(3):
        with pytest.raises((pickle.PicklingError, TypeError)):
            _dumps([Point(1, 1), threading.Lock()])
        assert _dumps(good) == want


def test_dumps_uses_multiprocessing_reducers_for_connections() -> None:
    a, b = mp.Pipe()
    try:
        data = _dumps(a)
        assert b"rebuild_connection" in data  # multiprocessing.connection's reducer
        assert data != pickle.dumps(a, pickle.HIGHEST_PROTOCOL)
        assert b"rebuild_connection" not in pickle.dumps(a, pickle.HIGHEST_PROTOCOL)
    finally:
        a.close()
        b.close()


class Registered:
    def __init__(self, v: int) -> None:
        self.v = v


def _rebuild_registered(v: int) -> tuple[str, int]:
    return ("rebuilt", v)


def test_reducers_registered_later_are_used() -> None:
    assert pickle.loads(_dumps(Registered(1))).v == 1
    try:
        ForkingPickler.register(Registered, lambda r: (_rebuild_registered, (r.v,)))
        assert pickle.loads(_dumps(Registered(2))) == ("rebuilt", 2)
    finally:
        ForkingPickler._extra_reducers.pop(Registered)  # type: ignore[attr-defined]
    assert pickle.loads(_dumps(Registered(3))).v == 3
    try:
        copyreg.pickle(Registered, lambda r: (_rebuild_registered, (-r.v,)))
        assert pickle.loads(_dumps(Registered(4))) == ("rebuilt", -4)
    finally:
        copyreg.dispatch_table.pop(Registered)
    assert pickle.loads(_dumps(Registered(5))).v == 5


def test_a_replaced_reducer_is_used() -> None:
    """Registering another reducer for an already registered type (the registry's size
    does not change) must take effect, as it does for ForkingPickler."""
    try:
        ForkingPickler.register(Registered, lambda r: (_rebuild_registered, (r.v,)))
        assert pickle.loads(_dumps(Registered(1))) == ("rebuilt", 1)
        ForkingPickler.register(Registered, lambda r: (_rebuild_registered, (-r.v,)))
        assert pickle.loads(bytes(ForkingPickler.dumps(Registered(2)))) == ("rebuilt", -2)
        assert pickle.loads(_dumps(Registered(2))) == ("rebuilt", -2)
    finally:
        ForkingPickler._extra_reducers.pop(Registered)  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
@pytest.mark.xproc
def test_connection_through_the_queue_to_a_child(method: str, procs: list[Any]) -> None:
    """As with multiprocessing.Queue, a Connection end put on the queue works in the
    child that gets it (its descriptor is handed over by multiprocessing's reducer)."""
    ctx = mp.get_context(method)
    q = fb.Queue()
    here, there = ctx.Pipe()
    p = launch(procs, ctx, w.send_on_connection, q)
    q.put(there)
    assert here.poll(60)
    assert here.recv() == ("from child", p.pid)
    finish(p)
    here.close()
    there.close()
