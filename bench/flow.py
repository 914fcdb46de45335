#!/usr/bin/env python3
"""A source -> map -> filter -> sink pipeline of 64-byte items: framebus.flow's sync and
inproc runtimes beside bytewax (one worker), streamz and queue.Queue threads, measured
in the same run, plus inproc's end-to-end latency with the source paced at 20000/s.

    python bench/flow.py                       # 500000 items, 3 repeats
    python bench/flow.py --count 100000 --json flow.json
    python bench/flow.py --quick               # a few seconds

The measuring code is framebus.bench.flow (also behind ``framebus bench --suite flow``),
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

from framebus.bench.flow import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog=os.path.basename(sys.argv[0])))
