"""In-process SPSC throughput benchmark: framebus beside queue.Queue, queue.SimpleQueue
and a deque + threading.Condition queue, measured in the same run.

Used by ``framebus bench`` (framebus.cli), by ``python -m framebus.bench.inproc`` and
by ``bench/spsc_throughput.py``; it lives in the package because ``bench/`` is not
installed.

Two topologies, each with single calls and with batches:

``threads``
    one producer thread -> one consumer thread in this process. Both threads are
    started and meet at a barrier; the clock runs from the barrier's release to the
    consumer receiving the last frame. The threads share the GIL, as any two threads
    of one CPython process do: that is the situation being measured.
``one-thread``
    publish then receive in the same thread (ns per frame): the cost of the calls
    themselves, with no hand-off between threads.

Payloads are distinct ``bytes`` objects built before any clock starts (a pool of at
most ``POOL_BYTES`` per size, cycled when ``count`` frames would need more). Every
consumer touches each payload (``len``), counts frames and payload bytes, and the run
fails unless exactly ``count`` frames and ``count`` payloads' bytes arrived and nothing
is left over. For batches the peers put and get lists of ``batch`` payloads; framebus
uses ``publish_batch`` / ``recv_batch(batch)``.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ._common import (
    DEFAULT_BATCH,
    DEFAULT_SIZES,
    FB_BATCH_VARIANTS,
    SHARED_FLAGS,
    BenchError,
    Progress,
    add_options,
    check_common,
    execute_suite,
    fmt_range,
    fmt_rate,
    is_framebus,
    machine_info,
    main_with,
    summary,
    variant_ratio_notes,
)
from ._common import INPROC_COUNT as DEFAULT_COUNT
from ._common import INPROC_QUICK_COUNT as QUICK_COUNT
from ._common import INPROC_QUICK_REPEAT as QUICK_REPEAT
from ._common import INPROC_REPEAT as DEFAULT_REPEAT

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_COUNT",
    "DEFAULT_REPEAT",
    "DEFAULT_SIZES",
    "IMPLS",
    "MODES",
    "PEERS",
    "TOPOLOGIES",
    "DequeQueue",
    "Params",
    "build_parser",
    "execute",
    "format_table",
    "main",
    "make_payloads",
    "params_from_args",
    "run",
    "run_one_thread",
    "run_threads",
    "warm_up",
]

SCHEMA = "framebus.bench.spsc/1"

IMPLS: tuple[str, ...] = (
    "framebus",
    *FB_BATCH_VARIANTS,
    "queue.Queue",
    "queue.SimpleQueue",
    "deque+Condition",
)
PEERS: tuple[str, ...] = IMPLS[1 + len(FB_BATCH_VARIANTS) :]
MODES: tuple[str, ...] = ("single", "batch")
TOPOLOGIES: tuple[str, ...] = ("threads", "one-thread")

QUEUE_MAXSIZE = 1024  # items (single payloads, or lists in batch mode) for the bounded peers
POOL_BYTES = 64 << 20  # at most this many distinct payload bytes per size
RUN_TIMEOUT = 600.0  # seconds one run may take before it is declared stuck

_CHUNK = 1024  # single-call consumers publish their progress once per this many frames


# --------------------------------------------------------------------------- peers


class DequeQueue:
    """A bounded queue built the obvious way: a deque guarded by one Condition."""

    def __init__(self, maxsize: int) -> None:
        self._d: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._maxsize = maxsize

    def put(self, item: Any) -> None:
        with self._cond:
            while len(self._d) >= self._maxsize:
                self._cond.wait()
            self._d.append(item)
            self._cond.notify()

    def get(self) -> Any:
        with self._cond:
            while not self._d:
                self._cond.wait()
            item = self._d.popleft()
            self._cond.notify()
            return item

    def get_nowait(self) -> Any:
        with self._cond:
            if not self._d:
                raise queue.Empty
            item = self._d.popleft()
            self._cond.notify()
            return item


def _make_peer(impl: str, maxsize: int) -> Any:
    if impl == "queue.Queue":
        return queue.Queue(maxsize=maxsize)
    if impl == "queue.SimpleQueue":
        return queue.SimpleQueue()  # unbounded: it has no maxsize
    if impl == "deque+Condition":
        return DequeQueue(maxsize)
    raise ValueError(f"unknown peer {impl!r}")


# -------------------------------------------------------------------------- params


@dataclass
class Params:
    sizes: list[int] = field(default_factory=lambda: list(DEFAULT_SIZES))
    count: int = DEFAULT_COUNT
    repeat: int = DEFAULT_REPEAT
    batch: int = DEFAULT_BATCH
    preset: str = "default"
    quick: bool = False
    queue_maxsize: int = QUEUE_MAXSIZE
    impls: list[str] = field(default_factory=lambda: list(IMPLS))
    modes: list[str] = field(default_factory=lambda: list(MODES))
    topologies: list[str] = field(default_factory=lambda: list(TOPOLOGIES))
    timeout: float = RUN_TIMEOUT


def build_parser(prog: str | None = None) -> Any:
    import argparse

    p = argparse.ArgumentParser(
        prog=prog,
        description="SPSC throughput in one process: framebus beside queue.Queue, "
        "queue.SimpleQueue and deque+Condition, single calls and batches, plus "
        "publish+recv in one thread (ns per frame).",
    )
    add_options(p, SHARED_FLAGS)
    return p


def params_from_args(args: Any, error: Callable[[str], Any]) -> Params:
    """Params from parsed options; ``error(msg)`` (argparse's parser.error) on bad values."""
    sizes = check_common(args, error)
    count = args.count if args.count is not None else (QUICK_COUNT if args.quick else DEFAULT_COUNT)
    repeat = (
        args.repeat if args.repeat is not None else (QUICK_REPEAT if args.quick else DEFAULT_REPEAT)
    )
    return Params(
        sizes=sizes,
        count=count,
        repeat=repeat,
        batch=args.batch,
        preset=args.preset,
        quick=bool(args.quick),
    )


# ---------------------------------------------------------------------- payloads


def make_payloads(size: int, count: int) -> list[bytes]:
    """``count`` references into a pool of distinct bytes objects of ``size`` bytes."""
    pool_n = max(1, min(count, POOL_BYTES // size))
    filler = bytes(range(256)) * (size // 256 + 1)
    pool = [(i.to_bytes(8, "little") + filler)[:size] for i in range(pool_n)]
    if pool_n == count:
        return pool
    return [pool[i % pool_n] for i in range(count)]


# ---------------------------------------------------------------------- consumers
# Each returns (frames, payload bytes). Written out per kind so the timed loops have
# no wrapper calls in them.


def _consume_single(get: Callable[[], Any], count: int, prog: list[int]) -> tuple[int, int]:
    n = nbytes = 0
    while n < count:
        k = min(_CHUNK, count - n)
        for _ in range(k):
            nbytes += len(get())
        n += k
        prog[0] = n
    return n, nbytes


def _consume_single_fb(recv: Callable[[], Any], count: int, prog: list[int]) -> tuple[int, int]:
    n = nbytes = 0
    while n < count:
        k = min(_CHUNK, count - n)
        for _ in range(k):
            nbytes += len(recv().payload)
        n += k
        prog[0] = n
    return n, nbytes


def _consume_batch(get: Callable[[], Any], count: int, prog: list[int]) -> tuple[int, int]:
    n = nbytes = 0
    while n < count:
        items = get()
        for item in items:
            nbytes += len(item)
        n += len(items)
        prog[0] = n
    return n, nbytes


def _consume_batch_fb(
    recv_batch: Callable[[int], Any], batch: int, count: int, prog: list[int]
) -> tuple[int, int]:
    n = nbytes = 0
    while n < count:
        frames = recv_batch(batch)
        for f in frames:
            nbytes += len(f.payload)
        n += len(frames)
        prog[0] = n
    return n, nbytes


def _consume_payloads_fb(
    recv_payloads: Callable[[int], Any], batch: int, count: int, prog: list[int]
) -> tuple[int, int]:
    n = nbytes = 0
    while n < count:
        payloads = recv_payloads(batch)
        for p in payloads:
            nbytes += len(p)
        n += len(payloads)
        prog[0] = n
    return n, nbytes


def _consume_frames_fb(
    recv_frames: Callable[[int], Any], batch: int, count: int, prog: list[int]
) -> tuple[int, int]:
    # every payload's length, through the batch's numpy view of the lengths
    n = nbytes = 0
    while n < count:
        frames = recv_frames(batch)
        nbytes += int(frames.lengths.sum())
        n += len(frames)
        prog[0] = n
    return n, nbytes


# ------------------------------------------------------------------------- runs


def _leftover(impl: str, endpoint: Any) -> int:
    """Items still waiting after the consumer got ``count`` frames (should be 0)."""
    left = 0
    if is_framebus(impl):
        while True:
            got = endpoint.recv_batch(4096, timeout=0)
            if not got:
                return left
            left += len(got)
    while True:
        try:
            item = endpoint.get_nowait()
        except queue.Empty:
            return left
        left += len(item) if isinstance(item, list) else 1


def run_threads(
    impl: str,
    mode: str,
    items: list[bytes],
    batches: list[list[bytes]],
    params: Params,
    bus: Any,
    tick: Callable[[int, float | None], None] | None = None,
    collect: bool = True,
) -> dict[str, Any]:
    """One run of ``len(items)`` frames, producer thread -> consumer thread.

    ``bus``: the FrameBus for impl "framebus" (a new subscription is made), else None.
    ``tick(done, elapsed_s)`` is called about ten times a second from this thread.
    ``collect``: gc.collect() first (outside the clock either way).
    """
    count = len(items)
    prog = [0]
    t0: list[int] = []
    t1: list[int] = []
    result: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    sub = None
    if is_framebus(impl):
        sub = bus.subscribe(">")
        endpoint: Any = sub
        if mode == "single":
            put: Callable[[Any], Any] = bus.publish

            def consume() -> tuple[int, int]:
                return _consume_single_fb(sub.recv, count, prog)
        elif impl == "fb.recv_payloads":
            put = bus.publish_batch

            def consume() -> tuple[int, int]:
                return _consume_payloads_fb(sub.recv_payloads, params.batch, count, prog)
        elif impl == "fb.recv_frames":
            put = bus.publish_batch

            def consume() -> tuple[int, int]:
                return _consume_frames_fb(sub.recv_frames, params.batch, count, prog)
        else:
            put = bus.publish_batch

            def consume() -> tuple[int, int]:
                return _consume_batch_fb(sub.recv_batch, params.batch, count, prog)
    else:
        q = _make_peer(impl, params.queue_maxsize)
        endpoint = q
        put = q.put

        def consume() -> tuple[int, int]:
            if mode == "single":
                return _consume_single(q.get, count, prog)
            return _consume_batch(q.get, count, prog)

    source: Sequence[Any] = items if mode == "single" else batches
    barrier = threading.Barrier(2, action=lambda: t0.append(time.perf_counter_ns()))

    def producer() -> None:
        try:
            barrier.wait()
            for x in source:
                put(x)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def consumer() -> None:
        try:
            barrier.wait()
            r = consume()
            t1.append(time.perf_counter_ns())
            result.append(r)
        except BaseException as exc:
            errors.append(exc)

    if collect:
        gc.collect()
    tp = threading.Thread(target=producer, name="bench-producer", daemon=True)
    tc = threading.Thread(target=consumer, name="bench-consumer", daemon=True)
    tc.start()
    tp.start()
    deadline = time.monotonic() + params.timeout
    try:
        while tc.is_alive():
            tc.join(0.1 if tick is not None else 1.0)
            if tick is not None and t0:
                tick(prog[0], (time.perf_counter_ns() - t0[0]) / 1e9)
            if errors and not tc.is_alive():
                break
            if errors or time.monotonic() > deadline:
                if sub is not None:
                    bus.close()  # wakes a consumer blocked in recv
                why = repr(errors[0]) if errors else f"no end after {params.timeout:g} s"
                raise BenchError(
                    f"{impl} threads/{mode}: stuck at {prog[0]}/{count} frames ({why})"
                )
        tp.join(params.timeout)
        if errors:
            raise BenchError(f"{impl} threads/{mode}: {errors[0]!r}") from errors[0]
        if tp.is_alive():
            raise BenchError(f"{impl} threads/{mode}: producer did not finish")
        n, nbytes = result[0]
        left = _leftover(impl, endpoint)
    finally:
        if sub is not None:
            with contextlib.suppress(Exception):  # the bus may have been closed above
                sub.close()
    return _run_record(count, n, nbytes, left, (t1[0] - t0[0]) / 1e9, items)


def run_one_thread(
    impl: str,
    mode: str,
    items: list[bytes],
    batches: list[list[bytes]],
    params: Params,
    bus: Any,
    collect: bool = True,
) -> dict[str, Any]:
    """One run of ``len(items)`` frames, publish then receive in this thread."""
    count = len(items)
    n = nbytes = 0
    sub = None
    if collect:
        gc.collect()
    try:
        if is_framebus(impl):
            sub = bus.subscribe(">")
            endpoint: Any = sub
            if mode == "single":
                publish, recv = bus.publish, sub.recv
                t0 = time.perf_counter_ns()
                for p in items:
                    publish(p)
                    nbytes += len(recv().payload)
                t1 = time.perf_counter_ns()
                n = count
            elif impl == "fb.recv_payloads":
                publish_batch, recv_payloads, b = bus.publish_batch, sub.recv_payloads, params.batch
                t0 = time.perf_counter_ns()
                for chunk in batches:
                    publish_batch(chunk)
                    payloads = recv_payloads(b)
                    for p in payloads:
                        nbytes += len(p)
                    n += len(payloads)
                t1 = time.perf_counter_ns()
            elif impl == "fb.recv_frames":
                publish_batch, recv_frames, b = bus.publish_batch, sub.recv_frames, params.batch
                t0 = time.perf_counter_ns()
                for chunk in batches:
                    publish_batch(chunk)
                    fbatch = recv_frames(b)
                    nbytes += int(fbatch.lengths.sum())
                    n += len(fbatch)
                t1 = time.perf_counter_ns()
            else:
                publish_batch, recv_batch, b = bus.publish_batch, sub.recv_batch, params.batch
                t0 = time.perf_counter_ns()
                for chunk in batches:
                    publish_batch(chunk)
                    frames = recv_batch(b)
                    for f in frames:
                        nbytes += len(f.payload)
                    n += len(frames)
                t1 = time.perf_counter_ns()
        else:
            q = _make_peer(impl, params.queue_maxsize)
            endpoint = q
            put, get = q.put, q.get
            if mode == "single":
                t0 = time.perf_counter_ns()
                for p in items:
                    put(p)
                    nbytes += len(get())
                t1 = time.perf_counter_ns()
                n = count
            else:
                t0 = time.perf_counter_ns()
                for chunk in batches:
                    put(chunk)
                    got = get()
                    for item in got:
                        nbytes += len(item)
                    n += len(got)
                t1 = time.perf_counter_ns()
        left = _leftover(impl, endpoint)
    finally:
        if sub is not None:
            sub.close()
    return _run_record(count, n, nbytes, left, (t1 - t0) / 1e9, items)


def _run_record(
    count: int, n: int, nbytes: int, left: int, seconds: float, items: list[bytes]
) -> dict[str, Any]:
    expected_bytes = len(items[0]) * count
    return {
        "seconds": seconds,
        "frames_expected": count,
        "frames_delivered": n,
        "bytes_delivered": nbytes,
        "bytes_expected": expected_bytes,
        "left_over": left,
        "ok": n == count and nbytes == expected_bytes and left == 0,
        "frames_per_s": n / seconds if seconds > 0 else float("inf"),
        "mb_per_s": nbytes / seconds / 1e6 if seconds > 0 else float("inf"),
        "ns_per_frame": seconds * 1e9 / n if n else float("nan"),
    }


def warm_up(bus: Any) -> None:
    """One untimed lap of the ring, so runs measure steady state, not first-touch faults."""
    from ..config import record_size

    size = min(bus.config.max_frame, 64 << 10)
    payload = bytes(size)
    target = max(bus.config.ring_bytes, getattr(bus, "mapped_bytes", 0) or 0) + size
    sub = bus.subscribe(">")
    try:
        written = 0
        while written < target:
            bus.publish(payload)
            sub.recv()
            written += record_size(size)
    finally:
        sub.close()


def scenario_name(topology: str, mode: str, size: int, impl: str, batch: int) -> str:
    m = "single" if mode == "single" else f"batch{batch}"
    return f"{topology}/{m}/{size}B/{impl}"


def run(params: Params, progress: Progress | None = None) -> dict[str, Any]:
    """Run every scenario; returns the report (the structure written by --json)."""
    from .. import FrameBus

    started = time.time()
    results: list[dict[str, Any]] = []
    for size in params.sizes:
        items = make_payloads(size, params.count)
        batches = [items[i : i + params.batch] for i in range(0, len(items), params.batch)]
        for topology in params.topologies:
            for mode in params.modes:
                for impl in params.impls:
                    if mode == "single" and impl in FB_BATCH_VARIANTS:
                        continue  # batch receives: no single-call row
                    name = scenario_name(topology, mode, size, impl, params.batch)
                    runs = []
                    bus = None
                    if impl == "fb.recv_frames":
                        import numpy  # noqa: F401  (FrameBatch's views import it: not timed)
                    if is_framebus(impl):
                        bus = FrameBus(preset=params.preset, wal_dir=None)
                        warm_up(bus)
                    if progress is not None:
                        progress.start(name)
                    try:
                        for rep in range(1, params.repeat + 1):
                            tick = None
                            if progress is not None and topology == "threads":

                                def tick(
                                    done: int,
                                    elapsed: float | None,
                                    rep: int = rep,
                                    name: str = name,
                                ) -> None:
                                    progress.update(
                                        name, rep, params.repeat, done, params.count, elapsed
                                    )

                            if topology == "threads":
                                r = run_threads(impl, mode, items, batches, params, bus, tick)
                            else:
                                r = run_one_thread(impl, mode, items, batches, params, bus)
                            if not r["ok"]:
                                raise BenchError(
                                    f"{name}: consumer received {r['frames_delivered']} frames "
                                    f"({r['bytes_delivered']} bytes, {r['left_over']} left "
                                    f"over); expected exactly {params.count} frames "
                                    f"({r['bytes_expected']} bytes)"
                                )
                            runs.append(r)
                            if progress is not None:
                                progress.repeat_done(
                                    name,
                                    rep,
                                    params.repeat,
                                    params.count,
                                    [x["frames_per_s"] for x in runs],
                                )
                    finally:
                        if bus is not None:
                            bus.close()
                    results.append(
                        {
                            "scenario": name,
                            "topology": topology,
                            "mode": mode,
                            "size": size,
                            "impl": impl,
                            "batch": params.batch if mode == "batch" else 1,
                            "count": params.count,
                            "runs": runs,
                            "frames_per_s": summary([r["frames_per_s"] for r in runs]),
                            "mb_per_s": summary([r["mb_per_s"] for r in runs]),
                            "ns_per_frame": summary([r["ns_per_frame"] for r in runs]),
                        }
                    )
        del items, batches
    ratios = []
    by_key = {(r["topology"], r["mode"], r["size"], r["impl"]): r for r in results}
    for (topology, mode, size, impl), r in by_key.items():
        if is_framebus(impl):
            continue
        for fb_impl in ("framebus", *FB_BATCH_VARIANTS):
            fb = by_key.get((topology, mode, size, fb_impl))
            if fb is None:
                continue
            ratios.append(
                {
                    "topology": topology,
                    "mode": mode,
                    "size": size,
                    "impl": fb_impl,
                    "peer": impl,
                    "framebus_over_peer": fb["frames_per_s"]["median"]
                    / r["frames_per_s"]["median"],
                }
            )
    return {
        "schema": SCHEMA,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_seconds": time.time() - started,
        "machine": machine_info(),
        "params": asdict(params),
        "notes": {
            "clock": "time.perf_counter_ns; threads: barrier release -> consumer has the "
            "last frame; one-thread: the whole publish+recv loop",
            "statistics": "median, min and max over the repeats",
            "mb": "MB/s counts payload bytes, 1 MB = 1e6 bytes",
            "ratio": "framebus_over_peer = framebus median frames/s / peer median frames/s "
            "in the same run (> 1: framebus is faster)",
            "peers": f"queue.Queue(maxsize={params.queue_maxsize}), queue.SimpleQueue "
            f"(unbounded), deque+Condition bounded at {params.queue_maxsize} items; in batch "
            "mode each item is a list of `batch` payloads",
            "gc": "enabled during runs; gc.collect() before each run",
            "warm_up": "framebus: each scenario gets a new bus, given one untimed lap of its "
            "ring before the runs; each run uses a new subscription",
        },
        "results": results,
        "ratios": ratios,
    }


# -------------------------------------------------------------------------- table


def _fmt_ns(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def format_table(report: dict[str, Any]) -> str:
    p = report["params"]
    m = report["machine"]
    ratio = {
        (r["topology"], r["mode"], r["size"], r["peer"]): r["framebus_over_peer"]
        for r in report["ratios"]
        if r.get("impl", "framebus") == "framebus"
    }
    variant_notes = variant_ratio_notes(
        report["ratios"], lambda r: (r["topology"], r["mode"], r["size"], r["impl"])
    )
    out = [
        f"framebus {m['framebus_version']} SPSC in one process: {p['count']} frames per run, "
        f"median of {p['repeat']} run{'s' if p['repeat'] != 1 else ''} (min..max), "
        f"preset {p['preset']!r}",
        f"{m['cpu_model']}, {m['usable_cpus']} CPUs, Python {m['python_version']}",
    ]
    results = report["results"]
    for topology in TOPOLOGIES:
        rows = [r for r in results if r["topology"] == topology]
        if not rows:
            continue
        out.append("")
        if topology == "threads":
            out.append(
                "producer thread -> consumer thread; fb/peer = framebus frames/s / peer frames/s"
            )
            head = (
                f"{'size':>7}  {'mode':<9}  {'impl':<17}  {'frames/s':>9}  "
                f"{'(min..max)':<19}  {'MB/s':>8}  {'fb/peer':>7}"
            )
        else:
            out.append(
                "publish+recv in one thread; fb/peer = peer ns / framebus ns (> 1: framebus faster)"
            )
            head = (
                f"{'size':>7}  {'mode':<9}  {'impl':<17}  {'ns/frame':>9}  "
                f"{'(min..max)':<19}  {'MB/s':>8}  {'fb/peer':>7}"
            )
        out.append(head)
        out.append("-" * len(head))
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
            rt = ratio.get((topology, r["mode"], r["size"], r["impl"]))
            rts = f"{rt:.2f}x" if rt is not None else "-"
            if topology == "threads":
                fps = r["frames_per_s"]
                val = fmt_rate(fps["median"])
                rng = fmt_range(fps)
            else:
                ns = r["ns_per_frame"]
                val = _fmt_ns(ns["median"])
                rng = f"({_fmt_ns(ns['min'])}..{_fmt_ns(ns['max'])})"
            line = (
                f"{size:>7}  {mode:<9}  {r['impl']:<17}  {val:>9}  {rng:<19}  "
                f"{r['mb_per_s']['median']:>8.1f}  {rts:>7}"
            )
            out.append(line + variant_notes.get((topology, r["mode"], r["size"], r["impl"]), ""))
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def execute(args: Any, error: Callable[[str], Any], command: list[str]) -> int:
    """Run with parsed options: progress on stderr, table on stdout, JSON if asked."""
    return execute_suite(
        args, error, command, "inproc", params_from_args, run, format_table, progress_class=Progress
    )


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The entry point of bench/spsc_throughput.py and ``python -m framebus.bench.inproc``."""
    return main_with(build_parser, execute, argv, prog)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python -m framebus.bench.inproc"))
