"""Where a paced framebus.flow inproc run spends its time: the flow benchmark's pipeline
(framebus.bench.flow: source -> map -> filter -> sink, map and filter fused) with the
source at 20 000 items/s, every stage thread under cProfile, the stats merged.

    python bench/flow_profile.py [--count 20000] [--rate 20000] [--top 25] [--handoff auto]

Prints the Python calls per item (all stage threads) and the functions by own time;
time in ``SimpleQueue.get`` is idle stages waiting for a poke, ``time.sleep`` the
source's pacing. cProfile slows every Python call, so read the shares, not the
absolute times.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import threading
from typing import Any

from framebus import flow
from framebus.bench import flow as flowbench


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=20_000.0)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--handoff", choices=("auto", "thread"), default="auto")
    args = ap.parse_args()
    items = flowbench.make_items(args.count)
    out: list[Any] = []
    plan = flow.compile(flowbench._graph(items, out, rate=args.rate))
    profiles: list[cProfile.Profile] = []

    def start_profiling(frame: Any, event: str, arg: Any) -> None:
        # threading calls this in each new thread; enabling replaces it there
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.enable()

    threading.setprofile(start_profiling)
    try:
        plan.run(runtime="inproc", handoff=args.handoff)
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    stats = pstats.Stats(profiles[0])
    for profile in profiles[1:]:
        stats.add(profile)
    calls = sum(v[1] for v in stats.stats.values())  # type: ignore[attr-defined]
    print(
        f"{args.count} items at {args.rate:.0f}/s: {calls / args.count:.1f} Python calls per item"
    )
    text = io.StringIO()
    stats.stream = text  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(args.top)
    print(text.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
