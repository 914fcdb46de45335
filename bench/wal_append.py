#!/usr/bin/env python3
"""Write-ahead log benchmarks: publish throughput into a bus with the WAL off, async
and sync (1 and 4 publisher threads, single calls and publish_batch, 64 B and 4 KiB),
beside raw rocksdict WriteBatches of 1000 with sync off and on (the engine's own
limit) and persist-queue (the Python peer, optional: pip install -e '.[bench]');
replay speed (bus.replay, WalLog.read_batch). Medians over --repeat runs with min and
max, and the ratios to the WAL issue's targets; --json writes every raw number, the
machine, the disk and the command line.

    python bench/wal_append.py                     # about three minutes
    python bench/wal_append.py --quick             # a few seconds
    python bench/wal_append.py --size 4k --seconds 1 --json wal.json

The measuring code is framebus.bench.wal (also behind ``framebus bench --suite wal``),
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

from framebus.bench.wal import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog=os.path.basename(sys.argv[0])))
