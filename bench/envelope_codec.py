#!/usr/bin/env python3
"""Envelope encode+decode per second against msgpack packing and unpacking an equal dict.

The envelope has typical fields (a 64 B payload, a two-entry header dict); the msgpack
peer packs a dict with the same ten fields and unpacks it. Both run in the same process,
interleaved, and the medians (with min and max) over --repeat runs are reported with
their ratio (the flow-layer issue's target is >= 3x).

    python bench/envelope_codec.py                 # about ten seconds
    python bench/envelope_codec.py --quick
    python bench/envelope_codec.py --json envelope.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

if __name__ == "__main__" and __package__ in (None, ""):
    # Run from a checkout without installing: the repository root holds framebus/.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)

import msgpack  # noqa: E402

from framebus.envelope import Envelope  # noqa: E402

TARGET = 3.0
FIELDS = dict(
    topic="cam.0.frames",
    payload=b"\xab" * 64,
    src="camera-0",
    dst="detector",
    corr_id=123_456_789,
    deadline_ns=1_700_000_000_123_456_789,
    priority=3,
    content_type="application/octet-stream",
    schema_ver=2,
    headers={"trace_id": "4bf92f3577b34da6", "hop": 2},
)


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of fn over about `seconds`."""
    batch = 1000
    calls = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        now = time.perf_counter()
        if now >= end:
            return calls / (now - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="length of one run")
    ap.add_argument("--repeat", type=int, default=9, help="runs per codec")
    ap.add_argument("--quick", action="store_true", help="--seconds 0.1 --repeat 3")
    ap.add_argument("--json", help="write the raw numbers to this file")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.repeat = 0.1, 3

    env = Envelope(**FIELDS)  # type: ignore[arg-type]
    as_dict = dict(FIELDS)
    assert Envelope.decode(env.encode()) == env
    assert msgpack.unpackb(msgpack.packb(as_dict)) == as_dict
    decode = Envelope.decode
    packb, unpackb = msgpack.packb, msgpack.unpackb

    def envelope_round_trip() -> object:
        return decode(env.encode())

    def msgpack_round_trip() -> object:
        return unpackb(packb(as_dict))

    codecs = {"envelope": envelope_round_trip, "msgpack": msgpack_round_trip}
    runs: dict[str, list[float]] = {name: [] for name in codecs}
    for fn in codecs.values():
        rate(fn, 0.1)  # warm up
    for _ in range(args.repeat):
        for name, fn in codecs.items():
            runs[name].append(rate(fn, args.seconds))

    med = {name: statistics.median(r) for name, r in runs.items()}
    print(f"encode+decode round trips per second, median of {args.repeat} x {args.seconds} s")
    print(f"envelope size {len(env.encode())} B, msgpack dict {len(packb(as_dict))} B")
    for name, r in runs.items():
        print(f"  {name:9s} {med[name]:>12,.0f}/s  (min {min(r):,.0f}, max {max(r):,.0f})")
    ratio = med["envelope"] / med["msgpack"]
    verdict = "meets" if ratio >= TARGET else "misses"
    print(f"  ratio     {ratio:.2f}x  ({verdict} the >= {TARGET:.0f}x target)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "runs": runs,
                    "median": med,
                    "ratio": ratio,
                    "target": TARGET,
                    "seconds": args.seconds,
                    "repeat": args.repeat,
                    "python": sys.version,
                    "machine": platform.platform(),
                    "msgpack": msgpack.version,
                    "argv": sys.argv,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
