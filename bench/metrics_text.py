#!/usr/bin/env python3
"""What one scrape of a bus costs, piece by piece (CPU time of this process).

A default-preset bus with one subscription and 1000 publish_batch calls behind it
(so the batch histograms have samples), registered in its own registry:

- prometheus_client's ``generate_latest`` of the registry (collect + encode);
- ``FrameBusCollector.text()``, what ``framebus.metrics.serve`` writes instead;
- a whole scrape served by ``framebus.metrics.serve``, fetched back to back by a
  client process (this process's CPU only, so the client's is not counted).

    python bench/metrics_text.py [--rounds N] [--scrapes N]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

if __name__ == "__main__" and __package__ in (None, ""):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)

from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client.exposition import generate_latest  # noqa: E402

import framebus as fb  # noqa: E402
import framebus.metrics  # noqa: E402

_CLIENT = """
import sys, urllib.request
for _ in range(int(sys.argv[2])):
    with urllib.request.urlopen(sys.argv[1], timeout=5) as resp:
        resp.read()
"""


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def per_call_us(fn: object, rounds: int) -> float:
    for _ in range(20):
        fn()  # type: ignore[operator]
    t0 = time.process_time()
    for _ in range(rounds):
        fn()  # type: ignore[operator]
    return (time.process_time() - t0) / rounds * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=500, help="calls timed per piece")
    p.add_argument("--scrapes", type=int, default=400, help="scrapes served and timed")
    args = p.parse_args(argv)
    with fb.FrameBus(preset="default") as bus:
        sub = bus.subscribe()
        for _ in range(1000):
            bus.publish_batch([b"x" * 64] * 100)
            sub.recv_batch(100)
        registry = CollectorRegistry()
        collector = framebus.metrics.register(bus, registry)
        lines = len(generate_latest(registry).splitlines())
        print(f"exposition: {lines} lines")
        encoded = per_call_us(lambda: generate_latest(registry), args.rounds)
        print(f"generate_latest(registry)    {encoded:7.0f} us")
        print(f"FrameBusCollector.text()     {per_call_us(collector.text, args.rounds):7.0f} us")
        with framebus.metrics.serve(0, registry=registry) as server:
            subprocess.run([sys.executable, "-c", _CLIENT, server.url, "20"], check=True)
            before = _cpu()
            subprocess.run(
                [sys.executable, "-c", _CLIENT, server.url, str(args.scrapes)], check=True
            )
            served = (_cpu() - before) / args.scrapes * 1e6
        print(f"a scrape served by serve()   {served:7.0f} us (this process's CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
