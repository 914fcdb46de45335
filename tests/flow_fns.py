"""Functions the flow tests name as "module:function" (in graphs and graph files)."""

from __future__ import annotations

NOT_CALLABLE = 42
STORED: list[object] = []


def ten() -> range:
    return range(10)


def double(x: int) -> int:
    return 2 * x


def odd(x: int) -> bool:
    return x % 2 == 1


def store(x: object) -> None:
    STORED.append(x)


def longer_than_two(held: list[object]) -> bool:
    return len(held) > 2


class Ns:
    @staticmethod
    def inc(x: int) -> int:
        return x + 1
