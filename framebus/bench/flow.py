"""The flow benchmark: one pipeline, source -> map -> filter -> sink, run by framebus.flow
(``sync`` and ``inproc``) beside bytewax (one worker), streamz and hand-written
``queue.Queue`` threads, in the same process and run; plus the end-to-end latency of
``inproc`` with the source paced.

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
``codec="msgpack"`` (items encoded in the frames, as across processes). ``bytewax``:
``bytewax.testing.run_main`` (one worker) over ``TestingSource(items,
batch_size=1000)``, ``op.map``, ``op.filter``, ``TestingSink``. ``streamz``:
``Stream().map(parse).filter(keep).sink(append)``, each item ``emit``-ted.
``queue.Queue``: four threads (source, map, filter, sink) with a
``queue.Queue(maxsize=1024)`` between each two, one item per ``put``. A peer that is not
installed is skipped with a note.

Times: ``time.perf_counter`` around the whole run (graph compile, threads and bus
setup included for framebus; the Dataflow build for bytewax). Paced latency: the same
graph with the source at ``rate=20000`` items/s, ``paced`` items, the Report's
end-to-end percentiles (source emission to sink, see framebus.flow.inproc).
"""

from __future__ import annotations

import gc
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ._common import (
    BenchError,
    XProgress,
    add_options,
    check_suite_args,
    dist_version,
    finish_report,
    fmt_range,
    fmt_rate,
    machine_info,
    main_with,
    run_guarded,
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
IMPLS = ("fb.inproc", "fb.inproc.msgpack", "fb.sync", "bytewax", "streamz", "queue.Queue")
PEERS = ("fb.inproc.msgpack", "fb.sync", "bytewax", "streamz", "queue.Queue")
TARGETS = {"bytewax": 1.0, "queue.Queue": 8.0}  # inproc / peer, at least
PACED_P99_TARGET_US = 200.0
QUEUE_MAXSIZE = 1024


@dataclass
class Params:
    count: int = DEFAULT_COUNT
    repeat: int = DEFAULT_REPEAT
    paced: int = DEFAULT_PACED
    impls: tuple[str, ...] = IMPLS
    quick: bool = False


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


RUNNERS: dict[str, Callable[[list[bytes]], tuple[float, list[Any], Any]]] = {
    "fb.inproc": lambda items: run_framebus("inproc", items),
    "fb.inproc.msgpack": lambda items: run_framebus("inproc", items, codec="msgpack"),
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


def run_paced(count: int) -> dict[str, Any]:
    from framebus import flow

    items = make_items(count)
    out: list[Any] = []
    start = time.perf_counter()
    report = flow.compile(_graph(items, out, rate=PACED_RATE)).run(runtime="inproc")
    wall = time.perf_counter() - start
    _check("fb.inproc paced", out, count)
    lat = report.latency_ns()
    return {
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
    for impl in params.impls:
        runs: list[float] = []
        if progress is not None:
            progress.start(impl)
        try:
            for rep in range(1, params.repeat + 1):
                gc.collect()
                seconds, out, _report = RUNNERS[impl](items)
                _check(impl, out, params.count)
                del out
                runs.append(params.count / seconds)
                if progress is not None:
                    progress.repeat_done(impl, rep, params.repeat, params.count, runs)
        except Skip as exc:
            skipped[impl] = str(exc)
            if progress is not None:
                progress.note(impl, f"skipped: {exc}")
            continue
        results.append({"impl": impl, "runs": runs, "items_per_s": summary(runs)})
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
    paced = None
    if params.paced and "fb.inproc" in params.impls:
        if progress is not None:
            progress.start("fb.inproc paced")
        gc.collect()
        paced = run_paced(params.paced)
        paced["p99_target_us"] = PACED_P99_TARGET_US
        paced["met"] = paced["latency_us"]["p99"] <= PACED_P99_TARGET_US
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
            "source emission to the sink, the Report's HDR histogram",
        },
        "results": results,
        "skipped": skipped,
        "ratios": ratios,
        "paced": paced,
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
    paced = report.get("paced")
    if paced:
        lat = paced["latency_us"]
        out.append("")
        out.append(
            f"fb.inproc paced at {paced['rate']:.0f} items/s ({paced['count']} items, achieved "
            f"{paced['achieved_items_per_s']:.0f}/s): latency us p50 {lat['p50']:.1f}  "
            f"p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  p99.9 {lat['p99.9']:.1f}  "
            f"max {lat['max']:.1f}; p99 target <= {paced['p99_target_us']:.0f} us: "
            f"{'met' if paced['met'] else 'NOT met'}"
        )
    return "\n".join(out)


# --------------------------------------------------------------------------- main

_HELPS = {
    "--count": f"items per run (default: {DEFAULT_COUNT}; --quick: {QUICK_COUNT})",
    "--repeat": f"runs per implementation; the median is reported (default: {DEFAULT_REPEAT}; "
    f"--quick: {QUICK_REPEAT})",
    "--quick": f"a smoke run ({QUICK_COUNT} items, {QUICK_REPEAT} repeats, {QUICK_PACED} "
    "paced items unless --count/--repeat say otherwise)",
}
_FLAGS = ("--count", "--repeat", "--json", "--quick", "--no-progress")


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
    return Params(count=count, repeat=repeat, paced=paced, quick=quick)


def build_parser(prog: str | None = None) -> Any:
    import argparse

    p = argparse.ArgumentParser(
        prog=prog,
        description="A source -> map -> filter -> sink pipeline of 64-byte items: "
        "framebus.flow sync and inproc beside bytewax (one worker), streamz and queue.Queue "
        "threads in the same run, and the end-to-end latency of inproc paced at 20000/s.",
    )
    add_options(p, _FLAGS, _HELPS)
    return p


def execute(args: Any, error: Callable[[str], Any], command: list[str]) -> int:
    """Run with parsed options: progress on stderr, table on stdout, JSON if asked."""
    check_suite_args(args, error, "flow")
    params = params_from_args(args, error)
    progress = None if args.no_progress else XProgress(sys.stderr)
    report, status = run_guarded(lambda: run(params, progress))
    if report is None:
        return status
    finish_report(report, args, command, format_table(report))
    return 0


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The entry point of bench/flow.py and ``python -m framebus.bench.flow``."""
    return main_with(build_parser, execute, argv, prog)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python -m framebus.bench.flow"))
