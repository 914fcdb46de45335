#!/usr/bin/env python3
"""publish_batch throughput of one checkout (64 B frames, no readers): batches of 1
and 64, median of 7 runs of 200 000 frames. For before/after comparisons, run it on
two checkouts (each built in place) alternately:

    python bench/publish_batch.py /path/to/old/checkout
    python bench/publish_batch.py .
"""

from __future__ import annotations

import os
import statistics
import sys
import time

root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
sys.path.insert(0, root)

import framebus as fb  # noqa: E402

if not fb.__file__ or not fb.__file__.startswith(root):
    sys.exit(f"framebus came from {fb.__file__}, not from {root}")

bus = fb.FrameBus(preset="default")
out = {}
for n in (1, 64):
    frames = [b"x" * 64] * n
    rates = []
    for _ in range(7):
        k = 200_000 // n
        t0 = time.perf_counter()
        for _ in range(k):
            bus.publish_batch(frames, topic="t")
        rates.append(k * n / (time.perf_counter() - t0))
    out[n] = statistics.median(rates)
print(root, {n: f"{r / 1e6:.2f} M frames/s" for n, r in out.items()})
bus.close()
