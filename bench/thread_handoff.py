"""The floor under the flow layer's paced latency: how long CPython takes to hand an
item from one thread to another that sleeps waiting for it, with nothing else done,
beside framebus.flow's inproc runtime doing the same hops.

    python bench/thread_handoff.py [--rate 20000] [--count 100000] [--hops 1,2] [--json PATH]

A source thread stamps ``time.perf_counter_ns()`` into each item at ``--rate`` items/s
(the same catch-up pacing as the flow source) and puts it on a ``queue.SimpleQueue``;
with ``--hops 2`` a middle thread gets it and puts it on a second queue, as a map
stage between source and sink does. The last thread records now - stamp in an HDR
histogram. Each waiting thread blocks in ``SimpleQueue.get`` (a lock in C, the GIL
released), which is how an idle framebus.flow inproc stage waits for a poke.

``flow``: a framebus.flow graph of the same shape run with ``runtime="inproc"``: a
source at ``--rate`` yielding ``time.monotonic_ns()``, ``hops - 1`` identity maps
(``pure=False``, so each is a stage and a thread of its own), a sink; the Report's
end-to-end percentiles. ``flow``: the default ``handoff="auto"`` (an idle, cheap
stage runs in its sender's thread: no hop); ``flow.thread``: ``handoff="thread"``
(every frame to the stage's thread: the hops above, with the runtime's work). Every
row also gives the process's CPU time per item (``getrusage``: user + system, every
thread), which says how busy the GIL is.
"""

from __future__ import annotations

import argparse
import json
import queue
import resource
import sys
import threading
import time
from typing import Any

from hdrh.histogram import HdrHistogram


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_flow(rate: float, count: int, hops: int, handoff: str = "auto") -> dict[str, Any]:
    from framebus import flow

    def gen() -> Any:
        for _ in range(count):
            yield time.monotonic_ns()

    g = flow.Graph(f"handoff{hops}")
    node = g.source("gen", gen, rate=rate)
    for i in range(hops - 1):
        node = node >> g.map(f"m{i}", _identity, pure=False)
    node >> g.sink("sink", _discard)
    plan = flow.compile(g)
    cpu = _cpu_s()
    start = time.perf_counter()
    report = plan.run(runtime="inproc", handoff=handoff)
    elapsed = time.perf_counter() - start
    cpu = _cpu_s() - cpu
    lat = report.latency_ns()
    us = {k: lat[k] / 1000 for k in ("p50", "p95", "p99", "p99.9", "max")}
    return {
        "impl": "flow" if handoff == "auto" else f"flow.{handoff}",
        "hops": hops,
        "rate": rate,
        "count": count,
        "achieved_items_per_s": count / elapsed,
        "cpu_us_per_item": cpu / count * 1e6,
        "latency_us": us,
    }


def _identity(x: Any) -> Any:
    return x


def _discard(x: Any) -> None:
    pass


def run(rate: float, count: int, hops: int) -> dict[str, Any]:
    queues: list[queue.SimpleQueue[int | None]] = [queue.SimpleQueue() for _ in range(hops)]
    hist = HdrHistogram(1, 10_000_000_000, 3)

    def source() -> None:
        interval = 1e9 / rate
        due = time.perf_counter_ns()
        put = queues[0].put
        for _ in range(count):
            now = time.perf_counter_ns()
            if now < due:
                time.sleep((due - now) / 1e9)
            due = max(due + interval, time.perf_counter_ns() - 1e6)
            put(time.perf_counter_ns())
        put(None)

    def middle(src: queue.SimpleQueue[int | None], dst: queue.SimpleQueue[int | None]) -> None:
        while True:
            item = src.get()
            dst.put(item)
            if item is None:
                return

    def sink() -> None:
        get = queues[-1].get
        record = hist.record_value
        while True:
            item = get()
            if item is None:
                return
            record(max(1, time.perf_counter_ns() - item))

    threads = [threading.Thread(target=source), threading.Thread(target=sink)]
    threads += [
        threading.Thread(target=middle, args=(queues[i], queues[i + 1])) for i in range(hops - 1)
    ]
    cpu = _cpu_s()
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    cpu = _cpu_s() - cpu
    us = {f"p{q:g}": hist.get_value_at_percentile(q) / 1000 for q in (50, 95, 99, 99.9)}
    us["max"] = hist.get_max_value() / 1000
    return {
        "impl": "SimpleQueue",
        "hops": hops,
        "rate": rate,
        "count": count,
        "achieved_items_per_s": count / elapsed,
        "cpu_us_per_item": cpu / count * 1e6,
        "latency_us": us,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=20000.0)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--hops", default="1,2", help="comma-separated hop counts (default 1,2)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    results = []
    for hops in (int(h) for h in args.hops.split(",")):
        for r in (
            run(args.rate, args.count, hops),
            run_flow(args.rate, args.count, hops, "thread"),
            run_flow(args.rate, args.count, hops),
        ):
            lat = r["latency_us"]
            print(
                f"{r['impl']:11} {hops} hop(s) at {args.rate:.0f}/s "
                f"({r['achieved_items_per_s']:.0f}/s achieved, CPU "
                f"{r['cpu_us_per_item']:.1f} us/item): latency us p50 {lat['p50']:.1f}  "
                f"p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  p99.9 {lat['p99.9']:.1f}  "
                f"max {lat['max']:.1f}"
            )
            results.append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": sys.version, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
