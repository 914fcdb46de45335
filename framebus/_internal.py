"""The interface the layers above the binding use to reach the ring's shared state.

The ring keeps some state for every process on a bus: four counters in its header
(allocated in framebus._reserved), a counter per name in its topic table, the reader
slots and the table of attached processes. Queue, the WAL, DataPort, EventBus and the
command line reach them through these few names only, never through the binding's
private methods, so the binding can change under them in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._reserved import Counter

if TYPE_CHECKING:
    from ._ring import Ring

__all__ = ["HeaderCounter", "TopicCounter", "attached_processes", "reader_slots", "topic_table"]


class HeaderCounter:
    """One of the ring header's user counters (see framebus._reserved.Counter)."""

    __slots__ = ("_ring", "counter")

    def __init__(self, ring: Ring, counter: Counter) -> None:
        self._ring = ring
        self.counter = counter

    def get(self) -> int:
        return int(self._ring._user_get(self.counter))

    def add(self, delta: int) -> int:
        """Adds ``delta`` (may be negative); the new value. Waiters are not woken."""
        return int(self._ring._user_add(self.counter, delta))

    def set(self, value: int) -> None:
        """Sets the value and wakes the waiters; only for a counter with one writer."""
        self._ring._user_add(self.counter, value - self.get())
        self._ring._user_wake()

    def decrement(self) -> int:
        """Takes one unless the value is 0: the new value, or -1 when it was 0."""
        return int(self._ring._user_dec(self.counter))

    def wait(self, target: int, timeout: float | None = None, *, at_least: bool = False) -> bool:
        """Waits until the value equals ``target`` (with ``at_least``: reaches it):
        True, or False on timeout. Whoever moves the counter must call wake()."""
        return bool(self._ring._user_wait(self.counter, target, timeout, at_least))

    def wake(self) -> None:
        """Wakes every waiter on the header counters, in every process."""
        self._ring._user_wake()


class TopicCounter:
    """The counter of a name in the ring's topic table (DataPort credits, EventBus
    responder counts, WAL commits from other processes). Changes wake its waiters."""

    __slots__ = ("_ring", "id")

    def __init__(self, ring: Ring, name: str | None = None, *, tid: int | None = None) -> None:
        self._ring = ring
        if name is not None and tid is None:
            self.id: int = ring._intern_name(name)
        elif tid is not None and name is None:
            self.id = int(tid)
        else:
            raise TypeError("TopicCounter needs a name or a tid, not both")

    def get(self) -> int:
        return int(self._ring._counter_get(self.id))

    def add(self, delta: int) -> int:
        """Adds ``delta`` >= 0; the new value."""
        return int(self._ring._counter_add(self.id, delta))

    def take(self, n: int) -> int:
        """Takes min(value, n) at once; how much was taken."""
        return int(self._ring._counter_sub(self.id, n))

    def exchange(self, value: int) -> int:
        """Sets the value; the old one."""
        return int(self._ring._counter_exchange(self.id, value))

    def raise_to(self, value: int) -> int:
        """Raises the value to ``value`` if it is below; the result."""
        return int(self._ring._counter_max(self.id, value))

    def wait(self, at_least: int, timeout: float | None = None) -> bool:
        """Waits until the value is >= ``at_least``: True, or False on timeout."""
        return bool(self._ring._counter_wait(self.id, at_least, timeout))

    def wake(self) -> None:
        """Wakes every waiter on any topic counter of the ring (e.g. to see a close)."""
        self._ring._counter_wake()


def reader_slots(ring: Ring) -> list[dict[str, Any]]:
    """The reader slots in use, of every process: slot, backlog, lagged, next_seq,
    members, owner_pid, group."""
    slots = []
    for slot in range(int(ring._ring_stats()["max_readers"])):
        info = ring._reader_info(slot)
        if info["active"]:
            slots.append({"slot": slot, **info})
    return slots


def attached_processes(ring: Ring) -> int:
    """Live processes that have the (shared) ring mapped, this one included."""
    return int(ring._attached_alive())


def topic_table(ring: Ring, start: int = 1) -> list[tuple[int, str]]:
    """(id, name) of the names interned in the topic table with id >= start."""
    return list(ring._topic_names(start))
