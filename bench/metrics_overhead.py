"""Bus throughput with framebus.metrics registered and scraped over HTTP every 100 ms,
against the same bus not scraped, in short alternating windows of one run.

    python bench/metrics_overhead.py [--pairs N] [--window S] [--json PATH]

One thread publishes 64 B frames in batches of 100 and reads them back (so the
figure is the bus's own per-frame cost, not a handoff between threads) on one bus
with metrics registered and served. A scraper process (as Prometheus would be)
fetches /metrics every 100 ms while scraping is on. The run alternates windows of
``--window`` seconds with scraping off and on (the order flipping every pair), so
slow drifts of a shared machine fall on both sides; each pair gives a ratio
on / off, and the median ratio is reported with a bootstrap 95 % interval.

A second, independent figure bounds the cost from the other side: the CPU time the
bus process spends per scrape (collect + render + HTTP), measured on an idle bus
over many scrapes. Every scrape holds the GIL for at most that long, so scraping
every 100 ms can take at most ten times that per second from a publisher.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

if __name__ == "__main__" and __package__ in (None, ""):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)

from prometheus_client import CollectorRegistry  # noqa: E402

import framebus as fb  # noqa: E402
import framebus.metrics  # noqa: E402

TARGET = 0.02  # at most 2 % slower
INTERVAL = 0.1  # seconds between scrapes while on


def _scraper(url: str, on: Any, stop: Any, scrapes: Any) -> None:
    # one scrape per INTERVAL on a fixed schedule (not INTERVAL after each scrape)
    next_at = time.monotonic()
    while not stop.is_set():
        if on.value:
            with urllib.request.urlopen(url, timeout=5) as resp:
                resp.read()
            with scrapes.get_lock():
                scrapes.value += 1
            next_at = max(next_at + INTERVAL, time.monotonic())
            time.sleep(max(0.0, next_at - time.monotonic()))
        else:
            time.sleep(0.005)
            next_at = time.monotonic()


_CLIENT = """
import sys, urllib.request
for _ in range(int(sys.argv[2])):
    with urllib.request.urlopen(sys.argv[1], timeout=5) as resp:
        resp.read()
"""


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_per_scrape(url: str, count: int) -> float:
    """CPU seconds the bus process spends serving one scrape (a client process
    scraping back to back; this process's own CPU time only)."""
    subprocess.run([sys.executable, "-c", _CLIENT, url, "20"], check=True)  # warm up
    before = _cpu()
    subprocess.run([sys.executable, "-c", _CLIENT, url, str(count)], check=True)
    return (_cpu() - before) / count


def bootstrap(ratios: list[float], rounds: int = 2000, seed: int = 1) -> tuple[float, float]:
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choice(ratios) for _ in ratios) for _ in range(rounds))
    return meds[int(0.025 * rounds)], meds[int(0.975 * rounds) - 1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=40, help="off/on window pairs")
    p.add_argument("--window", type=float, default=1.0, help="seconds per window")
    p.add_argument("--scrapes", type=int, default=500, help="scrapes for the CPU figure")
    p.add_argument("--json", metavar="PATH", help="write the raw numbers as JSON")
    args = p.parse_args(argv)
    if args.pairs < 2 or args.window < 0.3:
        p.error("need --pairs >= 2 and --window >= 0.3 (at least 3 scrapes per window)")

    ctx = mp.get_context("spawn")
    payloads = [b"x" * 64] * 100
    with fb.FrameBus(preset="default") as bus:
        sub = bus.subscribe()
        registry = CollectorRegistry()
        framebus.metrics.register(bus, registry)
        server = framebus.metrics.serve(0, registry=registry)
        try:
            on, stop, scrapes = ctx.Value("b", 0), ctx.Event(), ctx.Value("q", 0)
            scraper = ctx.Process(target=_scraper, args=(server.url, on, stop, scrapes))
            scraper.start()
            try:
                off_rates: list[float] = []
                on_rates: list[float] = []
                scrape_counts: list[int] = []
                for pair in range(args.pairs):
                    order = (0, 1) if pair % 2 == 0 else (1, 0)
                    for mode in order:
                        on.value = mode
                        time.sleep(0.05)  # the scraper has seen the switch
                        before = scrapes.value
                        done = 0
                        t0 = time.perf_counter()
                        end = t0 + args.window
                        while True:
                            bus.publish_batch(payloads)
                            done += len(sub.recv_batch(100))
                            if (done & 0x3FFF) < 100 and time.perf_counter() >= end:
                                break
                        rate = done / (time.perf_counter() - t0)
                        (on_rates if mode else off_rates).append(rate)
                        if mode:
                            scrape_counts.append(scrapes.value - before)
                    print(
                        f"pair {pair + 1:3}  off {off_rates[-1] / 1e6:6.2f}  "
                        f"on {on_rates[-1] / 1e6:6.2f} M frames/s  "
                        f"ratio {on_rates[-1] / off_rates[-1]:.3f}",
                        file=sys.stderr,
                    )
                on.value = 0
            finally:
                stop.set()
                scraper.join(10)
                if scraper.is_alive():
                    scraper.kill()
            per_scrape = cpu_per_scrape(server.url, args.scrapes)
        finally:
            server.close()

    ratios = [a / b for a, b in zip(on_rates, off_rates, strict=True)]
    med = statistics.median(ratios)
    lo, hi = bootstrap(ratios)
    bound = per_scrape / INTERVAL  # fraction of each second a scrape can take
    print(f"pairs {args.pairs} x {args.window:g} s, 64 B frames, batches of 100")
    print(
        f"scraping off  {statistics.median(off_rates) / 1e6:6.2f} M frames/s  "
        f"(min {min(off_rates) / 1e6:.2f}, max {max(off_rates) / 1e6:.2f})"
    )
    print(
        f"scraping on   {statistics.median(on_rates) / 1e6:6.2f} M frames/s  "
        f"(min {min(on_rates) / 1e6:.2f}, max {max(on_rates) / 1e6:.2f}); "
        f"scrapes per window: median {statistics.median(scrape_counts):g}"
    )
    print(
        f"paired ratio on/off: median {med:.4f}, bootstrap 95 % interval "
        f"{lo:.4f} .. {hi:.4f} ({(1 - med) * 100:+.2f} % slower)"
    )
    print(
        f"bus-process CPU per scrape {per_scrape * 1e6:.0f} us: "
        f"at most {bound * 100:.2f} % of a second at one scrape per {INTERVAL:g} s"
    )
    met = bound < TARGET and lo > 1 - TARGET
    print(f"target: under {TARGET * 100:g} % slower: {'met' if met else 'not shown'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": {
                        "cpu": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                    },
                    "pairs": args.pairs,
                    "window_s": args.window,
                    "off_rates": off_rates,
                    "on_rates": on_rates,
                    "scrapes_per_window": scrape_counts,
                    "paired_ratios": ratios,
                    "median_ratio": med,
                    "ratio_ci95": [lo, hi],
                    "cpu_per_scrape_s": per_scrape,
                    "bound_fraction": bound,
                    "target_met": met,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
