"""``framebus bridge`` and ``framebus nodes`` against a real nats-server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats_support import NatsServer, free_port, run, serve, stream_messages, wait_for

import framebus as fb
from framebus.bridge.nats import ORIGIN_HEADER
from framebus.cli import main
from framebus.cluster import NodeRegistry

# every test here starts a nats-server process
pytestmark = pytest.mark.xproc


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    yield from serve(tmp_path)


def bridge_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "framebus", "bridge", *args]


def test_bridge_command_moves_frames_both_ways(nats_server: NatsServer, name: str) -> None:
    bus = fb.FrameBus.create_shared(name, preset="memory_optimized")
    proc = None
    try:
        inbox = bus.subscribe("cmd.>", envelopes=True)
        proc = subprocess.Popen(
            bridge_cmd(
                "--nats",
                nats_server.url,
                "--export",
                "sensors.>",
                "--import",
                "cmd.>",
                "--interval",
                "0.1",
                name,
            ),
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the first status line: the bridge is up
        assert first.startswith(f"{name} connected: out 0"), first
        for i in range(5):
            bus.publish(b"%d" % i, topic="sensors.a")
        msgs = run(stream_messages(nats_server.url, "FRAMEBUS", expect=5))
        assert [fb.Envelope.decode(m.data).payload for m in msgs] == [b"%d" % i for i in range(5)]

        async def command() -> None:
            nc = await nats.connect(nats_server.url)
            await nc.jetstream().publish("cmd.go", b"now")
            await nc.close()

        run(command())
        got = None
        deadline = time.monotonic() + 20
        while got is None and time.monotonic() < deadline:
            got = inbox.recv(timeout=0.1)
        assert got == fb.Envelope(topic="cmd.go", payload=b"now", headers={ORIGIN_HEADER: "nats"})
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0
        last = err.strip().splitlines()[-1]
        assert f"{name} closed: out 5 in 1 pending 0" in last, last
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        bus.close()


def test_bridge_command_errors(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bridge", "--nats", "nats://127.0.0.1:1", "--export", "a", name]) == 1
    assert "no shared bus named" in capsys.readouterr().err
    bus = fb.FrameBus.create_shared(name, preset="memory_optimized")
    try:
        url = f"nats://127.0.0.1:{free_port()}"
        assert main(["bridge", "--nats", url, "--export", "a.>", name]) == 1
        err = capsys.readouterr().err
        assert "could not start" in err and url in err
        assert main(["bridge", "--nats", url, name]) == 2
    finally:
        bus.close()


def test_nodes_command(nats_server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nodes", "--nats", nats_server.url]) == 0
    assert capsys.readouterr().out == "no live nodes\n"
    with NodeRegistry(servers=[nats_server.url], ttl=5) as reg:
        reg.register("edge-1", {"role": "camera"})
        assert main(["nodes", "--nats", nats_server.url]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].split() == ["NODE", "HOST", "PID", "UP", "METADATA"]
        assert out[1].startswith("edge-1 ") and out[1].endswith('{"role": "camera"}')
        assert main(["nodes", "--json", "--nats", nats_server.url]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["edge-1"]["metadata"] == {"role": "camera"}
    assert wait_for(lambda: main(["nodes", "--nats", nats_server.url]) == 0, 5)
    assert capsys.readouterr().out.endswith("no live nodes\n")  # close() deregistered it
    assert main(["nodes", "--nats", f"nats://127.0.0.1:{free_port()}"]) == 1
    assert "cannot connect to NATS" in capsys.readouterr().err


@pytest.mark.crash
def test_bridge_command_sigkilled_on_a_wal_bus_loses_nothing(
    nats_server: NatsServer, name: str, tmp_path: Path
) -> None:
    # the bus (and its WAL) lives in this process; the bridge in another, SIGKILLed while
    # frames are in flight, then started again: it resends from the group's commit
    total = 6000
    bus = fb.FrameBus.create_shared(
        name, preset="memory_optimized", wal_dir=str(tmp_path / "wal"), wal_sync=True
    )
    cmd = bridge_cmd("--nats", nats_server.url, "--export", "load.>", "--interval", "0.05", name)
    procs: list[subprocess.Popen[str]] = []

    def stored() -> int:
        async def count() -> int:
            nc = await nats.connect(nats_server.url)
            try:
                return int((await nc.jetstream().stream_info("FRAMEBUS")).state.messages)
            finally:
                await nc.close()

        return int(run(count()))

    try:
        procs.append(subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True))
        assert procs[0].stderr is not None
        assert " connected: " in procs[0].stderr.readline()
        for start in range(0, total, 100):
            bus.publish_batch([b"%d" % (start + i) for i in range(100)], topic="load.x")
            if start == total // 2:
                assert wait_for(lambda: stored() >= total // 4, 30, 0.05)
                procs[0].send_signal(signal.SIGKILL)
                procs[0].wait(10)
                procs.append(subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True))
        assert wait_for(lambda: stored() >= total, 60, 0.1)
        procs[-1].send_signal(signal.SIGTERM)
        assert procs[-1].wait(30) == 0
        msgs = run(stream_messages(nats_server.url, "FRAMEBUS", expect=total))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
            if p.stderr is not None:
                p.stderr.close()
        bus.close()
    ids = [int(fb.Envelope.decode(m.data).payload) for m in msgs]
    assert ids == list(range(total))  # each once, in order
