"""The floor under the flow layer's paced latency: how long CPython takes to hand an
item from one thread to another that sleeps waiting for it, with nothing else done.

    python bench/thread_handoff.py [--rate 20000] [--count 100000] [--hops 1,2] [--json PATH]

A source thread stamps ``time.perf_counter_ns()`` into each item at ``--rate`` items/s
(the same catch-up pacing as the flow source) and puts it on a ``queue.SimpleQueue``;
with ``--hops 2`` a middle thread gets it and puts it on a second queue, as a map
stage between source and sink does. The last thread records now - stamp in an HDR
histogram. Each waiting thread blocks in ``SimpleQueue.get`` (a lock in C, the GIL
released), which is how an idle framebus.flow inproc stage waits for a poke.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from typing import Any

from hdrh.histogram import HdrHistogram


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
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    us = {f"p{q:g}": hist.get_value_at_percentile(q) / 1000 for q in (50, 95, 99, 99.9)}
    us["max"] = hist.get_max_value() / 1000
    return {
        "hops": hops,
        "rate": rate,
        "count": count,
        "achieved_items_per_s": count / elapsed,
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
        r = run(args.rate, args.count, hops)
        lat = r["latency_us"]
        print(
            f"{hops} hop(s) at {args.rate:.0f}/s ({r['achieved_items_per_s']:.0f}/s achieved): "
            f"latency us p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  "
            f"p99.9 {lat['p99.9']:.1f}  max {lat['max']:.1f}"
        )
        results.append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": sys.version, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
