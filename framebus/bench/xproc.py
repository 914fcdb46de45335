"""Cross-process benchmarks: framebus on a shared-memory ring beside
multiprocessing.Queue, multiprocessing.Pipe, faster-fifo, pyzmq and a raw os.pipe,
measured in the same run.

Used by ``framebus bench --suite xproc`` (framebus.cli), by
``python -m framebus.bench.xproc`` and by ``bench/xproc.py``.

Every implementation runs in fresh processes per scenario: one untimed warm-up run,
then ``repeat`` timed runs in the same processes; the report gives the median with
min and max over the timed runs.

``throughput``
    one producer process -> one consumer process, for each payload size, single calls
    and batches of ``batch``. framebus: publish / recv and publish_batch /
    recv_batch(batch). Batch forms of the peers: faster-fifo put_many / get_many,
    pyzmq send_multipart / recv_multipart (one message of ``batch`` parts), os.pipe
    one os.writev / one exact read of the batch; multiprocessing.Queue and Pipe have
    none and are measured with single calls only. The clock runs from the producer's
    first send to the consumer's last receive: time.perf_counter_ns is CLOCK_MONOTONIC
    on Linux, one clock for every process.
``pingpong``
    process A sends 64 bytes, process B receives them and sends them back, A receives;
    A times every round trip. framebus uses one shared bus per direction, with the
    "default" preset and with "low_latency". Percentiles are exact (nearest rank)
    over the timed round trips of one run; the warm-up run is discarded.
``queue``
    framebus.Queue beside multiprocessing.Queue (and faster-fifo, which has the same
    API) on picklable objects, put / get one object at a time.

Payloads are distinct ``bytes`` built before the clock starts (the payload index in
the first 8 bytes). Consumers touch every item (``len``), count frames and payload
bytes, compare the last item with the one expected (framebus: also that the sequence
numbers span exactly the run) and look for anything left over afterwards; any
mismatch fails the run. Optional peers that cannot be imported are reported as
missing, with no numbers.
"""

from __future__ import annotations

import array
import contextlib
import functools
import gc
import importlib
import itertools
import multiprocessing as mp
import os
import pickle
import queue
import select
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as _wait_ready
from typing import Any

from ._common import (
    DEFAULT_BATCH,
    DEFAULT_SIZES,
    FB_BATCH_VARIANTS,
    SHARED_FLAGS,
    BenchError,
    XProgress,
    add_options,
    check_common,
    check_suite_args,
    dist_version,
    finish_report,
    fmt_range,
    fmt_rate,
    import_optional,
    is_framebus,
    load_average,
    machine_info,
    main_with,
    run_guarded,
    summary,
    variant_ratio_notes,
)
from ._common import XPROC_QUICK_COUNT as QUICK_COUNT
from ._common import XPROC_QUICK_REPEAT as QUICK_REPEAT
from ._common import XPROC_QUICK_ROUND_TRIPS as QUICK_ROUND_TRIPS
from ._common import XPROC_ROUND_TRIPS as DEFAULT_ROUND_TRIPS
from ._common import XPROC_SCENARIOS as SCENARIOS
from ._common import XPROC_SECONDS as DEFAULT_SECONDS

__all__ = [
    "BATCH_IMPLS",
    "OBJECT_KINDS",
    "OPTIONAL_PEERS",
    "PINGPONG_IMPLS",
    "QUEUE_IMPLS",
    "SCENARIOS",
    "THROUGHPUT_IMPLS",
    "XParams",
    "build_parser",
    "execute",
    "format_table",
    "main",
    "params_from_args",
    "peer_status",
    "percentiles",
    "run",
]

SCHEMA = "framebus.bench.xproc/1"
SCHEMA_ALL = "framebus.bench.suites/1"

MODES: tuple[str, ...] = ("single", "batch")
THROUGHPUT_IMPLS: tuple[str, ...] = (
    "framebus",
    *FB_BATCH_VARIANTS,
    "mp.Queue",
    "mp.Pipe",
    "faster-fifo",
    "pyzmq",
    "os.pipe",
)
# batch forms: mp.Queue puts lists, faster-fifo put_many/get_many, pyzmq multipart
# messages, os.pipe one write of the batch
BATCH_IMPLS: tuple[str, ...] = (
    "framebus",
    *FB_BATCH_VARIANTS,
    "mp.Queue",
    "faster-fifo",
    "pyzmq",
    "os.pipe",
)


# (impl, framebus preset or None)
PINGPONG_IMPLS: tuple[tuple[str, str | None], ...] = (
    ("framebus", "default"),
    ("framebus", "low_latency"),
    ("mp.Pipe", None),
    ("faster-fifo", None),
    ("pyzmq", None),
    ("os.pipe", None),
)
QUEUE_IMPLS: tuple[str, ...] = ("framebus.Queue", "mp.Queue", "faster-fifo")
OBJECT_KINDS: tuple[str, ...] = ("tuple", "dict1k")
# impl -> (module, what to pip install)
OPTIONAL_PEERS: dict[str, tuple[str, str]] = {
    "faster-fifo": ("faster_fifo", "faster-fifo"),
    "pyzmq": ("zmq", "pyzmq"),
}
PINGPONG_BASELINE = "mp.Pipe"

DEFAULT_REPEAT = 5
MIN_COUNT = 20_000
MAX_COUNT = 2_000_000
WARMUP_COUNT = 20_000
PINGPONG_WARMUP = 1_000
PINGPONG_SIZE = 64
QUICK_WARMUP = 300
QUICK_PINGPONG_WARMUP = 50
POOL_BYTES = 16 << 20  # at most this many distinct payload bytes per producer
OBJECT_POOL = 4096  # distinct objects per producer in the queue scenario
FF_BUFFER_BYTES = 8 << 20  # faster-fifo circular buffer (its default is 1 MB)
ZMQ_COPY_BELOW = 1 << 16  # pyzmq copies smaller messages anyway; zero-copy only pays above
RUN_TIMEOUT = 120.0  # seconds one run may take before it is declared stuck
LEFTOVER_GRACE = 0.02  # seconds to wait for stray items where sends complete in a thread
SETUP_TIMEOUT = 60.0

_CHUNK = 1024  # consumers publish their progress once per this many frames
_SEQ = itertools.count()


# ------------------------------------------------------------------------ peers


def _framebus_queue() -> tuple[Any, str | None]:
    """(framebus.Queue, None), or (None, why it cannot be used)."""
    try:
        fbmod = importlib.import_module("framebus")
        cls = getattr(fbmod, "Queue", None)
        if cls is None:
            cls = getattr(importlib.import_module("framebus.queue"), "Queue", None)
    except Exception as exc:
        return None, f"framebus.Queue unavailable ({type(exc).__name__}: {exc})"
    if cls is None:
        return None, "framebus.Queue unavailable"
    return cls, None


def peer_status() -> dict[str, dict[str, Any]]:
    """Which peers this run can measure: status "ok" (with versions), "missing" or
    "unavailable" (with the reason shown in the table)."""
    out: dict[str, dict[str, Any]] = {}
    for impl, (module, dist) in OPTIONAL_PEERS.items():
        try:
            mod = import_optional(module)
        except ImportError as exc:
            out[impl] = {
                "status": "missing",
                "reason": f"missing (pip install {dist})",
                "error": str(exc),
            }
            continue
        info: dict[str, Any] = {"status": "ok", "version": dist_version(dist)}
        if impl == "pyzmq":
            info["libzmq"] = mod.zmq_version()
        if impl == "faster-fifo":
            # Lets a faster_fifo.Queue be pickled to spawn/forkserver children.
            with contextlib.suppress(ImportError):
                import_optional("faster_fifo_reduction")
        out[impl] = info
    _, why = _framebus_queue()
    out["framebus.Queue"] = (
        {"status": "ok"} if why is None else {"status": "unavailable", "reason": why}
    )
    return out


# ----------------------------------------------------------------------- params


@dataclass
class XParams:
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    sizes: list[int] = field(default_factory=lambda: list(DEFAULT_SIZES))
    count: int | None = None  # frames (objects) per run; None: sized by `seconds`
    seconds: float = DEFAULT_SECONDS
    min_count: int = MIN_COUNT
    max_count: int = MAX_COUNT
    warmup: int = WARMUP_COUNT
    warmup_lap: bool = True  # framebus warm-up also covers one lap of its ring
    repeat: int = DEFAULT_REPEAT
    batch: int = DEFAULT_BATCH
    preset: str = "default"
    round_trips: int = DEFAULT_ROUND_TRIPS
    pingpong_warmup: int = PINGPONG_WARMUP
    objects: list[str] = field(default_factory=lambda: list(OBJECT_KINDS))
    start_method: str = "fork"
    quick: bool = False
    timeout: float = RUN_TIMEOUT


_HELPS = {
    "--size": "throughput payload size in bytes (k/m suffixes are KiB/MiB); repeat the option "
    f"or give a comma list (default: {','.join(map(str, DEFAULT_SIZES))})",
    "--count": "frames (queue: objects) per run for every implementation (default: sized so "
    f"a run lasts about --seconds, {MIN_COUNT}..{MAX_COUNT}; --quick: {QUICK_COUNT})",
    "--repeat": f"timed runs per scenario; the median is reported (default: {DEFAULT_REPEAT}; "
    f"--quick: {QUICK_REPEAT})",
    "--preset": "framebus preset of the throughput bus (default: default; ping-pong always "
    "runs default and low_latency)",
    "--quick": f"a smoke run of a few seconds ({QUICK_COUNT} frames, {QUICK_ROUND_TRIPS} "
    f"round trips, {QUICK_REPEAT} repeats unless told otherwise)",
}
_FLAGS = (*SHARED_FLAGS, "--scenario", "--round-trips", "--seconds", "--start-method")


def params_from_args(args: Any, error: Callable[[str], Any]) -> XParams:
    """XParams from parsed options; ``error(msg)`` (argparse's parser.error) on bad values."""
    sizes = check_common(args, error)
    quick = bool(args.quick)
    scenarios: list[str] = []
    for item in args.scenario or []:
        for part in item.split(","):
            name = part.strip()
            if not name:
                continue
            if name not in SCENARIOS:
                error(
                    f"argument --scenario: invalid choice {name!r} "
                    f"(choose from {', '.join(SCENARIOS)})"
                )
            if name not in scenarios:
                scenarios.append(name)
    if args.scenario and not scenarios:
        error("argument --scenario: no scenario given")
    start_method = args.start_method or "fork"
    if start_method not in mp.get_all_start_methods():
        error(f"argument --start-method: {start_method!r} is not available here")
    count = args.count if args.count is not None else (QUICK_COUNT if quick else None)
    if quick:
        warmup = QUICK_WARMUP
    else:
        warmup = WARMUP_COUNT if count is None else min(WARMUP_COUNT, count)
    round_trips = args.round_trips or (QUICK_ROUND_TRIPS if quick else DEFAULT_ROUND_TRIPS)
    return XParams(
        scenarios=scenarios or list(SCENARIOS),
        sizes=sizes,
        count=count,
        seconds=args.seconds or DEFAULT_SECONDS,
        warmup=warmup,
        warmup_lap=not quick,
        repeat=args.repeat or (QUICK_REPEAT if quick else DEFAULT_REPEAT),
        batch=args.batch,
        preset=args.preset,
        round_trips=round_trips,
        pingpong_warmup=QUICK_PINGPONG_WARMUP if quick else PINGPONG_WARMUP,
        start_method=start_method,
        quick=quick,
    )


# --------------------------------------------------------------------- payloads


def _payload_pool(size: int, n: int) -> list[bytes]:
    filler = bytes(range(256)) * (size // 256 + 1)
    return [(i.to_bytes(8, "little") + filler)[:size] for i in range(n)]


def _one_payload(size: int, i: int) -> bytes:
    filler = bytes(range(256)) * (size // 256 + 1)
    return (i.to_bytes(8, "little") + filler)[:size]


def _pool_n(size: int, count: int) -> int:
    return max(1, min(count, POOL_BYTES // max(size, 1)))


def _cycled(pool: Sequence[Any], count: int) -> list[Any]:
    return list(itertools.islice(itertools.cycle(pool), count))


def _chunks(items: list[Any], batch: int) -> list[list[Any]]:
    return [items[i : i + batch] for i in range(0, len(items), batch)]


def make_object(kind: str, i: int) -> Any:
    """The queue scenario's objects: a small tuple, or a dict of about 1 KiB pickled."""
    if kind == "tuple":
        return (i, "abc", 1.5)
    if kind == "dict1k":
        return {
            "id": i,
            "name": f"sensor-{i:06d}",
            "ok": True,
            "values": [i + k * 0.5 for k in range(100)],
            "tags": ["a", "b", "c"],
        }
    raise ValueError(f"unknown object kind {kind!r}")


# ------------------------------------------------------------------- child side
# A benchmark process: sets up its end, says "ready", then runs what the parent
# sends ("run", {...}) until "stop". Timed loops call bound methods directly, one
# loop per kind of call, so no wrapper call sits in them.


def _child_main(role: str, impl: str, spec: dict[str, Any], conn: Connection, counter: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us on Ctrl-C
    closers: list[Callable[[], Any]] = []
    try:
        runner = _ROLES[role](impl, spec, closers)
        conn.send(("ready", None))
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                break
            gc.collect()
            conn.send(("done", runner(conn, counter, **msg[1])))
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
    finally:
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                close()


Runner = Callable[..., dict[str, Any]]


def _zmq_socket(kind: str, addr: str, bind: bool, closers: list[Callable[[], Any]]) -> Any:
    zmq = import_optional("zmq")
    zctx = zmq.Context()
    sock = zctx.socket(getattr(zmq, kind))
    closers.append(zctx.term)
    closers.append(functools.partial(sock.close, linger=0))
    if bind:
        sock.bind(addr)
    else:
        sock.connect(addr)
    return sock


def _write_rest(fd: int, data: bytes, done: int) -> None:
    view = memoryview(data)[done:]
    while view:
        view = view[os.write(fd, view) :]


def _read_rest(fd: int, head: bytes, n: int, buf: bytearray | None = None) -> bytes:
    """``head`` plus what follows it up to ``n`` bytes, read into one buffer."""
    if buf is None or len(buf) < n:
        buf = bytearray(n)
    view = memoryview(buf)
    got = len(head)
    view[:got] = head
    while got < n:
        k = os.readv(fd, [view[got:n]])
        if not k:
            raise EOFError(f"pipe closed after {got} of {n} bytes")
        got += k
    return bytes(view[:n])


_IOV_MAX = 1024


def _send_all(send: Callable[[Any], Any], source: Sequence[Any]) -> None:
    for x in source:
        send(x)


def _os_send(fd: int, source: Sequence[bytes]) -> None:
    write = os.write
    size = len(source[0]) if source else 0  # fixed-size records
    for x in source:
        n = write(fd, x)
        if n != size:
            _write_rest(fd, x, n)


def _os_send_batches(fd: int, source: Sequence[list[bytes]]) -> None:
    writev = os.writev
    size = len(source[0][0]) if source else 0
    for chunk in source:
        for i in range(0, len(chunk), _IOV_MAX):
            part = chunk[i : i + _IOV_MAX]
            n = writev(fd, part)
            if n != len(part) * size:
                _write_rest(fd, b"".join(part), n)


def _producer(impl: str, spec: dict[str, Any], closers: list[Callable[[], Any]]) -> Runner:
    size, mode, batch = spec["size"], spec["mode"], spec["batch"]
    pool = _payload_pool(size, spec["pool_n"])
    loop: Callable[[Any, Sequence[Any]], None] = _send_all
    target: Any
    if is_framebus(impl):
        from ..bus import FrameBus

        bus = FrameBus.attach(spec["name"])
        closers.append(bus.close)
        target = bus.publish if mode == "single" else bus.publish_batch
    elif impl == "mp.Queue":
        target = spec["q"].put  # in batch mode each item is a list of payloads
    elif impl == "faster-fifo":
        q = spec["q"]
        target = q.put if mode == "single" else q.put_many
    elif impl == "mp.Pipe":
        target = spec["conn"].send_bytes
    elif impl == "pyzmq":
        sock = _zmq_socket("PUSH", spec["addr"], False, closers)
        copy = size < ZMQ_COPY_BELOW
        if mode == "single":
            target = sock.send if copy else functools.partial(sock.send, copy=False)
        else:
            target = functools.partial(sock.send_multipart, copy=copy)
    elif impl == "os.pipe":
        target = spec["conn"].fileno()
        loop = _os_send if mode == "single" else _os_send_batches
    else:
        raise ValueError(f"unknown implementation {impl!r}")

    def run(conn: Connection, counter: Any, count: int) -> dict[str, Any]:
        items = _cycled(pool, count)
        source: Sequence[Any] = items if mode == "single" else _chunks(items, batch)
        t0 = time.perf_counter_ns()
        loop(target, source)
        t1 = time.perf_counter_ns()
        return {"t0": t0, "t_sent": t1}

    return run


def _recv_single(get: Callable[[], Any], count: int, counter: Any) -> tuple[int, int, Any]:
    n = nbytes = 0
    last = None
    while n < count:
        k = min(_CHUNK, count - n)
        for _ in range(k):
            last = get()
            nbytes += len(last)
        n += k
        counter.value = n
    return n, nbytes, last


def _recv_lists(get: Callable[[], Any], count: int, counter: Any) -> tuple[int, int, Any]:
    n = nbytes = 0
    last = None
    while n < count:
        items = get()
        for item in items:
            nbytes += len(item)
        if items:
            n += len(items)
            last = items[-1]
        counter.value = n
    return n, nbytes, last


def _recv_single_fb(recv: Callable[[], Any], count: int, counter: Any) -> tuple[int, int, Any]:
    f = recv()
    first = f.seq
    nbytes = len(f.payload)
    n = 1
    while n < count:
        k = min(_CHUNK, count - n)
        for _ in range(k):
            f = recv()
            nbytes += len(f.payload)
        n += k
        counter.value = n
    return n, nbytes, (f.payload, f.seq - first)


def _recv_batch_fb(
    recv_batch: Callable[[int], Any], batch: int, count: int, counter: Any
) -> tuple[int, int, Any]:
    n = nbytes = 0
    first = last = None
    while n < count:
        frames = recv_batch(batch)
        for f in frames:
            nbytes += len(f.payload)
        if frames:
            if first is None:
                first = frames[0]
            last = frames[-1]
            n += len(frames)
        counter.value = n
    assert first is not None and last is not None
    return n, nbytes, (last.payload, last.seq - first.seq)


def _recv_os(fd: int, size: int, count: int, counter: Any) -> tuple[int, int, Any]:
    read = os.read
    n = nbytes = 0
    last = b""
    while n < count:
        k = min(_CHUNK, count - n)
        for _ in range(k):
            last = read(fd, size)
            if len(last) != size:
                last = _read_rest(fd, last, size)
            nbytes += len(last)
        n += k
        counter.value = n
    return n, nbytes, last


def _recv_os_batches(
    fd: int, size: int, batch: int, count: int, counter: Any
) -> tuple[int, int, Any]:
    read = os.read
    buf = bytearray(batch * size)
    n = nbytes = 0
    last = b""
    while n < count:
        want = min(batch, count - n) * size
        data = read(fd, want)
        if len(data) != want:  # more than the pipe held at once
            data = _read_rest(fd, data, want, buf)
        items = [data[i : i + size] for i in range(0, want, size)]
        for item in items:
            nbytes += len(item)
        n += len(items)
        last = items[-1]
        counter.value = n
    return n, nbytes, last


def _left_get_nowait(get_nowait: Callable[[], Any]) -> int:
    left = 0
    while True:
        try:
            item = get_nowait()
        except queue.Empty:
            return left
        left += len(item) if isinstance(item, list) else 1


def _left_queue(q: Any) -> int:
    # put() may hand the item to a feeder thread: give it time to arrive
    left = 0
    while True:
        try:
            item = q.get(timeout=LEFTOVER_GRACE)
        except queue.Empty:
            return left
        left += len(item) if isinstance(item, list) else 1


def _left_fd(fd: int, size: int) -> int:
    nbytes = 0
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        nbytes += len(chunk)
    return -(-nbytes // size)


def _left_zmq(sock: Any) -> int:
    # send() returns once libzmq's I/O thread has the message: give it time to arrive
    left = 0
    while sock.poll(int(LEFTOVER_GRACE * 1000)):
        left += len(sock.recv_multipart())
    return left


def _recv_payloads_fb(
    recv_payloads: Callable[[int], Any], batch: int, count: int, counter: Any
) -> tuple[int, int, Any]:
    n = nbytes = 0
    last = None
    while n < count:
        payloads = recv_payloads(batch)
        for p in payloads:
            nbytes += len(p)
        if payloads:
            last = payloads[-1]
            n += len(payloads)
        counter.value = n
    return n, nbytes, last


def _recv_frames_fb(
    recv_frames: Callable[[int], Any], batch: int, count: int, counter: Any
) -> tuple[int, int, Any]:
    # every payload's length, through the batch's numpy view of the lengths
    n = nbytes = 0
    first_seq = None
    last = None
    while n < count:
        frames = recv_frames(batch)
        nbytes += int(frames.lengths.sum())
        if frames:
            if first_seq is None:
                first_seq = frames[0].seq
            last = frames
            n += len(frames)
        counter.value = n
    assert first_seq is not None and last is not None
    return n, nbytes, (last.payloads()[-1], int(last.seqs[-1]) - first_seq)


def _left_conn(conn: Connection) -> int:
    left = 0
    while conn.poll(0):
        conn.recv_bytes()
        left += 1
    return left


def _left_fb(sub: Any) -> int:
    left = 0
    while True:
        got = sub.recv_batch(4096, timeout=0)
        if not got:
            return left
        left += len(got)


def _await_producer(conn: Connection) -> None:
    """Tell the parent the last item arrived; return once the producer has returned
    from its last send, so that anything sent beyond the count is there to be seen."""
    conn.send(("received", None))
    kind, _ = conn.recv()
    if kind != "check":
        raise RuntimeError(f"expected 'check' from the parent, got {kind!r}")


def _consumer(impl: str, spec: dict[str, Any], closers: list[Callable[[], Any]]) -> Runner:
    size, mode, batch, pool_n = spec["size"], spec["mode"], spec["batch"], spec["pool_n"]
    single = mode == "single"
    receive: Callable[[int, Any], tuple[int, int, Any]]
    leftover: Callable[[], int]
    if is_framebus(impl):
        from ..bus import FrameBus

        bus = FrameBus.attach(spec["name"])
        closers.append(bus.close)
        sub = bus.subscribe(">")
        closers.append(sub.close)
        if single:
            receive = functools.partial(_recv_single_fb, sub.recv)
        elif impl == "fb.recv_payloads":
            receive = functools.partial(_recv_payloads_fb, sub.recv_payloads, batch)
        elif impl == "fb.recv_frames":
            import numpy  # noqa: F401  (FrameBatch's views import it: not timed)

            receive = functools.partial(_recv_frames_fb, sub.recv_frames, batch)
        else:
            receive = functools.partial(_recv_batch_fb, sub.recv_batch, batch)
        leftover = functools.partial(_left_fb, sub)
    elif impl == "mp.Queue":
        q = spec["q"]
        receive = functools.partial(_recv_single if single else _recv_lists, q.get)
        leftover = functools.partial(_left_queue, q)
    elif impl == "faster-fifo":
        q = spec["q"]
        if single:
            receive = functools.partial(_recv_single, functools.partial(q.get, timeout=RUN_TIMEOUT))
        else:
            get_many = functools.partial(q.get_many, timeout=RUN_TIMEOUT, max_messages_to_get=batch)
            receive = functools.partial(_recv_lists, get_many)
        leftover = functools.partial(_left_get_nowait, q.get_many_nowait)
    elif impl == "mp.Pipe":
        conn = spec["conn"]
        receive = functools.partial(_recv_single, conn.recv_bytes)
        leftover = functools.partial(_left_conn, conn)
    elif impl == "pyzmq":
        sock = _zmq_socket("PULL", spec["addr"], True, closers)
        copy = size < ZMQ_COPY_BELOW
        if single:
            get = sock.recv if copy else functools.partial(sock.recv, copy=False)
            receive = functools.partial(_recv_single, get)
        else:
            receive = functools.partial(
                _recv_lists, functools.partial(sock.recv_multipart, copy=copy)
            )
        leftover = functools.partial(_left_zmq, sock)
    elif impl == "os.pipe":
        fd = spec["conn"].fileno()
        if single:
            receive = functools.partial(_recv_os, fd, size)
        else:
            receive = functools.partial(_recv_os_batches, fd, size, batch)
        leftover = functools.partial(_left_fd, fd, size)
    else:
        raise ValueError(f"unknown implementation {impl!r}")

    def run(conn: Connection, counter: Any, count: int) -> dict[str, Any]:
        conn.send(("armed", None))
        n, nbytes, last = receive(count, counter)
        t1 = time.perf_counter_ns()
        _await_producer(conn)
        left = leftover()
        seq_ok = True
        if impl in ("framebus", "fb.recv_frames"):
            last, seq_span = last
            seq_ok = seq_span == count - 1
        if last is not None and not isinstance(last, bytes):
            last = getattr(last, "bytes", None) or bytes(last)  # a zmq.Frame
        return {
            "t1": t1,
            "frames": n,
            "bytes": nbytes,
            "last_ok": last == _one_payload(size, (count - 1) % pool_n),
            "seq_ok": seq_ok,
            "left_over": left,
        }

    return run


def _ping_loop(send: Any, recv: Any, items: list[bytes]) -> tuple[list[int], int]:
    pc = time.perf_counter_ns
    samples = [0] * len(items)
    bad = 0
    for i, p in enumerate(items):
        t0 = pc()
        send(p)
        r = recv()
        samples[i] = pc() - t0
        if r != p:
            bad += 1
    return samples, bad


def _ping_loop_fb(publish: Any, recv: Any, items: list[bytes]) -> tuple[list[int], int]:
    pc = time.perf_counter_ns
    samples = [0] * len(items)
    bad = 0
    for i, p in enumerate(items):
        t0 = pc()
        publish(p)
        r = recv().payload
        samples[i] = pc() - t0
        if r != p:
            bad += 1
    return samples, bad


def _ping_loop_os(fd_out: int, fd_in: int, items: list[bytes]) -> tuple[list[int], int]:
    pc = time.perf_counter_ns
    write, read = os.write, os.read
    samples = [0] * len(items)
    bad = 0
    for i, p in enumerate(items):
        size = len(p)
        t0 = pc()
        if write(fd_out, p) != size:
            raise OSError("short write to the pipe")
        r = read(fd_in, size)
        if len(r) != size:
            r = _read_rest(fd_in, r, size)
        samples[i] = pc() - t0
        if r != p:
            bad += 1
    return samples, bad


def _pong_loop(send: Any, recv: Any, count: int) -> None:
    for _ in range(count):
        send(recv())


def _pong_loop_fb(publish: Any, recv: Any, count: int) -> None:
    for _ in range(count):
        publish(recv().payload)


def _pong_loop_os(fd_out: int, fd_in: int, size: int, count: int) -> None:
    write, read = os.write, os.read
    for _ in range(count):
        r = read(fd_in, size)
        if len(r) != size:
            r = _read_rest(fd_in, r, size)
        if write(fd_out, r) != size:
            raise OSError("short write to the pipe")


def _pingpong_ends(
    impl: str, spec: dict[str, Any], closers: list[Callable[[], Any]], pong: bool
) -> tuple[Any, Any, str]:
    """(send, recv, loop kind) of one side of a ping-pong."""
    if impl == "framebus":
        from ..bus import FrameBus

        out_bus = FrameBus.attach(spec["out"])
        closers.append(out_bus.close)
        in_bus = FrameBus.attach(spec["in"])
        closers.append(in_bus.close)
        sub = in_bus.subscribe(">")
        closers.append(sub.close)
        return out_bus.publish, sub.recv, "fb"
    if impl == "mp.Pipe":
        conn = spec["conn"]
        return conn.send_bytes, conn.recv_bytes, "generic"
    if impl == "faster-fifo":
        return spec["out"].put, spec["in"].get, "generic"
    if impl == "pyzmq":
        sock = _zmq_socket("PAIR", spec["addr"], pong, closers)
        return sock.send, sock.recv, "generic"
    if impl == "os.pipe":
        return spec["out"].fileno(), spec["in"].fileno(), "os"
    raise ValueError(f"unknown implementation {impl!r}")


def _pinger(impl: str, spec: dict[str, Any], closers: list[Callable[[], Any]]) -> Runner:
    send, recv, kind = _pingpong_ends(impl, spec, closers, pong=False)
    pool = _payload_pool(spec["size"], spec["pool_n"])
    loop = {"fb": _ping_loop_fb, "generic": _ping_loop, "os": _ping_loop_os}[kind]

    def run(conn: Connection, counter: Any, count: int) -> dict[str, Any]:
        samples, bad = loop(send, recv, _cycled(pool, count))
        return {"samples": array.array("q", samples).tobytes(), "bad": bad}

    return run


def _ponger(impl: str, spec: dict[str, Any], closers: list[Callable[[], Any]]) -> Runner:
    send, recv, kind = _pingpong_ends(impl, spec, closers, pong=True)
    size = spec["size"]

    def run(conn: Connection, counter: Any, count: int) -> dict[str, Any]:
        conn.send(("armed", None))
        if kind == "fb":
            _pong_loop_fb(send, recv, count)
        elif kind == "os":
            _pong_loop_os(send, recv, size, count)
        else:
            _pong_loop(send, recv, count)
        return {}

    return run


def _obj_producer(impl: str, spec: dict[str, Any], closers: list[Callable[[], Any]]) -> Runner:
    pool = [make_object(spec["kind"], i) for i in range(spec["pool_n"])]
    put = spec["q"].put

    def run(conn: Connection, counter: Any, count: int) -> dict[str, Any]:
        items = _cycled(pool, count)
        t0 = time.perf_counter_ns()
        _send_all(put, items)
        t1 = time.perf_counter_ns()
        return {"t0": t0, "t_sent": t1}

    return run


def _obj_consumer(impl: str, spec: dict[str, Any], closers: list[Callable[[], Any]]) -> Runner:
    kind, pool_n = spec["kind"], spec["pool_n"]
    q = spec["q"]
    get = functools.partial(q.get, timeout=RUN_TIMEOUT) if impl == "faster-fifo" else q.get

    def run(conn: Connection, counter: Any, count: int) -> dict[str, Any]:
        conn.send(("armed", None))
        n = 0
        last = None
        while n < count:
            k = min(_CHUNK, count - n)
            for _ in range(k):
                last = get()
            n += k
            counter.value = n
        t1 = time.perf_counter_ns()
        _await_producer(conn)
        if impl == "faster-fifo":
            left = _left_get_nowait(q.get_many_nowait)
        else:
            left = _left_queue(q)
        return {
            "t1": t1,
            "frames": n,
            "bytes": 0,
            "last_ok": last == make_object(kind, (count - 1) % pool_n),
            "seq_ok": True,
            "left_over": left,
        }

    return run


_ROLES: dict[str, Callable[[str, dict[str, Any], list[Callable[[], Any]]], Runner]] = {
    "producer": _producer,
    "consumer": _consumer,
    "ping": _pinger,
    "pong": _ponger,
    "obj-producer": _obj_producer,
    "obj-consumer": _obj_consumer,
}


# ------------------------------------------------------------------ parent side


class _Child:
    """One benchmark process and the parent's end of its control pipe."""

    def __init__(self, ctx: Any, role: str, impl: str, spec: dict[str, Any], counter: Any) -> None:
        self.role = role
        self.impl = impl
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(
            target=_child_main,
            args=(role, impl, spec, child_conn, counter),
            name=f"framebus-xbench-{role}",
            daemon=True,
        )
        self.proc.start()
        child_conn.close()

    def send(self, kind: str, **kwargs: Any) -> None:
        self.conn.send((kind, kwargs))

    def stop(self, graceful: bool) -> None:
        if graceful:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(("stop", {}))
            self.proc.join(10.0)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


@contextlib.contextmanager
def _children(
    ctx: Any, counter: Any, *specs: tuple[str, str, dict[str, Any]]
) -> Iterator[list[_Child]]:
    """Start one child per (role, impl, spec); stop them on the way out (terminate
    them at once if the block failed)."""
    started: list[_Child] = []
    graceful = False
    try:
        for role, impl, spec in specs:
            started.append(_Child(ctx, role, impl, spec, counter))
        yield started
        graceful = True
    finally:
        for child in started:
            child.stop(graceful)


def _gather(
    want: dict[_Child, str], timeout: float, tick: Callable[[], None] | None = None
) -> dict[_Child, Any]:
    """Wait until each child sent the message kind it is mapped to; BenchError if one
    fails, exits or nothing arrives within ``timeout`` seconds."""
    got: dict[_Child, Any] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(want):
        pending = [c for c in want if c not in got]
        handles: list[Any] = [c.conn for c in pending] + [c.proc.sentinel for c in pending]
        ready = _wait_ready(handles, 0.1)
        for child in pending:
            if child.conn in ready or (child.proc.sentinel in ready and child.conn.poll()):
                try:
                    kind, value = child.conn.recv()
                except EOFError:
                    kind, value = "exit", None
                if kind == "error":
                    raise BenchError(f"{child.impl} {child.role} process failed:\n{value}")
                if kind != want[child]:
                    raise BenchError(
                        f"{child.impl} {child.role} process: expected {want[child]!r}, "
                        f"got {kind!r} (exit code {child.proc.exitcode})"
                    )
                got[child] = value
            elif child.proc.sentinel in ready:
                child.proc.join(1.0)
                raise BenchError(
                    f"{child.impl} {child.role} process exited with code {child.proc.exitcode} "
                    f"before sending {want[child]!r}"
                )
        if tick is not None:
            tick()
        if len(got) < len(want) and time.monotonic() > deadline:
            missing = ", ".join(f"{c.role}: {want[c]!r}" for c in want if c not in got)
            raise BenchError(f"stuck: nothing from the processes after {timeout:g} s ({missing})")
    return got


def _segment_name() -> str:
    return f"xbench-{os.getpid()}-{next(_SEQ)}"


def _unlink_quietly(name: str) -> None:
    from ..bus import FrameBus

    with contextlib.suppress(FileNotFoundError):
        FrameBus.unlink(name)


def _shared_bus(stack: contextlib.ExitStack, preset: str) -> str:
    """A new shared bus closed and unlinked when ``stack`` unwinds; returns its name."""
    from ..bus import FrameBus

    name = _segment_name()
    stack.callback(_unlink_quietly, name)  # also if create_shared fails half-way
    bus = FrameBus.create_shared(name, preset=preset, wal_dir=None)
    stack.callback(bus.close)
    return name


def _ipc_address(stack: contextlib.ExitStack) -> str:
    d = tempfile.mkdtemp(prefix="framebus-xbench-")
    stack.callback(shutil.rmtree, d, True)
    return f"ipc://{d}/sock"


def _pipe(ctx: Any, stack: contextlib.ExitStack, duplex: bool) -> tuple[Connection, Connection]:
    a, b = ctx.Pipe(duplex=duplex)
    stack.callback(a.close)
    stack.callback(b.close)
    return a, b


def _close_quietly(obj: Any) -> None:
    with contextlib.suppress(Exception):
        obj.close()


def _lap_frames(preset: str, size: int) -> int:
    from ..config import BusConfig, record_size

    return -(-BusConfig.preset(preset).ring_bytes // record_size(size)) + 1


def _transfer_run(
    name: str,
    consumer: _Child,
    producer: _Child,
    counter: Any,
    count: int,
    size: int,
    params: XParams,
    tick: Callable[[int, float], None] | None,
) -> dict[str, Any]:
    """One timed transfer of ``count`` items producer -> consumer; checked."""
    counter.value = 0
    consumer.send("run", count=count)
    _gather({consumer: "armed"}, SETUP_TIMEOUT)
    started = time.perf_counter()
    producer.send("run", count=count)

    def on_tick() -> None:
        if tick is not None:
            tick(counter.value, time.perf_counter() - started)

    got = _gather({consumer: "received", producer: "done"}, params.timeout, on_tick)
    prod = got[producer]
    consumer.send("check")
    cons = _gather({consumer: "done"}, SETUP_TIMEOUT)[consumer]
    seconds = (cons["t1"] - prod["t0"]) / 1e9
    expected_bytes = count * size
    ok = (
        cons["frames"] == count
        and cons["bytes"] == expected_bytes
        and cons["last_ok"]
        and cons["seq_ok"]
        and cons["left_over"] == 0
        and seconds > 0
    )
    if not ok:
        raise BenchError(
            f"{name}: consumer received {cons['frames']} items ({cons['bytes']} bytes, "
            f"{cons['left_over']} left over, last item "
            f"{'as expected' if cons['last_ok'] else 'WRONG'}, sequence numbers "
            f"{'consecutive' if cons['seq_ok'] else 'WRONG'}, {seconds:.6f} s); expected "
            f"exactly {count} items ({expected_bytes} bytes)"
        )
    n = cons["frames"]
    return {
        "seconds": seconds,
        "send_seconds": (prod["t_sent"] - prod["t0"]) / 1e9,
        "frames_expected": count,
        "frames_delivered": n,
        "bytes_delivered": cons["bytes"],
        "bytes_expected": expected_bytes,
        "left_over": cons["left_over"],
        "last_item_ok": cons["last_ok"],
        "sequence_ok": cons["seq_ok"],
        "ok": True,
        "frames_per_s": n / seconds,
        "mb_per_s": cons["bytes"] / seconds / 1e6,
        "ns_per_frame": seconds * 1e9 / n,
    }


def _sized_count(params: XParams, warm_rate: float) -> int:
    if params.count is not None:
        return params.count
    n = int(warm_rate * params.seconds)
    return max(params.min_count, min(params.max_count, n))


def _transfer_scenario(
    name: str,
    ctx: Any,
    roles: tuple[str, str],
    impl: str,
    prod_spec: dict[str, Any],
    cons_spec: dict[str, Any],
    size: int,
    warm: int,
    params: XParams,
    progress: XProgress | None,
    unit: str,
) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    """Warm-up then ``repeat`` timed runs in one producer and one consumer process;
    returns (count per run, warm-up record, runs)."""
    counter = ctx.RawValue("q", 0)
    with _children(ctx, counter, (roles[1], impl, cons_spec), (roles[0], impl, prod_spec)) as (
        consumer,
        producer,
    ):
        _gather({consumer: "ready", producer: "ready"}, SETUP_TIMEOUT)
        warm_rec = _transfer_run(name, consumer, producer, counter, warm, size, params, None)
        count = _sized_count(params, warm_rec["frames_per_s"])
        runs: list[dict[str, Any]] = []
        for rep in range(1, params.repeat + 1):
            tick = None
            if progress is not None:

                def tick(done: int, elapsed: float, rep: int = rep, count: int = count) -> None:
                    assert progress is not None
                    rate = f"{fmt_rate(done / elapsed).rstrip()} {unit}/s" if elapsed else ""
                    progress.tick(name, rep, params.repeat, done, count, unit, rate)

            runs.append(_transfer_run(name, consumer, producer, counter, count, size, params, tick))
            if progress is not None:
                rates = [r["frames_per_s"] for r in runs]
                progress.rates_done(name, rep, params.repeat, count, unit, rates)
    return count, warm_rec, runs


def _skip(
    name: str, base: dict[str, Any], info: dict[str, Any], progress: XProgress | None
) -> dict[str, Any]:
    if progress is not None:
        progress.note(name, info["reason"])
    return {**base, "status": info["status"], "reason": info["reason"], "runs": []}


def _throughput(
    ctx: Any,
    size: int,
    mode: str,
    impl: str,
    params: XParams,
    peers: dict[str, dict[str, Any]],
    progress: XProgress | None,
) -> dict[str, Any]:
    m = "single" if mode == "single" else f"batch{params.batch}"
    name = f"throughput/{m}/{size}B/{impl}"
    base: dict[str, Any] = {
        "scenario": name,
        "mode": mode,
        "size": size,
        "impl": impl,
        "batch": params.batch if mode == "batch" else 1,
    }
    if impl in peers and peers[impl]["status"] != "ok":
        return _skip(name, base, peers[impl], progress)
    if progress is not None:
        progress.start(name)
    warm = params.warmup
    if is_framebus(impl) and params.warmup_lap:
        warm = max(warm, _lap_frames(params.preset, size))
    most = params.count if params.count is not None else params.max_count
    common = {
        "size": size,
        "mode": mode,
        "batch": params.batch,
        "pool_n": _pool_n(size, max(most, warm)),
    }
    prod: dict[str, Any]
    cons: dict[str, Any]
    with contextlib.ExitStack() as stack:
        if is_framebus(impl):
            name_ = _shared_bus(stack, params.preset)
            prod, cons = {"name": name_}, {"name": name_}
        elif impl == "mp.Queue":
            q = ctx.Queue()
            stack.callback(q.close)
            prod, cons = {"q": q}, {"q": q}
        elif impl in ("mp.Pipe", "os.pipe"):
            r, w = _pipe(ctx, stack, duplex=False)
            prod, cons = {"conn": w}, {"conn": r}
        elif impl == "faster-fifo":
            ff = import_optional("faster_fifo")
            fq = ff.Queue(max_size_bytes=max(FF_BUFFER_BYTES, 4 * params.batch * (size + 256)))
            prod, cons = {"q": fq}, {"q": fq}
        elif impl == "pyzmq":
            addr = _ipc_address(stack)
            prod, cons = {"addr": addr}, {"addr": addr}
        else:
            raise ValueError(f"unknown implementation {impl!r}")
        count, warm_rec, runs = _transfer_scenario(
            name,
            ctx,
            ("producer", "consumer"),
            impl,
            {**prod, **common},
            {**cons, **common},
            size,
            warm,
            params,
            progress,
            "frames",
        )
    return {
        **base,
        "status": "ok",
        "count": count,
        "warmup": {"frames": warm, "frames_per_s": warm_rec["frames_per_s"]},
        "runs": runs,
        "frames_per_s": summary([r["frames_per_s"] for r in runs]),
        "mb_per_s": summary([r["mb_per_s"] for r in runs]),
        "ns_per_frame": summary([r["ns_per_frame"] for r in runs]),
    }


def _queue_scenario(
    ctx: Any,
    kind: str,
    impl: str,
    params: XParams,
    peers: dict[str, dict[str, Any]],
    progress: XProgress | None,
) -> dict[str, Any]:
    name = f"queue/{kind}/{impl}"
    sample = make_object(kind, 0)
    base: dict[str, Any] = {
        "scenario": name,
        "object": kind,
        "impl": impl,
        "pickled_bytes": len(pickle.dumps(sample)),
    }
    if impl in peers and peers[impl]["status"] != "ok":
        return _skip(name, base, peers[impl], progress)
    if progress is not None:
        progress.start(name)
    most = params.count if params.count is not None else params.max_count
    common = {"kind": kind, "pool_n": max(1, min(OBJECT_POOL, max(most, params.warmup)))}
    with contextlib.ExitStack() as stack:
        if impl == "framebus.Queue":
            cls, _ = _framebus_queue()
            q = cls()
            stack.callback(_close_quietly, q)
        elif impl == "mp.Queue":
            q = ctx.Queue()
            stack.callback(q.close)
        elif impl == "faster-fifo":
            ff = import_optional("faster_fifo")
            q = ff.Queue(max_size_bytes=FF_BUFFER_BYTES)
        else:
            raise ValueError(f"unknown implementation {impl!r}")
        spec = {"q": q, **common}
        count, warm_rec, runs = _transfer_scenario(
            name,
            ctx,
            ("obj-producer", "obj-consumer"),
            impl,
            spec,
            spec,
            0,
            params.warmup,
            params,
            progress,
            "objects",
        )
    return {
        **base,
        "status": "ok",
        "count": count,
        "warmup": {"objects": params.warmup, "objects_per_s": warm_rec["frames_per_s"]},
        "runs": [
            {
                k.replace("frames", "objects"): v
                for k, v in r.items()
                if k not in ("bytes_delivered", "bytes_expected", "mb_per_s", "sequence_ok")
            }
            for r in runs
        ],
        "objects_per_s": summary([r["frames_per_s"] for r in runs]),
        "ns_per_object": summary([r["ns_per_frame"] for r in runs]),
    }


PERCENTILES: tuple[tuple[str, int], ...] = (
    ("p50", 500),
    ("p90", 900),
    ("p99", 990),
    ("p99.9", 999),
)


def percentiles(samples_ns: Sequence[int]) -> dict[str, float]:
    """Exact nearest-rank percentiles (plus min, max, mean) in microseconds."""
    s = sorted(samples_ns)
    n = len(s)
    if not n:
        raise ValueError("no samples")
    out: dict[str, float] = {}
    for key, per_mille in PERCENTILES:
        rank = max(1, -(-per_mille * n // 1000))  # integer ceil: no float rounding
        out[key] = s[rank - 1] / 1e3
    out["min"] = s[0] / 1e3
    out["max"] = s[-1] / 1e3
    out["mean"] = sum(s) / n / 1e3
    return out


def _pingpong(
    ctx: Any,
    impl: str,
    preset: str | None,
    params: XParams,
    peers: dict[str, dict[str, Any]],
    progress: XProgress | None,
) -> dict[str, Any]:
    label = impl if preset is None else f"{impl} {preset}"
    key = impl if preset is None else f"{impl}:{preset}"
    name = f"pingpong/{PINGPONG_SIZE}B/{key}"
    base: dict[str, Any] = {
        "scenario": name,
        "impl": impl,
        "preset": preset,
        "label": label,
        "size": PINGPONG_SIZE,
    }
    if impl in peers and peers[impl]["status"] != "ok":
        return _skip(name, base, peers[impl], progress)
    if progress is not None:
        progress.start(name)
    common = {"size": PINGPONG_SIZE, "pool_n": min(OBJECT_POOL, params.round_trips)}
    a: dict[str, Any]
    b: dict[str, Any]
    with contextlib.ExitStack() as stack:
        if impl == "framebus":
            assert preset is not None
            ab, ba = _shared_bus(stack, preset), _shared_bus(stack, preset)
            a, b = {"out": ab, "in": ba}, {"out": ba, "in": ab}
        elif impl == "mp.Pipe":
            ca, cb = _pipe(ctx, stack, duplex=True)
            a, b = {"conn": ca}, {"conn": cb}
        elif impl == "os.pipe":
            r1, w1 = _pipe(ctx, stack, duplex=False)
            r2, w2 = _pipe(ctx, stack, duplex=False)
            a, b = {"out": w1, "in": r2}, {"out": w2, "in": r1}
        elif impl == "faster-fifo":
            ff = import_optional("faster_fifo")
            q1, q2 = ff.Queue(max_size_bytes=1 << 20), ff.Queue(max_size_bytes=1 << 20)
            a, b = {"out": q1, "in": q2}, {"out": q2, "in": q1}
        elif impl == "pyzmq":
            addr = _ipc_address(stack)
            a, b = {"addr": addr}, {"addr": addr}
        else:
            raise ValueError(f"unknown implementation {impl!r}")
        counter = ctx.RawValue("q", 0)
        runs: list[dict[str, Any]] = []
        pooled: list[int] = []
        with _children(
            ctx, counter, ("pong", impl, {**b, **common}), ("ping", impl, {**a, **common})
        ) as (pong, ping):
            _gather({pong: "ready", ping: "ready"}, SETUP_TIMEOUT)
            for rep in range(0, params.repeat + 1):  # rep 0: the discarded warm-up
                n = params.pingpong_warmup if rep == 0 else params.round_trips
                pong.send("run", count=n)
                _gather({pong: "armed"}, SETUP_TIMEOUT)
                ping.send("run", count=n)
                got = _gather({ping: "done", pong: "done"}, params.timeout)
                res = got[ping]
                samples = array.array("q")
                samples.frombytes(res["samples"])
                if len(samples) != n or res["bad"]:
                    raise BenchError(
                        f"{name}: {len(samples)} round trips timed, {res['bad']} replies "
                        f"differing from what was sent; expected {n} exact echoes"
                    )
                if rep == 0:
                    continue
                pooled.extend(samples)
                runs.append(
                    {"round_trips": n, "bad_replies": 0, "ok": True, **percentiles(samples)}
                )
                if progress is not None:
                    p50s = [r["p50"] for r in runs]
                    progress.done(
                        name,
                        rep,
                        params.repeat,
                        n,
                        "round trips",
                        f"p50 {p50s[-1]:.1f} us",
                        f"median p50 {statistics.median(p50s):.1f} us",
                    )
    return {
        **base,
        "status": "ok",
        "round_trips": params.round_trips,
        "warmup_round_trips": params.pingpong_warmup,
        "runs": runs,
        "latency_us": {
            k: summary([r[k] for r in runs]) for k in [p for p, _ in PERCENTILES] + ["mean", "max"]
        },
        "pooled_us": percentiles(pooled),
    }


def _ratios(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ok = [r for r in results["throughput"] if r["status"] == "ok"]
    fb = {(r["mode"], r["size"], r["impl"]): r for r in ok if is_framebus(r["impl"])}
    for r in ok:
        if is_framebus(r["impl"]):
            continue
        for fb_impl in ("framebus", *FB_BATCH_VARIANTS):
            f = fb.get((r["mode"], r["size"], fb_impl))
            if f is None:
                continue
            out.append(
                {
                    "scenario": "throughput",
                    "mode": r["mode"],
                    "size": r["size"],
                    "impl": fb_impl,
                    "peer": r["impl"],
                    "framebus_over_peer": f["frames_per_s"]["median"] / r["frames_per_s"]["median"],
                }
            )
    pp = [r for r in results["pingpong"] if r["status"] == "ok"]
    base = next((r for r in pp if r["impl"] == PINGPONG_BASELINE), None)
    if base is not None:
        for r in pp:
            if r is base:
                continue
            out.append(
                {
                    "scenario": "pingpong",
                    "impl": r["label"],
                    "peer": PINGPONG_BASELINE,
                    "p50_over_peer_p50": r["latency_us"]["p50"]["median"]
                    / base["latency_us"]["p50"]["median"],
                }
            )
    qs = [r for r in results["queue"] if r["status"] == "ok"]
    fbq = {r["object"]: r for r in qs if r["impl"] == "framebus.Queue"}
    for r in qs:
        f = fbq.get(r["object"])
        if r["impl"] == "framebus.Queue" or f is None:
            continue
        out.append(
            {
                "scenario": "queue",
                "object": r["object"],
                "peer": r["impl"],
                "framebus_over_peer": f["objects_per_s"]["median"] / r["objects_per_s"]["median"],
            }
        )
    return out


def run(params: XParams, progress: XProgress | None = None) -> dict[str, Any]:
    """Run the scenarios; returns the report (the structure written by --json)."""
    started = time.time()
    load_start = load_average()
    ctx = mp.get_context(params.start_method)
    peers = peer_status()
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in SCENARIOS}
    if "throughput" in params.scenarios:
        for size in params.sizes:
            for mode in MODES:
                for impl in THROUGHPUT_IMPLS:
                    if mode == "batch" and impl not in BATCH_IMPLS:
                        continue
                    if mode == "single" and impl in FB_BATCH_VARIANTS:
                        continue
                    results["throughput"].append(
                        _throughput(ctx, size, mode, impl, params, peers, progress)
                    )
    if "pingpong" in params.scenarios:
        for impl, preset in PINGPONG_IMPLS:
            results["pingpong"].append(_pingpong(ctx, impl, preset, params, peers, progress))
    if "queue" in params.scenarios:
        for kind in params.objects:
            for impl in QUEUE_IMPLS:
                results["queue"].append(_queue_scenario(ctx, kind, impl, params, peers, progress))
    return {
        "schema": SCHEMA,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_seconds": time.time() - started,
        "machine": machine_info(),
        # 1-minute load average: other work on the machine moves these numbers a lot
        "load_average": {"start": load_start, "end": load_average()},
        "params": asdict(params),
        "peers": peers,
        "notes": {
            "clock": "time.perf_counter_ns (CLOCK_MONOTONIC, shared by the processes); "
            "throughput and queue: producer's first send -> consumer has the last item; "
            "ping-pong: each round trip, timed by the sending process",
            "statistics": "median, min and max over the timed runs; ping-pong percentiles "
            "are exact (nearest rank) over one run's round trips, then median/min/max over "
            "runs; pooled_us: the same over every timed round trip of the scenario",
            "runs": "fresh processes per scenario; one untimed warm-up run, then the timed "
            "runs in the same processes; without --count each run is sized from the warm-up "
            f"rate to last about {params.seconds:g} s ({params.min_count}..{params.max_count} "
            "items); framebus's warm-up also covers one lap of its ring",
            "mb": "MB/s counts payload bytes, 1 MB = 1e6 bytes",
            "ratio": "throughput/queue: framebus_over_peer = framebus median rate / peer "
            "median rate (> 1: framebus is faster); ping-pong: p50_over_peer_p50 = median p50 "
            f"/ {PINGPONG_BASELINE} median p50 (< 1: lower latency)",
            "peers": "multiprocessing.Queue() unbounded; multiprocessing.Pipe(duplex=False) "
            "send_bytes/recv_bytes (duplex for ping-pong); faster_fifo.Queue("
            f"max_size_bytes={FF_BUFFER_BYTES}) put/get, put_many/get_many; pyzmq PUSH/PULL "
            "(ping-pong: PAIR) over ipc://, copy=True below "
            f"{ZMQ_COPY_BELOW} bytes (pyzmq copies small messages anyway), copy=False "
            "above, default high-water marks; os.pipe: blocking os.write/os.read of whole "
            "records (exact reads), os.writev for a batch, default pipe size",
            "batch": "batch forms: mp.Queue puts lists, faster-fifo put_many/get_many, pyzmq "
            "multipart messages, os.pipe one write per batch; mp.Pipe: single calls only",
            "gc": "enabled; gc.collect() in each process before each run",
        },
        "results": results,
        "ratios": _ratios(results),
    }


# ------------------------------------------------------------------------ table


def _fmt_us(x: float) -> str:
    return f"{x:,.0f}" if x >= 1000 else f"{x:.1f}"


def format_table(report: dict[str, Any]) -> str:
    p = report["params"]
    m = report["machine"]
    peers = report["peers"]
    versions = []
    for impl in OPTIONAL_PEERS:
        info = peers.get(impl, {})
        if info.get("status") == "ok":
            extra = f" (libzmq {info['libzmq']})" if info.get("libzmq") else ""
            versions.append(f"{impl} {info.get('version') or '?'}{extra}")
        else:
            versions.append(f"{impl} {info.get('reason', 'missing')}")
    out = [
        f"framebus {m['framebus_version']} across processes ({p['start_method']}): median of "
        f"{p['repeat']} run{'s' if p['repeat'] != 1 else ''} (min..max) after a warm-up run",
        f"{m['cpu_model']}, {m['usable_cpus']} CPUs, Python {m['python_version']}; "
        + ", ".join(versions),
    ]
    load = report.get("load_average") or {}
    if load.get("start") is not None and load.get("end") is not None:
        out[-1] += f"; load average {load['start']:.2f} -> {load['end']:.2f}"
    ratio = {
        (r["mode"], r["size"], r["peer"]): r["framebus_over_peer"]
        for r in report["ratios"]
        if r["scenario"] == "throughput" and r.get("impl", "framebus") == "framebus"
    }
    variant_notes = variant_ratio_notes(
        [r for r in report["ratios"] if r["scenario"] == "throughput"],
        lambda r: (r["mode"], r["size"], r["impl"]),
    )
    rows = report["results"]["throughput"]
    if rows:
        out += [
            "",
            f"producer process -> consumer process, preset {p['preset']!r}; "
            "fb/peer = framebus frames/s / peer frames/s",
        ]
        head = (
            f"{'size':>7}  {'mode':<9}  {'impl':<16}  {'frames/s':>9}  {'(min..max)':<19}  "
            f"{'MB/s':>8}  {'fb/peer':>7}  {'frames/run':>10}"
        )
        out += [head, "-" * len(head)]
        prev = None
        for r in rows:
            key = (r["size"], r["mode"])
            first = key != prev
            if first and prev is not None:
                out.append("")
            prev = key
            mode = "single" if r["mode"] == "single" else f"batch{r['batch']}"
            size = f"{r['size']} B" if first else ""
            mode = mode if first else ""
            lead = f"{size:>7}  {mode:<9}  {r['impl']:<16}"
            if r["status"] != "ok":
                out.append(f"{lead}  {r['reason']}")
                continue
            fps = r["frames_per_s"]
            rng = fmt_range(fps)
            rt = ratio.get((r["mode"], r["size"], r["impl"]))
            rts = f"{rt:.2f}x" if rt is not None else "-"
            line = (
                f"{lead}  {fmt_rate(fps['median']):>9}  {rng:<19}  "
                f"{r['mb_per_s']['median']:>8.1f}  {rts:>7}  {r['count']:>10}"
            )
            out.append(line + variant_notes.get((r["mode"], r["size"], r["impl"]), ""))
        out.append(
            "Batch forms: mp.Queue puts lists, faster-fifo put_many, pyzmq multipart, "
            "os.pipe one write per batch; mp.Pipe: single calls only."
        )
    rows = report["results"]["pingpong"]
    if rows:
        pr = {
            r["impl"]: r["p50_over_peer_p50"]
            for r in report["ratios"]
            if r["scenario"] == "pingpong"
        }
        out += [
            "",
            f"ping-pong of {PINGPONG_SIZE} B, A -> B -> A: {p['round_trips']} round trips per run "
            f"after {p['pingpong_warmup']} discarded; microseconds, median over runs; "
            f"vs Pipe = p50 / {PINGPONG_BASELINE} p50",
        ]
        head = (
            f"{'impl':<21}  {'p50':>7}  {'(min..max)':<15}  {'p90':>7}  {'p99':>7}  "
            f"{'p99.9':>7}  {'vs Pipe':>7}"
        )
        out += [head, "-" * len(head)]
        for r in rows:
            if r["status"] != "ok":
                out.append(f"{r['label']:<21}  {r['reason']}")
                continue
            lat = r["latency_us"]
            rng = f"({_fmt_us(lat['p50']['min'])}..{_fmt_us(lat['p50']['max'])})"
            rt = pr.get(r["label"])
            rts = f"{rt:.2f}x" if rt is not None else "-"
            out.append(
                f"{r['label']:<21}  {_fmt_us(lat['p50']['median']):>7}  {rng:<15}  "
                f"{_fmt_us(lat['p90']['median']):>7}  {_fmt_us(lat['p99']['median']):>7}  "
                f"{_fmt_us(lat['p99.9']['median']):>7}  {rts:>7}"
            )
    rows = report["results"]["queue"]
    if rows:
        qr = {
            (r["object"], r["peer"]): r["framebus_over_peer"]
            for r in report["ratios"]
            if r["scenario"] == "queue"
        }
        out += [
            "",
            "multiprocessing.Queue API, producer process -> consumer process, one put/get per "
            "object; fb/peer = framebus.Queue objects/s / peer objects/s",
        ]
        head = (
            f"{'object':<14}  {'impl':<14}  {'objects/s':>9}  {'(min..max)':<19}  "
            f"{'fb/peer':>7}  {'objects/run':>11}"
        )
        out += [head, "-" * len(head)]
        prev_kind = None
        for r in rows:
            first = r["object"] != prev_kind
            if first and prev_kind is not None:
                out.append("")
            prev_kind = r["object"]
            obj = f"{r['object']} ({r['pickled_bytes']} B)" if first else ""
            lead = f"{obj:<14}  {r['impl']:<14}"
            if r["status"] != "ok":
                out.append(f"{lead}  {r['reason']}")
                continue
            ops = r["objects_per_s"]
            rng = fmt_range(ops)
            rt = qr.get((r["object"], r["impl"]))
            rts = f"{rt:.2f}x" if rt is not None else "-"
            out.append(
                f"{lead}  {fmt_rate(ops['median']):>9}  {rng:<19}  {rts:>7}  {r['count']:>11}"
            )
    return "\n".join(out)


# ------------------------------------------------------------------------- main


def execute(
    args: Any, error: Callable[[str], Any], command: list[str], suite: str = "xproc"
) -> int:
    """Run the xproc suite (or, ``suite="all"``, the in-process one first): progress on
    stderr, table(s) on stdout, JSON if asked."""
    check_suite_args(args, error, suite)
    params = params_from_args(args, error)
    if suite == "all":
        from . import inproc

        inproc_params = inproc.params_from_args(args, error)
    progress = None if args.no_progress else XProgress(sys.stderr)

    def both() -> dict[str, Any]:
        first = inproc.run(inproc_params, progress) if suite == "all" else None
        return {"inproc": first, "xproc": run(params, progress)}

    reports, status = run_guarded(both)
    if reports is None:
        return status
    first, report = reports["inproc"], reports["xproc"]
    if first is None:
        finish_report(report, args, command, format_table(report))
        return 0
    combined = {
        "schema": SCHEMA_ALL,
        "machine": report["machine"],
        "suites": {"inproc": first, "xproc": report},
    }
    finish_report(
        combined,
        args,
        command,
        inproc.format_table(first) + "\n\n" + format_table(report),
    )
    return 0


def build_parser(prog: str | None = None) -> Any:
    import argparse

    p = argparse.ArgumentParser(
        prog=prog,
        description="Across processes: framebus on a shared-memory ring beside "
        "multiprocessing.Queue, multiprocessing.Pipe, faster-fifo, pyzmq and os.pipe: "
        "throughput (single calls and batches), ping-pong latency percentiles, and "
        "framebus.Queue vs multiprocessing.Queue. Progress goes to stderr, the table to "
        "stdout.",
    )
    add_options(p, _FLAGS, _HELPS)
    return p


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The entry point of bench/xproc.py and ``python -m framebus.bench.xproc``."""
    return main_with(build_parser, execute, argv, prog)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python -m framebus.bench.xproc"))
