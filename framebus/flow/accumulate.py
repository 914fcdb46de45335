"""The accumulator: holds items and hands them on as lists by count, size, age (TTL)
or predicate, and whatever is held at the end of the input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Accumulator", "item_size"]


def item_size(item: Any) -> int:
    """The size an item counts for against ``size``: ``len(item)`` (bytes for a
    bytes-like item), 1 for an item without a length."""
    try:
        return len(item)
    except TypeError:
        return 1


class Accumulator:
    """``add(value, emitted_ns, now)`` returns the reason ("count", "size", "until") when
    the list is due; ``expired(now)`` is true when the oldest held item is older than
    ``ttl``; ``take()`` empties it and returns (values, oldest emission time)."""

    __slots__ = ("count", "size", "ttl_ns", "until", "values", "held_size", "oldest_ns", "first_at")

    def __init__(
        self,
        count: int | None = None,
        size: int | None = None,
        ttl: float | None = None,
        until: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        self.count = count
        self.size = size
        self.ttl_ns = None if ttl is None else int(ttl * 1e9)
        self.until = until
        self.values: list[Any] = []
        self.held_size = 0
        self.oldest_ns = 0  # source emission time of the oldest held item
        self.first_at = 0  # clock time the first held item arrived

    def __len__(self) -> int:
        return len(self.values)

    def expired(self, now: int) -> bool:
        return bool(self.values) and self.ttl_ns is not None and now - self.first_at > self.ttl_ns

    def add(self, value: Any, emitted_ns: int, now: int) -> str | None:
        if not self.values:
            self.oldest_ns = emitted_ns
            self.first_at = now
        else:
            self.oldest_ns = min(self.oldest_ns, emitted_ns)
        self.values.append(value)
        if self.size is not None:
            self.held_size += item_size(value)
        if self.count is not None and len(self.values) >= self.count:
            return "count"
        if self.size is not None and self.held_size >= self.size:
            return "size"
        if self.until is not None and self.until(self.values):
            return "until"
        return None

    def take(self) -> tuple[list[Any], int]:
        values, oldest = self.values, self.oldest_ns
        self.values = []
        self.held_size = 0
        return values, oldest
