#!/usr/bin/env python3
"""framebus.flow's ipc runtime (each stage in a process of its own) against a
hand-written pipeline of processes joined by ``multiprocessing.Queue``, on the flow
benchmark's pipeline (framebus.bench.flow: 64-byte items, ``parse``, ``keep`` 90 %).

    python bench/flow_ipc.py                    # 200000 items, medians of 3
    python bench/flow_ipc.py --count 50000 --repeat 1 --paced 5000

Throughput (items/s = items / wall time of the whole run, process start included):
  fb.ipc          source -> map(parse) -> filter(keep) -> sink, runtime="ipc" (parse and
                  keep fuse: three processes: source, parse+keep, sink)
  fb.ipc.nofuse   the same compiled with fuse=False (four processes)
  mp.Queue        three processes (source; parse+keep; sink) joined by two
                  multiprocessing.Queue(maxsize=1024), one item per put
  mp.Queue.x100   the same with lists of 100 items per put
Every implementation makes its items in the source process and counts them in the
sink process; a run fails unless the sink got exactly the 90 % expected. Start method
spawn for all.

Latency: the same graph with the source at rate=20000 items/s, ``--paced`` items,
the Report's end-to-end p50/p95/p99 (source emission to sink), runtime="ipc" beside
runtime="inproc" (the inproc run with the items in the parent).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from typing import Any

if __name__ == "__main__" and __package__ in (None, ""):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)

from framebus.bench.flow import expected_count, keep, make_items, parse  # noqa: E402

_COUNT_ENV = "FB_FLOW_IPC_COUNT"
_END = None
QUEUE_MAXSIZE = 1024


# -- callables of the ipc graph (imported by "module:qualname" in the workers) --------


def ipc_items() -> list[bytes]:
    return make_items(int(os.environ[_COUNT_ENV]))


def ipc_sink(t: Any) -> None:
    pass


def _graph(rate: float | None = None) -> Any:
    from framebus import flow

    g = flow.Graph("benchipc")
    src = g.source("src", ipc_items, rate=rate)
    src >> g.map("parse", parse) >> g.filter("keep", keep) >> g.sink("sink", ipc_sink)
    return g


def run_ipc(count: int, fuse: bool = True) -> float:
    from framebus import flow

    os.environ[_COUNT_ENV] = str(count)
    start = time.perf_counter()
    report = flow.compile(_graph(), fuse=fuse).run(runtime="ipc")
    wall = time.perf_counter() - start
    got = report.nodes["sink"].items_out
    if got != expected_count(count) or report.dead_letters:
        raise SystemExit(f"fb.ipc: the sink got {got} items; expected {expected_count(count)}")
    return wall


# -- the multiprocessing.Queue pipeline --------------------------------------------


def q_source(count: int, q1: Any, per_put: int) -> None:
    items = make_items(count)
    put = q1.put
    if per_put == 1:
        for item in items:
            put(item)
    else:
        for i in range(0, len(items), per_put):
            put(items[i : i + per_put])
    put(_END)


def q_middle(q1: Any, q2: Any, per_put: int) -> None:
    get, put = q1.get, q2.put
    if per_put == 1:
        while (item := get()) is not _END:
            t = parse(item)
            if keep(t):
                put(t)
    else:
        while (batch := get()) is not _END:
            put([t for t in map(parse, batch) if keep(t)])
    put(_END)


def q_sink(q2: Any, result: Any, per_put: int) -> None:
    get = q2.get
    n = 0
    if per_put == 1:
        while get() is not _END:
            n += 1
    else:
        while (batch := get()) is not _END:
            n += len(batch)
    result.put(n)


def run_queues(count: int, per_put: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    start = time.perf_counter()
    q1, q2, result = ctx.Queue(QUEUE_MAXSIZE), ctx.Queue(QUEUE_MAXSIZE), ctx.Queue()
    procs = [
        ctx.Process(target=q_source, args=(count, q1, per_put)),
        ctx.Process(target=q_middle, args=(q1, q2, per_put)),
        ctx.Process(target=q_sink, args=(q2, result, per_put)),
    ]
    for p in procs:
        p.start()
    got = result.get(timeout=600)
    for p in procs:
        p.join(60)
    wall = time.perf_counter() - start
    if got != expected_count(count):
        raise SystemExit(f"mp.Queue: the sink got {got} items; expected {expected_count(count)}")
    return wall


# -- paced latency ------------------------------------------------------------------


def paced(runtime: str, count: int, rate: float) -> dict[str, float]:
    from framebus import flow

    os.environ[_COUNT_ENV] = str(count)
    report = flow.compile(_graph(rate=rate)).run(runtime=runtime)
    lat = report.latency_ns()
    if lat["count"] != expected_count(count):
        raise SystemExit(f"{runtime} paced: {lat['count']} delivered")
    return {k: lat[k] / 1e3 for k in ("p50", "p95", "p99", "max")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--paced", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=20_000.0)
    ap.add_argument("--json", help="write the numbers to this file too")
    args = ap.parse_args()
    runners = {
        "fb.ipc": lambda: run_ipc(args.count),
        "fb.ipc.nofuse": lambda: run_ipc(args.count, fuse=False),
        "mp.Queue": lambda: run_queues(args.count, 1),
        "mp.Queue.x100": lambda: run_queues(args.count, 100),
    }
    walls: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(args.repeat):  # interleaved, so drifts of the machine hit every one
        for impl, fn in runners.items():
            walls[impl].append(fn())
    rates = {k: [args.count / w for w in v] for k, v in walls.items()}
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"{args.count} items, medians of {args.repeat} (items/s, whole run)")
    for impl in runners:
        ratio = med[impl] / med["mp.Queue"]
        spread = ", ".join(f"{r:,.0f}" for r in rates[impl])
        print(f"  {impl:<14} {med[impl]:>12,.0f}  x{ratio:5.2f} vs mp.Queue  ({spread})")
    print(f"  fb.ipc / mp.Queue.x100: x{med['fb.ipc'] / med['mp.Queue.x100']:.2f}")
    lat = {rt: paced(rt, args.paced, args.rate) for rt in ("inproc", "ipc")}
    print(f"paced at {args.rate:.0f} items/s, {args.paced} items: end-to-end latency (us)")
    for rt, v in lat.items():
        print(f"  {rt:<7} p50 {v['p50']:9.1f}  p95 {v['p95']:9.1f}  p99 {v['p99']:9.1f}")
    print(f"  p95 ipc / inproc: x{lat['ipc']['p95'] / lat['inproc']['p95']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"count": args.count, "items_per_s": rates, "paced_us": lat}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
