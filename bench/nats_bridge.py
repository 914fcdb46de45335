"""Frames per second through the NATS bridge (local publish -> JetStream ack) beside
plain nats-py JetStream publishing of the same payloads, in the same run.

    python bench/nats_bridge.py [--size 256] [--count 20000] [--repeat 3] [--json PATH]

Starts its own nats-server (JetStream, file store in a temporary directory, loopback,
a free port; the binary from PATH or next to the Python executable). Each repeat, on a
fresh stream:

- ``bridge``: an in-process FrameBus (no WAL) with a NatsBridge exporting ``bench.>``;
  the clock runs from the first ``publish_batch`` (1000 frames per call) until the
  bridge reports every frame acknowledged by JetStream (``exported_through``).
- ``nats-py``: ``js.publish_async`` of the same payloads in windows of 1000 (the
  bridge's window), each window's acks awaited, on one connection.
- ``inbox``: the way the bridge sends, without the bus: core ``nc.publish`` with a
  reply subject under one inbox and the bridge's two headers (``Nats-Msg-Id``, origin),
  acks matched by token, windows of 1000.

Medians of ``--repeat`` runs. The bridge sends each frame as an Envelope (48 bytes of
header plus the topic), the peer the raw payload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats

import framebus as fb
from framebus.bridge.nats import NatsBridge

WINDOW = 1000


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(workdir / "nats.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(workdir / "js")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while "Server is ready" not in (workdir / "nats.log").read_text(errors="replace"):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("nats-server did not start")
        time.sleep(0.05)
    return proc, f"nats://127.0.0.1:{port}"


def run_bridge(url: str, stream: str, payloads: list[bytes]) -> float:
    n = len(payloads)
    with fb.FrameBus(preset="default") as bus:
        with NatsBridge(bus, [url], export=["bench.>"], stream=stream, durable=stream) as br:
            t0 = time.perf_counter()
            for i in range(0, n, 1000):
                bus.publish_batch(payloads[i : i + 1000], topic="bench.a")
            deadline = time.monotonic() + 300
            while br.stats()["exported_through"] != [n - 1]:
                if time.monotonic() > deadline:
                    raise SystemExit(f"bridge stalled: {br.stats()}")
                time.sleep(0.0005)
            elapsed = time.perf_counter() - t0
            s = br.stats()
            assert s["frames_out"] == n and s["duplicates"] == 0, s
    asyncio.run(delete_stream(url, stream))
    return n / elapsed


async def delete_stream(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


async def run_nats_py(url: str, stream: str, payloads: list[bytes]) -> float:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=["peer.>"])
        t0 = time.perf_counter()
        for i in range(0, len(payloads), WINDOW):
            futs = [await js.publish_async("peer.a", p) for p in payloads[i : i + WINDOW]]
            await asyncio.gather(*futs)
        elapsed = time.perf_counter() - t0
        info = await js.stream_info(stream)
        assert info.state.messages == len(payloads)
        await js.delete_stream(stream)
        return len(payloads) / elapsed
    finally:
        await nc.close()


async def run_inbox(url: str, stream: str, payloads: list[bytes]) -> float:
    """Core NATS publishes with a reply subject under one inbox, acks matched by token
    (how the bridge sends, without the bus): the floor of the bridge's NATS cost."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=["inbox.>"])
        prefix = nc.new_inbox()
        waiting: dict[str, asyncio.Future[bytes]] = {}

        async def on_reply(msg: Any) -> None:
            fut = waiting.pop(msg.subject[len(prefix) + 1 :], None)
            if fut is not None:
                fut.set_result(msg.data)

        await nc.subscribe(prefix + ".*", cb=on_reply)
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        n = 0
        for i in range(0, len(payloads), WINDOW):
            futs = []
            for p in payloads[i : i + WINDOW]:
                n += 1
                fut: asyncio.Future[bytes] = loop.create_future()
                waiting[str(n)] = fut
                headers = {"Nats-Msg-Id": f"peer:{n}", "Framebus-Origin": "peer"}
                await nc.publish("inbox.a", p, reply=f"{prefix}.{n}", headers=headers)
                futs.append(fut)
            for data in await asyncio.gather(*futs):
                assert b'"error"' not in data, data
        elapsed = time.perf_counter() - t0
        info = await js.stream_info(stream)
        assert info.state.messages == len(payloads)
        await js.delete_stream(stream)
        return len(payloads) / elapsed
    finally:
        await nc.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, help="payload bytes (default 256)")
    ap.add_argument("--count", type=int, default=20000, help="frames per run (default 20000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each (default 3)")
    ap.add_argument("--json", default=None, metavar="PATH", help="write every number here")
    args = ap.parse_args()
    payloads = [(b"%08d" % i).ljust(args.size, b"x") for i in range(args.count)]
    results: dict[str, list[float]] = {"bridge": [], "nats-py": [], "inbox": []}
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            for r in range(args.repeat):
                results["bridge"].append(run_bridge(url, f"BR{r}", payloads))
                results["nats-py"].append(asyncio.run(run_nats_py(url, f"PY{r}", payloads)))
                results["inbox"].append(asyncio.run(run_inbox(url, f"IN{r}", payloads)))
                print(
                    f"run {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in results.items()),
                    file=sys.stderr,
                )
        finally:
            proc.kill()
            proc.wait(10)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"size {args.size} B, count {args.count}, medians of {args.repeat}:")
    for k, v in med.items():
        print(f"  {k:<8} {v:>12,.0f} /s")
    print(f"  bridge / nats-py = {med['bridge'] / med['nats-py']:.2f}")
    print(f"  bridge / inbox   = {med['bridge'] / med['inbox']:.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"command": sys.argv, "runs": results, "medians": med}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
