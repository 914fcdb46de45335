"""Functions that child processes run in tests/test_queue.py.

They live in a module of their own (not in the test file) so that spawn and
forkserver children can import them by module path. Every blocking call has a
timeout: a child never outlives a failed test by long.
"""

from __future__ import annotations

import os
import queue
import time
from typing import Any

WAIT = 30.0  # seconds a child waits for any one object


class Point:
    """A plain user class: pickled by the ForkingPickler path, not as a builtin."""

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))

    def __repr__(self) -> str:
        return f"Point({self.x}, {self.y})"


def get_n(q: Any, out: Any, n: int) -> None:
    """Get n objects and send them back as one list."""
    out.put([q.get(timeout=WAIT) for _ in range(n)])


def put_range(q: Any, n: int) -> None:
    """Put 0..n-1 and return without close(): the exit hook must flush the feeder."""
    for i in range(n):
        q.put(i)


def square_worker(tasks: Any, results: Any, wid: int) -> None:
    """A hand-built pool worker: squares tasks until it gets the sentinel None."""
    while True:
        t = tasks.get(timeout=WAIT)
        if t is None:
            results.put((wid, None, None))
            return
        results.put((wid, t, t * t))


def joinable_worker(tasks: Any, results: Any) -> None:
    """get / task_done until the sentinel None (also marked done)."""
    while True:
        t = tasks.get(timeout=WAIT)
        if t is None:
            tasks.task_done()
            return
        results.put(t)
        tasks.task_done()


def producer(q: Any, pid: int, n: int) -> None:
    for i in range(n):
        q.put((pid, i))


def consumer(q: Any, out: Any) -> None:
    """Get until the sentinel None; send back everything got, in get order."""
    got: list[tuple[int, int]] = []
    while True:
        item = q.get(timeout=WAIT)
        if item is None:
            break
        got.append(item)
    out.put((os.getpid(), got))


def queues_from_queue(outer: Any) -> None:
    """Get two queues from a queue: echo what comes down on up, then say hello."""
    down, up = outer.get(timeout=WAIT)
    up.put(("echo", down.get(timeout=WAIT)))
    down.task_done()
    up.put(("hello", os.getpid()))
    outer.get(timeout=WAIT)  # "done": the parent has got the replies


def send_on_connection(q: Any) -> None:
    """Get a multiprocessing Connection from the queue and send on it."""
    conn = q.get(timeout=WAIT)
    conn.send(("from child", os.getpid()))
    conn.close()


def hold_until_killed(q: Any, ready: Any) -> None:
    """Become a member of the queue's group (a get), report, then wait to be killed."""
    first = q.get(timeout=WAIT)
    ready.put((os.getpid(), first))
    time.sleep(600)


def drain_count(q: Any, out: Any, expected: int) -> None:
    """Get until expected objects or a 10 s silence; report how many and in order or not."""
    got = []
    try:
        while len(got) < expected:
            got.append(q.get(timeout=10))
    except queue.Empty:
        pass
    out.put((len(got), got == list(range(len(got)))))


def hold_for(q: Any, ready: Any, seconds: float) -> None:
    """Hold the queue (attached, a group member) for a while, then return."""
    q.qsize()
    ready.put(os.getpid())
    time.sleep(seconds)
