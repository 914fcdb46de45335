#!/usr/bin/env python3
"""SPSC throughput in one process: framebus beside queue.Queue, queue.SimpleQueue and
deque + threading.Condition, measured in the same run.

One producer thread -> one consumer thread, for each --size: single calls and batches
of --batch frames; plus publish+recv in one thread (ns per frame). Reports frames/s and
MB/s (median, min, max over --repeat runs) and the framebus/peer ratio; --json writes
every raw number, the machine and the command line.

    python bench/spsc_throughput.py                       # sizes 64 and 4096 B
    python bench/spsc_throughput.py --size 64,1k --count 200000 --json spsc.json
    python bench/spsc_throughput.py --quick               # a few seconds

The measuring code is framebus.bench.inproc (also behind ``framebus bench``), so the two
report the same numbers.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and __package__ in (None, ""):
    # Run from a checkout without installing: the repository root holds framebus/.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)

from framebus.bench.inproc import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog=os.path.basename(sys.argv[0])))
