#!/usr/bin/env python3
"""Across processes: framebus on a shared-memory ring beside multiprocessing.Queue,
multiprocessing.Pipe, faster-fifo, pyzmq and a raw os.pipe, measured in the same run.

Throughput producer process -> consumer process (single calls and batches, for each
--size), ping-pong round-trip latency percentiles (64 B; framebus with the "default" and
"low_latency" presets), and framebus.Queue vs multiprocessing.Queue on picklable
objects. Medians over --repeat runs with min and max; --json writes every raw number,
the machine and the command line. faster-fifo and pyzmq are optional
(pip install -e '.[bench]'); without them they are reported as missing.

    python bench/xproc.py                          # about three minutes
    python bench/xproc.py --quick                  # a few seconds
    python bench/xproc.py --scenario pingpong --round-trips 50000 --json pp.json

The measuring code is framebus.bench.xproc (also behind ``framebus bench --suite xproc``),
so the two report the same numbers.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and __package__ in (None, ""):
    # Run from a checkout without installing: the repository root holds framebus/.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)

from framebus.bench.xproc import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog=os.path.basename(sys.argv[0])))
