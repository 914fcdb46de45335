"""Shared fixtures and Hypothesis profiles for the framebus test suite.

Hypothesis profiles (select with ``--hypothesis-profile NAME`` or the environment
variable ``FRAMEBUS_HYPOTHESIS_PROFILE``):

- ``fb-default``: loaded unless told otherwise; no per-example deadline (the
  machines running this suite are shared and noisy; tests never assert timing).
- ``fb-big``: many more examples and longer stateful runs, for a soak run.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

import framebus as fb

settings.register_profile("fb-default", deadline=None)
settings.register_profile(
    "fb-big",
    deadline=None,
    max_examples=2000,
    stateful_step_count=200,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("FRAMEBUS_HYPOTHESIS_PROFILE", "fb-default"))

# The small ring the hysteresis and capacity tests use: 1024 frames, 64 KiB,
# pause at 512 frames used, resume at 256; tiny payloads make frames dominate.
SMALL = dict(
    ring_pow=10,
    ring_bytes=1 << 16,
    max_frame=1024,
    pause_hi=0.5,
    resume_lo=0.25,
    backpressure_threshold=1.0,
)


def record_size(n: int) -> int:
    """Bytes one frame of n payload bytes takes in the ring (written out independently)."""
    return (32 + n + 7) & ~7


@pytest.fixture(autouse=True)
def _no_wal_dir_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Buses built without wal_dir have no WAL here, even with FRAMEBUS_WAL_DIR exported
    (also in the processes a test starts, which inherit this environment)."""
    monkeypatch.delenv("FRAMEBUS_WAL_DIR", raising=False)


@pytest.fixture
def make_bus() -> Iterator[Callable[..., fb.FrameBus]]:
    """Factory for buses that are closed at teardown even when a test fails."""
    made: list[fb.FrameBus] = []

    def make(*args: Any, **kwargs: Any) -> fb.FrameBus:
        bus = fb.FrameBus(*args, **kwargs)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.close()


@pytest.fixture
def small_bus(make_bus: Callable[..., fb.FrameBus]) -> Callable[..., fb.FrameBus]:
    """Factory for the SMALL ring with overrides."""

    def make(**overrides: Any) -> fb.FrameBus:
        return make_bus(**{**SMALL, **overrides})

    return make


class Worker(threading.Thread):
    """A daemon thread running fn(); keeps its result or exception for the test."""

    def __init__(self, fn: Callable[[], Any], name: str = "fb-test-worker") -> None:
        super().__init__(name=name, daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.started_evt = threading.Event()

    def run(self) -> None:
        self.started_evt.set()
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: B036 - handed to the test
            self.error = exc

    def finish(self, timeout: float = 10.0) -> Any:
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} still running after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.result


def start(fn: Callable[[], Any], name: str = "fb-test-worker") -> Worker:
    w = Worker(fn, name)
    w.start()
    w.started_evt.wait(10)
    return w


SHM = "/dev/shm"


@pytest.fixture
def name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh shared-bus name (prefixed by the test module), unlinked afterwards; the
    test fails if its segment is still in /dev/shm then."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    n = f"t-{module[:20]}-{uuid.uuid4().hex[:12]}"
    yield n
    try:
        fb.FrameBus.unlink(n)
    except FileNotFoundError:
        pass
    assert not os.path.exists(f"{SHM}/framebus.{n}")
