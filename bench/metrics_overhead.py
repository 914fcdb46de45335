"""Bus throughput with framebus.metrics registered and scraped over HTTP every 100 ms,
against the same bus without metrics, in alternating rounds of one run.

    python bench/metrics_overhead.py [--frames N] [--rounds R] [--json PATH]

One thread publishes 64 B frames in batches of 100 and reads them back (so the
figure is the bus's own per-frame cost, not a handoff between threads); the
scraper, when on, is another process fetching /metrics over HTTP every 100 ms from
the bus process's metrics server thread.
Reports the median frames/s of each mode and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from prometheus_client import CollectorRegistry

import framebus as fb
import framebus.metrics

_SCRAPER = """
import sys, time, urllib.request
url = sys.argv[1]
while True:
    with urllib.request.urlopen(url, timeout=5) as resp:
        resp.read()
    print("scraped", flush=True)
    time.sleep(0.1)
"""


def one_round(frames: int, scrape: bool) -> float:
    payloads = [b"x" * 64] * 100
    with fb.FrameBus(preset="default") as bus:
        sub = bus.subscribe()
        server = None
        scraper = None
        if scrape:
            registry = CollectorRegistry()
            framebus.metrics.register(bus, registry)
            server = framebus.metrics.serve(0, registry=registry)
            # the scraping client is another process, as Prometheus is
            scraper = subprocess.Popen(
                [sys.executable, "-c", _SCRAPER, server.url],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(0.3)  # its interpreter has started
        t0 = time.perf_counter()
        done = 0
        while done < frames:
            bus.publish_batch(payloads)
            got = sub.recv_batch(100)
            done += len(got)
        elapsed = time.perf_counter() - t0
        if scraper is not None:
            scraper.terminate()
            out, _ = scraper.communicate(timeout=30)
            if out.count("\n") == 0:
                raise SystemExit("a round ended before the first scrape: raise --frames")
        if server is not None:
            server.close()
    return frames / elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=5_000_000, help="frames per round")
    p.add_argument("--rounds", type=int, default=7, help="rounds per mode (alternating)")
    p.add_argument("--json", metavar="PATH", help="write the raw numbers as JSON")
    args = p.parse_args(argv)
    rates: dict[str, list[float]] = {"off": [], "scraped": []}
    for r in range(args.rounds):
        order = ("off", "scraped") if r % 2 == 0 else ("scraped", "off")
        for mode in order:
            rates[mode].append(one_round(args.frames, mode == "scraped"))
            print(
                f"round {r + 1} {mode:8} {rates[mode][-1] / 1e6:6.2f} M frames/s", file=sys.stderr
            )
    off, on = statistics.median(rates["off"]), statistics.median(rates["scraped"])
    print(
        f"no metrics            {off / 1e6:6.2f} M frames/s  "
        f"(min {min(rates['off']) / 1e6:.2f}, max {max(rates['off']) / 1e6:.2f})"
    )
    print(
        f"scraped every 100 ms  {on / 1e6:6.2f} M frames/s  "
        f"(min {min(rates['scraped']) / 1e6:.2f}, max {max(rates['scraped']) / 1e6:.2f})"
    )
    print(f"ratio scraped / off   {on / off:.3f}  ({(1 - on / off) * 100:+.1f} % slower)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "frames": args.frames,
                    "rounds": args.rounds,
                    "rates": rates,
                    "median_off": off,
                    "median_scraped": on,
                    "ratio": on / off,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
