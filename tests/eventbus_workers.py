"""Functions that child processes run in tests/test_eventbus.py.

They live in a module of their own (not in the test file) so that spawn children can
import them by module path. Every blocking call has a timeout: a child never outlives a
failed test by long.
"""

from __future__ import annotations

import os
import time
from typing import Any

import framebus as fb

WAIT = 30.0  # seconds a child waits for the parent


def responder(name: str, ready: Any, stop: Any) -> None:
    """On the shared bus ``name``: answer ``svc.echo`` with {"pid", "echo"}, fail on
    ``svc.fail``, and republish every ``ctl.>`` message on ``ack.child``; close when
    ``stop`` is set."""
    bus = fb.FrameBus.attach(name)
    try:
        ev = bus.events

        def echo(message: Any) -> Any:
            return {"pid": os.getpid(), "echo": message}

        def fail(message: Any) -> Any:
            raise ValueError(f"child refuses {message!r}")

        def forward(message: Any) -> None:
            ev.publish("ack.child", message)

        ev.subscribe("svc.echo", echo)
        ev.subscribe("svc.fail", fail)
        ev.subscribe("ctl.>", forward)
        ready.set()
        stop.wait(WAIT)
    finally:
        bus.close()


def subscribe_and_hang(name: str, ready: Any) -> None:
    """Register an iterator subscription on ``svc.kill``, then wait to be SIGKILLed."""
    bus = fb.FrameBus.attach(name)
    bus.events.subscribe("svc.kill")
    ready.set()
    time.sleep(WAIT)
    bus.close()
