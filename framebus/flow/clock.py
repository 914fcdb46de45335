"""A clock a test (or a simulation) steps by hand."""

from __future__ import annotations

__all__ = ["ManualClock"]


class ManualClock:
    """``clock()`` returns the time in ns, which moves only by ``advance(seconds)``,
    ``advance_ns(ns)`` or ``sleep(seconds)`` (the companion sleep the sync engine uses
    for backoff and rate shaping)."""

    def __init__(self, start_ns: int = 0) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += round(seconds * 1e9)

    def advance_ns(self, ns: int) -> None:
        self.now_ns += ns

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def __repr__(self) -> str:
        return f"<flow.ManualClock {self.now_ns} ns>"
