"""The flow benchmark: one pipeline, source -> map -> filter -> sink, run by framebus.flow
(``sync`` and ``inproc``) beside bytewax (one worker), streamz and hand-written
``queue.Queue`` threads, in the same process and run; the same pipeline under the
``ipc`` runtime beside three processes joined by ``multiprocessing.Queue``; a CPU-heavy
map with ``parallelism=2`` under ``ipc`` and ``inproc``; and the end-to-end latency of
``inproc`` and ``ipc`` with the source paced.

Used by ``framebus bench --suite flow`` (framebus.cli), ``python -m framebus.bench.flow``
and ``bench/flow.py``.

The pipeline. ``count`` distinct 64-byte bytes items, built before any clock starts
(a 16-digit number, then filler). ``parse`` turns one into a tuple ``(number, bytes
16..32, length)``; ``keep`` drops the items whose number is a multiple of 10 (10 %);
the sink appends to a list. Every implementation calls the same three functions once
per item, and a run fails unless the sink got exactly the 90 % expected, in order
where the implementation keeps order.

Implementations. ``fb.sync`` and ``fb.inproc``: one ``flow.Graph`` (map and filter fuse
into one stage), ``plan.run(runtime=...)``; ``fb.inproc.msgpack``: inproc with
``codec="msgpack"`` (items encoded in the frames, as across processes);
``fb.inproc.thread``: inproc with ``handoff="thread"`` (every frame handed to the next
stage's thread, none run in its sender's). ``bytewax``:
``bytewax.testing.run_main`` (one worker) over ``TestingSource(items,
batch_size=1000)``, ``op.map``, ``op.filter``, ``TestingSink``. ``streamz``:
``Stream().map(parse).filter(keep).sink(append)``, each item ``emit``-ted.
``queue.Queue``: four threads (source, map, filter, sink) with a
``queue.Queue(maxsize=1024)`` between each two, one item per ``put``. A peer that is not
installed is skipped with a note.

Across processes (start method spawn). ``fb.ipc``:
the same graph with ``runtime="ipc"`` (map and filter fuse: three processes, source,
parse+keep, sink); the source makes its items in its process and the sink counts them
there (the Report's counts are checked). ``mp.Queue``: the same three stages by hand,
three processes joined by two ``multiprocessing.Queue(maxsize=1024)``, one item per
``put``, the items made in the source process. Ratio ``fb.ipc / mp.Queue``, target
>= 20x. ``cpu.inproc`` and ``cpu.ipc``: ``cpu_count`` ints -> ``crunch`` (a pure-Python
loop that holds the GIL, about 2 ms an item on the reference machine) with
``parallelism=2`` -> a sink, ``max_batch=16`` and ``window=4`` on the map so the two
workers share the work evenly (a worker takes up to a window of frames per receive);
ratio ``cpu.ipc / cpu.inproc``, target >= 1.6x on two cores (threads of one process
take turns on the GIL; processes do not). These rows time the pipe, not the start:
from the source's first item (after its process started and made its items) to the
sink's last, both read on the machine's one monotonic clock (``time.monotonic_ns``,
the same in every process); starting the processes and importing framebus (spawn:
about 1.5 s for three here) is left out for every implementation alike, ``cpu.inproc``
too.

Order: round robin, each repeat running every implementation once (the first run
in a process is slower, its heap still growing). Times: ``time.perf_counter`` around
the whole run (graph compile, threads and bus
setup included for framebus; the Dataflow build for bytewax). Paced latency: the same
graph with the source at ``rate=20000`` items/s, ``paced`` items, the Report's
end-to-end percentiles (source emission to sink, see framebus.flow.inproc), each the
median over ``repeat`` runs, for ``inproc`` (with ``fb.inproc``; with
``fb.inproc.thread`` also its ``handoff="thread"``) and ``ipc`` (with ``fb.ipc``,
items made in the source process; emission and delivery on the machine's one
monotonic clock): ratio ipc p95 / inproc p95, target <= 3x, and p99 beside it, and
ipc p95 / the p95 of inproc with ``handoff="thread"`` (both handing every frame to
another stage's thread or process); the achieved rate of the ipc run over its pipe
time, as above.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ._common import (
    BenchError,
    XProgress,
    add_options,
    dist_version,
    execute_suite,
    fmt_range,
    fmt_rate,
    machine_info,
    main_with,
    summary,
)

__all__ = ["IMPLS", "Params", "execute", "format_table", "main", "run"]

SCHEMA = "framebus.bench.flow/1"
DEFAULT_COUNT = 500_000
QUICK_COUNT = 20_000
DEFAULT_REPEAT = 3
QUICK_REPEAT = 2
PACED_RATE = 20_000.0
DEFAULT_PACED = 20_000  # one second at the rate
QUICK_PACED = 2_000
IMPLS = (
    "fb.inproc",
    "fb.inproc.msgpack",
    "fb.inproc.thread",
    "fb.sync",
    "bytewax",
    "streamz",
    "queue.Queue",
    "fb.ipc",
    "mp.Queue",
    "cpu.inproc",
    "cpu.ipc",
)
PEERS = ("fb.inproc.msgpack", "fb.inproc.thread", "fb.sync", "bytewax", "streamz", "queue.Queue")
TARGETS = {"bytewax": 1.0, "queue.Queue": 8.0}  # inproc / peer, at least
PACED_P99_TARGET_US = 200.0
QUEUE_MAXSIZE = 1024
# across processes: (impl, peer, impl / peer at least)
PROC_RATIOS = (("fb.ipc", "mp.Queue", 20.0), ("cpu.ipc", "cpu.inproc", 1.6))
PACED_P95_RATIO_TARGET = 3.0  # ipc p95 / inproc p95, at most
DEFAULT_CPU_COUNT = 3_000
QUICK_CPU_COUNT = 200
CPU_LOOP = 20_000  # iterations of crunch's loop per item
CPU_MAX_BATCH = 16
CPU_WINDOW = 4  # frames of credit on the CPU-heavy map's port
START_METHOD = "spawn"
_COUNT_ENV = "FRAMEBUS_BENCH_FLOW_COUNT"  # how many items the worker's source makes
_STAMPS_ENV = "FRAMEBUS_BENCH_FLOW_STAMPS"  # where the pipe's first and last times go
_EXPECT_ENV = "FRAMEBUS_BENCH_FLOW_EXPECT"  # the sink's item count at the last item


@dataclass
class Params:
    count: int = DEFAULT_COUNT
    repeat: int = DEFAULT_REPEAT
    paced: int = DEFAULT_PACED
    impls: tuple[str, ...] = IMPLS
    quick: bool = False
    cpu_count: int = DEFAULT_CPU_COUNT


# ------------------------------------------------------------------- the pipeline


def make_items(count: int) -> list[bytes]:
    filler = bytes(range(65, 65 + 48))
    return [b"%016d" % i + filler for i in range(count)]


def parse(item: bytes) -> tuple[int, bytes, int]:
    return (int(item[:16]), item[16:32], len(item))


def keep(t: Any) -> bool:
    return t[0] % 10 != 0  # type: ignore[no-any-return]


def expected_count(count: int) -> int:
    return count - (count + 9) // 10


class Skip(Exception):
    """A peer that is not installed."""


def _graph(items: list[bytes], out: list[Any], rate: float | None = None) -> Any:
    from framebus import flow

    g = flow.Graph("bench")
    src = g.source("src", lambda: items, rate=rate)
    src >> g.map("parse", parse) >> g.filter("keep", keep) >> g.sink("sink", out.append)
    return g


def run_framebus(runtime: str, items: list[bytes], **options: Any) -> tuple[float, list[Any], Any]:
    from framebus import flow

    out: list[Any] = []
    start = time.perf_counter()
    report = flow.compile(_graph(items, out)).run(runtime=runtime, **options)
    return time.perf_counter() - start, out, report


def run_bytewax(items: list[bytes]) -> tuple[float, list[Any], Any]:
    try:
        import bytewax.operators as op
        from bytewax.dataflow import Dataflow
        from bytewax.testing import TestingSink, TestingSource, run_main
    except ImportError as exc:
        raise Skip(f"bytewax is not installed ({exc})") from None
    out: list[Any] = []
    start = time.perf_counter()
    df = Dataflow("bench")
    s = op.input("src", df, TestingSource(items, batch_size=1000))
    f = op.filter("keep", op.map("parse", s, parse), keep)
    op.output("sink", f, TestingSink(out))
    run_main(df)
    return time.perf_counter() - start, out, None


def run_streamz(items: list[bytes]) -> tuple[float, list[Any], Any]:
    try:
        from streamz import Stream
    except ImportError as exc:
        raise Skip(f"streamz is not installed ({exc})") from None
    out: list[Any] = []
    start = time.perf_counter()
    source = Stream()
    source.map(parse).filter(keep).sink(out.append)
    emit = source.emit
    for item in items:
        emit(item)
    return time.perf_counter() - start, out, None


_END = object()


def run_queues(items: list[bytes]) -> tuple[float, list[Any], Any]:
    out: list[Any] = []
    q1: queue.Queue[Any] = queue.Queue(QUEUE_MAXSIZE)
    q2: queue.Queue[Any] = queue.Queue(QUEUE_MAXSIZE)
    q3: queue.Queue[Any] = queue.Queue(QUEUE_MAXSIZE)

    def source() -> None:
        put = q1.put
        for item in items:
            put(item)
        put(_END)

    def mapper() -> None:
        get, put = q1.get, q2.put
        while (item := get()) is not _END:
            put(parse(item))
        put(_END)

    def filterer() -> None:
        get, put = q2.get, q3.put
        while (item := get()) is not _END:
            if keep(item):
                put(item)
        put(_END)

    def sink() -> None:
        get, append = q3.get, out.append
        while (item := get()) is not _END:
            append(item)

    start = time.perf_counter()
    threads = [threading.Thread(target=f, daemon=True) for f in (source, mapper, filterer, sink)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, out, None


# -- across processes: callables the ipc workers import by "module:qualname" -------


def _stamp(name: str) -> None:
    """Writes the monotonic time to the run's stamp file ``name`` (when timed)."""
    where = os.environ.get(_STAMPS_ENV)
    if where:
        with open(os.path.join(where, name), "w") as f:
            f.write(str(time.monotonic_ns()))


def ipc_items() -> Iterator[bytes]:
    items = make_items(int(os.environ[_COUNT_ENV]))
    _stamp("first")
    yield from items


def cpu_items() -> Iterator[int]:
    _stamp("first")
    yield from range(int(os.environ[_COUNT_ENV]))


_sunk = 0
_expect: int | None = None


def count_to_last(item: Any) -> None:
    """The timed sink: stamps "last" when the expected count is reached."""
    global _sunk, _expect
    if _expect is None:
        _expect = int(os.environ.get(_EXPECT_ENV, "0"))  # once: not per item
    _sunk += 1
    if _sunk == _expect:
        _stamp("last")


def _pipe_seconds(run: Callable[[], None], expect: int) -> float:
    """Runs ``run`` with stamps on: seconds from the source's first item to the sink's
    last (process start left out)."""
    with tempfile.TemporaryDirectory(prefix="framebus-bench-flow-") as where:
        os.environ[_STAMPS_ENV] = where
        os.environ[_EXPECT_ENV] = str(expect)
        try:
            run()
            with open(os.path.join(where, "first")) as f:
                first = int(f.read())
            with open(os.path.join(where, "last")) as f:
                last = int(f.read())
        finally:
            del os.environ[_STAMPS_ENV], os.environ[_EXPECT_ENV]
    if last <= first:
        raise BenchError(f"the pipe's last item ({last} ns) came before its first ({first} ns)")
    return (last - first) / 1e9


def crunch(n: int) -> int:
    """CPU-heavy and GIL-bound: CPU_LOOP steps of a linear congruential generator."""
    x = n
    for _ in range(CPU_LOOP):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def _ipc_graph(rate: float | None = None) -> Any:
    from framebus import flow

    g = flow.Graph("benchipc")
    src = g.source("src", ipc_items, rate=rate)
    sink = g.sink("sink", count_to_last)
    src >> g.map("parse", parse) >> g.filter("keep", keep) >> sink
    return g


def _cpu_graph() -> Any:
    from framebus import flow

    g = flow.Graph("benchcpu")
    src = g.source("src", cpu_items)
    # window=CPU_WINDOW: a worker takes at most that many frames per receive, so the
    # two share the items instead of one taking a whole window's worth
    crunching = g.map("crunch", crunch, parallelism=2, window=CPU_WINDOW)
    src >> crunching >> g.sink("sink", count_to_last)
    return g


def _delivered(impl: str, report: Any, want: int) -> None:
    got = report.nodes["sink"].items_in
    if got != want or report.dead_letters:
        raise BenchError(
            f"{impl}: the sink got {got} items ({len(report.dead_letters)} dead letters); "
            f"expected exactly {want}"
        )


def run_ipc(count: int) -> float:
    from framebus import flow

    os.environ[_COUNT_ENV] = str(count)  # the source's worker inherits it
    plan = flow.compile(_ipc_graph())

    def run() -> None:
        report = plan.run(runtime="ipc", start_method=START_METHOD)
        _delivered("fb.ipc", report, expected_count(count))

    return _pipe_seconds(run, expected_count(count))


def run_cpu(runtime: str, count: int) -> float:
    from framebus import flow

    os.environ[_COUNT_ENV] = str(count)
    options: dict[str, Any] = {"max_batch": CPU_MAX_BATCH}
    if runtime == "ipc":
        options["start_method"] = START_METHOD
    plan = flow.compile(_cpu_graph())

    def run() -> None:
        global _sunk, _expect
        _sunk, _expect = 0, None  # the inproc sink counts in this process
        report = plan.run(runtime=runtime, **options)
        _delivered(f"cpu.{runtime}", report, count)

    return _pipe_seconds(run, count)


_MP_END = None


def mp_source(count: int, q1: Any) -> None:
    put = q1.put
    items = make_items(count)
    _stamp("first")
    for item in items:
        put(item)
    put(_MP_END)


def mp_middle(q1: Any, q2: Any) -> None:
    get, put = q1.get, q2.put
    while (item := get()) is not _MP_END:
        t = parse(item)
        if keep(t):
            put(t)
    put(_MP_END)


def mp_sink(q2: Any, result: Any) -> None:
    get = q2.get
    n = 0
    while get() is not _MP_END:
        n += 1
    _stamp("last")
    result.put(n)


def run_mp_queues(count: int) -> float:
    return _pipe_seconds(lambda: _run_mp_queues(count), expected_count(count))


def _run_mp_queues(count: int) -> None:
    ctx: Any = multiprocessing.get_context(START_METHOD)
    q1, q2, result = ctx.Queue(QUEUE_MAXSIZE), ctx.Queue(QUEUE_MAXSIZE), ctx.Queue()
    procs = [
        ctx.Process(target=mp_source, args=(count, q1), daemon=True),
        ctx.Process(target=mp_middle, args=(q1, q2), daemon=True),
        ctx.Process(target=mp_sink, args=(q2, result), daemon=True),
    ]
    try:
        for p in procs:
            p.start()
        got = result.get(timeout=3600)
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    if got != expected_count(count):
        raise BenchError(
            f"mp.Queue: the sink got {got} items; expected exactly {expected_count(count)}"
        )


# items/s of an implementation that runs across processes: (params) -> seconds, items
PROC_RUNNERS: dict[str, Callable[[Params], tuple[float, int]]] = {
    "fb.ipc": lambda p: (run_ipc(p.count), p.count),
    "mp.Queue": lambda p: (run_mp_queues(p.count), p.count),
    "cpu.inproc": lambda p: (run_cpu("inproc", p.cpu_count), p.cpu_count),
    "cpu.ipc": lambda p: (run_cpu("ipc", p.cpu_count), p.cpu_count),
}


RUNNERS: dict[str, Callable[[list[bytes]], tuple[float, list[Any], Any]]] = {
    "fb.inproc": lambda items: run_framebus("inproc", items),
    "fb.inproc.msgpack": lambda items: run_framebus("inproc", items, codec="msgpack"),
    "fb.inproc.thread": lambda items: run_framebus("inproc", items, handoff="thread"),
    "fb.sync": lambda items: run_framebus("sync", items),
    "bytewax": run_bytewax,
    "streamz": run_streamz,
    "queue.Queue": run_queues,
}


def _check(impl: str, out: list[Any], count: int) -> None:
    want = expected_count(count)
    if len(out) != want:
        raise BenchError(f"{impl}: the sink got {len(out)} items; expected exactly {want}")
    if want and (tuple(out[0])[0], tuple(out[-1])[0]) != (1, _last_kept(count)):
        raise BenchError(
            f"{impl}: the sink got {out[0]!r} .. {out[-1]!r}; expected numbers 1 .. "
            f"{_last_kept(count)}"
        )


def _last_kept(count: int) -> int:
    last = count - 1
    return last if last % 10 else last - 1


def run_paced(
    count: int, runtime: str = "inproc", repeat: int = 1, **options: Any
) -> dict[str, Any]:
    """The paced run ``repeat`` times: each percentile the median over the runs, and
    every run's p99."""
    runs = []
    for _ in range(repeat):
        gc.collect()
        runs.append(_run_paced_once(count, runtime, **options))
    lat = {k: statistics.median(r["latency_us"][k] for r in runs) for k in runs[0]["latency_us"]}
    return {
        **runs[0],
        "repeat": repeat,
        "achieved_items_per_s": statistics.median(r["achieved_items_per_s"] for r in runs),
        "latency_us": lat,
        "p99_runs_us": [r["latency_us"]["p99"] for r in runs],
    }


def _run_paced_once(count: int, runtime: str, **options: Any) -> dict[str, Any]:
    from framebus import flow

    if runtime == "ipc":
        os.environ[_COUNT_ENV] = str(count)
        plan = flow.compile(_ipc_graph(rate=PACED_RATE))
        reports: list[Any] = []

        def run() -> None:
            reports.append(plan.run(runtime="ipc", start_method=START_METHOD))
            _delivered("fb.ipc paced", reports[0], expected_count(count))

        wall = _pipe_seconds(run, expected_count(count))  # the workers' start left out
        report = reports[0]
    else:
        items = make_items(count)
        out: list[Any] = []
        start = time.perf_counter()
        report = flow.compile(_graph(items, out, rate=PACED_RATE)).run(runtime="inproc", **options)
        wall = time.perf_counter() - start
        _check("fb.inproc paced", out, count)
    lat = report.latency_ns()
    return {
        "runtime": runtime,
        **options,
        "rate": PACED_RATE,
        "count": count,
        "achieved_items_per_s": count / wall,
        "latency_us": {k: lat[k] / 1e3 for k in ("p50", "p95", "p99", "p99.9", "max")},
        "delivered": lat["count"],
    }


def run(params: Params, progress: XProgress | None = None) -> dict[str, Any]:
    started = time.time()
    items = make_items(params.count)
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    # round robin: each repeat runs every implementation once, so that the machine's
    # drift and the first run's warm-up (heap growth) fall on all of them alike
    runs: dict[str, list[float]] = {impl: [] for impl in params.impls}
    for rep in range(1, params.repeat + 1):
        for impl in params.impls:
            if impl in skipped:
                continue
            if progress is not None:
                progress.start(impl)
            try:
                gc.collect()
                if impl in PROC_RUNNERS:
                    seconds, n = PROC_RUNNERS[impl](params)
                else:
                    seconds, out, _report = RUNNERS[impl](items)
                    _check(impl, out, params.count)
                    del out
                    n = params.count
            except Skip as exc:
                skipped[impl] = str(exc)
                if progress is not None:
                    progress.note(impl, f"skipped: {exc}")
                continue
            runs[impl].append(n / seconds)
            if progress is not None:
                progress.repeat_done(impl, rep, params.repeat, n, runs[impl])
    for impl in params.impls:
        if impl not in skipped:
            results.append({"impl": impl, "runs": runs[impl], "items_per_s": summary(runs[impl])})
    del items
    by_impl = {r["impl"]: r["items_per_s"]["median"] for r in results}
    ratios = []
    if "fb.inproc" in by_impl:
        for peer in PEERS:
            if peer in by_impl:
                ratio = by_impl["fb.inproc"] / by_impl[peer]
                ratios.append(
                    {
                        "peer": peer,
                        "inproc_over_peer": ratio,
                        "target": TARGETS.get(peer),
                        "met": None if peer not in TARGETS else ratio >= TARGETS[peer],
                    }
                )
    proc_ratios = []
    for impl, peer, target in PROC_RATIOS:
        if impl in by_impl and peer in by_impl:
            ratio = by_impl[impl] / by_impl[peer]
            proc_ratios.append(
                {
                    "impl": impl,
                    "peer": peer,
                    "impl_over_peer": ratio,
                    "target": target,
                    "met": ratio >= target,
                }
            )
    paced = None
    if params.paced and "fb.inproc" in params.impls:
        if progress is not None:
            progress.start("fb.inproc paced")
        paced = run_paced(params.paced, repeat=params.repeat)
        paced["p99_target_us"] = PACED_P99_TARGET_US
        paced["met"] = paced["latency_us"]["p99"] <= PACED_P99_TARGET_US
    paced_thread = None
    if params.paced and "fb.inproc.thread" in params.impls:
        if progress is not None:
            progress.start("fb.inproc.thread paced")
        paced_thread = run_paced(params.paced, repeat=params.repeat, handoff="thread")
    paced_ipc = None
    paced_ratio = None
    if params.paced and "fb.ipc" in params.impls:
        if progress is not None:
            progress.start("fb.ipc paced")
        paced_ipc = run_paced(params.paced, "ipc", repeat=params.repeat)
        if paced is not None:
            inp, ipc = paced["latency_us"], paced_ipc["latency_us"]
            p95 = ipc["p95"] / inp["p95"] if inp["p95"] else float("inf")
            paced_ratio = {
                "ipc_p95_over_inproc_p95": p95,
                "ipc_p99_over_inproc_p99": ipc["p99"] / inp["p99"] if inp["p99"] else None,
                # beside the inproc runtime that also hands every frame to the next
                # stage's thread (handoff="thread"), as ipc hands it to a process
                "ipc_p95_over_inproc_thread_p95": (
                    ipc["p95"] / paced_thread["latency_us"]["p95"]
                    if paced_thread is not None and paced_thread["latency_us"]["p95"]
                    else None
                ),
                "target": PACED_P95_RATIO_TARGET,
                "met": p95 <= PACED_P95_RATIO_TARGET,
            }
    return {
        "schema": SCHEMA,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_seconds": time.time() - started,
        "machine": machine_info(),
        "versions": {d: dist_version(d) for d in ("bytewax", "streamz", "msgpack")},
        "params": asdict(params),
        "notes": {
            "pipeline": "64-byte bytes -> parse to a tuple -> drop 10 % -> sink (list.append)",
            "clock": "time.perf_counter around each whole run (setup included)",
            "statistics": "median, min and max over the repeats",
            "ratio": "inproc_over_peer = fb.inproc median items/s / peer median items/s",
            "paced": f"fb.inproc with the source at rate={PACED_RATE:.0f}/s; latency from "
            "source emission to the sink, the Report's HDR histogram; each percentile the "
            "median over the repeats",
            "paced_thread": 'the same with handoff="thread"',
            "processes": f"fb.ipc, mp.Queue, cpu.ipc: start method {START_METHOD}, process "
            "start included; cpu.*: the items are cpu_count ints, each through crunch "
            f"({CPU_LOOP} steps of pure Python) by a map with parallelism=2, "
            f"max_batch={CPU_MAX_BATCH}, window={CPU_WINDOW}",
            "proc_ratio": "impl_over_peer = impl median items/s / peer median items/s",
            "paced_ipc": "fb.ipc with the source at the same rate, in its worker process; "
            "ratio of ipc's p95 (and p99) to inproc's, and of its p95 to inproc's with "
            'handoff="thread"',
        },
        "results": results,
        "skipped": skipped,
        "ratios": ratios,
        "proc_ratios": proc_ratios,
        "paced": paced,
        "paced_thread": paced_thread,
        "paced_ipc": paced_ipc,
        "paced_ratio": paced_ratio,
    }


# -------------------------------------------------------------------------- table


def format_table(report: dict[str, Any]) -> str:
    p = report["params"]
    m = report["machine"]
    ratio = {r["peer"]: r for r in report["ratios"]}
    out = [
        f"framebus {m['framebus_version']} flow pipeline (source -> map -> filter -> sink): "
        f"{p['count']} items per run, median of {p['repeat']} run"
        f"{'s' if p['repeat'] != 1 else ''} (min..max)",
        f"{m['cpu_model']}, {m['usable_cpus']} CPUs, Python {m['python_version']}",
        "",
    ]
    head = f"{'impl':<17}  {'items/s':>9}  {'(min..max)':<19}  {'inproc/impl':>11}  target"
    out.append(head)
    out.append("-" * len(head))
    for r in report["results"]:
        rt = ratio.get(r["impl"])
        rts = f"{rt['inproc_over_peer']:.2f}x" if rt else "-"
        target = ""
        if rt and rt["target"] is not None:
            target = f">= {rt['target']:g}x: {'met' if rt['met'] else 'NOT met'}"
        ips = r["items_per_s"]
        out.append(
            f"{r['impl']:<17}  {fmt_rate(ips['median']):>9}  {fmt_range(ips):<19}  "
            f"{rts:>11}  {target}"
        )
    for impl, why in report["skipped"].items():
        out.append(f"{impl:<17}  skipped: {why}")
    if any(r["impl"].startswith("cpu.") for r in report["results"]):
        out.append(f"(cpu.*: {p['cpu_count']} items per run, a GIL-bound map with parallelism=2)")
    proc = report.get("proc_ratios") or []
    if proc:
        out.append("")
        head = f"{'across processes':<22}  {'ratio':>7}  target"
        out.append(head)
        out.append("-" * len(head))
        for r in proc:
            out.append(
                f"{r['impl'] + ' / ' + r['peer']:<22}  {r['impl_over_peer']:>6.2f}x  "
                f">= {r['target']:g}x: {'met' if r['met'] else 'NOT met'}"
            )
    paced_rows: list[tuple[str, dict[str, Any]]] = [
        (name, report[key])
        for name, key in (
            ("fb.inproc", "paced"),
            ("fb.inproc.thread", "paced_thread"),
            ("fb.ipc", "paced_ipc"),
        )
        if report.get(key)
    ]
    if paced_rows:
        out.append("")
        out.append(
            f"paced at {paced_rows[0][1]['rate']:.0f} items/s, latency us (median of "
            f"{paced_rows[0][1].get('repeat', 1)} runs of {paced_rows[0][1]['count']} items)"
        )
    for name, row in paced_rows:
        lat = row["latency_us"]
        line = (
            f"{name:<17} achieved {row['achieved_items_per_s']:.0f}/s: p50 {lat['p50']:.1f}  "
            f"p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  p99.9 {lat['p99.9']:.1f}  "
            f"max {lat['max']:.1f}"
        )
        if "met" in row:
            line += (
                f"; p99 target <= {row['p99_target_us']:.0f} us: "
                f"{'met' if row['met'] else 'NOT met'}"
            )
        out.append(line)
    pr = report.get("paced_ratio")
    if pr:
        p99 = pr["ipc_p99_over_inproc_p99"]
        out.append(
            f"paced ipc / inproc: p95 {pr['ipc_p95_over_inproc_p95']:.2f}x (target <= "
            f"{pr['target']:g}x: {'met' if pr['met'] else 'NOT met'}), p99 "
            + (f"{p99:.2f}x" if p99 is not None else "-")
        )
        thread = pr.get("ipc_p95_over_inproc_thread_p95")
        if thread is not None:
            out.append(f'paced ipc / inproc handoff="thread": p95 {thread:.2f}x')
    return "\n".join(out)


# --------------------------------------------------------------------------- main

_HELPS = {
    "--count": f"items per run (default: {DEFAULT_COUNT}; --quick: {QUICK_COUNT})",
    "--repeat": f"runs per implementation; the median is reported (default: {DEFAULT_REPEAT}; "
    f"--quick: {QUICK_REPEAT})",
    "--quick": f"a smoke run ({QUICK_COUNT} items, {QUICK_REPEAT} repeats, {QUICK_PACED} "
    f"paced items, {QUICK_CPU_COUNT} cpu items unless --count/--repeat/--cpu-count say "
    "otherwise)",
}
_FLAGS = ("--count", "--repeat", "--json", "--quick", "--no-progress", "--impls", "--cpu-count")


def params_from_args(args: Any, error: Callable[[str], Any]) -> Params:
    """Params from parsed options; ``error(msg)`` (argparse's parser.error) on bad values."""
    if getattr(args, "size", None):
        error("argument --size: not with --suite flow (its items are 64 bytes)")
    quick = bool(args.quick)
    count = args.count if args.count is not None else (QUICK_COUNT if quick else DEFAULT_COUNT)
    repeat = args.repeat if args.repeat is not None else (QUICK_REPEAT if quick else DEFAULT_REPEAT)
    paced = QUICK_PACED if quick else DEFAULT_PACED
    if args.count is not None:
        paced = min(paced, args.count)
    cpu_count = getattr(args, "cpu_count", None)
    if cpu_count is None:
        cpu_count = QUICK_CPU_COUNT if quick else DEFAULT_CPU_COUNT
    impls = IMPLS
    if getattr(args, "impls", None):
        names = [n.strip() for item in args.impls for n in item.split(",") if n.strip()]
        unknown = [n for n in names if n not in IMPLS]
        if unknown or not names:
            error(
                f"argument --impls: unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
                f"expected some of {', '.join(IMPLS)}"
            )
        impls = tuple(dict.fromkeys(names))
    return Params(
        count=count, repeat=repeat, paced=paced, impls=impls, quick=quick, cpu_count=cpu_count
    )


def build_parser(prog: str | None = None) -> Any:
    import argparse

    p = argparse.ArgumentParser(
        prog=prog,
        description="A source -> map -> filter -> sink pipeline of 64-byte items: "
        "framebus.flow sync and inproc beside bytewax (one worker), streamz and queue.Queue "
        "threads, ipc beside multiprocessing.Queue processes, a CPU-heavy map with "
        "parallelism 2 under ipc and inproc, in the same run, and the end-to-end latency "
        "of inproc and ipc paced at 20000/s.",
    )
    add_options(p, _FLAGS, _HELPS)
    return p


def execute(args: Any, error: Callable[[str], Any], command: list[str]) -> int:
    """Run with parsed options: progress on stderr, table on stdout, JSON if asked."""
    return execute_suite(args, error, command, "flow", params_from_args, run, format_table)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The entry point of bench/flow.py and ``python -m framebus.bench.flow``."""
    return main_with(build_parser, execute, argv, prog)


if __name__ == "__main__":
    # the module by its name: the ipc workers import the graph's callables by it
    from framebus.bench import flow as _flow

    sys.exit(_flow.main(sys.argv[1:], prog="python -m framebus.bench.flow"))
